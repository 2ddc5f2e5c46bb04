"""Register attributes and runtime behaviour of the ext-a extended capabilities (AER, ACS, ARI, ATS,
PRI, PASID, SR-IOV, DSN, LTR, PTM, Secondary PCIe, L1SS), worked out from the PCIe Base spec register
definitions and from what Linux (drivers/pci/iov.c, ats.c, pcie/aer.c) relies on."""

from __future__ import annotations

from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vfiolab.errors import VfiolabError
from vfiolab.pci import regs
from vfiolab.pci.caps import Capability, CapabilityList
from vfiolab.pci.caps import aer as A
from vfiolab.pci.caps.acs import CR, DT, EC, RR, SV, TB, UF, AcsCap
from vfiolab.pci.caps.aer import AerCap
from vfiolab.pci.caps.ari import AriCap
from vfiolab.pci.caps.ats import AtsCap
from vfiolab.pci.caps.dsn import DsnCap
from vfiolab.pci.caps.l1ss import L1ssCap
from vfiolab.pci.caps.ltr import LtrCap, ltr_ns
from vfiolab.pci.caps.pasid import PasidCap
from vfiolab.pci.caps.pri import PriCap
from vfiolab.pci.caps.ptm import PtmCap
from vfiolab.pci.caps.secpcie import SecondaryPcieCap
from vfiolab.pci.caps.sriov import SriovCap, VfBar, VfBarRegion
from vfiolab.pci.config import RESET_FLR, RESET_FUNDAMENTAL, RESET_HOT, ConfigSpace

C = TypeVar("C", bound=Capability)


def place(cap: C) -> tuple[ConfigSpace, int, C]:
    """Build ``cap`` as the first extended capability of a fresh 4 KiB space and seal the reset values."""
    cs = ConfigSpace()
    CapabilityList(cs).add(cap)
    cs.seal()
    return cs, cap.offset, cap


def writable(cs: ConfigSpace, off: int, size: int) -> int:
    """Bits a software write can change: write all ones, then zeros, and see what moved."""
    before = cs.read(off, size)
    ones = (1 << 8 * size) - 1
    cs.write(off, size, ones)
    hi = cs.read(off, size)
    cs.write(off, size, 0)
    lo = cs.read(off, size)
    return (hi ^ before) | (hi ^ lo)


# ---------------------------------------------------------------------------- headers and lengths
@pytest.mark.parametrize(("cap", "cap_id", "length"), [
    (AerCap(), 0x01, 0x2C), (AerCap(root=True), 0x01, 0x38), (AerCap(tlp_prefix_log=True), 0x01, 0x48),
    (AcsCap(), 0x0D, 8), (AcsCap(SV | EC, egress_bits=33), 0x0D, 16), (AriCap(), 0x0E, 8),
    (AtsCap(), 0x0F, 8),
    (PriCap(), 0x13, 16), (PasidCap(), 0x1B, 8), (SriovCap(4, 0x10ED), 0x10, 64), (DsnCap(1), 0x03, 12),
    (LtrCap(), 0x18, 8), (PtmCap(), 0x1F, 12), (SecondaryPcieCap(1), 0x19, 16),
    (SecondaryPcieCap(4), 0x19, 20), (SecondaryPcieCap(16), 0x19, 44), (L1ssCap(), 0x1E, 16),
])
def test_header_and_length(cap: Capability, cap_id: int, length: int) -> None:
    cs, off, cap = place(cap)
    assert off == regs.EXT_CAP_START
    assert cs.read(off, 4) == regs.ext_cap_header(cap_id, cap.version, 0)
    assert cap.length() == length


# ---------------------------------------------------------------------------- AER
def test_aer_status_is_rw1c_and_sticky() -> None:
    cs, off, aer = place(AerCap())
    aer.signal_uncorrectable(A.UNC_UNSUP | A.UNC_COMP_TIME)
    aer.signal_correctable(A.COR_BAD_TLP)
    cs.reset(RESET_HOT)
    cs.reset(RESET_FLR)
    assert cs.read(off + AerCap.UNCOR_STATUS, 4) == A.UNC_UNSUP | A.UNC_COMP_TIME
    assert cs.read(off + AerCap.COR_STATUS, 4) == A.COR_BAD_TLP
    cs.write(off + AerCap.UNCOR_STATUS, 4, A.UNC_UNSUP)      # write-1-to-clear, one bit
    assert cs.read(off + AerCap.UNCOR_STATUS, 4) == A.UNC_COMP_TIME
    cs.write(off + AerCap.COR_STATUS, 4, 0)                  # writing 0 changes nothing
    assert cs.read(off + AerCap.COR_STATUS, 4) == A.COR_BAD_TLP
    cs.reset(RESET_FUNDAMENTAL)
    assert cs.read(off + AerCap.UNCOR_STATUS, 4) == 0 and cs.read(off + AerCap.COR_STATUS, 4) == 0


def test_aer_masks_and_severity_rws_on_implemented_errors_only() -> None:
    cs, off, _ = place(AerCap(uncor_errors=A.UNC_DEFAULT | A.UNC_ACSV))
    assert cs.read(off + AerCap.UNCOR_SEVER, 4) == A.UNC_SEVERITY_DEFAULT
    assert cs.read(off + AerCap.COR_MASK, 4) == A.COR_ADV_NFAT  # the only default-masked one implemented
    assert writable(cs, off + AerCap.UNCOR_MASK, 4) == A.UNC_DEFAULT | A.UNC_ACSV
    assert writable(cs, off + AerCap.UNCOR_SEVER, 4) == A.UNC_DEFAULT | A.UNC_ACSV
    assert writable(cs, off + AerCap.COR_MASK, 4) == A.COR_DEFAULT
    cs.write(off + AerCap.UNCOR_MASK, 4, A.UNC_UNSUP)
    cs.write(off + AerCap.COR_MASK, 4, A.COR_RCVR)
    cs.reset(RESET_HOT)                                      # RWS: kept
    assert cs.read(off + AerCap.UNCOR_MASK, 4) == A.UNC_UNSUP
    assert cs.read(off + AerCap.COR_MASK, 4) == A.COR_RCVR
    cs.reset(RESET_FUNDAMENTAL)
    assert cs.read(off + AerCap.UNCOR_MASK, 4) == 0
    assert cs.read(off + AerCap.COR_MASK, 4) == A.COR_ADV_NFAT


def test_aer_capability_enables_need_their_capability() -> None:
    cs, off, _ = place(AerCap())
    assert writable(cs, off + AerCap.CAP, 4) == 0
    cs, off, _ = place(AerCap(ecrc_gen=True, ecrc_check=True, multi_header=True, comp_timeout_log=True))
    assert cs.read(off + AerCap.CAP, 4) == (A.CAP_ECRC_GENC | A.CAP_ECRC_CHKC | A.CAP_MULT_HDRC
                                            | A.CAP_COMP_TIME_LOG)
    assert writable(cs, off + AerCap.CAP, 4) == A.CAP_ECRC_GENE | A.CAP_ECRC_CHKE | A.CAP_MULT_HDRE
    cs.write(off + AerCap.CAP, 4, A.CAP_ECRC_GENE)
    cs.reset(RESET_HOT)
    assert cs.read(off + AerCap.CAP, 4) & A.CAP_ECRC_GENE


def test_aer_first_error_pointer_and_header_log() -> None:
    cs, off, aer = place(AerCap())
    hdr = (0x4A000001, 0x0100000F, 0xFEE00000, 0x12345678)
    assert aer.signal_uncorrectable(A.UNC_UNSUP | A.UNC_MALF_TLP, hdr) == "fatal"  # MalfTLP is fatal
    assert cs.read(off + AerCap.CAP, 4) & A.CAP_FEP == 18                   # lowest unmasked: MalfTLP
    assert tuple(cs.read(off + AerCap.HEADER_LOG + 4 * i, 4) for i in range(4)) == hdr
    # A second error while the logged one is pending neither moves the pointer nor the log.
    assert aer.signal_uncorrectable(A.UNC_COMP_TIME, (1, 2, 3, 4)) == "nonfatal"
    assert cs.read(off + AerCap.CAP, 4) & A.CAP_FEP == 18
    assert cs.read(off + AerCap.HEADER_LOG, 4) == hdr[0]
    cs.reset(RESET_HOT)                                                     # ROS: kept
    assert cs.read(off + AerCap.HEADER_LOG + 12, 4) == hdr[3]
    # Clearing the pointed-to status unlocks the log for the next error.
    cs.write(off + AerCap.UNCOR_STATUS, 4, A.UNC_MALF_TLP)
    aer.signal_uncorrectable(A.UNC_COMP_ABORT, (5, 6, 7, 8))
    assert cs.read(off + AerCap.CAP, 4) & A.CAP_FEP == 15
    assert cs.read(off + AerCap.HEADER_LOG, 4) == 5
    # Header log and pointer are read-only to software.
    cs.write(off + AerCap.HEADER_LOG, 4, 0)
    cs.write(off + AerCap.CAP, 4, 0)
    assert cs.read(off + AerCap.HEADER_LOG, 4) == 5 and cs.read(off + AerCap.CAP, 4) & A.CAP_FEP == 15


def test_aer_masked_errors_set_status_but_are_not_reported() -> None:
    cs, off, aer = place(AerCap())
    cs.write(off + AerCap.UNCOR_MASK, 4, A.UNC_UNSUP)
    assert aer.signal_uncorrectable(A.UNC_UNSUP) is None
    assert cs.read(off + AerCap.UNCOR_STATUS, 4) == A.UNC_UNSUP
    assert cs.read(off + AerCap.CAP, 4) & A.CAP_FEP == 0
    assert aer.signal_correctable(A.COR_ADV_NFAT) is False                  # masked at reset
    assert aer.signal_correctable(A.COR_RCVR) is True
    assert cs.read(off + AerCap.COR_STATUS, 4) == A.COR_ADV_NFAT | A.COR_RCVR
    with pytest.raises(VfiolabError, match="not implemented uncorrectable"):
        aer.signal_uncorrectable(A.UNC_ACSV)
    with pytest.raises(VfiolabError, match="4 dwords"):
        aer.signal_uncorrectable(A.UNC_UNSUP, (1, 2))


def test_aer_root_registers() -> None:
    cs, off, aer = place(AerCap(root=True, msg_num=3))
    assert writable(cs, off + AerCap.ROOT_COMMAND, 4) == 0x7
    assert cs.read(off + AerCap.ROOT_STATUS, 4) == 3 << 27
    cs.write(off + AerCap.ROOT_COMMAND, 4, A.ROOT_CMD_FATAL_EN)
    assert aer.receive_message("cor", 0x0100) is False
    assert aer.receive_message("nonfatal", 0x0200) is False
    assert aer.receive_message("fatal", 0x0300) is True
    assert aer.receive_message("cor", 0x0400) is False
    st_ = cs.read(off + AerCap.ROOT_STATUS, 4)
    # The first uncorrectable message was non-fatal: no FirstFatal.
    assert st_ == ((3 << 27) | A.ROOT_COR_RCV | A.ROOT_MULTI_COR_RCV | A.ROOT_UNCOR_RCV
                   | A.ROOT_MULTI_UNCOR_RCV | A.ROOT_NONFATAL_RCV | A.ROOT_FATAL_RCV)
    assert cs.read(off + AerCap.ROOT_ERR_SRC, 4) == 0x0200_0100             # first sources kept
    cs.reset(RESET_HOT)
    assert cs.read(off + AerCap.ROOT_COMMAND, 4) == 0                       # RW, not sticky
    assert cs.read(off + AerCap.ROOT_STATUS, 4) == st_                      # RW1CS
    cs.write(off + AerCap.ROOT_STATUS, 4, 0xFFFFFFFF)
    assert cs.read(off + AerCap.ROOT_STATUS, 4) == 3 << 27                  # message number is RO
    assert aer.receive_message("fatal", 0x0500) is False
    assert cs.read(off + AerCap.ROOT_STATUS, 4) & A.ROOT_FIRST_FATAL
    assert cs.read(off + AerCap.ROOT_ERR_SRC, 4) == 0x0500_0100
    _, _, ep = place(AerCap())
    with pytest.raises(VfiolabError, match="Root Ports and RCECs"):
        ep.receive_message("cor", 0)


@pytest.mark.parametrize("kwargs", [{"uncor_errors": 0x1}, {"cor_errors": 0x2}, {"msg_num": 32},
                                    {"uncor_severity": 0x4}, {"version": 0}])
def test_aer_rejects_bad_parameters(kwargs: dict[str, int]) -> None:
    with pytest.raises(VfiolabError, match="AER"):
        AerCap(**kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- ACS
@settings(max_examples=100, deadline=None)
@given(cap=st.integers(0, 0x7F), data=st.data())
def test_acs_control_bits_writable_only_where_capable(cap: int, data: st.DataObject) -> None:
    bits = data.draw(st.integers(1, 256)) if cap & EC else 0
    cs, off, _ = place(AcsCap(cap, egress_bits=bits))
    assert cs.read(off + AcsCap.CAP, 2) == cap | ((bits & 0xFF) << 8)
    assert writable(cs, off + AcsCap.CAP, 2) == 0
    assert writable(cs, off + AcsCap.CTRL, 2) == cap
    for i in range((bits + 31) // 32):
        assert writable(cs, off + AcsCap.EGRESS_VECTOR + 4 * i, 4) == (1 << min(32, bits - 32 * i)) - 1


def test_acs_constants_match_linux() -> None:
    # include/uapi/linux/pci_regs.h PCI_ACS_SV .. PCI_ACS_DT
    assert (SV, TB, RR, CR, UF, EC, DT) == (1, 2, 4, 8, 0x10, 0x20, 0x40)
    assert (AcsCap.SV, AcsCap.DT, AcsCap.EGRESS_BITS) == (SV, DT, 5)


def test_acs_initial_control_and_errors() -> None:
    cs, off, _ = place(AcsCap(SV | RR | CR | UF | EC, SV | RR, egress_bits=256, egress_vector=1 << 255))
    assert cs.read(off + AcsCap.CTRL, 2) == SV | RR
    assert cs.read(off + AcsCap.CAP + 1, 1) == 0                            # 256 encodes as 0
    assert cs.read(off + AcsCap.EGRESS_VECTOR + 28, 4) == 1 << 31
    with pytest.raises(VfiolabError, match="lacks"):
        AcsCap(SV, TB)
    with pytest.raises(VfiolabError, match="needs P2P Egress Control"):
        AcsCap(SV, egress_bits=8)
    with pytest.raises(VfiolabError, match="vector size"):
        AcsCap(SV | EC)
    with pytest.raises(VfiolabError, match="outside"):
        AcsCap(0x80)


# ---------------------------------------------------------------------------- ARI, ATS, PASID, PRI
def test_ari() -> None:
    cs, off, _ = place(AriCap(next_fn=0x42))
    assert cs.read(off + AriCap.CAP, 2) == 0x4200
    assert writable(cs, off + AriCap.CAP, 2) == 0 and writable(cs, off + AriCap.CTRL, 2) == 0
    cs, off, _ = place(AriCap(7, mfvc_groups=True, acs_groups=True))
    assert cs.read(off + AriCap.CAP, 2) == 0x0703
    assert writable(cs, off + AriCap.CTRL, 2) == 0x73
    cs, off, _ = place(AriCap(acs_groups=True))
    assert writable(cs, off + AriCap.CTRL, 2) == 0x72
    with pytest.raises(VfiolabError, match="next function"):
        AriCap(256)


def test_ats() -> None:
    cs, off, _ = place(AtsCap())
    assert cs.read(off + AtsCap.CAP, 2) == AtsCap.CAP_PAGE_ALIGNED         # depth 32 encodes as 0
    assert writable(cs, off + AtsCap.CAP, 2) == 0
    assert writable(cs, off + AtsCap.CTRL, 2) == 0x801F                    # Enable + STU
    cs, off, _ = place(AtsCap(5, page_aligned=False, global_invalidate=True))
    assert cs.read(off + AtsCap.CAP, 2) == 5 | AtsCap.CAP_GLOBAL_INV
    with pytest.raises(VfiolabError, match="queue depth"):
        AtsCap(0)


def test_pasid() -> None:
    cs, off, _ = place(PasidCap(16))
    assert cs.read(off + PasidCap.CAP, 2) == 16 << 8
    assert writable(cs, off + PasidCap.CAP, 2) == 0
    assert writable(cs, off + PasidCap.CTRL, 2) == PasidCap.CTRL_ENABLE
    cs, off, _ = place(PasidCap(20, exec_perm=True, priv_mode=True))
    assert cs.read(off + PasidCap.CAP, 2) == 0x1406
    assert writable(cs, off + PasidCap.CTRL, 2) == 0x7
    with pytest.raises(VfiolabError, match="width"):
        PasidCap(21)


def test_pri_enable_reset_and_stopped() -> None:
    cs, off, pri = place(PriCap(0x200, prg_pasid_required=True))
    st_ = off + PriCap.STATUS
    assert cs.read(st_, 2) == PriCap.STATUS_STOPPED | PriCap.STATUS_PASID
    assert cs.read(off + PriCap.MAX_REQ, 4) == 0x200
    assert writable(cs, off + PriCap.MAX_REQ, 4) == 0
    assert writable(cs, off + PriCap.ALLOC_REQ, 4) == 0xFFFFFFFF
    # drivers/pci/ats.c pci_enable_pri: allocation, then Enable; Stopped clears while enabled.
    cs.write(off + PriCap.ALLOC_REQ, 4, 0x20)
    cs.write(off + PriCap.CTRL, 2, PriCap.CTRL_ENABLE)
    assert pri.enabled() and pri.allocation() == 0x20
    assert cs.read(st_, 2) == PriCap.STATUS_PASID
    cs.write(off + PriCap.CTRL, 2, 0)
    assert cs.read(st_, 2) & PriCap.STATUS_STOPPED
    cs.write(off + PriCap.CTRL, 2, PriCap.CTRL_RESET)                      # pci_reset_pri
    assert cs.read(off + PriCap.CTRL, 2) == 0                              # Reset reads 0b
    pri.signal(PriCap.STATUS_RF | PriCap.STATUS_UPRGI)
    cs.write(st_, 2, PriCap.STATUS_RF | PriCap.STATUS_STOPPED | PriCap.STATUS_PASID)
    assert cs.read(st_, 2) == PriCap.STATUS_UPRGI | PriCap.STATUS_STOPPED | PriCap.STATUS_PASID
    cs.reset(RESET_FLR)
    assert cs.read(st_, 2) == PriCap.STATUS_STOPPED | PriCap.STATUS_PASID
    assert cs.read(off + PriCap.ALLOC_REQ, 4) == 0
    with pytest.raises(VfiolabError, match="not Response Failure"):
        pri.signal(PriCap.STATUS_STOPPED)
    with pytest.raises(VfiolabError, match="not placed"):
        PriCap().enabled()


# ---------------------------------------------------------------------------- SR-IOV
def _sriov(**kw: object) -> tuple[ConfigSpace, int, SriovCap]:
    args: dict[str, object] = {"total_vfs": 8, "vf_device": 0x10ED, "vf_offset": 0x80, "vf_stride": 2,
                               "vf_bars": [VfBar(0x4000), VfBar(0x1000, mem64=False, prefetch=False)]}
    args.update(kw)
    return place(SriovCap(**args))  # type: ignore[arg-type]


def test_sriov_read_only_registers() -> None:
    cs, off, sr = _sriov(initial_vfs=4, vf_migration=True, func_link=3)
    for reg, val in ((SriovCap.INITIAL_VFS, 4), (SriovCap.TOTAL_VFS, 8), (SriovCap.FUNC_LINK, 3),
                     (SriovCap.VF_OFFSET, 0x80), (SriovCap.VF_STRIDE, 2), (SriovCap.VF_DID, 0x10ED),
                     (SriovCap.SUP_PGSIZE, 0x553)):
        size = 1 if reg == SriovCap.FUNC_LINK else 4 if reg == SriovCap.SUP_PGSIZE else 2
        assert cs.read(off + reg, size) == val
        assert writable(cs, off + reg, size) == 0, hex(reg)
    assert writable(cs, off + SriovCap.CAP, 4) == 0
    assert cs.read(off + SriovCap.SYS_PGSIZE, 4) == 1
    assert sr.vf_device_id() == 0x10ED and sr.first_vf_offset() == 0x80 and sr.vf_stride() == 2


def test_sriov_control_bits() -> None:
    cs, off, _ = _sriov()
    assert writable(cs, off + SriovCap.CTRL, 2) == SriovCap.CTRL_VFE | SriovCap.CTRL_MSE | SriovCap.CTRL_ARI
    cs, off, _ = _sriov(vf_migration=True, vf_10bit_tag=True, ari_hierarchy_rw=False)
    assert writable(cs, off + SriovCap.CTRL, 2) == 0x2F
    assert writable(cs, off + SriovCap.STATUS, 2) == 0
    cs.set(off + SriovCap.STATUS, 2, SriovCap.STATUS_VFM)
    cs.write(off + SriovCap.STATUS, 2, SriovCap.STATUS_VFM)                # RW1C
    assert cs.read(off + SriovCap.STATUS, 2) == 0


def test_sriov_numvfs_only_while_vf_enable_clear_and_on_change() -> None:
    calls: list[tuple[bool, int]] = []
    cs, off, sr = _sriov(on_change=lambda cap, en, n: calls.append((en, n)))
    assert isinstance(sr, SriovCap)
    cs.write(off + SriovCap.NUM_VFS, 2, 3)
    assert sr.num_vfs() == 3 and calls == []
    cs.write(off + SriovCap.CTRL, 2, SriovCap.CTRL_VFE | SriovCap.CTRL_MSE)
    assert calls == [(True, 3)] and sr.vf_enabled() and sr.vf_mse()
    cs.write(off + SriovCap.NUM_VFS, 2, 5)                                  # dropped while enabled
    assert sr.num_vfs() == 3
    cs.write(off + SriovCap.CTRL, 2, SriovCap.CTRL_VFE)                     # VFE unchanged: no call
    cs.write(off + SriovCap.STATUS, 2, 0xFFFF)
    assert calls == [(True, 3)]
    cs.write(off + SriovCap.CTRL, 4, 0)                                     # dword write clears VFE
    assert calls == [(True, 3), (False, 3)] and not sr.vf_enabled()
    cs.write(off + SriovCap.NUM_VFS, 2, 5)
    assert sr.num_vfs() == 5
    assert sr.vf_routing_ids(0x0300) == [0x0380, 0x0382, 0x0384, 0x0386, 0x0388]
    cs.reset(RESET_FLR)
    assert sr.num_vfs() == 0 and cs.read(off + SriovCap.CTRL, 2) == 0


def test_sriov_offset_and_stride_follow_numvfs_and_ari() -> None:
    # e.g. a device that packs VFs after the PFs in ARI mode and per device otherwise.
    cs, off, sr = _sriov(vf_offset=lambda n, ari: 4 if ari else 8 + n,
                         vf_stride=lambda n, ari: 1 if ari else 8)
    assert (sr.first_vf_offset(), sr.vf_stride()) == (8, 8)
    cs.write(off + SriovCap.NUM_VFS, 2, 6)
    assert (sr.first_vf_offset(), sr.vf_stride()) == (14, 8)
    cs.write(off + SriovCap.CTRL, 2, SriovCap.CTRL_ARI)
    assert (sr.first_vf_offset(), sr.vf_stride()) == (4, 1) and sr.ari_hierarchy()
    assert writable(cs, off + SriovCap.VF_OFFSET, 4) == 0
    cs, off, sr = _sriov(vf_offset=lambda n, ari: 0x10000 if n else 0)
    with pytest.raises(VfiolabError, match="First VF Offset callable gave 65536"):
        cs.write(off + SriovCap.NUM_VFS, 2, 1)


def _size_bars(cs: ConfigSpace, base: int) -> list[int]:
    """drivers/pci/probe.c __pci_size_stdbars on the six VF BARs: save, write ~0, read, restore."""
    regs6 = [base + 4 * i for i in range(6)]
    saved = [cs.read(r, 4) for r in regs6]
    for r in regs6:
        cs.write(r, 4, 0xFFFFFFFF)
    masks = [cs.read(r, 4) for r in regs6]
    for r, v in zip(regs6, saved):
        cs.write(r, 4, v)
    return masks


def test_sriov_vf_bar_sizing_protocol() -> None:
    cs, off, sr = _sriov(vf_bars=[VfBar(0x4000), VfBar(0x1000, mem64=False, prefetch=False), None,
                                  VfBar(1 << 34, prefetch=False)])
    masks = _size_bars(cs, off + SriovCap.BAR0)
    assert masks == [0xFFFFC00C, 0xFFFFFFFF, 0xFFFFF000, 0, 0x00000004, 0xFFFFFFFC]
    # Type bits are read-only: a write of zeros keeps them.
    cs.write(off + SriovCap.BAR0, 4, 0)
    assert cs.read(off + SriovCap.BAR0, 4) == 0x0C
    cs.write(off + SriovCap.BAR0, 4, 0xFE001234)
    cs.write(off + SriovCap.BAR0 + 4, 4, 0x1)
    cs.write(off + SriovCap.BAR0 + 8, 4, 0xFD000FFF)
    cs.write(off + SriovCap.BAR0 + 16, 4, 0)
    cs.write(off + SriovCap.BAR0 + 20, 4, 0x40)
    assert sr.vf_bars() == [VfBarRegion(0, 0x1FE000000, 0x4000, True, True),
                            VfBarRegion(2, 0xFD000000, 0x1000, False, False),
                            VfBarRegion(4, 0x40_0000_0000, 1 << 34, True, False)]


def test_sriov_vf_bars_align_to_system_page_size() -> None:
    cs, off, sr = _sriov(vf_bars=[VfBar(0x4000), VfBar(0x800, mem64=False)])
    assert sr.system_page_size() == 4096
    assert _size_bars(cs, off + SriovCap.BAR0)[:3] == [0xFFFFC00C, 0xFFFFFFFF, 0xFFFFF008]
    cs.write(off + SriovCap.BAR0 + 8, 4, 0xFD000000)
    cs.write(off + SriovCap.SYS_PGSIZE, 4, 1 << 4)                          # 64 KiB pages
    assert sr.system_page_size() == 0x10000
    assert _size_bars(cs, off + SriovCap.BAR0)[:3] == [0xFFFF000C, 0xFFFFFFFF, 0xFFFF0008]
    assert [(b.index, b.size) for b in sr.vf_bars()] == [(0, 0x10000), (2, 0x10000)]
    cs.reset(RESET_FLR)
    assert sr.system_page_size() == 4096 and sr.vf_bars()[1].size == 0x1000


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"vf_bars": [VfBar(0x3000)]}, "power of two"),
    ({"vf_bars": [VfBar(8)]}, "power of two"),
    ({"vf_bars": [VfBar(1 << 32, mem64=False)]}, "2 GiB"),
    ({"vf_bars": [VfBar(0x1000)] * 4}, "BAR slots"),
    ({"initial_vfs": 4}, "== TotalVFs"),
    ({"initial_vfs": 9, "vf_migration": True}, "<= TotalVFs"),
    ({"total_vfs": 0x10000}, "TotalVFs"),
    ({"vf_device": -1}, "VF Device ID"),
    ({"supported_page_sizes": 2}, "4 KiB"),
    ({"vf_stride": 0x10000}, "VF Stride"),
])
def test_sriov_rejects_bad_parameters(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(VfiolabError, match=match):
        _sriov(**kwargs)


def test_sriov_int_bar_shorthand_and_unplaced_use() -> None:
    sr = SriovCap(2, 0x1234, vf_bars=[0x2000, None, 0x1000])
    assert sr.bars[:4] == [VfBar(0x2000), None, None, VfBar(0x1000)]
    with pytest.raises(VfiolabError, match="not placed"):
        sr.num_vfs()


# ---------------------------------------------------------------------------- DSN, LTR, PTM
def test_dsn_is_read_only_eui64() -> None:
    cs, off, _ = place(DsnCap(0x0011223344556677))
    assert cs.read(off + 4, 4) == 0x44556677 and cs.read(off + 8, 4) == 0x00112233
    assert writable(cs, off + 4, 4) == 0 and writable(cs, off + 8, 4) == 0
    with pytest.raises(VfiolabError, match="64 bits"):
        DsnCap(1 << 64)


def test_ltr_latencies_rw_without_reserved_bits() -> None:
    cs, off, _ = place(LtrCap(0x1003, 0x0C01))
    assert cs.read(off + LtrCap.MAX_SNOOP, 4) == 0x0C01_1003
    assert writable(cs, off + LtrCap.MAX_SNOOP, 2) == 0x1FFF
    assert writable(cs, off + LtrCap.MAX_NOSNOOP, 2) == 0x1FFF
    with pytest.raises(VfiolabError, match="max_snoop"):
        LtrCap(0x2000)


def test_ltr_ns_like_lspci() -> None:
    # Value * 32^scale; lspci's 32-bit shift makes scale 7 (35 bits) wrap to 1 << 3.
    assert [ltr_ns(1 | s << 10) for s in range(8)] == [1, 32, 1024, 32768, 1 << 20, 1 << 25, 1 << 30, 8]


def test_ptm_root_select_only_when_root_capable() -> None:
    cs, off, _ = place(PtmCap(granularity=16))
    assert cs.read(off + PtmCap.CAP, 4) == 0x1001
    assert writable(cs, off + PtmCap.CAP, 4) == 0
    assert writable(cs, off + PtmCap.CTRL, 4) == 0xFF01
    cs, off, _ = place(PtmCap(requester=False, responder=True, root=True))
    assert cs.read(off + PtmCap.CAP, 4) == 0x6
    assert writable(cs, off + PtmCap.CTRL, 4) == 0xFF03
    with pytest.raises(VfiolabError, match="Responder"):
        PtmCap(root=True)


# ---------------------------------------------------------------------------- Secondary PCIe, L1SS
@pytest.mark.parametrize("width", [1, 2, 4, 8, 12, 16, 32])
def test_secondary_pcie_per_lane_registers(width: int) -> None:
    cs, off, cap = place(SecondaryPcieCap(width, lane_eq=[0x1234 & 0x7F7F] * width))
    lanes = (1 << width) - 1
    assert writable(cs, off + SecondaryPcieCap.LNKCTL3, 4) == 0xFE03
    cs.set(off + SecondaryPcieCap.LANE_ERR, 4, 0xFFFFFFFF & lanes)
    cs.reset(RESET_HOT)                                                     # RW1CS
    assert cs.read(off + SecondaryPcieCap.LANE_ERR, 4) == lanes
    cs.write(off + SecondaryPcieCap.LANE_ERR, 4, 0xFFFFFFFF)
    assert cs.read(off + SecondaryPcieCap.LANE_ERR, 4) == 0
    cs.set(off + SecondaryPcieCap.LANE_ERR, 4, lanes)
    cs.reset(RESET_FUNDAMENTAL)
    assert cs.read(off + SecondaryPcieCap.LANE_ERR, 4) == 0
    for lane in range(width):
        assert cs.read(off + SecondaryPcieCap.LANE_EQ_CTRL + 2 * lane, 2) == 0x1234
    assert cap.length() == (0xC + 2 * width + 3) & ~3


def test_secondary_pcie_presets_hwinit_in_downstream_ports() -> None:
    cs, off, _ = place(SecondaryPcieCap(2, lane_eq=[0x0505, 0x0606], downstream=True))
    eq = off + SecondaryPcieCap.LANE_EQ_CTRL
    cs.write(eq, 2, 0x7777)                                                 # firmware's one write
    cs.write(eq, 2, 0x1111)
    assert cs.read(eq, 2) == 0x7777 and cs.read(eq + 2, 2) == 0x0606
    cs, off, _ = place(SecondaryPcieCap(2, lane_eq=0x0505))
    assert writable(cs, off + SecondaryPcieCap.LANE_EQ_CTRL, 4) == 0       # RO in an upstream port
    with pytest.raises(VfiolabError, match="x3"):
        SecondaryPcieCap(3)
    with pytest.raises(VfiolabError, match="2 lane equalization values for an x4"):
        SecondaryPcieCap(4, lane_eq=[0, 0])
    with pytest.raises(VfiolabError, match="lane 0"):
        SecondaryPcieCap(1, lane_eq=0x8000)


def test_l1ss_enables_only_for_supported_substates() -> None:
    cs, off, _ = place(L1ssCap(pcipm_l12=False, aspm_l11=False, common_mode_restore_us=40,
                               power_on_scale=1, power_on_value=3))
    assert cs.read(off + L1ssCap.CAP, 4) == 0x06 | 0x10 | 40 << 8 | 1 << 16 | 3 << 19
    assert writable(cs, off + L1ssCap.CTL1, 4) == 0x06 | 0xE3FFFF00
    assert writable(cs, off + L1ssCap.CTL2, 4) == 0xFB
    cs, off, _ = place(L1ssCap(pcipm_l12=False, pcipm_l11=False, aspm_l12=False, aspm_l11=False))
    assert cs.read(off + L1ssCap.CAP, 4) == 0                               # no L1_PM_Substates bit
    with pytest.raises(VfiolabError, match="T_POWER_ON"):
        L1ssCap(power_on_scale=4)
