"""What a scenario runs against: a :class:`Backend` is one fresh /dev/iommu (model or real kernel) with the
selftest operations, plus the process operations a scenario needs around it (user memory, memfds, fds of
event queues and accesses).

User memory is placed identically on both sides: the n-th ``mmap`` of a scenario lands at ``ARENA_BASE +
n * ARENA_SLOT`` (1 GiB aligned, so buffers and the IOVAs the kernel derives from their alignment agree),
in the model with MAP_FIXED and on the kernel with MAP_FIXED_NOREPLACE (never over the interpreter's own
mappings).  :class:`KernelBackend` is here (standard library only, for the guest); the model's backend is
:mod:`vfiolab.difftest.model_backend`.
"""

from __future__ import annotations

import errno
import hashlib
import inspect
import os
import struct
from collections.abc import Mapping, Sequence
from typing import Any, Final

from vfiolab.difftest.ops import OPS
from vfiolab.errors import UapiError
from vfiolab.iommufd.kernel_mm import (
    MAP_ANONYMOUS,
    MAP_FIXED_NOREPLACE,
    MAP_HUGETLB,
    MAP_PRIVATE,
    MAP_SHARED,
    PROT_READ,
    PROT_WRITE,
)

ARENA_BASE: Final = 0x2000_0000_0000
ARENA_SLOT: Final = 1 << 30
DEFAULT_MEMORY_LIMIT: Final = 65536
"""selftest.c iommufd_test_memory_limit's initial value (SET_TEMP_MEMORY_LIMIT is module-wide)."""


def payload(data: str | None = None, u64: Sequence[int] | None = None, u32: Sequence[int] | None = None,
            fill: int | None = None, pattern: int | None = None, length: int | None = None) -> bytes:
    """The bytes a ``write``/``write_fd`` call stores: hex ``data``, little-endian ``u64``/``u32`` lists, a
    ``fill`` byte or a deterministic ``pattern`` (SHAKE-128 of the number) of ``length`` bytes."""
    given = [k for k, v in (("data", data), ("u64", u64), ("u32", u32), ("fill", fill), ("pattern", pattern))
             if v is not None]
    if len(given) != 1:
        raise UapiError(errno.EINVAL, f"give exactly one of data/u64/u32/fill/pattern, got {given or 'none'}")
    try:
        if data is not None:
            return bytes.fromhex(data)
        if u64 is not None:
            return struct.pack(f"<{len(u64)}Q", *u64)
        if u32 is not None:
            return struct.pack(f"<{len(u32)}I", *u32)
    except (ValueError, TypeError, struct.error) as e:
        raise UapiError(errno.EINVAL, f"bad payload: {e}") from None
    if length is None or length < 0:
        raise UapiError(errno.EINVAL, "fill and pattern need a length")
    if fill is not None:
        return bytes([fill]) * length
    return hashlib.shake_128(str(pattern).encode()).digest(length)


class Backend:
    """One scenario's world; subclasses provide the iommufd, the memory and the fd plumbing."""

    name = "backend"

    def __init__(self) -> None:
        self.iommufd: Any = None
        self.mem: Any = None
        self.slots = 0
        self.touched_memory_limit = False
        self.pasids: set[tuple[int, int]] = set()
        """(stdev_id, pasid) attached by the scenario and not detached yet."""

    # ------------------------------------------------------------------ lifecycle (subclasses)
    def start(self) -> None:
        """Open a fresh /dev/iommu and address space for one scenario."""
        self.slots = 0
        self.touched_memory_limit = False
        self.pasids = set()

    def finish(self) -> None:
        """Close everything the scenario opened."""

    def note(self, op: str, kwargs: Mapping[str, Any]) -> None:
        """Track what :meth:`detach_pasids` must undo after a successful call."""
        if op in ("test.pasid_attach", "test.pasid_replace"):
            self.pasids.add((kwargs["stdev_id"], kwargs["pasid"]))
        elif op == "test.pasid_detach":
            self.pasids.discard((kwargs["stdev_id"], kwargs["pasid"]))

    def detach_pasids(self) -> None:
        """Detach every PASID the scenario left attached, before the fd closes.  Linux 7.2's selftest
        mock destroys a device (``iommufd_selftest_destroy()`` in drivers/iommu/iommufd/selftest.c)
        detaching only its RID, so a PASID still attached makes the unbind fail (WARN in
        iommufd_object_destroy_user), leaks the group and later oopses the guest (docs/oracle.md).
        Done on both sides, so the model sees the same calls."""
        for stdev, pasid in sorted(self.pasids):
            try:
                self.iommufd.test.pasid_detach(stdev, pasid)
            except UapiError:
                pass
        self.pasids = set()

    # ------------------------------------------------------------------ dispatch
    def bind(self, op: str, args: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
        """The callable of ``op`` and its arguments; TypeError when they do not fit its signature."""
        family = OPS[op].family
        if family == "proc":
            fn = getattr(self, op)
        elif family == "test":
            fn = getattr(self.iommufd.test, op.removeprefix("test."))
            self.touched_memory_limit |= op == "test.set_temp_memory_limit"
        elif op == "ioctl":
            fn = self.ioctl
        else:
            fn = getattr(self.iommufd, op)
        inspect.signature(fn).bind(**args)
        return fn, dict(args)

    def ioctl(self, cmd: int, arg: str | int | None = None) -> Any:
        """The raw ioctl: ``arg`` as a hex string is the struct (the bytes written back are the result), an
        int a pointer or value, None NULL."""
        if isinstance(arg, str):
            return self.iommufd.ioctl(cmd, bytes.fromhex(arg))
        return self.iommufd.ioctl(cmd, arg)

    # ------------------------------------------------------------------ process operations
    def mmap(self, length: int, prot: int = PROT_READ | PROT_WRITE, shared: bool = False, huge: bool = False,
             fd: int | None = None, offset: int = 0) -> int:
        """mmap(2) at the next arena slot: anonymous (private unless ``shared``), hugetlb with ``huge``, or of
        the file ``fd`` (a memfd)."""
        flags = (MAP_SHARED if shared else MAP_PRIVATE) | (MAP_HUGETLB if huge else 0)
        if fd is None:
            flags |= MAP_ANONYMOUS
        addr = ARENA_BASE + self.slots * ARENA_SLOT
        if length <= 0 or length > 64 * ARENA_SLOT:
            raise UapiError(errno.EINVAL, f"mmap length {length:#x} outside the arena's reach")
        va = self._mmap_at(addr, length, prot, flags, fd, offset)
        self.slots += -(-length // ARENA_SLOT)
        return va

    def munmap(self, va: int, length: int) -> None:
        """munmap(2)."""
        self.mem.munmap(va, length)

    def mprotect(self, va: int, length: int, prot: int) -> None:
        """mprotect(2)."""
        self.mem.mprotect(va, length, prot)

    def read(self, va: int, length: int) -> bytes:
        """The bytes at ``va`` (EFAULT)."""
        return bytes(self.mem.read(va, length))

    def write(self, va: int, data: str | None = None, u64: Sequence[int] | None = None,
              u32: Sequence[int] | None = None, fill: int | None = None, pattern: int | None = None,
              length: int | None = None) -> None:
        """Store :func:`payload` at ``va`` (EFAULT)."""
        self.mem.write(va, payload(data, u64, u32, fill, pattern, length))

    def write_fd(self, fd: int, data: str | None = None, u32: Sequence[int] | None = None) -> int:
        """write(2) to ``fd`` (a fault queue takes page responses): bytes consumed."""
        return self._write_fd(fd, payload(data=data, u32=u32))

    def read_fd(self, fd: int, count: int) -> bytes:
        """read(2) of up to ``count`` bytes from ``fd`` (an event queue)."""
        return self._read_fd(fd, count)

    def memfd(self, size: int, huge: bool = False) -> int:
        """memfd_create(2) + ftruncate(2): the fd."""
        return self._memfd(size, huge)

    def close(self, fd: int) -> None:
        """close(2)."""
        self._close(fd)

    def fd_mmap(self, length: int, offset: int, prot: int = PROT_READ | PROT_WRITE,
                flags: int = MAP_SHARED) -> int:
        """mmap(2) of the iommufd itself (a vIOMMU's region): the address the kernel chose."""
        return int(self.iommufd.mmap(length, offset, prot, flags))

    def fd_munmap(self, va: int, length: int) -> None:
        """munmap(2) of an :meth:`fd_mmap` mapping."""
        self.iommufd.munmap(va, length)

    # ------------------------------------------------------------------ hooks
    def _mmap_at(self, addr: int, length: int, prot: int, flags: int, fd: int | None, offset: int) -> int:
        raise NotImplementedError

    def _memfd(self, size: int, huge: bool) -> int:
        raise NotImplementedError

    def _close(self, fd: int) -> None:
        raise NotImplementedError

    def _read_fd(self, fd: int, count: int) -> bytes:
        raise NotImplementedError

    def _write_fd(self, fd: int, data: bytes) -> int:
        raise NotImplementedError


def _os_call(what: str, fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except OSError as e:
        raise UapiError(e.errno or errno.EIO, f"{what}: {e.strerror}") from None


class KernelBackend(Backend):
    """The running kernel: a real /dev/iommu and this process's memory and fds."""

    name = "kernel"

    def __init__(self, path: str = "/dev/iommu") -> None:
        super().__init__()
        self.path = path
        self._fds_before: set[int] = set()

    def start(self) -> None:
        from vfiolab.iommufd.kernel import KernelIommufd
        from vfiolab.iommufd.kernel_mm import RealProcess
        super().start()
        self._fds_before = self._open_fds()
        self.mem = RealProcess()
        self.iommufd = KernelIommufd(self.path, self.mem)

    @staticmethod
    def _open_fds() -> set[int]:
        return {int(n) for n in os.listdir("/proc/self/fd")}

    def finish(self) -> None:
        if self.iommufd is None:
            return
        self.detach_pasids()
        if self.touched_memory_limit:  # module-wide: the next scenario starts from the default
            try:
                self.iommufd.test.set_temp_memory_limit(DEFAULT_MEMORY_LIMIT)
            except UapiError:
                pass
        self.iommufd.close()
        self.mem.close()
        for fd in self._open_fds() - self._fds_before:
            try:
                os.close(fd)
            except OSError:
                pass  # the listing's own fd
        if self.slots:
            self.mem.munmap(ARENA_BASE, self.slots * ARENA_SLOT)
        self.iommufd = None

    def _mmap_at(self, addr: int, length: int, prot: int, flags: int, fd: int | None, offset: int) -> int:
        return int(self.mem.mmap(length, prot, flags | MAP_FIXED_NOREPLACE, addr=addr,
                                 fd=-1 if fd is None else fd, offset=offset))

    def _memfd(self, size: int, huge: bool) -> int:
        fd = _os_call("memfd_create", os.memfd_create, "vfiolab-difftest",
                      os.MFD_CLOEXEC | (os.MFD_HUGETLB if huge else 0))
        try:
            _os_call("ftruncate", os.ftruncate, fd, size)
        except UapiError:
            os.close(fd)
            raise
        return int(fd)

    def _close(self, fd: int) -> None:
        _os_call("close", os.close, fd)

    def _read_fd(self, fd: int, count: int) -> bytes:
        return bytes(_os_call("read", os.read, fd, count))

    def _write_fd(self, fd: int, data: bytes) -> int:
        return int(_os_call("write", os.write, fd, data))


__all__ = ["ARENA_BASE", "ARENA_SLOT", "Backend", "KernelBackend", "payload"]
