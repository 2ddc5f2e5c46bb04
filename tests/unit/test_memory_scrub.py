"""Frames freed unscrubbed (page-table pages, which the kernel clears at allocation rather than when
freeing) still come out of every allocation path zeroed, unless the caller asks for frames it will
overwrite whole; raw RAM writes below the bump pointer never leak into a new frame."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from vfiolab.memory import FRAME_SIZE, PhysMemory


@pytest.fixture()
def mem() -> Iterator[PhysMemory]:
    m = PhysMemory(16 << 20)
    yield m
    m.close()


def dirty(mem: PhysMemory, frames: np.ndarray, value: int = 0xA5A5) -> None:
    mem.u64[frames] = value


def test_unscrubbed_frames_are_zeroed_when_handed_out_again(mem: PhysMemory) -> None:
    f = mem.alloc_frames(8)
    dirty(mem, f)
    mem.free_frames(f, scrub=False)
    assert mem.frames_in_use == 0 and mem.u64[f].all()  # left as it was until reused
    again = mem.alloc_frames(8)
    assert sorted(again.tolist()) == sorted(f.tolist()) and not mem.u64[again].any()
    dirty(mem, again[:1])
    mem.free_frames(again[:1], scrub=False)
    one = mem.alloc_frame()
    assert one == int(again[0]) and not mem.u64[one].any()


def test_partly_stale_and_contiguous_allocations(mem: PhysMemory) -> None:
    run = mem.alloc_frames(16, contiguous=True, align=16)
    dirty(mem, run)
    mem.free_frames(run[:4])  # scrubbed
    mem.free_frames(run[4:], scrub=False)
    got = mem.alloc_frames(6)  # from the top of the free stack: stale ones
    assert not mem.u64[got].any()
    rest = mem.alloc_frames(10)  # the other stale ones and the scrubbed ones
    assert not mem.u64[rest].any()
    mem.free_frames(np.concatenate((got, rest)), scrub=False)
    dirty(mem, run)
    again = mem.alloc_frames(16, contiguous=True, align=16)  # the free run is reused
    assert np.array_equal(again, run) and not mem.u64[again].any()


def test_zero_false_skips_clearing_but_forgets_the_old_contents(mem: PhysMemory) -> None:
    """An owner that overwrites its new frames asks for zero=False; once it frees them scrubbed, they
    are ordinary zero frames again."""
    f = mem.alloc_frames(4)
    dirty(mem, f)
    mem.free_frames(f, scrub=False)
    g = mem.alloc_frames(4, zero=False)
    mem.u64[g] = 7  # the owner writes every byte
    mem.free_frames(g)
    assert not mem.u64[mem.alloc_frames(4)].any()


def test_alignment_padding_over_raw_writes_is_zeroed(mem: PhysMemory) -> None:
    """Frames skipped to align a run go to the free stack; raw writes may have landed there before the
    allocator ever handed them out."""
    mem.write(3 * FRAME_SIZE + 8, b"\xff" * 8)
    run = mem.alloc_frames(4, contiguous=True, align=4)
    assert int(run[0]) == 4
    pad = mem.alloc_frames(3)
    assert sorted(pad.tolist()) == [1, 2, 3] and not mem.u64[pad].any()
