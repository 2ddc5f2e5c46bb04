"""One differential session: run scenarios on the model in-process and on the kernel in one guest boot (or
take the kernel's records from an earlier run), compare them, and summarise.

Scenarios marked ``xfail`` are known divergences kept as regressions: diverging is their expected outcome
(``xfailed``); agreeing (``xpassed``) means the divergence is gone and the mark should go too.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vfiolab.difftest.compare import Comparison, Divergence, compare_records
from vfiolab.difftest.guestrun import GuestRun, run_on_kernel
from vfiolab.difftest.known import Known, classify
from vfiolab.difftest.model_backend import ModelBackend
from vfiolab.difftest.runner import run_scenario
from vfiolab.difftest.scenario import Scenario


@dataclass
class DiffReport:
    """Per-scenario comparisons plus the run's figures."""

    scenarios: list[Scenario]
    comparisons: list[Comparison]
    model_seconds: float
    guest: GuestRun | None = None
    model_records: list[list[dict[str, Any]]] = field(default_factory=list)
    kernel_records: list[list[dict[str, Any]]] = field(default_factory=list)
    known: list[Known | None] = field(default_factory=list)
    """Per scenario: the known divergence its divergence is an instance of."""

    def outcome(self, i: int) -> str:
        """``agree``; ``diverge`` (new); ``known`` (an instance of a known divergence); for scenarios marked
        ``xfail``: ``xfailed`` (still diverges) or ``xpassed`` (agrees now: the mark should go)."""
        c = self.comparisons[i]
        if self.scenarios[i].xfail:
            return "xfailed" if c.divergence is not None else "xpassed"
        if c.divergence is not None:
            known = self.known[i] if self.known else None
            return "known" if known is not None and not known.stateless else "diverge"
        return "known" if c.tolerated else "agree"

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(("agree", "diverge", "known", "xfailed", "xpassed"), 0)
        for i in range(len(self.scenarios)):
            out[self.outcome(i)] += 1
        return out

    @property
    def calls(self) -> int:
        """Calls compared (up to each scenario's first divergence)."""
        return sum(c.compared for c in self.comparisons)

    @property
    def failed(self) -> bool:
        """A new divergence, a known one that vanished, or a written expectation that did not hold."""
        c = self.counts()
        return bool(c["diverge"] or c["xpassed"] or any(cmp.expectations for cmp in self.comparisons))

    def known_counts(self) -> dict[str, int]:
        """How many times each known divergence was met (a stateless one may recur in a scenario)."""
        out: dict[str, int] = {}
        for i, c in enumerate(self.comparisons):
            if self.scenarios[i].xfail:
                continue
            hits = [classify(self.scenarios[i], d, self.model_records[i], self.kernel_records[i])
                    for d in c.tolerated]
            if c.divergence is not None and self.outcome(i) == "known":
                hits.append(self.known[i])
            for k in hits:
                if k is not None:
                    out[k.id] = out.get(k.id, 0) + 1
        return out

    def symbolic_differences(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.comparisons:
            for k, v in c.symbolic_differences.items():
                out[k] = out.get(k, 0) + v
        return out

    def _result(self, i: int) -> dict[str, Any]:
        s, c = self.scenarios[i], self.comparisons[i]
        known = self.known[i] if self.known else None
        return {"name": s.name, "outcome": self.outcome(i), "compared": c.compared, "xfail": s.xfail or None,
                "known": known.id if known else None,
                "divergence": c.divergence.to_json() if c.divergence else None,
                "expectations": [e.__dict__ for e in c.expectations]}

    def to_json(self) -> dict[str, Any]:
        g = self.guest
        return {
            "scenarios": len(self.scenarios), "calls_compared": self.calls, "counts": self.counts(),
            "known": self.known_counts(),
            "symbolic_differences": self.symbolic_differences(),
            "model_seconds": round(self.model_seconds, 3),
            "guest": None if g is None else {"boot_seconds": g.boot_seconds,
                                             "startup_seconds": g.startup_seconds,
                                             "kernel": g.head.get("kernel"), "python": g.head.get("python"),
                                             "seconds": g.done.get("seconds"), "splats": g.done.get("splats"),
                                             "numpy_loaded": g.done.get("numpy_loaded"), "outdir": str(g.outdir)},
            "results": [self._result(i) for i in range(len(self.scenarios))],
        }


def run_model(scenarios: list[Scenario]) -> tuple[list[list[dict[str, Any]]], float]:
    """Every scenario on a fresh model backend: the records and the seconds it took."""
    t0 = time.perf_counter()
    backend = ModelBackend()
    records = [run_scenario(s, backend)[0] for s in scenarios]
    return records, time.perf_counter() - t0


def load_kernel_records(path: Path, count: int) -> list[list[dict[str, Any]]]:
    """The kernel's records of an earlier guest run (its results.jsonl)."""
    from vfiolab.difftest.guestrun import parse_results
    return parse_results(path, count)[0]


def diff(scenarios: list[Scenario], kernel_results: Path | None = None, outdir: Path | None = None,
         timeout: int | None = None) -> DiffReport:
    """Run ``scenarios`` on both sides and compare (the kernel side from ``kernel_results`` when given)."""
    model, model_seconds = run_model(scenarios)
    guest = None
    if kernel_results is not None:
        kernel = load_kernel_records(kernel_results, len(scenarios))
    else:
        guest = run_on_kernel(scenarios, outdir, timeout)
        kernel = guest.records
    comparisons: list[Comparison] = []
    known: list[Known | None] = []
    for s, m, k in zip(scenarios, model, kernel):
        c = compare_records(s, m, k, _tolerate(s, m, k) if not s.xfail else None)
        comparisons.append(c)
        first = c.divergence or (c.tolerated[0] if c.tolerated else None)
        known.append(classify(s, first, m, k) if first else None)
    return DiffReport(scenarios, comparisons, model_seconds, guest, model, kernel, known)


def _tolerate(s: Scenario, m: list[dict[str, Any]], k: list[dict[str, Any]]) -> Callable[[Divergence], bool]:
    """Pass over the known divergences that leave both sides in the same state."""
    def tolerate(d: Divergence) -> bool:
        hit = classify(s, d, m, k)
        return hit is not None and hit.stateless
    return tolerate


def save_records(path: Path, scenarios: list[Scenario], records: list[list[dict[str, Any]]]) -> None:
    """Records as JSON lines, one scenario per line (the guest's format, so ``--kernel-results`` reads it)."""
    with path.open("w") as f:
        f.write(json.dumps({"guest": {"side": "model"}}) + "\n")
        for i, (s, r) in enumerate(zip(scenarios, records)):
            f.write(json.dumps({"s": i, "name": s.name, "records": r}, separators=(",", ":")) + "\n")
        f.write(json.dumps({"done": {"scenarios": len(scenarios)}}) + "\n")


__all__ = ["DiffReport", "diff", "load_kernel_records", "run_model", "save_records"]
