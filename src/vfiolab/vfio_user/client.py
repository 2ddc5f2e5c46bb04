"""A vfio-user client: every command from the client side, for tests, benchmarks and other servers
(libvfio-user's samples, our own server).

The client owns the memory it maps for DMA (:meth:`Client.map_memory`: a memfd, sent with DMA_MAP or kept
back so the server must use messages) and answers the server's DMA_READ / DMA_WRITE from it, as QEMU does
(hw/vfio-user/pci.c ``vfio_user_dma_read/write``: an address outside every mapping is ENODEV, a count beyond
max_data_xfer_size E2BIG).  Two ways to read the socket:

* ``background=True`` (default): a reader thread routes replies to the callers and serves DMA requests at any
  time (needed when a device DMAs through messages while the caller merely waits for an interrupt);
* ``background=False``: the calling thread reads its own reply and serves DMA requests met on the way (no
  thread hand-off per message: the fastest round trips).

A twin socket (``twin_socket=True``) moves the server's DMA requests to a second socket served by its own
thread.  A failed command raises :class:`ServerError` (a ``UapiError`` with the errno the server sent).
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Self

from vfiolab.devices.api import DmaError
from vfiolab.devices.shm import SharedMemory
from vfiolab.errors import UapiError
from vfiolab.vfio_user.codec import Body, Message, decode, encode, error_reply, reply_to, request
from vfiolab.vfio_user.device import DeviceInfo, IoFdsReply, IoFdsRequest, RegionInfo
from vfiolab.vfio_user.dma import DmaBitmap, DmaMap, DmaRead, DmaReadReply, DmaUnmap, DmaWrite, DmaWriteReply
from vfiolab.vfio_user.dma_table import DmaTable
from vfiolab.vfio_user.fastpath import ACCESS, ACCESS_SIZE, decode_access, encode_access
from vfiolab.vfio_user.irq import IrqInfo, IrqSet
from vfiolab.vfio_user.migration import (
    DeviceFeature,
    DmaLoggingControl,
    DmaLoggingRange,
    DmaLoggingReport,
    FeatureData,
    MigData,
    MigDataRead,
    MigState,
    bitmap_size,
)
from vfiolab.vfio_user.protocol import (
    DEVICE_FEATURE_GET,
    DEVICE_FEATURE_SET,
    DMA_MAP_FLAG_READ,
    DMA_MAP_FLAG_WRITE,
    DMA_UNMAP_FLAG_ALL,
    DMA_UNMAP_FLAG_GET_DIRTY_BITMAP,
    FEATURE_DMA_LOGGING_REPORT,
    FEATURE_DMA_LOGGING_START,
    FEATURE_DMA_LOGGING_STOP,
    FEATURE_MIG_DEVICE_STATE,
    PCI_CONFIG_REGION_INDEX,
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
)
from vfiolab.vfio_user.stream import FrameReader, send_bytes
from vfiolab.vfio_user.version import Capabilities, MigrationCaps, TwinSocket, Version

RW: Final = DMA_MAP_FLAG_READ | DMA_MAP_FLAG_WRITE
_READ: Final = int(Command.REGION_READ)
_WRITE: Final = int(Command.REGION_WRITE)


class ServerError(UapiError):
    """The server answered a command with an error reply (``errno`` is what it sent)."""

    def __init__(self, command: Command | int, err: int) -> None:
        name = command.name if isinstance(command, Command) else str(command)
        super().__init__(err, f"the server refused {name}")
        self.command = command


@dataclass
class MappedMemory:
    """Client memory mapped for DMA at ``iova`` (``shm`` holds the bytes; ``sent_fd``: the server got its fd)."""

    iova: int
    shm: SharedMemory
    offset: int
    size: int
    sent_fd: bool


class _Waiter:
    __slots__ = ("event", "reply")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.reply: Message | None = None


def eventfd() -> int:
    """A non-blocking eventfd to hand to SET_IRQS."""
    return os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)


def wait_eventfd(fd: int, timeout: float) -> int:
    """Wait up to ``timeout`` seconds for ``fd`` to be signalled; returns the count read (0: timed out)."""
    r, _, _ = select.select([fd], [], [], timeout)
    if not r:
        return 0
    try:
        return os.eventfd_read(fd)
    except BlockingIOError:
        return 0


class Client:
    """One connection to a vfio-user server."""

    def __init__(self, path: str | socket.socket, *, max_data_xfer_size: int = 1 << 20, max_msg_fds: int = 16,
                 twin_socket: bool = False, write_multiple: bool = False, migration: bool = True,
                 background: bool = True, timeout: float = 10.0, minor: int = 2) -> None:
        if isinstance(path, socket.socket):
            self.sock = path
        else:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                self.sock.connect(path)
            except OSError:
                self.sock.close()
                raise
        self.timeout = timeout
        self.limits = Limits(max_data_xfer_size, max_msg_fds)
        self.reader = FrameReader(self.sock, self.limits)
        self.memory = DmaTable()
        self.mapped: dict[int, MappedMemory] = {}
        self.background = background
        self.closed = False
        self.server_version: Version | None = None
        self.server_caps = Capabilities()
        self.twin: socket.socket | None = None
        self.dma_requests = 0
        self._send_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._pending: dict[int, _Waiter] = {}
        self._stash: dict[int, Message] = {}
        self._lock = threading.Lock()
        self._next_id = 0
        self._threads: list[threading.Thread] = []
        self._proposal = Version(0, minor, Capabilities(
            max_msg_fds=max_msg_fds, max_data_xfer_size=max_data_xfer_size,
            migration=MigrationCaps(pgsize=4096) if migration else None,
            twin_socket=TwinSocket(supported=True) if twin_socket else None,
            write_multiple=True if write_multiple else None))
        # Inline reading waits with SO_RCVTIMEO (one syscall per receive, no select); the background reader
        # blocks without a limit (callers time out on their reply instead).
        self._rcvtimeo(timeout)
        try:
            self._negotiate()
        except BaseException:
            self.close()
            raise
        if background:
            self._rcvtimeo(0)
            self._spawn(self._serve_socket, self.sock, self.reader, "vfio-user-client")

    # ------------------------------------------------------------------ setup and teardown
    def _negotiate(self) -> None:
        reply = self._call_inline(request(Command.VERSION, self._proposal, msg_id=self._alloc_id()))
        body = reply.body
        assert isinstance(body, Version)
        self.server_version = body
        self.server_caps = body.capabilities or Capabilities()
        twin = self.server_caps.twin_socket
        if twin is not None and twin.supported:
            assert twin.fd_index is not None
            self.twin = socket.socket(fileno=reply.fds[twin.fd_index])
            self._spawn(self._serve_socket, self.twin, FrameReader(self.twin, self.limits), "vfio-user-client-twin")
        else:
            for fd in reply.fds:
                os.close(fd)

    def _rcvtimeo(self, seconds: float) -> None:
        whole = int(seconds)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                             struct.pack("@ll", whole, int((seconds - whole) * 1e6)))

    def _spawn(self, target: Any, *args: Any) -> None:
        t = threading.Thread(target=target, args=args[:2], name=args[2], daemon=True)
        self._threads.append(t)
        t.start()

    @property
    def server_xfer(self) -> int:
        """The server's max_data_xfer_size (what a region access may carry)."""
        return self.server_caps.effective_max_data_xfer_size

    def close(self) -> None:
        """Disconnect (the server then drops our DMA mappings and eventfds) and free our memory."""
        if self.closed:
            return
        self.closed = True
        for s in (self.sock, self.twin):
            if s is not None:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(5)
        for s in (self.sock, self.twin):
            if s is not None:
                s.close()
        self._fail_waiters()
        self.memory.close()
        for m in self.mapped.values():
            m.shm.close()
        self.mapped.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ messages
    def _alloc_id(self) -> int:
        with self._lock:
            for _ in range(1 << 16):
                self._next_id = (self._next_id + 1) & 0xFFFF
                if self._next_id not in self._pending and self._next_id not in self._stash:
                    return self._next_id
        raise UapiError(errno.EAGAIN, "no free message id")

    def _send(self, msg: Message, sock: socket.socket | None = None) -> None:
        fast = encode_access(msg)
        data, fds = (fast, []) if fast is not None else encode(msg)
        with self._send_lock:
            send_bytes(sock or self.sock, data, fds)

    def call(self, command: Command, body: Body | None = None, *, fds: Sequence[int] = (),
             no_reply: bool = False) -> Message | None:
        """Send a command; wait for and return its reply (None with ``no_reply``).  ServerError on an error
        reply, UapiError(ECONNRESET) when the server goes away."""
        if self.closed:
            raise UapiError(errno.ENOTCONN, "the client is closed")
        msg = request(command, body, msg_id=self._alloc_id(), no_reply=no_reply, fds=fds)
        if no_reply:
            self._send(msg)
            return None
        if not self.background:
            return self._call_inline(msg)
        waiter = _Waiter()
        with self._lock:
            self._pending[msg.msg_id] = waiter
        try:
            self._send(msg)
            if not waiter.event.wait(self.timeout):
                raise UapiError(errno.ETIMEDOUT, f"no reply to {command.name} in {self.timeout} s")
        finally:
            with self._lock:
                self._pending.pop(msg.msg_id, None)
        return self._checked(msg, waiter.reply)

    def _checked(self, msg: Message, reply: Message | None) -> Message:
        if reply is None:
            raise UapiError(errno.ECONNRESET, f"the server closed the connection (no reply to {msg.command.name})")
        if reply.error is not None:
            for fd in reply.fds:
                os.close(fd)
            raise ServerError(msg.command, reply.error)
        return reply

    def _call_inline(self, msg: Message) -> Message:
        """Send ``msg`` and read the socket on this thread until its reply comes."""
        with self._read_lock:
            self._send(msg)
            deadline = time.monotonic() + self.timeout
            while msg.msg_id not in self._stash:
                if time.monotonic() > deadline:
                    raise UapiError(errno.ETIMEDOUT, f"no reply to {msg.command.name} in {self.timeout} s")
                if not self._receive_one(self.sock, self.reader):  # SO_RCVTIMEO bounds each wait
                    return self._checked(msg, None)
            return self._checked(msg, self._stash.pop(msg.msg_id))

    def poll(self, timeout: float = 0.0) -> int:
        """Without a background thread: serve the server's requests that arrive within ``timeout``."""
        served = 0
        end = time.monotonic() + timeout
        with self._read_lock:
            while True:
                left = max(0.0, end - time.monotonic())
                if not self.reader.pending and not select.select([self.sock], [], [], left)[0]:
                    return served
                before = self.dma_requests
                if not self._receive_one(self.sock, self.reader):
                    return served
                served += self.dma_requests - before

    def _receive_one(self, sock: socket.socket, reader: FrameReader) -> bool:
        """Read one message: stash a reply for its caller, serve a request.  False at the end."""
        frame = self._read_frame(reader)
        if frame is None:
            return False
        self._handle(frame, sock)
        return True

    def _read_frame(self, reader: FrameReader) -> tuple[bytes, list[int]] | None:
        """The next frame; None when the stream ended (or broke); ETIMEDOUT when SO_RCVTIMEO expired."""
        try:
            return reader.read_frame()
        except (BlockingIOError, TimeoutError):  # SO_RCVTIMEO expired (inline reading)
            raise UapiError(errno.ETIMEDOUT, f"the server sent nothing for {self.timeout} s") from None
        except (ProtocolError, OSError):
            return None

    def _handle(self, frame: tuple[bytes, list[int]], sock: socket.socket) -> None:
        try:
            msg = decode_access(frame[0], frame[1], False, self.limits) or decode(
                frame[0], frame[1], role=Role.CLIENT, limits=self.limits)
        except ProtocolError as e:
            for fd in frame[1]:
                os.close(fd)
            h = e.header
            if h is not None and not h.is_reply and not h.no_reply:
                self._send(error_reply(h.command, h.msg_id, e.errno), sock)
            return
        if msg.reply:
            with self._lock:
                waiter = self._pending.get(msg.msg_id)
            if waiter is not None:
                waiter.reply = msg
                waiter.event.set()
            else:
                self._stash[msg.msg_id] = msg
            return
        self._serve_request(msg, sock)

    def _inline_access(self, command: Command, region: int, offset: int, count: int, data: bytes,
                       no_reply: bool) -> bytes | int | None:
        """REGION_READ / REGION_WRITE when this thread reads its own replies: packed and parsed with struct
        (the reply's data, or the count written); any other message met meanwhile is handled as usual."""
        cmd = int(command)
        with self._read_lock:
            msg_id = self._alloc_id()
            try:
                wire = ACCESS.pack(msg_id, cmd, ACCESS_SIZE + len(data), 0x10 if no_reply else 0, 0, offset, region,
                                   count) + data
            except struct.error:
                raise UapiError(errno.EINVAL, f"{command.name}: a field is out of range") from None
            send_bytes(self.sock, wire)
            if no_reply:
                return None
            deadline = time.monotonic() + self.timeout
            while msg_id not in self._stash:
                frame = self._read_frame(self.reader)
                if frame is None:
                    raise UapiError(errno.ECONNRESET, f"the server closed the connection (no reply to "
                                                      f"{command.name})")
                raw, fds = frame
                if not fds and len(raw) >= ACCESS_SIZE:
                    mid, c, size, flags, _err, _off, _reg, n = ACCESS.unpack_from(raw)
                    if mid == msg_id and c == cmd and flags == 1 and size == len(raw):
                        if cmd == _READ and size == ACCESS_SIZE + n:
                            return raw[ACCESS_SIZE:]
                        if cmd == _WRITE and size == ACCESS_SIZE:
                            return n
                self._handle(frame, self.sock)
                if time.monotonic() > deadline:
                    raise UapiError(errno.ETIMEDOUT, f"no reply to {command.name} in {self.timeout} s")
            reply = self._checked(request(command, msg_id=msg_id), self._stash.pop(msg_id))
            body = reply.body
            return body.data if isinstance(body, RegionReadReply) else body.count  # type: ignore[union-attr]

    def _serve_socket(self, sock: socket.socket, reader: FrameReader) -> None:
        while self._receive_one(sock, reader):
            pass
        if sock is self.sock:
            self._fail_waiters()

    def _fail_waiters(self) -> None:
        with self._lock:
            waiters = list(self._pending.values())
        for w in waiters:
            w.event.set()

    # ------------------------------------------------------------------ the server's DMA requests
    def _serve_request(self, msg: Message, sock: socket.socket) -> None:
        """DMA_READ / DMA_WRITE against our mapped memory (QEMU: unmapped is ENODEV)."""
        self.dma_requests += 1
        body = msg.body
        try:
            if isinstance(body, DmaRead):
                reply: Body = DmaReadReply(body.address, self.memory.read(body.address, body.count))
            elif isinstance(body, DmaWrite):
                self.memory.write(body.address, body.data)
                reply = DmaWriteReply(body.address, len(body.data))
            else:
                raise UapiError(errno.ENOSYS, f"unexpected {msg.command.name}")
        except (DmaError, UapiError) as e:
            err = e.errno if isinstance(e, UapiError) else errno.ENODEV
            if not msg.no_reply:
                self._send(error_reply(msg.command, msg.msg_id, err), sock)
            return
        if not msg.no_reply:
            self._send(reply_to(msg, reply), sock)

    # ------------------------------------------------------------------ DMA_MAP / DMA_UNMAP
    def map_memory(self, iova: int, size: int, *, send_fd: bool = True, prot: int = RW,
                   shm: SharedMemory | None = None, offset: int = 0) -> SharedMemory:
        """Make ``size`` bytes of memory (new, or ``shm`` at ``offset``) DMA-visible at ``iova``; with
        ``send_fd`` the server may mmap it, without it the server must use DMA_READ/DMA_WRITE."""
        own = shm is None
        mem = SharedMemory(-(-(offset + size) // 4096) * 4096, f"vfio-user-client-{iova:#x}") if own else shm
        assert mem is not None
        try:
            self.memory.map(iova, size, RW, os.dup(mem.fd), offset)
            try:
                self.dma_map(iova, size, offset=offset, prot=prot, fd=mem.fd if send_fd else -1)
            except BaseException:
                self.memory.unmap(iova, size)
                raise
        except BaseException:
            if own:
                mem.close()
            raise
        self.mapped[iova] = MappedMemory(iova, mem, offset, size, send_fd)
        return mem

    def dma_map(self, iova: int, size: int, *, offset: int = 0, prot: int = RW, fd: int = -1,
                flags: int | None = None) -> None:
        """DMA_MAP as it goes on the wire (``fd`` is sent, not given away)."""
        self.call(Command.DMA_MAP, DmaMap(iova, size, offset, prot if flags is None else flags),
                  fds=[fd] if fd >= 0 else [])

    def unmap_memory(self, iova: int) -> None:
        """DMA_UNMAP what :meth:`map_memory` mapped at ``iova`` and free it."""
        m = self.mapped.pop(iova)
        try:
            self.dma_unmap(iova, m.size)
        finally:
            self.memory.unmap(iova, m.size)
            m.shm.close()

    def dma_unmap(self, iova: int, size: int) -> DmaUnmap:
        reply = self.call(Command.DMA_UNMAP, DmaUnmap(iova, size))
        assert reply is not None and isinstance(reply.body, DmaUnmap)
        return reply.body

    def dma_unmap_all(self) -> None:
        """DMA_UNMAP with FLAG_ALL (libvfio-user)."""
        self.call(Command.DMA_UNMAP, DmaUnmap(0, 0, DMA_UNMAP_FLAG_ALL))

    def dma_unmap_dirty(self, iova: int, size: int, pgsize: int = 4096) -> bytes:
        """DMA_UNMAP with GET_DIRTY_BITMAP: the pages written since logging started; returns the bitmap."""
        n = bitmap_size(size, pgsize)
        body = DmaUnmap(iova, size, DMA_UNMAP_FLAG_GET_DIRTY_BITMAP, 24 + 16 + n, DmaBitmap(pgsize, n))
        reply = self.call(Command.DMA_UNMAP, body)
        assert reply is not None and isinstance(reply.body, DmaUnmap) and reply.body.bitmap is not None
        return reply.body.bitmap.data

    # ------------------------------------------------------------------ device information
    def get_info(self) -> DeviceInfo:
        reply = self.call(Command.DEVICE_GET_INFO, DeviceInfo())
        assert reply is not None and isinstance(reply.body, DeviceInfo)
        return reply.body

    def region_info(self, index: int, argsz: int = 32) -> tuple[RegionInfo, list[int]]:
        """GET_REGION_INFO, asking again with the argsz the server needs (as QEMU does); the fds are ours."""
        reply = self.call(Command.DEVICE_GET_REGION_INFO, RegionInfo(index, argsz))
        assert reply is not None and isinstance(reply.body, RegionInfo)
        if reply.body.argsz > argsz:
            for fd in reply.fds:
                os.close(fd)
            return self.region_info(index, reply.body.argsz)
        return reply.body, list(reply.fds)

    def io_fds(self, index: int, argsz: int = 16) -> tuple[IoFdsReply, list[int]]:
        reply = self.call(Command.DEVICE_GET_REGION_IO_FDS, IoFdsRequest(index, argsz))
        assert reply is not None and isinstance(reply.body, IoFdsReply)
        return reply.body, list(reply.fds)

    def irq_info(self, index: int) -> IrqInfo:
        reply = self.call(Command.DEVICE_GET_IRQ_INFO, IrqInfo(index))
        assert reply is not None and isinstance(reply.body, IrqInfo)
        return reply.body

    def set_irqs(self, index: int, flags: int, start: int = 0, count: int = 0, *, fds: Sequence[int] = (),
                 data: bytes = b"") -> None:
        """DEVICE_SET_IRQS (``fds`` are sent, not given away)."""
        self.call(Command.DEVICE_SET_IRQS, IrqSet(index, flags, start, count, data), fds=fds)

    # ------------------------------------------------------------------ region access
    def region_read(self, region: int, offset: int, count: int) -> bytes:
        if not self.background and not self.closed:
            data = self._inline_access(Command.REGION_READ, region, offset, count, b"", False)
            assert isinstance(data, bytes)
            return data
        reply = self.call(Command.REGION_READ, RegionRead(region, offset, count))
        assert reply is not None and isinstance(reply.body, RegionReadReply)
        return reply.body.data

    def region_write(self, region: int, offset: int, data: bytes, *, no_reply: bool = False) -> None:
        if not self.background and not self.closed:
            self._inline_access(Command.REGION_WRITE, region, offset, len(data), bytes(data), no_reply)
            return
        self.call(Command.REGION_WRITE, RegionWrite(region, offset, bytes(data)), no_reply=no_reply)

    def write_multi(self, writes: Sequence[tuple[int, int, bytes]], *, no_reply: bool = False) -> int | None:
        """REGION_WRITE_MULTI of (region, offset, data <= 8 bytes) writes; the count written (None: no reply)."""
        body = RegionWriteMulti(tuple(RegionWrite(r, o, bytes(d)) for r, o, d in writes))
        reply = self.call(Command.REGION_WRITE_MULTI, body, no_reply=no_reply)
        if reply is None:
            return None
        assert isinstance(reply.body, RegionWriteMultiReply)
        return reply.body.wr_cnt

    def read_int(self, region: int, offset: int, size: int) -> int:
        return int.from_bytes(self.region_read(region, offset, size), "little")

    def write_int(self, region: int, offset: int, size: int, value: int, *, no_reply: bool = False) -> None:
        self.region_write(region, offset, value.to_bytes(size, "little"), no_reply=no_reply)

    def config_read(self, offset: int, size: int) -> int:
        return self.read_int(PCI_CONFIG_REGION_INDEX, offset, size)

    def config_write(self, offset: int, size: int, value: int) -> None:
        self.write_int(PCI_CONFIG_REGION_INDEX, offset, size, value)

    def reset(self) -> None:
        self.call(Command.DEVICE_RESET)

    # ------------------------------------------------------------------ features and migration
    def feature(self, flags: int, data: FeatureData = b"", argsz: int | None = None) -> DeviceFeature:
        reply = self.call(Command.DEVICE_FEATURE, DeviceFeature(flags, data, argsz))
        assert reply is not None and isinstance(reply.body, DeviceFeature)
        return reply.body

    def mig_state(self) -> int:
        data = self.feature(DEVICE_FEATURE_GET | FEATURE_MIG_DEVICE_STATE).data
        assert isinstance(data, MigState)
        return data.device_state

    def set_mig_state(self, state: int) -> None:
        self.feature(DEVICE_FEATURE_SET | FEATURE_MIG_DEVICE_STATE, MigState(state))

    def mig_data_read(self, size: int) -> bytes:
        reply = self.call(Command.MIG_DATA_READ, MigDataRead(size))
        assert reply is not None and isinstance(reply.body, MigData)
        return reply.body.data

    def mig_data_write(self, data: bytes) -> None:
        self.call(Command.MIG_DATA_WRITE, MigData(bytes(data)))

    def save_stream(self, chunk: int | None = None) -> bytes:
        """Read the whole migration stream (until a short read)."""
        chunk = chunk or min(self.server_xfer, self.limits.max_data_xfer_size)
        out = bytearray()
        while True:
            data = self.mig_data_read(chunk)
            out += data
            if len(data) < chunk:
                return bytes(out)

    def load_stream(self, data: bytes, chunk: int | None = None) -> None:
        chunk = chunk or min(self.server_xfer, self.limits.max_data_xfer_size)
        for off in range(0, len(data), chunk):
            self.mig_data_write(data[off:off + chunk])

    def logging_start(self, page_size: int = 4096, ranges: Sequence[tuple[int, int]] = ()) -> None:
        self.feature(DEVICE_FEATURE_SET | FEATURE_DMA_LOGGING_START,
                     DmaLoggingControl(page_size, tuple(DmaLoggingRange(i, n) for i, n in ranges)))

    def logging_stop(self) -> None:
        self.feature(DEVICE_FEATURE_SET | FEATURE_DMA_LOGGING_STOP, DmaLoggingControl(4096))

    def logging_report(self, iova: int, length: int, page_size: int = 4096) -> bytes:
        data = self.feature(DEVICE_FEATURE_GET | FEATURE_DMA_LOGGING_REPORT,
                            DmaLoggingReport(iova, length, page_size)).data
        assert isinstance(data, DmaLoggingReport)
        return data.bitmap


__all__ = ["RW", "Client", "MappedMemory", "ServerError", "eventfd", "wait_eventfd"]
