"""How an ioctl reaches its handler: the user buffer the argument points at, ``copy_struct_from_user()``
with the size rules, and ``iommufd_ucmd_respond()`` (``drivers/iommu/iommufd/main.c``,
``include/linux/uaccess.h``).

A user buffer is either process memory at a virtual address (the faithful case: the argument of
``ioctl(2)`` is a pointer) or a local ``bytearray`` holding the struct (the convenience case: reading
past its end faults like reading unmapped memory).
"""

from __future__ import annotations

import errno
import struct
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar

from vfiolab.errors import UapiError
from vfiolab.iommufd.uapi import CStruct, IoctlOp
from vfiolab.memory import UserProcess

if TYPE_CHECKING:
    from vfiolab.iommufd.main import Iommufd, IommufdObject

T = TypeVar("T", bound="IommufdObject")

_ZERO_CHUNK: Final = 1 << 16


class UserBuffer(Protocol):
    """A user pointer: copy_from_user()/copy_to_user() relative to it (EFAULT on a bad byte)."""

    def read(self, off: int, n: int) -> bytes: ...

    def write(self, off: int, data: bytes | bytearray | memoryview) -> None: ...


class LocalBuffer:
    """The argument struct given as bytes: the readable and writable user memory is exactly it."""

    def __init__(self, data: bytes | bytearray) -> None:
        self.data = data if isinstance(data, bytearray) else bytearray(data)

    def read(self, off: int, n: int) -> bytes:
        if off < 0 or n < 0 or off + n > len(self.data):
            raise UapiError(errno.EFAULT, f"read of [{off}, +{n}) beyond the {len(self.data)}-byte argument")
        return bytes(self.data[off:off + n])

    def write(self, off: int, data: bytes | bytearray | memoryview) -> None:
        n = len(data)
        if off < 0 or off + n > len(self.data):
            raise UapiError(errno.EFAULT, f"write of [{off}, +{n}) beyond the {len(self.data)}-byte argument")
        self.data[off:off + n] = data


class ProcessBuffer:
    """The argument as a virtual address in a process: faithful ``ioctl(fd, cmd, ptr)``."""

    def __init__(self, process: UserProcess, addr: int) -> None:
        self.process = process
        self.addr = addr

    def read(self, off: int, n: int) -> bytes:
        if n == 0:
            return b""
        return self.process.read(self.addr + off, n)

    def write(self, off: int, data: bytes | bytearray | memoryview) -> None:
        if len(data):
            self.process.write(self.addr + off, data)


def copy_struct_from_user(ksize: int, ubuf: UserBuffer, usize: int) -> bytearray:
    """copy_struct_from_user(): ``ksize`` bytes for the kernel; a shorter user struct is zero
    extended, a longer one must have only zero bytes past ``ksize`` (E2BIG), EFAULT on a bad byte."""
    size = min(ksize, usize)
    out = bytearray(ubuf.read(0, size))
    out += bytes(ksize - size)
    pos = ksize
    while pos < usize:  # check_zeroed_user(), chunk by chunk so a huge usize stops at the first fault
        n = min(_ZERO_CHUNK, usize - pos)
        chunk = ubuf.read(pos, n)
        if any(chunk):
            raise UapiError(errno.E2BIG, f"non-zero byte past the {ksize}-byte struct the kernel knows")
        pos += n
    return out


class Ucmd:
    """struct iommufd_ucmd: the context, the user buffer and its size, the kernel copy of the command
    (``cmd``, a dict of members) and the object the command allocated (``new_obj``)."""

    def __init__(self, ictx: Iommufd, op: IoctlOp, ubuf: UserBuffer, user_size: int, raw: bytearray) -> None:
        self.ictx = ictx
        self.op = op
        self.ubuf = ubuf
        self.user_size = user_size
        self.raw = raw
        self.cmd: dict[str, Any] = op.struct.unpack(raw)
        self.new_obj: IommufdObject | None = None
        self.responded = False

    def alloc_obj(self, obj: T) -> T:
        """_iommufd_object_alloc_ucmd(): reserve an ID for the command's object; the dispatcher
        finalizes it when the handler succeeds and aborts and destroys it when it fails."""
        assert self.new_obj is None, "one object per command"
        self.new_obj = self.ictx.objects.alloc(obj)
        return obj

    @property
    def struct(self) -> CStruct:
        return self.op.struct

    def encode(self) -> bytearray:
        """The kernel copy with ``cmd``'s members stored back (arrays and union bytes kept from ``raw``;
        union aliases are read-only views, handlers write the real member)."""
        buf = bytearray(self.raw)
        for name, value in self.cmd.items():
            if name in self.struct.fields and self.struct.fields[name].count == 1:
                self.struct.put(buf, name, value)
        return buf

    def respond(self, cmd_len: int | None = None) -> None:
        """iommufd_ucmd_respond(): copy min(user_size, cmd_len) bytes of the command back (EFAULT)."""
        n = min(self.user_size, self.struct.size if cmd_len is None else cmd_len)
        self.ubuf.write(0, self.encode()[:n])
        self.responded = True


def get_user_u32(ubuf: UserBuffer) -> int:
    """get_user() of the leading ``__u32 size``."""
    return int(struct.unpack("<I", ubuf.read(0, 4))[0])
