"""x86-64 4/5-level paging as an IOMMU table (generic_pt ``fmt/x86_64.h``): VT-d first stage (Intel SDM
Vol. 3 §4.4, VT-d §9.7) and AMD v2 guest tables (AMD IOMMU spec §2.2.6).

Entry bits: P 0, R/W 1, U/S 2, A 5, D 6, PS 7 (PDPTE/PDE), OA 51:12, XD 63.  Leaves of 4 KiB, 2 MiB and
1 GiB at levels 0-2; tables are installed P|RW|U|A; write leaves are created already dirty (RW|D).  VT-d
uses a sign-extended VA (PT_FEAT_SIGN_EXTEND); AMD's PASID-0 tables do not.  The format has no dirty
tracking in generic_pt.
"""

from __future__ import annotations

import errno
from typing import ClassVar, Final

from vfiolab.errors import UapiError
from vfiolab.iommu.pagetable.common import (
    DMA_INCOHERENT,
    FLUSH_RANGE,
    FLUSH_RANGE_NO_GAPS,
    HW_FAULT,
    HW_LEAF,
    HW_TABLE,
    IOMMU_WRITE,
    SIGN_EXTEND,
    Entry,
    Format,
    genmask,
)

P: Final = 1 << 0
RW: Final = 1 << 1
U: Final = 1 << 2
A: Final = 1 << 5
D: Final = 1 << 6
PS: Final = 1 << 7
OA_MASK: Final = genmask(51, 12)
XD: Final = 1 << 63

AMD_ENCRYPT_TABLES: Final = "X86_64_AMD_ENCRYPT_TABLES"


class X86_64(Format):
    """``fmt/iommu_x86_64.c``; ``top_level`` 3 (4-level) or 4 (5-level)."""

    name = "x86_64"
    MAX_TOP_LEVEL: ClassVar[int] = 4
    MAX_VA_LG2: ClassVar[int] = 57
    MAX_OA_LG2: ClassVar[int] = 52
    SUPPORTED: ClassVar[frozenset[str]] = frozenset(
        {SIGN_EXTEND, FLUSH_RANGE, FLUSH_RANGE_NO_GAPS, AMD_ENCRYPT_TABLES, DMA_INCOHERENT})

    def __init__(self, *, top_level: int = 3, hw_max_vasz_lg2: int = 48, hw_max_oasz_lg2: int = 52,
                 features: frozenset[str] = frozenset({SIGN_EXTEND, FLUSH_RANGE})) -> None:
        # Defaults: intel_iommu_domain_alloc_first_stage() on 4-level hardware
        self.cfg_top_level = top_level
        super().__init__(hw_max_vasz_lg2=hw_max_vasz_lg2, hw_max_oasz_lg2=hw_max_oasz_lg2, features=features)

    def fmt_init(self, hw_max_vasz_lg2: int, hw_max_oasz_lg2: int) -> None:
        # x86_64_pt_iommu_fmt_init()
        if self.cfg_top_level < 3 or self.cfg_top_level > 4:
            raise UapiError(errno.EOPNOTSUPP, f"{self.name}: top_level {self.cfg_top_level}")
        self.top_level = self.cfg_top_level
        self.max_oasz_lg2 = min(self.MAX_OA_LG2, hw_max_oasz_lg2)

    def can_have_leaf(self, level: int) -> bool:
        return level <= 2

    def set_prot(self, prot: int) -> int:
        # x86_64_pt_iommu_set_prot(): every leaf is user and accessed; writable leaves start dirty
        pte = U | A
        if prot & IOMMU_WRITE:
            pte |= RW | D
        return pte

    def leaf(self, level: int, oa: int, lg2: int, attrs: int) -> int:
        return P | (oa & OA_MASK) | attrs | (PS if level else 0)

    def table(self, level: int, pa: Entry) -> Entry:
        return P | RW | U | A | (pa & OA_MASK)

    def is_table(self, e: Entry, level: int) -> Entry:
        return (e & PS) == 0 if level <= 2 else e >= 0  # above level 2 every entry is a table

    def table_pa(self, e: Entry) -> Entry:
        return e & OA_MASK

    def oa(self, e: Entry, level: int) -> Entry:
        return e & OA_MASK

    def hw_step(self, e: int, level: int) -> tuple[int, bool, bool]:
        # SDM §4.5: P, PS only in PDPTE/PDE (reserved above), R/W ANDed along the walk
        if not e & P or (e & PS and level > 2):
            return HW_FAULT, False, False
        leaf = level == 0 or bool(e & PS)
        return (HW_LEAF if leaf else HW_TABLE), True, bool(e & RW)

    def hw_update(self, e: int, level: int, leaf: bool, write: bool) -> int:
        # SDM §4.8: A in every entry used, D in the leaf on a write
        return e | A | (D if leaf and write else 0)


    def hw_info(self, top_pa: int, top_level: int) -> dict[str, int]:
        # x86_64_pt_iommu_fmt_hw_info(): GCR3 / FSPTPTR and the number of levels
        return {"gcr3_pt": top_pa & genmask(51, 12), "levels": top_level + 1}
