"""Simulated physical memory: frames, allocator, refcounts, access, and sharing through the memfd."""

from __future__ import annotations

import mmap

import numpy as np
import pytest

from vfiolab.errors import VfiolabError
from vfiolab.memory import FRAME_SIZE, PhysMemory


@pytest.fixture()
def mem() -> PhysMemory:
    m = PhysMemory(64 << 20)
    yield m
    m.close()


def test_alloc_zeroed_and_counted(mem: PhysMemory) -> None:
    f = mem.alloc_frames(3)
    assert mem.frames_in_use == 3 and 0 not in f.tolist()  # frame 0 is never handed out
    mem.u64[f] = 0xDEAD
    mem.free_frames(f)
    assert mem.frames_in_use == 0
    again = mem.alloc_frames(3)
    assert sorted(again.tolist()) == sorted(f.tolist())  # reused, and zero again
    assert not mem.u64[again].any()


def test_contiguous_aligned_runs(mem: PhysMemory) -> None:
    mem.alloc_frames(5)
    run = mem.alloc_frames(512, contiguous=True, align=512)
    assert run[0] % 512 == 0 and np.array_equal(np.diff(run), np.ones(511))
    mem.free_frames(run)
    assert np.array_equal(mem.alloc_frames(512, contiguous=True, align=512), run)  # the freed run


def test_raw_ram_written_before_allocation_is_zeroed(mem: PhysMemory) -> None:
    mem.write(10 * FRAME_SIZE, b"\xff" * 16)
    frames = mem.alloc_frames(20)
    assert not mem.u8[frames].any()


def test_refcounts(mem: PhysMemory) -> None:
    f = mem.alloc_frames(2)
    mem.get_frames(f[:1])
    with pytest.raises(VfiolabError, match="refcount 2"):
        mem.free_frames(f)
    mem.put_frames(f)  # frame 1: 2 -> 1; frame 2: 1 -> 0, freed
    assert mem.frames_in_use == 1
    mem.put_frames(f[:1])
    assert mem.frames_in_use == 0
    with pytest.raises(VfiolabError):
        mem.put_frames(f[:1])
    with pytest.raises(VfiolabError):
        mem.get_frames(f[:1])
    with pytest.raises(VfiolabError):
        mem.free_frames([0])


def test_out_of_memory() -> None:
    m = PhysMemory(16 * FRAME_SIZE)
    m.alloc_frames(15)
    with pytest.raises(VfiolabError, match="out of simulated physical memory"):
        m.alloc_frame()
    m.close()


def test_access(mem: PhysMemory) -> None:
    mem.write(0x1FFE, b"abcd")  # across a frame boundary
    assert mem.read(0x1FFE, 4) == b"abcd"
    mem.copy(0x3000, 0x1FFE, 4)
    assert mem.read(0x3000, 4) == b"abcd"
    mem.copy(0x3001, 0x3000, 4)  # overlapping, memmove semantics
    assert mem.read(0x3000, 5) == b"aabcd"
    mem.fill(0x3000, 2, 0x7A)
    assert mem.read(0x3000, 3) == b"zzb"
    mem.write_u64(0x5008, 0x1122334455667788)
    assert mem.read(0x5008, 8) == bytes.fromhex("8877665544332211")  # little-endian
    assert mem.read_u64(0x5008) == 0x1122334455667788 == int(mem.frame_u64(5)[1])
    v = mem.view(0x5008, 8, writable=False)
    with pytest.raises(ValueError):
        v[0] = 1
    with pytest.raises(VfiolabError):
        mem.read(mem.size - 2, 4)
    with pytest.raises(VfiolabError):
        mem.read_u64(0x5004)


def test_memfd_is_shared(mem: PhysMemory) -> None:
    """Another mapping of the fd (what a vfio-user peer does) sees the same bytes at pa == offset."""
    other = mmap.mmap(mem.fd, 2 * FRAME_SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=FRAME_SIZE)
    mem.write(FRAME_SIZE + 100, b"hello")
    assert other[100:105] == b"hello"
    other[FRAME_SIZE:FRAME_SIZE + 3] = b"abc"
    assert mem.read(2 * FRAME_SIZE, 3) == b"abc"
    other.close()
