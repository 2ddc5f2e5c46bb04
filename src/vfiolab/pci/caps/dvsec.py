"""Designated Vendor-Specific Extended Capability (PCIe Base 6.0 §7.9.6): builder and lspci decoder.

A DVSEC is a header dword, DVSEC Header 1 (vendor, revision, length: RO), DVSEC Header 2 (DVSEC ID:
RO) and a body defined by the vendor.  ``DvsecCap`` builds a raw body; vendor-specific structures
(CXL, ``caps/cxl.py``) subclass it.  The decoder prints the header line and hands the body to the
decoder registered for the vendor (``register_dvsec_decoder``), as lspci hands CXL to its CXL code.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from vfiolab.errors import VfiolabError
from vfiolab.pci.caps.base import Capability, register_decoder
from vfiolab.pci.caps.vsec import check_body, vendor_header, write_body
from vfiolab.pci.config import ConfigSpace
from vfiolab.pci.decode import DecodeContext, Out

HEADER1 = 0x04  # pci_regs.h PCI_DVSEC_HEADER1
HEADER2 = 0x08  # pci_regs.h PCI_DVSEC_HEADER2
BODY = 0x0A


class DvsecCap(Capability):
    """A DVSEC with a raw body (and optional RW mask); subclasses override ``dvsec_length``/``build_body``."""

    cap_id: ClassVar[int] = 0x23
    extended: ClassVar[bool] = True
    name: ClassVar[str] = "Designated Vendor-Specific"

    def __init__(self, vendor: int, dvsec_id: int, revision: int = 0, body: bytes = b"", *,
                 body_rw: bytes | None = None, version: int = 1) -> None:
        if not 0 <= vendor <= 0xFFFF:
            raise VfiolabError(f"DVSEC: vendor {vendor:#x} does not fit in 16 bits")
        if not 0 <= dvsec_id <= 0xFFFF:
            raise VfiolabError(f"DVSEC: ID {dvsec_id:#x} does not fit in 16 bits")
        if not 0 <= revision <= 0xF:
            raise VfiolabError(f"DVSEC: revision {revision} does not fit in 4 bits")
        check_body("DVSEC", body, body_rw, BODY)
        self.vendor, self.dvsec_id, self.revision = vendor, dvsec_id, revision
        self.body, self.body_rw = bytes(body), body_rw
        self.version = version

    def dvsec_length(self) -> int:
        """The DVSEC Length field: bytes of the whole structure, headers included."""
        return BODY + len(self.body)

    def length(self) -> int:
        return (self.dvsec_length() + 3) & ~3

    def build(self, cs: ConfigSpace, off: int) -> None:
        cs.init_reg(off + HEADER1, 4, vendor_header(self.vendor, self.revision, self.dvsec_length()))
        cs.init_reg(off + HEADER2, 2, self.dvsec_id)
        self.build_body(cs, off)

    def build_body(self, cs: ConfigSpace, off: int) -> None:
        """Write the registers after DVSEC Header 2 (``off`` is the capability offset)."""
        write_body(cs, off + BODY, self.body, self.body_rw)


class LspciInternalBug(VfiolabError):
    """lspci dies here: it read a config byte it never fetched (lspci.c ``check_conf_range``).

    The text printed before the failing read stays in the output; the message is lspci's own.
    """


@dataclass
class DvsecView:
    """One DVSEC as lspci's decoder sees it: header fields plus the bytes lspci has fetched so far."""

    ctx: DecodeContext
    where: int
    vendor: int
    revision: int
    length: int
    dvsec_id: int
    present_end: int
    """lspci has fetched [where, present_end): the extended header dword and the two DVSEC headers."""

    def fetch_all(self) -> bool:
        """lspci's ``config_fetch(where, len)`` of the whole structure; widens what may be read."""
        if not self.ctx.fetch(self.where, self.length):
            return False
        self.present_end = max(self.present_end, self.where + self.length)
        return True

    def _check(self, rel: int, size: int) -> int:
        pos = self.where + rel
        if pos < self.where or pos + size > self.present_end:
            bad = max(pos, self.present_end)
            raise LspciInternalBug(f"Internal bug: Accessing non-read configuration byte at position {bad:x}")
        return pos

    def r8(self, rel: int) -> int:
        return self.ctx.r8(self._check(rel, 1))

    def r16(self, rel: int) -> int:
        return self.ctx.r16(self._check(rel, 2))

    def r32(self, rel: int) -> int:
        return self.ctx.r32(self._check(rel, 4))


VendorDecoder = Callable[[DvsecView, Out], None]
"""decoder(view, out): print after ``...Rev=%d Len=%d`` (the text starts with its own separator)."""

_VENDOR_DECODERS: dict[int, tuple[int, VendorDecoder]] = {}
# Vendors whose body decoder lives in a module built on this one; loaded on first use so the DVSEC
# decoder never prints " <?>" for them just because nobody imported that module yet.
_VENDOR_MODULES: dict[int, str] = {0x1E98: "vfiolab.pci.caps.cxl"}


def register_dvsec_decoder(vendor: int, min_length: int) -> Callable[[VendorDecoder], VendorDecoder]:
    """Decode DVSECs of ``vendor`` whose DVSEC Length is at least ``min_length``."""

    def deco(fn: VendorDecoder) -> VendorDecoder:
        if vendor in _VENDOR_DECODERS:
            raise RuntimeError(f"two DVSEC decoders for vendor {vendor:#06x}")
        _VENDOR_DECODERS[vendor] = (min_length, fn)
        return fn

    return deco


def _vendor_decoder(vendor: int) -> tuple[int, VendorDecoder] | None:
    if vendor not in _VENDOR_DECODERS and vendor in _VENDOR_MODULES:
        importlib.import_module(_VENDOR_MODULES[vendor])
    return _VENDOR_DECODERS.get(vendor)


# pciutils ls-ecaps.c cap_dvsec: header line at every verbosity; the ID is the low 16 bits of the dword
# at +8; only CXL (vendor 1e98, length >= 16) has a body decoder, anything else ends in " <?>".
@register_decoder(DvsecCap.cap_id, extended=True)
def decode_dvsec(ctx: DecodeContext, out: Out, where: int) -> None:
    """``Designated Vendor-Specific: Vendor=.. ID=.. Rev=.. Len=..`` then the vendor's decoder."""
    out.write("Designated Vendor-Specific: ")
    if not ctx.fetch(where + HEADER1, 8):
        out.write("<unreadable>\n")
        return
    hdr = ctx.r32(where + HEADER1)
    view = DvsecView(ctx, where, vendor=hdr & 0xFFFF, revision=(hdr >> 16) & 0xF, length=hdr >> 20,
                     dvsec_id=ctx.r16(where + HEADER2), present_end=where + BODY + 2)
    out.write(f"Vendor={view.vendor:04x} ID={view.dvsec_id:04x} Rev={view.revision} Len={view.length}")
    entry = _vendor_decoder(view.vendor)
    if entry is None or view.length < entry[0]:
        out.write(" <?>\n")
        return
    entry[1](view, out)
