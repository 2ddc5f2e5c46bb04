"""Compare the model's and the kernel's records of one scenario: the first divergence, with both sides.

Records must agree call by call on the errno, on the struct a failed ioctl wrote back, and on the result.
Result parts of a symbolic kind (:data:`~vfiolab.difftest.ops.SYMBOLIC_KINDS`: user VAs, fds, IOVAs the
kernel chose) are paired instead: the first time a model value meets a kernel value they are bound to each
other, and every later occurrence must keep that pairing in both directions; a ``release`` (``close`` of an
fd) unbinds the pair.  A crash on either side is always a divergence.  Standard library only.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from vfiolab.difftest.ops import OPS
from vfiolab.difftest.scenario import Scenario


@dataclass
class Divergence:
    """The first call where the two sides disagree."""

    scenario: str
    index: int
    call: str
    model: dict[str, Any] | None
    kernel: dict[str, Any] | None
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "index": self.index, "call": self.call, "reason": self.reason,
                "model": self.model, "kernel": self.kernel}

    def __str__(self) -> str:
        return (f"{self.scenario}: call {self.index} {self.call}: {self.reason}\n"
                f"  model:  {_brief(self.model)}\n  kernel: {_brief(self.kernel)}")


def _brief(rec: Mapping[str, Any] | None, limit: int = 160) -> str:
    """A record as one line of JSON, long results cut (the JSON report keeps them whole)."""
    text = json.dumps(rec, sort_keys=True)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


@dataclass
class Expectation:
    """A call whose written expectation did not hold on one side."""

    scenario: str
    index: int
    call: str
    side: str
    expected: Any
    got: Any


@dataclass
class Comparison:
    """The outcome for one scenario: records compared, the divergence (if any), symbolic values that
    differed but paired consistently, and failed expectations."""

    scenario: str
    compared: int = 0
    divergence: Divergence | None = None
    symbolic_differences: dict[str, int] = field(default_factory=dict)
    expectations: list[Expectation] = field(default_factory=list)
    tolerated: list[Divergence] = field(default_factory=list)
    """Divergences passed over because they change nothing (``tolerate`` said so): a failed check whose
    errno differs leaves both sides in the same state, so the comparison goes on."""


class _Pairing:
    """One bijection per symbolic kind between model values and kernel values."""

    def __init__(self) -> None:
        self.m2k: dict[str, dict[Any, Any]] = {}
        self.k2m: dict[str, dict[Any, Any]] = {}
        self.differences: dict[str, int] = {}

    def pair(self, kind: str, m: Any, k: Any) -> str | None:
        """Bind or check ``m`` <-> ``k``; the reason when the pairing breaks."""
        m2k, k2m = self.m2k.setdefault(kind, {}), self.k2m.setdefault(kind, {})
        if m in m2k and m2k[m] != k:
            return f"{kind} {_h(m)} was paired with kernel {_h(m2k[m])}, now with {_h(k)}"
        if k in k2m and k2m[k] != m:
            return f"kernel {kind} {_h(k)} was paired with model {_h(k2m[k])}, now with {_h(m)}"
        m2k[m], k2m[k] = k, m
        if m != k:
            self.differences[kind] = self.differences.get(kind, 0) + 1
        return None

    def release(self, kind: str, m: Any, k: Any) -> None:
        self.m2k.get(kind, {}).pop(m, None)
        self.k2m.get(kind, {}).pop(k, None)


def _h(v: Any) -> str:
    return hex(v) if isinstance(v, int) else repr(v)


def _bytes_reason(m: str, k: str) -> str:
    """Where two hex byte strings first differ, briefly."""
    a, b = bytes.fromhex(m), bytes.fromhex(k)
    at = next((i for i in range(min(len(a), len(b))) if a[i] != b[i]), min(len(a), len(b)))
    if len(a) != len(b) and at == min(len(a), len(b)):
        return f"{len(a)} bytes vs {len(b)} bytes"
    n = sum(x != y for x, y in zip(a, b))
    return (f"bytes differ from offset {at:#x} ({n} of {len(a)} bytes): model {a[at:at + 8].hex()}.. "
            f"kernel {b[at:at + 8].hex()}..")


def _compare_ret(m: Any, k: Any, kinds: Mapping[str, str], pairing: _Pairing) -> str | None:
    """None when the results agree (symbolic parts paired), else the reason."""
    if "" in kinds:
        return pairing.pair(kinds[""], m, k)
    if isinstance(m, Mapping) and isinstance(k, Mapping) and "hex" in m and "hex" in k:
        return None if m == k else _bytes_reason(str(m["hex"]), str(k["hex"]))
    if isinstance(m, Mapping) and isinstance(k, Mapping) and "hex" not in m:
        if set(m) != set(k):
            return f"result fields differ: {sorted(m)} vs {sorted(k)}"
        for key in m:
            why = (pairing.pair(kinds[key], m[key], k[key]) if key in kinds
                   else None if m[key] == k[key] else f"{key}: {_h(m[key])} vs {_h(k[key])}")
            if why:
                return why
        return None
    if isinstance(m, Sequence) and isinstance(k, Sequence) and not isinstance(m, str):
        if len(m) != len(k):
            return f"result lengths differ: {len(m)} vs {len(k)}"
        for idx, (a, b) in enumerate(zip(m, k)):
            why = pairing.pair(kinds[str(idx)], a, b) if str(idx) in kinds else \
                None if a == b else f"[{idx}]: {_h(a)} vs {_h(b)}"
            if why:
                return why
        return None
    return None if m == k else f"result {_h(m)} vs {_h(k)}"


def compare_records(scenario: Scenario, model: Sequence[Mapping[str, Any]], kernel: Sequence[Mapping[str, Any]],
                    tolerate: Callable[[Divergence], bool] | None = None) -> Comparison:
    """Compare the two record streams of ``scenario`` up to the first divergence ``tolerate`` does not pass
    over."""
    result = Comparison(scenario.name)
    pairing = _Pairing()
    n = max(len(model), len(kernel))
    for i in range(n):
        m = dict(model[i]) if i < len(model) else None
        k = dict(kernel[i]) if i < len(kernel) else None
        call = str(scenario.calls[i]) if i < len(scenario.calls) else "finish"
        for side, rec in (("model", m), ("kernel", k)):
            if rec is not None and "expect" in rec:
                got = rec.get("ret") if isinstance(rec["expect"], dict) else rec["errno"]
                result.expectations.append(Expectation(scenario.name, i, call, side, rec["expect"], got))
        why = _why(m, k, pairing)
        if why:
            d = Divergence(scenario.name, i, call, m, k, why)
            if tolerate is None or not tolerate(d):
                result.divergence = d
                break
            result.tolerated.append(d)
        result.compared += 1
    result.symbolic_differences = dict(pairing.differences)
    return result


def _why(m: dict[str, Any] | None, k: dict[str, Any] | None, pairing: _Pairing) -> str | None:
    if m is None or k is None:
        return f"the {'model' if m is None else 'kernel'} has no record here"
    if m.get("op") != k.get("op"):
        return f"different operations {m.get('op')} vs {k.get('op')}"
    if "crash" in m or "crash" in k:
        sides = (("model", m), ("kernel", k))
        return "crash: " + "; ".join(f"{s}: {r['crash']}" for s, r in sides if "crash" in r)
    if m["errno"] != k["errno"]:
        return f"errno {m['errno']} vs {k['errno']}"
    if m.get("out") != k.get("out"):
        return f"struct written back differs: {m.get('out')} vs {k.get('out')}"
    spec = OPS.get(str(m["op"]))
    kinds = spec.kinds if spec is not None else {}
    why = _compare_ret(m.get("ret"), k.get("ret"), kinds, pairing)
    if why:
        return why
    if "release" in m and "release" in k:
        pairing.release(m["release"][0], m["release"][1], k["release"][1])
    return None


__all__ = ["Comparison", "Divergence", "Expectation", "compare_records"]
