"""Capability model shared by every capability file: placement, linking and the decoder registry.

A capability knows its registers (``build`` writes reset values and write attributes into a
``ConfigSpace``) and, in the same file, how lspci prints it (a decoder registered with
``register_decoder``).  ``CapabilityList`` places capabilities and links the chains as hardware
does: standard ones from 0x40 via the Capabilities Pointer, extended ones from 0x100.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

from vfiolab.pci import regs
from vfiolab.pci.config import ConfigSpace

if TYPE_CHECKING:
    from vfiolab.pci.decode import DecodeContext, Out


class Capability:
    """One standard or extended capability structure of a function."""

    cap_id: ClassVar[int]
    extended: ClassVar[bool] = False
    name: ClassVar[str] = "capability"
    version: int = 1  # extended capabilities only

    offset: int = -1  # set when placed

    def length(self) -> int:
        """Bytes the structure occupies, header included."""
        raise NotImplementedError

    def build(self, cs: ConfigSpace, off: int) -> None:
        """Write the body registers (reset values and attributes); the header is written by the list."""
        raise NotImplementedError

    def attach(self, cs: ConfigSpace, off: int) -> None:
        """Install write/read hooks for runtime behaviour (optional)."""


class CapabilityList:
    """The capability chains of one function's configuration space."""

    STD_START = 0x40
    STD_END = 0x100

    def __init__(self, cs: ConfigSpace) -> None:
        self.cs = cs
        self.std: list[Capability] = []
        self.ext: list[Capability] = []
        self._std_next = self.STD_START
        self._ext_next = regs.EXT_CAP_START

    def add(self, cap: Capability, offset: int | None = None) -> Capability:
        """Place ``cap`` (at ``offset`` or the next free dword-aligned spot) and link it into its chain."""
        size = cap.length()
        if cap.extended:
            if self.cs.size < 4096:
                raise ValueError(f"{cap.name}: extended capabilities need a 4 KiB config space")
            off = self._ext_next if offset is None else offset
            if off < regs.EXT_CAP_START or off & 3 or off + size > self.cs.size:
                raise ValueError(f"{cap.name}: bad extended capability offset {off:#x}")
            self._check_overlap(self.ext, off, size)
            self._ext_next = max(self._ext_next, (off + size + 3) & ~3)
            chain = self.ext
        else:
            off = self._std_next if offset is None else offset
            if off < self.STD_START or off & 3 or off + size > self.STD_END:
                raise ValueError(f"{cap.name}: bad capability offset {off:#x} (size {size})")
            self._check_overlap(self.std, off, size)
            self._std_next = max(self._std_next, (off + size + 3) & ~3)
            chain = self.std
        cap.offset = off
        chain.append(cap)
        cap.build(self.cs, off)
        self._relink(chain)
        cap.attach(self.cs, off)
        return cap

    @staticmethod
    def _check_overlap(chain: list[Capability], off: int, size: int) -> None:
        for other in chain:
            if off < other.offset + other.length() and other.offset < off + size:
                raise ValueError(f"capability at {off:#x} overlaps {other.name} at {other.offset:#x}")

    def _relink(self, chain: list[Capability]) -> None:
        # Chains are linked in insertion order, like hardware that lists capabilities in ROM order.
        cs = self.cs
        if chain is self.std:
            cs.set(regs.CAPABILITY_LIST, 1, chain[0].offset if chain else 0)
            cs.set(regs.STATUS, 2, cs.get(regs.STATUS, 2) | regs.STATUS_CAP_LIST)
            for i, cap in enumerate(chain):
                nxt = chain[i + 1].offset if i + 1 < len(chain) else 0
                cs.set(cap.offset, 1, cap.cap_id)
                cs.set(cap.offset + 1, 1, nxt)
        else:
            for i, cap in enumerate(chain):
                nxt = chain[i + 1].offset if i + 1 < len(chain) else 0
                cs.set(cap.offset, 4, regs.ext_cap_header(cap.cap_id, cap.version, nxt))

    def find(self, cap_id: int, extended: bool = False) -> Capability | None:
        """First capability with this ID in the given chain."""
        for cap in self.ext if extended else self.std:
            if cap.cap_id == cap_id:
                return cap
        return None


# ---------------------------------------------------------------------------- decoder registry
Decoder = Callable[["DecodeContext", "Out", int], None]
"""decoder(ctx, out, where): print the capability at ``where`` after lspci's ``Capabilities: [..] `` prefix."""

STD_DECODERS: dict[int, Decoder] = {}
EXT_DECODERS: dict[int, Decoder] = {}


def register_decoder(cap_id: int, extended: bool = False) -> Callable[[Decoder], Decoder]:
    """Class-free registration of an lspci decoder for one capability ID."""

    def deco(fn: Decoder) -> Decoder:
        table = EXT_DECODERS if extended else STD_DECODERS
        if cap_id in table:
            raise RuntimeError(f"two decoders for {'extended ' if extended else ''}capability {cap_id:#x}")
        table[cap_id] = fn
        return fn

    return deco
