"""The legacy container and groups: drivers/vfio/container.c (API version, CHECK_EXTENSION polling the
registered drivers, SET_IOMMU needing a group, driver released with the last group, EINVAL for ioctls
before SET_IOMMU) and drivers/vfio/group.c (GET_STATUS flags, SET_CONTAINER with a container or an
iommufd, UNSET_CONTAINER EBUSY while devices use it, GET_DEVICE_FD, one open at a time, device files
holding the group), with Linux 7.2's errno."""

from __future__ import annotations

import errno
import struct

import pytest
from test_vfio_container_builders import K4, Machine, machine, open_mode

from vfiolab.errors import UapiError
from vfiolab.iommufd import Iommufd
from vfiolab.iommufd import uapi as iu
from vfiolab.iommufd.device import device_bind, device_unbind
from vfiolab.iommufd.task import Task
from vfiolab.vfio.container import NoiommuDriver, Type1Driver, VfioContainer, default_drivers
from vfiolab.vfio.group import (
    VFIO_GROUP_FLAGS_CONTAINER_SET,
    VFIO_GROUP_FLAGS_VIABLE,
    VFIO_GROUP_GET_DEVICE_FD,
    VFIO_GROUP_GET_STATUS,
    VFIO_GROUP_SET_CONTAINER,
    VFIO_GROUP_UNSET_CONTAINER,
)
from vfiolab.vfio.pci_core import IommuDmaPort
from vfiolab.vfio.uapi import VFIO_DEVICE_GET_INFO


def err(fn, *args, **kw):  # type: ignore[no-untyped-def]
    with pytest.raises(UapiError) as e:
        fn(*args, **kw)
    return e.value.errno


@pytest.fixture
def m() -> Machine:
    return machine()


def test_api_version_and_extensions_without_groups(m: Machine) -> None:
    """Before SET_IOMMU every registered driver is polled: type1 answers TYPE1/TYPE1v2/UNMAP_ALL, and
    UPDATE_VADDR / DMA_CC only once opened (iommu NULL); vfio-noiommu only in unsafe no-IOMMU mode."""
    c = VfioContainer(m.process)
    assert c.vfio_get_api_version() == 0
    want = {iu.VFIO_TYPE1_IOMMU: 1, iu.VFIO_TYPE1v2_IOMMU: 1, iu.VFIO_UNMAP_ALL: 1, iu.VFIO_UPDATE_VADDR: 0,
            iu.VFIO_DMA_CC_IOMMU: 0, iu.VFIO_NOIOMMU_IOMMU: 0, iu.VFIO_SPAPR_TCE_IOMMU: 0,
            iu.VFIO_SPAPR_TCE_v2_IOMMU: 0, 5: 0, 6: 0, 11: 0}
    assert {e: c.vfio_check_extension(e) for e in want} == want
    unsafe = VfioContainer(m.process, [Type1Driver(), NoiommuDriver(True)])
    assert unsafe.vfio_check_extension(iu.VFIO_NOIOMMU_IOMMU) == 1
    assert err(c.ioctl, iu.VFIO_IOMMU_MAP_DMA, bytes(32)) == errno.EINVAL  # no driver: -EINVAL default
    assert err(c.ioctl, 0x3B00 | 0x7F, None) == errno.EINVAL


def test_set_iommu_rules(m: Machine) -> None:
    g = m.add_group("mock", ["d0"])
    c = VfioContainer(m.process)
    assert err(c.vfio_set_iommu, iu.VFIO_TYPE1v2_IOMMU) == errno.EINVAL  # no group yet
    gf = m.vfio.open(g, m.process)
    gf.set_container(c)
    assert err(c.vfio_set_iommu, 99) == errno.ENODEV
    assert err(c.vfio_set_iommu, iu.VFIO_SPAPR_TCE_IOMMU) == errno.ENODEV
    assert err(c.vfio_set_iommu, iu.VFIO_NOIOMMU_IOMMU) == errno.ENODEV
    c.vfio_set_iommu(iu.VFIO_TYPE1v2_IOMMU)
    assert err(c.vfio_set_iommu, iu.VFIO_TYPE1_IOMMU) == errno.EINVAL  # a driver is set
    assert c.vfio_check_extension(iu.VFIO_UPDATE_VADDR) == 1  # now asked of the opened driver
    assert c.vfio_check_extension(iu.VFIO_DMA_CC_IOMMU) == 0  # the mock has no enforce_cache_coherency
    assert c.vfio_check_extension(iu.VFIO_NOIOMMU_IOMMU) == 0
    assert err(c.ioctl, 0x3B00 | 0x7F, None) == errno.ENOTTY  # type1 does not know it
    gf.unset_container()  # the last group deprivileges the container
    assert c.iommu_driver is None and err(c.ioctl, iu.VFIO_IOMMU_GET_INFO, bytes(24)) == errno.EINVAL


def test_dma_cc_with_snooping_iommu(m: Machine) -> None:
    """VT-d with snoop control: domains enforce coherency, so VFIO_DMA_CC_IOMMU is 1 (type1 asks each
    domain's enforce_cache_coherency at attach)."""
    g = m.add_group("intel", ["d0"], extra={"enforce_coherency": True})
    o = open_mode(m, "vfio_type1v2_iommu", g, "d0")
    assert o.container.vfio_check_extension(iu.VFIO_DMA_CC_IOMMU) == 1


def test_group_status_and_ownership(m: Machine) -> None:
    """VIABLE while nobody owns the IOMMU group's DMA; CONTAINER_SET|VIABLE with a container; a group
    whose DMA is owned elsewhere (an iommufd-bound device) is not viable and cannot join a container."""
    g = m.add_group("mock", ["d0", "d1"])
    gf = m.vfio.open(g, m.process)
    assert gf.get_status() == VFIO_GROUP_FLAGS_VIABLE
    assert err(gf.get_status, argsz=7) == errno.EINVAL
    ictx = Iommufd(m.process)
    idev = device_bind(ictx, m.devices["d1"].iommu_dev)  # type: ignore[arg-type]
    assert gf.get_status() == 0
    assert err(gf.set_container, VfioContainer(m.process)) == errno.EPERM
    device_unbind(idev)
    c = VfioContainer(m.process)
    gf.set_container(c)
    assert gf.get_status() == VFIO_GROUP_FLAGS_CONTAINER_SET | VFIO_GROUP_FLAGS_VIABLE
    assert err(gf.set_container, VfioContainer(m.process)) == errno.EINVAL  # already set
    assert err(device_bind, ictx, m.devices["d0"].iommu_dev) == errno.EPERM  # the container owns it now


def test_group_open_once_and_device_holds_group(m: Machine) -> None:
    g = m.add_group("mock", ["d0"])
    o = open_mode(m, "vfio_type1v2_iommu", g, "d0")
    assert err(m.vfio.open, g, m.process) == errno.EBUSY
    assert err(o.group.unset_container) == errno.EBUSY  # the device file uses the container
    o.group.close()
    assert err(o.group.get_status) == errno.EBADF
    assert err(m.vfio.open, g, m.process) == errno.EBUSY  # the device file still holds the group
    assert g.container is not None
    o.device.close()
    assert g.container is None and g.opened_file is None  # released: container detached
    assert not g.iommu_group.owner_cnt  # type: ignore[union-attr]
    gf = m.vfio.open(g, m.process)
    assert gf.get_status() == VFIO_GROUP_FLAGS_VIABLE


def test_get_device_fd(m: Machine) -> None:
    g = m.add_group("mock", ["d0", "d1"])
    c = VfioContainer(m.process)
    gf = m.vfio.open(g, m.process)
    assert err(gf.get_device_fd, "d0") == errno.EINVAL  # no container
    gf.set_container(c)
    assert err(gf.get_device_fd, "d0") == errno.EINVAL  # no IOMMU driver yet (vfio_group_use_container)
    c.vfio_set_iommu(iu.VFIO_TYPE1_IOMMU)
    assert err(gf.get_device_fd, "nope") == errno.ENODEV
    f0 = gf.get_device_fd("d0")
    f0b = gf.get_device_fd("d0")  # the group path may open a device twice
    assert m.devices["d0"].open_count == 2 and g.container_users == 2  # used once, at the first open
    f0.close()
    assert g.container_users == 2
    f0b.close()
    assert g.container_users == 1
    m.devices["d1"].unregister()
    assert err(gf.get_device_fd, "d1") == errno.ENODEV


def test_raw_group_ioctls(m: Machine) -> None:
    """SET_CONTAINER takes a pointer to an fd (EBADF for a closed one, EBADFD for a file that is neither
    a container nor an iommufd); GET_DEVICE_FD a pointer to a NUL-terminated name (EINVAL if none within
    a page); unknown ioctls ENOTTY."""
    g = m.add_group("mock", ["d0"])
    task = Task.of(m.process)
    gf = m.vfio.open(g, m.process)
    assert err(gf.ioctl, VFIO_GROUP_SET_CONTAINER, struct.pack("<i", 1000)) == errno.EBADF
    other = task.fd_install(object())
    assert err(gf.ioctl, VFIO_GROUP_SET_CONTAINER, struct.pack("<i", other)) == errno.EBADFD
    c = VfioContainer(m.process)
    fd = task.fd_install(c)
    ptr = m.process.mmap(K4)
    m.process.write(ptr, struct.pack("<i", fd))
    assert gf.ioctl(VFIO_GROUP_SET_CONTAINER, ptr) == 0
    status = gf.ioctl(VFIO_GROUP_GET_STATUS, struct.pack("<II", 8, 0))
    assert isinstance(status, bytes) and struct.unpack("<II", status)[1] == 3
    c.ioctl(iu.VFIO_SET_IOMMU, iu.VFIO_TYPE1v2_IOMMU)
    assert err(gf.ioctl, VFIO_GROUP_GET_DEVICE_FD, b"d0") == errno.EFAULT  # no NUL within the argument
    dfd = gf.ioctl(VFIO_GROUP_GET_DEVICE_FD, b"d0\0")
    assert isinstance(dfd, int) and task.fget(dfd).device is m.devices["d0"]  # type: ignore[attr-defined]
    m.process.write(ptr, b"x" * K4)
    assert err(gf.ioctl, VFIO_GROUP_GET_DEVICE_FD, ptr + K4 - 100) == errno.EFAULT  # runs off the mapping
    ptr2 = m.process.mmap(2 * K4)
    m.process.write(ptr2, b"x" * (2 * K4))
    assert err(gf.ioctl, VFIO_GROUP_GET_DEVICE_FD, ptr2) == errno.EINVAL  # longer than PAGE_SIZE
    assert err(gf.ioctl, 0x3B00 | 110, None) == errno.ENOTTY
    assert err(gf.ioctl, VFIO_GROUP_GET_STATUS, None) == errno.EFAULT
    task.close(dfd)
    assert gf.ioctl(VFIO_GROUP_UNSET_CONTAINER, None) == 0
    assert err(gf.ioctl, VFIO_GROUP_UNSET_CONTAINER, None) == errno.EINVAL


def test_device_file_after_open(m: Machine) -> None:
    """The device file from GET_DEVICE_FD has access: device ioctls reach the driver (EINVAL: this
    test driver has no ioctl op) and DMA works through the container's mapping."""
    g = m.add_group("mock", ["d0"])
    o = open_mode(m, "vfio_type1v2_iommu", g, "d0")
    assert o.device.access_granted
    assert err(o.device.ioctl, VFIO_DEVICE_GET_INFO, bytes(24)) == errno.EINVAL
    va = m.process.mmap(4 * K4)
    m.process.write(va + 5, b"payload")
    o.container.vfio_iommu_map_dma(va, 1 << 24, 4 * K4)
    assert IommuDmaPort(m.devices["d0"].iommu_dev).dma_read((1 << 24) + 5, 7) == b"payload"  # type: ignore[arg-type]


def test_two_groups_share_a_container(m: Machine) -> None:
    """A second group joining after SET_IOMMU is attached by the driver at once; one domain serves both
    (same driver and format) and existing mappings reach both devices."""
    ga = m.add_group("mock", ["a"])
    gb = m.add_group("mock", ["b"])
    o = open_mode(m, "vfio_type1v2_iommu", ga, "a")
    va = m.process.mmap(K4)
    m.process.write(va, b"shared")
    o.container.vfio_iommu_map_dma(va, 1 << 24, K4)
    gfb = m.vfio.open(gb, m.process)
    gfb.set_container(o.container)
    gfb.get_device_fd("b")
    assert ga.iommu_group.domain is gb.iommu_group.domain  # type: ignore[union-attr]
    assert isinstance(o.container, VfioContainer)
    assert len(o.container.iommu_data.domains) == 1  # type: ignore[union-attr]
    assert IommuDmaPort(m.devices["b"].iommu_dev).dma_read(1 << 24, 6) == b"shared"  # type: ignore[arg-type]


def test_noiommu_groups_and_containers() -> None:
    """enable_unsafe_noiommu_mode: a device without an IOMMU group gets a noiommu-N group; it joins only a
    container of its kind (EPERM mixing), needs CAP_SYS_RAWIO, and SET_IOMMU takes VFIO_NOIOMMU_IOMMU."""
    from test_vfio_container_builders import PhysDev

    from vfiolab.vfio.group import VfioGroups
    m = machine()
    m.vfio = VfioGroups(noiommu=True)
    real = m.add_group("mock", ["r"])
    dev = PhysDev("bare")
    dev.register()
    g = m.vfio.register_device(dev)
    assert g.name.startswith("noiommu-") and g.name != real.name
    c = VfioContainer(m.process, default_drivers(noiommu=True))
    gf = m.vfio.open(g, m.process)
    gf.set_container(c)
    assert err(m.vfio.open(real, m.process).set_container, c) == errno.EPERM
    assert err(c.vfio_set_iommu, iu.VFIO_TYPE1v2_IOMMU) == errno.ENODEV  # type1 is not allowed here
    c.vfio_set_iommu(iu.VFIO_NOIOMMU_IOMMU)
    assert c.vfio_check_extension(iu.VFIO_NOIOMMU_IOMMU) == 1
    assert err(c.ioctl, iu.VFIO_IOMMU_MAP_DMA, bytes(32)) == errno.ENOTTY
    f = gf.get_device_fd("bare")
    assert f.access_granted
    task = Task.of(m.process)
    task.cap_sys_rawio = False
    try:
        assert err(m.vfio.open, g, m.process) == errno.EPERM  # checked before "already open"
        f.close()
        gf.close()
        assert err(m.vfio.open, g, m.process) == errno.EPERM
    finally:
        task.cap_sys_rawio = True
    m.vfio.open(g, m.process).close()


def test_iommufd_as_container(m: Machine) -> None:
    """SET_CONTAINER with an iommufd creates the compat IOAS; GET_DEVICE_FD binds the device to the
    iommufd and attaches it there; UNSET_CONTAINER drops the context reference."""
    g = m.add_group("mock", ["d0"])
    ictx = Iommufd(m.process, vfio_misc=True)
    assert err(ictx.vfio_ioas, iu.IOMMU_VFIO_IOAS_GET) == errno.ENODEV
    gf = m.vfio.open(g, m.process)
    gf.set_container(ictx)
    ioas = ictx.vfio_ioas(iu.IOMMU_VFIO_IOAS_GET)
    assert gf.get_status() == VFIO_GROUP_FLAGS_CONTAINER_SET | VFIO_GROUP_FLAGS_VIABLE
    f = gf.get_device_fd("d0")
    dev = m.devices["d0"]
    assert dev.iommufd_device is not None and dev.iommufd_attached
    va = m.process.mmap(K4)
    m.process.write(va, b"compat")
    ictx.vfio_set_iommu(iu.VFIO_TYPE1v2_IOMMU)
    ictx.vfio_iommu_map_dma(va, 1 << 24, K4)
    assert IommuDmaPort(dev.iommu_dev).dma_read(1 << 24, 6) == b"compat"  # type: ignore[arg-type]
    assert ictx.ioas_unmap(ioas, 1 << 24, K4) == K4  # the same IOAS through the iommufd uAPI
    f.close()
    assert dev.iommufd_device is None
    gf.unset_container()
    assert g.iommufd is None
    assert err(gf.unset_container) == errno.EINVAL


@pytest.mark.parametrize("version", [iu.VFIO_TYPE1_IOMMU, iu.VFIO_TYPE1v2_IOMMU])
def test_iommufd_compat_through_the_group(m: Machine, version: int) -> None:
    """The selftest's vfio_compat expectations, reached the way VFIO users reach them: SET_IOMMU before
    any group has no compat IOAS (ENODEV); after SET_CONTAINER it works, and type1 turns the compat IOAS's
    huge pages off (IOMMU_OPTION_HUGE_PAGES 0) where type1v2 keeps them (1); GET_INFO reports the mock
    aperture and no migration capability (iommufd does not emulate type1 dirty tracking, whose ioctl is
    ENOTTY)."""
    g = m.add_group("mock", ["d0"])
    ictx = Iommufd(m.process, vfio_misc=True)
    assert err(ictx.vfio_set_iommu, version) == errno.ENODEV
    m.vfio.open(g, m.process).set_container(ictx)
    ictx.vfio_set_iommu(version)
    ioas = ictx.vfio_ioas(iu.IOMMU_VFIO_IOAS_GET)
    huge = ictx.option(iu.IOMMU_OPTION_HUGE_PAGES, iu.IOMMU_OPTION_OP_GET, ioas, val64=3)
    assert huge == (0 if version == iu.VFIO_TYPE1_IOMMU else 1)
    from test_vfio_container_builders import iova_ranges
    assert iova_ranges(ictx) == [(0, (1 << 64) - 1)]  # no domain yet: the IOAS allows everything
    g.opened_file.get_device_fd("d0")  # type: ignore[union-attr]
    assert iova_ranges(ictx) == [(1 << 24, (1 << 31) - 1)]
    assert err(ictx.ioctl, iu.VFIO_IOMMU_DIRTY_PAGES, struct.pack("<II", 8, 1)) == errno.ENOTTY
