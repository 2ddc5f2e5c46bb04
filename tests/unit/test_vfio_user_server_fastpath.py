"""The struct fast path for REGION_READ / REGION_WRITE against the codec: for every message it takes it must
produce exactly what ``codec.decode`` / ``codec.encode`` produce, and it must decline whatever the codec
would refuse or read differently (hypothesis over well-formed and damaged frames)."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from vfiolab.vfio_user import (
    Command,
    Limits,
    ProtocolError,
    RegionRead,
    RegionReadReply,
    RegionWrite,
    RegionWriteReply,
    Role,
    decode,
    encode,
    reply_to,
    request,
)
from vfiolab.vfio_user.fastpath import decode_access, encode_access

LIMITS = Limits(max_data_xfer_size=256)
u16, u32, u64 = st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF), st.integers(0, (1 << 64) - 1)


@st.composite
def access_messages(draw: st.DrawFn) -> tuple[bytes, bool]:
    """(wire, decoded by the server?) for region accesses both ways, often damaged."""
    msg_id, region, offset = draw(u16), draw(u32), draw(u64)
    data = draw(st.binary(max_size=300))
    kind = draw(st.sampled_from(["read", "write", "read reply", "write reply"]))
    if kind == "read":
        msg = request(Command.REGION_READ, RegionRead(region, offset, draw(st.integers(0, 400))), msg_id=msg_id,
                      no_reply=draw(st.booleans()))
    elif kind == "write":
        msg = request(Command.REGION_WRITE, RegionWrite(region, offset, data), msg_id=msg_id,
                      no_reply=draw(st.booleans()))
    elif kind == "read reply":
        msg = reply_to(request(Command.REGION_READ, msg_id=msg_id), RegionReadReply(region, offset, data))
    else:
        msg = reply_to(request(Command.REGION_WRITE, msg_id=msg_id), RegionWriteReply(region, offset, draw(u32)))
    wire = bytearray(encode(msg)[0])
    for _ in range(draw(st.integers(0, 2))):  # damage: any byte of the header or the access fields
        i = draw(st.integers(0, min(len(wire), 32) - 1))
        wire[i] = draw(st.integers(0, 255))
    if draw(st.booleans()) and draw(st.booleans()):
        wire = wire[:draw(st.integers(0, len(wire)))]
    return bytes(wire), kind in ("read", "write")


@settings(max_examples=400, deadline=None)
@given(access_messages(), st.integers(0, 1))
def test_fast_decode_agrees_with_the_codec(case: tuple[bytes, bool], nfds: int) -> None:
    wire, server = case
    fds = tuple(range(100, 100 + nfds))
    fast = decode_access(wire, fds, server, LIMITS)
    try:
        slow = decode(wire, fds, role=Role.SERVER if server else Role.CLIENT, limits=LIMITS)
    except ProtocolError:
        assert fast is None  # whatever the codec refuses, the fast path declines
        return
    if fast is not None:
        assert fast == slow and fast.header == slow.header


@settings(max_examples=200, deadline=None)
@given(u16, u32, u64, st.binary(max_size=64), st.booleans(), st.sampled_from([0, 1, 2, 3]))
def test_fast_encode_agrees_with_the_codec(msg_id: int, region: int, offset: int, data: bytes, no_reply: bool,
                                          which: int) -> None:
    msgs = [request(Command.REGION_READ, RegionRead(region, offset, len(data)), msg_id=msg_id, no_reply=no_reply),
            request(Command.REGION_WRITE, RegionWrite(region, offset, data), msg_id=msg_id, no_reply=no_reply),
            reply_to(request(Command.REGION_READ, msg_id=msg_id), RegionReadReply(region, offset, data)),
            reply_to(request(Command.REGION_WRITE, msg_id=msg_id), RegionWriteReply(region, offset, len(data)))]
    msg = msgs[which]
    assert encode_access(msg) == encode(msg)[0]


def test_fast_encode_declines_out_of_range_fields_and_other_messages() -> None:
    bad = request(Command.REGION_READ, RegionRead(1 << 32, 0, 4))
    assert encode_access(bad) is None
    assert encode_access(request(Command.DEVICE_RESET)) is None
    assert struct.calcsize("<HHIIIQII") == 32
