"""QEMU's educational device "edu" (``hw/misc/edu.c``, ``docs/specs/edu.rst``), register compatible.

Conventional PCI function 1234:11e8 rev 0x10, class 00ff (unclassified), subsystem 1af4:1100 (QEMU's
default), INTx pin A, one 64-bit MSI vector without masking, BAR0 1 MiB of 32-bit memory:

====== ======================================================================================
0x00   identification 0x010000ed (RO)
0x04   liveness check: a write stores the inverse, a read returns it
0x08   factorial: a write starts computing (unless busy), a read returns the result
0x20   status: 0x01 computing (RO), 0x80 raise interrupt 0x001 when the factorial completes
0x24   interrupt status (RO); 0x60 raise: ORs the value in; 0x64 acknowledge: clears those bits
0x80   DMA source, 0x88 destination, 0x90 count (ignored while a transfer runs)
0x98   DMA command: bit 0 start, bit 1 direction (1: buffer -> RAM), bit 2 raise 0x100 when done
====== ======================================================================================

Registers below 0x80 take 4-byte accesses, the DMA registers 4 or 8; other accesses read all ones and
drop writes.  The DMA buffer is 4 KiB at device address 0x40000; DMA addresses are masked with
``dma_mask`` (28 bits, QEMU's default).  An interrupt goes out as MSI when MSI is enabled, otherwise the
INTx level follows "interrupt status != 0".  The factorial and the DMA complete as deferred work (QEMU: a
thread and a 100 ms timer).  Like QEMU's edu, a reset does not clear the registers.

One difference, on purpose: QEMU logs a DMA whose buffer side falls outside [0x40000, 0x41000) and then
copies anyway (out of its buffer); the model logs the same error and moves nothing.
"""

from __future__ import annotations

import math
import struct
from typing import ClassVar, Final

from vfiolab.devices.api import Device, DmaError, DmaRetry
from vfiolab.errors import VfiolabError
from vfiolab.pci.caps.msi import MsiCap
from vfiolab.pci.function import Bar, ConventionalDevice

VENDOR: Final = 0x1234          # PCI_VENDOR_ID_QEMU
DEVICE: Final = 0x11E8
REVISION: Final = 0x10
CLASS: Final = 0x00FF00         # PCI_CLASS_OTHERS in the sub-class byte, as pci_config_set_class() stores 0xff
SUBSYS_VENDOR: Final = 0x1AF4   # PCI_SUBVENDOR_ID_REDHAT_QUMRANET (QEMU's default)
SUBSYS_ID: Final = 0x1100       # PCI_SUBDEVICE_ID_QEMU
BAR_SIZE: Final = 1 << 20

IDENT: Final = 0x010000ED
REG_IDENT: Final = 0x00
REG_LIVENESS: Final = 0x04
REG_FACT: Final = 0x08
REG_STATUS: Final = 0x20
REG_IRQ_STATUS: Final = 0x24
REG_IRQ_RAISE: Final = 0x60
REG_IRQ_ACK: Final = 0x64
REG_DMA_SRC: Final = 0x80
REG_DMA_DST: Final = 0x88
REG_DMA_CNT: Final = 0x90
REG_DMA_CMD: Final = 0x98

STATUS_COMPUTING: Final = 0x01
STATUS_IRQFACT: Final = 0x80
FACT_IRQ: Final = 0x00000001
DMA_IRQ: Final = 0x00000100
DMA_RUN: Final = 0x1
DMA_DIR_TO_RAM: Final = 0x2    # EDU_DMA_TO_PCI: buffer -> memory
DMA_IRQ_ON_DONE: Final = 0x4
DMA_START: Final = 0x40000
DMA_SIZE: Final = 4096
DEFAULT_DMA_MASK: Final = (1 << 28) - 1

_U32: Final = 0xFFFF_FFFF
_U64: Final = (1 << 64) - 1
_REGS: Final = struct.Struct("<4I5Q")
_DMA_REG: Final = {REG_DMA_SRC: "src", REG_DMA_DST: "dst", REG_DMA_CNT: "cnt", REG_DMA_CMD: "cmd"}


def factorial_u32(n: int) -> int:
    """n! in 32-bit unsigned arithmetic, as edu's worker computes it (0 from 34!, which 2^32 divides)."""
    return 0 if n >= 34 else math.factorial(n) & _U32


class Edu(Device):
    """The edu device."""

    kind: ClassVar[str] = "edu"

    def __init__(self, name: str = "edu", dma_mask: int = DEFAULT_DMA_MASK) -> None:
        if not 0 <= dma_mask <= _U64:
            raise VfiolabError(f"edu: dma_mask {dma_mask:#x} is not a 64-bit value")
        fn = ConventionalDevice(VENDOR, DEVICE, CLASS, revision=REVISION, subsys_vendor=SUBSYS_VENDOR,
                                subsys_id=SUBSYS_ID, bars=[Bar(0, "mem32", BAR_SIZE)],
                                caps=[MsiCap(vectors=1, addr64=True, per_vector_mask=False)],
                                interrupt_pin=1, name=name)
        super().__init__(fn, name)
        self.dma_mask = dma_mask
        self.addr4 = 0
        self.fact = 0
        self.status = 0
        self.irq_status = 0
        self.dma_regs = {"src": 0, "dst": 0, "cnt": 0, "cmd": 0}
        self.buffer = bytearray(DMA_SIZE)
        self.guest_errors: list[str] = []
        """What QEMU would log with LOG_GUEST_ERROR (clamped addresses, out-of-range transfers)."""
        self.add_mmio(0, 0, BAR_SIZE, self._read, self._write, "edu-mmio")

    # ------------------------------------------------------------------ MMIO
    @staticmethod
    def _size_ok(addr: int, size: int) -> bool:
        return size == 4 if addr < 0x80 else size in (4, 8)

    def _read(self, addr: int, size: int) -> int:
        if not self._size_ok(addr, size):
            return _U64
        if addr == REG_IDENT:
            return IDENT
        if addr == REG_LIVENESS:
            return self.addr4
        if addr == REG_FACT:
            return self.fact
        if addr == REG_STATUS:
            return self.status
        if addr == REG_IRQ_STATUS:
            return self.irq_status
        reg = _DMA_REG.get(addr)
        return self.dma_regs[reg] if reg is not None else _U64

    def _write(self, addr: int, size: int, val: int) -> None:
        if not self._size_ok(addr, size):
            return
        if addr == REG_LIVENESS:
            self.addr4 = ~val & _U32
        elif addr == REG_FACT:
            if self.status & STATUS_COMPUTING:
                return
            self.fact = val & _U32
            self.status |= STATUS_COMPUTING
            self.defer(self._compute)
        elif addr == REG_STATUS:
            if val & STATUS_IRQFACT:
                self.status |= STATUS_IRQFACT
            else:
                self.status &= ~STATUS_IRQFACT
        elif addr == REG_IRQ_RAISE:
            self.raise_irq(val & _U32)
        elif addr == REG_IRQ_ACK:
            self.lower_irq(val & _U32)
        elif addr in _DMA_REG:
            if self.dma_regs["cmd"] & DMA_RUN:
                return  # registers are frozen while a transfer runs
            if addr == REG_DMA_CMD:
                if not val & DMA_RUN:
                    return
                self.dma_regs["cmd"] = val
                self.defer(self._dma)
            else:
                self.dma_regs[_DMA_REG[addr]] = val

    # ------------------------------------------------------------------ interrupts
    def raise_irq(self, val: int) -> None:
        """edu_raise_irq(): OR ``val`` into the interrupt status and signal (MSI, else INTx high)."""
        self.irq_status |= val
        if self.irq_status:
            if self.irq.msi_enabled:
                self.irq.msi_notify(0)
            else:
                self.irq.set_intx(True)

    def lower_irq(self, val: int) -> None:
        """edu_lower_irq(): clear ``val``; INTx drops once nothing is left (MSI has nothing to drop)."""
        self.irq_status &= ~val & _U32
        if not self.irq_status and not self.irq.msi_enabled:
            self.irq.set_intx(False)

    # ------------------------------------------------------------------ work
    def _compute(self) -> None:
        self.fact = factorial_u32(self.fact)
        self.status &= ~STATUS_COMPUTING
        if self.status & STATUS_IRQFACT:
            self.raise_irq(FACT_IRQ)

    def _in_buffer(self, start: int, size: int) -> bool:
        end = (start + size) & _U64
        dma_end = DMA_START + DMA_SIZE
        if end >= start >= DMA_START and end <= dma_end:
            return True
        self.guest_errors.append(f"EDU: DMA range {start:#018x}-{(end - 1) & _U64:#018x} out of bounds "
                                 f"({DMA_START:#018x}-{dma_end - 1:#018x})!")
        return False

    def _clamp(self, addr: int) -> int:
        res = addr & self.dma_mask
        if res != addr:
            self.guest_errors.append(f"EDU: clamping DMA {addr:#018x} to {res:#018x}!")
        return res

    def _dma(self) -> None:
        r = self.dma_regs
        if not r["cmd"] & DMA_RUN:
            return
        cnt = r["cnt"]
        try:
            if not r["cmd"] & DMA_DIR_TO_RAM:
                if self._in_buffer(r["dst"], cnt):
                    off = r["dst"] - DMA_START
                    self.buffer[off:off + cnt] = self.dma_read(self._clamp(r["src"]), cnt)
            elif self._in_buffer(r["src"], cnt):
                off = r["src"] - DMA_START
                self.dma_write(self._clamp(r["dst"]), bytes(self.buffer[off:off + cnt]))
        except (DmaError, DmaRetry) as e:
            self.guest_errors.append(f"EDU: DMA failed: {e}")  # pci_dma_rw's error is ignored by edu
        r["cmd"] &= ~DMA_RUN
        if r["cmd"] & DMA_IRQ_ON_DONE:
            self.raise_irq(DMA_IRQ)

    # ------------------------------------------------------------------ migration
    def save_regs(self) -> bytes:
        r = self.dma_regs
        return _REGS.pack(self.addr4, self.fact, self.status, self.irq_status, r["src"], r["dst"], r["cnt"],
                          r["cmd"], self.dma_mask) + bytes(self.buffer)

    def check_regs(self, blob: bytes) -> None:
        if len(blob) != _REGS.size + DMA_SIZE:
            raise VfiolabError(f"edu: register state of {len(blob)} bytes, expected {_REGS.size + DMA_SIZE}")

    def load_regs(self, blob: bytes) -> None:
        (self.addr4, self.fact, self.status, self.irq_status, src, dst, cnt, cmd,
         self.dma_mask) = _REGS.unpack_from(blob)
        self.dma_regs = {"src": src, "dst": dst, "cnt": cnt, "cmd": cmd}
        self.buffer[:] = blob[_REGS.size:]
        # Operations in flight resume on the destination.
        if self.status & STATUS_COMPUTING:
            self.defer(self._compute)
        if cmd & DMA_RUN:
            self.defer(self._dma)
