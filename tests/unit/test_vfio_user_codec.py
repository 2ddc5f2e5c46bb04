"""Golden byte vectors for every vfio-user message, both ways (decode gives the message, encode gives the bytes).

Each vector was written by hand from the spec tables (QEMU docs/interop/vfio-user.rst; header <HHIII>, every
field little-endian) and the VFIO structs of include/uapi/linux/vfio.h; values are the ones real peers sent
where we saw them (vfio-user.md: QEMU 11.1.3's DMA windows and SET_IRQS sequence, libvfio-user's sample
BAR1 with two sparse areas, the SeaBIOS reset vector read by DMA_READ).  Hex is grouped by field.
"""

from __future__ import annotations

import pytest

from vfiolab.vfio_user import (
    Capabilities,
    Command,
    DeviceFeature,
    DeviceInfo,
    DmaBitmap,
    DmaLoggingControl,
    DmaLoggingRange,
    DmaLoggingReport,
    DmaMap,
    DmaRead,
    DmaReadReply,
    DmaUnmap,
    DmaWrite,
    DmaWriteReply,
    IoFdsReply,
    IoFdsRequest,
    IrqInfo,
    IrqSet,
    Message,
    MigData,
    MigDataRead,
    MigDataSize,
    MigrationCaps,
    MigrationInfo,
    MigState,
    MsixMappableCap,
    RawCap,
    RegionInfo,
    RegionRead,
    RegionReadReply,
    RegionWrite,
    RegionWriteMulti,
    RegionWriteMultiReply,
    RegionWriteReply,
    Role,
    SparseMmapArea,
    SparseMmapCap,
    SubRegionFd,
    TwinSocket,
    TypeCap,
    Version,
    decode,
    encode,
)

S, C = Role.SERVER, Role.CLIENT


def h(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


def hdr(msg_id: int, cmd: int, size: int, flags: int = 0, error: int = 0) -> bytes:
    """The 16-byte header, field by field (for the vectors whose size depends on a JSON string)."""
    return b"".join(v.to_bytes(n, "little") for v, n in ((msg_id, 2), (cmd, 2), (size, 4), (flags, 4), (error, 4)))


def req(cmd: Command, body: object = None, msg_id: int = 0, fds: tuple[int, ...] = (), no_reply: bool = False
        ) -> Message:
    return Message(cmd, msg_id, body, False, no_reply, None, fds)  # type: ignore[arg-type]


def rep(cmd: Command, body: object = None, msg_id: int = 0, fds: tuple[int, ...] = ()) -> Message:
    return Message(cmd, msg_id, body, True, False, None, fds)  # type: ignore[arg-type]


LVU_JSON = b'{"capabilities": {"max_msg_fds": 8, "max_data_xfer_size": 1048576, "migration": {"pgsize": 4096}}}'
LVU_CAPS = Capabilities(max_msg_fds=8, max_data_xfer_size=1048576, migration=MigrationCaps(pgsize=4096))
FD_DATA = bytes(range(32))

VECTORS: list[tuple[str, Role, bytes, tuple[int, ...], Message]] = [
    # --- VERSION -------------------------------------------------------------------------------------------
    ("version-request-no-json", S, h("0700 0100 14000000 00000000 00000000  0000 0200"), (),
     req(Command.VERSION, Version(0, 2), 7)),
    ("version-reply-libvfio-user", C, hdr(7, 1, 16 + 4 + len(LVU_JSON) + 1, 1) + h("0000 0000") + LVU_JSON + b"\0",
     (), rep(Command.VERSION, Version(0, 0, LVU_CAPS), 7)),
    # --- DMA_MAP / DMA_UNMAP (QEMU's first window without fds; a memfd window with one) ----------------------
    ("dma-map", S, h("0100 0200 30000000 00000000 00000000  20000000 03000000 0000000000000000 0000000000000000"
                     "00000c0000000000"), (), req(Command.DMA_MAP, DmaMap(0, 0xC0000), 1)),
    ("dma-map-fd", S, h("0300 0200 30000000 00000000 00000000  20000000 03000000 0000100000000000"
                        "0000100000000000 0000f00f00000000"), (9,),
     req(Command.DMA_MAP, DmaMap(0x100000, 0xFF00000, 0x100000), 3, (9,))),
    ("dma-map-readonly-mmap", S, h("0200 0200 30000000 00000000 00000000  20000000 05000000 0000000000000000"
                                   "0000feff00000000 0000040000000000"), (4,),
     req(Command.DMA_MAP, DmaMap(0xFFFE0000, 0x40000, 0, 5), 2, (4,))),
    ("dma-map-reply", C, h("0300 0200 10000000 01000000 00000000"), (), rep(Command.DMA_MAP, None, 3)),
    ("dma-unmap", S, h("0400 0300 28000000 00000000 00000000  18000000 00000000 0000100000000000"
                       "0000f00f00000000"), (), req(Command.DMA_UNMAP, DmaUnmap(0x100000, 0xFF00000), 4)),
    ("dma-unmap-reply", C, h("0400 0300 28000000 01000000 00000000  18000000 00000000 0000100000000000"
                             "0000f00f00000000"), (), rep(Command.DMA_UNMAP, DmaUnmap(0x100000, 0xFF00000), 4)),
    ("dma-unmap-all", S, h("0500 0300 28000000 00000000 00000000  18000000 02000000 0000000000000000"
                           "0000000000000000"), (), req(Command.DMA_UNMAP, DmaUnmap(0, 0, 2), 5)),
    ("dma-unmap-dirty", S, h("0600 0300 38000000 00000000 00000000  30000000 01000000 0000010000000000"
                             "0040000000000000  0010000000000000 0800000000000000"), (),
     req(Command.DMA_UNMAP, DmaUnmap(0x10000, 0x4000, 1, 48, DmaBitmap(0x1000, 8)), 6)),
    ("dma-unmap-dirty-reply", C, h("0600 0300 40000000 01000000 00000000  30000000 01000000 0000010000000000"
                                   "0040000000000000  0010000000000000 0800000000000000  0f00000000000000"), (),
     rep(Command.DMA_UNMAP, DmaUnmap(0x10000, 0x4000, 1, 48, DmaBitmap(0x1000, 8, h("0f00000000000000"))), 6)),
    # --- DEVICE_GET_INFO -------------------------------------------------------------------------------------
    ("get-info", S, h("0800 0400 20000000 00000000 00000000  10000000 00000000 00000000 00000000"), (),
     req(Command.DEVICE_GET_INFO, DeviceInfo(), 8)),
    ("get-info-reply", C, h("0800 0400 20000000 01000000 00000000  10000000 03000000 09000000 05000000"), (),
     rep(Command.DEVICE_GET_INFO, DeviceInfo(16, 3, 9, 5), 8)),
    # --- DEVICE_GET_REGION_INFO ------------------------------------------------------------------------------
    ("region-info", S, h("0900 0500 30000000 00000000 00000000  20000000 00000000 01000000 00000000"
                         "0000000000000000 0000000000000000"), (), req(Command.DEVICE_GET_REGION_INFO,
                                                                       RegionInfo(1), 9)),
    ("region-info-short-reply", C, h("0900 0500 30000000 01000000 00000000  50000000 07000000 01000000 00000000"
                                     "0030000000000000 0000000000000000"), (11,),
     rep(Command.DEVICE_GET_REGION_INFO, RegionInfo(1, 0x50, 7, 0, 0x3000), 9, (11,))),
    ("region-info-sparse-reply", C, h(
        "0a00 0500 60000000 01000000 00000000  50000000 0f000000 01000000 20000000 0030000000000000 0000000000000000"
        "0100 0100 00000000  02000000 00000000  0000000000000000 0010000000000000  0020000000000000 0010000000000000"
    ), (11,), rep(Command.DEVICE_GET_REGION_INFO, RegionInfo(
        1, 0x50, 0xF, 0x20, 0x3000, 0,
        (SparseMmapCap((SparseMmapArea(0, 0x1000), SparseMmapArea(0x2000, 0x1000))),)), 10, (11,))),
    ("region-info-two-caps", C, h(
        "0b00 0500 60000000 01000000 00000000  50000000 0b000000 09000000 20000000 0010000000000000 0000000000010000"
        "0100 0100 40000000  01000000 00000000  0000000000000000 0010000000000000"
        "0200 0100 00000000  34120080 01000000"
    ), (), rep(Command.DEVICE_GET_REGION_INFO, RegionInfo(
        9, 0x50, 0xB, 0x20, 0x1000, 1 << 40,
        (SparseMmapCap((SparseMmapArea(0, 0x1000),)), TypeCap(0x80001234, 1))), 11)),
    ("region-info-msix-raw-caps", C, h(
        "0c00 0500 48000000 01000000 00000000  38000000 0f000000 00000000 20000000 0010000000000000 0000000000000000"
        "0300 0100 28000000  0700 0200 00000000 0102030405060708"
    ), (), rep(Command.DEVICE_GET_REGION_INFO, RegionInfo(
        0, 0x38, 0xF, 0x20, 0x1000, 0, (MsixMappableCap(), RawCap(7, 2, h("0102030405060708")))), 12)),
    # --- DEVICE_GET_REGION_IO_FDS ----------------------------------------------------------------------------
    ("io-fds", S, h("0d00 0600 20000000 00000000 00000000  00010000 00000000 00000000 00000000"), (),
     req(Command.DEVICE_GET_REGION_IO_FDS, IoFdsRequest(0, 0x100), 13)),
    ("io-fds-reply-spec", C, h(
        "0d00 0600 70000000 01000000 00000000  60000000 00000000 00000000 02000000"
        "0010000000000000 0400000000000000 00000000 00000000 01000000 00000000 3412000000000000"
        "0020000000000000 0800000000000000 01000000 01000000 00000000 00000000 efbeadde00000000"
    ), (20, 21), rep(Command.DEVICE_GET_REGION_IO_FDS, IoFdsReply(0, 0x60, 2, (
        SubRegionFd(0x1000, 4, 0, 0, 1, 0x1234), SubRegionFd(0x2000, 8, 1, 1, 0, 0xDEADBEEF))), 13, (20, 21))),
    ("io-fds-reply-libvfio-user-shadow", C, h(
        "0e00 0600 50000000 01000000 00000000  40000000 00000000 00000000 01000000"
        "0010000000000000 0400000000000000 00000000 02000000 00000000 01000000 0000010000000000 0000000000000000"
    ), (20, 21), rep(Command.DEVICE_GET_REGION_IO_FDS, IoFdsReply(0, 0x40, 1, (
        SubRegionFd(0x1000, 4, 0, 2, 0, 0, 1, 0x10000),), entry_size=48), 14, (20, 21))),
    ("io-fds-reply-too-small", C, h("0f00 0600 20000000 01000000 00000000  60000000 00000000 00000000 02000000"),
     (), rep(Command.DEVICE_GET_REGION_IO_FDS, IoFdsReply(0, 0x60, 2), 15)),
    # --- DEVICE_GET_IRQ_INFO / DEVICE_SET_IRQS ---------------------------------------------------------------
    ("irq-info", S, h("1000 0700 20000000 00000000 00000000  10000000 00000000 03000000 00000000"), (),
     req(Command.DEVICE_GET_IRQ_INFO, IrqInfo(3), 16)),
    ("irq-info-reply", C, h("1000 0700 20000000 01000000 00000000  10000000 01000000 03000000 01000000"), (),
     rep(Command.DEVICE_GET_IRQ_INFO, IrqInfo(3, 16, 1, 1), 16)),
    ("set-irqs-eventfd", S, h("1100 0800 24000000 00000000 00000000  14000000 24000000 00000000 00000000"
                              "01000000"), (30,), req(Command.DEVICE_SET_IRQS, IrqSet(0, 0x24, 0, 1), 17, (30,))),
    ("set-irqs-deassign", S, h("1400 0800 24000000 00000000 00000000  14000000 24000000 02000000 00000000"
                               "01000000"), (), req(Command.DEVICE_SET_IRQS, IrqSet(2, 0x24, 0, 1), 20)),
    ("set-irqs-disable", S, h("1200 0800 24000000 00000000 00000000  14000000 21000000 00000000 00000000"
                              "00000000"), (), req(Command.DEVICE_SET_IRQS, IrqSet(0, 0x21), 18)),
    ("set-irqs-bool-mask", S, h("1300 0800 27000000 00000000 00000000  17000000 0a000000 02000000 00000000"
                                "03000000 010001"), (),
     req(Command.DEVICE_SET_IRQS, IrqSet(2, 0x0A, 0, 3, b"\x01\x00\x01"), 19)),
    ("set-irqs-reply", C, h("1100 0800 10000000 01000000 00000000"), (), rep(Command.DEVICE_SET_IRQS, None, 17)),
    # --- REGION_READ / REGION_WRITE / REGION_WRITE_MULTI -----------------------------------------------------
    ("region-read", S, h("1500 0900 20000000 00000000 00000000  0000000000000000 07000000 04000000"), (),
     req(Command.REGION_READ, RegionRead(7, 0, 4), 21)),
    ("region-read-reply", C, h("1500 0900 24000000 01000000 00000000  0000000000000000 07000000 04000000"
                               "4f49c80d"), (), rep(Command.REGION_READ, RegionReadReply(7, 0, h("4f49c80d")), 21)),
    ("region-write-posted", S, h("1600 0a00 24000000 10000000 00000000  3000000000000000 07000000 04000000"
                                 "00f8ffff"), (),
     req(Command.REGION_WRITE, RegionWrite(7, 0x30, h("00f8ffff")), 22, no_reply=True)),
    ("region-write-reply", C, h("1700 0a00 20000000 01000000 00000000  3000000000000000 07000000 04000000"), (),
     rep(Command.REGION_WRITE, RegionWriteReply(7, 0x30, 4), 23)),
    ("region-write-multi", S, h(
        "1b00 0f00 48000000 10000000 00000000  0200000000000000"
        "1000000000000000 00000000 04000000 7856341200000000"
        "1400000000000000 00000000 01000000 ff00000000000000"
    ), (), req(Command.REGION_WRITE_MULTI, RegionWriteMulti((RegionWrite(0, 0x10, h("78563412")),
                                                             RegionWrite(0, 0x14, b"\xff"))), 27, no_reply=True)),
    ("region-write-multi-reply", C, h("1b00 0f00 18000000 01000000 00000000  0200000000000000"), (),
     rep(Command.REGION_WRITE_MULTI, RegionWriteMultiReply(2), 27)),
    # --- DMA_READ / DMA_WRITE (server -> client) -------------------------------------------------------------
    ("dma-read", C, h("1800 0b00 20000000 00000000 00000000  f0ffffff00000000 1000000000000000"), (),
     req(Command.DMA_READ, DmaRead(0xFFFFFFF0, 16), 24)),
    ("dma-read-reply", S, h("1800 0b00 30000000 01000000 00000000  f0ffffff00000000 1000000000000000"
                            "ea5be000f030362f32332f393900fc00"), (),
     rep(Command.DMA_READ, DmaReadReply(0xFFFFFFF0, h("ea5be000f030362f32332f393900fc00")), 24)),
    ("dma-write", C, hdr(25, 12, 64) + h("0070000000000000 2000000000000000") + FD_DATA, (),
     req(Command.DMA_WRITE, DmaWrite(0x7000, FD_DATA), 25)),
    ("dma-write-reply-16", S, h("1900 0c00 20000000 01000000 00000000  0070000000000000 2000000000000000"), (),
     rep(Command.DMA_WRITE, DmaWriteReply(0x7000, 32, 16), 25)),
    ("dma-write-reply-12", S, h("1900 0c00 1c000000 01000000 00000000  0070000000000000 20000000"), (),
     rep(Command.DMA_WRITE, DmaWriteReply(0x7000, 32, 12), 25)),
    ("dma-write-reply-0", S, h("1900 0c00 10000000 01000000 00000000"), (),
     rep(Command.DMA_WRITE, DmaWriteReply(0, 0, 0), 25)),
    # --- DEVICE_RESET ----------------------------------------------------------------------------------------
    ("reset", S, h("1a00 0d00 10000000 00000000 00000000"), (), req(Command.DEVICE_RESET, None, 26)),
    ("reset-reply", C, h("1a00 0d00 10000000 01000000 00000000"), (), rep(Command.DEVICE_RESET, None, 26)),
    # --- DEVICE_FEATURE --------------------------------------------------------------------------------------
    ("feature-get-migration", S, h("1c00 1000 18000000 00000000 00000000  10000000 01000100"), (),
     req(Command.DEVICE_FEATURE, DeviceFeature(0x10001), 28)),
    ("feature-get-migration-reply", C, h("1c00 1000 20000000 01000000 00000000  10000000 01000100"
                                         "0500000000000000"), (),
     rep(Command.DEVICE_FEATURE, DeviceFeature(0x10001, MigrationInfo(5), 16), 28)),
    ("feature-set-state", S, h("1d00 1000 20000000 00000000 00000000  10000000 02000200 03000000 ffffffff"), (),
     req(Command.DEVICE_FEATURE, DeviceFeature(0x20002, MigState(3)), 29)),
    ("feature-set-state-reply", C, h("1d00 1000 20000000 01000000 00000000  10000000 02000200 03000000 ffffffff"),
     (), rep(Command.DEVICE_FEATURE, DeviceFeature(0x20002, MigState(3)), 29)),
    ("feature-get-state", S, h("1e00 1000 18000000 00000000 00000000  10000000 02000100"), (),
     req(Command.DEVICE_FEATURE, DeviceFeature(0x10002), 30)),
    ("feature-get-state-reply", C, h("1e00 1000 20000000 01000000 00000000  10000000 02000100 02000000 00000000"),
     (), rep(Command.DEVICE_FEATURE, DeviceFeature(0x10002, MigState(2, 0), 16), 30)),
    ("feature-logging-start", S, h("1f00 1000 38000000 00000000 00000000  28000000 06000200  0010000000000000"
                                   "01000000 00000000  0000100000000000 0000200000000000"), (),
     req(Command.DEVICE_FEATURE, DeviceFeature(0x20006, DmaLoggingControl(
         0x1000, (DmaLoggingRange(0x100000, 0x200000),))), 31)),
    ("feature-logging-stop", S, h("2000 1000 18000000 00000000 00000000  08000000 07000200"), (),
     req(Command.DEVICE_FEATURE, DeviceFeature(0x20007), 32)),
    ("feature-logging-report", S, h("2100 1000 30000000 00000000 00000000  28000000 08000100"
                                    "0000010000000000 0000020000000000 0010000000000000"), (),
     req(Command.DEVICE_FEATURE, DeviceFeature(0x10008, DmaLoggingReport(0x10000, 0x20000, 0x1000)), 33)),
    ("feature-logging-report-reply", C, h("2100 1000 38000000 01000000 00000000  28000000 08000100"
                                          "0000010000000000 0000020000000000 0010000000000000 0300000000000000"),
     (), rep(Command.DEVICE_FEATURE, DeviceFeature(0x10008, DmaLoggingReport(
         0x10000, 0x20000, 0x1000, h("0300000000000000")), 40), 33)),
    ("feature-mig-data-size-reply", C, h("2200 1000 20000000 01000000 00000000  10000000 09000100"
                                         "3412000000000000"), (),
     rep(Command.DEVICE_FEATURE, DeviceFeature(0x10009, MigDataSize(0x1234), 16), 34)),
    ("feature-probe", S, h("2300 1000 18000000 00000000 00000000  08000000 01000500"), (),
     req(Command.DEVICE_FEATURE, DeviceFeature(0x50001), 35)),
    # --- MIG_DATA_READ / MIG_DATA_WRITE ----------------------------------------------------------------------
    ("mig-data-read", S, h("2400 1100 18000000 00000000 00000000  18000000 10000000"), (),
     req(Command.MIG_DATA_READ, MigDataRead(16), 36)),
    ("mig-data-read-reply", C, h("2400 1100 20000000 01000000 00000000  10000000 08000000 0102030405060708"), (),
     rep(Command.MIG_DATA_READ, MigData(h("0102030405060708")), 36)),
    ("mig-data-read-reply-libvfio-user-padded", C, h(
        "2400 1100 28000000 01000000 00000000  10000000 08000000 0102030405060708 0000000000000000"), (),
     rep(Command.MIG_DATA_READ, MigData(h("0102030405060708"), 16, 8), 36)),
    ("mig-data-write", S, h("2500 1200 1c000000 00000000 00000000  0c000000 04000000 deadbeef"), (),
     req(Command.MIG_DATA_WRITE, MigData(h("deadbeef")), 37)),
    ("mig-data-write-reply", C, h("2500 1200 10000000 01000000 00000000"), (),
     rep(Command.MIG_DATA_WRITE, None, 37)),
    # --- error reply -----------------------------------------------------------------------------------------
    ("error-reply", C, h("0900 0500 10000000 21000000 16000000"), (),
     Message(Command.DEVICE_GET_REGION_INFO, 9, None, True, False, 22)),
]


@pytest.mark.parametrize(("role", "wire", "fds", "msg"), [v[1:] for v in VECTORS], ids=[v[0] for v in VECTORS])
def test_golden_decode(role: Role, wire: bytes, fds: tuple[int, ...], msg: Message) -> None:
    got = decode(wire, fds, role=role)
    assert got == msg
    assert got.header is not None and got.header.msg_size == len(wire)


@pytest.mark.parametrize(("wire", "fds", "msg"), [v[2:] for v in VECTORS], ids=[v[0] for v in VECTORS])
def test_golden_encode(wire: bytes, fds: tuple[int, ...], msg: Message) -> None:
    assert encode(msg) == (wire, list(fds))


def test_every_command_and_direction_has_a_vector() -> None:
    covered = {(v[4].command, v[4].reply) for v in VECTORS}
    missing = [(c.name, r) for c in Command for r in (False, True) if (c, r) not in covered]
    assert missing == []


def test_qemu_11_1_version_proposal() -> None:
    """The exact capability JSON QEMU 11.1.3 sent (vfio-user.md section 5), legacy migration object included."""
    text = (b'{"capabilities": {"pgsizes": 4096, "max_msg_fds": 16, "max_dma_maps": 65535, '
            b'"max_data_xfer_size": 1048576, "migration": {"max_bitmap_size": 268435456, "pgsize": 4096}, '
            b'"write_multiple": true}}')
    wire = hdr(0, 1, 16 + 4 + len(text) + 1) + h("0000 0000") + text + b"\0"
    body = decode(wire, role=S).body
    assert body == Version(0, 0, Capabilities(16, 1048576, 65535, 4096, MigrationCaps(4096, 268435456),
                                              None, True))
    assert isinstance(body, Version) and body.capabilities is not None
    assert body.capabilities.effective_max_msg_fds == 16
    assert Capabilities().effective_max_msg_fds == 1 and Capabilities().effective_pgsizes == 4096
    assert Capabilities().effective_max_data_xfer_size == 1 << 20
    assert Capabilities().effective_max_dma_maps == 65535


def test_unknown_capabilities_are_kept() -> None:
    text = b'{"capabilities": {"max_msg_fds": 4, "future": [1, {"x": null}], "twin_socket": {"supported": true}}}'
    wire = hdr(1, 1, 16 + 4 + len(text) + 1) + h("0000 0300") + text + b"\0"
    caps = decode(wire, role=S).body.capabilities  # type: ignore[union-attr]
    assert caps.extra == {"future": [1, {"x": None}]}
    assert caps.twin_socket is not None and caps.twin_socket.supported is True
    again = decode(encode(decode(wire, role=S))[0], role=S)
    assert again.body.capabilities == caps  # type: ignore[union-attr]


def test_twin_socket_reply_with_its_fd() -> None:
    caps = Capabilities(twin_socket=TwinSocket(True, 0))
    wire, fds = encode(Message(Command.VERSION, 3, Version(0, 2, caps), True, fds=(40,)))
    assert fds == [40]
    assert decode(wire, fds, role=C).body == Version(0, 2, caps)


def test_region_info_for_reply_follows_libvfio_user() -> None:
    """argsz is always the full size; caps (and CAPS, cap_offset 32) only when the request's argsz fits them."""
    caps = (SparseMmapCap((SparseMmapArea(0, 0x1000), SparseMmapArea(0x2000, 0x1000))),)
    short = RegionInfo.for_reply(1, 0x7, 0x3000, 0, caps, 32)
    assert short == RegionInfo(1, 80, 0x7, 0, 0x3000, 0)
    full = RegionInfo.for_reply(1, 0x7, 0x3000, 0, caps, 80)
    assert full == RegionInfo(1, 80, 0xF, 32, 0x3000, 0, caps)
    assert len(full.to_bytes()) == 80


def test_argsz_defaults() -> None:
    """Variable-size requests default argsz to what the sender accepts back."""
    assert IrqSet(0, 0x0A, 0, 2, b"\x01\x01").argsz == 22
    assert DeviceFeature(0x10001).argsz == 16  # GET MIGRATION: reply carries u64 flags
    assert DeviceFeature(0x10008, DmaLoggingReport(0, 0x200000, 0x1000)).argsz == 8 + 24 + 64
    assert DeviceFeature(0x20002, MigState(1)).argsz == 16  # SET: echo of the request
    assert MigDataRead(100).argsz == 108 and MigData(b"abc").argsz == 11
