"""Translation caches: the IOMMU's IOTLB and a device's ATC share this set-associative cache of
translations, tagged by a caller-defined integer (IOTLB: domain ID and PASID; ATC: PASID).

Model (a coalescing, sectored TLB): an entry covers one naturally aligned *span* of input addresses
(``2**span_lg2`` bytes) of one tag and holds *runs* inside it: stretches of leaf translations that are
physically contiguous and have the same permissions.  ``span_lg2 = 12`` is a classic one-page-per-entry
TLB; larger spans let one entry stand for many 4 KiB leaves that map contiguous memory, so a 64 KiB DMA
burst costs one lookup instead of sixteen (hardware coalesces contiguous PTEs in the same spirit: AMD's
PTE coalescing, Arm's contiguous hint).  ``entries`` and ``ways`` count span entries; replacement is LRU
within a set, pseudo-LRU for hits through the one-entry L1 that remembers the last run used.

Everything a real TLB does to software is kept: a lookup never consults the page table, so after an
unmap without invalidation the stale run still hits and still leads to the old page; cached permissions
and dirty state (``Run.dmask``) stay as they were until invalidated.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final

from vfiolab.errors import VfiolabError

MASK64: Final = (1 << 64) - 1


class DirtyTarget:
    """Where the hardware sets write-dirty state for an address of a run: the leaf items of one table.

    The item for input address ``a`` is u64 index ``slot0 + ((a + off) >> isz)`` of RAM; ``off`` moves a
    run's address into this stage's input space (stage 2 of a nested walk sees the IPA)."""

    __slots__ = ("isz", "level", "off", "slot0", "update")

    def __init__(self, update: Callable[..., Any], level: int, slot0: int, off: int, isz: int) -> None:
        self.update, self.level, self.slot0, self.off, self.isz = update, level, slot0, off, isz


class Run:
    """[lo, hi) of input addresses translating to [pa, pa + hi - lo) with read/write permission."""

    __slots__ = ("dfull", "dirty", "dmask", "glg2", "hi", "lo", "pa", "r", "w")

    def __init__(self, lo: int, hi: int, pa: int, r: bool, w: bool,
                 dirty: tuple[DirtyTarget, ...] = (), glg2: int = 12) -> None:
        self.lo, self.hi, self.pa, self.r, self.w = lo, hi, pa, r, w
        self.dirty = dirty
        """Leaf items the hardware marks dirty on a write (empty when A/D updates are off)."""
        self.glg2 = glg2
        """Granule of ``dmask`` (the format's page size)."""
        self.dmask = 0
        """Granules of the run (bit k = granule k from ``lo``) whose dirty state this entry holds: marked
        through it, or found set by the walk that filled it."""
        self.dfull = ((1 << (((hi - lo - 1) >> glg2) + 1)) - 1) if dirty else 0
        """``dmask`` once every granule is held (0 without dirty targets): a write then updates nothing."""

    def cut(self, lo: int, hi: int) -> Run:
        """The part [lo, hi) of this run (lo/hi inside it), with its dirty state."""
        r = Run(lo, hi, self.pa + (lo - self.lo), self.r, self.w, self.dirty, self.glg2)
        shift = (lo - self.lo) >> self.glg2
        if self.dmask and (lo - self.lo) & ((1 << self.glg2) - 1) == 0:
            n = ((hi - lo - 1) >> self.glg2) + 1
            r.dmask = (self.dmask >> shift) & ((1 << n) - 1)
        return r

    def __repr__(self) -> str:
        perm = ("r" if self.r else "-") + ("w" if self.w else "-")
        return f"Run([{self.lo:#x}, {self.hi:#x}) -> {self.pa:#x} {perm})"


@dataclass
class CacheStats:
    """Counters since creation (or the last reset)."""

    hits: int = 0
    misses: int = 0
    fills: int = 0
    evictions: int = 0
    """Entries (spans) pushed out by replacement."""
    invalidated: int = 0
    """Runs dropped or trimmed by invalidations."""
    invalidations: int = 0
    """Invalidation commands received."""


Key = tuple[int, int]


class TranslationCache:
    """A set-associative cache of span entries; see the module docstring."""

    def __init__(self, name: str, *, entries: int = 512, ways: int = 8, span_lg2: int = 21) -> None:
        if entries <= 0 or ways <= 0 or entries % ways:
            raise VfiolabError(f"{name}: {entries} entries cannot be split into {ways}-way sets")
        if not 10 <= span_lg2 <= 63:
            raise VfiolabError(f"{name}: span 2**{span_lg2} outside 2**10 .. 2**63")
        self.name = name
        self.entries, self.ways, self.span_lg2 = entries, ways, span_lg2
        self.nsets = entries // ways
        self._sets: list[OrderedDict[Key, list[Run]]] = [OrderedDict() for _ in range(self.nsets)]
        self.stats = CacheStats()
        self._mru: tuple[int, Run] | None = None
        """The last run hit or filled (a one-entry L1 in front of the sets; dropped by any invalidation
        or eviction).  Hits through it do not refresh LRU order, as with a pseudo-LRU."""
        self.enabled = True
        """A disabled cache misses every lookup and keeps nothing (a device or unit without a TLB)."""

    def _set(self, tag: int, sidx: int) -> OrderedDict[Key, list[Run]]:
        return self._sets[(sidx ^ (tag * 0x9E3779B1)) % self.nsets]

    # ------------------------------------------------------------------ lookup / fill
    def peek(self, tag: int, addr: int, end: int) -> Run | None:
        """The last run used when it holds all of [addr, end) for ``tag`` (the one-entry L1), else None.
        Counts nothing: a caller that answers from the run counts the hit, one that does not goes on to
        lookup()."""
        mru = self._mru
        if mru is not None and mru[0] == tag:
            run = mru[1]
            if run.lo <= addr and end <= run.hi:
                return run
        return None

    def lookup(self, tag: int, addr: int) -> Run | None:
        """The cached run holding ``addr`` for ``tag``, or None (a miss)."""
        mru = self._mru
        if mru is not None and mru[0] == tag:
            run = mru[1]
            if run.lo <= addr < run.hi:
                self.stats.hits += 1
                return run
        sidx = addr >> self.span_lg2
        s = self._sets[(sidx ^ (tag * 0x9E3779B1)) % self.nsets]
        key = (tag, sidx)
        runs = s.get(key)
        if runs is not None:
            for run in runs:
                if run.lo <= addr < run.hi:
                    s.move_to_end(key)
                    self.stats.hits += 1
                    self._mru = (tag, run)
                    return run
        self.stats.misses += 1
        return None

    def insert(self, tag: int, run: Run, addr: int) -> Run:
        """Cache ``run`` (inside one span) for ``tag``; where runs already cached overlap it, they win
        (per-page entries would coexist), so the stored run is trimmed to the gap holding ``addr``.
        Returns the run as stored."""
        if not self.enabled:
            return run
        sidx = run.lo >> self.span_lg2
        if (run.hi - 1) >> self.span_lg2 != sidx or not run.lo <= addr < run.hi:
            raise VfiolabError(f"{self.name}: {run!r} is not inside one span around {addr:#x}")
        s = self._set(tag, sidx)
        key = (tag, sidx)
        runs = s.get(key)
        if runs is None:
            if len(s) >= self.ways:
                s.popitem(last=False)
                self.stats.evictions += 1
                self._mru = None
            runs = s[key] = []
        else:
            s.move_to_end(key)
        lo, hi = run.lo, run.hi
        for old in runs:
            if old.hi <= addr:
                lo = max(lo, old.hi)
            elif old.lo > addr:
                hi = min(hi, old.lo)
        if (lo, hi) != (run.lo, run.hi):
            run = run.cut(lo, hi)
        runs.append(run)
        if len(runs) > 1:
            runs.sort(key=lambda r: r.lo)
        self.stats.fills += 1
        self._mru = (tag, run)
        return run

    # ------------------------------------------------------------------ invalidation
    def invalidate(self, lo: int, hi: int, tag: int | None = None,
                   match: Callable[[int], bool] | None = None) -> int:
        """Drop cached translations of [lo, hi) for ``tag`` (or every tag ``match`` accepts, or every
        tag); runs straddling the range keep their outside parts.  Returns runs affected."""
        self.stats.invalidations += 1
        self._mru = None
        if hi <= lo:
            return 0
        lo_s, hi_s = lo >> self.span_lg2, (hi - 1) >> self.span_lg2
        hit = 0
        if tag is not None and hi_s - lo_s < self.entries:
            for sidx in range(lo_s, hi_s + 1):
                s = self._set(tag, sidx)
                if (tag, sidx) in s:
                    hit += self._trim(s, (tag, sidx), lo, hi)
        else:
            for s in self._sets:
                for key in [k for k in s if (tag is None or k[0] == tag) and (match is None or match(k[0]))
                            and lo_s <= k[1] <= hi_s]:
                    hit += self._trim(s, key, lo, hi)
        self.stats.invalidated += hit
        return hit

    def _trim(self, s: OrderedDict[Key, list[Run]], key: Key, lo: int, hi: int) -> int:
        runs = s[key]
        keep: list[Run] = []
        hit = 0
        for r in runs:
            if r.hi <= lo or r.lo >= hi:
                keep.append(r)
                continue
            hit += 1
            if r.lo < lo:
                keep.append(r.cut(r.lo, lo))
            if r.hi > hi:
                keep.append(r.cut(hi, r.hi))
        if keep:
            s[key] = keep
        else:
            del s[key]
        return hit

    def invalidate_tags(self, match: Callable[[int], bool]) -> int:
        """Drop every entry whose tag ``match`` accepts (domain- or PASID-selective flush)."""
        return self.invalidate(0, 1 << 64, match=match)

    def flush_all(self) -> int:
        """Global invalidation."""
        return self.invalidate(0, 1 << 64)

    # ------------------------------------------------------------------ inspection
    def __iter__(self) -> Iterator[tuple[int, Run]]:
        """(tag, run) for every cached run."""
        for s in self._sets:
            for (tag, _), runs in s.items():
                for r in runs:
                    yield tag, r

    def __len__(self) -> int:
        """Entries (spans) in use."""
        return sum(len(s) for s in self._sets)

    def reset_stats(self) -> None:
        """Zero the counters."""
        self.stats = CacheStats()
