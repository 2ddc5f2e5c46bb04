"""The environment the iommufd kselftest runs in, rebuilt on the model: a process with the global
``buffer`` (16 pages, 2 MiB aligned, MAP_SHARED|MAP_ANONYMOUS) and the memfd-backed ``mfd_buffer``, an
iommufd opened with the selftest mock, and the teardown check that no page of ``buffer`` stays pinned
once the fd is closed (teardown_iommufd()).  Helpers are written afresh from the selftest's expectations.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

import pytest

from vfiolab.errors import UapiError
from vfiolab.iommufd import Iommufd, MockIommu, Task, uapi
from vfiolab.memory import (
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_HUGETLB,
    MAP_PRIVATE,
    MAP_SHARED,
    PROT_READ,
    PROT_WRITE,
    MemFile,
    PhysMemory,
    UserProcess,
)

PAGE_SIZE: Final = 4096
BUFFER_SIZE: Final = 16 * PAGE_SIZE
HUGEPAGE_SIZE: Final = 2 << 20
PROT_RW: Final = PROT_READ | PROT_WRITE
BUFFER_VA: Final = 0x7E00_0000_0000
"""posix_memalign(HUGEPAGE_SIZE) then MAP_FIXED: any 2 MiB aligned address."""
MAP_RW: Final = uapi.IOMMU_IOAS_MAP_READABLE | uapi.IOMMU_IOAS_MAP_WRITEABLE
FIXED_RW: Final = MAP_RW | uapi.IOMMU_IOAS_MAP_FIXED_IOVA
MOCK_APERTURE_START: Final = uapi.MOCK_APERTURE_START
MOCK_APERTURE_LAST: Final = uapi.MOCK_APERTURE_LAST
MOCK_PAGE_SIZE: Final = uapi.MOCK_PAGE_SIZE
U64_MAX: Final = uapi.U64_MAX


@contextmanager
def expect_errno(err: int) -> Iterator[None]:
    """EXPECT_ERRNO(): the call fails with exactly ``err`` (and with nothing but UapiError)."""
    with pytest.raises(UapiError) as ei:
        yield
    assert ei.value.errno == err, f"expected {errno.errorcode[err]}, got {ei.value}"


class Env:
    """One test's process, fd and buffers (the FIXTURE's ``self``)."""

    def __init__(self, mem: PhysMemory) -> None:
        self.mem = mem
        self.mock = MockIommu(mem)
        self.proc = UserProcess(mem, name="selftest")
        self.task = Task.of(self.proc)
        self.fd = Iommufd(self.proc, selftest=self.mock)
        # MAP_SHARED|MAP_ANONYMOUS memory is shmem: model it as a shmem file so a fork() shares it
        self.shm = MemFile(mem, BUFFER_SIZE, name="dev/zero (deleted)")
        self.buffer = self.proc.mmap(BUFFER_SIZE, PROT_RW, MAP_SHARED | MAP_FIXED, addr=BUFFER_VA,
                                     file=self.shm)
        self.mfile = MemFile(mem, BUFFER_SIZE, name="buffer")
        self.mfd = self.task.fd_install(self.mfile)
        self.mfd_buffer = self.proc.mmap(BUFFER_SIZE, PROT_RW, MAP_SHARED, file=self.mfile)
        self.ioas_id = 0
        self.stdev_id = 0
        self.hwpt_id = 0
        self.device_id = 0
        self.base_iova = 0
        self.children: list[Task] = []

    @property
    def test(self):  # type: ignore[no-untyped-def]
        return self.fd.test

    # ------------------------------------------------------------------ iommufd_utils.h, rewritten
    def ioas_alloc(self) -> int:
        ioas_id = self.fd.ioas_alloc()
        assert ioas_id != 0
        return ioas_id

    def map(self, buf: int, length: int, ioas_id: int | None = None, flags: int = MAP_RW) -> int:
        """An auto-IOVA map (test_ioctl_ioas_map)."""
        return self.fd.ioas_map(self.ioas_id if ioas_id is None else ioas_id, buf, length, flags=flags)

    def map_fixed(self, buf: int, length: int, iova: int, ioas_id: int | None = None) -> int:
        """test_ioctl_ioas_map_fixed."""
        return self.fd.ioas_map(self.ioas_id if ioas_id is None else ioas_id, buf, length, iova=iova,
                                flags=FIXED_RW)

    def map_file(self, mfd: int, start: int, length: int, ioas_id: int | None = None,
                 iova: int | None = None) -> int:
        flags = MAP_RW if iova is None else FIXED_RW
        return self.fd.ioas_map_file(self.ioas_id if ioas_id is None else ioas_id, mfd, start, length,
                                     iova=iova or 0, flags=flags)

    def unmap(self, iova: int, length: int, ioas_id: int | None = None) -> int:
        return self.fd.ioas_unmap(self.ioas_id if ioas_id is None else ioas_id, iova, length)

    def mmap(self, length: int, flags: int = MAP_SHARED | MAP_ANONYMOUS, prot: int = PROT_RW) -> int:
        """mmap(); MAP_POPULATE of hugetlb memory is a touch of every huge page."""
        va = self.proc.mmap(length, prot, flags)
        if flags & MAP_HUGETLB:
            for off in range(0, length, HUGEPAGE_SIZE):
                self.proc.write(va + off, b"\0")
        return va

    def memfd_mmap(self, length: int, prot: int = PROT_RW,
                   flags: int = MAP_SHARED) -> tuple[int, int, MemFile]:
        """memfd_mmap(): (va, fd, file)."""
        huge = bool(flags & MAP_HUGETLB)
        mf = MemFile(self.mem, length, hugetlb=huge, name="buffer")
        fd = self.task.fd_install(mf)
        va = self.proc.mmap(length, prot, flags & ~MAP_HUGETLB, file=mf)
        return va, fd, mf

    def check_refs(self, ptr: int, length: int, refs: int) -> None:
        self.fd.test.md_check_refs(ptr, length, refs)

    def mock_domain(self, pt_id: int, dev_flags: int | None = None):  # type: ignore[no-untyped-def]
        out = self.fd.test.mock_domain(pt_id, dev_flags)
        assert out.stdev_id and out.idev_id
        return out

    def trigger_iopf(self, dev_id: int, pasid: int, fault_fd: int) -> None:
        """_test_cmd_trigger_iopf(): the device faults (group 2, READ|WRITE at 0xdeadbeaf), the fault is
        read from the queue's fd and answered with a success response."""
        self.test.trigger_iopf(dev_id, pasid, 0x2, 0x3, 0xDEADBEAF)
        f = self.task.fds[fault_fd]
        raw = f.read(uapi.iommu_hwpt_pgfault.size)  # type: ignore[attr-defined]
        assert len(raw) == uapi.iommu_hwpt_pgfault.size
        fault = uapi.iommu_hwpt_pgfault.unpack(raw)
        assert (fault["dev_id"], fault["pasid"], fault["grpid"], fault["addr"]) == (dev_id, pasid, 2, 0xDEADBEAF)
        resp = uapi.iommu_hwpt_page_response.pack(cookie=fault["cookie"], code=0)
        assert f.write(resp) == len(resp)  # type: ignore[attr-defined]

    def fork(self) -> Task:
        """fork(): a child whose shared mappings (``buffer``, ``mfd_buffer``) are the parent's; the
        tests only use those from the child."""
        child = UserProcess(self.mem, name="selftest-child")
        child.mmap(BUFFER_SIZE, PROT_RW, MAP_SHARED | MAP_FIXED, addr=self.buffer, file=self.shm)
        child.mmap(BUFFER_SIZE, PROT_RW, MAP_SHARED | MAP_FIXED, addr=self.mfd_buffer, file=self.mfile)
        task = Task.of(child)
        parent = self.task  # credentials and limits are inherited
        task.uid, task.cap_ipc_lock = parent.uid, parent.cap_ipc_lock
        task.cap_sys_resource = parent.cap_sys_resource
        task.rlimit_memlock = parent.rlimit_memlock
        self.children.append(task)
        return task

    # ------------------------------------------------------------------ teardown_iommufd()
    def teardown(self) -> None:
        """Close the fd, reopen, and check no page of ``buffer`` is still pinned; then let the process
        exit (its access and event-queue files close, releasing the context) and check that nothing
        of the fd survives (stronger than the kernel test)."""
        self.fd.close()
        fd2 = Iommufd(self.proc, selftest=self.mock)
        fd2.test.md_check_refs(self.buffer, BUFFER_SIZE, 0)
        fd2.close()
        self._close_files()
        assert self.fd.released, "the context outlived its files"
        assert not self.mock.devs, "mock devices left behind"
        assert int(self.mem.pincount.sum()) == 0, "pages still pinned after close"
        assert self.task.pinned_vm == 0 and self.task.locked_vm == 0

    def _close_files(self) -> None:
        for f in list(self.task.fds):  # exit(): every open file is released
            obj = self.task.fds.pop(f)
            if isinstance(obj, MemFile):
                obj.close()
            elif hasattr(obj, "release"):
                obj.release()

    def release(self) -> None:
        """Give the process' memory back (not part of the kernel test)."""
        self.fd.close()
        self._close_files()
        for child in self.children:
            if child.alive:
                child.exit()
        self.proc.close()
        self.shm.close()


__all__ = [
    "BUFFER_SIZE",
    "FIXED_RW",
    "HUGEPAGE_SIZE",
    "MAP_ANONYMOUS",
    "MAP_FIXED",
    "MAP_HUGETLB",
    "MAP_PRIVATE",
    "MAP_RW",
    "MAP_SHARED",
    "MOCK_APERTURE_LAST",
    "MOCK_APERTURE_START",
    "MOCK_PAGE_SIZE",
    "PAGE_SIZE",
    "PROT_RW",
    "U64_MAX",
    "Env",
    "expect_errno",
]


def kselftest(fixture: str, variants: list[str] | tuple[str,
                                                        ...] | None = None):  # type: ignore[no-untyped-def]
    """Parametrize a test over ``variants`` with pytest ids that are the harness' run names
    (``fixture.variant.test``; ``fixture.test`` without variants)."""
    from catalogue import run_name

    def deco(fn):  # type: ignore[no-untyped-def]
        test = fn.__name__.removeprefix("test_")
        vs = list(variants) if variants else [None]
        return pytest.mark.parametrize("variant", vs, ids=[run_name(fixture, v, test) for v in vs])(fn)
    return deco
