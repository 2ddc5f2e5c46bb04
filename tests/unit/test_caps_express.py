"""ExpressCap registers follow the PCIe Base spec §7.5.3 attributes and Linux's register-presence rules.

Expected values are worked out from the spec (register layout, RW/RW1C/HwInit/sticky attributes)
and drivers/pci/access.c (which registers exist per Device/Port Type and version).
"""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vfiolab.errors import VfiolabError
from vfiolab.pci import regs
from vfiolab.pci.caps import express as E
from vfiolab.pci.caps import express_regs as R
from vfiolab.pci.caps.base import STD_DECODERS, CapabilityList
from vfiolab.pci.caps.express_lspci import power_limit_text
from vfiolab.pci.config import RESET_FLR, RESET_FUNDAMENTAL, ConfigSpace
from vfiolab.pci.decode import DecodeContext

ALL_TYPES = sorted(R.PORT_TYPES)
HOTPLUG_SLOT = E.SlotCaps(number=5, power_limit=25, attention_button=True, power_controller=True,
                          mrl_sensor=True, attention_indicator=True, power_indicator=True, hotplug=True,
                          interlock=True)


def place(cap: E.ExpressCap) -> tuple[ConfigSpace, int]:
    """Put ``cap`` at 0x40 of a fresh 4 KiB config space and seal the reset values."""
    cs = ConfigSpace()
    CapabilityList(cs).add(cap, offset=0x40)
    cs.seal()
    return cs, 0x40


def writable(cs: ConfigSpace, off: int, size: int) -> int:
    """Bits software can change: write all ones, read, write zeros, read (restores the old value)."""
    old = cs.read(off, size)
    cs.write(off, size, (1 << 8 * size) - 1)
    ones = cs.read(off, size)
    cs.write(off, size, 0)
    zeros = cs.read(off, size)
    cs.write(off, size, old)
    return ones & ~zeros


# ------------------------------------------------------------------------------------ structure
@pytest.mark.parametrize("ptype,slot,v1_len", [
    (R.TYPE_ENDPOINT, None, 0x14), (R.TYPE_LEG_END, None, 0x14), (R.TYPE_UPSTREAM, None, 0x14),
    (R.TYPE_PCI_BRIDGE, None, 0x14), (R.TYPE_DOWNSTREAM, None, 0x14), (R.TYPE_DOWNSTREAM, E.SlotCaps(), 0x1C),
    (R.TYPE_PCIE_BRIDGE, E.SlotCaps(), 0x1C), (R.TYPE_ROOT_PORT, None, 0x24), (R.TYPE_ROOT_PORT, E.SlotCaps(), 0x24),
    (R.TYPE_RC_END, None, 0x0C), (R.TYPE_RC_EC, None, 0x24),
])
def test_length_per_type_and_version(ptype: int, slot: E.SlotCaps | None, v1_len: int) -> None:
    assert E.ExpressCap(ptype, version=1, slot=slot).length() == v1_len
    assert E.ExpressCap(ptype, version=2, slot=slot).length() == 0x3C


@pytest.mark.parametrize("ptype", ALL_TYPES)
@pytest.mark.parametrize("version", [1, 2])
def test_header_and_flags(ptype: int, version: int) -> None:
    slot = E.SlotCaps() if ptype in R.DOWNSTREAM_FACING else None
    cs, off = place(E.ExpressCap(ptype, version=version, irq=17, slot=slot))
    assert cs.read(regs.CAPABILITY_LIST, 1) == off
    assert cs.read(off, 2) == R.CAP_ID_EXP  # ID 0x10, next 0
    flags = cs.read(off + R.FLAGS, 2)
    assert flags == version | ptype << 4 | (R.FLAGS_SLOT if slot else 0) | 17 << 9
    assert writable(cs, off + R.FLAGS, 2) & ~R.FLAGS_SLOT == 0  # RO apart from the HwInit slot bit


def _absent_dwords(ptype: int, version: int, slot: bool) -> list[int]:
    """Register dwords of the v2 layout that the type does not implement (drivers/pci/access.c)."""
    absent = []
    if ptype not in R.HAS_LINK:
        absent += [R.LNKCAP, R.LNKCTL]
        if version >= 2:
            absent += [R.LNKCAP2, R.LNKCTL2]
    if not slot and version >= 2:
        absent += [R.SLTCAP, R.SLTCAP2, R.SLTCTL2]
        if ptype not in R.DOWNSTREAM_FACING:
            absent.append(R.SLTCTL)
    if ptype not in R.HAS_ROOT and version >= 2:
        absent += [R.RTCTL, R.RTSTA]
    return absent


@pytest.mark.parametrize("ptype", ALL_TYPES)
def test_registers_a_type_lacks_are_hardwired_zero(ptype: int) -> None:
    cs, off = place(E.ExpressCap(ptype))
    for reg in _absent_dwords(ptype, 2, False):
        assert cs.read(off + reg, 4) == 0, hex(reg)
        assert writable(cs, off + reg, 4) == 0, hex(reg)
    assert cs.read(off + R.DEVSTA2, 2) == 0 and writable(cs, off + R.DEVSTA2, 2) == 0


@pytest.mark.parametrize("ptype", sorted(R.DOWNSTREAM_FACING))
def test_downstream_port_without_slot_reads_presence_detect(ptype: int) -> None:
    # §7.5.3.11 / drivers/pci/access.c: Presence Detect State hardwired to 1b when no slot is implemented.
    cs, off = place(E.ExpressCap(ptype))
    assert cs.read(off + R.SLTCTL, 4) == R.SLTSTA_PDS << 16
    assert writable(cs, off + R.SLTCTL, 4) == 0


def test_structure_ends_at_the_capability_length() -> None:
    cs, off = place(E.ExpressCap(R.TYPE_ENDPOINT, version=1))
    assert cs.read(off + 0x14, 4) == 0 and writable(cs, off + 0x14, 4) == 0
    CapabilityList(cs).add(E.ExpressCap(R.TYPE_ENDPOINT, version=1), offset=off + 0x14)  # no overlap


# ------------------------------------------------------------------------------------ device registers
def test_endpoint_device_registers() -> None:
    cap = E.ExpressCap(R.TYPE_ENDPOINT, max_payload=512, phantom_functions=2, l0s_latency=3, l1_latency=5,
                       slot_power_limit=75, flr=True, aux_power=True)
    cs, off = place(cap)
    devcap = cs.read(off + R.DEVCAP, 4)
    assert devcap == (2 | 2 << 3 | R.DEVCAP_EXT_TAG | 3 << 6 | 5 << 9 | R.DEVCAP_RBER | 75 << 18 | R.DEVCAP_FLR)
    assert writable(cs, off + R.DEVCAP, 4) == 0
    # Reset defaults (§7.5.3.4): Relaxed Ordering + No Snoop on, MRRS 512 B, Extended Tag on when supported.
    assert cs.read(off + R.DEVCTL, 2) == R.DEVCTL_RELAX_EN | R.DEVCTL_NOSNOOP_EN | 2 << 12 | R.DEVCTL_EXT_TAG
    assert writable(cs, off + R.DEVCTL, 2) == 0x7FFF  # bit 15 (Initiate FLR) never reads back
    assert cs.read(off + R.DEVSTA, 2) == R.DEVSTA_AUXPD


def test_devctl_hardwires_unsupported_features() -> None:
    cs, off = place(E.ExpressCap(R.TYPE_ROOT_PORT, ext_tag=False))
    assert writable(cs, off + R.DEVCTL, 2) == (R.DEVCTL_CERE | R.DEVCTL_NFERE | R.DEVCTL_FERE | R.DEVCTL_URRE
                                               | R.DEVCTL_RELAX_EN | R.DEVCTL_PAYLOAD | R.DEVCTL_NOSNOOP_EN
                                               | R.DEVCTL_READRQ)
    # PCIe-to-PCI bridges: bit 15 is Bridge Configuration Retry Enable, a plain RW bit.
    cs, off = place(E.ExpressCap(R.TYPE_PCI_BRIDGE))
    cs.write(off + R.DEVCTL, 2, R.DEVCTL_BCR_FLR)
    assert cs.read(off + R.DEVCTL, 2) == R.DEVCTL_BCR_FLR


def test_device_status_errors_are_rw1c() -> None:
    cs, off = place(E.ExpressCap(R.TYPE_ENDPOINT, aux_power=True))
    errors = R.DEVSTA_CED | R.DEVSTA_NFED | R.DEVSTA_FED | R.DEVSTA_URD
    cs.set(off + R.DEVSTA, 2, errors | R.DEVSTA_AUXPD | R.DEVSTA_TRPND)  # hardware detects errors
    cs.write(off + R.DEVSTA, 2, 0)
    assert cs.read(off + R.DEVSTA, 2) == errors | R.DEVSTA_AUXPD | R.DEVSTA_TRPND
    cs.write(off + R.DEVSTA, 2, R.DEVSTA_CED | R.DEVSTA_AUXPD | R.DEVSTA_TRPND)
    assert cs.read(off + R.DEVSTA, 2) == R.DEVSTA_NFED | R.DEVSTA_FED | R.DEVSTA_URD | R.DEVSTA_AUXPD | R.DEVSTA_TRPND
    cs.write(off + R.DEVSTA, 2, 0xFFFF)
    assert cs.read(off + R.DEVSTA, 2) == R.DEVSTA_AUXPD | R.DEVSTA_TRPND


def test_initiate_flr_calls_hook_and_reads_zero() -> None:
    cap = E.ExpressCap(R.TYPE_ENDPOINT, flr=True)
    cs, off = place(cap)
    calls: list[int] = []
    cap.on_flr = lambda: calls.append(cs.read(off + R.DEVCTL, 2))
    cs.write(off + R.DEVCTL, 2, cs.read(off + R.DEVCTL, 2) | R.DEVCTL_BCR_FLR)
    assert len(calls) == 1 and not calls[0] & R.DEVCTL_BCR_FLR  # the bit is already clear in the hook
    assert not cs.read(off + R.DEVCTL, 2) & R.DEVCTL_BCR_FLR
    cs.write(off + R.DEVCTL, 4, 0)  # a dword write without the bit, and status writes, do not reset
    cs.write(off + R.DEVSTA, 2, 0xFFFF)
    assert len(calls) == 1
    cs.write(off + R.DEVCTL, 4, R.DEVCTL_BCR_FLR)  # dword write covering DevCtl + DevSta
    assert len(calls) == 2


def test_flr_keeps_link_state_and_link_controls() -> None:
    # PCIe Base §6.6.2: FLR resets the function's registers but not what would disturb the Link.
    cap = E.ExpressCap(R.TYPE_ENDPOINT, flr=True, max_width=8, aspm=3, clock_pm=True)
    cs, off = place(cap)
    cap.on_flr = lambda: cs.reset(RESET_FLR)  # what the function model does
    cs.write(off + R.DEVCTL, 2, 0x1 << 5 | R.DEVCTL_CERE | R.DEVCTL_URRE)  # MPS 256 B, error reporting
    link_ctl = R.LNKCTL_ASPMC | R.LNKCTL_RCB | R.LNKCTL_CCC | R.LNKCTL_CLKREQ_EN
    cs.write(off + R.LNKCTL, 2, link_ctl)
    cap.set_link(cs, width=4)
    cs.write(off + R.DEVCTL, 2, cs.read(off + R.DEVCTL, 2) | R.DEVCTL_BCR_FLR)
    ctl = cs.read(off + R.DEVCTL, 2)
    assert ctl & R.DEVCTL_PAYLOAD == 0x1 << 5 and not ctl & (R.DEVCTL_CERE | R.DEVCTL_URRE)
    assert cs.read(off + R.LNKCTL, 2) == link_ctl
    assert (cs.read(off + R.LNKSTA, 2) & R.LNKSTA_NLW) >> 4 == 4  # the link stays trained at x4
    cs.reset(RESET_FUNDAMENTAL)
    assert cs.read(off + R.LNKCTL, 2) == 0


def test_flr_without_hook_and_without_capability() -> None:
    cs, off = place(E.ExpressCap(R.TYPE_ENDPOINT, flr=True))  # on_flr unset: the write is harmless
    cs.write(off + R.DEVCTL, 2, R.DEVCTL_BCR_FLR)
    assert cs.read(off + R.DEVCTL, 2) == 0
    cs, off = place(E.ExpressCap(R.TYPE_ENDPOINT))  # no FLR capability: bit 15 is RsvdP
    cs.write(off + R.DEVCTL, 2, R.DEVCTL_BCR_FLR)
    assert cs.read(off + R.DEVCTL, 2) == 0


def test_aux_pm_enable_is_sticky() -> None:
    cs, off = place(E.ExpressCap(R.TYPE_ENDPOINT, aux_power=True))
    cs.write(off + R.DEVCTL, 2, R.DEVCTL_AUX_PME | R.DEVCTL_CERE)
    cs.reset(RESET_FLR)
    ctl = cs.read(off + R.DEVCTL, 2)
    assert ctl & R.DEVCTL_AUX_PME and not ctl & R.DEVCTL_CERE
    cs.reset(RESET_FUNDAMENTAL)
    assert not cs.read(off + R.DEVCTL, 2) & R.DEVCTL_AUX_PME


# ------------------------------------------------------------------------------------ link registers
def test_link_capabilities_and_status_reflect_the_trained_link() -> None:
    cap = E.ExpressCap(R.TYPE_ENDPOINT, max_speed=R.SPEED_16GT, max_width=16, speed=R.SPEED_8GT, width=8,
                       port_number=3, aspm=3, l0s_exit=4, l1_exit=6, clock_pm=True)
    cs, off = place(cap)
    assert cs.read(off + R.LNKCAP, 4) == (4 | 16 << 4 | 3 << 10 | 4 << 12 | 6 << 15 | R.LNKCAP_CLKPM
                                          | R.LNKCAP_AOC | 3 << 24)
    assert cs.read(off + R.LNKSTA, 2) == 3 | 8 << 4 | R.LNKSTA_SLC
    assert writable(cs, off + R.LNKSTA, 2) == 0  # RO: no bandwidth notification on an endpoint
    assert writable(cs, off + R.LNKCTL, 2) == (R.LNKCTL_ASPMC | R.LNKCTL_RCB | R.LNKCTL_CCC | R.LNKCTL_ES
                                               | R.LNKCTL_CLKREQ_EN | R.LNKCTL_HAWD)
    assert cs.read(off + R.LNKCAP2, 4) == 0b11110 and cs.read(off + R.LNKCTL2, 2) == R.SPEED_16GT
    # Trained at 8 GT/s: equalization completed (ROS bits).
    assert cs.read(off + R.LNKSTA2, 2) == (R.LNKSTA2_EQ_COMPLETE | R.LNKSTA2_EQ_PHASE1 | R.LNKSTA2_EQ_PHASE2
                                           | R.LNKSTA2_EQ_PHASE3)


def test_root_port_link_control_and_retrain() -> None:
    cap = E.ExpressCap(R.TYPE_ROOT_PORT, max_speed=R.SPEED_8GT, max_width=4, rcb_128=True)
    cs, off = place(cap)
    assert cs.read(off + R.LNKCAP, 4) & (R.LNKCAP_DLLLARC | R.LNKCAP_LBNC) == R.LNKCAP_DLLLARC | R.LNKCAP_LBNC
    assert cs.read(off + R.LNKCTL, 2) == R.LNKCTL_RCB  # a root port's RCB is hardwired
    assert writable(cs, off + R.LNKCTL, 2) == (R.LNKCTL_ASPMC | R.LNKCTL_LD | R.LNKCTL_CCC | R.LNKCTL_ES
                                               | R.LNKCTL_HAWD | R.LNKCTL_LBMIE | R.LNKCTL_LABIE)
    cs.write(off + R.LNKCTL, 2, R.LNKCTL_RCB | R.LNKCTL_RL)
    assert cs.read(off + R.LNKCTL, 2) == R.LNKCTL_RCB  # Retrain Link reads 0
    assert cs.read(off + R.LNKSTA, 2) & R.LNKSTA_LBMS  # retraining completed
    cs.write(off + R.LNKSTA, 2, R.LNKSTA_LBMS)  # RW1C
    assert not cs.read(off + R.LNKSTA, 2) & R.LNKSTA_LBMS
    assert cs.read(off + R.LNKSTA, 2) & R.LNKSTA_SLC  # a status clear leaves Slot Clock alone


def test_link_disable_drops_dll_active_and_flags_the_slot() -> None:
    cs, off = place(E.ExpressCap(R.TYPE_DOWNSTREAM, slot=E.SlotCaps(hotplug=True)))
    assert cs.read(off + R.LNKSTA, 2) & R.LNKSTA_DLLLA
    cs.write(off + R.LNKCTL, 2, R.LNKCTL_LD)
    assert not cs.read(off + R.LNKSTA, 2) & R.LNKSTA_DLLLA
    assert cs.read(off + R.SLTSTA, 2) & R.SLTSTA_DLLSC
    cs.write(off + R.SLTSTA, 2, R.SLTSTA_DLLSC)
    cs.write(off + R.LNKCTL, 2, 0)
    assert cs.read(off + R.LNKSTA, 2) & R.LNKSTA_DLLLA
    assert cs.read(off + R.SLTSTA, 2) & R.SLTSTA_DLLSC


def test_set_link_sets_bandwidth_status() -> None:
    cap = E.ExpressCap(R.TYPE_DOWNSTREAM, max_speed=R.SPEED_5GT, max_width=8)
    cs, off = place(cap)
    cap.set_link(cs, width=4, autonomous=True)
    sta = cs.read(off + R.LNKSTA, 2)
    assert sta & (R.LNKSTA_CLS | R.LNKSTA_NLW) == 2 | 4 << 4
    assert sta & R.LNKSTA_LABS and not sta & R.LNKSTA_LBMS
    cap.set_link(cs, speed=1)
    assert cs.read(off + R.LNKSTA, 2) & R.LNKSTA_LBMS
    cap.set_link(cs, active=False)
    assert not cs.read(off + R.LNKSTA, 2) & R.LNKSTA_DLLLA
    with pytest.raises(VfiolabError, match="width x16"):
        cap.set_link(cs, width=16)
    with pytest.raises(VfiolabError, match="speed code 3"):
        cap.set_link(cs, speed=3)


def test_link_control_2_is_sticky_and_status_2_rw1cs() -> None:
    cs, off = place(E.ExpressCap(R.TYPE_UPSTREAM, max_speed=R.SPEED_32GT))
    assert writable(cs, off + R.LNKCTL2, 2) == 0xFFBF  # all but Selectable De-emphasis
    cs.write(off + R.LNKCTL2, 2, R.SPEED_8GT | R.LNKCTL2_HASD)
    cs.set(off + R.LNKSTA2, 2, cs.get(off + R.LNKSTA2, 2) | R.LNKSTA2_EQ_REQUEST)
    cs.reset(RESET_FLR)
    assert cs.read(off + R.LNKCTL2, 2) == R.SPEED_8GT | R.LNKCTL2_HASD
    assert cs.read(off + R.LNKSTA2, 2) & R.LNKSTA2_EQ_REQUEST
    cs.write(off + R.LNKSTA2, 2, R.LNKSTA2_EQ_REQUEST | R.LNKSTA2_EQ_COMPLETE)
    sta = cs.read(off + R.LNKSTA2, 2)
    assert not sta & R.LNKSTA2_EQ_REQUEST and sta & R.LNKSTA2_EQ_COMPLETE
    cs.reset(RESET_FUNDAMENTAL)
    assert cs.read(off + R.LNKCTL2, 2) == R.SPEED_32GT


def test_hwinit_fields_take_one_firmware_write() -> None:
    cs, off = place(E.ExpressCap(R.TYPE_ROOT_PORT, port_number=1))
    cs.write(off + R.LNKCAP, 4, 0xFFFFFFFF)  # firmware programs the port number
    assert cs.read(off + R.LNKCAP, 4) >> 24 == 0xFF
    assert cs.read(off + R.LNKCAP, 4) & R.LNKCAP_SLS == 1  # RO fields untouched
    cs.write(off + R.LNKCAP, 4, 0)
    assert cs.read(off + R.LNKCAP, 4) >> 24 == 0xFF


# ------------------------------------------------------------------------------------ slot and root
def test_slot_registers() -> None:
    cap = E.ExpressCap(R.TYPE_ROOT_PORT, slot=HOTPLUG_SLOT)
    cs, off = place(cap)
    assert cs.read(off + R.SLTCAP, 4) == 0x7F & ~R.SLTCAP_HPS | 25 << 7 | R.SLTCAP_EIP | 5 << 19
    assert cs.read(off + R.SLTSTA, 2) == R.SLTSTA_PDS
    cs.write(off + R.SLTCTL, 2, R.SLTCTL_EIC)
    sta = cs.read(off + R.SLTSTA, 2)
    assert sta & R.SLTSTA_EIS and sta & R.SLTSTA_CC and not cs.read(off + R.SLTCTL, 2) & R.SLTCTL_EIC
    cs.write(off + R.SLTSTA, 2, R.SLTSTA_CC)
    assert cs.read(off + R.SLTSTA, 2) == R.SLTSTA_PDS | R.SLTSTA_EIS  # only the event bit cleared
    assert writable(cs, off + R.SLTCTL, 2) == 0x3FFF & ~R.SLTCTL_EIC  # EIC toggles and reads 0
    cs.write(off + R.SLTSTA, 2, 0xFFFF)
    assert cs.read(off + R.SLTSTA, 2) == R.SLTSTA_PDS  # the events from probing are RW1C


def test_slot_power_off_and_surprise_removal_take_the_link_down() -> None:
    cap = E.ExpressCap(R.TYPE_DOWNSTREAM, slot=HOTPLUG_SLOT, drs=True)
    cs, off = place(cap)
    assert (cs.read(off + R.LNKSTA2, 2) & R.LNKSTA2_DS_COMP_PRESENCE) >> 12 == 4  # Link Up - Present
    cs.write(off + R.SLTCTL, 2, R.SLTCTL_PCC)  # power off
    assert not cs.read(off + R.LNKSTA, 2) & R.LNKSTA_DLLLA
    assert (cs.read(off + R.LNKSTA2, 2) & R.LNKSTA2_DS_COMP_PRESENCE) >> 12 == 2  # Link Down - Present
    cs.write(off + R.SLTCTL, 2, 0)
    assert cs.read(off + R.LNKSTA, 2) & R.LNKSTA_DLLLA
    cap.set_presence(cs, False)
    sta = cs.read(off + R.SLTSTA, 2)
    assert not sta & R.SLTSTA_PDS and sta & R.SLTSTA_PDC and sta & R.SLTSTA_DLLSC
    assert (cs.read(off + R.LNKSTA2, 2) & R.LNKSTA2_DS_COMP_PRESENCE) >> 12 == 1  # Link Down - Not Present


def test_root_registers() -> None:
    cs, off = place(E.ExpressCap(R.TYPE_RC_EC, crs_visibility=True))
    assert cs.read(off + R.RTCAP, 2) == R.RTCAP_CRSVIS
    assert writable(cs, off + R.RTCTL, 2) == 0x1F
    cs.set(off + R.RTSTA, 4, 0x0100 | R.RTSTA_PME | R.RTSTA_PENDING)  # a PME from 01:00.0 is queued
    cs.write(off + R.RTSTA, 4, 0xFFFFFFFF)
    assert cs.read(off + R.RTSTA, 4) == 0x0100 | R.RTSTA_PENDING  # only PME Status is RW1C
    cs, off = place(E.ExpressCap(R.TYPE_ROOT_PORT))
    assert writable(cs, off + R.RTCTL, 2) == 0x0F  # no CRS Software Visibility


# ------------------------------------------------------------------------------------ "2" registers
def test_ari_forwarding_enable_is_rw_only_where_supported() -> None:
    for ptype in (R.TYPE_ROOT_PORT, R.TYPE_DOWNSTREAM):
        cs, off = place(E.ExpressCap(ptype, ari_forwarding=True))
        assert cs.read(off + R.DEVCAP2, 4) & R.DEVCAP2_ARI
        assert writable(cs, off + R.DEVCTL2, 2) == R.DEVCTL2_ARI
    cs, off = place(E.ExpressCap(R.TYPE_DOWNSTREAM))
    assert writable(cs, off + R.DEVCTL2, 2) == 0


def test_device_control_2_follows_device_capabilities_2() -> None:
    cap = E.ExpressCap(R.TYPE_ENDPOINT, completion_timeout_ranges=0xF, completion_timeout_disable=True,
                       atomic_requester=True, ido=True, ltr=True, emergency_power_reduction=1,
                       ten_bit_tag_requester=True, obff=3, ee_prefix=4, atomic64=True, tph_completer=1)
    cs, off = place(cap)
    assert cs.read(off + R.DEVCAP2, 4) == (0xF | R.DEVCAP2_COMP_TMOUT_DIS | R.DEVCAP2_ATOMIC_COMP64
                                           | R.DEVCAP2_LTR | 1 << 12 | R.DEVCAP2_10BIT_TAG_REQ | 3 << 18
                                           | R.DEVCAP2_EE_PREFIX | 1 << 24)  # 4 prefixes encode as 00b
    assert writable(cs, off + R.DEVCTL2, 2) == 0x7F5F  # all but ARI, egress blocking, prefix blocking


# ------------------------------------------------------------------------------------ options
@pytest.mark.parametrize("ptype,kwargs,message", [
    (3, {}, "Type 0x3 is not defined"),
    (R.TYPE_ENDPOINT, {"version": 3}, "version 3"),
    (R.TYPE_ROOT_PORT, {"flr": True}, "Function Level Reset is for endpoints"),
    (R.TYPE_ENDPOINT, {"ari_forwarding": True}, "ARI Forwarding is for root ports"),
    (R.TYPE_ENDPOINT, {"slot": E.SlotCaps()}, "implement a slot"),
    (R.TYPE_ENDPOINT, {"max_width": 4, "width": 8}, "width x8"),
    (R.TYPE_ENDPOINT, {"max_width": 3}, "max_width x3"),
    (R.TYPE_ENDPOINT, {"max_speed": 2, "speed": 3}, "speed 3 outside 1..2"),
    (R.TYPE_ENDPOINT, {"version": 1, "ltr": True}, "ltr need capability version 2"),
    (R.TYPE_ENDPOINT, {"max_payload": 100}, "max_payload 100"),
    (R.TYPE_ENDPOINT, {"slot_power_limit": 245}, "cannot be encoded"),
    (R.TYPE_ROOT_PORT, {"slot_power_limit": 25}, "upstream-facing"),
    (R.TYPE_ENDPOINT, {"surprise_down": True}, "surprise_down is for downstream-facing ports"),
    (R.TYPE_RC_END, {"aspm": 1}, "without a link"),
    (R.TYPE_UPSTREAM, {"atomic_requester": True}, "AtomicOp requesters"),
])
def test_bad_options_are_clear_errors(ptype: int, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(VfiolabError, match=message):
        E.ExpressCap(ptype, **kwargs)  # type: ignore[arg-type]


def test_runtime_calls_need_a_placed_capability_with_a_link_or_slot() -> None:
    with pytest.raises(VfiolabError, match="not placed"):
        E.ExpressCap(R.TYPE_ENDPOINT).set_link(ConfigSpace(), speed=1)
    cap = E.ExpressCap(R.TYPE_RC_END)
    cs, _ = place(cap)
    with pytest.raises(VfiolabError, match="has no link"):
        cap.set_link(cs, speed=1)
    with pytest.raises(VfiolabError, match="has no slot"):
        cap.set_presence(cs, False)


@pytest.mark.parametrize("watts,encoded", [
    (0, (0, 0)), (25, (25, 0)), (239, (239, 0)), (250, (0xF0, 0)), (600, (0xFE, 0)), (700, (0xFF, 0)),
    (0.5, (5, 1)), (25.5, (255, 1)), (0.75, (75, 2)), (0.001, (1, 3)),
])
def test_encode_power_limit(watts: float, encoded: tuple[int, int]) -> None:
    assert E.encode_power_limit(watts) == encoded


@settings(max_examples=200, deadline=None)
@given(value=st.integers(0, 0xFF), scale=st.integers(0, 3))
def test_power_limit_round_trip(value: int, scale: int) -> None:
    # Every lspci-printed limit below 600 W encodes back to a register value printing the same text.
    text = power_limit_text(value, scale)
    if text != ">600W":
        assert power_limit_text(*E.encode_power_limit(float(text[:-1]))) == text


def test_decoder_registered_and_records_the_port_type() -> None:
    cs, off = place(E.ExpressCap(R.TYPE_UPSTREAM))
    ctx = DecodeContext(cs.dump(), avail=4096, verbose=1)
    out = io.StringIO()
    STD_DECODERS[R.CAP_ID_EXP](ctx, out, off)
    assert out.getvalue() == "Express Upstream Port, MSI 00\n"
    assert ctx.is_pcie and ctx.pcie_type == R.TYPE_UPSTREAM
