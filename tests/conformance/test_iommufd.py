"""FIXTURE(iommufd) of the kernel selftest: dispatch and size rules, global options, the VFIO
compatibility ioctls without a compat IOAS, IOMMU_VFIO_IOAS.  Expectations re-expressed from
tools/testing/selftests/iommu/iommufd.c (Linux 7.2)."""

from __future__ import annotations

import errno

import pytest
from kself import Env, expect_errno

from vfiolab.errors import UapiError
from vfiolab.iommufd import uapi
from vfiolab.iommufd.uapi import _IO


def run(name: str) -> pytest.MarkDecorator:
    """Tag a test with its kselftest run name (the pytest id)."""
    return pytest.mark.parametrize("kself", [name], ids=[name])


@run("iommufd.simple_close")
def test_simple_close(env: Env, kself: str) -> None:
    """Opening and closing with nothing in between leaves nothing behind (teardown checks)."""


@run("iommufd.cmd_fail")
def test_cmd_fail(env: Env, kself: str) -> None:
    with expect_errno(errno.ENOENT):
        env.fd.destroy(0)
    with expect_errno(errno.EFAULT):
        env.fd.ioctl(uapi.IOMMU_DESTROY, None)
    cmd = uapi.iommu_destroy.pack(size=uapi.iommu_destroy.size, id=0)
    with expect_errno(errno.ENOTTY):
        env.fd.ioctl(_IO(uapi.IOMMUFD_TYPE, uapi.IOMMUFD_CMD_BASE - 1), cmd)


# (struct, ioctl, last member of the original struct), as TEST_LENGTH lists them
LENGTH_CASES = [
    (uapi.iommu_destroy, uapi.IOMMU_DESTROY, "id"),
    (uapi.iommu_hw_info, uapi.IOMMU_GET_HW_INFO, "__reserved"),
    (uapi.iommu_hwpt_alloc, uapi.IOMMU_HWPT_ALLOC, "__reserved"),
    (uapi.iommu_hwpt_invalidate, uapi.IOMMU_HWPT_INVALIDATE, "__reserved"),
    (uapi.iommu_ioas_alloc, uapi.IOMMU_IOAS_ALLOC, "out_ioas_id"),
    (uapi.iommu_ioas_iova_ranges, uapi.IOMMU_IOAS_IOVA_RANGES, "out_iova_alignment"),
    (uapi.iommu_ioas_allow_iovas, uapi.IOMMU_IOAS_ALLOW_IOVAS, "allowed_iovas"),
    (uapi.iommu_ioas_map, uapi.IOMMU_IOAS_MAP, "iova"),
    (uapi.iommu_ioas_copy, uapi.IOMMU_IOAS_COPY, "src_iova"),
    (uapi.iommu_ioas_unmap, uapi.IOMMU_IOAS_UNMAP, "length"),
    (uapi.iommu_option, uapi.IOMMU_OPTION, "val64"),
    (uapi.iommu_vfio_ioas, uapi.IOMMU_VFIO_IOAS, "__reserved"),
    (uapi.iommu_ioas_map_file, uapi.IOMMU_IOAS_MAP_FILE, "iova"),
    (uapi.iommu_viommu_alloc, uapi.IOMMU_VIOMMU_ALLOC, "out_viommu_id"),
    (uapi.iommu_vdevice_alloc, uapi.IOMMU_VDEVICE_ALLOC, "virt_id"),
    (uapi.iommu_ioas_change_process, uapi.IOMMU_IOAS_CHANGE_PROCESS, "__reserved"),
]


def _outcome(env: Env, cmd: int, buf: bytes) -> int:
    """The errno of one ioctl (0 on success); any exception other than UapiError fails the test."""
    try:
        env.fd.ioctl(cmd, buf)
    except UapiError as e:
        return e.errno
    return 0


@run("iommufd.cmd_length")
def test_cmd_length(env: Env, kself: str) -> None:
    for st, cmd, last in LENGTH_CASES:
        min_size = st.offsetofend(last)
        # the struct followed by one extra byte 0xff
        def buf(size: int, extra: int, st: uapi.CStruct = st) -> bytes:
            b = bytearray(st.size + 1)
            b[0:4] = size.to_bytes(4, "little")
            b[st.size] = extra
            return bytes(b)
        assert _outcome(env, cmd, buf(min_size - 1, 0xFF)) == errno.EINVAL, st.name
        assert _outcome(env, cmd, buf(st.size + 1, 0xFF)) == errno.E2BIG, st.name
        rc = _outcome(env, cmd, buf(st.size, 0xFF))
        assert _outcome(env, cmd, buf(st.size + 1, 0)) == rc, st.name


@run("iommufd.cmd_ex_fail")
def test_cmd_ex_fail(env: Env, kself: str) -> None:
    st = uapi.iommu_destroy
    longer = bytearray(st.pack(size=st.size + 8, id=0)) + bytes(8)
    with expect_errno(errno.ENOENT):  # longer command, unknown ID
        env.fd.ioctl(uapi.IOMMU_DESTROY, bytes(longer))
    longer[st.size:] = (1).to_bytes(8, "little")
    with expect_errno(errno.E2BIG):  # the future part is not zero
        env.fd.ioctl(uapi.IOMMU_DESTROY, bytes(longer))
    longer[0:4] = st.size.to_bytes(4, "little")
    with expect_errno(errno.ENOENT):  # the original size still works
        env.fd.ioctl(uapi.IOMMU_DESTROY, bytes(longer))
    longer[0:4] = (st.size - 1).to_bytes(4, "little")
    with expect_errno(errno.EINVAL):
        env.fd.ioctl(uapi.IOMMU_DESTROY, bytes(longer))


@run("iommufd.global_options")
def test_global_options(env: Env, kself: str) -> None:
    fd = env.fd
    assert fd.option(uapi.IOMMU_OPTION_RLIMIT_MODE, uapi.IOMMU_OPTION_OP_GET, val64=1) == 0
    fd.option(uapi.IOMMU_OPTION_RLIMIT_MODE, uapi.IOMMU_OPTION_OP_SET, val64=1)  # needs root: we are
    with expect_errno(errno.EINVAL):
        fd.option(uapi.IOMMU_OPTION_RLIMIT_MODE, uapi.IOMMU_OPTION_OP_SET, val64=2)
    assert fd.option(uapi.IOMMU_OPTION_RLIMIT_MODE, uapi.IOMMU_OPTION_OP_GET, val64=2) == 1
    fd.option(uapi.IOMMU_OPTION_RLIMIT_MODE, uapi.IOMMU_OPTION_OP_SET, val64=0)
    with expect_errno(errno.ENOENT):
        fd.option(uapi.IOMMU_OPTION_HUGE_PAGES, uapi.IOMMU_OPTION_OP_GET, val64=0)
    with expect_errno(errno.ENOENT):
        fd.option(uapi.IOMMU_OPTION_HUGE_PAGES, uapi.IOMMU_OPTION_OP_SET, val64=0)


@run("iommufd.simple_ioctls")
def test_simple_ioctls(env: Env, kself: str) -> None:
    assert env.fd.ioctl(uapi.VFIO_GET_API_VERSION, None) == uapi.VFIO_API_VERSION
    assert env.fd.ioctl(uapi.VFIO_CHECK_EXTENSION, uapi.VFIO_TYPE1v2_IOMMU) == 1


@run("iommufd.unmap_cmd")
def test_unmap_cmd(env: Env, kself: str) -> None:
    st = uapi.vfio_iommu_type1_dma_unmap
    vals = {"iova": uapi.MOCK_APERTURE_START, "size": 4096}
    with expect_errno(errno.EINVAL):
        env.fd.ioctl(uapi.VFIO_IOMMU_UNMAP_DMA, st.pack(vals, argsz=1))
    with expect_errno(errno.EINVAL):
        env.fd.ioctl(uapi.VFIO_IOMMU_UNMAP_DMA, st.pack(vals, argsz=st.size, flags=1 << 31))
    with expect_errno(errno.ENODEV):
        env.fd.ioctl(uapi.VFIO_IOMMU_UNMAP_DMA, st.pack(vals, argsz=st.size))


@run("iommufd.map_cmd")
def test_map_cmd(env: Env, kself: str) -> None:
    st = uapi.vfio_iommu_type1_dma_map
    vals = {"iova": uapi.MOCK_APERTURE_START, "size": 4096, "vaddr": env.buffer}
    with expect_errno(errno.EINVAL):
        env.fd.ioctl(uapi.VFIO_IOMMU_MAP_DMA, st.pack(vals, argsz=1))
    with expect_errno(errno.EINVAL):
        env.fd.ioctl(uapi.VFIO_IOMMU_MAP_DMA, st.pack(vals, argsz=st.size, flags=1 << 31))
    rw = uapi.VFIO_DMA_MAP_FLAG_READ | uapi.VFIO_DMA_MAP_FLAG_WRITE
    with expect_errno(errno.ENODEV):  # needs a compat IOAS with a domain
        env.fd.ioctl(uapi.VFIO_IOMMU_MAP_DMA, st.pack(vals, argsz=st.size, flags=rw))


@run("iommufd.info_cmd")
def test_info_cmd(env: Env, kself: str) -> None:
    st = uapi.vfio_iommu_type1_info
    with expect_errno(errno.EINVAL):
        env.fd.ioctl(uapi.VFIO_IOMMU_GET_INFO, st.pack(argsz=1))
    with expect_errno(errno.ENODEV):
        env.fd.ioctl(uapi.VFIO_IOMMU_GET_INFO, st.pack(argsz=st.size))


@run("iommufd.set_iommu_cmd")
def test_set_iommu_cmd(env: Env, kself: str) -> None:
    with expect_errno(errno.ENODEV):
        env.fd.ioctl(uapi.VFIO_SET_IOMMU, uapi.VFIO_TYPE1v2_IOMMU)
    with expect_errno(errno.ENODEV):
        env.fd.ioctl(uapi.VFIO_SET_IOMMU, uapi.VFIO_TYPE1_IOMMU)


@run("iommufd.vfio_ioas")
def test_vfio_ioas(env: Env, kself: str) -> None:
    fd = env.fd
    with expect_errno(errno.ENODEV):
        fd.vfio_ioas(uapi.IOMMU_VFIO_IOAS_GET)
    with expect_errno(errno.ENOENT):
        fd.vfio_ioas(uapi.IOMMU_VFIO_IOAS_SET, ioas_id=0)
    ioas_id = env.ioas_alloc()
    fd.vfio_ioas(uapi.IOMMU_VFIO_IOAS_SET, ioas_id=ioas_id)
    assert fd.vfio_ioas(uapi.IOMMU_VFIO_IOAS_GET) == ioas_id
    fd.vfio_ioas(uapi.IOMMU_VFIO_IOAS_CLEAR)
    with expect_errno(errno.ENODEV):
        fd.vfio_ioas(uapi.IOMMU_VFIO_IOAS_GET)
