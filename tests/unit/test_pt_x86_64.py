"""x86-64 paging entries as an IOMMU table, bit for bit (Intel SDM Vol. 3 §4.5, VT-d §9.7, generic_pt
fmt/x86_64.h): P 0, R/W 1, U/S 2, A 5, D 6, PS 7, OA 51:12."""

from __future__ import annotations

import errno

import pytest

from vfiolab.errors import UapiError
from vfiolab.iommu.pagetable import IOMMU_NOEXEC, IOMMU_READ, IOMMU_WRITE, X86_64, PageTable
from vfiolab.memory import PhysMemory

RW = IOMMU_READ | IOMMU_WRITE


@pytest.fixture(scope="module")
def mem() -> PhysMemory:
    return PhysMemory(1 << 30)


@pytest.mark.parametrize(("iova", "pa", "length", "prot", "level", "entry"), [
    (0x1000, 0x1234_5000, 0x1000, RW, 0, 0x1234_5067),            # P|RW|U|A|D: writable leaves start dirty
    (0x1000, 0x1234_5000, 0x1000, IOMMU_READ, 0, 0x1234_5025),    # P|U|A
    (0x1000, 0x1234_5000, 0x1000, RW | IOMMU_NOEXEC, 0, 0x1234_5067),  # XD is never set
    (0x20_0000, 0x4000_0000, 0x20_0000, RW, 1, 0x4000_00E7),      # PDE with PS
    (0x4000_0000, 0x8000_0000, 0x4000_0000, RW, 2, 0x8000_00E7),  # PDPTE with PS
])
def test_leaf_entries(iova: int, pa: int, length: int, prot: int, level: int, entry: int, mem: PhysMemory) -> None:
    pt = PageTable(X86_64(), mem)
    pt.map(iova, pa, length, prot)
    assert pt.pte(iova) == (level, entry)
    pt.destroy()


def test_tables_and_hw_info(mem: PhysMemory) -> None:
    """Tables are P|RW|U|A; hw_info is the GCR3/FSPTPTR root and the level count."""
    pt = PageTable(X86_64(top_level=4, hw_max_vasz_lg2=57), mem)
    pt.map(0, 0x1000, 0x1000, RW)
    pml5 = mem.read_u64(pt.top_pa)
    assert pml5 & 0xFFF == 0x27 and pml5 >> 63 == 0
    assert pt.hw_info() == {"gcr3_pt": pt.top_pa, "levels": 5}
    assert pt.pgsize_bitmap == (1 << 12) | (1 << 21) | (1 << 30)
    assert pt.aperture == (0, (1 << 56) - 1)
    pt.destroy()


def test_amd_v2_no_sign_extension(mem: PhysMemory) -> None:
    """AMD v2 PASID tables: 47 bits, no sign extension, so the aperture is all of it."""
    pt = PageTable(X86_64(top_level=3, hw_max_vasz_lg2=47, features=frozenset()), mem)
    assert pt.aperture == (0, (1 << 47) - 1)
    pt.map((1 << 47) - 0x1000, 0x1000, 0x1000, RW)
    with pytest.raises(UapiError) as e:
        pt.map(0xFFFF_8000_0000_0000, 0, 0x1000, RW)
    assert e.value.errno == errno.ERANGE
    pt.destroy()


def test_config_errors() -> None:
    """x86_64_pt_iommu_fmt_init(): top level 3 or 4; a 4-level table cannot span 57 bits."""
    with pytest.raises(UapiError) as e:
        X86_64(top_level=2, hw_max_vasz_lg2=39)
    assert e.value.errno == errno.EOPNOTSUPP
    with pytest.raises(UapiError) as e:
        X86_64(top_level=3, hw_max_vasz_lg2=57)
    assert e.value.errno == errno.EOPNOTSUPP
    with pytest.raises(UapiError) as e:
        X86_64(hw_max_vasz_lg2=58)
    assert e.value.errno == errno.EINVAL


def test_hardware_walk_honours_table_permissions(mem: PhysMemory) -> None:
    """A guest-written table entry without R/W makes everything below read-only (SDM §4.6)."""
    pt = PageTable(X86_64(), mem)
    pt.map(0, 0x1000, 0x1000, RW)
    assert pt.walk(0, write=True).write  # type: ignore[union-attr]
    mem.write_u64(pt.top_pa, mem.read_u64(pt.top_pa) & ~2)
    assert pt.walk(0, write=True).reason.value == "permission"  # type: ignore[union-attr]
    pt.destroy()
