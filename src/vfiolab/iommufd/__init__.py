"""/dev/iommu (iommufd) as Python objects, behaving like Linux 7.2's ``drivers/iommu/iommufd``.

:class:`Iommufd` is one open file with one method per ioctl and a raw :meth:`Iommufd.ioctl`;
:class:`MockIommu` is the CONFIG_IOMMUFD_TEST mock (IOMMU_TEST_CMD), reached as ``Iommufd.test``.
Modules: ``uapi`` (numbers, structs), ``main`` (context, dispatch), ``objects`` (ID table), ``ioas`` and
``io_pagetable`` (IOVA space), ``pages`` (pinning, accounting), ``access`` (in-kernel users),
``hw_pagetable`` (HWPTs), ``device`` (bind/attach), ``vfio_compat``, ``viommu``, ``mock``, ``task``.
"""

from vfiolab.iommufd.main import HwInfo, Iommufd, IovaRanges, UapiErrorWithOutput
from vfiolab.iommufd.mock import MockDomainOut, MockIommu, SelftestOps
from vfiolab.iommufd.task import Task

__all__ = ["HwInfo", "Iommufd", "IovaRanges", "MockDomainOut", "MockIommu", "SelftestOps", "Task",
           "UapiErrorWithOutput"]
