"""What iommufd calls return, shared by both backends: the model (:mod:`vfiolab.iommufd.main`) and the real
/dev/iommu (:mod:`vfiolab.iommufd.kernel`).  Standard library only, so the kernel backend can load it in a
guest without the model (architecture decision 4: two backends, one interface)."""

from __future__ import annotations

from dataclasses import dataclass

from vfiolab.errors import UapiError


class UapiErrorWithOutput(UapiError):
    """A failed ioctl that still wrote its struct back (IOAS_IOVA_RANGES' EMSGSIZE, HWPT_INVALIDATE's
    partial ``entry_num``): ``out`` holds the members as written."""

    def __init__(self, err: UapiError, out: dict[str, int]) -> None:
        super().__init__(err.errno, err.message)
        self.out = out


@dataclass(frozen=True)
class IovaRanges:
    """IOMMU_IOAS_IOVA_RANGES output."""

    num_iovas: int
    out_iova_alignment: int


@dataclass(frozen=True)
class HwInfo:
    """IOMMU_GET_HW_INFO output."""

    data_len: int
    out_data_type: int
    out_max_pasid_log2: int
    out_capabilities: int


@dataclass(frozen=True)
class FaultQueue:
    """IOMMU_FAULT_QUEUE_ALLOC output."""

    out_fault_id: int
    out_fault_fd: int


@dataclass(frozen=True)
class MockDomainOut:
    """IOMMU_TEST_OP_MOCK_DOMAIN output."""

    stdev_id: int
    hwpt_id: int
    idev_id: int
