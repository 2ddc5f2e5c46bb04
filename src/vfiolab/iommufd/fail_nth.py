"""Sweeping every fault-injection point of an iommufd call sequence, as the kernel's
``tools/testing/selftests/iommu/iommufd_fail_nth.c`` does with ``/proc/self/task/<tid>/fail-nth``.

A scenario is a callable taking a :class:`NthRun`; it makes its calls through :meth:`NthRun.step`
(one syscall each), calls :meth:`NthRun.enable` where the kernel test calls ``fail_nth_enable()``, and
stops at the first failed step (the C test's ``return -1``).  :func:`sweep` runs it once with nothing
injected, then with N = 1, 2, ... until a run passes every point without the injection firing; that
run must succeed.

Beyond the kernel test (which only looks for splats and leaked page references), each failed step is
checked against the model: the failure must be the injected one, with the errno the kernel returns at
that point, and the context must be exactly as before the call (:func:`ctx_state`: objects and their
references, IOVA areas, reserved and allowed ranges, pins and accounting, every domain's mappings,
attachments, mock devices, open files); page tables may keep tables allocated by a failed map, as
generic_pt does, but every table frame must be reachable (:func:`table_leaks`).
"""

from __future__ import annotations

import contextlib
import difflib
import errno
import pprint
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from vfiolab import faultinject
from vfiolab.errors import UapiError, VfiolabError
from vfiolab.faultinject import FailNth, Injected

if TYPE_CHECKING:
    from vfiolab.iommufd.main import Iommufd

T = TypeVar("T")
NTH_LIMIT = 1000
"""fail_nth_next(): ASSERT_GT(1000, iteration)."""


class ScenarioFailed(Exception):
    """A step failed as injected: the scenario stops (the C test's ``return -1``)."""

    def __init__(self, step: str, err: UapiError) -> None:
        super().__init__(f"{step}: {err}")
        self.step = step
        self.err = err


class InvariantError(VfiolabError):
    """A failure path of the model broke a rule (wrong errno, a leak, a half-done change)."""


# ---------------------------------------------------------------------- what the context holds
def _domains(ictx: Iommufd) -> list[Any]:
    from vfiolab.iommufd.hw_pagetable import HwPagetable
    return [o.domain for o in ictx.objects if isinstance(o, HwPagetable) and o.domain is not None]


def ctx_state(ictx: Iommufd) -> dict[str, Any]:
    """Everything a failed call must leave as it was, as plain comparable data."""
    from vfiolab.iommufd.hw_pagetable import HwPagetable
    from vfiolab.iommufd.ioas import Ioas
    objs = ictx.objects
    state: dict[str, Any] = {
        "ids": [(oid, type(o).__name__ if (o := objs.lookup(oid)) is not None else None,
                 o.users if o is not None else None) for oid in objs.ids()],
        "refs": ictx._refs,
        "groups": {gid: (g.refs, {p: (a.hwpt.id if a.hwpt is not None else None, sorted(a.devices))
                                  for p, a in sorted(g.pasid_attach.items())},
                         g.sw_msi_start)
                   for gid, g in sorted(ictx.groups.items())},
    }
    pages_seen: dict[int, Any] = {}
    for o in objs:
        if isinstance(o, Ioas):
            iopt = o.iopt
            areas = []
            for a in iopt.areas:
                if a.pages is not None:
                    pages_seen[id(a.pages)] = a.pages
                areas.append((a.iova, a.last, a.index, a.last_index, a.page_offset, a.iommu_prot,
                              id(a.pages) if a.pages is not None else None, a.num_accesses, a.num_locks,
                              a.prevent_access,
                              id(a.storage_domain) if a.storage_domain is not None else None))
            state[f"ioas {o.id}"] = {
                "areas": areas,
                "reserved": sorted((r.start, r.last, id(r.owner)) for r in iopt.reserved),
                "allowed": list(iopt.allowed),
                "domains": [id(d) for d in iopt.domains],
                "hwpts": [h.id for h in o.hwpt_list],
                "accesses": sorted(iopt.access_list),
                "alignment": iopt.iova_alignment,
                "large_pages": not iopt.disable_large_pages,
            }
        if isinstance(o, HwPagetable) and o.domain is not None:
            dom = o.domain
            pt = getattr(dom, "pt", None)
            state[f"hwpt {o.id}"] = {
                "domain": id(dom), "attached": dom.attached,
                "leaves": pt.leaves() if pt is not None else None,
                "fault": o.fault.id if o.fault is not None else None,
            }
    for pid, p in sorted(pages_seen.items()):
        state[f"pages {pid}"] = (p.refs, p.npinned, p.last_npinned, p.holders.tobytes(),
                                 sorted(p.accesses.items()), p.frames.tobytes())
    task = ictx.current
    state["task"] = (task.pinned_vm, task.locked_vm, task.user.locked_vm, sorted(task.fds))
    state["pins"] = int(ictx.process.mem.pincount.sum())
    mock = ictx.selftest
    if mock is not None:
        state["mock"] = (sorted(d.id for d in mock.devs.values()),
                         sorted((rid, pasid, id(c.domain)) for (rid, pasid), c in mock.unit._ctx.items()))
        state["core"] = sorted((d.dev.name, id(d.dev.group.domain) if d.dev.group else None,
                                sorted((p, id(e.domain)) for p, e in d.dev.group.pasid_array.items())
                                if d.dev.group else None)
                               for d in mock.devs.values())
    return state


def table_leaks(ictx: Iommufd) -> list[str]:
    """Paging domains whose table-frame count differs from the frames reachable from their top."""
    out = []
    for dom in _domains(ictx):
        pt = getattr(dom, "pt", None)
        if pt is None or not hasattr(pt, "table_frame_list") or pt.top_frame < 0:
            continue
        reachable = len(pt.table_frame_list())
        if reachable != pt.table_frames:
            out.append(f"{dom!r}: {pt.table_frames} table frames owned, {reachable} reachable")
    return out


def _diff(before: dict[str, Any], after: dict[str, Any]) -> str:
    a = pprint.pformat(before, width=110).splitlines()
    b = pprint.pformat(after, width=110).splitlines()
    return "\n".join(difflib.unified_diff(a, b, "before", "after", lineterm="", n=1))


# ---------------------------------------------------------------------- one run
@dataclass
class StepFailure:
    """How the run stopped: the step, the errno, the injected point."""

    step: str
    errno: int
    injected: Injected | None


class NthRun:
    """One run of a TEST_FAIL_NTH body with fail-nth = ``n`` (0: nothing injected, points counted)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.state: FailNth | None = None
        self.ictx: Iommufd | None = None
        """The context the steps act on (set by the scenario once it opened one)."""
        self.failure: StepFailure | None = None
        self.steps = 0

    def enable(self) -> None:
        """fail_nth_enable(): from here on the points count."""
        if self.state is None:
            self.state = faultinject.arm(self.n)

    def step(self, name: str, fn: Callable[[], T], *, may_fail: bool = False) -> T:
        """One syscall.  A UapiError must be the injected fault with its errno (``may_fail``: the call
        is expected to fail anyway, like the last unmap of ``basic``), and must leave the context as
        it was; then the scenario stops."""
        self.steps += 1
        st = self.state
        watch = st is not None and st.injected is None and self.ictx is not None and not self.ictx.closed
        mark = st.passed if st is not None else 0
        before = ctx_state(self.ictx) if watch and self.ictx is not None else None
        try:
            return fn()
        except UapiError as e:
            inj = st.injected if st is not None else None
            fired_here = inj is not None and inj.nth > mark
            if not may_fail:
                if not fired_here:
                    raise InvariantError(f"{name} failed with nothing injected in it: {e}") from e
                assert inj is not None
                if e.errno != inj.errno:
                    raise InvariantError(f"{name}: injected {inj.site} ({errno.errorcode[inj.errno]}) "
                                         f"surfaced as {errno.errorcode.get(e.errno, e.errno)}: {e}") from e
            if before is not None and self.ictx is not None:
                after = ctx_state(self.ictx)
                if after != before:
                    where = f" (injected {inj.site})" if fired_here and inj is not None else ""
                    raise InvariantError(f"{name} failed{where} but changed the context:\n"
                                         f"{_diff(before, after)}") from e
            if self.ictx is not None and not self.ictx.closed:
                leaks = table_leaks(self.ictx)
                if leaks:
                    raise InvariantError(f"{name} failed and leaked page-table frames: {leaks}") from e
            if may_fail and not fired_here:
                return None  # type: ignore[return-value]
            self.failure = StepFailure(name, e.errno, inj if fired_here else None)
            raise ScenarioFailed(name, e) from e


# ---------------------------------------------------------------------- the sweep
@dataclass
class SweepResult:
    """What a sweep did: how many N were tried (the first, uninjected, run included), the points the
    uninjected run passed, and per N the point that failed and where the run stopped."""

    name: str
    tried: int = 0
    points: int = 0
    failures: dict[int, StepFailure | None] = field(default_factory=dict)
    injected: dict[int, Injected] = field(default_factory=dict)

    def summary(self) -> str:
        stopped = sum(1 for f in self.failures.values() if f is not None)
        sites = sorted({i.site for i in self.injected.values()})
        return (f"{self.name}: {self.tried} runs (N = 0..{self.tried - 1}), {self.points} fault points, "
                f"{stopped} runs stopped by an injected failure, {len(sites)} distinct points")


R = TypeVar("R", bound=NthRun)


def sweep(name: str, scenario: Callable[[R], None], teardown: Callable[[R], None],
          make_run: Callable[[int], R], limit: int = NTH_LIMIT) -> SweepResult:
    """The TEST_FAIL_NTH loop: N = 0 (must pass), then 1, 2, ... until the N-th point is not reached;
    ``teardown`` (the fixture teardown plus the leak checks) runs after every run."""
    res = SweepResult(name)
    n = 0
    while True:
        if n >= limit:
            raise InvariantError(f"{name}: more than {limit} fault points")
        run = make_run(n)
        passed = True
        try:
            scenario(run)
        except ScenarioFailed:
            passed = False
        except BaseException:
            faultinject.disarm()
            with contextlib.suppress(UapiError, VfiolabError, AssertionError):
                teardown(run)  # best effort: the scenario's own error is the one to report
            raise
        state = faultinject.disarm()
        teardown(run)
        res.tried += 1
        res.failures[n] = run.failure
        if state is not None and state.injected is not None:
            res.injected[n] = state.injected
        if n == 0:
            if not passed:
                raise InvariantError(f"{name}: the run without injection failed: {run.failure}")
            res.points = state.passed if state is not None else 0
        elif state is None or state.read() != 0:  # fail-nth not consumed: the sequence has no N-th point
            if not passed:
                raise InvariantError(f"{name}: run {n} injected nothing but failed: {run.failure}")
            return res
        n += 1


__all__ = ["InvariantError", "NthRun", "ScenarioFailed", "StepFailure", "SweepResult", "ctx_state", "sweep",
           "table_leaks"]
