"""PCI configuration space of one function: bytes plus per-bit write semantics.

Every byte carries masks saying how software writes affect its bits (PCIe Base spec §7.4 register
attributes): RO (no mask), RW, RW1C, RW1S, HwInit (writable once by firmware, then RO) and sticky
(kept across a non-fundamental reset).  Devices hook dwords to react to writes (BAR sizing needs no
hook: the RW mask alone makes "write all ones, read the mask" work, as in hardware).
"""

from __future__ import annotations

import sys
import weakref
from array import array
from collections.abc import Callable
from typing import Final, Protocol

CFG_SIZE: Final = 4096
LEGACY_SIZE: Final = 256

# Reset kinds, weakest first.  "fundamental" also clears sticky bits and re-arms HwInit.
RESET_FLR: Final = "flr"
RESET_HOT: Final = "hot"
RESET_FUNDAMENTAL: Final = "fundamental"

WriteHook = Callable[[int, int, int, int], None]
"""hook(offset, size, old_dword, new_dword): called after a software write lands in a hooked dword."""

_SIZE_MASK: Final = (0, 0xFF, 0xFFFF, 0, 0xFFFFFFFF)     # by access size

ReadHook = Callable[[int], int]
"""hook(dword_offset) -> current dword value: for registers whose value is computed on read."""


def _zero_words(n: int) -> array[int]:
    """``n`` zero dwords (unsigned 32-bit)."""
    return array("I", bytes(4 * n))


class _Words(Protocol):
    """Little-endian words of a config space indexed by offset // width (what the access path uses)."""

    def __getitem__(self, i: int) -> int: ...

    def __setitem__(self, i: int, value: int) -> None: ...


class _LeWords:
    """Little-endian words of a bytearray on a big-endian host (memoryview casts are native-endian)."""

    __slots__ = ("data", "width")

    def __init__(self, data: bytearray, width: int) -> None:
        self.data, self.width = data, width

    def __getitem__(self, i: int) -> int:
        w = self.width
        return int.from_bytes(self.data[i * w:i * w + w], "little")

    def __setitem__(self, i: int, value: int) -> None:
        w = self.width
        self.data[i * w:i * w + w] = value.to_bytes(w, "little")


def _word_views(data: bytearray) -> tuple[_Words, _Words]:
    """16- and 32-bit views of ``data``: one index per config access instead of slicing and converting."""
    if sys.byteorder == "little":
        mv = memoryview(data)
        return mv.cast("H"), mv.cast("I")
    return _LeWords(data, 2), _LeWords(data, 4)


class _AttrSet:
    """Write attributes of a whole config space, shared by every space built with the same ones (a machine
    has thousands of functions but a handful of kinds): one copy in memory and in the CPU caches."""

    __slots__ = ("__weakref__", "fields")

    def __init__(self, fields: tuple[bytearray, bytearray, bytearray, bytearray, bytearray,
                                     array[int], array[int], array[int], array[int], bytearray]) -> None:
        self.fields = fields


_ATTR_SETS: weakref.WeakValueDictionary[bytes, _AttrSet] = weakref.WeakValueDictionary()
"""Attribute sets in use, by their bytes (rw, w1c, w1s, hwinit, sticky)."""


class ConfigAccessError(ValueError):
    """A config access with a bad size, alignment or offset (Linux: PCIBIOS_BAD_REGISTER_NUMBER)."""


class ConfigSpace:
    """4 KiB (or 256-byte conventional) configuration space with per-bit write attributes."""

    __slots__ = (
        "_armed32",
        "_armed_own",
        "_attrs",
        "_data",
        "_defaults",
        "_hwinit32",
        "_read_hooks",
        "_rw32",
        "_special",
        "_special_reset",
        "_w1c32",
        "_w1s32",
        "_w16",
        "_w32",
        "_write_hooks",
        "hwinit",
        "rw",
        "size",
        "sticky",
        "w1c",
        "w1s",
    )

    def __init__(self, size: int = CFG_SIZE) -> None:
        if size not in (LEGACY_SIZE, CFG_SIZE):
            raise ValueError(f"config space size must be 256 or 4096, not {size}")
        self.size = size
        self._data = bytearray(size)
        self._w16, self._w32 = _word_views(self._data)
        self.rw = bytearray(size)
        self.w1c = bytearray(size)
        self.w1s = bytearray(size)
        self.hwinit = bytearray(size)
        self.sticky = bytearray(size)
        # After seal() the attribute arrays (these five and the dword words below) may be shared with
        # other config spaces (_attrs set): set_attrs() copies them first.  Read them, never change them.
        self._attrs: _AttrSet | None = None
        # The write path works on dword-wide attribute words (one lookup per access instead of
        # five byte-slice conversions); _special flags dwords with any RW1C/RW1S/armed-HwInit bit.
        # They are arrays, not lists: the cyclic GC never walks their 1024 entries (with ten thousand
        # functions, lists made every full collection visit tens of millions of references).
        n = size >> 2
        self._rw32 = _zero_words(n)
        self._w1c32 = _zero_words(n)
        self._w1s32 = _zero_words(n)
        self._armed32 = _zero_words(n)
        self._special = bytearray(n)
        self._hwinit32 = _zero_words(n)     # what a fundamental reset re-arms
        self._special_reset = bytearray(n)  # _special right after a fundamental reset
        # The HwInit state is the reset one (_armed32 is _hwinit32, _special is _special_reset) until a
        # write consumes an armed field: only then does this space get copies of its own.
        self._armed_own = True
        self._defaults: bytes | None = None
        self._write_hooks: dict[int, list[WriteHook]] = {}
        self._read_hooks: dict[int, ReadHook] = {}

    @property
    def data(self) -> bytearray:
        """The register bytes as the hardware holds them (change them in place; the length is fixed)."""
        return self._data

    @data.setter
    def data(self, value: bytes | bytearray) -> None:
        if len(value) != self.size:
            raise ValueError(f"config space data must be {self.size} bytes, not {len(value)}")
        self._data[:] = value

    # ------------------------------------------------------------------ model (hardware) side
    def get(self, off: int, size: int) -> int:
        """Read bits as the hardware holds them (no read hooks, no access checks)."""
        return int.from_bytes(self._data[off:off + size], "little")

    def set(self, off: int, size: int, value: int) -> None:
        """Set bits as the hardware does, ignoring write attributes."""
        self._data[off:off + size] = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")

    def set_attrs(self, off: int, size: int, *, rw: int = 0, w1c: int = 0, w1s: int = 0,
                  hwinit: int = 0, sticky: int = 0) -> None:
        """Declare the write attributes of a register's bits (bits not named are RO)."""
        self._own_attrs()
        for mask, arr in ((rw, self.rw), (w1c, self.w1c), (w1s, self.w1s), (hwinit, self.hwinit),
                          (sticky, self.sticky)):
            arr[off:off + size] = mask.to_bytes(size, "little")
        for dwi in range(off >> 2, (off + size + 3) >> 2):
            base = dwi << 2
            self._rw32[dwi] = int.from_bytes(self.rw[base:base + 4], "little")
            self._w1c32[dwi] = int.from_bytes(self.w1c[base:base + 4], "little")
            self._w1s32[dwi] = int.from_bytes(self.w1s[base:base + 4], "little")
            # Re-arm HwInit only for the bytes being declared, not their dword neighbours.
            lo, hi = max(off, base) - base, min(off + size, base + 4) - base
            region = ((1 << (8 * (hi - lo))) - 1) << (8 * lo)
            hw = int.from_bytes(self.hwinit[base:base + 4], "little")
            self._hwinit32[dwi] = hw
            self._armed32[dwi] = (self._armed32[dwi] & ~region) | (hw & region)
            self._update_special(dwi)
            self._special_reset[dwi] = 1 if (self._w1c32[dwi] | self._w1s32[dwi] | hw) else 0

    def _own_attrs(self) -> None:
        """Give this space its own attribute arrays (and HwInit state) before they change."""
        self._own_armed()
        if self._attrs is None:
            return
        self.rw, self.w1c, self.w1s = bytearray(self.rw), bytearray(self.w1c), bytearray(self.w1s)
        self.hwinit, self.sticky = bytearray(self.hwinit), bytearray(self.sticky)
        self._rw32, self._w1c32, self._w1s32 = self._rw32[:], self._w1c32[:], self._w1s32[:]
        self._hwinit32, self._special_reset = self._hwinit32[:], bytearray(self._special_reset)
        self._attrs = None

    def _own_armed(self) -> None:
        if not self._armed_own:
            self._armed32, self._special = self._armed32[:], bytearray(self._special)
            self._armed_own = True

    def _share_attrs(self) -> None:
        """Use the machine-wide copy of this space's attribute arrays (made from these if it is the first)."""
        if self._attrs is not None:
            return
        fields = (self.rw, self.w1c, self.w1s, self.hwinit, self.sticky,
                  self._rw32, self._w1c32, self._w1s32, self._hwinit32, self._special_reset)
        key = b"".join(fields[:5])
        attrs = _ATTR_SETS.get(key)
        if attrs is None:
            attrs = _ATTR_SETS[key] = _AttrSet(fields)
        (self.rw, self.w1c, self.w1s, self.hwinit, self.sticky,
         self._rw32, self._w1c32, self._w1s32, self._hwinit32, self._special_reset) = attrs.fields
        self._attrs = attrs
        if not self._armed_own:
            self._armed32, self._special = self._hwinit32, self._special_reset

    def _update_special(self, dwi: int) -> None:
        self._special[dwi] = 1 if (self._w1c32[dwi] | self._w1s32[dwi] | self._armed32[dwi]) else 0

    def init_reg(self, off: int, size: int, value: int, *, rw: int = 0, w1c: int = 0, w1s: int = 0,
                 hwinit: int = 0, sticky: int = 0) -> None:
        """Set a register's reset value and its write attributes in one call."""
        self.set(off, size, value)
        self.set_attrs(off, size, rw=rw, w1c=w1c, w1s=w1s, hwinit=hwinit, sticky=sticky)

    def add_write_hook(self, off: int, size: int, hook: WriteHook) -> None:
        """Call ``hook`` after any software write touching [off, off+size)."""
        for dw in range(off >> 2, (off + size + 3) >> 2):
            self._write_hooks.setdefault(dw, []).append(hook)

    def set_read_hook(self, off: int, hook: ReadHook) -> None:
        """Compute dword ``off`` (aligned) on every software read."""
        self._read_hooks[off >> 2] = hook

    def seal(self) -> None:
        """Record the current bytes as the reset values (call once the function is built)."""
        self._defaults = bytes(self._data)
        self._share_attrs()
        if self._armed32 == self._hwinit32 and self._special == self._special_reset:
            self._armed32, self._special = self._hwinit32, self._special_reset
            self._armed_own = False

    def reset(self, kind: str = RESET_FLR) -> None:
        """Return to reset values; sticky bits survive all but a fundamental reset."""
        if self._defaults is None:
            return
        if kind == RESET_FUNDAMENTAL:
            self._data[:] = self._defaults
            self._armed32, self._special = self._hwinit32, self._special_reset
            self._armed_own = False
            return
        # Keep sticky bits, restore everything else.  Done on the whole space at once as ints.
        n = self.size
        cur = int.from_bytes(self._data, "little")
        dflt = int.from_bytes(self._defaults, "little")
        st = int.from_bytes(self.sticky, "little")
        self._data[:] = ((cur & st) | (dflt & ~st)).to_bytes(n, "little")

    # ------------------------------------------------------------------ software (config cycle) side
    def _check(self, off: int, size: int) -> None:
        if size not in (1, 2, 4):
            raise ConfigAccessError(f"config access size {size} (must be 1, 2 or 4)")
        if off & (size - 1):
            raise ConfigAccessError(f"config access at {off:#x} not aligned to {size}")
        if off < 0 or off + size > self.size:
            raise ConfigAccessError(f"config offset {off:#x} outside {self.size}-byte space")

    def read(self, off: int, size: int) -> int:
        """A configuration read cycle of 1, 2 or 4 naturally aligned bytes."""
        if size not in (1, 2, 4) or off & (size - 1) or off < 0 or off + size > self.size:
            self._check(off, size)
        if self._read_hooks:
            hook = self._read_hooks.get(off >> 2)
            if hook is not None:
                dw = hook(off & ~3)
                return (dw >> (8 * (off & 3))) & ((1 << (8 * size)) - 1)
        if size == 4:
            return self._w32[off >> 2]
        if size == 2:
            return self._w16[off >> 1]
        return self._data[off]

    def write(self, off: int, size: int, value: int) -> None:
        """A configuration write cycle: each bit follows its attribute (RO, RW, RW1C, RW1S, HwInit)."""
        if size not in (1, 2, 4) or off & (size - 1) or off < 0 or off + size > self.size:
            self._check(off, size)
        # Worked on the whole dword: bits outside the written bytes are neither RW nor hit by value.
        dwi = off >> 2
        w32 = self._w32
        old = w32[dwi]
        # RW bits take the value, the rest stay.
        if size == 4:
            m = 0xFFFFFFFF
            value &= m
            new = old ^ ((old ^ value) & self._rw32[dwi])
        else:
            sh = (off & 3) << 3
            m = _SIZE_MASK[size] << sh
            value = (value << sh) & m
            new = old ^ ((old ^ value) & self._rw32[dwi] & m)
        if self._special[dwi]:
            new &= ~(value & self._w1c32[dwi])
            new |= value & self._w1s32[dwi]
            armed = self._armed32[dwi] & m
            if armed:
                # HwInit: firmware may write the field once after reset; later writes are ignored.
                new = (new & ~armed) | (value & armed)
                self._own_armed()
                self._armed32[dwi] &= ~m
                self._update_special(dwi)
        if new != old:
            w32[dwi] = new
        if self._write_hooks:
            hooks = self._write_hooks.get(dwi)
            if hooks:
                for hook in hooks:
                    hook(off, size, old, new)

    def clone(self) -> ConfigSpace:
        """A copy at the current state for an identical function (e.g. another VF of the same PF).

        The write-attribute arrays are shared (copied by whichever space changes them first); register
        bytes are copied, the HwInit state too unless it is the reset one; hooks are not copied (the
        clone's capabilities install their own).
        """
        self._share_attrs()
        cs = ConfigSpace.__new__(ConfigSpace)
        # Every slot (one left out would raise AttributeError on first use, not go wrong silently).
        cs.size, cs._defaults, cs._attrs = self.size, self._defaults, self._attrs
        cs.rw, cs.w1c, cs.w1s, cs.hwinit, cs.sticky = self.rw, self.w1c, self.w1s, self.hwinit, self.sticky
        cs._rw32, cs._w1c32, cs._w1s32 = self._rw32, self._w1c32, self._w1s32
        cs._hwinit32, cs._special_reset = self._hwinit32, self._special_reset
        cs._data = bytearray(self._data)
        cs._w16, cs._w32 = _word_views(cs._data)
        cs._armed32, cs._special, cs._armed_own = self._armed32, self._special, False
        if self._armed_own:
            cs._own_armed()
        cs._write_hooks, cs._read_hooks = {}, {}
        return cs

    def dump(self, length: int | None = None) -> bytes:
        """The bytes software would read, dword by dword (read hooks applied)."""
        n = self.size if length is None else min(length, self.size)
        if not self._read_hooks:
            return bytes(self._data) if n == self.size else bytes(memoryview(self._data)[:n])
        out = bytearray(self._data[:n])
        for dwi, hook in self._read_hooks.items():
            base = dwi << 2
            if base < n:
                out[base:base + 4] = hook(base).to_bytes(4, "little")[: n - base]
        return bytes(out)
