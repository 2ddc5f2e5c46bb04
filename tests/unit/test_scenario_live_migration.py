"""The live-migration scenario end to end (a real second process as the destination): it migrates edu and
testdev under DMA with 0 lost pages and equal device state; a transfer broken on purpose is caught as lost
pages; and Linux 7.2's short dirty report for contiguous AMD v1 entries loses pages when the IOMMU bitmap
is the only tracker (DMA logging covers them)."""

from __future__ import annotations

import os
import re
from typing import Any

import pytest

from vfiolab.cli.main import main
from vfiolab.scenarios import get

SMALL = {"ram_mib": 16, "dma_every": 32, "converge_pages": 8}
"""16 MiB of guest RAM and a dirtier guest: several pre-copy rounds in about a second."""


def run(**params: Any) -> tuple[Any, list[str]]:
    lines: list[str] = []
    scenario = get("live-migration")
    result = scenario.run(scenario.resolve({**SMALL, **params}), lines.append)
    return result, lines


def test_migration_under_dma_loses_nothing() -> None:
    result, lines = run()
    rec = result.data
    assert result.ok and result.failure is None, lines
    assert any(re.search(r": 0 lost pages;", line) for line in lines)
    assert rec["destination"]["pid"] != os.getpid() and rec["destination"]["exit_status"] == 0
    rounds = rec["rounds"]
    npages = 16 * 256
    assert rounds[0]["pages_sent"] == npages and rounds[0]["dirty_iommu"] is None
    assert len(rounds) >= 2
    for r in rounds[1:]:
        # 4 KiB IOMMU pages on VT-d: both trackers saw exactly the same pages, and that is what was sent
        assert r["dirty_iommu"] == r["dirty_dma_log"] == r["pages_sent"] > 0
    assert rounds[0]["dma_writes"] > 0 and rounds[0]["device_precopy_bytes"]["testdev"] > 65536
    stop = rec["stop_copy"]
    assert stop["paths"] == {"testdev": ["PRE_COPY", "PRE_COPY_P2P", "STOP_COPY"],
                             "edu": ["RUNNING", "RUNNING_P2P", "STOP", "STOP_COPY"]}
    assert stop["states"] == {"testdev": "STOP_COPY", "edu": "STOP_COPY"}
    assert stop["device_bytes"]["testdev"] == stop["mig_data_size"]["testdev"]
    ver = rec["verification"]
    assert ver["lost_pages"] == 0 and ver["ram_equal"] and ver["pages_compared"] == npages
    assert all(d["equal"] for d in ver["device_state"].values())
    assert ver["tracker_misses"] == {"iommu": 0, "dma_log": 0}
    assert ver["destination_states"] == {"testdev": "STOP", "edu": "STOP"}
    # everything the source sent arrived
    assert ver["pages_received"] == sum(r["pages_sent"] for r in rounds) + stop["pages_sent"]
    sent_dev = sum(r["device_precopy_bytes"]["testdev"] for r in rounds) + stop["device_bytes"]["testdev"]
    assert ver["device_bytes_received"] == {"testdev": sent_dev, "edu": stop["device_bytes"]["edu"]}
    post = rec["post_migration"]
    assert post["states"] == {"testdev": "RUNNING", "edu": "RUNNING"}
    assert post["testdev"]["dma_ok"] and post["testdev"]["interrupts"] == 1
    assert post["edu"]["factorial_10"] == 3628800 and post["edu"]["copy_ok"] and post["edu"]["interrupts"] == 3
    for dev in rec["interrupts"].values():
        assert dev["interrupts"] == dev["operations"] > 0
    assert rec["dma"]["iommu_fault"]["refused"]


@pytest.mark.parametrize("mode", ["skip-harvest", "skip-final"])
def test_broken_transfer_is_caught_as_lost_pages(mode: str) -> None:
    result, _ = run(break_transfer=mode)
    ver = result.data["verification"]
    assert not result.ok and ver["lost_pages"] > 0 and not ver["ram_equal"]
    assert f"{ver['lost_pages']} lost pages" in result.failure
    if mode == "skip-final":
        # only what the guest wrote after the last harvest is missing: at most one tick's DMA (16 KiB
        # from testdev, 4 KiB from edu, each possibly straddling a page)
        assert ver["lost_pages"] <= 5 + 2
    # the device state itself still migrated
    assert all(d["equal"] for d in ver["device_state"].values())


def test_amd_iommu_bitmap_alone_loses_pages_dma_logging_covers_them() -> None:
    alone, _ = run(iommu="amd", trackers="iommu")
    assert alone.data["verification"]["tracker_misses"]["iommu"] > 0
    assert not alone.ok and alone.data["verification"]["lost_pages"] > 0
    both, lines = run(iommu="amd")
    assert both.ok and both.data["verification"]["lost_pages"] == 0
    assert any("record_dirty()" in line for line in lines)


def test_cli_exit_status_on_lost_pages(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "-s", "ram_mib=16", "-s", "break_transfer=skip-harvest"]) == 1
    out, err = capsys.readouterr()
    assert re.search(r": [1-9]\d* lost pages;", out) and not re.search(r"(?<!\d)0 lost pages", out)
    assert err.startswith("vfiolab: live-migration failed: ") and "lost pages" in err
    assert "Traceback" not in err
