"""The user-process model: mmap/munmap/mprotect and pin_user_pages() as iommufd and VFIO use them."""

from __future__ import annotations

import errno

import numpy as np
import pytest

from vfiolab.errors import UapiError, VfiolabError
from vfiolab.memory import (
    HPAGE_SIZE,
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_HUGETLB,
    MAP_PRIVATE,
    MAP_SHARED,
    PAGE_SIZE,
    PROT_NONE,
    PROT_READ,
    PROT_WRITE,
    MemFile,
    PhysMemory,
    UserProcess,
)


@pytest.fixture()
def mem() -> PhysMemory:
    m = PhysMemory(256 << 20)
    yield m
    m.close()


def test_pin_faults_in_and_holds_pages(mem: PhysMemory) -> None:
    p = UserProcess(mem)
    va = p.mmap(16 * PAGE_SIZE)
    p.write(va + 5, b"data")
    frames = p.pin_pages(va, 16 * PAGE_SIZE, write=True)
    assert len(frames) == 16 and len(set(frames.tolist())) == 16 and p.pinned_pages == 16
    assert mem.read(int(frames[0]) * PAGE_SIZE + 5, 4) == b"data"
    assert np.array_equal(p.pin_pages(va + 100, 2 * PAGE_SIZE, write=False), frames[:3])  # pages covering
    p.unpin_pages(frames[:3])
    p.munmap(va, 16 * PAGE_SIZE)
    assert mem.frames_in_use == 16  # pinned pages outlive the mapping
    p.unpin_pages(frames)
    assert mem.frames_in_use == 0 and p.pinned_pages == 0
    with pytest.raises(VfiolabError):
        p.unpin_pages(frames[:1])


@pytest.mark.parametrize(("prot", "write"), [(PROT_READ, True), (PROT_NONE, False), (PROT_WRITE, False)])
def test_pin_permission_efault(prot: int, write: bool, mem: PhysMemory) -> None:
    """mm/gup.c check_vma_flags(): a write pin needs VM_WRITE, a read pin VM_READ."""
    p = UserProcess(mem)
    va = p.mmap(4 * PAGE_SIZE, prot)
    with pytest.raises(UapiError) as e:
        p.pin_pages(va, PAGE_SIZE, write=write)
    assert e.value.errno == errno.EFAULT
    assert p.pinned_pages == 0 and mem.frames_in_use == 0


def test_pin_unmapped_efault_all_or_nothing(mem: PhysMemory) -> None:
    p = UserProcess(mem)
    va = p.mmap(4 * PAGE_SIZE)
    p.munmap(va + 2 * PAGE_SIZE, PAGE_SIZE)  # a hole in the middle
    with pytest.raises(UapiError) as e:
        p.pin_pages(va, 4 * PAGE_SIZE, write=True)
    assert e.value.errno == errno.EFAULT and p.pinned_pages == 0
    assert len(p.vmas) == 2
    with pytest.raises(UapiError) as e:
        p.read(0x10, 1)
    assert e.value.errno == errno.EFAULT


def test_partial_write_stops_at_the_fault(mem: PhysMemory) -> None:
    """copy_to_user(): the bytes before the first unwritable page are stored, then EFAULT; a plain write
    is all or nothing, and a range past TASK_SIZE fails access_ok() with nothing stored."""
    p = UserProcess(mem)
    va = p.mmap(4 * PAGE_SIZE)
    p.mprotect(va + 2 * PAGE_SIZE, PAGE_SIZE, PROT_READ)
    data = bytes(range(256)) * (3 * PAGE_SIZE // 256)
    with pytest.raises(UapiError) as e:
        p.write(va + 100, data)
    assert e.value.errno == errno.EFAULT and p.read(va, 3 * PAGE_SIZE) == bytes(3 * PAGE_SIZE)
    with pytest.raises(UapiError) as e:
        p.write(va + 100, data, partial=True)
    assert e.value.errno == errno.EFAULT
    assert p.read(va, 3 * PAGE_SIZE) == bytes(100) + data[:2 * PAGE_SIZE - 100] + bytes(PAGE_SIZE)
    top = p.mmap(PAGE_SIZE, flags=MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, addr=(1 << 47) - PAGE_SIZE)
    with pytest.raises(UapiError):
        p.write(top, bytes(2 * PAGE_SIZE), partial=True)
    assert p.read(top, PAGE_SIZE) == bytes(PAGE_SIZE)
    p.write(top, b"\1" * PAGE_SIZE, partial=True)
    assert p.read(top, 1) == b"\1"


def test_mprotect_splits_and_enomem(mem: PhysMemory) -> None:
    p = UserProcess(mem)
    va = p.mmap(4 * PAGE_SIZE)
    p.mprotect(va + PAGE_SIZE, PAGE_SIZE, PROT_READ)
    assert [(v.start - va, v.end - va, v.prot) for v in p.vmas] == [
        (0, PAGE_SIZE, 3), (PAGE_SIZE, 2 * PAGE_SIZE, 1), (2 * PAGE_SIZE, 4 * PAGE_SIZE, 3)]
    with pytest.raises(UapiError) as e:
        p.write(va + PAGE_SIZE, b"x")
    assert e.value.errno == errno.EFAULT
    with pytest.raises(UapiError) as e:
        p.mprotect(va, 8 * PAGE_SIZE, PROT_READ)
    assert e.value.errno == errno.ENOMEM


def test_mmap_errors(mem: PhysMemory) -> None:
    p = UserProcess(mem)
    for kwargs, err in (({"length": 0}, errno.EINVAL), ({"length": 4096, "flags": MAP_ANONYMOUS}, errno.EINVAL),
                        ({"length": 4096, "flags": MAP_PRIVATE}, errno.EBADF),
                        ({"length": 4096, "flags": MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, "addr": 0x1001},
                         errno.EINVAL)):
        with pytest.raises(UapiError) as e:
            p.mmap(**kwargs)  # type: ignore[arg-type]
        assert e.value.errno == err
    with pytest.raises(UapiError) as e:
        p.munmap(0x1001, 4096)
    assert e.value.errno == errno.EINVAL


def test_fixed_replaces(mem: PhysMemory) -> None:
    p = UserProcess(mem)
    va = p.mmap(4 * PAGE_SIZE)
    p.write(va, b"old")
    p.mmap(PAGE_SIZE, flags=MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, addr=va)
    assert p.read(va, 3) == b"\0\0\0" and len(p.vmas) == 2


def test_hugetlb(mem: PhysMemory) -> None:
    """MAP_HUGETLB: 2 MiB pages, physically contiguous and aligned; splits must be 2 MiB aligned."""
    p = UserProcess(mem)
    va = p.mmap(HPAGE_SIZE + 1, flags=MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB)
    assert va % HPAGE_SIZE == 0 and p.vmas[0].end - va == 2 * HPAGE_SIZE
    frames = p.pin_pages(va + 0x1000, 0x1000, write=True)
    assert mem.frames_in_use == 512  # the whole huge page faulted in
    run = p.pin_pages(va, HPAGE_SIZE, write=True)
    assert run[0] % 512 == 0 and np.array_equal(np.diff(run), np.ones(511))
    with pytest.raises(UapiError) as e:
        p.munmap(va, PAGE_SIZE)
    assert e.value.errno == errno.EINVAL
    p.unpin_pages(frames)
    p.unpin_pages(run)
    p.munmap(va, 2 * HPAGE_SIZE)
    assert mem.frames_in_use == 0


def test_memfd_shared_and_private_cow(mem: PhysMemory) -> None:
    """Two processes mapping one memfd share its pages; a private mapping copies on first write."""
    f = MemFile(mem, 4 * PAGE_SIZE)
    a, b = UserProcess(mem, name="a"), UserProcess(mem, name="b")
    va = a.mmap(4 * PAGE_SIZE, flags=MAP_SHARED, file=f)
    vb = b.mmap(2 * PAGE_SIZE, flags=MAP_SHARED, file=f, offset=2 * PAGE_SIZE)
    a.write(va + 2 * PAGE_SIZE + 7, b"shared")
    assert b.read(vb + 7, 6) == b"shared"
    assert np.array_equal(a.pin_pages(va + 2 * PAGE_SIZE, PAGE_SIZE, write=False),
                          b.pin_pages(vb, PAGE_SIZE, write=False))
    c = UserProcess(mem, name="c")
    vc = c.mmap(4 * PAGE_SIZE, flags=MAP_PRIVATE, file=f)
    assert c.read(vc + 2 * PAGE_SIZE + 7, 6) == b"shared"
    c.write(vc + 2 * PAGE_SIZE + 7, b"PRIVAT")
    assert a.read(va + 2 * PAGE_SIZE + 7, 6) == b"shared" and c.read(vc + 2 * PAGE_SIZE + 7, 6) == b"PRIVAT"
    with pytest.raises(UapiError) as e:  # beyond the end of the file: SIGBUS, EFAULT for GUP
        UserProcess(mem).pin_pages(UserProcess(mem).mmap(PAGE_SIZE, flags=MAP_SHARED, file=f, offset=8 * PAGE_SIZE),
                                   PAGE_SIZE, write=False)
    assert e.value.errno == errno.EFAULT
