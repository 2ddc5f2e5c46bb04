"""The PCI hierarchy Linux builds from config space: devices, buses, bridges, VFs and probe order.

Input is what a machine's functions read back (lspci dumps, sysfs, our platform snapshot); the output carries
exactly what IOMMU grouping needs, derived as Linux 7.2 does at enumeration (drivers/pci/probe.c
pci_setup_device, set_pcie_port_type, pci_scan_slot, pci_scan_child_bus_extend; drivers/pci/iov.c
pci_iov_add_virtfn; drivers/pci/pci.c pci_acs_init).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Final

from vfiolab.errors import VfiolabError
from vfiolab.pci import regs
from vfiolab.pci.caps.acs import AcsCap
from vfiolab.pci.caps.express_regs import (
    CAP_ID_EXP,
    TYPE_DOWNSTREAM,
    TYPE_ENDPOINT,
    TYPE_LEG_END,
    TYPE_PCI_BRIDGE,
    TYPE_PCIE_BRIDGE,
    TYPE_RC_EC,
    TYPE_RC_END,
    TYPE_ROOT_PORT,
    TYPE_UPSTREAM,
)
from vfiolab.pci.caps.express_regs import DEVCTL2 as EXP_DEVCTL2
from vfiolab.pci.caps.express_regs import DEVCTL2_ARI as EXP_DEVCTL2_ARI
from vfiolab.pci.caps.express_regs import FLAGS as EXP_FLAGS
from vfiolab.pci.dump import DumpedFunction

# Capability IDs and register offsets (include/uapi/linux/pci_regs.h).
CAP_ID_MSI: Final = 0x05
EXT_CAP_ID_ACS: Final = AcsCap.cap_id
EXT_CAP_ID_ARI: Final = 0x0E
EXT_CAP_ID_SRIOV: Final = 0x10
ACS_CAP: Final = AcsCap.CAP
SRIOV_CTRL: Final = 0x08
SRIOV_CTRL_VFE: Final = 0x0001
SRIOV_TOTAL_VF: Final = 0x0E
SRIOV_NUM_VF: Final = 0x10
SRIOV_VF_OFFSET: Final = 0x14
SRIOV_VF_STRIDE: Final = 0x16
SRIOV_VF_DID: Final = 0x1A

_TYPE_NAMES: Final = {
    TYPE_ENDPOINT: "endpoint", TYPE_LEG_END: "legacy endpoint", TYPE_ROOT_PORT: "root port",
    TYPE_UPSTREAM: "upstream port", TYPE_DOWNSTREAM: "downstream port",
    TYPE_PCI_BRIDGE: "PCIe-to-PCI bridge", TYPE_PCIE_BRIDGE: "PCI-to-PCIe bridge",
    TYPE_RC_END: "RC integrated endpoint", TYPE_RC_EC: "RC event collector",
}

# pci_dev.dev_flags bits the grouping code reads (include/linux/pci.h).
FLAG_PCIE_BRIDGE_ALIAS: Final = 1 << 5
FLAG_ACS_ENABLED_QUIRK: Final = 1 << 6
FLAG_BRIDGE_XLATE_ROOT: Final = 1 << 9
FLAG_PCI_BRIDGE_NO_ALIAS: Final = 1 << 14

# pci_disable_broken_acs_cap() (quirks.c): IDT switches whose ACS SV wrongly checks completions.
BROKEN_ACS_SV: Final = frozenset({(0x111D, 0x80B5), (0x111D, 0x8090)})

_HDR = struct.Struct("<HHHHIBBBB")  # vendor, device, command, status, class/rev, cls, lat, hdr, bist
_FFFF = b"\xff" * 4096
_CAP_TTL: Final = 48                 # PCI_FIND_CAP_TTL (drivers/pci/pci.h)
_EXT_TTL: Final = (4096 - 256) // 8  # PCI_FIND_NEXT_EXT_CAP


class PciBus:
    """One bus: a root bus (no parent), a bridge's secondary bus, or a virtual bus for VFs (self None)."""

    __slots__ = ("alias_hint", "ari", "devices", "domain", "number", "parent", "self", "slots", "virtual")

    def __init__(self, domain: int, number: int, bridge: PciDev | None, parent: PciBus | None,
                 virtual: bool = False) -> None:
        self.domain = domain
        self.number = number
        self.self = bridge
        self.parent = parent
        self.devices: list[PciDev] = []          # global (probe) order, like for_each_pci_dev
        self.slots: dict[int, list[PciDev]] = {}  # PCI_SLOT(devfn) -> functions, probe order
        self.virtual = virtual
        # ARI Forwarding Enable on the bridge above (pci_ari_enabled(bus)).
        self.ari = bool(bridge is not None and bridge.pcie_cap
                        and bridge.read(bridge.pcie_cap + EXP_DEVCTL2, 2) & EXP_DEVCTL2_ARI)
        self.alias_hint = False  # some device on the bus has DMA alias data (speeds up alias scans)

    @property
    def is_root(self) -> bool:
        """pci_is_root_bus(): a bus without a parent."""
        return self.parent is None

    @property
    def name(self) -> str:
        return f"{self.domain:04x}:{self.number:02x}"

    def add(self, dev: PciDev) -> None:
        self.devices.append(dev)
        self.slots.setdefault(dev.devfn >> 3, []).append(dev)


class PciDev:
    """A pci_dev as far as grouping cares: identity, header, PCIe type, ACS, SR-IOV, flags and aliases."""

    __slots__ = (
        "acs_cap",
        "acs_capabilities",
        "alias_notes",
        "ari_cap",
        "bus",
        "busnr",
        "cfg",
        "class_code",
        "dev_flags",
        "devfn",
        "device",
        "dma_alias_mask",
        "domain",
        "ext_ok",
        "ext_scanned",
        "external_facing",
        "hdr_type",
        "index",
        "is_virtfn",
        "length",
        "multifunction",
        "name",
        "pcie_cap",
        "pcie_flags",
        "physfn",
        "raw_vendor",
        "real_dma_dev",
        "secondary",
        "sriov_cap",
        "std_caps",
        "subordinate",
        "subsys_device",
        "subsys_vendor",
        "synthetic",
        "untrusted",
        "vendor",
        "vf_id",
        "vfs",
    )

    def __init__(self, func: DumpedFunction) -> None:
        self.name = func.name
        self.domain = func.domain
        self.busnr = func.bus
        self.devfn = func.devfn
        self.bus: PciBus = None  # type: ignore[assignment]  # set by PciTree
        raw = func.config
        self.length = len(raw)
        if self.length < 64:
            raise VfiolabError(f"{self.name}: only {self.length} bytes of config space; the 64-byte header "
                               f"is needed (offset {self.length:#x} missing)")
        # Bytes not given read as all-ones, as pciutils' dump back end returns for failed reads.  The input
        # bytes are shared until the first write (copy on write keeps 10,000-function inputs cheap).
        self.cfg: bytes | bytearray = raw if self.length == 4096 else raw + _FFFF[: 4096 - self.length]
        vendor, device, _cmd, status, class_rev, _cls, _lat, hdr, _bist = _HDR.unpack_from(self.cfg, 0)
        self.raw_vendor = vendor
        self.vendor = vendor
        self.device = device
        self.class_code = class_rev >> 8
        self.hdr_type = hdr & 0x7F
        self.multifunction = bool(hdr & regs.HEADER_TYPE_MFD)  # refined by PciTree (pci_scan_slot)
        if self.hdr_type > regs.HEADER_TYPE_CARDBUS:
            raise VfiolabError(f"{self.name}: unknown header type {self.hdr_type:#04x} at offset 0xe "
                               "(Linux's pci_setup_device rejects the device)")
        self.subsys_vendor = self.subsys_device = 0
        if self.hdr_type == regs.HEADER_TYPE_NORMAL:
            self.subsys_vendor, self.subsys_device = struct.unpack_from("<HH", self.cfg, 0x2C)
        self.secondary = 0
        self.subordinate: PciBus | None = None
        if self.hdr_type != regs.HEADER_TYPE_NORMAL:
            self.secondary = self.cfg[regs.SECONDARY_BUS]
        self.pcie_cap = self.pcie_flags = 0
        self.acs_cap = self.acs_capabilities = self.sriov_cap = self.ari_cap = 0
        self.ext_ok = False
        self.ext_scanned = False
        self.is_virtfn = False
        self.physfn: PciDev | None = None
        self.vf_id = -1
        self.vfs: list[PciDev] = []
        self.synthetic = False
        self.dev_flags = 0
        self.dma_alias_mask = 0
        self.alias_notes: list[str] = []
        self.real_dma_dev: PciDev = self
        self.index = -1
        self.external_facing = False
        self.untrusted = False
        self.std_caps = self._walk_std(status)
        self.pcie_cap = self.std_caps.get(CAP_ID_EXP, 0)
        if self.pcie_cap:
            self.pcie_flags = self.read(self.pcie_cap + EXP_FLAGS, 2)

    # ------------------------------------------------------------------ config access
    def read(self, off: int, size: int) -> int:
        """Little-endian config read (bytes beyond the dump read as all-ones)."""
        return int.from_bytes(self.cfg[off:off + size], "little")

    def write(self, off: int, size: int, value: int) -> None:
        """Config write into our copy (used when Linux programs ACS before grouping)."""
        if not isinstance(self.cfg, bytearray):
            self.cfg = bytearray(self.cfg)
        self.cfg[off:off + size] = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")

    # ------------------------------------------------------------------ derived properties
    @property
    def is_pcie(self) -> bool:
        """pci_is_pcie(): the function has a PCI Express capability."""
        return self.pcie_cap != 0

    @property
    def pcie_type(self) -> int:
        """pci_pcie_type(): the port type field of the PCIe flags (0 for conventional PCI, as in Linux)."""
        return (self.pcie_flags >> 4) & 0xF

    @property
    def is_bridge(self) -> bool:
        """pci_is_bridge(): a type 1 (PCI-to-PCI) or type 2 (CardBus) header."""
        return self.hdr_type != regs.HEADER_TYPE_NORMAL

    @property
    def rid(self) -> int:
        """pci_dev_id(): bus << 8 | devfn."""
        return (self.busnr << 8) | self.devfn

    @property
    def kind(self) -> str:
        """A short noun for messages: 'root port', 'downstream port', 'conventional PCI device', ..."""
        if self.is_virtfn:
            return "VF"
        if self.pcie_cap:
            return _TYPE_NAMES.get(self.pcie_type, f"PCIe type {self.pcie_type:#x} device")
        if self.hdr_type == regs.HEADER_TYPE_BRIDGE:
            return "PCI-to-PCI bridge"
        if self.hdr_type == regs.HEADER_TYPE_CARDBUS:
            return "CardBus bridge"
        return "conventional PCI device"

    @property
    def slot_name(self) -> str:
        return f"{self.domain:04x}:{self.busnr:02x}:{self.devfn >> 3:02x}"

    def __repr__(self) -> str:
        return f"PciDev({self.name} {self.vendor:04x}:{self.device:04x} {self.kind})"

    # ------------------------------------------------------------------ capability parsing
    def _need(self, off: int, size: int, what: str) -> None:
        if off + size <= self.length:
            return
        hint = ""
        if self.length == 64 or (self.length == 128 and self.hdr_type == regs.HEADER_TYPE_CARDBUS):
            hint = (f" — a {self.length}-byte dump is what an unprivileged read gives (sysfs config without "
                    "CAP_SYS_ADMIN, lspci -x); dump as root with lspci -xxxx")
        raise VfiolabError(f"{self.name}: {what} at offset {off:#x}, but the dump has only "
                           f"{self.length} bytes{hint}")

    def _walk_std(self, status: int) -> dict[int, int]:
        """First position of each standard capability (pci_find_capability's walk, TTL 48)."""
        caps: dict[int, int] = {}
        if not status & regs.STATUS_CAP_LIST:
            return caps
        start = 0x14 if self.hdr_type == regs.HEADER_TYPE_CARDBUS else regs.CAPABILITY_LIST
        cfg = self.cfg
        pos = cfg[start]
        where = start
        for _ in range(_CAP_TTL):
            if pos < 0x40:
                break
            pos &= ~3
            self._need(pos, 2, f"capability pointer at {where:#x} points to a capability")
            cap_id = cfg[pos]
            if cap_id == 0xFF:
                break
            caps.setdefault(cap_id, pos)
            where = pos + 1
            pos = cfg[pos + 1]
        return caps

    def _walk_ext(self) -> dict[int, int]:
        """First position of each extended capability (pci_find_ext_capability's walk from 0x100)."""
        caps: dict[int, int] = {}
        cfg = self.cfg
        pos, where = 0x100, 0x100
        for _ in range(_EXT_TTL):
            if pos < 0x100:
                break
            self._need(pos, 4, f"extended capability pointer at {where:#x} points to a capability")
            header = int.from_bytes(cfg[pos:pos + 4], "little")
            if header == 0:
                break
            caps.setdefault(header & 0xFFFF, pos)
            where = pos + 2
            pos = (header >> 20) & 0xFFC
        return caps

    def scan_ext(self) -> None:
        """Find ACS, SR-IOV and ARI (pci_cfg_space_size(): only PCIe functions have extended space, and a
        dword of all-ones at 0x100 means there is none)."""
        self.ext_scanned = True
        if self.pcie_cap and self.length > 0x100 and self.read(0x100, 4) != 0xFFFFFFFF:
            self.ext_ok = True
            ext = self._walk_ext()
            self.acs_cap = ext.get(EXT_CAP_ID_ACS, 0)
            self.sriov_cap = ext.get(EXT_CAP_ID_SRIOV, 0)
            self.ari_cap = ext.get(EXT_CAP_ID_ARI, 0)

    def finish_setup(self) -> None:
        """The parts that depend on the final vendor/device (a VF's come from its PF): quirks, ACS."""
        std = self.std_caps
        # quirk_intel_qat_vf_cap (drivers/pci/quirks.c): DH895xCC VFs hide their PCIe capability at 0x50.
        if (not self.pcie_cap and self.vendor == 0x8086 and self.device == 0x0443 and CAP_ID_MSI in std
                and self.cfg[std[CAP_ID_MSI] + 1] == 0 and self.read(0x50, 2) == CAP_ID_EXP):
            self.pcie_cap = 0x50
            self.pcie_flags = self.read(0x52, 2)
            self.ext_scanned = False
        if not self.ext_scanned:
            self.scan_ext()
        if self.acs_cap:
            # pci_acs_init() caches the capability register; pci_disable_broken_acs_cap() (quirks.c) drops SV
            # on IDT switches whose SV wrongly checks completions.
            self.acs_capabilities = self.read(self.acs_cap + ACS_CAP, 2)
            if (self.vendor, self.device) in BROKEN_ACS_SV:
                self.acs_capabilities &= ~0x0001

    def sriov_vf_rids(self) -> list[int]:
        """Routing IDs of the enabled VFs (pci_iov_virtfn_bus/devfn); empty unless VF Enable and NumVFs."""
        pos = self.sriov_cap
        if not pos:
            return []
        self._need(pos + SRIOV_VF_DID, 2, "SR-IOV capability")
        ctrl = self.read(pos + SRIOV_CTRL, 2)
        num = self.read(pos + SRIOV_NUM_VF, 2)
        if not ctrl & SRIOV_CTRL_VFE or num == 0:
            return []
        total = self.read(pos + SRIOV_TOTAL_VF, 2)
        offset = self.read(pos + SRIOV_VF_OFFSET, 2)
        stride = self.read(pos + SRIOV_VF_STRIDE, 2)
        if num > total:
            raise VfiolabError(f"{self.name}: SR-IOV NumVFs {num} at offset {pos + SRIOV_NUM_VF:#x} exceeds "
                               f"TotalVFs {total}")
        if offset == 0 or (num > 1 and stride == 0):
            raise VfiolabError(f"{self.name}: VF Enable is set but First VF Offset {offset} / VF Stride "
                               f"{stride} at offset {pos + SRIOV_VF_OFFSET:#x} are invalid (sriov_init)")
        base = self.rid + offset
        last = base + stride * (num - 1)
        if last > 0xFFFF:
            raise VfiolabError(f"{self.name}: VF {num - 1} routing ID {last:#x} is beyond bus 255 "
                               f"(offset {pos + SRIOV_VF_OFFSET:#x})")
        return [base + stride * i for i in range(num)]


def _synthetic_vf(pf: PciDev, rid: int) -> PciDev:
    """A VF that the dump does not list: Linux still creates its pci_dev from the PF's SR-IOV capability."""
    cfg = bytearray(b"\xff\xff\xff\xff" + bytes(252))
    cfg[regs.HEADER_TYPE] = 0
    if pf.pcie_cap:  # a minimal PCIe capability with the PF's port type (VFs are endpoints or RCiEPs)
        cfg[regs.STATUS] = regs.STATUS_CAP_LIST
        cfg[regs.CAPABILITY_LIST] = 0x40
        cfg[0x40] = CAP_ID_EXP
        cfg[0x42:0x44] = (pf.pcie_flags & 0x00FF).to_bytes(2, "little")
    func = DumpedFunction(pf.domain, rid >> 8, rid & 0xFF, bytes(cfg), "VF (not in the dump)")
    dev = PciDev(func)
    dev.synthetic = True
    return dev


class PciTree:
    """All functions of a machine with their buses, in Linux probe order (``devices``)."""

    def __init__(self) -> None:
        self.devices: list[PciDev] = []
        self.buses: dict[tuple[int, int], PciBus] = {}
        self.roots: list[PciBus] = []
        self.by_name: dict[str, PciDev] = {}
        self.by_rid: dict[tuple[int, int], PciDev] = {}
        self.warnings: list[str] = []

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dumps(cls, funcs: Iterable[DumpedFunction]) -> PciTree:
        """Build the hierarchy from every function's config bytes (any order; VFs may read 0xffff)."""
        tree = cls()
        devs: dict[tuple[int, int], PciDev] = {}
        for func in funcs:
            dev = PciDev(func)
            key = (dev.domain, dev.rid)
            if key in devs:
                raise VfiolabError(f"{dev.name}: listed twice in the input")
            devs[key] = dev
        # The PFs' SR-IOV capabilities say which functions are VFs (pci_iov_add_virtfn).
        for dev in list(devs.values()):
            if dev.raw_vendor in (0xFFFF, 0x0000) or dev.is_virtfn:
                continue
            dev.scan_ext()
            for i, rid in enumerate(dev.sriov_vf_rids()):
                vf = devs.get((dev.domain, rid))
                if vf is None:
                    vf = _synthetic_vf(dev, rid)
                    devs[(dev.domain, rid)] = vf
                    tree.warnings.append(f"{vf.name}: VF {i} of {dev.name} is not in the input; assumed "
                                         "present (VF Enable is set)")
                elif vf.physfn is not None:
                    raise VfiolabError(f"{vf.name}: claimed as a VF by both {vf.physfn.name} and {dev.name}")
                else:
                    if not vf.ext_scanned:
                        vf.scan_ext()
                    if vf is dev or vf.sriov_cap:  # VFs never have an SR-IOV capability of their own
                            raise VfiolabError(f"{vf.name}: VF {i} of {dev.name} lands on a physical function "
                                           f"(First VF Offset at {dev.sriov_cap + SRIOV_VF_OFFSET:#x})")
                vf.is_virtfn = True
                vf.physfn = dev
                vf.vf_id = i
                # pci_iov_scan_device(): a VF's IDs are the PF's vendor and the SR-IOV VF Device ID.
                vf.vendor = dev.vendor
                vf.device = dev.read(dev.sriov_cap + SRIOV_VF_DID, 2)
                vf.multifunction = False  # pci_iov_add_virtfn()
                dev.vfs.append(vf)
        for dev in devs.values():
            if dev.raw_vendor in (0xFFFF, 0x0000) and not dev.is_virtfn:
                raise VfiolabError(f"{dev.name}: vendor ID {dev.raw_vendor:04x} at offset 0x0 and not a VF of "
                                   "any PF in the input (Linux would not enumerate it)")
            dev.finish_setup()
            if dev.pcie_cap and not dev.synthetic and dev.length <= 0x100:
                tree.warnings.append(f"{dev.name}: PCI Express function dumped with {dev.length} bytes: no "
                                     "extended capabilities (ACS, SR-IOV) seen; use lspci -xxxx as root")
            elif dev.pcie_cap and dev.length < 0x1000:
                tree.warnings.append(f"{dev.name}: dump ends at offset {dev.length:#x}, inside extended "
                                     "config space (truncated?); later bytes read as ff")
        tree._link_buses(devs)
        return tree

    def _link_buses(self, devs: dict[tuple[int, int], PciDev]) -> None:
        bridges: dict[tuple[int, int], PciDev] = {}
        for dev in devs.values():
            if dev.is_bridge and not dev.is_virtfn and dev.secondary:
                key = (dev.domain, dev.secondary)
                if dev.secondary == dev.busnr:
                    raise VfiolabError(f"{dev.name}: secondary bus {dev.secondary:02x} at offset 0x19 equals "
                                       "its own bus")
                if key in bridges:
                    raise VfiolabError(f"{dev.name}: secondary bus {dev.secondary:02x} at offset 0x19 is also "
                                       f"the secondary bus of {bridges[key].name}")
                bridges[key] = dev
        visiting: set[tuple[int, int]] = set()

        def get_bus(domain: int, number: int, user: PciDev) -> PciBus:
            key = (domain, number)
            bus = self.buses.get(key)
            if bus is not None:
                return bus
            bridge = bridges.get(key)
            if bridge is None:
                for br in bridges.values():
                    sub = br.cfg[regs.SUBORDINATE_BUS]
                    if br.domain == domain and br.secondary < number <= sub:
                        raise VfiolabError(f"{user.name}: no bridge in the input has bus {number:02x} as its "
                                           f"secondary bus, yet it lies inside {br.name}'s bus range "
                                           f"{br.secondary:02x}-{sub:02x} (offsets 0x19-0x1a)")
                bus = PciBus(domain, number, None, None)
                self.roots.append(bus)
            else:
                if key in visiting:
                    raise VfiolabError(f"{bridge.name}: bridges form a loop through bus {number:02x} "
                                       "(secondary bus at offset 0x19)")
                visiting.add(key)
                parent = get_bus(domain, bridge.busnr, bridge)
                visiting.discard(key)
                bus = PciBus(domain, number, bridge, parent)
                bridge.subordinate = bus
            self.buses[key] = bus
            return bus

        boot = [d for d in devs.values() if not d.is_virtfn]
        for dev in boot:
            dev.bus = get_bus(dev.domain, dev.busnr, dev)
        for br in bridges.values():
            get_bus(br.domain, br.secondary, br)
        for dev in boot:
            dev.bus.add(dev)
        self._check_slots()
        # Probe order = device_add() order of the scan: each bus's devices in devfn order, then the buses
        # behind its bridges depth first (pci_scan_child_bus_extend; bridges configured by firmware);
        # root buses by domain and number.  bus_iommu_probe() walks the PCI bus klist in this order.
        self.roots.sort(key=lambda b: (b.domain, b.number))
        order: list[PciDev] = []

        def walk(bus: PciBus) -> None:
            bus.devices.sort(key=lambda d: d.devfn)
            order.extend(bus.devices)
            for d in bus.devices:
                if d.subordinate is not None:
                    walk(d.subordinate)

        for root in self.roots:
            walk(root)
        for bus in self.buses.values():
            for fns in bus.slots.values():
                fns.sort(key=lambda d: d.devfn)
        # VFs are created after boot (sriov_numvfs), per PF in probe order, VF 0 first.
        vfs: list[PciDev] = []
        for pf in order:
            for vf in pf.vfs:
                vfs.append(vf)
                vf.bus = self._vf_bus(pf, vf.busnr, bridges, get_bus)
                vf.bus.add(vf)
        for i, dev in enumerate(order + vfs):
            dev.index = i
            self.devices.append(dev)
            self.by_name[dev.name] = dev
            self.by_rid[(dev.domain, dev.rid)] = dev
            self._fix_port_type(dev)

    def _vf_bus(self, pf: PciDev, number: int, bridges: dict[tuple[int, int], PciDev],
                get_bus: object) -> PciBus:
        """virtfn_add_bus(): the PF's bus, an existing bus of that number, or a new virtual bus."""
        if number == pf.busnr:
            return pf.bus
        key = (pf.domain, number)
        bus = self.buses.get(key)
        if bus is None and key in bridges:
            bus = get_bus(pf.domain, number, pf)  # type: ignore[operator]
        if bus is None:
            bus = PciBus(pf.domain, number, None, pf.bus, virtual=True)
            self.buses[key] = bus
        return bus

    def _check_slots(self) -> None:
        """pci_scan_slot(): functions > 0 are found only from a function 0 (multifunction unless ARI), and
        every function > 0 is marked multifunction."""
        for bus in self.buses.values():
            present = {d.devfn: d for d in bus.devices}
            for dev in bus.devices:
                fn = dev.devfn if bus.ari else dev.devfn & 7
                if fn == 0:
                    continue
                dev.multifunction = True
                head = present.get(dev.devfn - fn)
                if head is None:
                    raise VfiolabError(f"{dev.name}: no function 0 at {dev.slot_name if not bus.ari else bus.name}"
                                       ".0; Linux does not scan the other functions without it")
                if not bus.ari and not head.cfg[regs.HEADER_TYPE] & regs.HEADER_TYPE_MFD:
                    raise VfiolabError(f"{dev.name}: {head.name} has the multifunction bit (header type bit 7, "
                                       f"offset 0xe) clear, so Linux does not scan function {fn}")

    def _fix_port_type(self, dev: PciDev) -> None:
        """set_pcie_port_type(): correct up/downstream ports that claim the impossible for their parent."""
        t = dev.pcie_type
        if not dev.pcie_cap or t not in (TYPE_DOWNSTREAM, TYPE_UPSTREAM):
            return
        parent = self.upstream_bridge(dev)
        if parent is None:
            return
        if t == TYPE_DOWNSTREAM and parent.pcie_cap and parent.pcie_type in (
                TYPE_ROOT_PORT, TYPE_DOWNSTREAM, TYPE_PCIE_BRIDGE):  # pcie_downstream_port(parent)
            dev.pcie_flags = (dev.pcie_flags & ~0xF0) | (TYPE_UPSTREAM << 4)
        elif t == TYPE_UPSTREAM and parent.pcie_type == TYPE_UPSTREAM:
            dev.pcie_flags = (dev.pcie_flags & ~0xF0) | (TYPE_DOWNSTREAM << 4)

    # ------------------------------------------------------------------ queries
    @staticmethod
    def upstream_bridge(dev: PciDev) -> PciDev | None:
        """pci_upstream_bridge(): the bridge above the (physical) function; None on a root bus."""
        if dev.physfn is not None:
            dev = dev.physfn
        return None if dev.bus.is_root else dev.bus.self

    def mark_external_facing(self, names: Iterable[str]) -> None:
        """Firmware's ExternalFacingPort property (pci_acpi_set_external_facing); devices below such a port
        become untrusted (set_pcie_untrusted)."""
        wanted = set(names)
        for name in wanted:
            self.device(name).external_facing = True
        for dev in self.devices:
            parent = self.upstream_bridge(dev)
            dev.untrusted = parent is not None and (parent.untrusted or parent.external_facing)

    def device(self, name: str) -> PciDev:
        """The device called ``name`` (dddd:bb:dd.f); a clear error if there is none."""
        dev = self.by_name.get(name)
        if dev is None:
            raise VfiolabError(f"no PCI function {name} in the input")
        return dev

    def read_bus_config(self, bus: PciBus, devfn: int, off: int, size: int) -> int:
        """pci_bus_read_config_*() on (bus, devfn): all-ones when no function answers."""
        dev = self.by_rid.get((bus.domain, (bus.number << 8) | devfn))
        if dev is None:
            return (1 << (8 * size)) - 1
        return dev.read(off, size)

    def __len__(self) -> int:
        return len(self.devices)
