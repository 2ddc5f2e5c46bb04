"""Reserved regions: per-driver lists (intel/iommu.c, amd/iommu.c, arm-smmu-v3.c), the core's merge
(iommu.c iommu_insert_resv_region) and the group's sysfs reserved_regions text."""

from __future__ import annotations

import pytest

from vfiolab.errors import VfiolabError
from vfiolab.iommu.device import IommuDevice
from vfiolab.iommu.driver import make_unit
from vfiolab.iommu.group import IommuGroup, iommu_probe_device
from vfiolab.iommu.pagetable.common import IOMMU_MMIO, IOMMU_NOEXEC, IOMMU_READ, IOMMU_WRITE
from vfiolab.iommu.resv import (
    MSI_IOVA_BASE,
    MSI_IOVA_LENGTH,
    ResvRegion,
    ResvType,
    amd_resv_regions,
    arm_smmu_resv_regions,
    format_resv_regions,
    group_resv_regions,
    insert_resv_region,
    intel_resv_regions,
)
from vfiolab.memory.phys import PhysMemory
from vfiolab.pci.function import CLASS_ISA_BRIDGE, PcieEndpoint

R = ResvType


def test_intel_regions_msi_window_and_rmrr() -> None:
    """intel_iommu_get_resv_regions(): RMRRs first, then 0xfee00000-0xfeefffff as msi with prot 0."""
    regs = intel_resv_regions(rmrrs=[(0x7000_0000, 0x7000_ffff, False), (0x8000_0000, 0x8000_0fff, True)])
    assert regs == [ResvRegion(0x7000_0000, 0x10000, IOMMU_READ | IOMMU_WRITE, R.DIRECT),
                    ResvRegion(0x8000_0000, 0x1000, IOMMU_READ | IOMMU_WRITE, R.DIRECT_RELAXABLE),
                    ResvRegion(0xFEE0_0000, 0x10_0000, 0, R.MSI)]
    assert intel_resv_regions(isa_bridge=True)[0] == ResvRegion(0, 1 << 24, IOMMU_READ | IOMMU_WRITE,
                                                                 R.DIRECT_RELAXABLE)


def test_amd_regions_ht_range_and_unity_length() -> None:
    """amd_iommu_get_resv_regions(): IVMD length is end - start; HT range reserved unless ignored."""
    regs = amd_resv_regions(unity_maps=[(0x1000, 0x3000, IOMMU_READ)])
    assert regs[0] == ResvRegion(0x1000, 0x2000, IOMMU_READ, R.DIRECT)
    assert regs[1] == ResvRegion(0xFEE0_0000, 0x10_0000, 0, R.MSI)
    assert regs[2] == ResvRegion(0xFD_0000_0000, 0x3_0000_0000, 0, R.RESERVED)
    assert len(amd_resv_regions(ht_range_ignore=True)) == 1


def test_arm_smmu_sw_msi() -> None:
    """arm_smmu_get_resv_regions(): SW_MSI at MSI_IOVA_BASE 0x8000000 length 0x100000, printed 'msi'."""
    (r,) = arm_smmu_resv_regions()
    assert (r.start, r.length, r.type) == (0x8000000, 0x100000, R.SW_MSI)
    assert (MSI_IOVA_BASE, MSI_IOVA_LENGTH) == (0x8000000, 0x100000)
    assert r.prot == IOMMU_WRITE | IOMMU_NOEXEC | IOMMU_MMIO
    assert r.sysfs_line() == "0x0000000008000000 0x00000000080fffff msi\n"


def test_insert_merges_same_type_only() -> None:
    """Overlapping and adjacent regions of one type merge; other types stay, sorted by start."""
    out: list[ResvRegion] = []
    for r in (ResvRegion(0x2000, 0x1000, 0, R.RESERVED), ResvRegion(0x1000, 0x1000, 0, R.RESERVED),
              ResvRegion(0x1800, 0x1000, 0, R.MSI), ResvRegion(0x5000, 0x1000, 0, R.RESERVED)):
        out = insert_resv_region(r, out)
    assert [(r.start, r.length, r.type) for r in out] == [
        (0x1000, 0x2000, R.RESERVED), (0x1800, 0x1000, R.MSI), (0x5000, 0x1000, R.RESERVED)]


def test_insert_same_start_orders_by_type() -> None:
    """Equal starts: the lower type goes first (nr->type <= iter->type)."""
    out = insert_resv_region(ResvRegion(0x1000, 0x10, 0, R.MSI), [])
    out = insert_resv_region(ResvRegion(0x1000, 0x10, 0, R.DIRECT), out)
    assert [r.type for r in out] == [R.DIRECT, R.MSI]


def test_group_union_of_devices() -> None:
    """iommu_get_group_resv_regions(): identical windows of two devices collapse into one."""
    regs = group_resv_regions([intel_resv_regions(), intel_resv_regions()])
    assert format_resv_regions(regs) == "0x00000000fee00000 0x00000000feefffff msi\n"


def test_bad_region_rejected() -> None:
    with pytest.raises(VfiolabError):
        ResvRegion(0, 0, 0, R.MSI)


@pytest.mark.parametrize("kind,text", [
    ("intel", "0x00000000fee00000 0x00000000feefffff msi\n"),
    ("amd", "0x00000000fee00000 0x00000000feefffff msi\n0x000000fd00000000 0x000000ffffffffff reserved\n"),
    ("arm-smmu-v3", "0x0000000008000000 0x00000000080fffff msi\n"),
    ("riscv", ""),
    ("mock", ""),
])
def test_group_sysfs_per_unit_kind(kind: str, text: str) -> None:
    """What /sys/kernel/iommu_groups/N/reserved_regions shows for a device behind each unit kind."""
    mem = PhysMemory(1 << 24)
    unit = make_unit(kind, mem)
    g = iommu_probe_device(IommuDevice("d", 0x100), unit, IommuGroup())
    assert g.sysfs_reserved_regions() == text


def test_intel_rmrr_device_gets_direct_map_in_default_domain() -> None:
    """iommu_setup_default_domain(): RESV_DIRECT regions are mapped 1:1 into a DMA default domain."""
    mem = PhysMemory(1 << 26)
    unit = make_unit("intel", mem)
    dev = IommuDevice("usb", 0x100, resv=[ResvRegion(0x10_0000, 0x2000, IOMMU_READ | IOMMU_WRITE, R.DIRECT)])
    g = iommu_probe_device(dev, unit)
    dom = g.default_domain
    assert dom is not None and dom.iova_to_phys(0x10_1000) == 0x10_1000  # type: ignore[attr-defined]
    assert g.sysfs_reserved_regions().splitlines()[0] == "0x0000000000100000 0x0000000000101fff direct"


def test_intel_isa_bridge_floppy_window() -> None:
    """CONFIG_INTEL_IOMMU_FLOPPY_WA: an ISA bridge gets [0, 16M) direct-relaxable."""
    mem = PhysMemory(1 << 24)
    unit = make_unit("intel", mem)
    fn = PcieEndpoint(0x8086, 0x7000, CLASS_ISA_BRIDGE)
    g = iommu_probe_device(IommuDevice("isa", 0xF8, pci=fn), unit)
    assert g.sysfs_reserved_regions().splitlines()[0] == "0x0000000000000000 0x0000000000ffffff direct-relaxable"
    assert g.default_domain is not None and g.default_domain.iova_to_phys(0xABC000) == 0xABC000  # type: ignore[attr-defined]
