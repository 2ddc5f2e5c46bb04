"""A user process's virtual memory: VMAs made by mmap/munmap/mprotect, pages faulted in on touch, and
page pinning as ``pin_user_pages()`` does it for iommufd and VFIO.

Pages are 4 KiB; ``MAP_HUGETLB`` VMAs fault in 2 MiB pages (512 physically contiguous, aligned frames),
as the kernel selftests' hugetlb buffers get.  Anonymous pages belong to their VMA; file pages
(:class:`MemFile`, a memfd) belong to the file, so two mappings of one file share frames; a private
file mapping breaks copy-on-write on the first write.  A pin takes a frame reference, so a pinned page
outlives munmap exactly like a pinned ``struct page``; ``pinned_pages`` is the count iommufd charges to
``mm->pinned_vm``.  Syscall-style errors are ``UapiError`` with the kernel's errno.

Simplifications: a read of an untouched anonymous page allocates it (Linux maps the shared zero page),
pinning never migrates pages, and there is no fork, swap or page cache beyond :class:`MemFile`.
"""

from __future__ import annotations

import bisect
import errno
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

from vfiolab.errors import UapiError, VfiolabError
from vfiolab.memory.phys import FRAME_SHIFT, FRAME_SIZE, FrameArray, PhysMemory, frame_run

PAGE_SIZE: Final = FRAME_SIZE
HPAGE_SIZE: Final = 2 << 20
_HPAGE_FRAMES: Final = HPAGE_SIZE // PAGE_SIZE

# include/uapi/asm-generic/mman-common.h, mman.h
PROT_NONE: Final = 0x0
PROT_READ: Final = 0x1
PROT_WRITE: Final = 0x2
PROT_EXEC: Final = 0x4
MAP_SHARED: Final = 0x01
MAP_PRIVATE: Final = 0x02
MAP_FIXED: Final = 0x10
MAP_ANONYMOUS: Final = 0x20
MAP_HUGETLB: Final = 0x40000

_TASK_SIZE: Final = 1 << 47  # x86-64 4-level user address space (arch/x86/include/asm/page_64_types.h)
_MMAP_BASE: Final = 0x7F00_0000_0000


def _pages(n: int) -> npt.NDArray[np.int64]:
    return np.full(n, -1, dtype=np.int64)


class MemFile:
    """A memfd: file pages allocated on first touch and shared by every mapping of the file."""

    def __init__(self, mem: PhysMemory, size: int = 0, *, hugetlb: bool = False, name: str = "memfd") -> None:
        self.mem = mem
        self.name = name
        self.hugetlb = hugetlb
        self.frames = _pages(0)
        self.size = 0
        self.truncate(size)

    def truncate(self, size: int) -> None:
        """ftruncate(): grow with holes or shrink, dropping the file's reference on cut pages."""
        unit = HPAGE_SIZE if self.hugetlb else PAGE_SIZE
        if size < 0 or (self.hugetlb and size % unit):
            raise UapiError(errno.EINVAL, f"ftruncate({self.name}, {size:#x})")
        n = -(-size // PAGE_SIZE)
        if n < len(self.frames):
            cut = self.frames[n:]
            self.mem.put_frames(cut[cut >= 0])
            self.frames = self.frames[:n].copy()
        else:
            self.frames = np.concatenate((self.frames, _pages(n - len(self.frames))))
        self.size = size

    def touch(self, pgoff: int, n: int) -> FrameArray:
        """Frames of file pages [pgoff, pgoff+n), allocating holes (whole 2 MiB pages when hugetlb)."""
        if pgoff + n > len(self.frames):
            raise UapiError(errno.EFAULT, f"access beyond the end of {self.name} (SIGBUS)")
        _fault_in(self.mem, self.frames, pgoff, n, self.hugetlb)
        return self.frames[pgoff:pgoff + n]

    def close(self) -> None:
        """Drop the file's references (pages pinned or still mapped elsewhere stay allocated)."""
        self.truncate(0)


def _fault_in(mem: PhysMemory, frames: npt.NDArray[np.int64], first: int, n: int, huge: bool) -> None:
    """Allocate zeroed frames for the holes among frames[first:first+n] (huge: whole aligned 2 MiB)."""
    part = frames[first:first + n]
    if not len(part) or int(part.min()) >= 0:  # all present: the common case of a pinned buffer
        return
    holes = np.flatnonzero(part < 0)
    if not huge:
        part[holes] = mem.alloc_frames(len(holes))
        return
    for hp in np.unique((holes + first) // _HPAGE_FRAMES):
        base = int(hp) * _HPAGE_FRAMES
        frames[base:base + _HPAGE_FRAMES] = mem.alloc_frames(_HPAGE_FRAMES, contiguous=True,
                                                             align=_HPAGE_FRAMES)


@dataclass
class Vma:
    """One mapping [start, end) with its protection, flags and backing."""

    start: int
    end: int
    prot: int
    flags: int
    file: MemFile | None = None
    pgoff: int = 0
    pages: npt.NDArray[np.int64] = field(default_factory=lambda: _pages(0))
    """Anonymous or copy-on-write frames per 4 KiB page (-1: not faulted in / still the file page)."""

    @property
    def huge(self) -> bool:
        return bool(self.flags & MAP_HUGETLB)

    @property
    def shared_file(self) -> bool:
        return self.file is not None and bool(self.flags & MAP_SHARED)

    def split(self, at: int) -> Vma:
        """Cut at ``at``; self keeps [start, at) and the returned VMA is [at, end)."""
        k = (at - self.start) >> FRAME_SHIFT
        tail = Vma(at, self.end, self.prot, self.flags, self.file, self.pgoff + k, self.pages[k:].copy())
        self.pages = self.pages[:k].copy()
        self.end = at
        return tail


class UserProcess:
    """The address space of one process over a :class:`PhysMemory`."""

    def __init__(self, mem: PhysMemory, *, name: str = "proc") -> None:
        self.mem = mem
        self.name = name
        self.vmas: list[Vma] = []
        self.pinned_pages = 0
        """Pages pinned through this process and not yet unpinned (what iommufd charges to pinned_vm)."""

    # ------------------------------------------------------------------ address space syscalls
    def mmap(self, length: int, prot: int = PROT_READ | PROT_WRITE, flags: int = MAP_PRIVATE | MAP_ANONYMOUS,
             *, addr: int = 0, file: MemFile | None = None, offset: int = 0) -> int:
        """mmap(2): returns the start address (mm/mmap.c do_mmap, mm/util.c ksys_mmap_pgoff)."""
        huge = bool(flags & MAP_HUGETLB) or (file is not None and file.hugetlb)
        unit = HPAGE_SIZE if huge else PAGE_SIZE
        if flags & (MAP_SHARED | MAP_PRIVATE) == 0:
            raise UapiError(errno.EINVAL, "mmap: one of MAP_SHARED/MAP_PRIVATE is required")
        if offset % unit or (flags & MAP_FIXED and addr % unit):
            raise UapiError(errno.EINVAL, "mmap: unaligned offset or fixed address")
        if length <= 0:
            raise UapiError(errno.EINVAL, "mmap: zero length")
        if not flags & MAP_ANONYMOUS:
            if file is None:
                raise UapiError(errno.EBADF, "mmap: no file for a non-anonymous mapping")
            if flags & MAP_HUGETLB and not file.hugetlb:
                raise UapiError(errno.EINVAL, "mmap: MAP_HUGETLB on a non-hugetlb file")
        else:
            file = None
        length = -(-length // unit) * unit
        if length > _TASK_SIZE:
            raise UapiError(errno.ENOMEM, "mmap: length exceeds the address space")
        if flags & MAP_FIXED:
            if addr + length > _TASK_SIZE:
                raise UapiError(errno.ENOMEM, "mmap: fixed range beyond TASK_SIZE")
            self._unmap(addr, addr + length)
            start = addr
        else:
            start = self._find_gap(length, unit, addr)
        vma = Vma(start, start + length, prot, flags | (MAP_HUGETLB if huge else 0), file,
                  offset >> FRAME_SHIFT, _pages(length >> FRAME_SHIFT))
        bisect.insort(self.vmas, vma, key=lambda v: v.start)
        return start

    def munmap(self, addr: int, length: int) -> None:
        """munmap(2): drop the pages of [addr, addr+length) (mm/mmap.c do_vmi_munmap)."""
        if addr % PAGE_SIZE or length <= 0:
            raise UapiError(errno.EINVAL, "munmap: unaligned address or zero length")
        end = addr + -(-length // PAGE_SIZE) * PAGE_SIZE
        if end > _TASK_SIZE:
            raise UapiError(errno.EINVAL, "munmap: range beyond TASK_SIZE")
        self._unmap(addr, end)

    def mprotect(self, addr: int, length: int, prot: int) -> None:
        """mprotect(2): ENOMEM when part of the range is unmapped (mm/mprotect.c)."""
        if addr % PAGE_SIZE:
            raise UapiError(errno.EINVAL, "mprotect: unaligned address")
        end = addr + -(-length // PAGE_SIZE) * PAGE_SIZE
        if end == addr:
            return
        if self._covered(addr, end) is None:
            raise UapiError(errno.ENOMEM, "mprotect: range not fully mapped")
        for vma in self._carve(addr, end):
            vma.prot = prot

    def _find_gap(self, length: int, align: int, hint: int) -> int:
        """Top-down first fit below the mmap base, honouring a free hint (mm/mmap.c unmapped_area_topdown)."""
        if hint and hint % align == 0 and hint + length <= _TASK_SIZE and self._free(hint, hint + length):
            return hint
        top = _MMAP_BASE
        for vma in reversed(self.vmas):
            if vma.start >= top:
                continue
            cand = (top - length) // align * align
            if cand >= vma.end:
                return cand
            top = min(top, vma.start)
        cand = (top - length) // align * align
        if cand < PAGE_SIZE * 16:
            raise UapiError(errno.ENOMEM, "mmap: address space exhausted")
        return cand

    def _free(self, start: int, end: int) -> bool:
        return not any(v.start < end and start < v.end for v in self.vmas)

    def _carve(self, start: int, end: int) -> list[Vma]:
        """Split VMAs at start/end and return those inside [start, end).  hugetlb VMAs refuse a split
        off a 2 MiB boundary (mm/hugetlb.c hugetlb_vm_op_split)."""
        out: list[Vma] = []
        for vma in [v for v in self.vmas if v.start < end and start < v.end]:
            for cut in (start, end):
                if vma.start < cut < vma.end and vma.huge and cut % HPAGE_SIZE:
                    raise UapiError(errno.EINVAL, "split of a hugetlb mapping off a 2 MiB boundary")
        i = 0
        while i < len(self.vmas):
            vma = self.vmas[i]
            if vma.start < start < vma.end:  # keep the head, look at the tail next
                self.vmas.insert(i + 1, vma.split(start))
            elif vma.start < end < vma.end:  # cut the tail off and look at this one again
                self.vmas.insert(i + 1, vma.split(end))
                continue
            elif start <= vma.start and vma.end <= end:
                out.append(vma)
            i += 1
        return out

    def _unmap(self, start: int, end: int) -> None:
        for vma in self._carve(start, end):
            owned = vma.pages[vma.pages >= 0]
            if len(owned):
                self.mem.put_frames(owned)
            self.vmas.remove(vma)

    def _covered(self, start: int, end: int) -> list[Vma] | None:
        """VMAs covering [start, end) without holes, or None."""
        out = []
        pos = start
        i = bisect.bisect_right(self.vmas, start, key=lambda v: v.start) - 1
        for vma in self.vmas[max(i, 0):]:
            if vma.end <= pos:
                continue
            if vma.start > pos:
                return None
            out.append(vma)
            pos = vma.end
            if pos >= end:
                return out
        return None

    # ------------------------------------------------------------------ page access
    def _frames(self, va: int, length: int, write: bool) -> FrameArray:
        """Fault in and return the frames of the pages covering [va, va+length) with GUP's checks
        (mm/gup.c check_vma_flags: EFAULT without VM_WRITE for a write, without VM_READ for a read)."""
        if length <= 0:
            return np.empty(0, dtype=np.int64)
        first = va & ~(PAGE_SIZE - 1)
        end = -(-(va + length) // PAGE_SIZE) * PAGE_SIZE
        vmas = self._covered(first, end) if 0 <= va and end <= _TASK_SIZE else None
        if vmas is None:
            raise UapiError(errno.EFAULT, f"{self.name}: [{va:#x}, +{length:#x}) is not mapped")
        need = PROT_WRITE if write else PROT_READ
        for vma in vmas:
            if not vma.prot & need:
                raise UapiError(errno.EFAULT, f"{self.name}: {va:#x} lacks {'write' if write else 'read'}"
                                " permission")
        parts = []
        for vma in vmas:
            lo = (max(first, vma.start) - vma.start) >> FRAME_SHIFT
            hi = (min(end, vma.end) - vma.start) >> FRAME_SHIFT
            parts.append(self._vma_frames(vma, lo, hi, write))
        return np.concatenate(parts) if len(parts) > 1 else parts[0].copy()

    def _vma_frames(self, vma: Vma, lo: int, hi: int, write: bool) -> FrameArray:
        if vma.file is None:
            _fault_in(self.mem, vma.pages, lo, hi - lo, vma.huge)
            return vma.pages[lo:hi]
        filef = vma.file.touch(vma.pgoff + lo, hi - lo)
        if vma.shared_file:
            return filef
        cow = vma.pages[lo:hi]
        if write:  # break copy-on-write: private copies of the file pages not yet copied
            fresh = np.flatnonzero(cow < 0)
            if len(fresh):
                new = self.mem.alloc_frames(len(fresh))
                self.mem.u64[new] = self.mem.u64[filef[fresh]]
                cow[fresh] = new
        return np.where(cow >= 0, cow, filef)

    def pin_pages(self, va: int, length: int, *, write: bool) -> FrameArray:
        """pin_user_pages(): frames of every 4 KiB page covering [va, va+length), faulted in and pinned
        (each holds one more reference until :meth:`unpin_pages`); all or nothing."""
        frames = self._frames(va, length, write)
        run = frame_run(frames)
        if run is not None:  # contiguous memory: linear updates instead of scattered ones
            self.mem.get_frames(run)
            self.mem.pincount[run] += 1
        else:
            self.mem.get_frames(frames)
            np.add.at(self.mem.pincount, frames, 1)
        self.pinned_pages += len(frames)
        return frames

    def unpin_pages(self, frames: npt.ArrayLike) -> None:
        """unpin_user_pages(): release pins taken by :meth:`pin_pages`."""
        f = np.asarray(frames, dtype=np.int64).reshape(-1)
        if len(f) > self.pinned_pages:
            raise VfiolabError(f"{self.name}: unpin of {len(f)} pages, only {self.pinned_pages} pinned")
        run = frame_run(f)
        if run is not None and run.start >= 1 and run.stop <= self.mem.nframes:
            pins = self.mem.pincount[run]
            if int(pins.min()) < 1:
                raise VfiolabError(f"{self.name}: unpin of a page that is not pinned")
            pins -= 1
            self.pinned_pages -= len(f)
            self.mem.put_frames(run)
            return
        uniq, counts = np.unique(f, return_counts=True)
        if len(uniq) and (uniq[0] < 1 or uniq[-1] >= self.mem.nframes
                          or np.any(counts > self.mem.pincount[uniq])):
            raise VfiolabError(f"{self.name}: unpin of a page that is not pinned")
        np.subtract.at(self.mem.pincount, f, 1)
        self.pinned_pages -= len(f)
        self.mem.put_frames(f)

    def read(self, va: int, n: int) -> bytes:
        """copy_from_user(): EFAULT on an unmapped or unreadable byte (untouched pages fault in)."""
        out = bytearray()
        for pa, k in self._spans(va, n, False):
            out += self.mem.read(pa, k)
        return bytes(out)

    def write(self, va: int, data: bytes | bytearray | memoryview, *, partial: bool = False) -> None:
        """copy_to_user(): EFAULT on an unmapped or read-only byte; all or nothing, or with ``partial`` as
        the kernel's copy_to_user() does it: the bytes before the first page that faults are stored."""
        mv = memoryview(data).cast("B")
        try:
            spans = self._spans(va, len(mv), True)
        except UapiError:
            # include/linux/uaccess.h copy_to_user(): access_ok() on the whole range, then the copy stops
            # at the fault (arch/x86 copy_user_generic) with the bytes before it stored
            if partial and 0 <= va and va + len(mv) <= _TASK_SIZE:
                done = self._writable(va, len(mv))
                if done:
                    self.write(va, mv[:done])
            raise
        pos = 0
        for pa, k in spans:
            self.mem.write(pa, mv[pos:pos + k])
            pos += k

    def _writable(self, va: int, n: int) -> int:
        """Bytes of [va, va+n) before the first hole or VMA without PROT_WRITE."""
        pos = va
        i = bisect.bisect_right(self.vmas, va, key=lambda v: v.start) - 1
        for vma in self.vmas[max(i, 0):]:
            if vma.end <= pos:
                continue
            if vma.start > pos or not vma.prot & PROT_WRITE or pos >= va + n:
                break
            pos = vma.end
        return min(pos, va + n) - va

    def _spans(self, va: int, n: int, write: bool) -> list[tuple[int, int]]:
        """Physically contiguous (pa, length) pieces of [va, va+n), after the access checks."""
        frames = self._frames(va, n, write)
        if not len(frames):
            return []
        cut = np.flatnonzero(np.diff(frames) != 1) + 1
        starts = np.concatenate(([0], cut))
        ends = np.concatenate((cut, [len(frames)]))
        off = va & (PAGE_SIZE - 1)
        out = []
        for s, e in zip(starts.tolist(), ends.tolist()):
            lo = max(s * PAGE_SIZE, off)
            hi = min(e * PAGE_SIZE, off + n)
            out.append(((int(frames[s]) << FRAME_SHIFT) + lo - s * PAGE_SIZE, hi - lo))
        return out

    def close(self) -> None:
        """exit(): unmap everything (pinned pages stay until unpinned)."""
        for vma in list(self.vmas):
            self._unmap(vma.start, vma.end)
