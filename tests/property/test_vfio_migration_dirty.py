"""Random live migrations never lose a page.

A testdev (vfiolab.devices.testdev, a real DMA engine) is assigned with vfio-pci through the uAPI, either
in a type1v2 container (VFIO_GROUP_SET_CONTAINER) or bound to an iommufd and attached to a HWPT allocated
with IOMMU_HWPT_ALLOC_DIRTY_TRACKING, on a VT-d unit.  Its guest memory is a pinned mapping of the VMM
process.  Hypothesis drives random sequences of: device DMA writes into guest pages (issued through the
device file's BAR accesses, only while the device runs), dirty harvests, migration state changes through
VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE for a random feature set (any supported target; STOP_COPY ->
PRE_COPY(_P2P) must fail with EINVAL), and reads of the data fd.  The run ends in STOP_COPY with a last
harvest and the stream is resumed into a fresh device.  (RESUMING is the destination's state: a source never
requests it, and no path to another state passes through it.)

Invariants, checked for each dirty tracker on its own (device DMA logging; type1 VFIO_IOMMU_DIRTY_PAGES or
iommufd IOMMU_HWPT_GET_DIRTY_BITMAP): guest memory rebuilt from an initial copy plus the pages each harvest
reported equals the source's; DMA logging reports exactly the pages the device wrote; the resumed device
state equals the source's; the migration state is always the one requested (or unchanged after EINVAL).
"""

from __future__ import annotations

import errno
import struct
import sys
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from vfiolab.devices.testdev import (
    BUF_BAR,
    CMD_WRITE,
    REG_BUF_OFFSET,
    REG_CMD,
    REG_IOVA,
    REG_LENGTH,
    REGS_BAR,
    TestDev,
)
from vfiolab.errors import UapiError
from vfiolab.iommu.driver import make_unit
from vfiolab.iommufd import Iommufd
from vfiolab.iommufd import uapi as iu
from vfiolab.iommufd.task import Task
from vfiolab.memory import PhysMemory, UserProcess
from vfiolab.pci import regs
from vfiolab.vfio import cdev
from vfiolab.vfio import uapi as U
from vfiolab.vfio.container import VfioContainer
from vfiolab.vfio.dma_logging import PageTracker
from vfiolab.vfio.group import VfioGroups
from vfiolab.vfio.migration import RUNNING_STATES, SAVING_STATES, MigrationFile, MigState, VfioMigration
from vfiolab.vfio.pci_core import DeviceMigration, make_vfio_pci
from vfiolab.vfio.type1 import VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from test_vfio_migration_fsm import FEATURE_SETS, supported

K4 = 0x1000
PAGES = 24
IOVA = 0x40_0000
S, SC, PC, PCP = MigState.STOP, MigState.STOP_COPY, MigState.PRE_COPY, MigState.PRE_COPY_P2P


class SnapshotPrecopy(DeviceMigration):
    """Whole-state pre-copy for a device-API device: the initial chunk is the saved state, a dirty chunk
    is the state again whenever it changed since last sent; the destination applies each in turn."""

    def __init__(self, device: Any) -> None:
        super().__init__(device)
        self.sent: bytes | None = None

    def precopy_start(self) -> bytes:
        self.sent = self.save_state()
        return self.sent

    def precopy_pending(self) -> int:
        now = self.save_state()
        return 0 if now == self.sent else len(now)

    def precopy_dirty(self) -> bytes:
        self.sent = self.save_state()
        return self.sent

    def precopy_end(self) -> None:
        self.sent = None

    def load_precopy(self, data: bytes) -> None:
        self.load_state(data)


class Source:
    """The source host: testdev assigned with vfio-pci, guest RAM mapped for DMA, dirty tracking on."""

    def __init__(self, mode: str, flags: int) -> None:
        self.mode = mode
        mem = PhysMemory(1 << 26)
        unit = make_unit("intel", mem)
        self.dev = TestDev()
        self.vdev = make_vfio_pci(self.dev, unit, rid=0x20)
        self.vdev.mig = VfioMigration(SnapshotPrecopy(self.dev), flags)
        self.tracker = PageTracker()
        self.vdev.log_ops = self.tracker
        self.dev.attach_dirty_tracker(self.tracker)
        self.proc = UserProcess(mem)
        self.task = Task.of(self.proc)
        self.va = self.proc.mmap(PAGES * K4)
        self.bitmap = self.proc.mmap(K4)
        if mode == "type1":
            groups = VfioGroups()
            g = groups.register_device(self.vdev)
            self.container = VfioContainer(self.proc)
            gf = groups.open(g, self.proc)
            gf.set_container(self.container)
            self.container.vfio_set_iommu(iu.VFIO_TYPE1v2_IOMMU)
            self.df = gf.get_device_fd(self.vdev.pci_name)
            self.container.vfio_iommu_map_dma(self.va, IOVA, PAGES * K4)
            self.container.dirty_start()
        else:
            self.ictx = Iommufd(self.proc)
            ifd = self.task.fd_install(self.ictx)
            self.df = cdev.open_cdev(self.vdev, self.proc)
            out = self.df.ioctl(U.VFIO_DEVICE_BIND_IOMMUFD, U.vfio_device_bind_iommufd.pack(
                argsz=U.vfio_device_bind_iommufd.size, iommufd=ifd))
            assert isinstance(out, bytes)
            devid = U.vfio_device_bind_iommufd.unpack(out)["out_devid"]
            ioas = self.ictx.ioas_alloc()
            self.hwpt = self.ictx.hwpt_alloc(devid, ioas, flags=iu.IOMMU_HWPT_ALLOC_DIRTY_TRACKING)
            self.df.ioctl(U.VFIO_DEVICE_ATTACH_IOMMUFD_PT, U.vfio_device_attach_iommufd_pt.pack(
                argsz=U.vfio_device_attach_iommufd_pt.size, pt_id=self.hwpt))
            self.ictx.ioas_map(ioas, self.va, PAGES * K4, IOVA, flags=iu.IOMMU_IOAS_MAP_FLAGS)
            self.ictx.hwpt_set_dirty_tracking(self.hwpt, iu.IOMMU_HWPT_DIRTY_TRACKING_ENABLE)
        cmd = self.df.pread(7 << 40 | regs.COMMAND, 2)
        self.df.pwrite(7 << 40 | regs.COMMAND, struct.pack("<H", struct.unpack("<H", cmd)[0] | 0x6))
        rng = self.proc.mmap(K4)
        self.proc.write(rng, struct.pack("<QQ", IOVA, PAGES * K4))
        self.df.feature(U.VFIO_DEVICE_FEATURE_SET | U.VFIO_DEVICE_FEATURE_DMA_LOGGING_START,
                        struct.pack("<QIIQ", K4, 1, 0, rng))

    # ------------------------------------------------------------------ guest-visible actions
    def ram(self) -> np.ndarray:
        return np.frombuffer(self.proc.read(self.va, PAGES * K4), dtype=np.uint8)

    def dma_write(self, off: int, data: bytes) -> None:
        """Load the device buffer through BAR2 and start a DMA WRITE of it to guest IOVA + off."""
        bar = lambda i, o: i << 40 | o
        self.df.pwrite(bar(BUF_BAR, 0), data)
        iova = IOVA + off
        self.df.pwrite(bar(REGS_BAR, REG_IOVA), struct.pack("<I", iova & 0xFFFFFFFF))
        self.df.pwrite(bar(REGS_BAR, REG_IOVA + 4), struct.pack("<I", iova >> 32))
        self.df.pwrite(bar(REGS_BAR, REG_BUF_OFFSET), struct.pack("<I", 0))
        self.df.pwrite(bar(REGS_BAR, REG_LENGTH), struct.pack("<I", len(data)))
        self.df.pwrite(bar(REGS_BAR, REG_CMD), struct.pack("<I", CMD_WRITE))

    def set_state(self, state: int) -> MigrationFile | None:
        out = self.df.feature(U.VFIO_DEVICE_FEATURE_SET | U.VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE,
                              struct.pack("<Ii", state, 0))
        got, fd = struct.unpack("<Ii", out)
        assert got == state
        if fd < 0:
            return None
        f = self.task.fget(fd)
        assert isinstance(f, MigrationFile)
        return f

    def get_state(self) -> int:
        out = self.df.feature(U.VFIO_DEVICE_FEATURE_GET | U.VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE, bytes(8))
        return int(struct.unpack("<Ii", out)[0])

    # ------------------------------------------------------------------ dirty harvests
    def _bits(self) -> np.ndarray:
        words = np.frombuffer(self.proc.read(self.bitmap, 8), dtype="<u8")
        return np.unpackbits(words.view(np.uint8), bitorder="little")[:PAGES].astype(bool)

    def harvest_logging(self) -> np.ndarray:
        self.proc.write(self.bitmap, bytes(8))
        self.df.feature(U.VFIO_DEVICE_FEATURE_GET | U.VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT,
                        struct.pack("<QQQQ", IOVA, PAGES * K4, K4, self.bitmap))
        return self._bits()

    def harvest_iommu(self) -> np.ndarray:
        self.proc.write(self.bitmap, bytes(8))
        if self.mode == "type1":
            self.container.vfio_iommu_dirty_pages(VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP, iova=IOVA,
                                                  size=PAGES * K4, pgsize=K4, bitmap_size=8, data=self.bitmap)
        else:
            self.ictx.hwpt_get_dirty_bitmap(self.hwpt, IOVA, PAGES * K4, K4, self.bitmap)
        return self._bits()


ACTIONS = st.lists(st.one_of(
    st.tuples(st.just("dma"), st.integers(0, PAGES * K4 - 1), st.integers(1, 2 * K4), st.integers(0, 255)),
    st.tuples(st.just("harvest")),
    st.tuples(st.just("set"), st.sampled_from([s for s in MigState if s != MigState.RESUMING])),
    st.tuples(st.just("read"), st.integers(1, 1 << 17)),
), max_size=25)


@settings(max_examples=80, deadline=None)
@given(mode=st.sampled_from(["type1", "iommufd"]), features=st.sampled_from(sorted(FEATURE_SETS)),
       actions=ACTIONS)
def test_random_migrations_lose_nothing(mode: str, features: str, actions: list[tuple[Any, ...]]) -> None:
    flags = FEATURE_SETS[features]
    ok_states = supported(flags)
    src = Source(mode, flags)
    image = src.ram().copy()  # the first full copy of guest memory
    dst_log, dst_iommu = image.copy(), image.copy()
    written = np.zeros(PAGES, dtype=bool)  # pages the device wrote since the last harvest
    session: MigrationFile | None = None
    stream = bytearray()
    state = MigState.RUNNING

    def harvest() -> None:
        ram = src.ram()
        log_bits, iommu_bits = src.harvest_logging(), src.harvest_iommu()
        assert np.array_equal(log_bits, written)  # DMA logging is exact: only pages the device wrote
        assert not (written & ~iommu_bits).any()  # the IOMMU-side tracker may only over-report
        for dst, bits in ((dst_log, log_bits), (dst_iommu, iommu_bits)):
            pages = np.flatnonzero(bits)
            view, src_view = dst.reshape(PAGES, K4), ram.reshape(PAGES, K4)
            view[pages] = src_view[pages]
        written[:] = False

    for act in actions:
        if act[0] == "dma":
            _, off, n, fill = act
            n = min(n, PAGES * K4 - off)
            if state not in RUNNING_STATES:
                continue  # a well-behaved VMM leaves a stopped device alone
            src.dma_write(off, bytes([fill]) * n)
            written[off // K4:(off + n - 1) // K4 + 1] = True
        elif act[0] == "harvest":
            harvest()
        elif act[0] == "read":
            if session is None:
                continue
            try:
                stream += session.read(act[1])
            except UapiError as e:
                assert e.errno == errno.ENOMSG and state in (PC, PCP)
        else:
            new = act[1]
            if new not in ok_states:
                try:
                    src.set_state(new)
                except UapiError as e:
                    assert e.errno == errno.EINVAL
                assert src.get_state() == state
                continue
            if state == SC and new in (PC, PCP):
                try:
                    src.set_state(new)
                except UapiError as e:
                    assert e.errno == errno.EINVAL and src.get_state() == SC
                    continue
                raise AssertionError("STOP_COPY -> PRE_COPY must be refused")
            f = src.set_state(new)
            if f is not None:
                session, stream = f, bytearray()
            elif new not in SAVING_STATES and new != state:
                session, stream = None, bytearray()  # the session ended
            state = new
        assert src.get_state() == state
    # finish: STOP_COPY, the rest of the stream, the last harvest with the device stopped
    f = src.set_state(SC) if state != SC else None
    if f is not None:
        session, stream = f, bytearray()
    assert session is not None
    while chunk := session.read(1 << 16):
        stream += chunk
    harvest()
    ram = src.ram()
    assert np.array_equal(dst_log, ram), "DMA logging lost a page"
    assert np.array_equal(dst_iommu, ram), f"{mode} dirty tracking lost a page"
    # the destination device
    dst_dev = TestDev()
    dst = VfioMigration(SnapshotPrecopy(dst_dev), flags)
    rf = dst.set_state(MigState.RESUMING)
    assert rf is not None
    for i in range(0, len(stream), 5000):
        rf.write(stream[i:i + 5000])
    dst.set_state(MigState.RUNNING)
    assert dst_dev.save_state() == src.dev.save_state()
