"""FIXTURE(iommufd_dirty_tracking) of the kernel selftest: DIRTY_TRACKING HWPTs on mock domains, the
device capability, and dirty bitmaps read from the mock page tables (IOMMU_TEST_OP_DIRTY marks PTEs,
IOMMU_HWPT_GET_DIRTY_BITMAP reports whole PTE ranges), for buffers from 8 KiB to 128 MiB, the largest
also in 2 MiB hugetlb pages under the 1 MiB-page mock table.  Expectations re-expressed from
tools/testing/selftests/iommu/iommufd.c (Linux 7.2)."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest
from kself import (
    HUGEPAGE_SIZE,
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_HUGETLB,
    MAP_SHARED,
    MOCK_APERTURE_START,
    MOCK_PAGE_SIZE,
    PAGE_SIZE,
    PROT_RW,
    Env,
    expect_errno,
    kselftest,
)

from vfiolab.iommufd import uapi

FIXTURE = "iommufd_dirty_tracking"


@dataclass(frozen=True)
class Variant:
    buffer_size: int
    hugepages: bool = False


VARIANTS = {
    "domain_dirty8k": Variant(8 << 10),
    "domain_dirty16k": Variant(16 << 10),
    "domain_dirty64k": Variant(64 << 10),
    "domain_dirty128k": Variant(128 << 10),
    "domain_dirty320k": Variant(320 << 10),
    "domain_dirty64M": Variant(64 << 20),
    "domain_dirty64M_huge": Variant(64 << 20, True),
    "domain_dirty128M": Variant(128 << 20),
    "domain_dirty128M_huge": Variant(128 << 20, True),
}
ALL = list(VARIANTS)
BUFFER_VA = 0x7C00_0000_0000


@dataclass
class Self:
    env: Env
    v: Variant
    ioas_id: int = 0
    hwpt_id: int = 0
    stdev_id: int = 0
    idev_id: int = 0
    page_size: int = MOCK_PAGE_SIZE
    bitmap_size: int = 0
    bitmap: int = 0
    buffer: int = 0


@pytest.fixture
def s(env: Env, variant: str) -> Iterator[Self]:
    v = VARIANTS[variant]
    st = Self(env, v)
    flags = MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED
    size = v.buffer_size
    if v.hugepages:
        flags |= MAP_HUGETLB
        size = max(size, HUGEPAGE_SIZE)
    st.buffer = env.proc.mmap(size, PROT_RW, flags,
                              addr=BUFFER_VA)  # posix_memalign(HUGEPAGE_SIZE) + MAP_FIXED
    if v.hugepages:  # MAP_POPULATE
        for off in range(0, size, HUGEPAGE_SIZE):
            env.proc.write(st.buffer + off, b"\0")
    st.bitmap_size = v.buffer_size // st.page_size
    st.bitmap = env.mmap(-(-st.bitmap_size // 8) + PAGE_SIZE)
    st.ioas_id = env.ioas_alloc()
    env.ioas_id = st.ioas_id
    if not v.hugepages:  # the page size fed to the tables must be what the dirty logic expects
        env.fd.option(uapi.IOMMU_OPTION_HUGE_PAGES, uapi.IOMMU_OPTION_OP_SET, st.ioas_id, val64=0)
    out = env.mock_domain(st.ioas_id)
    st.stdev_id, st.hwpt_id, st.idev_id = out.stdev_id, out.hwpt_id, out.idev_id
    yield st


@kselftest(FIXTURE, ALL)
def test_enforce_dirty(s: Self) -> None:
    env, fd = s.env, s.env.fd
    hwpt_id = fd.hwpt_alloc(s.idev_id, s.ioas_id, flags=uapi.IOMMU_HWPT_ALLOC_DIRTY_TRACKING)
    stddev = env.mock_domain(hwpt_id).stdev_id
    with expect_errno(errno.EINVAL):  # a device that cannot track dirty pages
        env.test.mock_domain(hwpt_id, uapi.MOCK_FLAGS_DEVICE_NO_DIRTY)
    fd.destroy(stddev)
    fd.destroy(hwpt_id)
    ioas_id = env.ioas_alloc()  # the IOMMU cannot do it for such a device
    out = env.mock_domain(ioas_id, uapi.MOCK_FLAGS_DEVICE_NO_DIRTY)
    with expect_errno(errno.EOPNOTSUPP):
        fd.hwpt_alloc(out.idev_id, ioas_id, flags=uapi.IOMMU_HWPT_ALLOC_DIRTY_TRACKING)
    fd.destroy(out.stdev_id)


@kselftest(FIXTURE, ALL)
def test_set_dirty_tracking(s: Self) -> None:
    env, fd = s.env, s.env.fd
    hwpt_id = fd.hwpt_alloc(s.idev_id, s.ioas_id, flags=uapi.IOMMU_HWPT_ALLOC_DIRTY_TRACKING)
    stddev = env.mock_domain(hwpt_id).stdev_id
    fd.hwpt_set_dirty_tracking(hwpt_id, uapi.IOMMU_HWPT_DIRTY_TRACKING_ENABLE)
    fd.hwpt_set_dirty_tracking(hwpt_id, 0)
    fd.destroy(stddev)
    fd.destroy(hwpt_id)


@kselftest(FIXTURE, ALL)
def test_pasid_set_dirty_tracking(s: Self) -> None:
    env, fd = s.env, s.env.fd
    pasid = 100
    hwpt_id = fd.hwpt_alloc(s.idev_id, s.ioas_id,
                            flags=uapi.IOMMU_HWPT_ALLOC_PASID | uapi.IOMMU_HWPT_ALLOC_DIRTY_TRACKING)
    stddev = env.mock_domain(hwpt_id, uapi.MOCK_FLAGS_DEVICE_PASID).stdev_id
    env.test.pasid_attach(stddev, pasid, hwpt_id)
    fd.hwpt_set_dirty_tracking(hwpt_id, uapi.IOMMU_HWPT_DIRTY_TRACKING_ENABLE)
    fd.hwpt_set_dirty_tracking(hwpt_id, 0)
    env.test.pasid_detach(stddev, pasid)
    fd.destroy(stddev)
    ioas_id = env.ioas_alloc()  # a device that cannot track dirty pages
    stddev = env.mock_domain(ioas_id, uapi.MOCK_FLAGS_DEVICE_PASID | uapi.MOCK_FLAGS_DEVICE_NO_DIRTY).stdev_id
    with expect_errno(errno.EINVAL):
        env.test.pasid_attach(stddev, pasid, hwpt_id)
    fd.destroy(stddev)
    fd.destroy(hwpt_id)


@kselftest(FIXTURE, ALL)
def test_device_dirty_capability(s: Self) -> None:
    env, fd = s.env, s.env.fd
    hwpt_id = fd.hwpt_alloc(s.idev_id, s.ioas_id)
    stddev = env.mock_domain(hwpt_id).stdev_id
    caps = fd.get_hw_info(s.idev_id).out_capabilities
    assert caps & uapi.IOMMU_HW_CAP_DIRTY_TRACKING == uapi.IOMMU_HW_CAP_DIRTY_TRACKING
    fd.destroy(stddev)
    fd.destroy(hwpt_id)


def _bits(env: Env, bitmap: int, nbits: int) -> np.ndarray:
    raw = env.proc.read(bitmap, -(-nbits // 8))
    return np.unpackbits(np.frombuffer(raw, dtype=np.uint8), bitorder="little")[:nbits].astype(bool)


def _mock_dirty_bitmaps(s: Self, hwpt_id: int, pte_page_size: int, bitmap: int, flags: int) -> None:
    """_test_mock_dirty_bitmaps(): mark the first page of every other PTE dirty, read the bitmap
    (whole PTEs read dirty), read again (clean, or the same with NO_CLEAR)."""
    env = s.env
    length, iova, page_size, nbits = s.v.buffer_size, MOCK_APERTURE_START, s.page_size, s.bitmap_size
    npte = pte_page_size // page_size
    pteset = 2 * npte
    nr = nbits // pteset or 1
    nbytes = -(-nbits // 8)
    marks = np.zeros(nbits, dtype=bool)
    marks[::pteset] = True
    env.proc.write(bitmap, np.packbits(marks, bitorder="little").tobytes()[:nbytes])
    assert env.test.dirty(hwpt_id, iova, length, page_size, bitmap) == nr
    expected = (np.arange(nbits) % pteset) < npte
    env.proc.write(bitmap, bytes(nbytes))
    env.fd.hwpt_get_dirty_bitmap(hwpt_id, iova, length, page_size, bitmap, flags)
    assert np.array_equal(_bits(env, bitmap, nbits), expected)
    env.proc.write(bitmap, bytes(nbytes))  # read already: all clear unless NO_CLEAR
    env.fd.hwpt_get_dirty_bitmap(hwpt_id, iova, length, page_size, bitmap, flags)
    again = expected & bool(flags & uapi.IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR)
    assert np.array_equal(_bits(env, bitmap, nbits), again)


def _get_dirty_bitmap(s: Self, flags: int) -> None:
    env, fd = s.env, s.env.fd
    pte = uapi.MOCK_HUGE_PAGE_SIZE if s.v.hugepages else MOCK_PAGE_SIZE
    env.map_fixed(s.buffer, s.v.buffer_size, MOCK_APERTURE_START)
    data = env.mmap(PAGE_SIZE)
    env.proc.write(data, uapi.iommu_hwpt_selftest.pack(
        pagetable_type=uapi.MOCK_IOMMUPT_HUGE if s.v.hugepages else uapi.MOCK_IOMMUPT_DEFAULT))
    hwpt_id = fd.hwpt_alloc(s.idev_id, s.ioas_id, flags=uapi.IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
                            data_type=uapi.IOMMU_HWPT_DATA_SELFTEST, data_uptr=data,
                            data_len=uapi.iommu_hwpt_selftest.size)
    fd.hwpt_set_dirty_tracking(hwpt_id, uapi.IOMMU_HWPT_DIRTY_TRACKING_ENABLE)
    for off in (0, MOCK_PAGE_SIZE, 0xFF1):  # aligned, PAGE_SIZE unaligned, u64 unaligned bitmaps
        _mock_dirty_bitmaps(s, hwpt_id, pte, s.bitmap + off, flags)
    fd.destroy(hwpt_id)


@kselftest(FIXTURE, ALL)
def test_get_dirty_bitmap(s: Self) -> None:
    _get_dirty_bitmap(s, 0)


@kselftest(FIXTURE, ALL)
def test_get_dirty_bitmap_no_clear(s: Self) -> None:
    _get_dirty_bitmap(s, uapi.IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR)
