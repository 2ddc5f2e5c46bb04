"""The client on its own: against a scripted fake server (raw socket) for what our server never does, and
against our server for the two reading modes.  Client-side checks follow QEMU 11.1 (hw/vfio-user/pci.c:
server DMA outside every mapping is ENODEV; proxy.c: replies matched by msg_id)."""

from __future__ import annotations

import errno
import socket
import threading
from collections.abc import Callable, Iterator

import pytest
import test_vfio_user_server as base
from test_vfio_user_server import open_fds, wait_until

from vfiolab.devices import edu as E
from vfiolab.errors import UapiError
from vfiolab.vfio_user import (
    Capabilities,
    Command,
    DmaRead,
    DmaReadReply,
    DmaWrite,
    DmaWriteReply,
    Message,
    RegionReadReply,
    Role,
    TwinSocket,
    Version,
    decode,
    encode,
    error_reply,
    reply_to,
    request,
)
from vfiolab.vfio_user.client import Client, ServerError
from vfiolab.vfio_user.protocol import Limits
from vfiolab.vfio_user.server import Endpoint
from vfiolab.vfio_user.stream import FrameReader
from vfiolab.vfio_user.transport import send_frame

server, edu = base.server, base.edu  # the fixtures


class FakeServer:
    """The server end of a socketpair, driven by the test: ``expect`` a request, then answer it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = FrameReader(sock, Limits())

    def recv(self) -> Message:
        frame = self.reader.read_frame()
        assert frame is not None
        return decode(frame[0], frame[1], role=Role.SERVER)

    def send(self, msg: Message) -> None:
        data, fds = encode(msg)
        send_frame(self.sock, data, fds)

    def negotiate(self, caps: Capabilities | None = None, fds: list[int] | None = None) -> Message:
        hello = self.recv()
        assert hello.command == Command.VERSION
        self.send(reply_to(hello, Version(0, 2, caps or Capabilities()), fds=fds or []))
        return hello


@pytest.fixture
def fake() -> Iterator[tuple[socket.socket, FakeServer]]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    yield a, FakeServer(b)
    b.close()


def in_thread(fn: Callable[[], object]) -> threading.Thread:
    t = threading.Thread(target=fn, daemon=True)
    t.start()
    return t


def connect(sock: socket.socket, srv: FakeServer, **kw: object) -> Client:
    """A client negotiated with the fake server (which answers from a thread)."""
    t = in_thread(srv.negotiate)
    c = Client(sock, **kw)  # type: ignore[arg-type]
    t.join()
    return c


def test_proposal_and_negotiated_limits(fake: tuple[socket.socket, FakeServer]) -> None:
    sock, srv = fake
    t = in_thread(lambda: srv.negotiate(Capabilities(max_data_xfer_size=4096)))
    c = Client(sock, max_data_xfer_size=8192, max_msg_fds=4, write_multiple=True)
    t.join()
    assert c.server_xfer == 4096 and c.server_caps.max_data_xfer_size == 4096
    assert c._proposal.capabilities.write_multiple is True  # type: ignore[union-attr]
    c.close()


def test_a_refused_version_raises(fake: tuple[socket.socket, FakeServer]) -> None:
    sock, srv = fake

    def refuse() -> None:
        hello = srv.recv()
        srv.send(error_reply(Command.VERSION, hello.msg_id, errno.EBUSY))

    in_thread(refuse)
    with pytest.raises(ServerError) as e:
        Client(sock)
    assert e.value.errno == errno.EBUSY


def test_server_dma_requests_are_served_from_our_memory(fake: tuple[socket.socket, FakeServer]) -> None:
    sock, srv = fake
    c = connect(sock, srv)
    mapped: list[Message] = []
    t = in_thread(lambda: (mapped.append(srv.recv()), srv.send(reply_to(mapped[0]))))
    mem = c.map_memory(0x2000, 0x1000, send_fd=False)
    t.join()
    assert mapped[0].body.address == 0x2000 and not mapped[0].fds  # type: ignore[union-attr]
    mem.write(0x10, b"client bytes")
    srv.send(request(Command.DMA_READ, DmaRead(0x2010, 12), msg_id=77))
    got = srv.recv()
    assert got.msg_id == 77 and got.body == DmaReadReply(0x2010, b"client bytes")
    srv.send(request(Command.DMA_WRITE, DmaWrite(0x2020, b"server"), msg_id=78))
    assert srv.recv().body == DmaWriteReply(0x2020, 6)
    assert mem.read(0x20, 6) == b"server"
    srv.send(request(Command.DMA_READ, DmaRead(0x9000, 4), msg_id=79))  # outside every mapping
    reply = srv.recv()
    assert reply.msg_id == 79 and reply.error == errno.ENODEV
    srv.send(request(Command.DMA_READ, DmaRead(0x2000, 2 << 20), msg_id=80))  # beyond our max_data_xfer_size
    assert srv.recv().error == errno.E2BIG
    c.close()


def test_replies_are_matched_by_msg_id(fake: tuple[socket.socket, FakeServer]) -> None:
    sock, srv = fake
    c = connect(sock, srv)
    results: dict[str, object] = {}
    t1 = in_thread(lambda: results.__setitem__("a", c.read_int(0, 0, 4)))
    t2 = in_thread(lambda: results.__setitem__("b", c.read_int(0, 4, 4)))
    reqs = [srv.recv(), srv.recv()]
    for req in reversed(reqs):  # answered out of order
        body = req.body
        srv.send(reply_to(req, RegionReadReply(body.region, body.offset, body.offset.to_bytes(4, "little"))))  # type: ignore[union-attr]
    t1.join()
    t2.join()
    assert results == {"a": 0, "b": 4}
    c.close()


def test_server_going_away_fails_the_call(fake: tuple[socket.socket, FakeServer]) -> None:
    sock, srv = fake
    c = connect(sock, srv)
    in_thread(lambda: (srv.recv(), srv.sock.shutdown(socket.SHUT_RDWR)))
    with pytest.raises(UapiError) as e:
        c.get_info()
    assert e.value.errno == errno.ECONNRESET
    c.close()


def test_no_answer_times_out(fake: tuple[socket.socket, FakeServer]) -> None:
    sock, srv = fake
    c = connect(sock, srv, timeout=0.2, background=False)
    with pytest.raises(UapiError) as e:
        c.get_info()
    assert e.value.errno == errno.ETIMEDOUT
    c.close()


def test_twin_socket_from_the_server(fake: tuple[socket.socket, FakeServer]) -> None:
    sock, srv = fake
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    t = in_thread(lambda: srv.negotiate(Capabilities(twin_socket=TwinSocket(True, 0)), [theirs.fileno()]))
    c = Client(sock, twin_socket=True)
    t.join()
    theirs.close()
    assert c.twin is not None
    twin = FakeServer(mine)
    twin.send(request(Command.DMA_READ, DmaRead(0x0, 4), msg_id=5))
    assert twin.recv().error == errno.ENODEV  # served on the twin socket
    c.close()
    mine.close()


def test_both_reading_modes_against_our_server(edu: Endpoint) -> None:
    for background in (True, False):
        with Client(edu.path, background=background) as c:
            assert c.read_int(0, E.REG_IDENT, 4) == E.IDENT
            c.write_int(0, E.REG_LIVENESS, 4, 1, no_reply=True)
            assert c.read_int(0, E.REG_LIVENESS, 4) == 0xFFFFFFFE
        wait_until(lambda: edu.owner is None)


def test_unmap_memory_frees_both_sides(edu: Endpoint) -> None:
    before = open_fds()
    with Client(edu.path) as c:
        c.map_memory(0x10000, 0x3000)
        c.unmap_memory(0x10000)
        assert not c.mapped and len(c.memory) == 0
        with pytest.raises(ServerError):
            c.dma_unmap(0x10000, 0x3000)
    wait_until(lambda: edu.owner is None)
    assert open_fds() == before
