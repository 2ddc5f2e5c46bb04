"""Shared pytest setup: make ``tests/`` importable for helper modules such as ``lspci_oracle``."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))


# ---------------------------------------------------------------------------------------------- summaries
# Printed at the end of every run, also under pytest-xdist: this conftest is loaded by the controller,
# which receives every test report (worker-side prints and sub-directory conftests never reach it).
import pytest

_conformance: dict[str, str] = {}
_summaries: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    for key, value in report.user_properties:
        if key == "summary" and report.when == "call":
            _summaries.append(str(value))
    if "conformance" not in report.nodeid:
        return
    from conformance.catalogue import RUN_IN_ID

    m = RUN_IN_ID.search(report.nodeid)
    if not m:
        return
    run = m.group(1)
    if (report.when == "call" or report.outcome != "passed") and _conformance.get(run) != "failed":
        _conformance[run] = report.outcome


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _conformance:
        from conformance.catalogue import all_runs, not_ported

        runs, listed = all_runs(), not_ported()
        outcomes = list(_conformance.values())
        failed = sorted(r for r, o in _conformance.items() if o == "failed")
        terminalreporter.write_sep("-", "iommufd kselftest conformance")
        terminalreporter.write_line(
            f"ported runs executed: {len(_conformance)} of {len(runs)} (passed {outcomes.count('passed')}, "
            f"skipped as the kernel does {outcomes.count('skipped')}, failed {len(failed)}); "
            f"listed as not ported: {len(listed)} (tests/conformance/NOT_PORTED.md)")
        both = sorted(set(_conformance) & set(listed))
        if both:
            terminalreporter.write_line(f"ran but listed as not ported: {', '.join(both)}")
    if _summaries:
        terminalreporter.write_sep("-", "vfiolab")
        for line in _summaries:
            terminalreporter.write_line(line)
