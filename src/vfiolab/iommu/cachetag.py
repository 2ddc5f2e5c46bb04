"""Cache tags: which IOTLBs and device TLBs (ATCs) may hold translations of a domain, and how a domain
invalidates them (``drivers/iommu/intel/cache.c``; the other drivers keep the same facts in their own
device lists).

A tag is added when a device (RID or PASID) is attached and removed when it is detached:

* IOTLB          (unit, domain ID, PASID): the unit's IOTLB entries of this attachment;
* DEVTLB         (device, PASID): the device's ATC, when ATS is enabled;
* NESTING_IOTLB / NESTING_DEVTLB: on a nesting parent, for each attached nested child, because a change
  of the parent (stage 2) changes the child's combined translations.

Range invalidations are rounded to one naturally aligned power-of-two block, as VT-d page-selective
invalidation requires (``calculate_psi_aligned_address()``); nested children and their device TLBs are
flushed whole, since which stage-1 addresses use a stage-2 range is unknown.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from vfiolab.iommu.device import IommuDevice
    from vfiolab.iommu.unit import IommuUnit

VTD_PAGE_SHIFT: Final = 12
FULL: Final = (0, 1 << 64)


class TagType(enum.Enum):
    """enum cache_tag_type."""

    IOTLB = "iotlb"
    DEVTLB = "devtlb"
    NESTING_IOTLB = "nesting_iotlb"
    NESTING_DEVTLB = "nesting_devtlb"


@dataclass
class CacheTag:
    """One cache that may hold the domain's translations; ``users`` counts attachments sharing it."""

    type: TagType
    unit: IommuUnit
    did: int
    pasid: int
    dev: IommuDevice | None
    users: int = 1

    def matches(self, type_: TagType, unit: IommuUnit, did: int, pasid: int, dev: IommuDevice | None) -> bool:
        """cache_tage_match(): IOTLB tags are per unit, DEVTLB tags per device."""
        if self.type != type_ or self.did != did or self.pasid != pasid:
            return False
        if type_ in (TagType.IOTLB, TagType.NESTING_IOTLB):
            return self.unit is unit
        return self.dev is dev


def psi_aligned(start: int, last: int) -> tuple[int, int]:
    """calculate_psi_aligned_address(): the aligned block [lo, hi) covering [start, last]."""
    start &= ~((1 << VTD_PAGE_SHIFT) - 1)
    sz_lg2 = (start ^ last).bit_length()
    if sz_lg2 <= VTD_PAGE_SHIFT:
        return start, start + (1 << VTD_PAGE_SHIFT)
    if sz_lg2 >= 64:
        return FULL
    lo = start & ~((1 << sz_lg2) - 1)
    return lo, lo + (1 << sz_lg2)


class CacheTags:
    """The cache tags of one domain."""

    def __init__(self) -> None:
        self.tags: list[CacheTag] = []
        self.flushes = 0
        """Range or full flushes requested (iotlb_sync / flush_iotlb_all calls that reached tags)."""

    def assign(self, type_: TagType, unit: IommuUnit, did: int, pasid: int, dev: IommuDevice | None) -> None:
        """cache_tag_assign(): add a tag or count one more user of an equal tag."""
        key_dev = dev if type_ in (TagType.DEVTLB, TagType.NESTING_DEVTLB) else None
        for t in self.tags:
            if t.matches(type_, unit, did, pasid, key_dev):
                t.users += 1
                return
        self.tags.append(CacheTag(type_, unit, did, pasid, key_dev))

    def unassign(self, type_: TagType, unit: IommuUnit, did: int, pasid: int, dev: IommuDevice | None) -> None:
        """cache_tag_unassign()."""
        key_dev = dev if type_ in (TagType.DEVTLB, TagType.NESTING_DEVTLB) else None
        for t in self.tags:
            if t.matches(type_, unit, did, pasid, key_dev):
                t.users -= 1
                if not t.users:
                    self.tags.remove(t)
                return

    def flush_range(self, start: int, last: int) -> None:
        """cache_tag_flush_range(): invalidate [start, last] wherever the domain may be cached."""
        self.flushes += 1
        lo, hi = psi_aligned(start, last)
        for t in self.tags:
            if t.type == TagType.IOTLB:
                t.unit.iotlb_invalidate(t.did, t.pasid, lo, hi)
            elif t.type == TagType.NESTING_IOTLB:
                t.unit.iotlb_invalidate(t.did, t.pasid, *FULL)
            elif t.type == TagType.DEVTLB:
                assert t.dev is not None
                t.unit.devtlb_invalidate(t.dev, t.pasid, lo, hi)
            else:
                assert t.dev is not None
                t.unit.devtlb_invalidate(t.dev, t.pasid, *FULL)

    def flush_all(self) -> None:
        """cache_tag_flush_all()."""
        self.flush_range(0, (1 << 64) - 1)

    def __len__(self) -> int:
        return len(self.tags)
