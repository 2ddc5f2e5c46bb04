"""VFIO migration v2: the device-state FSM of ``drivers/vfio/vfio_main.c`` (``vfio_mig_get_next_state``
and the feature handlers), the migration data files a driver hands out, and the
``VFIO_DEVICE_FEATURE`` dispatch for the migration and DMA-logging features.

:func:`mig_get_next_state` is the kernel's next-step lookup: a fixed 8x8 table of single steps plus the
rule that steps through states the device does not support are skipped (the skip loop stops on the ERROR
sentinel, so STOP_COPY -> PRE_COPY(_P2P) is EINVAL rather than a soft lockup).  :class:`VfioMigration` is
a migration driver in the style of ``samples/vfio-mdev/mtty.c`` and ``drivers/vfio/pci/mlx5/main.c``: it
walks the FSM one arc at a time for any device implementing :class:`MigrationDevice` (``save_state`` /
``load_state``, optionally the precopy hooks of :class:`PrecopyDevice`) and streams the state through
:class:`MigrationFile` objects that read and write like the kernel's anon-inode data fds.

The stream is opaque to userspace (``vfio.h``); ours is a sequence of records ``{u32 magic, u16 type,
u16 reserved, u64 length}`` + payload: INITIAL and DIRTY records while pre-copying, one FINAL record with
``save_state()`` in STOP_COPY.  RESUMING -> STOP replays the records into the destination device.
"""

from __future__ import annotations

import enum
import errno
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, NamedTuple, Protocol, runtime_checkable

from vfiolab.errors import UapiError, VfiolabError
from vfiolab.vfio.uapi import (
    VFIO_DEVICE_FEATURE_GET,
    VFIO_DEVICE_FEATURE_PROBE,
    VFIO_DEVICE_FEATURE_SET,
    VFIO_MIG_GET_PRECOPY_INFO,
    VFIO_MIGRATION_P2P,
    VFIO_MIGRATION_PRE_COPY,
    VFIO_MIGRATION_STOP_COPY,
    vfio_device_feature_mig_data_size,
    vfio_device_feature_mig_state,
    vfio_device_feature_migration,
    vfio_precopy_info,
)

if TYPE_CHECKING:
    from vfiolab.iommufd.task import Task
    from vfiolab.iommufd.ucmd import UserBuffer

# include/uapi/linux/vfio.h (the numbers and structs shared with the device fd are in vfio.uapi)
VFIO_PRECOPY_INFO_REINIT: Final = 1 << 0


class MigState(enum.IntEnum):
    """enum vfio_device_mig_state."""

    ERROR = 0
    STOP = 1
    RUNNING = 2
    STOP_COPY = 3
    RESUMING = 4
    RUNNING_P2P = 5
    PRE_COPY = 6
    PRE_COPY_P2P = 7


VFIO_DEVICE_STATE_NR: Final = 8
_E, _S, _R, _SC, _RES, _RP, _PC, _PCP = (MigState.ERROR, MigState.STOP, MigState.RUNNING, MigState.STOP_COPY,
                                          MigState.RESUMING, MigState.RUNNING_P2P, MigState.PRE_COPY,
                                          MigState.PRE_COPY_P2P)

# vfio_main.c vfio_from_fsm_table: the single next step from each state (row) towards each target
# (column, in enum order ERROR, STOP, RUNNING, STOP_COPY, RESUMING, RUNNING_P2P, PRE_COPY, PRE_COPY_P2P).
_FSM_NEXT: Final[dict[MigState, tuple[MigState, ...]]] = {
    _S: (_E, _S, _RP, _SC, _RES, _RP, _RP, _RP),
    _R: (_E, _RP, _R, _RP, _RP, _RP, _PC, _RP),
    _SC: (_E, _S, _S, _SC, _S, _S, _E, _E),
    _RES: (_E, _S, _S, _S, _RES, _S, _S, _S),
    _RP: (_E, _S, _R, _S, _S, _RP, _R, _PCP),
    _PC: (_E, _R, _R, _PCP, _R, _R, _PC, _PCP),
    _PCP: (_E, _RP, _RP, _SC, _RP, _RP, _PC, _PCP),
    _E: (_E,) * VFIO_DEVICE_STATE_NR,
}
_ALL_FLAGS: Final = 0xFFFF_FFFF
# vfio_main.c state_flags_table: the migration flags a state needs (ERROR: all bits, never satisfied)
_STATE_NEEDS: Final[dict[MigState, int]] = {
    _S: VFIO_MIGRATION_STOP_COPY, _R: VFIO_MIGRATION_STOP_COPY, _SC: VFIO_MIGRATION_STOP_COPY,
    _RES: VFIO_MIGRATION_STOP_COPY, _RP: VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_P2P,
    _PC: VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_PRE_COPY,
    _PCP: VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_P2P | VFIO_MIGRATION_PRE_COPY,
    _E: _ALL_FLAGS,
}
SAVING_STATES: Final = frozenset({_PC, _PCP, _SC})
"""The saving group: states sharing one data transfer session (vfio.h)."""
RUNNING_STATES: Final = frozenset({_R, _RP, _PC, _PCP})
"""States in which the device operates (DMA, interrupts); STOP, STOP_COPY and RESUMING are stopped."""


def state_supported(flags: int, state: int) -> bool:
    """Whether a device with migration ``flags`` supports ``state`` (vfio_main.c state_flags_table)."""
    if not 0 <= state < VFIO_DEVICE_STATE_NR:
        return False
    need = _STATE_NEEDS[MigState(state)]
    return flags & need == need


def mig_get_next_state(flags: int, cur: int, new: int) -> MigState:
    """vfio_mig_get_next_state(): the next single arc from ``cur`` towards ``new`` for a device with
    migration ``flags``; EINVAL for an unsupported current or target state and for blocked arcs."""
    if not state_supported(flags, cur):
        raise UapiError(errno.EINVAL, f"current state {cur} is not supported by migration flags {flags:#x}")
    if not state_supported(flags, new):
        raise UapiError(errno.EINVAL, f"state {new} is not supported by migration flags {flags:#x}")
    nxt = _FSM_NEXT[MigState(cur)][new]
    while nxt != _E and not state_supported(flags, nxt):  # arcs through unsupported states are skipped
        nxt = _FSM_NEXT[nxt][new]
    if nxt == _E:
        raise UapiError(errno.EINVAL, f"no path from {MigState(cur).name} to {MigState(new).name}")
    return nxt


def mig_path(flags: int, cur: int, new: int) -> list[MigState]:
    """Every state a SET from ``cur`` to ``new`` passes through, ``cur`` first (the arcs the driver
    executes one by one); raises like :func:`mig_get_next_state`."""
    path = [MigState(cur)] if 0 <= cur < VFIO_DEVICE_STATE_NR else []
    state = cur
    while state != new:
        state = mig_get_next_state(flags, state, new)
        path.append(state)
    if not path:  # cur == new but out of range
        mig_get_next_state(flags, cur, new)
    return path


# ---------------------------------------------------------------------- the device side
class MigrationDevice(Protocol):
    """What a device needs for STOP_COPY migration: its complete state as bytes and back."""

    def save_state(self) -> bytes:
        """The device's internal state (called stopped, on entering STOP_COPY).  After pre-copy, in the
        same session, it may be only what the pre-copy chunks did not carry."""
        ...

    def load_state(self, data: bytes) -> None:
        """Take a state produced by ``save_state`` (called stopped, on RESUMING -> STOP); raise
        UapiError (EINVAL) for data that is incomplete or inconsistent."""
        ...


@runtime_checkable
class PrecopyDevice(Protocol):
    """The iterative hooks of a PRE_COPY capable device (all called with the device running)."""

    def precopy_start(self) -> bytes:
        """Entering PRE_COPY: the initial precopy data; start tracking internal state changes."""
        ...

    def precopy_pending(self) -> int:
        """Bytes of changed state ``precopy_dirty`` would return now."""
        ...

    def precopy_dirty(self) -> bytes:
        """Take the state changed since the last call (tracking continues)."""
        ...

    def precopy_end(self) -> None:
        """The session ended (after STOP_COPY's final ``save_state``, or leaving the saving group):
        stop tracking; the next ``save_state`` outside a session is a whole state again."""
        ...

    def load_precopy(self, data: bytes) -> None:
        """On the destination: apply one INITIAL or DIRTY chunk, in stream order, before load_state."""
        ...


class MigrationFatal(Exception):
    """Raised by a device hook that failed and could not restore its state: the FSM goes to ERROR."""


# ---------------------------------------------------------------------- the data stream
REC_MAGIC: Final = 0x4749_4D56  # "VMIG"
REC_INITIAL: Final = 1
REC_DIRTY: Final = 2
REC_FINAL: Final = 3
_REC: Final = struct.Struct("<IHHQ")
MAX_RESUME_BYTES: Final = 1 << 30
"""Largest stream a resuming file takes; more is ENOMEM (like mtty_resume_write's size check)."""


def _record(kind: int, payload: bytes) -> bytes:
    return _REC.pack(REC_MAGIC, kind, 0, len(payload)) + payload


def parse_stream(data: bytes | bytearray) -> list[tuple[int, bytes]]:
    """The (type, payload) records of a migration stream; EINVAL when truncated or malformed."""
    out: list[tuple[int, bytes]] = []
    pos = 0
    view = memoryview(data)
    while pos < len(data):
        if len(data) - pos < _REC.size:
            raise UapiError(errno.EINVAL, f"migration stream truncated in a record header at byte {pos}")
        magic, kind, rsv, length = _REC.unpack_from(view, pos)
        if magic != REC_MAGIC or rsv or kind not in (REC_INITIAL, REC_DIRTY, REC_FINAL):
            raise UapiError(errno.EINVAL, f"bad migration record at byte {pos}")
        pos += _REC.size
        if len(data) - pos < length:
            raise UapiError(errno.EINVAL, f"migration record at byte {pos - _REC.size} is truncated")
        out.append((kind, bytes(view[pos:pos + length])))
        pos += length
    return out


class PrecopyInfo(NamedTuple):
    """struct vfio_precopy_info as VFIO_MIG_GET_PRECOPY_INFO returns it."""

    flags: int
    initial_bytes: int
    dirty_bytes: int


class MigrationFile:
    """The anon-inode data fd of one transfer session ("vfio_mig"): a saving file (O_RDONLY,
    read/ioctl) or a resuming file (O_WRONLY, write).  Stream semantics (no pread/pwrite)."""

    def __init__(self, mig: VfioMigration, saving: bool) -> None:
        self.mig = mig
        self.saving = saving
        self.data = bytearray()
        """Saving: the stream produced so far; resuming: the bytes written so far."""
        self.pos = 0
        """f_pos: bytes read (saving) or written (resuming)."""
        self.initial_start = 0
        self.initial_end = 0
        """The stream range holding initial precopy bytes (mlx5 pre_copy_initial_bytes_start/_bytes)."""
        self.final = False
        """The FINAL record is in the stream: end of file is permanent."""
        self.disabled = False
        self.user_open = True
        """Userspace still holds the fd (cleared by close)."""
        self.driver_held = True
        """The driver still references the file as its current session (dropped when the session ends)."""

    def _append(self, kind: int, payload: bytes) -> None:
        self.data += _record(kind, payload)

    def disable(self) -> None:
        """mtty_disable_file(): the session is over; later reads/ioctls give ENODEV."""
        self.disabled = True
        self.data = bytearray()
        self.pos = 0

    # ------------------------------------------------------------------ file operations
    def read(self, count: int) -> bytes:
        """read(2): up to ``count`` bytes; b"" at the end of a finished stream; ENOMSG at the temporary
        end of a pre-copy stream; EBADF on a resuming file; ENODEV once the session ended."""
        self._check_open()
        if not self.saving:
            raise UapiError(errno.EBADF, "the resuming data fd is write-only")  # vfs_read: no FMODE_READ
        if count < 0:
            raise UapiError(errno.EINVAL, f"read count {count}")
        if self.disabled:
            raise UapiError(errno.ENODEV, "the migration session ended")
        if count == 0:
            return b""
        if self.pos == len(self.data) and not self.final:
            self.mig._refill(self)
            if self.pos == len(self.data):
                if self.mig.state in (_PC, _PCP):
                    raise UapiError(errno.ENOMSG, "no pre-copy data now (temporary end of stream)")
                return b""
        out = bytes(self.data[self.pos:self.pos + count])
        self.pos += len(out)
        return out

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """write(2): append to the resuming stream; EBADF on a saving file, ENOMEM past the size limit,
        ENODEV once the session ended."""
        self._check_open()
        if self.saving:
            raise UapiError(errno.EBADF, "the saving data fd is read-only")
        n = len(memoryview(data).cast("B"))
        if self.pos + n > MAX_RESUME_BYTES:
            raise UapiError(errno.ENOMEM, f"resume stream would exceed {MAX_RESUME_BYTES} bytes")
        if self.disabled:
            raise UapiError(errno.ENODEV, "the migration session ended")
        self.data += memoryview(data).cast("B")
        self.pos += n
        return n

    def ioctl(self, cmd: int, arg: bytes | bytearray) -> bytes:
        """ioctl(2) on the data fd: only VFIO_MIG_GET_PRECOPY_INFO on a saving file (ENOTTY otherwise);
        ``arg`` is the struct as userspace passes it and the struct as written back is returned."""
        self._check_open()
        if not self.saving:
            raise UapiError(errno.ENOTTY, "the resuming data fd has no ioctls")
        from vfiolab.iommufd.ucmd import LocalBuffer
        buf = LocalBuffer(arg)
        self.precopy_ioctl(cmd, buf)
        if isinstance(arg, bytearray):
            arg[:] = buf.data
        return bytes(buf.data)

    def precopy_ioctl(self, cmd: int, ubuf: UserBuffer) -> None:
        """VFIO_MIG_GET_PRECOPY_INFO on a user buffer (include/linux/vfio.h vfio_check_precopy_ioctl, then
        the driver: EINVAL outside PRE_COPY/PRE_COPY_P2P, ENODEV for an ended session)."""
        if cmd != VFIO_MIG_GET_PRECOPY_INFO:
            raise UapiError(errno.ENOTTY, f"ioctl {cmd:#x} on a migration data fd")
        st = vfio_precopy_info
        info = st.unpack(ubuf.read(0, st.size))
        if info["argsz"] < st.size:
            raise UapiError(errno.EINVAL, f"argsz {info['argsz']} < {st.size}")
        mig = self.mig
        if mig.precopy_info_v2:  # v1 keeps the caller's flags word as it was (bug compatibility)
            info["flags"] = 0
        if mig.state not in (_PC, _PCP):
            raise UapiError(errno.EINVAL, f"precopy info in state {mig.state.name}")
        if self.disabled:
            raise UapiError(errno.ENODEV, "the migration session ended")
        initial, dirty, reinit = mig._precopy_sizes(self)
        info["initial_bytes"], info["dirty_bytes"] = initial, dirty
        if reinit:
            info["flags"] |= VFIO_PRECOPY_INFO_REINIT
        ubuf.write(0, st.pack(info))

    def precopy_info(self, argsz: int = vfio_precopy_info.size, flags: int = 0) -> PrecopyInfo:
        """VFIO_MIG_GET_PRECOPY_INFO with a struct of ``argsz`` (flags as passed in)."""
        out = vfio_precopy_info.unpack(self.ioctl(VFIO_MIG_GET_PRECOPY_INFO, vfio_precopy_info.pack(
            argsz=argsz, flags=flags)))
        return PrecopyInfo(out["flags"], out["initial_bytes"], out["dirty_bytes"])

    def _check_open(self) -> None:
        if not self.user_open:
            raise UapiError(errno.EBADF, "the migration data fd is closed")

    def release(self) -> None:
        """close(2) of the fd; the last reference disables the session (mtty_release_migf)."""
        if self.user_open:
            self.user_open = False
            if not self.driver_held:
                self.disable()

    close = release

    def driver_put(self) -> None:
        """The driver's fput() when its session ends."""
        if self.driver_held:
            self.driver_held = False
            self.disable()

    def __repr__(self) -> str:
        kind = "saving" if self.saving else "resuming"
        return f"<MigrationFile {kind} pos={self.pos} size={len(self.data)}{' disabled' if self.disabled else ''}>"


class VfioMigration:
    """A device's migration support (``vfio_device->mig_ops`` + ``migration_flags``): the current state,
    the open transfer sessions and the arc actions, for any :class:`MigrationDevice`."""

    def __init__(self, device: MigrationDevice, flags: int = VFIO_MIGRATION_STOP_COPY) -> None:
        if not flags & VFIO_MIGRATION_STOP_COPY or flags & ~(VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_P2P
                                                             | VFIO_MIGRATION_PRE_COPY):
            raise UapiError(errno.EINVAL, f"migration flags {flags:#x}: STOP_COPY is required, "
                            "P2P and PRE_COPY are the only options (vfio_pci_core_register_device)")
        if flags & VFIO_MIGRATION_PRE_COPY and not isinstance(device, PrecopyDevice):
            raise UapiError(errno.EINVAL, f"{type(device).__name__} has no pre-copy hooks for VFIO_MIGRATION_PRE_COPY")
        self.device = device
        self.flags = flags
        self.state = _R
        self.precopy_info_v2 = False
        """VFIO_DEVICE_FEATURE_MIG_PRECOPY_INFOv2 was set (cleared on the device's last close)."""
        self.saving: MigrationFile | None = None
        self.resuming: MigrationFile | None = None

    # ------------------------------------------------------------------ mig_ops
    def get_state(self) -> MigState:
        """migration_get_state()."""
        return self.state

    def set_state(self, new: int) -> MigrationFile | None:
        """migration_set_state(): walk the arcs to ``new``; returns the data file of a new session (the
        caller owns that reference) or None.  On failure the state is the last state reached (the
        original one, an intermediate one, or ERROR when a device hook could not recover)."""
        ret: MigrationFile | None = None
        while self.state != new:
            nxt = mig_get_next_state(self.flags, self.state, new)
            try:
                ret = self._step(nxt)
            except UapiError:
                if self.state in RUNNING_STATES and nxt not in RUNNING_STATES:  # the arc failed: run again
                    self._set_running(True)
                raise
            self.state = nxt
            if ret is not None and nxt != new:  # the kernel WARNs: only the last arc may open a session
                ret.release()
                raise UapiError(errno.EINVAL, f"arc to {nxt.name} opened a session before {MigState(new).name}")
        return ret

    def get_data_size(self) -> int:
        """migration_get_data_size(): estimated STOP_COPY bytes (any state)."""
        size = getattr(self.device, "state_size", None)
        n = int(size()) if callable(size) else len(self.device.save_state())
        return n + _REC.size

    def reset(self) -> None:
        """VFIO_DEVICE_RESET / close_device: back to RUNNING with every session ended (mtty's deferred
        reset)."""
        if self.saving is not None and isinstance(self.device, PrecopyDevice) and self.state in (_PC, _PCP):
            self.device.precopy_end()
        self._end_sessions()
        if self.state not in RUNNING_STATES:
            self._set_running(True)
        self.state = _R

    def last_close(self) -> None:
        """vfio_df_device_last_close(): the driver resets migration and precopy_info_v2 is cleared."""
        self.reset()
        self.precopy_info_v2 = False

    # ------------------------------------------------------------------ arcs
    def _call(self, fn: Callable[[], object]) -> object:
        """Run a device hook: UapiError leaves the state as it is, and so does VfiolabError (the device
        refused, e.g. a state blob it cannot load: EINVAL); MigrationFatal or any other failure of the
        device puts the FSM in ERROR (EIO)."""
        try:
            return fn()
        except UapiError:
            raise
        except VfiolabError as e:
            raise UapiError(errno.EINVAL, f"device refused: {e}") from e
        except Exception as e:
            self._end_sessions()
            self.state = _E
            raise UapiError(errno.EIO, f"device migration hook failed: {e}") from e

    def _set_running(self, running: bool) -> None:
        hook = getattr(self.device, "set_running", None)
        if callable(hook):
            self._call(lambda: hook(running))

    def _end_sessions(self) -> None:
        for f in (self.saving, self.resuming):
            if f is not None:
                f.driver_put()
        self.saving = self.resuming = None

    def _step(self, new: MigState) -> MigrationFile | None:
        """One arc (the driver's step_state)."""
        cur = self.state
        dev = self.device
        if cur in RUNNING_STATES and new not in RUNNING_STATES:
            self._set_running(False)
        if new == _RES:  # STOP -> RESUMING: a new resuming session
            f = MigrationFile(self, saving=False)
            self.resuming = f
            return f
        if cur == _RES:  # RESUMING -> STOP: validate and load what was written
            assert self.resuming is not None
            data = bytes(self.resuming.data)
            records = parse_stream(data)
            finals = [p for k, p in records if k == REC_FINAL]
            if len(finals) != 1 or records[-1][0] != REC_FINAL:  # also an empty stream
                raise UapiError(errno.EINVAL, "migration stream must end with exactly one FINAL record")
            if len(records) > 1 and not (self.flags & VFIO_MIGRATION_PRE_COPY and isinstance(dev, PrecopyDevice)):
                raise UapiError(errno.EINVAL, "pre-copy records for a device without pre-copy")
            for kind, payload in records[:-1]:
                assert isinstance(dev, PrecopyDevice)
                self._call(lambda p=payload: dev.load_precopy(p))  # type: ignore[misc]
            self._call(lambda: dev.load_state(finals[0]))
            self._end_sessions()
            return None
        if new in (_PC, _PCP) and cur not in SAVING_STATES:  # RUNNING(_P2P) -> PRE_COPY(_P2P)
            assert isinstance(dev, PrecopyDevice)
            initial = self._call(dev.precopy_start)
            assert isinstance(initial, bytes)
            f = MigrationFile(self, saving=True)
            f._append(REC_INITIAL, initial)
            f.initial_end = len(f.data)
            self.saving = f
            return f
        if new == _SC:  # STOP -> STOP_COPY (new session) or PRE_COPY_P2P -> STOP_COPY (same session)
            sf = self.saving
            fresh = sf is None
            state = self._call(dev.save_state)
            assert isinstance(state, (bytes, bytearray))
            if sf is not None and isinstance(dev, PrecopyDevice):  # after the final save: tracking off
                self._call(dev.precopy_end)
            if sf is None:
                sf = self.saving = MigrationFile(self, saving=True)
            sf._append(REC_FINAL, bytes(state))
            sf.final = True
            return sf if fresh else None
        if cur in SAVING_STATES and new not in SAVING_STATES:  # the session ends
            if cur != _SC and isinstance(dev, PrecopyDevice):
                self._call(dev.precopy_end)
            self._end_sessions()
        if new in RUNNING_STATES and cur not in RUNNING_STATES:
            self._set_running(True)
        return None

    # ------------------------------------------------------------------ saving-file helpers
    def _refill(self, f: MigrationFile) -> None:
        """At the end of the queued pre-copy data: queue the device's pending changes as a DIRTY record."""
        dev = self.device
        if f is not self.saving or self.state not in (_PC, _PCP) or not isinstance(dev, PrecopyDevice):
            return
        if self._call(dev.precopy_pending):
            chunk = self._call(dev.precopy_dirty)
            assert isinstance(chunk, bytes)
            f._append(REC_DIRTY, chunk)

    def _precopy_sizes(self, f: MigrationFile) -> tuple[int, int, bool]:
        """(initial_bytes, dirty_bytes, REINIT) for the precopy info ioctl (mlx5vf_precopy_ioctl): while
        unread initial bytes remain only they are reported; then the queued rest plus the device's
        pending changes (+ a record header) are dirty bytes."""
        dev = self.device
        assert isinstance(dev, PrecopyDevice)
        reinit_hook = getattr(dev, "precopy_reinit", None)
        fresh = reinit_hook() if callable(reinit_hook) else None
        if fresh is not None:  # the device has new initial data (reconfiguration)
            f._append(REC_INITIAL, bytes(fresh))
            if self.precopy_info_v2:  # everything queued is initial now (mlx5 reinit_state)
                f.initial_start, f.initial_end = f.pos, len(f.data)
                return f.initial_end - f.pos, 0, True
        if f.pos < f.initial_end:
            return f.initial_end - f.pos, 0, False
        pending = int(self._call(dev.precopy_pending))  # type: ignore[call-overload]
        return 0, len(f.data) - f.pos + (pending + _REC.size if pending else 0), False

    def __repr__(self) -> str:
        return f"<VfioMigration {self.state.name} flags={self.flags:#x}>"


# ---------------------------------------------------------------------- VFIO_DEVICE_FEATURE
def check_feature(flags: int, argsz: int, supported_ops: int, minsz: int) -> bool:
    """vfio_check_feature() (include/linux/vfio.h): True when the GET/SET should run, False for a
    successful PROBE; EINVAL for an unsupported op, neither GET nor SET, or argsz < minsz."""
    if flags & (VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_SET) & ~supported_ops:
        raise UapiError(errno.EINVAL, f"feature op {flags & 0x30000:#x} not supported")
    if flags & VFIO_DEVICE_FEATURE_PROBE:
        return False
    if not flags & (VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_SET):
        raise UapiError(errno.EINVAL, "neither GET nor SET")
    if argsz < minsz:
        raise UapiError(errno.EINVAL, f"feature data {argsz} bytes < {minsz}")
    return True


class FeatureData(Protocol):
    """The ``data[]`` part of struct vfio_device_feature (user memory after the 8-byte header)."""

    def read(self, off: int, n: int) -> bytes: ...

    def write(self, off: int, data: bytes | bytearray | memoryview) -> None: ...


def feature_migration(mig: VfioMigration | None, flags: int, data: FeatureData, argsz: int) -> int:
    if mig is None:
        raise UapiError(errno.ENOTTY, "device has no migration support")
    st = vfio_device_feature_migration
    if check_feature(flags, argsz, VFIO_DEVICE_FEATURE_GET, st.size):
        data.write(0, st.pack(flags=mig.flags))
    return 0


def feature_mig_device_state(mig: VfioMigration | None, flags: int, data: FeatureData, argsz: int,
                              task: Task | None) -> int:
    if mig is None:
        raise UapiError(errno.ENOTTY, "device has no migration support")
    st = vfio_device_feature_mig_state
    if not check_feature(flags, argsz, VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_GET, st.size):
        return 0
    req = st.unpack(data.read(0, st.offsetofend("data_fd")))
    if flags & VFIO_DEVICE_FEATURE_GET:
        data.write(0, st.pack(device_state=mig.get_state(), data_fd=-1))
        return 0
    try:
        f = mig.set_state(req["device_state"])
    except UapiError:
        data.write(0, st.pack(device_state=req["device_state"], data_fd=-1))  # out_copy, then the error
        raise
    if f is None:
        data.write(0, st.pack(device_state=req["device_state"], data_fd=-1))
        return 0
    if task is None:  # no process to hand an fd to: the file is dropped (get_unused_fd_flags failed)
        f.release()
        raise UapiError(errno.EMFILE, "no file-descriptor table for the data fd")
    fd = task.fd_install(f)
    try:
        data.write(0, st.pack(device_state=req["device_state"], data_fd=fd))
    except UapiError:
        task.close_fd(fd)  # put_unused_fd + fput
        f.release()
        raise
    return 0


def feature_data_size(mig: VfioMigration | None, flags: int, data: FeatureData, argsz: int) -> int:
    if mig is None:
        raise UapiError(errno.ENOTTY, "device has no migration support")
    st = vfio_device_feature_mig_data_size
    if check_feature(flags, argsz, VFIO_DEVICE_FEATURE_GET, st.size):
        data.write(0, st.pack(stop_copy_length=mig.get_data_size()))
    return 0


def feature_precopy_info_v2(mig: VfioMigration | None, flags: int, argsz: int) -> int:
    if mig is None or not mig.flags & VFIO_MIGRATION_PRE_COPY:
        raise UapiError(errno.EINVAL, "device has no VFIO_MIGRATION_PRE_COPY")
    if check_feature(flags, argsz, VFIO_DEVICE_FEATURE_SET, 0):
        mig.precopy_info_v2 = True
    return 0


__all__ = ["MAX_RESUME_BYTES", "RUNNING_STATES", "SAVING_STATES", "VFIO_DEVICE_STATE_NR", "VFIO_PRECOPY_INFO_REINIT",
           "FeatureData", "MigState", "MigrationDevice", "MigrationFatal", "MigrationFile", "PrecopyDevice",
           "PrecopyInfo", "VfioMigration", "check_feature", "feature_data_size", "feature_mig_device_state",
           "feature_migration", "feature_precopy_info_v2", "mig_get_next_state", "mig_path", "parse_stream",
           "state_supported"]
