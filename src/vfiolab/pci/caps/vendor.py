"""Vendor-specific capability (ID 0x09): a length byte and an opaque body, lspci's decode.

pciutils 3.9 ``ls-caps-vendor.c`` decodes only virtio's layout (vendor 1af4, devices 1000-107f:
``struct virtio_pci_cap`` in Linux ``include/uapi/linux/virtio_pci.h``); everything else prints as
``Vendor Specific Information: Len=xx <?>``.
"""

from __future__ import annotations

from typing import ClassVar, Final

from vfiolab.pci.caps.base import Capability, register_decoder
from vfiolab.pci.config import ConfigSpace
from vfiolab.pci.decode import DecodeContext, Out

LEN: Final = 2
VIRTIO_VENDOR: Final = 0x1AF4
VIRTIO_DEVICES: Final = range(0x1000, 0x1080)

# virtio_pci_cap.cfg_type values and the names lspci gives them.
VIRTIO_PCI_CAP_COMMON_CFG: Final = 1
VIRTIO_PCI_CAP_NOTIFY_CFG: Final = 2
VIRTIO_PCI_CAP_ISR_CFG: Final = 3
VIRTIO_PCI_CAP_DEVICE_CFG: Final = 4
_VIRTIO_NAMES: Final = {1: "CommonCfg", 2: "Notify", 3: "ISR", 4: "DeviceCfg"}


class VendorCap(Capability):
    """Vendor-specific: byte 2 holds the structure length (header included), the body is read-only."""

    cap_id: ClassVar[int] = 0x09
    name: ClassVar[str] = "Vendor Specific Information"

    def __init__(self, body: bytes = b"") -> None:
        if 3 + len(body) > 0xC0:
            raise ValueError(f"VendorCap: {3 + len(body)} bytes do not fit in the standard capability area")
        self.body = bytes(body)

    @classmethod
    def virtio(cls, cfg_type: int, bar: int, offset: int, length: int, multiplier: int | None = None,
               cap_id: int = 0) -> VendorCap:
        """A ``struct virtio_pci_cap`` (plus notify_off_multiplier for the Notify type)."""
        body = bytes([cfg_type, bar, cap_id, 0, 0]) + offset.to_bytes(4, "little") + length.to_bytes(4, "little")
        if multiplier is not None:
            body += multiplier.to_bytes(4, "little")
        return cls(body)

    def length(self) -> int:
        return 3 + len(self.body)

    def build(self, cs: ConfigSpace, off: int) -> None:
        cs.init_reg(off + LEN, 1, self.length())
        if self.body:
            cs.set(off + 3, len(self.body), int.from_bytes(self.body, "little"))


def _virtio(ctx: DecodeContext, out: Out, where: int, cap: int) -> bool:
    # ls-caps-vendor.c show_vendor_caps_virtio(): False means "fall back to the generic text".
    length = cap & 0xFF
    kind = (cap >> 8) & 0xFF
    if length < 16 or not ctx.fetch(where, length):
        return False
    out.write(f"VirtIO: {_VIRTIO_NAMES.get(kind, '<unknown>')}\n")
    if ctx.verbose < 2:
        return True
    text = f"\t\tBAR={ctx.r8(where + 4)} offset={ctx.r32(where + 8):08x} size={ctx.r32(where + 12):08x}"
    if kind == VIRTIO_PCI_CAP_NOTIFY_CFG and length >= 20:
        text += f" multiplier={ctx.r32(where + 16):08x}"
    out.write(text + "\n")
    return True


@register_decoder(0x09)
def decode_vendor(ctx: DecodeContext, out: Out, where: int) -> None:
    """ls-caps-vendor.c show_vendor_caps()."""
    cap = ctx.r16(where + 2)
    out.write("Vendor Specific Information: ")
    if ctx.r16(0) == VIRTIO_VENDOR and ctx.r16(2) in VIRTIO_DEVICES and _virtio(ctx, out, where, cap):
        return
    out.write(f"Len={cap & 0xFF:02x} <?>\n")
