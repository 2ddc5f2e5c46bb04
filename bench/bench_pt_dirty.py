"""Benchmark: read_and_clear_dirty over 64 GiB of an AMD v1 table mapped as 4 KiB pages (16M leaf
entries in 32768 leaf tables), one entry in 64 written (D set directly in the table, as the IOMMU does).

Value: seconds for one read_and_clear_dirty() of the whole range (bitmap out, D bits cleared), best of
several runs (the D bits are set again between runs, untimed).  Floor, measured in the same run: a numpy
scan of the same table frames, ``(tables & D) != 0``.  Goal: within 3x.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import best_of, report

from vfiolab.iommu.pagetable import IOMMU_READ, IOMMU_WRITE, AmdV1, PageTable
from vfiolab.iommu.pagetable.amdv1 import D
from vfiolab.memory import PhysMemory

SPAN = 64 << 30
ENTRIES = SPAN >> 12
REPEAT = 7


def main() -> None:
    mem = PhysMemory(1 << 30)
    pt = PageTable(AmdV1(), mem)
    pt.map(0, (1 << 40) + 4096, SPAN, IOMMU_READ | IOMMU_WRITE)  # odd 4K multiple: 4 KiB leaves only
    frames = np.array([pt.walk(va).pte_pa >> 12 for va in range(0, SPAN, 2 << 20)],  # type: ignore[union-attr]
                      dtype=np.int64)
    if len(frames) != ENTRIES // 512 or frames[-1] - frames[0] != len(frames) - 1:
        raise SystemExit("leaf tables are not one run of frames")
    block = mem.u64[frames[0]:frames[-1] + 1]
    dbit = np.uint64(D)

    def dirty_some() -> None:
        block.reshape(-1)[::64] |= dbit

    def scan() -> object:
        return (block & dbit) != 0

    floor = best_of(scan, REPEAT)
    best = float("inf")
    for _ in range(REPEAT):
        dirty_some()
        t0 = time.perf_counter()
        bits = pt.read_and_clear_dirty(0, SPAN)
        best = min(best, time.perf_counter() - t0)
        if int(bits.sum()) != ENTRIES // 64 or (block & dbit).any():
            raise SystemExit("wrong dirty harvest")
    report("pt_dirty_64g", "s", best, floor, "<= 3", {"entries": ENTRIES})
    pt.destroy()
    mem.close()


if __name__ == "__main__":
    main()
