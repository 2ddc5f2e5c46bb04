"""Our client against our server: DMA through mapped fds and through DMA_READ/DMA_WRITE messages (one socket,
twin socket, a client reading its own replies), DMA_MAP/UNMAP rules, DMA logging, and migration between two
servers.

Re-expresses libvfio-user's test_dma_map.py, test_dma_unmap.py, test_dirty_pages.py and test_migration.py
checks (errno from lib/dma.c, lib/libvfio-user.c, lib/migration.c; the FSM and logging rules from
drivers/vfio/vfio_main.c through vfiolab.vfio), and samples/client.c's DMA and migration walk.
"""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import pytest
import test_vfio_user_server as base
from test_vfio_user_server import Raw, le, open_fds, serve, u32, wait_until

from vfiolab.devices import Edu
from vfiolab.devices import edu as E
from vfiolab.devices import testdev as T
from vfiolab.pci import regs
from vfiolab.vfio.migration import MigState
from vfiolab.vfio_user import Command, DeviceFeature, DmaUnmap
from vfiolab.vfio_user.client import Client, ServerError
from vfiolab.vfio_user.protocol import (
    DEVICE_FEATURE_GET,
    DEVICE_FEATURE_PROBE,
    DEVICE_FEATURE_SET,
    FEATURE_MIG_DATA_SIZE,
    FEATURE_MIGRATION,
    MIGRATION_STOP_COPY,
)
from vfiolab.vfio_user.server import Endpoint, Server

EINVAL = errno.EINVAL
RAM = 0x100000
server, edu, testdev = base.server, base.edu, base.testdev  # the fixtures


def edu_dma(c: Client, src: int, dst: int, count: int, to_ram: bool) -> None:
    """Program one edu transfer and wait for it (docs/specs/edu.rst)."""
    c.write_int(0, E.REG_DMA_SRC, 8, src)
    c.write_int(0, E.REG_DMA_DST, 8, dst)
    c.write_int(0, E.REG_DMA_CNT, 8, count)
    c.write_int(0, E.REG_DMA_CMD, 8, E.DMA_RUN | (E.DMA_DIR_TO_RAM if to_ram else 0))
    wait_until(lambda: not c.read_int(0, E.REG_DMA_CMD, 8) & E.DMA_RUN)


def round_trip(c: Client, ep: Endpoint, payload: bytes) -> bytes:
    """RAM -> edu buffer -> RAM+0x800; returns what landed."""
    mem = c.mapped[RAM].shm
    mem.write(0, payload)
    c.config_write(regs.COMMAND, 2, regs.COMMAND_MEMORY | regs.COMMAND_MASTER)
    edu_dma(c, RAM, E.DMA_START, len(payload), False)
    edu_dma(c, E.DMA_START, RAM + 0x800, len(payload), True)
    assert not ep.device.guest_errors  # type: ignore[attr-defined]
    return mem.read(0x800, len(payload))


@pytest.mark.parametrize("send_fd", [True, False], ids=["mmap", "messages"])
def test_edu_dma_both_ways(edu: Endpoint, send_fd: bool) -> None:
    with Client(edu.path) as c:
        c.map_memory(RAM, 0x1000, send_fd=send_fd)
        assert round_trip(c, edu, b"vfio-user DMA " * 20) == b"vfio-user DMA " * 20
    wait_until(lambda: edu.owner is None)
    if send_fd:
        assert edu.stats.dma_direct_bytes == 560 and edu.stats.dma_messages == 0
    else:
        assert edu.stats.dma_direct_bytes == 0 and edu.stats.dma_messages == 2
        assert edu.stats.dma_message_bytes == 560


def test_message_dma_while_the_client_reads_its_own_replies(edu: Endpoint) -> None:
    """No reader thread in the client: the server's DMA_READ arrives while the client waits for a
    REGION_READ reply; the server keeps answering (its worker waits with the device unlocked)."""
    with Client(edu.path, background=False) as c:
        c.map_memory(RAM, 0x1000, send_fd=False)
        assert round_trip(c, edu, b"inline") == b"inline"
        assert c.dma_requests == 2


def test_message_dma_on_a_twin_socket(edu: Endpoint) -> None:
    with Client(edu.path, twin_socket=True) as c:
        assert c.twin is not None and c.server_caps.twin_socket.fd_index == 0  # type: ignore[union-attr]
        c.map_memory(RAM, 0x1000, send_fd=False)
        assert round_trip(c, edu, b"twin") == b"twin"
        assert c.dma_requests == 2
    assert edu.stats.dma_messages == 2


def test_large_message_dma_is_chunked_by_the_clients_limit(testdev: Endpoint) -> None:
    with Client(testdev.path, max_data_xfer_size=4096) as c:
        mem = c.map_memory(RAM, 0x10000, send_fd=False)
        mem.write(0, os.urandom(0x10000))
        c.config_write(regs.COMMAND, 2, regs.COMMAND_MEMORY | regs.COMMAND_MASTER)
        c.write_int(0, T.REG_IOVA, 8, RAM)
        c.write_int(0, T.REG_LENGTH, 4, 0x10000)
        c.write_int(0, T.REG_CMD, 4, T.CMD_READ)
        wait_until(lambda: c.read_int(0, T.REG_STATUS, 4) & T.STATUS_DONE)
        assert testdev.device.buf.u8.tobytes() == mem.read(0, 0x10000)  # type: ignore[attr-defined]
        assert c.dma_requests == 16


def test_dma_faults_reach_the_device(testdev: Endpoint) -> None:
    with Client(testdev.path) as c:
        c.map_memory(RAM, 0x1000, send_fd=False)
        c.config_write(regs.COMMAND, 2, regs.COMMAND_MEMORY | regs.COMMAND_MASTER)
        for iova, length in ((RAM + 0x800, 0x1000), (0x5000, 8)):  # runs off the mapping / unmapped
            c.write_int(0, T.REG_IOVA, 8, iova)
            c.write_int(0, T.REG_LENGTH, 4, length)
            c.write_int(0, T.REG_CMD, 4, T.CMD_WRITE)
            wait_until(lambda: c.read_int(0, T.REG_STATUS, 4) & T.STATUS_ERROR)
            c.write_int(0, T.REG_STATUS, 4, T.STATUS_ERROR)
        assert c.read_int(0, T.REG_ERRORS, 4) == 2 and c.read_int(0, T.REG_FAULT_IOVA, 8) == 0x5000
        c.config_write(regs.COMMAND, 2, regs.COMMAND_MEMORY)  # no Bus Master: refused by the device itself
        c.write_int(0, T.REG_IOVA, 8, RAM)
        c.write_int(0, T.REG_LENGTH, 4, 8)
        c.write_int(0, T.REG_CMD, 4, T.CMD_WRITE)
        wait_until(lambda: c.read_int(0, T.REG_STATUS, 4) & T.STATUS_ERROR)
        assert c.dma_requests == 0  # nothing ever reached the client


def test_a_client_answering_dma_with_an_error(edu: Endpoint) -> None:
    with Client(edu.path) as c:
        c.dma_map(RAM, 0x1000)  # mapped on the server, but the client has no memory there: ENODEV
        c.config_write(regs.COMMAND, 2, regs.COMMAND_MEMORY | regs.COMMAND_MASTER)
        c.write_int(0, E.REG_DMA_SRC, 8, RAM)
        c.write_int(0, E.REG_DMA_DST, 8, E.DMA_START)
        c.write_int(0, E.REG_DMA_CNT, 8, 16)
        c.write_int(0, E.REG_DMA_CMD, 8, E.DMA_RUN)
        wait_until(lambda: edu.device.guest_errors)  # type: ignore[attr-defined]
        assert "ENODEV" in edu.device.guest_errors[0]  # type: ignore[attr-defined]


# ---------------------------------------------------------------------- DMA_MAP / DMA_UNMAP
def test_dma_map_and_unmap_rules(edu: Endpoint) -> None:
    with Client(edu.path) as c:
        c.map_memory(RAM, 0x2000)
        for iova, size in ((RAM + 0x1000, 0x1000), (RAM - 0x1000, 0x2000)):
            with pytest.raises(ServerError) as e:
                c.dma_map(iova, size)
            assert e.value.errno == EINVAL  # lib/dma.c: overlap
        with pytest.raises(ServerError) as e:
            c.dma_unmap(RAM, 0x1000)
        assert e.value.errno == errno.ENOENT  # must match a mapping exactly
        assert c.dma_unmap(RAM, 0x2000) == DmaUnmap(RAM, 0x2000)  # the reply echoes the request
        c.dma_map(0x0, 0x1000)
        c.dma_map(0x1000, 0x1000)
        c.dma_unmap_all()
        with pytest.raises(ServerError):
            c.dma_unmap(0x0, 0x1000)


def test_dma_unmap_refusals(edu: Endpoint) -> None:
    r = Raw(edu.path)
    r.expect(EINVAL, 3, u32(24, 0) + le(0, 8))  # short write
    r.expect(EINVAL, 3, u32(23, 0) + le(0, 8) + le(0x1000, 8))  # argsz < 24
    r.expect(EINVAL, 3, u32(24, 4) + le(0, 8) + le(0x1000, 8))  # unknown flag
    r.expect(EINVAL, 3, u32(24, 2) + le(0x1000, 8) + le(0x1000, 8))  # UNMAP_ALL with an address
    r.expect(EINVAL, 3, u32(24, 1) + le(0x1000, 8) + le(0x1000, 8))  # dirty bitmap without one
    # GET_DIRTY_BITMAP while logging is off (lib/dma.c dma_controller_dirty_page_get)
    assert r.ask(2, u32(32, 3) + le(0, 8) + le(RAM, 8) + le(0x1000, 8)).error is None
    r.expect(EINVAL, 3, u32(24 + 16 + 8, 1) + le(RAM, 8) + le(0x1000, 8) + le(4096, 8) + le(8, 8))
    r.close()


# ---------------------------------------------------------------------- DMA logging
def test_dma_logging_reports_device_writes(edu: Endpoint) -> None:
    with Client(edu.path) as c:
        c.map_memory(RAM, 0x10000)
        c.config_write(regs.COMMAND, 2, regs.COMMAND_MEMORY | regs.COMMAND_MASTER)
        with pytest.raises(ServerError):
            c.logging_report(RAM, 0x10000)  # not started
        c.logging_start(4096, [(RAM, 0x10000)])
        edu_dma(c, RAM, E.DMA_START, 16, False)  # a read: nothing dirty
        edu_dma(c, E.DMA_START, RAM + 0x3ff8, 16, True)  # straddles pages 3 and 4
        bitmap = c.logging_report(RAM, 0x10000)
        assert bitmap == (0b11000).to_bytes(8, "little")
        assert c.logging_report(RAM, 0x10000) == bytes(8)  # reported pages are cleared
        edu_dma(c, E.DMA_START, RAM + 0x8000, 4, True)
        assert c.dma_unmap_dirty(RAM, 0x10000) == (1 << 8).to_bytes(8, "little")
        c.logging_stop()
        with pytest.raises(ServerError):
            c.logging_report(RAM, 0x10000)


def test_dma_logging_without_ranges_covers_the_mappings(edu: Endpoint) -> None:
    with Client(edu.path) as c:
        c.map_memory(RAM, 0x2000, send_fd=False)  # messages are logged too
        c.config_write(regs.COMMAND, 2, regs.COMMAND_MEMORY | regs.COMMAND_MASTER)
        c.logging_start(4096)
        edu_dma(c, E.DMA_START, RAM + 0x1000, 8, True)
        assert c.logging_report(RAM, 0x2000, 4096) == (0b10).to_bytes(8, "little")
        with pytest.raises(ServerError):
            c.logging_start(8192)  # already running (vfio: one session)
        with pytest.raises(ServerError) as e:
            c.logging_report(0, 1 << 45)  # a 1 GiB bitmap would not fit one reply
        assert e.value.errno == EINVAL


# ---------------------------------------------------------------------- migration
def test_migration_features(edu: Endpoint) -> None:
    with Client(edu.path) as c:
        info = c.feature(DEVICE_FEATURE_GET | FEATURE_MIGRATION).data
        assert info.flags == MIGRATION_STOP_COPY  # type: ignore[union-attr]
        assert c.mig_state() == MigState.RUNNING
        probe = c.feature(DEVICE_FEATURE_PROBE | DEVICE_FEATURE_GET | FEATURE_MIGRATION)
        assert probe == DeviceFeature(DEVICE_FEATURE_PROBE | DEVICE_FEATURE_GET | FEATURE_MIGRATION, b"", 8)
        size = c.feature(DEVICE_FEATURE_GET | FEATURE_MIG_DATA_SIZE).data
        assert size.stop_copy_length > 4096  # type: ignore[union-attr]
        for flags in (DEVICE_FEATURE_SET | FEATURE_MIGRATION, DEVICE_FEATURE_GET | 3):
            with pytest.raises(ServerError) as e:
                c.feature(flags, b"\0" * 8)
            assert e.value.errno == EINVAL
        for state in (MigState.RUNNING_P2P, MigState.PRE_COPY, 9):  # no P2P, no PRE_COPY in our flags
            with pytest.raises(ServerError):
                c.set_mig_state(state)
        with pytest.raises(ServerError):
            c.mig_data_read(64)  # not saving
        with pytest.raises(ServerError):
            c.mig_data_write(b"x")  # not resuming


def test_migrate_edu_between_two_servers(server: Server, tmp_path: Path, edu: Endpoint) -> None:
    target = serve(server, Edu("edu-dst"), tmp_path, "dst")
    with Client(edu.path) as src:
        src.map_memory(RAM, 0x1000).write(0, b"state in the DMA buffer")
        src.config_write(regs.COMMAND, 2, regs.COMMAND_MEMORY | regs.COMMAND_MASTER)
        edu_dma(src, RAM, E.DMA_START, 23, False)
        src.write_int(0, E.REG_LIVENESS, 4, 0xCAFE)
        src.set_mig_state(MigState.STOP)
        src.write_int(0, E.REG_FACT, 4, 6)  # a stopped device holds its work
        time.sleep(0.05)
        assert src.read_int(0, E.REG_STATUS, 4) & E.STATUS_COMPUTING
        src.set_mig_state(MigState.STOP_COPY)
        with pytest.raises(ServerError):
            src.read_int(0, 0, 4)  # libvfio-user: no region access in STOP_COPY
        stream = src.save_stream(chunk=1000)
        assert len(stream) > 4096
        src.set_mig_state(MigState.STOP)
    with Client(target.path) as dst:
        dst.set_mig_state(MigState.RESUMING)
        dst.load_stream(stream, chunk=1000)
        dst.set_mig_state(MigState.RUNNING)
        assert dst.read_int(0, E.REG_LIVENESS, 4) == ~0xCAFE & 0xFFFFFFFF
        wait_until(lambda: not dst.read_int(0, E.REG_STATUS, 4) & E.STATUS_COMPUTING)
        assert dst.read_int(0, E.REG_FACT, 4) == 720  # the factorial in flight finished on the target
        assert bytes(target.device.buffer[:23]) == b"state in the DMA buffer"  # type: ignore[attr-defined]
        assert dst.config_read(regs.COMMAND, 2) == regs.COMMAND_MEMORY | regs.COMMAND_MASTER


def test_bad_migration_stream_is_refused_and_reset_recovers(testdev: Endpoint) -> None:
    with Client(testdev.path) as c:
        c.set_mig_state(MigState.RESUMING)
        c.mig_data_write(b"not a stream")
        with pytest.raises(ServerError) as e:
            c.set_mig_state(MigState.STOP)
        assert e.value.errno == EINVAL
        c.reset()  # DEVICE_RESET returns migration to RUNNING
        assert c.mig_state() == MigState.RUNNING
        assert c.read_int(0, T.REG_ID, 4) == T.IDENT


def test_raw_feature_argsz(edu: Endpoint) -> None:
    r = Raw(edu.path)
    # GET MIGRATION with argsz too small for the reply (libvfio-user handle_migration_device_feature_get)
    r.expect(EINVAL, 16, u32(8, DEVICE_FEATURE_GET | FEATURE_MIGRATION))
    r.expect(EINVAL, 16, u32(8, DEVICE_FEATURE_SET | 2) + u32(1, 0))  # SET whose argsz < payload
    assert r.ask(16, u32(16, DEVICE_FEATURE_GET | FEATURE_MIGRATION)).error is None
    r.close()


def test_commands_table_is_complete() -> None:
    from vfiolab.vfio_user.server import _HANDLERS
    assert set(_HANDLERS) == set(Command) - {Command.VERSION, Command.DMA_READ, Command.DMA_WRITE}


def test_a_client_vanishing_mid_dma(edu: Endpoint) -> None:
    """The device waits for a DMA_READ reply that never comes: the client closes instead.  The wait ends, the
    device sees a DMA error, nothing of that client stays mapped, and the next client is served."""
    before = open_fds()
    c = Client(edu.path, background=False)  # nobody reads the server's DMA request
    c.map_memory(RAM, 0x1000, send_fd=False)
    c.config_write(regs.COMMAND, 2, regs.COMMAND_MEMORY | regs.COMMAND_MASTER)
    for reg, value in ((E.REG_DMA_SRC, RAM), (E.REG_DMA_DST, E.DMA_START), (E.REG_DMA_CNT, 8)):
        c.write_int(0, reg, 8, value)
    c.write_int(0, E.REG_DMA_CMD, 8, E.DMA_RUN)
    wait_until(lambda: edu.stats.dma_messages == 1)  # the DMA_READ is out; the worker waits
    c.close()
    wait_until(lambda: edu.owner is None and edu.device.guest_errors)  # type: ignore[attr-defined]
    assert "went away" in edu.device.guest_errors[0]  # type: ignore[attr-defined]
    assert open_fds() == before
    with Client(edu.path) as c2:
        c2.map_memory(RAM, 0x1000, send_fd=False)
        edu.device.guest_errors.clear()  # type: ignore[attr-defined]
        assert round_trip(c2, edu, b"again!!!") == b"again!!!"
