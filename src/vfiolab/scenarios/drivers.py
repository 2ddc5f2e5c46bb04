"""Guest-side drivers for edu and testdev, written against a vfio device file only (region pread/pwrite,
mmap of the RAM BAR, VFIO_DEVICE_SET_IRQS with real eventfds), the way a VMM's guest drives assigned
devices.  Every operation waits for its completion, checks it and reads its interrupt eventfd: the
drivers count operations and delivered interrupts so a scenario can show (and check) one interrupt per
completion.
"""

from __future__ import annotations

import mmap
import os
import struct

import numpy as np

from vfiolab.devices import edu as E
from vfiolab.devices import testdev as T
from vfiolab.errors import VfiolabError
from vfiolab.pci import regs
from vfiolab.vfio import uapi as U
from vfiolab.vfio.device import VfioDeviceFile, eventfds

_CFG = U.vfio_pci_index_to_offset(U.VFIO_PCI_CONFIG_REGION_INDEX)
_EFD_TRIGGER = U.VFIO_IRQ_SET_DATA_EVENTFD | U.VFIO_IRQ_SET_ACTION_TRIGGER
_NONE_TRIGGER = U.VFIO_IRQ_SET_DATA_NONE | U.VFIO_IRQ_SET_ACTION_TRIGGER


def _eventfd_count(fd: int) -> int:
    """Read (and reset) an eventfd's counter; 0 when nothing was signalled."""
    try:
        return os.eventfd_read(fd)
    except BlockingIOError:
        return 0


class Driver:
    """Register access, bus mastering and one interrupt eventfd for a vfio device file."""

    irq_index = U.VFIO_PCI_INTX_IRQ_INDEX

    def __init__(self, df: VfioDeviceFile, name: str) -> None:
        self.df, self.name = df, name
        self.efd = -1
        self.ops = 0
        """Operations that asked for a completion interrupt."""
        self.interrupts = 0
        """Interrupts read from the eventfd."""

    def rd(self, bar: int, off: int, size: int = 4) -> int:
        return int.from_bytes(self.df.pread(U.vfio_pci_index_to_offset(bar) + off, size), "little")

    def wr(self, bar: int, off: int, val: int, size: int = 4) -> None:
        self.df.pwrite(U.vfio_pci_index_to_offset(bar) + off, val.to_bytes(size, "little"))

    def enable(self) -> None:
        """Command: Memory Space + Bus Master (what a guest driver's pci_enable_device/set_master do, or
        a VMM restoring the device's config space after migration)."""
        cmd = struct.unpack("<H", self.df.pread(_CFG + regs.COMMAND, 2))[0]
        self.df.pwrite(_CFG + regs.COMMAND, struct.pack("<H", cmd | regs.COMMAND_MEMORY | regs.COMMAND_MASTER))

    def setup_irq(self) -> None:
        """VFIO_DEVICE_SET_IRQS: vector 0 of :attr:`irq_index` signals a new eventfd."""
        if self.efd < 0:
            self.efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.df.set_irqs(self.irq_index, _EFD_TRIGGER, 0, 1, eventfds(self.efd))

    def _completed(self) -> None:
        """One operation finished: its interrupt must be on the eventfd."""
        self.ops += 1
        self.interrupts += _eventfd_count(self.efd)

    def close(self) -> None:
        """Disable the interrupt and close the eventfd."""
        if self.efd >= 0:
            if not self.df.closed:
                self.df.set_irqs(self.irq_index, _NONE_TRIGGER, 0, 0)
            os.close(self.efd)
            self.efd = -1


class EduDriver(Driver):
    """QEMU's edu: factorial and DMA through its 4 KiB buffer, MSI on completion."""

    irq_index = U.VFIO_PCI_MSI_IRQ_INDEX

    def factorial(self, n: int) -> int:
        """n! computed by the device, completion signalled by MSI."""
        self.wr(0, E.REG_STATUS, E.STATUS_IRQFACT)
        self.wr(0, E.REG_FACT, n)
        if self.rd(0, E.REG_STATUS) & E.STATUS_COMPUTING:
            raise VfiolabError(f"{self.name}: factorial still computing")
        value = self.rd(0, E.REG_FACT)
        self._ack(E.FACT_IRQ)
        return value

    def _ack(self, bit: int) -> None:
        if not self.rd(0, E.REG_IRQ_STATUS) & bit:
            raise VfiolabError(f"{self.name}: interrupt status {bit:#x} not raised")
        self._completed()
        self.wr(0, E.REG_IRQ_ACK, bit)

    def _dma(self, src: int, dst: int, n: int, to_ram: bool) -> None:
        self.wr(0, E.REG_DMA_SRC, src, 8)
        self.wr(0, E.REG_DMA_DST, dst, 8)
        self.wr(0, E.REG_DMA_CNT, n, 8)
        self.wr(0, E.REG_DMA_CMD, E.DMA_RUN | E.DMA_IRQ_ON_DONE | (E.DMA_DIR_TO_RAM if to_ram else 0))
        if self.rd(0, E.REG_DMA_CMD, 8) & E.DMA_RUN:
            raise VfiolabError(f"{self.name}: DMA still running")
        self._ack(E.DMA_IRQ)

    def copy(self, src_iova: int, dst_iova: int, n: int) -> None:
        """Copy ``n`` <= 4096 bytes of guest memory by DMA: memory -> edu's buffer -> memory (edu, like
        QEMU's, completes a DMA the IOMMU refused without telling the guest: callers check memory)."""
        if not 0 < n <= E.DMA_SIZE:
            raise VfiolabError(f"{self.name}: a copy moves 1..{E.DMA_SIZE} bytes, not {n}")
        self._dma(src_iova, E.DMA_START, n, to_ram=False)
        self._dma(E.DMA_START, dst_iova, n, to_ram=True)


class TestDevDriver(Driver):
    """testdev: DMA between guest memory and its mmap'd buffer BAR, MSI-X vector 0 on completion."""

    __test__ = False
    irq_index = U.VFIO_PCI_MSIX_IRQ_INDEX

    def __init__(self, df: VfioDeviceFile, name: str) -> None:
        super().__init__(df, name)
        self._map: mmap.mmap | None = None
        self._buffer: np.ndarray | None = None

    @property
    def buffer(self) -> np.ndarray:
        """BAR2 (the transfer buffer) mapped into the VMM (VFIO region mmap)."""
        if self._buffer is None:
            self._map = self.df.mmap(U.vfio_pci_index_to_offset(T.BUF_BAR), T.BUF_SIZE)
            self._buffer = np.frombuffer(self._map, dtype=np.uint8)
        return self._buffer

    def init_device(self) -> None:
        """Program the completion interrupt: vector 0, on success and on error (device registers,
        which migrate with the device; a destination does not program them again)."""
        self.wr(0, T.REG_VECTOR, 0)
        self.wr(0, T.REG_CTRL, T.CTRL_IRQ_DONE | T.CTRL_IRQ_ERROR)

    def _run(self, cmd: int, iova: int, n: int, buf_off: int) -> None:
        self.wr(0, T.REG_IOVA, iova, 8)
        self.wr(0, T.REG_BUF_OFFSET, buf_off)
        self.wr(0, T.REG_LENGTH, n)
        self.wr(0, T.REG_CMD, cmd)
        status = self.rd(0, T.REG_STATUS)
        self._completed()
        self.wr(0, T.REG_STATUS, T.STATUS_DONE | T.STATUS_ERROR)
        if status & T.STATUS_ERROR:
            raise VfiolabError(f"{self.name}: DMA at {self.rd(0, T.REG_FAULT_IOVA, 8):#x} faulted")
        if not status & T.STATUS_DONE:
            raise VfiolabError(f"{self.name}: command {cmd} did not complete (status {status:#x})")

    def write_memory(self, iova: int, data: bytes | np.ndarray, buf_off: int = 0) -> None:
        """Store ``data`` at guest ``iova`` by DMA (through the buffer at ``buf_off``)."""
        src = np.frombuffer(data, dtype=np.uint8) if isinstance(data, bytes) else data
        self.buffer[buf_off:buf_off + len(src)] = src
        self._run(T.CMD_WRITE, iova, len(src), buf_off)

    def read_memory(self, iova: int, n: int, buf_off: int = 0) -> bytes:
        """``n`` bytes of guest memory at ``iova``, fetched by DMA into the buffer."""
        self._run(T.CMD_READ, iova, n, buf_off)
        return self.buffer[buf_off:buf_off + n].tobytes()

    def close(self) -> None:
        self._buffer = None
        if self._map is not None:
            self._map.close()
            self._map = None
        super().close()


__all__ = ["Driver", "EduDriver", "TestDevDriver"]
