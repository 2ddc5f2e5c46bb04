"""Random map/unmap/dirty sequences against a plain reference model (like the kernel's
kunit test_random_map): every IOVA translates exactly as the model says, the table's frames are exactly
those reachable from its top, and nothing is left allocated after everything is unmapped."""

from __future__ import annotations

import errno

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

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
from vfiolab.memory import PhysMemory

RW = IOMMU_READ | IOMMU_WRITE
WINDOW = 1 << 33  # a small IOVA window, so that random ranges collide and share tables
MEM = PhysMemory(1 << 31)

# log2 of the alignment of a random range, in granules: mostly small pages, sometimes 2M/1G-able
ALIGN = st.sampled_from([0, 0, 0, 1, 4, 9, 9, 10, 18])


class PageTableModel(RuleBasedStateMachine):
    """One page table under random operations; subclasses pick the format."""

    make_fmt: staticmethod = staticmethod(lambda: VtdSS())
    arm = False

    def __init__(self) -> None:
        super().__init__()
        self.base = MEM.frames_in_use
        fmt: Format = self.make_fmt()
        self.pt = ArmPageTable(fmt, MEM) if self.arm else PageTable(fmt, MEM)  # type: ignore[arg-type]
        self.g = 1 << fmt.GRANULE_LG2
        self.ranges: dict[int, tuple[int, int]] = {}  # iova -> (length, pa)
        self.dirty: set[int] = set()  # granule-aligned IOVAs written since the last harvest

    @initialize()
    def start(self) -> None:
        assert self.pt.table_frames == self.pt.top_nframes

    def _overlaps(self, va: int, length: int) -> bool:
        return any(va < s + n and s < va + length for s, (n, _) in self.ranges.items())

    @rule(align=ALIGN, pages=st.integers(1, 700), slot=st.integers(0, WINDOW), pa_slot=st.integers(0, 1 << 30),
          skew=st.sampled_from([0, 0, 0, 1, 3]))
    def map(self, align: int, pages: int, slot: int, pa_slot: int, skew: int) -> None:
        unit = self.g << align
        length = pages * self.g if pages % 3 else unit * (1 + pages % 4)
        va = slot // unit * unit
        if va + length > WINDOW:
            return
        pa = pa_slot // unit * unit + (skew * self.g if align < 9 else 0)  # keeps leaf counts small
        overlap = self._overlaps(va, length)
        if self.arm and overlap:
            return  # io-pgtable replaces tables under blocks: modelled in the unit tests instead
        try:
            self.pt.map(va, pa, length, RW)
        except UapiError as e:
            assert overlap and e.errno == errno.EADDRINUSE, e
            return
        assert not overlap
        self.ranges[va] = (length, pa)

    @precondition(lambda self: self.ranges)
    @rule(pick=st.integers(0, 1 << 30), through=st.integers(0, 3), past=st.booleans())
    def unmap(self, pick: int, through: int, past: bool) -> None:
        """Unmap from a mapping's start across ``through`` adjacent mappings (iommu_unmap() may
        aggregate maps it does not split), optionally running on into the hole after them."""
        starts = sorted(self.ranges)
        va = starts[pick % len(starts)]
        end = va + self.ranges[va][0]
        for _ in range(through):
            if end not in self.ranges:
                break
            end += self.ranges[end][0]
        past = past and not self.arm and end not in self.ranges
        assert self.pt.unmap(va, end - va + (self.g if past else 0)) == end - va  # stops at the hole
        for s in [s for s in self.ranges if va <= s < end]:
            del self.ranges[s]
        self.dirty = {d for d in self.dirty if not va <= d < end}

    @precondition(lambda self: self.ranges)
    @rule(pick=st.integers(0, 1 << 30), frac=st.floats(0, 1, exclude_max=True))
    def write(self, pick: int, frac: float) -> None:
        """A device write through the hardware walk with A/D updates on."""
        starts = sorted(self.ranges)
        va = starts[pick % len(starts)]
        n, pa = self.ranges[va]
        iova = va + int(frac * n) // self.g * self.g
        t = self.pt.walk(iova, write=True, set_ad=True)
        assert t.pa == pa + iova - va  # type: ignore[union-attr]
        self.dirty.add(iova)

    @precondition(lambda self: self.ranges and self.pt.fmt.HAS_DIRTY)
    @rule()
    def harvest(self) -> None:
        """Every written page is reported dirty, but for the last item of a contiguous entry, which
        record_dirty() leaves out; afterwards nothing is."""
        bits = self.pt.read_and_clear_dirty(0, WINDOW, page_size=self.g)
        leaves = self.pt.leaves()
        gl = self.pt.fmt.GRANULE_LG2
        for d in self.dirty:
            iova, size, _ = max(leaf for leaf in leaves if leaf[0] <= d)
            item = 1 << (gl + (size.bit_length() - 1 - gl) // 9 * 9)
            if size == item or d < iova + size - item:
                assert bits[d // self.g], hex(d)
        assert not self.pt.read_and_clear_dirty(0, WINDOW, page_size=self.g).any()
        self.dirty.clear()

    @invariant()
    def translations(self) -> None:
        for va, (n, pa) in self.ranges.items():
            for off in (0, n - self.g, n // 2 // self.g * self.g):
                assert self.pt.iova_to_phys(va + off) == pa + off
        covered = sum(n for n, _ in self.ranges.values())
        leaves = self.pt.leaves()
        assert sum(size for _, size, _ in leaves) == covered
        for iova, size, oa in leaves:  # each leaf lies inside one mapping and translates linearly
            start = max(s for s in self.ranges if s <= iova)
            n, pa = self.ranges[start]
            assert iova + size <= start + n and oa == pa + iova - start

    @invariant()
    def no_leaked_tables(self) -> None:
        frames = self.pt.table_frame_list()
        assert len(frames) == len(np.unique(frames)) == self.pt.table_frames
        assert MEM.frames_in_use == self.base + self.pt.table_frames

    def teardown(self) -> None:
        for va, (n, _) in list(self.ranges.items()):
            assert self.pt.unmap(va, n) == n
        assert self.pt.leaves() == []
        self.pt.destroy()
        assert MEM.frames_in_use == self.base


def _machine(name: str, make_fmt: object, arm: bool = False) -> type[RuleBasedStateMachine]:
    cls = type(name, (PageTableModel,), {"make_fmt": staticmethod(make_fmt), "arm": arm})
    return settings(max_examples=20, stateful_step_count=25, deadline=None)(cls)  # type: ignore[no-any-return]


TestAmdV1 = _machine("AmdV1Model", lambda: AmdV1()).TestCase
TestAmdV1Mock = _machine("AmdV1MockModel", lambda: AmdV1Mock()).TestCase
TestX86_64 = _machine("X86Model", lambda: X86_64()).TestCase
TestVtdSS = _machine("VtdSSModel", lambda: VtdSS()).TestCase
TestRiscV = _machine("RiscVModel", lambda: RiscV64()).TestCase
TestArmS1 = _machine("ArmS1Model", lambda: ArmLpae(stage=1, quirks=frozenset({"IO_PGTABLE_QUIRK_ARM_HD"})),
                     arm=True).TestCase
