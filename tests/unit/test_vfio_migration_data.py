"""Migration data path: STOP_COPY and RESUMING streams, PRE_COPY initial/dirty data with the precopy
info ioctl, data fds as files, and VFIO_DEVICE_FEATURE for the migration features.

Rules checked (Linux 7.2): include/uapi/linux/vfio.h (arc semantics, read() ENOMSG at the temporary end
of a pre-copy stream and 0 at the end of STOP_COPY, precopy info only in PRE_COPY states),
include/linux/vfio.h (vfio_check_feature, vfio_check_precopy_ioctl), drivers/vfio/vfio_main.c (feature
dispatch, MIG_DEVICE_STATE write-back, MIG_PRECOPY_INFOv2), samples/vfio-mdev/mtty.c and
drivers/vfio/pci/mlx5/main.c (ENODEV after the session ends, initial vs dirty bytes).
"""

from __future__ import annotations

import errno
import struct

import numpy as np
import pytest

from vfiolab.errors import UapiError
from vfiolab.iommufd.task import Task
from vfiolab.iommufd.ucmd import LocalBuffer
from vfiolab.memory import PhysMemory, UserProcess
from vfiolab.vfio.feature import device_feature
from vfiolab.vfio.migration import (
    VFIO_PRECOPY_INFO_REINIT,
    FeatureData,
    MigrationFile,
    MigState,
    VfioMigration,
    parse_stream,
)
from vfiolab.vfio.precopy import TrackedState
from vfiolab.vfio.uapi import (
    VFIO_DEVICE_FEATURE_GET,
    VFIO_DEVICE_FEATURE_MIG_DATA_SIZE,
    VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE,
    VFIO_DEVICE_FEATURE_MIGRATION,
    VFIO_DEVICE_FEATURE_PROBE,
    VFIO_DEVICE_FEATURE_SET,
    VFIO_MIG_GET_PRECOPY_INFO,
    VFIO_MIGRATION_P2P,
    VFIO_MIGRATION_PRE_COPY,
    VFIO_MIGRATION_STOP_COPY,
    VFIO_DEVICE_FEATURE_MIG_PRECOPY_INFOv2,
    vfio_precopy_info,
)

S, R, SC, RES, RP, PC, PCP = (MigState.STOP, MigState.RUNNING, MigState.STOP_COPY, MigState.RESUMING,
                              MigState.RUNNING_P2P, MigState.PRE_COPY, MigState.PRE_COPY_P2P)
BASE = VFIO_MIGRATION_STOP_COPY
FULL = BASE | VFIO_MIGRATION_P2P | VFIO_MIGRATION_PRE_COPY
CHUNK = 4096
SIZE = 16 * CHUNK
HDR = 16  # stream record header
IMG = 24  # TrackedState image header


class Dev(TrackedState):
    """A device keeping its migratable state in a TrackedState and obeying STOP."""

    def __init__(self) -> None:
        super().__init__(SIZE, CHUNK)
        self.running = True

    def set_running(self, running: bool) -> None:
        self.running = running

    def poke(self, off: int, data: bytes) -> None:
        assert self.running, "a stopped device must not change its state"
        self.write(off, data)


def fill(dev: Dev, seed: int) -> None:
    dev.write(0, np.random.default_rng(seed).integers(0, 256, SIZE, dtype=np.uint8))


def drain(f: MigrationFile, step: int = 1000) -> bytes:
    """Read until end of stream (STOP_COPY) or the temporary end (ENOMSG)."""
    out = bytearray()
    while True:
        try:
            chunk = f.read(step)
        except UapiError as e:
            assert e.errno == errno.ENOMSG
            return bytes(out)
        if not chunk:
            return bytes(out)
        out += chunk


def resume(stream: bytes, flags: int = BASE, segment: int = 777) -> Dev:
    dst = Dev()
    mig = VfioMigration(dst, flags)
    f = mig.set_state(RES)
    assert f is not None and not dst.running
    for i in range(0, len(stream), segment):
        assert f.write(stream[i:i + segment]) == len(stream[i:i + segment])
    assert mig.set_state(R) is None and dst.running
    return dst


def err(fn, *args, **kw):  # type: ignore[no-untyped-def]
    with pytest.raises(UapiError) as e:
        fn(*args, **kw)
    return e.value.errno


# ---------------------------------------------------------------------- STOP_COPY / RESUMING
def test_stop_copy_round_trip() -> None:
    src = Dev()
    fill(src, 1)
    mig = VfioMigration(src, BASE)
    assert mig.get_data_size() == HDR + IMG + SIZE
    f = mig.set_state(SC)  # RUNNING -> STOP -> STOP_COPY
    assert f is not None and not src.running and mig.get_state() == SC
    stream = drain(f)
    assert len(stream) == HDR + IMG + SIZE
    assert f.read(10) == b"" and f.read(0) == b""  # permanent end of stream
    assert [k for k, _ in parse_stream(stream)] == [3]
    dst = resume(stream)
    assert np.array_equal(dst.buf, src.buf)
    assert mig.set_state(S) is None  # STOP_COPY -> STOP ends the session
    assert err(f.read, 1) == errno.ENODEV
    f.close()
    assert err(f.read, 1) == errno.EBADF


def test_file_modes_and_ioctls() -> None:
    mig = VfioMigration(Dev(), BASE)
    f = mig.set_state(SC)
    assert f is not None
    assert err(f.write, b"x") == errno.EBADF  # O_RDONLY
    assert err(f.read, -1) == errno.EINVAL
    assert err(f.ioctl, VFIO_MIG_GET_PRECOPY_INFO + 1, bytes(24)) == errno.ENOTTY
    short = vfio_precopy_info.pack(argsz=23)
    assert err(f.ioctl, VFIO_MIG_GET_PRECOPY_INFO, short) == errno.EINVAL  # argsz before the state check
    assert err(f.ioctl, VFIO_MIG_GET_PRECOPY_INFO, bytes(23)) == errno.EFAULT
    assert err(f.precopy_info) == errno.EINVAL  # only in PRE_COPY states
    dst = VfioMigration(Dev(), BASE)
    mig.set_state(S)
    r = dst.set_state(RES)
    assert r is not None
    assert err(r.read, 1) == errno.EBADF  # O_WRONLY
    assert err(r.ioctl, VFIO_MIG_GET_PRECOPY_INFO, vfio_precopy_info.pack(argsz=24)) == errno.ENOTTY


@pytest.mark.parametrize("damage", ["empty", "truncated", "magic", "extra_final", "wrong_size", "precopy"])
def test_resume_refuses_bad_streams(damage: str) -> None:
    """RESUMING -> STOP validates the stream; on failure the device stays in RESUMING with its session,
    and only a reset aborts it."""
    src = VfioMigration(Dev(), BASE)
    f = src.set_state(SC)
    assert f is not None
    good = drain(f)
    bad = {"empty": b"", "truncated": good[:-1], "magic": b"X" + good[1:], "extra_final": good + good,
           "wrong_size": good[:HDR] + good[HDR:HDR + 16] + struct.pack("<Q", SIZE - CHUNK) + good[HDR + 24:]}
    if damage == "precopy":
        p = VfioMigration(Dev(), FULL)
        pf = p.set_state(PC)
        assert pf is not None
        p.set_state(SC)
        stream = drain(pf)
    else:
        stream = bad[damage]
    dst_dev = Dev()
    dst = VfioMigration(dst_dev, BASE)
    r = dst.set_state(RES)
    assert r is not None
    r.write(stream)
    assert err(dst.set_state, R) == errno.EINVAL
    assert dst.get_state() == RES and not dst_dev.running
    r.write(b"more")  # the session is still open
    dst.reset()
    assert dst.get_state() == R and dst_dev.running
    assert err(r.write, b"x") == errno.ENODEV


def test_resume_size_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    import vfiolab.vfio.migration as m
    monkeypatch.setattr(m, "MAX_RESUME_BYTES", 100)
    r = VfioMigration(Dev(), BASE).set_state(RES)
    assert r is not None
    assert r.write(bytes(60)) == 60
    assert err(r.write, bytes(41)) == errno.ENOMEM
    assert r.write(bytes(40)) == 40


# ---------------------------------------------------------------------- PRE_COPY
def test_precopy_initial_then_dirty_then_stop_copy() -> None:
    src = Dev()
    fill(src, 2)
    mig = VfioMigration(src, FULL)
    f = mig.set_state(PC)
    assert f is not None and src.running
    initial = HDR + IMG + SIZE
    assert f.precopy_info() == (0, initial, 0)
    part = f.read(100)
    assert len(part) == 100 and f.precopy_info().initial_bytes == initial - 100
    part += drain(f)
    assert len(part) == initial
    assert f.precopy_info() == (0, 0, 0)
    assert err(f.read, 1) == errno.ENOMSG  # temporary end: initial and dirty both 0
    src.poke(3 * CHUNK + 5, b"\xaa")
    src.poke(7 * CHUNK, b"\xbb\xcc")
    dirty = HDR + IMG + 2 * (8 + CHUNK)
    assert f.precopy_info() == (0, 0, dirty)
    part += drain(f)
    assert len(part) == initial + dirty and f.precopy_info() == (0, 0, 0)
    assert mig.set_state(PCP) is None and mig.set_state(PC) is None  # same session
    src.poke(0, b"\x01")
    assert mig.set_state(SC) is None  # PRE_COPY -> PRE_COPY_P2P -> STOP_COPY keeps the fd
    assert not src.running
    assert err(f.precopy_info) == errno.EINVAL
    part += drain(f)
    assert f.read(1) == b""
    kinds = [k for k, _ in parse_stream(part)]
    assert kinds == [1, 2, 3]
    dst = resume(part, FULL, segment=4099)
    assert np.array_equal(dst.buf, src.buf)


def test_precopy_unread_data_is_still_delivered() -> None:
    """Leaving PRE_COPY before reading everything keeps the queued data in front of the final state."""
    src = Dev()
    fill(src, 3)
    mig = VfioMigration(src, BASE | VFIO_MIGRATION_PRE_COPY)
    f = mig.set_state(PC)
    assert f is not None
    head = f.read(5000)
    src.poke(9 * CHUNK, b"late")
    mig.set_state(SC)  # PRE_COPY -> STOP_COPY directly (no P2P)
    stream = head + drain(f)
    assert np.array_equal(resume(stream, FULL).buf, src.buf)


def test_precopy_session_end_and_restart() -> None:
    """PRE_COPY -> RUNNING ends the session (ENODEV); a new PRE_COPY gives a new fd whose first data is a
    full image again; STOP -> STOP_COPY outside pre-copy is a full image too."""
    src = Dev()
    fill(src, 4)
    mig = VfioMigration(src, FULL)
    f1 = mig.set_state(PC)
    assert f1 is not None
    mig.set_state(R)
    assert err(f1.read, 1) == errno.ENODEV
    assert err(f1.precopy_info) == errno.EINVAL  # the state check comes first
    f2 = mig.set_state(PC)
    assert f2 is not None and f2 is not f1
    assert err(f1.precopy_info) == errno.ENODEV  # in PRE_COPY, but that session is over
    assert f2.precopy_info().initial_bytes == HDR + IMG + SIZE
    mig.set_state(S)
    f3 = mig.set_state(SC)
    assert f3 is not None
    stream = drain(f3)
    assert len(stream) == HDR + IMG + SIZE
    assert np.array_equal(resume(stream).buf, src.buf)


def test_precopy_info_flags_v1_v2_and_reinit() -> None:
    """Without MIG_PRECOPY_INFOv2 the flags word comes back as the caller passed it; with it, flags is
    an output (0, or REINIT when the device has new initial data)."""
    class Reinit(Dev):
        def __init__(self) -> None:
            super().__init__()
            self.fresh: bytes | None = None

        def precopy_reinit(self) -> bytes | None:
            out, self.fresh = self.fresh, None
            return out

    dev = Reinit()
    mig = VfioMigration(dev, FULL)
    f = mig.set_state(PC)
    assert f is not None
    assert f.precopy_info(flags=0xDEAD0000).flags == 0xDEAD0000
    drain(f)
    dev.fresh = b"y" * 100
    assert f.precopy_info(flags=0x10) == (0x10, 0, HDR + 100)  # v1: new data shows as dirty bytes
    drain(f)
    mig.precopy_info_v2 = True
    assert f.precopy_info(flags=0xFFFF).flags == 0
    dev.fresh = b"z" * 50
    info = f.precopy_info()
    assert info == (VFIO_PRECOPY_INFO_REINIT, HDR + 50, 0)
    f.read(10)
    assert f.precopy_info() == (0, HDR + 40, 0)
    mig.last_close()
    assert not mig.precopy_info_v2 and mig.get_state() == R


# ---------------------------------------------------------------------- VFIO_DEVICE_FEATURE
@pytest.fixture
def task() -> Task:
    return Task.of(UserProcess(PhysMemory(1 << 22)))


def feat(flags: int, payload: bytes = b"", *, argsz: int | None = None, mig: VfioMigration | None = None,
         task: Task | None = None, **kw):  # type: ignore[no-untyped-def]
    buf = bytearray(struct.pack("<II", 8 + len(payload) if argsz is None else argsz, flags) + payload)
    rc = device_feature(LocalBuffer(buf), mig=mig, task=task, **kw)
    return rc, bytes(buf[8:])


def test_feature_generic_checks(task: Task) -> None:
    mig = VfioMigration(Dev(), FULL)
    get = VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_MIGRATION
    assert err(feat, get, bytes(8), argsz=7, mig=mig) == errno.EINVAL
    assert err(feat, get | 1 << 19, bytes(8), mig=mig) == errno.EINVAL
    assert err(feat, get | VFIO_DEVICE_FEATURE_SET, bytes(8), mig=mig) == errno.EINVAL
    assert err(device_feature, LocalBuffer(bytes(7))) == errno.EFAULT
    assert err(feat, VFIO_DEVICE_FEATURE_GET | 200, bytes(8), mig=mig) == errno.ENOTTY
    seen = []

    def fallback(fl: int, data: FeatureData, n: int) -> int:
        seen.append((fl, data.read(0, n), n))
        return 7

    rc, _ = feat(VFIO_DEVICE_FEATURE_SET | 200, b"abc", mig=mig, fallback=fallback)
    assert rc == 7 and seen == [(VFIO_DEVICE_FEATURE_SET | 200, b"abc", 3)]


def test_feature_migration(task: Task) -> None:
    mig = VfioMigration(Dev(), FULL)
    get = VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_MIGRATION
    assert feat(get, bytes(8), mig=mig) == (0, struct.pack("<Q", FULL))
    assert feat(get | VFIO_DEVICE_FEATURE_PROBE, b"", mig=mig) == (0, b"")  # no data needed to probe
    assert err(feat, VFIO_DEVICE_FEATURE_PROBE | VFIO_DEVICE_FEATURE_SET | 1, b"", mig=mig) == errno.EINVAL
    assert feat(VFIO_DEVICE_FEATURE_PROBE | 1, b"", mig=mig)[0] == 0
    assert err(feat, VFIO_DEVICE_FEATURE_MIGRATION, bytes(8), mig=mig) == errno.EINVAL  # neither GET nor SET
    assert err(feat, get, bytes(7), mig=mig) == errno.EINVAL
    for feature in (1, 2, 9):
        assert err(feat, VFIO_DEVICE_FEATURE_GET | feature, bytes(8)) == errno.ENOTTY  # no mig_ops


def test_feature_mig_device_state(task: Task) -> None:
    src = Dev()
    fill(src, 5)
    mig = VfioMigration(src, FULL)
    ds = VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE
    assert feat(VFIO_DEVICE_FEATURE_GET | ds, struct.pack("<Ii", 0, 99), mig=mig, task=task)[1] == \
        struct.pack("<Ii", R, -1)
    rc, out = feat(VFIO_DEVICE_FEATURE_SET | ds, struct.pack("<Ii", SC, 0), mig=mig, task=task)
    state, fd = struct.unpack("<Ii", out)
    assert rc == 0 and state == SC and fd >= 3
    f = task.fget(fd)
    assert isinstance(f, MigrationFile)
    stream = drain(f)
    task.close(fd)
    assert err(f.read, 1) == errno.EBADF
    assert np.array_equal(resume(stream).buf, src.buf)
    # a SET that fails still writes the request back with data_fd = -1 (vfio_main.c out_copy)
    buf = bytearray(struct.pack("<IIIi", 16, VFIO_DEVICE_FEATURE_SET | ds, PC, 1234))
    assert err(device_feature, LocalBuffer(buf)) == errno.ENOTTY  # no mig_ops
    with pytest.raises(UapiError) as e:
        device_feature(LocalBuffer(buf), mig=mig, task=task)
    assert e.value.errno == errno.EINVAL  # STOP_COPY -> PRE_COPY is blocked
    assert struct.unpack("<Ii", buf[8:]) == (PC, -1) and mig.get_state() == SC
    # a SET without a new session: data_fd = -1
    rc, out = feat(VFIO_DEVICE_FEATURE_SET | ds, struct.pack("<Ii", R, 5), mig=mig, task=task)
    assert struct.unpack("<Ii", out) == (R, -1)
    assert err(feat, VFIO_DEVICE_FEATURE_SET | ds, bytes(7), mig=mig, task=task) == errno.EINVAL


def test_feature_data_size_and_precopy_info_v2(task: Task) -> None:
    mig = VfioMigration(Dev(), FULL)
    _rc, out = feat(VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_MIG_DATA_SIZE, bytes(8), mig=mig)
    assert struct.unpack("<Q", out)[0] == HDR + IMG + SIZE
    assert err(feat, VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_MIG_DATA_SIZE, bytes(8), mig=mig) == errno.EINVAL
    v2 = VFIO_DEVICE_FEATURE_MIG_PRECOPY_INFOv2
    plain = VfioMigration(Dev(), BASE)
    # the PRE_COPY test comes before vfio_check_feature: even a probe is EINVAL, and so is a device
    # without migration at all (migration_flags 0)
    assert err(feat, VFIO_DEVICE_FEATURE_PROBE | VFIO_DEVICE_FEATURE_SET | v2, mig=plain) == errno.EINVAL
    assert err(feat, VFIO_DEVICE_FEATURE_SET | v2) == errno.EINVAL
    assert err(feat, VFIO_DEVICE_FEATURE_GET | v2, mig=mig) == errno.EINVAL
    assert feat(VFIO_DEVICE_FEATURE_PROBE | VFIO_DEVICE_FEATURE_SET | v2, mig=mig)[0] == 0
    assert not mig.precopy_info_v2
    assert feat(VFIO_DEVICE_FEATURE_SET | v2, mig=mig)[0] == 0 and mig.precopy_info_v2
    f = mig.set_state(PC)
    assert f is not None
    raw = bytearray(vfio_precopy_info.pack(argsz=32, flags=7))
    f.ioctl(VFIO_MIG_GET_PRECOPY_INFO, raw)
    assert vfio_precopy_info.unpack(raw)["flags"] == 0
