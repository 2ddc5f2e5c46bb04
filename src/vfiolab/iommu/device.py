"""A device as the IOMMU core sees it: Linux's ``struct device`` with its ``dev_iommu`` (the unit it sits
behind, its group, ``max_pasids``, I/O page-fault state) plus the device-side translation hardware of a
PCIe function (its ATC when it has ATS, its PRI requester when it has PRI).

A PCI device's ATS/PRI/PASID state is read from its configuration space (:mod:`pcie_ats`), so what the
kernel enabled is what the device acts on.  Non-PCI devices (the iommufd mock) declare their PASID width
with the ``pasid-num-bits`` property, as ``dev_iommu_get_max_pasids()`` reads it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from vfiolab.errors import VfiolabError
from vfiolab.iommu import pcie_ats
from vfiolab.iommu.iotlb import TranslationCache
from vfiolab.iommu.pri import IopfParam, PriRequester
from vfiolab.iommu.resv import ResvRegion
from vfiolab.pci.caps.ats import AtsCap
from vfiolab.pci.caps.pri import PriCap
from vfiolab.pci.function import PciFunction

if TYPE_CHECKING:
    from vfiolab.iommu.group import IommuGroup
    from vfiolab.iommu.unit import IommuUnit


class IommuDevice:
    """One requester behind an IOMMU unit."""

    def __init__(self, name: str, rid: int, *, pci: PciFunction | None = None, pasid_num_bits: int | None = None,
                 no_dirty: bool = False, require_direct: bool = False, resv: Iterable[ResvRegion] = (),
                 atc_entries: int = 64, atc_ways: int = 4, atc_span_lg2: int = 21) -> None:
        if not 0 <= rid <= 0xFFFF:
            raise VfiolabError(f"{name}: requester ID {rid:#x} is not 16 bits")
        if pasid_num_bits is not None and not 0 <= pasid_num_bits <= 20:
            raise VfiolabError(f"{name}: pasid-num-bits {pasid_num_bits} outside 0..20")
        self.name = name
        self.rid = rid
        self.pci = pci
        self.pasid_num_bits = pasid_num_bits
        self.no_dirty = no_dirty
        """The device cannot work with dirty tracking (selftest MOCK_FLAGS_DEVICE_NO_DIRTY)."""
        self.require_direct = require_direct
        """Firmware requires 1:1 (RMRR) mappings: never attach a blocking domain (iommu.c)."""
        self.resv = list(resv)
        """Platform reserved regions of this device (RMRR, IVMD, IORT RMR...)."""
        self.unit: IommuUnit | None = None
        self.group: IommuGroup | None = None
        self.max_pasids = 0
        """dev->iommu->max_pasids."""
        self.iopf: IopfParam | None = None
        """dev->iommu->fault_param while on the unit's IOPF queue."""
        self.iopf_refcount = 0
        self.atc: TranslationCache | None = None
        self.pri: PriRequester | None = None
        if pci is not None:
            if pci.caps.find(AtsCap.cap_id, extended=True) is not None:
                self.atc = TranslationCache(f"{name} ATC", entries=atc_entries, ways=atc_ways,
                                            span_lg2=atc_span_lg2)
            pf = pcie_ats.physfn(pci)
            cap = pf.caps.find(PriCap.cap_id, extended=True)
            if isinstance(cap, PriCap):
                self.pri = PriRequester(self, pf, cap)

    # ------------------------------------------------------------------ what the function has enabled
    @property
    def ats_enabled(self) -> bool:
        """ATS Enable is set: the function caches translations and sends translated requests."""
        return self.pci is not None and pcie_ats.ats_enabled_in_hw(self.pci)

    @property
    def ats_global_invalidate(self) -> bool:
        """ATS capability: Global Invalidate Supported."""
        if self.pci is None:
            return False
        cap = self.pci.caps.find(AtsCap.cap_id, extended=True)
        return cap is not None and bool(self.pci.config_read(cap.offset + AtsCap.CAP, 2) & AtsCap.CAP_GLOBAL_INV)

    @property
    def pasid_enabled(self) -> bool:
        """The function may send PASID-prefixed requests (PASID Enable; any width for non-PCI)."""
        if self.pci is None:
            return bool(self.pasid_num_bits)
        return pcie_ats.pasid_enabled_in_hw(self.pci)

    @property
    def pri_enabled(self) -> bool:
        """PRI Enable is set and no Response Failure has stopped it."""
        return self.pri is not None and self.pri.enabled

    @property
    def ats_state(self) -> pcie_ats.AtsState | None:
        """The kernel's pci_dev ATS/PRI/PASID bookkeeping for this function."""
        return pcie_ats.state(self.pci) if self.pci is not None else None

    def __repr__(self) -> str:
        b, d, f = self.rid >> 8, (self.rid >> 3) & 0x1F, self.rid & 7
        return f"<IommuDevice {self.name} {b:02x}:{d:02x}.{f}>"
