"""The scenario format: a named sequence of uAPI calls whose arguments may refer to earlier results.

A call is a mapping with exactly one operation key (``ioas_map``, ``test.mock_domain``, ``mmap``, ... — see
:mod:`.ops`) whose value is the argument mapping, plus optional keys: ``as`` (a label for the result),
``expect`` (``ok`` or an errno name such as ``ENOENT``) and ``expect_ret`` (the exact result).  In YAML::

    name: area
    calls:
      - mmap: {length: 0x10000}
        as: buf
      - ioas_alloc: {}
        as: ioas
      - ioas_map: {ioas_id: $ioas, user_va: $buf, length: 4096, iova: 0x1000000, flags: 7}
      - ioas_unmap: {ioas_id: $ioas, iova: $2+0x800, length: 4096}
        expect: ENOENT

A reference is a string ``$name`` or ``$N`` (the result of the call labelled ``name``, or of call N, from 0),
followed by ``.field`` or ``[i]`` selectors and an optional ``+k``/``-k`` offset (decimal or 0x hex).  Each
side resolves references against its own results, so user VAs, fds and kernel-chosen IOVAs flow as values
that may legitimately differ between the model and the kernel.  Standard library only (the guest parses it).
"""

from __future__ import annotations

import errno
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from vfiolab.errors import VfiolabError

META_KEYS: Final = frozenset({"as", "expect", "expect_ret"})
_REF: Final = re.compile(r"^\$([A-Za-z_]\w*|\d+)((?:\.\w+|\[\d+\])*)(?:([+-])(0[xX][0-9a-fA-F]+|\d+))?$")
_SEL: Final = re.compile(r"\.(\w+)|\[(\d+)\]")
_LABEL: Final = re.compile(r"^[A-Za-z_]\w*$")


class ScenarioError(VfiolabError):
    """A scenario that cannot be read or run as written: names the scenario, the call and the problem."""


@dataclass(frozen=True)
class Ref:
    """A reference to an earlier result: ``target`` (a label or call index), selectors, an offset."""

    target: str | int
    path: tuple[str | int, ...] = ()
    offset: int = 0

    @classmethod
    def parse(cls, text: str) -> Ref | None:
        """The reference ``text`` spells, or None when it is not one."""
        m = _REF.match(text)
        if not m:
            return None
        tgt, sels, sign, num = m.groups()
        path = tuple(s if s else int(i) for s, i in _SEL.findall(sels))
        off = int(num, 0) if num else 0
        return cls(int(tgt) if tgt.isdigit() else tgt, path, -off if sign == "-" else off)

    def __str__(self) -> str:
        sel = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in self.path)
        off = f"{self.offset:+#x}" if self.offset else ""
        return f"${self.target}{sel}{off}"


def errno_value(name: str | int) -> int:
    """``ok``/0 -> 0, ``ENOENT`` -> 2; a number passes; anything else is a ScenarioError."""
    if isinstance(name, int) and not isinstance(name, bool):
        return name
    if name in ("ok", "OK", "0"):
        return 0
    value = getattr(errno, str(name), None)
    if not isinstance(value, int) or not str(name).startswith("E"):
        raise ScenarioError(f"{name!r} is neither 'ok' nor an errno name")
    return value


def errno_name(value: int) -> str:
    """0 -> ``ok``; an errno -> its name (``ENOENT``)."""
    return "ok" if value == 0 else errno.errorcode.get(value, str(value))


@dataclass
class Call:
    """One call: operation, raw arguments (references still unresolved), label and expectations."""

    op: str
    args: dict[str, Any] = field(default_factory=dict)
    label: str | None = None
    expect: int | None = None
    expect_ret: Any = None
    has_expect_ret: bool = False

    def refs(self) -> list[Ref]:
        """Every reference among the arguments (also inside lists)."""
        out: list[Ref] = []

        def walk(v: Any) -> None:
            if isinstance(v, str) and (r := Ref.parse(v)) is not None:
                out.append(r)
            elif isinstance(v, list):
                for x in v:
                    walk(x)
        for v in self.args.values():
            walk(v)
        return out

    def to_json(self) -> dict[str, Any]:
        """The mapping form (``{op: args, as:, expect:, expect_ret:}``)."""
        d: dict[str, Any] = {self.op: dict(self.args)}
        if self.label:
            d["as"] = self.label
        if self.expect is not None:
            d["expect"] = errno_name(self.expect)
        if self.has_expect_ret:
            d["expect_ret"] = self.expect_ret
        return d

    def __str__(self) -> str:
        args = ", ".join(f"{k}={_show(v)}" for k, v in self.args.items())
        return f"{self.op}({args})" + (f" as {self.label}" if self.label else "")


def _show(v: Any) -> str:
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 4096:
        return hex(v)
    return repr(v) if not isinstance(v, str) else v


@dataclass
class Scenario:
    """A named call sequence, optionally known to diverge (``xfail``: the reason, kept as a regression)."""

    name: str
    calls: list[Call]
    description: str = ""
    source: str = ""
    """Where it comes from: the kselftest run it re-expresses, or the generator's seed."""
    xfail: str = ""

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name}
        for k in ("description", "source", "xfail"):
            if getattr(self, k):
                d[k] = getattr(self, k)
        d["calls"] = [c.to_json() for c in self.calls]
        return d

    def dumps(self) -> str:
        """One JSON line."""
        return json.dumps(self.to_json(), separators=(",", ":"))


def parse_call(raw: Any, where: str, known_ops: Iterable[str] | None = None) -> Call:
    """One call from its mapping form; ScenarioError naming ``where`` when malformed."""
    if not isinstance(raw, Mapping):
        raise ScenarioError(f"{where}: a call is a mapping {{op: {{args}}}}, got {type(raw).__name__}")
    ops = [k for k in raw if k not in META_KEYS]
    if len(ops) != 1:
        raise ScenarioError(f"{where}: exactly one operation per call, got {ops or 'none'}")
    op = str(ops[0])
    if known_ops is not None and op not in set(known_ops):
        raise ScenarioError(f"{where}: unknown operation {op!r}")
    args = raw[op]
    if args is None:
        args = {}
    if not isinstance(args, Mapping) or not all(isinstance(k, str) for k in args):
        raise ScenarioError(f"{where}: the arguments of {op} must be a mapping of names")
    label = raw.get("as")
    if label is not None and (not isinstance(label, str) or not _LABEL.match(label)):
        raise ScenarioError(f"{where}: label {label!r} is not an identifier")
    call = Call(op, dict(args), label)
    if "expect" in raw:
        try:
            call.expect = errno_value(raw["expect"])
        except ScenarioError as e:
            raise ScenarioError(f"{where}: {e}") from None
    if "expect_ret" in raw:
        call.expect_ret, call.has_expect_ret = raw["expect_ret"], True
    return call


def parse_scenario(raw: Any, where: str = "<scenario>", known_ops: Iterable[str] | None = None) -> Scenario:
    """A scenario from its mapping form (or a bare list of calls); references are checked to point back."""
    if isinstance(raw, Sequence) and not isinstance(raw, (str, bytes)):
        raw = {"name": where, "calls": raw}
    if not isinstance(raw, Mapping):
        raise ScenarioError(f"{where}: a scenario is a mapping with 'name' and 'calls' (or a list of calls)")
    unknown = set(raw) - {"name", "calls", "description", "source", "xfail"}
    if unknown:
        raise ScenarioError(f"{where}: unknown keys {sorted(unknown)}")
    name = str(raw.get("name") or where)
    calls_raw = raw.get("calls")
    if not isinstance(calls_raw, Sequence) or isinstance(calls_raw, (str, bytes)):
        raise ScenarioError(f"{name}: 'calls' must be a list")
    ops = list(known_ops) if known_ops is not None else None
    calls = [parse_call(c, f"{name}: call {i}", ops) for i, c in enumerate(calls_raw)]
    labels: dict[str, int] = {}
    for i, c in enumerate(calls):
        for r in c.refs():
            if isinstance(r.target, int) and not 0 <= r.target < i:
                raise ScenarioError(f"{name}: call {i} ({c.op}): {r} does not point to an earlier call")
            if isinstance(r.target, str) and r.target not in labels:
                raise ScenarioError(f"{name}: call {i} ({c.op}): {r} names no earlier label")
        if c.label:
            labels[c.label] = i
    return Scenario(name, calls, str(raw.get("description", "")), str(raw.get("source", "")),
                    str(raw.get("xfail", "")))


def load_scenarios(path: Path, known_ops: Iterable[str] | None = None) -> list[Scenario]:
    """Scenarios from a file: YAML (one scenario, or a list / ``scenarios:`` list of them) or JSON lines."""
    try:
        text = path.read_text()
    except OSError as e:
        raise ScenarioError(f"{path}: {e.strerror}") from None
    if path.suffix == ".jsonl":
        out = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    raw = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ScenarioError(f"{path}:{n}: {e}") from None
                out.append(parse_scenario(raw, f"{path}:{n}", known_ops))
        return out
    import yaml  # host only: the guest receives JSON lines
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ScenarioError(f"{path}: {e}") from None
    if isinstance(doc, Mapping) and "scenarios" in doc:
        doc = doc["scenarios"]
    if isinstance(doc, Sequence) and doc and all(isinstance(d, Mapping) and "calls" in d for d in doc):
        return [parse_scenario(d, f"{path}[{i}]", known_ops) for i, d in enumerate(doc)]
    return [parse_scenario(doc, path.stem, known_ops)]


__all__ = ["META_KEYS", "Call", "Ref", "Scenario", "ScenarioError", "errno_name", "errno_value",
           "load_scenarios",
           "parse_call", "parse_scenario"]
