"""IOMMU drivers (``struct iommu_ops`` + ``iommu_domain_ops``): what each vendor driver of Linux 7.2
allocates, accepts at attach time and programs into its units, and the unit presets.

One generic driver holds the common flow (probe and PASID/ATS/PRI enabling, attach = compatibility
check, IOPF enabling, context programming and cache tags, PRQ handling); the vendor classes keep only
their rules:

* VT-d (``intel/iommu.c``, ``intel/nested.c``): paging domains prefer the x86-64 first stage and fall
  back to the VT-d second stage for NEST_PARENT / DIRTY_TRACKING; dirty tracking and nesting only on
  the second stage; nested stage 1 from IOMMU_HWPT_DATA_VTD_S1.
* AMD-Vi (``amd/iommu.c``): v1 host tables (dirty, nest parent, the default), v2 (x86-64) for PASID.
* SMMUv3 (``arm-smmu-v3.c``): io-pgtable-arm LPAE stage 1 (stage 2 for a nest parent), dirty only on
  stage 1, domains bound to their SMMU instance, the SW_MSI reserved window.
* RISC-V (``riscv/iommu.c``): Sv39/48/57 tables, no flags, no PASID.
* mock (``iommufd/selftest.c``): AMDv1 with 2 KiB pages, the mock aperture, NO_DIRTY devices, the
  blocking domain as default domain and the PASID-1024 replace trap.
"""

from __future__ import annotations

import dataclasses
import errno
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Final

from vfiolab.errors import UapiError, VfiolabError
from vfiolab.iommu import pcie_ats
from vfiolab.iommu.cachetag import TagType
from vfiolab.iommu.device import IommuDevice
from vfiolab.iommu.domain import (
    IOMMU_DOMAIN_BLOCKED,
    IOMMU_DOMAIN_DMA,
    IOMMU_DOMAIN_IDENTITY,
    IOMMU_DOMAIN_SVA,
    IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
    IOMMU_HWPT_ALLOC_NEST_PARENT,
    IOMMU_HWPT_ALLOC_PASID,
    MODE_TRANSLATE,
    BlockedDomain,
    IdentityDomain,
    IommuDomain,
    PagingDomain,
)
from vfiolab.iommu.fault import (
    IOMMU_FAULT_PERM_EXEC,
    IOMMU_FAULT_PERM_PRIV,
    IOMMU_FAULT_PERM_READ,
    IOMMU_FAULT_PERM_WRITE,
)
from vfiolab.iommu.nested import NestedDomain
from vfiolab.iommu.pagetable.amdv1 import (
    DYNAMIC_TOP,
    ENCRYPT_TABLES,
    FLUSH_RANGE,
    FORCE_COHERENCE,
    AmdV1,
    AmdV1Mock,
)
from vfiolab.iommu.pagetable.arm_lpae import QUIRK_ARM_HD, ArmLpae
from vfiolab.iommu.pagetable.common import SIGN_EXTEND
from vfiolab.iommu.pagetable.riscv import RiscV64
from vfiolab.iommu.pagetable.vtdss import FORCE_COHERENCE as VTDSS_FORCE_COHERENCE
from vfiolab.iommu.pagetable.vtdss import FORCE_WRITEABLE, VtdSS
from vfiolab.iommu.pagetable.x86_64 import AMD_ENCRYPT_TABLES, X86_64
from vfiolab.iommu.pasid import IOMMU_NO_PASID, max_pasids
from vfiolab.iommu.pri import (
    IOMMU_PAGE_RESP_INVALID,
    PageRequest,
    PageResponse,
    iommu_report_device_fault,
    iopf_queue_add_device,
    iopf_queue_remove_device,
)
from vfiolab.iommu.resv import (
    ResvRegion,
    ResvType,
    amd_resv_regions,
    arm_smmu_resv_regions,
    intel_resv_regions,
)
from vfiolab.iommu.unit import IommuCaps, IommuUnit
from vfiolab.memory.phys import PhysMemory
from vfiolab.pci.function import CLASS_ISA_BRIDGE

if TYPE_CHECKING:
    from vfiolab.iommu.sva import Mm, SvaDomain

# include/linux/iommu.h enum iommu_cap
IOMMU_CAP_CACHE_COHERENCY: Final = 0
IOMMU_CAP_NOEXEC: Final = 1
IOMMU_CAP_PRE_BOOT_PROTECTION: Final = 2
IOMMU_CAP_ENFORCE_CACHE_COHERENCY: Final = 3
IOMMU_CAP_DEFERRED_FLUSH: Final = 4
IOMMU_CAP_DIRTY_TRACKING: Final = 5
IOMMU_CAP_PCI_ATS_SUPPORTED: Final = 6

# drivers/iommu/iommufd/iommufd_test.h
MOCK_APERTURE_START: Final = 1 << 24
MOCK_APERTURE_LAST: Final = (1 << 31) - 1
MOCK_HUGE_PAGE_SIZE: Final = 512 * 2048
MOCK_PASID_WIDTH: Final = 20
MOCK_IOMMUPT_DEFAULT: Final = 0
MOCK_IOMMUPT_HUGE: Final = 1
MOCK_NESTED_DOMAIN_IOTLB_NUM: Final = 4
PAGE_SIZE: Final = 4096
_SZ_2M: Final = 1 << 21
_SZ_1G: Final = 1 << 30
_X86_CANONICAL_PRQ: Final = 47  # is_canonical_address() on a 4-level host
VTD_PAGE_SHIFT: Final = 12
INTEL_PRQ_DEPTH: Final = 2048  # intel/iommu.h PRQ_DEPTH


class IommuDriver:
    """The parts of every IOMMU driver that are the same (see the module docstring)."""

    name: ClassVar[str] = "generic"
    user_pasid_table: ClassVar[bool] = False
    """ops->user_pasid_table: PASID faults may go to a NESTED domain on the RID (io-pgfault.c)."""
    has_identity: ClassVar[bool] = True
    iopf_needs_pri: ClassVar[bool] = True
    """IOPF-capable domains need the device's PRI enabled (VT-d: -ENODEV otherwise)."""
    default_type: ClassVar[int] = IOMMU_DOMAIN_DMA

    def __init__(self) -> None:
        self.blocked_domain: IommuDomain = BlockedDomain(self)
        self.identity_domain: IommuDomain | None = IdentityDomain(self) if self.has_identity else None
        self.units: list[IommuUnit] = []

    def add_unit(self, unit: IommuUnit) -> IommuUnit:
        """Take ``unit`` over (iommu_device_register)."""
        if unit.driver is not None:
            raise VfiolabError(f"{unit.name} already has a driver")
        unit.driver = self
        unit.prq_handler = self.prq_event
        self.units.append(unit)
        return unit

    # ------------------------------------------------------------------ probe
    def probe_device(self, dev: IommuDevice, unit: IommuUnit) -> None:
        """ops->probe_device + probe_finalize: bind ``dev`` to ``unit`` and enable PASID, then ATS,
        then PRI as intel_iommu_probe_finalize() does (PASID must be enabled before ATS)."""
        if unit.driver is not self:
            raise VfiolabError(f"{unit.name} is not driven by {self.name}")
        if dev.unit is not None:
            raise VfiolabError(f"{dev.name} is already behind {dev.unit.name}")
        if dev.rid in unit.devices:
            raise VfiolabError(f"{unit.name}: requester ID {dev.rid:#06x} is taken by {unit.devices[dev.rid].name}")
        dev.unit = unit
        unit.devices[dev.rid] = dev
        fn = dev.pci
        if fn is None:  # dev_iommu_get_max_pasids(): the "pasid-num-bits" property
            dev.max_pasids = 0 if dev.pasid_num_bits is None or not unit.max_pasids else \
                min(1 << dev.pasid_num_bits, unit.max_pasids)
            return
        dev.max_pasids = max_pasids(pcie_ats.max_pasid_width(fn), unit.caps.pasid_bits)
        st = pcie_ats.state(fn)
        if dev.max_pasids:
            try:
                pcie_ats.enable_pasid(fn, pcie_ats.pasid_features(fn))
            except UapiError:
                pass
        if unit.caps.ats and pcie_ats.ats_supported(fn) and pcie_ats.ats_page_aligned(fn):
            try:
                pcie_ats.enable_ats(fn, VTD_PAGE_SHIFT)
            except UapiError:
                pass
        # iommu_enable_pci_pri(): needs ATS; a PASID user needs PASID in PRG responses
        if (unit.caps.pri and st.ats_enabled and pcie_ats.pri_supported(fn)
                and not (st.pasid_enabled and not pcie_ats.prg_resp_pasid_required(fn))):
            try:
                pcie_ats.reset_pri(fn)
                pcie_ats.enable_pri(fn, unit.caps.prq_depth)
            except UapiError:
                pass

    def release_device(self, dev: IommuDevice) -> None:
        """ops->release_device: PRI, ATS and PASID off (intel_iommu_release_device)."""
        if dev.iopf is not None:
            iopf_queue_remove_device(dev)
        if dev.pci is not None:
            pcie_ats.disable_pri(dev.pci)
            pcie_ats.disable_ats(dev.pci)
            pcie_ats.disable_pasid(dev.pci)
        if dev.unit is not None:
            dev.unit.devices.pop(dev.rid, None)
        dev.unit = None

    # ------------------------------------------------------------------ domain allocation
    def domain_alloc_paging_flags(self, dev: IommuDevice, flags: int = 0,
                                  data: Mapping[str, Any] | None = None) -> PagingDomain:
        """ops->domain_alloc_paging_flags(); UapiError(EOPNOTSUPP) for what the hardware cannot do."""
        raise UapiError(errno.EOPNOTSUPP, f"{self.name}: no paging domains")

    def domain_alloc_paging(self, dev: IommuDevice) -> PagingDomain:
        """iommu_paging_domain_alloc()."""
        return self.domain_alloc_paging_flags(dev, 0)

    def domain_alloc_nested(self, dev: IommuDevice, parent: IommuDomain, flags: int, data_type: str,
                            data: Mapping[str, Any]) -> NestedDomain:
        """ops->domain_alloc_nested()."""
        raise UapiError(errno.EOPNOTSUPP, f"{self.name}: no nested domains")

    def domain_alloc_sva(self, dev: IommuDevice, mm: Mm) -> SvaDomain:
        """ops->domain_alloc_sva(): EOPNOTSUPP without SVA support."""
        from vfiolab.iommu.sva import SvaDomain
        unit = self._unit(dev)
        if not unit.caps.sva:
            raise UapiError(errno.EOPNOTSUPP, f"{unit.name}: no SVA")
        return SvaDomain(self, mm)

    def alloc_default_domain(self, dev: IommuDevice, req_type: int | None) -> IommuDomain:
        """iommu_group_alloc_default_domain(): identity, blocked or a DMA paging domain."""
        t = self.default_type if req_type is None else req_type
        if t == IOMMU_DOMAIN_IDENTITY and self.identity_domain is not None:
            return self.identity_domain
        if t == IOMMU_DOMAIN_BLOCKED:
            return self.blocked_domain
        dom = self.domain_alloc_paging_flags(dev, 0)
        dom.type, dom.name = IOMMU_DOMAIN_DMA, "dma"
        return dom

    # ------------------------------------------------------------------ compatibility
    def _unit(self, dev: IommuDevice) -> IommuUnit:
        if dev.unit is None or dev.unit.driver is not self:
            raise UapiError(errno.ENODEV, f"{dev.name} is not behind a {self.name} IOMMU")
        return dev.unit

    def paging_compatible(self, domain: PagingDomain, dev: IommuDevice) -> None:
        """The checks every driver makes before attaching a paging domain: EINVAL when the unit cannot
        walk its format, lacks dirty tracking or nesting it needs, or cannot translate its aperture."""
        unit = self._unit(dev)
        caps = unit.caps
        if domain.owner is not self:
            raise UapiError(errno.EINVAL, f"{domain!r} belongs to another driver")
        if domain.fmt.name not in caps.formats:
            raise UapiError(errno.EINVAL, f"{unit.name} cannot walk {domain.fmt.name} tables")
        if domain.dirty_ops and not caps.dirty:
            raise UapiError(errno.EINVAL, f"{unit.name} has no dirty tracking")
        if domain.nest_parent and not caps.nesting:
            raise UapiError(errno.EINVAL, f"{unit.name} has no nesting")
        if domain.aperture[1] >= 1 << caps.ias and not self._sign_extended(domain):
            raise UapiError(errno.EINVAL, f"aperture end {domain.aperture[1]:#x} beyond {caps.ias}-bit IOVA")

    @staticmethod
    def _sign_extended(domain: PagingDomain) -> bool:
        return domain.fmt.has(SIGN_EXTEND)

    def check_attach(self, domain: IommuDomain, dev: IommuDevice) -> None:
        """Vendor compatibility of any domain with ``dev``; UapiError (EINVAL) when it does not fit."""
        unit = self._unit(dev)
        if isinstance(domain, NestedDomain):
            if not unit.caps.nesting:
                raise UapiError(errno.EINVAL, f"{unit.name} has no nesting")
            self.paging_compatible(domain.parent, dev)
            if domain.s1_fmt is not None and domain.s1_fmt.name not in unit.caps.formats:
                raise UapiError(errno.EINVAL, f"{unit.name} cannot walk {domain.s1_fmt.name} stage-1 tables")
        elif isinstance(domain, PagingDomain):
            self.paging_compatible(domain, dev)
        elif domain.type == IOMMU_DOMAIN_SVA and not unit.caps.sva:
            raise UapiError(errno.EINVAL, f"{unit.name} has no SVA")

    pasid_ops: ClassVar[bool] = True
    """The driver's domains (and its blocked domain) have set_dev_pasid."""
    identity_pasid: ClassVar[bool] = False
    """The identity domain can be attached to a PASID (VT-d identity_domain_set_dev_pasid)."""

    def supports_pasid(self, domain: IommuDomain) -> bool:
        """iommu_attach_device_pasid()'s EOPNOTSUPP test: domain->ops->set_dev_pasid and
        ops->blocked_domain->ops->set_dev_pasid exist."""
        return self.pasid_ops and (domain is not self.identity_domain or self.identity_pasid)

    # ------------------------------------------------------------------ attach (hardware programming)
    def attach_dev(self, domain: IommuDomain, dev: IommuDevice, old: IommuDomain | None) -> None:
        """domain->ops->attach_dev(): check, enable IOPF for the new domain, program the context; the
        static domains never fail.  Nothing changes when it raises."""
        if domain.type == IOMMU_DOMAIN_SVA:
            raise UapiError(errno.ENODEV, "SVA domains attach to PASIDs only")
        if domain is not self.blocked_domain and domain is not self.identity_domain:
            self.check_attach(domain, dev)
            self._iopf_replace(domain, old, dev)
        else:
            self._iopf_remove(old, dev)
        self._program(domain, dev, IOMMU_NO_PASID)

    def set_dev_pasid(self, domain: IommuDomain, dev: IommuDevice, pasid: int, old: IommuDomain | None) -> None:
        """domain->ops->set_dev_pasid(): EOPNOTSUPP when the unit has no PASID support."""
        unit = self._unit(dev)
        if domain is self.blocked_domain:
            self.remove_dev_pasid(dev, pasid, old)
            return
        if not unit.max_pasids:
            raise UapiError(errno.EOPNOTSUPP, f"{unit.name} has no PASID support")
        if domain is not self.identity_domain:
            self.check_attach(domain, dev)
        self._pasid_hook(domain, dev, pasid)
        self._iopf_replace(domain, old, dev)
        self._program(domain, dev, pasid)

    def _pasid_hook(self, domain: IommuDomain, dev: IommuDevice, pasid: int) -> None:
        """Driver-specific refusal of a PASID attachment (the mock's fault injection)."""

    def remove_dev_pasid(self, dev: IommuDevice, pasid: int, domain: IommuDomain | None) -> None:
        """The blocked domain's set_dev_pasid (iommu_remove_dev_pasid()): never fails."""
        unit = self._unit(dev)
        ctx = unit.context(dev.rid, pasid)
        if ctx is None:
            return
        self._unassign_tags(ctx.domain, dev, pasid, ctx.did)
        self._pasid_hook(self.blocked_domain, dev, pasid)
        unit.clear_context(dev, pasid)
        self._iopf_remove(ctx.domain, dev)

    def _program(self, domain: IommuDomain, dev: IommuDevice, pasid: int) -> None:
        unit = self._unit(dev)
        cur = unit.context(dev.rid, pasid)
        if cur is not None:
            self._unassign_tags(cur.domain, dev, pasid, cur.did)
        ctx = unit.set_context(dev, pasid, domain)
        if ctx.mode == MODE_TRANSLATE:
            self._assign_tags(domain, dev, pasid, ctx.did)

    def _assign_tags(self, domain: IommuDomain, dev: IommuDevice, pasid: int, did: int) -> None:
        """cache_tag_assign_domain() (+ the parent's NESTING tags for a nested domain)."""
        unit = self._unit(dev)
        domain.tags.assign(TagType.IOTLB, unit, did, pasid, None)
        if dev.ats_enabled:
            domain.tags.assign(TagType.DEVTLB, unit, did, pasid, dev)
        if isinstance(domain, NestedDomain):
            domain.parent.tags.assign(TagType.NESTING_IOTLB, unit, did, pasid, None)
            if dev.ats_enabled:
                domain.parent.tags.assign(TagType.NESTING_DEVTLB, unit, did, pasid, dev)

    def _unassign_tags(self, domain: IommuDomain, dev: IommuDevice, pasid: int, did: int) -> None:
        unit = self._unit(dev)
        if domain.hw_mode != MODE_TRANSLATE:
            return
        domain.tags.unassign(TagType.IOTLB, unit, did, pasid, None)
        domain.tags.unassign(TagType.DEVTLB, unit, did, pasid, dev)
        if isinstance(domain, NestedDomain):
            domain.parent.tags.unassign(TagType.NESTING_IOTLB, unit, did, pasid, None)
            domain.parent.tags.unassign(TagType.NESTING_DEVTLB, unit, did, pasid, dev)

    # ------------------------------------------------------------------ I/O page faults
    def _iopf_set(self, domain: IommuDomain | None, dev: IommuDevice) -> None:
        """iopf_for_domain_set() (intel/iommu.h): an IOPF-capable domain needs the device on the IOPF
        queue, which needs PRI (except SVA on a device without PRI)."""
        if domain is None or domain.iopf_handler is None:
            return
        if self.iopf_needs_pri:
            if domain.type == IOMMU_DOMAIN_SVA and dev.pri is None:
                return
            if not dev.pri_enabled:
                raise UapiError(errno.ENODEV, f"{dev.name}: PRI is not enabled")
        if dev.iopf_refcount:
            dev.iopf_refcount += 1
            return
        iopf_queue_add_device(dev)
        dev.iopf_refcount = 1

    def _iopf_remove(self, domain: IommuDomain | None, dev: IommuDevice) -> None:
        if domain is None or domain.iopf_handler is None or not dev.iopf_refcount:
            return
        if self.iopf_needs_pri and domain.type == IOMMU_DOMAIN_SVA and dev.pri is None:
            return
        dev.iopf_refcount -= 1
        if not dev.iopf_refcount:
            iopf_queue_remove_device(dev)

    def _iopf_replace(self, new: IommuDomain, old: IommuDomain | None, dev: IommuDevice) -> None:
        self._iopf_set(new, dev)
        self._iopf_remove(old, dev)

    def prq_event(self, dev: IommuDevice, req: PageRequest) -> None:
        """The page-request queue handler (intel/prq.c prq_event_thread): malformed requests are
        answered Invalid, the rest reported to io-pgfault."""
        canonical = (req.addr >> _X86_CANONICAL_PRQ) in (0, (1 << (64 - _X86_CANONICAL_PRQ)) - 1)
        rw = req.perm & (IOMMU_FAULT_PERM_READ | IOMMU_FAULT_PERM_WRITE)
        if not canonical or (req.perm & IOMMU_FAULT_PERM_PRIV and rw) or (
                req.perm & IOMMU_FAULT_PERM_EXEC and req.perm & IOMMU_FAULT_PERM_READ):
            self.page_response(dev, req, PageResponse(req.pasid, req.grpid, IOMMU_PAGE_RESP_INVALID))
            return
        if req.last and not rw:  # a Stop Marker: no response
            return
        iommu_report_device_fault(dev, req)

    def page_response(self, dev: IommuDevice, req: PageRequest, resp: PageResponse) -> None:
        """ops->page_response(): a PRG Response message to the device."""
        if dev.pri is not None:
            dev.pri.receive_response(resp.grpid, resp.code)

    # ------------------------------------------------------------------ misc ops
    def enforce_cache_coherency(self, domain: PagingDomain) -> bool | None:
        """domain->ops->enforce_cache_coherency(); None: the driver's domains have no such op."""
        return None

    def _units_of(self, domain: IommuDomain) -> list[IommuUnit]:
        return [t.unit for t in domain.tags.tags]

    static_caps: ClassVar[dict[int, bool]] = {}
    """Answers of ops->capable() that do not depend on the unit or device."""
    has_capable: ClassVar[bool] = True
    """ops->capable exists (device_iommu_capable() is false for everything otherwise)."""

    def capable(self, dev: IommuDevice, cap: int) -> bool:
        """ops->capable() (intel_iommu_capable, amd_iommu_capable, arm_smmu_capable): cache coherency,
        dirty tracking from the hardware, ATS for an ATS-capable function, enforce-coherency from the
        unit's ``enforce_coherency`` fact, the rest from the vendor table."""
        unit = self._unit(dev)
        if not self.has_capable:
            return False
        if cap in self.static_caps:
            return self.static_caps[cap]
        if cap == IOMMU_CAP_CACHE_COHERENCY:
            return True
        if cap == IOMMU_CAP_DIRTY_TRACKING:
            return unit.caps.dirty and not dev.no_dirty
        if cap == IOMMU_CAP_PCI_ATS_SUPPORTED:
            return unit.caps.ats and dev.pci is not None and pcie_ats.ats_supported(dev.pci)
        if cap == IOMMU_CAP_ENFORCE_CACHE_COHERENCY:
            return bool(unit.caps.extra.get("enforce_coherency", False))
        return False

    def get_resv_regions(self, dev: IommuDevice) -> list[ResvRegion]:
        """ops->get_resv_regions()."""
        return list(dev.resv)


class IntelDriver(IommuDriver):
    """VT-d in scalable mode (intel/iommu.c)."""

    name = "intel"
    identity_pasid = True

    def _fs_format(self, caps: IommuCaps) -> X86_64:
        # compute_vasz_lg2_fs()
        if caps.ias > 48 and caps.five_level:
            return X86_64(top_level=4, hw_max_vasz_lg2=min(57, caps.ias), features=frozenset({SIGN_EXTEND, FLUSH_RANGE}))
        return X86_64(top_level=3, hw_max_vasz_lg2=min(48, caps.ias), features=frozenset({SIGN_EXTEND, FLUSH_RANGE}))

    def _ss_format(self, caps: IommuCaps, nest_parent: bool) -> VtdSS:
        # compute_vasz_lg2_ss() with SAGAW supporting 4 (and 5) levels
        feats = frozenset({FLUSH_RANGE} | ({FORCE_WRITEABLE} if nest_parent else set()))
        if caps.ias > 48 and caps.five_level:
            return VtdSS(top_level=4, hw_max_vasz_lg2=min(57, caps.ias), features=feats)
        if caps.ias > 39:
            return VtdSS(top_level=3, hw_max_vasz_lg2=min(48, caps.ias), features=feats)
        return VtdSS(top_level=2, hw_max_vasz_lg2=min(39, caps.ias), features=feats)

    def _pgmask(self, caps: IommuCaps, fs: bool) -> int:
        mask = ~0
        if 30 not in caps.superpages:
            mask &= ~_SZ_1G
        if not fs and 21 not in caps.superpages:
            mask &= ~_SZ_2M
        return mask

    def domain_alloc_paging_flags(self, dev: IommuDevice, flags: int = 0,
                                  data: Mapping[str, Any] | None = None) -> PagingDomain:
        """intel_iommu_domain_alloc_paging_flags(): first stage when possible, else second stage."""
        unit = self._unit(dev)
        caps = unit.caps
        if data is not None:
            raise UapiError(errno.EOPNOTSUPP, "VT-d paging domains take no driver data")
        if not flags & ~IOMMU_HWPT_ALLOC_PASID and "x86_64" in caps.formats:
            return PagingDomain(self, self._fs_format(caps), unit.mem, flags=flags,
                                pgsize_mask=self._pgmask(caps, True))
        if flags & ~(IOMMU_HWPT_ALLOC_NEST_PARENT | IOMMU_HWPT_ALLOC_DIRTY_TRACKING | IOMMU_HWPT_ALLOC_PASID):
            raise UapiError(errno.EOPNOTSUPP, f"VT-d: unsupported flags {flags:#x}")
        if (flags & IOMMU_HWPT_ALLOC_NEST_PARENT and not caps.nesting) or (
                flags & IOMMU_HWPT_ALLOC_DIRTY_TRACKING and not caps.dirty):
            raise UapiError(errno.EOPNOTSUPP, f"{unit.name}: no nesting or no dirty tracking (SSADS)")
        if "vtdss" not in caps.formats:
            raise UapiError(errno.EOPNOTSUPP, f"{unit.name}: no second-stage translation")
        fmt = self._ss_format(caps, bool(flags & IOMMU_HWPT_ALLOC_NEST_PARENT))
        return PagingDomain(self, fmt, unit.mem, flags=flags, pgsize_mask=self._pgmask(caps, False))

    def paging_compatible(self, domain: PagingDomain, dev: IommuDevice) -> None:
        """paging_domain_compatible(): first stage (no dirty, no nest parent, 5-level only with
        FL5LP, 1 GiB only with FL1GP) or second stage (dirty needs SSADS, nest parent needs nesting,
        address width within MGAW, same super page support)."""
        super().paging_compatible(domain, dev)
        caps = self._unit(dev).caps
        if domain.fmt.name == "x86_64":
            if domain.dirty_ops or domain.nest_parent:
                raise UapiError(errno.EINVAL, "first-stage domain with dirty tracking or as nest parent")
            if domain.fmt.max_vasz_lg2 > 48 and not caps.five_level:
                raise UapiError(errno.EINVAL, "5-level first stage on a 4-level unit")
            if domain.pgsize_bitmap & _SZ_1G and 30 not in caps.superpages:
                raise UapiError(errno.EINVAL, "1 GiB pages on a unit without FL1GP")
        else:
            if caps.ias < domain.fmt.max_vasz_lg2:
                raise UapiError(errno.EINVAL, f"{domain.fmt.max_vasz_lg2}-bit domain beyond MGAW {caps.ias}")
            if domain.pgsize_bitmap & _SZ_2M and 21 not in caps.superpages or \
                    domain.pgsize_bitmap & _SZ_1G and 30 not in caps.superpages:
                raise UapiError(errno.EINVAL, "super page sizes the unit lacks")

    def enforce_cache_coherency(self, domain: PagingDomain) -> bool | None:
        """intel_iommu_enforce_cache_coherency_fs/_ss(): every unit the domain is attached to must have
        snoop control (domain_support_force_snooping); the second stage then sets SNP in new PTEs."""
        if domain.force_snooping and domain.fmt.name == "x86_64":
            return True
        if not all(u.caps.extra.get("enforce_coherency", False) for u in self._units_of(domain)):
            return False
        if domain.fmt.name == "vtdss":
            domain.fmt.features |= {VTDSS_FORCE_COHERENCE}
        domain.force_snooping = True
        return True

    def get_resv_regions(self, dev: IommuDevice) -> list[ResvRegion]:
        """intel_iommu_get_resv_regions(): the device's RMRRs (direct) and the interrupt window; an ISA
        bridge also gets the floppy window."""
        rmrrs = [(r.start, r.last, r.type != ResvType.DIRECT) for r in dev.resv]
        isa = dev.pci is not None and dev.pci.class_code >> 8 == CLASS_ISA_BRIDGE >> 8
        return intel_resv_regions(rmrrs=rmrrs, isa_bridge=isa)

    def domain_alloc_nested(self, dev: IommuDevice, parent: IommuDomain, flags: int, data_type: str,
                            data: Mapping[str, Any]) -> NestedDomain:
        """intel_iommu_domain_alloc_nested(): VT-d S1 (x86-64) over a second-stage nest parent."""
        unit = self._unit(dev)
        if not unit.caps.nesting or flags & ~IOMMU_HWPT_ALLOC_PASID:
            raise UapiError(errno.EOPNOTSUPP, "VT-d nesting unsupported or bad flags")
        if data_type != "vtd_s1":
            raise UapiError(errno.EOPNOTSUPP, f"VT-d nested data type {data_type!r}")
        if not isinstance(parent, PagingDomain) or parent.fmt.name != "vtdss" or not parent.nest_parent:
            raise UapiError(errno.EINVAL, "the parent is not a second-stage nest parent")
        aw = int(data.get("addr_width", 48))
        # intel_pasid_setup_nested() refuses other widths (at attach in the kernel; here at once)
        if aw not in (48, 57) or (aw == 57 and not unit.caps.five_level):
            raise UapiError(errno.EINVAL, f"stage-1 address width {aw}")
        fmt = X86_64(top_level=3 if aw == 48 else 4, hw_max_vasz_lg2=aw,
                     features=frozenset({SIGN_EXTEND, FLUSH_RANGE}))
        return NestedDomain(self, parent, fmt, int(data["pgtbl_addr"]), flags=flags, data=dict(data))


class AmdDriver(IommuDriver):
    """AMD-Vi (amd/iommu.c)."""

    name = "amd"
    static_caps: ClassVar[dict[int, bool]] = {IOMMU_CAP_NOEXEC: False, IOMMU_CAP_ENFORCE_CACHE_COHERENCY: True}

    def add_unit(self, unit: IommuUnit) -> IommuUnit:
        """amd/init.c: with GTSup, iommu.max_pasids = 2^(PASmax+1) - 1, one short of the PASID width
        (EFR PASmax = width - 1)."""
        super().add_unit(unit)
        if unit.max_pasids:
            unit.max_pasids -= 1
        return unit

    def probe_device(self, dev: IommuDevice, unit: IommuUnit) -> None:
        """dev_iommu_get_max_pasids(): the device's PASID count is capped by the unit's."""
        super().probe_device(dev, unit)
        dev.max_pasids = min(dev.max_pasids, unit.max_pasids)

    def _v1(self, unit: IommuUnit, flags: int) -> PagingDomain:
        # amd_iommu_domain_alloc_paging_v1()
        fmt = AmdV1(starting_level=2, hw_max_vasz_lg2=unit.caps.ias, hw_max_oasz_lg2=52,
                    features=frozenset({DYNAMIC_TOP, ENCRYPT_TABLES, FORCE_COHERENCE, FLUSH_RANGE}))
        return PagingDomain(self, fmt, unit.mem, flags=flags)

    def _v2(self, unit: IommuUnit, flags: int) -> PagingDomain:
        # amd_iommu_domain_alloc_paging_v2(): 4-level (47-bit) or 5-level (56-bit), no sign extension
        five = unit.caps.five_level
        fmt = X86_64(top_level=4 if five else 3, hw_max_vasz_lg2=56 if five else 47, hw_max_oasz_lg2=52,
                     features=frozenset({AMD_ENCRYPT_TABLES, FLUSH_RANGE}))
        return PagingDomain(self, fmt, unit.mem, flags=flags)

    def domain_alloc_paging_flags(self, dev: IommuDevice, flags: int = 0,
                                  data: Mapping[str, Any] | None = None) -> PagingDomain:
        """amd_iommu_domain_alloc_paging_flags()."""
        unit = self._unit(dev)
        caps = unit.caps
        supported = IOMMU_HWPT_ALLOC_DIRTY_TRACKING | IOMMU_HWPT_ALLOC_PASID | IOMMU_HWPT_ALLOC_NEST_PARENT
        if flags & ~supported or data is not None:
            raise UapiError(errno.EOPNOTSUPP, f"AMD: unsupported flags {flags:#x} or driver data")
        if flags and not flags & IOMMU_HWPT_ALLOC_PASID:
            if flags & IOMMU_HWPT_ALLOC_DIRTY_TRACKING and not caps.dirty:
                raise UapiError(errno.EOPNOTSUPP, f"{unit.name}: no host dirty (HD) support")
            if flags & IOMMU_HWPT_ALLOC_NEST_PARENT and not caps.nesting:
                raise UapiError(errno.EOPNOTSUPP, f"{unit.name}: no nesting")
            return self._v1(unit, flags)
        if flags == IOMMU_HWPT_ALLOC_PASID:
            if not caps.pasid_bits:
                raise UapiError(errno.EOPNOTSUPP, f"{unit.name}: no PASID support")
            return self._v2(unit, flags)
        if flags:
            raise UapiError(errno.EOPNOTSUPP, f"AMD: flag combination {flags:#x}")
        return self._v1(unit, flags)

    def enforce_cache_coherency(self, domain: PagingDomain) -> bool | None:
        """amd_iommu_enforce_cache_coherency(): IOMMU_PTE_FC is always set."""
        return True

    def get_resv_regions(self, dev: IommuDevice) -> list[ResvRegion]:
        unit = self._unit(dev)
        unity = [(r.start, r.start + r.length, r.prot) for r in dev.resv]
        return amd_resv_regions(unity_maps=unity, ht_range_ignore=bool(unit.caps.extra.get("ht_range_ignore")))


class SmmuV3Driver(IommuDriver):
    """Arm SMMUv3 (arm-smmu-v3.c) with io-pgtable-arm LPAE tables."""

    name = "arm-smmu-v3"
    static_caps: ClassVar[dict[int, bool]] = {IOMMU_CAP_NOEXEC: True, IOMMU_CAP_DEFERRED_FLUSH: True}

    def domain_alloc_paging_flags(self, dev: IommuDevice, flags: int = 0,
                                  data: Mapping[str, Any] | None = None) -> PagingDomain:
        """arm_smmu_domain_alloc_paging_flags(): stage 1 by default, stage 2 for a nest parent; dirty
        tracking (HTTU HD) only on stage 1.  The domain belongs to this SMMU instance."""
        unit = self._unit(dev)
        caps = unit.caps
        if flags & ~(IOMMU_HWPT_ALLOC_DIRTY_TRACKING | IOMMU_HWPT_ALLOC_PASID | IOMMU_HWPT_ALLOC_NEST_PARENT) \
                or data is not None:
            raise UapiError(errno.EOPNOTSUPP, f"SMMUv3: unsupported flags {flags:#x} or driver data")
        if flags == IOMMU_HWPT_ALLOC_NEST_PARENT:
            if not caps.nesting:
                raise UapiError(errno.EOPNOTSUPP, f"{unit.name}: no nesting")
            fmt = ArmLpae(stage=2, ias=caps.oas, oas=caps.oas)
        elif flags & ~(IOMMU_HWPT_ALLOC_DIRTY_TRACKING | IOMMU_HWPT_ALLOC_PASID):
            raise UapiError(errno.EOPNOTSUPP, f"SMMUv3: flag combination {flags:#x}")
        else:
            if flags & IOMMU_HWPT_ALLOC_DIRTY_TRACKING and not caps.dirty:
                raise UapiError(errno.EOPNOTSUPP, f"{unit.name}: no HTTU dirty support")
            quirks = frozenset({QUIRK_ARM_HD}) if flags & IOMMU_HWPT_ALLOC_DIRTY_TRACKING else frozenset()
            fmt = ArmLpae(stage=1, ias=min(caps.ias, 48), oas=caps.oas, quirks=quirks)
        dom = PagingDomain(self, fmt, unit.mem, flags=flags)
        dom.home = unit
        return dom

    def paging_compatible(self, domain: PagingDomain, dev: IommuDevice) -> None:
        """arm_smmu_attach_dev(): EINVAL for a domain of another SMMU instance."""
        super().paging_compatible(domain, dev)
        if domain.home is not None and domain.home is not dev.unit:
            raise UapiError(errno.EINVAL, f"{domain!r} belongs to another SMMU")

    def enforce_cache_coherency(self, domain: PagingDomain) -> bool | None:
        """arm_smmu_enforce_cache_coherency(): every attached master must be able to force write-back
        (arm_smmu_master_canwbs: the unit's ``canwbs`` fact)."""
        if not all(u.caps.extra.get("canwbs", False) for u in self._units_of(domain)):
            return False
        domain.force_snooping = True
        return True

    def get_resv_regions(self, dev: IommuDevice) -> list[ResvRegion]:
        return arm_smmu_resv_regions(platform=dev.resv)


class RiscvDriver(IommuDriver):
    """RISC-V IOMMU (riscv/iommu.c): ops->domain_alloc_paging only (so any flag is EOPNOTSUPP in
    __iommu_paging_domain_alloc_flags()), no PASID."""

    name = "riscv"
    pasid_ops = False
    has_capable = False

    def domain_alloc_paging_flags(self, dev: IommuDevice, flags: int = 0,
                                  data: Mapping[str, Any] | None = None) -> PagingDomain:
        unit = self._unit(dev)
        if flags or data is not None:
            raise UapiError(errno.EOPNOTSUPP, "RISC-V: paging domains take no flags")
        vasz = 57 if unit.caps.ias >= 57 else 48 if unit.caps.ias >= 48 else 39
        return PagingDomain(self, RiscV64(hw_max_vasz_lg2=vasz), unit.mem)


class MockDriver(IommuDriver):
    """The iommufd selftest's mock IOMMU (drivers/iommu/iommufd/selftest.c)."""

    name = "mock"
    user_pasid_table = True
    has_identity = False
    iopf_needs_pri = False
    default_type = IOMMU_DOMAIN_BLOCKED  # .default_domain = &mock_blocking_domain

    def __init__(self) -> None:
        super().__init__()
        self._pasid_1024_armed: weakref.WeakSet[IommuDevice] = weakref.WeakSet()

    def domain_alloc_paging_flags(self, dev: IommuDevice, flags: int = 0,
                                  data: Mapping[str, Any] | None = None) -> PagingDomain:
        """mock_domain_alloc_paging_flags(): ``data`` = {"pagetable_type": MOCK_IOMMUPT_*}."""
        unit = self._unit(dev)
        allowed = IOMMU_HWPT_ALLOC_DIRTY_TRACKING | IOMMU_HWPT_ALLOC_NEST_PARENT | IOMMU_HWPT_ALLOC_PASID
        if flags & ~allowed or (flags & IOMMU_HWPT_ALLOC_DIRTY_TRACKING and dev.no_dirty):
            raise UapiError(errno.EOPNOTSUPP, f"mock: flags {flags:#x}")
        pt_type = int((data or {}).get("pagetable_type", MOCK_IOMMUPT_DEFAULT))
        if pt_type not in (MOCK_IOMMUPT_DEFAULT, MOCK_IOMMUPT_HUGE):
            raise UapiError(errno.EOPNOTSUPP, f"mock: pagetable_type {pt_type}")
        if pt_type == MOCK_IOMMUPT_HUGE:
            dom = PagingDomain(self, AmdV1Mock(), unit.mem, flags=flags,
                               pgsize_mask=MOCK_HUGE_PAGE_SIZE | PAGE_SIZE)
            return dom
        return PagingDomain(self, AmdV1Mock(), unit.mem, flags=flags,
                            aperture=(MOCK_APERTURE_START, MOCK_APERTURE_LAST))

    def check_attach(self, domain: IommuDomain, dev: IommuDevice) -> None:
        """mock_domain_nop_attach(): EINVAL for a dirty-tracking domain on a NO_DIRTY device; only the
        attached domain's own dirty_ops count (selftest.c: a nested domain has none, whatever its parent)."""
        super().check_attach(domain, dev)
        if isinstance(domain, PagingDomain) and domain.dirty_ops and dev.no_dirty:
            raise UapiError(errno.EINVAL, f"{dev.name} cannot do dirty tracking")

    def domain_alloc_nested(self, dev: IommuDevice, parent: IommuDomain, flags: int, data_type: str,
                            data: Mapping[str, Any]) -> NestedDomain:
        """mock_domain_alloc_nested(): data {"iotlb": value}; stage 1 is not translated (the mock's
        nested domain has no table: DMA goes through the parent)."""
        if flags & ~IOMMU_HWPT_ALLOC_PASID:
            raise UapiError(errno.EOPNOTSUPP, f"mock nested: flags {flags:#x}")
        if not isinstance(parent, PagingDomain):
            raise UapiError(errno.EINVAL, "mock nested: parent is not a paging domain")
        if data_type != "selftest":
            raise UapiError(errno.EOPNOTSUPP, f"mock nested data type {data_type!r}")
        d = NestedDomain(self, parent, None, 0, flags=flags, data=dict(data))
        d.data["iotlb"] = [int(data.get("iotlb", 0))] * MOCK_NESTED_DOMAIN_IOTLB_NUM
        return d

    def _pasid_hook(self, domain: IommuDomain, dev: IommuDevice, pasid: int) -> None:
        """mock_domain_set_dev_pasid_nop(): on PASID 1024 every second non-blocking attach fails with
        ENOMEM (a blocking attach re-arms it), to test rollback of replace."""
        if pasid != 1024:
            return
        armed = self._pasid_1024_armed
        if domain.type == IOMMU_DOMAIN_BLOCKED:
            armed.discard(dev)
        elif dev in armed:
            armed.discard(dev)
            raise UapiError(errno.ENOMEM, "mock: injected PASID 1024 failure")
        else:
            armed.add(dev)

    def capable(self, dev: IommuDevice, cap: int) -> bool:
        """mock_domain_capable(): cache coherency, and dirty tracking unless the device is NO_DIRTY."""
        if cap == IOMMU_CAP_CACHE_COHERENCY:
            return True
        if cap == IOMMU_CAP_DIRTY_TRACKING:
            return not dev.no_dirty
        return False


# ---------------------------------------------------------------------- unit presets
PRESETS: Final[dict[str, tuple[type[IommuDriver], IommuCaps]]] = {
    "intel": (IntelDriver, IommuCaps("intel", ("x86_64", "vtdss"), ias=48, oas=46, pasid_bits=20, dirty=True,
                                     nesting=True, ats=True, pri=True, sva=True, superpages=(21, 30),
                                     extra={"enforce_coherency": True})),  # ECAP.SC
    "amd": (AmdDriver, IommuCaps("amd", ("amdv1", "x86_64"), ias=64, oas=52, pasid_bits=16, dirty=True,
                                 nesting=False, ats=True, pri=True, sva=True,
                                 superpages=tuple(range(13, 52)))),
    "arm-smmu-v3": (SmmuV3Driver, IommuCaps("arm-smmu-v3", ("arm_lpae_s1", "arm_lpae_s2"), ias=48, oas=48,
                                            pasid_bits=20, dirty=True, nesting=True, ats=True, pri=False,
                                            sva=True, superpages=(21, 30))),
    "riscv": (RiscvDriver, IommuCaps("riscv", ("riscv64",), ias=48, oas=56, pasid_bits=0, dirty=False,
                                     nesting=False, ats=False, pri=False, sva=False, superpages=(16, 21, 30))),
    "mock": (MockDriver, IommuCaps("mock", ("amdv1_mock",), ias=56, oas=51, pasid_bits=MOCK_PASID_WIDTH,
                                   dirty=True, nesting=True, ats=False, pri=True, sva=False,
                                   superpages=tuple(range(12, 51)))),
}

def make_unit(kind: str, mem: PhysMemory, *, name: str | None = None, driver: IommuDriver | None = None,
              **overrides: Any) -> IommuUnit:
    """A unit of a preset kind ("intel", "amd", "arm-smmu-v3", "riscv", "mock"), capabilities
    overridden by keyword (e.g. ``dirty=False``, ``iotlb_entries=64``), driven by ``driver`` (default:
    a fresh driver of that kind, so static domains are per scenario)."""
    if kind not in PRESETS:
        raise VfiolabError(f"unknown IOMMU kind {kind!r}; known: {', '.join(PRESETS)}")
    cls, caps = PRESETS[kind]
    bad = set(overrides) - set(IommuCaps.__dataclass_fields__)
    if bad:
        raise VfiolabError(f"unknown IOMMU capability {min(bad)!r}")
    caps = dataclasses.replace(caps, **overrides)
    drv = driver if driver is not None else cls()
    unit = IommuUnit(name or f"{kind}-iommu{len(drv.units)}", caps, mem)
    drv.add_unit(unit)
    return unit
