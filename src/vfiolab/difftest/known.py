"""Divergences between the model and Linux 7.2 that are understood and reported but not fixed here (the
files belong to other developers): each has an ID, the kernel rule, the model file at fault and a tight
predicate over the diverging call, so a random run counts them apart from new divergences.  Each also has
an ``xfail`` regression scenario in the corpus (docs/oracle.md lists them).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vfiolab.difftest.compare import Divergence
from vfiolab.difftest.scenario import Scenario

Records = Sequence[Mapping[str, Any]]


@dataclass(frozen=True)
class Known:
    """One understood divergence."""

    id: str
    summary: str
    kernel: str
    model: str
    matches: Callable[[Scenario, Divergence, Records, Records], bool]
    stateless: bool = False
    """Both sides end in the same state (a check that fails with different errnos): comparing goes on."""


def _errnos(d: Divergence, op: str, model: str, kernel: str) -> bool:
    return (d.model is not None and d.kernel is not None and d.model.get("op") == op
            and d.model.get("errno") == model and d.kernel.get("errno") == kernel)


def _pow2(v: Any) -> bool:
    return isinstance(v, int) and v > 0 and v & (v - 1) == 0


def _earlier_efault(op: str, model: Records, kernel: Records, before: int) -> bool:
    """Both sides failed ``op`` with EFAULT before call ``before``."""
    return any(m.get("op") == op and m.get("errno") == "EFAULT" and k.get("errno") == "EFAULT"
               for m, k in zip(model[:before], kernel[:before]))


KNOWN: tuple[Known, ...] = (
    Known("md-check-map-order",
          "IOMMU_TEST_OP_MD_CHECK_MAP over a user range that faults after a page that does not match",
          "selftest.c iommufd_test_md_check_pa() pins and compares page by page: the first mismatching "
          "page gives EINVAL before a later page faults",
          "iommufd/mock.py _md_check_map() pins the whole range first (EFAULT wins)",
          lambda s, d, m, k: _errnos(d, "test.md_check_map", "EFAULT", "EINVAL"), stateless=True),
    Known("md-check-refs-order",
          "IOMMU_TEST_OP_MD_CHECK_REFS over a user range that faults after a page with other pin counts",
          "selftest.c iommufd_test_md_check_refs() pins and checks page by page (EIO first)",
          "iommufd/mock.py _md_check_refs() pins the whole range first (EFAULT wins)",
          lambda s, d, m, k: _errnos(d, "test.md_check_refs", "EFAULT", "EIO"), stateless=True),
    Known("access-pages-check-order",
          "IOMMU_TEST_OP_ACCESS_PAGES with a uptr range that faults after a page other than the pinned one",
          "selftest.c iommufd_test_check_pages() looks up and compares page by page: EBADE for the first "
          "page that differs, before a later page faults",
          "iommufd/mock.py _access_pages() looks up the whole uptr range first (EFAULT wins)",
          lambda s, d, m, k: _errnos(d, "test.access_pages", "EFAULT", "EBADE"), stateless=True),
    Known("gup-range-wraps",
          "a user range that wraps past 2^64 looked up by get_user_pages_fast() (IOMMU_TEST_OP_ACCESS_PAGES "
          "with uptr 0xfffffffffffff000)",
          "mm/gup.c gup_fast_fallback(): check_add_overflow(start, len) -> EOVERFLOW, before the TASK_SIZE "
          "check (EFAULT)",
          "iommufd/mock.py _gup_frames() -> memory/process.py pin_pages(): EFAULT",
          lambda s, d, m, k: _errnos(d, "test.access_pages", "EFAULT", "EOVERFLOW"), stateless=True),
    Known("dirty-bitmap-page-size",
          "IOMMU_HWPT_GET_DIRTY_BITMAP with a page_size that is not a power of two",
          "iova_bitmap.c iova_bitmap_alloc() takes pgshift = __ffs(page_size); the mask checks of "
          "io_pagetable.c iommufd_check_iova_range() pass (page_size - 1 used as a mask)",
          "iommufd/io_pagetable.py read_and_clear_dirty() hands page_size to the page-table engine, whose "
          "iommu/pagetable/engine.py refuses it (EINVAL)",
          lambda s, d, m, k: _errnos(d, "hwpt_get_dirty_bitmap", "EINVAL", "ok")
          and not _pow2(s.calls[d.index].args.get("page_size"))),
    Known("map-file-any-file",
          "IOMMU_IOAS_MAP_FILE of a file that is not a memfd (an event-queue or access fd)",
          "io_pagetable.c iopt_map_file_pages() takes any file; pages are only pinned when a domain or "
          "access needs them, so the map succeeds (or fails later: ENOSPC, EEXIST)",
          "iommufd/ioas.py ioas_map_file() refuses a non-MemFile at once (EINVAL)",
          lambda s, d, m, k: d.model is not None and d.model.get("op") == "ioas_map_file"
          and d.model.get("errno") == "EINVAL" and "only memfd" in str(d.model.get("msg"))
          and d.kernel is not None and d.kernel.get("errno") != "EINVAL"),
    Known("copy-to-user-partial",
          "a uAPI write to user memory that faults part-way (IOMMU_TEST_OP_ACCESS_RW reading into a buffer "
          "that runs off its mapping)",
          "copy_to_user() stores every byte before the faulting page, then the call fails with EFAULT",
          "iommufd/main.py copy_to_user() -> memory/process.py UserProcess.write() checks the whole range "
          "first and stores nothing",
          lambda s, d, m, k: d.model is not None and d.model.get("op") == "read"
          and d.model.get("errno") == "ok" and _earlier_efault("test.access_rw", m, k, d.index)),
    Known("struct-to-user-truncates",
          "driver data written back into a user struct shorter than the kernel's (IOMMU_VIOMMU_ALLOC of the "
          "selftest vIOMMU with data_len 8 of 24)",
          "include/linux/uaccess.h copy_struct_to_user() with ignored_trailing NULL copies min(usize, ksize) "
          "bytes and succeeds (include/linux/iommu.h __iommu_copy_struct_to_user)",
          "iommufd/userdata.py copy_user_data_to_user() fails with E2BIG when the bytes that do not fit are "
          "not zero",
          lambda s, d, m, k: d.model is not None and d.model.get("errno") == "E2BIG"
          and "too short for the data" in str(d.model.get("msg"))
          and d.kernel is not None and d.kernel.get("errno") == "ok"),
    Known("iopf-pending-at-close",
          "close(2) of the iommufd while a page-request group is still queued on a nested HWPT's fault queue",
          "drivers/iommu/iommufd/eventq.c: the group is answered once (IOMMU_PAGE_RESP_INVALID) as its handle "
          "goes; close succeeds",
          "iommufd/fault.py auto_response() / IommufdFault.destroy() in the release order of objects.py answer "
          "it twice: iommu/pri.py raises 'page request group already answered' out of close",
          lambda s, d, m, k: d.model is not None and d.model.get("op") == "finish"
          and "already answered" in str(d.model.get("crash"))),
    Known("nested-no-dirty-attach",
          "attaching a MOCK_FLAGS_DEVICE_NO_DIRTY device to a nested HWPT whose parent tracks dirty pages",
          "selftest.c mock_domain_nop_attach() tests the domain's own dirty_ops, NULL for a nested domain",
          "iommu/driver.py check_attach() checks the parent with MockDriver.paging_compatible() (EINVAL)",
          lambda s, d, m, k: d.model is not None
          and d.model.get("op") in ("test.mock_domain", "test.mock_domain_replace")
          and d.model.get("errno") == "EINVAL" and "cannot do dirty tracking" in str(d.model.get("msg"))
          and d.kernel is not None and d.kernel.get("errno") == "ok"),
)
KNOWN_BY_ID = {k.id: k for k in KNOWN}


def classify(scenario: Scenario, d: Divergence, model: Records, kernel: Records) -> Known | None:
    """The known divergence ``d`` is an instance of, or None for a new one."""
    for k in KNOWN:
        try:
            if k.matches(scenario, d, model, kernel):
                return k
        except (LookupError, TypeError, AttributeError):
            continue
    return None


__all__ = ["KNOWN", "KNOWN_BY_ID", "Known", "classify"]
