"""User memory for the real-kernel backend: the calling process's own address space through syscalls, and the
small interface it shares with the model's :class:`vfiolab.memory.UserProcess`.

:class:`UserMemory` is what a uAPI scenario needs from "the process": ``mmap``/``munmap``/``mprotect`` of
anonymous memory and ``read``/``write`` of user VAs that fail with ``UapiError(EFAULT)`` instead of crashing.
``UserProcess`` satisfies it in the model; :class:`RealProcess` satisfies it on a real kernel, where a read
or write of a user VA goes through a pipe (``write(2)`` from the VA, ``read(2)`` into it), so the kernel's
own ``copy_from_user``/``copy_to_user`` decide what faults: an unmapped page or a write to a read-only page
is EFAULT exactly as an ioctl would see it, never a SIGSEGV of the interpreter.

Standard library only (ctypes, os): this module runs in a minimal guest next to :mod:`.kernel`.
"""

from __future__ import annotations

import ctypes
import errno
import os
from typing import Final, Protocol, runtime_checkable

from vfiolab.errors import UapiError

PAGE_SIZE: Final = os.sysconf("SC_PAGE_SIZE")
# include/uapi/asm-generic/mman-common.h, mman.h (x86-64)
PROT_NONE: Final = 0x0
PROT_READ: Final = 0x1
PROT_WRITE: Final = 0x2
MAP_SHARED: Final = 0x01
MAP_PRIVATE: Final = 0x02
MAP_FIXED: Final = 0x10
MAP_ANONYMOUS: Final = 0x20
MAP_HUGETLB: Final = 0x40000
MAP_FIXED_NOREPLACE: Final = 0x100000
_MAP_FAILED: Final = ctypes.c_void_p(-1).value
_CHUNK: Final = 32 << 10
"""Bytes moved through the pipe at a time: well inside the default 64 KiB pipe capacity, so a non-blocking
write of one chunk into the empty pipe never comes up short for lack of room."""


@runtime_checkable
class UserMemory(Protocol):
    """The user address space a uAPI scenario touches (model: ``UserProcess``; kernel: :class:`RealProcess`)."""

    def mmap(self, length: int, prot: int = ..., flags: int = ..., *, addr: int = 0) -> int:
        """mmap(2) of anonymous memory: the start address."""
        ...

    def munmap(self, addr: int, length: int) -> None:
        """munmap(2)."""
        ...

    def mprotect(self, addr: int, length: int, prot: int) -> None:
        """mprotect(2)."""
        ...

    def read(self, va: int, n: int) -> bytes:
        """copy_from_user(): ``n`` bytes at ``va`` (EFAULT)."""
        ...

    def write(self, va: int, data: bytes | bytearray | memoryview) -> None:
        """copy_to_user(): ``data`` at ``va`` (EFAULT)."""
        ...


class Libc:
    """The few libc entry points the backend calls through ctypes, with errno kept (``use_errno``)."""

    def __init__(self) -> None:
        lib = ctypes.CDLL(None, use_errno=True)
        self.mmap = lib.mmap
        self.mmap.restype = ctypes.c_void_p
        self.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                              ctypes.c_long]
        self.munmap = lib.munmap
        self.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        self.mprotect = lib.mprotect
        self.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        self.read = lib.read
        self.read.restype = ctypes.c_ssize_t
        self.read.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
        self.write = lib.write
        self.write.restype = ctypes.c_ssize_t
        self.write.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
        self.ioctl = lib.ioctl
        self.ioctl.restype = ctypes.c_int
        self.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]


_LIBC: Libc | None = None


def libc() -> Libc:
    """The process-wide :class:`Libc` (made on first use)."""
    global _LIBC
    if _LIBC is None:
        _LIBC = Libc()
    return _LIBC


def raise_errno(what: str) -> None:
    """Raise ``UapiError`` with the errno the last libc call left."""
    err = ctypes.get_errno()
    raise UapiError(err, f"{what}: {os.strerror(err)}")


class RealProcess:
    """This process's address space as a :class:`UserMemory`, on a real kernel."""

    def __init__(self) -> None:
        self.libc = libc()
        self._rfd, self._wfd = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self.closed = False

    def mmap(self, length: int, prot: int = PROT_READ | PROT_WRITE, flags: int = MAP_PRIVATE | MAP_ANONYMOUS,
             *, addr: int = 0, fd: int = -1, offset: int = 0) -> int:
        """mmap(2); ``fd``/``offset`` map a file (a memfd, the iommufd)."""
        va = self.libc.mmap(addr or None, length, prot, flags, fd, offset)
        if va is None or va == _MAP_FAILED:
            raise_errno("mmap")
        return int(va)

    def munmap(self, addr: int, length: int) -> None:
        """munmap(2)."""
        if self.libc.munmap(addr, length):
            raise_errno("munmap")

    def mprotect(self, addr: int, length: int, prot: int) -> None:
        """mprotect(2)."""
        if self.libc.mprotect(addr, length, prot):
            raise_errno("mprotect")

    def read(self, va: int, n: int) -> bytes:
        """``n`` bytes at ``va``, copied by the kernel (write(2) from the VA into the pipe): EFAULT when any
        byte cannot be read."""
        out = bytearray()
        pos = 0
        while pos < n:
            k = min(_CHUNK, n - pos)
            got = self.libc.write(self._wfd, va + pos, k)
            if got != k:
                err = ctypes.get_errno() if got < 0 else errno.EFAULT
                self._drain()
                raise UapiError(err, f"read of {n} bytes at {va:#x}: {os.strerror(err)}")
            out += self._take(k)
            pos += k
        return bytes(out)

    def write(self, va: int, data: bytes | bytearray | memoryview) -> None:
        """``data`` at ``va``, copied by the kernel (read(2) from the pipe into the VA): EFAULT when any byte
        cannot be written (unmapped, read-only), and then nothing is changed — the bytes a copy stored
        before it faulted are put back, so a failed write is all or nothing like the model's."""
        mv = memoryview(data).cast("B")
        old = self.read(va, len(mv))  # EFAULT here when a byte is not even readable
        try:
            self._copy_in(va, mv)
        except UapiError:
            self._copy_in(va, memoryview(old), best_effort=True)
            raise

    def _copy_in(self, va: int, mv: memoryview, best_effort: bool = False) -> None:
        pos = 0
        while pos < len(mv):
            k = min(_CHUNK, len(mv) - pos)
            if os.write(self._wfd, mv[pos:pos + k]) != k:
                self._drain()
                raise UapiError(errno.EAGAIN, "pipe refused a chunk")
            got = self.libc.read(self._rfd, va + pos, k)
            if got != k:
                err = ctypes.get_errno() if got < 0 else errno.EFAULT
                self._drain()
                if best_effort:
                    return
                raise UapiError(err, f"write of {len(mv)} bytes at {va:#x}: {os.strerror(err)}")
            pos += k

    def _take(self, k: int) -> bytes:
        buf = bytearray()
        while len(buf) < k:
            buf += os.read(self._rfd, k - len(buf))
        return bytes(buf)

    def _drain(self) -> None:
        """Empty the pipe after a short copy (what was copied before the fault)."""
        while True:
            try:
                if not os.read(self._rfd, _CHUNK):
                    return
            except BlockingIOError:
                return

    def close(self) -> None:
        """Close the pipe (the mappings stay: they belong to the process)."""
        if not self.closed:
            self.closed = True
            os.close(self._rfd)
            os.close(self._wfd)


__all__ = ["MAP_ANONYMOUS", "MAP_FIXED", "MAP_FIXED_NOREPLACE", "MAP_HUGETLB", "MAP_PRIVATE", "MAP_SHARED",
           "PROT_NONE", "PROT_READ", "PROT_WRITE", "Libc", "RealProcess", "UserMemory", "libc", "raise_errno"]
