"""Parity of the conformance suite with the real kernel: the runs of Linux 7.2's own iommufd selftests that
pass (and skip) on the kernel rig are exactly the runs that pass (and skip) in tests/conformance on vfiolab.

The kernel side is rig/kernel's cached TAP (kselftest_cache.py; `make kernel-rig` makes it); the vfiolab side
is a fresh `pytest tests/conformance` in a subprocess with a JUnit report, whose test ids carry the harness
names (``fixture.variant.test``).  Every name must be on both sides, nothing may fail on either side, and the
pass and skip sets must be equal: 246/246 runs of iommufd.c and 8/8 of iommufd_fail_nth.c.
"""

from __future__ import annotations

import functools
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from kselftest_cache import REPO, kernel_selftest_results

pytestmark = [pytest.mark.interop, pytest.mark.kernel]

_RUN = re.compile(r"\[(?:.*-)?([A-Za-z0-9_]+\.[A-Za-z0-9_.]+)\]$")
"""A kselftest run name at the end of a pytest id (``test_area[iommufd_ioas.mock_domain.area]``)."""
EXPECTED_RUNS = {"iommufd": 246, "iommufd_fail_nth": 8}


@functools.cache
def conformance_outcomes() -> dict[str, str]:
    """Run tests/conformance once and map each kselftest run name to pass, skip or fail (a run that several
    pytest items test fails if any does, and is skipped only if all are)."""
    report = Path(tempfile.mkdtemp(prefix="vfiolab-parity-")) / "conformance.xml"
    try:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
                               "tests/conformance", f"--junitxml={report}"],
                              cwd=REPO, capture_output=True, text=True, timeout=900, check=False)
        if not report.exists():
            pytest.fail(f"pytest tests/conformance wrote no report (exit {proc.returncode}):\n{proc.stdout[-2000:]}")
        root = ET.parse(report).getroot()
    finally:
        report.unlink(missing_ok=True)
        report.parent.rmdir()
    out: dict[str, str] = {}
    for case in root.iter("testcase"):
        m = _RUN.search(case.get("name", ""))
        if not m:
            continue
        tags = {child.tag for child in case}
        result = "fail" if tags & {"failure", "error"} else "skip" if "skipped" in tags else "pass"
        prev = out.get(m.group(1))
        if prev == "fail" or result == "fail":
            out[m.group(1)] = "fail"
        elif prev is None or prev == "skip":
            out[m.group(1)] = result
    return out


@pytest.mark.parametrize("program", sorted(EXPECTED_RUNS))
def test_pass_and_skip_sets_equal_the_kernels(program: str) -> None:
    kernel = {r["name"]: str(r["result"]) for r in kernel_selftest_results(program)}
    assert len(kernel) == EXPECTED_RUNS[program], f"the kernel ran {len(kernel)} runs of {program}"
    fixtures = {n.split(".")[0] for n in kernel}
    ours = {name: res for name, res in conformance_outcomes().items() if name.split(".")[0] in fixtures}
    missing = sorted(set(kernel) - set(ours))
    extra = sorted(set(ours) - set(kernel))
    assert not missing, f"runs the kernel has that tests/conformance lacks: {missing}"
    assert not extra, f"runs in tests/conformance the kernel does not have: {extra}"
    for side, results in (("kernel", kernel), ("vfiolab", ours)):
        failed = sorted(n for n, r in results.items() if r not in ("pass", "skip"))
        assert not failed, f"{side} fails {failed}"
    for outcome in ("pass", "skip"):
        k = {n for n, r in kernel.items() if r == outcome}
        o = {n for n, r in ours.items() if r == outcome}
        assert k == o, f"{outcome}: kernel only {sorted(k - o)}, vfiolab only {sorted(o - k)}"
    passed = sum(1 for r in ours.values() if r == "pass")
    print(f"{program}: {len(ours)}/{len(kernel)} runs on both sides, {passed} pass, {len(ours) - passed} skip")
