"""The VFIO device uAPI as bytes: ioctl numbers, struct layouts, flags, indexes and capability IDs of
``include/uapi/linux/vfio.h`` (Linux 7.2) that a device fd answers (the container/group/type1 numbers live
with the iommufd compat layer and the legacy container code).

Layouts use :class:`~vfiolab.iommufd.uapi.CStruct` (x86-64 C rules), so ``size`` is ``sizeof()`` and
``offsetofend()`` gives the ``minsz`` each handler checks ``argsz`` against.
"""

from __future__ import annotations

from typing import Final

from vfiolab.iommufd.uapi import _IO, CStruct

VFIO_TYPE: Final = ord(";")
VFIO_BASE: Final = 100
VFIO_API_VERSION: Final = 0


def _vfio(n: int) -> int:
    return _IO(VFIO_TYPE, VFIO_BASE + n)


# ---------------------------------------------------------------------- device ioctls
VFIO_DEVICE_GET_INFO: Final = _vfio(7)
VFIO_DEVICE_GET_REGION_INFO: Final = _vfio(8)
VFIO_DEVICE_GET_IRQ_INFO: Final = _vfio(9)
VFIO_DEVICE_SET_IRQS: Final = _vfio(10)
VFIO_DEVICE_RESET: Final = _vfio(11)
VFIO_DEVICE_GET_PCI_HOT_RESET_INFO: Final = _vfio(12)
VFIO_DEVICE_PCI_HOT_RESET: Final = _vfio(13)
VFIO_DEVICE_QUERY_GFX_PLANE: Final = _vfio(14)
VFIO_DEVICE_GET_GFX_DMABUF: Final = _vfio(15)
VFIO_DEVICE_IOEVENTFD: Final = _vfio(16)
VFIO_DEVICE_FEATURE: Final = _vfio(17)
VFIO_DEVICE_BIND_IOMMUFD: Final = _vfio(18)
VFIO_DEVICE_ATTACH_IOMMUFD_PT: Final = _vfio(19)
VFIO_DEVICE_DETACH_IOMMUFD_PT: Final = _vfio(20)
VFIO_MIG_GET_PRECOPY_INFO: Final = _vfio(21)

# ---------------------------------------------------------------------- structs
vfio_info_cap_header = CStruct("vfio_info_cap_header", [("id", "u16"), ("version", "u16"), ("next", "u32")])
vfio_device_info = CStruct("vfio_device_info", [
    ("argsz", "u32"), ("flags", "u32"), ("num_regions", "u32"), ("num_irqs", "u32"), ("cap_offset", "u32"),
    ("pad", "u32")])
vfio_region_info = CStruct("vfio_region_info", [
    ("argsz", "u32"), ("flags", "u32"), ("index", "u32"), ("cap_offset", "u32"), ("size", "u64"),
    ("offset", "u64")])
vfio_region_sparse_mmap_area = CStruct("vfio_region_sparse_mmap_area", [("offset", "u64"), ("size", "u64")])
vfio_region_info_cap_sparse_mmap = CStruct("vfio_region_info_cap_sparse_mmap", [
    ("id", "u16"), ("version", "u16"), ("next", "u32"), ("nr_areas", "u32"), ("reserved", "u32")])
vfio_region_info_cap_type = CStruct("vfio_region_info_cap_type", [
    ("id", "u16"), ("version", "u16"), ("next", "u32"), ("type", "u32"), ("subtype", "u32")])
vfio_device_info_cap_pci_atomic_comp = CStruct("vfio_device_info_cap_pci_atomic_comp", [
    ("id", "u16"), ("version", "u16"), ("next", "u32"), ("flags", "u32"), ("reserved", "u32")])
vfio_irq_info = CStruct("vfio_irq_info", [("argsz", "u32"), ("flags", "u32"), ("index", "u32"), ("count", "u32")])
vfio_irq_set = CStruct("vfio_irq_set", [
    ("argsz", "u32"), ("flags", "u32"), ("index", "u32"), ("start", "u32"), ("count", "u32")])
vfio_pci_dependent_device = CStruct("vfio_pci_dependent_device", [
    ("devid", "u32"), ("segment", "u16"), ("bus", "u8"), ("devfn", "u8")], aliases={"group_id": "devid"})
vfio_pci_hot_reset_info = CStruct("vfio_pci_hot_reset_info", [("argsz", "u32"), ("flags", "u32"), ("count", "u32")])
vfio_pci_hot_reset = CStruct("vfio_pci_hot_reset", [("argsz", "u32"), ("flags", "u32"), ("count", "u32")])
vfio_device_ioeventfd = CStruct("vfio_device_ioeventfd", [
    ("argsz", "u32"), ("flags", "u32"), ("offset", "u64"), ("data", "u64"), ("fd", "s32"), ("reserved", "u32")])
vfio_device_feature = CStruct("vfio_device_feature", [("argsz", "u32"), ("flags", "u32")])
vfio_device_bind_iommufd = CStruct("vfio_device_bind_iommufd", [
    ("argsz", "u32"), ("flags", "u32"), ("iommufd", "s32"), ("out_devid", "u32"), ("token_uuid_ptr", "u64")])
vfio_device_attach_iommufd_pt = CStruct("vfio_device_attach_iommufd_pt", [
    ("argsz", "u32"), ("flags", "u32"), ("pt_id", "u32"), ("pasid", "u32")])
vfio_device_detach_iommufd_pt = CStruct("vfio_device_detach_iommufd_pt", [
    ("argsz", "u32"), ("flags", "u32"), ("pasid", "u32")])
vfio_device_feature_migration = CStruct("vfio_device_feature_migration", [("flags", "u64")])
vfio_device_feature_mig_state = CStruct("vfio_device_feature_mig_state", [("device_state", "u32"), ("data_fd", "s32")])
vfio_device_low_power_entry_with_wakeup = CStruct("vfio_device_low_power_entry_with_wakeup", [
    ("wakeup_eventfd", "s32"), ("reserved", "u32")])
vfio_device_feature_dma_logging_control = CStruct("vfio_device_feature_dma_logging_control", [
    ("page_size", "u64"), ("num_ranges", "u32"), ("__reserved", "u32"), ("ranges", "u64")])
vfio_device_feature_dma_logging_range = CStruct("vfio_device_feature_dma_logging_range", [
    ("iova", "u64"), ("length", "u64")])
vfio_device_feature_dma_logging_report = CStruct("vfio_device_feature_dma_logging_report", [
    ("iova", "u64"), ("length", "u64"), ("page_size", "u64"), ("bitmap", "u64")])
vfio_device_feature_mig_data_size = CStruct("vfio_device_feature_mig_data_size", [("stop_copy_length", "u64")])
vfio_device_feature_bus_master = CStruct("vfio_device_feature_bus_master", [("op", "u32")])
vfio_precopy_info = CStruct("vfio_precopy_info", [
    ("argsz", "u32"), ("flags", "u32"), ("initial_bytes", "u64"), ("dirty_bytes", "u64")])
UUID_SIZE: Final = 16

# ---------------------------------------------------------------------- flags and values
VFIO_DEVICE_FLAGS_RESET: Final = 1 << 0
VFIO_DEVICE_FLAGS_PCI: Final = 1 << 1
VFIO_DEVICE_FLAGS_PLATFORM: Final = 1 << 2
VFIO_DEVICE_FLAGS_AMBA: Final = 1 << 3
VFIO_DEVICE_FLAGS_CCW: Final = 1 << 4
VFIO_DEVICE_FLAGS_AP: Final = 1 << 5
VFIO_DEVICE_FLAGS_FSL_MC: Final = 1 << 6
VFIO_DEVICE_FLAGS_CAPS: Final = 1 << 7
VFIO_DEVICE_FLAGS_CDX: Final = 1 << 8
VFIO_DEVICE_INFO_CAP_PCI_ATOMIC_COMP: Final = 5
VFIO_PCI_ATOMIC_COMP32: Final = 1 << 0
VFIO_PCI_ATOMIC_COMP64: Final = 1 << 1
VFIO_PCI_ATOMIC_COMP128: Final = 1 << 2

VFIO_REGION_INFO_FLAG_READ: Final = 1 << 0
VFIO_REGION_INFO_FLAG_WRITE: Final = 1 << 1
VFIO_REGION_INFO_FLAG_MMAP: Final = 1 << 2
VFIO_REGION_INFO_FLAG_CAPS: Final = 1 << 3
VFIO_REGION_INFO_CAP_SPARSE_MMAP: Final = 1
VFIO_REGION_INFO_CAP_TYPE: Final = 2
VFIO_REGION_INFO_CAP_MSIX_MAPPABLE: Final = 3

VFIO_IRQ_INFO_EVENTFD: Final = 1 << 0
VFIO_IRQ_INFO_MASKABLE: Final = 1 << 1
VFIO_IRQ_INFO_AUTOMASKED: Final = 1 << 2
VFIO_IRQ_INFO_NORESIZE: Final = 1 << 3

VFIO_IRQ_SET_DATA_NONE: Final = 1 << 0
VFIO_IRQ_SET_DATA_BOOL: Final = 1 << 1
VFIO_IRQ_SET_DATA_EVENTFD: Final = 1 << 2
VFIO_IRQ_SET_ACTION_MASK: Final = 1 << 3
VFIO_IRQ_SET_ACTION_UNMASK: Final = 1 << 4
VFIO_IRQ_SET_ACTION_TRIGGER: Final = 1 << 5
VFIO_IRQ_SET_DATA_TYPE_MASK: Final = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_DATA_BOOL | VFIO_IRQ_SET_DATA_EVENTFD
VFIO_IRQ_SET_ACTION_TYPE_MASK: Final = VFIO_IRQ_SET_ACTION_MASK | VFIO_IRQ_SET_ACTION_UNMASK | VFIO_IRQ_SET_ACTION_TRIGGER

VFIO_PCI_BAR0_REGION_INDEX: Final = 0
VFIO_PCI_BAR5_REGION_INDEX: Final = 5
VFIO_PCI_ROM_REGION_INDEX: Final = 6
VFIO_PCI_CONFIG_REGION_INDEX: Final = 7
VFIO_PCI_VGA_REGION_INDEX: Final = 8
VFIO_PCI_NUM_REGIONS: Final = 9

VFIO_PCI_INTX_IRQ_INDEX: Final = 0
VFIO_PCI_MSI_IRQ_INDEX: Final = 1
VFIO_PCI_MSIX_IRQ_INDEX: Final = 2
VFIO_PCI_ERR_IRQ_INDEX: Final = 3
VFIO_PCI_REQ_IRQ_INDEX: Final = 4
VFIO_PCI_NUM_IRQS: Final = 5

VFIO_PCI_DEVID_OWNED: Final = 0
VFIO_PCI_DEVID_NOT_OWNED: Final = -1
VFIO_PCI_HOT_RESET_FLAG_DEV_ID: Final = 1 << 0
VFIO_PCI_HOT_RESET_FLAG_DEV_ID_OWNED: Final = 1 << 1

VFIO_DEVICE_IOEVENTFD_8: Final = 1 << 0
VFIO_DEVICE_IOEVENTFD_16: Final = 1 << 1
VFIO_DEVICE_IOEVENTFD_32: Final = 1 << 2
VFIO_DEVICE_IOEVENTFD_64: Final = 1 << 3
VFIO_DEVICE_IOEVENTFD_SIZE_MASK: Final = 0xF

VFIO_DEVICE_FEATURE_MASK: Final = 0xFFFF
VFIO_DEVICE_FEATURE_GET: Final = 1 << 16
VFIO_DEVICE_FEATURE_SET: Final = 1 << 17
VFIO_DEVICE_FEATURE_PROBE: Final = 1 << 18
VFIO_DEVICE_FEATURE_PCI_VF_TOKEN: Final = 0
VFIO_DEVICE_FEATURE_MIGRATION: Final = 1
VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE: Final = 2
VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY: Final = 3
VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP: Final = 4
VFIO_DEVICE_FEATURE_LOW_POWER_EXIT: Final = 5
VFIO_DEVICE_FEATURE_DMA_LOGGING_START: Final = 6
VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP: Final = 7
VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT: Final = 8
VFIO_DEVICE_FEATURE_MIG_DATA_SIZE: Final = 9
VFIO_DEVICE_FEATURE_BUS_MASTER: Final = 10
VFIO_DEVICE_FEATURE_DMA_BUF: Final = 11
VFIO_DEVICE_FEATURE_MIG_PRECOPY_INFOv2: Final = 12

VFIO_MIGRATION_STOP_COPY: Final = 1 << 0
VFIO_MIGRATION_P2P: Final = 1 << 1
VFIO_MIGRATION_PRE_COPY: Final = 1 << 2

VFIO_DEVICE_BIND_FLAG_TOKEN: Final = 1 << 0
VFIO_DEVICE_ATTACH_PASID: Final = 1 << 0
VFIO_DEVICE_DETACH_PASID: Final = 1 << 0

# include/linux/vfio_pci_core.h: a region's file offset is its index << 40
VFIO_PCI_OFFSET_SHIFT: Final = 40
VFIO_PCI_OFFSET_MASK: Final = (1 << VFIO_PCI_OFFSET_SHIFT) - 1


def vfio_pci_index_to_offset(index: int) -> int:
    """VFIO_PCI_INDEX_TO_OFFSET()."""
    return index << VFIO_PCI_OFFSET_SHIFT


def vfio_pci_offset_to_index(offset: int) -> int:
    """VFIO_PCI_OFFSET_TO_INDEX()."""
    return offset >> VFIO_PCI_OFFSET_SHIFT
