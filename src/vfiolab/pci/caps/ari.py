"""Alternative Routing-ID Interpretation extended capability (PCIe Base 6.0 §7.8.7): builder and decoder."""

from __future__ import annotations

from typing import ClassVar

from vfiolab.errors import VfiolabError
from vfiolab.pci.caps.base import Capability, register_decoder
from vfiolab.pci.config import ConfigSpace
from vfiolab.pci.decode import DecodeContext, Out, flags


class AriCap(Capability):
    """Next Function Number (RO) links the functions of an ARI device; Function Groups are optional."""

    cap_id: ClassVar[int] = 0x0E
    extended: ClassVar[bool] = True
    name: ClassVar[str] = "Alternative Routing-ID Interpretation"

    CAP: ClassVar[int] = 0x04
    CTRL: ClassVar[int] = 0x06
    SIZEOF: ClassVar[int] = 0x08
    # pci_regs.h PCI_ARI_*
    MFVC: ClassVar[int] = 0x0001
    ACS: ClassVar[int] = 0x0002
    CTRL_FG: ClassVar[int] = 0x0070

    def __init__(self, next_fn: int = 0, *, mfvc_groups: bool = False, acs_groups: bool = False) -> None:
        if not 0 <= next_fn <= 0xFF:
            raise VfiolabError(f"ARI: next function number {next_fn} outside 0..255")
        self.next_fn, self.mfvc_groups, self.acs_groups = next_fn, mfvc_groups, acs_groups

    def length(self) -> int:
        return self.SIZEOF

    def build(self, cs: ConfigSpace, off: int) -> None:
        cap = (self.MFVC if self.mfvc_groups else 0) | (self.ACS if self.acs_groups else 0)
        cs.init_reg(off + self.CAP, 2, cap | (self.next_fn << 8))
        # Each enable is RW only with its capability; Function Group is RW if either exists, else RsvdP.
        rw = cap | (self.CTRL_FG if cap else 0)
        cs.init_reg(off + self.CTRL, 2, 0, rw=rw)


_ARI_FLAGS = ((AriCap.MFVC, "MFVC"), (AriCap.ACS, "ACS"))


# pciutils ls-ecaps.c cap_ari
@register_decoder(AriCap.cap_id, extended=True)
def decode_ari(ctx: DecodeContext, out: Out, where: int) -> None:
    """ARICap/ARICtl lines at -vv and above."""
    out.write("Alternative Routing-ID Interpretation (ARI)\n")
    if ctx.verbose < 2 or not ctx.fetch(where + AriCap.CAP, 4):
        return
    cap = ctx.r16(where + AriCap.CAP)
    ctl = ctx.r16(where + AriCap.CTRL)
    out.write(f"\t\tARICap:\t{flags(cap, _ARI_FLAGS)}, Next Function: {cap >> 8}\n"
              f"\t\tARICtl:\t{flags(ctl, _ARI_FLAGS)}, Function Group: {(ctl >> 4) & 7}\n")
