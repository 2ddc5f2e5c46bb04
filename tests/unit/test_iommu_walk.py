"""The hardware walker against the page-table engine's own view (iova_to_phys), per format; run
coalescing; permissions; A/D updates (nested walks: test_iommu_nested.py)."""

from __future__ import annotations

import errno
import random
from collections.abc import Callable

import pytest

from vfiolab.errors import UapiError
from vfiolab.iommu.fault import FaultReason
from vfiolab.iommu.pagetable import (
    IOMMU_READ,
    IOMMU_WRITE,
    X86_64,
    AmdV1,
    AmdV1Mock,
    ArmLpae,
    ArmPageTable,
    Format,
    PageTable,
    RiscV64,
    VtdSS,
)
from vfiolab.iommu.pagetable.vtdss import D as VTD_D
from vfiolab.iommu.walk import Stage, Walker, WalkError, mark_dirty
from vfiolab.memory.phys import PhysMemory

RW = IOMMU_READ | IOMMU_WRITE

FORMATS: dict[str, Callable[[], Format]] = {
    "amdv1": lambda: AmdV1(),
    "amdv1_mock": lambda: AmdV1Mock(),
    "x86_64": lambda: X86_64(),
    "vtdss": lambda: VtdSS(),
    "riscv64": lambda: RiscV64(hw_max_vasz_lg2=48),
    "arm_s1": lambda: ArmLpae(stage=1),
    "arm_s2": lambda: ArmLpae(stage=2),
}


def table(fmt: Format, mem: PhysMemory) -> PageTable:
    return ArmPageTable(fmt, mem) if isinstance(fmt, ArmLpae) else PageTable(fmt, mem)


def walker(pt: PageTable, span_lg2: int = 21, ad: bool = False) -> Walker:
    return Walker(pt.mem, Stage(pt.fmt, lambda: (pt.top_pa, pt.top_level), ad=ad), span_lg2=span_lg2)


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_walker_agrees_with_engine(name: str) -> None:
    """Every sampled address of every run maps where iova_to_phys says; unmapped addresses fault."""
    mem = PhysMemory(1 << 28)
    pt = table(FORMATS[name](), mem)
    rng = random.Random(name)
    g = 1 << pt.fmt.GRANULE_LG2
    mapped: list[tuple[int, int]] = []
    for _ in range(12):
        n = rng.choice([1, 2, 7, 16, 512])
        frames = mem.alloc_frames(max(1, n * g >> 12), contiguous=True, align=rng.choice([1, 512]))
        iova = rng.randrange(0, 1 << 30) & ~((1 << 21) - 1) | rng.choice([0, 8 * g])
        try:
            pt.map(iova, int(frames[0]) << 12, n * g, RW)
        except UapiError as err:  # overlaps an earlier random map
            assert err.errno in (errno.EADDRINUSE, errno.EEXIST)
        else:
            mapped.append((iova, n * g))
    w = walker(pt)
    assert mapped
    for iova, length in mapped:
        for a in (iova, iova + length // 2, iova + length - 1):
            run = w.fill(a, write=False)
            assert run.lo <= a < run.hi and run.r and run.w
            for b in {run.lo, a, run.hi - 1, (run.lo + run.hi) // 2}:
                assert pt.iova_to_phys(b) == run.pa + (b - run.lo)
    with pytest.raises(WalkError) as err:
        w.fill(pt.aperture[1] & ~0xFFF, write=False)
    assert err.value.reason in (FaultReason.NOT_PRESENT, FaultReason.ADDRESS_SIZE)


def test_contiguous_4k_leaves_coalesce_to_span() -> None:
    """512 physically contiguous 4 KiB leaves become one 2 MiB run; a hole splits it."""
    mem = PhysMemory(1 << 26)
    pt = PageTable(VtdSS(), mem)
    pt.pgsize_bitmap = 1 << 12
    frames = mem.alloc_frames(512, contiguous=True)
    pt.map(0x4000_0000, int(frames[0]) << 12, 1 << 21, RW)
    assert pt.pte(0x4000_0000)[0] == 0  # really 4 KiB leaves
    run = walker(pt).fill(0x4000_1234, write=True)
    assert (run.lo, run.hi, run.pa) == (0x4000_0000, 0x4020_0000, int(frames[0]) << 12)
    pt.unmap(0x4000_8000, 0x1000)
    run = walker(pt).fill(0x4000_1234, write=True)
    assert (run.lo, run.hi) == (0x4000_0000, 0x4000_8000)
    run = walker(pt).fill(0x4001_0000, write=True)
    assert (run.lo, run.hi) == (0x4000_9000, 0x4020_0000)


def test_discontiguous_and_mixed_permission_runs_split() -> None:
    mem = PhysMemory(1 << 26)
    pt = PageTable(X86_64(), mem)
    a, b = mem.alloc_frames(1), mem.alloc_frames(4, contiguous=True)
    pt.map(0x10000, int(a[0]) << 12, 0x1000, RW)
    pt.map(0x11000, (int(b[0]) + 1) << 12, 0x1000, RW)   # not contiguous with a
    pt.map(0x12000, (int(b[0]) + 2) << 12, 0x1000, IOMMU_READ)  # contiguous but read-only
    w = walker(pt)
    assert (w.fill(0x10000, False).hi, w.fill(0x11000, False).hi) == (0x11000, 0x12000)
    ro = w.fill(0x12000, False)
    assert not ro.w and (ro.lo, ro.hi) == (0x12000, 0x13000)
    with pytest.raises(WalkError) as err:
        w.fill(0x12000, True)
    assert err.value.reason == FaultReason.PERMISSION


def test_non_canonical_address_is_address_size_fault() -> None:
    """Sign-extended x86-64 tables: 0x0000_8000_0000_0000 is outside both canonical halves."""
    mem = PhysMemory(1 << 24)
    pt = PageTable(X86_64(), mem)
    with pytest.raises(WalkError) as err:
        walker(pt).fill(1 << 47, False)
    assert err.value.reason == FaultReason.ADDRESS_SIZE


def test_hardware_dirty_and_accessed_bits() -> None:
    """VT-d SS with SSADE: A on every entry used, D on the leaf written (VT-d §3.7.3)."""
    mem = PhysMemory(1 << 26)
    pt = PageTable(VtdSS(), mem)
    f = mem.alloc_frames(2, contiguous=True)
    pt.map(0x20000, int(f[0]) << 12, 0x2000, RW)
    w = walker(pt, ad=True)
    run = w.fill(0x20000, write=False)
    _, e = pt.pte(0x20000)
    assert e & VTD_D == 0
    assert not pt.read_and_clear_dirty(0x20000, 0x2000).any()
    mark_dirty(mem, run, 0x21000, 0x21010)
    assert list(pt.read_and_clear_dirty(0x20000, 0x2000, clear=False)) == [False, True]
    mark_dirty(mem, run, 0x21000, 0x21010)  # cached dirty state: nothing to do
    assert run.dmask == 0b10


def test_no_ad_without_tracking() -> None:
    mem = PhysMemory(1 << 26)
    pt = PageTable(VtdSS(), mem)
    f = mem.alloc_frames(1)
    pt.map(0x20000, int(f[0]) << 12, 0x1000, RW)
    run = walker(pt, ad=False).fill(0x20000, write=True)
    assert run.dirty == ()
    assert not pt.read_and_clear_dirty(0x20000, 0x1000).any()
