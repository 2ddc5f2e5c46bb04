"""One module per PCI capability: its registers (builder) and its lspci decoder."""

from vfiolab.pci.caps.base import (
    EXT_DECODERS,
    STD_DECODERS,
    Capability,
    CapabilityList,
    register_decoder,
)

__all__ = ["EXT_DECODERS", "STD_DECODERS", "Capability", "CapabilityList", "register_decoder"]
