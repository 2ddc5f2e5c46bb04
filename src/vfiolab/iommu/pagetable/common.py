"""What every page-table format shares: the IOMMU_* prot flags, the format description the engine
drives, page-size selection, and the result types of a hardware walk.

The format interface mirrors ``drivers/iommu/generic_pt/pt_common.h``: a format says how big an item is
at each level, which levels may hold leaves and of which sizes, how leaf and table entries are encoded
and decoded, and how write-dirty state is read and cleared.  Decoders take a Python int or a numpy
uint64 array alike, so the engine can classify a whole table with one expression.
"""

from __future__ import annotations

import enum
import errno
from dataclasses import dataclass
from typing import Any, ClassVar, Final, TypeAlias

import numpy as np
import numpy.typing as npt

from vfiolab.errors import UapiError

# include/linux/iommu.h
IOMMU_READ: Final = 1 << 0
IOMMU_WRITE: Final = 1 << 1
IOMMU_CACHE: Final = 1 << 2
IOMMU_NOEXEC: Final = 1 << 3
IOMMU_MMIO: Final = 1 << 4
IOMMU_PRIV: Final = 1 << 5

MASK64: Final = (1 << 64) - 1
ITEMS_LG2: Final = 9  # 4 KiB of u64 items per table: PT_TABLEMEM_LG2SZ - ilog2(sizeof(u64))
ITEMS: Final = 1 << ITEMS_LG2

U64 = npt.NDArray[np.uint64]
Entry: TypeAlias = Any
"""A Python int or a numpy uint64 array: decoders and encoders take either and answer in kind."""


def genmask(hi: int, lo: int) -> int:
    """GENMASK_ULL(hi, lo)."""
    return ((1 << (hi + 1)) - 1) ^ ((1 << lo) - 1)


def fls(x: int) -> int:
    """Find last set, 1-based (0 for 0), as the kernel's fls64."""
    return x.bit_length()


def ffs0(x: int) -> int:
    """Index of the lowest set bit (the kernel's __ffs); x must be non-zero."""
    return (x & -x).bit_length() - 1


# Features (include/linux/generic_pt/common.h enum pt_features and the per-format enums).
DMA_INCOHERENT: Final = "DMA_INCOHERENT"
FULL_VA: Final = "FULL_VA"
DYNAMIC_TOP: Final = "DYNAMIC_TOP"
SIGN_EXTEND: Final = "SIGN_EXTEND"
FLUSH_RANGE: Final = "FLUSH_RANGE"
FLUSH_RANGE_NO_GAPS: Final = "FLUSH_RANGE_NO_GAPS"
DETAILED_GATHER: Final = "DETAILED_GATHER"


class Format:
    """One page-table format, configured: the engine's only window on entry bits.

    Subclasses set the class constants (the fmt header's PT_* enum) and implement the encoders and
    decoders; ``__init__`` runs the format's ``pt_iommu_fmt_init`` on the driver's configuration and
    leaves ``top_level``, ``max_vasz_lg2`` and ``max_oasz_lg2`` set.
    """

    name: str
    GRANULE_LG2: ClassVar[int] = 12
    MAX_TOP_LEVEL: ClassVar[int]
    MAX_VA_LG2: ClassVar[int]
    MAX_OA_LG2: ClassVar[int]
    SUPPORTED: ClassVar[frozenset[str]] = frozenset()
    FORCED: ClassVar[frozenset[str]] = frozenset()
    HAS_DIRTY: ClassVar[bool] = False
    """pt_entry_is_write_dirty() exists: read_and_clear_dirty and set_dirty work."""
    PRESENT_BIT: ClassVar[int] = 1
    """Bit whose presence means "not PT_ENTRY_EMPTY"; 0 when any non-zero entry counts."""

    top_level: int
    max_vasz_lg2: int
    max_oasz_lg2: int
    features: frozenset[str]

    def __init__(self, *, hw_max_vasz_lg2: int, hw_max_oasz_lg2: int, features: frozenset[str]) -> None:
        # iommu_pt.h pt_iommu_init(): the generic checks before and after the format's init
        if hw_max_vasz_lg2 > self.MAX_VA_LG2 or not hw_max_vasz_lg2 or not hw_max_oasz_lg2:
            raise UapiError(errno.EINVAL, f"{self.name}: hw_max_vasz_lg2={hw_max_vasz_lg2} "
                            f"hw_max_oasz_lg2={hw_max_oasz_lg2}")
        self.features = frozenset(features)
        self.max_vasz_lg2 = hw_max_vasz_lg2
        self.max_oasz_lg2 = hw_max_oasz_lg2
        self.fmt_init(hw_max_vasz_lg2, hw_max_oasz_lg2)
        if hw_max_oasz_lg2 > self.MAX_OA_LG2:
            raise UapiError(errno.EINVAL, f"{self.name}: hw_max_oasz_lg2 {hw_max_oasz_lg2} > "
                            f"{self.MAX_OA_LG2}")
        self._init_common()

    def fmt_init(self, hw_max_vasz_lg2: int, hw_max_oasz_lg2: int) -> None:
        """pt_iommu_<fmt>_fmt_init(): set top_level and adjust the limits; raise UapiError."""
        raise NotImplementedError

    def _init_common(self) -> None:
        # iommu_pt.h pt_init_common()
        if self.top_vasz_lg2(self.top_level) == 64:
            self.features |= {FULL_VA}
        if self.features - self.SUPPORTED or self.FORCED - self.features:
            raise UapiError(errno.EOPNOTSUPP, f"{self.name}: features {sorted(self.features)} not "
                            f"supported (supported {sorted(self.SUPPORTED)}, required {sorted(self.FORCED)})")
        if (not self.has(DYNAMIC_TOP) and self.top_level != self.MAX_TOP_LEVEL
                and self.max_vasz_lg2 > ITEMS_LG2 + self.item_lg2(self.top_level)):
            raise UapiError(errno.EOPNOTSUPP, f"{self.name}: top level {self.top_level} cannot "
                            f"hold a {self.max_vasz_lg2}-bit VA")
        self.max_oasz_lg2 = min(self.max_oasz_lg2, self.MAX_OA_LG2)
        if SIGN_EXTEND in self.features and (FULL_VA in self.features or DYNAMIC_TOP in self.features):
            raise UapiError(errno.EINVAL, f"{self.name}: SIGN_EXTEND with FULL_VA/DYNAMIC_TOP")

    def has(self, feature: str) -> bool:
        """pt_feature(): forced features are always on."""
        return feature in self.features or feature in self.FORCED

    # ------------------------------------------------------------------ geometry
    def item_lg2(self, level: int) -> int:
        """pt_table_item_lg2sz(): VA bytes one item of ``level`` translates (log2)."""
        return self.GRANULE_LG2 + ITEMS_LG2 * level

    def top_vasz_lg2(self, top_level: int) -> int:
        """_pt_top_range(): VA bits spanned by a table tree whose top is ``top_level``."""
        if self.has(DYNAMIC_TOP) and top_level != self.MAX_TOP_LEVEL:
            return min(self.max_vasz_lg2, ITEMS_LG2 + self.item_lg2(top_level))
        return self.max_vasz_lg2

    def can_have_leaf(self, level: int) -> bool:
        """pt_can_have_leaf()."""
        return True

    def contig_count_lg2(self, level: int) -> int:
        """pt_contig_count_lg2() for formats with one contiguous size per level."""
        return 0

    def possible_sizes(self, level: int) -> int:
        """pt_possible_sizes(): bitmap of leaf sizes installable at ``level``."""
        if not self.can_have_leaf(level):
            return 0
        isz = self.item_lg2(level)
        return (1 << isz) | (1 << (isz + self.contig_count_lg2(level)))

    def pgsz_to_level(self, lg2: int) -> int:
        """pt_pgsz_lg2_to_level()."""
        return (lg2 - self.GRANULE_LG2) // ITEMS_LG2

    # ------------------------------------------------------------------ encoders
    def set_prot(self, prot: int) -> int:
        """pt_iommu_set_prot(): IOMMU_* prot to the leaf descriptor bits (may raise UapiError)."""
        raise NotImplementedError

    def leaf(self, level: int, oa: int, lg2: int, attrs: int) -> int:
        """pt_install_leaf_entry(): the value of every item of a leaf of size 2**lg2 at ``oa``
        (for formats whose contiguous items differ, the first item)."""
        raise NotImplementedError

    def leaf_stride(self, level: int, lg2: int) -> int:
        """Entry delta between consecutive leaves of size 2**lg2 (entries are affine in the OA)."""
        return self.leaf(level, 1 << lg2, lg2, 0) - self.leaf(level, 0, lg2, 0)

    def table(self, level: int, pa: Entry) -> Entry:
        """pt_install_table(): entry at ``level`` pointing at the table page at ``pa``."""
        raise NotImplementedError

    # ------------------------------------------------------------------ decoders (kernel's view)
    def present(self, e: Entry) -> Entry:
        """pt_load_entry_raw() != PT_ENTRY_EMPTY."""
        return (e & self.PRESENT_BIT) != 0 if self.PRESENT_BIT else e != 0

    def is_table(self, e: Entry, level: int) -> Entry:
        """For a present entry at ``level`` > 0: PT_ENTRY_TABLE (else PT_ENTRY_OA)."""
        raise NotImplementedError

    def table_pa(self, e: Entry) -> Entry:
        """pt_table_pa()."""
        raise NotImplementedError

    def table_frame(self, e: Entry) -> Entry:
        """pt_table_pa() >> 12: the frame number of the lower table."""
        return self.table_pa(e) >> 12

    def oa(self, e: Entry, level: int) -> Entry:
        """pt_entry_oa(): output address of the start of the (contiguous) entry."""
        raise NotImplementedError

    def contig_lg2(self, e: int, level: int) -> int:
        """pt_entry_num_contig_lg2() of one entry."""
        return 0

    def contig_lg2_v(self, e: U64, level: int) -> npt.NDArray[np.int64]:
        """pt_entry_num_contig_lg2() of many present leaf entries."""
        return np.zeros(len(e), dtype=np.int64)

    HAS_CONTIG: ClassVar[bool] = False

    # ------------------------------------------------------------------ whole-table checks
    def any_present(self, block: U64) -> bool:
        """Is any entry of ``block`` present? (one reduction, no temporaries)"""
        if self.PRESENT_BIT:
            return bool(int(np.bitwise_or.reduce(block, axis=None)) & self.PRESENT_BIT)
        return bool(block.any())

    def all_present(self, block: U64) -> bool:
        """Is every entry of ``block`` present?"""
        if self.PRESENT_BIT:
            return bool(int(np.bitwise_and.reduce(block, axis=None)) & self.PRESENT_BIT)
        return bool(np.count_nonzero(block) == block.size)

    def any_contig(self, block: U64, level: int) -> bool:
        """Might ``block`` hold contiguous (multi-item) leaves?"""
        return False

    # ------------------------------------------------------------------ dirty (kernel's view)
    DIRTY_BIT: ClassVar[int] = 0
    """For formats whose write-dirty state is one bit per item (AMD v1 D, VT-d SS D)."""

    def dirty(self, e: Entry) -> Entry:
        """pt_entry_is_write_dirty() of one item."""
        return (e & self.DIRTY_BIT) != 0

    def clean(self, e: Entry) -> Entry:
        """pt_entry_make_write_clean() of one item."""
        return e & (MASK64 ^ self.DIRTY_BIT)

    def make_dirty(self, e: int) -> int:
        """pt_entry_make_write_dirty()."""
        return e | self.DIRTY_BIT

    def maybe_dirty(self, block: U64) -> bool:
        """Cheap check over many leaf entries: False means none of them is write dirty."""
        return bool(int(np.bitwise_or.reduce(block, axis=None)) & self.DIRTY_BIT)

    # ------------------------------------------------------------------ hardware walk
    def hw_step(self, e: int, level: int) -> tuple[int, bool, bool]:
        """What the IOMMU makes of entry ``e`` at ``level``: (kind, readable, writable), kind one of
        HW_FAULT, HW_TABLE, HW_LEAF; permissions are those this entry grants (ANDed along the walk)."""
        raise NotImplementedError

    def hw_update(self, e: int, level: int, leaf: bool, write: bool) -> int:
        """The accessed/dirty bits the IOMMU sets in ``e`` for an access it permitted."""
        return e



    def hw_info(self, top_pa: int, top_level: int) -> dict[str, int]:
        """pt_iommu_<fmt>_hw_info(): what the driver programs into the device/context entry."""
        raise NotImplementedError


HW_FAULT: Final = 0
HW_TABLE: Final = 1
HW_LEAF: Final = 2


class FaultReason(enum.Enum):
    """Why a request was not translated (a page-table walk stops with the first three; the IOMMU
    core adds the others)."""

    BLOCKED = "blocked"
    """No translation is attached for this RID/PASID, or the blocking domain is (context/PASID entry
    not present)."""
    NOT_PRESENT = "not-present"
    """A page-table entry on the walk is not present."""
    PERMISSION = "permission"
    """The translation exists but does not allow the access."""
    ADDRESS_SIZE = "address-size"
    """The IOVA is outside what the page table can translate."""
    STAGE2 = "stage2"
    """Nested: a stage-1 table access (or the stage-1 output) failed stage-2 translation."""
    PASID = "pasid"
    """The request carried a PASID the device may not use (PASID not enabled or beyond its width)."""
    BAD_PA = "bad-pa"
    """The translation points outside RAM."""
    ATS_DISABLED = "ats-disabled"
    """A translated request or translation request from a function whose ATS is not enabled."""
    PRI_INVALID = "pri-invalid"
    """A page request was answered Invalid Request (the device gives up on the access)."""
    PRI_FAILURE = "pri-failure"
    """A page request was answered Response Failure, or the device's PRI is stopped."""


@dataclass(frozen=True, slots=True)
class Translation:
    """A successful walk: ``pa`` for ``iova``, inside a leaf of ``size`` bytes at ``level``."""

    iova: int
    pa: int
    size: int
    level: int
    read: bool
    write: bool
    pte_pa: int
    """Physical address of the leaf item that translated ``iova``."""


@dataclass(frozen=True, slots=True)
class WalkFault:
    """A failed walk: ``reason`` met at ``level`` (-1 for an address outside the table)."""

    iova: int
    reason: FaultReason
    level: int


# ---------------------------------------------------------------------- page size selection
def best_pgsize(pgsz_bitmap: int, va: int, last: int, oa: int) -> int:
    """pt_iter.h pt_compute_best_pgsize(): largest size (lg2) that va/oa alignment and the length
    allow, or 0 when none fits."""
    length = last - va + 1
    mask = va | oa | (1 << (fls(length) - 1))
    best = ffs0(mask)
    if best < 63:
        pgsz_bitmap &= (1 << (best + 1)) - 1
    lg2 = fls(pgsz_bitmap)
    return lg2 - 1 if lg2 else 0


def pgsz_count(pgsz_bitmap: int, va: int, last: int, oa: int, lg2: int) -> int:
    """pt_iter.h pt_pgsz_count(): how many 2**lg2 leaves before the size may grow."""
    length = last - va + 1
    nxt = pgsz_bitmap & ~((1 << (lg2 + 1)) - 1)
    if nxt:
        nlg2 = ffs0(nxt)
        if ((va ^ oa) & ((1 << nlg2) - 1)) == 0:
            length = min(length, (va | ((1 << nlg2) - 1)) - va + 1)
    return length >> lg2


class Segment:
    """``count`` leaves of 2**lg2 bytes from ``va``/``oa`` (one run of one page size); immutable."""

    __slots__ = ("count", "end", "lg2", "oa", "va")

    def __init__(self, va: int, oa: int, lg2: int, count: int) -> None:
        self.va, self.oa, self.lg2, self.count = va, oa, lg2, count
        self.end = va + (count << lg2)
        """First VA after the run."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Segment) and (self.va, self.oa, self.lg2, self.count) == \
            (other.va, other.oa, other.lg2, other.count)

    def __hash__(self) -> int:
        return hash((self.va, self.oa, self.lg2, self.count))

    def __repr__(self) -> str:
        return f"Segment(va={self.va:#x}, oa={self.oa:#x}, lg2={self.lg2}, count={self.count})"


def plan_leaves(pgsz_bitmap: int, va: int, last: int, oa: int) -> tuple[list[Segment], int | None]:
    """The leaf layout map_range() produces for [va, last] -> oa (iommu_pt.h NS(map_range) and
    __map_range_leaf()): runs of one page size in VA order, and the VA where no size fits (None when
    the whole range is covered)."""
    segs: list[Segment] = []
    while True:
        lg2 = best_pgsize(pgsz_bitmap, va, last, oa)
        if not lg2:
            return segs, va
        n = pgsz_count(pgsz_bitmap, va, last, oa, lg2)
        segs.append(Segment(va, oa, lg2, n))
        step = n << lg2
        if va + step - 1 == last:
            return segs, None
        va += step
        oa += step
