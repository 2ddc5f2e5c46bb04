"""testdev on its own, against a simple host port: identity and capabilities as lspci prints them,
register semantics (RW1C status, frozen registers while busy, 64-bit halves), DMA both ways, the interrupt
choice (MSI-X, else INTx level while DONE/ERROR is set), DmaRetry handling (PRI_WAIT, reissue), FLR, and
state save/load with a command in flight."""

from __future__ import annotations

import pytest
from test_devices_api import Ram, enable

from lspci_oracle import run_lspci
from vfiolab.devices import DmaError, DmaRetry, RecordingSink, TestDev
from vfiolab.devices import testdev as T
from vfiolab.errors import VfiolabError
from vfiolab.pci.caps import msix as msix_regs
from vfiolab.pci.dump import format_dump


class Flaky(Ram):
    """A port that asks for ``retries`` reissues before serving a DMA (a PRI wait)."""

    def __init__(self, retries: int) -> None:
        super().__init__()
        self.retries = retries

    def dma_read(self, iova: int, length: int, pasid: int | None = None) -> bytes:
        if self.retries:
            self.retries -= 1
            raise DmaRetry(iova, False, pasid)
        if pasid not in (None, 5):
            raise DmaError(iova, length, False, pasid, "PASID not attached")
        return super().dma_read(iova, length, pasid)


def dev(port: Ram | None = None) -> tuple[TestDev, RecordingSink, Ram]:
    d = TestDev()
    sink, ram = RecordingSink(), port or Ram()
    d.attach_sink(sink)
    d.attach_dma(ram)
    enable(d)
    return d, sink, ram


def run(d: TestDev, cmd: int, iova: int, n: int, off: int = 0, ctrl: int = 0, pasid: int = 0,
        service: bool = True) -> int:
    for reg, val in ((T.REG_CTRL, ctrl), (T.REG_PASID, pasid), (T.REG_BUF_OFFSET, off), (T.REG_LENGTH, n)):
        d.bar_write(0, reg, 4, val)
    d.bar_write(0, T.REG_IOVA, 8, iova)
    d.bar_write(0, T.REG_CMD, 4, cmd)
    if service:
        d.service()
    return d.bar_read(0, T.REG_STATUS, 4)


def test_identity_and_capabilities_per_lspci() -> None:
    d = TestDev()
    text = run_lspci(format_dump(0, 1, 0, d.function.cs.dump()), "-vvv", "-nn")
    for line in ("Device [1234:7e57] (rev 01)", "Express (v2) Endpoint", "FLReset+", "NoSoftRst+",
                 "MSI-X: Enable- Count=4 Masked-", "Vector table: BAR=0 offset=00002000",
                 "PBA: BAR=0 offset=00003000", "Address Translation Service (ATS)",
                 "Page Request Interface (PRI)", "Process Address Space ID (PASID)"):
        assert line in text, line
    assert d.bar(2).fully_mappable and d.bar(0).mmap_areas() == []


def test_registers() -> None:
    d, _, _ = dev()
    assert d.bar_read(0, T.REG_ID, 4) == T.IDENT
    d.bar_write(0, T.REG_IOVA, 4, 0x89ABCDEF)
    d.bar_write(0, T.REG_IOVA + 4, 4, 0x01234567)
    assert d.bar_read(0, T.REG_IOVA, 8) == 0x0123456789ABCDEF
    assert d.bar_read(0, T.REG_ID, 2) == 0xFFFF  # 4-byte registers
    d.bar_write(0, T.REG_PASID, 4, 0xFFFFFFFF)
    assert d.bar_read(0, T.REG_PASID, 4) == T.PASID_MASK
    d.hold = True
    d.bar_write(0, T.REG_IOVA, 8, 0x10)
    d.bar_write(0, T.REG_CMD, 4, T.CMD_READ)
    d.bar_write(0, T.REG_LENGTH, 4, 99)  # frozen while BUSY
    assert d.bar_read(0, T.REG_LENGTH, 4) == 0 and d.bar_read(0, T.REG_STATUS, 4) == T.STATUS_BUSY
    d.service()
    assert d.bar_read(0, T.REG_STATUS, 4) == T.STATUS_DONE
    d.bar_write(0, T.REG_STATUS, 4, T.STATUS_DONE)  # RW1C
    assert d.bar_read(0, T.REG_STATUS, 4) == 0


def test_dma_both_ways_and_errors() -> None:
    d, _, ram = dev()
    ram.mem[0x100:0x108] = list(b"testdev!")
    assert run(d, T.CMD_READ, 0x100, 8, off=0x20) == T.STATUS_DONE
    assert bytes(d.buf.u8[0x20:0x28]) == b"testdev!"
    assert run(d, T.CMD_WRITE, 0x900, 8, off=0x20) == T.STATUS_DONE
    assert ram.mem[0x900:0x908].tobytes() == b"testdev!"
    assert run(d, T.CMD_WRITE, 1 << 30, 8) == T.STATUS_ERROR  # the port refuses
    assert d.bar_read(0, T.REG_FAULT_IOVA, 8) == 1 << 30 and d.bar_read(0, T.REG_ERRORS, 4) == 1
    assert run(d, T.CMD_READ, 0, 16, off=T.BUF_SIZE - 8) == T.STATUS_ERROR  # beyond the buffer


def test_interrupts_msix_else_intx_level() -> None:
    d, sink, _ = dev()
    run(d, T.CMD_READ, 0, 4, ctrl=T.CTRL_IRQ_DONE)
    assert sink.intx_asserted  # no MSI-X: INTx stays high while DONE is set
    d.bar_write(0, T.REG_STATUS, 4, T.STATUS_DONE)
    assert not sink.intx_asserted
    o = d.irq.msix_cap.offset
    d.config_write(o + msix_regs.FLAGS, 2, msix_regs.FLAGS_ENABLE)
    d.bar_write(0, T.MSIX_TABLE + 16 * 3 + 8, 4, 0x33)
    d.bar_write(0, T.MSIX_TABLE + 16 * 3 + 12, 4, 0)
    d.bar_write(0, T.REG_VECTOR, 4, 3)
    run(d, T.CMD_READ, 0, 4, ctrl=T.CTRL_IRQ_DONE)
    assert sink.events[-1] == ("msix", 3, 0, 0x33) and not sink.intx_asserted


def test_retry_until_served_and_pasid() -> None:
    d, _, ram = dev(Flaky(2))
    ram.mem[0:4] = [1, 2, 3, 4]
    assert run(d, T.CMD_READ, 0, 4, ctrl=T.CTRL_PASID, pasid=5) == T.STATUS_BUSY | T.STATUS_PRI_WAIT
    d.service()
    assert d.bar_read(0, T.REG_STATUS, 4) == T.STATUS_BUSY | T.STATUS_PRI_WAIT
    d.service()
    assert d.bar_read(0, T.REG_STATUS, 4) == T.STATUS_DONE and d.bar_read(0, T.REG_RETRIES, 4) == 2
    assert bytes(d.buf.u8[:4]) == bytes([1, 2, 3, 4])
    assert run(d, T.CMD_READ, 0, 4, ctrl=T.CTRL_PASID, pasid=6) == T.STATUS_ERROR


def test_flr_clears_registers_and_buffer() -> None:
    d, _, _ = dev()
    d.buf.u8[:2] = [7, 7]
    d.bar_write(0, T.REG_PASID, 4, 3)
    e = d.function.express_offset
    d.config_write(e + 8, 2, d.config_read(e + 8, 2) | 0x8000)  # Initiate FLR
    assert d.bar_read(0, T.REG_PASID, 4) == 0 and d.buf.u8[:2].tolist() == [0, 0]
    assert not d.bus_master  # config space reset too


def test_state_round_trip_with_command_in_flight() -> None:
    a, _, ram = dev()
    ram.mem[0x40:0x44] = [9, 9, 9, 9]
    a.hold = True
    a.buf.u8[100] = 42
    assert run(a, T.CMD_READ, 0x40, 4, ctrl=T.CTRL_IRQ_DONE, service=False) == T.STATUS_BUSY
    b, _, _ = dev(ram)
    b.load_state(a.save_state())
    assert b.busy and b.buf.u8[100] == 42
    b.service()
    assert b.bar_read(0, T.REG_STATUS, 4) == T.STATUS_DONE and bytes(b.buf.u8[:4]) == bytes([9] * 4)
    with pytest.raises(VfiolabError, match="register state"):
        b.check_regs(b"\0" * 3)
