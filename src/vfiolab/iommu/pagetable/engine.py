"""The page-table engine: ``drivers/iommu/generic_pt/iommu_pt.h`` over simulated RAM, on ranges.

One :class:`PageTable` is one IOMMU page table of one :class:`~.common.Format`, its tables being frames
of a :class:`~vfiolab.memory.PhysMemory`.  Operations work level by level on numpy arrays: the entries
an operation touches at one level are read or written with one fancy-indexed expression, and a run of
leaves is written into its leaf tables with one broadcast (architecture decision 2).

Semantics are generic_pt's, including its corner cases:

* map (``map_range()`` + ``iommu_map()``): leaves are the largest the domain's ``pgsize_bitmap``,
  alignment and length allow; an existing leaf, or a table holding a leaf, where a leaf goes is
  EADDRINUSE; empty tables under a new large leaf are freed; on failure what was mapped is unmapped
  again (tables allocated meanwhile stay, as in the kernel).
* unmap (``unmap_range()``): stops at the first hole; a leaf is removed whole, so unmapping the first
  part of a large page returns its full size; starting inside a leaf unmaps nothing; a table is freed
  only when the unmap range covers its whole span (empty tables left by partial unmaps stay until then,
  or until :meth:`PageTable.destroy`).
* dirty (``read_and_clear_dirty()``): reports what ``record_dirty()`` reports, including that a
  contiguous entry reports one item less than its size and that the first leaf is reported from the
  range start.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, NamedTuple

import numpy as np
import numpy.typing as npt

from vfiolab.errors import UapiError
from vfiolab.faultinject import fail_point
from vfiolab.iommu.pagetable.common import (
    DYNAMIC_TOP,
    HW_FAULT,
    HW_LEAF,
    IOMMU_READ,
    IOMMU_WRITE,
    ITEMS,
    ITEMS_LG2,
    MASK64,
    SIGN_EXTEND,
    U64,
    FaultReason,
    Format,
    Segment,
    Translation,
    WalkFault,
    plan_leaves,
)
from vfiolab.memory.phys import FRAME_SHIFT, PhysMemory, frame_run

I64 = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]
_IDX: Final = np.arange(ITEMS, dtype=np.int64)
_IDX_U64: Final = _IDX.astype(np.uint64)
_TEMPLATE_ROWS: Final = 8
_ALLOC_TABLE: Final = "iommu_alloc_pages_node_sz: table page"
"""The fault-injection point of every table page (ENOMEM; a failed map keeps the tables it made)."""


@dataclass(frozen=True, slots=True)
class Flush:
    """An IOTLB invalidation an operation owes (``struct iommu_iotlb_gather``): [iova, iova+length)
    of input addresses, and whether table pages were freed (walk caches must go too)."""

    iova: int
    length: int
    tables_freed: bool = False


class _Items(NamedTuple):
    """Items at one level: global item indices (VA >> item size), entries, frame holding each,
    which are present, which are tables, and the table frames of those (in order)."""

    g: I64
    e: U64
    f: I64
    present: Bools
    table: Bools
    children: I64
    tables: bool = False
    """Every item is a present table (the usual case above level 0 inside a big range)."""


class _Rows(NamedTuple):
    """Level-0 tables: table numbers (VA >> table span) and frames, in VA order."""

    t: I64
    f: I64


class _Path(NamedTuple):
    """Items at one level that must be tables for a map: item indices, the child table frame of each
    (-1: none, the item holds a leaf), which hold a leaf, and which tables this map allocated."""

    g: I64
    child: I64
    leaf: Bools
    fresh: Bools
    new: bool = False
    """Every table at this level was just allocated (``fresh.all()``; so none holds a leaf)."""


class _Scan(NamedTuple):
    """What installing a leaf plan would run into (phase one of a map)."""

    conflict: int | None
    partial: tuple[int, I64, I64] | None
    to_free: list[tuple[int, I64, I64]]


def _arange_items(tables: I64) -> I64:
    return (tables[:, None] * ITEMS + _IDX[None, :]).reshape(-1)


class PageTable:
    """An IOMMU page table (``struct pt_iommu``) of one format in simulated physical memory.

    ``change_top(top_pa, top_level)`` is the driver op called when the table grows a level
    (PT_FEAT_DYNAMIC_TOP).  Operations append the IOTLB invalidations they owe to :attr:`flushes`;
    the owner (the domain) drains it.
    """

    EXISTS: int = errno.EADDRINUSE
    """errno of a map over an existing mapping."""

    def __init__(self, fmt: Format, mem: PhysMemory, *,
                 change_top: Callable[[int, int], None] | None = None) -> None:
        self.fmt = fmt
        self.mem = mem
        self.change_top = change_top
        self.flushes: list[Flush] = []
        """IOTLB invalidations owed by the operations so far, oldest first; drained by the owner."""
        self.top_level = fmt.top_level
        self.pgsize_bitmap = self._info_pgsize_bitmap()
        """The domain's page sizes (``domain->pgsize_bitmap``); a driver may narrow it."""
        self.aperture = self._aperture()
        """(first, last) IOVA of the domain geometry (``pt_iommu_init_domain()``)."""
        top_items = 1 << (fmt.top_vasz_lg2(self.top_level) - fmt.item_lg2(self.top_level))
        self.top_nframes = max(1, top_items // ITEMS)  # a concatenated top spans contiguous frames
        fail_point(_ALLOC_TABLE)
        self.top_frame = int(mem.alloc_frames(self.top_nframes, contiguous=True, align=self.top_nframes)[0])
        self.table_frames = self.top_nframes
        """Frames this table owns, the top included: its share of ``mem.frames_in_use``."""
        self._templates: dict[tuple[int, int], U64] = {}

    # ------------------------------------------------------------------ geometry and info
    def _info_pgsize_bitmap(self) -> int:
        # iommu_pt.h NS(get_info)
        fmt = self.fmt
        bitmap = 0
        if fmt.has(DYNAMIC_TOP):
            for level in range(fmt.MAX_TOP_LEVEL + 1):
                if fmt.item_lg2(level) >= fmt.max_vasz_lg2:
                    break
                bitmap |= fmt.possible_sizes(level)
        else:
            for level in range(self.top_level + 1):
                bitmap |= fmt.possible_sizes(level)
        bitmap &= (1 << (fmt.max_vasz_lg2 - 1)) - 1
        return bitmap & ((1 << fmt.max_oasz_lg2) - 1)

    def _aperture(self) -> tuple[int, int]:
        # iommu_pt.h pt_iommu_init_domain(): the top range, at the maximum level when it can grow
        level = self.fmt.MAX_TOP_LEVEL if self.fmt.has(DYNAMIC_TOP) else self.top_level
        vasz = self.fmt.top_vasz_lg2(level) - (1 if self.fmt.has(SIGN_EXTEND) else 0)
        return 0, (1 << vasz) - 1

    @property
    def top_pa(self) -> int:
        """Physical address of the top table (what the device or context entry points at)."""
        return self.top_frame << FRAME_SHIFT

    def hw_info(self) -> dict[str, int]:
        """The format's ``pt_iommu_<fmt>_hw_info()``: root pointer and level encoding for hardware."""
        return self.fmt.hw_info(self.top_pa, self.top_level)

    def _vasz(self) -> int:
        return self.fmt.top_vasz_lg2(self.top_level)

    def _top_index(self, v: int) -> int:
        return v >> self.fmt.item_lg2(self.top_level)

    def _range_errno(self, va: int, last: int, vasz: int) -> int:
        # pt_iter.h pt_check_range()
        prefix = MASK64 if self.fmt.has(SIGN_EXTEND) and (va >> (vasz - 1)) & 1 else 0
        if (va >> vasz) != (prefix >> vasz) or (last >> vasz) != (prefix >> vasz):
            return errno.ERANGE
        return 0

    def _make_range(self, iova: int, length: int) -> tuple[int, int]:
        """iommu_pt.h make_range(): (first, last) with the sign extension removed, or UapiError."""
        if length == 0:
            raise UapiError(errno.EINVAL, "zero length")
        last = iova + length - 1
        if iova < 0 or length < 0 or last > MASK64:
            raise UapiError(errno.EOVERFLOW, f"range {iova:#x}+{length:#x} overflows")
        vasz = self._vasz()
        err = self._range_errno(iova, last, vasz)
        if err:
            raise UapiError(err, f"[{iova:#x}, {last:#x}] outside the {vasz}-bit table")
        mask = (1 << vasz) - 1
        return iova & mask, last & mask

    def _flush(self, iova: int, length: int, tables_freed: bool = False) -> None:
        self.flushes.append(Flush(iova, length, tables_freed))

    # ------------------------------------------------------------------ entry access
    def _entries(self, level: int, g: I64, f: I64) -> U64:
        """Entries of items ``g`` at ``level`` held in frames ``f`` (-1: a missing table reads 0)."""
        if level == self.top_level:
            return self.mem.u64_flat[self.top_frame * ITEMS + g]
        e = self.mem.u64[np.maximum(f, 0), g & (ITEMS - 1)]
        if len(f) and f.min() < 0:
            e[f < 0] = 0
        return e

    def _store(self, level: int, g: I64, f: I64, values: U64 | int) -> None:
        if level == self.top_level:
            self.mem.u64_flat[self.top_frame * ITEMS + g] = values
        else:
            self.mem.u64[f, g & (ITEMS - 1)] = values

    def _block(self, frames: I64) -> tuple[U64, bool]:
        """Rows of the table frames, and whether that is a view (one ascending run) or a copy."""
        run = frame_run(frames)
        return (self.mem.u64[run], True) if run is not None else (self.mem.u64[frames], False)

    def _children(self, e: U64) -> I64:
        return self.fmt.table_frame(e).astype(np.int64)  # type: ignore[no-any-return]

    def _path(self, v: int) -> list[tuple[int, int, int, int]]:
        """The kernel's descent for one VA: (level, frame, index, entry) down to the first entry that
        is not a table (pt_load_single_entry() at each level)."""
        fmt = self.fmt
        level, frame, index = self.top_level, self.top_frame, self._top_index(v)
        u64 = self.mem.u64_flat
        out = []
        while True:
            e = u64.item(frame * ITEMS + index)
            out.append((level, frame, index, e))
            if level == 0 or not fmt.present(e) or not fmt.is_table(e, level):
                return out
            frame = int(fmt.table_frame(e))
            level -= 1
            index = (v >> fmt.item_lg2(level)) & (ITEMS - 1)

    def _leaf_span(self, level: int, e: int) -> int:
        return self.fmt.item_lg2(level) + self.fmt.contig_lg2(e, level)

    # ------------------------------------------------------------------ lookups
    def iova_to_phys(self, iova: int) -> int:
        """iommu_pt.h iova_to_phys(): the physical address ``iova`` maps to, 0 when unmapped."""
        try:
            v, _ = self._make_range(iova, 1)
        except UapiError:
            return 0
        level, _, _, e = self._path(v)[-1]
        if not self.fmt.present(e):
            return 0
        return int(self.fmt.oa(e, level)) | (v & ((1 << self._leaf_span(level, e)) - 1))

    def pte(self, iova: int) -> tuple[int, int]:
        """(level, entry) where the kernel's walk of ``iova`` ends: the leaf, or the empty entry."""
        v, _ = self._make_range(iova, 1)
        level, _, _, e = self._path(v)[-1]
        return level, e

    # ------------------------------------------------------------------ map
    def map(self, iova: int, pa: int, length: int, prot: int) -> None:
        """iommu_map(): map [iova, iova+length) to ``pa`` with IOMMU_* ``prot``; raises UapiError
        after undoing a partial map, as iommu_map_nosync() does."""
        fmt = self.fmt
        # iommu_pt.h NS(map_range), in its order of checks
        if not prot & (IOMMU_READ | IOMMU_WRITE):
            raise UapiError(errno.EINVAL, "map without IOMMU_READ or IOMMU_WRITE")
        if pa < 0 or (fmt.max_oasz_lg2 != 64 and pa >> fmt.max_oasz_lg2):
            raise UapiError(errno.ERANGE, f"pa {pa:#x} beyond the {fmt.max_oasz_lg2}-bit output size")
        attrs = fmt.set_prot(prot)
        if length == 0:
            raise UapiError(errno.EINVAL, "zero length")
        last = iova + length - 1
        if iova < 0 or length < 0 or last > MASK64:
            raise UapiError(errno.EOVERFLOW, f"range {iova:#x}+{length:#x} overflows")
        segs, fail = plan_leaves(self.pgsize_bitmap, iova, last, pa)
        if not segs:
            raise UapiError(errno.ENXIO, f"no page size fits iova {iova:#x} pa {pa:#x} length {length:#x}")
        self._check_map_range(iova, last, fmt.pgsz_to_level(segs[0].lg2))
        mask = (1 << self._vasz()) - 1
        v0 = iova & mask
        nsegs = [Segment(s.va & mask, s.oa, s.lg2, s.count) for s in segs]
        if fail is None:
            self._map_segments(iova, v0, nsegs, v0 + length, 0, attrs)
        else:
            self._map_segments(iova, v0, nsegs, fail & mask, errno.ENXIO, attrs)

    def _map_segments(self, iova: int, v0: int, segs: list[Segment], stop: int, err: int, attrs: int) -> None:
        """Install the leaf plan ``segs`` (normalised VAs from ``v0``) up to ``stop``, where the map
        fails with ``err`` (0: it does not), or earlier at a mapping in the way; undo on failure."""
        fmt = self.fmt
        res = self._resolve(segs, stop)
        scan = self._scan_map(segs, res)
        if scan.conflict is not None and scan.conflict < stop:
            stop, err = scan.conflict, self.EXISTS
        if err:  # the kernel's walk stops there: nothing at or after it is allocated or mapped
            self._drop_fresh(res, stop)
            segs = [s if s.end <= stop else Segment(s.va, s.oa, s.lg2, (stop - s.va) >> s.lg2)
                    for s in segs if s.va < stop]
        if segs:
            to_free = []
            for lv, g, f in scan.to_free:  # replaced tables before the stop point
                before = g < (stop + (1 << fmt.item_lg2(lv)) - 1) >> fmt.item_lg2(lv)
                if before.any():
                    to_free.append((lv, g[before], f[before]))
            self._install(segs, res, attrs, to_free, iova, stop - v0)
        if err == self.EXISTS and scan.partial is not None:
            self._free_tables(*scan.partial)  # freed on the way before meeting the leaf
        if err == errno.ENXIO:
            err = self._path_for_failed_size(stop)
        if err:
            if stop > v0:
                self.unmap(iova, stop - v0)  # iommu_map_nosync(): undo what was mapped
            raise UapiError(err, f"map failed at {iova + stop - v0:#x}")

    def _check_map_range(self, va: int, last: int, leaf_level: int) -> None:
        # iommu_pt.h check_map_range() and increase_top()
        fmt = self.fmt
        if not fmt.has(DYNAMIC_TOP):
            err = self._range_errno(va, last, self._vasz())
            if err:
                raise UapiError(err, f"[{va:#x}, {last:#x}] outside the {self._vasz()}-bit table")
            return
        level = self.top_level
        while self._range_errno(va, last, fmt.top_vasz_lg2(level)) or leaf_level > level:
            level += 1
            if level > fmt.MAX_TOP_LEVEL or fmt.item_lg2(level) >= fmt.max_vasz_lg2:
                raise UapiError(errno.ERANGE, f"[{va:#x}, {last:#x}] beyond the table's reach")
        if level == self.top_level:
            return
        while self.top_level < level:  # each new top links the old one at index 0
            fail_point(_ALLOC_TABLE)
            new = self.mem.alloc_frame()
            self.mem.u64[new, 0] = fmt.table(self.top_level + 1, self.top_pa)
            self.table_frames += 1
            self.top_frame = new
            self.top_level += 1
        if self.change_top is not None:
            self.change_top(self.top_pa, self.top_level)

    def _needed(self, segs: list[Segment], level: int) -> I64:
        """Items at ``level`` that must be tables: those above leaves of lower levels."""
        fmt = self.fmt
        isz = fmt.item_lg2(level)
        parts = [np.arange(s.va >> isz, ((s.end - 1) >> isz) + 1, dtype=np.int64)
                 for s in segs if fmt.pgsz_to_level(s.lg2) < level]
        if len(parts) <= 1:
            return parts[0] if parts else np.empty(0, dtype=np.int64)
        return np.unique(np.concatenate(parts))

    def _frames_of(self, level: int, tables: I64, parent: _Path | None) -> I64:
        """Frames of the level-``level`` tables numbered ``tables`` (-1 where missing)."""
        if level == self.top_level or parent is None:
            return np.full(len(tables), self.top_frame, dtype=np.int64)
        if len(parent.g) == 1:
            return np.full(len(tables), int(parent.child[0]), dtype=np.int64)
        return parent.child[np.searchsorted(parent.g, tables)]

    def _root(self, v0: int, v1: int, floor: int, create: bool = False,
              partial_only: bool = False) -> tuple[int, int, bool]:
        """Descend with plain ints through the levels where [v0, v1] lies in one item that is a table
        (allocating it with ``create`` when empty; with ``partial_only`` not into an item the range
        covers whole), not below ``floor``: (level, table frame, whether that table was just
        allocated).  The range walks then start there."""
        fmt = self.fmt
        level, frame, fresh = self.top_level, self.top_frame, False
        u64 = self.mem.u64_flat
        while level > floor and v0 >> fmt.item_lg2(level) == v1 >> fmt.item_lg2(level):
            isz = fmt.item_lg2(level)
            if partial_only and v0 & ((1 << isz) - 1) == 0 and (v1 + 1) & ((1 << isz) - 1) == 0:
                break
            index = self._top_index(v0) if level == self.top_level else (v0 >> isz) & (ITEMS - 1)
            e = int(u64[frame * ITEMS + index])
            if not fmt.present(e):
                if not create:
                    break
                fail_point(_ALLOC_TABLE)
                e = int(fmt.table(level, self.mem.alloc_frame() << FRAME_SHIFT))
                u64[frame * ITEMS + index] = e
                self.table_frames += 1
                fresh = True
            elif not fmt.is_table(e, level):
                break
            frame = int(fmt.table_pa(e)) >> FRAME_SHIFT
            level -= 1
        return level, frame, fresh

    def _resolve(self, segs: list[Segment], stop: int) -> dict[int, _Path]:
        """The tables along the paths of ``segs``, per level above their leaves, allocating the
        missing ones in bulk per level (not under items that hold a leaf).  ``stop``: where the leaves
        will end when nothing is in the way (a whole new subtree: its leaf tables that the leaves
        before ``stop`` fill are not cleared first)."""
        fmt = self.fmt
        out: dict[int, _Path] = {}
        v0, v1 = segs[0].va, segs[-1].end - 1
        floor = fmt.pgsz_to_level(segs[0].lg2) if len(segs) == 1 else max(fmt.pgsz_to_level(s.lg2) for s in segs)
        top, frame, fresh = self._root(v0, v1, floor + 1, True)
        parent: _Path | None = None
        if top < self.top_level:  # the single item above the root, as if it had been resolved
            parent = out[top + 1] = _Path(np.array([v0 >> fmt.item_lg2(top + 1)], dtype=np.int64),
                                          np.array([frame], dtype=np.int64), np.zeros(1, dtype=bool),
                                          np.array([fresh]), fresh)
        for level in range(top, 0, -1):
            g = self._needed(segs, level)
            if not len(g):
                break
            f = self._frames_of(level, g >> ITEMS_LG2, parent)
            if parent is not None and parent.new:  # under tables this map just made: all empty
                fail_point(_ALLOC_TABLE, count=len(g))
                full = self._filled_tables(segs, stop, g) if fresh and level == 1 else None
                child = self.mem.alloc_frames(len(g), zero=full is None)
                if full is not None and np.count_nonzero(full) < len(full):
                    self.mem.u64[child[~full]] = 0
                self.table_frames += len(g)
                self._link(level, g, f, child)
                out[level] = parent = _Path(g, child, np.zeros(len(g), dtype=bool), np.ones(len(g), dtype=bool),
                                            True)
                continue
            child = np.full(len(g), -1, dtype=np.int64)
            leaf = np.zeros(len(g), dtype=bool)
            missing = f >= 0
            if parent is None or not parent.new:  # tables this map just made are empty
                e = self._entries(level, g, f)
                present = fmt.present(e)
                table = present & fmt.is_table(e, level)
                child[table] = self._children(e[table])
                leaf = present & ~table
                missing &= ~present
            if missing.all():  # all new (the usual case): no selection needed
                fail_point(_ALLOC_TABLE, count=len(g))
                child = self.mem.alloc_frames(len(g))
                self.table_frames += len(g)
                self._link(level, g, f, child)
            elif missing.any():
                fail_point(_ALLOC_TABLE, count=int(missing.sum()))
                new = self.mem.alloc_frames(int(missing.sum()))
                self.table_frames += len(new)
                self._store(level, g[missing], f[missing], fmt.table(level, new.astype(np.uint64) << FRAME_SHIFT))
                child[missing] = new
            out[level] = parent = _Path(g, child, leaf, missing, bool(missing.all()))
        return out

    def _filled_tables(self, segs: list[Segment], stop: int, tables: I64) -> Bools:
        """Which level-0 tables (numbered ``tables``) the level-0 leaves of ``segs`` before ``stop``
        write whole (_install() writes every item of a leaf run, contiguous ones included)."""
        full = np.zeros(len(tables), dtype=bool)
        isz = self.fmt.item_lg2(0)
        for s in segs:
            end = min(s.end, stop)
            if self.fmt.pgsz_to_level(s.lg2) == 0 and end > s.va:
                lo = ((s.va >> isz) + ITEMS - 1) >> ITEMS_LG2  # first table starting inside the run
                hi = (end >> isz) >> ITEMS_LG2  # first table ending beyond it
                if lo <= int(tables[0]) and int(tables[-1]) < hi:
                    full[:] = True  # (tables are sorted)
                elif hi > lo:
                    full |= (tables >= lo) & (tables < hi)
        return full

    def _link(self, level: int, g: I64, f: I64, child: I64) -> None:
        """Point the items ``g`` at ``level`` (held in frames ``f``; sorted, as _needed() gives them) at
        the new tables ``child`` (ascending, as alloc_frames() gives them).  Consecutive items of one
        table getting a run of frames is one ramp written in place: a table entry is flags plus a
        shifted PA field, so consecutive frames step it by one constant."""
        fmt = self.fmt
        n = len(g)
        g0, c0 = int(g[0]), int(child[0])
        if (1 < n <= ITEMS and int(g[-1]) - g0 == n - 1 and int(child[-1]) - c0 == n - 1
                and (level == self.top_level or g0 >> ITEMS_LG2 == int(g[-1]) >> ITEMS_LG2)):
            e0 = int(fmt.table(level, c0 << FRAME_SHIFT))
            stride = int(fmt.table(level, (c0 + 1) << FRAME_SHIFT)) - e0
            if 0 < stride and int(fmt.table(level, (c0 + n - 1) << FRAME_SHIFT)) == e0 + (n - 1) * stride:
                at = self.top_frame * ITEMS + g0 if level == self.top_level else int(f[0]) * ITEMS + (g0 & (ITEMS - 1))
                dst = self.mem.u64_flat[at:at + n]
                np.multiply(_IDX_U64[:n], np.uint64(stride), out=dst)
                dst += np.uint64(e0)
                return
        self._store(level, g, f, fmt.table(level, child.astype(np.uint64) << FRAME_SHIFT))

    def _drop_fresh(self, res: dict[int, _Path], stop: int) -> None:
        """Free the tables this map allocated for items starting at or after ``stop``."""
        fmt = self.fmt
        for level in sorted(res):
            path = res[level]
            isz = fmt.item_lg2(level)
            drop = path.fresh & (path.g >= (stop + (1 << isz) - 1) >> isz)
            if drop.any():
                f = self._frames_of(level, path.g[drop] >> ITEMS_LG2, res.get(level + 1))
                self._store(level, path.g[drop], f, 0)
                self._release(path.child[drop])
                path.child[drop] = -1

    def _seg_tables(self, seg: Segment, res: dict[int, _Path]) -> tuple[int, I64, I64, int, int]:
        """(level, table numbers, frames (-1: missing), first item, last item) of a segment's leaves."""
        level = self.fmt.pgsz_to_level(seg.lg2)
        isz = self.fmt.item_lg2(level)
        g0, g1 = seg.va >> isz, (seg.end - 1) >> isz
        if level == self.top_level:
            return level, np.zeros(1, dtype=np.int64), np.full(1, self.top_frame, dtype=np.int64), g0, g1
        t0, t1 = g0 >> ITEMS_LG2, g1 >> ITEMS_LG2
        parent = res[level + 1]
        # the parent items are sorted and include t0..t1, so those are a slice of them
        a = 0 if int(parent.g[0]) == t0 else int(np.searchsorted(parent.g, t0))
        return level, parent.g[a:a + t1 - t0 + 1], parent.child[a:a + t1 - t0 + 1], g0, g1

    def _seg_fresh(self, seg: Segment, res: dict[int, _Path]) -> Bools:
        """Which of a segment's leaf tables this map allocated."""
        level = self.fmt.pgsz_to_level(seg.lg2)
        if level == self.top_level:
            return np.zeros(1, dtype=bool)
        isz = self.fmt.item_lg2(level)
        t0, t1 = seg.va >> isz >> ITEMS_LG2, (seg.end - 1) >> isz >> ITEMS_LG2
        parent = res[level + 1]
        a = int(np.searchsorted(parent.g, t0))
        return parent.fresh[a:a + t1 - t0 + 1]

    def _present_items(self, level: int, t: I64, f: I64, g0: int, g1: int) -> _Items | None:
        """Present items in [g0, g1] of existing tables (t, f); None when there are none."""
        if level == self.top_level:
            g = np.arange(g0, g1 + 1, dtype=np.int64)
            e = self.mem.u64_flat[self.top_frame * ITEMS + g]
            fr = np.full(len(g), self.top_frame, dtype=np.int64)
        else:
            block, _ = self._block(f)
            if not self.fmt.any_present(block):
                return None
            g = _arange_items(t)
            keep = (g >= g0) & (g <= g1)
            g, e, fr = g[keep], block.reshape(-1)[keep], np.repeat(f, ITEMS)[keep]
        it = self._items(level, g, e, fr)
        if not it.present.any():
            return None
        p = it.present
        return _Items(it.g[p], it.e[p], it.f[p], p[p], it.table[p], it.children)

    def _scan_map(self, segs: list[Segment], res: dict[int, _Path]) -> _Scan:
        """Phase one of a map, read-only: the first VA where a leaf would meet a mapping (a leaf
        where a table is needed: __map_range(); a leaf or a table holding one where a leaf goes:
        clear_contig()), the tables clear_contig() frees inside that leaf before failing, and the
        empty tables at leaf levels the new leaves replace."""
        fmt = self.fmt
        conflict: int | None = None
        for level, path in res.items():
            if not path.new and path.leaf.any():
                c = max(int(path.g[np.argmax(path.leaf)]) << fmt.item_lg2(level), segs[0].va)
                conflict = c if conflict is None else min(conflict, c)
        partial = None
        to_free: list[tuple[int, I64, I64]] = []
        for seg in segs:
            if conflict is not None and conflict <= seg.va:
                break
            parent = res.get(self.fmt.pgsz_to_level(seg.lg2) + 1)
            if parent is not None and parent.new:
                continue  # every table of this level was just made: nothing in the way
            level, t, f, g0, g1 = self._seg_tables(seg, res)
            have = (f >= 0) & ~self._seg_fresh(seg, res)
            if not have.any():
                continue
            items = self._present_items(level, t[have], f[have], g0, g1)
            if items is None:
                continue
            bad = ~items.table
            tab = items.table
            if tab.any():
                bad[tab] = self._tables_in_the_way(level, items.children)
            if bad.any():
                h = int(items.g[np.argmax(bad)])
                first_item = self._failed_from(seg, level, g0, h)
                c = first_item << fmt.item_lg2(level)
                if conflict is None or c < conflict:
                    conflict = c
                    before = (items.g >= first_item) & (items.g < h) & tab
                    partial = (level, items.g[before], items.f[before]) if before.any() else None
            ok = tab & ~bad
            if ok.any():
                to_free.append((level, items.g[ok], items.f[ok]))
        return _Scan(conflict, partial, to_free)

    def _failed_from(self, seg: Segment, level: int, g0: int, h: int) -> int:
        """First item of what fails when item ``h`` is in the way: the leaf being installed there
        (clear_contig() checks a whole contiguous leaf before writing it)."""
        clg2 = seg.lg2 - self.fmt.item_lg2(level)
        return g0 + (((h - g0) >> clg2) << clg2)

    def _tables_in_the_way(self, level: int, frames: I64) -> Bools:
        """Which tables under items where leaves go make the map fail: those holding a leaf
        (__collect_tables() with check_mapped); empty ones are freed instead."""
        return self._subtrees_mapped(level, frames)

    def _subtrees_mapped(self, level: int, frames: I64) -> Bools:
        """For tables at ``level``-1 (one per owner): does any hold a leaf at any depth?"""
        fmt = self.fmt
        owner = np.arange(len(frames), dtype=np.int64)
        busy = np.zeros(len(frames), dtype=bool)
        lvl = level - 1
        while len(frames):
            e = self.mem.u64[frames].reshape(-1)
            own = np.repeat(owner, ITEMS)
            present = fmt.present(e)
            tab = present & fmt.is_table(e, lvl) if lvl else np.zeros(len(e), dtype=bool)
            busy[own[present & ~tab]] = True
            frames, owner = self._children(e[tab]), own[tab]
            lvl -= 1
        return busy

    def _subtree_frames(self, level: int, frames: I64) -> I64:
        """All table frames at or below the level-``level`` tables ``frames``, deepest first."""
        fmt = self.fmt
        out = [frames]
        while level > 0 and len(frames):
            e = self.mem.u64[frames].reshape(-1)
            frames = self._children(e[fmt.present(e) & fmt.is_table(e, level)])
            out.append(frames)
            level -= 1
        return np.concatenate(out[::-1])

    def _free_tables(self, level: int, g: I64, f: I64) -> None:
        """Clear the table items ``g`` at ``level`` (held in frames ``f``) and free their subtrees."""
        children = self._children(self._entries(level, g, f))
        self._store(level, g, f, 0)
        self._release(self._subtree_frames(level - 1, children))

    def _release(self, frames: I64) -> None:
        if len(frames):  # table pages are cleared when allocated again (iommu_alloc_pages_node_sz())
            self.mem.free_frames(frames, scrub=False)
            self.table_frames -= len(frames)

    def _install(self, segs: list[Segment], res: dict[int, _Path], attrs: int,
                 to_free: list[tuple[int, I64, I64]], iova: int, length: int) -> None:
        """Phase two of a map: free the empty tables being replaced, write the leaves."""
        fmt = self.fmt
        for level, g, f in to_free:
            self._free_tables(level, g, f)
        for seg in segs:
            level, _, f, g0, g1 = self._seg_tables(seg, res)
            clg2 = seg.lg2 - fmt.item_lg2(level)
            new = level < self.top_level and res[level + 1].new  # tables of one alloc_frames(): ascending
            self._write_leaves(level, f, g0, g1, fmt.leaf(level, seg.oa, seg.lg2, attrs),
                               fmt.leaf_stride(level, seg.lg2), clg2, new)
        if to_free:  # the walk cache may still hold the freed tables (iommu_iotlb_sync in map_range)
            self._flush(iova, length, True)

    def _template(self, clg2: int, stride: int) -> U64:
        """_TEMPLATE_ROWS consecutive leaf tables' entries, relative to the first one."""
        key = (clg2, stride)
        tpl = self._templates.get(key)
        if tpl is None:
            rows = np.arange(_TEMPLATE_ROWS, dtype=np.uint64)[:, None] * np.uint64((ITEMS >> clg2) * stride)
            tpl = rows + (_IDX.astype(np.uint64) >> np.uint64(clg2))[None, :] * np.uint64(stride)
            self._templates[key] = tpl
        return tpl

    @staticmethod
    def _ramp(first: int, n: int, clg2: int, stride: int) -> U64:
        return np.uint64(first) + (np.arange(n, dtype=np.uint64) >> np.uint64(clg2)) * np.uint64(stride)

    def _write_leaves(self, level: int, f: I64, g0: int, g1: int, e0: int, stride: int, clg2: int,
                      ascending: bool = False) -> None:
        """Items g0..g1 at ``level`` (tables ``f`` in order; ``ascending``: known to be) get
        e0 + ((g - g0) >> clg2) * stride."""
        if level == self.top_level:
            base = self.top_frame * ITEMS
            self.mem.u64_flat[base + g0:base + g1 + 1] = self._ramp(e0, g1 - g0 + 1, clg2, stride)
            return
        u64 = self.mem.u64
        lo, hi = g0 & (ITEMS - 1), g1 & (ITEMS - 1)
        if len(f) == 1:
            u64[f[0], lo:hi + 1] = self._ramp(e0, hi - lo + 1, clg2, stride)
            return
        per_table = (ITEMS >> clg2) * stride
        first_full = e0  # entry of item 0 of the first whole table
        a, b = 0, len(f)
        if lo:
            u64[f[0], lo:] = self._ramp(e0, ITEMS - lo, clg2, stride)
            first_full = e0 + ((ITEMS - lo) >> clg2) * stride
            a = 1
        if hi != ITEMS - 1:
            b -= 1
            u64[f[-1], :hi + 1] = self._ramp(first_full + (b - a) * per_table, hi + 1, clg2, stride)
        if b > a:
            self._fill_tables(f[a:b], first_full, per_table, clg2, stride, ascending)

    def _fill_tables(self, frames: I64, row0: int, per_table: int, clg2: int, stride: int,
                     ascending: bool = False) -> None:
        """Whole tables ``frames``: table k gets row0 + k*per_table + the template's first row."""
        tpl = self._template(clg2, stride)
        k = len(frames)
        # one run of frames: write the rows in place (ascending frames spanning k are one)
        run = int(frames[-1]) - int(frames[0]) == k - 1 if ascending else frame_run(frames) is not None
        dst = self.mem.u64[frames[0]:frames[0] + k] if run else np.empty((k, ITEMS), np.uint64)
        q, r = divmod(k, _TEMPLATE_ROWS)
        if q:
            bases = np.multiply(_IDX_U64[:q] if q <= ITEMS else np.arange(q, dtype=np.uint64),
                                np.uint64(per_table * _TEMPLATE_ROWS))
            bases += np.uint64(row0)
            np.add(tpl[None, :, :], bases[:, None, None],
                   out=dst[:q * _TEMPLATE_ROWS].reshape(q, _TEMPLATE_ROWS, ITEMS))
        if r:
            np.add(tpl[:r], np.uint64(row0 + q * _TEMPLATE_ROWS * per_table), out=dst[q * _TEMPLATE_ROWS:])
        if not run:
            self.mem.u64[frames] = dst

    def _path_for_failed_size(self, v: int) -> int:
        """When no page size fits the rest of the range, the kernel's walk allocates tables down to
        level 0 and fails there (pt_iommu_new_table(): ENXIO), or meets a leaf (EADDRINUSE)."""
        level, frame, _ = self._root(v, v, 0, True)
        index = self._top_index(v) if level == self.top_level else (v >> self.fmt.item_lg2(level)) & (ITEMS - 1)
        return errno.EADDRINUSE if self.fmt.present(int(self.mem.u64_flat[frame * ITEMS + index])) else errno.ENXIO

    # ------------------------------------------------------------------ range walk
    def _items(self, level: int, g: I64, e: U64, f: I64) -> _Items:
        present = self.fmt.present(e)
        if not level:
            return _Items(g, e, f, present, np.zeros(len(e), dtype=bool), np.empty(0, dtype=np.int64))
        table = present & self.fmt.is_table(e, level)
        if np.count_nonzero(table) == len(table):  # every item a table (the usual case above level 0)
            return _Items(g, e, f, present, table, self._children(e), True)
        return _Items(g, e, f, present, table, self._children(e[table]))

    def _one_item(self, level: int, frame: int, g: int) -> _Items:
        fmt = self.fmt
        index = g if level == self.top_level else g & (ITEMS - 1)
        e = int(self.mem.u64_flat[frame * ITEMS + index])
        present = bool(fmt.present(e))
        table = present and level > 0 and bool(fmt.is_table(e, level))
        return _Items(np.array([g], dtype=np.int64), np.array([e], dtype=np.uint64),
                      np.array([frame], dtype=np.int64), np.array([present]), np.array([table]),
                      np.array([int(fmt.table_pa(e)) >> FRAME_SHIFT] if table else [], dtype=np.int64), table)

    def _visit(self, v0: int, v1: int, floor: int = 1, partial_only: bool = False
               ) -> tuple[dict[int, _Items], _Rows]:
        """The kernel's walk of [v0, v1]: every item under a present table, level by level above 0
        (from the deepest table holding the whole range, see _root()), and the level-0 tables as rows."""
        fmt = self.fmt
        levels: dict[int, _Items] = {}
        level, frame, _ = self._root(v0, v1, floor, partial_only=partial_only)
        isz = fmt.item_lg2(level)
        if v0 >> isz == v1 >> isz:  # one item (the usual root): decode it with plain ints
            items = self._one_item(level, frame, v0 >> isz)
        else:
            g = np.arange(v0 >> isz, (v1 >> isz) + 1, dtype=np.int64)
            f = np.full(len(g), frame, dtype=np.int64)
            items = self._items(level, g, self._entries(level, g, f), f)
        while True:
            levels[level] = items
            tf = items.children
            tn = items.g if items.tables else items.g[items.table]
            level -= 1
            if level == 0:
                return levels, _Rows(tn, tf)
            isz = fmt.item_lg2(level)
            lo, hi = v0 >> isz, v1 >> isz
            a = lo - int(tn[0]) * ITEMS if len(tn) and lo > int(tn[0]) * ITEMS else 0
            b = len(tn) * ITEMS - ((int(tn[-1]) * ITEMS + ITEMS - 1 - hi) if len(tn) and hi < int(tn[-1]) * ITEMS
                                   + ITEMS - 1 else 0)
            if len(tn) == 1:  # one table (the usual case): its row, without gathering
                t0, f0 = int(tn[0]) * ITEMS, int(tf[0])
                items = self._items(level, np.arange(t0 + a, t0 + b, dtype=np.int64), self.mem.u64[f0, a:b].copy(),
                                    np.full(b - a, f0, dtype=np.int64))
            else:
                items = self._items(level, _arange_items(tn)[a:b], self.mem.u64[tf].reshape(-1)[a:b],
                                    np.repeat(tf, ITEMS)[a:b])

    def _first_hole0(self, rows: _Rows, lo: int, hi: int) -> int | None:
        """First empty level-0 item in [lo, hi] (global indices) within the given tables."""
        if not len(rows.t):
            return None
        block, _ = self._block(rows.f)
        inside = rows.t[0] * ITEMS >= lo and rows.t[-1] * ITEMS + ITEMS - 1 <= hi
        if inside and self.fmt.all_present(block):
            return None
        g = _arange_items(rows.t)
        hole = ~self.fmt.present(block).reshape(-1) & (g >= lo) & (g <= hi)
        return int(g[np.argmax(hole)]) if hole.any() else None

    # ------------------------------------------------------------------ unmap
    def unmap(self, iova: int, length: int) -> int:
        """iommu_unmap(): bytes unmapped from ``iova`` (0 on a bad range, as in the kernel)."""
        fmt = self.fmt
        try:
            v0, v1 = self._make_range(iova, length)
        except UapiError:
            return 0
        level, _, _, e = self._path(v0)[-1]
        if not fmt.present(e) or v0 & ((1 << self._leaf_span(level, e)) - 1):
            return 0  # __unmap_range(): a hole, or a start inside a leaf, is -EINVAL
        levels, rows = self._visit(v0, v1, partial_only=True)  # a covered table item may be freed
        hole = v1 + 1
        for lvl, it in levels.items():
            if not it.tables and not it.present.all():
                hole = min(hole, max(int(it.g[np.argmin(it.present)]) << fmt.item_lg2(lvl), v0))
        gl = fmt.GRANULE_LG2
        h0 = self._first_hole0(rows, v0 >> gl, min(v1, hole - 1) >> gl)
        if h0 is not None:
            hole = min(hole, max(h0 << gl, v0))
        if hole <= v1:
            end = hole
        else:  # the leaf holding the last byte goes whole
            level, _, _, e = self._path(v1)[-1]
            span = self._leaf_span(level, e)
            end = ((v1 >> span) + 1) << span
        lim = min(v1, end - 1)
        freed: dict[int, I64] = {}
        all_freed = False  # every table of the level above is freed: this level's tables go whole
        for lvl, it in levels.items():
            isz = fmt.item_lg2(lvl)
            # in item units: leaves starting before end, tables lying wholly inside [v0, lim]
            first, stop = (v0 + (1 << isz) - 1) >> isz, (lim + 1) >> isz
            if not len(it.g):
                continue
            if int(it.g[0]) >= first and int(it.g[-1]) < stop and (it.tables or it.table.all()):
                freed[lvl] = it.children  # the common case: every item a table the range covers
                if not all_freed:  # (freeing zeroes the tables that are going anyway)
                    self._store(lvl, it.g, it.f, 0)
                all_freed = True
                continue
            all_freed = False
            free = it.table & (it.g >= first) & (it.g < stop)
            if it.table.all():
                leaf, clear = free & False, free
            else:
                leaf = it.present & ~it.table & (it.g < (end + (1 << isz) - 1) >> isz)
                clear = leaf | free
            if not clear.any():
                continue
            if free.any():
                freed[lvl] = it.children[free[it.table]]
            if fmt.HAS_CONTIG and leaf.any():
                self._clear_contig(lvl, it, leaf)
            self._store(lvl, it.g[clear], it.f[clear], 0)
        if len(rows.t):
            isz1 = fmt.item_lg2(1)  # level-0 tables whose level-1 item was freed are gone already
            self._clear_rows0(rows, v0 >> gl, (end - 1) >> gl, (v0 + (1 << isz1) - 1) >> isz1, (lim + 1) >> isz1)
        for lvl in sorted(freed):  # leaf tables first, each level one run when it can be
            self._release(freed[lvl])
        self._flush(iova, end - v0, bool(freed))
        return end - v0

    def _clear_contig(self, level: int, it: _Items, leaf: Bools) -> None:
        """Contiguous leaves are cleared whole, items outside the range included."""
        n = self.fmt.contig_lg2_v(it.e[leaf], level)
        if n.any():
            size = np.int64(1) << n
            items = np.repeat((it.g[leaf] >> n) << n, size) + _offsets(size)
            self._store(level, items, np.repeat(it.f[leaf], size), 0)

    def _clear_rows0(self, rows: _Rows, lo: int, hi: int, free_lo: int, free_end: int) -> None:
        """Zero level-0 items lo..hi in tables other than those numbered [free_lo, free_end), which
        are being freed (freeing zeroes them)."""
        if free_lo <= rows.t[0] and rows.t[-1] < free_end:
            return
        keep = (rows.t < free_lo) | (rows.t >= free_end)
        self._zero_items0(_Rows(rows.t[keep], rows.f[keep]), lo, hi)

    def _zero_items0(self, rows: _Rows, lo: int, hi: int) -> None:
        """Zero the level-0 items lo..hi (global indices) of the given tables: whole tables at once."""
        t, f = rows.t, rows.f
        inside = (t * ITEMS >= lo) & (t * ITEMS + ITEMS - 1 <= hi)
        if inside.any():
            whole = f[inside]
            run = frame_run(whole)
            self.mem.u64[whole if run is None else run] = 0
        edge = ~inside & (t * ITEMS <= hi) & (t * ITEMS + ITEMS - 1 >= lo)
        for tn, fr in zip(t[edge].tolist(), f[edge].tolist()):
            self.mem.u64[fr, max(lo - tn * ITEMS, 0):min(hi - tn * ITEMS, ITEMS - 1) + 1] = 0

    # ------------------------------------------------------------------ dirty tracking
    def set_dirty(self, iova: int) -> None:
        """NS(set_dirty) (the selftest's IOMMU_TEST_OP_DIRTY): make the leaf item at ``iova`` write
        dirty; ENOENT when unmapped."""
        if not self.fmt.HAS_DIRTY:
            raise UapiError(errno.EOPNOTSUPP, f"{self.fmt.name} has no dirty tracking")
        v, _ = self._make_range(iova, 1)
        _, frame, index, e = self._path(v)[-1]
        if not self.fmt.present(e):
            raise UapiError(errno.ENOENT, f"{iova:#x} is not mapped")
        self.mem.u64_flat[frame * ITEMS + index] = self.fmt.make_dirty(e)

    def read_and_clear_dirty(self, iova: int, length: int, *, clear: bool = True,
                             page_size: int | None = None) -> Bools:
        """read_and_clear_dirty(): which pages of [iova, iova+length) were written.

        One bool per ``page_size`` (default: the granule) from ``iova`` rounded down to it, set where
        record_dirty() reports dirty IOVA (iova_bitmap_set() semantics); with ``clear`` (no
        IOMMU_DIRTY_NO_CLEAR) the reported entries are made clean and the IOTLB flush is owed.
        """
        fmt = self.fmt
        if not fmt.HAS_DIRTY:
            raise UapiError(errno.EOPNOTSUPP, f"{fmt.name} has no dirty tracking")
        v0, v1 = self._make_range(iova, length)
        return self._dirty(iova, length, v0, v1, clear, page_size)

    def _dirty(self, iova: int, length: int, v0: int, v1: int, clear: bool, page_size: int | None) -> Bools:
        fmt = self.fmt
        ps = page_size or (1 << fmt.GRANULE_LG2)
        if ps & (ps - 1):
            raise UapiError(errno.EINVAL, f"page size {ps:#x} is not a power of two")
        gl = fmt.GRANULE_LG2
        base = v0 >> gl
        if (v1 >> gl) - base >= 1 << 34:
            raise UapiError(errno.EOVERFLOW, "dirty range too large for one bitmap")
        bits = np.zeros((v1 >> gl) - base + 1, dtype=bool)
        levels, rows = self._visit(v0, v1)
        found = False
        for lvl, it in levels.items():
            found |= self._dirty_items(lvl, it, v0, v1, bits, clear)
        if len(rows.t):
            found |= self._dirty_rows0(rows, v0, v1, bits, clear)
        if found and clear:
            self._flush(iova, length)
        return _rebin(bits, base, v0, v1, gl, ps)

    def _dirty_items(self, level: int, it: _Items, v0: int, v1: int, bits: Bools, clear: bool) -> bool:
        """record_dirty() for the leaves among per-item arrays ``it``."""
        fmt = self.fmt
        leaf = it.present & ~it.table
        if not leaf.any():
            return False
        g, e, f = it.g[leaf], it.e[leaf], it.f[leaf]
        n = fmt.contig_lg2_v(e, level) if fmt.HAS_CONTIG else np.zeros(len(g), dtype=np.int64)
        block = (g >> n) << n
        first = np.ones(len(g), dtype=bool)  # a contiguous entry is visited once, at its first item
        first[1:] = block[1:] != block[:-1]
        g, f, n, block = g[first], f[first], n[first], block[first]
        size = np.int64(1) << n
        items = np.repeat(block, size) + _offsets(size)
        frames = np.repeat(f, size)
        ent = self._entries(level, items, frames)
        dirty = np.logical_or.reduceat(fmt.dirty(ent), np.cumsum(size) - size)
        if not dirty.any():
            return False
        # iommu_pt.h record_dirty(): a contiguous entry reports min(its last item, end_index) - index
        isz, gl = fmt.item_lg2(level), fmt.GRANULE_LG2
        count = np.where(n > 0, np.minimum(block + size - 1, (v1 >> isz) + 1) - g, 1)
        d = np.flatnonzero(dirty)
        lo = g[d] << (isz - gl)
        hi = lo + (count[d] << (isz - gl)) - 1
        if (v0 >> isz) == g[0] and dirty[0]:  # the first leaf is reported from the range start
            lo[0] = v0 >> gl
            hi[0] = (v0 + (int(count[0]) << isz) - 1) >> gl
        _mark(bits, v0 >> gl, lo, hi)
        if clear:
            sel = np.repeat(dirty, size)
            self._store(level, items[sel], frames[sel], fmt.clean(ent[sel]))
        return True

    def _dirty_rows0(self, rows: _Rows, v0: int, v1: int, bits: Bools, clear: bool) -> bool:
        """Level-0 dirty scan over whole leaf tables at once: one pass to find the dirty items, then
        only those are looked at and cleaned."""
        fmt = self.fmt
        block, view = self._block(rows.f)
        if not fmt.maybe_dirty(block):
            return False
        gl = fmt.GRANULE_LG2
        lo, hi = v0 >> gl, v1 >> gl
        mask = fmt.dirty(block)
        t0, t1 = int(rows.t[0]), int(rows.t[-1])
        if t0 * ITEMS < lo:
            mask[0, :lo - t0 * ITEMS] = False
        if t1 * ITEMS + ITEMS - 1 > hi:
            mask[-1, hi - t1 * ITEMS + 1:] = False
        idx = np.flatnonzero(mask)
        if not len(idx):
            return False
        flat = block.reshape(-1)
        ent = flat[idx]
        if fmt.HAS_CONTIG and fmt.any_contig(ent, 0):  # contiguous entries: the per-entry rules
            g = _arange_items(rows.t)
            keep = (g >= lo) & (g <= hi)
            it = self._items(0, g[keep], flat[keep], np.repeat(rows.f, ITEMS)[keep])
            return self._dirty_items(0, it, v0, v1, bits, clear)
        live = fmt.present(ent)
        idx, ent = idx[live], ent[live]
        if not len(idx):
            return False
        g = rows.t[idx >> ITEMS_LG2] * ITEMS + (idx & (ITEMS - 1))
        bits[g - lo] = True
        if v0 & ((1 << gl) - 1) and g[0] == lo and len(bits) > 1:
            bits[1] = True  # the first leaf is reported from v0, into the next granule
        if clear:
            if view:
                flat[idx] = fmt.clean(ent)
            else:
                self.mem.u64[rows.f[idx >> ITEMS_LG2], idx & (ITEMS - 1)] = fmt.clean(ent)
        return True

    # ------------------------------------------------------------------ hardware walk
    def walk(self, iova: int, *, write: bool | None = None, set_ad: bool = False) -> Translation | WalkFault:
        """The IOMMU's walk of one IOVA: a Translation, or a WalkFault (not present; permission when
        ``write`` is given and the access is not allowed; address size).  ``set_ad`` applies the
        accessed/dirty updates hardware makes when A/D (dirty tracking) is enabled."""
        fmt = self.fmt
        if not 0 <= iova <= MASK64 or self._range_errno(iova, iova, self._vasz()):
            return WalkFault(iova, FaultReason.ADDRESS_SIZE, -1)
        v = iova & ((1 << self._vasz()) - 1)
        level, frame, index = self.top_level, self.top_frame, self._top_index(v)
        rd = wr = True
        touched: list[tuple[int, int, int]] = []
        u64 = self.mem.u64_flat
        while True:
            slot = frame * ITEMS + index
            e = int(u64[slot])
            kind, r, w = fmt.hw_step(e, level)
            if kind == HW_FAULT:
                return WalkFault(iova, FaultReason.NOT_PRESENT, level)
            rd, wr = rd and r, wr and w
            touched.append((slot, e, level))
            if kind == HW_LEAF:
                break
            frame = int(fmt.table_pa(e)) >> FRAME_SHIFT
            level -= 1
            index = (v >> fmt.item_lg2(level)) & (ITEMS - 1)
        if write is not None and not (wr if write else rd):
            return WalkFault(iova, FaultReason.PERMISSION, level)
        if set_ad:
            for s, old, lvl in touched:
                new = fmt.hw_update(old, lvl, lvl == level, bool(write))
                if new != old:
                    u64[s] = new
        span = self._leaf_span(level, e)
        return Translation(iova, int(fmt.oa(e, level)) | (v & ((1 << span) - 1)), 1 << span, level, rd, wr,
                           slot * 8)

    def leaves(self) -> list[tuple[int, int, int]]:
        """Every leaf entry as (first IOVA, size, output address), contiguous entries once, in
        normalised (sign-extension free) VA order; like the kunit's count_valids() walk."""
        fmt = self.fmt
        vasz = self._vasz()
        levels, rows = self._visit(0, (1 << vasz) - 1)
        if len(rows.t):
            g = _arange_items(rows.t)
            levels[0] = self._items(0, g, self.mem.u64[rows.f].reshape(-1), np.repeat(rows.f, ITEMS))
        out = []
        for lvl, it in levels.items():
            leaf = it.present & ~it.table
            e, g = it.e[leaf], it.g[leaf]
            n = fmt.contig_lg2_v(e, lvl) if fmt.HAS_CONTIG else np.zeros(len(g), dtype=np.int64)
            first = (g & ((np.int64(1) << n) - 1)) == 0
            oa = fmt.oa(e[first], lvl)
            isz = fmt.item_lg2(lvl)
            out += [(gg << isz, 1 << (isz + nn), int(o)) for gg, nn, o in zip(g[first].tolist(), n[first].tolist(),
                                                                            oa.tolist())]
        return sorted(out)

    # ------------------------------------------------------------------ lifetime
    def table_frame_list(self) -> I64:
        """Every table frame reachable from the top, the top included (for leak checks)."""
        return np.concatenate((self._all_below_top(),
                               np.arange(self.top_frame, self.top_frame + self.top_nframes, dtype=np.int64)))

    def _all_below_top(self) -> I64:
        fmt = self.fmt
        g = np.arange(1 << (self._vasz() - fmt.item_lg2(self.top_level)), dtype=np.int64)
        e = self.mem.u64_flat[self.top_frame * ITEMS + g]
        children = self._children(e[fmt.present(e) & fmt.is_table(e, self.top_level)])
        return self._subtree_frames(self.top_level - 1, children) if len(children) else children

    def destroy(self) -> None:
        """NS(deinit): free every table page, the top included."""
        if self.top_frame < 0:
            return
        self._release(self.table_frame_list())
        self.top_frame = -1


def _offsets(size: I64) -> I64:
    """0..size[k]-1 for each k, concatenated."""
    return np.arange(int(size.sum()), dtype=np.int64) - np.repeat(np.cumsum(size) - size, size)


def _mark(bits: Bools, base: int, lo: I64, hi: I64) -> None:
    """iova_bitmap_set() for granule ranges [lo, hi] on a granule bitmap starting at ``base``."""
    a = np.clip(lo - base, 0, len(bits))
    b = np.clip(hi - base + 1, 0, len(bits))
    ok = a < b
    if ok.any():
        diff = np.bincount(a[ok], minlength=len(bits) + 1) - np.bincount(b[ok], minlength=len(bits) + 1)
        bits |= np.cumsum(diff[:len(bits)]) > 0


def _rebin(bits: Bools, base: int, v0: int, v1: int, gl: int, ps: int) -> Bools:
    """A granule bitmap whose first granule is ``base`` to one bool per ``ps`` page of [v0, v1]."""
    g = 1 << gl
    first_page = v0 // ps
    npages = v1 // ps - first_page + 1
    if ps == g:
        return bits
    if ps > g:
        ratio = ps // g
        lead = base - first_page * ratio
        buf = np.zeros(npages * ratio, dtype=bool)
        buf[lead:lead + len(bits)] = bits
        return np.asarray(buf.reshape(npages, ratio).any(axis=1))
    ratio = g // ps
    return np.repeat(bits, ratio)[first_page - base * ratio:first_page - base * ratio + npages]
