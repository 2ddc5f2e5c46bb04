"""The live-migration scenario's building blocks on their own: the migration channel (framing, and a
clean error for every malformed or cut stream), the device pre-copy driver (full image, deltas of changed
chunks, EINVAL for a stream that does not fit) checked with a real testdev moved through the vfio
migration FSM, and guest-RAM page fingerprints."""

from __future__ import annotations

import errno
import hashlib
import socket
import struct
from collections.abc import Iterator

import numpy as np
import pytest

from vfiolab.devices import TestDev
from vfiolab.devices import testdev as T
from vfiolab.errors import UapiError, VfiolabError
from vfiolab.memory import PhysMemory, UserProcess
from vfiolab.scenarios import devmig
from vfiolab.scenarios.devmig import StatePrecopy
from vfiolab.scenarios.guestram import GuestRam, fingerprints
from vfiolab.scenarios.machine import TESTDEV_MIG
from vfiolab.scenarios.wire import MAGIC, Channel, Msg, parse_device, parse_json, parse_pages
from vfiolab.vfio.migration import MigState, VfioMigration


# ---------------------------------------------------------------------- the channel
@pytest.fixture
def pair() -> Iterator[tuple[Channel, Channel, socket.socket]]:
    a, b = socket.socketpair()
    ca, cb = Channel(a, timeout=5), Channel(b, timeout=5)
    yield ca, cb, a
    ca.close()
    cb.close()


def test_messages_round_trip(pair: tuple[Channel, Channel, socket.socket]) -> None:
    src, dst, _ = pair
    idx = np.array([3, 0, 7], dtype=np.int64)
    pages = np.random.default_rng(1).integers(0, 256, (3, 4096), dtype=np.uint8)
    src.send_pages(idx, pages)
    src.send_device(1, b"state bytes")
    src.send_json(Msg.VERIFY, {"a": [1, 2]}, b"\x01\x02")
    kind, payload = dst.recv()
    got_idx, got_pages = parse_pages(payload, 8)
    assert kind == Msg.RAM and got_idx.tolist() == [3, 0, 7] and np.array_equal(got_pages, pages)
    assert parse_device(dst.expect(Msg.DEVICE), 2) == (1, b"state bytes")
    assert parse_json(dst.expect(Msg.VERIFY)) == ({"a": [1, 2]}, b"\x01\x02")
    assert src.bytes_sent == dst.bytes_received


def test_peer_closing_mid_message_is_a_clean_error(pair: tuple[Channel, Channel, socket.socket]) -> None:
    _, dst, raw = pair
    raw.sendall(struct.pack("<4sHHQ", MAGIC, Msg.RAM, 0, 100) + b"x" * 10)
    raw.shutdown(socket.SHUT_WR)
    with pytest.raises(VfiolabError, match=r"closed by the peer \(10 of 100 bytes"):
        dst.recv()


@pytest.mark.parametrize(("header", "match"), [
    (struct.pack("<4sHHQ", b"XXXX", 1, 0, 0), "bad message header"),
    (struct.pack("<4sHHQ", MAGIC, 1, 1, 0), "bad message header"),
    (struct.pack("<4sHHQ", MAGIC, 77, 0, 0), "unknown message type 77"),
    (struct.pack("<4sHHQ", MAGIC, 3, 0, 1 << 40), "too large"),
])
def test_bad_headers(pair: tuple[Channel, Channel, socket.socket], header: bytes, match: str) -> None:
    _, dst, raw = pair
    raw.sendall(header)
    with pytest.raises(VfiolabError, match=match):
        dst.recv()


def test_expect_reports_the_peers_error_and_wrong_types(pair: tuple[Channel, Channel, socket.socket]) -> None:
    src, dst, _ = pair
    src.send_error("no memory for guest RAM")
    with pytest.raises(VfiolabError, match="peer failed: no memory for guest RAM"):
        dst.expect(Msg.READY)
    src.send(Msg.BYE)
    with pytest.raises(VfiolabError, match="expected READY, got BYE"):
        dst.expect(Msg.READY)


@pytest.mark.parametrize(("payload", "match"), [
    (b"\x01", "without a page count"),
    (struct.pack("<Q", 2) + bytes(8 + 4096), "for 2 pages"),
    (struct.pack("<QQ", 1, 9) + bytes(4096), "page 9 beyond guest RAM"),
])
def test_bad_ram_payloads(payload: bytes, match: str) -> None:
    with pytest.raises(VfiolabError, match=match):
        parse_pages(payload, 8)


def test_bad_device_and_json_payloads() -> None:
    with pytest.raises(VfiolabError, match="for device 2 of 2"):
        parse_device(struct.pack("<HHI", 2, 0, 0), 2)
    with pytest.raises(VfiolabError, match="without its header"):
        parse_device(b"\0", 2)
    with pytest.raises(VfiolabError, match="JSON of 50 bytes"):
        parse_json(struct.pack("<I", 50) + b"{}")
    with pytest.raises(VfiolabError, match="not an object"):
        parse_json(struct.pack("<I", 2) + b"[]")
    with pytest.raises(VfiolabError, match="bad JSON"):
        parse_json(struct.pack("<I", 1) + b"{")


# ---------------------------------------------------------------------- device pre-copy
def _busy(dev: TestDev, seed: int) -> None:
    """Change testdev's state the way a guest does: buffer contents and registers."""
    rng = np.random.default_rng(seed)
    off = int(rng.integers(0, T.BUF_SIZE - 300))
    dev.buf.u8[off:off + 300] = rng.integers(0, 256, 300, dtype=np.uint8)
    dev.bar_write(T.REGS_BAR, T.REG_LENGTH, 4, 300)


def test_precopy_stream_rebuilds_the_device_through_the_fsm() -> None:
    src_dev, dst_dev = TestDev(), TestDev()
    src = VfioMigration(StatePrecopy(src_dev), TESTDEV_MIG)
    f = src.set_state(MigState.PRE_COPY)
    assert f is not None
    stream = bytearray(f.read(1 << 20))
    assert len(stream) > T.BUF_SIZE  # the initial image carries the whole state
    with pytest.raises(UapiError) as e:
        f.read(1 << 20)
    assert e.value.errno == errno.ENOMSG  # nothing changed since
    _busy(src_dev, 1)
    info = f.precopy_info()
    dirty = f.read(1 << 20)
    assert info.initial_bytes == 0 and info.dirty_bytes == len(dirty)
    assert 300 < len(dirty) < 4 * devmig.CHUNK  # a delta of a few chunks, not the whole state
    stream += dirty
    _busy(src_dev, 2)
    src.set_state(MigState.PRE_COPY_P2P)
    src.set_state(MigState.STOP_COPY)
    while chunk := f.read(1 << 16):
        stream += chunk
    dst = VfioMigration(StatePrecopy(dst_dev), TESTDEV_MIG)
    rf = dst.set_state(MigState.RESUMING)
    assert rf is not None
    rf.write(stream)
    dst.set_state(MigState.STOP)
    assert dst_dev.save_state() == src_dev.save_state()
    assert dst_dev.bar_read(T.REGS_BAR, T.REG_LENGTH, 4) == 300


def test_state_images_that_do_not_fit_are_einval() -> None:
    src = StatePrecopy(TestDev())
    full = src.precopy_start()
    _busy(src.device, 3)
    delta = src.precopy_dirty()
    fresh = StatePrecopy(TestDev())
    bad = {
        "delta without base": delta,
        "short": full[:10],
        "truncated full": full[:-1],
        "foreign chunk size": full[:8] + struct.pack("<I", 512) + full[12:],
        "not an image": b"XXXX" + full[4:],
    }
    for what, image in bad.items():
        with pytest.raises(UapiError) as e:
            fresh.load_state(image)
        assert e.value.errno == errno.EINVAL, what
    fresh.apply(full)
    hdr = struct.calcsize("<4sB3xIQQ")  # the documented image header; count is its last field
    count = struct.unpack_from("<Q", delta, hdr - 8)[0]
    assert count >= 1
    idx, body = delta[hdr:hdr + 4 * count], delta[hdr + 4 * count:]
    twice = delta[:hdr - 8] + struct.pack("<Q", count + 1) + idx + idx[:4] + body + body[:devmig.CHUNK]
    with pytest.raises(UapiError, match="twice"):
        fresh.apply(twice)
    fresh.load_state(delta)
    assert fresh.device.save_state() == src.device.save_state()


# ---------------------------------------------------------------------- fingerprints
def test_fingerprints_tell_pages_apart() -> None:
    rng = np.random.default_rng(5)
    pages = rng.integers(0, 256, (5000, 4096), dtype=np.uint8)  # more than one numpy block
    fp = fingerprints(pages)
    assert len(np.unique(fp)) == len(pages)
    changed = pages.copy()
    changed[4500, 1234] ^= 1  # one bit in the second block
    words = changed.view("<u8")
    words[10] ^= np.uint64(1 << 63)  # the top bit of every word: a purely linear hash would not see it
    diff = np.flatnonzero(fingerprints(changed) != fp)
    assert diff.tolist() == [10, 4500]
    assert np.array_equal(fingerprints(pages[::-1].copy()), fp[::-1])  # per page, position independent


def test_guest_ram_on_scattered_frames() -> None:
    """Pages faulted in out of order sit on frames that are no single run: the gather path must agree
    with what the process reads."""
    mem = PhysMemory(1 << 24)
    proc = UserProcess(mem)
    va = proc.mmap(64 * 4096)
    for page in range(63, -1, -1):  # fault in backwards
        proc.write(va + page * 4096, b"\1")
    ram = GuestRam(proc, mem, va, 64 * 4096)
    assert np.any(np.diff(ram.frames) != 1)
    ram.fill_pattern(7)
    data = np.random.default_rng(2).integers(0, 256, (3, 4096), dtype=np.uint8)
    ram.write(np.array([5, 0, 63]), data)
    whole = np.frombuffer(proc.read(va, 64 * 4096), dtype=np.uint8).reshape(64, 4096)
    assert np.array_equal(whole[[5, 0, 63]], data) and np.array_equal(ram.pages(), whole)
    assert np.array_equal(ram.fingerprints(), fingerprints(whole.copy()))
    assert ram.sha256() == hashlib.sha256(whole.tobytes()).hexdigest()
    assert len(np.unique(ram.fingerprints())) == 64  # the boot pattern makes every page distinct
    ram.release()
    assert proc.pinned_pages == 0
