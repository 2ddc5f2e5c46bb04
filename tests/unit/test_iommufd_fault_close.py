"""A page-request group still queued on a fault queue when the iommufd closes is answered exactly once,
Invalid (drivers/iommu/iommufd/eventq.c: iommufd_fault_iopf_handler() dequeues it from the device's
pending list, so io-pgfault.c iopf_queue_remove_device() does not answer it as well)."""

from __future__ import annotations

import pytest

from vfiolab.difftest.corpus import load_corpus
from vfiolab.difftest.model_backend import ModelBackend
from vfiolab.difftest.runner import run_scenario
from vfiolab.iommu import pri
from vfiolab.iommu.pri import IOMMU_PAGE_RESP_INVALID, PageRequest


def test_queued_group_answered_once_at_close(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[tuple[int, int]] = []
    real = pri._send_response

    def record(dev: object, req: PageRequest, code: int) -> None:
        sent.append((req.grpid, code))
        real(dev, req, code)  # type: ignore[arg-type]

    monkeypatch.setattr(pri, "_send_response", record)
    scenario, = load_corpus(["known-iopf-pending-at-close"])
    records, _ = run_scenario(scenario, ModelBackend())
    assert [r["errno"] for r in records[:len(scenario.calls)]] == ["ok"] * len(scenario.calls)
    assert all(r["errno"] != "crash" for r in records), records[-1]
    assert sent == [(2, IOMMU_PAGE_RESP_INVALID)]
