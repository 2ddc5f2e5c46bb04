"""Pre-copy migration for a device-API device (the mig_ops a variant driver would give it): the device's
saved state (:meth:`~vfiolab.devices.api.Device.save_state`) goes out first whole, then as deltas of the
fixed-size chunks that changed since they were last sent (found by comparing the new state with the
last sent one, the way a device with internal dirty tracking streams incremental state: mlx5,
hisi_acc); the STOP_COPY save of a pre-copy session is the last delta.  The destination rebuilds the
image from the records in stream order and loads it into its device.

Images: ``{4s "VSTP", u8 kind (FULL 0, DELTA 1), 3 pad, u32 chunk, u64 state length, u64 count}`` then
the whole state (FULL) or ``count`` u32 chunk numbers and the chunks, the last one zero padded (DELTA).
Anything else, or a delta without a base of the same length, is refused with EINVAL as
``vfio_mig_get_next_state`` callers expect from a bad stream (RESUMING -> STOP).
"""

from __future__ import annotations

import errno
import struct
from typing import Final

import numpy as np
import numpy.typing as npt

from vfiolab.devices.api import Device
from vfiolab.errors import UapiError, VfiolabError

MAGIC: Final = b"VSTP"
FULL: Final = 0
DELTA: Final = 1
CHUNK: Final = 4096
_HDR: Final = struct.Struct("<4sB3xIQQ")


def _chunks(state: bytes, chunk: int) -> npt.NDArray[np.uint8]:
    """``state`` zero padded to whole chunks, one chunk per row."""
    rows = -(-len(state) // chunk)
    out = np.zeros(rows * chunk, dtype=np.uint8)
    out[:len(state)] = np.frombuffer(state, dtype=np.uint8)
    return out.reshape(rows, chunk)


class StatePrecopy:
    """:class:`~vfiolab.vfio.migration.PrecopyDevice` over a device's whole saved state."""

    def __init__(self, device: Device, chunk: int = CHUNK) -> None:
        if chunk <= 0 or chunk % 8:
            raise VfiolabError(f"state chunk {chunk} must be a positive multiple of 8")
        self.device = device
        self.chunk = chunk
        self.sent: bytes | None = None
        """Source: the state as the destination has it so far (None outside a pre-copy session)."""
        self.image: bytes | None = None
        """Destination: the state rebuilt from the records applied so far."""

    # ------------------------------------------------------------------ images
    def _full(self, state: bytes) -> bytes:
        return _HDR.pack(MAGIC, FULL, self.chunk, len(state), 0) + state

    def _changed(self, state: bytes) -> npt.NDArray[np.int64]:
        assert self.sent is not None
        return np.flatnonzero((_chunks(state, self.chunk) != _chunks(self.sent, self.chunk)).any(axis=1))

    def _delta(self, state: bytes) -> bytes:
        """The chunks of ``state`` that differ from what was sent (a FULL image if the length changed)."""
        if self.sent is None or len(state) != len(self.sent):
            return self._full(state)
        idx = self._changed(state)
        body = _chunks(state, self.chunk)[idx]
        return (_HDR.pack(MAGIC, DELTA, self.chunk, len(state), len(idx)) + idx.astype("<u4").tobytes()
                + body.tobytes())

    def apply(self, image: bytes) -> None:
        """Fold one FULL or DELTA image into :attr:`image` (EINVAL when it does not fit)."""
        if len(image) < _HDR.size:
            raise UapiError(errno.EINVAL, f"device state image of {len(image)} bytes is shorter than its header")
        magic, kind, chunk, length, count = _HDR.unpack_from(image)
        body = memoryview(image)[_HDR.size:]
        if magic != MAGIC or chunk != self.chunk:
            raise UapiError(errno.EINVAL, "not a device state image of this driver")
        if kind == FULL:
            if count or len(body) != length:
                raise UapiError(errno.EINVAL, f"full state image: {len(body)} bytes for a {length}-byte state")
            self.image = bytes(body)
            return
        if kind != DELTA or self.image is None or len(self.image) != length:
            raise UapiError(errno.EINVAL, "state delta without a full state of the same length before it")
        rows = -(-length // chunk)
        if count > rows or len(body) != count * (4 + chunk):
            raise UapiError(errno.EINVAL, f"state delta: {len(body)} bytes for {count} chunks")
        idx = np.frombuffer(body[:4 * count], dtype="<u4").astype(np.int64)
        if count and (int(idx.max()) >= rows or len(np.unique(idx)) != count):
            raise UapiError(errno.EINVAL, "state delta names a chunk twice or beyond the state")
        base = _chunks(self.image, chunk)
        base[idx] = np.frombuffer(body[4 * count:], dtype=np.uint8).reshape(count, chunk)
        self.image = base.reshape(-1)[:length].tobytes()

    # ------------------------------------------------------------------ MigrationDevice
    def save_state(self) -> bytes:
        """The state to send on STOP_COPY: whole, or in a pre-copy session what changed since."""
        return self._delta(self.device.save_state())

    def load_state(self, data: bytes) -> None:
        """Apply the last record and load the rebuilt state (a state the device refuses is EINVAL)."""
        self.apply(data)
        assert self.image is not None
        try:
            self.device.load_state(self.image)
        except VfiolabError as e:
            raise UapiError(errno.EINVAL, f"device state refused: {e}") from None
        self.image = None

    def set_running(self, running: bool) -> None:
        self.device.set_running(running)

    # ------------------------------------------------------------------ PrecopyDevice
    def precopy_start(self) -> bytes:
        state = self.device.save_state()
        self.sent = state
        return self._full(state)

    def precopy_pending(self) -> int:
        assert self.sent is not None
        state = self.device.save_state()
        if len(state) != len(self.sent):
            return _HDR.size + len(state)
        n = len(self._changed(state))
        return _HDR.size + n * (4 + self.chunk) if n else 0

    def precopy_dirty(self) -> bytes:
        state = self.device.save_state()
        out = self._delta(state)
        self.sent = state
        return out

    def precopy_end(self) -> None:
        self.sent = None

    def load_precopy(self, data: bytes) -> None:
        self.apply(data)


__all__ = ["CHUNK", "DELTA", "FULL", "MAGIC", "StatePrecopy"]
