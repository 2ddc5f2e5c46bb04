"""Fast decode and encode of the messages that dominate traffic: REGION_READ / REGION_WRITE requests and their
replies.  Each function handles only the plain well-formed case with ``struct`` directly and returns None for
anything else, which then goes through the full codec (``codec.decode`` / ``codec.encode``); for what it
handles it produces exactly what the codec produces (tests compare the two).
"""

from __future__ import annotations

import struct
from typing import Final

from vfiolab.vfio_user.codec import Message
from vfiolab.vfio_user.protocol import Command, Header, Limits
from vfiolab.vfio_user.region import RegionRead, RegionReadReply, RegionWrite, RegionWriteReply

ACCESS: Final = struct.Struct("<HHIIIQII")  # header + offset, region, count
ACCESS_SIZE: Final = ACCESS.size  # 32
_READ: Final = int(Command.REGION_READ)
_WRITE: Final = int(Command.REGION_WRITE)
_REQUEST_FLAGS: Final = (0x00, 0x10)  # command, command + No_reply
_REPLY: Final = 0x01


def decode_access(data: bytes, fds: list[int] | tuple[int, ...], server: bool, limits: Limits) -> Message | None:
    """A REGION_READ/REGION_WRITE request (``server``) or reply (client side) as ``codec.decode`` returns it,
    or None when the message is not one of those in its plain form."""
    if fds or len(data) < ACCESS_SIZE:
        return None
    msg_id, cmd, size, flags, error, offset, region, count = ACCESS.unpack_from(data)
    if size != len(data) or size > limits.message_ceiling:
        return None
    header = Header(msg_id, cmd, size, flags, error)
    if server:
        if flags not in _REQUEST_FLAGS or count > limits.max_data_xfer_size:
            return None
        if cmd == _READ and size == ACCESS_SIZE:
            return Message(Command.REGION_READ, msg_id, RegionRead(region, offset, count), False, bool(flags),
                           None, (), header)
        if cmd == _WRITE and size == ACCESS_SIZE + count:
            return Message(Command.REGION_WRITE, msg_id, RegionWrite(region, offset, data[ACCESS_SIZE:]), False,
                           bool(flags), None, (), header)
        return None
    if flags != _REPLY:
        return None
    if cmd == _READ and size == ACCESS_SIZE + count:
        return Message(Command.REGION_READ, msg_id, RegionReadReply(region, offset, data[ACCESS_SIZE:]), True, False,
                       None, (), header)
    if cmd == _WRITE and size == ACCESS_SIZE:
        return Message(Command.REGION_WRITE, msg_id, RegionWriteReply(region, offset, count), True, False, None, (),
                       header)
    return None


def encode_access(msg: Message) -> bytes | None:
    """The bytes ``codec.encode`` gives for a REGION_READ/REGION_WRITE request or reply without fds, or None."""
    try:
        return _encode_access(msg)
    except struct.error:  # a field out of range: the codec says which
        return None


def _encode_access(msg: Message) -> bytes | None:
    body = msg.body
    if msg.fds or msg.error is not None:
        return None
    if msg.reply:
        if isinstance(body, RegionReadReply):
            n = len(body.data)
            return ACCESS.pack(msg.msg_id, _READ, ACCESS_SIZE + n, _REPLY, 0, body.offset, body.region, n) + body.data
        if isinstance(body, RegionWriteReply):
            return ACCESS.pack(msg.msg_id, _WRITE, ACCESS_SIZE, _REPLY, 0, body.offset, body.region, body.count)
        return None
    flags = 0x10 if msg.no_reply else 0
    if isinstance(body, RegionRead):
        return ACCESS.pack(msg.msg_id, _READ, ACCESS_SIZE, flags, 0, body.offset, body.region, body.count)
    if isinstance(body, RegionWrite):
        n = len(body.data)
        return ACCESS.pack(msg.msg_id, _WRITE, ACCESS_SIZE + n, flags, 0, body.offset, body.region, n) + body.data
    return None


__all__ = ["ACCESS", "decode_access", "encode_access"]
