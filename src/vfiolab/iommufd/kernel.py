"""/dev/iommu on a real Linux kernel: :class:`KernelIommufd` has the model's :class:`~vfiolab.iommufd.Iommufd`
API (same method names, arguments, return values, ``UapiError(errno)`` on failure) implemented with real
ioctls, and :class:`KernelSelftestOps` the model's ``SelftestOps`` through ``IOMMU_TEST_CMD``, so the
CONFIG_IOMMUFD_TEST mock devices, domains, accesses, dirty bits, IOPF and vEVENT triggers are reachable.

The argument structs are ``ctypes`` structures written afresh from ``include/uapi/linux/iommufd.h`` and
``drivers/iommu/iommufd/iommufd_test.h`` (Linux 7.2), so ctypes lays them out by the platform's C rules;
tests/unit/test_iommufd_kernel_structs.py holds them against the model's ``uapi`` layouts and the real
header.  Every struct is passed from the end of a page followed by a PROT_NONE page: the struct's bytes are
all the user memory the kernel can reach, as with the model's ``ioctl(cmd, bytes)``.

Standard library only (no numpy, nothing of the model): it imports in a minimal guest.  User memory for
pointers comes from :class:`~vfiolab.iommufd.kernel_mm.RealProcess`.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Self

from vfiolab.errors import UapiError
from vfiolab.iommufd.kernel_mm import (
    MAP_ANONYMOUS,
    MAP_PRIVATE,
    MAP_SHARED,
    PAGE_SIZE,
    PROT_NONE,
    PROT_READ,
    PROT_WRITE,
    RealProcess,
    libc,
    raise_errno,
)
from vfiolab.iommufd.results import FaultQueue, HwInfo, IovaRanges, MockDomainOut, UapiErrorWithOutput

U8, U16, U32, S32, U64 = ctypes.c_uint8, ctypes.c_uint16, ctypes.c_uint32, ctypes.c_int32, ctypes.c_uint64
CType = type[ctypes.Structure] | type[ctypes.Union]


def _struct(name: str, fields: list[tuple[str, Any]], anonymous: tuple[str, ...] = (),
            base: type = ctypes.Structure) -> Any:
    """A ctypes structure (or union) named like the C one; ctypes computes offsets, padding and size."""
    body: dict[str, Any] = {"_fields_": fields}
    if anonymous:
        body["_anonymous_"] = anonymous
    return type(name, (base,), body)


# ---------------------------------------------------------------------- include/uapi/linux/iommufd.h
_IOMMUFD_TYPE: Final = ord(";")
_HW_INFO_TYPE = _struct("hw_info_type", [("in_data_type", U32), ("out_data_type", U32)], base=ctypes.Union)

STRUCTS: Final[dict[str, Any]] = {
    "iommu_destroy": _struct("iommu_destroy", [("size", U32), ("id", U32)]),
    "iommu_ioas_alloc": _struct("iommu_ioas_alloc", [("size", U32), ("flags", U32), ("out_ioas_id", U32)]),
    "iommu_iova_range": _struct("iommu_iova_range", [("start", U64), ("last", U64)]),
    "iommu_ioas_iova_ranges": _struct("iommu_ioas_iova_ranges", [
        ("size", U32), ("ioas_id", U32), ("num_iovas", U32), ("__reserved", U32), ("allowed_iovas", U64),
        ("out_iova_alignment", U64)]),
    "iommu_ioas_allow_iovas": _struct("iommu_ioas_allow_iovas", [
        ("size", U32), ("ioas_id", U32), ("num_iovas", U32), ("__reserved", U32), ("allowed_iovas", U64)]),
    "iommu_ioas_map": _struct("iommu_ioas_map", [
        ("size", U32), ("flags", U32), ("ioas_id", U32), ("__reserved", U32), ("user_va", U64),
        ("length", U64), ("iova", U64)]),
    "iommu_ioas_map_file": _struct("iommu_ioas_map_file", [
        ("size", U32), ("flags", U32), ("ioas_id", U32), ("fd", S32), ("start", U64), ("length", U64),
        ("iova", U64)]),
    "iommu_ioas_copy": _struct("iommu_ioas_copy", [
        ("size", U32), ("flags", U32), ("dst_ioas_id", U32), ("src_ioas_id", U32), ("length", U64),
        ("dst_iova", U64), ("src_iova", U64)]),
    "iommu_ioas_unmap": _struct("iommu_ioas_unmap", [("size", U32), ("ioas_id", U32), ("iova", U64),
                                                     ("length", U64)]),
    "iommu_option": _struct("iommu_option", [
        ("size", U32), ("option_id", U32), ("op", U16), ("__reserved", U16), ("object_id", U32),
        ("val64", U64)]),
    "iommu_vfio_ioas": _struct("iommu_vfio_ioas", [("size", U32), ("ioas_id", U32), ("op", U16),
                                                   ("__reserved", U16)]),
    "iommu_hwpt_alloc": _struct("iommu_hwpt_alloc", [
        ("size", U32), ("flags", U32), ("dev_id", U32), ("pt_id", U32), ("out_hwpt_id", U32),
        ("__reserved", U32), ("data_type", U32), ("data_len", U32), ("data_uptr", U64), ("fault_id", U32),
        ("__reserved2", U32)]),
    "iommu_hw_info": _struct("iommu_hw_info", [
        ("size", U32), ("flags", U32), ("dev_id", U32), ("data_len", U32), ("data_uptr", U64),
        ("_type", _HW_INFO_TYPE), ("out_max_pasid_log2", U8), ("__reserved", U8 * 3),
        ("out_capabilities", U64)], anonymous=("_type",)),
    "iommu_hwpt_set_dirty_tracking": _struct("iommu_hwpt_set_dirty_tracking", [
        ("size", U32), ("flags", U32), ("hwpt_id", U32), ("__reserved", U32)]),
    "iommu_hwpt_get_dirty_bitmap": _struct("iommu_hwpt_get_dirty_bitmap", [
        ("size", U32), ("hwpt_id", U32), ("flags", U32), ("__reserved", U32), ("iova", U64), ("length", U64),
        ("page_size", U64), ("data", U64)]),
    "iommu_hwpt_invalidate": _struct("iommu_hwpt_invalidate", [
        ("size", U32), ("hwpt_id", U32), ("data_uptr", U64), ("data_type", U32), ("entry_len", U32),
        ("entry_num", U32), ("__reserved", U32)]),
    "iommu_hwpt_pgfault": _struct("iommu_hwpt_pgfault", [
        ("flags", U32), ("dev_id", U32), ("pasid", U32), ("grpid", U32), ("perm", U32), ("__reserved", U32),
        ("addr", U64), ("length", U32), ("cookie", U32)]),
    "iommu_hwpt_page_response": _struct("iommu_hwpt_page_response", [("cookie", U32), ("code", U32)]),
    "iommu_fault_alloc": _struct("iommu_fault_alloc", [("size", U32), ("flags", U32), ("out_fault_id", U32),
                                                       ("out_fault_fd", U32)]),
    "iommu_viommu_alloc": _struct("iommu_viommu_alloc", [
        ("size", U32), ("flags", U32), ("type", U32), ("dev_id", U32), ("hwpt_id", U32),
        ("out_viommu_id", U32), ("data_len", U32), ("__reserved", U32), ("data_uptr", U64)]),
    "iommu_vdevice_alloc": _struct("iommu_vdevice_alloc", [
        ("size", U32), ("viommu_id", U32), ("dev_id", U32), ("out_vdevice_id", U32), ("virt_id", U64)]),
    "iommu_ioas_change_process": _struct("iommu_ioas_change_process", [("size", U32), ("__reserved", U32)]),
    "iommufd_vevent_header": _struct("iommufd_vevent_header", [("flags", U32), ("sequence", U32)]),
    "iommu_veventq_alloc": _struct("iommu_veventq_alloc", [
        ("size", U32), ("flags", U32), ("viommu_id", U32), ("type", U32), ("veventq_depth", U32),
        ("out_veventq_id", U32), ("out_veventq_fd", U32), ("__reserved", U32)]),
    "iommu_hw_queue_alloc": _struct("iommu_hw_queue_alloc", [
        ("size", U32), ("flags", U32), ("viommu_id", U32), ("type", U32), ("index", U32),
        ("out_hw_queue_id", U32), ("nesting_parent_iova", U64), ("length", U64)]),
    # include/uapi/linux/vfio.h (the type1 compatibility iommufd serves)
    "vfio_iommu_type1_dma_map": _struct("vfio_iommu_type1_dma_map", [
        ("argsz", U32), ("flags", U32), ("vaddr", U64), ("iova", U64), ("size", U64)]),
    "vfio_iommu_type1_dma_unmap": _struct("vfio_iommu_type1_dma_unmap", [
        ("argsz", U32), ("flags", U32), ("iova", U64), ("size", U64)]),
}

# ---------------------------------------------------------------------- drivers/iommu/iommufd/iommufd_test.h
TEST_MEMBERS: Final[dict[str, Any]] = {
    "add_reserved": _struct("add_reserved", [("start", U64), ("length", U64)]),
    "mock_domain": _struct("mock_domain", [
        ("out_stdev_id", U32), ("out_hwpt_id", U32), ("out_idev_id", U32)]),
    "mock_domain_flags": _struct("mock_domain_flags", [
        ("out_stdev_id", U32), ("out_hwpt_id", U32), ("out_idev_id", U32), ("dev_flags", U32)]),
    "mock_domain_replace": _struct("mock_domain_replace", [("pt_id", U32)]),
    "check_map": _struct("check_map", [("iova", U64), ("length", U64), ("uptr", U64)]),
    "check_refs": _struct("check_refs", [("length", U64), ("uptr", U64), ("refs", U32)]),
    "create_access": _struct("create_access", [("out_access_fd", U32), ("flags", U32)]),
    "destroy_access_pages": _struct("destroy_access_pages", [("access_pages_id", U32)]),
    "access_pages": _struct("access_pages", [
        ("flags", U32), ("out_access_pages_id", U32), ("iova", U64), ("length", U64), ("uptr", U64)]),
    "access_rw": _struct("access_rw", [("iova", U64), ("length", U64), ("uptr", U64), ("flags", U32)]),
    "memory_limit": _struct("memory_limit", [("limit", U32)]),
    "access_replace_ioas": _struct("access_replace_ioas", [("ioas_id", U32)]),
    "dirty": _struct("dirty", [("flags", U32), ("iova", U64), ("length", U64), ("page_size", U64),
                               ("uptr", U64), ("out_nr_dirty", U64)]),
    "check_iotlb": _struct("check_iotlb", [("id", U32), ("iotlb", U32)]),
    "trigger_iopf": _struct("trigger_iopf", [("dev_id", U32), ("pasid", U32), ("grpid", U32), ("perm", U32),
                                             ("addr", U64)]),
    "check_dev_cache": _struct("check_dev_cache", [("id", U32), ("cache", U32)]),
    "trigger_vevent": _struct("trigger_vevent", [("dev_id", U32)]),
    "pasid_attach": _struct("pasid_attach", [("pasid", U32), ("pt_id", U32)]),
    "pasid_replace": _struct("pasid_replace", [("pasid", U32), ("pt_id", U32)]),
    "pasid_detach": _struct("pasid_detach", [("pasid", U32)]),
    "pasid_check": _struct("pasid_check", [("pasid", U32), ("hwpt_id", U32)]),
    "dmabuf_get": _struct("dmabuf_get", [("length", U32), ("open_flags", U32)]),
    "dmabuf_revoke": _struct("dmabuf_revoke", [("dmabuf_fd", S32), ("revoked", U32)]),
}
TEST_OPS: Final[tuple[str, ...]] = (
    # enum IOMMU_TEST_OP_*, from 1, and the union member each op uses
    "add_reserved", "mock_domain", "check_map", "check_refs", "create_access", "destroy_access_pages",
    "access_pages", "access_rw", "memory_limit", "mock_domain_replace", "access_replace_ioas",
    "mock_domain_flags", "dirty", "check_iotlb", "trigger_iopf", "check_dev_cache", "trigger_vevent",
    "pasid_attach", "pasid_replace", "pasid_detach", "pasid_check", "dmabuf_get", "dmabuf_revoke")
TEST_OP: Final = {member: op for op, member in enumerate(TEST_OPS, 1)}
"""Union member name -> IOMMU_TEST_OP_* number."""
_TEST_UNION = _struct("iommu_test_cmd_union", list(TEST_MEMBERS.items()), base=ctypes.Union)
STRUCTS["iommu_test_cmd"] = _struct("iommu_test_cmd", [
    ("size", U32), ("op", U32), ("id", U32), ("__reserved", U32), ("u", _TEST_UNION), ("last", U32)])


def _io(nr: int) -> int:
    """_IO(IOMMUFD_TYPE, nr) (include/uapi/asm-generic/ioctl.h: no direction, no size)."""
    return (_IOMMUFD_TYPE << 8) | nr


@dataclass(frozen=True)
class IoctlSpec:
    """One iommufd ioctl: its number and argument struct."""

    cmd: int
    struct: str


IOCTLS: Final[dict[str, IoctlSpec]] = {
    # name (the model's method) -> (_IO(';', IOMMUFD_CMD_*), struct); numbers from enum of iommufd.h
    "destroy": IoctlSpec(_io(0x80), "iommu_destroy"),
    "ioas_alloc": IoctlSpec(_io(0x81), "iommu_ioas_alloc"),
    "ioas_allow_iovas": IoctlSpec(_io(0x82), "iommu_ioas_allow_iovas"),
    "ioas_copy": IoctlSpec(_io(0x83), "iommu_ioas_copy"),
    "ioas_iova_ranges": IoctlSpec(_io(0x84), "iommu_ioas_iova_ranges"),
    "ioas_map": IoctlSpec(_io(0x85), "iommu_ioas_map"),
    "ioas_unmap": IoctlSpec(_io(0x86), "iommu_ioas_unmap"),
    "option": IoctlSpec(_io(0x87), "iommu_option"),
    "vfio_ioas": IoctlSpec(_io(0x88), "iommu_vfio_ioas"),
    "hwpt_alloc": IoctlSpec(_io(0x89), "iommu_hwpt_alloc"),
    "get_hw_info": IoctlSpec(_io(0x8A), "iommu_hw_info"),
    "hwpt_set_dirty_tracking": IoctlSpec(_io(0x8B), "iommu_hwpt_set_dirty_tracking"),
    "hwpt_get_dirty_bitmap": IoctlSpec(_io(0x8C), "iommu_hwpt_get_dirty_bitmap"),
    "hwpt_invalidate": IoctlSpec(_io(0x8D), "iommu_hwpt_invalidate"),
    "fault_queue_alloc": IoctlSpec(_io(0x8E), "iommu_fault_alloc"),
    "ioas_map_file": IoctlSpec(_io(0x8F), "iommu_ioas_map_file"),
    "viommu_alloc": IoctlSpec(_io(0x90), "iommu_viommu_alloc"),
    "vdevice_alloc": IoctlSpec(_io(0x91), "iommu_vdevice_alloc"),
    "ioas_change_process": IoctlSpec(_io(0x92), "iommu_ioas_change_process"),
    "veventq_alloc": IoctlSpec(_io(0x93), "iommu_veventq_alloc"),
    "hw_queue_alloc": IoctlSpec(_io(0x94), "iommu_hw_queue_alloc"),
    "test_cmd": IoctlSpec(_io(0x80 + 32), "iommu_test_cmd"),
}
IOMMU_TEST_CMD: Final = IOCTLS["test_cmd"].cmd
# include/uapi/linux/vfio.h: _IO(VFIO_TYPE = ';', VFIO_BASE = 100 + n)
VFIO_GET_API_VERSION: Final = _io(100)
VFIO_CHECK_EXTENSION: Final = _io(101)
VFIO_SET_IOMMU: Final = _io(102)
VFIO_IOMMU_MAP_DMA: Final = _io(113)
VFIO_IOMMU_UNMAP_DMA: Final = _io(114)
IOMMU_IOAS_MAP_WRITEABLE: Final = 1 << 1
IOMMU_IOAS_MAP_READABLE: Final = 1 << 2
VFIO_DMA_MAP_FLAG_READ: Final = 1 << 0
VFIO_DMA_MAP_FLAG_WRITE: Final = 1 << 1
DMA_MAP_SIZE: Final = ctypes.sizeof(STRUCTS["vfio_iommu_type1_dma_map"])
DMA_UNMAP_SIZE: Final = ctypes.sizeof(STRUCTS["vfio_iommu_type1_dma_unmap"])
_RW: Final = IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE
_ALIASES: Final = {"reserved": "__reserved", "reserved2": "__reserved2"}
"""The model's keyword names for the ``__reserved`` members."""


# ---------------------------------------------------------------------- packing helpers
_SCALARS: dict[Any, dict[str, tuple[int, Any]]] = {}


def scalar_fields(ctype: Any) -> dict[str, tuple[int, Any]]:
    """Every scalar member of a ctypes struct, anonymous unions flattened: name -> (offset, ctype).
    Arrays and named nested structs are left out (the model's ``CStruct.unpack`` leaves arrays out too)."""
    cached = _SCALARS.get(ctype)
    if cached is not None:
        return cached
    out: dict[str, tuple[int, Any]] = {}
    anon = getattr(ctype, "_anonymous_", ())
    for name, ft in ctype._fields_:
        off = getattr(ctype, name).offset
        if name in anon:
            for sub, (o, t) in scalar_fields(ft).items():
                out[sub] = (off + o, t)
        elif issubclass(ft, (ctypes._SimpleCData,)):  # type: ignore[attr-defined]
            out[name] = (off, ft)
    _SCALARS[ctype] = out
    return out


def _limits(t: Any) -> tuple[int, int]:
    bits = 8 * ctypes.sizeof(t)
    signed = t(-1).value == -1
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)


def put(obj: Any, name: str, value: int) -> None:
    """Store one scalar member, refusing values its C type cannot hold (ctypes would truncate silently):
    the model's ``call()`` answers those with EINVAL, and so does this backend."""
    name = _ALIASES.get(name, name)
    fields = scalar_fields(type(obj))
    if name == "data_type" and "in_data_type" in fields:  # the model's name for the hw_info union
        name = "in_data_type"
    if name not in fields:
        raise UapiError(errno.EINVAL, f"struct {type(obj).__name__} has no member {name!r}")
    lo, hi = _limits(fields[name][1])
    if not isinstance(value, int) or not lo <= value <= hi:
        raise UapiError(errno.EINVAL, f"{type(obj).__name__}.{name} = {value!r} does not fit")
    setattr(obj, name, value)


def unpack(obj: Any) -> dict[str, int]:
    """The scalar members as the model's ``CStruct.unpack`` gives them (hw_info's union also as
    ``data_type``)."""
    out = {name: int(getattr(obj, name)) for name in scalar_fields(type(obj))}
    if "in_data_type" in out:
        out["data_type"] = out["in_data_type"]
    return out


class _Scratch:
    """Argument memory for ioctls: a struct sits at the end of its pages with a PROT_NONE page after it."""

    def __init__(self, proc: RealProcess) -> None:
        self.proc = proc
        self.base = 0
        self.pages = 0

    def place(self, data: bytes) -> int:
        """Copy ``data`` so that its last byte ends the accessible memory; its address."""
        need = max(1, -(-len(data) // PAGE_SIZE))
        if need > self.pages:
            self.release()
            self.base = self.proc.mmap((need + 1) * PAGE_SIZE, PROT_READ | PROT_WRITE,
                                       MAP_PRIVATE | MAP_ANONYMOUS)
            self.proc.mprotect(self.base + need * PAGE_SIZE, PAGE_SIZE, PROT_NONE)
            self.pages = need
        addr = self.base + self.pages * PAGE_SIZE - len(data)
        ctypes.memmove(addr, data, len(data))
        return addr

    def release(self) -> None:
        if self.pages:
            self.proc.munmap(self.base, (self.pages + 1) * PAGE_SIZE)
            self.base = self.pages = 0


# ---------------------------------------------------------------------- the fd
class KernelIommufd:
    """An open /dev/iommu on this kernel, with the model's Iommufd methods.  ``process`` is the memory
    that user pointers point into (this process)."""

    def __init__(self, path: str = "/dev/iommu", process: RealProcess | None = None) -> None:
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as e:
            raise UapiError(e.errno or errno.ENODEV, f"open {path}: {e.strerror}") from None
        self.path = path
        self.process = process or RealProcess()
        self.closed = False
        self._scratch = _Scratch(self.process)
        self._test: KernelSelftestOps | None = None

    # ------------------------------------------------------------------ raw ioctl
    def _ioctl_ptr(self, cmd: int, ptr: int) -> int:
        if self.closed:
            raise UapiError(errno.EBADF, "iommufd is closed")
        rc = libc().ioctl(self.fd, cmd, ptr or None)
        if rc < 0:
            raise_errno(f"ioctl {cmd:#x}")
        return int(rc)

    def _ioctl_buf(self, cmd: int, data: bytes) -> tuple[int, bytes, UapiError | None]:
        """Run ``cmd`` on a copy of ``data``: (rc, the bytes as written back, the error if it failed)."""
        addr = self._scratch.place(data)
        try:
            rc, err = self._ioctl_ptr(cmd, addr), None
        except UapiError as e:
            rc, err = -1, e
        return rc, ctypes.string_at(addr, len(data)), err

    def ioctl(self, cmd: int, arg: bytes | bytearray | int | None) -> bytes | int:
        """ioctl(2), as the model's: bytes/bytearray are the struct itself (all the user memory the kernel may
        touch; a bytearray is updated in place) and the struct as written back is returned; an int is passed
        as is (a pointer, or the value VFIO_SET_IOMMU/VFIO_CHECK_EXTENSION take) and the return value comes
        back; None is NULL."""
        if isinstance(arg, (bytes, bytearray)):
            _, out, err = self._ioctl_buf(cmd, bytes(arg))
            if isinstance(arg, bytearray):
                arg[:] = out
            if err is not None:
                raise err
            return out
        return self._ioctl_ptr(cmd, arg or 0)

    def ioctl_rc(self, cmd: int, arg: bytearray) -> int:
        """ioctl(2) on a struct given as a bytearray (updated in place), returning the ioctl's value."""
        rc, out, err = self._ioctl_buf(cmd, bytes(arg))
        arg[:] = out
        if err is not None:
            raise err
        return rc

    def call(self, name: str, fields: Mapping[str, int]) -> dict[str, int]:
        """Run ioctl ``name`` on a struct of exactly ``sizeof`` bytes built from ``fields``; the members as
        written back.  A failure after the kernel wrote the struct raises :class:`UapiErrorWithOutput`."""
        spec = IOCTLS[name]
        st = STRUCTS[spec.struct]
        obj = st()
        for key, value in fields.items():
            put(obj, key, value)
        obj.size = ctypes.sizeof(st)
        raw = bytes(obj)
        _, out, err = self._ioctl_buf(spec.cmd, raw)
        result = unpack(st.from_buffer_copy(out))
        if err is not None:
            if out != raw:
                raise UapiErrorWithOutput(err, result) from None
            raise err
        return result

    # ------------------------------------------------------------------ file
    def close(self) -> None:
        """close(2) of the fd (the kernel releases the context once no access or event fd holds it)."""
        if not self.closed:
            self.closed = True
            os.close(self.fd)
            self._scratch.release()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def mmap(self, length: int, offset: int, prot: int = PROT_READ | PROT_WRITE,
             flags: int = MAP_SHARED) -> int:
        """mmap(2) of this fd (a driver's region, e.g. a vIOMMU's page): the mapped address."""
        if self.closed:
            raise UapiError(errno.EBADF, "iommufd is closed")
        return self.process.mmap(length, prot, flags, fd=self.fd, offset=offset)

    def munmap(self, addr: int, length: int) -> None:
        """munmap(2) of a mapping made by :meth:`mmap`."""
        self.process.munmap(addr, length)

    @property
    def test(self) -> KernelSelftestOps:
        """The IOMMU_TEST_OP_* methods (ENOTTY from the kernel without CONFIG_IOMMUFD_TEST)."""
        if self._test is None:
            self._test = KernelSelftestOps(self)
        return self._test

    # ------------------------------------------------------------------ one method per ioctl (the model's API)
    def destroy(self, id: int) -> None:
        """IOMMU_DESTROY."""
        self.call("destroy", {"id": id})

    def ioas_alloc(self, flags: int = 0) -> int:
        """IOMMU_IOAS_ALLOC: the new IOAS ID."""
        return self.call("ioas_alloc", {"flags": flags})["out_ioas_id"]

    def ioas_iova_ranges(self, ioas_id: int, num_iovas: int, allowed_iovas: int,
                         reserved: int = 0) -> IovaRanges:
        """IOMMU_IOAS_IOVA_RANGES: ranges are written at ``allowed_iovas``."""
        out = self.call("ioas_iova_ranges", {"ioas_id": ioas_id, "num_iovas": num_iovas,
                                                 "allowed_iovas": allowed_iovas, "reserved": reserved})
        return IovaRanges(out["num_iovas"], out["out_iova_alignment"])

    def ioas_allow_iovas(self, ioas_id: int, num_iovas: int, allowed_iovas: int, reserved: int = 0) -> None:
        """IOMMU_IOAS_ALLOW_IOVAS: ``num_iovas`` {start, last} pairs at ``allowed_iovas``."""
        self.call("ioas_allow_iovas", {"ioas_id": ioas_id, "num_iovas": num_iovas,
                                       "allowed_iovas": allowed_iovas,
                                           "reserved": reserved})

    def ioas_map(self, ioas_id: int, user_va: int, length: int, iova: int = 0, flags: int = _RW,
                 reserved: int = 0) -> int:
        """IOMMU_IOAS_MAP: the IOVA."""
        return self.call("ioas_map", {"ioas_id": ioas_id, "user_va": user_va, "length": length, "iova": iova,
                                          "flags": flags, "reserved": reserved})["iova"]

    def ioas_map_file(self, ioas_id: int, fd: int, start: int, length: int, iova: int = 0,
                      flags: int = _RW) -> int:
        """IOMMU_IOAS_MAP_FILE: the IOVA."""
        return self.call("ioas_map_file", {"ioas_id": ioas_id, "fd": fd, "start": start, "length": length,
                                           "iova": iova,
                                               "flags": flags})["iova"]

    def ioas_copy(self, dst_ioas_id: int, src_ioas_id: int, length: int, src_iova: int, dst_iova: int = 0,
                  flags: int = _RW) -> int:
        """IOMMU_IOAS_COPY: the destination IOVA."""
        return self.call("ioas_copy", {"dst_ioas_id": dst_ioas_id, "src_ioas_id": src_ioas_id,
                                       "length": length,
                                           "src_iova": src_iova, "dst_iova": dst_iova, "flags": flags})["dst_iova"]

    def ioas_unmap(self, ioas_id: int, iova: int, length: int) -> int:
        """IOMMU_IOAS_UNMAP: bytes unmapped."""
        return self.call("ioas_unmap", {"ioas_id": ioas_id, "iova": iova, "length": length})["length"]

    def ioas_change_process(self, reserved: int = 0) -> None:
        """IOMMU_IOAS_CHANGE_PROCESS."""
        self.call("ioas_change_process", {"reserved": reserved})

    def option(self, option_id: int, op: int, object_id: int = 0, val64: int = 0, reserved: int = 0) -> int:
        """IOMMU_OPTION: ``val64`` as written back."""
        return self.call("option", {"option_id": option_id, "op": op, "object_id": object_id, "val64": val64,
                                        "reserved": reserved})["val64"]

    def vfio_ioas(self, op: int, ioas_id: int = 0, reserved: int = 0) -> int:
        """IOMMU_VFIO_IOAS: the compat IOAS ID (GET)."""
        return self.call("vfio_ioas", {"op": op, "ioas_id": ioas_id, "reserved": reserved})["ioas_id"]

    def hwpt_alloc(self, dev_id: int, pt_id: int, flags: int = 0, data_type: int = 0, data_len: int = 0,
                   data_uptr: int = 0, fault_id: int = 0, reserved: int = 0, reserved2: int = 0) -> int:
        """IOMMU_HWPT_ALLOC: the new HWPT ID."""
        return self.call("hwpt_alloc", {
            "dev_id": dev_id, "pt_id": pt_id, "flags": flags, "data_type": data_type, "data_len": data_len,
            "data_uptr": data_uptr, "fault_id": fault_id, "reserved": reserved, "reserved2": reserved2})["out_hwpt_id"]

    def get_hw_info(self, dev_id: int, data_len: int = 0, data_uptr: int = 0, in_data_type: int = 0,
                    flags: int = 0) -> HwInfo:
        """IOMMU_GET_HW_INFO: driver data is written at ``data_uptr``."""
        out = self.call("get_hw_info", {"dev_id": dev_id, "data_len": data_len, "data_uptr": data_uptr,
                                            "in_data_type": in_data_type, "flags": flags})
        return HwInfo(out["data_len"], out["out_data_type"], out["out_max_pasid_log2"],
                      out["out_capabilities"])

    def hwpt_set_dirty_tracking(self, hwpt_id: int, flags: int, reserved: int = 0) -> None:
        """IOMMU_HWPT_SET_DIRTY_TRACKING."""
        self.call("hwpt_set_dirty_tracking", {"hwpt_id": hwpt_id, "flags": flags, "reserved": reserved})

    def hwpt_get_dirty_bitmap(self, hwpt_id: int, iova: int, length: int, page_size: int, data: int,
                              flags: int = 0, reserved: int = 0) -> None:
        """IOMMU_HWPT_GET_DIRTY_BITMAP: bits are ORed into the bitmap at ``data``."""
        self.call("hwpt_get_dirty_bitmap", {"hwpt_id": hwpt_id, "iova": iova, "length": length,
                                            "page_size": page_size,
                                                "data": data, "flags": flags, "reserved": reserved})

    def hwpt_invalidate(self, hwpt_id: int, data_uptr: int, data_type: int, entry_len: int, entry_num: int,
                        reserved: int = 0) -> int:
        """IOMMU_HWPT_INVALIDATE: entries handled (also on failure, in ``UapiErrorWithOutput.out``)."""
        return self.call("hwpt_invalidate", {"hwpt_id": hwpt_id, "data_uptr": data_uptr,
                                             "data_type": data_type,
                                                 "entry_len": entry_len, "entry_num": entry_num,
                                                 "reserved": reserved})["entry_num"]

    def fault_queue_alloc(self, flags: int = 0) -> FaultQueue:
        """IOMMU_FAULT_QUEUE_ALLOC."""
        out = self.call("fault_queue_alloc", {"flags": flags})
        return FaultQueue(out["out_fault_id"], out["out_fault_fd"])

    def viommu_alloc(self, dev_id: int, hwpt_id: int, type: int, data_uptr: int = 0, data_len: int = 0,
                     flags: int = 0) -> int:
        """IOMMU_VIOMMU_ALLOC: the new vIOMMU ID."""
        return self.call("viommu_alloc", {"dev_id": dev_id, "hwpt_id": hwpt_id, "type": type,
                                          "data_uptr": data_uptr,
                                              "data_len": data_len, "flags": flags})["out_viommu_id"]

    def vdevice_alloc(self, viommu_id: int, dev_id: int, virt_id: int) -> int:
        """IOMMU_VDEVICE_ALLOC: the new vDEVICE ID."""
        return self.call("vdevice_alloc", {"viommu_id": viommu_id, "dev_id": dev_id,
                                               "virt_id": virt_id})["out_vdevice_id"]

    def veventq_alloc(self, viommu_id: int, type: int, veventq_depth: int, flags: int = 0,
                      reserved: int = 0) -> tuple[int, int]:
        """IOMMU_VEVENTQ_ALLOC: (ID, fd)."""
        out = self.call("veventq_alloc", {"viommu_id": viommu_id, "type": type,
                                          "veventq_depth": veventq_depth,
                                              "flags": flags, "reserved": reserved})
        return out["out_veventq_id"], out["out_veventq_fd"]

    def hw_queue_alloc(self, viommu_id: int, type: int, index: int, nesting_parent_iova: int, length: int,
                       flags: int = 0) -> int:
        """IOMMU_HW_QUEUE_ALLOC: the new HW queue ID."""
        return self.call("hw_queue_alloc", {"viommu_id": viommu_id, "type": type, "index": index,
                                                "nesting_parent_iova": nesting_parent_iova, "length": length,
                                                "flags": flags})["out_hw_queue_id"]

    # ------------------------------------------------------------------ VFIO container compatibility
    def vfio_get_api_version(self) -> int:
        """VFIO_GET_API_VERSION."""
        return self._ioctl_ptr(VFIO_GET_API_VERSION, 0)

    def vfio_check_extension(self, extension: int) -> int:
        """VFIO_CHECK_EXTENSION."""
        return self._ioctl_ptr(VFIO_CHECK_EXTENSION, extension)

    def vfio_set_iommu(self, type: int) -> None:
        """VFIO_SET_IOMMU."""
        self._ioctl_ptr(VFIO_SET_IOMMU, type)

    def vfio_iommu_map_dma(self, vaddr: int, iova: int, size: int,
                           flags: int = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
                           argsz: int = DMA_MAP_SIZE) -> None:
        """VFIO_IOMMU_MAP_DMA."""
        st = STRUCTS["vfio_iommu_type1_dma_map"]
        obj = st()
        for k, v in {"flags": flags, "vaddr": vaddr, "iova": iova, "size": size}.items():
            put(obj, k, v)
        put(obj, "argsz", argsz)
        self.ioctl(VFIO_IOMMU_MAP_DMA, bytes(obj))

    def vfio_iommu_unmap_dma(self, iova: int, size: int, flags: int = 0, argsz: int = DMA_UNMAP_SIZE) -> int:
        """VFIO_IOMMU_UNMAP_DMA: bytes unmapped."""
        st = STRUCTS["vfio_iommu_type1_dma_unmap"]
        obj = st()
        for k, v in {"flags": flags, "iova": iova, "size": size}.items():
            put(obj, k, v)
        put(obj, "argsz", argsz)
        out = self.ioctl(VFIO_IOMMU_UNMAP_DMA, bytes(obj))
        assert isinstance(out, bytes)
        return int(st.from_buffer_copy(out).size)

    def __repr__(self) -> str:
        return f"<KernelIommufd {self.path} fd={self.fd}{' closed' if self.closed else ''}>"


class KernelSelftestOps:
    """IOMMU_TEST_OP_* through IOMMU_TEST_CMD on a real kernel, with the model's ``SelftestOps`` methods."""

    def __init__(self, ictx: KernelIommufd) -> None:
        self.ictx = ictx

    def _call(self, member: str, oid: int = 0, **values: int) -> dict[str, int]:
        return self._call_rc(member, oid, **values)[1]

    def _call_rc(self, member: str, oid: int = 0, **values: int) -> tuple[int, dict[str, int]]:
        st = STRUCTS["iommu_test_cmd"]
        cmd = st(size=ctypes.sizeof(st), op=TEST_OP[member])
        put(cmd, "id", oid)
        m = getattr(cmd.u, member)
        for k, v in values.items():
            put(m, k, v)
        buf = bytearray(bytes(cmd))
        rc = self.ictx.ioctl_rc(IOMMU_TEST_CMD, buf)
        return rc, unpack(getattr(st.from_buffer_copy(bytes(buf)).u, member))

    def dmabuf_get(self, length: int, open_flags: int = 0o2000000) -> int:
        """IOMMU_TEST_OP_DMABUF_GET: the new dma-buf fd (O_CLOEXEC by default)."""
        return self._call_rc("dmabuf_get", 0, length=length, open_flags=open_flags)[0]

    def dmabuf_revoke(self, dmabuf_fd: int, revoked: bool) -> None:
        """IOMMU_TEST_OP_DMABUF_REVOKE."""
        self._call("dmabuf_revoke", 0, dmabuf_fd=dmabuf_fd, revoked=int(revoked))

    def add_reserved(self, ioas_id: int, start: int, length: int) -> None:
        """IOMMU_TEST_OP_ADD_RESERVED."""
        self._call("add_reserved", ioas_id, start=start, length=length)

    def mock_domain(self, pt_id: int, dev_flags: int | None = None) -> MockDomainOut:
        """IOMMU_TEST_OP_MOCK_DOMAIN (or _FLAGS when ``dev_flags`` is given)."""
        if dev_flags is None:
            out = self._call("mock_domain", pt_id)
        else:
            out = self._call("mock_domain_flags", pt_id, dev_flags=dev_flags)
        return MockDomainOut(out["out_stdev_id"], out["out_hwpt_id"], out["out_idev_id"])

    def mock_domain_replace(self, stdev_id: int, pt_id: int) -> int:
        """IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE: the HWPT now attached."""
        return self._call("mock_domain_replace", stdev_id, pt_id=pt_id)["pt_id"]

    def md_check_map(self, hwpt_id: int, iova: int, length: int, uptr: int) -> None:
        """IOMMU_TEST_OP_MD_CHECK_MAP."""
        self._call("check_map", hwpt_id, iova=iova, length=length, uptr=uptr)

    def md_check_refs(self, uptr: int, length: int, refs: int) -> None:
        """IOMMU_TEST_OP_MD_CHECK_REFS."""
        self._call("check_refs", 0, uptr=uptr, length=length, refs=refs)

    def md_check_iotlb(self, hwpt_id: int, iotlb_id: int, iotlb: int) -> None:
        """IOMMU_TEST_OP_MD_CHECK_IOTLB."""
        self._call("check_iotlb", hwpt_id, id=iotlb_id, iotlb=iotlb)

    def dev_check_cache(self, idev_id: int, cache_id: int, cache: int) -> None:
        """IOMMU_TEST_OP_DEV_CHECK_CACHE."""
        self._call("check_dev_cache", idev_id, id=cache_id, cache=cache)

    def create_access(self, ioas_id: int, flags: int = 0) -> int:
        """IOMMU_TEST_OP_CREATE_ACCESS: the access fd (close it with :meth:`destroy_access`)."""
        return self._call("create_access", ioas_id, flags=flags)["out_access_fd"]

    def destroy_access(self, access_fd: int) -> None:
        """close() of an access fd."""
        try:
            os.close(access_fd)
        except OSError as e:
            raise UapiError(e.errno or errno.EBADF, f"close({access_fd}): {e.strerror}") from None

    def access_replace_ioas(self, access_fd: int, ioas_id: int) -> None:
        """IOMMU_TEST_OP_ACCESS_REPLACE_IOAS."""
        self._call("access_replace_ioas", access_fd, ioas_id=ioas_id)

    def access_pages(self, access_fd: int, iova: int, length: int, uptr: int = 0, flags: int = 0) -> int:
        """IOMMU_TEST_OP_ACCESS_PAGES: the item ID."""
        return self._call("access_pages", access_fd, iova=iova, length=length, uptr=uptr,
                          flags=flags)["out_access_pages_id"]

    def destroy_access_pages(self, access_fd: int, access_pages_id: int) -> None:
        """IOMMU_TEST_OP_DESTROY_ACCESS_PAGES."""
        self._call("destroy_access_pages", access_fd, access_pages_id=access_pages_id)

    def access_rw(self, access_fd: int, iova: int, length: int, uptr: int, flags: int = 0) -> None:
        """IOMMU_TEST_OP_ACCESS_RW."""
        self._call("access_rw", access_fd, iova=iova, length=length, uptr=uptr, flags=flags)

    def set_temp_memory_limit(self, limit: int) -> None:
        """IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT (module-wide: it outlives this fd)."""
        self._call("memory_limit", 0, limit=limit)

    def dirty(self, hwpt_id: int, iova: int, length: int, page_size: int, uptr: int, flags: int = 0) -> int:
        """IOMMU_TEST_OP_DIRTY: the number of bits set."""
        return self._call("dirty", hwpt_id, iova=iova, length=length, page_size=page_size, uptr=uptr,
                          flags=flags)["out_nr_dirty"]

    def trigger_iopf(self, dev_id: int, pasid: int, grpid: int, perm: int, addr: int) -> None:
        """IOMMU_TEST_OP_TRIGGER_IOPF."""
        self._call("trigger_iopf", 0, dev_id=dev_id, pasid=pasid, grpid=grpid, perm=perm, addr=addr)

    def trigger_vevent(self, dev_id: int) -> None:
        """IOMMU_TEST_OP_TRIGGER_VEVENT."""
        self._call("trigger_vevent", 0, dev_id=dev_id)

    def pasid_attach(self, stdev_id: int, pasid: int, pt_id: int) -> int:
        """IOMMU_TEST_OP_PASID_ATTACH."""
        return self._call("pasid_attach", stdev_id, pasid=pasid, pt_id=pt_id)["pt_id"]

    def pasid_replace(self, stdev_id: int, pasid: int, pt_id: int) -> int:
        """IOMMU_TEST_OP_PASID_REPLACE."""
        return self._call("pasid_replace", stdev_id, pasid=pasid, pt_id=pt_id)["pt_id"]

    def pasid_detach(self, stdev_id: int, pasid: int) -> None:
        """IOMMU_TEST_OP_PASID_DETACH."""
        self._call("pasid_detach", stdev_id, pasid=pasid)

    def pasid_check_hwpt(self, stdev_id: int, pasid: int, hwpt_id: int) -> None:
        """IOMMU_TEST_OP_PASID_CHECK_HWPT (hwpt_id 0: check detached)."""
        self._call("pasid_check", stdev_id, pasid=pasid, hwpt_id=hwpt_id)


__all__ = ["IOCTLS", "STRUCTS", "TEST_MEMBERS", "TEST_OP", "FaultQueue", "HwInfo", "IovaRanges",
           "KernelIommufd", "KernelSelftestOps", "MockDomainOut", "UapiErrorWithOutput", "put", "scalar_fields",
           "unpack"]
