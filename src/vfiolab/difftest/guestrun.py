"""Boot the kernel rig's Linux 7.2 once with the difftest guest and bring the kernel's records back.

The boot itself is rig/kernel-rootfs.sh (``run IN OUTDIR``): it builds the root image on first use, puts the
current sources and IN on a per-run disk, boots QEMU (TCG) and copies OUTDIR/results.jsonl out.  This module
writes IN, calls it, and parses what :mod:`vfiolab.difftest.guest` wrote.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vfiolab.difftest.scenario import Scenario
from vfiolab.errors import VfiolabError


def repo_root() -> Path:
    """The vfiolab checkout (``$VFIOLAB_REPO``, else the tree this file lives in), which holds rig/."""
    root = Path(os.environ.get("VFIOLAB_REPO") or Path(__file__).resolve().parents[3])
    if not (root / "rig" / "kernel-rootfs.sh").is_file():
        raise VfiolabError(f"no rig/kernel-rootfs.sh under {root}: the kernel oracle needs the vfiolab checkout "
                           "(set VFIOLAB_REPO)")
    return root


@dataclass
class GuestRun:
    """One boot: the kernel's records per scenario (in input order), the guest's header and totals, the wall
    time of the boot (QEMU start to exit) and where its files are."""

    records: list[list[dict[str, Any]]]
    head: dict[str, Any]
    done: dict[str, Any]
    boot_seconds: float
    outdir: Path
    seconds: list[float] = field(default_factory=list)

    @property
    def startup_seconds(self) -> float | None:
        """Guest uptime when Python was ready to run the first scenario (kernel boot + Python start)."""
        v = self.head.get("ready_uptime")
        return float(v) if v is not None else None


Records = list[dict[str, Any]]


def parse_results(path: Path, expected: int) -> tuple[list[Records], dict[str, Any], dict[str, Any], list[float]]:
    """The guest's OUT file: (records per scenario, header, totals, seconds per scenario)."""
    head: dict[str, Any] = {}
    done: dict[str, Any] = {}
    by_index: dict[int, list[dict[str, Any]]] = {}
    seconds: dict[int, float] = {}
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise VfiolabError(f"no guest results at {path}: {e.strerror}") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise VfiolabError(f"{path}:{n}: not JSON ({e})") from None
        if "guest" in obj:
            head = obj["guest"]
        elif "done" in obj:
            done = obj["done"]
        else:
            by_index[int(obj["s"])] = list(obj["records"])
            seconds[int(obj["s"])] = float(obj.get("seconds", 0.0))
    if not done:
        raise VfiolabError(f"{path}: the guest stopped after {len(by_index)} of {expected} scenarios "
                           "(no 'done' line; see stderr.txt next to it)")
    if sorted(by_index) != list(range(expected)):
        raise VfiolabError(f"{path}: results for {len(by_index)} scenarios, expected {expected}")
    return ([by_index[i] for i in range(expected)], head, done, [seconds[i] for i in range(expected)])


def run_on_kernel(scenarios: list[Scenario], outdir: Path | None = None,
                  timeout: int | None = None) -> GuestRun:
    """Run ``scenarios`` in one boot of the kernel rig; VfiolabError (with the rig's message) on failure."""
    root = repo_root()
    out = outdir or Path(tempfile.mkdtemp(prefix="vfiolab-diff-"))
    out.mkdir(parents=True, exist_ok=True)
    inp = out / "scenarios.jsonl"
    inp.write_text("".join(s.dumps() + "\n" for s in scenarios))
    env = dict(os.environ)
    if timeout:
        env["VFIOLAB_GUEST_TIMEOUT"] = str(timeout)
    proc = subprocess.run(["bash", str(root / "rig" / "kernel-rootfs.sh"), "run", str(inp), str(out)],
                          check=False, cwd=root, env=env, capture_output=True, text=True)
    (out / "rig.log").write_text(proc.stderr)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-12:])
        raise VfiolabError(f"the kernel guest run failed (rig/kernel-rootfs.sh exit {proc.returncode}):\n{tail}")
    records, head, done, seconds = parse_results(out / "results.jsonl", len(scenarios))
    boot = float((out / "boot-seconds.txt").read_text().strip() or 0)
    return GuestRun(records, head, done, boot, out, seconds)


__all__ = ["GuestRun", "parse_results", "repo_root", "run_on_kernel"]
