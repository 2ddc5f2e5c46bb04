"""Migration messages: DEVICE_FEATURE (``struct vfio_device_feature`` + feature data) and MIG_DATA_READ/WRITE.

Feature data layouts are Linux's (include/uapi/linux/vfio.h): MIGRATION {u64 flags}, MIG_DEVICE_STATE
{u32 device_state, u32 data_fd}, DMA_LOGGING_START/STOP {u64 page_size, u32 num_ranges, u32 reserved,
ranges {u64 iova, u64 length}...} (inline in vfio-user), DMA_LOGGING_REPORT {u64 iova, u64 length,
u64 page_size, then the u64 bitmap in the reply}, MIG_DATA_SIZE {u64 stop_copy_length}.

Flag checks follow Linux (drivers/vfio/vfio_main.c ``vfio_ioctl_device_feature``: unknown bits, GET with
SET but no PROBE); per-feature operations, argsz and sizes follow libvfio-user (lib/libvfio-user.c
``handle_device_feature``, lib/migration.c ``handle_mig_data_read/write``).  Everything refused is EINVAL.
Data of requests whose data is not used (GET of MIGRATION, MIG_DEVICE_STATE, MIG_DATA_SIZE, PROBE, STOP, unknown
features) is kept as raw bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from vfiolab.vfio_user.protocol import (
    DEVICE_FEATURE_GET,
    DEVICE_FEATURE_MASK,
    DEVICE_FEATURE_PROBE,
    DEVICE_FEATURE_SET,
    FEATURE_DMA_LOGGING_REPORT,
    FEATURE_DMA_LOGGING_START,
    FEATURE_DMA_LOGGING_STOP,
    FEATURE_MIG_DATA_SIZE,
    FEATURE_MIG_DEVICE_STATE,
    FEATURE_MIGRATION,
)
from vfiolab.vfio_user.wire import Context, exact, is_power_of_two, need, pack, require, unpack

FEATURE: Final = struct.Struct("<II")  # argsz, flags
U64: Final = struct.Struct("<Q")
MIG_STATE: Final = struct.Struct("<II")  # device_state, data_fd
LOGGING_CONTROL: Final = struct.Struct("<QII")  # page_size, num_ranges, reserved
LOGGING_RANGE: Final = struct.Struct("<QQ")  # iova, length
LOGGING_REPORT: Final = struct.Struct("<QQQ")  # iova, length, page_size
MIG_DATA: Final = struct.Struct("<II")  # argsz, size
FEATURE_OPS: Final = DEVICE_FEATURE_GET | DEVICE_FEATURE_SET | DEVICE_FEATURE_PROBE

#: Operations each known feature has (libvfio-user ``device_feature_flags_supported``; Linux for MIG_DATA_SIZE).
FEATURE_SUPPORTS: Final = {
    FEATURE_MIGRATION: DEVICE_FEATURE_GET,
    FEATURE_MIG_DEVICE_STATE: DEVICE_FEATURE_GET | DEVICE_FEATURE_SET,
    FEATURE_DMA_LOGGING_START: DEVICE_FEATURE_SET,
    FEATURE_DMA_LOGGING_STOP: DEVICE_FEATURE_SET,
    FEATURE_DMA_LOGGING_REPORT: DEVICE_FEATURE_GET,
    FEATURE_MIG_DATA_SIZE: DEVICE_FEATURE_GET,
}


@dataclass(frozen=True)
class MigrationInfo:
    """GET MIGRATION reply data: VFIO_MIGRATION_STOP_COPY | P2P | PRE_COPY."""

    flags: int

    def to_bytes(self) -> bytes:
        return pack(U64, "MIGRATION flags", self.flags)


@dataclass(frozen=True)
class MigState:
    """MIG_DEVICE_STATE data (SET request, GET reply): the state number and the unused data_fd (u32)."""

    device_state: int
    data_fd: int = 0xFFFFFFFF

    def to_bytes(self) -> bytes:
        return pack(MIG_STATE, "MIG_DEVICE_STATE", self.device_state, self.data_fd)


@dataclass(frozen=True)
class MigDataSize:
    """GET MIG_DATA_SIZE reply data (Linux feature 9; not in the vfio-user spec's list)."""

    stop_copy_length: int

    def to_bytes(self) -> bytes:
        return pack(U64, "MIG_DATA_SIZE", self.stop_copy_length)


@dataclass(frozen=True)
class DmaLoggingRange:
    iova: int
    length: int


@dataclass(frozen=True)
class DmaLoggingControl:
    """DMA_LOGGING_START data; no ranges means "log every write" (spec; Linux's ioctl refuses num_ranges 0)."""

    page_size: int
    ranges: tuple[DmaLoggingRange, ...] = ()
    reserved: int = 0

    def to_bytes(self) -> bytes:
        out = pack(LOGGING_CONTROL, "DMA_LOGGING control", self.page_size, len(self.ranges), self.reserved)
        return out + b"".join(pack(LOGGING_RANGE, "DMA_LOGGING range", r.iova, r.length) for r in self.ranges)


@dataclass(frozen=True)
class DmaLoggingReport:
    """DMA_LOGGING_REPORT data: the request's range and page size; the reply adds the u64 bitmap."""

    iova: int
    length: int
    page_size: int
    bitmap: bytes = b""

    def to_bytes(self) -> bytes:
        return pack(LOGGING_REPORT, "DMA_LOGGING_REPORT", self.iova, self.length, self.page_size) + self.bitmap


FeatureData = MigrationInfo | MigState | MigDataSize | DmaLoggingControl | DmaLoggingReport | bytes


def bitmap_size(length: int, page_size: int) -> int:
    """Bytes of a dirty bitmap for ``length`` at ``page_size``: whole u64 words (libvfio-user get_bitmap_size)."""
    pages = -(-length // page_size)
    return -(-pages // 64) * 8


def _reply_data_size(feature: int, data: FeatureData) -> int | None:
    """Size of a GET's reply data, for the default argsz (None if the feature is unknown)."""
    if feature in (FEATURE_MIGRATION, FEATURE_MIG_DEVICE_STATE, FEATURE_MIG_DATA_SIZE):
        return 8
    if feature == FEATURE_DMA_LOGGING_REPORT and isinstance(data, DmaLoggingReport) and data.page_size:
        return LOGGING_REPORT.size + bitmap_size(data.length, data.page_size)
    return None


def _data_bytes(data: FeatureData) -> bytes:
    return data if isinstance(data, bytes) else data.to_bytes()


@dataclass(frozen=True)
class DeviceFeature:
    """DEVICE_FEATURE request or reply: ``flags`` = feature index | GET/SET/PROBE, then feature ``data``.

    ``argsz`` defaults to what the sender accepts back: for a GET of a known feature the full reply size,
    otherwise the payload size (SET and PROBE replies echo the request).
    """

    flags: int
    data: FeatureData = b""
    argsz: int | None = None

    def __post_init__(self) -> None:
        if self.argsz is None:
            size = None
            if self.flags & FEATURE_OPS == DEVICE_FEATURE_GET:
                size = _reply_data_size(self.feature, self.data)
            if size is None:
                size = len(_data_bytes(self.data))
            object.__setattr__(self, "argsz", FEATURE.size + size)

    @property
    def feature(self) -> int:
        return self.flags & DEVICE_FEATURE_MASK

    @property
    def ops(self) -> int:
        return self.flags & FEATURE_OPS

    def to_bytes(self) -> bytes:
        argsz = 0 if self.argsz is None else self.argsz
        return pack(FEATURE, "DEVICE_FEATURE", argsz, self.flags) + _data_bytes(self.data)


def parse_device_feature(payload: bytes, ctx: Context) -> DeviceFeature:
    argsz, flags = unpack(FEATURE, payload, "DEVICE_FEATURE")
    data = payload[FEATURE.size:]
    require(flags & ~(DEVICE_FEATURE_MASK | FEATURE_OPS) == 0, f"DEVICE_FEATURE: unknown flag bits {flags:#x}")
    ops, feature = flags & FEATURE_OPS, flags & DEVICE_FEATURE_MASK
    require(ops != 0, "DEVICE_FEATURE: no operation (GET, SET or PROBE) given")
    require(ops & DEVICE_FEATURE_PROBE or ops != DEVICE_FEATURE_GET | DEVICE_FEATURE_SET,
            "DEVICE_FEATURE: GET and SET together need PROBE")
    supported = FEATURE_SUPPORTS.get(feature)
    if supported is not None:
        require(ops & ~(supported | DEVICE_FEATURE_PROBE) == 0,
                f"DEVICE_FEATURE: feature {feature} does not support operations {ops:#x}")
    if ctx.is_reply:
        return DeviceFeature(flags, _parse_reply_data(feature, ops, data), argsz)
    return DeviceFeature(flags, _parse_request_data(feature, ops, data, argsz), argsz)


def _parse_request_data(feature: int, ops: int, data: bytes, argsz: int) -> FeatureData:
    if ops != DEVICE_FEATURE_GET:
        # SET and PROBE: the reply echoes the request, so argsz must cover it (libvfio-user "bad argsz").
        require(argsz >= FEATURE.size + len(data),
                f"DEVICE_FEATURE: argsz {argsz} < payload size {FEATURE.size + len(data)}")
    if ops & DEVICE_FEATURE_PROBE:
        return bytes(data)
    if ops == DEVICE_FEATURE_SET:
        if feature == FEATURE_MIG_DEVICE_STATE:
            exact(data, MIG_STATE.size, "DEVICE_FEATURE SET MIG_DEVICE_STATE")
            return MigState(*MIG_STATE.unpack(data))
        if feature == FEATURE_DMA_LOGGING_START:
            return _parse_control(data, "DEVICE_FEATURE SET DMA_LOGGING_START")
        return bytes(data)  # STOP (libvfio-user's client sends a control block it ignores), unknown features
    if feature == FEATURE_DMA_LOGGING_REPORT:
        iova, length, page_size = unpack(LOGGING_REPORT, data, "DEVICE_FEATURE GET DMA_LOGGING_REPORT")
        exact(data, LOGGING_REPORT.size, "DEVICE_FEATURE GET DMA_LOGGING_REPORT")
        # libvfio-user get_bitmap_size + dma_controller_dirty_page_get: non-zero power of two, length >= it.
        require(is_power_of_two(page_size), f"DMA_LOGGING_REPORT: page_size {page_size:#x} is not a power of 2")
        require(length >= page_size, f"DMA_LOGGING_REPORT: length {length:#x} < page_size {page_size:#x}")
        need_argsz = FEATURE.size + LOGGING_REPORT.size + bitmap_size(length, page_size)
        require(argsz >= need_argsz, f"DMA_LOGGING_REPORT: argsz {argsz} < {need_argsz} needed for the bitmap")
        return DmaLoggingReport(iova, length, page_size)
    reply_size = _reply_data_size(feature, bytes(data))
    if reply_size is not None:
        require(argsz >= FEATURE.size + reply_size, f"DEVICE_FEATURE GET {feature}: argsz {argsz} < "
                                                    f"{FEATURE.size + reply_size}")
    return bytes(data)


def _parse_control(data: bytes, what: str) -> DmaLoggingControl:
    page_size, num_ranges, reserved = unpack(LOGGING_CONTROL, data, what)
    exact(data, LOGGING_CONTROL.size + num_ranges * LOGGING_RANGE.size, f"{what} with {num_ranges} ranges")
    ranges = tuple(DmaLoggingRange(*r) for r in LOGGING_RANGE.iter_unpack(data[LOGGING_CONTROL.size:]))
    return DmaLoggingControl(page_size, ranges, reserved)


def _parse_reply_data(feature: int, ops: int, data: bytes) -> FeatureData:
    """Replies: GET carries the feature's data; SET and PROBE echo the request."""
    if ops == DEVICE_FEATURE_GET:
        if feature == FEATURE_MIGRATION:
            exact(data, U64.size, "DEVICE_FEATURE GET MIGRATION reply")
            return MigrationInfo(*U64.unpack(data))
        if feature == FEATURE_MIG_DEVICE_STATE:
            exact(data, MIG_STATE.size, "DEVICE_FEATURE GET MIG_DEVICE_STATE reply")
            return MigState(*MIG_STATE.unpack(data))
        if feature == FEATURE_MIG_DATA_SIZE:
            exact(data, U64.size, "DEVICE_FEATURE GET MIG_DATA_SIZE reply")
            return MigDataSize(*U64.unpack(data))
        if feature == FEATURE_DMA_LOGGING_REPORT:
            iova, length, page_size = unpack(LOGGING_REPORT, data, "DMA_LOGGING_REPORT reply")
            bitmap = data[LOGGING_REPORT.size:]
            require(len(bitmap) % 8 == 0, f"DMA_LOGGING_REPORT reply: bitmap of {len(bitmap)} bytes is not u64s")
            return DmaLoggingReport(iova, length, page_size, bytes(bitmap))
        return bytes(data)
    if ops == DEVICE_FEATURE_SET and feature == FEATURE_MIG_DEVICE_STATE:
        exact(data, MIG_STATE.size, "DEVICE_FEATURE SET MIG_DEVICE_STATE reply")
        return MigState(*MIG_STATE.unpack(data))
    if ops == DEVICE_FEATURE_SET and feature == FEATURE_DMA_LOGGING_START:
        return _parse_control(data, "DEVICE_FEATURE SET DMA_LOGGING_START reply")
    return bytes(data)


# --- migration data stream ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class MigDataRead:
    """MIG_DATA_READ request: read up to ``size`` bytes of the saving stream."""

    size: int
    argsz: int | None = None

    def __post_init__(self) -> None:
        if self.argsz is None:
            object.__setattr__(self, "argsz", MIG_DATA.size + self.size)

    def to_bytes(self) -> bytes:
        return pack(MIG_DATA, "MIG_DATA_READ", 0 if self.argsz is None else self.argsz, self.size)


@dataclass(frozen=True)
class MigData:
    """MIG_DATA_READ reply and MIG_DATA_WRITE request: argsz, size (= len(data)), data.  A short read ends
    the stream.  ``padding`` zero bytes may follow the data in a reply: libvfio-user's server sizes the reply
    for the requested amount, and its samples/client insists on receiving exactly that many bytes."""

    data: bytes
    argsz: int | None = None
    padding: int = 0

    def __post_init__(self) -> None:
        if self.argsz is None:
            object.__setattr__(self, "argsz", MIG_DATA.size + len(self.data))

    def to_bytes(self) -> bytes:
        argsz = 0 if self.argsz is None else self.argsz
        return pack(MIG_DATA, "migration data", argsz, len(self.data)) + self.data + bytes(self.padding)


def _size_ok(size: int, argsz: int, ctx: Context, what: str) -> None:
    require(size <= ctx.limits.max_data_xfer_size,
            f"{what}: size {size} > max_data_xfer_size {ctx.limits.max_data_xfer_size}")
    require(argsz >= MIG_DATA.size + size, f"{what}: argsz {argsz} < {MIG_DATA.size + size}")


def parse_mig_data_read(payload: bytes, ctx: Context) -> MigDataRead:
    argsz, size = unpack(MIG_DATA, payload, "MIG_DATA_READ")
    exact(payload, MIG_DATA.size, "MIG_DATA_READ")
    _size_ok(size, argsz, ctx, "MIG_DATA_READ")
    return MigDataRead(size, argsz)


def parse_mig_data(payload: bytes, ctx: Context) -> MigData:
    """MIG_DATA_WRITE request (libvfio-user's size/argsz/short-write checks) or MIG_DATA_READ reply.

    libvfio-user's ``handle_mig_data_read`` sends a reply sized for the *requested* amount with ``size`` (and
    argsz) saying how much of it is data, so a reply may carry more bytes than ``size``: the rest is padding.
    """
    what = "MIG_DATA_READ reply" if ctx.is_reply else "MIG_DATA_WRITE"
    argsz, size = unpack(MIG_DATA, payload, what)
    data = payload[MIG_DATA.size:]
    if ctx.is_reply:
        need(data, size, what)
        return MigData(bytes(data[:size]), argsz, len(data) - size)
    _size_ok(size, argsz, ctx, what)
    need(data, size, what)
    require(len(data) == size, f"{what}: size {size} but {len(data)} data bytes")
    return MigData(bytes(data), argsz)


__all__ = ["DeviceFeature", "DmaLoggingControl", "DmaLoggingRange", "DmaLoggingReport", "FeatureData",
           "MigData", "MigDataRead", "MigDataSize", "MigState", "MigrationInfo", "bitmap_size"]
