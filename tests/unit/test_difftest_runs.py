"""Difftest runs on the model alone: the hand corpus meets every expectation it writes down (they restate the
kernel selftest's and were checked on Linux 7.2), the random generator is deterministic per (seed, index),
never crashes the model and replays identically from its JSON, and the guest's result file is read strictly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vfiolab.difftest.backend import payload
from vfiolab.difftest.corpus import load_corpus
from vfiolab.difftest.generate import random_scenario, random_scenarios
from vfiolab.difftest.guestrun import parse_results
from vfiolab.difftest.model_backend import ModelBackend
from vfiolab.difftest.runner import run_scenario
from vfiolab.difftest.scenario import ScenarioError, parse_scenario
from vfiolab.errors import UapiError, VfiolabError

CORPUS = load_corpus()


@pytest.mark.parametrize("scenario", CORPUS, ids=[s.name for s in CORPUS])
def test_corpus_on_the_model(scenario) -> None:  # type: ignore[no-untyped-def]
    records, _ = run_scenario(scenario, ModelBackend())
    calls = records[:len(scenario.calls)]
    assert len(calls) == len(scenario.calls)
    bad = [r for r in calls if r["errno"] in ("crash", "skip") or "expect" in r]
    assert not bad, bad
    if len(records) > len(calls):  # close(2) crashed the model: only a known divergence may do that
        assert scenario.xfail.startswith("iopf-pending-at-close"), records[-1]


def test_corpus_names_its_sources() -> None:
    assert len(CORPUS) >= 40
    assert all(s.source or s.xfail for s in CORPUS)
    assert sum(1 for s in CORPUS if s.name.startswith("known-")) >= 10  # xfail, or fixed and kept
    with pytest.raises(ScenarioError, match="no corpus scenario named nope"):
        load_corpus(["nope"])


def test_random_sequences_are_replayable() -> None:
    a = random_scenario(3, 17, 30)
    b = random_scenario(3, 17, 30)
    assert a.dumps() == b.dumps() and len(a.calls) == 30
    assert random_scenario(3, 18, 30).dumps() != a.dumps()
    assert "--seed 3 --index 17 --length 30" in a.source
    first, = random_scenarios(1, 3, 30, first=17)
    assert first.dumps() == a.dumps()
    m1, _ = run_scenario(a, ModelBackend())
    m2, _ = run_scenario(parse_scenario(json.loads(a.dumps())), ModelBackend())
    assert m1 == m2


def test_random_sequences_never_crash_the_model() -> None:
    ops: set[str] = set()
    for s in random_scenarios(40, 1234, 25):
        records, _ = run_scenario(s, ModelBackend())
        assert not [r for r in records if r["errno"] in ("crash", "skip")], s.name
        ops |= {r["op"] for r in records if r["errno"] == "ok"}
    # the generator reaches deep states, not only allocation
    assert {"viommu_alloc", "vdevice_alloc", "test.pasid_attach", "test.access_rw", "hwpt_set_dirty_tracking",
            "test.md_check_map", "ioas_copy"} <= ops


def test_payload_rules() -> None:
    assert payload(u32=[1, 2]) == bytes([1, 0, 0, 0, 2, 0, 0, 0])
    assert payload(fill=0xAB, length=3) == b"\xab\xab\xab"
    assert payload(pattern=5, length=16) == payload(pattern=5, length=32)[:16]
    for kw in ({}, {"data": "00", "fill": 1}, {"data": "zz"}, {"u32": [1 << 32]}, {"fill": 1}):
        with pytest.raises(UapiError):
            payload(**kw)  # type: ignore[arg-type]


def test_guest_results_are_read_strictly(tmp_path: Path) -> None:
    f = tmp_path / "r.jsonl"
    good = [json.dumps({"guest": {"kernel": "7.2.13", "ready_uptime": 2.5}}),
            json.dumps({"s": 0, "name": "a", "records": [{"i": 0, "op": "x", "errno": "ok"}], "seconds": 0.1}),
            json.dumps({"done": {"scenarios": 1}})]
    f.write_text("\n".join(good) + "\n")
    records, head, done, seconds = parse_results(f, 1)
    assert records == [[{"i": 0, "op": "x", "errno": "ok"}]] and head["kernel"] == "7.2.13" and seconds == [0.1]
    assert done == {"scenarios": 1}
    f.write_text("\n".join(good[:2]) + "\n")
    with pytest.raises(VfiolabError, match="stopped after 1 of 1"):
        parse_results(f, 1)
    f.write_text("\n".join(good) + "\n")
    with pytest.raises(VfiolabError, match="results for 1 scenarios, expected 2"):
        parse_results(f, 2)
    f.write_text("{bad\n")
    with pytest.raises(VfiolabError, match="not JSON"):
        parse_results(f, 1)
