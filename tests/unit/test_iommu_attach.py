"""Domain allocation and attach rules: drivers/iommu/iommu.c (group->domain, transactional set_domain,
ownership), the vendor drivers' allocation and compatibility checks (intel/iommu.c, amd/iommu.c,
arm-smmu-v3.c, riscv/iommu.c, iommufd/selftest.c)."""

from __future__ import annotations

import errno
from typing import Any

import pytest

from vfiolab.errors import UapiError
from vfiolab.iommu.device import IommuDevice
from vfiolab.iommu.dma import DmaPort
from vfiolab.iommu.domain import (
    IOMMU_DOMAIN_BLOCKED,
    IOMMU_DOMAIN_IDENTITY,
    IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
    IOMMU_HWPT_ALLOC_NEST_PARENT,
    IOMMU_HWPT_ALLOC_PASID,
    IommuDomain,
    PagingDomain,
)
from vfiolab.iommu.driver import (
    MOCK_APERTURE_LAST,
    MOCK_APERTURE_START,
    MOCK_HUGE_PAGE_SIZE,
    MOCK_IOMMUPT_HUGE,
    make_unit,
)
from vfiolab.iommu.fault import DmaFault, FaultReason
from vfiolab.iommu.group import (
    IommuGroup,
    iommu_attach_device,
    iommu_attach_device_pasid,
    iommu_attach_group,
    iommu_attach_group_handle,
    iommu_detach_group,
    iommu_device_claim_dma_owner,
    iommu_device_release_dma_owner,
    iommu_group_claim_dma_owner,
    iommu_group_release_dma_owner,
    iommu_probe_device,
    iommu_replace_group_handle,
)
from vfiolab.iommu.pagetable import IOMMU_READ, IOMMU_WRITE
from vfiolab.iommu.unit import IommuUnit
from vfiolab.memory.phys import PhysMemory

RW = IOMMU_READ | IOMMU_WRITE


@pytest.fixture
def mem() -> PhysMemory:
    return PhysMemory(1 << 28)


def setup(mem: PhysMemory, kind: str = "intel", n: int = 1, default: int | None = IOMMU_DOMAIN_IDENTITY,
          **caps: Any) -> tuple[IommuUnit, IommuGroup, list[IommuDevice]]:
    unit = make_unit(kind, mem, **caps)
    group = IommuGroup()
    devs = [IommuDevice(f"d{i}", 0x100 + i, pasid_num_bits=20 if kind == "mock" else None) for i in range(n)]
    for d in devs:
        iommu_probe_device(d, unit, group, default_type=default)
    return unit, group, devs


def buf(mem: PhysMemory, pages: int = 1) -> int:
    return int(mem.alloc_frames(pages, contiguous=True)[0]) << 12


def programmed(unit: IommuUnit) -> list[IommuDomain]:
    """Spy on the unit: every domain written into a context entry, in order."""
    log: list[IommuDomain] = []
    orig = unit.set_context

    def spy(dev: IommuDevice, pasid: int, domain: IommuDomain) -> Any:
        log.append(domain)
        return orig(dev, pasid, domain)

    unit.set_context = spy  # type: ignore[method-assign]
    return log


# ---------------------------------------------------------------------- static domains
def test_static_domains_always_attach(mem: PhysMemory) -> None:
    """ops->blocked_domain / identity_domain: always attachable (include/linux/iommu.h kdoc)."""
    unit, g, (d,) = setup(mem, default=IOMMU_DOMAIN_BLOCKED, dirty=False, nesting=False)
    port = DmaPort(d)
    with pytest.raises(DmaFault) as err:
        port.dma_read(0x1000, 4)
    assert err.value.record.reason == FaultReason.BLOCKED
    pa = buf(mem)
    mem.write(pa, b"phys")
    iommu_group_claim_dma_owner(g, "owner")
    iommu_attach_group(unit.driver.identity_domain, g)
    assert port.dma_read(pa, 4) == b"phys"  # identity: IOVA == PA
    iommu_detach_group(unit.driver.identity_domain, g)
    assert g.domain is unit.driver.blocked_domain


def test_default_domain_types(mem: PhysMemory) -> None:
    """Default domain: DMA paging (intel default), identity on request, the mock's blocking domain."""
    _unit, g, _ = setup(mem, default=None)
    assert isinstance(g.default_domain, PagingDomain) and g.default_domain.name == "dma"
    _, g2, _ = setup(mem, "mock", default=None)
    assert g2.default_domain is g2.devices[0].unit.driver.blocked_domain  # type: ignore[union-attr]


def test_paging_domain_populated_before_attach(mem: PhysMemory) -> None:
    unit, g, (d,) = setup(mem)
    dom = unit.driver.domain_alloc_paging(d)
    pa = buf(mem)
    dom.map(0x40000, pa, 0x1000, RW)
    mem.write(pa, b"early")
    iommu_group_claim_dma_owner(g, "o")
    iommu_attach_group(dom, g)
    assert DmaPort(d).dma_read(0x40000, 5) == b"early"


def test_attach_busy_and_detach_to_core_domain(mem: PhysMemory) -> None:
    """__iommu_attach_group(): EBUSY while a non-core domain is attached."""
    unit, g, (d,) = setup(mem)
    d1, d2 = unit.driver.domain_alloc_paging(d), unit.driver.domain_alloc_paging(d)
    iommu_attach_group(d1, g)
    with pytest.raises(UapiError) as err:
        iommu_attach_group(d2, g)
    assert err.value.errno == errno.EBUSY
    iommu_detach_group(d1, g)
    assert g.domain is g.default_domain
    d1.free()  # detached: its tables go back to RAM
    assert d1.pt.top_frame == -1
    iommu_attach_group(d2, g)
    with pytest.raises(UapiError) as err:
        d2.free()
    assert err.value.errno == errno.EBUSY


def test_replace_goes_straight_to_new_domain(mem: PhysMemory) -> None:
    """iommu_replace_group_handle(): no blocking or identity step between the two domains."""
    unit, g, (d,) = setup(mem)
    d1, d2 = unit.driver.domain_alloc_paging(d), unit.driver.domain_alloc_paging(d)
    iommu_group_claim_dma_owner(g, "o")
    iommu_attach_group_handle(d1, g, object())
    log = programmed(unit)
    iommu_replace_group_handle(g, d2, object())
    assert log == [d2] and g.domain is d2


def test_failed_attach_changes_nothing(mem: PhysMemory) -> None:
    """__iommu_group_set_domain_internal(): the devices switched before the failure go back."""
    unit, g, (ok, nodirty) = setup(mem, "mock", n=2, default=None)
    nodirty.no_dirty = True
    iommu_group_claim_dma_owner(g, "o")
    plain = unit.driver.domain_alloc_paging(ok)
    dirty = unit.driver.domain_alloc_paging_flags(ok, IOMMU_HWPT_ALLOC_DIRTY_TRACKING)
    iommu_attach_group_handle(plain, g, object())
    log = programmed(unit)
    with pytest.raises(UapiError) as err:
        iommu_replace_group_handle(g, dirty, object())
    assert err.value.errno == errno.EINVAL
    assert g.domain is plain
    assert log == [dirty, plain]  # ok went to dirty, then back; nodirty never changed
    for dev in (ok, nodirty):
        ctx = unit.context(dev.rid)
        assert ctx is not None and ctx.domain is plain


def test_foreign_domain_is_einval(mem: PhysMemory) -> None:
    """domain_iommu_ops_compatible(): a domain of another driver."""
    _unit, g, (_d,) = setup(mem)
    other_unit, _, (od,) = setup(mem, "amd")
    foreign = other_unit.driver.domain_alloc_paging(od)
    iommu_group_claim_dma_owner(g, "o")
    with pytest.raises(UapiError) as err:
        iommu_attach_group(foreign, g)
    assert err.value.errno == errno.EINVAL


def test_attach_device_needs_singleton_group(mem: PhysMemory) -> None:
    unit, _g, (a, _b) = setup(mem, n=2)
    with pytest.raises(UapiError) as err:
        iommu_attach_device(unit.driver.domain_alloc_paging(a), a)
    assert err.value.errno == errno.EINVAL


def test_group_members_share_the_domain(mem: PhysMemory) -> None:
    """group->domain: every device of the group translates through it, a late joiner too."""
    unit, g, (a, b) = setup(mem, n=2)
    dom = unit.driver.domain_alloc_paging(a)
    pa = buf(mem)
    dom.map(0x1000, pa, 0x1000, RW)
    mem.write(pa, b"shared")
    iommu_attach_group(dom, g)
    late = IommuDevice("late", 0x1FF)
    iommu_probe_device(late, unit, g)
    assert [DmaPort(x).dma_read(0x1000, 6) for x in (a, b, late)] == [b"shared"] * 3


# ---------------------------------------------------------------------- ownership
def test_dma_ownership(mem: PhysMemory) -> None:
    """iommu_group_claim_dma_owner / iommu_device_claim_dma_owner."""
    unit, g, (a, b) = setup(mem, n=2)
    iommu_device_claim_dma_owner(a, "vfio")
    iommu_device_claim_dma_owner(b, "vfio")
    assert g.owner_cnt == 2 and g.domain is unit.driver.blocked_domain
    with pytest.raises(UapiError) as err:
        iommu_device_claim_dma_owner(a, "other")
    assert err.value.errno == errno.EPERM
    with pytest.raises(UapiError) as err:
        iommu_group_claim_dma_owner(g, "other")
    assert err.value.errno == errno.EPERM
    iommu_device_release_dma_owner(a)
    iommu_device_release_dma_owner(b)
    assert g.owner is None and g.domain is g.default_domain


def test_claim_busy_with_pasid_attached(mem: PhysMemory) -> None:
    unit, g, (d,) = setup(mem, "mock", default=None)
    dom = unit.driver.domain_alloc_paging_flags(d, IOMMU_HWPT_ALLOC_PASID)
    iommu_attach_device_pasid(dom, d, 5)
    with pytest.raises(UapiError) as err:
        iommu_group_claim_dma_owner(g, "o")
    assert err.value.errno == errno.EBUSY
    iommu_group_release_dma_owner(g)  # not owned: nothing happens


def test_require_direct_refuses_blocking(mem: PhysMemory) -> None:
    """__iommu_device_set_domain(): firmware 1:1 requirement rejects the blocking domain."""
    _unit, g, (d,) = setup(mem)
    d.require_direct = True
    with pytest.raises(UapiError) as err:
        iommu_group_claim_dma_owner(g, "vfio")
    assert err.value.errno == errno.EINVAL
    assert g.owner is None


# ---------------------------------------------------------------------- vendor allocation rules
def test_intel_allocation_stages(mem: PhysMemory) -> None:
    """intel_iommu_domain_alloc_paging_flags(): first stage unless NEST_PARENT/DIRTY need the second."""
    unit, _, (d,) = setup(mem)
    drv = unit.driver
    assert drv.domain_alloc_paging_flags(d, 0).fmt.name == "x86_64"
    assert drv.domain_alloc_paging_flags(d, IOMMU_HWPT_ALLOC_PASID).fmt.name == "x86_64"
    parent = drv.domain_alloc_paging_flags(d, IOMMU_HWPT_ALLOC_NEST_PARENT)
    assert parent.fmt.name == "vtdss" and parent.nest_parent
    with pytest.raises(UapiError) as err:  # ERRATA_772415_SPR17: no read-only maps on a nest parent
        parent.map(0, buf(mem), 0x1000, IOMMU_READ)
    assert err.value.errno == errno.EINVAL
    assert drv.domain_alloc_paging_flags(d, IOMMU_HWPT_ALLOC_DIRTY_TRACKING).dirty_ops
    for bad in (1 << 5, IOMMU_HWPT_ALLOC_DIRTY_TRACKING | (1 << 2)):
        with pytest.raises(UapiError) as err:
            drv.domain_alloc_paging_flags(d, bad)
        assert err.value.errno == errno.EOPNOTSUPP
    with pytest.raises(UapiError):
        drv.domain_alloc_paging_flags(d, 0, {"x": 1})


def test_dirty_tracking_needs_hardware(mem: PhysMemory) -> None:
    """EOPNOTSUPP at allocation on a unit without dirty tracking; EINVAL when a dirty domain is attached
    to a device behind such a unit (paging_domain_compatible_second_stage)."""
    unit, _, (d,) = setup(mem)
    nodirty = make_unit("intel", mem, driver=unit.driver, dirty=False)
    d2 = IommuDevice("x", 0x200)
    g2 = iommu_probe_device(d2, nodirty)
    with pytest.raises(UapiError) as err:
        unit.driver.domain_alloc_paging_flags(d2, IOMMU_HWPT_ALLOC_DIRTY_TRACKING)
    assert err.value.errno == errno.EOPNOTSUPP
    dirty = unit.driver.domain_alloc_paging_flags(d, IOMMU_HWPT_ALLOC_DIRTY_TRACKING)
    iommu_group_claim_dma_owner(g2, "o")
    with pytest.raises(UapiError) as err:
        iommu_attach_group(dirty, g2)
    assert err.value.errno == errno.EINVAL
    assert g2.domain is unit.driver.blocked_domain


def test_intel_compat_superpages_and_width(mem: PhysMemory) -> None:
    """Same page-size support and address width within MGAW (paging_domain_compatible)."""
    unit, _, (d,) = setup(mem)
    small = make_unit("intel", mem, driver=unit.driver, superpages=(21,), ias=39)
    d2 = IommuDevice("y", 0x300)
    g2 = iommu_probe_device(d2, small)
    iommu_group_claim_dma_owner(g2, "o")
    fs = unit.driver.domain_alloc_paging(d)        # has 1 GiB pages
    ss = unit.driver.domain_alloc_paging_flags(d, IOMMU_HWPT_ALLOC_NEST_PARENT)  # 48-bit
    for dom in (fs, ss):
        with pytest.raises(UapiError) as err:
            iommu_attach_group(dom, g2)
        assert err.value.errno == errno.EINVAL
    own = unit.driver.domain_alloc_paging(d2)
    assert not own.pgsize_bitmap & (1 << 30)
    iommu_attach_group(own, g2)


def test_amd_v1_v2_selection(mem: PhysMemory) -> None:
    """amd_iommu_domain_alloc_paging_flags()."""
    unit, _, (d,) = setup(mem, "amd")
    drv = unit.driver
    assert drv.domain_alloc_paging_flags(d, 0).fmt.name == "amdv1"
    assert drv.domain_alloc_paging_flags(d, IOMMU_HWPT_ALLOC_DIRTY_TRACKING).fmt.name == "amdv1"
    assert drv.domain_alloc_paging_flags(d, IOMMU_HWPT_ALLOC_PASID).fmt.name == "x86_64"
    with pytest.raises(UapiError) as err:
        drv.domain_alloc_paging_flags(d, IOMMU_HWPT_ALLOC_PASID | IOMMU_HWPT_ALLOC_DIRTY_TRACKING)
    assert err.value.errno == errno.EOPNOTSUPP
    with pytest.raises(UapiError):  # the preset AMD unit has no nesting
        drv.domain_alloc_paging_flags(d, IOMMU_HWPT_ALLOC_NEST_PARENT)


def test_smmu_stages_and_instance_binding(mem: PhysMemory) -> None:
    """arm_smmu_domain_alloc_paging_flags() and arm_smmu_attach_dev()'s smmu_domain->smmu check."""
    unit, g, (d,) = setup(mem, "arm-smmu-v3")
    drv = unit.driver
    assert drv.domain_alloc_paging_flags(d, 0).fmt.name == "arm_lpae_s1"
    assert drv.domain_alloc_paging_flags(d, IOMMU_HWPT_ALLOC_NEST_PARENT).fmt.name == "arm_lpae_s2"
    with pytest.raises(UapiError) as err:
        drv.domain_alloc_paging_flags(d, IOMMU_HWPT_ALLOC_NEST_PARENT | IOMMU_HWPT_ALLOC_DIRTY_TRACKING)
    assert err.value.errno == errno.EOPNOTSUPP
    other = make_unit("arm-smmu-v3", mem, driver=drv)
    d2 = IommuDevice("z", 0x400)
    g2 = iommu_probe_device(d2, other)
    dom = drv.domain_alloc_paging(d)
    iommu_attach_group(dom, g)
    with pytest.raises(UapiError) as err:
        iommu_attach_group(dom, g2)
    assert err.value.errno == errno.EINVAL


def test_riscv_takes_no_flags(mem: PhysMemory) -> None:
    unit, _, (d,) = setup(mem, "riscv")
    assert unit.driver.domain_alloc_paging(d).fmt.name == "riscv64"
    with pytest.raises(UapiError) as err:
        unit.driver.domain_alloc_paging_flags(d, IOMMU_HWPT_ALLOC_DIRTY_TRACKING)
    assert err.value.errno == errno.EOPNOTSUPP


def test_mock_geometry_and_flags(mem: PhysMemory) -> None:
    """mock_domain_alloc_paging_flags(): 2 KiB pages, aperture [16M, 2G-1], huge variant 1M|4K pages,
    NO_DIRTY devices refuse DIRTY_TRACKING."""
    unit, _, (d,) = setup(mem, "mock", default=None)
    dom = unit.driver.domain_alloc_paging(d)
    assert dom.aperture == (MOCK_APERTURE_START, MOCK_APERTURE_LAST) == (1 << 24, (1 << 31) - 1)
    assert dom.pgsize_bitmap & -dom.pgsize_bitmap == 2048
    huge = unit.driver.domain_alloc_paging_flags(d, 0, {"pagetable_type": MOCK_IOMMUPT_HUGE})
    assert huge.pgsize_bitmap == MOCK_HUGE_PAGE_SIZE | 4096
    d.no_dirty = True
    with pytest.raises(UapiError) as err:
        unit.driver.domain_alloc_paging_flags(d, IOMMU_HWPT_ALLOC_DIRTY_TRACKING)
    assert err.value.errno == errno.EOPNOTSUPP
    with pytest.raises(UapiError) as err:
        unit.driver.domain_alloc_paging_flags(d, 0, {"pagetable_type": 7})
    assert err.value.errno == errno.EOPNOTSUPP
