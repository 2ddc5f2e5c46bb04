"""The VFIO migration FSM, cell by cell, for every feature combination (STOP_COPY; +P2P; +PRE_COPY;
+both).

Expectations are not read from the model's table.  They come from three other statements of the kernel:

* the next-step grid of vfio-uapi.md §6.1 (full-feature device), checked cell by cell;
* the comment above ``vfio_mig_get_next_state()`` in Linux 7.2 ``drivers/vfio/vfio_main.c``: the direct
  arcs a driver implements per feature set and the complete list of combination paths of a full-feature
  device (with the two blocked arcs), which must account for all 42 ordered pairs of states;
* the skip rule of the same function ("arcs touching optional and unsupported states are skipped over"):
  a reduced device's path is the full-feature path with its unsupported states left out, and every step of
  it must be an arc the kernel requires that device's driver to implement.
"""

from __future__ import annotations

import errno
import itertools

import pytest

from vfiolab.errors import UapiError
from vfiolab.vfio.migration import (
    VFIO_MIGRATION_P2P,
    VFIO_MIGRATION_PRE_COPY,
    VFIO_MIGRATION_STOP_COPY,
    MigrationFatal,
    MigState,
    VfioMigration,
    mig_get_next_state,
    mig_path,
    state_supported,
)

S, R, SC, RES, RP, PC, PCP, E = (MigState.STOP, MigState.RUNNING, MigState.STOP_COPY, MigState.RESUMING,
                                 MigState.RUNNING_P2P, MigState.PRE_COPY, MigState.PRE_COPY_P2P, MigState.ERROR)
NAMES = {"STOP": S, "RUNNING": R, "STOP_COPY": SC, "RESUMING": RES, "RUNNING_P2P": RP, "PRE_COPY": PC,
         "PRE_COPY_P2P": PCP, "ERROR": E}

BASE = VFIO_MIGRATION_STOP_COPY
P2P = BASE | VFIO_MIGRATION_P2P
PRE = BASE | VFIO_MIGRATION_PRE_COPY
FULL = BASE | VFIO_MIGRATION_P2P | VFIO_MIGRATION_PRE_COPY
FEATURE_SETS = {"stop_copy": BASE, "p2p": P2P, "pre_copy": PRE, "p2p_pre_copy": FULL}

# vfio-uapi.md §6.1: next[cur][target] for a full-feature device; columns in this order
GRID_COLUMNS = ["STOP", "RUNNING", "STOP_COPY", "RESUMING", "RUNNING_P2P", "PRE_COPY", "PRE_COPY_P2P", "ERROR"]
GRID = """
STOP         | STOP        | RUNNING_P2P | STOP_COPY    | RESUMING    | RUNNING_P2P | RUNNING_P2P | RUNNING_P2P  | ERROR
RUNNING      | RUNNING_P2P | RUNNING     | RUNNING_P2P  | RUNNING_P2P | RUNNING_P2P | PRE_COPY    | RUNNING_P2P  | ERROR
PRE_COPY     | RUNNING     | RUNNING     | PRE_COPY_P2P | RUNNING     | RUNNING     | PRE_COPY    | PRE_COPY_P2P | ERROR
PRE_COPY_P2P | RUNNING_P2P | RUNNING_P2P | STOP_COPY    | RUNNING_P2P | RUNNING_P2P | PRE_COPY    | PRE_COPY_P2P | ERROR
STOP_COPY    | STOP        | STOP        | STOP_COPY    | STOP        | STOP        | ERROR       | ERROR        | ERROR
RESUMING     | STOP        | STOP        | STOP         | RESUMING    | STOP        | STOP        | STOP         | ERROR
RUNNING_P2P  | STOP        | RUNNING     | STOP         | STOP        | RUNNING_P2P | RUNNING     | PRE_COPY_P2P | ERROR
ERROR        | ERROR       | ERROR       | ERROR        | ERROR       | ERROR       | ERROR       | ERROR        | ERROR
"""


def _grid() -> dict[tuple[MigState, MigState], MigState]:
    out = {}
    for line in GRID.strip().splitlines():
        cells = [c.strip() for c in line.split("|")]
        cur = NAMES[cells[0]]
        for col, cell in zip(GRID_COLUMNS, cells[1:], strict=True):
            out[cur, NAMES[col]] = NAMES[cell]
    return out


def _arcs(text: str) -> set[tuple[MigState, MigState]]:
    out = set()
    for item in text.split(","):
        a, b = (NAMES[x.strip()] for x in item.split("->"))
        out.add((a, b))
    return out


# vfio_main.c: "The coding in this table requires the driver to implement the following FSM arcs"
ARCS_ALWAYS = _arcs("RESUMING -> STOP, STOP -> RESUMING, STOP -> STOP_COPY, STOP_COPY -> STOP")
ARCS_P2P = _arcs("RUNNING -> RUNNING_P2P, RUNNING_P2P -> RUNNING, RUNNING_P2P -> STOP, STOP -> RUNNING_P2P")
ARCS_PRE_COPY = _arcs("RUNNING -> PRE_COPY, PRE_COPY -> RUNNING, PRE_COPY -> STOP_COPY")
ARCS_P2P_PRE_COPY = _arcs("PRE_COPY -> RUNNING, PRE_COPY -> PRE_COPY_P2P, PRE_COPY_P2P -> PRE_COPY, "
                          "PRE_COPY_P2P -> RUNNING_P2P, PRE_COPY_P2P -> STOP_COPY, RUNNING -> PRE_COPY, "
                          "RUNNING_P2P -> PRE_COPY_P2P")
ARCS_NO_P2P = _arcs("RUNNING -> STOP, STOP -> RUNNING")

# vfio_main.c: "if all optional features are supported, this means the following ones"
COMBINATIONS = """
PRE_COPY -> PRE_COPY_P2P -> STOP_COPY
PRE_COPY -> RUNNING -> RUNNING_P2P
PRE_COPY -> RUNNING -> RUNNING_P2P -> STOP
PRE_COPY -> RUNNING -> RUNNING_P2P -> STOP -> RESUMING
PRE_COPY_P2P -> RUNNING_P2P -> RUNNING
PRE_COPY_P2P -> RUNNING_P2P -> STOP
PRE_COPY_P2P -> RUNNING_P2P -> STOP -> RESUMING
RESUMING -> STOP -> RUNNING_P2P
RESUMING -> STOP -> RUNNING_P2P -> PRE_COPY_P2P
RESUMING -> STOP -> RUNNING_P2P -> RUNNING
RESUMING -> STOP -> RUNNING_P2P -> RUNNING -> PRE_COPY
RESUMING -> STOP -> STOP_COPY
RUNNING -> RUNNING_P2P -> PRE_COPY_P2P
RUNNING -> RUNNING_P2P -> STOP
RUNNING -> RUNNING_P2P -> STOP -> RESUMING
RUNNING -> RUNNING_P2P -> STOP -> STOP_COPY
RUNNING_P2P -> RUNNING -> PRE_COPY
RUNNING_P2P -> STOP -> RESUMING
RUNNING_P2P -> STOP -> STOP_COPY
STOP -> RUNNING_P2P -> PRE_COPY_P2P
STOP -> RUNNING_P2P -> RUNNING
STOP -> RUNNING_P2P -> RUNNING -> PRE_COPY
STOP_COPY -> STOP -> RESUMING
STOP_COPY -> STOP -> RUNNING_P2P
STOP_COPY -> STOP -> RUNNING_P2P -> RUNNING
"""
BLOCKED = _arcs("STOP_COPY -> PRE_COPY, STOP_COPY -> PRE_COPY_P2P")
STATES = [S, R, SC, RES, RP, PC, PCP]


def _full_paths() -> dict[tuple[MigState, MigState], list[MigState] | None]:
    """Every ordered pair of distinct states of a full-feature device: its path, or None when blocked."""
    out: dict[tuple[MigState, MigState], list[MigState] | None] = {}
    for a, b in ARCS_ALWAYS | ARCS_P2P | ARCS_P2P_PRE_COPY:
        out[a, b] = [a, b]
    for line in COMBINATIONS.strip().splitlines():
        path = [NAMES[x.strip()] for x in line.split("->")]
        assert (path[0], path[-1]) not in out
        out[path[0], path[-1]] = path
    for pair in BLOCKED:
        out[pair] = None
    return out


FULL_PATHS = _full_paths()


def required_arcs(flags: int) -> set[tuple[MigState, MigState]]:
    arcs = set(ARCS_ALWAYS)
    arcs |= ARCS_P2P if flags & VFIO_MIGRATION_P2P else ARCS_NO_P2P
    if flags & VFIO_MIGRATION_PRE_COPY:
        arcs |= ARCS_P2P_PRE_COPY if flags & VFIO_MIGRATION_P2P else ARCS_PRE_COPY
    return arcs


def supported(flags: int) -> list[MigState]:
    need = {S: BASE, R: BASE, SC: BASE, RES: BASE, RP: P2P, PC: PRE, PCP: FULL}
    return [s for s in STATES if flags & need[s] == need[s]]


def expected_path(flags: int, cur: MigState, new: MigState) -> list[MigState] | None:
    """The full-feature path with the states this device lacks skipped over (None: blocked)."""
    full = FULL_PATHS[cur, new]
    if full is None:
        return None
    ok = set(supported(flags))
    return [s for s in full if s in ok]


def test_full_feature_lists_cover_every_pair() -> None:
    """The comment's direct arcs, combinations and blocked arcs partition all 42 ordered pairs."""
    assert len(FULL_PATHS) == 42
    assert set(FULL_PATHS) == {(a, b) for a in STATES for b in STATES if a != b}
    assert sum(p is not None and len(p) == 2 for p in FULL_PATHS.values()) == 15
    assert sum(p is not None and len(p) > 2 for p in FULL_PATHS.values()) == 25


@pytest.mark.parametrize("cur,new", sorted(itertools.product(list(MigState), list(MigState))))
def test_next_step_grid_full(cur: MigState, new: MigState) -> None:
    """vfio-uapi.md §6.1 cell by cell; an ERROR cell is EINVAL (ERROR is never supported, so every cell
    of the ERROR row and column fails, as do the blocked STOP_COPY -> PRE_COPY(_P2P) cells)."""
    want = _grid()[cur, new]
    if want == E:
        with pytest.raises(UapiError) as err:
            mig_get_next_state(FULL, cur, new)
        assert err.value.errno == errno.EINVAL
    else:
        assert mig_get_next_state(FULL, cur, new) == want


@pytest.mark.parametrize("name", sorted(FEATURE_SETS))
def test_every_pair_per_feature_set(name: str) -> None:
    """For each feature set, every (cur, new) of supported states: the path equals the full-feature path
    without unsupported states, each step is an arc the driver must implement, and the next step of the
    lookup is that path's second state; blocked pairs are EINVAL.  Every required arc gets used."""
    flags = FEATURE_SETS[name]
    arcs = required_arcs(flags)
    used: set[tuple[MigState, MigState]] = set()
    states = supported(flags)
    for cur, new in itertools.product(states, states):
        if cur == new:
            assert mig_path(flags, cur, new) == [cur]
            continue
        want = expected_path(flags, cur, new)
        if want is None:
            for fn in (mig_get_next_state, mig_path):
                with pytest.raises(UapiError) as err:
                    fn(flags, cur, new)
                assert err.value.errno == errno.EINVAL
            continue
        got = mig_path(flags, cur, new)
        assert got == want, (cur.name, new.name)
        assert mig_get_next_state(flags, cur, new) == want[1]
        steps = set(itertools.pairwise(got))
        assert steps <= arcs, (cur.name, new.name, steps - arcs)
        used |= steps
    assert used == arcs


@pytest.mark.parametrize("name", sorted(FEATURE_SETS))
def test_unsupported_and_invalid_states(name: str) -> None:
    """EINVAL for a target or current state the device lacks, ERROR as a target, and numbers >= 8."""
    flags = FEATURE_SETS[name]
    ok = supported(flags)
    for cur in MigState:
        for new in [*MigState, 8, 9, 0xFFFF_FFFF]:
            if cur in ok and new in ok:
                continue
            with pytest.raises(UapiError) as err:
                mig_get_next_state(flags, cur, new)
            assert err.value.errno == errno.EINVAL
    assert not state_supported(flags, E)
    assert state_supported(flags, RP) == bool(flags & VFIO_MIGRATION_P2P)
    assert state_supported(flags, PCP) == (flags == FULL)


@pytest.mark.parametrize("flags,cur,new,path", [
    # vfio-uapi.md §6.1 "Resulting paths"
    (BASE, R, SC, [R, S, SC]), (BASE, SC, R, [SC, S, R]), (BASE, RES, R, [RES, S, R]),
    (P2P, R, SC, [R, RP, S, SC]), (P2P, SC, R, [SC, S, RP, R]), (P2P, RES, R, [RES, S, RP, R]),
    (PRE, R, SC, [R, S, SC]), (PRE, SC, R, [SC, S, R]), (PRE, RES, R, [RES, S, R]), (PRE, PC, S, [PC, R, S]),
    (FULL, R, SC, [R, RP, S, SC]), (FULL, SC, R, [SC, S, RP, R]), (FULL, RES, R, [RES, S, RP, R]),
    (FULL, PC, S, [PC, R, RP, S]), (FULL, PC, SC, [PC, PCP, SC]), (PRE, PC, SC, [PC, SC]),
])
def test_documented_paths(flags: int, cur: MigState, new: MigState, path: list[MigState]) -> None:
    assert mig_path(flags, cur, new) == path


class _Recorder:
    """A device that records the arcs the driver executes."""

    def __init__(self) -> None:
        self.state = b"\x01" * 8
        self.running = True
        self.log: list[str] = []

    def save_state(self) -> bytes:
        assert not self.running
        self.log.append("save")
        return self.state

    def load_state(self, data: bytes) -> None:
        self.log.append("load")
        self.state = data

    def set_running(self, running: bool) -> None:
        self.log.append("run" if running else "stop")
        self.running = running

    def precopy_start(self) -> bytes:
        self.log.append("pre")
        return b"init"

    def precopy_pending(self) -> int:
        return 0

    def precopy_dirty(self) -> bytes:
        return b""

    def precopy_end(self) -> None:
        self.log.append("end")

    def load_precopy(self, data: bytes) -> None:
        self.log.append("loadpre")


@pytest.mark.parametrize("name", sorted(FEATURE_SETS))
def test_driver_walks_the_path(name: str) -> None:
    """VfioMigration.set_state executes the arcs of the path one by one (the device runs exactly in
    RUNNING, RUNNING_P2P, PRE_COPY, PRE_COPY_P2P) and only the last arc may return a data file."""
    flags = FEATURE_SETS[name]
    states = supported(flags)
    for cur, new in itertools.product(states, states):
        dev = _Recorder()
        mig = VfioMigration(dev, flags)
        for s in mig_path(flags, R, cur)[1:]:  # get to cur step by step
            f = mig.set_state(s)
            if s == RES:
                assert f is not None
                f.write(_stream_of(dev, flags))
        want = expected_path(flags, cur, new) if cur != new else [cur]
        if want is None:
            with pytest.raises(UapiError) as err:
                mig.set_state(new)
            assert err.value.errno == errno.EINVAL and mig.get_state() == cur
            continue
        f = mig.set_state(new)
        assert mig.get_state() == new
        assert dev.running == (new in (R, RP, PC, PCP))
        opens_session = cur != new and (new == RES or (new in (PC, PCP, SC) and cur not in (PC, PCP, SC)))
        assert (f is not None) == opens_session, (cur.name, new.name)


def _stream_of(dev: _Recorder, flags: int) -> bytes:
    """A valid stream made by a fresh source device of the same kind."""
    src = VfioMigration(_Recorder(), flags)
    f = src.set_state(SC)
    assert f is not None
    return f.read(1 << 20)


def test_error_state_is_left_only_by_reset() -> None:
    """A device hook that fails beyond repair puts the FSM in ERROR (EIO); every SET is then EINVAL except
    ERROR itself (the driver loop has nothing to do); VFIO_DEVICE_RESET returns to RUNNING."""
    class Broken(_Recorder):
        def save_state(self) -> bytes:
            raise MigrationFatal("firmware died")

    mig = VfioMigration(Broken(), FULL)
    with pytest.raises(UapiError) as err:
        mig.set_state(SC)
    assert err.value.errno == errno.EIO and mig.get_state() == E
    for new in (S, R, SC, RES, RP, PC, PCP):
        with pytest.raises(UapiError) as err:
            mig.set_state(new)
        assert err.value.errno == errno.EINVAL
    assert mig.set_state(E) is None and mig.get_state() == E
    mig.reset()
    assert mig.get_state() == R and mig.device.running  # type: ignore[attr-defined]


def test_failed_arc_keeps_the_reached_state() -> None:
    """A refused arc (UapiError from the device) leaves the device in the last state reached and running
    again if the failing arc had stopped it."""
    class Refuses(_Recorder):
        def save_state(self) -> bytes:
            raise UapiError(errno.EIO, "busy")

    dev = Refuses()
    mig = VfioMigration(dev, FULL)
    with pytest.raises(UapiError):
        mig.set_state(SC)  # RUNNING -> RUNNING_P2P -> STOP -> STOP_COPY fails on the last arc
    assert mig.get_state() == S and not dev.running
    mig2 = VfioMigration(Refuses(), FULL)
    mig2.set_state(PCP)
    with pytest.raises(UapiError):
        mig2.set_state(SC)  # PRE_COPY_P2P -> STOP_COPY stops the device, then the save fails
    assert mig2.get_state() == PCP and mig2.device.running  # type: ignore[attr-defined]


def test_flags_validation() -> None:
    """STOP_COPY is mandatory; PRE_COPY needs the pre-copy hooks."""
    class Plain:
        def save_state(self) -> bytes:
            return b""

        def load_state(self, data: bytes) -> None:
            pass

    for flags in (0, VFIO_MIGRATION_P2P, BASE | 8):
        with pytest.raises(UapiError):
            VfioMigration(Plain(), flags)
    with pytest.raises(UapiError):
        VfioMigration(Plain(), PRE)
    assert VfioMigration(Plain(), P2P).flags == P2P
