"""vfio-user wire vocabulary: command numbers, the 16-byte header, flag bits, limits and the one codec error.

Numbers follow the protocol specification (QEMU ``docs/interop/vfio-user.rst``) and, for the VFIO structures
the protocol reuses, Linux ``include/uapi/linux/vfio.h``.  Everything is little-endian and packed.
"""

from __future__ import annotations

import errno
import struct
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import Final

from vfiolab.errors import UapiError


class Command(IntEnum):
    """Message command numbers (spec "Commands" table); 14 was migration v1's DIRTY_PAGES and is unused."""

    VERSION = 1
    DMA_MAP = 2
    DMA_UNMAP = 3
    DEVICE_GET_INFO = 4
    DEVICE_GET_REGION_INFO = 5
    DEVICE_GET_REGION_IO_FDS = 6
    DEVICE_GET_IRQ_INFO = 7
    DEVICE_SET_IRQS = 8
    REGION_READ = 9
    REGION_WRITE = 10
    DMA_READ = 11
    DMA_WRITE = 12
    DEVICE_RESET = 13
    REGION_WRITE_MULTI = 15
    DEVICE_FEATURE = 16
    MIG_DATA_READ = 17
    MIG_DATA_WRITE = 18


#: Commands the server sends to the client; every other command goes client -> server.
SERVER_TO_CLIENT: Final = frozenset({Command.DMA_READ, Command.DMA_WRITE})


class Role(Enum):
    """Which end decodes: the server receives client commands and replies to its DMA requests, and vice versa."""

    SERVER = "server"
    CLIENT = "client"

    def receives_command(self, command: Command) -> bool:
        """True if a *command* message with this number travels towards this role."""
        to_client = command in SERVER_TO_CLIENT
        return to_client if self is Role.CLIENT else not to_client


# --- header -------------------------------------------------------------------------------------------------
HEADER: Final = struct.Struct("<HHIII")
HEADER_SIZE: Final = HEADER.size  # 16

FLAG_TYPE_MASK: Final = 0xF
TYPE_COMMAND: Final = 0x0
TYPE_REPLY: Final = 0x1
FLAG_NO_REPLY: Final = 0x10
FLAG_ERROR: Final = 0x20
#: Bits the spec defines (type 0-3, No_reply 4, Error 5); anything else is rejected.
HEADER_FLAGS_KNOWN: Final = FLAG_TYPE_MASK | FLAG_NO_REPLY | FLAG_ERROR


@dataclass(frozen=True)
class Header:
    """The 16-byte message header: msg_id, command, msg_size (whole message), flags, error."""

    msg_id: int
    command: int
    msg_size: int
    flags: int
    error: int = 0

    @property
    def is_reply(self) -> bool:
        return self.flags & FLAG_TYPE_MASK == TYPE_REPLY

    @property
    def no_reply(self) -> bool:
        return bool(self.flags & FLAG_NO_REPLY)

    @property
    def is_error(self) -> bool:
        return bool(self.flags & FLAG_ERROR)

    def pack(self) -> bytes:
        return HEADER.pack(self.msg_id, self.command, self.msg_size, self.flags, self.error)


class ProtocolError(UapiError):
    """A message that cannot be encoded or must be refused; ``errno`` is what the error reply should carry.

    ``header`` is the decoded header when there was one, so a server can answer the right msg_id/command
    (unless it had No_reply).  Any file descriptors that came with the message still belong to the caller.
    """

    def __init__(self, err: int, message: str, header: Header | None = None) -> None:
        super().__init__(err, message)
        self.header = header


def invalid(message: str) -> ProtocolError:
    """The common case: EINVAL, which both libvfio-user and QEMU use for malformed messages."""
    return ProtocolError(errno.EINVAL, message)


# --- limits -------------------------------------------------------------------------------------------------
DEFAULT_MAX_DATA_XFER_SIZE: Final = 1 << 20  # spec default, libvfio-user SERVER_MAX_DATA_XFER_SIZE
DEFAULT_MAX_MSG_FDS: Final = 1  # spec: a peer that did not say may receive one
DEFAULT_MAX_DMA_MAPS: Final = 65535
DEFAULT_PGSIZES: Final = 4096
#: libvfio-user's hard ceiling on a client's max_msg_fds (lib/tran.h VFIO_USER_CLIENT_MAX_MSG_FDS_LIMIT).
LIBVFIO_USER_MAX_MSG_FDS_LIMIT: Final = 1024
#: QEMU's ceilings when it checks a server's VERSION reply (hw/vfio-user/protocol.h, proxy.c).
QEMU_MAX_MAX_FDS: Final = 16
QEMU_MAX_MAX_XFER: Final = 64 << 20
QEMU_MAX_BITMAP: Final = 256 << 20
#: The most fixed-size structure bytes a data-carrying message adds to max_data_xfer_size (header 16 +
#: DMA_UNMAP 24 + bitmap 16); the default ceiling on a whole message.
MESSAGE_OVERHEAD: Final = 64


@dataclass(frozen=True)
class Limits:
    """What the decoding end accepts: data per transfer message, fds per message, bytes per message.

    ``max_data_xfer_size`` bounds ``count``/``size`` of REGION_READ/WRITE, DMA_READ/WRITE, MIG_DATA_READ/WRITE
    and the argsz of DMA_UNMAP / GET_REGION_IO_FDS.  libvfio-user uses its own advertised value for region
    access and the client's for migration data; QEMU uses the server's for DMA requests.  The caller sets it
    from the negotiation; one value serves every check.
    """

    max_data_xfer_size: int = DEFAULT_MAX_DATA_XFER_SIZE
    max_msg_fds: int = QEMU_MAX_MAX_FDS
    max_msg_size: int | None = None

    @property
    def message_ceiling(self) -> int:
        """Largest acceptable msg_size (default: max_data_xfer_size plus the fixed overhead)."""
        if self.max_msg_size is not None:
            return self.max_msg_size
        return self.max_data_xfer_size + MESSAGE_OVERHEAD


#: The limits a receiver assumes before negotiation: spec default transfer size, QEMU's fd ceiling.
DEFAULT_LIMITS: Final = Limits()


# --- VFIO numbers the protocol reuses (include/uapi/linux/vfio.h) -------------------------------------------
DEVICE_FLAGS_RESET: Final = 1 << 0
DEVICE_FLAGS_PCI: Final = 1 << 1
DEVICE_FLAGS_CAPS: Final = 1 << 7

REGION_INFO_FLAG_READ: Final = 1 << 0
REGION_INFO_FLAG_WRITE: Final = 1 << 1
REGION_INFO_FLAG_MMAP: Final = 1 << 2
REGION_INFO_FLAG_CAPS: Final = 1 << 3
REGION_INFO_CAP_SPARSE_MMAP: Final = 1
REGION_INFO_CAP_TYPE: Final = 2
REGION_INFO_CAP_MSIX_MAPPABLE: Final = 3

PCI_BAR0_REGION_INDEX: Final = 0
PCI_ROM_REGION_INDEX: Final = 6
PCI_CONFIG_REGION_INDEX: Final = 7
PCI_VGA_REGION_INDEX: Final = 8
PCI_NUM_REGIONS: Final = 9
PCI_INTX_IRQ_INDEX: Final = 0
PCI_MSI_IRQ_INDEX: Final = 1
PCI_MSIX_IRQ_INDEX: Final = 2
PCI_ERR_IRQ_INDEX: Final = 3
PCI_REQ_IRQ_INDEX: Final = 4
PCI_NUM_IRQS: Final = 5

IRQ_INFO_EVENTFD: Final = 1 << 0
IRQ_INFO_MASKABLE: Final = 1 << 1
IRQ_INFO_AUTOMASKED: Final = 1 << 2
IRQ_INFO_NORESIZE: Final = 1 << 3

IRQ_SET_DATA_NONE: Final = 1 << 0
IRQ_SET_DATA_BOOL: Final = 1 << 1
IRQ_SET_DATA_EVENTFD: Final = 1 << 2
IRQ_SET_ACTION_MASK: Final = 1 << 3
IRQ_SET_ACTION_UNMASK: Final = 1 << 4
IRQ_SET_ACTION_TRIGGER: Final = 1 << 5
IRQ_SET_DATA_TYPE_MASK: Final = IRQ_SET_DATA_NONE | IRQ_SET_DATA_BOOL | IRQ_SET_DATA_EVENTFD
IRQ_SET_ACTION_TYPE_MASK: Final = IRQ_SET_ACTION_MASK | IRQ_SET_ACTION_UNMASK | IRQ_SET_ACTION_TRIGGER

#: DMA_MAP flags: spec bits 0/1; bits 2/3 are libvfio-user's MMAP / FILE_IO (include/vfio-user.h).
DMA_MAP_FLAG_READ: Final = 1 << 0
DMA_MAP_FLAG_WRITE: Final = 1 << 1
DMA_MAP_FLAG_MMAP: Final = 1 << 2
DMA_MAP_FLAG_FILE_IO: Final = 1 << 3
#: DMA_UNMAP flags as VFIO type1 (the spec says "unused"; libvfio-user and QEMU use them).
DMA_UNMAP_FLAG_GET_DIRTY_BITMAP: Final = 1 << 0
DMA_UNMAP_FLAG_ALL: Final = 1 << 1

DEVICE_FEATURE_MASK: Final = 0xFFFF
DEVICE_FEATURE_GET: Final = 1 << 16
DEVICE_FEATURE_SET: Final = 1 << 17
DEVICE_FEATURE_PROBE: Final = 1 << 18
FEATURE_MIGRATION: Final = 1
FEATURE_MIG_DEVICE_STATE: Final = 2
FEATURE_DMA_LOGGING_START: Final = 6
FEATURE_DMA_LOGGING_STOP: Final = 7
FEATURE_DMA_LOGGING_REPORT: Final = 8
FEATURE_MIG_DATA_SIZE: Final = 9
MIGRATION_STOP_COPY: Final = 1 << 0
MIGRATION_P2P: Final = 1 << 1
MIGRATION_PRE_COPY: Final = 1 << 2

IO_FD_TYPE_IOEVENTFD: Final = 0
IO_FD_TYPE_IOREGIONFD: Final = 1
IO_FD_TYPE_IOEVENTFD_SHADOW: Final = 2  # libvfio-user only
