"""vIOMMU, vDEVICE, vEVENTQ and HW queue objects (``drivers/iommu/iommufd/viommu.c``, ``eventq.c``,
``driver.c``).

A vIOMMU is a slice of one physical IOMMU for one VM, made from a device and a NEST_PARENT HWPT (which
it holds); nested HWPTs can be allocated on it, a vDEVICE gives a bound device its virtual ID there, a
vEVENTQ (one per type) carries driver events to userspace through a file, and a HW queue hands a guest
queue's physically contiguous, pinned memory to the hardware.  What a vIOMMU does is the IOMMU
driver's (:class:`ViommuDriver` methods on the IOMMU core's driver object returning
:class:`ViommuOps`; the selftest mock's driver has them).
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol, cast

from vfiolab.errors import UapiError
from vfiolab.faultinject import fail_point
from vfiolab.iommufd import uapi
from vfiolab.iommufd.access import IommufdAccess
from vfiolab.iommufd.fault import EventqFile, eventq_install
from vfiolab.iommufd.hw_pagetable import HwptNested, HwptPaging, get_hwpt_paging
from vfiolab.iommufd.objects import IommufdObject, ObjType
from vfiolab.iommufd.uapi import (
    IOMMU_VEVENTQ_FLAG_LOST_EVENTS,
    PAGE_SIZE,
    U64_MAX,
    ULONG_MAX,
    iommufd_vevent_header,
)
from vfiolab.iommufd.userdata import UserData

if TYPE_CHECKING:
    from vfiolab.iommufd.device import IommufdDevice
    from vfiolab.iommufd.main import Iommufd
    from vfiolab.iommufd.ucmd import Ucmd

VEVENTQ_MAX_DEPTH: Final = 1 << 19
INT_MAX: Final = (1 << 31) - 1


class ViommuOps(Protocol):
    """struct iommufd_viommu_ops, as a driver model implements it."""

    def destroy(self) -> None: ...

    def alloc_domain_nested(self, idev: IommufdDevice, flags: int, ud: UserData) -> Any:
        """A NESTED domain on this vIOMMU (``idev`` is the allocating device: the model's domain
        allocators take one)."""
        ...

    def cache_invalidate(self, ud: UserData) -> int:
        """Handle ``ud.entry_num`` entries in order; return how many were handled, or raise a
        UapiError carrying ``handled``."""
        ...

    def get_hw_queue_size(self, queue_type: int) -> int:
        """Non-zero when the vIOMMU has HW queues of ``queue_type``."""
        ...

    def hw_queue_init_phys(self, queue: IommufdHwQueue, index: int, base_pa: int) -> None:
        """Give the queue at physical ``base_pa`` to the hardware; may set ``queue.on_destroy``."""
        ...


class ViommuDriver(Protocol):
    """ops->get_viommu_size / ops->viommu_init of an IOMMU driver (an IOMMU core driver model that
    supports vIOMMUs has these two methods)."""

    def get_viommu_size(self, dev: Any, viommu_type: int) -> int:
        """Non-zero when ``dev``'s IOMMU can make a vIOMMU of ``viommu_type``."""
        ...

    def viommu_init(self, viommu: IommufdViommu, parent_domain: Any, ud: UserData | None) -> ViommuOps:
        """ops->viommu_init(): the vIOMMU's ops, or a UapiError."""
        ...


class IommufdViommu(IommufdObject):
    """struct iommufd_viommu."""

    type = ObjType.VIOMMU

    def __init__(self, ictx: Iommufd, hwpt: HwptPaging, viommu_type: int, iommu_dev: Any) -> None:
        super().__init__(ictx)
        self.hwpt = hwpt
        self.viommu_type = viommu_type
        self.iommu_dev = iommu_dev
        """The physical IOMMU (unit) this vIOMMU is a slice of."""
        self.vdevs: dict[int, IommufdVdevice] = {}
        """virt_id -> vDEVICE (the vdevs xarray)."""
        self.veventqs: list[IommufdVeventq] = []
        self.ops: ViommuOps | None = None

    def destroy(self) -> None:
        # iommufd_viommu_destroy()
        if self.ops is not None:
            self.ops.destroy()
        self.hwpt.users -= 1
        self.vdevs.clear()

    # the HWPT_ALLOC / HWPT_INVALIDATE hooks of hw_pagetable.py
    def alloc_hwpt_nested(self, idev: IommufdDevice, flags: int, ud: UserData) -> HwptNested:
        """iommufd_hwpt_alloc()'s vIOMMU branch: EINVAL for a device behind another IOMMU, then
        iommufd_viommu_alloc_hwpt_nested()."""
        if self.iommu_dev is not idev.dev.unit:
            raise UapiError(errno.EINVAL, "the device is behind another IOMMU")
        if flags & ~(uapi.IOMMU_HWPT_FAULT_ID_VALID | uapi.IOMMU_HWPT_ALLOC_PASID):
            raise UapiError(errno.EOPNOTSUPP, f"nested HWPT flags {flags:#x}")
        if not ud.len or self.ops is None:
            raise UapiError(errno.EOPNOTSUPP, "no driver data or no nested domains on this vIOMMU")
        ictx = self.ictx
        hwpt = ictx.objects.alloc(HwptNested(ictx, self.hwpt, viommu=self))
        hwpt.pasid_compat = bool(flags & uapi.IOMMU_HWPT_ALLOC_PASID)
        self.users += 1
        try:
            hwpt.domain = self.ops.alloc_domain_nested(idev, flags & ~uapi.IOMMU_HWPT_FAULT_ID_VALID, ud)
        except UapiError:
            ictx.objects.abort_and_destroy(hwpt)
            raise
        return hwpt

    def cache_invalidate(self, ud: UserData) -> int:
        """viommu->ops->cache_invalidate()."""
        if self.ops is None:
            raise UapiError(errno.EOPNOTSUPP, "no cache invalidation")
        return self.ops.cache_invalidate(ud)

    # driver.c helpers
    def find_dev(self, vdev_id: int) -> Any:
        """iommufd_viommu_find_dev(): the physical device of a virtual ID, or None."""
        vdev = self.vdevs.get(vdev_id)
        return vdev.idev.dev if vdev is not None else None

    def get_vdev_id(self, dev: Any) -> int:
        """iommufd_viommu_get_vdev_id(): ENOENT when the device has no vDEVICE here."""
        for virt_id, vdev in self.vdevs.items():
            if vdev.idev.dev is dev:
                return virt_id
        raise UapiError(errno.ENOENT, "the device has no vDEVICE on this vIOMMU")

    def report_event(self, event_type: int, data: bytes) -> None:
        """iommufd_viommu_report_event(): EOPNOTSUPP without a vEVENTQ of that type; a full queue
        records lost events."""
        q = next((q for q in self.veventqs if q.event_type == event_type), None)
        if q is None:
            raise UapiError(errno.EOPNOTSUPP, f"no vEVENTQ of type {event_type:#x}")
        q.report(data)


@dataclass
class Vevent:
    """struct iommufd_vevent: a header and the event data (the lost-events header has none)."""

    flags: int
    data: bytes = b""
    sequence: int = 0


class IommufdVeventq(IommufdObject):
    """struct iommufd_veventq."""

    type = ObjType.VEVENTQ

    def __init__(self, ictx: Iommufd, viommu: IommufdViommu, event_type: int, depth: int) -> None:
        super().__init__(ictx)
        self.viommu = viommu
        self.event_type = event_type
        self.depth = depth
        self.num_events = 0
        self.sequence = 0
        self.deliver: list[Vevent] = []
        self.lost = Vevent(IOMMU_VEVENTQ_FLAG_LOST_EVENTS)
        self.file: EventqFile | None = None

    def destroy(self) -> None:
        # iommufd_veventq_abort()
        self.deliver.clear()
        self.viommu.users -= 1
        if self in self.viommu.veventqs:
            self.viommu.veventqs.remove(self)

    def _handler(self, vevent: Vevent) -> None:
        # iommufd_vevent_handler(): the lost-events header moves to the tail with a new sequence
        if self.deliver and self.deliver[-1] is self.lost:
            self.deliver.pop()
        self.deliver.append(vevent)
        vevent.sequence = self.sequence
        self.sequence = (self.sequence + 1) & INT_MAX

    def report(self, data: bytes) -> None:
        if self.num_events == self.depth:
            self._handler(self.lost)
            return
        self.num_events += 1
        self._handler(Vevent(0, bytes(data)))

    def fops_read(self, count: int) -> bytes:
        """iommufd_veventq_fops_read(): headers and data, whole events only."""
        hdr = iommufd_vevent_header.size
        if count < hdr:
            raise UapiError(errno.EINVAL, f"read size {count} below a vEVENT header")
        out = bytearray()
        while self.deliver:
            cur = self.deliver[0]
            if len(out) >= count or hdr > count - len(out):
                break
            if cur is not self.lost and hdr + len(cur.data) > count - len(out):
                if not out:
                    raise UapiError(errno.EINVAL, "the first vEVENT does not fit the read")
                break
            self.deliver.pop(0)
            out += iommufd_vevent_header.pack(flags=cur.flags, sequence=cur.sequence) + cur.data
            if cur is not self.lost:
                self.num_events -= 1
        return bytes(out)


class IommufdVdevice(IommufdObject):
    """struct iommufd_vdevice: holds its device (a users reference) and its vIOMMU."""

    type = ObjType.VDEVICE

    def __init__(self, ictx: Iommufd, viommu: IommufdViommu, idev: IommufdDevice, virt_id: int) -> None:
        super().__init__(ictx)
        self.viommu = viommu
        self.idev = idev
        self.virt_id = virt_id

    def abort(self) -> None:
        # iommufd_vdevice_abort(): xa_cmpxchg() clears the slot only if it is still this vDEVICE
        if self.viommu.vdevs.get(self.virt_id) is self:
            del self.viommu.vdevs[self.virt_id]
        self.viommu.users -= 1
        self.idev.vdev = None

    def destroy(self) -> None:
        # iommufd_vdevice_destroy(): abort, then put the device reference
        self.abort()
        self.idev.users -= 1


class IommufdHwQueue(IommufdObject):
    """struct iommufd_hw_queue."""

    type = ObjType.HW_QUEUE

    def __init__(self, ictx: Iommufd) -> None:
        super().__init__(ictx)
        self.viommu: IommufdViommu | None = None
        self.access: IommufdAccess | None = None
        self.queue_type = 0
        self.base_addr = 0
        self.length = 0
        self.on_destroy: Callable[[IommufdHwQueue], None] | None = None
        """hw_queue->destroy, set by the driver's init."""
        self.index = 0
        self.prev: IommufdHwQueue | None = None
        """Driver state (the selftest's mock_hw_queue index and the queue it depends on)."""

    def destroy(self) -> None:
        # iommufd_hw_queue_destroy()
        if self.on_destroy is not None:
            self.on_destroy(self)
        if self.access is not None:  # iommufd_hw_queue_destroy_access()
            aligned = self.base_addr & ~(PAGE_SIZE - 1)
            offset = self.base_addr - aligned
            self.access.unpin_pages(aligned, -(-(self.length + offset) // PAGE_SIZE) * PAGE_SIZE)
            self.access.detach()
            self.ictx.objects.destroy_user(self.access)
            self.access = None
        if self.viommu is not None:
            self.viommu.users -= 1


def object_depend(dependent: IommufdObject, depended: IommufdObject) -> None:
    """_iommufd_object_depend(): EINVAL for self or cross-type dependencies."""
    if dependent is depended or dependent.type != depended.type:
        raise UapiError(errno.EINVAL, "bad object dependency")
    depended.users += 1


def object_undepend(dependent: IommufdObject, depended: IommufdObject) -> None:
    """_iommufd_object_undepend()."""
    depended.users -= 1


def _get_viommu(ictx: Iommufd, viommu_id: int) -> IommufdViommu:
    obj = ictx.objects.get(viommu_id, ObjType.VIOMMU)
    assert isinstance(obj, IommufdViommu)
    return obj


# ---------------------------------------------------------------------- ioctls
def viommu_alloc(ucmd: Ucmd) -> int:
    """IOMMU_VIOMMU_ALLOC (viommu.c iommufd_viommu_alloc_ioctl)."""
    from vfiolab.iommufd.device import get_device
    cmd = ucmd.cmd
    ictx = ucmd.ictx
    if cmd["flags"] or cmd["type"] == uapi.IOMMU_VIOMMU_TYPE_DEFAULT:
        raise UapiError(errno.EOPNOTSUPP, "flags set or type DEFAULT")
    idev = get_device(ictx, cmd["dev_id"])
    drv = cast("ViommuDriver", idev.driver)
    if not hasattr(drv, "viommu_init") or not drv.get_viommu_size(idev.dev, cmd["type"]):
        raise UapiError(errno.EOPNOTSUPP, f"{idev.driver.name}: no vIOMMU of type {cmd['type']:#x}")
    hwpt = get_hwpt_paging(ictx, cmd["hwpt_id"])
    if not hwpt.nest_parent:
        raise UapiError(errno.EINVAL, "the HWPT is not a nest parent")
    viommu = ucmd.alloc_obj(IommufdViommu(ictx, hwpt, cmd["type"], idev.dev.unit))
    hwpt.users += 1
    ud = UserData(cmd["type"], cmd["data_uptr"], cmd["data_len"])
    viommu.ops = drv.viommu_init(viommu, hwpt.domain, ud if ud.len else None)
    cmd["out_viommu_id"] = viommu.id
    ucmd.respond()
    return 0


def vdevice_alloc(ucmd: Ucmd) -> int:
    """IOMMU_VDEVICE_ALLOC: one vDEVICE per device; virt_id unique per vIOMMU (EEXIST)."""
    from vfiolab.iommufd.device import get_device
    cmd = ucmd.cmd
    ictx = ucmd.ictx
    virt_id = cmd["virt_id"]
    if virt_id > ULONG_MAX:
        raise UapiError(errno.EINVAL, "virt_id beyond ULONG_MAX")
    viommu = _get_viommu(ictx, cmd["viommu_id"])
    idev = get_device(ictx, cmd["dev_id"])
    if viommu.iommu_dev is not idev.dev.unit:
        raise UapiError(errno.EINVAL, "the device is behind another IOMMU")
    if idev.destroying:
        raise UapiError(errno.ENOENT, "the device is going away")
    if idev.vdev is not None:
        raise UapiError(errno.EEXIST, "the device already has a vDEVICE")
    vdev = ictx.objects.alloc(IommufdVdevice(ictx, viommu, idev, virt_id))
    viommu.users += 1
    idev.vdev = vdev
    idev.users += 1  # the vDEVICE keeps the device reference it looked up
    try:
        fail_point("iommufd_vdevice_alloc_ioctl: xa_insert(&viommu->vdevs)")
    except UapiError:
        idev.users -= 1
        ictx.objects.abort_and_destroy(vdev)
        raise
    if virt_id in viommu.vdevs:
        idev.users -= 1
        ictx.objects.abort_and_destroy(vdev)
        raise UapiError(errno.EEXIST, f"virt_id {virt_id:#x} is taken")
    viommu.vdevs[virt_id] = vdev
    cmd["out_vdevice_id"] = vdev.id
    try:
        ucmd.respond()
    except UapiError:
        idev.users -= 1
        ictx.objects.abort_and_destroy(vdev)
        raise
    ictx.objects.finalize(vdev)
    return 0


def veventq_alloc(ucmd: Ucmd) -> int:
    """IOMMU_VEVENTQ_ALLOC: one queue per type and vIOMMU (EEXIST)."""
    cmd = ucmd.cmd
    ictx = ucmd.ictx
    if cmd["flags"] or cmd["__reserved"] or cmd["type"] == uapi.IOMMU_VEVENTQ_TYPE_DEFAULT:
        raise UapiError(errno.EOPNOTSUPP, "flags/__reserved set or type DEFAULT")
    if not cmd["veventq_depth"] or cmd["veventq_depth"] > VEVENTQ_MAX_DEPTH:
        raise UapiError(errno.EINVAL, f"depth {cmd['veventq_depth']}")
    viommu = _get_viommu(ictx, cmd["viommu_id"])
    if any(q.event_type == cmd["type"] for q in viommu.veventqs):
        raise UapiError(errno.EEXIST, f"a vEVENTQ of type {cmd['type']:#x} exists")
    q = ictx.objects.alloc(IommufdVeventq(ictx, viommu, cmd["type"], cmd["veventq_depth"]))
    viommu.users += 1
    viommu.veventqs.append(q)
    q.file = eventq_install(ucmd, q, "[iommufd-viommu-event]", "out_veventq_id", "out_veventq_fd")
    return 0


def _hw_queue_alloc_phys(ictx: Iommufd, cmd: dict[str, int], viommu: IommufdViommu) -> tuple[IommufdAccess, int]:
    # iommufd_hw_queue_alloc_phys(): pin the queue through an internal access; it must be contiguous
    aligned = cmd["nesting_parent_iova"] & ~(PAGE_SIZE - 1)
    offset = cmd["nesting_parent_iova"] - aligned
    length = offset + cmd["length"] + PAGE_SIZE - 1
    if length > ULONG_MAX:
        raise UapiError(errno.ERANGE, "queue length overflows")
    npages = length // PAGE_SIZE
    length = npages * PAGE_SIZE
    fail_point("iommufd_hw_queue_alloc_phys: kvzalloc(pages)")
    access = ictx.objects.alloc(IommufdAccess(ictx, None, internal=True))
    access.users += 1
    ictx.objects.finalize(access)
    try:
        access.change_ioas(viommu.hwpt.ioas)
        try:
            frames = access.pin_pages(aligned, length, 0)
            if len(frames) > 1 and (frames[1:] != frames[:-1] + 1).any():
                access.unpin_pages(aligned, length)
                raise UapiError(errno.EFAULT, "the queue memory is not physically contiguous")
        except UapiError:
            access.detach()
            raise
    except UapiError:
        ictx.objects.destroy_user(access)
        raise
    return access, int(frames[0]) * PAGE_SIZE + offset


def hw_queue_alloc(ucmd: Ucmd) -> int:
    """IOMMU_HW_QUEUE_ALLOC."""
    cmd = ucmd.cmd
    ictx = ucmd.ictx
    if cmd["flags"] or cmd["type"] == uapi.IOMMU_HW_QUEUE_TYPE_DEFAULT:
        raise UapiError(errno.EOPNOTSUPP, "flags set or type DEFAULT")
    if not cmd["length"]:
        raise UapiError(errno.EINVAL, "zero length")
    if cmd["nesting_parent_iova"] + cmd["length"] - 1 > U64_MAX:
        raise UapiError(errno.EOVERFLOW, "base + length overflows")
    viommu = _get_viommu(ictx, cmd["viommu_id"])
    if viommu.ops is None or not viommu.ops.get_hw_queue_size(cmd["type"]):
        raise UapiError(errno.EOPNOTSUPP, f"no HW queue of type {cmd['type']:#x}")
    q = ucmd.alloc_obj(IommufdHwQueue(ictx))
    access, base_pa = _hw_queue_alloc_phys(ictx, cmd, viommu)
    q.viommu = viommu
    viommu.users += 1
    q.access = access
    q.queue_type = cmd["type"]
    q.length = cmd["length"]
    q.base_addr = cmd["nesting_parent_iova"]
    viommu.ops.hw_queue_init_phys(q, cmd["index"], base_pa)
    cmd["out_hw_queue_id"] = q.id
    ucmd.respond()
    return 0


__all__ = [
    "IommufdHwQueue",
    "IommufdVdevice",
    "IommufdVeventq",
    "IommufdViommu",
    "Vevent",
    "ViommuDriver",
    "ViommuOps",
    "hw_queue_alloc",
    "object_depend",
    "object_undepend",
    "vdevice_alloc",
    "veventq_alloc",
    "viommu_alloc",
]
