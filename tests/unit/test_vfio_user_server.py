"""Our client against our server: negotiation, request errors, device/region/IRQ information, region access,
interrupts, reset, ownership and robustness.

The checks re-express what libvfio-user's test/py suite asks of its server (test_negotiate,
test_request_errors, test_device_get_info, test_device_get_region_info, test_device_get_irq_info,
test_device_set_irqs, test_irq_trigger), written fresh against our server; expected errno and values come from
lib/libvfio-user.c, lib/irq.c and lib/tran.c, or from vfio-pci (drivers/vfio/pci/vfio_pci_core.c,
vfio_pci_intrs.c) where the server follows the kernel.  The raw socket helper ``Raw`` builds headers by hand.
"""

from __future__ import annotations

import errno
import gc
import json
import logging
import mmap
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from vfiolab.devices import Edu, TestDev
from vfiolab.devices import edu as E
from vfiolab.devices import testdev as T
from vfiolab.pci import regs
from vfiolab.vfio_user import Command, DeviceInfo, Message, RegionInfo, Role, decode, error_reply
from vfiolab.vfio_user.client import Client, ServerError, eventfd, wait_eventfd
from vfiolab.vfio_user.protocol import HEADER, Header, Limits
from vfiolab.vfio_user.server import Endpoint, Server, ServerOptions
from vfiolab.vfio_user.stream import FrameReader

EINVAL = errno.EINVAL
CONFIG = 7


# ---------------------------------------------------------------------- helpers (imported by sibling files)
def wait_until(cond: Callable[[], object], timeout: float = 5.0) -> None:
    """Poll ``cond`` until it is true (device work runs on the server's worker thread)."""
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        time.sleep(0.002)


def open_fds() -> int:
    """Open fds of this process (server included), after collecting garbage that may still hold some."""
    gc.collect()
    return len(os.listdir("/proc/self/fd"))


def le(value: int, size: int) -> bytes:
    return value.to_bytes(size, "little")


def u32(*values: int) -> bytes:
    return b"".join(le(v, 4) for v in values)


class Raw:
    """A client that writes bytes: headers by hand, replies decoded by the codec."""

    def __init__(self, path: str, negotiate: bool = True) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.sock.settimeout(5)
        self.reader = FrameReader(self.sock, Limits())
        if negotiate:
            reply = self.ask(1, le(0, 2) + le(2, 2) + b'{"capabilities": {}}\0')
            assert reply.error is None

    def send(self, cmd: int, payload: bytes = b"", *, msg_id: int = 0x42, flags: int = 0,
             size: int | None = None, fds: list[int] | None = None) -> None:
        total = 16 + len(payload) if size is None else size
        data = HEADER.pack(msg_id, cmd, total, flags, 0) + payload
        if fds:
            socket.send_fds(self.sock, [data], fds)
        else:
            self.sock.sendall(data)

    def recv(self) -> Message | None:
        frame = self.reader.read_frame()
        if frame is None:
            return None
        header = Header(*HEADER.unpack_from(frame[0]))
        if header.is_error:  # also for command numbers the codec does not know
            assert len(frame[0]) == 16 and not frame[1]
            return error_reply(header.command, header.msg_id, header.error)
        return decode(frame[0], frame[1], role=Role.CLIENT)

    def ask(self, cmd: int, payload: bytes = b"", **kw: object) -> Message:
        self.send(cmd, payload, **kw)  # type: ignore[arg-type]
        reply = self.recv()
        assert reply is not None, "the server closed the connection"
        return reply

    def expect(self, err: int, cmd: int, payload: bytes = b"", **kw: object) -> None:
        reply = self.ask(cmd, payload, **kw)
        assert reply.error == err, f"expected {errno.errorcode[err]}, got {reply}"

    def closed(self) -> bool:
        """The server closed its end (after answering what it had to)."""
        try:
            return self.reader.read_frame() is None
        except OSError:
            return True

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server(ServerOptions(busy_wait=0.3, dma_timeout=5.0)).start()
    yield srv
    devices = [ep.device for ep in srv.endpoints.values()]
    srv.close()
    for dev in devices:
        dev.close()


def serve(srv: Server, device: object, tmp: Path, name: str) -> Endpoint:
    return srv.add(device, str(tmp / f"{name}.sock"), name)  # type: ignore[arg-type]


@pytest.fixture
def edu(server: Server, tmp_path: Path) -> Endpoint:
    return serve(server, Edu(), tmp_path, "edu")


@pytest.fixture
def testdev(server: Server, tmp_path: Path) -> Endpoint:
    return serve(server, TestDev(), tmp_path, "testdev")


@pytest.fixture
def client(edu: Endpoint) -> Iterator[Client]:
    c = Client(edu.path)
    yield c
    c.close()


@pytest.fixture
def raw(edu: Endpoint) -> Iterator[Raw]:
    r = Raw(edu.path)
    yield r
    r.close()


# ---------------------------------------------------------------------- negotiation (test_negotiate.py)
def test_negotiation_answers_our_capabilities(edu: Endpoint) -> None:
    r = Raw(edu.path, negotiate=False)
    reply = r.ask(1, le(0, 2) + le(5, 2) + json.dumps({"capabilities": {
        "max_msg_fds": 8, "max_data_xfer_size": 4096, "migration": {"pgsize": 4096},
        "write_multiple": True, "future_key": 1}}).encode() + b"\0")
    body = reply.body
    assert reply.error is None and body.major == 0 and body.minor == 2  # type: ignore[union-attr]
    caps = body.capabilities  # type: ignore[union-attr]
    assert (caps.max_msg_fds, caps.max_data_xfer_size, caps.max_dma_maps, caps.pgsizes) == (16, 1 << 20, 65535, 4096)
    assert caps.migration.pgsize == 4096 and caps.write_multiple is True and caps.twin_socket is None
    r.close()


def test_negotiation_without_json_and_with_an_old_minor(edu: Endpoint) -> None:
    r = Raw(edu.path, negotiate=False)
    body = r.ask(1, le(0, 2) + le(0, 2)).body
    # QEMU 11.1 proposes 0.0: we answer 0.0; no migration / write_multiple unless the client offered them.
    assert body.minor == 0 and body.capabilities.migration is None  # type: ignore[union-attr]
    assert body.capabilities.write_multiple is None  # type: ignore[union-attr]
    r.close()


@pytest.mark.parametrize("cmd, payload", [
    (1, le(0, 2)),  # short write: no minor
    (1, le(1, 2) + le(0, 2)),  # major 1
    (1, le(0, 2) + le(0, 2) + b'{"capabilities": {}}'),  # JSON without its NUL
    (1, le(0, 2) + le(0, 2) + b"{\0"),  # unterminated object
    (1, le(0, 2) + le(0, 2) + b'"\0'),  # unterminated string
    (1, le(0, 2) + le(0, 2) + b'{"capabilities": "23"}\0'),
    (1, le(0, 2) + le(0, 2) + b'{"capabilities": {"max_msg_fds": "8"}}\0'),
    (1, le(0, 2) + le(0, 2) + b'{"capabilities": {"max_msg_fds": -1}}\0'),
    (1, le(0, 2) + le(0, 2) + b'{"capabilities": {"max_msg_fds": 1025}}\0'),
    (1, le(0, 2) + le(0, 2) + b'{"capabilities": {"migration": 1}}\0'),
    (1, le(0, 2) + le(0, 2) + b'{"capabilities": {"migration": {"pgsize": "4096"}}}\0'),
    (1, le(0, 2) + le(0, 2) + b'{"capabilities": {"migration": {"pgsize": 8192}}}\0'),
    (4, u32(16, 0, 0, 0)),  # anything but VERSION first
])
def test_failed_negotiation_is_answered_then_closed(edu: Endpoint, cmd: int, payload: bytes) -> None:
    r = Raw(edu.path, negotiate=False)
    r.expect(EINVAL, cmd, payload)
    assert r.closed()
    r.close()
    with Client(edu.path) as c:  # the device is free for the next client
        assert c.get_info().num_regions == 9


def test_version_again_is_refused(raw: Raw) -> None:
    raw.expect(EINVAL, 1, le(0, 2) + le(2, 2))


# ---------------------------------------------------------------------- request errors (test_request_errors.py)
def test_msg_size_below_the_header_closes(raw: Raw) -> None:
    raw.send(4, u32(16, 0, 0, 0), size=8)
    reply = raw.recv()
    assert reply is not None and reply.error == EINVAL
    assert raw.closed()


def test_msg_size_above_the_limit_closes(raw: Raw) -> None:
    raw.send(10, b"", size=(1 << 20) + 1000)
    reply = raw.recv()
    assert reply is not None and reply.error == EINVAL and reply.command == Command.REGION_WRITE
    assert raw.closed()


def test_refused_messages_are_answered_and_the_connection_goes_on(raw: Raw) -> None:
    raw.expect(EINVAL, 4)  # DEVICE_GET_INFO without payload
    raw.expect(EINVAL, 14, u32(16))  # migration v1's command
    raw.expect(EINVAL, 99, b"junk")  # unknown command, answered with its own number
    raw.expect(EINVAL, 11, le(0, 8) + le(4, 8) + bytes(4), flags=1)  # a DMA_READ reply nobody asked for
    raw.expect(EINVAL, 4, u32(16, 0, 0, 0), flags=0x40)  # unknown header flag
    assert raw.ask(4, u32(16, 0, 0, 0)).error is None


def test_fds_of_a_refused_request_are_closed(raw: Raw) -> None:
    before = open_fds()  # the server runs in this process: its fd table is ours
    efd = eventfd()
    raw.expect(EINVAL, 4, u32(16, 0, 0, 0), fds=[efd])  # GET_INFO carries no fds
    os.close(efd)
    wait_until(lambda: open_fds() == before)


def test_no_reply_is_honoured_also_for_errors(raw: Raw, edu: Endpoint) -> None:
    raw.send(10, le(4, 8) + u32(0, 4) + le(0x1234, 4), flags=0x10, msg_id=1)  # posted write
    raw.send(10, le(4, 8) + u32(9, 4) + le(0, 4), flags=0x10, msg_id=2)  # posted, fails: no answer either
    reply = raw.ask(9, le(4, 8) + u32(0, 4), msg_id=3)
    assert reply.msg_id == 3 and reply.body.data == le(~0x1234 & 0xFFFFFFFF, 4)  # type: ignore[union-attr]
    assert edu.stats.errors["REGION_WRITE"] == 1


# ---------------------------------------------------------------------- device information
def test_device_info(client: Client) -> None:
    info = client.get_info()
    assert (info.argsz, info.flags, info.num_regions, info.num_irqs) == (16, 3, 9, 5)  # PCI | RESET
    with pytest.raises(ServerError) as e:
        client.call(Command.DEVICE_GET_INFO, DeviceInfo(15))  # argsz < 16
    assert e.value.errno == EINVAL


def test_region_info_of_edu(client: Client) -> None:
    sizes = {i: client.region_info(i)[0] for i in range(9)}
    assert sizes[0].size == E.BAR_SIZE and sizes[0].flags == 3  # READ | WRITE, no mmap (registers)
    assert all(sizes[i].size == 0 and sizes[i].flags == 0 for i in (1, 2, 3, 4, 5, 6, 8))
    assert sizes[7].size == 256 and sizes[7].flags == 3  # conventional PCI config space
    with pytest.raises(ServerError) as e:
        client.region_info(9)
    assert e.value.errno == EINVAL


def test_region_info_of_a_mappable_bar_retries_with_argsz(testdev: Endpoint) -> None:
    with Client(testdev.path) as c:
        short = c.call(Command.DEVICE_GET_REGION_INFO, RegionInfo(2, 32))
        assert short is not None and not short.fds
        info = short.body
        # libvfio-user's short reply: argsz = what is needed, CAPS clear, MMAP already set.
        assert info.argsz == 32 + 8 + 8 + 16 and info.flags == 0x7 and info.cap_offset == 0  # type: ignore[union-attr]
        full, fds = c.region_info(2)
        assert full.flags == 0xF and full.size == T.BUF_SIZE and full.cap_offset == 32 and len(fds) == 1
        (cap,) = full.caps
        assert [(a.offset, a.size) for a in cap.areas] == [(0, T.BUF_SIZE)]  # type: ignore[union-attr]
        # the fd is the device's buffer: what we store there the device sees
        mm = mmap.mmap(fds[0], T.BUF_SIZE, offset=full.offset)
        mm[0x100:0x104] = b"WXYZ"
        assert testdev.device.buf.u8[0x100:0x104].tobytes() == b"WXYZ"  # type: ignore[attr-defined]
        mm.close()
        os.close(fds[0])
        bar0, fds0 = c.region_info(0)  # registers + MSI-X table: no mmap
        assert bar0.flags == 3 and not fds0
        assert c.region_info(7)[0].size == 4096  # PCI Express config space
        reply, fds = c.io_fds(2)
        assert (reply.count, reply.argsz, fds) == (0, 16, [])
        with pytest.raises(ServerError):
            c.io_fds(1)  # no such BAR


def test_irq_info(client: Client, testdev: Endpoint) -> None:
    got = [(i.count, i.flags) for i in (client.irq_info(n) for n in range(5))]
    # vfio_pci_core: INTx EVENTFD|MASKABLE|AUTOMASKED; MSI NORESIZE; no ERR on conventional PCI; REQ 1.
    assert got == [(1, 0x7), (1, 0x9), (0, 0x1), (0, 0x9), (1, 0x9)]
    with pytest.raises(ServerError):
        client.irq_info(5)
    with Client(testdev.path) as c:
        assert [c.irq_info(n).count for n in range(5)] == [1, 0, T.MSIX_VECTORS, 1, 1]


# ---------------------------------------------------------------------- region access
def test_edu_registers(client: Client) -> None:
    assert client.read_int(0, E.REG_IDENT, 4) == E.IDENT
    client.write_int(0, E.REG_LIVENESS, 4, 0x12345678)
    assert client.read_int(0, E.REG_LIVENESS, 4) == 0xEDCBA987
    client.write_int(0, E.REG_FACT, 4, 10)
    wait_until(lambda: not client.read_int(0, E.REG_STATUS, 4) & E.STATUS_COMPUTING)
    assert client.read_int(0, E.REG_FACT, 4) == 3628800
    assert client.read_int(0, 0x10, 4) == 0xFFFFFFFF  # nothing there
    assert client.region_read(0, 0, 0) == b""  # count 0 is fine


def test_config_space_through_the_function(client: Client) -> None:
    assert client.config_read(0, 4) == 0x11E81234
    assert client.config_read(regs.INTERRUPT_PIN, 1) == 1
    client.config_write(regs.BASE_ADDRESS_0, 4, 0xFFFFFFFF)  # BAR sizing
    assert client.config_read(regs.BASE_ADDRESS_0, 4) == 0xFFF00000
    client.config_write(regs.COMMAND, 2, regs.COMMAND_MEMORY | regs.COMMAND_MASTER)
    assert client.config_read(regs.COMMAND, 2) == regs.COMMAND_MEMORY | regs.COMMAND_MASTER
    whole = client.region_read(CONFIG, 0, 256)
    assert whole[:4] == le(0x11E81234, 4) and len(whole) == 256


def test_region_access_errors(client: Client) -> None:
    for region, offset, count in ((9, 0, 4), (0, E.BAR_SIZE - 2, 4), (7, 256, 1), (1, 0, 1), (6, 0, 1)):
        with pytest.raises(ServerError) as e:
            client.region_read(region, offset, count)
        assert e.value.errno == EINVAL
    with pytest.raises(ServerError):
        client.region_write(0, E.BAR_SIZE, b"x")


def test_write_multi_needs_negotiation(edu: Endpoint) -> None:
    with Client(edu.path) as c:
        with pytest.raises(ServerError) as e:
            c.write_multi([(0, E.REG_LIVENESS, le(1, 4))])
        assert e.value.errno == EINVAL
    with Client(edu.path, write_multiple=True) as c:
        assert c.write_multi([(0, E.REG_LIVENESS, le(1, 4)), (0, E.REG_STATUS, le(0x80, 4))]) == 2
        assert c.read_int(0, E.REG_LIVENESS, 4) == 0xFFFFFFFE and c.read_int(0, E.REG_STATUS, 4) == 0x80
        assert c.write_multi([(0, E.REG_LIVENESS, le(7, 4))], no_reply=True) is None
        assert c.read_int(0, E.REG_LIVENESS, 4) == 0xFFFFFFF8  # ordered against the read


# ---------------------------------------------------------------------- interrupts
def test_intx_is_automasked_until_unmasked(client: Client) -> None:
    efd = eventfd()
    client.set_irqs(0, 0x24, 0, 1, fds=[efd])  # EVENTFD | TRIGGER
    client.write_int(0, E.REG_IRQ_RAISE, 4, 0x1)
    assert wait_eventfd(efd, 2) == 1
    assert client.config_read(regs.STATUS, 2) & regs.STATUS_INTERRUPT
    client.set_irqs(0, 0x11, 0, 1)  # UNMASK while the line is still high: signalled again
    assert wait_eventfd(efd, 2) == 1
    client.write_int(0, E.REG_IRQ_ACK, 4, 0x1)  # the device lowers the line
    client.set_irqs(0, 0x11, 0, 1)
    assert wait_eventfd(efd, 0.1) == 0
    assert not client.config_read(regs.STATUS, 2) & regs.STATUS_INTERRUPT
    client.set_irqs(0, 0x09, 0, 1)  # MASK
    client.write_int(0, E.REG_IRQ_RAISE, 4, 0x2)
    assert wait_eventfd(efd, 0.1) == 0
    client.set_irqs(0, 0x11, 0, 1)  # unmask: the pending level is delivered
    assert wait_eventfd(efd, 2) == 1
    os.close(efd)


def test_loopback_triggers_and_disable(client: Client) -> None:
    efd = eventfd()
    client.set_irqs(0, 0x24, 0, 1, fds=[efd])
    client.set_irqs(0, 0x21, 0, 1)  # NONE | TRIGGER: signal it
    assert wait_eventfd(efd, 1) == 1
    client.set_irqs(0, 0x22, 0, 1, data=b"\x00")  # BOOL false: nothing
    assert wait_eventfd(efd, 0.05) == 0
    client.set_irqs(0, 0x22, 0, 1, data=b"\x01")
    assert wait_eventfd(efd, 1) == 1
    client.set_irqs(0, 0x21, 0, 0)  # count 0: disable the index
    client.write_int(0, E.REG_IRQ_RAISE, 4, 0x1)
    assert wait_eventfd(efd, 0.05) == 0
    os.close(efd)


def test_msi_vector_of_edu(client: Client, edu: Endpoint) -> None:
    from vfiolab.pci.caps.msi import MsiCap
    cap = next(c for c in edu.device.function.caps.std if isinstance(c, MsiCap))
    efd = eventfd()
    client.set_irqs(1, 0x24, 0, 1, fds=[efd])
    client.config_write(cap.offset + 4, 4, 0xFEE00000)  # address, data, then MSI Enable
    client.config_write(cap.offset + 12, 2, 0x4041)
    client.config_write(cap.offset + 2, 2, 1)
    client.write_int(0, E.REG_IRQ_RAISE, 4, 1)
    assert wait_eventfd(efd, 2) == 1
    assert edu.host.irqs.signals["MSI"] == 1 and edu.host.irqs.signals["INTx"] == 0
    os.close(efd)


def test_msix_vectors_pending_until_assigned_or_unmasked(testdev: Endpoint) -> None:
    with Client(testdev.path) as c:
        cap = testdev.device.irq.msix_cap
        assert cap is not None
        c.config_write(cap.offset + 2, 2, 0x8000)  # MSI-X Enable (QEMU forwards the control word)
        efds = [eventfd() for _ in range(T.MSIX_VECTORS)]
        c.set_irqs(2, 0x24, 0, 2, fds=efds[:2])
        c.write_int(0, T.REG_CTRL, 4, T.CTRL_IRQ_DONE)

        def run(vector: int) -> None:
            c.write_int(0, T.REG_VECTOR, 4, vector)
            c.write_int(0, T.REG_LENGTH, 4, 0)
            c.write_int(0, T.REG_STATUS, 4, T.STATUS_DONE)
            c.write_int(0, T.REG_CMD, 4, T.CMD_READ)
            wait_until(lambda: c.read_int(0, T.REG_STATUS, 4) & T.STATUS_DONE)

        c.config_write(regs.COMMAND, 2, regs.COMMAND_MEMORY | regs.COMMAND_MASTER)
        run(1)
        assert wait_eventfd(efds[1], 2) == 1 and wait_eventfd(efds[0], 0) == 0
        run(3)  # vector 3 has no eventfd yet: held pending, delivered on assignment
        assert wait_eventfd(efds[3], 0.05) == 0
        c.set_irqs(2, 0x24, 3, 1, fds=[efds[3]])
        assert wait_eventfd(efds[3], 2) == 1
        c.set_irqs(2, 0x09, 0, 1)  # NONE | MASK vector 0 (libvfio-user passes masks to the device)
        run(0)
        assert wait_eventfd(efds[0], 0.05) == 0
        c.set_irqs(2, 0x11, 0, 1)  # NONE | UNMASK: the held message goes out
        assert wait_eventfd(efds[0], 2) == 1
        for fd in efds:
            os.close(fd)


# 29 validation cases of test_device_set_irqs.py, re-expressed: (index, flags, start, count, data, nfds)
BAD_SET_IRQS = [
    (5, 0x21, 0, 0, b"", 0),  # index beyond REQ
    (0, 0x21 | 0x10, 0, 1, b"", 0),  # two actions
    (0, 0x23, 0, 1, b"", 0),  # two data types
    (0, 0x21, 1, 1, b"", 0),  # start beyond the count
    (0, 0x21, 0, 2, b"", 0),  # start + count beyond
    (4, 0x09, 0, 1, b"", 0),  # REQ: only TRIGGER
    (4, 0x11, 0, 1, b"", 0),
    (0, 0x21, 1, 0, b"", 0),  # count 0 with start != 0
    (0, 0x09, 0, 0, b"", 0),  # count 0 needs NONE | TRIGGER
    (0, 0x22, 0, 0, b"", 0),
    (0, 0x21, 0, 1, b"", 1),  # fds without DATA_EVENTFD
    (0, 0x24, 0, 1, b"", 2),  # more fds than count
    (0, 0x22, 0, 1, b"\x01\x01", 0),  # BOOL bytes != count
    (3, 0x21, 0, 1, b"", 0),  # ERR on conventional PCI has no vector
    (0, 0x14, 0, 1, b"", 1),  # UNMASK with an eventfd (virqfd) is not modelled
]


@pytest.mark.parametrize("index, flags, start, count, data, nfds", BAD_SET_IRQS)
def test_set_irqs_validation(raw: Raw, index: int, flags: int, start: int, count: int, data: bytes,
                             nfds: int) -> None:
    before = open_fds()
    efds = [eventfd() for _ in range(nfds)]
    raw.expect(EINVAL, 8, u32(20 + len(data), flags, index, start, count) + data, fds=efds)
    for fd in efds:
        os.close(fd)
    wait_until(lambda: open_fds() == before)


def test_set_irqs_refuses_a_non_eventfd(raw: Raw) -> None:
    r, w = os.pipe()
    raw.expect(EINVAL, 8, u32(20, 0x24, 0, 0, 1), fds=[w])
    os.close(r)
    os.close(w)


# ---------------------------------------------------------------------- reset, ownership, robustness
def test_reset_is_a_function_level_reset(client: Client, edu: Endpoint) -> None:
    client.config_write(regs.COMMAND, 2, regs.COMMAND_MASTER)
    client.write_int(0, E.REG_LIVENESS, 4, 0)
    client.reset()
    assert client.config_read(regs.COMMAND, 2) == 0
    assert client.read_int(0, E.REG_LIVENESS, 4) == 0xFFFFFFFF  # edu keeps registers (QEMU's edu has no reset)


def test_one_client_at_a_time(edu: Endpoint, client: Client) -> None:
    r = Raw(edu.path, negotiate=False)
    r.expect(errno.EBUSY, 1, le(0, 2) + le(0, 2))
    assert r.closed()
    r.close()
    assert edu.stats.refused == 1
    assert client.read_int(0, 0, 4) == E.IDENT  # the owner did not notice


def test_state_survives_a_reconnect_mappings_and_eventfds_do_not(edu: Endpoint) -> None:
    before = open_fds()
    c = Client(edu.path)
    c.write_int(0, E.REG_LIVENESS, 4, 0x55)
    c.map_memory(0x10000, 0x1000)
    efd = eventfd()
    c.set_irqs(0, 0x24, 0, 1, fds=[efd])
    c.close()
    os.close(efd)
    wait_until(lambda: edu.owner is None)
    assert open_fds() == before  # mapping, its fd and the eventfd are gone
    with Client(edu.path) as c2:
        assert c2.read_int(0, E.REG_LIVENESS, 4) == ~0x55 & 0xFFFFFFFF


def test_a_client_vanishing_mid_message_leaves_the_others_running(server: Server, tmp_path: Path,
                                                                   edu: Endpoint) -> None:
    other = serve(server, Edu("edu2"), tmp_path, "edu2")
    with Client(other.path) as keeper:
        r = Raw(edu.path)
        shm_fd = os.memfd_create("x")
        os.ftruncate(shm_fd, 4096)
        r.send(2, u32(32, 3) + le(0, 8) + le(0x1000, 8) + le(0x1000, 8), fds=[shm_fd])
        assert r.recv().error is None  # type: ignore[union-attr]
        os.close(shm_fd)
        r.sock.sendall(HEADER.pack(5, 10, 16 + 16 + 64, 0, 0) + le(0, 8))  # half a REGION_WRITE
        r.close()
        wait_until(lambda: edu.owner is None)
        assert keeper.read_int(0, 0, 4) == E.IDENT
    with Client(edu.path) as c:
        assert c.read_int(0, 0, 4) == E.IDENT


def test_every_message_is_logged_at_debug(client: Client, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="vfiolab.vfio_user.server"):
        client.read_int(0, E.REG_IDENT, 4)
    text = caplog.text
    assert "<- REGION_READ request" in text and "-> REGION_READ reply" in text


def test_a_device_bug_is_an_eio_not_a_dead_server(client: Client, edu: Endpoint) -> None:
    def broken(off: int, size: int) -> int:
        raise RuntimeError("device bug")

    region = edu.device.bar(0).regions[0]
    region._read = broken  # type: ignore[attr-defined]
    with pytest.raises(ServerError) as e:
        client.read_int(0, 0, 4)
    assert e.value.errno == errno.EIO
    assert client.get_info().num_irqs == 5

