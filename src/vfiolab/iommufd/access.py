"""iommufd_access: an in-kernel user of an IOAS that reads, writes or pins the memory behind IOVAs without
an IOMMU (emulated/mdev devices, the selftest's access objects) (``drivers/iommu/iommufd/device.c``).

An access attaches to one IOAS; pinning records an exact (first, last) page-index interval on the pages
(``iopt_area_add_access``) and marks the areas it covers, so unmapping them first asks the access's
``unmap`` callback to give the pins back (``iommufd_access_notify_unmap``).
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from vfiolab.errors import UapiError
from vfiolab.iommufd.io_pagetable import ContigIter, IoptArea
from vfiolab.iommufd.ioas import IOMMU_READ, IOMMU_WRITE, Ioas, get_ioas
from vfiolab.iommufd.objects import IommufdObject, ObjType
from vfiolab.iommufd.pages import IOMMUFD_ACCESS_RW_WRITE
from vfiolab.iommufd.uapi import PAGE_SIZE, ULONG_MAX

if TYPE_CHECKING:
    from vfiolab.iommufd.main import Iommufd


@dataclass
class AccessOps:
    """struct iommufd_access_ops."""

    needs_pin_pages: bool = False
    unmap: Callable[[int, int], None] | None = None
    """unmap(iova, length): drop every pin intersecting the range before returning."""


class IommufdAccess(IommufdObject):
    """struct iommufd_access."""

    type = ObjType.ACCESS

    def __init__(self, ictx: Iommufd, ops: AccessOps | None, *, internal: bool = False) -> None:
        super().__init__(ictx)
        self.ops = ops
        self.internal = internal
        self.ioas: Ioas | None = None
        self.ioas_unpin: Ioas | None = None
        self.iova_alignment = PAGE_SIZE if internal or (ops is not None and ops.needs_pin_pages) else 1
        self.iopt_access_list_id = 0

    def destroy(self) -> None:
        # iommufd_access_destroy_object()
        if self.ioas is not None:
            self.change_ioas(None)
        if not self.internal:
            self.ictx.ctx_put()

    # ------------------------------------------------------------------ IOAS binding
    def change_ioas(self, new: Ioas | None) -> None:
        """iommufd_access_change_ioas()."""
        cur = self.ioas
        if cur is not self.ioas_unpin:
            raise UapiError(errno.EBUSY, "racing with a detach")
        if cur is new:
            return
        old_id = self.iopt_access_list_id
        self.ioas = None
        if new is not None:
            try:
                self.iopt_access_list_id = new.iopt.add_access(self)
            except UapiError:
                self.ioas = cur
                raise
            new.users += 1
        if cur is not None:
            if not self.internal and self.ops is not None and self.ops.unmap is not None:
                self.ops.unmap(0, ULONG_MAX)
            cur.iopt.remove_access(old_id)
            cur.users -= 1
        self.ioas = new
        self.ioas_unpin = new

    def attach(self, ioas_id: int) -> None:
        """iommufd_access_attach()."""
        if self.ioas is not None:
            raise UapiError(errno.EINVAL, "access already attached")
        self.change_ioas(get_ioas(self.ictx, ioas_id))

    def replace(self, ioas_id: int) -> None:
        """iommufd_access_replace(): ENOENT when not attached."""
        if self.ioas is None:
            raise UapiError(errno.ENOENT, "access not attached")
        self.change_ioas(get_ioas(self.ictx, ioas_id))

    def detach(self) -> None:
        """iommufd_access_detach()."""
        if self.ioas is not None:
            self.change_ioas(None)

    # ------------------------------------------------------------------ pinning
    @staticmethod
    def _contig_aligned(it: ContigIter, area: IoptArea) -> bool:
        # iopt_area_contig_is_aligned()
        if area.start_byte(it.cur_iova) % PAGE_SIZE:
            return False
        return not (not it.done() and area.start_byte(area.last) % PAGE_SIZE != PAGE_SIZE - 1)

    @staticmethod
    def _check_prot(area: IoptArea, flags: int) -> bool:
        if flags & IOMMUFD_ACCESS_RW_WRITE:
            return bool(area.iommu_prot & IOMMU_WRITE)
        return bool(area.iommu_prot & IOMMU_READ)

    def _remove_range(self, ioas: Ioas, iova: int, last_iova: int) -> None:
        it = ContigIter(ioas.iopt, iova, last_iova)
        for area in it:
            last = min(last_iova, area.last)
            self._area_remove(area, area.iova_to_index(it.cur_iova), area.iova_to_index(last))

    def _area_remove(self, area: IoptArea, first: int, last: int) -> None:
        assert area.pages is not None
        area.pages.remove_access(first, last)
        area.num_accesses -= 1
        if self.internal:
            area.num_locks -= 1

    def pin_pages(self, iova: int, length: int, flags: int) -> npt.NDArray[np.int64]:
        """iommufd_access_pin_pages(): the frames of every page under [iova, iova+length)."""
        no_unmap = self.ops is None or self.ops.unmap is None
        if self.iova_alignment != PAGE_SIZE or (not self.internal and no_unmap):
            raise UapiError(errno.EINVAL, "this access cannot pin pages")
        if not length:
            raise UapiError(errno.EINVAL, "zero length")
        last_iova = iova + length - 1
        if last_iova > ULONG_MAX:
            raise UapiError(errno.EOVERFLOW, "iova + length overflows")
        if self.ioas is None:
            raise UapiError(errno.ENOENT, "access not attached")
        it = ContigIter(self.ioas.iopt, iova, last_iova)
        out: list[npt.NDArray[np.int64]] = []
        try:
            for area in it:
                last = min(last_iova, area.last)
                first_index, last_index = area.iova_to_index(it.cur_iova), area.iova_to_index(last)
                if area.prevent_access or not self._contig_aligned(it, area):
                    raise UapiError(errno.EINVAL,
                                    f"area [{area.iova:#x}, {area.last:#x}] not page aligned or "
                                    "being unmapped")
                if not self._check_prot(area, flags):
                    raise UapiError(errno.EPERM, "map lacks the permission")
                assert area.pages is not None
                out.append(area.pages.add_access(first_index, last_index,
                                                 bool(flags & IOMMUFD_ACCESS_RW_WRITE)))
                area.num_accesses += 1
                if self.internal:
                    area.num_locks += 1
            if not it.done():
                raise UapiError(errno.ENOENT, f"[{iova:#x}, {last_iova:#x}] not fully mapped")
        except UapiError:
            if iova < it.cur_iova:
                self._remove_range(self.ioas, iova, it.cur_iova - 1)
            raise
        return np.concatenate(out) if out else np.empty(0, dtype=np.int64)

    def unpin_pages(self, iova: int, length: int) -> None:
        """iommufd_access_unpin_pages(): must match an earlier pin exactly."""
        if not length or iova + length - 1 > ULONG_MAX or self.ioas_unpin is None:
            return  # WARN_ON in the kernel
        self._remove_range(self.ioas_unpin, iova, iova + length - 1)

    # ------------------------------------------------------------------ CPU copies
    def rw(self, iova: int, length: int, flags: int, data: bytes | bytearray | None = None) -> bytes:
        """iommufd_access_rw(): write ``data`` (IOMMUFD_ACCESS_RW_WRITE) or read ``length`` bytes."""
        if not length:
            raise UapiError(errno.EINVAL, "zero length")
        last_iova = iova + length - 1
        if last_iova > ULONG_MAX:
            raise UapiError(errno.EOVERFLOW, "iova + length overflows")
        if self.ioas is None:
            raise UapiError(errno.ENOENT, "access not attached")
        buf = bytearray(data) if data is not None else None
        out = bytearray()
        pos = 0
        it = ContigIter(self.ioas.iopt, iova, last_iova)
        for area in it:
            last = min(last_iova, area.last)
            n = last - it.cur_iova + 1
            if area.prevent_access:
                raise UapiError(errno.EINVAL, "area is being unmapped")
            if not self._check_prot(area, flags):
                raise UapiError(errno.EPERM, "map lacks the permission")
            assert area.pages is not None
            chunk = None if buf is None else buf[pos:pos + n]
            out += area.pages.rw(self.ictx.current, area.start_byte(it.cur_iova), n, flags, chunk)
            pos += n
        if not it.done():
            raise UapiError(errno.ENOENT, f"[{iova:#x}, {last_iova:#x}] not fully mapped")
        return bytes(out)


def access_create(ictx: Iommufd, ops: AccessOps) -> IommufdAccess:
    """iommufd_access_create(): the calling driver holds a users reference until destroy."""
    access = ictx.objects.alloc(IommufdAccess(ictx, ops))
    access.users += 1
    ictx.ctx_get()
    ictx.objects.finalize(access)
    return access


def access_destroy(access: IommufdAccess) -> None:
    """iommufd_access_destroy()."""
    access.ictx.objects.destroy_user(access)
