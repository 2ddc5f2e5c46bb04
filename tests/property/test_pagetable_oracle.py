"""Differential test against a reference walker: a deliberately plain, entry-at-a-time recursive
implementation of generic_pt's map and unmap rules (iommu_pt.h: leaves installed one by one in VA
order, tables made when a walk needs them, clear_contig() freeing empty tables, __unmap_range()
stopping at holes and freeing the tables a range covers, iommu_map_nosync() undoing a failed map).

After random maps (overlapping ones included) and unmaps of arbitrary ranges, the vectorised engine and
the reference must agree on every return value and errno, every leaf entry bit for bit, and which
items hold tables: the same tables exist in both, made and freed at the same moments.
"""

from __future__ import annotations

import errno

import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from vfiolab.errors import UapiError
from vfiolab.iommu.pagetable import (
    IOMMU_READ,
    IOMMU_WRITE,
    X86_64,
    AmdV1,
    AmdV1Mock,
    Format,
    PageTable,
    RiscV64,
    VtdSS,
)
from vfiolab.memory import PhysMemory

RW = IOMMU_READ | IOMMU_WRITE
ITEMS = 512


class Reference:
    """generic_pt map/unmap, one entry at a time (no growth of the top: tests stay under it)."""

    def __init__(self, fmt: Format, mem: PhysMemory, pgsize_bitmap: int) -> None:
        self.fmt, self.mem, self.bitmap = fmt, mem, pgsize_bitmap
        self.level = fmt.top_level
        self.vasz = fmt.top_vasz_lg2(self.level)
        self.top = mem.alloc_frame()
        self.frames = 1

    # entries
    def _slot(self, frame: int, level: int, va: int) -> int:
        isz = self.fmt.item_lg2(level)
        index = va >> isz if level == self.level else (va >> isz) % ITEMS
        return frame * ITEMS + index

    def _get(self, slot: int) -> int:
        return int(self.mem.u64_flat[slot])

    def _set(self, slot: int, value: int) -> None:
        self.mem.u64_flat[slot] = value

    def _is_table(self, e: int, level: int) -> bool:
        return level > 0 and bool(self.fmt.present(e)) and bool(self.fmt.is_table(e, level))

    def _child(self, e: int) -> int:
        return int(self.fmt.table_pa(e)) >> 12

    def _new_table(self, slot: int, level: int) -> int:
        frame = self.mem.alloc_frame()
        self.frames += 1
        self._set(slot, int(self.fmt.table(level, frame << 12)))
        return frame

    def _kids(self, frame: int, level: int, n: int = ITEMS) -> tuple[list[int], list[int], bool]:
        """One table: (indices of table items, their child frames, whether it holds any leaf)."""
        row = self.mem.u64_flat[frame * ITEMS:frame * ITEMS + n]
        present = self.fmt.present(row)
        table = present & self.fmt.is_table(row, level) if level else present & False
        idx = np.flatnonzero(table)
        return idx.tolist(), [self._child(int(e)) for e in row[idx]], bool((present & ~table).any())

    def _has_leaf(self, frame: int, level: int) -> bool:
        _, kids, leaf = self._kids(frame, level)
        return leaf or any(self._has_leaf(k, level - 1) for k in kids)

    def _free(self, frame: int, level: int) -> None:
        for k in self._kids(frame, level)[1]:
            self._free(k, level - 1)
        self.mem.free_frames([frame])
        self.frames -= 1

    # map
    def _range_ok(self, va: int, last: int) -> bool:
        """pt_check_range(): the bits above the table's VA size are the sign (or zero)."""
        sign = (1 << 64) - 1 if self.fmt.has("SIGN_EXTEND") and va >> (self.vasz - 1) & 1 else 0
        return va >> self.vasz == sign >> self.vasz == last >> self.vasz

    def map(self, iova: int, pa: int, length: int, prot: int) -> None:
        fmt = self.fmt
        if pa >> fmt.max_oasz_lg2:
            raise UapiError(errno.ERANGE)
        attrs = fmt.set_prot(prot)
        if not self._size(iova, iova + length, pa):
            raise UapiError(errno.ENXIO)  # before anything is touched
        if not self._range_ok(iova, iova + length - 1):
            raise UapiError(errno.ERANGE)
        mask = (1 << self.vasz) - 1
        va, end = iova, iova + length
        while va < end:
            size = self._size(va, end, pa)
            try:
                if not size:
                    self._dead_end(va & mask)
                self._install(va & mask, pa, size, attrs)
            except UapiError:
                if va > iova:
                    self.unmap(iova, va - iova)  # iommu_map_nosync()
                raise
            va, pa = va + size, pa + size

    def _size(self, va: int, end: int, pa: int) -> int:
        """Largest page size of the bitmap that va and pa are aligned to and that fits."""
        best = 0
        for lg2 in range(64):
            size = 1 << lg2
            if self.bitmap & size and not (va | pa) & (size - 1) and va + size <= end:
                best = size
        return best

    def _dead_end(self, v: int) -> None:
        """No size fits: the walk makes tables down to level 0 and fails there (or meets a leaf)."""
        frame = self.top
        for level in range(self.level, -1, -1):
            slot = self._slot(frame, level, v)
            e = self._get(slot)
            if self.fmt.present(e) and (level == 0 or not self._is_table(e, level)):
                raise UapiError(errno.EADDRINUSE)
            if level == 0:
                raise UapiError(errno.ENXIO)
            frame = self._child(e) if self.fmt.present(e) else self._new_table(slot, level)

    def _install(self, v: int, pa: int, size: int, attrs: int) -> None:
        fmt = self.fmt
        leaf_level = fmt.pgsz_to_level(size.bit_length() - 1)
        frame = self.top
        for level in range(self.level, leaf_level, -1):
            slot = self._slot(frame, level, v)
            e = self._get(slot)
            if not fmt.present(e):
                frame = self._new_table(slot, level)
            elif self._is_table(e, level):
                frame = self._child(e)
            else:
                raise UapiError(errno.EADDRINUSE)
        isz = fmt.item_lg2(leaf_level)
        for k in range(size >> isz):  # clear_contig(): item by item, empty tables freed on the way
            slot = self._slot(frame, leaf_level, v + (k << isz))
            e = self._get(slot)
            if self._is_table(e, leaf_level):
                if self._has_leaf(self._child(e), leaf_level - 1):
                    raise UapiError(errno.EADDRINUSE)
                self._free(self._child(e), leaf_level - 1)
                self._set(slot, 0)
            elif fmt.present(e):
                raise UapiError(errno.EADDRINUSE)
        value = fmt.leaf(leaf_level, pa, size.bit_length() - 1, attrs)
        for k in range(size >> isz):
            self._set(self._slot(frame, leaf_level, v + (k << isz)), value)

    # unmap
    def unmap(self, iova: int, length: int) -> int:
        last = iova + length - 1
        if not length or last >> 64 or not self._range_ok(iova, last):
            return 0
        mask = (1 << self.vasz) - 1
        self.done = 0
        self._unmap(self.top, self.level, iova & mask, last & mask, iova & mask)
        return self.done

    def _unmap(self, frame: int, level: int, v0: int, v1: int, va: int) -> bool:
        """One table's share of [va, v1]: False once it meets a hole or starts inside a leaf."""
        fmt = self.fmt
        isz = fmt.item_lg2(level)
        span = self.vasz if level == self.level else isz + 9
        stop = min(v1, (va >> span << span) + (1 << span) - 1)
        first = True
        while va <= stop:
            slot = self._slot(frame, level, va)
            e = self._get(slot)
            start = va >> isz << isz
            if not fmt.present(e):
                return False
            if self._is_table(e, level):
                if not self._unmap(self._child(e), level - 1, v0, v1, va):
                    return False
                if start >= v0 and start + (1 << isz) - 1 <= v1:  # the range covers it: it goes
                    self._free(self._child(e), level - 1)
                    self._set(slot, 0)
                va = start + (1 << isz)
            else:
                size = 1 << (isz + fmt.contig_lg2(e, level))
                block = va // size * size
                if first and va != block:
                    return False
                for k in range(size >> isz):
                    self._set(self._slot(frame, level, block + (k << isz)), 0)
                self.done += size
                va = block + size
            first = False
        return True

    def tables(self) -> set[tuple[int, int]]:
        """(level, VA >> item size) of every item that holds a table."""
        out: set[tuple[int, int]] = set()

        def walk(frame: int, level: int, base: int, n: int) -> None:
            idx, kids, _ = self._kids(frame, level, n)
            for i, k in zip(idx, kids):
                g = base << 9 | i
                out.add((level, g))
                walk(k, level - 1, g, ITEMS)
        walk(self.top, self.level, 0, 1 << (self.vasz - self.fmt.item_lg2(self.level)))
        return out


def engine_tables(pt: PageTable) -> set[tuple[int, int]]:
    levels, _ = pt._visit(0, (1 << pt._vasz()) - 1)  # the engine's own read-only walk of everything
    return {(lvl, int(g)) for lvl, it in levels.items() for g in it.g[it.table].tolist()}


class Differential(RuleBasedStateMachine):
    make_fmt: staticmethod = staticmethod(lambda: VtdSS())

    def __init__(self) -> None:
        super().__init__()
        self.mem = PhysMemory(1 << 28)
        self.pt = PageTable(self.make_fmt(), self.mem)
        self.pt.pgsize_bitmap &= (1 << 31) - 1  # pages up to 1G: keeps the reference's loops short
        self.ref = Reference(self.make_fmt(), self.mem, self.pt.pgsize_bitmap)
        self.g = 1 << self.pt.fmt.GRANULE_LG2

    @rule(slot=st.integers(0, 1 << 40), align=st.sampled_from([0, 0, 1, 2, 9, 9, 10, 18]), count=st.integers(1, 40),
          pa=st.integers(0, 1 << 20), skew=st.sampled_from([0, 0, 1, 2]),
          odd=st.sampled_from([False, False, False, True]))
    def map(self, slot: int, align: int, count: int, pa: int, skew: int, odd: bool) -> None:
        """Maps that may overlap existing ones; ``skew`` offsets the PA by one level-0 or one level-1
        item so that a whole table of smaller leaves is made; ``odd`` makes a length no page size fits."""
        unit = self.g << align
        if align >= 9:
            count = 1 + count % 3
            if count > 1 or skew > (align // 9):
                skew = 0
        va = slot % (1 << 32) // unit * unit
        length = count * unit + (self.g // 2 if odd else 0)
        pa = pa * unit % (1 << 40) + (self.g << (9 * (skew - 1)) if skew else 0)
        results = []
        for table in (self.pt, self.ref):
            try:
                table.map(va, pa, length, RW)
                results.append(0)
            except UapiError as e:
                results.append(e.errno)
        assert results[0] == results[1], (hex(va), hex(pa), hex(length), results)

    @rule(slot=st.integers(0, 1 << 40), align=st.sampled_from([0, 1, 9, 9, 10, 18]), count=st.integers(1, 8))
    def unmap(self, slot: int, align: int, count: int) -> None:
        """Unmaps of arbitrary ranges: inside leaves, across holes, covering tables or not."""
        unit = self.g << align
        va = slot % (1 << 32) // unit * unit
        assert self.pt.unmap(va, count * unit) == self.ref.unmap(va, count * unit), (hex(va), hex(count * unit))

    @invariant()
    def same_tables_and_leaves(self) -> None:
        assert self.pt.table_frames == self.ref.frames
        assert engine_tables(self.pt) == self.ref.tables()
        leaves = self.pt.leaves()
        for va, _, _ in leaves[::max(1, len(leaves) // 64)]:  # a spread sample, bit for bit
            assert self.pt.pte(va) == self._ref_pte(va), hex(va)

    def _ref_pte(self, va: int) -> tuple[int, int]:
        ref, frame = self.ref, self.ref.top
        for level in range(ref.level, -1, -1):
            e = ref._get(ref._slot(frame, level, va))
            if not ref._is_table(e, level):
                return level, e
            frame = ref._child(e)
        raise AssertionError("unreachable")

    def teardown(self) -> None:
        self.mem.close()


@pytest.mark.parametrize("make_fmt", [VtdSS, AmdV1, AmdV1Mock, X86_64, RiscV64],
                         ids=["vtdss", "amdv1", "amdv1_mock", "x86_64", "riscv64"])
def test_engine_matches_reference(make_fmt: object) -> None:
    machine = type("Differential", (Differential,), {"make_fmt": staticmethod(make_fmt)})
    run_state_machine_as_test(machine, settings=settings(max_examples=15, stateful_step_count=20, deadline=None))
