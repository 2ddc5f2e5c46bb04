"""Turn a groups-oracle guest capture (the @@ records /init writes on ttyS1) into the cached files.

Writes, into one topology's cache directory: ``config.dump`` (``lspci -xxxx`` layout, sysfs listing order,
each function's bytes exactly as its sysfs ``config`` file gave them), ``groups.json`` (from
/sys/kernel/iommu_groups), ``resources/<bdf>`` (sysfs ``resource`` files), ``probe-order.txt`` (the kernel's
"Adding to iommu group" lines in order), ``dmesg.txt`` and ``kernel.txt``.  With ``--table DIR`` it prints a
Markdown table of a finished capture's groups (used for docs/rigs.md).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from vfiolab.errors import VfiolabError
from vfiolab.pci.dump import format_dump, parse_dump

_BDF = re.compile(r"^([0-9a-f]{4}):([0-9a-f]{2}):([0-9a-f]{2})\.([0-7])$")
_OD_LINE = re.compile(r"^([0-9a-f]{6,}) ((?:[0-9a-f]{2} ){15}[0-9a-f]{2})$")
_ADDING = re.compile(r"pci (\S+): Adding to iommu group (\d+)$")


class CaptureError(VfiolabError):
    """A capture that is incomplete or malformed: names the line and what was expected."""


@dataclass
class CapturedFunction:
    """One /sys/bus/pci/devices entry as the guest printed it."""

    name: str
    config: bytes
    resource: str
    group: int | None


@dataclass
class _Pending:
    """The device record being read (between @@dev and @@group)."""

    name: str
    size: int = -1
    config: bytes | None = None
    resource: str | None = None


@dataclass
class Capture:
    """Everything one guest boot reported."""

    kernel: str = ""
    cmdline: str = ""
    sriov: list[str] = field(default_factory=list)
    functions: list[CapturedFunction] = field(default_factory=list)
    groups: dict[int, list[str]] = field(default_factory=dict)
    dmesg: str = ""

    def probe_order(self) -> list[tuple[str, int]]:
        """(device, group) in the order the kernel added devices to groups (its dmesg lines)."""
        out = []
        for line in self.dmesg.splitlines():
            m = _ADDING.search(line)
            if m:
                out.append((m.group(1), int(m.group(2))))
        return out


def _bdf(name: str, lineno: int) -> tuple[int, int, int]:
    m = _BDF.match(name)
    if not m:
        raise CaptureError(f"line {lineno}: {name!r} is not a dddd:bb:dd.f device name")
    return int(m.group(1), 16), int(m.group(2), 16), (int(m.group(3), 16) << 3) | int(m.group(4))


def _od_bytes(lines: list[str], size: int, name: str, first: int) -> bytes:
    """Bytes from ``od -Ax -tx1 -v -w16`` lines; every offset must follow on and the total must match."""
    out = bytearray()
    for i, line in enumerate(lines):
        if i == len(lines) - 1 and line == f"{size:06x}":
            break                                   # od's closing offset line
        m = _OD_LINE.match(line)
        if not m or int(m.group(1), 16) != len(out):
            raise CaptureError(f"line {first + i}: {name}: expected od data at offset {len(out):#x}, "
                               f"got {line!r}")
        out += bytes.fromhex(m.group(2))
    if len(out) != size:
        raise CaptureError(f"{name}: config has {len(out)} bytes, sysfs said {size}")
    return bytes(out)


def parse_capture(text: str) -> Capture:
    """Parse the whole capture; raises CaptureError unless it is complete (ends with @@vfiolab-end)."""
    lines = [ln.rstrip("\r") for ln in text.split("\n")]
    cap = Capture()
    if not lines or lines[0] != "@@vfiolab-capture 1":
        raise CaptureError("line 1: not a groups-oracle capture (no '@@vfiolab-capture 1')")
    if "@@vfiolab-end" not in lines:
        raise CaptureError("capture is truncated: no '@@vfiolab-end' (guest died or timed out)")
    i = 1
    section = ""
    block: list[str] = []
    dmesg: list[str] = []
    cur: _Pending | None = None

    def close_block(lineno: int) -> None:
        nonlocal block
        if cur is not None and section == "config":
            cur.config = _od_bytes(block, cur.size, cur.name, lineno - len(block))
        elif cur is not None and section == "resource":
            cur.resource = "\n".join(block) + "\n"
        block = []

    while i < len(lines):
        line = lines[i]
        lineno = i + 1
        i += 1
        if line.startswith("@@"):
            close_block(lineno)
            key, _, rest = line[2:].partition(" ")
            if key == "kernel":
                cap.kernel = rest.split(" ", 1)[0]
            elif key == "cmdline":
                cap.cmdline = rest
            elif key == "sriov":
                if not rest.endswith("rc=0"):
                    raise CaptureError(f"line {lineno}: enabling VFs failed: {rest}")
                cap.sriov.append(rest)
            elif key == "dev":
                _bdf(rest, lineno)
                cur = _Pending(rest)
            elif key in ("config", "resource") and cur is None:
                raise CaptureError(f"line {lineno}: @@{key} outside a device record")
            elif key == "config" and cur is not None:
                cur.size = int(rest)
            elif key == "group":
                if cur is None or cur.config is None or cur.resource is None:
                    raise CaptureError(f"line {lineno}: device record incomplete before {line!r}")
                cap.functions.append(CapturedFunction(cur.name, cur.config, cur.resource,
                                                      int(rest) if rest else None))
                cur = None
            elif key == "vfiolab-end":
                break
            elif key not in ("resource", "groups", "dmesg"):
                raise CaptureError(f"line {lineno}: unknown record {line!r}")
            section = key
            continue
        if section in ("config", "resource"):
            block.append(line)
        elif section == "groups" and line:
            gid, _, dev = line.partition(" ")
            _bdf(dev, lineno)
            cap.groups.setdefault(int(gid), []).append(dev)
        elif section == "dmesg":
            dmesg.append(line)
    cap.dmesg = "\n".join(dmesg) + "\n"
    _check(cap)
    return cap


def _check(cap: Capture) -> None:
    """Each function's iommu_group link must agree with the /sys/kernel/iommu_groups listing."""
    if not cap.functions:
        raise CaptureError("capture lists no PCI functions")
    member = {dev: gid for gid, devs in cap.groups.items() for dev in devs}
    for f in cap.functions:
        if member.get(f.name) != f.group:
            raise CaptureError(f"{f.name}: iommu_group link says {f.group}, "
                               f"/sys/kernel/iommu_groups says {member.get(f.name)}")


def write_capture(cap: Capture, out: Path) -> None:
    """Write the cache files for one topology into ``out`` (created if needed)."""
    out.mkdir(parents=True, exist_ok=True)
    dump = "".join(format_dump(*_bdf(f.name, 0), f.config) for f in cap.functions)
    names = [f.name for f in cap.functions]
    if [x.name for x in parse_dump(dump)] != names:      # the dump must read back as what we wrote
        raise CaptureError("config.dump does not read back with the same device list")
    (out / "config.dump").write_text(dump)
    groups = [{"id": gid, "devices": sorted(devs)} for gid, devs in sorted(cap.groups.items())]
    (out / "groups.json").write_text(json.dumps({"groups": groups}, indent=1) + "\n")
    res = out / "resources"
    res.mkdir(exist_ok=True)
    for f in cap.functions:
        (res / f.name).write_text(f.resource)
    (out / "probe-order.txt").write_text("".join(f"{d} {g}\n" for d, g in cap.probe_order()))
    (out / "dmesg.txt").write_text(cap.dmesg)
    (out / "kernel.txt").write_text(cap.kernel + "\n")


def markdown_table(out: Path) -> str:
    """A Markdown table of a finished capture's groups, each device with its vendor:device ID."""
    funcs = {f.name: f for f in parse_dump((out / "config.dump").read_text())}
    rows = ["| Group | Devices |", "|---|---|"]
    for g in json.loads((out / "groups.json").read_text())["groups"]:
        cells = []
        for dev in g["devices"]:
            cfg = funcs[dev].config
            ident = f"{int.from_bytes(cfg[0:2], 'little'):04x}:{int.from_bytes(cfg[2:4], 'little'):04x}"
            cells.append(f"{dev[5:]} ({ident})")
        rows.append(f"| {g['id']} | {', '.join(cells)} |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``parse_capture.py CAPTURE OUTDIR`` or ``parse_capture.py --table OUTDIR``."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--table", action="store_true", help="print a Markdown table of OUTDIR's groups")
    ap.add_argument("paths", nargs="+")
    args = ap.parse_args(argv)
    try:
        if args.table:
            for p in args.paths:
                sys.stdout.write(markdown_table(Path(p)))
            return 0
        if len(args.paths) != 2:
            ap.error("expected CAPTURE OUTDIR")
        cap = parse_capture(Path(args.paths[0]).read_text(errors="replace"))
        write_capture(cap, Path(args.paths[1]))
    except (VfiolabError, OSError, KeyError, ValueError) as e:
        print(f"parse_capture: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
