"""Secondary PCI Express extended capability (PCIe Base 6.0 §7.7.3): builder and lspci decoder.

Link Control 3 (RW), Lane Error Status (RW1CS, one bit per lane) and one 16-bit Lane Equalization
Control register per lane of the link width given to the builder.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from vfiolab.errors import VfiolabError
from vfiolab.pci.caps.base import Capability, register_decoder
from vfiolab.pci.config import ConfigSpace
from vfiolab.pci.decode import DecodeContext, Out, flags

_WIDTHS = (1, 2, 4, 8, 12, 16, 32)  # Maximum Link Width encodings of Link Capabilities


class SecondaryPcieCap(Capability):
    """Secondary PCIe registers sized for a link of ``width`` lanes."""

    cap_id: ClassVar[int] = 0x19
    extended: ClassVar[bool] = True
    name: ClassVar[str] = "Secondary PCI Express"

    LNKCTL3: ClassVar[int] = 0x04
    LANE_ERR: ClassVar[int] = 0x08
    LANE_EQ_CTRL: ClassVar[int] = 0x0C
    # pci_regs.h PCI_EXP_LNKCTL3_*
    LNKCTL3_PERFORM_EQ: ClassVar[int] = 0x0001
    LNKCTL3_EQ_REQ_INT_EN: ClassVar[int] = 0x0002
    LNKCTL3_LOWER_SKP_VEC: ClassVar[int] = 0xFE00
    LANE_EQ_FIELDS: ClassVar[int] = 0x7F7F  # DSP/USP transmitter presets and receiver preset hints

    def __init__(self, width: int = 1, *, lane_eq: int | Sequence[int] = 0,
                 downstream: bool = False) -> None:
        if width not in _WIDTHS:
            raise VfiolabError(f"Secondary PCIe: link width x{width} is not one of "
                               + ", ".join(f"x{w}" for w in _WIDTHS))
        eq = [lane_eq] * width if isinstance(lane_eq, int) else list(lane_eq)
        if len(eq) != width:
            raise VfiolabError(f"Secondary PCIe: {len(eq)} lane equalization values for an x{width} link")
        for lane, val in enumerate(eq):
            if val & ~self.LANE_EQ_FIELDS or val < 0:
                raise VfiolabError(f"Secondary PCIe: lane {lane} equalization control {val:#x} sets "
                                   f"bits outside {self.LANE_EQ_FIELDS:#x}")
        self.width, self.lane_eq, self.downstream = width, eq, downstream

    def length(self) -> int:
        return (self.LANE_EQ_CTRL + 2 * self.width + 3) & ~3

    def build(self, cs: ConfigSpace, off: int) -> None:
        rw3 = self.LNKCTL3_PERFORM_EQ | self.LNKCTL3_EQ_REQ_INT_EN | self.LNKCTL3_LOWER_SKP_VEC
        cs.init_reg(off + self.LNKCTL3, 4, 0, rw=rw3)
        lanes = (1 << self.width) - 1
        cs.init_reg(off + self.LANE_ERR, 4, 0, w1c=lanes, sticky=lanes)
        # Presets are HwInit in a Downstream Port (firmware sets them), RO in an Upstream Port.
        hw = self.LANE_EQ_FIELDS if self.downstream else 0
        for lane, val in enumerate(self.lane_eq):
            cs.init_reg(off + self.LANE_EQ_CTRL + 2 * lane, 2, val, hwinit=hw)


_LNKCTL3_FLAGS = ((SecondaryPcieCap.LNKCTL3_EQ_REQ_INT_EN, "LnkEquIntrruptEn"),
                  (SecondaryPcieCap.LNKCTL3_PERFORM_EQ, "PerformEqu"))


# pciutils ls-ecaps.c cap_sec (3.9.0 reads LnkCtl3 and Lane Error Status, not the equalization registers)
@register_decoder(SecondaryPcieCap.cap_id, extended=True)
def decode_secpcie(ctx: DecodeContext, out: Out, where: int) -> None:
    """LnkCtl3 flags and the lanes with errors at -vv and above."""
    out.write("Secondary PCI Express\n")
    if ctx.verbose < 2 or not ctx.fetch(where + SecondaryPcieCap.LNKCTL3, 12):
        return
    out.write(f"\t\tLnkCtl3: {flags(ctx.r16(where + SecondaryPcieCap.LNKCTL3), _LNKCTL3_FLAGS)}\n")
    errs = ctx.r16(where + SecondaryPcieCap.LANE_ERR)
    lanes = "".join(f" {lane}" for lane in range(16) if errs >> lane & 1)
    out.write(f"\t\tLaneErrStat: {'LaneErr at lane:' + lanes if errs else '0'}\n")
