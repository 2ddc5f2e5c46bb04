"""IOMMU_GET_HW_INFO (``drivers/iommu/iommufd/device.c`` iommufd_get_hw_info) and the drivers'
``ops->hw_info``: the raw capability registers of the IOMMU behind a device.

A simulated unit has no MMIO register file, so its registers are derived here, field by field, from
what the unit models (:class:`~vfiolab.iommu.unit.IommuCaps`): a feature the model implements reads 1,
one it does not model reads 0, and sizes and widths are those the model uses.  The field tables cite the
specifications; the kernel macros that decode them are named next to each field.

* VT-d (``intel/iommu.c`` intel_iommu_hw_info): ``struct iommu_hw_info_vtd`` = ERRATA_772415_SPR17 (always
  set), CAP_REG (VT-d spec 5.0 §11.4.2, offset 08h) and ECAP_REG (§11.4.3, offset 10h).
* SMMUv3 (``arm-smmu-v3-iommufd.c`` arm_smmu_hw_info): ``struct iommu_hw_info_arm_smmuv3`` = SMMU_IDR0..5,
  SMMU_IIDR, SMMU_AIDR (Arm IHI 0070 §6.3.1-6.3.6 and the IIDR/AIDR registers at 0x18/0x1C).
* AMD (``amd/iommufd.c`` amd_iommufd_hw_info): ``struct iommu_hw_info_amd`` = the Extended Feature
  Register (MMIO 0030h) and Extended Feature 2 Register (MMIO 01A0h), AMD IOMMU spec 48882 rev 3.10.

Each driver accepts IOMMU_HW_INFO_TYPE_DEFAULT or its own type (EOPNOTSUPP otherwise) and allocates
the struct it returns (a fault-injection point).  RISC-V has no ops->hw_info (type NONE, no data).
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from vfiolab.errors import UapiError, VfiolabError
from vfiolab.faultinject import fail_point
from vfiolab.iommu.device import IommuDevice
from vfiolab.iommu.driver import IOMMU_CAP_DIRTY_TRACKING, IOMMU_CAP_PCI_ATS_SUPPORTED
from vfiolab.iommu.unit import IommuCaps, IommuUnit
from vfiolab.iommufd import uapi

if TYPE_CHECKING:
    from vfiolab.iommufd.ucmd import Ucmd

HwInfoOp = Callable[[IommuDevice, int], "tuple[bytes, int]"]
HW_INFO_OPS: dict[str, HwInfoOp] = {}
"""driver name -> ops->hw_info(dev, in_type) returning (data, out_type); UapiError for a refused type.
A driver without an entry reports IOMMU_HW_INFO_TYPE_NONE with no data, like a driver without hw_info."""


@dataclass(frozen=True)
class RegField:
    """One register field: name, lowest bit, width, and its value for a unit's capabilities."""

    name: str
    lo: int
    width: int
    value: Callable[[IommuCaps], int]


def encode(fields: tuple[RegField, ...], caps: IommuCaps) -> int:
    """The register value: every field's value at its position (VfiolabError when one does not fit)."""
    reg = 0
    for f in fields:
        v = int(f.value(caps))
        if not 0 <= v < 1 << f.width:
            raise VfiolabError(f"{f.name} = {v} does not fit {f.width} bit(s) for {caps.vendor}")
        reg |= v << f.lo
    return reg


def decode(fields: tuple[RegField, ...], reg: int) -> dict[str, int]:
    """Field name -> value of a register."""
    return {f.name: (reg >> f.lo) & ((1 << f.width) - 1) for f in fields}


def _ilog2(n: int) -> int:
    return n.bit_length() - 1


def _no(c: IommuCaps) -> int:
    """A feature the model does not have (or a reserved-as-zero field)."""
    return 0


def _yes(c: IommuCaps) -> int:
    """A feature every unit of the model has."""
    return 1


# ---------------------------------------------------------------------- VT-d (VT-d spec 5.0 §11.4.2, §11.4.3)
VTD_FRO: Final = 0x400
"""Fault-recording registers at 400h and the IOTLB registers at 500h: the offsets a common Xeon reports."""
VTD_IRO: Final = 0x500
VTD_NUM_FAULT_REGS: Final = 8


def _vtd_nd(c: IommuCaps) -> int:
    # ND: 2^(4 + 2*ND) domain IDs (cap_ndoms()), so the largest ND whose count the DID width covers
    if c.did_bits < 4:
        raise VfiolabError(f"VT-d needs at least 4 domain-ID bits, not {c.did_bits}")
    return min(6, (c.did_bits - 4) // 2)


def _vtd_sagaw(c: IommuCaps) -> int:
    # SAGAW bit 1: 39-bit 3-level, bit 2: 48-bit 4-level, bit 3: 57-bit 5-level second-stage tables,
    # as the model's second stage picks them (IntelDriver._ss_format, compute_vasz_lg2_ss())
    sagaw = 0b0010 if c.ias >= 39 else 0
    if c.ias >= 48:
        sagaw |= 0b0100
    if c.ias >= 57 and c.five_level:
        sagaw |= 0b1000
    return sagaw


def _has(fmt: str) -> Callable[[IommuCaps], int]:
    return lambda c: int(fmt in c.formats)


VTD_CAP_FIELDS: Final = (
    RegField("ND", 0, 3, _vtd_nd),                                      # cap_ndoms()
    RegField("AFL", 3, 1, _no),                                 # advanced fault logging: not modelled
    RegField("RWBF", 4, 1, _no),                                # no write-buffer flushing needed
    RegField("PLMR", 5, 1, _no),                                # protected memory regions: none
    RegField("PHMR", 6, 1, _no),
    RegField("CM", 7, 1, _no),                                  # caching mode: real hardware
    RegField("SAGAW", 8, 5, _vtd_sagaw),                                # cap_sagaw()
    RegField("MGAW", 16, 6, lambda c: c.ias - 1),                       # cap_mgaw() = MGAW + 1
    RegField("ZLR", 22, 1, _no),                                # zero-length reads: not modelled
    RegField("FRO", 24, 10, lambda c: VTD_FRO // 16),                   # cap_fault_reg_offset()
    RegField("SLLPS", 34, 4, lambda c: int(21 in c.superpages) | int(30 in c.superpages) << 1),
    RegField("PSI", 39, 1, _yes),                                # page-selective IOTLB invalidation
    RegField("NFR", 40, 8, lambda c: VTD_NUM_FAULT_REGS - 1),           # cap_num_fault_regs() - 1
    RegField("MAMV", 48, 6, lambda c: c.ias - 12),                      # a PSI can cover the whole IOVA space
    RegField("DWD", 54, 1, _no),                                # write/read draining: not modelled
    RegField("DRD", 55, 1, _no),
    RegField("FL1GP", 56, 1, lambda c: int(30 in c.superpages)),        # first-stage 1 GiB pages
    RegField("PI", 59, 1, _no),                                 # posted interrupts: not modelled
    RegField("FL5LP", 60, 1, lambda c: int(c.five_level)),              # first-stage 5-level paging
    RegField("ECMDS", 61, 1, _no),
    RegField("ESIRTPS", 62, 1, _no),
    RegField("ESRTPS", 63, 1, _no),
)
"""Capability Register.  SAGAW/MGAW follow the second-stage formats the model builds, SLLPS/FL1GP its
huge-page sizes, FL5LP its 5-level support."""

VTD_ECAP_FIELDS: Final = (
    RegField("C", 0, 1, _yes),                                   # page-walks are coherent
    RegField("QI", 1, 1, _yes),                                  # queued invalidation (scalable mode)
    RegField("DT", 2, 1, lambda c: int(c.ats)),                         # device-TLBs: ATS
    RegField("IR", 3, 1, _yes),                                  # interrupt remapping: iommufd binds
    RegField("EIM", 4, 1, _yes),                                 #   every group as MSI-isolated
    RegField("PT", 6, 1, _yes),                                  # pass-through: the identity domain
    RegField("SC", 7, 1, lambda c: int(bool(c.extra.get("enforce_coherency", False)))),  # snoop control
    RegField("IRO", 8, 10, lambda c: VTD_IRO // 16),                    # ecap_iotlb_offset()
    RegField("MHMV", 20, 4, lambda c: 15),                              # IR handle mask (with IR)
    RegField("MTS", 25, 1, _no),                                # memory types: not modelled
    RegField("NEST", 26, 1, lambda c: int(c.nesting)),                  # nested translation
    RegField("PRS", 29, 1, lambda c: int(c.pri)),                       # page requests
    RegField("ERS", 30, 1, _no),                                # execute requests: not modelled
    RegField("SRS", 31, 1, _no),                                # supervisor requests: not modelled
    RegField("NWFS", 33, 1, _no),
    RegField("EAFS", 34, 1, _no),
    RegField("PSS", 35, 5, lambda c: c.pasid_bits - 1 if c.pasid_bits else 0),  # max_pasids = 2 << PSS
    RegField("PASID", 40, 1, lambda c: int(c.pasid_bits > 0)),
    RegField("DIT", 41, 1, _no),
    RegField("PDS", 42, 1, lambda c: int(c.pri)),                       # page-request drain (with PRS)
    RegField("SMTS", 43, 1, _yes),                               # scalable mode: what the model is
    RegField("VCS", 44, 1, _no),
    RegField("SLADS", 45, 1, lambda c: int(c.dirty)),                   # second-stage A/D: dirty tracking
    RegField("SLTS", 46, 1, _has("vtdss")),                             # second-stage translation
    RegField("FLTS", 47, 1, _has("x86_64")),                            # first-stage translation
    RegField("SMPWCS", 48, 1, _yes),                             # scalable-mode walks are coherent
    RegField("RPS", 49, 1, _no),
    RegField("PMS", 51, 1, _no),
    RegField("ADMS", 52, 1, _no),
    RegField("RPRIVS", 53, 1, _no),
)
"""Extended Capability Register.  With these, the kernel's ssads_supported() (SMTS, SLADS, SMPWCS) is
the unit's dirty tracking, nested_supported() its nesting, ecap_sc_support() its enforced coherency and
2 << PSS its PASID count."""


def vtd_cap_reg(caps: IommuCaps) -> int:
    """CAP_REG of a VT-d unit."""
    return encode(VTD_CAP_FIELDS, caps)


def vtd_ecap_reg(caps: IommuCaps) -> int:
    """ECAP_REG of a VT-d unit."""
    return encode(VTD_ECAP_FIELDS, caps)


# ---------------------------------------------------------------------- SMMUv3 (Arm IHI 0070 §6.3)
_SMMU_OAS: Final = {32: 0, 36: 1, 40: 2, 42: 3, 44: 4, 48: 5, 52: 6}
SMMU_SIDSIZE: Final = 16
"""StreamIDs are PCI requester IDs."""
SMMU_CMDQS: Final = 8
"""log2 command-queue entries (not modelled; Linux needs more than log2(CMDQ_BATCH_ENTRIES) = 6)."""
SMMU_AIDR_V3_2: Final = 0x02
"""ArchMajorRev 0 (SMMUv3), ArchMinorRev 2: IDR3.RIL (range invalidation) is an SMMUv3.2 feature."""


def _smmu_oas(c: IommuCaps) -> int:
    if c.oas not in _SMMU_OAS:
        raise VfiolabError(f"SMMUv3 has no {c.oas}-bit output size encoding")
    return _SMMU_OAS[c.oas]


SMMU_IDR0_FIELDS: Final = (
    RegField("S2P", 0, 1, _has("arm_lpae_s2")),                         # stage 2
    RegField("S1P", 1, 1, _has("arm_lpae_s1")),                         # stage 1
    RegField("TTF", 2, 2, lambda c: 2),                                 # AArch64 tables only
    RegField("COHACC", 4, 1, _yes),                              # coherent (CAP_CACHE_COHERENCY)
    RegField("BTM", 5, 1, _no),                                 # broadcast TLB maintenance: no
    RegField("HTTU", 6, 2, lambda c: 2 if c.dirty else 0),              # access flag and dirty state (HD)
    RegField("DORMHINT", 8, 1, _no),
    RegField("HYP", 9, 1, _no),
    RegField("ATS", 10, 1, lambda c: int(c.ats)),
    RegField("NS1ATS", 11, 1, _no),
    RegField("ASID16", 12, 1, lambda c: int(c.did_bits >= 16)),
    RegField("MSI", 13, 1, _no),                                # MSIs: not modelled
    RegField("SEV", 14, 1, _no),
    RegField("ATOS", 15, 1, _no),
    RegField("PRI", 16, 1, lambda c: int(c.pri)),
    RegField("VMW", 17, 1, _no),
    RegField("VMID16", 18, 1, lambda c: int(c.did_bits >= 16)),
    RegField("CD2L", 19, 1, lambda c: int(c.pasid_bits > 0)),           # 2-level CD tables for SubstreamIDs
    RegField("VATOS", 20, 1, _no),
    RegField("TTENDIAN", 21, 2, lambda c: 2),                           # little-endian tables only
    RegField("ATSRECERR", 23, 1, _no),
    RegField("STALL_MODEL", 24, 2, _yes),                        # stalls not supported
    RegField("TERM_MODEL", 26, 1, _no),
    RegField("ST_LEVEL", 27, 2, _yes),                           # 2-level stream table (16-bit SIDs)
)
SMMU_IDR1_FIELDS: Final = (
    RegField("SIDSIZE", 0, 6, lambda c: SMMU_SIDSIZE),
    RegField("SSIDSIZE", 6, 5, lambda c: c.pasid_bits),                 # max_pasids = 1 << SSIDSIZE
    RegField("PRIQS", 11, 5, lambda c: _ilog2(c.prq_depth) if c.pri else 0),
    RegField("EVENTQS", 16, 5, lambda c: _ilog2(c.fault_queue_depth)),  # the unit's fault log
    RegField("CMDQS", 21, 5, lambda c: SMMU_CMDQS),
    RegField("ATTR_PERMS_OVR", 26, 1, _no),
    RegField("ATTR_TYPES_OVR", 27, 1, _no),
    RegField("REL", 28, 1, _no),                                # Linux refuses REL and the
    RegField("QUEUES_PRESET", 29, 1, _no),                      #   preset queues and tables
    RegField("TABLES_PRESET", 30, 1, _no),
    RegField("ECMDQ", 31, 1, _no),
)
SMMU_IDR3_FIELDS: Final = (
    RegField("HAD", 2, 1, _no),
    RegField("PBHA", 3, 1, _no),
    RegField("XNX", 4, 1, _no),
    RegField("PPS", 5, 1, _no),
    RegField("MPAM", 7, 1, _no),
    RegField("FWB", 8, 1, _no),
    RegField("STT", 9, 1, _no),
    RegField("RIL", 10, 1, _yes),                                # range invalidation: the IOTLB
    RegField("BBML", 11, 2, _no),                               #   invalidates ranges
)
SMMU_IDR5_FIELDS: Final = (
    RegField("OAS", 0, 3, _smmu_oas),
    RegField("GRAN4K", 4, 1, _yes),                              # the LPAE format's only granule
    RegField("GRAN16K", 5, 1, _no),
    RegField("GRAN64K", 6, 1, _no),
    RegField("VAX", 10, 2, lambda c: int(c.ias > 48)),                  # 52-bit VA
    RegField("STALL_MAX", 16, 16, _no),
)


@dataclass(frozen=True)
class SmmuRegs:
    """SMMU_IDR0..5, SMMU_IIDR, SMMU_AIDR."""

    idr: tuple[int, int, int, int, int, int]
    iidr: int
    aidr: int


def smmuv3_regs(caps: IommuCaps) -> SmmuRegs:
    """The ID registers of an SMMUv3 unit (IDR2 BA_VATOS and IDR4 IMPLEMENTATION DEFINED read 0; IIDR is
    0, no implementation named, unless ``caps.extra["smmu_iidr"]`` gives one)."""
    idr = (encode(SMMU_IDR0_FIELDS, caps), encode(SMMU_IDR1_FIELDS, caps), 0,
           encode(SMMU_IDR3_FIELDS, caps), 0, encode(SMMU_IDR5_FIELDS, caps))
    return SmmuRegs(idr, int(caps.extra.get("smmu_iidr", 0)) & 0xFFFF_FFFF, SMMU_AIDR_V3_2)


# ---------------------------------------------------------------------- AMD (spec 48882 rev 3.10)
def _amd_hats(c: IommuCaps) -> int:
    # HATS: host page-table levels 4 (00b), 5 (01b), 6 (10b); the kernel's VA size is (HATS + 3) * 9 + 21
    levels = -(-(min(c.ias, 64) - 12) // 9)
    if not 4 <= max(levels, 4) <= 6:
        raise VfiolabError(f"AMD host tables have no {levels}-level encoding")
    return max(levels, 4) - 4


def _amd_gt(c: IommuCaps) -> int:
    return int(c.pasid_bits > 0 and "x86_64" in c.formats)  # v2 (guest) tables serve the PASIDs


AMD_EFR_FIELDS: Final = (
    RegField("PREFSup", 0, 1, _no),                             # prefetch: not modelled
    RegField("PPRSup", 1, 1, lambda c: int(c.pri)),                     # peripheral page requests
    RegField("XTSup", 2, 1, _no),
    RegField("NXSup", 3, 1, _no),                               # no-execute (IOMMU_CAP_NOEXEC false)
    RegField("GTSup", 4, 1, _amd_gt),                                   # guest translation (PASIDs)
    RegField("IASup", 6, 1, _yes),                               # INVALIDATE_IOMMU_ALL
    RegField("GASup", 7, 1, _no),
    RegField("HESup", 8, 1, _no),
    RegField("PCSup", 9, 1, _no),
    RegField("HATS", 10, 2, _amd_hats),
    RegField("GATS", 12, 2, lambda c: int(c.five_level)),               # guest levels 4 (00b) or 5 (01b)
    RegField("GLXSup", 14, 2, lambda c: int(c.pasid_bits > 9)),         # 2-level GCR3 tables above 512 PASIDs
    RegField("PASmax", 32, 5, lambda c: c.pasid_bits - 1 if _amd_gt(c) else 0),
    RegField("GIOSup", 48, 1, _amd_gt),                                 # v2 tables for DMA
    RegField("HASup", 49, 1, lambda c: int(c.dirty)),                   # host access bits
    RegField("EPHSup", 50, 1, _no),
    RegField("HDSup", 52, 1, lambda c: int(c.dirty)),                   # host dirty (amd_iommu_hd_support)
    RegField("VIOMMUSup", 55, 1, _no),
    RegField("SNPSup", 63, 1, _no),
)
AMD_EFR2_FIELDS: Final = (
    RegField("SEVSNPIOSup", 1, 1, _no),
    RegField("GCR3TRPMode", 3, 1, _no),
    RegField("SNPAVICSup", 5, 3, _no),
    RegField("NumIntRemapSup", 8, 2, _no),                      # 512 IRTEs
    RegField("HTRangeIgnore", 11, 1, lambda c: int(bool(c.extra.get("ht_range_ignore", False)))),
)


def amd_efr(caps: IommuCaps) -> int:
    """EFR of an AMD unit (the kernel's max_pasids = 2^(PASmax+1) - 1)."""
    return encode(AMD_EFR_FIELDS, caps)


def amd_efr2(caps: IommuCaps) -> int:
    """EFR2 of an AMD unit."""
    return encode(AMD_EFR2_FIELDS, caps)


# ---------------------------------------------------------------------- ops->hw_info of the drivers
def _unit(dev: IommuDevice) -> IommuUnit:
    if dev.unit is None:
        raise UapiError(errno.ENODEV, f"{dev.name} is not behind an IOMMU")
    return dev.unit


def _check_type(in_type: int, own: int) -> None:
    if in_type not in (uapi.IOMMU_HW_INFO_TYPE_DEFAULT, own):
        raise UapiError(errno.EOPNOTSUPP, f"hw_info type {in_type}")


def intel_iommu_hw_info(dev: IommuDevice, in_type: int) -> tuple[bytes, int]:
    """intel_iommu_hw_info(): the errata flag, CAP_REG and ECAP_REG."""
    _check_type(in_type, uapi.IOMMU_HW_INFO_TYPE_INTEL_VTD)
    caps = _unit(dev).caps
    fail_point("intel_iommu_hw_info: kzalloc(struct iommu_hw_info_vtd)")
    data = uapi.iommu_hw_info_vtd.pack(flags=uapi.IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17,
                                      cap_reg=vtd_cap_reg(caps), ecap_reg=vtd_ecap_reg(caps))
    return data, uapi.IOMMU_HW_INFO_TYPE_INTEL_VTD


def arm_smmu_hw_info(dev: IommuDevice, in_type: int) -> tuple[bytes, int]:
    """arm_smmu_hw_info(): IDR0..5, IIDR and AIDR as read from the SMMU (no impl_ops: other types are
    EOPNOTSUPP)."""
    _check_type(in_type, uapi.IOMMU_HW_INFO_TYPE_ARM_SMMUV3)
    regs = smmuv3_regs(_unit(dev).caps)
    fail_point("arm_smmu_hw_info: kzalloc(struct iommu_hw_info_arm_smmuv3)")
    st = uapi.iommu_hw_info_arm_smmuv3
    data = bytearray(st.pack(iidr=regs.iidr, aidr=regs.aidr))
    st.put_array(data, "idr", regs.idr)
    return bytes(data), uapi.IOMMU_HW_INFO_TYPE_ARM_SMMUV3


def amd_iommufd_hw_info(dev: IommuDevice, in_type: int) -> tuple[bytes, int]:
    """amd_iommufd_hw_info(): EFR and EFR2 (CONFIG_AMD_IOMMU_IOMMUFD)."""
    _check_type(in_type, uapi.IOMMU_HW_INFO_TYPE_AMD)
    caps = _unit(dev).caps
    fail_point("amd_iommufd_hw_info: kzalloc(struct iommu_hw_info_amd)")
    return uapi.iommu_hw_info_amd.pack(efr=amd_efr(caps), efr2=amd_efr2(caps)), uapi.IOMMU_HW_INFO_TYPE_AMD


HW_INFO_OPS["intel"] = intel_iommu_hw_info
HW_INFO_OPS["arm-smmu-v3"] = arm_smmu_hw_info
HW_INFO_OPS["amd"] = amd_iommufd_hw_info


def unit_registers(unit: IommuUnit) -> dict[str, Any]:
    """The capability registers of a unit by their spec names (empty for units without any here)."""
    caps = unit.caps
    if caps.vendor == "intel":
        return {"CAP_REG": vtd_cap_reg(caps), "ECAP_REG": vtd_ecap_reg(caps)}
    if caps.vendor == "arm-smmu-v3":
        r = smmuv3_regs(caps)
        return {**{f"SMMU_IDR{i}": v for i, v in enumerate(r.idr)}, "SMMU_IIDR": r.iidr, "SMMU_AIDR": r.aidr}
    if caps.vendor == "amd":
        return {"EFR": amd_efr(caps), "EFR2": amd_efr2(caps)}
    return {}


# ---------------------------------------------------------------------- the ioctl
def get_hw_info(ucmd: Ucmd) -> int:
    """IOMMU_GET_HW_INFO: flags and reserved bytes, DEFAULT unless IOMMU_HW_INFO_FLAG_INPUT_TYPE, the
    driver's data (at most ``data_len`` bytes copied, the rest of the user buffer zeroed, the kernel's
    length written back), then the capabilities and the PASID width of the device."""
    from vfiolab.iommufd.device import get_device
    cmd = ucmd.cmd
    ictx = ucmd.ictx
    if cmd["flags"] & ~uapi.IOMMU_HW_INFO_FLAG_INPUT_TYPE:
        raise UapiError(errno.EOPNOTSUPP, f"flags {cmd['flags']:#x}")
    if any(ucmd.struct.get_array(ucmd.raw, "__reserved")):
        raise UapiError(errno.EOPNOTSUPP, "__reserved != 0")
    if not cmd["flags"] & uapi.IOMMU_HW_INFO_FLAG_INPUT_TYPE:
        cmd["data_type"] = uapi.IOMMU_HW_INFO_TYPE_DEFAULT  # drivers do not get a random input
    idev = get_device(ictx, cmd["dev_id"])
    op = HW_INFO_OPS.get(idev.driver.name)
    if op is not None:
        data, out_type = op(idev.dev, cmd["data_type"])
        if out_type == uapi.IOMMU_HW_INFO_TYPE_NONE:  # WARN_ON_ONCE: a driver bug
            raise UapiError(errno.EOPNOTSUPP, "driver reported no hw_info type")
    else:
        data, out_type = b"", uapi.IOMMU_HW_INFO_TYPE_NONE
    cmd["data_type"] = out_type
    copy_len = min(cmd["data_len"], len(data))
    ictx.copy_to_user(cmd["data_uptr"], data[:copy_len])
    if copy_len < cmd["data_len"]:  # clear_user() of the bytes past what the kernel has
        ictx.copy_to_user(cmd["data_uptr"] + copy_len, bytes(cmd["data_len"] - copy_len))
    cmd["data_len"] = len(data)
    caps = 0
    if idev.driver.capable(idev.dev, IOMMU_CAP_DIRTY_TRACKING):
        caps |= uapi.IOMMU_HW_CAP_DIRTY_TRACKING
    if not idev.driver.capable(idev.dev, IOMMU_CAP_PCI_ATS_SUPPORTED):
        caps |= uapi.IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED
    cmd["out_max_pasid_log2"] = 0
    if idev.dev.max_pasids:  # enabled at probe: reported with what pci_pasid_status() says
        cmd["out_max_pasid_log2"] = _ilog2(idev.dev.max_pasids)
        if idev.dev.pci is not None:
            from vfiolab.iommu import pcie_ats
            ctrl = pcie_ats.state(idev.dev.pci).pasid_features
            if ctrl & 0x2:  # PCI_PASID_CTRL_EXEC
                caps |= uapi.IOMMU_HW_CAP_PCI_PASID_EXEC
            if ctrl & 0x4:  # PCI_PASID_CTRL_PRIV
                caps |= uapi.IOMMU_HW_CAP_PCI_PASID_PRIV
    cmd["out_capabilities"] = caps
    ucmd.respond()
    return 0


__all__ = [
    "AMD_EFR2_FIELDS",
    "AMD_EFR_FIELDS",
    "HW_INFO_OPS",
    "SMMU_IDR0_FIELDS",
    "SMMU_IDR1_FIELDS",
    "SMMU_IDR3_FIELDS",
    "SMMU_IDR5_FIELDS",
    "VTD_CAP_FIELDS",
    "VTD_ECAP_FIELDS",
    "RegField",
    "SmmuRegs",
    "amd_efr",
    "amd_efr2",
    "amd_iommufd_hw_info",
    "arm_smmu_hw_info",
    "decode",
    "encode",
    "get_hw_info",
    "intel_iommu_hw_info",
    "smmuv3_regs",
    "unit_registers",
    "vtd_cap_reg",
    "vtd_ecap_reg",
]
