"""DMA logging: VFIO_DEVICE_FEATURE_DMA_LOGGING_START/STOP/REPORT.

Expected values are worked out from Linux 7.2: drivers/vfio/vfio_main.c (LOG_MAX_RANGES = PAGE_SIZE/16,
num_ranges 0 -> EINVAL, too many -> E2BIG, IS_ALIGNED mask test, check_add_overflow -> EOVERFLOW,
interval-tree overlap -> EINVAL, REPORT page size >= 4K and a power of two, copy_to_user failure after
log_start -> log_stop + EFAULT, vfio_combine_iova_ranges), drivers/iommu/iommufd/iova_bitmap.c (bit
(addr - iova) >> pgshift; only sets bits; an unpinnable bitmap page is skipped), include/uapi/linux/vfio.h
(report clears the log, replicates bits when the tracked page is smaller or larger) and
drivers/vfio/pci/mlx5/cmd.c (clamped page size, one session, EINVAL when not started, EOPNOTSUPP for an
address space the device cannot track).
"""

from __future__ import annotations

import errno
import struct

import numpy as np
import pytest

from vfiolab.devices.testdev import (
    BUF_BAR,
    CMD_WRITE,
    REG_BUF_OFFSET,
    REG_CMD,
    REG_IOVA,
    REG_LENGTH,
    REG_STATUS,
    REGS_BAR,
    STATUS_DONE,
    TestDev,
)
from vfiolab.errors import UapiError
from vfiolab.iommu.device import IommuDevice
from vfiolab.iommu.driver import make_unit
from vfiolab.iommu.group import IommuGroup, iommu_probe_device
from vfiolab.iommufd import Iommufd
from vfiolab.iommufd.device import device_attach, device_bind
from vfiolab.iommufd.ucmd import LocalBuffer, ProcessBuffer
from vfiolab.memory import PROT_READ, PhysMemory, UserProcess
from vfiolab.pci import regs
from vfiolab.vfio.dma_logging import (
    LOG_MAX_RANGES,
    IovaBitmap,
    PageTracker,
    combine_iova_ranges,
    logging_report,
    logging_start,
)
from vfiolab.vfio.feature import device_feature
from vfiolab.vfio.pci_core import IommuDmaPort
from vfiolab.vfio.uapi import (
    VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT,
    VFIO_DEVICE_FEATURE_DMA_LOGGING_START,
    VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP,
    VFIO_DEVICE_FEATURE_GET,
    VFIO_DEVICE_FEATURE_PROBE,
    VFIO_DEVICE_FEATURE_SET,
)

K4 = 0x1000
M2 = 0x200000
START = VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_DMA_LOGGING_START
STOP = VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP
REPORT = VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT


@pytest.fixture
def proc() -> UserProcess:
    return UserProcess(PhysMemory(1 << 24))


def err(fn, *args, **kw):  # type: ignore[no-untyped-def]
    with pytest.raises(UapiError) as e:
        fn(*args, **kw)
    return e.value.errno


def start_raw(log: PageTracker | None, proc: UserProcess, page_size: int, ranges: list[tuple[int, int]],
              num: int | None = None, ptr: int | None = None) -> int:
    """DMA_LOGGING_START with the range array in process memory; returns the page size written back."""
    arr = b"".join(struct.pack("<QQ", i, n) for i, n in ranges)
    if ptr is None:
        ptr = proc.mmap(max(len(arr), K4))
        if arr:
            proc.write(ptr, arr)
    buf = bytearray(struct.pack("<IIQIIQ", 32, START, page_size, len(ranges) if num is None else num, 0, ptr))
    device_feature(LocalBuffer(buf), log=log, process=proc)
    return int(struct.unpack_from("<Q", buf, 8)[0])


def report_raw(log: PageTracker, proc: UserProcess, iova: int, length: int, page_size: int, bitmap: int) -> None:
    buf = bytearray(struct.pack("<IIQQQQ", 40, REPORT, iova, length, page_size, bitmap))
    device_feature(LocalBuffer(buf), log=log, process=proc)


# ---------------------------------------------------------------------- vfio_combine_iova_ranges
def test_combine_ranges_smallest_gap_first() -> None:
    r = [(0, 0xFFF), (0x2000, 0x2FFF), (0x10000, 0x10FFF), (0x11000, 0x11FFF)]
    # gaps 0x1001, 0xd001, 0x1: the last pair merges first, then the first pair
    assert combine_iova_ranges(r, 3) == [(0, 0xFFF), (0x2000, 0x2FFF), (0x10000, 0x11FFF)]
    assert combine_iova_ranges(r, 2) == [(0, 0x2FFF), (0x10000, 0x11FFF)]
    assert combine_iova_ranges(r, 1) == [(0, 0x11FFF)]
    assert combine_iova_ranges(r, 4) == r
    # equal gaps: the lowest pair merges (curr_gap < min_gap is strict)
    eq = [(0, 0xFFF), (0x2000, 0x2FFF), (0x4000, 0x4FFF)]
    assert combine_iova_ranges(eq, 2) == [(0, 0x2FFF), (0x4000, 0x4FFF)]


# ---------------------------------------------------------------------- START checks (core)
def test_start_range_count_limits(proc: UserProcess) -> None:
    assert LOG_MAX_RANGES == 256
    assert err(start_raw, PageTracker(), proc, K4, [], num=0) == errno.EINVAL
    assert err(start_raw, PageTracker(), proc, K4, [(0, K4)], num=257) == errno.E2BIG
    many = [(i * 2 * K4, K4) for i in range(256)]
    t = PageTracker(max_ranges=8)
    assert start_raw(t, proc, K4, many) == K4
    assert len(t.ranges) == 8  # combined down to what the device tracks
    assert t.ranges[0][0] == 0 and t.ranges[-1][1] == 255 * 2 * K4 + K4 - 1


def test_start_alignment_overflow_overlap(proc: UserProcess) -> None:
    assert err(start_raw, PageTracker(), proc, K4, [(0x800, K4)]) == errno.EINVAL
    assert err(start_raw, PageTracker(), proc, K4, [(0, 0x800)]) == errno.EINVAL
    # IS_ALIGNED is a mask test (x & 0x2fff): with page_size 0x3000, 0x2000 fails while 0x1000 and 0x4000,
    # no multiples of 0x3000, pass
    assert err(start_raw, PageTracker(), proc, 0x3000, [(0x2000, 0x1000)]) == errno.EINVAL
    assert start_raw(PageTracker(), proc, 0x3000, [(0x1000, 0x4000)]) == 0x2000  # ilog2(0x3000) = 13
    assert err(start_raw, PageTracker(), proc, K4, [(0xFFFF_FFFF_FFFF_F000, K4)]) == errno.EOVERFLOW
    assert start_raw(PageTracker(), proc, K4, [(0xFFFF_FFFF_FFFF_E000, K4)]) == K4  # ends at 2^64 - 1
    assert err(start_raw, PageTracker(), proc, K4, [(0, 2 * K4), (K4, K4)]) == errno.EINVAL
    assert err(start_raw, PageTracker(), proc, K4, [(K4, K4), (0, 4 * K4)]) == errno.EINVAL
    assert start_raw(PageTracker(), proc, K4, [(K4, K4), (0, K4), (2 * K4, K4)]) == K4  # touching is fine
    # checks run range by range: an unaligned range 0 wins over an overflowing range 1
    assert err(start_raw, PageTracker(), proc, K4, [(0x10, K4), (0xFFFF_FFFF_FFFF_F000, K4)]) == errno.EINVAL
    assert err(start_raw, PageTracker(), proc, K4, [(0, K4)], ptr=0x10) == errno.EFAULT


def test_start_driver_rules(proc: UserProcess) -> None:
    t = PageTracker(min_page_shift=12, max_page_shift=21, max_addr_space_lg2=30)
    assert start_raw(t, proc, 0x800, [(0, K4)]) == K4  # clamped up
    assert err(start_raw, t, proc, K4, [(0, K4)]) == errno.EINVAL  # one session at a time
    device_feature(LocalBuffer(struct.pack("<II", 8, STOP)), log=t)
    device_feature(LocalBuffer(struct.pack("<II", 8, STOP)), log=t)  # stopping twice is fine
    assert start_raw(t, proc, 1 << 22, [(0, 1 << 22)]) == M2  # clamped down
    device_feature(LocalBuffer(struct.pack("<II", 8, STOP)), log=t)
    # 2^30 + 4K rounds up to a 2^31 address space, beyond this device
    assert err(start_raw, t, proc, K4, [(0, 1 << 30), (1 << 31, K4)]) == errno.EOPNOTSUPP
    assert not t.active


def test_start_write_back_fault_stops_logging(proc: UserProcess) -> None:
    """copy_to_user() of the control struct fails after log_start: log_stop, EFAULT."""
    t = PageTracker()
    arr = proc.mmap(K4)
    proc.write(arr, struct.pack("<QQ", 0, K4))
    va = proc.mmap(K4)
    proc.write(va, struct.pack("<IIQIIQ", 32, START, K4, 1, 0, arr))
    proc.mprotect(va, K4, PROT_READ)
    assert err(device_feature, ProcessBuffer(proc, va), log=t, process=proc) == errno.EFAULT
    assert not t.active


def test_feature_ops_and_sizes(proc: UserProcess) -> None:
    t = PageTracker()
    probe = VFIO_DEVICE_FEATURE_PROBE
    for f in (VFIO_DEVICE_FEATURE_DMA_LOGGING_START, VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP):
        assert device_feature(LocalBuffer(struct.pack("<II", 8, probe | VFIO_DEVICE_FEATURE_SET | f)), log=t) == 0
        assert err(device_feature, LocalBuffer(struct.pack("<II", 8, VFIO_DEVICE_FEATURE_GET | f)), log=t) == \
            errno.EINVAL
        assert err(device_feature, LocalBuffer(struct.pack("<II", 8, VFIO_DEVICE_FEATURE_SET | f))) == errno.ENOTTY
    assert err(device_feature, LocalBuffer(struct.pack("<II", 8, REPORT)), log=t) == errno.EINVAL  # argsz
    assert err(device_feature, LocalBuffer(struct.pack("<II", 8 + 23, START) + bytes(23)), log=t) == errno.EINVAL
    assert err(device_feature, LocalBuffer(struct.pack("<II", 8, VFIO_DEVICE_FEATURE_SET |
                                                       VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT)), log=t) == errno.EINVAL
    assert err(logging_start, None, K4, [(0, K4)]) == errno.ENOTTY


# ---------------------------------------------------------------------- REPORT
def test_report_checks(proc: UserProcess) -> None:
    t = PageTracker()
    assert err(report_raw, t, proc, 0, K4, K4, 0) == errno.EINVAL  # not started (driver)
    start_raw(t, proc, K4, [(0, 16 * K4)])
    for ps in (0, 0x800, 0x3000, K4 + 1):
        assert err(report_raw, t, proc, 0, K4, ps, 0) == errno.EINVAL
    assert err(report_raw, t, proc, 0xFFFF_FFFF_FFFF_F000, K4, K4, 0) == errno.EOVERFLOW
    assert err(logging_report, None, 0, K4, K4) == errno.ENOTTY


def test_report_bits_clear_and_or(proc: UserProcess) -> None:
    t = PageTracker()
    assert logging_start(t, K4, [(0x10000, 0x10000)]) == K4
    t.note_write(0x10800, K4)  # touches pages 0x10000 and 0x11000
    t.note_write(0x30000, K4)  # outside the tracked range: not logged
    bm = np.zeros(1, dtype=np.uint64)
    bm[0] = 1 << 5
    logging_report(t, 0x10000, 0x10000, K4, bm)
    assert int(bm[0]) == 0b100011  # only sets bits; bit 5 stays
    assert int(logging_report(t, 0x10000, 0x10000, K4)[0]) == 0  # the log was cleared
    t.note_write(0x10000, 2 * K4)
    assert int(logging_report(t, 0x10000, K4, K4)[0]) == 1  # clears only page 0x10000
    assert int(logging_report(t, 0x10000, 0x10000, K4)[0]) == 0b10
    # the same pages at a coarser report page size: one bit per 2 MiB
    t.note_write(0x1F000, 1)
    assert int(logging_report(t, 0, 4 * M2, M2)[0]) == 1


def test_report_replicates_large_tracked_pages(proc: UserProcess) -> None:
    t = PageTracker()
    assert logging_start(t, M2, [(0, 2 * M2)]) == M2
    t.note_write(0x1000, 1)
    bm = logging_report(t, 0, 2 * M2, K4)
    assert bm.size == 16 and (bm[:8] == np.uint64(0xFFFF_FFFF_FFFF_FFFF)).all() and not bm[8:].any()


def test_report_into_user_memory(proc: UserProcess) -> None:
    t = PageTracker()
    start_raw(t, proc, K4, [(0, 256 * K4)])
    t.note_write(3 * K4, 1)
    t.note_write(200 * K4, 2 * K4)
    bm = proc.mmap(K4)
    proc.write(bm, struct.pack("<QQQQ", 0, 0, 0, 1 << 63))
    report_raw(t, proc, 0, 256 * K4, K4, bm)
    words = struct.unpack("<4Q", proc.read(bm, 32))
    assert words == (1 << 3, 0, 0, (1 << 63) | (1 << 8) | (1 << 9))
    # an unmapped bitmap: iova_bitmap_set() skips what it cannot pin; the log is still cleared
    t.note_write(0, 1)
    report_raw(t, proc, 0, 256 * K4, K4, 0x10)
    assert t.dirty_pages() == 0


def test_iova_bitmap_clips_to_its_range() -> None:
    b = IovaBitmap(0x10000, 4 * K4, K4)
    b.set(0, 0x11001)  # from before the range into its second page
    b.set(0x13000, 0x100000)  # runs past the end
    words = np.zeros(1, dtype=np.uint64)
    b.apply(words)
    assert int(words[0]) == 0b1011


# ---------------------------------------------------------------------- a real device through the IOMMU
def test_testdev_dma_writes_are_logged() -> None:
    """testdev copies its buffer to guest memory by DMA through a mock IOMMU domain; the tracker attached
    as its dirty sink logs exactly the pages written; a faulting DMA logs nothing."""
    mem = PhysMemory(1 << 26)
    unit = make_unit("mock", mem)
    idev = IommuDevice("testdev0", 0x10)
    iommu_probe_device(idev, unit, IommuGroup())
    proc = UserProcess(mem)
    ictx = Iommufd(proc)
    ioas = ictx.ioas_alloc()
    idv = device_bind(ictx, idev)
    device_attach(idv, 0, ioas)
    va = proc.mmap(64 * K4)
    iova = 1 << 24
    ictx.ioas_map(ioas, va, 64 * K4, iova, flags=7)
    dev = TestDev()
    dev.attach_dma(IommuDmaPort(idev))
    tracker = PageTracker()
    dev.attach_dirty_tracker(tracker)
    dev.config_write(regs.COMMAND, 2, regs.COMMAND_MASTER | regs.COMMAND_MEMORY)
    logging_start(tracker, K4, [(iova, 64 * K4)])
    dev.write_bar(BUF_BAR, 0, b"\x5a" * 0x3000)

    def dma(target: int, n: int) -> None:
        dev.bar_write(REGS_BAR, REG_IOVA, 8, target)
        dev.bar_write(REGS_BAR, REG_BUF_OFFSET, 4, 0)
        dev.bar_write(REGS_BAR, REG_LENGTH, 4, n)
        dev.bar_write(REGS_BAR, REG_CMD, 4, CMD_WRITE)
        dev.after_access()

    dma(iova + 5 * K4 + 0x100, 0x2000)  # pages 5, 6, 7
    assert dev.bar_read(REGS_BAR, REG_STATUS, 4) & STATUS_DONE
    assert proc.read(va + 5 * K4 + 0x100, 4) == b"\x5a" * 4
    dma(iova + 100 * K4, 0x100)  # not mapped: faults, nothing written, nothing logged
    assert dev.dma_errors
    bm = logging_report(tracker, iova, 64 * K4, K4)
    assert int(bm[0]) == 0b1110_0000
