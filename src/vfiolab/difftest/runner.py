"""Run a scenario on one backend and record every call as a JSON-able dict.

A record is ``{"i", "op", "errno"}`` plus ``msg`` (the error's text: never compared, the kernel only has
strerror), ``ret`` (the normalised result: ints, lists, field dicts, bytes as ``{"hex": ...}``), ``out`` (the
struct a failed ioctl still wrote back), ``release`` (``[kind, value]`` a call gave back), ``skip`` (a
reference to a failed call), ``crash`` (anything but ``UapiError`` escaped: always a divergence) and
``expect`` (the call's expectation when it did not hold).  Standard library only.
"""

from __future__ import annotations

import dataclasses
import time
import traceback
from collections.abc import Iterator
from typing import Any

from vfiolab.difftest.backend import Backend
from vfiolab.difftest.ops import OPS
from vfiolab.difftest.scenario import Call, Ref, Scenario, errno_name
from vfiolab.errors import UapiError


class Unresolved(Exception):
    """A reference to a result that does not exist (the call failed, or has no such field)."""


def normalise(value: Any) -> Any:
    """A result as JSON: None, ints, ``{"hex": ...}`` for bytes, lists for tuples, dicts for dataclasses."""
    if value is None or isinstance(value, (str, float)):
        return value
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"hex": bytes(value).hex()}
    if isinstance(value, (tuple, list)):
        return [normalise(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: normalise(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): normalise(v) for k, v in value.items()}
    return repr(value)


class Results:
    """The results so far of one run, by call index and label."""

    def __init__(self) -> None:
        self.values: dict[int, Any] = {}
        self.labels: dict[str, int] = {}

    def resolve(self, ref: Ref) -> Any:
        idx = self.labels.get(ref.target) if isinstance(ref.target, str) else ref.target
        if idx is None or idx not in self.values:
            raise Unresolved(f"{ref}: call {ref.target} has no result")
        v = self.values[idx]
        for p in ref.path:
            try:
                if isinstance(p, int) or (isinstance(v, (tuple, list)) and p.isdigit()):
                    v = v[int(p)]
                elif isinstance(v, dict):
                    v = v[p]
                else:
                    v = getattr(v, p)
            except (LookupError, AttributeError, TypeError):
                raise Unresolved(f"{ref}: no {p!r} in {v!r}") from None
        if ref.offset:
            if not isinstance(v, int):
                raise Unresolved(f"{ref}: offset on a non-integer {v!r}")
            v += ref.offset
        return v

    def arg(self, value: Any) -> Any:
        """An argument with its references resolved (inside lists too)."""
        if isinstance(value, str) and value.startswith("$"):
            ref = Ref.parse(value)
            if ref is not None:
                return self.resolve(ref)
        if isinstance(value, list):
            return [self.arg(v) for v in value]
        return value


def run_call(backend: Backend, call: Call, i: int, results: Results) -> dict[str, Any]:
    """Execute call ``i`` and return its record (results are stored for later references)."""
    rec: dict[str, Any] = {"i": i, "op": call.op}
    try:
        args = {k: results.arg(v) for k, v in call.args.items()}
    except Unresolved as e:
        rec["errno"] = "skip"
        rec["skip"] = str(e)
        return rec
    try:
        fn, kwargs = backend.bind(call.op, args)
    except TypeError as e:
        rec["errno"] = "skip"
        rec["skip"] = f"bad arguments for {call.op}: {e}"
        return rec
    try:
        ret = fn(**kwargs)
    except UapiError as e:
        rec["errno"] = errno_name(e.errno)
        rec["msg"] = e.message  # not compared: the model says which rule fired, the kernel only strerror
        out = getattr(e, "out", None)
        if out is not None:
            rec["out"] = normalise(out)
    except Exception as e:  # noqa: BLE001 - a crash of either side is itself the finding
        rec["errno"] = "crash"
        tb = traceback.extract_tb(e.__traceback__)[-1]
        rec["crash"] = f"{type(e).__name__}: {e} ({tb.filename.rsplit('/', 1)[-1]}:{tb.lineno})"
    else:
        rec["errno"] = "ok"
        rec["ret"] = normalise(ret)
        results.values[i] = ret
        backend.note(call.op, kwargs)
        rel = OPS[call.op].releases
        if rel is not None:
            rec["release"] = [rel[1], kwargs.get(rel[0])]
    if call.label:
        results.labels[call.label] = i
    _check_expectations(call, rec)
    return rec


def _check_expectations(call: Call, rec: dict[str, Any]) -> None:
    if call.expect is not None and rec["errno"] != errno_name(call.expect):
        rec["expect"] = errno_name(call.expect)
    elif call.has_expect_ret and rec.get("ret") != normalise(call.expect_ret):
        rec["expect"] = {"ret": normalise(call.expect_ret)}


def iter_run(scenario: Scenario, backend: Backend) -> Iterator[dict[str, Any]]:
    """Run ``scenario`` on a fresh ``backend`` context, yielding each call's record as it completes."""
    backend.start()
    results = Results()
    done = False
    try:
        for i, call in enumerate(scenario.calls):
            yield run_call(backend, call, i, results)
        done = True
        backend.finish()  # close(2) of everything: a crash here is a finding too
    except Exception as e:
        if not done:
            raise
        yield {"i": len(scenario.calls), "op": "finish", "errno": "crash",
               "crash": f"{type(e).__name__}: {e}"}
    finally:
        if not done:
            backend.finish()


def run_scenario(scenario: Scenario, backend: Backend) -> tuple[list[dict[str, Any]], float]:
    """All records of ``scenario`` on ``backend`` and the seconds it took."""
    t0 = time.perf_counter()
    records = list(iter_run(scenario, backend))
    return records, time.perf_counter() - t0


__all__ = ["Results", "Unresolved", "iter_run", "normalise", "run_call", "run_scenario"]
