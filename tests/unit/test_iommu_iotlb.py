"""The translation cache shared by IOTLB and ATC: span entries holding runs, LRU ways, tags, range
invalidation that keeps what lies outside the range, statistics."""

from __future__ import annotations

import pytest

from vfiolab.errors import VfiolabError
from vfiolab.iommu.cachetag import psi_aligned
from vfiolab.iommu.iotlb import Run, TranslationCache

SPAN = 1 << 16


def cache(entries: int = 8, ways: int = 2) -> TranslationCache:
    return TranslationCache("t", entries=entries, ways=ways, span_lg2=16)


def test_hit_miss_and_offsets() -> None:
    c = cache()
    assert c.lookup(1, 0x1000) is None
    c.insert(1, Run(0x0, 0x8000, 0x100000, True, False), 0x1000)
    r = c.lookup(1, 0x7FFF)
    assert r is not None and r.pa + (0x7FFF - r.lo) == 0x107FFF
    assert c.lookup(1, 0x8000) is None  # outside the run, same span
    assert c.lookup(2, 0x1000) is None  # other tag
    assert (c.stats.hits, c.stats.misses, c.stats.fills) == (1, 3, 1)


def test_runs_must_stay_in_one_span() -> None:
    c = cache()
    with pytest.raises(VfiolabError):
        c.insert(1, Run(SPAN - 0x1000, SPAN + 0x1000, 0, True, True), SPAN - 0x1000)


def test_lru_eviction_within_a_set() -> None:
    """Entries of one set (same span index modulo sets, same tag) compete for its ways."""
    c = cache(entries=2, ways=2)  # one set, two ways
    for i in range(3):
        c.insert(7, Run(i * SPAN, i * SPAN + 0x1000, 0, True, True), i * SPAN)
    assert c.stats.evictions == 1
    assert c.lookup(7, 0) is None  # the least recently used went
    assert c.lookup(7, SPAN) is not None and c.lookup(7, 2 * SPAN) is not None
    c.lookup(7, SPAN)  # touch: span 2 becomes the LRU
    c.insert(7, Run(3 * SPAN, 3 * SPAN + 0x1000, 0, True, True), 3 * SPAN)
    assert c.lookup(7, 2 * SPAN) is None and c.lookup(7, SPAN) is not None
    assert len(c) == 2


def test_insert_trims_to_gap_around_address() -> None:
    """Cached runs win over a new overlapping fill (per-page entries would coexist)."""
    c = cache()
    c.insert(1, Run(0x2000, 0x3000, 0xA000, True, True), 0x2000)
    got = c.insert(1, Run(0x0, 0x8000, 0x50000, True, True), 0x5000)
    assert (got.lo, got.hi, got.pa) == (0x3000, 0x8000, 0x53000)
    r = c.lookup(1, 0x2800)
    assert r is not None and r.pa == 0xA000  # the older (maybe stale) run still answers


def test_invalidate_range_keeps_outside_parts() -> None:
    c = cache()
    c.insert(1, Run(0x0, 0x8000, 0x100000, True, True), 0)
    assert c.invalidate(0x2000, 0x3000, tag=1) == 1
    assert c.lookup(1, 0x2000) is None
    left, right = c.lookup(1, 0x1FFF), c.lookup(1, 0x3000)
    assert left is not None and (left.lo, left.hi, left.pa) == (0, 0x2000, 0x100000)
    assert right is not None and (right.lo, right.hi, right.pa) == (0x3000, 0x8000, 0x103000)


def test_invalidate_by_predicate_and_all() -> None:
    c = cache(entries=16, ways=4)
    for tag in (1, 2, 3):
        c.insert(tag, Run(0, 0x1000, 0, True, True), 0)
    c.invalidate_tags(lambda t: t != 2)
    assert c.lookup(1, 0) is None and c.lookup(3, 0) is None and c.lookup(2, 0) is not None
    c.flush_all()
    assert len(c) == 0 and c.stats.invalidations == 2


def test_huge_range_invalidation_scans_entries() -> None:
    """A 2^64 range is not walked span by span."""
    c = cache()
    c.insert(5, Run(0xFFFF_0000, 0xFFFF_1000, 0, True, True), 0xFFFF_0000)
    assert c.invalidate(0, 1 << 64, tag=5) == 1


def test_dirty_mask_survives_cut() -> None:
    r = Run(0, 0x4000, 0x10000, True, True, glg2=12)
    r.dmask = 0b1010
    assert r.cut(0x1000, 0x4000).dmask == 0b101


def test_bad_geometry() -> None:
    with pytest.raises(VfiolabError):
        TranslationCache("x", entries=10, ways=4)
    with pytest.raises(VfiolabError):
        TranslationCache("x", span_lg2=5)


@pytest.mark.parametrize("start,last,expect", [
    (0x1000, 0x1FFF, (0x1000, 0x2000)),
    (0x1000, 0x2FFF, (0x0, 0x4000)),          # straddles a 8 KiB boundary: 16 KiB block
    (0x3000, 0x4FFF, (0x0, 0x8000)),
    (0x1234, 0x1234, (0x1000, 0x2000)),
    (0, (1 << 64) - 1, (0, 1 << 64)),
])
def test_psi_alignment(start: int, last: int, expect: tuple[int, int]) -> None:
    """intel/cache.c calculate_psi_aligned_address(): one naturally aligned power-of-two block."""
    assert psi_aligned(start, last) == expect
