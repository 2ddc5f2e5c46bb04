"""TPH Requester extended capability (PCIe Base 6.0 §7.9.13): builder and lspci decoder.

TPH Requester Capability (+4, RO): supported ST modes, extended TPH, where the Steering Tag table lives
(none, in this capability, or in the MSI-X table) and its size; TPH Requester Control (+8, RW): ST mode
and requester enable; then, when the table is in the capability, 16-bit ST entries (Linux
``drivers/pci/tph.c`` writes them at ``PCI_TPH_BASE_SIZEOF + index * 2``).
"""

from __future__ import annotations

from typing import ClassVar

from vfiolab.errors import VfiolabError
from vfiolab.pci.caps.base import Capability, register_decoder
from vfiolab.pci.config import ConfigSpace
from vfiolab.pci.decode import DecodeContext, Out

# ST Table Location encodings (pci_regs.h PCI_TPH_LOC_* >> 9)
LOC_NONE = 0
LOC_CAP = 1
LOC_MSIX = 2

_LOC_TEXT = ("No steering table available", "Steering table in TPH capability structure",
             "Steering table in MSI-X table", "Reserved steering table location")


class TphCap(Capability):
    """TPH Requester: ``st_entries`` Steering Tags at ``st_location``; entries in the capability are RW."""

    cap_id: ClassVar[int] = 0x17
    extended: ClassVar[bool] = True
    name: ClassVar[str] = "TPH Requester"

    # pci_regs.h PCI_TPH_*
    CAP: ClassVar[int] = 0x04
    CTRL: ClassVar[int] = 0x08
    TABLE: ClassVar[int] = 0x0C  # PCI_TPH_BASE_SIZEOF
    CAP_ST_NS: ClassVar[int] = 0x00000001
    CAP_ST_IV: ClassVar[int] = 0x00000002
    CAP_ST_DS: ClassVar[int] = 0x00000004
    CAP_EXT_TPH: ClassVar[int] = 0x00000100
    CTRL_MODE_SEL: ClassVar[int] = 0x00000007
    CTRL_REQ_EN: ClassVar[int] = 0x00000300
    MAX_CAP_ENTRIES: ClassVar[int] = 64  # a table inside the capability holds at most 64 entries
    MAX_MSIX_ENTRIES: ClassVar[int] = 2048  # the 11-bit size field

    def __init__(self, *, interrupt_vector: bool = True, device_specific: bool = False, extended: bool = False,
                 st_location: int = LOC_NONE, st_entries: int = 0, version: int = 1) -> None:
        if st_location == LOC_NONE:
            if st_entries:
                raise VfiolabError(f"TPH: {st_entries} ST entries but no steering table location")
        elif st_location == LOC_CAP:
            if not 1 <= st_entries <= self.MAX_CAP_ENTRIES:
                raise VfiolabError(f"TPH: {st_entries} ST entries in the capability (1..{self.MAX_CAP_ENTRIES})")
        elif st_location == LOC_MSIX:
            if not 1 <= st_entries <= self.MAX_MSIX_ENTRIES:
                raise VfiolabError(f"TPH: {st_entries} ST entries in the MSI-X table (1..{self.MAX_MSIX_ENTRIES})")
        else:
            raise VfiolabError(f"TPH: ST table location {st_location} is not 0 (none), 1 (capability) or 2 (MSI-X)")
        self.cap = (self.CAP_ST_NS | (self.CAP_ST_IV if interrupt_vector else 0)
                    | (self.CAP_ST_DS if device_specific else 0) | (self.CAP_EXT_TPH if extended else 0)
                    | st_location << 9 | (st_entries - 1 if st_entries else 0) << 16)
        self.st_location, self.st_entries, self.version = st_location, st_entries, version

    def table_bytes(self) -> int:
        """Bytes of ST table inside the capability, padded to a dword."""
        return (2 * self.st_entries + 3) & ~3 if self.st_location == LOC_CAP else 0

    def length(self) -> int:
        return self.TABLE + self.table_bytes()

    def build(self, cs: ConfigSpace, off: int) -> None:
        cs.init_reg(off + self.CAP, 4, self.cap)
        cs.init_reg(off + self.CTRL, 4, 0, rw=self.CTRL_MODE_SEL | self.CTRL_REQ_EN)
        if self.st_location == LOC_CAP:
            # ST Lower [7:0] RW; ST Upper [15:8] RW only with Extended TPH Requester support.
            entry_rw = 0xFFFF if self.cap & self.CAP_EXT_TPH else 0x00FF
            n = self.st_entries
            rw = int.from_bytes(entry_rw.to_bytes(2, "little") * n, "little")
            cs.init_reg(off + self.TABLE, 2 * n, 0, rw=rw)


# pciutils ls-ecaps.c cap_tph: name only below -vv; nothing more when the capability dword is missing.
@register_decoder(TphCap.cap_id, extended=True)
def decode_tph(ctx: DecodeContext, out: Out, where: int) -> None:
    """``Transaction Processing Hints`` and, at -vv, the supported modes and table location."""
    out.write("Transaction Processing Hints\n")
    if ctx.verbose < 2 or not ctx.fetch(where + TphCap.CAP, 4):
        return
    cap = ctx.r32(where + TphCap.CAP)
    for mask, text in ((TphCap.CAP_ST_IV, "Interrupt vector mode supported"),
                       (TphCap.CAP_ST_DS, "Device specific mode supported"),
                       (TphCap.CAP_EXT_TPH, "Extended requester support")):
        if cap & mask:
            out.write(f"\t\t{text}\n")
    out.write(f"\t\t{_LOC_TEXT[(cap >> 9) & 3]}\n")
