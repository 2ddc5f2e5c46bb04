"""Conformance suite plumbing: the selftest environment as a fixture, and a session-end report of how
many runs of the kernel's iommufd selftest are ported (their pytest ids carry the harness names)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from catalogue import RUN_IN_ID, all_runs, not_ported
from kself import Env

from vfiolab.memory import PhysMemory

_results: dict[str, str] = {}


@pytest.fixture(scope="session")
def mem() -> Iterator[PhysMemory]:
    """Simulated RAM shared by the session (sparse: only touched frames cost host memory)."""
    m = PhysMemory(4 << 30, name="conformance-ram")
    yield m
    m.close()


@pytest.fixture
def env(mem: PhysMemory) -> Iterator[Env]:
    """A fresh process, selftest mock and /dev/iommu; on success the kernel's teardown checks run and
    every frame the test took must be back."""
    before = mem.frames_in_use
    e = Env(mem)
    try:
        yield e
        e.teardown()
    finally:
        e.release()
    assert mem.frames_in_use == before, f"{mem.frames_in_use - before} frame(s) leaked"


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    m = RUN_IN_ID.search(report.nodeid)
    if not m:
        return
    run = m.group(1)
    if report.when == "call" or report.outcome != "passed":
        prev = _results.get(run)
        if prev != "failed":
            _results[run] = report.outcome


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _results:
        return
    runs = all_runs()
    skipped = not_ported()
    passed = sum(1 for r in _results.values() if r == "passed")
    skipped_runs = sum(1 for r in _results.values() if r == "skipped")
    failed = sorted(r for r, o in _results.items() if o == "failed")
    terminalreporter.write_sep("-", "iommufd kselftest conformance")
    terminalreporter.write_line(f"ported runs executed: {len(_results)} of {len(runs)} "
                                f"(passed {passed}, skipped as the kernel does {skipped_runs}, "
                                f"failed {len(failed)}); "
                                f"listed as not ported: {len(skipped)} (tests/conformance/NOT_PORTED.md)")
    both = sorted(set(_results) & set(skipped))
    if both:
        terminalreporter.write_line(f"ran but listed as not ported: {', '.join(both)}")
    if len(_results) + len(skipped) == len(runs):
        return
    missing = [r for r in runs if r not in _results and r not in skipped]
    if missing and len(_results) + len(skipped) > len(runs) // 2:
        terminalreporter.write_line(f"neither ported nor listed: {len(missing)}")
