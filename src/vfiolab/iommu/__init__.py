"""The IOMMU core: page tables (:mod:`vfiolab.iommu.pagetable`), and on top of them domains, IOMMU
units, IOTLB/ATC, PASID, faults and the DMA path."""
