"""iommufd objects and the per-fd object table (``drivers/iommu/iommufd/main.c``, ``iommufd_private.h``).

IDs come from an xarray with XA_FLAGS_ALLOC1 and ``xa_limit_31b``: the lowest free index from 1 up to
INT_MAX.  An allocated but not yet finalized object holds its ID without being visible (lookups give
ENOENT), exactly like the XA_ZERO_ENTRY the kernel stores; a tombstone keeps an ID reserved until the fd
is closed.  ``users`` is the object's refcount: 1 for the table's own reference plus one per holder
(a HWPT on its IOAS, a device attachment on its HWPT, a driver on its device, ...); DESTROY succeeds only
at exactly 1 (``refcount_dec_if_one``), anything more is EBUSY.
"""

from __future__ import annotations

import enum
import errno
import heapq
from collections.abc import Iterator
from typing import TYPE_CHECKING, ClassVar, Final, TypeVar

from vfiolab.errors import UapiError
from vfiolab.faultinject import fail_point

if TYPE_CHECKING:
    from vfiolab.iommufd.main import Iommufd

ID_MAX: Final = (1 << 31) - 1
"""xa_limit_31b."""


class ObjType(enum.IntEnum):
    """enum iommufd_object_type (include/linux/iommufd.h), with CONFIG_IOMMUFD_TEST's SELFTEST."""

    ANY = 0
    DEVICE = 1
    HWPT_PAGING = 2
    HWPT_NESTED = 3
    IOAS = 4
    ACCESS = 5
    FAULT = 6
    VIOMMU = 7
    VDEVICE = 8
    VEVENTQ = 9
    HW_QUEUE = 10
    SELFTEST = 11


class IommufdObject:
    """struct iommufd_object plus its iommufd_object_ops (``destroy``, ``abort``, ``pre_destroy``)."""

    type: ClassVar[ObjType] = ObjType.ANY

    def __init__(self, ictx: Iommufd) -> None:
        self.ictx = ictx
        self.id = 0
        self.users = 1
        """refcount users: 1 is the table's reference."""

    def pre_destroy(self) -> None:
        """ops->pre_destroy (only for objects external users hold)."""

    def destroy(self) -> None:
        """ops->destroy: release what the object holds (it is already out of the table)."""

    def abort(self) -> None:
        """ops->abort (defaults to destroy)."""
        self.destroy()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} id={self.id} users={self.users}>"


T = TypeVar("T", bound=IommufdObject)


class ObjectTable:
    """ictx->objects: IDs to objects, reserved (not yet finalized) IDs, tombstones."""

    def __init__(self) -> None:
        self._slots: dict[int, IommufdObject | None] = {}
        """ID -> object, or None for an XA_ZERO_ENTRY (reserved or tombstoned)."""
        self._free: list[int] = []
        self._next = 1

    # ------------------------------------------------------------------ ID allocation (xa_alloc)
    def _alloc_id(self) -> int:
        if self._free:
            return heapq.heappop(self._free)
        if self._next > ID_MAX:
            raise UapiError(errno.EBUSY, "no free object ID (xa_limit_31b exhausted)")
        self._next += 1
        return self._next - 1

    def _free_id(self, oid: int) -> None:
        # every free ID below _next is in the heap, so its minimum is the lowest free index
        del self._slots[oid]
        heapq.heappush(self._free, oid)

    def alloc(self, obj: T) -> T:
        """_iommufd_object_alloc(): reserve the lowest free ID (invisible until finalize)."""
        fail_point(f"_iommufd_object_alloc: kzalloc(struct iommufd_{obj.type.name.lower()})")
        fail_point("_iommufd_object_alloc: xa_alloc(&ictx->objects)")
        obj.id = self._alloc_id()
        obj.users = 1
        self._slots[obj.id] = None
        return obj

    def finalize(self, obj: IommufdObject) -> None:
        """iommufd_object_finalize(): publish the object under its ID."""
        self._slots[obj.id] = obj

    def abort(self, obj: IommufdObject) -> None:
        """iommufd_object_abort(): give back a reserved ID (the object was never visible)."""
        if self._slots.get(obj.id, 0) is None:
            self._free_id(obj.id)

    def abort_and_destroy(self, obj: IommufdObject) -> None:
        """iommufd_object_abort_and_destroy(): ops->abort (or destroy), then free the ID."""
        obj.abort()
        self.abort(obj)

    # ------------------------------------------------------------------ lookup
    def get(self, oid: int, type_: ObjType = ObjType.ANY) -> IommufdObject:
        """iommufd_get_object(): the visible object ``oid`` of ``type_`` (ANY matches all), else ENOENT
        (also when fault injection fails the lookup, as iommufd_should_fail() does there)."""
        fail_point("iommufd_get_object", errno.ENOENT)
        obj = self._slots.get(oid)
        if obj is None or (type_ != ObjType.ANY and obj.type != type_):
            raise UapiError(errno.ENOENT, f"no {type_.name.lower()} object with ID {oid}")
        return obj

    def lookup(self, oid: int) -> IommufdObject | None:
        """xa_load(): the visible object or None."""
        return self._slots.get(oid)

    def __iter__(self) -> Iterator[IommufdObject]:
        """Visible objects in ID order (xa_for_each)."""
        for oid in sorted(self._slots):
            obj = self._slots[oid]
            if obj is not None:
                yield obj

    def __len__(self) -> int:
        return sum(1 for v in self._slots.values() if v is not None)

    def empty(self) -> bool:
        """xa_empty(): no entry at all, reserved IDs and tombstones included."""
        return not self._slots

    def ids(self) -> list[int]:
        """Every occupied index (visible, reserved and tombstoned)."""
        return sorted(self._slots)

    # ------------------------------------------------------------------ removal
    def remove(self, oid: int, to_destroy: IommufdObject | None = None, *, tombstone: bool = False) -> None:
        """iommufd_object_remove(): with ``to_destroy`` the caller's users reference is dropped first;
        then the object goes only if the table holds the last reference (EBUSY otherwise)."""
        obj = self._slots.get(oid)
        if to_destroy is not None:
            to_destroy.users -= 1
            if obj is not to_destroy:
                raise UapiError(errno.ENOENT, f"object {oid} is not the one to destroy")
        elif obj is None:
            raise UapiError(errno.ENOENT, f"no object with ID {oid}")
        assert obj is not None
        if obj.users != 1:
            raise UapiError(errno.EBUSY, f"{type(obj).__name__} {oid} has {obj.users - 1} user(s)")
        obj.users = 0
        if tombstone:
            self._slots[oid] = None
        else:
            self._free_id(oid)
        victim: IommufdObject = obj
        if victim.ictx.compat_ioas is victim:
            victim.ictx.compat_ioas = None
        victim.destroy()

    def destroy_user(self, obj: IommufdObject, *, tombstone: bool = False) -> None:
        """iommufd_object_destroy_user()/tombstone_user(): a kernel user that holds a reference
        destroys the object (pre_destroy first, REMOVE_WAIT).  If others still hold it the kernel
        WARNs, keeps the object and frees it at close; so does this."""
        obj.pre_destroy()
        try:
            self.remove(obj.id, obj, tombstone=tombstone)
        except UapiError:
            pass

    def put_and_try_destroy(self, obj: IommufdObject) -> None:
        """iommufd_object_put_and_try_destroy(): drop a reference; destroy if it was the last user."""
        try:
            self.remove(obj.id, obj)
        except UapiError:
            pass

    def release_all(self) -> None:
        """iommufd_fops_release(): destroy leaf objects (users == 1) in ID order until none is left."""
        while True:
            destroyed = 0
            empty = True
            for oid in sorted(self._slots):
                obj = self._slots.get(oid)
                if obj is None:
                    continue
                empty = False
                if obj.users != 1:
                    continue
                obj.users = 0
                self._free_id(oid)
                obj.destroy()
                destroyed += 1
            if empty or not destroyed:
                break
        self._slots.clear()
        self._free.clear()
        self._next = 1
