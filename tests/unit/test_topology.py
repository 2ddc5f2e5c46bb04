"""Configuration routing as the hardware does it: programmed bus numbers, Type 1 -> Type 0 conversion,
downstream ports passing device 0 only unless ARI Forwarding is on, all-ones for nobody, SR-IOV VFs
answering their routing IDs, resets.  Each expectation is a PCI(e) spec rule named in the test."""

from __future__ import annotations

import pytest

from vfiolab.errors import VfiolabError
from vfiolab.pci import regs
from vfiolab.pci.bridge import PcieToPciBridge, RootPort, SwitchDownstreamPort, SwitchUpstreamPort
from vfiolab.pci.caps.ari import AriCap
from vfiolab.pci.caps.sriov import SriovCap
from vfiolab.pci.config import ConfigAccessError
from vfiolab.pci.function import Bar, ConventionalDevice, HostBridge, PcieEndpoint
from vfiolab.pci.sriov_vf import VfSpec, install_sriov
from vfiolab.pci.topology import Aperture, Topology

ALL_ONES = 0xFFFFFFFF


def program(t: Topology, bus: int, devfn: int, pri: int, sec: int, sub: int) -> None:
    t.config_write(0, bus, devfn, regs.PRIMARY_BUS, 4, pri | sec << 8 | sub << 16)


def switch_machine() -> tuple[Topology, PcieEndpoint, PcieEndpoint]:
    """root port 00:01.0 -> upstream port -> downstream ports at 00.0 and 01.0 -> one endpoint each."""
    t = Topology()
    rc = t.add_host_bridge(0, 0, 0xFF)
    rc.root.attach(0, HostBridge(0x8086, 0x29C0))
    rp = rc.root.attach(regs.devfn(1, 0), RootPort(0x8086, 0x2030))
    assert rp.secondary is not None
    up = rp.secondary.attach(0, SwitchUpstreamPort(0x10B5, 0x8747))
    assert up.secondary is not None
    d0 = up.secondary.attach(regs.devfn(0, 0), SwitchDownstreamPort(0x10B5, 0x8747))
    d1 = up.secondary.attach(regs.devfn(1, 0), SwitchDownstreamPort(0x10B5, 0x8747))
    assert d0.secondary is not None and d1.secondary is not None
    e0 = d0.secondary.attach(0, PcieEndpoint(0x144D, 0xA80A, 0x010802))
    e1 = d1.secondary.attach(0, PcieEndpoint(0x1AF4, 0x1044, 0x00FF00))
    assert isinstance(e0, PcieEndpoint) and isinstance(e1, PcieEndpoint)
    return t, e0, e1


def test_root_bus_answers_and_absent_functions_read_all_ones() -> None:
    t, _, _ = switch_machine()
    assert t.config_read(0, 0, 0, 0, 4) == 0x29C08086
    assert t.config_read(0, 0, regs.devfn(1, 0), 0, 2) == 0x8086
    for size, ones in ((1, 0xFF), (2, 0xFFFF), (4, ALL_ONES)):
        assert t.config_read(0, 0, regs.devfn(7, 3), 0, size) == ones
        assert t.config_read(1, 0, 0, 0, size) == ones                   # no such segment
    t.config_write(0, 0, regs.devfn(7, 3), regs.COMMAND, 2, 0xFFFF)      # dropped, no error
    with pytest.raises(ConfigAccessError):
        t.config_read(0, 0, 0, 1, 2)
    with pytest.raises(ConfigAccessError):
        t.config_read(0, 0, regs.devfn(9, 0), 0, 3)
    with pytest.raises(ConfigAccessError):
        t.config_write(0, 0, 0, 0x1000, 4, 0)


def test_unprogrammed_bridges_hide_their_children() -> None:
    t, e0, _ = switch_machine()
    # PCI-to-PCI Bridge 1.2 §3.2.5.3: a bridge claims Type 1 requests only within secondary..subordinate.
    assert t.config_read(0, 1, 0, 0, 4) == ALL_ONES
    program(t, 0, regs.devfn(1, 0), 0, 1, 1)
    assert t.config_read(0, 1, 0, 0, 4) == 0x874710B5                     # Type 1 -> Type 0 on bus 1
    assert t.config_read(0, 2, 0, 0, 4) == ALL_ONES                       # beyond subordinate
    program(t, 0, regs.devfn(1, 0), 0, 1, 4)
    assert t.config_read(0, 2, 0, 0, 4) == ALL_ONES                       # the upstream port still at 0/0
    program(t, 1, 0, 1, 2, 4)
    program(t, 2, regs.devfn(0, 0), 2, 3, 3)
    assert t.config_read(0, 3, 0, 0, 4) == 0xA80A144D
    assert t.find(0, 3, 0) is e0
    assert t.config_read(0, 4, 0, 0, 4) == ALL_ONES                       # 02:01.0 not programmed yet
    program(t, 2, regs.devfn(1, 0), 2, 4, 4)
    assert t.config_read(0, 4, 0, 0, 4) == 0x10441AF4
    # Reprogramming moves the hierarchy: the routing cache must not keep the old answer.
    program(t, 2, regs.devfn(0, 0), 2, 3, 3)
    program(t, 0, regs.devfn(1, 0), 0, 5, 9)
    assert t.config_read(0, 3, 0, 0, 4) == ALL_ONES
    program(t, 0, regs.devfn(1, 0), 0, 1, 4)
    assert t.config_read(0, 3, 0, 0, 4) == 0xA80A144D


def test_writes_capture_the_bus_number() -> None:
    t, e0, _ = switch_machine()
    for bus, devfn, pri, sec, sub in ((0, 8, 0, 1, 4), (1, 0, 1, 2, 4), (2, 0, 2, 3, 3)):
        program(t, bus, devfn, pri, sec, sub)
    t.config_write(0, 3, 0, regs.COMMAND, 2, 0)
    assert e0.captured_bus == 3          # PCIe Base §2.2.6.2: functions capture their bus number


def test_downstream_port_passes_device_zero_only_without_ari_forwarding() -> None:
    t = Topology()
    rc = t.add_host_bridge(0, 0, 0xFF)
    rp = rc.root.attach(regs.devfn(1, 0), RootPort(0x8086, 0x2030, express={"ari_forwarding": True}))
    assert rp.secondary is not None
    f0 = PcieEndpoint(0x8086, 0x1572, 0x020000, multifunction=True, ext_caps=[AriCap(next_fn=9)])
    f9 = PcieEndpoint(0x8086, 0x1572, 0x020000, multifunction=True, ext_caps=[AriCap(next_fn=0)])
    rp.secondary.attach(0, f0)
    rp.secondary.attach(9, f9)          # ARI function 9 = "device 1, function 1" without ARI
    program(t, 0, 8, 0, 1, 1)
    assert t.config_read(0, 1, 0, 0, 2) == 0x8086
    # PCIe Base §7.3.1: a downstream port turns Type 1 into Type 0 for device 0 only ...
    assert t.config_read(0, 1, 9, 0, 4) == ALL_ONES
    pos = rp.express_offset
    assert pos is not None
    ctl2 = t.config_read(0, 0, 8, pos + 0x28, 2)
    t.config_write(0, 0, 8, pos + 0x28, 2, ctl2 | 0x20)     # ... unless ARI Forwarding is enabled
    assert t.find(0, 1, 9) is f9
    t.config_write(0, 0, 8, pos + 0x28, 2, ctl2)
    assert t.config_read(0, 1, 9, 0, 4) == ALL_ONES


def test_conventional_secondary_gets_no_extended_config() -> None:
    t = Topology()
    rc = t.add_host_bridge(0, 0, 0xFF)
    rp = rc.root.attach(8, RootPort(0x8086, 0x2030))
    assert rp.secondary is not None
    pb = rp.secondary.attach(0, PcieToPciBridge(0x1A03, 0x1150))
    assert pb.secondary is not None
    dev = pb.secondary.attach(regs.devfn(3, 0), ConventionalDevice(0x8086, 0x107C, 0x020000))
    with pytest.raises(VfiolabError, match="conventional PCI bus"):
        pb.secondary.attach(regs.devfn(4, 0), PcieEndpoint(0x8086, 0x1533, 0x020000))
    program(t, 0, 8, 0, 1, 2)
    program(t, 1, 0, 1, 2, 2)
    assert t.config_read(0, 2, regs.devfn(3, 0), 0, 4) == 0x107C8086   # any device number behind PCI
    assert t.config_read(0, 2, regs.devfn(3, 0), 0x100, 4) == ALL_ONES
    assert t.config_dump(0, 2, regs.devfn(3, 0)) == dev.cs.dump(256)


def test_secondary_bus_reset_resets_everything_below() -> None:
    t, e0, _ = switch_machine()
    for bus, devfn, pri, sec, sub in ((0, 8, 0, 1, 4), (1, 0, 1, 2, 4), (2, 0, 2, 3, 3)):
        program(t, bus, devfn, pri, sec, sub)
    t.config_write(0, 3, 0, regs.COMMAND, 2, regs.COMMAND_MASTER)
    assert t.config_read(0, 3, 0, regs.COMMAND, 2) == regs.COMMAND_MASTER
    t.config_write(0, 0, 8, regs.BRIDGE_CONTROL, 2, regs.BRIDGE_CTL_BUS_RESET)
    # PCI-to-PCI Bridge 1.2 §3.2.5.18: everything below resets, so the switch forgets its bus numbers.
    assert e0.config_read(regs.COMMAND, 2) == 0
    assert t.config_read(0, 1, 0, regs.PRIMARY_BUS, 4) & 0xFFFFFF == 0
    assert t.config_read(0, 3, 0, 0, 4) == ALL_ONES
    assert t.config_read(0, 0, 8, regs.SECONDARY_BUS, 1) == 1            # the bridge itself keeps them


def sriov_machine(offset: int, stride: int, total: int) -> tuple[Topology, PcieEndpoint]:
    t = Topology()
    rc = t.add_host_bridge(0, 0, 0xFF)
    rp = rc.root.attach(8, RootPort(0x8086, 0x2030, express={"ari_forwarding": True}))
    assert rp.secondary is not None
    pf = PcieEndpoint(0x8086, 0x1572, 0x020000, bars=[Bar(0, "mem64", 0x100000)],
                      ext_caps=[AriCap(), SriovCap(total, 0x154C, offset, stride, vf_bars=[0x10000])])
    rp.secondary.attach(0, pf)
    install_sriov(pf, VfSpec(0x020000, ext_caps=lambda: [AriCap()]))
    return t, pf


def enable_vfs(t: Topology, bus: int, n: int, pos: int) -> None:
    t.config_write(0, bus, 0, pos + SriovCap.NUM_VFS, 2, n)
    t.config_write(0, bus, 0, pos + SriovCap.CTRL, 2, SriovCap.CTRL_VFE | SriovCap.CTRL_MSE)


def test_vfs_appear_at_their_routing_ids_and_disappear() -> None:
    t, pf = sriov_machine(offset=0x80, stride=2, total=4)
    pos = pf.caps.find(0x10, extended=True).offset  # type: ignore[union-attr]
    rp_exp = t.find(0, 0, 8).express_offset  # type: ignore[union-attr]
    program(t, 0, 8, 0, 1, 2)
    assert t.config_read(0, 1, 0x80, 0, 4) == ALL_ONES
    enable_vfs(t, 1, 3, pos)
    rids = [0x0100 + 0x80 + 2 * n for n in range(3)]
    # VF 0 is "device 16": the root port passes it only once ARI Forwarding is on (PCIe Base §7.3.1).
    assert all(t.find(0, rid >> 8, rid & 0xFF) is None for rid in rids)
    t.config_write(0, 0, 8, rp_exp + 0x28, 2, 0x20)
    # PCIe Base §9.3.3.9-10: VF n is at PF RID + First VF Offset + n * VF Stride; VF IDs read 0xFFFF.
    vfs = [t.find(0, rid >> 8, rid & 0xFF) for rid in rids]
    assert all(vf is not None and vf.is_virtfn for vf in vfs)
    assert [t.config_read(0, rid >> 8, rid & 0xFF, 0, 4) for rid in rids] == [ALL_ONES] * 3
    assert t.config_read(0, 1, 0x80, regs.CLASS_DEVICE, 2) == 0x0200
    assert t.find(0, 1, 0x81) is None and t.find(0, 1, 0x86) is None
    t.config_write(0, 1, 0, pos + SriovCap.CTRL, 2, 0)          # VF Enable off: the VFs go away
    assert all(t.find(0, rid >> 8, rid & 0xFF) is None for rid in rids)


def test_vfs_beyond_the_pf_bus_need_the_bridge_range() -> None:
    t, pf = sriov_machine(offset=0x100, stride=1, total=2)     # VF 0 at bus+1 devfn 0
    pos = pf.caps.find(0x10, extended=True).offset  # type: ignore[union-attr]
    program(t, 0, 8, 0, 1, 1)
    enable_vfs(t, 1, 2, pos)
    assert t.find(0, 2, 0) is None                 # bus 2 is outside the root port's range
    program(t, 0, 8, 0, 1, 2)
    vf = t.find(0, 2, 0)
    assert vf is not None and vf.is_virtfn          # Type 1 to bus 2 reaches the PF's link
    assert t.find(0, 2, 1) is not None
    pf.reset()                                      # a PF reset clears VF Enable: the VFs go away
    assert t.find(0, 2, 0) is None


def test_host_bridges_share_a_segment_with_disjoint_bus_ranges() -> None:
    t = Topology()
    a = t.add_host_bridge(0, 0x00, 0x16, (Aperture("mem", 0x90000000, 0x9FFFFFFF),))
    b = t.add_host_bridge(0, 0x17, 0x39)
    a.root.attach(0, HostBridge(0x8086, 0x2020))
    b.root.attach(0, RootPort(0x8086, 0x2030))
    assert t.config_read(0, 0x17, 0, 0, 4) == 0x20308086
    assert t.config_read(0, 0x16, 0, 0, 4) == ALL_ONES        # not a root bus, nothing forwards it
    with pytest.raises(VfiolabError, match="overlaps"):
        t.add_host_bridge(0, 0x30, 0x40)
    with pytest.raises(VfiolabError, match="already holds"):
        a.root.attach(0, HostBridge(0x8086, 0x2020))
    with pytest.raises(VfiolabError, match="beyond the 64 KiB"):
        Aperture("io", 0x1000, 0x1FFFF)
    assert [h.bus_start for h in t.host_bridges] == [0x00, 0x17]
    assert [f.device for f in t.walk()] == [0x2020, 0x2030]
