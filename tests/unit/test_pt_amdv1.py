"""AMD v1 entries, bit for bit (AMD IOMMU spec §2.2.3 Tables 14/15, generic_pt fmt/amdv1.h), and the
iommufd selftest mock (fmt/iommu_mock.c: 2 KiB items, OA field = PA >> 11)."""

from __future__ import annotations

import errno

import pytest

from vfiolab.errors import UapiError
from vfiolab.iommu.pagetable import IOMMU_READ, IOMMU_WRITE, AmdV1, AmdV1Mock, PageTable
from vfiolab.memory import PhysMemory

RW = IOMMU_READ | IOMMU_WRITE
PR, FC, IR, IW = 1, 1 << 60, 1 << 61, 1 << 62
NL7 = 7 << 9  # NextLevel = 7: size encoded by trailing ones in the OA field


@pytest.fixture(scope="module")
def mem() -> PhysMemory:
    return PhysMemory(1 << 30)


@pytest.mark.parametrize(("iova", "pa", "length", "prot", "level", "entry"), [
    # 4K read/write: PR | OA | FC (PT_FEAT_AMDV1_FORCE_COHERENCE is forced on) | IR | IW
    (0x1000, 0x1234_5000, 0x1000, RW, 0, 0x7000_0000_1234_5001),
    # read-only: no IW
    (0x1000, 0x1234_5000, 0x1000, IOMMU_READ, 0, 0x3000_0000_1234_5001),
    # write-only: no IR
    (0x1000, 0x1234_5000, 0x1000, IOMMU_WRITE, 0, 0x5000_0000_1234_5001),
    # 2M at level 1 is one item: NextLevel 0
    (0x20_0000, 0x4000_0000, 0x20_0000, RW, 1, 0x7000_0000_4000_0001),
    # 1G at level 2
    (0x4000_0000, 0x8000_0000, 0x4000_0000, RW, 2, 0x7000_0000_8000_0001),
    # 8K = 2 items: NextLevel 7, no extra ones (2^(13-12-1) - 1 = 0)
    (0x8000, 0x8000, 0x2000, RW, 0, 0x7000_0000_0000_8E01),
    # 16K = 4 items: one trailing one in the OA field (bit 12)
    (0x10000, 0x10000, 0x4000, RW, 0, 0x7000_0000_0001_1E01),
    # 4M = 2 items of level 1: nine trailing ones (bits 20:12)
    (0x40_0000, 0x4000_0000, 0x40_0000, RW, 1, 0x7000_0000_401F_FE01),
])
def test_leaf_entries(iova: int, pa: int, length: int, prot: int, level: int, entry: int, mem: PhysMemory) -> None:
    pt = PageTable(AmdV1(), mem)
    pt.map(iova, pa, length, prot)
    assert pt.pte(iova) == (level, entry)
    items = length >> (12 + 9 * level)
    assert pt.pte(iova + length - 1) == (level, entry)  # every item of a contiguous entry is the same
    assert pt.iova_to_phys(iova + length - 1) == pa + length - 1
    assert len(pt.leaves()) == 1 and items >= 1
    pt.destroy()


def test_table_entries(mem: PhysMemory) -> None:
    """Table entries: PR | NextLevel = own level | OA of the table | IR | IW (no FC)."""
    pt = PageTable(AmdV1(starting_level=2), mem)
    pt.map(0x1000, 0x1000, 0x1000, RW)
    top = mem.read_u64(pt.top_pa)
    l1_pa = top & ((1 << 52) - (1 << 12))
    assert top == PR | (2 << 9) | l1_pa | IR | IW
    l1 = mem.read_u64(l1_pa)
    assert l1 == PR | (1 << 9) | (l1 & ((1 << 52) - (1 << 12))) | IR | IW
    assert pt.hw_info() == {"host_pt_root": pt.top_pa, "mode": 3}
    pt.destroy()


def test_pgsize_bitmap() -> None:
    """Every power of two from 4K below 2^52 except 512G; the mock's from 2K below 2^37."""
    pt = PageTable(AmdV1(), PhysMemory(1 << 20))
    assert pt.pgsize_bitmap == ((1 << 52) - (1 << 12)) & ~(1 << 39)
    assert pt.aperture == (0, (1 << 64) - 1)
    mock = PageTable(AmdV1Mock(), PhysMemory(1 << 20))
    assert mock.pgsize_bitmap == (1 << 37) - (1 << 11)
    assert mock.aperture == (0, (1 << 38) - 1)


def test_mock_entries(mem: PhysMemory) -> None:
    """Mock: OA field holds PA >> 11 at bit 12; no FC; a 4K page is two 2K items (NextLevel 7)."""
    pt = PageTable(AmdV1Mock(), mem)
    pt.map(0x100_0800, 0x800, 0x800, RW)
    assert pt.pte(0x100_0800) == (0, 0x6000_0000_0000_1001)
    pt.map(0x100_1000, 0x1000, 0x1000, RW)
    assert pt.pte(0x100_1000) == (0, 0x6000_0000_0000_2E01)
    assert pt.pte(0x100_1800) == (0, 0x6000_0000_0000_2E01)
    pt.map(0x110_0000, 0x10_0000, 0x10_0000, IOMMU_READ)  # 1M: one level-1 item
    assert pt.pte(0x110_0000) == (1, 0x2000_0000_0020_0001)
    top = mem.read_u64(pt.top_pa)
    l1 = top & ((1 << 52) - (1 << 12))
    assert top == PR | (2 << 9) | l1 | IR | IW and pt.fmt.table_pa(top) == l1 >> 1
    assert pt.iova_to_phys(0x100_1abc) == 0x1abc
    pt.destroy()


def test_mock_huge_pgsize(mem: PhysMemory) -> None:
    """MOCK_IOMMUPT_HUGE: the selftest narrows pgsize_bitmap to 1M | PAGE_SIZE; 1M-aligned maps use
    1M leaves, the rest 4K (two-item) leaves."""
    pt = PageTable(AmdV1Mock(), mem)
    pt.pgsize_bitmap = (1 << 20) | (1 << 12)
    pt.map(0x100_0000, 0x20_0000, 0x10_1000, RW)
    assert [(va, size) for va, size, _ in pt.leaves()] == [(0x100_0000, 1 << 20), (0x110_0000, 0x1000)]
    pt.destroy()


def test_config_errors() -> None:
    """amdv1pt_iommu_fmt_init() / pt_init_common() / pt_iommu_init() errno."""
    with pytest.raises(UapiError) as e:
        AmdV1(starting_level=0)
    assert e.value.errno == errno.EINVAL
    with pytest.raises(UapiError) as e:
        AmdV1(starting_level=6)
    assert e.value.errno == errno.EINVAL
    with pytest.raises(UapiError) as e:
        AmdV1(features=frozenset())  # the forced features are missing
    assert e.value.errno == errno.EOPNOTSUPP
    with pytest.raises(UapiError) as e:
        AmdV1Mock(features=frozenset({"DYNAMIC_TOP"}))
    assert e.value.errno == errno.EOPNOTSUPP
    with pytest.raises(UapiError) as e:
        AmdV1(hw_max_oasz_lg2=53)
    assert e.value.errno == errno.EINVAL


def test_dirty_bit_and_hardware_update(mem: PhysMemory) -> None:
    """D (bit 6) is what read_and_clear_dirty reads; the IOMMU sets it in the leaf it wrote through
    (host dirty tracking), and IR/IW are ANDed along the walk."""
    pt = PageTable(AmdV1(), mem)
    pt.map(0, 0x10_0000, 0x4000, RW)  # one 16K entry: four identical items, NextLevel 7
    t = pt.walk(0x2000, write=True, set_ad=True)
    assert mem.read_u64(t.pte_pa) == 0x7000_0000_0010_1E41  # type: ignore[union-attr]
    assert mem.read_u64(t.pte_pa - 8) == 0x7000_0000_0010_1E01  # type: ignore[union-attr]
    # the whole entry is dirty; record_dirty() reports three of its four items
    assert pt.read_and_clear_dirty(0, 0x4000).tolist() == [True, True, True, False]
    assert pt.pte(0x2000)[1] == 0x7000_0000_0010_1E01
    slot = pt.top_pa  # clear IW in the top entry: writes through it now fault
    mem.write_u64(slot, mem.read_u64(slot) & ~IW)
    assert pt.walk(0x2000, write=True).reason.value == "permission"  # type: ignore[union-attr]
    pt.destroy()


def test_contiguous_leaf_frees_empty_tables_before_failing(mem: PhysMemory) -> None:
    """clear_contig() walks the items of a contiguous leaf in order: an empty table left by an
    earlier unmap is freed before the next item's leaf makes the map fail with EADDRINUSE."""
    pt = PageTable(AmdV1(), mem)
    pt.map(0, 0x1000, 0x1000, RW)
    assert pt.unmap(0, 0x1000) == 0x1000  # the level-0 table under [0, 2M) stays, empty
    pt.map(0x20_0000, 0x20_0000, 0x20_0000, RW)  # a 2M leaf at level-1 item 1
    frames = pt.table_frames
    with pytest.raises(UapiError) as e:
        pt.map(0, 0x40_0000, 0x40_0000, RW)  # one 4M entry over items 0 and 1
    assert e.value.errno == errno.EADDRINUSE
    assert pt.table_frames == frames - 1
    assert pt.pte(0) == (1, 0)
    pt.destroy()
