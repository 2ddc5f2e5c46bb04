"""The iommufd selftest mock (``drivers/iommu/iommufd/selftest.c``, ``iommufd_test.h``): IOMMU_TEST_CMD
and its IOMMU_TEST_OP_* operations, as a raw ioctl and as :class:`SelftestOps` methods.

:class:`MockIommu` is the module-global part: the mock IOMMU unit driven by the IOMMU core's
:class:`~vfiolab.iommu.driver.MockDriver` (AMDv1 page tables with 2 KiB pages, the mock aperture), the
mock device ID allocator and the temporary-memory limit.  Mock devices are real
:class:`~vfiolab.iommu.device.IommuDevice` objects probed onto that unit, so HWPTs made for them own real
page tables and MD_CHECK_MAP reads them.  The selftest's driver hooks that live in selftest.c (user-data
decoding for HWPT_ALLOC, nested IOTLB invalidation, hw_info) are registered here with the iommufd layer.
"""

from __future__ import annotations

import errno
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from vfiolab.errors import UapiError
from vfiolab.faultinject import fail_point
from vfiolab.iommu.device import IommuDevice
from vfiolab.iommu.domain import IOMMU_DOMAIN_NESTED, IOMMU_DOMAIN_UNMANAGED, IommuDomain, PagingDomain
from vfiolab.iommu.driver import MockDriver, make_unit
from vfiolab.iommu.group import iommu_probe_device, iommu_release_device
from vfiolab.iommu.nested import NestedDomain
from vfiolab.iommu.pri import (
    IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE,
    IOMMU_FAULT_PAGE_REQUEST_PASID_VALID,
    PageRequest,
    iommu_report_device_fault,
)
from vfiolab.iommufd import uapi
from vfiolab.iommufd.access import AccessOps, IommufdAccess, access_create, access_destroy
from vfiolab.iommufd.device import (
    IommufdDevice,
    attached_domain,
    device_attach,
    device_bind,
    device_detach,
    device_replace,
    device_unbind,
    get_device,
)
from vfiolab.iommufd.hw_info import HW_INFO_OPS
from vfiolab.iommufd.hw_pagetable import INVALIDATE_OPS, NESTED_DATA, PAGING_DATA, HwPagetable
from vfiolab.iommufd.ioas import get_ioas
from vfiolab.iommufd.mock_viommu import SelftestDriver
from vfiolab.iommufd.objects import IommufdObject, ObjType
from vfiolab.iommufd.pages import IoptPages, alloc_dmabuf_pages, set_temp_memory_limit
from vfiolab.iommufd.results import MockDomainOut
from vfiolab.iommufd.uapi import PAGE_SIZE, ULONG_MAX
from vfiolab.iommufd.ucmd import Ucmd
from vfiolab.iommufd.userdata import UserData, copy_user_data
from vfiolab.iommufd.viommu import IommufdViommu
from vfiolab.memory import MAP_HUGETLB, PhysMemory, UserProcess

if TYPE_CHECKING:
    from vfiolab.iommufd.main import Iommufd

IOMMU_NO_PASID: Final = 0
EBADFD: Final = errno.EBADFD
_SZ_16M: Final = 16 << 20
MOCK_DEFAULT_MEMORY_LIMIT: Final = 65536


class MockIommu:
    """The selftest module's globals: the mock IOMMU unit and its driver, mock device IDs, the
    temporary memory limit (``iommufd_test_memory_limit``)."""

    def __init__(self, mem: PhysMemory) -> None:
        self.mem = mem
        self.driver = SelftestDriver(self.state_of)
        self.unit = make_unit("mock", mem, name="iommufd_selftest_iommu", driver=self.driver)
        self.memory_limit = MOCK_DEFAULT_MEMORY_LIMIT
        set_temp_memory_limit(MOCK_DEFAULT_MEMORY_LIMIT)  # a fresh selftest module
        self._ida: set[int] = set()
        self.devs: dict[int, MockDev] = {}
        """id(IommuDevice) -> mock device state."""

    def set_memory_limit(self, limit: int) -> None:
        """iommufd_test_memory_limit = limit: what pfn readers may allocate (so pin calls shrink)."""
        self.memory_limit = limit
        set_temp_memory_limit(limit)

    def dev_create(self, dev_flags: int) -> MockDev:
        """mock_dev_create(): EINVAL for unknown flags; PASID width 20 with MOCK_FLAGS_DEVICE_PASID."""
        valid = uapi.MOCK_FLAGS_DEVICE_NO_DIRTY | uapi.MOCK_FLAGS_DEVICE_PASID
        if dev_flags & ~valid:
            raise UapiError(errno.EINVAL, f"mock device flags {dev_flags:#x}")
        fail_point("mock_dev_create: kzalloc(struct mock_dev)")
        fail_point("mock_dev_create: ida_alloc(&mock_dev_ida)")
        mid = 0
        while mid in self._ida:
            mid += 1
        self._ida.add(mid)
        bits = uapi.MOCK_PASID_WIDTH if dev_flags & uapi.MOCK_FLAGS_DEVICE_PASID else 0
        dev = IommuDevice(f"iommufd_mock{mid}", mid, pasid_num_bits=bits,
                          no_dirty=bool(dev_flags & uapi.MOCK_FLAGS_DEVICE_NO_DIRTY))
        try:  # iommu_mock_device_add() -> __iommu_probe_device(): dev_iommu_get() allocates first
            fail_point("iommu_mock_device_add: dev_iommu_get: kzalloc(struct dev_iommu)")
        except UapiError:
            self._ida.discard(mid)  # put_device() -> mock_dev_release(): ida_free()
            raise
        iommu_probe_device(dev, self.unit)
        mdev = MockDev(dev, mid, dev_flags)
        self.devs[id(dev)] = mdev
        return mdev

    def dev_destroy(self, mdev: MockDev) -> None:
        """mock_dev_destroy(): device_unregister()."""
        iommu_release_device(mdev.dev)
        self.devs.pop(id(mdev.dev), None)
        self._ida.discard(mdev.id)

    def state_of(self, dev: IommuDevice) -> MockDev | None:
        """to_mock_dev(): the mock state of one of this mock's devices."""
        return self.devs.get(id(dev))

    def is_mock_dev(self, dev: IommuDevice) -> bool:
        """iommufd_selftest_is_mock_dev()."""
        return id(dev) in self.devs


@dataclass
class MockDev:
    """struct mock_dev."""

    dev: IommuDevice
    id: int
    flags: int
    cache: list[int] = field(
        default_factory=lambda: [uapi.IOMMU_TEST_DEV_CACHE_DEFAULT] * uapi.MOCK_DEV_CACHE_NUM)
    viommu: IommufdViommu | None = None
    """The vIOMMU of the nested domain the device is attached to, and its virtual ID there."""
    vdev_id: int = 0


class SelftestObj(IommufdObject):
    """struct selftest_obj (TYPE_IDEV): a mock device bound to the fd; destroying it detaches,
    unbinds and unregisters the device."""

    type = ObjType.SELFTEST

    def __init__(self, ictx: Iommufd) -> None:
        super().__init__(ictx)
        self.idev: IommufdDevice | None = None
        self.mock_dev: MockDev | None = None

    def destroy(self) -> None:
        # iommufd_selftest_destroy()
        assert self.idev is not None and self.mock_dev is not None
        device_detach(self.idev, IOMMU_NO_PASID)
        device_unbind(self.idev)
        _selftest(self.ictx).dev_destroy(self.mock_dev)


@dataclass
class AccessItem:
    """struct selftest_access_item: one ACCESS_PAGES pin."""

    iova: int
    length: int
    id: int


class SelftestAccess:
    """struct selftest_access: the file behind a CREATE_ACCESS fd."""

    def __init__(self) -> None:
        self.access: IommufdAccess | None = None
        self.items: list[AccessItem] = []
        self.next_id = 0

    def unmap(self, iova: int, length: int) -> None:
        """iommufd_test_access_unmap(): unpin every item intersecting the range."""
        last = iova + length - 1
        assert self.access is not None
        for item in list(self.items):
            if iova > item.iova + item.length - 1 or last < item.iova:
                continue
            self.items.remove(item)
            self.access.unpin_pages(item.iova, item.length)

    def release(self) -> None:
        """iommufd_test_staccess_release()."""
        if self.access is not None:
            self.unmap(0, ULONG_MAX)
            access_destroy(self.access)
            self.access = None


class SelftestDmaBuf:
    """struct iommufd_test_dma_buf and its dma_buf: ``length`` bytes of physically contiguous memory
    an importer maps as MMIO; revoking invalidates every importer's mappings."""

    def __init__(self, mem: PhysMemory, length: int) -> None:
        self.mem = mem
        self.size = length
        self.frames = mem.alloc_frames(length // PAGE_SIZE, contiguous=True)
        self.paddr = int(self.frames[0]) * PAGE_SIZE
        self.revoked = False
        self.attachments: list[IoptPages] = []
        self.refs = 1  # the fd

    def iommufd_pages(self, ictx: Iommufd, start: int, length: int, writable: bool) -> tuple[IoptPages, int]:
        """iopt_alloc_dmabuf_pages() + iopt_map_dmabuf(): attach, then ENODEV while revoked."""
        pages, start_byte = alloc_dmabuf_pages(ictx.current, self, start, length, writable)
        if self.revoked:  # iommufd_test_dma_buf_iommufd_map()
            pages.dmabuf = None
            raise UapiError(errno.ENODEV, "dma-buf revoked")
        self.attachments.append(pages)
        self.refs += 1
        return pages, start_byte

    def detach(self, pages: IoptPages) -> None:
        """dma_buf_detach() + dma_buf_put() from iopt_release_pages()."""
        if pages in self.attachments:
            self.attachments.remove(pages)
            self._put()

    def release(self) -> None:
        """close() of the dma-buf fd."""
        self._put()

    def _put(self) -> None:
        self.refs -= 1
        if not self.refs:  # iommufd_test_dma_buf_release()
            self.mem.free_frames(self.frames)

    def set_revoked(self, revoked: bool) -> None:
        """iommufd_test_dmabuf_revoke(): dma_buf_invalidate_mappings() revokes every live importer."""
        self.revoked = revoked
        for pages in list(self.attachments):
            pages.revoke()


def _selftest(ictx: Iommufd) -> MockIommu:
    if ictx.selftest is None:
        raise UapiError(errno.ENOTTY, "no selftest")
    return ictx.selftest


# ---------------------------------------------------------------------- driver hooks registered with iommufd
def _mock_paging_data(ictx: Iommufd, idev: IommufdDevice, flags: int,
                      ud: UserData | None) -> Mapping[str, Any] | None:
    # selftest.c mock_domain_alloc_paging_flags(): flags, then the data type, then the copy
    paging = (uapi.IOMMU_HWPT_ALLOC_DIRTY_TRACKING | uapi.IOMMU_HWPT_ALLOC_NEST_PARENT |
              uapi.IOMMU_HWPT_ALLOC_PASID)
    if flags & ~paging or (flags & uapi.IOMMU_HWPT_ALLOC_DIRTY_TRACKING and idev.dev.no_dirty):
        raise UapiError(errno.EOPNOTSUPP, f"mock: flags {flags:#x}")
    if ud is None:
        return None
    if ud.type not in (uapi.IOMMU_HWPT_DATA_SELFTEST, uapi.IOMMU_HWPT_DATA_NONE):
        raise UapiError(errno.EOPNOTSUPP, f"mock: data type {ud.type:#x}")
    cfg = copy_user_data(ictx, uapi.iommu_hwpt_selftest, ud, uapi.IOMMU_HWPT_DATA_SELFTEST, "iotlb")
    return {"pagetable_type": cfg["pagetable_type"]}


def _mock_nested_data(ictx: Iommufd, idev: IommufdDevice, parent: IommuDomain, flags: int,
                      ud: UserData) -> tuple[str, Mapping[str, Any]]:
    # mock_domain_alloc_nested() + __mock_domain_alloc_nested()
    if flags & ~uapi.IOMMU_HWPT_ALLOC_PASID:
        raise UapiError(errno.EOPNOTSUPP, f"mock nested: flags {flags:#x}")
    if not isinstance(parent, PagingDomain):
        raise UapiError(errno.EINVAL, "mock nested: parent is not a paging domain")
    if ud.type != uapi.IOMMU_HWPT_DATA_SELFTEST:
        raise UapiError(errno.EOPNOTSUPP, f"mock nested: data type {ud.type:#x}")
    cfg = copy_user_data(ictx, uapi.iommu_hwpt_selftest, ud, uapi.IOMMU_HWPT_DATA_SELFTEST, "iotlb")
    return "selftest", {"iotlb": cfg["iotlb"]}


def _mock_cache_invalidate(ictx: Iommufd, domain: IommuDomain, ud: UserData, entry_len: int) -> int:
    # mock_domain_cache_invalidate_user(): entries in order, stop at the first bad one
    processed = 0
    try:
        if ud.type != uapi.IOMMU_HWPT_INVALIDATE_DATA_SELFTEST:
            raise UapiError(errno.EINVAL, f"invalidation type {ud.type:#x}")
        iotlb = domain.data["iotlb"]  # type: ignore[attr-defined]
        for i in range(ud.entry_num):
            inv = copy_user_data(ictx, uapi.iommu_hwpt_invalidate_selftest, ud,
                                 uapi.IOMMU_HWPT_INVALIDATE_DATA_SELFTEST, "iotlb_id", index=i)
            if inv["flags"] & ~uapi.IOMMU_TEST_INVALIDATE_FLAG_ALL:
                raise UapiError(errno.EOPNOTSUPP, f"invalidation flags {inv['flags']:#x}")
            if inv["iotlb_id"] > uapi.MOCK_NESTED_DOMAIN_IOTLB_ID_MAX:
                raise UapiError(errno.EINVAL, f"iotlb_id {inv['iotlb_id']}")
            if inv["flags"] & uapi.IOMMU_TEST_INVALIDATE_FLAG_ALL:
                iotlb[:] = [0] * uapi.MOCK_NESTED_DOMAIN_IOTLB_NUM
            else:
                iotlb[inv["iotlb_id"]] = 0
            processed += 1
    except UapiError as e:
        e.handled = processed  # type: ignore[attr-defined]
        raise
    return processed


def _mock_hw_info(dev: IommuDevice, in_type: int) -> tuple[bytes, int]:
    # mock_domain_hw_info()
    if in_type not in (uapi.IOMMU_HW_INFO_TYPE_DEFAULT, uapi.IOMMU_HW_INFO_TYPE_SELFTEST):
        raise UapiError(errno.EOPNOTSUPP, f"hw_info type {in_type:#x}")
    fail_point("mock_domain_hw_info: kzalloc(struct iommu_test_hw_info)")
    return (uapi.iommu_test_hw_info.pack(test_reg=uapi.IOMMU_HW_INFO_SELFTEST_REGVAL),
            uapi.IOMMU_HW_INFO_TYPE_SELFTEST)


PAGING_DATA[MockDriver.name] = _mock_paging_data
NESTED_DATA[MockDriver.name] = _mock_nested_data
INVALIDATE_OPS[MockDriver.name] = _mock_cache_invalidate
HW_INFO_OPS[MockDriver.name] = _mock_hw_info


# ---------------------------------------------------------------------- helpers
def _gup_frames(process: UserProcess, va: int, npages: int) -> np.ndarray:
    """get_user_pages_fast(va, npages, 0): the frames (faulted in; EFAULT when unmapped, EOVERFLOW when the
    page range wraps)."""
    # mm/gup.c gup_fast_fallback(): the start is rounded down to its page, and a page range that wraps
    # past 2^64 is EOVERFLOW before the TASK_SIZE check (EFAULT)
    va &= ~(PAGE_SIZE - 1)
    if va + npages * PAGE_SIZE > ULONG_MAX:
        raise UapiError(errno.EOVERFLOW, f"user pages [{va:#x}, +{npages} pages) wrap past 2^64")
    frames = process.pin_pages(va, npages * PAGE_SIZE, write=False)
    process.unpin_pages(frames)
    return frames


def _gup_each(process: UserProcess, va: int, npages: int) -> tuple[np.ndarray, UapiError | None]:
    """get_user_pages_fast(va + k * PAGE_SIZE, 1, 0) for k = 0, 1, ... as selftest.c's checks call it, page
    by page: the frames of the pages before the first that fails, and that failure (None if none fails)."""
    try:
        return _gup_frames(process, va, npages), None
    except UapiError:
        pass
    good, bad = 0, npages  # the first `good` pages look up together, the first `bad` do not
    while bad - good > 1:  # a failing lookup faults nothing in, so probing has no side effect
        mid = (good + bad) // 2
        try:
            _gup_frames(process, va, mid)
            good = mid
        except UapiError:
            bad = mid
    frames = _gup_frames(process, va, good) if good else np.empty(0, dtype=np.int64)
    try:
        _gup_frames(process, (va & ~(PAGE_SIZE - 1)) + good * PAGE_SIZE, 1)
    except UapiError as e:
        return frames, e
    raise AssertionError("page lookups disagree")  # pragma: no cover


def _compound(process: UserProcess, va: int) -> bool:
    """PageCompound(): a hugetlb page."""
    return any(v.start <= va < v.end and (v.flags & MAP_HUGETLB or (v.file is not None and v.file.hugetlb))
               for v in process.vmas)


def _get_md_domain(ictx: Iommufd, hwpt_id: int) -> PagingDomain:
    """get_md_pagetable(): a HWPT_PAGING whose domain is an unmanaged mock domain (EINVAL otherwise)."""
    hwpt = ictx.objects.get(hwpt_id, ObjType.HWPT_PAGING)
    assert isinstance(hwpt, HwPagetable)
    dom = hwpt.domain
    if dom.type != IOMMU_DOMAIN_UNMANAGED or not isinstance(dom.owner, MockDriver):
        raise UapiError(errno.EINVAL, "not a mock domain")
    return dom


def _get_selftest_obj(ictx: Iommufd, oid: int) -> SelftestObj:
    obj = ictx.objects.get(oid, ObjType.SELFTEST)
    assert isinstance(obj, SelftestObj)
    return obj


def _get_staccess(ictx: Iommufd, fd: int) -> SelftestAccess:
    """iommufd_access_get(): EBADFD for anything but an access fd."""
    obj = ictx.current.fds.get(fd)
    if not isinstance(obj, SelftestAccess):
        raise UapiError(EBADFD, f"fd {fd} is not a selftest access")
    return obj


def _syz_conv_iova(ioas: Any, iova: int) -> int:
    """__iommufd_test_syz_conv_iova(): {u32 nth_area, u32 offset} packed in the IOVA."""
    nth, offset = iova & 0xFFFFFFFF, iova >> 32
    for area in ioas.iopt.areas:
        if nth == 0:
            return area.iova + offset
        nth -= 1
    return 0


# ---------------------------------------------------------------------- ops
def _mock_domain(ucmd: Ucmd, op: int, m: dict[str, int]) -> SelftestObj:
    # iommufd_test_mock_domain() up to the response: the object is still to be finalized
    ictx = ucmd.ictx
    st = _selftest(ictx)
    sobj = ictx.objects.alloc(SelftestObj(ictx))
    dev_flags = m.get("dev_flags", 0) if op == uapi.IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS else 0
    try:
        mdev = st.dev_create(dev_flags)
    except UapiError:
        ictx.objects.abort(sobj)
        raise
    try:
        idev = device_bind(ictx, mdev.dev, is_mock=True)
    except UapiError:
        st.dev_destroy(mdev)
        ictx.objects.abort(sobj)
        raise
    try:
        pt_id = device_attach(idev, IOMMU_NO_PASID, ucmd.cmd["id"])
    except UapiError:
        device_unbind(idev)
        st.dev_destroy(mdev)
        ictx.objects.abort(sobj)
        raise
    sobj.idev, sobj.mock_dev = idev, mdev
    m["out_hwpt_id"] = pt_id
    m["out_stdev_id"] = sobj.id
    m["out_idev_id"] = idev.id
    return sobj


def _md_check_map(ictx: Iommufd, hwpt_id: int, iova: int, length: int, uptr: int) -> None:
    dom = _get_md_domain(ictx, hwpt_id)
    page_size = dom.pgsize_bitmap & -dom.pgsize_bitmap
    if iova % page_size or length % page_size or uptr % page_size or uptr + length > ULONG_MAX:
        raise UapiError(errno.EINVAL, "unaligned check")
    proc = ictx.current.process
    n = length // page_size
    if not n:
        return
    first = uptr & ~(PAGE_SIZE - 1)
    last = (uptr + length - 1) & ~(PAGE_SIZE - 1)
    # selftest.c iommufd_test_md_check_pa(): looks each user page up and compares it in turn, so a
    # mismatch before the first page that fails to look up is EINVAL, and that page's error comes after
    frames, err = _gup_each(proc, first, (last - first) // PAGE_SIZE + 1)
    offs = np.arange(n, dtype=np.int64) * page_size
    vas = uptr + offs
    n_ok = int(np.count_nonzero((vas - first) // PAGE_SIZE < len(frames)))
    want = frames[(vas[:n_ok] - first) // PAGE_SIZE] * PAGE_SIZE + vas[:n_ok] % PAGE_SIZE
    for k in range(n_ok):
        if dom.iova_to_phys(iova + int(offs[k])) != int(want[k]):
            raise UapiError(errno.EINVAL,
                            f"iova {iova + int(offs[k]):#x} does not map user va {int(vas[k]):#x}")
    if err is not None:
        raise err


def _md_check_refs(ictx: Iommufd, uptr: int, length: int, refs: int) -> None:
    if length % PAGE_SIZE or uptr % PAGE_SIZE or uptr + length > ULONG_MAX:
        raise UapiError(errno.EINVAL, "unaligned check")
    if not length:
        return
    proc = ictx.current.process
    # selftest.c iommufd_test_md_check_refs(): page by page, so a wrong count before the first page that
    # fails to look up is EIO, and that page's error comes after
    frames, err = _gup_each(proc, uptr, length // PAGE_SIZE)
    pins = proc.mem.pincount[frames]
    for k in range(len(frames)):
        if int(pins[k]) != refs and not _compound(proc, uptr + k * PAGE_SIZE):
            raise UapiError(errno.EIO,
                            f"page {uptr + k * PAGE_SIZE:#x} has {int(pins[k])} pins, expected {refs}")
    if err is not None:
        raise err


def _create_access(ucmd: Ucmd, m: dict[str, int]) -> None:
    ictx = ucmd.ictx
    flags = m["flags"]
    if flags & ~uapi.MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES:
        raise UapiError(errno.EOPNOTSUPP, f"access flags {flags:#x}")
    fail_point("iommufd_test_alloc_access: kzalloc(struct selftest_access)")
    fail_point("iommufd_test_alloc_access: anon_inode_getfile")
    staccess = SelftestAccess()
    ops = AccessOps(needs_pin_pages=bool(flags & uapi.MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES),
                    unmap=staccess.unmap)
    access = access_create(ictx, ops)
    try:
        access.attach(ucmd.cmd["id"])
    except UapiError:
        access_destroy(access)
        raise
    staccess.access = access
    m["out_access_fd"] = ictx.current.fd_install(staccess)


def _access_pages(ucmd: Ucmd, m: dict[str, int]) -> None:
    ictx = ucmd.ictx
    iova, length, uptr, flags = m["iova"], m["length"], m["uptr"], m["flags"]
    if length > _SZ_16M:
        raise UapiError(errno.ENOMEM, "length above 16 MiB")
    if flags & ~(uapi.MOCK_FLAGS_ACCESS_WRITE | uapi.MOCK_FLAGS_ACCESS_SYZ):
        raise UapiError(errno.EOPNOTSUPP, f"flags {flags:#x}")
    staccess = _get_staccess(ictx, ucmd.cmd["id"])
    access = staccess.access
    assert access is not None
    if access.ops is None or not access.ops.needs_pin_pages:
        raise UapiError(errno.EOPNOTSUPP, "access was created without NEEDS_PIN_PAGES")
    if flags & uapi.MOCK_FLAGS_ACCESS_SYZ:
        iova = _syz_conv_iova(access.ioas, iova) if access.ioas is not None else 0
    npages = (-(-(iova + length) // PAGE_SIZE) * PAGE_SIZE - (iova & ~(PAGE_SIZE - 1))) // PAGE_SIZE
    fail_point("iommufd_test_access_pages: kvzalloc(pages)")
    frames = access.pin_pages(iova, length, flags & uapi.MOCK_FLAGS_ACCESS_WRITE)
    try:
        if uptr:  # iommufd_test_check_pages(): page by page, EBADE before a later page's lookup error
            user, err = _gup_each(ictx.current.process,
                                  (uptr - (iova - (iova & ~(PAGE_SIZE - 1)))) & ULONG_MAX, npages)
            if not np.array_equal(user, frames[:len(user)]):
                raise UapiError(errno.EBADE, "pinned pages differ from the user pages")
            if err is not None:
                raise err
        fail_point("iommufd_test_access_pages: kzalloc(struct selftest_access_item)")
    except UapiError:
        access.unpin_pages(iova, length)
        raise
    item = AccessItem(iova, length, staccess.next_id)
    staccess.next_id += 1
    staccess.items.append(item)
    m["out_access_pages_id"] = item.id


def _access_rw(ucmd: Ucmd, m: dict[str, int]) -> None:
    ictx = ucmd.ictx
    iova, length, uptr, flags = m["iova"], m["length"], m["uptr"], m["flags"]
    if length > _SZ_16M:
        raise UapiError(errno.ENOMEM, "length above 16 MiB")
    if flags & ~(uapi.MOCK_ACCESS_RW_WRITE | uapi.MOCK_ACCESS_RW_SLOW_PATH | uapi.MOCK_FLAGS_ACCESS_SYZ):
        raise UapiError(errno.EOPNOTSUPP, f"flags {flags:#x}")
    staccess = _get_staccess(ictx, ucmd.cmd["id"])
    access = staccess.access
    assert access is not None
    fail_point("iommufd_test_access_rw: kvzalloc(tmp)")
    data = None
    if flags & uapi.MOCK_ACCESS_RW_WRITE:
        data = ictx.copy_from_user(uptr, length)
    if flags & uapi.MOCK_FLAGS_ACCESS_SYZ:
        iova = _syz_conv_iova(access.ioas, iova) if access.ioas is not None else 0
    out = access.rw(iova, length, flags & ~uapi.MOCK_FLAGS_ACCESS_SYZ, data)
    if not flags & uapi.MOCK_ACCESS_RW_WRITE:
        ictx.copy_to_user(uptr, out)


def _destroy_access_pages(ictx: Iommufd, fd: int, item_id: int) -> None:
    staccess = _get_staccess(ictx, fd)
    for item in staccess.items:
        if item.id == item_id:
            staccess.items.remove(item)
            assert staccess.access is not None
            staccess.access.unpin_pages(item.iova, item.length)
            return
    raise UapiError(errno.ENOENT, f"no access pages item {item_id}")


def _dirty(ucmd: Ucmd, m: dict[str, int]) -> None:
    ictx = ucmd.ictx
    iova, length, page_size, uptr = m["iova"], m["length"], m["page_size"], m["uptr"]
    if not page_size or not length or iova % page_size or length % page_size or not uptr:
        raise UapiError(errno.EINVAL, "bad dirty range")
    nbits = length // page_size
    if nbits > _SZ_16M * 8:
        raise UapiError(errno.EOVERFLOW, "too many pages")
    dom = _get_md_domain(ictx, ucmd.cmd["id"])
    if not dom.dirty_tracking:
        raise UapiError(errno.EINVAL, "dirty tracking is off")
    raw = ictx.copy_from_user(uptr, -(-nbits // 8))
    bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8), bitorder="little")[:nbits]
    idx = np.flatnonzero(bits)
    for i in idx.tolist():  # the selftest marks one PTE per set bit (ops->set_dirty); errors are ignored
        try:
            dom.pt.set_dirty(iova + i * page_size)
        except UapiError:
            pass
    m["out_nr_dirty"] = len(idx)


def _pasid_check_hwpt(ictx: Iommufd, stdev_id: int, pasid: int, hwpt_id: int) -> None:
    sobj = _get_selftest_obj(ictx, stdev_id)
    assert sobj.idev is not None
    dom = attached_domain(sobj.idev, pasid)
    if not hwpt_id:
        if dom is not None:
            raise UapiError(errno.EINVAL, f"PASID {pasid} is attached")
        return
    hwpt = ictx.objects.get(hwpt_id)
    if hwpt.type not in (ObjType.HWPT_NESTED, ObjType.HWPT_PAGING):
        raise UapiError(errno.EINVAL, f"object {hwpt_id} is not a HWPT")
    assert isinstance(hwpt, HwPagetable)
    if dom is not hwpt.domain:
        raise UapiError(errno.EINVAL, f"PASID {pasid} is not attached to HWPT {hwpt_id}")


_MEMBER_NAMES: Final[dict[int, str]] = {
        uapi.IOMMU_TEST_OP_ADD_RESERVED: "add_reserved", uapi.IOMMU_TEST_OP_MOCK_DOMAIN: "mock_domain",
        uapi.IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS: "mock_domain_flags",
        uapi.IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE: "mock_domain_replace",
        uapi.IOMMU_TEST_OP_MD_CHECK_MAP: "check_map", uapi.IOMMU_TEST_OP_MD_CHECK_REFS: "check_refs",
        uapi.IOMMU_TEST_OP_CREATE_ACCESS: "create_access",
        uapi.IOMMU_TEST_OP_DESTROY_ACCESS_PAGES: "destroy_access_pages",
        uapi.IOMMU_TEST_OP_ACCESS_PAGES: "access_pages", uapi.IOMMU_TEST_OP_ACCESS_RW: "access_rw",
        uapi.IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT: "memory_limit",
        uapi.IOMMU_TEST_OP_ACCESS_REPLACE_IOAS: "access_replace_ioas", uapi.IOMMU_TEST_OP_DIRTY: "dirty",
        uapi.IOMMU_TEST_OP_MD_CHECK_IOTLB: "check_iotlb", uapi.IOMMU_TEST_OP_TRIGGER_IOPF: "trigger_iopf",
        uapi.IOMMU_TEST_OP_DEV_CHECK_CACHE: "check_dev_cache",
        uapi.IOMMU_TEST_OP_TRIGGER_VEVENT: "trigger_vevent", uapi.IOMMU_TEST_OP_PASID_ATTACH: "pasid_attach",
        uapi.IOMMU_TEST_OP_PASID_REPLACE: "pasid_replace", uapi.IOMMU_TEST_OP_PASID_DETACH: "pasid_detach",
        uapi.IOMMU_TEST_OP_PASID_CHECK_HWPT: "pasid_check", uapi.IOMMU_TEST_OP_DMABUF_GET: "dmabuf_get",
        uapi.IOMMU_TEST_OP_DMABUF_REVOKE: "dmabuf_revoke",
}
"""IOMMU_TEST_OP_* -> the union member of struct iommu_test_cmd it uses."""


def _member_name(op: int) -> str | None:
    return _MEMBER_NAMES.get(op)


def test_cmd(ucmd: Ucmd) -> int:
    """IOMMU_TEST_CMD (selftest.c iommufd_test()): the union member of ``op`` is decoded, the op runs,
    and outputs are written back into the union where the kernel responds."""
    ictx = ucmd.ictx
    cmd = ucmd.cmd
    op = cmd["op"]
    name = _member_name(op)
    if name is None:
        raise UapiError(errno.EOPNOTSUPP, f"test op {op}")
    mst = uapi.TEST_CMD_MEMBERS[name]
    base = uapi.TEST_CMD_UNION_OFFSET
    m = mst.unpack(bytes(ucmd.raw[base:base + mst.size]))

    def respond() -> None:
        ucmd.raw[base:base + mst.size] = mst.pack(m)
        ucmd.respond()

    oid = cmd["id"]
    if op == uapi.IOMMU_TEST_OP_ADD_RESERVED:
        start, length = m["start"], m["length"]
        if not length:
            raise UapiError(errno.EINVAL, "zero length")
        if start + length - 1 > ULONG_MAX:
            raise UapiError(errno.EOVERFLOW, "start + length overflows")
        get_ioas(ictx, oid).iopt.reserve_iova(start, start + length - 1, None)
        return 0
    if op in (uapi.IOMMU_TEST_OP_MOCK_DOMAIN, uapi.IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS):
        sobj = _mock_domain(ucmd, op, m)
        try:
            respond()
        except UapiError:  # out_detach, out_unbind, out_mdev, out_sobj
            assert sobj.idev is not None and sobj.mock_dev is not None
            device_detach(sobj.idev, IOMMU_NO_PASID)
            device_unbind(sobj.idev)
            _selftest(ictx).dev_destroy(sobj.mock_dev)
            ictx.objects.abort(sobj)
            raise
        ictx.objects.finalize(sobj)
        return 0
    if op == uapi.IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE:
        sobj = _get_selftest_obj(ictx, oid)
        assert sobj.idev is not None
        m["pt_id"] = device_replace(sobj.idev, IOMMU_NO_PASID, m["pt_id"])
        respond()
        return 0
    if op == uapi.IOMMU_TEST_OP_MD_CHECK_MAP:
        _md_check_map(ictx, oid, m["iova"], m["length"], m["uptr"])
        return 0
    if op == uapi.IOMMU_TEST_OP_MD_CHECK_REFS:
        _md_check_refs(ictx, m["uptr"], m["length"], m["refs"])
        return 0
    if op == uapi.IOMMU_TEST_OP_MD_CHECK_IOTLB:
        hwpt = ictx.objects.get(oid, ObjType.HWPT_NESTED)
        assert isinstance(hwpt, HwPagetable)
        dom = hwpt.domain
        if dom.type != IOMMU_DOMAIN_NESTED or not isinstance(dom, NestedDomain) or \
                not isinstance(dom.owner, MockDriver):
            raise UapiError(errno.EINVAL, "not a mock nested domain")
        if m["id"] > uapi.MOCK_NESTED_DOMAIN_IOTLB_ID_MAX or dom.data["iotlb"][m["id"]] != m["iotlb"]:
            raise UapiError(errno.EINVAL, f"iotlb[{m['id']}] is not {m['iotlb']:#x}")
        return 0
    if op == uapi.IOMMU_TEST_OP_DEV_CHECK_CACHE:
        idev = get_device(ictx, oid)
        mdev = _selftest(ictx).devs.get(id(idev.dev))
        if mdev is None:
            raise UapiError(errno.EINVAL, "not a mock device")
        if m["id"] > uapi.MOCK_DEV_CACHE_ID_MAX or mdev.cache[m["id"]] != m["cache"]:
            raise UapiError(errno.EINVAL, f"cache[{m['id']}] is not {m['cache']:#x}")
        return 0
    if op == uapi.IOMMU_TEST_OP_CREATE_ACCESS:
        _create_access(ucmd, m)
        try:
            respond()
        except UapiError:
            ictx.current.close(m["out_access_fd"])
            raise
        return 0
    if op == uapi.IOMMU_TEST_OP_ACCESS_REPLACE_IOAS:
        staccess = _get_staccess(ictx, oid)
        assert staccess.access is not None
        staccess.access.replace(m["ioas_id"])
        return 0
    if op == uapi.IOMMU_TEST_OP_ACCESS_PAGES:
        _access_pages(ucmd, m)
        respond()
        return 0
    if op == uapi.IOMMU_TEST_OP_ACCESS_RW:
        _access_rw(ucmd, m)
        return 0
    if op == uapi.IOMMU_TEST_OP_DESTROY_ACCESS_PAGES:
        _destroy_access_pages(ictx, oid, m["access_pages_id"])
        return 0
    if op == uapi.IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT:
        if m["limit"] < 8 + 4:  # _batch_init() needs one unsigned long + u32
            raise UapiError(errno.EINVAL, f"memory limit {m['limit']}")
        _selftest(ictx).set_memory_limit(m["limit"])
        return 0
    if op == uapi.IOMMU_TEST_OP_DIRTY:
        _dirty(ucmd, m)
        respond()
        return 0
    if op == uapi.IOMMU_TEST_OP_TRIGGER_IOPF:  # iommufd_test_trigger_iopf()
        idev = get_device(ictx, m["dev_id"])
        if not _selftest(ictx).is_mock_dev(idev.dev):
            raise UapiError(errno.EINVAL, "not a mock device")
        flags = IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE
        if m["pasid"] != IOMMU_NO_PASID:
            flags |= IOMMU_FAULT_PAGE_REQUEST_PASID_VALID
        iommu_report_device_fault(idev.dev, PageRequest(flags, m["pasid"], m["grpid"], m["perm"], m["addr"]))
        return 0
    if op == uapi.IOMMU_TEST_OP_TRIGGER_VEVENT:  # iommufd_test_trigger_vevent()
        idev = get_device(ictx, m["dev_id"])
        mdev = _selftest(ictx).state_of(idev.dev)
        if mdev is None or mdev.viommu is None or not mdev.vdev_id:
            raise UapiError(errno.ENOENT, "the mock device is not behind a vIOMMU with a vDEVICE")
        event = uapi.iommu_viommu_event_selftest.pack(virt_id=mdev.vdev_id & 0xFFFF_FFFF)
        mdev.viommu.report_event(uapi.IOMMU_VEVENTQ_TYPE_SELFTEST, event)
        return 0
    if op in (uapi.IOMMU_TEST_OP_PASID_ATTACH, uapi.IOMMU_TEST_OP_PASID_REPLACE):
        sobj = _get_selftest_obj(ictx, oid)
        assert sobj.idev is not None
        if op == uapi.IOMMU_TEST_OP_PASID_ATTACH:
            m["pt_id"] = device_attach(sobj.idev, m["pasid"], m["pt_id"])
            try:
                respond()
            except UapiError:
                device_detach(sobj.idev, m["pasid"])
                raise
        else:
            m["pt_id"] = device_replace(sobj.idev, m["pasid"], m["pt_id"])
            respond()
        return 0
    if op == uapi.IOMMU_TEST_OP_PASID_DETACH:
        sobj = _get_selftest_obj(ictx, oid)
        assert sobj.idev is not None
        device_detach(sobj.idev, m["pasid"])
        return 0
    if op == uapi.IOMMU_TEST_OP_PASID_CHECK_HWPT:
        _pasid_check_hwpt(ictx, oid, m["pasid"], m["hwpt_id"])
        return 0
    if op == uapi.IOMMU_TEST_OP_DMABUF_GET:  # iommufd_test_dmabuf_get(): returns the fd
        length = -(-m["length"] // PAGE_SIZE) * PAGE_SIZE
        if length == 0 or length > PAGE_SIZE * 512:
            raise UapiError(errno.EINVAL, f"dma-buf length {m['length']:#x}")
        return ictx.current.fd_install(SelftestDmaBuf(_selftest(ictx).mem, length))
    if op == uapi.IOMMU_TEST_OP_DMABUF_REVOKE:
        f = ictx.current.fget(m["dmabuf_fd"])
        if not hasattr(f, "iommufd_pages"):
            raise UapiError(errno.EINVAL, f"fd {m['dmabuf_fd']} is not a dma-buf")  # dma_buf_get()
        if not isinstance(f, SelftestDmaBuf):
            raise UapiError(errno.EOPNOTSUPP, "not the selftest's dma-buf")
        f.set_revoked(bool(m["revoked"]))
        return 0
    raise UapiError(errno.EOPNOTSUPP, f"test op {op} ({name}) is not modelled yet")


# ---------------------------------------------------------------------- Python API
class SelftestOps:
    """IOMMU_TEST_OP_* as methods of an :class:`~vfiolab.iommufd.main.Iommufd` with the mock."""

    def __init__(self, ictx: Iommufd) -> None:
        self.ictx = ictx

    def _call(self, op: int, oid: int = 0, **member: int) -> dict[str, int]:
        return self._call_rc(op, oid, **member)[1]

    def _call_rc(self, op: int, oid: int = 0, **member: int) -> tuple[int, dict[str, int]]:
        name = _member_name(op)
        assert name is not None
        mst = uapi.TEST_CMD_MEMBERS[name]
        st = uapi.iommu_test_cmd
        buf = bytearray(st.pack(size=st.size, op=op, id=oid))
        base = uapi.TEST_CMD_UNION_OFFSET
        buf[base:base + mst.size] = mst.pack(member)
        rc = self.ictx.ioctl_rc(uapi.IOMMU_TEST_CMD, buf)
        return rc, mst.unpack(bytes(buf[base:base + mst.size]))

    def dmabuf_get(self, length: int, open_flags: int = 0o2000000) -> int:
        """IOMMU_TEST_OP_DMABUF_GET: the new dma-buf fd (O_CLOEXEC by default)."""
        return self._call_rc(uapi.IOMMU_TEST_OP_DMABUF_GET, 0, length=length, open_flags=open_flags)[0]

    def dmabuf_revoke(self, dmabuf_fd: int, revoked: bool) -> None:
        """IOMMU_TEST_OP_DMABUF_REVOKE."""
        self._call(uapi.IOMMU_TEST_OP_DMABUF_REVOKE, 0, dmabuf_fd=dmabuf_fd, revoked=int(revoked))

    def add_reserved(self, ioas_id: int, start: int, length: int) -> None:
        """IOMMU_TEST_OP_ADD_RESERVED."""
        self._call(uapi.IOMMU_TEST_OP_ADD_RESERVED, ioas_id, start=start, length=length)

    def mock_domain(self, pt_id: int, dev_flags: int | None = None) -> MockDomainOut:
        """IOMMU_TEST_OP_MOCK_DOMAIN (or _FLAGS when ``dev_flags`` is given)."""
        if dev_flags is None:
            out = self._call(uapi.IOMMU_TEST_OP_MOCK_DOMAIN, pt_id)
        else:
            out = self._call(uapi.IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS, pt_id, dev_flags=dev_flags)
        return MockDomainOut(out["out_stdev_id"], out["out_hwpt_id"], out["out_idev_id"])

    def mock_domain_replace(self, stdev_id: int, pt_id: int) -> int:
        """IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE: the HWPT now attached."""
        return self._call(uapi.IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE, stdev_id, pt_id=pt_id)["pt_id"]

    def md_check_map(self, hwpt_id: int, iova: int, length: int, uptr: int) -> None:
        """IOMMU_TEST_OP_MD_CHECK_MAP."""
        self._call(uapi.IOMMU_TEST_OP_MD_CHECK_MAP, hwpt_id, iova=iova, length=length, uptr=uptr)

    def md_check_refs(self, uptr: int, length: int, refs: int) -> None:
        """IOMMU_TEST_OP_MD_CHECK_REFS."""
        self._call(uapi.IOMMU_TEST_OP_MD_CHECK_REFS, 0, uptr=uptr, length=length, refs=refs)

    def md_check_iotlb(self, hwpt_id: int, iotlb_id: int, iotlb: int) -> None:
        """IOMMU_TEST_OP_MD_CHECK_IOTLB."""
        self._call(uapi.IOMMU_TEST_OP_MD_CHECK_IOTLB, hwpt_id, id=iotlb_id, iotlb=iotlb)

    def dev_check_cache(self, idev_id: int, cache_id: int, cache: int) -> None:
        """IOMMU_TEST_OP_DEV_CHECK_CACHE."""
        self._call(uapi.IOMMU_TEST_OP_DEV_CHECK_CACHE, idev_id, id=cache_id, cache=cache)

    def create_access(self, ioas_id: int, flags: int = 0) -> int:
        """IOMMU_TEST_OP_CREATE_ACCESS: the access fd (close it with ``Task.close``)."""
        return self._call(uapi.IOMMU_TEST_OP_CREATE_ACCESS, ioas_id, flags=flags)["out_access_fd"]

    def destroy_access(self, access_fd: int) -> None:
        """close() of an access fd."""
        self.ictx.current.close(access_fd)

    def access_replace_ioas(self, access_fd: int, ioas_id: int) -> None:
        """IOMMU_TEST_OP_ACCESS_REPLACE_IOAS."""
        self._call(uapi.IOMMU_TEST_OP_ACCESS_REPLACE_IOAS, access_fd, ioas_id=ioas_id)

    def access_pages(self, access_fd: int, iova: int, length: int, uptr: int = 0, flags: int = 0) -> int:
        """IOMMU_TEST_OP_ACCESS_PAGES: the item ID."""
        return self._call(uapi.IOMMU_TEST_OP_ACCESS_PAGES, access_fd, iova=iova, length=length, uptr=uptr,
                          flags=flags)["out_access_pages_id"]

    def destroy_access_pages(self, access_fd: int, access_pages_id: int) -> None:
        """IOMMU_TEST_OP_DESTROY_ACCESS_PAGES."""
        self._call(uapi.IOMMU_TEST_OP_DESTROY_ACCESS_PAGES, access_fd, access_pages_id=access_pages_id)

    def access_rw(self, access_fd: int, iova: int, length: int, uptr: int, flags: int = 0) -> None:
        """IOMMU_TEST_OP_ACCESS_RW."""
        self._call(uapi.IOMMU_TEST_OP_ACCESS_RW, access_fd, iova=iova, length=length, uptr=uptr, flags=flags)

    def set_temp_memory_limit(self, limit: int) -> None:
        """IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT."""
        self._call(uapi.IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT, 0, limit=limit)

    def dirty(self, hwpt_id: int, iova: int, length: int, page_size: int, uptr: int, flags: int = 0) -> int:
        """IOMMU_TEST_OP_DIRTY: the number of bits set."""
        return self._call(uapi.IOMMU_TEST_OP_DIRTY, hwpt_id, iova=iova, length=length, page_size=page_size,
                          uptr=uptr, flags=flags)["out_nr_dirty"]

    def trigger_iopf(self, dev_id: int, pasid: int, grpid: int, perm: int, addr: int) -> None:
        """IOMMU_TEST_OP_TRIGGER_IOPF: the mock device reports a page request."""
        self._call(uapi.IOMMU_TEST_OP_TRIGGER_IOPF, 0, dev_id=dev_id, pasid=pasid, grpid=grpid, perm=perm,
                   addr=addr)

    def trigger_vevent(self, dev_id: int) -> None:
        """IOMMU_TEST_OP_TRIGGER_VEVENT: the device's vIOMMU reports a selftest vEVENT."""
        self._call(uapi.IOMMU_TEST_OP_TRIGGER_VEVENT, 0, dev_id=dev_id)

    def pasid_attach(self, stdev_id: int, pasid: int, pt_id: int) -> int:
        """IOMMU_TEST_OP_PASID_ATTACH."""
        return self._call(uapi.IOMMU_TEST_OP_PASID_ATTACH, stdev_id, pasid=pasid, pt_id=pt_id)["pt_id"]

    def pasid_replace(self, stdev_id: int, pasid: int, pt_id: int) -> int:
        """IOMMU_TEST_OP_PASID_REPLACE."""
        return self._call(uapi.IOMMU_TEST_OP_PASID_REPLACE, stdev_id, pasid=pasid, pt_id=pt_id)["pt_id"]

    def pasid_detach(self, stdev_id: int, pasid: int) -> None:
        """IOMMU_TEST_OP_PASID_DETACH."""
        self._call(uapi.IOMMU_TEST_OP_PASID_DETACH, stdev_id, pasid=pasid)

    def pasid_check_hwpt(self, stdev_id: int, pasid: int, hwpt_id: int) -> None:
        """IOMMU_TEST_OP_PASID_CHECK_HWPT (hwpt_id 0: check detached)."""
        self._call(uapi.IOMMU_TEST_OP_PASID_CHECK_HWPT, stdev_id, pasid=pasid, hwpt_id=hwpt_id)


__all__ = ["MockDomainOut", "MockIommu", "SelftestOps", "test_cmd"]
