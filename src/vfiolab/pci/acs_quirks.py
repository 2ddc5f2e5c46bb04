"""Linux 7.2's device-specific ACS answers: the ``pci_dev_acs_enabled[]`` table as data, one function per kind.

A quirk answers "does this device provide these ACS controls?" for hardware that isolates without (or
despite) a standard ACS capability: < 0 no opinion, 0 no, > 0 yes (drivers/pci/quirks.c
pci_dev_specific_acs_enabled).  The table below holds the 132 entries of Linux 7.2 in kernel order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from vfiolab.pci.caps import acs as acs_cap
from vfiolab.pci.caps.express_regs import TYPE_DOWNSTREAM, TYPE_RC_END, TYPE_ROOT_PORT
from vfiolab.pci.hierarchy import FLAG_ACS_ENABLED_QUIRK, PciDev

# ACS capability/control bits (include/uapi/linux/pci_regs.h PCI_ACS_*), as the ACS builder defines them.
ACS_SV: Final = acs_cap.SV
ACS_TB: Final = acs_cap.TB
ACS_RR: Final = acs_cap.RR
ACS_CR: Final = acs_cap.CR
ACS_UF: Final = acs_cap.UF
ACS_EC: Final = acs_cap.EC
ACS_DT: Final = acs_cap.DT
_ISOLATING: Final = ACS_SV | ACS_RR | ACS_CR | ACS_UF

NO_OPINION: Final = -1  # the kernel's -ENOTTY / -ENODEV


# pci_quirk_intel_pch_acs_ids[]: PCH root ports with ACS-like isolation but no ACS capability.
INTEL_PCH_ACS_IDS: Final = frozenset(
    list(range(0x3B42, 0x3B52))                      # Ibexpeak
    + list(range(0x1C10, 0x1C20))                    # Cougarpoint
    + list(range(0x1E10, 0x1E20))                    # Pantherpoint
    + list(range(0x8C10, 0x8C20))                    # Lynxpoint-H
    + list(range(0x9C10, 0x9C1C))                    # Lynxpoint-LP
    + list(range(0x9C90, 0x9C9C))                    # Wildcat
    + list(range(0x1D10, 0x1D1F, 2))                 # Patsburg (X79): even IDs 1d10..1d1e
    + list(range(0x8D10, 0x8D1F))                    # Wellsburg (X99): 8d10..8d1e
    + list(range(0x8C90, 0x8C9F, 2)))                # Lynx Point 9 series: even IDs 8c90..8c9e


def _in(device: int, ranges: tuple[tuple[int, int], ...]) -> bool:
    return any(lo <= device <= hi for lo, hi in ranges)


# pci_quirk_intel_spt_pch_acs_match(): Sunrise Point, Union Point, 7th/8th gen mobile root ports.
INTEL_SPT_RANGES: Final = ((0xA110, 0xA11F), (0xA167, 0xA16A), (0xA290, 0xA29F), (0xA2E7, 0xA2EE),
                           (0x9D10, 0x9D1B))
_CAVIUM_RANGES: Final = ((0xA000, 0xA7FF), (0xAF84, 0xAF84), (0xB884, 0xB884))
_ZHAOXIN_RANGES: Final = ((0x0710, 0x071E), (0x0721, 0x0721), (0x0723, 0x0752))
_WANGXUN_RANGES: Final = ((0x0100, 0x010F), (0x1001, 0x1001), (0x2001, 0x2001), (0x5010, 0x5010),
                          (0x5025, 0x5025), (0x5040, 0x5040), (0x5110, 0x5110), (0x5125, 0x5125),
                          (0x5140, 0x5140))


def ctrl_enabled(req: int, ena: int) -> int:
    """pci_acs_ctrl_enabled(): 1 if every requested control is among those provided, else 0."""
    return 1 if (req & ena) == req else 0


def intel_pch_id(device: int) -> bool:
    """An Intel PCH root port device ID of pci_quirk_intel_pch_acs_ids[]."""
    return device in INTEL_PCH_ACS_IDS


def intel_spt_id(device: int) -> bool:
    """A Sunrise Point / Union Point root port device ID (pci_quirk_intel_spt_pch_acs_match)."""
    return _in(device, INTEL_SPT_RANGES)


def is_intel_pch_root_port(dev: PciDev) -> bool:
    """pci_quirk_intel_pch_acs_match() (the vendor is matched by the table)."""
    return dev.is_pcie and dev.pcie_type == TYPE_ROOT_PORT and intel_pch_id(dev.device)


def is_intel_spt_root_port(dev: PciDev) -> bool:
    """pci_quirk_intel_spt_pch_acs_match() (the vendor is matched by the table)."""
    return dev.is_pcie and dev.pcie_type == TYPE_ROOT_PORT and intel_spt_id(dev.device)


# ---------------------------------------------------------------------------- one function per quirk kind
def _amd_sb(dev: PciDev, flags: int, ivrs: bool) -> int:
    # Southbridge multifunction devices on the root bus, only when an AMD IOMMU (ACPI IVRS table) exists.
    if not dev.multifunction or not dev.bus.is_root or not ivrs:
        return NO_OPINION
    return ctrl_enabled(flags & (ACS_RR | ACS_CR | ACS_EC | ACS_DT), ACS_RR | ACS_CR)


def _cavium(dev: PciDev, flags: int, ivrs: bool) -> int:
    if not (dev.is_pcie and dev.pcie_type == TYPE_ROOT_PORT and _in(dev.device, _CAVIUM_RANGES)):
        return NO_OPINION
    return ctrl_enabled(flags, _ISOLATING)


def _isolating(dev: PciDev, flags: int, ivrs: bool) -> int:
    # xgene, qcom_rp, nxp_rp, brcm, loongson: root ports that never forward peer-to-peer.
    return ctrl_enabled(flags, _ISOLATING)


def _zhaoxin_ports(dev: PciDev, flags: int, ivrs: bool) -> int:
    if not dev.is_pcie or dev.pcie_type not in (TYPE_ROOT_PORT, TYPE_DOWNSTREAM):
        return NO_OPINION
    if _in(dev.device, _ZHAOXIN_RANGES):
        return ctrl_enabled(flags, _ISOLATING)
    return 0  # other Zhaoxin ports: "false", not "no opinion"


def _intel_pch(dev: PciDev, flags: int, ivrs: bool) -> int:
    if not is_intel_pch_root_port(dev):
        return NO_OPINION
    if dev.dev_flags & FLAG_ACS_ENABLED_QUIRK:  # set when pci_enable_acs() ran the PCH enable quirk
        return ctrl_enabled(flags, _ISOLATING)
    return ctrl_enabled(flags, 0)


def _al(dev: PciDev, flags: int, ivrs: bool) -> int:
    if dev.pcie_type != TYPE_ROOT_PORT:
        return NO_OPINION
    return 0 if flags & ~_ISOLATING else 1


def _intel_spt_pch(dev: PciDev, flags: int, ivrs: bool) -> int:
    # The ACS control register of these root ports sits at +8 as a dword, not at +6.
    if not is_intel_spt_root_port(dev) or not dev.acs_cap:
        return NO_OPINION
    cap = dev.read(dev.acs_cap + 4, 4)
    ctrl = dev.read(dev.acs_cap + 8, 4)
    return ctrl_enabled(flags & (cap | ACS_EC), ctrl)


def _mf_endpoint(dev: PciDev, flags: int, ivrs: bool) -> int:
    # Vendor-verified: no peer-to-peer between functions, as if every control were implemented and on.
    return ctrl_enabled(flags, ACS_SV | ACS_TB | ACS_RR | ACS_CR | ACS_UF | ACS_DT)


def _rciep(dev: PciDev, flags: int, ivrs: bool) -> int:
    # Intel RCiEPs may do peer-to-peer only on translated addresses (VT-d spec 3.16).
    if dev.pcie_type != TYPE_RC_END:
        return NO_OPINION
    return ctrl_enabled(flags, _ISOLATING)


def _wangxun_nic(dev: PciDev, flags: int, ivrs: bool) -> int:
    if _in(dev.device, _WANGXUN_RANGES):
        return ctrl_enabled(flags, _ISOLATING)
    return 0


QuirkFn = Callable[[PciDev, int, bool], int]
"""quirk(dev, acs_flags, ivrs_present) -> < 0 no opinion, 0 not provided, > 0 provided."""

KINDS: Final[dict[str, QuirkFn]] = {
    "amd_sb": _amd_sb, "cavium": _cavium, "xgene": _isolating, "qcom_rp": _isolating,
    "nxp_rp": _isolating, "brcm": _isolating, "loongson": _isolating, "zhaoxin_pcie_ports": _zhaoxin_ports,
    "intel_pch": _intel_pch, "al": _al, "intel_spt_pch": _intel_spt_pch, "mf_endpoint": _mf_endpoint,
    "rciep": _rciep, "wangxun_nic": _wangxun_nic,
}


@dataclass(frozen=True)
class AcsQuirk:
    """One pci_dev_acs_enabled[] entry; ``device`` None is PCI_ANY_ID."""

    vendor: int
    device: int | None
    kind: str

    @property
    def function_name(self) -> str:
        return f"pci_quirk_{self.kind}_acs"


# (vendor, kind, devices) runs in kernel table order; () means PCI_ANY_ID.
_RUNS: Final[tuple[tuple[int, str, tuple[int, ...]], ...]] = (
    (0x1002, "amd_sb", (0x4385, 0x439C, 0x4383, 0x439D, 0x4384, 0x4399)),            # ATI
    (0x1022, "amd_sb", (0x780F, 0x7809)),                                            # AMD
    (0x1924, "mf_endpoint", (0x0903, 0x0923, 0x0A03)),                               # Solarflare
    (0x8086, "mf_endpoint", (                                                        # Intel NICs
        0x10C6, 0x10DB, 0x10DD, 0x10E1, 0x10F1, 0x10F7, 0x10F8, 0x10F9, 0x10FA, 0x10FB, 0x10FC, 0x1507,
        0x1514, 0x151C, 0x1529, 0x152A, 0x154D, 0x154F, 0x1551, 0x1558,
        0x1509, 0x150E, 0x150F, 0x1510, 0x1511, 0x1516, 0x1527,                      # 82580
        0x10C9, 0x10E6, 0x10E7, 0x10E8, 0x150A, 0x150D, 0x1518, 0x1526,              # 82576
        0x10A7, 0x10A9, 0x10D6,                                                      # 82575
        0x1521, 0x1522, 0x1523, 0x1524,                                              # I350
        0x105E, 0x105F, 0x1060, 0x10D9,                                              # 82571
        0x15B7, 0x15B8)),                                                            # I219
    (0x8086, "rciep", ()),
    (0x17CB, "qcom_rp", (0x0400, 0x0401, 0x0115, 0x0111, 0x0120)),                   # QCOM
    (0x1DBF, "qcom_rp", (0x0401,)),                                                  # HXT
    (0x8086, "intel_pch", ()),
    (0x8086, "intel_spt_pch", ()),
    (0x19A2, "mf_endpoint", (0x0710,)),                                              # Emulex BE3-R
    (0x10DF, "mf_endpoint", (0x0720,)),                                              # Emulex Skyhawk-R
    (0x177D, "cavium", ()),                                                          # Cavium
    (0x177D, "mf_endpoint", (0xA026, 0xA059, 0xA060)),
    (0x10E8, "xgene", (0xE004,)),                                                    # AMCC (APM X-Gene)
    (0x1DEF, "xgene", (0xE005, 0xE006, 0xE007, 0xE008, 0xE009, 0xE00A, 0xE00B, 0xE00C)),  # Ampere
    (0x14E4, "mf_endpoint", (0x16D7, 0x1750, 0x1751, 0x1752, 0x1760, 0x1761, 0x1762, 0x1763)),  # Broadcom
    (0x14E4, "brcm", (0xD714,)),
    (0x0014, "loongson", (0x3C09, 0x3C19, 0x3C29, 0x7A09, 0x7A19, 0x7A29, 0x7A39, 0x7A49, 0x7A59,
                          0x7A69)),
    (0x1C36, "al", (0x0031,)),                                                       # Annapurna Labs
    (0x1D17, "mf_endpoint", (0x3038, 0x3104, 0x9083)),                               # Zhaoxin
    (0x1957, "nxp_rp", (0x8D81, 0x8DA1, 0x8D83, 0x8D80, 0x8DA0, 0x8D82, 0x8D90, 0x8DB0, 0x8D92, 0x8D91,
                        0x8DB1, 0x8D93, 0x8D89, 0x8DA9, 0x8D8B, 0x8D88, 0x8DA8, 0x8D8A, 0x8D98, 0x8DB8,
                        0x8D9A, 0x8D99, 0x8DB9, 0x8D9B)),                            # NXP LX2xx0/LX2xx2
    (0x1D17, "zhaoxin_pcie_ports", ()),
    (0x8088, "wangxun_nic", ()),                                                     # Wangxun
)

ACS_QUIRKS: Final[tuple[AcsQuirk, ...]] = tuple(
    AcsQuirk(vendor, dev, kind) for vendor, kind, devs in _RUNS for dev in (devs or (None,)))

# Lookup by vendor (no entry uses PCI_ANY_ID as vendor), keeping the kernel order within a vendor.
_BY_VENDOR: Final[dict[int, tuple[AcsQuirk, ...]]] = {
    v: tuple(q for q in ACS_QUIRKS if q.vendor == v) for v in {q.vendor for q in ACS_QUIRKS}}


def dev_specific_acs_enabled(dev: PciDev, flags: int, ivrs: bool = False) -> tuple[int, AcsQuirk | None]:
    """pci_dev_specific_acs_enabled(): the first matching entry with an opinion, and that entry."""
    for q in _BY_VENDOR.get(dev.vendor, ()):
        if q.device is None or q.device == dev.device:
            ret = KINDS[q.kind](dev, flags, ivrs)
            if ret >= 0:
                return ret, q
    return NO_OPINION, None
