"""PCI Power Management capability (ID 0x01): registers per the PCI PM spec 1.2 and lspci's decode.

Register layout and bit names follow Linux ``include/uapi/linux/pci_regs.h`` (PCI_PM_*); the text is
what pciutils 3.9 ``ls-caps.c`` cap_pm() prints.
"""

from __future__ import annotations

from typing import ClassVar, Final

from vfiolab.pci.caps.base import Capability, register_decoder
from vfiolab.pci.config import ConfigSpace
from vfiolab.pci.decode import DecodeContext, Out, flag, flags

PMC: Final = 2
PMCSR: Final = 4
PMCSR_BSE: Final = 6
DATA: Final = 7

PMC_PME_CLOCK: Final = 0x0008
PMC_DSI: Final = 0x0020
PMC_D1: Final = 0x0200
PMC_D2: Final = 0x0400
PME_D0: Final = 0x01  # pme_support bits, PMC[15:11]
PME_D1: Final = 0x02
PME_D2: Final = 0x04
PME_D3HOT: Final = 0x08
PME_D3COLD: Final = 0x10

CTRL_STATE: Final = 0x0003
CTRL_NO_SOFT_RESET: Final = 0x0008
CTRL_PME_ENABLE: Final = 0x0100
CTRL_DATA_SEL: Final = 0x1E00
CTRL_PME_STATUS: Final = 0x8000

BSE_B2_B3: Final = 0x40
BSE_BPCC_EN: Final = 0x80


class PmCap(Capability):
    """Power Management: PMC (RO), PMCSR (PowerState/PME_En/Data_Select RW, PME_Status RW1C), BSE, Data."""

    cap_id: ClassVar[int] = 0x01
    name: ClassVar[str] = "Power Management"

    def __init__(self, *, version: int = 3, pme_clock: bool = False, dsi: bool = False,
                 aux_current: int = 0, d1: bool = False, d2: bool = False, pme_support: int = 0,
                 no_soft_reset: bool = True, state: int = 0, bridge_ext: int = 0,
                 data: int | None = None) -> None:
        if not 0 <= version <= 7 or not 0 <= aux_current <= 7 or not 0 <= pme_support <= 0x1F:
            raise ValueError("PmCap: version and aux_current are 3-bit, pme_support 5-bit fields")
        if not 0 <= state <= 3:
            raise ValueError(f"PmCap: power state D{state} does not exist")
        self.version = version
        self.pme_clock = pme_clock
        self.dsi = dsi
        self.aux_current = aux_current
        self.d1 = d1
        self.d2 = d2
        self.pme_support = pme_support
        self.no_soft_reset = no_soft_reset
        self.state = state
        self.bridge_ext = bridge_ext & (BSE_B2_B3 | BSE_BPCC_EN)
        self.data = data

    def length(self) -> int:
        return 8

    def pmc(self) -> int:
        """The Power Management Capabilities register value."""
        return (self.version | (PMC_PME_CLOCK if self.pme_clock else 0) | (PMC_DSI if self.dsi else 0)
                | self.aux_current << 6 | (PMC_D1 if self.d1 else 0) | (PMC_D2 if self.d2 else 0)
                | self.pme_support << 11)

    def build(self, cs: ConfigSpace, off: int) -> None:
        cs.init_reg(off + PMC, 2, self.pmc())
        rw = CTRL_STATE
        w1c = sticky = 0
        if self.pme_support:
            # PCI PM 1.2 §3.2.4: PME_En/PME_Status are RO 0 without PME support, sticky with D3cold PME.
            rw |= CTRL_PME_ENABLE
            w1c = CTRL_PME_STATUS
            if self.pme_support & PME_D3COLD:
                sticky = CTRL_PME_ENABLE | CTRL_PME_STATUS
        if self.data is not None:
            rw |= CTRL_DATA_SEL  # Data_Select is hardwired to 0 when the Data register is absent
        ctrl = self.state | (CTRL_NO_SOFT_RESET if self.no_soft_reset else 0)
        cs.init_reg(off + PMCSR, 2, ctrl, rw=rw, w1c=w1c, sticky=sticky)
        cs.init_reg(off + PMCSR_BSE, 1, self.bridge_ext)
        cs.init_reg(off + DATA, 1, self.data or 0)

    def attach(self, cs: ConfigSpace, off: int) -> None:
        allowed = {0, 3} | ({1} if self.d1 else set()) | ({2} if self.d2 else set())

        def on_write(_o: int, _s: int, old_dw: int, new_dw: int) -> None:
            # PCI PM 1.2 §3.2.4: a write of an unsupported state completes but changes nothing.
            if (new_dw & CTRL_STATE) not in allowed:
                cs.set(off + PMCSR, 1, (cs.get(off + PMCSR, 1) & ~CTRL_STATE) | (old_dw & CTRL_STATE))

        cs.add_write_hook(off + PMCSR, 2, on_write)


_AUX_MA: Final = (0, 55, 100, 160, 220, 270, 320, 375)  # PMC AuxCurrent encoding, in mA
_PMC_FLAGS: Final = ((PMC_PME_CLOCK, "PMEClk"), (PMC_DSI, "DSI"), (PMC_D1, "D1"), (PMC_D2, "D2"))
_PME_FROM: Final = ((0x0800, "D0"), (0x1000, "D1"), (0x2000, "D2"), (0x4000, "D3hot"), (0x8000, "D3cold"))


@register_decoder(0x01)
def decode_pm(ctx: DecodeContext, out: Out, where: int) -> None:
    """ls-caps.c cap_pm()."""
    cap = ctx.r16(where + PMC)
    out.write(f"Power Management version {cap & 7}\n")
    if ctx.verbose < 2:
        return
    out.write(f"\t\tFlags: {flags(cap, _PMC_FLAGS)} AuxCurrent={_AUX_MA[(cap >> 6) & 7]}mA "
              "PME(" + ",".join(label + flag(cap, mask) for mask, label in _PME_FROM) + ")\n")
    if not ctx.fetch(where + PMCSR, 4):
        return
    t = ctx.r16(where + PMCSR)
    out.write(f"\t\tStatus: D{t & 3} NoSoftRst{flag(t, CTRL_NO_SOFT_RESET)} "
              f"PME-Enable{flag(t, CTRL_PME_ENABLE)} DSel={(t >> 9) & 0xF} DScale={(t >> 13) & 3} "
              f"PME{flag(t, CTRL_PME_STATUS)}\n")
    b = ctx.r8(where + PMCSR_BSE)
    if b:
        # lspci prints B3+ when the B2_B3 bit is clear (ls-caps.c: FLAG(~b, PCI_PM_PPB_B2_B3)).
        out.write(f"\t\tBridge: PM{flag(b, BSE_BPCC_EN)} B3{flag(~b, BSE_B2_B3)}\n")
