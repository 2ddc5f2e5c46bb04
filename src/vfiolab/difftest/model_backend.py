"""The model side of a differential run: vfiolab's own /dev/iommu (:class:`~vfiolab.iommufd.Iommufd` with the
selftest mock) over a fresh simulated RAM and :class:`~vfiolab.memory.UserProcess` per scenario, with the
process operations of :class:`~vfiolab.difftest.backend.Backend` mapped onto the model's files and fds.
"""

from __future__ import annotations

import errno
from typing import Any

from vfiolab.difftest.backend import Backend
from vfiolab.errors import UapiError
from vfiolab.iommufd import Iommufd, MockIommu, Task
from vfiolab.memory import MAP_FIXED, MemFile, PhysMemory, UserProcess

RAM_SIZE = 2 << 30
"""Simulated RAM per scenario (sparse: only touched frames cost host memory)."""


class ModelBackend(Backend):
    """vfiolab's model of Linux 7.2's iommufd with CONFIG_IOMMUFD_TEST."""

    name = "model"

    def __init__(self, ram_size: int = RAM_SIZE) -> None:
        super().__init__()
        self.ram_size = ram_size
        self.phys: PhysMemory | None = None
        self.task: Task | None = None

    def start(self) -> None:
        super().start()
        self.phys = PhysMemory(self.ram_size, name="difftest-ram")
        self.mem = UserProcess(self.phys, name="difftest")
        self.task = Task.of(self.mem)
        self.iommufd = Iommufd(self.mem, selftest=MockIommu(self.phys))

    def finish(self) -> None:
        if self.iommufd is None:
            return
        assert self.task is not None and self.phys is not None
        self.detach_pasids()
        self.iommufd.close()
        for fd in sorted(self.task.fds):
            self.task.close(fd)
        self.mem.close()
        self.phys.close()
        self.iommufd = None

    def _file(self, fd: int) -> Any:
        assert self.task is not None
        return self.task.fget(fd)

    def _mmap_at(self, addr: int, length: int, prot: int, flags: int, fd: int | None, offset: int) -> int:
        file = None
        if fd is not None:
            file = self._file(fd)
            if not isinstance(file, MemFile):  # no ->mmap: mm/mmap.c do_mmap()
                raise UapiError(errno.ENODEV, f"fd {fd} cannot be mapped")
        return int(self.mem.mmap(length, prot, flags | MAP_FIXED, addr=addr, file=file, offset=offset))

    def _memfd(self, size: int, huge: bool) -> int:
        assert self.phys is not None and self.task is not None
        return self.task.fd_install(MemFile(self.phys, size, hugetlb=huge, name="memfd:vfiolab-difftest"))

    def _close(self, fd: int) -> None:
        assert self.task is not None
        self.task.close(fd)

    def _read_fd(self, fd: int, count: int) -> bytes:
        reader = getattr(self._file(fd), "read", None)
        if reader is None:  # fs/read_write.c vfs_read(): no read op
            raise UapiError(errno.EINVAL, f"fd {fd} is not readable")
        return bytes(reader(count))

    def _write_fd(self, fd: int, data: bytes) -> int:
        writer = getattr(self._file(fd), "write", None)
        if writer is None:  # fs/read_write.c vfs_write(): no write op
            raise UapiError(errno.EINVAL, f"fd {fd} is not writable")
        return int(writer(data))


__all__ = ["ModelBackend"]
