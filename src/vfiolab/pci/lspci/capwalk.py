"""The capability walks lspci does: the standard chain, then (only after a PCI Express or PCI-X
capability) the extended chain, each capability printed by its registered decoder.

Rules from pciutils 3.9 ``ls-caps.c`` show_caps() and ``ls-ecaps.c`` show_ext_caps(): loop and
broken-chain detection, ``<access denied>`` when a dump stops short, name-only and generic texts for
IDs lspci 3.9 does not decode.  Decoders live one per file in ``vfiolab.pci.caps`` and register
themselves on import; every module of that package is imported here, so new files are picked up, and
``legacy_caps`` fills in lspci's decoders for conventional-PCI capabilities nobody builds.
"""

from __future__ import annotations

import importlib
import io
import pkgutil
from dataclasses import dataclass
from typing import Final

import vfiolab.pci.caps as caps_pkg
from vfiolab.pci.caps.base import EXT_DECODERS, STD_DECODERS, Decoder
from vfiolab.pci.decode import DecodeContext
from vfiolab.pci.lspci import legacy_caps, legacy_ecaps
from vfiolab.pci.lspci.device import Device

# IDs lspci 3.9 names without decoding (ls-caps.c / ls-ecaps.c switch cases that only print a name).
STD_NAME_ONLY: Final = {
    0x00: "Null",
    0x06: "CompactPCI hot-swap <?>",
    0x0B: "CompactPCI central resource control <?>",
    0x0C: "Hot-plug capable",
    0x0E: "AGP3 <?>",
    0x0F: "Secure device <?>",
}
EXT_NAME_ONLY: Final = {
    0x00: "Null",
    0x04: "Power Budgeting <?>",
    0x06: "Root Complex Internal Link <?>",
    0x08: "Multi-Function Virtual Channel <?>",
    0x0A: "Root Complex Register Block <?>",
    0x11: "Multi-Root I/O Virtualization <?>",
    0x16: "Dynamic Power Allocation <?>",
    0x1A: "Protocol Multiplexing <?>",
    0x1C: "LN Requester <?>",
    0x20: "PCI Express over M_PHY <?>",
    0x21: "FRS Queueing <?>",
    0x22: "Readiness Time Reporting <?>",
    0x25: "Data Link Feature <?>",
    0x26: "Physical Layer 16.0 GT/s <?>",
    0x27: "Lane Margining at the Receiver <?>",
    0x28: "Hierarchy ID <?>",
    0x29: "Native PCIe Enclosure Management <?>",
}

CAP_ID_PCIX: Final = 0x07
CAP_ID_EXP: Final = 0x10
STATUS_CAP_LIST: Final = 0x10

_loaded = False


def load_decoders() -> None:
    """Import every module of ``vfiolab.pci.caps`` once so that all decoders are registered."""
    global _loaded
    if _loaded:
        return
    for info in pkgutil.iter_modules(caps_pkg.__path__):
        importlib.import_module(f"{caps_pkg.__name__}.{info.name}")
    # Conventional-PCI capabilities the model never builds still print as lspci prints them.
    legacy_caps.register_missing()
    legacy_ecaps.register_missing()
    _loaded = True


@dataclass
class CapText:
    """One ``Capabilities:`` entry: the prefix lspci prints, the decoder's text, and what it was."""

    prefix: str
    text: str
    offset: int = -1
    cap_id: int = -1
    extended: bool = False
    version: int | None = None
    """Extended capabilities only."""

    @property
    def is_capability(self) -> bool:
        """False for lspci's ``<access denied>``/``<chain looped>``/``<chain broken>`` entries."""
        return self.cap_id >= 0


def _decode(ctx: DecodeContext, decoders: dict[int, Decoder], names: dict[int, str], cap_id: int,
            where: int, generic: str) -> str:
    dec = decoders.get(cap_id)
    if dec is not None:
        out = io.StringIO()
        dec(ctx, out, where)
        return out.getvalue()
    name = names.get(cap_id)
    return name + "\n" if name is not None else generic


def walk_caps(d: Device, ctx: DecodeContext, ptr_reg: int) -> list[CapText]:
    """show_caps(): the standard chain from the pointer at ``ptr_reg``, then the extended chain."""
    load_decoders()
    out: list[CapText] = []
    can_have_ext = False
    if d.rd16(0x06) & STATUS_CAP_LIST:
        seen: set[int] = set()
        where = d.rd8(ptr_reg) & ~3
        while where:
            if not d.fetch(where, 4):
                out.append(CapText("\tCapabilities: ", "<access denied>\n"))
                break
            cap_id, nxt, cap = d.cfg[where], d.cfg[where + 1] & ~3, d.rd16(where + 2)
            prefix = f"\tCapabilities: [{where:02x}] "
            if where in seen:
                out.append(CapText(prefix, "<chain looped>\n"))
                break
            seen.add(where)
            if cap_id == 0xFF:
                out.append(CapText(prefix, "<chain broken>\n"))
                break
            if cap_id == CAP_ID_EXP:
                # ls-caps.c cap_express() returns the port type that the extended decoders receive.
                ctx.pcie_type = (cap >> 4) & 0xF
                ctx.is_pcie = True
            if cap_id in (CAP_ID_EXP, CAP_ID_PCIX):
                can_have_ext = True
            text = _decode(ctx, STD_DECODERS, STD_NAME_ONLY, cap_id, where,
                           f"Capability ID {cap_id:#x} [{cap:04x}]\n")
            out.append(CapText(prefix, text, where, cap_id))
            where = nxt
    if can_have_ext:
        out.extend(walk_ext_caps(d, ctx))
    return out


def walk_ext_caps(d: Device, ctx: DecodeContext) -> list[CapText]:
    """ls-ecaps.c show_ext_caps(): from 0x100 until a zero/all-ones header, a loop, or the dump's end."""
    out: list[CapText] = []
    seen: set[int] = set()
    where = 0x100
    while True:
        if not d.fetch(where, 4):
            break
        header = d.rd32(where)
        if header in (0, 0xFFFFFFFF):
            break
        cap_id, version = header & 0xFFFF, (header >> 16) & 0xF
        prefix = f"\tCapabilities: [{where:03x}{f' v{version}' if ctx.verbose > 1 else ''}] "
        if where in seen:
            out.append(CapText(prefix, "<chain looped>\n"))
            break
        seen.add(where)
        text = _decode(ctx, EXT_DECODERS, EXT_NAME_ONLY, cap_id, where, f"Extended Capability ID {cap_id:#x}\n")
        out.append(CapText(prefix, text, where, cap_id, True, version))
        where = (header >> 20) & ~3
        if not where:
            break
    return out
