"""PASID numbers as the IOMMU core sees them: the reserved values, a device's usable PASID count and the
global PASID allocator SVA draws from (``include/linux/iommu.h``, ``drivers/iommu/iommu.c``).

PASID 0 (``IOMMU_NO_PASID``) stands for DMA without a PASID prefix: the RID attachment.  A device may use
PASIDs ``1 .. max_pasids-1``; ``max_pasids`` is the smaller of what the PCI PASID capability advertises
and what the IOMMU unit supports (``dev_iommu_get_max_pasids()``).
"""

from __future__ import annotations

import errno
from typing import Final

from vfiolab.errors import UapiError

# include/linux/iommu.h
IOMMU_NO_PASID: Final = 0
IOMMU_FIRST_GLOBAL_PASID: Final = 1
IOMMU_PASID_INVALID: Final = 0xFFFFFFFF
PASID_MAX_WIDTH: Final = 20
"""PCIe PASID TLP prefix width: 20 bits (PCIe Base §6.20)."""


def max_pasids(cap_width: int | None, unit_width: int) -> int:
    """dev_iommu_get_max_pasids() (iommu.c): 1 << min(device width, unit width); 0 without a PASID
    capability (pci_max_pasids() fails) or when the unit has no PASID support."""
    if not cap_width or not unit_width:
        return 0
    return 1 << min(cap_width, unit_width)


class PasidIda:
    """The global PASID IDA (iommu.c ``iommu_global_pasid_ida``): lowest free number first."""

    def __init__(self) -> None:
        self._used: set[int] = set()

    def alloc(self, max_pasids: int) -> int:
        """iommu_alloc_global_pasid(): the lowest free PASID in [1, max_pasids-1], or
        IOMMU_PASID_INVALID when the device has no PASIDs or none is free."""
        if not max_pasids:
            return IOMMU_PASID_INVALID
        for p in range(IOMMU_FIRST_GLOBAL_PASID, max_pasids):
            if p not in self._used:
                self._used.add(p)
                return p
        return IOMMU_PASID_INVALID

    def free(self, pasid: int) -> None:
        """iommu_free_global_pasid(); freeing a PASID that is not allocated is a caller bug."""
        if pasid not in self._used:
            raise UapiError(errno.EINVAL, f"PASID {pasid} is not allocated")
        self._used.remove(pasid)

    def __contains__(self, pasid: int) -> bool:
        return pasid in self._used
