"""Write-dirty state held by IOTLB entries: an entry caches the dirty state of its leaves as the walk
read them, so writes through it update the table only where that state was clean, and a flush makes
the next walk read the table again (generic_pt/pt_common.h pt_entry_make_write_clean(): "write dirty"
before the flush may be lost, after it every write must mark its entry)."""

from __future__ import annotations

import numpy as np

from vfiolab.iommu.device import IommuDevice
from vfiolab.iommu.dma import DmaPort
from vfiolab.iommu.domain import IOMMU_DOMAIN_IDENTITY
from vfiolab.iommu.driver import make_unit
from vfiolab.iommu.group import iommu_attach_group, iommu_group_claim_dma_owner, iommu_probe_device
from vfiolab.iommu.iotlb import Run
from vfiolab.iommu.pagetable import IOMMU_READ, IOMMU_WRITE, X86_64, PageTable, VtdSS
from vfiolab.iommu.pagetable.vtdss import D as VTD_D
from vfiolab.iommu.pagetable.x86_64 import D as X86_D
from vfiolab.iommu.unit import IommuUnit
from vfiolab.iommu.walk import Stage, Walker
from vfiolab.memory.phys import PhysMemory

RW = IOMMU_READ | IOMMU_WRITE
IOVA = 0x40_0000


def first_stage_rig() -> tuple[IommuUnit, IommuDevice, DmaPort, PhysMemory]:
    """A VT-d unit translating through an x86-64 first-stage table (A/D always on) with 4 pages."""
    mem = PhysMemory(1 << 26)
    unit = make_unit("intel", mem)
    dev = IommuDevice("dev", 0x20)
    group = iommu_probe_device(dev, unit, default_type=IOMMU_DOMAIN_IDENTITY)
    iommu_group_claim_dma_owner(group, "test")
    dom = unit.driver.domain_alloc_paging(dev)
    assert dom.fmt.name == "x86_64" and dom.stage.ad
    frames = mem.alloc_frames(4, contiguous=True)
    dom.map(IOVA, int(frames[0]) << 12, 0x4000, RW)
    iommu_attach_group(dom, group)
    return unit, dev, DmaPort(dev), mem


def cached(unit: IommuUnit, dev: IommuDevice, iova: int) -> Run:
    ctx = unit.context(dev.rid, 0)
    assert ctx is not None
    run = unit.iotlb.lookup(ctx.tag, iova)
    assert run is not None
    return run


def leaf_slot(run: Run, iova: int) -> int:
    t = run.dirty[0]
    return t.slot0 + ((iova + t.off) >> t.isz)


def test_writes_through_dirty_leaves_touch_no_table_byte() -> None:
    """x86-64 writable leaves are installed dirty (x86_64_pt_iommu_set_prot()): the walk finds them
    so, the entry holds all four, and a write changes nothing in the table."""
    unit, dev, port, mem = first_stage_rig()
    port.dma_read(IOVA, 1)
    run = cached(unit, dev, IOVA)
    assert (run.lo, run.hi) == (IOVA, IOVA + 0x4000) and run.dmask == run.dfull == 0b1111
    row = mem.u64_flat[leaf_slot(run, IOVA):leaf_slot(run, IOVA) + 4].copy()
    port.dma_write(IOVA + 0x1000, b"x" * 0x2000)
    assert np.array_equal(mem.u64_flat[leaf_slot(run, IOVA):leaf_slot(run, IOVA) + 4], row)
    assert port.dma_read(IOVA + 0x2FFE, 3) == b"xx\0"


def test_cleared_dirty_bit_comes_back_after_the_flush_only() -> None:
    unit, dev, port, mem = first_stage_rig()
    port.dma_read(IOVA, 1)
    slot = leaf_slot(cached(unit, dev, IOVA), IOVA + 0x1000)
    mem.u64_flat[slot] &= np.uint64(~X86_D & ((1 << 64) - 1))  # software clears D, no flush yet
    port.dma_write(IOVA + 0x1000, b"a")
    assert not int(mem.u64_flat[slot]) & X86_D  # the entry still holds D: no update
    unit.iotlb_flush_all()
    port.dma_read(IOVA + 0x1000, 1)  # the new entry is filled by a read: page 1 clean in it
    run = cached(unit, dev, IOVA)
    assert run.dmask == 0b1101 and not int(mem.u64_flat[slot]) & X86_D
    port.dma_write(IOVA + 0x1000, b"b")
    assert int(mem.u64_flat[slot]) & X86_D and run.dmask == run.dfull


def test_nested_entry_holds_dirty_state_of_both_stages() -> None:
    """A nested run is held dirty where the stage-1 leaf and the stage-2 leaf (here a 2 MiB one
    covering many stage-1 pages) are both dirty."""
    host = PhysMemory(1 << 26)
    s2 = PageTable(VtdSS(), host)
    s2.map(0, 0, 1 << 26, RW)  # stage 2: IPA == host PA, 2 MiB leaves, D clear
    s1 = PageTable(X86_64(), host)  # stage 1 in host RAM; its table addresses are IPAs == PAs
    data = int(host.alloc_frames(4, contiguous=True)[0]) << 12
    s1.map(0x10000, data, 0x4000, RW)
    st1 = Stage(s1.fmt, lambda: (s1.top_pa, s1.top_level), ad=True)
    st2 = Stage(s2.fmt, lambda: (s2.top_pa, s2.top_level), ad=True)
    run = Walker(host, st1, st2).fill(0x10000, write=False)
    assert (run.lo, run.hi, run.pa) == (0x10000, 0x14000, data) and run.dmask == 0  # stage 2 clean
    run = Walker(host, st1, st2).fill(0x10000, write=True)  # the walk sets D in the stage-2 leaf
    assert s2.pte(data)[0] == 1 and s2.pte(data)[1] & VTD_D
    assert run.dmask == run.dfull == 0b1111
    s1_slot = run.dirty[0].slot0 + ((0x12000 + run.dirty[0].off) >> 12)
    host.u64_flat[s1_slot] &= np.uint64(~X86_D & ((1 << 64) - 1))
    run = Walker(host, st1, st2).fill(0x10000, write=False)
    assert run.dmask == 0b1011
