"""The verbose (-v/-vv/-vvv) decode of a function's configuration header, as pciutils 3.9 ``lspci.c``.

show_verbose(), show_bases(), show_rom(), show_htype0/1/2/unknown() rebuilt from their observable
output.  A dump carries no OS resource information, so there are no ``[size=]`` tags on BARs and
lspci's raw-register fallbacks apply (``pci.md`` §2.1 caveats 2 and 3).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from vfiolab.pci.decode import flags
from vfiolab.pci.lspci.device import HDR_BRIDGE, HDR_CARDBUS, HDR_NORMAL, Device

Write = Callable[[str], object]
CapWalker = Callable[[Device, int], None]

_CONTROL: Final = ((0x1, "I/O"), (0x2, "Mem"), (0x4, "BusMaster"), (0x8, "SpecCycle"), (0x10, "MemWINV"),
                   (0x20, "VGASnoop"), (0x40, "ParErr"), (0x80, "Stepping"), (0x100, "SERR"),
                   (0x200, "FastB2B"), (0x400, "DisINTx"))
_STATUS_A: Final = ((0x10, "Cap"), (0x20, "66MHz"), (0x40, "UDF"), (0x80, "FastB2B"), (0x100, "ParErr"))
_STATUS_B: Final = ((0x800, ">TAbort"), (0x1000, "<TAbort"), (0x2000, "<MAbort"), (0x4000, ">SERR"),
                    (0x8000, "<PERR"), (0x8, "INTx"))
_SEC_STATUS_A: Final = ((0x20, "66MHz"), (0x80, "FastB2B"), (0x100, "ParErr"))
_SEC_STATUS_B: Final = ((0x800, ">TAbort"), (0x1000, "<TAbort"), (0x2000, "<MAbort"), (0x4000, "<SERR"),
                        (0x8000, "<PERR"))
_BRIDGE_CTL: Final = ((0x1, "Parity"), (0x2, "SERR"), (0x4, "NoISA"), (0x8, "VGA"), (0x10, "VGA16"),
                      (0x20, "MAbort"), (0x40, ">Reset"), (0x80, "FastB2B"))
_BRIDGE_CTL2: Final = ((0x100, "PriDiscTmr"), (0x200, "SecDiscTmr"), (0x400, "DiscTmrStat"),
                       (0x800, "DiscTmrSERREn"))
_CB_BRIDGE_CTL: Final = ((0x1, "Parity"), (0x2, "SERR"), (0x4, "ISA"), (0x8, "VGA"), (0x20, "MAbort"),
                         (0x40, ">Reset"), (0x80, "16bInt"), (0x400, "PostWrite"))
_DEVSEL: Final = ("fast", "medium", "slow", "??")
_MEM_TYPE: Final = ("32-bit", "low-1M", "64-bit", "type 3")
_FLAGS_WORDS: Final = ((0x4, "bus master, "), (0x20, "VGA palette snoop, "), (0x80, "stepping, "),
                       (0x200, "fast Back2Back, "))

CMD_IO: Final = 0x1
CMD_MEM: Final = 0x2
CMD_MASTER: Final = 0x4
U64: Final = (1 << 64) - 1


def _pin_char(pin: int) -> str:
    # lspci.c prints 'A' + pin - 1 with %c: any byte value, kept raw (surrogateescape) above 0x7f.
    if not pin:
        return "?"
    b = (0x40 + pin) & 0xFF
    return chr(b) if b < 0x80 else chr(0xDC00 + b)


def _size(x: int) -> str:
    # lspci.c show_size(): the largest unit that divides evenly, printed as an unsigned 32-bit number.
    if not x:
        return ""
    suffixes = ("", "K", "M", "G", "T")
    i = 0
    while i < 4 and not x % 1024:
        x //= 1024
        i += 1
    return f" [size={x & 0xFFFFFFFF}{suffixes[i]}]"


def _range(w: Write, verbose: int, prefix: str, base: int, limit: int, bits: int) -> None:
    # lspci.c show_range() for a window lspci read from the bridge registers (never "disabled" by the OS).
    text = prefix + ":"
    if base <= limit or verbose > 2:
        digits = (bits + 3) // 4
        text += f" {base:0{digits}x}-{limit:0{digits}x}"
    text += _size((limit - base + 1) & U64) if base <= limit else " [disabled]"
    if bits:
        text += f" [{bits}-bit]"
    w(text + "\n")


def show_bases(w: Write, d: Device, cnt: int, verbose: int, without_config: bool = False) -> None:
    """BARs (lspci.c show_bases): raw register flags, no sizes; the upper half of a 64-bit BAR
    reappears as a bogus region when non-zero (pci.md §2.1 caveat 3)."""
    cmd = CMD_IO | CMD_MEM if without_config else d.rd16(0x04)
    for i in range(cnt):
        pos = d.bases[i]
        flg = 0 if without_config else d.rd32(0x10 + 4 * i)
        if flg == 0xFFFFFFFF:
            flg = 0
        if not pos and not flg:
            continue
        text = f"\tRegion {i}: " if verbose > 1 else "\t"
        if flg & 1:
            a = pos & ~3 & U64
            text += "I/O ports at " + (f"{a:04x}" if a or cmd & CMD_IO else "<unassigned>")
            if not cmd & CMD_IO:
                text += " [disabled]"
        else:
            a = pos & ~0xF & U64
            text += "Memory at " + (f"{a:08x}" if a else "<unassigned>")
            text += f" ({_MEM_TYPE[(flg >> 1) & 3]}, {'' if flg & 8 else 'non-'}prefetchable)"
            if not cmd & CMD_MEM:
                text += " [disabled]"
        w(text + "\n")


def show_rom(w: Write, d: Device, reg: int) -> None:
    """Expansion ROM line (lspci.c show_rom) from the ROM BAR at ``reg`` (-1: no register)."""
    rom = d.rom
    flg = d.rd32(reg) if reg >= 0 else 0
    cmd = d.rd16(0x04) if reg >= 0 else CMD_MEM
    if not rom and not flg:
        return
    mask = 0xFFFFF800
    text = "\tExpansion ROM at "
    if rom & mask:
        text += f"{rom & mask:08x}"
    elif flg & mask:
        text += "<ignored>"
    else:
        text += "<unassigned>"
    if not flg & 1:
        text += " [disabled]"
    elif not cmd & CMD_MEM:
        text += " [disabled by cmd]"
    w(text + "\n")


def _htype1(w: Write, d: Device, verbose: int) -> None:
    # lspci.c show_htype1(), with no OS-provided bridge windows (a dump has none).
    show_bases(w, d, 2, verbose)
    w(f"\tBus: primary={d.rd8(0x18):02x}, secondary={d.rd8(0x19):02x}, subordinate={d.rd8(0x1A):02x}, "
      f"sec-latency={d.rd8(0x1B)}\n")
    io_base, io_limit = d.rd8(0x1C), d.rd8(0x1D)
    io_type = io_base & 0xF
    if io_type != io_limit & 0xF or io_type not in (0, 1):
        w(f"\t!!! Unknown I/O range types {io_base:x}/{io_limit:x}\n")
    else:
        base, limit = (io_base & 0xF0) << 8, (io_limit & 0xF0) << 8
        if io_type == 1:
            base |= d.rd16(0x30) << 16
            limit |= d.rd16(0x32) << 16
        _range(w, verbose, "\tI/O behind bridge", base, limit + 0xFFF, 32 if io_type == 1 else 16)
    mem_base, mem_limit = d.rd16(0x20), d.rd16(0x22)
    if mem_base & 0xF != mem_limit & 0xF or mem_base & 0xF:
        w(f"\t!!! Unknown memory range types {mem_base:x}/{mem_limit:x}\n")
    else:
        _range(w, verbose, "\tMemory behind bridge", (mem_base & 0xFFF0) << 16,
               ((mem_limit & 0xFFF0) << 16) + 0xFFFFF, 32)
    pref_base, pref_limit = d.rd16(0x24), d.rd16(0x26)
    pref_type = pref_base & 0xF
    if pref_type != pref_limit & 0xF or pref_type not in (0, 1):
        w(f"\t!!! Unknown prefetchable memory range types {pref_base:x}/{pref_limit:x}\n")
    else:
        base, limit = (pref_base & 0xFFF0) << 16, (pref_limit & 0xFFF0) << 16
        if pref_type == 1:
            base |= d.rd32(0x28) << 32
            limit |= d.rd32(0x2C) << 32
        _range(w, verbose, "\tPrefetchable memory behind bridge", base, (limit + 0xFFFFF) & U64,
               64 if pref_type == 1 else 32)
    if verbose > 1:
        sec = d.rd16(0x1E)
        w(f"\tSecondary status: {flags(sec, _SEC_STATUS_A)} DEVSEL={_DEVSEL[(sec >> 9) & 3]} "
          f"{flags(sec, _SEC_STATUS_B)}\n")
    show_rom(w, d, 0x38)
    if verbose > 1:
        brc = d.rd16(0x3E)
        w(f"\tBridgeCtl: {flags(brc, _BRIDGE_CTL)}\n\t\t{flags(brc, _BRIDGE_CTL2)}\n")


def _htype2(w: Write, d: Device, verbose: int) -> bool:
    # lspci.c show_htype2(); returns False when the capability list is out of reach.
    cmd, brc = d.rd16(0x04), d.rd16(0x3E)
    show_bases(w, d, 1, verbose)
    w(f"\tBus: primary={d.rd8(0x18):02x}, secondary={d.rd8(0x19):02x}, subordinate={d.rd8(0x1A):02x}, "
      f"sec-latency={d.rd8(0x1B)}\n")
    for i in range(2):
        base, limit = d.rd32(0x1C + 8 * i), (d.rd32(0x20 + 8 * i) + 0xFFF) & 0xFFFFFFFF
        if base <= limit or verbose > 2:
            w(f"\tMemory window {i}: {base:08x}-{limit:08x}{'' if cmd & CMD_MEM else ' [disabled]'}"
              f"{' (prefetchable)' if brc & (0x100 << i) else ''}\n")
    for i in range(2):
        base, limit = d.rd32(0x2C + 8 * i), d.rd32(0x30 + 8 * i)
        if not base & 1:
            base &= 0xFFFF
            limit &= 0xFFFF
        base &= ~3 & 0xFFFFFFFF
        limit = ((limit & ~3) + 3) & 0xFFFFFFFF
        if base <= limit or verbose > 2:
            w(f"\tI/O window {i}: {base:08x}-{limit:08x}{'' if cmd & CMD_IO else ' [disabled]'}\n")
    if d.rd16(0x16) & 0x4000:
        w("\tSecondary status: SERR\n")
    if verbose > 1:
        w(f"\tBridgeCtl: {flags(brc, _CB_BRIDGE_CTL)}\n")
    if d.cached < 128:
        w("\t<access denied to the rest>\n")
        return False
    exca = d.rd16(0x44)
    if exca:
        w(f"\t16-bit legacy interface ports at {exca:04x}\n")
    return True


def _unknown(w: Write, d: Device, verbose: int) -> None:
    # lspci.c show_htype_unknown(): a dump has no OS resources, so only raw BAR values can show.
    show_bases(w, d, 6, verbose, without_config=True)
    show_rom(w, d, -1)


def show_verbose_header(w: Write, d: Device, verbose: int, walk_caps: CapWalker) -> None:
    """Everything lspci.c show_verbose() prints after the title line and Subsystem."""
    htype = d.htype
    cls = d.cls
    unknown = False
    bist = max_lat = min_gnt = 0
    if htype == HDR_NORMAL:
        if cls == 0x0604:
            w(f"\t!!! Invalid class {cls:04x} for header type {htype:02x}\n")
        bist, max_lat, min_gnt = d.rd8(0x0F), d.rd8(0x3F), d.rd8(0x3E)
    elif htype in (HDR_BRIDGE, HDR_CARDBUS):
        if cls >> 8 != 0x06:
            w(f"\t!!! Invalid class {cls:04x} for header type {htype:02x}\n")
        bist = d.rd8(0x0F)
    else:
        if not d.no_config:
            w(f"\t!!! Unknown header type {htype:02x}\n")
        unknown = True
    cmd, status = d.rd16(0x04), d.rd16(0x06)
    if not unknown and verbose > 1:
        w(f"\tControl: {flags(cmd, _CONTROL)}\n")
        w(f"\tStatus: {flags(status, _STATUS_A)} DEVSEL={_DEVSEL[(status >> 9) & 3]} "
          f"{flags(status, _STATUS_B)}\n")
        if cmd & CMD_MASTER:
            text = f"\tLatency: {d.rd8(0x0D)}"
            if min_gnt or max_lat:
                parts = ([f"{min_gnt * 250}ns min"] if min_gnt else []) + (
                    [f"{max_lat * 250}ns max"] if max_lat else [])
                text += " (" + ", ".join(parts) + ")"
            cache_line = d.rd8(0x0C)
            if cache_line:
                text += f", Cache Line Size: {cache_line * 4} bytes"
            w(text + "\n")
    if verbose > 1:
        pin = 0 if unknown else d.rd8(0x3D)
        if pin or d.irq:
            w(f"\tInterrupt: pin {_pin_char(pin)} routed to IRQ {d.irq}\n")
    if not unknown and verbose <= 1:
        text = "\tFlags: " + "".join(word for mask, word in _FLAGS_WORDS if cmd & mask)
        text += "66MHz, " if status & 0x20 else ""
        text += "user-definable features, " if status & 0x40 else ""
        text += f"{_DEVSEL[(status >> 9) & 3]} devsel"
        if cmd & CMD_MASTER:
            text += f", latency {d.rd8(0x0D)}"
        if d.irq:
            text += f", IRQ {d.irq}"
        w(text + "\n")
    if bist & 0x80:
        w("\tBIST is running\n" if bist & 0x40 else f"\tBIST result: {bist & 0x0F:02x}\n")
    if htype == HDR_NORMAL:
        show_bases(w, d, 6, verbose)
        show_rom(w, d, 0x30)
        walk_caps(d, 0x34)
    elif htype == HDR_BRIDGE:
        _htype1(w, d, verbose)
        walk_caps(d, 0x34)
    elif htype == HDR_CARDBUS:
        if _htype2(w, d, verbose):
            walk_caps(d, 0x14)
    else:
        _unknown(w, d, verbose)
