"""PCI functions: a ConfigSpace with a type 0 header, capabilities and BARs that answer the sizing protocol.

A BAR's address bits above its size are RW and the rest read back the type bits, so software sizes it the
way Linux's ``__pci_read_base`` does (write all ones, read the mask, restore) with no help from the model.
Resets (FLR, hot, fundamental) return config space to its reset values and notify device state.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Final

from vfiolab.errors import VfiolabError
from vfiolab.pci import regs
from vfiolab.pci.caps.base import Capability, CapabilityList
from vfiolab.pci.config import CFG_SIZE, LEGACY_SIZE, RESET_FLR, ConfigSpace

if TYPE_CHECKING:
    from vfiolab.pci.topology import Bus

# Class codes (pci_ids.h PCI_CLASS_*), 24-bit base/sub/prog-if.
CLASS_HOST_BRIDGE: Final = 0x060000
CLASS_ISA_BRIDGE: Final = 0x060100
CLASS_PCI_BRIDGE: Final = 0x060400
CLASS_PCI_BRIDGE_SUBTRACTIVE: Final = 0x060401
CLASS_NVME: Final = 0x010802
CLASS_ETHERNET: Final = 0x020000

CAP_ID_EXP: Final = 0x10          # PCI Express capability

BAR_KINDS: Final = ("mem32", "mem64", "io")

ResetListener = Callable[[str], None]
"""listener(kind): device state to reset after config space was reset (kind is a config.RESET_* name)."""


@dataclass(frozen=True)
class Bar:
    """One Base Address Register: ``kind`` mem32/mem64/io, power-of-two ``size`` in bytes."""

    index: int
    kind: str
    size: int
    prefetch: bool = False

    def validate(self, nbars: int, where: str = "") -> None:
        """Raise VfiolabError unless this BAR can exist in a header with ``nbars`` BAR slots."""
        at = f"{where}BAR {self.index}"
        if self.kind not in BAR_KINDS:
            raise VfiolabError(f"{at}: type {self.kind!r} is not one of {', '.join(BAR_KINDS)}")
        last = self.index + (1 if self.kind == "mem64" else 0)
        if not 0 <= self.index or last >= nbars:
            raise VfiolabError(f"{at}: index outside 0..{nbars - 1}"
                               + (" (a 64-bit BAR takes two slots)" if self.kind == "mem64" else ""))
        s = self.size
        if s <= 0 or s & (s - 1):
            raise VfiolabError(f"{at}: size {s:#x} is not a power of two")
        if self.kind == "io":
            # PCI Local Bus 3.0 §6.2.5.1: I/O BARs claim at most 256 bytes, at least 4.
            if not 4 <= s <= 256:
                raise VfiolabError(f"{at}: I/O BAR size {s:#x} outside 4..256 bytes")
            if self.prefetch:
                raise VfiolabError(f"{at}: an I/O BAR cannot be prefetchable")
        elif self.kind == "mem32":
            if not 16 <= s <= 1 << 31:
                raise VfiolabError(f"{at}: 32-bit memory BAR size {s:#x} outside 16 bytes..2 GiB")
        elif not 16 <= s <= 1 << 63:
            raise VfiolabError(f"{at}: 64-bit memory BAR size {s:#x} outside 16 bytes..2^63")

    @property
    def type_bits(self) -> int:
        """The read-only low bits of the BAR (space, type, prefetchable)."""
        if self.kind == "io":
            return regs.BASE_ADDRESS_SPACE_IO
        bits = regs.BASE_ADDRESS_MEM_TYPE_64 if self.kind == "mem64" else 0
        return bits | (regs.BASE_ADDRESS_MEM_PREFETCH if self.prefetch else 0)


def bar_rw_masks(bar: Bar) -> tuple[int, int | None]:
    """RW masks of the BAR dword (and of the upper dword of a 64-bit BAR): every address bit >= size."""
    if bar.kind == "io":
        return 0xFFFFFFFC & ~(bar.size - 1), None
    addr = ~(bar.size - 1)
    low = addr & 0xFFFFFFF0
    if bar.kind == "mem64":
        return low, (addr >> 32) & 0xFFFFFFFF
    return low, None


def validate_bars(bars: Sequence[Bar], nbars: int, where: str = "") -> None:
    """Check every BAR and that no two claim the same slot."""
    used: dict[int, int] = {}
    for bar in bars:
        bar.validate(nbars, where)
        for slot in range(bar.index, bar.index + (2 if bar.kind == "mem64" else 1)):
            if slot in used:
                raise VfiolabError(f"{where}BAR {bar.index}: slot {slot} already used by BAR {used[slot]}")
            used[slot] = bar.index


def program_bars(cs: ConfigSpace, base: int, bars: Sequence[Bar]) -> None:
    """Write reset values (type bits, address 0) and RW masks of ``bars`` at ``base`` (BAR 0's offset)."""
    for bar in bars:
        off = base + 4 * bar.index
        low, high = bar_rw_masks(bar)
        cs.init_reg(off, 4, bar.type_bits, rw=low)
        if high is not None:
            cs.init_reg(off + 4, 4, 0, rw=high)


def validate_rom(size: int, where: str = "") -> None:
    """Expansion ROM sizes: a power of two from 2 KiB (PCI 3.0 §6.2.5.2) to 16 MiB."""
    if size and (size & (size - 1) or not 0x800 <= size <= 1 << 24):
        raise VfiolabError(f"{where}expansion ROM size {size:#x} is not a power of two in 2 KiB..16 MiB")


def program_rom(cs: ConfigSpace, off: int, size: int) -> None:
    """ROM BAR: address bits >= size RW, bit 0 (ROM Enable) RW; unimplemented ROM reads 0."""
    if size:
        cs.init_reg(off, 4, 0, rw=(0xFFFFF800 & ~(size - 1)) | regs.ROM_ADDRESS_ENABLE)


class PciFunction:
    """A PCI function with a type 0 header: config space + capability list + BARs (+ expansion ROM)."""

    header_type: ClassVar[int] = regs.HEADER_TYPE_NORMAL
    nbars: ClassVar[int] = 6
    rom_offset: ClassVar[int] = regs.ROM_ADDRESS
    is_bridge: ClassVar[bool] = False
    is_virtfn: ClassVar[bool] = False

    def __init__(self, vendor: int, device: int, class_code: int, *, revision: int = 0,
                 subsys_vendor: int = 0, subsys_id: int = 0, bars: Sequence[Bar] = (), rom: int = 0,
                 caps: Sequence[Capability] = (), ext_caps: Sequence[Capability] = (),
                 multifunction: bool = False, interrupt_pin: int = 1, pcie: bool = True,
                 cfg_size: int | None = None, name: str = "") -> None:
        where = f"{name}: " if name else ""
        for label, val, bits in (("vendor", vendor, 16), ("device", device, 16), ("class", class_code, 24),
                                 ("revision", revision, 8), ("subsystem vendor", subsys_vendor, 16),
                                 ("subsystem", subsys_id, 16)):
            if not 0 <= val < 1 << bits:
                raise VfiolabError(f"{where}{label} ID {val:#x} does not fit in {bits} bits")
        if vendor == 0xFFFF and not self.is_virtfn:
            raise VfiolabError(f"{where}vendor ID 0xffff is what an absent function reads")
        if not 0 <= interrupt_pin <= 4:
            raise VfiolabError(f"{where}interrupt pin {interrupt_pin} outside 0 (none)..4 (INTD)")
        validate_bars(bars, self.nbars, where)
        validate_rom(rom, where)
        if cfg_size is None:
            cfg_size = CFG_SIZE if pcie or ext_caps else LEGACY_SIZE
        if ext_caps and cfg_size != CFG_SIZE:
            raise VfiolabError(f"{where}extended capabilities need a 4 KiB configuration space")
        self.name = name
        self.vendor, self.device, self.class_code = vendor, device, class_code
        self.bars: tuple[Bar, ...] = tuple(sorted(bars, key=lambda b: b.index))
        self.rom_size = rom
        self.pcie = pcie
        self.cs = ConfigSpace(cfg_size)
        self.caps = CapabilityList(self.cs)
        self.bus: Bus | None = None
        """The bus this function sits on, once attached (topology.Bus.attach)."""
        self.devfn = -1
        self.cfg_limit = self.cs.size
        """Config bytes reachable where the function sits (256 behind a conventional PCI bridge)."""
        self.captured_bus = 0
        """Bus number captured from the last Type 0 configuration write (PCIe Base §2.2.6.2)."""
        self._reset_listeners: list[ResetListener] = []
        self._build_common(revision, multifunction, interrupt_pin)
        self._build_header(subsys_vendor, subsys_id)
        for cap in caps:
            self.caps.add(cap)
        for cap in ext_caps:
            self.caps.add(cap)
        self.express_offset = self._find_std_cap(CAP_ID_EXP)
        self._hook_flr()
        self.cs.seal()

    # ------------------------------------------------------------------ construction
    def _command_rw(self) -> int:
        """Command bits software may set (PCIe Base §7.5.1.1.3; unsupported decoders are hardwired 0)."""
        rw = regs.COMMAND_MASTER | regs.COMMAND_PARITY | regs.COMMAND_SERR | regs.COMMAND_INTX_DISABLE
        if any(b.kind == "io" for b in self.bars):
            rw |= regs.COMMAND_IO
        if any(b.kind != "io" for b in self.bars) or self.rom_size:
            rw |= regs.COMMAND_MEMORY
        return rw

    def _build_common(self, revision: int, multifunction: bool, interrupt_pin: int) -> None:
        cs = self.cs
        cs.init_reg(regs.VENDOR_ID, 2, self.vendor)
        cs.init_reg(regs.DEVICE_ID, 2, self.device)
        cs.init_reg(regs.COMMAND, 2, 0, rw=self._command_rw())
        cs.init_reg(regs.STATUS, 2, 0, w1c=regs.STATUS_W1C)
        cs.init_reg(regs.REVISION_ID, 1, revision)
        cs.init_reg(regs.CLASS_PROG, 3, self.class_code)
        cs.init_reg(regs.CACHE_LINE_SIZE, 1, 0, rw=0xFF)
        # PCIe Base §7.5.1.1.6: the latency timer does not apply to PCIe (RO 0); conventional: RW.
        cs.init_reg(regs.LATENCY_TIMER, 1, 0, rw=0 if self.pcie else 0xFF)
        cs.init_reg(regs.HEADER_TYPE, 1, self.header_type | (regs.HEADER_TYPE_MFD if multifunction else 0))
        cs.init_reg(regs.INTERRUPT_LINE, 1, 0, rw=0xFF)
        cs.init_reg(regs.INTERRUPT_PIN, 1, interrupt_pin)

    def _build_header(self, subsys_vendor: int, subsys_id: int) -> None:
        cs = self.cs
        program_bars(cs, regs.BASE_ADDRESS_0, self.bars)
        cs.init_reg(regs.SUBSYSTEM_VENDOR_ID, 2, subsys_vendor)
        cs.init_reg(regs.SUBSYSTEM_ID, 2, subsys_id)
        program_rom(cs, regs.ROM_ADDRESS, self.rom_size)

    def _find_std_cap(self, cap_id: int) -> int | None:
        for cap in self.caps.std:
            if cap.cap_id == cap_id:
                return cap.offset
        return None

    def _hook_flr(self) -> None:
        # PCIe Base §6.6.2: Initiate Function Level Reset resets this function (the ExpressCap detects
        # the write and calls on_flr; functions without FLR never call it).
        for cap in self.caps.std:
            if cap.cap_id == CAP_ID_EXP and getattr(cap, "on_flr", 0) is None:
                cap.on_flr = self._flr  # type: ignore[attr-defined]

    def _flr(self) -> None:
        self.reset(RESET_FLR)

    # ------------------------------------------------------------------ software (config cycle) side
    def config_read(self, off: int, size: int) -> int:
        """A Type 0 configuration read of this function."""
        if off >= self.cs.size:
            return (1 << (8 * size)) - 1
        return self.cs.read(off, size)

    def config_write(self, off: int, size: int, value: int) -> None:
        """A Type 0 configuration write of this function."""
        if off >= self.cs.size:
            return
        self.cs.write(off, size, value)

    # ------------------------------------------------------------------ model side
    @property
    def multifunction(self) -> bool:
        """Header Type bit 7 as the hardware holds it."""
        return bool(self.cs.data[regs.HEADER_TYPE] & regs.HEADER_TYPE_MFD)

    def bar_address(self, index: int) -> int:
        """The address currently programmed into BAR ``index`` (both dwords of a 64-bit BAR)."""
        for bar in self.bars:
            if bar.index == index:
                off = regs.BASE_ADDRESS_0 + 4 * index
                if bar.kind == "io":
                    return self.cs.get(off, 4) & ~0x3
                if bar.kind == "mem64":
                    return self.cs.get(off, 8) & ~0xF
                return self.cs.get(off, 4) & ~0xF
        raise VfiolabError(f"{self.name or 'function'}: no BAR {index}")

    def add_reset_listener(self, listener: ResetListener) -> None:
        """Call ``listener(kind)`` after every reset of this function (device state lives there)."""
        self._reset_listeners.append(listener)

    def reset(self, kind: str = RESET_FLR) -> None:
        """Reset config space (sticky bits survive FLR and hot reset) and then the device state."""
        self.cs.reset(kind)
        for listener in self._reset_listeners:
            listener(kind)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name or ''} {self.vendor:04x}:{self.device:04x}>"


def express_cap(port_type: int, express: object = None) -> Capability:
    """An ExpressCap of ``port_type``: ``express`` is an ExpressCap, a dict of its keyword arguments, or None."""
    from vfiolab.pci.caps.express import ExpressCap

    if isinstance(express, ExpressCap):
        return express
    if express is None:
        return ExpressCap(port_type)
    if isinstance(express, dict):
        return ExpressCap(port_type, **express)
    raise VfiolabError(f"PCI Express capability: expected ExpressCap or keyword dict, got {type(express).__name__}")


def with_express(port_type: int, caps: Sequence[Capability], express: object) -> list[Capability]:
    """``caps`` with a PCI Express capability of ``port_type`` first, unless the caller placed one."""
    if any(c.cap_id == CAP_ID_EXP for c in caps):
        if express is not None:
            raise VfiolabError("PCI Express capability given twice (in caps and as express=)")
        return list(caps)
    return [express_cap(port_type, express), *caps]


class ConventionalDevice(PciFunction):
    """A conventional PCI function: 256-byte config space, no PCI Express capability."""

    def __init__(self, vendor: int, device: int, class_code: int, **kw: object) -> None:
        kw.setdefault("pcie", False)
        super().__init__(vendor, device, class_code, **kw)  # type: ignore[arg-type]


class PcieEndpoint(PciFunction):
    """A PCI Express endpoint: a PCI Express capability (first, unless given in ``caps``) plus what the user asks."""

    port_type: ClassVar[int] = 0  # PCI_EXP_TYPE_ENDPOINT

    def __init__(self, vendor: int, device: int, class_code: int, *, caps: Sequence[Capability] = (),
                 express: object = None, **kw: object) -> None:
        super().__init__(vendor, device, class_code, caps=with_express(self.port_type, caps, express),
                         **kw)  # type: ignore[arg-type]


class LegacyEndpoint(PcieEndpoint):
    """A PCI Express legacy endpoint (may use I/O space and locked requests)."""

    port_type = 1  # PCI_EXP_TYPE_LEG_END


class RcIntegratedEndpoint(PcieEndpoint):
    """A Root Complex integrated endpoint: sits on a root bus, no link."""

    port_type = 9  # PCI_EXP_TYPE_RC_END


class HostBridge(PciFunction):
    """The host bridge function (class 06.00) on a root bus; no INTx, resources untouched by Linux."""

    def __init__(self, vendor: int, device: int, class_code: int = CLASS_HOST_BRIDGE, **kw: object) -> None:
        kw.setdefault("interrupt_pin", 0)
        kw.setdefault("pcie", False)
        super().__init__(vendor, device, class_code, **kw)  # type: ignore[arg-type]
