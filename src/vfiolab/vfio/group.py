"""VFIO groups, ``/dev/vfio/$GROUP`` (``drivers/vfio/group.c``): one :class:`VfioGroup` per IOMMU group with
a VFIO driver bound to a device in it, opened once at a time as a :class:`VfioGroupFile`.

GET_STATUS (VIABLE, CONTAINER_SET), SET_CONTAINER with a legacy container (DMA ownership is claimed then)
or with an iommufd (its VFIO compat IOAS is created; ownership is claimed per device at open),
UNSET_CONTAINER (EBUSY while device files use the container) and GET_DEVICE_FD, which opens the device
through the device core (:func:`vfiolab.vfio.device.vfio_df_open`): with a container the device uses it,
with an iommufd it is bound and attached to the compat IOAS.  A device file keeps the group file (and so the
container) alive until it is closed.
"""

from __future__ import annotations

import errno
import itertools
import struct
from typing import Final

from vfiolab.errors import UapiError
from vfiolab.iommu.group import IommuGroup
from vfiolab.iommufd import vfio_compat
from vfiolab.iommufd.main import Iommufd
from vfiolab.iommufd.task import Task
from vfiolab.iommufd.uapi import CStruct
from vfiolab.iommufd.ucmd import LocalBuffer, ProcessBuffer, UserBuffer
from vfiolab.memory import PAGE_SIZE, UserProcess
from vfiolab.vfio.container import VfioContainer
from vfiolab.vfio.device import VfioDevice, VfioDeviceFile, vfio_df_close, vfio_df_open
from vfiolab.vfio.type1 import VFIO_EMULATED_IOMMU, VFIO_IOMMU, VFIO_NO_IOMMU
from vfiolab.vfio.uapi import VFIO_BASE, VFIO_TYPE

VFIO_GROUP_GET_STATUS: Final = (VFIO_TYPE << 8) | (VFIO_BASE + 3)
VFIO_GROUP_SET_CONTAINER: Final = (VFIO_TYPE << 8) | (VFIO_BASE + 4)
VFIO_GROUP_UNSET_CONTAINER: Final = (VFIO_TYPE << 8) | (VFIO_BASE + 5)
VFIO_GROUP_GET_DEVICE_FD: Final = (VFIO_TYPE << 8) | (VFIO_BASE + 6)
VFIO_GROUP_FLAGS_VIABLE: Final = 1 << 0
VFIO_GROUP_FLAGS_CONTAINER_SET: Final = 1 << 1
vfio_group_status: Final = CStruct("vfio_group_status", [("argsz", "u32"), ("flags", "u32")])


class VfioGroup:
    """struct vfio_group."""

    def __init__(self, registry: VfioGroups, iommu_group: IommuGroup, gtype: int) -> None:
        self.registry = registry
        self.iommu_group: IommuGroup | None = iommu_group
        self.type = gtype
        self.name = f"{'noiommu-' if gtype == VFIO_NO_IOMMU else ''}{iommu_group.id}"
        """dev_name: the node is /dev/vfio/<name>."""
        self.devices: list[VfioDevice] = []
        self.drivers = 1
        """Devices bound to a VFIO driver in this group (the group goes away at 0)."""
        self.container: VfioContainer | None = None
        self.container_users = 0
        self.iommufd: Iommufd | None = None
        self.opened_file: VfioGroupFile | None = None
        self.cdev_device_open_cnt = 0

    @property
    def path(self) -> str:
        return f"/dev/vfio/{self.name}"

    def has_iommu(self) -> bool:
        """vfio_group_has_iommu()."""
        return self.container is not None or self.iommufd is not None

    # ------------------------------------------------------------------ device core hooks (GroupLike)
    def use_iommu(self, device: VfioDevice) -> None:
        """vfio_device_group_use_iommu() + vfio_group_use_container(): EINVAL before SET_IOMMU, EPERM for
        a no-IOMMU group without CAP_SYS_RAWIO; the device file holds the group file."""
        if self.container is None:
            raise UapiError(errno.EINVAL, f"group {self.name} has no container")
        if self.container.iommu_driver is None:
            raise UapiError(errno.EINVAL, "the container has no IOMMU driver (VFIO_SET_IOMMU first)")
        if self.type == VFIO_NO_IOMMU and not Task.of(self.container.process).cap_sys_rawio:
            raise UapiError(errno.EPERM, "no-IOMMU device needs CAP_SYS_RAWIO")
        assert self.opened_file is not None
        self.opened_file.refs += 1
        self.container_users += 1
        self.container.register_device(device)

    def unuse_iommu(self, device: VfioDevice) -> None:
        """vfio_device_group_unuse_iommu()."""
        if self.container is None:
            return
        self.container.unregister_device(device)
        self.container_users -= 1
        if self.opened_file is not None:
            self.opened_file.fput()

    def block_group(self) -> None:
        """vfio_device_block_group(): a device cdev opens; EBUSY while the group file is open."""
        if self.opened_file is not None:
            raise UapiError(errno.EBUSY, f"group {self.name} is open")
        self.cdev_device_open_cnt += 1

    def unblock_group(self) -> None:
        self.cdev_device_open_cnt -= 1

    def enforced_coherent(self) -> bool:
        """vfio_group_enforced_coherent()."""
        from vfiolab.iommu.driver import IOMMU_CAP_ENFORCE_CACHE_COHERENCY
        for d in self.devices:
            dev = d.iommu_dev
            if dev is None or dev.unit is None or dev.unit.driver is None or \
                    not dev.unit.driver.capable(dev, IOMMU_CAP_ENFORCE_CACHE_COHERENCY):
                return False
        return True

    def pin_pages(self, iova: int, npage: int, prot: int) -> list[int]:
        """vfio_pin_pages() for a device of this group (container path)."""
        if self.container is None:
            raise UapiError(errno.EINVAL, "no container")
        return self.container.pin_pages(self, iova, npage, prot)

    def __repr__(self) -> str:
        return f"<VfioGroup {self.name} devices={[d.name for d in self.devices]}>"


class VfioGroupFile:
    """An open /dev/vfio/$GROUP of ``process``."""

    def __init__(self, group: VfioGroup, process: UserProcess) -> None:
        self.group = group
        self.process = process
        self.closed = False
        self.refs = 1
        """File references: the fd and every device file using the container."""

    # ------------------------------------------------------------------ ioctls
    def get_status(self, argsz: int = vfio_group_status.size) -> int:
        """VFIO_GROUP_GET_STATUS: the flags."""
        buf = bytearray(vfio_group_status.pack(argsz=argsz))
        self.ioctl(VFIO_GROUP_GET_STATUS, buf)
        return int(vfio_group_status.unpack(buf)["flags"])

    def _get_status(self, ubuf: UserBuffer) -> int:
        st = vfio_group_status
        status = st.unpack(ubuf.read(0, st.size))
        if status["argsz"] < st.size:
            raise UapiError(errno.EINVAL, f"argsz {status['argsz']} < {st.size}")
        g = self.group
        if g.iommu_group is None:
            raise UapiError(errno.ENODEV, "the group is gone")
        flags = 0
        if g.has_iommu():
            flags = VFIO_GROUP_FLAGS_CONTAINER_SET | VFIO_GROUP_FLAGS_VIABLE
        elif not g.iommu_group.owner_cnt:  # !iommu_group_dma_owner_claimed()
            flags = VFIO_GROUP_FLAGS_VIABLE
        status["flags"] = flags
        ubuf.write(0, st.pack(status))
        return 0

    def set_container(self, target: VfioContainer | Iommufd | int) -> None:
        """VFIO_GROUP_SET_CONTAINER with a container, an iommufd, or an fd of the process."""
        g = self.group
        obj = Task.of(self.process).fget(target) if isinstance(target, int) else target  # EBADF
        if g.has_iommu():
            raise UapiError(errno.EINVAL, f"group {g.name} already has a container")
        if g.iommu_group is None:
            raise UapiError(errno.ENODEV, "the group is gone")
        if isinstance(obj, VfioContainer):
            obj.attach_group(g)
            return
        if isinstance(obj, Iommufd):
            obj.ctx_get()  # iommufd_ctx_from_file()
            try:
                if g.type == VFIO_NO_IOMMU:
                    vfio_compat.compat_set_no_iommu(obj)
                else:
                    vfio_compat.compat_ioas_create(obj)
            except UapiError:
                obj.ctx_put()
                raise
            g.iommufd = obj
            return
        raise UapiError(errno.EBADFD, "the fd is neither a VFIO container nor an iommufd")

    def unset_container(self) -> None:
        """VFIO_GROUP_UNSET_CONTAINER: EINVAL without one, EBUSY while devices use the container."""
        g = self.group
        if not g.has_iommu():
            raise UapiError(errno.EINVAL, f"group {g.name} has no container")
        if g.container is not None:
            if g.container_users != 1:
                raise UapiError(errno.EBUSY, "device files still use the container")
            g.container.detach_group(g)
        if g.iommufd is not None:
            g.iommufd.ctx_put()
            g.iommufd = None

    def get_device_fd(self, name: str) -> VfioDeviceFile:
        """VFIO_GROUP_GET_DEVICE_FD: open the device called ``name``; the file is also installed in the
        process's fd table (``Task.of(process)``)."""
        f = self._open_device(name)
        Task.of(self.process).fd_install(f)
        return f

    def _open_device(self, name: str) -> VfioDeviceFile:
        device = self._device_from_name(name)
        df = VfioDeviceFile(device, self.process, group=self.group)
        self._df_group_open(df)
        return df

    def _device_from_name(self, name: str) -> VfioDevice:
        """vfio_device_get_from_name(): the driver's match op if it has one, else the device name;
        ENODEV when nothing matches (or the device is being removed)."""
        for dev in self.group.devices:
            match = getattr(dev, "match", None) if dev.has("match") else None
            if callable(match):
                rc = int(match(name))
                if rc < 0:
                    raise UapiError(-rc, f"{dev.name} refused {name!r}")
                hit = rc > 0
            else:
                hit = dev.name == name
            if hit and dev.registered:
                return dev
        raise UapiError(errno.ENODEV, f"no device {name!r} in group {self.group.name}")

    def _df_group_open(self, df: VfioDeviceFile) -> None:
        """vfio_df_group_open()."""
        g = self.group
        device = df.device
        if not g.has_iommu():
            raise UapiError(errno.EINVAL, f"group {g.name} has no container or iommufd")
        df.iommufd = g.iommufd
        noiommu = g.type == VFIO_NO_IOMMU
        if df.iommufd is not None and noiommu and device.open_count == 0 and (
                not Task.of(self.process).cap_sys_rawio or df.iommufd.compat_ioas is not None):
            df.iommufd = None
            raise UapiError(errno.EPERM, "no-IOMMU device with a compat IOAS or without CAP_SYS_RAWIO")
        try:
            vfio_df_open(df)
        except UapiError:
            df.iommufd = None
            raise
        if df.iommufd is not None and device.open_count == 1 and not noiommu:
            try:
                ioas_id = vfio_compat.compat_ioas_get_id(df.iommufd)  # vfio_iommufd_compat_attach_ioas()
                device.attach_ioas(ioas_id)
            except UapiError:
                vfio_df_close(df)
                df.iommufd = None
                raise
        df.access_granted = True

    # ------------------------------------------------------------------ the file
    def ioctl(self, cmd: int, arg: bytes | bytearray | int | None) -> bytes | int:
        """ioctl(2): GET_STATUS takes the struct, SET_CONTAINER a pointer to (or, as bytes, the 4 bytes of)
        an fd, GET_DEVICE_FD a pointer to (or the bytes of) a NUL-terminated name and returns the new fd."""
        if self.closed:
            raise UapiError(errno.EBADF, "group file is closed")
        local: LocalBuffer | None = None
        ubuf: UserBuffer | None = None
        if isinstance(arg, (bytes, bytearray)):
            local = ubuf = LocalBuffer(arg)
        elif isinstance(arg, int) and arg:
            ubuf = ProcessBuffer(self.process, arg)
        try:
            rc = self._dispatch(cmd, ubuf)
        except (ValueError, struct.error, OverflowError) as e:
            raise UapiError(errno.EINVAL, f"bad ioctl argument: {e}") from None
        if local is not None:
            if isinstance(arg, bytearray):
                arg[:] = local.data
            return bytes(local.data) if cmd != VFIO_GROUP_GET_DEVICE_FD else rc
        return rc

    def _dispatch(self, cmd: int, ubuf: UserBuffer | None) -> int:
        # vfio_group_fops_unl_ioctl()
        if cmd == VFIO_GROUP_GET_DEVICE_FD:
            name = _strndup_user(ubuf, PAGE_SIZE)
            f = self._open_device(name)
            return Task.of(self.process).fd_install(f)
        if cmd == VFIO_GROUP_GET_STATUS:
            return self._get_status(_need(ubuf))
        if cmd == VFIO_GROUP_SET_CONTAINER:
            (fd,) = struct.unpack("<i", _need(ubuf).read(0, 4))  # get_user()
            self.set_container(fd)
            return 0
        if cmd == VFIO_GROUP_UNSET_CONTAINER:
            self.unset_container()
            return 0
        raise UapiError(errno.ENOTTY, f"ioctl {cmd:#x} is not a group ioctl")

    def close(self) -> None:
        """close(2): the group is released once no device file holds it either."""
        if self.closed:
            return
        self.closed = True
        self.fput()

    def fput(self) -> None:
        self.refs -= 1
        if self.refs == 0:
            self._release()

    def _release(self) -> None:
        """vfio_group_fops_release()."""
        g = self.group
        if g.container is not None:
            g.container.detach_group(g)
        if g.iommufd is not None:
            g.iommufd.ctx_put()
            g.iommufd = None
        g.opened_file = None

    release = close

    def __repr__(self) -> str:
        return f"<VfioGroupFile {self.group.path}{' closed' if self.closed else ''}>"


def _need(ubuf: UserBuffer | None) -> UserBuffer:
    if ubuf is None:
        raise UapiError(errno.EFAULT, "NULL argument")
    return ubuf


def _strndup_user(ubuf: UserBuffer | None, n: int) -> str:
    """strndup_user(): EFAULT on a bad pointer, EINVAL without a NUL in the first ``n`` bytes."""
    src = _need(ubuf)
    out = bytearray()
    while len(out) < n:
        chunk = src.read(len(out), 1)
        if chunk == b"\0":
            return out.decode(errors="surrogateescape")
        out += chunk
    raise UapiError(errno.EINVAL, f"device name longer than {n - 1} bytes")


class VfioGroups:
    """vfio.group_list: the VFIO groups of one machine, made as VFIO drivers register devices."""

    _minor = itertools.count()

    def __init__(self, *, noiommu: bool = False) -> None:
        self.noiommu = noiommu
        """The enable_unsafe_noiommu_mode module parameter."""
        self.groups: list[VfioGroup] = []

    def find(self, iommu_group: IommuGroup) -> VfioGroup | None:
        """vfio_group_find_from_iommu()."""
        return next((g for g in self.groups if g.iommu_group is iommu_group), None)

    def by_name(self, name: str) -> VfioGroup:
        """The group behind /dev/vfio/<name> (ENOENT)."""
        for g in self.groups:
            if g.name == name:
                return g
        raise UapiError(errno.ENOENT, f"/dev/vfio/{name} does not exist")

    def register_device(self, device: VfioDevice, gtype: int = VFIO_IOMMU) -> VfioGroup:
        """vfio_device_set_group() + vfio_device_group_register(): the device's IOMMU group's VFIO group
        (a fresh IOMMU group for an emulated device, or for a device without one in no-IOMMU mode)."""
        if gtype == VFIO_IOMMU:
            dev = device.iommu_dev
            iommu_group = dev.group if dev is not None else None
            if iommu_group is None:
                if not self.noiommu:
                    raise UapiError(errno.EINVAL, f"{device.name} has no IOMMU group")
                group = self._create(IommuGroup(), VFIO_NO_IOMMU)  # vfio_noiommu_group_alloc()
            else:
                found = self.find(iommu_group)
                if found is not None:
                    if device in found.devices:
                        raise UapiError(errno.EINVAL, f"{device.name} is already in group {found.name}")
                    found.drivers += 1
                    group = found
                else:
                    group = self._create(iommu_group, VFIO_IOMMU)
        elif gtype in (VFIO_EMULATED_IOMMU, VFIO_NO_IOMMU):
            group = self._create(IommuGroup(), gtype)
        else:
            raise UapiError(errno.EINVAL, f"group type {gtype}")
        device.group = group
        group.devices.append(device)
        return group

    def _create(self, iommu_group: IommuGroup, gtype: int) -> VfioGroup:
        group = VfioGroup(self, iommu_group, gtype)
        self.groups.insert(0, group)
        return group

    def unregister_device(self, device: VfioDevice) -> None:
        """vfio_device_group_unregister() + vfio_device_remove_group(): the last device takes the group
        away (detaching it from its container)."""
        group = device.group
        if not isinstance(group, VfioGroup):
            return
        if device in group.devices:
            group.devices.remove(device)
        device.group = None
        group.drivers -= 1
        if group.drivers:
            return
        self.groups.remove(group)
        if group.container is not None:
            group.container.detach_group(group)
        group.iommu_group = None

    def open(self, group: VfioGroup | str, process: UserProcess) -> VfioGroupFile:
        """open("/dev/vfio/$GROUP") (vfio_group_fops_open): ENODEV once no driver holds the group, EPERM
        for a no-IOMMU group without CAP_SYS_RAWIO, EBUSY while a device cdev of it is open or the group
        is already open."""
        g = self.by_name(group) if isinstance(group, str) else group
        if g.drivers == 0:
            raise UapiError(errno.ENODEV, f"group {g.name} is being removed")
        if g.type == VFIO_NO_IOMMU and not Task.of(process).cap_sys_rawio:
            raise UapiError(errno.EPERM, "no-IOMMU group needs CAP_SYS_RAWIO")
        if g.cdev_device_open_cnt:
            raise UapiError(errno.EBUSY, f"a device of group {g.name} is open through its cdev")
        if g.opened_file is not None:
            raise UapiError(errno.EBUSY, f"group {g.name} is already open")
        f = VfioGroupFile(g, process)
        g.opened_file = f
        return f


__all__ = ["VFIO_EMULATED_IOMMU", "VFIO_GROUP_FLAGS_CONTAINER_SET", "VFIO_GROUP_FLAGS_VIABLE",
           "VFIO_GROUP_GET_DEVICE_FD", "VFIO_GROUP_GET_STATUS", "VFIO_GROUP_SET_CONTAINER",
           "VFIO_GROUP_UNSET_CONTAINER", "VFIO_IOMMU", "VFIO_NO_IOMMU", "VfioGroup", "VfioGroupFile", "VfioGroups",
           "vfio_group_status"]
