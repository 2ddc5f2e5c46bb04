"""Vendor-Specific Extended Capability (PCIe Base 6.0 §7.9.5): builder and lspci decoder.

The structure is a header dword (VSEC ID, revision, length in bytes, all RO) followed by a body whose
meaning only the vendor knows; the builder takes the body bytes and, optionally, which body bits are RW.
"""

from __future__ import annotations

from typing import ClassVar

from vfiolab.errors import VfiolabError
from vfiolab.pci.caps.base import Capability, register_decoder
from vfiolab.pci.config import ConfigSpace
from vfiolab.pci.decode import DecodeContext, Out

MAX_LENGTH = 0xFFF  # the 12-bit VSEC Length field


def vendor_header(low16: int, rev: int, length: int) -> int:
    """Pack a VSEC/DVSEC header dword: ID or vendor [15:0], Rev [19:16], Length [31:20] (pci_regs.h)."""
    return (low16 & 0xFFFF) | ((rev & 0xF) << 16) | ((length & 0xFFF) << 20)


def write_body(cs: ConfigSpace, off: int, body: bytes, body_rw: bytes | None) -> None:
    """Write raw vendor body bytes with an optional per-bit RW mask (everything else RO)."""
    if not body:
        return
    rw = int.from_bytes(body_rw, "little") if body_rw is not None else 0
    cs.init_reg(off, len(body), int.from_bytes(body, "little"), rw=rw)


def check_body(what: str, body: bytes, body_rw: bytes | None, header_len: int) -> None:
    """Reject bodies whose RW mask does not match or whose total length overflows the 12-bit field."""
    if body_rw is not None and len(body_rw) != len(body):
        raise VfiolabError(f"{what}: body_rw has {len(body_rw)} bytes, body has {len(body)}")
    if header_len + len(body) > MAX_LENGTH:
        raise VfiolabError(f"{what}: {header_len + len(body)} bytes exceed the 12-bit length field "
                           f"(max {MAX_LENGTH})")


class VsecCap(Capability):
    """A VSEC: header at +4 (``PCI_VNDR_HEADER``), vendor body from +8."""

    cap_id: ClassVar[int] = 0x0B
    extended: ClassVar[bool] = True
    name: ClassVar[str] = "Vendor-Specific Extended"

    HEADER: ClassVar[int] = 0x04
    BODY: ClassVar[int] = 0x08

    def __init__(self, vsec_id: int, rev: int = 0, body: bytes = b"", *, body_rw: bytes | None = None,
                 version: int = 1) -> None:
        if not 0 <= vsec_id <= 0xFFFF:
            raise VfiolabError(f"VSEC: ID {vsec_id:#x} does not fit in 16 bits")
        if not 0 <= rev <= 0xF:
            raise VfiolabError(f"VSEC: revision {rev} does not fit in 4 bits")
        check_body("VSEC", body, body_rw, self.BODY)
        self.vsec_id, self.rev, self.body, self.body_rw = vsec_id, rev, bytes(body), body_rw
        self.version = version

    def vsec_length(self) -> int:
        """The VSEC Length field: bytes of the whole structure, headers included."""
        return self.BODY + len(self.body)

    def length(self) -> int:
        return (self.vsec_length() + 3) & ~3

    def build(self, cs: ConfigSpace, off: int) -> None:
        cs.init_reg(off + self.HEADER, 4, vendor_header(self.vsec_id, self.rev, self.vsec_length()))
        write_body(cs, off + self.BODY, self.body, self.body_rw)


# pciutils ls-ecaps.c cap_evendor: the header is printed at every verbosity; the body never is.
@register_decoder(VsecCap.cap_id, extended=True)
def decode_vsec(ctx: DecodeContext, out: Out, where: int) -> None:
    """``Vendor Specific Information: ID=.. Rev=.. Len=.. <?>``."""
    out.write("Vendor Specific Information: ")
    if not ctx.fetch(where + VsecCap.HEADER, 4):
        out.write("<unreadable>\n")
        return
    hdr = ctx.r32(where + VsecCap.HEADER)
    out.write(f"ID={hdr & 0xFFFF:04x} Rev={(hdr >> 16) & 0xF} Len={hdr >> 20:03x} <?>\n")
