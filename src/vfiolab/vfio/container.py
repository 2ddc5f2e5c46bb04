"""The legacy VFIO container, ``/dev/vfio/vfio`` (``drivers/vfio/container.c``): API version, extension
checks, SET_IOMMU choosing a registered IOMMU driver (type1, and vfio-noiommu when the kernel has it), and
every other ioctl passed through to the chosen driver.

A container is unprivileged until a group is added (VFIO_GROUP_SET_CONTAINER): only then can SET_IOMMU
open the driver, which attaches every group; removing the last group releases the driver again.  The
methods are named like :class:`vfiolab.iommufd.Iommufd`'s VFIO compatibility methods, so a scenario can run
against this container or against an iommufd opened as ``/dev/vfio/vfio``.
"""

from __future__ import annotations

import errno
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol

from vfiolab.errors import UapiError
from vfiolab.iommu import group as core
from vfiolab.iommufd import uapi as iu
from vfiolab.iommufd.task import Task
from vfiolab.iommufd.ucmd import LocalBuffer, ProcessBuffer, UserBuffer
from vfiolab.memory import PAGE_SIZE, UserProcess
from vfiolab.vfio.type1 import (
    VFIO_EMULATED_IOMMU,
    VFIO_IOMMU,
    VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP,
    VFIO_IOMMU_DIRTY_PAGES_FLAG_START,
    VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP,
    VFIO_NO_IOMMU,
    Type1Driver,
    VfioIommuType1,
    vfio_bitmap,
    vfio_iommu_type1_dirty_bitmap,
    vfio_iommu_type1_dirty_bitmap_get,
)

if TYPE_CHECKING:
    from vfiolab.iommufd.main import Iommufd
    from vfiolab.vfio.group import VfioGroup

VFIO_PIN_PAGES_MAX_ENTRIES: Final = PAGE_SIZE // 8  # include/linux/vfio.h


class IommuData(Protocol):
    """What an opened IOMMU driver (``iommu_data``) does for its container."""

    def ioctl(self, cmd: int, ubuf: UserBuffer | None, arg: int) -> int: ...

    def attach_group(self, iommu_group: core.IommuGroup, gtype: int) -> None: ...

    def detach_group(self, iommu_group: core.IommuGroup) -> None: ...

    def release(self) -> None: ...


class IommuDriverOps(Protocol):
    """struct vfio_iommu_driver_ops: extension check before the driver is opened, and open."""

    @property
    def name(self) -> str: ...

    def check_extension(self, iommu: None, arg: int) -> int: ...

    def open(self, arg: int, process: UserProcess) -> IommuData: ...


class _NoiommuData:
    """vfio-noiommu's iommu_data: nothing to attach, no ioctls but CHECK_EXTENSION."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def ioctl(self, cmd: int, ubuf: UserBuffer | None, arg: int) -> int:
        if cmd == iu.VFIO_CHECK_EXTENSION:
            return int(self.enabled and arg == iu.VFIO_NOIOMMU_IOMMU)
        raise UapiError(errno.ENOTTY, f"ioctl {cmd:#x} on a no-IOMMU container")

    def attach_group(self, iommu_group: core.IommuGroup, gtype: int) -> None:
        return None

    def detach_group(self, iommu_group: core.IommuGroup) -> None:
        return None

    def release(self) -> None:
        return None


class NoiommuDriver:
    """vfio_noiommu_ops (CONFIG_VFIO_NOIOMMU): usable only with enable_unsafe_noiommu_mode."""

    name: Final = "vfio-noiommu"

    def __init__(self, enabled: bool = False) -> None:
        self.enabled = enabled
        """The enable_unsafe_noiommu_mode module parameter."""

    def check_extension(self, iommu: None, arg: int) -> int:
        return int(self.enabled and arg == iu.VFIO_NOIOMMU_IOMMU)

    def open(self, arg: int, process: UserProcess) -> _NoiommuData:
        """vfio_noiommu_open(): EINVAL for another type, EPERM without CAP_SYS_RAWIO."""
        if arg != iu.VFIO_NOIOMMU_IOMMU:
            raise UapiError(errno.EINVAL, f"IOMMU type {arg}")
        if not Task.of(process).cap_sys_rawio:
            raise UapiError(errno.EPERM, "vfio-noiommu needs CAP_SYS_RAWIO")
        return _NoiommuData(self.enabled)


def default_drivers(*, noiommu: bool = False, allow_unsafe_interrupts: bool = False) -> list[IommuDriverOps]:
    """vfio.iommu_drivers_list as Debian's kernel builds it: type1 registered last, so first in the list,
    then vfio-noiommu (registered by the vfio module itself)."""
    return [Type1Driver(allow_unsafe_interrupts=allow_unsafe_interrupts), NoiommuDriver(noiommu)]


@dataclass(frozen=True)
class Type1Info:
    """VFIO_IOMMU_GET_INFO as written back: the struct members and the raw bytes (with the caps)."""

    argsz: int
    flags: int
    iova_pgsizes: int
    cap_offset: int
    raw: bytes


class VfioContainer:
    """An open ``/dev/vfio/vfio`` (struct vfio_container) of ``process``."""

    def __init__(self, process: UserProcess, drivers: list[IommuDriverOps] | None = None) -> None:
        self.process = process
        self.drivers = drivers if drivers is not None else default_drivers()
        self.groups: list[VfioGroup] = []
        self.iommu_driver: IommuDriverOps | None = None
        self.iommu_data: IommuData | None = None
        self.noiommu = False
        self.closed = False

    # ------------------------------------------------------------------ container.c
    def _allowed(self, driver: IommuDriverOps) -> bool:
        """vfio_iommu_driver_allowed(): only noiommu containers use vfio-noiommu, and only they."""
        return self.noiommu == isinstance(driver, NoiommuDriver)

    def check_extension(self, arg: int) -> int:
        """vfio_container_ioctl_check_extension(): without a driver, the first registered driver that
        answers positively (skipping drivers not allowed once groups are attached)."""
        if self.iommu_driver is None:
            for drv in self.drivers:
                if self.groups and not self._allowed(drv):
                    continue
                ret = drv.check_extension(None, arg)
                if ret > 0:
                    return ret
            return 0
        assert self.iommu_data is not None
        return self.iommu_data.ioctl(iu.VFIO_CHECK_EXTENSION, None, arg)

    def set_iommu(self, arg: int) -> None:
        """vfio_ioctl_set_iommu(): EINVAL without a group or when a driver is set; otherwise the first
        allowed driver that supports ``arg`` and attaches every group (ENODEV when none)."""
        if not self.groups or self.iommu_driver is not None:
            raise UapiError(errno.EINVAL, "SET_IOMMU needs a group and no IOMMU driver yet")
        err = UapiError(errno.ENODEV, f"no IOMMU driver supports type {arg}")
        for drv in self.drivers:
            if not self._allowed(drv) or drv.check_extension(None, arg) <= 0:
                continue
            try:
                data = drv.open(arg, self.process)
            except UapiError as e:
                err = e
                continue
            try:
                self._attach_groups(data)
            except UapiError as e:
                data.release()
                err = e
                continue
            self.iommu_driver, self.iommu_data = drv, data
            return
        raise err

    def _attach_groups(self, data: IommuData) -> None:
        """__vfio_container_attach_groups(): all or none."""
        done: list[VfioGroup] = []
        try:
            for g in self.groups:
                assert g.iommu_group is not None
                data.attach_group(g.iommu_group, g.type)
                done.append(g)
        except UapiError:
            for g in reversed(done):
                assert g.iommu_group is not None
                data.detach_group(g.iommu_group)
            raise

    def attach_group(self, group: VfioGroup) -> None:
        """vfio_container_attach_group(): claim DMA ownership of the IOMMU group and attach it to the
        driver if one is set."""
        if group.type == VFIO_NO_IOMMU and not Task.of(self.process).cap_sys_rawio:
            raise UapiError(errno.EPERM, "no-IOMMU group needs CAP_SYS_RAWIO")
        if self.groups and self.noiommu != (group.type == VFIO_NO_IOMMU):
            raise UapiError(errno.EPERM, "real and no-IOMMU groups cannot share a container")
        assert group.iommu_group is not None
        if group.type == VFIO_IOMMU:
            core.iommu_group_claim_dma_owner(group.iommu_group, group)
        if self.iommu_data is not None:
            try:
                self.iommu_data.attach_group(group.iommu_group, group.type)
            except UapiError:
                if group.type == VFIO_IOMMU:
                    core.iommu_group_release_dma_owner(group.iommu_group)
                raise
        group.container = self
        group.container_users = 1
        self.noiommu = group.type == VFIO_NO_IOMMU
        self.groups.insert(0, group)

    def detach_group(self, group: VfioGroup) -> None:
        """vfio_group_detach_container(): the last group deprivileges the container (driver released)."""
        assert group.iommu_group is not None
        if self.iommu_data is not None:
            self.iommu_data.detach_group(group.iommu_group)
        if group.type == VFIO_IOMMU:
            core.iommu_group_release_dma_owner(group.iommu_group)
        group.container = None
        group.container_users = 0
        self.groups.remove(group)
        if self.iommu_data is not None and not self.groups:
            self.iommu_data.release()
            self.iommu_driver = self.iommu_data = None

    # ------------------------------------------------------------------ devices (vfio_device_container_*)
    def register_device(self, device: object) -> None:
        """vfio_device_container_register()."""
        hook = getattr(self.iommu_data, "register_device", None)
        if hook is not None:
            hook(device)

    def unregister_device(self, device: object) -> None:
        hook = getattr(self.iommu_data, "unregister_device", None)
        if hook is not None:
            hook(device)

    def pin_pages(self, group: VfioGroup, iova: int, npage: int, prot: int) -> list[int]:
        """vfio_device_container_pin_pages(): E2BIG beyond VFIO_PIN_PAGES_MAX_ENTRIES, ENOTTY without
        driver support; the frames pinned."""
        if npage > VFIO_PIN_PAGES_MAX_ENTRIES:
            raise UapiError(errno.E2BIG, f"{npage} pages > {VFIO_PIN_PAGES_MAX_ENTRIES}")
        if not isinstance(self.iommu_data, VfioIommuType1):
            raise UapiError(errno.ENOTTY, "the container's IOMMU driver cannot pin pages")
        assert group.iommu_group is not None
        return self.iommu_data.pin_pages(group.iommu_group, iova, npage, prot)

    def unpin_pages(self, iova: int, npage: int) -> None:
        if isinstance(self.iommu_data, VfioIommuType1) and 0 < npage <= VFIO_PIN_PAGES_MAX_ENTRIES:
            self.iommu_data.unpin_pages(iova, npage)

    def dma_rw(self, iova: int, data: bytes | bytearray | int, write: bool) -> bytes:
        """vfio_device_container_dma_rw(): ENOTTY without driver support."""
        if not isinstance(self.iommu_data, VfioIommuType1):
            raise UapiError(errno.ENOTTY, "the container's IOMMU driver has no dma_rw")
        return self.iommu_data.dma_rw(iova, data, write)

    # ------------------------------------------------------------------ the file
    def ioctl(self, cmd: int, arg: bytes | bytearray | int | None) -> bytes | int:
        """ioctl(2) (vfio_fops_unl_ioctl): bytes/bytearray are the struct (a bytearray is updated and the
        struct as written back is returned), an int is a pointer into the process, except for
        VFIO_CHECK_EXTENSION and VFIO_SET_IOMMU which take it as a value.  EINVAL for an unknown ioctl
        before SET_IOMMU; after it, whatever the driver answers (ENOTTY)."""
        if self.closed:
            raise UapiError(errno.EBADF, "container is closed")
        local: LocalBuffer | None = None
        ubuf: UserBuffer | None = None
        value = arg if isinstance(arg, int) else 0
        if isinstance(arg, (bytes, bytearray)):
            local = ubuf = LocalBuffer(arg)
        elif isinstance(arg, int) and arg and cmd not in (iu.VFIO_CHECK_EXTENSION, iu.VFIO_SET_IOMMU):
            ubuf = ProcessBuffer(self.process, arg)
        try:
            rc = self._dispatch(cmd, ubuf, value)
        except (ValueError, struct.error, OverflowError) as e:
            raise UapiError(errno.EINVAL, f"bad ioctl argument: {e}") from None
        if local is not None:
            if isinstance(arg, bytearray):
                arg[:] = local.data
            return bytes(local.data)
        return rc

    def _dispatch(self, cmd: int, ubuf: UserBuffer | None, value: int) -> int:
        if cmd == iu.VFIO_GET_API_VERSION:
            return iu.VFIO_API_VERSION
        if cmd == iu.VFIO_CHECK_EXTENSION:
            return self.check_extension(value)
        if cmd == iu.VFIO_SET_IOMMU:
            self.set_iommu(value)
            return 0
        if self.iommu_data is None:
            raise UapiError(errno.EINVAL, f"ioctl {cmd:#x} before VFIO_SET_IOMMU")
        return self.iommu_data.ioctl(cmd, ubuf, value)

    def close(self) -> None:
        """close(2): groups keep the container alive until they leave it."""
        self.closed = True

    release = close

    # ------------------------------------------------------------------ methods named like Iommufd's
    def vfio_get_api_version(self) -> int:
        """VFIO_GET_API_VERSION."""
        return int(self.ioctl(iu.VFIO_GET_API_VERSION, None))

    def vfio_check_extension(self, extension: int) -> int:
        """VFIO_CHECK_EXTENSION."""
        return int(self.ioctl(iu.VFIO_CHECK_EXTENSION, extension))

    def vfio_set_iommu(self, type: int) -> None:
        """VFIO_SET_IOMMU."""
        self.ioctl(iu.VFIO_SET_IOMMU, type)

    def vfio_iommu_get_info(self, argsz: int = 4096) -> Type1Info:
        """VFIO_IOMMU_GET_INFO with an ``argsz``-byte buffer."""
        st = iu.vfio_iommu_type1_info
        buf = bytearray(max(argsz, st.size))
        struct.pack_into("<I", buf, 0, argsz)
        self.ioctl(iu.VFIO_IOMMU_GET_INFO, buf)
        out = st.unpack(buf)
        return Type1Info(out["argsz"], out["flags"], out["iova_pgsizes"], out["cap_offset"], bytes(buf))

    def vfio_iommu_map_dma(self, vaddr: int, iova: int, size: int,
                           flags: int = iu.VFIO_DMA_MAP_FLAG_READ | iu.VFIO_DMA_MAP_FLAG_WRITE,
                           argsz: int = iu.vfio_iommu_type1_dma_map.size) -> None:
        """VFIO_IOMMU_MAP_DMA."""
        st = iu.vfio_iommu_type1_dma_map
        self.ioctl(iu.VFIO_IOMMU_MAP_DMA, st.pack(argsz=argsz, flags=flags, vaddr=vaddr, iova=iova, size=size))

    def vfio_iommu_unmap_dma(self, iova: int, size: int, flags: int = 0,
                             argsz: int = iu.vfio_iommu_type1_dma_unmap.size,
                             bitmap: tuple[int, int, int] | None = None) -> int:
        """VFIO_IOMMU_UNMAP_DMA: bytes unmapped.  ``bitmap`` = (pgsize, size, user address) goes into
        data[] for VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP."""
        st = iu.vfio_iommu_type1_dma_unmap
        raw = st.pack(argsz=argsz, flags=flags, iova=iova, size=size)
        if bitmap is not None:
            raw += vfio_bitmap.pack(pgsize=bitmap[0], size=bitmap[1], data=bitmap[2])
        buf = bytearray(raw)
        self.ioctl(iu.VFIO_IOMMU_UNMAP_DMA, buf)
        return int(st.unpack(buf)["size"])

    def vfio_iommu_dirty_pages(self, flags: int, *, iova: int = 0, size: int = 0, pgsize: int = 0,
                               bitmap_size: int = 0, data: int = 0, argsz: int | None = None) -> None:
        """VFIO_IOMMU_DIRTY_PAGES: START, STOP, or GET_BITMAP of [iova, iova+size) into user memory at
        ``data``."""
        hdr = vfio_iommu_type1_dirty_bitmap
        raw = hdr.pack(flags=flags)
        if flags & VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP:
            raw += vfio_iommu_type1_dirty_bitmap_get.pack(iova=iova, size=size, pgsize=pgsize,
                                                          bitmap_size=bitmap_size, data=data)
        buf = bytearray(raw)
        struct.pack_into("<I", buf, 0, len(raw) if argsz is None else argsz)
        self.ioctl(iu.VFIO_IOMMU_DIRTY_PAGES, buf)

    def dirty_start(self) -> None:
        self.vfio_iommu_dirty_pages(VFIO_IOMMU_DIRTY_PAGES_FLAG_START)

    def dirty_stop(self) -> None:
        self.vfio_iommu_dirty_pages(VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP)

    def __repr__(self) -> str:
        drv = self.iommu_driver.name if self.iommu_driver is not None else "none"
        return f"<VfioContainer groups={len(self.groups)} driver={drv}>"


def open_vfio_container(process: UserProcess, *, iommufd: bool = False,
                        drivers: list[IommuDriverOps] | None = None) -> VfioContainer | Iommufd:
    """open("/dev/vfio/vfio"): the legacy container, or with CONFIG_IOMMUFD_VFIO_CONTAINER (``iommufd``)
    an iommufd opened through the vfio misc device, which answers the container ioctls from its VFIO compat
    IOAS (drivers/iommu/iommufd/main.c iommufd_fops_open with the vfio misc device)."""
    if iommufd:
        from vfiolab.iommufd.main import Iommufd as _Iommufd
        return _Iommufd(process, vfio_misc=True)
    return VfioContainer(process, drivers)


__all__ = ["VFIO_EMULATED_IOMMU", "VFIO_IOMMU", "VFIO_NO_IOMMU", "VFIO_PIN_PAGES_MAX_ENTRIES", "IommuData",
           "IommuDriverOps", "NoiommuDriver", "Type1Driver", "Type1Info", "VfioContainer", "default_drivers", "open_vfio_container"]
