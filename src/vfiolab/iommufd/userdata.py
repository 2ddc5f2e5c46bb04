"""Driver-specific data in user memory (``struct iommu_user_data`` / ``iommu_user_data_array``) and the
copy helpers IOMMU drivers use on it (``include/linux/iommu.h`` iommu_copy_struct_from_user,
iommu_copy_struct_from_user_array, iommu_copy_struct_from_full_user_array, iommu_copy_struct_to_user).

The type must match the driver's (EINVAL); a length outside [offsetofend(first version's last member),
sizeof] is EINVAL; the byte copies follow copy_struct_from_user() (zero-extend a short struct, E2BIG for
non-zero bytes past what the kernel knows, EFAULT) and copy_struct_to_user() (copy what fits, EFAULT).
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vfiolab.errors import UapiError
from vfiolab.iommufd.uapi import CStruct
from vfiolab.iommufd.ucmd import ProcessBuffer, copy_struct_from_user

if TYPE_CHECKING:
    from vfiolab.iommufd.main import Iommufd


@dataclass(frozen=True)
class UserData:
    """struct iommu_user_data / iommu_user_data_array: driver data in user memory (for an array
    ``len`` is the entry length)."""

    type: int
    uptr: int
    len: int
    entry_num: int = 0


def copy_user_data(ictx: Iommufd, st: CStruct, ud: UserData, data_type: int, min_last: str,
                   index: int | None = None) -> dict[str, int]:
    """iommu_copy_struct_from_user() / iommu_copy_struct_from_user_array() (entry ``index``)."""
    if index is not None:
        if index >= ud.entry_num or not ud.entry_num:
            raise UapiError(errno.EINVAL, "array index beyond entry_num")
        uptr, length = ud.uptr + ud.len * index, ud.len
    else:
        uptr, length = ud.uptr, ud.len
    if ud.type != data_type:
        raise UapiError(errno.EINVAL, f"data type {ud.type:#x}, expected {data_type:#x}")
    if length < st.offsetofend(min_last) or st.size < length:
        raise UapiError(errno.EINVAL, f"data length {length} outside [{st.offsetofend(min_last)}, {st.size}]")
    raw = copy_struct_from_user(st.size, ProcessBuffer(ictx.current.process, uptr), length)
    return st.unpack(raw)


def copy_full_user_array(ictx: Iommufd, st: CStruct, array: UserData, data_type: int) -> list[dict[str, int]]:
    """iommu_copy_struct_from_full_user_array(): every entry up front; EINVAL for another type or an
    empty array; entries of exactly ``sizeof`` are one copy (EFAULT), others go item by item through
    copy_struct_from_user()."""
    if array.type != data_type:
        raise UapiError(errno.EINVAL, f"array type {array.type:#x}, expected {data_type:#x}")
    if not array.entry_num:
        raise UapiError(errno.EINVAL, "empty array")
    if array.len == st.size:
        raw = ictx.copy_from_user(array.uptr, array.entry_num * st.size)
        return [st.unpack(raw[i * st.size:(i + 1) * st.size]) for i in range(array.entry_num)]
    proc = ictx.current.process
    return [st.unpack(copy_struct_from_user(st.size, ProcessBuffer(proc, array.uptr + array.len * i), array.len))
            for i in range(array.entry_num)]


def copy_user_data_to_user(ictx: Iommufd, ud: UserData, st: CStruct, values: dict[str, int], data_type: int,
                           min_last: str) -> None:
    """iommu_copy_struct_to_user(): EINVAL for another type or a user length outside
    [offsetofend(min_last), sizeof]; a shorter user struct gets the bytes that fit."""
    if ud.type != data_type:
        raise UapiError(errno.EINVAL, f"data type {ud.type:#x}, expected {data_type:#x}")
    if ud.len < st.offsetofend(min_last) or st.size < ud.len:
        raise UapiError(errno.EINVAL, f"data length {ud.len} outside [{st.offsetofend(min_last)}, {st.size}]")
    # include/linux/iommu.h __iommu_copy_struct_to_user() passes no ignored_trailing to
    # include/linux/uaccess.h copy_struct_to_user(): what does not fit is dropped without an error
    ictx.copy_to_user(ud.uptr, st.pack(values)[:ud.len])


__all__ = ["UserData", "copy_full_user_array", "copy_user_data", "copy_user_data_to_user"]
