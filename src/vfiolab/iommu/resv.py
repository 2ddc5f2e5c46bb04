"""Reserved IOVA regions: what each IOMMU driver reports per device (``ops->get_resv_regions``), how the
core merges them per group (``iommu_insert_resv_region()``), and the sysfs ``reserved_regions`` text.

Per-driver regions (Linux 7.2):

* VT-d (``intel/iommu.c``): RMRRs as direct / direct-relaxable, the ISA-bridge floppy window [0, 16M) as
  direct-relaxable (CONFIG_INTEL_IOMMU_FLOPPY_WA), and the interrupt window 0xfee00000-0xfeefffff as msi.
* AMD-Vi (``amd/iommu.c``): IVMD unity maps as direct, the MSI window 0xfee00000-0xfeefffff as msi, and the
  HyperTransport range 0xfd00000000-0xffffffffff as reserved unless the IOMMU ignores it.
* SMMUv3 (``arm-smmu-v3.c``): a software-managed MSI window (sw-msi, printed as "msi") at MSI_IOVA_BASE
  0x8000000, length 0x100000, plus the platform's (IORT/DT) regions.
* RISC-V and the iommufd mock report none.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Final

from vfiolab.errors import VfiolabError
from vfiolab.iommu.pagetable.common import IOMMU_MMIO, IOMMU_NOEXEC, IOMMU_READ, IOMMU_WRITE

# intel/iommu.c IOAPIC_RANGE_*, amd/iommu.c MSI_RANGE_* / HT_RANGE_*
X86_MSI_START: Final = 0xFEE00000
X86_MSI_LAST: Final = 0xFEEFFFFF
AMD_HT_START: Final = 0xFD_0000_0000
AMD_HT_LAST: Final = 0xFF_FFFF_FFFF
# arm-smmu-v3.h / arm-smmu.c / virtio-iommu.c
MSI_IOVA_BASE: Final = 0x8000000
MSI_IOVA_LENGTH: Final = 0x100000
ISA_DMA_LIMIT: Final = 1 << 24


class ResvType(enum.IntEnum):
    """enum iommu_resv_type (include/linux/iommu.h); the order is the kernel's."""

    DIRECT = 0
    DIRECT_RELAXABLE = 1
    RESERVED = 2
    MSI = 3
    SW_MSI = 4


# iommu.c iommu_group_resv_type_string[]
_TYPE_STRING: Final = {ResvType.DIRECT: "direct", ResvType.DIRECT_RELAXABLE: "direct-relaxable",
                       ResvType.RESERVED: "reserved", ResvType.MSI: "msi", ResvType.SW_MSI: "msi"}


@dataclass(frozen=True)
class ResvRegion:
    """struct iommu_resv_region: [start, start+length) with IOMMU_* prot and a type."""

    start: int
    length: int
    prot: int
    type: ResvType

    def __post_init__(self) -> None:
        if self.start < 0 or self.length <= 0 or self.start + self.length > 1 << 64:
            raise VfiolabError(f"reserved region [{self.start:#x}, +{self.length:#x}) is not a 64-bit range")

    @property
    def last(self) -> int:
        return self.start + self.length - 1

    def sysfs_line(self) -> str:
        """One line of /sys/kernel/iommu_groups/N/reserved_regions (iommu_group_show_resv_regions)."""
        return f"0x{self.start:016x} 0x{self.last:016x} {_TYPE_STRING[self.type]}\n"


def insert_resv_region(new: ResvRegion, regions: list[ResvRegion]) -> list[ResvRegion]:
    """iommu_insert_resv_region(): add ``new`` sorted by start (ties by type) and merge overlapping or
    adjacent regions of ``new``'s type; the result is a new list."""
    pos = 0
    while pos < len(regions) and not (new.start < regions[pos].start or
                                      (new.start == regions[pos].start and new.type <= regions[pos].type)):
        pos += 1
    items = regions[:pos] + [new] + regions[pos:]
    out: list[ResvRegion] = []
    for it in items:
        if it.type != new.type:
            out.append(it)
            continue
        top = next((i for i in range(len(out) - 1, -1, -1) if out[i].type == it.type), None)
        if top is None or it.start > out[top].last + 1:
            out.append(it)
        else:
            t = out[top]
            out[top] = replace(t, length=max(t.last, it.last) - t.start + 1)
    return out


def group_resv_regions(per_device: Iterable[Iterable[ResvRegion]]) -> list[ResvRegion]:
    """iommu_get_group_resv_regions(): every device's regions inserted in device order."""
    out: list[ResvRegion] = []
    for regions in per_device:
        for r in regions:
            out = insert_resv_region(r, out)
    return out


def format_resv_regions(regions: Iterable[ResvRegion]) -> str:
    """The text of the group's sysfs ``reserved_regions`` file."""
    return "".join(r.sysfs_line() for r in regions)


# ---------------------------------------------------------------------- per-driver regions
def intel_resv_regions(*, rmrrs: Iterable[tuple[int, int, bool]] = (), isa_bridge: bool = False
                       ) -> list[ResvRegion]:
    """intel_iommu_get_resv_regions(): ``rmrrs`` are (base, end inclusive, relaxable) for this device."""
    prot = IOMMU_READ | IOMMU_WRITE  # DMA_PTE_READ | DMA_PTE_WRITE
    out = [ResvRegion(base, end - base + 1, prot,
                      ResvType.DIRECT_RELAXABLE if relax else ResvType.DIRECT) for base, end, relax in rmrrs]
    if isa_bridge:  # CONFIG_INTEL_IOMMU_FLOPPY_WA
        out.append(ResvRegion(0, ISA_DMA_LIMIT, prot, ResvType.DIRECT_RELAXABLE))
    out.append(ResvRegion(X86_MSI_START, X86_MSI_LAST - X86_MSI_START + 1, 0, ResvType.MSI))
    return out


def amd_resv_regions(*, unity_maps: Iterable[tuple[int, int, int]] = (), ht_range_ignore: bool = False
                     ) -> list[ResvRegion]:
    """amd_iommu_get_resv_regions(): ``unity_maps`` are IVMD (start, end, IOMMU_* prot); note the driver's
    length is end - start (it does not add one)."""
    out = [ResvRegion(start, end - start, prot, ResvType.DIRECT) for start, end, prot in unity_maps]
    out.append(ResvRegion(X86_MSI_START, X86_MSI_LAST - X86_MSI_START + 1, 0, ResvType.MSI))
    if not ht_range_ignore:
        out.append(ResvRegion(AMD_HT_START, AMD_HT_LAST - AMD_HT_START + 1, 0, ResvType.RESERVED))
    return out


def arm_smmu_resv_regions(*, platform: Iterable[ResvRegion] = ()) -> list[ResvRegion]:
    """arm_smmu_get_resv_regions(): the SW_MSI window, then iommu_dma_get_resv_regions()' platform list."""
    prot = IOMMU_WRITE | IOMMU_NOEXEC | IOMMU_MMIO
    return [ResvRegion(MSI_IOVA_BASE, MSI_IOVA_LENGTH, prot, ResvType.SW_MSI), *platform]
