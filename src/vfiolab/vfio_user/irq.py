"""Interrupt messages: DEVICE_GET_IRQ_INFO (``struct vfio_irq_info``) and DEVICE_SET_IRQS (``struct vfio_irq_set``).

In vfio-user the eventfds of DATA_EVENTFD travel as SCM_RIGHTS, not as an s32 array in the payload: QEMU 11.1
sends argsz = 20 and one fd per vector, or no fd at all to de-assign.  SET_IRQS checks follow libvfio-user
(lib/irq.c ``device_set_irqs_validate``) plus Linux's refusal of unknown flag bits
(drivers/vfio/vfio_main.c ``vfio_set_irqs_validate_and_prepare``).  Index/start/count bounds and the
ERR/REQ rules need the device, so the server checks those.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from vfiolab.vfio_user.protocol import (
    IRQ_SET_ACTION_MASK,
    IRQ_SET_ACTION_TRIGGER,
    IRQ_SET_ACTION_TYPE_MASK,
    IRQ_SET_ACTION_UNMASK,
    IRQ_SET_DATA_BOOL,
    IRQ_SET_DATA_EVENTFD,
    IRQ_SET_DATA_NONE,
    IRQ_SET_DATA_TYPE_MASK,
)
from vfiolab.vfio_user.wire import Context, exact, pack, reply_buffer, require, unpack

IRQ_INFO: Final = struct.Struct("<IIII")  # argsz, flags, index, count
IRQ_SET: Final = struct.Struct("<IIIII")  # argsz, flags, index, start, count
_ONE_BIT: Final = (IRQ_SET_DATA_NONE, IRQ_SET_DATA_BOOL, IRQ_SET_DATA_EVENTFD,
                   IRQ_SET_ACTION_MASK, IRQ_SET_ACTION_UNMASK, IRQ_SET_ACTION_TRIGGER)


@dataclass(frozen=True)
class IrqInfo:
    """DEVICE_GET_IRQ_INFO request and reply; flags EVENTFD, MASKABLE, AUTOMASKED, NORESIZE in the reply."""

    index: int
    argsz: int = IRQ_INFO.size
    flags: int = 0
    count: int = 0

    def to_bytes(self) -> bytes:
        return pack(IRQ_INFO, "DEVICE_GET_IRQ_INFO", self.argsz, self.flags, self.index, self.count)


def parse_irq_info(payload: bytes, ctx: Context) -> IrqInfo:
    """libvfio-user ``handle_device_get_irq_info``: payload and argsz at least 16 (EINVAL)."""
    argsz, flags, index, count = unpack(IRQ_INFO, payload, "DEVICE_GET_IRQ_INFO")
    if ctx.is_reply:
        exact(payload, IRQ_INFO.size, "DEVICE_GET_IRQ_INFO reply")
    else:
        reply_buffer(payload, IRQ_INFO.size, argsz, "DEVICE_GET_IRQ_INFO")
    require(argsz >= IRQ_INFO.size, f"DEVICE_GET_IRQ_INFO: argsz {argsz} < {IRQ_INFO.size}")
    return IrqInfo(index, argsz, flags, count)


@dataclass(frozen=True)
class IrqSet:
    """DEVICE_SET_IRQS request.  ``data`` is the u8-per-vector array of DATA_BOOL (empty otherwise);
    ``argsz`` defaults to the payload size (20 + len(data)), as the spec and QEMU set it."""

    index: int
    flags: int
    start: int = 0
    count: int = 0
    data: bytes = b""
    argsz: int | None = None

    def __post_init__(self) -> None:
        if self.argsz is None:
            object.__setattr__(self, "argsz", IRQ_SET.size + len(self.data))

    @property
    def action(self) -> int:
        return self.flags & IRQ_SET_ACTION_TYPE_MASK

    @property
    def data_type(self) -> int:
        return self.flags & IRQ_SET_DATA_TYPE_MASK

    def to_bytes(self) -> bytes:
        argsz = IRQ_SET.size + len(self.data) if self.argsz is None else self.argsz
        return pack(IRQ_SET, "DEVICE_SET_IRQS", argsz, self.flags, self.index, self.start, self.count) + self.data


def parse_irq_set(payload: bytes, ctx: Context) -> IrqSet:
    """Every refusal is EINVAL, so the order below (libvfio-user's, kernel flag check first) only shapes text."""
    argsz, flags, index, start, count = unpack(IRQ_SET, payload, "DEVICE_SET_IRQS")
    require(argsz >= IRQ_SET.size, f"DEVICE_SET_IRQS: argsz {argsz} < {IRQ_SET.size}")
    require(flags & ~(IRQ_SET_DATA_TYPE_MASK | IRQ_SET_ACTION_TYPE_MASK) == 0,
            f"DEVICE_SET_IRQS: unknown flag bits {flags:#x}")
    data = payload[IRQ_SET.size:]
    action, dtype = flags & IRQ_SET_ACTION_TYPE_MASK, flags & IRQ_SET_DATA_TYPE_MASK
    if dtype == IRQ_SET_DATA_BOOL:
        require(len(data) == count, f"DEVICE_SET_IRQS: DATA_BOOL with count {count} but {len(data)} bytes")
    else:
        require(not data, f"DEVICE_SET_IRQS: {len(data)} data bytes without DATA_BOOL "
                          f"(eventfds travel as SCM_RIGHTS)")
    require(action in _ONE_BIT, f"DEVICE_SET_IRQS: flags {flags:#x} need exactly one of MASK/UNMASK/TRIGGER")
    require(dtype in _ONE_BIT, f"DEVICE_SET_IRQS: flags {flags:#x} need exactly one of NONE/BOOL/EVENTFD")
    if count == 0:
        require(start == 0, f"DEVICE_SET_IRQS: count 0 with start {start}")
        require(action == IRQ_SET_ACTION_TRIGGER and dtype == IRQ_SET_DATA_NONE,
                "DEVICE_SET_IRQS: count 0 is only valid with DATA_NONE|ACTION_TRIGGER (disable the index)")
    if ctx.nfds:
        require(dtype == IRQ_SET_DATA_EVENTFD, "DEVICE_SET_IRQS: file descriptors without DATA_EVENTFD")
        require(ctx.nfds == count, f"DEVICE_SET_IRQS: {ctx.nfds} eventfds for count {count}")
    return IrqSet(index, flags, start, count, bytes(data), argsz)
