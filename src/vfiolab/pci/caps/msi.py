"""MSI capability (ID 0x05): 32/64-bit message address, optional per-vector masking, lspci's decode.

Layout from Linux ``include/uapi/linux/pci_regs.h`` (PCI_MSI_*); structure lengths as
``drivers/vfio/pci/vfio_pci_config.c`` vfio_msi_cap_len() computes them; text as pciutils 3.9
``ls-caps.c`` cap_msi().
"""

from __future__ import annotations

from typing import ClassVar, Final

from vfiolab.pci.caps.base import Capability, register_decoder
from vfiolab.pci.config import ConfigSpace
from vfiolab.pci.decode import DecodeContext, Out, flag

FLAGS: Final = 2
ADDRESS_LO: Final = 4
ADDRESS_HI: Final = 8  # 64-bit only
DATA_32: Final = 8
DATA_64: Final = 12
MASK_32: Final = 12
MASK_64: Final = 16
PENDING_32: Final = 16
PENDING_64: Final = 20

FLAGS_ENABLE: Final = 0x0001
FLAGS_QMASK: Final = 0x000E  # Multiple Message Capable (log2)
FLAGS_QSIZE: Final = 0x0070  # Multiple Message Enable (log2)
FLAGS_64BIT: Final = 0x0080
FLAGS_MASKBIT: Final = 0x0100


class MsiCap(Capability):
    """MSI: Enable and Multiple Message Enable RW, address/data RW, mask bits RW per implemented vector."""

    cap_id: ClassVar[int] = 0x05
    name: ClassVar[str] = "MSI"

    def __init__(self, vectors: int = 1, addr64: bool = True, per_vector_mask: bool = False) -> None:
        if vectors not in (1, 2, 4, 8, 16, 32):
            raise ValueError(f"MsiCap: vectors must be a power of two from 1 to 32, not {vectors}")
        self.vectors = vectors
        self.addr64 = addr64
        self.per_vector_mask = per_vector_mask

    def length(self) -> int:
        # vfio_msi_cap_len(): 10 bytes, +4 for the upper address, +10 for mask and pending bits.
        return 10 + (4 if self.addr64 else 0) + (10 if self.per_vector_mask else 0)

    @property
    def data_off(self) -> int:
        return DATA_64 if self.addr64 else DATA_32

    @property
    def mask_off(self) -> int:
        return MASK_64 if self.addr64 else MASK_32

    def build(self, cs: ConfigSpace, off: int) -> None:
        mmc = self.vectors.bit_length() - 1
        ctrl = mmc << 1 | (FLAGS_64BIT if self.addr64 else 0) | (FLAGS_MASKBIT if self.per_vector_mask else 0)
        cs.init_reg(off + FLAGS, 2, ctrl, rw=FLAGS_ENABLE | FLAGS_QSIZE)
        cs.init_reg(off + ADDRESS_LO, 4, 0, rw=0xFFFFFFFC)  # dword-aligned: bits 1:0 read 0
        if self.addr64:
            cs.init_reg(off + ADDRESS_HI, 4, 0, rw=0xFFFFFFFF)
        cs.init_reg(off + self.data_off, 2, 0, rw=0xFFFF)
        if self.per_vector_mask:
            implemented = (1 << self.vectors) - 1
            cs.init_reg(off + self.mask_off, 4, 0, rw=implemented)
            cs.init_reg(off + self.mask_off + 4, 4, 0)  # Pending bits: set by the function, RO

    # ---- what software programmed (for device models)
    def enabled(self, cs: ConfigSpace) -> bool:
        """MSI Enable as software left it."""
        return bool(cs.get(self.offset + FLAGS, 2) & FLAGS_ENABLE)

    def enabled_vectors(self, cs: ConfigSpace) -> int:
        """Vectors granted by Multiple Message Enable."""
        return 1 << ((cs.get(self.offset + FLAGS, 2) & FLAGS_QSIZE) >> 4)

    def message(self, cs: ConfigSpace) -> tuple[int, int]:
        """(address, data) of vector 0."""
        addr = cs.get(self.offset + ADDRESS_LO, 4)
        if self.addr64:
            addr |= cs.get(self.offset + ADDRESS_HI, 4) << 32
        return addr, cs.get(self.offset + self.data_off, 2)

    def set_pending(self, cs: ConfigSpace, vector: int, pending: bool) -> None:
        """The function sets/clears a Pending bit (hardware side; software cannot write it)."""
        if not self.per_vector_mask or not 0 <= vector < self.vectors:
            raise ValueError(f"MSI vector {vector} has no pending bit")
        reg = self.offset + self.mask_off + 4
        val = cs.get(reg, 4)
        cs.set(reg, 4, val | 1 << vector if pending else val & ~(1 << vector))


@register_decoder(0x05)
def decode_msi(ctx: DecodeContext, out: Out, where: int) -> None:
    """ls-caps.c cap_msi()."""
    cap = ctx.r16(where + FLAGS)
    out.write(f"MSI: Enable{flag(cap, FLAGS_ENABLE)} Count={1 << ((cap & FLAGS_QSIZE) >> 4)}/"
              f"{1 << ((cap & FLAGS_QMASK) >> 1)} Maskable{flag(cap, FLAGS_MASKBIT)} "
              f"64bit{flag(cap, FLAGS_64BIT)}\n")
    if ctx.verbose < 2:
        return
    is64 = bool(cap & FLAGS_64BIT)
    data_off = DATA_64 if is64 else DATA_32
    if not ctx.fetch(where + ADDRESS_LO, data_off + 2 - ADDRESS_LO):
        return
    hi = f"{ctx.r32(where + ADDRESS_HI):08x}" if is64 else ""
    out.write(f"\t\tAddress: {hi}{ctx.r32(where + ADDRESS_LO):08x}  Data: {ctx.r16(where + data_off):04x}\n")
    if cap & FLAGS_MASKBIT:
        mask_off = MASK_64 if is64 else MASK_32
        if not ctx.fetch(where + mask_off, 8):
            return
        out.write(f"\t\tMasking: {ctx.r32(where + mask_off):08x}  Pending: {ctx.r32(where + mask_off + 4):08x}\n")
