"""rig/kernel/parse_tap.py on TAP written the way kselftest.h / kselftest_harness.h print it.

The transcripts below follow the printf formats of ksft_print_header, ksft_set_plan, __run_test (the
"#  RUN" and "#  OK/FAIL" lines), __TH_LOG, SKIP(), ksft_test_result_code and ksft_print_cnts.  Damaged
streams (a guest that died mid-run, a lost line) must be errors naming the place, never shorter results.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kselftest_cache import load_parser

pytestmark = [pytest.mark.interop, pytest.mark.kernel]

tap = load_parser()

GOOD = """\
TAP version 13
1..4
# Starting 4 tests from 2 test cases.
#  RUN           iommufd.simple_close ...
#            OK  iommufd.simple_close
ok 1 iommufd.simple_close
#  RUN           iommufd_ioas.mock_domain.area ...
# iommufd.c:1234:area:Expected 0 (0) == rc (-1)
# area: Test terminated by assertion
#          FAIL  iommufd_ioas.mock_domain.area
not ok 2 iommufd_ioas.mock_domain.area
#  RUN           iommufd_viommu.no_viommu.hw_queue ...
#      SKIP      Skipping test: no viommu
#            OK  iommufd_viommu.no_viommu.hw_queue
ok 3 iommufd_viommu.no_viommu.hw_queue # SKIP Skipping test: no viommu
#  RUN           iommufd_ioas.mock_domain.copy_sweep ...
#          FAIL  iommufd_ioas.mock_domain.copy_sweep
not ok 4 iommufd_ioas.mock_domain.copy_sweep #  Test terminated by timeout
# FAILED: 2 / 4 tests passed.
# 1 skipped test(s) detected. Consider enabling relevant config options to improve coverage.
# Totals: pass:1 fail:2 xfail:0 xpass:0 skip:1 error:0
"""


def test_results_names_and_reasons() -> None:
    """Pass, fail with the test's own assertion lines as reason, skip with its directive, fail with a message."""
    report = tap.parse_tap(GOOD)
    assert report.plan == 4
    assert [r.to_json() for r in report.runs] == [
        {"name": "iommufd.simple_close", "result": "pass", "reason": None},
        {"name": "iommufd_ioas.mock_domain.area", "result": "fail",
         "reason": "iommufd.c:1234:area:Expected 0 (0) == rc (-1)\narea: Test terminated by assertion"},
        {"name": "iommufd_viommu.no_viommu.hw_queue", "result": "skip", "reason": "Skipping test: no viommu"},
        {"name": "iommufd_ioas.mock_domain.copy_sweep", "result": "fail", "reason": "Test terminated by timeout"},
    ]
    assert report.counts() == {"pass": 1, "fail": 2, "skip": 1, "xfail": 0, "xpass": 0}
    assert report.totals["fail"] == 2 and report.summary == "FAILED: 2 / 4 tests passed."


def test_crlf_from_a_serial_port_is_tolerated() -> None:
    """A serial line discipline may add CR before LF; the results are the same."""
    assert tap.parse_tap(GOOD.replace("\n", "\r\n")).runs == tap.parse_tap(GOOD).runs


def test_xfail_and_xpass_directives() -> None:
    """XFAIL_ADD tests report "ok N name # XFAIL reason" / "# XPASS" (ksft_test_result_code)."""
    text = ("TAP version 13\n1..2\nok 1 f.v.a # XFAIL unknown\nok 2 f.v.b # XPASS unknown\n"
            "# Totals: pass:0 fail:0 xfail:1 xpass:1 skip:0 error:0\n")
    assert [(r.result, r.reason) for r in tap.parse_tap(text).runs] == [("xfail", "unknown"), ("xpass", "unknown")]


@pytest.mark.parametrize(("damage", "message"), [
    (lambda s: s.replace("TAP version 13\n", ""), "expected 'TAP version 13'"),
    (lambda s: s.replace("1..4\n", ""), "before the plan"),
    (lambda s: s.replace("1..4\n", "1..5\n"), "4 results for a plan of 5"),
    (lambda s: s.replace("ok 3 iommufd_viommu", "ok 4 iommufd_viommu"), "result number 4, expected 3"),
    (lambda s: s.replace("# Totals: pass:1", "# Totals: pass:2"), "disagree"),
    (lambda s: s.replace("# Totals: pass:1 fail:2 xfail:0 xpass:0 skip:1 error:0\n", ""), "did not exit normally"),
    (lambda s: s.replace("not ok 4 iommufd_ioas.mock_domain.copy_sweep #  Test terminated by timeout\n", ""),
     "truncated while 'iommufd_ioas.mock_domain.copy_sweep' was running"),
    (lambda s: s.replace("ok 1 iommufd.simple_close\n", "[   12.3] random console noise\n"), "not a TAP line"),
    (lambda s: s.replace("# FAILED:", "Bail out! mmap failed\n# FAILED:"), "bailed out"),
    (lambda s: s.replace("ok 3 iommufd_viommu.no_viommu.hw_queue", "ok 3 iommufd.simple_close"), "while"),
])
def test_damaged_streams_are_errors(damage, message: str) -> None:  # type: ignore[no-untyped-def]
    """Each kind of damage is a TapError whose message says what went wrong."""
    with pytest.raises(tap.TapError, match=message.replace("(", r"\(").replace(")", r"\)")):
        tap.parse_tap(damage(GOOD))


@settings(max_examples=60, deadline=None)
@given(cut=st.integers(min_value=0, max_value=GOOD.count("\n") - 2))
def test_any_truncation_is_an_error(cut: int) -> None:
    """A guest that stopped after any line (panic, timeout) never yields a result list."""
    lines = GOOD.splitlines(keepends=True)
    with pytest.raises(tap.TapError):
        tap.parse_tap("".join(lines[: cut + 1]))


def test_cli_writes_results_and_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The CLI the runner calls: results.json, names.txt and a one-line summary; exit 1 on damage."""
    src = tmp_path / "tap.txt"
    src.write_text(GOOD)
    assert tap.main([str(src), "--out", str(tmp_path / "r.json"), "--names", str(tmp_path / "n.txt")]) == 0
    assert capsys.readouterr().out == "4 runs: 1 pass, 2 fail, 1 skip\n"
    assert [r["name"] for r in json.loads((tmp_path / "r.json").read_text())] == \
        (tmp_path / "n.txt").read_text().splitlines()
    src.write_text(GOOD[:200])
    assert tap.main([str(src)]) == 1
    assert "parse_tap:" in capsys.readouterr().err
