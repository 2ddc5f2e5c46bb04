"""FIXTURE(vfio_compat_mock_domain) of the kernel selftest: the VFIO type1 container ioctls on an iommufd
whose compat IOAS has a mock domain, in type1v2 and type1 (v1, splittable maps) modes.  Expectations
re-expressed from tools/testing/selftests/iommu/iommufd.c (Linux 7.2)."""

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
    PAGE_SIZE,
    Env,
    expect_errno,
    kselftest,
)

from vfiolab.iommufd import uapi

FIXTURE = "vfio_compat_mock_domain"
VARIANTS = {"Ver1v2": uapi.VFIO_TYPE1v2_IOMMU, "Ver1v0": uapi.VFIO_TYPE1_IOMMU}
ALL = list(VARIANTS)
RW = uapi.VFIO_DMA_MAP_FLAG_READ | uapi.VFIO_DMA_MAP_FLAG_WRITE


@dataclass
class Self:
    env: Env
    version: int
    ioas_id: int = 0


@pytest.fixture
def s(env: Env, variant: str) -> Iterator[Self]:
    st = Self(env, VARIANTS[variant])
    st.ioas_id = env.ioas_alloc()  # what VFIO would consider a group
    env.mock_domain(st.ioas_id)
    env.fd.vfio_ioas(uapi.IOMMU_VFIO_IOAS_SET, ioas_id=st.ioas_id)
    assert env.fd.ioctl(uapi.VFIO_SET_IOMMU, st.version) == 0
    yield st


@kselftest(FIXTURE, ALL)
def test_simple_close(s: Self) -> None:
    """The compat IOAS and its domain go away with the fd."""


@kselftest(FIXTURE, ALL)
def test_option_huge_pages(s: Self) -> None:
    val = s.env.fd.option(uapi.IOMMU_OPTION_HUGE_PAGES, uapi.IOMMU_OPTION_OP_GET, s.ioas_id, val64=3)
    assert val == (0 if s.version == uapi.VFIO_TYPE1_IOMMU else 1)


def _ioctl_check_buf(env: Env, cmd: int) -> None:
    """ioctl_check_buf(): run ``cmd`` on ``buffer`` and check nothing past argsz was written."""
    proc, buf = env.proc, env.buffer
    cmd_len = int.from_bytes(proc.read(buf, 4), "little")
    proc.write(buf + cmd_len, b"\xaa" * (BUFFER_SIZE - cmd_len))
    assert env.fd.ioctl(cmd, buf) == 0
    assert proc.read(buf + cmd_len, BUFFER_SIZE - cmd_len) == b"\xaa" * (BUFFER_SIZE - cmd_len)


def _check_cap_chain(env: Env, info: dict[str, int]) -> None:
    """check_vfio_info_cap_chain()."""
    hdr = uapi.vfio_info_cap_header
    raw = env.proc.read(env.buffer, info["argsz"])
    assert info["argsz"] >= info["cap_offset"] + hdr.size
    off = info["cap_offset"]
    while True:
        cap = hdr.unpack(raw[off:off + hdr.size])
        cap_size = (cap["next"] or info["argsz"]) - off
        if cap["id"] == uapi.VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE:
            st = uapi.vfio_iommu_type1_info_cap_iova_range
            data = st.unpack(raw[off:off + st.size])
            assert data["version"] == 1 and data["nr_iovas"] == 1
            r = uapi.vfio_iova_range.unpack(raw[off + st.size:off + st.size + 16])
            assert (r["start"], r["end"]) == (MOCK_APERTURE_START, MOCK_APERTURE_LAST)
        elif cap["id"] == uapi.VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL:
            assert cap["version"] == 1
            assert cap_size == uapi.vfio_iommu_type1_info_dma_avail.size
        else:
            raise AssertionError(f"unknown cap {cap['id']}")
        if not cap["next"]:
            break
        assert info["argsz"] >= cap["next"] + hdr.size and cap["next"] >= off
        off = cap["next"]


@kselftest(FIXTURE, ALL)
def test_get_info(s: Self) -> None:
    env = s.env
    st = uapi.vfio_iommu_type1_info
    both = uapi.VFIO_IOMMU_INFO_PGSIZES | uapi.VFIO_IOMMU_INFO_CAPS

    def info() -> dict[str, int]:
        return st.unpack(env.proc.read(env.buffer, st.size))

    env.proc.write(env.buffer, st.pack(argsz=st.field("cap_offset").offset))  # the pre-cap ABI
    _ioctl_check_buf(env, uapi.VFIO_IOMMU_GET_INFO)
    assert info()["iova_pgsizes"] != 0 and info()["flags"] == both
    env.proc.write(env.buffer, st.pack(argsz=st.size))  # read the cap chain size
    _ioctl_check_buf(env, uapi.VFIO_IOMMU_GET_INFO)
    i = info()
    assert i["iova_pgsizes"] != 0 and i["flags"] == both and i["cap_offset"] == 0 and st.size < i["argsz"]
    caplen = i["argsz"]
    for argsz in range(st.size, caplen):  # every partial size: never a corrupted cap chain
        env.proc.write(env.buffer, st.pack(argsz=argsz))
        _ioctl_check_buf(env, uapi.VFIO_IOMMU_GET_INFO)
        i = info()
        assert i["flags"] == both
        if i["cap_offset"]:
            _check_cap_chain(env, i)


@kselftest(FIXTURE, ALL)
def test_map(s: Self) -> None:
    fd, env = s.env.fd, s.env
    fd.vfio_iommu_map_dma(env.buffer, MOCK_APERTURE_START, BUFFER_SIZE, RW)
    assert fd.vfio_iommu_unmap_dma(MOCK_APERTURE_START, BUFFER_SIZE) == BUFFER_SIZE
    fd.vfio_iommu_unmap_dma(MOCK_APERTURE_START, BUFFER_SIZE)  # unmapping nothing succeeds
    fd.vfio_iommu_map_dma(env.buffer, MOCK_APERTURE_START, BUFFER_SIZE, RW)
    with expect_errno(errno.EINVAL):  # UNMAP_FLAG_ALL wants iova and size 0
        fd.vfio_iommu_unmap_dma(MOCK_APERTURE_START, BUFFER_SIZE, flags=uapi.VFIO_DMA_UNMAP_FLAG_ALL)
    assert fd.vfio_iommu_unmap_dma(0, 0, flags=uapi.VFIO_DMA_UNMAP_FLAG_ALL) == BUFFER_SIZE
    pages = [MOCK_APERTURE_START + i * PAGE_SIZE for i in range(BUFFER_SIZE // PAGE_SIZE)]
    for i, iova in enumerate(pages):  # small pages, unmapped in random order
        fd.vfio_iommu_map_dma(env.buffer + i * PAGE_SIZE, iova, PAGE_SIZE, RW)
    random.Random(1).shuffle(pages)
    for iova in pages:
        fd.vfio_iommu_unmap_dma(iova, PAGE_SIZE)


@kselftest(FIXTURE, ALL)
def test_huge_map(s: Self) -> None:
    """Type1 may unmap pieces of a huge-page map; type1v2 refuses (ENOENT)."""
    env = s.env
    buf_size = HUGEPAGE_SIZE * 2
    buf = env.mmap(buf_size, MAP_SHARED | MAP_ANONYMOUS | MAP_HUGETLB)
    env.fd.vfio_iommu_map_dma(buf, MOCK_APERTURE_START, buf_size, RW)
    piece = buf_size // 16
    pieces = [MOCK_APERTURE_START + i * piece for i in range(16)]
    random.Random(2).shuffle(pieces)
    for iova in pieces:
        if s.version == uapi.VFIO_TYPE1_IOMMU:
            env.fd.vfio_iommu_unmap_dma(iova, piece)
        else:
            with expect_errno(errno.ENOENT):
                env.fd.vfio_iommu_unmap_dma(iova, piece)
