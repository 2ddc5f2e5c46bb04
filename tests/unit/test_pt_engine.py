"""The generic_pt semantics every format shares, ported from the kernel's KUnit suite
(drivers/iommu/generic_pt/kunit_iommu_pt.h) and from iommu_pt.h's map/unmap/dirty rules."""

from __future__ import annotations

import errno
from collections import Counter

import numpy as np
import pytest

from vfiolab.errors import UapiError
from vfiolab.iommu.pagetable import (
    IOMMU_READ,
    IOMMU_WRITE,
    X86_64,
    AmdV1,
    AmdV1Mock,
    FaultReason,
    Format,
    PageTable,
    RiscV64,
    Translation,
    VtdSS,
    WalkFault,
)
from vfiolab.iommu.pagetable.common import SIGN_EXTEND, best_pgsize, plan_leaves
from vfiolab.memory import PhysMemory

RW = IOMMU_READ | IOMMU_WRITE

# The kunit_fmt_cfgs of each format (fmt/*.h), plus the iommufd mock
CONFIGS = {
    "amdv1": lambda: AmdV1(starting_level=2),
    "amdv1_32": lambda: AmdV1(starting_level=2, hw_max_vasz_lg2=32),
    "amdv1_mock": lambda: AmdV1Mock(),
    "x86_64_48": lambda: X86_64(top_level=3, hw_max_vasz_lg2=48, features=frozenset({SIGN_EXTEND})),
    "x86_64_57": lambda: X86_64(top_level=4, hw_max_vasz_lg2=57, features=frozenset({SIGN_EXTEND})),
    "x86_64_amd47": lambda: X86_64(top_level=3, hw_max_vasz_lg2=47, features=frozenset()),
    "vtdss_39": lambda: VtdSS(top_level=2, hw_max_vasz_lg2=39),
    "vtdss_48": lambda: VtdSS(top_level=3, hw_max_vasz_lg2=48),
    "vtdss_57": lambda: VtdSS(top_level=4, hw_max_vasz_lg2=57),
    "riscv_39": lambda: RiscV64(hw_max_vasz_lg2=39),
    "riscv_48": lambda: RiscV64(hw_max_vasz_lg2=48, features=frozenset({SIGN_EXTEND, "DETAILED_GATHER"})),
}


@pytest.fixture(scope="module")
def mem() -> PhysMemory:
    return PhysMemory(1 << 32)


def make(name: str, mem: PhysMemory) -> PageTable:
    return PageTable(CONFIGS[name](), mem)


def safe_bitmap(pt: PageTable) -> int:
    """kunit_iommu.h: sizes that fit the VA, and at most 16 GiB to keep tables small here."""
    return pt.pgsize_bitmap & ((1 << (pt.fmt.max_vasz_lg2 - 1)) - 1) & ((1 << 35) - 1)


def sizes(pt: PageTable) -> list[int]:
    bm = safe_bitmap(pt)
    return [1 << b for b in range(64) if bm >> b & 1]


def test_oa(pt: PageTable, lg2: int) -> int:
    # kunit: test_oa = 0x74a71445deadbeef modulo the OA size, aligned down to the page
    return (0x74A71445DEADBEEF & ((1 << pt.fmt.max_oasz_lg2) - 1)) >> lg2 << lg2


test_oa.__test__ = False  # type: ignore[attr-defined]


def check_iova(pt: PageTable, va: int, pa: int, length: int) -> None:
    """Every smallest page of the range translates, sampled at the ends and the middle."""
    g = 1 << pt.fmt.GRANULE_LG2
    for off in {0, g, length // 2 // g * g, length - g}:
        if off < length:
            assert pt.iova_to_phys(va + off) == pa + off


def count_leaves(pt: PageTable) -> Counter[int]:
    return Counter(size for _, size, _ in pt.leaves())


@pytest.mark.parametrize("cfg", sorted(CONFIGS))
def test_map_simple(cfg: str, mem: PhysMemory) -> None:
    """kunit test_map_simple: one mapping of every page size, one leaf each, then unmap them all."""
    pt = make(cfg, mem)
    base = mem.frames_in_use
    start = pt.aperture[0] + (256 << pt.fmt.GRANULE_LG2)
    cur = start
    for size in sizes(pt):
        cur = -(-cur // size) * size
        pt.map(cur, test_oa(pt, size.bit_length() - 1), size, RW)
        check_iova(pt, cur, test_oa(pt, size.bit_length() - 1), size)
        cur += size
    assert count_leaves(pt) == Counter(sizes(pt))
    cur = start
    for size in sizes(pt):
        cur = -(-cur // size) * size
        assert pt.unmap(cur, size) == size
        cur += size
    assert pt.leaves() == []
    pt.destroy()
    assert mem.frames_in_use == base - 1


@pytest.mark.parametrize("cfg", ["amdv1", "amdv1_mock", "x86_64_48", "vtdss_39", "riscv_39"])
def test_map_table_to_oa(cfg: str, mem: PhysMemory) -> None:
    """kunit test_map_table_to_oa: fill a large page's span with each smaller size, unmap it so empty
    tables stay behind, then the next size replaces them."""
    pt = make(cfg, mem)
    limited = pt.pgsize_bitmap & ((1 << 34) - 1)
    max_pg = 1 << (limited.bit_length() - 1)
    va = -(-(pt.aperture[0] + (256 << pt.fmt.GRANULE_LG2)) // max_pg) * max_pg
    for size in sizes(pt):
        if size > max_pg:
            break
        if max_pg // size > 512:
            continue  # keep the test quick
        pa = test_oa(pt, size.bit_length() - 1)
        for off in range(0, max_pg, size):
            pt.map(va + off, pa + off, size, RW)
        check_iova(pt, va, pa, max_pg)
        assert count_leaves(pt) == Counter({size: max_pg // size})
        if size == max_pg:
            assert pt.unmap(va, max_pg) == max_pg
        else:
            assert pt.unmap(va, max_pg // 2) == max_pg // 2
            for off in range(max_pg // 2, max_pg, size):
                assert pt.unmap(va + off, size) == size
        assert pt.leaves() == []
    pt.destroy()


@pytest.mark.parametrize("cfg", ["amdv1", "amdv1_mock", "x86_64_48", "vtdss_48", "riscv_39"])
def test_unmap_split(cfg: str, mem: PhysMemory) -> None:
    """kunit test_unmap_split: unmapping a small page at the start of a large one removes the large
    one and reports its size, and does not run on into the next mapping."""
    pt = make(cfg, mem)
    szs = sizes(pt)
    done = 0
    for i, base in enumerate(szs):
        for nxt in szs[i + 1:]:
            if nxt > 1 << 31:
                continue
            va = pt.aperture[0]
            pt.map(va, 0, nxt, RW)
            assert pt.unmap(va, base) == nxt
            pt.map(va, 0, nxt, RW)
            pt.map(va + nxt, 0, nxt, RW)
            assert pt.unmap(va, base) == nxt
            assert pt.unmap(va + nxt, nxt) == nxt
            done += 1
    assert done
    pt.destroy()


@pytest.mark.parametrize("cfg", ["x86_64_48", "vtdss_48"])
def test_mixed(cfg: str, mem: PhysMemory) -> None:
    """kunit test_mixed: [0x3fe400000, 0x4c0600000) maps as 14 2M + 3 1G + 3 2M pages."""
    pt = make(cfg, mem)
    start, end = 0x3FE400 << 12, 0x4C0600 << 12
    pt.map(start, start, end - start, RW)
    assert count_leaves(pt) == Counter({1 << 21: 17, 1 << 30: 3})
    check_iova(pt, start, start, end - start)
    pt.destroy()


@pytest.mark.parametrize("cfg", ["amdv1", "x86_64_48", "vtdss_48", "riscv_39"])
def test_pgsize_boundary(cfg: str, mem: PhysMemory) -> None:
    """kunit test_pgsize_boundary (the AMD report): an odd-sized 4K-aligned range maps and translates."""
    pt = make(cfg, mem)
    pt.map(0xFEF80000, 0x208B95D000, 0xFEF9FFFF - 0xFEF80000 + 1, RW)
    check_iova(pt, 0xFEF80000, 0x208B95D000, 0x20000)
    pt.destroy()


def test_increase_level(mem: PhysMemory) -> None:
    """kunit test_increase_level: AMDv1 grows its top one level per map just past the top range,
    telling the driver (change_top) each time, up to the 64-bit maximum."""
    tops: list[tuple[int, int]] = []
    pt = PageTable(AmdV1(starting_level=2), mem, change_top=lambda pa, lvl: tops.append((pa, lvl)))
    assert pt.top_level == 2
    while pt.top_level < 5:
        level = pt.top_level
        old_top = pt.top_pa
        pt.map(1 << pt.fmt.top_vasz_lg2(level), 0, 4096, RW)
        assert pt.top_level == level + 1
        assert tops[-1] == (pt.top_pa, level + 1)
        assert pt.hw_info() == {"host_pt_root": pt.top_pa, "mode": level + 2}
        assert pt.pte(0)[0] < level + 1  # the old top hangs at index 0 of the new one
        assert mem.read_u64(pt.top_pa) & ((1 << 52) - (1 << 12)) == old_top
    pt.destroy()
    small = PageTable(AmdV1(starting_level=2, hw_max_vasz_lg2=48), mem)
    small.map(1 << 47, 0, 4096, RW)  # grows to level 3, which spans all 48 bits
    assert small.top_level == 3
    with pytest.raises(UapiError) as e:
        small.map(1 << 48, 0, 4096, RW)
    assert e.value.errno == errno.ERANGE
    small.destroy()


def test_no_growth_without_dynamic_top(mem: PhysMemory) -> None:
    """The mock has no PT_FEAT_DYNAMIC_TOP: 38 VA bits at starting level 2, ERANGE beyond."""
    pt = PageTable(AmdV1Mock(), mem)
    assert pt.aperture == (0, (1 << 38) - 1)
    with pytest.raises(UapiError) as e:
        pt.map(1 << 38, 0, 2048, RW)
    assert e.value.errno == errno.ERANGE
    pt.destroy()


# ---------------------------------------------------------------------- map errno (iommu_pt.h map_range)
@pytest.mark.parametrize(("iova", "pa", "length", "prot", "err"), [
    (0x1000, 0x1000, 0x1000, 0, errno.EINVAL),                     # neither READ nor WRITE
    (0x1000, 1 << 52, 0x1000, RW, errno.ERANGE),                   # pa beyond max_oasz
    (0x1000, 0x1000, 0, RW, errno.EINVAL),                         # zero length
    ((1 << 64) - 0x1000, 0, 0x2000, RW, errno.EOVERFLOW),          # iova + length wraps
    (0x1800, 0x1000, 0x1000, RW, errno.ENXIO),                     # no page size fits the alignment
    (0x1000, 0x1800, 0x1000, RW, errno.ENXIO),
    (1 << 47, 0, 0x1000, RW, errno.ERANGE),                        # non-canonical for SIGN_EXTEND 48
])
def test_map_errno(iova: int, pa: int, length: int, prot: int, err: int, mem: PhysMemory) -> None:
    pt = make("x86_64_48", mem)
    with pytest.raises(UapiError) as e:
        pt.map(iova, pa, length, prot)
    assert e.value.errno == err
    assert pt.leaves() == []
    pt.destroy()


def test_sign_extend_halves(mem: PhysMemory) -> None:
    """SIGN_EXTEND: the upper canonical half maps (index 256 up of the top), a non-canonical start is
    ERANGE, and the aperture is the lower half (pt_iommu_init_domain())."""
    pt = make("x86_64_48", mem)
    assert pt.aperture == (0, (1 << 47) - 1)
    hi = 0xFFFF_8000_0000_0000
    pt.map(hi, 0x5000, 0x1000, RW)
    assert pt.iova_to_phys(hi + 0x123) == 0x5123
    assert pt.iova_to_phys(0x1000) == 0
    top = mem.u64[pt.top_frame]
    assert top[256] != 0 and not top[:256].any()
    for va in (1 << 47, 0xFFFF_7FFF_FFFF_F000):
        with pytest.raises(UapiError) as e:
            pt.map(va, 0, 0x1000, RW)
        assert e.value.errno == errno.ERANGE
    assert pt.unmap(hi, 0x1000) == 0x1000
    pt.destroy()


def test_sign_extend_range_check_uses_the_start(mem: PhysMemory) -> None:
    """pt_check_range() takes the sign from the first address and compares only the bits above
    max_vasz_lg2, so a range running off the top of the lower half is accepted and its tail lands in
    the upper half's top-level slots (the IOMMU core's aperture check is what normally stops it)."""
    pt = make("x86_64_48", mem)
    pt.map((1 << 47) - 0x1000, 0x10_0000, 0x2000, RW)
    assert pt.iova_to_phys(0xFFFF_8000_0000_0000) == 0x10_1000
    pt.destroy()


def test_overlap_is_eaddrinuse_and_rolls_back(mem: PhysMemory) -> None:
    """A map meeting a leaf fails EADDRINUSE; what it had mapped before is unmapped again
    (iommu_map_nosync()), the old mapping stays, and no table leaks."""
    pt = make("vtdss_48", mem)
    pt.map(0x40_0000, 0x1_0000_0000, 0x1000, RW)
    before = pt.table_frames
    with pytest.raises(UapiError) as e:
        pt.map(0x20_0000, 0x2_0000_0000, 0x40_0000, RW)  # 2M page, then 4K pages onto the leaf
    assert e.value.errno == errno.EADDRINUSE
    assert pt.leaves() == [(0x40_0000, 0x1000, 0x1_0000_0000)]
    assert pt.iova_to_phys(0x20_0000) == 0
    assert pt.table_frames == before
    assert len(pt.table_frame_list()) == pt.table_frames
    pt.destroy()


def test_large_leaf_over_table_with_leaf_fails(mem: PhysMemory) -> None:
    """clear_contig(): a table holding a leaf where a large page goes is EADDRINUSE; an empty one is
    freed and replaced."""
    pt = make("x86_64_48", mem)
    pt.map(0x20_1000, 0x1000, 0x1000, RW)
    with pytest.raises(UapiError) as e:
        pt.map(0x20_0000, 0x4000_0000, 0x20_0000, RW)
    assert e.value.errno == errno.EADDRINUSE
    assert pt.unmap(0x20_1000, 0x1000) == 0x1000
    frames = pt.table_frames
    pt.map(0x20_0000, 0x4000_0000, 0x20_0000, RW)
    assert pt.table_frames == frames - 1  # the empty level-0 table was freed
    assert pt.pte(0x20_0000) == (1, 0x4000_0000 | 0xE7)
    pt.destroy()


def test_failed_length_keeps_kernel_tables(mem: PhysMemory) -> None:
    """A length no page size fits: ENXIO after mapping what fits; that part is undone but the tables
    the walk allocated stay, as with the kernel's unmap of a partly covered table."""
    pt = make("vtdss_48", mem)
    with pytest.raises(UapiError) as e:
        pt.map(0x1000, 0x1000, 0x1800, RW)
    assert e.value.errno == errno.ENXIO
    assert pt.leaves() == []
    assert pt.table_frames == 4  # top + the path down to the leaf table
    pt.destroy()


# ---------------------------------------------------------------------- unmap (iommu_pt.h __unmap_range)
def test_unmap_stops_at_hole(mem: PhysMemory) -> None:
    pt = make("vtdss_48", mem)
    pt.map(0x10_0000, 0x10_0000, 0x4000, RW)
    pt.map(0x10_5000, 0x20_0000, 0x1000, RW)
    assert pt.unmap(0x10_0000, 0x10000) == 0x4000  # stops at the hole at 0x104000
    assert pt.iova_to_phys(0x10_5000) == 0x20_0000
    assert pt.unmap(0x10_4000, 0x2000) == 0  # starts in a hole
    pt.destroy()


def test_unmap_inside_leaf_is_nothing(mem: PhysMemory) -> None:
    pt = make("amdv1", mem)
    pt.map(0x20_0000, 0x20_0000, 0x20_0000, RW)
    assert pt.unmap(0x20_1000, 0x1000) == 0
    assert pt.iova_to_phys(0x20_1000) == 0x20_1000
    assert pt.unmap(0x20_0000, 0x1000) == 0x20_0000
    pt.destroy()


def test_unmap_frees_only_covered_tables(mem: PhysMemory) -> None:
    """Tables go only when the unmap range covers their whole span; otherwise they stay, empty."""
    pt = make("vtdss_48", mem)
    pt.map(0x1000, 0x1000, 0x1000, RW)
    assert pt.table_frames == 4
    assert pt.unmap(0x1000, 0x1000) == 0x1000
    assert pt.table_frames == 4  # empty level-0/1/2 tables remain
    pt.map(0, 0, 1 << 30, RW)  # a 1G page replaces the empty level-1 table and below
    assert pt.table_frames == 2
    assert pt.unmap(0, 1 << 30) == 1 << 30
    pt.map(0, 0, 1 << 21, RW)
    pt.map(1 << 21, 1 << 21, 0x1000, RW)
    frames = pt.table_frames
    assert pt.unmap(0, (1 << 21) + 0x1000) == (1 << 21) + 0x1000
    assert pt.table_frames == frames  # the level-0 table under 2M..4M was not covered
    pt.map(0, 0, 1 << 30, RW)
    assert pt.unmap(0, 1 << 30) == 1 << 30
    assert pt.table_frames == 2  # top + level 2
    pt.map(0, 0x1000, 1 << 30, RW)  # 4K pages: a level-1 table and 512 level-0 tables
    assert pt.table_frames == 2 + 1 + 512
    assert pt.unmap(0, 1 << 30) == 1 << 30  # covers the level-2 item whole: all of them go
    assert pt.table_frames == 2
    pt.destroy()


def test_unmap_bad_ranges_return_zero(mem: PhysMemory) -> None:
    pt = make("x86_64_48", mem)
    pt.map(0, 0, 0x1000, RW)
    assert pt.unmap(0, 0) == 0
    assert pt.unmap(1 << 47, 0x1000) == 0
    assert pt.unmap((1 << 64) - 0x1000, 0x2000) == 0
    pt.destroy()


def test_destroy_frees_everything(mem: PhysMemory) -> None:
    base = mem.frames_in_use
    pt = make("riscv_39", mem)
    pt.map(0, 0x1000_0000, 3 << 30, RW)
    pt.map(5 << 30, 0x1000, 0x10_0000, RW)
    assert mem.frames_in_use == base + pt.table_frames
    assert sorted(pt.table_frame_list().tolist()) == sorted(set(pt.table_frame_list().tolist()))
    pt.destroy()
    assert mem.frames_in_use == base


# ---------------------------------------------------------------------- page size choice
def test_best_pgsize_matches_kernel_examples() -> None:
    """pt_compute_best_pgsize(): alignment of va and oa and the length bound the size."""
    bm = (1 << 12) | (1 << 21) | (1 << 30)
    assert best_pgsize(bm, 0, (1 << 30) - 1, 0) == 30
    assert best_pgsize(bm, 0, (1 << 30) - 1, 0x1000) == 12
    assert best_pgsize(bm, 0x20_0000, 0x3F_FFFF, 0x40_0000) == 21
    assert best_pgsize(bm, 0x800, 0x1FFF, 0) == 0
    segs, fail = plan_leaves(bm, 0x1F_F000, 0x40_0FFF, 0x1F_F000)
    assert [(s.lg2, s.count) for s in segs] == [(12, 1), (21, 1), (12, 1)] and fail is None


# ---------------------------------------------------------------------- dirty
def test_dirty_unsupported_formats(mem: PhysMemory) -> None:
    """x86_64 and riscv have no pt_entry_is_write_dirty(): EOPNOTSUPP."""
    for cfg in ("x86_64_48", "riscv_39"):
        pt = make(cfg, mem)
        pt.map(0, 0, 0x1000, RW)
        with pytest.raises(UapiError) as e:
            pt.read_and_clear_dirty(0, 0x1000)
        assert e.value.errno == errno.EOPNOTSUPP
        with pytest.raises(UapiError) as e:
            pt.set_dirty(0)
        assert e.value.errno == errno.EOPNOTSUPP
        pt.destroy()


def test_dirty_bitmap_and_clear(mem: PhysMemory) -> None:
    pt = make("vtdss_48", mem)
    pt.map(0, 0x100_0000, 1 << 21, RW)             # 2M leaf
    pt.map(1 << 21, 0x200_0000, 0x10_0000, RW)     # 256 4K leaves
    for va in (0x3000, (1 << 21) + 0x5000, (1 << 21) + 0xF_F000):
        pt.set_dirty(va)
    with pytest.raises(UapiError) as e:
        pt.set_dirty(0x40_0000)
    assert e.value.errno == errno.ENOENT
    bits = pt.read_and_clear_dirty(0, (1 << 21) + 0x10_0000, clear=False)
    want = np.zeros(512 + 256, dtype=bool)
    want[:512] = True  # the whole 2M leaf is reported
    want[512 + 5] = want[512 + 255] = True
    assert np.array_equal(bits, want)
    assert np.array_equal(pt.read_and_clear_dirty(0, (1 << 21) + 0x10_0000), want)  # NO_CLEAR kept them
    assert not pt.read_and_clear_dirty(0, (1 << 21) + 0x10_0000).any()
    pt.set_dirty((1 << 21) + 0x5000)
    per_2m = pt.read_and_clear_dirty(0, 1 << 22, page_size=1 << 21)
    assert per_2m.tolist() == [False, True]
    assert pt.flushes and pt.flushes[-1].iova == 0
    pt.destroy()


def test_dirty_first_leaf_reported_from_range_start(mem: PhysMemory) -> None:
    """record_dirty(): the first leaf is recorded at range->va, so a range starting inside a dirty
    2M leaf reports a full 2M from there, spilling into the next (clean) leaf."""
    pt = make("vtdss_48", mem)
    pt.map(0, 0, 1 << 22, RW)  # two 2M leaves
    pt.set_dirty(0x1000)
    bits = pt.read_and_clear_dirty(0x10_0000, (1 << 22) - 0x10_0000, clear=False, page_size=1 << 20)
    assert bits.tolist() == [True, True, False]  # 1M..3M reported, 3M..4M not
    pt.destroy()


def test_dirty_contiguous_reports_one_item_less(mem: PhysMemory) -> None:
    """record_dirty() on a contiguous AMDv1 entry reports (last item - first item) items: one short
    of its size.  An 8K entry (two 2K mock items) is reported as 2K."""
    pt = PageTable(AmdV1Mock(), mem)
    pt.map(0x100_0000, 0x10_0000, 0x2000, RW)  # one 8K leaf: 4 items of 2K, NextLevel 7
    assert pt.pte(0x100_0000)[1] & (7 << 9) == 7 << 9
    pt.set_dirty(0x100_1800)  # any item makes the entry dirty
    bits = pt.read_and_clear_dirty(0x100_0000, 0x2000, clear=False)
    assert bits.tolist() == [True, True, True, False]
    assert pt.read_and_clear_dirty(0x100_0000, 0x2000, page_size=0x1000).tolist() == [True, True]
    assert not pt.read_and_clear_dirty(0x100_0000, 0x2000).any()  # cleaning cleared all 4 items
    pt.destroy()


# ---------------------------------------------------------------------- hardware walk
def test_walk_permissions_and_faults(mem: PhysMemory) -> None:
    pt = make("x86_64_48", mem)
    pt.map(0x1000, 0x7000, 0x1000, IOMMU_READ)
    t = pt.walk(0x1234, write=False)
    assert isinstance(t, Translation) and (t.pa, t.size, t.level, t.read, t.write) == (0x7234, 0x1000, 0, True, False)
    f = pt.walk(0x1234, write=True)
    assert isinstance(f, WalkFault) and f.reason is FaultReason.PERMISSION and f.level == 0
    f = pt.walk(0x2000)
    assert isinstance(f, WalkFault) and f.reason is FaultReason.NOT_PRESENT and f.level == 0
    f = pt.walk(0x8000_0000_0000)
    assert isinstance(f, WalkFault) and f.reason is FaultReason.ADDRESS_SIZE
    assert mem.read_u64(t.pte_pa) == pt.pte(0x1000)[1]
    pt.destroy()


def test_walk_sets_accessed_and_dirty(mem: PhysMemory) -> None:
    """x86 first stage: A in every entry used, D in the written leaf; VT-d SS likewise with SSADE."""
    pt = make("x86_64_48", mem)
    pt.map(0x20_0000, 0x40_0000, 0x20_0000, RW)
    leaf_slot = pt.walk(0x20_0000).pte_pa  # type: ignore[union-attr]
    mem.write_u64(leaf_slot, mem.read_u64(leaf_slot) & ~((1 << 5) | (1 << 6)))
    pt.walk(0x20_0000, write=False, set_ad=True)
    assert mem.read_u64(leaf_slot) & 0x60 == 0x20
    pt.walk(0x20_0000, write=True, set_ad=True)
    assert mem.read_u64(leaf_slot) & 0x60 == 0x60
    pt.destroy()
    v = make("vtdss_48", mem)
    v.map(0, 0x1000, 0x1000, RW)
    assert not v.read_and_clear_dirty(0, 0x1000).any()
    v.walk(0, write=True, set_ad=True)
    assert v.read_and_clear_dirty(0, 0x1000).tolist() == [True]
    v.destroy()


def test_format_is_the_engines_only_view() -> None:
    """Every format answers the engine's questions for both a Python int and a uint64 array."""
    for make_fmt in CONFIGS.values():
        fmt: Format = make_fmt()
        e = fmt.leaf(0, 0x5000, fmt.GRANULE_LG2, fmt.set_prot(RW))
        arr = np.array([e, 0], dtype=np.uint64)
        assert bool(fmt.present(e)) and fmt.present(arr).tolist() == [True, False]
        assert int(fmt.oa(e, 0)) == int(fmt.oa(arr, 0)[0]) == 0x5000
        t = fmt.table(1, 0x9000)
        assert bool(fmt.is_table(t, 1)) and int(fmt.table_pa(t)) == 0x9000
