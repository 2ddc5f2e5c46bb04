"""Random walks through the migration FSM with a pre-copy device changing its state as it runs.

For any feature set and any sequence of SETs (including unsupported and out-of-range states), reads of
the data fd, pre-copy info queries and device writes (only while running), the model keeps the kernel's
contract (include/uapi/linux/vfio.h, drivers/vfio/vfio_main.c):

* a SET reaches its target or fails with EINVAL leaving the state unchanged (unsupported target, ERROR,
  STOP_COPY -> PRE_COPY(_P2P)); a data fd comes back exactly when the path's last arc opens a session;
* the device runs exactly in RUNNING, RUNNING_P2P, PRE_COPY, PRE_COPY_P2P;
* VFIO_MIG_GET_PRECOPY_INFO works only in the PRE_COPY states (EINVAL elsewhere); there, read() fails
  with ENOMSG exactly when initial_bytes and dirty_bytes are both 0, and initial_bytes never grows;
* the stream of a session that reaches STOP_COPY restores the device's state at that point.
"""

from __future__ import annotations

import errno
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from vfiolab.errors import UapiError
from vfiolab.vfio.migration import (
    RUNNING_STATES,
    SAVING_STATES,
    MigrationFile,
    MigState,
    VfioMigration,
    mig_path,
)
from vfiolab.vfio.precopy import TrackedState
from vfiolab.vfio.uapi import VFIO_MIGRATION_P2P, VFIO_MIGRATION_PRE_COPY, VFIO_MIGRATION_STOP_COPY

CHUNK = 256
SIZE = 32 * CHUNK
FLAGS = [VFIO_MIGRATION_STOP_COPY | p | c for p in (0, VFIO_MIGRATION_P2P) for c in (0, VFIO_MIGRATION_PRE_COPY)]


class Dev(TrackedState):
    def __init__(self) -> None:
        super().__init__(SIZE, CHUNK)
        self.running = True

    def set_running(self, running: bool) -> None:
        self.running = running


def opens_session(path: list[MigState]) -> bool:
    a, b = path[-2], path[-1]
    return b == MigState.RESUMING or (b in SAVING_STATES and a not in SAVING_STATES)


STEPS = st.lists(st.one_of(
    st.tuples(st.just("set"), st.integers(0, 9)),
    st.tuples(st.just("read"), st.integers(1, 3 * SIZE)),
    st.tuples(st.just("info")),
    st.tuples(st.just("poke"), st.integers(0, SIZE - 1), st.binary(min_size=1, max_size=3 * CHUNK)),
), max_size=40)


@settings(max_examples=150, deadline=None)
@given(flags=st.sampled_from(FLAGS), steps=STEPS)
def test_fsm_walk(flags: int, steps: list[tuple[Any, ...]]) -> None:
    dev = Dev()
    mig = VfioMigration(dev, flags)
    session: MigrationFile | None = None
    stream = bytearray()
    last_initial: int | None = None
    for step in steps:
        state = mig.get_state()
        if step[0] == "set":
            new = step[1]
            try:
                path = mig_path(flags, state, new)
            except UapiError:
                path = None
            if path is None or new == MigState.RESUMING:  # a resuming session needs a stream: not here
                try:
                    mig.set_state(new)
                except UapiError as e:
                    assert path is not None or e.errno == errno.EINVAL
                if path is None:
                    assert mig.get_state() == state
                    continue
                mig.reset()  # abort the resuming session, as the uAPI says
                session, stream = None, bytearray()
                continue
            f = mig.set_state(new)
            assert mig.get_state() == new
            assert (f is not None) == (len(path) > 1 and opens_session(path))
            if f is not None:
                session, stream, last_initial = f, bytearray(), None
            elif new not in SAVING_STATES:
                session, stream = None, bytearray()
            assert dev.running == (new in RUNNING_STATES)
        elif step[0] == "poke":
            if dev.running:
                off, data = step[1], step[2][:SIZE - step[1]]
                dev.write(off, data)
        elif session is not None:
            in_precopy = state in (MigState.PRE_COPY, MigState.PRE_COPY_P2P)
            if step[0] == "info":
                if not in_precopy:
                    try:
                        session.precopy_info()
                    except UapiError as e:
                        assert e.errno == errno.EINVAL
                    else:
                        raise AssertionError("precopy info outside PRE_COPY")
                    continue
                info = session.precopy_info()
                if last_initial is not None:
                    assert info.initial_bytes <= last_initial
                last_initial = info.initial_bytes
                empty = info.initial_bytes == 0 and info.dirty_bytes == 0
                try:
                    chunk = session.read(1)
                except UapiError as e:
                    assert e.errno == errno.ENOMSG and empty
                else:
                    assert not empty and len(chunk) == 1
                    stream += chunk
            else:
                try:
                    stream += session.read(step[1])
                except UapiError as e:
                    assert e.errno == errno.ENOMSG and in_precopy
    # finish in STOP_COPY and restore the state at that point elsewhere
    f = mig.set_state(MigState.STOP_COPY)
    if f is not None:
        session, stream = f, bytearray()
    assert session is not None
    while chunk := session.read(4096):
        stream += chunk
    dst = Dev()
    dmig = VfioMigration(dst, flags)
    rf = dmig.set_state(MigState.RESUMING)
    assert rf is not None
    rf.write(bytes(stream))
    dmig.set_state(MigState.RUNNING)
    assert np.array_equal(dst.buf, dev.buf)
