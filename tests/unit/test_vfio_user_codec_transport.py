"""Framing over real AF_UNIX stream socket pairs: one message per call, fds via SCM_RIGHTS, no fd leaks."""

from __future__ import annotations

import errno
import os
import socket
import threading
from collections.abc import Iterator

import pytest

from vfiolab.vfio_user import (
    Command,
    DeviceInfo,
    DmaMap,
    IrqSet,
    Limits,
    ProtocolError,
    RegionWrite,
    Role,
    encode,
    recv_frame,
    recv_message,
    request,
    send_frame,
    send_message,
)


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    yield a, b
    a.close()
    b.close()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_eventfds_travel_with_set_irqs(pair: tuple[socket.socket, socket.socket]) -> None:
    client, server = pair
    efds = [os.eventfd(0, os.EFD_NONBLOCK) for _ in range(3)]
    try:
        send_message(client, request(Command.DEVICE_SET_IRQS, IrqSet(2, 0x24, 0, 3), msg_id=5, fds=efds))
        msg = recv_message(server, Role.SERVER)
        assert msg is not None and msg.body == IrqSet(2, 0x24, 0, 3) and len(msg.fds) == 3
        for sent, got in zip(efds, msg.fds, strict=True):
            assert got != sent
            os.eventfd_write(got, 1)  # the server raises the interrupt on its copy ...
            assert os.eventfd_read(sent) == 1  # ... and the client's eventfd sees it
            os.close(got)
    finally:
        for fd in efds:
            os.close(fd)


def test_back_to_back_messages_keep_their_own_fds(pair: tuple[socket.socket, socket.socket]) -> None:
    client, server = pair
    r, w = os.pipe()
    try:
        send_message(client, request(Command.DEVICE_GET_INFO, DeviceInfo(), msg_id=1))
        send_message(client, request(Command.DMA_MAP, DmaMap(0, 4096), msg_id=2, fds=[r]))
        send_message(client, request(Command.DEVICE_RESET, msg_id=3, no_reply=True))
        first = recv_message(server, Role.SERVER)
        second = recv_message(server, Role.SERVER)
        third = recv_message(server, Role.SERVER)
        assert first is not None and first.msg_id == 1 and first.fds == ()
        assert second is not None and second.msg_id == 2 and len(second.fds) == 1
        assert third is not None and third.msg_id == 3 and third.no_reply and third.fds == ()
        os.write(w, b"ok")
        assert os.read(second.fds[0], 2) == b"ok"
        os.close(second.fds[0])
    finally:
        os.close(r)
        os.close(w)


def test_a_mebibyte_write_is_one_message(pair: tuple[socket.socket, socket.socket]) -> None:
    """A REGION_WRITE of max_data_xfer_size crosses many socket reads and still comes out whole."""
    client, server = pair
    data = bytes(range(256)) * 4096
    sender = threading.Thread(target=send_message, args=(client, request(Command.REGION_WRITE,
                                                                         RegionWrite(0, 0, data), msg_id=9)))
    sender.start()
    msg = recv_message(server, Role.SERVER)
    sender.join()
    assert msg is not None and msg.body == RegionWrite(0, 0, data)


def test_clean_close_between_messages_is_none(pair: tuple[socket.socket, socket.socket]) -> None:
    client, server = pair
    client.close()
    assert recv_message(server, Role.SERVER) is None


@pytest.mark.parametrize("cut", [3, 16, 30])
def test_close_inside_a_message_is_econnreset(pair: tuple[socket.socket, socket.socket], cut: int) -> None:
    client, server = pair
    wire, _ = encode(request(Command.DEVICE_GET_INFO, DeviceInfo(), msg_id=4))
    client.sendall(wire[:cut])
    client.close()
    with pytest.raises(ProtocolError) as info:
        recv_frame(server)
    assert info.value.errno == errno.ECONNRESET


def test_bad_msg_size_closes_the_fds(pair: tuple[socket.socket, socket.socket]) -> None:
    client, server = pair
    r, w = os.pipe()
    before = open_fds()
    bogus = (7).to_bytes(2, "little") + (2).to_bytes(2, "little") + (8).to_bytes(4, "little") + bytes(8)
    send_frame(client, bogus, [r])
    with pytest.raises(ProtocolError) as info:
        recv_frame(server)
    assert info.value.errno == errno.EINVAL and info.value.header is not None
    assert info.value.header.msg_id == 7
    assert open_fds() == before
    os.close(r)
    os.close(w)


def test_too_many_fds_are_refused_and_closed(pair: tuple[socket.socket, socket.socket]) -> None:
    """More fds than the receiver allows: the kernel truncates (MSG_CTRUNC) -> EFAULT as libvfio-user's get_msg."""
    client, server = pair
    pipes = [os.pipe() for _ in range(3)]
    before = open_fds()
    wire, _ = encode(request(Command.DEVICE_SET_IRQS, IrqSet(2, 0x24, 0, 3), msg_id=1))
    send_frame(client, wire, [p[0] for p in pipes])
    with pytest.raises(ProtocolError) as info:
        recv_frame(server, Limits(max_msg_fds=2))
    assert info.value.errno == errno.EFAULT
    assert open_fds() == before
    for p in pipes:
        os.close(p[0])
        os.close(p[1])


def test_decode_refusal_closes_the_fds(pair: tuple[socket.socket, socket.socket]) -> None:
    client, server = pair
    r, w = os.pipe()
    before = open_fds()
    wire, _ = encode(request(Command.DEVICE_GET_INFO, DeviceInfo(), msg_id=11))
    send_frame(client, wire, [r])  # GET_INFO must not carry fds
    with pytest.raises(ProtocolError) as info:
        recv_message(server, Role.SERVER)
    assert info.value.errno == errno.EINVAL and info.value.header is not None
    assert info.value.header.command == Command.DEVICE_GET_INFO
    assert open_fds() == before
    os.close(r)
    os.close(w)
