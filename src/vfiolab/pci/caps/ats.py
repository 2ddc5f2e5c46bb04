"""Address Translation Services extended capability (PCIe Base 6.0 §10.5.1): builder and lspci decoder."""

from __future__ import annotations

from typing import ClassVar

from vfiolab.errors import VfiolabError
from vfiolab.pci.caps.base import Capability, register_decoder
from vfiolab.pci.config import ConfigSpace
from vfiolab.pci.decode import DecodeContext, Out, flag


class AtsCap(Capability):
    """ATS capability (queue depth, page-aligned requests, global invalidate: RO) and control (RW)."""

    cap_id: ClassVar[int] = 0x0F
    extended: ClassVar[bool] = True
    name: ClassVar[str] = "Address Translation Service"

    CAP: ClassVar[int] = 0x04
    CTRL: ClassVar[int] = 0x06
    SIZEOF: ClassVar[int] = 0x08
    # pci_regs.h PCI_ATS_*
    CAP_QDEP: ClassVar[int] = 0x001F
    CAP_PAGE_ALIGNED: ClassVar[int] = 0x0020
    CAP_GLOBAL_INV: ClassVar[int] = 0x0040
    CTRL_STU: ClassVar[int] = 0x001F
    CTRL_ENABLE: ClassVar[int] = 0x8000

    def __init__(self, queue_depth: int = 32, *, page_aligned: bool = True,
                 global_invalidate: bool = False) -> None:
        # The 5-bit field encodes a depth of 32 as 0 (drivers/pci/ats.c pci_ats_queue_depth).
        if not 1 <= queue_depth <= 32:
            raise VfiolabError(f"ATS: invalidate queue depth {queue_depth} outside 1..32")
        self.queue_depth = queue_depth
        self.page_aligned, self.global_invalidate = page_aligned, global_invalidate

    def length(self) -> int:
        return self.SIZEOF

    def build(self, cs: ConfigSpace, off: int) -> None:
        cap = ((self.queue_depth & self.CAP_QDEP) | (self.CAP_PAGE_ALIGNED if self.page_aligned else 0)
               | (self.CAP_GLOBAL_INV if self.global_invalidate else 0))
        cs.init_reg(off + self.CAP, 2, cap)
        cs.init_reg(off + self.CTRL, 2, 0, rw=self.CTRL_ENABLE | self.CTRL_STU)


# pciutils ls-ecaps.c cap_ats
@register_decoder(AtsCap.cap_id, extended=True)
def decode_ats(ctx: DecodeContext, out: Out, where: int) -> None:
    """ATSCap/ATSCtl lines at -vv and above."""
    out.write("Address Translation Service (ATS)\n")
    if ctx.verbose < 2 or not ctx.fetch(where + AtsCap.CAP, 4):
        return
    cap = ctx.r16(where + AtsCap.CAP)
    ctl = ctx.r16(where + AtsCap.CTRL)
    out.write(f"\t\tATSCap:\tInvalidate Queue Depth: {cap & AtsCap.CAP_QDEP:02x}\n"
              f"\t\tATSCtl:\tEnable{flag(ctl, AtsCap.CTRL_ENABLE)}, "
              f"Smallest Translation Unit: {ctl & AtsCap.CTRL_STU:02x}\n")
