"""An IOMMU unit: the translation hardware one driver instance programs (a VT-d DMAR unit, an AMD-Vi
IOMMU, an SMMUv3, a RISC-V IOMMU, the iommufd selftest's mock).

The unit holds what the hardware holds: the context / PASID-table entries (which domain translates
requests of each requester ID and PASID, under which domain ID), the IOTLB, the fault log and the page
request queue.  ``translate()`` is the untranslated-request path of a DMA; ``ats_translate()`` answers
ATS translation requests.  Capabilities (:class:`IommuCaps`) say what the hardware supports; the vendor
presets live with the drivers (``driver.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from vfiolab.errors import VfiolabError
from vfiolab.iommu.domain import MODE_BLOCK, MODE_IDENTITY, MODE_TRANSLATE, IommuDomain
from vfiolab.iommu.fault import (
    IOMMU_FAULT_PERM_READ,
    IOMMU_FAULT_PERM_WRITE,
    DmaFault,
    FaultQueue,
    FaultReason,
    FaultRecord,
)
from vfiolab.iommu.iotlb import Run, TranslationCache
from vfiolab.iommu.pasid import IOMMU_NO_PASID
from vfiolab.iommu.walk import Walker, WalkError, mark_dirty
from vfiolab.memory.phys import PhysMemory

if TYPE_CHECKING:
    from vfiolab.iommu.device import IommuDevice

PASID_TAG_BITS: Final = 20


def iotlb_tag(did: int, pasid: int) -> int:
    """IOTLB entries are tagged by domain ID and PASID (VT-d PASID-granular caching)."""
    return (did << PASID_TAG_BITS) | pasid


def append_piece(out: list[tuple[int, int]], pa: int, n: int) -> None:
    """Add (pa, n) to a list of physically contiguous pieces, merging with the last one."""
    if out and out[-1][0] + out[-1][1] == pa:
        out[-1] = (out[-1][0], out[-1][1] + n)
    else:
        out.append((pa, n))


@dataclass(frozen=True)
class IommuCaps:
    """What one IOMMU unit supports."""

    vendor: str
    formats: tuple[str, ...]
    """Page-table formats its walker understands (first/second stage, host/guest)."""
    ias: int = 48
    """Input (IOVA) address width in bits (VT-d MGAW, AMD HATS, SMMU IAS)."""
    oas: int = 52
    """Output address width."""
    pasid_bits: int = 0
    """PASID width (0: no PASID support)."""
    dirty: bool = False
    """Hardware dirty tracking (VT-d SSADS, AMD HD, SMMU HTTU)."""
    nesting: bool = False
    ats: bool = False
    pri: bool = False
    sva: bool = False
    superpages: tuple[int, ...] = (21, 30)
    """Huge leaf sizes (log2) the hardware supports beyond 4 KiB (VT-d SLLPS / FL1GP)."""
    five_level: bool = False
    iotlb_entries: int = 512
    iotlb_ways: int = 8
    iotlb_span_lg2: int = 21
    fault_queue_depth: int = 256
    prq_depth: int = 2048
    did_bits: int = 16
    extra: dict[str, Any] = field(default_factory=dict)
    """Vendor-specific facts (e.g. the mock's selftest switches)."""


class Context:
    """One programmed context / PASID-table entry."""

    __slots__ = ("did", "domain", "mode", "tag", "walker")

    def __init__(self, domain: IommuDomain, mode: int, did: int, tag: int, walker: Walker | None) -> None:
        self.domain, self.mode, self.did, self.tag, self.walker = domain, mode, did, tag, walker


class IommuUnit:
    """One IOMMU: contexts, IOTLB, fault log, page-request path."""

    def __init__(self, name: str, caps: IommuCaps, mem: PhysMemory) -> None:
        self.name = name
        self.caps = caps
        self.mem = mem
        self.driver: Any = None
        """The IommuDriver programming this unit (set by the driver)."""
        self.iotlb = TranslationCache(f"{name} IOTLB", entries=caps.iotlb_entries, ways=caps.iotlb_ways,
                                      span_lg2=caps.iotlb_span_lg2)
        self.faults = FaultQueue(caps.fault_queue_depth)
        self.max_pasids = 1 << caps.pasid_bits if caps.pasid_bits else 0
        """iommu_device->max_pasids."""
        self.devices: dict[int, IommuDevice] = {}
        """Probed devices by requester ID."""
        self.translation_enabled = True
        """Global Command TE (VT-d) / CONTROL.IommuEn: off means every request passes untranslated."""
        self.prq_handler: Callable[[IommuDevice, Any], None] | None = None
        """Where page requests go (the driver's PRQ interrupt thread)."""
        self._ctx: dict[tuple[int, int], Context] = {}
        self._dids: dict[int, tuple[IommuDomain, int, int]] = {}  # id(domain) -> (domain, did, users)
        self.ats_invalidations = 0
        """ATS invalidation requests sent to devices."""
        self.page_requests = 0
        """Page Request messages received."""

    # ------------------------------------------------------------------ programming (driver side)
    def domain_id(self, domain: IommuDomain) -> int:
        """The domain ID this unit uses for ``domain`` (allocated on its first attachment here)."""
        got = self._dids.get(id(domain))
        return got[1] if got is not None else -1

    def _get_did(self, domain: IommuDomain) -> int:
        got = self._dids.get(id(domain))
        if got is not None:
            self._dids[id(domain)] = (domain, got[1], got[2] + 1)
            return got[1]
        used = {v[1] for v in self._dids.values()}
        did = next(d for d in range(1, (1 << self.caps.did_bits) + 1) if d not in used)
        if did >= 1 << self.caps.did_bits:
            raise VfiolabError(f"{self.name}: out of domain IDs")
        self._dids[id(domain)] = (domain, did, 1)
        return did

    def _put_did(self, domain: IommuDomain) -> None:
        d, did, users = self._dids[id(domain)]
        if users == 1:
            del self._dids[id(domain)]
        else:
            self._dids[id(domain)] = (d, did, users - 1)

    def set_context(self, dev: IommuDevice, pasid: int, domain: IommuDomain) -> Context:
        """Point (dev's RID, ``pasid``) at ``domain`` (a context or PASID-table entry update), then
        invalidate what the old entry may have left cached (VT-d pasid.c teardown/replace: PASID-based
        IOTLB flush of the old DID and a device-TLB flush)."""
        key = (dev.rid, pasid)
        old = self._ctx.get(key)
        if domain.hw_mode == MODE_TRANSLATE:
            did = self._get_did(domain)
            s1, s2 = domain.stages()
            ctx = Context(domain, MODE_TRANSLATE, did, iotlb_tag(did, pasid),
                          Walker(self.mem, s1, s2, span_lg2=self.iotlb.span_lg2))
        else:
            ctx = Context(domain, domain.hw_mode, 0, 0, None)
        self._ctx[key] = ctx
        domain.attached += 1
        if old is not None:
            self._retire(dev, pasid, old)
        return ctx

    def clear_context(self, dev: IommuDevice, pasid: int) -> None:
        """Tear the entry down (no translation: requests fault as blocked)."""
        old = self._ctx.pop((dev.rid, pasid), None)
        if old is not None:
            self._retire(dev, pasid, old)

    def _retire(self, dev: IommuDevice, pasid: int, old: Context) -> None:
        old.domain.attached -= 1
        if old.mode == MODE_TRANSLATE:
            if not any(c.tag == old.tag for c in self._ctx.values()):
                self.iotlb.invalidate(0, 1 << 64, tag=old.tag)
            self._put_did(old.domain)
        self.devtlb_invalidate(dev, pasid, 0, 1 << 64)

    def context(self, rid: int, pasid: int = IOMMU_NO_PASID) -> Context | None:
        """The programmed entry for (rid, pasid), if any."""
        return self._ctx.get((rid, pasid))

    # ------------------------------------------------------------------ invalidation (driver side)
    def iotlb_invalidate(self, did: int, pasid: int, lo: int, hi: int) -> None:
        """Page-selective invalidation of [lo, hi) for (did, pasid) (VT-d PSI / P_IOTLB)."""
        self.iotlb.invalidate(lo, hi, tag=iotlb_tag(did, pasid))

    def iotlb_flush_domain(self, did: int) -> None:
        """Domain-selective invalidation: every PASID of ``did`` (VT-d DSI)."""
        self.iotlb.invalidate_tags(lambda t: t >> PASID_TAG_BITS == did)

    def iotlb_flush_pasid(self, did: int, pasid: int) -> None:
        """PASID-selective-within-domain invalidation: every address of (did, pasid) (VT-d P_IOTLB
        with G=01b, qi_desc_piotlb_all())."""
        self.iotlb.invalidate(0, 1 << 64, tag=iotlb_tag(did, pasid))

    def iotlb_flush_all(self) -> None:
        """Global invalidation."""
        self.iotlb.flush_all()

    def devtlb_invalidate(self, dev: IommuDevice, pasid: int, lo: int, hi: int) -> None:
        """An ATS Invalidate Request to ``dev`` for [lo, hi) of ``pasid`` (qi_flush_dev_iotlb[_pasid]);
        only functions with ATS enabled have an ATC to invalidate."""
        if dev.atc is None or not dev.ats_enabled:
            return
        self.ats_invalidations += 1
        dev.atc.invalidate(lo, hi, tag=pasid)

    def devtlb_invalidate_all(self, dev: IommuDevice) -> None:
        """An ATS Invalidate Request with Global Invalidate: every PASID of ``dev``'s ATC (only sent to
        functions whose ATS capability advertises Global Invalidate Supported, PCIe §10.3.8)."""
        if dev.atc is None or not dev.ats_enabled:
            return
        if not dev.ats_global_invalidate:
            raise VfiolabError(f"{dev.name}: ATS Global Invalidate is not supported")
        self.ats_invalidations += 1
        dev.atc.flush_all()

    # ------------------------------------------------------------------ hardware: page requests
    def page_request(self, dev: IommuDevice, req: Any) -> None:
        """A Page Request message from ``dev`` enters the page request queue and goes to the driver's
        handler (the PRQ interrupt thread); with no handler it is dropped, as by a disabled queue."""
        self.page_requests += 1
        if self.prq_handler is not None:
            self.prq_handler(dev, req)

    # ------------------------------------------------------------------ hardware: faults
    def fault(self, rid: int, pasid: int, iova: int, write: bool, reason: FaultReason, level: int = -1) -> DmaFault:
        """Log a fault (and tell report_iommu_fault listeners); returns the exception to raise."""
        rec = FaultRecord(self.name, rid, pasid if pasid != IOMMU_NO_PASID else None, iova,
                          IOMMU_FAULT_PERM_WRITE if write else IOMMU_FAULT_PERM_READ, reason, level)
        self.faults.push(rec)
        ctx = self._ctx.get((rid, pasid))
        if ctx is not None and ctx.domain.fault_handler is not None:
            ctx.domain.fault_handler(ctx.domain, self.devices.get(rid), iova, rec.perm)
        return DmaFault(rec)

    def _check_pasid(self, rid: int, pasid: int, iova: int, write: bool) -> None:
        if pasid and pasid >= self.max_pasids:
            raise self.fault(rid, pasid, iova, write, FaultReason.PASID)

    # ------------------------------------------------------------------ hardware: translation
    def translate(self, rid: int, pasid: int, iova: int, length: int, write: bool) -> list[tuple[int, int]]:
        """An untranslated DMA request: the physically contiguous (pa, length) pieces of
        [iova, iova+length), or DmaFault (logged) when any part cannot be translated."""
        ctx = self._ctx.get((rid, pasid))
        if ctx is None or ctx.mode != MODE_TRANSLATE or not self.translation_enabled:
            return self._untranslated(ctx, rid, pasid, iova, length, write)
        run = self.iotlb.lookup(ctx.tag, iova)
        if run is not None and iova + length <= run.hi and (run.w and run.dmask == run.dfull if write else run.r):
            return [(run.pa + (iova - run.lo), length)]  # one cached run holds the whole burst
        return self._translate_runs(ctx, rid, pasid, iova, length, write, run)

    def translate_one(self, rid: int, pasid: int, iova: int, length: int, write: bool) -> int:
        """translate() of a request the last IOTLB run used holds whole with the access allowed (most
        bursts of a stream): its physical address; -1, with nothing counted, when translate() must
        answer."""
        ctx = self._ctx.get((rid, pasid))
        if ctx is None or ctx.mode != MODE_TRANSLATE or not self.translation_enabled:
            return -1
        cache = self.iotlb
        run = cache.peek(ctx.tag, iova, iova + length)
        if run is None or not (run.w and run.dmask == run.dfull if write else run.r):
            return -1
        cache.stats.hits += 1
        return run.pa + (iova - run.lo)

    def _untranslated(self, ctx: Context | None, rid: int, pasid: int, iova: int, length: int, write: bool
                      ) -> list[tuple[int, int]]:
        if not self.translation_enabled:
            return self._passthrough(rid, pasid, iova, length, write)
        if ctx is None or ctx.mode == MODE_BLOCK:
            self._check_pasid(rid, pasid, iova, write)
            raise self.fault(rid, pasid, iova, write, FaultReason.BLOCKED)
        return self._passthrough(rid, pasid, iova, length, write)  # MODE_IDENTITY

    def _translate_runs(self, ctx: Context, rid: int, pasid: int, iova: int, length: int, write: bool,
                        run: Run | None) -> list[tuple[int, int]]:
        """translate() past the one-run case: ``run`` is the IOTLB's answer for ``iova`` (None: a miss)."""
        tag, cache = ctx.tag, self.iotlb
        pos, end = iova, iova + length
        if run is None:
            run = self._fill(ctx, rid, pasid, pos, write)
        out: list[tuple[int, int]] = []
        while True:
            if not (run.w if write else run.r):
                raise self.fault(rid, pasid, pos, write, FaultReason.PERMISSION)
            stop = min(end, run.hi)
            if write and run.dmask != run.dfull:
                mark_dirty(self.mem, run, pos, stop)
            append_piece(out, run.pa + (pos - run.lo), stop - pos)
            pos = stop
            if pos >= end:
                return out
            run = cache.lookup(tag, pos)
            if run is None:
                run = self._fill(ctx, rid, pasid, pos, write)

    def _fill(self, ctx: Context, rid: int, pasid: int, pos: int, write: bool) -> Run:
        assert ctx.walker is not None
        try:
            run = ctx.walker.fill(pos, write)
        except WalkError as err:
            raise self.fault(rid, pasid, pos, write, err.reason, err.level) from None
        return self.iotlb.insert(ctx.tag, run, pos)

    def _passthrough(self, rid: int, pasid: int, iova: int, length: int, write: bool) -> list[tuple[int, int]]:
        if iova < 0 or iova + length > self.mem.size:
            raise self.fault(rid, pasid, iova, write, FaultReason.BAD_PA)
        return [(iova, length)]

    def ats_translate(self, rid: int, pasid: int, iova: int, write: bool, max_lg2: int
                      ) -> tuple[Run | None, FaultReason | None, int]:
        """An ATS Translation Request for the page at ``iova``: (completion, None, level) or
        (None, reason, level) for a completion with R=W=0 (VT-d §4.2.3: no fault is logged).

        The completion covers the largest naturally aligned block (at most 2**max_lg2) of the cached
        run around ``iova``.  With hardware dirty tracking on, a write request gets one page and sets
        its dirty bit, and a read request gets W=0 so that a later write asks again."""
        if not self.translation_enabled:
            lo = iova >> max_lg2 << max_lg2
            return Run(lo, lo + (1 << max_lg2), lo, True, True), None, -1
        ctx = self._ctx.get((rid, pasid))
        if ctx is None or ctx.mode == MODE_BLOCK:
            return None, FaultReason.BLOCKED, -1
        if ctx.mode == MODE_IDENTITY:
            lo = iova >> max_lg2 << max_lg2
            return Run(lo, lo + (1 << max_lg2), lo, True, True), None, -1
        run = self.iotlb.lookup(ctx.tag, iova)
        if run is None:
            assert ctx.walker is not None
            try:
                run = self.iotlb.insert(ctx.tag, ctx.walker.fill(iova, write), iova)
            except WalkError as err:
                return None, err.reason, err.level
        if not (run.w if write else run.r):
            return None, FaultReason.PERMISSION, -1
        dirty = bool(run.dirty)
        lg2 = run.glg2 if dirty and write else max_lg2
        while lg2 > run.glg2:
            lo = iova >> lg2 << lg2
            if run.lo <= lo and lo + (1 << lg2) <= run.hi:
                break
            lg2 -= 1
        lo = iova >> lg2 << lg2
        hi = lo + (1 << lg2)
        if dirty and write:
            mark_dirty(self.mem, run, lo, hi)
        return Run(lo, hi, run.pa + (lo - run.lo), run.r, run.w and (write or not dirty)), None, -1
