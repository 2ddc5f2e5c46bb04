"""FIXTURE(change_process) of the kernel selftest: IOMMU_IOAS_CHANGE_PROCESS moves the pin accounting
of memfd maps to the calling process (VmPin, and VmLck under RLIMIT_MODE=mm) and refuses plain user
maps.  The test drops CAP_IPC_LOCK so pins are charged.  Expectations re-expressed from
tools/testing/selftests/iommu/iommufd.c (Linux 7.2)."""

from __future__ import annotations

import errno
from collections.abc import Iterator

import pytest
from kself import PAGE_SIZE, Env, expect_errno, kselftest

from vfiolab.iommufd import uapi
from vfiolab.iommufd.pages import IOPT_PAGES_ACCOUNT_MM, IOPT_PAGES_ACCOUNT_NONE, IOPT_PAGES_ACCOUNT_USER

FIXTURE = "change_process"
VARIANTS = {"account_none": IOPT_PAGES_ACCOUNT_NONE, "account_user": IOPT_PAGES_ACCOUNT_USER,
            "account_mm": IOPT_PAGES_ACCOUNT_MM}


@pytest.fixture
def s(env: Env, variant: str) -> Iterator[Env]:
    accounting = VARIANTS[variant]
    env.task.cap_ipc_lock = False  # drop_cap_ipc_lock()
    if accounting != IOPT_PAGES_ACCOUNT_NONE:
        env.fd.option(uapi.IOMMU_OPTION_RLIMIT_MODE, uapi.IOMMU_OPTION_OP_SET,
                      val64=int(accounting == IOPT_PAGES_ACCOUNT_MM))
    env.ioas_id = env.ioas_alloc()
    env.mock_domain(env.ioas_id)
    env.accounting = accounting  # type: ignore[attr-defined]
    yield env


@kselftest(FIXTURE, list(VARIANTS))
def test_basic(s: Env) -> None:
    env = s
    iova = env.map(env.buffer, PAGE_SIZE)
    with expect_errno(errno.EINVAL):  # a plain user map cannot change process
        env.fd.ioas_change_process()
    env.unmap(iova, PAGE_SIZE)
    env.map_file(env.mfd, 0, PAGE_SIZE)
    env.fd.ioas_change_process()  # works in the current process
    child = env.fork()
    nlock = PAGE_SIZE // 1024
    mm = env.accounting == IOPT_PAGES_ACCOUNT_MM  # type: ignore[attr-defined]
    assert env.task.status()["VmPin"] == nlock  # the parent is charged before
    if mm:
        assert env.task.status()["VmLck"] == nlock
    assert child.status() == {"VmPin": 0, "VmLck": 0}
    with env.fd.as_current(child):
        env.fd.ioas_change_process()
    assert env.task.status() == {"VmPin": 0, "VmLck": 0}  # and the child after
    assert child.status()["VmPin"] == nlock
    if mm:
        assert child.status()["VmLck"] == nlock
    child.exit()
