"""The VFIO device core (``drivers/vfio/vfio_main.c``): a registered :class:`VfioDevice` with its ops, the
open device file :class:`VfioDeviceFile` (what ``open()`` of ``/dev/vfio/devices/vfioX`` or
VFIO_GROUP_GET_DEVICE_FD returns) and its ioctl dispatch, read/write/mmap, first-open/last-close, the
INFO capability-chain builder and the SET_IRQS header validation every bus driver shares.

Dispatch follows ``vfio_device_fops_unl_ioctl()``: BIND_IOMMUFD first (cdev files only); nothing else
before access is granted (EINVAL); ATTACH/DETACH_IOMMUFD_PT on cdev files; VFIO_DEVICE_FEATURE through
:func:`vfiolab.vfio.feature.device_feature` (migration and DMA logging, then the driver's own features);
GET_REGION_INFO through :func:`get_region_info`; everything else to the driver's ``ioctl`` op (EINVAL
without one).  Every failure is a :class:`~vfiolab.errors.UapiError`.

``ioctl(cmd, arg)`` takes the argument like :meth:`vfiolab.iommufd.Iommufd.ioctl`: bytes/bytearray are
the struct itself (a bytearray is updated in place and the bytes as written back are returned), an int is
a pointer into the calling process (the ioctl's return value comes back).
"""

from __future__ import annotations

import errno
import itertools
import mmap
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Final, Protocol

from vfiolab.errors import UapiError, VfiolabError
from vfiolab.iommufd.task import Task
from vfiolab.iommufd.ucmd import LocalBuffer, ProcessBuffer, UserBuffer
from vfiolab.memory import UserProcess
from vfiolab.vfio import uapi as U
from vfiolab.vfio.feature import device_feature
from vfiolab.vfio.migration import check_feature

if TYPE_CHECKING:
    from vfiolab.iommu.device import IommuDevice
    from vfiolab.iommufd.device import IommufdDevice
    from vfiolab.iommufd.main import Iommufd
    from vfiolab.vfio.dma_logging import DmaLogOps
    from vfiolab.vfio.migration import FeatureData, VfioMigration

__all__ = ["DeviceInfo", "InfoCap", "IrqInfo", "RegionInfo", "VfioDevice", "VfioDeviceFile", "VfioDeviceSet",
           "VfioInfoCap", "bools", "check_feature", "eventfds", "get_region_info", "parse_caps",
           "set_irqs_validate_and_prepare", "vfio_df_close", "vfio_df_open"]

_INFO_CAP_ALIGN: Final = 8


# ---------------------------------------------------------------------- capability chains
class VfioInfoCap:
    """struct vfio_info_cap: a chain built at offset 0 and shifted to where it lands in the reply
    (vfio_info_cap_add / vfio_info_cap_shift)."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self._last = -1

    @property
    def size(self) -> int:
        return len(self.buf)

    def add(self, cap_id: int, version: int, payload: bytes = b"") -> int:
        """vfio_info_add_capability(): append header + payload, 8-byte aligned; returns its offset."""
        size = -(-(U.vfio_info_cap_header.size + len(payload)) // _INFO_CAP_ALIGN) * _INFO_CAP_ALIGN
        off = len(self.buf)
        self.buf += U.vfio_info_cap_header.pack(id=cap_id, version=version, next=0) + payload
        self.buf += bytes(off + size - len(self.buf))
        if self._last >= 0:
            struct.pack_into("<I", self.buf, self._last + 4, off)  # link from the tail
        self._last = off
        return off

    def shifted(self, offset: int) -> bytes:
        """The chain with every non-zero ``next`` moved by ``offset`` (vfio_info_cap_shift)."""
        out = bytearray(self.buf)
        pos = 0
        while True:
            (nxt,) = struct.unpack_from("<I", out, pos + 4)
            if not nxt:
                break
            struct.pack_into("<I", out, pos + 4, nxt + offset)
            pos = nxt
        return bytes(out)


@dataclass(frozen=True)
class InfoCap:
    """One capability read back from a reply: header fields, its offset and its bytes (header included)."""

    id: int
    version: int
    offset: int
    data: bytes


def parse_caps(reply: bytes, first: int) -> list[InfoCap]:
    """Walk a reply's capability chain from ``first`` (offsets from the start of the struct)."""
    out: list[InfoCap] = []
    pos, seen = first, set()
    while pos:
        if pos in seen or pos + U.vfio_info_cap_header.size > len(reply):
            raise VfiolabError(f"capability chain broken at offset {pos}")
        seen.add(pos)
        h = U.vfio_info_cap_header.unpack(reply[pos:])
        end = h["next"] or len(reply)
        out.append(InfoCap(h["id"], h["version"], pos, bytes(reply[pos:end])))
        pos = h["next"]
    return out


# ---------------------------------------------------------------------- shared validation
def set_irqs_validate_and_prepare(hdr: dict[str, int], num_irqs: int, max_irq_type: int) -> int:
    """vfio_set_irqs_validate_and_prepare(): EINVAL unless the header is consistent; the size of the
    data[] that must follow."""
    minsz = U.vfio_irq_set.offsetofend("count")
    flags, index, start, count = hdr["flags"], hdr["index"], hdr["start"], hdr["count"]
    if (hdr["argsz"] < minsz or index >= max_irq_type or count >= 0xFFFF_FFFF - start
            or flags & ~(U.VFIO_IRQ_SET_DATA_TYPE_MASK | U.VFIO_IRQ_SET_ACTION_TYPE_MASK)):
        raise UapiError(errno.EINVAL, f"SET_IRQS header argsz={hdr['argsz']} flags={flags:#x} index={index} "
                        f"start={start} count={count}")
    if start >= num_irqs or start + count > num_irqs:
        raise UapiError(errno.EINVAL, f"vectors [{start}, +{count}) beyond the {num_irqs} of index {index}")
    dtype = flags & U.VFIO_IRQ_SET_DATA_TYPE_MASK
    size = {U.VFIO_IRQ_SET_DATA_NONE: 0, U.VFIO_IRQ_SET_DATA_BOOL: 1, U.VFIO_IRQ_SET_DATA_EVENTFD: 4}.get(dtype)
    if size is None:
        raise UapiError(errno.EINVAL, f"data type bits {dtype:#x} are not exactly one of NONE/BOOL/EVENTFD")
    if size and hdr["argsz"] - minsz < count * size:
        raise UapiError(errno.EINVAL, f"argsz {hdr['argsz']} leaves no room for {count} x {size}-byte data")
    return count * size


# ---------------------------------------------------------------------- the device
class VfioDeviceSet:
    """struct vfio_device_set: devices reset together (same slot or bus), sharing the open lock."""

    def __init__(self, key: object) -> None:
        self.key = key
        self.devices: list[VfioDevice] = []

    def open_count(self) -> int:
        """vfio_device_set_open_count()."""
        return sum(1 for d in self.devices if d.open_count)


_DEV_SETS: dict[object, VfioDeviceSet] = {}
_index = itertools.count()


class VfioDevice:
    """struct vfio_device.  Bus drivers subclass it and override the ops they implement, naming them in
    ``OPS`` (an op missing there behaves like a NULL pointer in ``vfio_device_ops``)."""

    OPS: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, name: str, iommu_dev: IommuDevice | None = None, set_id: object = None) -> None:
        self.name = name
        self.iommu_dev = iommu_dev
        """The physical device the IOMMU knows (vdev->dev)."""
        self.index = next(_index)
        self.open_count = 0
        self.cdev_opened = False
        self.registered = False
        self.iommufd_device: IommufdDevice | None = None
        self.iommufd_attached = False
        self.pasids: set[int] = set()
        self.mig: VfioMigration | None = None
        """mig_ops + migration_flags (None: the device does not migrate)."""
        self.log_ops: DmaLogOps | None = None
        self.group: Any = None
        """The vfio_group (legacy path) the device belongs to, if any."""
        self.dev_set = self._assign_set(self if set_id is None else set_id)

    def _assign_set(self, key: object) -> VfioDeviceSet:
        """vfio_assign_device_set()."""
        s = _DEV_SETS.get(key)
        if s is None:
            s = _DEV_SETS[key] = VfioDeviceSet(key)
        s.devices.append(self)
        return s

    def register(self) -> None:
        """vfio_register_group_dev(): the device node appears."""
        self.registered = True

    def unregister(self) -> None:
        """vfio_unregister_group_dev(): no new opens (open files keep working until closed)."""
        self.registered = False
        if self in self.dev_set.devices:
            self.dev_set.devices.remove(self)
        if not self.dev_set.devices:
            _DEV_SETS.pop(self.dev_set.key, None)

    @property
    def cdev_name(self) -> str:
        """/dev/vfio/devices/vfioX."""
        return f"vfio{self.index}"

    def has(self, op: str) -> bool:
        return op in self.OPS

    # ---- ops a driver overrides (called only when named in OPS)
    def open_device(self) -> None: ...
    def close_device(self) -> None: ...
    def ioctl(self, df: VfioDeviceFile, cmd: int, ubuf: UserBuffer | None) -> int:
        raise UapiError(errno.ENOTTY, f"ioctl {cmd:#x}")
    def read(self, df: VfioDeviceFile, offset: int, count: int) -> bytes:
        raise UapiError(errno.EINVAL, "no read op")
    def write(self, df: VfioDeviceFile, offset: int, data: bytes) -> int:
        raise UapiError(errno.EINVAL, "no write op")
    def mmap(self, df: VfioDeviceFile, offset: int, length: int, shared: bool, writable: bool) -> mmap.mmap:
        raise UapiError(errno.EINVAL, "no mmap op")
    def device_feature(self, df: VfioDeviceFile, flags: int, data: FeatureData, argsz: int) -> int:
        raise UapiError(errno.ENOTTY, "no device_feature op")
    def get_region_info_caps(self, info: dict[str, int], caps: VfioInfoCap) -> None:
        raise UapiError(errno.EINVAL, "no region info op")
    def bind_iommufd(self, ictx: Iommufd) -> int:
        raise UapiError(errno.EINVAL, "no bind op")
    def unbind_iommufd(self) -> None: ...
    def attach_ioas(self, pt_id: int) -> int:
        raise UapiError(errno.EINVAL, "no attach op")
    def detach_ioas(self) -> None: ...
    def pasid_attach_ioas(self, pasid: int, pt_id: int) -> int:
        raise UapiError(errno.EOPNOTSUPP, "no PASID attach op")
    def pasid_detach_ioas(self, pasid: int) -> None: ...
    def match_token_uuid(self, uuid: bytes | None) -> None: ...

    def runtime_get(self) -> None:
        """vfio_device_pm_runtime_get(): wake the device for an ioctl (drivers with runtime PM)."""

    def runtime_put(self) -> None:
        """vfio_device_pm_runtime_put()."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} open={self.open_count}>"


# ---------------------------------------------------------------------- open / close
class GroupLike(Protocol):
    """What the legacy group code provides for a device file opened through it."""

    def use_iommu(self, device: VfioDevice) -> None: ...

    def unuse_iommu(self, device: VfioDevice) -> None: ...


def vfio_df_open(df: VfioDeviceFile) -> None:
    """vfio_df_open(): only the group path may open a device twice (EINVAL); the first open binds the
    IOMMU (iommufd or the group's container) and calls the driver's open_device, undoing on failure."""
    device = df.device
    if device.open_count != 0 and df.group is None:
        raise UapiError(errno.EINVAL, f"{device.name} is already open")
    device.open_count += 1
    if device.open_count != 1:
        return
    try:
        if df.iommufd is not None:
            df.devid = device.bind_iommufd(df.iommufd)  # vfio_df_iommufd_bind()
        elif df.group is not None:
            df.group.use_iommu(device)
        try:
            if device.has("open_device"):
                device.open_device()
        except UapiError:
            if df.iommufd is not None:
                device.unbind_iommufd()
            elif df.group is not None:
                df.group.unuse_iommu(device)
            raise
    except UapiError:
        device.open_count -= 1
        raise


def vfio_df_close(df: VfioDeviceFile) -> None:
    """vfio_df_close(): the last close calls close_device, unbinds the IOMMU and resets migration state."""
    device = df.device
    if device.open_count <= 0:
        return
    if device.open_count == 1:
        if device.has("close_device"):
            device.close_device()
        if df.iommufd is not None:
            device.unbind_iommufd()
        elif df.group is not None:
            df.group.unuse_iommu(device)
        if device.mig is not None:
            device.mig.last_close()
    device.open_count -= 1


# ---------------------------------------------------------------------- the file
class CdevOps(Protocol):
    """What the device cdev adds to a file (:mod:`vfiolab.vfio.cdev`)."""

    def bind_iommufd(self, df: VfioDeviceFile, ubuf: UserBuffer) -> int: ...

    def attach_pt(self, df: VfioDeviceFile, ubuf: UserBuffer) -> int: ...

    def detach_pt(self, df: VfioDeviceFile, ubuf: UserBuffer) -> int: ...

    def release(self, df: VfioDeviceFile) -> None: ...


class VfioDeviceFile:
    """struct vfio_device_file: one open file of a device (cdev or group path)."""

    def __init__(self, device: VfioDevice, process: UserProcess, *, cdev: CdevOps | None = None,
                 group: GroupLike | None = None) -> None:
        self.device = device
        self.process = process
        self.cdev = cdev
        self.group = group
        self.access_granted = False
        self.iommufd: Iommufd | None = None
        self.devid = 0
        self.closed = False
        self.mappings: list[mmap.mmap] = []

    @property
    def task(self) -> Task:
        return Task.of(self.process)

    # ------------------------------------------------------------------ ioctl
    def ioctl(self, cmd: int, arg: bytes | bytearray | int | None) -> bytes | int:
        """ioctl(2) on the device file (see the module docstring for ``arg``)."""
        try:
            return self._ioctl(cmd, arg)
        except UapiError:
            raise
        except (ValueError, struct.error, OverflowError) as e:
            raise UapiError(errno.EINVAL, f"bad ioctl argument: {e}") from None
        except VfiolabError as e:
            raise UapiError(errno.EIO, f"device error: {e}") from None

    def _ioctl(self, cmd: int, arg: bytes | bytearray | int | None) -> bytes | int:
        local: LocalBuffer | None = None
        ubuf: UserBuffer | None
        if isinstance(arg, (bytes, bytearray)):
            local = ubuf = LocalBuffer(arg)
        elif arg is None or arg == 0:
            ubuf = None
        else:
            ubuf = ProcessBuffer(self.process, arg)
        rc = self._dispatch(cmd, ubuf)
        if local is not None:
            if isinstance(arg, bytearray):
                arg[:] = local.data
            return bytes(local.data)
        return rc

    def _dispatch(self, cmd: int, ubuf: UserBuffer | None) -> int:
        # vfio_device_fops_unl_ioctl()
        if self.closed:
            raise UapiError(errno.EBADF, "device file is closed")
        device = self.device
        if cmd == U.VFIO_DEVICE_BIND_IOMMUFD:
            if self.cdev is None:
                raise UapiError(errno.EINVAL, "BIND_IOMMUFD is only for device cdev files")  # df->group
            return self.cdev.bind_iommufd(self, _need(ubuf))
        if not self.access_granted:
            raise UapiError(errno.EINVAL, "the device file is not bound yet")
        device.runtime_get()
        try:
            return self._dispatch_granted(device, cmd, ubuf)
        finally:
            device.runtime_put()

    def _dispatch_granted(self, device: VfioDevice, cmd: int, ubuf: UserBuffer | None) -> int:
        if self.cdev is not None and cmd == U.VFIO_DEVICE_ATTACH_IOMMUFD_PT:
            return self.cdev.attach_pt(self, _need(ubuf))
        if self.cdev is not None and cmd == U.VFIO_DEVICE_DETACH_IOMMUFD_PT:
            return self.cdev.detach_pt(self, _need(ubuf))
        if cmd == U.VFIO_DEVICE_FEATURE:
            fallback: Callable[[int, FeatureData, int], int] | None = None
            if device.has("device_feature"):
                def fallback(flags: int, data: FeatureData, argsz: int) -> int:
                    return device.device_feature(self, flags, data, argsz)
            return device_feature(_need(ubuf), mig=device.mig, log=device.log_ops, task=self.task,
                                  process=self.process, fallback=fallback)
        if cmd == U.VFIO_DEVICE_GET_REGION_INFO:
            return get_region_info(device, _need(ubuf))
        if not device.has("ioctl"):
            raise UapiError(errno.EINVAL, "the driver has no ioctl op")
        return device.ioctl(self, cmd, ubuf)

    # ------------------------------------------------------------------ read / write / mmap
    def _granted(self, op: str) -> None:
        if self.closed:
            raise UapiError(errno.EBADF, "device file is closed")
        if not self.access_granted:
            raise UapiError(errno.EINVAL, "the device file is not bound yet")
        if not self.device.has(op):
            raise UapiError(errno.EINVAL, f"the driver has no {op} op")

    def pread(self, offset: int, count: int) -> bytes:
        """pread(2) at a region offset (index << 40 | offset in region)."""
        self._granted("read")
        try:
            return self.device.read(self, offset, count)
        except VfiolabError as e:
            raise UapiError(errno.EIO, str(e)) from None

    def pwrite(self, offset: int, data: bytes | bytearray | memoryview) -> int:
        """pwrite(2): bytes written."""
        self._granted("write")
        try:
            return self.device.write(self, offset, bytes(data))
        except VfiolabError as e:
            raise UapiError(errno.EIO, str(e)) from None

    def mmap(self, offset: int, length: int, *, shared: bool = True, writable: bool = True) -> mmap.mmap:
        """mmap(2) of ``length`` bytes at file ``offset``: a live mapping of the device memory."""
        self._granted("mmap")
        try:
            m = self.device.mmap(self, offset, length, shared, writable)
        except VfiolabError as e:
            raise UapiError(errno.EINVAL, str(e)) from None
        self.mappings.append(m)
        return m

    def close(self) -> None:
        """close(2): vfio_device_fops_release()."""
        if self.closed:
            return
        self.closed = True
        if self.cdev is not None:
            self.cdev.release(self)
        elif self.access_granted:
            vfio_df_close(self)  # the group path (vfio_df_group_close)
            self.access_granted = False

    release = close

    # ------------------------------------------------------------------ named ioctls
    def get_info(self, argsz: int = U.vfio_device_info.size) -> DeviceInfo:
        """VFIO_DEVICE_GET_INFO claiming ``argsz`` (the buffer is at least the struct's size)."""
        buf = bytearray(max(argsz, U.vfio_device_info.size))
        U.vfio_device_info.put(buf, "argsz", argsz)
        out = self._ioctl_buf(U.VFIO_DEVICE_GET_INFO, buf)
        v = U.vfio_device_info.unpack(out + bytes(max(0, U.vfio_device_info.size - len(out))))
        caps = parse_caps(out, v["cap_offset"]) if v["cap_offset"] else []
        return DeviceInfo(v["argsz"], v["flags"], v["num_regions"], v["num_irqs"], v["cap_offset"], caps)

    def get_region_info(self, index: int, argsz: int = U.vfio_region_info.size) -> RegionInfo:
        """VFIO_DEVICE_GET_REGION_INFO claiming ``argsz`` (the kernel's two-call protocol: a short argsz
        comes back with CAPS set and the ``argsz`` needed)."""
        buf = bytearray(max(argsz, U.vfio_region_info.size))
        U.vfio_region_info.put(buf, "argsz", argsz)
        U.vfio_region_info.put(buf, "index", index)
        out = self._ioctl_buf(U.VFIO_DEVICE_GET_REGION_INFO, buf)
        v = U.vfio_region_info.unpack(out + bytes(max(0, U.vfio_region_info.size - len(out))))
        caps = parse_caps(out, v["cap_offset"]) if v["cap_offset"] else []
        return RegionInfo(v["argsz"], v["flags"], v["index"], v["cap_offset"], v["size"], v["offset"], caps)

    def get_irq_info(self, index: int, argsz: int = U.vfio_irq_info.size) -> IrqInfo:
        """VFIO_DEVICE_GET_IRQ_INFO."""
        out = self._ioctl_buf(U.VFIO_DEVICE_GET_IRQ_INFO, U.vfio_irq_info.pack(argsz=argsz, index=index))
        v = U.vfio_irq_info.unpack(out)
        return IrqInfo(v["flags"], v["index"], v["count"])

    def set_irqs(self, index: int, flags: int, start: int = 0, count: int = 0, data: bytes = b"",
                 argsz: int | None = None) -> int:
        """VFIO_DEVICE_SET_IRQS with ``data`` as the raw data[] (use :func:`eventfds`/:func:`bools`)."""
        size = U.vfio_irq_set.size + len(data) if argsz is None else argsz
        hdr = U.vfio_irq_set.pack(argsz=size, flags=flags, index=index, start=start, count=count)
        return self._ioctl_rc(U.VFIO_DEVICE_SET_IRQS, hdr + bytes(data))

    def reset(self) -> None:
        """VFIO_DEVICE_RESET."""
        self._ioctl_rc(U.VFIO_DEVICE_RESET, None)

    def feature(self, flags: int, payload: bytes = b"", argsz: int | None = None) -> bytes:
        """VFIO_DEVICE_FEATURE: ``payload`` is data[]; returns data[] as written back."""
        size = U.vfio_device_feature.size + len(payload) if argsz is None else argsz
        out = self._ioctl_buf(U.VFIO_DEVICE_FEATURE,
                              U.vfio_device_feature.pack(argsz=size, flags=flags) + bytes(payload))
        return out[U.vfio_device_feature.size:]

    def _ioctl_buf(self, cmd: int, buf: bytes | bytearray) -> bytes:
        out = self.ioctl(cmd, bytearray(buf))
        assert isinstance(out, bytes)
        return out

    def _ioctl_rc(self, cmd: int, buf: bytes | None) -> int:
        """Run an ioctl whose return value matters: the struct is placed in the calling process."""
        if buf is None:
            return int(self.ioctl(cmd, None))
        proc = self.process
        from vfiolab.memory import PAGE_SIZE
        length = max(PAGE_SIZE, -(-len(buf) // PAGE_SIZE) * PAGE_SIZE)
        va = proc.mmap(length)
        try:
            proc.write(va, buf)
            return int(self.ioctl(cmd, va))
        finally:
            proc.munmap(va, length)

    def __repr__(self) -> str:
        return f"<VfioDeviceFile {self.device.name} granted={self.access_granted}>"


def _need(ubuf: UserBuffer | None) -> UserBuffer:
    if ubuf is None:
        raise UapiError(errno.EFAULT, "NULL argument")
    return ubuf


# ---------------------------------------------------------------------- GET_REGION_INFO (vfio_main.c)
def get_region_info(device: VfioDevice, ubuf: UserBuffer) -> int:
    """vfio_get_region_info(): argsz >= 32 (EINVAL); the driver fills the info and its capability chain;
    a chain that does not fit sets CAPS, the needed argsz and cap_offset 0, and the call succeeds."""
    st = U.vfio_region_info
    if not device.has("get_region_info_caps"):
        raise UapiError(errno.EINVAL, "the driver has no region info op")
    minsz = st.offsetofend("offset")
    info = st.unpack(ubuf.read(0, minsz))
    if info["argsz"] < minsz:
        raise UapiError(errno.EINVAL, f"argsz {info['argsz']} < {minsz}")
    info.update(flags=0, cap_offset=0, size=0, offset=0)  # struct vfio_region_info info = {} + copy
    caps = VfioInfoCap()
    device.get_region_info_caps(info, caps)
    if caps.size:
        info["flags"] |= U.VFIO_REGION_INFO_FLAG_CAPS
        if info["argsz"] < st.size + caps.size:
            info["argsz"] = st.size + caps.size
            info["cap_offset"] = 0
        else:
            ubuf.write(st.size, caps.shifted(st.size))
            info["cap_offset"] = st.size
    ubuf.write(0, st.pack(info)[:minsz])
    return 0


# ---------------------------------------------------------------------- results of the named calls
@dataclass(frozen=True)
class DeviceInfo:
    argsz: int
    flags: int
    num_regions: int
    num_irqs: int
    cap_offset: int
    caps: list[InfoCap]


@dataclass(frozen=True)
class RegionInfo:
    argsz: int
    flags: int
    index: int
    cap_offset: int
    size: int
    offset: int
    caps: list[InfoCap]

    def cap(self, cap_id: int) -> InfoCap | None:
        return next((c for c in self.caps if c.id == cap_id), None)

    def sparse_areas(self) -> list[tuple[int, int]]:
        """The SPARSE_MMAP areas (offset, size), if the capability is there."""
        c = self.cap(U.VFIO_REGION_INFO_CAP_SPARSE_MMAP)
        if c is None:
            return []
        n = U.vfio_region_info_cap_sparse_mmap.unpack(c.data)["nr_areas"]
        base = U.vfio_region_info_cap_sparse_mmap.size
        return [struct.unpack_from("<QQ", c.data, base + 16 * i) for i in range(n)]


@dataclass(frozen=True)
class IrqInfo:
    flags: int
    index: int
    count: int


def eventfds(*fds: int) -> bytes:
    """data[] of DATA_EVENTFD: s32 per vector."""
    return struct.pack(f"<{len(fds)}i", *fds)


def bools(*values: bool) -> bytes:
    """data[] of DATA_BOOL: u8 per vector."""
    return bytes(int(bool(v)) for v in values)
