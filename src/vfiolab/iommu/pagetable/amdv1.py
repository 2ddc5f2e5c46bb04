"""AMD IOMMU v1 host page table (generic_pt ``fmt/amdv1.h``; AMD IOMMU spec §2.2.3, Tables 14/15), and
the iommufd selftest's 2 KiB-page variant (``fmt/iommu_mock.c``).

Entry bits: PR 0, D 6, NextLevel 11:9, OA 51:12, FC 60, IR 61, IW 62.  NextLevel 0 is a leaf of one item;
7 is a leaf whose size is a run of trailing ones in the OA field ("page size" encoding), written into
every item it spans.  Table entries carry NextLevel = their own level and IR|IW (permissions are ANDed
down the walk).  The top level can grow (PT_FEAT_DYNAMIC_TOP, forced on), up to mode 6; the top-most
level holds no leaves; every power-of-two page size except 512 GiB is possible.

The hardware walk follows a table entry to the level below whatever its NextLevel says (the kernel only
writes NextLevel = level; AMD's level skipping is not modelled) and sets only D (bit 6) on writes.
"""

from __future__ import annotations

import errno
from typing import ClassVar, Final

import numpy as np
import numpy.typing as npt

from vfiolab.errors import UapiError
from vfiolab.iommu.pagetable.common import (
    DYNAMIC_TOP,
    FLUSH_RANGE,
    FLUSH_RANGE_NO_GAPS,
    FULL_VA,
    HW_FAULT,
    HW_LEAF,
    HW_TABLE,
    IOMMU_READ,
    IOMMU_WRITE,
    ITEMS_LG2,
    U64,
    Entry,
    Format,
    genmask,
)

PR: Final = 1 << 0
D: Final = 1 << 6
NEXT_LEVEL: Final = genmask(11, 9)
OA_MASK: Final = genmask(51, 12)
FC: Final = 1 << 60
IR: Final = 1 << 61
IW: Final = 1 << 62
NL_DEFAULT: Final = 0
NL_SIZE: Final = 7

ENCRYPT_TABLES: Final = "AMDV1_ENCRYPT_TABLES"
FORCE_COHERENCE: Final = "AMDV1_FORCE_COHERENCE"
_SZ_512G: Final = 1 << 39


class AmdV1(Format):
    """The AMD v1 format as ``fmt/iommu_amdv1.c`` instantiates it (64-bit VA, 4 KiB granule)."""

    name = "amdv1"
    GRANULE_LG2: ClassVar[int] = 12
    MAX_TOP_LEVEL: ClassVar[int] = 5
    MAX_VA_LG2: ClassVar[int] = 64
    MAX_OA_LG2: ClassVar[int] = 52
    SUPPORTED: ClassVar[frozenset[str]] = frozenset(
        {FULL_VA, DYNAMIC_TOP, FLUSH_RANGE, FLUSH_RANGE_NO_GAPS, ENCRYPT_TABLES, FORCE_COHERENCE})
    FORCED: ClassVar[frozenset[str]] = frozenset({DYNAMIC_TOP, ENCRYPT_TABLES, FORCE_COHERENCE})
    HAS_DIRTY: ClassVar[bool] = True
    DIRTY_BIT: ClassVar[int] = D
    HAS_CONTIG: ClassVar[bool] = True

    def __init__(self, *, starting_level: int = 2, hw_max_vasz_lg2: int | None = None,
                 hw_max_oasz_lg2: int | None = None, features: frozenset[str] | None = None) -> None:
        self.starting_level = starting_level
        super().__init__(hw_max_vasz_lg2=self.MAX_VA_LG2 if hw_max_vasz_lg2 is None else hw_max_vasz_lg2,
                         hw_max_oasz_lg2=self.MAX_OA_LG2 if hw_max_oasz_lg2 is None else hw_max_oasz_lg2,
                         features=self.FORCED | {FLUSH_RANGE} if features is None else features)

    def fmt_init(self, hw_max_vasz_lg2: int, hw_max_oasz_lg2: int) -> None:
        # amdv1.h amdv1pt_iommu_fmt_init()
        if self.starting_level == 0 or self.starting_level > self.MAX_TOP_LEVEL:
            raise UapiError(errno.EINVAL, f"{self.name}: starting_level {self.starting_level}")
        max_vasz = self.MAX_VA_LG2
        if not self.has(DYNAMIC_TOP) and self.starting_level != self.MAX_TOP_LEVEL:
            max_vasz = self.GRANULE_LG2 + ITEMS_LG2 * (self.starting_level + 1)
        self.max_vasz_lg2 = min(max_vasz, hw_max_vasz_lg2)
        self.max_oasz_lg2 = min(self.MAX_OA_LG2, hw_max_oasz_lg2)
        self.top_level = self.starting_level

    def can_have_leaf(self, level: int) -> bool:
        # Table 15: the top-most level cannot have translation entries
        return level < self.MAX_TOP_LEVEL

    def possible_sizes(self, level: int) -> int:
        # Table 14: every power of two up to the level's span, but 512 GiB (hardware bug)
        if not self.can_have_leaf(level):
            return 0
        isz = self.item_lg2(level)
        return genmask(min(51, isz + ITEMS_LG2 - 1), isz) & ~_SZ_512G

    def set_prot(self, prot: int) -> int:
        # amdv1pt_iommu_set_prot(); __sme_set() is the identity without SME
        pte = FC if self.has(FORCE_COHERENCE) else 0
        if prot & IOMMU_READ:
            pte |= IR
        if prot & IOMMU_WRITE:
            pte |= IW
        return pte

    def _oa_field(self, oa: int) -> int:
        return ((oa >> self.GRANULE_LG2) << 12) & OA_MASK

    def leaf(self, level: int, oa: int, lg2: int, attrs: int) -> int:
        # amdv1pt_install_leaf_entry()
        e = PR | self._oa_field(oa) | attrs
        if lg2 != self.item_lg2(level):
            e |= (NL_SIZE << 9) | ((((1 << (lg2 - self.GRANULE_LG2 - 1)) - 1) << 12) & OA_MASK)
        return e

    def table(self, level: int, pa: Entry) -> Entry:
        # amdv1pt_install_table(): NextLevel = this level, IR|IW always
        return PR | (level << 9) | (((pa >> self.GRANULE_LG2) << 12) & OA_MASK) | IR | IW

    def is_table(self, e: Entry, level: int) -> Entry:
        # amdv1pt_load_entry_raw(): NextLevel 0 and 7 are leaves; NextLevel + 1 has bit 1 or 2 set
        # exactly for 1..6
        return (((e >> 9) + 1) & 6) != 0

    def table_pa(self, e: Entry) -> Entry:
        return (e & OA_MASK) >> (12 - self.GRANULE_LG2)  # the OA field holds pa >> granule at bit 12

    def table_frame(self, e: Entry) -> Entry:
        return (e & OA_MASK) >> (24 - self.GRANULE_LG2)

    def oa(self, e: Entry, level: int) -> Entry:
        # amdv1pt_entry_oa(): with the size encoding, drop the trailing ones of the OA field
        field = (e & OA_MASK) >> 12
        if isinstance(field, np.ndarray):
            size = ((e >> 9) & 7) == NL_SIZE
            ones = (~field) & (field + np.uint64(1))  # lowest clear bit
            field = np.where(size, field & ~(ones - np.uint64(1)), field)
            return field << np.uint64(self.GRANULE_LG2)
        if (e >> 9) & 7 == NL_SIZE:
            low_zero = (~field & (field + 1)).bit_length() - 1
            field &= ~((1 << low_zero) - 1)
        return field << self.GRANULE_LG2

    def _contig_shift(self, level: int) -> int:
        # amdv1pt_entry_num_contig_lg2(): ffz(entry >> (12 - 1 + item_lg2 - granule))
        return 12 - 1 + self.item_lg2(level) - self.GRANULE_LG2

    def contig_lg2(self, e: int, level: int) -> int:
        if (e >> 9) & 7 != NL_SIZE:
            return 0
        code = (e >> self._contig_shift(level)) & 0xFFFFFFFF
        return (~code & (code + 1)).bit_length() - 1

    def contig_lg2_v(self, e: U64, level: int) -> npt.NDArray[np.int64]:
        code = (e >> np.uint64(self._contig_shift(level))) & np.uint64(0xFFFFFFFF)
        low = (~code) & (code + np.uint64(1))
        n = np.log2(np.maximum(low, np.uint64(1)).astype(np.float64)).astype(np.int64)
        return np.where(((e >> np.uint64(9)) & np.uint64(7)) == NL_SIZE, n, 0)


    def any_contig(self, block: U64, level: int) -> bool:
        # NextLevel of a leaf is 0 or 7: any NextLevel bit in a leaf table means a size-encoded entry
        return bool(int(np.bitwise_or.reduce(block, axis=None)) & NEXT_LEVEL)

    def hw_step(self, e: int, level: int) -> tuple[int, bool, bool]:
        # AMD IOMMU spec §2.2.3: PR, then NextLevel; IR/IW are ANDed along the walk
        if not e & PR:
            return HW_FAULT, False, False
        kind = HW_LEAF if level == 0 or not self.is_table(e, level) else HW_TABLE
        return kind, bool(e & IR), bool(e & IW)

    def hw_update(self, e: int, level: int, leaf: bool, write: bool) -> int:
        # Host dirty tracking (DTE.HAD): the IOMMU sets D in the PTE it wrote through
        return e | D if leaf and write else e


    def hw_info(self, top_pa: int, top_level: int) -> dict[str, int]:
        # amdv1pt_iommu_fmt_hw_info(): DTE host page table root and mode
        return {"host_pt_root": top_pa & genmask(51, 12), "mode": top_level + 1}


class AmdV1Mock(AmdV1):
    """``fmt/iommu_mock.c``: AMDv1 with 2 KiB pages (AMDV1_IOMMUFD_SELFTEST), no optional features."""

    name = "amdv1_mock"
    GRANULE_LG2: ClassVar[int] = 11
    MAX_TOP_LEVEL: ClassVar[int] = 4
    MAX_VA_LG2: ClassVar[int] = 56
    MAX_OA_LG2: ClassVar[int] = 51
    SUPPORTED: ClassVar[frozenset[str]] = frozenset()
    FORCED: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, *, starting_level: int = 2, hw_max_vasz_lg2: int | None = 56,
                 hw_max_oasz_lg2: int | None = 51, features: frozenset[str] | None = None) -> None:
        # drivers/iommu/iommufd/selftest.c mock_domain_alloc_pgtable(): 56/51, starting_level 2
        super().__init__(starting_level=starting_level, hw_max_vasz_lg2=hw_max_vasz_lg2,
                         hw_max_oasz_lg2=hw_max_oasz_lg2,
                         features=frozenset() if features is None else features)

    def hw_info(self, top_pa: int, top_level: int) -> dict[str, int]:
        # PT_FMT_VARIANT: the mock has no hw_info
        return {"top_pa": top_pa, "top_level": top_level}
