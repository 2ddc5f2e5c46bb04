"""Shareable device memory: a memfd mapped into this process, so a BAR (or a DMA buffer) the device keeps in
it can be mmap'd by whoever hosts the device — vfio-pci's mmap in-process, a vfio-user client through the fd.

The memory is ``os.memfd_create`` + ``ftruncate`` + ``mmap.mmap(MAP_SHARED)``; ``u8`` is a numpy view of the
whole mapping that never moves.  ``fd`` and a file offset are what another process needs to map it.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from typing import Final

import numpy as np
import numpy.typing as npt

from vfiolab.errors import VfiolabError

PAGE: Final = mmap.PAGESIZE


class SharedMemory:
    """``size`` bytes of memfd-backed memory, zero filled, mapped shared into this process."""

    def __init__(self, size: int, name: str = "vfiolab-device") -> None:
        if size <= 0 or size % PAGE:
            raise VfiolabError(f"shared memory {name!r}: size {size:#x} is not a positive multiple of {PAGE:#x}")
        self.name = name
        self.size = size
        self.fd = os.memfd_create(name, os.MFD_CLOEXEC)
        try:
            os.ftruncate(self.fd, size)
            self._mm: mmap.mmap | None = mmap.mmap(self.fd, size, mmap.MAP_SHARED,
                                                    mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError:
            os.close(self.fd)
            raise
        self.u8: npt.NDArray[np.uint8] = np.frombuffer(self._mm, dtype=np.uint8)
        """The whole mapping as bytes (writable; device and host see the same pages)."""

    @property
    def closed(self) -> bool:
        return self._mm is None

    def read(self, off: int, n: int) -> bytes:
        """``n`` bytes at ``off``."""
        self._check(off, n)
        return self.u8[off:off + n].tobytes()

    def write(self, off: int, data: bytes | bytearray | memoryview) -> None:
        """Store ``data`` at ``off``."""
        n = len(data)
        self._check(off, n)
        self.u8[off:off + n] = np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)

    def fill(self, value: int = 0) -> None:
        """Set every byte (a reset of device RAM)."""
        self.u8[:] = value

    def _check(self, off: int, n: int) -> None:
        if off < 0 or n < 0 or off + n > self.size:
            raise VfiolabError(f"{self.name}: access [{off:#x}, +{n:#x}) outside {self.size:#x} bytes")

    def map(self, offset: int = 0, length: int | None = None, *, writable: bool = True) -> mmap.mmap:
        """A new shared mapping of [offset, offset+length) of the file (what mmap(2) of the fd gives)."""
        length = self.size - offset if length is None else length
        if offset < 0 or offset % PAGE or length <= 0 or offset + length > self.size:
            raise VfiolabError(f"{self.name}: cannot map [{offset:#x}, +{length:#x}) of {self.size:#x} bytes")
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
        return mmap.mmap(self.fd, length, mmap.MAP_SHARED, prot, offset=offset)

    def close(self) -> None:
        """Unmap and close the fd (mappings made with :meth:`map` stay valid until closed themselves)."""
        if self._mm is None:
            return
        self.u8 = np.empty(0, dtype=np.uint8)
        try:
            self._mm.close()
        except BufferError:
            pass  # a caller still holds a view of the mapping: it goes when that view goes
        self._mm = None
        os.close(self.fd)
        self.fd = -1

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown may have torn down os/mmap
            self.close()

    def __repr__(self) -> str:
        return f"<SharedMemory {self.name} {self.size:#x} fd={self.fd}>"
