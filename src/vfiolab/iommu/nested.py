"""NESTED domains (IOMMU_DOMAIN_NESTED): a user- (guest-) owned stage-1 table walked over a stage-2
nest-parent paging domain (``drivers/iommu/intel/nested.c``; VT-d §3.8 nested translation).

The stage-1 table lives where the guest wrote it: its root and every table pointer in it are guest
physical addresses (IPAs), so each stage-1 table access is translated through stage 2 by the walker, and
so is the stage-1 output.  The domain's IOTLB entries cache the combined IOVA -> PA translation; the
guest invalidates them with ``cache_invalidate_user()`` (IOMMU_HWPT_INVALIDATE), and a change of the
parent invalidates every child whole (NESTING cache tags).
"""

from __future__ import annotations

import errno
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from vfiolab.errors import UapiError
from vfiolab.faultinject import fail_point
from vfiolab.iommu.domain import IOMMU_DOMAIN_NESTED, MODE_TRANSLATE, IommuDomain, PagingDomain
from vfiolab.iommu.pagetable.common import Format
from vfiolab.iommu.walk import ALWAYS_AD, Stage

if TYPE_CHECKING:
    from vfiolab.iommu.driver import IommuDriver

# include/uapi/linux/iommufd.h
IOMMU_VTD_INV_FLAGS_LEAF: Final = 1 << 0
VTD_PAGE_SIZE: Final = 4096
U64_MAX: Final = (1 << 64) - 1


@dataclass(frozen=True)
class VtdS1Invalidate:
    """struct iommu_hwpt_vtd_s1_invalidate: [addr, addr + npages * 4 KiB) (npages U64_MAX: all)."""

    addr: int
    npages: int
    flags: int = 0
    reserved: int = 0


class NestedDomain(IommuDomain):
    """A stage-1 translation (``s1``; None: stage 1 passes IOVA through as the IPA) over ``parent``."""

    hw_mode = MODE_TRANSLATE

    def __init__(self, driver: IommuDriver | None, parent: PagingDomain, s1_fmt: Format | None, s1_root: int,
                 *, flags: int = 0, data: dict[str, Any] | None = None, name: str = "") -> None:
        fail_point("domain_alloc_nested: kzalloc(domain)")  # the driver's nested domain struct (ENOMEM)
        super().__init__(IOMMU_DOMAIN_NESTED, driver, name or "nested")
        self.parent = parent
        self.flags = flags
        self.data = dict(data or {})
        """The driver-specific user data the domain was allocated with."""
        self.s1_fmt = s1_fmt
        self.s1_root = s1_root
        self.s1 = Stage(s1_fmt, self._root, ad=s1_fmt.name in ALWAYS_AD) if s1_fmt is not None else None
        parent.children.append(self)

    def _root(self) -> tuple[int, int]:
        assert self.s1_fmt is not None
        return self.s1_root, self.s1_fmt.top_level

    def stages(self) -> tuple[Stage, Stage | None]:
        if self.s1 is None:
            return self.parent.stage, None
        return self.s1, self.parent.stage

    @property
    def dirty_tracking(self) -> bool:
        return self.parent.dirty_tracking

    def cache_invalidate_vtd(self, entries: Sequence[VtdS1Invalidate]) -> int:
        """intel_nested_cache_invalidate_user(): process entries in order; returns how many were
        handled and raises UapiError (with ``handled`` set) at the first bad one."""
        done = 0
        for inv in entries:
            if inv.flags & ~IOMMU_VTD_INV_FLAGS_LEAF or inv.reserved:
                raise _partial(errno.EOPNOTSUPP, f"invalidation flags {inv.flags:#x}", done)
            if inv.addr % VTD_PAGE_SIZE or (inv.npages == U64_MAX and inv.addr):
                raise _partial(errno.EINVAL, f"invalidation at {inv.addr:#x} of {inv.npages} pages", done)
            size = (1 << 64) if inv.npages == U64_MAX else inv.npages * VTD_PAGE_SIZE
            self.tags.flush_range(inv.addr, min(inv.addr + size, 1 << 64) - 1)
            done += 1
        return done

    def free(self) -> None:
        """Unlink from the parent (intel_nested_domain_free); EBUSY while attached."""
        if self.attached:
            raise UapiError(errno.EBUSY, f"{self.name}: still attached")
        if self in self.parent.children:
            self.parent.children.remove(self)


def _partial(err: int, msg: str, handled: int) -> UapiError:
    e = UapiError(err, msg)
    e.handled = handled  # type: ignore[attr-defined]
    return e
