"""Bridge Subsystem Vendor ID capability (ID 0x0d): a type-1 header's Subsystem IDs, lspci's decode.

Layout from Linux ``include/uapi/linux/pci_regs.h`` (PCI_SSVID_*); text as pciutils 3.9 ``ls-caps.c``
cap_ssvid(), whose name lookup the renderer supplies through ``ctx.extra[SUBSYS_NAMER]``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, Final

from vfiolab.pci.caps.base import Capability, register_decoder
from vfiolab.pci.config import ConfigSpace
from vfiolab.pci.decode import DecodeContext, Out

VENDOR: Final = 4
DEVICE: Final = 6

SUBSYS_NAMER: Final = "subsystem_name"
"""ctx.extra key: ``(vendor, device, subsys_vendor, subsys_id) -> str`` as lspci's "Subsystem:" text."""

SubsysNamer = Callable[[int, int, int, int], str]


class SsvidCap(Capability):
    """Subsystem Vendor ID / Subsystem ID of a bridge; both HwInit (firmware writes once, then RO)."""

    cap_id: ClassVar[int] = 0x0D
    name: ClassVar[str] = "Subsystem Vendor ID"

    def __init__(self, subsys_vendor: int, subsys_id: int) -> None:
        if not (0 <= subsys_vendor <= 0xFFFF and 0 <= subsys_id <= 0xFFFF):
            raise ValueError("SsvidCap: subsystem vendor and ID are 16-bit values")
        self.subsys_vendor = subsys_vendor
        self.subsys_id = subsys_id

    def length(self) -> int:
        return 8

    def build(self, cs: ConfigSpace, off: int) -> None:
        cs.init_reg(off + 2, 2, 0)  # reserved
        cs.init_reg(off + VENDOR, 2, self.subsys_vendor, hwinit=0xFFFF)
        cs.init_reg(off + DEVICE, 2, self.subsys_id, hwinit=0xFFFF)


def _numeric_name(_v: int, _d: int, sv: int, sd: int) -> str:
    # What lspci prints when the ID database knows neither ID.
    return f"Device {sv:04x}:{sd:04x}"


@register_decoder(0x0D)
def decode_ssvid(ctx: DecodeContext, out: Out, where: int) -> None:
    """ls-caps.c cap_ssvid(): prints nothing at all (not even a newline) if the 8 bytes were not given."""
    if not ctx.fetch(where, 8):
        return
    namer = ctx.extra.get(SUBSYS_NAMER)
    name_of: SubsysNamer = namer if callable(namer) else _numeric_name
    out.write(f"Subsystem: {name_of(ctx.r16(0), ctx.r16(2), ctx.r16(where + VENDOR), ctx.r16(where + DEVICE))}\n")
