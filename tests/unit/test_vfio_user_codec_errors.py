"""Every refusal of the vfio-user decoder, with the errno the error reply must carry.

The rules and errno come from libvfio-user (server side: lib/libvfio-user.c, lib/irq.c, lib/migration.c,
lib/tran.c), QEMU 11.1 (client side: hw/vfio-user/proxy.c, device.c, pci.c) and, for flag bits the peers do
not check, Linux (drivers/vfio/vfio_main.c).  Payloads are written field by field, like the golden vectors.
"""

from __future__ import annotations

import errno
import json

import pytest

from vfiolab.vfio_user import (
    Command,
    DeviceInfo,
    DmaMap,
    IrqSet,
    Limits,
    ProtocolError,
    RegionWrite,
    RegionWriteMulti,
    Role,
    decode,
    encode,
    error_reply,
    request,
)

S, C = Role.SERVER, Role.CLIENT
EINVAL, E2BIG, ENOSYS = errno.EINVAL, errno.E2BIG, errno.ENOSYS


def h(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


def le(value: int, size: int) -> bytes:
    return value.to_bytes(size, "little")


def msg(cmd: int, payload: bytes = b"", flags: int = 0, msg_id: int = 0x42, size: int | None = None,
        error: int = 0) -> bytes:
    """Header (msg_id, cmd, msg_size, flags, error) + payload; ``size`` overrides msg_size."""
    total = 16 + len(payload) if size is None else size
    return le(msg_id, 2) + le(cmd, 2) + le(total, 4) + le(flags, 4) + le(error, 4) + payload


def version(js: bytes | None, minor: int = 0) -> bytes:
    return le(0, 2) + le(minor, 2) + (b"" if js is None else js + b"\0")


def caps(obj: object) -> bytes:
    return json.dumps({"capabilities": obj}).encode()


def u32(*values: int) -> bytes:
    return b"".join(le(v, 4) for v in values)


def u64(*values: int) -> bytes:
    return b"".join(le(v, 8) for v in values)


REPLY, NO_REPLY, ERROR = 0x1, 0x10, 0x20
REGION_INFO_REQ = u32(32, 0, 1, 0) + u64(0, 0)
MB = 1 << 20

CASES: list[tuple[str, Role, bytes, int, int]] = [
    # --- header (libvfio-user is_valid_header / tran_sock_recv_fds; QEMU vfio_user_recv_one) -----------------
    ("msg_size below 16", S, msg(13, size=12), 0, EINVAL),
    ("msg_size larger than the bytes", S, msg(13, size=20), 0, EINVAL),
    ("msg_size smaller than the bytes", S, msg(9, u32(0, 0, 0, 4), size=24), 0, EINVAL),
    ("msg_size over the ceiling", S, msg(10, u64(0) + u32(0, 2 * MB) + bytes(2 * MB)), 0, EINVAL),
    ("unknown header flag bit", S, msg(13, flags=0x40), 0, EINVAL),
    ("message type 2", S, msg(13, flags=0x2), 0, EINVAL),
    ("too many fds", S, msg(2, u32(32, 3) + u64(0, 0, 4096)), 17, EINVAL),
    ("command 0", S, msg(0), 0, EINVAL),
    ("command 14 (old DIRTY_PAGES)", S, msg(14, u32(0)), 0, EINVAL),
    ("command 19", S, msg(19), 0, EINVAL),
    ("unknown command to a client", C, msg(999), 0, ENOSYS),
    ("DMA_READ sent to a server", S, msg(11, u64(0, 4)), 0, EINVAL),
    ("REGION_READ sent to a client", C, msg(9, u64(0) + u32(7, 4)), 0, ENOSYS),
    ("reply to REGION_READ at a server", S, msg(9, u64(0) + u32(7, 0), REPLY), 0, EINVAL),
    ("reply to DMA_READ at a client", C, msg(11, u64(0, 0), REPLY), 0, EINVAL),
    ("unknown reply at a client", C, msg(99, flags=REPLY), 0, EINVAL),
    ("command with the Error flag", S, msg(13, flags=ERROR), 0, EINVAL),
    ("reply with No_reply", C, msg(13, flags=REPLY | NO_REPLY), 0, EINVAL),
    ("error reply with a payload", C, msg(4, u32(16, 0, 0, 0), REPLY | ERROR, error=22), 0, EINVAL),
    ("error reply with an fd", C, msg(4, flags=REPLY | ERROR, error=22), 1, EINVAL),
    ("fd on GET_INFO", S, msg(4, u32(16, 0, 0, 0)), 1, EINVAL),
    ("fd on REGION_WRITE", S, msg(10, u64(0) + u32(0, 1) + b"x"), 1, EINVAL),
    ("DEVICE_RESET with a payload", S, msg(13, u32(0)), 0, EINVAL),
    ("DMA_MAP reply with a payload", C, msg(2, u32(0), REPLY), 0, EINVAL),
    ("SET_IRQS reply with a payload", C, msg(8, u32(0), REPLY), 0, EINVAL),
    # --- VERSION (libvfio-user recv_version / tran_parse_version_json; QEMU caps_check) ----------------------
    ("VERSION too short", S, msg(1, le(0, 2)), 0, EINVAL),
    ("VERSION empty", S, msg(1), 0, EINVAL),
    ("VERSION with an fd", S, msg(1, version(None)), 1, EINVAL),
    ("JSON without NUL", S, msg(1, le(0, 4) + b"{}"), 0, EINVAL),
    ("JSON with an inner NUL", S, msg(1, version(b"{}\0{}")), 0, EINVAL),
    ("JSON missing closing brace", S, msg(1, version(b"{")), 0, EINVAL),
    ("JSON missing closing quote", S, msg(1, version(b'"')), 0, EINVAL),
    ("JSON not UTF-8", S, msg(1, version(b'{"\xff": 1}')), 0, EINVAL),
    ("JSON not an object", S, msg(1, version(b"23")), 0, EINVAL),
    ("JSON NaN", S, msg(1, version(b'{"x": NaN}')), 0, EINVAL),
    ("JSON huge float", S, msg(1, version(b'{"x": 1e999}')), 0, EINVAL),
    ("JSON nested too deep", S, msg(1, version(b"[" * 100000 + b"]" * 100000)), 0, EINVAL),
    ("capabilities not an object", S, msg(1, version(b'{ "capabilities": "23" }')), 0, EINVAL),
    ("max_msg_fds a string", S, msg(1, version(caps({"max_msg_fds": "foo"}))), 0, EINVAL),
    ("max_msg_fds negative", S, msg(1, version(caps({"max_msg_fds": -1}))), 0, EINVAL),
    ("max_msg_fds above libvfio-user's 1024", S, msg(1, version(caps({"max_msg_fds": 1025}))), 0, EINVAL),
    ("max_msg_fds a boolean", S, msg(1, version(caps({"max_msg_fds": True}))), 0, EINVAL),
    ("max_data_xfer_size a float", S, msg(1, version(caps({"max_data_xfer_size": 1.5}))), 0, EINVAL),
    ("pgsizes a string", S, msg(1, version(caps({"pgsizes": "4k"}))), 0, EINVAL),
    ("migration not an object", S, msg(1, version(caps({"migration": "23"}))), 0, EINVAL),
    ("migration pgsize a string", S, msg(1, version(caps({"migration": {"pgsize": "foo"}}))), 0, EINVAL),
    ("twin_socket not an object", S, msg(1, version(caps({"twin_socket": 1}))), 0, EINVAL),
    ("twin_socket.supported not a boolean", S, msg(1, version(caps({"twin_socket": {"supported": 1}}))), 0,
     EINVAL),
    ("write_multiple not a boolean", S, msg(1, version(caps({"write_multiple": 1}))), 0, EINVAL),
    ("reply without JSON", C, msg(1, version(None), REPLY), 0, EINVAL),
    ("reply max_msg_fds above QEMU's 16", C, msg(1, version(caps({"max_msg_fds": 17})), REPLY), 0, EINVAL),
    ("reply max_data_xfer_size above 64 MiB", C, msg(1, version(caps({"max_data_xfer_size": (64 << 20) + 1})),
                                                      REPLY), 0, EINVAL),
    ("reply max_dma_maps above 65535", C, msg(1, version(caps({"max_dma_maps": 65536})), REPLY), 0, EINVAL),
    ("reply pgsizes below 4 KiB", C, msg(1, version(caps({"pgsizes": 0x1800})), REPLY), 0, EINVAL),
    ("reply migration pgsize below 4 KiB", C, msg(1, version(caps({"migration": {"pgsize": 2048}})), REPLY), 0,
     EINVAL),
    ("reply max_bitmap_size above 256 MiB", C,
     msg(1, version(caps({"migration": {"max_bitmap_size": (256 << 20) + 1}})), REPLY), 0, EINVAL),
    ("reply twin socket without fd_index", C, msg(1, version(caps({"twin_socket": {"supported": True}})), REPLY),
     1, EINVAL),
    ("reply twin socket fd_index beyond the fds", C,
     msg(1, version(caps({"twin_socket": {"supported": True, "fd_index": 1}})), REPLY), 1, EINVAL),
    ("reply with a stray fd", C, msg(1, version(caps({})), REPLY), 1, EINVAL),
    # --- DMA_MAP (libvfio-user handle_dma_map) --------------------------------------------------------------
    ("DMA_MAP short", S, msg(2, u32(32, 3) + u64(0, 0)), 0, EINVAL),
    ("DMA_MAP argsz below 32", S, msg(2, u32(24, 3) + u64(0, 0, 4096)), 0, EINVAL),
    ("DMA_MAP trailing bytes", S, msg(2, u32(32, 3) + u64(0, 0, 4096) + u32(0)), 0, EINVAL),
    ("DMA_MAP two fds", S, msg(2, u32(32, 3) + u64(0, 0, 4096)), 2, EINVAL),
    ("DMA_MAP MMAP without fd", S, msg(2, u32(32, 7) + u64(0, 0, 4096)), 0, EINVAL),
    ("DMA_MAP FILE_IO without fd", S, msg(2, u32(32, 0xB) + u64(0, 0, 4096)), 0, EINVAL),
    ("DMA_MAP MMAP and FILE_IO", S, msg(2, u32(32, 0xF) + u64(0, 0, 4096)), 1, EINVAL),
    ("DMA_MAP unknown flag", S, msg(2, u32(32, 0x13) + u64(0, 0, 4096)), 0, EINVAL),
    # --- DMA_UNMAP (libvfio-user is_valid_unmap) ------------------------------------------------------------
    ("DMA_UNMAP short", S, msg(3, u32(24, 0) + u64(0)), 0, EINVAL),
    ("DMA_UNMAP VADDR flag", S, msg(3, u32(24, 4) + u64(0, 4096)), 0, EINVAL),
    ("DMA_UNMAP ALL with GET_DIRTY_BITMAP", S, msg(3, u32(24, 3) + u64(0, 0)), 0, EINVAL),
    ("DMA_UNMAP ALL with an address", S, msg(3, u32(24, 2) + u64(0x1000, 0)), 0, EINVAL),
    ("DMA_UNMAP ALL with a size", S, msg(3, u32(24, 2) + u64(0, 0x1000)), 0, EINVAL),
    ("DMA_UNMAP argsz below 24", S, msg(3, u32(16, 0) + u64(0, 4096)), 0, EINVAL),
    ("DMA_UNMAP argsz above max_data_xfer_size", S, msg(3, u32(MB + 1, 0) + u64(0, 4096)), 0, EINVAL),
    ("DMA_UNMAP trailing bytes", S, msg(3, u32(24, 0) + u64(0, 4096) + u32(0)), 0, EINVAL),
    ("DMA_UNMAP bitmap header missing", S, msg(3, u32(48, 1) + u64(0, 4096)), 0, EINVAL),
    ("DMA_UNMAP argsz too small for the bitmap", S, msg(3, u32(47, 1) + u64(0, 0x4000) + u64(4096, 8)), 0,
     EINVAL),
    ("DMA_UNMAP request with bitmap data", S, msg(3, u32(48, 1) + u64(0, 0x4000) + u64(4096, 8) + u64(0)), 0,
     EINVAL),
    ("DMA_UNMAP reply bitmap shorter than size", C, msg(3, u32(48, 1) + u64(0, 0x4000) + u64(4096, 8) + u32(0),
                                                        REPLY), 0, EINVAL),
    # --- DEVICE_GET_INFO ------------------------------------------------------------------------------------
    ("GET_INFO short", S, msg(4, u32(16, 0, 0)), 0, EINVAL),
    ("GET_INFO argsz below 16", S, msg(4, u32(8, 0, 0, 0)), 0, EINVAL),
    ("GET_INFO payload beyond argsz", S, msg(4, u32(16, 0, 0, 0, 0)), 0, EINVAL),
    ("GET_INFO reply too many regions", C, msg(4, u32(16, 3, 101, 5), REPLY), 0, EINVAL),
    ("GET_INFO reply too many irqs", C, msg(4, u32(16, 3, 9, 51), REPLY), 0, EINVAL),
    ("GET_INFO reply trailing bytes", C, msg(4, u32(16, 3, 9, 5, 0), REPLY), 0, EINVAL),
    # --- DEVICE_GET_REGION_INFO -----------------------------------------------------------------------------
    ("REGION_INFO short", S, msg(5, REGION_INFO_REQ[:24]), 0, EINVAL),
    ("REGION_INFO argsz below 32", S, msg(5, u32(16, 0, 1, 0) + u64(0, 0)), 0, EINVAL),
    ("REGION_INFO payload beyond argsz", S, msg(5, REGION_INFO_REQ + u64(0)), 0, EINVAL),
    ("REGION_INFO reply CAPS with cap_offset 0 (Linux style)", C, msg(5, u32(80, 0xF, 1, 0) + u64(0x3000, 0),
                                                                     REPLY), 0, EINVAL),
    ("REGION_INFO reply cap_offset beyond argsz", C, msg(5, u32(32, 0xF, 1, 40) + u64(0x3000, 0), REPLY), 0,
     EINVAL),
    ("REGION_INFO reply two fds", C, msg(5, u32(32, 7, 1, 0) + u64(0x3000, 0), REPLY), 2, EINVAL),
    ("REGION_INFO reply partial chain", C, msg(5, u32(80, 0xF, 1, 32) + u64(0x3000, 0) + u64(0), REPLY), 0,
     EINVAL),
    ("REGION_INFO reply bytes without CAPS", C, msg(5, u32(40, 7, 1, 0) + u64(0x3000, 0) + u64(0), REPLY), 0,
     EINVAL),
    ("REGION_INFO reply chain loop", C, msg(5, u32(48, 0xF, 1, 32) + u64(0x3000, 0) + le(3, 2) + le(1, 2)
                                         + u32(40) + le(3, 2) + le(1, 2) + u32(32), REPLY), 0, EINVAL),
    ("REGION_INFO reply chain points into the struct", C, msg(5, u32(40, 0xF, 1, 32) + u64(0x3000, 0) + le(3, 2)
                                                           + le(1, 2) + u32(8), REPLY), 0, EINVAL),
    ("REGION_INFO reply chain not at 32", C, msg(5, u32(48, 0xF, 1, 40) + u64(0x3000, 0) + u64(0) + le(3, 2)
                                              + le(1, 2) + u32(0), REPLY), 0, EINVAL),
    ("REGION_INFO reply gap after a cap", C, msg(5, u32(56, 0xF, 1, 32) + u64(0x3000, 0) + le(3, 2) + le(1, 2)
                                             + u32(48) + u64(0) + le(3, 2) + le(1, 2) + u32(0), REPLY), 0, EINVAL),
    ("REGION_INFO reply bytes after the last cap", C, msg(5, u32(48, 0xF, 1, 32) + u64(0x3000, 0) + le(3, 2)
                                                       + le(1, 2) + u32(0) + u64(0), REPLY), 0, EINVAL),
    ("REGION_INFO reply cap header cut", C, msg(5, u32(36, 0xF, 1, 32) + u64(0x3000, 0) + u32(3), REPLY), 0,
     EINVAL),
    ("REGION_INFO reply sparse areas cut", C, msg(5, u32(64, 0xF, 1, 32) + u64(0x3000, 0) + le(1, 2) + le(1, 2)
                                               + u32(0) + u32(2, 0) + u64(0, 0x1000), REPLY), 0, EINVAL),
    ("REGION_INFO reply type cap cut", C, msg(5, u32(44, 0xB, 9, 32) + u64(0x1000, 0) + le(2, 2) + le(1, 2)
                                           + u32(0) + u32(1), REPLY), 0, EINVAL),
    # --- DEVICE_GET_REGION_IO_FDS ---------------------------------------------------------------------------
    ("IO_FDS short", S, msg(6, u32(16, 0, 0)), 0, EINVAL),
    ("IO_FDS flags", S, msg(6, u32(256, 1, 0, 0)), 0, EINVAL),
    ("IO_FDS count", S, msg(6, u32(256, 0, 0, 1)), 0, EINVAL),
    ("IO_FDS argsz below 16", S, msg(6, u32(8, 0, 0, 0)), 0, EINVAL),
    ("IO_FDS argsz above max_data_xfer_size", S, msg(6, u32(MB + 1, 0, 0, 0)), 0, EINVAL),
    ("IO_FDS reply flags", C, msg(6, u32(16, 1, 0, 0), REPLY), 0, EINVAL),
    ("IO_FDS reply stride 44", C, msg(6, u32(60, 0, 0, 1) + bytes(44), REPLY), 1, EINVAL),
    ("IO_FDS reply length is not argsz", C, msg(6, u32(96, 0, 0, 1) + bytes(40), REPLY), 1, EINVAL),
    ("IO_FDS reply entries but count 0", C, msg(6, u32(56, 0, 0, 0) + bytes(40), REPLY), 1, EINVAL),
    ("IO_FDS reply without fds", C, msg(6, u32(56, 0, 0, 1) + u64(0, 4) + u32(0, 0, 0, 0) + u64(0), REPLY), 0,
     EINVAL),
    ("IO_FDS reply fd_index beyond the fds", C, msg(6, u32(56, 0, 0, 1) + u64(0, 4) + u32(1, 0, 0, 0) + u64(0),
                                                    REPLY), 1, EINVAL),
    ("IO_FDS reply unknown type", C, msg(6, u32(56, 0, 0, 1) + u64(0, 4) + u32(0, 3, 0, 0) + u64(0), REPLY), 1,
     EINVAL),
    ("IO_FDS reply shadow in the 40-byte layout", C, msg(6, u32(56, 0, 0, 1) + u64(0, 4) + u32(0, 2, 0, 0)
                                                         + u64(0), REPLY), 1, EINVAL),
    ("IO_FDS short reply with fds", C, msg(6, u32(56, 0, 0, 1), REPLY), 1, EINVAL),
    # --- DEVICE_GET_IRQ_INFO / DEVICE_SET_IRQS (libvfio-user device_set_irqs_validate + Linux flag check) ---
    ("IRQ_INFO short", S, msg(7, u32(16, 0, 0)), 0, EINVAL),
    ("IRQ_INFO argsz below 16", S, msg(7, u32(15, 0, 0, 0)), 0, EINVAL),
    ("IRQ_INFO reply trailing", C, msg(7, u32(16, 1, 0, 1, 0), REPLY), 0, EINVAL),
    ("SET_IRQS short", S, msg(8, u32(20, 0x24, 0, 0)), 0, EINVAL),
    ("SET_IRQS argsz below 20", S, msg(8, u32(16, 0x24, 0, 0, 1)), 1, EINVAL),
    ("SET_IRQS unknown flag bit", S, msg(8, u32(20, 0x64, 0, 0, 1)), 1, EINVAL),
    ("SET_IRQS two actions", S, msg(8, u32(20, 0x19, 0, 0, 1)), 0, EINVAL),
    ("SET_IRQS no action", S, msg(8, u32(20, 0x01, 0, 0, 1)), 0, EINVAL),
    ("SET_IRQS two data types", S, msg(8, u32(20, 0x23, 0, 0, 1)), 0, EINVAL),
    ("SET_IRQS no data type", S, msg(8, u32(20, 0x20, 0, 0, 1)), 0, EINVAL),
    ("SET_IRQS bool count mismatch", S, msg(8, u32(22, 0x0A, 0, 0, 3) + b"\1\1"), 0, EINVAL),
    ("SET_IRQS eventfd array in the payload", S, msg(8, u32(24, 0x24, 0, 0, 1) + u32(5)), 0, EINVAL),
    ("SET_IRQS count 0 with start 1", S, msg(8, u32(20, 0x21, 0, 1, 0)), 0, EINVAL),
    ("SET_IRQS count 0 with MASK", S, msg(8, u32(20, 0x09, 0, 0, 0)), 0, EINVAL),
    ("SET_IRQS count 0 with EVENTFD", S, msg(8, u32(20, 0x24, 0, 0, 0)), 0, EINVAL),
    ("SET_IRQS fds without EVENTFD", S, msg(8, u32(20, 0x21, 0, 0, 1)), 1, EINVAL),
    ("SET_IRQS fds not matching count", S, msg(8, u32(20, 0x24, 2, 0, 3)), 2, EINVAL),
    # --- REGION_READ / REGION_WRITE / WRITE_MULTI (libvfio-user is_valid_region_access) --------------------
    ("REGION_READ short", S, msg(9, u64(0) + u32(7)), 0, EINVAL),
    ("REGION_READ count above max", S, msg(9, u64(0) + u32(7, MB + 1)), 0, EINVAL),
    ("REGION_READ trailing bytes", S, msg(9, u64(0) + u32(7, 4) + u32(0)), 0, EINVAL),
    ("REGION_READ reply data short", C, msg(9, u64(0) + u32(7, 4) + b"ab", REPLY), 0, EINVAL),
    ("REGION_WRITE count above max", S, msg(10, u64(0) + u32(0, MB + 1) + bytes(16)), 0, EINVAL),
    ("REGION_WRITE count bigger than data", S, msg(10, u64(0) + u32(0, 4) + b"ab"), 0, EINVAL),
    ("REGION_WRITE count smaller than data", S, msg(10, u64(0) + u32(0, 1) + b"ab"), 0, EINVAL),
    ("REGION_WRITE reply with data", C, msg(10, u64(0) + u32(0, 2) + b"ab", REPLY), 0, EINVAL),
    ("WRITE_MULTI short", S, msg(15, u32(1)), 0, EINVAL),
    ("WRITE_MULTI count mismatch", S, msg(15, u64(2) + u64(0) + u32(0, 4) + bytes(8)), 0, EINVAL),
    ("WRITE_MULTI partial entry", S, msg(15, u64(1) + u64(0) + u32(0, 4) + bytes(4)), 0, EINVAL),
    ("WRITE_MULTI write of 9 bytes", S, msg(15, u64(1) + u64(0) + u32(0, 9) + bytes(8)), 0, EINVAL),
    ("WRITE_MULTI reply trailing", C, msg(15, u64(1, 0), REPLY), 0, EINVAL),
    # --- DMA_READ / DMA_WRITE at the client (QEMU vfio_user_dma_read/write) --------------------------------
    ("DMA_READ short", C, msg(11, u64(0) + u32(4)), 0, EINVAL),
    ("DMA_READ count above max", C, msg(11, u64(0, MB + 1)), 0, E2BIG),
    ("DMA_READ trailing bytes", C, msg(11, u64(0, 4) + u32(0)), 0, EINVAL),
    ("DMA_READ reply count mismatch", S, msg(11, u64(0, 4) + b"abc", REPLY), 0, EINVAL),
    ("DMA_WRITE count beyond data", C, msg(12, u64(0, 8) + b"abcd"), 0, E2BIG),
    ("DMA_WRITE count short of data", C, msg(12, u64(0, 2) + b"abcd"), 0, EINVAL),
    ("DMA_WRITE reply of 8 bytes", S, msg(12, u64(0), REPLY), 0, EINVAL),
    # --- DEVICE_FEATURE (Linux vfio_ioctl_device_feature; libvfio-user handle_device_feature) ---------------
    ("FEATURE short", S, msg(16, u32(8)), 0, EINVAL),
    ("FEATURE unknown flag bit", S, msg(16, u32(16, 0x90001)), 0, EINVAL),
    ("FEATURE no operation", S, msg(16, u32(16, 0x1)), 0, EINVAL),
    ("FEATURE GET and SET without PROBE", S, msg(16, u32(16, 0x30002)), 0, EINVAL),
    ("FEATURE SET of MIGRATION", S, msg(16, u32(16, 0x20001) + u64(1)), 0, EINVAL),
    ("FEATURE PROBE GET|SET of MIGRATION", S, msg(16, u32(8, 0x70001)), 0, EINVAL),
    ("FEATURE GET of DMA_LOGGING_START", S, msg(16, u32(64, 0x10006)), 0, EINVAL),
    ("FEATURE GET MIGRATION argsz 8", S, msg(16, u32(8, 0x10001)), 0, EINVAL),
    ("FEATURE GET MIG_DEVICE_STATE argsz 15", S, msg(16, u32(15, 0x10002)), 0, EINVAL),
    ("FEATURE SET argsz below the payload", S, msg(16, u32(15, 0x20002, 1, 0)), 0, EINVAL),
    ("FEATURE PROBE argsz below the payload", S, msg(16, u32(7, 0x40001)), 0, EINVAL),
    ("FEATURE SET MIG_DEVICE_STATE 4 bytes", S, msg(16, u32(12, 0x20002, 1)), 0, EINVAL),
    ("FEATURE SET MIG_DEVICE_STATE 12 bytes", S, msg(16, u32(20, 0x20002, 1, 0, 0)), 0, EINVAL),
    ("FEATURE LOGGING_START short control", S, msg(16, u32(16, 0x20006) + u64(4096)), 0, EINVAL),
    ("FEATURE LOGGING_START ranges missing", S, msg(16, u32(40, 0x20006) + u64(4096) + u32(2, 0)
                                                   + u64(0, 4096)), 0, EINVAL),
    ("FEATURE REPORT page_size 0", S, msg(16, u32(40, 0x10008) + u64(0, 0x20000, 0)), 0, EINVAL),
    ("FEATURE REPORT page_size not a power of 2", S, msg(16, u32(40, 0x10008) + u64(0, 0x20000, 0x3000)), 0,
     EINVAL),
    ("FEATURE REPORT length below page_size", S, msg(16, u32(40, 0x10008) + u64(0, 0x800, 0x1000)), 0, EINVAL),
    ("FEATURE REPORT argsz too small for the bitmap", S, msg(16, u32(39, 0x10008) + u64(0, 0x20000, 0x1000)), 0,
     EINVAL),
    ("FEATURE REPORT request short", S, msg(16, u32(40, 0x10008) + u64(0, 0x20000)), 0, EINVAL),
    ("FEATURE REPORT request with a bitmap", S, msg(16, u32(48, 0x10008) + u64(0, 0x20000, 0x1000, 0)), 0,
     EINVAL),
    ("FEATURE GET MIGRATION reply 4 bytes", C, msg(16, u32(12, 0x10001, 5), REPLY), 0, EINVAL),
    ("FEATURE GET MIG_DATA_SIZE reply empty", C, msg(16, u32(8, 0x10009), REPLY), 0, EINVAL),
    ("FEATURE REPORT reply bitmap of 5 bytes", C, msg(16, u32(37, 0x10008) + u64(0, 0x20000, 0x1000) + bytes(5),
                                                      REPLY), 0, EINVAL),
    ("FEATURE SET MIG_DEVICE_STATE reply short", C, msg(16, u32(16, 0x20002, 1), REPLY), 0, EINVAL),
    # --- MIG_DATA_READ / MIG_DATA_WRITE (libvfio-user handle_mig_data_read/write) --------------------------
    ("MIG_DATA_READ short", S, msg(17, u32(8)), 0, EINVAL),
    ("MIG_DATA_READ trailing", S, msg(17, u32(24, 16, 0)), 0, EINVAL),
    ("MIG_DATA_READ size above max", S, msg(17, u32(MB + 9, MB + 1)), 0, EINVAL),
    ("MIG_DATA_READ argsz too small", S, msg(17, u32(23, 16)), 0, EINVAL),
    ("MIG_DATA_READ reply data short", C, msg(17, u32(16, 8) + b"abcd", REPLY), 0, EINVAL),
    ("MIG_DATA_WRITE size above max", S, msg(18, u32(MB + 9, MB + 1) + bytes(MB + 1)), 0, EINVAL),
    ("MIG_DATA_WRITE argsz too small", S, msg(18, u32(11, 4) + b"abcd"), 0, EINVAL),
    ("MIG_DATA_WRITE short write", S, msg(18, u32(12, 4) + b"ab"), 0, EINVAL),
    ("MIG_DATA_WRITE extra data", S, msg(18, u32(16, 4) + b"abcdefgh"), 0, EINVAL),
]

LIMITS = Limits(max_data_xfer_size=MB, max_msg_fds=16, max_msg_size=2 * MB)


@pytest.mark.parametrize(("role", "wire", "nfds", "err"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_refused(role: Role, wire: bytes, nfds: int, err: int) -> None:
    with pytest.raises(ProtocolError) as info:
        decode(wire, tuple(range(100, 100 + nfds)), role=role, limits=LIMITS)
    assert info.value.errno == err, str(info.value)
    assert info.value.header is not None and info.value.header.msg_id == 0x42
    assert info.value.message  # a precise reason, not an empty string


def test_msg_size_ceiling_defaults_to_max_data_xfer_size_plus_overhead() -> None:
    wire = msg(10, u64(0) + u32(0, 1000) + bytes(1000))
    decode(wire, role=S, limits=Limits(max_data_xfer_size=1000))
    with pytest.raises(ProtocolError) as info:
        decode(wire, role=S, limits=Limits(max_data_xfer_size=1000, max_msg_size=1031))
    assert info.value.errno == EINVAL and "msg_size" in info.value.message


def test_shorter_than_a_header_has_no_header() -> None:
    with pytest.raises(ProtocolError) as info:
        decode(b"\x01\x00\x01\x00\x14\x00", role=S)
    assert info.value.errno == EINVAL and info.value.header is None


def test_error_reply_for_an_unknown_command_echoes_it() -> None:
    """libvfio-user's do_reply echoes the header's command, even one it does not know (999 here)."""
    wire, _ = encode(error_reply(999, 7, EINVAL))
    assert wire == h("0700 e703 10000000 21000000 16000000")


def test_encode_refuses_what_cannot_be_encoded() -> None:
    for body, cmd in ((DmaMap(-1, 4096), Command.DMA_MAP), (IrqSet(0, 0x24, 0, 1 << 32), Command.DEVICE_SET_IRQS),
                      (RegionWriteMulti((RegionWrite(0, 0, bytes(9)),)), Command.REGION_WRITE_MULTI)):
        with pytest.raises(ProtocolError) as info:
            encode(request(cmd, body))
        assert info.value.errno == EINVAL and "cannot encode" in info.value.message
    with pytest.raises(ProtocolError, match="payload must be DmaMap"):
        encode(request(Command.DMA_MAP, IrqSet(0, 0x21)))
    with pytest.raises(ProtocolError, match="carries no file descriptors"):
        encode(request(Command.DEVICE_GET_INFO, DeviceInfo(), fds=[3]))
    with pytest.raises(ProtocolError, match="has no payload"):
        encode(request(Command.DEVICE_RESET, DeviceInfo()))
