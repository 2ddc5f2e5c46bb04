"""IOMMU groups and the core attach rules of ``drivers/iommu/iommu.c``: all devices of a group share
``group.domain``; RID attach, detach and replace; DMA ownership (VFIO/iommufd claim the group and park
it on the blocking domain); per-PASID attachments in ``group.pasid_array``.

Every change is transactional: when a driver refuses a device, the devices already switched are put
back on the old domain and ``group.domain`` is unchanged, so a failed attach or replace leaves the
hardware as it was; replace goes straight from one domain to the other (never through BLOCKED or
IDENTITY).  The static blocked and identity domains never fail to attach.
"""

from __future__ import annotations

import errno
import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from vfiolab.errors import UapiError, VfiolabError
from vfiolab.faultinject import fail_point
from vfiolab.iommu.domain import IOMMU_DOMAIN_BLOCKED, IOMMU_DOMAIN_DMA, IOMMU_DOMAIN_IDENTITY, IommuDomain
from vfiolab.iommu.pasid import IOMMU_NO_PASID
from vfiolab.iommu.resv import ResvRegion, ResvType, format_resv_regions, group_resv_regions

if TYPE_CHECKING:
    from vfiolab.iommu.device import IommuDevice
    from vfiolab.iommu.unit import IommuUnit

IOMMU_SET_DOMAIN_MUST_SUCCEED: Final = 1 << 0
_group_ids = itertools.count()


@dataclass
class PasidEntry:
    """An entry of group->pasid_array: the domain and the caller's attach handle (None: a plain
    domain entry, e.g. from iommu_attach_group())."""

    domain: IommuDomain
    handle: object | None = None


@dataclass
class IommuGroup:
    """struct iommu_group."""

    id: int = field(default_factory=lambda: next(_group_ids))
    devices: list[IommuDevice] = field(default_factory=list)
    domain: IommuDomain | None = None
    default_domain: IommuDomain | None = None
    blocking_domain: IommuDomain | None = None
    owner: object | None = None
    owner_cnt: int = 0
    pasid_array: dict[int, PasidEntry] = field(default_factory=dict)

    def resv_regions(self) -> list[ResvRegion]:
        """iommu_get_group_resv_regions()."""
        return group_resv_regions(d.unit.driver.get_resv_regions(d) for d in self.devices if d.unit is not None)

    def sysfs_reserved_regions(self) -> str:
        """/sys/kernel/iommu_groups/N/reserved_regions."""
        return format_resv_regions(self.resv_regions())

    def __repr__(self) -> str:
        return f"<IommuGroup {self.id} {[d.name for d in self.devices]} domain={self.domain!r}>"


# ---------------------------------------------------------------------- probe
def iommu_probe_device(dev: IommuDevice, unit: IommuUnit, group: IommuGroup | None = None,
                       default_type: int | None = None) -> IommuGroup:
    """__iommu_probe_device(): the driver probes the device, it joins ``group`` (a new one when None),
    and the group gets its default domain (``default_type`` IOMMU_DOMAIN_IDENTITY / DMA / BLOCKED;
    None: the driver's choice)."""
    if dev.group is not None:
        raise VfiolabError(f"{dev.name} is already in IOMMU group {dev.group.id}")
    group = group if group is not None else IommuGroup()
    if group.devices and group.devices[0].unit is not None and group.devices[0].unit.driver is not unit.driver:
        raise VfiolabError(f"IOMMU group {group.id} mixes IOMMU drivers")
    unit.driver.probe_device(dev, unit)
    group.devices.append(dev)
    dev.group = group
    if group.default_domain is None:
        _setup_default_domain(group, default_type)
    else:
        _device_set_domain(group, dev, group.domain, None, IOMMU_SET_DOMAIN_MUST_SUCCEED)
    return group


def _setup_default_domain(group: IommuGroup, req_type: int | None) -> None:
    """iommu_setup_default_domain(): allocate the default domain, map IOMMU_RESV_DIRECT regions into
    a translating one, and attach it (a first attach must not fail)."""
    dev = group.devices[0]
    driver = dev.unit.driver  # type: ignore[union-attr]
    dom = driver.alloc_default_domain(dev, req_type)
    if dom.is_paging:
        for d in group.devices:
            for r in driver.get_resv_regions(d):
                if r.type in (ResvType.DIRECT, ResvType.DIRECT_RELAXABLE):
                    _direct_map(dom, r)
    group.default_domain = dom
    _group_set_domain(group, dom, IOMMU_SET_DOMAIN_MUST_SUCCEED)


def _direct_map(dom: IommuDomain, r: ResvRegion) -> None:
    """iommu_create_device_direct_mappings() for one region (1:1, skipping what is already mapped):
    one map of the whole region, page by page only where another device's region overlaps."""
    pg = dom.pgsize_bitmap & -dom.pgsize_bitmap  # type: ignore[attr-defined]
    start = r.start & ~(pg - 1)
    end = -(-(r.start + r.length) // pg) * pg
    try:
        dom.map(start, start, end - start, r.prot)  # type: ignore[attr-defined]
        return
    except UapiError as err:
        if err.errno != errno.EADDRINUSE:
            raise
    for a in range(start, end, pg):
        if not dom.iova_to_phys(a):  # type: ignore[attr-defined]
            dom.map(a, a, pg, r.prot)  # type: ignore[attr-defined]


def iommu_release_device(dev: IommuDevice) -> None:
    """iommu_release_device(): leave the group (its domain detaches from the device) and the driver."""
    group = dev.group
    if group is None:
        return
    if dev.unit is not None:
        for pasid in [p for p in group.pasid_array if p != IOMMU_NO_PASID]:
            dev.unit.driver.remove_dev_pasid(dev, pasid, group.pasid_array[pasid].domain)
        dev.unit.driver.attach_dev(dev.unit.driver.blocked_domain, dev, group.domain)
        dev.unit.driver.release_device(dev)
    group.devices.remove(dev)
    dev.group = None


# ---------------------------------------------------------------------- RID domain switching
def _compatible(dev: IommuDevice, domain: IommuDomain) -> bool:
    """domain_iommu_ops_compatible(): the domain belongs to the device's driver (static domains too)."""
    driver = dev.unit.driver if dev.unit is not None else None
    return driver is not None and (domain.owner is driver or domain is driver.blocked_domain
                                   or domain is driver.identity_domain)


def _device_set_domain(group: IommuGroup, dev: IommuDevice, new: IommuDomain | None, old: IommuDomain | None,
                       flags: int) -> None:
    """__iommu_device_set_domain()."""
    assert new is not None and dev.unit is not None
    if dev.require_direct and (new.type == IOMMU_DOMAIN_BLOCKED or new is group.blocking_domain):
        raise UapiError(errno.EINVAL, f"{dev.name}: firmware requires 1:1 mappings; refusing a blocking domain")
    driver = dev.unit.driver
    try:
        driver.attach_dev(new, dev, old)
    except UapiError:
        if flags & IOMMU_SET_DOMAIN_MUST_SUCCEED and group.blocking_domain is not None \
                and group.blocking_domain is not new:
            driver.attach_dev(group.blocking_domain, dev, old)
        raise


def _group_set_domain(group: IommuGroup, new: IommuDomain, flags: int = 0) -> None:
    """__iommu_group_set_domain_internal(): switch every device; on failure put the switched ones back
    (a driver failing to re-attach a previously good domain is a bug and raises VfiolabError)."""
    if group.domain is new:
        return
    done: list[IommuDevice] = []
    err: UapiError | None = None
    for dev in group.devices:
        try:
            _device_set_domain(group, dev, new, group.domain, flags)
        except UapiError as e:
            err = e
            if flags & IOMMU_SET_DOMAIN_MUST_SUCCEED:
                continue
            for d in done:
                if group.domain is not None:
                    try:
                        _device_set_domain(group, d, group.domain, new, IOMMU_SET_DOMAIN_MUST_SUCCEED)
                    except UapiError as bug:
                        raise VfiolabError(f"{d.name}: driver refused to re-attach its old domain: {bug}") from bug
            raise
        done.append(dev)
    group.domain = new
    if err is not None:
        raise err


def _attach_group(domain: IommuDomain, group: IommuGroup) -> None:
    """__iommu_attach_group(): EBUSY when a non-core domain is attached; EINVAL for a foreign domain."""
    if group.domain is not None and group.domain not in (group.default_domain, group.blocking_domain):
        raise UapiError(errno.EBUSY, f"group {group.id} already has {group.domain!r} attached")
    if not group.devices or not _compatible(group.devices[0], domain):
        raise UapiError(errno.EINVAL, f"{domain!r} belongs to another IOMMU driver")
    _group_set_domain(group, domain)


def _core_domain(group: IommuGroup) -> IommuDomain:
    """__iommu_group_set_core_domain()'s target."""
    dom = group.blocking_domain if group.owner is not None else group.default_domain
    assert dom is not None
    return dom


def iommu_attach_group(domain: IommuDomain, group: IommuGroup) -> None:
    """iommu_attach_group()."""
    _attach_group(domain, group)


def iommu_detach_group(domain: IommuDomain, group: IommuGroup) -> None:
    """iommu_detach_group(): back to the blocking domain when owned, else the default domain."""
    _group_set_domain(group, _core_domain(group), IOMMU_SET_DOMAIN_MUST_SUCCEED)


def iommu_attach_device(domain: IommuDomain, dev: IommuDevice) -> None:
    """iommu_attach_device(): ENODEV without a group, EINVAL unless the device is alone in it."""
    group = dev.group
    if group is None:
        raise UapiError(errno.ENODEV, f"{dev.name} has no IOMMU group")
    if len(group.devices) != 1:
        raise UapiError(errno.EINVAL, f"group {group.id} has {len(group.devices)} devices")
    _attach_group(domain, group)


def iommu_detach_device(domain: IommuDomain, dev: IommuDevice) -> None:
    """iommu_detach_device() (a mismatched domain is ignored, where the kernel WARNs)."""
    group = dev.group
    if group is None or domain is not group.domain or len(group.devices) != 1:
        return
    _group_set_domain(group, _core_domain(group), IOMMU_SET_DOMAIN_MUST_SUCCEED)


def iommu_get_domain_for_dev(dev: IommuDevice) -> IommuDomain | None:
    """iommu_get_domain_for_dev()."""
    return dev.group.domain if dev.group is not None else None


# ---------------------------------------------------------------------- DMA ownership
def _take_dma_ownership(group: IommuGroup, owner: object) -> None:
    """__iommu_take_dma_ownership(): EBUSY with a non-default domain or PASIDs attached."""
    if (group.domain is not None and group.domain is not group.default_domain) or group.pasid_array:
        raise UapiError(errno.EBUSY, f"group {group.id} is in use")
    if group.blocking_domain is None:
        group.blocking_domain = group.devices[0].unit.driver.blocked_domain  # type: ignore[union-attr]
    _group_set_domain(group, group.blocking_domain)
    group.owner = owner
    group.owner_cnt += 1


def iommu_group_claim_dma_owner(group: IommuGroup, owner: object) -> None:
    """iommu_group_claim_dma_owner(): EPERM when already owned."""
    if owner is None:
        raise UapiError(errno.EINVAL, "no owner")
    if group.owner_cnt:
        raise UapiError(errno.EPERM, f"group {group.id} already has an owner")
    _take_dma_ownership(group, owner)


def iommu_device_claim_dma_owner(dev: IommuDevice, owner: object) -> None:
    """iommu_device_claim_dma_owner(): several devices of a group may claim with the same owner."""
    if owner is None:
        raise UapiError(errno.EINVAL, "no owner")
    group = dev.group
    if group is None:
        raise UapiError(errno.ENODEV, f"{dev.name} has no IOMMU group")
    if group.owner_cnt:
        if group.owner is not owner:
            raise UapiError(errno.EPERM, f"group {group.id} is owned by someone else")
        group.owner_cnt += 1
        return
    _take_dma_ownership(group, owner)


def _release_dma_ownership(group: IommuGroup) -> None:
    if not group.owner_cnt or group.owner is None or group.pasid_array:
        return  # the kernel WARNs
    group.owner_cnt = 0
    group.owner = None
    assert group.default_domain is not None
    _group_set_domain(group, group.default_domain, IOMMU_SET_DOMAIN_MUST_SUCCEED)


def iommu_group_release_dma_owner(group: IommuGroup) -> None:
    """iommu_group_release_dma_owner()."""
    _release_dma_ownership(group)


def iommu_device_release_dma_owner(dev: IommuDevice) -> None:
    """iommu_device_release_dma_owner()."""
    group = dev.group
    assert group is not None
    if group.owner_cnt > 1:
        group.owner_cnt -= 1
    else:
        _release_dma_ownership(group)


# ---------------------------------------------------------------------- attach handles (iommufd)
def iommu_attach_handle_get(group: IommuGroup, pasid: int, type_: int = 0) -> object:
    """iommu_attach_handle_get(): ENOENT without a handle, EBUSY when the domain type differs."""
    entry = group.pasid_array.get(pasid)
    if entry is None or entry.handle is None:
        raise UapiError(errno.ENOENT, f"no attach handle for PASID {pasid}")
    if type_ and entry.domain.type != type_:
        raise UapiError(errno.EBUSY, f"PASID {pasid} holds a domain of another type")
    return entry.handle


def iommu_attach_group_handle(domain: IommuDomain, group: IommuGroup, handle: object) -> None:
    """iommu_attach_group_handle(): like iommu_attach_group() and records the handle on the RID."""
    if handle is None:
        raise UapiError(errno.EINVAL, "no attach handle")
    fail_point("iommu_attach_group_handle: xa_insert(&group->pasid_array)")
    if IOMMU_NO_PASID in group.pasid_array:
        raise UapiError(errno.EBUSY, f"group {group.id}: the RID already has an attach handle")
    _attach_group(domain, group)
    group.pasid_array[IOMMU_NO_PASID] = PasidEntry(domain, handle)


def iommu_detach_group_handle(domain: IommuDomain, group: IommuGroup) -> None:
    """iommu_detach_group_handle()."""
    _group_set_domain(group, _core_domain(group), IOMMU_SET_DOMAIN_MUST_SUCCEED)
    group.pasid_array.pop(IOMMU_NO_PASID, None)


def iommu_replace_group_handle(group: IommuGroup, new_domain: IommuDomain, handle: object) -> None:
    """iommu_replace_group_handle(): switch the RID domain directly (no blocking step in between)."""
    if new_domain is None or handle is None:
        raise UapiError(errno.EINVAL, "no domain or handle")
    fail_point("iommu_replace_group_handle: xa_reserve(&group->pasid_array)")
    _group_set_domain(group, new_domain)
    group.pasid_array[IOMMU_NO_PASID] = PasidEntry(new_domain, handle)


# ---------------------------------------------------------------------- PASID
def _pasid_devices(group: IommuGroup) -> list[IommuDevice]:
    return [d for d in group.devices if d.max_pasids > 0]


def _set_group_pasid(domain: IommuDomain, group: IommuGroup, pasid: int, old: IommuDomain | None) -> None:
    """__iommu_set_group_pasid(): on failure the devices done so far go back to ``old`` (or are
    blocked when there was none)."""
    done: list[IommuDevice] = []
    for dev in _pasid_devices(group):
        try:
            dev.unit.driver.set_dev_pasid(domain, dev, pasid, old)  # type: ignore[union-attr]
        except UapiError:
            for d in done:
                drv = d.unit.driver  # type: ignore[union-attr]
                if old is None:
                    drv.remove_dev_pasid(d, pasid, domain)
                    continue
                try:
                    drv.set_dev_pasid(old, d, pasid, domain)
                except UapiError:
                    drv.remove_dev_pasid(d, pasid, domain)
            raise
        done.append(dev)


def _check_pasid_attach(domain: IommuDomain, dev: IommuDevice, pasid: int) -> IommuGroup:
    group = dev.group
    if group is None or dev.unit is None:
        raise UapiError(errno.ENODEV, f"{dev.name} has no IOMMU group")
    driver = dev.unit.driver
    if not driver.supports_pasid(domain):
        raise UapiError(errno.EOPNOTSUPP, f"{domain!r} cannot be attached to a PASID")
    if not _compatible(dev, domain) or pasid == IOMMU_NO_PASID:
        raise UapiError(errno.EINVAL, f"{domain!r} is foreign, or PASID {pasid} is the RID")
    return group


def iommu_attach_device_pasid(domain: IommuDomain, dev: IommuDevice, pasid: int, handle: object | None = None
                              ) -> None:
    """iommu_attach_device_pasid(): EINVAL for a PASID beyond a device's max_pasids, EBUSY for an
    occupied PASID."""
    group = _check_pasid_attach(domain, dev, pasid)
    for d in group.devices:
        if d.max_pasids > 0 and pasid >= d.max_pasids:
            raise UapiError(errno.EINVAL, f"PASID {pasid} beyond {d.name}'s {d.max_pasids} PASIDs")
    fail_point("iommu_attach_device_pasid: xa_insert(&group->pasid_array)")
    if pasid in group.pasid_array:
        raise UapiError(errno.EBUSY, f"PASID {pasid} of group {group.id} is in use")
    _set_group_pasid(domain, group, pasid, None)
    group.pasid_array[pasid] = PasidEntry(domain, handle)


def iommu_replace_device_pasid(domain: IommuDomain, dev: IommuDevice, pasid: int, handle: object) -> None:
    """iommu_replace_device_pasid(): EINVAL when nothing is attached to the PASID; on failure the old
    domain stays."""
    group = _check_pasid_attach(domain, dev, pasid)
    if handle is None:
        raise UapiError(errno.EINVAL, "no attach handle")
    cur = group.pasid_array.get(pasid)
    if cur is None:
        raise UapiError(errno.EINVAL, f"PASID {pasid} is not attached")
    if cur.handle is handle:
        raise UapiError(errno.EINVAL, "attach handle reused")
    if cur.domain is not domain:
        _set_group_pasid(domain, group, pasid, cur.domain)
    group.pasid_array[pasid] = PasidEntry(domain, handle)


def iommu_detach_device_pasid(domain: IommuDomain, dev: IommuDevice, pasid: int) -> None:
    """iommu_detach_device_pasid(): the PASID blocks DMA again."""
    group = dev.group
    if group is None:
        return
    for d in _pasid_devices(group):
        d.unit.driver.remove_dev_pasid(d, pasid, domain)  # type: ignore[union-attr]
    group.pasid_array.pop(pasid, None)


def default_domain_type_name(dom: IommuDomain) -> str:
    """The group's sysfs ``type`` for its default domain (iommu_group_show_type)."""
    return {IOMMU_DOMAIN_BLOCKED: "blocked", IOMMU_DOMAIN_IDENTITY: "identity",
            IOMMU_DOMAIN_DMA: "DMA"}.get(dom.type, "unknown")
