"""The operations a scenario may call, where each runs, and which of its results are symbolic.

Three families: the /dev/iommu ioctls (the methods of the model's ``Iommufd`` and of
:class:`~vfiolab.iommufd.kernel.KernelIommufd`), the selftest operations (``test.<method>`` of ``SelftestOps`` /
``KernelSelftestOps``) and the process operations of :class:`~vfiolab.difftest.backend.Backend` (memory, fds).

A result part is *symbolic* when the kernel may legitimately choose another value than the model: user VAs
(``va``), file descriptors (``fd``) and IOVAs the kernel picks (``iova``).  The comparison pairs those
values one to one instead of requiring equality; IDs are deterministic on both sides (lowest free from 1) and
compared exactly, like everything else.  ``releases`` names the argument whose symbolic value a call gives
back (``close`` frees an fd number for reuse), so the pairing forgets it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

SYMBOLIC_KINDS: Final = ("va", "fd", "iova")


@dataclass(frozen=True)
class OpSpec:
    """One operation: its family (``fd``, ``test`` or ``proc``), the kinds of its symbolic result parts
    (``""`` is the whole result, else a field name or tuple index) and the argument it releases."""

    name: str
    family: str
    kinds: Mapping[str, str] = field(default_factory=dict)
    releases: tuple[str, str] | None = None


def _spec(family: str, names: str, **kinds: dict[str, str]) -> dict[str, OpSpec]:
    out = {}
    for n in names.split():
        full = f"test.{n}" if family == "test" else n
        out[full] = OpSpec(full, family, kinds.get(n, {}))
    return out


OPS: Final[dict[str, OpSpec]] = {
    **_spec("fd", "destroy ioas_alloc ioas_iova_ranges ioas_allow_iovas ioas_map ioas_map_file ioas_copy "
                  "ioas_unmap ioas_change_process option vfio_ioas hwpt_alloc get_hw_info hwpt_set_dirty_tracking "
                  "hwpt_get_dirty_bitmap hwpt_invalidate fault_queue_alloc viommu_alloc vdevice_alloc "
                  "veventq_alloc hw_queue_alloc vfio_get_api_version vfio_check_extension vfio_set_iommu "
                  "vfio_iommu_map_dma vfio_iommu_unmap_dma ioctl",
            ioas_map={"": "iova"}, ioas_map_file={"": "iova"}, ioas_copy={"": "iova"},
            fault_queue_alloc={"out_fault_fd": "fd"}, veventq_alloc={"1": "fd"}),
    **_spec("test", "add_reserved mock_domain mock_domain_replace md_check_map md_check_refs md_check_iotlb "
                    "dev_check_cache create_access destroy_access access_replace_ioas access_pages "
                    "destroy_access_pages access_rw set_temp_memory_limit dirty trigger_iopf trigger_vevent "
                    "pasid_attach pasid_replace pasid_detach pasid_check_hwpt dmabuf_get dmabuf_revoke",
            create_access={"": "fd"}, dmabuf_get={"": "fd"}),
    **_spec("proc", "mmap munmap mprotect read write memfd close read_fd write_fd fd_mmap fd_munmap",
            mmap={"": "va"}, fd_mmap={"": "va"}, memfd={"": "fd"}),
}
for _name, _rel in {"close": ("fd", "fd"), "test.destroy_access": ("access_fd", "fd"),
                    "fd_munmap": ("va", "va")}.items():
    OPS[_name] = OpSpec(_name, OPS[_name].family, OPS[_name].kinds, _rel)


def spec(op: str) -> OpSpec:
    """The operation ``op`` (KeyError for an unknown one; scenarios are checked against :data:`OPS`)."""
    return OPS[op]


__all__ = ["OPS", "SYMBOLIC_KINDS", "OpSpec", "spec"]
