"""RISC-V IOMMU page table, Sv39/Sv48/Sv57 (generic_pt ``fmt/riscv.h``; Privileged ISA §12.3-12.6,
Svnapot ch. 13; RISC-V IOMMU spec fsc/iosatp MODE 8/9/10).

Entry bits: V 0, R 1, W 2, X 3, U 4, G 5, A 6, D 7, RSW 9:8, PPN 53:10, PBMT 62:61, N 63.  A leaf is any
entry with R, W or X; every level can hold leaves.  With Svnapot a 64 KiB leaf is 16 identical items
with N set and ppn[3:0] = 1000.  Leaves are created accessed (and dirty when writable); the format has no
dirty tracking in generic_pt.
"""

from __future__ import annotations

import errno
from typing import ClassVar, Final

import numpy as np
import numpy.typing as npt

from vfiolab.errors import UapiError
from vfiolab.iommu.pagetable.common import (
    DETAILED_GATHER,
    FLUSH_RANGE,
    HW_FAULT,
    HW_LEAF,
    HW_TABLE,
    IOMMU_NOEXEC,
    IOMMU_READ,
    IOMMU_WRITE,
    SIGN_EXTEND,
    U64,
    Entry,
    Format,
    genmask,
)

V: Final = 1 << 0
R: Final = 1 << 1
W: Final = 1 << 2
X: Final = 1 << 3
U: Final = 1 << 4
G: Final = 1 << 5
A: Final = 1 << 6
D: Final = 1 << 7
PPN: Final = genmask(53, 10)
PPN_64K: Final = genmask(53, 14)
NC: Final = 1 << 61
IO: Final = 1 << 62
N: Final = 1 << 63
PPN_64K_SZ: Final = 1 << 13

SVNAPOT_64K: Final = "RISCV_SVNAPOT_64K"
SVPBMT: Final = "RISCV_SVPBMT"


class RiscV64(Format):
    """``fmt/iommu_riscv64.c``; the top level follows hw_max_vasz_lg2 (39/48/57)."""

    name = "riscv64"
    MAX_TOP_LEVEL: ClassVar[int] = 4
    MAX_VA_LG2: ClassVar[int] = 57
    MAX_OA_LG2: ClassVar[int] = 56
    SUPPORTED: ClassVar[frozenset[str]] = frozenset({SIGN_EXTEND, FLUSH_RANGE, SVNAPOT_64K, DETAILED_GATHER})
    FORCED: ClassVar[frozenset[str]] = frozenset({DETAILED_GATHER})
    HAS_CONTIG: ClassVar[bool] = True

    def __init__(self, *, hw_max_vasz_lg2: int = 39, hw_max_oasz_lg2: int = 56,
                 features: frozenset[str] = frozenset({SIGN_EXTEND, FLUSH_RANGE, SVNAPOT_64K,
                                                       DETAILED_GATHER})) -> None:
        # Defaults: drivers/iommu/riscv/iommu.c on Sv39 hardware with Svnapot
        super().__init__(hw_max_vasz_lg2=hw_max_vasz_lg2, hw_max_oasz_lg2=hw_max_oasz_lg2, features=features)

    def fmt_init(self, hw_max_vasz_lg2: int, hw_max_oasz_lg2: int) -> None:
        # riscvpt_iommu_fmt_init()
        levels = {39: 2, 48: 3, 57: 4}
        if hw_max_vasz_lg2 not in levels:
            raise UapiError(errno.EINVAL, f"{self.name}: hw_max_vasz_lg2 {hw_max_vasz_lg2}")
        self.top_level = levels[hw_max_vasz_lg2]
        self.max_oasz_lg2 = min(self.MAX_OA_LG2, hw_max_oasz_lg2)

    def contig_count_lg2(self, level: int) -> int:
        return 4 if level == 0 and self.has(SVNAPOT_64K) else 0

    def set_prot(self, prot: int) -> int:
        # riscvpt_iommu_set_prot()
        pte = A | U
        if prot & IOMMU_WRITE:
            pte |= W | R | D
        if prot & IOMMU_READ:
            pte |= R
        if not prot & IOMMU_NOEXEC:
            pte |= X
        if pte & (X | W | R) == 0:
            raise UapiError(errno.EOPNOTSUPP, "riscv: no permission bit to set")
        return pte

    def leaf(self, level: int, oa: int, lg2: int, attrs: int) -> int:
        e = V | (((oa >> 12) << 10) & PPN) | attrs
        if self.has(SVNAPOT_64K) and level == 0 and lg2 != self.GRANULE_LG2:
            e |= N | PPN_64K_SZ
        return e

    def table(self, level: int, pa: Entry) -> Entry:
        return V | (((pa >> 12) << 10) & PPN)

    def is_table(self, e: Entry, level: int) -> Entry:
        return (e & (X | W | R)) == 0

    def table_pa(self, e: Entry) -> Entry:
        return ((e & PPN) >> 10) << 12

    def oa(self, e: Entry, level: int) -> Entry:
        napot = ((e & PPN_64K) >> 14) << 16
        plain = ((e & PPN) >> 10) << 12
        if isinstance(e, np.ndarray):
            return np.where((e & N) != 0, napot, plain) if self.has(SVNAPOT_64K) else plain
        return napot if self.has(SVNAPOT_64K) and e & N else plain

    def contig_lg2(self, e: int, level: int) -> int:
        return 4 if e & N else 0

    def contig_lg2_v(self, e: U64, level: int) -> npt.NDArray[np.int64]:
        return np.where((e & N) != 0, 4, 0).astype(np.int64)

    def any_contig(self, block: U64, level: int) -> bool:
        return bool(int(np.bitwise_or.reduce(block, axis=None)) & N)

    def hw_step(self, e: int, level: int) -> tuple[int, bool, bool]:
        # Privileged ISA §12.3.2: V=0 or W without R is a fault; R|W|X makes a leaf
        if not e & V or (e & W and not e & R):
            return HW_FAULT, False, False
        if e & (R | W | X) == 0:
            return (HW_FAULT, False, False) if level == 0 else (HW_TABLE, True, True)
        return HW_LEAF, bool(e & R), bool(e & W)

    def hw_update(self, e: int, level: int, leaf: bool, write: bool) -> int:
        # Svadu: A on access, D on write, leaves only
        return e | A | (D if write else 0) if leaf else e


    def hw_info(self, top_pa: int, top_level: int) -> dict[str, int]:
        # riscvpt_iommu_fmt_hw_info(): iosatp PPN and MODE (8 = Sv39 ... 10 = Sv57)
        return {"ppn": top_pa >> 12, "fsc_iosatp_mode": top_level + 6}
