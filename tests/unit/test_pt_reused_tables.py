"""Table pages freed by an unmap keep their old entries until they are allocated again (the kernel
clears table pages at allocation: iommu_alloc_pages_node_sz() with __GFP_ZERO).  A new subtree built
from them reads empty everywhere the new map did not write: before a leaf run that starts inside a
table, and after the point where a map fails (no page size fits the tail: ENXIO, not EADDRINUSE)."""

from __future__ import annotations

import errno
from collections.abc import Iterator

import pytest

from vfiolab.errors import UapiError
from vfiolab.iommu.pagetable import IOMMU_READ, IOMMU_WRITE, AmdV1, PageTable
from vfiolab.memory import PhysMemory

RW = IOMMU_READ | IOMMU_WRITE
GIB = 1 << 30
PA = (1 << 40) + 0x1000  # an odd multiple of 4 KiB: 4 KiB leaves only


@pytest.fixture()
def pt() -> Iterator[PageTable]:
    mem = PhysMemory(1 << 28)
    table = PageTable(AmdV1(), mem)
    table.map(GIB, PA, GIB, RW)  # 512 leaf tables full of entries
    assert table.unmap(GIB, GIB) == GIB  # ... freed with them, and the level-1 table too
    assert table.table_frames == table.top_nframes
    yield table
    table.destroy()
    mem.close()


def test_leaf_run_starting_inside_a_table(pt: PageTable) -> None:
    pt.map(GIB + 0x3000, PA, 4 << 20, RW)
    for iova in (GIB, GIB + 0x2000, GIB + (4 << 20) + 0x3000, GIB + (6 << 20)):
        assert pt.iova_to_phys(iova) == 0 and pt.pte(iova)[1] == 0
    assert pt.iova_to_phys(GIB + 0x3000) == PA
    assert sum(size for _, size, _ in pt.leaves()) == 4 << 20  # (AMD may make 8 KiB contiguous leaves)


def test_failed_tail_reads_empty(pt: PageTable) -> None:
    with pytest.raises(UapiError) as err:
        pt.map(GIB, PA, (3 << 20) + 0x800, RW)  # 768 leaves, then nothing fits the last 2 KiB
    assert err.value.errno == errno.ENXIO
    assert not pt.leaves()
    pt.map(GIB, PA, 3 << 20, RW)
    assert pt.iova_to_phys(GIB + (3 << 20)) == 0 and sum(size for _, size, _ in pt.leaves()) == 3 << 20
