"""The difftest comparison: exact fields, symbolic VAs/fds/IOVAs paired one to one (and released), crashes,
errno and written-back structs, byte results, the first divergence with both sides; the known-divergence
classifier; and the whole `vfiolab diff` path against recorded kernel results (no kernel needed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from vfiolab.cli.main import main as cli_main
from vfiolab.difftest import known
from vfiolab.difftest.compare import compare_records
from vfiolab.difftest.known import Known, classify, errno_pair
from vfiolab.difftest.scenario import Call, Scenario, parse_scenario
from vfiolab.difftest.session import diff, run_model, save_records


def _scn(*ops: str) -> Scenario:
    return Scenario("t", [Call(op, {}) for op in ops])


def _rec(i: int, op: str, errno: str = "ok", **kw: Any) -> dict[str, Any]:
    return {"i": i, "op": op, "errno": errno, **kw}


def test_exact_and_errno() -> None:
    s = _scn("ioas_alloc", "destroy", "ioas_alloc")
    m = [_rec(0, "ioas_alloc", ret=1), _rec(1, "destroy", "ENOENT", msg="model text"), _rec(2, "ioas_alloc", ret=2)]
    k = [_rec(0, "ioas_alloc", ret=1), _rec(1, "destroy", "ENOENT", msg="kernel text"), _rec(2, "ioas_alloc", ret=2)]
    c = compare_records(s, m, k)
    assert c.divergence is None and c.compared == 3          # msg is never compared
    k[2]["ret"] = 3                                          # IDs are exact
    d = compare_records(s, m, k).divergence
    assert d is not None and d.index == 2 and d.reason == "result 0x2 vs 0x3"
    k[1]["errno"] = "EBUSY"
    d = compare_records(s, m, k).divergence
    assert d is not None and d.index == 1 and d.reason == "errno ENOENT vs EBUSY" and d.kernel == k[1]


def test_symbolic_pairing_and_release() -> None:
    s = _scn("memfd", "fault_queue_alloc", "close", "memfd", "mmap", "memfd")
    m = [_rec(0, "memfd", ret=3), _rec(1, "fault_queue_alloc", ret={"out_fault_id": 1, "out_fault_fd": 4}),
         _rec(2, "close", ret=None, release=["fd", 3]), _rec(3, "memfd", ret=3), _rec(4, "mmap", ret=0x2000),
         _rec(5, "memfd", ret=5)]
    k = [_rec(0, "memfd", ret=8), _rec(1, "fault_queue_alloc", ret={"out_fault_id": 1, "out_fault_fd": 9}),
         _rec(2, "close", ret=None, release=["fd", 8]), _rec(3, "memfd", ret=11), _rec(4, "mmap", ret=0x2000),
         _rec(5, "memfd", ret=12)]
    c = compare_records(s, m, k)
    assert c.divergence is None and c.symbolic_differences == {"fd": 4}
    k[5]["ret"] = 9                     # kernel fd 9 is already the model's fd 4
    d = compare_records(s, m, k).divergence
    assert d is not None and d.index == 5 and "paired with model" in d.reason
    k[5]["ret"] = 12
    k[1]["ret"] = {"out_fault_id": 2, "out_fault_fd": 9}     # the ID part stays exact
    assert compare_records(s, m, k).divergence is not None


def test_auto_iova_is_symbolic_but_consistent() -> None:
    s = _scn("ioas_map", "ioas_map", "ioas_map")
    m = [_rec(0, "ioas_map", ret=0x1000000), _rec(1, "ioas_map", ret=0x1004000), _rec(2, "ioas_map", ret=0x1000000)]
    k = [_rec(0, "ioas_map", ret=0x2000000), _rec(1, "ioas_map", ret=0x1004000), _rec(2, "ioas_map", ret=0x2000000)]
    assert compare_records(s, m, k).divergence is None
    k[2]["ret"] = 0x3000000
    assert compare_records(s, m, k).divergence is not None


def test_crash_out_bytes_and_missing_records() -> None:
    s = _scn("read", "ioas_iova_ranges", "destroy")
    m = [_rec(0, "read", ret={"hex": "00112233"}), _rec(1, "ioas_iova_ranges", "EMSGSIZE", out={"num_iovas": 2}),
         _rec(2, "destroy", "crash", crash="AttributeError: x (mock.py:1)")]
    k = [_rec(0, "read", ret={"hex": "00112233"}), _rec(1, "ioas_iova_ranges", "EMSGSIZE", out={"num_iovas": 2}),
         _rec(2, "destroy", "ENOENT")]
    d = compare_records(s, m, k).divergence
    assert d is not None and d.index == 2 and d.reason.startswith("crash: model: AttributeError")
    k[1]["out"] = {"num_iovas": 1}
    assert "written back" in str(compare_records(s, m, k).divergence)
    k[0]["ret"] = {"hex": "0011ff33"}
    d = compare_records(s, m, k).divergence
    assert d is not None and d.reason.startswith("bytes differ from offset 0x2 (1 of 4 bytes)")
    d = compare_records(s, m[:1], k[:0]).divergence
    assert d is not None and d.reason == "the kernel has no record here"


def test_expectations_are_collected_per_side() -> None:
    s = _scn("destroy")
    m = [_rec(0, "destroy", "ENOENT", expect="EBUSY")]
    c = compare_records(s, m, [dict(m[0])])
    assert c.divergence is None and [(e.side, e.expected, e.got) for e in c.expectations] == \
        [("model", "EBUSY", "ENOENT"), ("kernel", "EBUSY", "ENOENT")]


# Two divergences of the past (docs/oracle.md, fixed since) as table entries for the classification tests
_MAP_ORDER = Known("md-check-map-order", "s", "k", "m",
                   lambda s, d, m, k: errno_pair(d, "test.md_check_map", "EFAULT", "EINVAL"), stateless=True)
_PAGE_SIZE = Known("dirty-bitmap-page-size", "s", "k", "m",
                   lambda s, d, m, k: errno_pair(d, "hwpt_get_dirty_bitmap", "EINVAL", "ok")
                   and s.calls[d.index].args["page_size"] & (s.calls[d.index].args["page_size"] - 1) != 0)


@pytest.fixture()
def table(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(known, "KNOWN", (_MAP_ORDER, _PAGE_SIZE))


@pytest.mark.usefixtures("table")
def test_known_divergences_are_recognised_tightly() -> None:
    s = parse_scenario({"name": "k", "calls": [
        {"test.md_check_map": {"hwpt_id": 4, "iova": 0, "length": 0, "uptr": 0}},
        {"hwpt_get_dirty_bitmap": {"hwpt_id": 4, "iova": 0, "length": 0, "page_size": 0x1800, "data": 0}},
        {"hwpt_get_dirty_bitmap": {"hwpt_id": 4, "iova": 0, "length": 0, "page_size": 0x1000, "data": 0}}]})
    m = [_rec(0, "test.md_check_map", "EFAULT"), _rec(1, "hwpt_get_dirty_bitmap", "EINVAL"),
         _rec(2, "hwpt_get_dirty_bitmap", "EINVAL")]
    k = [_rec(0, "test.md_check_map", "EINVAL"), _rec(1, "hwpt_get_dirty_bitmap"), _rec(2, "hwpt_get_dirty_bitmap")]
    d0 = compare_records(s, m, k).divergence
    assert d0 is not None and classify(s, d0, m, k) is _MAP_ORDER
    s1 = Scenario("k", s.calls[1:])
    d1 = compare_records(s1, m[1:], [dict(r, i=r["i"] - 1) for r in k[1:]]).divergence
    m1 = [dict(r, i=r["i"] - 1) for r in m[1:]]
    assert d1 is not None and classify(s1, d1, m1, k[1:]) is _PAGE_SIZE
    s2 = Scenario("k", s.calls[2:])
    d2 = compare_records(s2, m[2:], k[2:]).divergence
    assert d2 is not None and classify(s2, d2, m[2:], k[2:]) is None   # a power of two: not the known one
    k[0]["errno"] = "EIO"
    d = compare_records(s, m, k).divergence
    assert d is not None and classify(s, d, m, k) is None


@pytest.mark.usefixtures("table")
def test_stateless_known_divergences_do_not_stop_the_comparison(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A check that fails with another errno on each side (md-check-map-order) changes nothing: the
    comparison goes on past it, and a later real divergence is still found."""
    from vfiolab.difftest import session
    s = parse_scenario({"name": "t", "calls": [
        {"ioas_alloc": {}}, {"test.md_check_map": {"hwpt_id": 9, "iova": 0, "length": 0, "uptr": 0}},
        {"ioas_alloc": {}}]})
    records, _ = run_model([s])
    kernel = json.loads(json.dumps(records))
    records[0][1]["errno"] = "EFAULT"
    kernel[0][1]["errno"] = "EINVAL"
    monkeypatch.setattr(session, "run_model", lambda scenarios: (records, 0.0))
    path = tmp_path / "k.jsonl"
    save_records(path, [s], kernel)
    report = diff([s], kernel_results=path)
    assert report.outcome(0) == "known" and report.calls == 3
    assert report.known_counts() == {"md-check-map-order": 1}
    kernel[0][2]["ret"] = 7
    save_records(path, [s], kernel)
    report = diff([s], kernel_results=path)
    d = report.comparisons[0].divergence
    assert report.outcome(0) == "diverge" and d is not None and d.index == 2


SCENARIOS = [parse_scenario({"name": "a", "source": "unit", "calls": [
    {"mmap": {"length": 0x4000}, "as": "buf"},
    {"ioas_alloc": {}, "as": "ioas"},
    {"test.mock_domain": {"pt_id": "$ioas"}, "as": "dev"},
    {"ioas_map": {"ioas_id": "$ioas", "user_va": "$buf", "length": 0x2000}, "as": "m"},
    {"test.md_check_map": {"hwpt_id": "$dev.hwpt_id", "iova": "$m", "length": 0x2000, "uptr": "$buf"}},
    {"destroy": {"id": "$ioas"}, "expect": "EBUSY"}]}),
    parse_scenario({"name": "b", "xfail": "a known divergence", "calls": [{"destroy": {"id": 0}}]})]


def _kernel_file(tmp_path: Path, edit: Any = None) -> Path:
    records, _ = run_model(SCENARIOS)
    if edit:
        edit(records)
    path = tmp_path / "results.jsonl"
    save_records(path, SCENARIOS, records)
    return path


def test_session_outcomes(tmp_path: Path) -> None:
    """Model records replayed as the kernel's agree; an xfail scenario that agrees is 'xpassed' (a failure)."""
    report = diff(SCENARIOS, kernel_results=_kernel_file(tmp_path))
    assert [report.outcome(i) for i in range(2)] == ["agree", "xpassed"]
    assert report.failed and report.calls == 7

    def break_b(records: list[list[dict[str, Any]]]) -> None:
        records[1][0]["errno"] = "EBUSY"
    report = diff(SCENARIOS, kernel_results=_kernel_file(tmp_path, break_b))
    assert [report.outcome(i) for i in range(2)] == ["agree", "xfailed"] and not report.failed
    j = report.to_json()
    assert j["counts"]["xfailed"] == 1 and j["results"][1]["divergence"]["reason"] == "errno ENOENT vs EBUSY"


def test_cli_against_recorded_kernel_results(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scen = tmp_path / "s.jsonl"
    scen.write_text(SCENARIOS[0].dumps() + "\n")

    def ok_file() -> Path:
        records, _ = run_model(SCENARIOS[:1])
        p = tmp_path / "k.jsonl"
        save_records(p, SCENARIOS[:1], records)
        return p
    path = ok_file()
    assert cli_main(["diff", str(scen), "--kernel-results", str(path)]) == 0
    assert "1 agree, 0 new divergence(s)" in capsys.readouterr().out
    lines = path.read_text().splitlines()
    rec = json.loads(lines[1])
    rec["records"][3]["ret"] = rec["records"][3]["ret"] + 0x1000   # pairs symbolically: still fine
    rec["records"][4]["errno"] = "EINVAL"
    path.write_text("\n".join([lines[0], json.dumps(rec), lines[2]]) + "\n")
    assert cli_main(["diff", str(scen), "--kernel-results", str(path)]) == 1
    out = capsys.readouterr()
    assert "DIVERGE: a: call 4 test.md_check_map" in out.out and "1 new divergence(s)" in out.err
    assert cli_main(["diff", "--list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert any(x["name"] == "cmd_fail" for x in listed) and all("xfail" in x for x in listed)
    assert any(x["name"] == "known-map-file-any-file" for x in listed)  # fixed divergences stay listed
    assert cli_main(["diff", "--model-only", "cmd_fail"]) == 0
    assert "ENOTTY" in capsys.readouterr().out
    assert cli_main(["diff", "no-such-scenario", "--model-only"]) == 1
    assert "no corpus scenario named no-such-scenario" in capsys.readouterr().err
