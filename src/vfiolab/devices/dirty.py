"""Device-side dirty tracking: the pages a device wrote by DMA while logging was on — the default
:class:`~vfiolab.devices.api.DirtySink` of every device, what a vfio-user server reads for its DMA logging
feature (a vfio-pci host may attach the VFIO page tracker instead, ``vfio_log_ops`` in
``include/linux/vfio.h``).

Only DMA writes without a PASID are logged (the IOVA space of the requester ID; the uAPI's ranges are
IOVAs of that space), and only inside the ranges given at start.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from vfiolab.errors import VfiolabError


class DirtyLog:
    """Dirty pages of one device, by ``page_size`` page number."""

    def __init__(self) -> None:
        self.active = False
        self.page_size = 0
        self.ranges: list[tuple[int, int]] = []
        self._pages: set[int] = set()

    def start(self, ranges: Sequence[tuple[int, int]], page_size: int) -> None:
        """Begin logging writes to ``ranges`` ((iova, length) pairs) at ``page_size`` granularity."""
        if self.active:
            raise VfiolabError("DMA logging is already running")
        if page_size <= 0 or page_size & (page_size - 1):
            raise VfiolabError(f"DMA logging page size {page_size:#x} is not a power of two")
        if not ranges or any(length <= 0 or iova < 0 for iova, length in ranges):
            raise VfiolabError("DMA logging needs at least one non-empty range")
        self.active, self.page_size = True, page_size
        self.ranges = sorted((int(i), int(n)) for i, n in ranges)
        self._pages = set()

    def stop(self) -> None:
        """End logging and forget what was logged."""
        self.active, self.page_size, self.ranges = False, 0, []
        self._pages = set()

    def note_write(self, iova: int, length: int) -> None:
        """A DMA write of ``length`` bytes at ``iova`` completed (the DirtySink call)."""
        if not self.active or length <= 0:
            return
        ps, end = self.page_size, iova + length
        for lo, n in self.ranges:
            a, b = max(lo, iova), min(lo + n, end)
            if a < b:
                self._pages.update(range(a // ps, (b - 1) // ps + 1))

    record = note_write

    def read_and_clear(self, iova: int, length: int) -> npt.NDArray[np.uint64]:
        """The page-aligned IOVAs dirtied in [iova, iova+length), ascending; they are cleared from the log."""
        if not self.active:
            raise VfiolabError("DMA logging is not running")
        if not self._pages or length <= 0:
            return np.empty(0, dtype=np.uint64)
        ps = self.page_size
        first, last = iova // ps, (iova + length - 1) // ps
        pages = np.fromiter(self._pages, dtype=np.uint64, count=len(self._pages))
        hit = np.sort(pages[(pages >= first) & (pages <= last)])
        self._pages.difference_update(hit.tolist())
        return hit * np.uint64(ps)

    @property
    def dirty_pages(self) -> int:
        """Pages currently marked dirty."""
        return len(self._pages)
