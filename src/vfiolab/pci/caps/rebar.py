"""Resizable BAR and VF Resizable BAR extended capabilities (PCIe Base 6.0 §7.8.6, §9.3.7.5): builders
and lspci decoder.

One 8-byte entry per resizable BAR: a capability register (sizes 1 MB..128 TB in bits [31:4]) and a
control register (BAR index [2:0], number of resizable BARs [7:5] in the first entry, BAR Size [13:8],
larger sizes 256 TB..8 EB in bits [31:16]).  BAR Size is RW but only takes supported sizes; a change
is reported to ``on_resize`` so the owner of the BAR can change its address mask
(Linux ``drivers/pci/rebar.c``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from vfiolab.errors import VfiolabError
from vfiolab.pci.caps.base import Capability, register_decoder
from vfiolab.pci.config import ConfigSpace
from vfiolab.pci.decode import DecodeContext, Out

MIN_SHIFT = 20  # encoding 0 = 1 MB (rebar.c PCI_REBAR_MIN_SIZE)
MAX_ENCODING = 43  # 2^63 bytes, the last extended size bit
CTRL_BAR_IDX = 0x00000007
CTRL_NBAR = 0x000000E0
CTRL_BAR_SIZE = 0x00003F00

ResizeHook = Callable[[int, int], None]
"""on_resize(bar_index, new_size_bytes): called after software changed a BAR Size field."""


def size_to_encoding(size: int) -> int:
    """Bytes (a power of two, 1 MB..8 EB) to the BAR Size encoding (``pci_rebar_bytes_to_size``)."""
    enc = size.bit_length() - 1 - MIN_SHIFT
    if size <= 0 or size & (size - 1) or not 0 <= enc <= MAX_ENCODING:
        raise VfiolabError(f"Resizable BAR: size {size:#x} is not a power of two from 1 MB to 8 EB")
    return enc


@dataclass
class RebarBar:
    """One resizable BAR: its index, the sizes it supports (bytes) and its size after reset."""

    index: int
    sizes: Sequence[int]
    size: int | None = None
    """Defaults to the largest supported size."""


class ResizableBarCap(Capability):
    """Resizable BAR capability for the function's own BARs."""

    cap_id: ClassVar[int] = 0x15
    extended: ClassVar[bool] = True
    name: ClassVar[str] = "Resizable BAR"
    MAX_INDEX: ClassVar[int] = 5

    def __init__(self, bars: Sequence[RebarBar], *, on_resize: ResizeHook | None = None,
                 version: int = 1) -> None:
        if not 1 <= len(bars) <= 6:
            raise VfiolabError(f"{self.name}: {len(bars)} BARs (1..6)")
        seen: set[int] = set()
        self.entries: list[tuple[int, int, int]] = []  # (index, supported encoding mask, current encoding)
        for bar in bars:
            if not 0 <= bar.index <= self.MAX_INDEX or bar.index in seen:
                raise VfiolabError(f"{self.name}: BAR index {bar.index} repeated or outside 0..{self.MAX_INDEX}")
            seen.add(bar.index)
            if not bar.sizes:
                raise VfiolabError(f"{self.name}: BAR {bar.index} supports no size")
            mask = 0
            for size in bar.sizes:
                mask |= 1 << size_to_encoding(size)
            cur = mask.bit_length() - 1 if bar.size is None else size_to_encoding(bar.size)
            if not mask >> cur & 1:
                raise VfiolabError(f"{self.name}: BAR {bar.index} size {bar.size:#x} is not among its sizes")
            self.entries.append((bar.index, mask, cur))
        self.on_resize = on_resize
        self.version = version

    def length(self) -> int:
        return 4 + 8 * len(self.entries)

    def build(self, cs: ConfigSpace, off: int) -> None:
        for i, (index, mask, cur) in enumerate(self.entries):
            at = off + 4 + 8 * i
            cs.init_reg(at, 4, (mask & 0x0FFFFFFF) << 4)
            nbar = len(self.entries) << 5 if i == 0 else 0  # RsvdP in all but the first entry
            ctrl = index | nbar | cur << 8 | (mask >> 28) << 16
            cs.init_reg(at + 4, 4, ctrl, rw=CTRL_BAR_SIZE)

    def attach(self, cs: ConfigSpace, off: int) -> None:
        for i, (index, mask, _) in enumerate(self.entries):
            ctrl_off = off + 8 + 8 * i

            def on_ctrl(woff: int, size: int, old_dw: int, new_dw: int, *, index: int = index,
                        mask: int = mask, ctrl_off: int = ctrl_off) -> None:
                old_enc = (old_dw & CTRL_BAR_SIZE) >> 8
                new_enc = (new_dw & CTRL_BAR_SIZE) >> 8
                if new_enc == old_enc:
                    return
                if not mask >> new_enc & 1:
                    # Unsupported sizes are not taken: the field keeps its previous value.
                    cs.set(ctrl_off, 4, (new_dw & ~CTRL_BAR_SIZE) | (old_dw & CTRL_BAR_SIZE))
                    return
                if self.on_resize is not None:
                    self.on_resize(index, 1 << (new_enc + MIN_SHIFT))

            cs.add_write_hook(ctrl_off, 4, on_ctrl)

    def current_size(self, cs: ConfigSpace, index: int) -> int:
        """Bytes the BAR ``index`` decodes now, from its BAR Size field."""
        for i, (idx, _, _) in enumerate(self.entries):
            if idx == index:
                return 1 << (((cs.get(self.offset + 8 + 8 * i, 4) & CTRL_BAR_SIZE) >> 8) + MIN_SHIFT)
        raise VfiolabError(f"{self.name}: BAR {index} is not resizable")


class VfResizableBarCap(ResizableBarCap):
    """VF Resizable BAR capability: same layout, for the VF BARs of the SR-IOV capability."""

    cap_id: ClassVar[int] = 0x24
    name: ClassVar[str] = "VF Resizable BAR"


def _size_text(enc: int) -> str:
    # ls-ecaps.c print_rebar_range_size: 1MB..512MB, GB, TB, PB, EB; beyond 2^63 "<unknown>".
    if not 0 <= enc <= MAX_ENCODING:
        return " <unknown>"
    unit = ("MB", "GB", "TB", "PB", "EB")[enc // 10]
    return f" {1 << enc % 10}{unit}"


def _decode_rebar(ctx: DecodeContext, out: Out, where: int, title: str) -> None:
    # ls-ecaps.c cap_rebar: the first entry's count (1..6) says how many entries follow; an entry that
    # is not readable ends the list with "<unreadable>".
    out.write(f"{title} Resizable BAR\n")
    if ctx.verbose < 2:
        return
    count = 1
    i = 0
    while i < count:
        at = where + 4 + 8 * i
        if not ctx.fetch(at, 8):
            out.write("\t\t<unreadable>\n")
            return
        sizes, ctrl = ctx.r32(at) >> 4, ctx.r32(at + 4)
        if i == 0:
            count = (ctrl & CTRL_NBAR) >> 5
            if not 1 <= count <= 6:
                out.write(f"\t\t<error in resizable BAR: num_bars={count} is out of specification>\n")
                return
        out.write(f"\t\tBAR {ctrl & CTRL_BAR_IDX}: current size:{_size_text((ctrl >> 8) & 0x3F)}")
        supported = sizes | (ctrl >> 16) << 28
        if supported:
            out.write(", supported:" + "".join(_size_text(e) for e in range(44) if supported >> e & 1))
        out.write("\n")
        i += 1


@register_decoder(ResizableBarCap.cap_id, extended=True)
def decode_rebar(ctx: DecodeContext, out: Out, where: int) -> None:
    """``Physical Resizable BAR`` and one line per BAR at -vv."""
    _decode_rebar(ctx, out, where, "Physical")


@register_decoder(VfResizableBarCap.cap_id, extended=True)
def decode_vf_rebar(ctx: DecodeContext, out: Out, where: int) -> None:
    """``Virtual Resizable BAR`` and one line per VF BAR at -vv."""
    _decode_rebar(ctx, out, where, "Virtual")
