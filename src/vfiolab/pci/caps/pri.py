"""Page Request Interface extended capability (PCIe Base 6.0 §10.5.2): builder and lspci decoder."""

from __future__ import annotations

from typing import ClassVar

from vfiolab.errors import VfiolabError
from vfiolab.pci.caps.base import Capability, register_decoder
from vfiolab.pci.config import ConfigSpace
from vfiolab.pci.decode import DecodeContext, Out, flags


class PriCap(Capability):
    """PRI control (Enable RW, Reset reads 0), status (RF/UPRGI RW1C, Stopped and PRG Response PASID
    Required RO), Outstanding Page Request Capacity (RO) and Allocation (RW)."""

    cap_id: ClassVar[int] = 0x13
    extended: ClassVar[bool] = True
    name: ClassVar[str] = "Page Request Interface"

    CTRL: ClassVar[int] = 0x04
    STATUS: ClassVar[int] = 0x06
    MAX_REQ: ClassVar[int] = 0x08
    ALLOC_REQ: ClassVar[int] = 0x0C
    SIZEOF: ClassVar[int] = 0x10
    # pci_regs.h PCI_PRI_*
    CTRL_ENABLE: ClassVar[int] = 0x0001
    CTRL_RESET: ClassVar[int] = 0x0002
    STATUS_RF: ClassVar[int] = 0x0001
    STATUS_UPRGI: ClassVar[int] = 0x0002
    STATUS_STOPPED: ClassVar[int] = 0x0100
    STATUS_PASID: ClassVar[int] = 0x8000

    def __init__(self, capacity: int = 32, *, prg_pasid_required: bool = False) -> None:
        if not 0 <= capacity <= 0xFFFFFFFF:
            raise VfiolabError(f"PRI: outstanding page request capacity {capacity} does not fit in 32 bits")
        self.capacity, self.prg_pasid_required = capacity, prg_pasid_required
        self._cs: ConfigSpace | None = None
        self._off = -1

    def length(self) -> int:
        return self.SIZEOF

    def build(self, cs: ConfigSpace, off: int) -> None:
        cs.init_reg(off + self.CTRL, 2, 0, rw=self.CTRL_ENABLE | self.CTRL_RESET)
        # Stopped defaults to 1b: nothing is outstanding while PRI is disabled (drivers/pci/ats.c
        # pci_enable_pri refuses to enable PRI unless it reads Stopped set).
        status = self.STATUS_STOPPED | (self.STATUS_PASID if self.prg_pasid_required else 0)
        cs.init_reg(off + self.STATUS, 2, status, w1c=self.STATUS_RF | self.STATUS_UPRGI)
        cs.init_reg(off + self.MAX_REQ, 4, self.capacity)
        cs.init_reg(off + self.ALLOC_REQ, 4, 0, rw=0xFFFFFFFF)

    def attach(self, cs: ConfigSpace, off: int) -> None:
        self._cs, self._off = cs, off
        cs.add_write_hook(off + self.CTRL, 2, self._ctrl_written)

    def _ctrl_written(self, offset: int, size: int, old_dw: int, new_dw: int) -> None:
        cs, ctrl = self._cs, self._off + self.CTRL
        assert cs is not None
        val = cs.get(ctrl, 2)
        if val & self.CTRL_RESET:
            # Reset clears the request state and always reads back 0b.
            val &= ~self.CTRL_RESET
            cs.set(ctrl, 2, val)
        # The model has no requests in flight: Stopped is simply the inverse of Enable.
        st = cs.get(self._off + self.STATUS, 2) & ~self.STATUS_STOPPED
        cs.set(self._off + self.STATUS, 2, st | (0 if val & self.CTRL_ENABLE else self.STATUS_STOPPED))

    def enabled(self) -> bool:
        """PRI Enable as software last wrote it."""
        return bool(self._reg(self.CTRL, 2) & self.CTRL_ENABLE)

    def allocation(self) -> int:
        """Outstanding Page Request Allocation programmed by software."""
        return self._reg(self.ALLOC_REQ, 4)

    def signal(self, status: int) -> None:
        """Hardware reports Response Failure and/or Unexpected PRG Index (bits of STATUS_RF|STATUS_UPRGI)."""
        if status & ~(self.STATUS_RF | self.STATUS_UPRGI):
            raise VfiolabError(f"PRI: status bits {status:#x} are not Response Failure/Unexpected PRG Index")
        assert self._cs is not None
        st = self._off + self.STATUS
        self._cs.set(st, 2, self._cs.get(st, 2) | status)

    def _reg(self, rel: int, size: int) -> int:
        if self._cs is None:
            raise VfiolabError("PRI capability is not placed in a config space yet")
        return self._cs.read(self._off + rel, size)


_PRI_CTRL_FLAGS = ((PriCap.CTRL_ENABLE, "Enable"), (PriCap.CTRL_RESET, "Reset"))
_PRI_STATUS_FLAGS = ((PriCap.STATUS_RF, "RF"), (PriCap.STATUS_UPRGI, "UPRGI"),
                     (PriCap.STATUS_STOPPED, "Stopped"))


# pciutils ls-ecaps.c cap_pri (3.9.0 does not print PRG Response PASID Required)
@register_decoder(PriCap.cap_id, extended=True)
def decode_pri(ctx: DecodeContext, out: Out, where: int) -> None:
    """PRICtl/PRISta and the capacity/allocation pair at -vv and above."""
    out.write("Page Request Interface (PRI)\n")
    if ctx.verbose < 2 or not ctx.fetch(where + PriCap.CTRL, 0x0C):
        return
    out.write(f"\t\tPRICtl: {flags(ctx.r16(where + PriCap.CTRL), _PRI_CTRL_FLAGS)}\n"
              f"\t\tPRISta: {flags(ctx.r16(where + PriCap.STATUS), _PRI_STATUS_FLAGS)}\n"
              f"\t\tPage Request Capacity: {ctx.r32(where + PriCap.MAX_REQ):08x}, "
              f"Page Request Allocation: {ctx.r32(where + PriCap.ALLOC_REQ):08x}\n")
