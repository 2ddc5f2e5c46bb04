"""testdev: vfiolab's own DMA engine device, made to exercise an IOMMU from the device side.

A PCI Express endpoint (1234:7e57, class ff0000) with FLR, power management (NoSoftRst+), MSI-X (4
vectors; table at BAR0+0x2000, PBA at BAR0+0x3000), and the ATS, PRI (PRG Response PASID Required) and
PASID extended capabilities.  BAR0 (16 KiB, 32-bit) holds the registers; BAR2 (64 KiB, 64-bit
prefetchable) is the transfer buffer, plain RAM a host may mmap.

Registers (BAR0; 4-byte accesses, the two 64-bit registers also take 8-byte accesses):

====== ======================================================================================
0x00   ID 0x7e570001 (RO)
0x04   STATUS: 0 BUSY, 1 DONE (RW1C), 2 ERROR (RW1C), 3 PRI_WAIT (waiting for a page response)
0x08   CTRL: 0 interrupt on completion, 1 issue requests with PASID, 2 interrupt on error
0x0c   PASID (20 bits)
0x10   IOVA (64-bit)
0x18   BUF_OFFSET: where in the buffer (BAR2) the transfer starts
0x1c   LENGTH
0x20   CMD (write): 1 READ (memory -> buffer), 2 WRITE (buffer -> memory); ignored while BUSY
0x24   VECTOR: the MSI-X (or MSI) vector of the interrupt
0x28   COMPLETIONS (RO)   0x2c ERRORS (RO)   0x30 FAULT_IOVA (RO, 64-bit)   0x38 RETRIES (RO)
====== ======================================================================================

A command runs as deferred work.  A DMA that must wait for a PRI page response (the host raises
:class:`DmaRetry`) sets PRI_WAIT and is reissued at every later service until it completes or fails.
The interrupt goes out as MSI-X, else MSI, else as INTx held high while DONE or ERROR is set.
ATS needs nothing here: hosted in-process, the DMA port translates through the function's ATC.
"""

from __future__ import annotations

import struct
from typing import ClassVar, Final

from vfiolab.devices.api import Device, DmaError, DmaRetry
from vfiolab.errors import VfiolabError
from vfiolab.pci.caps.ats import AtsCap
from vfiolab.pci.caps.msix import MsixCap
from vfiolab.pci.caps.pasid import PasidCap
from vfiolab.pci.caps.pm import PmCap
from vfiolab.pci.caps.pri import PriCap
from vfiolab.pci.function import Bar, PcieEndpoint

VENDOR: Final = 0x1234
DEVICE: Final = 0x7E57
CLASS: Final = 0xFF0000
IDENT: Final = 0x7E570001
REGS_BAR: Final = 0
REGS_SIZE: Final = 0x4000
BUF_BAR: Final = 2
BUF_SIZE: Final = 0x10000
MSIX_VECTORS: Final = 4
MSIX_TABLE: Final = 0x2000
MSIX_PBA: Final = 0x3000

REG_ID: Final = 0x00
REG_STATUS: Final = 0x04
REG_CTRL: Final = 0x08
REG_PASID: Final = 0x0C
REG_IOVA: Final = 0x10
REG_BUF_OFFSET: Final = 0x18
REG_LENGTH: Final = 0x1C
REG_CMD: Final = 0x20
REG_VECTOR: Final = 0x24
REG_COMPLETIONS: Final = 0x28
REG_ERRORS: Final = 0x2C
REG_FAULT_IOVA: Final = 0x30
REG_RETRIES: Final = 0x38

STATUS_BUSY: Final = 0x1
STATUS_DONE: Final = 0x2
STATUS_ERROR: Final = 0x4
STATUS_PRI_WAIT: Final = 0x8
CTRL_IRQ_DONE: Final = 0x1
CTRL_PASID: Final = 0x2
CTRL_IRQ_ERROR: Final = 0x4
CMD_READ: Final = 1
CMD_WRITE: Final = 2
PASID_MASK: Final = (1 << 20) - 1

_U32: Final = 0xFFFF_FFFF
_STATE: Final = struct.Struct("<6I2Q4I")


class TestDev(Device):
    """The testdev DMA engine."""

    kind: ClassVar[str] = "testdev"
    __test__ = False  # not a pytest class

    def __init__(self, name: str = "testdev") -> None:
        fn = PcieEndpoint(
            VENDOR, DEVICE, CLASS, revision=1, subsys_vendor=VENDOR, subsys_id=DEVICE,
            bars=[Bar(REGS_BAR, "mem32", REGS_SIZE), Bar(BUF_BAR, "mem64", BUF_SIZE, prefetch=True)],
            caps=[PmCap(no_soft_reset=True),
                  MsixCap(MSIX_VECTORS, table_bar=REGS_BAR, table_offset=MSIX_TABLE, pba_bar=REGS_BAR,
                          pba_offset=MSIX_PBA)],
            express={"flr": True, "ee_prefix": 1},
            ext_caps=[AtsCap(), PriCap(32, prg_pasid_required=True), PasidCap(20)],
            interrupt_pin=1, name=name)
        super().__init__(fn, name)
        self.add_mmio(REGS_BAR, 0, 0x1000, self._read, self._write, "testdev-regs")
        self.buf = self.add_ram(BUF_BAR, 0, BUF_SIZE, "buffer")
        self._clear()

    def _clear(self) -> None:
        self.status = self.ctrl = self.pasid = 0
        self.iova = 0
        self.buf_offset = self.length = self.cmd = self.vector = 0
        self.completions = self.errors = self.retries = 0
        self.fault_iova = 0

    # ------------------------------------------------------------------ MMIO
    def _read(self, off: int, size: int) -> int:
        if off in (REG_IOVA, REG_FAULT_IOVA) and size == 8:
            return self.iova if off == REG_IOVA else self.fault_iova
        if size != 4:
            return (1 << (8 * size)) - 1
        values = {REG_ID: IDENT, REG_STATUS: self.status, REG_CTRL: self.ctrl, REG_PASID: self.pasid,
                  REG_IOVA: self.iova & _U32, REG_IOVA + 4: self.iova >> 32, REG_BUF_OFFSET: self.buf_offset,
                  REG_LENGTH: self.length, REG_CMD: self.cmd, REG_VECTOR: self.vector,
                  REG_COMPLETIONS: self.completions, REG_ERRORS: self.errors,
                  REG_FAULT_IOVA: self.fault_iova & _U32, REG_FAULT_IOVA + 4: self.fault_iova >> 32,
                  REG_RETRIES: self.retries}
        return values.get(off, _U32)

    def _write(self, off: int, size: int, val: int) -> None:
        if off == REG_IOVA and size == 8:
            if not self.status & STATUS_BUSY:
                self.iova = val
            return
        if size != 4:
            return
        if off == REG_STATUS:
            self.status &= ~(val & (STATUS_DONE | STATUS_ERROR))
            self._update_intx()
            return
        if self.status & STATUS_BUSY and off in (REG_CTRL, REG_PASID, REG_IOVA, REG_IOVA + 4, REG_BUF_OFFSET,
                                                 REG_LENGTH, REG_CMD, REG_VECTOR):
            return  # programming registers are frozen while a command runs
        if off == REG_CTRL:
            self.ctrl = val & (CTRL_IRQ_DONE | CTRL_PASID | CTRL_IRQ_ERROR)
        elif off == REG_PASID:
            self.pasid = val & PASID_MASK
        elif off == REG_IOVA:
            self.iova = (self.iova & ~_U32) | val
        elif off == REG_IOVA + 4:
            self.iova = (self.iova & _U32) | val << 32
        elif off == REG_BUF_OFFSET:
            self.buf_offset = val
        elif off == REG_LENGTH:
            self.length = val
        elif off == REG_VECTOR:
            self.vector = val
        elif off == REG_CMD and val in (CMD_READ, CMD_WRITE):
            self.cmd = val
            self.status = (self.status | STATUS_BUSY) & ~(STATUS_DONE | STATUS_ERROR | STATUS_PRI_WAIT)
            self._update_intx()
            self.defer(self._run)

    # ------------------------------------------------------------------ the engine
    def _run(self) -> None:
        if not self.status & STATUS_BUSY:
            return
        pasid = self.pasid if self.ctrl & CTRL_PASID else None
        off, n = self.buf_offset, self.length
        if off + n > BUF_SIZE:
            self._finish(DmaError(self.iova, n, self.cmd == CMD_WRITE, pasid,
                                  f"buffer [{off:#x}, +{n:#x}) outside the {BUF_SIZE:#x}-byte buffer"))
            return
        try:
            if self.cmd == CMD_READ:
                self.buf.u8[off:off + n] = memoryview(self.dma_read(self.iova, n, pasid))
            else:
                self.dma_write(self.iova, self.buf.u8[off:off + n].tobytes(), pasid)
        except DmaRetry:
            self.status |= STATUS_PRI_WAIT
            self.retries += 1
            self.defer(self._run)
            return
        except DmaError as e:
            self._finish(e)
            return
        self._finish(None)

    def _finish(self, err: DmaError | None) -> None:
        self.status &= ~(STATUS_BUSY | STATUS_PRI_WAIT)
        if err is None:
            self.status |= STATUS_DONE
            self.completions = (self.completions + 1) & _U32
            want = self.ctrl & CTRL_IRQ_DONE
        else:
            self.status |= STATUS_ERROR
            self.errors = (self.errors + 1) & _U32
            self.fault_iova = err.iova
            want = self.ctrl & CTRL_IRQ_ERROR
        if want and not self.irq.notify(self.vector):
            self._update_intx()

    def _update_intx(self) -> None:
        """INTx (used when neither MSI-X nor MSI is on) is high while DONE or ERROR wants attention."""
        if self.irq.msix_enabled or self.irq.msi_enabled:
            return
        done = self.status & STATUS_DONE and self.ctrl & CTRL_IRQ_DONE
        err = self.status & STATUS_ERROR and self.ctrl & CTRL_IRQ_ERROR
        self.irq.set_intx(bool(done or err))

    # ------------------------------------------------------------------ reset and migration
    def on_reset(self, kind: str) -> None:
        """FLR and every stronger reset: registers and the buffer return to zero."""
        self._clear()
        self.buf.u8[:] = 0

    def save_regs(self) -> bytes:
        return _STATE.pack(self.status, self.ctrl, self.pasid, self.buf_offset, self.length, self.cmd,
                           self.iova, self.fault_iova, self.vector, self.completions, self.errors,
                           self.retries)

    def check_regs(self, blob: bytes) -> None:
        if len(blob) != _STATE.size:
            raise VfiolabError(f"testdev: register state of {len(blob)} bytes, expected {_STATE.size}")

    def load_regs(self, blob: bytes) -> None:
        (self.status, self.ctrl, self.pasid, self.buf_offset, self.length, self.cmd, self.iova,
         self.fault_iova, self.vector, self.completions, self.errors, self.retries) = _STATE.unpack(blob)
        if self.status & STATUS_BUSY:
            self.defer(self._run)  # the command in flight resumes on the destination
