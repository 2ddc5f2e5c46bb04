"""Region access messages: REGION_READ, REGION_WRITE and REGION_WRITE_MULTI (client -> server).

Request checks follow libvfio-user (lib/libvfio-user.c ``is_valid_region_access``): a payload shorter than
16 bytes, a count beyond max_data_xfer_size or a write whose data does not match count is EINVAL.  Region
index and bounds need the device, so the server checks those.  WRITE_MULTI follows the spec and QEMU 11.1
(hw/vfio-user/protocol.h ``VFIOUserWRMulti``: entries of offset u64, region u32, count u32, data[8]).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from vfiolab.vfio_user.wire import Context, exact, pack, require, unpack

ACCESS: Final = struct.Struct("<QII")  # offset, region, count
MULTI_COUNT: Final = struct.Struct("<Q")  # wr_cnt
MULTI_ENTRY: Final = struct.Struct("<QII8s")  # offset, region, count, data[8]
MULTI_DATA: Final = 8
#: QEMU never puts more than this many writes in one message (VFIO_USER_MULTI_MAX); not a receive limit.
QEMU_MULTI_MAX: Final = 200


@dataclass(frozen=True)
class RegionRead:
    """REGION_READ request: ``count`` bytes at ``offset`` of region ``region``."""

    region: int
    offset: int
    count: int

    def to_bytes(self) -> bytes:
        return pack(ACCESS, "REGION_READ", self.offset, self.region, self.count)


@dataclass(frozen=True)
class RegionReadReply:
    """REGION_READ reply: the same 16 bytes with count = len(data), then the data."""

    region: int
    offset: int
    data: bytes

    def to_bytes(self) -> bytes:
        return pack(ACCESS, "REGION_READ reply", self.offset, self.region, len(self.data)) + self.data


@dataclass(frozen=True)
class RegionWrite:
    """REGION_WRITE request (often with No_reply from QEMU: posted writes)."""

    region: int
    offset: int
    data: bytes

    def to_bytes(self) -> bytes:
        return pack(ACCESS, "REGION_WRITE", self.offset, self.region, len(self.data)) + self.data


@dataclass(frozen=True)
class RegionWriteReply:
    """REGION_WRITE reply: offset, region, count written (no data)."""

    region: int
    offset: int
    count: int

    def to_bytes(self) -> bytes:
        return pack(ACCESS, "REGION_WRITE reply", self.offset, self.region, self.count)


@dataclass(frozen=True)
class RegionWriteMulti:
    """REGION_WRITE_MULTI request: up to 8 bytes per write, kept in order."""

    writes: tuple[RegionWrite, ...]

    def to_bytes(self) -> bytes:
        out = bytearray(pack(MULTI_COUNT, "REGION_WRITE_MULTI", len(self.writes)))
        for w in self.writes:
            require(len(w.data) <= MULTI_DATA, f"cannot encode REGION_WRITE_MULTI: {len(w.data)}-byte write > 8")
            out += pack(MULTI_ENTRY, "REGION_WRITE_MULTI entry", w.offset, w.region, len(w.data), w.data)
        return bytes(out)


@dataclass(frozen=True)
class RegionWriteMultiReply:
    """REGION_WRITE_MULTI reply: how many writes completed."""

    wr_cnt: int

    def to_bytes(self) -> bytes:
        return pack(MULTI_COUNT, "REGION_WRITE_MULTI reply", self.wr_cnt)


def _count_ok(count: int, ctx: Context, what: str) -> None:
    require(count <= ctx.limits.max_data_xfer_size,
            f"{what}: count {count} > max_data_xfer_size {ctx.limits.max_data_xfer_size}")


def parse_region_read(payload: bytes, ctx: Context) -> RegionRead:
    offset, region, count = unpack(ACCESS, payload, "REGION_READ")
    _count_ok(count, ctx, "REGION_READ")
    exact(payload, ACCESS.size, "REGION_READ")
    return RegionRead(region, offset, count)


def parse_region_read_reply(payload: bytes, ctx: Context) -> RegionReadReply:
    offset, region, count = unpack(ACCESS, payload, "REGION_READ reply")
    data = payload[ACCESS.size:]
    require(len(data) == count, f"REGION_READ reply: count {count} but {len(data)} data bytes")
    return RegionReadReply(region, offset, bytes(data))


def parse_region_write(payload: bytes, ctx: Context) -> RegionWrite:
    offset, region, count = unpack(ACCESS, payload, "REGION_WRITE")
    _count_ok(count, ctx, "REGION_WRITE")
    data = payload[ACCESS.size:]
    require(len(data) == count, f"REGION_WRITE: count {count} but {len(data)} data bytes")
    return RegionWrite(region, offset, bytes(data))


def parse_region_write_reply(payload: bytes, ctx: Context) -> RegionWriteReply:
    offset, region, count = unpack(ACCESS, payload, "REGION_WRITE reply")
    exact(payload, ACCESS.size, "REGION_WRITE reply")
    return RegionWriteReply(region, offset, count)


def parse_region_write_multi(payload: bytes, ctx: Context) -> RegionWriteMulti:
    """wr_cnt entries of 24 bytes, exactly; each count at most 8 (bytes past count in data[8] are padding)."""
    (wr_cnt,) = unpack(MULTI_COUNT, payload, "REGION_WRITE_MULTI")
    body = len(payload) - MULTI_COUNT.size
    require(body % MULTI_ENTRY.size == 0 and body // MULTI_ENTRY.size == wr_cnt,
            f"REGION_WRITE_MULTI: wr_cnt {wr_cnt} but {body} bytes of entries")
    writes = []
    for i, (offset, region, count, data) in enumerate(MULTI_ENTRY.iter_unpack(payload[MULTI_COUNT.size:])):
        require(count <= MULTI_DATA, f"REGION_WRITE_MULTI: write {i} has count {count} > 8")
        writes.append(RegionWrite(region, offset, data[:count]))
    return RegionWriteMulti(tuple(writes))


def parse_region_write_multi_reply(payload: bytes, ctx: Context) -> RegionWriteMultiReply:
    (wr_cnt,) = unpack(MULTI_COUNT, payload, "REGION_WRITE_MULTI reply")
    exact(payload, MULTI_COUNT.size, "REGION_WRITE_MULTI reply")
    return RegionWriteMultiReply(wr_cnt)
