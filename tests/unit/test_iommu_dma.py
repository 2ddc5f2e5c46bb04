"""The DMA path: IOTLB and ATC behaviour around unmap (stale entries without invalidation, the
kernel's iotlb_sync with it), dirty tracking through hardware A/D, fault logging, zero-copy buffers."""

from __future__ import annotations

import errno

import numpy as np
import pytest

from vfiolab.errors import UapiError, VfiolabError
from vfiolab.iommu import pcie_ats
from vfiolab.iommu.device import IommuDevice
from vfiolab.iommu.dma import DmaPort
from vfiolab.iommu.domain import IOMMU_DOMAIN_IDENTITY, IOMMU_HWPT_ALLOC_DIRTY_TRACKING, PagingDomain
from vfiolab.iommu.driver import make_unit
from vfiolab.iommu.fault import DmaFault, FaultReason
from vfiolab.iommu.group import (
    IommuGroup,
    iommu_attach_group,
    iommu_group_claim_dma_owner,
    iommu_probe_device,
)
from vfiolab.iommu.pagetable import IOMMU_READ, IOMMU_WRITE
from vfiolab.iommu.unit import IommuUnit
from vfiolab.memory.phys import PhysMemory
from vfiolab.pci.caps.ats import AtsCap
from vfiolab.pci.function import RcIntegratedEndpoint

RW = IOMMU_READ | IOMMU_WRITE
IOVA = 0x10_0000


def rig(kind: str = "intel", flags: int = 0, ats_dev: bool = False, **caps: object
        ) -> tuple[IommuUnit, IommuDevice, PagingDomain, DmaPort, PhysMemory]:
    mem = PhysMemory(1 << 27)
    unit = make_unit(kind, mem, **caps)
    fn = RcIntegratedEndpoint(0x8086, 0x10, 0x020000, ext_caps=[AtsCap()]) if ats_dev else None
    dev = IommuDevice("dev", 0x18, pci=fn)
    g = iommu_probe_device(dev, unit, IommuGroup(), default_type=IOMMU_DOMAIN_IDENTITY)
    iommu_group_claim_dma_owner(g, "test")
    dom = unit.driver.domain_alloc_paging_flags(dev, flags)
    iommu_attach_group(dom, g)
    return unit, dev, dom, DmaPort(dev), mem


def page(mem: PhysMemory, fill: bytes) -> int:
    pa = int(mem.alloc_frames(1)[0]) << 12
    mem.write(pa, fill * (4096 // len(fill)))
    return pa


# ---------------------------------------------------------------------- IOTLB
def test_stale_iotlb_after_raw_unmap() -> None:
    """A raw page-table unmap does no invalidation: the cached translation still hits (hardware)."""
    unit, _, dom, port, mem = rig()
    old = page(mem, b"O")
    dom.map(IOVA, old, 0x1000, RW)
    assert port.dma_read(IOVA, 2) == b"OO"
    dom.pt.unmap(IOVA, 0x1000)
    assert dom.iova_to_phys(IOVA) == 0
    assert port.dma_read(IOVA, 2) == b"OO"  # stale
    dom.map(IOVA, page(mem, b"N"), 0x1000, RW)
    assert port.dma_read(IOVA, 2) == b"OO"  # still the old page: remap without invalidation
    unit.iotlb_flush_all()
    assert port.dma_read(IOVA, 2) == b"NN"


def test_domain_unmap_invalidates() -> None:
    """iommu_unmap(): gather + iotlb_sync (cache_tag_flush_range) removes the translation."""
    unit, _, dom, port, mem = rig()
    dom.map(IOVA, page(mem, b"x"), 0x1000, RW)
    port.dma_read(IOVA, 1)
    assert dom.unmap(IOVA, 0x1000) == 0x1000
    with pytest.raises(DmaFault) as err:
        port.dma_read(IOVA, 1)
    rec = err.value.record
    assert (rec.reason, rec.iova, rec.rid, rec.pasid) == (FaultReason.NOT_PRESENT, IOVA, 0x18, None)
    assert unit.faults.drain() == [rec]


def test_psi_invalidates_the_aligned_block() -> None:
    """Page-selective invalidation covers one aligned power-of-two block: a raw-unmapped neighbour
    inside the block is flushed too, one outside it stays stale."""
    _unit, _, dom, port, mem = rig()
    pas = [page(mem, bytes([65 + i])) for i in range(4)]
    for i, pa in enumerate(pas):
        dom.map(IOVA + i * 0x1000, pa, 0x1000, RW)
        port.dma_read(IOVA + i * 0x1000, 1)
    dom.pt.unmap(IOVA + 0x3000, 0x1000)          # raw: no flush (block [0x10_0000, +0x4000) later)
    dom.pt.unmap(IOVA + 0x0000, 0x1000)
    dom.unmap(IOVA + 0x1000, 0x2000)              # [0x101000, 0x102fff] -> block [0x100000, 0x104000)
    for i in range(4):
        with pytest.raises(DmaFault):
            port.dma_read(IOVA + i * 0x1000, 1)
    _unit2, _, dom2, port2, mem2 = rig()
    a, b = page(mem2, b"a"), page(mem2, b"b")
    dom2.map(IOVA, a, 0x1000, RW)
    dom2.map(IOVA + 0x4000, b, 0x1000, RW)
    port2.dma_read(IOVA, 1)
    port2.dma_read(IOVA + 0x4000, 1)
    dom2.pt.unmap(IOVA + 0x4000, 0x1000)          # raw, outside the next flush's block
    dom2.unmap(IOVA, 0x1000)
    assert port2.dma_read(IOVA + 0x4000, 1) == b"b"


def test_cached_permission_outlives_upgrade() -> None:
    """Upgrading RO to RW in the table without invalidation: the IOTLB's RO entry still faults writes."""
    _unit, _, dom, port, mem = rig()
    pa = page(mem, b"r")
    dom.map(IOVA, pa, 0x1000, IOMMU_READ)
    port.dma_read(IOVA, 1)
    dom.pt.unmap(IOVA, 0x1000)
    dom.map(IOVA, pa, 0x1000, RW)
    with pytest.raises(DmaFault) as err:
        port.dma_write(IOVA, b"w")
    assert err.value.record.reason == FaultReason.PERMISSION
    dom.flush_iotlb_all()
    port.dma_write(IOVA, b"w")
    assert mem.read(pa, 1) == b"w"


def test_iotlb_statistics_and_coalescing() -> None:
    """4 KiB leaves over contiguous memory: one fill per 2 MiB span, then hits."""
    unit, _, dom, port, mem = rig()
    dom.pt.pgsize_bitmap = 1 << 12
    frames = mem.alloc_frames(1024, contiguous=True)
    dom.map(0x4000_0000, int(frames[0]) << 12, 4 << 20, RW)
    buf = np.empty(1 << 16, dtype=np.uint8)
    for off in range(0, 4 << 20, 1 << 16):
        port.dma_read_into(0x4000_0000 + off, buf)
    s = unit.iotlb.stats
    assert (s.fills, s.misses, s.hits) == (2, 2, 62)


def test_small_iotlb_evicts() -> None:
    unit, _, dom, port, mem = rig(iotlb_entries=2, iotlb_ways=1)
    for i in range(4):
        dom.map(IOVA + i * (2 << 20), page(mem, b"e"), 0x1000, RW)
        port.dma_read(IOVA + i * (2 << 20), 1)
    assert unit.iotlb.stats.evictions >= 2 and len(unit.iotlb) <= 2


# ---------------------------------------------------------------------- ATC
def test_stale_atc_needs_device_tlb_invalidation() -> None:
    """With ATS, the device's ATC caches the translation: flushing only the IOTLB is not enough."""
    unit, dev, dom, port, mem = rig(ats_dev=True)
    assert dev.ats_enabled and dev.atc is not None
    dom.map(IOVA, page(mem, b"A"), 0x1000, RW)
    assert port.dma_read(IOVA, 1) == b"A"
    dom.pt.unmap(IOVA, 0x1000)
    unit.iotlb_flush_all()
    assert port.dma_read(IOVA, 1) == b"A"  # the ATC still translates
    before = unit.ats_invalidations
    dom.map(IOVA, page(mem, b"B"), 0x1000, RW)
    dom.unmap(IOVA, 0x1000)  # cache tags: IOTLB + DEVTLB
    assert unit.ats_invalidations == before + 1
    with pytest.raises(DmaFault):
        port.dma_read(IOVA, 1)


def test_ats_to_unit_without_ats() -> None:
    """A function with ATS enabled behind an IOMMU without ATS: Unsupported Request."""
    _unit, dev, dom, port, mem = rig(ats_dev=True, ats=False)
    assert dev.pci is not None and not dev.ats_enabled  # the driver did not enable it
    pcie_ats.enable_ats(dev.pci, 12)                   # someone else did
    dom.map(IOVA, page(mem, b"u"), 0x1000, RW)
    with pytest.raises(DmaFault) as err:
        port.dma_read(IOVA, 1)
    assert err.value.record.reason == FaultReason.ATS_DISABLED


# ---------------------------------------------------------------------- dirty tracking
@pytest.mark.parametrize("kind", ["intel", "amd", "arm-smmu-v3", "mock"])
def test_dma_write_sets_dirty_bits(kind: str) -> None:
    """Hardware dirty tracking: writes set D in the leaves (Arm HTTU: clear AP[2] of a DBM leaf), reads
    do not; read_and_clear_dirty clears and flushes so the next write marks again (io_pagetable.c
    iommu_read_and_clear_dirty).  Enabling starts from a cleared table, as iopt_set_dirty_tracking()
    does (a fresh writable Arm DBM leaf reads dirty)."""
    _unit, _, dom, port, mem = rig(kind, IOMMU_HWPT_ALLOC_DIRTY_TRACKING)
    dom.pt.pgsize_bitmap &= -dom.pt.pgsize_bitmap  # single-page leaves (see the contiguous case below)
    base = dom.aperture[0] + IOVA
    frames = mem.alloc_frames(8, contiguous=True)
    dom.map(base, int(frames[0]) << 12, 0x8000, RW)
    port.dma_write(base + 0x1000, b"before tracking")
    dom.set_dirty_tracking(True)
    dom.read_and_clear_dirty(base, 0x8000)
    port.dma_read(base, 0x8000)
    port.dma_write(base + 0x2000, b"x" * 0x1800)  # pages 2 and 3
    pages = dom.read_and_clear_dirty(base, 0x8000, page_size=0x1000)
    assert list(np.flatnonzero(pages)) == [2, 3]
    assert not dom.read_and_clear_dirty(base, 0x8000, page_size=0x1000).any()
    port.dma_write(base + 0x2000, b"again")
    assert list(np.flatnonzero(dom.read_and_clear_dirty(base, 0x8000, page_size=0x1000))) == [2]


def test_amd_contiguous_leaf_dirty_report() -> None:
    """AMD v1 maps 32 KiB of aligned memory as one contiguous (NextLevel 7) leaf; one write makes the
    whole leaf dirty, and record_dirty() (generic_pt/iommu_pt.h) reports it one item short."""
    _unit, _, dom, port, mem = rig("amd", IOMMU_HWPT_ALLOC_DIRTY_TRACKING)
    frames = mem.alloc_frames(8, contiguous=True, align=8)
    dom.map(IOVA, int(frames[0]) << 12, 0x8000, RW)
    assert dom.pt.pte(IOVA + 0x5000)[1] == dom.pt.pte(IOVA)[1]  # the same replicated entry
    dom.set_dirty_tracking(True)
    port.dma_write(IOVA + 0x5000, b"w")
    assert list(np.flatnonzero(dom.read_and_clear_dirty(IOVA, 0x8000, page_size=0x1000))) == list(range(7))


def test_dirty_tracking_requires_dirty_domain() -> None:
    _unit, _, dom, _port, _mem = rig()
    with pytest.raises(UapiError) as err:
        dom.set_dirty_tracking(True)
    assert err.value.errno == errno.EINVAL
    with pytest.raises(UapiError) as err:
        dom.read_and_clear_dirty(0, 0x1000)
    assert err.value.errno == errno.EOPNOTSUPP


# ---------------------------------------------------------------------- faults and buffers
def test_fault_queue_overflow_and_listener() -> None:
    unit, _, dom, port, _mem = rig(fault_queue_depth=2)
    seen: list[int] = []
    dom.fault_handler = lambda d, dev, iova, perm: seen.append(iova)
    for i in range(3):
        with pytest.raises(DmaFault):
            port.dma_write(i * 0x1000, b"z")
    assert len(unit.faults) == 2 and unit.faults.overflowed == 1 and seen == [0, 0x1000, 0x2000]


def test_burst_that_faults_moves_nothing() -> None:
    _unit, _, dom, port, mem = rig()
    pa = page(mem, b"\0")
    dom.map(IOVA, pa, 0x1000, RW)
    with pytest.raises(DmaFault) as err:
        port.dma_write(IOVA + 0xFF0, b"y" * 0x20)
    assert err.value.record.iova == IOVA + 0x1000
    assert mem.read(pa + 0xFF0, 0x10) == b"\0" * 0x10


def test_scattered_pages_and_zero_copy_buffers() -> None:
    """A burst over physically scattered pages; *_into / *_from with numpy buffers of any dtype."""
    _unit, _, dom, port, mem = rig()
    pas = [page(mem, bytes([i])) for i in range(1, 4)]
    for i, pa in enumerate(pas[::-1]):
        dom.map(IOVA + i * 0x1000, pa, 0x1000, RW)
    out = np.zeros((3, 1024), dtype=np.uint32)
    port.dma_read_into(IOVA, out)
    assert out.view(np.uint8).reshape(3, 4096)[:, 0].tolist() == [3, 2, 1]
    src = np.arange(3 * 4096, dtype=np.uint8)
    port.dma_write_from(IOVA, src)
    assert mem.read(pas[2], 4) == bytes(range(4)) and mem.read(pas[0], 1) == bytes([src[8192]])
    with pytest.raises(VfiolabError):
        port.dma_read_into(IOVA, np.zeros(8192, dtype=np.uint8)[::2])
    ro = np.zeros(16, dtype=np.uint8)
    ro.flags.writeable = False
    with pytest.raises(VfiolabError):
        port.dma_read_into(IOVA, ro)
    assert port.dma_read(IOVA, 0) == b""


def test_identity_and_translation_disabled() -> None:
    mem = PhysMemory(1 << 24)
    unit = make_unit("intel", mem)
    dev = IommuDevice("d", 0x20)
    iommu_probe_device(dev, unit, default_type=IOMMU_DOMAIN_IDENTITY)
    port = DmaPort(dev)
    mem.write(0x5000, b"pt")
    assert port.dma_read(0x5000, 2) == b"pt"
    with pytest.raises(DmaFault) as err:
        port.dma_read(mem.size - 1, 2)
    assert err.value.record.reason == FaultReason.BAD_PA
    unit.translation_enabled = False
    assert port.dma_read(0x5000, 2) == b"pt"


def test_domain_and_pasid_selective_flushes() -> None:
    """DSI drops every PASID of a domain ID; PASID-selective drops one (did, pasid) only."""
    mem = PhysMemory(1 << 26)
    unit = make_unit("mock", mem)
    dev = IommuDevice("m", 0x8, pasid_num_bits=8)
    g = iommu_probe_device(dev, unit)
    dom = unit.driver.domain_alloc_paging(dev)
    pa = page(mem, b"p")
    dom.map(1 << 24, pa, 0x1000, RW)
    iommu_attach_group(dom, g)
    from vfiolab.iommu.group import iommu_attach_device_pasid
    iommu_attach_device_pasid(dom, dev, 3)
    port = DmaPort(dev)
    port.dma_read(1 << 24, 1)
    port.dma_read(1 << 24, 1, pasid=3)
    did = unit.domain_id(dom)
    dom.pt.unmap(1 << 24, 0x1000)  # raw: both tags stale now
    unit.iotlb_flush_pasid(did, 3)
    assert port.dma_read(1 << 24, 1) == b"p"
    with pytest.raises(DmaFault):
        port.dma_read(1 << 24, 1, pasid=3)
    unit.iotlb_flush_domain(did)
    with pytest.raises(DmaFault):
        port.dma_read(1 << 24, 1)


def test_ats_global_invalidate() -> None:
    """Global Invalidate only for functions that advertise it."""
    unit, dev, dom, port, mem = rig(ats_dev=True)
    dom.map(IOVA, page(mem, b"g"), 0x1000, RW)
    port.dma_read(IOVA, 1)
    with pytest.raises(VfiolabError):
        unit.devtlb_invalidate_all(dev)
    mem2 = PhysMemory(1 << 24)
    unit2 = make_unit("intel", mem2)
    fn = RcIntegratedEndpoint(0x8086, 0x11, 0x020000, ext_caps=[AtsCap(global_invalidate=True)])
    dev2 = IommuDevice("g", 0x19, pci=fn)
    iommu_probe_device(dev2, unit2, default_type=IOMMU_DOMAIN_IDENTITY)
    DmaPort(dev2).dma_read(0x3000, 4)
    assert dev2.atc is not None and len(dev2.atc) == 1
    unit2.devtlb_invalidate_all(dev2)
    assert len(dev2.atc) == 0 and unit2.ats_invalidations == 1


def test_enforce_cache_coherency_per_vendor() -> None:
    """enforce_cache_coherency(): VT-d second stage sets SNP in later PTEs (snoop control units only),
    AMD always (FC set), the mock has no such op."""
    _unit, _dev, dom, _port, mem = rig("intel", IOMMU_HWPT_ALLOC_DIRTY_TRACKING)
    assert dom.fmt.name == "vtdss" and dom.enforce_cache_coherency() is True
    dom.map(IOVA, page(mem, b"s"), 0x1000, RW)
    from vfiolab.iommu.pagetable.vtdss import SNP
    assert dom.pt.pte(IOVA)[1] & SNP
    _unit2, _, dom2, _, _ = rig("intel", extra={"enforce_coherency": False})
    assert dom2.enforce_cache_coherency() is False
    assert rig("amd")[2].enforce_cache_coherency() is True
    assert rig("mock")[2].enforce_cache_coherency() is None
