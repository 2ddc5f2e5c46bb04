"""Benchmark plumbing: every benchmark prints a ratio against a floor measured in the same run and
writes ``bench/out/NAME.json`` = {"name", "unit", "value", "floor", "ratio", "goal"}."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable

OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")


def best_of(fn: Callable[[], object], repeat: int = 5, *, setup: Callable[[], object] | None = None) -> float:
    """Smallest wall time of ``repeat`` runs (the least disturbed by a noisy shared machine); ``setup`` runs
    before each run, untimed."""
    best = float("inf")
    for _ in range(repeat):
        if setup is not None:
            setup()
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def best_of_interleaved(fns: dict[str, Callable[[], object]], repeat: int = 5) -> dict[str, float]:
    """Smallest wall time of each function over ``repeat`` rounds that run every function once in turn:
    a floor and the value measured against it see the same spells of load on a shared machine."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def report(name: str, unit: str, value: float, floor: float | None, goal: str,
           extra: dict[str, object] | None = None) -> dict[str, object]:
    """Print one line and write bench/out/NAME.json; ``ratio`` = value / floor (None without a floor)."""
    ratio = (value / floor) if floor else None
    rec: dict[str, object] = {"name": name, "unit": unit, "value": value, "floor": floor,
                              "ratio": ratio, "goal": goal}
    if extra:
        rec.update(extra)
    os.makedirs(OUT_DIR, exist_ok=True)
    with open(os.path.join(OUT_DIR, f"{name}.json"), "w") as f:
        json.dump(rec, f, indent=1)
    r = f"{ratio:.3g}" if ratio is not None else "n/a"
    fl = f"{floor:.4g}" if floor is not None else "n/a"
    print(f"{name}: {value:.4g} {unit}  floor {fl} {unit}  ratio {r}  (goal ratio {goal})")
    return rec
