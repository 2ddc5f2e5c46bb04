"""NESTED domains (drivers/iommu/intel/nested.c; VT-d §3.8): a guest's stage-1 table in guest memory
walked over a stage-2 nest parent, allocation rules, guest cache invalidation (IOMMU_HWPT_INVALIDATE
VTD_S1 semantics) and the parent's NESTING cache tags."""

from __future__ import annotations

import errno

import numpy as np
import pytest

from vfiolab.errors import UapiError
from vfiolab.iommu.device import IommuDevice
from vfiolab.iommu.dma import DmaPort
from vfiolab.iommu.domain import IOMMU_DOMAIN_IDENTITY, IOMMU_HWPT_ALLOC_NEST_PARENT, PagingDomain
from vfiolab.iommu.driver import make_unit
from vfiolab.iommu.fault import DmaFault, FaultReason
from vfiolab.iommu.group import iommu_attach_group, iommu_group_claim_dma_owner, iommu_probe_device
from vfiolab.iommu.nested import U64_MAX, NestedDomain, VtdS1Invalidate
from vfiolab.iommu.pagetable import IOMMU_READ, IOMMU_WRITE, X86_64, PageTable, VtdSS
from vfiolab.iommu.pagetable.common import FLUSH_RANGE, SIGN_EXTEND
from vfiolab.iommu.walk import Stage, Walker, WalkError
from vfiolab.memory.phys import PhysMemory

RW = IOMMU_READ | IOMMU_WRITE


def guest_s1(host: PhysMemory, gsz: int, ipa_base: int, maps: list[tuple[int, int, int]]
             ) -> tuple[PageTable, PageTable, int]:
    """A stage-2 table mapping IPA [ipa_base, +gsz) to host RAM at ``base``, and a stage-1 x86-64 table
    built in guest memory (guest PA g = IPA ipa_base + g) with (iova, guest pa, length) maps."""
    guest = PhysMemory(gsz)
    s1 = PageTable(X86_64(features=frozenset({SIGN_EXTEND, FLUSH_RANGE})), guest)
    for iova, gpa, n in maps:
        s1.map(iova, gpa, n, RW)
    # guest physical addresses in its tables must be IPAs: relocate by ipa_base
    s2 = PageTable(VtdSS(), host)
    frames = host.alloc_frames(gsz >> 12, contiguous=True)
    base = int(frames[0]) << 12
    s2.map(ipa_base, base, gsz, RW)
    host.u64[base >> 12:(base + gsz) >> 12] = guest.u64
    copy_tables(s1, host, base, ipa_base)
    return s1, s2, base


def copy_tables(s1: PageTable, host: PhysMemory, base: int, ipa_base: int) -> None:
    """Write the guest's stage-1 table frames into host RAM with guest PAs turned into IPAs (x86-64 P
    set: table pointers and leaf OAs move by ``ipa_base``)."""
    tables = s1.table_frame_list()
    rows = s1.mem.u64[tables]
    present = (rows & np.uint64(1)) != 0
    rows[present] += np.uint64(ipa_base)
    host.u64[(base >> 12) + tables] = rows


def test_nested_walk_translates_tables_through_stage2() -> None:
    """Stage-1 root and tables are IPAs; the walk reads them through stage 2, then translates the
    stage-1 output through stage 2 too."""
    host = PhysMemory(1 << 28)
    ipa = 0x8000_0000
    s1, s2, base = guest_s1(host, 32 << 20, ipa, [(0x10000, 0x200000, 0x4000)])
    st1 = Stage(s1.fmt, lambda: (s1.top_pa + ipa, s1.top_level))
    st2 = Stage(s2.fmt, lambda: (s2.top_pa, s2.top_level))
    w = Walker(host, st1, st2)
    run = w.fill(0x10123, write=True)
    assert run.pa + (0x10123 - run.lo) == base + 0x200123
    assert (run.lo, run.hi) == (0x10000, 0x14000)
    # a stage-1 table outside stage 2: fault while reading stage-1 tables
    s2.unmap(ipa, 32 << 20)
    with pytest.raises(WalkError) as err:
        Walker(host, st1, st2).fill(0x10123, write=False)
    assert err.value.reason == FaultReason.STAGE2


def test_nested_stage2_permission_applies() -> None:
    host = PhysMemory(1 << 28)
    ipa = 0x4000_0000
    s1, s2, base = guest_s1(host, 16 << 20, ipa, [(0x10000, 0x300000, 0x1000)])
    s2.unmap(ipa + 0x300000, 0x1000)
    s2.map(ipa + 0x300000, base + 0x300000, 0x1000, IOMMU_READ)
    w = Walker(host, Stage(s1.fmt, lambda: (s1.top_pa + ipa, s1.top_level)),
               Stage(s2.fmt, lambda: (s2.top_pa, s2.top_level)))
    assert not w.fill(0x10000, write=False).w
    with pytest.raises(WalkError) as err:
        w.fill(0x10000, write=True)
    assert err.value.reason == FaultReason.STAGE2


class Guest:
    """An intel unit; a VT-d second-stage nest parent mapping guest RAM (IPA 0x8000_0000 + g) to host
    RAM; the guest's stage-1 x86-64 table written in guest memory; a nested domain over both."""

    IPA = 0x8000_0000
    GSZ = 16 << 20

    def __init__(self, maps: list[tuple[int, int, int]]) -> None:
        self.host = PhysMemory(1 << 27)
        self.unit = make_unit("intel", self.host)
        self.dev = IommuDevice("vf", 0x48)
        self.group = iommu_probe_device(self.dev, self.unit, default_type=IOMMU_DOMAIN_IDENTITY)
        iommu_group_claim_dma_owner(self.group, "vmm")
        drv = self.unit.driver
        self.parent: PagingDomain = drv.domain_alloc_paging_flags(self.dev, IOMMU_HWPT_ALLOC_NEST_PARENT)
        self.s1, s2, self.base = guest_s1(self.host, self.GSZ, self.IPA, maps)
        # move the hand-built stage 2 into the parent domain
        s2.unmap(self.IPA, self.GSZ)
        self.parent.map(self.IPA, self.base, self.GSZ, RW)
        self.nested: NestedDomain = drv.domain_alloc_nested(
            self.dev, self.parent, 0, "vtd_s1", {"pgtbl_addr": self.s1.top_pa + self.IPA, "addr_width": 48})
        iommu_attach_group(self.nested, self.group)
        self.port = DmaPort(self.dev)

    def guest_unmap(self, iova: int) -> None:
        """The guest clears its stage-1 PTE (in host RAM, where the guest's table really is)."""
        assert self.s1.unmap(iova, 0x1000) == 0x1000
        copy_tables(self.s1, self.host, self.base, self.IPA)


def test_nested_dma_through_guest_table() -> None:
    g = Guest([(0x10000, 0x20_0000, 0x2000)])
    g.port.dma_write(0x10ff8, b"nested!!ok")
    assert g.host.read(g.base + 0x20_0ff8, 10) == b"nested!!ok"
    with pytest.raises(DmaFault) as err:
        g.port.dma_read(0x30000, 1)
    assert err.value.record.reason == FaultReason.NOT_PRESENT


def test_guest_invalidation_is_needed_after_guest_unmap() -> None:
    """The combined IOVA->PA entry stays cached until the guest invalidates (cache_invalidate_user)."""
    g = Guest([(0x10000, 0x20_0000, 0x1000)])
    g.port.dma_write(0x10000, b"v1")
    g.guest_unmap(0x10000)
    assert g.port.dma_read(0x10000, 2) == b"v1"  # stale combined translation
    assert g.nested.cache_invalidate_vtd([VtdS1Invalidate(0x10000, 1)]) == 1
    with pytest.raises(DmaFault):
        g.port.dma_read(0x10000, 2)


def test_parent_unmap_flushes_nested_entries() -> None:
    """NESTING_IOTLB tag: unmapping from the stage-2 parent drops the child's combined entries."""
    g = Guest([(0x10000, 0x20_0000, 0x1000)])
    g.port.dma_read(0x10000, 1)
    assert g.parent.unmap(g.IPA + 0x20_0000, 0x1000) == 0x1000
    with pytest.raises(DmaFault) as err:
        g.port.dma_read(0x10000, 1)
    assert err.value.record.reason == FaultReason.STAGE2


def test_vtd_s1_invalidation_entry_checks() -> None:
    """intel_nested_cache_invalidate_user(): EOPNOTSUPP for unknown flags, EINVAL for a misaligned
    address or U64_MAX pages from a non-zero address; entries before the bad one take effect."""
    g = Guest([(0x10000, 0x20_0000, 0x1000)])
    for entries, err_no, done in (([VtdS1Invalidate(0, 1, flags=2)], errno.EOPNOTSUPP, 0),
                                  ([VtdS1Invalidate(0, 1), VtdS1Invalidate(0x10, 1)], errno.EINVAL, 1),
                                  ([VtdS1Invalidate(0x1000, U64_MAX)], errno.EINVAL, 0)):
        with pytest.raises(UapiError) as err:
            g.nested.cache_invalidate_vtd(entries)
        assert err.value.errno == err_no and err.value.handled == done  # type: ignore[attr-defined]
    assert g.nested.cache_invalidate_vtd([VtdS1Invalidate(0, U64_MAX)]) == 1


def test_nested_allocation_rules() -> None:
    """intel_iommu_domain_alloc_nested(): EOPNOTSUPP for other data types or flags, EINVAL for a
    parent that is not a second-stage nest parent or a bad address width."""
    g = Guest([(0x10000, 0x20_0000, 0x1000)])
    drv = g.unit.driver
    plain = drv.domain_alloc_paging(g.dev)
    cases = [(g.parent, 0, "arm_smmuv3", {}, errno.EOPNOTSUPP),
             (g.parent, 1 << 0, "vtd_s1", {"pgtbl_addr": 0}, errno.EOPNOTSUPP),
             (plain, 0, "vtd_s1", {"pgtbl_addr": 0}, errno.EINVAL),
             (g.parent, 0, "vtd_s1", {"pgtbl_addr": 0, "addr_width": 39}, errno.EINVAL)]
    for parent, flags, kind, data, err_no in cases:
        with pytest.raises(UapiError) as err:
            drv.domain_alloc_nested(g.dev, parent, flags, kind, data)
        assert err.value.errno == err_no
    with pytest.raises(UapiError) as err:
        g.parent.free()  # a nest parent with children
    assert err.value.errno == errno.EBUSY


def test_nested_attach_needs_nesting_unit() -> None:
    g = Guest([(0x10000, 0x20_0000, 0x1000)])
    other = make_unit("intel", g.host, driver=g.unit.driver, nesting=False)
    dev = IommuDevice("x", 0x50)
    grp = iommu_probe_device(dev, other)
    iommu_group_claim_dma_owner(grp, "o")
    with pytest.raises(UapiError) as err:
        iommu_attach_group(g.nested, grp)
    assert err.value.errno == errno.EINVAL


def test_mock_nested_domain_translates_through_parent() -> None:
    """The selftest's nested domain has no stage-1 table: DMA uses the parent; iotlb[] starts at the
    user's value (mock_domain_alloc_nested)."""
    mem = PhysMemory(1 << 26)
    unit = make_unit("mock", mem)
    dev = IommuDevice("m", 0x8)
    grp = iommu_probe_device(dev, unit)
    parent = unit.driver.domain_alloc_paging_flags(dev, IOMMU_HWPT_ALLOC_NEST_PARENT)
    nested = unit.driver.domain_alloc_nested(dev, parent, 0, "selftest", {"iotlb": 0xBADBEEF})
    assert nested.data["iotlb"] == [0xBADBEEF] * 4
    pa = int(mem.alloc_frames(1)[0]) << 12
    parent.map(1 << 24, pa, 0x1000, RW)
    iommu_attach_group(nested, grp)
    DmaPort(dev).dma_write(1 << 24, b"m")
    assert mem.read(pa, 1) == b"m"
