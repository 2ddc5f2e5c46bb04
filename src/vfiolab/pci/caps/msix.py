"""MSI-X capability (ID 0x11): table and PBA located in BARs, Enable/Function Mask RW, lspci's decode.

Layout from Linux ``include/uapi/linux/pci_regs.h`` (PCI_MSIX_*); text as pciutils 3.9 ``ls-caps.c``
cap_msix().
"""

from __future__ import annotations

from typing import ClassVar, Final

from vfiolab.pci.caps.base import Capability, register_decoder
from vfiolab.pci.config import ConfigSpace
from vfiolab.pci.decode import DecodeContext, Out, flag

FLAGS: Final = 2
TABLE: Final = 4
PBA: Final = 8

FLAGS_QSIZE: Final = 0x07FF
FLAGS_MASKALL: Final = 0x4000
FLAGS_ENABLE: Final = 0x8000
BIR_MASK: Final = 0x7
ENTRY_SIZE: Final = 16  # bytes per MSI-X table entry (PCI_MSIX_ENTRY_SIZE)


class MsixCap(Capability):
    """MSI-X: Table Size, Table/PBA Offset+BIR read-only; MSI-X Enable and Function Mask read-write."""

    cap_id: ClassVar[int] = 0x11
    name: ClassVar[str] = "MSI-X"

    def __init__(self, table_size: int, table_bar: int = 0, table_offset: int = 0, pba_bar: int | None = None,
                 pba_offset: int | None = None) -> None:
        if not 1 <= table_size <= 2048:
            raise ValueError(f"MsixCap: table_size must be 1..2048, not {table_size}")
        if pba_bar is None:
            pba_bar = table_bar  # default: the PBA shares the table's BAR ...
        if pba_offset is None:
            # ... and starts right after the table there (16-byte entries keep it 8-byte aligned).
            pba_offset = table_offset + table_size * ENTRY_SIZE if pba_bar == table_bar else 0
        for what, bar, offset in (("table", table_bar, table_offset), ("PBA", pba_bar, pba_offset)):
            if not 0 <= bar <= 5:
                raise ValueError(f"MsixCap: {what} BIR {bar} is not a BAR (0..5)")
            if offset & 7 or not 0 <= offset <= 0xFFFFFFF8:
                raise ValueError(f"MsixCap: {what} offset {offset:#x} must be 8-byte aligned and 32-bit")
        self.table_size = table_size
        self.table_bar = table_bar
        self.table_offset = table_offset
        self.pba_bar = pba_bar
        self.pba_offset = pba_offset

    def length(self) -> int:
        return 12

    @property
    def pba_size(self) -> int:
        """Bytes the Pending Bit Array occupies (one bit per vector, in whole qwords)."""
        return ((self.table_size + 63) // 64) * 8

    def build(self, cs: ConfigSpace, off: int) -> None:
        cs.init_reg(off + FLAGS, 2, self.table_size - 1, rw=FLAGS_ENABLE | FLAGS_MASKALL)
        cs.init_reg(off + TABLE, 4, self.table_offset | self.table_bar)
        cs.init_reg(off + PBA, 4, self.pba_offset | self.pba_bar)

    def enabled(self, cs: ConfigSpace) -> bool:
        """MSI-X Enable as software left it."""
        return bool(cs.get(self.offset + FLAGS, 2) & FLAGS_ENABLE)

    def function_masked(self, cs: ConfigSpace) -> bool:
        """Function Mask as software left it."""
        return bool(cs.get(self.offset + FLAGS, 2) & FLAGS_MASKALL)


@register_decoder(0x11)
def decode_msix(ctx: DecodeContext, out: Out, where: int) -> None:
    """ls-caps.c cap_msix()."""
    cap = ctx.r16(where + FLAGS)
    out.write(f"MSI-X: Enable{flag(cap, FLAGS_ENABLE)} Count={(cap & FLAGS_QSIZE) + 1} "
              f"Masked{flag(cap, FLAGS_MASKALL)}\n")
    if ctx.verbose < 2 or not ctx.fetch(where + TABLE, 8):
        return
    for label, reg in (("Vector table", TABLE), ("PBA", PBA)):
        v = ctx.r32(where + reg)
        out.write(f"\t\t{label}: BAR={v & BIR_MASK} offset={v & ~BIR_MASK & 0xFFFFFFFF:08x}\n")
