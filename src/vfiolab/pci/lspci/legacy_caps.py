"""lspci 3.9 decoders for conventional-PCI capabilities the model does not build: AGP (0x02), VPD (0x03),
Slot ID (0x04), PCI-X (0x07), HyperTransport (0x08), Debug port (0x0a), SATA (0x12), Advanced Features
(0x13) and Enhanced Allocation (0x14).

They let vfiolab print any dump the way pciutils 3.9 ``ls-caps.c`` / ``ls-vpd.c`` does.  They are
registered only for IDs no capability module of ``vfiolab.pci.caps`` claims (a builder file with its
own decoder wins).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from vfiolab.pci.caps.base import STD_DECODERS, register_decoder
from vfiolab.pci.decode import DecodeContext, Out, flag, flags

Decoder = Callable[[DecodeContext, Out, int], None]


def _bits(x: int, at: int, width: int) -> int:
    return (x >> at) & ((1 << width) - 1)


# ---------------------------------------------------------------------------------------------- AGP
def _agp_rate(rate: int, agp3: bool) -> str:
    # ls-caps.c format_agp_rate(): x1/x2/x4, or x4/x8/x16 in AGP3 mode
    names = [f"x{1 << (i + 2 * agp3)}" for i in range(3) if rate & (1 << i)]
    return ",".join(names) if names else "<none>"


def agp(ctx: DecodeContext, out: Out, where: int) -> None:
    """ls-caps.c cap_agp()."""
    cap = ctx.r16(where + 2)
    ver, rev = (cap >> 4) & 0xF, cap & 0xF
    out.write(f"AGP version {ver:x}.{rev:x}\n")
    if ctx.verbose < 2 or not ctx.fetch(where + 4, 8):
        return
    t = ctx.r32(where + 4)
    agp3 = ver >= 3 and bool(t & 0x8)
    out.write(f"\t\tStatus: RQ={(t >> 24) + 1} Iso{flag(t, 0x10000)} ArqSz={(t & 0xE000) >> 13} "
              f"Cal={(t & 0x1C00) >> 10} "
              + flags(t, ((0x200, "SBA"), (0x100, "ITACoh"), (0x80, "GART64"), (0x40, "HTrans"),
                          (0x20, "64bit"), (0x10, "FW"), (0x8, "AGP3")))
              + f" Rate={_agp_rate(t & 7, agp3)}\n")
    t = ctx.r32(where + 8)
    out.write(f"\t\tCommand: RQ={(t >> 24) + 1} ArqSz={(t & 0xE000) >> 13} Cal={(t & 0x1C00) >> 10} "
              + flags(t, ((0x200, "SBA"), (0x100, "AGP"), (0x80, "GART64"), (0x20, "64bit"), (0x10, "FW")))
              + f" Rate={_agp_rate(t & 7, agp3)}\n")


# ---------------------------------------------------------------------------------------------- VPD
def vpd(ctx: DecodeContext, out: Out, where: int) -> None:
    """ls-vpd.c cap_vpd(): a dump carries no VPD contents, so the first read fails."""
    out.write("Vital Product Data\n")
    if ctx.verbose >= 2:
        out.write("\t\tNot readable\n")


# -------------------------------------------------------------------------------- Slot ID, Debug port
def slot_id(ctx: DecodeContext, out: Out, where: int) -> None:
    """ls-caps.c cap_slotid()."""
    cap = ctx.r16(where + 2)
    esr = cap & 0xFF
    out.write(f"Slot ID: {esr & 0x1F} slots, First{flag(esr, 0x20)}, chassis {cap >> 8:02x}\n")


def debug_port(ctx: DecodeContext, out: Out, where: int) -> None:
    """ls-caps.c cap_debug_port()."""
    cap = ctx.r16(where + 2)
    out.write(f"Debug port: BAR={cap >> 13} offset={cap & 0x1FFF:04x}\n")


# -------------------------------------------------------------------------------------------- PCI-X
_MAX_OUTSTANDING: Final = (1, 2, 3, 4, 8, 12, 16, 32)
_SEC_CLOCK: Final = ("conv", "66MHz", "100MHz", "133MHz", "?4", "?5", "?6", "?7")


def pcix(ctx: DecodeContext, out: Out, where: int) -> None:
    """ls-caps.c cap_pcix(): by header type; CardBus and unknown headers print nothing at all."""
    htype = ctx.r8(0x0E) & 0x7F
    if htype == 0:
        out.write("PCI-X non-bridge device\n")
        if ctx.verbose < 2 or not ctx.fetch(where + 4, 4):
            return
        cmd, st = ctx.r16(where + 2), ctx.r32(where + 4)
        out.write(f"\t\tCommand: DPERE{flag(cmd, 1)} ERO{flag(cmd, 2)} RBC={1 << (9 + ((cmd & 0xC) >> 2))} "
                  f"OST={_MAX_OUTSTANDING[(cmd & 0x70) >> 4]}\n")
        out.write(f"\t\tStatus: Dev={(st & 0xFF00) >> 8:02x}:{(st & 0xF8) >> 3:02x}.{st & 7} "
                  + flags(st, ((0x10000, "64bit"), (0x20000, "133MHz"), (0x40000, "SCD"), (0x80000, "USC")))
                  + f" DC={'bridge' if st & 0x100000 else 'simple'} DMMRBC={1 << (9 + ((st & 0x600000) >> 21))}"
                  f" DMOST={_MAX_OUTSTANDING[(st & 0x3800000) >> 23]} DMCRS={1 << (3 + ((st & 0x1C000000) >> 26))} "
                  + flags(st, ((0x20000000, "RSCEM"), (0x40000000, "266MHz"), (0x80000000, "533MHz"))) + "\n")
    elif htype == 1:
        out.write("PCI-X bridge device\n")
        if ctx.verbose < 2 or not ctx.fetch(where + 4, 12):
            return
        sec = ctx.r16(where + 2)
        out.write("\t\tSecondary Status: "
                  + flags(sec, ((0x1, "64bit"), (0x2, "133MHz"), (0x4, "SCD"), (0x8, "USC"), (0x10, "SCO"),
                                (0x20, "SRD")))
                  + f" Freq={_SEC_CLOCK[(sec & 0x1C0) >> 6]}\n")
        st = ctx.r32(where + 4)
        out.write(f"\t\tStatus: Dev={(st & 0xFF00) >> 8:02x}:{(st & 0xF8) >> 3:02x}.{st & 7} "
                  + flags(st, ((0x10000, "64bit"), (0x20000, "133MHz"), (0x40000, "SCD"), (0x80000, "USC"),
                               (0x100000, "SCO"), (0x200000, "SRD"))) + "\n")
        for label, reg in (("Upstream", 8), ("Downstream", 12)):
            v = ctx.r32(where + reg)
            out.write(f"\t\t{label}: Capacity={v & 0xFFFF} CommitmentLimit={v >> 16}\n")


# ----------------------------------------------------------------------------------- HyperTransport
_HT_WIDTH: Final = ("8bit", "16bit", "[2]", "32bit", "2bit", "4bit", "[6]", "N/C")
_HT_FREQ: Final = ("200MHz", "300MHz", "400MHz", "500MHz", "600MHz", "800MHz", "1.0GHz", "1.2GHz",
                   "1.4GHz", "1.6GHz", "[a]", "[b]", "[c]", "[d]", "[e]", "Vend")
_HT_LCTR: Final = ((0x2, "CFlE"), (0x4, "CST"), (0x8, "CFE"), (0x10, "<LkFail"), (0x20, "Init"), (0x40, "EOC"),
                   (0x80, "TXO"))
_HT_LCTR_NEW: Final = ((0x1000, "IsocEn"), (0x2000, "LSEn"), (0x4000, "ExtCTL"), (0x8000, "64b"))
_HT_LFCAP: Final = ((0x1, "200MHz"), (0x2, "300MHz"), (0x4, "400MHz"), (0x8, "500MHz"), (0x10, "600MHz"),
                    (0x20, "800MHz"), (0x40, "1.0GHz"), (0x80, "1.2GHz"), (0x100, "1.4GHz"), (0x200, "1.6GHz"),
                    (0x8000, "Vend"))
_HT_LFRER: Final = ((0x10, "<Prot"), (0x20, "<Ovfl"), (0x40, "<EOC"), (0x80, "CTLTm"))
_HT_FTR: Final = ((0x1, "IsocFC"), (0x2, "LDTSTOP"), (0x4, "CRCTM"), (0x8, "ECTLT"), (0x10, "64bA"),
                  (0x20, "UIDRD"))
_HT_EH: Final = tuple((1 << i, n) for i, n in enumerate(
    ("PFlE", "OFlE", "PFE", "OFE", "EOCFE", "RFE", "CRCFE", "SERRFE", "CF", "RE", "PNFE", "ONFE", "EOCNFE",
     "RNFE", "CRCNFE", "SERRNFE")))
_HT_TYPES: Final = {0x4000: "Switch", 0x8000: "Interrupt Discovery and Configuration", 0x9000: "UnitID Clumping",
                    0x9800: "Extended Configuration Space Access", 0xA000: "Address Mapping",
                    0xB000: "DirectRoute", 0xB800: "VCSet", 0xC000: "Retry Mode", 0xC800: "X86 (reserved)"}


def _ht_link_control(label: str, v: int, new: bool) -> str:
    text = f"\t\t{label}: {flags(v, _HT_LCTR)} <CRCErr={(v & 0xF00) >> 8:x}"
    return text + (" " + flags(v, _HT_LCTR_NEW) if new else "") + "\n"


def _ht_link_config(label: str, v: int, new: bool) -> str:
    w = [_HT_WIDTH[(v >> s) & 7] for s in (0, 4, 8, 12)]
    if not new:
        return f"\t\t{label}: MLWI={w[0]} MLWO={w[1]} LWI={w[2]} LWO={w[3]}\n"
    return (f"\t\t{label}: MLWI={w[0]} DwFcIn{flag(v, 0x8)} MLWO={w[1]} DwFcOut{flag(v, 0x80)} "
            f"LWI={w[2]} DwFcInEn{flag(v, 0x800)} LWO={w[3]} DwFcOutEn{flag(v, 0x8000)}\n")


def _ht_freq_err(out: Out, suffix: str, lfrer: int, lfcap: int) -> None:
    out.write(f"\t\tLink Frequency{suffix}: {_HT_FREQ[lfrer & 0xF]}\n")
    out.write(f"\t\tLink Error{suffix}: {flags(lfrer, _HT_LFRER)}\n")
    out.write(f"\t\tLink Frequency Capability{suffix}: {flags(lfcap, _HT_LFCAP)}\n")


def _ht_start(ctx: DecodeContext, out: Out, where: int, title: str, size: int, rid_reg: int) -> int | None:
    # Title, then the Revision ID if -vv and the whole structure was given (None: stop here).
    out.write(f"HyperTransport: {title}\n")
    if ctx.verbose < 2 or not ctx.fetch(where + 4, size - 4):
        return None
    rid = ctx.r8(where + rid_reg)
    if 0x11 < rid < 0x22:
        out.write("\t\t!!! Possibly incomplete decoding\n")
    return rid


def _ht_primary(ctx: DecodeContext, out: Out, where: int, cmd: int) -> None:
    # ls-caps.c cap_ht_pri()
    rid = _ht_start(ctx, out, where, "Slave or Primary Interface", 28, 12)
    if rid is None:
        return
    new = rid >= 0x22
    out.write(f"\t\tCommand: BaseUnitID={cmd & 0x1F} UnitCnt={(cmd & 0x3E0) >> 5} MastHost{flag(cmd, 0x400)} "
              f"DefDir{flag(cmd, 0x800)}" + (f" DUL{flag(cmd, 0x1000)}" if new else "") + "\n")
    out.write(_ht_link_control("Link Control 0", ctx.r16(where + 4), new))
    out.write(_ht_link_config("Link Config 0", ctx.r16(where + 6), new))
    out.write(_ht_link_control("Link Control 1", ctx.r16(where + 8), new))
    out.write(_ht_link_config("Link Config 1", ctx.r16(where + 10), new))
    out.write(f"\t\tRevision ID: {(rid & 0xE0) >> 5}.{rid & 0x1F:02d}\n")
    if not new:
        return
    _ht_freq_err(out, " 0", ctx.r8(where + 13), ctx.r8(where + 14))
    out.write(f"\t\tFeature Capability: {flags(ctx.r8(where + 16), _HT_FTR)}\n")
    _ht_freq_err(out, " 1", ctx.r8(where + 17), ctx.r8(where + 18))
    out.write(f"\t\tError Handling: {flags(ctx.r16(where + 22), _HT_EH)}\n")
    out.write(f"\t\tPrefetchable memory behind bridge Upper: {ctx.r8(where + 24):02x}-{ctx.r8(where + 25):02x}\n")
    out.write(f"\t\tBus Number: {ctx.r8(where + 26):02x}\n")


def _ht_secondary(ctx: DecodeContext, out: Out, where: int, cmd: int) -> None:
    # ls-caps.c cap_ht_sec()
    rid = _ht_start(ctx, out, where, "Host or Secondary Interface", 24, 8)
    if rid is None:
        return
    new = rid >= 0x22
    text = f"\t\tCommand: WarmRst{flag(cmd, 0x1)} DblEnd{flag(cmd, 0x2)}"
    if new:
        text += (f" DevNum={(cmd & 0x7C) >> 2} ChainSide{flag(cmd, 0x80)} HostHide{flag(cmd, 0x100)} "
                 f"Slave{flag(cmd, 0x400)} <EOCErr{flag(cmd, 0x800)} DUL{flag(cmd, 0x1000)}")
    out.write(text + "\n")
    out.write(_ht_link_control("Link Control", ctx.r16(where + 4), new))
    out.write(_ht_link_config("Link Config", ctx.r16(where + 6), new))
    out.write(f"\t\tRevision ID: {(rid & 0xE0) >> 5}.{rid & 0x1F:02d}\n")
    if not new:
        return
    _ht_freq_err(out, "", ctx.r8(where + 9), ctx.r8(where + 10))
    ftr = ctx.r16(where + 12)
    out.write(f"\t\tFeature Capability: {flags(ftr, _HT_FTR)} ExtRS{flag(ftr, 0x100)} UCnfE{flag(ftr, 0x200)}\n")
    if ftr & 0x100:
        out.write(f"\t\tError Handling: {flags(ctx.r16(where + 18), _HT_EH)}\n")
        out.write(f"\t\tPrefetchable memory behind bridge Upper: {ctx.r8(where + 20):02x}-"
                  f"{ctx.r8(where + 21):02x}\n")


def hypertransport(ctx: DecodeContext, out: Out, where: int) -> None:
    """ls-caps.c cap_ht(): the command register's type field picks the layout."""
    cmd = ctx.r16(where + 2)
    if cmd & 0xE000 == 0x0000:
        _ht_primary(ctx, out, where, cmd)
        return
    if cmd & 0xE000 == 0x2000:
        _ht_secondary(ctx, out, where, cmd)
        return
    kind = cmd & 0xF800
    if kind == 0x8800:
        out.write(f"HyperTransport: Revision ID: {(cmd & 0xE0) >> 5}.{cmd & 0x1F:02d}\n")
    elif kind == 0xA800:
        out.write(f"HyperTransport: MSI Mapping Enable{flag(cmd, 0x1)} Fixed{flag(cmd, 0x2)}\n")
        if ctx.verbose >= 2 and not cmd & 0x2 and ctx.fetch(where + 4, 8):
            base = ctx.r32(where + 8) << 32 | (ctx.r32(where + 4) & ~0xFFFFF & 0xFFFFFFFF)
            out.write(f"\t\tMapping Address Base: {base:016x}\n")
    elif kind in _HT_TYPES:
        out.write(f"HyperTransport: {_HT_TYPES[kind]}\n")
    else:
        out.write(f"HyperTransport: #{kind >> 11:02x}\n")


# ---------------------------------------------------------------------------------- SATA, AF, EA
def sata(ctx: DecodeContext, out: Out, where: int) -> None:
    """ls-caps.c cap_sata_hba()."""
    cap = ctx.r16(where + 2)
    out.write(f"SATA HBA v{_bits(cap, 4, 4)}.{_bits(cap, 0, 4)}")
    if ctx.verbose < 2 or not ctx.fetch(where + 4, 4):
        out.write("\n")
        return
    bars = ctx.r32(where + 4)
    bar = _bits(bars, 0, 4)
    if 4 <= bar <= 9:
        out.write(f" BAR{bar - 4} Offset={_bits(bars, 4, 20):08x}\n")
    elif bar == 15:
        out.write(" InCfgSpace\n")
    else:
        out.write(f" BAR??{bar}\n")


def advanced_features(ctx: DecodeContext, out: Out, where: int) -> None:
    """ls-caps.c cap_af()."""
    out.write("PCI Advanced Features\n")
    if ctx.verbose < 2 or not ctx.fetch(where + 3, 3):
        return
    cap, ctrl, status = ctx.r8(where + 3), ctx.r8(where + 4), ctx.r8(where + 5)
    out.write(f"\t\tAFCap: TP{flag(cap, 1)} FLR{flag(cap, 2)}\n\t\tAFCtrl: FLR{flag(ctrl, 1)}\n"
              f"\t\tAFStatus: TP{flag(status, 1)}\n")


_EA_PROPS: Final = {
    0x00: "memory space, non-prefetchable", 0x01: "memory space, prefetchable", 0x02: "I/O space",
    0x03: "VF memory space, prefetchable", 0x04: "VF memory space, non-prefetchable",
    0x05: "allocation behind bridge, non-prefetchable memory",
    0x06: "allocation behind bridge, prefetchable memory", 0x07: "allocation behind bridge, I/O space",
    0xFD: "memory space resource unavailable for use", 0xFE: "I/O space resource unavailable for use",
}


def _ea_prop(p: int, secondary: bool) -> str:
    if p == 0xFF:
        return "entry unavailable for use" + (", PrimaryProperties should be used" if secondary else "")
    return _EA_PROPS.get(p, f"[{p:02x}]")


def _ea_bei(bei: int) -> str:
    if bei <= 5:
        return f"BAR {bei}"
    if bei in (6, 7, 8):
        return ("resource behind function", "not indicated", "expansion ROM")[bei - 6]
    return f"VF-BAR {bei - 9}" if bei <= 14 else "reserved"


def enhanced_allocation(ctx: DecodeContext, out: Out, where: int) -> None:
    """ls-caps.c cap_ea()."""
    cap = ctx.r16(where + 2)
    num = _bits(cap, 0, 6)
    base_pos = where + 4
    text = f"Enhanced Allocation (EA): NumEntries={num}"
    if ctx.r8(0x0E) & 0x7F == 1:
        base_pos += 4
        if not ctx.fetch(where + 4, 2):
            out.write(text + "\n")
            return
        text += f", secondary={ctx.r8(where + 4)}, subordinate={ctx.r8(where + 5)}"
    out.write(text + "\n")
    if ctx.verbose < 2:
        return
    for entry in range(num):
        if not ctx.fetch(base_pos, 4):
            return
        hdr = ctx.r32(base_pos)
        es = _bits(hdr, 0, 3)
        if not ctx.fetch(base_pos + 4, es * 4):
            return
        out.write(f"\t\tEntry {entry}: Enable{flag(hdr, 0x80000000)} Writable{flag(hdr, 0x40000000)} "
                  f"EntrySize={es}\n")
        out.write(f"\t\t\t BAR Equivalent Indicator: {_ea_bei(_bits(hdr, 4, 4))}\n")
        out.write(f"\t\t\t PrimaryProperties: {_ea_prop(_bits(hdr, 8, 8), False)}\n")
        out.write(f"\t\t\t SecondaryProperties: {_ea_prop(_bits(hdr, 16, 8), True)}\n")
        base = ctx.r32(base_pos + 4)
        max_off = ctx.r32(base_pos + 8)
        high_pos = base_pos + 12
        text = "\t\t\t Base: "
        if base & 2:
            # lspci reads the upper halves even past EntrySize (whatever bytes follow, 0xff if absent)
            text += f"{ctx.r32(base_pos + 12):x}"
            high_pos += 4
        out.write(f"{text}{base & ~3 & 0xFFFFFFFF:08x}\n")
        text = "\t\t\t MaxOffset: "
        if max_off & 2:
            text += f"{ctx.r32(high_pos):x}"
        out.write(f"{text}{max_off | 3:08x}\n")
        base_pos += 4 + 4 * es


LEGACY: Final[dict[int, Decoder]] = {
    0x02: agp, 0x03: vpd, 0x04: slot_id, 0x07: pcix, 0x08: hypertransport, 0x0A: debug_port,
    0x12: sata, 0x13: advanced_features, 0x14: enhanced_allocation,
}


def register_missing() -> None:
    """Register the decoders above for every ID that no ``vfiolab.pci.caps`` module decodes."""
    for cap_id, fn in LEGACY.items():
        if cap_id not in STD_DECODERS:
            register_decoder(cap_id)(fn)
