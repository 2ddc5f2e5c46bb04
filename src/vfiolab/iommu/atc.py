"""The device side of ATS (PCIe Base §10.2-10.3): a function's Address Translation Cache, filled by
Translation Requests to the IOMMU and emptied by ATS Invalidate Requests from it.

The ATC is a :class:`~vfiolab.iommu.iotlb.TranslationCache` tagged by PASID (0: requests without one).
Once an entry is cached the function sends *translated* requests straight to memory: the IOMMU's page
table and IOTLB are not consulted again, so an unmap whose driver forgot the device-TLB invalidation
leaves the device reaching the old page, exactly as on hardware.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vfiolab.iommu.domain import MODE_BLOCK
from vfiolab.iommu.fault import FaultReason
from vfiolab.iommu.iotlb import Run

if TYPE_CHECKING:
    from vfiolab.iommu.device import IommuDevice


def translation_request(dev: IommuDevice, pasid: int, addr: int, write: bool
                        ) -> tuple[Run | None, FaultReason | None, int]:
    """Send a Translation Request for the page at ``addr`` and cache the completion in the ATC.

    Returns (cached run, None, -1), or (None, reason, level) for a completion without access (R=W=0)
    or an IOMMU that does not support ATS (Unsupported Request)."""
    unit, atc = dev.unit, dev.atc
    assert unit is not None and atc is not None
    if not unit.caps.ats:
        return None, FaultReason.ATS_DISABLED, -1
    comp, reason, level = unit.ats_translate(dev.rid, pasid, addr, write,
                                             min(unit.iotlb.span_lg2, atc.span_lg2))
    if comp is None:
        return None, reason, level
    return atc.insert(pasid, comp, addr), None, -1


def translated_request_allowed(dev: IommuDevice, pasid: int) -> bool:
    """Whether the IOMMU accepts translated requests of (dev, pasid): ATS support and a non-blocking
    context (VT-d: Device-TLB enabled in the context / PASID entry)."""
    unit = dev.unit
    if unit is None or not unit.caps.ats:
        return False
    if not unit.translation_enabled:
        return True
    ctx = unit.context(dev.rid, pasid)
    return ctx is not None and ctx.mode != MODE_BLOCK
