"""Benchmark: map then unmap 1 GiB of an AMD v1 table as 4 KiB pages and as 2 MiB pages.

Value: ns per 4 KiB of IOVA for the map and for the unmap, best of several runs.  Floor, measured in
the same run: a numpy fill of 262,144 u64 entries (one PTE per 4 KiB page) divided the same way.  Goal:
within 4x of that floor (architecture decision 2).  The 2 MiB records also carry the ratio against a
fill of the 512 entries they really write.  PAs are offset so that the page sizes are forced: 4 KiB
pages at an odd multiple of 4 KiB, 2 MiB pages at an odd multiple of 2 MiB (AMD v1 would otherwise
use larger contiguous entries).
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import best_of, report

from vfiolab.iommu.pagetable import IOMMU_READ, IOMMU_WRITE, AmdV1, PageTable
from vfiolab.memory import PhysMemory

GIB = 1 << 30
PAGES = GIB >> 12
REPEAT = 25


def fill_floor(n: int) -> float:
    """Seconds for the plain numpy fill of n u64 entries."""
    a = np.empty(n, dtype=np.uint64)
    return best_of(lambda: a.fill(0x7000_0000_0000_1001), REPEAT)


def map_unmap(page: int) -> tuple[float, float]:
    """Best seconds to map and to unmap 1 GiB at ``page`` granularity (each run maps a fresh range)."""
    mem = PhysMemory(1 << 31)
    pt = PageTable(AmdV1(), mem)
    pa = (1 << 40) + page  # aligned to ``page`` but not to twice it
    iova = GIB
    best_map = best_unmap = float("inf")
    for _ in range(REPEAT):
        t0 = time.perf_counter()
        pt.map(iova, pa, GIB, IOMMU_READ | IOMMU_WRITE)
        t1 = time.perf_counter()
        if pt.unmap(iova, GIB) != GIB:
            raise SystemExit("unmap came back short")
        t2 = time.perf_counter()
        best_map, best_unmap = min(best_map, t1 - t0), min(best_unmap, t2 - t1)
    leaves = len(pt.leaves())
    pt.destroy()
    mem.close()
    if leaves:
        raise SystemExit("leaves left after unmap")
    return best_map, best_unmap


def main() -> None:
    floor = fill_floor(PAGES)
    floor_2m = fill_floor(GIB >> 21)
    per_page = 1e9 / PAGES
    for name, page in (("4k", 1 << 12), ("2m", 1 << 21)):
        t_map, t_unmap = map_unmap(page)
        for op, t in (("map", t_map), ("unmap", t_unmap)):
            extra: dict[str, object] = {"seconds": t, "floor_seconds": floor}
            if page > 4096:
                extra["ratio_vs_fill_of_512_entries"] = t / floor_2m
            report(f"pt_{op}_{name}", "ns/4KiB", t * per_page, floor * per_page, "<= 4", extra)


if __name__ == "__main__":
    main()
