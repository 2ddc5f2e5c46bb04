"""L1 PM Substates extended capability (PCIe Base 6.0 §7.8.3): builder and lspci decoder."""

from __future__ import annotations

from typing import ClassVar

from vfiolab.errors import VfiolabError
from vfiolab.pci.caps.base import Capability, register_decoder
from vfiolab.pci.caps.ltr import ltr_ns
from vfiolab.pci.config import ConfigSpace
from vfiolab.pci.decode import DecodeContext, Out, flags


class L1ssCap(Capability):
    """Supported substates and port timings (HwInit), Control 1/2 (RW: enables, thresholds, T_POWER_ON)."""

    cap_id: ClassVar[int] = 0x1E
    extended: ClassVar[bool] = True
    name: ClassVar[str] = "L1 PM Substates"

    CAP: ClassVar[int] = 0x04
    CTL1: ClassVar[int] = 0x08
    CTL2: ClassVar[int] = 0x0C
    SIZEOF: ClassVar[int] = 0x10
    # pci_regs.h PCI_L1SS_*
    PCIPM_L1_2: ClassVar[int] = 0x01
    PCIPM_L1_1: ClassVar[int] = 0x02
    ASPM_L1_2: ClassVar[int] = 0x04
    ASPM_L1_1: ClassVar[int] = 0x08
    L1_PM_SS: ClassVar[int] = 0x10
    CTL1_RW: ClassVar[int] = 0x0000FF00 | 0x03FF0000 | 0xE0000000  # restore time, LTR L1.2 threshold
    CTL2_RW: ClassVar[int] = 0x000000FB                            # T_POWER_ON scale [1:0], value [7:3]

    def __init__(self, *, pcipm_l12: bool = True, pcipm_l11: bool = True, aspm_l12: bool = True,
                 aspm_l11: bool = True, common_mode_restore_us: int = 0, power_on_scale: int = 0,
                 power_on_value: int = 0) -> None:
        if not 0 <= common_mode_restore_us <= 0xFF:
            raise VfiolabError(f"L1SS: common mode restore time {common_mode_restore_us} outside 0..255 us")
        if not 0 <= power_on_scale <= 3 or not 0 <= power_on_value <= 31:
            raise VfiolabError(f"L1SS: T_POWER_ON scale {power_on_scale}/value {power_on_value} outside "
                               "0..3/0..31")
        self.supported = ((self.PCIPM_L1_2 if pcipm_l12 else 0) | (self.PCIPM_L1_1 if pcipm_l11 else 0)
                          | (self.ASPM_L1_2 if aspm_l12 else 0) | (self.ASPM_L1_1 if aspm_l11 else 0))
        self.common_mode_restore_us = common_mode_restore_us
        self.power_on_scale, self.power_on_value = power_on_scale, power_on_value

    def length(self) -> int:
        return self.SIZEOF

    def build(self, cs: ConfigSpace, off: int) -> None:
        cap = (self.supported | (self.L1_PM_SS if self.supported else 0)
               | (self.common_mode_restore_us << 8) | (self.power_on_scale << 16)
               | (self.power_on_value << 19))
        cs.init_reg(off + self.CAP, 4, cap, hwinit=0x00FBFF00)
        # Port timings are HwInit (firmware may set them once).  An enable whose substate is not
        # supported is hardwired to 0b.
        cs.init_reg(off + self.CTL1, 4, 0, rw=self.supported | self.CTL1_RW)
        cs.init_reg(off + self.CTL2, 4, 0, rw=self.CTL2_RW)


_SUB_FLAGS = ((L1ssCap.PCIPM_L1_2, "PCI-PM_L1.2"), (L1ssCap.PCIPM_L1_1, "PCI-PM_L1.1"),
              (L1ssCap.ASPM_L1_2, "ASPM_L1.2"), (L1ssCap.ASPM_L1_1, "ASPM_L1.1"))
_CAP_FLAGS = (*_SUB_FLAGS, (L1ssCap.L1_PM_SS, "L1_PM_Substates"))
_POWER_ON_UNIT = (2, 10, 100)  # T_POWER_ON scale 0..2 in us; 3 is reserved (lspci prints <error>)


def _power_on(scale: int, value: int) -> str:
    return f"{_POWER_ON_UNIT[scale] * value}us" if scale < 3 else "<error>"


# pciutils ls-ecaps.c cap_l1pm: the timing fields only appear when an L1.2 substate is supported.
@register_decoder(L1ssCap.cap_id, extended=True)
def decode_l1ss(ctx: DecodeContext, out: Out, where: int) -> None:
    """L1SubCap/L1SubCtl1/L1SubCtl2 at -vv and above."""
    out.write("L1 PM Substates\n")
    if ctx.verbose < 2:
        return
    if not ctx.fetch(where + L1ssCap.CAP, 12):
        out.write("\t\t<unreadable>\n")
        return
    cap = ctx.r32(where + L1ssCap.CAP)
    ctl1 = ctx.r32(where + L1ssCap.CTL1)
    ctl2 = ctx.r32(where + L1ssCap.CTL2)
    l12 = bool(cap & (L1ssCap.PCIPM_L1_2 | L1ssCap.ASPM_L1_2))
    out.write(f"\t\tL1SubCap: {flags(cap, _CAP_FLAGS)}\n")
    if l12:
        out.write(f"\t\t\t  PortCommonModeRestoreTime={(cap >> 8) & 0xFF}us "
                  f"PortTPowerOnTime={_power_on((cap >> 16) & 3, (cap >> 19) & 0x1F)}\n")
    out.write(f"\t\tL1SubCtl1: {flags(ctl1, _SUB_FLAGS)}\n")
    if l12:
        out.write(f"\t\t\t   T_CommonMode={(ctl1 >> 8) & 0xFF}us")
        if cap & L1ssCap.ASPM_L1_2:
            scale = ctl1 >> 29
            # The threshold is Value * 2^(5*Scale) ns like an LTR value; scales 6 and 7 are invalid.
            thr = f"{ltr_ns(((ctl1 >> 16) & 0x3FF) | (scale << 10))}ns" if scale <= 5 else "<error>"
            out.write(f" LTR1.2_Threshold={thr}")
        out.write("\n")
    out.write("\t\tL1SubCtl2:" + (f" T_PwrOn={_power_on(ctl2 & 3, (ctl2 >> 3) & 0x1F)}" if l12 else "")
              + "\n")
