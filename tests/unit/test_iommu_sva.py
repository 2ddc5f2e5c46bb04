"""Shared Virtual Addressing (drivers/iommu/iommu-sva.c): bind/unbind and the mm's PASID, DMA with
process virtual addresses through the CPU page table, device page faults handled like
iommu_sva_handle_mm(), and the mmu-notifier invalidation."""

from __future__ import annotations

import errno

import pytest

from vfiolab.errors import UapiError
from vfiolab.iommu.device import IommuDevice
from vfiolab.iommu.dma import DmaPort
from vfiolab.iommu.domain import IOMMU_DOMAIN_IDENTITY
from vfiolab.iommu.driver import make_unit
from vfiolab.iommu.fault import DmaFault, FaultReason
from vfiolab.iommu.group import iommu_probe_device
from vfiolab.iommu.pasid import PasidIda
from vfiolab.iommu.sva import Mm, SvaHandle, iommu_sva_bind_device, iommu_sva_unbind_device
from vfiolab.iommu.unit import IommuUnit
from vfiolab.memory.phys import PhysMemory
from vfiolab.memory.process import PROT_READ, UserProcess
from vfiolab.pci.caps.ats import AtsCap
from vfiolab.pci.caps.pasid import PasidCap
from vfiolab.pci.caps.pri import PriCap
from vfiolab.pci.function import RcIntegratedEndpoint


def device(unit: IommuUnit, rid: int, width: int = 20, pri: bool = True) -> IommuDevice:
    caps = [AtsCap(), PasidCap(width)] + ([PriCap(256, prg_pasid_required=True)] if pri else [])
    fn = RcIntegratedEndpoint(0x8086, rid, 0x120000, express={"ee_prefix": 1}, ext_caps=caps)
    dev = IommuDevice(f"sva{rid}", rid, pci=fn)
    iommu_probe_device(dev, unit, default_type=IOMMU_DOMAIN_IDENTITY)
    return dev


@pytest.fixture
def env() -> tuple[PhysMemory, IommuUnit, UserProcess, Mm]:
    mem = PhysMemory(1 << 27)
    unit = make_unit("intel", mem)
    proc = UserProcess(mem, name="app")
    return mem, unit, proc, Mm(proc, pasids=PasidIda())


def test_bind_dma_and_page_faults(env: tuple[PhysMemory, IommuUnit, UserProcess, Mm]) -> None:
    """A device reads and writes the process's memory by VA; missing CPU PTEs are faulted in through
    PRI and iommu_sva_handle_mm(), then the device retries."""
    _mem, unit, proc, mm = env
    dev = device(unit, 0x30)
    va = proc.mmap(1 << 20)
    proc.write(va + 0x100, b"from the cpu")
    h = iommu_sva_bind_device(dev, mm)
    assert h.pasid == 1 and mm.pasid == 1
    port = DmaPort(dev)
    assert port.dma_read(va + 0x100, 12, pasid=h.pasid) == b"from the cpu"
    port.dma_write(va + 0x7_0000, b"from the device", pasid=h.pasid)
    assert proc.read(va + 0x7_0000, 15) == b"from the device"
    assert dev.pri is not None and dev.pri.requests_sent == 2
    # the CPU page table now has both pages: no more page requests
    port.dma_read(va + 0x7_0000, 4, pasid=h.pasid)
    assert dev.pri.requests_sent == 2


def test_fault_on_unmapped_or_readonly(env: tuple[PhysMemory, IommuUnit, UserProcess, Mm]) -> None:
    """iommu_sva_handle_mm(): no VMA, or an access the VMA forbids, is IOMMU_PAGE_RESP_INVALID."""
    _mem, unit, proc, mm = env
    dev = device(unit, 0x31)
    ro = proc.mmap(0x4000, PROT_READ)
    h = iommu_sva_bind_device(dev, mm)
    port = DmaPort(dev)
    with pytest.raises(DmaFault) as err:
        port.dma_read(0x1000_0000, 4, pasid=h.pasid)
    assert err.value.record.reason == FaultReason.PRI_INVALID
    assert port.dma_read(ro, 4, pasid=h.pasid) == b"\0" * 4
    with pytest.raises(DmaFault) as err:
        port.dma_write(ro, b"no", pasid=h.pasid)
    assert err.value.record.reason == FaultReason.PRI_INVALID


def test_populate_avoids_faults_and_no_pri_device_faults(env: tuple[PhysMemory, IommuUnit, UserProcess, Mm]
                                                         ) -> None:
    """Without PRI a missing PTE is an unrecoverable fault; pages already in the CPU table translate."""
    _mem, unit, proc, mm = env
    dev = device(unit, 0x32, pri=False)
    va = proc.mmap(0x8000)
    proc.write(va, b"resident")
    h = iommu_sva_bind_device(dev, mm)
    port = DmaPort(dev)
    with pytest.raises(DmaFault) as err:
        port.dma_read(va, 8, pasid=h.pasid)
    assert err.value.record.reason == FaultReason.NOT_PRESENT
    assert mm.populate() == 1
    assert port.dma_read(va, 8, pasid=h.pasid) == b"resident"


def test_bind_reuses_bond_and_domain(env: tuple[PhysMemory, IommuUnit, UserProcess, Mm]) -> None:
    mem, unit, _proc, mm = env
    a, b = device(unit, 0x33), device(unit, 0x34)
    h1 = iommu_sva_bind_device(a, mm)
    assert iommu_sva_bind_device(a, mm) is h1 and h1.users == 2
    h2 = iommu_sva_bind_device(b, mm)
    assert h2.domain is h1.domain and len(mm.sva_domains) == 1 and h2.pasid == h1.pasid
    other = Mm(UserProcess(mem), pasids=mm.ida)
    h3 = iommu_sva_bind_device(a, other)
    assert h3.pasid == 2 and h3.domain is not h1.domain
    iommu_sva_unbind_device(h1)
    iommu_sva_unbind_device(h1)
    assert a.group is not None and h1.pasid not in a.group.pasid_array
    iommu_sva_unbind_device(h2)
    assert not mm.sva_domains


def test_pasid_beyond_device_width(env: tuple[PhysMemory, IommuUnit, UserProcess, Mm]) -> None:
    """iommu_alloc_mm_data(): the mm's PASID must fit the device (EOVERFLOW)."""
    _mem, unit, _proc, mm = env
    wide, narrow = device(unit, 0x35), device(unit, 0x36, width=1)
    ida = mm.ida
    for _ in range(3):
        ida.alloc(1 << 20)  # PASIDs 1..3 taken by others
    iommu_sva_bind_device(wide, mm)
    assert mm.pasid == 4
    with pytest.raises(UapiError) as err:
        iommu_sva_bind_device(narrow, mm)
    assert err.value.errno == errno.EOVERFLOW


def test_mmu_notifier_invalidates_device_caches(env: tuple[PhysMemory, IommuUnit, UserProcess, Mm]) -> None:
    """After munmap the CPU PTEs go and IOTLB/ATC are flushed: the device faults instead of reaching
    freed memory."""
    _mem, unit, proc, mm = env
    dev = device(unit, 0x37)
    va = proc.mmap(0x4000)
    h: SvaHandle = iommu_sva_bind_device(dev, mm)
    port = DmaPort(dev)
    port.dma_write(va, b"gone soon", pasid=h.pasid)
    proc.munmap(va, 0x4000)
    mm.invalidate_range(va, va + 0x4000)
    with pytest.raises(DmaFault) as err:
        port.dma_read(va, 4, pasid=h.pasid)
    assert err.value.record.reason == FaultReason.PRI_INVALID


def test_sva_needs_unit_support() -> None:
    mem = PhysMemory(1 << 24)
    unit = make_unit("intel", mem, sva=False)
    dev = device(unit, 0x38)
    with pytest.raises(UapiError) as err:
        iommu_sva_bind_device(dev, Mm(UserProcess(mem), pasids=PasidIda()))
    assert err.value.errno == errno.EOPNOTSUPP


def test_invalidate_range_drops_only_that_range(env: tuple[PhysMemory, IommuUnit, UserProcess, Mm]) -> None:
    _mem, unit, proc, mm = env
    dev = device(unit, 0x39, pri=False)
    va = proc.mmap(0x10000)
    proc.write(va, b"a" * 0x10000)
    h = iommu_sva_bind_device(dev, mm)
    assert mm.populate() == 16
    port = DmaPort(dev)
    assert port.dma_read(va, 0x10000, pasid=h.pasid) == b"a" * 0x10000
    mm.invalidate_range(va + 0x4000, va + 0x8000)
    assert port.dma_read(va, 0x4000, pasid=h.pasid) == b"a" * 0x4000
    assert port.dma_read(va + 0x8000, 0x8000, pasid=h.pasid) == b"a" * 0x8000
    with pytest.raises(DmaFault) as err:
        port.dma_read(va + 0x5000, 1, pasid=h.pasid)
    assert err.value.record.reason == FaultReason.NOT_PRESENT
