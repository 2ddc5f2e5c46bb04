"""The VFIO type1 IOMMU driver of a legacy container (``drivers/vfio/vfio_iommu_type1.c``), natively over
the IOMMU core: one paging domain per compatible set of groups, user mappings pinned from the process model
and mapped into every domain, the valid IOVA list (apertures minus reserved regions), MAP_DMA / UNMAP_DMA
(v1 and v2 semantics, UNMAP_ALL, VADDR invalidate/update), GET_INFO with its capability chain, and dirty
page tracking.

Dirty tracking is type1's own, not the IOMMU's: a group backed by an IOMMU can write anywhere it is
mapped, so while such a group is in the container every mapped page reports dirty; only when every group
declared its dirty scope by pinning pages (an emulated IOMMU device using ``pin_pages``) are exactly the
pinned pages and ``dma_rw`` writes dirty.  Bitmaps are word-copied into user memory as
``update_user_bitmap()`` does, so adjacent mappings meet in one bitmap.

Every entry point validates in the kernel's order and raises :class:`~vfiolab.errors.UapiError`.
"""

from __future__ import annotations

import bisect
import errno
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Protocol

import numpy as np
import numpy.typing as npt

from vfiolab.errors import UapiError, VfiolabError
from vfiolab.iommu import group as core
from vfiolab.iommu.domain import PagingDomain
from vfiolab.iommu.pagetable.common import IOMMU_CACHE, IOMMU_READ, IOMMU_WRITE
from vfiolab.iommu.resv import ResvRegion, ResvType
from vfiolab.iommufd import uapi as iu
from vfiolab.iommufd.task import Task
from vfiolab.iommufd.uapi import CStruct
from vfiolab.memory import PAGE_SIZE, UserProcess
from vfiolab.vfio.device import VfioInfoCap

if TYPE_CHECKING:
    from vfiolab.iommu.group import IommuGroup
    from vfiolab.iommufd.ucmd import UserBuffer

U64: Final = (1 << 64) - 1
PAGE_MASK: Final = ~(PAGE_SIZE - 1) & U64
USER_PTR_MAX: Final = (1 << 47) - PAGE_SIZE
"""x86-64 4-level USER_PTR_MAX (= TASK_SIZE_MAX): the access_ok() limit."""
DMA_ENTRY_LIMIT: Final = 0xFFFF
"""Module parameter dma_entry_limit (U16_MAX)."""
DIRTY_BITMAP_PAGES_MAX: Final = (1 << 31) - 1  # INT_MAX


def dirty_bitmap_bytes(n: int) -> int:
    """DIRTY_BITMAP_BYTES(n): whole u64 words."""
    return -(-n // 64) * 8


DIRTY_BITMAP_SIZE_MAX: Final = dirty_bitmap_bytes(DIRTY_BITMAP_PAGES_MAX)

# drivers/vfio/vfio.h enum vfio_group_type
VFIO_IOMMU: Final = 0
VFIO_EMULATED_IOMMU: Final = 1
VFIO_NO_IOMMU: Final = 2
# include/uapi/linux/vfio.h
VFIO_IOMMU_DIRTY_PAGES_FLAG_START: Final = 1 << 0
VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP: Final = 1 << 1
VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP: Final = 1 << 2
vfio_bitmap: Final = CStruct("vfio_bitmap", [("pgsize", "u64"), ("size", "u64"), ("data", "u64")])
vfio_iommu_type1_dirty_bitmap: Final = CStruct("vfio_iommu_type1_dirty_bitmap", [("argsz", "u32"), ("flags", "u32")])
vfio_iommu_type1_dirty_bitmap_get: Final = CStruct("vfio_iommu_type1_dirty_bitmap_get", [
    ("iova", "u64"), ("size", "u64"), ("pgsize", "u64"), ("bitmap_size", "u64"), ("data", "u64")])
vfio_iommu_type1_info_cap_migration: Final = CStruct("vfio_iommu_type1_info_cap_migration", [
    ("id", "u16"), ("version", "u16"), ("next", "u32"), ("flags", "u32"), ("pgsize_bitmap", "u64"),
    ("max_dirty_bitmap_size", "u64")])


def _ffs(x: int) -> int:
    """__ffs(): index of the lowest set bit (0 for 0, where the kernel's result is undefined)."""
    return (x & -x).bit_length() - 1 if x else 0


def access_ok(addr: int, size: int) -> bool:
    """x86-64 __access_ok() for a size that is not a small constant."""
    end = (addr + size) & U64
    return end <= USER_PTR_MAX and end >= addr


class DmaUnmapListener(Protocol):
    """A device registered with the container that pins pages (vfio_device_ops.dma_unmap)."""

    def dma_unmap(self, iova: int, length: int) -> None: ...


# ---------------------------------------------------------------------- the bookkeeping
@dataclass(eq=False)
class VfioDma:
    """struct vfio_dma: one user mapping."""

    iova: int
    vaddr: int
    size: int
    prot: int
    task: Task
    lock_cap: bool
    frames: npt.NDArray[np.int64] | None = None
    """The pinned frame of every page while mapped into the domains (iommu_mapped)."""
    vaddr_invalid: bool = False
    bitmap: npt.NDArray[np.bool_] | None = None
    """Dirty bitmap at the container's smallest page size while tracking is on."""
    pfn_list: dict[int, list[int]] = field(default_factory=dict)
    """External pins: iova -> [frame, refcount] (struct vfio_pfn)."""
    locked_vm: int = 0

    @property
    def last(self) -> int:
        return self.iova + self.size - 1

    @property
    def iommu_mapped(self) -> bool:
        return self.frames is not None


@dataclass(eq=False)
class VfioIommuGroup:
    """struct vfio_iommu_group."""

    iommu_group: IommuGroup
    pinned_page_dirty_scope: bool = False


@dataclass(eq=False)
class VfioDomain:
    """struct vfio_domain."""

    domain: PagingDomain
    groups: list[VfioIommuGroup] = field(default_factory=list)
    enforce_cache_coherency: bool = False


def _runs(frames: npt.NDArray[np.int64]) -> list[tuple[int, int, int]]:
    """Physically contiguous pieces of a frame array as (first page index, frame, page count)."""
    if not len(frames):
        return []
    cut = np.flatnonzero(np.diff(frames) != 1) + 1
    starts = np.concatenate(([0], cut)).tolist()
    ends = np.concatenate((cut, [len(frames)])).tolist()
    return [(s, int(frames[s]), e - s) for s, e in zip(starts, ends, strict=True)]


class VfioIommuType1:
    """struct vfio_iommu: the type1 state of one container (``iommu_data``)."""

    def __init__(self, v2: bool, process: UserProcess, *, allow_unsafe_interrupts: bool = False,
                 dma_entry_limit: int = DMA_ENTRY_LIMIT) -> None:
        self.v2 = v2
        self.process = process
        self.allow_unsafe_interrupts = allow_unsafe_interrupts
        self.domains: list[VfioDomain] = []
        self.iova_list: list[tuple[int, int]] = []
        """Valid IOVA ranges (start, end), sorted; empty: anything goes (no IOMMU group yet)."""
        self.dmas: list[VfioDma] = []
        """dma_list, sorted by IOVA."""
        self._starts: list[int] = []
        self.dma_avail = dma_entry_limit
        self.vaddr_invalid_count = 0
        self.pgsize_bitmap = PAGE_MASK
        self.num_non_pinned_groups = 0
        self.dirty_page_tracking = False
        self.emulated: list[VfioIommuGroup] = []
        self.devices: list[DmaUnmapListener] = []

    # ------------------------------------------------------------------ dma list
    @property
    def pgsize(self) -> int:
        return 1 << _ffs(self.pgsize_bitmap)

    def find_dma(self, start: int, size: int) -> VfioDma | None:
        """vfio_find_dma(): a mapping overlapping [start, start+size)."""
        last = start + size - 1
        i = bisect.bisect_right(self._starts, last) - 1
        if i >= 0 and self.dmas[i].last >= start:
            return self.dmas[i]
        return None

    def _first_from(self, start: int) -> int:
        """Index of the first mapping ending at or after ``start`` (vfio_find_dma_first_node)."""
        i = bisect.bisect_right(self._starts, start) - 1
        if i >= 0 and self.dmas[i].last >= start:
            return i
        return i + 1

    def _link(self, dma: VfioDma) -> None:
        i = bisect.bisect_left(self._starts, dma.iova)
        self.dmas.insert(i, dma)
        self._starts.insert(i, dma.iova)

    def _unlink(self, dma: VfioDma) -> None:
        i = self.dmas.index(dma)
        del self.dmas[i]
        del self._starts[i]

    # ------------------------------------------------------------------ accounting
    def _lock_acct(self, dma: VfioDma, npage: int) -> None:
        """vfio_lock_acct() -> __account_locked_vm(mm, npage, inc, task, bypass=lock_cap): ENOMEM when a
        task without CAP_IPC_LOCK would exceed RLIMIT_MEMLOCK."""
        if not npage:
            return
        task = dma.task
        if npage > 0 and not dma.lock_cap and task.locked_vm + npage > task.memlock_pages():
            raise UapiError(errno.ENOMEM, f"RLIMIT_MEMLOCK ({task.rlimit_memlock}) exceeded")
        task.locked_vm = max(0, task.locked_vm + npage)
        dma.locked_vm += npage

    # ------------------------------------------------------------------ pin and map
    def _domain_map(self, iova: int, pa: int, size: int, prot: int) -> None:
        """vfio_iommu_map(): into every domain, unwinding the ones done on failure."""
        done: list[VfioDomain] = []
        for d in self.domains:
            try:
                d.domain.map(iova, pa, size, prot | IOMMU_CACHE)
            except (UapiError, VfiolabError) as e:
                for x in done:
                    x.domain.unmap(iova, size)
                if isinstance(e, UapiError):
                    raise
                raise UapiError(errno.ENOMEM, f"IOMMU page table: {e}") from e
            done.append(d)

    def _pin(self, dma: VfioDma, vaddr: int, size: int) -> npt.NDArray[np.int64]:
        """vfio_pin_pages_remote() over the whole range: pin (EFAULT from GUP), then charge the pages not
        already pinned externally (ENOMEM over RLIMIT_MEMLOCK; the pins are dropped)."""
        frames = self.process.pin_pages(vaddr, size, write=bool(dma.prot & IOMMU_WRITE))
        acct = len(frames) - self._external_in(dma, dma.iova, dma.iova + size)
        try:
            self._lock_acct(dma, acct)
        except UapiError:
            self.process.unpin_pages(frames)
            raise
        return frames

    def _external_in(self, dma: VfioDma, lo: int, hi: int) -> int:
        """vpfn_pages(): externally pinned pages of ``dma`` in [lo, hi)."""
        return sum(1 for iova in dma.pfn_list if lo <= iova < hi)

    def _pin_map(self, dma: VfioDma, size: int) -> None:
        """vfio_pin_map_dma(): on failure the mapping is removed."""
        try:
            frames = self._pin(dma, dma.vaddr, size)
        except UapiError:
            self._remove_dma(dma)
            raise
        mapped: list[tuple[int, int, int]] = []
        try:
            for first, frame, n in _runs(frames):
                self._domain_map(dma.iova + first * PAGE_SIZE, frame * PAGE_SIZE, n * PAGE_SIZE, dma.prot)
                mapped.append((first, frame, n))
        except UapiError:
            for first, _frame, n in mapped:
                for d in self.domains:
                    d.domain.unmap(dma.iova + first * PAGE_SIZE, n * PAGE_SIZE)
            self._lock_acct(dma, -(len(frames) - self._external_in(dma, dma.iova, dma.iova + size)))
            self.process.unpin_pages(frames)
            self._remove_dma(dma)
            raise
        dma.size = size
        dma.frames = frames

    def _unmap_unpin(self, dma: VfioDma, do_accounting: bool) -> int:
        """vfio_unmap_unpin(): out of every domain, pins dropped; returns the pages unlocked (charged back
        here when ``do_accounting``)."""
        if not dma.size or not self.domains or dma.frames is None:
            return 0
        for d in self.domains:
            d.domain.unmap(dma.iova, dma.size)
        frames, dma.frames = dma.frames, None
        self.process.unpin_pages(frames)
        unlocked = len(frames)
        if do_accounting:
            self._lock_acct(dma, -unlocked)
            return 0
        return unlocked

    def _remove_dma(self, dma: VfioDma) -> None:
        """vfio_remove_dma()."""
        self._unmap_unpin(dma, True)
        if dma in self.dmas:
            self._unlink(dma)
        if dma.vaddr_invalid:
            self.vaddr_invalid_count -= 1
        dma.bitmap = None
        self.dma_avail += 1

    # ------------------------------------------------------------------ VFIO_IOMMU_MAP_DMA
    def map_dma(self, vaddr: int, iova: int, size: int, flags: int) -> None:
        """vfio_dma_do_map()."""
        set_vaddr = bool(flags & iu.VFIO_DMA_MAP_FLAG_VADDR)
        if not size:
            raise UapiError(errno.EINVAL, "size 0")
        if iova + size - 1 > U64 or vaddr + size - 1 > U64:
            raise UapiError(errno.EOVERFLOW, f"[{iova:#x} or {vaddr:#x}, +{size:#x}) overflows")
        prot = (IOMMU_WRITE if flags & iu.VFIO_DMA_MAP_FLAG_WRITE else 0) | \
            (IOMMU_READ if flags & iu.VFIO_DMA_MAP_FLAG_READ else 0)
        if bool(prot) == set_vaddr:
            raise UapiError(errno.EINVAL, "READ/WRITE needed, and not with VADDR")
        pgsize = self.pgsize
        if (size | iova | vaddr) & (pgsize - 1):
            raise UapiError(errno.EINVAL, f"not aligned to {pgsize:#x}")
        dma = self.find_dma(iova, size)
        task = Task.of(self.process)
        if set_vaddr:
            if dma is None:
                raise UapiError(errno.ENOENT, f"no mapping at {iova:#x}")
            if not dma.vaddr_invalid or dma.iova != iova or dma.size != size:
                raise UapiError(errno.EINVAL, "VADDR update must match an invalidated mapping exactly")
            self._change_owner(dma, task)
            dma.vaddr = vaddr
            dma.vaddr_invalid = False
            self.vaddr_invalid_count -= 1
            return
        if dma is not None:
            raise UapiError(errno.EEXIST, f"[{iova:#x}, +{size:#x}) overlaps a mapping")
        if not self.dma_avail:
            raise UapiError(errno.ENOSPC, "dma_entry_limit reached")
        if self.iova_list and not any(s <= iova and iova + size - 1 <= e for s, e in self.iova_list):
            raise UapiError(errno.EINVAL, f"[{iova:#x}, +{size:#x}) is outside the valid IOVA ranges")
        self.dma_avail -= 1
        dma = VfioDma(iova, vaddr, 0, prot, task, task.cap_ipc_lock)
        self._link(dma)
        if not self.domains:
            dma.size = size  # nothing to pin for: no IOMMU-backed domain
        else:
            self._pin_map(dma, size)
        if self.dirty_page_tracking:
            try:
                dma.bitmap = self._bitmap_alloc(dma, pgsize)
            except UapiError:
                self._remove_dma(dma)
                raise

    def _change_owner(self, dma: VfioDma, task: Task) -> None:
        """vfio_change_dma_owner(): the pages' accounting moves to the caller's mm."""
        if task is dma.task:
            return
        lock_cap = task.cap_ipc_lock
        n = dma.locked_vm
        if n and not lock_cap and task.locked_vm + n > task.memlock_pages():
            raise UapiError(errno.ENOMEM, "RLIMIT_MEMLOCK exceeded by the new owner")
        task.locked_vm += n
        dma.task.locked_vm = max(0, dma.task.locked_vm - n)
        dma.task = task
        dma.lock_cap = lock_cap

    # ------------------------------------------------------------------ VFIO_IOMMU_UNMAP_DMA
    def unmap_dma(self, iova: int, size: int, flags: int, bitmap: dict[str, int] | None = None) -> int:
        """vfio_dma_do_unmap(): bytes unmapped (or invalidated with VADDR)."""
        unmap_all = bool(flags & iu.VFIO_DMA_UNMAP_FLAG_ALL)
        invalidate = bool(flags & iu.VFIO_DMA_UNMAP_FLAG_VADDR)
        get_dirty = bool(flags & iu.VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP)
        if invalidate and self.emulated:
            raise UapiError(errno.EBUSY, "cannot invalidate vaddrs with an emulated IOMMU group present")
        pgsize = self.pgsize
        if iova & (pgsize - 1):
            raise UapiError(errno.EINVAL, f"iova {iova:#x} not aligned to {pgsize:#x}")
        if unmap_all:
            if iova or size:
                raise UapiError(errno.EINVAL, "UNMAP_FLAG_ALL needs iova and size 0")
            iova_end = U64
        else:
            if not size or size & (pgsize - 1):
                raise UapiError(errno.EINVAL, f"size {size:#x} zero or not aligned to {pgsize:#x}")
            iova_end = iova + size - 1
            if iova_end > U64:
                raise UapiError(errno.EOVERFLOW, f"[{iova:#x}, +{size:#x}) overflows")
        if get_dirty and (not self.dirty_page_tracking or bitmap is None or bitmap["pgsize"] != pgsize):
            raise UapiError(errno.EINVAL, "dirty bitmap needs tracking on and the smallest page size")
        if self.v2 and not unmap_all:  # v2: no mapping may be cut
            dma = self.find_dma(iova, 1)
            if dma is not None and dma.iova != iova:
                raise UapiError(errno.EINVAL, f"{iova:#x} is inside a mapping")
            dma = self.find_dma(iova_end, 1)
            if dma is not None and dma.last != iova_end:
                raise UapiError(errno.EINVAL, f"{iova_end:#x} is inside a mapping")
        unmapped = 0
        retries: dict[int, int] = {}
        i = self._first_from(iova)
        first = i
        while i < len(self.dmas):
            dma = self.dmas[i]
            if dma.iova > iova_end:
                break
            if not self.v2 and iova > dma.iova:  # v1: a range starting inside a mapping unmaps nothing
                break
            if invalidate:
                if dma.vaddr_invalid:  # already invalid: undo this call's invalidations
                    for d in self.dmas[first:i]:
                        d.vaddr_invalid = False
                        self.vaddr_invalid_count -= 1
                    raise UapiError(errno.EINVAL, f"vaddr of the mapping at {dma.iova:#x} is already invalid")
                dma.vaddr_invalid = True
                self.vaddr_invalid_count += 1
                unmapped += dma.size
                i += 1
                continue
            if dma.pfn_list:  # devices must drop their pins first (vfio_notify_dma_unmap)
                retries[dma.iova] = retries.get(dma.iova, 0) + 1
                if retries[dma.iova] > 10:
                    raise VfiolabError(f"a device keeps pages of {dma.iova:#x} pinned (the kernel BUG()s)")
                for dev in list(self.devices):
                    dev.dma_unmap(dma.iova, dma.size)
                i = self._first_from(iova)
                continue
            if get_dirty:
                assert bitmap is not None
                self._update_user_bitmap(bitmap["data"], dma, iova, pgsize)
            unmapped += dma.size
            self._remove_dma(dma)  # the next mapping moves to index i
        return unmapped

    # ------------------------------------------------------------------ dirty tracking
    def _bitmap_alloc(self, dma: VfioDma, pgsize: int) -> npt.NDArray[np.bool_]:
        """vfio_dma_bitmap_alloc() + vfio_dma_populate_bitmap(): EINVAL beyond INT_MAX pages."""
        npages = dma.size // pgsize
        if npages > DIRTY_BITMAP_PAGES_MAX:
            raise UapiError(errno.EINVAL, f"{npages} pages exceed the dirty bitmap limit")
        bits = np.zeros(npages, dtype=bool)
        self._populate(dma, bits, pgsize)
        return bits

    @staticmethod
    def _populate(dma: VfioDma, bits: npt.NDArray[np.bool_], pgsize: int) -> None:
        """vfio_dma_populate_bitmap(): externally pinned pages are dirty."""
        if dma.pfn_list:
            idx = (np.fromiter(dma.pfn_list, dtype=np.uint64) - np.uint64(dma.iova)) // np.uint64(pgsize)
            bits[idx.astype(np.int64)] = True

    def dirty_start(self) -> None:
        """VFIO_IOMMU_DIRTY_PAGES_FLAG_START (already on: nothing to do)."""
        if self.dirty_page_tracking:
            return
        pgsize = self.pgsize
        bitmaps = [self._bitmap_alloc(d, pgsize) for d in self.dmas]
        for d, b in zip(self.dmas, bitmaps, strict=True):
            d.bitmap = b
        self.dirty_page_tracking = True

    def dirty_stop(self) -> None:
        """VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP."""
        if self.dirty_page_tracking:
            self.dirty_page_tracking = False
            for d in self.dmas:
                d.bitmap = None

    def _update_user_bitmap(self, ptr: int, dma: VfioDma, base_iova: int, pgsize: int) -> None:
        """update_user_bitmap(): every page dirty while an IOMMU-backed group has not declared its dirty
        scope; shifted into place and word-copied, ORing in the first user word when not word aligned."""
        pgshift = _ffs(pgsize)
        nbits = dma.size >> pgshift
        bit_offset = (dma.iova - base_iova) >> pgshift
        copy_offset, shift = divmod(bit_offset, 64)
        assert dma.bitmap is not None
        if self.num_non_pinned_groups and dma.iommu_mapped:
            dma.bitmap[:] = True
        bits = np.zeros(-(-(nbits + shift) // 64) * 64, dtype=bool)
        bits[shift:shift + nbits] = dma.bitmap[:nbits]
        words = np.packbits(bits, bitorder="little")
        addr = ptr + copy_offset * 8
        if shift:
            leftover = np.frombuffer(self.process.read(addr, 8), dtype=np.uint8)
            words[:8] |= leftover  # bitmap_or() of the whole first word
        self.process.write(addr, words.tobytes())

    def dirty_bitmap(self, iova: int, size: int, pgsize: int, data: int) -> None:
        """vfio_iova_dirty_bitmap(): the range must not cut a mapping (EINVAL); bits go to user memory
        at ``data``, then each bitmap restarts from the pinned pages."""
        iova_end = iova + size - 1
        dma = self.find_dma(iova, 1)
        if dma is not None and dma.iova != iova:
            raise UapiError(errno.EINVAL, f"{iova:#x} is inside a mapping")
        dma = self.find_dma(iova_end, 1)
        if dma is not None and dma.last != iova_end:
            raise UapiError(errno.EINVAL, f"{iova_end:#x} is inside a mapping")
        for d in list(self.dmas):
            if d.iova < iova:
                continue
            if d.iova > iova_end:
                break
            self._update_user_bitmap(data, d, iova, pgsize)
            assert d.bitmap is not None
            d.bitmap[:] = False
            self._populate(d, d.bitmap, pgsize)

    def _populate_full(self) -> None:
        """vfio_iommu_populate_bitmap_full()."""
        for d in self.dmas:
            if d.bitmap is not None:
                d.bitmap[:] = True

    # ------------------------------------------------------------------ groups
    def _find_group(self, iommu_group: IommuGroup) -> VfioIommuGroup | None:
        for d in self.domains:
            for g in d.groups:
                if g.iommu_group is iommu_group:
                    return g
        for g in self.emulated:
            if g.iommu_group is iommu_group:
                return g
        return None

    def _aper_conflict(self, start: int, end: int) -> bool:
        """vfio_iommu_aper_conflict()."""
        if not self.iova_list:
            return False
        first, last = self.iova_list[0], self.iova_list[-1]
        if start > last[1] or end < first[0]:
            return True
        if start > first[0] and self.find_dma(first[0], start - first[0]) is not None:
            return True
        return end < last[1] and self.find_dma(end + 1, last[1] - end) is not None

    def _resv_conflict(self, resv: list[ResvRegion]) -> bool:
        return any(r.type != ResvType.DIRECT_RELAXABLE and self.find_dma(r.start, r.length) is not None
                   for r in resv)

    @staticmethod
    def _aper_resize(iova: list[tuple[int, int]], start: int, end: int) -> list[tuple[int, int]]:
        """vfio_iommu_aper_resize(): clip the list to [start, end] (or make it that range)."""
        if not iova:
            return [(start, end)]
        return [(max(s, start), min(e, end)) for s, e in iova if e >= start and s <= end]

    @staticmethod
    def _resv_exclude(iova: list[tuple[int, int]], resv: list[ResvRegion]) -> list[tuple[int, int]]:
        """vfio_iommu_resv_exclude(): EINVAL when nothing valid remains."""
        out = list(iova)
        for r in resv:
            if r.type == ResvType.DIRECT_RELAXABLE:
                continue
            start, end = r.start, r.start + r.length - 1
            nxt: list[tuple[int, int]] = []
            for s, e in out:
                if start > e or end < s:
                    nxt.append((s, e))
                    continue
                if start > s:
                    nxt.append((s, start - 1))
                if end < e:
                    nxt.append((end + 1, e))
            out = nxt
        if not out:
            raise UapiError(errno.EINVAL, "no valid IOVA range left after the reserved regions")
        return out

    def attach_group(self, iommu_group: IommuGroup, gtype: int) -> None:
        """vfio_iommu_type1_attach_group()."""
        if self.vaddr_invalid_count:
            raise UapiError(errno.EBUSY, "vaddrs are invalidated")
        if self._find_group(iommu_group) is not None:
            raise UapiError(errno.EINVAL, f"group {iommu_group.id} is already attached")
        group = VfioIommuGroup(iommu_group)
        if gtype == VFIO_EMULATED_IOMMU:
            group.pinned_page_dirty_scope = True  # can only dirty memory through pin_pages/dma_rw
            self.emulated.insert(0, group)
            return
        dev = iommu_group.devices[0] if iommu_group.devices else None
        if dev is None or dev.unit is None or dev.unit.driver is None:
            raise UapiError(errno.ENODEV, f"group {iommu_group.id} has no device behind an IOMMU")
        domain = dev.unit.driver.domain_alloc_paging(dev)  # iommu_paging_domain_alloc()
        vd = VfioDomain(domain)
        try:
            core.iommu_attach_group(domain, iommu_group)
        except UapiError:
            domain.free()
            raise
        try:
            start, end = domain.aperture
            if self._aper_conflict(start, end):
                raise UapiError(errno.EINVAL, "the domain's aperture excludes existing mappings")
            resv = iommu_group.resv_regions()
            if self._resv_conflict(resv):
                raise UapiError(errno.EINVAL, "a reserved region overlaps an existing mapping")
            iova_copy = self._resv_exclude(self._aper_resize(self.iova_list, start, end), resv)
            vd.groups.insert(0, group)
            if not self.allow_unsafe_interrupts and not getattr(iommu_group, "isolated_msi", True):
                raise UapiError(errno.EPERM, "no interrupt remapping (allow_unsafe_interrupts to override)")
            vd.enforce_cache_coherency = bool(domain.enforce_cache_coherency())
            for d in self.domains:  # reuse a compatible domain (same ops, same coherency)
                if (d.domain.owner is domain.owner and d.domain.fmt.name == domain.fmt.name
                        and d.enforce_cache_coherency == vd.enforce_cache_coherency):
                    core.iommu_detach_group(domain, iommu_group)
                    try:
                        core.iommu_attach_group(d.domain, iommu_group)
                    except UapiError:
                        core.iommu_attach_group(domain, iommu_group)
                        continue
                    d.groups.insert(0, group)
                    domain.free()
                    self._finish_attach(iova_copy)
                    return
            self._replay(vd)
        except UapiError:
            if iommu_group.domain is vd.domain:
                core.iommu_detach_group(vd.domain, iommu_group)
            vd.domain.free()
            raise
        self.domains.insert(0, vd)
        self._update_pgsize_bitmap()
        self._finish_attach(iova_copy)

    def _finish_attach(self, iova_copy: list[tuple[int, int]]) -> None:
        self.iova_list = iova_copy
        self.num_non_pinned_groups += 1  # an IOMMU-backed group can dirty any mapped page

    def _replay(self, vd: VfioDomain) -> None:
        """vfio_iommu_replay(): map every mapping into the new domain, pinning those never pinned; on
        failure the new domain is emptied and the new pins dropped."""
        pinned: list[VfioDma] = []
        mapped: list[tuple[int, int]] = []
        try:
            for dma in self.dmas:
                frames = dma.frames
                if frames is None:
                    frames = self._pin(dma, dma.vaddr, dma.size)
                    dma.frames = frames
                    pinned.append(dma)
                for first, frame, n in _runs(frames):
                    iova = dma.iova + first * PAGE_SIZE
                    try:
                        vd.domain.map(iova, frame * PAGE_SIZE, n * PAGE_SIZE, dma.prot | IOMMU_CACHE)
                    except VfiolabError as e:
                        raise UapiError(errno.ENOMEM, f"IOMMU page table: {e}") from e
                    mapped.append((iova, n * PAGE_SIZE))
        except UapiError:
            for iova, size in mapped:
                vd.domain.unmap(iova, size)
            for dma in pinned:
                assert dma.frames is not None
                self._lock_acct(dma, -(len(dma.frames) - self._external_in(dma, dma.iova, dma.iova + dma.size)))
                self.process.unpin_pages(dma.frames)
                dma.frames = None
            raise

    def _update_pgsize_bitmap(self) -> None:
        """vfio_update_pgsize_bitmap(): the common page sizes; sub-page sizes shown as PAGE_SIZE."""
        bm = U64
        for d in self.domains:
            bm &= d.domain.pgsize_bitmap
        if bm & ~PAGE_MASK & U64:
            bm = (bm & PAGE_MASK) | PAGE_SIZE
        self.pgsize_bitmap = bm

    def _unmap_unpin_all(self) -> None:
        while self.dmas:
            self._remove_dma(self.dmas[0])

    def _unmap_unpin_reaccount(self) -> None:
        """vfio_iommu_unmap_unpin_reaccount(): the last IOMMU domain goes but emulated groups stay: the
        mappings stay, unpinned, and only external pins remain charged."""
        for dma in self.dmas:
            unlocked = self._unmap_unpin(dma, False)
            self._lock_acct(dma, len(dma.pfn_list) - unlocked)

    def detach_group(self, iommu_group: IommuGroup) -> None:
        """vfio_iommu_type1_detach_group()."""
        update_dirty_scope = False
        for g in self.emulated:
            if g.iommu_group is iommu_group:
                update_dirty_scope = not g.pinned_page_dirty_scope
                self.emulated.remove(g)
                if not self.emulated and not self.domains:
                    self._unmap_unpin_all()
                break
        else:
            iova_copy = list(self.iova_list)
            for vd in self.domains:
                vg = next((x for x in vd.groups if x.iommu_group is iommu_group), None)
                if vg is None:
                    continue
                core.iommu_detach_group(vd.domain, iommu_group)
                update_dirty_scope = not vg.pinned_page_dirty_scope
                vd.groups.remove(vg)
                if not vd.groups:
                    if len(self.domains) == 1:
                        if not self.emulated:
                            self._unmap_unpin_all()
                        else:
                            self._unmap_unpin_reaccount()
                    self.domains.remove(vd)
                    vd.domain.free()
                    self._aper_expand(iova_copy)
                    self._update_pgsize_bitmap()
                break
            refreshed = self._resv_refresh(iova_copy)
            if refreshed is not None:
                self.iova_list = refreshed
        if update_dirty_scope:
            self.num_non_pinned_groups -= 1
            if self.dirty_page_tracking:
                self._populate_full()

    def _aper_expand(self, iova_copy: list[tuple[int, int]]) -> None:
        """vfio_iommu_aper_expand(): the list ends move to the smallest remaining aperture."""
        if not iova_copy:
            return
        start, end = 0, U64
        for d in self.domains:
            start = max(start, d.domain.aperture[0])
            end = min(end, d.domain.aperture[1])
        iova_copy[0] = (start, iova_copy[0][1])
        iova_copy[-1] = (iova_copy[-1][0], end)

    def _resv_refresh(self, iova_copy: list[tuple[int, int]]) -> list[tuple[int, int]] | None:
        """vfio_iommu_resv_refresh(): rebuild [first start, last end] minus the remaining groups'
        reserved regions (None keeps the old list)."""
        if not iova_copy:
            return None
        resv = [r for d in self.domains for g in d.groups for r in g.iommu_group.resv_regions()]
        try:
            return self._resv_exclude([(iova_copy[0][0], iova_copy[-1][1])], resv)
        except UapiError:
            return None

    def release(self) -> None:
        """vfio_iommu_type1_release(): the container lost its last group."""
        self.emulated.clear()
        self._unmap_unpin_all()
        for vd in self.domains:
            for g in vd.groups:
                core.iommu_detach_group(vd.domain, g.iommu_group)
            vd.groups.clear()
            vd.domain.free()
        self.domains.clear()
        self.iova_list = []

    # ------------------------------------------------------------------ devices that pin (emulated IOMMU)
    def register_device(self, device: object) -> None:
        """vfio_iommu_type1_register_device(): devices with a dma_unmap op get unmap notifications."""
        if callable(getattr(device, "dma_unmap", None)):
            self.devices.insert(0, device)  # type: ignore[arg-type]

    def unregister_device(self, device: object) -> None:
        if device in self.devices:
            self.devices.remove(device)  # type: ignore[arg-type]

    def pin_pages(self, iommu_group: IommuGroup, iova: int, npage: int, prot: int) -> list[int]:
        """vfio_iommu_type1_pin_pages(): the frame of each page; EACCES on v1, EINVAL without a dma_unmap
        listener or outside any mapping, EPERM for a protection the mapping lacks.  All or nothing."""
        if npage <= 0:
            raise UapiError(errno.EINVAL, f"npage {npage}")
        if not self.v2:
            raise UapiError(errno.EACCES, "pinning needs a type1v2 container")
        if iova + npage * PAGE_SIZE - 1 > U64:
            raise UapiError(errno.EOVERFLOW, "range overflows")
        if self.vaddr_invalid_count:
            raise UapiError(errno.EBUSY, "vaddrs are invalidated")
        if not self.devices:
            raise UapiError(errno.EINVAL, "no device registered for unmap notifications")
        do_accounting = not self.domains
        out: list[int] = []
        done: list[tuple[VfioDma, int]] = []
        try:
            for i in range(npage):
                page = iova + i * PAGE_SIZE
                dma = self.find_dma(page, PAGE_SIZE)
                if dma is None:
                    raise UapiError(errno.EINVAL, f"{page:#x} is not mapped")
                if dma.prot & prot != prot:
                    raise UapiError(errno.EPERM, f"{page:#x} lacks the requested protection")
                vpfn = dma.pfn_list.get(page)
                if vpfn is not None:
                    vpfn[1] += 1
                else:
                    frame = int(self.process.pin_pages(dma.vaddr + page - dma.iova, PAGE_SIZE,
                                                       write=bool(dma.prot & IOMMU_WRITE))[0])
                    if do_accounting:
                        try:
                            self._lock_acct(dma, 1)
                        except UapiError:
                            self.process.unpin_pages([frame])
                            raise
                    dma.pfn_list[page] = [frame, 1]
                    vpfn = dma.pfn_list[page]
                done.append((dma, page))
                out.append(vpfn[0])
                if self.dirty_page_tracking and dma.bitmap is not None:
                    dma.bitmap[(page - dma.iova) >> _ffs(self.pgsize_bitmap)] = True
        except UapiError:
            for dma, page in done:
                self._unpin_external(dma, page, do_accounting)
            raise
        g = self._find_group(iommu_group)
        if g is not None and not g.pinned_page_dirty_scope:
            g.pinned_page_dirty_scope = True
            self.num_non_pinned_groups -= 1
        return out

    def _unpin_external(self, dma: VfioDma, page: int, do_accounting: bool) -> None:
        vpfn = dma.pfn_list.get(page)
        if vpfn is None:
            return
        vpfn[1] -= 1
        if not vpfn[1]:
            del dma.pfn_list[page]
            self.process.unpin_pages([vpfn[0]])
            if do_accounting:
                self._lock_acct(dma, -1)

    def unpin_pages(self, iova: int, npage: int) -> None:
        """vfio_iommu_type1_unpin_pages()."""
        do_accounting = not self.domains
        for i in range(npage):
            page = iova + i * PAGE_SIZE
            dma = self.find_dma(page, PAGE_SIZE)
            if dma is None:
                break
            self._unpin_external(dma, page, do_accounting)

    def dma_rw(self, iova: int, data: bytes | bytearray | memoryview | int, write: bool) -> bytes:
        """vfio_iommu_type1_dma_rw(): copy to/from the user memory behind mappings (``data`` is the bytes
        to write, or the length to read); EINVAL unmapped, EPERM without permission, EBUSY while vaddrs
        are invalid; writes mark pages dirty while tracking."""
        if self.vaddr_invalid_count:
            raise UapiError(errno.EBUSY, "vaddrs are invalidated")
        buf = bytes(data) if not isinstance(data, int) else b""
        count = len(buf) if not isinstance(data, int) else data
        out = bytearray()
        pos = 0
        while pos < count:
            dma = self.find_dma(iova + pos, 1)
            if dma is None:
                raise UapiError(errno.EINVAL, f"{iova + pos:#x} is not mapped")
            if (write and not dma.prot & IOMMU_WRITE) or not dma.prot & IOMMU_READ:
                raise UapiError(errno.EPERM, f"mapping at {dma.iova:#x} forbids this access")
            off = iova + pos - dma.iova
            n = min(count - pos, dma.size - off)
            if write:
                self.process.write(dma.vaddr + off, buf[pos:pos + n])
                if self.dirty_page_tracking and dma.bitmap is not None:
                    sh = _ffs(self.pgsize_bitmap)
                    dma.bitmap[off >> sh:((off + n - 1) >> sh) + 1] = True
            else:
                out += self.process.read(dma.vaddr + off, n)
            pos += n
        return bytes(out)

    # ------------------------------------------------------------------ the ioctls (iommu_data->ioctl)
    def check_extension(self, arg: int) -> int:
        return Type1Driver.check_extension(self, arg)

    def ioctl(self, cmd: int, ubuf: UserBuffer | None, arg: int) -> int:
        """vfio_iommu_type1_ioctl(): ENOTTY for what type1 does not know."""
        if cmd == iu.VFIO_CHECK_EXTENSION:
            return self.check_extension(arg)
        handlers: dict[int, Callable[[UserBuffer], int]] = {
            iu.VFIO_IOMMU_GET_INFO: self._ioctl_get_info, iu.VFIO_IOMMU_MAP_DMA: self._ioctl_map,
            iu.VFIO_IOMMU_UNMAP_DMA: self._ioctl_unmap, iu.VFIO_IOMMU_DIRTY_PAGES: self._ioctl_dirty}
        h = handlers.get(cmd)
        if h is None:
            raise UapiError(errno.ENOTTY, f"ioctl {cmd:#x} is not a type1 ioctl")
        if cmd == iu.VFIO_IOMMU_DIRTY_PAGES and not self.v2:
            raise UapiError(errno.EACCES, "dirty page tracking needs type1v2")
        if ubuf is None:
            raise UapiError(errno.EFAULT, "NULL argument")
        return h(ubuf)

    def _ioctl_get_info(self, ubuf: UserBuffer) -> int:
        """vfio_iommu_type1_get_info(): caps migration, DMA available, IOVA ranges (when any)."""
        st = iu.vfio_iommu_type1_info
        minsz = st.offsetofend("iova_pgsizes")
        info = st.unpack(ubuf.read(0, minsz) + bytes(st.size - minsz))
        if info["argsz"] < minsz:
            raise UapiError(errno.EINVAL, f"argsz {info['argsz']} < {minsz}")
        minsz = min(info["argsz"], st.size)
        info["flags"] = iu.VFIO_IOMMU_INFO_PGSIZES
        info["iova_pgsizes"] = self.pgsize_bitmap
        caps = VfioInfoCap()
        mig = vfio_iommu_type1_info_cap_migration
        caps.add(iu.VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION, 1, mig.pack(
            flags=0, pgsize_bitmap=self.pgsize, max_dirty_bitmap_size=DIRTY_BITMAP_SIZE_MAX)[8:])
        caps.add(iu.VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL, 1,
                 iu.vfio_iommu_type1_info_dma_avail.pack(avail=self.dma_avail)[8:])
        if self.iova_list:
            rng = iu.vfio_iova_range
            body = iu.vfio_iommu_type1_info_cap_iova_range.pack(nr_iovas=len(self.iova_list))[8:]
            body += b"".join(rng.pack(start=s, end=e) for s, e in self.iova_list)
            caps.add(iu.VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE, 1, body)
        info["flags"] |= iu.VFIO_IOMMU_INFO_CAPS
        if info["argsz"] < st.size + caps.size:
            info["argsz"] = st.size + caps.size
        else:
            ubuf.write(st.size, caps.shifted(st.size))
            info["cap_offset"] = st.size
        ubuf.write(0, st.pack(info)[:minsz])
        return 0

    @staticmethod
    def _copy_args(ubuf: UserBuffer, st: CStruct, mask: int) -> dict[str, int]:
        """copy_from_user() of the struct up to ``size`` (EFAULT), then EINVAL for argsz < minsz or
        flags outside ``mask``."""
        minsz = st.offsetofend("size")
        args = st.unpack(ubuf.read(0, minsz))
        if args["argsz"] < minsz or args["flags"] & ~mask:
            raise UapiError(errno.EINVAL, f"argsz {args['argsz']} or flags {args['flags']:#x}")
        return args

    def _ioctl_map(self, ubuf: UserBuffer) -> int:
        """vfio_iommu_type1_map_dma()."""
        m = self._copy_args(ubuf, iu.vfio_iommu_type1_dma_map,
                            iu.VFIO_DMA_MAP_FLAG_READ | iu.VFIO_DMA_MAP_FLAG_WRITE | iu.VFIO_DMA_MAP_FLAG_VADDR)
        self.map_dma(m["vaddr"], m["iova"], m["size"], m["flags"])
        return 0

    def _ioctl_unmap(self, ubuf: UserBuffer) -> int:
        """vfio_iommu_type1_unmap_dma(): ``size`` is written back only on success."""
        st = iu.vfio_iommu_type1_dma_unmap
        minsz = st.offsetofend("size")
        u = self._copy_args(ubuf, st, iu.VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP | iu.VFIO_DMA_UNMAP_FLAG_VADDR
                            | iu.VFIO_DMA_UNMAP_FLAG_ALL)
        bitmap: dict[str, int] | None = None
        if u["flags"] & iu.VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP:
            if u["flags"] & (iu.VFIO_DMA_UNMAP_FLAG_ALL | iu.VFIO_DMA_UNMAP_FLAG_VADDR):
                raise UapiError(errno.EINVAL, "GET_DIRTY_BITMAP with ALL or VADDR")
            if u["argsz"] < minsz + vfio_bitmap.size:
                raise UapiError(errno.EINVAL, "argsz leaves no room for struct vfio_bitmap")
            bitmap = vfio_bitmap.unpack(ubuf.read(minsz, vfio_bitmap.size))
            _check_bitmap(u["size"], bitmap["pgsize"], bitmap["size"], bitmap["data"])
        u["size"] = self.unmap_dma(u["iova"], u["size"], u["flags"], bitmap)
        ubuf.write(0, st.pack(u)[:minsz])
        return 0

    def _ioctl_dirty(self, ubuf: UserBuffer) -> int:
        """vfio_iommu_type1_dirty_pages(): one of START, STOP, GET_BITMAP."""
        st = vfio_iommu_type1_dirty_bitmap
        hdr = st.unpack(ubuf.read(0, st.size))
        mask = VFIO_IOMMU_DIRTY_PAGES_FLAG_START | VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP | \
            VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP
        flags = hdr["flags"]
        if hdr["argsz"] < st.size or flags & ~mask:
            raise UapiError(errno.EINVAL, f"argsz {hdr['argsz']} or flags {flags:#x}")
        if flags & (flags - 1) or not flags:
            raise UapiError(errno.EINVAL, "exactly one of START, STOP, GET_BITMAP")
        if flags == VFIO_IOMMU_DIRTY_PAGES_FLAG_START:
            self.dirty_start()
            return 0
        if flags == VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP:
            self.dirty_stop()
            return 0
        rg = vfio_iommu_type1_dirty_bitmap_get
        if hdr["argsz"] - st.size < rg.size:
            raise UapiError(errno.EINVAL, "argsz leaves no room for the range")
        r = rg.unpack(ubuf.read(st.size, rg.size))
        iova, size = r["iova"], r["size"]
        if not size:
            raise UapiError(errno.EINVAL, "size 0")
        if iova + size - 1 > U64:
            raise UapiError(errno.EOVERFLOW, f"[{iova:#x}, +{size:#x}) overflows")
        _check_bitmap(size, r["pgsize"], r["bitmap_size"], r["data"])
        pgsize = self.pgsize
        if r["pgsize"] != pgsize:
            raise UapiError(errno.EINVAL, f"bitmap page size {r['pgsize']:#x}, only {pgsize:#x} is supported")
        if iova & (pgsize - 1) or size & (pgsize - 1):
            raise UapiError(errno.EINVAL, "range not aligned to the page size")
        if not self.dirty_page_tracking:
            raise UapiError(errno.EINVAL, "dirty page tracking is not started")
        self.dirty_bitmap(iova, size, pgsize, r["data"])
        return 0


def _check_bitmap(size: int, pgsize: int, bitmap_size: int, data: int) -> None:
    """access_ok(data, bitmap size) then verify_bitmap_size(): EINVAL."""
    if not access_ok(data, bitmap_size):
        raise UapiError(errno.EINVAL, f"bitmap [{data:#x}, +{bitmap_size:#x}) is not user memory")
    npages = size >> _ffs(pgsize)
    if not npages or not bitmap_size or bitmap_size > DIRTY_BITMAP_SIZE_MAX or \
            bitmap_size < dirty_bitmap_bytes(npages):
        raise UapiError(errno.EINVAL, f"bitmap of {bitmap_size} bytes for {npages} pages")


class Type1Driver:
    """vfio_iommu_driver_ops_type1: what the container asks before and at SET_IOMMU."""

    name: Final = "vfio-iommu-type1"

    def __init__(self, *, allow_unsafe_interrupts: bool = False, dma_entry_limit: int = DMA_ENTRY_LIMIT) -> None:
        self.allow_unsafe_interrupts = allow_unsafe_interrupts
        self.dma_entry_limit = dma_entry_limit

    @staticmethod
    def check_extension(iommu: VfioIommuType1 | None, arg: int) -> int:
        """vfio_iommu_type1_check_extension() (``iommu`` None before SET_IOMMU)."""
        if arg in (iu.VFIO_TYPE1_IOMMU, iu.VFIO_TYPE1v2_IOMMU, iu.VFIO_UNMAP_ALL):
            return 1
        if arg == iu.VFIO_UPDATE_VADDR:
            return int(iommu is not None and not iommu.emulated)
        if arg == iu.VFIO_DMA_CC_IOMMU:
            return int(iommu is not None and all(d.enforce_cache_coherency for d in iommu.domains))
        return 0

    def open(self, arg: int, process: UserProcess) -> VfioIommuType1:
        """vfio_iommu_type1_open(): type1 (v1) or type1v2 (also the retired nesting type)."""
        if arg not in (iu.VFIO_TYPE1_IOMMU, iu.VFIO_TYPE1v2_IOMMU, iu.VFIO_RESERVED_TYPE1_NESTING_IOMMU):
            raise UapiError(errno.EINVAL, f"IOMMU type {arg}")
        return VfioIommuType1(arg != iu.VFIO_TYPE1_IOMMU, process,
                              allow_unsafe_interrupts=self.allow_unsafe_interrupts,
                              dma_entry_limit=self.dma_entry_limit)


__all__ = [
    "DIRTY_BITMAP_SIZE_MAX",
    "DMA_ENTRY_LIMIT",
    "VFIO_EMULATED_IOMMU",
    "VFIO_IOMMU",
    "VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP",
    "VFIO_IOMMU_DIRTY_PAGES_FLAG_START",
    "VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP",
    "VFIO_NO_IOMMU",
    "DmaUnmapListener",
    "Type1Driver",
    "VfioDma",
    "VfioDomain",
    "VfioIommuGroup",
    "VfioIommuType1",
    "access_ok",
    "dirty_bitmap_bytes",
    "vfio_bitmap",
    "vfio_iommu_type1_dirty_bitmap",
    "vfio_iommu_type1_dirty_bitmap_get",
    "vfio_iommu_type1_info_cap_migration",
]
