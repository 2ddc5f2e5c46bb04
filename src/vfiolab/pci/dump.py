"""lspci hex dumps (``lspci -x/-xxx/-xxxx``), read and written as pciutils 3.9 ``lib/dump.c`` does.

A function starts at a line ``[DDDD[D]:]BB:DD.F `` (the space is mandatory, the rest is a title), data
lines are ``OFF: hh hh ...``, an empty line ends the function, any other line is ignored.  At most
4096 bytes per function.  What ``lspci -F`` refuses (a line of 254 bytes or more, a NUL byte, an
unterminated last line, a malformed data line, bytes past 4096) is an error here too; what it would
silently skip or misfile (an address it cannot parse, hex data outside a function) is an error as well,
never a dropped function.  Errors name the file, line, function and offset.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from vfiolab.errors import VfiolabError

# lib/dump.c dump_init(): "##:##.# ", "####:##:##.# " or "#####:##:##.# " ('#' = isxdigit), then
# sscanf("%x:%x.%d"), so the function digit must be decimal.
_DEV_RE = re.compile(r"(?:([0-9a-fA-F]{4,5}):)?([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-9]) ")
# Anything else that starts like a function address: lspci -F would skip it and lose the function.
_ADDR_LIKE = re.compile(r"(?:([0-9a-fA-F]+):)?([0-9a-fA-F]+):([0-9a-fA-F]+)\.([0-9a-fA-F]+)(?=\s|$)")
# "##: " ... "########: " then bytes: two hex digits each, followed by the end or one space.
_DATA_RE = re.compile(r"([0-9a-fA-F]{2,8}): ")
_DATA_LINE_RE = re.compile(r"([0-9a-fA-F]{2,8}): ((?:[0-9a-fA-F]{2}(?: |\Z))*)\Z")
# An offset, a colon and hex bytes, but not as lib/dump.c wants them (offset of 1 or 9+ digits, no space
# after the colon, leading blanks, tabs): lspci -F would ignore the line and lose its bytes.
_DATA_LIKE = re.compile(r"\s*[0-9a-fA-F]+:\s*(?:[0-9a-fA-F]{2}(?:\s+|\Z))+\Z")
_HEX = frozenset("0123456789abcdefABCDEF")

CONFIG_MAX = 4096
LINE_MAX = 253
"""Longest line lib/dump.c takes, in bytes without the newline (fgets into buf[256] with size 255)."""


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
    origin: str = ""
    """Where the function came from ("file:line" of its address line), for error messages."""
    raw_slot: tuple[int, int] | None = None
    """(device, function) of an address no devfn can hold (00:20.0, 00:01.8): lspci 3.9 lists such
    lines as written; only ``parse_dump(..., any_slot=True)`` returns them, with ``devfn`` -1."""

    @property
    def name(self) -> str:
        dev, fn = self.raw_slot if self.raw_slot is not None else (self.devfn >> 3, self.devfn & 7)
        return f"{self.domain:04x}:{self.bus:02x}:{dev:02x}.{fn:x}"

    @property
    def length(self) -> int:
        return len(self.config)


class DumpError(VfiolabError):
    """A malformed dump: says which line, device and offset."""


def _near_miss(m: re.Match[str]) -> str:
    """Why an address-like line is no function line for lib/dump.c, which skips it without a word."""
    dom, bus, dev, fn = m.groups()
    if dom is not None and len(dom) > 5:
        why = f"domain {dom} has {len(dom)} hex digits, pciutils 3.9 reads at most 5"
    elif (dom is not None and len(dom) < 4) or len(bus) != 2 or len(dev) != 2:
        why = "not a [[d]dddd:]bb:dd.f address (two hex digits of bus and device, a 4- or 5-digit domain)"
    elif len(fn) != 1 or fn not in "0123456789":
        why = f"function {fn!r} is not one decimal digit"
    else:
        why = "no space after the address (a function line is 'bb:dd.f ', a title may follow)"
    return f"{why}; lspci -F would skip this function"


def _bad_byte(rest: str, off: int) -> str:
    """The first token of ``rest`` that lib/dump.c refuses, and its config offset."""
    pos = 0
    while (pos + 2 <= len(rest) and rest[pos] in _HEX and rest[pos + 1] in _HEX
           and (pos + 2 == len(rest) or rest[pos + 2] == " ")):
        pos += 3
        off += 1
    token = rest[pos:].split(" ", 1)[0]
    if not token:
        return f"two spaces in a row before offset {off:#x}"
    return f"malformed byte {token!r} at offset {off:#x}"


def _outside(source: str, lineno: int, after_blank: bool) -> DumpError:
    """Hex data lib/dump.c would drop without a word: it belongs to no function."""
    where = "after a blank line, which ends a function" if after_blank else "before the first function"
    return DumpError(f"{source}:{lineno}: hex data {where} (lspci -F would ignore it)")


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _check_lines(text: str, lines: list[str], source: str) -> None:
    """What lib/dump.c refuses before looking at a line (fgets + strchr), the first one in the file:
    254 bytes or more, a NUL byte, no newline at the end."""
    problems: list[tuple[int, str]] = []
    nul = text.find("\0")
    if nul >= 0:
        problems.append((_line_of(text, nul), "NUL byte in the line (lspci -F refuses it; not a text dump?)"))
    # A UTF-8 character takes at most 4 bytes: only lines of more than LINE_MAX // 4 need counting.
    if max(map(len, lines), default=0) > LINE_MAX // 4:
        for lineno, line in enumerate(lines, 1):
            if len(line) > LINE_MAX // 4 and len(line.encode("utf-8", "surrogateescape")) > LINE_MAX:
                problems.append((lineno, (f"line longer than {LINE_MAX} bytes (lspci -F reads lines into a "
                                          "256-byte buffer and refuses longer ones)")))
                break
    if lines and lines[-1]:
        problems.append((len(lines), ("no newline at the end of the last line (lspci -F refuses an "
                                      "unterminated line)")))
    if problems:
        lineno, what = min(problems)
        raise DumpError(f"{source}:{lineno}: {what}")


def parse_dump(text: str, source: str = "<dump>", *, any_slot: bool = False) -> list[DumpedFunction]:
    """Parse lspci -x style text (also ``-vvv -xxxx`` output with text interleaved), in file order.

    ``text`` is the file decoded with ``surrogateescape`` (line lengths are counted in bytes).  Device
    numbers 20-ff and functions 8-9, which lspci accepts, are an error unless ``any_slot``.
    """
    out: list[DumpedFunction] = []
    name = ""
    start = 0
    buf = bytearray()
    have = 0
    cur: tuple[int, int, int, str, tuple[int, int] | None] | None = None
    after_blank = False

    def finish() -> None:
        nonlocal cur
        if cur is not None:
            out.append(DumpedFunction(cur[0], cur[1], cur[2], bytes(buf[:have]), cur[3],
                                      origin=f"{source}:{start}", raw_slot=cur[4]))
        cur = None

    lines = text.split("\n")
    _check_lines(text, lines, source)
    lines.pop()                                 # "" after the last newline
    strip_cr = "\r" in text
    for lineno, line in enumerate(lines, 1):
        if strip_cr:
            line = line.removesuffix("\r")     # one CR, as dump_init() strips it
        # Data lines first: they are most lines, and no line is both (a data line has ": " at 3..9).
        m = _DATA_LINE_RE.match(line)
        if m is not None:
            if cur is None:
                raise _outside(source, lineno, after_blank)
            data = bytes.fromhex(m.group(2))
            if data:
                off = int(m.group(1), 16)
                end = off + len(data)
                if end > CONFIG_MAX:
                    raise DumpError(f"{source}:{lineno}: {name}: offset {max(off, CONFIG_MAX):#x} beyond 4096 "
                                    "bytes of config space")
                buf[off:end] = data
                have = max(have, end)
            continue
        if not line:
            finish()
            after_blank = True
            continue
        m = _DEV_RE.match(line)
        if m:
            finish()
            dom = int(m.group(1), 16) if m.group(1) else 0
            bus, dev, fn = int(m.group(2), 16), int(m.group(3), 16), int(m.group(4))
            name = f"{dom:04x}:{bus:02x}:{dev:02x}.{fn:x}"
            raw: tuple[int, int] | None = None
            if dev > 0x1F or fn > 7:
                if not any_slot:
                    what = f"device {dev:02x} is not 00-1f" if dev > 0x1F else f"function {fn} is not 0-7"
                    raise DumpError(f"{source}:{lineno}: {name}: {what} (no PCI function has this address; "
                                    "lspci -F lists it as written)")
                raw = (dev, fn)
            cur = (dom, bus, -1 if raw else (dev << 3) | fn, line[m.end():].strip(), raw)
            start, buf, have, after_blank = lineno, bytearray(b"\xff" * CONFIG_MAX), 0, False
            continue
        m = _DATA_RE.match(line)
        if m is not None:                       # a data line whose bytes lib/dump.c refuses
            if cur is None:
                raise _outside(source, lineno, after_blank)
            raise DumpError(f"{source}:{lineno}: {name}: {_bad_byte(line[m.end():], int(m.group(1), 16))}")
        near = _ADDR_LIKE.match(line)
        if near:
            raise DumpError(f"{source}:{lineno}: {near.group(0)}: {_near_miss(near)}")
        if _DATA_LIKE.match(line):
            raise DumpError(f"{source}:{lineno}: hex data not in the form 'OFF: hh hh ...' (an offset of 2 to 8 hex "
                            "digits at the start of the line, a colon, one space); lspci -F would ignore it")
        # any other line is text (e.g. lspci -v output): ignored
    finish()
    return out


def read_dump_file(path: str) -> str:
    """A dump file's text, decoded so that parse_dump() counts bytes as lspci does; errors name the file."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DumpError(f"{path}: cannot open dump: {e.strerror}") from None
    return data.decode("utf-8", "surrogateescape")


def load_dump(path: str, *, any_slot: bool = False) -> list[DumpedFunction]:
    """Every function of the dump file at ``path``; a file with none is an error (not an lspci dump)."""
    funcs = parse_dump(read_dump_file(path), path, any_slot=any_slot)
    if not funcs:
        raise DumpError(f"{path}: no PCI functions (an lspci -x dump starts each one with a 'bb:dd.f ' line)")
    return funcs


def check_unique(funcs: Iterable[DumpedFunction]) -> None:
    """Refuse a function listed twice (lspci shows both; a machine cannot have them)."""
    seen: dict[tuple[int, int, int], DumpedFunction] = {}
    for f in funcs:
        key = (f.domain, f.bus, f.devfn)
        first = seen.setdefault(key, f)
        if first is not f:
            where = f"{f.origin}: " if f.origin else ""
            also = f" (first at {first.origin})" if first.origin else ""
            raise DumpError(f"{where}{f.name} is listed a second time{also}")


def format_dump(domain: int, bus: int, devfn: int, config: bytes, title: str = "",
                with_domain: bool = False) -> str:
    """One device block in ``lspci -xxxx`` layout (16 bytes a line, lower-case hex), blank line after."""
    head = f"{bus:02x}:{devfn >> 3:02x}.{devfn & 7:x}"
    if with_domain or domain:
        head = f"{domain:04x}:{head}"
    lines = [f"{head} {title}".rstrip() + (" " if not title else "")]
    lines += [f"{off:02x}: {config[off:off + 16].hex(' ')}" for off in range(0, len(config), 16)]
    return "\n".join(lines) + "\n\n"
