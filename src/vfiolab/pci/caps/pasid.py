"""Process Address Space ID extended capability (PCIe Base 6.0 §7.8.8): builder and lspci decoder."""

from __future__ import annotations

from typing import ClassVar

from vfiolab.errors import VfiolabError
from vfiolab.pci.caps.base import Capability, register_decoder
from vfiolab.pci.config import ConfigSpace
from vfiolab.pci.decode import DecodeContext, Out, flags


class PasidCap(Capability):
    """Max PASID Width and Execute/Privileged support (RO); the matching enables (RW)."""

    cap_id: ClassVar[int] = 0x1B
    extended: ClassVar[bool] = True
    name: ClassVar[str] = "Process Address Space ID"

    CAP: ClassVar[int] = 0x04
    CTRL: ClassVar[int] = 0x06
    SIZEOF: ClassVar[int] = 0x08
    # pci_regs.h PCI_PASID_*
    CAP_EXEC: ClassVar[int] = 0x0002
    CAP_PRIV: ClassVar[int] = 0x0004
    CAP_WIDTH: ClassVar[int] = 0x1F00
    CTRL_ENABLE: ClassVar[int] = 0x0001
    CTRL_EXEC: ClassVar[int] = 0x0002
    CTRL_PRIV: ClassVar[int] = 0x0004

    def __init__(self, width: int = 20, *, exec_perm: bool = False, priv_mode: bool = False) -> None:
        if not 1 <= width <= 20:
            raise VfiolabError(f"PASID: max PASID width {width} outside 1..20")
        self.width, self.exec_perm, self.priv_mode = width, exec_perm, priv_mode

    def length(self) -> int:
        return self.SIZEOF

    def build(self, cs: ConfigSpace, off: int) -> None:
        opt = (self.CAP_EXEC if self.exec_perm else 0) | (self.CAP_PRIV if self.priv_mode else 0)
        cs.init_reg(off + self.CAP, 2, opt | (self.width << 8))
        # Execute/Privileged enables are RsvdP unless supported; the CTRL bits share the CAP positions.
        cs.init_reg(off + self.CTRL, 2, 0, rw=self.CTRL_ENABLE | opt)


_PASID_CAP_FLAGS = ((PasidCap.CAP_EXEC, "Exec"), (PasidCap.CAP_PRIV, "Priv"))
_PASID_CTRL_FLAGS = ((PasidCap.CTRL_ENABLE, "Enable"), (PasidCap.CTRL_EXEC, "Exec"),
                     (PasidCap.CTRL_PRIV, "Priv"))


# pciutils ls-ecaps.c cap_pasid
@register_decoder(PasidCap.cap_id, extended=True)
def decode_pasid(ctx: DecodeContext, out: Out, where: int) -> None:
    """PASIDCap/PASIDCtl lines at -vv and above."""
    out.write("Process Address Space ID (PASID)\n")
    if ctx.verbose < 2 or not ctx.fetch(where + PasidCap.CAP, 4):
        return
    cap = ctx.r16(where + PasidCap.CAP)
    ctl = ctx.r16(where + PasidCap.CTRL)
    out.write(f"\t\tPASIDCap: {flags(cap, _PASID_CAP_FLAGS)}, Max PASID Width: {(cap >> 8) & 0x1F:02x}\n"
              f"\t\tPASIDCtl: {flags(ctl, _PASID_CTRL_FLAGS)}\n")
