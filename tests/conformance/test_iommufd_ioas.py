"""FIXTURE(iommufd_ioas) of the kernel selftest, variants no_domain, mock_domain (plus a PASID-capable
device), two_mock_domain and mock_domain_limit (temporary memory limit 16).  Expectations re-expressed
from tools/testing/selftests/iommu/iommufd.c (Linux 7.2)."""

from __future__ import annotations

import errno
import random
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from kself import (
    BUFFER_SIZE,
    HUGEPAGE_SIZE,
    MAP_ANONYMOUS,
    MAP_HUGETLB,
    MAP_SHARED,
    MOCK_APERTURE_LAST,
    MOCK_APERTURE_START,
    MOCK_PAGE_SIZE,
    PAGE_SIZE,
    U64_MAX,
    Env,
    expect_errno,
    kselftest,
)

from vfiolab.iommufd import UapiErrorWithOutput, uapi

FIXTURE = "iommufd_ioas"


@dataclass(frozen=True)
class Variant:
    mock_domains: int = 0
    memory_limit: int = 0
    pasid_capable: bool = False


VARIANTS = {
    "no_domain": Variant(),
    "mock_domain": Variant(mock_domains=1, pasid_capable=True),
    "two_mock_domain": Variant(mock_domains=2),
    "mock_domain_limit": Variant(mock_domains=1, memory_limit=16),
}
ALL = list(VARIANTS)


@dataclass
class Self:
    """The fixture's ``self``."""

    env: Env
    v: Variant
    ioas_id: int = 0
    stdev_id: int = 0
    hwpt_id: int = 0
    device_id: int = 0
    base_iova: int = 0
    inv_buf: int = 0
    """User memory for invalidation requests (alloc_hwpt_nested)."""
    device_pasid_id: int = 0


@pytest.fixture
def s(env: Env, variant: str) -> Iterator[Self]:
    v = VARIANTS[variant]
    st = Self(env, v)
    st.ioas_id = env.ioas_alloc()
    env.ioas_id = st.ioas_id
    env.test.set_temp_memory_limit(v.memory_limit or 65536)
    for _ in range(v.mock_domains):
        out = env.mock_domain(st.ioas_id)
        st.stdev_id, st.hwpt_id, st.device_id = out.stdev_id, out.hwpt_id, out.idev_id
        for c in range(uapi.MOCK_DEV_CACHE_NUM):
            env.test.dev_check_cache(st.device_id, c, uapi.IOMMU_TEST_DEV_CACHE_DEFAULT)
        st.base_iova = MOCK_APERTURE_START
    if v.pasid_capable:
        st.device_pasid_id = env.mock_domain(st.ioas_id, uapi.MOCK_FLAGS_DEVICE_PASID).idev_id
    yield st
    env.test.set_temp_memory_limit(65536)


@kselftest(FIXTURE, ALL)
def test_ioas_auto_destroy(s: Self) -> None:
    """An IOAS left to close() goes away with the fd."""


@kselftest(FIXTURE, ALL)
def test_ioas_destroy(s: Self) -> None:
    if s.stdev_id:  # a device's HWPT holds the IOAS
        with expect_errno(errno.EBUSY):
            s.env.fd.destroy(s.ioas_id)
    else:
        s.env.fd.destroy(s.ioas_id)


def _invalidate(s: Self, hwpt_id: int, reqs: list[tuple[int, int]] | None, num: int,
                data_type: int = uapi.IOMMU_HWPT_INVALIDATE_DATA_SELFTEST,
                entry_len: int = uapi.iommu_hwpt_invalidate_selftest.size) -> tuple[int, int]:
    """_test_cmd_hwpt_invalidate(): (errno or 0, entry_num written back)."""
    env = s.env
    ptr = 0
    if reqs is not None:
        ptr = s.inv_buf
        env.proc.write(ptr, b"".join(uapi.iommu_hwpt_invalidate_selftest.pack(flags=f, iotlb_id=i)
                                     for f, i in reqs))
    try:
        done = env.fd.hwpt_invalidate(hwpt_id, ptr, data_type, entry_len, num)
    except UapiErrorWithOutput as e:  # the written-back count rides on the error
        return e.errno, e.out["entry_num"]
    return 0, done


def _check_iotlb(s: Self, hwpt_id: int, values: list[int]) -> None:
    for i, v in enumerate(values):
        s.env.test.md_check_iotlb(hwpt_id, i, v)


@kselftest(FIXTURE, ALL)
def test_alloc_hwpt_nested(s: Self) -> None:
    env = s.env
    fd = env.fd
    D = uapi.IOMMU_TEST_IOTLB_DEFAULT
    data = env.mmap(PAGE_SIZE)
    s.inv_buf = data + 256
    env.proc.write(data, uapi.iommu_hwpt_selftest.pack(iotlb=D))
    size = uapi.iommu_hwpt_selftest.size
    sel = uapi.IOMMU_HWPT_DATA_SELFTEST

    def nested(pt_id: int, flags: int = 0, data_type: int = sel, uptr: int = data, length: int = size,
               fault_id: int = 0) -> int:
        return fd.hwpt_alloc(s.device_id, pt_id, flags=flags, data_type=data_type, data_uptr=uptr,
                             data_len=length,
                             fault_id=fault_id)

    if not s.device_id:
        with expect_errno(errno.ENOENT):
            fd.hwpt_alloc(s.device_id, s.ioas_id)
        for _ in range(2):
            with expect_errno(errno.ENOENT):
                nested(0)
        for _ in range(2):
            with expect_errno(errno.ENOENT):
                env.test.mock_domain_replace(s.stdev_id, 0)
        return
    with expect_errno(errno.ENOENT):  # an IOAS is not a device
        fd.hwpt_alloc(s.ioas_id, s.device_id)
    with expect_errno(errno.EINVAL):  # a device is not a page table
        fd.hwpt_alloc(s.device_id, s.device_id)
    with expect_errno(errno.EOPNOTSUPP):
        fd.hwpt_alloc(s.device_id, s.ioas_id,
                      flags=uapi.IOMMU_HWPT_ALLOC_NEST_PARENT | uapi.IOMMU_HWPT_FAULT_ID_VALID)
    parent = fd.hwpt_alloc(s.device_id, s.ioas_id, flags=uapi.IOMMU_HWPT_ALLOC_NEST_PARENT)
    parent_not_work = fd.hwpt_alloc(s.device_id, s.ioas_id)
    for err, kw in ((errno.EINVAL, {"data_type": uapi.IOMMU_HWPT_DATA_NONE}),
                    (errno.EOPNOTSUPP, {"data_type": sel + 1}),
                    (errno.EINVAL, {"length": uapi.iommu_hwpt_selftest.offsetofend("iotlb") - 1}),
                    (errno.EFAULT, {"uptr": 0}),
                    (errno.EOPNOTSUPP, {"flags": uapi.IOMMU_HWPT_ALLOC_NEST_PARENT})):
        with expect_errno(err):
            nested(parent, **kw)  # type: ignore[arg-type]
    with expect_errno(errno.EINVAL):  # the parent must be a NEST_PARENT
        nested(parent_not_work)
    fq = fd.fault_queue_alloc()
    nested_ids = [nested(parent), nested(parent)]
    with expect_errno(errno.ENOENT):
        nested(parent, flags=uapi.IOMMU_HWPT_FAULT_ID_VALID, fault_id=0xFFFFFFFF)
    iopf_hwpt = nested(parent, flags=uapi.IOMMU_HWPT_FAULT_ID_VALID, fault_id=fq.out_fault_id)
    _check_iotlb(s, nested_ids[0], [D] * 4)
    _check_iotlb(s, nested_ids[1], [D] * 4)
    with expect_errno(errno.EINVAL):  # no nested HWPT on a nested HWPT
        nested(nested_ids[0])
    with expect_errno(errno.EBUSY):
        fd.destroy(parent)
    assert _invalidate(s, parent, [(0, 0)], 1) == (errno.EINVAL, 0)  # not on a paging HWPT
    assert _invalidate(s, nested_ids[0], [], 0) == (0, 0)  # an empty array probes the type
    bad = uapi.IOMMU_HWPT_INVALIDATE_DATA_SELFTEST_INVALID
    one = uapi.iommu_hwpt_invalidate_selftest.size
    assert _invalidate(s, nested_ids[0], [(0, 0)], 1, data_type=bad) == (errno.EINVAL, 0)
    for entry_len in (one + 1, 1, PAGE_SIZE + 1, 0):
        assert _invalidate(s, nested_ids[0], [(0, 0)], 1, entry_len=entry_len) == (errno.EINVAL, 0)
    assert _invalidate(s, nested_ids[0], [(0, 0)], (1 << 19) + 1) == (errno.EINVAL, 0)
    assert _invalidate(s, nested_ids[0], [(0xFFFFFFFF, 0)], 1) == (errno.EOPNOTSUPP, 0)
    assert _invalidate(s, nested_ids[0], None, 1) == (errno.EINVAL, 0)
    assert _invalidate(s, nested_ids[0], [(0, uapi.MOCK_NESTED_DOMAIN_IOTLB_ID_MAX + 1)],
                       1) == (errno.EINVAL, 0)
    # the first request takes effect, the second fails
    assert _invalidate(s, nested_ids[0], [(0, 0), (0xFFFFFFFF, 1)], 2) == (errno.EOPNOTSUPP, 1)
    _check_iotlb(s, nested_ids[0], [0, D, D, D])
    assert _invalidate(s, nested_ids[0], [(0, 0), (0, uapi.MOCK_NESTED_DOMAIN_IOTLB_ID_MAX + 1)], 2) == \
        (errno.EINVAL, 1)
    _check_iotlb(s, nested_ids[0], [0, D, D, D])
    assert _invalidate(s, nested_ids[0], [(0, 1)], 1) == (0, 1)
    _check_iotlb(s, nested_ids[0], [0, 0, D, D])
    assert _invalidate(s, nested_ids[0], [(0, 2), (0, 3)], 2) == (0, 2)
    _check_iotlb(s, nested_ids[0], [0] * 4)
    assert _invalidate(s, nested_ids[1], [(uapi.IOMMU_TEST_INVALIDATE_FLAG_ALL, 0)], 1) == (0, 1)
    _check_iotlb(s, nested_ids[1], [0] * 4)
    env.test.mock_domain_replace(s.stdev_id, nested_ids[0])  # an attached nested HWPT is busy
    with expect_errno(errno.EBUSY):
        fd.destroy(nested_ids[0])
    env.test.mock_domain_replace(s.stdev_id, nested_ids[1])
    with expect_errno(errno.EBUSY):
        fd.destroy(nested_ids[1])
    fd.destroy(nested_ids[0])
    env.test.mock_domain_replace(s.stdev_id, iopf_hwpt)
    with expect_errno(errno.EBUSY):
        fd.destroy(iopf_hwpt)
    env.trigger_iopf(s.device_id, 0x1, fq.out_fault_fd)
    env.test.mock_domain_replace(s.stdev_id, parent)
    fd.destroy(nested_ids[1])
    fd.destroy(iopf_hwpt)
    env.test.mock_domain_replace(s.stdev_id, s.ioas_id)
    fd.destroy(parent)
    fd.destroy(parent_not_work)
    env.task.close(fq.out_fault_fd)
    fd.destroy(fq.out_fault_id)


@kselftest(FIXTURE, ALL)
def test_hwpt_attach(s: Self) -> None:
    if s.stdev_id:  # a device attached directly to an existing HWPT
        s.env.mock_domain(s.hwpt_id)
    else:
        with expect_errno(errno.ENOENT):
            s.env.test.mock_domain(s.hwpt_id)


@kselftest(FIXTURE, ALL)
def test_ioas_area_destroy(s: Self) -> None:
    s.env.map_fixed(s.env.buffer, PAGE_SIZE, s.base_iova)
    if s.stdev_id:
        with expect_errno(errno.EBUSY):
            s.env.fd.destroy(s.ioas_id)
    else:
        s.env.fd.destroy(s.ioas_id)


@kselftest(FIXTURE, ALL)
def test_ioas_area_auto_destroy(s: Self) -> None:
    for i in range(10):
        s.env.map_fixed(s.env.buffer, PAGE_SIZE, s.base_iova + i * PAGE_SIZE)


def _check_hw_info(s: Self, dev_id: int, data_type: int, data: int, data_len: int) -> tuple[int, int]:
    """_test_cmd_get_hw_info(): returns (capabilities, max_pasid_log2)."""
    env = s.env
    if data:
        env.proc.write(data, b"\xa5" * data_len)
    flags = uapi.IOMMU_HW_INFO_FLAG_INPUT_TYPE if data_type != uapi.IOMMU_HW_INFO_TYPE_DEFAULT else 0
    info = env.fd.get_hw_info(dev_id, data_len=data_len, data_uptr=data, in_data_type=data_type, flags=flags)
    assert info.out_data_type == uapi.IOMMU_HW_INFO_TYPE_SELFTEST
    assert info.data_len == uapi.iommu_test_hw_info.size
    if data_len > info.data_len:  # the kernel zeroed what it has no data for
        assert env.proc.read(data + info.data_len,
                             data_len - info.data_len) == bytes(data_len - info.data_len)
    if data:
        raw = env.proc.read(data, data_len)
        if data_len >= uapi.iommu_test_hw_info.offsetofend("test_reg"):
            assert uapi.iommu_test_hw_info.unpack(raw)["test_reg"] == uapi.IOMMU_HW_INFO_SELFTEST_REGVAL
        if data_len >= uapi.iommu_test_hw_info.offsetofend("flags"):
            assert int.from_bytes(raw[:4], "little") == 0
    return info.out_capabilities, info.out_max_pasid_log2


@kselftest(FIXTURE, ALL)
def test_get_hw_info(s: Self) -> None:
    env = s.env
    exact = env.mmap(PAGE_SIZE)
    exact_len = uapi.iommu_test_hw_info.size
    larger_len = exact_len + 8
    if s.device_id:
        _check_hw_info(s, s.device_id, uapi.IOMMU_HW_INFO_TYPE_DEFAULT, 0, 0)
        _check_hw_info(s, s.device_id, uapi.IOMMU_HW_INFO_TYPE_DEFAULT, exact, exact_len)
        with expect_errno(errno.EOPNOTSUPP):
            _check_hw_info(s, s.device_id, uapi.IOMMU_HW_INFO_TYPE_SELFTEST + 1, exact, exact_len)
        _check_hw_info(s, s.device_id, uapi.IOMMU_HW_INFO_TYPE_SELFTEST, exact, exact_len)
        _check_hw_info(s, s.device_id, uapi.IOMMU_HW_INFO_TYPE_DEFAULT, exact, larger_len)
        _check_hw_info(s, s.device_id, uapi.IOMMU_HW_INFO_TYPE_DEFAULT, exact,
                       uapi.iommu_test_hw_info.offsetofend("flags"))
        _, max_pasid = _check_hw_info(s, s.device_id, uapi.IOMMU_HW_INFO_TYPE_DEFAULT, 0, 0)
        assert max_pasid == 0
        if s.v.pasid_capable:
            _, max_pasid = _check_hw_info(s, s.device_pasid_id, uapi.IOMMU_HW_INFO_TYPE_DEFAULT, 0, 0)
            assert max_pasid == uapi.MOCK_PASID_WIDTH
    else:
        for length in (exact_len, larger_len):
            with expect_errno(errno.ENOENT):
                env.fd.get_hw_info(s.device_id, data_len=length, data_uptr=exact)


@kselftest(FIXTURE, ALL)
def test_area(s: Self) -> None:
    env, b = s.env, s.env.buffer
    for i in range(10):  # nothing mapped yet
        with expect_errno(errno.ENOENT):
            env.unmap(i * PAGE_SIZE, PAGE_SIZE)
    for i in range(10):
        env.map_fixed(b, PAGE_SIZE, s.base_iova + i * PAGE_SIZE)
    for i in range(10):
        env.unmap(s.base_iova + i * PAGE_SIZE, PAGE_SIZE)
    env.map_fixed(b, 2 * PAGE_SIZE, s.base_iova + 16 * PAGE_SIZE)  # no splitting of a map
    for page in (16, 17):
        with expect_errno(errno.ENOENT):
            env.unmap(s.base_iova + page * PAGE_SIZE, PAGE_SIZE)
    for pages, at in ((2, 16), (1, 16), (1, 17), (2, 15), (3, 15)):  # no map over a map
        with expect_errno(errno.EEXIST):
            env.map_fixed(b, pages * PAGE_SIZE, s.base_iova + at * PAGE_SIZE)
    env.unmap(0, U64_MAX)
    env.unmap(0, U64_MAX)  # unmap all of an empty IOAS succeeds


@kselftest(FIXTURE, ALL)
def test_unmap_fully_contained_areas(s: Self) -> None:
    env = s.env
    base = s.base_iova + 4 * PAGE_SIZE
    for i in range(4):
        env.map_fixed(env.buffer, 8 * PAGE_SIZE, base + i * 16 * PAGE_SIZE)
    with expect_errno(errno.ENOENT):
        env.unmap(base - 4 * PAGE_SIZE, 8 * PAGE_SIZE)
    with expect_errno(errno.ENOENT):
        env.unmap(base + 3 * 16 * PAGE_SIZE + 8 * PAGE_SIZE - 4 * PAGE_SIZE, 8 * PAGE_SIZE)
    assert env.unmap(base - 4 * PAGE_SIZE,
                     3 * 16 * PAGE_SIZE + 8 * PAGE_SIZE + 4 * PAGE_SIZE) == 32 * PAGE_SIZE


def _ffs_align(length: int) -> int:
    return 1 << ((length & -length).bit_length() - 1)


def _write_ranges(env: Env, ptr: int, ranges: list[tuple[int, int]]) -> None:
    env.proc.write(ptr, b"".join(uapi.iommu_iova_range.pack(start=a, last=b) for a, b in ranges))


@kselftest(FIXTURE, ALL)
def test_area_auto_iova(s: Self) -> None:
    env = s.env
    fd = env.fd
    ranges = env.mmap(PAGE_SIZE)
    iovas = [env.map(env.buffer, PAGE_SIZE) for _ in range(10)]
    for iova in iovas:
        env.unmap(iova, PAGE_SIZE)
    for i in range(10):  # IOVAs keep the alignment of the length
        length = PAGE_SIZE * (i + 1)
        iovas[i] = env.map(env.buffer if s.stdev_id else 1 << 31, length)
        assert iovas[i] % _ffs_align(length) == 0
    for i in range(10):
        env.unmap(iovas[i], PAGE_SIZE * (i + 1))
    rstart, rlen = PAGE_SIZE * 4, PAGE_SIZE * 100
    env.test.add_reserved(s.ioas_id, rstart, rlen)
    for i in range(10):  # a reserved range is avoided
        length = PAGE_SIZE * (i + 1)
        iovas[i] = env.map(env.buffer, length)
        assert iovas[i] % _ffs_align(length) == 0
        assert not rstart < iovas[i] < rstart + rlen
    for i in range(10):
        env.unmap(iovas[i], PAGE_SIZE * (i + 1))
    _write_ranges(env, ranges, [(PAGE_SIZE, PAGE_SIZE * 600)])
    with expect_errno(errno.EADDRINUSE):  # an allowed range may not meet a reserved one
        fd.ioas_allow_iovas(s.ioas_id, 1, ranges)
    if s.stdev_id:
        start, last = MOCK_APERTURE_START + PAGE_SIZE, MOCK_APERTURE_START + PAGE_SIZE * 600 - 1
    else:
        start, last = PAGE_SIZE * 200, PAGE_SIZE * 600 - 1
    _write_ranges(env, ranges, [(start, last)])
    fd.ioas_allow_iovas(s.ioas_id, 1, ranges)
    for i in range(10):  # allocation stays inside the allowed range
        length = PAGE_SIZE * (i + 1)
        iovas[i] = env.map(env.buffer, length)
        assert iovas[i] % _ffs_align(length) == 0
        assert start <= iovas[i] <= last and iovas[i] + length > start and iovas[i] + length <= last + 1
    for i in range(10):
        env.unmap(iovas[i], PAGE_SIZE * (i + 1))


@kselftest(FIXTURE, ALL)
def test_reserved_overflow(s: Self) -> None:
    s.env.test.add_reserved(s.ioas_id, 6, 0xFFFFFFFFFFFF8001)
    with expect_errno(errno.ENOSPC):
        s.env.map(s.env.buffer, 0x5000)


@kselftest(FIXTURE, ALL)
def test_area_allowed(s: Self) -> None:
    env = s.env
    ranges = env.mmap(PAGE_SIZE)
    _write_ranges(env, ranges, [(s.base_iova, s.base_iova + PAGE_SIZE * 600)])
    env.fd.ioas_allow_iovas(s.ioas_id, 1, ranges)
    with expect_errno(errno.EADDRINUSE):  # a reserved range may not meet an allowed one
        env.test.add_reserved(s.ioas_id, s.base_iova + PAGE_SIZE, PAGE_SIZE)
    env.fd.ioas_allow_iovas(s.ioas_id, 0, ranges)
    env.test.add_reserved(s.ioas_id, s.base_iova + PAGE_SIZE, PAGE_SIZE)
    with expect_errno(errno.EADDRINUSE):
        env.fd.ioas_allow_iovas(s.ioas_id, 1, ranges)


@kselftest(FIXTURE, ALL)
def test_copy_area(s: Self) -> None:
    env = s.env
    flags = uapi.IOMMU_IOAS_MAP_FIXED_IOVA | uapi.IOMMU_IOAS_MAP_WRITEABLE
    env.map_fixed(env.buffer, PAGE_SIZE, s.base_iova)
    env.fd.ioas_copy(s.ioas_id, s.ioas_id, PAGE_SIZE, s.base_iova, s.base_iova + PAGE_SIZE, flags)
    dst = env.ioas_alloc()
    env.fd.ioas_copy(dst, s.ioas_id, PAGE_SIZE, s.base_iova, 0, flags)


def _read_ranges(env: Env, ptr: int, n: int) -> list[tuple[int, int]]:
    raw = env.proc.read(ptr, n * 16)
    return [(int.from_bytes(raw[i * 16:i * 16 + 8], "little"), int.from_bytes(raw[i * 16 + 8:i * 16 + 16],
                                                                              "little"))
            for i in range(n)]


@kselftest(FIXTURE, ALL)
def test_iova_ranges(s: Self) -> None:
    env = s.env
    ranges = env.buffer
    cap = BUFFER_SIZE // 16
    out = env.fd.ioas_iova_ranges(s.ioas_id, cap, ranges)
    assert out.num_iovas == 1
    if not s.stdev_id:
        assert _read_ranges(env, ranges, 1) == [(0, U64_MAX)] and out.out_iova_alignment == 1
    else:
        assert _read_ranges(env, ranges, 1) == [(MOCK_APERTURE_START, MOCK_APERTURE_LAST)]
        assert out.out_iova_alignment == MOCK_PAGE_SIZE
    env.proc.write(ranges, bytes(BUFFER_SIZE))
    with pytest.raises(UapiErrorWithOutput) as ei:  # too small: EMSGSIZE, the count written back
        env.fd.ioas_iova_ranges(s.ioas_id, 0, ranges)
    assert ei.value.errno == errno.EMSGSIZE and ei.value.out["num_iovas"] == 1
    assert _read_ranges(env, ranges, 1) == [(0, 0)]
    env.test.add_reserved(s.ioas_id, PAGE_SIZE, PAGE_SIZE)
    out = env.fd.ioas_iova_ranges(s.ioas_id, cap, ranges)
    if not s.stdev_id:
        assert out.num_iovas == 2
        assert _read_ranges(env, ranges, 2) == [(0, PAGE_SIZE - 1), (PAGE_SIZE * 2, U64_MAX)]
    else:
        assert out.num_iovas == 1
        assert _read_ranges(env, ranges, 1) == [(MOCK_APERTURE_START, MOCK_APERTURE_LAST)]
    env.proc.write(ranges, bytes(BUFFER_SIZE))
    if not s.stdev_id:
        with pytest.raises(UapiErrorWithOutput) as ei:
            env.fd.ioas_iova_ranges(s.ioas_id, 1, ranges)
        assert ei.value.errno == errno.EMSGSIZE and ei.value.out["num_iovas"] == 2
        assert _read_ranges(env, ranges, 1) == [(0, PAGE_SIZE - 1)]
    else:
        out = env.fd.ioas_iova_ranges(s.ioas_id, 1, ranges)
        assert out.num_iovas == 1
        assert _read_ranges(env, ranges, 1) == [(MOCK_APERTURE_START, MOCK_APERTURE_LAST)]
    assert _read_ranges(env, ranges + 16, 1) == [(0, 0)]


@kselftest(FIXTURE, ALL)
def test_access_domain_destory(s: Self) -> None:
    env = s.env
    buf_size = 2 * HUGEPAGE_SIZE
    buf = env.mmap(buf_size, MAP_SHARED | MAP_ANONYMOUS | MAP_HUGETLB)
    env.map_fixed(buf, buf_size, s.base_iova)
    access = env.test.create_access(s.ioas_id, uapi.MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES)
    item = env.test.access_pages(access, s.base_iova + PAGE_SIZE, PAGE_SIZE, uptr=buf + PAGE_SIZE)
    if s.stdev_id:  # a complicated unpin across a huge page boundary
        env.fd.destroy(s.stdev_id)
    env.test.destroy_access_pages(access, item)
    env.test.destroy_access(access)
    env.proc.munmap(buf, buf_size)


@kselftest(FIXTURE, ALL)
def test_access_pin(s: Self) -> None:
    env = s.env
    access = env.test.create_access(s.ioas_id, uapi.MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES)
    for npages in range(1, BUFFER_SIZE // PAGE_SIZE):
        length = npages * PAGE_SIZE
        env.map_fixed(env.buffer, BUFFER_SIZE, MOCK_APERTURE_START)  # single map/unmap
        item = env.test.access_pages(access, MOCK_APERTURE_START, length, uptr=env.buffer)
        env.test.destroy_access_pages(access, item)
        first = env.test.access_pages(access, MOCK_APERTURE_START, length, uptr=env.buffer)  # double user
        second = env.test.access_pages(access, MOCK_APERTURE_START, length, uptr=env.buffer)
        env.test.destroy_access_pages(access, second)
        env.test.destroy_access_pages(access, first)
        item = env.test.access_pages(access, MOCK_APERTURE_START, length, uptr=env.buffer)  # domain + user
        dom = env.mock_domain(s.ioas_id)
        env.test.md_check_map(dom.hwpt_id, MOCK_APERTURE_START, BUFFER_SIZE, env.buffer)
        env.fd.destroy(dom.stdev_id)
        env.test.destroy_access_pages(access, item)
        env.unmap(MOCK_APERTURE_START, BUFFER_SIZE)
    env.test.destroy_access(access)


@kselftest(FIXTURE, ALL)
def test_access_pin_unmap(s: Self) -> None:
    env = s.env
    access = env.test.create_access(s.ioas_id, uapi.MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES)
    env.map_fixed(env.buffer, BUFFER_SIZE, MOCK_APERTURE_START)
    item = env.test.access_pages(access, MOCK_APERTURE_START, BUFFER_SIZE, uptr=env.buffer)
    env.unmap(MOCK_APERTURE_START, BUFFER_SIZE)  # the unmap asks the access to drop its pins
    with expect_errno(errno.ENOENT):
        env.test.destroy_access_pages(access, item)


RW_OFFSETS = (-50, -33, -17, -2, -1, 0, 1, 2, 17, 33, 49)
"""Offsets from the page boundary the byte-wise checks start at.  The kernel sweeps every offset in
[-50, 50); these cover each case of that sweep (inside the first page, ending at the boundary,
straddling it by 1..62 bytes, starting on or after it) at about a tenth of the model's run time."""


def check_access_rw(env: Env, access: int, iova: int, def_flags: int) -> None:
    """check_access_rw(): reads and writes of 1..63 bytes around a page boundary, then the whole buffer."""
    rng = random.Random(iova ^ def_flags)
    tmp = env.mmap(PAGE_SIZE)
    proc = env.proc
    proc.write(env.buffer, rng.randbytes(BUFFER_SIZE))
    for a_iova in (iova + PAGE_SIZE + d for d in RW_OFFSETS):
        off = a_iova - iova
        for length in range(1, 64):
            env.test.access_rw(access, a_iova, length, tmp, def_flags)
            assert proc.read(env.buffer + off, length) == proc.read(tmp, length)
            proc.write(tmp, rng.randbytes(64))
            env.test.access_rw(access, a_iova, length, tmp, def_flags | uapi.MOCK_ACCESS_RW_WRITE)
            assert proc.read(env.buffer + off, length) == proc.read(tmp, length)
    tmp2 = env.mmap(BUFFER_SIZE)
    env.test.access_rw(access, iova, BUFFER_SIZE, tmp2, def_flags)
    assert proc.read(env.buffer, BUFFER_SIZE) == proc.read(tmp2, BUFFER_SIZE)
    proc.munmap(tmp2, BUFFER_SIZE)
    proc.munmap(tmp, PAGE_SIZE)


@kselftest(FIXTURE, ALL)
def test_access_rw(s: Self) -> None:
    env = s.env
    access = env.test.create_access(s.ioas_id, 0)
    iova = env.map(env.buffer, BUFFER_SIZE)
    check_access_rw(env, access, iova, 0)
    check_access_rw(env, access, iova, uapi.MOCK_ACCESS_RW_SLOW_PATH)
    env.unmap(iova, BUFFER_SIZE)
    env.test.destroy_access(access)


@kselftest(FIXTURE, ALL)
def test_access_rw_unaligned(s: Self) -> None:
    env = s.env
    access = env.test.create_access(s.ioas_id, 0)
    iova = s.base_iova + MOCK_PAGE_SIZE  # pages not aligned to the IOVA
    env.map_fixed(env.buffer, BUFFER_SIZE, iova)
    check_access_rw(env, access, iova, 0)
    env.unmap(iova, BUFFER_SIZE)
    env.test.destroy_access(access)


@kselftest(FIXTURE, ALL)
def test_fork_gone(s: Self) -> None:
    env = s.env
    access = env.test.create_access(s.ioas_id, 0)
    child = env.fork()
    with env.fd.as_current(child):  # the child maps with its own mm, then exits
        env.map_fixed(env.buffer, BUFFER_SIZE, MOCK_APERTURE_START)
    child.exit()
    if s.stdev_id:  # pinned within the fork: the new domain copies from the old one
        env.mock_domain(s.ioas_id)
        check_access_rw(env, access, MOCK_APERTURE_START, 0)
    else:  # nothing can pin from a gone mm
        with expect_errno(errno.EFAULT):
            env.test.mock_domain(s.ioas_id)
    env.test.destroy_access(access)


@kselftest(FIXTURE, ALL)
def test_fork_present(s: Self) -> None:
    env = s.env
    access = env.test.create_access(s.ioas_id, 0)
    child = env.fork()
    with env.fd.as_current(child):
        env.map_fixed(env.buffer, BUFFER_SIZE, MOCK_APERTURE_START)
    env.mock_domain(s.ioas_id)  # pages come from the child's mm
    check_access_rw(env, access, MOCK_APERTURE_START, 0)
    child.exit()
    env.test.destroy_access(access)


@kselftest(FIXTURE, ALL)
def test_ioas_option_huge_pages(s: Self) -> None:
    fd, i = s.env.fd, s.ioas_id
    hp, get, put = uapi.IOMMU_OPTION_HUGE_PAGES, uapi.IOMMU_OPTION_OP_GET, uapi.IOMMU_OPTION_OP_SET
    assert fd.option(hp, get, i, val64=3) == 1
    fd.option(hp, put, i, val64=0)
    assert fd.option(hp, get, i, val64=3) == 0
    with expect_errno(errno.EINVAL):
        fd.option(hp, put, i, val64=2)
    fd.option(hp, put, i, val64=1)


@kselftest(FIXTURE, ALL)
def test_ioas_iova_alloc(s: Self) -> None:
    env = s.env
    for length in range(1, PAGE_SIZE * 2):
        if s.v.mock_domains and length % MOCK_PAGE_SIZE:
            with expect_errno(errno.EINVAL):
                env.map(env.buffer, length)
        else:
            env.unmap(env.map(env.buffer, length), length)


@kselftest(FIXTURE, ALL)
def test_ioas_align_change(s: Self) -> None:
    if s.v.mock_domains:  # the alignment cannot change with a domain and a map present
        return
    env = s.env
    fd, i = env.fd, s.ioas_id
    hp, put = uapi.IOMMU_OPTION_HUGE_PAGES, uapi.IOMMU_OPTION_OP_SET
    env.map_fixed(env.buffer, PAGE_SIZE, MOCK_APERTURE_START)
    fd.option(hp, put, i, val64=0)  # aligned maps allow PAGE_SIZE alignment
    with expect_errno(errno.EINVAL):  # a misaligned map is then refused
        env.map_fixed(env.buffer + MOCK_PAGE_SIZE, PAGE_SIZE, MOCK_APERTURE_START + PAGE_SIZE)
    fd.option(hp, put, i, val64=0)
    fd.option(hp, put, i, val64=1)
    env.map_fixed(env.buffer + MOCK_PAGE_SIZE, PAGE_SIZE, MOCK_APERTURE_START + PAGE_SIZE)
    with expect_errno(errno.EADDRINUSE):  # and a misaligned map blocks the upgrade
        fd.option(hp, put, i, val64=0)
    env.unmap(MOCK_APERTURE_START + PAGE_SIZE, PAGE_SIZE)
    env.unmap(MOCK_APERTURE_START, PAGE_SIZE)


@kselftest(FIXTURE, ALL)
def test_copy_sweep(s: Self) -> None:
    env = s.env
    flags = uapi.IOMMU_IOAS_MAP_FIXED_IOVA | uapi.IOMMU_IOAS_MAP_WRITEABLE
    dst = env.ioas_alloc()
    last_iova = MOCK_APERTURE_START + BUFFER_SIZE - (1 if s.v.mock_domains else 2)
    env.map_fixed(env.buffer, last_iova - MOCK_APERTURE_START + 1, MOCK_APERTURE_START)
    for iova in range(MOCK_APERTURE_START - PAGE_SIZE, last_iova + 1, 511):
        if iova < MOCK_APERTURE_START or iova + MOCK_PAGE_SIZE - 1 > last_iova:
            with expect_errno(errno.ENOENT):
                env.fd.ioas_copy(dst, s.ioas_id, MOCK_PAGE_SIZE, iova, MOCK_APERTURE_START, flags)
        else:
            env.fd.ioas_copy(dst, s.ioas_id, MOCK_PAGE_SIZE, iova, MOCK_APERTURE_START, flags)
            env.unmap(MOCK_APERTURE_START, MOCK_PAGE_SIZE, ioas_id=dst)
    env.fd.destroy(dst)




@kselftest(FIXTURE, ALL)
def test_dmabuf_simple(s: Self) -> None:
    env = s.env
    size = PAGE_SIZE * 4
    dfd = env.test.dmabuf_get(size)
    for start, length in ((0, 0), (size, size), (0, size + 1)):  # nothing, or beyond the buffer
        with expect_errno(errno.EINVAL):
            env.map_file(dfd, start, length)
    env.map_file(dfd, 0, size)
    env.task.close(dfd)


@kselftest(FIXTURE, ALL)
def test_dmabuf_revoke(s: Self) -> None:
    env = s.env
    size = PAGE_SIZE * 4
    dfd = env.test.dmabuf_get(size)
    iova = env.map_file(dfd, 0, size)
    env.test.dmabuf_revoke(dfd, True)
    if s.v.mock_domains:  # a new domain over a revoked map
        env.fd.hwpt_alloc(s.device_id, s.ioas_id)
    with expect_errno(errno.ENODEV):
        env.map_file(dfd, 0, size)
    env.test.dmabuf_revoke(dfd, False)
    env.map_file(dfd, 0, size)
    env.unmap(iova, size)  # the IOVA comes back
    env.map_file(dfd, 0, size, iova=iova)
    env.task.close(dfd)
