"""lspci hex dumps (``lspci -x/-xxx/-xxxx``), read and written as pciutils ``lib/dump.c`` does.

A device starts at a line ``[DDDD:]BB:DD.F `` (the space is mandatory, the rest is a title), data
lines are ``OFF: hh hh ...``, an empty line ends the device, any other line is ignored.  At most
4096 bytes per function.  Parsing errors name the line, the device and the offset.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vfiolab.errors import VfiolabError

_DEV_RE = re.compile(r"^(?:([0-9a-fA-F]{4,6}):)?([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-7]) ")
_DATA_RE = re.compile(r"^([0-9a-fA-F]{2,8}): ")


@dataclass
class DumpedFunction:
    """One function's config bytes as given by a dump (``length`` = highest byte given + 1)."""

    domain: int
    bus: int
    devfn: int
    config: bytes
    title: str = ""
    resources: list[tuple[int, int, int]] | None = None  # sysfs ``resource`` lines (start, end, flags)
    sysfs: dict[str, str] | None = None  # other sysfs attributes read by vfiolab.pci.sysfs

    @property
    def name(self) -> str:
        return f"{self.domain:04x}:{self.bus:02x}:{self.devfn >> 3:02x}.{self.devfn & 7:x}"

    @property
    def length(self) -> int:
        return len(self.config)


class DumpError(VfiolabError):
    """A malformed dump: says which line, device and offset."""


def parse_dump(text: str, source: str = "<dump>") -> list[DumpedFunction]:
    """Parse lspci -x style text (also accepts ``-vvv -xxxx`` output with text interleaved)."""
    out: list[DumpedFunction] = []
    cur: tuple[int, int, int, str] | None = None
    buf = bytearray()
    have = 0

    def finish() -> None:
        nonlocal cur, buf, have
        if cur is not None:
            out.append(DumpedFunction(cur[0], cur[1], cur[2], bytes(buf[:have]), cur[3]))
        cur, buf, have = None, bytearray(), 0

    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip("\r")
        if not line.strip():
            finish()
            continue
        m = _DEV_RE.match(line)
        if m:
            finish()
            dom = int(m.group(1), 16) if m.group(1) else 0
            cur = (dom, int(m.group(2), 16), (int(m.group(3), 16) << 3) | int(m.group(4)),
                   line[m.end():].strip())
            if int(m.group(3), 16) > 0x1F:
                raise DumpError(f"{source}:{lineno}: device number {m.group(3)} > 1f")
            buf = bytearray(b"\xff" * 4096)
            continue
        m = _DATA_RE.match(line)
        if not m or cur is None:
            continue
        off = int(m.group(1), 16)
        name = f"{cur[0]:04x}:{cur[1]:02x}:{cur[2] >> 3:02x}.{cur[2] & 7:x}"
        fields = line[m.end():].split(" ")
        for i, tok in enumerate(fields):
            if len(tok) != 2 or not all(c in "0123456789abcdefABCDEF" for c in tok):
                raise DumpError(f"{source}:{lineno}: {name}: malformed byte {tok!r} at offset "
                                f"{off + i:#x}")
            pos = off + i
            if pos >= 4096:
                raise DumpError(f"{source}:{lineno}: {name}: offset {pos:#x} beyond 4096 bytes of "
                                "config space")
            buf[pos] = int(tok, 16)
            have = max(have, pos + 1)
    finish()
    return out


def format_dump(domain: int, bus: int, devfn: int, config: bytes, title: str = "",
                with_domain: bool = False) -> str:
    """One device block in ``lspci -xxxx`` layout (16 bytes a line, lower-case hex), blank line after."""
    head = f"{bus:02x}:{devfn >> 3:02x}.{devfn & 7:x}"
    if with_domain or domain:
        head = f"{domain:04x}:{head}"
    lines = [f"{head} {title}".rstrip() + (" " if not title else "")]
    for off in range(0, len(config), 16):
        chunk = config[off:off + 16]
        lines.append(f"{off:02x}: " + " ".join(f"{b:02x}" for b in chunk))
    return "\n".join(lines) + "\n\n"
