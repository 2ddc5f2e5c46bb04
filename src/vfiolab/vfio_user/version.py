"""VFIO_USER_VERSION: major/minor and the NUL-terminated JSON capability object, same format both ways.

The client's proposal is checked as libvfio-user's server checks it (lib/tran.c ``recv_version`` and
``tran_parse_version_json``); the server's reply as QEMU 11.1's client checks it (hw/vfio-user/proxy.c
``vfio_user_validate_version``/``caps_check``).  Unknown keys are kept, not refused (QEMU only warns).
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from vfiolab.vfio_user.protocol import (
    DEFAULT_MAX_DATA_XFER_SIZE,
    DEFAULT_MAX_DMA_MAPS,
    DEFAULT_MAX_MSG_FDS,
    DEFAULT_PGSIZES,
    LIBVFIO_USER_MAX_MSG_FDS_LIMIT,
    QEMU_MAX_BITMAP,
    QEMU_MAX_MAX_FDS,
    QEMU_MAX_MAX_XFER,
)
from vfiolab.vfio_user.wire import Context, fail, pack, require, unpack

VERSION: Final = struct.Struct("<HH")
U64_MAX: Final = (1 << 64) - 1


@dataclass(frozen=True)
class MigrationCaps:
    """The legacy ``migration`` object QEMU and libvfio-user still exchange (not in the current spec)."""

    pgsize: int | None = None
    max_bitmap_size: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TwinSocket:
    """``twin_socket``: ``supported`` both ways; ``fd_index`` names the reply's fd carrying the second socket."""

    supported: bool | None = None
    fd_index: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Capabilities:
    """The ``capabilities`` object; ``None`` fields were absent (use the ``effective_*`` spec defaults)."""

    max_msg_fds: int | None = None
    max_data_xfer_size: int | None = None
    max_dma_maps: int | None = None
    pgsizes: int | None = None
    migration: MigrationCaps | None = None
    twin_socket: TwinSocket | None = None
    write_multiple: bool | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def effective_max_msg_fds(self) -> int:
        return DEFAULT_MAX_MSG_FDS if self.max_msg_fds is None else self.max_msg_fds

    @property
    def effective_max_data_xfer_size(self) -> int:
        return DEFAULT_MAX_DATA_XFER_SIZE if self.max_data_xfer_size is None else self.max_data_xfer_size

    @property
    def effective_max_dma_maps(self) -> int:
        return DEFAULT_MAX_DMA_MAPS if self.max_dma_maps is None else self.max_dma_maps

    @property
    def effective_pgsizes(self) -> int:
        return DEFAULT_PGSIZES if self.pgsizes is None else self.pgsizes

    def to_json_object(self) -> dict[str, Any]:
        """The ``{"capabilities": {...}}`` document, keys in the spec's table order, unknown keys last."""
        caps: dict[str, Any] = {}
        for key in ("max_msg_fds", "max_data_xfer_size", "max_dma_maps", "pgsizes"):
            value = getattr(self, key)
            if value is not None:
                caps[key] = value
        if self.migration is not None:
            caps["migration"] = _object(self.migration, ("pgsize", "max_bitmap_size"))
        if self.twin_socket is not None:
            caps["twin_socket"] = _object(self.twin_socket, ("supported", "fd_index"))
        if self.write_multiple is not None:
            caps["write_multiple"] = self.write_multiple
        caps.update(self.extra)
        return {"capabilities": caps}


def _object(obj: MigrationCaps | TwinSocket, keys: tuple[str, ...]) -> dict[str, Any]:
    out = {k: getattr(obj, k) for k in keys if getattr(obj, k) is not None}
    out.update(obj.extra)
    return out


@dataclass(frozen=True)
class Version:
    """VERSION request or reply.  ``capabilities is None`` means no JSON at all (allowed in a request)."""

    major: int
    minor: int
    capabilities: Capabilities | None = None

    def to_bytes(self) -> bytes:
        head = pack(VERSION, "VERSION", self.major, self.minor)
        if self.capabilities is None:
            return head
        try:
            text = json.dumps(self.capabilities.to_json_object(), allow_nan=False)
        except (TypeError, ValueError, RecursionError) as exc:
            fail(f"cannot encode VERSION capabilities: {exc}")
        return head + text.encode() + b"\0"


def parse_version(payload: bytes, ctx: Context) -> Version:
    """Decode a VERSION payload; requests follow libvfio-user's checks, replies QEMU's."""
    major, minor = unpack(VERSION, payload, "VERSION")
    if not ctx.is_reply:
        ctx.fds_at_most(0, "VERSION request")  # libvfio-user: "sent with N fds" -> EINVAL
    data = payload[VERSION.size:]
    if not data:
        # libvfio-user accepts a proposal without JSON; QEMU's reply check reads the last byte as the NUL.
        require(not ctx.is_reply, "VERSION reply: no capabilities JSON (QEMU requires a NUL-terminated string)")
        return Version(major, minor, None)
    require(data[-1] == 0, "VERSION: capabilities JSON is not NUL-terminated")
    require(0 not in data[:-1], "VERSION: capabilities JSON contains a NUL before its end")
    doc = _load_json(data[:-1])
    require(isinstance(doc, dict), "VERSION: capabilities JSON is not an object")
    caps = _parse_capabilities(doc.get("capabilities", {}), ctx)
    if ctx.is_reply:
        _check_twin_socket_fds(caps, ctx)
    return Version(major, minor, caps)


def _load_json(text: bytes) -> Any:
    def no_constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    def finite(literal: str) -> float:
        value = float(literal)
        if not math.isfinite(value):
            raise ValueError(f"number {literal[:20]} is out of range")
        return value

    try:
        return json.loads(text.decode("utf-8"), parse_constant=no_constant, parse_float=finite)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        fail(f"VERSION: malformed capabilities JSON ({type(exc).__name__}: {str(exc)[:80]})")


def _uint(value: Any, key: str, ceiling: int = U64_MAX) -> int:
    """JSON numbers must be non-negative integers (json-c's int type; booleans are not numbers)."""
    require(type(value) is int and 0 <= value <= ceiling, f"VERSION: malformed {key}: {str(value)[:40]}")
    return int(value)


def _bool(value: Any, key: str) -> bool:
    require(type(value) is bool, f"VERSION: malformed {key}: {str(value)[:40]}")
    return bool(value)


def _parse_capabilities(obj: Any, ctx: Context) -> Capabilities:
    require(isinstance(obj, dict), "VERSION: 'capabilities' is not an object")
    reply = ctx.is_reply
    fds_ceiling = QEMU_MAX_MAX_FDS if reply else LIBVFIO_USER_MAX_MSG_FDS_LIMIT
    known: dict[str, Any] = {}
    if "max_msg_fds" in obj:
        known["max_msg_fds"] = _uint(obj["max_msg_fds"], "max_msg_fds", fds_ceiling)
    if "max_data_xfer_size" in obj:
        known["max_data_xfer_size"] = _uint(obj["max_data_xfer_size"], "max_data_xfer_size",
                                            QEMU_MAX_MAX_XFER if reply else U64_MAX)
    if "max_dma_maps" in obj:
        known["max_dma_maps"] = _uint(obj["max_dma_maps"], "max_dma_maps",
                                      DEFAULT_MAX_DMA_MAPS if reply else U64_MAX)
    if "pgsizes" in obj:
        pgsizes = _uint(obj["pgsizes"], "pgsizes")
        # QEMU check_pgsizes: no page size below 4 KiB in a server's reply.
        require(not reply or pgsizes & (DEFAULT_PGSIZES - 1) == 0, f"VERSION: pgsizes {pgsizes:#x} too small")
        known["pgsizes"] = pgsizes
    if "migration" in obj:
        known["migration"] = _parse_migration(obj["migration"], reply)
    if "twin_socket" in obj:
        known["twin_socket"] = _parse_twin_socket(obj["twin_socket"])
    if "write_multiple" in obj:
        known["write_multiple"] = _bool(obj["write_multiple"], "write_multiple")
    extra = {k: v for k, v in obj.items() if k not in _CAP_KEYS}
    return Capabilities(**known, extra=extra)


_CAP_KEYS: Final = frozenset({"max_msg_fds", "max_data_xfer_size", "max_dma_maps", "pgsizes", "migration",
                              "twin_socket", "write_multiple"})


def _parse_migration(obj: Any, reply: bool) -> MigrationCaps:
    require(isinstance(obj, dict), "VERSION: 'migration' is not an object")
    pgsize = max_bitmap = None
    if "pgsize" in obj:
        pgsize = _uint(obj["pgsize"], "migration.pgsize")
        # QEMU check_migr_pgsize; libvfio-user's own rule (== its page size) needs the device, so the server.
        require(not reply or pgsize & (DEFAULT_PGSIZES - 1) == 0,
                f"VERSION: migration pgsize {pgsize:#x} too small")
    if "max_bitmap_size" in obj:
        max_bitmap = _uint(obj["max_bitmap_size"], "migration.max_bitmap_size",
                           QEMU_MAX_BITMAP if reply else U64_MAX)
    extra = {k: v for k, v in obj.items() if k not in ("pgsize", "max_bitmap_size")}
    return MigrationCaps(pgsize, max_bitmap, extra)


def _parse_twin_socket(obj: Any) -> TwinSocket:
    require(isinstance(obj, dict), "VERSION: 'twin_socket' is not an object")
    supported = _bool(obj["supported"], "twin_socket.supported") if "supported" in obj else None
    fd_index = _uint(obj["fd_index"], "twin_socket.fd_index") if "fd_index" in obj else None
    extra = {k: v for k, v in obj.items() if k not in ("supported", "fd_index")}
    return TwinSocket(supported, fd_index, extra)


def _check_twin_socket_fds(caps: Capabilities, ctx: Context) -> None:
    """Spec: a reply enabling twin-socket mode names a valid fd; any other fd in a VERSION reply is stray."""
    twin = caps.twin_socket
    if twin is not None and twin.supported:
        require(twin.fd_index is not None and twin.fd_index < ctx.nfds,
                "VERSION reply: twin_socket.supported without a valid fd_index (the client must abort)")
        ctx.fds_at_most(1, "VERSION reply")
    else:
        ctx.fds_at_most(0, "VERSION reply without twin_socket")
