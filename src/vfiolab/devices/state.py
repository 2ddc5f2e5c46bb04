"""The byte format of a device's saved state: a magic, a format version, then named sections
(``u16 name length, name, u64 data length, data``), little endian.  Loading checks every length, so a
truncated or foreign blob is a clear :class:`VfiolabError`, never a half-loaded device.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Final

from vfiolab.errors import VfiolabError

MAGIC: Final = b"VFLDEV\x00\x01"
VERSION: Final = 1
_HDR: Final = struct.Struct("<8sI")
_NAME: Final = struct.Struct("<H")
_LEN: Final = struct.Struct("<Q")


def pack_sections(sections: Iterable[tuple[str, bytes]]) -> bytes:
    """Encode (name, data) sections."""
    out = bytearray(_HDR.pack(MAGIC, VERSION))
    for name, data in sections:
        raw = name.encode()
        out += _NAME.pack(len(raw)) + raw + _LEN.pack(len(data)) + bytes(data)
    return bytes(out)


def unpack_sections(blob: bytes | bytearray | memoryview) -> dict[str, bytes]:
    """Decode what :func:`pack_sections` wrote (VfiolabError on anything else)."""
    data = bytes(blob)
    if len(data) < _HDR.size:
        raise VfiolabError(f"device state: {len(data)} bytes is shorter than its {_HDR.size}-byte header")
    magic, version = _HDR.unpack_from(data)
    if magic != MAGIC:
        raise VfiolabError("device state: bad magic (not a vfiolab device state)")
    if version != VERSION:
        raise VfiolabError(f"device state: format version {version}, this build reads {VERSION}")
    pos, out = _HDR.size, {}
    while pos < len(data):
        if pos + _NAME.size > len(data):
            raise VfiolabError("device state: truncated section header")
        (n,) = _NAME.unpack_from(data, pos)
        pos += _NAME.size
        if pos + n + _LEN.size > len(data):
            raise VfiolabError("device state: truncated section name")
        name = data[pos:pos + n].decode(errors="replace")
        pos += n
        (size,) = _LEN.unpack_from(data, pos)
        pos += _LEN.size
        if pos + size > len(data):
            raise VfiolabError(f"device state: section {name!r} claims {size} bytes, {len(data) - pos} left")
        if name in out:
            raise VfiolabError(f"device state: section {name!r} appears twice")
        out[name] = data[pos:pos + size]
        pos += size
    return out


def need(sections: dict[str, bytes], name: str, size: int | None = None) -> bytes:
    """Section ``name`` (of exactly ``size`` bytes when given)."""
    try:
        data = sections[name]
    except KeyError:
        raise VfiolabError(f"device state: section {name!r} missing") from None
    if size is not None and len(data) != size:
        raise VfiolabError(f"device state: section {name!r} has {len(data)} bytes, expected {size}")
    return data
