"""Arm LPAE stage-1/stage-2 descriptors, bit for bit (Arm ARM D8.3, io-pgtable-arm.c), and the
io-pgtable semantics that differ from generic_pt."""

from __future__ import annotations

import errno

import pytest

from vfiolab.errors import UapiError
from vfiolab.iommu.pagetable import (
    IOMMU_CACHE,
    IOMMU_MMIO,
    IOMMU_NOEXEC,
    IOMMU_PRIV,
    IOMMU_READ,
    IOMMU_WRITE,
    ArmLpae,
    ArmPageTable,
)
from vfiolab.memory import PhysMemory

RW = IOMMU_READ | IOMMU_WRITE


@pytest.fixture(scope="module")
def mem() -> PhysMemory:
    return PhysMemory(1 << 30)


@pytest.mark.parametrize(("stage", "quirks", "iova", "length", "prot", "level", "entry"), [
    # S1 page: nG 0x800 | AF 0x400 | SH outer 0x200 | AP[1] unpriv 0x40 | type 3
    (1, (), 0x1000, 0x1000, RW, 0, 0x1234_5E43),
    (1, (), 0x1000, 0x1000, IOMMU_READ, 0, 0x1234_5EC3),           # + AP[2] read-only 0x80
    (1, (), 0x1000, 0x1000, RW | IOMMU_CACHE, 0, 0x1234_5F47),      # inner shareable, AttrIndx 1
    (1, (), 0x1000, 0x1000, RW | IOMMU_MMIO | IOMMU_PRIV, 0, 0x1234_5E0B),  # AttrIndx 2, privileged
    (1, (), 0x1000, 0x1000, RW | IOMMU_NOEXEC, 0, 0x0060_0000_1234_5E43),  # UXN|PXN
    (1, ("IO_PGTABLE_QUIRK_ARM_HD",), 0x1000, 0x1000, RW, 0, 0x0008_0000_1234_5E43),  # DBM
    (1, (), 0x20_0000, 0x20_0000, RW, 1, 0x1220_0E41),              # 2M block: type 1
    # S2: S2AP R 0x40 W 0x80, MemAttr normal-NC 0x14 / outer-inner WB 0x3C / device 0x04
    (2, (), 0x1000, 0x1000, RW, 0, 0x1234_56D7),
    (2, (), 0x1000, 0x1000, IOMMU_READ | IOMMU_CACHE, 0, 0x1234_577F),
    (2, (), 0x1000, 0x1000, IOMMU_WRITE | IOMMU_MMIO, 0, 0x1234_5687),
    (2, ("IO_PGTABLE_QUIRK_ARM_S2FWB",), 0x1000, 0x1000, RW | IOMMU_CACHE, 0, 0x1234_57DB),
])
def test_entries(stage: int, quirks: tuple[str, ...], iova: int, length: int, prot: int, level: int, entry: int,
                 mem: PhysMemory) -> None:
    pt = ArmPageTable(ArmLpae(stage=stage, quirks=frozenset(quirks)), mem)
    pa = 0x1234_5000 if length == 0x1000 else 0x1220_0000
    pt.map(iova, pa, length, prot)
    assert pt.pte(iova) == (level, entry)
    pt.destroy()


def test_tables_levels_and_hw_info(mem: PhysMemory) -> None:
    """Tables are type 3 (+NSTable with the NS quirk); ias picks the levels; stage 2 with a 40-bit
    output concatenates two level-1 tables (Arm DDI0487 R_SRKBC)."""
    pt = ArmPageTable(ArmLpae(stage=1, ias=48, oas=48, quirks=frozenset({"IO_PGTABLE_QUIRK_ARM_NS"})), mem)
    pt.map(0, 0x5000, 0x1000, RW)
    top = mem.read_u64(pt.top_pa)
    assert top & 0xFFF == 3 and top >> 63 == 1
    assert pt.pte(0)[1] & 0x20  # NS
    assert pt.top_level == 3
    assert pt.hw_info() == {"tsz": 16, "tg": 0, "ps": 5, "ttbr": pt.top_pa, "mair": 0xF404FF44}
    pt.destroy()
    s2 = ArmPageTable(ArmLpae(stage=2, ias=40, oas=40), mem)
    assert (s2.top_level, s2.top_nframes) == (2, 2)  # 1024 level-1 entries in two pages
    s2.map(0xFF_C000_0000, 0x4000_0000, 0x4000_0000, RW)  # 1G block in the second page
    assert s2.pte(0xFF_C000_0000) == (2, 0x4000_06D5)
    assert mem.read_u64(s2.top_pa + 4096 + 511 * 8) == 0x4000_06D5
    assert s2.hw_info() == {"tsz": 24, "tg": 0, "ps": 2, "vttbr": s2.top_pa, "sl": 1}
    s2.destroy()
    assert ArmPageTable(ArmLpae(stage=1, ias=39), mem).top_level == 2


def test_map_errors(mem: PhysMemory) -> None:
    """The IOMMU core's alignment check (EINVAL) comes first, then arm_lpae_map_pages(): ERANGE
    beyond ias/oas, EINVAL without permissions; an existing leaf is EEXIST."""
    pt = ArmPageTable(ArmLpae(stage=1, ias=40, oas=40), mem)
    for args, err in (((0x800, 0, 0x1000, RW), errno.EINVAL), ((0, 0, 0x800, RW), errno.EINVAL),
                      ((1 << 40, 0, 0x1000, RW), errno.ERANGE), ((0, 1 << 40, 0x1000, RW), errno.ERANGE),
                      ((0, 0, 0x1000, 0), errno.EINVAL)):
        with pytest.raises(UapiError) as e:
            pt.map(*args)
        assert e.value.errno == err
    pt.map(0, 0, 0, RW)  # a zero-length map is nothing
    pt.map(0x3000, 0x3000, 0x1000, RW)
    with pytest.raises(UapiError) as e:
        pt.map(0x1000, 0x1000, 0x4000, RW)
    assert e.value.errno == errno.EEXIST
    assert [va for va, _, _ in pt.leaves()] == [0x3000]  # the pages before it were unmapped again
    with pytest.raises(UapiError) as e:  # the part beyond ias fails; the part below is undone
        pt.map((1 << 40) - 0x1000, 0, 0x2000, RW)
    assert e.value.errno == errno.ERANGE
    assert pt.iova_to_phys((1 << 40) - 0x1000) == 0
    pt.destroy()


def test_block_over_table_destroys_it(mem: PhysMemory) -> None:
    """arm_lpae_init_pte(): a block where a table is goes in after __arm_lpae_unmap() of that table,
    mappings and all (generic_pt would refuse with EADDRINUSE)."""
    pt = ArmPageTable(ArmLpae(stage=1), mem)
    pt.map(0x20_1000, 0x7000, 0x1000, RW)
    frames = pt.table_frames
    pt.map(0x20_0000, 0x4000_0000, 0x20_0000, RW)
    assert pt.table_frames == frames - 1
    assert pt.iova_to_phys(0x20_1000) == 0x4000_1000
    pt.destroy()


def test_unmap_chunks(mem: PhysMemory) -> None:
    """iommu_unmap() over io-pgtable: a chunk smaller than a block on the way is refused (0); a hole
    stops; a chunk whose page size covers a table frees it with everything in it."""
    pt = ArmPageTable(ArmLpae(stage=1), mem)
    pt.map(0x20_0000, 0x20_0000, 0x20_0000, RW)
    assert pt.unmap(0x20_0000, 0x1000) == 0
    assert pt.unmap(0x20_0000, 0x20_0000) == 0x20_0000
    pt.map(0x40_0000, 0x40_0000, 0x10_0000, RW)  # 256 pages in a fresh level-3 table
    frames = pt.table_frames
    assert pt.unmap(0x40_0000, 0x20_0000) == 0x20_0000  # 2M chunk: the table entry goes, pages and all
    assert pt.table_frames == frames - 1 and pt.leaves() == []
    pt.map(0x1000, 0x1000, 0x2000, RW)
    pt.map(0x4000, 0x4000, 0x1000, RW)
    assert pt.unmap(0x1000, 0x4000) == 0x2000  # stops at the hole at 0x3000
    assert pt.unmap(0x800, 0x1000) == 0  # unaligned
    assert pt.iova_to_phys(0x4000 + (1 << 48)) == 0x4000  # index masks alias IOVAs above ias
    pt.destroy()


def test_dirty_stage1_hd(mem: PhysMemory) -> None:
    """HD: a writable leaf carries DBM and starts writeable-dirty (AP[2] clear); cleaning sets AP[2];
    a hardware write clears it again.  Stage 2 has no dirty reporting (EINVAL)."""
    pt = ArmPageTable(ArmLpae(stage=1, quirks=frozenset({"IO_PGTABLE_QUIRK_ARM_HD"})), mem)
    pt.map(0, 0x10_0000, 0x4000, RW)
    assert pt.read_and_clear_dirty(0, 0x4000).tolist() == [True] * 4
    assert pt.pte(0)[1] & 0x80  # AP[2] set: clean
    assert not pt.read_and_clear_dirty(0, 0x4000).any()
    assert pt.walk(0x2000, write=True, set_ad=True).write  # type: ignore[union-attr]
    assert pt.read_and_clear_dirty(0, 0x4000).tolist() == [False, False, True, False]
    with pytest.raises(UapiError) as e:
        pt.set_dirty(0)
    assert e.value.errno == errno.EOPNOTSUPP
    pt.destroy()
    s2 = ArmPageTable(ArmLpae(stage=2), mem)
    with pytest.raises(UapiError) as e:
        s2.read_and_clear_dirty(0, 0x1000)
    assert e.value.errno == errno.EINVAL
    s2.destroy()


def test_hardware_walk(mem: PhysMemory) -> None:
    """Without HD a read-only stage-1 page faults on write; stage-2 S2AP gates reads and writes."""
    pt = ArmPageTable(ArmLpae(stage=1), mem)
    pt.map(0, 0x5000, 0x1000, IOMMU_READ)
    assert pt.walk(0, write=True).reason.value == "permission"  # type: ignore[union-attr]
    pt.destroy()
    s2 = ArmPageTable(ArmLpae(stage=2), mem)
    s2.map(0, 0x5000, 0x1000, IOMMU_WRITE)
    assert s2.walk(0, write=False).reason.value == "permission"  # type: ignore[union-attr]
    assert s2.walk(0, write=True).pa == 0x5000  # type: ignore[union-attr]
    s2.destroy()


def test_bad_quirks() -> None:
    with pytest.raises(UapiError) as e:
        ArmLpae(stage=2, quirks=frozenset({"IO_PGTABLE_QUIRK_ARM_HD"}))
    assert e.value.errno == errno.EINVAL
