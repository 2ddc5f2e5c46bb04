"""The type1 IOMMU driver (Linux 7.2 drivers/vfio/vfio_iommu_type1.c): MAP_DMA and UNMAP_DMA checks in the
kernel's order, v1 versus v2 unmap granularity, UNMAP_ALL, VADDR invalidate/update, pinning and
RLIMIT_MEMLOCK accounting, GET_INFO's capability chain (migration, DMA available, IOVA ranges), valid IOVA
ranges from apertures and reserved regions, domain sharing and replay, and dirty page tracking (IOMMU-backed
groups report every mapped page; emulated groups report pinned pages and dma_rw writes)."""

from __future__ import annotations

import errno
import struct

import numpy as np
import pytest
from test_vfio_container_builders import K4, Machine, Opened, iova_ranges, machine, open_mode

from vfiolab.errors import UapiError
from vfiolab.iommu.pagetable.common import IOMMU_READ, IOMMU_WRITE
from vfiolab.iommu.resv import X86_MSI_LAST, X86_MSI_START
from vfiolab.iommufd import uapi as iu
from vfiolab.iommufd.task import Task
from vfiolab.vfio.container import VfioContainer
from vfiolab.vfio.device import VfioDevice
from vfiolab.vfio.group import VfioGroup, VfioGroupFile
from vfiolab.vfio.pci_core import IommuDmaPort
from vfiolab.vfio.type1 import (
    DIRTY_BITMAP_SIZE_MAX,
    VFIO_EMULATED_IOMMU,
    VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP,
    VFIO_IOMMU_DIRTY_PAGES_FLAG_START,
    VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP,
    VfioIommuType1,
)

BASE = 1 << 24  # the mock aperture starts at 16 MiB
RW = iu.VFIO_DMA_MAP_FLAG_READ | iu.VFIO_DMA_MAP_FLAG_WRITE
GET = VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP


def err(fn, *args, **kw):  # type: ignore[no-untyped-def]
    with pytest.raises(UapiError) as e:
        fn(*args, **kw)
    return e.value.errno


def opened(v2: bool = True, kind: str = "mock") -> tuple[Machine, Opened, VfioContainer, VfioIommuType1]:
    m = machine()
    g = m.add_group(kind, ["d0"])
    o = open_mode(m, "vfio_type1v2_iommu" if v2 else "vfio_type1_iommu", g, "d0")
    assert isinstance(o.container, VfioContainer) and isinstance(o.container.iommu_data, VfioIommuType1)
    return m, o, o.container, o.container.iommu_data


# ---------------------------------------------------------------------- MAP_DMA
def test_map_checks_in_order() -> None:
    m, _o, c, t1 = opened()
    va = m.process.mmap(16 * K4)
    st = iu.vfio_iommu_type1_dma_map
    assert err(c.ioctl, iu.VFIO_IOMMU_MAP_DMA, st.pack(argsz=31, flags=RW, vaddr=va, iova=BASE, size=K4)) == \
        errno.EINVAL
    assert err(c.ioctl, iu.VFIO_IOMMU_MAP_DMA, bytes(31)) == errno.EFAULT
    assert err(c.vfio_iommu_map_dma, va, BASE, K4, flags=RW | 8) == errno.EINVAL
    assert err(c.vfio_iommu_map_dma, va, BASE, 0) == errno.EINVAL
    assert err(c.vfio_iommu_map_dma, va, (1 << 64) - K4, 2 * K4) == errno.EOVERFLOW
    assert err(c.vfio_iommu_map_dma, (1 << 64) - K4, BASE, 2 * K4) == errno.EOVERFLOW
    assert err(c.vfio_iommu_map_dma, va, BASE, K4, flags=0) == errno.EINVAL
    assert err(c.vfio_iommu_map_dma, va, BASE, K4, flags=RW | iu.VFIO_DMA_MAP_FLAG_VADDR) == errno.EINVAL
    assert err(c.vfio_iommu_map_dma, va + 0x800, BASE, K4) == errno.EINVAL
    assert err(c.vfio_iommu_map_dma, va, BASE + 0x800, K4) == errno.EINVAL
    assert err(c.vfio_iommu_map_dma, va, BASE, 0x800) == errno.EINVAL
    assert err(c.vfio_iommu_map_dma, va, BASE - K4, K4) == errno.EINVAL  # below the mock aperture
    assert err(c.vfio_iommu_map_dma, va, (1 << 31) - K4, 2 * K4) == errno.EINVAL  # crosses its end
    c.vfio_iommu_map_dma(va, BASE + 4 * K4, 4 * K4)
    for iova, size in ((BASE + 4 * K4, K4), (BASE, 5 * K4), (BASE + 7 * K4, 4 * K4), (BASE, 16 * K4)):
        assert err(c.vfio_iommu_map_dma, va, iova, size) == errno.EEXIST
    assert err(c.vfio_iommu_map_dma, 0x10000, BASE + 16 * K4, K4) == errno.EFAULT  # nothing mapped there
    assert len(t1.dmas) == 1 and t1.dma_avail == 0xFFFF - 1


def test_map_pins_and_accounts() -> None:
    """Pages are pinned for the mapping and charged to locked_vm; without CAP_IPC_LOCK the charge is
    limited by RLIMIT_MEMLOCK (ENOMEM, nothing left mapped or pinned); unmap gives it all back."""
    m, o, c, t1 = opened()
    task = Task.of(m.process)
    va = m.process.mmap(64 * K4)
    c.vfio_iommu_map_dma(va, BASE, 16 * K4)
    assert task.locked_vm == 16 and m.process.pinned_pages == 16
    task.cap_ipc_lock = False
    task.rlimit_memlock = 20 * K4
    try:
        assert err(c.vfio_iommu_map_dma, va + 16 * K4, BASE + 16 * K4, 8 * K4) == errno.ENOMEM
        assert task.locked_vm == 16 and m.process.pinned_pages == 16 and len(t1.dmas) == 1
        c.vfio_iommu_map_dma(va + 16 * K4, BASE + 16 * K4, 4 * K4)
        assert task.locked_vm == 20
    finally:
        task.cap_ipc_lock = True
        task.rlimit_memlock = 8 << 20
    assert c.vfio_iommu_unmap_dma(0, 0, flags=iu.VFIO_DMA_UNMAP_FLAG_ALL) == 20 * K4
    assert task.locked_vm == 0 and m.process.pinned_pages == 0
    dom = o.group.group.iommu_group.domain  # type: ignore[union-attr]
    assert dom.iova_to_phys(BASE) == 0  # type: ignore[union-attr]


def test_dma_entry_limit() -> None:
    m = machine()
    g = m.add_group("mock", ["d0"])
    from vfiolab.vfio.container import NoiommuDriver, Type1Driver
    c = VfioContainer(m.process, [Type1Driver(dma_entry_limit=2), NoiommuDriver()])
    gf = m.vfio.open(g, m.process)
    gf.set_container(c)
    c.vfio_set_iommu(iu.VFIO_TYPE1v2_IOMMU)
    va = m.process.mmap(4 * K4)
    c.vfio_iommu_map_dma(va, BASE, K4)
    c.vfio_iommu_map_dma(va, BASE + K4, K4)
    assert err(c.vfio_iommu_map_dma, va, BASE + 2 * K4, K4) == errno.ENOSPC
    c.vfio_iommu_unmap_dma(BASE, K4)
    c.vfio_iommu_map_dma(va, BASE + 2 * K4, K4)


# ---------------------------------------------------------------------- UNMAP_DMA
def test_unmap_checks() -> None:
    _m, _o, c, _t1 = opened()
    st = iu.vfio_iommu_type1_dma_unmap
    assert err(c.ioctl, iu.VFIO_IOMMU_UNMAP_DMA, st.pack(argsz=23, iova=BASE, size=K4)) == errno.EINVAL
    assert err(c.vfio_iommu_unmap_dma, BASE, K4, flags=8) == errno.EINVAL
    assert err(c.vfio_iommu_unmap_dma, BASE + 0x800, K4) == errno.EINVAL
    assert err(c.vfio_iommu_unmap_dma, BASE, 0) == errno.EINVAL
    assert err(c.vfio_iommu_unmap_dma, BASE, 0x800) == errno.EINVAL
    assert err(c.vfio_iommu_unmap_dma, (1 << 64) - K4, 2 * K4) == errno.EOVERFLOW
    assert err(c.vfio_iommu_unmap_dma, BASE, K4, flags=iu.VFIO_DMA_UNMAP_FLAG_ALL) == errno.EINVAL
    assert err(c.vfio_iommu_unmap_dma, 0, K4, flags=iu.VFIO_DMA_UNMAP_FLAG_ALL) == errno.EINVAL
    for bad in (iu.VFIO_DMA_UNMAP_FLAG_ALL, iu.VFIO_DMA_UNMAP_FLAG_VADDR):
        assert err(c.vfio_iommu_unmap_dma, 0, 0, flags=bad | iu.VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP) == errno.EINVAL
    assert c.vfio_iommu_unmap_dma(BASE, 16 * K4) == 0  # nothing mapped: success, size 0
    assert c.vfio_iommu_unmap_dma(0, 0, flags=iu.VFIO_DMA_UNMAP_FLAG_ALL) == 0


def test_unmap_v2_refuses_cuts_v1_is_lenient() -> None:
    """v2: a range may cover several mappings but must not cut one (EINVAL).  v1: a range starting
    inside a mapping unmaps nothing (size 0, success); one covering a mapping's first IOVA unmaps all of
    it, even past the range's end."""
    for v2 in (True, False):
        m, _o, c, _t1 = opened(v2)
        va = m.process.mmap(16 * K4)
        c.vfio_iommu_map_dma(va, BASE, 4 * K4)
        c.vfio_iommu_map_dma(va + 4 * K4, BASE + 4 * K4, 4 * K4)
        if v2:
            assert err(c.vfio_iommu_unmap_dma, BASE + K4, K4) == errno.EINVAL
            assert err(c.vfio_iommu_unmap_dma, BASE, K4) == errno.EINVAL
            assert err(c.vfio_iommu_unmap_dma, BASE, 6 * K4) == errno.EINVAL
            assert c.vfio_iommu_unmap_dma(BASE - 4 * K4, 16 * K4) == 8 * K4
        else:
            assert c.vfio_iommu_unmap_dma(BASE + K4, K4) == 0
            assert c.vfio_iommu_unmap_dma(BASE + K4, 8 * K4) == 0  # starts inside: stops at once
            assert c.vfio_iommu_unmap_dma(BASE, K4) == 4 * K4  # the whole first mapping
            assert c.vfio_iommu_unmap_dma(BASE, 6 * K4) == 4 * K4  # covers the second's first IOVA


def test_update_vaddr() -> None:
    """VFIO_DMA_UNMAP_FLAG_VADDR invalidates vaddrs (DMA keeps working), MAP_DMA with VADDR supplies new
    ones for exactly the invalidated mappings; no group may join while vaddrs are invalid."""
    m, o, c, t1 = opened()
    va = m.process.mmap(8 * K4)
    m.process.write(va, b"keep")
    c.vfio_iommu_map_dma(va, BASE, 4 * K4)
    c.vfio_iommu_map_dma(va + 4 * K4, BASE + 4 * K4, 4 * K4)
    assert err(c.vfio_iommu_map_dma, va, BASE, 4 * K4, flags=iu.VFIO_DMA_MAP_FLAG_VADDR) == errno.EINVAL
    assert c.vfio_iommu_unmap_dma(BASE, 4 * K4, flags=iu.VFIO_DMA_UNMAP_FLAG_VADDR) == 4 * K4
    # invalidating again fails and undoes what this call invalidated
    assert err(c.vfio_iommu_unmap_dma, 0, 0, flags=iu.VFIO_DMA_UNMAP_FLAG_VADDR | iu.VFIO_DMA_UNMAP_FLAG_ALL) \
        == errno.EINVAL
    assert t1.vaddr_invalid_count == 1
    assert IommuDmaPort(o.device.device.iommu_dev).dma_read(BASE, 4) == b"keep"  # type: ignore[arg-type]
    assert err(c.vfio_iommu_map_dma, va, BASE + 8 * K4, K4, flags=iu.VFIO_DMA_MAP_FLAG_VADDR) == errno.ENOENT
    assert err(c.vfio_iommu_map_dma, va, BASE, 2 * K4, flags=iu.VFIO_DMA_MAP_FLAG_VADDR) == errno.EINVAL
    m2 = m.add_group("mock", ["d1"])
    gf2 = m.vfio.open(m2, m.process)
    assert err(gf2.set_container, c) == errno.EBUSY  # type1 attach refused while vaddrs are invalid
    assert not m2.iommu_group.owner_cnt  # type: ignore[union-attr]
    new = m.process.mmap(4 * K4)
    c.vfio_iommu_map_dma(new, BASE, 4 * K4, flags=iu.VFIO_DMA_MAP_FLAG_VADDR)
    assert t1.vaddr_invalid_count == 0 and t1.dmas[0].vaddr == new
    gf2.set_container(c)


# ---------------------------------------------------------------------- GET_INFO
def caps(raw: bytes, first: int) -> dict[int, bytes]:
    out = {}
    off = first
    while off:
        cid, _v, nxt = struct.unpack_from("<HHI", raw, off)
        out[cid] = raw[off:off + 64]
        off = nxt
    return out


def test_get_info_caps() -> None:
    m, _o, c, _t1 = opened(kind="intel")
    va = m.process.mmap(K4)
    c.vfio_iommu_map_dma(va, 0x100000, K4)
    info = c.vfio_iommu_get_info(4096)
    assert info.flags == iu.VFIO_IOMMU_INFO_PGSIZES | iu.VFIO_IOMMU_INFO_CAPS and info.cap_offset == 24
    assert info.iova_pgsizes & 0xFFF == 0 and info.iova_pgsizes & K4
    cs = caps(info.raw, info.cap_offset)
    assert list(cs) == [iu.VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION, iu.VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL,
                        iu.VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE]
    flags, pgs, maxb = struct.unpack_from("<I4xQQ", cs[iu.VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION], 8)
    assert (flags, pgs, maxb) == (0, K4, DIRTY_BITMAP_SIZE_MAX) and maxb == 1 << 28
    assert struct.unpack_from("<I", cs[iu.VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL], 8)[0] == 0xFFFF - 1
    ranges = iova_ranges(c)
    assert ranges[0] == (0, X86_MSI_START - 1) and ranges[1][0] == X86_MSI_LAST + 1 and len(ranges) == 2
    # a short buffer: success, CAPS set, argsz = what is needed, cap_offset not filled
    short = c.vfio_iommu_get_info(24)
    assert short.argsz == 24 + 32 + 16 + 16 + 2 * 16 and short.cap_offset == 0
    assert short.flags & iu.VFIO_IOMMU_INFO_CAPS
    assert c.vfio_iommu_get_info(16).argsz == short.argsz  # argsz < sizeof: cap_offset not even written
    assert err(c.vfio_iommu_get_info, 15) == errno.EINVAL


def test_iova_ranges_follow_groups() -> None:
    """The valid IOVA list is the intersection of the domains' apertures minus reserved regions; a group
    whose aperture would leave an existing mapping outside is refused (EINVAL, DMA ownership given back);
    when a group leaves, the list widens to the remaining apertures minus their reserved regions."""
    m = machine()
    gm = m.add_group("mock", ["mk"])
    gi = m.add_group("intel", ["in"])
    o = open_mode(m, "vfio_type1v2_iommu", gi, "in")
    c = o.container
    assert isinstance(c, VfioContainer)
    top = (1 << 47) - 1
    assert iova_ranges(c) == [(0, X86_MSI_START - 1), (X86_MSI_LAST + 1, top)]
    va = m.process.mmap(K4)
    m.process.write(va, b"R")
    c.vfio_iommu_map_dma(va, 0x1000, K4)  # below the mock's 16 MiB aperture
    gfm = m.vfio.open(gm, m.process)
    assert err(gfm.set_container, c) == errno.EINVAL
    assert gm.iommu_group is not None and not gm.iommu_group.owner_cnt  # ownership given back
    c.vfio_iommu_unmap_dma(0x1000, K4)
    c.vfio_iommu_map_dma(va, BASE + K4, K4)
    gfm.set_container(c)
    assert iova_ranges(c) == [(BASE, (1 << 31) - 1)]
    t1 = c.iommu_data
    assert isinstance(t1, VfioIommuType1) and len(t1.domains) == 2  # two drivers: two domains
    assert IommuDmaPort(m.devices["mk"].iommu_dev).dma_read(BASE + K4, 1) == b"R"  # type: ignore[arg-type]
    gfm.unset_container()
    assert iova_ranges(c) == [(0, X86_MSI_START - 1), (X86_MSI_LAST + 1, top)]


def test_reserved_region_conflict() -> None:
    """An SMMUv3 group reserves the software MSI window; a mapping already there refuses the group."""
    from vfiolab.iommu.resv import MSI_IOVA_BASE
    m = machine()
    gm = m.add_group("mock", ["mk"])
    ga = m.add_group("arm-smmu-v3", ["sm"])
    o = open_mode(m, "vfio_type1v2_iommu", gm, "mk")
    va = m.process.mmap(K4)
    o.container.vfio_iommu_map_dma(va, MSI_IOVA_BASE, K4)  # fine for the mock
    gfa = m.vfio.open(ga, m.process)
    assert err(gfa.set_container, o.container) == errno.EINVAL
    o.container.vfio_iommu_unmap_dma(MSI_IOVA_BASE, K4)
    gfa.set_container(o.container)
    ranges = iova_ranges(o.container)
    assert ranges == [(BASE, MSI_IOVA_BASE - 1), (MSI_IOVA_BASE + 0x100000, (1 << 31) - 1)]
    assert err(o.container.vfio_iommu_map_dma, va, MSI_IOVA_BASE, K4) == errno.EINVAL


def test_isolated_msi_required() -> None:
    m = machine()
    g = m.add_group("mock", ["d0"])
    g.iommu_group.isolated_msi = False  # type: ignore[union-attr]
    c = VfioContainer(m.process)
    gf = m.vfio.open(g, m.process)
    gf.set_container(c)
    assert err(c.vfio_set_iommu, iu.VFIO_TYPE1v2_IOMMU) == errno.EPERM
    from vfiolab.vfio.container import NoiommuDriver, Type1Driver
    c2 = VfioContainer(m.process, [Type1Driver(allow_unsafe_interrupts=True), NoiommuDriver()])
    gf.unset_container()
    gf.set_container(c2)
    c2.vfio_set_iommu(iu.VFIO_TYPE1v2_IOMMU)


def test_domain_shared_and_last_group_unpins() -> None:
    m = machine()
    ga = m.add_group("mock", ["a"])
    gb = m.add_group("mock", ["b"])
    o = open_mode(m, "vfio_type1v2_iommu", ga, "a")
    c = o.container
    gfb = m.vfio.open(gb, m.process)
    gfb.set_container(c)
    assert isinstance(c, VfioContainer)
    t1 = c.iommu_data
    assert isinstance(t1, VfioIommuType1) and len(t1.domains) == 1 and len(t1.domains[0].groups) == 2
    va = m.process.mmap(2 * K4)
    c.vfio_iommu_map_dma(va, BASE, 2 * K4)
    gfb.unset_container()
    assert len(t1.domains) == 1 and m.process.pinned_pages == 2
    o.device.close()
    o.group.unset_container()  # the last group: every mapping goes, pins dropped
    assert m.process.pinned_pages == 0 and Task.of(m.process).locked_vm == 0 and c.iommu_data is None


# ---------------------------------------------------------------------- dirty tracking
def bitmap_words(m: Machine, ptr: int, n: int) -> list[int]:
    return list(struct.unpack(f"<{n}Q", m.process.read(ptr, 8 * n)))


def test_dirty_pages_checks() -> None:
    m, _o, c, _t1 = opened(v2=False)
    assert err(c.dirty_start) == errno.EACCES  # type1 v1
    m, _o, c, _t1 = opened()
    va = m.process.mmap(8 * K4)
    c.vfio_iommu_map_dma(va, BASE, 8 * K4)
    bm = m.process.mmap(K4)
    d = c.vfio_iommu_dirty_pages
    assert err(d, 0) == errno.EINVAL
    assert err(d, VFIO_IOMMU_DIRTY_PAGES_FLAG_START | VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP) == errno.EINVAL
    assert err(d, 8) == errno.EINVAL
    assert err(d, VFIO_IOMMU_DIRTY_PAGES_FLAG_START, argsz=7) == errno.EINVAL
    assert err(d, GET, iova=BASE, size=8 * K4, pgsize=K4, bitmap_size=8, data=bm) == errno.EINVAL  # not on
    c.dirty_start()
    c.dirty_start()  # already on
    assert err(d, GET, iova=BASE, size=8 * K4, pgsize=K4, bitmap_size=8, data=bm, argsz=8 + 39) == errno.EINVAL
    assert err(d, GET, iova=BASE, size=0, pgsize=K4, bitmap_size=8, data=bm) == errno.EINVAL
    assert err(d, GET, iova=(1 << 64) - K4, size=2 * K4, pgsize=K4, bitmap_size=8, data=bm) == errno.EOVERFLOW
    assert err(d, GET, iova=BASE, size=8 * K4, pgsize=K4, bitmap_size=8, data=1 << 47) == errno.EINVAL
    assert err(d, GET, iova=BASE, size=8 * K4, pgsize=K4, bitmap_size=0, data=bm) == errno.EINVAL
    assert err(d, GET, iova=BASE, size=128 * 64 * K4, pgsize=K4, bitmap_size=8, data=bm) == errno.EINVAL
    assert err(d, GET, iova=BASE, size=8 * K4, pgsize=2 * K4, bitmap_size=8, data=bm) == errno.EINVAL
    assert err(d, GET, iova=BASE, size=4 * K4, pgsize=K4, bitmap_size=8, data=bm) == errno.EINVAL  # cuts
    assert err(d, GET, iova=BASE + K4, size=7 * K4, pgsize=K4, bitmap_size=8, data=bm) == errno.EINVAL
    assert err(d, GET, iova=BASE, size=8 * K4, pgsize=K4, bitmap_size=8, data=0x10) == errno.EFAULT
    d(GET, iova=BASE, size=8 * K4, pgsize=K4, bitmap_size=8, data=bm)
    c.dirty_stop()
    c.dirty_stop()
    assert err(c.vfio_iommu_unmap_dma, BASE, 8 * K4, flags=iu.VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP,
               argsz=48, bitmap=(K4, 8, bm)) == errno.EINVAL  # tracking off


def test_iommu_backed_groups_report_every_mapped_page() -> None:
    """With a group that can DMA anywhere, every page of every mapping is dirty at every GET_BITMAP;
    mappings not word aligned meet in one bitmap."""
    m, _o, c, _t1 = opened()
    va = m.process.mmap(64 * K4)
    c.vfio_iommu_map_dma(va, BASE, 3 * K4)
    c.vfio_iommu_map_dma(va + 3 * K4, BASE + 3 * K4, 5 * K4)
    c.vfio_iommu_map_dma(va + 8 * K4, BASE + 70 * K4, 2 * K4)
    c.dirty_start()
    bm = m.process.mmap(K4)
    c.vfio_iommu_dirty_pages(GET, iova=BASE, size=72 * K4, pgsize=K4, bitmap_size=16, data=bm)
    assert bitmap_words(m, bm, 2) == [0xFF, 0b11 << 6]
    m.process.write(bm, bytes(16))
    c.vfio_iommu_dirty_pages(GET, iova=BASE, size=72 * K4, pgsize=K4, bitmap_size=16, data=bm)
    assert bitmap_words(m, bm, 2) == [0xFF, 0b11 << 6]  # still all dirty
    # unmap with the bitmap of what is unmapped
    m.process.write(bm, bytes(16))
    n = c.vfio_iommu_unmap_dma(BASE + 3 * K4, 5 * K4, flags=iu.VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP, argsz=48,
                               bitmap=(K4, 8, bm))
    assert n == 5 * K4 and bitmap_words(m, bm, 1) == [0b11111]
    assert err(c.vfio_iommu_unmap_dma, BASE, 3 * K4, flags=iu.VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP,
               argsz=47, bitmap=(K4, 8, bm)) == errno.EINVAL  # no room for struct vfio_bitmap
    assert err(c.vfio_iommu_unmap_dma, BASE, 3 * K4, flags=iu.VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP,
               argsz=48, bitmap=(2 * K4, 8, bm)) == errno.EINVAL  # only the smallest page size


class Mdev(VfioDevice):
    """An emulated-IOMMU device (mdev-like): no IOMMU of its own, it pins pages and uses dma_rw, and
    drops its pins when told a range is being unmapped."""

    OPS = frozenset({"dma_unmap"})

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.pinned: list[int] = []
        self.unmaps: list[tuple[int, int]] = []

    def dma_unmap(self, iova: int, length: int) -> None:
        self.unmaps.append((iova, length))
        group = self.group
        for p in [p for p in self.pinned if iova <= p < iova + length]:
            group.container.unpin_pages(p, 1)
            self.pinned.remove(p)


def emulated(m: Machine, iommu_type: int = iu.VFIO_TYPE1v2_IOMMU) -> tuple[Mdev, VfioGroup, VfioGroupFile,
                                                                          VfioContainer]:
    """An emulated-IOMMU device in its own group, in a type1 container."""
    dev = Mdev("mdev0")
    dev.register()
    g = m.vfio.register_device(dev, VFIO_EMULATED_IOMMU)
    c = VfioContainer(m.process)
    gf = m.vfio.open(g, m.process)
    gf.set_container(c)
    c.vfio_set_iommu(iommu_type)
    return dev, g, gf, c


def test_emulated_group_dirty_scope_pins_and_dma_rw() -> None:
    """A container holding only an emulated group: dirty pages are exactly the pinned ones (they stay
    dirty while pinned) and those written with dma_rw (reported once); pinning needs v2 and a registered
    device; unmapping a pinned range asks the device to unpin first."""
    m = machine()
    dev, g, gf, c = emulated(m)
    assert c.vfio_check_extension(iu.VFIO_UPDATE_VADDR) == 0  # not with emulated groups
    va = m.process.mmap(16 * K4)
    c.vfio_iommu_map_dma(va, 0, 16 * K4)  # no IOMMU domain: any IOVA, nothing pinned yet
    assert m.process.pinned_pages == 0
    assert err(g.pin_pages, 0, 1, IOMMU_READ) == errno.EINVAL  # no device registered for dma_unmap
    f = gf.get_device_fd("mdev0")
    t1 = c.iommu_data
    assert isinstance(t1, VfioIommuType1) and t1.num_non_pinned_groups == 0
    c.dirty_start()
    frames = g.pin_pages(2 * K4, 2, IOMMU_READ | IOMMU_WRITE)
    dev.pinned += [2 * K4, 3 * K4]
    assert len(frames) == 2 and m.process.pinned_pages == 2 and Task.of(m.process).locked_vm == 2
    assert err(g.pin_pages, 20 * K4, 1, IOMMU_READ) == errno.EINVAL  # not mapped
    assert err(c.pin_pages, g, 0, 513, IOMMU_READ) == errno.E2BIG
    c.dma_rw(9 * K4 + 100, b"x" * K4, True)  # pages 9 and 10
    assert c.dma_rw(9 * K4 + 100, 3, False) == b"xxx" and m.process.read(va + 9 * K4 + 100, 1) == b"x"
    bm = m.process.mmap(K4)
    c.vfio_iommu_dirty_pages(GET, iova=0, size=16 * K4, pgsize=K4, bitmap_size=8, data=bm)
    assert bitmap_words(m, bm, 1) == [0b110_0000_1100]
    m.process.write(bm, bytes(8))
    c.vfio_iommu_dirty_pages(GET, iova=0, size=16 * K4, pgsize=K4, bitmap_size=8, data=bm)
    assert bitmap_words(m, bm, 1) == [0b1100]  # pinned pages stay dirty
    assert c.vfio_iommu_unmap_dma(0, 16 * K4) == 16 * K4
    assert dev.unmaps == [(0, 16 * K4)] and m.process.pinned_pages == 0 and Task.of(m.process).locked_vm == 0
    f.close()


def test_pin_pages_needs_v2() -> None:
    m = machine()
    _dev, g, gf, c = emulated(m, iu.VFIO_TYPE1_IOMMU)
    gf.get_device_fd("mdev0")
    va = m.process.mmap(K4)
    c.vfio_iommu_map_dma(va, 0, K4)
    assert err(g.pin_pages, 0, 1, IOMMU_READ) == errno.EACCES
    assert err(g.pin_pages, 0, 0, IOMMU_READ) == errno.EINVAL


def test_pinning_group_promotes_the_dirty_scope() -> None:
    """An IOMMU-backed group whose device pins pages declares its dirty scope: from then on only pinned
    pages are dirty (vfio_iommu_type1_pin_pages clears the group from num_non_pinned_groups)."""
    m, o, c, t1 = opened()
    dev = o.device.device
    dev.dma_unmap = lambda iova, length: None  # type: ignore[attr-defined]
    t1.register_device(dev)
    va = m.process.mmap(8 * K4)
    c.vfio_iommu_map_dma(va, BASE, 8 * K4)
    c.dirty_start()
    assert t1.num_non_pinned_groups == 1
    grp = o.group.group
    grp.pin_pages(BASE + 5 * K4, 1, IOMMU_READ)
    assert t1.num_non_pinned_groups == 0
    bm = m.process.mmap(K4)
    c.vfio_iommu_dirty_pages(GET, iova=BASE, size=8 * K4, pgsize=K4, bitmap_size=8, data=bm)
    assert bitmap_words(m, bm, 1) == [1 << 5]
    assert Task.of(m.process).locked_vm == 8  # pinned again but already charged with the mapping
    c.unpin_pages(BASE + 5 * K4, 1)
    assert m.process.pinned_pages == 8


def test_replay_after_emulated_reaccounts() -> None:
    """Mappings made while only an emulated group is present are pinned when an IOMMU-backed group
    arrives (replay), and unpinned again when it leaves while the emulated group stays (reaccount)."""
    m = machine()
    _dev, _ge, _gfe, c = emulated(m)
    gr = m.add_group("mock", ["d0"])
    va = m.process.mmap(4 * K4)
    m.process.write(va, b"late")
    c.vfio_iommu_map_dma(va, BASE, 4 * K4)
    assert m.process.pinned_pages == 0
    gfr: VfioGroupFile = m.vfio.open(gr, m.process)
    gfr.set_container(c)
    assert m.process.pinned_pages == 4 and Task.of(m.process).locked_vm == 4
    assert IommuDmaPort(m.devices["d0"].iommu_dev).dma_read(BASE, 4) == b"late"  # type: ignore[arg-type]
    gfr.unset_container()
    assert m.process.pinned_pages == 0 and Task.of(m.process).locked_vm == 0
    t1 = c.iommu_data
    assert isinstance(t1, VfioIommuType1) and len(t1.dmas) == 1 and not t1.domains
    assert np.array_equal(np.frombuffer(c.dma_rw(BASE, 4, False), np.uint8), np.frombuffer(b"late", np.uint8))


def test_get_info_never_writes_past_argsz() -> None:
    """ioctl_check_buf() of the iommufd selftest, applied to native type1: for every argsz from the
    minimum up, nothing past argsz is written; a short argsz comes back raised to the size needed and the
    chain appears (cap_offset 24) only when it fits."""
    _m, _o, c, _t1 = opened()
    need = c.vfio_iommu_get_info(24).argsz
    for argsz in range(16, need + 9):
        buf = bytearray(b"\xaa" * 4096)
        struct.pack_into("<I", buf, 0, argsz)
        c.ioctl(iu.VFIO_IOMMU_GET_INFO, buf)
        assert buf[argsz:] == b"\xaa" * (4096 - argsz), argsz
        got_argsz, _flags, _pgs, cap_offset = struct.unpack_from("<IIQI", buf)
        assert got_argsz == max(argsz, need)
        if argsz >= 24:
            assert cap_offset == (24 if argsz >= need else 0)
