"""IommuUnit.translate_one(): the answer translate() would give for a request the last IOTLB run holds
whole, with the same hit counting; everything else (misses, crossings, permission or dirty work, no
translating context) is left to translate() with nothing counted."""

from __future__ import annotations

from vfiolab.iommu.device import IommuDevice
from vfiolab.iommu.domain import IOMMU_DOMAIN_IDENTITY, IOMMU_HWPT_ALLOC_DIRTY_TRACKING
from vfiolab.iommu.driver import make_unit
from vfiolab.iommu.group import iommu_attach_group, iommu_group_claim_dma_owner, iommu_probe_device
from vfiolab.iommu.pagetable import IOMMU_READ, IOMMU_WRITE
from vfiolab.memory.phys import PhysMemory

IOVA = 0x80_0000


def test_answers_only_from_the_last_run_and_counts_like_translate() -> None:
    mem = PhysMemory(1 << 26)
    unit = make_unit("intel", mem)
    dev = IommuDevice("dev", 0x30)
    group = iommu_probe_device(dev, unit, default_type=IOMMU_DOMAIN_IDENTITY)
    assert unit.translate_one(dev.rid, 0, 0x1000, 16, False) == -1  # identity: translate() answers
    iommu_group_claim_dma_owner(group, "test")
    dom = unit.driver.domain_alloc_paging_flags(dev, IOMMU_HWPT_ALLOC_DIRTY_TRACKING)  # VT-d second stage
    frames = mem.alloc_frames(4, contiguous=True)
    pa = int(frames[0]) << 12
    dom.map(IOVA, pa, 0x3000, IOMMU_READ | IOMMU_WRITE)
    dom.map(IOVA + 0x3000, pa + 0x3000, 0x1000, IOMMU_READ)
    iommu_attach_group(dom, group)
    dom.set_dirty_tracking(True)
    stats = unit.iotlb.stats
    assert unit.translate_one(dev.rid, 0, IOVA, 16, False) == -1  # cold: nothing counted
    assert (stats.hits, stats.misses) == (0, 0)
    assert unit.translate(dev.rid, 0, IOVA, 16, False) == [(pa, 16)]
    assert (stats.hits, stats.misses, stats.fills) == (0, 1, 1)
    assert unit.translate_one(dev.rid, 0, IOVA + 0x1800, 0x800, False) == pa + 0x1800
    assert stats.hits == 1
    assert unit.translate_one(dev.rid, 0, IOVA + 0x2800, 0x1000, False) == -1  # crosses into the r- run
    assert unit.translate_one(dev.rid, 0, IOVA, 16, True) == -1  # a write with D still to set
    assert stats.hits == 1
    assert unit.translate(dev.rid, 0, IOVA, 0x3000, True) == [(pa, 0x3000)]  # marks the three pages
    assert unit.translate_one(dev.rid, 0, IOVA + 0x2000, 0x1000, True) == pa + 0x2000
    assert stats.hits == 3
    mem.close()
