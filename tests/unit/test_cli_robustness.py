"""Bad input through the real entry point (vfiolab.cli.main.main): random and mutated dumps, random YAML
platforms and scenario files, random -s selectors.  Every run must end with status 0, 1 or 2, never an
exception or a traceback, and a status-1 run with exactly one ``vfiolab:`` line on stderr.  Mutated dumps
are also given to the real lspci: what it refuses we refuse, and where both read a dump the listings agree.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
from contextlib import redirect_stderr, redirect_stdout
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lspci_oracle import LSPCI
from vfiolab.cli.main import main
from vfiolab.pci.dump import format_dump

sys.setrecursionlimit(max(sys.getrecursionlimit(), 20000))    # what main() sets, before hypothesis looks
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _cfg(vendor: int, device: int, cls: int, htype: int = 0, buses: tuple[int, int, int] = (0, 0, 0)) -> bytes:
    cfg = bytearray(256)
    cfg[0:4] = (device << 16 | vendor).to_bytes(4, "little")
    cfg[0x08:0x0C] = (cls << 8 | 0x01).to_bytes(4, "little")
    cfg[0x0E] = htype
    if htype == 1:
        cfg[0x18:0x1B] = bytes(buses)
    return bytes(cfg)


BASE = "".join([
    format_dump(0, 0, 0x00, _cfg(0x8086, 0x29C0, 0x060000), "Host bridge"),
    format_dump(0, 0, 0x10, _cfg(0x8086, 0x2030, 0x060400, 1, (0, 1, 1)), "PCI bridge"),
    format_dump(0, 1, 0x00, _cfg(0x8086, 0x10C9, 0x020000), "Ethernet controller"),
    format_dump(0, 1, 0x01, _cfg(0x8086, 0x10C9, 0x020000)[:64], "Ethernet controller"),
])
LSPCI_ARGS = [[], ["-n"], ["-nn", "-v"], ["-vvv"], ["-x"], ["-xxx"], ["-xxxx"], ["-t"], ["-tv"], ["-m"],
              ["-mm", "-D"], ["--json"], ["-s", "1:"], ["-s", "00.0"]]
# Characters that matter to lib/dump.c, and some that do not.
ALPHABET = st.sampled_from(list("0123456789abcdefABCDEF:. \n\r\t\x00xyz\xff-*") + ["\udcff", "é"])


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """main(argv) with stdout and stderr captured; an exception escaping main fails the test."""
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="surrogateescape", write_through=True)
    err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="surrogateescape", write_through=True)
    with redirect_stdout(out), redirect_stderr(err):
        status = main(argv)
    text = [s.buffer.getvalue().decode("utf-8", "surrogateescape") for s in (out, err)]  # type: ignore[attr-defined]
    return status, text[0], text[1]


def check_run(argv: list[str]) -> tuple[int, str, str]:
    status, out, err = run_cli(argv)
    assert status in (0, 1, 2), (argv, status, err)
    assert "Traceback" not in err, err
    if status == 1:
        assert err.endswith("\n") and err.splitlines()[-1].startswith("vfiolab: "), err
        assert sum(1 for line in err.splitlines() if line.startswith("vfiolab: ")
                   and not line.startswith("vfiolab: warning: ")) == 1, err
    if status == 2:
        assert "Error: " in err, err
    return status, out, err


@st.composite
def mutated_dump(draw: st.DrawFn) -> bytes:
    """BASE with a few random edits: characters inserted, deleted or replaced, lines duplicated, cut."""
    text = BASE
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["insert", "delete", "replace", "dupline", "cut"]))
        if op == "insert":
            text = text[:pos] + draw(st.text(ALPHABET, min_size=1, max_size=8)) + text[pos:]
        elif op == "delete":
            text = text[:pos] + text[pos + draw(st.integers(1, 40)):]
        elif op == "replace" and pos < len(text):
            text = text[:pos] + draw(ALPHABET) + text[pos + 1:]
        elif op == "dupline":
            lines = text.split("\n")
            i = draw(st.integers(0, len(lines) - 1))
            text = "\n".join(lines[:i + 1] + lines[i:])
        else:
            text = text[:pos]
    return text.encode("utf-8", "surrogateescape")


def _write(data: bytes, suffix: str) -> str:
    fd, path = tempfile.mkstemp(suffix=suffix)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


@SETTINGS
@given(data=mutated_dump(), args=st.sampled_from(LSPCI_ARGS))
def test_mutated_dumps_through_the_cli(data: bytes, args: list[str]) -> None:
    path = _write(data, ".dump")
    try:
        check_run(["lspci", "-F", path, *args])
        check_run(["groups", "--dump", path, "--json"])
    finally:
        os.unlink(path)


@SETTINGS
@given(data=st.one_of(st.binary(max_size=600), st.text(ALPHABET, max_size=600).map(
    lambda t: t.encode("utf-8", "surrogateescape"))))
def test_random_bytes_through_the_cli(data: bytes) -> None:
    path = _write(data, ".dump")
    try:
        check_run(["lspci", "-F", path, "-vv"])
        check_run(["groups", "--dump", path])
        check_run(["groups", "--platform", path])
        check_run(["run", path, "--list"])            # --list wins, the file is not read
    finally:
        os.unlink(path)


@settings(max_examples=40, deadline=None)
@given(data=mutated_dump())
def test_mutated_dumps_agree_with_the_real_lspci(data: bytes) -> None:
    """Where lspci -F refuses a dump we refuse it; where both read it the -n listings are equal; where only
    lspci reads it, it is a dump lspci would read while dropping something without a word."""
    path = _write(data, ".dump")
    try:
        real = subprocess.run([LSPCI, "-F", path, "-n"], capture_output=True, check=False)
        status, out, err = check_run(["lspci", "-F", path, "-n"])
    finally:
        os.unlink(path)
    if real.returncode != 0:
        assert status == 1, (real.stderr, out)
    elif status == 0:
        assert out == real.stdout.decode("utf-8", "surrogateescape")
    else:
        assert any(why in err for why in ("would skip", "would ignore", "no PCI functions")), err


# ---------------------------------------------------------------------------- YAML
KEYS = ["name", "iommu", "realloc", "pci_mem_start", "host_bridges", "segment", "buses", "apertures", "devices",
        "kind", "slot", "devfn", "vendor", "device", "class", "bars", "index", "type", "size", "caps", "ext_caps",
        "express", "acs", "ari", "sriov", "total_vfs", "num_vfs", "vf_device", "upstream", "ports", "hotplug",
        "multifunction", "start", "end", "bogus"]
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-5, 300), st.sampled_from(
    [0, 1, 0xFF, 0x8086, 0x020000, 4096, "16K", "1G", "00.0", "01.0", "1f.7", "20.0", "endpoint", "root_port",
     "switch", "pci_bridge", "host_bridge", "mem", "io", "mem64", "msi", "aer", "x", "", 0.5]))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(KEYS), inner, max_size=5)), max_leaves=25)


MEM_SIZES = [16, "4K", "16K", "1M", "256M", "1G", "8G"]
CAPS = ["pm", {"msi": {"vectors": 4}}, {"msix": {"table_size": 8, "table_bar": 0}}, "vendor"]
EXT_CAPS = ["aer", "ats", "pasid", "pri", {"dsn": {"serial": 7}}, "ltr", "acs", "ari"]
# Values a description gets wrong in ways the loader must name.
SPOILERS = st.one_of(VALUES, st.sampled_from([
    [{"msi": {"vectors": 3}}], ["dsn"], [{"msi": {"vector": 4}}], [{"index": 0, "size": 3000}],
    [{"index": 0, "type": "io", "size": "1M"}], [{"index": 5, "type": "mem64", "size": "4K"}], "20.0", "01.8",
    {"cap": "x"}, {"flr": 1}, {"slot": {"numbr": 1}}]))


@st.composite
def device(draw: st.DrawFn, slot: str, depth: int, on_port: bool) -> dict[str, Any]:
    """One function (or switch) as a description would give it, now and then with one value spoiled."""
    kinds = ["endpoint", "pci", "legacy_endpoint"] if on_port else ["endpoint", "pci", "rciep", "host_bridge"]
    if depth < 2:
        kinds += ["root_port", "pci_bridge", "pcie_pci_bridge"] if not on_port else ["switch", "pcie_pci_bridge"]
    kind = draw(st.sampled_from(kinds))
    d: dict[str, Any] = {"kind": kind, "slot": slot, "vendor": draw(st.sampled_from([0x8086, 0x1B36, 0x10DE])),
                         "device": draw(st.integers(0, 0xFFFF))}
    if kind == "switch":
        d = {"kind": "switch", "slot": slot, "upstream": {"vendor": 0x10B5, "device": 0x8747},
             "ports": [{"slot": f"{i:02x}.0", "vendor": 0x10B5, "device": 0x8747,
                        "devices": draw(bus(depth + 1, True))} for i in range(draw(st.integers(1, 3)))]}
    elif kind in ("root_port", "pci_bridge", "pcie_pci_bridge"):
        d["devices"] = draw(bus(depth + 1, kind == "root_port"))
        if draw(st.booleans()) and kind == "root_port":
            d["acs"] = True
        if draw(st.booleans()) and kind == "root_port":
            d["hotplug"] = True
    else:
        if kind != "host_bridge":
            d["class"] = draw(st.sampled_from([0x020000, 0x010802, 0x030000]))
        idx = draw(st.lists(st.integers(0, 2), max_size=3, unique=True))
        d["bars"] = [{"index": 2 * i, "type": "mem64", "size": draw(st.sampled_from(MEM_SIZES))} if wide
                     else {"index": 2 * i, "type": "io", "size": 256} if kind == "pci" and i == 2
                     else {"index": 2 * i, "type": "mem32", "size": draw(st.sampled_from(MEM_SIZES[:5]))}
                     for i, wide in ((i, draw(st.booleans())) for i in idx)]
        d["caps"] = draw(st.lists(st.sampled_from(CAPS), max_size=2, unique_by=str))
        if kind in ("endpoint", "rciep"):
            d["ext_caps"] = draw(st.lists(st.sampled_from(EXT_CAPS), max_size=3, unique_by=str))
            if draw(st.integers(0, 3)) == 0:
                total = draw(st.integers(1, 20))
                d["sriov"] = {"total_vfs": total, "num_vfs": draw(st.integers(0, total)), "vf_device": 0x10CA,
                              "vf_bars": [draw(st.sampled_from(["16K", "1M", 100]))]}
    if draw(st.integers(0, 14)) == 0:           # spoil one value
        d[draw(st.sampled_from(sorted(d) + ["bogus", "express", "acs", "caps", "bars"]))] = draw(SPOILERS)
    return d


@st.composite
def bus(draw: st.DrawFn, depth: int, on_port: bool) -> list[dict[str, Any]]:
    """The functions of one bus: distinct slots (device 0 only below a PCIe port)."""
    slots = ["00.0", "00.1", "00.2"] if on_port else ["00.0", "01.0", "01.1", "02.0", "03.0", "1f.0", "1f.3"]
    chosen = draw(st.lists(st.sampled_from(slots), min_size=0 if depth else 1, max_size=3 if depth else 5,
                           unique=True))
    return [draw(device(slot, depth, on_port)) for slot in sorted(chosen)]


@st.composite
def platform_doc(draw: st.DrawFn) -> Any:
    """Mostly well-shaped machines with random parts and an occasional spoiled value; sometimes anything."""
    if draw(st.integers(0, 4)) == 0:
        return draw(VALUES)
    first = draw(st.sampled_from([0, 0, 0, 0x10, 0xFE]))
    return {"iommu": draw(st.booleans()),
            "host_bridges": [{"buses": [first, draw(st.sampled_from([0xFF, 0xFF, 0xFF, first, first + 1]))],
                              "apertures": [{"type": "io", "start": 0x1000, "end": 0xFFFF},
                                            {"type": "mem", "start": 0x80000000, "end": 0x8FFFFFFF},
                                            {"type": "mem", "start": 0x4000000000, "end": 0x40FFFFFFFF,
                                             "prefetch": True}],
                              "devices": draw(bus(0, False))}]}


@SETTINGS
@given(doc=platform_doc(), command=st.sampled_from([["groups", "--platform"], ["lspci", "-t", "--platform"],
                                                    ["demo", "--platform"]]))
def test_random_platform_yaml_through_the_cli(doc: Any, command: list[str]) -> None:
    if command[0] == "demo":
        command = ["lspci", "-vvv", "--platform"]     # demo = lspci + groups + a migration run: too slow here
    path = _write(yaml.safe_dump(doc).encode(), ".yaml")
    try:
        check_run([*command, path])
    finally:
        os.unlink(path)


@SETTINGS
@given(doc=st.one_of(VALUES, st.fixed_dictionaries({"scenario": st.sampled_from(["live-migration", "x", 1])},
                                                    optional={"params": VALUES})))
def test_random_scenario_files_are_refused_cleanly(doc: Any) -> None:
    path = _write(yaml.safe_dump(doc).encode(), ".yaml")
    try:
        # Only the file is read: -s ram_mib=1 is out of range, so a valid file never starts a migration.
        status, _, _ = check_run(["run", path, "-s", "ram_mib=1"])
        assert status == 1
    finally:
        os.unlink(path)


@SETTINGS
@given(expr=st.text(st.sampled_from(list("0123456789abcdefg:.*x \t-é")), max_size=70))
def test_random_slot_selectors(expr: str) -> None:
    path = _write(BASE.encode(), ".dump")
    try:
        status, _, err = check_run(["lspci", "-F", path, "-s", expr])
        real = subprocess.run([LSPCI, "-F", path, "-s", expr], capture_output=True, check=False)
        assert status == (1 if real.returncode else 0), (expr, err, real.stderr)
    finally:
        os.unlink(path)


# ---------------------------------------------------------------------------- targeted regressions
def test_a_closed_pipe_ends_every_command_quietly() -> None:
    """`vfiolab lspci -vvv | head -1`: status 0 and nothing on stderr (click made it 1 for groups/run/demo,
    and Python printed 'Exception ignored ... BrokenPipeError' when the exit flush failed)."""
    for argv in (["lspci", "-vvv"], ["lspci", "-xxxx"], ["groups", "-v"], ["groups", "--json"], ["run", "--list"],
                 ["--help"]):
        proc = subprocess.Popen([sys.executable, "-m", "vfiolab.cli.main", *argv], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        assert proc.stdout is not None and proc.stderr is not None
        first = proc.stdout.readline()
        proc.stdout.close()
        err = proc.stderr.read()
        assert proc.wait() == 0 and first and err == b"", (argv, err)


def test_missing_files_are_one_line_and_status_1(tmp_path: Any) -> None:
    missing = str(tmp_path / "missing")
    for argv, message in (
            (["lspci", "-F", missing], f"vfiolab: {missing}: cannot open dump: No such file or directory"),
            (["groups", "--dump", missing], f"vfiolab: {missing}: cannot open dump: No such file or directory"),
            (["groups", "--dump", str(tmp_path)], f"vfiolab: {tmp_path}: cannot open dump: Is a directory"),
            (["groups", "--sysfs", missing],
             f"vfiolab: {missing}/bus/pci/devices: No such file or directory (not a sysfs tree with PCI devices?)"),
            (["groups", "--platform", missing],
             f"vfiolab: {missing}: cannot read platform description: No such file or directory"),
            (["demo", "--platform", missing],
             f"vfiolab: {missing}: cannot read platform description: No such file or directory"),
            (["lspci", "--platform", str(tmp_path)],
             f"vfiolab: {tmp_path}: cannot read platform description: Is a directory"),
            (["run", missing + ".yaml"],
             f"vfiolab: {missing}.yaml: cannot read scenario file: No such file or directory"),
            (["lspci", "-i", missing], f"vfiolab: -i {missing}: cannot read the PCI ID list: No such file or directory"),
            (["lspci", "-s", "1:2:3:4", "-F", missing], "vfiolab: -s '1:2:3:4': Too many fields")):
        assert run_cli(argv)[0::2] == (1, message + "\n"), argv


def test_conflicting_sources_are_usage_errors(tmp_path: Any) -> None:
    dump = _write(BASE.encode(), ".dump")
    try:
        for argv in (["groups", "--dump", dump, "--sysfs", "/sys"], ["groups", "--dump", dump, "--platform", dump],
                     ["lspci", "-F", dump, "--platform", dump]):
            status, out, err = run_cli(argv)
            assert status == 2 and out == "" and "Error: give" in err, argv
    finally:
        os.unlink(dump)


def test_a_dump_of_only_vfs_is_refused_by_groups_and_listed_by_lspci() -> None:
    vf = bytearray(_cfg(0xFFFF, 0xFFFF, 0x020000))
    dump = _write("".join(format_dump(0, 1, fn, bytes(vf), "VF") for fn in (1, 2)).encode(), ".dump")
    try:
        status, out, err = check_run(["groups", "--dump", dump])
        assert status == 1 and "0000:01:00.1: vendor ID ffff" in err and "not a VF of any PF" in err
        status, out, _ = check_run(["lspci", "-F", dump])
        assert status == 0 and out.count("Illegal Vendor ID") == 2
    finally:
        os.unlink(dump)
