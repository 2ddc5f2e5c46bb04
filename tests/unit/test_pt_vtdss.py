"""VT-d second-stage entries, bit for bit (VT-d spec §9.8, generic_pt fmt/vtdss.h): R 0, W 1, PS 7,
A 8, D 9, SNP 11, OA 51:12; no present bit."""

from __future__ import annotations

import errno

import pytest

from vfiolab.errors import UapiError
from vfiolab.iommu.pagetable import IOMMU_READ, IOMMU_WRITE, PageTable, VtdSS
from vfiolab.memory import PhysMemory

RW = IOMMU_READ | IOMMU_WRITE


@pytest.fixture(scope="module")
def mem() -> PhysMemory:
    return PhysMemory(1 << 30)


@pytest.mark.parametrize(("iova", "pa", "length", "prot", "level", "entry"), [
    (0x1000, 0x1234_5000, 0x1000, RW, 0, 0x1234_5003),
    (0x1000, 0x1234_5000, 0x1000, IOMMU_READ, 0, 0x1234_5001),
    (0x1000, 0x1234_5000, 0x1000, IOMMU_WRITE, 0, 0x1234_5002),
    (0x20_0000, 0x4000_0000, 0x20_0000, RW, 1, 0x4000_0083),
    (0x4000_0000, 0x8000_0000, 0x4000_0000, IOMMU_READ, 2, 0x8000_0081),
])
def test_leaf_entries(iova: int, pa: int, length: int, prot: int, level: int, entry: int, mem: PhysMemory) -> None:
    pt = PageTable(VtdSS(), mem)
    pt.map(iova, pa, length, prot)
    assert pt.pte(iova) == (level, entry)
    pt.destroy()


def test_tables_snoop_and_hw_info(mem: PhysMemory) -> None:
    """Tables are R|W; FORCE_COHERENCE adds SNP to leaves; aw = top_level - 1."""
    pt = PageTable(VtdSS(top_level=2, hw_max_vasz_lg2=39, features=frozenset({"VTDSS_FORCE_COHERENCE"})), mem)
    pt.map(0, 0x5000, 0x1000, RW)
    assert mem.read_u64(pt.top_pa) & 0xFFF == 0x003
    assert pt.pte(0) == (0, 0x5803)
    assert pt.hw_info() == {"ssptptr": pt.top_pa, "aw": 1}
    pt.destroy()


def test_prot_errors(mem: PhysMemory) -> None:
    """vtdss_pt_iommu_set_prot(): a nesting parent (FORCE_WRITEABLE) refuses read-only maps."""
    pt = PageTable(VtdSS(features=frozenset({"VTDSS_FORCE_WRITEABLE"})), mem)
    with pytest.raises(UapiError) as e:
        pt.map(0, 0, 0x1000, IOMMU_READ)
    assert e.value.errno == errno.EINVAL
    pt.map(0, 0, 0x1000, RW)
    pt.destroy()


def test_config_errors() -> None:
    for top in (1, 5):
        with pytest.raises(UapiError) as e:
            VtdSS(top_level=top)
        assert e.value.errno == errno.EOPNOTSUPP
    with pytest.raises(UapiError) as e:
        VtdSS(features=frozenset({"SIGN_EXTEND"}))
    assert e.value.errno == errno.EOPNOTSUPP


def test_present_is_r_or_w_for_hardware(mem: PhysMemory) -> None:
    """The kernel treats any non-zero entry as present; the walker needs R or W."""
    pt = PageTable(VtdSS(), mem)
    pt.map(0, 0x5000, 0x1000, RW)
    slot = pt.walk(0).pte_pa  # type: ignore[union-attr]
    mem.write_u64(slot, 0x5000 | (1 << 9))  # only D left: no R, no W
    assert pt.walk(0).reason.value == "not-present"  # type: ignore[union-attr]
    assert pt.iova_to_phys(0) == 0x5000
    pt.destroy()
