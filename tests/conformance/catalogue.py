"""Every run of tools/testing/selftests/iommu/iommufd.c (Linux 7.2) by the name the kselftest harness
prints (``fixture.variant.test``, or ``fixture.test`` for fixtures without variants), and the list of
runs not ported yet, read from NOT_PORTED.md (one ``| run | reason |`` table row per run)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

# fixture -> (variants in FIXTURE_VARIANT_ADD order, tests in TEST_F order)
FIXTURES: Final[dict[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    "iommufd": ((), ("simple_close", "cmd_fail", "cmd_length", "cmd_ex_fail", "global_options",
                     "simple_ioctls", "unmap_cmd", "map_cmd", "info_cmd", "set_iommu_cmd", "vfio_ioas")),
    "change_process": (("account_none", "account_user", "account_mm"), ("basic",)),
    "iommufd_ioas": (("no_domain", "mock_domain", "two_mock_domain", "mock_domain_limit"),
                     ("ioas_auto_destroy", "ioas_destroy", "alloc_hwpt_nested", "hwpt_attach",
                      "ioas_area_destroy", "ioas_area_auto_destroy", "get_hw_info", "area",
                      "unmap_fully_contained_areas", "area_auto_iova", "reserved_overflow", "area_allowed",
                      "copy_area", "iova_ranges", "access_domain_destory", "access_pin", "access_pin_unmap",
                      "access_rw", "access_rw_unaligned", "fork_gone", "fork_present",
                      "ioas_option_huge_pages", "ioas_iova_alloc", "ioas_align_change", "copy_sweep",
                      "dmabuf_simple", "dmabuf_revoke")),
    "iommufd_mock_domain": (("one_domain", "two_domains", "one_domain_hugepage", "two_domains_hugepage",
                             "one_domain_file", "one_domain_file_hugepage"),
                            ("basic", "ro_unshare", "all_aligns", "all_aligns_copy", "user_copy", "replace",
                             "alloc_hwpt")),
    "iommufd_dirty_tracking": (("domain_dirty8k", "domain_dirty16k", "domain_dirty64k", "domain_dirty128k",
                                "domain_dirty320k", "domain_dirty64M", "domain_dirty64M_huge",
                                "domain_dirty128M",
                                "domain_dirty128M_huge"),
                               ("enforce_dirty", "set_dirty_tracking", "pasid_set_dirty_tracking",
                                "device_dirty_capability", "get_dirty_bitmap", "get_dirty_bitmap_no_clear")),
    "vfio_compat_mock_domain": (("Ver1v2", "Ver1v0"),
                                ("simple_close", "option_huge_pages", "get_info", "map", "huge_map")),
    "iommufd_viommu": (("no_viommu", "mock_viommu"),
                       ("viommu_auto_destroy", "viommu_negative_tests", "viommu_alloc_nested_iopf",
                        "viommu_alloc_with_data", "vdevice_alloc", "vdevice_cache", "hw_queue",
                        "vdevice_tombstone")),
    "iommufd_device_pasid": (("no_pasid", "has_pasid"), ("pasid_attach",)),
}


def run_name(fixture: str, variant: str | None, test: str) -> str:
    """The harness' name of one run."""
    return f"{fixture}.{variant}.{test}" if variant else f"{fixture}.{test}"


def all_runs() -> list[str]:
    """Every run, fixture by fixture, variant by variant."""
    out = []
    for fixture, (variants, tests) in FIXTURES.items():
        for variant in variants or (None,):
            out += [run_name(fixture, variant, t) for t in tests]
    return out


NOT_PORTED_MD: Final = Path(__file__).with_name("NOT_PORTED.md")
_ROW = re.compile(r"^\|\s*`?([A-Za-z0-9_]+\.[A-Za-z0-9_.]+)`?\s*\|\s*(.+?)\s*\|\s*$")


def not_ported() -> dict[str, str]:
    """run -> reason, from the table rows of NOT_PORTED.md."""
    out: dict[str, str] = {}
    for line in NOT_PORTED_MD.read_text().splitlines():
        m = _ROW.match(line)
        if m and m.group(1) in _ALL:
            out[m.group(1)] = m.group(2)
    return out


_ALL: Final = frozenset(all_runs())
RUN_IN_ID: Final = re.compile(r"\[(?:.*-)?((?:" + "|".join(FIXTURES) + r")\.[A-Za-z0-9_.]+)\]$")
