"""Guest RAM as the VMM sees it: the frames behind its mapping, read and written a batch of pages at a
time with numpy (never a Python loop per page), and fingerprinted page by page so that two vfiolab
instances can compare their memories without shipping them.

A page fingerprint is 64 bits: each little-endian u64 word is multiplied by a per-position odd key,
xor-shifted and multiplied again (a non-linear mix, so structured differences such as a flipped top bit
in every word do not cancel), and the 512 mixed words are summed modulo 2**64.
"""

from __future__ import annotations

import hashlib
from typing import Final

import numpy as np
import numpy.typing as npt

from vfiolab.memory import PAGE_SIZE, PhysMemory, UserProcess
from vfiolab.memory.phys import frame_run

_WORDS: Final = PAGE_SIZE // 8
_KEYS: Final = np.random.default_rng(0x5EED_F1A9).integers(0, 2**63, size=(2, _WORDS), dtype=np.uint64) * 2 + 1
_BLOCK: Final = 4096
"""Pages fingerprinted per numpy pass (bounds the temporaries to 16 MiB)."""


def fingerprints(pages: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint64]:
    """One 64-bit fingerprint per row of ``pages`` (n x 4096 bytes)."""
    words = pages.view("<u8").astype(np.uint64, copy=False)
    out = np.empty(len(pages), dtype=np.uint64)
    for lo in range(0, len(pages), _BLOCK):
        x = words[lo:lo + _BLOCK] * _KEYS[0]
        x ^= x >> np.uint64(29)
        x *= _KEYS[1]
        out[lo:lo + _BLOCK] = x.sum(axis=1, dtype=np.uint64)
    return out


class GuestRam:
    """``size`` bytes of guest RAM at ``va`` in ``process`` (the VMM holds its own pin on the pages, as
    its mapping keeps them)."""

    def __init__(self, process: UserProcess, mem: PhysMemory, va: int, size: int) -> None:
        self.process, self.mem, self.va, self.size = process, mem, va, size
        self.npages = size // PAGE_SIZE
        self.frames = process.pin_pages(va, size, write=True)
        run = frame_run(self.frames)
        self._run = None if run is None else (run.start, run.stop)

    def pages(self) -> npt.NDArray[np.uint8]:
        """All pages (npages x 4096): a view when the frames are one run, else a copy."""
        if self._run is not None:
            lo, hi = self._run
            return self.mem.view(lo * PAGE_SIZE, (hi - lo) * PAGE_SIZE, writable=False).reshape(-1, PAGE_SIZE)
        return self.mem.u8[self.frames]

    def read(self, index: npt.NDArray[np.int64]) -> npt.NDArray[np.uint8]:
        """Pages ``index`` (page numbers), copied."""
        return self.mem.u8[self.frames[index]]

    def write(self, index: npt.NDArray[np.int64], data: npt.NDArray[np.uint8]) -> None:
        """Store ``data`` (n x 4096) into pages ``index``."""
        self.mem.u8[self.frames[index]] = data

    def fill_pattern(self, salt: int) -> None:
        """Give every page distinct, recognisable contents (what a booted guest leaves behind)."""
        words = np.arange(_WORDS, dtype=np.uint64)
        for lo in range(0, self.npages, _BLOCK):
            idx = np.arange(lo, min(lo + _BLOCK, self.npages), dtype=np.uint64)
            block = (idx[:, None] << np.uint64(20)) ^ words[None, :] ^ np.uint64(salt * 0x9E3779B97F4A7C15 % 2**64)
            self.write(idx.astype(np.int64), block.astype("<u8").view(np.uint8))

    def fingerprints(self) -> npt.NDArray[np.uint64]:
        """:func:`fingerprints` of every page."""
        return fingerprints(self.pages())

    def sha256(self) -> str:
        """SHA-256 of the whole RAM, in page order."""
        h = hashlib.sha256()
        pages = self.pages()
        for lo in range(0, self.npages, _BLOCK):
            h.update(np.ascontiguousarray(pages[lo:lo + _BLOCK]).data)
        return h.hexdigest()

    def release(self) -> None:
        """Drop the VMM's pin."""
        if len(self.frames):
            self.process.unpin_pages(self.frames)
            self.frames = self.frames[:0]


__all__ = ["GuestRam", "fingerprints"]
