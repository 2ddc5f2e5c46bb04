"""IOMMU domains (``struct iommu_domain``): the static BLOCKED and IDENTITY domains, and PAGING domains
that own a page table; NESTED and SVA domains build on these (``nested.py``, ``sva.py``).

A paging domain is complete on its own: it can be mapped before any device is attached, and its map and
unmap are the kernel's ``iommu_map()`` / ``iommu_unmap()``: unmap gathers the IOVA range the page table
reports and hands it to ``iotlb_sync``, which invalidates every IOTLB and device TLB the domain's cache
tags name.  Changing the page table through ``domain.pt`` directly skips that, exactly like a driver bug
that forgets the invalidation.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from vfiolab.errors import UapiError
from vfiolab.faultinject import fail_point
from vfiolab.iommu.cachetag import CacheTags
from vfiolab.iommu.pagetable.arm_lpae import ArmLpae, ArmPageTable
from vfiolab.iommu.pagetable.common import Format
from vfiolab.iommu.pagetable.engine import PageTable
from vfiolab.iommu.walk import ALWAYS_AD, Stage
from vfiolab.memory.phys import PhysMemory

if TYPE_CHECKING:
    from vfiolab.iommu.driver import IommuDriver
    from vfiolab.iommu.pri import IopfGroup

# include/linux/iommu.h domain types
__IOMMU_DOMAIN_PAGING: Final = 1 << 0
__IOMMU_DOMAIN_DMA_API: Final = 1 << 1
__IOMMU_DOMAIN_PT: Final = 1 << 2
__IOMMU_DOMAIN_DMA_FQ: Final = 1 << 3
__IOMMU_DOMAIN_SVA: Final = 1 << 4
__IOMMU_DOMAIN_PLATFORM: Final = 1 << 5
__IOMMU_DOMAIN_NESTED: Final = 1 << 6
IOMMU_DOMAIN_BLOCKED: Final = 0
IOMMU_DOMAIN_IDENTITY: Final = __IOMMU_DOMAIN_PT
IOMMU_DOMAIN_UNMANAGED: Final = __IOMMU_DOMAIN_PAGING
IOMMU_DOMAIN_DMA: Final = __IOMMU_DOMAIN_PAGING | __IOMMU_DOMAIN_DMA_API
IOMMU_DOMAIN_SVA: Final = __IOMMU_DOMAIN_SVA
IOMMU_DOMAIN_NESTED: Final = __IOMMU_DOMAIN_NESTED
PAGING_FLAG: Final = __IOMMU_DOMAIN_PAGING

# include/uapi/linux/iommufd.h enum iommufd_hwpt_alloc_flags
IOMMU_HWPT_ALLOC_NEST_PARENT: Final = 1 << 0
IOMMU_HWPT_ALLOC_DIRTY_TRACKING: Final = 1 << 1
IOMMU_HWPT_FAULT_ID_VALID: Final = 1 << 2
IOMMU_HWPT_ALLOC_PASID: Final = 1 << 3

# What the hardware does for a request attached to a domain.
MODE_BLOCK: Final = 0
MODE_IDENTITY: Final = 1
MODE_TRANSLATE: Final = 2

_TYPE_NAMES: Final = {IOMMU_DOMAIN_BLOCKED: "blocked", IOMMU_DOMAIN_IDENTITY: "identity",
                      IOMMU_DOMAIN_UNMANAGED: "unmanaged", IOMMU_DOMAIN_DMA: "dma",
                      IOMMU_DOMAIN_SVA: "sva", IOMMU_DOMAIN_NESTED: "nested"}

IopfHandler = Callable[["IopfGroup"], None]
"""domain->iopf_handler: take ownership of a complete page-request group; raising means the group
could not be queued (io-pgfault.c answers it with IOMMU_PAGE_RESP_FAILURE)."""


class IommuDomain:
    """struct iommu_domain: a type, its driver (``owner``; None for the static domains) and the caches
    that may hold its translations."""

    hw_mode: int = MODE_BLOCK

    def __init__(self, type_: int, driver: IommuDriver | None, name: str = "") -> None:
        self.type = type_
        self.owner = driver
        self.name = name or _TYPE_NAMES.get(type_, f"type{type_:#x}")
        self.tags = CacheTags()
        self.iopf_handler: IopfHandler | None = None
        self.fault_handler: Callable[..., Any] | None = None
        """report_iommu_fault() listener (iommu_set_fault_handler)."""
        self.attached = 0
        """Number of (device, PASID) attachments programmed in hardware."""

    @property
    def is_paging(self) -> bool:
        return bool(self.type & PAGING_FLAG)

    def stages(self) -> tuple[Stage, Stage | None]:
        """The stage(s) the hardware walks for this domain (MODE_TRANSLATE domains only)."""
        raise UapiError(errno.EINVAL, f"{self.name}: a {_TYPE_NAMES.get(self.type)} domain has no page table")

    @property
    def dirty_tracking(self) -> bool:
        """Whether hardware currently records write-dirty state in this domain's (stage-2) table."""
        return False

    def iotlb_sync(self, gather: Gather) -> None:
        """ops->iotlb_sync(): invalidate what ``gather`` collected."""
        if gather.start <= gather.end:
            self.tags.flush_range(gather.start, gather.end)

    def flush_iotlb_all(self) -> None:
        """ops->flush_iotlb_all()."""
        self.tags.flush_all()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


class BlockedDomain(IommuDomain):
    """An always-available, always-attachable domain that blocks all DMA (``ops->blocked_domain``)."""

    hw_mode = MODE_BLOCK

    def __init__(self, driver: IommuDriver | None = None) -> None:
        super().__init__(IOMMU_DOMAIN_BLOCKED, driver, "blocked")


class IdentityDomain(IommuDomain):
    """An always-available, always-attachable identity (pass-through) domain (``ops->identity_domain``)."""

    hw_mode = MODE_IDENTITY

    def __init__(self, driver: IommuDriver | None = None) -> None:
        super().__init__(IOMMU_DOMAIN_IDENTITY, driver, "identity")


@dataclass
class Gather:
    """struct iommu_iotlb_gather: the IOVA range [start, end] an unmap batch must invalidate."""

    start: int = 1 << 64
    end: int = 0
    tables_freed: bool = False

    def add_range(self, iova: int, size: int) -> None:
        """iommu_iotlb_gather_add_range()."""
        self.start = min(self.start, iova)
        self.end = max(self.end, iova + size - 1)


class PagingDomain(IommuDomain):
    """A domain with a page table (IOMMU_DOMAIN_UNMANAGED or DMA): map/unmap, aperture, page sizes and
    (when allocated with dirty tracking) dirty-bit harvesting."""

    hw_mode = MODE_TRANSLATE

    def __init__(self, driver: IommuDriver | None, fmt: Format, mem: PhysMemory, *,
                 type_: int = IOMMU_DOMAIN_UNMANAGED, flags: int = 0, pgsize_mask: int | None = None,
                 aperture: tuple[int, int] | None = None, name: str = "") -> None:
        fail_point("domain_alloc_paging: kzalloc(domain)")  # the driver's domain struct (ENOMEM)
        super().__init__(type_, driver, name)
        self.mem = mem
        self.flags = flags
        # generic_pt formats, or io-pgtable-arm for the Arm LPAE format
        self.pt = ArmPageTable(fmt, mem) if isinstance(fmt, ArmLpae) else PageTable(fmt, mem)
        if pgsize_mask is not None:
            self.pt.pgsize_bitmap &= pgsize_mask
            if not self.pt.pgsize_bitmap:
                raise UapiError(errno.EINVAL, f"{fmt.name}: no page size left in mask {pgsize_mask:#x}")
        self.aperture = aperture if aperture is not None else self.pt.aperture
        """domain->geometry (aperture_start, aperture_end); force_aperture is always true here."""
        self.dirty_ops = bool(flags & IOMMU_HWPT_ALLOC_DIRTY_TRACKING)
        """domain->dirty_ops: allocated with dirty tracking (enforced at attach)."""
        self.nest_parent = bool(flags & IOMMU_HWPT_ALLOC_NEST_PARENT)
        self.force_snooping = False
        self._dirty_on = False
        self.stage = Stage(fmt, self._root, ad=fmt.name in ALWAYS_AD)
        self.children: list[IommuDomain] = []
        """Nested domains using this domain as their parent (dmar_domain->s1_domains)."""
        self.home: object | None = None
        """The one unit this domain may attach to, for drivers that bind a domain to the instance it was
        allocated on (SMMUv3: smmu_domain->smmu); None: any unit of the driver."""

    def _root(self) -> tuple[int, int]:
        return self.pt.top_pa, self.pt.top_level

    @property
    def fmt(self) -> Format:
        return self.pt.fmt

    @property
    def pgsize_bitmap(self) -> int:
        return self.pt.pgsize_bitmap

    def stages(self) -> tuple[Stage, Stage | None]:
        return self.stage, None

    @property
    def dirty_tracking(self) -> bool:
        return self._dirty_on

    # ------------------------------------------------------------------ map / unmap
    def map(self, iova: int, pa: int, length: int, prot: int) -> None:
        """iommu_map(): raises UapiError as the page table does; nothing stays mapped on failure."""
        self.pt.map(iova, pa, length, prot)

    def unmap_fast(self, iova: int, length: int, gather: Gather) -> int:
        """iommu_unmap_fast(): unmap and add the range to ``gather`` without invalidating."""
        start = len(self.pt.flushes)
        n = self.pt.unmap(iova, length)
        for f in self.pt.flushes[start:]:
            gather.add_range(f.iova, f.length)
            gather.tables_freed |= f.tables_freed
        del self.pt.flushes[start:]
        return n

    def unmap(self, iova: int, length: int) -> int:
        """iommu_unmap(): bytes unmapped, then the IOTLB/ATC invalidation of what was unmapped."""
        gather = Gather()
        n = self.unmap_fast(iova, length, gather)
        self.iotlb_sync(gather)
        return n

    def iova_to_phys(self, iova: int) -> int:
        """iommu_iova_to_phys() (0 when unmapped)."""
        return self.pt.iova_to_phys(iova)

    # ------------------------------------------------------------------ dirty tracking
    def set_dirty_tracking(self, enable: bool) -> None:
        """dirty_ops->set_dirty_tracking(): EINVAL when allocated without dirty tracking (selftest.c,
        intel/iommu.c); turning it on or off flushes the domain's caches (VT-d PASID-entry update)."""
        if enable and not self.dirty_ops:
            raise UapiError(errno.EINVAL, f"{self.name}: allocated without dirty tracking")
        if enable == self._dirty_on:
            return
        self._dirty_on = enable
        self.stage.ad = enable or self.fmt.name in ALWAYS_AD
        self.flush_iotlb_all()

    def read_and_clear_dirty(self, iova: int, length: int, *, clear: bool = True,
                             page_size: int | None = None) -> npt.NDArray[np.bool_]:
        """iommu_read_and_clear_dirty(): one bool per ``page_size`` written since the last clear; with
        ``clear`` the bits are cleared and the gathered range invalidated (io_pagetable.c)."""
        if not self.dirty_ops:
            raise UapiError(errno.EOPNOTSUPP, f"{self.name}: no dirty tracking ops")
        start = len(self.pt.flushes)
        bits = self.pt.read_and_clear_dirty(iova, length, clear=clear, page_size=page_size)
        gather = Gather()
        for f in self.pt.flushes[start:]:
            gather.add_range(f.iova, f.length)
        del self.pt.flushes[start:]
        self.iotlb_sync(gather)
        return bits

    def enforce_cache_coherency(self) -> bool | None:
        """domain->ops->enforce_cache_coherency(): True when the domain now forces snooping, False when
        it cannot, None when the driver has no such op."""
        if self.owner is None:
            return None
        return self.owner.enforce_cache_coherency(self)

    def free(self) -> None:
        """iommu_domain_free(): EBUSY while attached or while nested children use it."""
        if self.attached or self.children:
            raise UapiError(errno.EBUSY, f"{self.name}: still attached or a nest parent in use")
        self.pt.destroy()
