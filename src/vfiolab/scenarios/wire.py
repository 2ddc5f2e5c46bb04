"""The migration channel between two vfiolab instances (source and destination processes): framed
messages over a stream socket, ``{4s magic "VFLM", u16 type, u16 reserved, u64 length}`` + payload, little
endian.  Guest RAM travels as ``{u64 count}`` + ``count`` u64 page numbers + the pages; device migration
data as ``{u16 device, u16 reserved, u32 pad}`` + the bytes read from the device's data fd; control
messages carry JSON.  Whatever arrives malformed (bad magic, unknown type, truncated, page numbers out of
range) is a :class:`VfiolabError`, and so is the peer closing the channel mid-way.
"""

from __future__ import annotations

import enum
import json
import socket
import struct
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from vfiolab.errors import VfiolabError

PAGE: Final = 4096
MAGIC: Final = b"VFLM"
_HDR: Final = struct.Struct("<4sHHQ")
_COUNT: Final = struct.Struct("<Q")
_DEV: Final = struct.Struct("<HHI")
MAX_PAYLOAD: Final = 1 << 31
"""Largest message accepted (a RAM message carries at most a few MiB; anything bigger is corrupt)."""


class Msg(enum.IntEnum):
    """Message types, in the order a migration uses them."""

    HELLO = 1      # source -> destination: JSON configuration of the machine to build
    READY = 2      # destination -> source: JSON, resuming sessions open
    RAM = 3        # source -> destination: guest pages
    DEVICE = 4     # source -> destination: device migration data (pre-copy or stop-copy stream bytes)
    COMPLETE = 5   # source -> destination: JSON, everything sent; load the devices
    VERIFY = 6     # destination -> source: JSON record + page fingerprints (u64 per page)
    CONTINUE = 7   # source -> destination: run the devices and use them
    RESULT = 8     # destination -> source: JSON record of the post-migration checks
    BYE = 9        # source -> destination: exit
    ERROR = 10     # either way: JSON {"error": message}; the sender stops


class Channel:
    """One end of the migration channel."""

    def __init__(self, sock: socket.socket, timeout: float = 120.0) -> None:
        self.sock = sock
        sock.settimeout(timeout)
        self.bytes_sent = 0
        self.bytes_received = 0

    # ------------------------------------------------------------------ sending
    def send(self, kind: Msg, *parts: bytes | bytearray | memoryview) -> None:
        """One message whose payload is ``parts`` concatenated (sent without joining them)."""
        views = [memoryview(p).cast("B") for p in parts]
        length = sum(len(v) for v in views)
        try:
            self.sock.sendall(_HDR.pack(MAGIC, kind, 0, length))
            for v in views:
                self.sock.sendall(v)
        except OSError as e:
            raise VfiolabError(f"migration channel: sending {kind.name} failed: {e}") from None
        self.bytes_sent += _HDR.size + length

    def send_json(self, kind: Msg, obj: object, *tail: bytes | bytearray | memoryview) -> None:
        """``{u32 JSON length}`` + JSON + ``tail``."""
        raw = json.dumps(obj, sort_keys=True).encode()
        self.send(kind, struct.pack("<I", len(raw)), raw, *tail)

    def send_pages(self, index: npt.NDArray[np.int64], pages: npt.NDArray[np.uint8]) -> None:
        """Guest pages ``index`` (page numbers) with their contents ``pages`` (n x 4096)."""
        if pages.shape != (len(index), PAGE):
            raise VfiolabError(f"send_pages: {pages.shape} contents for {len(index)} pages")
        self.send(Msg.RAM, _COUNT.pack(len(index)), index.astype("<u8").tobytes(),
                  np.ascontiguousarray(pages).data)

    def send_device(self, device: int, data: bytes) -> None:
        """Bytes of device ``device``'s migration stream."""
        self.send(Msg.DEVICE, _DEV.pack(device, 0, 0), data)

    def send_error(self, message: str) -> None:
        """Tell the peer why this end stops (best effort: the channel may already be gone)."""
        try:
            self.send_json(Msg.ERROR, {"error": message})
        except VfiolabError:
            pass

    # ------------------------------------------------------------------ receiving
    def _exact(self, n: int) -> bytearray:
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            try:
                k = self.sock.recv_into(view[got:])
            except OSError as e:
                raise VfiolabError(f"migration channel: receive failed: {e}") from None
            if k == 0:
                raise VfiolabError(f"migration channel closed by the peer ({got} of {n} bytes received)")
            got += k
        self.bytes_received += n
        return buf

    def recv(self) -> tuple[Msg, bytearray]:
        """The next message."""
        magic, kind, reserved, length = _HDR.unpack(self._exact(_HDR.size))
        if magic != MAGIC or reserved:
            raise VfiolabError("migration channel: bad message header (not a vfiolab migration stream)")
        try:
            msg = Msg(kind)
        except ValueError:
            raise VfiolabError(f"migration channel: unknown message type {kind}") from None
        if length > MAX_PAYLOAD:
            raise VfiolabError(f"migration channel: {msg.name} message of {length} bytes is too large")
        return msg, self._exact(length)

    def expect(self, kind: Msg) -> bytearray:
        """The next message, which must be ``kind`` (an ERROR from the peer is raised as its message)."""
        got, payload = self.recv()
        if got == Msg.ERROR:
            raise VfiolabError(f"peer failed: {parse_json(payload)[0].get('error', '?')}")
        if got != kind:
            raise VfiolabError(f"migration channel: expected {kind.name}, got {got.name}")
        return payload

    def close(self) -> None:
        self.sock.close()


def parse_json(payload: bytes | bytearray) -> tuple[dict[str, Any], bytes]:
    """A :meth:`Channel.send_json` payload: the object (a JSON object) and the bytes after it."""
    if len(payload) < 4:
        raise VfiolabError("migration channel: JSON message shorter than its length field")
    (n,) = struct.unpack_from("<I", payload)
    if 4 + n > len(payload):
        raise VfiolabError(f"migration channel: JSON of {n} bytes in a {len(payload)}-byte message")
    try:
        obj = json.loads(bytes(payload[4:4 + n]))
    except ValueError as e:
        raise VfiolabError(f"migration channel: bad JSON: {e}") from None
    if not isinstance(obj, dict):
        raise VfiolabError("migration channel: JSON message is not an object")
    return obj, bytes(payload[4 + n:])


def parse_pages(payload: bytes | bytearray, npages: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint8]]:
    """A RAM payload: (page numbers, n x 4096 contents); page numbers must be below ``npages``."""
    if len(payload) < _COUNT.size:
        raise VfiolabError("migration channel: RAM message without a page count")
    (count,) = _COUNT.unpack_from(payload)
    if len(payload) != _COUNT.size + count * (8 + PAGE):
        raise VfiolabError(f"migration channel: RAM message of {len(payload)} bytes for {count} pages")
    view = memoryview(payload)
    end = _COUNT.size + 8 * count
    index = np.frombuffer(view[_COUNT.size:end], dtype="<u8").astype(np.int64)
    if count and int(index.max()) >= npages:
        raise VfiolabError(f"migration channel: page {int(index.max())} beyond guest RAM ({npages} pages)")
    pages = np.frombuffer(view[end:], dtype=np.uint8).reshape(count, PAGE)
    return index, pages


def parse_device(payload: bytes | bytearray, ndevices: int) -> tuple[int, bytes]:
    """A DEVICE payload: (device number below ``ndevices``, stream bytes)."""
    if len(payload) < _DEV.size:
        raise VfiolabError("migration channel: DEVICE message without its header")
    device, reserved, pad = _DEV.unpack_from(payload)
    if reserved or pad or device >= ndevices:
        raise VfiolabError(f"migration channel: DEVICE message for device {device} of {ndevices}")
    return device, bytes(payload[_DEV.size:])


__all__ = ["MAGIC", "MAX_PAYLOAD", "PAGE", "Channel", "Msg", "parse_device", "parse_json", "parse_pages"]
