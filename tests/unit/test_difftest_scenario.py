"""The difftest scenario format: calls with labels, references and expectations, read from YAML or JSON
lines, refused with a clear ScenarioError when malformed, and round-tripping through JSON unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vfiolab.difftest.ops import OPS
from vfiolab.difftest.runner import Results, Unresolved
from vfiolab.difftest.scenario import (
    Ref,
    ScenarioError,
    errno_name,
    errno_value,
    load_scenarios,
    parse_scenario,
)


@pytest.mark.parametrize("text, ref", [
    ("$buf", Ref("buf")),
    ("$3", Ref(3)),
    ("$dev.stdev_id", Ref("dev", ("stdev_id",))),
    ("$q.1", Ref("q", ("1",))),
    ("$q[1]", Ref("q", (1,))),
    ("$buf+0x1000", Ref("buf", (), 0x1000)),
    ("$7.hwpt_id-16", Ref(7, ("hwpt_id",), -16)),
])
def test_reference_syntax(text: str, ref: Ref) -> None:
    assert Ref.parse(text) == ref
    assert Ref.parse(str(ref)) == ref


@pytest.mark.parametrize("text", ["buf", "$", "$1x", "$buf+", "$buf+0xg", "$.x", "$$a"])
def test_not_references(text: str) -> None:
    assert Ref.parse(text) is None


def test_resolution_against_results() -> None:
    from vfiolab.iommufd.kernel import MockDomainOut
    res = Results()
    res.values = {0: 0x2000_0000_0000, 1: MockDomainOut(2, 4, 3), 2: (5, 9)}
    res.labels = {"buf": 0, "dev": 1, "q": 2}
    assert res.arg("$buf+0x10") == 0x2000_0000_0010
    assert res.arg("$dev.idev_id") == 3
    assert res.arg(["$q.1", "$q[0]", 7, "text"]) == [9, 5, 7, "text"]
    for bad in ("$nosuch", "$dev.nosuch", "$q.5", "$3", "$dev+1"):
        with pytest.raises(Unresolved):
            res.arg(bad)


def test_parse_a_scenario() -> None:
    s = parse_scenario({"name": "x", "source": "iommufd.cmd_fail", "calls": [
        {"ioas_alloc": {}, "as": "ioas"},
        {"destroy": {"id": "$ioas"}, "expect": "ok"},
        {"destroy": {"id": "$0"}, "expect": "ENOENT"},
        {"option": {"option_id": 0, "op": 1}, "expect_ret": 0},
        {"vfio_get_api_version": None},
    ]}, known_ops=OPS)
    assert [c.op for c in s.calls] == ["ioas_alloc", "destroy", "destroy", "option", "vfio_get_api_version"]
    assert s.calls[0].label == "ioas" and s.calls[2].expect == 2 and s.calls[1].expect == 0
    assert s.calls[3].has_expect_ret and s.calls[3].expect_ret == 0
    assert str(s.calls[1]) == "destroy(id=$ioas)"
    again = parse_scenario(json.loads(s.dumps()), known_ops=OPS)
    assert again.to_json() == s.to_json()


@pytest.mark.parametrize("raw, message", [
    ({"name": "x", "calls": [{"nosuch": {}}]}, "unknown operation 'nosuch'"),
    ({"name": "x", "calls": [{"ioas_alloc": {}, "destroy": {}}]}, "exactly one operation"),
    ({"name": "x", "calls": [{"destroy": {"id": "$later"}}, {"ioas_alloc": {}, "as": "later"}]},
     "names no earlier label"),
    ({"name": "x", "calls": [{"destroy": {"id": "$0"}}]}, "does not point to an earlier call"),
    ({"name": "x", "calls": [{"destroy": {"id": 1}, "expect": "ENOPE"}]}, "neither 'ok' nor an errno"),
    ({"name": "x", "calls": [{"destroy": [1]}]}, "must be a mapping"),
    ({"name": "x", "calls": [{"ioas_alloc": {}, "as": "1x"}]}, "not an identifier"),
    ({"name": "x", "calls": "nope"}, "'calls' must be a list"),
    ({"name": "x", "calls": [], "colour": 1}, "unknown keys"),
    (42, "a scenario is a mapping"),
])
def test_malformed_scenarios(raw: object, message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        parse_scenario(raw, known_ops=OPS)


def test_files(tmp_path: Path) -> None:
    y = tmp_path / "two.yaml"
    y.write_text("scenarios:\n- name: a\n  calls:\n  - ioas_alloc: {}\n- name: b\n  calls: []\n")
    assert [s.name for s in load_scenarios(y, OPS)] == ["a", "b"]
    one = tmp_path / "one.yaml"
    one.write_text("- ioas_alloc: {}\n  as: x\n- destroy: {id: $x}\n")
    (s,) = load_scenarios(one, OPS)
    assert s.name == "one" and len(s.calls) == 2
    j = tmp_path / "s.jsonl"
    j.write_text(s.dumps() + "\n\n" + s.dumps() + "\n")
    assert len(load_scenarios(j, OPS)) == 2
    j.write_text("{nope\n")
    with pytest.raises(ScenarioError, match=r"s.jsonl:1"):
        load_scenarios(j, OPS)
    bad = tmp_path / "bad.yaml"
    bad.write_text("calls: [\n")
    with pytest.raises(ScenarioError, match="bad.yaml"):
        load_scenarios(bad, OPS)
    with pytest.raises(ScenarioError, match="No such file"):
        load_scenarios(tmp_path / "missing.yaml", OPS)


def test_errno_names() -> None:
    assert errno_value("ok") == 0 and errno_value("EBUSY") == 16 and errno_value(5) == 5
    assert errno_name(0) == "ok" and errno_name(2) == "ENOENT"


_ARG = st.one_of(st.integers(0, (1 << 64) - 1), st.sampled_from(["$0", "$0+0x10", "$lab.field", "$lab.1"]),
                 st.lists(st.integers(0, 255), max_size=4))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(sorted(OPS)), st.dictionaries(st.sampled_from(["a", "b", "c"]), _ARG,
                                                                         max_size=3),
                          st.sampled_from([None, "ok", "ENOENT", "EINVAL"])), min_size=1, max_size=8))
def test_round_trip(calls: list[tuple[str, dict[str, object], str | None]]) -> None:
    """Any well-formed scenario survives dumps() and parse unchanged (the guest receives exactly this)."""
    raw_calls: list[dict[str, object]] = [{"ioas_alloc": {}, "as": "lab"}]
    for op, args, expect in calls:
        call: dict[str, object] = {op: args}
        if expect:
            call["expect"] = expect
        raw_calls.append(call)
    s = parse_scenario({"name": "rt", "calls": raw_calls}, known_ops=OPS)
    again = parse_scenario(json.loads(s.dumps()), known_ops=OPS)
    assert again.to_json() == s.to_json()
    assert len(again.calls) == len(raw_calls)
