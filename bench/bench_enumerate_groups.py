"""Benchmark: Linux-like enumeration and IOMMU grouping of generated fabrics of 1k, 2k, 5k and 10k functions.

For each size the machine is built once (not timed); then, best of a few runs, from a fundamental reset:
enumeration = scan + resource assignment + driver enables + SR-IOV enabling + reading every function's
config bytes (``Machine.snapshot()``), and grouping = ``vfiolab.pci.groups.compute_groups`` on that snapshot.
Before each run, untimed: the fundamental reset (the hardware powering on: no Linux work) and a full
cyclic-GC pass, so the garbage of earlier runs and sizes is not freed inside the run being timed.
Reported value: seconds for both at 10k functions (goal: <= 1 s).  The growth ratio printed alongside is
(t(10k) / t(1k)) / (n(10k) / n(1k)): 1.0 means the time grows linearly with the number of functions.
"""

from __future__ import annotations

import gc
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import best_of, report

from vfiolab.pci.config import RESET_FUNDAMENTAL
from vfiolab.pci.enumerate import EnumOptions, enumerate_topology
from vfiolab.pci.groups import compute_groups
from vfiolab.platform import Machine, generate_fabric

SIZES = (1000, 2000, 5000, 10000)


def measure(n: int, repeat: int) -> dict[str, float]:
    """Seconds to enumerate and to group a generated fabric of about ``n`` functions."""
    platform = generate_fabric(n)
    t0 = time.perf_counter()
    topo, builder = platform._build()
    build = time.perf_counter() - t0
    funcs: list[object] = []

    def power_on() -> None:
        topo.reset(RESET_FUNDAMENTAL)
        gc.collect()

    def enumerate_once() -> None:
        e = enumerate_topology(topo, EnumOptions(iommu=platform.iommu))
        m = Machine(platform, topo, e, builder.spec_of)
        m.start_drivers()
        funcs[:] = m.snapshot()

    t_enum = best_of(enumerate_once, repeat, setup=power_on)
    snap = list(funcs)
    t_groups = best_of(lambda: compute_groups(snap), repeat, setup=gc.collect)  # type: ignore[arg-type]
    return {"functions": len(snap), "build_s": build, "enumerate_s": t_enum, "groups_s": t_groups,
            "total_s": t_enum + t_groups}


def main() -> None:
    rows = {}
    for n in SIZES:
        r = measure(n, repeat=5 if n <= 2000 else 3)  # short runs are the noisiest
        rows[n] = r
        print(f"{r['functions']:6d} functions: enumerate {r['enumerate_s']:.3f} s  groups {r['groups_s']:.3f} s  "
              f"total {r['total_s']:.3f} s  (build, not timed: {r['build_s']:.3f} s)")
    small, big = rows[SIZES[0]], rows[SIZES[-1]]
    growth = (big["total_s"] / small["total_s"]) / (big["functions"] / small["functions"])
    print(f"growth ratio (t10k/t1k) / (n10k/n1k) = {growth:.2f}  (1.0 = linear, above 1 = worse than linear)")
    report("enumerate_groups", "s", big["total_s"], None, "<= 1",
           {"growth_ratio": growth,
            "growth_ratio_means": "(t(10k)/t(1k)) / (n(10k)/n(1k)); 1.0 = linear in the number of functions",
            "value_means": "seconds to enumerate (scan, assign, drivers, SR-IOV, snapshot) and group 10k functions",
            "sizes": {str(k): v for k, v in rows.items()}})


if __name__ == "__main__":
    main()
