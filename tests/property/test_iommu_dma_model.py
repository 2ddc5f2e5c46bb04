"""Hypothesis state machine over the IOMMU core: random map / unmap / attach / replace / detach /
raw-unmap-plus-flush sequences on two paging domains of one group, checked against a plain reference
model.  Every DMA either reaches exactly the mapped page with the right permission or faults, and RAM
is never reached through a translation that was removed with proper invalidation."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from vfiolab.errors import UapiError
from vfiolab.iommu.device import IommuDevice
from vfiolab.iommu.dma import DmaPort
from vfiolab.iommu.domain import IOMMU_DOMAIN_IDENTITY, PagingDomain
from vfiolab.iommu.driver import make_unit
from vfiolab.iommu.fault import DmaFault
from vfiolab.iommu.group import (
    IommuGroup,
    iommu_detach_group_handle,
    iommu_group_claim_dma_owner,
    iommu_probe_device,
    iommu_replace_group_handle,
)
from vfiolab.iommu.pagetable import IOMMU_READ, IOMMU_WRITE
from vfiolab.memory.phys import PhysMemory

PAGES = 6
FRAMES = 6
PER_SPAN = 3
PAGE = 4096


def iova_of(k: int) -> int:
    """Pages in two 2 MiB spans so runs, spans and neighbours all occur."""
    return (1 << 24) + (k % PER_SPAN) * PAGE + (k // PER_SPAN) * (2 << 20)


class DmaModel(RuleBasedStateMachine):
    """Two domains of one driver, one group of two devices, a pool of frames with known content."""

    def __init__(self) -> None:
        super().__init__()
        self.mem = PhysMemory(1 << 26)
        self.unit = make_unit("intel", self.mem, iotlb_entries=8, iotlb_ways=2)
        self.group = IommuGroup()
        self.devs = [IommuDevice(f"d{i}", 0x40 + i) for i in range(2)]
        for d in self.devs:
            iommu_probe_device(d, self.unit, self.group, default_type=IOMMU_DOMAIN_IDENTITY)
        iommu_group_claim_dma_owner(self.group, "model")
        drv = self.unit.driver
        self.doms: list[PagingDomain] = [drv.domain_alloc_paging(self.devs[0]) for _ in range(2)]
        self.frames = self.mem.alloc_frames(FRAMES)
        self.content = np.arange(1, FRAMES + 1, dtype=np.uint64) * np.uint64(0x0101_0101)
        self.mem.u64[self.frames, 0] = self.content
        self.ref: list[dict[int, tuple[int, bool]]] = [{}, {}]
        iommu_replace_group_handle(self.group, self.doms[0], object())
        self.attached: int | None = 0
        self.ports = [DmaPort(d) for d in self.devs]

    # ------------------------------------------------------------------ domain changes
    @rule(dom=st.integers(0, 1), k=st.integers(0, PAGES - 1), f=st.integers(0, FRAMES - 1), writable=st.booleans())
    def map(self, dom: int, k: int, f: int, writable: bool) -> None:
        prot = IOMMU_READ | (IOMMU_WRITE if writable else 0)
        try:
            self.doms[dom].map(iova_of(k), int(self.frames[f]) << 12, PAGE, prot)
        except UapiError:
            assert k in self.ref[dom]
            return
        assert k not in self.ref[dom]
        self.ref[dom][k] = (f, writable)

    @rule(dom=st.integers(0, 1), k=st.integers(0, PAGES - 1), f=st.integers(0, FRAMES - 1),
          perms=st.lists(st.booleans(), min_size=2, max_size=PER_SPAN))
    def map_contiguous(self, dom: int, k: int, f: int, perms: list[bool]) -> None:
        """Neighbouring IOVA pages on neighbouring frames, permissions per page: what the IOTLB may
        coalesce into one run, and must not when permissions differ."""
        for i, writable in enumerate(perms):
            if (k + i) // PER_SPAN != k // PER_SPAN or k + i >= PAGES or f + i >= FRAMES:
                break
            self.map(dom, k + i, f + i, writable)

    @rule(dom=st.integers(0, 1), k=st.integers(0, PAGES - 1))
    def unmap(self, dom: int, k: int) -> None:
        n = self.doms[dom].unmap(iova_of(k), PAGE)
        assert n == (PAGE if k in self.ref[dom] else 0)
        self.ref[dom].pop(k, None)

    @rule(dom=st.integers(0, 1), k=st.integers(0, PAGES - 1))
    def raw_unmap_then_flush(self, dom: int, k: int) -> None:
        """A driver that changes the table itself and then invalidates everything."""
        self.doms[dom].pt.unmap(iova_of(k), PAGE)
        self.doms[dom].flush_iotlb_all()
        self.ref[dom].pop(k, None)

    @rule(dom=st.integers(0, 1))
    def replace(self, dom: int) -> None:
        iommu_replace_group_handle(self.group, self.doms[dom], object())
        self.attached = dom

    @precondition(lambda self: self.attached is not None)
    @rule()
    def detach(self) -> None:
        assert self.attached is not None
        iommu_detach_group_handle(self.doms[self.attached], self.group)
        self.attached = None

    # ------------------------------------------------------------------ DMA
    def expect(self, k: int, write: bool) -> int | None:
        """The frame index a DMA to page k reaches, or None when it must fault."""
        if self.attached is None:
            return None
        got = self.ref[self.attached].get(k)
        if got is None or (write and not got[1]):
            return None
        return got[0]

    @rule(dev=st.integers(0, 1), k=st.integers(0, PAGES - 1))
    def dma_read(self, dev: int, k: int) -> None:
        f = self.expect(k, False)
        try:
            data = self.ports[dev].dma_read(iova_of(k), 8)
        except DmaFault:
            assert f is None
            return
        assert f is not None and int.from_bytes(data, "little") == int(self.content[f])

    @rule(dev=st.integers(0, 1), k=st.integers(0, PAGES - 1), value=st.integers(1, 2**63))
    def dma_write(self, dev: int, k: int, value: int) -> None:
        f = self.expect(k, True)
        try:
            self.ports[dev].dma_write(iova_of(k), value.to_bytes(8, "little"))
        except DmaFault:
            assert f is None
            return
        assert f is not None
        self.content[f] = value

    @rule(k=st.integers(0, PAGES - 2), write=st.booleans())
    def dma_two_pages(self, k: int, write: bool) -> None:
        """A burst across two IOVA pages (contiguous in IOVA when in the same span)."""
        if (k + 1) % PER_SPAN == 0:
            return
        a, b = self.expect(k, write), self.expect(k + 1, write)
        lo = iova_of(k) + PAGE - 8
        try:
            if write:
                self.ports[0].dma_write(lo, bytes(16))
            else:
                data = self.ports[0].dma_read(lo, 16)
        except DmaFault:
            assert a is None or b is None
            return
        assert a is not None and b is not None
        if not write:
            assert data[8:] == int(self.content[b]).to_bytes(8, "little")
        else:  # the bytes landed at the end of frame a and the start of frame b
            self.content[b] = 0
            assert self.mem.read((int(self.frames[a]) << 12) + PAGE - 8, 8) == bytes(8)

    def teardown(self) -> None:
        self.mem.close()

    @invariant()
    def memory_matches_model(self) -> None:
        assert np.array_equal(self.mem.u64[self.frames, 0], self.content)


DmaModel.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None,
                                      suppress_health_check=[HealthCheck.too_slow])
TestDmaModel = DmaModel.TestCase
