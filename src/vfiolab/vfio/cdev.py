"""The VFIO device cdev (``drivers/vfio/device_cdev.c``) and the physical-device iommufd ops
(``drivers/vfio/iommufd.c``): open ``/dev/vfio/devices/vfioX``, VFIO_DEVICE_BIND_IOMMUFD (with the SR-IOV
VF token), VFIO_DEVICE_ATTACH/DETACH_IOMMUFD_PT (RID or PASID, attach again = replace), unbind on close.

The iommufd side goes through the Iommufd model's device API (:mod:`vfiolab.iommufd.device`), so after
ATTACH the device's DMA is translated by the attached HWPT's page table.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Any

from vfiolab.errors import UapiError
from vfiolab.iommufd import device as idevice
from vfiolab.iommufd.main import Iommufd
from vfiolab.iommufd.ucmd import UserBuffer, copy_struct_from_user, get_user_u32
from vfiolab.memory import UserProcess
from vfiolab.vfio import uapi as U
from vfiolab.vfio.device import VfioDevice, VfioDeviceFile, vfio_df_close, vfio_df_open

if TYPE_CHECKING:
    from vfiolab.iommu.device import IommuDevice

IOMMU_NO_PASID = 0


# ---------------------------------------------------------------------- group blocking (group.c)
def _block_group(device: VfioDevice) -> None:
    """vfio_device_block_group(): EBUSY while the device's group is open through /dev/vfio/N."""
    group: Any = device.group
    if group is not None:
        group.block_group()


def _unblock_group(device: VfioDevice) -> None:
    """vfio_device_unblock_group()."""
    group: Any = device.group
    if group is not None:
        group.unblock_group()


# ---------------------------------------------------------------------- the file operations
class Cdev:
    """The cdev part of a device file (``df->group == NULL``)."""

    def bind_iommufd(self, df: VfioDeviceFile, ubuf: UserBuffer) -> int:
        """vfio_df_ioctl_bind_iommufd()."""
        st = U.vfio_device_bind_iommufd
        minsz = st.offsetofend("out_devid")
        user_size = get_user_u32(ubuf)
        if user_size < minsz:
            raise UapiError(errno.EINVAL, f"argsz {user_size} < {minsz}")
        bind = st.unpack(copy_struct_from_user(st.size, ubuf, user_size))
        if bind["iommufd"] < 0 or bind["flags"] & ~U.VFIO_DEVICE_BIND_FLAG_TOKEN:
            raise UapiError(errno.EINVAL, f"iommufd {bind['iommufd']} / flags {bind['flags']:#x}")
        device = df.device
        _block_group(device)
        try:
            if df.access_granted:
                raise UapiError(errno.EINVAL, "the device file is already bound")
            _check_token(df, bind)
            ictx = iommufd_ctx_from_fd(df, bind["iommufd"])
            ictx.ctx_get()
            df.iommufd = ictx
            try:
                vfio_df_open(df)
                try:
                    ubuf.write(st.field("out_devid").offset, df.devid.to_bytes(4, "little"))
                except UapiError:
                    vfio_df_close(df)
                    raise
            except UapiError:
                ictx.ctx_put()
                df.iommufd = None
                raise
        except UapiError:
            _unblock_group(device)
            raise
        device.cdev_opened = True
        df.access_granted = True
        return 0

    def attach_pt(self, df: VfioDeviceFile, ubuf: UserBuffer) -> int:
        """vfio_df_ioctl_attach_pt(): argsz/flags checks, the PASID extension read only with its flag."""
        st = U.vfio_device_attach_iommufd_pt
        minsz = st.offsetofend("pt_id")
        attach = st.unpack(ubuf.read(0, minsz) + bytes(st.size - minsz))
        if attach["argsz"] < minsz:
            raise UapiError(errno.EINVAL, f"argsz {attach['argsz']} < {minsz}")
        if attach["flags"] & ~U.VFIO_DEVICE_ATTACH_PASID:
            raise UapiError(errno.EINVAL, f"flags {attach['flags']:#x}")
        device = df.device
        pasid_mode = bool(attach["flags"] & U.VFIO_DEVICE_ATTACH_PASID)
        if pasid_mode:
            if not device.has("pasid_attach_ioas"):
                raise UapiError(errno.EOPNOTSUPP, "the driver cannot attach PASIDs")
            xend = st.offsetofend("pasid")
            if attach["argsz"] < xend:
                raise UapiError(errno.EINVAL, f"argsz {attach['argsz']} < {xend} with ATTACH_PASID")
            attach["pasid"] = int.from_bytes(ubuf.read(minsz, xend - minsz), "little")
            pt_id = device.pasid_attach_ioas(attach["pasid"], attach["pt_id"])
        else:
            pt_id = device.attach_ioas(attach["pt_id"])
        try:
            ubuf.write(st.field("pt_id").offset, pt_id.to_bytes(4, "little"))
        except UapiError:
            device.detach_ioas()  # out_detach: the kernel detaches the RID even for a PASID attach
            raise
        return 0

    def detach_pt(self, df: VfioDeviceFile, ubuf: UserBuffer) -> int:
        """vfio_df_ioctl_detach_pt()."""
        st = U.vfio_device_detach_iommufd_pt
        minsz = st.offsetofend("flags")
        detach = st.unpack(ubuf.read(0, minsz) + bytes(st.size - minsz))
        if detach["argsz"] < minsz:
            raise UapiError(errno.EINVAL, f"argsz {detach['argsz']} < {minsz}")
        if detach["flags"] & ~U.VFIO_DEVICE_DETACH_PASID:
            raise UapiError(errno.EINVAL, f"flags {detach['flags']:#x}")
        device = df.device
        if detach["flags"] & U.VFIO_DEVICE_DETACH_PASID:
            if not device.has("pasid_detach_ioas"):
                raise UapiError(errno.EOPNOTSUPP, "the driver cannot detach PASIDs")
            xend = st.offsetofend("pasid")
            if detach["argsz"] < xend:
                raise UapiError(errno.EINVAL, f"argsz {detach['argsz']} < {xend} with DETACH_PASID")
            device.pasid_detach_ioas(int.from_bytes(ubuf.read(minsz, xend - minsz), "little"))
        else:
            device.detach_ioas()
        return 0

    def release(self, df: VfioDeviceFile) -> None:
        """vfio_df_unbind_iommufd() from the file's release."""
        if not df.access_granted:
            return
        vfio_df_close(df)
        if df.iommufd is not None:
            df.iommufd.ctx_put()
        df.device.cdev_opened = False
        df.access_granted = False
        _unblock_group(df.device)


def _check_token(df: VfioDeviceFile, bind: dict[str, int]) -> None:
    """vfio_df_check_token(): a token flag without the driver op is EINVAL; the 16-byte UUID is read from
    ``token_uuid_ptr`` in the caller's memory."""
    device = df.device
    want = bool(bind["flags"] & U.VFIO_DEVICE_BIND_FLAG_TOKEN)
    if not device.has("match_token_uuid"):
        if want:
            raise UapiError(errno.EINVAL, "VF token given but the driver has no tokens")
        return
    uuid = None
    if want:
        uuid = df.process.read(bind["token_uuid_ptr"], U.UUID_SIZE) if bind["token_uuid_ptr"] else None
        if uuid is None:
            raise UapiError(errno.EFAULT, "token_uuid_ptr is NULL")
    device.match_token_uuid(uuid)


def iommufd_ctx_from_fd(df: VfioDeviceFile, fd: int) -> Iommufd:
    """iommufd_ctx_from_fd(): EBADF for a closed fd, EBADFD for a file that is not /dev/iommu."""
    obj = df.task.fds.get(fd)
    if obj is None:
        raise UapiError(errno.EBADF, f"fd {fd} is not open")
    if not isinstance(obj, Iommufd) or obj.closed:
        raise UapiError(errno.EBADFD, f"fd {fd} is not an iommufd")
    return obj


def open_cdev(device: VfioDevice, process: UserProcess) -> VfioDeviceFile:
    """open() of /dev/vfio/devices/vfioX (vfio_device_fops_cdev_open): ENODEV once unregistered; nothing
    but BIND_IOMMUFD works until bound."""
    if not device.registered:
        raise UapiError(errno.ENODEV, f"{device.name} is not registered")
    return VfioDeviceFile(device, process, cdev=Cdev())


# ---------------------------------------------------------------------- physical ops (iommufd.c)
def physical_bind(device: VfioDevice, ictx: Iommufd) -> int:
    """vfio_iommufd_physical_bind(): iommufd_device_bind() on the physical device; the new dev_id."""
    dev: IommuDevice | None = device.iommu_dev
    if dev is None:
        raise UapiError(errno.ENODEV, f"{device.name} has no IOMMU device")
    idev = idevice.device_bind(ictx, dev)
    device.iommufd_device = idev
    device.pasids = set()
    return idev.id


def physical_unbind(device: VfioDevice) -> None:
    """vfio_iommufd_physical_unbind(): detach every PASID, then the RID, then unbind."""
    idev = device.iommufd_device
    if idev is None:
        return
    for pasid in sorted(device.pasids):
        idevice.device_detach(idev, pasid)
    device.pasids = set()
    if device.iommufd_attached:
        idevice.device_detach(idev, IOMMU_NO_PASID)
        device.iommufd_attached = False
    idevice.device_unbind(idev)
    device.iommufd_device = None


def _idev(device: VfioDevice) -> idevice.IommufdDevice:
    if device.iommufd_device is None:  # WARN_ON in the kernel
        raise UapiError(errno.EINVAL, f"{device.name} is not bound to an iommufd")
    return device.iommufd_device


def physical_attach_ioas(device: VfioDevice, pt_id: int) -> int:
    """vfio_iommufd_physical_attach_ioas(): replace when already attached."""
    idev = _idev(device)
    if device.iommufd_attached:
        pt_id = idevice.device_replace(idev, IOMMU_NO_PASID, pt_id)
    else:
        pt_id = idevice.device_attach(idev, IOMMU_NO_PASID, pt_id)
    device.iommufd_attached = True
    return pt_id


def physical_detach_ioas(device: VfioDevice) -> None:
    """vfio_iommufd_physical_detach_ioas(): a no-op when not attached."""
    if device.iommufd_device is None or not device.iommufd_attached:
        return
    idevice.device_detach(device.iommufd_device, IOMMU_NO_PASID)
    device.iommufd_attached = False


def physical_pasid_attach_ioas(device: VfioDevice, pasid: int, pt_id: int) -> int:
    """vfio_iommufd_physical_pasid_attach_ioas(): replace a PASID already attached."""
    idev = _idev(device)
    if pasid in device.pasids:
        return idevice.device_replace(idev, pasid, pt_id)
    device.pasids.add(pasid)  # ida_alloc_range(pasid, pasid)
    try:
        return idevice.device_attach(idev, pasid, pt_id)
    except UapiError:
        device.pasids.discard(pasid)
        raise


def physical_pasid_detach_ioas(device: VfioDevice, pasid: int) -> None:
    """vfio_iommufd_physical_pasid_detach_ioas(): a no-op for a PASID not attached."""
    if device.iommufd_device is None or pasid not in device.pasids:
        return
    idevice.device_detach(device.iommufd_device, pasid)
    device.pasids.discard(pasid)


def get_dev_id(device: VfioDevice, ictx: Iommufd | None) -> int:
    """vfio_iommufd_get_dev_id(): the dev_id when bound to ``ictx``; -ENOENT when the context owns the
    device's group without an ID for it; -ENODEV when not owned."""
    idev = device.iommufd_device
    if idev is not None and idev.ictx is ictx:
        return idev.id
    dev = device.iommu_dev
    if dev is None or dev.group is None or ictx is None:
        return -errno.ENODEV
    return -errno.ENOENT if dev.group.id in ictx.groups else -errno.ENODEV
