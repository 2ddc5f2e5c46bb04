"""Arm LPAE / VMSAv8-64 stage 1 and stage 2 tables with the 4 KiB granule, as SMMUv3 uses them through
``drivers/iommu/io-pgtable-arm.c`` (Linux 7.2 has no generic_pt Arm format).

Descriptor bits (Arm ARM D8.3): type 1:0 (1 block, 3 table/page), AttrIndx 4:2 or S2 MemAttr 5:2, NS 5,
AP[2:1] / S2AP 7:6, SH 9:8, AF 10, nG 11, OA 47:12, DBM 51, XN 54:53, NSTable 63.  Blocks of 2 MiB and
1 GiB, pages of 4 KiB.  With IO_PGTABLE_QUIRK_ARM_HD a writable stage-1 leaf carries DBM; AP[2] clear
then means "writable and dirty", and cleaning sets AP[2].

io-pgtable's semantics differ from generic_pt and are kept: the IOMMU core checks alignment (EINVAL)
and splits the range with iommu_pgsize(); an existing leaf is EEXIST; a table where a block goes is
torn down with everything under it; unmap walks the core's page-size chunks, stops at a hole or at a
block larger than the chunk (returning what it had unmapped), frees a table whenever a chunk's page
size covers it, and otherwise leaves empty tables in place.

Not modelled: the kernel's dirty walk, when asked to start inside a block, carries that offset into the
addresses it reports for every later leaf (and skips the first entries of later tables); here a range
starting inside a block reports that block from the range start and every later leaf from its own start.
"""

from __future__ import annotations

import errno
from typing import Any, ClassVar, Final

import numpy as np

from vfiolab.errors import UapiError
from vfiolab.iommu.pagetable.common import (
    HW_FAULT,
    HW_LEAF,
    HW_TABLE,
    IOMMU_CACHE,
    IOMMU_MMIO,
    IOMMU_NOEXEC,
    IOMMU_PRIV,
    IOMMU_READ,
    IOMMU_WRITE,
    ITEMS_LG2,
    MASK64,
    U64,
    Entry,
    Format,
    Segment,
    genmask,
    plan_leaves,
)
from vfiolab.iommu.pagetable.engine import I64, Bools, PageTable
from vfiolab.memory.phys import PhysMemory

TYPE_MASK: Final = 3
TYPE_BLOCK: Final = 1
TYPE_TABLE: Final = 3
TYPE_PAGE: Final = 3
ADDR_MASK: Final = genmask(47, 12)
NSTABLE: Final = 1 << 63
XN: Final = 3 << 53
DBM: Final = 1 << 51
AF: Final = 1 << 10
SH_OS: Final = 2 << 8
SH_IS: Final = 3 << 8
NS: Final = 1 << 5
AP_UNPRIV: Final = 1 << 6
AP_RDONLY: Final = 1 << 7
NG: Final = 1 << 11
ATTRINDX_SHIFT: Final = 2
HAP_READ: Final = 1 << 6
HAP_WRITE: Final = 2 << 6
MEMATTR_FWB_WB: Final = 0x6 << 2
MEMATTR_OIWB: Final = 0xF << 2
MEMATTR_NC: Final = 0x5 << 2
MEMATTR_DEV: Final = 0x1 << 2
MAIR_IDX_CACHE: Final = 1
MAIR_IDX_DEV: Final = 2
# MAIR: NC at 0, WBRWA at 1, DEVICE at 2, INC_OWBRWA at 3 (arm_64_lpae_alloc_pgtable_s1)
MAIR: Final = 0x44 | (0xFF << 8) | (0x04 << 16) | (0xF4 << 24)
_TCR_PS: Final = {32: 0, 36: 1, 40: 2, 42: 3, 44: 4, 48: 5, 52: 6}

QUIRK_ARM_NS: Final = "IO_PGTABLE_QUIRK_ARM_NS"
QUIRK_ARM_HD: Final = "IO_PGTABLE_QUIRK_ARM_HD"
QUIRK_ARM_S2FWB: Final = "IO_PGTABLE_QUIRK_ARM_S2FWB"
_SZ_4K_2M_1G: Final = (1 << 12) | (1 << 21) | (1 << 30)


class ArmLpae(Format):
    """ARM_64_LPAE_S1 / ARM_64_LPAE_S2 with the 4 KiB granule; ``ias``/``oas`` as the SMMU driver
    passes them (capped at 48 bits for this granule by arm_lpae_restrict_pgsizes())."""

    GRANULE_LG2: ClassVar[int] = 12
    MAX_TOP_LEVEL: ClassVar[int] = 3
    MAX_VA_LG2: ClassVar[int] = 48
    MAX_OA_LG2: ClassVar[int] = 48
    PRESENT_BIT: ClassVar[int] = 0  # io-pgtable tests "!pte"

    def __init__(self, *, stage: int = 1, ias: int = 48, oas: int = 48, quirks: frozenset[str] = frozenset()) -> None:
        if stage not in (1, 2):
            raise UapiError(errno.EINVAL, f"arm_lpae: stage {stage}")
        allowed = {QUIRK_ARM_NS, QUIRK_ARM_HD} if stage == 1 else {QUIRK_ARM_S2FWB}
        if quirks - allowed:  # arm_64_lpae_alloc_pgtable_s1/_s2: unknown quirk -> no table
            raise UapiError(errno.EINVAL, f"arm_lpae: quirks {sorted(quirks - allowed)} not valid for stage {stage}")
        self.stage = stage
        self.quirks = frozenset(quirks)
        self.name = f"arm_lpae_s{stage}"
        ias, oas = min(ias, 48), min(oas, 48)
        if oas not in _TCR_PS:
            raise UapiError(errno.EINVAL, f"arm_lpae: output size {oas} bits")
        self.ias, self.oas = ias, oas
        super().__init__(hw_max_vasz_lg2=ias, hw_max_oasz_lg2=oas, features=frozenset())

    def fmt_init(self, hw_max_vasz_lg2: int, hw_max_oasz_lg2: int) -> None:
        # io-pgtable-arm.c arm_lpae_alloc_pgtable(): levels from the input size; stage 2 concatenates
        # the first level when Arm DDI0487 R_SRKBC requires it (4 KiB, start level 0, oas 40/42)
        va_bits = self.ias - self.GRANULE_LG2
        levels = -(-va_bits // ITEMS_LG2)
        start_level = 4 - levels
        self.concatenated = self.stage == 2 and start_level == 0 and self.oas in (40, 42)
        if self.concatenated:
            levels -= 1
        self.top_level = levels - 1
        self.start_level = 4 - levels

    def _init_common(self) -> None:
        self.max_oasz_lg2 = min(self.max_oasz_lg2, self.MAX_OA_LG2)

    def can_have_leaf(self, level: int) -> bool:
        return level <= 2

    def set_prot(self, prot: int) -> int:
        # arm_lpae_prot_to_pte()
        if self.stage == 1:
            pte = NG
            if not prot & IOMMU_WRITE and prot & IOMMU_READ:
                pte |= AP_RDONLY
            elif QUIRK_ARM_HD in self.quirks:
                pte |= DBM
            if not prot & IOMMU_PRIV:
                pte |= AP_UNPRIV
            if prot & IOMMU_MMIO:
                pte |= MAIR_IDX_DEV << ATTRINDX_SHIFT
            elif prot & IOMMU_CACHE:
                pte |= MAIR_IDX_CACHE << ATTRINDX_SHIFT
        else:
            pte = (HAP_READ if prot & IOMMU_READ else 0) | (HAP_WRITE if prot & IOMMU_WRITE else 0)
            if prot & IOMMU_MMIO:
                pte |= MEMATTR_DEV
            elif prot & IOMMU_CACHE:
                pte |= MEMATTR_FWB_WB if QUIRK_ARM_S2FWB in self.quirks else MEMATTR_OIWB
            else:
                pte |= MEMATTR_NC
        pte |= SH_IS if prot & IOMMU_CACHE else SH_OS
        if prot & IOMMU_NOEXEC:
            pte |= XN
        if QUIRK_ARM_NS in self.quirks:
            pte |= NS
        return pte | AF

    def leaf(self, level: int, oa: int, lg2: int, attrs: int) -> int:
        # __arm_lpae_init_pte(): pages at the last level, blocks above
        return attrs | (TYPE_PAGE if level == 0 else TYPE_BLOCK) | (oa & ADDR_MASK)

    def table(self, level: int, pa: Entry) -> Entry:
        # arm_lpae_install_table()
        return (pa & ADDR_MASK) | TYPE_TABLE | (NSTABLE if QUIRK_ARM_NS in self.quirks else 0)

    def is_table(self, e: Entry, level: int) -> Entry:
        # iopte_leaf(): a block above the last level; anything else non-zero is followed as a table
        return (e & TYPE_MASK) != TYPE_BLOCK

    def table_pa(self, e: Entry) -> Entry:
        return e & ADDR_MASK

    def oa(self, e: Entry, level: int) -> Entry:
        return e & ADDR_MASK

    def dirty(self, e: Entry) -> Entry:
        # iopte_writeable_dirty(): DBM set and AP[2] clear
        return (e & (AP_RDONLY | DBM)) == DBM

    def clean(self, e: Entry) -> Entry:
        # iopte_set_writeable_clean(): set AP[2]
        return e | AP_RDONLY

    def maybe_dirty(self, block: U64) -> bool:
        return bool(int(np.bitwise_or.reduce(block, axis=None)) & DBM)

    def hw_step(self, e: int, level: int) -> tuple[int, bool, bool]:
        # Arm ARM D8.3: bit 0 valid; pages (3) only at level 3, blocks (1) only at levels 1-2 for 4 KiB
        t = e & TYPE_MASK
        if not e & 1 or (level == 0 and t != TYPE_PAGE) or (level == 3 and t == TYPE_BLOCK):
            return HW_FAULT, False, False
        if level and t == TYPE_TABLE:
            return HW_TABLE, True, True
        if not e & AF:  # no hardware access flag update: an access flag fault
            return HW_FAULT, False, False
        if self.stage == 2:
            return HW_LEAF, bool(e & HAP_READ), bool(e & HAP_WRITE)
        return HW_LEAF, True, not e & AP_RDONLY or (bool(e & DBM) and QUIRK_ARM_HD in self.quirks)

    def hw_update(self, e: int, level: int, leaf: bool, write: bool) -> int:
        # Hardware dirty state (HD, D8.4.6): a write through a DBM leaf clears AP[2]
        if leaf and write and self.stage == 1 and QUIRK_ARM_HD in self.quirks and e & DBM:
            return e & (MASK64 ^ AP_RDONLY)
        return e



    def hw_info(self, top_pa: int, top_level: int) -> dict[str, int]:
        # arm_64_lpae_alloc_pgtable_s1/_s2: TTBR/VTTBR and the TCR/VTCR fields the SMMU CD/STE take
        info = {"tsz": 64 - self.ias, "tg": 0, "ps": _TCR_PS[self.oas]}
        if self.stage == 1:
            info.update(ttbr=top_pa, mair=MAIR)
        else:
            info.update(vttbr=top_pa, sl=~(self.start_level + 1) & 3)  # SL0 is offset for 4 KiB
        return info


class ArmPageTable(PageTable):
    """An io-pgtable-arm table behind the IOMMU core's map/unmap loops (not generic_pt)."""

    EXISTS: int = errno.EEXIST

    def __init__(self, fmt: ArmLpae, mem: PhysMemory, **kwargs: Any) -> None:
        super().__init__(fmt, mem, **kwargs)
        self.arm = fmt
        self.pgsize_bitmap = _SZ_4K_2M_1G  # arm_lpae_restrict_pgsizes() for the 4 KiB granule
        self.aperture = (0, (1 << fmt.ias) - 1)  # arm_smmu_domain_finalise(): aperture_end = 2^ias - 1

    def _min_pagesz(self) -> int:
        return self.pgsize_bitmap & -self.pgsize_bitmap

    # ------------------------------------------------------------------ map
    def map(self, iova: int, pa: int, length: int, prot: int) -> None:
        """iommu_map() over io-pgtable: EINVAL unaligned, ERANGE beyond ias/oas, EINVAL without
        read or write, EEXIST over a leaf; a partial map is undone."""
        fmt = self.arm
        # iommu.c __iommu_map_domain_pgtbl(), then arm_lpae_map_pages() per chunk
        if iova < 0 or pa < 0 or length < 0 or (iova | pa | length) & (self._min_pagesz() - 1):
            raise UapiError(errno.EINVAL, f"unaligned: iova {iova:#x} pa {pa:#x} size {length:#x}")
        if length == 0:
            return
        if iova >> fmt.ias or pa >> fmt.oas:
            raise UapiError(errno.ERANGE, f"iova {iova:#x} / pa {pa:#x} beyond {fmt.ias}/{fmt.oas} bits")
        if not prot & (IOMMU_READ | IOMMU_WRITE):
            raise UapiError(errno.EINVAL, "map without IOMMU_READ or IOMMU_WRITE")
        attrs = fmt.set_prot(prot)
        segs, _ = plan_leaves(self.pgsize_bitmap, iova, iova + length - 1, pa)
        stop, err = iova + length, 0
        limit = min(1 << fmt.ias, iova + (1 << fmt.oas) - pa)  # a later chunk beyond ias/oas
        if stop > limit:
            stop, err = limit, errno.ERANGE
            segs = [s if s.end <= stop else Segment(s.va, s.oa, s.lg2, (stop - s.va) >> s.lg2)
                    for s in segs if s.va < stop]
        self._map_segments(iova, iova, [s for s in segs if s.count], stop, err, attrs)

    def _failed_from(self, seg: Segment, level: int, g0: int, h: int) -> int:
        # arm_lpae_map_pages() maps one table's worth per call; a leaf in the way fails that call
        return max(g0, h >> ITEMS_LG2 << ITEMS_LG2)

    def _tables_in_the_way(self, level: int, frames: I64) -> Bools:
        # arm_lpae_init_pte(): a table where a block goes is unmapped and freed, whatever it holds
        return np.zeros(len(frames), dtype=bool)

    # ------------------------------------------------------------------ unmap
    def unmap(self, iova: int, length: int) -> int:
        """iommu_unmap() over io-pgtable: the core's page-size chunks, each unmapped at its level
        (__arm_lpae_unmap()); stops at a hole or at a block on the way down."""
        fmt = self.arm
        if iova < 0 or length <= 0 or (iova | length) & (self._min_pagesz() - 1) or iova >> fmt.ias:
            return 0
        last = min(iova + length, 1 << fmt.ias) - 1
        segs, _ = plan_leaves(self.pgsize_bitmap, iova, iova + length - 1, iova)
        levels, rows = self._visit(iova, last, floor=max(1, max(fmt.pgsz_to_level(s.lg2) for s in segs)))
        stop = last + 1
        for seg in segs:
            if seg.va >= stop:
                break
            lvl = fmt.pgsz_to_level(seg.lg2)
            s_last = min(seg.end, stop) - 1
            for up in range(lvl + 1, max(levels) + 1):  # every entry on the way must be a table
                it = levels[up]
                isz = fmt.item_lg2(up)
                bad = ~it.table & (it.g >= seg.va >> isz) & (it.g <= s_last >> isz)
                if bad.any():
                    stop = min(stop, max(int(it.g[np.argmax(bad)]) << isz, seg.va))
            if stop <= seg.va:
                break
            s_last = min(seg.end, stop) - 1
            if lvl == 0:
                hole = self._first_hole0(rows, seg.va >> 12, s_last >> 12)
                if hole is not None:
                    stop = min(stop, hole << 12)
            else:
                it = levels[lvl]
                isz = fmt.item_lg2(lvl)
                empty = ~it.present & (it.g >= seg.va >> isz) & (it.g <= s_last >> isz)
                if empty.any():
                    stop = min(stop, int(it.g[np.argmax(empty)]) << isz)
        if stop <= iova:
            return 0
        for seg in segs:
            if seg.va >= stop:
                break
            lvl = fmt.pgsz_to_level(seg.lg2)
            s_last = min(seg.end, stop) - 1
            if lvl == 0:
                self._zero_items0(rows, seg.va >> 12, s_last >> 12)
                continue
            it = levels[lvl]
            isz = fmt.item_lg2(lvl)
            sel = (it.g >= seg.va >> isz) & (it.g <= s_last >> isz)
            tab = sel & it.table
            if tab.any():  # a table under a chunk's page size goes with all it holds
                self._free_tables(lvl, it.g[tab], it.f[tab])
            self._store(lvl, it.g[sel], it.f[sel], 0)
        self._flush(iova, stop - iova, True)
        return stop - iova

    # ------------------------------------------------------------------ lookups and dirty
    def iova_to_phys(self, iova: int) -> int:
        """arm_lpae_iova_to_phys(): the index masks drop bits above ias, so such IOVAs alias."""
        return super().iova_to_phys(iova & ((1 << self.arm.ias) - 1))

    def set_dirty(self, iova: int) -> None:
        """io-pgtable has no set_dirty op."""
        raise UapiError(errno.EOPNOTSUPP, "io-pgtable-arm has no set_dirty")

    def read_and_clear_dirty(self, iova: int, length: int, *, clear: bool = True,
                             page_size: int | None = None) -> Bools:
        """arm_lpae_read_and_clear_dirty(): stage 1 only (EINVAL otherwise); each dirty leaf is
        reported from the walk position, which is the range start for the first one."""
        fmt = self.arm
        if length <= 0 or iova < 0 or (iova + length - 1) >> fmt.ias:
            raise UapiError(errno.EINVAL, f"dirty range {iova:#x}+{length:#x}")
        if fmt.stage != 1:
            raise UapiError(errno.EINVAL, "dirty tracking needs a stage-1 table")
        return self._dirty(iova, length, iova, iova + length - 1, clear, page_size)
