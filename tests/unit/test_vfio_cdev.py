"""The device cdev with iommufd (drivers/vfio/device_cdev.c, drivers/vfio/iommufd.c): BIND_IOMMUFD and
its checks (argsz, flags, the iommufd fd, double bind, VF tokens per vfio_pci_core_match_token_uuid()),
ATTACH/DETACH_IOMMUFD_PT for the RID and PASIDs incl. replace, ownership released on close, and hot reset
of a bus with devids (VFIO_PCI_HOT_RESET_FLAG_DEV_ID[_OWNED])."""

from __future__ import annotations

import errno
import struct
import uuid

import pytest
from test_vfio_pci_rig import Rig, behind_root_port

from vfiolab.devices import PassiveDevice, TestDev
from vfiolab.devices import testdev as T
from vfiolab.errors import UapiError
from vfiolab.iommu.domain import IOMMU_DOMAIN_IDENTITY
from vfiolab.iommu.driver import make_unit
from vfiolab.iommu.group import IommuGroup
from vfiolab.iommufd import Iommufd
from vfiolab.memory import PhysMemory
from vfiolab.pci.caps.sriov import SriovCap
from vfiolab.pci.function import PcieEndpoint
from vfiolab.pci.sriov_vf import VfSpec, install_sriov
from vfiolab.vfio import uapi as U
from vfiolab.vfio.cdev import open_cdev
from vfiolab.vfio.pci_core import VfioPciCoreDevice, make_vfio_pci


def err(e: int):  # type: ignore[no-untyped-def]
    return pytest.raises(UapiError, match=rf"^{errno.errorcode[e]}:")


# ---------------------------------------------------------------------- BIND_IOMMUFD
def test_bind_checks() -> None:
    r = Rig(TestDev(), bind=False)
    st = U.vfio_device_bind_iommufd
    with err(errno.EINVAL):  # argsz < offsetofend(out_devid)
        r.df.ioctl(U.VFIO_DEVICE_BIND_IOMMUFD, st.pack(argsz=15, iommufd=r.ifd))
    with err(errno.E2BIG):  # copy_struct_from_user(): non-zero bytes past the struct
        r.df.ioctl(U.VFIO_DEVICE_BIND_IOMMUFD, st.pack(argsz=st.size + 4, iommufd=r.ifd) + b"\1\0\0\0")
    with err(errno.EINVAL):  # iommufd < 0
        r.bind(iommufd=-1)
    with err(errno.EINVAL):  # unknown flags
        r.bind(flags=2)
    with err(errno.EBADF):
        r.bind(iommufd=77)
    with err(errno.EBADFD):  # an open fd that is not /dev/iommu
        r.bind(iommufd=r.task.fd_install(object()))
    with err(errno.EINVAL):  # a token for a device that is neither PF nor VF
        va = r.proc.mmap(4096)
        r.bind(flags=U.VFIO_DEVICE_BIND_FLAG_TOKEN, token_ptr=va)
    with err(errno.EFAULT):  # the token pointer itself faults
        r.bind(flags=U.VFIO_DEVICE_BIND_FLAG_TOKEN, token_ptr=0x1000)
    assert r.vdev.open_count == 0
    devid = r.bind()
    with err(errno.EINVAL):  # one file binds once
        r.bind()
    assert devid == r.vdev.iommufd_device.id
    other = open_cdev(r.vdev, r.proc)
    with err(errno.EINVAL):  # vfio_df_open(): the cdev path cannot open a device twice
        st2 = bytearray(st.pack(argsz=st.size, iommufd=r.ifd))
        other.ioctl(U.VFIO_DEVICE_BIND_IOMMUFD, st2)
    r.close()
    with err(errno.ENODEV):  # unregistered: the node is gone
        open_cdev(r.vdev, r.proc)


def test_group_owned_elsewhere_refuses_bind() -> None:
    """iommufd_device_bind() -> iommu_device_claim_dma_owner(): another context owns the group (EBUSY)."""
    r = Rig(TestDev())
    other = Iommufd(r.proc)
    fd = r.task.fd_install(other)
    df2 = open_cdev(r.vdev, r.proc)
    st = U.vfio_device_bind_iommufd
    with err(errno.EINVAL):  # the device itself is already open
        df2.ioctl(U.VFIO_DEVICE_BIND_IOMMUFD, st.pack(argsz=st.size, iommufd=fd))
    r.close()
    other.close()


def test_closing_the_iommufd_fd_keeps_the_context_until_unbind() -> None:
    """The device file holds an iommufd_ctx reference (iommufd_ctx_from_fd/iommufd_ctx_put)."""
    r = Rig(TestDev())
    r.ictx.close()
    assert not r.ictx.released
    r.df.close()
    assert r.ictx.released
    r.vdev.unregister()


# ---------------------------------------------------------------------- ATTACH / DETACH
def test_attach_detach_checks_and_replace() -> None:
    r = Rig(TestDev())
    a = U.vfio_device_attach_iommufd_pt
    d = U.vfio_device_detach_iommufd_pt
    ioas = r.ictx.ioas_alloc()
    with err(errno.EINVAL):
        r.df.ioctl(U.VFIO_DEVICE_ATTACH_IOMMUFD_PT, a.pack(argsz=11, pt_id=ioas))
    with err(errno.EINVAL):
        r.df.ioctl(U.VFIO_DEVICE_ATTACH_IOMMUFD_PT, a.pack(argsz=16, flags=2, pt_id=ioas))
    with err(errno.EINVAL):  # PASID flag needs argsz to cover pasid
        r.df.ioctl(U.VFIO_DEVICE_ATTACH_IOMMUFD_PT, a.pack(argsz=12, flags=1, pt_id=ioas)[:12])
    with err(errno.ENOENT):  # no such object
        r.attach(999)
    with err(errno.EINVAL):
        r.df.ioctl(U.VFIO_DEVICE_DETACH_IOMMUFD_PT, d.pack(argsz=7))
    with err(errno.EINVAL):
        r.df.ioctl(U.VFIO_DEVICE_DETACH_IOMMUFD_PT, d.pack(argsz=12, flags=4))
    with err(errno.EINVAL):
        r.df.ioctl(U.VFIO_DEVICE_DETACH_IOMMUFD_PT, d.pack(argsz=8, flags=1)[:8])
    r.ioas = ioas
    h1 = r.attach()
    r.map(0x10_0000, 0x1000, b"first")
    r.bus_master()
    assert _dma(r) == b"first"
    ioas2 = r.ictx.ioas_alloc()
    h2 = r.attach(ioas2)  # attach again = iommufd_device_replace()
    assert h2 != h1
    r.map(0x10_0000, 0x1000, b"other", ioas=ioas2)
    assert _dma(r) == b"other"
    with err(errno.EBUSY):  # the old auto domain was put by the replace; the IOAS still holds maps
        r.ictx.destroy(ioas2)
    r.detach()
    assert _dma(r) is None  # blocked again
    r.detach()  # not attached: nothing happens
    r.close()


def _dma(r: Rig) -> bytes | None:
    r.wr(0, T.REG_IOVA, 0x10_0000, 8)
    r.wr(0, T.REG_LENGTH, 5)
    r.wr(0, T.REG_CMD, T.CMD_READ)
    if r.rd(0, T.REG_STATUS) != T.STATUS_DONE:
        return None
    return bytes(r.device.buf.u8[:5])


def test_close_releases_the_group_and_domains() -> None:
    r = Rig(TestDev())
    r.attach()
    group = r.vdev.iommu_dev.group
    assert group.owner is r.ictx
    r.df.close()
    assert group.owner is None and r.vdev.iommufd_device is None and not r.vdev.iommufd_attached
    r.ictx.destroy(r.ioas)  # nothing references the IOAS any more
    r.ictx.close()
    r.vdev.unregister()


# ---------------------------------------------------------------------- hot reset with devids
def _bus_pair(shared_group: bool) -> tuple[Rig, Rig]:
    a_dev = TestDev()
    b_dev = PassiveDevice(PcieEndpoint(0x1234, 0x0B0B, 0xFF0000, name="b"))
    behind_root_port(a_dev, b_dev)
    mem = PhysMemory(1 << 26)
    unit = make_unit("intel", mem)
    group = IommuGroup() if shared_group else None
    a = Rig(a_dev, mem=mem, unit=unit, rid=0x100, group=group)
    b = Rig(b_dev, mem=mem, unit=unit, rid=0x101, group=group, bind=False)
    b.ictx.close()  # b is used by a's process, with a's iommufd
    b.proc, b.task, b.ictx, b.ifd = a.proc, a.task, a.ictx, a.ifd
    b.df = open_cdev(b.vdev, a.proc)
    return a, b


def hot_reset_info(r: Rig, argsz: int = 64, buf: bytearray | None = None
                   ) -> tuple[int, int, list[tuple[int, int, int, int]]]:
    st = U.vfio_pci_hot_reset_info
    if buf is None:
        buf = bytearray(64)
    buf[:st.size] = st.pack(argsz=argsz)
    r.df.ioctl(U.VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, buf)
    h = st.unpack(buf)
    devs = [struct.unpack_from("<IHBB", buf, st.size + 8 * i) for i in range(h["count"])]
    return h["flags"], h["count"], devs


def test_hot_reset_info_and_reset() -> None:
    a, b = _bus_pair(shared_group=False)
    buf = bytearray(64)
    with err(errno.ENOSPC):  # room for one device, two are affected
        hot_reset_info(a, argsz=12 + 8, buf=buf)
    assert U.vfio_pci_hot_reset_info.unpack(buf)["count"] == 2  # the header says how many
    flags, n, devs = hot_reset_info(a)
    assert n == 2 and flags == U.VFIO_PCI_HOT_RESET_FLAG_DEV_ID  # b is not owned: no DEV_ID_OWNED
    assert devs == [(a.devid, 0, 1, 0), (0xFFFFFFFF, 0, 1, 1)]
    h = U.vfio_pci_hot_reset
    with err(errno.EINVAL):  # vfio_pci_dev_set_hot_reset(): b is not owned by this iommufd
        a.df.ioctl(U.VFIO_DEVICE_PCI_HOT_RESET, h.pack(argsz=h.size))
    b_devid = b.bind(iommufd=a.ifd)
    flags, n, devs = hot_reset_info(a)
    assert flags == U.VFIO_PCI_HOT_RESET_FLAG_DEV_ID | U.VFIO_PCI_HOT_RESET_FLAG_DEV_ID_OWNED
    assert [d[0] for d in devs] == [a.devid, b_devid]
    a.bus_master()
    a.wr(0, T.REG_PASID, 0x42)
    a.df.ioctl(U.VFIO_DEVICE_PCI_HOT_RESET, h.pack(argsz=h.size))
    assert a.rd(0, T.REG_PASID) == 0  # the secondary bus reset reached the device ...
    assert a.cfg_read(4, 2) & 0x4  # ... and its config state was restored
    b.df.close()
    a.close()
    b.vdev.unregister()


def test_hot_reset_info_owned_without_devid() -> None:
    """A device of the same IOMMU group as a bound one is owned but has no ID: devid 0."""
    a, b = _bus_pair(shared_group=True)
    flags, _, devs = hot_reset_info(a)
    assert flags & U.VFIO_PCI_HOT_RESET_FLAG_DEV_ID_OWNED and devs[1][0] == U.VFIO_PCI_DEVID_OWNED
    a.close()
    b.df.close()
    b.vdev.unregister()


# ---------------------------------------------------------------------- VF tokens
def test_vf_token_rules() -> None:
    """vfio_pci_core_match_token_uuid() for a PF bound to vfio-pci and its VFs, via BIND_IOMMUFD."""
    pf_dev = PassiveDevice(PcieEndpoint(0x8086, 0x10, 0x020000, ext_caps=[SriovCap(2, 0x11)], name="pf"))
    sibling = PassiveDevice(PcieEndpoint(0x8086, 0x12, 0x020000, name="sibling"))
    behind_root_port(pf_dev, sibling)  # not alone on the bus: no bus reset, so closing keeps the VFs
    install_sriov(pf_dev.function, VfSpec(0x020000))
    pf = Rig(pf_dev, rid=0x100)
    assert pf.vdev.vf_token is not None
    token = uuid.uuid4().bytes
    pf.df.feature(U.VFIO_DEVICE_FEATURE_PCI_VF_TOKEN | U.VFIO_DEVICE_FEATURE_SET, token)
    with err(errno.EINVAL):  # GET is refused (it would leak the previous user's token)
        pf.df.feature(U.VFIO_DEVICE_FEATURE_PCI_VF_TOKEN | U.VFIO_DEVICE_FEATURE_GET, bytes(16))
    assert pf.vdev.sriov_configure(2) == 2
    sriov = pf_dev.function.caps.find(SriovCap.cap_id, extended=True)
    vf_fn = next(iter(pf_dev.function.bus.vfs.values()))
    assert vf_fn.pf is pf_dev.function and sriov.vf_enabled()
    vf_dev = PassiveDevice(vf_fn)
    vf_vdev = make_vfio_pci(vf_dev, pf.unit, rid=vf_fn.rid, default_type=IOMMU_DOMAIN_IDENTITY)
    assert vf_vdev.sriov_pf_core_dev is pf.vdev
    vf = open_cdev(vf_vdev, pf.proc)
    st = U.vfio_device_bind_iommufd
    ctx2 = Iommufd(pf.proc)
    fd2 = pf.task.fd_install(ctx2)
    va = pf.proc.mmap(4096)

    def bind(flags: int, data: bytes | None) -> None:
        if data is not None:
            pf.proc.write(va, data)
        vf.ioctl(U.VFIO_DEVICE_BIND_IOMMUFD, st.pack(argsz=st.size, flags=flags, iommufd=fd2, token_uuid_ptr=va))

    with err(errno.EACCES):  # VF token required
        bind(0, None)
    with err(errno.EACCES):  # wrong token
        bind(U.VFIO_DEVICE_BIND_FLAG_TOKEN, uuid.uuid4().bytes)
    bind(U.VFIO_DEVICE_BIND_FLAG_TOKEN, token)
    assert pf.vdev.vf_token.users == 1
    ids = vf.pread(U.vfio_pci_index_to_offset(7), 4)  # vconfig gives the VF its real IDs (not 0xffff)
    assert ids == (0x11 << 16 | 0x8086).to_bytes(4, "little")
    # The PF, reopened while a VF is in use, must prove it knows the token.
    pf.df.close()
    pf_df = open_cdev(pf.vdev, pf.proc)
    with err(errno.EACCES):
        pf_df.ioctl(U.VFIO_DEVICE_BIND_IOMMUFD, st.pack(argsz=st.size, iommufd=pf.ifd))
    pf.proc.write(va, token)
    pf_df.ioctl(U.VFIO_DEVICE_BIND_IOMMUFD, st.pack(argsz=st.size, flags=U.VFIO_DEVICE_BIND_FLAG_TOKEN,
                                                    iommufd=pf.ifd, token_uuid_ptr=va))
    vf.close()
    assert pf.vdev.vf_token.users == 0
    with err(errno.EINVAL):  # pci_enable_sriov() only once through vfio_pci_sriov_pfs
        pf.vdev.sriov_configure(1)
    pf_df.close()
    vf_vdev.unregister()
    pf.vdev.registered = False  # drop the driver without the SR-IOV teardown unregister() does
    with err(errno.EBUSY):  # "Cannot bind to PF with SR-IOV enabled"
        VfioPciCoreDevice(pf_dev, pf.vdev.iommu_dev).register()
    ctx2.close()


def test_vf_of_a_pf_not_bound_to_vfio_pci() -> None:
    """PF not bound to vfio-pci: a VF opens without a token; offering one is EINVAL."""
    pf_fn = PcieEndpoint(0x8086, 0x10, 0x020000, ext_caps=[SriovCap(2, 0x11)], name="pf2")
    d = PassiveDevice(pf_fn)
    behind_root_port(d)
    install_sriov(pf_fn, VfSpec(0x020000))
    sriov = pf_fn.caps.find(SriovCap.cap_id, extended=True)
    pf_fn.config_write(sriov.offset + SriovCap.NUM_VFS, 2, 1)
    pf_fn.config_write(sriov.offset + SriovCap.CTRL, 2, SriovCap.CTRL_VFE)
    vf_fn = next(iter(pf_fn.bus.vfs.values()))
    r = Rig(PassiveDevice(vf_fn), rid=vf_fn.rid, bind=False)
    va = r.proc.mmap(4096)
    with err(errno.EINVAL):
        r.bind(flags=U.VFIO_DEVICE_BIND_FLAG_TOKEN, token_ptr=va)
    assert r.bind() > 0
    r.close()
