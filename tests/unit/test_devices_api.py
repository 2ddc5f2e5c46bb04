"""The device API: BAR regions (holes, splitting, RAM in shareable memory), interrupt lines gated by the
function's config space (INTx Disable, MSI masking and pending bits, MSI-X table/PBA semantics of PCIe
Base §6.1.4 / §7.7), DMA through a host port with Bus Master Enable and dirty tracking, state save/load."""

from __future__ import annotations

import mmap

import numpy as np
import pytest

from vfiolab.devices import Device, DmaError, PassiveDevice, RecordingSink, SharedMemory
from vfiolab.devices.bars import split_access
from vfiolab.errors import VfiolabError
from vfiolab.pci import regs
from vfiolab.pci.caps import msi as msi_regs
from vfiolab.pci.caps import msix as msix_regs
from vfiolab.pci.caps.msi import MsiCap
from vfiolab.pci.caps.msix import MsixCap
from vfiolab.pci.function import Bar, PcieEndpoint


class Ram:
    """A host DMA port over a flat memory (IOVA = address), recording what moved."""

    def __init__(self, size: int = 1 << 20) -> None:
        self.mem = np.zeros(size, dtype=np.uint8)

    def dma_read(self, iova: int, length: int, pasid: int | None = None) -> bytes:
        if iova + length > len(self.mem):
            raise DmaError(iova, length, False, pasid, "outside RAM")
        return self.mem[iova:iova + length].tobytes()

    def dma_write(self, iova: int, data: bytes | bytearray | memoryview, pasid: int | None = None) -> None:
        if iova + len(data) > len(self.mem):
            raise DmaError(iova, len(data), True, pasid, "outside RAM")
        self.mem[iova:iova + len(data)] = np.frombuffer(bytes(data), dtype=np.uint8)


class Tracker:
    def __init__(self) -> None:
        self.writes: list[tuple[int, int]] = []

    def note_write(self, iova: int, length: int) -> None:
        self.writes.append((iova, length))


class Toy(Device):
    """BAR0: registers at 0..0x100 (echo store), RAM page at 0x1000; MSI-X table/PBA in BAR2."""

    kind = "toy"

    def __init__(self, msi: MsiCap | None = None) -> None:
        caps = [msi] if msi is not None else [MsixCap(8, table_bar=2, table_offset=0, pba_bar=2, pba_offset=0x800)]
        fn = PcieEndpoint(0x1234, 0x5678, 0xFF0000, bars=[Bar(0, "mem32", 0x4000), Bar(2, "mem64", 0x1000)],
                          caps=caps, interrupt_pin=1)
        super().__init__(fn, "toy")
        self.regs = {}
        self.add_mmio(0, 0, 0x100, lambda o, s: self.regs.get((o, s), 0),
                      lambda o, s, v: self.regs.__setitem__((o, s), v))
        self.ram = self.add_ram(0, 0x1000, 0x1000, "page")

    def save_regs(self) -> bytes:
        return bytes([len(self.regs)])

    def check_regs(self, blob: bytes) -> None:
        if len(blob) != 1:
            raise VfiolabError("bad toy regs")


def enable(dev: Device, bits: int = regs.COMMAND_MASTER | regs.COMMAND_MEMORY) -> None:
    dev.config_write(regs.COMMAND, 2, dev.config_read(regs.COMMAND, 2) | bits)


# ---------------------------------------------------------------------- BARs
def test_split_access_is_naturally_aligned_widest_first() -> None:
    assert split_access(0x3, 13) == [(3, 1), (4, 4), (8, 8)]
    assert split_access(0x6, 3, max_width=4) == [(6, 2), (8, 1)]


def test_holes_read_ones_and_drop_writes() -> None:
    d = Toy()
    assert d.bar_read(0, 0x200, 4) == 0xFFFFFFFF
    d.bar_write(0, 0x200, 4, 5)
    assert d.bar_read(0, 0x200, 8) == (1 << 64) - 1
    with pytest.raises(VfiolabError, match="naturally aligned"):
        d.bar_read(0, 0x2, 4)
    with pytest.raises(VfiolabError, match="outside"):
        d.bar_read(0, 0x4000, 4)
    with pytest.raises(VfiolabError, match="no BAR 1"):
        d.bar_read(1, 0, 4)


def test_byte_ranges_cross_regions() -> None:
    d = Toy()
    d.write_bar(0, 0xFC, bytes(range(8)))  # 4 bytes into registers, the rest a hole
    assert d.regs[(0xFC, 4)] == 0x03020100
    d.write_bar(0, 0xFF8, bytes(range(16)))  # hole, then the RAM page
    assert d.ram.u8[:8].tobytes() == bytes(range(8, 16))
    assert d.read_bar(0, 0xFFC, 8) == b"\xff" * 4 + bytes(range(8, 12))


def test_ram_region_is_shared_memory_a_mapping_sees() -> None:
    d = Toy()
    shm, off = d.bar(0).backing(0x1000, 0x1000)
    view = shm.map(off, 0x1000)
    d.bar_write(0, 0x1008, 8, 0x1122334455667788)
    assert view[8:16] == (0x1122334455667788).to_bytes(8, "little")
    view[0:4] = b"abcd"
    assert d.read_bar(0, 0x1000, 4) == b"abcd"
    view.close()
    assert d.bar(0).mmap_areas() == [(0x1000, 0x1000)]
    assert not d.bar(0).fully_mappable
    with pytest.raises(VfiolabError):
        d.bar(0).backing(0x0, 0x1000)


def test_shared_memory_rejects_odd_sizes_and_maps_by_fd() -> None:
    with pytest.raises(VfiolabError):
        SharedMemory(100)
    shm = SharedMemory(2 * mmap.PAGESIZE, "t")
    other = mmap.mmap(shm.fd, mmap.PAGESIZE, offset=mmap.PAGESIZE)
    shm.write(mmap.PAGESIZE + 1, b"z")
    assert other[1:2] == b"z"
    other.close()
    shm.close()
    assert shm.closed


def test_overlapping_regions_are_refused() -> None:
    d = Toy()
    with pytest.raises(VfiolabError, match="overlaps"):
        d.add_ram(0, 0x1800, 0x1000)
    with pytest.raises(VfiolabError, match="beyond"):
        d.add_ram(0, 0x3000, 0x2000)


# ---------------------------------------------------------------------- INTx
def test_intx_wire_follows_level_and_interrupt_disable() -> None:
    d = Toy()
    sink = RecordingSink()
    d.attach_sink(sink)
    d.irq.set_intx(True)
    assert d.config_read(regs.STATUS, 2) & regs.STATUS_INTERRUPT
    assert sink.intx_asserted
    d.config_write(regs.COMMAND, 2, regs.COMMAND_INTX_DISABLE)
    assert not sink.intx_asserted and d.config_read(regs.STATUS, 2) & regs.STATUS_INTERRUPT
    d.config_write(regs.COMMAND, 2, 0)
    assert sink.intx_asserted
    d.irq.set_intx(False)
    assert [e[1] for e in sink.events] == [1, 0, 1, 0]
    assert not d.config_read(regs.STATUS, 2) & regs.STATUS_INTERRUPT


# ---------------------------------------------------------------------- MSI
def test_msi_vector_bits_masking_and_pending() -> None:
    cap = MsiCap(vectors=4, addr64=True, per_vector_mask=True)
    d = Toy(cap)
    sink = RecordingSink()
    d.attach_sink(sink)
    o = cap.offset
    assert not d.irq.msi_notify(0)  # MSI off
    d.config_write(o + msi_regs.ADDRESS_LO, 4, 0xFEE00000)
    d.config_write(o + msi_regs.DATA_64, 2, 0x4120)
    d.config_write(o + msi_regs.FLAGS, 2, msi_regs.FLAGS_ENABLE | 2 << 4)  # 4 vectors granted
    assert d.irq.msi_notify(3)
    assert sink.events[-1] == ("msi", 3, 0xFEE00000, 0x4123)
    assert not d.irq.msi_notify(4)
    d.config_write(o + msi_regs.MASK_64, 4, 0b0010)
    assert d.irq.msi_notify(1)
    assert len(sink.events) == 1
    assert d.config_read(o + msi_regs.PENDING_64, 4) == 0b0010
    d.config_write(o + msi_regs.MASK_64, 4, 0)
    assert sink.events[-1] == ("msi", 1, 0xFEE00000, 0x4121)
    assert d.config_read(o + msi_regs.PENDING_64, 4) == 0


# ---------------------------------------------------------------------- MSI-X
def test_msix_table_masks_pba_and_function_mask() -> None:
    d = Toy()
    sink = RecordingSink()
    d.attach_sink(sink)
    cap = d.irq.msix_cap
    o = cap.offset
    assert d.bar_read(2, 12, 4) == 1  # entries reset masked
    d.config_write(o + msix_regs.FLAGS, 2, msix_regs.FLAGS_ENABLE)
    d.bar_write(2, 16 * 5, 8, 0x0000_0001_FEE0_1000)  # entry 5 address (qword)
    d.bar_write(2, 16 * 5 + 8, 4, 0x55)
    assert d.irq.msix_notify(5)
    assert sink.events == [] and d.bar_read(2, 0x800, 8) == 1 << 5
    d.bar_write(2, 16 * 5 + 12, 4, 0)  # unmask: the pending message goes out
    assert sink.events == [("msix", 5, 0x1_FEE0_1000, 0x55)] and d.bar_read(2, 0x800, 8) == 0
    d.config_write(o + msix_regs.FLAGS, 2, msix_regs.FLAGS_ENABLE | msix_regs.FLAGS_MASKALL)
    d.irq.msix_notify(5)
    assert len(sink.events) == 1 and d.bar_read(2, 0x800, 1) == 1 << 5
    d.bar_write(2, 0x800, 8, 0)  # the PBA is read only
    assert d.bar_read(2, 0x800, 1) == 1 << 5
    d.config_write(o + msix_regs.FLAGS, 2, msix_regs.FLAGS_ENABLE)
    assert len(sink.events) == 2
    d.irq.honor_msix_table = False  # a client that emulates the table itself
    d.bar_write(2, 16 * 5 + 12, 4, 1)
    assert d.irq.msix_notify(5) and len(sink.events) == 3
    assert not d.irq.msix_notify(8)


def test_reset_masks_msix_and_drops_intx() -> None:
    d = Toy()
    sink = RecordingSink()
    d.attach_sink(sink)
    d.bar_write(2, 12, 4, 0)
    d.irq.set_intx(True)
    d.reset()
    assert d.bar_read(2, 12, 4) == 1 and not sink.intx_asserted


# ---------------------------------------------------------------------- DMA
def test_dma_needs_a_port_and_bus_master() -> None:
    d = Toy()
    with pytest.raises(DmaError, match="Bus Master"):
        d.dma_read(0, 4)
    enable(d)
    with pytest.raises(DmaError, match="no DMA port"):
        d.dma_read(0, 4)
    ram, tr = Ram(), Tracker()
    d.attach_dma(ram)
    d.attach_dirty_tracker(tr)
    d.dma_write(0x100, b"hello")
    d.dma_write(0x200, b"x", pasid=5)  # PASID traffic is not the RID IOVA space: not logged
    assert d.dma_read(0x100, 5) == b"hello"
    assert tr.writes == [(0x100, 5)]
    with pytest.raises(DmaError, match="outside RAM"):
        d.dma_write(1 << 20, b"x")
    assert len(d.dma_errors) == 3


def test_deferred_work_held_and_stopped() -> None:
    d = Toy()
    ran: list[int] = []
    d.defer(lambda: ran.append(1))
    d.hold = True
    d.after_access()
    assert ran == [] and d.busy
    d.hold = False
    d.set_running(False)
    d.after_access()
    assert d.service() == 0 and ran == []
    d.set_running(True)
    d.after_access()
    assert ran == [1] and not d.busy


# ---------------------------------------------------------------------- state
def test_save_load_round_trip_and_refusals() -> None:
    a = Toy()
    enable(a)
    a.ram.u8[:4] = [1, 2, 3, 4]
    a.bar_write(2, 0, 4, 0xFEE00000)
    a.irq.set_intx(True)
    blob = a.save_state()
    b = Toy()
    b.load_state(blob)
    assert b.ram.u8[:4].tolist() == [1, 2, 3, 4]
    assert b.bar_read(2, 0, 4) == 0xFEE00000
    assert b.config_read(regs.COMMAND, 2) == a.config_read(regs.COMMAND, 2)
    assert b.irq.intx_level
    with pytest.raises(VfiolabError, match="magic"):
        b.load_state(b"x" * 16)
    with pytest.raises(VfiolabError, match="cannot load"):
        PassiveDevice(PcieEndpoint(1, 2, 3)).load_state(blob)
    with pytest.raises(VfiolabError, match="claims"):
        b.load_state(blob[:-1])


def test_default_dirty_log_pages_inside_ranges() -> None:
    d = Toy()
    enable(d)
    d.attach_dma(Ram())
    log = d.dirty
    log.start([(0x1000, 0x3000), (0x10000, 0x1000)], 0x1000)
    d.dma_write(0x0FF0, b"x" * 0x20)     # straddles into the first range: page 0x1000 only
    d.dma_write(0x3FFF, b"yy")           # last byte of the first range + outside
    d.dma_write(0x10800, b"z", pasid=3)  # PASID traffic is not logged
    assert log.read_and_clear(0, 1 << 20).tolist() == [0x1000, 0x3000]
    assert log.read_and_clear(0, 1 << 20).tolist() == []
    with pytest.raises(VfiolabError, match="already"):
        log.start([(0, 0x1000)], 0x1000)
    log.stop()
    with pytest.raises(VfiolabError, match="not running"):
        log.read_and_clear(0, 1)
