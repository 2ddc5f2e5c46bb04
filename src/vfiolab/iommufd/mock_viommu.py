"""The selftest mock's vIOMMU (``drivers/iommu/iommufd/selftest.c``: mock_viommu_*, mock_hw_queue_*,
mock_domain_nop_attach): the IOMMU core's :class:`~vfiolab.iommu.driver.MockDriver` extended with the
iommu_ops the core model does not have (get_viommu_size, viommu_init) and with the attach rule that a
vIOMMU's nested domain needs the device's vDEVICE there (ENOENT).

A mock vIOMMU optionally loops back ``struct iommu_viommu_selftest`` (in_data to out_data and to the
first word of two kernel pages offered for mmap()), invalidates mock device caches by virtual device
ID, and accepts up to two HW queues that must be allocated in index order, each depending on the
previous one.
"""

from __future__ import annotations

import errno
import struct
from typing import TYPE_CHECKING, Protocol

from vfiolab.errors import UapiError
from vfiolab.iommu.device import IommuDevice
from vfiolab.iommu.domain import IOMMU_DOMAIN_NESTED, IommuDomain, PagingDomain
from vfiolab.iommu.driver import MockDriver
from vfiolab.iommu.nested import NestedDomain
from vfiolab.iommufd import uapi
from vfiolab.iommufd.uapi import PAGE_SIZE
from vfiolab.iommufd.userdata import UserData, copy_full_user_array, copy_user_data, copy_user_data_to_user
from vfiolab.iommufd.viommu import IommufdHwQueue, IommufdViommu, object_depend, object_undepend
from vfiolab.memory import MemFile

if TYPE_CHECKING:
    from collections.abc import Callable

    from vfiolab.iommufd.device import IommufdDevice

MOCK_VIOMMU_PAGES = 2
"""mock_viommu_init() allocates two pages for the mmap loopback."""


class MockDevState(Protocol):
    """What the mock keeps per device (struct mock_dev): its vIOMMU and virtual ID, its cache."""

    viommu: IommufdViommu | None
    vdev_id: int
    cache: list[int]


class SelftestDriver(MockDriver):
    """struct iommu_ops mock_ops: the core's mock driver plus vIOMMU support and the vDEVICE rule of
    mock_domain_nop_attach()."""

    def __init__(self, state_of: Callable[[IommuDevice], MockDevState | None]) -> None:
        super().__init__()
        self.state_of = state_of
        """The mock's per-device state (to_mock_dev())."""

    def attach_dev(self, domain: IommuDomain, dev: IommuDevice, old: IommuDomain | None) -> None:
        """mock_domain_nop_attach(): the driver checks (dirty tracking), then a nested domain of a
        vIOMMU needs the device's vDEVICE (ENOENT) and the device remembers its vIOMMU and ID."""
        state = self.state_of(dev)
        if domain is not self.blocked_domain:
            self.check_attach(domain, dev)
        new_viommu: IommufdViommu | None = None
        vdev_id = 0
        if domain.type == IOMMU_DOMAIN_NESTED and isinstance(domain, NestedDomain):
            new_viommu = domain.data.get("viommu")
            if new_viommu is not None:
                vdev_id = new_viommu.get_vdev_id(dev)
        if state is not None and new_viommu is not state.viommu:
            state.viommu, state.vdev_id = new_viommu, vdev_id
        super().attach_dev(domain, dev, old)

    # ------------------------------------------------------------------ ops->get_viommu_size / viommu_init
    def get_viommu_size(self, dev: IommuDevice, viommu_type: int) -> int:
        """mock_get_viommu_size(): only IOMMU_VIOMMU_TYPE_SELFTEST."""
        return 1 if viommu_type == uapi.IOMMU_VIOMMU_TYPE_SELFTEST else 0

    def viommu_init(self, viommu: IommufdViommu, parent_domain: PagingDomain, ud: UserData | None) -> MockViommu:
        """mock_viommu_init(): with user data, copy it in (min ``out_data``), offer two zeroed pages
        for mmap() holding ``in_data``, and copy back out_data = in_data and the mmap offset/length."""
        ictx = viommu.ictx
        page: MemFile | None = None
        offset = 0
        if ud is not None:
            st = uapi.iommu_viommu_selftest
            data = copy_user_data(ictx, st, ud, uapi.IOMMU_VIOMMU_TYPE_SELFTEST, "out_data")
            page = MemFile(parent_domain.mem, MOCK_VIOMMU_PAGES * PAGE_SIZE, name="mock_viommu")
            frames = page.touch(0, MOCK_VIOMMU_PAGES)  # __get_free_pages(__GFP_ZERO, 1)
            for f in frames:
                page.mem.fill(int(f) * PAGE_SIZE, PAGE_SIZE)
            try:
                offset = ictx.mt_mmap.alloc(viommu, page, MOCK_VIOMMU_PAGES * PAGE_SIZE)
                page.mem.write(int(frames[0]) * PAGE_SIZE, struct.pack("<I", data["in_data"]))
                data.update(out_data=data["in_data"], out_mmap_length=MOCK_VIOMMU_PAGES * PAGE_SIZE,
                            out_mmap_offset=offset)
                try:
                    copy_user_data_to_user(ictx, ud, st, data, uapi.IOMMU_VIOMMU_TYPE_SELFTEST, "out_data")
                except UapiError:
                    ictx.mt_mmap.destroy(viommu, offset)
                    raise
            except UapiError:
                page.close()
                raise
        return MockViommu(self, viommu, parent_domain, page, offset)


class MockViommu:
    """struct mock_viommu and mock_viommu_ops."""

    def __init__(self, driver: SelftestDriver, viommu: IommufdViommu, s2_parent: PagingDomain,
                 page: MemFile | None, mmap_offset: int) -> None:
        self.driver = driver
        self.viommu = viommu
        self.s2_parent = s2_parent
        self.page = page
        self.mmap_offset = mmap_offset
        self.hw_queue: list[IommufdHwQueue | None] = [None] * uapi.IOMMU_TEST_HW_QUEUE_MAX

    def destroy(self) -> None:
        """mock_viommu_destroy(): withdraw the mmap offset and free the pages."""
        if self.mmap_offset:
            self.viommu.ictx.mt_mmap.destroy(self.viommu, self.mmap_offset)
        if self.page is not None:
            self.page.close()
            self.page = None

    def alloc_domain_nested(self, idev: IommufdDevice, flags: int, ud: UserData) -> NestedDomain:
        """mock_viommu_alloc_domain_nested(): only IOMMU_HWPT_ALLOC_PASID; selftest data (min
        ``iotlb``); the domain knows its vIOMMU."""
        if flags & ~uapi.IOMMU_HWPT_ALLOC_PASID:
            raise UapiError(errno.EOPNOTSUPP, f"mock vIOMMU nested: flags {flags:#x}")
        if ud.type != uapi.IOMMU_HWPT_DATA_SELFTEST:
            raise UapiError(errno.EOPNOTSUPP, f"mock vIOMMU nested: data type {ud.type:#x}")
        cfg = copy_user_data(self.viommu.ictx, uapi.iommu_hwpt_selftest, ud, uapi.IOMMU_HWPT_DATA_SELFTEST,
                             "iotlb")
        return self.driver.domain_alloc_nested(idev.dev, self.s2_parent, flags, "selftest",
                                               {"iotlb": cfg["iotlb"], "viommu": self.viommu})

    def cache_invalidate(self, array: UserData) -> int:
        """mock_viommu_cache_invalidate(): an empty array of the right type only checks the type;
        otherwise every entry is copied first, then handled in order (flags EOPNOTSUPP, cache_id
        EINVAL, unknown vdev_id EINVAL); the error carries how many were handled."""
        if array.entry_num == 0 and array.type == uapi.IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST:
            return 0
        done = 0
        try:
            cmds = copy_full_user_array(self.viommu.ictx, uapi.iommu_viommu_invalidate_selftest, array,
                                        uapi.IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST)
            for cur in cmds:
                if cur["flags"] & ~uapi.IOMMU_TEST_INVALIDATE_FLAG_ALL:
                    raise UapiError(errno.EOPNOTSUPP, f"invalidation flags {cur['flags']:#x}")
                if cur["cache_id"] > uapi.MOCK_DEV_CACHE_ID_MAX:
                    raise UapiError(errno.EINVAL, f"cache_id {cur['cache_id']}")
                dev = self.viommu.find_dev(cur["vdev_id"])
                state = self.driver.state_of(dev) if dev is not None else None
                if state is None:
                    raise UapiError(errno.EINVAL, f"no vDEVICE {cur['vdev_id']:#x} on the vIOMMU")
                if cur["flags"] & uapi.IOMMU_TEST_INVALIDATE_FLAG_ALL:
                    state.cache[:] = [0] * uapi.MOCK_DEV_CACHE_NUM
                else:
                    state.cache[cur["cache_id"]] = 0
                done += 1
        except UapiError as e:
            e.handled = done  # type: ignore[attr-defined]
            raise
        return done

    def get_hw_queue_size(self, queue_type: int) -> int:
        """mock_viommu_get_hw_queue_size(): only IOMMU_HW_QUEUE_TYPE_SELFTEST."""
        return 1 if queue_type == uapi.IOMMU_HW_QUEUE_TYPE_SELFTEST else 0

    def hw_queue_init_phys(self, queue: IommufdHwQueue, index: int, base_pa: int) -> None:
        """mock_hw_queue_init_phys(): index below the max (EINVAL), free (EEXIST), the previous index
        present (EIO), ``base_pa`` what the nest parent translates the queue IOVA to (EFAULT); a queue
        depends on the previous one."""
        if index >= uapi.IOMMU_TEST_HW_QUEUE_MAX:
            raise UapiError(errno.EINVAL, f"HW queue index {index}")
        if self.hw_queue[index] is not None:
            raise UapiError(errno.EEXIST, f"HW queue {index} exists")
        prev = None
        if index:
            prev = self.hw_queue[index - 1]
            if prev is None:
                raise UapiError(errno.EIO, f"HW queue {index - 1} is missing")
        if base_pa != self.s2_parent.iova_to_phys(queue.base_addr):
            raise UapiError(errno.EFAULT, "the core converted the queue address wrongly")
        if prev is not None:
            object_depend(queue, prev)
        queue.prev, queue.index = prev, index
        self.hw_queue[index] = queue
        queue.on_destroy = self._hw_queue_destroy

    def _hw_queue_destroy(self, queue: IommufdHwQueue) -> None:
        # mock_hw_queue_destroy()
        self.hw_queue[queue.index] = None
        if queue.prev is not None:
            object_undepend(queue, queue.prev)


__all__ = ["MockDevState", "MockViommu", "SelftestDriver"]
