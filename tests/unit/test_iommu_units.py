"""IOMMU unit presets and device probe/release: capabilities per vendor, what probe enables on a PCI
function (intel_iommu_probe_finalize order: PASID, ATS, PRI), ops->capable, and input errors."""

from __future__ import annotations

import pytest

from vfiolab.errors import VfiolabError
from vfiolab.iommu.device import IommuDevice
from vfiolab.iommu.driver import (
    IOMMU_CAP_CACHE_COHERENCY,
    IOMMU_CAP_DIRTY_TRACKING,
    IOMMU_CAP_PCI_ATS_SUPPORTED,
    PRESETS,
    make_unit,
)
from vfiolab.iommu.group import IommuGroup, iommu_probe_device, iommu_release_device
from vfiolab.memory.phys import PhysMemory
from vfiolab.pci.caps.ats import AtsCap
from vfiolab.pci.caps.pasid import PasidCap
from vfiolab.pci.caps.pri import PriCap
from vfiolab.pci.function import RcIntegratedEndpoint


def test_presets_cover_the_vendors() -> None:
    assert set(PRESETS) == {"intel", "amd", "arm-smmu-v3", "riscv", "mock"}
    intel = PRESETS["intel"][1]
    assert intel.formats == ("x86_64", "vtdss") and intel.pasid_bits == 20 and intel.dirty and intel.pri
    assert PRESETS["riscv"][1].pasid_bits == 0 and not PRESETS["riscv"][1].dirty
    assert PRESETS["mock"][1].formats == ("amdv1_mock",)


def test_make_unit_overrides_and_errors() -> None:
    mem = PhysMemory(1 << 24)
    u = make_unit("intel", mem, iotlb_entries=64, iotlb_ways=4, pasid_bits=8)
    assert (u.iotlb.entries, u.iotlb.ways, u.max_pasids) == (64, 4, 256)
    with pytest.raises(VfiolabError):
        make_unit("powerpc", mem)
    with pytest.raises(VfiolabError):
        make_unit("intel", mem, warp_drive=True)
    with pytest.raises(VfiolabError):
        u.driver.add_unit(u)


def test_probe_errors() -> None:
    mem = PhysMemory(1 << 24)
    a, b = make_unit("intel", mem), make_unit("amd", mem)
    dev = IommuDevice("d", 0x10)
    iommu_probe_device(dev, a)
    with pytest.raises(VfiolabError):
        iommu_probe_device(dev, a)
    with pytest.raises(VfiolabError):
        iommu_probe_device(IommuDevice("twin", 0x10), a)  # requester ID taken
    g = IommuGroup()
    iommu_probe_device(IommuDevice("x", 0x20), a, g)
    with pytest.raises(VfiolabError):
        iommu_probe_device(IommuDevice("y", 0x21), b, g)  # a group cannot span drivers
    with pytest.raises(VfiolabError):
        IommuDevice("bad", 0x10000)


@pytest.mark.parametrize("kind,ats,pri", [("intel", True, True), ("amd", True, True), ("riscv", False, False),
                                          ("arm-smmu-v3", True, False)])
def test_probe_enables_what_the_unit_supports(kind: str, ats: bool, pri: bool) -> None:
    mem = PhysMemory(1 << 24)
    unit = make_unit(kind, mem)
    fn = RcIntegratedEndpoint(0x8086, 0x3, 0x120000, express={"ee_prefix": 1},
                              ext_caps=[AtsCap(), PriCap(32), PasidCap(20)])
    dev = IommuDevice("f", 0x18, pci=fn)
    iommu_probe_device(dev, unit)
    assert dev.ats_enabled == ats
    assert dev.pasid_enabled == bool(unit.max_pasids)
    # a PASID user without "PRG Response PASID Required" gets no PRI (intel iommu_enable_pci_pri)
    assert dev.pri_enabled == (pri and not dev.pasid_enabled)
    assert unit.driver.capable(dev, IOMMU_CAP_PCI_ATS_SUPPORTED) == ats
    # riscv/iommu.c has no ops->capable: device_iommu_capable() is false for everything there
    assert unit.driver.capable(dev, IOMMU_CAP_CACHE_COHERENCY) == (kind != "riscv")
    assert unit.driver.capable(dev, IOMMU_CAP_DIRTY_TRACKING) == unit.caps.dirty
    iommu_release_device(dev)
    assert not dev.ats_enabled and not dev.pasid_enabled and dev.unit is None and dev.group is None


def test_non_pci_pasid_property() -> None:
    """dev_iommu_get_max_pasids(): 1 << pasid-num-bits, capped by the unit."""
    mem = PhysMemory(1 << 24)
    unit = make_unit("mock", mem, pasid_bits=10)
    dev = IommuDevice("m", 0x4, pasid_num_bits=20)
    iommu_probe_device(dev, unit)
    assert dev.max_pasids == 1 << 10
    with pytest.raises(VfiolabError):
        IommuDevice("m2", 0x5, pasid_num_bits=21)
