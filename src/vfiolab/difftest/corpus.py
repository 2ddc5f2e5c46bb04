"""The hand corpus: YAML scenarios in ``difftest/corpus/`` re-expressing runs of the kernel's iommufd selftest
(each names its kselftest run in ``source``) and the regression scenarios of known divergences
(``known.yaml``, marked ``xfail``)."""

from __future__ import annotations

from pathlib import Path
from typing import Final

from vfiolab.difftest.ops import OPS
from vfiolab.difftest.scenario import Scenario, ScenarioError, load_scenarios

CORPUS_DIR: Final = Path(__file__).with_name("corpus")


def corpus_files() -> list[Path]:
    """The corpus files, in name order."""
    return sorted(CORPUS_DIR.glob("*.yaml"))


def load_corpus(names: list[str] | None = None) -> list[Scenario]:
    """Every corpus scenario, or only those named (ScenarioError for an unknown name); names are unique."""
    scenarios: list[Scenario] = []
    for f in corpus_files():
        scenarios += load_scenarios(f, OPS)
    seen: set[str] = set()
    for s in scenarios:
        if s.name in seen:
            raise ScenarioError(f"corpus: two scenarios are named {s.name!r}")
        seen.add(s.name)
    if names is None:
        return scenarios
    by_name = {s.name: s for s in scenarios}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ScenarioError(f"no corpus scenario named {', '.join(missing)} (see `vfiolab diff --list`)")
    return [by_name[n] for n in names]


__all__ = ["CORPUS_DIR", "corpus_files", "load_corpus"]
