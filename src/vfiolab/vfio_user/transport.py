"""Framing over a connected AF_UNIX stream socket: exactly one message per call, fds via SCM_RIGHTS.

Usable by either end; it owns no event loop and expects a blocking socket.  A message is read as its
16-byte header (never past it, so the next message stays in the socket), then ``msg_size - 16`` payload
bytes; descriptors are collected from every piece (the sender attaches them to the first byte, like
libvfio-user's ``tran_sock_send_iovec`` and QEMU's ``qio_channel_writev_full``).  After a ProtocolError from
``recv_frame`` the stream position is unknown: close the connection.  Socket errors (OSError) pass through.
"""

from __future__ import annotations

import array
import errno
import os
import socket
from collections.abc import Sequence

from vfiolab.vfio_user.codec import Message, decode, encode
from vfiolab.vfio_user.protocol import (
    DEFAULT_LIMITS,
    HEADER,
    HEADER_SIZE,
    Header,
    Limits,
    ProtocolError,
    Role,
)

_INT_SIZE = array.array("i").itemsize


def send_frame(sock: socket.socket, data: bytes, fds: Sequence[int] = ()) -> None:
    """Write one encoded message; ``fds`` ride on its first bytes."""
    view = memoryview(data)
    if fds:
        sent = socket.send_fds(sock, [view], list(fds))
        view = view[sent:]
    if view:
        sock.sendall(view)


def send_message(sock: socket.socket, msg: Message) -> None:
    """Encode and write ``msg`` with its fds."""
    data, fds = encode(msg)
    send_frame(sock, data, fds)


def recv_frame(sock: socket.socket, limits: Limits = DEFAULT_LIMITS) -> tuple[bytes, list[int]] | None:
    """Read one whole message and its fds; None if the peer closed the connection between messages.

    Refuses (ProtocolError, after closing any fds received) a msg_size below 16 or above the limit (EINVAL,
    libvfio-user ``tran_sock_recv_fds``), more fds than ``limits.max_msg_fds`` (EFAULT when the kernel had
    to truncate them, as libvfio-user's ``get_msg``; else EINVAL) and a connection closed mid-message
    (ECONNRESET).
    """
    fds: list[int] = []
    try:
        head = _read(sock, HEADER_SIZE, fds, limits, at_boundary=True)
        if head is None:
            return None
        header = Header(*HEADER.unpack(head))
        if not HEADER_SIZE <= header.msg_size <= limits.message_ceiling:
            raise ProtocolError(errno.EINVAL, f"msg_size {header.msg_size} outside "
                                              f"[{HEADER_SIZE}, {limits.message_ceiling}]", header)
        rest = _read(sock, header.msg_size - HEADER_SIZE, fds, limits, at_boundary=False)
        assert rest is not None
        if len(fds) > limits.max_msg_fds:
            raise ProtocolError(errno.EINVAL, f"{len(fds)} file descriptors > max_msg_fds {limits.max_msg_fds}",
                                header)
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return head + rest, fds


def recv_message(sock: socket.socket, role: Role, limits: Limits = DEFAULT_LIMITS) -> Message | None:
    """``recv_frame`` then ``decode``; on a decode error the fds are closed before the error propagates."""
    frame = recv_frame(sock, limits)
    if frame is None:
        return None
    data, fds = frame
    try:
        return decode(data, fds, role=role, limits=limits)
    except ProtocolError:
        for fd in fds:
            os.close(fd)
        raise


def _read(sock: socket.socket, size: int, fds: list[int], limits: Limits, at_boundary: bool) -> bytes | None:
    """Exactly ``size`` bytes (recvmsg_into loop), appending any SCM_RIGHTS fds to ``fds``."""
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    cmsg_space = socket.CMSG_SPACE(max(limits.max_msg_fds, 1) * _INT_SIZE)
    while got < size:
        n, ancdata, msg_flags, _addr = sock.recvmsg_into([view[got:]], cmsg_space)
        for level, kind, cdata in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                arr = array.array("i")
                arr.frombytes(cdata[:len(cdata) - len(cdata) % _INT_SIZE])
                fds.extend(arr)
        if msg_flags & socket.MSG_CTRUNC:
            raise ProtocolError(errno.EFAULT, f"more than max_msg_fds {limits.max_msg_fds} file descriptors "
                                              "arrived; the kernel truncated them")
        if n == 0:
            if got == 0 and at_boundary:
                return None
            raise ProtocolError(errno.ECONNRESET, f"connection closed after {got} of {size} bytes")
        got += n
    return bytes(buf)
