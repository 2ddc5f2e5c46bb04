"""Advanced Error Reporting extended capability (PCIe Base 6.0 §7.8.4): builder, error signalling and
lspci decoder.

Error status bits are RW1CS, masks/severities/enables RWS, the First Error Pointer, header log and
error source IDs ROS: all survive a hot reset (sticky) and are cleared only by a fundamental reset.
Root Ports and Root Complex Event Collectors also carry Root Error Command/Status and Error Source
Identification (``root=True``).  Linux drivers/pci/pcie/aer.c reads and clears these registers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Final

from vfiolab.errors import VfiolabError
from vfiolab.pci.caps.base import Capability, register_decoder
from vfiolab.pci.config import ConfigSpace
from vfiolab.pci.decode import DecodeContext, Out, flags

# pci_regs.h PCI_ERR_UNC_* (Uncorrectable Error Status/Mask/Severity bits)
UNC_DLP: Final = 0x00000010
UNC_SURPDN: Final = 0x00000020
UNC_POISON_TLP: Final = 0x00001000
UNC_FCP: Final = 0x00002000
UNC_COMP_TIME: Final = 0x00004000
UNC_COMP_ABORT: Final = 0x00008000
UNC_UNX_COMP: Final = 0x00010000
UNC_RX_OVER: Final = 0x00020000
UNC_MALF_TLP: Final = 0x00040000
UNC_ECRC: Final = 0x00080000
UNC_UNSUP: Final = 0x00100000
UNC_ACSV: Final = 0x00200000
UNC_INTN: Final = 0x00400000
UNC_DEFINED: Final = 0xFFFFF030          # bits the spec defines (4, 5, 12..31)
UNC_DEFAULT: Final = 0x001FF010          # DLP, Poisoned TLP .. Unsupported Request: a typical endpoint
UNC_SEVERITY_DEFAULT: Final = 0x00462030  # DLP, SDES, FCP, RxOF, MalfTLP, Internal are fatal at reset
# pci_regs.h PCI_ERR_COR_*
COR_RCVR: Final = 0x0001
COR_BAD_TLP: Final = 0x0040
COR_BAD_DLLP: Final = 0x0080
COR_REP_ROLL: Final = 0x0100
COR_REP_TIMER: Final = 0x1000
COR_ADV_NFAT: Final = 0x2000
COR_INTERNAL: Final = 0x4000
COR_LOG_OVER: Final = 0x8000
COR_DEFINED: Final = 0xF1C1
COR_DEFAULT: Final = 0x31C1
COR_MASK_DEFAULT: Final = 0xE000  # Advisory Non-Fatal, Corrected Internal, Header Log Overflow masked
# pci_regs.h PCI_ERR_CAP_* (Advanced Error Capabilities and Control)
CAP_FEP: Final = 0x0000001F
CAP_ECRC_GENC: Final = 0x00000020
CAP_ECRC_GENE: Final = 0x00000040
CAP_ECRC_CHKC: Final = 0x00000080
CAP_ECRC_CHKE: Final = 0x00000100
CAP_MULT_HDRC: Final = 0x00000200
CAP_MULT_HDRE: Final = 0x00000400
CAP_PREFIX_LOG: Final = 0x00000800
CAP_COMP_TIME_LOG: Final = 0x00001000
# pci_regs.h PCI_ERR_ROOT_*
ROOT_CMD_COR_EN: Final = 0x01
ROOT_CMD_NONFATAL_EN: Final = 0x02
ROOT_CMD_FATAL_EN: Final = 0x04
ROOT_COR_RCV: Final = 0x01
ROOT_MULTI_COR_RCV: Final = 0x02
ROOT_UNCOR_RCV: Final = 0x04
ROOT_MULTI_UNCOR_RCV: Final = 0x08
ROOT_FIRST_FATAL: Final = 0x10
ROOT_NONFATAL_RCV: Final = 0x20
ROOT_FATAL_RCV: Final = 0x40
ROOT_STATUS_W1C: Final = 0x7F

# lspci prints the Root registers only for these PCIe port types (ls-ecaps.c cap_aer).
_ROOT_TYPES = (0x4, 0xA)  # PCI_EXP_TYPE_ROOT_PORT, PCI_EXP_TYPE_RC_EC


class AerCap(Capability):
    """AER registers with their spec attributes plus the hardware side of error logging."""

    cap_id: ClassVar[int] = 0x01
    extended: ClassVar[bool] = True
    name: ClassVar[str] = "Advanced Error Reporting"

    UNCOR_STATUS: ClassVar[int] = 0x04
    UNCOR_MASK: ClassVar[int] = 0x08
    UNCOR_SEVER: ClassVar[int] = 0x0C
    COR_STATUS: ClassVar[int] = 0x10
    COR_MASK: ClassVar[int] = 0x14
    CAP: ClassVar[int] = 0x18
    HEADER_LOG: ClassVar[int] = 0x1C
    ROOT_COMMAND: ClassVar[int] = 0x2C
    ROOT_STATUS: ClassVar[int] = 0x30
    ROOT_ERR_SRC: ClassVar[int] = 0x34
    PREFIX_LOG: ClassVar[int] = 0x38

    def __init__(self, *, root: bool = False, version: int = 2, uncor_errors: int = UNC_DEFAULT,
                 cor_errors: int = COR_DEFAULT, uncor_severity: int | None = None,
                 ecrc_gen: bool = False, ecrc_check: bool = False, multi_header: bool = False,
                 tlp_prefix_log: bool = False, comp_timeout_log: bool = False, msg_num: int = 0) -> None:
        if uncor_errors & ~UNC_DEFINED or uncor_errors < 0:
            raise VfiolabError(f"AER: uncorrectable errors {uncor_errors:#x} outside {UNC_DEFINED:#x}")
        if cor_errors & ~COR_DEFINED or cor_errors < 0:
            raise VfiolabError(f"AER: correctable errors {cor_errors:#x} outside {COR_DEFINED:#x}")
        if not 1 <= version <= 15:
            raise VfiolabError(f"AER: capability version {version} outside 1..15")
        if not 0 <= msg_num <= 31:
            raise VfiolabError(f"AER: interrupt message number {msg_num} outside 0..31")
        sev = UNC_SEVERITY_DEFAULT if uncor_severity is None else uncor_severity
        if sev & ~UNC_DEFINED or sev < 0:
            raise VfiolabError(f"AER: severity {sev:#x} outside {UNC_DEFINED:#x}")
        self.root, self.version = root, version
        self.uncor_errors, self.cor_errors, self.uncor_severity = uncor_errors, cor_errors, sev
        self.ecrc_gen, self.ecrc_check, self.multi_header = ecrc_gen, ecrc_check, multi_header
        self.tlp_prefix_log, self.comp_timeout_log, self.msg_num = tlp_prefix_log, comp_timeout_log, msg_num
        self._cs: ConfigSpace | None = None
        self._off = -1

    def length(self) -> int:
        if self.tlp_prefix_log:
            return self.PREFIX_LOG + 16
        return self.PREFIX_LOG if self.root else self.ROOT_COMMAND

    def build(self, cs: ConfigSpace, off: int) -> None:
        unc, cor = self.uncor_errors, self.cor_errors
        cs.init_reg(off + self.UNCOR_STATUS, 4, 0, w1c=unc, sticky=unc)
        cs.init_reg(off + self.UNCOR_MASK, 4, 0, rw=unc, sticky=unc)
        cs.init_reg(off + self.UNCOR_SEVER, 4, self.uncor_severity, rw=unc, sticky=unc)
        cs.init_reg(off + self.COR_STATUS, 4, 0, w1c=cor, sticky=cor)
        cs.init_reg(off + self.COR_MASK, 4, COR_MASK_DEFAULT & cor, rw=cor, sticky=cor)
        caps = ((CAP_ECRC_GENC if self.ecrc_gen else 0) | (CAP_ECRC_CHKC if self.ecrc_check else 0)
                | (CAP_MULT_HDRC if self.multi_header else 0)
                | (CAP_COMP_TIME_LOG if self.comp_timeout_log else 0))
        # Each enable is RWS next to its capability bit (one position up), RsvdP without it.
        enables = ((CAP_ECRC_GENE if self.ecrc_gen else 0) | (CAP_ECRC_CHKE if self.ecrc_check else 0)
                   | (CAP_MULT_HDRE if self.multi_header else 0))
        cs.init_reg(off + self.CAP, 4, caps, rw=enables, sticky=enables | CAP_FEP | CAP_PREFIX_LOG)
        for i in range(4):
            cs.init_reg(off + self.HEADER_LOG + 4 * i, 4, 0, sticky=0xFFFFFFFF)
        if self.root:
            cs.init_reg(off + self.ROOT_COMMAND, 4, 0,
                        rw=ROOT_CMD_COR_EN | ROOT_CMD_NONFATAL_EN | ROOT_CMD_FATAL_EN)
            cs.init_reg(off + self.ROOT_STATUS, 4, self.msg_num << 27, w1c=ROOT_STATUS_W1C,
                        sticky=ROOT_STATUS_W1C)
            cs.init_reg(off + self.ROOT_ERR_SRC, 4, 0, sticky=0xFFFFFFFF)
        if self.tlp_prefix_log:
            for i in range(4):
                cs.init_reg(off + self.PREFIX_LOG + 4 * i, 4, 0, sticky=0xFFFFFFFF)

    def attach(self, cs: ConfigSpace, off: int) -> None:
        self._cs, self._off = cs, off

    # ------------------------------------------------------------------ hardware side
    def _placed(self) -> tuple[ConfigSpace, int]:
        if self._cs is None:
            raise VfiolabError("AER capability is not placed in a config space yet")
        return self._cs, self._off

    def signal_uncorrectable(self, errors: int, header: Sequence[int] = (0, 0, 0, 0)) -> str | None:
        """The function detects ``errors`` (UNC_* bits): set their status; for the unmasked ones log the
        first error's pointer and TLP header unless a logged error is still pending (§6.2.4.2).
        Returns "fatal"/"nonfatal" for the message the function would send, None when all are masked."""
        cs, off = self._placed()
        if errors & ~self.uncor_errors or not errors:
            raise VfiolabError(f"AER: {errors:#x} are not implemented uncorrectable errors "
                               f"({self.uncor_errors:#x})")
        if len(header) != 4:
            raise VfiolabError(f"AER: a header log holds 4 dwords, not {len(header)}")
        status = cs.get(off + self.UNCOR_STATUS, 4)
        unmasked = errors & ~cs.get(off + self.UNCOR_MASK, 4)
        cs.set(off + self.UNCOR_STATUS, 4, status | errors)
        if not unmasked:
            return None
        capctl = cs.get(off + self.CAP, 4)
        # The log is locked while the error the First Error Pointer names is still pending.
        if not status & (1 << (capctl & CAP_FEP)):
            first = (unmasked & -unmasked).bit_length() - 1
            cs.set(off + self.CAP, 4, (capctl & ~CAP_FEP) | first)
            for i, dw in enumerate(header):
                cs.set(off + self.HEADER_LOG + 4 * i, 4, dw)
        return "fatal" if unmasked & cs.get(off + self.UNCOR_SEVER, 4) else "nonfatal"

    def signal_correctable(self, errors: int) -> bool:
        """The function detects correctable ``errors`` (COR_* bits); True if an ERR_COR is sent (unmasked)."""
        cs, off = self._placed()
        if errors & ~self.cor_errors or not errors:
            raise VfiolabError(f"AER: {errors:#x} are not implemented correctable errors "
                               f"({self.cor_errors:#x})")
        cs.set(off + self.COR_STATUS, 4, cs.get(off + self.COR_STATUS, 4) | errors)
        return bool(errors & ~cs.get(off + self.COR_MASK, 4))

    def receive_message(self, kind: str, source_id: int) -> bool:
        """A Root Port/RCEC receives ERR_COR, ERR_NONFATAL or ERR_FATAL ("cor"/"nonfatal"/"fatal") from
        ``source_id``: update Root Error Status and Error Source Identification (§7.8.4.10-11).
        Returns True if Root Error Command enables an interrupt for it."""
        cs, off = self._placed()
        if not self.root:
            raise VfiolabError("AER: only Root Ports and RCECs have Root Error Status")
        if kind not in ("cor", "nonfatal", "fatal"):
            raise VfiolabError(f"AER: message kind {kind!r} is not cor, nonfatal or fatal")
        if not 0 <= source_id <= 0xFFFF:
            raise VfiolabError(f"AER: source ID {source_id:#x} is not a 16-bit requester ID")
        st = cs.get(off + self.ROOT_STATUS, 4)
        src = cs.get(off + self.ROOT_ERR_SRC, 4)
        if kind == "cor":
            if st & ROOT_COR_RCV:
                st |= ROOT_MULTI_COR_RCV
            else:
                st |= ROOT_COR_RCV
                src = (src & 0xFFFF0000) | source_id
            enable = ROOT_CMD_COR_EN
        else:
            if st & ROOT_UNCOR_RCV:
                st |= ROOT_MULTI_UNCOR_RCV
            else:
                st |= ROOT_UNCOR_RCV | (ROOT_FIRST_FATAL if kind == "fatal" else 0)
                src = (src & 0xFFFF) | (source_id << 16)
            st |= ROOT_FATAL_RCV if kind == "fatal" else ROOT_NONFATAL_RCV
            enable = ROOT_CMD_FATAL_EN if kind == "fatal" else ROOT_CMD_NONFATAL_EN
        cs.set(off + self.ROOT_STATUS, 4, st)
        cs.set(off + self.ROOT_ERR_SRC, 4, src)
        return bool(cs.get(off + self.ROOT_COMMAND, 4) & enable)


_UE_FLAGS = ((UNC_DLP, "DLP"), (UNC_SURPDN, "SDES"), (UNC_POISON_TLP, "TLP"), (UNC_FCP, "FCP"),
             (UNC_COMP_TIME, "CmpltTO"), (UNC_COMP_ABORT, "CmpltAbrt"), (UNC_UNX_COMP, "UnxCmplt"),
             (UNC_RX_OVER, "RxOF"), (UNC_MALF_TLP, "MalfTLP"), (UNC_ECRC, "ECRC"), (UNC_UNSUP, "UnsupReq"),
             (UNC_ACSV, "ACSViol"))
_CE_FLAGS = ((COR_RCVR, "RxErr"), (COR_BAD_TLP, "BadTLP"), (COR_BAD_DLLP, "BadDLLP"),
             (COR_REP_ROLL, "Rollover"), (COR_REP_TIMER, "Timeout"), (COR_ADV_NFAT, "AdvNonFatalErr"))
_CAP_FLAGS1 = ((CAP_ECRC_GENC, "ECRCGenCap"), (CAP_ECRC_GENE, "ECRCGenEn"), (CAP_ECRC_CHKC, "ECRCChkCap"),
               (CAP_ECRC_CHKE, "ECRCChkEn"))
_CAP_FLAGS2 = ((CAP_MULT_HDRC, "MultHdrRecCap"), (CAP_MULT_HDRE, "MultHdrRecEn"),
               (CAP_PREFIX_LOG, "TLPPfxPres"), (CAP_COMP_TIME_LOG, "HdrLogCap"))
_ROOT_CMD_FLAGS = ((ROOT_CMD_COR_EN, "CERptEn"), (ROOT_CMD_NONFATAL_EN, "NFERptEn"),
                   (ROOT_CMD_FATAL_EN, "FERptEn"))
_ROOT_STA_FLAGS1 = ((ROOT_COR_RCV, "CERcvd"), (ROOT_MULTI_COR_RCV, "MultCERcvd"), (ROOT_UNCOR_RCV, "UERcvd"),
                    (ROOT_MULTI_UNCOR_RCV, "MultUERcvd"))
_ROOT_STA_FLAGS2 = ((ROOT_FIRST_FATAL, "FirstFatal"), (ROOT_NONFATAL_RCV, "NonFatalMsg"),
                    (ROOT_FATAL_RCV, "FatalMsg"))
# (label, register) of the status/mask/severity lines, in lspci's order
_ERR_LINES = (("UESta", AerCap.UNCOR_STATUS, _UE_FLAGS), ("UEMsk", AerCap.UNCOR_MASK, _UE_FLAGS),
              ("UESvrt", AerCap.UNCOR_SEVER, _UE_FLAGS), ("CESta", AerCap.COR_STATUS, _CE_FLAGS),
              ("CEMsk", AerCap.COR_MASK, _CE_FLAGS))


# pciutils ls-ecaps.c cap_aer: the Root registers depend on the PCIe port type.
@register_decoder(AerCap.cap_id, extended=True)
def decode_aer(ctx: DecodeContext, out: Out, where: int) -> None:
    """Error status/mask/severity, capabilities, header log and (Root Port/RCEC) root registers."""
    out.write("Advanced Error Reporting\n")
    if ctx.verbose < 2 or not ctx.fetch(where + AerCap.UNCOR_STATUS, 40):
        return
    for label, reg, table in _ERR_LINES:
        out.write(f"\t\t{label}:\t{flags(ctx.r32(where + reg), table)}\n")
    cap = ctx.r32(where + AerCap.CAP)
    out.write(f"\t\tAERCap:\tFirst Error Pointer: {cap & CAP_FEP:02x}, {flags(cap, _CAP_FLAGS1)}\n"
              f"\t\t\t{flags(cap, _CAP_FLAGS2)}\n")
    log = " ".join(f"{ctx.r32(where + AerCap.HEADER_LOG + 4 * i):08x}" for i in range(4))
    out.write(f"\t\tHeaderLog: {log}\n")
    if ctx.pcie_type not in _ROOT_TYPES or not ctx.fetch(where + AerCap.ROOT_COMMAND, 12):
        return
    sta = ctx.r32(where + AerCap.ROOT_STATUS)
    out.write(f"\t\tRootCmd: {flags(ctx.r32(where + AerCap.ROOT_COMMAND), _ROOT_CMD_FLAGS)}\n"
              f"\t\tRootSta: {flags(sta, _ROOT_STA_FLAGS1)}\n"
              f"\t\t\t {flags(sta, _ROOT_STA_FLAGS2)} IntMsg {sta >> 27}\n"
              f"\t\tErrorSrc: ERR_COR: {ctx.r16(where + AerCap.ROOT_ERR_SRC):04x} "
              f"ERR_FATAL/NONFATAL: {ctx.r16(where + AerCap.ROOT_ERR_SRC + 2):04x}\n")
