"""The server's interrupt side: the client's eventfds per IRQ index (DEVICE_GET_IRQ_INFO / DEVICE_SET_IRQS)
and the sink that turns a device's INTx / MSI / MSI-X signals into eventfd writes.

Counts and flags follow vfio-pci (drivers/vfio/pci/vfio_pci_core.c ``vfio_pci_get_irq_count`` and
``vfio_pci_ioctl_get_irq_info``): INTx 1 when the function has an interrupt pin, EVENTFD | MASKABLE |
AUTOMASKED; MSI the capability's vector count, EVENTFD | NORESIZE; MSI-X the table size, EVENTFD only (vectors
are added one by one, as with ``has_dyn_msix``); ERR 1 on a PCI Express function; REQ 1.  The validation of
a SET_IRQS request and its actions follow libvfio-user (lib/irq.c ``device_set_irqs_validate``,
``handle_device_set_irqs``): DATA_NONE / DATA_BOOL triggers signal the selected vectors (a loopback test),
DATA_EVENTFD with fds assigns them, with no fds (or ``count`` 0 + DATA_NONE) it de-assigns them.

INTx is level triggered and auto-masked as in drivers/vfio/pci/vfio_pci_intrs.c: when the wire goes high
the eventfd is signalled and INTx masked until the client UNMASKs; an unmask while the wire is still high
signals again.  MSI/MSI-X vectors may also be masked through SET_IRQS (libvfio-user passes that to the
device; vfio-pci has no such action): a masked vector, or one without an eventfd yet, is held pending and
signalled once unmasked / assigned, the way a Pending Bit holds a message.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from vfiolab.devices.api import Device
from vfiolab.errors import UapiError
from vfiolab.pci import regs
from vfiolab.vfio_user.irq import IrqInfo, IrqSet
from vfiolab.vfio_user.protocol import (
    IRQ_INFO_AUTOMASKED,
    IRQ_INFO_EVENTFD,
    IRQ_INFO_MASKABLE,
    IRQ_INFO_NORESIZE,
    IRQ_SET_ACTION_MASK,
    IRQ_SET_ACTION_TRIGGER,
    IRQ_SET_ACTION_UNMASK,
    IRQ_SET_DATA_BOOL,
    IRQ_SET_DATA_EVENTFD,
    IRQ_SET_DATA_NONE,
    PCI_ERR_IRQ_INDEX,
    PCI_INTX_IRQ_INDEX,
    PCI_MSI_IRQ_INDEX,
    PCI_MSIX_IRQ_INDEX,
    PCI_NUM_IRQS,
    PCI_REQ_IRQ_INDEX,
)

log = logging.getLogger(__name__)

INDEX_NAMES: Final = ("INTx", "MSI", "MSI-X", "ERR", "REQ")
_FLAGS: Final = (IRQ_INFO_EVENTFD | IRQ_INFO_MASKABLE | IRQ_INFO_AUTOMASKED,  # INTx
                 IRQ_INFO_EVENTFD | IRQ_INFO_NORESIZE,  # MSI
                 IRQ_INFO_EVENTFD,  # MSI-X (dynamic allocation)
                 IRQ_INFO_EVENTFD | IRQ_INFO_NORESIZE,  # ERR
                 IRQ_INFO_EVENTFD | IRQ_INFO_NORESIZE)  # REQ
_EVENTFD_LINK: Final = "anon_inode:[eventfd]"


@dataclass
class IrqIndex:
    """One IRQ index: an eventfd (or None), a mask bit and a pending bit per vector, and what was signalled."""

    count: int
    fds: list[int | None] = field(default_factory=list)
    masked: list[bool] = field(default_factory=list)
    pending: list[bool] = field(default_factory=list)
    signals: int = 0

    def __post_init__(self) -> None:
        self.fds = [None] * self.count
        self.masked = [False] * self.count
        self.pending = [False] * self.count


def irq_counts(device: Device) -> tuple[int, ...]:
    """Vectors per index as vfio-pci reports them (vfio_pci_get_irq_count)."""
    fn = device.function
    intx = 1 if fn.cs.get(regs.INTERRUPT_PIN, 1) else 0
    msi = device.irq.msi_cap.vectors if device.irq.msi_cap is not None else 0
    msix = device.irq.msix.entries if device.irq.msix is not None else 0
    err = 1 if fn.express_offset is not None else 0
    return intx, msi, msix, err, 1


def is_eventfd(fd: int) -> bool:
    """True if ``fd`` is an eventfd (anything else could block or fail when the server signals it)."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}") == _EVENTFD_LINK
    except OSError:
        return False


class IrqTable:
    """The client's interrupt setup for one device, and the device's :class:`InterruptSink`."""

    def __init__(self, device: Device) -> None:
        self.device = device
        self.lock = threading.Lock()
        self.indexes = [IrqIndex(n) for n in irq_counts(device)]

    # ------------------------------------------------------------------ GET_IRQ_INFO
    def info(self, req: IrqInfo) -> IrqInfo:
        """DEVICE_GET_IRQ_INFO (libvfio-user: an index beyond the five PCI indexes is EINVAL)."""
        if req.index >= PCI_NUM_IRQS:
            raise UapiError(errno.EINVAL, f"IRQ index {req.index} >= {PCI_NUM_IRQS}")
        return IrqInfo(req.index, IrqInfo(0).argsz, _FLAGS[req.index], self.indexes[req.index].count)

    # ------------------------------------------------------------------ SET_IRQS
    def set_irqs(self, req: IrqSet, fds: Sequence[int]) -> None:
        """DEVICE_SET_IRQS; the table owns ``fds`` (kept or closed, also on error)."""
        taken = False
        try:
            self._validate(req, fds)
            for fd in fds:
                if not is_eventfd(fd):
                    raise UapiError(errno.EINVAL, f"SET_IRQS: fd {fd} is not an eventfd")
            taken = True
            self._apply(req, list(fds))
        finally:
            if not taken:
                for fd in fds:
                    os.close(fd)

    def _validate(self, req: IrqSet, fds: Sequence[int]) -> None:
        """lib/irq.c device_set_irqs_validate (the codec already checked flags, data size and fd count)."""
        if req.index >= PCI_NUM_IRQS:
            raise UapiError(errno.EINVAL, f"SET_IRQS: index {req.index} >= {PCI_NUM_IRQS}")
        count = self.indexes[req.index].count
        if req.start >= count or req.start + req.count > count:
            raise UapiError(errno.EINVAL, f"SET_IRQS {INDEX_NAMES[req.index]}: [{req.start}, +{req.count}) "
                                          f"outside its {count} vector(s)")
        if req.index in (PCI_ERR_IRQ_INDEX, PCI_REQ_IRQ_INDEX) and (
                req.action != IRQ_SET_ACTION_TRIGGER or req.count > 1):
            raise UapiError(errno.EINVAL, f"SET_IRQS {INDEX_NAMES[req.index]}: only TRIGGER of one vector")
        if req.action != IRQ_SET_ACTION_TRIGGER and req.data_type == IRQ_SET_DATA_EVENTFD:
            # vfio-pci's INTx unmask-by-eventfd (virqfd) is not modelled.
            raise UapiError(errno.EINVAL, "SET_IRQS: MASK/UNMASK with DATA_EVENTFD is not supported")

    def _selected(self, req: IrqSet) -> list[int]:
        vectors = range(req.start, req.start + req.count)
        if req.data_type == IRQ_SET_DATA_BOOL:
            return [v for v, b in zip(vectors, req.data, strict=True) if b]
        return list(vectors)

    def _apply(self, req: IrqSet, fds: list[int]) -> None:
        idx = self.indexes[req.index]
        to_close: list[int] = []
        fire: list[int] = []
        with self.lock:
            if req.action == IRQ_SET_ACTION_TRIGGER:
                if req.data_type == IRQ_SET_DATA_EVENTFD and fds:
                    for v, fd in zip(range(req.start, req.start + req.count), fds, strict=True):
                        old = idx.fds[v]
                        if old is not None:
                            to_close.append(old)
                        idx.fds[v] = fd
                        if req.index != PCI_INTX_IRQ_INDEX and idx.pending[v] and not idx.masked[v]:
                            idx.pending[v] = False
                            fire.append(v)
                    if req.index == PCI_INTX_IRQ_INDEX:
                        idx.masked[0] = False
                elif (req.data_type == IRQ_SET_DATA_NONE and req.count == 0) or req.data_type == IRQ_SET_DATA_EVENTFD:
                    # Disable (count 0: the whole index) or de-assign [start, start+count).
                    vectors = range(idx.count) if req.count == 0 else range(req.start, req.start + req.count)
                    for v in vectors:
                        if idx.fds[v] is not None:
                            to_close.append(idx.fds[v])  # type: ignore[arg-type]
                        idx.fds[v] = None
                        idx.masked[v] = False
                        idx.pending[v] = False
                else:  # DATA_NONE / DATA_BOOL: loopback trigger (vfio_pci_set_intx_trigger, irqs_set_data_*)
                    fire.extend(self._selected(req))
            else:
                mask = req.action == IRQ_SET_ACTION_MASK
                for v in self._selected(req):
                    was = idx.masked[v]
                    idx.masked[v] = mask
                    if not mask and was and req.index != PCI_INTX_IRQ_INDEX and idx.pending[v]:
                        idx.pending[v] = False
                        fire.append(v)
            for v in fire:
                self._signal(idx, v)
        for fd in to_close:
            os.close(fd)
        if req.index == PCI_INTX_IRQ_INDEX and req.action in (IRQ_SET_ACTION_UNMASK, IRQ_SET_ACTION_TRIGGER):
            # vfio_pci_intx_unmask_handler / a new trigger: a wire still high is signalled (and masked) again.
            self.intx(self.device.irq.intx_asserted)

    def _signal(self, idx: IrqIndex, vector: int) -> None:
        fd = idx.fds[vector]
        if fd is None:
            return
        try:
            os.eventfd_write(fd, 1)
            idx.signals += 1
        except OSError as e:  # the client closed its end in a way we cannot see; keep serving
            log.warning("cannot signal eventfd %d: %s", fd, e)

    # ------------------------------------------------------------------ the device's InterruptSink
    def intx(self, asserted: bool) -> None:
        """The INTx wire changed: a rising (or still high, unmasked) wire signals once and auto-masks."""
        idx = self.indexes[PCI_INTX_IRQ_INDEX]
        if not asserted or not idx.count:
            return
        with self.lock:
            if idx.fds[0] is not None and not idx.masked[0]:
                idx.masked[0] = True
                self._signal(idx, 0)

    def msi(self, vector: int, address: int, data: int) -> None:
        self._message(PCI_MSI_IRQ_INDEX, vector)

    def msix(self, vector: int, address: int, data: int) -> None:
        self._message(PCI_MSIX_IRQ_INDEX, vector)

    def _message(self, index: int, vector: int) -> None:
        idx = self.indexes[index]
        if not 0 <= vector < idx.count:
            return
        with self.lock:
            if idx.masked[vector] or idx.fds[vector] is None:
                idx.pending[vector] = True
            else:
                self._signal(idx, vector)

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """The client went away: close its eventfds and forget masks and pending bits."""
        with self.lock:
            fds = [fd for idx in self.indexes for fd in idx.fds if fd is not None]
            old, self.indexes = self.indexes, [IrqIndex(idx.count) for idx in self.indexes]
            for new, idx in zip(self.indexes, old, strict=True):
                new.signals = idx.signals
        for fd in fds:
            os.close(fd)

    @property
    def signals(self) -> dict[str, int]:
        """Eventfd writes so far, per index name (for statistics and tests)."""
        return {INDEX_NAMES[i]: idx.signals for i, idx in enumerate(self.indexes)}


__all__ = ["INDEX_NAMES", "IrqIndex", "IrqTable", "irq_counts", "is_eventfd"]
