"""The client memory a vfio-user server may reach: the DMA_MAP table.

Each region is an IOVA range with read/write permission.  A region that came with a file descriptor is
mmap'd (MAP_SHARED at the given file offset) and accessed directly; a region without one is reached through
DMA_READ / DMA_WRITE messages, which the caller supplies as a ``MessageDma`` (the table itself owns no socket).

Rules and errno follow libvfio-user's ``lib/dma.c`` (``dma_controller_add_region`` / ``_remove_region``) and
``lib/libvfio-user.c`` (``handle_dma_map`` / ``handle_dma_unmap``): an overlapping map is EINVAL, the exact
same map again (same file, offset and permission) succeeds without change, a full table is EINVAL, and an
unmap must name a mapped region exactly (ENOENT otherwise).  The table is thread safe: the lock is held while
bytes are copied to or from a mapping, so an unmap never races a copy, and released while a message transfer
waits for the client.
"""

from __future__ import annotations

import bisect
import errno
import mmap
import os
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Final

from vfiolab.devices.api import DmaError
from vfiolab.errors import UapiError
from vfiolab.vfio_user.protocol import DEFAULT_MAX_DMA_MAPS, DMA_MAP_FLAG_READ, DMA_MAP_FLAG_WRITE

PAGE: Final = mmap.PAGESIZE
U64: Final = 1 << 64

MessageRead = Callable[[int, int], bytes]
"""read(iova, length) through DMA_READ messages."""
MessageWrite = Callable[[int, memoryview], None]
"""write(iova, data) through DMA_WRITE messages."""


@dataclass
class DmaRegion:
    """One DMA_MAP: [iova, iova+size) with ``prot`` (DMA_MAP_FLAG_READ/WRITE bits).

    ``fd`` is the descriptor that came with the map (-1: none) and ``offset`` its file offset; ``mm`` is the
    mapping when the region is accessed directly (``delta`` = where the IOVA start sits inside it).
    """

    iova: int
    size: int
    prot: int
    offset: int = 0
    fd: int = -1
    mm: mmap.mmap | None = field(default=None, repr=False)
    delta: int = 0
    mapped: bool = True

    @property
    def end(self) -> int:
        return self.iova + self.size

    @property
    def readable(self) -> bool:
        return bool(self.prot & DMA_MAP_FLAG_READ)

    @property
    def writable(self) -> bool:
        return bool(self.prot & DMA_MAP_FLAG_WRITE)

    @property
    def direct(self) -> bool:
        """Bytes move through the mmap'd fd (else through DMA_READ/DMA_WRITE messages)."""
        return self.mm is not None

    def release(self) -> None:
        """Drop the mapping and close the fd (the server's references, before the unmap is answered)."""
        self.mapped = False
        if self.mm is not None:
            self.mm.close()
            self.mm = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class DmaTable:
    """The DMA regions one client mapped, sorted by IOVA."""

    def __init__(self, max_regions: int = DEFAULT_MAX_DMA_MAPS) -> None:
        self.max_regions = max_regions
        self.lock = threading.Lock()
        self._starts: list[int] = []
        self._regions: list[DmaRegion] = []
        self.direct_bytes = 0
        """Bytes copied through mappings so far."""

    # ------------------------------------------------------------------ map / unmap
    def map(self, iova: int, size: int, prot: int, fd: int = -1, offset: int = 0, *, direct: bool = True
            ) -> DmaRegion:
        """Add a region; the table owns ``fd`` from now on (closed here on any failure).

        ``direct=False`` keeps the fd but reaches the region through messages (libvfio-user's FILE_IO is
        not modelled; a client without shared memory simply sends no fd).
        """
        try:
            return self._map(iova, size, prot, fd, offset, direct)
        except BaseException:
            if fd >= 0:
                os.close(fd)
            raise

    def _map(self, iova: int, size: int, prot: int, fd: int, offset: int, direct: bool) -> DmaRegion:
        if size == 0 or iova + size > U64:
            raise UapiError(errno.EINVAL, f"DMA region [{iova:#x}, +{size:#x}) is empty or wraps")
        with self.lock:
            i = bisect.bisect_right(self._starts, iova) - 1
            for other in self._regions[max(i, 0):i + 2]:
                if other.iova == iova and other.size == size:
                    # lib/dma.c: the same map again is accepted when file, offset and permission agree.
                    if other.offset != offset or other.prot != prot or not _same_file(other.fd, fd):
                        raise UapiError(errno.EINVAL, f"DMA region [{iova:#x}, +{size:#x}) is already mapped "
                                                      "with another offset, file or permission")
                    if fd >= 0:
                        os.close(fd)
                    return other
                if iova < other.end and other.iova < iova + size:
                    raise UapiError(errno.EINVAL, f"DMA region [{iova:#x}, +{size:#x}) overlaps "
                                                  f"[{other.iova:#x}, +{other.size:#x})")
            if len(self._regions) >= self.max_regions:
                raise UapiError(errno.EINVAL, f"DMA table is full ({self.max_regions} regions)")
            region = DmaRegion(iova, size, prot, offset, fd)
            if fd >= 0 and direct and prot & (DMA_MAP_FLAG_READ | DMA_MAP_FLAG_WRITE):
                region.mm, region.delta = _mmap(fd, offset, size, prot)
            j = bisect.bisect_left(self._starts, iova)
            self._starts.insert(j, iova)
            self._regions.insert(j, region)
            return region

    def unmap(self, iova: int, size: int) -> DmaRegion:
        """Remove the region mapped exactly as [iova, iova+size) (ENOENT otherwise) and release it."""
        with self.lock:
            j = bisect.bisect_left(self._starts, iova)
            if j == len(self._starts) or self._starts[j] != iova or self._regions[j].size != size:
                raise UapiError(errno.ENOENT, f"no DMA region [{iova:#x}, +{size:#x}) to unmap")
            del self._starts[j]
            region = self._regions.pop(j)
            region.release()
            return region

    def unmap_all(self) -> int:
        """Remove every region (DMA_UNMAP with FLAG_ALL, or the client went away); returns how many."""
        with self.lock:
            regions, self._regions, self._starts = self._regions, [], []
            for region in regions:
                region.release()
            return len(regions)

    close = unmap_all

    def __len__(self) -> int:
        return len(self._regions)

    def __iter__(self) -> Iterator[DmaRegion]:
        with self.lock:
            return iter(list(self._regions))

    # ------------------------------------------------------------------ lookups
    def segments(self, iova: int, length: int, write: bool) -> list[tuple[DmaRegion, int, int]]:
        """(region, offset in region, length) pieces covering [iova, iova+length); DmaError for a hole or a
        region without the permission (the caller holds no lock; regions may go away right after)."""
        with self.lock:
            return self._segments(iova, length, write)

    def _segments(self, iova: int, length: int, write: bool) -> list[tuple[DmaRegion, int, int]]:
        out: list[tuple[DmaRegion, int, int]] = []
        pos, end = iova, iova + length
        i = bisect.bisect_right(self._starts, pos) - 1
        while pos < end:
            if i < 0 or i >= len(self._regions) or not self._regions[i].iova <= pos < self._regions[i].end:
                raise DmaError(iova, length, write, None, f"{pos:#x} is not mapped")
            region = self._regions[i]
            if not (region.writable if write else region.readable):
                raise DmaError(iova, length, write, None,
                               f"region [{region.iova:#x}, +{region.size:#x}) is not "
                               f"{'writable' if write else 'readable'}")
            n = min(end, region.end) - pos
            out.append((region, pos - region.iova, n))
            pos += n
            i += 1
        return out

    # ------------------------------------------------------------------ transfers
    def read(self, iova: int, length: int, message: MessageRead | None = None) -> bytes:
        """``length`` bytes at ``iova``: copied from mappings, fetched with ``message`` elsewhere."""
        if length <= 0:
            return b""
        out = bytearray(length)
        self.read_into(iova, memoryview(out), message)
        return bytes(out)

    def read_into(self, iova: int, out: memoryview, message: MessageRead | None = None) -> None:
        """Fill ``out`` (a writable byte view) from [iova, iova+len(out))."""
        length = len(out)
        done = 0
        for region, off, n in self.segments(iova, length, False):
            if not self._copy(region, off, out[done:done + n], False):
                if message is None:
                    raise DmaError(iova, length, False, None, "region has no fd and no message path")
                data = message(region.iova + off, n)
                if len(data) != n:
                    raise DmaError(iova, length, False, None, f"DMA_READ returned {len(data)} of {n} bytes")
                out[done:done + n] = data
            done += n

    def write(self, iova: int, data: bytes | bytearray | memoryview, message: MessageWrite | None = None) -> None:
        """Store ``data`` at ``iova`` (mappings directly, ``message`` elsewhere)."""
        view = memoryview(data).cast("B")
        done = 0
        for region, off, n in self.segments(iova, len(view), True):
            if not self._copy(region, off, view[done:done + n], True):
                if message is None:
                    raise DmaError(iova, len(view), True, None, "region has no fd and no message path")
                message(region.iova + off, view[done:done + n])
            done += n

    def _copy(self, region: DmaRegion, off: int, buf: memoryview, write: bool) -> bool:
        """Copy through the mapping under the lock; False when the region has none (use messages)."""
        with self.lock:
            mm = region.mm
            if mm is None:
                if not region.mapped:
                    raise DmaError(region.iova + off, len(buf), write, None, "region was unmapped")
                return False
            a = region.delta + off
            self.direct_bytes += len(buf)
            if write:
                mm[a:a + len(buf)] = buf
            else:
                with memoryview(mm) as mv:
                    buf[:] = mv[a:a + len(buf)]
            return True


def _same_file(a: int, b: int) -> bool:
    """Both absent, or the same open file (lib/fd_cache.c compares device and inode)."""
    if a < 0 or b < 0:
        return a < 0 and b < 0
    sa, sb = os.fstat(a), os.fstat(b)
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _mmap(fd: int, offset: int, size: int, prot: int) -> tuple[mmap.mmap, int]:
    """MAP_SHARED of [offset, offset+size) of ``fd``; the file must be a regular file that long (touching a
    page past its end would kill the server with SIGBUS)."""
    try:
        st = os.fstat(fd)
    except OSError as e:
        raise UapiError(e.errno or errno.EBADF, f"DMA region fd: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise UapiError(errno.EINVAL, "DMA region fd is not a regular file (memfd, shm or hugetlbfs)")
    if offset + size > st.st_size:
        raise UapiError(errno.EINVAL, f"DMA region [{offset:#x}, +{size:#x}) of the file goes past its end "
                                      f"({st.st_size:#x} bytes)")
    base = offset - offset % PAGE
    delta = offset - base
    mprot = (mmap.PROT_READ if prot & DMA_MAP_FLAG_READ else 0) | (
        mmap.PROT_WRITE if prot & DMA_MAP_FLAG_WRITE else 0)
    try:
        mm = mmap.mmap(fd, size + delta, mmap.MAP_SHARED, mprot | mmap.PROT_READ, offset=base)
    except (OSError, ValueError) as e:
        err = e.errno if isinstance(e, OSError) and e.errno else errno.EINVAL
        raise UapiError(err, f"cannot mmap the DMA region: {e}") from None
    return mm, delta


__all__ = ["DmaRegion", "DmaTable", "MessageRead", "MessageWrite"]
