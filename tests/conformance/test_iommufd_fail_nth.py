"""tools/testing/selftests/iommu/iommufd_fail_nth.c (Linux 7.2) on the model: FIXTURE(basic_fail_nth)
and its eight TEST_FAIL_NTH bodies, written afresh against the Python uAPI.

Each body runs once with nothing injected, then again with the N-th fault-injection point of the model
failing (:mod:`vfiolab.faultinject`), N = 1, 2, ... until a run reaches no N-th point
(:func:`vfiolab.iommufd.fail_nth.sweep`).  Every failed call must be the injected failure with the
kernel's errno for that point and leave the context unchanged; after every run the fixture teardown
closes everything and nothing may stay allocated, pinned or charged (the kernel test's
teardown_iommufd() page-reference check, made exact).  The number of runs per body is printed.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final

import pytest

from vfiolab import faultinject
from vfiolab.errors import UapiError, VfiolabError
from vfiolab.iommu.domain import MODE_BLOCK
from vfiolab.iommufd import Iommufd, MockIommu, Task, uapi
from vfiolab.iommufd.fail_nth import NthRun, SweepResult, sweep
from vfiolab.memory import (
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_PRIVATE,
    MAP_SHARED,
    PROT_READ,
    PROT_WRITE,
    MemFile,
    PhysMemory,
    UserProcess,
)

PAGE_SIZE: Final = 4096
BUFFER_SIZE: Final = 2 << 20
"""setup_buffer(): BUFFER_SIZE = 2 MiB in this test."""
BUFFER_VA: Final = 0x7E00_0000_0000
PROT_RW: Final = PROT_READ | PROT_WRITE
MAP_RW: Final = uapi.IOMMU_IOAS_MAP_READABLE | uapi.IOMMU_IOAS_MAP_WRITEABLE
FIXED_RW: Final = MAP_RW | uapi.IOMMU_IOAS_MAP_FIXED_IOVA


class World:
    """What outlives the runs of one body: the selftest module (mock IOMMU, memory limit), the process
    with ``buffer`` (MAP_SHARED|MAP_ANONYMOUS) and the memfd behind ``mfd_buffer``, scratch memory for
    the structs the C test keeps on its stack."""

    def __init__(self, mem: PhysMemory) -> None:
        self.mem = mem
        self.mock = MockIommu(mem)
        self.proc = UserProcess(mem, name="fail_nth")
        self.task = Task.of(self.proc)
        self.shm = MemFile(mem, BUFFER_SIZE, name="dev/zero (deleted)")
        self.buffer = self.proc.mmap(BUFFER_SIZE, PROT_RW, MAP_SHARED | MAP_FIXED, addr=BUFFER_VA,
                                     file=self.shm)
        self.mfile = MemFile(mem, BUFFER_SIZE, name="buffer")
        self.mfd = self.task.fd_install(self.mfile)
        self.mfd_buffer = self.proc.mmap(BUFFER_SIZE, PROT_RW, MAP_SHARED, file=self.mfile)
        self.stack = self.proc.mmap(16 * PAGE_SIZE, PROT_RW, MAP_PRIVATE | MAP_ANONYMOUS)
        self.baseline_frames: int | None = None
        self.fds = set(self.task.fds)

    def close(self) -> None:
        self.task.close(self.mfd)
        self.proc.close()
        self.shm.close()
        self.mfile.close()


class Run(NthRun):
    """FIXTURE_DATA(basic_fail_nth): the fd, the access fd, the mock device, the PASID in use."""

    def __init__(self, n: int, world: World) -> None:
        super().__init__(n)
        self.w = world
        self.fd: Iommufd | None = None
        self.access_id = 0
        self.stdev_id = 0
        self.pasid = 0

    def open(self) -> Iommufd:
        """open("/dev/iommu")."""
        self.fd = self.step("open", lambda: Iommufd(self.w.proc, selftest=self.w.mock))
        self.ictx = self.fd
        return self.fd

    @property
    def f(self) -> Iommufd:
        assert self.fd is not None
        return self.fd


def teardown(run: Run) -> None:
    """FIXTURE_TEARDOWN(basic_fail_nth) and teardown_iommufd(), then every resource must be back."""
    w = run.w
    if run.access_id:
        w.task.close(run.access_id)  # the access fd holds the iommufd open until it closes
    if run.pasid and run.stdev_id and run.fd is not None:
        run.f.test.pasid_detach(run.stdev_id, run.pasid)
    if run.fd is not None:
        run.fd.close()
        assert run.fd.released, "the context outlived its files"
    assert set(w.task.fds) == w.fds, f"fds left open: {set(w.task.fds) - w.fds}"
    assert not w.mock.devs and not w.mock.unit.devices, "mock devices left"
    # a released device's context entry stays on the blocking domain: nothing may still translate
    assert all(c.domain.hw_mode == MODE_BLOCK for c in w.mock.unit._ctx.values()), "contexts left translating"
    assert int(w.mem.pincount.sum()) == 0, "pages still pinned"
    assert w.task.pinned_vm == 0 and w.task.locked_vm == 0, "pins still charged"
    if w.baseline_frames is None:  # the uninjected run faulted in everything the body touches
        w.baseline_frames = w.mem.frames_in_use
    assert w.mem.frames_in_use == w.baseline_frames, \
        f"{w.mem.frames_in_use - w.baseline_frames} frame(s) leaked"


# ---------------------------------------------------------------------- the TEST_FAIL_NTH bodies
def basic(r: Run) -> None:
    """Cover ioas.c."""
    w = r.w
    r.enable()
    fd = r.open()
    ioas_id = r.step("ioas_alloc", fd.ioas_alloc)
    ranges = w.stack
    r.step("iova_ranges", lambda: fd.ioas_iova_ranges(ioas_id, 10, ranges))
    rng = uapi.iommu_iova_range
    w.proc.write(ranges, rng.pack(start=16 * 1024, last=BUFFER_SIZE + 16 * 1024 * 600 - 1))
    r.step("allow_iovas", lambda: fd.ioas_allow_iovas(ioas_id, 1, ranges))
    iova = r.step("map", lambda: fd.ioas_map(ioas_id, w.buffer, BUFFER_SIZE, flags=MAP_RW))
    r.step("copy", lambda: fd.ioas_copy(ioas_id, ioas_id, 10 * rng.size, iova, flags=MAP_RW))
    r.step("unmap", lambda: fd.ioas_unmap(ioas_id, iova, BUFFER_SIZE))
    r.step("unmap again", lambda: fd.ioas_unmap(ioas_id, iova, BUFFER_SIZE), may_fail=True)  # no IOVA left


def _fill_domain(r: Run, map_it: Callable[[Iommufd, int], int]) -> None:
    fd = r.open()
    ioas_id = r.step("ioas_alloc", fd.ioas_alloc)
    r.step("memory_limit", lambda: fd.test.set_temp_memory_limit(32))
    r.enable()
    stdev = r.step("mock_domain", lambda: fd.test.mock_domain(ioas_id))
    r.step("map", lambda: map_it(fd, ioas_id))
    r.step("destroy", lambda: fd.destroy(stdev.stdev_id))
    r.step("mock_domain again", lambda: fd.test.mock_domain(ioas_id))


def map_domain(r: Run) -> None:
    """iopt_area_fill_domains() and iopt_area_fill_domain()."""
    _fill_domain(r, lambda fd, ioas_id: fd.ioas_map(ioas_id, r.w.buffer, 262144, flags=MAP_RW))


def map_file_domain(r: Run) -> None:
    """iopt_area_fill_domains() and iopt_area_fill_domain() for a memfd."""
    _fill_domain(r, lambda fd, ioas_id: fd.ioas_map_file(ioas_id, r.w.mfd, 0, 262144, flags=MAP_RW))


def map_two_domains(r: Run) -> None:
    w = r.w
    fd = r.open()
    ioas_id = r.step("ioas_alloc", fd.ioas_alloc)
    r.step("memory_limit", lambda: fd.test.set_temp_memory_limit(32))
    stdev = r.step("mock_domain", lambda: fd.test.mock_domain(ioas_id))
    r.enable()
    stdev2 = r.step("mock_domain 2", lambda: fd.test.mock_domain(ioas_id))
    r.step("map", lambda: fd.ioas_map(ioas_id, w.buffer, 262144, flags=MAP_RW))
    r.step("destroy", lambda: fd.destroy(stdev.stdev_id))
    r.step("destroy 2", lambda: fd.destroy(stdev2.stdev_id))
    r.step("mock_domain again", lambda: fd.test.mock_domain(ioas_id))
    r.step("mock_domain 2 again", lambda: fd.test.mock_domain(ioas_id))


def access_rw(r: Run) -> None:
    w = r.w
    fd = r.open()
    ioas_id = r.step("ioas_alloc", fd.ioas_alloc)
    r.step("memory_limit", lambda: fd.test.set_temp_memory_limit(32))
    iova = r.step("map", lambda: fd.ioas_map(ioas_id, w.buffer, 262144, flags=MAP_RW))
    r.enable()
    r.access_id = r.step("create_access", lambda: fd.test.create_access(ioas_id, 0))
    tmp, tmp_len = w.stack, 32 * 2  # uint16_t tmp[32]
    def rw(flags: int) -> Callable[[], None]:
        return lambda: fd.test.access_rw(r.access_id, iova, tmp_len, tmp, flags)

    for name, flags in (("read", 0), ("write", uapi.MOCK_ACCESS_RW_WRITE),
                        ("slow read", uapi.MOCK_ACCESS_RW_SLOW_PATH),
                        ("slow write", uapi.MOCK_ACCESS_RW_SLOW_PATH | uapi.MOCK_ACCESS_RW_WRITE)):
        r.step(f"access_rw {name}", rw(flags))
    big, big_len = w.stack + PAGE_SIZE, 4096 * 8  # uint64_t tmp_big[4096]
    r.step("access_rw big", lambda: fd.test.access_rw(r.access_id, iova, big_len, big,
                                                      uapi.MOCK_ACCESS_RW_SLOW_PATH))
    r.step("destroy_access", lambda: w.task.close(r.access_id))
    r.access_id = 0


def _pin(r: Run, with_domain: bool) -> None:
    w = r.w
    fd = r.open()
    ioas_id = r.step("ioas_alloc", fd.ioas_alloc)
    r.step("memory_limit", lambda: fd.test.set_temp_memory_limit(32))
    stdev = r.step("mock_domain", lambda: fd.test.mock_domain(ioas_id)) if with_domain else None
    iova = r.step("map", lambda: fd.ioas_map(ioas_id, w.buffer, BUFFER_SIZE, flags=MAP_RW))
    r.access_id = r.step("create_access", lambda: fd.test.create_access(
        ioas_id, uapi.MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES))
    r.enable()
    pages_id = r.step("access_pages",
                      lambda: fd.test.access_pages(r.access_id, iova, BUFFER_SIZE, uptr=w.buffer))
    r.step("destroy_access_pages", lambda: fd.test.destroy_access_pages(r.access_id, pages_id))
    r.step("destroy_access", lambda: w.task.close(r.access_id))
    r.access_id = 0
    if stdev is not None:
        r.step("destroy", lambda: fd.destroy(stdev.stdev_id))


def access_pin(r: Run) -> None:
    """pages.c access functions."""
    _pin(r, with_domain=False)


def access_pin_domain(r: Run) -> None:
    """iopt_pages_fill_xarray()."""
    _pin(r, with_domain=True)


def device(r: Run) -> None:
    """device.c (and hw_pagetable.c, viommu.c, eventq.c through the device's objects)."""
    w = r.w
    fd = r.open()
    ioas_id = r.step("ioas_alloc", fd.ioas_alloc)
    ioas_id2 = r.step("ioas_alloc 2", fd.ioas_alloc)
    iova = uapi.MOCK_APERTURE_START
    r.step("map", lambda: fd.ioas_map(ioas_id, w.buffer, PAGE_SIZE, iova=iova, flags=FIXED_RW))
    r.step("map 2", lambda: fd.ioas_map(ioas_id2, w.buffer, PAGE_SIZE, iova=iova, flags=FIXED_RW))
    r.enable()
    out = r.step("mock_domain_flags", lambda: fd.test.mock_domain(ioas_id, uapi.MOCK_FLAGS_DEVICE_PASID))
    r.stdev_id, idev_id = out.stdev_id, out.idev_id
    info = w.stack
    hw = r.step("get_hw_info", lambda: fd.get_hw_info(idev_id, uapi.iommu_test_hw_info.size, info,
                                                       uapi.IOMMU_HW_INFO_TYPE_DEFAULT))
    assert hw.out_data_type == uapi.IOMMU_HW_INFO_TYPE_SELFTEST
    hwpt_id = r.step("hwpt_alloc", lambda: fd.hwpt_alloc(idev_id, ioas_id, uapi.IOMMU_HWPT_ALLOC_PASID))
    r.step("replace ioas2", lambda: fd.test.mock_domain_replace(r.stdev_id, ioas_id2))
    r.step("replace hwpt", lambda: fd.test.mock_domain_replace(r.stdev_id, hwpt_id))
    hwpt_id = r.step("hwpt_alloc parent", lambda: fd.hwpt_alloc(
        idev_id, ioas_id, uapi.IOMMU_HWPT_ALLOC_NEST_PARENT | uapi.IOMMU_HWPT_ALLOC_PASID))
    viommu_id = r.step("viommu_alloc",
                       lambda: fd.viommu_alloc(idev_id, hwpt_id, uapi.IOMMU_VIOMMU_TYPE_SELFTEST))
    r.step("vdevice_alloc", lambda: fd.vdevice_alloc(viommu_id, idev_id, 0))
    r.step("hw_queue_alloc", lambda: fd.hw_queue_alloc(viommu_id, uapi.IOMMU_HW_QUEUE_TYPE_SELFTEST, 0, iova,
                                                        PAGE_SIZE))
    fq = r.step("fault_queue_alloc", fd.fault_queue_alloc)
    w.task.close(fq.out_fault_fd)
    data = w.stack + PAGE_SIZE
    w.proc.write(data, uapi.iommu_hwpt_selftest.pack(iotlb=uapi.IOMMU_TEST_IOTLB_DEFAULT))
    r.step("hwpt_alloc nested", lambda: fd.hwpt_alloc(
        idev_id, hwpt_id, uapi.IOMMU_HWPT_FAULT_ID_VALID, uapi.IOMMU_HWPT_DATA_SELFTEST,
        uapi.iommu_hwpt_selftest.size, data, fault_id=fq.out_fault_id))
    _veventq_id, veventq_fd = r.step("veventq_alloc", lambda: fd.veventq_alloc(
        viommu_id, uapi.IOMMU_VEVENTQ_TYPE_SELFTEST, 2))
    w.task.close(veventq_fd)
    test_hwpt_id = r.step("hwpt_alloc test",
                          lambda: fd.hwpt_alloc(idev_id, ioas_id, uapi.IOMMU_HWPT_ALLOC_PASID))
    # attach, replace and detach a PASID
    r.pasid = 200
    try:
        r.step("pasid_attach", lambda: fd.test.pasid_attach(r.stdev_id, r.pasid, hwpt_id))
    except BaseException:
        r.pasid = 0
        raise
    r.step("pasid_replace", lambda: fd.test.pasid_replace(r.stdev_id, r.pasid, test_hwpt_id))
    r.step("pasid_detach", lambda: fd.test.pasid_detach(r.stdev_id, r.pasid))
    r.pasid = 0


@dataclass(frozen=True)
class Body:
    fn: Callable[[Run], None]

    @property
    def name(self) -> str:
        return f"basic_fail_nth.{self.fn.__name__}"


BODIES: Final = [Body(f) for f in (basic, map_domain, map_file_domain, map_two_domains, access_rw, access_pin,
                                   access_pin_domain, device)]


@pytest.fixture(scope="module")
def mem() -> Iterator[PhysMemory]:
    m = PhysMemory(1 << 30, name="fail-nth-ram")
    yield m
    m.close()


@pytest.mark.parametrize("body", BODIES, ids=[b.name for b in BODIES])
def test_fail_nth(body: Body, mem: PhysMemory, capsys: pytest.CaptureFixture[str]) -> None:
    world = World(mem)
    try:
        res: SweepResult = sweep(body.name, body.fn, teardown, lambda n: Run(n, world))
    finally:
        world.close()
    with capsys.disabled():
        print(f"\n{res.summary()}")
    assert res.tried > 1, "no fault point was reached"
    stopped = [f for f in res.failures.values() if f is not None]
    assert stopped, "no injected failure stopped the sequence"
    assert all(f.injected is not None for f in stopped)


def test_fail_nth_counter_semantics() -> None:
    """/proc/self/task/<tid>/fail-nth as fault-injection.rst describes it: writing N makes the N-th point
    fail, reading gives 0 once it did and the points left otherwise; a bulk of k allocations fails when
    the N-th is among them; arming twice is refused."""
    with faultinject.fail_nth(3) as st:
        assert not faultinject.should_fail("a") and not faultinject.should_fail("b")
        assert st.read() == 1
        with pytest.raises(UapiError) as e:
            faultinject.fail_point("c", errno.EFAULT)
        assert e.value.errno == errno.EFAULT and st.read() == 0
        assert st.injected == faultinject.Injected("c", errno.EFAULT, 3)
        faultinject.fail_point("d")  # one failure per write
        with pytest.raises(VfiolabError):
            faultinject.arm(1)
    assert faultinject.armed() is None
    faultinject.fail_point("unarmed")  # nothing counts while disarmed
    with faultinject.fail_nth(5, record=True) as st:
        faultinject.fail_point("one")
        with pytest.raises(UapiError):
            faultinject.fail_point("bulk", count=8)  # points 2..9: the 5th is among them
        assert (st.passed, st.injected) == (5, faultinject.Injected("bulk", errno.ENOMEM, 5))
        assert st.sites == ["one"] + ["bulk"] * 8
    with faultinject.fail_nth(0) as st:  # N = 0 counts without failing
        faultinject.fail_point("x", count=4)
        assert (st.passed, st.read(), st.injected) == (4, 0, None)
