"""Recoverable I/O page faults: PCIe Page Request Interface on the device side, and the kernel's
``drivers/iommu/io-pgfault.c`` that groups page requests and hands them to a domain's handler.

Device side (:class:`PriRequester`, PCIe Base §10.4): a function whose ATS translation comes back
without access sends Page Requests in a Page Request Group (PRG index, Last flag on the final one), at
most as many outstanding as software allocated (PRI Outstanding Page Request Allocation).  A PRG
Response frees the group's credits: Success -> the function retries the translation, Invalid Request ->
the access fails, Response Failure -> the function sets Response Failure and stops issuing requests; a
response with an index that is not outstanding sets Unexpected PRG Index.

Kernel side (:func:`iommu_report_device_fault`): requests that are not the last of their group wait in
the device's partial list; the last one completes the group, which goes to the handler of the domain
attached to the request's PASID (or RID); without one the request is answered Invalid.  The handler
answers later with :func:`iopf_group_response`.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from vfiolab.errors import UapiError, VfiolabError
from vfiolab.iommu.fault import IOMMU_FAULT_PERM_PRIV, IOMMU_FAULT_PERM_READ, IOMMU_FAULT_PERM_WRITE
from vfiolab.iommu.pasid import IOMMU_NO_PASID
from vfiolab.pci.caps.pri import PriCap

if TYPE_CHECKING:
    from vfiolab.iommu.device import IommuDevice
    from vfiolab.iommu.domain import IommuDomain
    from vfiolab.pci.function import PciFunction

# include/linux/iommu.h
IOMMU_FAULT_PAGE_REQUEST_PASID_VALID: Final = 1 << 0
IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE: Final = 1 << 1
IOMMU_PAGE_RESP_SUCCESS: Final = 0
IOMMU_PAGE_RESP_INVALID: Final = 1
IOMMU_PAGE_RESP_FAILURE: Final = 2
PRG_INDEX_BITS: Final = 9  # PCIe Page Request Message: 9-bit PRG index


@dataclass(frozen=True)
class PageRequest:
    """struct iommu_fault_page_request (one Page Request message as the IOMMU reports it)."""

    flags: int
    pasid: int
    grpid: int
    perm: int
    addr: int

    @property
    def last(self) -> bool:
        return bool(self.flags & IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE)

    @property
    def pasid_valid(self) -> bool:
        return bool(self.flags & IOMMU_FAULT_PAGE_REQUEST_PASID_VALID)


@dataclass(frozen=True)
class PageResponse:
    """struct iommu_page_response."""

    pasid: int
    grpid: int
    code: int


@dataclass
class IopfGroup:
    """struct iopf_group: the requests of one PRG (oldest first, the last page at the end)."""

    dev: IommuDevice
    faults: list[PageRequest]
    domain: IommuDomain
    handle: object
    answered: bool = False

    @property
    def last_fault(self) -> PageRequest:
        return self.faults[-1]


@dataclass
class IopfParam:
    """struct iommu_fault_param: a device's partial requests and its groups awaiting a response."""

    dev: IommuDevice
    partial: list[PageRequest] = field(default_factory=list)
    pending: list[IopfGroup] = field(default_factory=list)


# ---------------------------------------------------------------------- kernel: io-pgfault.c
def iopf_queue_add_device(dev: IommuDevice) -> None:
    """iopf_queue_add_device(): ENODEV without a page_response op, EBUSY when already added."""
    if dev.unit is None or dev.unit.driver is None or not dev.unit.caps.pri:
        raise UapiError(errno.ENODEV, f"{dev.name}: the IOMMU cannot respond to page requests")
    if dev.iopf is not None:
        raise UapiError(errno.EBUSY, f"{dev.name}: already on an IOPF queue")
    dev.iopf = IopfParam(dev)


def iopf_queue_remove_device(dev: IommuDevice) -> None:
    """iopf_queue_remove_device(): drop partial requests and answer pending groups Invalid."""
    param = dev.iopf
    if param is None:
        return
    for group in list(param.pending):
        _respond(group, IOMMU_PAGE_RESP_INVALID)
    param.partial.clear()
    dev.iopf = None


def _find_handler(dev: IommuDevice, req: PageRequest) -> tuple[IommuDomain, object] | None:
    """find_fault_handler(): the attach handle of the request's PASID (or RID); drivers with a user
    PASID table fall back to a NESTED domain on the RID."""
    from vfiolab.iommu.domain import IOMMU_DOMAIN_NESTED
    group = dev.group
    if group is None:
        return None
    if req.pasid_valid:
        entry = group.pasid_array.get(req.pasid)
        if entry is None or entry.handle is None:
            if dev.unit is None or not getattr(dev.unit.driver, "user_pasid_table", False):
                return None
            entry = group.pasid_array.get(IOMMU_NO_PASID)
            if entry is None or entry.handle is None or entry.domain.type != IOMMU_DOMAIN_NESTED:
                return None
    else:
        entry = group.pasid_array.get(IOMMU_NO_PASID)
        if entry is None or entry.handle is None:
            return None
    if entry.domain.iopf_handler is None:
        return None
    return entry.domain, entry.handle


def iommu_report_device_fault(dev: IommuDevice, req: PageRequest) -> int:
    """iommu_report_device_fault(): 0 when accepted (or aborted with a Failure response); -EINVAL after
    answering Invalid because no handler exists."""
    found = _find_handler(dev, req)
    param = dev.iopf
    if found is None or param is None:
        _send_response(dev, req, IOMMU_PAGE_RESP_INVALID)
        return -errno.EINVAL
    if not req.last:
        param.partial.append(req)
        return 0
    mine = [p for p in param.partial if p.grpid == req.grpid]
    param.partial = [p for p in param.partial if p.grpid != req.grpid]
    group = IopfGroup(dev, mine + [req], found[0], found[1])
    param.pending.append(group)
    handler = found[0].iopf_handler
    assert handler is not None
    try:
        handler(group)
    except (UapiError, VfiolabError):
        if not group.answered:
            iopf_group_response(group, IOMMU_PAGE_RESP_FAILURE)
    return 0


def iopf_group_response(group: IopfGroup, code: int) -> None:
    """iopf_group_response(): answer the group (once) through the driver's page_response op."""
    if group.answered:
        raise UapiError(errno.EINVAL, "page request group already answered")
    _respond(group, code)


def iopf_group_dequeue(group: IopfGroup) -> None:
    """iopf_group_dequeue(): take the group off its device's pending list; the handler calling it answers
    the group itself, so iopf_queue_remove_device() no longer does."""
    if group.dev.iopf is not None and group in group.dev.iopf.pending:
        group.dev.iopf.pending.remove(group)


def _respond(group: IopfGroup, code: int) -> None:
    group.answered = True
    if group.dev.iopf is not None and group in group.dev.iopf.pending:
        group.dev.iopf.pending.remove(group)
    _send_response(group.dev, group.last_fault, code)


def _send_response(dev: IommuDevice, req: PageRequest, code: int) -> None:
    unit = dev.unit
    if unit is not None and unit.driver is not None:
        unit.driver.page_response(dev, req, PageResponse(req.pasid, req.grpid, code))


def iopf_queue_discard_partial(dev: IommuDevice) -> None:
    """iopf_queue_discard_partial(): forget requests whose group never completed (PRQ overflow)."""
    if dev.iopf is not None:
        dev.iopf.partial.clear()


# ---------------------------------------------------------------------- device: PCIe PRI
@dataclass
class Prg:
    """One outstanding (or answered) Page Request Group of the device."""

    index: int
    pasid: int | None
    pages: list[int]
    code: int | None = None


class PriRequester:
    """The Page Request Interface of one function (its PF's PRI capability)."""

    def __init__(self, dev: IommuDevice, fn: PciFunction, cap: PriCap) -> None:
        self.dev = dev
        self.fn = fn
        """The function holding the PRI capability (the PF for a VF)."""
        self.cap = cap
        self.prgs: dict[int, Prg] = {}
        """PRGs sent and not yet consumed by the DMA engine, by index."""
        self._next = 0
        self.requests_sent = 0
        self.responses = 0

    @property
    def enabled(self) -> bool:
        return self.cap.enabled() and not self.stopped

    @property
    def stopped(self) -> bool:
        """Response Failure seen: no more requests until PRI is reset (PCIe §10.4.2)."""
        return bool(self.fn.config_read(self.cap.offset + PriCap.STATUS, 2) & PriCap.STATUS_RF)

    def outstanding(self) -> int:
        """Page requests sent whose group has no response yet."""
        return sum(len(p.pages) for p in self.prgs.values() if p.code is None)

    def credits(self) -> int:
        """How many more page requests may be outstanding (the Allocation register)."""
        return max(self.cap.allocation() - self.outstanding(), 0)

    def request(self, pages: list[int], perm: int, pasid: int | None) -> Prg:
        """Send one PRG for ``pages`` (page-aligned addresses) with IOMMU_FAULT_PERM_* ``perm``; the
        caller made sure the credits suffice."""
        if not self.enabled:
            raise VfiolabError(f"{self.dev.name}: PRI is not enabled or stopped")
        if not pages or len(pages) > self.credits():
            raise VfiolabError(f"{self.dev.name}: {len(pages)} page requests exceed {self.credits()} credits")
        used = set(self.prgs)
        while self._next in used:
            self._next = (self._next + 1) % (1 << PRG_INDEX_BITS)
        prg = Prg(self._next, pasid, list(pages))
        self._next = (self._next + 1) % (1 << PRG_INDEX_BITS)
        self.prgs[prg.index] = prg
        assert self.dev.unit is not None
        for i, addr in enumerate(pages):
            flags = IOMMU_FAULT_PAGE_REQUEST_PASID_VALID if pasid is not None else 0
            if i == len(pages) - 1:
                flags |= IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE
            self.requests_sent += 1
            self.dev.unit.page_request(self.dev, PageRequest(flags, pasid or 0, prg.index, perm, addr))
        return prg

    def receive_response(self, grpid: int, code: int) -> None:
        """A PRG Response Message arrives (PCIe §10.4.2.1)."""
        self.responses += 1
        prg = self.prgs.get(grpid)
        if prg is None or prg.code is not None:
            self.cap.signal(PriCap.STATUS_UPRGI)
            return
        prg.code = code
        if code == IOMMU_PAGE_RESP_FAILURE:
            self.cap.signal(PriCap.STATUS_RF)

    def consume(self, index: int) -> int | None:
        """The response code of PRG ``index`` once answered (the PRG is forgotten then)."""
        prg = self.prgs.get(index)
        if prg is None or prg.code is None:
            return None
        del self.prgs[index]
        return prg.code


def perm_for(write: bool, priv: bool = False) -> int:
    """IOMMU_FAULT_PERM_* bits of a page request for a read or a write access."""
    return (IOMMU_FAULT_PERM_WRITE if write else IOMMU_FAULT_PERM_READ) | (IOMMU_FAULT_PERM_PRIV if priv else 0)
