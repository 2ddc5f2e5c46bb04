"""/dev/iommu (iommufd) as Python objects, behaving like Linux 7.2's ``drivers/iommu/iommufd``.

:class:`Iommufd` is one open file with one method per ioctl and a raw :meth:`Iommufd.ioctl`;
:class:`MockIommu` is the CONFIG_IOMMUFD_TEST mock (IOMMU_TEST_CMD), reached as ``Iommufd.test``.
Modules: ``uapi`` (numbers, structs), ``main`` (context, dispatch), ``objects`` (ID table), ``ioas`` and
``io_pagetable`` (IOVA space), ``pages`` (pinning, accounting), ``access`` (in-kernel users),
``hw_pagetable`` (HWPTs), ``device`` (bind/attach), ``hw_info`` (GET_HW_INFO, the units' registers),
``fault`` (IOPF queues), ``viommu`` (vIOMMU, vDEVICE, vEVENTQ, HW queue), ``immap`` (mmap() of the fd),
``userdata`` (driver data copies),
``vfio_compat``, ``mock`` and ``mock_viommu`` (the selftest mock), ``task`` (the calling process),
``fail_nth`` (sweeping the fault-injection points of a call sequence, as iommufd_fail_nth.c does).
"""

from vfiolab.iommufd.main import FaultQueue, HwInfo, Iommufd, IovaRanges, UapiErrorWithOutput
from vfiolab.iommufd.mock import MockDomainOut, MockIommu, SelftestOps
from vfiolab.iommufd.task import Task

__all__ = ["FaultQueue", "HwInfo", "Iommufd", "IovaRanges", "MockDomainOut", "MockIommu", "SelftestOps",
           "Task", "UapiErrorWithOutput"]
