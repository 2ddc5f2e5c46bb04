"""vfio-pci interrupts (``drivers/vfio/pci/vfio_pci_intrs.c``): INTx with masking through the device's
Interrupt Disable bit, MSI and MSI-X vectors each signalling a real eventfd (``os.eventfd``), the ERR and
REQ eventfds, mask/unmask/trigger actions with NONE/BOOL/EVENTFD data, loopback triggers, and the
unmask-eventfd (virqfd) of INTx.

The host side of the physical device is modelled too: ``pci_alloc_irq_vectors()`` programs the device's
MSI capability or MSI-X table with host message addresses and data (one host vector number per
interrupt), ``request_irq()`` unmasks an MSI-X entry and ``free_irq()`` masks it, so what reaches the
eventfd is what the device really sent.  :class:`HostIrqSink` is the interrupt sink the device is attached
to; it routes a message by its data value the way an interrupt controller routes a vector.

Unmask eventfds (virqfds) are polled whenever the model runs (every ioctl, region access and interrupt),
standing in for the kernel's wait-queue callback.
"""

from __future__ import annotations

import errno
import itertools
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from vfiolab.errors import UapiError
from vfiolab.pci import regs
from vfiolab.pci.caps import msi as msi_regs
from vfiolab.pci.caps import msix as msix_regs
from vfiolab.vfio import uapi as U

if TYPE_CHECKING:
    from vfiolab.vfio.pci_core import VfioPciCoreDevice

MSI_ADDRESS: Final = 0xFEE0_0000
"""x86 interrupt message address the host programs (Local APIC range)."""
_host_vectors = itertools.count(0x10000)


# ---------------------------------------------------------------------- eventfds
class EventfdCtx:
    """struct eventfd_ctx: a reference to a real eventfd (a dup of the user's fd, so the user may close
    theirs, as the kernel holds the file)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.signals = 0

    @classmethod
    def fdget(cls, fd: int) -> EventfdCtx:
        """eventfd_ctx_fdget(): EBADF for a closed fd, EINVAL for a file that is not an eventfd."""
        try:
            os.fstat(fd)
        except OSError:
            raise UapiError(errno.EBADF, f"fd {fd} is not open") from None
        try:
            with open(f"/proc/self/fdinfo/{fd}") as f:
                is_eventfd = "eventfd-count" in f.read()
        except OSError:
            is_eventfd = False
        if not is_eventfd:
            raise UapiError(errno.EINVAL, f"fd {fd} is not an eventfd")
        return cls(os.dup(fd))

    def signal(self) -> None:
        """eventfd_signal(): add 1 to the counter."""
        os.eventfd_write(self.fd, 1)
        self.signals += 1

    def take(self) -> int:
        """Read and reset the counter without blocking (0 when nothing was written)."""
        try:
            return os.eventfd_read(self.fd)
        except BlockingIOError:
            return 0

    def put(self) -> None:
        """eventfd_ctx_put()."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Virqfd:
    """struct virqfd: an eventfd whose signals run ``handler`` (and ``thread`` when it asks for it)."""

    def __init__(self, ctx: EventfdCtx, handler: Callable[[], int], thread: Callable[[], None] | None) -> None:
        self.ctx, self.handler, self.thread = ctx, handler, thread
        os.set_blocking(ctx.fd, False)

    def poll(self) -> None:
        """virqfd_wakeup(): consume the count; run the handler, then the thread if it returned > 0."""
        if self.ctx.take() and self.handler() > 0 and self.thread is not None:
            self.thread()

    def disable(self) -> None:
        self.ctx.put()


def eventfd_from_user(fd: int) -> EventfdCtx | None:
    """An s32 from data[]: -1 means none; other negative values are EINVAL where the kernel checks."""
    return None if fd < 0 else EventfdCtx.fdget(fd)


@dataclass
class IrqCtx:
    """struct vfio_pci_irq_ctx."""

    trigger: EventfdCtx | None
    masked: bool = False
    unmask: Virqfd | None = None
    mask: Virqfd | None = None
    hostirq: int = -1


# ---------------------------------------------------------------------- the host's interrupt controller
class HostIrqSink:
    """The host interrupt controller the device's messages and INTx wire reach: data value -> handler."""

    def __init__(self, vdev: VfioPciCoreDevice) -> None:
        self.vdev = vdev
        self.handlers: dict[int, Callable[[], None]] = {}
        self.intx_handler: Callable[[], None] | None = None
        self.spurious = 0

    def intx(self, asserted: bool) -> None:
        if asserted and self.intx_handler is not None:
            self.intx_handler()
        self.vdev.irqs.poll()

    def _message(self, address: int, data: int) -> None:
        handler = self.handlers.get(data) if address & 0xFFF0_0000 == MSI_ADDRESS else None
        if handler is None:
            self.spurious += 1  # no IRQ requested for it: the host drops it
        else:
            handler()
        self.vdev.irqs.poll()

    def msi(self, vector: int, address: int, data: int) -> None:
        self._message(address, data)

    def msix(self, vector: int, address: int, data: int) -> None:
        self._message(address, data)


# ---------------------------------------------------------------------- vfio-pci interrupt state
class VfioPciIrqs:
    """The interrupt half of struct vfio_pci_core_device."""

    def __init__(self, vdev: VfioPciCoreDevice) -> None:
        self.vdev = vdev
        self.irq_type = U.VFIO_PCI_NUM_IRQS
        self.ctx: dict[int, IrqCtx] = {}
        self.virq_disabled = False
        self.pci_2_3 = True
        self.nointx = False
        self.msi_qmax = 0
        self.err_trigger: EventfdCtx | None = None
        self.req_trigger: EventfdCtx | None = None
        self.sink = HostIrqSink(vdev)
        self._polling = False
        self._msi_base = 0

    # ------------------------------------------------------------------ helpers
    def is_intx(self) -> bool:
        return self.irq_type == U.VFIO_PCI_INTX_IRQ_INDEX

    def is_irq_none(self) -> bool:
        return self.irq_type not in (U.VFIO_PCI_INTX_IRQ_INDEX, U.VFIO_PCI_MSI_IRQ_INDEX, U.VFIO_PCI_MSIX_IRQ_INDEX)

    def poll(self) -> None:
        """Run signalled unmask eventfds (the model's stand-in for their wake-up callbacks)."""
        if self._polling:
            return
        self._polling = True
        try:
            for ctx in list(self.ctx.values()):
                if ctx.unmask is not None:
                    ctx.unmask.poll()
        finally:
            self._polling = False

    def _cmd(self) -> int:
        return self.vdev.hw_read(regs.COMMAND, 2)

    def pci_intx(self, enable: bool) -> None:
        """pci_intx(): Interrupt Disable clear (enable) or set, written only when it changes."""
        cmd = self._cmd()
        new = cmd & ~regs.COMMAND_INTX_DISABLE if enable else cmd | regs.COMMAND_INTX_DISABLE
        if new != cmd:
            self.vdev.hw_write(regs.COMMAND, 2, new)

    def _check_and_set_intx_mask(self, mask: bool) -> bool:
        """pci_check_and_set_intx_mask() (drivers/pci/irq.c): act only if the pending state matches."""
        dword = self.vdev.hw_read(regs.COMMAND, 4)
        pending = bool((dword >> 16) & regs.STATUS_INTERRUPT)
        if mask != pending:
            return False
        cmd = dword & 0xFFFF
        new = (cmd & ~regs.COMMAND_INTX_DISABLE) | (regs.COMMAND_INTX_DISABLE if mask else 0)
        if new != cmd:
            self.vdev.hw_write(regs.COMMAND, 2, new)
        return True

    # ------------------------------------------------------------------ INTx
    def _send_intx_eventfd(self) -> None:
        """vfio_send_intx_eventfd()."""
        ctx = self.ctx.get(0)
        if self.is_intx() and not self.virq_disabled and ctx is not None and ctx.trigger is not None:
            ctx.trigger.signal()

    def intx_mask(self) -> bool:
        """__vfio_pci_intx_mask(): True when the masked state changed."""
        if not self.is_intx():
            if self.pci_2_3:
                self.pci_intx(False)
            return False
        ctx = self.ctx[0]
        if ctx.masked:
            return False
        self.pci_intx(False)
        ctx.masked = True
        return True

    def _intx_unmask_handler(self) -> int:
        """vfio_pci_intx_unmask_handler(): > 0 when an interrupt was already pending (resend it)."""
        if not self.is_intx():
            if self.pci_2_3:
                self.pci_intx(True)
            return 0
        ctx = self.ctx[0]
        ret = 0
        if ctx.masked and not self.virq_disabled:
            if not self._check_and_set_intx_mask(False):
                ret = 1
            ctx.masked = ret > 0
        return ret

    def intx_unmask(self) -> None:
        """__vfio_pci_intx_unmask()."""
        if self._intx_unmask_handler() > 0:
            self._send_intx_eventfd()

    def _intx_handler(self) -> None:
        """vfio_intx_handler() for a DisINTx-capable (PCI 2.3) device: mask at the device, then signal."""
        ctx = self.ctx.get(0)
        if ctx is None:
            return
        if not ctx.masked and self._check_and_set_intx_mask(True):
            ctx.masked = True
            self._send_intx_eventfd()

    def _intx_enable(self, trigger: EventfdCtx | None) -> None:
        """vfio_intx_enable()."""
        if not self.is_irq_none():
            raise UapiError(errno.EINVAL, "another interrupt type is enabled")
        if not self.vdev.irq_connected:
            raise UapiError(errno.ENODEV, "the device has no INTx line connected")
        ctx = self.ctx[0] = IrqCtx(trigger, masked=self.virq_disabled)
        self.irq_type = U.VFIO_PCI_INTX_IRQ_INDEX
        self.pci_intx(not ctx.masked)
        self.sink.intx_handler = self._intx_handler  # request_irq(IRQF_SHARED)
        if self.vdev.device.irq.intx_asserted:
            self._intx_handler()  # a level already high fires as soon as the handler is installed

    def _intx_set_signal(self, trigger: EventfdCtx | None) -> None:
        ctx = self.ctx[0]
        old, ctx.trigger = ctx.trigger, trigger
        if old is not None:
            old.put()

    def _intx_disable(self) -> None:
        ctx = self.ctx.pop(0, None)
        if ctx is not None:
            for v in (ctx.unmask, ctx.mask):
                if v is not None:
                    v.disable()
            self.sink.intx_handler = None  # free_irq()
            if ctx.trigger is not None:
                ctx.trigger.put()
        self.irq_type = U.VFIO_PCI_NUM_IRQS

    # ------------------------------------------------------------------ MSI / MSI-X: host programming
    def _alloc_vectors(self, nvec: int, msix: bool) -> int:
        """pci_alloc_irq_vectors(pdev, 1, nvec, MSI or MSI-X): program the capability / table."""
        dev = self.vdev.device
        if msix:
            xcap = dev.irq.msix_cap
            if xcap is None:
                return -errno.EINVAL
            if nvec > xcap.table_size:
                return xcap.table_size
            for v in range(nvec):
                self._program_msix_entry(v)
            o = xcap.offset + msix_regs.FLAGS
            self.vdev.hw_write(o, 2, self.vdev.hw_read(o, 2) | msix_regs.FLAGS_ENABLE)
        else:
            mcap = dev.irq.msi_cap
            if mcap is None:
                return -errno.EINVAL
            if nvec > mcap.vectors:
                return mcap.vectors
            n2 = 1 << (nvec - 1).bit_length()
            base = next(_host_vectors) * 32  # aligned for up to 32 vectors
            o = mcap.offset
            self.vdev.hw_write(o + msi_regs.ADDRESS_LO, 4, MSI_ADDRESS)
            if mcap.addr64:
                self.vdev.hw_write(o + msi_regs.ADDRESS_HI, 4, 0)
            self.vdev.hw_write(o + mcap.data_off, 2, base & 0xFFFF)
            if mcap.per_vector_mask:
                self.vdev.hw_write(o + mcap.mask_off, 4, (1 << mcap.vectors) - 1)  # masked until request_irq
            flags = self.vdev.hw_read(o + msi_regs.FLAGS, 2) & ~msi_regs.FLAGS_QSIZE
            self.vdev.hw_write(o + msi_regs.FLAGS, 2, flags | (n2.bit_length() - 1) << 4 | msi_regs.FLAGS_ENABLE)
            self._msi_base = base & 0xFFFF
        self.pci_intx(False)  # pci_intx_for_msi(): INTx off while MSI/MSI-X is on
        return nvec

    def _program_msix_entry(self, vector: int) -> None:
        dev = self.vdev.device
        xcap = dev.irq.msix_cap
        assert xcap is not None
        data = next(_host_vectors) & 0xFFFF_FFFF
        off = xcap.table_offset + vector * msix_regs.ENTRY_SIZE
        dev.bar_write(xcap.table_bar, off, 4, MSI_ADDRESS)
        dev.bar_write(xcap.table_bar, off + 4, 4, 0)
        dev.bar_write(xcap.table_bar, off + 8, 4, data)
        self.vdev.msix_data[vector] = data

    def _msix_entry_mask(self, vector: int, masked: bool) -> None:
        xcap = self.vdev.device.irq.msix_cap
        assert xcap is not None
        off = xcap.table_offset + vector * msix_regs.ENTRY_SIZE + 12
        self.vdev.device.bar_write(xcap.table_bar, off, 4, int(masked))

    def _msi_vector_mask(self, vector: int, masked: bool) -> None:
        mcap = self.vdev.device.irq.msi_cap
        if mcap is None or not mcap.per_vector_mask:
            return
        o = mcap.offset + mcap.mask_off
        mask = self.vdev.hw_read(o, 4)
        self.vdev.hw_write(o, 4, mask | 1 << vector if masked else mask & ~(1 << vector))

    def _free_vectors(self, msix: bool) -> None:
        """pci_free_irq_vectors(): MSI/MSI-X off, INTx allowed again."""
        irq = self.vdev.device.irq
        if msix and irq.msix_cap is not None:
            for v in list(self.vdev.msix_data):
                self._msix_entry_mask(v, True)
            self.vdev.msix_data.clear()
            o = irq.msix_cap.offset + msix_regs.FLAGS
            self.vdev.hw_write(o, 2, self.vdev.hw_read(o, 2) & ~msix_regs.FLAGS_ENABLE)
        elif not msix and irq.msi_cap is not None:
            o = irq.msi_cap.offset + msi_regs.FLAGS
            self.vdev.hw_write(o, 2, self.vdev.hw_read(o, 2) & ~msi_regs.FLAGS_ENABLE)
        self.pci_intx(True)

    def _vector_data(self, vector: int, msix: bool) -> int:
        return self.vdev.msix_data[vector] if msix else self._msi_base | vector

    def _request_irq(self, vector: int, msix: bool, trigger: EventfdCtx) -> None:
        """request_irq(): route the vector's message to the eventfd and unmask it at the device."""
        self.sink.handlers[self._vector_data(vector, msix)] = trigger.signal
        if msix:
            self._msix_entry_mask(vector, False)
        else:
            self._msi_vector_mask(vector, False)

    def _free_irq(self, vector: int, msix: bool) -> None:
        """free_irq(): mask the vector at the device and forget the route."""
        self.sink.handlers.pop(self._vector_data(vector, msix), None)
        if msix:
            self._msix_entry_mask(vector, True)
        else:
            self._msi_vector_mask(vector, True)

    # ------------------------------------------------------------------ MSI / MSI-X: vfio
    def _msi_enable(self, nvec: int, msix: bool) -> int:
        """vfio_msi_enable(): returns 0, or the (positive) number of vectors the device can do."""
        if not self.is_irq_none():
            raise UapiError(errno.EINVAL, "another interrupt type is enabled")
        with self.vdev.memory_enabled():
            ret = self._alloc_vectors(nvec, msix)
        if ret < 0:
            raise UapiError(-ret, "vector allocation failed")
        if ret < nvec:
            if ret > 0:
                self._free_vectors(msix)
            return ret
        self.irq_type = U.VFIO_PCI_MSIX_IRQ_INDEX if msix else U.VFIO_PCI_MSI_IRQ_INDEX
        if not msix:
            self.msi_qmax = (nvec * 2 - 1).bit_length() - 1  # fls(nvec * 2 - 1) - 1
        return 0

    def _msi_set_vector_signal(self, vector: int, fd: int, msix: bool) -> None:
        """vfio_msi_set_vector_signal(): drop the vector's eventfd, then install ``fd`` (>= 0)."""
        ctx = self.ctx.pop(vector, None)
        if ctx is not None:
            with self.vdev.memory_enabled():
                self._free_irq(vector, msix)
            if ctx.trigger is not None:
                ctx.trigger.put()
        if fd < 0:
            return
        if msix and vector not in self.vdev.msix_data:
            if not self.vdev.has_dyn_msix:  # vfio_msi_alloc_irq(): pci_irq_vector() has none
                raise UapiError(errno.EINVAL, f"MSI-X vector {vector} was not allocated")
            with self.vdev.memory_enabled():
                self._program_msix_entry(vector)  # pci_msix_alloc_irq_at()
        trigger = EventfdCtx.fdget(fd)
        with self.vdev.memory_enabled():
            self._request_irq(vector, msix, trigger)
        self.ctx[vector] = IrqCtx(trigger)

    def _msi_set_block(self, start: int, count: int, fds: list[int] | None, msix: bool) -> None:
        """vfio_msi_set_block(): on a failure, every vector touched so far is torn down."""
        j = start
        try:
            for i in range(count):
                self._msi_set_vector_signal(start + i, fds[i] if fds is not None else -1, msix)
                j += 1
        except UapiError:
            for v in range(start, j):
                self._msi_set_vector_signal(v, -1, msix)
            raise

    def _msi_disable(self, msix: bool) -> None:
        """vfio_msi_disable()."""
        for v in list(self.ctx):
            self._msi_set_vector_signal(v, -1, msix)
        with self.vdev.memory_enabled():
            self._free_vectors(msix)
        if self.nointx:
            self.pci_intx(False)
        self.irq_type = U.VFIO_PCI_NUM_IRQS

    # ------------------------------------------------------------------ ioctl actions
    def _intx_unmask_action(self, start: int, count: int, flags: int, data: bytes) -> int:
        """vfio_pci_set_intx_unmask()."""
        if not self.is_intx() or start != 0 or count != 1:
            raise UapiError(errno.EINVAL, "INTx unmask needs INTx enabled, start 0, count 1")
        if flags & U.VFIO_IRQ_SET_DATA_NONE:
            self.intx_unmask()
        elif flags & U.VFIO_IRQ_SET_DATA_BOOL:
            if data[0]:
                self.intx_unmask()
        elif flags & U.VFIO_IRQ_SET_DATA_EVENTFD:
            ctx = self.ctx[0]
            fd = int.from_bytes(data[:4], "little", signed=True)
            if fd >= 0:
                if ctx.unmask is not None:
                    raise UapiError(errno.EBUSY, "an unmask eventfd is already set")
                ev = EventfdCtx.fdget(fd)
                ctx.unmask = Virqfd(ev, self._intx_unmask_handler, self._send_intx_eventfd)
                ctx.unmask.poll()  # an event pending before registration is handled at once
            elif ctx.unmask is not None:
                ctx.unmask.disable()
                ctx.unmask = None
        return 0

    def _intx_mask_action(self, start: int, count: int, flags: int, data: bytes) -> int:
        """vfio_pci_set_intx_mask(): an eventfd for masking is not implemented (ENOTTY)."""
        if not self.is_intx() or start != 0 or count != 1:
            raise UapiError(errno.EINVAL, "INTx mask needs INTx enabled, start 0, count 1")
        if flags & U.VFIO_IRQ_SET_DATA_NONE:
            self.intx_mask()
        elif flags & U.VFIO_IRQ_SET_DATA_BOOL:
            if data[0]:
                self.intx_mask()
        elif flags & U.VFIO_IRQ_SET_DATA_EVENTFD:
            raise UapiError(errno.ENOTTY, "INTx mask eventfd (XXX implement me)")
        return 0

    def _intx_trigger(self, start: int, count: int, flags: int, data: bytes) -> int:
        """vfio_pci_set_intx_trigger()."""
        if self.is_intx() and not count and flags & U.VFIO_IRQ_SET_DATA_NONE:
            self._intx_disable()
            return 0
        if not (self.is_intx() or self.is_irq_none()) or start != 0 or count != 1:
            raise UapiError(errno.EINVAL, "INTx trigger needs start 0, count 1 and no other type enabled")
        if flags & U.VFIO_IRQ_SET_DATA_EVENTFD:
            fd = int.from_bytes(data[:4], "little", signed=True)
            trigger = eventfd_from_user(fd)
            try:
                if self.is_intx():
                    self._intx_set_signal(trigger)
                else:
                    self._intx_enable(trigger)
            except UapiError:
                if trigger is not None:
                    trigger.put()
                raise
            return 0
        if not self.is_intx():
            raise UapiError(errno.EINVAL, "INTx is not enabled")
        if flags & U.VFIO_IRQ_SET_DATA_NONE or (flags & U.VFIO_IRQ_SET_DATA_BOOL and data[0]):
            self._send_intx_eventfd()
        return 0

    def _msi_trigger(self, index: int, start: int, count: int, flags: int, data: bytes) -> int:
        """vfio_pci_set_msi_trigger()."""
        msix = index == U.VFIO_PCI_MSIX_IRQ_INDEX
        if self.irq_type == index and not count and flags & U.VFIO_IRQ_SET_DATA_NONE:
            self._msi_disable(msix)
            return 0
        if not (self.irq_type == index or self.is_irq_none()):
            raise UapiError(errno.EINVAL, "another interrupt type is enabled")
        if flags & U.VFIO_IRQ_SET_DATA_EVENTFD:
            fds = [int.from_bytes(data[4 * i:4 * i + 4], "little", signed=True) for i in range(count)]
            if self.irq_type == index:
                self._msi_set_block(start, count, fds, msix)
                return 0
            ret = self._msi_enable(start + count, msix)
            if ret:
                return ret
            try:
                self._msi_set_block(start, count, fds, msix)
            except UapiError:
                self._msi_disable(msix)
                raise
            return 0
        if self.irq_type != index:
            raise UapiError(errno.EINVAL, "this interrupt type is not enabled")
        for i in range(start, start + count):
            ctx = self.ctx.get(i)
            if ctx is None or ctx.trigger is None:
                continue
            if flags & U.VFIO_IRQ_SET_DATA_NONE or (flags & U.VFIO_IRQ_SET_DATA_BOOL and data[i - start]):
                ctx.trigger.signal()
        return 0

    def _ctx_trigger_single(self, which: str, count: int, flags: int, data: bytes) -> int:
        """vfio_pci_set_ctx_trigger_single(): the ERR/REQ eventfd; NONE/BOOL are loopback tests."""
        cur: EventfdCtx | None = getattr(self, which)
        if flags & U.VFIO_IRQ_SET_DATA_NONE:
            if cur is None:
                raise UapiError(errno.EINVAL, "no eventfd to signal or release")
            if count:
                cur.signal()
                return 0
            self._replace(which, None)
            return 0
        if flags & U.VFIO_IRQ_SET_DATA_BOOL:
            if not count:
                raise UapiError(errno.EINVAL, "BOOL needs count 1")
            if data[0] and cur is not None:
                cur.signal()
            return 0
        if flags & U.VFIO_IRQ_SET_DATA_EVENTFD:
            if not count:
                raise UapiError(errno.EINVAL, "EVENTFD needs count 1")
            fd = int.from_bytes(data[:4], "little", signed=True)
            if fd == -1:
                self._replace(which, None)
                return 0
            if fd >= 0:
                self._replace(which, EventfdCtx.fdget(fd))
                return 0
        raise UapiError(errno.EINVAL, "bad ERR/REQ eventfd")

    def _replace(self, which: str, new: EventfdCtx | None) -> None:
        """vfio_pci_eventfd_replace_locked()."""
        old: EventfdCtx | None = getattr(self, which)
        setattr(self, which, new)
        if old is not None:
            old.put()

    def set_irqs(self, flags: int, index: int, start: int, count: int, data: bytes) -> int:
        """vfio_pci_set_irqs_ioctl(): pick the handler for (index, action); ENOTTY when there is none."""
        action = flags & U.VFIO_IRQ_SET_ACTION_TYPE_MASK
        if index == U.VFIO_PCI_INTX_IRQ_INDEX:
            if action == U.VFIO_IRQ_SET_ACTION_MASK:
                return self._intx_mask_action(start, count, flags, data)
            if action == U.VFIO_IRQ_SET_ACTION_UNMASK:
                return self._intx_unmask_action(start, count, flags, data)
            if action == U.VFIO_IRQ_SET_ACTION_TRIGGER:
                return self._intx_trigger(start, count, flags, data)
        elif index in (U.VFIO_PCI_MSI_IRQ_INDEX, U.VFIO_PCI_MSIX_IRQ_INDEX):
            if action == U.VFIO_IRQ_SET_ACTION_TRIGGER:  # MASK/UNMASK: "XXX Need masking support exported"
                return self._msi_trigger(index, start, count, flags, data)
        elif index == U.VFIO_PCI_ERR_IRQ_INDEX:
            if action == U.VFIO_IRQ_SET_ACTION_TRIGGER and self.vdev.is_pcie:
                return self._single("err_trigger", start, count, flags, data)
        elif index == U.VFIO_PCI_REQ_IRQ_INDEX and action == U.VFIO_IRQ_SET_ACTION_TRIGGER:
            return self._single("req_trigger", start, count, flags, data)
        raise UapiError(errno.ENOTTY, f"no handler for index {index} action {action:#x}")

    def _single(self, which: str, start: int, count: int, flags: int, data: bytes) -> int:
        """vfio_pci_set_err_trigger() / vfio_pci_set_req_trigger()."""
        if start != 0 or count > 1:
            raise UapiError(errno.EINVAL, "ERR/REQ take start 0 and count 0 or 1")
        return self._ctx_trigger_single(which, count, flags, data)

    def disable(self) -> None:
        """What vfio_pci_core_disable() does: DATA_NONE|TRIGGER count 0 on the active type."""
        if self.is_intx():
            self._intx_disable()
        elif self.irq_type in (U.VFIO_PCI_MSI_IRQ_INDEX, U.VFIO_PCI_MSIX_IRQ_INDEX):
            self._msi_disable(self.irq_type == U.VFIO_PCI_MSIX_IRQ_INDEX)
        self.virq_disabled = False

    def release_err_req(self) -> None:
        """close_device drops the ERR and REQ eventfds."""
        self._replace("err_trigger", None)
        self._replace("req_trigger", None)
