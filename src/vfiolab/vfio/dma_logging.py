"""Device DMA logging (VFIO_DEVICE_FEATURE_DMA_LOGGING_START/STOP/REPORT): the core's validation of
``drivers/vfio/vfio_main.c``, the IOVA bitmap of ``drivers/iommu/iommufd/iova_bitmap.c``, and a device
page tracker in the style of mlx5's (``drivers/vfio/pci/mlx5/cmd.c``).

The core checks a START request (at least one range, at most PAGE_SIZE/16 ranges, each aligned to the
page size, no overflow, no overlap) and hands the sorted ranges to the driver's log ops.  The
:class:`PageTracker` clamps the page size to what the device can track, merges ranges down to its range
limit with :func:`combine_iova_ranges` (``vfio_combine_iova_ranges``), refuses an address space it cannot
cover, and records every DMA write the device makes into a tracked range (it is the device's
:class:`~vfiolab.devices.api.DirtySink`: ``device.attach_dirty_tracker(tracker)``).  REPORT only sets bits in the
caller's bitmap (one bit per ``page_size``, relative to ``iova``) and clears the device log for the range.

Dirty pages are kept as runs of tracked pages (no per-page state), so logging a terabyte costs nothing
until it is written.
"""

from __future__ import annotations

import bisect
import errno
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final, Protocol

import numpy as np
import numpy.typing as npt

from vfiolab.errors import UapiError
from vfiolab.vfio.migration import FeatureData, check_feature
from vfiolab.vfio.uapi import (
    VFIO_DEVICE_FEATURE_DMA_LOGGING_START,
    VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP,
    VFIO_DEVICE_FEATURE_GET,
    VFIO_DEVICE_FEATURE_SET,
    vfio_device_feature_dma_logging_control,
    vfio_device_feature_dma_logging_range,
    vfio_device_feature_dma_logging_report,
)

if TYPE_CHECKING:
    from vfiolab.memory import UserProcess

U64_MASK: Final = (1 << 64) - 1
PAGE_SIZE: Final = 4096
SZ_4K: Final = 4096

LOG_MAX_RANGES: Final = PAGE_SIZE // vfio_device_feature_dma_logging_range.size
"""vfio_main.c LOG_MAX_RANGES: the ranges must fit one kernel page (256)."""

Range = tuple[int, int]
"""An interval-tree node: (start, last), last inclusive."""


# ---------------------------------------------------------------------- helpers of the core
def combine_iova_ranges(ranges: Sequence[Range], req_nodes: int) -> list[Range]:
    """vfio_combine_iova_ranges(): merge sorted ranges down to ``req_nodes``; one node spans the first
    start to the last end, otherwise the adjacent pair with the smallest gap merges first (the lowest
    such pair on a tie)."""
    out = sorted(ranges)
    if not out:
        return out
    if req_nodes == 1:
        return [(out[0][0], out[-1][1])]
    while len(out) > req_nodes:
        gaps = [(out[i + 1][0] - out[i][1]) & U64_MASK for i in range(len(out) - 1)]
        i = gaps.index(min(gaps))
        out[i:i + 2] = [(out[i][0], out[i + 1][1])]
    return out


def _aligned(value: int, align: int) -> bool:
    """IS_ALIGNED(): a mask test, as the macro does, also for a page size that is no power of two."""
    return (value & ((align - 1) & U64_MASK)) == 0


def _overlaps(nodes: list[Range], start: int, last: int) -> bool:
    """interval_tree_iter_first(root, start, last) != NULL."""
    return any(s <= last and start <= e for s, e in nodes)


def collect_ranges(page_size: int, count: int, get_range: Callable[[int], tuple[int, int]]) -> list[Range]:
    """The START checks of vfio_ioctl_device_feature_logging_start(): EINVAL for no range, E2BIG for more
    than LOG_MAX_RANGES; then per range in order (``get_range(i)`` -> (iova, length), which may fault):
    EINVAL unaligned, EOVERFLOW iova+length overflows, EINVAL overlapping an earlier range."""
    if not count:
        raise UapiError(errno.EINVAL, "num_ranges is 0")
    if count > LOG_MAX_RANGES:
        raise UapiError(errno.E2BIG, f"{count} ranges > {LOG_MAX_RANGES}")
    nodes: list[Range] = []
    for i in range(count):
        iova, length = get_range(i)
        if not _aligned(iova, page_size) or not _aligned(length, page_size):
            raise UapiError(errno.EINVAL, f"range {i} [{iova:#x}, +{length:#x}) not aligned to {page_size:#x}")
        if iova + length > U64_MASK:
            raise UapiError(errno.EOVERFLOW, f"range {i} [{iova:#x}, +{length:#x}) overflows")
        start, last = iova, (iova + length - 1) & U64_MASK
        if _overlaps(nodes, start, last):
            raise UapiError(errno.EINVAL, f"range {i} [{iova:#x}, +{length:#x}) overlaps another range")
        nodes.append((start, last))
    return sorted(nodes)


# ---------------------------------------------------------------------- the IOVA bitmap
class IovaBitmap:
    """struct iova_bitmap: bit ``(addr - iova) >> pgshift`` for every page of [iova, iova+length) that
    ``set`` marks.  Bits are kept as runs until applied to a u64 array or to user memory."""

    def __init__(self, iova: int, length: int, page_size: int) -> None:
        self.iova = iova
        self.length = length
        self.pgshift = (page_size & -page_size).bit_length() - 1  # __ffs(page_size)
        self.runs: list[tuple[int, int]] = []
        """(first bit, last bit) runs, in the order they were set."""

    def set(self, iova: int, length: int) -> None:
        """iova_bitmap_set(): mark [iova, iova+length-1]; the part outside the bitmap's range is ignored."""
        lo = max(iova, self.iova)
        hi = min(iova + length, self.iova + self.length) - 1
        if length <= 0 or hi < lo:
            return
        self.runs.append(((lo - self.iova) >> self.pgshift, (hi - self.iova) >> self.pgshift))

    def apply(self, words: npt.NDArray[np.uint64]) -> None:
        """OR the bits into ``words`` (a u64 bitmap; bits past its end are dropped like a short pin)."""
        bits = words.view(np.uint8)
        for lo, hi, mask in self._byte_masks():
            if lo < len(bits):
                bits[lo:min(hi, len(bits))] |= mask[:max(0, min(hi, len(bits)) - lo)]

    def apply_user(self, process: UserProcess | None, ptr: int) -> None:
        """OR the bits into user memory at ``ptr``.  A run whose bytes cannot be pinned is silently
        dropped, as iova_bitmap_set() gives up when iova_bitmap_advance_to() fails."""
        for lo, hi, mask in self._byte_masks():
            if process is None:
                return
            try:
                cur = np.frombuffer(process.read(ptr + lo, hi - lo), dtype=np.uint8)
                process.write(ptr + lo, (cur | mask).tobytes())
            except UapiError:
                continue

    def _byte_masks(self) -> list[tuple[int, int, npt.NDArray[np.uint8]]]:
        out = []
        for first, last in self.runs:
            b0, b1 = first >> 3, (last >> 3) + 1
            flags = np.zeros((b1 - b0) * 8, dtype=bool)
            flags[first - b0 * 8:last - b0 * 8 + 1] = True
            out.append((b0, b1, np.packbits(flags, bitorder="little")))
        return out


# ---------------------------------------------------------------------- the driver's log ops
class DmaLogOps(Protocol):
    """struct vfio_log_ops."""

    def log_start(self, ranges: list[Range], page_size: int) -> int:
        """Start tracking the sorted ranges; returns the page size chosen."""
        ...

    def log_stop(self) -> None:
        ...

    def log_read_and_clear(self, iova: int, length: int, dirty: IovaBitmap) -> None:
        ...


class _Runs:
    """Disjoint sorted runs [lo, hi) of page numbers."""

    def __init__(self) -> None:
        self.lo: list[int] = []
        self.hi: list[int] = []

    def add(self, lo: int, hi: int) -> None:
        i = bisect.bisect_left(self.hi, lo)  # first run that ends at or after lo (touching merges)
        j = bisect.bisect_right(self.lo, hi)  # runs starting after hi stay
        if i < j:
            lo, hi = min(lo, self.lo[i]), max(hi, self.hi[j - 1])
        self.lo[i:j] = [lo]
        self.hi[i:j] = [hi]

    def take(self, lo: int, hi: int) -> list[tuple[int, int]]:
        """Remove and return the parts inside [lo, hi)."""
        i = bisect.bisect_right(self.hi, lo)
        j = bisect.bisect_left(self.lo, hi)
        if i >= j:
            return []
        out = [(max(a, lo), min(b, hi)) for a, b in zip(self.lo[i:j], self.hi[i:j])]
        keep_lo: list[int] = []
        keep_hi: list[int] = []
        if self.lo[i] < lo:
            keep_lo.append(self.lo[i])
            keep_hi.append(lo)
        if self.hi[j - 1] > hi:
            keep_lo.append(hi)
            keep_hi.append(self.hi[j - 1])
        self.lo[i:j] = keep_lo
        self.hi[i:j] = keep_hi
        return out

    def __len__(self) -> int:
        return len(self.lo)


class PageTracker:
    """A device-side DMA page tracker (the log ops of an emulated device, modelled on mlx5's): tracked
    page size clamped to [2**min_page_shift, 2**max_page_shift], at most ``max_ranges`` ranges (more are
    combined), a tracked address space of at most 2**max_addr_space_lg2 bytes (EOPNOTSUPP otherwise), one
    session at a time (EINVAL), reports refused while stopped (EINVAL)."""

    def __init__(self, *, min_page_shift: int = 12, max_page_shift: int = 30, max_ranges: int = 8,
                 min_addr_space_lg2: int = 12, max_addr_space_lg2: int = 52) -> None:
        self.min_page_shift = min_page_shift
        self.max_page_shift = max_page_shift
        self.max_ranges = max_ranges
        self.min_addr_space_lg2 = min_addr_space_lg2
        self.max_addr_space_lg2 = max_addr_space_lg2
        self.active = False
        self.ranges: list[Range] = []
        self.page_shift = min_page_shift
        self._dirty = _Runs()

    @property
    def page_size(self) -> int:
        return 1 << self.page_shift

    def log_start(self, ranges: list[Range], page_size: int) -> int:
        """mlx5vf_start_page_tracker() + mlx5vf_create_tracker()."""
        if self.active:
            raise UapiError(errno.EINVAL, "DMA logging is already started")
        shift = page_size.bit_length() - 1 if page_size else -1  # ilog2()
        shift = min(max(shift, self.min_page_shift), self.max_page_shift)
        if len(ranges) > self.max_ranges:
            ranges = combine_iova_ranges(ranges, self.max_ranges)
        total = sum(max(0, last - start + 1) for start, last in ranges)
        lg2 = max(total - 1, 0).bit_length()  # ilog2(roundup_pow_of_two(total))
        if not self.min_addr_space_lg2 <= lg2 <= self.max_addr_space_lg2:
            raise UapiError(errno.EOPNOTSUPP, f"tracked address space 2**{lg2} outside the device's "
                            f"2**{self.min_addr_space_lg2}..2**{self.max_addr_space_lg2}")
        self.ranges = list(ranges)
        self.page_shift = shift
        self._dirty = _Runs()
        self.active = True
        return 1 << shift

    def log_stop(self) -> None:
        """mlx5vf_stop_page_tracker(): stopping a stopped tracker is fine."""
        self.active = False
        self.ranges = []
        self._dirty = _Runs()

    def log_read_and_clear(self, iova: int, length: int, dirty: IovaBitmap) -> None:
        """mlx5vf_tracker_read_and_clear(): report and forget the dirty tracked pages overlapping
        [iova, iova+length)."""
        if not self.active:
            raise UapiError(errno.EINVAL, "DMA logging is not started")
        if length <= 0:
            return
        sh = self.page_shift
        for lo, hi in self._dirty.take(iova >> sh, ((iova + length - 1) >> sh) + 1):
            dirty.set(lo << sh, (hi - lo) << sh)

    def note_write(self, iova: int, length: int) -> None:
        """The device wrote [iova, iova+length): log the tracked pages it touched (only DMA writes are
        logged, and only inside the tracked ranges)."""
        if not self.active or length <= 0:
            return
        sh = self.page_shift
        end = iova + length - 1
        for start, last in self.ranges:
            lo, hi = max(iova, start), min(end, last)
            if lo <= hi:
                self._dirty.add(lo >> sh, (hi >> sh) + 1)

    def dirty_pages(self) -> int:
        """Tracked pages currently logged dirty (introspection)."""
        return sum(h - lo for lo, h in zip(self._dirty.lo, self._dirty.hi))


# ---------------------------------------------------------------------- Python-level calls (core checks)
def logging_start(log: DmaLogOps | None, page_size: int, ranges: Sequence[tuple[int, int]]) -> int:
    """DMA_LOGGING_START with (iova, length) ranges: the core's checks, then the driver; returns the page
    size the driver chose.  ENOTTY without log ops."""
    if log is None:
        raise UapiError(errno.ENOTTY, "device has no DMA logging")
    nodes = collect_ranges(page_size, len(ranges), lambda i: (int(ranges[i][0]), int(ranges[i][1])))
    return log.log_start(nodes, page_size)


def _check_report(page_size: int, iova: int, length: int) -> None:
    if page_size < SZ_4K or page_size & (page_size - 1):
        raise UapiError(errno.EINVAL, f"report page size {page_size:#x} is not a power of two >= 4K")
    if iova + length > U64_MASK:
        raise UapiError(errno.EOVERFLOW, f"report range [{iova:#x}, +{length:#x}) overflows")


def logging_report(log: DmaLogOps | None, iova: int, length: int, page_size: int,
                   bitmap: npt.NDArray[np.uint64] | None = None) -> npt.NDArray[np.uint64]:
    """DMA_LOGGING_REPORT into ``bitmap`` (u64 words; bits are only ever set) or a new zeroed one of
    ceil(length/page_size/64) words, which is returned."""
    if log is None:
        raise UapiError(errno.ENOTTY, "device has no DMA logging")
    _check_report(page_size, iova, length)
    if bitmap is None:
        pages = -(-length // page_size)
        bitmap = np.zeros(-(-pages // 64), dtype=np.uint64)
    dirty = IovaBitmap(iova, length, page_size)
    log.log_read_and_clear(iova, length, dirty)
    dirty.apply(bitmap)
    return bitmap


# ---------------------------------------------------------------------- VFIO_DEVICE_FEATURE handlers
def _user_read(process: UserProcess | None, addr: int, n: int) -> bytes:
    if process is None:
        raise UapiError(errno.EFAULT, f"no process memory to read {addr:#x}")
    return process.read(addr, n)


def logging_feature(log: DmaLogOps | None, feature: int, flags: int, data: FeatureData, argsz: int,
                    process: UserProcess | None) -> int:
    """vfio_ioctl_device_feature_logging_start/stop/report() on the feature payload; pointers in it
    (the range array, the bitmap) are user addresses in ``process``."""
    if log is None:
        raise UapiError(errno.ENOTTY, "device has no DMA logging")
    if feature == VFIO_DEVICE_FEATURE_DMA_LOGGING_START:
        st = vfio_device_feature_dma_logging_control
        if not check_feature(flags, argsz, VFIO_DEVICE_FEATURE_SET, st.size):
            return 0
        ctl = st.unpack(data.read(0, st.offsetofend("ranges")))
        rng = vfio_device_feature_dma_logging_range

        def get_range(i: int) -> tuple[int, int]:
            r = rng.unpack(_user_read(process, (ctl["ranges"] + i * rng.size) & U64_MASK, rng.size))
            return r["iova"], r["length"]

        nodes = collect_ranges(ctl["page_size"], ctl["num_ranges"], get_range)
        ctl["page_size"] = log.log_start(nodes, ctl["page_size"])
        try:
            data.write(0, st.pack(ctl))
        except UapiError:
            log.log_stop()
            raise
        return 0
    if feature == VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP:
        if check_feature(flags, argsz, VFIO_DEVICE_FEATURE_SET, 0):
            log.log_stop()
        return 0
    st = vfio_device_feature_dma_logging_report
    if not check_feature(flags, argsz, VFIO_DEVICE_FEATURE_GET, st.size):
        return 0
    rep = st.unpack(data.read(0, st.offsetofend("bitmap")))
    _check_report(rep["page_size"], rep["iova"], rep["length"])
    dirty = IovaBitmap(rep["iova"], rep["length"], rep["page_size"])
    log.log_read_and_clear(rep["iova"], rep["length"], dirty)
    dirty.apply_user(process, rep["bitmap"])
    return 0


__all__ = ["LOG_MAX_RANGES", "DmaLogOps", "IovaBitmap", "PageTracker", "collect_ranges",
           "combine_iova_ranges", "logging_feature", "logging_report", "logging_start"]
