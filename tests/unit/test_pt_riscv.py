"""RISC-V Sv39/48/57 entries, bit for bit (Privileged ISA §12.3-12.6, Svnapot ch. 13, generic_pt
fmt/riscv.h): V 0, R 1, W 2, X 3, U 4, G 5, A 6, D 7, PPN 53:10, N 63."""

from __future__ import annotations

import errno

import pytest

from vfiolab.errors import UapiError
from vfiolab.iommu.pagetable import IOMMU_NOEXEC, IOMMU_READ, IOMMU_WRITE, PageTable, RiscV64
from vfiolab.memory import PhysMemory

RW = IOMMU_READ | IOMMU_WRITE


@pytest.fixture(scope="module")
def mem() -> PhysMemory:
    return PhysMemory(1 << 30)


@pytest.mark.parametrize(("iova", "pa", "length", "prot", "level", "entry"), [
    # PPN = 0x12345 at bit 10 = 0x48D1400; V|R|W|X|U|A|D = 0xDF (executable unless IOMMU_NOEXEC)
    (0x1000, 0x1234_5000, 0x1000, RW, 0, 0x48D_14DF),
    (0x1000, 0x1234_5000, 0x1000, RW | IOMMU_NOEXEC, 0, 0x48D_14D7),
    (0x1000, 0x1234_5000, 0x1000, IOMMU_READ, 0, 0x48D_145B),
    # write-only is written R|W (riscvpt_iommu_set_prot: W needs R)
    (0x1000, 0x1234_5000, 0x1000, IOMMU_WRITE | IOMMU_NOEXEC, 0, 0x48D_14D7),
    # 64K Svnapot: 16 identical items, N | ppn[3:0] = 1000
    (0x10000, 0x10000, 0x10000, RW, 0, 0x8000_0000_0000_60DF),
    # megapage and gigapage
    (0x20_0000, 0x4000_0000, 0x20_0000, RW, 1, 0x1000_00DF),
    (0x4000_0000, 0x8000_0000, 0x4000_0000, RW, 2, 0x2000_00DF),
])
def test_leaf_entries(iova: int, pa: int, length: int, prot: int, level: int, entry: int, mem: PhysMemory) -> None:
    pt = PageTable(RiscV64(), mem)
    pt.map(iova, pa, length, prot)
    assert pt.pte(iova) == (level, entry)
    assert pt.pte(iova + length - 1) == (level, entry)
    assert pt.iova_to_phys(iova + length - 1) == pa + length - 1
    pt.destroy()


def test_tables_and_hw_info(mem: PhysMemory) -> None:
    """A table entry is V and the PPN only; iosatp MODE 8/9/10 for Sv39/48/57."""
    for vasz, mode in ((39, 8), (48, 9), (57, 10)):
        pt = PageTable(RiscV64(hw_max_vasz_lg2=vasz), mem)
        pt.map(0, 0x1000, 0x1000, RW)
        top = mem.read_u64(pt.top_pa)
        assert top & 0x3FF == 1
        assert pt.hw_info() == {"ppn": pt.top_pa >> 12, "fsc_iosatp_mode": mode}
        pt.destroy()


def test_pgsize_without_svnapot(mem: PhysMemory) -> None:
    pt = PageTable(RiscV64(features=frozenset({"SIGN_EXTEND", "DETAILED_GATHER"})), mem)
    assert pt.pgsize_bitmap == (1 << 12) | (1 << 21) | (1 << 30)
    pt.map(0x10000, 0x10000, 0x10000, RW)
    assert len(pt.leaves()) == 16
    pt.destroy()


def test_config_errors() -> None:
    with pytest.raises(UapiError) as e:
        RiscV64(hw_max_vasz_lg2=40)
    assert e.value.errno == errno.EINVAL
    # riscv/iommu.c asks for Svpbmt, but iommu_riscv64.c does not support it: pt_init_common() says no
    with pytest.raises(UapiError) as e:
        RiscV64(features=frozenset({"SIGN_EXTEND", "DETAILED_GATHER", "RISCV_SVPBMT"}))
    assert e.value.errno == errno.EOPNOTSUPP
    with pytest.raises(UapiError) as e:
        RiscV64(features=frozenset({"SIGN_EXTEND"}))  # DETAILED_GATHER is forced
    assert e.value.errno == errno.EOPNOTSUPP


def test_write_without_read_is_a_fault(mem: PhysMemory) -> None:
    """W without R is reserved (§12.3.2): the walker faults."""
    pt = PageTable(RiscV64(), mem)
    pt.map(0, 0x5000, 0x1000, RW)
    slot = pt.walk(0).pte_pa  # type: ignore[union-attr]
    mem.write_u64(slot, mem.read_u64(slot) & ~2)
    assert pt.walk(0).reason.value == "not-present"  # type: ignore[union-attr]
    pt.destroy()
