"""IOMMU page tables as real bytes: Linux 7.2's generic_pt (``drivers/iommu/generic_pt/``) and
io-pgtable-arm, over :class:`~vfiolab.memory.PhysMemory` frames.

Make a table from a configured format::

    from vfiolab.iommu.pagetable import AmdV1, PageTable, IOMMU_READ, IOMMU_WRITE
    pt = PageTable(AmdV1(starting_level=2), mem, change_top=None)
    pt.map(iova, pa, length, IOMMU_READ | IOMMU_WRITE)      # iommu_map(); UapiError on failure
    pt.unmap(iova, length) -> bytes                         # iommu_unmap()
    pt.iova_to_phys(iova) -> pa (0: unmapped)
    pt.read_and_clear_dirty(iova, length, clear=True, page_size=None) -> bool array, one per page
    pt.set_dirty(iova)                                      # the selftest's IOMMU_TEST_OP_DIRTY
    pt.walk(iova, write=None, set_ad=False) -> Translation | WalkFault   # one hardware walk
    pt.top_pa, pt.top_level, pt.hw_info()                   # what the device/context entry holds
    pt.pgsize_bitmap, pt.aperture, pt.table_frames, pt.flushes (owed IOTLB invalidations)
    pt.leaves(), pt.pte(iova), pt.table_frame_list(), pt.destroy()

Formats (one module each), configured as the kernel's ``pt_iommu_<fmt>_cfg``:

* :class:`AmdV1` (``starting_level``, 64-bit VA, grows its top) and :class:`AmdV1Mock` (the iommufd
  selftest's 2 KiB-page variant, ``fmt/iommu_mock.c``);
* :class:`X86_64` (VT-d first stage with SIGN_EXTEND, AMD v2 without; ``top_level`` 3 or 4);
* :class:`VtdSS` (VT-d second stage, ``top_level`` 2..4);
* :class:`RiscV64` (Sv39/48/57 by ``hw_max_vasz_lg2``, Svnapot 64 KiB);
* :class:`ArmLpae` (stage 1 / 2, 4 KiB granule) with :class:`ArmPageTable`, io-pgtable-arm's
  semantics (EEXIST, the core's alignment and page-size loops).

Dirty bitmaps are one bool per ``page_size`` (default: the format's granule, 2 KiB for the mock) from
``iova`` rounded down, exactly the IOVA ``record_dirty()`` reports.  Map and unmap of a run of leaves is
a handful of numpy operations per table level, whatever its length (architecture decision 2).
"""

from vfiolab.iommu.pagetable.amdv1 import AmdV1, AmdV1Mock
from vfiolab.iommu.pagetable.arm_lpae import ArmLpae, ArmPageTable
from vfiolab.iommu.pagetable.common import (
    IOMMU_CACHE,
    IOMMU_MMIO,
    IOMMU_NOEXEC,
    IOMMU_PRIV,
    IOMMU_READ,
    IOMMU_WRITE,
    FaultReason,
    Format,
    Translation,
    WalkFault,
)
from vfiolab.iommu.pagetable.engine import Flush, PageTable
from vfiolab.iommu.pagetable.riscv import RiscV64
from vfiolab.iommu.pagetable.vtdss import VtdSS
from vfiolab.iommu.pagetable.x86_64 import X86_64

__all__ = ["IOMMU_CACHE", "IOMMU_MMIO", "IOMMU_NOEXEC", "IOMMU_PRIV", "IOMMU_READ", "IOMMU_WRITE", "X86_64",
           "AmdV1", "AmdV1Mock", "ArmLpae", "ArmPageTable", "FaultReason", "Flush", "Format", "PageTable",
           "RiscV64", "Translation", "VtdSS", "WalkFault"]
