"""The IOMMU core: page tables (:mod:`vfiolab.iommu.pagetable`), and on top of them domains, IOMMU
units, IOTLB/ATC, PASID, faults and the DMA path."""

from vfiolab.iommu.device import IommuDevice
from vfiolab.iommu.dma import DmaPort
from vfiolab.iommu.domain import BlockedDomain, IdentityDomain, IommuDomain, PagingDomain
from vfiolab.iommu.driver import make_unit
from vfiolab.iommu.fault import DmaFault, FaultReason, FaultRecord
from vfiolab.iommu.group import (
    IommuGroup,
    iommu_attach_device_pasid,
    iommu_attach_group,
    iommu_probe_device,
    iommu_replace_group_handle,
)
from vfiolab.iommu.nested import NestedDomain
from vfiolab.iommu.pagetable import PageTable
from vfiolab.iommu.sva import Mm, SvaDomain, iommu_sva_bind_device
from vfiolab.iommu.unit import IommuUnit

__all__ = [
    "BlockedDomain",
    "DmaFault",
    "DmaPort",
    "FaultReason",
    "FaultRecord",
    "IdentityDomain",
    "IommuDevice",
    "IommuDomain",
    "IommuGroup",
    "IommuUnit",
    "Mm",
    "NestedDomain",
    "PageTable",
    "PagingDomain",
    "SvaDomain",
    "iommu_attach_device_pasid",
    "iommu_attach_group",
    "iommu_probe_device",
    "iommu_replace_group_handle",
    "iommu_sva_bind_device",
    "make_unit",
]
