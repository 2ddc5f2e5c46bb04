"""iommufd_device: a device bound to an iommufd, and its attachments (``drivers/iommu/iommufd/device.c``).

Binding claims DMA ownership of the device's IOMMU group for the fd.  A device's RID (PASID 0) and each
PASID attach to one HWPT; devices of one group share the group's attachment per PASID
(``iommufd_group.pasid_attach``).  Attaching to an IOAS picks a compatible auto domain of that IOAS or
makes one.  Attach, replace and detach go through the IOMMU core's attach-handle API
(:mod:`vfiolab.iommu.group`), so the driver's compatibility rules and the core's rollback apply.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from vfiolab.errors import UapiError
from vfiolab.faultinject import fail_point
from vfiolab.iommu import group as core
from vfiolab.iommu.device import IommuDevice
from vfiolab.iommu.driver import IOMMU_CAP_CACHE_COHERENCY, IOMMU_CAP_ENFORCE_CACHE_COHERENCY, IommuDriver
from vfiolab.iommu.group import IommuGroup
from vfiolab.iommufd.hw_pagetable import (
    HwPagetable,
    HwptNested,
    HwptPaging,
    find_hwpt_paging,
    hw_pagetable_put,
    hwpt_paging_alloc,
)
from vfiolab.iommufd.ioas import Ioas
from vfiolab.iommufd.objects import IommufdObject, ObjType

if TYPE_CHECKING:
    from vfiolab.iommufd.main import Iommufd

IOMMU_NO_PASID: Final = 0
PHYS_ADDR_MAX: Final = (1 << 64) - 1
_KZALLOC_HANDLE: Final = "kzalloc(struct iommufd_attach_handle)"


@dataclass
class Attach:
    """struct iommufd_attach: the HWPT of one (group, PASID) and the devices that asked for it."""

    hwpt: HwPagetable | None = None
    devices: dict[int, IommufdDevice] = field(default_factory=dict)


@dataclass
class AttachHandle:
    """struct iommufd_attach_handle: what the core records in the group's pasid_array."""

    idev: IommufdDevice


class IommufdGroup:
    """struct iommufd_group: per fd and IOMMU group (one per group ID in ``ictx.groups``)."""

    def __init__(self, ictx: Iommufd, group: IommuGroup) -> None:
        self.ictx = ictx
        self.group = group
        self.refs = 1
        self.pasid_attach: dict[int, Attach] = {}
        self.sw_msi_start = PHYS_ADDR_MAX

    def put(self) -> None:
        """iommufd_put_group()."""
        self.refs -= 1
        if not self.refs and self.ictx.groups.get(self.group.id) is self:
            del self.ictx.groups[self.group.id]

    def first_attach(self, pasid: int) -> bool:
        """iommufd_group_first_attach()."""
        return pasid not in self.pasid_attach


def get_group(ictx: Iommufd, dev: IommuDevice) -> IommufdGroup:
    """iommufd_get_group(): ENODEV for a device without an IOMMU group."""
    if dev.group is None:
        raise UapiError(errno.ENODEV, f"{dev.name} has no IOMMU group")
    igroup = ictx.groups.get(dev.group.id)
    if igroup is not None:
        igroup.refs += 1
        return igroup
    fail_point("iommufd_get_group: kzalloc(struct iommufd_group)")
    fail_point("iommufd_get_group: xa_cmpxchg(&ictx->groups)")
    igroup = IommufdGroup(ictx, dev.group)
    ictx.groups[dev.group.id] = igroup
    return igroup


class IommufdDevice(IommufdObject):
    """struct iommufd_device."""

    type = ObjType.DEVICE

    def __init__(self, ictx: Iommufd, dev: IommuDevice, igroup: IommufdGroup) -> None:
        super().__init__(ictx)
        self.dev = dev
        self.igroup = igroup
        self.enforce_cache_coherency = False
        self.vdev: IommufdObject | None = None
        self.destroying = False
        self.is_mock = False

    @property
    def driver(self) -> IommuDriver:
        assert self.dev.unit is not None and self.dev.unit.driver is not None
        return self.dev.unit.driver

    def pre_destroy(self) -> None:
        # iommufd_device_remove_vdev(): a live vDEVICE is destroyed and its ID tombstoned
        self.destroying = True
        vdev = self.vdev
        if vdev is not None and self.ictx.objects.lookup(vdev.id) is vdev:
            vdev.users += 1
            self.ictx.objects.destroy_user(vdev, tombstone=True)

    def destroy(self) -> None:
        # iommufd_device_destroy()
        core.iommu_device_release_dma_owner(self.dev)
        self.igroup.put()


def get_device(ictx: Iommufd, dev_id: int) -> IommufdDevice:
    """iommufd_get_device()."""
    obj = ictx.objects.get(dev_id, ObjType.DEVICE)
    assert isinstance(obj, IommufdDevice)
    return obj


def device_bind(ictx: Iommufd, dev: IommuDevice, *, is_mock: bool = False) -> IommufdDevice:
    """iommufd_device_bind(): claim DMA ownership and create the device object (the caller keeps a
    users reference until :func:`device_unbind`)."""
    if dev.unit is None or dev.unit.driver is None:
        raise UapiError(errno.ENODEV, f"{dev.name} is not behind an IOMMU")
    driver = dev.unit.driver
    if not driver.capable(dev, IOMMU_CAP_CACHE_COHERENCY):
        raise UapiError(errno.EINVAL, f"{dev.name}: the IOMMU cannot keep DMA cache coherent")
    igroup = get_group(ictx, dev)
    try:
        if not is_mock and not getattr(igroup.group, "isolated_msi",
                                       True) and not ictx.allow_unsafe_interrupts:
            raise UapiError(errno.EPERM, "MSI interrupts of this group cannot be isolated")
        core.iommu_device_claim_dma_owner(dev, ictx)
    except UapiError:
        igroup.put()
        raise
    try:
        idev = ictx.objects.alloc(IommufdDevice(ictx, dev, igroup))
    except UapiError:  # out_release_owner, out_group_put
        core.iommu_device_release_dma_owner(dev)
        igroup.put()
        raise
    idev.is_mock = is_mock
    idev.enforce_cache_coherency = bool(driver.capable(dev, IOMMU_CAP_ENFORCE_CACHE_COHERENCY))
    idev.users += 1
    ictx.objects.finalize(idev)
    return idev


def device_unbind(idev: IommufdDevice) -> None:
    """iommufd_device_unbind()."""
    idev.ictx.objects.destroy_user(idev)


# ---------------------------------------------------------------------- reserved IOVA and PASID rules
def _attach_reserved_iova(idev: IommufdDevice, hwpt_paging: HwptPaging) -> None:
    # iommufd_device_attach_reserved_iova()
    igroup = idev.igroup
    start = hwpt_paging.ioas.iopt.enforce_dev_resv_regions(idev.driver.get_resv_regions(idev.dev), idev.dev,
                                                           want_sw_msi=True)
    if start is not None:
        igroup.sw_msi_start = start


def _remove_group_reserved_iova(igroup: IommufdGroup, hwpt_paging: HwptPaging) -> None:
    attach = igroup.pasid_attach.get(IOMMU_NO_PASID)
    if attach is None:
        return
    for cur in attach.devices.values():
        hwpt_paging.ioas.iopt.remove_reserved_iova(cur.dev)


def _group_do_replace_reserved_iova(igroup: IommufdGroup, hwpt_paging: HwptPaging) -> None:
    attach = igroup.pasid_attach[IOMMU_NO_PASID]
    old_paging = find_hwpt_paging(attach.hwpt)
    if old_paging is None or hwpt_paging.ioas is not old_paging.ioas:
        try:
            for cur in attach.devices.values():
                hwpt_paging.ioas.iopt.enforce_dev_resv_regions(cur.driver.get_resv_regions(cur.dev), cur.dev,
                                                               want_sw_msi=False)
        except UapiError:
            _remove_group_reserved_iova(igroup, hwpt_paging)
            raise


def _hwpt_pasid_compat(hwpt: HwPagetable, idev: IommufdDevice, pasid: int) -> None:
    # iommufd_hwpt_pasid_compat()
    igroup = idev.igroup
    if pasid == IOMMU_NO_PASID:
        if not hwpt.pasid_compat and any(p > IOMMU_NO_PASID for p in igroup.pasid_attach):
            raise UapiError(errno.EINVAL, "PASIDs are attached: the RID domain must be PASID capable")
    else:
        if not hwpt.pasid_compat:
            raise UapiError(errno.EINVAL, "HWPT not allocated with IOMMU_HWPT_ALLOC_PASID")
        attach = igroup.pasid_attach.get(IOMMU_NO_PASID)
        if attach is not None and attach.hwpt is not None and not attach.hwpt.pasid_compat:
            raise UapiError(errno.EINVAL, "the RID domain is not PASID capable")


def _compatible_device(hwpt: HwPagetable, idev: IommufdDevice) -> bool:
    # iommufd_hwpt_compatible_device(): no fault queue on a VF with PRI
    if hwpt.fault is None or idev.dev.pci is None:
        return True
    from vfiolab.iommu import pcie_ats
    return not (pcie_ats.physfn(idev.dev.pci) is not idev.dev.pci and idev.dev.pri is not None)


def _auto_response(hwpt: HwPagetable | None, handle: AttachHandle | None) -> None:
    respond = getattr(hwpt.fault if hwpt is not None else None, "auto_response", None)
    if respond is not None and handle is not None:
        respond(handle)


def _hwpt_attach_device(hwpt: HwPagetable, idev: IommufdDevice, pasid: int) -> None:
    if not _compatible_device(hwpt, idev):
        raise UapiError(errno.EINVAL, "fault queue on a VF with PRI")
    _hwpt_pasid_compat(hwpt, idev, pasid)
    fail_point(_KZALLOC_HANDLE)
    handle = AttachHandle(idev)
    if pasid == IOMMU_NO_PASID:
        core.iommu_attach_group_handle(hwpt.domain, idev.igroup.group, handle)
    else:
        core.iommu_attach_device_pasid(hwpt.domain, idev.dev, pasid, handle)


def _get_attach_handle(idev: IommufdDevice, pasid: int) -> AttachHandle | None:
    try:
        h = core.iommu_attach_handle_get(idev.igroup.group, pasid, 0)
    except UapiError:
        return None
    return h if isinstance(h, AttachHandle) else None


def _hwpt_detach_device(hwpt: HwPagetable, idev: IommufdDevice, pasid: int) -> None:
    handle = _get_attach_handle(idev, pasid)
    if pasid == IOMMU_NO_PASID:
        core.iommu_detach_group_handle(hwpt.domain, idev.igroup.group)
    else:
        core.iommu_detach_device_pasid(hwpt.domain, idev.dev, pasid)
    _auto_response(hwpt, handle)


def _hwpt_replace_device(idev: IommufdDevice, pasid: int, hwpt: HwPagetable, old: HwPagetable) -> None:
    if not _compatible_device(hwpt, idev):
        raise UapiError(errno.EINVAL, "fault queue on a VF with PRI")
    _hwpt_pasid_compat(hwpt, idev, pasid)
    old_handle = _get_attach_handle(idev, pasid)
    fail_point(_KZALLOC_HANDLE)
    handle = AttachHandle(idev)
    if pasid == IOMMU_NO_PASID:
        core.iommu_replace_group_handle(idev.igroup.group, hwpt.domain, handle)
    else:
        core.iommu_replace_device_pasid(hwpt.domain, idev.dev, pasid, handle)
    _auto_response(old, old_handle)


# ---------------------------------------------------------------------- attach / detach / replace
def hw_pagetable_attach(hwpt: HwPagetable, idev: IommufdDevice, pasid: int) -> None:
    """iommufd_hw_pagetable_attach()."""
    hwpt_paging = find_hwpt_paging(hwpt)
    attach_resv = hwpt_paging is not None and pasid == IOMMU_NO_PASID
    igroup = idev.igroup
    first = igroup.first_attach(pasid)
    if first:
        fail_point("iommufd_hw_pagetable_attach: kzalloc(struct iommufd_attach)")
    attach = igroup.pasid_attach.get(pasid) or Attach()
    fail_point("iommufd_hw_pagetable_attach: xa_insert(&attach->device_array)")
    if idev.id in attach.devices:
        raise UapiError(errno.EBUSY, f"device {idev.id} is already attached on PASID {pasid}")
    old = attach.hwpt
    if old is not None and old is not hwpt:
        raise UapiError(errno.EINVAL, "the group is attached to another HWPT on this PASID")
    if attach_resv:
        assert hwpt_paging is not None
        _attach_reserved_iova(idev, hwpt_paging)
    try:
        if first:
            _hwpt_attach_device(hwpt, idev, pasid)
            attach.hwpt = hwpt
            igroup.pasid_attach[pasid] = attach
    except UapiError:
        if attach_resv:
            assert hwpt_paging is not None
            hwpt_paging.ioas.iopt.remove_reserved_iova(idev.dev)
        raise
    hwpt.users += 1
    attach.devices[idev.id] = idev


def hw_pagetable_detach(idev: IommufdDevice, pasid: int) -> HwPagetable | None:
    """iommufd_hw_pagetable_detach(): the HWPT the device left (already put), or None."""
    igroup = idev.igroup
    attach = igroup.pasid_attach.get(pasid)
    if attach is None:
        return None
    hwpt = attach.hwpt
    assert hwpt is not None
    hwpt_paging = find_hwpt_paging(hwpt)
    attach.devices.pop(idev.id, None)
    if not attach.devices:
        _hwpt_detach_device(hwpt, idev, pasid)
        del igroup.pasid_attach[pasid]
    if hwpt_paging is not None and pasid == IOMMU_NO_PASID:
        hwpt_paging.ioas.iopt.remove_reserved_iova(idev.dev)
    hw_pagetable_put(idev.ictx, hwpt)
    return hwpt


AttachFn = Callable[["IommufdDevice", int, HwPagetable], "HwPagetable | None"]


def _do_attach(idev: IommufdDevice, pasid: int, hwpt: HwPagetable) -> HwPagetable | None:
    hw_pagetable_attach(hwpt, idev, pasid)
    return None


def _do_replace(idev: IommufdDevice, pasid: int, hwpt: HwPagetable) -> HwPagetable | None:
    # iommufd_device_do_replace(): returns the old HWPT for the caller to put
    hwpt_paging = find_hwpt_paging(hwpt)
    attach_resv = hwpt_paging is not None and pasid == IOMMU_NO_PASID
    igroup = idev.igroup
    attach = igroup.pasid_attach.get(pasid)
    if attach is None:
        raise UapiError(errno.EINVAL, f"PASID {pasid} is not attached")
    old = attach.hwpt
    assert old is not None
    if idev.id not in attach.devices:
        raise UapiError(errno.EINVAL, "this device is not attached on the PASID")
    if hwpt is old:
        return None
    if attach_resv:
        assert hwpt_paging is not None
        _group_do_replace_reserved_iova(igroup, hwpt_paging)
    try:
        _hwpt_replace_device(idev, pasid, hwpt, old)
    except UapiError:
        if attach_resv:
            assert hwpt_paging is not None
            _remove_group_reserved_iova(igroup, hwpt_paging)
        raise
    old_paging = find_hwpt_paging(old)
    if old_paging is not None and pasid == IOMMU_NO_PASID and (
            hwpt_paging is None or hwpt_paging.ioas is not old_paging.ioas):
        _remove_group_reserved_iova(igroup, old_paging)
    attach.hwpt = hwpt
    num = len(attach.devices)
    hwpt.users += num
    if num > 1:
        old.users -= num - 1
    return old


def _auto_get_domain(idev: IommufdDevice, pasid: int, ioas: Ioas, do_attach: AttachFn) -> tuple[int, Any]:
    # iommufd_device_auto_get_domain(): reuse a compatible auto domain, else make one
    immediate = do_attach is _do_attach
    for hwpt_paging in list(ioas.hwpt_list):
        if not hwpt_paging.auto_domain or hwpt_paging.users <= 0:
            continue
        try:
            destroy = do_attach(idev, pasid, hwpt_paging)
        except UapiError as e:
            if e.errno == errno.EINVAL:
                continue
            raise
        return hwpt_paging.id, destroy
    ictx = idev.ictx
    new = hwpt_paging_alloc(ictx, ioas, idev, pasid, 0, immediate, None)
    destroy = None
    if not immediate:
        try:
            destroy = do_attach(idev, pasid, new)
        except UapiError:
            ictx.objects.abort_and_destroy(new)
            raise
    new.auto_domain = True
    ictx.objects.finalize(new)
    return new.id, destroy


def _change_pt(idev: IommufdDevice, pasid: int, pt_id: int, do_attach: AttachFn) -> int:
    # iommufd_device_change_pt()
    ictx = idev.ictx
    pt_obj = ictx.objects.get(pt_id)
    if isinstance(pt_obj, (HwptPaging, HwptNested)):
        destroy = do_attach(idev, pasid, pt_obj)
    elif isinstance(pt_obj, Ioas):
        pt_id, destroy = _auto_get_domain(idev, pasid, pt_obj, do_attach)
    else:
        raise UapiError(errno.EINVAL, f"object {pt_id} is a {pt_obj.type.name}, not an IOAS or HWPT")
    if destroy is not None:
        hw_pagetable_put(ictx, destroy)
    return pt_id


def device_attach(idev: IommufdDevice, pasid: int, pt_id: int) -> int:
    """iommufd_device_attach(): returns the HWPT ID attached (the auto domain's for an IOAS)."""
    pt_id = _change_pt(idev, pasid, pt_id, _do_attach)
    idev.users += 1
    return pt_id


def device_replace(idev: IommufdDevice, pasid: int, pt_id: int) -> int:
    """iommufd_device_replace(): no change on failure."""
    return _change_pt(idev, pasid, pt_id, _do_replace)


def device_detach(idev: IommufdDevice, pasid: int) -> None:
    """iommufd_device_detach(): the device (PASID) blocks DMA again."""
    if hw_pagetable_detach(idev, pasid) is not None:
        idev.users -= 1


def attached_domain(idev: IommufdDevice, pasid: int) -> Any:
    """iommu_attach_handle_get()->domain for a (device, PASID), or None."""
    entry = idev.igroup.group.pasid_array.get(pasid)
    return None if entry is None or entry.handle is None else entry.domain
