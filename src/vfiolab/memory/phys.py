"""Simulated physical memory: 4 KiB frames in one memfd-backed numpy pool, a frame allocator and
page reference counts.

The whole RAM is one sparse memfd mapped once (pages are committed by the host only when touched), so
the pool never moves: numpy views of it stay valid for the life of the object, many frames can be read
or written with one fancy-indexed operation (``u64[frames]``), and another process can map the same
RAM through :attr:`PhysMemory.fd` (file offset == physical address).

Frames are handed out by a bump pointer plus a free stack, always zeroed, as the kernel's page-table
allocator (``iommu_alloc_pages_node_sz``) and the anonymous-page fault path return zeroed pages.  A
freed frame is zeroed at once, or, freed with ``scrub=False`` (page-table pages: the kernel clears them
at allocation, not when freeing), when it is handed out again; an owner that writes every byte of its
new frames first asks for them with ``zero=False`` and so clears nothing twice.  Reference counts model
``struct page`` refcounts: a frame returns to the free pool when its last reference is put (a pinned
page outlives the mapping that faulted it in).
"""

from __future__ import annotations

import mmap
import os
import weakref
from typing import Final

import numpy as np
import numpy.typing as npt

from vfiolab.errors import VfiolabError

FRAME_SHIFT: Final = 12
FRAME_SIZE: Final = 1 << FRAME_SHIFT
U64_PER_FRAME: Final = FRAME_SIZE // 8
DEFAULT_SIZE: Final = 64 << 30

FrameArray = npt.NDArray[np.int64]


def frame_run(frames: FrameArray) -> slice | None:
    """The frames as a slice when they are one ascending run (numpy then copies or fills memory
    linearly instead of gathering rows), else None."""
    n = len(frames)
    if not n or int(frames[-1]) - int(frames[0]) != n - 1:
        return None
    if n > 2 and not (frames[1:] > frames[:-1]).all():  # n strictly rising values spanning n: a run
        return None
    return slice(int(frames[0]), int(frames[0]) + n)


def _index(frames: FrameArray) -> FrameArray | slice:
    run = frame_run(frames)
    return frames if run is None else run


class PhysMemory:
    """RAM of ``size`` bytes at physical addresses [0, size), in 4 KiB frames (frame 0 is reserved)."""

    def __init__(self, size: int = DEFAULT_SIZE, *, name: str = "vfiolab-ram") -> None:
        if size < 2 * FRAME_SIZE or size % FRAME_SIZE:
            raise VfiolabError(f"physical memory size {size:#x} must be a multiple of 4 KiB and >= 8 KiB")
        self.size = size
        self.nframes = size >> FRAME_SHIFT
        self.fd = os.memfd_create(name, os.MFD_CLOEXEC)
        # A PhysMemory dropped without close() must not leak its memfd (the mmap holds its own dup).
        self._fd_closer = weakref.finalize(self, os.close, self.fd)
        os.ftruncate(self.fd, size)
        self._map = mmap.mmap(self.fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self.u8: npt.NDArray[np.uint8] = np.frombuffer(self._map, dtype=np.uint8).reshape(self.nframes,
                                                                                          FRAME_SIZE)
        """The pool as (nframes, 4096) bytes."""
        self.u64: npt.NDArray[np.uint64] = self.u8.view(np.uint64)
        """The pool as (nframes, 512) little-endian u64 entries: page-table frames are rows of this."""
        self.u64_flat: npt.NDArray[np.uint64] = self.u64.reshape(-1)
        self.u8_flat: npt.NDArray[np.uint8] = self.u8.reshape(-1)
        """The pool as one byte array indexed by physical address."""
        self.refcount = np.zeros(self.nframes, dtype=np.int32)
        self.pincount = np.zeros(self.nframes, dtype=np.int32)
        self._free = np.empty(1024, dtype=np.int64)
        self._nfree = 0
        self._bump = 1  # frame 0 is never handed out: PA 0 stays "no translation" in iova_to_phys
        self._written_top = 1  # frames below this may hold data written outside the allocator
        self._stale = np.zeros(self.nframes, dtype=np.bool_)
        """Free frames that may hold old contents (freed unscrubbed): cleared when handed out."""
        self._nstale = 0
        self.frames_in_use = 0

    # ------------------------------------------------------------------ allocation
    def alloc_frames(self, n: int, *, contiguous: bool = False, align: int = 1, zero: bool = True) -> FrameArray:
        """Allocate ``n`` zeroed frames with refcount 1, in ascending order; ``contiguous`` asks for one
        run aligned to ``align`` frames (huge pages, multi-frame tables).  ``zero=False``: the caller
        writes every byte before anything reads them, so old contents need not be cleared.  Raises
        VfiolabError when RAM is exhausted."""
        if n <= 0:
            return np.empty(0, dtype=np.int64)
        if contiguous or align > 1:
            return self._alloc_run(n, align, zero)
        top = self._nfree
        if top >= n:  # all from the free stack: ascending, and claimed as one slice when a run
            out = self._free[top - n:top].copy()
            self._nfree = top - n
            run = frame_run(out)
            if run is None:
                out.sort()
                run = frame_run(out)
            self._claim(out, run, zero)
            return out
        out = np.empty(n, dtype=np.int64)
        if top:
            out[:top] = np.sort(self._free[:top])
            self._nfree = 0
        out[top:] = self._bump_run(n - top, 1)
        self._claim(out, None, zero)
        return out

    def alloc_frame(self) -> int:
        """Allocate one zeroed frame and return its frame number (alloc_frames(1) without arrays)."""
        if self._nfree:
            self._nfree -= 1
            frame = int(self._free[self._nfree])
            if self._nstale and self._stale[frame]:
                self.u64[frame] = 0
                self._stale[frame] = False
                self._nstale -= 1
        else:
            frame = int(self._bump_run(1, 1)[0])
        self.refcount[frame] = 1
        self.frames_in_use += 1
        return frame

    def _alloc_run(self, n: int, align: int, zero: bool) -> FrameArray:
        if self._nfree >= n:  # reuse a free run when one exists (after huge pages were freed)
            free = np.sort(self._free[:self._nfree])
            starts = np.flatnonzero((free[n - 1:] - free[:len(free) - n + 1] == n - 1)
                                    & (free[:len(free) - n + 1] % align == 0))
            if len(starts):
                run = free[starts[0]:starts[0] + n].copy()
                rest = np.concatenate((free[:starts[0]], free[starts[0] + n:]))
                self._free[:len(rest)] = rest
                self._nfree = len(rest)
                self._claim(run, slice(int(run[0]), int(run[0]) + n), zero)
                return run
        run = self._bump_run(n, align)
        self._claim(run, slice(int(run[0]), int(run[0]) + n))
        return run

    def _bump_run(self, n: int, align: int) -> FrameArray:
        start = -(-self._bump // align) * align
        if start + n > self.nframes:
            raise VfiolabError(f"out of simulated physical memory: {n} frame(s) wanted, "
                               f"{self.nframes - self._bump + self._nfree} free of {self.nframes}")
        if start > self._bump:  # alignment padding goes to the free stack
            pad = np.arange(self._bump, start, dtype=np.int64)
            self._push_free(pad)
            raw = pad[pad < self._written_top]  # raw RAM writes may have landed there: cleared on hand-out
            self._stale[raw] = True
            self._nstale += len(raw)
        self._bump = start + n
        if start < self._written_top:  # fresh frames are zero unless someone wrote raw RAM there
            self.u64[start:min(start + n, self._written_top)] = 0
        return np.arange(start, start + n, dtype=np.int64)

    def _claim(self, frames: FrameArray, run: slice | None = None, zero: bool = True) -> None:
        """Refcount 1 on frames just taken (``run``: the same frames as a slice, when the caller knows);
        those freed unscrubbed are cleared now (unless the caller overwrites them: ``zero=False``)."""
        ix = run if run is not None else _index(frames)
        self.refcount[ix] = 1
        self.frames_in_use += len(frames)
        if self._nstale:
            stale = self._stale[ix]
            k = int(np.count_nonzero(stale))
            if k == len(frames):
                if zero:
                    self.u64[ix] = 0
                self._stale[ix] = False
            elif k:
                old = frames[stale]
                if zero:
                    self.u64[old] = 0
                self._stale[old] = False
            self._nstale -= k

    def _push_free(self, frames: FrameArray) -> None:
        need = self._nfree + len(frames)
        if need > len(self._free):
            grown = np.empty(max(need, 2 * len(self._free)), dtype=np.int64)
            grown[:self._nfree] = self._free[:self._nfree]
            self._free = grown
        self._free[self._nfree:need] = frames
        self._nfree = need

    def free_frames(self, frames: npt.ArrayLike, *, scrub: bool = True) -> None:
        """Free frames owned by one user (refcount 1), zeroing them (``scrub=False``: when they are
        handed out again, as page-table pages, which iommu_alloc_pages_node_sz() clears at allocation);
        a frame still referenced elsewhere (pinned, shared) is a caller bug and raises VfiolabError."""
        f = frames if isinstance(frames, np.ndarray) and frames.dtype == np.int64 and frames.ndim == 1 \
            else np.asarray(frames, dtype=np.int64).reshape(-1)
        if len(f) == 1:  # one frame (a table page): plain ints
            frame = int(f[0])
            if not 1 <= frame < self.nframes:
                raise VfiolabError(f"frame number out of range 1..{self.nframes - 1}")
            if self.refcount[frame] != 1:
                raise VfiolabError(f"free of frame {frame:#x} with refcount {int(self.refcount[frame])}")
            if scrub:
                self.u64[frame] = 0
            else:
                self._stale[frame] = True
                self._nstale += 1
            self.refcount[frame] = 0
            self._push_free(f)
            self.frames_in_use -= 1
            return
        if not len(f):
            return
        ix = _index(f)
        if isinstance(ix, slice):
            if ix.start < 1 or ix.stop > self.nframes:
                raise VfiolabError(f"frame number out of range 1..{self.nframes - 1}")
        else:
            self._check_frames(f)
            if len(f) > 1 and len(np.unique(f)) != len(f):
                raise VfiolabError("free of the same frame twice")
        if np.count_nonzero(self.refcount[ix] != 1):
            bad = f[self.refcount[f] != 1]
            raise VfiolabError(f"free of frame {int(bad[0]):#x} with refcount {int(self.refcount[bad[0]])}")
        self._release(f, ix, scrub)

    def get_frames(self, frames: npt.ArrayLike | slice) -> None:
        """Take one more reference on each (allocated) frame; a frame may appear several times.  A
        slice stands for a run of frame numbers (one linear update, for pins of contiguous memory)."""
        if isinstance(frames, slice):
            rc = self._run(frames)
            if len(rc) and int(rc.min()) <= 0:
                raise VfiolabError("reference taken on a free frame")
            rc += 1
            return
        f = self._check_frames(frames)
        if len(f) and not np.all(self.refcount[f] > 0):
            raise VfiolabError("reference taken on a free frame")
        np.add.at(self.refcount, f, 1)

    def put_frames(self, frames: npt.ArrayLike | slice) -> None:
        """Drop one reference on each frame; frames reaching zero are zeroed and freed (a slice: a run
        of frame numbers)."""
        if isinstance(frames, slice):
            rc = self._run(frames)
            if not len(rc):
                return
            if int(rc.min()) <= 0:
                raise VfiolabError("reference put on a free frame")
            rc -= 1
            if int(rc.min()) == 0:
                dead = np.flatnonzero(rc == 0) + frames.start
                self.refcount[dead] = 1
                self._release(dead)
            return
        f = self._check_frames(frames)
        if not len(f):
            return
        np.subtract.at(self.refcount, f, 1)
        if np.any(self.refcount[f] < 0):
            np.add.at(self.refcount, f, 1)
            raise VfiolabError("reference put on a free frame")
        dead = np.unique(f[self.refcount[f] == 0])
        self.refcount[dead] = 1
        self._release(dead)

    def _release(self, f: FrameArray, ix: FrameArray | slice | None = None, scrub: bool = True) -> None:
        if not len(f):
            return
        if ix is None:
            ix = _index(f)
        if scrub:
            self.u64[ix] = 0
        else:
            self._stale[ix] = True
            self._nstale += len(f)
        self.refcount[ix] = 0
        self._push_free(f)
        self.frames_in_use -= len(f)

    def _run(self, run: slice) -> npt.NDArray[np.int32]:
        """The refcounts of a run of frames (a view), after the range check."""
        if run.step not in (None, 1) or run.start < 1 or run.stop > self.nframes or run.stop < run.start:
            raise VfiolabError(f"frame run {run} out of range 1..{self.nframes - 1}")
        return self.refcount[run]

    def _check_frames(self, frames: npt.ArrayLike) -> FrameArray:
        f = np.asarray(frames, dtype=np.int64).reshape(-1)
        if len(f) and (int(f.min()) < 1 or int(f.max()) >= self.nframes):
            raise VfiolabError(f"frame number out of range 1..{self.nframes - 1}")
        return f

    # ------------------------------------------------------------------ access
    def _range(self, pa: int, n: int) -> None:
        if n < 0 or pa < 0 or pa + n > self.size:
            raise VfiolabError(f"physical access [{pa:#x}, +{n:#x}) outside RAM [0, {self.size:#x})")

    def _dirtied(self, pa: int, n: int) -> None:
        end = (pa + n + FRAME_SIZE - 1) >> FRAME_SHIFT
        self._written_top = max(self._written_top, end)

    def view(self, pa: int, n: int, *, writable: bool = True) -> npt.NDArray[np.uint8]:
        """Zero-copy byte view of [pa, pa+n) (read-only unless ``writable``)."""
        self._range(pa, n)
        v = self.u8_flat[pa:pa + n]
        if writable:
            self._dirtied(pa, n)
        else:
            v = v.view()
            v.flags.writeable = False
        return v

    def store(self, pa: int, src: npt.NDArray[np.uint8]) -> None:
        """Copy the 1-D byte array ``src`` to RAM at ``pa``: one memcpy and no view kept (DMA writes)."""
        end = pa + src.size
        if pa < 0 or end > self.size:
            self._range(pa, src.size)
        if end > self._written_top << FRAME_SHIFT:
            self._written_top = (end + FRAME_SIZE - 1) >> FRAME_SHIFT
        self.u8_flat[pa:end] = src

    def frame_u64(self, frame: int) -> npt.NDArray[np.uint64]:
        """Zero-copy view of one frame as 512 u64 entries (a page-table page)."""
        if not 0 <= frame < self.nframes:
            raise VfiolabError(f"frame {frame:#x} outside RAM")
        return self.u64[frame]

    def read(self, pa: int, n: int) -> bytes:
        """Copy ``n`` bytes of RAM at ``pa``."""
        self._range(pa, n)
        return self._map[pa:pa + n]

    def write(self, pa: int, data: bytes | bytearray | memoryview) -> None:
        """Store ``data`` at ``pa``."""
        n = len(data)
        self._range(pa, n)
        self._dirtied(pa, n)
        self._map[pa:pa + n] = data

    def read_u64(self, pa: int) -> int:
        """One little-endian u64 at an 8-byte aligned ``pa`` (descriptor and PTE reads)."""
        if pa & 7:
            raise VfiolabError(f"unaligned u64 access at {pa:#x}")
        self._range(pa, 8)
        return int(self.u64_flat[pa >> 3])

    def write_u64(self, pa: int, value: int) -> None:
        """Store one little-endian u64 at an 8-byte aligned ``pa``."""
        if pa & 7:
            raise VfiolabError(f"unaligned u64 access at {pa:#x}")
        self._range(pa, 8)
        self._dirtied(pa, 8)
        self.u64_flat[pa >> 3] = value

    def copy(self, dst: int, src: int, n: int) -> None:
        """memmove within RAM (overlap-safe)."""
        self._range(dst, n)
        self._range(src, n)
        self._dirtied(dst, n)
        self._map.move(dst, src, n)

    def fill(self, pa: int, n: int, value: int = 0) -> None:
        """memset ``n`` bytes at ``pa`` to ``value``."""
        self.view(pa, n)[:] = value

    def close(self) -> None:
        """Unmap the pool and close the memfd; views taken earlier must not be used afterwards."""
        if self.fd < 0:
            return
        del self.u8, self.u64, self.u64_flat, self.u8_flat
        try:
            self._map.close()
        except BufferError:  # numpy views are still alive; the mapping goes away with the last one
            pass
        self._fd_closer()
        self.fd = -1
