"""Divergences between the model and Linux 7.2 that are understood and reported but not yet fixed: each has
an ID, the kernel rule, the model file at fault and a tight predicate over the diverging call, so a random
run counts them apart from new divergences.  Each also has an ``xfail`` regression scenario in the corpus
(docs/oracle.md lists them); once the model is fixed the entry goes and the scenario expects the kernel's
answer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vfiolab.difftest.compare import Divergence
from vfiolab.difftest.scenario import Scenario

Records = Sequence[Mapping[str, Any]]


@dataclass(frozen=True)
class Known:
    """One understood divergence."""

    id: str
    summary: str
    kernel: str
    model: str
    matches: Callable[[Scenario, Divergence, Records, Records], bool]
    stateless: bool = False
    """Both sides end in the same state (a check that fails with different errnos): comparing goes on."""


def errno_pair(d: Divergence, op: str, model: str, kernel: str) -> bool:
    """The usual predicate: ``op`` failed with errno ``model`` in the model and ``kernel`` in the kernel."""
    return (d.model is not None and d.kernel is not None and d.model.get("op") == op
            and d.model.get("errno") == model and d.kernel.get("errno") == kernel)


KNOWN: tuple[Known, ...] = ()
"""None open: the ten found so far (docs/oracle.md) are fixed in the model, and their scenarios in
``known.yaml`` stay as regressions that expect the kernel's answer."""
KNOWN_BY_ID = {k.id: k for k in KNOWN}


def classify(scenario: Scenario, d: Divergence, model: Records, kernel: Records) -> Known | None:
    """The known divergence ``d`` is an instance of, or None for a new one."""
    for k in KNOWN:
        try:
            if k.matches(scenario, d, model, kernel):
                return k
        except (LookupError, TypeError, AttributeError):
            continue
    return None


__all__ = ["KNOWN", "KNOWN_BY_ID", "Known", "classify", "errno_pair"]
