"""HW page tables (``drivers/iommu/iommufd/hw_pagetable.c``): HWPT_PAGING objects wrap a paging
iommu_domain that mirrors its IOAS (auto domains are made on attach to an IOAS and die with their last
device; manual ones come from IOMMU_HWPT_ALLOC), HWPT_NESTED objects wrap a user-managed stage 1 over a
nest-parent HWPT_PAGING; plus the HWPT_ALLOC, SET_DIRTY_TRACKING, GET_DIRTY_BITMAP and INVALIDATE ioctls.

Driver-specific user data (``iommu_user_data``: type, pointer, length) is decoded by the decoder a driver
model registers in :data:`PAGING_DATA` / :data:`NESTED_DATA` / :data:`INVALIDATE_OPS` (the selftest mock
registers its own in :mod:`vfiolab.iommufd.mock`), so validation happens in the driver's order.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from vfiolab.errors import UapiError
from vfiolab.faultinject import fail_point
from vfiolab.iommu.domain import IOMMU_DOMAIN_NESTED, IommuDomain, PagingDomain
from vfiolab.iommu.driver import IOMMU_CAP_DIRTY_TRACKING, IOMMU_CAP_ENFORCE_CACHE_COHERENCY
from vfiolab.iommufd import uapi
from vfiolab.iommufd.ioas import Ioas
from vfiolab.iommufd.objects import IommufdObject, ObjType
from vfiolab.iommufd.uapi import PAGE_SIZE
from vfiolab.iommufd.userdata import UserData

if TYPE_CHECKING:
    from vfiolab.iommufd.device import IommufdDevice
    from vfiolab.iommufd.main import Iommufd
    from vfiolab.iommufd.ucmd import Ucmd

IOMMU_NO_PASID: Final = 0
HWPT_INVALIDATE_ENTRY_NUM_MAX: Final = 1 << 19
"""hw_pagetable.c IOMMU_HWPT_INVALIDATE_ENTRY_NUM_MAX."""


PagingDecoder = Callable[["Iommufd", "IommufdDevice", int, UserData | None], "Mapping[str, Any] | None"]
NestedDecoder = Callable[["Iommufd", "IommufdDevice", IommuDomain, int, UserData],
                         "tuple[str, Mapping[str, Any]]"]
Invalidator = Callable[["Iommufd", IommuDomain, UserData, int], int]

PAGING_DATA: dict[str, PagingDecoder] = {}
"""driver name -> decoder of IOMMU_HWPT_ALLOC user data for a paging domain (before allocation)."""
NESTED_DATA: dict[str, NestedDecoder] = {}
"""driver name -> decoder returning (data_type, data) for driver.domain_alloc_nested()."""
INVALIDATE_OPS: dict[str, Invalidator] = {}
"""driver name -> cache_invalidate_user(ictx, domain, array, entry_len) returning entries handled; a
failure is a UapiError carrying ``handled``."""


class HwPagetable(IommufdObject):
    """struct iommufd_hw_pagetable: a domain, an optional fault queue, PASID compatibility."""

    def __init__(self, ictx: Iommufd) -> None:
        super().__init__(ictx)
        self.domain: Any = None
        self.fault: IommufdObject | None = None
        self.pasid_compat = False

    def _free_domain(self) -> None:
        # __iommufd_hwpt_destroy()
        if self.domain is not None:
            self.domain.free()
            self.domain = None
        if self.fault is not None:
            self.fault.users -= 1
            self.fault = None


class HwptPaging(HwPagetable):
    """struct iommufd_hwpt_paging: linked to its IOAS, which maps every area into ``domain``."""

    type = ObjType.HWPT_PAGING

    def __init__(self, ictx: Iommufd, ioas: Ioas) -> None:
        super().__init__(ictx)
        self.ioas = ioas
        self.auto_domain = False
        self.enforce_cache_coherency = False
        self.nest_parent = False

    def _unlink(self) -> None:
        if any(h is self for h in self.ioas.hwpt_list):
            self.ioas.hwpt_list = [h for h in self.ioas.hwpt_list if h is not self]
            self.ioas.iopt.table_remove_domain(self.domain)

    def destroy(self) -> None:
        # iommufd_hwpt_paging_destroy()
        self._unlink()
        self._free_domain()
        self.ioas.users -= 1


class HwptNested(HwPagetable):
    """struct iommufd_hwpt_nested: a user stage 1 over ``parent`` (or a vIOMMU's parent)."""

    type = ObjType.HWPT_NESTED

    def __init__(self, ictx: Iommufd, parent: HwptPaging, viommu: IommufdObject | None = None) -> None:
        super().__init__(ictx)
        self.parent = parent
        self.viommu = viommu

    def destroy(self) -> None:
        # iommufd_hwpt_nested_destroy()
        self._free_domain()
        if self.viommu is not None:
            self.viommu.users -= 1
        else:
            self.parent.users -= 1


def find_hwpt_paging(hwpt: HwPagetable | None) -> HwptPaging | None:
    """find_hwpt_paging(): the paging HWPT itself, or a nested HWPT's parent."""
    if isinstance(hwpt, HwptPaging):
        return hwpt
    if isinstance(hwpt, HwptNested):
        return hwpt.parent
    return None


def hw_pagetable_put(ictx: Iommufd, hwpt: HwPagetable) -> None:
    """iommufd_hw_pagetable_put(): an auto domain dies with its last user."""
    if isinstance(hwpt, HwptPaging) and hwpt.auto_domain:
        ictx.objects.put_and_try_destroy(hwpt)
        return
    hwpt.users -= 1


# ---------------------------------------------------------------------- allocation
def hwpt_paging_alloc(ictx: Iommufd, ioas: Ioas, idev: IommufdDevice, pasid: int, flags: int,
                      immediate_attach: bool, user_data: UserData | None) -> HwptPaging:
    """iommufd_hwpt_paging_alloc(): a new paging domain for ``idev``, filled from ``ioas`` (not yet
    finalized: the caller finalizes or aborts it)."""
    from vfiolab.iommufd.device import hw_pagetable_attach, hw_pagetable_detach
    valid = (uapi.IOMMU_HWPT_ALLOC_NEST_PARENT | uapi.IOMMU_HWPT_ALLOC_DIRTY_TRACKING |
             uapi.IOMMU_HWPT_FAULT_ID_VALID | uapi.IOMMU_HWPT_ALLOC_PASID)
    driver = idev.driver
    if flags & ~valid:
        raise UapiError(errno.EOPNOTSUPP, f"HWPT flags {flags:#x}")
    if flags & uapi.IOMMU_HWPT_ALLOC_DIRTY_TRACKING and not driver.capable(idev.dev,
                                                                           IOMMU_CAP_DIRTY_TRACKING):
        raise UapiError(errno.EOPNOTSUPP, f"{idev.dev.name} cannot do dirty tracking")
    if flags & uapi.IOMMU_HWPT_FAULT_ID_VALID and flags & uapi.IOMMU_HWPT_ALLOC_NEST_PARENT:
        raise UapiError(errno.EOPNOTSUPP, "a nest parent cannot take a fault queue")
    hwpt = ictx.objects.alloc(HwptPaging(ictx, ioas))
    hwpt.pasid_compat = bool(flags & uapi.IOMMU_HWPT_ALLOC_PASID)
    ioas.users += 1
    hwpt.nest_parent = bool(flags & uapi.IOMMU_HWPT_ALLOC_NEST_PARENT)
    try:
        dflags = flags & ~uapi.IOMMU_HWPT_FAULT_ID_VALID
        decoder = PAGING_DATA.get(driver.name)
        data = decoder(ictx, idev, dflags, user_data) if decoder is not None else None
        if decoder is None and user_data is not None:
            raise UapiError(errno.EOPNOTSUPP, f"{driver.name}: no HWPT data types")
        hwpt.domain = driver.domain_alloc_paging_flags(idev.dev, dflags, data)
        if idev.enforce_cache_coherency:  # iommufd_hwpt_paging_enforce_cc()
            hwpt.enforce_cache_coherency = True
        if immediate_attach:
            hw_pagetable_attach(hwpt, idev, pasid)
        try:
            ioas.iopt.table_add_domain(hwpt.domain)
        except UapiError:
            if immediate_attach:
                hw_pagetable_detach(idev, pasid)
            raise
    except UapiError:
        ictx.objects.abort_and_destroy(hwpt)
        raise
    ioas.hwpt_list.append(hwpt)
    return hwpt


def hwpt_nested_alloc(ictx: Iommufd, parent: HwptPaging, idev: IommufdDevice, flags: int,
                      user_data: UserData) -> HwptNested:
    """iommufd_hwpt_nested_alloc(): a NESTED domain over a manually allocated nest parent."""
    driver = idev.driver
    decoder = NESTED_DATA.get(driver.name)
    if flags & ~(uapi.IOMMU_HWPT_FAULT_ID_VALID | uapi.IOMMU_HWPT_ALLOC_PASID) or not user_data.len or \
            decoder is None:
        raise UapiError(errno.EOPNOTSUPP, f"nested HWPT flags {flags:#x} or no driver data")
    if parent.auto_domain or not parent.nest_parent or parent.domain.owner is not driver:
        raise UapiError(errno.EINVAL, "parent is not a nest parent of this driver")
    hwpt = ictx.objects.alloc(HwptNested(ictx, parent))
    hwpt.pasid_compat = bool(flags & uapi.IOMMU_HWPT_ALLOC_PASID)
    parent.users += 1
    try:
        dflags = flags & ~uapi.IOMMU_HWPT_FAULT_ID_VALID
        data_type, data = decoder(ictx, idev, parent.domain, dflags, user_data)
        hwpt.domain = driver.domain_alloc_nested(idev.dev, parent.domain, dflags, data_type, data)
        if hwpt.domain.type != IOMMU_DOMAIN_NESTED:
            raise UapiError(errno.EOPNOTSUPP, "driver returned a non-nested domain")
    except UapiError:
        ictx.objects.abort_and_destroy(hwpt)
        raise
    return hwpt


# ---------------------------------------------------------------------- ioctls
def hwpt_alloc(ucmd: Ucmd) -> int:
    """IOMMU_HWPT_ALLOC."""
    from vfiolab.iommufd.device import get_device
    cmd = ucmd.cmd
    ictx = ucmd.ictx
    if cmd["__reserved"]:
        raise UapiError(errno.EOPNOTSUPP, "__reserved != 0")
    if (cmd["data_type"] == uapi.IOMMU_HWPT_DATA_NONE and cmd["data_len"]) or \
            (cmd["data_type"] != uapi.IOMMU_HWPT_DATA_NONE and not cmd["data_len"]):
        raise UapiError(errno.EINVAL, "data_type and data_len disagree")
    user_data = UserData(cmd["data_type"], cmd["data_uptr"], cmd["data_len"])
    idev = get_device(ictx, cmd["dev_id"])
    fail_point("iommufd_get_object", errno.EINVAL)  # any failed lookup of pt_id is EINVAL here
    pt_obj = ictx.objects.lookup(cmd["pt_id"])
    if pt_obj is None:
        raise UapiError(errno.EINVAL, f"pt_id {cmd['pt_id']} is not an object")
    hwpt: HwPagetable
    if isinstance(pt_obj, Ioas):
        hwpt = hwpt_paging_alloc(ictx, pt_obj, idev, IOMMU_NO_PASID, cmd["flags"], False,
                                 user_data if user_data.len else None)
    elif isinstance(pt_obj, HwptPaging):
        hwpt = hwpt_nested_alloc(ictx, pt_obj, idev, cmd["flags"], user_data)
    elif pt_obj.type == ObjType.VIOMMU:
        viommu_alloc_nested = getattr(pt_obj, "alloc_hwpt_nested", None)
        if viommu_alloc_nested is None:
            raise UapiError(errno.EOPNOTSUPP, "vIOMMU without nested domains")
        hwpt = viommu_alloc_nested(idev, cmd["flags"], user_data)
    else:
        raise UapiError(errno.EINVAL, f"pt_id {cmd['pt_id']} is a {pt_obj.type.name}")
    try:
        if cmd["flags"] & uapi.IOMMU_HWPT_FAULT_ID_VALID:
            fault = ictx.objects.get(cmd["fault_id"], ObjType.FAULT)
            hwpt.fault = fault
            attach_fault = getattr(fault, "attach_domain", None)
            if attach_fault is not None:
                attach_fault(hwpt.domain)
            fault.users += 1
        cmd["out_hwpt_id"] = hwpt.id
        ucmd.respond()
    except UapiError:
        ictx.objects.abort_and_destroy(hwpt)
        raise
    ictx.objects.finalize(hwpt)
    return 0


def get_hwpt_paging(ictx: Iommufd, hwpt_id: int) -> HwptPaging:
    """iommufd_get_hwpt_paging()."""
    obj = ictx.objects.get(hwpt_id, ObjType.HWPT_PAGING)
    assert isinstance(obj, HwptPaging)
    return obj


def hwpt_set_dirty_tracking(ucmd: Ucmd) -> int:
    """IOMMU_HWPT_SET_DIRTY_TRACKING."""
    cmd = ucmd.cmd
    if cmd["flags"] & ~uapi.IOMMU_HWPT_DIRTY_TRACKING_ENABLE:
        raise UapiError(errno.EOPNOTSUPP, f"flags {cmd['flags']:#x}")
    hwpt = get_hwpt_paging(ucmd.ictx, cmd["hwpt_id"])
    hwpt.ioas.iopt.set_dirty_tracking(hwpt.domain, bool(cmd["flags"] & uapi.IOMMU_HWPT_DIRTY_TRACKING_ENABLE))
    return 0


def hwpt_get_dirty_bitmap(ucmd: Ucmd) -> int:
    """IOMMU_HWPT_GET_DIRTY_BITMAP: OR the dirty bits into the user bitmap (bit i = iova + i*page_size);
    faults writing the bitmap are ignored, as iova_bitmap_set() ignores them."""
    cmd = ucmd.cmd
    if cmd["flags"] & ~uapi.IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR or cmd["__reserved"]:
        raise UapiError(errno.EOPNOTSUPP, f"flags {cmd['flags']:#x} or __reserved")
    ictx = ucmd.ictx
    hwpt = get_hwpt_paging(ictx, cmd["hwpt_id"])
    iopt = hwpt.ioas.iopt
    iova, length, page_size = cmd["iova"], cmd["length"], cmd["page_size"]
    iopt.check_iova_range(iova, length, page_size)
    parts = iopt.read_and_clear_dirty(hwpt.domain, iova, length, page_size, cmd["flags"])
    for first_bit, bits in parts:
        _set_user_bits(ictx, cmd["data"], first_bit, bits)
    return 0


def _set_user_bits(ictx: Iommufd, data: int, first_bit: int, bits: np.ndarray) -> None:
    """iova_bitmap_set() for each dirty run: read-modify-write the bytes of the user bitmap."""
    idx = np.flatnonzero(bits) + first_bit
    if not len(idx):
        return
    lo, hi = int(idx[0]) // 8, int(idx[-1]) // 8
    try:
        cur = bytearray(ictx.copy_from_user(data + lo, hi - lo + 1))
        arr = np.frombuffer(cur, dtype=np.uint8).copy()
        np.bitwise_or.at(arr, idx // 8 - lo, (1 << (idx % 8)).astype(np.uint8))
        ictx.copy_to_user(data + lo, arr.tobytes())
    except UapiError:
        pass


def hwpt_invalidate(ucmd: Ucmd) -> int:
    """IOMMU_HWPT_INVALIDATE: entries are handled in order; ``entry_num`` comes back as the number
    handled, also on failure."""
    cmd = ucmd.cmd
    ictx = ucmd.ictx
    done = 0
    err: UapiError | None = None
    try:
        if cmd["__reserved"]:
            raise UapiError(errno.EOPNOTSUPP, "__reserved != 0")
        if cmd["entry_num"] and (not cmd["data_uptr"] or not cmd["entry_len"] or cmd["entry_len"] > PAGE_SIZE
                                 or cmd["entry_num"] > HWPT_INVALIDATE_ENTRY_NUM_MAX):
            raise UapiError(errno.EINVAL, "bad data_uptr, entry_len or entry_num")
        pt_obj = ictx.objects.get(cmd["hwpt_id"])
        array = UserData(cmd["data_type"], cmd["data_uptr"], cmd["entry_len"], cmd["entry_num"])
        if isinstance(pt_obj, HwptNested):
            inv = INVALIDATE_OPS.get(pt_obj.domain.owner.name) if pt_obj.domain.owner is not None else None
            if inv is None:
                raise UapiError(errno.EOPNOTSUPP, "domain has no user cache invalidation")
            try:
                done = inv(ictx, pt_obj.domain, array, cmd["entry_len"])
            except UapiError as e:
                done = int(getattr(e, "handled", 0))
                raise
        elif pt_obj.type == ObjType.VIOMMU:
            inv_v = getattr(pt_obj, "cache_invalidate", None)
            if inv_v is None:
                raise UapiError(errno.EOPNOTSUPP, "vIOMMU has no cache invalidation")
            try:
                done = inv_v(array)
            except UapiError as e:
                done = int(getattr(e, "handled", 0))
                raise
        else:
            raise UapiError(errno.EINVAL, f"object {cmd['hwpt_id']} is neither a nested HWPT nor a vIOMMU")
    except UapiError as e:
        err = e
    cmd["entry_num"] = done
    ucmd.respond()
    if err is not None:
        raise err
    return 0


def domain_is_paging(domain: object) -> bool:
    """A paging domain of the IOMMU core."""
    return isinstance(domain, PagingDomain)


def enforce_cc_capable(idev: IommufdDevice) -> bool:
    """device_iommu_capable(dev, IOMMU_CAP_ENFORCE_CACHE_COHERENCY)."""
    return bool(idev.driver.capable(idev.dev, IOMMU_CAP_ENFORCE_CACHE_COHERENCY))


__all__ = [
    "INVALIDATE_OPS",
    "NESTED_DATA",
    "PAGING_DATA",
    "HwPagetable",
    "HwptNested",
    "HwptPaging",
    "UserData",
    "find_hwpt_paging",
    "get_hwpt_paging",
    "hw_pagetable_put",
    "hwpt_alloc",
    "hwpt_get_dirty_bitmap",
    "hwpt_invalidate",
    "hwpt_nested_alloc",
    "hwpt_paging_alloc",
    "hwpt_set_dirty_tracking",
]
