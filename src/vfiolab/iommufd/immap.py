"""mmap() of /dev/iommu (``drivers/iommu/iommufd/main.c`` iommufd_fops_mmap, ``driver.c``
_iommufd_alloc_mmap/_iommufd_destroy_mmap).

A driver object (a vIOMMU) hands userspace an offset for a region of its pages; the offsets come from
the context's maple tree ``mt_mmap`` (lowest free range at or above PAGE_SIZE).  Only the exact
(offset, length) can be mapped; each mapping holds a users reference on the owner (EBUSY on destroy)
and a reference on the file (the context outlives close() until munmap).
"""

from __future__ import annotations

import bisect
import errno
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vfiolab.errors import UapiError
from vfiolab.iommufd.uapi import PAGE_SIZE, ULONG_MAX
from vfiolab.memory import MAP_SHARED, PROT_EXEC, MemFile

if TYPE_CHECKING:
    from vfiolab.iommufd.main import Iommufd
    from vfiolab.iommufd.objects import IommufdObject
    from vfiolab.iommufd.task import Task

@dataclass
class Immap:
    """struct iommufd_mmap: the owner, the pages (as a file) and the offset they were given."""

    owner: IommufdObject
    pages: MemFile
    start: int
    length: int


@dataclass
class _Mapping:
    task: Task
    va: int
    length: int
    immap: Immap


class MmapTree:
    """ictx->mt_mmap plus the VMAs that map its regions (vm_ops open/close)."""

    def __init__(self, ictx: Iommufd) -> None:
        self.ictx = ictx
        self._ranges: list[Immap] = []
        """Sorted by start; ranges never overlap."""
        self._vmas: list[_Mapping] = []

    # ------------------------------------------------------------------ driver side (driver.c)
    def alloc(self, owner: IommufdObject, pages: MemFile, length: int) -> int:
        """_iommufd_alloc_mmap(): EINVAL for a zero or unaligned length; the lowest free offset from
        PAGE_SIZE (mtree_alloc_range), EBUSY when the offset space is full."""
        if not length or length % PAGE_SIZE:
            raise UapiError(errno.EINVAL, f"mmap region length {length:#x}")
        start = PAGE_SIZE  # the first page is skipped so a returned 0 means "nothing"
        for r in self._ranges:
            if r.start - start >= length:
                break
            start = max(start, r.start + r.length)
        if start + length - 1 > ULONG_MAX:
            raise UapiError(errno.EBUSY, "no free mmap offset range")
        immap = Immap(owner, pages, start, length)
        bisect.insort(self._ranges, immap, key=lambda r: r.start)
        return start

    def destroy(self, owner: IommufdObject, offset: int) -> None:
        """_iommufd_destroy_mmap(): mtree_erase() of the region at ``offset``."""
        for i, r in enumerate(self._ranges):
            if r.start == offset and r.owner is owner:
                del self._ranges[i]
                return

    def _load(self, offset: int) -> Immap | None:
        # mtree_load(): the region containing ``offset``
        for r in self._ranges:
            if r.start <= offset < r.start + r.length:
                return r
        return None

    # ------------------------------------------------------------------ the syscalls
    def mmap(self, length: int, offset: int, prot: int, flags: int) -> int:
        """mmap(2) of the iommufd in the calling process: the generic checks (zero length, unaligned
        offset: EINVAL), then iommufd_fops_mmap(): not shared EINVAL, PROT_EXEC EPERM, no region
        starting exactly at ``offset`` with exactly ``length`` (or an owner being destroyed) ENXIO."""
        if length <= 0 or offset % PAGE_SIZE:
            raise UapiError(errno.EINVAL, "mmap: zero length or unaligned offset")
        length = -(-length // PAGE_SIZE) * PAGE_SIZE  # ksys_mmap_pgoff() page-aligns the length
        if not flags & MAP_SHARED:  # MAP_SHARED or MAP_SHARED_VALIDATE
            raise UapiError(errno.EINVAL, "iommufd mmap must be MAP_SHARED")
        if prot & PROT_EXEC:
            raise UapiError(errno.EPERM, "iommufd mmap cannot be executable")
        immap = self._load(offset)
        if immap is None or immap.owner.users == 0:
            raise UapiError(errno.ENXIO, f"no mmap region at offset {offset:#x}")
        if offset != immap.start or length != immap.length:
            raise UapiError(errno.ENXIO, "only a region's exact offset and length can be mapped")
        task = self.ictx.current
        va = task.process.mmap(length, prot, MAP_SHARED, file=immap.pages)
        immap.owner.users += 1  # iommufd_fops_mmap(): refcount_inc_not_zero(&owner->users)
        self.ictx.ctx_get()  # the VMA holds the file
        self._vmas.append(_Mapping(task, va, length, immap))
        return va

    def munmap(self, va: int, length: int) -> None:
        """munmap(2) of a whole iommufd mapping: vma close drops the owner and file references.
        Splitting such a mapping is not modelled (EINVAL)."""
        task = self.ictx.current
        for i, m in enumerate(self._vmas):
            if m.task is task and m.va == va:
                if -(-length // PAGE_SIZE) * PAGE_SIZE != m.length:
                    raise UapiError(errno.EINVAL, "partial munmap of an iommufd mapping is not modelled")
                task.process.munmap(va, m.length)
                del self._vmas[i]
                m.immap.owner.users -= 1  # iommufd_fops_vma_close()
                self.ictx.ctx_put()
                return
        raise UapiError(errno.EINVAL, f"no iommufd mapping at {va:#x}")


__all__ = ["Immap", "MmapTree"]
