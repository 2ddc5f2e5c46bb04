"""Builders for the legacy container / group / type1 tests: a machine with IOMMU units and grouped devices,
VFIO devices with the physical iommufd ops (drivers/vfio/iommufd.c), the host DMA port of device-API
devices (re-exported as IommuPort), and the four ways the kernel's vfio selftests open an IOMMU (tools/testing/selftests/vfio/lib/
iommu.c: vfio_type1_iommu, vfio_type1v2_iommu, iommufd_compat_type1, iommufd_compat_type1v2)."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, ClassVar

from vfiolab.iommu.device import IommuDevice
from vfiolab.iommu.driver import make_unit
from vfiolab.iommu.group import IommuGroup, iommu_probe_device
from vfiolab.iommu.unit import IommuUnit
from vfiolab.iommufd import Iommufd
from vfiolab.iommufd import uapi as iu
from vfiolab.memory import PhysMemory, UserProcess
from vfiolab.vfio import cdev
from vfiolab.vfio.container import VfioContainer, open_vfio_container
from vfiolab.vfio.device import VfioDevice, VfioDeviceFile
from vfiolab.vfio.group import VfioGroup, VfioGroupFile, VfioGroups

MODES = ("vfio_type1_iommu", "vfio_type1v2_iommu", "iommufd_compat_type1", "iommufd_compat_type1v2")
K4 = 0x1000


class PhysDev(VfioDevice):
    """A VFIO device of a physical function: the iommufd ops are vfio_iommufd_physical_*."""

    OPS: ClassVar[frozenset[str]] = frozenset({"bind_iommufd", "unbind_iommufd", "attach_ioas", "detach_ioas"})

    def bind_iommufd(self, ictx: Iommufd) -> int:
        return cdev.physical_bind(self, ictx)

    def unbind_iommufd(self) -> None:
        cdev.physical_unbind(self)

    def attach_ioas(self, pt_id: int) -> int:
        return cdev.physical_attach_ioas(self, pt_id)

    def detach_ioas(self) -> None:
        cdev.physical_detach_ioas(self)


@dataclass
class Machine:
    """RAM, IOMMU units, one process, the VFIO group registry and VFIO devices by name."""

    mem: PhysMemory
    process: UserProcess
    vfio: VfioGroups
    units: dict[str, IommuUnit] = field(default_factory=dict)
    devices: dict[str, PhysDev] = field(default_factory=dict)
    _rid: int = 0x10

    def add_group(self, kind: str, names: list[str], **caps: Any) -> VfioGroup:
        """Devices behind a ``kind`` IOMMU unit (one unit per kind), all in one new IOMMU group."""
        unit = self.units.get(kind)
        if unit is None:
            unit = self.units[kind] = make_unit(kind, self.mem, **caps)
        g = IommuGroup()
        vgroup: VfioGroup | None = None
        for name in names:
            idev = IommuDevice(name, self._rid)
            self._rid += 8
            iommu_probe_device(idev, unit, g)
            dev = PhysDev(name, idev)
            dev.register()
            self.devices[name] = dev
            vgroup = self.vfio.register_device(dev)
        assert vgroup is not None
        return vgroup


def machine(mem_size: int = 1 << 27) -> Machine:
    mem = PhysMemory(mem_size)
    return Machine(mem, UserProcess(mem), VfioGroups())


@dataclass
class Opened:
    """An IOMMU opened the way a selftest mode does, with one group and one device file."""

    mode: str
    container: VfioContainer | Iommufd
    group: VfioGroupFile
    device: VfioDeviceFile

    def ranges(self) -> list[tuple[int, int]]:
        """The valid IOVA ranges from VFIO_IOMMU_GET_INFO's IOVA_RANGE capability."""
        return iova_ranges(self.container)


def open_mode(m: Machine, mode: str, group: VfioGroup, device: str) -> Opened:
    """tools/testing/selftests/vfio/lib: open the container (/dev/vfio/vfio, or /dev/iommu for the
    compat modes), SET_CONTAINER, SET_IOMMU, GET_DEVICE_FD."""
    container = open_vfio_container(m.process, iommufd=mode.startswith("iommufd"))
    gf = m.vfio.open(group, m.process)
    gf.set_container(container)
    container.vfio_set_iommu(iu.VFIO_TYPE1v2_IOMMU if mode.endswith(("v2_iommu", "type1v2"))
                             else iu.VFIO_TYPE1_IOMMU)
    return Opened(mode, container, gf, gf.get_device_fd(device))


def iova_ranges(container: VfioContainer | Iommufd) -> list[tuple[int, int]]:
    """Walk VFIO_IOMMU_GET_INFO's capability chain for VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE."""
    st = iu.vfio_iommu_type1_info
    buf = bytearray(4096)
    struct.pack_into("<I", buf, 0, len(buf))
    container.ioctl(iu.VFIO_IOMMU_GET_INFO, buf)
    off = st.unpack(buf)["cap_offset"]
    while off:
        cid, _ver, nxt = struct.unpack_from("<HHI", buf, off)
        if cid == iu.VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE:
            (n,) = struct.unpack_from("<I", buf, off + 8)
            return [struct.unpack_from("<QQ", buf, off + 16 + 16 * i) for i in range(n)]
        off = nxt
    return []


def test_machine_builds_groups() -> None:
    """Devices in one IOMMU group share one VFIO group; another IOMMU group gets its own."""
    m = machine()
    g1 = m.add_group("mock", ["a", "b"])
    g2 = m.add_group("mock", ["c"])
    assert g1 is m.devices["a"].group is m.devices["b"].group and g1 is not g2
    assert g1.drivers == 2 and m.vfio.by_name(g2.name) is g2
