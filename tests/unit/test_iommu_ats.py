"""ATS, PRI and PASID enabling on PCI functions (drivers/pci/ats.c; End-End TLP prefixes from
drivers/pci/probe.c pci_configure_eetlp_prefix; ACS path from drivers/pci/pci.c), checked against the
registers the function then shows."""

from __future__ import annotations

import errno

import pytest

from vfiolab.errors import UapiError
from vfiolab.iommu import pcie_ats
from vfiolab.pci.caps.acs import AcsCap
from vfiolab.pci.caps.ats import AtsCap
from vfiolab.pci.caps.pasid import PasidCap
from vfiolab.pci.caps.pri import PriCap
from vfiolab.pci.caps.sriov import SriovCap
from vfiolab.pci.function import PcieEndpoint, RcIntegratedEndpoint
from vfiolab.pci.sriov_vf import VfSpec, VirtualFunction


def rciep(**kw: object) -> RcIntegratedEndpoint:
    return RcIntegratedEndpoint(0x8086, 0x1, 0x120000, **kw)  # type: ignore[arg-type]


def reg(fn: RcIntegratedEndpoint | PcieEndpoint, cap_id: int, off: int) -> int:
    cap = fn.caps.find(cap_id, extended=True)
    assert cap is not None
    return fn.config_read(cap.offset + off, 2)


def test_enable_ats_rules() -> None:
    """pci_enable_ats(): EINVAL without ATS or for ps < 12, EBUSY twice; STU = ps - 12 in the control."""
    with pytest.raises(UapiError) as err:
        pcie_ats.enable_ats(rciep(), 12)
    assert err.value.errno == errno.EINVAL
    fn = rciep(ext_caps=[AtsCap(queue_depth=32)])
    with pytest.raises(UapiError) as err:
        pcie_ats.enable_ats(fn, 11)
    assert err.value.errno == errno.EINVAL
    pcie_ats.enable_ats(fn, 14)
    assert reg(fn, AtsCap.cap_id, AtsCap.CTRL) == AtsCap.CTRL_ENABLE | 2
    with pytest.raises(UapiError) as err:
        pcie_ats.enable_ats(fn, 12)
    assert err.value.errno == errno.EBUSY
    assert pcie_ats.ats_queue_depth(fn) == 32  # encoded as 0
    pcie_ats.disable_ats(fn)
    assert reg(fn, AtsCap.cap_id, AtsCap.CTRL) == 2 and not pcie_ats.state(fn).ats_enabled


def test_untrusted_function_has_no_ats() -> None:
    fn = rciep(ext_caps=[AtsCap()])
    pcie_ats.state(fn).untrusted = True
    assert not pcie_ats.ats_supported(fn)


def test_enable_pri_rules() -> None:
    """pci_enable_pri(): allocation = min(capacity, requested); PRI Stopped must read 1 first."""
    fn = rciep(ext_caps=[PriCap(100)])
    pcie_ats.enable_pri(fn, 2048)
    assert reg(fn, PriCap.cap_id, PriCap.ALLOC_REQ) == 100 and pcie_ats.state(fn).pri_reqs_alloc == 100
    assert reg(fn, PriCap.cap_id, PriCap.CTRL) == PriCap.CTRL_ENABLE
    assert not reg(fn, PriCap.cap_id, PriCap.STATUS) & PriCap.STATUS_STOPPED
    with pytest.raises(UapiError) as err:
        pcie_ats.enable_pri(fn, 1)
    assert err.value.errno == errno.EBUSY
    with pytest.raises(UapiError) as err:
        pcie_ats.reset_pri(fn)
    assert err.value.errno == errno.EBUSY
    pcie_ats.disable_pri(fn)
    pcie_ats.reset_pri(fn)  # Reset reads back 0
    assert reg(fn, PriCap.cap_id, PriCap.CTRL) == 0
    # a function still busy (Stopped clear) refuses: the kernel reads Stopped before enabling
    busy = rciep(ext_caps=[PriCap(8)])
    cap = busy.caps.find(PriCap.cap_id, extended=True)
    busy.cs.set(cap.offset + PriCap.STATUS, 2, 0)
    with pytest.raises(UapiError) as err:
        pcie_ats.enable_pri(busy, 8)
    assert err.value.errno == errno.EBUSY


def test_enable_pasid_needs_tlp_prefix_and_features() -> None:
    """pci_enable_pasid(): EINVAL without End-End TLP prefix support, or for unsupported Exec/Priv."""
    plain = rciep(ext_caps=[PasidCap(20)])
    with pytest.raises(UapiError) as err:
        pcie_ats.enable_pasid(plain, 0)
    assert err.value.errno == errno.EINVAL
    fn = rciep(express={"ee_prefix": 1}, ext_caps=[PasidCap(16, exec_perm=True)])
    assert pcie_ats.eetlp_prefix_max(fn) == 1
    with pytest.raises(UapiError) as err:
        pcie_ats.enable_pasid(fn, PasidCap.CTRL_PRIV)
    assert err.value.errno == errno.EINVAL
    assert pcie_ats.pasid_features(fn) == PasidCap.CAP_EXEC
    pcie_ats.enable_pasid(fn, PasidCap.CTRL_EXEC)
    assert reg(fn, PasidCap.cap_id, PasidCap.CTRL) == PasidCap.CTRL_ENABLE | PasidCap.CTRL_EXEC
    assert pcie_ats.max_pasid_width(fn) == 16
    no_tlp = rciep(ext_caps=[PasidCap(20)])
    pcie_ats.state(no_tlp).pasid_no_tlp = True  # the quirk
    pcie_ats.enable_pasid(no_tlp, 0)


def test_eetlp_prefix_needs_the_path() -> None:
    """A non-root-complex endpoint needs prefix support on its upstream bridge (here: none)."""
    ep = PcieEndpoint(0x8086, 0x2, 0x020000, express={"ee_prefix": 2})
    assert pcie_ats.eetlp_prefix_max(ep) == 0


def test_acs_path_for_multifunction_endpoint() -> None:
    """pci_acs_enabled(): a multifunction endpoint needs RR|UF in its own ACS control."""
    fn = rciep(express={"ee_prefix": 1}, multifunction=True,
               ext_caps=[PasidCap(20), AcsCap(cap=pcie_ats.ACS_RR | pcie_ats.ACS_UF)])
    assert not pcie_ats.acs_path_enabled(fn)
    with pytest.raises(UapiError) as err:
        pcie_ats.enable_pasid(fn, 0)
    assert err.value.errno == errno.EINVAL
    acs = fn.caps.find(AcsCap.cap_id, extended=True)
    fn.config_write(acs.offset + 6, 2, pcie_ats.ACS_RR | pcie_ats.ACS_UF)
    assert pcie_ats.acs_path_enabled(fn)
    pcie_ats.enable_pasid(fn, 0)


def test_vf_shares_pf_pri_pasid_and_stu() -> None:
    """VFs: PRI/PASID follow the PF's enable; ATS needs the PF's STU."""
    pf = PcieEndpoint(0x8086, 0x10, 0x020000, express={"ee_prefix": 1},
                      ext_caps=[SriovCap(2, 0x11), AtsCap(), PriCap(16), PasidCap(20)])
    cap = pf.caps.find(SriovCap.cap_id, extended=True)
    assert isinstance(cap, SriovCap)
    vf = VirtualFunction(pf, cap, 0, 0x81, VfSpec(0x020000, ext_caps=lambda: [AtsCap()]))
    assert pcie_ats.physfn(vf) is pf
    with pytest.raises(UapiError):
        pcie_ats.enable_pri(vf, 4)
    pcie_ats.enable_pri(pf, 4)
    pcie_ats.enable_pri(vf, 4)  # nothing to do: the PF's PRI serves the VF
    assert pcie_ats.pri_enabled_in_hw(vf) and pcie_ats.pri_supported(vf)
    pcie_ats.enable_ats(pf, 13)
    with pytest.raises(UapiError) as err:
        pcie_ats.enable_ats(vf, 12)
    assert err.value.errno == errno.EINVAL
    pcie_ats.enable_ats(vf, 13)
    assert pcie_ats.ats_queue_depth(vf) == 0
    assert pcie_ats.max_pasid_width(vf) == 20
