"""IOMMU_GET_HW_INFO on simulated VT-d, SMMUv3, AMD and RISC-V units (drivers/iommu/iommufd/device.c
iommufd_get_hw_info, intel_iommu_hw_info, arm_smmu_hw_info, amd_iommufd_hw_info).

The register values of the unit presets are worked out by hand from the specifications (VT-d 5.0
§11.4.2/§11.4.3, Arm IHI 0070 §6.3, AMD 48882 EFR/EFR2), field by field in the comments; the registers
of varied units are then decoded by the kernel's own macros (cap_*/ecap_* of intel/iommu.h, IDR*_ of
arm-smmu-v3.h, FEATURE_* of amd_iommu_types.h, compiled with gcc from the Linux 7.2 tree) and must mean
what the unit models.
"""

from __future__ import annotations

import errno
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest

from vfiolab.errors import UapiError
from vfiolab.iommu.device import IommuDevice
from vfiolab.iommu.driver import make_unit
from vfiolab.iommu.group import iommu_probe_device
from vfiolab.iommu.unit import IommuUnit
from vfiolab.iommufd import Iommufd, uapi
from vfiolab.iommufd.device import device_bind
from vfiolab.iommufd.hw_info import (
    HW_INFO_OPS,
    amd_efr,
    amd_efr2,
    smmuv3_regs,
    unit_registers,
    vtd_cap_reg,
    vtd_ecap_reg,
)
from vfiolab.memory import MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE, PhysMemory, UserProcess
from vfiolab.pci.caps.ats import AtsCap
from vfiolab.pci.caps.pasid import PasidCap
from vfiolab.pci.caps.pri import PriCap
from vfiolab.pci.function import RcIntegratedEndpoint

KSRC: Final = Path("/root/.cache/vfiolab/src/linux-source-7.2")
PAGE: Final = 4096
HW_TYPES: Final = {"intel": uapi.IOMMU_HW_INFO_TYPE_INTEL_VTD,
                   "arm-smmu-v3": uapi.IOMMU_HW_INFO_TYPE_ARM_SMMUV3,
                   "amd": uapi.IOMMU_HW_INFO_TYPE_AMD}

# ---------------------------------------------------------------------- the presets, worked out by hand
VTD_CAP: Final = (6                     # ND: 16-bit domain IDs, 2^(4 + 2*6)
                  | 0b00110 << 8        # SAGAW: 39-bit 3-level and 48-bit 4-level second stage
                  | (48 - 1) << 16      # MGAW: 48-bit IOVA, encoded minus one
                  | (0x400 // 16) << 24  # FRO: fault-recording registers at 400h
                  | 0b11 << 34          # SLLPS: 2 MiB and 1 GiB second-stage pages
                  | 1 << 39             # PSI
                  | (8 - 1) << 40       # NFR: 8 fault-recording registers
                  | (48 - 12) << 48     # MAMV: one invalidation can span the 48-bit space
                  | 1 << 56)            # FL1GP: 1 GiB first-stage pages
VTD_ECAP: Final = (0b11011111           # C, QI, DT (ATS), IR, EIM, PT, SC (snoop control)
                   | (0x500 // 16) << 8  # IRO: IOTLB registers at 500h
                   | 15 << 20           # MHMV
                   | 1 << 26            # NEST
                   | 1 << 29            # PRS
                   | (20 - 1) << 35     # PSS: 20-bit PASIDs
                   | 1 << 40            # PASID
                   | 1 << 42            # PDS
                   | 1 << 43            # SMTS: scalable mode
                   | 1 << 45            # SLADS: second-stage dirty bits
                   | 1 << 46 | 1 << 47  # SLTS, FLTS
                   | 1 << 48)           # SMPWCS
SMMU_IDR0: Final = (1 | 1 << 1          # S2P, S1P
                    | 2 << 2            # TTF: AArch64
                    | 1 << 4            # COHACC
                    | 2 << 6            # HTTU: access flag and dirty state
                    | 1 << 10           # ATS
                    | 1 << 12           # ASID16
                    | 1 << 18           # VMID16
                    | 1 << 19           # CD2L
                    | 2 << 21           # TTENDIAN: little endian
                    | 1 << 24           # STALL_MODEL: no stalls
                    | 1 << 27)          # ST_LEVEL: 2-level stream table
SMMU_IDR1: Final = 16 | 20 << 6 | 8 << 16 | 8 << 21  # SIDSIZE 16, SSIDSIZE 20, EVENTQS 2^8, CMDQS 2^8
SMMU_IDR3: Final = 1 << 10             # RIL
SMMU_IDR5: Final = 5 | 1 << 4          # OAS 48-bit, GRAN4K
AMD_EFR: Final = (1 << 1               # PPRSup
                  | 1 << 4             # GTSup
                  | 1 << 6             # IASup
                  | 2 << 10            # HATS: 6-level (64-bit) host tables
                  | 1 << 14            # GLXSup: 2-level GCR3 tables
                  | (16 - 1) << 32     # PASmax: 16-bit PASIDs
                  | 1 << 48 | 1 << 49  # GIOSup, HASup
                  | 1 << 52)           # HDSup


def test_preset_registers_match_the_hand_worked_values() -> None:
    mem = PhysMemory(1 << 24)
    intel, smmu, amd = (make_unit(k, mem) for k in ("intel", "arm-smmu-v3", "amd"))
    assert (vtd_cap_reg(intel.caps), vtd_ecap_reg(intel.caps)) == (VTD_CAP, VTD_ECAP)
    assert VTD_CAP == 0x0124_078C_402F_0606 and VTD_ECAP == 0x0001_ED98_24F0_50DF
    r = smmuv3_regs(smmu.caps)
    assert r.idr == (SMMU_IDR0, SMMU_IDR1, 0, SMMU_IDR3, 0, SMMU_IDR5) and (r.iidr, r.aidr) == (0, 0x02)
    assert (amd_efr(amd.caps), amd_efr2(amd.caps)) == (AMD_EFR, 0)
    assert unit_registers(intel) == {"CAP_REG": VTD_CAP, "ECAP_REG": VTD_ECAP}
    assert unit_registers(make_unit("riscv", mem)) == {}


# ---------------------------------------------------------------------- through the ioctl
@dataclass
class Bound:
    fd: Iommufd
    proc: UserProcess
    unit: IommuUnit
    dev: IommuDevice
    dev_id: int
    buf: int


@pytest.fixture
def mem() -> Iterator[PhysMemory]:
    m = PhysMemory(1 << 26, name="hw-info-ram")
    yield m
    m.close()


def bind(mem: PhysMemory, kind: str, *, ats: bool = True, pasid_width: int = 20, pasid_exec: bool = False,
         **caps: Any) -> Bound:
    """A PCI function behind a ``kind`` unit, probed and bound to a new iommufd."""
    unit = make_unit(kind, mem, **caps)
    ext: list[Any] = [AtsCap()] if ats else []
    ext += [PriCap(32)]
    if pasid_width:
        ext.append(PasidCap(pasid_width, exec_perm=pasid_exec))
    fn = RcIntegratedEndpoint(0x8086, 0x3, 0x120000, express={"ee_prefix": 1}, ext_caps=ext)
    dev = IommuDevice("f", 0x18, pci=fn)
    iommu_probe_device(dev, unit)
    proc = UserProcess(mem)
    fd = Iommufd(proc)
    idev = device_bind(fd, dev)
    buf = proc.mmap(PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    return Bound(fd, proc, unit, dev, idev.id, buf)


STRUCTS: Final = {"intel": uapi.iommu_hw_info_vtd, "arm-smmu-v3": uapi.iommu_hw_info_arm_smmuv3,
                  "amd": uapi.iommu_hw_info_amd}


@pytest.mark.parametrize("kind,data_len,pasid_log2", [("intel", 24, 20), ("arm-smmu-v3", 40, 20),
                                                      ("amd", 16, 15)])
def test_get_hw_info_presets(mem: PhysMemory, kind: str, data_len: int, pasid_log2: int) -> None:
    """sizeof() of each struct from the header (vtd: u32 flags, u32 reserved, u64 cap, u64 ecap = 24; arm:
    2 x u32 + 6 x u32 + u32 + u32 = 40; amd: 2 x u64 = 16); the PASID width is ilog2(min(device, unit)),
    for AMD 2^(PASmax+1) - 1 = 65535 PASIDs, so 15."""
    b = bind(mem, kind)
    b.proc.write(b.buf, b"\xa5" * PAGE)
    info = b.fd.get_hw_info(b.dev_id, 64, b.buf)
    assert (info.data_len, info.out_data_type) == (data_len, HW_TYPES[kind])
    raw = b.proc.read(b.buf, 64)
    assert raw[data_len:] == bytes(64 - data_len)  # the user bytes past the kernel's data are zeroed
    st = STRUCTS[kind]
    got: dict[str, object] = dict(st.unpack(raw[:data_len]))
    if kind == "arm-smmu-v3":
        got["idr"] = st.get_array(raw, "idr")
    if kind == "intel":
        assert got == {"flags": uapi.IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17, "__reserved": 0,
                       "cap_reg": VTD_CAP, "ecap_reg": VTD_ECAP}
    elif kind == "arm-smmu-v3":
        assert got == {"flags": 0, "__reserved": 0, "idr": (SMMU_IDR0, SMMU_IDR1, 0, SMMU_IDR3, 0, SMMU_IDR5),
                       "iidr": 0, "aidr": 0x02}
    else:
        assert got == {"efr": AMD_EFR, "efr2": 0}
    assert info.out_max_pasid_log2 == pasid_log2
    # every preset has hardware dirty tracking; the function has ATS behind an ATS-capable unit
    assert info.out_capabilities == uapi.IOMMU_HW_CAP_DIRTY_TRACKING


def test_capabilities_follow_the_unit_and_the_function(mem: PhysMemory) -> None:
    b = bind(mem, "intel", dirty=False, ats=False, pasid_exec=True)
    info = b.fd.get_hw_info(b.dev_id)
    assert info.out_capabilities == uapi.IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED | uapi.IOMMU_HW_CAP_PCI_PASID_EXEC
    ecap = vtd_ecap_reg(b.unit.caps)
    assert not ecap >> 45 & 1  # SLADS clear: no dirty tracking
    b = bind(mem, "intel", pasid_width=0)  # no PASID capability: no PASID width reported
    assert b.fd.get_hw_info(b.dev_id).out_max_pasid_log2 == 0
    b = bind(mem, "intel", pasid_width=8)  # min(8-bit function, 20-bit unit)
    assert b.fd.get_hw_info(b.dev_id).out_max_pasid_log2 == 8
    b = bind(mem, "intel", pasid_bits=0)  # a unit without PASIDs enables none
    info = b.fd.get_hw_info(b.dev_id, 24, b.buf)
    assert info.out_max_pasid_log2 == 0
    ecap = uapi.iommu_hw_info_vtd.unpack(b.proc.read(b.buf, 24))["ecap_reg"]
    assert not ecap >> 40 & 1 and not ecap >> 35 & 0x1F  # PASID, PSS


def test_data_len_rules(mem: PhysMemory) -> None:
    b = bind(mem, "arm-smmu-v3")
    b.proc.write(b.buf, b"\xa5" * 64)
    info = b.fd.get_hw_info(b.dev_id, 0, 0)  # data_len 0: nothing copied, NULL allowed, length reported
    assert (info.data_len, info.out_data_type) == (40, uapi.IOMMU_HW_INFO_TYPE_ARM_SMMUV3)
    info = b.fd.get_hw_info(b.dev_id, 12, b.buf)  # a shorter buffer gets the head of the struct only
    assert info.data_len == 40
    head = bytearray(uapi.iommu_hw_info_arm_smmuv3.size)
    uapi.iommu_hw_info_arm_smmuv3.put_array(head, "idr", smmuv3_regs(b.unit.caps).idr)
    assert b.proc.read(b.buf, 16) == bytes(head[:12]) + b"\xa5" * 4
    with pytest.raises(UapiError) as e:  # copy_to_user() into unmapped memory
        b.fd.get_hw_info(b.dev_id, 40, 0x1000)
    assert e.value.errno == errno.EFAULT


def test_input_type(mem: PhysMemory) -> None:
    """Without IOMMU_HW_INFO_FLAG_INPUT_TYPE the type field is cleared to DEFAULT; with it the driver
    takes DEFAULT or its own type and refuses the others (EOPNOTSUPP)."""
    for kind, own in HW_TYPES.items():
        b = bind(mem, kind)
        flag = uapi.IOMMU_HW_INFO_FLAG_INPUT_TYPE
        assert b.fd.get_hw_info(b.dev_id, in_data_type=0x1234).out_data_type == own
        assert b.fd.get_hw_info(b.dev_id, in_data_type=own, flags=flag).out_data_type == own
        assert b.fd.get_hw_info(b.dev_id, in_data_type=0, flags=flag).out_data_type == own
        for other in {*HW_TYPES.values(), uapi.IOMMU_HW_INFO_TYPE_TEGRA241_CMDQV} - {own}:
            with pytest.raises(UapiError) as e:
                b.fd.get_hw_info(b.dev_id, in_data_type=other, flags=flag)
            assert e.value.errno == errno.EOPNOTSUPP
    with pytest.raises(UapiError) as e:
        b.fd.get_hw_info(b.dev_id, flags=1 << 1)
    assert e.value.errno == errno.EOPNOTSUPP
    with pytest.raises(UapiError) as e:
        b.fd.get_hw_info(0x77)
    assert e.value.errno == errno.ENOENT


def test_reserved_bytes(mem: PhysMemory) -> None:
    b = bind(mem, "intel")
    st = uapi.iommu_hw_info
    raw = bytearray(st.pack(size=st.size, dev_id=b.dev_id))
    raw[st.field("__reserved").offset + 1] = 1
    with pytest.raises(UapiError) as e:
        b.fd.ioctl(uapi.IOMMU_GET_HW_INFO, raw)
    assert e.value.errno == errno.EOPNOTSUPP


def test_riscv_cannot_bind(mem: PhysMemory) -> None:
    """riscv/iommu.c has neither ops->capable nor ops->hw_info: device_iommu_capable(CACHE_COHERENCY) is
    false, so iommufd_device_bind() refuses the device (EINVAL) before GET_HW_INFO could run."""
    with pytest.raises(UapiError) as e:
        bind(mem, "riscv", ats=False, pasid_width=0)
    assert e.value.errno == errno.EINVAL


def test_driver_without_hw_info(mem: PhysMemory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No ops->hw_info: type NONE, length 0, and the whole user buffer zeroed."""
    b = bind(mem, "intel")
    monkeypatch.delitem(HW_INFO_OPS, "intel")
    b.proc.write(b.buf, b"\xa5" * 32)
    info = b.fd.get_hw_info(b.dev_id, 32, b.buf)
    assert (info.data_len, info.out_data_type) == (0, uapi.IOMMU_HW_INFO_TYPE_NONE)
    assert b.proc.read(b.buf, 32) == bytes(32)
    assert info.out_capabilities == uapi.IOMMU_HW_CAP_DIRTY_TRACKING and info.out_max_pasid_log2 == 20


# ---------------------------------------------------------------------- the kernel's decoders (gcc)
UNITS: Final[list[tuple[str, dict[str, Any]]]] = [
    ("intel", {}), ("intel", {"dirty": False, "nesting": False, "pri": False}),
    ("intel", {"ias": 57, "five_level": True, "superpages": (21,)}),
    ("intel", {"pasid_bits": 0, "ats": False}),
    ("intel", {"did_bits": 8, "extra": {}}),
    ("arm-smmu-v3", {}), ("arm-smmu-v3", {"oas": 52, "ias": 52, "pri": True, "dirty": False}),
    ("arm-smmu-v3", {"oas": 40, "pasid_bits": 0, "ats": False, "nesting": False}),
    ("amd", {}), ("amd", {"ias": 48, "five_level": True, "pasid_bits": 9, "dirty": False}),
    ("amd", {"ias": 57, "pri": False, "extra": {"ht_range_ignore": True}}),
]


def _macros(path: Path, pattern: str) -> list[str]:
    """The ``#define`` lines (with continuations) of ``path`` whose name matches ``pattern``."""
    out: list[str] = []
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        if re.match(rf"#define\s+({pattern})\b", lines[i]):
            block = [lines[i]]
            while block[-1].rstrip().endswith("\\"):
                i += 1
                block.append(lines[i])
            out.append("\n".join(block))
        i += 1
    return out


_C_HEAD: Final = """#include <stdio.h>
typedef unsigned long long u64;
#define BIT_ULL(n) (1ULL << (n))
#define GENMASK(h, l) (((~0ULL) << (l)) & (~0ULL >> (63 - (h))))
#define GENMASK_ULL(h, l) GENMASK(h, l)
#define FIELD_GET(m, v) (((u64)(v) & (m)) / ((m) & -(m)))
"""


def _kernel_decode(tmp_path: Path, regs: list[tuple[str, list[int]]]) -> list[dict[str, int]]:
    intel = _macros(KSRC / "drivers/iommu/intel/iommu.h", r"e?cap_\w+")
    smmu = _macros(KSRC / "drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h", r"IDR\d_\w+")
    amd = _macros(KSRC / "drivers/iommu/amd/amd_iommu_types.h", r"FEATURE_\w+")
    exprs = {
        "intel": ["cap_ndoms(r0)", "cap_sagaw(r0)", "cap_mgaw(r0)", "cap_super_page_val(r0)",
                  "cap_fl1gp_support(r0)", "cap_fl5lp_support(r0)", "cap_pgsel_inv(r0)",
                  "cap_num_fault_regs(r0)",
                  "cap_fault_reg_offset(r0)", "cap_caching_mode(r0)", "cap_rwbf(r0)", "ecap_iotlb_offset(r1)",
                  "ecap_sc_support(r1)", "ecap_pasid(r1)", "(2ULL << ecap_pss(r1))", "ecap_prs(r1)",
                  "ecap_nest(r1)", "ecap_dev_iotlb_support(r1)", "ecap_smts(r1)", "ecap_flts(r1)",
                  "ecap_slts(r1)", "(ecap_smts(r1) && ecap_slads(r1) && ecap_smpwc(r1))",
                  "ecap_pass_through(r1)", "ecap_coherent(r1)", "(ecap_qis(r1) != 0)"],
        "arm-smmu-v3": ["FIELD_GET(IDR0_ST_LVL, r0)", "(r0 & IDR0_CD2L) != 0",
                        "FIELD_GET(IDR0_TTENDIAN, r0)", "(r0 & IDR0_PRI) != 0", "(r0 & IDR0_ATS) != 0",
                        "FIELD_GET(IDR0_HTTU, r0)", "(r0 & IDR0_COHACC) != 0",
                        "FIELD_GET(IDR0_STALL_MODEL, r0)",
                        "(r0 & IDR0_S1P) != 0", "(r0 & IDR0_S2P) != 0", "FIELD_GET(IDR0_TTF, r0)",
                        "(r0 & IDR0_ASID16) != 0", "(r0 & IDR0_VMID16) != 0",
                        "(r1 & (IDR1_TABLES_PRESET | IDR1_QUEUES_PRESET | IDR1_REL)) != 0",
                        "FIELD_GET(IDR1_CMDQS, r1)", "FIELD_GET(IDR1_EVTQS, r1)", "FIELD_GET(IDR1_PRIQS, r1)",
                        "(1ULL << FIELD_GET(IDR1_SSIDSIZE, r1))", "FIELD_GET(IDR1_SIDSIZE, r1)",
                        "FIELD_GET(IDR3_RIL, r3)", "FIELD_GET(IDR5_OAS, r5)", "(r5 & IDR5_GRAN4K) != 0",
                        "(r5 & (IDR5_GRAN16K | IDR5_GRAN64K)) != 0", "FIELD_GET(IDR5_VAX, r5)"],
        "amd": ["(r0 & FEATURE_PPR) != 0", "(r0 & FEATURE_GT) != 0", "(r0 & FEATURE_NX) != 0",
                "FIELD_GET(FEATURE_HATS, r0)", "FIELD_GET(FEATURE_GATS, r0)", "FIELD_GET(FEATURE_GLX, r0)",
                "((1ULL << (FIELD_GET(FEATURE_PASMAX, r0) + 1)) - 1)", "(r0 & FEATURE_GIOSUP) != 0",
                "(r0 & FEATURE_HDSUP) != 0", "(r0 & FEATURE_HASUP) != 0",
                "((r1 & FEATURE_HT_RANGE_IGNORE) != 0)", "FIELD_GET(FEATURE_NUM_INT_REMAP_SUP, r1)"],
    }
    body = []
    for n, (kind, vals) in enumerate(regs):
        rs = ", ".join(f"r{i} = {v:#x}ULL" for i, v in enumerate(vals))
        body.append(f"{{ u64 {rs};")
        for ex in exprs[kind]:
            body.append(f'printf("{n}\\t%s\\t%llu\\n", "{ex}", (u64)({ex}));')
        body.append("}")
    src = "\n".join([_C_HEAD, *intel, *smmu, *amd, "int main(void) {", *body, "return 0; }"])
    (tmp_path / "decode.c").write_text(src)
    exe = tmp_path / "decode"
    subprocess.run(["gcc", "-O0", "-w", "-o", str(exe), str(tmp_path / "decode.c")], check=True, timeout=120)
    out: list[dict[str, int]] = [{} for _ in regs]
    run = subprocess.run([str(exe)], check=True, capture_output=True, text=True, timeout=60)
    for line in run.stdout.splitlines():
        k, ex, v = line.split("\t")
        out[int(k)][ex] = int(v)
    return out


def _meaning(unit: IommuUnit) -> dict[str, int]:
    """What the kernel should read in the registers of ``unit``: its modelled capabilities."""
    c = unit.caps
    if c.vendor == "intel":
        sllps = int(21 in c.superpages) | int(30 in c.superpages) << 1
        sagaw = 0b010 | (0b100 if c.ias >= 48 else 0) | (0b1000 if c.five_level and c.ias >= 57 else 0)
        return {"cap_ndoms(r0)": 1 << c.did_bits, "cap_sagaw(r0)": sagaw, "cap_mgaw(r0)": c.ias,
                "cap_super_page_val(r0)": sllps, "cap_fl1gp_support(r0)": int(30 in c.superpages),
                "cap_fl5lp_support(r0)": int(c.five_level), "cap_pgsel_inv(r0)": 1,
                "cap_num_fault_regs(r0)": 8, "cap_fault_reg_offset(r0)": 0x400, "cap_caching_mode(r0)": 0,
                "cap_rwbf(r0)": 0, "ecap_iotlb_offset(r1)": 0x500,
                "ecap_sc_support(r1)": int(bool(c.extra.get("enforce_coherency"))),
                "ecap_pasid(r1)": int(c.pasid_bits > 0),
                "(2ULL << ecap_pss(r1))": unit.max_pasids if c.pasid_bits else 2,
                "ecap_prs(r1)": int(c.pri), "ecap_nest(r1)": int(c.nesting),
                "ecap_dev_iotlb_support(r1)": int(c.ats),
                "ecap_smts(r1)": 1, "ecap_flts(r1)": 1, "ecap_slts(r1)": 1,
                "(ecap_smts(r1) && ecap_slads(r1) && ecap_smpwc(r1))": int(c.dirty),
                "ecap_pass_through(r1)": 1, "ecap_coherent(r1)": 1, "(ecap_qis(r1) != 0)": 1}
    if c.vendor == "arm-smmu-v3":
        oas = {32: 0, 36: 1, 40: 2, 42: 3, 44: 4, 48: 5, 52: 6}[c.oas]
        return {"FIELD_GET(IDR0_ST_LVL, r0)": 1, "(r0 & IDR0_CD2L) != 0": int(c.pasid_bits > 0),
                "FIELD_GET(IDR0_TTENDIAN, r0)": 2, "(r0 & IDR0_PRI) != 0": int(c.pri),
                "(r0 & IDR0_ATS) != 0": int(c.ats), "FIELD_GET(IDR0_HTTU, r0)": 2 if c.dirty else 0,
                "(r0 & IDR0_COHACC) != 0": 1, "FIELD_GET(IDR0_STALL_MODEL, r0)": 1, "(r0 & IDR0_S1P) != 0": 1,
                "(r0 & IDR0_S2P) != 0": 1, "FIELD_GET(IDR0_TTF, r0)": 2, "(r0 & IDR0_ASID16) != 0": 1,
                "(r0 & IDR0_VMID16) != 0": 1,
                "(r1 & (IDR1_TABLES_PRESET | IDR1_QUEUES_PRESET | IDR1_REL)) != 0": 0,
                "FIELD_GET(IDR1_CMDQS, r1)": 8,
                "FIELD_GET(IDR1_EVTQS, r1)": c.fault_queue_depth.bit_length() - 1,
                "FIELD_GET(IDR1_PRIQS, r1)": c.prq_depth.bit_length() - 1 if c.pri else 0,
                "(1ULL << FIELD_GET(IDR1_SSIDSIZE, r1))": unit.max_pasids or 1,
                "FIELD_GET(IDR1_SIDSIZE, r1)": 16, "FIELD_GET(IDR3_RIL, r3)": 1,
                "FIELD_GET(IDR5_OAS, r5)": oas,
                "(r5 & IDR5_GRAN4K) != 0": 1, "(r5 & (IDR5_GRAN16K | IDR5_GRAN64K)) != 0": 0,
                "FIELD_GET(IDR5_VAX, r5)": int(c.ias > 48)}
    levels = -(-(c.ias - 12) // 9)  # host page-table levels for the unit's IOVA width
    return {"(r0 & FEATURE_PPR) != 0": int(c.pri), "(r0 & FEATURE_GT) != 0": int(c.pasid_bits > 0),
            "(r0 & FEATURE_NX) != 0": 0, "FIELD_GET(FEATURE_HATS, r0)": levels - 4,
            "FIELD_GET(FEATURE_GATS, r0)": int(c.five_level),
            "FIELD_GET(FEATURE_GLX, r0)": int(c.pasid_bits > 9),
            "((1ULL << (FIELD_GET(FEATURE_PASMAX, r0) + 1)) - 1)": unit.max_pasids or 1,
            "(r0 & FEATURE_GIOSUP) != 0": int(c.pasid_bits > 0), "(r0 & FEATURE_HDSUP) != 0": int(c.dirty),
            "(r0 & FEATURE_HASUP) != 0": int(c.dirty),
            "((r1 & FEATURE_HT_RANGE_IGNORE) != 0)": int(bool(c.extra.get("ht_range_ignore"))),
            "FIELD_GET(FEATURE_NUM_INT_REMAP_SUP, r1)": 0}


@pytest.mark.skipif(shutil.which("gcc") is None or not KSRC.exists(),
                    reason="needs gcc and the Linux 7.2 tree")
def test_kernel_macros_read_what_the_unit_models(tmp_path: Path) -> None:
    mem = PhysMemory(1 << 24)
    units = [make_unit(kind, mem, **caps) for kind, caps in UNITS]
    regs: list[tuple[str, list[int]]] = []
    for u in units:
        r = unit_registers(u)
        if u.caps.vendor == "intel":
            regs.append(("intel", [r["CAP_REG"], r["ECAP_REG"]]))
        elif u.caps.vendor == "arm-smmu-v3":
            regs.append(("arm-smmu-v3", [r[f"SMMU_IDR{i}"] for i in range(6)]))
        else:
            regs.append(("amd", [r["EFR"], r["EFR2"]]))
    decoded = _kernel_decode(tmp_path, regs)
    for (kind, caps), u, got in zip(UNITS, units, decoded, strict=True):
        want = _meaning(u)
        assert got == want, f"{kind} {caps}: " + ", ".join(
            f"{k}: kernel reads {got.get(k)}, unit models {v}" for k, v in want.items() if got.get(k) != v)
