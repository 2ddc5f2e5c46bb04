"""The vIOMMU family of ioctls (``drivers/iommu/iommufd/viommu.c``, ``eventq.c``).

VIOMMU_ALLOC, VDEVICE_ALLOC, VEVENTQ_ALLOC and HW_QUEUE_ALLOC validate in the kernel's order;
no driver of the model implements vIOMMUs yet, so VIOMMU_ALLOC ends where the kernel finds no
``get_viommu_size``/``viommu_init`` (EOPNOTSUPP) and the others find no vIOMMU object (ENOENT), which is
what the kernel answers for such a driver.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Final

from vfiolab.errors import UapiError
from vfiolab.iommufd import uapi
from vfiolab.iommufd.objects import IommufdObject, ObjType
from vfiolab.iommufd.uapi import U64_MAX, ULONG_MAX

if TYPE_CHECKING:
    from vfiolab.iommufd.main import Iommufd
    from vfiolab.iommufd.ucmd import Ucmd

VEVENTQ_MAX_DEPTH: Final = 1 << 19


def _get_viommu(ictx: Iommufd, viommu_id: int) -> IommufdObject:
    return ictx.objects.get(viommu_id, ObjType.VIOMMU)


def viommu_alloc(ucmd: Ucmd) -> int:
    """IOMMU_VIOMMU_ALLOC (viommu.c iommufd_viommu_alloc_ioctl)."""
    from vfiolab.iommufd.device import get_device
    cmd = ucmd.cmd
    if cmd["flags"] or cmd["type"] == uapi.IOMMU_VIOMMU_TYPE_DEFAULT:
        raise UapiError(errno.EOPNOTSUPP, "flags set or type DEFAULT")
    idev = get_device(ucmd.ictx, cmd["dev_id"])
    raise UapiError(errno.EOPNOTSUPP, f"{idev.driver.name}: no vIOMMU support in this model "
                    "(ops->get_viommu_size/viommu_init)")


def vdevice_alloc(ucmd: Ucmd) -> int:
    """IOMMU_VDEVICE_ALLOC."""
    cmd = ucmd.cmd
    if cmd["virt_id"] > ULONG_MAX:
        raise UapiError(errno.EINVAL, "virt_id beyond ULONG_MAX")
    _get_viommu(ucmd.ictx, cmd["viommu_id"])
    raise UapiError(errno.ENOENT, "no vIOMMU")  # unreachable while no vIOMMU object can exist


def veventq_alloc(ucmd: Ucmd) -> int:
    """IOMMU_VEVENTQ_ALLOC."""
    cmd = ucmd.cmd
    if cmd["flags"] or cmd["__reserved"] or cmd["type"] == uapi.IOMMU_VEVENTQ_TYPE_DEFAULT:
        raise UapiError(errno.EOPNOTSUPP, "flags/__reserved set or type DEFAULT")
    if not cmd["veventq_depth"] or cmd["veventq_depth"] > VEVENTQ_MAX_DEPTH:
        raise UapiError(errno.EINVAL, f"depth {cmd['veventq_depth']}")
    _get_viommu(ucmd.ictx, cmd["viommu_id"])
    raise UapiError(errno.ENOENT, "no vIOMMU")


def hw_queue_alloc(ucmd: Ucmd) -> int:
    """IOMMU_HW_QUEUE_ALLOC."""
    cmd = ucmd.cmd
    if cmd["flags"] or cmd["type"] == uapi.IOMMU_HW_QUEUE_TYPE_DEFAULT:
        raise UapiError(errno.EOPNOTSUPP, "flags set or type DEFAULT")
    if not cmd["length"]:
        raise UapiError(errno.EINVAL, "zero length")
    if cmd["nesting_parent_iova"] + cmd["length"] - 1 > U64_MAX:
        raise UapiError(errno.EOVERFLOW, "base + length overflows")
    _get_viommu(ucmd.ictx, cmd["viommu_id"])
    raise UapiError(errno.ENOENT, "no vIOMMU")
