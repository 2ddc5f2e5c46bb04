"""Benchmark: memory used by an AMD v1 table mapping 64 GiB as 4 KiB pages.

Value: the process's resident memory growth across the map (``/proc/self/statm``: page-table frames,
numpy temporaries, Python objects, everything), in bytes.  Floor: the table's frames x 4 KiB, which is
what the hardware table itself needs.  Goal: within 2% (no hidden per-entry objects).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import report

from vfiolab.iommu.pagetable import IOMMU_READ, IOMMU_WRITE, AmdV1, PageTable
from vfiolab.memory import PhysMemory

SPAN = 64 << 30
RW = IOMMU_READ | IOMMU_WRITE


def resident() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main() -> None:
    warm = PhysMemory(1 << 28)  # warm-up: imports, caches and code paths, in other memory
    wpt = PageTable(AmdV1(), warm)
    wpt.map(0, (1 << 40) + 4096, 1 << 30, RW)
    wpt.destroy()
    warm.close()
    mem = PhysMemory(1 << 30)
    pt = PageTable(AmdV1(), mem)
    before = resident()
    frames_before = pt.table_frames
    pt.map(0, (1 << 40) + 4096, SPAN, RW)
    grown = resident() - before
    table_bytes = (pt.table_frames - frames_before) * 4096
    report("pt_memory_64g", "bytes", grown, table_bytes, "<= 1.02", {"table_frames": pt.table_frames})
    pt.destroy()
    mem.close()


if __name__ == "__main__":
    main()
