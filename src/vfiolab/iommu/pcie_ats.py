"""ATS, PRI and PASID enabling on a PCI function as ``drivers/pci/ats.c`` does it, with the pieces of
``drivers/pci/probe.c`` (End-End TLP prefixes) and ``drivers/pci/pci.c`` (ACS path) it depends on.

The state Linux keeps in ``struct pci_dev`` (``ats_enabled``, ``ats_stu``, ``pri_enabled``,
``pri_reqs_alloc``, ``pasid_enabled``, ``pasid_features``, ``untrusted``...) lives in one
:class:`AtsState` per function; the registers are written through the function's configuration space,
so lspci and the device see exactly what the kernel programmed.  VFs share their PF's PRI and PASID
(PCIe SR-IOV §9.3.7) and must use the PF's STU for ATS.
"""

from __future__ import annotations

import errno
import weakref
from dataclasses import dataclass
from typing import Final

from vfiolab.errors import UapiError
from vfiolab.pci.caps.acs import AcsCap
from vfiolab.pci.caps.ats import AtsCap
from vfiolab.pci.caps.express_regs import (
    DEVCAP2,
    DEVCAP2_EE_PREFIX,
    DEVCAP2_EE_PREFIX_MAX,
    FLAGS,
    TYPE_DOWNSTREAM,
    TYPE_ENDPOINT,
    TYPE_LEG_END,
    TYPE_PCI_BRIDGE,
    TYPE_PCIE_BRIDGE,
    TYPE_RC_EC,
    TYPE_RC_END,
    TYPE_ROOT_PORT,
    TYPE_UPSTREAM,
)
from vfiolab.pci.caps.pasid import PasidCap
from vfiolab.pci.caps.pri import PriCap
from vfiolab.pci.function import PciFunction

PCI_ATS_MIN_STU: Final = 12  # include/linux/pci-ats.h
PCI_ATS_MAX_QDEP: Final = 32
ACS_RR: Final = 0x0004  # include/uapi/linux/pci_regs.h PCI_ACS_RR / PCI_ACS_UF / PCI_ACS_EC
ACS_UF: Final = 0x0010
ACS_EC: Final = 0x0020


@dataclass
class AtsState:
    """The ATS/PRI/PASID fields of Linux's struct pci_dev for one function."""

    ats_enabled: bool = False
    ats_stu: int = 0
    pri_enabled: bool = False
    pri_reqs_alloc: int = 0
    pasid_enabled: bool = False
    pasid_features: int = 0
    untrusted: bool = False
    """Behind an external-facing port (drivers/pci/probe.c set_pcie_untrusted): no ATS."""
    pasid_no_tlp: bool = False
    """Quirk: PASID works without TLP prefixes (drivers/pci/quirks.c)."""


_STATE: weakref.WeakKeyDictionary[PciFunction, AtsState] = weakref.WeakKeyDictionary()


def state(fn: PciFunction) -> AtsState:
    """The AtsState of ``fn`` (created on first use)."""
    st = _STATE.get(fn)
    if st is None:
        st = _STATE[fn] = AtsState()
    return st


def physfn(fn: PciFunction) -> PciFunction:
    """pci_physfn(): the PF of a VF, else the function itself."""
    return getattr(fn, "pf", fn) if fn.is_virtfn else fn


def _ext(fn: PciFunction, cap_id: int) -> int:
    cap = fn.caps.find(cap_id, extended=True)
    return cap.offset if cap is not None else 0


def _pcie_type(fn: PciFunction) -> int | None:
    if fn.express_offset is None:
        return None
    return (fn.config_read(fn.express_offset + FLAGS, 2) >> 4) & 0xF


def _upstream_bridge(fn: PciFunction) -> PciFunction | None:
    bus = fn.bus
    return bus.bridge if bus is not None else None


# ---------------------------------------------------------------------- prerequisites
def eetlp_prefix_max(fn: PciFunction) -> int:
    """pci_configure_eetlp_prefix() (probe.c): how many End-End TLP prefixes the path from the root
    to ``fn`` carries; 0 when some link on it cannot."""
    if fn.express_offset is None:
        return 0
    cap = fn.config_read(fn.express_offset + DEVCAP2, 4)
    if not cap & DEVCAP2_EE_PREFIX:
        return 0
    n = (cap & DEVCAP2_EE_PREFIX_MAX) >> 22 or 4  # 00b means 4
    if _pcie_type(fn) in (TYPE_ROOT_PORT, TYPE_RC_END):
        return n
    bridge = _upstream_bridge(fn)
    return n if bridge is not None and eetlp_prefix_max(bridge) else 0


def acs_enabled(fn: PciFunction, flags: int) -> bool:
    """pci_acs_enabled() (pci.c) without device-specific quirks."""
    t = _pcie_type(fn)
    if t is None:
        return False
    if t in (TYPE_PCIE_BRIDGE, TYPE_PCI_BRIDGE, TYPE_RC_EC):
        return False
    if t in (TYPE_DOWNSTREAM, TYPE_ROOT_PORT) or (
            t in (TYPE_ENDPOINT, TYPE_UPSTREAM, TYPE_LEG_END, TYPE_RC_END) and fn.multifunction):
        pos = _ext(fn, AcsCap.cap_id)
        if not pos:
            return False
        flags &= fn.config_read(pos + 4, 2) | ACS_EC  # pci_acs_flags_enabled()
        return fn.config_read(pos + 6, 2) & flags == flags
    return True


def acs_path_enabled(fn: PciFunction, flags: int = ACS_RR | ACS_UF) -> bool:
    """pci_acs_path_enabled(fn, NULL, flags): ACS on ``fn`` and every bridge above it."""
    dev: PciFunction | None = fn
    while dev is not None:
        if not acs_enabled(dev, flags):
            return False
        dev = _upstream_bridge(dev)
    return True


# ---------------------------------------------------------------------- ATS
def ats_supported(fn: PciFunction) -> bool:
    """pci_ats_supported(): an ATS capability and not untrusted."""
    return bool(_ext(fn, AtsCap.cap_id)) and not state(fn).untrusted


def ats_queue_depth(fn: PciFunction) -> int:
    """pci_ats_queue_depth(): 0 for a VF, 32 for an encoded 0."""
    pos = _ext(fn, AtsCap.cap_id)
    if not pos:
        raise UapiError(errno.EINVAL, "no ATS capability")
    if fn.is_virtfn:
        return 0
    q = fn.config_read(pos + AtsCap.CAP, 2) & AtsCap.CAP_QDEP
    return q or PCI_ATS_MAX_QDEP


def ats_page_aligned(fn: PciFunction) -> bool:
    """pci_ats_page_aligned()."""
    pos = _ext(fn, AtsCap.cap_id)
    return bool(pos) and bool(fn.config_read(pos + AtsCap.CAP, 2) & AtsCap.CAP_PAGE_ALIGNED)


def enable_ats(fn: PciFunction, ps: int) -> None:
    """pci_enable_ats(fn, ps): EINVAL without support, for ps < 12 or a VF whose PF uses another STU;
    EBUSY when already enabled."""
    st = state(fn)
    if not ats_supported(fn):
        raise UapiError(errno.EINVAL, "ATS not supported")
    if st.ats_enabled:
        raise UapiError(errno.EBUSY, "ATS already enabled")
    if ps < PCI_ATS_MIN_STU:
        raise UapiError(errno.EINVAL, f"ATS page shift {ps} < {PCI_ATS_MIN_STU}")
    ctrl = AtsCap.CTRL_ENABLE
    if fn.is_virtfn:
        if state(physfn(fn)).ats_stu != ps:
            raise UapiError(errno.EINVAL, "VF ATS STU differs from its PF's")
    else:
        st.ats_stu = ps
        ctrl |= (ps - PCI_ATS_MIN_STU) & AtsCap.CTRL_STU
    fn.config_write(_ext(fn, AtsCap.cap_id) + AtsCap.CTRL, 2, ctrl)
    st.ats_enabled = True


def disable_ats(fn: PciFunction) -> None:
    """pci_disable_ats() (a no-op when not enabled: the kernel WARNs)."""
    st = state(fn)
    if not st.ats_enabled:
        return
    pos = _ext(fn, AtsCap.cap_id)
    fn.config_write(pos + AtsCap.CTRL, 2, fn.config_read(pos + AtsCap.CTRL, 2) & ~AtsCap.CTRL_ENABLE)
    st.ats_enabled = False


def ats_enabled_in_hw(fn: PciFunction) -> bool:
    """The ATS Enable bit as the function sees it (what gates its translated requests)."""
    pos = _ext(fn, AtsCap.cap_id)
    return bool(pos) and bool(fn.config_read(pos + AtsCap.CTRL, 2) & AtsCap.CTRL_ENABLE)


# ---------------------------------------------------------------------- PRI
def pri_supported(fn: PciFunction) -> bool:
    """pci_pri_supported(): VFs share the PF's PRI."""
    return bool(_ext(physfn(fn), PriCap.cap_id))


def prg_resp_pasid_required(fn: PciFunction) -> bool:
    """pci_prg_resp_pasid_required() (pci_pri_init reads PRI status bit 15)."""
    pf = physfn(fn)
    pos = _ext(pf, PriCap.cap_id)
    return bool(pos) and bool(pf.config_read(pos + PriCap.STATUS, 2) & PriCap.STATUS_PASID)


def reset_pri(fn: PciFunction) -> None:
    """pci_reset_pri(): EBUSY while enabled, EINVAL without the capability; nothing for a VF."""
    if fn.is_virtfn:
        return
    if state(fn).pri_enabled:
        raise UapiError(errno.EBUSY, "PRI enabled")
    pos = _ext(fn, PriCap.cap_id)
    if not pos:
        raise UapiError(errno.EINVAL, "no PRI capability")
    fn.config_write(pos + PriCap.CTRL, 2, PriCap.CTRL_RESET)


def enable_pri(fn: PciFunction, reqs: int) -> None:
    """pci_enable_pri(fn, reqs): allocation = min(capacity, reqs); EBUSY unless Stopped reads 1."""
    st = state(fn)
    if fn.is_virtfn:
        if state(physfn(fn)).pri_enabled:
            return
        raise UapiError(errno.EINVAL, "the PF's PRI is not enabled")
    if st.pri_enabled:
        raise UapiError(errno.EBUSY, "PRI already enabled")
    pos = _ext(fn, PriCap.cap_id)
    if not pos:
        raise UapiError(errno.EINVAL, "no PRI capability")
    if not fn.config_read(pos + PriCap.STATUS, 2) & PriCap.STATUS_STOPPED:
        raise UapiError(errno.EBUSY, "PRI not stopped")
    reqs = min(fn.config_read(pos + PriCap.MAX_REQ, 4), reqs)
    st.pri_reqs_alloc = reqs
    fn.config_write(pos + PriCap.ALLOC_REQ, 4, reqs)
    fn.config_write(pos + PriCap.CTRL, 2, PriCap.CTRL_ENABLE)
    st.pri_enabled = True


def disable_pri(fn: PciFunction) -> None:
    """pci_disable_pri()."""
    st = state(fn)
    if fn.is_virtfn or not st.pri_enabled:
        return
    pos = _ext(fn, PriCap.cap_id)
    fn.config_write(pos + PriCap.CTRL, 2, fn.config_read(pos + PriCap.CTRL, 2) & ~PriCap.CTRL_ENABLE)
    st.pri_enabled = False


# ---------------------------------------------------------------------- PASID
def max_pasid_width(fn: PciFunction) -> int:
    """The Max PASID Width of ``fn``'s (PF's) PASID capability, 0 without one (pci_max_pasids())."""
    pf = physfn(fn)
    pos = _ext(pf, PasidCap.cap_id)
    if not pos:
        return 0
    return (pf.config_read(pos + PasidCap.CAP, 2) & PasidCap.CAP_WIDTH) >> 8


def pasid_features(fn: PciFunction) -> int:
    """pci_pasid_features(): the Exec/Priv bits the (PF's) PASID capability supports; 0 without one."""
    pf = physfn(fn)
    pos = _ext(pf, PasidCap.cap_id)
    if not pos:
        return 0
    return pf.config_read(pos + PasidCap.CAP, 2) & (PasidCap.CAP_EXEC | PasidCap.CAP_PRIV)


def enable_pasid(fn: PciFunction, features: int) -> None:
    """pci_enable_pasid(fn, features): EINVAL without TLP-prefix support on the path, without the
    capability, without ACS RR|UF on the path, or for unsupported Exec/Priv features."""
    st = state(fn)
    if fn.is_virtfn:
        if state(physfn(fn)).pasid_enabled:
            return
        raise UapiError(errno.EINVAL, "the PF's PASID is not enabled")
    if st.pasid_enabled:
        raise UapiError(errno.EBUSY, "PASID already enabled")
    if not eetlp_prefix_max(fn) and not st.pasid_no_tlp:
        raise UapiError(errno.EINVAL, "no End-End TLP prefix support on the path")
    pos = _ext(fn, PasidCap.cap_id)
    if not pos:
        raise UapiError(errno.EINVAL, "no PASID capability")
    if not acs_path_enabled(fn):
        raise UapiError(errno.EINVAL, "ACS RR|UF not enabled on the path to the root")
    supported = fn.config_read(pos + PasidCap.CAP, 2) & (PasidCap.CAP_EXEC | PasidCap.CAP_PRIV)
    if supported & features != features:
        raise UapiError(errno.EINVAL, f"PASID features {features:#x} not supported ({supported:#x})")
    st.pasid_features = features
    fn.config_write(pos + PasidCap.CTRL, 2, PasidCap.CTRL_ENABLE | features)
    st.pasid_enabled = True


def disable_pasid(fn: PciFunction) -> None:
    """pci_disable_pasid()."""
    st = state(fn)
    if fn.is_virtfn or not st.pasid_enabled:
        return
    fn.config_write(_ext(fn, PasidCap.cap_id) + PasidCap.CTRL, 2, 0)
    st.pasid_enabled = False


def pasid_enabled_in_hw(fn: PciFunction) -> bool:
    """PASID Enable as the function (or its PF, for a VF) sees it: whether it may emit PASID prefixes."""
    pf = physfn(fn)
    pos = _ext(pf, PasidCap.cap_id)
    return bool(pos) and bool(pf.config_read(pos + PasidCap.CTRL, 2) & PasidCap.CTRL_ENABLE)


def pri_enabled_in_hw(fn: PciFunction) -> bool:
    """PRI Enable as the function (or its PF) sees it."""
    pf = physfn(fn)
    pos = _ext(pf, PriCap.cap_id)
    return bool(pos) and bool(pf.config_read(pos + PriCap.CTRL, 2) & PriCap.CTRL_ENABLE)
