"""ACS as Linux 7.2 reads and programs it: pci_acs_enabled / pci_acs_path_enabled and pci_enable_acs.

The predicates decide IOMMU-group isolation (drivers/pci/pci.c); each can also say *why* in words, which is
what group explanations quote.  ``enable_acs`` is what Linux does to one function's ACS control register when
an IOMMU driver requested ACS (pci_request_acs).  In Linux 7.2 that happens in pci_dma_configure()
(drivers/pci/pci-driver.c), which iommu_init_device() calls right before the device's IOMMU group is chosen;
pci_acs_init() only reads the capability (pci.md section 5.6 describes 6.12, where pci_acs_init() enabled ACS
at enumeration).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from vfiolab.errors import VfiolabError
from vfiolab.pci.acs_quirks import (
    ACS_CR,
    ACS_DT,
    ACS_EC,
    ACS_RR,
    ACS_SV,
    ACS_TB,
    ACS_UF,
    dev_specific_acs_enabled,
    intel_pch_id,
    intel_spt_id,
    is_intel_pch_root_port,
    is_intel_spt_root_port,
)
from vfiolab.pci.caps.express_regs import (
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
from vfiolab.pci.hierarchy import FLAG_ACS_ENABLED_QUIRK, PciDev, PciTree

__all__ = ["ACS_CR", "ACS_DT", "ACS_EC", "ACS_RR", "ACS_SV", "ACS_TB", "ACS_UF", "REQ_ACS_FLAGS", "AcsSetup",
           "acs_enabled", "acs_enabled_why", "acs_flags_enabled", "acs_path_blocker", "acs_path_enabled",
           "enable_acs", "enable_acs_dev", "flag_names", "parse_acs_flags", "program_acs"]

# drivers/iommu/iommu.c: isolation needs Source Validation, Request and Completion Redirect, Upstream Fwd.
REQ_ACS_FLAGS: Final = ACS_SV | ACS_RR | ACS_CR | ACS_UF
_ALL: Final = ACS_SV | ACS_TB | ACS_RR | ACS_CR | ACS_UF | ACS_EC | ACS_DT
_NAMES: Final = ((ACS_SV, "SV"), (ACS_TB, "TB"), (ACS_RR, "RR"), (ACS_CR, "CR"), (ACS_UF, "UF"),
                 (ACS_EC, "EC"), (ACS_DT, "DT"))

_ACS_CAP: Final = 0x04
_ACS_CTRL: Final = 0x06
_SPT_ACS_CTRL: Final = 0x08      # INTEL_SPT_ACS_CTRL: dword control register of Sunrise Point ports
_INTEL_MPC: Final = 0xD8         # Miscellaneous Port Configuration of Intel PCH root ports
_MPC_IRBNCE: Final = 1 << 26     # Invalid Receive Bus Number Check Enable (the SV equivalent)
_LPC_DEVFN: Final = 31 << 3      # the PCH LPC bridge, D31:F0
_LPC_RCBA: Final = 0xF0          # its Root Complex Base Address register; bit 0 = enable
_NO_ACS_TYPES: Final = {TYPE_PCI_BRIDGE: "cannot isolate: ACS never applies to PCIe-to-PCI bridges",
                        TYPE_PCIE_BRIDGE: "cannot isolate: PCI/PCI-X-to-PCIe bridges count as conventional PCI",
                        TYPE_RC_EC: "cannot isolate: ACS never applies to root complex event collectors"}
_MF_ONLY_TYPES: Final = (TYPE_ENDPOINT, TYPE_LEG_END, TYPE_UPSTREAM, TYPE_RC_END)


def flag_names(flags: int) -> str:
    """'SV RR CR UF' for a set of ACS bits ('none' for 0)."""
    return " ".join(n for b, n in _NAMES if flags & b) or "none"


# ---------------------------------------------------------------------------- predicates
def acs_flags_enabled(dev: PciDev, flags: int) -> bool:
    """pci_acs_flags_enabled(): controls absent from the capability count as hard-wired on (except EC)."""
    if not dev.acs_cap:
        return False
    flags &= dev.acs_capabilities | ACS_EC
    return (dev.read(dev.acs_cap + _ACS_CTRL, 2) & flags) == flags


def _flags_why(dev: PciDev, flags: int) -> tuple[bool, str]:
    if not dev.acs_cap:
        return False, "has no ACS capability"
    need = flags & (dev.acs_capabilities | ACS_EC)
    ctrl = dev.read(dev.acs_cap + _ACS_CTRL, 2)
    if (ctrl & need) == need:
        return True, f"has ACS with {flag_names(need)} enabled"
    return False, (f"has ACS but {flag_names(need & ~ctrl)} not enabled "
                   f"(control {ctrl:#06x} at {dev.acs_cap + _ACS_CTRL:#x})")


def acs_enabled_why(dev: PciDev, flags: int = REQ_ACS_FLAGS, ivrs: bool = False) -> tuple[bool, str]:
    """pci_acs_enabled() with the reason in words ("has no ACS capability", "is a single-function ...")."""
    ret, quirk = dev_specific_acs_enabled(dev, flags, ivrs)
    if quirk is not None:
        verdict = "isolated" if ret > 0 else "not isolated"
        return ret > 0, (f"is {verdict} by {quirk.function_name} "
                         f"({dev.vendor:04x}:{dev.device:04x}, drivers/pci/quirks.c)")
    if not dev.is_pcie:  # conventional PCI / PCI-X: the shared bus lets any device see DMA
        return False, "has no PCI Express capability (conventional PCI cannot isolate)"
    t = dev.pcie_type
    if t in _NO_ACS_TYPES:
        return False, _NO_ACS_TYPES[t]
    if t in (TYPE_DOWNSTREAM, TYPE_ROOT_PORT):
        return _flags_why(dev, flags)
    if t in _MF_ONLY_TYPES:  # endpoints, upstream ports, RCiEPs: only multifunction ones need ACS
        if dev.multifunction:
            ok, why = _flags_why(dev, flags)
            return ok, f"is a multifunction device and {why}"
        return True, "is a single-function device (no peer-to-peer inside it)"
    return True, f"has PCIe type {t:#x}, to which ACS does not apply"


def acs_enabled(dev: PciDev, flags: int = REQ_ACS_FLAGS, ivrs: bool = False) -> bool:
    """pci_acs_enabled(): does ``dev`` provide (effectively) the ACS controls in ``flags``?"""
    return acs_enabled_why(dev, flags, ivrs)[0]


def acs_path_blocker(start: PciDev, flags: int = REQ_ACS_FLAGS, ivrs: bool = False,
                     end: PciDev | None = None) -> tuple[PciDev, str] | None:
    """The first device from ``start`` up to the root bus (or ``end``) lacking ACS, with the reason; None
    when pci_acs_path_enabled() holds."""
    dev = start
    while True:
        ok, why = acs_enabled_why(dev, flags, ivrs)
        if not ok:
            return dev, why
        if dev.bus.is_root:
            return None if end is None else (dev, "is on the root bus before the end device was reached")
        if dev is end:
            return None
        dev = dev.bus.self  # type: ignore[assignment]  # a bridge's bus always has a bridge above


def acs_path_enabled(start: PciDev, end: PciDev | None = None, flags: int = REQ_ACS_FLAGS,
                     ivrs: bool = False) -> bool:
    """pci_acs_path_enabled(): ACS ``flags`` on every device from ``start`` up to ``end`` (None = root)."""
    return acs_path_blocker(start, flags, ivrs, end) is None


# ---------------------------------------------------------------------------- programming ACS control
def parse_acs_flags(text: str) -> tuple[int, int]:
    """A ``pci=config_acs=`` bit string (rightmost = SV; '0' clear, '1' set, 'x' keep) -> (mask, flags)."""
    mask = flags = 0
    for shift, ch in enumerate(reversed(text)):
        if ch in "01":
            mask |= 1 << shift
            if ch == "1":
                flags |= 1 << shift
        elif ch not in "xX":
            raise VfiolabError(f"config_acs flags {text!r}: invalid character {ch!r} (Linux: 'Invalid ACS "
                               "flags... Ignoring')")
    if mask & ~_ALL:
        raise VfiolabError(f"config_acs flags {text!r}: more than the 7 ACS control bits (Linux: 'Invalid "
                           "ACS flags specified')")
    return mask, flags


@dataclass(frozen=True)
class AcsSetup:
    """What decides the ACS control values Linux writes (pci_request_acs and the kernel command line)."""

    request_acs: bool = True           # an IOMMU driver called pci_request_acs() (VT-d and AMD-Vi do)
    ats_disabled: bool = False         # pci=noats: also enable Translation Blocking
    disable_acs_redir: frozenset[str] = frozenset()   # pci=disable_acs_redir=<devices>
    config_acs: Mapping[str, str] = field(default_factory=dict)  # pci=config_acs=<bits>@<device>

    @property
    def touches_hardware(self) -> bool:
        return self.request_acs or bool(self.disable_acs_redir) or bool(self.config_acs)


Read = Callable[[int, int], int]
Write = Callable[[int, int, int], None]


def _program(read: Read, write: Write, *, acs_pos: int, intel_pch: bool,
             intel_spt: bool, request_acs: bool, tb_wanted: bool, disable_redir: bool,
             config_acs: str | None, read_lpc_rcba: Callable[[], int]) -> bool:
    """pci_enable_acs() on one function through config accessors; True if the PCH ACS quirk took effect."""
    pch_flag = False
    enable = False
    if request_acs:
        # pci_dev_specific_enable_acs(): an Intel quirk that handles the device returns 0 (std enable skipped).
        if intel_pch:
            # pci_quirk_enable_intel_pch_acs(): needs the LPC's RCBA enabled; then sets MPC.IRBNCE (the SV
            # equivalent; the RCBA peer-decode registers are memory, outside config space).
            if read_lpc_rcba() & 1:
                mpc = read(_INTEL_MPC, 4)
                if not mpc & _MPC_IRBNCE:
                    write(_INTEL_MPC, 4, mpc | _MPC_IRBNCE)
                pch_flag = True
        elif intel_spt and acs_pos:
            cap = read(acs_pos + _ACS_CAP, 4)
            ctrl = read(acs_pos + _SPT_ACS_CTRL, 4)
            ctrl |= cap & (ACS_SV | ACS_RR | ACS_CR | ACS_UF)
            if tb_wanted:
                ctrl |= cap & ACS_TB
            write(acs_pos + _SPT_ACS_CTRL, 4, ctrl)
        else:
            enable = True
    if not acs_pos:
        return pch_flag
    fw_ctrl = ctrl16 = read(acs_pos + _ACS_CTRL, 2)
    if enable:  # pci_std_enable_acs()
        cap16 = read(acs_pos + _ACS_CAP, 2)
        ctrl16 |= cap16 & (ACS_SV | ACS_RR | ACS_CR | ACS_UF)
        if tb_wanted:
            ctrl16 |= cap16 & ACS_TB
    # __pci_config_acs(): the command-line settings start again from the firmware value.
    for active, mask, flags in ((disable_redir, ACS_RR | ACS_CR | ACS_EC, 0),
                                (config_acs is not None, *parse_acs_flags(config_acs or ""))):
        if not active:
            continue
        if intel_spt:  # pci_dev_specific_disable_acs_redir() handles it on the dword register instead
            ctrl = read(acs_pos + _SPT_ACS_CTRL, 4) & ~(ACS_RR | ACS_CR | ACS_EC)
            write(acs_pos + _SPT_ACS_CTRL, 4, ctrl)
            continue
        ctrl16 = (fw_ctrl & ~mask) | (flags & mask)
    write(acs_pos + _ACS_CTRL, 2, ctrl16)
    return pch_flag


def _find_ext(read: Read, cap_id: int) -> int:
    pos = 0x100
    for _ in range((4096 - 256) // 8):
        if pos < 0x100:
            break
        header = read(pos, 4)
        if header == 0 or header == 0xFFFFFFFF:
            break
        if header & 0xFFFF == cap_id:
            return pos
        pos = (header >> 20) & 0xFFC
    return 0


def _pcie_type(read: Read) -> int | None:
    if not read(0x06, 2) & 0x10:
        return None
    pos = read(0x34, 1)
    for _ in range(48):
        if pos < 0x40:
            break
        pos &= ~3
        ent = read(pos, 2)
        if ent & 0xFF == 0xFF:
            break
        if ent & 0xFF == 0x10:
            return (read(pos + 2, 2) >> 4) & 0xF
        pos = ent >> 8
    return None


def enable_acs(read: Read, write: Write, *, request_acs: bool = True, ats_disabled: bool = False,
               external_facing: bool = False, untrusted: bool = False, disable_acs_redir: bool = False,
               config_acs: str | None = None, read_lpc: Read | None = None) -> None:
    """What Linux does to one function's ACS control when an IOMMU requested ACS (pci_enable_acs).

    ``read(offset, size)`` / ``write(offset, size, value)`` access the function's config space; ``read_lpc``
    reads the config space of device 31.0 on the same bus (only Intel PCH root ports consult it; absent
    means the read fails with all-ones, as on hardware).  ``disable_acs_redir``/``config_acs`` say that the
    kernel command line's pci=disable_acs_redir= / pci=config_acs=<bits>@ names this function.  The IDs,
    PCIe type and ACS position Linux keeps in struct pci_dev are found by config reads first; callers that
    hold them already use program_acs().
    """
    ptype = _pcie_type(read)
    program_acs(read, write, vendor=read(0, 2), device=read(2, 2), pcie_type=ptype,
                acs_pos=_find_ext(read, 0x0D) if ptype is not None else 0, request_acs=request_acs,
                ats_disabled=ats_disabled, external_facing=external_facing, untrusted=untrusted,
                disable_acs_redir=disable_acs_redir, config_acs=config_acs, read_lpc=read_lpc)


def program_acs(read: Read, write: Write, *, vendor: int, device: int, pcie_type: int | None, acs_pos: int,
                request_acs: bool = True, ats_disabled: bool = False, external_facing: bool = False,
                untrusted: bool = False, disable_acs_redir: bool = False, config_acs: str | None = None,
                read_lpc: Read | None = None) -> None:
    """pci_enable_acs() (drivers/pci/pci.c) given what struct pci_dev caches: dev->vendor/device, the PCIe
    port type (None for conventional PCI) and dev->acs_cap (0 without ACS); config cycles only for the
    ACS registers themselves (and the Intel quirks' registers), as Linux issues them."""
    intel_rp = pcie_type == TYPE_ROOT_PORT and vendor == 0x8086
    _program(read, write, acs_pos=acs_pos, intel_pch=intel_rp and intel_pch_id(device),
             intel_spt=intel_rp and intel_spt_id(device),
             request_acs=request_acs, tb_wanted=ats_disabled or external_facing or untrusted,
             disable_redir=disable_acs_redir, config_acs=config_acs,
             read_lpc_rcba=(lambda: read_lpc(_LPC_RCBA, 4)) if read_lpc else (lambda: 0xFFFFFFFF))


def enable_acs_dev(dev: PciDev, tree: PciTree, setup: AcsSetup) -> bool:
    """pci_enable_acs() on a device of a tree; returns True if its ACS state (control or quirk flag) changed."""
    if not setup.touches_hardware:
        return False
    is_intel = dev.vendor == 0x8086
    if not dev.acs_cap and not (is_intel and is_intel_pch_root_port(dev)):
        return False                    # pci_enable_acs() touches nothing (no dev->acs_cap, no PCH quirk)
    before = (bytes(dev.cfg[dev.acs_cap:dev.acs_cap + 12]) if dev.acs_cap else b"", dev.dev_flags)
    pch = _program(dev.read, dev.write, acs_pos=dev.acs_cap,
                   intel_pch=is_intel and is_intel_pch_root_port(dev),
                   intel_spt=is_intel and is_intel_spt_root_port(dev),
                   request_acs=setup.request_acs,
                   tb_wanted=setup.ats_disabled or dev.external_facing or dev.untrusted,
                   disable_redir=dev.name in setup.disable_acs_redir, config_acs=setup.config_acs.get(dev.name),
                   read_lpc_rcba=lambda: tree.read_bus_config(dev.bus, _LPC_DEVFN, _LPC_RCBA, 4))
    if pch:
        dev.dev_flags |= FLAG_ACS_ENABLED_QUIRK
    after = (bytes(dev.cfg[dev.acs_cap:dev.acs_cap + 12]) if dev.acs_cap else b"", dev.dev_flags)
    return before != after


def check_names(tree: PciTree, names: Iterable[str]) -> None:
    """Every device named on a command-line-like setting must exist (a clear error otherwise)."""
    for name in names:
        tree.device(name)
