"""PhysMemory.store(): the DMA write path's copy into RAM, with the allocator's zeroing rule kept."""

from __future__ import annotations

import numpy as np
import pytest

from vfiolab.errors import VfiolabError
from vfiolab.memory import FRAME_SIZE, PhysMemory


def test_store_copies_and_checks_the_range() -> None:
    mem = PhysMemory(1 << 20)
    try:
        mem.store(0x1FFE, np.frombuffer(b"abcd", dtype=np.uint8))  # across a frame boundary
        assert mem.read(0x1FFE, 4) == b"abcd"
        mem.store(0x3000, np.empty(0, dtype=np.uint8))
        with pytest.raises(VfiolabError):
            mem.store(mem.size - 2, np.zeros(4, dtype=np.uint8))
        with pytest.raises(VfiolabError):
            mem.store(-1, np.zeros(1, dtype=np.uint8))
        assert mem.read(mem.size - 2, 2) == b"\0\0"
    finally:
        mem.close()


def test_frames_stored_before_allocation_are_handed_out_zeroed() -> None:
    """A DMA write may land in frames the allocator has not handed out yet (a stale or bogus mapping);
    they still come out of alloc_frames() zeroed."""
    mem = PhysMemory(1 << 20)
    try:
        mem.store(40 * FRAME_SIZE - 3, np.full(6, 0xFF, dtype=np.uint8))  # frames 39 and 40
        frames = mem.alloc_frames(50)
        assert 39 in frames.tolist() and 40 in frames.tolist()
        assert not mem.u8[frames].any()
    finally:
        mem.close()
