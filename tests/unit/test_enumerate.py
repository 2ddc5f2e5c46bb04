"""Enumeration like Linux: bus numbers, probe order and the config bits Linux writes, compared with what
Linux 7.2 produced for the same QEMU topologies (pci.md §6 and the groups-oracle captures g-real-peers and
b-switch, copied here as literals), plus the probe.c / iov.c rules those captures do not exercise."""

from __future__ import annotations

from typing import Any

import pytest

from vfiolab.errors import VfiolabError
from vfiolab.pci import regs
from vfiolab.pci.bridge import RootPort, SwitchDownstreamPort, SwitchUpstreamPort
from vfiolab.pci.caps.acs import AcsCap
from vfiolab.pci.caps.ari import AriCap
from vfiolab.pci.caps.sriov import SriovCap
from vfiolab.pci.enumerate import EnumOptions, enumerate_topology
from vfiolab.pci.function import Bar, PcieEndpoint
from vfiolab.pci.sriov_vf import VfSpec, install_sriov
from vfiolab.pci.topology import Aperture, Topology
from vfiolab.platform import Machine, Platform

QEMU = "src/vfiolab/platforms/qemu-q35.yaml"
APERTURES = (Aperture("io", 0x1000, 0xFFFF), Aperture("mem", 0x80000000, 0xFEBFFFFF),
             Aperture("mem", 0x800000000, 0xFFFFFFFFF))


@pytest.fixture(scope="module")
def qemu() -> Machine:
    import os

    return Platform.load(os.path.join(os.path.dirname(__file__), "..", "..", QEMU)).boot()


def bus_numbers(m: Machine) -> dict[str, tuple[int, int, int]]:
    out = {}
    for d in m.enumeration.devices:
        if d.is_bridge:
            v = d.read(regs.PRIMARY_BUS, 4)
            out[d.name[5:]] = (v & 0xFF, (v >> 8) & 0xFF, (v >> 16) & 0xFF)
    return out


def test_bus_numbers_are_the_ones_linux_gave_the_qemu_topology(qemu: Machine) -> None:
    # pci.md §6 / capture g-real-peers: 01 upstream port, 02 its downstream ports, 03/04 behind them,
    # 05 the PCIe-PCI bridge, 06 behind it, 07 the NVMe.
    assert bus_numbers(qemu) == {
        "00:02.0": (0x00, 0x01, 0x04), "00:02.1": (0x00, 0x05, 0x06), "00:02.2": (0x00, 0x07, 0x07),
        "01:00.0": (0x01, 0x02, 0x04), "02:00.0": (0x02, 0x03, 0x03), "02:01.0": (0x02, 0x04, 0x04),
        "05:00.0": (0x05, 0x06, 0x06)}


def test_probe_order_is_pci_bus_add_devices_order_with_vfs_last(qemu: Machine) -> None:
    # pci.md §6: dmesg "Adding to iommu group" order, then the VFs enabled after boot.
    assert [d.name[5:] for d in qemu.enumeration.devices] == [
        "00:00.0", "00:02.0", "00:02.1", "00:02.2", "00:05.0", "00:05.1", "00:1f.0", "00:1f.2", "00:1f.3",
        "01:00.0", "02:00.0", "02:01.0", "03:00.0", "04:00.0", "04:00.1", "05:00.0", "06:01.0", "06:02.0",
        "07:00.0", "07:00.1", "07:00.2"]
    assert [d.name for d in qemu.snapshot()] == [d.name for d in qemu.enumeration.devices]


def test_config_bits_linux_writes_match_the_capture(qemu: Machine) -> None:
    e = qemu.enumeration
    # ACS: pci_std_enable_acs() sets SV RR CR UF (not TB) on the ports that have ACS (capture: 0x001d).
    for name in ("0000:00:02.0", "0000:00:02.1", "0000:00:02.2"):
        dev = e.find(name)
        assert dev.acs_cap and dev.read(dev.acs_cap + 6, 2) == 0x001D
    # ARI Forwarding only in the port whose device 0 has ARI (capture: ARIFwd+ only on 00:02.2).
    for name, on in (("0000:00:02.0", 0), ("0000:00:02.1", 0), ("0000:00:02.2", 0x20),
                     ("0000:02:00.0", 0), ("0000:02:01.0", 0)):
        dev = e.find(name)
        assert dev.read(dev.pcie_cap + 0x28, 2) & 0x20 == on
    # SR-IOV: IOVCtl Enable+ MSE+ ARIHierarchy+, NumVFs 2 (capture 07:00.0).
    pf = e.find("0000:07:00.0")
    assert pf.sriov is not None
    assert pf.read(pf.sriov.pos + 8, 2) == 0x19 and pf.read(pf.sriov.pos + 0x10, 2) == 2
    # AER: Device Control CorrErr+ NonFatalErr+ FatalErr+ UnsupReq+ on functions with AER (the ports).
    for name in ("0000:00:02.0", "0000:01:00.0", "0000:02:00.0"):
        dev = e.find(name)
        assert dev.read(dev.pcie_cap + 8, 2) & 0xF == 0xF
    assert e.find("0000:03:00.0").read(e.find("0000:03:00.0").pcie_cap + 8, 2) & 0xF == 0
    # Bridge Control: SERR# forwarding on every bridge (pci_configure_serr).
    for d in e.devices:
        if d.is_bridge:
            assert d.read(regs.BRIDGE_CONTROL, 2) & regs.BRIDGE_CTL_SERR


def test_nested_switches_and_empty_ports_number_like_linux() -> None:
    # Capture b-switch (Linux 7.2 on QEMU): nested switch behind 02:02.0, empty port 06:01.0,
    # multi-function downstream ports 02:03.0/.1, a second root port without ACS.
    ep = {"kind": "endpoint", "slot": "00.0", "vendor": 0x1AF4, "device": 0x1044, "class": 0xFF00,
          "bars": [{"index": 4, "type": "mem64", "size": "16K", "prefetch": True}]}

    def dn(slot: str, devices: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
        return {"slot": slot, "vendor": 0x104C, "device": 0x8233, "devices": devices, **kw}

    def switch(ports: list[dict[str, Any]]) -> dict[str, Any]:
        return {"kind": "switch", "slot": "00.0", "upstream": {"vendor": 0x104C, "device": 0x8232},
                "ports": ports}

    desc = {"host_bridges": [{"apertures": [{"type": "io", "start": 0x1000, "end": 0xFFFF},
                                            {"type": "mem", "start": 0x80000000, "end": 0xFEBFFFFF}],
                              "devices": [
        {"kind": "host_bridge", "slot": "00.0", "vendor": 0x8086, "device": 0x29C0},
        {"kind": "root_port", "slot": "02.0", "vendor": 0x1B36, "device": 0xC, "acs": True, "devices": [
            switch([dn("00.0", [ep]), dn("01.0", [ep]),
                    dn("02.0", [switch([dn("00.0", [ep]), dn("01.0", [])])]),
                    dn("03.0", [ep]), dn("03.1", [ep])])]},
        {"kind": "root_port", "slot": "03.0", "vendor": 0x1B36, "device": 0xC, "devices": [
            switch([dn("00.0", [ep]), dn("01.0", [ep])])]}]}]}
    m = Platform.from_dict(desc, "<b-switch>").boot()
    assert bus_numbers(m) == {
        "00:02.0": (0x00, 0x01, 0x0A), "00:03.0": (0x00, 0x0B, 0x0E), "01:00.0": (0x01, 0x02, 0x0A),
        "02:00.0": (0x02, 0x03, 0x03), "02:01.0": (0x02, 0x04, 0x04), "02:02.0": (0x02, 0x05, 0x08),
        "02:03.0": (0x02, 0x09, 0x09), "02:03.1": (0x02, 0x0A, 0x0A), "05:00.0": (0x05, 0x06, 0x08),
        "06:00.0": (0x06, 0x07, 0x07), "06:01.0": (0x06, 0x08, 0x08), "0b:00.0": (0x0B, 0x0C, 0x0E),
        "0c:00.0": (0x0C, 0x0D, 0x0D), "0c:01.0": (0x0C, 0x0E, 0x0E)}


def test_bar_sizes_found_by_sizing_are_the_configured_ones(qemu: Machine) -> None:
    recs = {r.name: {x.kind: x.size for x in r.resources} for r in qemu.enumeration.records()}
    assert recs["0000:03:00.0"] == {"BAR1": 0x1000, "BAR4": 0x4000}
    assert recs["0000:00:05.0"] == {"BAR0": 0x20, "BAR1": 0x1000, "BAR4": 0x4000}
    assert recs["0000:07:00.0"] == {"BAR0": 0x4000, "VF BAR0": 2 * 0x4000}      # TotalVFs * per-VF size
    assert recs["0000:07:00.1"] == {"BAR0": 0x4000}
    assert recs["0000:05:00.0"]["BAR0"] == 0x100


def single_port(*fns: tuple[int, PcieEndpoint], ari_fwd: bool = True) -> tuple[Topology, RootPort]:
    t = Topology()
    rc = t.add_host_bridge(0, 0, 0xFF, APERTURES)
    rp = rc.root.attach(regs.devfn(1, 0), RootPort(0x8086, 0x2030, express={"ari_forwarding": ari_fwd}))
    assert isinstance(rp, RootPort) and rp.secondary is not None
    for devfn, fn in fns:
        rp.secondary.attach(devfn, fn)
    return t, rp


def test_firmware_bus_numbers_are_kept_and_broken_ones_renumbered() -> None:
    t, _rp = single_port((0, PcieEndpoint(0x1AF4, 0x1044, 0xFF00)))
    t.config_write(0, 0, 8, regs.PRIMARY_BUS, 4, 0x00121000)       # firmware: secondary 10, subordinate 12
    e = enumerate_topology(t)
    assert [d.name for d in e.devices] == ["0000:00:01.0", "0000:10:00.0"]    # pass 0 keeps them
    t2, rp2 = single_port((0, PcieEndpoint(0x1AF4, 0x1044, 0xFF00)))
    t2.config_write(0, 0, 8, regs.PRIMARY_BUS, 4, 0x00030507)      # secondary above subordinate: broken
    e2 = enumerate_topology(t2)
    assert [d.name for d in e2.devices] == ["0000:00:01.0", "0000:01:00.0"]
    assert rp2.bus_numbers == (0, 1, 1)


def ari_functions(with_ari: bool) -> list[tuple[int, PcieEndpoint]]:
    chain = {0: 3, 3: 9, 9: 0}
    return [(f, PcieEndpoint(0x8086, 0x1572, 0x020000, multifunction=True,
                             ext_caps=[AriCap(next_fn=chain[f])] if with_ari else [])) for f in (0, 3, 9)]


def test_ari_next_function_chain_is_followed() -> None:
    t, rp = single_port(*ari_functions(True))
    e = enumerate_topology(t)
    assert [d.name for d in e.devices] == ["0000:00:01.0", "0000:01:00.0", "0000:01:00.3", "0000:01:01.1"]
    assert rp.ari_forwarding()
    # Without ARI on function 0 the port does not forward ARI, and function 9 ("device 1") is unreachable.
    t2, rp2 = single_port(*ari_functions(False))
    e2 = enumerate_topology(t2)
    assert [d.name for d in e2.devices] == ["0000:00:01.0", "0000:01:00.0", "0000:01:00.3"]
    assert not rp2.ari_forwarding()


def sriov_pf(total: int, offset: int, stride: int, vf_bars: list[int]) -> PcieEndpoint:
    pf = PcieEndpoint(0x8086, 0x1572, 0x020000, bars=[Bar(0, "mem64", 0x100000, True)],
                      ext_caps=[AriCap(), SriovCap(total, 0x154C, offset, stride, vf_bars=vf_bars)])
    install_sriov(pf, VfSpec(0x020000, ext_caps=lambda: [AriCap()]))
    return pf


def test_sriov_reserves_bus_numbers_and_vfs_land_on_the_next_bus() -> None:
    pf = sriov_pf(total=8, offset=0xFC, stride=1, vf_bars=[0x4000])
    t, rp = single_port((0, pf))
    e = enumerate_topology(t)
    # compute_max_vf_buses(): VFs 4..7 sit on bus 02, so the port's subordinate covers it.
    assert rp.bus_numbers == (0, 1, 2)
    dev = e.find("0000:01:00.0")
    vfs = e.enable_sriov(dev, 8)
    assert [v.name for v in vfs] == ["0000:01:1f.4", "0000:01:1f.5", "0000:01:1f.6", "0000:01:1f.7",
                                     "0000:02:00.0", "0000:02:00.1", "0000:02:00.2", "0000:02:00.3"]
    assert all(v.vendor == 0x8086 and v.device == 0x154C and v.read(0, 4) == 0xFFFFFFFF for v in vfs)
    # VF BARs are carved from the PF's VF BAR: VF n at base + n * per-VF size, programmed in the capability.
    base = dev.resources[7].start
    assert base and dev.read(dev.sriov.pos + 0x24, 4) & ~0xF == base & 0xFFFFFFFF  # type: ignore[union-attr]
    assert [v.resources[0].start for v in vfs] == [base + n * 0x4000 for n in range(8)]
    assert e.devices[-8:] == vfs
    with pytest.raises(VfiolabError, match="already enabled"):
        e.enable_sriov(dev, 2)
    e.disable_sriov(dev)
    assert t.find(0, 2, 0) is None and e.devices[-1].name == "0000:01:00.0"
    with pytest.raises(VfiolabError, match="TotalVFs"):
        e.enable_sriov(dev, 9)
    with pytest.raises(VfiolabError, match="not an SR-IOV PF"):
        e.enable_sriov(e.find("0000:00:01.0"), 1)


def test_sriov_needs_the_bus_range_linux_could_reserve() -> None:
    pf = sriov_pf(total=4, offset=0x100, stride=1, vf_bars=[0x4000])
    t, _rp = single_port((0, pf))
    t.config_write(0, 0, 8, regs.PRIMARY_BUS, 4, 0x00010100)       # firmware gave bus 01 only
    e = enumerate_topology(t)
    with pytest.raises(VfiolabError, match="out of range"):
        e.enable_sriov(e.find("0000:01:00.0"), 1)


def test_acs_is_left_alone_without_an_iommu() -> None:
    t = Topology()
    rc = t.add_host_bridge(0, 0, 0xFF, APERTURES)
    rc.root.attach(8, RootPort(0x8086, 0x2030, ext_caps=[AcsCap()]))
    off = enumerate_topology(t, EnumOptions(iommu=False)).find("0000:00:01.0")
    assert off.read(off.acs_cap + 6, 2) == 0
    t.reset()
    on = enumerate_topology(t, EnumOptions(iommu=True)).find("0000:00:01.0")
    assert on.read(on.acs_cap + 6, 2) == 0x1D


def test_config_sizes_follow_pci_cfg_space_size(qemu: Machine) -> None:
    sizes = {f.name[5:]: len(f.config) for f in qemu.snapshot()}
    assert sizes["00:00.0"] == 256                 # conventional host bridge: no extended space
    assert sizes["06:01.0"] == 256 and sizes["00:1f.2"] == 256
    assert sizes["00:02.0"] == 4096 and sizes["07:00.1"] == 4096


def test_driver_enable_sets_command_bits_like_pci_enable_device(qemu: Machine) -> None:
    e = qemu.enumeration
    cmd = {d.name[5:]: d.read(regs.COMMAND, 2) & 7 for d in e.devices}
    io_mem_master = regs.COMMAND_IO | regs.COMMAND_MEMORY | regs.COMMAND_MASTER
    assert cmd["00:00.0"] == 0                      # host bridge: no driver
    assert cmd["00:1f.0"] == 0                      # described without a driver
    assert cmd["00:05.0"] == io_mem_master          # I/O + memory BARs
    assert cmd["03:00.0"] == regs.COMMAND_MEMORY | regs.COMMAND_MASTER
    assert cmd["05:00.0"] == regs.COMMAND_MEMORY | regs.COMMAND_IO | regs.COMMAND_MASTER   # pci_enable_bridge
    assert cmd["07:00.1"] == 0                      # VFs: no driver asked for
    # pcibios_set_master(): conventional devices get latency timer 64.
    assert e.find("0000:06:01.0").read(regs.LATENCY_TIMER, 1) == 64


def test_a_switch_without_acs_keeps_its_ports_apart_only_by_enumeration_order() -> None:
    t = Topology()
    rc = t.add_host_bridge(0, 0, 0xFF, APERTURES)
    rp = rc.root.attach(8, RootPort(0x8086, 0x2030))
    assert rp.secondary is not None
    up = rp.secondary.attach(0, SwitchUpstreamPort(0x10B5, 0x8747))
    assert up.secondary is not None
    for d in range(3):
        port = up.secondary.attach(regs.devfn(d, 0), SwitchDownstreamPort(0x10B5, 0x8747))
        assert port.secondary is not None
        port.secondary.attach(0, PcieEndpoint(0x144D, 0xA80A, 0x010802, bars=[Bar(0, "mem64", 0x4000)]))
    e = enumerate_topology(t)
    assert [d.name[5:] for d in e.devices] == ["00:01.0", "01:00.0", "02:00.0", "02:01.0", "02:02.0",
                                               "03:00.0", "04:00.0", "05:00.0"]


def test_sysfs_resource_lines_have_linux_flags(qemu: Machine) -> None:
    funcs = {f.name[5:]: f for f in qemu.snapshot()}
    # Flags as the capture g-real-peers shows them in sysfs `resource` (addresses there are SeaBIOS's).
    vf = funcs["07:00.1"].resources
    assert vf is not None and len(vf) == 13 and vf[0][2] == 0x140204 and vf[1:] == [(0, 0, 0)] * 12
    ep = funcs["03:00.0"].resources
    assert ep is not None and [r[2] for r in ep[:6]] == [0, 0x40200, 0, 0, 0x14220C, 0]
    rp = funcs["00:02.0"].resources
    assert rp is not None and len(rp) == 17 and [r[2] for r in rp[13:16]] == [0x100, 0x200, 0x102201]
    assert rp[0][1] - rp[0][0] + 1 == 0x1000 and rp[0][2] == 0x40200


def test_sriov_on_the_root_bus_and_behind_a_switch_like_linux() -> None:
    # Capture e-sriov (Linux 7.2 on QEMU): an RCiEP PF on the root bus (no port above: no ARI
    # hierarchy), a PF below a root port and one below a switch port (ARI Forwarding only where an ARI
    # device 0 sits), VFs added after boot in the order sriov_numvfs was written.
    def nvme(kind: str, vfs: int) -> dict[str, Any]:
        return {"kind": kind, "slot": "00.0", "vendor": 0x1B36, "device": 0x10, "class": 0x010802, "ari": True,
                "bars": [{"index": 0, "type": "mem64", "size": "16K"}],
                "sriov": {"total_vfs": vfs, "num_vfs": vfs, "vf_device": 0x10, "vf_ext_caps": ["ari"],
                          "vf_bars": [{"size": "16K", "prefetch": False}]}}

    rp = {"kind": "root_port", "vendor": 0x1B36, "device": 0xC, "acs": True}
    rng = {"kind": "endpoint", "slot": "00.0", "vendor": 0x1AF4, "device": 0x1044, "class": 0xFF00}
    desc = {"host_bridges": [{"apertures": [{"type": "mem", "start": 0x80000000, "end": 0xFEBFFFFF}],
                              "devices": [
        {"kind": "host_bridge", "slot": "00.0", "vendor": 0x8086, "device": 0x29C0},
        {**rp, "slot": "02.0", "devices": [nvme("endpoint", 4)]},
        {**rp, "slot": "03.0", "devices": [{"kind": "switch", "slot": "00.0",
                                            "upstream": {"vendor": 0x104C, "device": 0x8232},
                                            "ports": [{"slot": "00.0", "vendor": 0x104C, "device": 0x8233,
                                                       "devices": [nvme("endpoint", 2)]},
                                                      {"slot": "01.0", "vendor": 0x104C, "device": 0x8233,
                                                       "devices": [rng]}]}]},
        {**nvme("rciep", 2), "slot": "04.0"}]}]}
    m = Platform.from_dict(desc, "<e-sriov>").boot()
    e = m.enumeration
    assert [d.name[5:] for d in e.devices] == [
        "00:00.0", "00:02.0", "00:03.0", "00:04.0", "01:00.0", "02:00.0", "03:00.0", "03:01.0", "04:00.0",
        "05:00.0", "00:04.1", "00:04.2", "01:00.1", "01:00.2", "01:00.3", "01:00.4", "04:00.1", "04:00.2"]
    assert bus_numbers(m)["00:03.0"] == (0, 2, 5)
    ari = {n: e.find(f"0000:{n}").read(e.find(f"0000:{n}").pcie_cap + 0x28, 2) & 0x20
           for n in ("00:02.0", "00:03.0", "03:00.0", "03:01.0")}
    assert ari == {"00:02.0": 0x20, "00:03.0": 0, "03:00.0": 0x20, "03:01.0": 0}
    iovctl = {n: e.find(f"0000:{n}").read(e.find(f"0000:{n}").sriov.pos + 8, 2)  # type: ignore[union-attr]
              for n in ("00:04.0", "01:00.0", "04:00.0")}
    assert iovctl == {"00:04.0": 0x09, "01:00.0": 0x19, "04:00.0": 0x19}   # ARIHierarchy only below a port


def test_conventional_and_subtractive_bridges_number_like_linux() -> None:
    # Capture c-pci-bridges (Linux 7.2 on QEMU): PCIe-to-PCI bridges, conventional PCI-to-PCI bridges
    # (nested and on the root bus) and subtractive-decode 82801 bridges (prog-if 01).
    edu = {"kind": "pci", "vendor": 0x1234, "device": 0x11E8, "class": 0xFF00,
           "bars": [{"index": 0, "type": "mem32", "size": "1M"}]}
    rng = {"kind": "pci", "vendor": 0x1AF4, "device": 0x1005, "class": 0xFF00,
           "bars": [{"index": 0, "type": "io", "size": 32}]}

    def at(d: dict[str, Any], slot: str) -> dict[str, Any]:
        return {**d, "slot": slot}

    pcie_pci = {"kind": "pcie_pci_bridge", "vendor": 0x1B36, "device": 0xE}
    pci_pci = {"kind": "pci_bridge", "vendor": 0x1B36, "device": 0x1}
    dmi = {"kind": "pci_bridge", "vendor": 0x8086, "device": 0x244E, "class": 0x060401, "revision": 0x92}
    rp = {"kind": "root_port", "vendor": 0x1B36, "device": 0xC, "acs": True}
    desc = {"host_bridges": [{"apertures": [{"type": "io", "start": 0x1000, "end": 0xFFFF},
                                            {"type": "mem", "start": 0x80000000, "end": 0xFEBFFFFF}],
                              "devices": [
        {"kind": "host_bridge", "slot": "00.0", "vendor": 0x8086, "device": 0x29C0},
        {**rp, "slot": "02.0", "devices": [{**pcie_pci, "slot": "00.0", "devices": [
            at(edu, "01.0"), at(rng, "02.0"),
            {**pci_pci, "slot": "03.0", "devices": [at(edu, "01.0"), at(rng, "02.0")]}]}]},
        {**pcie_pci, "slot": "03.0", "devices": [at(edu, "01.0")]},
        {**pci_pci, "slot": "04.0", "devices": [at(rng, "01.0"), at(edu, "02.0")]},
        {**rp, "slot": "05.0", "devices": [{**dmi, "slot": "00.0", "devices": [at(edu, "01.0")]}]},
        {**dmi, "slot": "1e.0", "devices": [at(rng, "01.0")]}]}]}
    m = Platform.from_dict(desc, "<c-pci-bridges>").boot()
    assert not m.enumeration.unassigned
    assert [d.name[5:] for d in m.enumeration.devices] == [
        "00:00.0", "00:02.0", "00:03.0", "00:04.0", "00:05.0", "00:1e.0", "01:00.0", "02:01.0", "02:02.0",
        "02:03.0", "03:01.0", "03:02.0", "04:01.0", "05:01.0", "05:02.0", "06:00.0", "07:01.0", "08:01.0"]
    assert bus_numbers(m) == {
        "00:02.0": (0, 1, 3), "00:03.0": (0, 4, 4), "00:04.0": (0, 5, 5), "00:05.0": (0, 6, 7),
        "00:1e.0": (0, 8, 8), "01:00.0": (1, 2, 3), "02:03.0": (2, 3, 3), "06:00.0": (6, 7, 7)}
    assert m.enumeration.find("0000:00:1e.0").transparent


def tree(draw: Any, depth: int) -> list[dict[str, Any]]:
    """Random devices for one bus: endpoints, multi-function devices, switches, PCIe-to-PCI bridges."""
    from hypothesis import strategies as st

    n = draw(st.integers(1, 3))
    out: list[dict[str, Any]] = []
    for _ in range(n):
        kind = draw(st.sampled_from(["ep", "mf", "switch", "pcie_pci"] if depth < 3 else ["ep", "mf"]))
        ep = {"kind": "endpoint", "vendor": 0x1AF4, "device": 0x1044, "class": 0xFF00,
              "bars": [{"index": 0, "type": "mem32", "size": "4K"}]}
        if kind == "ep":
            out.append([ep])
        elif kind == "mf":
            out.append([{**ep, "slot": f"00.{f}"} for f in range(draw(st.integers(2, 4)))])
        elif kind == "switch":
            ports = [{"slot": f"{p:02x}.0", "vendor": 0x10B5, "device": 0x8747,
                      "devices": [{**d, "slot": d.get("slot", "00.0")} for d in draw_one(draw, depth + 1)]}
                     for p in range(draw(st.integers(1, 3)))]
            out.append([{"kind": "switch", "upstream": {"vendor": 0x10B5, "device": 0x8747}, "ports": ports}])
        else:
            conv = [{"kind": "pci", "slot": f"{d:02x}.0", "vendor": 0x8086, "device": 0x107C, "class": 0x20000}
                    for d in range(1, draw(st.integers(1, 3)) + 1)]
            out.append([{"kind": "pcie_pci_bridge", "vendor": 0x1A03, "device": 0x1150, "devices": conv}])
    return out  # type: ignore[return-value]


def draw_one(draw: Any, depth: int) -> list[dict[str, Any]]:
    """What sits behind one port: one device (possibly multi-function)."""
    return tree(draw, depth)[0]  # type: ignore[return-value]


def test_random_trees_enumerate_depth_first_and_route_back() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=25, deadline=None)
    @given(st.data())
    def check(data: Any) -> None:
        groups = tree(data.draw, 0)
        devices = [{"kind": "host_bridge", "slot": "00.0", "vendor": 0x8086, "device": 0x29C0}]
        for i, behind in enumerate(groups):
            devices.append({"kind": "root_port", "slot": f"{i + 1:02x}.0", "vendor": 0x8086, "device": 0x2030,
                            "devices": [{**d, "slot": d.get("slot", "00.0")} for d in behind]})
        m = Platform.from_dict({"host_bridges": [{"apertures": [
            {"type": "mem", "start": 0x80000000, "end": 0xFEBFFFFF}], "devices": devices}]}).boot()
        e, topo = m.enumeration, m.topology
        assert not e.unassigned
        # Every function of the hardware is found exactly once, where routing finds it again.
        found = {(d.bus.number, d.devfn): d for d in e.devices}
        assert len(found) == len(e.devices) == sum(1 for _ in topo.walk())
        for (bus, devfn), d in found.items():
            assert topo.find(0, bus, devfn) is not None and d.read(0, 2) == d.vendor
        # Depth first: each bridge's secondary is the next free number, subordinate covers exactly its subtree.
        nxt = 1
        def visit(bus: Any) -> int:
            nonlocal nxt
            last = bus.number
            for d in bus.devices:
                if d.subordinate is not None:
                    assert d.subordinate.number == nxt
                    nxt += 1
                    sub = visit(d.subordinate)
                    assert d.read(regs.SUBORDINATE_BUS, 1) == sub == d.subordinate.busn_end
                    last = sub
            return last
        assert visit(e.root_buses[0]) == nxt - 1

    check()
