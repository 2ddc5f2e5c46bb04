"""Client memory messages: DMA_MAP / DMA_UNMAP (client -> server) and DMA_READ / DMA_WRITE (server -> client).

Server-side checks and errno follow libvfio-user (lib/libvfio-user.c ``handle_dma_map``, ``is_valid_unmap``);
client-side checks of server DMA requests follow QEMU 11.1 (hw/vfio-user/pci.c ``vfio_user_dma_read/write``).
"""

from __future__ import annotations

import errno
import struct
from dataclasses import dataclass
from typing import Final

from vfiolab.vfio_user.protocol import (
    DMA_MAP_FLAG_FILE_IO,
    DMA_MAP_FLAG_MMAP,
    DMA_MAP_FLAG_READ,
    DMA_MAP_FLAG_WRITE,
    DMA_UNMAP_FLAG_ALL,
    DMA_UNMAP_FLAG_GET_DIRTY_BITMAP,
    ProtocolError,
)
from vfiolab.vfio_user.wire import Context, exact, fail, pack, require, unpack

DMA_MAP: Final = struct.Struct("<IIQQQ")  # argsz, flags, offset, address, size
DMA_UNMAP: Final = struct.Struct("<IIQQ")  # argsz, flags, address, size
BITMAP: Final = struct.Struct("<QQ")  # pgsize, size (struct vfio_user_bitmap, data follows in the reply)
DMA_ACCESS: Final = struct.Struct("<QQ")  # address, count
DMA_WRITE_REPLY_SPEC: Final = struct.Struct("<QI")  # the spec table's 12-byte reply (count u32)
DMA_MAP_FLAGS_KNOWN: Final = DMA_MAP_FLAG_READ | DMA_MAP_FLAG_WRITE | DMA_MAP_FLAG_MMAP | DMA_MAP_FLAG_FILE_IO


@dataclass(frozen=True)
class DmaMap:
    """DMA_MAP request: [address, address+size) readable/writable; ``offset`` is the fd offset when an fd comes."""

    address: int
    size: int
    offset: int = 0
    flags: int = DMA_MAP_FLAG_READ | DMA_MAP_FLAG_WRITE
    argsz: int = DMA_MAP.size

    def to_bytes(self) -> bytes:
        return pack(DMA_MAP, "DMA_MAP", self.argsz, self.flags, self.offset, self.address, self.size)


def parse_dma_map(payload: bytes, ctx: Context) -> DmaMap:
    """libvfio-user order: sizes, then MMAP/FILE_IO need an fd, then unknown flag bits (all EINVAL)."""
    argsz, flags, offset, address, size = unpack(DMA_MAP, payload, "DMA_MAP")
    require(argsz >= DMA_MAP.size, f"DMA_MAP: argsz {argsz} < {DMA_MAP.size}")
    exact(payload, DMA_MAP.size, "DMA_MAP")
    ctx.fds_at_most(1, "DMA_MAP")
    if flags & (DMA_MAP_FLAG_MMAP | DMA_MAP_FLAG_FILE_IO):
        require(ctx.nfds == 1, "DMA_MAP: MMAP/FILE_IO access needs a file descriptor")
    remaining = flags & ~(DMA_MAP_FLAG_READ | DMA_MAP_FLAG_WRITE)
    # MMAP wins over FILE_IO; whatever bit is left over is refused (libvfio-user clears the bits it used).
    remaining &= ~(DMA_MAP_FLAG_MMAP if flags & DMA_MAP_FLAG_MMAP else DMA_MAP_FLAG_FILE_IO)
    require(remaining == 0, f"DMA_MAP: bad flags {flags:#x}")
    return DmaMap(address, size, offset, flags, argsz)


@dataclass(frozen=True)
class DmaBitmap:
    """``struct vfio_user_bitmap`` for DMA_UNMAP with GET_DIRTY_BITMAP: ``data`` only travels in the reply."""

    pgsize: int
    size: int
    data: bytes = b""


@dataclass(frozen=True)
class DmaUnmap:
    """DMA_UNMAP request, and its reply (an echo, plus the dirty bitmap when one was asked for)."""

    address: int
    size: int
    flags: int = 0
    argsz: int = DMA_UNMAP.size
    bitmap: DmaBitmap | None = None

    def to_bytes(self) -> bytes:
        out = pack(DMA_UNMAP, "DMA_UNMAP", self.argsz, self.flags, self.address, self.size)
        if self.bitmap is not None:
            out += pack(BITMAP, "DMA_UNMAP bitmap", self.bitmap.pgsize, self.bitmap.size) + self.bitmap.data
        return out


def parse_dma_unmap(payload: bytes, ctx: Context) -> DmaUnmap:
    """libvfio-user ``is_valid_unmap``: flags 0, GET_DIRTY_BITMAP or ALL (alone); ALL needs address=size=0."""
    argsz, flags, address, size = unpack(DMA_UNMAP, payload, "DMA_UNMAP")
    bitmap = None
    min_argsz = DMA_UNMAP.size
    if flags == DMA_UNMAP_FLAG_GET_DIRTY_BITMAP:
        pgsize, bsize = unpack(BITMAP, payload[DMA_UNMAP.size:], "DMA_UNMAP with GET_DIRTY_BITMAP")
        min_argsz = DMA_UNMAP.size + BITMAP.size + bsize
        data = payload[DMA_UNMAP.size + BITMAP.size:]
        bitmap = DmaBitmap(pgsize, bsize, data)
        if ctx.is_reply:
            exact(data, bsize, "DMA_UNMAP reply bitmap")
        else:
            exact(data, 0, "DMA_UNMAP request (the bitmap comes back in the reply)")
    elif flags == DMA_UNMAP_FLAG_ALL:
        require(address == 0 and size == 0,
                f"DMA_UNMAP: UNMAP_ALL needs address and size 0, got {address:#x}/{size:#x}")
        exact(payload, DMA_UNMAP.size, "DMA_UNMAP")
    elif flags == 0:
        exact(payload, DMA_UNMAP.size, "DMA_UNMAP")
    else:
        fail(f"DMA_UNMAP: invalid flags {flags:#x}")
    if not ctx.is_reply:
        require(min_argsz <= argsz <= ctx.limits.max_data_xfer_size,
                f"DMA_UNMAP: argsz {argsz} outside [{min_argsz}, {ctx.limits.max_data_xfer_size}]")
    return DmaUnmap(address, size, flags, argsz, bitmap)


@dataclass(frozen=True)
class DmaRead:
    """DMA_READ request (server -> client): read ``count`` bytes at client DMA ``address``."""

    address: int
    count: int

    def to_bytes(self) -> bytes:
        return pack(DMA_ACCESS, "DMA_READ", self.address, self.count)


@dataclass(frozen=True)
class DmaReadReply:
    """DMA_READ reply: address, count (= len(data)), data."""

    address: int
    data: bytes

    def to_bytes(self) -> bytes:
        return pack(DMA_ACCESS, "DMA_READ reply", self.address, len(self.data)) + self.data


@dataclass(frozen=True)
class DmaWrite:
    """DMA_WRITE request (server -> client): write ``data`` at client DMA ``address``."""

    address: int
    data: bytes

    def to_bytes(self) -> bytes:
        return pack(DMA_ACCESS, "DMA_WRITE", self.address, len(self.data)) + self.data


@dataclass(frozen=True)
class DmaWriteReply:
    """DMA_WRITE reply.  ``size`` is the payload layout: 16 (address u64 + count u64: QEMU 11.1.3 on the wire,
    and what libvfio-user's ``vfu_dma_transfer`` compares), 12 (the spec table: count u32) or 0 (QEMU source's
    header-only reply).  All three are accepted."""

    address: int = 0
    count: int = 0
    size: int = 16

    def to_bytes(self) -> bytes:
        if self.size == 16:
            return pack(DMA_ACCESS, "DMA_WRITE reply", self.address, self.count)
        if self.size == 12:
            return pack(DMA_WRITE_REPLY_SPEC, "DMA_WRITE reply", self.address, self.count)
        require(self.size == 0 and self.address == 0 and self.count == 0,
                f"cannot encode DMA_WRITE reply: layout {self.size} (0, 12 or 16) with these fields")
        return b""


def _too_big(what: str, count: int, ctx: Context) -> None:
    """QEMU ``vfio_user_dma_read``: a count beyond max_data_xfer_size is E2BIG."""
    if count > ctx.limits.max_data_xfer_size:
        raise ProtocolError(errno.E2BIG, f"{what}: count {count} > max_data_xfer_size "
                                         f"{ctx.limits.max_data_xfer_size}")


def parse_dma_read(payload: bytes, ctx: Context) -> DmaRead:
    address, count = unpack(DMA_ACCESS, payload, "DMA_READ")
    exact(payload, DMA_ACCESS.size, "DMA_READ")
    _too_big("DMA_READ", count, ctx)
    return DmaRead(address, count)


def parse_dma_read_reply(payload: bytes, ctx: Context) -> DmaReadReply:
    address, count = unpack(DMA_ACCESS, payload, "DMA_READ reply")
    data = payload[DMA_ACCESS.size:]
    require(len(data) == count, f"DMA_READ reply: count {count} but {len(data)} data bytes")
    return DmaReadReply(address, data)


def parse_dma_write(payload: bytes, ctx: Context) -> DmaWrite:
    """QEMU ``vfio_user_dma_write``: a count beyond the data carried is E2BIG; fewer is refused here too."""
    address, count = unpack(DMA_ACCESS, payload, "DMA_WRITE")
    data = payload[DMA_ACCESS.size:]
    if count > len(data):
        raise ProtocolError(errno.E2BIG, f"DMA_WRITE: count {count} > {len(data)} data bytes")
    require(count == len(data), f"DMA_WRITE: count {count} but {len(data)} data bytes")
    _too_big("DMA_WRITE", count, ctx)
    return DmaWrite(address, data)


def parse_dma_write_reply(payload: bytes, ctx: Context) -> DmaWriteReply:
    if len(payload) in (DMA_ACCESS.size, DMA_WRITE_REPLY_SPEC.size):
        layout = DMA_ACCESS if len(payload) == DMA_ACCESS.size else DMA_WRITE_REPLY_SPEC
        address, count = layout.unpack(payload)
        return DmaWriteReply(address, count, layout.size)
    require(len(payload) == 0, f"DMA_WRITE reply: payload is {len(payload)} bytes (0, 12 or 16 expected)")
    return DmaWriteReply(size=0)
