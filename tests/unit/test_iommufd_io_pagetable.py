"""IOAS behaviour worked out from io_pagetable.c / pages.c / vfio_compat.c, beyond what the kernel
selftest asserts: exact auto-IOVA values, the page offset kept in the IOVA, unmap side effects on error,
lazy pinning, one pin per iopt_pages shared by copies, RLIMIT_MEMLOCK, VFIO type1 splitting in the page
table, and that a second domain receives the same frames."""

from __future__ import annotations

import errno
from collections.abc import Iterator

import pytest

from vfiolab.errors import UapiError
from vfiolab.iommufd import Iommufd, MockIommu, Task, uapi
from vfiolab.memory import MAP_ANONYMOUS, MAP_HUGETLB, MAP_SHARED, PhysMemory, UserProcess

PAGE = 4096
START = uapi.MOCK_APERTURE_START


@pytest.fixture(scope="module")
def mem() -> Iterator[PhysMemory]:
    m = PhysMemory(1 << 30, name="iommufd-unit")
    yield m
    m.close()


@pytest.fixture
def fd(mem: PhysMemory) -> Iterator[Iommufd]:
    proc = UserProcess(mem)
    f = Iommufd(proc, selftest=MockIommu(mem))
    yield f
    f.close()
    proc.close()


def _errno(fn, *a, **kw) -> int:  # type: ignore[no-untyped-def]
    with pytest.raises(UapiError) as ei:
        fn(*a, **kw)
    return ei.value.errno


def test_auto_iova_first_fit_and_alignment(fd: Iommufd) -> None:
    ioas = fd.ioas_alloc()
    # no addr alignment hint beyond the length: 4 KiB at the first page after page 0
    assert fd.ioas_map(ioas, 0x7000_0000_0000, PAGE) == PAGE
    # 12 KiB rounds up to a 16 KiB alignment; [4K, 8K) is used, so the first fit is 16K
    assert fd.ioas_map(ioas, 0x7000_0000_0000, 3 * PAGE) == 4 * PAGE
    # the user address' page offset is ORed into the IOVA, and the address' own alignment (4 bytes
    # here) caps the IOVA alignment: the first hole after the first map fits at 0x2000 | 0x234
    assert fd.ioas_map(ioas, 0x7000_0000_1234, PAGE) == 0x2234


def test_auto_iova_inside_the_mock_aperture(fd: Iommufd) -> None:
    ioas = fd.ioas_alloc()
    fd.test.mock_domain(ioas)
    buf = fd.process.mmap(4 * PAGE)
    assert fd.ioas_map(ioas, buf, PAGE) == START
    assert fd.ioas_ranges(ioas) == [(START, uapi.MOCK_APERTURE_LAST)]


def test_fixed_map_errors_in_kernel_order(fd: Iommufd) -> None:
    ioas = fd.ioas_alloc()
    fixed = uapi.IOMMU_IOAS_MAP_FIXED_IOVA | uapi.IOMMU_IOAS_MAP_READABLE
    assert _errno(fd.ioas_map, ioas, 0, PAGE, flags=1 << 5) == errno.EOPNOTSUPP
    assert _errno(fd.ioas_map, ioas, 0, uapi.ULONG_MAX, flags=1 << 5 | fixed) == errno.EOPNOTSUPP
    assert _errno(fd.ioas_map, ioas, 0, uapi.ULONG_MAX, flags=fixed) == errno.EOVERFLOW
    assert _errno(fd.ioas_map, ioas, 0, PAGE, flags=uapi.IOMMU_IOAS_MAP_FIXED_IOVA) == errno.EINVAL
    assert _errno(fd.ioas_map, 99, 0, PAGE, flags=fixed) == errno.ENOENT
    assert _errno(fd.ioas_map, ioas, 0, 0, flags=fixed) == errno.EINVAL
    fd.test.add_reserved(ioas, 0x10000, PAGE)
    assert _errno(fd.ioas_map, ioas, 0, PAGE, iova=0xF800, flags=fixed) == errno.EINVAL  # reserved
    assert _errno(fd.ioas_map, ioas, 0, 2, iova=(1 << 64) - 1, flags=fixed) == errno.EOVERFLOW


def test_unmap_removes_whole_maps_before_failing(fd: Iommufd) -> None:
    """iopt_unmap_iova_range(): areas before the one that cuts the range are already gone."""
    ioas = fd.ioas_alloc()
    fixed = uapi.IOMMU_IOAS_MAP_FIXED_IOVA | uapi.IOMMU_IOAS_MAP_READABLE
    fd.ioas_map(ioas, 0x1000, PAGE, iova=0x10000, flags=fixed)
    fd.ioas_map(ioas, 0x1000, 2 * PAGE, iova=0x20000, flags=fixed)
    assert _errno(fd.ioas_unmap, ioas, 0x10000, 0x11000) == errno.ENOENT
    assert _errno(fd.ioas_unmap, ioas, 0x10000, PAGE) == errno.ENOENT  # the first one went
    assert fd.ioas_unmap(ioas, 0x20000, 2 * PAGE) == 2 * PAGE


def test_maps_pin_only_with_a_domain(fd: Iommufd) -> None:
    ioas = fd.ioas_alloc()
    proc = fd.process
    buf = proc.mmap(4 * PAGE)
    fixed = uapi.IOMMU_IOAS_MAP_FIXED_IOVA | uapi.IOMMU_IOAS_MAP_READABLE
    fd.ioas_map(ioas, buf, 4 * PAGE, iova=START + (1 << 20), flags=fixed)
    assert proc.pinned_pages == 0  # lazily referenced
    # even unmapped memory maps without a domain ...
    fd.ioas_map(ioas, 1 << 40, PAGE, iova=START, flags=fixed)
    assert _errno(fd.test.mock_domain, ioas) == errno.EFAULT  # ... until something has to pin it
    fd.ioas_map(ioas, 1 << 40, PAGE)  # outside the mock aperture: the domain cannot come
    assert _errno(fd.test.mock_domain, ioas) == errno.EADDRINUSE
    fd.ioas_unmap(ioas, 0, uapi.U64_MAX)
    fd.ioas_map(ioas, buf, 4 * PAGE, iova=START, flags=fixed)
    fd.test.mock_domain(ioas)
    assert proc.pinned_pages == 4


def test_copy_shares_one_pin(fd: Iommufd) -> None:
    src, dst = fd.ioas_alloc(), fd.ioas_alloc()
    proc = fd.process
    buf = proc.mmap(4 * PAGE)
    out_src = fd.test.mock_domain(src)
    out_dst = fd.test.mock_domain(dst)
    iova = fd.ioas_map(src, buf, 4 * PAGE)
    new = fd.ioas_copy(dst, src, 4 * PAGE, iova)
    assert proc.pinned_pages == 4 and Task.of(proc).pinned_vm == 4
    fd.test.md_check_map(out_dst.hwpt_id, new, 4 * PAGE, buf)
    fd.test.md_check_map(out_src.hwpt_id, iova, 4 * PAGE, buf)
    fd.ioas_unmap(src, iova, 4 * PAGE)
    assert proc.pinned_pages == 4  # the copy still holds them
    fd.ioas_unmap(dst, new, 4 * PAGE)
    assert proc.pinned_pages == 0 and Task.of(proc).pinned_vm == 0


def test_rlimit_memlock_without_cap_ipc_lock(mem: PhysMemory) -> None:
    proc = UserProcess(mem)
    task = Task.of(proc)
    task.cap_ipc_lock = False
    task.rlimit_memlock = 2 * PAGE
    with Iommufd(proc, selftest=MockIommu(mem)) as fd:
        ioas = fd.ioas_alloc()
        fd.test.mock_domain(ioas)
        buf = proc.mmap(4 * PAGE)
        assert _errno(fd.ioas_map, ioas, buf, 3 * PAGE) == errno.ENOMEM
        assert proc.pinned_pages == 0 and task.user.locked_vm == 0
        iova = fd.ioas_map(ioas, buf, 2 * PAGE)
        assert task.user.locked_vm == 2 and task.pinned_vm == 2
        fd.ioas_unmap(ioas, iova, 2 * PAGE)
        assert task.user.locked_vm == 0
    proc.close()


def test_efault_pins_nothing(fd: Iommufd) -> None:
    ioas = fd.ioas_alloc()
    fd.test.mock_domain(ioas)
    proc = fd.process
    buf = proc.mmap(8 * PAGE)
    proc.munmap(buf + 6 * PAGE, 2 * PAGE)
    assert _errno(fd.ioas_map, ioas, buf, 8 * PAGE) == errno.EFAULT
    assert proc.pinned_pages == 0 and int(proc.mem.pincount.sum()) == 0


def test_second_domain_gets_the_same_frames(fd: Iommufd) -> None:
    ioas = fd.ioas_alloc()
    proc = fd.process
    buf = proc.mmap(16 * PAGE)
    a = fd.test.mock_domain(ioas)
    iova = fd.ioas_map(ioas, buf, 16 * PAGE)
    hwpt = fd.hwpt_alloc(a.idev_id, ioas)
    fd.test.md_check_map(hwpt, iova, 16 * PAGE, buf)
    assert proc.pinned_pages == 16


def test_vfio_type1_splits_huge_maps_in_the_table(fd: Iommufd) -> None:
    """Type1 maps with PAGE_SIZE leaves, so cutting a piece leaves the rest translated."""
    ioas = fd.ioas_alloc()
    out = fd.test.mock_domain(ioas)
    fd.vfio_ioas(uapi.IOMMU_VFIO_IOAS_SET, ioas_id=ioas)
    fd.vfio_set_iommu(uapi.VFIO_TYPE1_IOMMU)
    proc = fd.process
    size = 4 << 20
    buf = proc.mmap(size, flags=MAP_SHARED | MAP_ANONYMOUS | MAP_HUGETLB)
    fd.vfio_iommu_map_dma(buf, START, size)
    dom = fd.object(out.hwpt_id).domain  # type: ignore[attr-defined]
    assert {s for _, s, _ in dom.pt.leaves()} <= {2048, 4096}
    piece = size // 16
    assert fd.vfio_iommu_unmap_dma(START + 5 * piece, piece) == piece
    fd.test.md_check_map(out.hwpt_id, START, 5 * piece, buf)
    fd.test.md_check_map(out.hwpt_id, START + 6 * piece, size - 6 * piece, buf + 6 * piece)
    assert dom.iova_to_phys(START + 5 * piece) == 0
    assert proc.pinned_pages == (size - piece) // PAGE


def test_vfio_type1v2_keeps_huge_leaves(fd: Iommufd) -> None:
    ioas = fd.ioas_alloc()
    out = fd.test.mock_domain(ioas)
    fd.vfio_ioas(uapi.IOMMU_VFIO_IOAS_SET, ioas_id=ioas)
    fd.vfio_set_iommu(uapi.VFIO_TYPE1v2_IOMMU)
    buf = fd.process.mmap(4 << 20, flags=MAP_SHARED | MAP_ANONYMOUS | MAP_HUGETLB)
    fd.vfio_iommu_map_dma(buf, START, 4 << 20)
    dom = fd.object(out.hwpt_id).domain  # type: ignore[attr-defined]
    assert max(s for _, s, _ in dom.pt.leaves()) == 2 << 20


def test_destroy_of_a_bound_device_is_ebusy(fd: Iommufd) -> None:
    out = fd.test.mock_domain(fd.ioas_alloc())
    assert _errno(fd.destroy, out.idev_id) == errno.EBUSY  # the driver holds it
    assert _errno(fd.destroy, out.hwpt_id) == errno.EBUSY  # the device is attached
    fd.destroy(out.stdev_id)
    assert _errno(fd.destroy, out.hwpt_id) == errno.ENOENT  # the auto domain went with it


def test_dmabuf_maps_mmio_and_revoke_unmaps(fd: Iommufd) -> None:
    """A dma-buf map translates to the exporter's memory without pins; revoking unmaps it from every
    domain, and a domain added later maps nothing for it (pages.c iopt_revoke_notify)."""
    ioas = fd.ioas_alloc()
    a = fd.test.mock_domain(ioas)
    dfd = fd.test.dmabuf_get(4 * PAGE)
    buf = fd.current.fds[dfd]
    iova = fd.ioas_map_file(ioas, dfd, PAGE, 2 * PAGE)
    dom = fd.object(a.hwpt_id).domain  # type: ignore[attr-defined]
    assert dom.iova_to_phys(iova) == buf.paddr + PAGE  # type: ignore[attr-defined]
    assert fd.process.pinned_pages == 0 and Task.of(fd.process).pinned_vm == 0
    fd.test.dmabuf_revoke(dfd, True)
    assert dom.iova_to_phys(iova) == 0
    hwpt = fd.hwpt_alloc(a.idev_id, ioas)
    assert fd.object(hwpt).domain.iova_to_phys(iova) == 0  # type: ignore[attr-defined]
    fd.ioas_unmap(ioas, iova, 2 * PAGE)
    fd.current.close(dfd)
