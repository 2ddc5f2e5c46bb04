"""PCI Express Capability (ID 0x10): every register for each Device/Port Type, and its lspci decoder.

Register presence follows the PCIe Base spec §7.5.3 as Linux reads it (drivers/pci/access.c
pcie_capability_reg_implemented()): Link registers for all types but RCiEP/RCEC, Slot registers for
downstream-facing ports with Slot Implemented, Root registers for Root Ports and RCECs, the "2"
registers from capability version 2.  Bit attributes (RO, RW, RW1C, HwInit, sticky) are the spec's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field

from vfiolab.errors import VfiolabError
from vfiolab.pci.caps import express_regs as R
from vfiolab.pci.caps.base import Capability, register_decoder
from vfiolab.pci.caps.express_lspci import decode_express
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
from vfiolab.pci.config import ConfigSpace

__all__ = [
    "TYPE_DOWNSTREAM",
    "TYPE_ENDPOINT",
    "TYPE_LEG_END",
    "TYPE_PCIE_BRIDGE",
    "TYPE_PCI_BRIDGE",
    "TYPE_RC_EC",
    "TYPE_RC_END",
    "TYPE_ROOT_PORT",
    "TYPE_UPSTREAM",
    "ExpressCap",
    "ExpressCapError",
    "SlotCaps",
    "encode_power_limit",
]

register_decoder(R.CAP_ID_EXP)(decode_express)

_MPS_SIZES = {128 << code: code for code in range(6)}
_SWITCHING = frozenset({TYPE_ROOT_PORT, TYPE_UPSTREAM, TYPE_DOWNSTREAM})
_ENDPOINTS_AND_ROOT_PORTS = frozenset({TYPE_ENDPOINT, TYPE_LEG_END, TYPE_RC_END, TYPE_ROOT_PORT})
_LOWER_SKP_VECTORS = 0x007FFE00  # LnkCap2 bits 22:9 (Lower SKP OS Generation/Reception vectors), HwInit
_LNKSTA2_EQ = R.LNKSTA2_EQ_COMPLETE | R.LNKSTA2_EQ_PHASE1 | R.LNKSTA2_EQ_PHASE2 | R.LNKSTA2_EQ_PHASE3
# PCIe Base §6.6.2: control fields an FLR must not reset because they affect the Link (the sticky
# ones, Hardware Autonomous Speed Disable and Link Equalization Request, survive anyway).
_FLR_KEEPS = ((R.DEVCTL, R.DEVCTL_PAYLOAD),
              (R.LNKCTL, R.LNKCTL_ASPMC | R.LNKCTL_RCB | R.LNKCTL_CCC | R.LNKCTL_ES | R.LNKCTL_CLKREQ_EN
               | R.LNKCTL_HAWD))
# Status fields that show hardware state (the trained link, the slot) rather than register contents:
# no reset of the function's registers changes them, so the model keeps them like sticky bits.
_LNKSTA_STATE = R.LNKSTA_CLS | R.LNKSTA_NLW | R.LNKSTA_LT | R.LNKSTA_DLLLA
_SLTSTA_STATE = R.SLTSTA_MRLSS | R.SLTSTA_PDS | R.SLTSTA_EIS
_LNKSTA2_STATE = R.LNKSTA2_DEEMPH | R.LNKSTA2_CROSSLINK_RES | R.LNKSTA2_DS_COMP_PRESENCE


class ExpressCapError(VfiolabError):
    """A PCI Express capability option that the spec does not allow for this port type or version."""


def encode_power_limit(watts: float) -> tuple[int, int]:
    """(value, scale) of a Slot Power Limit (PCIe Base §7.5.3.9): F0h-FEh = 250-600 W, FFh = over 600 W."""
    if watts > 600:
        return 0xFF, 0
    if watts >= 250:
        steps, rem = divmod(watts - 250, 25)
        if rem == 0:
            return 0xF0 + int(steps), 0
    if watts >= 0:
        for scale in range(4):
            scaled = watts * 10 ** scale
            value = round(scaled)
            if abs(scaled - value) < 1e-9 and value <= (0xEF if scale == 0 else 0xFF):
                return value, scale
    raise ExpressCapError(f"slot power limit {watts} W cannot be encoded: 0-239 W in 1 W steps, 0-25.5 W "
                          "in 0.1 W, 0-2.55 W in 0.01 W, 0-0.255 W in 0.001 W, 250-600 W in 25 W steps, "
                          "or over 600 W")


@dataclass(frozen=True)
class SlotCaps:
    """What a slot below a downstream-facing port has (Slot Capabilities, §7.5.3.9) and its initial state."""

    number: int = 0
    """Physical Slot Number (13 bits)."""
    power_limit: float = 0.0
    """Slot Power Limit in watts."""
    attention_button: bool = False
    power_controller: bool = False
    mrl_sensor: bool = False
    attention_indicator: bool = False
    power_indicator: bool = False
    hotplug: bool = False
    hotplug_surprise: bool = False
    interlock: bool = False
    no_command_completed: bool = False
    inband_pd_disable: bool = False
    """In-Band PD Disable Supported (Slot Capabilities 2)."""
    present: bool = True
    """An adapter is in the slot (Presence Detect State)."""


@dataclass(eq=False)
class ExpressCap(Capability):
    """The PCI Express Capability of one function, built for a Device/Port Type and capability version.

    Options default to a minimal x1 2.5 GT/s function; ``speed``/``width`` (the trained link) default
    to the maximum, ``dll_active_reporting``/``bw_notification`` to what the spec expects of the type.
    ``on_flr`` (endpoints with ``flr=True``) is called after software writes Initiate FLR.
    """

    cap_id = R.CAP_ID_EXP
    name = "PCI Express"

    port_type: int
    _: KW_ONLY
    version: int = 2
    irq: int = 0
    flit_mode: bool = False
    # Device Capabilities / Status
    max_payload: int = 256
    phantom_functions: int = 0
    ext_tag: bool = True
    l0s_latency: int = 0
    l1_latency: int = 0
    role_based_errors: bool = True
    slot_power_limit: float = 0.0
    flr: bool = False
    aux_power: bool = False
    # Link
    max_speed: int = R.SPEED_2_5GT
    max_width: int = 1
    speed: int | None = None
    width: int | None = None
    link_active: bool = True
    port_number: int = 0
    aspm: int = 0
    l0s_exit: int = 0
    l1_exit: int = 0
    clock_pm: bool = False
    surprise_down: bool = False
    dll_active_reporting: bool | None = None
    bw_notification: bool | None = None
    aspm_optionality: bool = True
    slot_clock: bool = True
    rcb_128: bool = False
    crosslink: bool = False
    retimer_detect: bool = False
    two_retimers_detect: bool = False
    drs: bool = False
    # Slot / Root
    slot: SlotCaps | None = None
    crs_visibility: bool = False
    # Device Capabilities 2
    completion_timeout_ranges: int = 0
    completion_timeout_disable: bool = False
    ari_forwarding: bool = False
    atomic_routing: bool = False
    atomic32: bool = False
    atomic64: bool = False
    atomic128: bool = False
    atomic_requester: bool = False
    no_ro_prpr: bool = False
    ltr: bool = False
    tph_completer: int = 0
    ten_bit_tag_completer: bool = False
    ten_bit_tag_requester: bool = False
    obff: int = 0
    ext_fmt: bool = False
    ee_prefix: int = 0
    emergency_power_reduction: int = 0
    epr_init: bool = False
    frs: bool = False
    ido: bool = False
    on_flr: Callable[[], None] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.port_type not in R.PORT_TYPES:
            raise ExpressCapError(f"PCI Express Device/Port Type {self.port_type:#x} is not defined "
                                  "(valid: 0, 1, 4-0xa)")
        if self.version not in (1, 2):
            raise ExpressCapError(f"PCI Express capability version {self.version} (must be 1 or 2)")
        downstream = self.port_type in R.DOWNSTREAM_FACING
        # The trained link (Link Status); changes with set_link().
        self.link_speed: int = self.max_speed if self.speed is None else self.speed
        self.link_width: int = self.max_width if self.width is None else self.width
        # Spec §7.5.3.6: DLL Link Active reporting and Link Bandwidth Notification belong to
        # downstream-facing ports; LBN is required there for links wider than x1 or faster than 2.5 GT/s.
        if self.dll_active_reporting is None:
            self.dll_active_reporting = downstream
        if self.bw_notification is None:
            self.bw_notification = downstream and (self.max_speed > R.SPEED_2_5GT or self.max_width > 1)
        self._validate()

    # ------------------------------------------------------------------------------ validation
    def _validate(self) -> None:
        t = self.port_type
        link = t in R.HAS_LINK
        downstream = t in R.DOWNSTREAM_FACING

        def need(cond: bool, what: str) -> None:
            if not cond:
                raise ExpressCapError(f"PCI Express {_TYPE_NAMES[t]} (type {t:#x}, v{self.version}): {what}")

        def in_range(name: str, value: int, lo: int, hi: int) -> None:
            need(lo <= value <= hi, f"{name} {value} outside {lo}..{hi}")

        in_range("irq", self.irq, 0, 31)
        need(self.max_payload in _MPS_SIZES, f"max_payload {self.max_payload} (must be 128, 256, ..., 4096)")
        in_range("phantom_functions", self.phantom_functions, 0, 3)
        in_range("l0s_latency", self.l0s_latency, 0, 7)
        in_range("l1_latency", self.l1_latency, 0, 7)
        need((self.l0s_latency, self.l1_latency) == (0, 0) or t in (TYPE_ENDPOINT, TYPE_LEG_END),
             "acceptable L0s/L1 latencies are for endpoints")
        need(self.slot_power_limit == 0 or t in R.UPSTREAM_FACING,
             "a captured slot power limit needs an upstream-facing link")
        if self.slot_power_limit:
            encode_power_limit(self.slot_power_limit)
        need(not self.flr or t in R.ENDPOINTS, "Function Level Reset is for endpoints")
        in_range("max_speed", self.max_speed, R.SPEED_2_5GT, R.SPEED_64GT)
        in_range("speed", self.link_speed, R.SPEED_2_5GT, self.max_speed)
        need(self.max_width in R.LINK_WIDTHS, f"max_width x{self.max_width} (must be one of {R.LINK_WIDTHS})")
        need(self.link_width in R.LINK_WIDTHS and self.link_width <= self.max_width,
             f"width x{self.link_width} (must be a link width up to x{self.max_width})")
        in_range("port_number", self.port_number, 0, 255)
        in_range("aspm", self.aspm, 0, 3)
        in_range("l0s_exit", self.l0s_exit, 0, 7)
        in_range("l1_exit", self.l1_exit, 0, 7)
        need(not self.clock_pm or t in R.UPSTREAM_FACING, "Clock Power Management is for upstream-facing links")
        for name, value in (("surprise_down", self.surprise_down),
                            ("dll_active_reporting", self.dll_active_reporting),
                            ("bw_notification", self.bw_notification)):
            need(not value or downstream, f"{name} is for downstream-facing ports")
        need(not self.rcb_128 or t == TYPE_ROOT_PORT, "rcb_128 (a hardwired Read Completion Boundary) is for "
             "root ports")
        need(link or not (self.crosslink or self.retimer_detect or self.two_retimers_detect or self.drs
                          or self.aspm or self.port_number or self.clock_pm),
             "link options on a function without a link")
        need(self.slot is None or downstream, "only root ports, switch downstream ports and PCI/PCI-X to "
             "PCIe bridges implement a slot")
        if self.slot is not None:
            in_range("slot number", self.slot.number, 0, 0x1FFF)
            encode_power_limit(self.slot.power_limit)
            need(not self.slot.inband_pd_disable or self.version >= 2, "Slot Capabilities 2 needs version 2")
        need(not self.crs_visibility or t in R.HAS_ROOT, "CRS Software Visibility is for root ports and RCECs")
        need(not self.ari_forwarding or t in (TYPE_ROOT_PORT, TYPE_DOWNSTREAM),
             "ARI Forwarding is for root ports and switch downstream ports")
        need(not self.atomic_routing or t in _SWITCHING, "AtomicOp routing is for root and switch ports")
        need(not self.atomic_requester or t in _ENDPOINTS_AND_ROOT_PORTS,
             "AtomicOp requesters are endpoints and root ports")
        need(self.tph_completer in (0, 1, 3), f"tph_completer {self.tph_completer} (0 none, 1 TPH, 3 TPH+ExtTPH)")
        need(not self.tph_completer or t in _ENDPOINTS_AND_ROOT_PORTS, "TPH completers are endpoints and root ports")
        in_range("completion_timeout_ranges", self.completion_timeout_ranges, 0, 15)
        in_range("obff", self.obff, 0, 3)
        in_range("ee_prefix", self.ee_prefix, 0, 4)
        in_range("emergency_power_reduction", self.emergency_power_reduction, 0, 2)
        if self.version < 2:
            v2_only = [name for name, value in (
                ("completion_timeout_ranges", self.completion_timeout_ranges),
                ("completion_timeout_disable", self.completion_timeout_disable),
                ("ari_forwarding", self.ari_forwarding), ("atomic_routing", self.atomic_routing),
                ("atomic32", self.atomic32), ("atomic64", self.atomic64), ("atomic128", self.atomic128),
                ("atomic_requester", self.atomic_requester), ("no_ro_prpr", self.no_ro_prpr),
                ("ltr", self.ltr), ("tph_completer", self.tph_completer),
                ("ten_bit_tag_completer", self.ten_bit_tag_completer),
                ("ten_bit_tag_requester", self.ten_bit_tag_requester), ("obff", self.obff),
                ("ext_fmt", self.ext_fmt), ("ee_prefix", self.ee_prefix),
                ("emergency_power_reduction", self.emergency_power_reduction), ("epr_init", self.epr_init),
                ("frs", self.frs), ("ido", self.ido), ("crosslink", self.crosslink),
                ("retimer_detect", self.retimer_detect), ("two_retimers_detect", self.two_retimers_detect),
                ("drs", self.drs), ("flit_mode", self.flit_mode),
                ("max_speed > 5 GT/s", self.max_speed > R.SPEED_5GT)) if value]
            need(not v2_only, f"{', '.join(v2_only)} need capability version 2")

    # ------------------------------------------------------------------------------ layout
    @property
    def has_link(self) -> bool:
        """Link registers exist (every type but RCiEP and RCEC; drivers/pci/access.c pcie_cap_has_lnkctl)."""
        return self.port_type in R.HAS_LINK

    @property
    def has_root(self) -> bool:
        """Root registers exist (root ports and RCECs; drivers/pci/access.c pcie_cap_has_rtctl)."""
        return self.port_type in R.HAS_ROOT

    def length(self) -> int:
        if self.version >= 2:
            return R.SIZEOF_V2
        if self.has_root:
            return R.SIZEOF_V1_ROOT
        if self.slot is not None:
            return R.SIZEOF_V1_SLOT
        return R.SIZEOF_V1_LINK if self.has_link else R.SIZEOF_V1_NO_LINK

    # ------------------------------------------------------------------------------ registers
    def build(self, cs: ConfigSpace, off: int) -> None:
        flags = (self.version | self.port_type << 4 | (R.FLAGS_SLOT if self.slot is not None else 0) | self.irq << 9
                 | (R.FLAGS_FLIT if self.flit_mode else 0))
        cs.init_reg(off + R.FLAGS, 2, flags, hwinit=R.FLAGS_SLOT | R.FLAGS_FLIT)
        self._build_device(cs, off)
        if self.has_link:
            self._build_link(cs, off)
        if self.slot is not None:
            self._build_slot(cs, off, self.slot)
        elif self.port_type in R.DOWNSTREAM_FACING and self.version >= 2:
            # §7.5.3.11: without a slot, Presence Detect State of a downstream port is hardwired to 1b
            # (drivers/pci/access.c pcie_capability_read_word() emulates the same).
            cs.init_reg(off + R.SLTSTA, 2, R.SLTSTA_PDS)
        if self.has_root:
            self._build_root(cs, off)
        if self.version >= 2:
            self._build_device2(cs, off)
            if self.has_link:
                self._build_link2(cs, off)

    def _build_device(self, cs: ConfigSpace, off: int) -> None:
        t = self.port_type
        devcap = (_MPS_SIZES[self.max_payload] | self.phantom_functions << 3
                  | (R.DEVCAP_EXT_TAG if self.ext_tag else 0) | self.l0s_latency << 6 | self.l1_latency << 9
                  | (R.DEVCAP_RBER if self.role_based_errors else 0) | (R.DEVCAP_FLR if self.flr else 0))
        if self.slot_power_limit:
            value, scale = encode_power_limit(self.slot_power_limit)
            devcap |= value << 18 | scale << 26
        cs.init_reg(off + R.DEVCAP, 4, devcap)

        rw = (R.DEVCTL_CERE | R.DEVCTL_NFERE | R.DEVCTL_FERE | R.DEVCTL_URRE | R.DEVCTL_RELAX_EN
              | R.DEVCTL_PAYLOAD | R.DEVCTL_NOSNOOP_EN | R.DEVCTL_READRQ)
        rw |= R.DEVCTL_EXT_TAG if self.ext_tag else 0
        rw |= R.DEVCTL_PHANTOM if self.phantom_functions else 0
        # Bit 15: Bridge Configuration Retry Enable on PCIe-to-PCI bridges; Initiate FLR (always reads
        # 0, see attach) on endpoints that can FLR; RsvdP otherwise.
        rw |= R.DEVCTL_BCR_FLR if (t == TYPE_PCI_BRIDGE or self.flr) else 0
        sticky = R.DEVCTL_AUX_PME if self.aux_power else 0  # Aux Power PM Enable is RWS
        # Defaults (§7.5.3.4): Relaxed Ordering and No Snoop enabled, Max_Read_Request_Size 512 bytes.
        devctl = (R.DEVCTL_RELAX_EN | R.DEVCTL_NOSNOOP_EN | 2 << 12 | (R.DEVCTL_EXT_TAG if self.ext_tag else 0))
        cs.init_reg(off + R.DEVCTL, 2, devctl, rw=rw | sticky, sticky=sticky)

        w1c = R.DEVSTA_CED | R.DEVSTA_NFED | R.DEVSTA_FED | R.DEVSTA_URD
        w1c |= R.DEVSTA_EPRD if self.emergency_power_reduction else 0
        cs.init_reg(off + R.DEVSTA, 2, R.DEVSTA_AUXPD if self.aux_power else 0, w1c=w1c)

    def _initially_up(self) -> bool:
        return self.link_active and (self.slot is None or self.slot.present)

    def _link_status(self) -> int:
        sta = self.link_speed | self.link_width << 4 | (R.LNKSTA_SLC if self.slot_clock else 0)
        if self.dll_active_reporting and self._initially_up():
            sta |= R.LNKSTA_DLLLA
        return sta

    def _build_link(self, cs: ConfigSpace, off: int) -> None:
        t = self.port_type
        downstream = t in R.DOWNSTREAM_FACING
        cap = (self.max_speed | self.max_width << 4 | self.aspm << 10 | self.l0s_exit << 12 | self.l1_exit << 15
               | (R.LNKCAP_CLKPM if self.clock_pm else 0) | (R.LNKCAP_SDERC if self.surprise_down else 0)
               | (R.LNKCAP_DLLLARC if self.dll_active_reporting else 0)
               | (R.LNKCAP_LBNC if self.bw_notification else 0)
               | (R.LNKCAP_AOC if self.aspm_optionality else 0) | self.port_number << 24)
        cs.init_reg(off + R.LNKCAP, 4, cap, hwinit=R.LNKCAP_AOC | R.LNKCAP_PN)

        rw = R.LNKCTL_ASPMC | R.LNKCTL_CCC | R.LNKCTL_ES | R.LNKCTL_HAWD
        # RCB: RO (the port's own boundary) in root ports, RW in endpoints and bridges, RsvdP in switches.
        rw |= R.LNKCTL_RCB if t in (TYPE_ENDPOINT, TYPE_LEG_END, TYPE_PCI_BRIDGE) else 0
        # Link Disable and Retrain Link only exist in downstream-facing ports; Retrain reads 0 (attach).
        rw |= R.LNKCTL_LD | R.LNKCTL_RL if downstream else 0
        rw |= R.LNKCTL_CLKREQ_EN if self.clock_pm else 0
        rw |= R.LNKCTL_LBMIE | R.LNKCTL_LABIE if self.bw_notification else 0
        rw |= R.LNKCTL_DRS_CTL if (self.drs and downstream) else 0
        cs.init_reg(off + R.LNKCTL, 2, R.LNKCTL_RCB if self.rcb_128 else 0, rw=rw)
        # Slot Clock Configuration is HwInit in the spec but shares the register with RW1C bits that
        # software writes; it is kept RO here so a status clear cannot change it.
        cs.init_reg(off + R.LNKSTA, 2, self._link_status(),
                    w1c=R.LNKSTA_LBMS | R.LNKSTA_LABS if self.bw_notification else 0, sticky=_LNKSTA_STATE)

    def _build_slot(self, cs: ConfigSpace, off: int, s: SlotCaps) -> None:
        value, scale = encode_power_limit(s.power_limit)
        cap = (int(s.attention_button) | int(s.power_controller) << 1 | int(s.mrl_sensor) << 2
               | int(s.attention_indicator) << 3 | int(s.power_indicator) << 4 | int(s.hotplug_surprise) << 5
               | int(s.hotplug) << 6 | value << 7 | scale << 15 | int(s.interlock) << 17
               | int(s.no_command_completed) << 18 | s.number << 19)
        cs.init_reg(off + R.SLTCAP, 4, cap, hwinit=0xFFFFFFFF)

        # §7.5.3.10: each enable/control is RW when the slot has the feature, else hardwired to 0.
        rw = R.SLTCTL_ASPL_DISABLE
        for present, bits in ((s.attention_button, R.SLTCTL_ABPE), (s.power_controller, R.SLTCTL_PFDE | R.SLTCTL_PCC),
                              (s.mrl_sensor, R.SLTCTL_MRLSCE), (s.hotplug, R.SLTCTL_PDCE | R.SLTCTL_HPIE),
                              (s.hotplug and not s.no_command_completed, R.SLTCTL_CCIE),
                              (s.attention_indicator, R.SLTCTL_AIC), (s.power_indicator, R.SLTCTL_PIC),
                              (s.interlock, R.SLTCTL_EIC), (self.dll_active_reporting, R.SLTCTL_DLLSCE),
                              (s.inband_pd_disable, R.SLTCTL_IBPD_DISABLE)):
            rw |= bits if present else 0
        ctl = (0x3 << 6 if s.attention_indicator else 0)  # attention indicator off
        ctl |= ((0x1 if s.present else 0x3) << 8) if s.power_indicator else 0  # power indicator on/off
        cs.init_reg(off + R.SLTCTL, 2, ctl, rw=rw)

        w1c = (R.SLTSTA_ABP | R.SLTSTA_PFD | R.SLTSTA_MRLSC | R.SLTSTA_PDC | R.SLTSTA_CC | R.SLTSTA_DLLSC)
        cs.init_reg(off + R.SLTSTA, 2, R.SLTSTA_PDS if s.present else 0, w1c=w1c, sticky=_SLTSTA_STATE)
        if self.version >= 2:
            cs.init_reg(off + R.SLTCAP2, 4, R.SLTCAP2_IBPD if s.inband_pd_disable else 0, hwinit=R.SLTCAP2_IBPD)

    def _build_root(self, cs: ConfigSpace, off: int) -> None:
        rw = R.RTCTL_SECEE | R.RTCTL_SENFEE | R.RTCTL_SEFEE | R.RTCTL_PMEIE
        rw |= R.RTCTL_CRSSVE if self.crs_visibility else 0
        cs.init_reg(off + R.RTCTL, 2, 0, rw=rw)
        cs.init_reg(off + R.RTCAP, 2, R.RTCAP_CRSVIS if self.crs_visibility else 0)
        cs.init_reg(off + R.RTSTA, 4, 0, w1c=R.RTSTA_PME)

    def _build_device2(self, cs: ConfigSpace, off: int) -> None:
        t = self.port_type
        cap = (self.completion_timeout_ranges | (R.DEVCAP2_COMP_TMOUT_DIS if self.completion_timeout_disable else 0)
               | (R.DEVCAP2_ARI if self.ari_forwarding else 0)
               | (R.DEVCAP2_ATOMIC_ROUTE if self.atomic_routing else 0)
               | (R.DEVCAP2_ATOMIC_COMP32 if self.atomic32 else 0)
               | (R.DEVCAP2_ATOMIC_COMP64 if self.atomic64 else 0)
               | (R.DEVCAP2_ATOMIC_COMP128 if self.atomic128 else 0)
               | (R.DEVCAP2_NROPRPRP if self.no_ro_prpr else 0) | (R.DEVCAP2_LTR if self.ltr else 0)
               | self.tph_completer << 12 | (R.DEVCAP2_10BIT_TAG_COMP if self.ten_bit_tag_completer else 0)
               | (R.DEVCAP2_10BIT_TAG_REQ if self.ten_bit_tag_requester else 0) | self.obff << 18
               | (R.DEVCAP2_EXT_FMT if self.ext_fmt else 0)
               | ((R.DEVCAP2_EE_PREFIX | (self.ee_prefix & 3) << 22) if self.ee_prefix else 0)
               | self.emergency_power_reduction << 24 | (R.DEVCAP2_EPR_INIT if self.epr_init else 0)
               | (R.DEVCAP2_FRS if self.frs else 0))
        hwinit = (R.DEVCAP2_COMP_TMOUT_RANGES | R.DEVCAP2_NROPRPRP | R.DEVCAP2_10BIT_TAG_COMP
                  | R.DEVCAP2_10BIT_TAG_REQ | R.DEVCAP2_OBFF | R.DEVCAP2_EE_PREFIX_MAX | R.DEVCAP2_EPR
                  | R.DEVCAP2_EPR_INIT | R.DEVCAP2_FRS)
        cs.init_reg(off + R.DEVCAP2, 4, cap, hwinit=hwinit)

        # §7.5.3.16: each control is RW where the matching capability exists, else hardwired to 0.
        rw = 0
        for present, bits in ((self.completion_timeout_ranges, R.DEVCTL2_COMP_TIMEOUT),
                              (self.completion_timeout_disable, R.DEVCTL2_COMP_TMOUT_DIS),
                              (self.ari_forwarding, R.DEVCTL2_ARI), (self.atomic_requester, R.DEVCTL2_ATOMIC_REQ),
                              (self.atomic_routing, R.DEVCTL2_ATOMIC_EGRESS_BLOCK),
                              (self.ido, R.DEVCTL2_IDO_REQ_EN | R.DEVCTL2_IDO_CMP_EN),
                              (self.ltr, R.DEVCTL2_LTR_EN), (self.emergency_power_reduction, R.DEVCTL2_EPR_REQ),
                              (self.ten_bit_tag_requester, R.DEVCTL2_10BIT_TAG_REQ_EN),
                              (self.obff, R.DEVCTL2_OBFF),
                              (self.ee_prefix and t in _SWITCHING, R.DEVCTL2_EE_PREFIX_BLOCK)):
            rw |= bits if present else 0
        cs.init_reg(off + R.DEVCTL2, 2, 0, rw=rw)
        cs.init_reg(off + R.DEVSTA2, 2, 0)

    def _link_status2(self, up: bool, present: bool) -> int:
        """The Link Status 2 bits hardware derives from the link state."""
        sta = 0
        if up and self.link_speed >= R.SPEED_8GT:
            sta |= _LNKSTA2_EQ  # equalization ran and succeeded when the link trained at 8 GT/s or more
        if self.crosslink:
            downstream = self.port_type in R.DOWNSTREAM_FACING
            sta |= ((0b10 if downstream else 0b01) if up else 0b11) << 8  # Crosslink Resolution
        if self.drs and self.port_type in R.DOWNSTREAM_FACING:
            sta |= (4 if up else 2 if present else 1) << 12  # Downstream Component Presence
        return sta

    def _build_link2(self, cs: ConfigSpace, off: int) -> None:
        downstream = self.port_type in R.DOWNSTREAM_FACING
        cap = (((1 << self.max_speed) - 1) << 1 | (R.LNKCAP2_CROSSLINK if self.crosslink else 0)
               | (R.LNKCAP2_RETIMER if self.retimer_detect else 0)
               | (R.LNKCAP2_2RETIMERS if self.two_retimers_detect else 0) | (R.LNKCAP2_DRS if self.drs else 0))
        cs.init_reg(off + R.LNKCAP2, 4, cap, hwinit=R.LNKCAP2_SLS | _LOWER_SKP_VECTORS | R.LNKCAP2_RETIMER
                    | R.LNKCAP2_2RETIMERS | R.LNKCAP2_DRS)
        # Link Control 2 fields are RWS; Selectable De-emphasis (HwInit, downstream ports) is kept RO
        # for the same reason as Slot Clock Configuration.  Target Link Speed defaults to the maximum.
        rws = (R.LNKCTL2_TLS | R.LNKCTL2_ENTER_COMP | R.LNKCTL2_HASD | R.LNKCTL2_TX_MARGIN
               | R.LNKCTL2_ENTER_MOD_COMP | R.LNKCTL2_COMP_SOS | R.LNKCTL2_COMP_PRESET)
        cs.init_reg(off + R.LNKCTL2, 2, self.max_speed, rw=rws, sticky=rws)
        # Equalization and retimer status are ROS, Link Equalization Request RW1CS, DRS Received RW1C.
        ros = _LNKSTA2_EQ | R.LNKSTA2_RETIMER | R.LNKSTA2_2RETIMERS
        w1c = R.LNKSTA2_EQ_REQUEST | (R.LNKSTA2_DRS_RCVD if self.drs and downstream else 0)
        present = self.slot is None or self.slot.present
        cs.init_reg(off + R.LNKSTA2, 2, self._link_status2(self._initially_up(), present), w1c=w1c,
                    sticky=ros | R.LNKSTA2_EQ_REQUEST | _LNKSTA2_STATE)

    # ------------------------------------------------------------------------------ runtime behaviour
    def attach(self, cs: ConfigSpace, off: int) -> None:
        if self.flr:
            cs.add_write_hook(off + R.DEVCTL, 2, _on_reg_write(cs, off, R.DEVCTL, self._devctl_written))
        if self.port_type in R.DOWNSTREAM_FACING:
            cs.add_write_hook(off + R.LNKCTL, 2, _on_reg_write(cs, off, R.LNKCTL, self._lnkctl_written))
        if self.slot is not None:
            cs.add_write_hook(off + R.SLTCTL, 2, _on_reg_write(cs, off, R.SLTCTL, self._sltctl_written))

    def _devctl_written(self, cs: ConfigSpace, off: int) -> None:
        # Initiate FLR always reads 0 (§7.5.3.4): latch nothing, start the reset.
        ctl = cs.get(off + R.DEVCTL, 2)
        if ctl & R.DEVCTL_BCR_FLR:
            cs.set(off + R.DEVCTL, 2, ctl & ~R.DEVCTL_BCR_FLR)
            if self.on_flr is not None:
                # §6.6.2: an FLR leaves the fields that would disturb the Link as they are.
                regs_kept = _FLR_KEEPS if self.has_link else _FLR_KEEPS[:1]
                kept = [(off + reg, mask, cs.get(off + reg, 2) & mask) for reg, mask in regs_kept]
                self.on_flr()
                for at, mask, value in kept:
                    cs.set(at, 2, cs.get(at, 2) & ~mask | value)

    def _lnkctl_written(self, cs: ConfigSpace, off: int) -> None:
        ctl = cs.get(off + R.LNKCTL, 2)
        if ctl & R.LNKCTL_RL:
            # Retrain Link always reads 0; the retraining it starts completes at once and, with Link
            # Bandwidth Notification, sets Link Bandwidth Management Status (§7.5.3.8).
            cs.set(off + R.LNKCTL, 2, ctl & ~R.LNKCTL_RL)
            if self.bw_notification:
                cs.set(off + R.LNKSTA, 2, cs.get(off + R.LNKSTA, 2) | R.LNKSTA_LBMS)
        self._refresh_link(cs, off)

    def _sltctl_written(self, cs: ConfigSpace, off: int) -> None:
        slot = self.slot
        assert slot is not None
        ctl = cs.get(off + R.SLTCTL, 2)
        sta = cs.get(off + R.SLTSTA, 2)
        if ctl & R.SLTCTL_EIC:
            # Electromechanical Interlock Control: writing 1 toggles the interlock, the bit reads 0.
            cs.set(off + R.SLTCTL, 2, ctl & ~R.SLTCTL_EIC)
            sta ^= R.SLTSTA_EIS
        if slot.hotplug and not slot.no_command_completed:
            sta |= R.SLTSTA_CC  # every Slot Control write is one hot-plug command (§6.7.3.2)
        cs.set(off + R.SLTSTA, 2, sta)
        self._refresh_link(cs, off)

    def _link_up(self, cs: ConfigSpace, off: int) -> bool:
        """The link is trained: a partner answers, the port has not disabled it, the slot is powered."""
        up = self.link_active
        if self.port_type in R.DOWNSTREAM_FACING:
            up = up and not cs.get(off + R.LNKCTL, 2) & R.LNKCTL_LD
        if self.slot is not None:
            up = up and bool(cs.get(off + R.SLTSTA, 2) & R.SLTSTA_PDS)
            if self.slot.power_controller:
                up = up and not cs.get(off + R.SLTCTL, 2) & R.SLTCTL_PCC
        return up

    def _refresh_link(self, cs: ConfigSpace, off: int) -> None:
        """Make Data Link Layer Link Active and Link Status 2 follow the link state."""
        if not self.has_link:
            return
        up = self._link_up(cs, off)
        if self.dll_active_reporting:
            sta = cs.get(off + R.LNKSTA, 2)
            new = (sta | R.LNKSTA_DLLLA) if up else (sta & ~R.LNKSTA_DLLLA)
            if new != sta:
                cs.set(off + R.LNKSTA, 2, new)
                if self.slot is not None:  # Data Link Layer State Changed (§7.5.3.11)
                    cs.set(off + R.SLTSTA, 2, cs.get(off + R.SLTSTA, 2) | R.SLTSTA_DLLSC)
        if self.version >= 2:
            keep = cs.get(off + R.LNKSTA2, 2) & ~(R.LNKSTA2_CROSSLINK_RES | R.LNKSTA2_DS_COMP_PRESENCE)
            cs.set(off + R.LNKSTA2, 2, keep | self._link_status2(up, self._slot_present(cs, off)))

    def _slot_present(self, cs: ConfigSpace, off: int) -> bool:
        return self.slot is None or bool(cs.get(off + R.SLTSTA, 2) & R.SLTSTA_PDS)

    def set_link(self, cs: ConfigSpace, *, speed: int | None = None, width: int | None = None,
                 active: bool | None = None, autonomous: bool = False) -> None:
        """Hardware side: the link (re)trained to ``speed``/``width`` or went up/down.

        A speed or width change sets Link Autonomous Bandwidth Status when ``autonomous`` and Link
        Bandwidth Management Status otherwise (ports with Link Bandwidth Notification, §7.5.3.8).
        """
        off = self._placed()
        if not self.has_link:
            raise ExpressCapError(f"{_TYPE_NAMES[self.port_type]} has no link")
        new_speed = self.link_speed if speed is None else speed
        new_width = self.link_width if width is None else width
        if not R.SPEED_2_5GT <= new_speed <= self.max_speed:
            raise ExpressCapError(f"link speed code {new_speed} outside 1..{self.max_speed}")
        if new_width not in R.LINK_WIDTHS or new_width > self.max_width:
            raise ExpressCapError(f"link width x{new_width} (must be a link width up to x{self.max_width})")
        sta = cs.get(off + R.LNKSTA, 2)
        changed = (new_speed, new_width) != (self.link_speed, self.link_width)
        self.link_speed, self.link_width = new_speed, new_width
        sta = (sta & ~(R.LNKSTA_CLS | R.LNKSTA_NLW)) | new_speed | new_width << 4
        if changed and self.bw_notification:
            sta |= R.LNKSTA_LABS if autonomous else R.LNKSTA_LBMS
        cs.set(off + R.LNKSTA, 2, sta)
        if active is not None:
            self.link_active = active
        self._refresh_link(cs, off)

    def set_presence(self, cs: ConfigSpace, present: bool) -> None:
        """Hardware side: an adapter was inserted in or removed from the slot (Presence Detect)."""
        off = self._placed()
        if self.slot is None:
            raise ExpressCapError(f"{_TYPE_NAMES[self.port_type]} has no slot")
        sta = cs.get(off + R.SLTSTA, 2)
        new = (sta | R.SLTSTA_PDS) if present else (sta & ~R.SLTSTA_PDS)
        if new != sta:
            cs.set(off + R.SLTSTA, 2, new | R.SLTSTA_PDC)
        self._refresh_link(cs, off)

    def _placed(self) -> int:
        if self.offset < 0:
            raise ExpressCapError("the PCI Express capability is not placed in a config space yet")
        return self.offset


def _on_reg_write(cs: ConfigSpace, off: int, reg: int, handler: Callable[[ConfigSpace, int], None]
                  ) -> Callable[[int, int, int, int], None]:
    """A write hook calling ``handler(cs, off)`` only for writes that reach the 16-bit register ``off + reg``."""
    start = off + reg

    def hook(woff: int, size: int, _old: int, _new: int) -> None:
        if woff < start + 2 and start < woff + size:
            handler(cs, off)

    return hook


_TYPE_NAMES = {
    TYPE_ENDPOINT: "endpoint", TYPE_LEG_END: "legacy endpoint", TYPE_ROOT_PORT: "root port",
    TYPE_UPSTREAM: "switch upstream port", TYPE_DOWNSTREAM: "switch downstream port",
    TYPE_PCI_BRIDGE: "PCIe-to-PCI/PCI-X bridge", TYPE_PCIE_BRIDGE: "PCI/PCI-X-to-PCIe bridge",
    TYPE_RC_END: "RC integrated endpoint", TYPE_RC_EC: "RC event collector",
}
