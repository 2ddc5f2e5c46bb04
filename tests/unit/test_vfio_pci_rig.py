"""The rig the vfio-pci tests share (a device behind an Intel IOMMU, registered with vfio-pci, opened
through its cdev and bound to an iommufd), and the end-to-end flow it stands for."""

from __future__ import annotations

import os
import struct
from typing import Any

from vfiolab.devices import Device, Edu
from vfiolab.iommu.domain import IOMMU_DOMAIN_IDENTITY
from vfiolab.iommu.driver import make_unit
from vfiolab.iommufd import Iommufd, Task
from vfiolab.memory import PhysMemory, UserProcess
from vfiolab.pci import regs
from vfiolab.pci.bridge import RootPort
from vfiolab.pci.caps.acs import AcsCap
from vfiolab.pci.topology import Topology
from vfiolab.vfio import uapi as U
from vfiolab.vfio.cdev import open_cdev
from vfiolab.vfio.device import VfioDeviceFile
from vfiolab.vfio.pci_core import VfioPciCoreDevice, make_vfio_pci

CFG = U.vfio_pci_index_to_offset(U.VFIO_PCI_CONFIG_REGION_INDEX)
RW = 1 | 2 | 4  # IOMMU_IOAS_MAP_FIXED_IOVA | WRITEABLE | READABLE


def bar_off(index: int) -> int:
    return U.vfio_pci_index_to_offset(index)


class Rig:
    """One process, one iommufd (installed as an fd), one vfio-pci device file."""

    def __init__(self, device: Device | None = None, *, kind: str = "intel", bind: bool = True,
                 mem: PhysMemory | None = None, unit: Any = None, **kw: Any) -> None:
        self.mem = mem or PhysMemory(1 << 26)
        self.unit = unit or make_unit(kind, self.mem)
        self.device = device if device is not None else Edu()
        kw.setdefault("rid", 0x20)
        kw.setdefault("default_type", IOMMU_DOMAIN_IDENTITY)
        self.vdev: VfioPciCoreDevice = make_vfio_pci(self.device, self.unit, **kw)
        self.proc = UserProcess(self.mem)
        self.task = Task.of(self.proc)
        self.ictx = Iommufd(self.proc)
        self.ifd = self.task.fd_install(self.ictx)
        self.df: VfioDeviceFile = open_cdev(self.vdev, self.proc)
        self.devid = self.bind() if bind else 0
        self.ioas = 0

    # ------------------------------------------------------------------ cdev
    def bind(self, iommufd: int | None = None, flags: int = 0, token_ptr: int = 0) -> int:
        st = U.vfio_device_bind_iommufd
        buf = bytearray(st.pack(argsz=st.size, flags=flags, iommufd=self.ifd if iommufd is None else iommufd,
                                token_uuid_ptr=token_ptr))
        self.df.ioctl(U.VFIO_DEVICE_BIND_IOMMUFD, buf)
        return st.unpack(buf)["out_devid"]

    def attach(self, pt_id: int | None = None, pasid: int | None = None) -> int:
        if pt_id is None:
            if not self.ioas:
                self.ioas = self.ictx.ioas_alloc()
            pt_id = self.ioas
        st = U.vfio_device_attach_iommufd_pt
        buf = bytearray(st.pack(argsz=st.size, flags=U.VFIO_DEVICE_ATTACH_PASID if pasid is not None else 0,
                                pt_id=pt_id, pasid=pasid or 0))
        self.df.ioctl(U.VFIO_DEVICE_ATTACH_IOMMUFD_PT, buf)
        return st.unpack(buf)["pt_id"]

    def detach(self, pasid: int | None = None) -> None:
        st = U.vfio_device_detach_iommufd_pt
        self.df.ioctl(U.VFIO_DEVICE_DETACH_IOMMUFD_PT,
                      st.pack(argsz=st.size, flags=U.VFIO_DEVICE_DETACH_PASID if pasid is not None else 0,
                              pasid=pasid or 0))

    def map(self, iova: int, size: int = 0x4000, data: bytes = b"", ioas: int | None = None) -> int:
        """Fresh process memory (``data`` at its start) mapped at ``iova``; returns the VA."""
        va = self.proc.mmap(size)
        if data:
            self.proc.write(va, data)
        self.ictx.ioas_map(ioas or self.ioas, va, size, iova=iova, flags=RW)
        return va

    # ------------------------------------------------------------------ regions
    def cfg_read(self, off: int, size: int) -> int:
        return int.from_bytes(self.df.pread(CFG + off, size), "little")

    def cfg_write(self, off: int, size: int, val: int) -> None:
        assert self.df.pwrite(CFG + off, val.to_bytes(size, "little")) == size

    def rd(self, bar: int, off: int, size: int = 4) -> int:
        return int.from_bytes(self.df.pread(bar_off(bar) + off, size), "little")

    def wr(self, bar: int, off: int, val: int, size: int = 4) -> None:
        assert self.df.pwrite(bar_off(bar) + off, val.to_bytes(size, "little")) == size

    def bus_master(self) -> None:
        self.cfg_write(4, 2, self.cfg_read(4, 2) | 0x4)

    def set_irqs(self, index: int, flags: int, start: int = 0, count: int = 0, data: bytes = b"") -> int:
        return self.df.set_irqs(index, flags, start, count, data)

    def close(self) -> None:
        self.df.close()
        self.ictx.close()
        self.vdev.unregister()
        self.device.close()


def behind_root_port(*devices: Device, secondary: int = 1) -> RootPort:
    """A host bridge, a Root Port at 00:01.0 with End-End TLP prefixes and ACS RR|UF enabled (what PASID
    needs on the path), and ``devices`` on its secondary bus (functions 0, 1, ...)."""
    rc = Topology().add_host_bridge()
    rp = RootPort(0x8086, 0x7E00, express={"ee_prefix": 1},
                  ext_caps=[AcsCap(cap=AcsCap.RR | AcsCap.UF, ctrl=AcsCap.RR | AcsCap.UF)])
    rc.root.attach(regs.devfn(1, 0), rp)
    rp.config_write(regs.PRIMARY_BUS, 4, secondary << 8 | secondary << 16)
    assert rp.secondary is not None
    for i, d in enumerate(devices):
        rp.secondary.attach(regs.devfn(0, i), d.function)
    return rp


def eventfd() -> int:
    return os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)


def count(fd: int) -> int:
    """Read an eventfd's counter (0 when nothing was signalled)."""
    try:
        return os.eventfd_read(fd)
    except BlockingIOError:
        return 0


def fds(*values: int) -> bytes:
    return struct.pack(f"<{len(values)}i", *values)


# ---------------------------------------------------------------------- the flow
def test_open_bind_attach_use_close() -> None:
    """The cdev flow of Documentation/driver-api/vfio.rst: open, BIND_IOMMUFD, ATTACH, use, close."""
    r = Rig(bind=False)
    assert r.vdev.cdev_name.startswith("vfio")
    devid = r.bind()
    assert devid > 0 and r.vdev.open_count == 1 and r.vdev.cdev_opened
    hwpt = r.attach()
    assert hwpt != r.ioas and r.ictx.object(hwpt)  # the auto domain made for the IOAS
    assert r.rd(0, 0x00) == 0x010000ED
    group = r.vdev.iommu_dev.group
    assert group.owner is r.ictx
    r.close()
    assert r.vdev.open_count == 0 and not r.vdev.cdev_opened and group.owner is None
