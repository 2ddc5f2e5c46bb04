"""Linux-like PCI enumeration of a Topology through configuration cycles only (drivers/pci/probe.c).

Each root bus is scanned device by device, function 0 first and more functions when the multifunction
bit is set (or along the ARI Next Function chain below an ARI-forwarding port); bridges get bus numbers
depth first (pass 0 keeps firmware numbers, pass 1 assigns new ones); BARs are sized by writing all ones
and reading the mask back; ``pci_device_add`` configures MPS, extended tags, SERR forwarding, MSI/MSI-X
off, PM, ARI forwarding, SR-IOV (VF BAR sizing, bus reservation) and AER.  Then resources.py assigns
addresses.  The result lists devices in ``pci_bus_add_devices()`` order; VFs enabled later are appended.
What the kernel does but this model leaves out is listed in docs: link training/ASPM, LTR, PTM, DPC,
the PCIe port services (AER/PME/hotplug) and firmware (_OSC, _HPX, EA) inputs.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from vfiolab.errors import VfiolabError
from vfiolab.pci import regs
from vfiolab.pci.acs import program_acs
from vfiolab.pci.dump import DumpedFunction
from vfiolab.pci.pcidev import (
    IORESOURCE_DISABLED,
    IORESOURCE_IO,
    IORESOURCE_MEM,
    IORESOURCE_MEM_64,
    IORESOURCE_PREFETCH,
    IORESOURCE_READONLY,
    IORESOURCE_ROM_ENABLE,
    IORESOURCE_SIZEALIGN,
    IORESOURCE_UNSET,
    PCI_BRIDGE_IO_WINDOW,
    PCI_BRIDGE_MEM_WINDOW,
    PCI_BRIDGE_PREF_MEM_WINDOW,
    PCI_BRIDGE_RESOURCES,
    PCI_IOV_RESOURCES,
    PCI_NUM_RESOURCES,
    PCI_ROM_RESOURCE,
    PCI_SRIOV_NUM_BARS,
    PciBus,
    PciDev,
    Resource,
    SriovInfo,
)
from vfiolab.pci.resources import Allocator, Assigner, is_optional
from vfiolab.pci.topology import ConfigAddress, Topology

# ---------------------------------------------------------------------------- register numbers (pci_regs.h)
CAP_ID_PM = 0x01
CAP_ID_MSI = 0x05
CAP_ID_PCIX = 0x07
CAP_ID_SSVID = 0x0D
CAP_ID_EXP = 0x10
CAP_ID_MSIX = 0x11
EXT_CAP_ID_ERR = 0x01
EXT_CAP_ID_ACS = 0x0D
EXT_CAP_ID_ARI = 0x0E
EXT_CAP_ID_SRIOV = 0x10
EXP_FLAGS = 0x02
EXP_FLAGS_SLOT = 0x0100
EXP_DEVCAP = 0x04
EXP_DEVCAP_EXT_TAG = 0x20
EXP_DEVCTL = 0x08
EXP_DEVCTL_PAYLOAD = 0x00E0
EXP_DEVCTL_EXT_TAG = 0x0100
EXP_AER_FLAGS = 0x000F           # CERE | NFERE | FERE | URRE
EXP_LNKCTL = 0x10
EXP_LNKCTL_RCB = 0x0008
EXP_SLTCAP = 0x14
EXP_SLTCAP_HPC = 0x40
EXP_RTCTL = 0x1C
EXP_RTCTL_RRS_SVE = 0x0010
EXP_RTCAP = 0x1E
EXP_RTCAP_RRS_SV = 0x0001
EXP_DEVCAP2 = 0x24
EXP_DEVCAP2_ARI = 0x20
EXP_DEVCTL2 = 0x28
EXP_DEVCTL2_ARI = 0x20
PM_PMC = 0x02
PM_CTRL = 0x04
PM_CAP_PME_MASK = 0xF800
PM_CTRL_STATE_MASK = 0x0003
PM_CTRL_PME_ENABLE = 0x0100
PM_CTRL_PME_STATUS = 0x8000
MSI_FLAGS_ENABLE = 0x0001
MSIX_FLAGS_ENABLE = 0x8000
ERR_UNCOR_STATUS = 0x04
ERR_COR_STATUS = 0x10
ERR_ROOT_STATUS = 0x30
SRIOV_CAP = 0x04
SRIOV_CTRL = 0x08
SRIOV_CTRL_VFE = 0x0001
SRIOV_CTRL_MSE = 0x0008
SRIOV_CTRL_ARI = 0x0010
SRIOV_CAP_VFM = 0x0001
SRIOV_INITIAL_VF = 0x0C
SRIOV_TOTAL_VF = 0x0E
SRIOV_NUM_VF = 0x10
SRIOV_FUNC_LINK = 0x12
SRIOV_VF_OFFSET = 0x14
SRIOV_VF_STRIDE = 0x16
SRIOV_VF_DID = 0x1A
SRIOV_SUP_PGSIZE = 0x1C
SRIOV_SYS_PGSIZE = 0x20
SRIOV_BAR = 0x24
PCIX_STATUS = 0x04
PCIX_STATUS_266_533 = 0x00C00000
ARI_CAP = 0x04

TYPE_ENDPOINT, TYPE_ROOT_PORT, TYPE_UPSTREAM, TYPE_DOWNSTREAM = 0, 4, 5, 6
TYPE_PCIE_BRIDGE, TYPE_RC_END, TYPE_RC_EC = 8, 9, 0xA
_DOWNSTREAM_PORTS = frozenset({TYPE_ROOT_PORT, TYPE_DOWNSTREAM, TYPE_PCIE_BRIDGE})
_HAS_LINK = frozenset({0, 1, 4, 5, 6, 7, 8})
PAGE_SIZE = 4096
ROM_MASK = 0xFFFFF800
PCI_CLASS_BRIDGE_HOST = 0x0600
PCI_CLASS_BRIDGE_PCI = 0x0604
PCI_CLASS_NOT_DEFINED = 0x0000
_ENABLE_SLOTS = (*range(PCI_ROM_RESOURCE + 1), *range(PCI_BRIDGE_RESOURCES, PCI_NUM_RESOURCES))



@contextmanager
def gc_paused() -> Iterator[None]:
    """Cyclic GC off while many long-lived objects are made: its full passes over a large heap would make
    enumerating tens of thousands of functions quadratic.  The objects made here are kept, not garbage."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


@dataclass
class EnumOptions:
    """Kernel and platform inputs to enumeration."""

    iommu: bool = False
    """An IOMMU driver called pci_request_acs(): ACS is enabled on every device at IOMMU probe."""
    realloc: bool | None = None
    """pci=realloc=on/off; None = CONFIG_PCI_REALLOC_ENABLE_AUTO (on when SR-IOV BARs are unassigned)."""
    pci_mem_start: int = 0
    """PCIBIOS_MIN_MEM (the e820 gap start) for windows that start at address 0."""


@dataclass
class ResourceRecord:
    """One assigned resource of a device (its Linux resource number, kind and bus addresses)."""

    index: int
    kind: str
    start: int
    end: int
    flags: int

    @property
    def size(self) -> int:
        return self.end - self.start + 1


@dataclass
class DeviceRecord:
    """What enumeration found and assigned for one function."""

    name: str
    vendor: int
    device: int
    class_code: int
    is_bridge: bool
    is_virtfn: bool
    resources: list[ResourceRecord] = field(default_factory=list)
    secondary: int | None = None
    subordinate: int | None = None


def _kind(idx: int) -> str:
    if idx < 6:
        return f"BAR{idx}"
    if idx == PCI_ROM_RESOURCE:
        return "ROM"
    if idx < PCI_BRIDGE_RESOURCES:
        return f"VF BAR{idx - PCI_IOV_RESOURCES}"
    return ("io window", "mem window", "pref window", "window 3")[idx - PCI_BRIDGE_RESOURCES]


class Scanner:
    """The scan half of Linux's PCI core for one topology (probe.c, iov.c, parts of pci.c and aer.c)."""

    def __init__(self, topology: Topology, options: EnumOptions) -> None:
        self.topo = topology
        self.opts = options
        self._rd = topology.config_read
        self.buses: dict[tuple[int, int], PciBus] = {}

    # ------------------------------------------------------------------ capability lists
    def _walk_std_caps(self, dev: PciDev) -> None:
        """Record the first offset of each standard capability (__pci_find_next_cap_ttl walk)."""
        caps: dict[int, int] = {}
        if dev.read(regs.STATUS, 2) & regs.STATUS_CAP_LIST:
            start = 0x14 if dev.hdr_type == regs.HEADER_TYPE_CARDBUS else regs.CAPABILITY_LIST
            pos = dev.read(start, 1)
            for _ in range(48):
                if pos < 0x40:
                    break
                pos &= ~3
                ent = dev.read(pos, 2)
                cid = ent & 0xFF
                if cid == 0xFF:
                    break
                caps.setdefault(cid, pos)
                pos = ent >> 8
        dev.caps = caps

    def _walk_ext_caps(self, dev: PciDev) -> None:
        """pci_find_next_ext_capability() walk from 0x100, once, recording first offsets."""
        caps: dict[int, int] = {}
        if dev.cfg_size > 256:
            pos = 0x100
            header = dev.read(pos, 4)
            ttl = (4096 - 256) // 8
            while header and header != 0xFFFFFFFF and ttl > 0:
                ttl -= 1
                caps.setdefault(header & 0xFFFF, pos)
                pos = (header >> 20) & 0xFFC
                if pos < 0x100:
                    break
                header = dev.read(pos, 4)
        dev.ext_caps = caps

    # ------------------------------------------------------------------ PCI Express capability access
    @staticmethod
    def _exp_reg_ok(dev: PciDev, reg: int) -> bool:
        """pcie_capability_reg_implemented() (drivers/pci/access.c)."""
        if not dev.pcie_cap:
            return False
        typ = dev.pcie_type
        if reg in (EXP_DEVCAP, EXP_DEVCTL, EXP_DEVCTL + 2, EXP_FLAGS):
            return True
        if reg in (0x0C, 0x10, 0x12):
            return typ in _HAS_LINK
        if reg in (0x14, 0x18, 0x1A):
            return typ in (TYPE_ROOT_PORT, TYPE_DOWNSTREAM) and bool(dev.pcie_flags & EXP_FLAGS_SLOT)
        if reg in (0x1C, 0x1E, 0x20):
            return typ in (TYPE_ROOT_PORT, TYPE_RC_EC)
        return (dev.pcie_flags & 0xF) > 1       # the "2" registers need capability version 2

    def _exp_read(self, dev: PciDev, reg: int, size: int) -> int:
        return dev.read(dev.pcie_cap + reg, size) if self._exp_reg_ok(dev, reg) else 0

    def _exp_clear_set(self, dev: PciDev, reg: int, clear: int, set_: int) -> None:
        if not self._exp_reg_ok(dev, reg):
            return
        val = dev.read(dev.pcie_cap + reg, 2)
        dev.write(dev.pcie_cap + reg, 2, (val & ~clear) | set_)

    # ------------------------------------------------------------------ pci_scan_device / pci_setup_device
    def _scan_device(self, bus: PciBus, devfn: int) -> PciDev | None:
        """pci_scan_device(): vendor/device present (not 0, not all ones, not a half), then set up."""
        l = self._rd(bus.seg, bus.number, devfn, regs.VENDOR_ID, 4)
        if l in (0xFFFFFFFF, 0, 0x0000FFFF, 0xFFFF0000):
            return None
        at = self.topo.address(bus.seg, bus.number, devfn)
        dev = PciDev(bus, devfn, at.read, at.write)
        dev.vendor, dev.device = l & 0xFFFF, l >> 16
        if not self._setup_device(dev):
            return None
        return dev

    def _set_pcie_port_type(self, dev: PciDev) -> None:
        pos = dev.caps.get(CAP_ID_EXP, 0)
        if not pos:
            return
        dev.pcie_cap = pos
        dev.pcie_flags = dev.read(pos + EXP_FLAGS, 2)
        # pci_enable_rrs_sv(): Configuration RRS Software Visibility on when a root port supports it.
        if dev.pcie_type == TYPE_ROOT_PORT and self._exp_read(dev, EXP_RTCAP, 2) & EXP_RTCAP_RRS_SV:
            self._exp_clear_set(dev, EXP_RTCTL, 0, EXP_RTCTL_RRS_SVE)
        dev.devcap = dev.read(pos + EXP_DEVCAP, 4)
        dev.pcie_mpss = dev.devcap & 0x7
        parent = dev.upstream_bridge
        if parent is None:
            return
        # Ports that claim the wrong direction are corrected from their parent's type.
        if dev.pcie_type == TYPE_DOWNSTREAM and parent.is_pcie and parent.pcie_type in _DOWNSTREAM_PORTS:
            dev.pcie_flags = (dev.pcie_flags & ~0xF0) | (TYPE_UPSTREAM << 4)
        elif dev.pcie_type == TYPE_UPSTREAM and parent.is_pcie and parent.pcie_type == TYPE_UPSTREAM:
            dev.pcie_flags = (dev.pcie_flags & ~0xF0) | (TYPE_DOWNSTREAM << 4)

    def _cfg_space_size(self, dev: PciDev) -> int:
        """pci_cfg_space_size(): 4096 only where extended config is reachable and not aliased."""
        if dev.is_virtfn:
            return 4096
        if dev.bus.no_extcfg:
            return 256
        if dev.class_ >> 8 == PCI_CLASS_BRIDGE_HOST or dev.is_pcie:
            return self._cfg_space_size_ext(dev)
        pos = dev.caps.get(CAP_ID_PCIX, 0)
        if pos and dev.read(pos + PCIX_STATUS, 4) & PCIX_STATUS_266_533:
            return self._cfg_space_size_ext(dev)
        return 256

    @staticmethod
    def _cfg_space_size_ext(dev: PciDev) -> int:
        status = dev.read(0x100, 4)
        if status == 0xFFFFFFFF:
            return 256
        header = dev.read(0, 4)
        for pos in range(0x100, 0x1000, 0x100):       # pci_ext_cfg_is_aliased()
            if dev.read(pos, 4) != header:
                return 4096
        return 256

    def _setup_device(self, dev: PciDev) -> bool:
        """pci_setup_device(): header type, PCIe type, class, config size, BARs, bridge windows."""
        if dev.is_virtfn:
            assert dev.physfn is not None and dev.physfn.sriov is not None
            hdr = dev.physfn.sriov.hdr_type
        else:
            hdr = dev.read(regs.HEADER_TYPE, 1)
        dev.hdr_type = hdr & 0x7F
        dev.multifunction = bool(hdr & regs.HEADER_TYPE_MFD)
        self._walk_std_caps(dev)
        self._set_pcie_port_type(dev)
        if dev.is_virtfn:
            assert dev.physfn is not None and dev.physfn.sriov is not None
            cls = dev.physfn.sriov.class_
        else:
            cls = dev.read(regs.REVISION_ID, 4)
        dev.revision, dev.class_ = cls & 0xFF, cls >> 8
        dev.cfg_size = self._cfg_space_size(dev)
        self._walk_ext_caps(dev)
        cls16 = dev.class_ >> 8
        if dev.hdr_type == regs.HEADER_TYPE_NORMAL:
            if cls16 == PCI_CLASS_BRIDGE_PCI:
                dev.class_ = PCI_CLASS_NOT_DEFINED << 8     # class doesn't match the header type
                return True
            self._read_irq(dev)
            self._read_bases(dev, 6, regs.ROM_ADDRESS)
            if dev.is_virtfn:
                assert dev.physfn is not None and dev.physfn.sriov is not None
                dev.subsystem_vendor = dev.physfn.sriov.subsystem_vendor
                dev.subsystem_device = dev.physfn.sriov.subsystem_device
            else:
                dev.subsystem_vendor = dev.read(regs.SUBSYSTEM_VENDOR_ID, 2)
                dev.subsystem_device = dev.read(regs.SUBSYSTEM_ID, 2)
        elif dev.hdr_type == regs.HEADER_TYPE_BRIDGE:
            dev.use_window_resources()
            self._read_irq(dev)
            dev.transparent = (dev.class_ & 0xFF) == 1
            self._read_bases(dev, 2, regs.ROM_ADDRESS1)
            self._read_bridge_windows(dev)
            if self._exp_read(dev, EXP_SLTCAP, 4) & EXP_SLTCAP_HPC:
                dev.is_hotplug_bridge = True
            pos = dev.caps.get(CAP_ID_SSVID, 0)
            if pos:
                dev.subsystem_vendor = dev.read(pos + 4, 2)
                dev.subsystem_device = dev.read(pos + 6, 2)
        else:
            return False        # CardBus and unknown header types: not modelled / ignored like Linux
        return True

    @staticmethod
    def _read_irq(dev: PciDev) -> None:
        if dev.is_virtfn:
            return
        dev.pin = dev.read(regs.INTERRUPT_PIN, 1)
        if dev.pin:
            dev.irq = dev.read(regs.INTERRUPT_LINE, 1)

    # ------------------------------------------------------------------ BAR sizing (__pci_read_base)
    @staticmethod
    def _size_bars(dev: PciDev, count: int, pos: int, mask: int) -> list[int]:
        """__pci_size_bars(): save, write the mask, read the size mask, restore; one register at a time."""
        sizes = []
        rd, wr = dev.read, dev.write
        for i in range(count):
            reg = pos + 4 * i
            orig = rd(reg, 4)
            wr(reg, 4, mask)
            sizes.append(rd(reg, 4))
            wr(reg, 4, orig)
        return sizes

    @staticmethod
    def _pci_size(base: int, maxbase: int, mask: int) -> int:
        size = mask & maxbase
        if not size:
            return 0
        size &= -size
        if base == maxbase and ((base | (size - 1)) & mask) != mask:
            return 0
        return size

    def _read_base(self, dev: PciDev, idx: int, pos: int, sizes: list[int], rom_flags: int = 0) -> int:
        """__pci_read_base(): decode one BAR (two dwords if 64-bit) into resource ``idx``; returns 1 for
        64-bit.  ``rom_flags``: decode an expansion ROM BAR, the resource starting with these flags."""
        l = dev.read(pos, 4)
        sz = sizes[0]
        if sz == 0xFFFFFFFF:
            sz = 0
        if l == 0xFFFFFFFF:
            l = 0
        if not rom_flags:
            if l & regs.BASE_ADDRESS_SPACE_IO:
                flags = (l & 0x3) | IORESOURCE_IO | IORESOURCE_SIZEALIGN
                l64, sz64, mask64 = l & ~0x3, sz & ~0x3, 0xFFFC
            else:
                flags = (l & 0xF) | IORESOURCE_MEM | IORESOURCE_SIZEALIGN
                if l & regs.BASE_ADDRESS_MEM_PREFETCH:
                    flags |= IORESOURCE_PREFETCH
                if (l & 0x6) == regs.BASE_ADDRESS_MEM_TYPE_64:
                    flags |= IORESOURCE_MEM_64
                l64, sz64, mask64 = l & ~0xF, sz & ~0xF, 0xFFFFFFF0
        else:
            flags = rom_flags
            if l & regs.ROM_ADDRESS_ENABLE:
                flags |= IORESOURCE_ROM_ENABLE
            l64, sz64, mask64 = l & ROM_MASK, sz & ROM_MASK, ROM_MASK
        if flags & IORESOURCE_MEM_64:
            hi = dev.read(pos + 4, 4)
            l64 |= hi << 32
            sz64 |= sizes[1] << 32
            mask64 |= 0xFFFFFFFF << 32
        if sz64:
            sz64 = self._pci_size(l64, sz64, mask64)
        if not sz64:
            res = dev.resources[idx]
            if res.flags:
                res.flags = 0
            return 0
        res = dev.own_resource(idx)
        res.flags, res.start, res.end = flags, l64, l64 + sz64 - 1
        return 1 if flags & IORESOURCE_MEM_64 else 0

    def _read_bases(self, dev: PciDev, howmany: int, rom: int) -> None:
        """pci_read_bases(): decode disabled around the sizing writes, then decode each BAR."""
        if dev.is_virtfn:
            return                      # VF BARs are RO zero (PCIe r4.0 §9.3.4.1.11)
        orig_cmd = dev.read(regs.COMMAND, 2)
        decode = regs.COMMAND_MEMORY | regs.COMMAND_IO
        if orig_cmd & decode:
            dev.write(regs.COMMAND, 2, orig_cmd & ~decode)
        sizes = self._size_bars(dev, howmany, regs.BASE_ADDRESS_0, 0xFFFFFFFF)
        romsz = self._size_bars(dev, 1, rom, ROM_MASK) if rom else []
        if orig_cmd & decode:
            dev.write(regs.COMMAND, 2, orig_cmd)
        pos = 0
        while pos < howmany:
            pos += self._read_base(dev, pos, regs.BASE_ADDRESS_0 + 4 * pos, sizes[pos:])
            pos += 1
        if rom:
            dev.rom_base_reg = rom
            self._read_base(dev, PCI_ROM_RESOURCE, rom, romsz,
                            IORESOURCE_MEM | IORESOURCE_PREFETCH | IORESOURCE_READONLY | IORESOURCE_SIZEALIGN)

    # ------------------------------------------------------------------ bridge windows
    def _read_bridge_windows(self, br: PciDev) -> None:
        """pci_read_bridge_windows() (probe.c): probe which optional windows exist by writing, reading back."""
        io = br.read(regs.IO_BASE, 2)
        if not io:
            br.write(regs.IO_BASE, 2, 0xE0F0)
            io = br.read(regs.IO_BASE, 2)
            br.write(regs.IO_BASE, 2, 0)
        if io:
            br.io_window = True
        pmem = br.read(regs.PREF_MEMORY_BASE, 4)
        if not pmem:
            br.write(regs.PREF_MEMORY_BASE, 4, 0xFFE0FFF0)
            pmem = br.read(regs.PREF_MEMORY_BASE, 4)
            br.write(regs.PREF_MEMORY_BASE, 4, 0)
        if not pmem:
            return
        br.pref_window = True
        if pmem & 0xF == 0x1:
            orig = br.read(regs.PREF_BASE_UPPER32, 4)
            br.write(regs.PREF_BASE_UPPER32, 4, 0xFFFFFFFF)
            tmp = br.read(regs.PREF_BASE_UPPER32, 4)
            br.write(regs.PREF_BASE_UPPER32, 4, orig)
            if tmp:
                br.pref_64_window = True

    @staticmethod
    def _window(res: Resource, base: int, limit: int, gran: int) -> None:
        if base <= limit:
            res.start, res.end = base, limit + gran - 1
        else:
            res.start, res.end = 0, -1
            res.flags |= IORESOURCE_UNSET | IORESOURCE_DISABLED

    def _read_bridge_bases(self, bus: PciBus) -> None:
        """pci_read_bridge_bases() (probe.c, via x86 pcibios_fixup_bus()): the windows as programmed now."""
        br = bus.self_dev
        if br is None:
            return
        res = br.resources
        if br.io_window:
            lo, li = br.read(regs.IO_BASE, 1), br.read(regs.IO_LIMIT, 1)
            base, limit = (lo & 0xF0) << 8, (li & 0xF0) << 8
            if lo & 0xF == 0x1:
                base |= br.read(regs.IO_BASE_UPPER16, 2) << 16
                limit |= br.read(regs.IO_LIMIT_UPPER16, 2) << 16
            res[PCI_BRIDGE_IO_WINDOW].flags = (lo & 0xF) | IORESOURCE_IO
            self._window(res[PCI_BRIDGE_IO_WINDOW], base, limit, 0x1000)
        mb, ml = br.read(regs.MEMORY_BASE, 2), br.read(regs.MEMORY_LIMIT, 2)
        res[PCI_BRIDGE_MEM_WINDOW].flags = (mb & 0xF) | IORESOURCE_MEM
        self._window(res[PCI_BRIDGE_MEM_WINDOW], (mb & 0xFFF0) << 16, (ml & 0xFFF0) << 16, 0x100000)
        if br.pref_window:
            pb, pl = br.read(regs.PREF_MEMORY_BASE, 2), br.read(regs.PREF_MEMORY_LIMIT, 2)
            base, limit = (pb & 0xFFF0) << 16, (pl & 0xFFF0) << 16
            if pb & 0xF == 0x1:
                bh, lh = br.read(regs.PREF_BASE_UPPER32, 4), br.read(regs.PREF_LIMIT_UPPER32, 4)
                if bh <= lh:
                    base |= bh << 32
                    limit |= lh << 32
            flags = (pb & 0xF) | IORESOURCE_MEM | IORESOURCE_PREFETCH
            if flags & 0x1:
                flags |= IORESOURCE_MEM_64
            res[PCI_BRIDGE_PREF_MEM_WINDOW].flags = flags
            self._window(res[PCI_BRIDGE_PREF_MEM_WINDOW], base, limit, 0x100000)
        if br.transparent and bus.parent is not None:
            bus.resources.extend(r for r in bus.parent.resources if r.flags)

    # ------------------------------------------------------------------ pci_device_add
    def _configure_device(self, dev: PciDev) -> None:
        """pci_configure_device() (probe.c): MPS, extended tags, SERR forwarding, RCB (PCIE_BUS_DEFAULT policy)."""
        if dev.is_pcie and not dev.is_virtfn:
            self._configure_mps(dev)
            if dev.devcap & EXP_DEVCAP_EXT_TAG:
                self._exp_clear_set(dev, EXP_DEVCTL, 0, EXP_DEVCTL_EXT_TAG)
        if dev.hdr_type == regs.HEADER_TYPE_BRIDGE:
            ctl = dev.read(regs.BRIDGE_CONTROL, 2)
            if not ctl & regs.BRIDGE_CTL_SERR:
                dev.write(regs.BRIDGE_CONTROL, 2, ctl | regs.BRIDGE_CTL_SERR)
        if dev.is_pcie and not dev.is_virtfn and dev.pcie_type not in (TYPE_ROOT_PORT, TYPE_UPSTREAM,
                                                                          TYPE_DOWNSTREAM, TYPE_RC_EC):
            rp = self._root_port(dev)
            if rp is not None:
                rcb = self._exp_read(rp, EXP_LNKCTL, 2) & EXP_LNKCTL_RCB
                self._exp_clear_set(dev, EXP_LNKCTL, EXP_LNKCTL_RCB, rcb)

    @staticmethod
    def _root_port(dev: PciDev) -> PciDev | None:
        """pcie_find_root_port()."""
        d: PciDev | None = dev
        while d is not None:
            if d.is_pcie and d.pcie_type == TYPE_ROOT_PORT:
                return d
            d = d.upstream_bridge
        return None

    def _get_mps(self, dev: PciDev) -> int:
        return 128 << ((self._exp_read(dev, EXP_DEVCTL, 2) & EXP_DEVCTL_PAYLOAD) >> 5)

    def _set_mps(self, dev: PciDev, mps: int) -> bool:
        v = mps.bit_length() - 8
        if v > dev.pcie_mpss:
            return False
        self._exp_clear_set(dev, EXP_DEVCTL, EXP_DEVCTL_PAYLOAD, v << 5)
        return True

    def _configure_mps(self, dev: PciDev) -> None:
        """pci_configure_mps() (probe.c) with the default pcie_bus_config (PCIE_BUS_DEFAULT)."""
        if dev.pcie_type == TYPE_RC_END:
            self._set_mps(dev, 128 << dev.pcie_mpss)
            return
        br = dev.upstream_bridge
        if br is None or not br.is_pcie:
            return
        mps, p_mps = self._get_mps(dev), self._get_mps(br)
        if mps == p_mps:
            return
        mpss = 128 << dev.pcie_mpss
        if mpss < p_mps and br.pcie_type == TYPE_ROOT_PORT:
            self._set_mps(br, mpss)
            p_mps = self._get_mps(br)
        self._set_mps(dev, p_mps)

    def _init_capabilities(self, dev: PciDev) -> None:
        """pci_init_capabilities() (probe.c): the parts that change config space."""
        pos = dev.caps.get(CAP_ID_MSI, 0)               # pci_msi_init(): MSI off
        if pos:
            ctrl = dev.read(pos + 2, 2)
            if ctrl & MSI_FLAGS_ENABLE:
                dev.write(pos + 2, 2, ctrl & ~MSI_FLAGS_ENABLE)
        pos = dev.caps.get(CAP_ID_MSIX, 0)              # pci_msix_init(): MSI-X off
        if pos:
            ctrl = dev.read(pos + 2, 2)
            if ctrl & MSIX_FLAGS_ENABLE:
                dev.write(pos + 2, 2, ctrl & ~MSIX_FLAGS_ENABLE)
        self._pm_init(dev)
        self._configure_ari(dev)
        pos = dev.ext_caps.get(EXT_CAP_ID_SRIOV, 0)     # pci_iov_init()
        if pos and dev.is_pcie:
            self._sriov_init(dev, pos)
        dev.acs_cap = dev.ext_caps.get(EXT_CAP_ID_ACS, 0)
        self._aer_init(dev)

    def _pm_init(self, dev: PciDev) -> None:
        """pci_pm_init() (drivers/pci/pci.c): PME generation off (PME status cleared), then power up to D0."""
        pm = dev.caps.get(CAP_ID_PM, 0)
        if not pm:
            return
        pmc = dev.read(pm + PM_PMC, 2)
        if pmc & 0x7 > 3:
            return
        if pmc & PM_CAP_PME_MASK:
            pmcsr = dev.read(pm + PM_CTRL, 2)
            dev.write(pm + PM_CTRL, 2, (pmcsr | PM_CTRL_PME_STATUS) & ~PM_CTRL_PME_ENABLE)
        pmcsr = dev.read(pm + PM_CTRL, 2)
        if pmcsr & PM_CTRL_STATE_MASK:
            dev.write(pm + PM_CTRL, 2, pmcsr & ~(PM_CTRL_STATE_MASK | PM_CTRL_PME_STATUS))

    def _configure_ari(self, dev: PciDev) -> None:
        """pci_configure_ari() (drivers/pci/pci.c): function 0 decides ARI Forwarding in the port above."""
        if not dev.is_pcie or dev.devfn:
            return
        br = dev.bus.self_dev
        if br is None:
            return
        if not self._exp_read(br, EXP_DEVCAP2, 4) & EXP_DEVCAP2_ARI:
            return
        if EXT_CAP_ID_ARI in dev.ext_caps:
            self._exp_clear_set(br, EXP_DEVCTL2, 0, EXP_DEVCTL2_ARI)
            br.ari_enabled = True
        else:
            self._exp_clear_set(br, EXP_DEVCTL2, EXP_DEVCTL2_ARI, 0)
            br.ari_enabled = False

    def _aer_init(self, dev: PciDev) -> None:
        """pci_aer_init() (drivers/pci/pcie/aer.c), native AER: clear error status, enable error reporting."""
        aer = dev.ext_caps.get(EXT_CAP_ID_ERR, 0)
        if not aer:
            return
        if dev.pcie_type in (TYPE_ROOT_PORT, TYPE_RC_EC):
            dev.write(aer + ERR_ROOT_STATUS, 4, dev.read(aer + ERR_ROOT_STATUS, 4))
        dev.write(aer + ERR_COR_STATUS, 4, dev.read(aer + ERR_COR_STATUS, 4))
        dev.write(aer + ERR_UNCOR_STATUS, 4, dev.read(aer + ERR_UNCOR_STATUS, 4))
        self._exp_clear_set(dev, EXP_DEVCTL, 0, EXP_AER_FLAGS)

    # ------------------------------------------------------------------ SR-IOV (drivers/pci/iov.c)
    @staticmethod
    def _iov_set_numvfs(dev: PciDev, iov: SriovInfo, n: int) -> None:
        dev.write(iov.pos + SRIOV_NUM_VF, 2, n)
        iov.offset = dev.read(iov.pos + SRIOV_VF_OFFSET, 2)
        iov.stride = dev.read(iov.pos + SRIOV_VF_STRIDE, 2)

    @staticmethod
    def virtfn_bus(dev: PciDev, vf_id: int) -> int:
        """pci_iov_virtfn_bus()."""
        assert dev.sriov is not None
        return dev.bus.number + ((dev.devfn + dev.sriov.offset + dev.sriov.stride * vf_id) >> 8)

    @staticmethod
    def virtfn_devfn(dev: PciDev, vf_id: int) -> int:
        """pci_iov_virtfn_devfn()."""
        assert dev.sriov is not None
        return (dev.devfn + dev.sriov.offset + dev.sriov.stride * vf_id) & 0xFF

    def _sriov_init(self, dev: PciDev, pos: int) -> None:
        """sriov_init() (drivers/pci/iov.c): ARI Capable Hierarchy, page size, VF BAR sizes, VF bus numbers."""
        ctrl = dev.read(pos + SRIOV_CTRL, 2)
        if ctrl & SRIOV_CTRL_VFE:
            dev.write(pos + SRIOV_CTRL, 2, 0)
        ctrl = 0
        first_pf = not any(d.is_physfn for d in dev.bus.devices)
        if first_pf and dev.bus.self_dev is not None and dev.bus.self_dev.ari_enabled:
            ctrl |= SRIOV_CTRL_ARI
        dev.write(pos + SRIOV_CTRL, 2, ctrl)
        total = dev.read(pos + SRIOV_TOTAL_VF, 2)
        if not total:
            return
        pgsz = dev.read(pos + SRIOV_SUP_PGSIZE, 4)
        if not pgsz:
            return
        pgsz &= -pgsz
        dev.write(pos + SRIOV_SYS_PGSIZE, 4, pgsz)
        iov = SriovInfo(pos)
        dev.use_iov_resources()
        sizes = self._size_bars(dev, PCI_SRIOV_NUM_BARS, pos + SRIOV_BAR, 0xFFFFFFFF)
        nres = 0
        i = 0
        while i < PCI_SRIOV_NUM_BARS:
            bar64 = self._read_base(dev, PCI_IOV_RESOURCES + i, pos + SRIOV_BAR + 4 * i, sizes[i:])
            res = dev.resources[PCI_IOV_RESOURCES + i]
            if res.flags:
                if res.size & (PAGE_SIZE - 1):
                    for j in range(PCI_SRIOV_NUM_BARS):
                        dev.resources[PCI_IOV_RESOURCES + j].flags = 0
                    return
                iov.barsz[i] = res.size
                res.end = res.start + res.size * total - 1
                i += bar64
                nres += 1
            i += 1
        iov.nres, iov.ctrl, iov.total_vfs = nres, ctrl, total
        iov.vf_device = dev.read(pos + SRIOV_VF_DID, 2)
        iov.pgsz = pgsz
        iov.cap = dev.read(pos + SRIOV_CAP, 4)
        iov.link = dev.read(pos + SRIOV_FUNC_LINK, 1)
        dev.sriov, dev.is_physfn = iov, True
        # compute_max_vf_buses(): every NumVFs may move First VF Offset / VF Stride.
        for nr in range(total, 0, -1):
            self._iov_set_numvfs(dev, iov, nr)
            if not iov.offset or (nr > 1 and not iov.stride):
                self._iov_set_numvfs(dev, iov, 0)
                dev.sriov, dev.is_physfn = None, False
                for j in range(PCI_SRIOV_NUM_BARS):
                    dev.resources[PCI_IOV_RESOURCES + j].flags = 0
                return
            iov.max_vf_buses = max(iov.max_vf_buses, self.virtfn_bus(dev, nr - 1))
        self._iov_set_numvfs(dev, iov, 0)

    @staticmethod
    def iov_bus_range(bus: PciBus) -> int:
        """pci_iov_bus_range() (iov.c): extra bus numbers the PFs on this bus may need for VFs."""
        m = max((d.sriov.max_vf_buses for d in bus.devices if d.is_physfn and d.sriov), default=0)
        return m - bus.number if m else 0

    # ------------------------------------------------------------------ scanning
    def _device_add(self, dev: PciDev, bus: PciBus) -> None:
        """pci_device_add() (probe.c)."""
        self._configure_device(dev)
        self._init_capabilities(dev)
        bus.devices.append(dev)

    @staticmethod
    def _only_one_child(bus: PciBus) -> bool:
        """only_one_child() (probe.c): a downstream port's link has device 0 only."""
        br = bus.self_dev
        return br is not None and br.is_pcie and br.pcie_type in _DOWNSTREAM_PORTS

    def _scan_slot(self, bus: PciBus, devfn: int) -> None:
        """pci_scan_slot() (probe.c): function 0, then the others (ARI chain or the multifunction bit)."""
        br = bus.self_dev
        fn = 0
        while True:
            dev = self._scan_device(bus, devfn + fn)
            if dev is not None:
                if fn > 0:
                    dev.multifunction = True
                self._device_add(dev, bus)
            elif fn == 0:
                return
            # next_fn(): pci_ari_enabled(bus) is known once function 0 has been added
            if br is not None and br.ari_enabled:
                if dev is None:
                    return
                pos = dev.ext_caps.get(EXT_CAP_ID_ARI, 0)
                if not pos:
                    return
                nxt = dev.read(pos + ARI_CAP, 2) >> 8
                if nxt <= fn:
                    return
                fn = nxt
            else:
                if fn >= 7 or (dev is not None and not dev.multifunction):
                    return
                fn += 1

    def _add_new_bus(self, parent: PciBus, dev: PciDev | None, busnr: int) -> PciBus:
        """pci_add_new_bus() / pci_alloc_child_bus() (probe.c)."""
        child = PciBus(parent.seg, busnr, parent, dev)
        if dev is not None:
            ext_ok = not parent.no_extcfg and (dev.is_pcie and dev.pcie_type in (TYPE_ROOT_PORT, TYPE_UPSTREAM,
                                                                                  TYPE_DOWNSTREAM))
            if not ext_ok:
                pos = dev.caps.get(CAP_ID_PCIX, 0)
                ext_ok = (not parent.no_extcfg and bool(pos)
                          and bool(dev.read(pos + PCIX_STATUS, 4) & PCIX_STATUS_266_533))
            child.no_extcfg = not ext_ok
            child.resources = [dev.resources[PCI_BRIDGE_IO_WINDOW], dev.resources[PCI_BRIDGE_MEM_WINDOW],
                               dev.resources[PCI_BRIDGE_PREF_MEM_WINDOW]]
            dev.subordinate = child
        parent.children.append(child)
        self.buses[(parent.seg, busnr)] = child
        return child

    def _scan_bridge(self, bus: PciBus, dev: PciDev, max_: int, available: int, pass_: int) -> int:
        """pci_scan_bridge_extend() (probe.c): keep firmware bus numbers (pass 0) or assign new ones (pass 1)."""
        buses = dev.read(regs.PRIMARY_BUS, 4)
        primary, secondary, subordinate = buses & 0xFF, (buses >> 8) & 0xFF, (buses >> 16) & 0xFF
        if not primary and primary != bus.number and secondary and subordinate:
            primary = bus.number        # "Primary bus is hard wired to 0"
        broken = not pass_ and (primary != bus.number or secondary <= bus.number or secondary > subordinate)
        bctl = dev.read(regs.BRIDGE_CONTROL, 2)
        dev.write(regs.BRIDGE_CONTROL, 2, bctl & ~regs.BRIDGE_CTL_MASTER_ABORT)
        child: PciBus | None
        if (secondary or subordinate) and not broken:
            if not pass_:
                child = self.buses.get((bus.seg, secondary))
                if child is None:
                    child = self._add_new_bus(bus, dev, secondary)
                    child.primary, child.busn_end, child.bridge_ctl = primary, subordinate, bctl
                self._scan_child_bus(child, subordinate - secondary)
                max_ = max(max_, subordinate)
        elif pass_:
            dev.write(regs.STATUS, 2, 0xFFFF)
            next_busnr = max_ + 1
            child = self.buses.get((bus.seg, next_busnr))
            if child is None:
                child = self._add_new_bus(bus, dev, next_busnr)
                child.busn_end = bus.busn_end
            max_ += 1
            if available:
                available -= 1
            buses = (buses & 0xFF000000) | child.primary | child.number << 8 | child.busn_end << 16
            dev.write(regs.PRIMARY_BUS, 4, buses)          # all three numbers in one write
            child.bridge_ctl = bctl
            max_ = self._scan_child_bus(child, available)
            child.busn_end = max_
            dev.write(regs.SUBORDINATE_BUS, 1, max_)
        elif broken:
            # Temporarily stop forwarding until pass 1 renumbers it (pcibios_assign_all_busses() || broken).
            dev.write(regs.PRIMARY_BUS, 4, buses & 0xFF000000)
        dev.write(regs.SEC_STATUS, 2, 0xFFFF)
        dev.write(regs.BRIDGE_CONTROL, 2, bctl)
        return max_

    def _scan_child_bus(self, bus: PciBus, available: int) -> int:
        """pci_scan_child_bus_extend() (probe.c): all slots, SR-IOV bus reservation, bridges in two passes."""
        start = bus.number
        # pci_scan_slot() returns at once (no config cycle) for devfn > 0 when only_one_child().
        for devnr in range(1 if self._only_one_child(bus) else 32):
            self._scan_slot(bus, devnr << 3)
        used = self.iov_bus_range(bus)
        max_ = start + used
        self._read_bridge_bases(bus)
        bridges = [d for d in bus.devices if d.is_bridge]
        hotplug = sum(1 for d in bridges if d.is_hotplug_bridge)
        normal = len(bridges) - hotplug
        for dev in bridges:
            cmax = max_
            max_ = self._scan_bridge(bus, dev, max_, 0, 0)
            used += 1
            if max_ - cmax > 1:
                used += max_ - cmax - 1
        for dev in bridges:
            nb = 0
            if not hotplug and normal == 1:
                nb = available
            elif dev.is_hotplug_bridge:
                nb = available // hotplug
                left = available - used + 1
                nb = min(nb, left) if left >= 0 else nb     # unsigned wrap in C leaves nb unchanged
            cmax = max_
            max_ = self._scan_bridge(bus, dev, cmax, nb, 1)
            if max_ - cmax > 1:
                used += max_ - cmax - 1
        if bus.self_dev is not None and bus.self_dev.is_hotplug_bridge:
            used = max(available, 0)                        # pci_hotplug_bus_size (1) - 1
            if max_ - start < used:
                max_ = min(start + used, bus.busn_end)
        return max_

    def scan_root(self, seg: int, bus_start: int, bus_end: int, windows: list[Resource]) -> PciBus:
        """Scan one host bridge's root bus (pci_scan_root_bus_bridge with a _CRS bus range)."""
        root = PciBus(seg, bus_start, None, None)
        root.busn_end = bus_end
        root.resources = windows
        self.buses[(seg, bus_start)] = root
        self._scan_child_bus(root, 0)
        return root

    # ------------------------------------------------------------------ later: VFs and drivers
    def add_virtfn(self, pf: PciDev, vf_id: int) -> PciDev | None:
        """pci_iov_add_virtfn() (iov.c): the VF's bus (maybe a new virtual one), setup, resources."""
        iov = pf.sriov
        assert iov is not None
        busnr = self.virtfn_bus(pf, vf_id)
        if busnr == pf.bus.number:
            bus = pf.bus
        else:
            found = self.buses.get((pf.seg, busnr))
            if found is None:
                found = self._add_new_bus(pf.bus, None, busnr)
                found.busn_end = busnr
            bus = found
        devfn = self.virtfn_devfn(pf, vf_id)
        at = self.topo.address(pf.seg, bus.number, devfn)
        vf = PciDev(bus, devfn, at.read, at.write)
        vf.vendor, vf.device = pf.vendor, iov.vf_device
        vf.is_virtfn, vf.physfn, vf.vf_id = True, pf, vf_id
        if vf_id == 0:
            # pci_read_vf_config_common(): class, header type, subsystem IDs read once from VF 0.
            iov.class_ = vf.read(regs.REVISION_ID, 4)
            iov.hdr_type = vf.read(regs.HEADER_TYPE, 1)
            iov.subsystem_vendor = vf.read(regs.SUBSYSTEM_VENDOR_ID, 2)
            iov.subsystem_device = vf.read(regs.SUBSYSTEM_ID, 2)
        if not self._setup_device(vf):
            return None
        vf.multifunction = False
        for i in range(PCI_SRIOV_NUM_BARS):
            res = pf.resources[PCI_IOV_RESOURCES + i]
            if res.parent is None:
                continue
            size = iov.barsz[i]
            r = vf.own_resource(i)
            r.flags = res.flags
            r.set_range(res.start + size * vf_id, size)
            Allocator.insert(res, r)
        self._device_add(vf, bus)
        pf.virtfns.append(vf)
        return vf


class Enumeration:
    """The result of enumerating a topology: buses, devices in probe order, and what software can do next."""

    def __init__(self, topology: Topology, options: EnumOptions) -> None:
        self.topology = topology
        self.options = options
        self.scanner = Scanner(topology, options)
        self.alloc = Allocator(options.pci_mem_start)
        self.root_buses: list[PciBus] = []
        self.devices: list[PciDev] = []
        """pci_bus_add_devices() order; devices added later (VFs) are appended."""
        self.unassigned: list[tuple[PciDev, int]] = []
        self.notes: list[str] = []
        """What enumeration could not do as Linux would (empty when all went as on a real machine)."""
        self._lpc: dict[PciBus, ConfigAddress] = {}
        """Config accessors of device 31.0 (the Intel PCH LPC bridge) per bus, for the ACS quirks."""

    # ------------------------------------------------------------------ boot
    def boot(self) -> None:
        """Scan every host bridge, assign resources, then add devices (IOMMU probe order)."""
        with gc_paused():
            self._boot()

    def _boot(self) -> None:
        for rc in self.topology.host_bridges:
            seg = rc.segment
            windows = []
            for ap in rc.apertures:
                flags = (IORESOURCE_IO if ap.kind == "io" else IORESOURCE_MEM) | (
                    IORESOURCE_PREFETCH if ap.prefetch else 0)
                r = Resource(ap.start, ap.end, flags, f"PCI Bus {seg:04x}:{rc.bus_start:02x}")
                r.parent = Resource(0, -1, 0, "root")     # windows hang below iomem/ioport
                windows.append(r)
            self.root_buses.append(self.scanner.scan_root(seg, rc.bus_start, rc.bus_end, windows))
        for root in self.root_buses:
            realloc = self.options.realloc
            if realloc is None:
                realloc = self._iov_unassigned(root)
            self.unassigned += Assigner(self.alloc).run(root, realloc)
        for root in self.root_buses:
            self._bus_add_devices(root)

    @staticmethod
    def _iov_unassigned(bus: PciBus) -> bool:
        """pci_realloc_detect() (setup-bus.c): any SR-IOV BAR still at bus address 0 turns realloc on."""
        for dev in _walk(bus):
            for i in range(PCI_SRIOV_NUM_BARS):
                r = dev.resources[PCI_IOV_RESOURCES + i]
                if r.flags and not r.start:
                    return True
        return False

    def _bus_add_devices(self, bus: PciBus) -> None:
        """pci_bus_add_devices() (drivers/pci/bus.c): every device of the bus, then each child bus."""
        for dev in bus.devices:
            self._add_device(dev)
        for dev in bus.devices:
            if dev.subordinate is not None:
                self._bus_add_devices(dev.subordinate)

    def _add_device(self, dev: PciDev) -> None:
        self.devices.append(dev)
        if self.options.iommu:
            # pci_dma_configure() -> pci_enable_acs() when the IOMMU probes the device; Intel PCH root
            # port quirks read the LPC bridge at device 31.0 of the same bus.
            lpc = self._lpc.get(dev.bus)
            if lpc is None:
                lpc = self._lpc[dev.bus] = self.topology.address(dev.seg, dev.bus.number, 0xF8)
            program_acs(dev.read, dev.write, vendor=dev.vendor, device=dev.device,
                        pcie_type=dev.pcie_type if dev.is_pcie else None, acs_pos=dev.acs_cap, read_lpc=lpc.read)

    # ------------------------------------------------------------------ drivers
    def enable_device(self, dev: PciDev, mem_only: bool = False) -> bool:
        """What a driver's probe does: pci_enable_device[_mem]() (bridges above first), pci_set_master()."""
        if not self._enable(dev, IORESOURCE_MEM if mem_only else IORESOURCE_MEM | IORESOURCE_IO):
            return False
        self._set_master(dev)
        return True

    def _enable_bridge(self, dev: PciDev) -> None:
        """pci_enable_bridge() (drivers/pci/pci.c)."""
        up = dev.upstream_bridge
        if up is not None:
            self._enable_bridge(up)
        if dev.enable_cnt:
            if not dev.is_busmaster:
                self._set_master(dev)
            return
        self._enable(dev, IORESOURCE_MEM | IORESOURCE_IO)
        self._set_master(dev)

    def _enable(self, dev: PciDev, flags: int) -> bool:
        """pci_enable_device_flags() (pci.c) -> pci_enable_resources() (setup-res.c); False if a BAR is unset."""
        dev.enable_cnt += 1
        if dev.enable_cnt > 1:
            return True
        up = dev.upstream_bridge
        if up is not None:
            self._enable_bridge(up)
        cmd = old = dev.read(regs.COMMAND, 2)
        res = dev.resources
        for i in _ENABLE_SLOTS:         # SR-IOV BARs are enabled by VF MSE, not here
            r = res[i]
            if not r.flags & flags:
                continue
            if not r.flags & (IORESOURCE_IO | IORESOURCE_MEM) or is_optional(dev, i):
                continue
            if i < PCI_BRIDGE_RESOURCES and (r.flags & IORESOURCE_UNSET or r.parent is None):
                dev.enable_cnt -= 1     # "not assigned; can't enable device"
                return False
            if r.parent is not None:
                cmd |= regs.COMMAND_IO if r.flags & IORESOURCE_IO else regs.COMMAND_MEMORY
        if cmd != old:
            dev.write(regs.COMMAND, 2, cmd)
        if dev.read(regs.INTERRUPT_PIN, 1):
            cmd = dev.read(regs.COMMAND, 2)
            if cmd & regs.COMMAND_INTX_DISABLE:
                dev.write(regs.COMMAND, 2, cmd & ~regs.COMMAND_INTX_DISABLE)
        return True

    @staticmethod
    def _set_master(dev: PciDev) -> None:
        """pci_set_master() (pci.c) with the default pcibios_set_master() latency fix-up for conventional PCI."""
        old = dev.read(regs.COMMAND, 2)
        if not old & regs.COMMAND_MASTER:
            dev.write(regs.COMMAND, 2, old | regs.COMMAND_MASTER)
        dev.is_busmaster = True
        if dev.is_pcie:
            return
        lat = dev.read(regs.LATENCY_TIMER, 1)
        if lat < 16:
            dev.write(regs.LATENCY_TIMER, 1, 64)

    # ------------------------------------------------------------------ SR-IOV (sriov_numvfs)
    def enable_sriov(self, dev: PciDev, nr: int) -> list[PciDev]:
        """sriov_enable() (iov.c): like writing ``nr`` to sriov_numvfs; returns the VFs added (in order)."""
        with gc_paused():
            return self._enable_sriov(dev, nr)

    def _enable_sriov(self, dev: PciDev, nr: int) -> list[PciDev]:
        iov = dev.sriov
        if iov is None:
            raise VfiolabError(f"{dev.name}: not an SR-IOV PF (ENOSYS)")
        if not nr:
            return []
        if iov.num_vfs:
            raise VfiolabError(f"{dev.name}: {iov.num_vfs} VFs already enabled (EBUSY)")
        initial = dev.read(iov.pos + SRIOV_INITIAL_VF, 2)
        vfm = bool(iov.cap & SRIOV_CAP_VFM)
        if initial > iov.total_vfs or (not vfm and initial != iov.total_vfs):
            raise VfiolabError(f"{dev.name}: InitialVFs {initial} invalid (EIO)")
        if not 0 < nr <= iov.total_vfs or (not vfm and nr > initial):
            raise VfiolabError(f"{dev.name}: {nr} VFs requested, TotalVFs is {iov.total_vfs} (EINVAL)")
        nres = 0
        for i in range(PCI_SRIOV_NUM_BARS):
            res = dev.resources[PCI_IOV_RESOURCES + i]
            if iov.barsz[i] * nr > res.size:
                continue
            if res.parent is not None:
                nres += 1
        if nres != iov.nres:
            raise VfiolabError(f"{dev.name}: not enough MMIO resources for SR-IOV (ENOMEM)")
        old_offset, old_stride = iov.offset, iov.stride
        Scanner._iov_set_numvfs(dev, iov, nr)
        last_bus = self.scanner.virtfn_bus(dev, nr - 1)
        if last_bus > dev.bus.busn_end:
            Scanner._iov_set_numvfs(dev, iov, 0)
            iov.offset, iov.stride = old_offset, old_stride
            raise VfiolabError(f"{dev.name}: can't enable {nr} VFs (bus {last_bus:02x} out of range of "
                               f"[bus {dev.bus.number:02x}-{dev.bus.busn_end:02x}]) (ENOMEM)")
        iov.ctrl |= SRIOV_CTRL_VFE | SRIOV_CTRL_MSE
        dev.write(iov.pos + SRIOV_CTRL, 2, iov.ctrl)
        added = []
        for vf_id in range(min(nr, initial)):
            vf = self.scanner.add_virtfn(dev, vf_id)
            if vf is not None:
                added.append(vf)
                self._add_device(vf)
        iov.num_vfs = nr
        return added

    def disable_sriov(self, dev: PciDev) -> None:
        """sriov_disable() (iov.c): remove the VFs, clear VF Enable and NumVFs (writing 0 to sriov_numvfs)."""
        iov = dev.sriov
        if iov is None or not iov.num_vfs:
            return
        for vf in dev.virtfns:
            vf.bus.devices.remove(vf)
            if vf in self.devices:
                self.devices.remove(vf)
            for r in vf.resources:
                Allocator.release(r)
            if vf.bus is not dev.bus and not vf.bus.devices and vf.bus.parent is not None:
                vf.bus.parent.children.remove(vf.bus)       # virtfn_remove_bus()
                self.scanner.buses.pop((vf.bus.seg, vf.bus.number), None)
        dev.virtfns = []
        iov.ctrl &= ~(SRIOV_CTRL_VFE | SRIOV_CTRL_MSE)
        dev.write(iov.pos + SRIOV_CTRL, 2, iov.ctrl)
        iov.num_vfs = 0
        Scanner._iov_set_numvfs(dev, iov, 0)

    # ------------------------------------------------------------------ results
    def find(self, name: str) -> PciDev:
        """The device called ``name`` (dddd:bb:dd.f)."""
        for dev in self.devices:
            if dev.name == name:
                return dev
        raise VfiolabError(f"no PCI device {name}")

    def records(self) -> list[DeviceRecord]:
        """Per device: IDs and every assigned resource (BARs, ROM, VF BARs, bridge windows)."""
        out = []
        for dev in self.devices:
            rec = DeviceRecord(dev.name, dev.vendor, dev.device, dev.class_, dev.is_bridge, dev.is_virtfn)
            for i, r in enumerate(dev.resources):
                if r.parent is not None and r.flags:
                    rec.resources.append(ResourceRecord(i, _kind(i), r.start, r.end, r.flags))
            if dev.subordinate is not None:
                rec.secondary, rec.subordinate = dev.subordinate.number, dev.subordinate.busn_end
            out.append(rec)
        return out

    @staticmethod
    def resource_lines(dev: PciDev) -> list[tuple[int, int, int]]:
        """sysfs ``resource`` (pci-sysfs.c resource_show()): 13 lines, 17 for bridges; unused ones zero,
        bridge windows that are unset or disabled zero too."""
        res = dev.resources
        lines = [(r.start, r.end, r.flags) if r.flags else (0, 0, 0) for r in res[:PCI_BRIDGE_RESOURCES]]
        if dev.subordinate:
            lines += [(r.start, r.end, r.flags) if r.flags and not r.flags & (IORESOURCE_UNSET | IORESOURCE_DISABLED)
                      else (0, 0, 0) for r in res[PCI_BRIDGE_RESOURCES:]]
        return lines

    def dumps(self) -> list[DumpedFunction]:
        """Every device's config bytes as Linux exposes them (cfg_size: 256 or 4096), in probe order, with
        its sysfs resource lines."""
        with gc_paused():
            return self._dumps()

    def _dumps(self) -> list[DumpedFunction]:
        out = []
        for dev in self.devices:
            data = self.topology.config_dump(dev.seg, dev.bus.number, dev.devfn, dev.cfg_size)
            if data is None:
                raise VfiolabError(f"{dev.name} no longer answers configuration reads")
            out.append(DumpedFunction(dev.seg, dev.bus.number, dev.devfn, data,
                                      resources=self.resource_lines(dev)))
        return out


def _walk(bus: PciBus) -> Iterator[PciDev]:
    for dev in bus.devices:
        yield dev
        if dev.subordinate is not None:
            yield from _walk(dev.subordinate)


def enumerate_topology(topology: Topology, options: EnumOptions | None = None) -> Enumeration:
    """Boot-time enumeration of ``topology`` like Linux: scan, assign resources, add devices."""
    e = Enumeration(topology, options or EnumOptions())
    e.boot()
    return e


__all__ = [
    "PCI_NUM_RESOURCES",
    "DeviceRecord",
    "EnumOptions",
    "Enumeration",
    "ResourceRecord",
    "Scanner",
    "enumerate_topology",
]
