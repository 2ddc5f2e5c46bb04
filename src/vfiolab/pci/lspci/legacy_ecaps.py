"""lspci 3.9 decoders for extended capabilities the model does not build: Virtual Channel (0x02 and
its second ID 0x09), Root Complex Link Declaration (0x05), Root Complex Event Collector Endpoint
Association (0x07) and Multicast (0x12).

They follow pciutils 3.9 ``ls-ecaps.c`` (cap_vc, cap_rclink, cap_rcec, cap_multicast) so that any dump
prints as lspci prints it.  IDs lspci 3.9 only names live in ``capwalk.EXT_NAME_ONLY``; as in
``legacy_caps``, a decoder of a ``vfiolab.pci.caps`` module wins over the ones here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from vfiolab.pci.caps.base import EXT_DECODERS, register_decoder
from vfiolab.pci.decode import DecodeContext, Out, flag

Decoder = Callable[[DecodeContext, Out, int], None]

# PCI Express Device/Port Types (PCI Express capability, bits 7:4) the Multicast layout depends on.
_ENDPOINTS: Final = (0x0, 0x9)  # Endpoint, Root Complex Integrated Endpoint
_SWITCH_ROOT_PORTS: Final = (0x4, 0x5, 0x6)  # Root Port, Upstream, Downstream


def _bits(x: int, at: int, width: int) -> int:
    return (x >> at) & ((1 << width) - 1)


def _table(names: tuple[str, ...], i: int) -> str:
    # lspci.h TABLE(): a name, or "??N" past the table's end
    return names[i] if i < len(names) else f"??{i}"


def _c_shift(n: int) -> int:
    # ``1 << n`` of a C int on x86-64 as lspci computes it: count taken mod 32, result a signed int
    v = (1 << (n & 31)) & 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


# ---------------------------------------------------------------------------------- Virtual Channel
_VC_REF_CLOCKS: Final = ("100ns",)
_PORT_ARB: Final = ("Fixed", "WRR32", "WRR64", "WRR128", "??4", "??5", "??6", "??7")
_VC_ARB: Final = ("Fixed", "WRR32", "WRR64", "WRR128", "TWRR128", "WRR256", "??6", "??7")


def _arb_list(value: int, names: tuple[str, ...]) -> str:
    # Reserved ("??N") arbitration schemes appear only when their capability bit is set.
    return " ".join(n + flag(value, 1 << i) for i, n in enumerate(names) if n[0] != "?" or value & (1 << i))


def virtual_channel(ctx: DecodeContext, out: Out, where: int) -> None:
    """ls-ecaps.c cap_vc(): port capabilities, then one block per VC resource (0..Extended VC Count)."""
    out.write("Virtual Channel\n")
    if ctx.verbose < 2 or not ctx.fetch(where + 4, 0x18):
        return
    cr1, cr2 = ctx.r32(where + 4), ctx.r32(where + 8)
    ctrl, status = ctx.r16(where + 12), ctx.r16(where + 14)
    out.write(f"\t\tCaps:\tLPEVC={_bits(cr1, 4, 3)} RefClk={_table(_VC_REF_CLOCKS, _bits(cr1, 8, 2))} "
              f"PATEntryBits={1 << _bits(cr1, 10, 2)}\n")
    out.write(f"\t\tArb:\t{_arb_list(cr2, _PORT_ARB)}\n")
    out.write(f"\t\tCtrl:\tArbSelect={_PORT_ARB[_bits(ctrl, 1, 3)]}\n\t\tStatus:\tInProgress{flag(status, 1)}\n")
    pat = _bits(cr2, 24, 8)
    if pat:
        out.write(f"\t\tPort Arbitration Table [{where + 16 * pat:x}] <?>\n")
    for i in range(_bits(cr1, 0, 3) + 1):
        pos = where + 16 + 12 * i
        if not ctx.fetch(pos, 12):
            out.write(f"\t\tVC{i}:\t<unreadable>\n")
            continue
        rcap, rctrl, rstatus = ctx.r32(pos), ctx.r32(pos + 4), ctx.r16(pos + 10)
        pat_pos = _bits(rcap, 24, 8)
        out.write(f"\t\tVC{i}:\tCaps:\tPATOffset={pat_pos:02x} MaxTimeSlots={_bits(rcap, 16, 7) + 1} "
                  f"RejSnoopTrans{flag(rcap, 1 << 15)}\n")
        out.write(f"\t\t\tArb:\t{_arb_list(rcap, _VC_ARB)}\n")
        out.write(f"\t\t\tCtrl:\tEnable{flag(rctrl, 1 << 31)} ID={_bits(rctrl, 24, 3)} "
                  f"ArbSelect={_VC_ARB[_bits(rctrl, 17, 3)]} TC/VC={_bits(rctrl, 0, 8):02x}\n")
        out.write(f"\t\t\tStatus:\tNegoPending{flag(rstatus, 2)} InProgress{flag(rstatus, 1)}\n")
        if pat_pos:
            out.write("\t\t\tPort Arbitration Table <?>\n")


# ---------------------------------------------------------------------------------- Root Complex Link
_ELEMENT_TYPES: Final = ("Config", "Egress", "Internal")


def root_complex_link(ctx: DecodeContext, out: Out, where: int) -> None:
    """ls-ecaps.c cap_rclink(): the element self description, then each 16-byte link entry."""
    out.write("Root Complex Link\n")
    if ctx.verbose < 2 or not ctx.fetch(where + 4, 12):
        return
    esd = ctx.r32(where + 4)
    out.write(f"\t\tDesc:\tPortNumber={_bits(esd, 24, 8):02x} ComponentID={_bits(esd, 16, 8):02x} "
              f"EltType={_table(_ELEMENT_TYPES, _bits(esd, 0, 8))}\n")
    for i in range(_bits(esd, 8, 8)):
        pos = where + 16 + 16 * i
        if not ctx.fetch(pos, 16):
            out.write(f"\t\tLink{i}:\t<unreadable>\n")
            return
        desc, lo, hi = ctx.r32(pos), ctx.r32(pos + 8), ctx.r32(pos + 12)
        out.write(f"\t\tLink{i}:\tDesc:\tTargetPort={_bits(desc, 24, 8):02x} "
                  f"TargetComponent={_bits(desc, 16, 8):02x} AssocRCRB{flag(desc, 4)} "
                  f"LinkType={'Config' if desc & 2 else 'MemMapped'} LinkValid{flag(desc, 1)}\n")
        if desc & 2:
            # Configuration-space link: the bus number field is as wide as the low 3 bits say (0 = 8).
            bus_bits = lo & 7 or 8
            out.write(f"\t\t\tAddr:\t{_bits(lo, 20, bus_bits):02x}:{_bits(lo, 15, 5):02x}.{_bits(lo, 12, 3)}  "
                      f"CfgSpace={hi:08x}{lo:08x}\n")
        else:
            out.write(f"\t\t\tAddr:\t{hi:08x}{lo:08x}\n")


# ------------------------------------------------------------------- Root Complex Event Collector
def _rciep_devices(bmap: int) -> str:
    # Each run of set bits prints its first device; "-last" follows only when the run is longer than
    # one and a clear bit ends it below device 32 (a run up to device 31 prints its start only).
    parts: list[str] = []
    dev = 0
    while dev < 32:
        if not bmap >> dev & 1:
            dev += 1
            continue
        end = dev
        while end + 1 < 32 and bmap >> (end + 1) & 1:
            end += 1
        text = f"{',' if parts else ''} {dev}"
        if end > dev and end < 31:
            text += f"-{end}"
        parts.append(text)
        dev = end + 1
    return "".join(parts)


def root_complex_event_collector(ctx: DecodeContext, out: Out, where: int) -> None:
    """ls-ecaps.c cap_rcec(): the RCiEP bitmap, and from capability version 2 the associated buses."""
    out.write("Root Complex Event Collector Endpoint Association\n")
    if ctx.verbose < 2 or not ctx.fetch(where, 12):
        return
    version = _bits(ctx.r32(where), 16, 4)
    bmap = ctx.r32(where + 4)
    if bmap:
        out.write(f"\t\tRCiEPBitmap: RCiEP at Device(s):{_rciep_devices(bmap)}\n")
    else:
        out.write(f"\t\tRCiEPBitmap: {'00000000 [none]' if ctx.verbose > 2 else '[none]'}\n")
    if version < 2:
        return
    busn = ctx.r32(where + 8)
    nxt, last = _bits(busn, 8, 8), _bits(busn, 16, 8)
    if last == 0 and nxt == 0xFF:
        out.write(f"\t\tAssociatedBusNumbers: {'ff-00 [none]' if ctx.verbose > 2 else '[none]'}\n")
    else:
        out.write(f"\t\tAssociatedBusNumbers: {nxt:02x}-{last:02x}\n")


# ------------------------------------------------------------------------------------------ Multicast
_MC_VECTORS: Final = (("McastReceiveVec:      ", 0x10), ("McastBlockAllVec:     ", 0x18),
                      ("McastBlockUntransVec: ", 0x20))


def multicast(ctx: DecodeContext, out: Out, where: int) -> None:
    """ls-ecaps.c cap_multicast(): the layout depends on the PCI Express port type."""
    out.write("Multicast\n")
    if ctx.verbose < 2 or not ctx.fetch(where + 4, 0x30):
        return
    ptype = -1 if ctx.pcie_type is None else ctx.pcie_type
    cap = ctx.r16(where + 4)
    text = f"\t\tMcastCap: MaxGroups {_bits(cap, 0, 6) + 1}"
    if ptype in _ENDPOINTS:
        win = _bits(cap, 8, 6)
        text += f", WindowSz {win} ({_c_shift(win)} bytes)"
    if ptype in _SWITCH_ROOT_PORTS:
        text += f", ECRCRegen{flag(cap, 0x8000)}\n"
    # Other port types get no line break: lspci runs McastCap and McastCtl together on one line.
    ctl = ctx.r16(where + 6)
    out.write(f"{text}\t\tMcastCtl: NumGroups {_bits(ctl, 0, 6) + 1}, Enable{flag(ctl, 0x8000)}\n")
    bar = ctx.r64(where + 8)
    out.write(f"\t\tMcastBAR: IndexPos {bar & 0x3F}, BaseAddr {bar & ~0xFFF:016x}\n")
    for label, reg in _MC_VECTORS:
        out.write(f"\t\t{label}{ctx.r64(where + reg):016x}\n")
    if ptype in _ENDPOINTS:
        return
    ovl = ctx.r64(where + 0x28)
    size = ovl & 0x3F
    shown = f"({_c_shift(size)} bytes)" if size >= 6 else "(disabled)"
    out.write(f"\t\tMcastOverlayBAR: OverlaySize {size} {shown}, BaseAddr {ovl & ~0x3F:016x}\n")


LEGACY: Final[dict[int, Decoder]] = {
    0x02: virtual_channel, 0x05: root_complex_link, 0x07: root_complex_event_collector,
    0x09: virtual_channel, 0x12: multicast,
}


def register_missing() -> None:
    """Register the decoders above for every extended ID that no ``vfiolab.pci.caps`` module decodes."""
    for cap_id, fn in LEGACY.items():
        if cap_id not in EXT_DECODERS:
            register_decoder(cap_id, extended=True)(fn)
