"""Migratable device memory with change tracking: the :class:`~vfiolab.vfio.migration.PrecopyDevice`
hooks (and ``save_state``/``load_state``) for a device that keeps its internal state in one byte array.

Pre-copy sends the whole array first and then only the chunks written since the last harvest, the way a
device with internal dirty tracking (mlx5, hisi_acc) streams incremental state; the final STOP_COPY save of
a pre-copy session holds just the chunks still dirty.  Images are ``{u8 kind, 3 pad, u32 chunk, u64 size,
u64 count}`` followed by the whole array (FULL) or by ``count`` u64 chunk indexes and then the chunks
(DELTA); anything else is refused with EINVAL on load.
"""

from __future__ import annotations

import errno
import struct
from typing import Final

import numpy as np
import numpy.typing as npt

from vfiolab.errors import UapiError, VfiolabError

FULL: Final = 0
DELTA: Final = 1
_HDR: Final = struct.Struct("<B3xIQQ")


class TrackedState:
    """``size`` bytes of device state in ``chunk``-byte units; writes mark chunks dirty while a pre-copy
    session tracks them."""

    def __init__(self, size: int, chunk: int = 4096) -> None:
        if chunk <= 0 or size <= 0 or size % chunk:
            raise VfiolabError(f"state of {size} bytes is not a positive multiple of the {chunk}-byte chunk")
        self.size = size
        self.chunk = chunk
        self.buf = np.zeros(size, dtype=np.uint8)
        self.dirty = np.zeros(size // chunk, dtype=bool)
        self.tracking = False
        """A pre-copy session is on: writes are remembered for the next harvest."""
        self.delta_session = False
        """The session started with a full image: the final save may be a delta."""

    # ------------------------------------------------------------------ device access
    def read(self, off: int, n: int) -> bytes:
        self._check(off, n)
        return self.buf[off:off + n].tobytes()

    def write(self, off: int, data: bytes | bytearray | memoryview | npt.NDArray[np.uint8]) -> None:
        """Store ``data`` at ``off`` (marking the chunks it touches when tracking)."""
        src = np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8) if not isinstance(data, np.ndarray) else data
        n = src.size
        self._check(off, n)
        self.buf[off:off + n] = src
        if self.tracking and n:
            self.dirty[off // self.chunk:(off + n - 1) // self.chunk + 1] = True

    def _check(self, off: int, n: int) -> None:
        if off < 0 or n < 0 or off + n > self.size:
            raise VfiolabError(f"state access [{off:#x}, +{n:#x}) outside {self.size:#x} bytes")

    # ------------------------------------------------------------------ images
    def _full(self) -> bytes:
        return _HDR.pack(FULL, self.chunk, self.size, 0) + self.buf.tobytes()

    def _delta(self) -> bytes:
        idx = np.flatnonzero(self.dirty).astype(np.uint64)
        chunks = self.buf.reshape(-1, self.chunk)[idx.astype(np.int64)]
        self.dirty[:] = False
        return _HDR.pack(DELTA, self.chunk, self.size, len(idx)) + idx.astype("<u8").tobytes() + chunks.tobytes()

    def apply(self, image: bytes) -> None:
        """Apply a FULL or DELTA image; EINVAL when it does not fit this state."""
        if len(image) < _HDR.size:
            raise UapiError(errno.EINVAL, "state image shorter than its header")
        kind, chunk, size, count = _HDR.unpack_from(image)
        body = memoryview(image)[_HDR.size:]
        if chunk != self.chunk or size != self.size:
            raise UapiError(errno.EINVAL, f"state image for {size} bytes in {chunk}-byte chunks, "
                            f"device has {self.size} in {self.chunk}")
        if kind == FULL and count == 0 and len(body) == size:
            self.buf[:] = np.frombuffer(body, dtype=np.uint8)
            return
        nchunks = self.size // self.chunk
        if kind != DELTA or count > nchunks or len(body) != count * (8 + chunk):
            raise UapiError(errno.EINVAL, "malformed state image")
        idx = np.frombuffer(body[:8 * count], dtype="<u8").astype(np.int64)
        if count and (idx.max() >= nchunks or len(np.unique(idx)) != count):
            raise UapiError(errno.EINVAL, "state image names a chunk twice or beyond the state")
        self.buf.reshape(-1, chunk)[idx] = np.frombuffer(body[8 * count:], dtype=np.uint8).reshape(count, chunk)

    # ------------------------------------------------------------------ MigrationDevice / PrecopyDevice
    def save_state(self) -> bytes:
        """The whole state, or in a pre-copy session the chunks not yet harvested."""
        return self._delta() if self.delta_session else self._full()

    def load_state(self, data: bytes) -> None:
        self.apply(data)

    def precopy_start(self) -> bytes:
        self.tracking = True
        self.delta_session = True
        self.dirty[:] = False
        return self._full()

    def precopy_pending(self) -> int:
        n = int(np.count_nonzero(self.dirty))
        return _HDR.size + n * (8 + self.chunk) if n else 0

    def precopy_dirty(self) -> bytes:
        return self._delta()

    def precopy_end(self) -> None:
        self.tracking = False
        self.delta_session = False
        self.dirty[:] = False

    def load_precopy(self, data: bytes) -> None:
        self.apply(data)


__all__ = ["DELTA", "FULL", "TrackedState"]
