"""edu register behaviour worked out from QEMU's hw/misc/edu.c and docs/specs/edu.rst (access sizes,
liveness inverse, factorial with busy status and IRQFACT, raise/ack, DMA engine with address mask and
buffer limits, frozen registers while a transfer runs), and its identity as lspci prints it."""

from __future__ import annotations

import math

import pytest
from test_devices_api import Ram, enable

from lspci_oracle import run_lspci
from vfiolab.devices import Edu, RecordingSink
from vfiolab.devices import edu as E
from vfiolab.errors import VfiolabError
from vfiolab.pci.caps import msi as msi_regs
from vfiolab.pci.dump import format_dump


def edu(dma: bool = True) -> tuple[Edu, RecordingSink, Ram]:
    d = Edu()
    sink, ram = RecordingSink(), Ram()
    d.attach_sink(sink)
    d.attach_dma(ram)
    if dma:
        enable(d)
    return d, sink, ram


def rd(d: Edu, off: int, size: int = 4) -> int:
    v = d.bar_read(0, off, size)
    d.after_access()
    return v


def wr(d: Edu, off: int, val: int, size: int = 4) -> None:
    d.bar_write(0, off, size, val)
    d.after_access()


def test_identity_as_lspci_decodes_it() -> None:
    d = Edu()
    text = run_lspci(format_dump(0, 0, 0x20, d.function.cs.dump()), "-vv", "-nn")
    assert "Unclassified device [00ff]: Device [1234:11e8] (rev 10)" in text
    assert "Subsystem: Red Hat, Inc. Device [1af4:1100]" in text
    assert "MSI: Enable- Count=1/1 Maskable- 64bit+" in text
    assert "pin A" in text
    assert d.bar(0).size == 1 << 20 and d.bar(0).bar.kind == "mem32"


def test_identification_liveness_and_access_sizes() -> None:
    d, _, _ = edu()
    assert rd(d, 0x00) == 0x010000ED
    wr(d, 0x04, 0x12345678)
    assert rd(d, 0x04) == 0xEDCBA987
    assert rd(d, 0x00, 2) == 0xFFFF and rd(d, 0x00, 8) == (1 << 64) - 1  # below 0x80: 4 bytes only
    wr(d, 0x04, 0, size=2)  # dropped
    assert rd(d, 0x04) == 0xEDCBA987
    assert rd(d, 0x10) == 0xFFFFFFFF and rd(d, 0x40000) == 0xFFFFFFFF  # unknown and the DMA buffer


@pytest.mark.parametrize("n", [0, 1, 5, 12, 13, 20, 33, 34, 100])
def test_factorial_is_32_bit(n: int) -> None:
    d, _, _ = edu()
    wr(d, 0x08, n)
    assert rd(d, 0x20) & E.STATUS_COMPUTING == 0
    assert rd(d, 0x08) == math.factorial(n) % (1 << 32)


def test_factorial_busy_then_interrupt_on_intx() -> None:
    d, sink, _ = edu()
    d.hold = True
    wr(d, 0x20, E.STATUS_IRQFACT)
    wr(d, 0x08, 5)
    assert rd(d, 0x20) == E.STATUS_IRQFACT | E.STATUS_COMPUTING
    wr(d, 0x08, 7)  # ignored while computing
    d.service()
    assert rd(d, 0x08) == 120 and rd(d, 0x20) == E.STATUS_IRQFACT
    assert rd(d, 0x24) == E.FACT_IRQ and sink.intx_asserted
    wr(d, 0x64, E.FACT_IRQ)
    assert rd(d, 0x24) == 0 and not sink.intx_asserted


def test_raise_and_ack_with_msi() -> None:
    d, sink, _ = edu()
    o = d.irq.msi_cap.offset
    d.config_write(o + msi_regs.ADDRESS_LO, 4, 0xFEE00000)
    d.config_write(o + msi_regs.DATA_64, 2, 0x41)
    d.config_write(o + msi_regs.FLAGS, 2, msi_regs.FLAGS_ENABLE)
    wr(d, 0x60, 0x1234)
    wr(d, 0x60, 0x1)
    assert sink.events == [("msi", 0, 0xFEE00000, 0x41)] * 2
    assert rd(d, 0x24) == 0x1235 and not sink.intx_asserted
    wr(d, 0x64, 0x1235)
    assert rd(d, 0x24) == 0


def test_dma_both_directions_with_interrupt() -> None:
    d, sink, ram = edu()
    ram.mem[0x1000:0x1010] = list(range(16))
    for reg, val in ((0x80, 0x1000), (0x88, E.DMA_START + 0x10), (0x90, 16)):
        wr(d, reg, val, 8)
    wr(d, 0x98, E.DMA_RUN | E.DMA_IRQ_ON_DONE)
    assert d.buffer[0x10:0x20] == bytes(range(16)) and rd(d, 0x98) == E.DMA_IRQ_ON_DONE
    assert rd(d, 0x24) == E.DMA_IRQ and sink.intx_asserted
    wr(d, 0x64, E.DMA_IRQ)
    wr(d, 0x80, E.DMA_START + 0x10)
    wr(d, 0x88, 0x2000)
    wr(d, 0x98, E.DMA_RUN | E.DMA_DIR_TO_RAM)
    assert ram.mem[0x2000:0x2010].tobytes() == bytes(range(16)) and rd(d, 0x24) == 0


def test_dma_registers_frozen_while_running_and_command_needs_start() -> None:
    d, _, _ = edu()
    d.hold = True
    wr(d, 0x98, E.DMA_IRQ_ON_DONE)  # no start bit: ignored
    assert rd(d, 0x98) == 0
    wr(d, 0x90, 8, 8)
    wr(d, 0x88, E.DMA_START, 8)
    wr(d, 0x98, E.DMA_RUN)
    wr(d, 0x90, 16, 8)
    assert rd(d, 0x90, 8) == 8 and rd(d, 0x98) == E.DMA_RUN
    wr(d, 0x84, 5)  # the upper halves are not registers
    assert rd(d, 0x84) == 0xFFFFFFFF
    d.service()
    assert rd(d, 0x98) == 0


def test_dma_address_mask_and_buffer_limits() -> None:
    d, _, ram = edu()
    ram.mem[0x3000:0x3004] = [9, 8, 7, 6]
    wr(d, 0x80, (1 << 28) | 0x3000, 8)  # above the 28-bit mask: clamped
    wr(d, 0x88, E.DMA_START, 8)
    wr(d, 0x90, 4, 8)
    wr(d, 0x98, E.DMA_RUN)
    assert d.buffer[:4] == bytes([9, 8, 7, 6])
    assert "clamping DMA 0x0000000010003000 to 0x0000000000003000" in d.guest_errors[-1]
    wr(d, 0x88, E.DMA_START + 4094, 8)  # runs off the end of the 4 KiB buffer
    wr(d, 0x98, E.DMA_RUN | E.DMA_IRQ_ON_DONE)
    assert "out of bounds" in d.guest_errors[-1] and rd(d, 0x24) == E.DMA_IRQ  # still completes
    with pytest.raises(VfiolabError):
        Edu(dma_mask=1 << 64)


def test_dma_without_bus_master_moves_nothing() -> None:
    d, _, ram = edu(dma=False)
    ram.mem[0:4] = [1, 1, 1, 1]
    wr(d, 0x88, E.DMA_START, 8)
    wr(d, 0x90, 4, 8)
    wr(d, 0x98, E.DMA_RUN)
    assert d.buffer[:4] == bytes(4) and "Bus Master" in d.guest_errors[-1]


def test_state_carries_registers_and_work_in_flight() -> None:
    a, _, ram = edu()
    a.hold = True
    wr(a, 0x04, 1)
    wr(a, 0x08, 6)
    ram.mem[0x10:0x14] = [4, 3, 2, 1]
    wr(a, 0x80, 0x10, 8)
    wr(a, 0x88, E.DMA_START, 8)
    wr(a, 0x90, 4, 8)
    wr(a, 0x98, E.DMA_RUN)
    blob = a.save_state()
    b, _, _ = edu()
    b.attach_dma(ram)
    b.load_state(blob)
    assert rd(b, 0x20) & E.STATUS_COMPUTING  # still computing as saved, the work re-armed
    assert rd(b, 0x20) & E.STATUS_COMPUTING == 0  # ... and finished after that access
    assert rd(b, 0x08) == 720 and rd(b, 0x04) == 0xFFFFFFFE and b.buffer[:4] == bytes([4, 3, 2, 1])
    with pytest.raises(VfiolabError, match="register state"):
        b.load_state(_regs_cut(a.save_state()))


def _regs_cut(blob: bytes) -> bytes:
    """A state whose register section lost its last byte (lengths fixed up, so only edu can object)."""
    from vfiolab.devices.state import pack_sections, unpack_sections
    sec = unpack_sections(blob)
    sec["regs"] = sec["regs"][:-1]
    return pack_sections(sec.items())


def test_reset_keeps_registers_like_qemu() -> None:
    d, sink, _ = edu()
    wr(d, 0x04, 0)
    wr(d, 0x60, 4)
    assert sink.intx_asserted
    d.reset("hot")
    assert rd(d, 0x04) == 0xFFFFFFFF and rd(d, 0x24) == 4 and not sink.intx_asserted
