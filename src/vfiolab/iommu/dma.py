"""A device's DMA port: the device reads and writes memory by IOVA (optionally with a PASID), and the
request goes the way PCIe sends it.

* ATS enabled: the ATC translates (Translation Request on a miss); a completion without access makes a
  PRI-capable function send a Page Request Group and retry after Success; the bytes then move as a
  translated request.
* Otherwise: an untranslated request, translated by the IOMMU unit (IOTLB, then a page walk).

A burst is translated whole before any byte moves: when any part faults, nothing is transferred and
:class:`~vfiolab.iommu.fault.DmaFault` is raised after the unit logged the record.  Physically
contiguous pieces are copied with one numpy copy each (``*_into`` / ``*_from`` copy straight between
the caller's buffer and RAM).
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from vfiolab.errors import VfiolabError
from vfiolab.iommu.atc import translated_request_allowed, translation_request
from vfiolab.iommu.device import IommuDevice
from vfiolab.iommu.fault import DmaStalled, FaultReason
from vfiolab.iommu.iotlb import Run
from vfiolab.iommu.pasid import PASID_MAX_WIDTH
from vfiolab.iommu.pri import IOMMU_PAGE_RESP_INVALID, IOMMU_PAGE_RESP_SUCCESS, perm_for
from vfiolab.iommu.unit import IommuUnit, append_piece

Buffer = npt.NDArray[np.uint8]
_PAGE: Final = 4096
_U8: Final = np.dtype(np.uint8)
_RETRY_REASONS: Final = frozenset({FaultReason.NOT_PRESENT, FaultReason.PERMISSION, FaultReason.STAGE2})


def _bytes_view(buf: npt.NDArray[np.generic], writable: bool) -> Buffer:
    """``buf`` as one flat run of bytes (the callers take a 1-D byte array as it is)."""
    flags = buf.flags
    if not flags.c_contiguous:
        raise VfiolabError("DMA buffer must be C-contiguous")
    if writable and not flags.writeable:
        raise VfiolabError("DMA read target is read-only")
    return buf.reshape(-1).view(np.uint8)


class DmaPort:
    """The DMA engine of one device (an :class:`IommuDevice` probed behind a unit)."""

    def __init__(self, dev: IommuDevice) -> None:
        self.dev = dev
        self._waiting: dict[tuple[int, int], int] = {}
        """(pasid, page) -> PRG index of page requests whose response the DMA still waits for."""
        self.bytes_read = 0
        self.bytes_written = 0

    def _unit(self) -> IommuUnit:
        unit = self.dev.unit
        if unit is None:
            raise VfiolabError(f"{self.dev.name} is not behind an IOMMU")
        return unit

    # ------------------------------------------------------------------ data movement
    def dma_read(self, iova: int, length: int, pasid: int | None = None) -> bytes:
        """Read ``length`` bytes at ``iova``."""
        out = np.empty(length, dtype=np.uint8)
        self.dma_read_into(iova, out, pasid)
        return out.tobytes()

    def dma_write(self, iova: int, data: bytes | bytearray | memoryview, pasid: int | None = None) -> None:
        """Write ``data`` at ``iova``."""
        self.dma_write_from(iova, np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8), pasid)

    def dma_read_into(self, iova: int, out: npt.NDArray[np.generic], pasid: int | None = None) -> None:
        """Read ``out.nbytes`` bytes at ``iova`` straight into ``out`` (zero-copy on our side)."""
        dst: Buffer = out if out.dtype is _U8 and out.ndim == 1 and out.flags.writeable \
            and out.flags.c_contiguous else _bytes_view(out, True)  # type: ignore[assignment]
        n = dst.size
        dev = self.dev
        unit = dev.unit
        if pasid is None and dev.atc is None and unit is not None and 0 <= iova and n:
            pa = unit.translate_one(dev.rid, 0, iova, n, False)  # the common case, without ATS or PASID
            if pa >= 0:
                dst[...] = unit.mem.u8_flat[pa:pa + n]
                self.bytes_read += n
                return
            runs = unit.translate(dev.rid, 0, iova, n, False)
        else:
            runs = self._xlate(iova, n, False, pasid)
            unit = self._unit()
        ram = unit.mem.u8_flat
        if len(runs) == 1:
            pa = runs[0][0]
            dst[...] = ram[pa:pa + n]
        else:
            pos = 0
            for pa, k in runs:
                dst[pos:pos + k] = ram[pa:pa + k]
                pos += k
        self.bytes_read += n

    def dma_write_from(self, iova: int, src: npt.NDArray[np.generic], pasid: int | None = None) -> None:
        """Write the bytes of ``src`` at ``iova`` straight from ``src``."""
        data: Buffer = src if src.dtype is _U8 and src.ndim == 1 and src.flags.c_contiguous \
            else _bytes_view(src, False)  # type: ignore[assignment]
        n = data.size
        dev = self.dev
        unit = dev.unit
        if pasid is None and dev.atc is None and unit is not None and 0 <= iova and n:
            pa = unit.translate_one(dev.rid, 0, iova, n, True)
            if pa >= 0:
                unit.mem.store(pa, data)
                self.bytes_written += n
                return
            runs = unit.translate(dev.rid, 0, iova, n, True)
        else:
            runs = self._xlate(iova, n, True, pasid)
            unit = self._unit()
        store = unit.mem.store
        if len(runs) == 1:
            store(runs[0][0], data)
        else:
            pos = 0
            for pa, k in runs:
                store(pa, data[pos:pos + k])
                pos += k
        self.bytes_written += n

    # ------------------------------------------------------------------ translation
    def _xlate(self, iova: int, length: int, write: bool, pasid: int | None) -> list[tuple[int, int]]:
        dev = self.dev
        unit = dev.unit
        if unit is None:
            raise VfiolabError(f"{dev.name} is not behind an IOMMU")
        if length < 0 or iova < 0 or iova + length > 1 << 64:
            raise VfiolabError(f"DMA [{iova:#x}, +{length:#x}) is not a 64-bit range")
        if length == 0:
            return []
        p = 0
        if pasid is not None:
            if not 0 < pasid < 1 << PASID_MAX_WIDTH:
                raise VfiolabError(f"PASID {pasid} outside 1..{(1 << PASID_MAX_WIDTH) - 1}")
            if not dev.pasid_enabled:
                raise unit.fault(dev.rid, pasid, iova, write, FaultReason.PASID)
            p = pasid
        if dev.atc is not None and dev.ats_enabled:
            return self._xlate_ats(unit, p, iova, length, write)
        return unit.translate(dev.rid, p, iova, length, write)

    def _xlate_ats(self, unit: IommuUnit, p: int, iova: int, length: int, write: bool) -> list[tuple[int, int]]:
        dev = self.dev
        atc = dev.atc
        assert atc is not None
        if not translated_request_allowed(dev, p):
            reason = FaultReason.ATS_DISABLED if not unit.caps.ats else FaultReason.BLOCKED
            raise unit.fault(dev.rid, p, iova, write, reason)
        pos, end = iova, iova + length
        out: list[tuple[int, int]] = []
        while pos < end:
            run = atc.lookup(p, pos)
            if run is None or not (run.w if write else run.r):
                run = self._translate_page(unit, p, pos, end, write)
            stop = min(end, run.hi)
            append_piece(out, run.pa + (pos - run.lo), stop - pos)
            pos = stop
        if unit.mem.size < max(pa + k for pa, k in out):
            raise unit.fault(dev.rid, p, iova, write, FaultReason.BAD_PA)
        return out

    def _translate_page(self, unit: IommuUnit, p: int, pos: int, end: int, write: bool) -> Run:
        """Translation Request for ``pos``; on a completion without access, page requests (PRI) and a
        retry; DmaFault when the access cannot be satisfied, DmaStalled while responses are pending."""
        dev = self.dev
        run, reason, level = translation_request(dev, p, pos, write)
        if run is not None:
            return run
        if reason in _RETRY_REASONS and dev.pri is not None and (dev.pri_enabled or (p, pos & -_PAGE) in self._waiting):
            self._page_request(unit, p, pos, end, write)
            run, reason, level = translation_request(dev, p, pos, write)
            if run is not None:
                return run
        assert reason is not None
        raise unit.fault(dev.rid, p, pos, write, reason, level)

    def _page_request(self, unit: IommuUnit, p: int, pos: int, end: int, write: bool) -> None:
        """Ask for the pages of [pos, end) (as many as the PRI allocation allows) in one PRG and wait for
        its response; returns once answered Success."""
        dev = self.dev
        pri = dev.pri
        assert pri is not None
        page = pos & -_PAGE
        key = (p, page)
        idx = self._waiting.get(key)
        if idx is None:
            credits = pri.credits()
            if not credits:
                raise DmaStalled(dev.rid, p or None, pos, -1)
            last = min((end - 1) & -_PAGE, page + (credits - 1) * _PAGE)
            prg = pri.request(list(range(page, last + 1, _PAGE)), perm_for(write), p or None)
            idx = prg.index
            self._waiting[key] = idx
        code = pri.consume(idx)
        if code is None:
            raise DmaStalled(dev.rid, p or None, pos, idx)
        del self._waiting[key]
        if code == IOMMU_PAGE_RESP_SUCCESS:
            return
        reason = FaultReason.PRI_INVALID if code == IOMMU_PAGE_RESP_INVALID else FaultReason.PRI_FAILURE
        raise unit.fault(dev.rid, p, pos, write, reason)
