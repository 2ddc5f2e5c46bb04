"""iopt_pages: the pinned-page store behind IOAS areas (``drivers/iommu/iommufd/pages.c``).

One :class:`IoptPages` stands for a linear run of user memory (a VA range of a process, or a byte range
of a memfd) in PAGE_SIZE indexes.  Pages are pinned lazily and exactly once: an index is pinned while an
area holding it is loaded into at least one domain (``domains_itree``) or while an in-kernel access holds
it (``access_itree``).  The model keeps one holder count per index (numpy), pins an index when its count
leaves zero and unpins it when it returns to zero; the kernel's xarray/domain/user tiers only decide where
the PFN is read from, and all three give the same frame.

Accounting (``iopt_pages_update_pinned``): every change of ``npinned`` moves ``mm->pinned_vm`` of the
source mm, and, by ``account_mode``, ``user->locked_vm`` against RLIMIT_MEMLOCK (USER) or ``mm->locked_vm``
(MM, the VFIO way) or nothing (NONE: the mapping task had CAP_IPC_LOCK).  Pinning is all or nothing: a
fault or an over-limit charge leaves the pages as they were.
"""

from __future__ import annotations

import enum
import errno
from collections.abc import Iterator
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt

from vfiolab.errors import UapiError
from vfiolab.faultinject import armed, fail_point
from vfiolab.iommufd.task import Task, fput, get_file
from vfiolab.memory import PAGE_SIZE, PROT_WRITE, MemFile, PhysMemory, UserProcess
from vfiolab.memory.phys import FRAME_SHIFT, frame_run

I64 = npt.NDArray[np.int64]

# io_pagetable.h
IOPT_PAGES_ACCOUNT_NONE: Final = 0
IOPT_PAGES_ACCOUNT_USER: Final = 1
IOPT_PAGES_ACCOUNT_MM: Final = 2
IOPT_PAGES_ACCOUNT_MODE_NUM: Final = 3

# include/linux/iommufd.h
IOMMUFD_ACCESS_RW_READ: Final = 0
IOMMUFD_ACCESS_RW_WRITE: Final = 1 << 0
IOMMUFD_ACCESS_RW_KTHREAD: Final = 1 << 1
IOMMUFD_ACCESS_RW_SLOW_PATH: Final = 1 << 2

SIZE_MAX: Final = (1 << 64) - 1
TEMP_MEMORY_LIMIT_DEFAULT: Final = 65536
"""pages.c TEMP_MEMORY_LIMIT without CONFIG_IOMMUFD_TEST (and the selftest's default)."""
_temp_memory_limit = TEMP_MEMORY_LIMIT_DEFAULT


def _pin_chunk() -> int | None:
    """Pages per pin call of a pfn reader.  The kernel's chunking shows only in how many fault points
    a pin passes (a failed chunk undoes the earlier ones, as a failed whole pin does), so the model
    pins a run in one call unless fault injection counts the points."""
    return pin_batch_pages() if armed() is not None else None


BATCH_INIT: Final = "pfn_reader_init: batch_init: temp_kmalloc"
"""The pfn_batch of every pfn_reader (no backup buffer, so it can fail: ENOMEM)."""


def set_temp_memory_limit(limit: int) -> None:
    """iommufd_test_memory_limit (a module global of the selftest, IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT):
    the most temp_kmalloc() gives a pfn reader, so how many pages one pin call takes."""
    global _temp_memory_limit
    _temp_memory_limit = limit


def pin_batch_pages() -> int:
    """Pages per pfn_reader_user_pin() call: temp_kmalloc() caps the page-pointer array at
    TEMP_MEMORY_LIMIT bytes (8 bytes per page)."""
    return max(1, _temp_memory_limit // 8)


class AddressType(enum.IntEnum):
    """enum iopt_address_type."""

    USER = 0
    FILE = 1
    DMABUF = 2


def runs(frames: I64) -> Iterator[tuple[int, int]]:
    """(first position, count) of each physically contiguous run in ``frames`` (batch entries)."""
    n = len(frames)
    if not n:
        return
    if frame_run(frames) is not None:  # one run: no per-page arrays
        yield 0, n
        return
    cut = np.flatnonzero(np.diff(frames) != 1) + 1
    starts = np.concatenate(([0], cut))
    ends = np.concatenate((cut, [n]))
    for s, e in zip(starts.tolist(), ends.tolist()):
        yield s, e - s


def _index_runs(mask: npt.NDArray[np.bool_]) -> Iterator[tuple[int, int]]:
    """(first, count) of each run of True in ``mask``."""
    if not mask.any():
        return
    if mask.all():
        yield 0, len(mask)
        return
    m = np.concatenate(([False], mask, [False])).astype(np.int8)
    d = np.diff(m)
    for s, e in zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist()):
        yield s, e - s


def _needs_unshare(process: UserProcess, va: int, length: int) -> bool:
    """mm/gup.c gup_must_unshare(): a FOLL_LONGTERM read-only pin of a file page in a private (COW)
    mapping takes a private copy, so later writes through the mapping keep the pinned PFN.  The memory
    model breaks COW only for write faults, so the adapter asks for a write fault when every VMA of the
    range is writable (a read-only private mapping keeps the file page: a documented gap)."""
    vmas = [v for v in process.vmas if v.start < va + length and va < v.end]
    cow = [v for v in vmas if v.file is not None and not v.shared_file]
    return bool(cow) and all(v.prot & PROT_WRITE for v in vmas)


def pin_user(process: UserProcess, va: int, length: int, write: bool) -> I64:
    """pin_user_pages(FOLL_LONGTERM | (FOLL_WRITE if write)): the frames of [va, va+length)."""
    if not write and _needs_unshare(process, va, length):
        write = True
    return process.pin_pages(va, length, write=write)


def pin_frames(mem: PhysMemory, frames: I64) -> None:
    """try_grab_folio(FOLL_PIN) on frames already found (memfd folios, domain PFNs)."""
    run = frame_run(frames)
    if run is not None:
        mem.get_frames(run)
        mem.pincount[run] += 1
        return
    mem.get_frames(frames)
    np.add.at(mem.pincount, frames, 1)


def unpin_frames(mem: PhysMemory, frames: I64) -> None:
    """unpin_user_pages() for pins taken with :func:`pin_frames`."""
    run = frame_run(frames)
    if run is not None:
        mem.pincount[run] -= 1
        mem.put_frames(run)
        return
    np.subtract.at(mem.pincount, frames, 1)
    mem.put_frames(frames)


def copy_frames(mem: PhysMemory, frames: I64, offset: int, length: int, data: bytearray | None,
                write: bool) -> bytes:
    """kmap + memcpy over ``frames`` starting ``offset`` bytes into the first one (batch_rw):
    write ``data`` into RAM, or return what RAM holds."""
    out = bytearray()
    pos = 0
    for s, n in runs(frames):
        lo = offset if s == 0 else 0
        span = min(n * PAGE_SIZE - lo, length - pos)
        if span <= 0:
            break
        pa = (int(frames[s]) << FRAME_SHIFT) + lo
        if write:
            assert data is not None
            mem.write(pa, data[pos:pos + span])
        else:
            out += mem.read(pa, span)
        pos += span
        offset = 0
    return bytes(out)


class IoptPages:
    """struct iopt_pages: the PFN provider shared by every area (in any IOAS) that maps it."""

    def __init__(self, task: Task, kind: AddressType, start_byte: int, length: int, writable: bool, *,
                 uptr: int = 0, file: object | None = None, start: int = 0) -> None:
        # pages.c iopt_alloc_pages()
        if length > SIZE_MAX - PAGE_SIZE or length == 0:
            raise UapiError(errno.EINVAL, f"bad length {length:#x}")
        self.kind = kind
        self.source = task
        """source_mm / source_task: whose memory and whose rlimit."""
        self.source_user = task.user
        self.npages = -(-(length + start_byte) // PAGE_SIZE)
        self.writable = writable
        self.account_mode = IOPT_PAGES_ACCOUNT_NONE if task.cap_ipc_lock else IOPT_PAGES_ACCOUNT_USER
        self.uptr = uptr
        """IOPT_ADDRESS_USER: page-aligned start VA."""
        self.file = file
        """IOPT_ADDRESS_FILE: the file (any open file; only a memfd's pages can be pinned)."""
        self.start = start
        """IOPT_ADDRESS_FILE: page-aligned start offset in the file."""
        self.refs = 1
        self._frames: I64 | None = None
        """Frame of each pinned index, -1 elsewhere (allocated on first use; see :attr:`frames`)."""
        self.holders = np.zeros(self.npages, dtype=np.int32)
        self.npinned = 0
        self.last_npinned = 0
        self.accesses: dict[tuple[int, int], int] = {}
        """access_itree: (start_index, last_index) -> users."""
        self.dmabuf: DmaBufExporter | None = None
        """IOPT_ADDRESS_DMABUF: the exporter; ``start`` is the page-aligned offset into it."""
        self.revoked = False
        """IOPT_ADDRESS_DMABUF: the exporter revoked the memory (dmabuf.phys.len == 0)."""
        self.tracker: list[tuple[Any, Any]] = []
        """IOPT_ADDRESS_DMABUF: (domain, area) pairs mapped, for revocation (pages->dmabuf.tracker)."""

    @property
    def frames(self) -> I64:
        """The PFN of every pinned index, -1 for the others (the xarray/domain tiers in one array)."""
        if self._frames is None:
            self._frames = np.full(self.npages, -1, dtype=np.int64)
        return self._frames

    @property
    def mem(self) -> PhysMemory:
        return self.source.process.mem

    def get(self) -> IoptPages:
        """kref_get()."""
        self.refs += 1
        return self

    def put(self) -> None:
        """iopt_put_pages(): the last reference must find nothing pinned (iopt_release_pages); a
        dma-buf is detached and put."""
        self.refs -= 1
        if self.refs == 0 and self.npinned:
            raise UapiError(errno.EBUSY, "iopt_pages released with pinned pages")  # a model bug
        if self.refs == 0 and self.dmabuf is not None:
            self.dmabuf.detach(self)
            self.dmabuf = None
        if self.refs == 0 and self.file is not None:  # pages.c iopt_release_pages(): fput(pages->file)
            fput(self.file)
            self.file = None

    # ------------------------------------------------------------------ dma-buf (MMIO) PFNs
    def dmabuf_frames(self, first: int, last: int) -> I64:
        """pfn_reader_fill_dmabuf(): the exporter's physically contiguous PFNs, never pinned."""
        assert self.dmabuf is not None
        base = (self.dmabuf.paddr + self.start) >> FRAME_SHIFT
        return np.arange(base + first, base + last + 1, dtype=np.int64)

    def revoke(self) -> None:
        """iopt_revoke_notify(): unmap every tracked (domain, area) and mark the pages revoked."""
        if self.revoked:
            return
        for domain, area in self.tracker:
            domain.unmap(area.iova, area.length)
        self.revoked = True

    # ------------------------------------------------------------------ pinning
    def _pin_range(self, first: int, n: int) -> I64:
        if self.kind == AddressType.FILE:
            return self._pin_file(first, n)
        task = self.source
        if not task.alive:  # pfn_reader_user_pin(): mmget_not_zero() failed
            raise UapiError(errno.EFAULT, "the process that mapped these pages has exited")
        return pin_user(task.process, self.uptr + first * PAGE_SIZE, n * PAGE_SIZE, self.writable)

    def _pin_file(self, first: int, n: int) -> I64:
        # mm/gup.c memfd_pin_folios(): EINVAL for a file that is not shmem or hugetlbfs and past i_size;
        # page-cache holes are allocated
        if not isinstance(self.file, MemFile):
            raise UapiError(errno.EINVAL, "memfd pin of a file that is not a memfd (shmem/hugetlbfs)")
        start = self.start + first * PAGE_SIZE
        end = start + n * PAGE_SIZE - 1
        if end >= self.file.size:
            raise UapiError(errno.EINVAL,
                            f"memfd pin of [{start:#x}, {end:#x}] past its size {self.file.size:#x}")
        frames = self.file.touch(start // PAGE_SIZE, n).copy()
        pin_frames(self.mem, frames)
        return frames

    def _unpin_range(self, first: int, n: int) -> None:
        frames = self.frames[first:first + n]  # read by the unpin before being cleared
        if self.kind == AddressType.FILE:
            unpin_frames(self.mem, frames)
        else:
            self.source.process.unpin_pages(frames)
        self.frames[first:first + n] = -1

    def _pin_runs(self, first: int, need: npt.NDArray[np.bool_], chunk: int | None) -> list[tuple[int, int]]:
        """Pin the runs of ``need`` (indexes from ``first``) into ``frames``, ``chunk`` pages per pin
        call (None: a run per call); each call is a fault point (pfn_reader_user_pin():
        iommufd_should_fail() gives EFAULT).  All or nothing: returns the (first, count) pinned."""
        done: list[tuple[int, int]] = []
        try:
            for s, n in _index_runs(need):
                step = n if chunk is None else chunk
                for off in range(0, n, step):
                    k = min(step, n - off)
                    at = first + s + off
                    fail_point("pfn_reader_user_pin", errno.EFAULT)
                    pinned = self._pin_range(at, k)
                    if self._frames is None and k == self.npages:  # the first pin takes everything:
                        self._frames = pinned  # keep the new array the pin returned instead of a copy
                    else:
                        self.frames[at:at + k] = pinned
                    done.append((at, k))
        except UapiError:
            for s, n in done:
                self._unpin_range(s, n)
            raise
        return done

    def hold(self, first: int, last: int) -> I64:
        """Take a holder on indexes [first, last] for a domain (a pfn_reader: iopt_area_fill_domain[s]()):
        pin those not yet pinned, TEMP_MEMORY_LIMIT's worth per pin call, and charge them; returns the
        frames (a view, valid while the holder lasts).  All or nothing.  The fault points come in the
        kernel's kinds and numbers (batch_init(), the page array, one per pin call, the charge); the
        charge comes before the domains are filled here, after them in the kernel."""
        fail_point(BATCH_INIT)
        need = self.holders[first:last + 1] == 0
        if need.any():
            fail_point(self._page_array_site())
        return self._hold(first, last, need, _pin_chunk())

    def _page_array_site(self) -> str:
        array = "ufolios" if self.kind == AddressType.FILE else "upages"
        return f"pfn_reader_user_pin: temp_kmalloc({array})"

    def _hold(self, first: int, last: int, need: npt.NDArray[np.bool_], chunk: int | None) -> I64:
        sl = slice(first, last + 1)
        done = self._pin_runs(first, need, chunk)
        newly = sum(n for _, n in done)
        self.npinned += newly
        try:
            self.update_pinned_delta()
        except UapiError:
            for s, n in done:
                self._unpin_range(s, n)
            self.npinned -= newly
            raise
        self.holders[sl] += 1
        return self.frames[sl]

    def release(self, first: int, last: int) -> None:
        """Drop a holder on [first, last]: unpin what no one holds any more and uncharge it."""
        sl = slice(first, last + 1)
        self.holders[sl] -= 1
        gone = self.holders[sl] == 0
        n_gone = 0
        for s, n in _index_runs(gone):
            self._unpin_range(first + s, n)
            n_gone += n
        self.npinned -= n_gone
        self.update_unpinned()

    def pinned_frames(self, first: int, last: int) -> I64:
        """Frames of held indexes (from the xarray or a domain in the kernel)."""
        f = self.frames[first:last + 1]
        if len(f) and int(f.min()) < 0:
            raise UapiError(errno.EINVAL, "pages not pinned")  # a model bug
        return f.copy()

    # ------------------------------------------------------------------ accounting
    def update_pinned(self, npages: int, inc: bool) -> None:
        """iopt_pages_update_pinned(): charge or uncharge ``npages`` by account_mode, then pinned_vm."""
        task = self.source
        if self.account_mode == IOPT_PAGES_ACCOUNT_USER:
            user = self.source_user
            if inc:
                if user.locked_vm + npages > task.memlock_pages():  # incr_user_locked_vm()
                    raise UapiError(errno.ENOMEM, f"user {user.uid} locked_vm over RLIMIT_MEMLOCK")
                user.locked_vm += npages
            else:
                user.locked_vm = max(0, user.locked_vm - npages)
        elif self.account_mode == IOPT_PAGES_ACCOUNT_MM:
            task.account_locked_vm(npages, inc)  # update_mm_locked_vm()
        self.last_npinned = self.npinned
        task.pinned_vm += npages if inc else -npages

    def update_pinned_delta(self) -> None:
        """pfn_reader_user_update_pinned(): settle npinned against last_npinned (charging more is a
        fault point: iommufd_should_fail() gives ENOMEM)."""
        if self.npinned > self.last_npinned:
            fail_point("pfn_reader_user_update_pinned")
            self.update_pinned(self.npinned - self.last_npinned, True)
        elif self.npinned < self.last_npinned:
            self.update_pinned(self.last_npinned - self.npinned, False)

    def update_unpinned(self) -> None:
        """update_unpinned()."""
        if self.npinned < self.last_npinned:
            self.update_pinned(self.last_npinned - self.npinned, False)

    # ------------------------------------------------------------------ in-kernel access (access_itree)
    def add_access(self, first: int, last: int, write: bool) -> I64:
        """iopt_area_add_access(): an exact (first, last) node gains a user, or a new node pins."""
        if write and not self.writable:
            raise UapiError(errno.EPERM, "write access to pages mapped read-only")
        if self.kind == AddressType.DMABUF:
            raise UapiError(errno.EINVAL, "no page access to a dma-buf")
        key = (first, last)
        if key in self.accesses:
            self.accesses[key] += 1
            return self.pinned_frames(first, last)
        fail_point("iopt_area_add_access: kzalloc(struct iopt_pages_access)")
        frames = self._fill_xarray(first, last)
        self.accesses[key] = 1
        return frames

    def _fill_xarray(self, first: int, last: int) -> I64:
        """iopt_pages_fill_xarray(): the spans of [first, last] in order: pages already in the xarray
        (an access holds them) are read from it; pages a domain holds are read from the domain and
        stored (pages_to_xarray(), a fault point: EINVAL); holes are pinned, one pin call each, and
        stored; then the charge.  All or nothing."""
        n = last - first + 1
        kind = np.where(self.holders[first:last + 1] > 0, 2, 0).astype(np.int8)
        for (a, b) in self.accesses:  # access_itree spans win over domain spans
            lo, hi = max(a, first), min(b, last)
            if lo <= hi:
                kind[lo - first:hi - first + 1] = 1
        cut = np.flatnonzero(np.diff(kind)) + 1
        starts = [0, *cut.tolist()]
        ends = [*cut.tolist(), n]
        need = np.zeros(n, dtype=bool)
        for s, e in zip(starts, ends):  # every span but the xarray's stores into the xarray
            if kind[s] == 0:
                need[s:e] = True
        # pinning goes first in the model; the kernel interleaves pins and xarray stores span by span
        sl = slice(first, last + 1)
        done = self._pin_runs(first, need, None)
        try:
            for s, e in zip(starts, ends):
                if kind[s] != 1:
                    fail_point("pages_to_xarray", errno.EINVAL)
            self.npinned += sum(k for _, k in done)
            try:
                self.update_pinned_delta()
            except UapiError:
                self.npinned -= sum(k for _, k in done)
                raise
        except UapiError:
            for s, k in done:
                self._unpin_range(s, k)
            raise
        self.holders[sl] += 1
        return self.frames[sl].copy()

    def remove_access(self, first: int, last: int) -> None:
        """iopt_area_remove_access(): the node loses a user; the last one unpins."""
        key = (first, last)
        users = self.accesses.get(key)
        if not users:
            raise UapiError(errno.ENOENT, f"no access on indexes [{first}, {last}]")  # WARN_ON in the kernel
        if users > 1:
            self.accesses[key] = users - 1
            return
        del self.accesses[key]
        self.release(first, last)

    # ------------------------------------------------------------------ CPU copies (iopt_pages_rw_access)
    def rw(self, current: Task, start_byte: int, length: int, flags: int,
           data: bytearray | None = None) -> bytes:
        """iopt_pages_rw_access(): copy ``data`` in (IOMMUFD_ACCESS_RW_WRITE) or return ``length``
        bytes, through the source mm when that is the caller's, else page by page."""
        write = bool(flags & IOMMUFD_ACCESS_RW_WRITE)
        first = start_byte // PAGE_SIZE
        last = (start_byte + length - 1) // PAGE_SIZE
        change_mm = current is not self.source or bool(flags & IOMMUFD_ACCESS_RW_SLOW_PATH)
        if write and not self.writable:
            raise UapiError(errno.EPERM, "write access to pages mapped read-only")
        if self.kind == AddressType.DMABUF:
            raise UapiError(errno.EINVAL, "no CPU access to a dma-buf")
        if self.kind != AddressType.USER:
            return self._rw_slow(first, last, start_byte % PAGE_SIZE, length, data, write)
        if not flags & IOMMUFD_ACCESS_RW_KTHREAD and change_mm:
            if first == last:
                return self._rw_page(first, start_byte % PAGE_SIZE, length, data, write)
            return self._rw_slow(first, last, start_byte % PAGE_SIZE, length, data, write)
        if change_mm and not self.source.alive:
            return self._rw_slow(first, last, start_byte % PAGE_SIZE, length, data, write)
        va = self.uptr + start_byte
        if write:
            assert data is not None
            self.source.process.write(va, bytes(data[:length]))
            return b""
        return self.source.process.read(va, length)

    def _rw_page(self, index: int, offset: int, length: int, data: bytearray | None, write: bool) -> bytes:
        # iopt_pages_rw_page(): pin_user_pages_remote() of one page, copy, unpin
        if not self.source.alive:
            return self._rw_slow(index, index, offset, length, data, write)
        fail_point("iopt_pages_rw_page", errno.EINVAL)
        proc = self.source.process
        frames = proc.pin_pages(self.uptr + index * PAGE_SIZE, PAGE_SIZE, write=write)
        try:
            return copy_frames(self.mem, frames, offset, length, data, write)
        finally:
            proc.unpin_pages(frames)

    def _rw_slow(self, first: int, last: int, offset: int, length: int, data: bytearray | None,
                 write: bool) -> bytes:
        # iopt_pages_rw_slow(): a pfn_reader; holes are pinned for the copy and unpinned after it
        fail_point(BATCH_INIT)
        need = self.holders[first:last + 1] == 0
        if need.any():
            fail_point(self._page_array_site())
        temp = self._pin_runs(first, need, _pin_chunk())
        try:
            frames = self.frames[first:last + 1].copy()
            return copy_frames(self.mem, frames, offset, length, data, write)
        finally:
            for s, n in temp:
                self._unpin_range(s, n)

    def change_source(self, task: Task) -> None:
        """change_mm(): the pages now belong to ``task`` (IOMMU_IOAS_CHANGE_PROCESS)."""
        self.source = task
        self.source_user = task.user


class DmaBufExporter(Protocol):
    """What an exporter gives iommufd (``dma_buf_attach`` + ``vfio_pci_dma_buf_iommufd_map``)."""

    size: int
    paddr: int

    def detach(self, pages: IoptPages) -> None: ...


_KZALLOC_PAGES: Final = "iopt_alloc_pages: kzalloc(struct iopt_pages)"


def _check_length(length: int) -> None:
    # iopt_alloc_pages(): the length checks come before the allocation
    if length > SIZE_MAX - PAGE_SIZE or length == 0:
        raise UapiError(errno.EINVAL, f"bad length {length:#x}")


def alloc_dmabuf_pages(task: Task, dmabuf: DmaBufExporter, start: int, length: int,
                       writable: bool) -> tuple[IoptPages, int]:
    """iopt_alloc_dmabuf_pages(): EINVAL past the buffer; no pin accounting for MMIO."""
    if dmabuf.size <= start + length - 1 or length // PAGE_SIZE >= 0xFFFFFFFF:
        raise UapiError(errno.EINVAL, f"[{start:#x}, +{length:#x}) past the {dmabuf.size:#x}-byte dma-buf")
    start_byte = start % PAGE_SIZE
    _check_length(length)
    fail_point(_KZALLOC_PAGES)
    pages = IoptPages(task, AddressType.DMABUF, start_byte, length, writable, start=start - start_byte)
    pages.account_mode = IOPT_PAGES_ACCOUNT_NONE
    pages.dmabuf = dmabuf
    return pages, start_byte


def alloc_user_pages(task: Task, uptr: int, length: int, writable: bool) -> tuple[IoptPages, int]:
    """iopt_alloc_user_pages(): pages for [uptr, uptr+length) and the start byte inside them."""
    if uptr + length > SIZE_MAX:
        raise UapiError(errno.EOVERFLOW, f"user_va {uptr:#x} + length {length:#x} overflows")
    down = uptr & ~(PAGE_SIZE - 1)
    _check_length(length)
    fail_point(_KZALLOC_PAGES)
    pages = IoptPages(task, AddressType.USER, uptr - down, length, writable, uptr=down)
    return pages, uptr - down


def alloc_file_pages(task: Task, file: object, start: int, length: int,
                     writable: bool) -> tuple[IoptPages, int]:
    """iopt_alloc_file_pages(): pages for bytes [start, start+length) of any file, which they keep open
    (get_file()); whether its pages can be pinned is found out when a domain or access needs them."""
    start_byte = start % PAGE_SIZE
    _check_length(length)
    fail_point(_KZALLOC_PAGES)
    pages = IoptPages(task, AddressType.FILE, start_byte, length, writable, file=file,
                      start=start - start_byte)
    get_file(file)
    return pages, start_byte
