"""IOMMU groups as Linux 7.2 forms them (drivers/iommu/iommu.c pci_device_group), from hand-made config bytes.

Expected groups come from pci.md section 6 (observed on a real Linux guest) and from working the kernel's
algorithm by hand for each small topology.
"""

from __future__ import annotations

import json
import random

import pytest
from click.testing import CliRunner
from test_groups_builders import (
    ACS_OFF,
    ACS_ON,
    DOWN,
    EP,
    PCI_BR,
    RCIEP,
    REAL_PEERS_GROUPS,
    RP,
    UP,
    dump_text,
    func,
    qemu_real_peers,
    vf,
)

from vfiolab.cli.main import cli, main
from vfiolab.errors import VfiolabError
from vfiolab.pci.acs import AcsSetup
from vfiolab.pci.aliases import for_each_dma_alias
from vfiolab.pci.groups import IommuSetup, compute_groups, groups_from_dump_text
from vfiolab.pci.hierarchy import PciTree


def groups_of(funcs, setup=None):  # type: ignore[no-untyped-def]
    return [g.devices for g in compute_groups(funcs, setup).groups]


def reason(result, name):  # type: ignore[no-untyped-def]
    full = f"0000:{name}"
    g = result.group_of(full)
    return g.reasons[g.devices.index(full)]


# ---------------------------------------------------------------------------- pci.md section 6
def test_verified_qemu_topology_groups_and_ids() -> None:
    result = compute_groups(qemu_real_peers())
    assert [g.id for g in result.groups] == list(range(13))
    assert [g.devices for g in result.groups] == REAL_PEERS_GROUPS
    assert result.to_json() == {"groups": [{"id": i, "devices": d} for i, d in enumerate(REAL_PEERS_GROUPS)]}
    assert result.warnings == []


def test_verified_topology_with_firmware_acs_gets_acs_enabled_first() -> None:
    # Firmware leaves ACS control at 0; Linux 7.2 enables SV RR CR UF in pci_dma_configure() before grouping.
    result = compute_groups(qemu_real_peers(ACS_OFF))
    assert [g.devices for g in result.groups] == REAL_PEERS_GROUPS
    rp = result.tree.device("0000:00:02.0")
    assert rp.read(rp.acs_cap + 6, 2) == 0x1D          # SV RR CR UF, not TB
    # Without an IOMMU asking for ACS the root ports isolate nothing: everything behind 00:02.x shares.
    merged = groups_of(qemu_real_peers(ACS_OFF), IommuSetup(acs=AcsSetup(request_acs=False)))
    assert merged[1] == ["0000:00:02.0", "0000:00:02.1", "0000:00:02.2", "0000:01:00.0", "0000:02:00.0",
                         "0000:02:01.0", "0000:03:00.0", "0000:04:00.0", "0000:04:00.1", "0000:05:00.0",
                         "0000:06:01.0", "0000:06:02.0", "0000:07:00.0", "0000:07:00.1", "0000:07:00.2"]


def test_verified_topology_probe_order_matches_dmesg() -> None:
    tree = PciTree.from_dumps(qemu_real_peers())
    assert [d.name[5:] for d in tree.devices] == [
        "00:00.0", "00:02.0", "00:02.1", "00:02.2", "00:05.0", "00:05.1", "00:1f.0", "00:1f.2", "00:1f.3",
        "01:00.0", "02:00.0", "02:01.0", "03:00.0", "04:00.0", "04:00.1", "05:00.0", "06:01.0", "06:02.0",
        "07:00.0", "07:00.1", "07:00.2"]


def test_numbering_does_not_depend_on_input_order() -> None:
    funcs = qemu_real_peers()
    for seed in range(5):
        random.Random(seed).shuffle(funcs)
        assert groups_of(funcs) == REAL_PEERS_GROUPS


def test_verified_topology_reasons() -> None:
    result = compute_groups(qemu_real_peers())
    assert reason(result, "03:00.0") == ("0000:03:00.0 joined 0000:02:00.0's group: downstream port "
                                         "0000:02:00.0 has no ACS capability")
    assert reason(result, "06:01.0") == ("0000:06:01.0 joined 0000:05:00.0's group: aliased by PCIe-to-PCI "
                                         "bridge 0000:05:00.0 (requester ID 06:00.0)")
    assert reason(result, "00:05.1").startswith("0000:00:05.1 joined 0000:00:05.0's group: functions of a "
                                                "multifunction device without ACS")
    assert reason(result, "07:00.1").startswith("0000:07:00.1 own group: ACS enabled on the path to the root "
                                                "bus (root port 0000:00:02.2 has ACS with SV RR CR UF enabled")
    assert reason(result, "00:1f.0").startswith("0000:00:1f.0 own group: on root bus 0000:00")
    lines = result.explain()
    assert lines[0] == "group 0: 0000:00:00.0"
    assert "group 9: 0000:05:00.0 0000:06:01.0 0000:06:02.0" in lines


# ---------------------------------------------------------------------------- root ports and switches
def test_root_ports_without_acs() -> None:
    funcs = [
        func("00:01.0", pcie=RP, bridge=(1, 1)),                   # single-function, no ACS
        func("00:02.0", pcie=RP, bridge=(2, 2), mf=True),          # multifunction root ports, no ACS
        func("00:02.1", pcie=RP, bridge=(3, 3)),
        func("01:00.0", pcie=EP),
        func("02:00.0", pcie=EP),
        func("03:00.0", pcie=EP),
    ]
    # A single-function root port on the root bus still gets its own group; what is below joins it.  The
    # two functions of the ACS-less multifunction root port share one group with everything below.
    assert groups_of(funcs) == [["0000:00:01.0", "0000:01:00.0"],
                                ["0000:00:02.0", "0000:00:02.1", "0000:02:00.0", "0000:03:00.0"]]


def test_switch_downstream_ports_with_and_without_acs() -> None:
    def topo(dn_acs):  # type: ignore[no-untyped-def]
        return [func("00:01.0", pcie=RP, acs=ACS_ON, bridge=(1, 4)),
                func("01:00.0", pcie=UP, bridge=(2, 4)),
                func("02:00.0", pcie=DOWN, acs=dn_acs, bridge=(3, 3)),
                func("02:01.0", pcie=DOWN, acs=dn_acs, bridge=(4, 4)),
                func("03:00.0", pcie=EP), func("04:00.0", pcie=EP)]
    assert groups_of(topo(None)) == [["0000:00:01.0"], ["0000:01:00.0"], ["0000:02:00.0", "0000:03:00.0"],
                                     ["0000:02:01.0", "0000:04:00.0"]]
    assert groups_of(topo(ACS_OFF)) == [[n] for n in ("0000:00:01.0", "0000:01:00.0", "0000:02:00.0",
                                                      "0000:02:01.0", "0000:03:00.0", "0000:04:00.0")]


def test_acs_less_root_port_pulls_whole_switch_into_its_group() -> None:
    funcs = [func("00:01.0", pcie=RP, bridge=(1, 3)),
             func("01:00.0", pcie=UP, bridge=(2, 3)),
             func("02:00.0", pcie=DOWN, acs=ACS_ON, bridge=(3, 3)),
             func("03:00.0", pcie=EP)]
    result = compute_groups(funcs)
    assert [g.devices for g in result.groups] == [["0000:00:01.0", "0000:01:00.0", "0000:02:00.0",
                                                   "0000:03:00.0"]]
    assert reason(result, "03:00.0") == ("0000:03:00.0 joined 0000:02:00.0's group: root port 0000:00:01.0 "
                                         "has no ACS capability")


def test_mislabelled_switch_port_type_is_corrected() -> None:
    # set_pcie_port_type(): a "downstream port" below a downstream port is really an upstream port, so it
    # needs no ACS capability of its own.
    funcs = [func("00:01.0", pcie=RP, acs=ACS_ON, bridge=(1, 4)),
             func("01:00.0", pcie=DOWN, bridge=(2, 4)),      # claims downstream, below a root port
             func("02:00.0", pcie=DOWN, acs=ACS_ON, bridge=(3, 3)),
             func("03:00.0", pcie=EP)]
    tree = PciTree.from_dumps(funcs)
    assert tree.device("0000:01:00.0").kind == "upstream port"
    assert groups_of(funcs) == [["0000:00:01.0"], ["0000:01:00.0"], ["0000:02:00.0"], ["0000:03:00.0"]]


# ---------------------------------------------------------------------------- multifunction endpoints
@pytest.mark.parametrize("acs, setup, separate", [
    (None, None, False),                                               # no ACS capability
    (ACS_ON, None, True),                                              # ACS on
    (ACS_OFF, None, True),                                             # firmware off, Linux enables it
    (ACS_OFF, IommuSetup(acs=AcsSetup(request_acs=False)), False),     # nobody asked for ACS
    ((0x00, 0x00), None, True),   # capability lists no controls: all count as hard-wired on
    ((0x1F, 0x11), IommuSetup(acs=AcsSetup(request_acs=False)), False),  # SV UF on, RR CR off
])
def test_multifunction_endpoint(acs, setup, separate) -> None:  # type: ignore[no-untyped-def]
    funcs = [func("00:01.0", pcie=RP, acs=ACS_ON, bridge=(1, 1)),
             func("01:00.0", pcie=EP, mf=True, acs=acs), func("01:00.1", pcie=EP, acs=acs),
             func("01:00.2", pcie=EP, acs=acs)]
    fns = ["0000:01:00.0", "0000:01:00.1", "0000:01:00.2"]
    expect = [[f] for f in fns] if separate else [fns]
    assert groups_of(funcs, setup)[1:] == expect


def test_one_function_with_acs_stays_apart_from_the_rest() -> None:
    funcs = [func("00:01.0", pcie=RP, acs=ACS_ON, bridge=(1, 1)),
             func("01:00.0", pcie=EP, mf=True), func("01:00.1", pcie=EP, acs=ACS_ON), func("01:00.2", pcie=EP)]
    assert groups_of(funcs)[1:] == [["0000:01:00.0", "0000:01:00.2"], ["0000:01:00.1"]]


def test_intel_82576_mf_endpoint_quirk_separates_functions() -> None:
    def topo(vendor, device):  # type: ignore[no-untyped-def]
        return [func("00:01.0", pcie=RP, acs=ACS_ON, bridge=(1, 1)),
                func("01:00.0", vendor, device, pcie=EP, mf=True), func("01:00.1", vendor, device, pcie=EP)]
    result = compute_groups(topo(0x8086, 0x10C9))                      # 82576: pci_quirk_mf_endpoint_acs
    assert [g.devices for g in result.groups][1:] == [["0000:01:00.0"], ["0000:01:00.1"]]
    assert "pci_quirk_mf_endpoint_acs (8086:10c9" in reason(result, "01:00.0")
    assert groups_of(topo(0x8086, 0x10D3))[1:] == [["0000:01:00.0", "0000:01:00.1"]]  # 82574: no quirk


def test_intel_rciep_quirk_on_root_bus() -> None:
    def topo(vendor):  # type: ignore[no-untyped-def]
        return [func("00:06.0", vendor, 0x1234, pcie=RCIEP, mf=True), func("00:06.1", 0x1AF4, 0x1005)]
    # An Intel RCiEP counts as isolated, so the conventional function next to it cannot join it and vice
    # versa (get_pci_function_alias_group skips ACS-isolated functions).
    assert groups_of(topo(0x8086)) == [["0000:00:06.0"], ["0000:00:06.1"]]
    assert groups_of(topo(0x1B36)) == [["0000:00:06.0", "0000:00:06.1"]]


def test_amd_southbridge_quirk_needs_ivrs() -> None:
    funcs = [func("00:14.0", 0x1002, 0x4385, mf=True), func("00:14.3", 0x1002, 0x439D),
             func("00:14.4", 0x1002, 0x4384, bridge=(1, 1)), func("01:05.0", 0x10EC, 0x8139)]
    assert groups_of(funcs) == [["0000:00:14.0", "0000:00:14.3", "0000:00:14.4", "0000:01:05.0"]]
    assert groups_of(funcs, IommuSetup(ivrs=True)) == [["0000:00:14.0"], ["0000:00:14.3"],
                                                       ["0000:00:14.4", "0000:01:05.0"]]


# ---------------------------------------------------------------------------- bridges and DMA aliases
def test_conventional_devices_behind_nested_pci_bridges_join_the_pcie_to_pci_bridge() -> None:
    funcs = [func("00:01.0", pcie=RP, acs=ACS_ON, bridge=(1, 3)),
             func("01:00.0", pcie=PCI_BR, bridge=(2, 3)),
             func("02:01.0", 0x1234, 0x11E8),
             func("02:03.0", 0x1B36, 0x0001, bridge=(3, 3)),   # conventional PCI-to-PCI bridge
             func("03:01.0", 0x1234, 0x11E8)]
    result = compute_groups(funcs)
    assert [g.devices for g in result.groups] == [["0000:00:01.0"], ["0000:01:00.0", "0000:02:01.0",
                                                                     "0000:02:03.0", "0000:03:01.0"]]
    # 03:01.0 is aliased first by the conventional bridge (its own ID), which already has a group.
    assert reason(result, "03:01.0") == ("0000:03:01.0 joined 0000:02:03.0's group: aliased by conventional "
                                         "PCI bridge 0000:02:03.0 (its own requester ID 02:03.0)")
    walk = [(a.dev.name, a.rid, a.how) for a in for_each_dma_alias(result.tree.device("0000:03:01.0"))]
    assert walk == [("0000:03:01.0", 0x0308, "self"), ("0000:02:03.0", 0x0218, "pci-bridge"),
                    ("0000:01:00.0", 0x0200, "pcie-to-pci")]


def test_intel_dmi_to_pci_bridge_quirk_aliases_to_secondary_bus() -> None:
    # quirk_use_pcie_bridge_dma_alias (8086:244e without a PCIe capability below a root port).
    funcs = [func("00:1e.0", pcie=RP, acs=ACS_ON, bridge=(1, 2)),
             func("01:00.0", 0x8086, 0x244E, bridge=(2, 2)),
             func("02:01.0", 0x1234, 0x11E8)]
    tree = compute_groups(funcs).tree
    walk = [(a.dev.name, a.rid, a.how) for a in for_each_dma_alias(tree.device("0000:02:01.0"))]
    assert walk[1] == ("0000:01:00.0", 0x0200, "pcie-bridge-alias")
    assert groups_of(funcs) == [["0000:00:1e.0"], ["0000:01:00.0", "0000:02:01.0"]]


def test_marvell_func1_dma_alias_joins_isolated_functions() -> None:
    # Both functions have ACS enabled, but the Marvell 88SE9123 DMAs as function 1 (quirk_dma_func1_alias).
    def topo(vendor):  # type: ignore[no-untyped-def]
        return [func("00:01.0", pcie=RP, acs=ACS_ON, bridge=(1, 1)),
                func("01:00.0", vendor, 0x9123, pcie=EP, mf=True, acs=ACS_ON),
                func("01:00.1", vendor, 0x9123, pcie=EP, acs=ACS_ON)]
    result = compute_groups(topo(0x1B4B))
    assert [g.devices for g in result.groups][1:] == [["0000:01:00.0", "0000:01:00.1"]]
    assert "quirk_dma_func1_alias: DMA alias 00.1" in reason(result, "01:00.1")
    assert groups_of(topo(0x1B36))[1:] == [["0000:01:00.0"], ["0000:01:00.1"]]


def test_plx_ntb_aliases_every_devfn_on_its_bus() -> None:
    funcs = [func("00:01.0", pcie=RP, acs=ACS_ON, bridge=(1, 1)), func("00:02.0", pcie=RCIEP),
             func("00:03.0", 0x10B5, 0x87B0, pcie=RCIEP), func("00:04.0", pcie=RCIEP)]
    # The NTB's mask (set at enumeration) holds every devfn of bus 0, so each device on the bus reaches the
    # root port's group through it: get_pci_alias_group() recurses 00:02.0 -> 00:03.0 -> 00:01.0.
    result = compute_groups(funcs)
    assert [g.devices for g in result.groups] == [["0000:00:01.0", "0000:00:02.0", "0000:00:03.0",
                                                   "0000:00:04.0"]]
    assert reason(result, "00:02.0") == (
        "0000:00:02.0 joined 0000:00:01.0's group: DMA aliases: 0000:00:03.0 has DMA alias 02.0 "
        "(quirk_plx_ntb_dma_alias: DMA alias 00.0-1f.7); DMA aliases: 0000:00:03.0 has DMA alias 01.0 "
        "(quirk_plx_ntb_dma_alias: DMA alias 00.0-1f.7)")


def test_ivrs_alias_on_the_same_bus() -> None:
    funcs = [func("00:01.0", pcie=RP, acs=ACS_ON, bridge=(1, 1)), func("01:00.0", pcie=EP, mf=True, acs=ACS_ON),
             func("01:00.1", pcie=EP, acs=ACS_ON)]
    setup = IommuSetup(ivrs_aliases={"0000:01:00.1": 0x0100})
    assert groups_of(funcs, setup)[1:] == [["0000:01:00.0", "0000:01:00.1"]]
    other_bus = IommuSetup(ivrs_aliases={"0000:01:00.1": 0x0200})  # not on its bus: not a PCI DMA alias
    assert groups_of(funcs, other_bus)[1:] == [["0000:01:00.0"], ["0000:01:00.1"]]


def test_vmd_domain_devices_join_the_vmd_endpoint() -> None:
    funcs = [func("00:0e.0", 0x8086, 0x467F, pcie=RCIEP),
             func("10000:00:01.0", 0x8086, 0x464D, pcie=RP, acs=ACS_ON, bridge=(1, 1)),
             func("10000:01:00.0", 0x144D, 0xA808, pcie=EP)]
    setup = IommuSetup(vmd_domains={0x10000: "0000:00:0e.0"})
    assert groups_of(funcs, setup) == [["0000:00:0e.0", "10000:00:01.0", "10000:01:00.0"]]
    assert groups_of(funcs)[1:] == [["10000:00:01.0"], ["10000:01:00.0"]]


def test_xlate_root_bridge_stops_the_alias_walk() -> None:
    funcs = [func("00:01.0", 0x14E4, 0x9084, pcie=RP, bridge=(1, 2)),        # XLATE_ROOT (ThunderX2)
             func("01:00.0", pcie=PCI_BR, bridge=(2, 2)), func("02:01.0", 0x1234, 0x11E8)]
    tree = compute_groups(funcs).tree
    assert [a.how for a in for_each_dma_alias(tree.device("0000:02:01.0"))] == ["self", "pcie-to-pci"]
    assert [a.how for a in for_each_dma_alias(tree.device("0000:01:00.0"))] == ["self"]


# ---------------------------------------------------------------------------- SR-IOV
def sriov_pf(name: str, num: int, offset: int, stride: int = 1, **kw):  # type: ignore[no-untyped-def]
    return func(name, 0x8086, 0x1572, pcie=EP, ari=True,
                sriov={"ctrl": 0x11, "total": 64, "num": num, "offset": offset, "stride": stride,
                       "vf_device": 0x154C}, **kw)


def test_vfs_on_a_virtual_bus() -> None:
    # First VF Offset 0x80, stride 0x80: VF 0 is 01:10.0, VFs 1 and 2 are on bus 2, which no bridge claims
    # (iov.c virtfn_add_bus: a virtual bus whose "self" is None, child of the PF's bus).
    funcs = [func("00:01.0", pcie=RP, acs=ACS_ON, bridge=(1, 2), ari_fwd=True),
             sriov_pf("01:00.0", 3, 0x80, 0x80), vf("01:10.0"), vf("02:00.0"), vf("02:10.0")]
    result = compute_groups(funcs)
    assert [g.devices for g in result.groups] == [["0000:00:01.0"], ["0000:01:00.0"], ["0000:01:10.0"],
                                                  ["0000:02:00.0"], ["0000:02:10.0"]]
    tree = result.tree
    v = tree.device("0000:02:00.0")
    assert v.is_virtfn and v.bus.virtual and v.bus.self is None
    assert v.bus.parent is tree.device("0000:01:00.0").bus
    assert (v.vendor, v.device, v.multifunction, v.vf_id) == (0x8086, 0x154C, False, 1)
    assert tree.device("0000:02:10.0").bus is v.bus


def test_vfs_behind_acs_less_downstream_port_join_the_port() -> None:
    funcs = [func("00:01.0", pcie=RP, acs=ACS_ON, bridge=(1, 4)), func("01:00.0", pcie=UP, bridge=(2, 4)),
             func("02:00.0", pcie=DOWN, bridge=(3, 4), ari_fwd=True), sriov_pf("03:00.0", 2, 0x100),
             vf("04:00.0"), vf("04:00.1")]
    assert groups_of(funcs) == [["0000:00:01.0"], ["0000:01:00.0"],
                                ["0000:02:00.0", "0000:03:00.0", "0000:04:00.0", "0000:04:00.1"]]


def test_vfs_come_after_all_boot_devices_per_pf() -> None:
    funcs = [func("00:01.0", pcie=RP, acs=ACS_ON, bridge=(1, 1), ari_fwd=True),
             func("00:02.0", pcie=RP, acs=ACS_ON, bridge=(2, 2), ari_fwd=True),
             sriov_pf("01:00.0", 2, 1), vf("01:00.1"), vf("01:00.2"),
             sriov_pf("02:00.0", 1, 4), vf("02:00.4")]
    tree = PciTree.from_dumps(funcs)
    assert [d.name[5:] for d in tree.devices] == ["00:01.0", "00:02.0", "01:00.0", "02:00.0", "01:00.1",
                                                  "01:00.2", "02:00.4"]


def test_vf_missing_from_the_dump_is_still_grouped() -> None:
    funcs = [func("00:01.0", pcie=RP, acs=ACS_ON, bridge=(1, 1), ari_fwd=True), sriov_pf("01:00.0", 2, 1),
             vf("01:00.1")]
    result = compute_groups(funcs)
    assert result.groups[-1].devices == ["0000:01:00.2"]
    assert any("0000:01:00.2: VF 1 of 0000:01:00.0 is not in the input" in w for w in result.warnings)


def test_ari_function_numbers_are_multifunction() -> None:
    # With ARI forwarding on, PFs at 01:00.0 and 01:01.0 (ARI function 8) are one "slot scan": pci_scan_slot
    # marks function 8 multifunction even though its header says otherwise.
    funcs = [func("00:01.0", pcie=RP, acs=ACS_ON, bridge=(1, 1), ari_fwd=True),
             func("01:00.0", pcie=EP, ari=True), func("01:01.0", pcie=EP, ari=True)]
    tree = PciTree.from_dumps(funcs)
    assert [tree.device(n).multifunction for n in ("0000:01:00.0", "0000:01:01.0")] == [False, True]


# ---------------------------------------------------------------------------- bad input
def test_unprivileged_64_byte_dump_is_detected() -> None:
    short = func("00:01.0", pcie=EP, size=64)
    with pytest.raises(VfiolabError, match=r"0000:00:01\.0: capability pointer at 0x34 points to a capability "
                                           r"at offset 0x40, but the dump has only 64 bytes — a 64-byte dump is "
                                           r"what an unprivileged read gives"):
        compute_groups([short])


@pytest.mark.parametrize("funcs, message", [
    ([func("00:00.0", pcie=EP, pokes={0x41: b"\x80"}, size=0x60)],
     (r"0000:00:00\.0: capability pointer at 0x41 points to a capability at offset 0x80, but the dump has "
     r"only 96 bytes$")),
    ([func("00:00.0"), func("00:00.0")], r"0000:00:00\.0: listed twice"),
    ([func("00:00.0", size=48)], r"0000:00:00\.0: only 48 bytes of config space; the 64-byte header"),
    ([func("00:00.0", 0xFFFF, 0xFFFF)], r"0000:00:00\.0: vendor ID ffff at offset 0x0 and not a VF"),
    ([func("00:00.0"), func("00:00.1")], r"0000:00:00\.1: 0000:00:00\.0 has the multifunction bit"),
    ([func("00:00.1")], r"0000:00:00\.1: no function 0"),
    ([func("01:00.0", bridge=(2, 2)), func("02:00.0", bridge=(1, 1))], r"bridges form a loop through bus"),
    ([func("00:01.0", bridge=(1, 4)), func("03:00.0")], r"0000:03:00\.0: no bridge in the input has bus 03"),
    ([func("00:00.0", pokes={0x0E: b"\x05"})], r"0000:00:00\.0: unknown header type 0x05 at offset 0xe"),
    ([sriov_pf("00:00.0", 2, 0)], r"0000:00:00\.0: VF Enable is set but First VF Offset 0"),
    ([sriov_pf("00:00.0", 1, 1, mf=True), sriov_pf("00:00.1", 0, 1)],
     r"0000:00:00\.1: VF 0 of 0000:00:00\.0 lands on a physical function \(First VF Offset at 0x114\)"),
])
def test_bad_input_names_device_and_offset(funcs, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(VfiolabError, match=message):
        compute_groups(funcs)


def test_pcie_function_dumped_with_256_bytes_warns() -> None:
    result = compute_groups([func("00:01.0", pcie=RCIEP, size=256)])
    assert result.warnings == [("0000:00:01.0: PCI Express function dumped with 256 bytes: no extended "
                               "capabilities (ACS, SR-IOV) seen; use lspci -xxxx as root")]


# ---------------------------------------------------------------------------- dump text and CLI
def test_groups_from_dump_text() -> None:
    result = groups_from_dump_text(dump_text(qemu_real_peers()))
    assert [g.devices for g in result.groups] == REAL_PEERS_GROUPS


def test_cli_json_and_text(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "machine.dump"
    path.write_text(dump_text(qemu_real_peers()))
    runner = CliRunner()
    out = runner.invoke(cli, ["groups", "--dump", str(path), "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output) == {"groups": [{"id": i, "devices": d} for i, d in enumerate(REAL_PEERS_GROUPS)]}
    text = runner.invoke(cli, ["groups", "--dump", str(path), "-v"]).output
    assert "IOMMU group 7\n  0000:02:00.0 [104c:8233] downstream port\n" in text
    assert "      0000:03:00.0 joined 0000:02:00.0's group: downstream port 0000:02:00.0 has no ACS capability\n" \
        in text


def test_cli_truncated_dump_fails_with_one_clear_line(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    lines = dump_text(qemu_real_peers()).splitlines()
    cut = lines.index("00:02.0 x") + 5          # 00:02.0 loses everything after its first 64 bytes
    path = tmp_path / "cut.dump"
    path.write_text("\n".join(lines[:cut]) + "\n")
    assert main(["groups", "--dump", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "vfiolab: 0000:00:02.0: capability pointer at 0x34 points to a capability at offset 0x40, but the " \
           "dump has only 64 bytes" in err

    path.write_text("00:00.0 host\n00: 86 80 c0 29 0\n")
    assert main(["groups", "--dump", str(path)]) == 1
    assert capsys.readouterr().err == (f"vfiolab: {path}:2: 0000:00:00.0: malformed byte '0' at offset 0x4\n")


def test_cli_rejects_two_sources(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "m.dump"
    path.write_text(dump_text(qemu_real_peers()))
    out = CliRunner().invoke(cli, ["groups", "--dump", str(path), "--sysfs", str(tmp_path)])
    assert out.exit_code != 0 and "give only one of --dump, --sysfs" in out.output


# ---------------------------------------------------------------------------- with the project's builders
def test_functions_built_with_the_capability_builders() -> None:
    """A root port (ACS left at 0 by "firmware"), an ARI PF with SR-IOV and its two VFs, built with
    ExpressCap/AcsCap/AriCap/SriovCap and programmed through config writes as Linux does."""
    from vfiolab.pci.caps.acs import AcsCap
    from vfiolab.pci.caps.ari import AriCap
    from vfiolab.pci.caps.base import CapabilityList
    from vfiolab.pci.caps.express import ExpressCap
    from vfiolab.pci.caps.express_regs import DEVCTL2, DEVCTL2_ARI, TYPE_ENDPOINT, TYPE_ROOT_PORT
    from vfiolab.pci.caps.sriov import SriovCap
    from vfiolab.pci.config import ConfigSpace
    from vfiolab.pci.dump import DumpedFunction

    def space(vendor: int, device: int, hdr: int) -> tuple[ConfigSpace, CapabilityList]:
        cs = ConfigSpace(4096)
        cs.set(0, 4, vendor | device << 16)
        cs.set(0x0E, 1, hdr)
        return cs, CapabilityList(cs)

    rp, caps = space(0x1B36, 0x000C, 1)
    rp.set(0x18, 4, 0x010100)                                  # primary 0, secondary 1, subordinate 1
    pcie = caps.add(ExpressCap(TYPE_ROOT_PORT, ari_forwarding=True))
    caps.add(AcsCap(ctrl=0))
    rp.write(pcie.offset + DEVCTL2, 2, DEVCTL2_ARI)            # pci_configure_ari()
    pf, caps = space(0x1B36, 0x0010, 0)
    caps.add(ExpressCap(TYPE_ENDPOINT))
    caps.add(AriCap())
    sriov = caps.add(SriovCap(total_vfs=2, vf_device=0x0010, vf_offset=1, vf_stride=1))
    pf.write(sriov.offset + SriovCap.NUM_VFS, 2, 2)            # sriov_enable(): NumVFs, then VF Enable
    pf.write(sriov.offset + SriovCap.CTRL, 2, SriovCap.CTRL_VFE | SriovCap.CTRL_MSE | SriovCap.CTRL_ARI)
    vfs = []
    for _ in range(2):
        v, caps = space(0xFFFF, 0xFFFF, 0)
        caps.add(ExpressCap(TYPE_ENDPOINT))
        vfs.append(v)
    funcs = [DumpedFunction(0, 0, 0x10, rp.dump()), DumpedFunction(0, 1, 0, pf.dump()),
             DumpedFunction(0, 1, 1, vfs[0].dump()), DumpedFunction(0, 1, 2, vfs[1].dump())]
    result = compute_groups(funcs)
    assert [g.devices for g in result.groups] == [["0000:00:02.0"], ["0000:01:00.0"], ["0000:01:00.1"],
                                                  ["0000:01:00.2"]]
    assert result.tree.device("0000:01:00.2").device == 0x0010
    # Without an IOMMU asking for ACS the builder's reset control (0) isolates nothing.
    assert groups_of(funcs, IommuSetup(acs=AcsSetup(request_acs=False))) == [
        ["0000:00:02.0", "0000:01:00.0", "0000:01:00.1", "0000:01:00.2"]]


def test_cli_platform_sources(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """No option means the built-in platform (snapshot(None)); --platform FILE passes the file on."""
    import sys
    import types

    calls: list[str | None] = []
    fake = types.ModuleType("vfiolab.platform")
    fake.snapshot = lambda path=None: calls.append(path) or qemu_real_peers()  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vfiolab.platform", fake)
    runner = CliRunner()
    out = runner.invoke(cli, ["groups", "--json"])
    assert out.exit_code == 0, out.output
    assert [g["devices"] for g in json.loads(out.output)["groups"]] == REAL_PEERS_GROUPS
    yaml_file = tmp_path / "machine.yaml"
    yaml_file.write_text("{}\n")
    assert runner.invoke(cli, ["groups", "--platform", str(yaml_file)]).exit_code == 0
    assert calls == [None, str(yaml_file)]
