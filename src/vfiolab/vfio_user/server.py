"""The vfio-user server: vfiolab devices on UNIX sockets, one listening socket per device.

Threads, not an event loop (the decision this module documents):

* one **acceptor** thread per :class:`Server` waits (``selectors``) on every listening socket;
* one **reader** thread per connection reads, decodes and answers the client's requests in order, and
  routes replies to the server's own DMA requests to whoever waits for them;
* one **worker** thread per device runs the device's deferred work (an edu DMA, a factorial).  When that
  work needs client memory without a mapped fd it sends DMA_READ / DMA_WRITE and waits for the reply with
  the device lock released, so the reader keeps answering the client meanwhile: the server never blocks on
  a reply to its own request while the client may be waiting for one of its own (QEMU offers no twin socket,
  so both directions share the one socket; libvfio-user issue #279).  A DMA a device makes synchronously
  inside a request (on the reader thread) pumps the socket itself, queueing requests that arrive meanwhile.
  With a twin socket (offered to clients that ask) DMA requests and replies travel on it instead.

Robustness: a message the codec refuses gets an error reply (none for No_reply) and the connection goes on;
a frame that cannot be delimited (bad msg_size, a peer that vanished mid-message) closes that connection
only.  When a connection ends, its DMA mappings are unmapped and its eventfds closed; the device keeps its
state for the next client.  One client owns a device at a time: another one is answered EBUSY.  Every
message is logged at DEBUG level (logger ``vfiolab.vfio_user.server``).
"""

from __future__ import annotations

import collections
import errno
import itertools
import logging
import os
import select
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Self

from vfiolab.devices.api import Device, DmaError, NoDmaPort
from vfiolab.errors import UapiError
from vfiolab.vfio_user.codec import Message, decode, encode, error_reply, reply_to, request
from vfiolab.vfio_user.device import DeviceInfo, IoFdsRequest, RegionInfo
from vfiolab.vfio_user.dma import DmaBitmap, DmaMap, DmaRead, DmaReadReply, DmaUnmap, DmaWrite, DmaWriteReply
from vfiolab.vfio_user.dma_table import DmaTable
from vfiolab.vfio_user.fastpath import decode_access, encode_access
from vfiolab.vfio_user.irq import IrqInfo, IrqSet
from vfiolab.vfio_user.migration import DeviceFeature, DmaLoggingReport, MigData, MigDataRead, bitmap_size
from vfiolab.vfio_user.protocol import (
    DEFAULT_MAX_DMA_MAPS,
    DEFAULT_PGSIZES,
    DMA_MAP_FLAG_FILE_IO,
    DMA_UNMAP_FLAG_ALL,
    DMA_UNMAP_FLAG_GET_DIRTY_BITMAP,
    Command,
    Limits,
    ProtocolError,
    Role,
)
from vfiolab.vfio_user.region import (
    RegionRead,
    RegionReadReply,
    RegionWrite,
    RegionWriteMulti,
    RegionWriteMultiReply,
    RegionWriteReply,
)
from vfiolab.vfio_user.server_device import DeviceHost
from vfiolab.vfio_user.stream import FrameReader, send_bytes
from vfiolab.vfio_user.version import Capabilities, MigrationCaps, TwinSocket, Version

log = logging.getLogger(__name__)

_NAMES: Final = {c: c.name for c in Command}
#: The wire version we speak: libvfio-user's (include/libvfio-user.h LIB_VFIO_USER_MAJOR/MINOR).
MAJOR: Final = 0
MINOR: Final = 2


@dataclass(frozen=True)
class ServerOptions:
    """What the server offers in VERSION and how long it waits."""

    max_data_xfer_size: int = 1 << 20
    max_msg_fds: int = 16
    max_dma_maps: int = DEFAULT_MAX_DMA_MAPS
    twin_socket: bool = True
    """Offer a twin socket to a client that asks for one."""
    write_multiple: bool = True
    """Accept REGION_WRITE_MULTI from a client that offers it."""
    dma_timeout: float = 30.0
    """Seconds a DMA request may wait for the client's reply before the device sees a DMA error."""
    busy_wait: float = 2.0
    """Seconds a second client waits for the device to be free before it is answered EBUSY."""


@dataclass
class Stats:
    """What went over one device's sockets (all connections so far)."""

    commands: collections.Counter[str] = field(default_factory=collections.Counter)
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    region_reads: collections.Counter[int] = field(default_factory=collections.Counter)
    """REGION_READ messages per region index (accesses to mmap'd areas never show up here)."""
    region_writes: collections.Counter[int] = field(default_factory=collections.Counter)
    dma_direct_bytes: int = 0
    dma_message_bytes: int = 0
    dma_messages: int = 0
    connections: int = 0
    refused: int = 0


class _Waiter:
    """One outstanding DMA request of the server."""

    __slots__ = ("event", "reply")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.reply: Message | None = None


class _Closed(Exception):
    """The connection ended (or must end) while a message was handled."""


class Endpoint:
    """One device on its listening socket: the device host, its worker thread and its current client."""

    def __init__(self, server: Server, device: Device, path: str, name: str) -> None:
        self.server = server
        self.host = DeviceHost(device)
        self.device = device
        self.path = path
        self.name = name
        self.stats = Stats()
        self.connections: set[Connection] = set()
        self.owner: Connection | None = None
        self.cond = threading.Condition()
        self._kick = threading.Event()
        self._stopping = False
        if os.path.exists(path):
            os.unlink(path)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(8)
        self.listener.setblocking(False)
        self.worker = threading.Thread(target=self._work, name=f"vfio-user-work-{name}", daemon=True)
        self.worker.start()

    # ------------------------------------------------------------------ device work
    def kick(self) -> None:
        """Deferred device work may be waiting: let the worker run it."""
        self._kick.set()

    def _work(self) -> None:
        while True:
            self._kick.wait()
            self._kick.clear()
            if self._stopping:
                return
            try:
                with self.host.locked():
                    self.host.service()
            except Exception:  # a device bug must not take the server down
                log.exception("%s: deferred device work failed", self.name)

    # ------------------------------------------------------------------ ownership
    def claim(self, conn: Connection) -> bool:
        """Make ``conn`` the device's client (waiting a little for a previous one to go away)."""
        deadline = time.monotonic() + self.server.options.busy_wait
        with self.cond:
            while self.owner is not None and self.owner is not conn:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
            self.owner = conn
        with self.host.locked():
            self.device.attach_dma(conn.port)
        return True

    def release(self, conn: Connection) -> None:
        """``conn`` is gone: the device forgets its DMA path and eventfds but keeps its state."""
        with self.cond:
            if self.owner is not conn:
                return
        with self.host.locked():
            self.device.attach_dma(NoDmaPort())
            self.host.irqs.close()
            self.host.tracker.log_stop()  # the logged IOVAs were that client's
        with self.cond:
            self.owner = None
            self.cond.notify_all()

    def accept(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        sock.setblocking(True)
        conn = Connection(self, sock)
        with self.cond:
            self.connections.add(conn)
            self.stats.connections += 1
        conn.start()

    def forget(self, conn: Connection) -> None:
        with self.cond:
            self.connections.discard(conn)

    def close(self) -> None:
        """Stop accepting, end every connection and the worker, remove the socket file."""
        self.listener.close()
        with self.cond:
            conns = list(self.connections)
        for conn in conns:
            conn.shutdown()
        for conn in conns:
            conn.join(5)
        self._stopping = True
        self._kick.set()
        self.worker.join(5)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class ConnectionDmaPort:
    """The device's DMA port while a client is connected: mapped fds directly, messages otherwise."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def dma_read(self, iova: int, length: int, pasid: int | None = None) -> bytes:
        if pasid is not None:
            raise DmaError(iova, length, False, pasid, "vfio-user DMA has no PASID")
        return self.conn.dma.read(iova, length, self.conn.message_read)

    def dma_write(self, iova: int, data: bytes | bytearray | memoryview, pasid: int | None = None) -> None:
        if pasid is not None:
            raise DmaError(iova, len(data), True, pasid, "vfio-user DMA has no PASID")
        self.conn.dma.write(iova, data, self.conn.message_write)


Handler = Callable[["Connection", Message], tuple[Any, list[int]]]


class Connection:
    """One client: its socket(s), its DMA table and the reader thread serving it."""

    _ids = itertools.count()

    def __init__(self, endpoint: Endpoint, sock: socket.socket) -> None:
        self.endpoint = endpoint
        self.host = endpoint.host
        self.sock = sock
        self.opts = endpoint.server.options
        self.name = f"{endpoint.name}#{next(self._ids)}"
        self.limits = Limits(self.opts.max_data_xfer_size, self.opts.max_msg_fds)
        self.reader = FrameReader(sock, self.limits)
        self.dma = DmaTable(self.opts.max_dma_maps)
        self.port = ConnectionDmaPort(self)
        self.negotiated = False
        self.owner = False
        self.client_caps = Capabilities()
        self.client_xfer = self.client_caps.effective_max_data_xfer_size
        self.write_multiple = False
        self.twin: socket.socket | None = None
        self.twin_reader: FrameReader | None = None
        self._twin_lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._pending: dict[int, _Waiter] = {}
        self._pending_lock = threading.Lock()
        self._next_id = 0
        self._backlog: collections.deque[Message] = collections.deque()
        self._closed = False
        self.thread = threading.Thread(target=self._run, name=f"vfio-user-{self.name}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def join(self, timeout: float | None = None) -> None:
        self.thread.join(timeout)

    def shutdown(self) -> None:
        """Make the reader see the end of the stream (from any thread)."""
        for s in (self.sock, self.twin):
            if s is not None:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    # ------------------------------------------------------------------ the reader thread
    def _run(self) -> None:
        log.debug("%s: connected", self.name)
        try:
            while True:
                msg = self._next()
                if msg is None:
                    break
                self._dispatch(msg)
        except _Closed:
            pass
        except OSError as e:
            log.debug("%s: socket error %s", self.name, e)
        except Exception:
            log.exception("%s: connection failed", self.name)
        finally:
            self._teardown()

    def _next(self) -> Message | None:
        """The next message to handle: queued ones first, then from the socket (None at the end)."""
        if self._backlog:
            return self._backlog.popleft()
        while True:
            msg = self._receive()
            if msg is not False:
                return msg  # type: ignore[return-value]

    def _receive(self) -> Message | None | bool:
        """One message from the socket; False after a refused message was answered; None at the end."""
        try:
            frame = self.reader.read_frame()
        except ProtocolError as e:
            # The stream cannot be delimited any more: answer if we know whom, then close.
            log.warning("%s: closing: %s", self.name, e)
            if e.header is not None and not e.header.no_reply and not e.header.is_reply:
                self._send_error(e.header.command, e.header.msg_id, e.errno)
            raise _Closed from None
        if frame is None:
            return None
        data, fds = frame
        try:
            msg = decode_access(data, fds, True, self.limits) or decode(data, fds, role=Role.SERVER,
                                                                        limits=self.limits)
        except ProtocolError as e:
            for fd in fds:
                os.close(fd)
            h = e.header
            log.info("%s: refused message: %s", self.name, e)
            self.endpoint.stats.errors[_cmd_name(h.command if h else 0)] += 1
            if h is not None and not h.no_reply and not (h.is_reply and h.command in (Command.DMA_READ, Command.DMA_WRITE)):
                self._send_error(h.command, h.msg_id, e.errno)
            if not self.negotiated:  # lib/tran.c: a failed negotiation ends the connection
                raise _Closed from None
            return False
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s <- %s", self.name, describe(msg))
        return msg

    def _dispatch(self, msg: Message) -> None:
        if msg.reply:
            self._deliver(msg)
            return
        name = _NAMES[msg.command]
        self.endpoint.stats.commands[name] += 1
        fds = msg.fds
        try:
            if not self.negotiated:
                self._negotiate(msg)
                return
            handler = _HANDLERS.get(msg.command)
            if handler is None:
                raise UapiError(errno.EINVAL, f"{name} is not accepted now")
            fds = ()  # a handler owns the fds it is given (kept or closed, also when it fails)
            with self.host.locked():
                body, out_fds = handler(self, msg)
            if not msg.no_reply:
                self._send(Message(msg.command, msg.msg_id, body, True, False, None, tuple(out_fds)))
        except UapiError as e:
            self.endpoint.stats.errors[name] += 1
            log.info("%s: %s id=%d failed: %s", self.name, name, msg.msg_id, e)
            if not msg.no_reply:
                self._send_error(msg.command, msg.msg_id, e.errno)
        except (_Closed, OSError):
            raise
        except Exception:
            self.endpoint.stats.errors[name] += 1
            log.exception("%s: %s id=%d: internal error", self.name, name, msg.msg_id)
            if not msg.no_reply:
                self._send_error(msg.command, msg.msg_id, errno.EIO)
        finally:
            for fd in fds:
                os.close(fd)
            if self.host.needs_service:
                self.endpoint.kick()

    # ------------------------------------------------------------------ VERSION
    def _negotiate(self, msg: Message) -> None:
        """VERSION first (lib/tran.c recv_version/send_version): major 0, our minor at most the client's,
        our capabilities limited to what the client offered.  Any failure is answered and closes."""
        body = msg.body
        if msg.command != Command.VERSION or not isinstance(body, Version):
            self._send_error(msg.command, msg.msg_id, errno.EINVAL)
            raise _Closed
        caps = body.capabilities or Capabilities()
        err = 0
        if body.major != MAJOR:
            err = errno.EINVAL
        elif caps.migration is not None and caps.migration.pgsize not in (None, DEFAULT_PGSIZES):
            err = errno.EINVAL  # lib/migration.c migration_set_pgsize: only the server's page size
        elif not self.endpoint.claim(self):
            err = errno.EBUSY
            self.endpoint.stats.refused += 1
        if err:
            log.info("%s: VERSION %d.%d refused (%s)", self.name, body.major, body.minor, errno.errorcode[err])
            self._send_error(msg.command, msg.msg_id, err)
            raise _Closed
        self.owner = True
        self.client_caps = caps
        self.client_xfer = caps.effective_max_data_xfer_size
        self.write_multiple = bool(caps.write_multiple) and self.opts.write_multiple
        twin_fd: list[int] = []
        twin_cap = None
        if caps.twin_socket is not None and caps.twin_socket.supported and self.opts.twin_socket \
                and caps.effective_max_msg_fds > 0:
            mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            self.twin = mine
            self.twin_reader = FrameReader(mine, self.limits)
            twin_fd = [theirs.fileno()]
            twin_cap = TwinSocket(True, 0)
        reply = Version(MAJOR, min(body.minor, MINOR), Capabilities(
            max_msg_fds=self.opts.max_msg_fds, max_data_xfer_size=self.opts.max_data_xfer_size,
            max_dma_maps=self.opts.max_dma_maps, pgsizes=DEFAULT_PGSIZES,
            migration=MigrationCaps(pgsize=DEFAULT_PGSIZES) if caps.migration is not None else None,
            twin_socket=twin_cap, write_multiple=True if self.write_multiple else None))
        try:
            self._send(reply_to(msg, reply, fds=twin_fd))
        finally:
            if twin_fd:
                theirs.close()
        self.negotiated = True
        log.info("%s: client speaks %d.%d (max_data_xfer_size %d, max_msg_fds %d%s%s)", self.name, body.major,
                 body.minor, self.client_xfer, caps.effective_max_msg_fds, ", twin socket" if self.twin else "",
                 ", write_multiple" if self.write_multiple else "")

    # ------------------------------------------------------------------ sending
    def _send(self, msg: Message) -> None:
        fast = encode_access(msg)
        data, fds = (fast, []) if fast is not None else encode(msg)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s -> %s", self.name, describe(msg))
        with self._send_lock:
            send_bytes(self.sock, data, fds)

    def _send_error(self, command: int, msg_id: int, err: int) -> None:
        try:
            self._send(error_reply(command, msg_id, err))
        except OSError:
            pass

    # ------------------------------------------------------------------ server -> client DMA
    def _count_message_bytes(self, n: int) -> None:
        self.endpoint.stats.dma_message_bytes += n

    def message_read(self, iova: int, length: int) -> bytes:
        """DMA_READ in chunks the client accepts."""
        out = bytearray()
        chunk = min(self.client_xfer, self.opts.max_data_xfer_size)
        for pos in range(iova, iova + length, chunk):
            n = min(chunk, iova + length - pos)
            reply = self._dma_request(Command.DMA_READ, DmaRead(pos, n))
            body = reply.body
            if not isinstance(body, DmaReadReply) or body.address != pos or len(body.data) != n:
                raise DmaError(iova, length, False, None, f"bad DMA_READ reply for [{pos:#x}, +{n:#x})")
            out += body.data
        self._count_message_bytes(length)
        return bytes(out)

    def message_write(self, iova: int, data: memoryview) -> None:
        """DMA_WRITE in chunks the client accepts."""
        chunk = min(self.client_xfer, self.opts.max_data_xfer_size)
        for off in range(0, len(data), chunk):
            piece = bytes(data[off:off + chunk])
            reply = self._dma_request(Command.DMA_WRITE, DmaWrite(iova + off, piece))
            body = reply.body
            # lib/libvfio-user.c vfu_dma_transfer: the reply must echo address and count.
            if not isinstance(body, DmaWriteReply) or (body.size and (body.address != iova + off
                                                                       or body.count != len(piece))):
                raise DmaError(iova, len(data), True, None, f"bad DMA_WRITE reply at {iova + off:#x}")
        self._count_message_bytes(len(data))

    def _dma_request(self, command: Command, body: DmaRead | DmaWrite) -> Message:
        """Send one DMA request and wait for its reply without stopping the service of the client."""
        write = command == Command.DMA_WRITE
        addr, n = body.address, (len(body.data) if isinstance(body, DmaWrite) else body.count)
        if self._closed:
            raise DmaError(addr, n, write, None, "the client is gone")
        self.endpoint.stats.dma_messages += 1
        if self.twin is not None:
            reply = self._twin_request(command, body)
        else:
            reply = self._socket_request(command, body)
        if reply is None:
            raise DmaError(addr, n, write, None, "the client went away or did not answer")
        if reply.error is not None:
            raise DmaError(addr, n, write, None,
                           f"client answered {errno.errorcode.get(reply.error, reply.error)}")
        return reply

    def _alloc_id(self, waiter: _Waiter | None) -> int:
        with self._pending_lock:
            for _ in range(1 << 16):
                self._next_id = (self._next_id + 1) & 0xFFFF
                if self._next_id not in self._pending:
                    if waiter is not None:
                        self._pending[self._next_id] = waiter
                    return self._next_id
        raise DmaError(0, 0, False, None, "no free message id")

    def _socket_request(self, command: Command, body: DmaRead | DmaWrite) -> Message | None:
        waiter = _Waiter()
        msg_id = self._alloc_id(waiter)
        try:
            self._send(request(command, body, msg_id=msg_id))
            if threading.current_thread() is self.thread:
                self._pump(waiter)
            else:
                with self.host.released():
                    waiter.event.wait(self.opts.dma_timeout)
        except OSError:
            return None
        finally:
            with self._pending_lock:
                self._pending.pop(msg_id, None)
        return waiter.reply

    def _pump(self, waiter: _Waiter) -> None:
        """On the reader thread: read until ``waiter`` is answered, queueing requests that come first."""
        deadline = time.monotonic() + self.opts.dma_timeout
        while not waiter.event.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if not self.reader.pending and not select.select([self.sock], [], [], left)[0]:
                continue
            msg = self._receive()
            if msg is None:
                raise _Closed
            if msg is False:
                continue
            assert isinstance(msg, Message)
            if msg.reply:
                self._deliver(msg)
            else:
                self._backlog.append(msg)

    def _twin_request(self, command: Command, body: DmaRead | DmaWrite) -> Message | None:
        assert self.twin is not None and self.twin_reader is not None
        with self._twin_lock, self.host.released():
            msg_id = self._alloc_id(None)
            data, fds = encode(request(command, body, msg_id=msg_id))
            try:
                self.twin.settimeout(self.opts.dma_timeout)
                send_bytes(self.twin, data, fds)
                while True:
                    frame = self.twin_reader.read_frame()
                    if frame is None:
                        return None
                    msg = decode(frame[0], frame[1], role=Role.SERVER, limits=self.limits)
                    if log.isEnabledFor(logging.DEBUG):
                        log.debug("%s <= %s", self.name, describe(msg))
                    if msg.reply and msg.msg_id == msg_id and msg.command == command:
                        return msg
                    log.warning("%s: unexpected message on the twin socket: %s", self.name, describe(msg))
            except (OSError, ProtocolError) as e:
                log.warning("%s: twin socket failed: %s", self.name, e)
                return None

    def _deliver(self, msg: Message) -> None:
        """A reply from the client: hand it to the DMA request waiting for it."""
        with self._pending_lock:
            waiter = self._pending.get(msg.msg_id)
        if waiter is None or msg.command not in (Command.DMA_READ, Command.DMA_WRITE):
            # libvfio-user answers an unsolicited reply as a bad command (test_request_errors).
            log.info("%s: unsolicited %s reply id=%d", self.name, msg.command.name, msg.msg_id)
            self._send_error(msg.command, msg.msg_id, errno.EINVAL)
            return
        waiter.reply = msg
        waiter.event.set()

    # ------------------------------------------------------------------ the end
    def _teardown(self) -> None:
        self._closed = True
        with self._pending_lock:
            waiters = list(self._pending.values())
        for w in waiters:
            w.event.set()
        n = self.dma.close()
        self.endpoint.stats.dma_direct_bytes += self.dma.direct_bytes
        for m in self._backlog:
            for fd in m.fds:
                os.close(fd)
        self._backlog.clear()
        for s in (self.sock, self.twin):
            if s is not None:
                try:
                    s.close()
                except OSError:
                    pass
        for r in (self.reader, self.twin_reader):
            if r is not None:
                r.close()
        self.endpoint.forget(self)
        if self.owner:  # last: the next client finds everything of this one gone
            self.endpoint.release(self)
        log.debug("%s: closed (%d DMA regions dropped)", self.name, n)


# ---------------------------------------------------------------------- request handlers
def _dma_map(conn: Connection, msg: Message) -> tuple[Any, list[int]]:
    body = msg.body
    assert isinstance(body, DmaMap)
    fd = msg.fds[0] if msg.fds else -1
    # lib/libvfio-user.c handle_dma_map: an fd means direct (mmap) access unless FILE_IO asks for file I/O,
    # which is served through messages here.
    conn.dma.map(body.address, body.size, body.flags & 3, fd, body.offset,
                 direct=not body.flags & DMA_MAP_FLAG_FILE_IO)
    return None, []


def _dma_unmap(conn: Connection, msg: Message) -> tuple[Any, list[int]]:
    body = msg.body
    assert isinstance(body, DmaUnmap)
    if body.flags == DMA_UNMAP_FLAG_ALL:
        conn.dma.unmap_all()
        return body, []
    if body.flags == DMA_UNMAP_FLAG_GET_DIRTY_BITMAP:
        bm = body.bitmap
        assert bm is not None
        # lib/dma.c dma_controller_dirty_page_get: a power-of-two page size and exactly the bitmap it needs.
        if not bm.pgsize or bm.pgsize & (bm.pgsize - 1) or bm.size != bitmap_size(body.size, bm.pgsize):
            raise UapiError(errno.EINVAL, f"dirty bitmap of {bm.size} bytes for {body.size:#x} at {bm.pgsize:#x}")
        bits = conn.host.dirty_bitmap(body.address, body.size, bm.pgsize)
        conn.dma.unmap(body.address, body.size)
        return DmaUnmap(body.address, body.size, body.flags, body.argsz, DmaBitmap(bm.pgsize, bm.size, bits)), []
    conn.dma.unmap(body.address, body.size)
    return body, []


def _device_info(conn: Connection, msg: Message) -> tuple[Any, list[int]]:
    assert isinstance(msg.body, DeviceInfo)
    return conn.host.device_info(msg.body), []


def _region_info(conn: Connection, msg: Message) -> tuple[Any, list[int]]:
    assert isinstance(msg.body, RegionInfo)
    return conn.host.region_info(msg.body)


def _io_fds(conn: Connection, msg: Message) -> tuple[Any, list[int]]:
    assert isinstance(msg.body, IoFdsRequest)
    return conn.host.io_fds(msg.body), []


def _irq_info(conn: Connection, msg: Message) -> tuple[Any, list[int]]:
    assert isinstance(msg.body, IrqInfo)
    return conn.host.irq_info(msg.body), []


def _set_irqs(conn: Connection, msg: Message) -> tuple[Any, list[int]]:
    assert isinstance(msg.body, IrqSet)
    conn.host.set_irqs(msg.body, list(msg.fds))
    return None, []


def _region_read(conn: Connection, msg: Message) -> tuple[Any, list[int]]:
    b = msg.body
    assert isinstance(b, RegionRead)
    conn.endpoint.stats.region_reads[b.region] += 1
    return RegionReadReply(b.region, b.offset, conn.host.region_read(b.region, b.offset, b.count)), []


def _region_write(conn: Connection, msg: Message) -> tuple[Any, list[int]]:
    b = msg.body
    assert isinstance(b, RegionWrite)
    conn.endpoint.stats.region_writes[b.region] += 1
    conn.host.region_write(b.region, b.offset, b.data)
    return RegionWriteReply(b.region, b.offset, len(b.data)), []


def _region_write_multi(conn: Connection, msg: Message) -> tuple[Any, list[int]]:
    b = msg.body
    assert isinstance(b, RegionWriteMulti)
    if not conn.write_multiple:
        raise UapiError(errno.EINVAL, "REGION_WRITE_MULTI was not negotiated (write_multiple)")
    for i, w in enumerate(b.writes):
        conn.endpoint.stats.region_writes[w.region] += 1
        try:
            conn.host.region_write(w.region, w.offset, w.data)
        except UapiError as e:
            raise UapiError(e.errno, f"write {i} of {len(b.writes)}: {e.message}") from None
    return RegionWriteMultiReply(len(b.writes)), []


def _reset(conn: Connection, msg: Message) -> tuple[Any, list[int]]:
    conn.host.reset()
    return None, []


def _feature(conn: Connection, msg: Message) -> tuple[Any, list[int]]:
    body = msg.body
    assert isinstance(body, DeviceFeature)
    if isinstance(body.data, DmaLoggingReport) and body.data.page_size:
        # The bitmap travels in one reply: it must fit a message both ends accept (QEMU bounds it with its
        # max_bitmap_size); a client must not make the server build gigabytes of bitmap.
        need = bitmap_size(body.data.length, body.data.page_size) + 32
        if need > min(conn.client_xfer, conn.opts.max_data_xfer_size):
            raise UapiError(errno.EINVAL, f"DMA_LOGGING_REPORT bitmap of {need - 32} bytes does not fit a message")
    conn.host.default_log_ranges = [(r.iova, r.size) for r in conn.dma]
    return conn.host.feature(body), []


def _mig_data_read(conn: Connection, msg: Message) -> tuple[Any, list[int]]:
    body = msg.body
    assert isinstance(body, MigDataRead)
    if body.size > conn.client_xfer:  # lib/migration.c: the client's transfer size bounds the reply
        raise UapiError(errno.EINVAL, f"MIG_DATA_READ of {body.size} > client max_data_xfer_size")
    return conn.host.mig_data_read(body), []


def _mig_data_write(conn: Connection, msg: Message) -> tuple[Any, list[int]]:
    assert isinstance(msg.body, MigData)
    conn.host.mig_data_write(msg.body)
    return None, []


_HANDLERS: Final[dict[Command, Handler]] = {
    Command.DMA_MAP: _dma_map,
    Command.DMA_UNMAP: _dma_unmap,
    Command.DEVICE_GET_INFO: _device_info,
    Command.DEVICE_GET_REGION_INFO: _region_info,
    Command.DEVICE_GET_REGION_IO_FDS: _io_fds,
    Command.DEVICE_GET_IRQ_INFO: _irq_info,
    Command.DEVICE_SET_IRQS: _set_irqs,
    Command.REGION_READ: _region_read,
    Command.REGION_WRITE: _region_write,
    Command.REGION_WRITE_MULTI: _region_write_multi,
    Command.DEVICE_RESET: _reset,
    Command.DEVICE_FEATURE: _feature,
    Command.MIG_DATA_READ: _mig_data_read,
    Command.MIG_DATA_WRITE: _mig_data_write,
}


# ---------------------------------------------------------------------- the server
class Server:
    """Devices served on UNIX sockets.  ``add`` binds a device's socket at once; ``start`` (a background
    acceptor thread) or ``serve_forever`` accepts clients; ``close`` ends everything."""

    def __init__(self, options: ServerOptions | None = None) -> None:
        self.options = options or ServerOptions()
        self.endpoints: dict[str, Endpoint] = {}
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._thread: threading.Thread | None = None
        self._stop = False
        self._lock = threading.Lock()

    def add(self, device: Device, path: str, name: str | None = None) -> Endpoint:
        """Serve ``device`` on a new socket at ``path``."""
        name = name or device.name
        with self._lock:
            if name in self.endpoints:
                raise UapiError(errno.EEXIST, f"a device named {name!r} is already served")
            ep = Endpoint(self, device, path, name)
            self.endpoints[name] = ep
            self._sel.register(ep.listener, selectors.EVENT_READ, ep)
        os.write(self._wake_w, b"x")
        log.info("serving %s (%04x:%04x) on %s", name, device.function.vendor, device.function.device, path)
        return ep

    def start(self) -> Server:
        """Accept clients on a background thread."""
        self._thread = threading.Thread(target=self.serve_forever, name="vfio-user-acceptor", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Accept clients until :meth:`close`."""
        while not self._stop:
            for key, _ in self._sel.select():
                if key.data is None:
                    os.read(self._wake_r, 4096)
                    continue
                key.data.accept()

    def stop(self) -> None:
        """Make :meth:`serve_forever` return (safe in a signal handler); :meth:`close` still cleans up."""
        self._stop = True
        os.write(self._wake_w, b"x")

    def close(self) -> None:
        """Stop accepting, close every connection and socket file."""
        self.stop()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)
        with self._lock:
            eps = list(self.endpoints.values())
            self.endpoints.clear()
        for ep in eps:
            try:
                self._sel.unregister(ep.listener)
            except (KeyError, ValueError):
                pass
            ep.close()
        self._sel.close()
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------- logging helper
def _cmd_name(command: int) -> str:
    try:
        return Command(command).name
    except ValueError:
        return f"command {command}"


def describe(msg: Message) -> str:
    """One line for the debug log: command, id, kind, flags and the payload (long data abbreviated)."""
    kind = "error" if msg.error is not None else ("reply" if msg.reply else "request")
    text = f"{_cmd_name(msg.command)} {kind} id={msg.msg_id}"
    if msg.no_reply:
        text += " no_reply"
    if msg.error is not None:
        text += f" errno={errno.errorcode.get(msg.error, msg.error)}"
    if msg.body is not None:
        body = repr(msg.body)
        text += " " + (body if len(body) <= 160 else body[:157] + "...")
    if msg.fds:
        text += f" fds={list(msg.fds)}"
    return text


__all__ = ["MAJOR", "MINOR", "Connection", "ConnectionDmaPort", "Endpoint", "Server", "ServerOptions", "Stats",
           "describe"]
