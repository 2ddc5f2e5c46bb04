"""vfio-pci (``drivers/vfio/pci/vfio_pci_core.c``, ``vfio_pci_rdwr.c``, ``vfio_pci.c``) over the device API:
registration, open/close (enable, config virtualisation, reset, saved state), the device ioctls with the
kernel's checks in its order (GET_INFO, GET_REGION_INFO capability chains, GET_IRQ_INFO, SET_IRQS, RESET,
hot-reset info and hot reset, IOEVENTFD), region read/write (BARs with the MSI-X table excluded, config
space, ROM), mmap of RAM-backed BAR areas, the low-power and VF-token features, and the reset methods of
``drivers/pci/pci.c`` (FLR, PM, secondary bus reset) with ``pci_save_state``/``pci_restore_state``.

Hosting glue for an in-process device: :func:`host_device` puts a :class:`~vfiolab.devices.api.Device`
behind an IOMMU unit (an :class:`~vfiolab.iommu.device.IommuDevice` probed into a group, a DMA port that
translates through the IOMMU and turns faults into the device API's errors) and assigns its BARs when no
enumeration did.

Where the model must differ: a BAR can be mmap'd only where the device keeps RAM (registers cannot be
mapped into a process), so the MMAP flag needs RAM in the BAR and a BAR only partly RAM carries a
SPARSE_MMAP capability listing those areas; mappings handed out stay valid when the kernel would zap them.
"""

from __future__ import annotations

import errno
import mmap
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar, Final

from vfiolab.devices.api import Device, DmaError, DmaRetry
from vfiolab.errors import UapiError, VfiolabError
from vfiolab.iommu.device import IommuDevice
from vfiolab.iommu.dma import DmaPort as IommuPort
from vfiolab.iommu.fault import DmaFault, DmaStalled
from vfiolab.iommu.group import IommuGroup, iommu_probe_device
from vfiolab.iommufd.ucmd import UserBuffer
from vfiolab.pci import regs
from vfiolab.pci.caps import express_regs as X
from vfiolab.pci.caps import msi as msi_regs
from vfiolab.pci.caps import msix as msix_regs
from vfiolab.pci.caps import pm as pm_regs
from vfiolab.pci.caps.ats import AtsCap
from vfiolab.pci.caps.pasid import PasidCap
from vfiolab.pci.caps.pm import PmCap
from vfiolab.pci.caps.pri import PriCap
from vfiolab.pci.caps.sriov import SriovCap
from vfiolab.pci.function import PciFunction
from vfiolab.vfio import cdev
from vfiolab.vfio import uapi as U
from vfiolab.vfio.device import VfioDevice, VfioDeviceFile, VfioInfoCap, set_irqs_validate_and_prepare
from vfiolab.vfio.dma_logging import PageTracker
from vfiolab.vfio.group import VfioGroupFile
from vfiolab.vfio.migration import VFIO_MIGRATION_STOP_COPY, VfioMigration, check_feature
from vfiolab.vfio.pci_config import VfioPciConfig
from vfiolab.vfio.pci_intrs import EventfdCtx, VfioPciIrqs

if TYPE_CHECKING:
    from vfiolab.iommu.unit import IommuUnit
    from vfiolab.iommufd.main import Iommufd
    from vfiolab.pci.bridge import PciBridge
    from vfiolab.vfio.migration import FeatureData

PAGE_SIZE: Final = 4096
_SRIOV_CTRL_MSE: Final = 0x0008  # pci_regs.h PCI_SRIOV_CTRL_MSE
PCI_D0, PCI_D3HOT = 0, 3
VFIO_PCI_IOEVENTFD_MAX: Final = 1000
# vfio_pci_core.c vfio_pci_nointx(): Intel NICs whose INTx masking is broken
_NOINTX_INTEL: Final = frozenset({0x1572, 0x1574, 0x1580, 0x1581, *range(0x1583, 0x158C), 0x37D0, 0x37D1, 0x37D2,
                                  0x1563})


# ---------------------------------------------------------------------- hosting an in-process device
class IommuDmaPort:
    """The device API's DMA port over the IOMMU DMA path of an :class:`IommuDevice`: faults become
    :class:`DmaError`, a DMA waiting for a PRI page response becomes :class:`DmaRetry`."""

    def __init__(self, dev: IommuDevice) -> None:
        self.port = IommuPort(dev)

    def dma_read(self, iova: int, length: int, pasid: int | None = None) -> bytes:
        try:
            return self.port.dma_read(iova, length, pasid)
        except DmaStalled as e:
            raise DmaRetry(iova, False, pasid, str(e)) from None
        except DmaFault as e:
            raise DmaError(iova, length, False, pasid, e.record.reason.value) from None
        except VfiolabError as e:
            raise DmaError(iova, length, False, pasid, str(e)) from None

    def dma_write(self, iova: int, data: bytes | bytearray | memoryview, pasid: int | None = None) -> None:
        try:
            self.port.dma_write(iova, data, pasid)
        except DmaStalled as e:
            raise DmaRetry(iova, True, pasid, str(e)) from None
        except DmaFault as e:
            raise DmaError(iova, len(data), True, pasid, e.record.reason.value) from None
        except VfiolabError as e:
            raise DmaError(iova, len(data), True, pasid, str(e)) from None


def assign_bars(fn: PciFunction, base: int = 0xE000_0000) -> int:
    """Program unassigned memory BARs (and the ROM) naturally aligned from ``base`` as firmware would;
    returns the next free address.  I/O BARs get ports from 0xC000."""
    addr, io = base, 0xC000
    for bar in sorted(fn.bars, key=lambda b: -b.size):
        off = regs.BASE_ADDRESS_0 + 4 * bar.index
        if fn.bar_address(bar.index):
            continue
        if bar.kind == "io":
            io = -(-io // bar.size) * bar.size
            fn.config_write(off, 4, io)
            io += bar.size
            continue
        addr = -(-addr // bar.size) * bar.size
        fn.config_write(off, 4, addr & 0xFFFFFFFF)
        if bar.kind == "mem64":
            fn.config_write(off + 4, 4, addr >> 32)
        addr += bar.size
    if fn.rom_size and not fn.cs.get(regs.ROM_ADDRESS, 4) & ~0x7FF:
        addr = -(-addr // fn.rom_size) * fn.rom_size
        fn.config_write(regs.ROM_ADDRESS, 4, addr)
        addr += fn.rom_size
    return addr


def host_device(device: Device, unit: IommuUnit, *, rid: int | None = None, group: IommuGroup | None = None,
                default_type: int | None = None, bar_base: int = 0xE000_0000) -> IommuDevice:
    """Plug ``device`` into the host: BARs assigned, an IOMMU device probed into ``group`` (a new one by
    default), the DMA port attached to the device."""
    fn = device.function
    assign_bars(fn, bar_base)
    if rid is None:
        rid = (_bus_number(fn) << 8 | fn.devfn) if fn.devfn >= 0 else 0
    dev = IommuDevice(device.name, rid, pci=fn)
    iommu_probe_device(dev, unit, group, default_type=default_type)
    device.attach_dma(IommuDmaPort(dev))
    return dev


def make_vfio_pci(device: Device, unit: IommuUnit, **kw: Any) -> VfioPciCoreDevice:
    """:func:`host_device` + a registered vfio-pci device (keywords go to either)."""
    host_kw = {k: kw.pop(k) for k in ("rid", "group", "default_type", "bar_base") if k in kw}
    idev = host_device(device, unit, **host_kw)
    vdev = VfioPciCoreDevice(device, idev, **kw)
    vdev.register()
    return vdev


class DeviceMigration:
    """The migration driver's view of a device (``MigrationDevice``): its saved state, loaded back with a
    bad blob refused as EINVAL (the device is left as it was), and stop/run."""

    def __init__(self, device: Device) -> None:
        self.device = device

    def save_state(self) -> bytes:
        return self.device.save_state()

    def load_state(self, data: bytes) -> None:
        try:
            self.device.load_state(data)
        except VfiolabError as e:
            raise UapiError(errno.EINVAL, f"device state refused: {e}") from None

    def set_running(self, running: bool) -> None:
        self.device.set_running(running)


# ---------------------------------------------------------------------- the vfio-pci device
_PF_REGISTRY: dict[PciFunction, VfioPciCoreDevice] = {}
"""vfio_pci_sriov_pfs: PFs that enabled their VFs through vfio-pci, by function."""


class VfToken:
    """struct vfio_pci_vf_token."""

    def __init__(self) -> None:
        import uuid
        self.uuid = uuid.uuid4().bytes  # uuid_gen()
        self.users = 0


class VfioPciCoreDevice(VfioDevice):
    """struct vfio_pci_core_device driven by vfio_pci_ops."""

    OPS: ClassVar[frozenset[str]] = frozenset({
        "open_device", "close_device", "ioctl", "get_region_info_caps", "device_feature", "read", "write", "mmap",
        "match", "match_token_uuid", "bind_iommufd", "unbind_iommufd", "attach_ioas", "detach_ioas",
        "pasid_attach_ioas",
        "pasid_detach_ioas"})

    def __init__(self, device: Device, iommu_dev: IommuDevice | None, *, name: str | None = None,
                 dyn_msix: bool = True, nointxmask: bool = False, disable_idle_d3: bool = False,
                 migration_flags: int = 0, dma_logging: bool = False) -> None:
        fn = device.function
        self.device = device
        self.fn = fn
        self.pf_fn: PciFunction | None = getattr(fn, "pf", None)
        set_id = self._set_key(fn)
        super().__init__(name or device.name, iommu_dev, set_id)
        self.is_virtfn = fn.is_virtfn
        self.vendor = getattr(fn, "real_vendor", fn.vendor)
        self.device_id = getattr(fn, "real_device", fn.device)
        self.no_command_memory = fn.is_virtfn
        self.cfg_size = fn.cfg_limit
        self.is_pcie = fn.express_offset is not None
        self.dyn_msix_capable = dyn_msix
        self.nointxmask = nointxmask
        self.disable_idle_d3 = disable_idle_d3
        self.irq_connected = fn.cs.get(regs.INTERRUPT_PIN, 1) != 0 and not fn.is_virtfn
        self.irqs = VfioPciIrqs(self)
        self.config: VfioPciConfig | None = None
        self.reset_works = False
        self.needs_reset = False
        self.needs_pm_restore = False
        self.pm_save: dict[str, Any] | None = None
        self.pci_saved_state: dict[str, Any] | None = None
        self.current_state = PCI_D0
        self.pm_runtime_engaged = False
        self.pm_wake: EventfdCtx | None = None
        self.runtime_suspended = False
        self.pm_intx_masked = False
        self.msix_bar = 0xFF
        self.msix_offset = self.msix_size = 0
        self.has_dyn_msix = False
        self.msix_data: dict[int, int] = {}
        """MSI-X vector -> the data value the host programmed into the table."""
        self.bar_mmap_supported = [False] * 6
        self.vf_token: VfToken | None = None
        self.sriov_pf_core_dev: VfioPciCoreDevice | None = None
        self.sriov_active = False
        self.ioeventfds: list[tuple[int, int, int, int, EventfdCtx]] = []
        self.bar_restores = 0
        self.zaps = 0
        self.iov_num_vfs = 0
        self.iov_ctrl = 0
        """struct pci_sriov num_VFs / ctrl: what pci_enable_sriov() programmed."""
        self._resources = self._read_resources()
        if migration_flags:  # a variant driver's mig_ops with these migration_flags
            if not migration_flags & VFIO_MIGRATION_STOP_COPY:
                raise UapiError(errno.EINVAL, "migration needs VFIO_MIGRATION_STOP_COPY")
            self.mig = VfioMigration(DeviceMigration(device), migration_flags)
        if dma_logging:  # a variant driver's log_ops: the device's own page tracker sees its DMA writes
            tracker = PageTracker()
            self.log_ops = tracker
            device.attach_dirty_tracker(tracker)

    # ------------------------------------------------------------------ host view of the function
    @staticmethod
    def _set_key(fn: PciFunction) -> object:
        """vfio_pci_core_register_device(): a root-bus device or a VF is its own set; otherwise the bus
        (no hotplug slots are modelled, so slot reset is never available)."""
        if fn.bus is None or fn.bus.bridge is None or fn.is_virtfn:
            return None
        return fn.bus

    def _read_resources(self) -> list[tuple[int, int, str, bool]]:
        """pci_dev->resource[0..5] as the host assigned them."""
        res = [(0, 0, "none", False)] * 6
        for bar in self.fn.bars:
            res[bar.index] = (self.fn.bar_address(bar.index), bar.size, bar.kind, bar.prefetch)
        return res

    def resource(self, index: int) -> tuple[int, int, str, bool]:
        """(start, size, kind, prefetch) of BAR ``index`` (start 0: unassigned / none)."""
        return self._resources[index]

    def rom_resource(self) -> tuple[int, int]:
        start = self.fn.cs.get(regs.ROM_ADDRESS, 4) & ~0x7FF if self.fn.rom_size else 0
        return start, self.fn.rom_size

    def hw_read(self, off: int, size: int) -> int:
        """pci_user_read_config_*()."""
        return self.fn.config_read(off, size)

    def hw_write(self, off: int, size: int, val: int) -> None:
        """pci_user_write_config_*()."""
        self.fn.config_write(off, size, val & ((1 << (8 * size)) - 1))

    def _std_cap(self, cls: type) -> Any:
        return next((c for c in self.fn.caps.std if isinstance(c, cls)), None)

    def _ext_cap(self, cls: type) -> Any:
        return next((c for c in self.fn.caps.ext if isinstance(c, cls)), None)

    @property
    def _pm(self) -> PmCap | None:
        return self._std_cap(PmCap)

    # ------------------------------------------------------------------ registration
    def register(self) -> None:
        """vfio_pci_core_register_device()."""
        if self.fn.header_type != regs.HEADER_TYPE_NORMAL:
            self.unregister()
            raise UapiError(errno.EINVAL, f"{self.name}: not a type 0 function")
        sriov = self._ext_cap(SriovCap)
        if sriov is not None and sriov.num_vfs() and sriov.vf_enabled():
            self.unregister()
            raise UapiError(errno.EBUSY, "Cannot bind to PF with SR-IOV enabled")
        if self.is_virtfn:  # vfio_pci_vf_init(): the PF, if it enabled its VFs through vfio-pci
            self.sriov_pf_core_dev = (_PF_REGISTRY.get(self.pf_fn) if self.pf_fn is not None else None)
        elif sriov is not None:
            self.vf_token = VfToken()
        pm = self._pm
        if pm is not None:  # vfio_pci_probe_power_state()
            self.needs_pm_restore = not self.hw_read(pm.offset + pm_regs.PMCSR, 2) & pm_regs.CTRL_NO_SOFT_RESET
        self.set_power_state(PCI_D0)
        super().register()

    def unregister(self) -> None:
        """vfio_pci_core_unregister_device(): SR-IOV off first."""
        if self.registered and self._ext_cap(SriovCap) is not None and not self.is_virtfn:
            self.sriov_configure(0)
        super().unregister()

    # ------------------------------------------------------------------ power
    def set_power_state(self, state: int) -> None:
        """vfio_pci_set_power_state(): PFs with VFs stay in D0 (EBUSY); NoSoftRst- devices get their
        state saved before D3hot and restored on the way back."""
        if state > PCI_D0 and self.sriov_active:
            raise UapiError(errno.EBUSY, "SR-IOV VFs are enabled")
        needs_save = needs_restore = False
        if self.needs_pm_restore:
            if self.current_state < PCI_D3HOT <= state:
                needs_save = True
                saved = self.save_state()
            if self.current_state >= PCI_D3HOT and state <= PCI_D0:
                needs_restore = True
        self._pci_set_power_state(state)
        if needs_save and self.current_state >= PCI_D3HOT:
            self.pm_save = saved
        elif needs_restore and self.pm_save is not None:
            self.restore_state(self.pm_save)
            self.pm_save = None

    def _pci_set_power_state(self, state: int) -> None:
        """pci_set_power_state(): PMCSR state (D0/D3hot; D1/D2 only when supported)."""
        pm = self._pm
        if pm is None:
            self.current_state = PCI_D0
            return
        if state in (1, 2) and not (pm.d1 if state == 1 else pm.d2):
            return
        o = pm.offset + pm_regs.PMCSR
        csr = self.hw_read(o, 2)
        self.hw_write(o, 2, (csr & ~pm_regs.CTRL_STATE & ~pm_regs.CTRL_PME_STATUS) | state)
        self.current_state = self.hw_read(o, 2) & pm_regs.CTRL_STATE

    def memory_enabled_now(self) -> bool:
        """__vfio_pci_memory_enabled()."""
        if self.config is None:
            return False
        cmd = int.from_bytes(self.config.vconfig[regs.COMMAND:regs.COMMAND + 2], "little")
        return self.current_state < PCI_D3HOT and (self.no_command_memory or bool(cmd & regs.COMMAND_MEMORY))

    @contextmanager
    def memory_enabled(self) -> Iterator[None]:
        """vfio_pci_memory_lock_and_enable() / _unlock_and_restore(): Memory Space on for host accesses."""
        cmd = self.hw_read(regs.COMMAND, 2)
        if not cmd & regs.COMMAND_MEMORY:
            self.hw_write(regs.COMMAND, 2, cmd | regs.COMMAND_MEMORY)
        try:
            yield
        finally:
            self.hw_write(regs.COMMAND, 2, cmd)

    def zap_bars(self) -> None:
        """vfio_pci_zap_bars(): the kernel revokes user mappings; the model counts it (see module doc)."""
        self.zaps += 1

    # ------------------------------------------------------------------ runtime PM
    def _runtime_suspend(self) -> None:
        """vfio_pci_core_runtime_suspend() + the PCI core putting the idle device in D3hot."""
        self.set_power_state(PCI_D0)
        self.pm_intx_masked = self.irqs.is_intx() and self.irqs.intx_mask()
        self._pci_set_power_state(PCI_D3HOT)
        self.runtime_suspended = True

    def _runtime_resume(self) -> None:
        """The PCI core back to D0 + vfio_pci_core_runtime_resume()."""
        self.runtime_suspended = False
        self._pci_set_power_state(PCI_D0)
        if self.pm_wake is not None:
            self.pm_wake.signal()
            self._pm_exit_locked()
        if self.pm_intx_masked:
            self.irqs.intx_unmask()

    def pm_get(self) -> None:
        """pm_runtime_resume_and_get() around every access."""
        if self.runtime_suspended:
            self._runtime_resume()

    def pm_put(self) -> None:
        """pm_runtime_put(): an engaged device idles back into low power."""
        if self.pm_runtime_engaged and not self.runtime_suspended and not self.disable_idle_d3:
            self._runtime_suspend()

    runtime_get = pm_get
    runtime_put = pm_put

    def _pm_entry(self, wake: EventfdCtx | None) -> None:
        """vfio_pci_runtime_pm_entry(): EINVAL when already engaged."""
        self.zap_bars()
        if self.pm_runtime_engaged:
            raise UapiError(errno.EINVAL, "low power is already engaged")
        self.pm_runtime_engaged = True
        self.pm_wake = wake

    def _pm_exit_locked(self) -> None:
        """__vfio_pci_runtime_pm_exit()."""
        if self.pm_runtime_engaged:
            self.pm_runtime_engaged = False
            if self.pm_wake is not None:
                self.pm_wake.put()
                self.pm_wake = None

    # ------------------------------------------------------------------ open / close
    def open_device(self) -> None:
        """vfio_pci_open_device(): vfio_pci_core_enable() + vfio_pci_core_finish_enable()."""
        self.pm_get()
        self.hw_write(regs.COMMAND, 2, self.hw_read(regs.COMMAND, 2) & ~regs.COMMAND_MASTER)  # pci_clear_master
        self._pci_enable_device()
        self.reset_works = self.try_reset_function() == 0
        self.pci_saved_state = self.save_state()
        if not self.nointxmask:
            if self.vendor == 0x8086 and self.device_id in _NOINTX_INTEL:  # vfio_pci_nointx()
                self.irqs.nointx = True
                self.irqs.pci_intx(False)
            else:
                self.irqs.pci_2_3 = self._intx_mask_works()
        cmd = self.hw_read(regs.COMMAND, 2)
        if self.irqs.pci_2_3 and cmd & regs.COMMAND_INTX_DISABLE:
            self.hw_write(regs.COMMAND, 2, cmd & ~regs.COMMAND_INTX_DISABLE)
        self.config = VfioPciConfig(self)
        xcap = self.device.irq.msix_cap
        if xcap is not None:
            self.msix_bar = xcap.table_bar
            self.msix_offset = xcap.table_offset
            self.msix_size = xcap.table_size * msix_regs.ENTRY_SIZE
            self.has_dyn_msix = self.dyn_msix_capable
        else:
            self.msix_bar, self.has_dyn_msix = 0xFF, False
        self._probe_mmaps()
        if self.sriov_pf_core_dev is not None and self.sriov_pf_core_dev.vf_token is not None:
            self.sriov_pf_core_dev.vf_token.users += 1
        self.device.attach_sink(self.irqs.sink)

    def _pci_enable_device(self) -> None:
        """pci_enable_device(): decode the BAR types the function has."""
        cmd = self.hw_read(regs.COMMAND, 2)
        for bar in self.fn.bars:
            cmd |= regs.COMMAND_IO if bar.kind == "io" else regs.COMMAND_MEMORY
        if self.fn.rom_size:
            cmd |= regs.COMMAND_MEMORY
        self.hw_write(regs.COMMAND, 2, cmd)

    def _intx_mask_works(self) -> bool:
        """!broken_intx_masking: Interrupt Disable toggles (drivers/pci/probe.c pci_intx_mask_broken)."""
        cmd = self.hw_read(regs.COMMAND, 2)
        self.hw_write(regs.COMMAND, 2, cmd ^ regs.COMMAND_INTX_DISABLE)
        ok = (self.hw_read(regs.COMMAND, 2) ^ cmd) & regs.COMMAND_INTX_DISABLE != 0
        self.hw_write(regs.COMMAND, 2, cmd)
        return ok

    def _probe_mmaps(self) -> None:
        """vfio_pci_probe_mmaps() (+ the model's rule: a BAR maps only where the device keeps RAM)."""
        for i in range(6):
            start, size, kind, _ = self.resource(i)
            ok = kind not in ("io", "none") and size > 0 and (size >= PAGE_SIZE or start % PAGE_SIZE == 0)
            dbar = self.device.bars.get(i)
            self.bar_mmap_supported[i] = ok and dbar is not None and bool(dbar.mmap_areas())

    def close_device(self) -> None:
        """vfio_pci_core_close_device()."""
        if self.sriov_pf_core_dev is not None and self.sriov_pf_core_dev.vf_token is not None:
            self.sriov_pf_core_dev.vf_token.users -= 1
        self._core_disable()
        self.irqs.release_err_req()

    def _core_disable(self) -> None:
        """vfio_pci_core_disable()."""
        self._pm_exit_locked()
        self.pm_get()
        self.set_power_state(PCI_D0)
        self.hw_write(regs.COMMAND, 2, self.hw_read(regs.COMMAND, 2) & ~regs.COMMAND_MASTER)
        self.irqs.disable()
        for *_, ev in self.ioeventfds:
            ev.put()
        self.ioeventfds = []
        self.config = None
        self.needs_reset = True
        saved, self.pci_saved_state = self.pci_saved_state, None
        if saved is not None:
            # pci_load_and_free_saved_state(); INTx and MSI off; reset; pci_restore_state()
            self.hw_write(regs.COMMAND, 2, regs.COMMAND_INTX_DISABLE)
            if self.reset_works and self._reset_locked() == 0:
                self.needs_reset = False
            self.restore_state(saved)
        # pci_disable_device(): bus mastering off
        self.hw_write(regs.COMMAND, 2, self.hw_read(regs.COMMAND, 2) & ~regs.COMMAND_MASTER)
        self._dev_set_try_reset()

    # ------------------------------------------------------------------ saved state (drivers/pci/pci.c)
    def save_state(self) -> dict[str, Any]:
        """pci_save_state(): header, PCI Express control registers, MSI/MSI-X, ATS/PRI/PASID control."""
        st: dict[str, Any] = {"hdr": [self.hw_read(4 * i, 4) for i in range(16)]}
        e = self.fn.express_offset
        if e is not None:
            st["exp"] = {o: self.hw_read(e + o, 2) for o in (X.DEVCTL, X.LNKCTL, X.DEVCTL2, X.LNKCTL2)}
        msi = self.device.irq.msi_cap
        if msi is not None:
            st["msi"] = bytes(self.hw_read(msi.offset + i, 1) for i in range(msi.length()))
        xcap = self.device.irq.msix_cap
        if xcap is not None:
            st["msix_flags"] = self.hw_read(xcap.offset + msix_regs.FLAGS, 2)
            st["msix_table"] = self.device.read_bar(xcap.table_bar, xcap.table_offset, xcap.table_size * 16)
        for cls, offs in ((AtsCap, (AtsCap.CTRL,)), (PriCap, (PriCap.ALLOC_REQ, PriCap.CTRL)),
                          (PasidCap, (PasidCap.CTRL,))):
            c = self._ext_cap(cls)
            if c is not None:
                st[cls.__name__] = [(c.offset + o, 4 if o == PriCap.ALLOC_REQ and cls is PriCap else 2,
                                     self.hw_read(c.offset + o, 4 if o == PriCap.ALLOC_REQ and cls is PriCap else 2))
                                    for o in offs]
        return st

    def restore_state(self, st: dict[str, Any]) -> None:
        """pci_restore_state(): PCIe control, ATS/PRI/PASID, then the header top-down, then MSI/MSI-X."""
        e = self.fn.express_offset
        if e is not None and "exp" in st:
            for o, v in st["exp"].items():
                self.hw_write(e + o, 2, v)
        for cls in (PasidCap, PriCap, AtsCap):
            for off, size, v in st.get(cls.__name__, []):
                self.hw_write(off, size, v)
        for i in range(15, -1, -1):  # pci_restore_config_space(): only dwords that changed
            if self.hw_read(4 * i, 4) != st["hdr"][i]:
                self.hw_write(4 * i, 4, st["hdr"][i])
        sriov = self._ext_cap(SriovCap)
        if sriov is not None and not self.hw_read(sriov.offset + SriovCap.CTRL, 2) & SriovCap.CTRL_VFE:
            # sriov_restore_state(): from the kernel's own iov->num_VFs / iov->ctrl, not the snapshot
            self.hw_write(sriov.offset + SriovCap.NUM_VFS, 2, self.iov_num_vfs)
            self.hw_write(sriov.offset + SriovCap.CTRL, 2, self.iov_ctrl)
        msi = self.device.irq.msi_cap
        if msi is not None and "msi" in st:
            for i in range(2, len(st["msi"])):
                self.hw_write(msi.offset + i, 1, st["msi"][i])
        xcap = self.device.irq.msix_cap
        if xcap is not None and "msix_table" in st:
            o = xcap.offset + msix_regs.FLAGS
            self.hw_write(o, 2, st["msix_flags"] | msix_regs.FLAGS_ENABLE | msix_regs.FLAGS_MASKALL)
            self.device.write_bar(xcap.table_bar, xcap.table_offset, st["msix_table"])
            self.hw_write(o, 2, st["msix_flags"])

    # ------------------------------------------------------------------ reset methods (drivers/pci/pci.c)
    def _reset_methods(self) -> list[str]:
        """pci_init_reset_methods(): what pci_reset_fn_methods[] probes true for."""
        out = []
        e = self.fn.express_offset
        if e is not None and self.hw_read(e + X.DEVCAP, 4) & X.DEVCAP_FLR:
            out.append("flr")
        pm = self._pm
        if pm is not None and not self.hw_read(pm.offset + pm_regs.PMCSR, 2) & pm_regs.CTRL_NO_SOFT_RESET:
            out.append("pm")
        if self._parent_bus_reset_possible():
            out.append("bus")
        return out

    def _parent_bus_reset_possible(self) -> bool:
        """pci_parent_bus_reset() probe: not on a root bus, alone on its bus, below a bridge."""
        bus = self.fn.bus
        if bus is None or bus.bridge is None or self.fn.is_bridge or self.is_virtfn:
            return False
        return list(bus.functions()) == [self.fn]

    def _reset_locked(self) -> int:
        """__pci_reset_function_locked(): the first method that works; -ENOTTY when none applies."""
        for m in self._reset_methods():
            if m == "flr":
                e = self.fn.express_offset
                assert e is not None
                self.hw_write(e + X.DEVCTL, 2, self.hw_read(e + X.DEVCTL, 2) | X.DEVCTL_BCR_FLR)
                return 0
            if m == "pm":
                if self.current_state != PCI_D0:
                    return -errno.EINVAL
                pm = self._pm
                assert pm is not None
                o = pm.offset + pm_regs.PMCSR
                csr = self.hw_read(o, 2) & ~pm_regs.CTRL_STATE
                self.hw_write(o, 2, csr | PCI_D3HOT)
                self.hw_write(o, 2, csr | PCI_D0)
                return 0
            if m == "bus":
                bus = self.fn.bus
                assert bus is not None and bus.bridge is not None
                self._secondary_bus_reset(bus.bridge)
                return 0
        return -errno.ENOTTY

    @staticmethod
    def _secondary_bus_reset(bridge: PciBridge) -> None:
        """pci_reset_secondary_bus(): pulse Secondary Bus Reset."""
        ctl = bridge.config_read(regs.BRIDGE_CONTROL, 2)
        bridge.config_write(regs.BRIDGE_CONTROL, 2, ctl | regs.BRIDGE_CTL_BUS_RESET)
        bridge.config_write(regs.BRIDGE_CONTROL, 2, ctl & ~regs.BRIDGE_CTL_BUS_RESET)

    def try_reset_function(self) -> int:
        """pci_try_reset_function(): -ENOTTY without a method; state saved, INTx off, reset, restored."""
        if not self._reset_methods():
            return -errno.ENOTTY
        st = self.save_state()
        self.hw_write(regs.COMMAND, 2, regs.COMMAND_INTX_DISABLE)  # pci_dev_save_and_disable()
        rc = self._reset_locked()
        self.restore_state(st)
        return rc

    # ------------------------------------------------------------------ slot / bus reset topology
    def _bus_reset_probe(self) -> bool:
        """pci_probe_reset_bus(): a bridge above, nothing below refusing bus reset."""
        bus = self.fn.bus
        return bus is not None and bus.bridge is not None and not self.is_virtfn

    def _affected(self) -> list[PciFunction]:
        """vfio_pci_for_each_slot_or_bus() over the bus: every function on it and below."""
        bus = self.fn.bus
        assert bus is not None
        return list(bus.walk())

    def _dev_set_resettable(self) -> bool:
        """vfio_pci_dev_set_resettable(): bus reset possible and every affected function in the set."""
        if not self._bus_reset_probe():
            return False
        members = {id(d.fn) for d in self.dev_set.devices if isinstance(d, VfioPciCoreDevice)}
        return all(id(f) in members for f in self._affected())

    def _pci_reset_bus(self) -> int:
        """pci_reset_bus() -> pci_bus_reset(): save every function, pulse SBR, restore them."""
        bus = self.fn.bus
        assert bus is not None and bus.bridge is not None
        members = [d for d in self.dev_set.devices if isinstance(d, VfioPciCoreDevice)]
        saved = [(d, d.save_state()) for d in members]
        self._secondary_bus_reset(bus.bridge)
        for d, st in saved:
            d.restore_state(st)
        return 0

    def _dev_set_try_reset(self) -> None:
        """vfio_pci_dev_set_try_reset(): when nothing in the set is open and some device needs a reset."""
        members = [d for d in self.dev_set.devices if isinstance(d, VfioPciCoreDevice)]
        if self.dev_set.open_count() > 1 or not any(d.needs_reset for d in members):
            return
        if not self._dev_set_resettable():
            return
        if self._pci_reset_bus() == 0:
            for d in members:
                d.needs_reset = False

    # ------------------------------------------------------------------ ioctls
    def ioctl(self, df: VfioDeviceFile, cmd: int, ubuf: UserBuffer | None) -> int:
        """vfio_pci_core_ioctl() (wrapped by the runtime-PM get/put of vfio_device_fops_unl_ioctl)."""
        handlers = {U.VFIO_DEVICE_GET_INFO: self._get_info, U.VFIO_DEVICE_GET_IRQ_INFO: self._get_irq_info,
                    U.VFIO_DEVICE_GET_PCI_HOT_RESET_INFO: lambda b: self._hot_reset_info(df, b),
                    U.VFIO_DEVICE_IOEVENTFD: self._ioeventfd,
                    U.VFIO_DEVICE_PCI_HOT_RESET: lambda b: self._hot_reset(df, b),
                    U.VFIO_DEVICE_RESET: self._reset_ioctl, U.VFIO_DEVICE_SET_IRQS: self._set_irqs}
        handler = handlers.get(cmd)
        if handler is None:
            raise UapiError(errno.ENOTTY, f"ioctl {cmd:#x} is not a vfio-pci ioctl")
        try:
            if cmd == U.VFIO_DEVICE_RESET:
                return self._reset_ioctl(ubuf)
            if ubuf is None:
                raise UapiError(errno.EFAULT, "NULL argument")
            return handler(ubuf)
        finally:
            self.service()

    def _get_info(self, ubuf: UserBuffer) -> int:
        """vfio_pci_ioctl_get_info()."""
        st = U.vfio_device_info
        minsz = st.offsetofend("num_irqs")
        info = st.unpack(ubuf.read(0, minsz) + bytes(st.size - minsz))
        if info["argsz"] < minsz:
            raise UapiError(errno.EINVAL, f"argsz {info['argsz']} < {minsz}")
        n = min(info["argsz"], st.size)
        info.update(flags=U.VFIO_DEVICE_FLAGS_PCI | (U.VFIO_DEVICE_FLAGS_RESET if self.reset_works else 0),
                    num_regions=U.VFIO_PCI_NUM_REGIONS, num_irqs=U.VFIO_PCI_NUM_IRQS, cap_offset=0, pad=0)
        caps = VfioInfoCap()
        self._atomic_cap(caps)
        if caps.size:
            info["flags"] |= U.VFIO_DEVICE_FLAGS_CAPS
            if info["argsz"] < st.size + caps.size:
                info["argsz"] = st.size + caps.size
            else:
                ubuf.write(st.size, caps.shifted(st.size))
                info["cap_offset"] = st.size
        ubuf.write(0, st.pack(info)[:n])
        return 0

    def _atomic_cap(self, caps: VfioInfoCap) -> None:
        """vfio_pci_info_atomic_cap(): the completer sizes AtomicOps can reach the root port with."""
        fn = self.pf_fn or self.fn
        e = fn.express_offset
        if e is None:
            return
        devcap2 = fn.config_read(e + X.DEVCAP2, 4)
        flags = 0
        for bit, out in ((X.DEVCAP2_ATOMIC_COMP32, U.VFIO_PCI_ATOMIC_COMP32),
                         (X.DEVCAP2_ATOMIC_COMP64, U.VFIO_PCI_ATOMIC_COMP64),
                         (X.DEVCAP2_ATOMIC_COMP128, U.VFIO_PCI_ATOMIC_COMP128)):
            if devcap2 & bit and _atomic_ops_to_root(fn, bit):
                flags |= out
        if flags:
            caps.add(U.VFIO_DEVICE_INFO_CAP_PCI_ATOMIC_COMP, 1, struct.pack("<II", flags, 0))

    def get_region_info_caps(self, info: dict[str, int], caps: VfioInfoCap) -> None:
        """vfio_pci_ioctl_get_region_info()."""
        index = info["index"]
        info["offset"] = U.vfio_pci_index_to_offset(index)
        if index == U.VFIO_PCI_CONFIG_REGION_INDEX:
            info["size"] = self.cfg_size
            info["flags"] = U.VFIO_REGION_INFO_FLAG_READ | U.VFIO_REGION_INFO_FLAG_WRITE
        elif index <= U.VFIO_PCI_BAR5_REGION_INDEX:
            _, size, _kind, _ = self.resource(index)
            info["size"] = size
            if not size:
                info["flags"] = 0
                return
            info["flags"] = U.VFIO_REGION_INFO_FLAG_READ | U.VFIO_REGION_INFO_FLAG_WRITE
            if self.bar_mmap_supported[index]:
                info["flags"] |= U.VFIO_REGION_INFO_FLAG_MMAP
                dbar = self.device.bar(index)
                if not dbar.fully_mappable:
                    areas = dbar.mmap_areas()
                    payload = struct.pack("<II", len(areas), 0) + b"".join(struct.pack("<QQ", o, n) for o, n in areas)
                    caps.add(U.VFIO_REGION_INFO_CAP_SPARSE_MMAP, 1, payload)
                if index == self.msix_bar:
                    caps.add(U.VFIO_REGION_INFO_CAP_MSIX_MAPPABLE, 1)
        elif index == U.VFIO_PCI_ROM_REGION_INDEX:
            # A ROM BAR with no valid image (the model's functions carry none): pci_map_rom() fails.
            info["flags"] = 0
            info["size"] = 0
        elif index == U.VFIO_PCI_VGA_REGION_INDEX:
            raise UapiError(errno.EINVAL, "the device has no VGA region")
        else:
            raise UapiError(errno.EINVAL, f"region index {index} >= {U.VFIO_PCI_NUM_REGIONS}")

    def _get_irq_info(self, ubuf: UserBuffer) -> int:
        """vfio_pci_ioctl_get_irq_info()."""
        st = U.vfio_irq_info
        info = st.unpack(ubuf.read(0, st.size))
        index = info["index"]
        if info["argsz"] < st.size or index >= U.VFIO_PCI_NUM_IRQS:
            raise UapiError(errno.EINVAL, f"argsz {info['argsz']} / index {index}")
        if index == U.VFIO_PCI_ERR_IRQ_INDEX and not self.is_pcie:
            raise UapiError(errno.EINVAL, "ERR index needs a PCI Express device")
        flags = U.VFIO_IRQ_INFO_EVENTFD
        if index == U.VFIO_PCI_INTX_IRQ_INDEX:
            flags |= U.VFIO_IRQ_INFO_MASKABLE | U.VFIO_IRQ_INFO_AUTOMASKED
        elif index != U.VFIO_PCI_MSIX_IRQ_INDEX or not self.has_dyn_msix:
            flags |= U.VFIO_IRQ_INFO_NORESIZE
        info.update(flags=flags, count=self.irq_count(index))
        ubuf.write(0, st.pack(info))
        return 0

    def irq_count(self, index: int) -> int:
        """vfio_pci_get_irq_count()."""
        if index == U.VFIO_PCI_INTX_IRQ_INDEX:
            return 1 if self.config is not None and self.config.vconfig[regs.INTERRUPT_PIN] else 0
        if index == U.VFIO_PCI_MSI_IRQ_INDEX:
            cap = self.device.irq.msi_cap
            if cap is not None:
                return 1 << ((self.hw_read(cap.offset + msi_regs.FLAGS, 2) & msi_regs.FLAGS_QMASK) >> 1)
            return 0
        if index == U.VFIO_PCI_MSIX_IRQ_INDEX:
            xcap = self.device.irq.msix_cap
            return (self.hw_read(xcap.offset + msix_regs.FLAGS, 2) & msix_regs.FLAGS_QSIZE) + 1 if xcap else 0
        if index == U.VFIO_PCI_ERR_IRQ_INDEX:
            return 1 if self.is_pcie else 0
        if index == U.VFIO_PCI_REQ_IRQ_INDEX:
            return 1
        return 0

    def _set_irqs(self, ubuf: UserBuffer) -> int:
        """vfio_pci_ioctl_set_irqs()."""
        st = U.vfio_irq_set
        hdr = st.unpack(ubuf.read(0, st.size))
        size = set_irqs_validate_and_prepare(hdr, self.irq_count(hdr["index"]), U.VFIO_PCI_NUM_IRQS)
        data = ubuf.read(st.size, size) if size else b""
        return self.irqs.set_irqs(hdr["flags"], hdr["index"], hdr["start"], hdr["count"], data)

    def _reset_ioctl(self, ubuf: UserBuffer | None) -> int:
        """vfio_pci_ioctl_reset(): EINVAL unless a reset method worked at open."""
        if not self.reset_works:
            raise UapiError(errno.EINVAL, "the device cannot be reset")
        self.zap_bars()
        self.set_power_state(PCI_D0)
        rc = self.try_reset_function()
        if self.mig is not None:
            self.mig.reset()
        if rc < 0:
            raise UapiError(-rc, "reset failed")
        return 0

    def _hot_reset_info(self, df: VfioDeviceFile, ubuf: UserBuffer) -> int:
        """vfio_pci_ioctl_get_pci_hot_reset_info()."""
        st, dep = U.vfio_pci_hot_reset_info, U.vfio_pci_dependent_device
        hdr = st.unpack(ubuf.read(0, st.size))
        if hdr["argsz"] < st.size:
            raise UapiError(errno.EINVAL, f"argsz {hdr['argsz']} < {st.size}")
        hdr["flags"] = 0
        if not self._bus_reset_probe():
            raise UapiError(errno.ENODEV, "neither slot nor bus reset is possible")
        affected = self._affected()
        count = len(affected)
        if count > (hdr["argsz"] - st.size) // dep.size:
            hdr["count"] = count
            ubuf.write(0, st.pack(hdr))
            raise UapiError(errno.ENOSPC, f"{count} devices do not fit argsz {hdr['argsz']}")
        flags = 0
        if self.cdev_opened:
            flags = U.VFIO_PCI_HOT_RESET_FLAG_DEV_ID | U.VFIO_PCI_HOT_RESET_FLAG_DEV_ID_OWNED
        ictx = self.iommufd_device.ictx if self.iommufd_device is not None else None
        out = bytearray()
        for fn in affected:
            seg = fn.bus.complex.segment if fn.bus is not None else 0
            busnr = _bus_number(fn)
            if flags & U.VFIO_PCI_HOT_RESET_FLAG_DEV_ID:
                vdev = next((d for d in self.dev_set.devices if getattr(d, "fn", None) is fn), None)
                if vdev is None:
                    devid = 0xFFFF_FFFF
                else:
                    i = cdev.get_dev_id(vdev, ictx)
                    devid = i if i > 0 else U.VFIO_PCI_DEVID_OWNED if i == -errno.ENOENT else 0xFFFF_FFFF
                if devid == 0xFFFF_FFFF:
                    flags &= ~U.VFIO_PCI_HOT_RESET_FLAG_DEV_ID_OWNED
            else:
                grp = _iommu_group_of(fn, self.dev_set.devices)
                if grp is None:
                    raise UapiError(errno.EPERM, "cannot reset a function without an IOMMU group")
                devid = grp
            out += dep.pack(devid=devid, segment=seg, bus=busnr, devfn=fn.devfn)
        ubuf.write(st.size, bytes(out))
        hdr.update(count=count, flags=flags)
        ubuf.write(0, st.pack(hdr))
        return 0

    def _hot_reset(self, df: VfioDeviceFile, ubuf: UserBuffer) -> int:
        """vfio_pci_ioctl_pci_hot_reset(): cdev files pass an empty group list and need every affected
        device owned by their iommufd; group files pass group fds covering every affected device."""
        st = U.vfio_pci_hot_reset
        hdr = st.unpack(ubuf.read(0, st.size))
        if hdr["argsz"] < st.size or hdr["flags"]:
            raise UapiError(errno.EINVAL, f"argsz {hdr['argsz']} / flags {hdr['flags']:#x}")
        if bool(hdr["count"]) == self.cdev_opened:
            raise UapiError(errno.EINVAL, "a zero-length group array is for cdev-opened devices only")
        if not self._bus_reset_probe():
            raise UapiError(errno.ENODEV, "neither slot nor bus reset is possible")
        groups: list[Any] | None = None
        ictx = None
        if hdr["count"]:
            if hdr["count"] > len(self._affected()):
                raise UapiError(errno.EINVAL, f"{hdr['count']} group fds for {len(self._affected())} devices")
            fds = struct.unpack(f"<{hdr['count']}i", ubuf.read(st.size, 4 * hdr["count"]))
            groups = []
            for fd in fds:
                f = df.task.fds.get(fd)
                if f is None:
                    raise UapiError(errno.EBADF, f"fd {fd} is not open")
                if not isinstance(f, VfioGroupFile):  # vfio_file_is_group()
                    raise UapiError(errno.EINVAL, f"fd {fd} is not a VFIO group")
                groups.append(f)
        else:
            ictx = self.iommufd_device.ictx if self.iommufd_device is not None else None
        return self._dev_set_hot_reset(groups, ictx)

    def _dev_set_hot_reset(self, groups: list[Any] | None, ictx: Iommufd | None) -> int:
        """vfio_pci_dev_set_hot_reset()."""
        if not self._dev_set_resettable():
            raise UapiError(errno.EINVAL, "a function the bus reset affects is not in this device set")
        members = [d for d in self.dev_set.devices if isinstance(d, VfioPciCoreDevice)]
        for d in members:
            if ictx is not None:
                i = cdev.get_dev_id(d, ictx)
                owned = i > 0 or i == -errno.ENOENT
            else:
                owned = any(g.group is d.group for g in groups or [])  # vfio_file_has_dev()
            if not owned:
                raise UapiError(errno.EINVAL, f"{d.name} is not owned by the caller")
            d.zap_bars()
        for d in members:
            d.set_power_state(PCI_D0)
        return self._pci_reset_bus()

    def _ioeventfd(self, ubuf: UserBuffer) -> int:
        """vfio_pci_ioctl_ioeventfd() + vfio_pci_ioeventfd()."""
        st = U.vfio_device_ioeventfd
        minsz = st.offsetofend("fd")
        io = st.unpack(ubuf.read(0, minsz) + bytes(st.size - minsz))
        if io["argsz"] < minsz or io["flags"] & ~U.VFIO_DEVICE_IOEVENTFD_SIZE_MASK:
            raise UapiError(errno.EINVAL, f"argsz {io['argsz']} / flags {io['flags']:#x}")
        count = io["flags"] & U.VFIO_DEVICE_IOEVENTFD_SIZE_MASK
        if (count).bit_count() != 1 or io["fd"] < -1:
            raise UapiError(errno.EINVAL, "exactly one size flag and fd >= -1")
        offset, data, fd = io["offset"], io["data"], io["fd"]
        bar, pos = U.vfio_pci_offset_to_index(offset), offset & U.VFIO_PCI_OFFSET_MASK
        if bar > U.VFIO_PCI_BAR5_REGION_INDEX or pos + count > self.resource(bar)[1]:
            raise UapiError(errno.EINVAL, "ioeventfds go into BARs only")
        if bar == self.msix_bar and not (pos + count <= self.msix_offset or pos >= self.msix_offset + self.msix_size):
            raise UapiError(errno.EINVAL, "no ioeventfd over the MSI-X table")
        if count == 8:
            raise UapiError(errno.EINVAL, "8-byte ioeventfds are not supported")
        for i, (b, p, d, c, ev) in enumerate(self.ioeventfds):
            if (b, p, d, c) == (bar, pos, data, count):
                if fd == -1:
                    ev.put()
                    del self.ioeventfds[i]
                    return 0
                raise UapiError(errno.EEXIST, "this ioeventfd exists")
        if fd < 0:
            raise UapiError(errno.ENODEV, "no such ioeventfd to remove")
        if len(self.ioeventfds) >= VFIO_PCI_IOEVENTFD_MAX:
            raise UapiError(errno.ENOSPC, "too many ioeventfds")
        ev = EventfdCtx.fdget(fd)
        self.ioeventfds.append((bar, pos, data, count, ev))
        return 0

    def poll_ioeventfds(self) -> None:
        """vfio_pci_ioeventfd_handler(): a signalled ioeventfd performs its write (if memory is on)."""
        for bar, pos, data, count, ev in self.ioeventfds:
            if ev.take() and self.memory_enabled_now():
                self.device.bar_write(bar, pos, count, data)
                self.device.after_access()

    # ------------------------------------------------------------------ features
    def device_feature(self, df: VfioDeviceFile, flags: int, data: FeatureData, argsz: int) -> int:
        """vfio_pci_core_ioctl_feature()."""
        feature = flags & U.VFIO_DEVICE_FEATURE_MASK
        if feature == U.VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY:
            if check_feature(flags, argsz, U.VFIO_DEVICE_FEATURE_SET, 0):
                self._pm_entry(None)  # the ioctl's own pm_runtime_put() then suspends the device
            return 0
        if feature == U.VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP:
            st = U.vfio_device_low_power_entry_with_wakeup
            if not check_feature(flags, argsz, U.VFIO_DEVICE_FEATURE_SET, st.size):
                return 0
            entry = st.unpack(data.read(0, st.size))
            if entry["wakeup_eventfd"] < 0:
                raise UapiError(errno.EINVAL, "wakeup_eventfd < 0")
            ev = EventfdCtx.fdget(entry["wakeup_eventfd"])
            try:
                self._pm_entry(ev)
            except UapiError:
                ev.put()
                raise
            return 0
        if feature == U.VFIO_DEVICE_FEATURE_LOW_POWER_EXIT:
            if check_feature(flags, argsz, U.VFIO_DEVICE_FEATURE_SET, 0):
                self._pm_exit_locked()  # a wake-up eventfd was already signalled by the ioctl's resume
            return 0
        if feature == U.VFIO_DEVICE_FEATURE_PCI_VF_TOKEN:
            if self.vf_token is None:
                raise UapiError(errno.ENOTTY, "not an SR-IOV PF")
            if check_feature(flags, argsz, U.VFIO_DEVICE_FEATURE_SET, U.UUID_SIZE):
                self.vf_token.uuid = data.read(0, U.UUID_SIZE)
            return 0
        raise UapiError(errno.ENOTTY, f"feature {feature} is not a vfio-pci feature")

    # ------------------------------------------------------------------ VF token
    @property
    def pci_name(self) -> str:
        """pci_name(): dddd:bb:dd.f."""
        seg = self.fn.bus.complex.segment if self.fn.bus is not None else 0
        return regs.bdf_str(seg, _bus_number(self.fn), max(self.fn.devfn, 0))

    def match(self, buf: str) -> int:
        """vfio_pci_core_match(): VFIO_GROUP_GET_DEVICE_FD's name is the PCI name, optionally followed by
        " vf_token=<uuid>"; 1 for a match, 0 for none, a negative errno for a bad option or token."""
        import uuid as uuidlib
        name = self.pci_name
        if not buf.startswith(name):
            return 0
        rest = buf[len(name):]
        token: bytes | None = None
        if rest:
            if rest[0] != " ":
                return 0
            for opt in rest.split(" "):
                if not opt:
                    continue
                if token is None and opt.startswith("vf_token="):
                    try:
                        token = uuidlib.UUID(opt[len("vf_token="):]).bytes
                    except ValueError:
                        return -errno.EINVAL
                else:
                    return -errno.EINVAL
        try:
            self.match_token_uuid(token)
        except UapiError as e:
            return -e.errno
        return 1

    def match_token_uuid(self, uuid: bytes | None) -> None:
        """vfio_pci_core_match_token_uuid()."""
        if self.is_virtfn:
            pf = self.sriov_pf_core_dev
            if pf is None:
                if uuid is not None:
                    raise UapiError(errno.EINVAL, "VF token incorrectly provided, PF not bound to vfio-pci")
                return
            if uuid is None:
                raise UapiError(errno.EACCES, "VF token required to access device")
            assert pf.vf_token is not None
            if uuid != pf.vf_token.uuid:
                raise UapiError(errno.EACCES, "Incorrect VF token provided for device")
        elif self.vf_token is not None:
            if self.vf_token.users:
                if uuid is None:
                    raise UapiError(errno.EACCES, "VF token required to access device")
                if uuid != self.vf_token.uuid:
                    raise UapiError(errno.EACCES, "Incorrect VF token provided for device")
            elif uuid is not None:
                self.vf_token.uuid = uuid
        elif uuid is not None:
            raise UapiError(errno.EINVAL, "VF token incorrectly provided, not a PF or VF")

    def sriov_configure(self, nr_virtfn: int) -> int:
        """vfio_pci_core_sriov_configure(): the PF joins vfio_pci_sriov_pfs (once: EINVAL), goes to D0 and
        enables ``nr_virtfn`` VFs (pci_enable_sriov: NumVFs, VF Enable, VF MSE); 0 disables them."""
        cap = self._ext_cap(SriovCap)
        if cap is None:
            raise UapiError(errno.ENODEV, "not an SR-IOV PF")
        ctrl = cap.offset + SriovCap.CTRL
        if nr_virtfn:
            if _PF_REGISTRY.get(self.fn) is self:
                raise UapiError(errno.EINVAL, "SR-IOV already enabled through this PF")
            _PF_REGISTRY[self.fn] = self
            self.pm_get()
            self.set_power_state(PCI_D0)
            self.sriov_active = True
            if not 0 < nr_virtfn <= self.hw_read(cap.offset + SriovCap.TOTAL_VFS, 2):
                self.sriov_active = False
                del _PF_REGISTRY[self.fn]
                raise UapiError(errno.ERANGE, f"{nr_virtfn} VFs outside TotalVFs")
            self.iov_num_vfs = nr_virtfn
            self.iov_ctrl = self.hw_read(ctrl, 2) | SriovCap.CTRL_VFE | _SRIOV_CTRL_MSE
            self.hw_write(cap.offset + SriovCap.NUM_VFS, 2, nr_virtfn)
            self.hw_write(ctrl, 2, self.iov_ctrl)
            return nr_virtfn
        if self.hw_read(ctrl, 2) & SriovCap.CTRL_VFE:  # pci_num_vf()
            self.iov_ctrl = self.hw_read(ctrl, 2) & ~(SriovCap.CTRL_VFE | _SRIOV_CTRL_MSE)
            self.iov_num_vfs = 0
            self.hw_write(ctrl, 2, self.iov_ctrl)
        self.sriov_active = False
        if _PF_REGISTRY.get(self.fn) is self:
            del _PF_REGISTRY[self.fn]
        return 0

    # ------------------------------------------------------------------ region access
    def read(self, df: VfioDeviceFile, offset: int, count: int) -> bytes:
        """vfio_pci_core_read()."""
        if not count:
            return b""
        out = self._rw(offset, count, None)
        assert isinstance(out, bytes)
        return out

    def write(self, df: VfioDeviceFile, offset: int, data: bytes) -> int:
        """vfio_pci_core_write()."""
        if not data:
            return 0
        out = self._rw(offset, len(data), data)
        assert isinstance(out, int)
        return out

    def _rw(self, offset: int, count: int, data: bytes | None) -> bytes | int:
        """vfio_pci_rw()."""
        index = U.vfio_pci_offset_to_index(offset)
        if index >= U.VFIO_PCI_NUM_REGIONS:
            raise UapiError(errno.EINVAL, f"region {index} does not exist")
        self.pm_get()
        self.service()  # signalled ioeventfds and unmask eventfds act before this access
        try:
            if index == U.VFIO_PCI_CONFIG_REGION_INDEX:
                assert self.config is not None
                return self.config.rw(offset & U.VFIO_PCI_OFFSET_MASK, count, data)
            if index == U.VFIO_PCI_ROM_REGION_INDEX:
                if data is not None:
                    raise UapiError(errno.EINVAL, "the ROM is read only")
                return self._bar_rw(index, offset, count, None)
            if index <= U.VFIO_PCI_BAR5_REGION_INDEX:
                return self._bar_rw(index, offset, count, data)
            raise UapiError(errno.EINVAL, "no VGA region")  # vfio_pci_vga_rw() without VGA
        finally:
            self.service()
            self.pm_put()

    def _bar_rw(self, bar: int, offset: int, count: int, data: bytes | None) -> bytes | int:
        """vfio_pci_bar_rw() + vfio_pci_core_do_io_rw(): aligned accesses up to 8 bytes, the MSI-X table
        reads all ones and drops writes, each access checks Memory Space (EIO when off)."""
        pos = offset & U.VFIO_PCI_OFFSET_MASK
        if bar == U.VFIO_PCI_ROM_REGION_INDEX:
            start, end = self.rom_resource()
            if not start:
                raise UapiError(errno.EINVAL, "no ROM")
            if pos >= end:
                raise UapiError(errno.EINVAL, f"offset {pos:#x} beyond the ROM")
            raise UapiError(errno.ENOMEM, "pci_map_rom(): no valid ROM image")
        start, end, kind, _ = self.resource(bar)
        if not start:
            raise UapiError(errno.EINVAL, f"BAR {bar} is not assigned")
        if pos >= end:
            raise UapiError(errno.EINVAL, f"offset {pos:#x} beyond BAR {bar}")
        count = min(count, end - pos)
        x_start = x_end = 0
        if bar == self.msix_bar:
            x_start, x_end = self.msix_offset, self.msix_offset + self.msix_size
        test_mem = kind != "io"
        dev = self.device
        out = bytearray()
        done = 0
        while done < count:
            off = pos + done
            left = count - done
            if off < x_start:
                fillable = min(left, x_start - off)
            elif off >= x_end:
                fillable = left
            else:
                fillable = 0
            if fillable:
                width = next(w for w in (8, 4, 2, 1) if fillable >= w and off % w == 0)
                if test_mem and not self.memory_enabled_now():
                    raise UapiError(errno.EIO, "Memory Space is disabled")
                if data is None:
                    out += dev.bar_read(bar, off, width).to_bytes(width, "little")
                else:
                    dev.bar_write(bar, off, width, int.from_bytes(data[done:done + width], "little"))
                done += width
            else:
                n = min(left, x_end - off)
                if data is None:
                    out += b"\xff" * n
                done += n
        return bytes(out) if data is None else done

    def mmap(self, df: VfioDeviceFile, offset: int, length: int, shared: bool, writable: bool) -> mmap.mmap:
        """vfio_pci_core_mmap()."""
        index = U.vfio_pci_offset_to_index(offset)
        if index >= U.VFIO_PCI_NUM_REGIONS or length <= 0:
            raise UapiError(errno.EINVAL, f"region {index} / length {length}")
        if not shared:
            raise UapiError(errno.EINVAL, "vfio mappings must be MAP_SHARED")
        if index >= U.VFIO_PCI_ROM_REGION_INDEX:
            raise UapiError(errno.EINVAL, "only BARs can be mapped")
        if not self.bar_mmap_supported[index]:
            raise UapiError(errno.EINVAL, f"BAR {index} cannot be mapped")
        pos = offset & U.VFIO_PCI_OFFSET_MASK
        if pos % PAGE_SIZE:
            raise UapiError(errno.EINVAL, "mmap offset is not page aligned")
        phys_len = -(-self.resource(index)[1] // PAGE_SIZE) * PAGE_SIZE
        if pos + length > phys_len:
            raise UapiError(errno.EINVAL, f"[{pos:#x}, +{length:#x}) beyond BAR {index}")
        try:
            shm, file_off = self.device.bar(index).backing(pos, length)
        except VfiolabError as e:
            raise UapiError(errno.EINVAL, f"{e} (the model maps only RAM areas)") from None
        return shm.map(file_off, length, writable=writable)

    def service(self) -> None:
        """What runs after every access: the device's deferred work, ioeventfds, unmask eventfds."""
        self.poll_ioeventfds()
        self.device.after_access()
        self.irqs.poll()

    # ------------------------------------------------------------------ iommufd (vfio/iommufd.c)
    def bind_iommufd(self, ictx: Iommufd) -> int:
        return cdev.physical_bind(self, ictx)

    def unbind_iommufd(self) -> None:
        cdev.physical_unbind(self)

    def attach_ioas(self, pt_id: int) -> int:
        return cdev.physical_attach_ioas(self, pt_id)

    def detach_ioas(self) -> None:
        cdev.physical_detach_ioas(self)

    def pasid_attach_ioas(self, pasid: int, pt_id: int) -> int:
        return cdev.physical_pasid_attach_ioas(self, pasid, pt_id)

    def pasid_detach_ioas(self, pasid: int) -> None:
        cdev.physical_pasid_detach_ioas(self, pasid)


# ---------------------------------------------------------------------- topology helpers
def _bus_number(fn: PciFunction) -> int:
    """The bus number the host knows the function by (the bridge's secondary, 0 on a root bus)."""
    if fn.is_virtfn:
        return int(getattr(fn, "rid", 0)) >> 8  # a VF may sit on a bus number above its PF's
    bus = fn.bus
    if bus is None or bus.bridge is None:
        return 0
    return bus.bridge.bus_numbers[1]


def _iommu_group_of(fn: PciFunction, devices: list[VfioDevice]) -> int | None:
    for d in devices:
        if getattr(d, "fn", None) is fn and d.iommu_dev is not None and d.iommu_dev.group is not None:
            return d.iommu_dev.group.id
    return None


def _atomic_ops_to_root(fn: PciFunction, cap_mask: int) -> bool:
    """pci_enable_atomic_ops_to_root(): (legacy) endpoints only; every port up to the root port routes
    AtomicOps and the root port completes ``cap_mask``; sets AtomicOp Requester Enable."""
    e = fn.express_offset
    if fn.is_virtfn or e is None:
        return False
    if (fn.config_read(e + X.FLAGS, 2) & X.FLAGS_TYPE) >> 4 not in (X.TYPE_ENDPOINT, X.TYPE_LEG_END):
        return False
    path: list[PciFunction] = []
    bus = fn.bus
    while bus is not None and bus.bridge is not None:
        path.append(bus.bridge)
        bus = bus.parent
    root = next((b for b in path if b.express_offset is not None and
                 (b.config_read(b.express_offset + X.FLAGS, 2) & X.FLAGS_TYPE) >> 4 == X.TYPE_ROOT_PORT), None)
    if root is None:
        return bool(fn.config_read(e + X.DEVCTL2, 2) & X.DEVCTL2_ATOMIC_REQ)
    re = root.express_offset
    assert re is not None
    if root.config_read(re + X.DEVCAP2, 4) & cap_mask != cap_mask:
        return False
    for br in path[:path.index(root)]:
        be = br.express_offset
        if be is None:
            continue
        typ = (br.config_read(be + X.FLAGS, 2) & X.FLAGS_TYPE) >> 4
        if typ == X.TYPE_UPSTREAM and br.config_read(be + X.DEVCTL2, 2) & X.DEVCTL2_ATOMIC_EGRESS_BLOCK:
            return False
        routes = br.config_read(be + X.DEVCAP2, 4) & X.DEVCAP2_ATOMIC_ROUTE
        if typ in (X.TYPE_UPSTREAM, X.TYPE_DOWNSTREAM) and not routes:
            return False
    fn.config_write(e + X.DEVCTL2, 2, fn.config_read(e + X.DEVCTL2, 2) | X.DEVCTL2_ATOMIC_REQ)
    return True


__all__ = ["DeviceMigration", "IommuDmaPort", "VfToken", "VfioPciCoreDevice", "assign_bars", "host_device",
           "make_vfio_pci"]
