"""The hardware walker's runs against a page-by-page reading of the same table, for every format: a
fill returns the *largest* stretch, inside the IOTLB span and the leaf's table, of items equal to the
leaf apart from output address and A/D bits whose output continues the leaf's; and with hardware A/D
on, the entry starts out holding the dirty state of exactly the granules whose leaves were already
dirty when it was walked (generic_pt/pt_common.h pt_entry_make_write_clean(): what a TLB entry holds
is synchronised by the flush, not by the table)."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from vfiolab.errors import UapiError
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
from vfiolab.iommu.pagetable.arm_lpae import QUIRK_ARM_HD
from vfiolab.iommu.pagetable.common import MASK64
from vfiolab.iommu.walk import Stage, Walker, WalkError
from vfiolab.memory.phys import PhysMemory

PAGE = 4096
BASE = 0x4000_0000
SPAN_LG2 = 16  # 16 pages per span: runs end at spans, tables and differing neighbours

FORMATS: dict[str, Callable[[], Format]] = {
    "vtdss": lambda: VtdSS(),
    "x86_64": lambda: X86_64(),
    "amdv1": lambda: AmdV1(),
    "amdv1_mock": lambda: AmdV1Mock(),
    "riscv64": lambda: RiscV64(hw_max_vasz_lg2=48),
    "arm_s1": lambda: ArmLpae(stage=1),
    "arm_s1_hd": lambda: ArmLpae(stage=1, quirks=frozenset({QUIRK_ARM_HD})),
    "arm_s2": lambda: ArmLpae(stage=2),
}

# (first page, pages, frames skipped before the run, writable)
mapping = st.tuples(st.integers(0, 600), st.integers(1, 40), st.integers(0, 1), st.booleans())


def leaf_keep(fmt: Format, level: int) -> int:
    """Entry bits that must equal the leaf's: all but the output address and the A/D bits."""
    isz = fmt.item_lg2(level)
    top = ((1 << fmt.max_oasz_lg2) - 1) & ~((1 << isz) - 1)
    oa_bits = fmt.leaf(level, top, isz, 0) ^ fmt.leaf(level, 0, isz, 0)
    ad_bits = fmt.hw_update(0, level, True, True) | fmt.hw_update(0, level, False, True)
    return MASK64 & ~(oa_bits | ad_bits)


def reference_run(pt: PageTable, addr: int) -> tuple[int, int]:
    """[lo, hi) of the run around ``addr``, item by item through the engine's own view."""
    fmt = pt.fmt
    level, e0 = pt.pte(addr)
    isz = fmt.item_lg2(level)
    keep = leaf_keep(fmt, level)
    item0 = addr >> isz << isz
    pa0 = pt.iova_to_phys(item0)
    tab = isz + 9
    lo_bound = max(addr >> SPAN_LG2 << SPAN_LG2, addr >> tab << tab)
    hi_bound = min((addr >> SPAN_LG2 << SPAN_LG2) + (1 << SPAN_LG2), (addr >> tab << tab) + (1 << tab))

    def same(va: int) -> bool:
        lvl, e = pt.pte(va)
        return (lvl == level and fmt.present(e) and not (lvl and fmt.is_table(e, lvl))
                and (e ^ e0) & keep == 0 and pt.iova_to_phys(va) == pa0 + (va - item0))

    lo = item0
    while lo - (1 << isz) >= lo_bound and same(lo - (1 << isz)):
        lo -= 1 << isz
    hi = item0 + (1 << isz)
    while hi < hi_bound and same(hi):
        hi += 1 << isz
    if isz >= SPAN_LG2:  # a leaf at least a span large: the span around addr
        return addr >> SPAN_LG2 << SPAN_LG2, (addr >> SPAN_LG2 << SPAN_LG2) + (1 << SPAN_LG2)
    return lo, hi


def held_reference(pt: PageTable, lo: int, hi: int, glg2: int) -> int:
    """Granules of [lo, hi) whose leaf a write would leave unchanged (already write dirty)."""
    fmt = pt.fmt
    mask = 0
    for k, va in enumerate(range(lo, hi, 1 << glg2)):
        level, e = pt.pte(va)
        if fmt.hw_update(e, level, True, True) == e:
            mask |= 1 << k
    return mask


@settings(max_examples=80, deadline=None)
@given(st.sampled_from(sorted(FORMATS)), st.lists(mapping, min_size=1, max_size=10),
       st.lists(st.integers(0, 640 * PAGE), min_size=1, max_size=12), st.booleans(),
       st.lists(st.tuples(st.integers(0, 640), st.integers(0, 3)), max_size=30))
def test_runs_are_maximal_and_hold_dirty_state(name: str, maps: list[tuple[int, int, int, bool]],
                                               probes: list[int], write: bool,
                                               flips: list[tuple[int, int]]) -> None:
    mem = PhysMemory(1 << 26)
    try:
        check(mem, name, maps, probes, write, flips)
    finally:
        mem.close()


def check(mem: PhysMemory, name: str, maps: list[tuple[int, int, int, bool]], probes: list[int], write: bool,
          flips: list[tuple[int, int]]) -> None:
    fmt = FORMATS[name]()
    pt = ArmPageTable(fmt, mem) if isinstance(fmt, ArmLpae) else PageTable(fmt, mem)
    for page, n, gap, rw in maps:
        frames = mem.alloc_frames(n + gap, contiguous=True)
        try:
            pt.map(BASE + page * PAGE, (int(frames[0]) + gap) << 12, n * PAGE,
                   IOMMU_READ | (IOMMU_WRITE if rw else 0))
        except UapiError:
            continue
    # leaves with A/D bits in every combination (what hardware or a dirty harvest left behind)
    ad = fmt.hw_update(0, 0, True, True) | fmt.hw_update(0, 0, False, True)
    for page, bits in flips:
        level, e = pt.pte(BASE + page * PAGE)
        if level == 0 and fmt.present(e) and ad:
            slot = leaf_slot(pt, BASE + page * PAGE)
            pick = (ad & -ad if bits & 1 else 0) | (ad & (ad - 1) if bits & 2 else 0)
            mem.u64_flat[slot] = (e & ~ad & MASK64) | pick
    for probe in probes:
        addr = BASE + probe
        plain = Walker(mem, Stage(pt.fmt, lambda: (pt.top_pa, pt.top_level)), span_lg2=SPAN_LG2)
        try:
            run = plain.fill(addr, write)
        except WalkError:
            continue
        assert (run.lo, run.hi) == reference_run(pt, addr), (hex(addr), run)
        assert run.dmask == 0 and run.dirty == ()
        tracked = Walker(mem, Stage(pt.fmt, lambda: (pt.top_pa, pt.top_level), ad=True), span_lg2=SPAN_LG2)
        run = tracked.fill(addr, write)  # sets A (and D on a write) in the leaf first, as hardware does
        assert run.dmask == held_reference(pt, run.lo, run.hi, run.glg2), (hex(addr), bin(run.dmask))
        assert run.dfull == (1 << len(range(run.lo, run.hi, 1 << run.glg2))) - 1


def leaf_slot(pt: PageTable, va: int) -> int:
    """u64 index in RAM of the leaf item translating ``va`` (found through the walker)."""
    w = Walker(pt.mem, Stage(pt.fmt, lambda: (pt.top_pa, pt.top_level), ad=True), span_lg2=12)
    run = w.fill(va, False)
    t = run.dirty[0]
    return t.slot0 + ((va + t.off) >> t.isz)
