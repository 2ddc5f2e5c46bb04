"""Fault injection for the model: the kernel's per-task ``fail-nth`` (``lib/fault-inject.c``
should_fail_ex(), ``/proc/self/task/<tid>/fail-nth``, Documentation/fault-injection/fault-injection.rst).

Every place where the kernel may fail an allocation (failslab, fail_page_alloc, iommufd's own
``iommufd_should_fail()``, ...) calls :func:`fail_point` (or :func:`should_fail` where the caller has a
fallback) with the name of the kernel allocation it stands for and the errno the kernel returns when it
fails.  All of them go through one counter, :class:`FailNth`: writing N arms it, every point passed
counts down, and the N-th one fails; reading it back gives 0 once the failure was injected, as the
proc file does.  Disarmed, a point costs one global read.

The model is single-threaded, so the "current task" is the module: :func:`arm` / :func:`disarm`, or
:func:`fail_nth` for a ``with`` block (arming twice is refused).
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from vfiolab.errors import UapiError, VfiolabError


@dataclass(frozen=True)
class Injected:
    """The point that failed: the kernel allocation it stands for, the errno it returns, and its
    position among the points passed while armed (1-based)."""

    site: str
    errno: int
    nth: int


@dataclass
class FailNth:
    """current->fail_nth and what passed while it was armed."""

    nth: int = 0
    """Points left before the failing one (0: disarmed, or the failure was injected)."""
    passed: int = 0
    """Points passed since arming."""
    injected: Injected | None = None
    sites: list[str] = field(default_factory=list)
    """Every point passed, in order (``record=True``)."""
    record: bool = False

    def write(self, n: int) -> None:
        """Write N to fail-nth: the N-th point from now fails (0 disarms)."""
        if n < 0:
            raise VfiolabError(f"fail-nth takes N >= 0, not {n}")
        self.nth = n
        self.passed = 0
        self.injected = None
        self.sites.clear()

    def read(self) -> int:
        """Read fail-nth: 0 when the failure was injected (or nothing was armed), else the points left."""
        return self.nth

    def tick(self, site: str, err: int, count: int = 1) -> bool:
        """should_fail_ex() with fail_nth set, ``count`` times in a row (the allocations of one bulk
        operation): fail when the N-th is among them."""
        if self.record:
            self.sites += [site] * count
        if not self.nth or self.nth > count:
            self.passed += count
            if self.nth:
                self.nth -= count
            return False
        self.passed += self.nth
        self.nth = 0
        self.injected = Injected(site, err, self.passed)
        return True


_current: FailNth | None = None


def should_fail(site: str, err: int = errno.ENOMEM) -> bool:
    """A point with a fallback: True when this one is to fail (the caller then returns ``err`` or
    takes its fallback)."""
    cur = _current
    return cur is not None and cur.tick(site, err)


def fail_point(site: str, err: int = errno.ENOMEM, count: int = 1) -> None:
    """A point that fails the call: raises UapiError(``err``) when this one is to fail.  ``count``
    stands for that many allocations made together (the bulk operation fails as a whole)."""
    cur = _current
    if cur is not None and count > 0 and cur.tick(site, err, count):
        raise UapiError(err, f"fault injected: {site} failed (fail-nth {cur.passed})")


def armed() -> FailNth | None:
    """The armed counter, if any."""
    return _current


def arm(n: int, *, record: bool = False) -> FailNth:
    """Write N to fail-nth (N = 0 counts points without failing any); ``record`` keeps the names of
    the points passed.  Refused while armed."""
    global _current
    if _current is not None:
        raise VfiolabError("fail-nth is already armed")
    state = FailNth(record=record)
    state.write(n)
    _current = state
    return state


def disarm() -> FailNth | None:
    """Stop counting; the counter as it was (None when nothing was armed)."""
    global _current
    state, _current = _current, None
    return state


@contextmanager
def fail_nth(n: int, *, record: bool = False) -> Iterator[FailNth]:
    """:func:`arm` for the duration of the block."""
    state = arm(n, record=record)
    try:
        yield state
    finally:
        disarm()


__all__ = ["FailNth", "Injected", "arm", "armed", "disarm", "fail_nth", "fail_point", "should_fail"]
