"""Recoverable faults: PCIe PRI on the device (groups, Last flag, allocation credits, Response
Failure, Unexpected PRG Index) and drivers/iommu/io-pgfault.c (partial requests, group completion on the
last page, responses), with the VT-d driver's enabling rules (intel/iommu.c, intel/prq.c)."""

from __future__ import annotations

import errno

import pytest

from vfiolab.errors import UapiError
from vfiolab.iommu.device import IommuDevice
from vfiolab.iommu.dma import DmaPort
from vfiolab.iommu.domain import IOMMU_DOMAIN_IDENTITY, PagingDomain
from vfiolab.iommu.driver import make_unit
from vfiolab.iommu.fault import (
    IOMMU_FAULT_PERM_READ,
    IOMMU_FAULT_PERM_WRITE,
    DmaFault,
    DmaStalled,
    FaultReason,
)
from vfiolab.iommu.group import (
    iommu_attach_device_pasid,
    iommu_attach_group_handle,
    iommu_detach_group_handle,
    iommu_group_claim_dma_owner,
    iommu_probe_device,
)
from vfiolab.iommu.pagetable import IOMMU_READ, IOMMU_WRITE
from vfiolab.iommu.pri import (
    IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE,
    IOMMU_FAULT_PAGE_REQUEST_PASID_VALID,
    IOMMU_PAGE_RESP_FAILURE,
    IOMMU_PAGE_RESP_INVALID,
    IOMMU_PAGE_RESP_SUCCESS,
    IopfGroup,
    PageRequest,
    PageResponse,
    Prg,
    iommu_report_device_fault,
    iopf_group_response,
)
from vfiolab.iommu.unit import IommuUnit
from vfiolab.memory.phys import PhysMemory
from vfiolab.pci.caps.ats import AtsCap
from vfiolab.pci.caps.pasid import PasidCap
from vfiolab.pci.caps.pri import PriCap
from vfiolab.pci.function import RcIntegratedEndpoint

RW = IOMMU_READ | IOMMU_WRITE
IOVA = 0x20_0000


class Rig:
    """An intel unit, an ATS+PRI function attached to a paging domain whose IOPF handler queues groups
    (like an iommufd FAULT object) until the test answers them."""

    def __init__(self, capacity: int = 32, pasid: bool = False, prg_pasid: bool = False) -> None:
        self.mem = PhysMemory(1 << 27)
        self.unit: IommuUnit = make_unit("intel", self.mem)
        caps = [AtsCap(), PriCap(capacity, prg_pasid_required=prg_pasid)] + ([PasidCap(20)] if pasid else [])
        self.fn = RcIntegratedEndpoint(0x8086, 0x99, 0x120000, express={"ee_prefix": 1}, ext_caps=caps)
        self.pri_cap = self.fn.caps.find(PriCap.cap_id, extended=True)
        self.dev = IommuDevice("acc", 0x28, pci=self.fn)
        self.group = iommu_probe_device(self.dev, self.unit, default_type=IOMMU_DOMAIN_IDENTITY)
        iommu_group_claim_dma_owner(self.group, "test")
        self.dom: PagingDomain = self.unit.driver.domain_alloc_paging(self.dev)
        self.queue: list[IopfGroup] = []
        self.dom.iopf_handler = self.queue.append
        self.port = DmaPort(self.dev)

    def attach(self) -> None:
        iommu_attach_group_handle(self.dom, self.group, object())

    def status(self) -> int:
        return self.fn.config_read(self.pri_cap.offset + PriCap.STATUS, 2)


def test_probe_enables_ats_then_pri_with_allocation() -> None:
    """intel_iommu_probe_finalize(): ATS with STU 4 KiB, PRI with min(capacity, PRQ_DEPTH 2048)."""
    small, big = Rig(capacity=64), Rig(capacity=4096)
    assert small.dev.ats_enabled and small.dev.pri_enabled
    assert small.pri_cap.allocation() == 64 and big.pri_cap.allocation() == 2048
    ats = small.fn.caps.find(AtsCap.cap_id, extended=True)
    assert small.fn.config_read(ats.offset + AtsCap.CTRL, 2) == AtsCap.CTRL_ENABLE  # STU field 0 = 4 KiB
    assert not small.status() & PriCap.STATUS_STOPPED


def test_pasid_user_needs_prg_response_pasid() -> None:
    """iommu_enable_pci_pri(): a PASID-enabled function gets PRI only if PRG responses carry the PASID."""
    assert Rig(pasid=True).dev.pasid_enabled and not Rig(pasid=True).dev.pri_enabled
    assert Rig(pasid=True, prg_pasid=True).dev.pri_enabled


def test_page_request_group_success_then_retry() -> None:
    r = Rig()
    r.attach()
    with pytest.raises(DmaStalled) as st:
        r.port.dma_write(IOVA + 0x10, b"x" * 0x2000)  # pages IOVA .. IOVA+0x2000
    (group,) = r.queue
    assert [f.addr for f in group.faults] == [IOVA, IOVA + 0x1000, IOVA + 0x2000]
    assert [f.last for f in group.faults] == [False, False, True]
    assert {f.perm for f in group.faults} == {IOMMU_FAULT_PERM_WRITE}
    assert group.last_fault.grpid == st.value.prg_index
    with pytest.raises(DmaStalled):  # still waiting: no new request
        r.port.dma_write(IOVA + 0x10, b"x")
    assert r.dev.pri is not None and r.dev.pri.requests_sent == 3
    frames = r.mem.alloc_frames(3, contiguous=True)
    r.dom.map(IOVA, int(frames[0]) << 12, 0x3000, RW)
    iopf_group_response(group, IOMMU_PAGE_RESP_SUCCESS)
    r.port.dma_write(IOVA + 0x10, b"done")
    assert r.mem.read((int(frames[0]) << 12) + 0x10, 4) == b"done"
    with pytest.raises(UapiError):
        iopf_group_response(group, IOMMU_PAGE_RESP_SUCCESS)  # answered once


def test_invalid_response_faults_the_dma() -> None:
    r = Rig()
    r.attach()
    with pytest.raises(DmaStalled):
        r.port.dma_read(IOVA, 4)
    iopf_group_response(r.queue.pop(), IOMMU_PAGE_RESP_INVALID)
    with pytest.raises(DmaFault) as err:
        r.port.dma_read(IOVA, 4)
    assert err.value.record.reason == FaultReason.PRI_INVALID and err.value.record.perm == IOMMU_FAULT_PERM_READ


def test_response_failure_stops_pri() -> None:
    """PCIe §10.4.2: Response Failure sets RF and the function stops issuing page requests."""
    r = Rig()
    r.attach()
    with pytest.raises(DmaStalled):
        r.port.dma_read(IOVA, 4)
    iopf_group_response(r.queue.pop(), IOMMU_PAGE_RESP_FAILURE)
    with pytest.raises(DmaFault) as err:
        r.port.dma_read(IOVA, 4)
    assert err.value.record.reason == FaultReason.PRI_FAILURE
    assert r.status() & PriCap.STATUS_RF and not r.dev.pri_enabled
    sent = r.dev.pri.requests_sent  # type: ignore[union-attr]
    with pytest.raises(DmaFault) as err:
        r.port.dma_read(IOVA, 4)
    assert err.value.record.reason == FaultReason.NOT_PRESENT and r.dev.pri.requests_sent == sent  # type: ignore[union-attr]


def test_outstanding_requests_limited_by_allocation() -> None:
    r = Rig(capacity=4)
    r.attach()
    with pytest.raises(DmaStalled):
        r.port.dma_read(IOVA, 10 * 4096)
    assert len(r.queue[0].faults) == 4 and r.dev.pri is not None and r.dev.pri.credits() == 0
    frames = r.mem.alloc_frames(10, contiguous=True)
    r.dom.map(IOVA, int(frames[0]) << 12, 10 * 4096, RW)
    iopf_group_response(r.queue.pop(), IOMMU_PAGE_RESP_SUCCESS)
    assert len(r.port.dma_read(IOVA, 10 * 4096)) == 10 * 4096


def test_no_handler_answers_invalid() -> None:
    """iommu_report_device_fault() without an IOPF-capable domain: IOMMU_PAGE_RESP_INVALID."""
    r = Rig()
    r.dom.iopf_handler = None
    r.attach()
    with pytest.raises(DmaFault) as err:
        r.port.dma_read(IOVA, 4)
    assert err.value.record.reason == FaultReason.PRI_INVALID


def test_partial_requests_wait_for_last_page() -> None:
    """io-pgfault.c: non-last requests are kept per device; the last completes its group, in order."""
    r = Rig()
    r.attach()
    req = lambda addr, grp, last: PageRequest(IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE if last else 0, 0, grp,
                                               IOMMU_FAULT_PERM_READ, addr)
    assert iommu_report_device_fault(r.dev, req(0x1000, 5, False)) == 0
    assert iommu_report_device_fault(r.dev, req(0x9000, 6, False)) == 0
    assert iommu_report_device_fault(r.dev, req(0x2000, 5, False)) == 0
    assert not r.queue
    iommu_report_device_fault(r.dev, req(0x3000, 5, True))
    (g,) = r.queue
    assert [f.addr for f in g.faults] == [0x1000, 0x2000, 0x3000]
    assert r.dev.iopf is not None and [p.grpid for p in r.dev.iopf.partial] == [6]


def test_unexpected_prg_index() -> None:
    """A response for a group the function has not outstanding sets UPRGI."""
    r = Rig()
    r.unit.driver.page_response(r.dev, PageRequest(0, 0, 77, 1, 0), PageResponse(0, 77, 0))
    assert r.status() & PriCap.STATUS_UPRGI


def test_detach_answers_pending_groups_invalid() -> None:
    """iopf_queue_remove_device() when the last IOPF domain goes: pending groups get Invalid."""
    r = Rig()
    r.attach()
    with pytest.raises(DmaStalled):
        r.port.dma_read(IOVA, 4)
    iommu_detach_group_handle(r.dom, r.group)
    assert r.dev.iopf is None
    with pytest.raises(DmaFault) as err:
        r.port.dma_read(IOVA, 4)
    assert err.value.record.reason in (FaultReason.PRI_INVALID, FaultReason.BLOCKED)


def test_iopf_domain_needs_pri() -> None:
    """iopf_for_domain_set(): ENODEV without PRI, and the attach changes nothing."""
    r = Rig()
    assert r.dev.pci is not None
    from vfiolab.iommu import pcie_ats
    pcie_ats.disable_pri(r.dev.pci)
    with pytest.raises(UapiError) as err:
        r.attach()
    assert err.value.errno == errno.ENODEV and r.group.domain is r.unit.driver.blocked_domain


def test_prq_rejects_malformed_requests() -> None:
    """intel/prq.c: a non-canonical address is answered Invalid without reaching the handler."""
    r = Rig()
    r.attach()
    assert r.dev.pri is not None
    r.dev.pri.prgs[3] = Prg(3, None, [1 << 60])
    r.unit.page_request(r.dev, PageRequest(IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE, 0, 3, IOMMU_FAULT_PERM_READ,
                                           1 << 60))
    assert not r.queue and r.dev.pri.consume(3) == IOMMU_PAGE_RESP_INVALID


def test_handler_refusal_answers_failure() -> None:
    r = Rig()

    def refuse(group: IopfGroup) -> None:
        raise UapiError(errno.EBUSY, "queue full")

    r.dom.iopf_handler = refuse
    r.attach()
    with pytest.raises(DmaFault) as err:
        r.port.dma_read(IOVA, 4)
    assert err.value.record.reason == FaultReason.PRI_FAILURE


def test_requests_with_pasid_go_to_the_pasid_domain() -> None:
    """find_fault_handler(): PASID_VALID requests use the attach handle of that PASID."""
    r = Rig(pasid=True, prg_pasid=True)
    assert r.dev.pasid_enabled and r.dev.pri_enabled
    iommu_attach_device_pasid(r.dom, r.dev, 5, object())
    with pytest.raises(DmaStalled):
        r.port.dma_read(IOVA, 4, pasid=5)
    (g,) = r.queue
    f = g.last_fault
    assert f.pasid_valid and f.pasid == 5 and f.flags == IOMMU_FAULT_PAGE_REQUEST_PASID_VALID | \
        IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE
