"""The calling process as iommufd sees ``current``: its address space (a :class:`UserProcess`), its
credentials and RLIMIT_MEMLOCK, its file-descriptor table, and the counters iommufd's pin accounting moves
(``mm->pinned_vm``, ``mm->locked_vm``, ``user_struct->locked_vm``: VmPin/VmLck in /proc/PID/status).

:class:`vfiolab.memory.UserProcess` models only the address space; this module is the thin adapter that
adds what ``drivers/iommu/iommufd/pages.c`` reads from the task and the mm.  One :class:`Task` belongs to
one UserProcess (``Task.of(process)``), so every iommufd context sharing a process shares its counters.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from typing import Final

from vfiolab.errors import UapiError
from vfiolab.memory import PAGE_SIZE, UserProcess

RLIM_INFINITY: Final = (1 << 64) - 1
DEFAULT_RLIMIT_MEMLOCK: Final = 8 << 20
"""include/uapi/linux/resource.h MLOCK_LIMIT (8 MiB since Linux 5.16)."""
FIRST_FD: Final = 3
"""0, 1 and 2 are stdin/stdout/stderr."""


@dataclass
class UserStruct:
    """struct user_struct: per-UID counters (``locked_vm`` is what RLIMIT_MODE=user charges)."""

    uid: int
    locked_vm: int = 0


_USERS: dict[int, UserStruct] = {}


def user_struct(uid: int) -> UserStruct:
    """get_uid()/find_user(): the one user_struct of ``uid`` (shared by every task of that user)."""
    return _USERS.setdefault(uid, UserStruct(uid))


@dataclass
class Task:
    """``current`` for one process: credentials, rlimit, fds and the mm accounting counters."""

    process: UserProcess
    uid: int = 0
    cap_ipc_lock: bool = True
    """CAP_IPC_LOCK: pages mapped by this task are not charged (pages.c iopt_alloc_pages)."""
    cap_sys_resource: bool = True
    """CAP_SYS_RESOURCE: needed for IOMMU_OPTION_RLIMIT_MODE SET (ioas.c)."""
    cap_sys_rawio: bool = True
    rlimit_memlock: int = DEFAULT_RLIMIT_MEMLOCK
    pinned_vm: int = 0
    """mm->pinned_vm in pages (VmPin)."""
    locked_vm: int = 0
    """mm->locked_vm in pages (VmLck)."""
    alive: bool = True
    """False once the process exited: mmget_not_zero() on its mm fails."""
    fds: dict[int, object] = field(default_factory=dict)

    @classmethod
    def of(cls, process: UserProcess) -> Task:
        """The task of ``process`` (created with root's credentials on first use, as the kernel
        selftests run).  It hangs off the process itself: a global weak map keyed by the process
        would never drop an entry, because its value (the task) holds the process."""
        task: Task | None = getattr(process, "_iommufd_task", None)
        if task is None:
            task = cls(process)
            setattr(process, "_iommufd_task", task)  # noqa: B010 (an attribute the memory layer does not know)
        return task

    @property
    def user(self) -> UserStruct:
        return user_struct(self.uid)

    # ------------------------------------------------------------------ files
    def fd_install(self, obj: object) -> int:
        """get_unused_fd_flags() + fd_install(): the lowest free descriptor."""
        fd = FIRST_FD
        while fd in self.fds:
            fd += 1
        self.fds[fd] = obj
        return fd

    def fget(self, fd: int) -> object:
        """fget(): the open file behind ``fd`` (EBADF)."""
        try:
            return self.fds[fd]
        except KeyError:
            raise UapiError(errno.EBADF, f"fd {fd} is not open") from None

    def close_fd(self, fd: int) -> object:
        """close(2): drop the descriptor and return the file (EBADF); the caller releases the file
        when this was its last reference."""
        try:
            return self.fds.pop(fd)
        except KeyError:
            raise UapiError(errno.EBADF, f"fd {fd} is not open") from None

    def close(self, fd: int) -> None:
        """close(2) that also releases the file (its ``release()`` hook) when this was its last
        reference (:func:`fput`)."""
        fput(self.close_fd(fd))

    # ------------------------------------------------------------------ accounting (mm/util.c)
    def account_locked_vm(self, npages: int, inc: bool) -> None:
        """__account_locked_vm(mm, npages, inc, task, bypass_rlim=false): ENOMEM when the new total
        exceeds the task's RLIMIT_MEMLOCK (no capability bypass here; iommufd never charges a
        CAP_IPC_LOCK task in the first place)."""
        if inc:
            limit = self.memlock_pages()
            if self.locked_vm + npages > limit:
                raise UapiError(errno.ENOMEM,
                                f"locked_vm {self.locked_vm}+{npages} pages over RLIMIT_MEMLOCK "
                                f"{limit} pages")
            self.locked_vm += npages
        else:
            self.locked_vm = max(0, self.locked_vm - npages)

    def memlock_pages(self) -> int:
        """task_rlimit(task, RLIMIT_MEMLOCK) >> PAGE_SHIFT."""
        return self.rlimit_memlock >> 12

    def status(self) -> dict[str, int]:
        """The /proc/PID/status lines iommufd moves, in kB (fs/proc/task_mmu.c task_mem())."""
        kb = PAGE_SIZE // 1024
        return {"VmPin": self.pinned_vm * kb, "VmLck": self.locked_vm * kb}

    def exit(self) -> None:
        """do_exit(): the address space goes away; pages pinned by iommufd stay pinned."""
        self.alive = False
        self.process.close()


def get_file(file: object) -> None:
    """get_file(): one more reference on an open file besides its descriptor (e.g. iopt_alloc_file_pages()
    keeps the file it maps), so closing the descriptor no longer releases it."""
    setattr(file, "_f_extra_refs", getattr(file, "_f_extra_refs", 0) + 1)  # noqa: B010


def fput(file: object) -> None:
    """fput(): drop one reference; the last one runs the file's ``release()`` hook."""
    extra = getattr(file, "_f_extra_refs", 0)
    if extra:
        setattr(file, "_f_extra_refs", extra - 1)  # noqa: B010
        return
    release = getattr(file, "release", None)
    if release is not None:
        release()
