"""Encode/decode round trips over generated valid messages of every command, both directions.

``valid_messages()`` draws (receiving role, message) pairs that satisfy every rule the decoder enforces; the
fuzz test (tests/property/test_vfio_user_fuzz.py) mutates their bytes.  Property: decode(encode(m)) == m
and the bytes re-encode identically.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from vfiolab.vfio_user import (
    Capabilities,
    Command,
    DeviceFeature,
    DeviceInfo,
    DmaBitmap,
    DmaLoggingControl,
    DmaLoggingRange,
    DmaLoggingReport,
    DmaMap,
    DmaRead,
    DmaReadReply,
    DmaUnmap,
    DmaWrite,
    DmaWriteReply,
    IoFdsReply,
    IoFdsRequest,
    IrqInfo,
    IrqSet,
    Message,
    MigData,
    MigDataRead,
    MigDataSize,
    MigrationCaps,
    MigrationInfo,
    MigState,
    MsixMappableCap,
    RawCap,
    RegionInfo,
    RegionRead,
    RegionReadReply,
    RegionWrite,
    RegionWriteMulti,
    RegionWriteMultiReply,
    RegionWriteReply,
    Role,
    SparseMmapArea,
    SparseMmapCap,
    SubRegionFd,
    TwinSocket,
    TypeCap,
    Version,
    bitmap_size,
    decode,
    encode,
)
from vfiolab.vfio_user.protocol import SERVER_TO_CLIENT

MB = 1 << 20
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
u64 = st.integers(0, (1 << 64) - 1)
small_bytes = st.binary(max_size=48)
FD_BASE = 100


def fds(n: int) -> tuple[int, ...]:
    return tuple(range(FD_BASE, FD_BASE + n))


# --- VERSION ------------------------------------------------------------------------------------------------
json_scalars = st.none() | st.booleans() | st.integers(-(1 << 70), 1 << 70) | st.text(max_size=8)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)
extra_keys = st.text(min_size=1, max_size=10).filter(
    lambda k: k not in {"max_msg_fds", "max_data_xfer_size", "max_dma_maps", "pgsizes", "migration", "twin_socket",
                        "write_multiple"})


@st.composite
def capabilities(draw: st.DrawFn, reply: bool) -> tuple[Capabilities, int]:
    """Capabilities valid for a request (libvfio-user's checks) or a reply (QEMU's); returns (caps, nfds)."""
    opt = st.none()
    pages = st.integers(0, (1 << 52) - 1).map(lambda p: p << 12)
    migration = draw(opt | st.builds(
        MigrationCaps, opt | (pages if reply else u64), opt | (st.integers(0, 256 << 20) if reply else u64),
        st.dictionaries(st.sampled_from(["legacy", "x"]), json_scalars, max_size=1)))
    twin = draw(opt | st.builds(TwinSocket, opt | st.booleans(), opt | st.just(0)))
    nfds = 1 if reply and twin is not None and twin.supported else 0
    if reply and twin is not None:  # a reply names the twin socket's fd exactly when it enables the mode
        twin = TwinSocket(twin.supported, 0 if twin.supported else None)
    caps = Capabilities(
        draw(opt | st.integers(0, 16 if reply else 1024)),
        draw(opt | (st.integers(0, 64 << 20) if reply else u64)),
        draw(opt | (st.integers(0, 65535) if reply else u64)),
        draw(opt | (pages if reply else u64)),
        migration, twin, draw(opt | st.booleans()),
        draw(st.dictionaries(extra_keys, json_values, max_size=2)))
    return caps, nfds


@st.composite
def version_messages(draw: st.DrawFn) -> tuple[Role, Message]:
    reply = draw(st.booleans())
    caps, nfds = draw(capabilities(reply))
    body = Version(draw(u16), draw(u16), caps if reply else draw(st.none() | st.just(caps)))
    return (Role.CLIENT if reply else Role.SERVER), Message(Command.VERSION, draw(u16), body, reply,
                                                            fds=fds(nfds))


# --- DMA ----------------------------------------------------------------------------------------------------
@st.composite
def dma_map(draw: st.DrawFn) -> tuple[DmaMap, int]:
    flags = draw(st.integers(0, 3))
    nfds = draw(st.integers(0, 1))
    if nfds:
        flags |= draw(st.sampled_from([0, 4, 8]))
    return DmaMap(draw(u64), draw(u64), draw(u64), flags, draw(st.integers(32, 0xFFFFFFFF))), nfds


@st.composite
def dma_unmap(draw: st.DrawFn, reply: bool) -> DmaUnmap:
    kind = draw(st.sampled_from(["plain", "all", "dirty"]))
    if kind == "all":
        return DmaUnmap(0, 0, 2, draw(st.integers(24, MB)))
    if kind == "plain":
        return DmaUnmap(draw(u64), draw(u64), 0, draw(st.integers(24, MB)))
    size = draw(st.integers(0, 64))
    data = draw(st.binary(min_size=size, max_size=size)) if reply else b""
    return DmaUnmap(draw(u64), draw(u64), 1, draw(st.integers(40 + size, MB)), DmaBitmap(draw(u64), size, data))


# --- device discovery ---------------------------------------------------------------------------------------
region_caps = st.one_of(
    st.builds(SparseMmapCap, st.lists(st.builds(SparseMmapArea, u64, u64), max_size=3).map(tuple), u16, u32),
    st.builds(TypeCap, u32, u32, u16),
    st.builds(MsixMappableCap, u16),
    st.builds(RawCap, st.integers(4, 0xFFFF), u16, small_bytes),
)


@st.composite
def region_info_reply(draw: st.DrawFn) -> RegionInfo:
    index, size, offset = draw(u32), draw(u64), draw(u64)
    caps = tuple(draw(st.lists(region_caps, max_size=3)))
    if caps:
        return RegionInfo.for_reply(index, draw(u32), size, offset, caps, 1 << 20)
    argsz = draw(st.integers(32, 0xFFFFFFFF))
    flags = draw(u32) & ~0x8
    cap_offset = 0
    if argsz > 32 and draw(st.booleans()):  # the short "retry" reply may keep CAPS with a cap_offset in range
        flags |= 0x8
        cap_offset = draw(st.integers(32, argsz))
    return RegionInfo(index, argsz, flags, cap_offset, size, offset)


@st.composite
def io_fds_reply(draw: st.DrawFn) -> tuple[IoFdsReply, int]:
    if draw(st.booleans()):
        return IoFdsReply(draw(u32), draw(u32), draw(u32)), 0
    size = draw(st.sampled_from([40, 48]))
    nfds = draw(st.integers(1, 3))
    n = draw(st.integers(1, 4))
    entries = []
    for _ in range(n):
        typ = draw(st.sampled_from([0, 1, 2] if size == 48 else [0, 1]))
        shadow = draw(st.integers(0, nfds - 1)) if typ == 2 else draw(u32 if size == 40 else st.integers(0, 9))
        entries.append(SubRegionFd(draw(u64), draw(u64), draw(st.integers(0, nfds - 1)), typ, draw(u32), draw(u64),
                                   shadow, draw(u64) if size == 48 else 0))
    return IoFdsReply(draw(u32), 16 + n * size, n, tuple(entries), 0, size), nfds


# --- interrupts ---------------------------------------------------------------------------------------------
@st.composite
def irq_set(draw: st.DrawFn) -> tuple[IrqSet, int]:
    action = draw(st.sampled_from([0x08, 0x10, 0x20]))
    dtype = draw(st.sampled_from([0x1, 0x2, 0x4]))
    count = draw(st.integers(0, 16))
    if count == 0:
        action, dtype = 0x20, 0x1
    start = 0 if count == 0 else draw(u32)
    data = draw(st.binary(min_size=count, max_size=count)) if dtype == 0x2 else b""
    nfds = count if dtype == 0x4 and draw(st.booleans()) else 0
    argsz = draw(st.integers(20, 0xFFFFFFFF))
    return IrqSet(draw(u32), action | dtype, start, count, data, argsz), nfds


# --- DEVICE_FEATURE -----------------------------------------------------------------------------------------
GET, SET, PROBE = 1 << 16, 1 << 17, 1 << 18
UNKNOWN_FEATURES = st.integers(0, 0xFFFF).filter(lambda f: f not in (1, 2, 6, 7, 8, 9))


@st.composite
def feature_request(draw: st.DrawFn) -> DeviceFeature:
    kind = draw(st.sampled_from(["get", "set-state", "start", "stop", "report", "probe", "unknown"]))
    if kind == "get":
        feature = draw(st.sampled_from([1, 2, 9]))
        return DeviceFeature(feature | GET, draw(small_bytes), draw(st.integers(16, 0xFFFFFFFF)))
    if kind == "set-state":
        return DeviceFeature(2 | SET, MigState(draw(u32), draw(u32)), draw(st.integers(16, 0xFFFFFFFF)))
    if kind == "start":
        ctl = DmaLoggingControl(draw(u64), tuple(draw(st.lists(st.builds(DmaLoggingRange, u64, u64), max_size=3))),
                                draw(u32))
        return DeviceFeature(6 | SET, ctl, draw(st.integers(8 + len(ctl.to_bytes()), 0xFFFFFFFF)))
    if kind == "stop":
        data = draw(small_bytes)
        return DeviceFeature(7 | SET, data, draw(st.integers(8 + len(data), 0xFFFFFFFF)))
    if kind == "report":
        page = 1 << draw(st.integers(0, 30))
        length = draw(st.integers(page, page << 16))
        need = 32 + bitmap_size(length, page)
        return DeviceFeature(8 | GET, DmaLoggingReport(draw(u64), length, page), draw(st.integers(need, need + 64)))
    if kind == "probe":
        feature = draw(st.sampled_from([1, 2, 6, 7, 8, 9]) | UNKNOWN_FEATURES)
        allowed = {1: GET, 2: GET | SET, 6: SET, 7: SET, 8: GET, 9: GET}.get(feature, GET | SET)
        ops = PROBE | (draw(st.sampled_from([0, GET, SET, GET | SET])) & allowed)
        data = draw(small_bytes)
        return DeviceFeature(feature | ops, data, draw(st.integers(8 + len(data), 0xFFFFFFFF)))
    data = draw(small_bytes)
    op = draw(st.sampled_from([GET, SET]))
    return DeviceFeature(draw(UNKNOWN_FEATURES) | op, data, draw(st.integers(8 + len(data), 0xFFFFFFFF)))


@st.composite
def feature_reply(draw: st.DrawFn) -> DeviceFeature:
    kind = draw(st.sampled_from(["migration", "state", "size", "report", "set-state", "start", "raw"]))
    argsz = draw(u32)
    if kind == "migration":
        return DeviceFeature(1 | GET, MigrationInfo(draw(u64)), argsz)
    if kind == "state":
        return DeviceFeature(2 | draw(st.sampled_from([GET, SET])), MigState(draw(u32), draw(u32)), argsz)
    if kind == "size":
        return DeviceFeature(9 | GET, MigDataSize(draw(u64)), argsz)
    if kind == "report":
        words = draw(st.integers(0, 4))
        return DeviceFeature(8 | GET, DmaLoggingReport(draw(u64), draw(u64), draw(u64),
                                                       draw(st.binary(min_size=8 * words, max_size=8 * words))), argsz)
    if kind == "start":
        ranges = tuple(draw(st.lists(st.builds(DmaLoggingRange, u64, u64), max_size=2)))
        return DeviceFeature(6 | SET, DmaLoggingControl(draw(u64), ranges, draw(u32)), argsz)
    if kind == "set-state":
        return DeviceFeature(2 | SET | PROBE, draw(small_bytes), argsz)
    return DeviceFeature(7 | SET, draw(small_bytes), argsz)


# --- all messages -------------------------------------------------------------------------------------------
@st.composite
def valid_messages(draw: st.DrawFn) -> tuple[Role, Message]:
    """(receiving role, message) for any command, request or reply, error replies included."""
    cmd = draw(st.sampled_from(list(Command)))
    reply = draw(st.booleans())
    to_client = cmd in SERVER_TO_CLIENT
    role = Role.CLIENT if to_client != reply else Role.SERVER
    msg_id = draw(u16)
    if reply and draw(st.integers(0, 9)) == 9:
        return role, Message(cmd, msg_id, None, True, False, draw(u32))
    if cmd is Command.VERSION:
        return draw(version_messages())
    body: Any = None
    nfds = 0
    if cmd is Command.DMA_MAP and not reply:
        body, nfds = draw(dma_map())
    elif cmd is Command.DMA_UNMAP:
        body = draw(dma_unmap(reply))
    elif cmd is Command.DEVICE_GET_INFO:
        body = (DeviceInfo(draw(st.integers(16, 0xFFFFFFFF)), draw(u32), draw(st.integers(0, 100)),
                           draw(st.integers(0, 50))) if reply
                else DeviceInfo(draw(st.integers(16, 0xFFFFFFFF)), draw(u32), draw(u32), draw(u32)))
    elif cmd is Command.DEVICE_GET_REGION_INFO:
        if reply:
            body, nfds = draw(region_info_reply()), draw(st.integers(0, 1))
        else:
            body = RegionInfo(draw(u32), draw(st.integers(32, 0xFFFFFFFF)), draw(u32), draw(u32), draw(u64),
                              draw(u64))
    elif cmd is Command.DEVICE_GET_REGION_IO_FDS:
        if reply:
            body, nfds = draw(io_fds_reply())
        else:
            body = IoFdsRequest(draw(u32), draw(st.integers(16, MB)))
    elif cmd is Command.DEVICE_GET_IRQ_INFO:
        body = IrqInfo(draw(u32), draw(st.integers(16, 0xFFFFFFFF)), draw(u32), draw(u32))
    elif cmd is Command.DEVICE_SET_IRQS and not reply:
        body, nfds = draw(irq_set())
    elif cmd is Command.REGION_READ:
        body = (RegionReadReply(draw(u32), draw(u64), draw(small_bytes)) if reply
                else RegionRead(draw(u32), draw(u64), draw(st.integers(0, MB))))
    elif cmd is Command.REGION_WRITE:
        body = (RegionWriteReply(draw(u32), draw(u64), draw(u32)) if reply
                else RegionWrite(draw(u32), draw(u64), draw(small_bytes)))
    elif cmd is Command.REGION_WRITE_MULTI:
        body = (RegionWriteMultiReply(draw(u64)) if reply else RegionWriteMulti(tuple(draw(st.lists(
            st.builds(RegionWrite, u32, u64, st.binary(max_size=8)), max_size=5)))))
    elif cmd is Command.DMA_READ:
        body = (DmaReadReply(draw(u64), draw(small_bytes)) if reply
                else DmaRead(draw(u64), draw(st.integers(0, MB))))
    elif cmd is Command.DMA_WRITE:
        if reply:
            layout = draw(st.sampled_from([0, 12, 16]))
            body = DmaWriteReply(*((0, 0) if layout == 0 else (draw(u64), draw(u32 if layout == 12 else u64))),
                                 layout)
        else:
            body = DmaWrite(draw(u64), draw(small_bytes))
    elif cmd is Command.DEVICE_FEATURE:
        body = draw(feature_reply() if reply else feature_request())
    elif cmd is Command.MIG_DATA_READ:
        if reply:
            body = MigData(draw(small_bytes), draw(u32), draw(st.integers(0, 16)))
        else:
            size = draw(st.integers(0, MB))
            body = MigDataRead(size, draw(st.integers(8 + size, 0xFFFFFFFF)))
    elif cmd is Command.MIG_DATA_WRITE and not reply:
        data = draw(small_bytes)
        body = MigData(data, draw(st.integers(8 + len(data), 0xFFFFFFFF)))
    no_reply = not reply and draw(st.integers(0, 4)) == 4
    return role, Message(cmd, msg_id, body, reply, no_reply, None, fds(nfds))


@settings(max_examples=400, deadline=None)
@given(valid_messages())
def test_round_trip(case: tuple[Role, Message]) -> None:
    role, msg = case
    wire, sent_fds = encode(msg)
    got = decode(wire, sent_fds, role=role)
    assert got == msg
    assert encode(got) == (wire, sent_fds)


@settings(max_examples=150, deadline=None)
@given(version_messages())
def test_version_round_trip(case: tuple[Role, Message]) -> None:
    role, msg = case
    wire, sent_fds = encode(msg)
    assert decode(wire, sent_fds, role=role) == msg
