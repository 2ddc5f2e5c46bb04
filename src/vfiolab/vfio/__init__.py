"""VFIO as Python objects: the device core and its file (:mod:`.device`), vfio-pci over the device API
(:mod:`.pci_core`, :mod:`.pci_config`, :mod:`.pci_intrs`), the device cdev with iommufd (:mod:`.cdev`), the
uAPI bytes (:mod:`.uapi`), migration v2 and DMA logging (:mod:`.migration`, :mod:`.dma_logging`,
:mod:`.feature`) and the legacy container/group/type1 path."""
