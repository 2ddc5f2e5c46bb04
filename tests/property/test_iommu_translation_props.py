"""Properties of the translation machinery: the IOTLB/ATC cache never answers for an address it was
told to forget and always answers with what it stored; the hardware walker's runs agree page by page
with the page table's own iova_to_phys and permissions, for every format."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from vfiolab.errors import UapiError
from vfiolab.iommu.iotlb import Run, TranslationCache
from vfiolab.iommu.pagetable import (
    IOMMU_READ,
    IOMMU_WRITE,
    X86_64,
    AmdV1,
    ArmLpae,
    ArmPageTable,
    PageTable,
    RiscV64,
    VtdSS,
)
from vfiolab.iommu.walk import Stage, Walker, WalkError
from vfiolab.memory.phys import PhysMemory

PAGE = 4096
SPAN_LG2 = 15  # 8 pages per span

op = st.one_of(
    st.tuples(st.just("insert"), st.integers(0, 2), st.integers(0, 31), st.integers(1, 8), st.integers(0, 64)),
    st.tuples(st.just("inval"), st.integers(0, 2), st.integers(0, 31), st.integers(1, 12), st.booleans()),
    st.tuples(st.just("lookup"), st.integers(0, 2), st.integers(0, 31), st.just(0), st.just(0)),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(op, max_size=60), st.sampled_from([(4, 1), (4, 2), (8, 4)]))
def test_cache_answers_only_what_it_holds(ops: list[tuple[str, int, int, int, object]],
                                          geometry: tuple[int, int]) -> None:
    """Model: page -> pa for every (tag, page) stored and not invalidated since; a hit must agree,
    a miss is always allowed (eviction)."""
    entries, ways = geometry
    c = TranslationCache("p", entries=entries, ways=ways, span_lg2=SPAN_LG2)
    model: dict[tuple[int, int], int] = {}
    for kind, tag, page, n, arg in ops:
        addr = page * PAGE
        if kind == "insert":
            span_lo = addr >> SPAN_LG2 << SPAN_LG2
            hi = min(addr + n * PAGE, span_lo + (1 << SPAN_LG2))
            lo = max(span_lo, addr - (n // 2) * PAGE)
            pa = int(arg) * PAGE
            if c.lookup(tag, addr) is not None:
                continue  # the hardware only fills after a miss
            got = c.insert(tag, Run(lo, hi, pa, True, True), addr)
            assert got.lo <= addr < got.hi and lo <= got.lo and got.hi <= hi
            for p in range(got.lo // PAGE, got.hi // PAGE):
                model[(tag, p)] = got.pa + p * PAGE - got.lo
        elif kind == "inval":
            every_tag = bool(arg)
            c.invalidate(addr, addr + n * PAGE, tag=None if every_tag else tag)
            for key in [k for k in model if page <= k[1] < page + n and (every_tag or k[0] == tag)]:
                del model[key]
        else:
            run = c.lookup(tag, addr)
            if run is not None:
                assert model.get((tag, page)) == run.pa + (addr - run.lo)
    for (tag, page), pa in model.items():  # whatever is still cached is still right
        run = c.lookup(tag, page * PAGE)
        assert run is None or run.pa + page * PAGE - run.lo == pa


FORMATS = {
    "vtdss": lambda: VtdSS(),
    "x86_64": lambda: X86_64(),
    "amdv1": lambda: AmdV1(),
    "riscv64": lambda: RiscV64(hw_max_vasz_lg2=48),
    "arm_lpae_s1": lambda: ArmLpae(stage=1),
    "arm_lpae_s2": lambda: ArmLpae(stage=2),
}

mapping = st.tuples(st.integers(0, 1023), st.integers(1, 40), st.integers(0, 1), st.booleans())


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(sorted(FORMATS)), st.lists(mapping, min_size=1, max_size=12),
       st.lists(st.integers(0, 1024 * PAGE + 40 * PAGE), min_size=1, max_size=20), st.booleans())
def test_walker_runs_match_the_table(name: str, maps: list[tuple[int, int, int, bool]], probes: list[int],
                                     write: bool) -> None:
    """For random maps (mixed permissions, physically contiguous or not), every address of every run a
    fill returns translates, page by page, as the table says; unmapped or write-protected addresses
    fault."""
    mem = PhysMemory(1 << 26)
    try:
        check_runs(mem, name, maps, probes, write)
    finally:
        mem.close()


def check_runs(mem: PhysMemory, name: str, maps: list[tuple[int, int, int, bool]], probes: list[int],
               write: bool) -> None:
    fmt = FORMATS[name]()
    pt = ArmPageTable(fmt, mem) if isinstance(fmt, ArmLpae) else PageTable(fmt, mem)
    writable: dict[int, bool] = {}
    for page, n, gap, rw in maps:
        frames = mem.alloc_frames(n + gap, contiguous=True)
        try:
            pt.map(0x4000_0000 + page * PAGE, (int(frames[0]) + gap) << 12, n * PAGE,
                   IOMMU_READ | (IOMMU_WRITE if rw else 0))
        except UapiError:
            continue
        for p in range(page, page + n):
            writable[p] = rw
    w = Walker(mem, Stage(pt.fmt, lambda: (pt.top_pa, pt.top_level)), span_lg2=21)
    for probe in probes:
        addr = 0x4000_0000 + probe
        page = probe // PAGE
        try:
            run = w.fill(addr, write)
        except WalkError:
            assert page not in writable or (write and not writable[page])
            continue
        assert page in writable and (writable[page] or not write)
        for p in range(run.lo // PAGE, (run.hi - 1) // PAGE + 1):
            a = p * PAGE
            assert pt.iova_to_phys(a) == run.pa + (a - run.lo)
            assert (a - 0x4000_0000) // PAGE in writable
            assert run.w == writable[(a - 0x4000_0000) // PAGE]
