"""The server's DMA table (lib/dma.c rules) and the buffered frame reader (fd ownership per af_unix.c)."""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterator

import pytest

from vfiolab.devices.api import DmaError
from vfiolab.devices.shm import SharedMemory
from vfiolab.errors import UapiError
from vfiolab.vfio_user import Command, DeviceInfo, IrqSet, Limits, ProtocolError, encode, request
from vfiolab.vfio_user.dma_table import DmaTable
from vfiolab.vfio_user.stream import FrameReader
from vfiolab.vfio_user.transport import send_frame

R, W = 1, 2


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def shm() -> Iterator[SharedMemory]:
    mem = SharedMemory(0x4000, "dma-table-test")
    yield mem
    mem.close()


def test_fd_backed_region_is_the_clients_memory(shm: SharedMemory) -> None:
    t = DmaTable()
    region = t.map(0x10000, 0x2000, R | W, os.dup(shm.fd), 0x1000)
    assert region.direct
    shm.write(0x1000 + 0x10, b"from the client")
    assert t.read(0x10010, 15) == b"from the client"
    t.write(0x10ff0, b"A" * 0x20)  # within the region, across a page boundary
    assert shm.read(0x1000 + 0xff0, 0x20) == b"A" * 0x20
    assert t.direct_bytes == 15 + 0x20
    t.close()


def test_unaligned_file_offset(shm: SharedMemory) -> None:
    t = DmaTable()
    t.map(0x5000, 0x100, R | W, os.dup(shm.fd), 0x1234)
    t.write(0x5000, b"xyz")
    assert shm.read(0x1234, 3) == b"xyz"
    t.close()


def test_fdless_region_goes_through_messages() -> None:
    t = DmaTable()
    t.map(0x1000, 0x1000, R | W)
    calls: list[tuple[str, int, bytes | int]] = []

    def mread(iova: int, n: int) -> bytes:
        calls.append(("r", iova, n))
        return bytes(range(n))

    def mwrite(iova: int, data: memoryview) -> None:
        calls.append(("w", iova, bytes(data)))

    assert t.read(0x1010, 4, mread) == b"\x00\x01\x02\x03"
    t.write(0x1ffe, b"ok", mwrite)
    assert calls == [("r", 0x1010, 4), ("w", 0x1ffe, b"ok")]
    with pytest.raises(DmaError, match="no message path"):
        t.read(0x1000, 1)


def test_access_spanning_adjacent_regions(shm: SharedMemory) -> None:
    t = DmaTable()
    t.map(0x0, 0x1000, R | W, os.dup(shm.fd), 0)
    t.map(0x1000, 0x1000, R | W)
    got: list[tuple[int, int]] = []
    data = t.read(0xff0, 0x20, lambda iova, n: (got.append((iova, n)), b"M" * n)[1])
    assert data == bytes(0x10) + b"M" * 0x10 and got == [(0x1000, 0x10)]
    t.close()


def test_holes_and_permissions(shm: SharedMemory) -> None:
    t = DmaTable()
    t.map(0x1000, 0x1000, R, os.dup(shm.fd))
    with pytest.raises(DmaError, match="not writable"):
        t.write(0x1000, b"x")
    with pytest.raises(DmaError, match="0x2000 is not mapped"):
        t.read(0x1ff0, 0x20)
    with pytest.raises(DmaError, match="not mapped"):
        t.read(0, 1)
    assert t.read(0x1000, 2) == b"\0\0"
    t.close()


def test_map_rules_follow_libvfio_user(shm: SharedMemory) -> None:
    t = DmaTable(max_regions=2)
    first = t.map(0x1000, 0x1000, R | W, os.dup(shm.fd))
    before = open_fds()
    assert t.map(0x1000, 0x1000, R | W, os.dup(shm.fd)) is first  # the same map again: accepted
    assert open_fds() == before  # and the new fd was closed
    for iova, size, off in ((0x1800, 0x1000, 0), (0x0, 0x1001, 0), (0x1000, 0x1000, 0x1000)):
        with pytest.raises(UapiError) as e:
            t.map(iova, size, R | W, os.dup(shm.fd), off)
        assert e.value.errno == errno.EINVAL
    assert open_fds() == before
    t.map(0x3000, 0x1000, R | W)
    with pytest.raises(UapiError, match="full") as e:
        t.map(0x5000, 0x1000, R | W)
    with pytest.raises(UapiError) as e:
        t.map(0x5000, 0, R | W)
    assert e.value.errno == errno.EINVAL
    t.close()


def test_unmap_must_match_exactly(shm: SharedMemory) -> None:
    before = open_fds()
    t = DmaTable()
    t.map(0x1000, 0x2000, R | W, os.dup(shm.fd))
    for iova, size in ((0x1000, 0x1000), (0x2000, 0x1000), (0x0, 0x1000)):
        with pytest.raises(UapiError) as e:
            t.unmap(iova, size)
        assert e.value.errno == errno.ENOENT
    region = t.unmap(0x1000, 0x2000)
    assert not region.mapped and region.fd == -1 and len(t) == 0
    assert open_fds() == before
    t.map(0x1000, 0x1000, R | W, os.dup(shm.fd))
    t.map(0x4000, 0x1000, R | W)
    assert t.unmap_all() == 2 and open_fds() == before


def test_unusable_fds_are_refused(shm: SharedMemory) -> None:
    before = open_fds()
    t = DmaTable()
    with pytest.raises(UapiError, match="past its end"):
        t.map(0x0, 0x5000, R | W, os.dup(shm.fd))  # a SIGBUS waiting to happen
    r, w = os.pipe()
    with pytest.raises(UapiError, match="not a regular file"):
        t.map(0x0, 0x1000, R | W, r)
    os.close(w)
    assert open_fds() == before and len(t) == 0


# ---------------------------------------------------------------------- FrameReader
@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    yield a, b
    a.close()
    b.close()


def test_fds_belong_to_the_message_that_carried_them(pair: tuple[socket.socket, socket.socket]) -> None:
    tx, rx = pair
    efds = [os.eventfd(0) for _ in range(2)]
    info, _ = encode(request(Command.DEVICE_GET_INFO, DeviceInfo(), msg_id=1))
    irqs, fds = encode(request(Command.DEVICE_SET_IRQS, IrqSet(2, 0x24, 0, 2), msg_id=2, fds=efds))
    # Both are queued before the reader looks: one recvmsg returns them together.
    send_frame(tx, info)
    send_frame(tx, irqs, fds)
    send_frame(tx, info)
    reader = FrameReader(rx, Limits())
    first, second, third = (reader.read_frame() for _ in range(3))
    assert first is not None and first == (info, [])
    assert second is not None and second[0] == irqs and len(second[1]) == 2
    assert third is not None and third == (info, [])
    for got, sent in zip(second[1], efds, strict=True):
        os.eventfd_write(got, 5)
        assert os.eventfd_read(sent) == 5
    for fd in second[1] + efds:
        os.close(fd)
    tx.close()
    assert reader.read_frame() is None


def test_frame_errors(pair: tuple[socket.socket, socket.socket]) -> None:
    tx, rx = pair
    reader = FrameReader(rx, Limits(max_data_xfer_size=64), bufsize=32)
    # msg_size above the ceiling (64 + overhead): EINVAL naming the header
    tx.sendall(b"\x07\x00\x09\x00" + (4096).to_bytes(4, "little") + bytes(8))
    with pytest.raises(ProtocolError) as e:
        reader.read_frame()
    assert e.value.errno == errno.EINVAL and e.value.header is not None and e.value.header.msg_id == 7


def test_frame_larger_than_the_buffer_and_close_mid_message(pair: tuple[socket.socket, socket.socket]) -> None:
    tx, rx = pair
    reader = FrameReader(rx, Limits(), bufsize=32)
    msg, _ = encode(request(Command.DEVICE_SET_IRQS, IrqSet(0, 0x22, 0, 100, bytes(100)), msg_id=3))
    send_frame(tx, msg)
    frame = reader.read_frame()
    assert frame is not None and frame[0] == msg
    tx.sendall(msg[:40])
    tx.close()
    with pytest.raises(ProtocolError) as e:
        reader.read_frame()
    assert e.value.errno == errno.ECONNRESET
