"""Platform descriptions: the built-in default (its shape, real IDs, the real lspci reading every function,
IOMMU groups), example files, YAML errors that name the path, generated fabrics."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from lspci_oracle import run_lspci
from vfiolab.errors import VfiolabError
from vfiolab.pci.dump import format_dump
from vfiolab.platform import Platform, generate_fabric, snapshot

PLATFORMS = Path(__file__).resolve().parents[2] / "src" / "vfiolab" / "platforms"
PCI_IDS = "/usr/share/misc/pci.ids"


def pci_ids() -> set[tuple[int, int]]:
    ids, vendor = set(), -1
    with open(PCI_IDS, encoding="utf-8", errors="replace") as f:
        for line in f:
            if m := re.match(r"^([0-9a-f]{4})  ", line):
                vendor = int(m.group(1), 16)
            elif m := re.match(r"^\t([0-9a-f]{4})  ", line):
                ids.add((vendor, int(m.group(1), 16)))
            elif line.startswith("C "):
                break
    return ids


@pytest.fixture(scope="module")
def default() -> list:  # type: ignore[type-arg]
    return snapshot()


def test_default_snapshot_shape(default: list) -> None:  # type: ignore[type-arg]
    names = [f.name for f in default]
    assert len(names) == len(set(names)) == 44
    # Probe order: host bridges by root bus, each bus's devices then its child buses; VFs after boot, last.
    assert names[:2] == ["0000:00:00.0", "0000:00:04.0"]
    assert names.index("0000:17:00.0") > names.index("0000:03:00.0")
    assert names[-4:] == ["0000:1d:02.0", "0000:1d:02.1", "0000:1d:02.2", "0000:1d:02.3"]
    assert all(len(f.config) in (256, 4096) for f in default)
    assert {len(f.config) for f in default if f.name in ("0000:00:1f.0", "0000:02:00.0")} == {256}
    vf = default[-1].config
    assert vf[:4] == b"\xff\xff\xff\xff"                                   # VFs read ffff:ffff


def test_default_ids_exist_in_pci_ids(default: list) -> None:  # type: ignore[type-arg]
    known = pci_ids()
    ids = {(int.from_bytes(f.config[0:2], "little"), int.from_bytes(f.config[2:4], "little")) for f in default}
    ids.discard((0xFFFF, 0xFFFF))
    assert ids and ids <= known, ids - known


def test_real_lspci_reads_the_default_platform(default: list) -> None:  # type: ignore[type-arg]
    text = "".join(format_dump(f.domain, f.bus, f.devfn, f.config) for f in default)
    tree = run_lspci(text, "-t")
    assert "[0000:17]" in tree and "[0000:3a]" in tree
    out = run_lspci(text, "-vv")
    assert out.count("\n\n") == len(default)
    assert "Access Control Services" in out and "Single Root I/O Virtualization (SR-IOV)" in out
    assert "IOVCtl:\tEnable+ Migration- Interrupt- MSE+ ARIHierarchy+" in out
    assert "Number of VFs: 4" in out
    assert "<unassigned>" not in out.replace("Region 1: Memory at <unassigned>", "").replace(
        "Region 2: Memory at <unassigned>", "").replace("Region 4: Memory at <unassigned>", "")


def test_default_platform_groups(default: list) -> None:  # type: ignore[type-arg]
    from vfiolab.pci.groups import compute_groups

    groups = {tuple(g.devices) for g in compute_groups(default).groups}
    # The switch ports lack ACS: each port groups with its endpoint; the GPU's functions stay together.
    assert ("0000:19:08.0", "0000:1a:00.0") in groups
    assert ("0000:19:10.0", "0000:1c:00.0", "0000:1c:00.1", "0000:1c:00.2", "0000:1c:00.3") in groups
    # Behind the PCIe-to-PCI bridge everything is one group (requester ID aliasing).
    assert ("0000:01:00.0", "0000:02:00.0", "0000:02:02.0") in groups
    assert ("0000:1d:02.0",) in groups                                       # a VF is its own group


@pytest.mark.parametrize("name", sorted(p.name for p in PLATFORMS.glob("*.yaml")))
def test_example_platforms_boot_cleanly(name: str) -> None:
    m = Platform.load(PLATFORMS / name).boot()
    assert m.enumeration.devices and not m.enumeration.unassigned and not m.enumeration.notes
    assert m.spec(0, 0, 0) is not None


def write(tmp_path: Path, text: str) -> str:
    p = tmp_path / "p.yaml"
    p.write_text(text)
    return os.fspath(p)


ROOT = """host_bridges:
  - apertures: [{type: mem, start: 0x80000000, end: 0x8fffffff}]
    devices:
"""


@pytest.mark.parametrize(("body", "message"), [
    ("      - {kind: endpoint, slot: '00.0', device: 1, class: 0}",
     r"host_bridges\[0\]\.devices\[0\]: missing vendor"),
    ("      - {kind: endpoint, slot: '00.9', vendor: 1, device: 1, class: 0}",
     r"devices\[0\]\.slot: '00\.9': device must be 00-1f and function 0-7"),
    ("      - {kind: toaster, slot: '00.0'}", r"devices\[0\]\.kind: 'toaster' is not one of"),
    ("      - {kind: endpoint, slot: '00.0', vendor: 1, device: 1, class: 0, colour: red}",
     r"devices\[0\]\.colour: unknown key"),
    ("      - {kind: endpoint, slot: '00.0', vendor: 1, device: 1, class: 0, bars: [{index: 0, size: 12K}]}",
     r"devices\[0\]: BAR 0: size 0x3000 is not a power of two"),
    ("      - {kind: endpoint, slot: '00.0', vendor: 1, device: 1, class: 0, bars: [{index: 0, size: lots}]}",
     r"devices\[0\]\.bars\[0\]\.size: 'lots' is not a size"),
    ("      - {kind: endpoint, slot: '00.0', vendor: 1, device: 1, class: 0, caps: [warp]}",
     r"devices\[0\]\.caps\[0\]: unknown capability 'warp'"),
    ("      - {kind: endpoint, slot: '00.0', vendor: 1, device: 1, class: 0, caps: [aer]}",
     r"devices\[0\]\.caps\[0\]: aer is an extended capability: list it under ext_caps"),
    ("      - {kind: endpoint, slot: '00.0', vendor: 1, device: 1, class: 0, caps: [{msi: {vectors: 3}}]}",
     r"devices\[0\]\.caps\[0\]\.msi: bad parameters for msi"),
    ("      - {kind: endpoint, slot: '00.0', vendor: 1, device: 1, class: 0, hotplug: true}",
     r"devices\[0\]\.hotplug: unknown key"),
    (("      - {kind: endpoint, slot: '00.0', vendor: 1, device: 1, class: 0}\n"
     "      - {kind: endpoint, slot: '00.0', vendor: 1, device: 2, class: 0}"),
     r"devices\[1\]: slot 00\.0 already used by devices\[0\]"),
    (("      - {kind: root_port, slot: '01.0', vendor: 1, device: 1, devices: "
     "[{kind: endpoint, slot: '01.0', vendor: 1, device: 1, class: 0}]}"),
     r"devices\[0\]\.devices\[0\]: a PCIe port's link carries device 0 only"),
    (("      - {kind: endpoint, slot: '00.0', vendor: 1, device: 1, class: 0, "
     "sriov: {total_vfs: 4, num_vfs: 9, vf_device: 2}}"),
     r"devices\[0\]\.sriov\.num_vfs: 0x9 outside 0x0\.\.0x4"),
    (("      - {kind: pcie_pci_bridge, slot: '00.0', vendor: 1, device: 1, devices: "
     "[{kind: endpoint, slot: '00.0', vendor: 1, device: 1, class: 0}]}"),
     r"devices\[0\]\.devices\[0\]: .*cannot sit on a conventional PCI bus"),
])
def test_description_errors_name_the_yaml_path(tmp_path: Path, body: str, message: str) -> None:
    path = write(tmp_path, ROOT + body + "\n")
    with pytest.raises(VfiolabError, match=message) as info:
        Platform.load(path).build()
    assert str(info.value).startswith(path)


def test_file_and_syntax_errors(tmp_path: Path) -> None:
    with pytest.raises(VfiolabError, match="cannot read platform description"):
        Platform.load(tmp_path / "missing.yaml")
    with pytest.raises(VfiolabError, match=r"p\.yaml:\d+:\d+: not valid YAML"):
        Platform.load(write(tmp_path, "name: x\nhost_bridges: [ {\n"))
    with pytest.raises(VfiolabError, match="missing host_bridges"):
        Platform.load(write(tmp_path, "name: x\n"))
    with pytest.raises(VfiolabError, match=r"host_bridges\[1\]: segment 0000: bus range \[00-ff\] overlaps"):
        Platform.load(write(tmp_path, "host_bridges: [{}, {}]\n")).build()


def test_snapshot_of_a_file_and_sizes_in_words(tmp_path: Path) -> None:
    path = write(tmp_path, ROOT + "      - {kind: endpoint, slot: '00.0', vendor: 0x8086, device: 0x1533, "
                 "class: 0x020000, bars: [{index: 0, type: mem32, size: 1 MiB}, {index: 3, size: '16K'}]}\n")
    funcs = snapshot(path)
    assert [f.name for f in funcs] == ["0000:00:00.0"]
    assert funcs[0].config[4] & 0x6 == 0x6             # a driver bound: Memory Space + Bus Master
    bars = [int.from_bytes(funcs[0].config[0x10 + 4 * i:0x14 + 4 * i], "little") for i in (0, 3)]
    assert bars == [0x80000000, 0x80100000]


@pytest.mark.parametrize("n", [1, 100, 700])
def test_generated_fabric_has_at_least_n_functions(n: int) -> None:
    p = generate_fabric(n)
    funcs = p.boot().snapshot()
    assert n <= len(funcs) < n + 20          # at most one more leaf than asked
    with pytest.raises(VfiolabError):
        generate_fabric(0)


EP = "{kind: endpoint, slot: '00.0', vendor: 1, device: 1, class: 0}"


def _chain(n: int) -> str:
    """n PCI-to-PCI bridges nested one in the other, a conventional device at the bottom."""
    inner = "{kind: pci, slot: '01.0', vendor: 1, device: 1, class: 0}"
    for _ in range(n):
        inner = f"{{kind: pci_bridge, slot: '01.0', vendor: 1, device: 1, devices: [{inner}]}}"
    return f"      - {inner}"


@pytest.mark.parametrize(("text", "message"), [
    ("name: a\nname: b\nhost_bridges: []\n", r"p\.yaml:2:1: not valid YAML: key 'name' given twice \(first on line 1\)"),
    ("name: [1]\nhost_bridges: []\n", r"p\.yaml: name: expected a string, got \[1\]"),
    ("name: \xff\n", r"p\.yaml:1: not valid YAML: byte 0xff is not UTF-8"),  # written as latin-1 below
    (ROOT + "      - {kind: endpoint, slot: '00.0', vendor: 1, device: 1, class: 0, caps: [{msi: {vector: 4}}]}\n",
     r"devices\[0\]\.caps\[0\]\.msi\.vector: unknown msi parameter \(known: vectors, addr64, per_vector_mask\)"),
    (ROOT + "      - {kind: root_port, slot: '01.0', vendor: 1, device: 1, acs: {cap: x}}\n",
     r"devices\[0\]\.acs\.cap: expected int, got 'x'"),
    (ROOT + "      - {kind: endpoint, slot: '00.0', vendor: 1, device: 1, class: 0, express: {flr: 1}}\n",
     r"devices\[0\]\.express\.flr: expected bool, got 1"),
    (ROOT + "      - {kind: root_port, slot: '01.0', vendor: 1, device: 1, express: {slot: {numbr: 3}}}\n",
     r"devices\[0\]\.express\.slot\.numbr: unknown express slot parameter"),
    (ROOT + "      - {kind: root_port, slot: '01.0', vendor: 1, device: 1, devices: [{kind: switch, slot: '00.0', "
     "upstream: {vendor: 1, device: 2}, ports: [{slot: '00.0', vendor: 1, device: 3}, "
     "{slot: '00.0', vendor: 1, device: 3}]}]}\n",
     r"devices\[0\]\.devices\[0\]\.ports\[1\]: slot 00\.0 already used by ports\[0\]"),
    (ROOT.replace("  - apertures", "  - buses: [0, 0]\n    apertures")
     + f"      - {{kind: root_port, slot: '01.0', vendor: 1, device: 1, devices: [{EP}]}}\n",
     (r"host_bridges\[0\]\.devices\[0\]: no bus number left for the bus behind this bridge: it is bridge number 1 "
      r"in Linux's depth-first numbering, and host_bridges\[0\] has buses 00-00")),
    (ROOT + _chain(256) + "\n", r"\.devices\[0\]: no bus number left .* bridge number 256 .* buses 00-ff"),
])
def test_more_description_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_bytes(text.encode("latin-1" if "\xff" in text else "utf-8"))
    import sys
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 20000))     # as the CLI does, for the 256-deep chain
    with pytest.raises(VfiolabError, match=message):
        Platform.load(path)


@pytest.mark.parametrize(("body", "message"), [
    (("      - {kind: endpoint, slot: '00.0', vendor: 1, device: 1, class: 0x020000, "
      "bars: [{index: 0, type: mem32, size: 1G}]}"),
     r"host_bridges\[0\]\.devices\[0\]\.bars\[0\]: 0000:00:00\.0 BAR 0 \(mem32, 0x40000000 bytes\) got no address"),
    ("      - {kind: pci, slot: '01.1', vendor: 1, device: 1, class: 0}",
     r"devices\[0\]: not found when Linux enumerates the machine: its slot has no function 0"),
    (("      - {kind: pci, slot: '01.0', vendor: 1, device: 1, class: 0, multifunction: false}\n"
      "      - {kind: pci, slot: '01.1', vendor: 1, device: 1, class: 0}"),
     r"devices\[1\]: not found .*: function 0 of its slot is not multi-function"),
])
def test_a_machine_that_does_not_come_up_as_described_is_an_error(tmp_path: Path, body: str, message: str) -> None:
    path = write(tmp_path, ROOT + body + "\n")
    Platform.load(path).boot()              # Linux boots it; the description asked for more
    with pytest.raises(VfiolabError, match=message):
        snapshot(path)


def test_bars_linux_leaves_alone_are_no_error(tmp_path: Path) -> None:
    """setup-bus.c pdev_sort_resources() skips host bridges and classless devices: no address, no error."""
    path = write(tmp_path, ROOT + "      - {kind: host_bridge, slot: '00.0', vendor: 1, device: 1, "
                 "bars: [{index: 0, size: 1G}]}\n")
    (f,) = snapshot(path)
    assert f.config[0x10:0x14] == b"\0\0\0\0"


def test_the_longest_bridge_chain_fits(tmp_path: Path) -> None:
    """254 nested bridges use buses 01-fe: Linux and we enumerate all of them."""
    import sys
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 20000))
    path = write(tmp_path, ROOT + _chain(254) + "\n")
    funcs = snapshot(path)
    assert len(funcs) == 255 and funcs[-1].bus == 0xFE
