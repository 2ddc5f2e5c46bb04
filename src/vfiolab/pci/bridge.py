"""PCI-to-PCI bridges (type 1 header): root ports, switch ports, PCIe-to-PCI and conventional bridges.

Bus numbers are plain RW registers; config routing (topology.py) reads them as programmed.  Windows have
the register granularity of the PCI-to-PCI Bridge spec: I/O 4 KiB (16- or 32-bit decode), memory 1 MiB,
prefetchable memory 1 MiB (32- or 64-bit).  Optional windows the bridge lacks read as zero and ignore
writes, which is how Linux's ``pci_read_bridge_windows`` detects them.  Secondary Bus Reset hot-resets
everything below.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, ClassVar, Final

from vfiolab.errors import VfiolabError
from vfiolab.pci import regs
from vfiolab.pci.caps.base import Capability
from vfiolab.pci.config import RESET_FLR, RESET_HOT
from vfiolab.pci.function import (
    CLASS_PCI_BRIDGE,
    PciFunction,
    program_bars,
    program_rom,
    with_express,
)

if TYPE_CHECKING:
    from vfiolab.pci.topology import Bus

IO_RANGE_TYPE_32: Final = 0x01       # pci_regs.h PCI_IO_RANGE_TYPE_32
PREF_RANGE_TYPE_64: Final = 0x01     # pci_regs.h PCI_PREF_RANGE_TYPE_64
BRIDGE_CTL_VGA_16BIT: Final = 0x10
EXP_DEVCTL2: Final = 0x28
EXP_DEVCTL2_ARI: Final = 0x20        # ARI Forwarding Enable

# PCIe Express capability port types that are downstream ports of a link (pcie_downstream_port()).
_DOWNSTREAM_TYPES: Final = frozenset({4, 6, 8})  # root port, switch downstream, PCI/X-to-PCIe bridge


class PciBridge(PciFunction):
    """A type 1 (PCI-to-PCI bridge) function; ``secondary`` is the bus it leads to once placed."""

    header_type: ClassVar[int] = regs.HEADER_TYPE_BRIDGE
    nbars: ClassVar[int] = 2
    rom_offset: ClassVar[int] = regs.ROM_ADDRESS1
    is_bridge: ClassVar[bool] = True
    port_type: ClassVar[int | None] = None
    """PCI Express port type, None for a conventional bridge."""
    conventional_secondary: ClassVar[bool] = False
    """The secondary side is conventional PCI: extended config requests are not forwarded."""

    def __init__(self, vendor: int, device: int, class_code: int = CLASS_PCI_BRIDGE, *,
                 io_window: bool = True, io32: bool = True, pref_window: bool = True, pref64: bool = True,
                 windows_disabled: bool = True, **kw: object) -> None:
        if not io_window and io32:
            io32 = False
        if not pref_window and pref64:
            pref64 = False
        self.io_window, self.io32 = io_window, io32
        self.pref_window, self.pref64 = pref_window, pref64
        self.windows_disabled = windows_disabled
        self.secondary: Bus | None = None
        self._routing_listeners: list[Callable[[], None]] = []
        kw.setdefault("interrupt_pin", 0)
        super().__init__(vendor, device, class_code, **kw)  # type: ignore[arg-type]
        self.cs.add_write_hook(regs.PRIMARY_BUS, 4, self._on_bus_numbers)
        self.cs.add_write_hook(regs.BRIDGE_CONTROL, 2, self._on_bridge_control)
        if self.is_downstream_port and self.express_offset is not None:
            self.cs.add_write_hook(self.express_offset + EXP_DEVCTL2, 2, self._on_devctl2)

    # ------------------------------------------------------------------ construction
    def _command_rw(self) -> int:
        # A bridge's I/O and Memory Space Enable gate forwarding through its windows, so they are RW
        # whenever the corresponding window (or a BAR) exists.
        rw = super()._command_rw() | regs.COMMAND_MEMORY
        if self.io_window:
            rw |= regs.COMMAND_IO
        return rw

    def _build_header(self, subsys_vendor: int, subsys_id: int) -> None:
        cs = self.cs
        if subsys_vendor or subsys_id:
            raise VfiolabError(f"{self.name or 'bridge'}: a type 1 header has no subsystem IDs "
                               "(add an SSVID capability)")
        program_bars(cs, regs.BASE_ADDRESS_0, self.bars)
        cs.init_reg(regs.PRIMARY_BUS, 1, 0, rw=0xFF)
        cs.init_reg(regs.SECONDARY_BUS, 1, 0, rw=0xFF)
        cs.init_reg(regs.SUBORDINATE_BUS, 1, 0, rw=0xFF)
        cs.init_reg(regs.SEC_LATENCY_TIMER, 1, 0, rw=0 if self.pcie else 0xFF)
        # The bridge spec leaves window reset values open: "disabled" (base above limit, what firmware
        # leaves for unused windows) or zero (Linux then reads a 4 KiB I/O / 1 MiB memory window at 0).
        off = self.windows_disabled
        if self.io_window:
            typ = IO_RANGE_TYPE_32 if self.io32 else 0
            cs.init_reg(regs.IO_BASE, 1, typ | (0xF0 if off else 0), rw=0xF0)
            cs.init_reg(regs.IO_LIMIT, 1, typ, rw=0xF0)
            if self.io32:
                cs.init_reg(regs.IO_BASE_UPPER16, 2, 0, rw=0xFFFF)
                cs.init_reg(regs.IO_LIMIT_UPPER16, 2, 0, rw=0xFFFF)
        cs.init_reg(regs.SEC_STATUS, 2, 0, w1c=regs.STATUS_W1C)
        cs.init_reg(regs.MEMORY_BASE, 2, 0xFFF0 if off else 0, rw=0xFFF0)
        cs.init_reg(regs.MEMORY_LIMIT, 2, 0, rw=0xFFF0)
        if self.pref_window:
            typ = PREF_RANGE_TYPE_64 if self.pref64 else 0
            cs.init_reg(regs.PREF_MEMORY_BASE, 2, typ | (0xFFF0 if off else 0), rw=0xFFF0)
            cs.init_reg(regs.PREF_MEMORY_LIMIT, 2, typ, rw=0xFFF0)
            if self.pref64:
                cs.init_reg(regs.PREF_BASE_UPPER32, 4, 0, rw=0xFFFFFFFF)
                cs.init_reg(regs.PREF_LIMIT_UPPER32, 4, 0, rw=0xFFFFFFFF)
        program_rom(cs, regs.ROM_ADDRESS1, self.rom_size)
        # PCI-to-PCI Bridge 1.2 §3.2.5.18 / PCIe Base §7.5.1.3.13: Master-Abort Mode and Fast Back-to-Back
        # apply to conventional secondaries only (RO 0 on PCIe ports).
        ctl = (regs.BRIDGE_CTL_PARITY | regs.BRIDGE_CTL_SERR | regs.BRIDGE_CTL_ISA | regs.BRIDGE_CTL_VGA
               | BRIDGE_CTL_VGA_16BIT | regs.BRIDGE_CTL_BUS_RESET)
        if not self.pcie:
            ctl |= regs.BRIDGE_CTL_MASTER_ABORT
        cs.init_reg(regs.BRIDGE_CONTROL, 2, 0, rw=ctl)

    # ------------------------------------------------------------------ behaviour
    @property
    def bus_numbers(self) -> tuple[int, int, int]:
        """(primary, secondary, subordinate) as programmed."""
        d = self.cs.data
        return d[regs.PRIMARY_BUS], d[regs.SECONDARY_BUS], d[regs.SUBORDINATE_BUS]

    @property
    def is_downstream_port(self) -> bool:
        """A PCIe port whose link leads to device 0 only (Linux pcie_downstream_port())."""
        return self.port_type in _DOWNSTREAM_TYPES

    def ari_forwarding(self) -> bool:
        """ARI Forwarding Enable (Device Control 2) as programmed."""
        pos = self.express_offset
        return pos is not None and bool(self.cs.data[pos + EXP_DEVCTL2] & EXP_DEVCTL2_ARI)

    def add_routing_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` whenever this bridge's bus numbers may have changed."""
        self._routing_listeners.append(listener)

    def _on_bus_numbers(self, off: int, size: int, old: int, new: int) -> None:
        if (old ^ new) & 0xFFFFFF:
            for listener in self._routing_listeners:
                listener()

    def _on_devctl2(self, off: int, size: int, old: int, new: int) -> None:
        # ARI Forwarding Enable decides whether device numbers other than 0 pass this port.
        if (old ^ new) & EXP_DEVCTL2_ARI:
            for listener in self._routing_listeners:
                listener()

    def _on_bridge_control(self, off: int, size: int, old: int, new: int) -> None:
        # PCI-to-PCI Bridge 1.2 §3.2.5.18: setting Secondary Bus Reset resets everything on the secondary side.
        bit = regs.BRIDGE_CTL_BUS_RESET << 16
        if new & bit and not old & bit and self.secondary is not None:
            self.secondary.reset_all(RESET_HOT)

    def reset(self, kind: str = RESET_FLR) -> None:
        """Reset the bridge; its bus numbers return to 0, which changes config routing."""
        super().reset(kind)
        for listener in self._routing_listeners:
            listener()


class _ExpressBridge(PciBridge):
    """A bridge with a PCI Express capability of ``port_type`` (first, unless given in ``caps``)."""

    port_type: ClassVar[int | None] = 4

    def __init__(self, vendor: int, device: int, class_code: int = CLASS_PCI_BRIDGE, *,
                 caps: Sequence[Capability] = (), express: object = None, **kw: object) -> None:
        assert self.port_type is not None
        kw.setdefault("pcie", True)
        super().__init__(vendor, device, class_code, caps=with_express(self.port_type, caps, express),
                         **kw)  # type: ignore[arg-type]


class RootPort(_ExpressBridge):
    """A PCI Express Root Port (on a root bus; its link leads to device 0)."""

    port_type = 4  # PCI_EXP_TYPE_ROOT_PORT


class SwitchUpstreamPort(_ExpressBridge):
    """The upstream port of a PCI Express switch; its secondary bus holds the downstream ports."""

    port_type = 5  # PCI_EXP_TYPE_UPSTREAM


class SwitchDownstreamPort(_ExpressBridge):
    """A downstream port of a PCI Express switch (its link leads to device 0)."""

    port_type = 6  # PCI_EXP_TYPE_DOWNSTREAM


class PcieToPciBridge(_ExpressBridge):
    """A PCI Express to PCI/PCI-X bridge: conventional devices behind it, no extended config beyond it."""

    port_type = 7  # PCI_EXP_TYPE_PCI_BRIDGE
    conventional_secondary = True


class PciToPcieBridge(_ExpressBridge):
    """A PCI/PCI-X to PCI Express (reverse) bridge."""

    port_type = 8  # PCI_EXP_TYPE_PCIE_BRIDGE


class PciToPciBridge(PciBridge):
    """A conventional PCI-to-PCI bridge (no PCI Express capability, 256-byte config space)."""

    conventional_secondary = True

    def __init__(self, vendor: int, device: int, class_code: int = CLASS_PCI_BRIDGE, **kw: object) -> None:
        kw.setdefault("pcie", False)
        super().__init__(vendor, device, class_code, **kw)  # type: ignore[arg-type]
