"""Device Serial Number extended capability (PCIe Base 6.0 §7.9.3): builder and lspci decoder."""

from __future__ import annotations

from typing import ClassVar

from vfiolab.errors import VfiolabError
from vfiolab.pci.caps.base import Capability, register_decoder
from vfiolab.pci.config import ConfigSpace
from vfiolab.pci.decode import DecodeContext, Out


class DsnCap(Capability):
    """A 64-bit IEEE EUI-64 serial number, read-only (pci_regs.h PCI_EXT_CAP_DSN_SIZEOF = 12)."""

    cap_id: ClassVar[int] = 0x03
    extended: ClassVar[bool] = True
    name: ClassVar[str] = "Device Serial Number"

    SERIAL_LOW: ClassVar[int] = 0x04
    SERIAL_HIGH: ClassVar[int] = 0x08
    SIZEOF: ClassVar[int] = 0x0C

    def __init__(self, serial: int) -> None:
        if not 0 <= serial < 1 << 64:
            raise VfiolabError(f"DSN: serial number {serial:#x} does not fit in 64 bits")
        self.serial = serial

    def length(self) -> int:
        return self.SIZEOF

    def build(self, cs: ConfigSpace, off: int) -> None:
        cs.init_reg(off + self.SERIAL_LOW, 4, self.serial & 0xFFFFFFFF)
        cs.init_reg(off + self.SERIAL_HIGH, 4, self.serial >> 32)


# pciutils ls-ecaps.c cap_dsn: printed at every verbosity; nothing at all (not even a newline) when
# the 8 serial bytes were not given.
@register_decoder(DsnCap.cap_id, extended=True)
def decode_dsn(ctx: DecodeContext, out: Out, where: int) -> None:
    """``Device Serial Number aa-bb-...``: the 64-bit value, most significant byte first."""
    if not ctx.fetch(where + DsnCap.SERIAL_LOW, 8):
        return
    serial = ctx.r64(where + DsnCap.SERIAL_LOW)
    out.write("Device Serial Number " + "-".join(f"{b:02x}" for b in serial.to_bytes(8, "big")) + "\n")
