"""Latency Tolerance Reporting extended capability (PCIe Base 6.0 §7.8.2): builder and lspci decoder."""

from __future__ import annotations

from typing import ClassVar

from vfiolab.errors import VfiolabError
from vfiolab.pci.caps.base import Capability, register_decoder
from vfiolab.pci.config import ConfigSpace
from vfiolab.pci.decode import DecodeContext, Out

_LAT_FIELDS = 0x1FFF  # Value [9:0] and Scale [12:10]; [15:13] RsvdP (pci_regs.h PCI_LTR_*)


class LtrCap(Capability):
    """Max Snoop / Max No-Snoop Latency registers, both RW (software programs them for the platform)."""

    cap_id: ClassVar[int] = 0x18
    extended: ClassVar[bool] = True
    name: ClassVar[str] = "Latency Tolerance Reporting"

    MAX_SNOOP: ClassVar[int] = 0x04
    MAX_NOSNOOP: ClassVar[int] = 0x06
    SIZEOF: ClassVar[int] = 0x08

    def __init__(self, max_snoop: int = 0, max_nosnoop: int = 0) -> None:
        for what, val in (("max_snoop", max_snoop), ("max_nosnoop", max_nosnoop)):
            if val & ~_LAT_FIELDS or val < 0:
                raise VfiolabError(f"LTR: {what} {val:#x} has bits outside Value[9:0]/Scale[12:10]")
        self.max_snoop = max_snoop
        self.max_nosnoop = max_nosnoop

    def length(self) -> int:
        return self.SIZEOF

    def build(self, cs: ConfigSpace, off: int) -> None:
        cs.init_reg(off + self.MAX_SNOOP, 2, self.max_snoop, rw=_LAT_FIELDS)
        cs.init_reg(off + self.MAX_NOSNOOP, 2, self.max_nosnoop, rw=_LAT_FIELDS)


def ltr_ns(reg: int) -> int:
    """Nanoseconds lspci prints for a latency register: Value * 2^(5*Scale), the shift taken modulo 32
    as lspci's 32-bit ``1 << (scale * 5)`` does on x86 (scale 7 gives 8)."""
    return (reg & 0x3FF) * (1 << ((((reg >> 10) & 7) * 5) & 31))


# pciutils ls-ecaps.c cap_ltr
@register_decoder(LtrCap.cap_id, extended=True)
def decode_ltr(ctx: DecodeContext, out: Out, where: int) -> None:
    """Both latencies in nanoseconds at -vv and above."""
    out.write("Latency Tolerance Reporting\n")
    if ctx.verbose < 2 or not ctx.fetch(where + LtrCap.MAX_SNOOP, 4):
        return
    out.write(f"\t\tMax snoop latency: {ltr_ns(ctx.r16(where + LtrCap.MAX_SNOOP))}ns\n")
    out.write(f"\t\tMax no snoop latency: {ltr_ns(ctx.r16(where + LtrCap.MAX_NOSNOOP))}ns\n")
