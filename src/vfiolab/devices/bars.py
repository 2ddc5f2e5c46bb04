"""What answers inside a device's BARs: register windows (read/write callbacks), RAM windows (shareable
memory a host may mmap) and holes (reads return all ones, writes are dropped, like an address the device
does not decode).

A BAR is a list of non-overlapping regions at 8-byte aligned offsets, so a naturally aligned access of 1, 2,
4 or 8 bytes always lands in exactly one region.  Byte-range helpers split longer or unaligned accesses into
naturally aligned pieces (largest first), the way a CPU or ``vfio_pci_core_do_io_rw()`` issues them; RAM is
copied in one slice.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from typing import Final

from vfiolab.devices.shm import PAGE, SharedMemory
from vfiolab.errors import VfiolabError
from vfiolab.pci.function import Bar

ReadFn = Callable[[int, int], int]
"""read(offset_in_region, size) -> value."""
WriteFn = Callable[[int, int, int], None]
"""write(offset_in_region, size, value)."""

ACCESS_SIZES: Final = (1, 2, 4, 8)


def check_access(offset: int, size: int, limit: int, what: str) -> None:
    """A single access: 1, 2, 4 or 8 bytes, naturally aligned, inside [0, limit)."""
    if size not in ACCESS_SIZES:
        raise VfiolabError(f"{what}: access size {size} is not 1, 2, 4 or 8")
    if offset % size:
        raise VfiolabError(f"{what}: {size}-byte access at {offset:#x} is not naturally aligned")
    if offset < 0 or offset + size > limit:
        raise VfiolabError(f"{what}: access [{offset:#x}, +{size}) outside {limit:#x} bytes")


def split_access(offset: int, length: int, max_width: int = 8) -> list[tuple[int, int]]:
    """Naturally aligned (offset, size) pieces covering [offset, offset+length), widest first."""
    out: list[tuple[int, int]] = []
    pos, end = offset, offset + length
    while pos < end:
        left = end - pos
        for width in (8, 4, 2, 1):
            if width <= max_width and left >= width and pos % width == 0:
                break
        out.append((pos, width))
        pos += width
    return out


class Region:
    """One window of a BAR: [offset, offset+size) relative to the BAR."""

    mmappable: bool = False

    def __init__(self, offset: int, size: int, name: str) -> None:
        if offset < 0 or size <= 0 or offset % 8 or size % 8:
            raise VfiolabError(f"BAR region {name!r}: offset {offset:#x} and size {size:#x} must be 8-byte aligned")
        self.offset, self.size, self.name = offset, size, name

    @property
    def end(self) -> int:
        return self.offset + self.size

    def read(self, off: int, size: int) -> int:
        """A naturally aligned access at ``off`` inside the region."""
        raise NotImplementedError

    def write(self, off: int, size: int, value: int) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} [{self.offset:#x}, +{self.size:#x})>"


class MmioRegion(Region):
    """Registers: every access calls the device."""

    def __init__(self, offset: int, size: int, name: str, read: ReadFn, write: WriteFn) -> None:
        super().__init__(offset, size, name)
        self._read, self._write = read, write

    def read(self, off: int, size: int) -> int:
        return self._read(off, size) & ((1 << (8 * size)) - 1)

    def write(self, off: int, size: int, value: int) -> None:
        self._write(off, size, value & ((1 << (8 * size)) - 1))


class RamRegion(Region):
    """Memory in the BAR, kept in shareable memory: a host may map it and see the device's stores."""

    def __init__(self, offset: int, size: int, name: str, shm: SharedMemory | None = None, shm_offset: int = 0) -> None:
        super().__init__(offset, size, name)
        if shm is None:
            shm = SharedMemory(-(-size // PAGE) * PAGE, name)
        if shm_offset < 0 or shm_offset + size > shm.size:
            raise VfiolabError(f"RAM region {name!r}: [{shm_offset:#x}, +{size:#x}) outside its memory")
        self.shm, self.shm_offset = shm, shm_offset
        # mmap works on whole pages: the window is mappable when it and its file offset are page aligned.
        self.mmappable = offset % PAGE == 0 and size % PAGE == 0 and shm_offset % PAGE == 0

    @property
    def u8(self):  # type: ignore[no-untyped-def]
        """The region's bytes as a numpy view."""
        return self.shm.u8[self.shm_offset:self.shm_offset + self.size]

    def read(self, off: int, size: int) -> int:
        p = self.shm_offset + off
        return int.from_bytes(self.shm.u8[p:p + size].tobytes(), "little")

    def write(self, off: int, size: int, value: int) -> None:
        p = self.shm_offset + off
        self.shm.u8[p:p + size] = memoryview(value.to_bytes(size, "little"))


class DeviceBar:
    """A BAR of the device: its PCI definition and the regions answering inside it."""

    def __init__(self, bar: Bar) -> None:
        self.bar = bar
        self.index = bar.index
        self.size = bar.size
        self.regions: list[Region] = []
        self._starts: list[int] = []

    @property
    def is_mem(self) -> bool:
        return self.bar.kind != "io"

    def add(self, region: Region) -> Region:
        """Place ``region`` (it must fit the BAR and overlap nothing)."""
        if region.end > self.size:
            raise VfiolabError(f"BAR {self.index}: {region!r} ends beyond the {self.size:#x}-byte BAR")
        i = bisect.bisect_right(self._starts, region.offset)
        for other in self.regions[max(i - 1, 0):i + 1]:
            if region.offset < other.end and other.offset < region.end:
                raise VfiolabError(f"BAR {self.index}: {region!r} overlaps {other!r}")
        self.regions.insert(i, region)
        self._starts.insert(i, region.offset)
        return region

    def find(self, offset: int) -> Region | None:
        """The region holding byte ``offset`` (None: a hole)."""
        i = bisect.bisect_right(self._starts, offset) - 1
        if i >= 0 and offset < self.regions[i].end:
            return self.regions[i]
        return None

    # ------------------------------------------------------------------ single accesses
    def read(self, offset: int, size: int) -> int:
        """One naturally aligned read; a hole reads all ones."""
        check_access(offset, size, self.size, f"BAR {self.index}")
        region = self.find(offset)
        if region is None:
            return (1 << (8 * size)) - 1
        return region.read(offset - region.offset, size)

    def write(self, offset: int, size: int, value: int) -> None:
        """One naturally aligned write; a hole drops it."""
        check_access(offset, size, self.size, f"BAR {self.index}")
        region = self.find(offset)
        if region is not None:
            region.write(offset - region.offset, size, value & ((1 << (8 * size)) - 1))

    # ------------------------------------------------------------------ byte ranges
    def read_bytes(self, offset: int, length: int, max_width: int = 8) -> bytes:
        """[offset, offset+length) as aligned accesses (RAM copied whole)."""
        self._range(offset, length)
        out = bytearray()
        pos, end = offset, offset + length
        while pos < end:
            region = self.find(pos)
            if isinstance(region, RamRegion):
                stop = min(end, region.end)
                p = region.shm_offset + pos - region.offset
                out += region.shm.u8[p:p + stop - pos].tobytes()
                pos = stop
                continue
            stop = self._piece_end(pos, end, region)
            for off, size in split_access(pos, stop - pos, max_width):
                out += self.read(off, size).to_bytes(size, "little")
            pos = stop
        return bytes(out)

    def write_bytes(self, offset: int, data: bytes | bytearray | memoryview, max_width: int = 8) -> None:
        """Store ``data`` at ``offset`` as aligned accesses (RAM copied whole)."""
        raw = bytes(data)
        self._range(offset, len(raw))
        pos, end = offset, offset + len(raw)
        while pos < end:
            region = self.find(pos)
            if isinstance(region, RamRegion):
                stop = min(end, region.end)
                region.shm.write(region.shm_offset + pos - region.offset, raw[pos - offset:stop - offset])
                pos = stop
                continue
            stop = self._piece_end(pos, end, region)
            for off, size in split_access(pos, stop - pos, max_width):
                self.write(off, size, int.from_bytes(raw[off - offset:off - offset + size], "little"))
            pos = stop

    def _piece_end(self, pos: int, end: int, region: Region | None) -> int:
        if region is not None:
            return min(end, region.end)
        i = bisect.bisect_right(self._starts, pos)
        nxt = self._starts[i] if i < len(self._starts) else self.size
        return min(end, nxt)

    def _range(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise VfiolabError(f"BAR {self.index}: [{offset:#x}, +{length:#x}) outside {self.size:#x} bytes")

    # ------------------------------------------------------------------ mapping
    def mmap_areas(self) -> list[tuple[int, int]]:
        """(offset, size) of every page-aligned RAM window: what a host may map (a sparse mmap list)."""
        out: list[tuple[int, int]] = []
        for r in self.regions:
            if r.mmappable:
                if out and out[-1][0] + out[-1][1] == r.offset:
                    out[-1] = (out[-1][0], out[-1][1] + r.size)
                else:
                    out.append((r.offset, r.size))
        return out

    @property
    def fully_mappable(self) -> bool:
        """The whole BAR is RAM that can be mapped."""
        return self.mmap_areas() == [(0, self.size)]

    def backing(self, offset: int, length: int) -> tuple[SharedMemory, int]:
        """The memory and file offset behind [offset, offset+length) when one RAM window holds it all."""
        region = self.find(offset)
        if not isinstance(region, RamRegion) or not region.mmappable or offset + length > region.end:
            raise VfiolabError(f"BAR {self.index}: [{offset:#x}, +{length:#x}) is not one mappable RAM window")
        return region.shm, region.shm_offset + offset - region.offset

    def ram_regions(self) -> list[RamRegion]:
        return [r for r in self.regions if isinstance(r, RamRegion)]

    def __repr__(self) -> str:
        return f"<DeviceBar {self.index} {self.bar.kind} {self.size:#x} {self.regions}>"
