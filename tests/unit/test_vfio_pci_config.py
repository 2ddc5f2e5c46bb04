"""Config space as the vfio-pci user sees it (drivers/vfio/pci/vfio_pci_config.c): virtual BARs that size
like hardware with the host's sizes while the real BARs stay put, capabilities hidden and unlinked as
pci_cap_length / pci_ext_cap_length say (checked with the real lspci on the user's view), emulated
Interrupt Disable, trapped power-state and FLR writes, MSI owned by SET_IRQS, PME bits hidden."""

from __future__ import annotations

import errno

import pytest
from test_vfio_pci_rig import CFG, Rig

from lspci_oracle import run_lspci
from vfiolab.devices import Edu, PassiveDevice, TestDev
from vfiolab.devices import testdev as T
from vfiolab.errors import UapiError
from vfiolab.pci import regs
from vfiolab.pci.caps import msi as msi_regs
from vfiolab.pci.caps.ats import AtsCap
from vfiolab.pci.caps.pasid import PasidCap
from vfiolab.pci.caps.pm import PmCap
from vfiolab.pci.caps.pri import PriCap
from vfiolab.pci.caps.ssvid import SsvidCap
from vfiolab.pci.dump import format_dump
from vfiolab.pci.function import Bar, PcieEndpoint


def user_view(r: Rig, n: int = 4096) -> bytes:
    return r.df.pread(CFG, n)


def test_virtual_bar_sizing_leaves_hardware_alone() -> None:
    """vfio_bar_fixup(): writes land in vconfig; reads return address bits & ~(size-1) | type flags."""
    r = Rig(TestDev())
    hw0, hw2 = r.device.function.bar_address(0), r.device.function.bar_address(2)
    for off in (0x10, 0x14, 0x18, 0x1C, 0x30):
        r.cfg_write(off, 4, 0xFFFFFFFF)
    assert r.cfg_read(0x10, 4) == (~(0x4000 - 1) & 0xFFFFFFFF)            # 32-bit, non-prefetchable
    assert r.cfg_read(0x14, 4) == 0                                        # no BAR 1
    assert r.cfg_read(0x18, 4) == (~(0x10000 - 1) & 0xFFFFFFF0) | 0x0C     # 64-bit prefetchable, low
    assert r.cfg_read(0x1C, 4) == 0xFFFFFFFF                               # ... and the upper dword
    assert r.cfg_read(0x30, 4) == 0                                        # no ROM
    assert (r.device.function.bar_address(0), r.device.function.bar_address(2)) == (hw0, hw2)
    r.cfg_write(0x10, 4, 0x12345678)
    assert r.cfg_read(0x10, 4) == 0x12344000
    assert r.vdev.bar_restores == 0
    r.close()


def test_bar_restore_after_a_reset_the_host_did_not_see() -> None:
    """vfio_basic_config_write(): a command write finds the real BARs cleared and restores them."""
    r = Rig(TestDev())
    hw = r.device.function.bar_address(0)
    r.device.function.reset("hot")  # behind vfio's back: BARs back to 0
    assert r.device.function.bar_address(0) == 0
    r.cfg_write(4, 2, r.cfg_read(4, 2))
    assert r.device.function.bar_address(0) == hw and r.vdev.bar_restores == 1
    r.close()


def test_hidden_capabilities_and_lspci_of_the_user_view() -> None:
    """PASID has length 0 in pci_ext_cap_length[]: unlinked from PRI's next pointer; lspci agrees."""
    r = Rig(TestDev())
    fn = r.device.function
    ats, pri = fn.caps.find(AtsCap.cap_id, True), fn.caps.find(PriCap.cap_id, True)
    view = user_view(r)
    assert int.from_bytes(view[pri.offset:pri.offset + 4], "little") >> 20 == 0  # PRI is now the last one
    assert int.from_bytes(fn.cs.dump()[pri.offset:pri.offset + 4], "little") >> 20 != 0  # hardware unchanged
    text = run_lspci(format_dump(0, 0, 0x20, view), "-vvv")
    assert "Address Translation Service" in text and "Page Request Interface" in text
    assert "Process Address Space ID" not in text
    pas = fn.caps.find(PasidCap.cap_id, True)
    assert r.cfg_read(pas.offset, 4) == int.from_bytes(fn.cs.dump()[pas.offset:pas.offset + 4], "little")
    assert ats.offset == 0x100
    r.close()


class HiddenFirst(PassiveDevice):
    """A function whose first extended capability (PASID) and one standard one (SSVID) are hidden."""

    def __init__(self) -> None:
        super().__init__(PcieEndpoint(0x1234, 0x0F0F, 0xFF0000, bars=[Bar(0, "mem32", 0x1000)],
                                      caps=[SsvidCap(0x1234, 0x5678), PmCap()],
                                      ext_caps=[PasidCap(8), AtsCap()]))


def test_hidden_first_ext_cap_becomes_a_placeholder_and_std_caps_unlink() -> None:
    """vfio_ecap_init(): a hidden first capability keeps its next pointer with ID 0 / version 0;
    vfio_cap_init(): SSVID (length 0) is unlinked from the standard chain."""
    r = Rig(HiddenFirst())
    fn = r.device.function
    ats = fn.caps.find(AtsCap.cap_id, True)
    assert r.cfg_read(0x100, 4) == ats.offset << 20
    chain, pos = [], r.cfg_read(regs.CAPABILITY_LIST, 1)
    while pos:
        chain.append(r.cfg_read(pos, 1))
        pos = r.cfg_read(pos + 1, 1)
    assert chain == [0x10, 0x01]  # Express, PM; SSVID (0x0d) gone
    raw = run_lspci(format_dump(0, 0, 0x20, fn.cs.dump()), "-vvv")
    text = run_lspci(format_dump(0, 0, 0x20, user_view(r)), "-vvv")
    assert "Capabilities: [7c] Subsystem: Device 1234:5678" in raw and "(PASID)" in raw
    assert "Subsystem: Device 1234:5678" not in text and "(PASID)" not in text
    assert "Capabilities: [108 v1] Address Translation Service (ATS)" in text
    r.close()


def test_read_only_and_virtual_header_fields() -> None:
    r = Rig(TestDev())
    r.cfg_write(0, 4, 0)  # vendor/device: no writable bits
    assert r.cfg_read(0, 4) == 0x7E571234
    r.cfg_write(regs.INTERRUPT_LINE, 1, 0x55)
    assert r.cfg_read(regs.INTERRUPT_LINE, 1) == 0x55
    assert r.device.function.config_read(regs.INTERRUPT_LINE, 1) == 0  # virtual only
    r.cfg_write(regs.INTERRUPT_PIN, 1, 3)
    assert r.cfg_read(regs.INTERRUPT_PIN, 1) == 1
    with pytest.raises(UapiError, match="EFAULT"):  # vfio_pci_config_rw_single(): past cfg_size
        r.df.pread(CFG + 4094, 4)
    r.close()


def test_interrupt_disable_is_emulated() -> None:
    """Interrupt Disable is virtual: writing it masks INTx through vfio_pci_intx_mask()."""
    r = Rig()
    r.cfg_write(4, 2, r.cfg_read(4, 2) | regs.COMMAND_INTX_DISABLE)
    assert r.cfg_read(4, 2) & regs.COMMAND_INTX_DISABLE and r.vdev.irqs.virq_disabled
    assert r.device.function.config_read(4, 2) & regs.COMMAND_INTX_DISABLE  # physical bit follows (PCI 2.3)
    r.cfg_write(4, 2, r.cfg_read(4, 2) & ~regs.COMMAND_INTX_DISABLE)
    assert not r.vdev.irqs.virq_disabled
    assert not r.device.function.config_read(4, 2) & regs.COMMAND_INTX_DISABLE
    r.close()


def test_pm_state_is_trapped_and_memory_goes_away_in_d3hot() -> None:
    """vfio_pm_config_write(): the host changes the state; in D3hot BAR access is EIO."""
    r = Rig(TestDev())
    pm = r.device.function.caps.find(PmCap.cap_id)
    r.cfg_write(pm.offset + 4, 2, 3)
    assert r.vdev.current_state == 3
    with pytest.raises(UapiError, match="EIO"):
        r.rd(0, 0)
    r.cfg_write(pm.offset + 4, 2, 0)
    assert r.vdev.current_state == 0 and r.rd(0, 0) == T.IDENT
    assert r.cfg_read(pm.offset + 2, 2) & 0xF800 == 0  # PME_Support hidden
    r.close()


def test_memory_space_off_is_eio() -> None:
    r = Rig(TestDev())
    r.cfg_write(4, 2, r.cfg_read(4, 2) & ~regs.COMMAND_MEMORY)
    with pytest.raises(UapiError, match="EIO"):
        r.rd(0, 0)
    assert r.vdev.zaps >= 1
    r.cfg_write(4, 2, r.cfg_read(4, 2) | regs.COMMAND_MEMORY)
    assert r.rd(0, 0) == T.IDENT
    r.close()


def test_flr_through_device_control() -> None:
    """vfio_exp_config_write(): the FLR bit is virtual, reads 0, and resets a function with FLR."""
    r = Rig(TestDev())
    e = r.device.function.express_offset
    r.wr(0, T.REG_PASID, 9)
    r.cfg_write(e + 8, 2, r.cfg_read(e + 8, 2) | 0x8000)
    assert r.cfg_read(e + 8, 2) & 0x8000 == 0
    assert r.rd(0, T.REG_PASID) == 0
    r.close()


def test_msi_enable_belongs_to_set_irqs() -> None:
    """vfio_msi_config_write(): Enable stays clear unless SET_IRQS turned MSI on."""
    r = Rig()
    o = r.device.irq.msi_cap.offset
    r.cfg_write(o + msi_regs.FLAGS, 2, msi_regs.FLAGS_ENABLE)
    assert not r.cfg_read(o + msi_regs.FLAGS, 2) & msi_regs.FLAGS_ENABLE
    assert not r.device.irq.msi_enabled
    r.cfg_write(o + msi_regs.ADDRESS_LO, 4, 0xABCDEF00)  # virtual: hardware keeps the host's address
    assert r.cfg_read(o + msi_regs.ADDRESS_LO, 4) == 0xABCDEF00
    assert r.device.function.config_read(o + msi_regs.ADDRESS_LO, 4) != 0xABCDEF00
    r.close()


def test_msi_qmax_lands_on_the_id_byte_as_in_linux() -> None:
    """vfio_msi_config_read() stores msi_qmax << 1 into the 16 bits at vconfig[start]: the ID byte,
    which reads from hardware, so the user's Multiple Message Capable stays the device's value."""
    r = Rig()
    o = r.device.irq.msi_cap.offset
    r.vdev.irqs.msi_qmax = 3
    assert r.cfg_read(o + msi_regs.FLAGS, 2) & msi_regs.FLAGS_QMASK == 0  # the device's 1 vector
    assert r.vdev.config.vconfig[o] == (0x05 & ~0xE) | 3 << 1  # what the kernel wrote
    assert r.cfg_read(o, 1) == 0x05
    r.close()


def test_unassigned_gaps_are_raw() -> None:
    """Bytes no capability owns go straight to the hardware (unassigned_perms)."""
    r = Rig(Edu())
    r.cfg_write(0xF0, 4, 0x11223344)  # RO zero in the model's function
    assert r.cfg_read(0xF0, 4) == r.device.function.config_read(0xF0, 4) == 0
    r.close()


def test_config_errors_beyond_space() -> None:
    r = Rig(Edu())
    with pytest.raises(UapiError) as e:
        r.df.pwrite(CFG + 255, b"ab")
    assert e.value.errno == errno.EFAULT
    r.close()
