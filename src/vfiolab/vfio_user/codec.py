"""Whole vfio-user messages: header + typed payload + the fds that travel with it (SCM_RIGHTS, kept apart).

``decode`` validates in the order a receiver must (header, direction, fds, then the command's payload rules)
and raises only ``ProtocolError`` whose ``errno`` is what the error reply should carry; ``encode`` is its
inverse.  Which command may travel which way, and with which payload type, is one table (``SPECS``).
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from vfiolab.vfio_user import device, dma, irq, migration, region, version
from vfiolab.vfio_user.protocol import (
    DEFAULT_LIMITS,
    FLAG_ERROR,
    FLAG_NO_REPLY,
    FLAG_TYPE_MASK,
    HEADER,
    HEADER_FLAGS_KNOWN,
    HEADER_SIZE,
    TYPE_COMMAND,
    TYPE_REPLY,
    Command,
    Header,
    Limits,
    ProtocolError,
    Role,
    invalid,
)
from vfiolab.vfio_user.wire import Context, pack, require

Body = (
    version.Version | dma.DmaMap | dma.DmaUnmap | dma.DmaRead | dma.DmaReadReply | dma.DmaWrite
    | dma.DmaWriteReply | device.DeviceInfo | device.RegionInfo | device.IoFdsRequest | device.IoFdsReply
    | irq.IrqInfo | irq.IrqSet | region.RegionRead | region.RegionReadReply | region.RegionWrite
    | region.RegionWriteReply | region.RegionWriteMulti | region.RegionWriteMultiReply | migration.DeviceFeature
    | migration.MigDataRead | migration.MigData
)
Parser = Callable[[bytes, Context], Body]


@dataclass(frozen=True)
class Spec:
    """One direction of one command: its payload type (None = no payload), parser, and whether fds may come."""

    body: type | None
    parse: Parser | None
    fds: bool = False


_NONE: Final = Spec(None, None)
#: (command, is_reply) -> Spec.  Fds: DMA_MAP (region fd), SET_IRQS (eventfds), VERSION reply (twin socket),
#: GET_REGION_INFO reply (mmap fd), GET_REGION_IO_FDS reply (ioeventfds); everything else carries none.
SPECS: Final[dict[tuple[Command, bool], Spec]] = {
    (Command.VERSION, False): Spec(version.Version, version.parse_version),
    (Command.VERSION, True): Spec(version.Version, version.parse_version, fds=True),
    (Command.DMA_MAP, False): Spec(dma.DmaMap, dma.parse_dma_map, fds=True),
    (Command.DMA_MAP, True): _NONE,
    (Command.DMA_UNMAP, False): Spec(dma.DmaUnmap, dma.parse_dma_unmap),
    (Command.DMA_UNMAP, True): Spec(dma.DmaUnmap, dma.parse_dma_unmap),
    (Command.DEVICE_GET_INFO, False): Spec(device.DeviceInfo, device.parse_device_info),
    (Command.DEVICE_GET_INFO, True): Spec(device.DeviceInfo, device.parse_device_info),
    (Command.DEVICE_GET_REGION_INFO, False): Spec(device.RegionInfo, device.parse_region_info),
    (Command.DEVICE_GET_REGION_INFO, True): Spec(device.RegionInfo, device.parse_region_info, fds=True),
    (Command.DEVICE_GET_REGION_IO_FDS, False): Spec(device.IoFdsRequest, device.parse_io_fds_request),
    (Command.DEVICE_GET_REGION_IO_FDS, True): Spec(device.IoFdsReply, device.parse_io_fds_reply, fds=True),
    (Command.DEVICE_GET_IRQ_INFO, False): Spec(irq.IrqInfo, irq.parse_irq_info),
    (Command.DEVICE_GET_IRQ_INFO, True): Spec(irq.IrqInfo, irq.parse_irq_info),
    (Command.DEVICE_SET_IRQS, False): Spec(irq.IrqSet, irq.parse_irq_set, fds=True),
    (Command.DEVICE_SET_IRQS, True): _NONE,
    (Command.REGION_READ, False): Spec(region.RegionRead, region.parse_region_read),
    (Command.REGION_READ, True): Spec(region.RegionReadReply, region.parse_region_read_reply),
    (Command.REGION_WRITE, False): Spec(region.RegionWrite, region.parse_region_write),
    (Command.REGION_WRITE, True): Spec(region.RegionWriteReply, region.parse_region_write_reply),
    (Command.DMA_READ, False): Spec(dma.DmaRead, dma.parse_dma_read),
    (Command.DMA_READ, True): Spec(dma.DmaReadReply, dma.parse_dma_read_reply),
    (Command.DMA_WRITE, False): Spec(dma.DmaWrite, dma.parse_dma_write),
    (Command.DMA_WRITE, True): Spec(dma.DmaWriteReply, dma.parse_dma_write_reply),
    (Command.DEVICE_RESET, False): _NONE,
    (Command.DEVICE_RESET, True): _NONE,
    (Command.REGION_WRITE_MULTI, False): Spec(region.RegionWriteMulti, region.parse_region_write_multi),
    (Command.REGION_WRITE_MULTI, True): Spec(region.RegionWriteMultiReply, region.parse_region_write_multi_reply),
    (Command.DEVICE_FEATURE, False): Spec(migration.DeviceFeature, migration.parse_device_feature),
    (Command.DEVICE_FEATURE, True): Spec(migration.DeviceFeature, migration.parse_device_feature),
    (Command.MIG_DATA_READ, False): Spec(migration.MigDataRead, migration.parse_mig_data_read),
    (Command.MIG_DATA_READ, True): Spec(migration.MigData, migration.parse_mig_data),
    (Command.MIG_DATA_WRITE, False): Spec(migration.MigData, migration.parse_mig_data),
    (Command.MIG_DATA_WRITE, True): _NONE,
}


@dataclass(frozen=True)
class Message:
    """One message.  ``error`` is not None exactly for error replies (header only, errno may be 0).

    ``fds`` are raw descriptors that travel with the message; the receiver owns what it decoded.
    ``header`` is the header as received (None for messages built to be sent).
    """

    command: Command
    msg_id: int = 0
    body: Body | None = None
    reply: bool = False
    no_reply: bool = False
    error: int | None = None
    fds: tuple[int, ...] = ()
    header: Header | None = field(default=None, compare=False)

    @property
    def flags(self) -> int:
        flags = TYPE_REPLY if self.reply else TYPE_COMMAND
        if self.no_reply:
            flags |= FLAG_NO_REPLY
        if self.error is not None:
            flags |= FLAG_ERROR
        return flags


def request(command: Command, body: Body | None = None, *, msg_id: int = 0, no_reply: bool = False,
            fds: Sequence[int] = ()) -> Message:
    """A command message."""
    return Message(command, msg_id, body, False, no_reply, None, tuple(fds))


def reply_to(req: Message, body: Body | None = None, *, fds: Sequence[int] = ()) -> Message:
    """The successful reply to ``req`` (same msg_id and command)."""
    return Message(req.command, req.msg_id, body, True, False, None, tuple(fds))


def error_reply(command: Command | int, msg_id: int, err: int) -> Message:
    """An error reply (header only).  ``command`` may be any number, to answer an unknown command."""
    return Message(command, msg_id, None, True, False, err)  # type: ignore[arg-type]


def encode(msg: Message) -> tuple[bytes, list[int]]:
    """The bytes to write (header + payload) and the fds to attach to them."""
    if msg.error is not None:
        require(msg.reply and msg.body is None and not msg.fds,
                "cannot encode: an error is a reply with neither payload nor fds")
        payload = b""
    else:
        spec = SPECS.get((msg.command, msg.reply))
        require(spec is not None, f"cannot encode: unknown command {int(msg.command)}")
        assert spec is not None
        if spec.body is None:
            require(msg.body is None, f"cannot encode {_name(msg)}: it has no payload")
            payload = b""
        else:
            require(isinstance(msg.body, spec.body),
                    f"cannot encode {_name(msg)}: payload must be {spec.body.__name__}, "
                    f"not {type(msg.body).__name__}")
            assert msg.body is not None
            payload = msg.body.to_bytes()
        require(spec.fds or not msg.fds, f"cannot encode {_name(msg)}: it carries no file descriptors")
    head = pack(HEADER, "header", msg.msg_id, int(msg.command), HEADER_SIZE + len(payload), msg.flags,
                msg.error or 0)
    return head + payload, list(msg.fds)


def decode(data: bytes | bytearray | memoryview, fds: Sequence[int] = (), *, role: Role,
           limits: Limits = DEFAULT_LIMITS) -> Message:
    """Decode one whole message received by ``role``; anything a receiver must refuse is a ProtocolError."""
    raw = bytes(data)
    if len(raw) < HEADER_SIZE:
        raise invalid(f"message of {len(raw)} bytes is shorter than the {HEADER_SIZE}-byte header")
    header = Header(*HEADER.unpack_from(raw))
    try:
        return _decode(header, raw[HEADER_SIZE:], tuple(fds), role, limits)
    except ProtocolError as exc:
        exc.header = header
        raise


def _decode(header: Header, payload: bytes, fds: tuple[int, ...], role: Role, limits: Limits) -> Message:
    # Header rules: libvfio-user is_valid_header / tran_sock_recv_fds, QEMU vfio_user_recv_one.
    require(header.msg_size >= HEADER_SIZE, f"msg_size {header.msg_size} < {HEADER_SIZE}")
    require(header.msg_size == HEADER_SIZE + len(payload),
            f"msg_size {header.msg_size} but the message is {HEADER_SIZE + len(payload)} bytes")
    require(header.msg_size <= limits.message_ceiling,
            f"msg_size {header.msg_size} > {limits.message_ceiling} (max_data_xfer_size + overhead)")
    require(header.flags & ~HEADER_FLAGS_KNOWN == 0, f"header flags {header.flags:#x} have unknown bits")
    kind = header.flags & FLAG_TYPE_MASK
    require(kind in (TYPE_COMMAND, TYPE_REPLY), f"unknown message type {kind}")
    require(len(fds) <= limits.max_msg_fds, f"{len(fds)} file descriptors > max_msg_fds {limits.max_msg_fds}")
    is_reply = kind == TYPE_REPLY
    # QEMU answers server requests it does not handle with ENOSYS; libvfio-user's "bad command" is EINVAL.
    wrong_way = errno.ENOSYS if role is Role.CLIENT and not is_reply else errno.EINVAL
    try:
        command = Command(header.command)
    except ValueError:
        raise ProtocolError(wrong_way, f"unknown command {header.command}") from None
    if is_reply:
        require(not header.no_reply, f"{command.name} reply with No_reply set")
        require(not role.receives_command(command), f"{command.name} reply, but a {role.value} never sends it")
    else:
        require(not header.is_error, f"{command.name} command with the Error flag set")
        if not role.receives_command(command):
            raise ProtocolError(wrong_way, f"{command.name} is not sent to a {role.value}")
    if is_reply and header.is_error:
        require(not payload and not fds, f"{command.name} error reply must be the header alone")
        return Message(command, header.msg_id, None, True, False, header.error, (), header)
    spec = SPECS[(command, is_reply)]
    what = f"{command.name} {'reply' if is_reply else 'command'}"
    require(spec.fds or not fds, f"{what} carries {len(fds)} file descriptor(s)")
    if spec.parse is None:
        require(not payload, f"{what} has a {len(payload)}-byte payload, expected none")
        body = None
    else:
        body = spec.parse(payload, Context(role, is_reply, len(fds), limits))
    return Message(command, header.msg_id, body, is_reply, header.no_reply, None, fds, header)


def _name(msg: Message) -> str:
    name = msg.command.name if isinstance(msg.command, Command) else str(msg.command)
    return f"{name} {'reply' if msg.reply else 'command'}"
