"""lspci 3.9.0's text for the PCI Express Capability (what follows ``\\tCapabilities: [xx] ``).

Behaviour learnt from pciutils v3.9.0 ``ls-caps.c`` (cap_express and helpers) and checked against
``/usr/bin/lspci -F`` by tests/interop/test_lspci_express.py.  Written table-first: each register is
a list of (label, mask) flags or (label, field, names) enumerations; which ones print depends on the
Device/Port Type exactly as lspci decides it (its choices are not always the spec's).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from vfiolab.pci import regs
from vfiolab.pci.caps import express_regs as R
from vfiolab.pci.decode import DecodeContext, Out, flag

# ---------------------------------------------------------------------------------------- type sets
# The Device/Port Types for which lspci prints each optional item (pciutils ls-caps.c).
_EP = frozenset({R.TYPE_ENDPOINT, R.TYPE_LEG_END})
_DEVCAP_INDICATORS = _EP | {R.TYPE_UPSTREAM, R.TYPE_PCI_BRIDGE}
_DEVCAP_FLR = _EP | {R.TYPE_RC_END}
_DEVCAP_POWER = frozenset({R.TYPE_ENDPOINT, R.TYPE_UPSTREAM, R.TYPE_PCI_BRIDGE})
_LNKCTL_RCB = _EP | {R.TYPE_ROOT_PORT, R.TYPE_PCI_BRIDGE}
_NO_DOWNGRADE = frozenset({R.TYPE_ROOT_PORT, R.TYPE_DOWNSTREAM, R.TYPE_PCIE_BRIDGE})
_TPH = frozenset({R.TYPE_ROOT_PORT, R.TYPE_ENDPOINT})
_ARI = frozenset({R.TYPE_ROOT_PORT, R.TYPE_DOWNSTREAM})
_SWITCHING = frozenset({R.TYPE_ROOT_PORT, R.TYPE_UPSTREAM, R.TYPE_DOWNSTREAM})
_ATOMIC_REQ = _EP | {R.TYPE_ROOT_PORT, R.TYPE_RC_END}
_DRS = frozenset({R.TYPE_ROOT_PORT, R.TYPE_DOWNSTREAM, R.TYPE_PCIE_BRIDGE})
_SLOT_TYPES = frozenset({R.TYPE_ROOT_PORT, R.TYPE_DOWNSTREAM, R.TYPE_PCIE_BRIDGE})

_TITLES = {
    R.TYPE_ENDPOINT: "Endpoint",
    R.TYPE_LEG_END: "Legacy Endpoint",
    R.TYPE_ROOT_PORT: "Root Port",
    R.TYPE_UPSTREAM: "Upstream Port",
    R.TYPE_DOWNSTREAM: "Downstream Port",
    R.TYPE_PCI_BRIDGE: "PCI-Express to PCI/PCI-X Bridge",
    R.TYPE_PCIE_BRIDGE: "PCI/PCI-X to PCI-Express Bridge",
    R.TYPE_RC_END: "Root Complex Integrated Endpoint",
    R.TYPE_RC_EC: "Root Complex Event Collector",
}

# ---------------------------------------------------------------------------------------- value names
_L0S_LAT = ("<64ns", "<128ns", "<256ns", "<512ns", "<1us", "<2us", "<4us", "unlimited")
_L1_LAT = ("<1us", "<2us", "<4us", "<8us", "<16us", "<32us", "<64us", "unlimited")
_SPEEDS = {1: "2.5GT/s", 2: "5GT/s", 3: "8GT/s", 4: "16GT/s", 5: "32GT/s", 6: "64GT/s"}
_ASPM_SUPPORT = ("not supported", "L0s", "L1", "L0s L1")
_ASPM_CTL = ("Disabled", "L0s Enabled", "L1 Enabled", "L0s L1 Enabled")
_INDICATOR = ("Unknown", "On", "Blink", "Off")
_TIMEOUT_RANGES = {0: "Not Supported", 1: "Range A", 2: "Range B", 3: "Range AB", 6: "Range BC",
                   7: "Range ABC", 14: "Range BCD", 15: "Range ABCD"}
_TIMEOUT_VALUES = {0: "50us to 50ms", 1: "50us to 100us", 2: "1ms to 10ms", 5: "16ms to 55ms",
                   6: "65ms to 210ms", 9: "260ms to 900ms", 10: "1s to 3.5s", 13: "4s to 13s",
                   14: "17s to 64s"}
_OBFF_CAP = ("Not Supported", "Via message", "Via WAKE#", "Via message/WAKE#")
_EPR = ("Not Supported", "Dev Specific", "Form Factor Dev Specific", "Reserved")
_LN_CLS = ("Not Supported", "64byte cachelines", "128byte cachelines", "Reserved")
_TPH_COMP = ("TPHComp- ExtTPHComp-", "TPHComp+ ExtTPHComp-", "", "TPHComp+ ExtTPHComp+")
_OBFF_CTL = ("Disabled", "Via message A", "Via message B", "Via WAKE#")
_DEEMPH = ("-6dB", "-3.5dB")
_PRESETS = ("-6dB de-emphasis, 0dB preshoot", "-3.5dB de-emphasis, 0dB preshoot",
            "-4.4dB de-emphasis, 0dB preshoot", "-2.5dB de-emphasis, 0dB preshoot",
            "0dB de-emphasis, 0dB preshoot", "0dB de-emphasis, 1.9dB preshoot",
            "0dB de-emphasis, 2.5dB preshoot", "-6.0dB de-emphasis, 3.5dB preshoot",
            "-3.5dB de-emphasis, 3.5dB preshoot", "0dB de-emphasis, 3.5dB preshoot")
_MARGIN_REDUCED = "200-400mV(full-swing)/100-200mV(half-swing)"
_MARGINS = ("Normal Operating Range", "800-1200mV(full-swing)/400-700mV(half-swing)",
            _MARGIN_REDUCED, _MARGIN_REDUCED, _MARGIN_REDUCED, _MARGIN_REDUCED)
_CROSSLINK = ("unsupported", "Upstream Port", "Downstream Port", "incomplete")
_COMPONENT = {0: "Link Down - Not Determined", 1: "Link Down - Not Present", 2: "Link Down - Present",
              4: "Link Up - Present", 5: "Link Up - Present and DRS Received"}
# Supported Link Speeds Vector: highest set bit wins; bits for 64 GT/s and up were "RsvdP" in 3.9.0.
_SPEED_VECTOR = ((0x60, "RsvdP"), (0x10, "2.5-32GT/s"), (0x08, "2.5-16GT/s"), (0x04, "2.5-8GT/s"),
                 (0x02, "2.5-5GT/s"), (0x01, "2.5GT/s"))

# ---------------------------------------------------------------------------------------- flag tables
_DEVCTL_ERR = (("CorrErr", R.DEVCTL_CERE), ("NonFatalErr", R.DEVCTL_NFERE), ("FatalErr", R.DEVCTL_FERE),
               ("UnsupReq", R.DEVCTL_URRE))
_DEVCTL_MISC = (("RlxdOrd", R.DEVCTL_RELAX_EN), ("ExtTag", R.DEVCTL_EXT_TAG), ("PhantFunc", R.DEVCTL_PHANTOM),
                ("AuxPwr", R.DEVCTL_AUX_PME), ("NoSnoop", R.DEVCTL_NOSNOOP_EN))
_DEVSTA = (("CorrErr", R.DEVSTA_CED), ("NonFatalErr", R.DEVSTA_NFED), ("FatalErr", R.DEVSTA_FED),
           ("UnsupReq", R.DEVSTA_URD), ("AuxPwr", R.DEVSTA_AUXPD), ("TransPend", R.DEVSTA_TRPND))
_DEVCAP_IND = (("AttnBtn", R.DEVCAP_ATN_BUT), ("AttnInd", R.DEVCAP_ATN_IND), ("PwrInd", R.DEVCAP_PWR_IND))
_LNKCAP = (("ClockPM", R.LNKCAP_CLKPM), ("Surprise", R.LNKCAP_SDERC), ("LLActRep", R.LNKCAP_DLLLARC),
           ("BwNot", R.LNKCAP_LBNC), ("ASPMOptComp", R.LNKCAP_AOC))
_LNKCTL_1 = (("Disabled", R.LNKCTL_LD), ("CommClk", R.LNKCTL_CCC))
_LNKCTL_2 = (("ExtSynch", R.LNKCTL_ES), ("ClockPM", R.LNKCTL_CLKREQ_EN), ("AutWidDis", R.LNKCTL_HAWD),
             ("BWInt", R.LNKCTL_LBMIE), ("AutBWInt", R.LNKCTL_LABIE))
_LNKSTA = (("TrErr", 0x0400), ("Train", R.LNKSTA_LT), ("SlotClk", R.LNKSTA_SLC), ("DLActive", R.LNKSTA_DLLLA),
           ("BWMgmt", R.LNKSTA_LBMS), ("ABWMgmt", R.LNKSTA_LABS))
_SLTCAP = (("AttnBtn", R.SLTCAP_ABP), ("PwrCtrl", R.SLTCAP_PCP), ("MRL", R.SLTCAP_MRLSP),
           ("AttnInd", R.SLTCAP_AIP), ("PwrInd", R.SLTCAP_PIP), ("HotPlug", R.SLTCAP_HPC),
           ("Surprise", R.SLTCAP_HPS))
_SLTCAP_2 = (("Interlock", R.SLTCAP_EIP), ("NoCompl", R.SLTCAP_NCCS))
_SLTCTL = (("AttnBtn", R.SLTCTL_ABPE), ("PwrFlt", R.SLTCTL_PFDE), ("MRL", R.SLTCTL_MRLSCE),
           ("PresDet", R.SLTCTL_PDCE), ("CmdCplt", R.SLTCTL_CCIE), ("HPIrq", R.SLTCTL_HPIE),
           ("LinkChg", R.SLTCTL_DLLSCE))
_SLTCTL_2 = (("Power", R.SLTCTL_PCC), ("Interlock", R.SLTCTL_EIC))
_SLTSTA = (("AttnBtn", R.SLTSTA_ABP), ("PowerFlt", R.SLTSTA_PFD), ("MRL", R.SLTSTA_MRLSS),
           ("CmdCplt", R.SLTSTA_CC), ("PresDet", R.SLTSTA_PDS), ("Interlock", R.SLTSTA_EIS))
_SLTSTA_CHG = (("MRL", R.SLTSTA_MRLSC), ("PresDet", R.SLTSTA_PDC), ("LinkState", R.SLTSTA_DLLSC))
_RTCTL = (("ErrCorrectable", R.RTCTL_SECEE), ("ErrNon-Fatal", R.RTCTL_SENFEE), ("ErrFatal", R.RTCTL_SEFEE),
          ("PMEIntEna", R.RTCTL_PMEIE), ("CRSVisible", R.RTCTL_CRSSVE))
_DEVCAP2_1 = (("TimeoutDis", R.DEVCAP2_COMP_TMOUT_DIS), ("NROPrPrP", R.DEVCAP2_NROPRPRP),
              ("LTR", R.DEVCAP2_LTR))
_DEVCAP2_TAGS = (("10BitTagComp", R.DEVCAP2_10BIT_TAG_COMP), ("10BitTagReq", R.DEVCAP2_10BIT_TAG_REQ))
_DEVCAP2_PREFIX = (("ExtFmt", R.DEVCAP2_EXT_FMT), ("EETLPPrefix", R.DEVCAP2_EE_PREFIX))
_ATOMIC_COMP = (("32bit", R.DEVCAP2_ATOMIC_COMP32), ("64bit", R.DEVCAP2_ATOMIC_COMP64),
                ("128bitCAS", R.DEVCAP2_ATOMIC_COMP128))
_DEVCTL2 = (("TimeoutDis", R.DEVCTL2_COMP_TMOUT_DIS), ("LTR", R.DEVCTL2_LTR_EN),
            ("10BitTagReq", R.DEVCTL2_10BIT_TAG_REQ_EN))
_LNKCAP2 = (("Crosslink", R.LNKCAP2_CROSSLINK), ("Retimer", R.LNKCAP2_RETIMER),
            ("2Retimers", R.LNKCAP2_2RETIMERS), ("DRS", R.LNKCAP2_DRS))
_LNKCTL2 = (("EnterCompliance", R.LNKCTL2_ENTER_COMP), ("SpeedDis", R.LNKCTL2_HASD))
_LNKCTL2_2 = (("EnterModifiedCompliance", R.LNKCTL2_ENTER_MOD_COMP), ("ComplianceSOS", R.LNKCTL2_COMP_SOS))
_LNKSTA2_1 = (("EqualizationComplete", R.LNKSTA2_EQ_COMPLETE), ("EqualizationPhase1", R.LNKSTA2_EQ_PHASE1))
_LNKSTA2_2 = (("EqualizationPhase2", R.LNKSTA2_EQ_PHASE2), ("EqualizationPhase3", R.LNKSTA2_EQ_PHASE3),
              ("LinkEqualizationRequest", R.LNKSTA2_EQ_REQUEST))
_LNKSTA2_3 = (("Retimer", R.LNKSTA2_RETIMER), ("2Retimers", R.LNKSTA2_2RETIMERS))

_POWER_SCALES = (1.0, 0.1, 0.01, 0.001)


def _flags(value: int, table: Sequence[tuple[str, int]]) -> str:
    """``Label+ Label-`` for each (label, mask) of ``table``."""
    return " ".join(label + flag(value, mask) for label, mask in table)


def _field(value: int, mask: int) -> int:
    return (value & mask) >> ((mask & -mask).bit_length() - 1)


def power_limit_text(value: int, scale: int) -> str:
    """Slot power limit as lspci prints it (``%g`` watts), e.g. ``25W``, ``0.5W``, ``>600W``.

    lspci multiplies in C float; at %g's six digits that equals double arithmetic for all 1024
    encodings (tests/interop/test_lspci_express.py checks every one).
    """
    if scale == 0 and value == 0xFF:
        return ">600W"
    if scale == 0 and 0xF0 <= value <= 0xFE:
        value = 250 + 25 * (value - 0xF0)
    return f"{value * _POWER_SCALES[scale]:g}W"


def _speed(code: int) -> str:
    return _SPEEDS.get(code, "unknown")


def _compare(ptype: int, sta: int, cap: int) -> str:
    if sta > cap:
        return " (overdriven)"
    if sta == cap or ptype in _NO_DOWNGRADE:
        return ""
    return " (downgraded)"


_BDF_TAIL = re.compile(r"([0-9a-fA-F]{2})\.([0-7])$")


def _is_function_zero(bdf: str) -> bool:
    """Device 0 function 0 (lspci skips LnkCap2/LnkCtl2 of other endpoint functions)."""
    m = _BDF_TAIL.search(bdf)
    return m is None or (int(m.group(1), 16) == 0 and m.group(2) == "0")


def has_memory_bar(ctx: DecodeContext) -> bool:
    """Whether lspci's BAR scan (pciutils lib/generic.c fill_info) finds a memory BAR in the header."""
    count = {regs.HEADER_TYPE_NORMAL: 6, regs.HEADER_TYPE_BRIDGE: 2, regs.HEADER_TYPE_CARDBUS: 1}.get(
        ctx.r8(regs.HEADER_TYPE) & 0x7F, 0)
    i = 0
    while i < count:
        bar = ctx.r32(regs.BASE_ADDRESS_0 + 4 * i)
        i += 1
        if bar in (0, 0xFFFFFFFF) or bar & regs.BASE_ADDRESS_SPACE_IO:
            continue
        if bar & 0x6 == regs.BASE_ADDRESS_MEM_TYPE_64:
            if i >= count:  # a 64-bit BAR in the last slot is rejected with a warning
                continue
            i += 1  # the upper half is consumed
        return True
    return False


# ---------------------------------------------------------------------------------------- blocks
def _device(ctx: DecodeContext, w: int, ptype: int) -> list[str]:
    cap = ctx.r32(w + R.DEVCAP)
    head = (f"\t\tDevCap:\tMaxPayload {128 << (cap & R.DEVCAP_PAYLOAD)} bytes, "
            f"PhantFunc {(1 << _field(cap, R.DEVCAP_PHANTOM)) - 1}")
    if ptype in _EP:
        head += f", Latency L0s {_L0S_LAT[_field(cap, R.DEVCAP_L0S)]}, L1 {_L1_LAT[_field(cap, R.DEVCAP_L1)]}"
    line2 = "\t\t\tExtTag" + flag(cap, R.DEVCAP_EXT_TAG)
    if ptype in _DEVCAP_INDICATORS:
        line2 += " " + _flags(cap, _DEVCAP_IND)
    line2 += " RBE" + flag(cap, R.DEVCAP_RBER)
    if ptype in _DEVCAP_FLR:
        line2 += " FLReset" + flag(cap, R.DEVCAP_FLR)
    if ptype in _DEVCAP_POWER:
        line2 += " SlotPowerLimit " + power_limit_text(_field(cap, R.DEVCAP_PWR_VAL), _field(cap, R.DEVCAP_PWR_SCL))
    ctl = ctx.r16(w + R.DEVCTL)
    misc = _flags(ctl, _DEVCTL_MISC)
    if ptype == R.TYPE_PCI_BRIDGE:
        misc += " BrConfRtry" + flag(ctl, R.DEVCTL_BCR_FLR)
    if ptype in _DEVCAP_FLR and cap & R.DEVCAP_FLR:
        misc += " FLReset" + flag(ctl, R.DEVCTL_BCR_FLR)
    sta = ctx.r16(w + R.DEVSTA)
    return [head, line2,
            "\t\tDevCtl:\t" + _flags(ctl, _DEVCTL_ERR),
            "\t\t\t" + misc,
            (f"\t\t\tMaxPayload {128 << _field(ctl, R.DEVCTL_PAYLOAD)} bytes, "
            f"MaxReadReq {128 << _field(ctl, R.DEVCTL_READRQ)} bytes"),
            "\t\tDevSta:\t" + _flags(sta, _DEVSTA)]


def _link(ctx: DecodeContext, w: int, ptype: int) -> list[str]:
    cap = ctx.r32(w + R.LNKCAP)
    aspm = _field(cap, R.LNKCAP_ASPMS)
    cap_speed, cap_width = cap & R.LNKCAP_SLS, _field(cap, R.LNKCAP_MLW)
    head = f"\t\tLnkCap:\tPort #{cap >> 24}, Speed {_speed(cap_speed)}, Width x{cap_width}, ASPM {_ASPM_SUPPORT[aspm]}"
    if aspm:
        exits = []
        if aspm & 1:
            exits.append("L0s " + _L0S_LAT[_field(cap, R.LNKCAP_L0SEL)])
        if aspm & 2:
            exits.append("L1 " + _L1_LAT[_field(cap, R.LNKCAP_L1EL)])
        head += ", Exit Latency " + ", ".join(exits)
    ctl = ctx.r16(w + R.LNKCTL)
    ctl_head = f"\t\tLnkCtl:\tASPM {_ASPM_CTL[ctl & R.LNKCTL_ASPMC]};"
    if ptype in _LNKCTL_RCB:
        ctl_head += f" RCB {128 if ctl & R.LNKCTL_RCB else 64} bytes,"
    sta = ctx.r16(w + R.LNKSTA)
    sta_speed, sta_width = sta & R.LNKSTA_CLS, _field(sta, R.LNKSTA_NLW)
    return [head,
            "\t\t\t" + _flags(cap, _LNKCAP),
            ctl_head + " " + _flags(ctl, _LNKCTL_1),
            "\t\t\t" + _flags(ctl, _LNKCTL_2),
            (f"\t\tLnkSta:\tSpeed {_speed(sta_speed)}{_compare(ptype, sta_speed, cap_speed)}, "
            f"Width x{sta_width}{_compare(ptype, sta_width, cap_width)}"),
            "\t\t\t" + _flags(sta, _LNKSTA)]


def _slot(ctx: DecodeContext, w: int) -> list[str]:
    cap = ctx.r32(w + R.SLTCAP)
    ctl = ctx.r16(w + R.SLTCTL)
    sta = ctx.r16(w + R.SLTSTA)
    power = power_limit_text(_field(cap, R.SLTCAP_SPLV), _field(cap, R.SLTCAP_SPLS))
    indicators = f"AttnInd {_INDICATOR[_field(ctl, R.SLTCTL_AIC)]}, PwrInd {_INDICATOR[_field(ctl, R.SLTCTL_PIC)]}"
    return ["\t\tSltCap:\t" + _flags(cap, _SLTCAP),
            f"\t\t\tSlot #{_field(cap, R.SLTCAP_PSN)}, PowerLimit {power}; {_flags(cap, _SLTCAP_2)}",
            "\t\tSltCtl:\tEnable: " + _flags(ctl, _SLTCTL),
            f"\t\t\tControl: {indicators}, {_flags(ctl, _SLTCTL_2)}",
            "\t\tSltSta:\tStatus: " + _flags(sta, _SLTSTA),
            "\t\t\tChanged: " + _flags(sta, _SLTSTA_CHG)]


def _root(ctx: DecodeContext, w: int) -> list[str]:
    sta = ctx.r32(w + R.RTSTA)
    return ["\t\tRootCap: CRSVisible" + flag(ctx.r16(w + R.RTCAP), R.RTCAP_CRSVIS),
            "\t\tRootCtl: " + _flags(ctx.r16(w + R.RTCTL), _RTCTL),
            (f"\t\tRootSta: PME ReqID {sta & R.RTSTA_PME_RQ_ID:04x}, "
            f"PMEStatus{flag(sta, R.RTSTA_PME)} PMEPending{flag(sta, R.RTSTA_PENDING)}")]


def _device2(ctx: DecodeContext, w: int, ptype: int) -> list[str]:
    cap = ctx.r32(w + R.DEVCAP2)
    ranges = _TIMEOUT_RANGES.get(cap & R.DEVCAP2_COMP_TMOUT_RANGES, "Unknown")
    l2 = (f"\t\t\t {_flags(cap, _DEVCAP2_TAGS)} OBFF {_OBFF_CAP[_field(cap, R.DEVCAP2_OBFF)]}, "
          f"{_flags(cap, _DEVCAP2_PREFIX)}")
    if cap & R.DEVCAP2_EE_PREFIX:
        l2 += f", MaxEETLPPrefixes {_field(cap, R.DEVCAP2_EE_PREFIX_MAX) or 4}"
    l4 = "\t\t\t FRS" + flag(cap, R.DEVCAP2_FRS)
    if ptype == R.TYPE_ROOT_PORT:
        l4 += f" LN System CLS {_LN_CLS[_field(cap, R.DEVCAP2_LN_CLS)]},"
    if ptype in _TPH:
        l4 += " " + _TPH_COMP[_field(cap, R.DEVCAP2_TPH_COMP)]
    if ptype in _ARI:
        l4 += " ARIFwd" + flag(cap, R.DEVCAP2_ARI)
    out = [f"\t\tDevCap2: Completion Timeout: {ranges}, {_flags(cap, _DEVCAP2_1)}",
           l2,
           (f"\t\t\t EmergencyPowerReduction {_EPR[_field(cap, R.DEVCAP2_EPR)]}, "
           f"EmergencyPowerReductionInit{flag(cap, R.DEVCAP2_EPR_INIT)}"),
           l4]
    mem_bar = has_memory_bar(ctx)
    if ptype in _SWITCHING or mem_bar:
        atomics = "\t\t\t AtomicOpsCap:"
        if ptype in _SWITCHING:
            atomics += " Routing" + flag(cap, R.DEVCAP2_ATOMIC_ROUTE)
        if ptype == R.TYPE_ROOT_PORT or mem_bar:
            atomics += " " + _flags(cap, _ATOMIC_COMP)
        out.append(atomics)
    ctl = ctx.r16(w + R.DEVCTL2)
    value = _TIMEOUT_VALUES.get(ctl & R.DEVCTL2_COMP_TIMEOUT, "Unknown")
    c1 = (f"\t\tDevCtl2: Completion Timeout: {value}, {_flags(ctl, _DEVCTL2)} "
          f"OBFF {_OBFF_CTL[_field(ctl, R.DEVCTL2_OBFF)]},")
    if ptype in _ARI:
        c1 += " ARIFwd" + flag(ctl, R.DEVCTL2_ARI)
    out.append(c1)
    if ptype in _SWITCHING or ptype in _ATOMIC_REQ:
        atomics = "\t\t\t AtomicOpsCtl:"
        if ptype in _ATOMIC_REQ:
            atomics += " ReqEn" + flag(ctl, R.DEVCTL2_ATOMIC_REQ)
        if ptype in _SWITCHING:
            atomics += " EgressBlck" + flag(ctl, R.DEVCTL2_ATOMIC_EGRESS_BLOCK)
        out.append(atomics)
    return out


def _speed_vector(cap2: int) -> str:
    vector = _field(cap2, R.LNKCAP2_SLS)
    return next((name for bit, name in _SPEED_VECTOR if vector & bit), "Unknown")


def _pick(names: Sequence[str], index: int) -> str:
    return names[index] if index < len(names) else "Unknown"


def _link2(ctx: DecodeContext, w: int, ptype: int) -> list[str]:
    out = []
    cap = 0
    # Link Capabilities 2 was reserved before PCIe r3.0: lspci skips it (and Link Control 2) on
    # endpoint functions other than 00.0.
    if not (ptype in _EP and not _is_function_zero(ctx.bdf)):
        cap = ctx.r32(w + R.LNKCAP2)
        if cap:
            out.append(f"\t\tLnkCap2: Supported Link Speeds: {_speed_vector(cap)}, {_flags(cap, _LNKCAP2)}")
        ctl = ctx.r16(w + R.LNKCTL2)
        target = ctl & R.LNKCTL2_TLS
        c1 = (f"\t\tLnkCtl2: Target Link Speed: {_SPEEDS.get(target or 1, 'Unknown')}, "
              f"{_flags(ctl, _LNKCTL2)}")
        if ptype == R.TYPE_DOWNSTREAM:
            c1 += ", Selectable De-emphasis: " + _DEEMPH[_field(ctl, R.LNKCTL2_SEL_DEEMPH)]
        out += [c1,
                (f"\t\t\t Transmit Margin: {_pick(_MARGINS, _field(ctl, R.LNKCTL2_TX_MARGIN))}, "
                f"{_flags(ctl, _LNKCTL2_2)}"),
                "\t\t\t Compliance Preset/De-emphasis: " + _pick(_PRESETS, _field(ctl, R.LNKCTL2_COMP_PRESET))]
    sta = ctx.r16(w + R.LNKSTA2)
    last = f"\t\t\t {_flags(sta, _LNKSTA2_3)} CrosslinkRes: {_CROSSLINK[_field(sta, R.LNKSTA2_CROSSLINK_RES)]}"
    out += [(f"\t\tLnkSta2: Current De-emphasis Level: {_DEEMPH[sta & R.LNKSTA2_DEEMPH]}, "
            f"{_flags(sta, _LNKSTA2_1)}"),
            "\t\t\t " + _flags(sta, _LNKSTA2_2)]
    if ptype in _DRS and cap & R.LNKCAP2_DRS:
        presence = _COMPONENT.get(_field(sta, R.LNKSTA2_DS_COMP_PRESENCE), "Reserved")
        out += [last + ", DRS" + flag(sta, R.LNKSTA2_DRS_RCVD), "\t\t\t DownstreamComp: " + presence]
    else:
        out.append(last)
    return out


def decode_express(ctx: DecodeContext, out: Out, where: int) -> None:
    """Print the capability at ``where`` as lspci 3.9.0 does; records the port type in ``ctx``."""
    flags = ctx.r16(where + R.FLAGS)
    ptype = _field(flags, R.FLAGS_TYPE)
    ctx.is_pcie = True
    ctx.pcie_type = ptype
    slot = ptype in _SLOT_TYPES and bool(flags & R.FLAGS_SLOT)
    link = ptype not in (R.TYPE_RC_END, R.TYPE_RC_EC)
    root = ptype in R.HAS_ROOT

    title = _TITLES.get(ptype, f"Unknown type {ptype}")
    if ptype in _SLOT_TYPES:
        title += f" (Slot{flag(flags, R.FLAGS_SLOT)})"
    version = f"(v{flags & R.FLAGS_VERS}) " if ctx.verbose >= 2 else ""
    out.write(f"Express {version}{title}, MSI {_field(flags, R.FLAGS_IRQ):02x}\n")
    if ctx.verbose < 2:
        return
    # lspci fetches each half of the structure before printing it; a dump too short for a half
    # ends the decode silently.
    span = 32 if root else 24 if slot else 16
    if not ctx.fetch(where + R.DEVCAP, span):
        return
    lines = _device(ctx, where, ptype)
    if link:
        lines += _link(ctx, where, ptype)
    if slot:
        lines += _slot(ctx, where)
    if root:
        lines += _root(ctx, where)
    if flags & R.FLAGS_VERS >= 2 and ctx.fetch(where + R.DEVCAP2, 24 if slot else 16):
        lines += _device2(ctx, where, ptype)
        if link:
            lines += _link2(ctx, where, ptype)
    out.write("\n".join(lines) + "\n")
