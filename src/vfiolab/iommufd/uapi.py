"""The /dev/iommu uAPI as bytes: ioctl numbers, struct layouts, flags and enums of
``include/uapi/linux/iommufd.h`` (Linux 7.2), the VFIO type1 compatibility structs of
``include/uapi/linux/vfio.h`` and the selftest command of ``drivers/iommu/iommufd/iommufd_test.h``.

Layouts are computed with the C rules the kernel is built with on x86-64 (natural alignment, struct size
rounded up to the largest member alignment, little endian), so ``CStruct.size`` is ``sizeof()`` and
``CStruct.offsetofend(field)`` is ``offsetofend()``: the dispatcher's minimum sizes come from there.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from vfiolab.errors import VfiolabError

U8_MAX: Final = 0xFF
U16_MAX: Final = 0xFFFF
U32_MAX: Final = 0xFFFF_FFFF
U64_MAX: Final = (1 << 64) - 1
ULONG_MAX: Final = U64_MAX
"""64-bit kernel: unsigned long is 64 bits."""
SIZE_MAX: Final = U64_MAX
PAGE_SHIFT: Final = 12
PAGE_SIZE: Final = 1 << PAGE_SHIFT

_CTYPES: Final = {"u8": ("B", 1), "u16": ("H", 2), "u32": ("I", 4), "s32": ("i", 4), "u64": ("Q", 8)}


@dataclass(frozen=True)
class Field:
    """One member: C type name, count (arrays), byte offset."""

    name: str
    ctype: str
    count: int
    offset: int

    @property
    def size(self) -> int:
        return _CTYPES[self.ctype][1] * self.count


class CStruct:
    """A C struct layout: ``pack``/``unpack`` to dicts of ints (arrays as tuples), ``size`` and
    ``offsetofend``.  ``fields`` is a sequence of ``(name, ctype)`` or ``(name, ctype, count)``;
    ``aliases`` maps a union member name onto the field sharing its storage."""

    def __init__(self, name: str, fields: Sequence[tuple[str, str] | tuple[str, str, int]],
                 aliases: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.fields: dict[str, Field] = {}
        off = 0
        align = 1
        fmt = "<"
        for spec in fields:
            fname, ctype = spec[0], spec[1]
            count = spec[2] if len(spec) == 3 else 1  # type: ignore[misc]
            code, width = _CTYPES[ctype]
            pad = -off % width
            fmt += "x" * pad
            off += pad
            self.fields[fname] = Field(fname, ctype, count, off)
            fmt += f"{count}{code}" if count > 1 else code
            off += width * count
            align = max(align, width)
        tail = -off % align
        fmt += "x" * tail
        self.size = off + tail
        self._st = struct.Struct(fmt)
        self.aliases = dict(aliases or {})
        self._order = list(self.fields)

    def field(self, name: str) -> Field:
        """The member ``name`` (or the member an alias names)."""
        name = self.aliases.get(name, name)
        try:
            return self.fields[name]
        except KeyError:
            raise VfiolabError(f"struct {self.name} has no member {name!r}") from None

    def offsetofend(self, name: str) -> int:
        """offsetofend(struct, member)."""
        f = self.field(name)
        return f.offset + f.size

    def unpack(self, data: bytes | bytearray | memoryview) -> dict[str, int]:
        """The members of the first ``size`` bytes (arrays come back as tuples in ``unpack_arrays``)."""
        vals = self._st.unpack_from(data)
        out: dict[str, int] = {}
        i = 0
        for name in self._order:
            f = self.fields[name]
            if f.count == 1:
                out[name] = vals[i]
                i += 1
            else:
                i += f.count  # arrays are reached through get_array()
        for alias, target in self.aliases.items():
            if target in out:
                out[alias] = out[target]
        return out

    def get_array(self, data: bytes | bytearray | memoryview, name: str) -> tuple[int, ...]:
        """An array member."""
        f = self.field(name)
        code = _CTYPES[f.ctype][0]
        return struct.unpack_from(f"<{f.count}{code}", data, f.offset)

    def pack(self, values: Mapping[str, int] | None = None, **kw: int) -> bytes:
        """``size`` bytes with the given members set, the rest zero.  Values must fit their type."""
        buf = bytearray(self.size)
        merged = dict(values or {})
        merged.update(kw)
        for key, value in merged.items():
            self.put(buf, key, value)
        return bytes(buf)

    def put(self, buf: bytearray, name: str, value: int) -> None:
        """Store one member into ``buf`` (which must hold at least the member)."""
        f = self.field(name)
        code, width = _CTYPES[f.ctype]
        if f.count != 1:
            raise VfiolabError(f"{self.name}.{name} is an array")
        lo = -(1 << (8 * width - 1)) if code.islower() else 0
        hi = (1 << (8 * width - 1)) - 1 if code.islower() else (1 << (8 * width)) - 1
        if not lo <= value <= hi:
            raise VfiolabError(f"{self.name}.{name} = {value:#x} does not fit {f.ctype}")
        struct.pack_into("<" + code, buf, f.offset, value)

    def put_array(self, buf: bytearray, name: str, values: Sequence[int]) -> None:
        """Store an array member (exactly its element count)."""
        f = self.field(name)
        if len(values) != f.count:
            raise VfiolabError(f"{self.name}.{name} holds {f.count} elements, not {len(values)}")
        struct.pack_into(f"<{f.count}{_CTYPES[f.ctype][0]}", buf, f.offset, *values)

    def __repr__(self) -> str:
        return f"<struct {self.name} size={self.size}>"


# ---------------------------------------------------------------------- ioctl numbers (asm-generic/ioctl.h)
def _IO(type_: int, nr: int) -> int:
    """_IO(type, nr): direction 0, size 0."""
    return (type_ << 8) | nr


def ioc_nr(cmd: int) -> int:
    """_IOC_NR()."""
    return cmd & 0xFF


IOMMUFD_TYPE: Final = ord(";")
IOMMUFD_CMD_BASE: Final = 0x80

IOMMUFD_CMD_DESTROY: Final = 0x80
IOMMUFD_CMD_IOAS_ALLOC: Final = 0x81
IOMMUFD_CMD_IOAS_ALLOW_IOVAS: Final = 0x82
IOMMUFD_CMD_IOAS_COPY: Final = 0x83
IOMMUFD_CMD_IOAS_IOVA_RANGES: Final = 0x84
IOMMUFD_CMD_IOAS_MAP: Final = 0x85
IOMMUFD_CMD_IOAS_UNMAP: Final = 0x86
IOMMUFD_CMD_OPTION: Final = 0x87
IOMMUFD_CMD_VFIO_IOAS: Final = 0x88
IOMMUFD_CMD_HWPT_ALLOC: Final = 0x89
IOMMUFD_CMD_GET_HW_INFO: Final = 0x8A
IOMMUFD_CMD_HWPT_SET_DIRTY_TRACKING: Final = 0x8B
IOMMUFD_CMD_HWPT_GET_DIRTY_BITMAP: Final = 0x8C
IOMMUFD_CMD_HWPT_INVALIDATE: Final = 0x8D
IOMMUFD_CMD_FAULT_QUEUE_ALLOC: Final = 0x8E
IOMMUFD_CMD_IOAS_MAP_FILE: Final = 0x8F
IOMMUFD_CMD_VIOMMU_ALLOC: Final = 0x90
IOMMUFD_CMD_VDEVICE_ALLOC: Final = 0x91
IOMMUFD_CMD_IOAS_CHANGE_PROCESS: Final = 0x92
IOMMUFD_CMD_VEVENTQ_ALLOC: Final = 0x93
IOMMUFD_CMD_HW_QUEUE_ALLOC: Final = 0x94
IOMMUFD_CMD_TEST: Final = IOMMUFD_CMD_BASE + 32
"""drivers/iommu/iommufd/iommufd_test.h IOMMU_TEST_CMD (CONFIG_IOMMUFD_TEST)."""

IOMMU_DESTROY: Final = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_DESTROY)
IOMMU_IOAS_ALLOC: Final = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_ALLOC)
IOMMU_IOAS_ALLOW_IOVAS: Final = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_ALLOW_IOVAS)
IOMMU_IOAS_COPY: Final = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_COPY)
IOMMU_IOAS_IOVA_RANGES: Final = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_IOVA_RANGES)
IOMMU_IOAS_MAP: Final = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_MAP)
IOMMU_IOAS_UNMAP: Final = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_UNMAP)
IOMMU_OPTION: Final = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_OPTION)
IOMMU_VFIO_IOAS: Final = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_VFIO_IOAS)
IOMMU_HWPT_ALLOC: Final = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_HWPT_ALLOC)
IOMMU_GET_HW_INFO: Final = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_GET_HW_INFO)
IOMMU_HWPT_SET_DIRTY_TRACKING: Final = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_HWPT_SET_DIRTY_TRACKING)
IOMMU_HWPT_GET_DIRTY_BITMAP: Final = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_HWPT_GET_DIRTY_BITMAP)
IOMMU_HWPT_INVALIDATE: Final = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_HWPT_INVALIDATE)
IOMMU_FAULT_QUEUE_ALLOC: Final = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_FAULT_QUEUE_ALLOC)
IOMMU_IOAS_MAP_FILE: Final = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_MAP_FILE)
IOMMU_VIOMMU_ALLOC: Final = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_VIOMMU_ALLOC)
IOMMU_VDEVICE_ALLOC: Final = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_VDEVICE_ALLOC)
IOMMU_IOAS_CHANGE_PROCESS: Final = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_CHANGE_PROCESS)
IOMMU_VEVENTQ_ALLOC: Final = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_VEVENTQ_ALLOC)
IOMMU_HW_QUEUE_ALLOC: Final = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_HW_QUEUE_ALLOC)
IOMMU_TEST_CMD: Final = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_TEST)

# ---------------------------------------------------------------------- flags and enums (uapi iommufd.h)
IOMMU_IOAS_MAP_FIXED_IOVA: Final = 1 << 0
IOMMU_IOAS_MAP_WRITEABLE: Final = 1 << 1
IOMMU_IOAS_MAP_READABLE: Final = 1 << 2
IOMMU_IOAS_MAP_FLAGS: Final = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_WRITEABLE | IOMMU_IOAS_MAP_READABLE

IOMMU_OPTION_RLIMIT_MODE: Final = 0
IOMMU_OPTION_HUGE_PAGES: Final = 1
IOMMU_OPTION_OP_SET: Final = 0
IOMMU_OPTION_OP_GET: Final = 1

IOMMU_VFIO_IOAS_GET: Final = 0
IOMMU_VFIO_IOAS_SET: Final = 1
IOMMU_VFIO_IOAS_CLEAR: Final = 2

IOMMU_HWPT_ALLOC_NEST_PARENT: Final = 1 << 0
IOMMU_HWPT_ALLOC_DIRTY_TRACKING: Final = 1 << 1
IOMMU_HWPT_FAULT_ID_VALID: Final = 1 << 2
IOMMU_HWPT_ALLOC_PASID: Final = 1 << 3

IOMMU_HWPT_DATA_NONE: Final = 0
IOMMU_HWPT_DATA_VTD_S1: Final = 1
IOMMU_HWPT_DATA_ARM_SMMUV3: Final = 2
IOMMU_HWPT_DATA_AMD_GUEST: Final = 3

IOMMU_HW_INFO_TYPE_NONE: Final = 0
IOMMU_HW_INFO_TYPE_DEFAULT: Final = 0
IOMMU_HW_INFO_TYPE_INTEL_VTD: Final = 1
IOMMU_HW_INFO_TYPE_ARM_SMMUV3: Final = 2
IOMMU_HW_INFO_TYPE_TEGRA241_CMDQV: Final = 3
IOMMU_HW_INFO_TYPE_AMD: Final = 4
IOMMU_HW_INFO_FLAG_INPUT_TYPE: Final = 1 << 0
IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17: Final = 1 << 0
"""enum iommu_hw_info_vtd_flags: read-only mappings are not allowed on a nest-parent domain."""

IOMMU_HW_CAP_DIRTY_TRACKING: Final = 1 << 0
IOMMU_HW_CAP_PCI_PASID_EXEC: Final = 1 << 1
IOMMU_HW_CAP_PCI_PASID_PRIV: Final = 1 << 2
IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED: Final = 1 << 3

IOMMU_HWPT_DIRTY_TRACKING_ENABLE: Final = 1
IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR: Final = 1

IOMMU_HWPT_INVALIDATE_DATA_VTD_S1: Final = 0
IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3: Final = 1

IOMMU_VIOMMU_TYPE_DEFAULT: Final = 0
IOMMU_VIOMMU_TYPE_ARM_SMMUV3: Final = 1
IOMMU_VIOMMU_TYPE_TEGRA241_CMDQV: Final = 2

IOMMU_VEVENTQ_TYPE_DEFAULT: Final = 0
IOMMU_HW_QUEUE_TYPE_DEFAULT: Final = 0

# ---------------------------------------------------------------------- structs (uapi iommufd.h)
iommu_destroy: Final = CStruct("iommu_destroy", [("size", "u32"), ("id", "u32")])
iommu_ioas_alloc: Final = CStruct("iommu_ioas_alloc", [("size", "u32"), ("flags", "u32"),
                                                       ("out_ioas_id", "u32")])
iommu_iova_range: Final = CStruct("iommu_iova_range", [("start", "u64"), ("last", "u64")])
iommu_ioas_iova_ranges: Final = CStruct("iommu_ioas_iova_ranges", [
    ("size", "u32"), ("ioas_id", "u32"), ("num_iovas", "u32"), ("__reserved", "u32"),
    ("allowed_iovas", "u64"), ("out_iova_alignment", "u64")])
iommu_ioas_allow_iovas: Final = CStruct("iommu_ioas_allow_iovas", [
    ("size", "u32"), ("ioas_id", "u32"), ("num_iovas", "u32"), ("__reserved",
                                                                "u32"), ("allowed_iovas", "u64")])
iommu_ioas_map: Final = CStruct("iommu_ioas_map", [
    ("size", "u32"), ("flags", "u32"), ("ioas_id", "u32"), ("__reserved", "u32"), ("user_va", "u64"),
    ("length", "u64"), ("iova", "u64")])
iommu_ioas_map_file: Final = CStruct("iommu_ioas_map_file", [
    ("size", "u32"), ("flags", "u32"), ("ioas_id", "u32"), ("fd", "s32"), ("start", "u64"), ("length", "u64"),
    ("iova", "u64")])
iommu_ioas_copy: Final = CStruct("iommu_ioas_copy", [
    ("size", "u32"), ("flags", "u32"), ("dst_ioas_id", "u32"), ("src_ioas_id", "u32"), ("length", "u64"),
    ("dst_iova", "u64"), ("src_iova", "u64")])
iommu_ioas_unmap: Final = CStruct("iommu_ioas_unmap", [
    ("size", "u32"), ("ioas_id", "u32"), ("iova", "u64"), ("length", "u64")])
iommu_option: Final = CStruct("iommu_option", [
    ("size", "u32"), ("option_id", "u32"), ("op", "u16"), ("__reserved", "u16"), ("object_id", "u32"),
    ("val64", "u64")])
iommu_vfio_ioas: Final = CStruct("iommu_vfio_ioas", [
    ("size", "u32"), ("ioas_id", "u32"), ("op", "u16"), ("__reserved", "u16")])
iommu_hwpt_alloc: Final = CStruct("iommu_hwpt_alloc", [
    ("size", "u32"), ("flags", "u32"), ("dev_id", "u32"), ("pt_id", "u32"), ("out_hwpt_id", "u32"),
    ("__reserved", "u32"), ("data_type", "u32"), ("data_len", "u32"), ("data_uptr",
                                                                       "u64"), ("fault_id", "u32"),
    ("__reserved2", "u32")])
iommu_hw_info: Final = CStruct("iommu_hw_info", [
    ("size", "u32"), ("flags", "u32"), ("dev_id", "u32"), ("data_len", "u32"), ("data_uptr", "u64"),
    ("data_type", "u32"), ("out_max_pasid_log2", "u8"), ("__reserved", "u8", 3), ("out_capabilities", "u64")],
    aliases={"in_data_type": "data_type", "out_data_type": "data_type"})
iommu_hw_info_vtd: Final = CStruct("iommu_hw_info_vtd", [
    ("flags", "u32"), ("__reserved", "u32"), ("cap_reg", "u64"), ("ecap_reg", "u64")])
iommu_hw_info_arm_smmuv3: Final = CStruct("iommu_hw_info_arm_smmuv3", [
    ("flags", "u32"), ("__reserved", "u32"), ("idr", "u32", 6), ("iidr", "u32"), ("aidr", "u32")])
iommu_hw_info_amd: Final = CStruct("iommu_hw_info_amd", [("efr", "u64"), ("efr2", "u64")])
iommu_hwpt_set_dirty_tracking: Final = CStruct("iommu_hwpt_set_dirty_tracking", [
    ("size", "u32"), ("flags", "u32"), ("hwpt_id", "u32"), ("__reserved", "u32")])
iommu_hwpt_get_dirty_bitmap: Final = CStruct("iommu_hwpt_get_dirty_bitmap", [
    ("size", "u32"), ("hwpt_id", "u32"), ("flags", "u32"), ("__reserved", "u32"), ("iova", "u64"),
    ("length", "u64"), ("page_size", "u64"), ("data", "u64")])
iommu_hwpt_invalidate: Final = CStruct("iommu_hwpt_invalidate", [
    ("size", "u32"), ("hwpt_id", "u32"), ("data_uptr", "u64"), ("data_type", "u32"), ("entry_len", "u32"),
    ("entry_num", "u32"), ("__reserved", "u32")])
iommu_fault_alloc: Final = CStruct("iommu_fault_alloc", [
    ("size", "u32"), ("flags", "u32"), ("out_fault_id", "u32"), ("out_fault_fd", "u32")])
iommu_viommu_alloc: Final = CStruct("iommu_viommu_alloc", [
    ("size", "u32"), ("flags", "u32"), ("type", "u32"), ("dev_id", "u32"), ("hwpt_id", "u32"),
    ("out_viommu_id", "u32"), ("data_len", "u32"), ("__reserved", "u32"), ("data_uptr", "u64")])
iommu_vdevice_alloc: Final = CStruct("iommu_vdevice_alloc", [
    ("size", "u32"), ("viommu_id", "u32"), ("dev_id", "u32"), ("out_vdevice_id", "u32"), ("virt_id", "u64")])
iommu_ioas_change_process: Final = CStruct("iommu_ioas_change_process", [("size", "u32"),
                                                                         ("__reserved", "u32")])
iommu_veventq_alloc: Final = CStruct("iommu_veventq_alloc", [
    ("size", "u32"), ("flags", "u32"), ("viommu_id", "u32"), ("type", "u32"), ("veventq_depth", "u32"),
    ("out_veventq_id", "u32"), ("out_veventq_fd", "u32"), ("__reserved", "u32")])
IOMMU_VEVENTQ_FLAG_LOST_EVENTS: Final = 1 << 0
iommufd_vevent_header: Final = CStruct("iommufd_vevent_header", [("flags", "u32"), ("sequence", "u32")])
iommu_hwpt_pgfault: Final = CStruct("iommu_hwpt_pgfault", [
    ("flags", "u32"), ("dev_id", "u32"), ("pasid", "u32"), ("grpid", "u32"), ("perm", "u32"),
    ("__reserved", "u32"), ("addr", "u64"), ("length", "u32"), ("cookie", "u32")])
iommu_hwpt_page_response: Final = CStruct("iommu_hwpt_page_response", [("cookie", "u32"), ("code", "u32")])
iommu_hw_queue_alloc: Final = CStruct("iommu_hw_queue_alloc", [
    ("size", "u32"), ("flags", "u32"), ("viommu_id", "u32"), ("type", "u32"), ("index", "u32"),
    ("out_hw_queue_id", "u32"), ("nesting_parent_iova", "u64"), ("length", "u64")])

# ---------------------------------------------------------------------- selftest (iommufd_test.h)
IOMMU_TEST_OP_ADD_RESERVED: Final = 1
IOMMU_TEST_OP_MOCK_DOMAIN: Final = 2
IOMMU_TEST_OP_MD_CHECK_MAP: Final = 3
IOMMU_TEST_OP_MD_CHECK_REFS: Final = 4
IOMMU_TEST_OP_CREATE_ACCESS: Final = 5
IOMMU_TEST_OP_DESTROY_ACCESS_PAGES: Final = 6
IOMMU_TEST_OP_ACCESS_PAGES: Final = 7
IOMMU_TEST_OP_ACCESS_RW: Final = 8
IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT: Final = 9
IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE: Final = 10
IOMMU_TEST_OP_ACCESS_REPLACE_IOAS: Final = 11
IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS: Final = 12
IOMMU_TEST_OP_DIRTY: Final = 13
IOMMU_TEST_OP_MD_CHECK_IOTLB: Final = 14
IOMMU_TEST_OP_TRIGGER_IOPF: Final = 15
IOMMU_TEST_OP_DEV_CHECK_CACHE: Final = 16
IOMMU_TEST_OP_TRIGGER_VEVENT: Final = 17
IOMMU_TEST_OP_PASID_ATTACH: Final = 18
IOMMU_TEST_OP_PASID_REPLACE: Final = 19
IOMMU_TEST_OP_PASID_DETACH: Final = 20
IOMMU_TEST_OP_PASID_CHECK_HWPT: Final = 21
IOMMU_TEST_OP_DMABUF_GET: Final = 22
IOMMU_TEST_OP_DMABUF_REVOKE: Final = 23

MOCK_IOMMUPT_DEFAULT: Final = 0
MOCK_IOMMUPT_HUGE: Final = 1
MOCK_APERTURE_START: Final = 1 << 24
MOCK_APERTURE_LAST: Final = (1 << 31) - 1
MOCK_PAGE_SIZE: Final = 2048
MOCK_HUGE_PAGE_SIZE: Final = 512 * MOCK_PAGE_SIZE
MOCK_FLAGS_ACCESS_WRITE: Final = 1 << 0
MOCK_FLAGS_ACCESS_SYZ: Final = 1 << 16
MOCK_ACCESS_RW_WRITE: Final = 1 << 0
MOCK_ACCESS_RW_SLOW_PATH: Final = 1 << 2
MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES: Final = 1 << 0
MOCK_FLAGS_DEVICE_NO_DIRTY: Final = 1 << 0
MOCK_FLAGS_DEVICE_PASID: Final = 1 << 2
MOCK_NESTED_DOMAIN_IOTLB_ID_MAX: Final = 3
MOCK_NESTED_DOMAIN_IOTLB_NUM: Final = 4
MOCK_DEV_CACHE_ID_MAX: Final = 3
MOCK_DEV_CACHE_NUM: Final = 4
IOMMU_TEST_PASID_RESERVED: Final = 1024
MOCK_PASID_WIDTH: Final = 20
IOMMU_HW_INFO_TYPE_SELFTEST: Final = 0xFEEDBEEF
IOMMU_HW_INFO_SELFTEST_REGVAL: Final = 0xDEADBEEF
IOMMU_HWPT_DATA_SELFTEST: Final = 0xDEAD
IOMMU_TEST_IOTLB_DEFAULT: Final = 0xBADBEEF
IOMMU_TEST_DEV_CACHE_DEFAULT: Final = 0xBADDAD
IOMMU_HWPT_INVALIDATE_DATA_SELFTEST: Final = 0xDEADBEEF
IOMMU_HWPT_INVALIDATE_DATA_SELFTEST_INVALID: Final = 0xDADBEEF
IOMMU_TEST_INVALIDATE_FLAG_ALL: Final = 1 << 0
IOMMU_VIOMMU_TYPE_SELFTEST: Final = 0xDEADBEEF
IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST: Final = 0xDEADBEEF
IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST_INVALID: Final = 0xDADBEEF
IOMMU_VEVENTQ_TYPE_SELFTEST: Final = 0xBEEFBEEF
IOMMU_HW_QUEUE_TYPE_SELFTEST: Final = 0xDEADBEEF
IOMMU_TEST_HW_QUEUE_MAX: Final = 2

iommu_test_hw_info: Final = CStruct("iommu_test_hw_info", [("flags", "u32"), ("test_reg", "u32")])
iommu_hwpt_selftest: Final = CStruct("iommu_hwpt_selftest", [("iotlb", "u32"), ("pagetable_type", "u32")])
iommu_hwpt_invalidate_selftest: Final = CStruct("iommu_hwpt_invalidate_selftest",
                                                [("flags", "u32"), ("iotlb_id", "u32")])
iommu_viommu_selftest: Final = CStruct("iommu_viommu_selftest", [
    ("in_data", "u32"), ("out_data", "u32"), ("out_mmap_offset", "u64"), ("out_mmap_length", "u64")])
iommu_viommu_invalidate_selftest: Final = CStruct("iommu_viommu_invalidate_selftest", [
    ("flags", "u32"), ("vdev_id", "u32"), ("cache_id", "u32")])
iommu_viommu_event_selftest: Final = CStruct("iommu_viommu_event_selftest", [("virt_id", "u32")])

TEST_CMD_UNION_OFFSET: Final = 16
iommu_test_cmd: Final = CStruct("iommu_test_cmd", [
    ("size", "u32"), ("op", "u32"), ("id", "u32"), ("__reserved", "u32"), ("union", "u64",
                                                                           6), ("last", "u32")])
"""The union is 48 bytes at offset 16 (its largest member is ``dirty``); each op's member layout is in
TEST_CMD_MEMBERS and is read at TEST_CMD_UNION_OFFSET."""

TEST_CMD_MEMBERS: Final = {
    "add_reserved": CStruct("add_reserved", [("start", "u64"), ("length", "u64")]),
    "mock_domain": CStruct("mock_domain", [("out_stdev_id", "u32"), ("out_hwpt_id", "u32"),
                                           ("out_idev_id", "u32")]),
    "mock_domain_flags": CStruct("mock_domain_flags", [
        ("out_stdev_id", "u32"), ("out_hwpt_id", "u32"), ("out_idev_id", "u32"), ("dev_flags", "u32")]),
    "mock_domain_replace": CStruct("mock_domain_replace", [("pt_id", "u32")]),
    "check_map": CStruct("check_map", [("iova", "u64"), ("length", "u64"), ("uptr", "u64")]),
    "check_refs": CStruct("check_refs", [("length", "u64"), ("uptr", "u64"), ("refs", "u32")]),
    "create_access": CStruct("create_access", [("out_access_fd", "u32"), ("flags", "u32")]),
    "destroy_access_pages": CStruct("destroy_access_pages", [("access_pages_id", "u32")]),
    "access_pages": CStruct("access_pages", [
        ("flags", "u32"), ("out_access_pages_id", "u32"), ("iova", "u64"), ("length",
                                                                            "u64"), ("uptr", "u64")]),
    "access_rw": CStruct("access_rw", [("iova", "u64"), ("length", "u64"), ("uptr", "u64"),
                                       ("flags", "u32")]),
    "memory_limit": CStruct("memory_limit", [("limit", "u32")]),
    "access_replace_ioas": CStruct("access_replace_ioas", [("ioas_id", "u32")]),
    "dirty": CStruct("dirty", [
        ("flags", "u32"), ("iova", "u64"), ("length", "u64"), ("page_size", "u64"), ("uptr", "u64"),
        ("out_nr_dirty", "u64")]),
    "check_iotlb": CStruct("check_iotlb", [("id", "u32"), ("iotlb", "u32")]),
    "trigger_iopf": CStruct("trigger_iopf", [
        ("dev_id", "u32"), ("pasid", "u32"), ("grpid", "u32"), ("perm", "u32"), ("addr", "u64")]),
    "check_dev_cache": CStruct("check_dev_cache", [("id", "u32"), ("cache", "u32")]),
    "trigger_vevent": CStruct("trigger_vevent", [("dev_id", "u32")]),
    "pasid_attach": CStruct("pasid_attach", [("pasid", "u32"), ("pt_id", "u32")]),
    "pasid_replace": CStruct("pasid_replace", [("pasid", "u32"), ("pt_id", "u32")]),
    "pasid_detach": CStruct("pasid_detach", [("pasid", "u32")]),
    "pasid_check": CStruct("pasid_check", [("pasid", "u32"), ("hwpt_id", "u32")]),
    "dmabuf_get": CStruct("dmabuf_get", [("length", "u32"), ("open_flags", "u32")]),
    "dmabuf_revoke": CStruct("dmabuf_revoke", [("dmabuf_fd", "s32"), ("revoked", "u32")]),
}

# ---------------------------------------------------------------------- VFIO type1 compatibility (vfio.h)
VFIO_TYPE: Final = ord(";")
VFIO_BASE: Final = 100
VFIO_API_VERSION: Final = 0
VFIO_TYPE1_IOMMU: Final = 1
VFIO_SPAPR_TCE_IOMMU: Final = 2
VFIO_TYPE1v2_IOMMU: Final = 3
VFIO_DMA_CC_IOMMU: Final = 4
VFIO_RESERVED_TYPE1_NESTING_IOMMU: Final = 6
VFIO_SPAPR_TCE_v2_IOMMU: Final = 7
VFIO_NOIOMMU_IOMMU: Final = 8
VFIO_UNMAP_ALL: Final = 9
VFIO_UPDATE_VADDR: Final = 10
VFIO_GET_API_VERSION: Final = _IO(VFIO_TYPE, VFIO_BASE + 0)
VFIO_CHECK_EXTENSION: Final = _IO(VFIO_TYPE, VFIO_BASE + 1)
VFIO_SET_IOMMU: Final = _IO(VFIO_TYPE, VFIO_BASE + 2)
VFIO_IOMMU_GET_INFO: Final = _IO(VFIO_TYPE, VFIO_BASE + 12)
VFIO_IOMMU_MAP_DMA: Final = _IO(VFIO_TYPE, VFIO_BASE + 13)
VFIO_IOMMU_UNMAP_DMA: Final = _IO(VFIO_TYPE, VFIO_BASE + 14)
VFIO_IOMMU_DIRTY_PAGES: Final = _IO(VFIO_TYPE, VFIO_BASE + 17)
VFIO_DMA_MAP_FLAG_READ: Final = 1 << 0
VFIO_DMA_MAP_FLAG_WRITE: Final = 1 << 1
VFIO_DMA_MAP_FLAG_VADDR: Final = 1 << 2
VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP: Final = 1 << 0
VFIO_DMA_UNMAP_FLAG_ALL: Final = 1 << 1
VFIO_DMA_UNMAP_FLAG_VADDR: Final = 1 << 2
VFIO_IOMMU_INFO_PGSIZES: Final = 1 << 0
VFIO_IOMMU_INFO_CAPS: Final = 1 << 1
VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE: Final = 1
VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION: Final = 2
VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL: Final = 3

vfio_iommu_type1_dma_map: Final = CStruct("vfio_iommu_type1_dma_map", [
    ("argsz", "u32"), ("flags", "u32"), ("vaddr", "u64"), ("iova", "u64"), ("size", "u64")])
vfio_iommu_type1_dma_unmap: Final = CStruct("vfio_iommu_type1_dma_unmap", [
    ("argsz", "u32"), ("flags", "u32"), ("iova", "u64"), ("size", "u64")])
vfio_iommu_type1_info: Final = CStruct("vfio_iommu_type1_info", [
    ("argsz", "u32"), ("flags", "u32"), ("iova_pgsizes", "u64"), ("cap_offset", "u32"), ("pad", "u32")])
vfio_info_cap_header: Final = CStruct("vfio_info_cap_header", [("id", "u16"), ("version", "u16"),
                                                               ("next", "u32")])
vfio_iommu_type1_info_cap_iova_range: Final = CStruct("vfio_iommu_type1_info_cap_iova_range", [
    ("id", "u16"), ("version", "u16"), ("next", "u32"), ("nr_iovas", "u32"), ("reserved", "u32")])
vfio_iova_range: Final = CStruct("vfio_iova_range", [("start", "u64"), ("end", "u64")])
vfio_iommu_type1_info_dma_avail: Final = CStruct("vfio_iommu_type1_info_dma_avail", [
    ("id", "u16"), ("version", "u16"), ("next", "u32"), ("avail", "u32")])


# ---------------------------------------------------------------------- the dispatch table (main.c)
@dataclass(frozen=True)
class IoctlOp:
    """One iommufd_ioctl_ops[] entry: the struct and the member whose end is the minimum size."""

    cmd: int
    name: str
    struct: CStruct
    last: str

    @property
    def min_size(self) -> int:
        return self.struct.offsetofend(self.last)


IOCTL_OPS: Final[tuple[IoctlOp, ...]] = (
    # main.c iommufd_ioctl_ops[], in the source's order (the table is indexed by _IOC_NR)
    IoctlOp(IOMMU_DESTROY, "destroy", iommu_destroy, "id"),
    IoctlOp(IOMMU_FAULT_QUEUE_ALLOC, "fault_queue_alloc", iommu_fault_alloc, "out_fault_fd"),
    IoctlOp(IOMMU_GET_HW_INFO, "get_hw_info", iommu_hw_info, "__reserved"),
    IoctlOp(IOMMU_HW_QUEUE_ALLOC, "hw_queue_alloc", iommu_hw_queue_alloc, "length"),
    IoctlOp(IOMMU_HWPT_ALLOC, "hwpt_alloc", iommu_hwpt_alloc, "__reserved"),
    IoctlOp(IOMMU_HWPT_GET_DIRTY_BITMAP, "hwpt_get_dirty_bitmap", iommu_hwpt_get_dirty_bitmap, "data"),
    IoctlOp(IOMMU_HWPT_INVALIDATE, "hwpt_invalidate", iommu_hwpt_invalidate, "__reserved"),
    IoctlOp(IOMMU_HWPT_SET_DIRTY_TRACKING, "hwpt_set_dirty_tracking", iommu_hwpt_set_dirty_tracking,
            "__reserved"),
    IoctlOp(IOMMU_IOAS_ALLOC, "ioas_alloc", iommu_ioas_alloc, "out_ioas_id"),
    IoctlOp(IOMMU_IOAS_ALLOW_IOVAS, "ioas_allow_iovas", iommu_ioas_allow_iovas, "allowed_iovas"),
    IoctlOp(IOMMU_IOAS_CHANGE_PROCESS, "ioas_change_process", iommu_ioas_change_process, "__reserved"),
    IoctlOp(IOMMU_IOAS_COPY, "ioas_copy", iommu_ioas_copy, "src_iova"),
    IoctlOp(IOMMU_IOAS_IOVA_RANGES, "ioas_iova_ranges", iommu_ioas_iova_ranges, "out_iova_alignment"),
    IoctlOp(IOMMU_IOAS_MAP, "ioas_map", iommu_ioas_map, "iova"),
    IoctlOp(IOMMU_IOAS_MAP_FILE, "ioas_map_file", iommu_ioas_map_file, "iova"),
    IoctlOp(IOMMU_IOAS_UNMAP, "ioas_unmap", iommu_ioas_unmap, "length"),
    IoctlOp(IOMMU_OPTION, "option", iommu_option, "val64"),
    IoctlOp(IOMMU_VDEVICE_ALLOC, "vdevice_alloc", iommu_vdevice_alloc, "virt_id"),
    IoctlOp(IOMMU_VEVENTQ_ALLOC, "veventq_alloc", iommu_veventq_alloc, "out_veventq_fd"),
    IoctlOp(IOMMU_VFIO_IOAS, "vfio_ioas", iommu_vfio_ioas, "__reserved"),
    IoctlOp(IOMMU_VIOMMU_ALLOC, "viommu_alloc", iommu_viommu_alloc, "out_viommu_id"),
    IoctlOp(IOMMU_TEST_CMD, "test_cmd", iommu_test_cmd, "last"),
)

IOCTL_TABLE_SIZE: Final = IOMMUFD_CMD_TEST - IOMMUFD_CMD_BASE + 1
"""ARRAY_SIZE(iommufd_ioctl_ops) with CONFIG_IOMMUFD_TEST: up to IOMMU_TEST_CMD's slot."""

OPS_BY_NR: Final = {ioc_nr(op.cmd): op for op in IOCTL_OPS}
OPS_BY_NAME: Final = {op.name: op for op in IOCTL_OPS}
