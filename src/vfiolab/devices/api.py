"""The device API: what an emulated device is, independent of who hosts it (architecture decision 5).

A :class:`Device` is

* a PCI function (:class:`~vfiolab.pci.function.PciFunction`: config space + capabilities),
* BAR handlers (:class:`~vfiolab.devices.bars.DeviceBar`: register windows, RAM windows in shareable
  memory, the MSI-X table/PBA),
* a DMA port (:class:`DmaPort`, given by the host: the in-process IOMMU path or a vfio-user client's DMA
  table), reached through :meth:`Device.dma_read`/:meth:`Device.dma_write` which honour Bus Master Enable
  and feed the dirty log,
* interrupt lines (:class:`~vfiolab.devices.irq.InterruptLines` into the host's
  :class:`~vfiolab.devices.irq.InterruptSink`),
* reset (the function's FLR / hot / fundamental reset reaches :meth:`Device.on_reset`),
* migration state (:meth:`save_state`/:meth:`load_state`, :meth:`set_running`) and the pages it dirtied
  (every completed DMA write without PASID goes to :attr:`dirty`, a :class:`DirtySink`: by default the
  device's own :class:`~vfiolab.devices.dirty.DirtyLog`; a host may attach another, such as vfio's page
  tracker for DMA logging).

Work a device does "later" (a DMA engine, a computation) is queued with :meth:`defer` and run by
:meth:`service`, which hosts call after each access (:meth:`after_access`) unless :attr:`hold` is set, so
software can observe a busy device.  Nothing here imports a host (vfio, vfio-user, iommu).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import ClassVar, Protocol

import numpy as np

from vfiolab.devices import state as st
from vfiolab.devices.bars import DeviceBar, MmioRegion, RamRegion, ReadFn, Region, WriteFn
from vfiolab.devices.dirty import DirtyLog
from vfiolab.devices.irq import InterruptLines, InterruptSink
from vfiolab.devices.shm import SharedMemory
from vfiolab.errors import VfiolabError
from vfiolab.pci import regs
from vfiolab.pci.caps import pm as pm_regs
from vfiolab.pci.caps.pm import PmCap
from vfiolab.pci.config import RESET_FLR
from vfiolab.pci.function import PciFunction


class DmaError(VfiolabError):
    """A DMA the device issued was not completed (no translation, no permission, bus mastering off...)."""

    def __init__(self, iova: int, length: int, write: bool, pasid: int | None, reason: str) -> None:
        self.iova, self.length, self.write, self.pasid, self.reason = iova, length, write, pasid, reason
        pas = f" pasid {pasid:#x}" if pasid is not None else ""
        super().__init__(f"DMA {'write' if write else 'read'} of {length:#x} bytes at {iova:#x}{pas}: {reason}")


class DmaRetry(VfiolabError):
    """The DMA waits for an answer (a PRI page response): nothing moved; issue it again later."""

    def __init__(self, iova: int, write: bool, pasid: int | None, reason: str = "waiting for a page response") -> None:
        self.iova, self.write, self.pasid = iova, write, pasid
        super().__init__(f"DMA at {iova:#x} must be retried: {reason}")


class DmaPort(Protocol):
    """The host's side of DMA: move bytes at an IOVA (with a PASID when given).  Raises
    :class:`DmaError` when refused and :class:`DmaRetry` when it must be reissued later."""

    def dma_read(self, iova: int, length: int, pasid: int | None = None) -> bytes: ...

    def dma_write(self, iova: int, data: bytes | bytearray | memoryview, pasid: int | None = None) -> None: ...


class DirtySink(Protocol):
    """Told about every DMA write the device completed (a device-side dirty page tracker)."""

    def note_write(self, iova: int, length: int) -> None: ...


class NoTracking:
    """The dirty sink of a device nobody tracks."""

    def note_write(self, iova: int, length: int) -> None:
        return None


class NoDmaPort:
    """The port of a device nobody hosts yet: every access fails."""

    def dma_read(self, iova: int, length: int, pasid: int | None = None) -> bytes:
        raise DmaError(iova, length, False, pasid, "the device has no DMA port (not hosted)")

    def dma_write(self, iova: int, data: bytes | bytearray | memoryview, pasid: int | None = None) -> None:
        raise DmaError(iova, len(data), True, pasid, "the device has no DMA port (not hosted)")


class Device:
    """An emulated PCI device: subclasses build their function, place regions and implement behaviour."""

    kind: ClassVar[str] = "device"
    """Name recorded in saved state; a state only loads into a device of the same kind."""

    def __init__(self, fn: PciFunction, name: str = "") -> None:
        self.function = fn
        self.name = name or fn.name or self.kind
        self.bars: dict[int, DeviceBar] = {b.index: DeviceBar(b) for b in fn.bars}
        self.irq = InterruptLines(fn)
        self.dma: DmaPort = NoDmaPort()
        self.dirty: DirtySink = DirtyLog()
        self.hold = False
        """Keep deferred work queued across :meth:`after_access` (software then sees the device busy)."""
        self.running = True
        """False while migration has the device stopped: deferred work waits (no DMA, no interrupts)."""
        self.dma_errors: list[DmaError] = []
        """DMA accesses that failed, oldest first (a device's error log; the host may inspect it)."""
        self._work: deque[Callable[[], None]] = deque()
        for bar_index, region in self.irq.table_regions():
            self.add_region(bar_index, region)
        fn.add_reset_listener(self._function_reset)
        pm = next((c for c in fn.caps.std if isinstance(c, PmCap)), None)
        if pm is not None:
            fn.cs.add_write_hook(pm.offset + pm_regs.PMCSR, 2, self._pmcsr_written)

    # ------------------------------------------------------------------ building
    def bar(self, index: int) -> DeviceBar:
        """BAR ``index`` (VfiolabError when the function has none there)."""
        try:
            return self.bars[index]
        except KeyError:
            raise VfiolabError(f"{self.name}: no BAR {index}") from None

    def add_region(self, bar: int, region: Region) -> Region:
        """Place ``region`` in BAR ``bar``."""
        return self.bar(bar).add(region)

    def add_mmio(self, bar: int, offset: int, size: int, read: ReadFn, write: WriteFn, name: str = "regs"
                 ) -> MmioRegion:
        """A register window whose accesses call ``read(off, size)`` / ``write(off, size, value)``."""
        region = MmioRegion(offset, size, name, read, write)
        self.add_region(bar, region)
        return region

    def add_ram(self, bar: int, offset: int, size: int, name: str = "ram") -> RamRegion:
        """A RAM window backed by new shareable memory (mappable when page aligned)."""
        region = RamRegion(offset, size, f"{self.name}-{name}")
        self.add_region(bar, region)
        return region

    # ------------------------------------------------------------------ host side: hosting
    def attach_dma(self, port: DmaPort) -> None:
        """The host provides the DMA path."""
        self.dma = port

    def attach_sink(self, sink: InterruptSink) -> None:
        """The host receives the interrupts."""
        self.irq.sink = sink

    def attach_dirty_tracker(self, tracker: DirtySink) -> None:
        """The host logs the device's DMA writes."""
        self.dirty = tracker

    # ------------------------------------------------------------------ host side: accesses
    def config_read(self, offset: int, size: int) -> int:
        """A configuration read of the function."""
        return self.function.config_read(offset, size)

    def config_write(self, offset: int, size: int, value: int) -> None:
        """A configuration write of the function."""
        self.function.config_write(offset, size, value)

    def bar_read(self, index: int, offset: int, size: int) -> int:
        """One naturally aligned read of 1, 2, 4 or 8 bytes in BAR ``index``."""
        return self.bar(index).read(offset, size)

    def bar_write(self, index: int, offset: int, size: int, value: int) -> None:
        """One naturally aligned write in BAR ``index``."""
        self.bar(index).write(offset, size, value)

    def read_bar(self, index: int, offset: int, length: int) -> bytes:
        """Bytes of BAR ``index`` read as aligned accesses (up to 8 bytes each)."""
        return self.bar(index).read_bytes(offset, length)

    def write_bar(self, index: int, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Bytes stored into BAR ``index`` as aligned accesses."""
        self.bar(index).write_bytes(offset, data)

    def after_access(self) -> None:
        """Hosts call this after each region access: run deferred work unless held or stopped."""
        if not self.hold and self.running:
            self.service()

    # ------------------------------------------------------------------ deferred work
    def defer(self, work: Callable[[], None]) -> None:
        """Queue ``work`` to run at the next :meth:`service`."""
        self._work.append(work)

    @property
    def busy(self) -> bool:
        """Deferred work is queued."""
        return bool(self._work)

    def service(self) -> int:
        """Run the work queued so far (work it queues runs next time); returns how many items ran.
        A stopped device (:attr:`running` False) runs nothing."""
        if not self.running:
            return 0
        n = len(self._work)
        for _ in range(n):
            self._work.popleft()()
        return n

    # ------------------------------------------------------------------ device side: DMA
    @property
    def bus_master(self) -> bool:
        """Command.Bus Master Enable: without it a function must not issue memory requests."""
        return bool(self.function.cs.get(regs.COMMAND, 2) & regs.COMMAND_MASTER)

    def dma_read(self, iova: int, length: int, pasid: int | None = None) -> bytes:
        """Read memory by DMA (DmaError / DmaRetry as the port decides; bus mastering is checked first)."""
        if not self.bus_master:
            raise self._dma_failed(DmaError(iova, length, False, pasid, "Bus Master Enable is clear"))
        try:
            return self.dma.dma_read(iova, length, pasid)
        except DmaError as e:
            raise self._dma_failed(e) from None

    def dma_write(self, iova: int, data: bytes | bytearray | memoryview, pasid: int | None = None) -> None:
        """Write memory by DMA; a completed write without PASID is recorded in :attr:`dirty`."""
        if not self.bus_master:
            raise self._dma_failed(DmaError(iova, len(data), True, pasid, "Bus Master Enable is clear"))
        try:
            self.dma.dma_write(iova, data, pasid)
        except DmaError as e:
            raise self._dma_failed(e) from None
        if pasid is None:
            self.dirty.note_write(iova, len(data))

    def _dma_failed(self, err: DmaError) -> DmaError:
        self.dma_errors.append(err)
        return err

    # ------------------------------------------------------------------ reset
    def reset(self, kind: str = "flr") -> None:
        """Reset the function (config space, then :meth:`on_reset`), as hardware does for ``kind``."""
        self.function.reset(kind)

    def _pmcsr_written(self, off: int, size: int, old: int, new: int) -> None:
        # PCI PM 1.2 §5.4: D3hot -> D0 with No_Soft_Reset clear is an internal reset of the function
        # (what Linux's pci_pm_reset() relies on).
        if old & pm_regs.CTRL_STATE == 3 and new & pm_regs.CTRL_STATE == 0 and not new & pm_regs.CTRL_NO_SOFT_RESET:
            self.function.reset(RESET_FLR)

    def _function_reset(self, kind: str) -> None:
        self._work.clear()
        self.irq.reset()
        self.on_reset(kind)

    def on_reset(self, kind: str) -> None:
        """Device registers after a reset of ``kind`` (flr/hot/fundamental); default: nothing."""

    # ------------------------------------------------------------------ migration
    def set_running(self, running: bool) -> None:
        """Migration stops the device (queued work waits, nothing new starts) and runs it again."""
        self.running = running

    def save_state(self) -> bytes:
        """Everything needed to recreate this device elsewhere: config space, interrupt state, BAR RAM,
        then the device's own registers (:meth:`save_regs`) including operations in flight."""
        sections: list[tuple[str, bytes]] = [("kind", self.kind.encode()),
                                             ("config", bytes(self.function.cs.data)),
                                             ("intx", bytes([self.irq.intx_level]))]
        if self.irq.msix is not None:
            sections += [("msix.table", self.irq.msix.table.tobytes()),
                         ("msix.pba", self.irq.msix.pba.tobytes())]
        for index, dbar in sorted(self.bars.items()):
            for region in dbar.ram_regions():
                sections.append((f"ram.{index}.{region.offset:#x}", region.u8.tobytes()))
        sections.append(("regs", self.save_regs()))
        return st.pack_sections(sections)

    def load_state(self, blob: bytes | bytearray | memoryview) -> None:
        """Become the device :meth:`save_state` described (VfiolabError, device unchanged, on a bad blob)."""
        sec = st.unpack_sections(blob)
        kind = st.need(sec, "kind").decode(errors="replace")
        if kind != self.kind:
            raise VfiolabError(f"device state of a {kind!r} cannot load into a {self.kind!r}")
        cs = self.function.cs
        config = st.need(sec, "config", cs.size)
        intx = st.need(sec, "intx", 1)
        rams = []
        for index, dbar in sorted(self.bars.items()):
            for region in dbar.ram_regions():
                rams.append((region, st.need(sec, f"ram.{index}.{region.offset:#x}", region.size)))
        msix = None
        if self.irq.msix is not None:
            m = self.irq.msix
            msix = (st.need(sec, "msix.table", m.table.nbytes), st.need(sec, "msix.pba", m.pba.nbytes))
        regs_blob = st.need(sec, "regs")
        self.check_regs(regs_blob)
        # Everything validated: apply.
        self._work.clear()
        cs.data[:] = config
        for region, data in rams:
            region.u8[:] = np.frombuffer(data, dtype=np.uint8)
        if msix is not None and self.irq.msix is not None:
            self.irq.msix.table[:] = np.frombuffer(msix[0], dtype=np.uint32).reshape(self.irq.msix.table.shape)
            self.irq.msix.pba[:] = np.frombuffer(msix[1], dtype=bool)
        self.irq.set_intx(bool(intx[0]))
        self.load_regs(regs_blob)

    def save_regs(self) -> bytes:
        """The device's own registers (subclasses); default: none."""
        return b""

    def check_regs(self, blob: bytes) -> None:
        """Raise VfiolabError unless ``blob`` is a valid :meth:`save_regs` output (before anything loads)."""
        if blob:
            raise VfiolabError(f"{self.kind}: unexpected register state ({len(blob)} bytes)")

    def load_regs(self, blob: bytes) -> None:
        """Restore :meth:`save_regs` output and re-arm work that was in flight (subclasses)."""

    def close(self) -> None:
        """Release shareable memory."""
        seen: set[int] = set()
        for dbar in self.bars.values():
            for region in dbar.ram_regions():
                if id(region.shm) not in seen:
                    seen.add(id(region.shm))
                    region.shm.close()

    def __repr__(self) -> str:
        f = self.function
        return f"<{type(self).__name__} {self.name} {f.vendor:04x}:{f.device:04x}>"


class PassiveDevice(Device):
    """A function with config space only: its BARs decode nothing (reads all ones).  Lets a host serve a
    bare :class:`PciFunction` (an SR-IOV VF, a function from a platform description)."""

    kind: ClassVar[str] = "passive"


__all__ = ["Device", "DirtySink", "DmaError", "DmaPort", "DmaRetry", "InterruptSink", "NoDmaPort", "NoTracking",
           "PassiveDevice", "SharedMemory"]
