"""The guest side of a differential run: ``python3 -m vfiolab.difftest.guest IN.jsonl OUT.jsonl``.

Runs every scenario of IN (one JSON scenario per line) on the real /dev/iommu of the running kernel through
:class:`~vfiolab.difftest.backend.KernelBackend` and writes OUT: a ``{"guest": ...}`` line (kernel release,
Python, uptime when ready), one ``{"s", "name", "records", "seconds"}`` line per scenario (flushed as it
ends) and a ``{"done": ...}`` line (totals, kernel splats found in the log, whether numpy was loaded).

Only the kernel backend is loaded: ``vfiolab/iommufd/__init__.py`` imports the whole model (numpy, the IOMMU
core), which the guest does not need, so the package is entered without running it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import re
import sys
import time
import types
from pathlib import Path
from typing import Any

SPLAT = re.compile(r"WARNING:|BUG:|Oops|Call Trace|Kernel panic|refcount_t:|UBSAN:")
"""Kernel report formats (lib/bug.c, kernel/panic.c, arch/x86/kernel/dumpstack.c)."""


def enter_iommufd_package_lightly() -> None:
    """Make ``vfiolab.iommufd`` importable as a bare namespace (its modules load on demand, its __init__,
    which pulls in the model, never runs)."""
    if "vfiolab.iommufd" in sys.modules:
        return
    spec = importlib.util.find_spec("vfiolab.iommufd")
    if spec is None or spec.submodule_search_locations is None:
        raise ImportError("vfiolab.iommufd is not on the path")
    pkg = types.ModuleType("vfiolab.iommufd", "vfiolab.iommufd entered without its __init__ (guest)")
    pkg.__path__ = list(spec.submodule_search_locations)
    sys.modules["vfiolab.iommufd"] = pkg


def uptime() -> float | None:
    """Seconds since boot (/proc/uptime), None off Linux."""
    try:
        return float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def kernel_splats() -> list[str]:
    """Lines of the kernel log that report a WARN/BUG/oops (read from /dev/kmsg without blocking)."""
    try:
        fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return []
    out = []
    try:
        while True:
            try:
                rec = os.read(fd, 8192).decode(errors="replace")
            except BlockingIOError:
                break
            except OSError:  # EPIPE: a record was overwritten; keep reading
                continue
            if not rec:
                break
            msg = rec.split(";", 1)[-1].strip()
            if SPLAT.search(msg):
                out.append(msg)
    finally:
        os.close(fd)
    return out


class KmsgMarker:
    """Writes ``vfiolab-difftest: scenario N NAME`` into the kernel log before each scenario, so a splat in
    dmesg points at the scenario that caused it."""

    def __init__(self) -> None:
        try:
            self.fd: int | None = os.open("/dev/kmsg", os.O_WRONLY)
        except OSError:
            self.fd = None

    def mark(self, text: str) -> None:
        if self.fd is not None:
            try:
                os.write(self.fd, f"vfiolab-difftest: {text}\n".encode())
            except OSError:
                pass


def main(argv: list[str] | None = None) -> int:
    """Run IN's scenarios on this kernel and write OUT; 0 unless the input cannot be read."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print("usage: python3 -m vfiolab.difftest.guest IN.jsonl OUT.jsonl", file=sys.stderr)
        return 2
    enter_iommufd_package_lightly()
    from vfiolab.difftest.backend import KernelBackend
    from vfiolab.difftest.ops import OPS
    from vfiolab.difftest.runner import run_scenario
    from vfiolab.difftest.scenario import ScenarioError, load_scenarios

    try:
        scenarios = load_scenarios(Path(args[0]), OPS)
    except ScenarioError as e:
        print(f"guest: {e}", file=sys.stderr)
        return 1
    t0 = time.perf_counter()
    calls = 0
    with open(args[1], "w") as out:
        head: dict[str, Any] = {"kernel": platform.release(), "python": platform.python_version(),
                                "ready_uptime": uptime(), "scenarios": len(scenarios)}
        out.write(json.dumps({"guest": head}) + "\n")
        out.flush()
        backend = KernelBackend()
        marker = KmsgMarker()
        for s, scenario in enumerate(scenarios):
            marker.mark(f"scenario {s} {scenario.name}")
            records, seconds = run_scenario(scenario, backend)
            calls += len(records)
            out.write(json.dumps({"s": s, "name": scenario.name, "records": records,
                                  "seconds": round(seconds, 4)}, separators=(",", ":")) + "\n")
            out.flush()
        done = {"scenarios": len(scenarios), "calls": calls, "seconds": round(time.perf_counter() - t0, 3),
                "end_uptime": uptime(), "numpy_loaded": "numpy" in sys.modules, "splats": kernel_splats()}
        out.write(json.dumps({"done": done}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
