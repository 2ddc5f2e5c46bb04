"""Fuzzing the server's message handling over real sockets.

Each example opens a connection to a served edu (or testdev) and sends a random sequence: plausible requests
with random fields (small numbers, so they reach the device: region accesses, DMA maps with real memfds,
SET_IRQS with real eventfds, features, migration data, resets), mutated or truncated encodings, random bytes,
requests with stray fds, and sometimes it stops mid-message.  Properties: the server never fails
internally (no ERROR log record), answers or closes, drops everything a connection held when it goes (no fd
leak), and keeps serving: a connection to another device stays usable throughout and a new client of the
fuzzed device is served afterwards.
"""

from __future__ import annotations

import gc
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vfiolab.devices import Edu, TestDev
from vfiolab.vfio_user import (
    Command,
    DeviceFeature,
    DeviceInfo,
    DmaMap,
    DmaUnmap,
    IoFdsRequest,
    IrqInfo,
    IrqSet,
    MigData,
    MigDataRead,
    RegionInfo,
    RegionRead,
    RegionWrite,
    RegionWriteMulti,
    encode,
    request,
)
from vfiolab.vfio_user.client import Client
from vfiolab.vfio_user.server import Endpoint, Server, ServerOptions

small = st.integers(0, 0x1FF)
offset = st.one_of(st.integers(0, 0x120), st.sampled_from([0x2000, 0x3000, 0x40000, 0xFFFF8, 0x100000, 1 << 63]))
region = st.integers(0, 10)
data = st.binary(max_size=40)
TWIN_JSON = b'{"capabilities": {"twin_socket": {"supported": true}, "write_multiple": true, "max_msg_fds": 4}}'


def version(minor: int, js: bytes | None) -> bytes:
    """VERSION 0.minor with the JSON (NUL-terminated) or none, msg_id 1."""
    payload = (0).to_bytes(2, "little") + minor.to_bytes(2, "little") + (js + b"\0" if js is not None else b"")
    return b"".join(v.to_bytes(n, "little") for v, n in ((1, 2), (1, 2), (16 + len(payload), 4), (0, 4), (0, 4))) \
        + payload


@st.composite
def plausible(draw: st.DrawFn) -> tuple[bytes, str]:
    """An encoded request with random but mostly meaningful fields, and what fds to attach."""
    kind = draw(st.sampled_from(["read", "write", "multi", "info", "rinfo", "iofds", "irqinfo", "setirqs",
                                 "map", "unmap", "feature", "migread", "migwrite", "reset", "cfgwrite"]))
    fds = "none"
    no_reply = draw(st.booleans()) and draw(st.booleans())
    if kind == "read":
        body = RegionRead(draw(region), draw(offset), draw(st.sampled_from([0, 1, 2, 4, 8, 16, 300, 4096])))
    elif kind in ("write", "cfgwrite"):
        body = RegionWrite(7 if kind == "cfgwrite" else draw(region), draw(offset), draw(data))
    elif kind == "multi":
        body = RegionWriteMulti(tuple(RegionWrite(draw(region), draw(offset), draw(st.binary(max_size=8)))
                                      for _ in range(draw(st.integers(0, 4)))))
    elif kind == "info":
        body = DeviceInfo(draw(st.sampled_from([15, 16, 64])))
    elif kind == "rinfo":
        body = RegionInfo(draw(region), draw(st.sampled_from([32, 40, 64, 80, 4096])))
    elif kind == "iofds":
        body = IoFdsRequest(draw(region), draw(st.sampled_from([16, 56, 4096])))
    elif kind == "irqinfo":
        body = IrqInfo(draw(st.integers(0, 6)))
    elif kind == "setirqs":
        count = draw(st.integers(0, 5))
        flags = draw(st.sampled_from([0x24, 0x21, 0x22, 0x09, 0x11, 0x0A, 0x12, 0x14, 0x25]))
        body = IrqSet(draw(st.integers(0, 5)), flags, draw(st.integers(0, 4)), count,
                      bytes(draw(st.lists(st.integers(0, 1), min_size=count, max_size=count)))
                      if flags & 2 else b"")
        fds = f"eventfd:{count}" if flags & 4 and draw(st.booleans()) else "none"
    elif kind == "map":
        body = DmaMap(draw(st.sampled_from([0, 0x1000, 0x8000, 0x100000])), draw(st.sampled_from(
            [0, 0x1000, 0x2000, 0x10000, 1 << 40])), draw(st.sampled_from([0, 0x1000, 0x123])),
            draw(st.integers(0, 15)))
        fds = draw(st.sampled_from(["memfd", "none", "memfd", "eventfd:1"]))
    elif kind == "unmap":
        body = DmaUnmap(draw(st.sampled_from([0, 0x1000, 0x100000])), draw(st.sampled_from([0, 0x1000, 0x10000])),
                        draw(st.sampled_from([0, 2])))
    elif kind == "feature":
        op = draw(st.sampled_from([1 << 16, 1 << 17, 1 << 18, 3 << 16 | 1 << 18]))
        feat = draw(st.sampled_from([1, 2, 6, 7, 8, 9, 12]))
        payload = draw(st.sampled_from([b"", (1).to_bytes(4, "little") + bytes(4),
                                        (2).to_bytes(4, "little") + bytes(4), (3).to_bytes(4, "little") + bytes(4),
                                        (4096).to_bytes(8, "little") + bytes(8),
                                        (0x100000).to_bytes(8, "little") + (0x10000).to_bytes(8, "little")
                                        + (4096).to_bytes(8, "little")]))
        body = DeviceFeature(op | feat, payload, draw(st.sampled_from([None, 8, 16, 64])))
    elif kind == "migread":
        body = MigDataRead(draw(st.sampled_from([0, 16, 4096, 1 << 20])))
    elif kind == "migwrite":
        body = MigData(draw(data))
    else:
        body = None
    command = {"read": Command.REGION_READ, "write": Command.REGION_WRITE, "cfgwrite": Command.REGION_WRITE,
               "multi": Command.REGION_WRITE_MULTI, "info": Command.DEVICE_GET_INFO,
               "rinfo": Command.DEVICE_GET_REGION_INFO, "iofds": Command.DEVICE_GET_REGION_IO_FDS,
               "irqinfo": Command.DEVICE_GET_IRQ_INFO, "setirqs": Command.DEVICE_SET_IRQS,
               "map": Command.DMA_MAP, "unmap": Command.DMA_UNMAP, "feature": Command.DEVICE_FEATURE,
               "migread": Command.MIG_DATA_READ, "migwrite": Command.MIG_DATA_WRITE,
               "reset": Command.DEVICE_RESET}[kind]
    wire, _ = encode(request(command, body, msg_id=draw(st.integers(0, 0xFFFF)), no_reply=no_reply))
    return wire, fds


@st.composite
def message(draw: st.DrawFn, framing: bool = True) -> tuple[bytes, str]:
    """A plausible request or a damaged one (random fields, a random header, stray fds); with ``framing``
    also damage that breaks the stream (a lying msg_size, truncation, random bytes), which ends the
    connection and is therefore only drawn last."""
    wire, fds = draw(plausible())
    kinds = ["as is"] * 8 + ["flip", "header", "stray fds"] + (["truncate", "size", "junk"] if framing else [])
    how = draw(st.sampled_from(kinds))
    if how == "flip":  # payload bytes only: the frame stays whole
        b = bytearray(wire)
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(12, len(b) - 1))
            b[i] = draw(st.integers(0, 255))
        wire = bytes(b)
    elif how == "truncate":
        wire = wire[:draw(st.integers(0, len(wire)))]
    elif how == "size":  # msg_size lies about the payload
        wire = wire[:4] + (len(wire) + draw(st.integers(-16, 64))).to_bytes(4, "little", signed=True) + wire[8:]
    elif how == "header":
        payload = draw(st.binary(max_size=64))
        wire = b"".join(v.to_bytes(n, "little") for v, n in ((draw(st.integers(0, 0xFFFF)), 2),
                        (draw(st.integers(0, 20)), 2), (16 + len(payload), 4),
                        (draw(st.sampled_from([0, 1, 0x10, 0x11, 0x20, 0x21, 0x40])), 4), (0, 4))) + payload
    elif how == "junk":
        wire = draw(st.binary(min_size=1, max_size=48))
    elif how == "stray fds":
        fds = "eventfd:1"
    return wire, fds


def make_fds(spec: str) -> list[int]:
    if spec == "memfd":
        fd = os.memfd_create("fuzz")
        os.ftruncate(fd, 0x10000)
        return [fd]
    if spec.startswith("eventfd:"):
        return [os.eventfd(0) for _ in range(int(spec.split(":")[1]))]
    return []


class ErrorRecords(logging.Handler):
    """Collects ERROR records of the server (an internal failure, never a refused message)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, Endpoint], Client, ErrorRecords, int]]:
    errors = ErrorRecords()
    logger = logging.getLogger("vfiolab.vfio_user")
    logger.addHandler(errors)
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    server = Server(ServerOptions(busy_wait=2.0, dma_timeout=0.5)).start()
    eps = {"edu": server.add(Edu("edu"), str(tmp / "edu.sock")),
           "testdev": server.add(TestDev("testdev"), str(tmp / "testdev.sock")),
           "keeper": server.add(Edu("keeper"), str(tmp / "keeper.sock"))}
    keeper = Client(eps["keeper"].path)
    gc.collect()
    yield server, eps, keeper, errors, len(os.listdir("/proc/self/fd"))
    keeper.close()
    server.close()
    for ep in eps.values():
        ep.device.close()
    logger.removeHandler(errors)


def drain(sock: socket.socket) -> None:
    """Read whatever the server answered so far (so its replies never fill the socket)."""
    try:
        while sock.recv(65536, socket.MSG_DONTWAIT):
            pass
    except (BlockingIOError, InterruptedError, ConnectionResetError, BrokenPipeError):
        pass


# derandomize: the follow-up test asserts the fuzzer reached the handlers; a fixed example set keeps
# that check stable run to run (the examples still cover every command family).
@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(target=st.sampled_from(["edu", "testdev"]), negotiate=st.sampled_from([True, True, True, False]),
       json_caps=st.sampled_from([b'{"capabilities": {}}', None, TWIN_JSON]),
       messages=st.lists(message(framing=False), min_size=8, max_size=40), last=message(), tail=st.binary(max_size=20))
def test_server_survives_anything(rig: tuple[Server, dict[str, Endpoint], Client, ErrorRecords, int], target: str,
                                  negotiate: bool, json_caps: bytes | None, messages: list[tuple[bytes, str]],
                                  last: tuple[bytes, str], tail: bytes) -> None:
    _, eps, keeper, errors, _ = rig
    ep = eps[target]
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(ep.path)
    try:
        if negotiate:
            sock.sendall(version(2, json_caps))
        for wire, spec in [*messages, last]:
            fds = make_fds(spec)
            try:
                if fds:
                    socket.send_fds(sock, [wire], fds)
                else:
                    sock.sendall(wire)
            except (BrokenPipeError, ConnectionResetError):
                break  # the server closed this connection: allowed
            finally:
                for fd in fds:
                    os.close(fd)
            drain(sock)
        if tail:
            try:
                sock.sendall(tail)  # perhaps half a message: the client vanishes mid-message
            except (BrokenPipeError, ConnectionResetError):
                pass
    finally:
        sock.close()
    deadline = time.monotonic() + 5
    while (ep.owner is not None or ep.connections) and time.monotonic() < deadline:
        time.sleep(0.002)
    assert ep.owner is None and not ep.connections, "the connection was not torn down"
    assert not errors.records, [r.getMessage() for r in errors.records]
    assert keeper.get_info().num_regions == 9  # another device's client never noticed


def test_after_fuzzing_the_devices_are_served_and_nothing_leaked(
        rig: tuple[Server, dict[str, Endpoint], Client, ErrorRecords, int]) -> None:
    _, eps, _, errors, before = rig
    for name in ("edu", "testdev"):
        with Client(eps[name].path) as c:
            assert c.get_info().num_irqs == 5
            c.reset()  # leave migration states the fuzzer reached
            assert c.config_read(0, 2) == 0x1234
        assert eps[name].stats.connections > 0
    deadline = time.monotonic() + 5
    while any(e.connections for e in (eps["edu"], eps["testdev"])) and time.monotonic() < deadline:
        time.sleep(0.01)
    # every fd the fuzzer sent (memfds, eventfds) and every connection it made is gone
    gc.collect()
    assert len(os.listdir("/proc/self/fd")) == before
    assert not errors.records
    assert sum(len(e.connections) for e in eps.values()) == 1  # the keeper
    # the fuzzer got past negotiation into the handlers, and many requests were refused there.  How far
    # each connection gets depends on thread timing (a damaged frame closes it, dropping what follows),
    # so the counts vary run to run: check both devices together, with a margin.
    commands = eps["edu"].stats.commands + eps["testdev"].stats.commands
    refused = eps["edu"].stats.errors + eps["testdev"].stats.errors
    assert len(commands) >= 8 and sum(refused.values()) >= 15, (commands, refused)
