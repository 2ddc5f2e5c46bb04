"""The iommufd object table: xarray ID allocation (lowest free from 1, reserved IDs invisible,
tombstones), the users refcount and EBUSY, and close() destroying leaves first (main.c)."""

from __future__ import annotations

import errno

import pytest

from vfiolab.errors import UapiError
from vfiolab.iommufd.objects import IommufdObject, ObjectTable, ObjType


class _Ctx:
    compat_ioas = None


class Obj(IommufdObject):
    type = ObjType.IOAS

    def __init__(self, log: list[int] | None = None, holds: IommufdObject | None = None) -> None:
        super().__init__(_Ctx())  # type: ignore[arg-type]
        self.log = log
        self.holds = holds

    def destroy(self) -> None:
        if self.log is not None:
            self.log.append(self.id)
        if self.holds is not None:
            self.holds.users -= 1


def _new(t: ObjectTable, **kw: object) -> Obj:
    o = t.alloc(Obj(**kw))  # type: ignore[arg-type]
    t.finalize(o)
    return o


def test_ids_are_lowest_free_from_one() -> None:
    t = ObjectTable()
    a, b, c = _new(t), _new(t), _new(t)
    assert (a.id, b.id, c.id) == (1, 2, 3)
    t.remove(2)
    t.remove(1)
    assert _new(t).id == 1 and _new(t).id == 2 and _new(t).id == 4


def test_reserved_id_is_invisible_and_abort_frees_it() -> None:
    t = ObjectTable()
    o = t.alloc(Obj())
    with pytest.raises(UapiError) as ei:
        t.get(o.id)
    assert ei.value.errno == errno.ENOENT
    assert _new(t).id == 2  # the reserved ID is taken
    t.abort(o)
    assert _new(t).id == 1


def test_type_mismatch_and_id_zero_are_enoent() -> None:
    t = ObjectTable()
    o = _new(t)
    for oid, typ in ((0, ObjType.ANY), (o.id, ObjType.DEVICE), (99, ObjType.ANY)):
        with pytest.raises(UapiError) as ei:
            t.get(oid, typ)
        assert ei.value.errno == errno.ENOENT
    assert t.get(o.id, ObjType.IOAS) is o


def test_destroy_needs_the_last_reference() -> None:
    t = ObjectTable()
    parent = _new(t)
    child = _new(t, holds=parent)
    parent.users += 1
    with pytest.raises(UapiError) as ei:
        t.remove(parent.id)
    assert ei.value.errno == errno.EBUSY and t.get(parent.id) is parent
    t.remove(child.id)
    t.remove(parent.id)
    assert len(t) == 0


def test_tombstone_keeps_the_id_until_close() -> None:
    t = ObjectTable()
    o = _new(t)
    o.users += 1  # a kernel user's reference
    t.destroy_user(o, tombstone=True)
    with pytest.raises(UapiError):
        t.get(o.id)
    assert _new(t).id == 2 and 1 in t.ids()
    t.release_all()
    assert t.empty()


def test_release_destroys_leaves_first() -> None:
    t = ObjectTable()
    log: list[int] = []
    root = _new(t, log=log)
    mid = _new(t, log=log, holds=root)
    root.users += 1
    _new(t, log=log, holds=mid)
    mid.users += 1
    t.release_all()
    assert log == [3, 2, 1]
