"""vfio-pci on the legacy group path (drivers/vfio/group.c with an iommufd as the container):
VFIO_GROUP_GET_DEVICE_FD matches the PCI name through vfio_pci_core_match() (with " vf_token=" options),
a group-opened device refuses BIND_IOMMUFD, the cdev is blocked while the group is open, and
VFIO_DEVICE_PCI_HOT_RESET takes group fds covering every affected device."""

from __future__ import annotations

import errno
import struct

import pytest
from test_vfio_pci_rig import Rig, behind_root_port

from vfiolab.devices import Edu, PassiveDevice, TestDev
from vfiolab.devices import testdev as T
from vfiolab.errors import UapiError
from vfiolab.pci.function import PcieEndpoint
from vfiolab.vfio import uapi as U
from vfiolab.vfio.cdev import open_cdev
from vfiolab.vfio.group import VfioGroups


def err(e: int):  # type: ignore[no-untyped-def]
    return pytest.raises(UapiError, match=rf"^{errno.errorcode[e]}:")


def test_get_device_fd_by_pci_name() -> None:
    r = Rig(Edu(), bind=False)
    groups = VfioGroups()
    g = groups.register_device(r.vdev)
    gf = groups.open(g, r.proc)
    gf.set_container(r.ictx)
    assert r.vdev.pci_name == "0000:00:00.0"
    with err(errno.ENODEV):
        gf.get_device_fd("0000:00:01.0")
    with err(errno.EINVAL):  # an unknown option after the name
        gf.get_device_fd("0000:00:00.0 foo=1")
    with err(errno.EINVAL):  # a token for a device that is neither PF nor VF
        gf.get_device_fd("0000:00:00.0 vf_token=2ab74924-c335-45f4-9b16-8569e5b08258")
    with err(errno.EINVAL):  # a malformed token
        gf.get_device_fd("0000:00:00.0 vf_token=xyz")
    df = gf.get_device_fd("0000:00:00.0")
    assert df.group is g and df.access_granted and r.vdev.open_count == 1
    assert int.from_bytes(df.pread(0, 4), "little") == 0x010000ED
    st = U.vfio_device_bind_iommufd
    with err(errno.EINVAL):  # BIND_IOMMUFD is for cdev files only
        df.ioctl(U.VFIO_DEVICE_BIND_IOMMUFD, st.pack(argsz=st.size, iommufd=r.ifd))
    with err(errno.EBUSY):  # vfio_device_block_group(): the group is open
        cdev = open_cdev(r.vdev, r.proc)
        cdev.ioctl(U.VFIO_DEVICE_BIND_IOMMUFD, st.pack(argsz=st.size, iommufd=r.ifd))
    df.close()
    gf.close()
    groups.unregister_device(r.vdev)
    r.close()


def test_hot_reset_with_group_fds() -> None:
    a_dev = TestDev()
    b_dev = PassiveDevice(PcieEndpoint(0x1234, 0x0B0B, 0xFF0000, name="b"))
    behind_root_port(a_dev, b_dev)
    a = Rig(a_dev, rid=0x100, bind=False)
    b = Rig(b_dev, mem=a.mem, unit=a.unit, rid=0x101, bind=False)
    groups = VfioGroups()
    ga, gb = groups.register_device(a.vdev), groups.register_device(b.vdev)
    fa, fb = groups.open(ga, a.proc), groups.open(gb, a.proc)
    fa.set_container(a.ictx)
    fb.set_container(a.ictx)
    df = fa.get_device_fd(a.vdev.pci_name)
    info = bytearray(U.vfio_pci_hot_reset_info.pack(argsz=64)) + bytearray(52)
    df.ioctl(U.VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, info)
    hdr = U.vfio_pci_hot_reset_info.unpack(info)
    ids = [struct.unpack_from("<I", info, 12 + 8 * i)[0] for i in range(hdr["count"])]
    assert hdr["flags"] == 0 and ids == [ga.iommu_group.id, gb.iommu_group.id]  # group IDs, not devids
    h = U.vfio_pci_hot_reset
    fd_a, fd_b = a.task.fd_install(fa), a.task.fd_install(fb)
    with err(errno.EINVAL):  # the group path needs group fds
        df.ioctl(U.VFIO_DEVICE_PCI_HOT_RESET, h.pack(argsz=h.size))
    with err(errno.EINVAL):  # b's group missing
        df.ioctl(U.VFIO_DEVICE_PCI_HOT_RESET, h.pack(argsz=h.size + 4, count=1) + struct.pack("<i", fd_a))
    with err(errno.EBADF):
        df.ioctl(U.VFIO_DEVICE_PCI_HOT_RESET, h.pack(argsz=h.size + 4, count=1) + struct.pack("<i", 99))
    with err(errno.EINVAL):  # not a group fd
        df.ioctl(U.VFIO_DEVICE_PCI_HOT_RESET, h.pack(argsz=h.size + 4, count=1) + struct.pack("<i", a.ifd))
    with err(errno.EINVAL):  # more fds than affected devices
        df.ioctl(U.VFIO_DEVICE_PCI_HOT_RESET, h.pack(argsz=h.size + 12, count=3) + struct.pack("<3i", fd_a, fd_b, 3))
    df.pwrite(U.vfio_pci_index_to_offset(0) + T.REG_PASID, (5).to_bytes(4, "little"))
    df.ioctl(U.VFIO_DEVICE_PCI_HOT_RESET, h.pack(argsz=h.size + 8, count=2) + struct.pack("<2i", fd_a, fd_b))
    assert int.from_bytes(df.pread(U.vfio_pci_index_to_offset(0) + T.REG_PASID, 4), "little") == 0
    df.close()
    for f in (fa, fb):
        f.close()
    for r in (a, b):
        groups.unregister_device(r.vdev)
        r.close()
