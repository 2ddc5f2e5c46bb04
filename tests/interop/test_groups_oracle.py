"""Linux 7.2 as the oracle for IOMMU groups: compute_groups() on the config bytes Linux saw must form exactly the
groups Linux formed, group for group and ID for ID.

The captures come from rig/build-groups-oracle.sh (``make rigs`` runs it before the tests): a Debian 7.2 kernel
booted under QEMU q35 + intel-iommu, one boot per topology in rig/groups_oracle/topologies/, cached under
$VFIOLAB_CACHE/groups-oracle/<kernel-version>/<topology>/.  A missing or stale cache fails (never skips).
The real lspci reads each captured dump to confirm the ACS facts the topology's header relies on.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from types import ModuleType

import pytest

from lspci_oracle import run_lspci
from vfiolab.pci.dump import parse_dump

pytestmark = pytest.mark.interop

REPO = Path(__file__).resolve().parents[2]
TOPOLOGIES = REPO / "rig" / "groups_oracle" / "topologies"
CACHE = Path(os.environ.get("VFIOLAB_CACHE") or Path.home() / ".cache" / "vfiolab") / "groups-oracle"
REBUILD = "run `make rigs` (rig/build-groups-oracle.sh boots Linux under QEMU to capture it)"


def _kernel_version() -> str | None:
    """The kernel the cache was captured with (pinned by the rig in groups-oracle/kernel-version)."""
    f = CACHE / "kernel-version"
    return f.read_text().strip() if f.is_file() else None


KVER = _kernel_version()
TOPOS = sorted(TOPOLOGIES.glob("*.qemu"))
IDS = [f"{KVER or 'no-capture'}/{t.stem}" for t in TOPOS]


def _args(path: Path) -> list[str]:
    """A topology file's QEMU arguments (what the capture depends on; comments excluded)."""
    return [w for line in path.read_text().splitlines() if not line.lstrip().startswith("#") for w in line.split()]


def _header(path: Path, key: str) -> str:
    """The value of a ``# key: value`` header line of a topology file."""
    for line in path.read_text().splitlines():
        m = re.match(rf"#\s*{re.escape(key)}:\s*(.*)$", line)
        if m:
            return m.group(1).strip()
    raise AssertionError(f"{path.name} has no '# {key}:' header")


def _capture(topo: Path) -> Path:
    """The capture directory for ``topo``; fails with what to run when it is missing or stale."""
    if KVER is None:
        pytest.fail(f"no groups-oracle capture ({CACHE / 'kernel-version'} missing): {REBUILD}")
    d = CACHE / KVER / topo.stem
    for name in ("config.dump", "groups.json", "topology.qemu", "kernel.txt"):
        if not (d / name).is_file():
            pytest.fail(f"capture {d} is incomplete ({name} missing): {REBUILD}")
    if _args(d / "topology.qemu") != _args(topo):
        pytest.fail(f"capture {d} was made from an older {topo.name}: {REBUILD}")
    return d


def _linux_groups(d: Path) -> dict[int, list[str]]:
    return {g["id"]: sorted(g["devices"]) for g in json.loads((d / "groups.json").read_text())["groups"]}


def _side_by_side(linux: dict[int, list[str]], ours: dict[int, list[str]]) -> str:
    rows = []
    for gid in sorted(set(linux) | set(ours)):
        a, b = linux.get(gid, []), ours.get(gid, [])
        mark = "  " if a == b else "!!"
        rows.append(f"{mark} {gid:3}  linux: {' '.join(x[5:] for x in a) or '-':50}  "
                    f"ours: {' '.join(x[5:] for x in b) or '-'}")
    return "\n".join(rows)


@pytest.mark.parametrize("topo", TOPOS, ids=IDS)
def test_groups_match_linux(topo: Path) -> None:
    """Our groups for the captured config bytes equal Linux's /sys/kernel/iommu_groups (IDs included)."""
    d = _capture(topo)
    from vfiolab.pci.groups import compute_groups  # the [groups] model under test

    funcs = parse_dump((d / "config.dump").read_text(), str(d / "config.dump"))
    result = compute_groups(funcs)
    ours = {g.id: sorted(g.devices) for g in result.groups}
    linux = _linux_groups(d)
    if ours != linux:
        pytest.fail(f"IOMMU groups differ from Linux {KVER} on {topo.stem} (!! marks a differing group):\n"
                    + _side_by_side(linux, ours) + "\n\nour reasoning:\n" + "\n".join(result.explain()))


def _lspci_blocks(text: str) -> dict[str, str]:
    """Split ``lspci -vvv`` output into {"bb:dd.f": block}."""
    out: dict[str, str] = {}
    for block in text.strip().split("\n\n"):
        out[block.split(" ", 1)[0]] = block
    return out


_ACS_ON = re.compile(r"ACSCtl:\s+SrcValid\+ TransBlk. ReqRedir\+ CmpltRedir\+ UpstreamFwd\+")


@pytest.mark.parametrize("topo", TOPOS, ids=IDS)
def test_lspci_confirms_acs_facts(topo: Path) -> None:
    """The real lspci reads every captured function, and shows ACS SV+RR+CR+UF+ on exactly the header's list."""
    d = _capture(topo)
    dump = (d / "config.dump").read_text()
    blocks = _lspci_blocks(run_lspci(dump, "-vvv"))
    names = [f"{f.bus:02x}:{f.devfn >> 3:02x}.{f.devfn & 7:x}" for f in parse_dump(dump)]
    assert list(blocks) == names, "lspci does not list the captured functions in dump order"
    enabled = {n for n, b in blocks.items() if _ACS_ON.search(b)}
    want = set(_header(topo, "acs-enabled").split())
    assert enabled == want, (f"{topo.stem}: lspci shows ACS SV+ RR+ CR+ UF+ on {sorted(enabled)}, "
                             f"the topology relies on {sorted(want)}")
    for n in want:
        assert "Access Control Services" in blocks[n], f"{n}: no ACS capability in lspci -vvv"


def test_capture_kernel_is_7_2() -> None:
    """The model follows Linux 7.2: the oracle must be a 7.2 kernel, and each capture must name the same one."""
    if KVER is None:
        pytest.fail(f"no groups-oracle capture: {REBUILD}")
    assert KVER.startswith("7.2."), (f"captures were made with Linux {KVER}, not 7.2 (sid had no usable 7.2 "
                                     "kernel?); groups of another kernel are no oracle for this model")
    for topo in TOPOS:
        assert (_capture(topo) / "kernel.txt").read_text().strip() == KVER


# pci.md section 6: the groups published for real-peers.md section 2's command line (Linux 6.12.117 there).
PUBLISHED_REAL_PEERS = {
    0: ["00:00.0"], 1: ["00:02.0"], 2: ["00:02.1"], 3: ["00:02.2"], 4: ["00:05.0", "00:05.1"],
    5: ["00:1f.0", "00:1f.2", "00:1f.3"], 6: ["01:00.0"], 7: ["02:00.0", "03:00.0"],
    8: ["02:01.0", "04:00.0", "04:00.1"], 9: ["05:00.0", "06:01.0", "06:02.0"], 10: ["07:00.0"],
    11: ["07:00.1"], 12: ["07:00.2"],
}


def test_real_peers_topology_has_the_published_groups() -> None:
    """Linux 7.2 forms the same groups for real-peers.md section 2 as pci.md section 6 published."""
    d = _capture(TOPOLOGIES / "g-real-peers.qemu")
    linux = {gid: [x[5:] for x in devs] for gid, devs in _linux_groups(d).items()}
    assert linux == PUBLISHED_REAL_PEERS


def _parser() -> ModuleType:
    """rig/groups_oracle/parse_capture.py (a script, not a package module), loaded from its path."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("parse_capture", REPO / "rig/groups_oracle/parse_capture.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, mod)   # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def test_capture_parser_rejects_damaged_captures() -> None:
    """A guest that died mid-way, or a lost console line, is an error naming the place, never a short dump."""
    raw = (_capture(TOPOLOGIES / "g-real-peers.qemu") / "capture.txt").read_text()
    pc = _parser()
    assert [f.name for f in pc.parse_capture(raw).functions][:2] == ["0000:00:00.0", "0000:00:02.0"]
    with pytest.raises(pc.CaptureError, match="truncated"):
        pc.parse_capture(raw[: len(raw) // 2])
    lines = raw.split("\n")
    gap = next(i for i, ln in enumerate(lines) if ln.startswith("000100 "))
    with pytest.raises(pc.CaptureError, match=r"0000:00:02\.0: expected od data at offset 0x100"):
        pc.parse_capture("\n".join(lines[:gap] + lines[gap + 1:]))
