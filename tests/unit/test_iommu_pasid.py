"""PASID attachments (drivers/iommu/iommu.c iommu_attach_device_pasid / iommu_replace_device_pasid /
iommu_detach_device_pasid), the mock's PASID-1024 rollback trap (iommufd/selftest.c), max_pasids and
DMA with a PASID prefix."""

from __future__ import annotations

import errno

import pytest

from vfiolab.errors import UapiError, VfiolabError
from vfiolab.iommu.device import IommuDevice
from vfiolab.iommu.dma import DmaPort
from vfiolab.iommu.domain import IOMMU_HWPT_ALLOC_PASID, PagingDomain
from vfiolab.iommu.driver import make_unit
from vfiolab.iommu.fault import DmaFault, FaultReason
from vfiolab.iommu.group import (
    IommuGroup,
    iommu_attach_device_pasid,
    iommu_attach_group,
    iommu_detach_device_pasid,
    iommu_probe_device,
    iommu_replace_device_pasid,
)
from vfiolab.iommu.pagetable import IOMMU_READ, IOMMU_WRITE
from vfiolab.iommu.pasid import IOMMU_PASID_INVALID, PasidIda, max_pasids
from vfiolab.iommu.unit import IommuUnit
from vfiolab.memory.phys import PhysMemory

RW = IOMMU_READ | IOMMU_WRITE


def mock(bits: int | None = 20, **caps: int) -> tuple[IommuUnit, IommuDevice, PhysMemory]:
    mem = PhysMemory(1 << 27)
    unit = make_unit("mock", mem, **caps)
    dev = IommuDevice("mock0", 0x10, pasid_num_bits=bits)
    iommu_probe_device(dev, unit)
    return unit, dev, mem


def paging(unit: IommuUnit, dev: IommuDevice) -> PagingDomain:
    return unit.driver.domain_alloc_paging_flags(dev, IOMMU_HWPT_ALLOC_PASID)


def test_max_pasids_rules() -> None:
    """dev_iommu_get_max_pasids(): min(device, unit); "pasid-num-bits" 0 gives 1 (only the RID)."""
    assert max_pasids(20, 20) == 1 << 20 and max_pasids(5, 20) == 32 and max_pasids(0, 20) == 0
    assert max_pasids(20, 0) == 0
    assert mock(0)[1].max_pasids == 1
    assert mock(8)[1].max_pasids == 256
    assert mock(20, pasid_bits=4)[1].max_pasids == 16


def test_attach_replace_detach_rules() -> None:
    unit, dev, _ = mock()
    d1, d2 = paging(unit, dev), paging(unit, dev)
    iommu_detach_device_pasid(d1, dev, 3)  # detaching an unattached PASID is no error
    with pytest.raises(UapiError) as err:
        iommu_attach_device_pasid(d1, dev, 0)  # IOMMU_NO_PASID
    assert err.value.errno == errno.EINVAL
    with pytest.raises(UapiError) as err:
        iommu_attach_device_pasid(d1, dev, 1 << 20)
    assert err.value.errno == errno.EINVAL
    iommu_attach_device_pasid(d1, dev, 3, "h1")
    with pytest.raises(UapiError) as err:
        iommu_attach_device_pasid(d2, dev, 3)
    assert err.value.errno == errno.EBUSY
    with pytest.raises(UapiError) as err:
        iommu_replace_device_pasid(d2, dev, 4, "h2")  # nothing attached there
    assert err.value.errno == errno.EINVAL
    with pytest.raises(UapiError) as err:
        iommu_replace_device_pasid(d2, dev, 3, "h1")  # the same handle again
    assert err.value.errno == errno.EINVAL
    iommu_replace_device_pasid(d2, dev, 3, "h2")
    assert dev.group is not None and dev.group.pasid_array[3].domain is d2
    ctx = unit.context(dev.rid, 3)
    assert ctx is not None and ctx.domain is d2
    iommu_detach_device_pasid(d2, dev, 3)
    assert unit.context(dev.rid, 3) is None and 3 not in dev.group.pasid_array


def test_pasid_1024_replace_rolls_back() -> None:
    """selftest pasid_attach: every second non-blocking set_dev_pasid on PASID 1024 fails with ENOMEM;
    replace keeps the old domain attached."""
    unit, dev, _ = mock()
    d1, d2 = paging(unit, dev), paging(unit, dev)
    iommu_attach_device_pasid(d1, dev, 1024, "a")
    with pytest.raises(UapiError) as err:
        iommu_replace_device_pasid(d2, dev, 1024, "b")
    assert err.value.errno == errno.ENOMEM
    assert dev.group is not None and dev.group.pasid_array[1024].domain is d1
    ctx = unit.context(dev.rid, 1024)
    assert ctx is not None and ctx.domain is d1
    iommu_replace_device_pasid(d2, dev, 1024, "c")  # the third call succeeds
    assert dev.group.pasid_array[1024].domain is d2


def test_unit_without_pasid_support() -> None:
    """RISC-V has no set_dev_pasid: EOPNOTSUPP."""
    mem = PhysMemory(1 << 24)
    unit = make_unit("riscv", mem)
    dev = IommuDevice("r", 0x8)
    iommu_probe_device(dev, unit)
    with pytest.raises(UapiError) as err:
        iommu_attach_device_pasid(unit.driver.domain_alloc_paging(dev), dev, 1)
    assert err.value.errno == errno.EOPNOTSUPP


def test_identity_on_pasid_only_where_supported() -> None:
    mem = PhysMemory(1 << 24)
    intel = make_unit("intel", mem)
    dev = IommuDevice("i", 0x8, pasid_num_bits=8)
    iommu_probe_device(dev, intel)
    assert intel.driver.identity_domain is not None
    iommu_attach_device_pasid(intel.driver.identity_domain, dev, 2)
    amd = make_unit("amd", mem)
    dev2 = IommuDevice("a", 0x9, pasid_num_bits=8)
    iommu_probe_device(dev2, amd)
    with pytest.raises(UapiError) as err:
        iommu_attach_device_pasid(amd.driver.identity_domain, dev2, 2)  # type: ignore[arg-type]
    assert err.value.errno == errno.EOPNOTSUPP


def test_dma_with_pasid_uses_pasid_domain() -> None:
    """Requests with a PASID prefix translate through group->pasid_array[pasid], without through the
    RID domain."""
    unit, dev, mem = mock()
    rid_dom, pasid_dom = paging(unit, dev), paging(unit, dev)
    a, b = (int(mem.alloc_frames(1)[0]) << 12 for _ in range(2))
    rid_dom.map(1 << 24, a, 0x1000, RW)
    pasid_dom.map(1 << 24, b, 0x1000, RW)
    assert dev.group is not None
    iommu_attach_group(rid_dom, dev.group)
    iommu_attach_device_pasid(pasid_dom, dev, 9)
    port = DmaPort(dev)
    port.dma_write(1 << 24, b"rid")
    port.dma_write(1 << 24, b"pasid", pasid=9)
    assert mem.read(a, 3) == b"rid" and mem.read(b, 5) == b"pasid"
    with pytest.raises(DmaFault) as err:
        port.dma_read(1 << 24, 1, pasid=10)
    assert err.value.record.reason == FaultReason.BLOCKED and err.value.record.pasid == 10
    with pytest.raises(VfiolabError):
        port.dma_read(1 << 24, 1, pasid=1 << 20)


def test_pasid_beyond_unit_width_faults() -> None:
    _unit, dev, _ = mock(20, pasid_bits=4)
    with pytest.raises(DmaFault) as err:
        DmaPort(dev).dma_read(0, 4, pasid=20)
    assert err.value.record.reason == FaultReason.PASID


def test_device_without_pasid_cannot_send_prefix() -> None:
    unit, dev, _ = mock(None)
    assert dev.max_pasids == 0 and not dev.pasid_enabled
    with pytest.raises(DmaFault) as err:
        DmaPort(dev).dma_read(0, 4, pasid=1)
    assert err.value.record.reason == FaultReason.PASID
    assert unit.faults.pop() == err.value.record


def test_group_pasid_skips_devices_without_pasid() -> None:
    """__iommu_set_group_pasid(): devices with max_pasids 0 are not programmed."""
    mem = PhysMemory(1 << 24)
    unit = make_unit("mock", mem)
    g = IommuGroup()
    p, n = IommuDevice("p", 1, pasid_num_bits=8), IommuDevice("n", 2)
    iommu_probe_device(p, unit, g)
    iommu_probe_device(n, unit, g)
    iommu_attach_device_pasid(paging(unit, p), p, 7)
    assert unit.context(p.rid, 7) is not None and unit.context(n.rid, 7) is None


def test_global_pasid_ida() -> None:
    """iommu_alloc_global_pasid(): lowest free in [1, max_pasids - 1]."""
    ida = PasidIda()
    assert [ida.alloc(4) for _ in range(4)] == [1, 2, 3, IOMMU_PASID_INVALID]
    ida.free(2)
    assert ida.alloc(4) == 2
    assert ida.alloc(0) == IOMMU_PASID_INVALID
    with pytest.raises(UapiError):
        ida.free(99)
