"""The device side of a vfio-user server: one emulated :class:`~vfiolab.devices.api.Device` presented the way
vfio-pci presents a PCI function, with no socket in sight (the server module moves the messages).

* Regions (drivers/vfio/pci/vfio_pci_core.c ``vfio_pci_ioctl_get_region_info``): BAR0-5 as the function
  defines them (the upper half of a 64-bit BAR and absent BARs have size 0 and no flags), ROM (read only),
  CONFIG (the function's configuration space), VGA (none).  A BAR whose RAM windows live in shareable memory
  gets the MMAP flag, a SPARSE_MMAP capability listing those windows and the memfd with the reply.
* Region access follows libvfio-user (lib/libvfio-user.c ``is_valid_region_access``): a bad index, an access
  past the end, or any access while the device is in STOP_COPY is EINVAL; count 0 succeeds.  Config space is
  accessed as aligned 1/2/4-byte cycles, BARs as aligned accesses of up to 8 bytes (``DeviceBar``).
* Interrupts: :class:`~vfiolab.vfio_user.server_irqs.IrqTable`, attached as the device's interrupt sink.
* Migration: :class:`vfiolab.vfio.migration.VfioMigration` (the kernel's FSM) over the device's
  ``save_state``/``load_state``/``set_running``; the data stream travels in MIG_DATA_READ/WRITE messages.
  DMA logging is vfio's: the core checks and bitmap of :mod:`vfiolab.vfio.dma_logging` over a
  :class:`~vfiolab.vfio.dma_logging.PageTracker` attached as the device's dirty sink, so every DMA write the
  device makes is logged, through mappings and through messages alike (libvfio-user logs only the
  former; its issue #751).
* Deferred device work runs in :meth:`DeviceHost.service`, called by the server's worker thread.

Every method expects :attr:`DeviceHost.lock` to be held by the caller and raises ``UapiError(errno)``.
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final

from vfiolab.devices.api import Device
from vfiolab.devices.bars import ACCESS_SIZES, split_access
from vfiolab.errors import UapiError, VfiolabError
from vfiolab.vfio.dma_logging import PageTracker, logging_report, logging_start
from vfiolab.vfio.migration import (
    VFIO_MIGRATION_STOP_COPY,
    MigState,
    VfioMigration,
)
from vfiolab.vfio_user.device import (
    DeviceInfo,
    IoFdsReply,
    IoFdsRequest,
    RegionInfo,
    SparseMmapArea,
    SparseMmapCap,
)
from vfiolab.vfio_user.irq import IrqInfo, IrqSet
from vfiolab.vfio_user.migration import (
    DeviceFeature,
    DmaLoggingControl,
    DmaLoggingReport,
    MigData,
    MigDataRead,
    MigDataSize,
    MigrationInfo,
)
from vfiolab.vfio_user.migration import MigState as MigStateBody
from vfiolab.vfio_user.protocol import (
    DEVICE_FEATURE_GET,
    DEVICE_FEATURE_PROBE,
    DEVICE_FEATURE_SET,
    DEVICE_FLAGS_PCI,
    DEVICE_FLAGS_RESET,
    FEATURE_DMA_LOGGING_REPORT,
    FEATURE_DMA_LOGGING_START,
    FEATURE_DMA_LOGGING_STOP,
    FEATURE_MIG_DATA_SIZE,
    FEATURE_MIG_DEVICE_STATE,
    FEATURE_MIGRATION,
    PCI_CONFIG_REGION_INDEX,
    PCI_NUM_IRQS,
    PCI_NUM_REGIONS,
    PCI_ROM_REGION_INDEX,
    REGION_INFO_FLAG_MMAP,
    REGION_INFO_FLAG_READ,
    REGION_INFO_FLAG_WRITE,
)
from vfiolab.vfio_user.server_irqs import IrqTable

CONFIG_WIDTH: Final = 4
#: Operations per feature (libvfio-user device_feature_flags_supported; MIG_DATA_SIZE as Linux has it).
FEATURE_OPS: Final = {
    FEATURE_MIGRATION: DEVICE_FEATURE_GET | DEVICE_FEATURE_PROBE,
    FEATURE_MIG_DEVICE_STATE: DEVICE_FEATURE_GET | DEVICE_FEATURE_SET | DEVICE_FEATURE_PROBE,
    FEATURE_DMA_LOGGING_START: DEVICE_FEATURE_SET | DEVICE_FEATURE_PROBE,
    FEATURE_DMA_LOGGING_STOP: DEVICE_FEATURE_SET | DEVICE_FEATURE_PROBE,
    FEATURE_DMA_LOGGING_REPORT: DEVICE_FEATURE_GET | DEVICE_FEATURE_PROBE,
    FEATURE_MIG_DATA_SIZE: DEVICE_FEATURE_GET | DEVICE_FEATURE_PROBE,
}


@dataclass(frozen=True)
class RegionSpec:
    """What GET_REGION_INFO says about one region, and where its accesses go (``kind``)."""

    index: int
    kind: str  # "bar", "rom", "config" or "none"
    size: int = 0
    flags: int = 0
    areas: tuple[SparseMmapArea, ...] = ()
    fd: int = -1
    file_offset: int = 0


class _Migratable:
    """The device as vfio.migration's MigrationDevice: errors in the blob are EINVAL (the state is kept),
    a stopped device holds its deferred work."""

    def __init__(self, host: DeviceHost) -> None:
        self.host = host

    def save_state(self) -> bytes:
        return self.host.device.save_state()

    def load_state(self, data: bytes) -> None:
        try:
            self.host.device.load_state(data)
        except VfiolabError as e:
            raise UapiError(errno.EINVAL, f"migration data: {e}") from None

    def set_running(self, running: bool) -> None:
        self.host.device.set_running(running)


class _Locked:
    """``with host.locked():`` (a class, not a generator: it runs for every message)."""

    __slots__ = ("host",)

    def __init__(self, host: DeviceHost) -> None:
        self.host = host

    def __enter__(self) -> None:
        self.host.lock.acquire()
        self.host._owner = threading.get_ident()

    def __exit__(self, *exc: object) -> None:
        self.host._owner = None
        self.host.lock.release()


class DeviceHost:
    """One device as a vfio-user server presents it."""

    def __init__(self, device: Device) -> None:
        self.device = device
        self.lock = threading.Lock()
        """Serialises every access to the device (requests, deferred work, the client going away)."""
        self._owner: int | None = None
        self._locked = _Locked(self)
        self.irqs = IrqTable(device)
        device.attach_sink(self.irqs)
        # The vfio-user client (QEMU) emulates the MSI-X table itself and never forwards its accesses.
        device.irq.honor_msix_table = False
        self.regions = tuple(self._region(i) for i in range(PCI_NUM_REGIONS))
        self.tracker = PageTracker()
        device.attach_dirty_tracker(self.tracker)
        self.default_log_ranges: list[tuple[int, int]] = []
        """What DMA_LOGGING_START without ranges logs (vfio-user's "everything": the server puts the
        client's DMA mappings here)."""
        self.migration = VfioMigration(_Migratable(self), VFIO_MIGRATION_STOP_COPY)

    # ------------------------------------------------------------------ locking
    def locked(self) -> _Locked:
        """Hold the device lock (and remember the holder, so a DMA wait can let go of it)."""
        return self._locked

    @contextmanager
    def released(self) -> Iterator[None]:
        """Let go of the device lock for a while if this thread holds it (a DMA waiting for the client)."""
        if self._owner != threading.get_ident():
            yield
            return
        self._owner = None
        self.lock.release()
        try:
            yield
        finally:
            self.lock.acquire()
            self._owner = threading.get_ident()

    @property
    def held_by_me(self) -> bool:
        return self._owner == threading.get_ident()

    # ------------------------------------------------------------------ regions
    def _region(self, index: int) -> RegionSpec:
        dev, fn = self.device, self.device.function
        if index == PCI_CONFIG_REGION_INDEX:
            return RegionSpec(index, "config", fn.cs.size, REGION_INFO_FLAG_READ | REGION_INFO_FLAG_WRITE)
        if index == PCI_ROM_REGION_INDEX:
            return RegionSpec(index, "rom", fn.rom_size, REGION_INFO_FLAG_READ if fn.rom_size else 0)
        dbar = dev.bars.get(index)
        if dbar is None:
            return RegionSpec(index, "none")
        flags = REGION_INFO_FLAG_READ | REGION_INFO_FLAG_WRITE
        # One fd per region: offer the windows that share the first window's memory and file placement.
        areas: list[SparseMmapArea] = []
        fd, delta = -1, 0
        for off, size in dbar.mmap_areas():
            shm, file_off = dbar.backing(off, size)
            if fd < 0 and file_off >= off:
                fd, delta = shm.fd, file_off - off
            if shm.fd == fd and file_off - off == delta:
                areas.append(SparseMmapArea(off, size))
        if areas:
            flags |= REGION_INFO_FLAG_MMAP
        return RegionSpec(index, "bar", dbar.size, flags, tuple(areas), fd, delta)

    def device_info(self, req: DeviceInfo) -> DeviceInfo:
        """DEVICE_GET_INFO: a resettable PCI device with the 9 vfio-pci regions and 5 IRQ indexes."""
        return DeviceInfo(DeviceInfo().argsz, DEVICE_FLAGS_PCI | DEVICE_FLAGS_RESET, PCI_NUM_REGIONS, PCI_NUM_IRQS)

    def region_info(self, req: RegionInfo) -> tuple[RegionInfo, list[int]]:
        """DEVICE_GET_REGION_INFO; the memfd comes with the reply that carries the sparse-mmap capability."""
        spec = self._spec(req.index)
        caps: tuple[SparseMmapCap, ...] = (SparseMmapCap(spec.areas),) if spec.areas else ()
        reply = RegionInfo.for_reply(spec.index, spec.flags, spec.size, spec.file_offset if caps else 0, caps,
                                     req.argsz)
        return reply, ([spec.fd] if reply.caps else [])

    def io_fds(self, req: IoFdsRequest) -> IoFdsReply:
        """DEVICE_GET_REGION_IO_FDS: no region has ioeventfds (libvfio-user: a region without flags is
        EINVAL)."""
        spec = self._spec(req.index)
        if not spec.flags:
            raise UapiError(errno.EINVAL, f"region {req.index} does not exist")
        return IoFdsReply(req.index, IoFdsRequest(0).argsz, 0)

    def _spec(self, index: int) -> RegionSpec:
        if index >= PCI_NUM_REGIONS:
            raise UapiError(errno.EINVAL, f"region index {index} >= {PCI_NUM_REGIONS}")
        return self.regions[index]

    def _check_access(self, region: int, offset: int, count: int, write: bool) -> RegionSpec:
        spec = self._spec(region)
        if offset + count > spec.size:
            raise UapiError(errno.EINVAL, f"region {region}: [{offset:#x}, +{count:#x}) outside its "
                                          f"{spec.size:#x} bytes")
        if self.migration.state == MigState.STOP_COPY:
            raise UapiError(errno.EINVAL, f"region {region}: no access while the device is in STOP_COPY")
        if write and spec.kind == "rom":
            raise UapiError(errno.EINVAL, "the expansion ROM is read only")
        return spec

    def region_read(self, region: int, offset: int, count: int) -> bytes:
        """REGION_READ: ``count`` bytes of region ``region`` at ``offset``."""
        spec = self._check_access(region, offset, count, False)
        if count == 0:
            return b""
        try:
            if spec.kind == "config":
                return b"".join(self.device.config_read(off, n).to_bytes(n, "little")
                                for off, n in split_access(offset, count, CONFIG_WIDTH))
            if spec.kind == "rom":
                return b"\xff" * count  # no ROM image behind the BAR
            if count in ACCESS_SIZES and not offset % count:  # one naturally aligned access (the usual MMIO)
                return self.device.bar_read(region, offset, count).to_bytes(count, "little")
            data = self.device.read_bar(region, offset, count)
        except VfiolabError as e:
            raise UapiError(errno.EINVAL, str(e)) from None
        return data

    def region_write(self, region: int, offset: int, data: bytes) -> None:
        """REGION_WRITE of ``data`` at ``offset``."""
        spec = self._check_access(region, offset, len(data), True)
        if not data:
            return
        try:
            if spec.kind == "config":
                for off, n in split_access(offset, len(data), CONFIG_WIDTH):
                    self.device.config_write(off, n, int.from_bytes(data[off - offset:off - offset + n], "little"))
            elif len(data) in ACCESS_SIZES and not offset % len(data):
                self.device.bar_write(region, offset, len(data), int.from_bytes(data, "little"))
            else:
                self.device.write_bar(region, offset, data)
        except VfiolabError as e:
            raise UapiError(errno.EINVAL, str(e)) from None

    # ------------------------------------------------------------------ interrupts, reset, work
    def irq_info(self, req: IrqInfo) -> IrqInfo:
        return self.irqs.info(req)

    def set_irqs(self, req: IrqSet, fds: list[int]) -> None:
        self.irqs.set_irqs(req, fds)

    def reset(self) -> None:
        """DEVICE_RESET: a function level reset of the device (config space and registers); migration
        returns to RUNNING (leaving ERROR), as VFIO_DEVICE_RESET does."""
        self.device.reset("flr")
        self.migration.reset()

    @property
    def needs_service(self) -> bool:
        """Deferred device work is queued and may run."""
        return self.device.busy and self.device.running and not self.device.hold

    def service(self) -> int:
        """Run the device's deferred work until none is left (or the device is held)."""
        ran = 0
        while self.needs_service:
            ran += self.device.service()
        return ran

    # ------------------------------------------------------------------ DEVICE_FEATURE
    def feature(self, req: DeviceFeature) -> DeviceFeature:
        """DEVICE_FEATURE (libvfio-user handle_device_feature): PROBE echoes, GET answers, SET acts and
        echoes."""
        supported = FEATURE_OPS.get(req.feature, 0)
        if not supported or req.flags & supported != req.ops:
            raise UapiError(errno.EINVAL, f"feature {req.feature}: operations {req.ops:#x} not supported")
        if req.ops & DEVICE_FEATURE_PROBE:
            return req
        mig = self.migration
        if req.ops == DEVICE_FEATURE_GET:
            if req.feature == FEATURE_MIGRATION:
                return DeviceFeature(req.flags, MigrationInfo(mig.flags))
            if req.feature == FEATURE_MIG_DEVICE_STATE:
                return DeviceFeature(req.flags, MigStateBody(int(mig.state)))
            if req.feature == FEATURE_MIG_DATA_SIZE:
                return DeviceFeature(req.flags, MigDataSize(mig.get_data_size()))
            assert isinstance(req.data, DmaLoggingReport)
            rep = req.data
            bitmap = self.dirty_bitmap(rep.iova, rep.length, rep.page_size)
            return DeviceFeature(req.flags, DmaLoggingReport(rep.iova, rep.length, rep.page_size, bitmap))
        if req.feature == FEATURE_MIG_DEVICE_STATE:
            assert isinstance(req.data, MigStateBody)
            mig.set_state(req.data.device_state)
        elif req.feature == FEATURE_DMA_LOGGING_START:
            assert isinstance(req.data, DmaLoggingControl)
            ranges = [(r.iova, r.length) for r in req.data.ranges] or self.default_log_ranges
            logging_start(self.tracker, req.data.page_size, ranges)
        else:
            self.tracker.log_stop()
        return req

    def dirty_bitmap(self, iova: int, length: int, page_size: int) -> bytes:
        """The u64 bitmap (one bit per ``page_size`` from ``iova``) of pages the device wrote since the last
        report, which clears them (vfio_main.c DMA_LOGGING_REPORT rules; EINVAL while logging is off)."""
        return logging_report(self.tracker, iova, length, page_size).tobytes()

    # ------------------------------------------------------------------ migration data
    def mig_data_read(self, req: MigDataRead) -> MigData:
        """MIG_DATA_READ in PRE_COPY or STOP_COPY (lib/migration.c); a short read ends the stream.  The reply
        is padded to the requested size as libvfio-user sends it."""
        mig = self.migration
        if mig.state not in (MigState.PRE_COPY, MigState.STOP_COPY) or mig.saving is None:
            raise UapiError(errno.EINVAL, f"MIG_DATA_READ in state {mig.state.name}")
        try:
            data = mig.saving.read(req.size)
        except UapiError as e:
            if e.errno != errno.ENOMSG:
                raise
            data = b""
        return MigData(data, None, req.size - len(data))

    def mig_data_write(self, req: MigData) -> None:
        """MIG_DATA_WRITE in RESUMING (lib/migration.c)."""
        mig = self.migration
        if mig.state != MigState.RESUMING or mig.resuming is None:
            raise UapiError(errno.EINVAL, f"MIG_DATA_WRITE in state {mig.state.name}")
        mig.resuming.write(req.data)


__all__ = ["DeviceHost", "RegionSpec"]
