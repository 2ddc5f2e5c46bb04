"""Linux 7.2's own iommufd selftests, run on a real kernel built with IOMMUFD_TEST (rig/kernel/build.sh).

These read the cached TAP of the guest runs ($VFIOLAB_CACHE/kernel/<key>/runs/) and check what
real-peers.md §6 observed: 246 runs of tools/testing/selftests/iommu/iommufd.c, 241 pass and 5 skip, under
the names the kselftest harness derives from the C source.  A cold build takes 10+ minutes, so these tests
never build it: a missing cache fails with the command to run (`make kernel-rig`); `make kernel-test` runs
them.  tests/interop/kernel/kselftest_cache.py offers the same results to other suites.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from kselftest_cache import (
    FRAGMENT,
    SRC,
    kernel_dir,
    kernel_dmesg,
    kernel_selftest_report,
    kernel_selftest_results,
    run_dir,
)

pytestmark = [pytest.mark.interop, pytest.mark.kernel]

SELFTEST_DIR = SRC / "tools" / "testing" / "selftests" / "iommu"

# kselftest_harness.h registration macros (TEST_FAIL_NTH in iommufd_fail_nth.c wraps TEST_F); a line ending in
# a backslash belongs to a macro definition (TEST_FAIL_NTH's own body), not a registration.
_MACRO = re.compile(r"^\s*(FIXTURE|FIXTURE_VARIANT_ADD|TEST_F|TEST_F_TIMEOUT|TEST_FAIL_NTH)"
                    r"\(\s*(\w+)\s*(?:,\s*(\w+))?[^\\\n]*$", re.MULTILINE)


# Report formats of lib/bug.c, kernel/panic.c (__warn), arch/x86 die(), lib/refcount.c, lib/ubsan.c.
SPLAT = r"WARNING:|BUG:|Oops|Call Trace|Kernel panic|refcount_t:|UBSAN:"


def harness_names(source: Path) -> list[str]:
    """The run names the kselftest harness gives a test program, derived from its C source.

    kselftest_harness.h runs, in registration (= source) order, every fixture, each of its variants (or one
    unnamed variant), each of its tests, named "fixture.variant.test" or "fixture.test" (__run_test).
    """
    fixtures: dict[str, tuple[list[str], list[str]]] = {}
    for kind, first, second in _MACRO.findall(source.read_text()):
        if kind == "FIXTURE":
            fixtures[first] = ([], [])
        elif kind == "FIXTURE_VARIANT_ADD":
            fixtures[first][0].append(second)
        else:
            fixtures[first][1].append(second)
    return [f"{f}.{v}.{t}" if v else f"{f}.{t}"
            for f, (variants, tests) in fixtures.items() for v in (variants or [""]) for t in tests]


def test_kernel_config_holds_the_fragment() -> None:
    """The cached kernel was configured with every option of rig/kernel/iommufd.config (IOMMUFD_TEST above all)."""
    config = set((kernel_dir() / "config").read_text().splitlines())
    wanted = [ln for ln in FRAGMENT.read_text().splitlines() if ln.startswith("CONFIG_")]
    assert "CONFIG_IOMMUFD_TEST=y" in wanted
    assert [w for w in wanted if w not in config] == []
    assert not any(ln.startswith("CONFIG_IOMMUFD_VFIO_CONTAINER=") for ln in config)


def test_iommufd_counts_as_observed() -> None:
    """real-peers.md §6: "# PASSED: 246 / 246 tests passed." with 241 pass and 5 skip."""
    report = kernel_selftest_report("iommufd")
    assert report.plan == 246
    assert len(report.runs) == 246
    assert report.counts() == {"pass": 241, "fail": 0, "skip": 5, "xfail": 0, "xpass": 0}
    assert report.totals == {"pass": 241, "fail": 0, "xfail": 0, "xpass": 0, "skip": 5, "error": 0}
    assert report.summary == "PASSED: 246 / 246 tests passed."


def test_iommufd_names_are_the_harness_names() -> None:
    """Every run is named fixture[.variant].test exactly as the harness derives it from iommufd.c, in order."""
    names = [r["name"] for r in kernel_selftest_results("iommufd")]
    assert names == harness_names(SELFTEST_DIR / "iommufd.c")


def test_iommufd_skips_are_the_no_viommu_variant() -> None:
    """The 5 skips: iommufd_viommu tests that need a vIOMMU, run in the no_viommu variant (SKIP() in iommufd.c)."""
    skipped = {r["name"]: r["reason"] for r in kernel_selftest_results("iommufd") if r["result"] == "skip"}
    assert skipped == {f"iommufd_viommu.no_viommu.{t}": "Skipping test for variant no_viommu" for t in (
        "viommu_alloc_nested_iopf", "viommu_alloc_with_data", "vdevice_cache", "hw_queue", "vdevice_tombstone")}


def test_fail_nth_passes_every_case() -> None:
    """iommufd_fail_nth.c: the 8 basic_fail_nth cases pass with fault injection on (none skipped for lack of it)."""
    report = kernel_selftest_report("iommufd_fail_nth")
    assert report.names() == harness_names(SELFTEST_DIR / "iommufd_fail_nth.c")
    assert len(report.runs) == 8
    assert report.counts()["pass"] == 8
    assert report.summary == "PASSED: 8 / 8 tests passed."


def test_fail_nth_really_injected_failures() -> None:
    """A fail-nth point that never fires ends each sweep after one pass, so 8 passes alone prove nothing: the
    guest's log must show allocations failing with -ENOMEM inside the mock driver (selftest.c dev_err)."""
    failed = [ln for ln in kernel_dmesg("iommufd_fail_nth").splitlines() if "iommufd_mock" in ln and "-12" in ln]
    assert len(failed) >= 10, failed


@pytest.mark.parametrize("name", ["iommufd", "iommufd_fail_nth"])
def test_no_kernel_splats(name: str) -> None:
    """What iommufd_fail_nth is for: no WARN/BUG/Oops/refcount report in the guest's kernel log (CONFIG_BUG=y)."""
    splats = [ln for ln in kernel_dmesg(name).splitlines() if re.search(SPLAT, ln)]
    assert splats == []


def test_stored_results_are_the_parse_of_the_tap() -> None:
    """results.json and names.txt in the cache (what other suites read) agree with a fresh parse of tap.txt."""
    d = run_dir("iommufd")
    fresh = kernel_selftest_results("iommufd")
    assert json.loads((d / "results.json").read_text()) == fresh
    assert (d / "names.txt").read_text().splitlines() == [r["name"] for r in fresh]


def test_harness_names_cover_the_variants() -> None:
    """The source-derived list itself: 8 fixtures and 246 runs in iommufd.c (iommufd-uapi.md §8)."""
    names = harness_names(SELFTEST_DIR / "iommufd.c")
    assert len(names) == 246 and len(set(names)) == 246
    assert len({n.split(".")[0] for n in names}) == 8
    assert "iommufd_ioas.mock_domain.area" in names and "iommufd.simple_close" in names
