"""Random /dev/iommu call sequences (hypothesis state machine) with the invariants the architecture
asks for: every IOAS map is present in every attached domain and translates to the pinned pages, pins
exist exactly for what a domain or an access holds, accounting matches pins, and close() leaves no
object, pin, mock device or page-table frame behind.  Calls may fail; they must fail only with
UapiError and leave these invariants intact."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from vfiolab.errors import UapiError
from vfiolab.iommufd import Iommufd, MockIommu, Task, uapi
from vfiolab.iommufd.hw_pagetable import HwptPaging
from vfiolab.iommufd.ioas import Ioas
from vfiolab.memory import MAP_ANONYMOUS, MAP_SHARED, PhysMemory, UserProcess

PAGE = 4096
START = uapi.MOCK_APERTURE_START
BUF_PAGES = 64
MEM = PhysMemory(1 << 30, name="iommufd-property")


class IommufdMachine(RuleBasedStateMachine):
    """A process with one buffer, an iommufd with the mock, and a few IOASes, devices and accesses."""

    def __init__(self) -> None:
        super().__init__()
        self.frames_before = MEM.frames_in_use
        self.mock = MockIommu(MEM)
        self.proc = UserProcess(MEM)
        self.task = Task.of(self.proc)
        self.fd = Iommufd(self.proc, selftest=self.mock)
        self.buf = self.proc.mmap(BUF_PAGES * PAGE, flags=MAP_SHARED | MAP_ANONYMOUS)
        self.ioas: list[int] = [self.fd.ioas_alloc()]
        self.devs: list[tuple[int, int]] = []  # (stdev, idev)
        self.hwpts: list[int] = []
        self.maps: list[tuple[int, int, int]] = []  # (ioas, iova, length)
        self.access: list[tuple[int, int]] = []  # (fd, ioas)
        self.items: list[tuple[int, int]] = []  # (access fd, item id)

    def _try(self, fn, *a, **kw):  # type: ignore[no-untyped-def]
        try:
            return fn(*a, **kw)
        except UapiError:
            return None

    # ------------------------------------------------------------------ rules
    @rule()
    def ioas_alloc(self) -> None:
        if len(self.ioas) < 3:
            self.ioas.append(self.fd.ioas_alloc())

    @rule(i=st.integers(0, 2), first=st.integers(0, BUF_PAGES - 1), n=st.integers(1, 16),
          at=st.integers(0, 64), fixed=st.booleans(), sub=st.sampled_from([0, 2048]))
    def map(self, i: int, first: int, n: int, at: int, fixed: bool, sub: int) -> None:
        ioas = self.ioas[i % len(self.ioas)]
        length = min(n, BUF_PAGES - first) * PAGE - sub
        flags = uapi.IOMMU_IOAS_MAP_READABLE | uapi.IOMMU_IOAS_MAP_WRITEABLE
        if fixed:
            flags |= uapi.IOMMU_IOAS_MAP_FIXED_IOVA
        iova = self._try(self.fd.ioas_map, ioas, self.buf + first * PAGE + sub, length,
                         iova=START + at * PAGE + sub, flags=flags)
        if iova is not None:
            self.maps.append((ioas, iova, length))

    @rule(k=st.integers(0, 50), whole=st.booleans())
    def unmap(self, k: int, whole: bool) -> None:
        if not self.maps:
            return
        ioas, iova, length = self.maps[k % len(self.maps)]
        if whole:
            got = self._try(self.fd.ioas_unmap, ioas, iova, length)
        else:
            got = self._try(self.fd.ioas_unmap, ioas, iova, PAGE)
        if got:
            self._refresh_maps()

    @rule(i=st.integers(0, 2))
    def unmap_all(self, i: int) -> None:
        self._try(self.fd.ioas_unmap, self.ioas[i % len(self.ioas)], 0, uapi.U64_MAX)
        self._refresh_maps()

    @rule(k=st.integers(0, 50), j=st.integers(0, 2), at=st.integers(0, 64))
    def copy(self, k: int, j: int, at: int) -> None:
        if not self.maps:
            return
        ioas, iova, length = self.maps[k % len(self.maps)]
        dst = self.ioas[j % len(self.ioas)]
        flags = uapi.IOMMU_IOAS_MAP_FIXED_IOVA | uapi.IOMMU_IOAS_MAP_READABLE
        got = self._try(self.fd.ioas_copy, dst, ioas, length, iova, START + at * PAGE + (iova & 2047), flags)
        if got is not None:
            self.maps.append((dst, got, length))

    @rule(i=st.integers(0, 2), no_dirty=st.booleans())
    def mock_domain(self, i: int, no_dirty: bool) -> None:
        if len(self.devs) >= 3:
            return
        flags = uapi.MOCK_FLAGS_DEVICE_NO_DIRTY if no_dirty else None
        out = self._try(self.fd.test.mock_domain, self.ioas[i % len(self.ioas)], flags)
        if out is not None:
            self.devs.append((out.stdev_id, out.idev_id))

    @rule(k=st.integers(0, 10))
    def destroy_device(self, k: int) -> None:
        if self.devs:
            stdev, _ = self.devs.pop(k % len(self.devs))
            self.fd.destroy(stdev)

    @rule(k=st.integers(0, 10), i=st.integers(0, 2), flags=st.sampled_from([0, 1, 2, 3]))
    def hwpt_alloc(self, k: int, i: int, flags: int) -> None:
        if self.devs and len(self.hwpts) < 3:
            got = self._try(self.fd.hwpt_alloc, self.devs[k % len(self.devs)][1],
                            self.ioas[i % len(self.ioas)],
                            flags=flags)
            if got is not None:
                self.hwpts.append(got)

    @rule(k=st.integers(0, 10), t=st.integers(0, 10), to_ioas=st.booleans())
    def replace(self, k: int, t: int, to_ioas: bool) -> None:
        if not self.devs:
            return
        if to_ioas or not self.hwpts:
            target = self.ioas[t % len(self.ioas)]
        else:
            target = self.hwpts[t % len(self.hwpts)]
        self._try(self.fd.test.mock_domain_replace, self.devs[k % len(self.devs)][0], target)

    @rule(k=st.integers(0, 10))
    def destroy_hwpt(self, k: int) -> None:
        if self.hwpts:
            h = self.hwpts[k % len(self.hwpts)]
            if self._try(self.fd.destroy, h) is None and self.fd.objects.lookup(h) is None or self.fd.objects.lookup(h) is None:
                self.hwpts.remove(h)

    @rule(i=st.integers(0, 2))
    def create_access(self, i: int) -> None:
        if len(self.access) < 2:
            ioas = self.ioas[i % len(self.ioas)]
            # EADDRINUSE when a map is not PAGE_SIZE aligned (iopt_add_access raises the alignment)
            afd = self._try(self.fd.test.create_access, ioas, uapi.MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES)
            if afd is not None:
                self.access.append((afd, ioas))

    @rule(a=st.integers(0, 5), k=st.integers(0, 50), n=st.integers(1, 4))
    def access_pages(self, a: int, k: int, n: int) -> None:
        if not self.access or not self.maps:
            return
        afd, ioas = self.access[a % len(self.access)]
        cands = [m for m in self.maps if m[0] == ioas and not m[1] % PAGE]
        if not cands:
            return
        _, iova, length = cands[k % len(cands)]
        got = self._try(self.fd.test.access_pages, afd, iova, min(n * PAGE, length // PAGE * PAGE) or PAGE)
        if got is not None:
            self.items.append((afd, got))

    @rule(k=st.integers(0, 50))
    def destroy_access_pages(self, k: int) -> None:
        if self.items:
            afd, item = self.items.pop(k % len(self.items))
            self._try(self.fd.test.destroy_access_pages, afd, item)

    @rule(a=st.integers(0, 5))
    def destroy_access(self, a: int) -> None:
        if self.access:
            afd, _ = self.access.pop(a % len(self.access))
            self.fd.test.destroy_access(afd)
            self.items = [it for it in self.items if it[0] != afd]

    @rule(i=st.integers(0, 2), on=st.booleans())
    def huge_pages(self, i: int, on: bool) -> None:
        self._try(self.fd.option, uapi.IOMMU_OPTION_HUGE_PAGES, uapi.IOMMU_OPTION_OP_SET,
                  self.ioas[i % len(self.ioas)], val64=int(on))

    @precondition(lambda self: len(self.ioas) > 1)
    @rule(i=st.integers(0, 2))
    def destroy_ioas(self, i: int) -> None:
        ioas = self.ioas[i % len(self.ioas)]
        if self._try(self.fd.destroy, ioas) is not None or self.fd.objects.lookup(ioas) is None:
            self.ioas.remove(ioas)
            self.maps = [m for m in self.maps if m[0] != ioas]

    def _refresh_maps(self) -> None:
        live = set()
        for obj in self.fd.objects:
            if isinstance(obj, Ioas):
                live |= {(obj.id, a.iova, a.length) for a in obj.iopt.areas}
        self.maps = [m for m in self.maps if m in live]

    # ------------------------------------------------------------------ invariants
    @invariant()
    def domains_mirror_the_ioas(self) -> None:
        for obj in self.fd.objects:
            if not isinstance(obj, Ioas):
                continue
            doms = obj.iopt.domains
            assert len(doms) == len(obj.hwpt_list)
            for area in obj.iopt.areas:
                pages = area.pages
                assert pages is not None
                if not doms:
                    assert area.storage_domain is None
                    continue
                held = pages.frames[area.index:area.last_index + 1]
                assert (held >= 0).all()
                for probe in {area.iova, area.last}:
                    frame = int(held[area.iova_to_index(probe) - area.index])
                    want = frame * PAGE + area.start_byte(probe) % PAGE
                    for d in doms:
                        assert d.iova_to_phys(probe) == want

    @invariant()
    def pins_match_holders(self) -> None:
        seen = {}
        for obj in self.fd.objects:
            if isinstance(obj, Ioas):
                for area in obj.iopt.areas:
                    if area.pages is not None:
                        seen[id(area.pages)] = area.pages
        total = 0
        for p in seen.values():
            assert np.array_equal(p.frames >= 0, p.holders > 0)
            assert p.npinned == int((p.frames >= 0).sum()) == p.last_npinned
            total += p.npinned
        assert self.proc.pinned_pages == total
        assert self.task.pinned_vm == total

    @invariant()
    def hwpt_users_are_consistent(self) -> None:
        for obj in self.fd.objects:
            assert obj.users >= 1
            if isinstance(obj, HwptPaging):
                assert any(h is obj for h in obj.ioas.hwpt_list)

    def teardown(self) -> None:
        for afd, _ in self.access:  # exit(): the access files go too, then the context
            self.fd.test.destroy_access(afd)
        self.fd.close()
        assert len(self.fd.objects) == 0
        assert not self.mock.devs
        assert self.proc.pinned_pages == 0 and self.task.pinned_vm == 0
        self.proc.close()
        assert MEM.frames_in_use == self.frames_before


TestIommufdMachine = IommufdMachine.TestCase
TestIommufdMachine.settings = settings(max_examples=60, stateful_step_count=30, deadline=None,
                                       suppress_health_check=[HealthCheck.too_slow])
