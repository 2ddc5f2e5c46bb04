"""FIXTURE(iommufd_viommu) of the kernel selftest: a mock device, a NEST_PARENT HWPT, a selftest vIOMMU
on it and a nested HWPT of that vIOMMU (variant mock_viommu), or nothing (no_viommu); vDEVICEs,
vEVENTQs, vIOMMU cache invalidation, HW queues and the vIOMMU's mmap() region.  Expectations
re-expressed from tools/testing/selftests/iommu/iommufd.c (Linux 7.2); the runs the kernel SKIPs for
no_viommu are skipped here with its message."""

from __future__ import annotations

import errno
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from kself import MOCK_APERTURE_START, PAGE_SIZE, Env, expect_errno, kselftest

from vfiolab.errors import UapiError
from vfiolab.iommufd import UapiErrorWithOutput, uapi

FIXTURE = "iommufd_viommu"
ALL = ["no_viommu", "mock_viommu"]
SKIP_NO_VIOMMU = "Skipping test for variant no_viommu"
SELFTEST = uapi.IOMMU_VIOMMU_TYPE_SELFTEST
EV_SIZE = uapi.iommufd_vevent_header.size + uapi.iommu_viommu_event_selftest.size
VEVENTQ_MAX_DEPTH = 1 << 19
U32_MAX = 0xFFFF_FFFF


@dataclass
class Self:
    env: Env
    ioas_id: int = 0
    stdev_id: int = 0
    hwpt_id: int = 0
    nested_hwpt_id: int = 0
    device_id: int = 0
    viommu_id: int = 0
    scratch: int = 0
    """A page of user memory for the structs the tests pass by pointer."""


def _hwpt_data(s: Self) -> tuple[int, int]:
    """A struct iommu_hwpt_selftest {.iotlb = IOMMU_TEST_IOTLB_DEFAULT} in user memory: (ptr, len)."""
    s.env.proc.write(s.scratch, uapi.iommu_hwpt_selftest.pack(iotlb=uapi.IOMMU_TEST_IOTLB_DEFAULT))
    return s.scratch, uapi.iommu_hwpt_selftest.size


def _alloc_nested(s: Self, pt_id: int, flags: int = 0, fault_id: int = 0) -> int:
    ptr, length = _hwpt_data(s)
    return s.env.fd.hwpt_alloc(s.device_id, pt_id, flags=flags, data_type=uapi.IOMMU_HWPT_DATA_SELFTEST,
                               data_uptr=ptr, data_len=length, fault_id=fault_id)


@pytest.fixture
def s(env: Env, variant: str) -> Iterator[Self]:
    st = Self(env)
    st.ioas_id = env.ioas_alloc()
    env.ioas_id = st.ioas_id
    st.scratch = env.mmap(PAGE_SIZE)
    env.test.set_temp_memory_limit(65536)  # test_ioctl_set_default_memory_limit()
    if variant == "mock_viommu":
        md = env.mock_domain(st.ioas_id)
        st.stdev_id, st.device_id = md.stdev_id, md.idev_id
        st.hwpt_id = env.fd.hwpt_alloc(st.device_id, st.ioas_id, flags=uapi.IOMMU_HWPT_ALLOC_NEST_PARENT)
        st.viommu_id = env.fd.viommu_alloc(st.device_id, st.hwpt_id, SELFTEST)  # holds the parent
        st.nested_hwpt_id = _alloc_nested(st, st.viommu_id)
    yield st


@kselftest(FIXTURE, ALL)
def test_viommu_auto_destroy(s: Self) -> None:
    """Everything the fixture made goes away with the fd (the teardown checks it)."""


@kselftest(FIXTURE, ALL)
def test_viommu_negative_tests(s: Self) -> None:
    fd = s.env.fd
    if not s.device_id:
        with expect_errno(errno.ENOENT):
            fd.viommu_alloc(s.device_id, s.hwpt_id, SELFTEST)
        return
    with expect_errno(errno.ENOENT):  # no HWPT 0
        fd.viommu_alloc(s.device_id, 0, SELFTEST)
    hwpt_id = fd.hwpt_alloc(s.device_id, s.ioas_id)
    with expect_errno(errno.EINVAL):  # not a nesting parent
        fd.viommu_alloc(s.device_id, hwpt_id, SELFTEST)
    fd.destroy(hwpt_id)
    with expect_errno(errno.EOPNOTSUPP):  # a type the mock does not have
        fd.viommu_alloc(s.device_id, s.hwpt_id, 0xDEAD)
    with expect_errno(errno.EBUSY):  # the vIOMMU holds its parent
        fd.destroy(s.hwpt_id)
    with expect_errno(errno.EBUSY):  # the nested HWPT holds the vIOMMU
        fd.destroy(s.viommu_id)


@kselftest(FIXTURE, ALL)
def test_viommu_alloc_nested_iopf(s: Self) -> None:
    env, fd = s.env, s.env.fd
    if not s.device_id:
        pytest.skip(SKIP_NO_VIOMMU)
    fq = fd.fault_queue_alloc()
    valid = uapi.IOMMU_HWPT_FAULT_ID_VALID
    with expect_errno(errno.ENOENT):
        _alloc_nested(s, s.viommu_id, flags=valid, fault_id=U32_MAX)
    with expect_errno(errno.EOPNOTSUPP):
        _alloc_nested(s, s.viommu_id, flags=valid | (1 << 31), fault_id=fq.out_fault_id)
    iopf_hwpt = _alloc_nested(s, s.viommu_id, flags=valid, fault_id=fq.out_fault_id)
    with expect_errno(errno.ENOENT):  # a vDEVICE must exist before attaching to the vIOMMU's HWPT
        env.test.mock_domain_replace(s.stdev_id, iopf_hwpt)
    fd.vdevice_alloc(s.viommu_id, s.device_id, 0x99)
    env.test.mock_domain_replace(s.stdev_id, iopf_hwpt)
    with expect_errno(errno.EBUSY):
        fd.destroy(iopf_hwpt)
    env.trigger_iopf(s.device_id, 0x1, fq.out_fault_fd)
    env.test.mock_domain_replace(s.stdev_id, s.ioas_id)
    fd.destroy(iopf_hwpt)
    env.task.close(fq.out_fault_fd)
    fd.destroy(fq.out_fault_id)


@kselftest(FIXTURE, ALL)
def test_viommu_alloc_with_data(s: Self) -> None:
    env, fd = s.env, s.env.fd
    if not s.device_id:
        pytest.skip(SKIP_NO_VIOMMU)
    st = uapi.iommu_viommu_selftest
    env.proc.write(s.scratch, st.pack(in_data=0xBEEF))
    s.viommu_id = fd.viommu_alloc(s.device_id, s.hwpt_id, SELFTEST, data_uptr=s.scratch, data_len=st.size)
    data = st.unpack(env.proc.read(s.scratch, st.size))
    assert data["out_data"] == data["in_data"] == 0xBEEF
    length, offset = data["out_mmap_length"], data["out_mmap_offset"]
    assert length == 2 * PAGE_SIZE and offset and offset % PAGE_SIZE == 0
    # only the exact offset and length can be mapped
    for bad_len, bad_off in ((length, offset + PAGE_SIZE), (length, offset + 2 * PAGE_SIZE),
                             (length // 2, offset), (length * 2, offset)):
        with expect_errno(errno.ENXIO):
            fd.mmap(bad_len, bad_off)
    va = fd.mmap(length, offset)  # the loopback page holds in_data
    assert struct.unpack("<I", env.proc.read(va, 4))[0] == data["in_data"]
    with expect_errno(errno.EBUSY):  # the mapping holds its owner
        fd.destroy(s.viommu_id)
    fd.munmap(va, length)


def _read_vevents(s: Self, q_fd: int, nvevents: int, virt_id: int, prev_seq: list[int]) -> int:
    """_test_cmd_read_vevents(): 0, or the errno it reports (EOVERFLOW for lost events or a sequence
    gap, EINVAL for another virt_id, EFAULT when read() returns nothing or fails)."""
    f = s.env.task.fds[q_fd]
    want = nvevents * EV_SIZE
    try:
        raw = f.read(want)  # type: ignore[attr-defined]
    except UapiError:  # read() == -1
        return errno.EFAULT
    if not raw:
        return errno.EFAULT
    data = raw + bytes(want - len(raw))  # the test's buffer is calloc()ed
    hdr_st, ev_st = uapi.iommufd_vevent_header, uapi.iommu_viommu_event_selftest
    for i in range(nvevents):
        hdr = hdr_st.unpack(data[i * EV_SIZE:])
        gap = (hdr["sequence"] - prev_seq[0]) & U32_MAX  # __u32 minus int, as unsigned
        if hdr["flags"] & uapi.IOMMU_VEVENTQ_FLAG_LOST_EVENTS or gap > 1:
            prev_seq[0] = hdr["sequence"]
            return errno.EOVERFLOW
        prev_seq[0] = hdr["sequence"]
        if ev_st.unpack(data[hdr_st.size:])["virt_id"] != virt_id:  # (the test reads the first event)
            return errno.EINVAL
    return 0


@kselftest(FIXTURE, ALL)
def test_vdevice_alloc(s: Self) -> None:
    env, fd = s.env, s.env.fd
    if not s.device_id:
        with expect_errno(errno.ENOENT):
            fd.vdevice_alloc(s.viommu_id, s.device_id, 0x99)
        return
    sel = uapi.IOMMU_VEVENTQ_TYPE_SELFTEST
    with expect_errno(errno.ENOENT):  # a vDEVICE must exist before attaching to the vIOMMU's HWPT
        env.test.mock_domain_replace(s.stdev_id, s.nested_hwpt_id)
    for depth in (0, VEVENTQ_MAX_DEPTH + 1):
        with expect_errno(errno.EINVAL):
            fd.veventq_alloc(s.viommu_id, sel, depth)
    q_id, q_fd = fd.veventq_alloc(s.viommu_id, sel, VEVENTQ_MAX_DEPTH)
    env.task.close(q_fd)
    fd.destroy(q_id)
    q_id, q_fd = fd.veventq_alloc(s.viommu_id, sel, 2)
    with expect_errno(errno.EEXIST):  # one vEVENTQ per type
        fd.veventq_alloc(s.viommu_id, sel, 2)
    f = env.task.fds[q_fd]
    hdr_size = uapi.iommufd_vevent_header.size
    for count in (0, hdr_size - 1):  # below a header, even on an empty queue
        with expect_errno(errno.EINVAL):
            f.read(count)  # type: ignore[attr-defined]
    prev_seq = [-1]
    vdev_id = fd.vdevice_alloc(s.viommu_id, s.device_id, 0x99)
    env.test.mock_domain_replace(s.stdev_id, s.nested_hwpt_id)
    env.test.trigger_vevent(s.device_id)
    with expect_errno(errno.EINVAL):
        f.read(0)  # type: ignore[attr-defined]
    with expect_errno(errno.EINVAL):  # the header fits, the event does not
        f.read(hdr_size)  # type: ignore[attr-defined]
    assert _read_vevents(s, q_fd, 1, 0x99, prev_seq) == 0
    with expect_errno(errno.EEXIST):  # one vDEVICE per device
        fd.vdevice_alloc(s.viommu_id, s.device_id, 0x99)
    env.test.mock_domain_replace(s.stdev_id, s.ioas_id)
    fd.destroy(vdev_id)
    vdev_id = fd.vdevice_alloc(s.viommu_id, s.device_id, 0x88)
    env.test.mock_domain_replace(s.stdev_id, s.nested_hwpt_id)
    for _ in range(3):  # one more than the depth: the third is lost
        env.test.trigger_vevent(s.device_id)
    assert _read_vevents(s, q_fd, 3, 0x88, prev_seq) == errno.EOVERFLOW
    env.test.trigger_vevent(s.device_id)  # the overflow was reported and is gone
    assert _read_vevents(s, q_fd, 1, 0x88, prev_seq) == 0
    env.task.close(q_fd)
    env.test.mock_domain_replace(s.stdev_id, s.ioas_id)
    fd.destroy(vdev_id)
    fd.destroy(q_id)


def _viommu_invalidate(s: Self, reqs: list[tuple[int, int, int]] | None, num: int,
                       data_type: int = uapi.IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST,
                       entry_len: int = uapi.iommu_viommu_invalidate_selftest.size) -> tuple[int, int]:
    """_test_cmd_viommu_invalidate(): (errno or 0, entry_num written back); requests are (flags,
    vdev_id, cache_id) in a two-entry user array."""
    st = uapi.iommu_viommu_invalidate_selftest
    ptr = 0
    if reqs is not None:
        ptr = s.scratch
        padded = reqs + [(0, 0, 0)] * (2 - len(reqs))
        s.env.proc.write(ptr, b"".join(st.pack(flags=f, vdev_id=v, cache_id=c) for f, v, c in padded))
    try:
        return 0, s.env.fd.hwpt_invalidate(s.viommu_id, ptr, data_type, entry_len, num)
    except UapiErrorWithOutput as e:
        return e.errno, e.out["entry_num"]


def _check_cache(s: Self, values: list[int]) -> None:
    for i, v in enumerate(values):
        s.env.test.dev_check_cache(s.device_id, i, v)


@kselftest(FIXTURE, ALL)
def test_vdevice_cache(s: Self) -> None:
    fd = s.env.fd
    if not s.device_id:
        pytest.skip(SKIP_NO_VIOMMU)
    D = uapi.IOMMU_TEST_DEV_CACHE_DEFAULT
    one = uapi.iommu_viommu_invalidate_selftest.size
    fd.vdevice_alloc(s.viommu_id, s.device_id, 0x99)
    _check_cache(s, [D] * 4)
    assert _viommu_invalidate(s, [], 0) == (0, 0)  # an empty array checks the type only
    assert _viommu_invalidate(s, [], 1, data_type=uapi.IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST_INVALID) == \
        (errno.EINVAL, 0)
    for entry_len in (one + 1, 1):  # entries then read as vdev_id 0, which has no vDEVICE
        assert _viommu_invalidate(s, [], 1, entry_len=entry_len) == (errno.EINVAL, 0)
    assert _viommu_invalidate(s, [(U32_MAX, 0x99, 0)], 1) == (errno.EOPNOTSUPP, 0)
    assert _viommu_invalidate(s, None, 1) == (errno.EINVAL, 0)  # no array
    assert _viommu_invalidate(s, [(0, 0x99, 0)], 1, entry_len=0) == (errno.EINVAL, 0)
    assert _viommu_invalidate(s, [(0, 0x99, uapi.MOCK_DEV_CACHE_ID_MAX + 1)], 1) == (errno.EINVAL, 0)
    assert _viommu_invalidate(s, [(0, 0x9, 0)], 1) == (errno.EINVAL, 0)  # unknown vdev_id
    # the first request takes effect, the second fails
    assert _viommu_invalidate(s, [(0, 0x99, 0), (U32_MAX, 0x99, 1)], 2) == (errno.EOPNOTSUPP, 1)
    _check_cache(s, [0, D, D, D])
    assert _viommu_invalidate(s, [(0, 0x99, 0), (0, 0x99, uapi.MOCK_DEV_CACHE_ID_MAX + 1)], 2) == \
        (errno.EINVAL, 1)
    _check_cache(s, [0, D, D, D])
    assert _viommu_invalidate(s, [(0, 0x99, 1)], 1) == (0, 1)
    _check_cache(s, [0, 0, D, D])
    assert _viommu_invalidate(s, [(0, 0x99, 2), (0, 0x99, 3)], 2) == (0, 2)
    _check_cache(s, [0] * 4)
    assert _viommu_invalidate(s, [(uapi.IOMMU_TEST_INVALIDATE_FLAG_ALL, 0x99, 3)], 1) == (0, 1)
    _check_cache(s, [0] * 4)


@kselftest(FIXTURE, ALL)
def test_hw_queue(s: Self) -> None:
    env, fd = s.env, s.env.fd
    if not s.viommu_id:
        pytest.skip(SKIP_NO_VIOMMU)
    sel = uapi.IOMMU_HW_QUEUE_TYPE_SELFTEST
    iova = MOCK_APERTURE_START
    with expect_errno(errno.EOPNOTSUPP):
        fd.hw_queue_alloc(s.viommu_id, uapi.IOMMU_HW_QUEUE_TYPE_DEFAULT, 0, iova, PAGE_SIZE)
    with expect_errno(errno.EINVAL):  # zero length
        fd.hw_queue_alloc(s.viommu_id, sel, 0, iova, 0)
    with expect_errno(errno.EOVERFLOW):
        fd.hw_queue_alloc(s.viommu_id, sel, 0, uapi.U64_MAX, PAGE_SIZE)
    with expect_errno(errno.ENOENT):  # nothing mapped there yet
        fd.hw_queue_alloc(s.viommu_id, sel, 0, iova, PAGE_SIZE)
    iova = env.map(env.buffer, PAGE_SIZE)
    iova2 = env.map(env.buffer + PAGE_SIZE, PAGE_SIZE)
    with expect_errno(errno.EIO):  # queues start at index 0
        fd.hw_queue_alloc(s.viommu_id, sel, 1, iova, PAGE_SIZE)
    with expect_errno(errno.EINVAL):
        fd.hw_queue_alloc(s.viommu_id, sel, uapi.IOMMU_TEST_HW_QUEUE_MAX, iova, PAGE_SIZE)
    q0 = fd.hw_queue_alloc(s.viommu_id, sel, 0, iova, PAGE_SIZE)
    with expect_errno(errno.EEXIST):
        fd.hw_queue_alloc(s.viommu_id, sel, 0, iova, PAGE_SIZE)
    with expect_errno(errno.EBUSY):  # the queue pins its IOVA
        env.unmap(iova, PAGE_SIZE)
    env.unmap(iova2, PAGE_SIZE)  # the second page is not pinned
    q1 = fd.hw_queue_alloc(s.viommu_id, sel, 1, iova + PAGE_SIZE // 2, PAGE_SIZE // 2)  # unaligned
    with expect_errno(errno.EBUSY):  # queue 1 depends on queue 0
        fd.destroy(q0)
    fd.destroy(q1)
    fd.destroy(q0)
    env.unmap(iova, PAGE_SIZE)


@kselftest(FIXTURE, ALL)
def test_vdevice_tombstone(s: Self) -> None:
    fd = s.env.fd
    if not s.device_id:
        pytest.skip(SKIP_NO_VIOMMU)
    vdev_id = fd.vdevice_alloc(s.viommu_id, s.device_id, 0x99)
    fd.destroy(s.stdev_id)  # the device goes: its vDEVICE is destroyed and its ID tombstoned
    with expect_errno(errno.ENOENT):
        fd.destroy(vdev_id)
