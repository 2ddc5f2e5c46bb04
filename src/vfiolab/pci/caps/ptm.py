"""Precision Time Measurement extended capability (PCIe Base 6.0 §7.9.15): builder and lspci decoder."""

from __future__ import annotations

from typing import ClassVar

from vfiolab.errors import VfiolabError
from vfiolab.pci.caps.base import Capability, register_decoder
from vfiolab.pci.config import ConfigSpace
from vfiolab.pci.decode import DecodeContext, Out, flags


class PtmCap(Capability):
    """PTM roles (RO) and the PTM Control register (Enable, Root Select, Effective Granularity: RW)."""

    cap_id: ClassVar[int] = 0x1F
    extended: ClassVar[bool] = True
    name: ClassVar[str] = "Precision Time Measurement"

    CAP: ClassVar[int] = 0x04
    CTRL: ClassVar[int] = 0x08
    SIZEOF: ClassVar[int] = 0x0C
    # pci_regs.h PCI_PTM_*
    CAP_REQ: ClassVar[int] = 0x01
    CAP_RES: ClassVar[int] = 0x02
    CAP_ROOT: ClassVar[int] = 0x04
    CTRL_ENABLE: ClassVar[int] = 0x01
    CTRL_ROOT: ClassVar[int] = 0x02
    GRANULARITY: ClassVar[int] = 0xFF00

    def __init__(self, *, requester: bool = True, responder: bool = False, root: bool = False,
                 granularity: int = 0) -> None:
        if not 0 <= granularity <= 0xFF:
            raise VfiolabError(f"PTM: local clock granularity {granularity} does not fit in 8 bits")
        if root and not responder:
            raise VfiolabError("PTM: a PTM Root must also be PTM Responder capable")
        self.requester, self.responder, self.root = requester, responder, root
        self.granularity = granularity

    def length(self) -> int:
        return self.SIZEOF

    def build(self, cs: ConfigSpace, off: int) -> None:
        cap = ((self.CAP_REQ if self.requester else 0) | (self.CAP_RES if self.responder else 0)
               | (self.CAP_ROOT if self.root else 0) | (self.granularity << 8))
        cs.init_reg(off + self.CAP, 4, cap)
        # Root Select is RsvdP unless the function is Root capable.
        rw = self.CTRL_ENABLE | self.GRANULARITY | (self.CTRL_ROOT if self.root else 0)
        cs.init_reg(off + self.CTRL, 4, 0, rw=rw)


_PTM_CAP_FLAGS = ((PtmCap.CAP_REQ, "Requester:"), (PtmCap.CAP_RES, "Responder:"),
                  (PtmCap.CAP_ROOT, "Root:"))
_PTM_CTRL_FLAGS = ((PtmCap.CTRL_ENABLE, "Enabled:"), (PtmCap.CTRL_ROOT, "RootSelected:"))


def _granularity(value: int, zero: str) -> str:
    return zero if value == 0 else "Greater than 254ns" if value == 0xFF else f"{value}ns"


# pciutils ls-ecaps.c cap_ptm
@register_decoder(PtmCap.cap_id, extended=True)
def decode_ptm(ctx: DecodeContext, out: Out, where: int) -> None:
    """Roles, local clock granularity, control and effective granularity at -vv and above."""
    out.write("Precision Time Measurement\n")
    if ctx.verbose < 2:
        return
    if not ctx.fetch(where + PtmCap.CAP, 8):
        out.write("\t\t<unreadable>\n")
        return
    cap = ctx.r32(where + PtmCap.CAP)
    ctl = ctx.r32(where + PtmCap.CTRL)
    out.write(f"\t\tPTMCap: {flags(cap, _PTM_CAP_FLAGS)}\n"
              f"\t\tPTMClockGranularity: {_granularity((cap >> 8) & 0xFF, 'Unimplemented')}\n"
              f"\t\tPTMControl: {flags(ctl, _PTM_CTRL_FLAGS)}\n"
              f"\t\tPTMEffectiveGranularity: {_granularity((ctl >> 8) & 0xFF, 'Unknown')}\n")
