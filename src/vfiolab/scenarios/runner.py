"""The scenario runner: named end-to-end scenarios with typed parameters, chosen by name or by a YAML
file (architecture decision 7: scenarios are data), run with a line logger, returning a result that the
CLI renders as text or JSON.

A scenario file::

    scenario: live-migration      # a built-in scenario name
    params:                       # optional; each key is one of the scenario's parameters
      ram_mib: 64
      seed: 7

Every bad input (unknown scenario or parameter, a value of the wrong type or out of range, a file that is
not such a mapping) is a :class:`~vfiolab.errors.VfiolabError` naming what is wrong.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from vfiolab.errors import VfiolabError
from vfiolab.yamlfile import load_yaml

Log = Callable[[str], None]
"""Where a scenario reports progress, one line at a time."""

BUILTIN: Final[dict[str, str]] = {
    "live-migration": "vfiolab.scenarios.live_migration",
}
"""Built-in scenario name -> module defining ``SCENARIO`` (imported only when used)."""
DEFAULT: Final = "live-migration"


@dataclass(frozen=True)
class Param:
    """One scenario parameter: an integer in [lo, hi] or a string from ``choices``."""

    name: str
    default: int | str
    help: str
    lo: int | None = None
    hi: int | None = None
    choices: tuple[str, ...] = ()

    def parse(self, scenario: str, raw: object) -> int | str:
        """``raw`` (from the command line or YAML) as this parameter's value."""
        where = f"{scenario}: parameter {self.name}"
        if isinstance(self.default, str):
            value = str(raw) if isinstance(raw, (str, int)) and not isinstance(raw, bool) else None
            if value is None or value not in self.choices:
                raise VfiolabError(f"{where}: {raw!r} is not one of {', '.join(self.choices)}")
            return value
        if isinstance(raw, bool):
            raise VfiolabError(f"{where}: {raw!r} is not an integer")
        if isinstance(raw, str):
            try:
                raw = int(raw, 0)
            except ValueError:
                raise VfiolabError(f"{where}: {raw!r} is not an integer") from None
        if not isinstance(raw, int):
            raise VfiolabError(f"{where}: {raw!r} is not an integer")
        if (self.lo is not None and raw < self.lo) or (self.hi is not None and raw > self.hi):
            raise VfiolabError(f"{where}: {raw} is outside {self.lo}..{self.hi}")
        return raw

    def describe(self) -> str:
        """``name=default`` with its range or choices, for ``--list``."""
        if self.choices:
            domain = "|".join(self.choices)
        else:
            domain = f"{self.lo}..{self.hi}"
        return f"{self.name}={self.default} ({domain}): {self.help}"


@dataclass
class ScenarioResult:
    """What a run produced: whether every check passed, the reason when not, a few summary lines for
    humans and the whole record for machines."""

    scenario: str
    ok: bool
    failure: str | None
    summary: list[str]
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The machine-readable form: ``scenario``, ``ok``, ``failure``, then the scenario's record."""
        return {"scenario": self.scenario, "ok": self.ok, "failure": self.failure, **self.data}


@dataclass(frozen=True)
class Scenario:
    """A named scenario: its parameters and the function that runs it."""

    name: str
    summary: str
    params: tuple[Param, ...]
    run: Callable[[dict[str, Any], Log], ScenarioResult]

    def resolve(self, values: Mapping[str, object]) -> dict[str, Any]:
        """Defaults overridden by ``values``, each checked."""
        known = {p.name: p for p in self.params}
        out: dict[str, Any] = {p.name: p.default for p in self.params}
        for key, raw in values.items():
            param = known.get(key)
            if param is None:
                raise VfiolabError(f"{self.name}: unknown parameter {key!r}; known: {', '.join(known)}")
            out[key] = param.parse(self.name, raw)
        return out


def get(name: str) -> Scenario:
    """The built-in scenario ``name``."""
    module = BUILTIN.get(name)
    if module is None:
        raise VfiolabError(f"unknown scenario {name!r}; built-in: {', '.join(BUILTIN)}")
    scenario: Scenario = importlib.import_module(module).SCENARIO
    return scenario


def load_file(path: str | os.PathLike[str]) -> tuple[Scenario, dict[str, object]]:
    """A scenario file: the scenario it names and the parameters it sets."""
    doc, path = load_yaml(path, "scenario file")
    if not isinstance(doc, dict):
        raise VfiolabError(f"{path}: a scenario file is a mapping with 'scenario' and 'params'")
    extra = set(doc) - {"scenario", "params"}
    if extra:
        raise VfiolabError(f"{path}: unknown key {min(map(str, extra))!r} (expected scenario, params)")
    name = doc.get("scenario")
    if not isinstance(name, str):
        raise VfiolabError(f"{path}: 'scenario' must name a built-in scenario ({', '.join(BUILTIN)})")
    params = doc.get("params") or {}
    if not isinstance(params, dict) or not all(isinstance(k, str) for k in params):
        raise VfiolabError(f"{path}: 'params' must be a mapping of parameter names to values")
    try:
        scenario = get(name)
        scenario.resolve(params)
    except VfiolabError as e:
        raise VfiolabError(f"{path}: {e}") from None
    return scenario, params


def parse_assignments(items: Sequence[str]) -> dict[str, str]:
    """``key=value`` strings (the CLI's ``--set``) as a mapping; a later key wins."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise VfiolabError(f"--set {item!r}: expected KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


def select(target: str | None, overrides: Mapping[str, object]) -> tuple[Scenario, dict[str, Any]]:
    """The scenario ``target`` names (a built-in name, or a ``.yaml``/``.yml`` file), with its parameters
    resolved: the file's, then ``overrides``."""
    if target is None:
        target = DEFAULT
    elif not target.strip():
        raise VfiolabError("empty scenario name; built-in: " + ", ".join(BUILTIN))
    if target.endswith((".yaml", ".yml")) or os.sep in target:
        scenario, values = load_file(target)
    else:
        scenario, values = get(target), {}
    return scenario, scenario.resolve({**values, **overrides})


__all__ = ["BUILTIN", "DEFAULT", "Log", "Param", "Scenario", "ScenarioResult", "get", "load_file",
           "parse_assignments", "select"]
