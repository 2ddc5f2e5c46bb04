"""/dev/iommu as a Python object (``drivers/iommu/iommufd/main.c``): :class:`Iommufd` is one open file —
its object table, its accounting mode, its VFIO compat IOAS — with one method per ioctl and a raw
:meth:`Iommufd.ioctl` that takes the argument struct as userspace passes it.

Dispatch follows ``iommufd_fops_ioctl()``: a number outside the table goes to the VFIO compatibility
ioctls (ENOTTY when unknown there too); the leading ``__u32 size`` is read first (EFAULT); the slot must
hold exactly this ioctl number (ENOTTY); ``size`` below the struct's original end is EINVAL; bytes past the
struct the kernel knows must be zero (E2BIG).  A command that allocated an object finalizes it on
success and aborts it on failure.

The methods take keyword arguments named like the struct members (``reserved`` stands for
``__reserved``), return the members the kernel writes back, and raise :class:`UapiError` with the
kernel's errno — the only exception that leaves a uAPI call.
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, ClassVar, Final, Self

from vfiolab.errors import UapiError, VfiolabError
from vfiolab.faultinject import fail_point
from vfiolab.iommufd import uapi
from vfiolab.iommufd.device import IommufdGroup
from vfiolab.iommufd.immap import MmapTree
from vfiolab.iommufd.objects import IommufdObject, ObjectTable
from vfiolab.iommufd.pages import IOPT_PAGES_ACCOUNT_MM, IOPT_PAGES_ACCOUNT_USER
from vfiolab.iommufd.results import FaultQueue, HwInfo, IovaRanges, UapiErrorWithOutput
from vfiolab.iommufd.task import Task
from vfiolab.iommufd.ucmd import (
    LocalBuffer,
    ProcessBuffer,
    Ucmd,
    UserBuffer,
    copy_struct_from_user,
    get_user_u32,
)
from vfiolab.memory import MAP_SHARED, PROT_READ, PROT_WRITE, UserProcess

if TYPE_CHECKING:
    from vfiolab.iommufd.ioas import Ioas
    from vfiolab.iommufd.mock import MockIommu, SelftestOps

Handler = Callable[[Ucmd], int]



def _handlers() -> dict[str, Handler]:
    from vfiolab.iommufd import fault, hw_info, hw_pagetable, ioas, vfio_compat, viommu
    return {
        "destroy": _destroy,
        "ioas_alloc": ioas.ioas_alloc_ioctl,
        "ioas_allow_iovas": ioas.ioas_allow_iovas,
        "ioas_copy": ioas.ioas_copy,
        "ioas_iova_ranges": ioas.ioas_iova_ranges,
        "ioas_map": ioas.ioas_map,
        "ioas_map_file": ioas.ioas_map_file,
        "ioas_unmap": ioas.ioas_unmap,
        "ioas_change_process": ioas.ioas_change_process,
        "option": ioas.option,
        "vfio_ioas": vfio_compat.vfio_ioas,
        "hwpt_alloc": hw_pagetable.hwpt_alloc,
        "hwpt_set_dirty_tracking": hw_pagetable.hwpt_set_dirty_tracking,
        "hwpt_get_dirty_bitmap": hw_pagetable.hwpt_get_dirty_bitmap,
        "hwpt_invalidate": hw_pagetable.hwpt_invalidate,
        "get_hw_info": hw_info.get_hw_info,
        "fault_queue_alloc": fault.fault_queue_alloc,
        "viommu_alloc": viommu.viommu_alloc,
        "vdevice_alloc": viommu.vdevice_alloc,
        "veventq_alloc": viommu.veventq_alloc,
        "hw_queue_alloc": viommu.hw_queue_alloc,
    }


def _destroy(ucmd: Ucmd) -> int:
    """IOMMU_DESTROY (main.c iommufd_destroy): only the table may hold the object."""
    ucmd.ictx.objects.remove(ucmd.cmd["id"])
    return 0


class Iommufd:
    """An open /dev/iommu (struct iommufd_ctx).

    ``process`` is the opener and the default caller (``current``); ``selftest`` plugs in the
    CONFIG_IOMMUFD_TEST mock (IOMMU_TEST_CMD and :attr:`test`); ``vfio_misc`` opens it as
    /dev/vfio/vfio (VFIO-compatible RLIMIT_MODE=mm accounting).
    """

    allow_unsafe_interrupts: ClassVar[bool] = False
    """iommufd.allow_unsafe_interrupts module parameter."""
    config_vfio_noiommu: ClassVar[bool] = True
    """CONFIG_VFIO_NOIOMMU (Debian sets it)."""
    _HANDLERS: ClassVar[dict[str, Handler] | None] = None

    def __init__(self, process: UserProcess, *, selftest: MockIommu | None = None,
                 vfio_misc: bool = False) -> None:
        fail_point("iommufd_fops_open: kzalloc(struct iommufd_ctx)")  # open(2) fails with ENOMEM
        self.process = process
        self.current: Task = Task.of(process)
        """The task making the calls (see :meth:`as_current`)."""
        self.objects = ObjectTable()
        self.groups: dict[int, IommufdGroup] = {}
        self.account_mode = IOPT_PAGES_ACCOUNT_MM if vfio_misc else IOPT_PAGES_ACCOUNT_USER
        self.no_iommu_mode = False
        self.compat_ioas: Ioas | None = None
        self.selftest = selftest
        self.closed = False
        """close() was called on the fd: no more ioctls."""
        self.released = False
        """iommufd_fops_release() ran: every object is gone."""
        self._refs = 1
        self._test: SelftestOps | None = None
        self.mt_mmap = MmapTree(self)
        """Regions drivers offer to mmap() (ictx->mt_mmap) and the mappings of them."""

    # ------------------------------------------------------------------ context
    @contextmanager
    def as_current(self, who: UserProcess | Task) -> Iterator[Task]:
        """Make calls as another process (a forked child, another user) for the duration."""
        task = who if isinstance(who, Task) else Task.of(who)
        saved = self.current
        self.current = task
        try:
            yield task
        finally:
            self.current = saved

    def copy_from_user(self, addr: int, n: int) -> bytes:
        """copy_from_user() from the calling process (EFAULT)."""
        if n == 0:
            return b""
        return self.current.process.read(addr, n)

    def copy_to_user(self, addr: int, data: bytes | bytearray | memoryview) -> None:
        """copy_to_user() into the calling process (EFAULT, with the bytes before the fault stored)."""
        if len(data):
            self.current.process.write(addr, data, partial=True)

    @property
    def test(self) -> SelftestOps:
        """The IOMMU_TEST_OP_* methods (needs ``selftest``)."""
        if self.selftest is None:
            raise VfiolabError("this iommufd was opened without the selftest mock")
        if self._test is None:
            from vfiolab.iommufd.mock import SelftestOps
            self._test = SelftestOps(self)
        return self._test

    def ctx_get(self) -> None:
        """iommufd_ctx_get(): another file (an access, an event queue) keeps the context open."""
        self._refs += 1

    def ctx_put(self) -> None:
        """iommufd_ctx_put(): the last reference releases the context."""
        self._refs -= 1
        if self._refs == 0 and not self.released:
            self.released = True
            self.objects.release_all()  # iommufd_fops_release(): every object, leaves first

    def close(self) -> None:
        """close(2) of the fd; the context is released once no access or event-queue file holds it."""
        if self.closed:
            return
        self.closed = True
        self.ctx_put()

    def mmap(self, length: int, offset: int, prot: int = PROT_READ | PROT_WRITE, flags: int = MAP_SHARED) -> int:
        """mmap(2) of this fd in the calling process (a driver's region, e.g. a vIOMMU's page): the
        mapped address."""
        if self.closed:
            raise UapiError(errno.EBADF, "iommufd is closed")
        return self.mt_mmap.mmap(length, offset, prot, flags)

    def munmap(self, addr: int, length: int) -> None:
        """munmap(2) of a mapping made by :meth:`mmap`."""
        self.mt_mmap.munmap(addr, length)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ dispatch
    @classmethod
    def _handler(cls, name: str) -> Handler:
        if cls._HANDLERS is None:
            cls._HANDLERS = _handlers()
        return cls._HANDLERS[name]

    def _op_for(self, cmd: int) -> uapi.IoctlOp | None:
        nr = uapi.ioc_nr(cmd)
        if nr < uapi.IOMMUFD_CMD_BASE or nr - uapi.IOMMUFD_CMD_BASE >= uapi.IOCTL_TABLE_SIZE:
            return None
        if nr == uapi.IOMMUFD_CMD_TEST and self.selftest is None:
            return None  # without CONFIG_IOMMUFD_TEST the table ends before this slot
        return uapi.OPS_BY_NR.get(nr, _EMPTY_SLOT)

    def _run(self, op: uapi.IoctlOp, ubuf: UserBuffer, cmd: int | None = None) -> int:
        if self.closed:
            raise UapiError(errno.EBADF, "iommufd is closed")
        user_size = get_user_u32(ubuf)
        if op.cmd != (op.cmd if cmd is None else cmd):  # also every empty slot (ioctl_num 0)
            raise UapiError(errno.ENOTTY, f"ioctl {cmd:#x} does not match the table's {op.name}")
        if user_size < op.min_size:
            raise UapiError(errno.EINVAL,
                            f"size {user_size} below the {op.min_size}-byte minimum of {op.name}")
        raw = copy_struct_from_user(op.struct.size, ubuf, user_size)
        ucmd = Ucmd(self, op, ubuf, user_size, raw)
        if op.name == "test_cmd":
            from vfiolab.iommufd.mock import test_cmd
            return test_cmd(ucmd)
        try:
            rc = self._handler(op.name)(ucmd)
        except UapiError:
            if ucmd.new_obj is not None:  # iommufd_fops_ioctl(): the command's object goes
                self.objects.abort_and_destroy(ucmd.new_obj)
            raise
        if ucmd.new_obj is not None:
            self.objects.finalize(ucmd.new_obj)
        return rc

    def ioctl(self, cmd: int, arg: bytes | bytearray | int | None) -> bytes | int:
        """ioctl(2).  ``arg`` as bytes/bytearray is the struct itself (its bytes are all the user memory
        the kernel may touch; a bytearray is updated in place) and the struct as written back is
        returned; an int is a pointer into the calling process (0 is NULL) and the ioctl's return value
        comes back; None is NULL.  VFIO_SET_IOMMU / VFIO_CHECK_EXTENSION take their int argument as a
        value, like the kernel."""
        rc, local = self._guarded(cmd, arg)
        if local is None:
            return rc
        if isinstance(arg, bytearray):
            arg[:] = local.data
        return bytes(local.data)

    def ioctl_rc(self, cmd: int, arg: bytearray) -> int:
        """ioctl(2) on a struct given as a bytearray (updated in place), returning the ioctl's value
        (e.g. the fd IOMMU_TEST_OP_DMABUF_GET returns)."""
        rc, local = self._guarded(cmd, arg)
        assert local is not None
        arg[:] = local.data
        return rc

    def _guarded(self, cmd: int, arg: bytes | bytearray | int | None) -> tuple[int, LocalBuffer | None]:
        try:
            return self._ioctl(cmd, arg)
        except UapiError:
            raise
        except (ValueError, struct.error, OverflowError) as e:  # malformed arguments from the caller
            raise UapiError(errno.EINVAL, f"bad ioctl argument: {e}") from None

    def _ioctl(self, cmd: int, arg: bytes | bytearray | int | None) -> tuple[int, LocalBuffer | None]:
        op = self._op_for(cmd)
        local: LocalBuffer | None = None
        ubuf: UserBuffer | None = None
        if isinstance(arg, (bytes, bytearray)):
            local = LocalBuffer(arg)
            ubuf = local
        elif arg is not None and arg != 0:
            ubuf = ProcessBuffer(self.current.process, arg)
        if op is None:
            from vfiolab.iommufd.vfio_compat import vfio_ioctl
            value = arg if isinstance(arg, int) else 0
            return vfio_ioctl(self, cmd, value, ubuf), local
        if ubuf is None:
            raise UapiError(errno.EFAULT, "NULL argument")
        return self._run(op, ubuf, cmd), local

    def call(self, name: str, fields: Mapping[str, int]) -> dict[str, int]:
        """Run ioctl ``name`` on a struct of exactly ``sizeof`` bytes built from ``fields`` and return the
        struct's members as written back.  On a failure after the kernel responded, raises
        :class:`UapiErrorWithOutput`."""
        op = uapi.OPS_BY_NAME[name]
        vals = {("__reserved" if k == "reserved" else "__reserved2" if k == "reserved2" else k): v
                for k, v in fields.items()}
        vals["size"] = op.struct.size
        try:
            buf = LocalBuffer(op.struct.pack(vals))
        except VfiolabError as e:
            raise UapiError(errno.EINVAL, str(e)) from None
        try:
            self._run(op, buf)
        except UapiError as e:
            if buf.data != op.struct.pack(vals):
                raise UapiErrorWithOutput(e, op.struct.unpack(buf.data)) from None
            raise
        return op.struct.unpack(buf.data)

    # ------------------------------------------------------------------ one method per ioctl
    def destroy(self, id: int) -> None:
        """IOMMU_DESTROY."""
        self.call("destroy", {"id": id})

    def ioas_alloc(self, flags: int = 0) -> int:
        """IOMMU_IOAS_ALLOC: the new IOAS ID."""
        return self.call("ioas_alloc", {"flags": flags})["out_ioas_id"]

    def ioas_iova_ranges(self, ioas_id: int, num_iovas: int, allowed_iovas: int,
                         reserved: int = 0) -> IovaRanges:
        """IOMMU_IOAS_IOVA_RANGES: ranges are written at ``allowed_iovas`` (process memory)."""
        out = self.call("ioas_iova_ranges", {"ioas_id": ioas_id, "num_iovas": num_iovas,
                                             "allowed_iovas": allowed_iovas, "reserved": reserved})
        return IovaRanges(out["num_iovas"], out["out_iova_alignment"])

    def ioas_allow_iovas(self, ioas_id: int, num_iovas: int, allowed_iovas: int, reserved: int = 0) -> None:
        """IOMMU_IOAS_ALLOW_IOVAS: ``num_iovas`` {start, last} pairs at ``allowed_iovas``."""
        self.call("ioas_allow_iovas", {"ioas_id": ioas_id, "num_iovas": num_iovas,
                                       "allowed_iovas": allowed_iovas, "reserved": reserved})

    def ioas_map(self, ioas_id: int, user_va: int, length: int, iova: int = 0,
                 flags: int = uapi.IOMMU_IOAS_MAP_READABLE | uapi.IOMMU_IOAS_MAP_WRITEABLE,
                 reserved: int = 0) -> int:
        """IOMMU_IOAS_MAP: the IOVA (``iova`` is used with IOMMU_IOAS_MAP_FIXED_IOVA)."""
        return self.call("ioas_map", {"ioas_id": ioas_id, "user_va": user_va, "length": length, "iova": iova,
                                      "flags": flags, "reserved": reserved})["iova"]

    def ioas_map_file(self, ioas_id: int, fd: int, start: int, length: int, iova: int = 0,
                      flags: int = uapi.IOMMU_IOAS_MAP_READABLE | uapi.IOMMU_IOAS_MAP_WRITEABLE) -> int:
        """IOMMU_IOAS_MAP_FILE: map bytes [start, start+length) of the file behind ``fd``."""
        return self.call("ioas_map_file", {"ioas_id": ioas_id, "fd": fd, "start": start, "length": length,
                                           "iova": iova, "flags": flags})["iova"]

    def ioas_copy(self, dst_ioas_id: int, src_ioas_id: int, length: int, src_iova: int, dst_iova: int = 0,
                  flags: int = uapi.IOMMU_IOAS_MAP_READABLE | uapi.IOMMU_IOAS_MAP_WRITEABLE) -> int:
        """IOMMU_IOAS_COPY: the destination IOVA."""
        return self.call("ioas_copy", {"dst_ioas_id": dst_ioas_id, "src_ioas_id": src_ioas_id,
                                       "length": length,
                                       "src_iova": src_iova, "dst_iova": dst_iova,
                                       "flags": flags})["dst_iova"]

    def ioas_unmap(self, ioas_id: int, iova: int, length: int) -> int:
        """IOMMU_IOAS_UNMAP: bytes unmapped."""
        return self.call("ioas_unmap", {"ioas_id": ioas_id, "iova": iova, "length": length})["length"]

    def ioas_change_process(self, reserved: int = 0) -> None:
        """IOMMU_IOAS_CHANGE_PROCESS: charge every map to the calling process."""
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
        return self.call("hwpt_alloc", {"dev_id": dev_id, "pt_id": pt_id, "flags": flags,
                                        "data_type": data_type,
                                        "data_len": data_len, "data_uptr": data_uptr, "fault_id": fault_id,
                                        "reserved": reserved, "reserved2": reserved2})["out_hwpt_id"]

    def get_hw_info(self, dev_id: int, data_len: int = 0, data_uptr: int = 0, in_data_type: int = 0,
                    flags: int = 0) -> HwInfo:
        """IOMMU_GET_HW_INFO: driver data is written at ``data_uptr``."""
        out = self.call("get_hw_info", {"dev_id": dev_id, "data_len": data_len, "data_uptr": data_uptr,
                                        "data_type": in_data_type, "flags": flags})
        return HwInfo(out["data_len"], out["data_type"], out["out_max_pasid_log2"], out["out_capabilities"])

    def hwpt_set_dirty_tracking(self, hwpt_id: int, flags: int, reserved: int = 0) -> None:
        """IOMMU_HWPT_SET_DIRTY_TRACKING."""
        self.call("hwpt_set_dirty_tracking", {"hwpt_id": hwpt_id, "flags": flags, "reserved": reserved})

    def hwpt_get_dirty_bitmap(self, hwpt_id: int, iova: int, length: int, page_size: int, data: int,
                              flags: int = 0, reserved: int = 0) -> None:
        """IOMMU_HWPT_GET_DIRTY_BITMAP: bits are ORed into the bitmap at ``data``."""
        self.call("hwpt_get_dirty_bitmap", {"hwpt_id": hwpt_id, "iova": iova, "length": length,
                                            "page_size": page_size, "data": data, "flags": flags,
                                            "reserved": reserved})

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
                                          "data_uptr": data_uptr, "data_len": data_len,
                                          "flags": flags})["out_viommu_id"]

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
        return int(self.ioctl(uapi.VFIO_GET_API_VERSION, None))

    def vfio_check_extension(self, extension: int) -> int:
        """VFIO_CHECK_EXTENSION."""
        from vfiolab.iommufd.vfio_compat import check_extension
        return check_extension(self, extension)

    def vfio_set_iommu(self, type: int) -> None:
        """VFIO_SET_IOMMU."""
        from vfiolab.iommufd.vfio_compat import set_iommu
        set_iommu(self, type)

    def vfio_iommu_map_dma(self, vaddr: int, iova: int, size: int,
                           flags: int = uapi.VFIO_DMA_MAP_FLAG_READ | uapi.VFIO_DMA_MAP_FLAG_WRITE,
                           argsz: int = uapi.vfio_iommu_type1_dma_map.size) -> None:
        """VFIO_IOMMU_MAP_DMA."""
        st = uapi.vfio_iommu_type1_dma_map
        self.ioctl(uapi.VFIO_IOMMU_MAP_DMA, st.pack(argsz=argsz, flags=flags, vaddr=vaddr, iova=iova,
                                                    size=size))

    def vfio_iommu_unmap_dma(self, iova: int, size: int, flags: int = 0,
                             argsz: int = uapi.vfio_iommu_type1_dma_unmap.size) -> int:
        """VFIO_IOMMU_UNMAP_DMA: bytes unmapped."""
        st = uapi.vfio_iommu_type1_dma_unmap
        buf = bytearray(st.pack(argsz=argsz, flags=flags, iova=iova, size=size))
        self.ioctl(uapi.VFIO_IOMMU_UNMAP_DMA, buf)
        return st.unpack(buf)["size"]

    # ------------------------------------------------------------------ introspection helpers
    def object(self, oid: int) -> IommufdObject:
        """The visible object ``oid`` (ENOENT); an introspection helper, not a fault-injection point."""
        obj = self.objects.lookup(oid)
        if obj is None:
            raise UapiError(errno.ENOENT, f"no object with ID {oid}")
        return obj

    def ioas_ranges(self, ioas_id: int) -> list[tuple[int, int]]:
        """The IOVA ranges IOMMU_IOAS_IOVA_RANGES would report, read directly."""
        from vfiolab.iommufd.ioas import get_ioas
        return get_ioas(self, ioas_id).iopt.iova_ranges()

    def __repr__(self) -> str:
        return f"<Iommufd objects={len(self.objects)} mode={self.account_mode}>"


_EMPTY_SLOT: Final = uapi.IoctlOp(-1, "empty", uapi.iommu_destroy, "id")
"""A hole in iommufd_ioctl_ops[] (0x95..0x9f): its ioctl_num is 0, so no command matches it."""

__all__ = ["FaultQueue", "HwInfo", "Iommufd", "IovaRanges", "UapiErrorWithOutput"]
