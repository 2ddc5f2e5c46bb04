"""Parse the TAP a kselftest-harness program prints into one result per test run, as JSON.

The format follows tools/testing/selftests/kselftest.h (ksft_print_header, ksft_set_plan, ksft_test_result_code,
ksft_print_cnts) and kselftest_harness.h (__run_test: the "#  RUN" line, the test's own "# ..." diagnostics, the
"#  OK/FAIL" line, then the TAP result).  Names are kept exactly as the harness prints them:
``fixture.variant.test``, or ``fixture.test`` for a fixture without variants.  A truncated, reordered or
garbled stream is an error naming the line, never a shorter result list.

CLI: ``parse_tap.py TAP [--out results.json] [--names names.txt]`` prints a one-line summary.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from vfiolab.errors import VfiolabError

# ksft_test_result_code: "<ok|not ok> <n> <name>" then " # SKIP|XFAIL|XPASS <msg>", or " #  <msg>" (no
# directive, message present), or nothing.
_RESULT = re.compile(r"^(ok|not ok) (\d+) (\S+)(?: # (SKIP|XFAIL|XPASS)(?: (.*))?| #  (.*))?$")
_PLAN = re.compile(r"^1\.\.(\d+)$")
_RUN = re.compile(r"^#  RUN +(\S+) \.\.\.$")             # kselftest_harness.h __run_test
_VERDICT = re.compile(r"^# +(OK|FAIL) +(\S+)$")            # the "#          OK  name" line after the test
_TOTALS = re.compile(r"^# Totals: pass:(\d+) fail:(\d+) xfail:(\d+) xpass:(\d+) skip:(\d+) error:(\d+)$")
_DIRECTIVE = {"SKIP": "skip", "XFAIL": "xfail", "XPASS": "xpass"}
TOTAL_KEYS = ("pass", "fail", "xfail", "xpass", "skip", "error")


class TapError(VfiolabError):
    """TAP that is incomplete or malformed: names the line and what was expected."""


@dataclass(frozen=True)
class TestRun:
    """One test run: its harness name, result (pass, fail, skip, xfail or xpass) and the reason, if any."""

    number: int
    name: str
    result: str
    reason: str | None

    def to_json(self) -> dict[str, str | None]:
        """The JSON record: ``{"name", "result", "reason"}``."""
        return {"name": self.name, "result": self.result, "reason": self.reason}


@dataclass
class TapReport:
    """Everything one kselftest program reported: the plan, each run in order, and the harness totals."""

    plan: int
    runs: list[TestRun] = field(default_factory=list)
    totals: dict[str, int] = field(default_factory=dict)
    summary: str = ""   # the harness's last message, e.g. "PASSED: 246 / 246 tests passed."

    def counts(self) -> dict[str, int]:
        """How many runs ended in each result (every result key present, zeros included)."""
        out = dict.fromkeys(("pass", "fail", "skip", "xfail", "xpass"), 0)
        for r in self.runs:
            out[r.result] += 1
        return out

    def names(self) -> list[str]:
        """The run names in the order the harness ran them."""
        return [r.name for r in self.runs]


def _result_of(tap_code: str, directive: str | None) -> str:
    """ksft_test_result_code's mapping back: "not ok" is a failure; "ok" is pass unless a directive says more."""
    if tap_code == "not ok":
        return "fail"
    return _DIRECTIVE[directive] if directive else "pass"


def parse_tap(text: str, source: str = "<tap>") -> TapReport:
    """Parse a whole kselftest TAP stream (CR-LF tolerated); raises TapError unless it is complete and consistent."""
    report: TapReport | None = None
    seen: set[str] = set()
    running: str | None = None      # the test between its "#  RUN" line and its TAP result
    diagnostics: list[str] = []
    header = False
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip("\r")
        where = f"{source}:{lineno}"
        if not line.strip():
            continue
        if not header:
            if line != "TAP version 13":
                raise TapError(f"{where}: expected 'TAP version 13' first, got {line!r}")
            header = True
            continue
        if m := _PLAN.match(line):
            if report is not None:
                raise TapError(f"{where}: a second plan line {line!r}")
            report = TapReport(plan=int(m.group(1)))
            continue
        if line.startswith("Bail out!"):
            raise TapError(f"{where}: the program bailed out: {line[len('Bail out!'):].strip()!r}")
        if m := _RESULT.match(line):
            if report is None:
                raise TapError(f"{where}: a result before the plan line")
            tap_code, num, name, directive, dmsg, msg = m.groups()
            expected = len(report.runs) + 1
            if int(num) != expected:
                raise TapError(f"{where}: result number {num}, expected {expected} (lost or reordered lines)")
            if running is not None and running != name:
                raise TapError(f"{where}: result for {name!r} while {running!r} was running")
            if name in seen:
                raise TapError(f"{where}: {name!r} reported twice")
            seen.add(name)
            result = _result_of(tap_code, directive)
            reason = dmsg if dmsg is not None else msg
            if reason is None and result == "fail" and diagnostics:
                reason = "\n".join(diagnostics)   # the assertion the test printed (TH_LOG "file:line:test:...")
            report.runs.append(TestRun(int(num), name, result, reason or None))
            running, diagnostics = None, []
            continue
        if not line.startswith("#"):
            raise TapError(f"{where}: not a TAP line: {line!r}")
        body = line[1:].strip()
        if m := _RUN.match(line):
            if running is not None:
                raise TapError(f"{where}: {m.group(1)!r} started before {running!r} reported a result")
            running, diagnostics = m.group(1), []
        elif m := _TOTALS.match(line):
            if report is None:
                raise TapError(f"{where}: totals before the plan line")
            report.totals = dict(zip(TOTAL_KEYS, map(int, m.groups())))
        elif running is not None:
            if not ((v := _VERDICT.match(line)) and v.group(2) == running) and not body.startswith("SKIP "):
                diagnostics.append(body)
        elif body.startswith(("PASSED:", "FAILED:")) and report is not None:
            report.summary = body
    return _checked(report, running, source)


def _checked(report: TapReport | None, running: str | None, source: str) -> TapReport:
    """The completeness checks: plan met, nothing left running, the program's own totals agreeing."""
    if report is None:
        raise TapError(f"{source}: no plan line ('1..N'): the program did not start")
    if running is not None:
        raise TapError(f"{source}: truncated while {running!r} was running "
                       f"({len(report.runs)} of {report.plan} results)")
    if len(report.runs) != report.plan:
        last = report.runs[-1].name if report.runs else "none"
        raise TapError(f"{source}: {len(report.runs)} results for a plan of {report.plan} (last: {last})")
    if not report.totals:
        raise TapError(f"{source}: no '# Totals:' line: the program did not exit normally")
    counts = report.counts()
    mine = {k: counts.get(k, 0) for k in TOTAL_KEYS}
    if mine != report.totals:
        raise TapError(f"{source}: the program's totals {report.totals} disagree with its results {mine}")
    return report


def main(argv: list[str] | None = None) -> int:
    """Parse one TAP file; optionally write the JSON results and the names list; print a summary line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tap", type=Path)
    ap.add_argument("--out", type=Path, help="write [{name, result, reason}] JSON here")
    ap.add_argument("--names", type=Path, help="write the run names, one per line, here")
    args = ap.parse_args(argv)
    try:
        report = parse_tap(args.tap.read_text(errors="replace"), str(args.tap))
    except (OSError, TapError) as e:
        print(f"parse_tap: {e}", file=sys.stderr)
        return 1
    if args.out:
        args.out.write_text(json.dumps([r.to_json() for r in report.runs], indent=1) + "\n")
    if args.names:
        args.names.write_text("".join(n + "\n" for n in report.names()))
    c = report.counts()
    extra = "".join(f", {c[k]} {k}" for k in ("xfail", "xpass") if c[k])
    print(f"{len(report.runs)} runs: {c['pass']} pass, {c['fail']} fail, {c['skip']} skip{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
