"""Reading and writing packed payload structs: size checks that name the message, and range-checked packing.

Every payload parser receives a ``Context`` (who decodes, request or reply, how many fds came, the limits),
so the per-command modules stay free of header and socket concerns.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, NoReturn

from vfiolab.vfio_user.protocol import Limits, ProtocolError, Role, invalid


@dataclass(frozen=True)
class Context:
    """What a payload parser may depend on besides the bytes."""

    role: Role
    is_reply: bool
    nfds: int
    limits: Limits

    def fds_at_most(self, most: int, what: str) -> None:
        """Refuse more descriptors than this message can carry (QEMU/libvfio-user refuse stray fds: EINVAL)."""
        if self.nfds > most:
            raise invalid(f"{what}: {self.nfds} file descriptor(s), at most {most} allowed")


def need(payload: bytes, size: int, what: str) -> None:
    """Truncated payloads are EINVAL (libvfio-user checks ``iov_len < sizeof(struct)`` for every command)."""
    if len(payload) < size:
        raise invalid(f"{what}: payload is {len(payload)} bytes, needs at least {size}")


def exact(payload: bytes, size: int, what: str) -> None:
    """Fixed-size payloads must not carry trailing bytes either (nothing is dropped silently)."""
    if len(payload) != size:
        raise invalid(f"{what}: payload is {len(payload)} bytes, must be exactly {size}")


def reply_buffer(payload: bytes, size: int, argsz: int, what: str) -> None:
    """An argsz-style query may send its whole reply buffer (libvfio-user's samples/client sends
    GET_REGION_INFO with an 80-byte payload for argsz 80); bytes past the struct are buffer space, ignored as
    libvfio-user ignores them, but never beyond argsz."""
    need(payload, size, what)
    require(len(payload) <= max(size, argsz), f"{what}: payload of {len(payload)} bytes exceeds argsz {argsz}")


def unpack(st: struct.Struct, payload: bytes, what: str) -> tuple[Any, ...]:
    """The leading ``st.size`` bytes of ``payload`` as a tuple (after a length check)."""
    need(payload, st.size, what)
    return st.unpack_from(payload)


def pack(st: struct.Struct, what: str, *values: int | bytes) -> bytes:
    """``st.pack`` with out-of-range fields reported as a ProtocolError instead of struct.error."""
    try:
        return st.pack(*values)
    except struct.error as exc:
        raise invalid(f"cannot encode {what}: {exc}") from None


def is_power_of_two(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


def fail(message: str) -> NoReturn:
    """Raise EINVAL with ``message``."""
    raise invalid(message)


def require(condition: bool, message: str) -> None:
    """Raise EINVAL with ``message`` unless ``condition`` holds (keeps the table of rules readable)."""
    if not condition:
        raise invalid(message)


__all__ = ["Context", "ProtocolError", "exact", "fail", "is_power_of_two", "need", "pack", "reply_buffer", "require", "unpack"]
