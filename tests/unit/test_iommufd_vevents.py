"""vIOMMU objects beyond what the kernel selftest asserts, worked out from eventq.c, driver.c, viommu.c,
main.c (iommufd_fops_mmap) and include/linux/iommu.h (iommu_copy_struct_to_user): where the
lost-events header sits and which sequence numbers vEVENTs get, the mmap() rules, and the loopback
data's length rules."""

from __future__ import annotations

import errno
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from vfiolab.errors import UapiError
from vfiolab.iommufd import Iommufd, MockIommu, uapi
from vfiolab.iommufd.viommu import IommufdVeventq
from vfiolab.memory import MAP_PRIVATE, MAP_SHARED, PROT_EXEC, PROT_READ, PhysMemory, UserProcess

PAGE = 4096
INT_MAX = (1 << 31) - 1
HDR = uapi.iommufd_vevent_header
EV = uapi.iommu_viommu_event_selftest
LOST = uapi.IOMMU_VEVENTQ_FLAG_LOST_EVENTS


@pytest.fixture(scope="module")
def mem() -> Iterator[PhysMemory]:
    m = PhysMemory(1 << 30, name="iommufd-viommu-unit")
    yield m
    m.close()


@dataclass
class Viommu:
    fd: Iommufd
    proc: UserProcess
    ioas: int
    stdev: int
    dev: int
    parent: int
    viommu: int
    nested: int
    scratch: int


@pytest.fixture
def v(mem: PhysMemory) -> Iterator[Viommu]:
    """A mock device, a nest parent, a vIOMMU and a nested HWPT of it."""
    proc = UserProcess(mem)
    fd = Iommufd(proc, selftest=MockIommu(mem))
    ioas = fd.ioas_alloc()
    md = fd.test.mock_domain(ioas)
    parent = fd.hwpt_alloc(md.idev_id, ioas, flags=uapi.IOMMU_HWPT_ALLOC_NEST_PARENT)
    viommu = fd.viommu_alloc(md.idev_id, parent, uapi.IOMMU_VIOMMU_TYPE_SELFTEST)
    scratch = proc.mmap(PAGE)
    proc.write(scratch, uapi.iommu_hwpt_selftest.pack(iotlb=0))
    nested = fd.hwpt_alloc(md.idev_id, viommu, data_type=uapi.IOMMU_HWPT_DATA_SELFTEST, data_uptr=scratch,
                           data_len=uapi.iommu_hwpt_selftest.size)
    yield Viommu(fd, proc, ioas, md.stdev_id, md.idev_id, parent, viommu, nested, scratch)
    fd.close()
    for n in list(fd.current.fds):  # exit() closes the event-queue files
        fd.current.close(n)
    assert fd.released
    proc.close()


def _errno(fn, *a, **kw) -> int:  # type: ignore[no-untyped-def]
    with pytest.raises(UapiError) as ei:
        fn(*a, **kw)
    return ei.value.errno


def _records(raw: bytes) -> list[tuple[int, int, int | None]]:
    """(flags, sequence, virt_id or None for the lost-events header) of each record read."""
    out: list[tuple[int, int, int | None]] = []
    pos = 0
    while pos < len(raw):
        h = HDR.unpack(raw[pos:])
        pos += HDR.size
        if h["flags"] & LOST:
            out.append((h["flags"], h["sequence"], None))
            continue
        out.append((h["flags"], h["sequence"], EV.unpack(raw[pos:])["virt_id"]))
        pos += EV.size
    return out


def _veventq(v: Viommu, depth: int) -> tuple[IommufdVeventq, object]:
    q_id, q_fd = v.fd.veventq_alloc(v.viommu, uapi.IOMMU_VEVENTQ_TYPE_SELFTEST, depth)
    v.fd.vdevice_alloc(v.viommu, v.dev, 0x42)
    v.fd.test.mock_domain_replace(v.stdev, v.nested)
    q = v.fd.object(q_id)
    assert isinstance(q, IommufdVeventq)
    return q, v.fd.current.fds[q_fd]


def test_lost_events_header_moves_to_the_tail_with_the_latest_sequence(v: Viommu) -> None:
    # iommufd_vevent_handler(): each report past the depth re-queues the one lost-events header at the
    # tail with a fresh sequence number, so one header stands for all lost events
    q, f = _veventq(v, 1)
    for _ in range(4):
        v.fd.test.trigger_vevent(v.dev)
    raw = f.read(4096)  # type: ignore[attr-defined]
    assert _records(raw) == [(0, 0, 0x42), (LOST, 3, None)]
    assert q.num_events == 0
    # after the header was read the queue takes events again, numbering on
    v.fd.test.trigger_vevent(v.dev)
    assert _records(f.read(4096)) == [(0, 4, 0x42)]  # type: ignore[attr-defined]


def test_a_new_event_replaces_a_trailing_lost_header(v: Viommu) -> None:
    # a report that fits (after a read made room) removes the header from the tail before queuing:
    # list_is_last(lost) -> list_del, so the header is not delivered any more
    _, f = _veventq(v, 1)
    for _ in range(2):
        v.fd.test.trigger_vevent(v.dev)  # seq 0, then the header with seq 1
    assert _records(f.read(HDR.size + EV.size)) == [(0, 0, 0x42)]  # type: ignore[attr-defined]
    v.fd.test.trigger_vevent(v.dev)  # fits again (num_events 0): header dropped, event seq 2
    assert _records(f.read(4096)) == [(0, 2, 0x42)]  # type: ignore[attr-defined]


def test_sequence_wraps_after_int_max(v: Viommu) -> None:
    q, f = _veventq(v, 4)
    q.sequence = INT_MAX
    v.fd.test.trigger_vevent(v.dev)
    v.fd.test.trigger_vevent(v.dev)
    assert _records(f.read(4096)) == [(0, INT_MAX, 0x42), (0, 0, 0x42)]  # type: ignore[attr-defined]


def test_read_returns_whole_events_only(v: Viommu) -> None:
    _, f = _veventq(v, 4)
    for _ in range(2):
        v.fd.test.trigger_vevent(v.dev)
    one = HDR.size + EV.size
    assert len(f.read(one + HDR.size)) == one  # type: ignore[attr-defined]
    assert len(f.read(one)) == one  # type: ignore[attr-defined]
    assert f.read(one) == b""  # type: ignore[attr-defined]
    assert _errno(f.write, b"x" * 8) == errno.EINVAL  # type: ignore[attr-defined]


def test_trigger_vevent_needs_a_vdevice_and_a_queue(v: Viommu) -> None:
    # iommufd_test_trigger_vevent(): ENOENT until the device sits on the vIOMMU with a vDEVICE; then
    # iommufd_viommu_report_event() is EOPNOTSUPP without a vEVENTQ of the selftest type
    assert _errno(v.fd.test.trigger_vevent, v.dev) == errno.ENOENT
    v.fd.vdevice_alloc(v.viommu, v.dev, 0x42)
    assert _errno(v.fd.test.trigger_vevent, v.dev) == errno.ENOENT
    v.fd.test.mock_domain_replace(v.stdev, v.nested)
    assert _errno(v.fd.test.trigger_vevent, v.dev) == errno.EOPNOTSUPP


def test_vdevice_virt_id_is_per_viommu(v: Viommu) -> None:
    md2 = v.fd.test.mock_domain(v.ioas)
    v.fd.vdevice_alloc(v.viommu, v.dev, 7)
    assert _errno(v.fd.vdevice_alloc, v.viommu, md2.idev_id, 7) == errno.EEXIST
    v2 = v.fd.vdevice_alloc(v.viommu, md2.idev_id, 8)
    assert _errno(v.fd.destroy, md2.idev_id) == errno.EBUSY  # the vDEVICE holds the device
    v.fd.destroy(v2)


def _alloc_with_data(v: Viommu, data_len: int, in_data: int = 0x1234) -> int:
    st = uapi.iommu_viommu_selftest
    v.proc.write(v.scratch, st.pack(in_data=in_data))
    return v.fd.viommu_alloc(v.dev, v.parent, uapi.IOMMU_VIOMMU_TYPE_SELFTEST, data_uptr=v.scratch,
                             data_len=data_len)


def test_loopback_data_length_rules(v: Viommu) -> None:
    st = uapi.iommu_viommu_selftest
    # shorter than the first version's struct (up to out_data): EINVAL; longer than the kernel's: EINVAL
    assert _errno(_alloc_with_data, v, st.offsetofend("out_data") - 1) == errno.EINVAL
    assert _errno(_alloc_with_data, v, st.size + 1) == errno.EINVAL
    # room for out_data only: copy_struct_to_user() (no ignored_trailing) writes out_data back, drops the
    # mmap offset/length and succeeds; that vIOMMU keeps its mmap region, so the next one comes after it
    v.proc.write(v.scratch, bytes(st.size))
    _alloc_with_data(v, st.offsetofend("out_data"), 0xBEEF)
    out = st.unpack(v.proc.read(v.scratch, st.size))
    assert (out["out_data"], out["out_mmap_offset"], out["out_mmap_length"]) == (0xBEEF, 0, 0)
    _alloc_with_data(v, st.size)
    assert st.unpack(v.proc.read(v.scratch, st.size))["out_mmap_offset"] == 3 * PAGE


def test_mmap_rules(v: Viommu) -> None:
    st = uapi.iommu_viommu_selftest
    vid = _alloc_with_data(v, st.size, 0xFEED)
    out = st.unpack(v.proc.read(v.scratch, st.size))
    length, offset = out["out_mmap_length"], out["out_mmap_offset"]
    assert (length, offset) == (2 * PAGE, PAGE)  # the first fit from PAGE_SIZE
    assert _errno(v.fd.mmap, length, offset, flags=MAP_PRIVATE) == errno.EINVAL
    assert _errno(v.fd.mmap, length, offset, prot=PROT_READ | PROT_EXEC) == errno.EPERM
    assert _errno(v.fd.mmap, length, offset + 1) == errno.EINVAL
    assert _errno(v.fd.mmap, length, 0) == errno.ENXIO
    va = v.fd.mmap(length, offset, flags=MAP_SHARED)
    assert struct.unpack("<I", v.proc.read(va, 4))[0] == 0xFEED
    assert v.proc.read(va + 4, 2 * PAGE - 4) == bytes(2 * PAGE - 4)  # zeroed pages
    # the mapping holds the vIOMMU and the file: close() does not release the context
    v.fd.close()
    assert not v.fd.released
    assert v.fd.object(vid).users == 2
    v.fd.munmap(va, length)  # the last reference: the context is released
    assert v.fd.released


def test_mmap_offset_goes_with_the_viommu(v: Viommu) -> None:
    st = uapi.iommu_viommu_selftest
    vid = _alloc_with_data(v, st.size)
    vid2 = _alloc_with_data(v, st.size)
    assert st.unpack(v.proc.read(v.scratch, st.size))["out_mmap_offset"] == 3 * PAGE
    v.fd.destroy(vid)
    assert _errno(v.fd.mmap, 2 * PAGE, PAGE) == errno.ENXIO
    _alloc_with_data(v, st.size)  # the freed range is the lowest fit again
    assert st.unpack(v.proc.read(v.scratch, st.size))["out_mmap_offset"] == PAGE
    v.fd.destroy(vid2)
