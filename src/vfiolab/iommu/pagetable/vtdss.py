"""Intel VT-d second-stage page table (generic_pt ``fmt/vtdss.h``; VT-d spec §3.7 and §9.8).

Entry bits: R 0, W 1, PS 7 (SS-PDPTE/SS-PDE), A 8, D 9, SNP 11, OA 51:12.  There is no present bit: the
kernel treats any non-zero entry as present, the hardware any entry with R or W.  3, 4 or 5 levels,
leaves of 4 KiB, 2 MiB and 1 GiB; tables are installed R|W.  Dirty tracking uses D per item.
"""

from __future__ import annotations

import errno
from typing import ClassVar, Final

from vfiolab.errors import UapiError
from vfiolab.iommu.pagetable.common import (
    DMA_INCOHERENT,
    FLUSH_RANGE,
    HW_FAULT,
    HW_LEAF,
    HW_TABLE,
    IOMMU_READ,
    IOMMU_WRITE,
    Entry,
    Format,
    genmask,
)

R: Final = 1 << 0
W: Final = 1 << 1
PS: Final = 1 << 7
A: Final = 1 << 8
D: Final = 1 << 9
SNP: Final = 1 << 11
OA_MASK: Final = genmask(51, 12)

FORCE_COHERENCE: Final = "VTDSS_FORCE_COHERENCE"
FORCE_WRITEABLE: Final = "VTDSS_FORCE_WRITEABLE"


class VtdSS(Format):
    """``fmt/iommu_vtdss.c``; ``top_level`` 2, 3 or 4 (3/4/5-level tables)."""

    name = "vtdss"
    MAX_TOP_LEVEL: ClassVar[int] = 4
    MAX_VA_LG2: ClassVar[int] = 57
    MAX_OA_LG2: ClassVar[int] = 52
    SUPPORTED: ClassVar[frozenset[str]] = frozenset(
        {FLUSH_RANGE, FORCE_COHERENCE, FORCE_WRITEABLE, DMA_INCOHERENT})
    HAS_DIRTY: ClassVar[bool] = True
    DIRTY_BIT: ClassVar[int] = D
    PRESENT_BIT: ClassVar[int] = 0

    def __init__(self, *, top_level: int = 3, hw_max_vasz_lg2: int = 48, hw_max_oasz_lg2: int = 52,
                 features: frozenset[str] = frozenset({FLUSH_RANGE})) -> None:
        # Defaults: intel_iommu_domain_alloc_second_stage() on 4-level hardware
        self.cfg_top_level = top_level
        super().__init__(hw_max_vasz_lg2=hw_max_vasz_lg2, hw_max_oasz_lg2=hw_max_oasz_lg2, features=features)

    def fmt_init(self, hw_max_vasz_lg2: int, hw_max_oasz_lg2: int) -> None:
        # vtdss_pt_iommu_fmt_init()
        if self.cfg_top_level > 4 or self.cfg_top_level < 2:
            raise UapiError(errno.EOPNOTSUPP, f"{self.name}: top_level {self.cfg_top_level}")
        self.top_level = self.cfg_top_level

    def can_have_leaf(self, level: int) -> bool:
        return level <= 2

    def set_prot(self, prot: int) -> int:
        # vtdss_pt_iommu_set_prot()
        if not prot & (IOMMU_READ | IOMMU_WRITE):
            raise UapiError(errno.EINVAL, "vtdss: mapping without read or write")
        pte = (R if prot & IOMMU_READ else 0) | (W if prot & IOMMU_WRITE else 0)
        if self.has(FORCE_COHERENCE):
            pte |= SNP
        if self.has(FORCE_WRITEABLE) and not prot & IOMMU_WRITE:
            raise UapiError(errno.EINVAL, "vtdss: read-only mapping on a nesting parent (ERRATA_772415_SPR17)")
        return pte

    def leaf(self, level: int, oa: int, lg2: int, attrs: int) -> int:
        return (oa & OA_MASK) | attrs | (PS if level else 0)

    def table(self, level: int, pa: Entry) -> Entry:
        return R | W | (pa & OA_MASK)

    def is_table(self, e: Entry, level: int) -> Entry:
        return (e & PS) == 0 if level <= 2 else e >= 0  # above level 2 every entry is a table

    def table_pa(self, e: Entry) -> Entry:
        return e & OA_MASK

    def oa(self, e: Entry, level: int) -> Entry:
        return e & OA_MASK


    def hw_step(self, e: int, level: int) -> tuple[int, bool, bool]:
        # VT-d §9.8: an entry with neither R nor W is not present; PS only in SS-PDPTE/SS-PDE
        if not e & (R | W) or (e & PS and level > 2):
            return HW_FAULT, False, False
        leaf = level == 0 or bool(e & PS)
        return (HW_LEAF if leaf else HW_TABLE), bool(e & R), bool(e & W)

    def hw_update(self, e: int, level: int, leaf: bool, write: bool) -> int:
        # VT-d §3.7.3 (SSADE): A in every entry used, D in the leaf on a write
        return e | A | (D if leaf and write else 0)


    def hw_info(self, top_pa: int, top_level: int) -> dict[str, int]:
        # vtdss_pt_iommu_fmt_hw_info(): SSPTPTR and AW (top_level 2 -> aw 1 ... 4 -> aw 3)
        return {"ssptptr": top_pa & genmask(63, 12), "aw": top_level - 1}
