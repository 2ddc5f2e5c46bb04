"""FIXTURE(iommufd_mock_domain) of the kernel selftest: one or two mock domains over an IOAS, with
small, hugetlb and memfd buffers; every map is checked in the mock domains' page tables
(IOMMU_TEST_OP_MD_CHECK_MAP) and in the pin counts of the user pages (MD_CHECK_REFS).  Expectations
re-expressed from tools/testing/selftests/iommu/iommufd.c (Linux 7.2)."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from kself import (
    BUFFER_SIZE,
    HUGEPAGE_SIZE,
    MAP_ANONYMOUS,
    MAP_HUGETLB,
    MAP_PRIVATE,
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
from vfiolab.memory import MemFile

FIXTURE = "iommufd_mock_domain"


@dataclass(frozen=True)
class Variant:
    mock_domains: int
    hugepages: bool
    file: bool


VARIANTS = {
    "one_domain": Variant(1, False, False),
    "two_domains": Variant(2, False, False),
    "one_domain_hugepage": Variant(1, True, False),
    "two_domains_hugepage": Variant(2, True, False),
    "one_domain_file": Variant(1, False, True),
    "one_domain_file_hugepage": Variant(1, True, True),
}
ALL = list(VARIANTS)


@dataclass
class Self:
    env: Env
    v: Variant
    ioas_id: int = 0
    hwpt_ids: list[int] = field(default_factory=lambda: [0, 0])
    stdev_ids: list[int] = field(default_factory=lambda: [0, 0])
    idev_ids: list[int] = field(default_factory=lambda: [0, 0])
    mmap_flags: int = MAP_SHARED | MAP_ANONYMOUS
    mmap_buf_size: int = PAGE_SIZE * 8

    @property
    def hwpt_id(self) -> int:
        return self.hwpt_ids[0]

    def check_mock_iova(self, ptr: int, iova: int, length: int) -> None:
        """check_mock_iova(): the user pages are what every mock domain maps at the IOVA."""
        self.env.test.md_check_map(self.hwpt_ids[0], iova, length, ptr)
        if self.hwpt_ids[1]:
            self.env.test.md_check_map(self.hwpt_ids[1], iova, length, ptr)


@pytest.fixture
def s(env: Env, variant: str) -> Iterator[Self]:
    v = VARIANTS[variant]
    st = Self(env, v)
    st.ioas_id = env.ioas_alloc()
    env.ioas_id = st.ioas_id
    for i in range(v.mock_domains):
        out = env.mock_domain(st.ioas_id)
        st.stdev_ids[i], st.hwpt_ids[i], st.idev_ids[i] = out.stdev_id, out.hwpt_id, out.idev_id
        for c in range(uapi.MOCK_DEV_CACHE_NUM):
            env.test.dev_check_cache(st.idev_ids[0], c, uapi.IOMMU_TEST_DEV_CACHE_DEFAULT)
    if v.hugepages:
        st.mmap_flags |= MAP_HUGETLB
        st.mmap_buf_size = HUGEPAGE_SIZE * 2
    yield st


def _basic_mmap(s: Self) -> None:
    env = s.env
    iova = env.map(env.buffer, PAGE_SIZE)
    s.check_mock_iova(env.buffer, iova, PAGE_SIZE)
    size = s.mmap_buf_size
    buf = env.mmap(size, s.mmap_flags)
    env.proc.munmap(buf + size // 2, size // 2)
    with expect_errno(errno.EFAULT):  # the second half is gone
        env.map(buf, size)
    env.proc.munmap(buf, size // 2)
    with expect_errno(errno.EFAULT):  # so is the first page
        env.map(buf, size)


def _basic_file(s: Self) -> None:
    env = s.env
    iova = env.map_file(env.mfd, 0, PAGE_SIZE)
    s.check_mock_iova(env.mfd_buffer, iova, PAGE_SIZE)
    size = s.mmap_buf_size
    _, mfd_tmp, mf = env.memfd_mmap(size)
    with expect_errno(errno.EINVAL):
        env.map_file(mfd_tmp, 0, size + 1)
    mf.truncate(0)
    with expect_errno(errno.EINVAL):  # nothing left to pin
        env.map_file(mfd_tmp, 0, size)
    env.task.close(mfd_tmp)
    mf.close()


@kselftest(FIXTURE, ALL)
def test_basic(s: Self) -> None:
    if s.v.file:
        _basic_file(s)
    else:
        _basic_mmap(s)


@kselftest(FIXTURE, ALL)
def test_ro_unshare(s: Self) -> None:
    """A read-only map of a private file mapping keeps its PFN when the process later writes."""
    env = s.env
    exe = MemFile(env.mem, PAGE_SIZE, name="/proc/self/exe")
    env.mem.write(int(exe.touch(0, 1)[0]) * PAGE_SIZE, b"\x7fELF")
    buf = env.proc.mmap(PAGE_SIZE, PROT_RW, MAP_PRIVATE, file=exe)
    iova = env.map(buf, PAGE_SIZE, flags=uapi.IOMMU_IOAS_MAP_READABLE)
    s.check_mock_iova(buf, iova, PAGE_SIZE)
    env.proc.write(buf, b"\x01" * PAGE_SIZE)
    s.check_mock_iova(buf, iova, PAGE_SIZE)
    env.proc.munmap(buf, PAGE_SIZE)
    env.unmap(iova, PAGE_SIZE)
    exe.close()


def _align_buffer(s: Self) -> tuple[int, int, MemFile | None]:
    env = s.env
    if s.v.file:
        buf, mfd, mf = env.memfd_mmap(s.mmap_buf_size)
        assert mfd > 0
        return buf, mfd, mf
    return env.mmap(s.mmap_buf_size, s.mmap_flags), -1, None


def _align_ranges(s: Self) -> Iterator[tuple[int, int]]:
    """Every (start, end) the kernel test maps: all MOCK_PAGE_SIZE alignments and lengths (few for
    huge pages, where only end == buf_size is tried and the inner loop is empty)."""
    size = s.mmap_buf_size
    step = size // 16 if s.v.hugepages else MOCK_PAGE_SIZE
    for start in range(0, size, step):
        end = size if s.v.hugepages else start + MOCK_PAGE_SIZE
        while end < size:
            yield start, end
            end += MOCK_PAGE_SIZE


def _map_range(s: Self, buf: int, mfd: int, start: int, length: int) -> int:
    if s.v.file:
        return s.env.map_file(mfd, start, length)
    return s.env.map(buf + start, length)


def _release_buffer(s: Self, buf: int, mfd: int, mf: MemFile | None) -> None:
    s.env.proc.munmap(buf, s.mmap_buf_size)
    if mf is not None:
        s.env.task.close(mfd)
        mf.close()


@kselftest(FIXTURE, ALL)
def test_all_aligns(s: Self) -> None:
    env = s.env
    buf, mfd, mf = _align_buffer(s)
    env.check_refs(buf, s.mmap_buf_size, 0)
    for start, end in _align_ranges(s):
        length = end - start
        iova = _map_range(s, buf, mfd, start, length)
        s.check_mock_iova(buf + start, iova, length)
        lo = start // PAGE_SIZE * PAGE_SIZE
        env.check_refs(buf + lo, end // PAGE_SIZE * PAGE_SIZE - lo, 1)
        env.unmap(iova, length)
    env.check_refs(buf, s.mmap_buf_size, 0)
    _release_buffer(s, buf, mfd, mf)


@kselftest(FIXTURE, ALL)
def test_all_aligns_copy(s: Self) -> None:
    env = s.env
    buf, mfd, mf = _align_buffer(s)
    env.check_refs(buf, s.mmap_buf_size, 0)
    for start, end in _align_ranges(s):
        length = end - start
        iova = _map_range(s, buf, mfd, start, length)
        old_id = s.hwpt_ids[1]  # add and destroy a domain while the area exists
        out = env.mock_domain(s.ioas_id)
        s.hwpt_ids[1] = out.hwpt_id
        s.check_mock_iova(buf + start, iova, length)
        lo = start // PAGE_SIZE * PAGE_SIZE
        env.check_refs(buf + lo, end // PAGE_SIZE * PAGE_SIZE - lo, 1)
        env.fd.destroy(out.stdev_id)
        s.hwpt_ids[1] = old_id
        env.unmap(iova, length)
    env.check_refs(buf, s.mmap_buf_size, 0)
    _release_buffer(s, buf, mfd, mf)


@kselftest(FIXTURE, ALL)
def test_user_copy(s: Self) -> None:
    """Pages pinned in an IOAS without domains are copied into one with domains, twice, with the
    access moved to a new IOAS in between."""
    env = s.env
    fd = env.fd
    buf = env.mfd_buffer if s.v.file else env.buffer
    copy_flags = uapi.IOMMU_IOAS_MAP_FIXED_IOVA | uapi.IOMMU_IOAS_MAP_WRITEABLE

    def map_src(ioas_id: int) -> int:
        if s.v.file:
            return env.map_file(env.mfd, 0, BUFFER_SIZE, ioas_id=ioas_id)
        return env.map(buf, BUFFER_SIZE, ioas_id=ioas_id)

    ioas_id = env.ioas_alloc()
    src_iova = map_src(ioas_id)
    access = env.test.create_access(ioas_id, uapi.MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES)
    env.test.access_pages(access, src_iova, BUFFER_SIZE, uptr=buf)
    fd.ioas_copy(s.ioas_id, ioas_id, BUFFER_SIZE, src_iova, MOCK_APERTURE_START, copy_flags)
    s.check_mock_iova(buf, MOCK_APERTURE_START, BUFFER_SIZE)

    new_ioas_id = env.ioas_alloc()
    src_iova = map_src(new_ioas_id)
    env.test.access_replace_ioas(access, new_ioas_id)
    env.unmap(MOCK_APERTURE_START, BUFFER_SIZE)
    fd.destroy(ioas_id)

    item = env.test.access_pages(access, src_iova, BUFFER_SIZE, uptr=buf)
    fd.ioas_copy(s.ioas_id, new_ioas_id, BUFFER_SIZE, src_iova, MOCK_APERTURE_START, copy_flags)
    s.check_mock_iova(buf, MOCK_APERTURE_START, BUFFER_SIZE)
    env.test.destroy_access_pages(access, item)
    env.test.destroy_access(access)
    fd.destroy(new_ioas_id)


@kselftest(FIXTURE, ALL)
def test_replace(s: Self) -> None:
    env = s.env
    ioas_id = env.ioas_alloc()
    env.test.mock_domain_replace(s.stdev_ids[0], ioas_id)
    if s.v.mock_domains == 1:  # the old auto HWPT went with its last device
        with expect_errno(errno.ENOENT):
            env.test.mock_domain_replace(s.stdev_ids[0], s.hwpt_ids[0])
    env.test.mock_domain_replace(s.stdev_ids[0], ioas_id)
    if s.v.mock_domains >= 2:
        env.test.mock_domain_replace(s.stdev_ids[0], s.hwpt_ids[1])
        env.test.mock_domain_replace(s.stdev_ids[0], s.hwpt_ids[1])
        env.test.mock_domain_replace(s.stdev_ids[0], s.hwpt_ids[0])
    env.test.mock_domain_replace(s.stdev_ids[0], s.ioas_id)
    env.fd.destroy(ioas_id)


@kselftest(FIXTURE, ALL)
def test_alloc_hwpt(s: Self) -> None:
    env = s.env
    fd = env.fd
    for i in range(s.v.mock_domains):
        with expect_errno(errno.EOPNOTSUPP):
            fd.hwpt_alloc(s.idev_ids[i], s.ioas_id, flags=~uapi.IOMMU_HWPT_ALLOC_NEST_PARENT & 0xFFFFFFFF)
        h0 = fd.hwpt_alloc(s.idev_ids[i], s.ioas_id)
        h1 = fd.hwpt_alloc(s.idev_ids[i], s.ioas_id, flags=uapi.IOMMU_HWPT_ALLOC_NEST_PARENT)
        env.test.mock_domain_replace(s.stdev_ids[i], h0)  # rotate the device through the HWPTs
        with expect_errno(errno.EBUSY):
            fd.destroy(h0)
        env.test.mock_domain_replace(s.stdev_ids[i], h1)
        with expect_errno(errno.EBUSY):
            fd.destroy(h1)
        env.test.mock_domain_replace(s.stdev_ids[i], s.ioas_id)
        fd.destroy(h1)
        out = env.mock_domain(h0)
        fd.destroy(out.stdev_id)
        fd.destroy(h0)
