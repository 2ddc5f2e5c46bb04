"""Device discovery messages: DEVICE_GET_INFO, DEVICE_GET_REGION_INFO (with VFIO capability chains) and
DEVICE_GET_REGION_IO_FDS.

Structures are Linux's ``struct vfio_device_info`` (without cap_offset/pad, as the spec has it),
``struct vfio_region_info`` and ``struct vfio_info_cap_header`` chains (include/uapi/linux/vfio.h).  Request
checks follow libvfio-user (lib/libvfio-user.c ``handle_device_get_info``, ``handle_device_get_region_info``,
``handle_device_get_region_io_fds``); reply checks follow QEMU 11.1 (hw/vfio-user/device.c).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from vfiolab.vfio_user.protocol import (
    IO_FD_TYPE_IOEVENTFD,
    IO_FD_TYPE_IOEVENTFD_SHADOW,
    IO_FD_TYPE_IOREGIONFD,
    REGION_INFO_CAP_MSIX_MAPPABLE,
    REGION_INFO_CAP_SPARSE_MMAP,
    REGION_INFO_CAP_TYPE,
    REGION_INFO_FLAG_CAPS,
)
from vfiolab.vfio_user.wire import Context, exact, pack, reply_buffer, require, unpack

DEVICE_INFO: Final = struct.Struct("<IIII")  # argsz, flags, num_regions, num_irqs
REGION_INFO: Final = struct.Struct("<IIIIQQ")  # argsz, flags, index, cap_offset, size, offset
CAP_HEADER: Final = struct.Struct("<HHI")  # id, version, next (offset from the start of the region info)
SPARSE_HEADER: Final = struct.Struct("<II")  # nr_areas, reserved
SPARSE_AREA: Final = struct.Struct("<QQ")  # offset, size
CAP_TYPE: Final = struct.Struct("<II")  # type, subtype
IO_FDS: Final = struct.Struct("<IIII")  # argsz, flags, index, count
SUB_REGION_SPEC: Final = struct.Struct("<QQIIIIQ")  # offset, size, fd_index, type, flags, padding, datamatch
SUB_REGION_LIBVFIO_USER: Final = struct.Struct("<QQIIIIQQ")  # ... shadow_mem_fd_index, shadow_offset, datamatch
#: QEMU refuses a GET_INFO reply above these (hw/vfio-user/device.c, "defend against a malicious server").
QEMU_MAX_REGIONS: Final = 100
QEMU_MAX_IRQS: Final = 50


@dataclass(frozen=True)
class DeviceInfo:
    """DEVICE_GET_INFO request and reply (16 bytes; the request's fields besides argsz are outputs)."""

    argsz: int = DEVICE_INFO.size
    flags: int = 0
    num_regions: int = 0
    num_irqs: int = 0

    def to_bytes(self) -> bytes:
        return pack(DEVICE_INFO, "DEVICE_GET_INFO", self.argsz, self.flags, self.num_regions, self.num_irqs)


def parse_device_info(payload: bytes, ctx: Context) -> DeviceInfo:
    """Request: argsz >= 16 (libvfio-user).  Reply: QEMU's bounds on num_regions / num_irqs."""
    info = DeviceInfo(*unpack(DEVICE_INFO, payload, "DEVICE_GET_INFO"))
    if ctx.is_reply:
        exact(payload, DEVICE_INFO.size, "DEVICE_GET_INFO reply")
    else:
        reply_buffer(payload, DEVICE_INFO.size, info.argsz, "DEVICE_GET_INFO")
    require(info.argsz >= DEVICE_INFO.size, f"DEVICE_GET_INFO: argsz {info.argsz} < {DEVICE_INFO.size}")
    if ctx.is_reply:
        require(info.num_regions <= QEMU_MAX_REGIONS and info.num_irqs <= QEMU_MAX_IRQS,
                f"DEVICE_GET_INFO reply: {info.num_regions} regions / {info.num_irqs} irqs beyond QEMU's "
                f"{QEMU_MAX_REGIONS}/{QEMU_MAX_IRQS}")
    return info


# --- region info and its capability chain -------------------------------------------------------------------
@dataclass(frozen=True)
class SparseMmapArea:
    offset: int
    size: int


@dataclass(frozen=True)
class SparseMmapCap:
    """VFIO_REGION_INFO_CAP_SPARSE_MMAP (id 1): the mmap-able parts of the region."""

    areas: tuple[SparseMmapArea, ...]
    version: int = 1
    reserved: int = 0

    def body(self) -> bytes:
        out = pack(SPARSE_HEADER, "sparse mmap cap", len(self.areas), self.reserved)
        return out + b"".join(pack(SPARSE_AREA, "sparse mmap area", a.offset, a.size) for a in self.areas)


@dataclass(frozen=True)
class TypeCap:
    """VFIO_REGION_INFO_CAP_TYPE (id 2): device-specific region type/subtype."""

    type: int
    subtype: int
    version: int = 1

    def body(self) -> bytes:
        return pack(CAP_TYPE, "type cap", self.type, self.subtype)


@dataclass(frozen=True)
class MsixMappableCap:
    """VFIO_REGION_INFO_CAP_MSIX_MAPPABLE (id 3): header only."""

    version: int = 1

    def body(self) -> bytes:
        return b""


@dataclass(frozen=True)
class RawCap:
    """Any other capability: its bytes up to the next capability (or the end of the reply)."""

    id: int
    version: int
    data: bytes

    def body(self) -> bytes:
        return self.data


RegionCap = SparseMmapCap | TypeCap | MsixMappableCap | RawCap
_CAP_IDS: Final = {SparseMmapCap: REGION_INFO_CAP_SPARSE_MMAP, TypeCap: REGION_INFO_CAP_TYPE,
                   MsixMappableCap: REGION_INFO_CAP_MSIX_MAPPABLE}


def _cap_id(cap: RegionCap) -> int:
    return cap.id if isinstance(cap, RawCap) else _CAP_IDS[type(cap)]


def caps_size(caps: tuple[RegionCap, ...]) -> int:
    """Bytes the chain takes when laid out back to back after the 32-byte region info."""
    return sum(CAP_HEADER.size + len(c.body()) for c in caps)


@dataclass(frozen=True)
class RegionInfo:
    """DEVICE_GET_REGION_INFO request (index and argsz matter) and reply (``struct vfio_region_info`` + caps).

    A reply whose ``argsz`` exceeds the bytes carried is the "buffer too small, retry" answer: its chain is
    not decoded (``caps`` empty).  Encoding lays ``caps`` out from offset 32, which must be ``cap_offset``.
    """

    index: int
    argsz: int = REGION_INFO.size
    flags: int = 0
    cap_offset: int = 0
    size: int = 0
    offset: int = 0
    caps: tuple[RegionCap, ...] = ()

    @classmethod
    def for_reply(cls, index: int, flags: int, size: int, offset: int, caps: tuple[RegionCap, ...],
                  request_argsz: int) -> RegionInfo:
        """The reply libvfio-user builds: argsz = full size; caps (with CAPS, cap_offset 32) only if they fit."""
        full = REGION_INFO.size + caps_size(caps)
        if caps and request_argsz >= full:
            return cls(index, full, flags | REGION_INFO_FLAG_CAPS, REGION_INFO.size, size, offset, caps)
        return cls(index, full, flags & ~REGION_INFO_FLAG_CAPS, 0, size, offset)

    def to_bytes(self) -> bytes:
        head = pack(REGION_INFO, "DEVICE_GET_REGION_INFO", self.argsz, self.flags, self.index, self.cap_offset,
                    self.size, self.offset)
        if not self.caps:
            return head
        require(self.cap_offset == REGION_INFO.size,
                f"cannot encode region info: caps are laid out at 32, cap_offset is {self.cap_offset}")
        out = bytearray(head)
        for i, cap in enumerate(self.caps):
            body = cap.body()
            nxt = len(out) + CAP_HEADER.size + len(body) if i + 1 < len(self.caps) else 0
            out += pack(CAP_HEADER, "region info cap header", _cap_id(cap), cap.version, nxt) + body
        return bytes(out)


def parse_region_info(payload: bytes, ctx: Context) -> RegionInfo:
    """Request: argsz >= 32 (libvfio-user).  Reply: QEMU's cap_offset window, then the chain if complete."""
    argsz, flags, index, cap_offset, size, offset = unpack(REGION_INFO, payload, "DEVICE_GET_REGION_INFO")
    require(argsz >= REGION_INFO.size, f"DEVICE_GET_REGION_INFO: argsz {argsz} < {REGION_INFO.size}")
    if not ctx.is_reply:
        reply_buffer(payload, REGION_INFO.size, argsz, "DEVICE_GET_REGION_INFO")
        return RegionInfo(index, argsz, flags, cap_offset, size, offset)
    # QEMU takes at most one fd (the region's, for mmap) with this reply.
    ctx.fds_at_most(1, "DEVICE_GET_REGION_INFO reply")
    caps: tuple[RegionCap, ...] = ()
    if flags & REGION_INFO_FLAG_CAPS:
        # hw/vfio-user/device.c: "cap_offset in valid area" (Linux's cap_offset=0 short reply fails here).
        require(REGION_INFO.size <= cap_offset <= argsz,
                f"DEVICE_GET_REGION_INFO reply: CAPS with cap_offset {cap_offset} outside [32, argsz {argsz}]")
        if len(payload) >= argsz:
            exact(payload, argsz, "DEVICE_GET_REGION_INFO reply")
            caps = _parse_chain(payload, cap_offset)
    if not caps:
        # No chain decoded: either the short "retry with argsz" reply or a region without capabilities.
        exact(payload, REGION_INFO.size, "DEVICE_GET_REGION_INFO reply without a capability chain")
    return RegionInfo(index, argsz, flags, cap_offset, size, offset, caps)


def _parse_chain(payload: bytes, first: int) -> tuple[RegionCap, ...]:
    """Walk ``next`` links (offsets from the region info start) until 0.

    The chain must tile the reply: the first capability at 32, each one starting where the previous ends, the
    last ending at argsz.  That is how Linux (``vfio_info_add_capability``, 8-byte-aligned capabilities) and
    libvfio-user (``dev_get_caps``) lay it out, and it keeps decode and encode exact inverses; QEMU would also
    walk gaps and backward links, which no server produces.
    """
    require(first == REGION_INFO.size, f"region info cap chain starts at {first}, not right after the struct (32)")
    caps: list[RegionCap] = []
    off = first
    while off:
        cap_id, version, nxt = unpack(CAP_HEADER, payload[off:], f"region info cap at {off}")
        end = nxt if nxt else len(payload)
        require(end >= off + CAP_HEADER.size, f"region info cap at {off}: next {nxt} goes backwards")
        cap = _parse_cap(cap_id, version, payload[off + CAP_HEADER.size:end], off)
        size = CAP_HEADER.size + len(cap.body())
        require(off + size == end, f"region info cap {cap_id} at {off} is {size} bytes but the next one "
                                   f"starts at {end} (the chain must tile the reply)")
        caps.append(cap)
        off = nxt
    return tuple(caps)


def _parse_cap(cap_id: int, version: int, body: bytes, off: int) -> RegionCap:
    if cap_id == REGION_INFO_CAP_SPARSE_MMAP:
        nr_areas, reserved = unpack(SPARSE_HEADER, body, f"sparse mmap cap at {off}")
        need = SPARSE_HEADER.size + nr_areas * SPARSE_AREA.size
        require(len(body) >= need, f"sparse mmap cap at {off}: {nr_areas} areas need {need} bytes, "
                                   f"{len(body)} present")
        areas = tuple(SparseMmapArea(*SPARSE_AREA.unpack_from(body, SPARSE_HEADER.size + i * SPARSE_AREA.size))
                      for i in range(nr_areas))
        return SparseMmapCap(areas, version, reserved)
    if cap_id == REGION_INFO_CAP_TYPE:
        cap_type, subtype = unpack(CAP_TYPE, body, f"type cap at {off}")
        return TypeCap(cap_type, subtype, version)
    if cap_id == REGION_INFO_CAP_MSIX_MAPPABLE:
        return MsixMappableCap(version)
    return RawCap(cap_id, version, bytes(body))


# --- region I/O fds -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class IoFdsRequest:
    """DEVICE_GET_REGION_IO_FDS request: flags and count must be 0 (libvfio-user)."""

    index: int
    argsz: int = IO_FDS.size
    flags: int = 0
    count: int = 0

    def to_bytes(self) -> bytes:
        return pack(IO_FDS, "DEVICE_GET_REGION_IO_FDS", self.argsz, self.flags, self.index, self.count)


@dataclass(frozen=True)
class SubRegionFd:
    """One sub-region: ``data`` is datamatch (ioeventfd) or user_data (ioregionfd).  The 48-byte libvfio-user
    layout adds ``shadow_fd_index``/``shadow_offset`` (type 2); in the 40-byte spec layout ``shadow_fd_index``
    holds the padding word and ``shadow_offset`` must be 0."""

    offset: int
    size: int
    fd_index: int
    type: int = IO_FD_TYPE_IOEVENTFD
    flags: int = 0
    data: int = 0
    shadow_fd_index: int = 0
    shadow_offset: int = 0


@dataclass(frozen=True)
class IoFdsReply:
    """DEVICE_GET_REGION_IO_FDS reply.  ``count`` sub-regions exist; they are carried only if argsz allowed
    (a 16-byte reply with count > 0 asks for a retry).  ``entry_size`` is 40 (spec) or 48 (libvfio-user)."""

    index: int
    argsz: int
    count: int
    entries: tuple[SubRegionFd, ...] = ()
    flags: int = 0
    entry_size: int = SUB_REGION_SPEC.size

    def to_bytes(self) -> bytes:
        out = pack(IO_FDS, "DEVICE_GET_REGION_IO_FDS reply", self.argsz, self.flags, self.index, self.count)
        for e in self.entries:
            if self.entry_size == SUB_REGION_LIBVFIO_USER.size:
                out += pack(SUB_REGION_LIBVFIO_USER, "sub-region", e.offset, e.size, e.fd_index, e.type, e.flags,
                            e.shadow_fd_index, e.shadow_offset, e.data)
            else:
                require(self.entry_size == SUB_REGION_SPEC.size and e.shadow_offset == 0,
                        f"cannot encode sub-region: entry size {self.entry_size} / shadow_offset in 40-byte layout")
                out += pack(SUB_REGION_SPEC, "sub-region", e.offset, e.size, e.fd_index, e.type, e.flags,
                            e.shadow_fd_index, e.data)
        return out


def parse_io_fds_request(payload: bytes, ctx: Context) -> IoFdsRequest:
    """libvfio-user: flags/count nonzero, argsz < 16 or > max_data_xfer_size are EINVAL."""
    argsz, flags, index, count = unpack(IO_FDS, payload, "DEVICE_GET_REGION_IO_FDS")
    reply_buffer(payload, IO_FDS.size, argsz, "DEVICE_GET_REGION_IO_FDS")
    require(flags == 0 and count == 0, f"DEVICE_GET_REGION_IO_FDS: flags {flags:#x} / count {count} must be 0")
    require(IO_FDS.size <= argsz <= ctx.limits.max_data_xfer_size,
            f"DEVICE_GET_REGION_IO_FDS: argsz {argsz} outside [16, {ctx.limits.max_data_xfer_size}]")
    return IoFdsRequest(index, argsz, flags, count)


_IO_FD_TYPES: Final = (IO_FD_TYPE_IOEVENTFD, IO_FD_TYPE_IOREGIONFD, IO_FD_TYPE_IOEVENTFD_SHADOW)


def parse_io_fds_reply(payload: bytes, ctx: Context) -> IoFdsReply:
    """Entry stride = (argsz - 16) / count (spec; its text says "argsz - 32", which the layout contradicts)."""
    argsz, flags, index, count = unpack(IO_FDS, payload, "DEVICE_GET_REGION_IO_FDS reply")
    require(flags == 0, f"DEVICE_GET_REGION_IO_FDS reply: flags {flags:#x} must be 0")
    if len(payload) == IO_FDS.size:
        ctx.fds_at_most(0, "DEVICE_GET_REGION_IO_FDS reply without sub-regions")
        return IoFdsReply(index, argsz, count, (), flags)
    require(count > 0 and len(payload) == argsz and (argsz - IO_FDS.size) % count == 0,
            f"DEVICE_GET_REGION_IO_FDS reply: {len(payload)} bytes, argsz {argsz}, count {count} do not tile")
    stride = (argsz - IO_FDS.size) // count
    require(stride in (SUB_REGION_SPEC.size, SUB_REGION_LIBVFIO_USER.size),
            f"DEVICE_GET_REGION_IO_FDS reply: sub-region size {stride} (40 or 48 expected)")
    require(ctx.nfds >= 1, "DEVICE_GET_REGION_IO_FDS reply: sub-regions without any file descriptor")
    entries = []
    for i in range(count):
        at = IO_FDS.size + i * stride
        if stride == SUB_REGION_SPEC.size:
            off, size, fd_index, typ, fl, pad, data = SUB_REGION_SPEC.unpack_from(payload, at)
            entry = SubRegionFd(off, size, fd_index, typ, fl, data, pad, 0)
        else:
            off, size, fd_index, typ, fl, sfd, soff, data = SUB_REGION_LIBVFIO_USER.unpack_from(payload, at)
            entry = SubRegionFd(off, size, fd_index, typ, fl, data, sfd, soff)
        require(entry.type in _IO_FD_TYPES, f"sub-region {i}: unknown type {entry.type}")
        require(entry.fd_index < ctx.nfds, f"sub-region {i}: fd_index {entry.fd_index} >= {ctx.nfds} fds")
        if entry.type == IO_FD_TYPE_IOEVENTFD_SHADOW:
            require(stride == SUB_REGION_LIBVFIO_USER.size and entry.shadow_fd_index < ctx.nfds,
                    f"sub-region {i}: shadow ioeventfd needs the 48-byte layout and a valid shadow fd")
        entries.append(entry)
    return IoFdsReply(index, argsz, count, tuple(entries), flags, stride)
