"""Access Control Services extended capability (PCIe Base 6.0 §7.7.11): builder and lspci decoder.

The ACS capability register says which controls exist; each ACS Control bit is RW only where the
matching capability bit is set (RsvdP otherwise).  With P2P Egress Control, an Egress Control Vector
of ``egress_bits`` RW bits follows, in as many dwords as it needs.
"""

from __future__ import annotations

from typing import ClassVar

from vfiolab.errors import VfiolabError
from vfiolab.pci.caps.base import Capability, register_decoder
from vfiolab.pci.config import ConfigSpace
from vfiolab.pci.decode import DecodeContext, Out, flags

# pci_regs.h PCI_ACS_*
SV = 0x01
TB = 0x02
RR = 0x04
CR = 0x08
UF = 0x10
EC = 0x20
DT = 0x40
_ALL = SV | TB | RR | CR | UF | EC | DT


class AcsCap(Capability):
    """ACS capability (RO), control (RW per implemented feature) and the optional egress vector."""

    cap_id: ClassVar[int] = 0x0D
    extended: ClassVar[bool] = True
    name: ClassVar[str] = "Access Control Services"

    SV: ClassVar[int] = SV
    TB: ClassVar[int] = TB
    RR: ClassVar[int] = RR
    CR: ClassVar[int] = CR
    UF: ClassVar[int] = UF
    EC: ClassVar[int] = EC
    DT: ClassVar[int] = DT
    CAP: ClassVar[int] = 0x04
    EGRESS_BITS: ClassVar[int] = 0x05   # Egress Control Vector Size, high byte of CAP (0 means 256)
    CTRL: ClassVar[int] = 0x06
    EGRESS_VECTOR: ClassVar[int] = 0x08

    def __init__(self, cap: int = SV | TB | RR | CR | UF, ctrl: int = 0, *, egress_bits: int = 0,
                 egress_vector: int = 0) -> None:
        if cap & ~_ALL or cap < 0:
            raise VfiolabError(f"ACS: capability bits {cap:#x} outside SV|TB|RR|CR|UF|EC|DT ({_ALL:#x})")
        if ctrl & ~cap or ctrl < 0:
            raise VfiolabError(f"ACS: control {ctrl:#x} enables features the capability {cap:#x} lacks")
        if cap & EC:
            if not 1 <= egress_bits <= 256:
                raise VfiolabError(f"ACS: egress control vector size {egress_bits} outside 1..256")
        elif egress_bits or egress_vector:
            raise VfiolabError("ACS: an egress control vector needs P2P Egress Control (EC) in the "
                               "capability")
        if not 0 <= egress_vector < 1 << max(egress_bits, 1):
            raise VfiolabError(f"ACS: egress vector {egress_vector:#x} wider than {egress_bits} bits")
        self.cap, self.ctrl = cap, ctrl
        self.egress_bits, self.egress_vector = egress_bits, egress_vector

    def length(self) -> int:
        return self.EGRESS_VECTOR + 4 * ((self.egress_bits + 31) // 32)

    def build(self, cs: ConfigSpace, off: int) -> None:
        cs.init_reg(off + self.CAP, 2, self.cap | ((self.egress_bits & 0xFF) << 8))
        cs.init_reg(off + self.CTRL, 2, self.ctrl, rw=self.cap)
        # The vector's bits beyond the vector size are RsvdP.
        for i in range((self.egress_bits + 31) // 32):
            width = min(32, self.egress_bits - 32 * i)
            cs.init_reg(off + self.EGRESS_VECTOR + 4 * i, 4, (self.egress_vector >> (32 * i)) & 0xFFFFFFFF,
                        rw=(1 << width) - 1)


_ACS_FLAGS = ((SV, "SrcValid"), (TB, "TransBlk"), (RR, "ReqRedir"), (CR, "CmpltRedir"),
              (UF, "UpstreamFwd"), (EC, "EgressCtrl"), (DT, "DirectTrans"))


# pciutils ls-ecaps.c cap_acs (3.9.0 prints neither the vector size nor the vector)
@register_decoder(AcsCap.cap_id, extended=True)
def decode_acs(ctx: DecodeContext, out: Out, where: int) -> None:
    """ACSCap/ACSCtl flag lines at -vv and above."""
    out.write("Access Control Services\n")
    if ctx.verbose < 2 or not ctx.fetch(where + AcsCap.CAP, 4):
        return
    out.write(f"\t\tACSCap:\t{flags(ctx.r16(where + AcsCap.CAP), _ACS_FLAGS)}\n"
              f"\t\tACSCtl:\t{flags(ctx.r16(where + AcsCap.CTRL), _ACS_FLAGS)}\n")
