"""What a capability decoder sees: the config bytes as lspci fetched them, and a text sink.

lspci reads a dump into a 4 KiB buffer pre-filled with 0xff and fails any read past the highest
byte given (pciutils ``lib/dump.c``); ``DecodeContext.fetch`` mirrors that so decoders can print
lspci's ``<unreadable>``/``<chain broken>`` at the same places.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass, field

Out = io.StringIO


def flag(value: int, mask: int) -> str:
    """lspci's ``FLAG(x, y)``: ``+`` when any bit of ``mask`` is set in ``value``, else ``-``."""
    return "+" if value & mask else "-"


def flags(value: int, table: Iterable[tuple[int, str]]) -> str:
    """A run of lspci ``Label+``/``Label-`` flags, one per (mask, label) of ``table``, space-separated."""
    return " ".join(label + ("+" if value & mask else "-") for mask, label in table)


@dataclass
class DecodeContext:
    """Config bytes of one function plus what lspci knows while decoding it."""

    cfg: bytes
    """Up to 4096 bytes; bytes past ``avail`` read as 0xff."""
    avail: int
    """How many bytes were actually given (64, 256 or 4096)."""
    verbose: int = 3
    """lspci -v count (1..3)."""
    pcie_type: int | None = None
    """Device/Port Type from the PCI Express capability, once it has been seen."""
    is_pcie: bool = False
    bdf: str = ""
    extra: dict[str, object] = field(default_factory=dict)
    """Per-device scratch shared between decoders (e.g. the SR-IOV VF count)."""

    def __post_init__(self) -> None:
        if len(self.cfg) < 4096:
            self.cfg = bytes(self.cfg) + b"\xff" * (4096 - len(self.cfg))

    def fetch(self, off: int, length: int) -> bool:
        """True if [off, off+length) was given (lspci's ``config_fetch`` succeeding)."""
        return 0 <= off and off + length <= self.avail

    def r8(self, off: int) -> int:
        return self.cfg[off]

    def r16(self, off: int) -> int:
        return int.from_bytes(self.cfg[off:off + 2], "little")

    def r32(self, off: int) -> int:
        return int.from_bytes(self.cfg[off:off + 4], "little")

    def r64(self, off: int) -> int:
        return int.from_bytes(self.cfg[off:off + 8], "little")
