"""The VMM: one user process driving a :class:`~vfiolab.scenarios.machine.Machine` through the uAPI
only, as QEMU does with iommufd — open each device's vfio cdev, VFIO_DEVICE_BIND_IOMMUFD, IOMMU_IOAS_ALLOC,
IOMMU_HWPT_ALLOC (with IOMMU_HWPT_ALLOC_DIRTY_TRACKING when asked), VFIO_DEVICE_ATTACH_IOMMUFD_PT, guest
RAM mapped with IOMMU_IOAS_MAP at IOVA 0 — and then the dirty trackers (IOMMU_HWPT_SET_DIRTY_TRACKING /
GET_DIRTY_BITMAP, VFIO_DEVICE_FEATURE_DMA_LOGGING_START/REPORT) and the migration state
(VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE with its data fds).
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from vfiolab.errors import VfiolabError
from vfiolab.iommufd import Iommufd, Task
from vfiolab.iommufd import uapi as IU
from vfiolab.memory import PAGE_SIZE, UserProcess
from vfiolab.scenarios.guestram import GuestRam
from vfiolab.scenarios.machine import Machine
from vfiolab.vfio import uapi as U
from vfiolab.vfio.cdev import open_cdev
from vfiolab.vfio.device import VfioDeviceFile
from vfiolab.vfio.migration import MigrationFile, MigState

RAM_IOVA: Final = 0
_FEAT_SET: Final = U.VFIO_DEVICE_FEATURE_SET
_FEAT_GET: Final = U.VFIO_DEVICE_FEATURE_GET


class Vmm:
    """The VMM process of one vfiolab instance, with the machine's devices assigned to it."""

    def __init__(self, machine: Machine, *, dirty_tracking: bool) -> None:
        self.machine = machine
        self.proc = UserProcess(machine.mem, name="vmm")
        self.task = Task.of(self.proc)
        self.ictx = Iommufd(self.proc)
        self.iommufd = self.task.fd_install(self.ictx)
        self.files: dict[str, VfioDeviceFile] = {}
        self.devids: dict[str, int] = {}
        for name, vdev in machine.vfio.items():
            df = open_cdev(vdev, self.proc)
            self.files[name] = df
            self.devids[name] = self._bind(df)
        self.ioas = self.ictx.ioas_alloc()
        first = next(iter(self.devids.values()))
        self.hwpt = self.ictx.hwpt_alloc(first, self.ioas,
                                         flags=IU.IOMMU_HWPT_ALLOC_DIRTY_TRACKING if dirty_tracking else 0)
        for df in self.files.values():
            self._attach(df, self.hwpt)
        size = machine.ram_bytes
        self.ram_va = self.proc.mmap(size)
        self.ictx.ioas_map(self.ioas, self.ram_va, size, RAM_IOVA, flags=IU.IOMMU_IOAS_MAP_FLAGS)
        self.ram = GuestRam(self.proc, machine.mem, self.ram_va, size)
        self.bitmap_bytes = -(-self.ram.npages // 64) * 8
        self.bitmap_va = self.proc.mmap(-(-self.bitmap_bytes // PAGE_SIZE) * PAGE_SIZE)
        self.data_files: dict[str, MigrationFile] = {}

    # ------------------------------------------------------------------ cdev flow
    def _bind(self, df: VfioDeviceFile) -> int:
        st = U.vfio_device_bind_iommufd
        buf = bytearray(st.pack(argsz=st.size, iommufd=self.iommufd))
        df.ioctl(U.VFIO_DEVICE_BIND_IOMMUFD, buf)
        return int(st.unpack(buf)["out_devid"])

    @staticmethod
    def _attach(df: VfioDeviceFile, pt_id: int) -> int:
        st = U.vfio_device_attach_iommufd_pt
        buf = bytearray(st.pack(argsz=st.size, pt_id=pt_id))
        df.ioctl(U.VFIO_DEVICE_ATTACH_IOMMUFD_PT, buf)
        return int(st.unpack(buf)["pt_id"])

    # ------------------------------------------------------------------ dirty tracking
    def iommu_dirty_tracking(self, enable: bool) -> None:
        """IOMMU_HWPT_SET_DIRTY_TRACKING on the HWPT both devices are attached to."""
        self.ictx.hwpt_set_dirty_tracking(self.hwpt, IU.IOMMU_HWPT_DIRTY_TRACKING_ENABLE if enable else 0)

    def _bitmap(self) -> npt.NDArray[np.bool_]:
        raw = np.frombuffer(self.proc.read(self.bitmap_va, self.bitmap_bytes), dtype=np.uint8)
        return np.unpackbits(raw, bitorder="little")[:self.ram.npages].astype(bool)

    def _clear_bitmap(self) -> None:
        self.proc.write(self.bitmap_va, bytes(self.bitmap_bytes))

    def harvest_iommu(self) -> npt.NDArray[np.bool_]:
        """IOMMU_HWPT_GET_DIRTY_BITMAP over guest RAM (read and clear): the dirty pages."""
        self._clear_bitmap()
        self.ictx.hwpt_get_dirty_bitmap(self.hwpt, RAM_IOVA, self.machine.ram_bytes, PAGE_SIZE, self.bitmap_va)
        return self._bitmap()

    def dma_logging_start(self, name: str) -> int:
        """VFIO_DEVICE_FEATURE_DMA_LOGGING_START for all of guest RAM; the page size the device chose."""
        ranges = self.proc.mmap(PAGE_SIZE)
        try:
            self.proc.write(ranges, U.vfio_device_feature_dma_logging_range.pack(
                iova=RAM_IOVA, length=self.machine.ram_bytes))
            out = self.files[name].feature(_FEAT_SET | U.VFIO_DEVICE_FEATURE_DMA_LOGGING_START,
                                           U.vfio_device_feature_dma_logging_control.pack(
                                               page_size=PAGE_SIZE, num_ranges=1, ranges=ranges))
        finally:
            self.proc.munmap(ranges, PAGE_SIZE)
        page_size = int(U.vfio_device_feature_dma_logging_control.unpack(out)["page_size"])
        if page_size != PAGE_SIZE:
            raise VfiolabError(f"{name}: DMA logging chose {page_size}-byte pages, the VMM tracks 4 KiB")
        return page_size

    def dma_logging_stop(self, name: str) -> None:
        """VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP."""
        self.files[name].feature(_FEAT_SET | U.VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP)

    def harvest_dma_log(self, name: str) -> npt.NDArray[np.bool_]:
        """VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT over guest RAM (the device clears what it reports)."""
        self._clear_bitmap()
        self.files[name].feature(_FEAT_GET | U.VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT,
                                 U.vfio_device_feature_dma_logging_report.pack(
                                     iova=RAM_IOVA, length=self.machine.ram_bytes, page_size=PAGE_SIZE,
                                     bitmap=self.bitmap_va))
        return self._bitmap()

    # ------------------------------------------------------------------ migration
    def mig_state(self, name: str) -> MigState:
        """VFIO_DEVICE_FEATURE GET MIG_DEVICE_STATE."""
        st = U.vfio_device_feature_mig_state
        out = self.files[name].feature(_FEAT_GET | U.VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE, bytes(st.size))
        return MigState(st.unpack(out)["device_state"])

    def set_mig_state(self, name: str, state: MigState) -> MigrationFile | None:
        """VFIO_DEVICE_FEATURE SET MIG_DEVICE_STATE; a new data fd is kept in :attr:`data_files`."""
        st = U.vfio_device_feature_mig_state
        out = st.unpack(self.files[name].feature(_FEAT_SET | U.VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE,
                                                 st.pack(device_state=state, data_fd=-1)))
        if out["data_fd"] < 0:
            return None
        f = self.task.fget(out["data_fd"])
        if not isinstance(f, MigrationFile):
            raise VfiolabError(f"{name}: data fd {out['data_fd']} is not a migration file")
        old = self.data_files.pop(name, None)
        if old is not None:
            old.release()
        self.data_files[name] = f
        return f

    def data_size(self, name: str) -> int:
        """VFIO_DEVICE_FEATURE GET MIG_DATA_SIZE: the device's estimate of its STOP_COPY bytes."""
        st = U.vfio_device_feature_mig_data_size
        out = self.files[name].feature(_FEAT_GET | U.VFIO_DEVICE_FEATURE_MIG_DATA_SIZE, bytes(st.size))
        return int(st.unpack(out)["stop_copy_length"])

    def close(self) -> None:
        """Close every fd the VMM holds (data fds, device files, the iommufd)."""
        for f in self.data_files.values():
            f.release()
        self.data_files.clear()
        self.ram.release()
        for df in self.files.values():
            df.close()
        self.ictx.close()


__all__ = ["RAM_IOVA", "Vmm"]
