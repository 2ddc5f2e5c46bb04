"""What the OS knows about PCI devices and buses after enumeration (Linux's struct pci_dev, pci_bus, resource).

These records are filled only from configuration reads (enumerate.py) and hold the resources that
resources.py sizes and assigns.  Every config access goes through the topology's ECAM-like
``config_read``/``config_write``, addressed by the bus number software believes in.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from vfiolab.pci.regs import bdf_str

# include/linux/ioport.h
IORESOURCE_IO: Final = 0x00000100
IORESOURCE_MEM: Final = 0x00000200
IORESOURCE_TYPE_BITS: Final = 0x00001F00
IORESOURCE_BUS: Final = 0x00001000
IORESOURCE_PREFETCH: Final = 0x00002000
IORESOURCE_READONLY: Final = 0x00004000
IORESOURCE_SIZEALIGN: Final = 0x00040000
IORESOURCE_STARTALIGN: Final = 0x00080000
IORESOURCE_MEM_64: Final = 0x00100000
IORESOURCE_WINDOW: Final = 0x00200000
IORESOURCE_DISABLED: Final = 0x10000000
IORESOURCE_UNSET: Final = 0x20000000
IORESOURCE_ROM_ENABLE: Final = 0x00000001
IORESOURCE_PCI_FIXED: Final = 0x00000010

# include/linux/pci.h resource numbers (CONFIG_PCI_IOV=y)
PCI_STD_NUM_BARS: Final = 6
PCI_ROM_RESOURCE: Final = 6
PCI_IOV_RESOURCES: Final = 7
PCI_SRIOV_NUM_BARS: Final = 6
PCI_BRIDGE_RESOURCES: Final = 13
PCI_BRIDGE_IO_WINDOW: Final = 13
PCI_BRIDGE_MEM_WINDOW: Final = 14
PCI_BRIDGE_PREF_MEM_WINDOW: Final = 15
PCI_NUM_RESOURCES: Final = 17

DevRead = Callable[[int, int], int]
"""pci_read_config_*() bound to one device: (offset, size) -> value."""
DevWrite = Callable[[int, int, int], None]
"""pci_write_config_*() bound to one device: (offset, size, value)."""


class Resource:
    """A range of bus addresses: [start, end] with IORESOURCE_* flags; assigned once it has a parent."""

    __slots__ = ("_children", "end", "flags", "name", "parent", "start")

    def __init__(self, start: int = 0, end: int = -1, flags: int = 0, name: str = "") -> None:
        self.start, self.end, self.flags, self.name = start, end, flags, name
        self.parent: Resource | None = None
        self._children: list[Resource] | None = None

    @property
    def children(self) -> list[Resource]:
        """Resources inside this one, by start (made on first use: 17 per device, few ever have any)."""
        kids = self._children
        if kids is None:
            kids = self._children = []
        return kids

    @children.setter
    def children(self, kids: list[Resource]) -> None:
        self._children = kids

    @property
    def size(self) -> int:
        """Linux resource_size(): end - start + 1."""
        return self.end - self.start + 1

    @property
    def assigned(self) -> bool:
        """Linux resource_assigned(): inserted into the resource tree."""
        return self.parent is not None

    def set_range(self, start: int, size: int) -> None:
        """Linux resource_set_range()."""
        self.start, self.end = start, start + size - 1

    def __repr__(self) -> str:
        return f"<Resource {self.name} [{self.start:#x}-{self.end:#x}] flags {self.flags:#x}>"


class _UnusedResource(Resource):
    """The resource slots a device does not use (BARs it lacks, SR-IOV BARs without an SR-IOV capability,
    bridge windows of a type 0 function): zero, shared by every such slot and never changed, so a device
    has resource objects only for what it decodes (Linux's struct pci_dev embeds all 17; the unused ones
    stay zeroed)."""

    __slots__ = ()

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"resource attribute {name!r}: this slot is unused by its device and shared; "
                             "give the device its own first (PciDev.own_resource, use_*_resources)")


def _unused_resource() -> Resource:
    res = object.__new__(_UnusedResource)
    for attr, value in (("start", 0), ("end", -1), ("flags", 0), ("name", ""), ("parent", None),
                        ("_children", None)):
        object.__setattr__(res, attr, value)
    return res


UNUSED_RESOURCE: Final = _unused_resource()


class SriovInfo:
    """Linux struct pci_sriov: what sriov_init() read from the SR-IOV capability."""

    __slots__ = (
        "barsz",
        "cap",
        "class_",
        "ctrl",
        "hdr_type",
        "initial_vfs",
        "link",
        "max_vf_buses",
        "nres",
        "num_vfs",
        "offset",
        "pgsz",
        "pos",
        "stride",
        "subsystem_device",
        "subsystem_vendor",
        "total_vfs",
        "vf_device",
    )

    def __init__(self, pos: int) -> None:
        self.pos = pos
        self.cap = self.ctrl = self.total_vfs = self.initial_vfs = self.num_vfs = 0
        self.offset = self.stride = self.vf_device = self.nres = self.max_vf_buses = 0
        self.link = self.pgsz = self.hdr_type = self.subsystem_vendor = self.subsystem_device = 0
        self.class_ = -1
        self.barsz = [0] * PCI_SRIOV_NUM_BARS


class PciBus:
    """Linux struct pci_bus: number, bus-number range, bridge above, devices in scan order, windows."""

    __slots__ = (
        "bridge_ctl",
        "busn_end",
        "children",
        "devices",
        "no_extcfg",
        "number",
        "parent",
        "primary",
        "resources",
        "seg",
        "self_dev",
    )

    def __init__(self, seg: int, number: int, parent: PciBus | None, self_dev: PciDev | None) -> None:
        self.seg, self.number = seg, number
        self.primary = parent.number if parent is not None else 0
        self.busn_end = 0xFF
        self.parent, self.self_dev = parent, self_dev
        self.children: list[PciBus] = []
        self.devices: list[PciDev] = []
        self.resources: list[Resource] = []
        self.bridge_ctl = 0
        self.no_extcfg: bool = bool(parent is not None and parent.no_extcfg)

    @property
    def is_root(self) -> bool:
        return self.parent is None

    @property
    def name(self) -> str:
        return f"{self.seg:04x}:{self.number:02x}"

    def __repr__(self) -> str:
        return f"<PciBus {self.name} [bus {self.number:02x}-{self.busn_end:02x}]>"


class PciDev:
    """Linux struct pci_dev, trimmed to what enumeration, resource assignment and IOMMU grouping use."""

    __slots__ = (
        "acs_cap",
        "ari_enabled",
        "bus",
        "caps",
        "cfg_size",
        "class_",
        "devcap",
        "devfn",
        "device",
        "driver",
        "enable_cnt",
        "ext_caps",
        "hdr_type",
        "io_window",
        "irq",
        "is_busmaster",
        "is_hotplug_bridge",
        "is_physfn",
        "is_virtfn",
        "multifunction",
        "pcie_cap",
        "pcie_flags",
        "pcie_mpss",
        "physfn",
        "pin",
        "pref_64_window",
        "pref_window",
        "read",
        "resources",
        "revision",
        "rom_base_reg",
        "seg",
        "sriov",
        "subordinate",
        "subsystem_device",
        "subsystem_vendor",
        "transparent",
        "vendor",
        "vf_id",
        "virtfns",
        "write",
    )

    def __init__(self, bus: PciBus, devfn: int, read: DevRead, write: DevWrite) -> None:
        self.seg, self.bus, self.devfn = bus.seg, bus, devfn
        # pci_read_config_*/pci_write_config_* for this device: (offset, size[, value]) at its address.
        self.read = read
        self.write = write
        self.vendor = self.device = self.revision = self.class_ = self.hdr_type = 0
        self.multifunction = False
        self.pcie_cap = self.pcie_flags = self.pcie_mpss = self.devcap = 0
        self.cfg_size = 256
        self.resources = [UNUSED_RESOURCE] * PCI_NUM_RESOURCES
        self.subordinate: PciBus | None = None
        self.transparent = self.io_window = self.pref_window = self.pref_64_window = False
        self.is_hotplug_bridge = self.ari_enabled = self.is_virtfn = self.is_physfn = False
        self.physfn: PciDev | None = None
        self.sriov: SriovInfo | None = None
        self.acs_cap = 0
        self.enable_cnt = 0
        self.is_busmaster = False
        self.pin = self.irq = self.rom_base_reg = self.subsystem_vendor = self.subsystem_device = 0
        self.caps: dict[int, int] = {}
        """Standard capability ID -> first offset (read once from the chain)."""
        self.ext_caps: dict[int, int] = {}
        """Extended capability ID -> first offset."""
        self.virtfns: list[PciDev] = []
        self.driver = False
        self.vf_id = -1

    def own_resource(self, idx: int) -> Resource:
        """Resource ``idx``, made this device's own first if it was the shared unused one."""
        res = self.resources[idx]
        if res is UNUSED_RESOURCE:
            res = self.resources[idx] = Resource()
        return res

    def use_iov_resources(self) -> None:
        """Own resources for the SR-IOV BARs (sriov_init() found an SR-IOV capability)."""
        self._own(PCI_IOV_RESOURCES, PCI_BRIDGE_RESOURCES)

    def use_window_resources(self) -> None:
        """Own resources for the bridge windows (a type 1 header)."""
        self._own(PCI_BRIDGE_RESOURCES, PCI_NUM_RESOURCES)

    def _own(self, first: int, end: int) -> None:
        for i in range(first, end):
            self.own_resource(i)

    # ------------------------------------------------------------------ derived facts
    @property
    def name(self) -> str:
        """pci_name(): dddd:bb:dd.f."""
        return bdf_str(self.seg, self.bus.number, self.devfn)

    @property
    def is_pcie(self) -> bool:
        return self.pcie_cap != 0

    @property
    def pcie_type(self) -> int:
        """Device/Port Type of the PCI Express capability (pci_pcie_type())."""
        return (self.pcie_flags >> 4) & 0xF

    @property
    def is_bridge(self) -> bool:
        """pci_is_bridge(): type 1 or CardBus header."""
        return self.hdr_type in (1, 2)

    @property
    def upstream_bridge(self) -> PciDev | None:
        """pci_upstream_bridge(): the bridge above (a VF's is its PF's)."""
        dev = self.physfn if self.is_virtfn and self.physfn is not None else self
        return dev.bus.self_dev

    def __repr__(self) -> str:
        return f"<PciDev {self.name} [{self.vendor:04x}:{self.device:04x}] class {self.class_:06x}>"
