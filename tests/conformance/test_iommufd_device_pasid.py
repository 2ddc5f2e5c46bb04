"""FIXTURE(iommufd_device_pasid) of the kernel selftest: a PASID-capable mock device (and, for variant
no_pasid, a second device without PASID) on an IOAS; PASID attach/replace/detach of paging, nested,
vIOMMU-nested and IOPF-capable HWPTs, the PASID-compatibility rules between the RID's domain and the
PASIDs' domains, and the mock's injected failure on PASID 1024.  Expectations re-expressed from
tools/testing/selftests/iommu/iommufd.c (Linux 7.2)."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from kself import PAGE_SIZE, Env, expect_errno, kselftest

from vfiolab.iommufd import uapi

FIXTURE = "iommufd_device_pasid"
ALL = ["no_pasid", "has_pasid"]


@dataclass
class Self:
    env: Env
    pasid_capable: bool
    ioas_id: int = 0
    hwpt_id: int = 0
    stdev_id: int = 0
    device_id: int = 0
    no_pasid_stdev_id: int = 0
    no_pasid_device_id: int = 0

    # test_cmd_pasid_* act on self->stdev_id
    def attach(self, pasid: int, pt_id: int) -> None:
        self.env.test.pasid_attach(self.stdev_id, pasid, pt_id)

    def replace(self, pasid: int, pt_id: int) -> None:
        self.env.test.pasid_replace(self.stdev_id, pasid, pt_id)

    def detach(self, pasid: int) -> None:
        self.env.test.pasid_detach(self.stdev_id, pasid)

    def check(self, pasid: int, hwpt_id: int) -> None:
        """test_cmd_pasid_check_hwpt() == 0: ``hwpt_id`` (0: nothing) is attached to the PASID."""
        self.env.test.pasid_check_hwpt(self.stdev_id, pasid, hwpt_id)


@pytest.fixture
def s(env: Env, variant: str) -> Iterator[Self]:
    st = Self(env, variant == "has_pasid")
    st.ioas_id = env.ioas_alloc()
    env.ioas_id = st.ioas_id
    md = env.mock_domain(st.ioas_id, uapi.MOCK_FLAGS_DEVICE_PASID)
    st.stdev_id, st.hwpt_id, st.device_id = md.stdev_id, md.hwpt_id, md.idev_id
    if not st.pasid_capable:
        md = env.mock_domain(st.ioas_id, 0)
        st.no_pasid_stdev_id, st.no_pasid_device_id = md.stdev_id, md.idev_id
    yield st


@kselftest(FIXTURE, ALL)
def test_pasid_attach(s: Self) -> None:
    env, fd = s.env, s.env.fd
    data = env.mmap(PAGE_SIZE)
    env.proc.write(data, uapi.iommu_hwpt_selftest.pack(iotlb=uapi.IOMMU_TEST_IOTLB_DEFAULT))
    PASID = uapi.IOMMU_HWPT_ALLOC_PASID

    def nested(pt_id: int, flags: int = PASID, fault_id: int = 0) -> int:
        return fd.hwpt_alloc(s.device_id, pt_id, flags=flags, data_type=uapi.IOMMU_HWPT_DATA_SELFTEST,
                             data_uptr=data, data_len=uapi.iommu_hwpt_selftest.size, fault_id=fault_id)

    pasid = 100
    s.detach(pasid)  # detaching a PASID that has nothing is not an error
    parent = fd.hwpt_alloc(s.device_id, s.ioas_id, flags=uapi.IOMMU_HWPT_ALLOC_NEST_PARENT)
    nested_ids = [nested(parent), nested(parent)]  # two nested HWPTs on one parent
    fq = fd.fault_queue_alloc()
    iopf_hwpt = nested(parent, flags=uapi.IOMMU_HWPT_FAULT_ID_VALID | PASID, fault_id=fq.out_fault_id)
    viommu = fd.viommu_alloc(s.device_id, parent, uapi.IOMMU_VIOMMU_TYPE_SELFTEST)
    nested_ids.append(nested(viommu))
    s2 = fd.hwpt_alloc(s.device_id, s.ioas_id, flags=PASID)

    # the RID on a domain that is not PASID-compatible: no PASID attach
    env.test.mock_domain_replace(s.stdev_id, parent)
    with expect_errno(errno.EINVAL):
        s.attach(pasid, s2)
    # the RID on a PASID-compatible domain: PASIDs attach, and the RID cannot leave for another kind
    env.test.mock_domain_replace(s.stdev_id, s2)
    s.attach(pasid, nested_ids[0])
    with expect_errno(errno.EINVAL):
        env.test.mock_domain_replace(s.stdev_id, parent)
    s.detach(pasid)
    s.check(pasid, 0)

    if not s.pasid_capable:
        # a PASID-compatible domain still works on the RID of a device without PASID ...
        env.test.mock_domain_replace(s.no_pasid_stdev_id, nested_ids[0])
        env.test.mock_domain_replace(s.no_pasid_stdev_id, s.ioas_id)
        # ... but that device's PASIDs take nothing
        for pt in (parent, s2):
            with expect_errno(errno.EINVAL):
                env.test.pasid_attach(s.no_pasid_stdev_id, pasid, pt)

    with expect_errno(errno.EINVAL):  # a domain that is not PASID-compatible
        s.attach(pasid, parent)
    s.check(pasid, 0)
    with expect_errno(errno.EINVAL):  # an IOAS (no auto domains for PASIDs)
        s.attach(pasid, s.ioas_id)
    s.check(pasid, 0)
    s.attach(pasid, s2)
    s.check(pasid, s2)
    with expect_errno(errno.EBUSY):  # attach does not overwrite; replace does
        s.attach(pasid, nested_ids[0])
    s.detach(pasid)
    s.check(pasid, 0)
    s.attach(pasid, nested_ids[0])
    s.check(pasid, nested_ids[0])
    with expect_errno(errno.EBUSY):
        s.attach(pasid, nested_ids[0])
    s.detach(pasid)

    # replace
    pasid = 200
    with expect_errno(errno.EINVAL):  # nothing to replace
        s.replace(pasid, s2)
    s.attach(pasid, s2)
    s.check(pasid, s2)
    with expect_errno(errno.EINVAL):
        s.replace(pasid, s.ioas_id)
    s.check(pasid, s2)
    s.replace(pasid, nested_ids[0])
    s.check(pasid, nested_ids[0])
    s.replace(pasid, nested_ids[1])
    s.check(pasid, nested_ids[1])
    s.detach(pasid)

    # the mock fails the second attach of PASID 1024: replace rolls back to the old domain
    pasid = uapi.IOMMU_TEST_PASID_RESERVED
    s.attach(pasid, s2)
    s.check(pasid, s2)
    with expect_errno(errno.ENOMEM):
        s.replace(pasid, nested_ids[0])
    s.check(pasid, s2)
    s.detach(pasid)

    # an IOPF-capable HWPT on a PASID: the fault carries the PASID
    pasid = 2048
    s.attach(pasid, iopf_hwpt)
    s.check(pasid, iopf_hwpt)
    env.trigger_iopf(s.device_id, pasid, fq.out_fault_fd)
    s.replace(pasid, s2)
    s.check(pasid, s2)
    s.detach(pasid)
    fd.destroy(iopf_hwpt)
    env.task.close(fq.out_fault_fd)
    fd.destroy(fq.out_fault_id)
    env.test.mock_domain_replace(s.stdev_id, s.ioas_id)
