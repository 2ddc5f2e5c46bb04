"""Buffered framing for a long-lived reader: whole messages and their fds from an AF_UNIX stream socket with
one ``recvmsg`` for as many messages as are queued (``transport.recv_frame`` makes two per message).

Which message fds belong to: a sender attaches them to the first bytes of the message that carries them (one
``sendmsg``, as QEMU, libvfio-user and ``transport.send_frame`` do).  Linux's unix stream receive
(net/unix/af_unix.c ``unix_stream_read_generic``) returns the fds of an skb with the first read that touches
it and stops right after that skb, so the fds of one ``recvmsg`` belong to the **last message that starts in
the bytes it returned**.  Frames are then refused exactly as ``transport.recv_frame`` refuses them (msg_size
outside [16, ceiling] is EINVAL, too many fds EINVAL / EFAULT, a close mid-message ECONNRESET), and after any
refusal the stream position is lost: close the connection.
"""

from __future__ import annotations

import array
import collections
import errno
import os
import socket
import struct
from typing import Final

from vfiolab.vfio_user.protocol import HEADER, HEADER_SIZE, Header, Limits, ProtocolError

_INT: Final = array.array("i").itemsize
_MSG_CTRUNC: Final = int(socket.MSG_CTRUNC)  # a plain int: IntFlag arithmetic costs microseconds per message
INITIAL_BUFFER: Final = 64 << 10
_MSG_SIZE: Final = struct.Struct("<I")


class FrameReader:
    """Reads frames (message bytes + fds) from one socket; only one thread may use it at a time."""

    def __init__(self, sock: socket.socket, limits: Limits, bufsize: int = INITIAL_BUFFER) -> None:
        self.sock = sock
        self.limits = limits
        self.buf = bytearray(bufsize)
        self.start = 0
        """Where the next frame begins in ``buf``."""
        self.end = 0
        """End of the bytes received so far."""
        self.base = 0
        """Stream offset of ``buf[0]``."""
        self._cmsg = socket.CMSG_SPACE(max(limits.max_msg_fds, 1) * _INT)
        # (stream offset where a recvmsg began, where it ended, its fds), oldest first
        self._fds: collections.deque[tuple[int, int, list[int]]] = collections.deque()

    def read_frame(self) -> tuple[bytes, list[int]] | None:
        """The next whole message and its fds; None if the peer closed between messages."""
        if self.end - self.start < HEADER_SIZE and not self._have(HEADER_SIZE, at_boundary=True):
            return None
        start = self.start
        (size,) = _MSG_SIZE.unpack_from(self.buf, start + 4)
        if not HEADER_SIZE <= size <= self.limits.message_ceiling:
            header = Header(*HEADER.unpack_from(self.buf, start))
            raise ProtocolError(errno.EINVAL, f"msg_size {size} outside [{HEADER_SIZE}, "
                                              f"{self.limits.message_ceiling}]", header)
        if self.end - start < size:
            self._have(size, at_boundary=False)
            start = self.start
        data = bytes(self.buf[start:start + size])
        self.start = start + size
        if not self._fds:
            return data, []
        begin = self.base + start
        fds = self._take_fds(begin, begin + size)
        if len(fds) > self.limits.max_msg_fds:
            for fd in fds:
                os.close(fd)
            raise ProtocolError(errno.EINVAL, f"{len(fds)} file descriptors > max_msg_fds "
                                              f"{self.limits.max_msg_fds}", Header(*HEADER.unpack_from(data)))
        return data, fds

    @property
    def pending(self) -> int:
        """Bytes received but not yet handed out (a frame may be waiting without any socket activity)."""
        return self.end - self.start

    def close(self) -> None:
        """Close fds received but not handed out."""
        while self._fds:
            for fd in self._fds.popleft()[2]:
                os.close(fd)

    # ------------------------------------------------------------------ internals
    def _take_fds(self, begin: int, end: int) -> list[int]:
        """The fds of the message [begin, end): those of every receive that overlaps it and in which no later
        message starts.  Receives that ended before ``begin`` without an owner (fds not on a message's first
        bytes) are closed."""
        out: list[int] = []
        while self._fds:
            a, b, fds = self._fds[0]
            if b <= begin:
                self._fds.popleft()
                for fd in fds:
                    os.close(fd)
                continue
            if a >= end or b > end:
                break  # a later message starts in that receive: the fds are its own
            self._fds.popleft()
            out.extend(fds)
        return out

    def _have(self, n: int, at_boundary: bool) -> bool:
        """Make ``n`` bytes available from ``start``; False on a clean close between messages."""
        while self.end - self.start < n:
            if self.start + n > len(self.buf):
                self._compact(n)
            got = self._fill()
            if got == 0:
                if at_boundary and self.end == self.start:
                    return False
                raise ProtocolError(errno.ECONNRESET, f"connection closed after {self.end - self.start} of "
                                                      f"{n} bytes of a message")
        return True

    def _compact(self, n: int) -> None:
        pending = self.end - self.start
        if n > len(self.buf):
            new = bytearray(max(n, 2 * len(self.buf)))
            new[:pending] = self.buf[self.start:self.end]
            self.buf = new
        else:
            self.buf[:pending] = self.buf[self.start:self.end]
        self.base += self.start
        self.end = pending
        self.start = 0

    def _fill(self) -> int:
        view = memoryview(self.buf)[self.end:]
        n, ancdata, msg_flags, _addr = self.sock.recvmsg_into([view], self._cmsg)
        fds: list[int] = []
        for level, kind, cdata in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                arr = array.array("i")
                arr.frombytes(cdata[:len(cdata) - len(cdata) % _INT])
                fds.extend(arr)
        if msg_flags & _MSG_CTRUNC:
            for fd in fds:
                os.close(fd)
            raise ProtocolError(errno.EFAULT, f"more than max_msg_fds {self.limits.max_msg_fds} file "
                                              "descriptors arrived; the kernel truncated them")
        if fds:
            at = self.base + self.end
            self._fds.append((at, at + n, fds))
        self.end += n
        return n


def send_bytes(sock: socket.socket, data: bytes, fds: list[int] | tuple[int, ...] = ()) -> None:
    """One frame on a blocking socket, fds on its first bytes (``transport.send_frame`` with one ``send``
    instead of ``sendall`` in the common case of a small frame without fds)."""
    if fds:
        sent = socket.send_fds(sock, [data], list(fds))
    else:
        sent = sock.send(data)
    if sent < len(data):
        sock.sendall(memoryview(data)[sent:])


__all__ = ["FrameReader", "send_bytes"]
