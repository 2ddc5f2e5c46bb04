"""ACS predicates, the pci_dev_acs_enabled[] quirks and pci_enable_acs, checked against Linux 7.2's
drivers/pci/pci.c and drivers/pci/quirks.c worked by hand (and pci.md section 5.7's per-kind counts)."""

from __future__ import annotations

from collections import Counter

import pytest
from test_groups_builders import ACS_ON, DOWN, EP, LEG, PCI_BR, PCIE_BR, RCIEP, RP, UP, func

from vfiolab.errors import VfiolabError
from vfiolab.pci.acs import (
    ACS_CR,
    ACS_EC,
    ACS_RR,
    ACS_SV,
    ACS_TB,
    ACS_UF,
    REQ_ACS_FLAGS,
    AcsSetup,
    acs_enabled,
    acs_enabled_why,
    acs_flags_enabled,
    acs_path_enabled,
    enable_acs,
    enable_acs_dev,
    parse_acs_flags,
)
from vfiolab.pci.acs_quirks import ACS_QUIRKS, dev_specific_acs_enabled
from vfiolab.pci.config import ConfigSpace
from vfiolab.pci.dump import DumpedFunction
from vfiolab.pci.hierarchy import PciDev, PciTree


def one(*args, **kw) -> PciDev:  # type: ignore[no-untyped-def]
    """A single device on a root bus, as the tree builds it."""
    tree = PciTree.from_dumps([func(*args, **kw)])
    return tree.devices[0]


def tree_of(*funcs: DumpedFunction) -> PciTree:
    return PciTree.from_dumps(list(funcs))


# ---------------------------------------------------------------------------- pci_acs_flags_enabled
@pytest.mark.parametrize("cap, ctrl, flags, expect", [
    (0x1F, 0x1D, REQ_ACS_FLAGS, True),
    (0x0D, 0x0D, REQ_ACS_FLAGS, True),           # UF not implemented: counts as hard-wired on
    (0x1F, 0x0D, REQ_ACS_FLAGS, False),          # UF implemented but off
    (0x00, 0x00, REQ_ACS_FLAGS, True),           # nothing implemented
    (0x00, 0x00, ACS_EC, False),                 # ... except Egress Control, which is always required
    (0x3F, 0x20, ACS_EC, True),
])
def test_flags_enabled(cap: int, ctrl: int, flags: int, expect: bool) -> None:
    assert acs_flags_enabled(one("00:01.0", pcie=RP, acs=(cap, ctrl)), flags) is expect


def test_no_acs_capability_is_never_flags_enabled() -> None:
    assert not acs_flags_enabled(one("00:01.0", pcie=RP), 0)


# ---------------------------------------------------------------------------- pci_acs_enabled by type
@pytest.mark.parametrize("kw, expect, why", [
    ({}, False, "has no PCI Express capability (conventional PCI cannot isolate)"),
    ({"pcie": PCI_BR, "acs": ACS_ON, "bridge": (1, 1)}, False, "cannot isolate: ACS never applies to PCIe-to-PCI bridges"),
    ({"pcie": PCIE_BR, "bridge": (1, 1)}, False, "cannot isolate: PCI/PCI-X-to-PCIe bridges count as conventional"),
    ({"pcie": 0xA}, False, "cannot isolate: ACS never applies to root complex event"),
    ({"pcie": RP, "bridge": (1, 1)}, False, "has no ACS capability"),
    ({"pcie": DOWN, "acs": (0x1F, 0x05), "bridge": (1, 1)}, False, "has ACS but CR UF not enabled (control 0x0005"),
    ({"pcie": RP, "acs": ACS_ON, "bridge": (1, 1)}, True, "has ACS with SV RR CR UF enabled"),
    ({"pcie": EP}, True, "is a single-function device"),
    ({"pcie": UP, "bridge": (1, 1)}, True, "is a single-function device"),
    ({"pcie": EP, "mf": True}, False, "is a multifunction device and has no ACS capability"),
    ({"pcie": LEG, "mf": True, "acs": ACS_ON}, True, "is a multifunction device and has ACS"),
    ({"pcie": RCIEP, "mf": True}, False, "is a multifunction device and has no ACS capability"),
    ({"pcie": 0x3}, True, "has PCIe type 0x3, to which ACS does not apply"),
])
def test_acs_enabled_by_port_type(kw, expect, why) -> None:  # type: ignore[no-untyped-def]
    dev = one("00:01.0", 0x1B36, 0x0001, **kw)
    ok, text = acs_enabled_why(dev)
    assert ok is expect and acs_enabled(dev) is expect
    assert text.startswith(why), text


def test_idt_switch_loses_broken_source_validation() -> None:
    # pci_disable_broken_acs_cap(): SV is dropped from the capability, so an SV-less control is enough.
    assert acs_enabled(one("00:01.0", 0x111D, 0x80B5, pcie=RP, acs=(0x1F, 0x1C), bridge=(1, 1)))
    assert not acs_enabled(one("00:01.0", 0x111D, 0x80B6, pcie=RP, acs=(0x1F, 0x1C), bridge=(1, 1)))


def test_path_enabled_stops_at_end() -> None:
    tree = tree_of(func("00:01.0", pcie=RP, bridge=(1, 3)), func("01:00.0", pcie=UP, bridge=(2, 3)),
                   func("02:00.0", pcie=DOWN, acs=ACS_ON, bridge=(3, 3)), func("03:00.0", pcie=EP))
    dn, up = tree.device("0000:02:00.0"), tree.device("0000:01:00.0")
    assert not acs_path_enabled(dn)                       # the root port has no ACS
    assert acs_path_enabled(dn, end=up)                   # but the part from dn to up has
    assert acs_path_enabled(tree.device("0000:03:00.0"), end=tree.device("0000:03:00.0"))


# ---------------------------------------------------------------------------- the quirk table
def test_quirk_table_size_and_kinds() -> None:
    assert len(ACS_QUIRKS) == 132
    kinds = Counter(q.kind for q in ACS_QUIRKS)
    # Per-kind counts unchanged since 6.12 (pci.md section 5.7).
    assert (kinds["mf_endpoint"], kinds["nxp_rp"], kinds["loongson"], kinds["xgene"], kinds["amd_sb"],
            kinds["qcom_rp"]) == (67, 24, 10, 9, 8, 6)
    assert ACS_QUIRKS[0].vendor == 0x1002 and ACS_QUIRKS[0].device == 0x4385
    assert ACS_QUIRKS[-1].function_name == "pci_quirk_wangxun_nic_acs" and ACS_QUIRKS[-1].device is None


def quirk(dev: PciDev, flags: int = REQ_ACS_FLAGS, ivrs: bool = False) -> int:
    return dev_specific_acs_enabled(dev, flags, ivrs)[0]


def test_mf_endpoint_quirk_covers_everything_but_ec() -> None:
    dev = one("00:01.0", 0x8086, 0x10C9, pcie=EP, mf=True)
    assert quirk(dev) == 1 and quirk(dev, ACS_TB | 0x40) == 1 and quirk(dev, ACS_EC) == 0


@pytest.mark.parametrize("vendor, device, kw, flags, expect", [
    (0x8086, 0x1234, {"pcie": RCIEP}, REQ_ACS_FLAGS, 1),           # pci_quirk_rciep_acs
    (0x8086, 0x1234, {"pcie": EP, "mf": True}, REQ_ACS_FLAGS, -1),  # Intel, but not an RCiEP
    (0x177D, 0xA100, {"pcie": RP, "bridge": (1, 1)}, REQ_ACS_FLAGS, 1),   # ThunderX1 root port
    (0x177D, 0xAF84, {"pcie": RP, "bridge": (1, 1)}, REQ_ACS_FLAGS, 1),   # ThunderX2
    (0x177D, 0xA100, {"pcie": EP}, REQ_ACS_FLAGS, -1),
    (0x1D17, 0x0710, {"pcie": RP, "bridge": (1, 1)}, REQ_ACS_FLAGS, 1),   # Zhaoxin port in the list
    (0x1D17, 0x0722, {"pcie": DOWN, "acs": ACS_ON, "bridge": (1, 1)}, REQ_ACS_FLAGS, 0),  # not: false
    (0x1D17, 0x0722, {"pcie": EP}, REQ_ACS_FLAGS, -1),
    (0x8088, 0x1001, {"pcie": EP, "mf": True}, REQ_ACS_FLAGS, 1),  # Wangxun SP
    (0x8088, 0x9999, {"pcie": EP}, REQ_ACS_FLAGS, 0),               # other Wangxun: false
    (0x1C36, 0x0031, {"pcie": RP, "bridge": (1, 1)}, REQ_ACS_FLAGS, 1),   # Annapurna Labs
    (0x1C36, 0x0031, {"pcie": RP, "bridge": (1, 1)}, REQ_ACS_FLAGS | ACS_TB, 0),
    (0x1C36, 0x0031, {"pcie": EP}, REQ_ACS_FLAGS, -1),
    (0x1DEF, 0xE005, {"pcie": RP, "bridge": (1, 1)}, REQ_ACS_FLAGS, 1),   # Ampere (xgene)
    (0x1DEF, 0xE005, {"pcie": RP, "bridge": (1, 1)}, ACS_TB, 0),
    (0x1957, 0x8D81, {"pcie": RP, "bridge": (1, 1)}, REQ_ACS_FLAGS, 1),   # NXP
    (0x14E4, 0xD714, {"pcie": RP, "bridge": (1, 1)}, REQ_ACS_FLAGS, 1),   # Broadcom iProc
    (0x0014, 0x7A09, {"pcie": RP, "bridge": (1, 1)}, REQ_ACS_FLAGS, 1),   # Loongson
    (0x17CB, 0x0401, {"pcie": RP, "bridge": (1, 1)}, REQ_ACS_FLAGS, 1),   # Qualcomm
    (0x1B36, 0x000C, {"pcie": RP, "bridge": (1, 1)}, REQ_ACS_FLAGS, -1),  # no entry
])
def test_quirk_answers(vendor, device, kw, flags, expect) -> None:  # type: ignore[no-untyped-def]
    assert quirk(one("00:01.0", vendor, device, **kw), flags) == expect


def test_amd_sb_quirk_needs_ivrs_multifunction_and_root_bus() -> None:
    tree = tree_of(func("00:14.0", 0x1002, 0x4385, mf=True), func("00:15.0", 0x1002, 0x439D),
                   func("00:01.0", pcie=RP, bridge=(1, 1)), func("01:00.0", 0x1002, 0x4385, mf=True))
    sm, lone, below = (tree.device(n) for n in ("0000:00:14.0", "0000:00:15.0", "0000:01:00.0"))
    assert quirk(sm, ivrs=True) == 1 and quirk(sm, ivrs=False) == -1
    assert quirk(lone, ivrs=True) == -1       # not multifunction
    assert quirk(below, ivrs=True) == -1      # not on the root bus
    assert quirk(sm, REQ_ACS_FLAGS | ACS_EC, ivrs=True) == 0


def test_intel_spt_root_port_reads_the_dword_control() -> None:
    # Sunrise Point: capability dword at +4, control dword at +8 (the word at +6 is the capability's top).
    spt = one("00:1c.0", 0x8086, 0xA110, pcie=RP, bridge=(1, 1), acs=(0x1F, 0),
              pokes={0x108: (0x1D).to_bytes(4, "little")})
    assert quirk(spt) == 1 and acs_enabled(spt)
    assert not acs_flags_enabled(spt, REQ_ACS_FLAGS)     # what the standard register would say
    std = one("00:1c.0", 0x8086, 0xA100, pcie=RP, bridge=(1, 1), acs=(0x1F, 0),
              pokes={0x108: (0x1D).to_bytes(4, "little")})
    assert not acs_enabled(std)


def test_intel_pch_root_port_isolated_only_after_the_enable_quirk() -> None:
    def pch(rcba: int):  # type: ignore[no-untyped-def]
        return tree_of(func("00:1c.0", 0x8086, 0x1C10, pcie=RP, bridge=(1, 1)),
                       func("00:1f.0", 0x8086, 0x1C44, cls=0x0601, pokes={0xF0: rcba.to_bytes(4, "little")}))
    tree = pch(0xFED1C001)
    rp = tree.device("0000:00:1c.0")
    assert not acs_enabled(rp)
    assert enable_acs_dev(rp, tree, AcsSetup())
    assert acs_enabled(rp)
    assert rp.read(0xD8, 4) & (1 << 26)                   # MPC.IRBNCE, the SV equivalent, was set
    tree = pch(0xFED1C000)                                # RCBA disabled: the quirk fails
    rp = tree.device("0000:00:1c.0")
    assert not enable_acs_dev(rp, tree, AcsSetup()) and not acs_enabled(rp)


# ---------------------------------------------------------------------------- pci_enable_acs
def config_space(f: DumpedFunction, rw: dict[int, tuple[int, int]]) -> ConfigSpace:
    cs = ConfigSpace(4096)
    cs.data[:len(f.config)] = f.config
    for off, (size, mask) in rw.items():
        cs.set_attrs(off, size, rw=mask)
    return cs


ACS_CTRL_RW = {0x106: (2, 0x7F)}


@pytest.mark.parametrize("kw, before, after", [
    ({}, 0x00, ACS_SV | ACS_RR | ACS_CR | ACS_UF),
    ({"ats_disabled": True}, 0x00, 0x1F),                        # pci=noats adds Translation Blocking
    ({"external_facing": True}, 0x00, 0x1F),
    ({"request_acs": False}, 0x0C, 0x0C),                        # no IOMMU: firmware value stays
    ({"disable_acs_redir": True}, 0x2C, 0x00),                   # from firmware value, without RR CR EC
    ({"config_acs": "1x0x1"}, 0x0C, 0x19),                       # SV set, RR clear, UF set, rest firmware
])
def test_enable_acs_on_a_config_space(kw, before, after) -> None:  # type: ignore[no-untyped-def]
    cs = config_space(func("00:01.0", pcie=RP, acs=(0x3F, before), bridge=(1, 1)), ACS_CTRL_RW)
    enable_acs(cs.read, cs.write, **kw)
    assert cs.read(0x106, 2) == after


def test_enable_acs_only_sets_implemented_controls() -> None:
    cs = config_space(func("00:01.0", pcie=DOWN, acs=(ACS_SV | ACS_RR, 0), bridge=(1, 1)), ACS_CTRL_RW)
    enable_acs(cs.read, cs.write)
    assert cs.read(0x106, 2) == ACS_SV | ACS_RR


def test_enable_acs_without_acs_capability_writes_nothing() -> None:
    cs = config_space(func("00:01.0", pcie=RP, bridge=(1, 1)), {})
    writes: list[tuple[int, int, int]] = []
    enable_acs(cs.read, lambda o, s, v: writes.append((o, s, v)))
    assert writes == []


def test_enable_acs_intel_spt_uses_dword_control() -> None:
    f = func("00:1c.0", 0x8086, 0xA110, pcie=RP, bridge=(1, 1), acs=(0x1F, 0))
    cs = config_space(f, {0x108: (4, 0x7F)})
    enable_acs(cs.read, cs.write)
    assert cs.read(0x108, 4) == 0x1D and cs.read(0x106, 2) == 0


def test_enable_acs_intel_pch_sets_mpc_when_lpc_rcba_enabled() -> None:
    f = func("00:1c.0", 0x8086, 0x1C10, pcie=RP, bridge=(1, 1))
    cs = config_space(f, {0xD8: (4, 0xFFFFFFFF)})
    enable_acs(cs.read, cs.write, read_lpc=lambda off, size: 0xFED1C000)   # RCBA not enabled
    assert cs.read(0xD8, 4) == 0
    enable_acs(cs.read, cs.write, read_lpc=lambda off, size: 0xFED1C001)
    assert cs.read(0xD8, 4) == 1 << 26


def test_parse_acs_flags() -> None:
    assert parse_acs_flags("xx1x0") == (0x05, 0x04)
    assert parse_acs_flags("1111111") == (0x7F, 0x7F)
    with pytest.raises(VfiolabError, match="invalid character '2'"):
        parse_acs_flags("1x2")
    with pytest.raises(VfiolabError, match="more than the 7 ACS control bits"):
        parse_acs_flags("10000000")


def test_enable_acs_on_a_root_port_built_by_the_acs_builder() -> None:
    from vfiolab.pci.caps.acs import AcsCap
    from vfiolab.pci.caps.base import CapabilityList
    from vfiolab.pci.caps.express import ExpressCap
    from vfiolab.pci.caps.express_regs import TYPE_ROOT_PORT

    cs = ConfigSpace(4096)
    cs.set(0, 4, 0x000C1B36)
    caps = CapabilityList(cs)
    caps.add(ExpressCap(TYPE_ROOT_PORT))
    acs = caps.add(AcsCap(cap=ACS_SV | ACS_TB | ACS_RR | ACS_CR | ACS_UF, ctrl=0))
    enable_acs(cs.read, cs.write)
    assert cs.read(acs.offset + AcsCap.CTRL, 2) == ACS_SV | ACS_RR | ACS_CR | ACS_UF   # QEMU/Linux: TB stays off
