"""The io_pagetable of an IOAS (``drivers/iommu/iommufd/io_pagetable.c``, ``io_pagetable.h``): areas
(IOVA ranges backed by :class:`~vfiolab.iommufd.pages.IoptPages`), allowed and reserved IOVA ranges,
IOVA allocation, map/copy/unmap, and the copy of every area into every attached paging domain.

Intervals are closed ``[start, last]`` like the kernel's interval trees.  Free IOVA is found exactly as
``iopt_alloc_iova()`` walks it: first fit over the spans of the allowed tree (or the whole space minus the
first and last page), then over the holes of the union of the reserved and area trees, each candidate
aligned up and ORed with the user address' page offset.

A domain only needs what ``iommu_map()``/``iommu_unmap()`` give: ``map``, ``unmap``, ``iova_to_phys``,
``pgsize_bitmap``, ``aperture`` and, for dirty tracking, ``dirty_ops``/``read_and_clear_dirty``/
``set_dirty_tracking`` (:class:`vfiolab.iommu.domain.PagingDomain` has them all).
"""

from __future__ import annotations

import bisect
import errno
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

import numpy as np
import numpy.typing as npt

from vfiolab.errors import UapiError
from vfiolab.faultinject import fail_point
from vfiolab.iommufd.pages import (
    BATCH_INIT,
    IOPT_PAGES_ACCOUNT_MM,
    IOPT_PAGES_ACCOUNT_USER,
    AddressType,
    IoptPages,
    runs,
)
from vfiolab.iommufd.uapi import PAGE_SIZE, ULONG_MAX

if TYPE_CHECKING:
    from vfiolab.iommufd.access import IommufdAccess

HPAGE_SIZE: Final = 2 << 20
"""x86-64 HPAGE_PMD_SIZE (CONFIG_TRANSPARENT_HUGEPAGE): the largest alignment auto IOVA keeps."""
IOPT_ALLOC_IOVA: Final = 1 << 0
_KZALLOC_AREA: Final = "iopt_area_alloc: kzalloc(struct iopt_area)"
IOMMU_DIRTY_NO_CLEAR: Final = 1 << 0
_EDEADLOCK: Final = errno.EDEADLK


class Domain(Protocol):
    """What the io_pagetable uses of an iommu_domain."""

    pgsize_bitmap: int
    aperture: tuple[int, int]

    def map(self, iova: int, pa: int, length: int, prot: int) -> None: ...

    def unmap(self, iova: int, length: int) -> int: ...

    def iova_to_phys(self, iova: int) -> int: ...


def ffs0(x: int) -> int:
    """__ffs(): index of the lowest set bit."""
    return (x & -x).bit_length() - 1


def roundup_pow_of_two(x: int) -> int:
    """roundup_pow_of_two()."""
    return 1 << (x - 1).bit_length()


# ---------------------------------------------------------------------- interval helpers
def merged(intervals: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Union of closed intervals, adjacent ones joined (interval_tree_span_iter's used spans)."""
    out: list[tuple[int, int]] = []
    for s, last in sorted(intervals):
        if out and s <= out[-1][1] + 1:
            if last > out[-1][1]:
                out[-1] = (out[-1][0], last)
        else:
            out.append((s, last))
    return out


def holes(used: Sequence[tuple[int, int]], first: int, last: int) -> Iterator[tuple[int, int]]:
    """Holes of merged ``used`` inside [first, last] in order (interval_tree_for_each_span is_hole)."""
    pos = first
    for s, e in used:
        if e < pos:
            continue
        if s > last:
            break
        if s > pos:
            yield pos, s - 1
        pos = e + 1
        if pos > last or e >= last:
            return
    if pos <= last:
        yield pos, last


def used_spans(used: Sequence[tuple[int, int]], first: int, last: int) -> Iterator[tuple[int, int]]:
    """Used spans of merged ``used`` clipped to [first, last]."""
    for s, e in used:
        if e < first or s > last:
            continue
        yield max(s, first), min(e, last)


@dataclass
class Reserved:
    """struct iopt_reserved: a reserved range and who reserved it (a domain, a device, None)."""

    start: int
    last: int
    owner: object


class IoptArea:
    """struct iopt_area: IOVA [iova, last] backed by ``pages`` from ``start_byte`` on."""

    __slots__ = (
        "index",
        "iommu_prot",
        "iopt",
        "iova",
        "last",
        "last_index",
        "num_accesses",
        "num_locks",
        "page_offset",
        "pages",
        "prevent_access",
        "storage_domain",
    )

    def __init__(self) -> None:
        self.iova = 0
        self.last = 0
        self.pages: IoptPages | None = None
        self.page_offset = 0
        self.index = 0
        self.last_index = 0
        self.iommu_prot = 0
        self.storage_domain: Any = None
        self.num_accesses = 0
        self.num_locks = 0
        self.prevent_access = False
        self.iopt: IoPagetable | None = None

    @property
    def length(self) -> int:
        return self.last - self.iova + 1

    def start_byte(self, iova: int) -> int:
        """iopt_area_start_byte(): bytes from the start of the pages to ``iova``."""
        return iova - self.iova + self.page_offset + self.index * PAGE_SIZE

    def iova_to_index(self, iova: int) -> int:
        return self.start_byte(iova) // PAGE_SIZE

    def index_to_iova(self, index: int) -> int:
        """iopt_area_index_to_iova() (pages.c)."""
        index -= self.index
        return self.iova if index == 0 else self.iova - self.page_offset + index * PAGE_SIZE

    def __repr__(self) -> str:
        return f"<IoptArea [{self.iova:#x}, {self.last:#x}] pages[{self.index}..{self.last_index}]>"


@dataclass
class PagesElm:
    """struct iopt_pages_list: a slice of pages for one area of a map or copy."""

    pages: IoptPages | None
    start_byte: int
    length: int
    area: IoptArea | None = None


# ---------------------------------------------------------------------- domain filling (pages.c)
def _map_small(domain: Domain, iova: int, pa: int, size: int, prot: int) -> None:
    """batch_iommu_map_small(): PAGE_SIZE maps only (VFIO type1 compat).  Mapping the run with the page
    sizes capped at PAGE_SIZE installs exactly the leaves per-page iommu_map() calls would."""
    pt = getattr(domain, "pt", None)
    if pt is None:
        for off in range(0, size, PAGE_SIZE):
            try:
                domain.map(iova + off, pa + off, PAGE_SIZE, prot)
            except UapiError:
                if off:
                    domain.unmap(iova, off)
                raise
        return
    saved = pt.pgsize_bitmap
    pt.pgsize_bitmap = saved & (2 * PAGE_SIZE - 1)
    try:
        domain.map(iova, pa, size, prot)
    finally:
        pt.pgsize_bitmap = saved


IOMMU_CACHE: Final = 1 << 2
IOMMU_MMIO: Final = 1 << 4


def batch_to_domain(domain: Domain, area: IoptArea, first_index: int, frames: npt.NDArray[np.int64],
                    small: bool, mmio: bool = False) -> None:
    """batch_to_domain(): one iommu_map() per physically contiguous run; undone on failure.  MMIO
    (dma-buf) batches map uncached (IOMMU_MMIO instead of IOMMU_CACHE)."""
    prot = (area.iommu_prot & ~IOMMU_CACHE) | IOMMU_MMIO if mmio else area.iommu_prot
    page_offset = area.page_offset if first_index == area.index else 0
    iova = start_iova = area.index_to_iova(first_index)
    next_iova = iova
    try:
        for s, n in runs(frames):
            next_iova = min(area.last + 1, next_iova + n * PAGE_SIZE - page_offset)
            pa = int(frames[s]) * PAGE_SIZE + page_offset
            if small:
                _map_small(domain, iova, pa, next_iova - iova, prot)
            else:
                domain.map(iova, pa, next_iova - iova, prot)
            iova = next_iova
            page_offset = 0
    except UapiError:
        if iova != start_iova:
            domain.unmap(start_iova, iova - start_iova)
        raise


class IoPagetable:
    """struct io_pagetable."""

    def __init__(self) -> None:
        # iopt_init_table(): software tables take the whole size_t space, no alignment
        self.areas: list[IoptArea] = []
        self._starts: list[int] = []
        self.allowed: list[tuple[int, int]] = []
        self.reserved: list[Reserved] = []
        self.domains: list[Any] = []
        self.access_list: dict[int, IommufdAccess] = {}
        self.disable_large_pages = False
        self.iova_alignment = 1
        self.notify_unmap: Callable[[int, int], None] | None = None
        """iommufd_access_notify_unmap() for this IOAS (set by the IOAS)."""

    # ------------------------------------------------------------------ area tree
    def area_iter(self, start: int = 0, last: int = ULONG_MAX) -> Iterator[IoptArea]:
        """iopt_area_iter_first/next(): areas intersecting [start, last] in IOVA order."""
        i = bisect.bisect_right(self._starts, start) - 1
        if i < 0 or self.areas[i].last < start:
            i += 1
        while i < len(self.areas) and self.areas[i].iova <= last:
            yield self.areas[i]
            i += 1

    def area_first(self, start: int, last: int) -> IoptArea | None:
        return next(self.area_iter(start, last), None)

    def _insert_area_node(self, area: IoptArea) -> None:
        i = bisect.bisect_left(self._starts, area.iova)
        self._starts.insert(i, area.iova)
        self.areas.insert(i, area)

    def _remove_area_node(self, area: IoptArea) -> None:
        i = bisect.bisect_left(self._starts, area.iova)
        while self.areas[i] is not area:
            i += 1
        del self._starts[i]
        del self.areas[i]

    def reserved_first(self, start: int, last: int) -> Reserved | None:
        hits = [r for r in self.reserved if r.start <= last and start <= r.last]
        return min(hits, key=lambda r: (r.start, r.last)) if hits else None

    def allowed_first(self, start: int, last: int) -> tuple[int, int] | None:
        for a in self.allowed:
            if a[0] <= last and start <= a[1]:
                return a
        return None

    def reserved_spans(self) -> list[tuple[int, int]]:
        return merged((r.start, r.last) for r in self.reserved)

    def iova_ranges(self) -> list[tuple[int, int]]:
        """The holes of the reserved tree over [0, ULONG_MAX] (IOMMU_IOAS_IOVA_RANGES)."""
        return list(holes(self.reserved_spans(), 0, ULONG_MAX))

    # ------------------------------------------------------------------ IOVA allocation
    @staticmethod
    def _check_range(start: int, last: int, length: int, align: int, page_offset: int) -> int | None:
        # __alloc_iova_check_range()
        aligned = start + align - 1
        if aligned > ULONG_MAX:
            return None
        aligned = (aligned & ~(align - 1)) | page_offset
        if aligned >= last or last - aligned < length - 1:
            return None
        return aligned

    def alloc_iova(self, addr: int, length: int) -> int:
        """iopt_alloc_iova(): a free, aligned IOVA for ``length`` bytes (never 0)."""
        page_offset = addr % PAGE_SIZE
        if length == 0 or length >= ULONG_MAX // 2:
            raise UapiError(errno.EOVERFLOW, f"length {length:#x} too large for IOVA allocation")
        align = roundup_pow_of_two(length)
        if addr:
            align = min(align, 1 << ffs0(addr))
        align = min(HPAGE_SIZE, align)
        if align < self.iova_alignment:
            raise UapiError(errno.EINVAL,
                            f"alignment {align:#x} below the IOAS alignment {self.iova_alignment:#x}")
        lo, hi = PAGE_SIZE, ULONG_MAX - PAGE_SIZE
        allowed = list(used_spans(merged(self.allowed), lo, hi)) if self.allowed else [(lo, hi)]
        busy = merged([(r.start, r.last) for r in self.reserved] + [(a.iova, a.last) for a in self.areas])
        for s, e in allowed:
            s2 = self._check_range(s, e, length, align, page_offset)
            if s2 is None:
                continue
            for hs, he in holes(busy, s2, e):
                got = self._check_range(hs, he, length, align, page_offset)
                if got is not None:
                    return got
        raise UapiError(errno.ENOSPC, f"no free IOVA for {length:#x} bytes aligned to {align:#x}")

    def check_iova(self, iova: int, length: int) -> None:
        """iopt_check_iova()."""
        if iova & (self.iova_alignment - 1):
            raise UapiError(errno.EINVAL, f"iova {iova:#x} not aligned to {self.iova_alignment:#x}")
        last = iova + length - 1
        if last > ULONG_MAX:
            raise UapiError(errno.EOVERFLOW, f"iova {iova:#x} + length {length:#x} overflows")
        if self.reserved_first(iova, last):
            raise UapiError(errno.EINVAL, f"[{iova:#x}, {last:#x}] intersects a reserved IOVA range")
        if self.area_first(iova, last):
            raise UapiError(errno.EEXIST, f"[{iova:#x}, {last:#x}] is already mapped")

    # ------------------------------------------------------------------ map
    def _insert_area(self, area: IoptArea, pages: IoptPages, iova: int, start_byte: int, length: int,
                     prot: int) -> None:
        # iopt_insert_area()
        if prot & 2 and not pages.writable:  # IOMMU_WRITE
            raise UapiError(errno.EPERM, "writable mapping of read-only pages")
        area.iommu_prot = prot
        area.page_offset = start_byte % PAGE_SIZE
        if area.page_offset & (self.iova_alignment - 1):
            raise UapiError(errno.EINVAL, f"page offset {area.page_offset:#x} not aligned to "
                            f"{self.iova_alignment:#x}")
        area.iova = iova
        area.last = iova + length - 1
        if area.last > ULONG_MAX:
            raise UapiError(errno.EOVERFLOW, "area end overflows")
        area.index = start_byte // PAGE_SIZE
        area.last_index = (start_byte + length - 1) // PAGE_SIZE
        if area.last_index >= pages.npages:
            raise UapiError(errno.EOVERFLOW, "area beyond its pages")
        area.iopt = self
        self._insert_area_node(area)

    def _abort_area(self, area: IoptArea) -> None:
        if area.iopt is not None:
            self._remove_area_node(area)
            area.iopt = None

    def alloc_area_pages(self, elms: list[PagesElm], length: int, iova: int, prot: int, flags: int) -> int:
        """iopt_alloc_area_pages(): choose or check the IOVA and insert the (still empty) areas."""
        for elm in elms:
            fail_point(_KZALLOC_AREA)
            elm.area = IoptArea()
        if length & (self.iova_alignment - 1) or not length:
            raise UapiError(errno.EINVAL,
                            f"length {length:#x} not a non-zero multiple of {self.iova_alignment:#x}")
        if flags & IOPT_ALLOC_IOVA:
            first = elms[0]
            assert first.pages is not None
            base = first.pages.uptr if first.pages.kind == AddressType.USER else first.pages.start
            iova = self.alloc_iova(first.start_byte + base, length)
        else:
            self.check_iova(iova, length)
        pos = iova
        for elm in elms:
            assert elm.area is not None and elm.pages is not None
            self._insert_area(elm.area, elm.pages, pos, elm.start_byte, elm.length, prot)
            pos += elm.length
        return iova

    def map_pages(self, elms: list[PagesElm], length: int, iova: int, prot: int, flags: int) -> int:
        """iopt_map_pages(): insert the areas, load them into every domain, then publish them; on
        failure nothing is left (the caller still owns the pages references in ``elms``)."""
        try:
            iova = self.alloc_area_pages(elms, length, iova, prot, flags)
            done: list[PagesElm] = []
            try:
                for elm in elms:
                    assert elm.area is not None and elm.pages is not None
                    self.area_fill_domains(elm.area, elm.pages)
                    done.append(elm)
            except UapiError:
                for elm in done:
                    assert elm.area is not None and elm.pages is not None
                    self.area_unfill_domains(elm.area, elm.pages)
                raise
        except UapiError:
            for elm in elms:
                if elm.area is not None:
                    self._abort_area(elm.area)
                    elm.area = None
            raise
        for elm in elms:
            assert elm.area is not None
            elm.area.pages = elm.pages
            elm.pages = None
            elm.area = None
        return iova

    def map_common(self, pages: IoptPages, start_byte: int, length: int, iova: int, prot: int, flags: int,
                   ctx_account_mm: bool) -> int:
        """iopt_map_common(): one element; the fd's RLIMIT_MODE=mm turns USER accounting into MM."""
        if ctx_account_mm and pages.account_mode == IOPT_PAGES_ACCOUNT_USER:
            pages.account_mode = IOPT_PAGES_ACCOUNT_MM
        elm = PagesElm(pages, start_byte, length)
        try:
            return self.map_pages([elm], length, iova, prot, flags)
        except UapiError:
            pages.put()
            raise

    def get_pages(self, iova: int, length: int) -> list[PagesElm]:
        """iopt_get_pages(): references on the pages under a contiguous run of areas (ENOENT)."""
        if not length:
            raise UapiError(errno.EINVAL, "zero length")
        last_iova = iova + length - 1
        if last_iova > ULONG_MAX:
            raise UapiError(errno.EOVERFLOW, "iova + length overflows")
        out: list[PagesElm] = []
        it = ContigIter(self, iova, last_iova)
        try:
            for area in it:
                assert area.pages is not None
                last = min(last_iova, area.last)
                fail_point("iopt_get_pages: kzalloc(struct iopt_pages_list)")
                out.append(PagesElm(area.pages.get(), area.start_byte(it.cur_iova), last - it.cur_iova + 1))
            if not it.done():
                raise UapiError(errno.ENOENT,
                                f"[{iova:#x}, {last_iova:#x}] is not covered by contiguous maps")
        except UapiError:
            for elm in out:  # iopt_free_pages_list()
                assert elm.pages is not None
                elm.pages.put()
            raise
        return out

    # ------------------------------------------------------------------ unmap
    def unmap_iova_range(self, start: int, last: int) -> tuple[int, UapiError | None]:
        """iopt_unmap_iova_range(): remove every area inside [start, last]; returns (bytes unmapped,
        error) since areas removed before an error stay removed."""
        unmapped = 0
        tries = 0
        while True:
            area = self.area_first(start, last)
            if area is None:
                return unmapped, None
            if area.pages is None:
                return unmapped, UapiError(errno.EBUSY, "area is being set up")
            if area.num_locks:
                return unmapped, UapiError(errno.EBUSY, f"[{area.iova:#x}, {area.last:#x}] is locked")
            if area.iova < start or area.last > last:
                return unmapped, UapiError(errno.ENOENT, f"[{start:#x}, {last:#x}] cuts the map "
                                           f"[{area.iova:#x}, {area.last:#x}]")
            if area.iova != start:
                tries = 0
            if area.num_accesses:
                start = area.iova
                area.prevent_access = True
                if self.notify_unmap is not None:
                    self.notify_unmap(area.iova, area.length)
                tries += 1
                if tries > 100:
                    return unmapped, UapiError(_EDEADLOCK, "an access does not release its pages")
                continue
            pages = area.pages
            area.pages = None
            self.area_unfill_domains(area, pages)
            self._abort_area(area)
            pages.put()
            unmapped += area.last - area.iova + 1
            if area.last >= last:
                return unmapped, None
            start = area.last + 1

    def unmap_iova(self, iova: int, length: int) -> int:
        """iopt_unmap_iova(): the range must be a superset of whole maps."""
        if not length:
            raise UapiError(errno.EINVAL, "zero length")
        if iova + length - 1 > ULONG_MAX:
            raise UapiError(errno.EOVERFLOW, "iova + length overflows")
        n, err = self.unmap_iova_range(iova, iova + length - 1)
        if err is not None:
            raise err
        return n

    def unmap_all(self) -> int:
        """iopt_unmap_all(): succeeds on an empty IOAS."""
        n, err = self.unmap_iova_range(0, ULONG_MAX)
        if err is not None:
            raise err
        return n

    # ------------------------------------------------------------------ allowed / reserved
    def set_allow_iova(self, allowed: list[tuple[int, int]]) -> None:
        """iopt_set_allow_iova(): replace the allowed list unless it meets a reserved range."""
        for s, e in allowed:
            if self.reserved_first(s, e):
                raise UapiError(errno.EADDRINUSE, f"allowed [{s:#x}, {e:#x}] intersects a reserved range")
        self.allowed = sorted(allowed)

    def reserve_iova(self, start: int, last: int, owner: object) -> None:
        """iopt_reserve_iova(): EADDRINUSE when an area or an allowed range intersects."""
        if self.area_first(start, last) or self.allowed_first(start, last):
            raise UapiError(errno.EADDRINUSE, f"[{start:#x}, {last:#x}] is mapped or allowed")
        fail_point("iopt_reserve_iova: kzalloc(struct iopt_reserved)")
        self.reserved.append(Reserved(start, last, owner))

    def remove_reserved_iova(self, owner: object) -> None:
        """iopt_remove_reserved_iova()."""
        self.reserved = [r for r in self.reserved if r.owner is not owner]

    def enforce_dev_resv_regions(self, regions: Iterable[Any], owner: object,
                                 want_sw_msi: bool) -> int | None:
        """iopt_table_enforce_dev_resv_regions(): reserve every non-relaxable region of a device;
        returns the SW_MSI start when asked for (EINVAL for a SW_MSI + MSI mix or two SW_MSIs)."""
        from vfiolab.iommu.resv import ResvType
        fail_point("iopt_table_enforce_dev_resv_regions", errno.EINVAL)  # iommufd_should_fail()
        sw_msi_start = None
        num_hw_msi = num_sw_msi = 0
        try:
            for r in regions:
                if r.type == ResvType.DIRECT_RELAXABLE:
                    continue
                if want_sw_msi and r.type == ResvType.MSI:
                    num_hw_msi += 1
                if want_sw_msi and r.type == ResvType.SW_MSI:
                    sw_msi_start = r.start
                    num_sw_msi += 1
                self.reserve_iova(r.start, r.start + r.length - 1, owner)
            if (num_sw_msi and num_hw_msi) or num_sw_msi > 1:
                raise UapiError(errno.EINVAL, "device reports an impossible MSI region mix")
        except UapiError:
            self.remove_reserved_iova(owner)
            raise
        return sw_msi_start

    # ------------------------------------------------------------------ alignment and large pages
    def _check_iova_alignment(self, align: int) -> None:
        mask = align - 1
        for a in self.areas:
            if a.iova & mask or a.length & mask or a.page_offset & mask:
                raise UapiError(errno.EADDRINUSE, f"map [{a.iova:#x}, {a.last:#x}] is not {align:#x} aligned")

    def calculate_iova_alignment(self) -> None:
        """iopt_calculate_iova_alignment()."""
        align = PAGE_SIZE if self.disable_large_pages else 1
        for d in self.domains:
            align = max(align, 1 << ffs0(d.pgsize_bitmap))
        for acc in self.access_list.values():
            align = max(align, acc.iova_alignment)
        if align > self.iova_alignment:
            self._check_iova_alignment(align)
        self.iova_alignment = align

    def enable_large_pages(self) -> None:
        """iopt_enable_large_pages()."""
        self.disable_large_pages = False
        self.calculate_iova_alignment()

    def disable_large_pages_(self) -> None:
        """iopt_disable_large_pages(): refused once domains hold maps."""
        if self.disable_large_pages:
            return
        if self.domains and self.areas:
            raise UapiError(errno.EINVAL, "domains already hold maps")
        self.disable_large_pages = True
        try:
            self.calculate_iova_alignment()
        except UapiError:
            self.disable_large_pages = False
            raise

    # ------------------------------------------------------------------ accesses
    def add_access(self, access: IommufdAccess) -> int:
        """iopt_add_access(): an ID from 0 (xa_limit_16b), then the alignment it imposes."""
        fail_point("iopt_add_access: xa_alloc(&iopt->access_list)")
        new_id = 0
        while new_id in self.access_list:
            new_id += 1
        if new_id > 0xFFFF:
            raise UapiError(errno.EBUSY, "too many accesses")
        self.access_list[new_id] = access
        try:
            self.calculate_iova_alignment()
        except UapiError:
            del self.access_list[new_id]
            raise
        return new_id

    def remove_access(self, access_id: int) -> None:
        """iopt_remove_access()."""
        self.access_list.pop(access_id, None)
        self.calculate_iova_alignment()

    # ------------------------------------------------------------------ domains
    def area_fill_domains(self, area: IoptArea, pages: IoptPages) -> None:
        """iopt_area_fill_domains(): load a new area into every domain (pinning it); all or nothing."""
        if not self.domains:
            return
        if pages.kind == AddressType.DMABUF:
            self._dmabuf_fill_domains(area, pages)
            return
        frames = pages.hold(area.index, area.last_index)
        done: list[Any] = []
        try:
            for d in self.domains:
                batch_to_domain(d, area, area.index, frames, self.disable_large_pages)
                done.append(d)
        except UapiError:
            for d in done:
                d.unmap(area.iova, area.length)
            pages.release(area.index, area.last_index)
            raise
        area.storage_domain = self.domains[0]

    def _dmabuf_fill_domains(self, area: IoptArea, pages: IoptPages) -> None:
        # iopt_dmabuf_track_all_domains(), then the MMIO PFNs into each domain unless revoked
        done: list[Any] = []
        try:
            if not pages.revoked:
                frames = pages.dmabuf_frames(area.index, area.last_index)
                for d in self.domains:
                    batch_to_domain(d, area, area.index, frames, self.disable_large_pages, mmio=True)
                    done.append(d)
        except UapiError:
            for d in done:
                d.unmap(area.iova, area.length)
            raise
        pages.tracker += [(d, area) for d in self.domains]
        area.storage_domain = self.domains[0]

    def area_unfill_domains(self, area: IoptArea, pages: IoptPages) -> None:
        """iopt_area_unfill_domains(): unmap the area from every domain and unpin what is unheld."""
        if area.storage_domain is None:
            return
        if pages.kind == AddressType.DMABUF:
            if not pages.revoked:
                for d in self.domains:
                    d.unmap(area.iova, area.length)
            pages.tracker = [t for t in pages.tracker if t[1] is not area]
            area.storage_domain = None
            return
        for d in self.domains:
            d.unmap(area.iova, area.length)
        area.storage_domain = None
        pages.release(area.index, area.last_index)

    def table_add_domain(self, domain: Any) -> None:
        """iopt_table_add_domain(): alignment, aperture as reserved ranges, then every area mapped."""
        if any(d is domain for d in self.domains):
            raise UapiError(errno.EEXIST, "domain already in this IOAS")
        align = max(1 << ffs0(domain.pgsize_bitmap), self.iova_alignment)
        if align > PAGE_SIZE:
            raise UapiError(errno.EINVAL, f"domain's smallest page {align:#x} exceeds PAGE_SIZE")
        if align != self.iova_alignment:
            self._check_iova_alignment(align)
        ap_start, ap_end = domain.aperture
        try:
            if ap_start != 0:
                self.reserve_iova(0, ap_start - 1, domain)
            if ap_end != ULONG_MAX:
                self.reserve_iova(ap_end + 1, ULONG_MAX, domain)
            fail_point("iopt_table_add_domain: xa_reserve(&iopt->domains)")
            self._fill_domain(domain)
        except UapiError:
            self.remove_reserved_iova(domain)
            raise
        self.iova_alignment = align
        self.domains.append(domain)

    def _fill_domain(self, domain: Any) -> None:
        # iopt_fill_domain(): the first domain pins; later ones copy the PFNs already held
        first = not self.domains
        done: list[IoptArea] = []
        try:
            for area in self.areas:
                pages = area.pages
                if pages is None:
                    continue
                if pages.kind == AddressType.DMABUF:  # iopt_dmabuf_track_domain() + map unless revoked
                    if not pages.revoked:
                        batch_to_domain(domain, area, area.index,
                                        pages.dmabuf_frames(area.index, area.last_index),
                                        self.disable_large_pages, mmio=True)
                    pages.tracker.append((domain, area))
                    if area.storage_domain is None:
                        area.storage_domain = domain
                elif area.storage_domain is None:
                    frames = pages.hold(area.index, area.last_index)
                    try:
                        batch_to_domain(domain, area, area.index, frames, self.disable_large_pages)
                    except UapiError:
                        pages.release(area.index, area.last_index)
                        raise
                    area.storage_domain = domain
                else:  # iopt_area_fill_domain(): a pfn_reader over pages a domain already holds
                    fail_point(BATCH_INIT)
                    frames = pages.pinned_frames(area.index, area.last_index)
                    batch_to_domain(domain, area, area.index, frames, self.disable_large_pages)
                done.append(area)
        except UapiError:
            for area in done:
                pages = area.pages
                assert pages is not None
                if pages.kind == AddressType.DMABUF:
                    if not pages.revoked:
                        domain.unmap(area.iova, area.length)
                    pages.tracker = [t for t in pages.tracker if t != (domain, area)]
                    if first:
                        area.storage_domain = None
                    continue
                domain.unmap(area.iova, area.length)
                if first:
                    area.storage_domain = None
                    pages.release(area.index, area.last_index)
            raise

    def table_remove_domain(self, domain: Any) -> None:
        """iopt_table_remove_domain(): swap-remove, unmap every area, drop its reserved ranges."""
        idx = next((i for i, d in enumerate(self.domains) if d is domain), None)
        if idx is None:
            return
        tail = self.domains.pop()
        if idx != len(self.domains):
            self.domains[idx] = tail
        for area in self.areas:  # dma-buf areas: unmap unless revoked, stop tracking the domain
            pages = area.pages
            if pages is not None and pages.kind == AddressType.DMABUF:
                if not pages.revoked:
                    domain.unmap(area.iova, area.length)
                pages.tracker = [t for t in pages.tracker if t != (domain, area)]
                if area.storage_domain is domain:
                    area.storage_domain = self.domains[0] if self.domains else None
        if self.domains:  # iopt_unfill_domain(): another domain keeps the PFNs
            storage = self.domains[0]
            for area in self.areas:
                if area.pages is None or area.pages.kind == AddressType.DMABUF:
                    continue
                if area.storage_domain is domain:
                    area.storage_domain = storage
                domain.unmap(area.iova, area.length)
        else:
            for area in self.areas:
                pages = area.pages
                if pages is None or pages.kind == AddressType.DMABUF:
                    continue
                area.storage_domain = None
                domain.unmap(area.iova, area.length)
                pages.release(area.index, area.last_index)
        self.remove_reserved_iova(domain)
        self.calculate_iova_alignment()

    # ------------------------------------------------------------------ VFIO type1 splitting
    def _area_split(self, area: IoptArea, iova: int) -> None:
        # iopt_area_split()
        new_start = iova + 1
        if iova == area.iova or iova == area.last:
            return
        pages = area.pages
        if pages is None or area.prevent_access:
            raise UapiError(errno.EBUSY, "area busy")
        if pages.kind == AddressType.DMABUF:
            raise UapiError(errno.EOPNOTSUPP, "dma-buf areas cannot be split")
        align = self.iova_alignment
        if new_start & (align - 1) or area.start_byte(new_start) & (align - 1):
            raise UapiError(errno.EINVAL, f"cut at {new_start:#x} not aligned to {align:#x}")
        if area.num_accesses:
            raise UapiError(errno.EINVAL, "area has accesses")
        if area.storage_domain is not None and not self.disable_large_pages:
            raise UapiError(errno.EINVAL, "area may be mapped with huge pages")
        fail_point(_KZALLOC_AREA)
        lhs = IoptArea()
        fail_point(_KZALLOC_AREA)
        rhs = IoptArea()
        self._remove_area_node(area)
        self._insert_area(lhs, pages, area.iova, area.start_byte(area.iova), new_start - area.iova,
                          area.iommu_prot)
        self._insert_area(rhs, pages, new_start, area.start_byte(new_start), area.last - new_start + 1,
                          area.iommu_prot)
        for part in (lhs, rhs):
            part.storage_domain = area.storage_domain
            part.pages = pages
        pages.get()
        if area.storage_domain is not None:  # the domains_itree now has two nodes instead of one
            pages.holders[rhs.index:rhs.last_index + 1] += 1
            pages.holders[area.index:area.last_index + 1] -= 1
            pages.holders[lhs.index:lhs.last_index + 1] += 1

    def cut_iova(self, iovas: Sequence[int]) -> None:
        """iopt_cut_iova(): split the areas containing each IOVA so it ends an area."""
        for iova in iovas:
            area = self.area_first(iova, iova)
            if area is None:
                continue
            self._area_split(area, iova)

    # ------------------------------------------------------------------ dirty tracking
    def set_dirty_tracking(self, domain: Any, enable: bool) -> None:
        """iopt_set_dirty_tracking(): clear stale dirty bits before enabling."""
        if not getattr(domain, "dirty_ops", False):
            raise UapiError(errno.EOPNOTSUPP, "domain has no dirty tracking ops")
        if enable:
            for area in self.areas:
                if area.pages is None:
                    continue
                domain.read_and_clear_dirty(area.iova, area.length, clear=True)
        domain.set_dirty_tracking(enable)

    def check_iova_range(self, iova: int, length: int, page_size: int) -> None:
        """iommufd_check_iova_range() (u64 arithmetic: length 0 wraps)."""
        last = iova + ((length - 1) & ULONG_MAX)
        if last > ULONG_MAX:
            raise UapiError(errno.EOVERFLOW, "iova + length overflows")
        end = (last + 1) & ULONG_MAX
        pg = self.iova_alignment
        if iova & (pg - 1) or end & (pg - 1):
            raise UapiError(errno.EINVAL, f"range not aligned to the IOAS alignment {pg:#x}")
        if not page_size:
            raise UapiError(errno.EINVAL, "page_size 0")
        if iova & (page_size - 1) or end & (page_size - 1):
            raise UapiError(errno.EINVAL, f"range not aligned to page_size {page_size:#x}")

    def read_and_clear_dirty(self, domain: Any, iova: int, length: int, page_size: int,
                             flags: int) -> list[tuple[int, npt.NDArray[np.bool_]]]:
        """iommu_read_and_clear_dirty(): per contiguous area from ``iova``, (first bit, bits) one bit
        per ``page_size``; stops silently at the first gap (the kernel ignores the -EINVAL)."""
        if not getattr(domain, "dirty_ops", False):
            raise UapiError(errno.EOPNOTSUPP, "domain has no dirty tracking ops")
        # iova_bitmap.c iova_bitmap_alloc(): one bit per 1 << __ffs(page_size), so only the lowest set
        # bit of a page size that is not a power of two counts
        page_size &= -page_size
        last_iova = iova + length - 1
        out = []
        it = ContigIter(self, iova, last_iova)
        for area in it:
            last = min(last_iova, area.last)
            bits = domain.read_and_clear_dirty(it.cur_iova, last - it.cur_iova + 1,
                                               clear=not flags & IOMMU_DIRTY_NO_CLEAR, page_size=page_size)
            out.append(((it.cur_iova - iova) // page_size, bits))
        return out


class ContigIter:
    """iopt_for_each_contig_area(): areas covering [iova, last_iova] without gaps, from ``iova``;
    ``done()`` afterwards says whether they reached ``last_iova``."""

    def __init__(self, iopt: IoPagetable, iova: int, last_iova: int) -> None:
        self.iopt = iopt
        self.cur_iova = iova
        self.last_iova = last_iova
        self.area: IoptArea | None = None

    def __iter__(self) -> Iterator[IoptArea]:
        area = self.iopt.area_first(self.cur_iova, self.cur_iova)
        if area is None or area.pages is None:
            self.area = None
            return
        self.area = area
        while True:
            yield area
            if self.last_iova <= area.last:
                return
            self.cur_iova = area.last + 1
            nxt = self.iopt.area_first(self.cur_iova, self.last_iova)
            if nxt is None or nxt.iova != self.cur_iova or nxt.pages is None:
                self.area = None
                return
            area = nxt
            self.area = area

    def done(self) -> bool:
        """iopt_area_contig_done()."""
        return self.area is not None and self.last_iova <= self.area.last
