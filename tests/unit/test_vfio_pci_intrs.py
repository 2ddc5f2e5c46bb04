"""vfio-pci interrupts delivered through real eventfds (drivers/vfio/pci/vfio_pci_intrs.c): INTx with
automasking at the device and UNMASK (by ioctl and by unmask eventfd), loopback triggers, MSI and MSI-X
with the host programming the device's capability/table, dynamic MSI-X allocation, the MSI-X table hidden
from region access, ERR/REQ eventfds, and teardown on close."""

from __future__ import annotations

import errno
import os

import pytest
from test_vfio_pci_rig import Rig, count, eventfd, fds

from vfiolab.devices import TestDev
from vfiolab.devices import edu as E
from vfiolab.devices import testdev as T
from vfiolab.errors import UapiError
from vfiolab.pci import regs
from vfiolab.pci.caps import msi as msi_regs
from vfiolab.vfio import uapi as U
from vfiolab.vfio.device import bools

EFD_TRIG = U.VFIO_IRQ_SET_DATA_EVENTFD | U.VFIO_IRQ_SET_ACTION_TRIGGER
NONE_TRIG = U.VFIO_IRQ_SET_DATA_NONE | U.VFIO_IRQ_SET_ACTION_TRIGGER
BOOL_TRIG = U.VFIO_IRQ_SET_DATA_BOOL | U.VFIO_IRQ_SET_ACTION_TRIGGER
NONE_UNMASK = U.VFIO_IRQ_SET_DATA_NONE | U.VFIO_IRQ_SET_ACTION_UNMASK
NONE_MASK = U.VFIO_IRQ_SET_DATA_NONE | U.VFIO_IRQ_SET_ACTION_MASK


def test_intx_automask_and_unmask() -> None:
    r = Rig()
    efd = eventfd()
    r.set_irqs(0, EFD_TRIG, 0, 1, fds(efd))
    r.wr(0, E.REG_IRQ_RAISE, 1)
    assert count(efd) == 1
    fn = r.device.function
    assert fn.config_read(4, 2) & regs.COMMAND_INTX_DISABLE  # masked at the device (pci_check_and_mask_intx)
    r.wr(0, E.REG_IRQ_RAISE, 2)  # still masked: nothing new
    assert count(efd) == 0
    r.set_irqs(0, NONE_UNMASK, 0, 1)  # the level is still high: re-signalled, stays masked
    assert count(efd) == 1 and fn.config_read(4, 2) & regs.COMMAND_INTX_DISABLE
    r.wr(0, E.REG_IRQ_ACK, 3)
    r.set_irqs(0, NONE_UNMASK, 0, 1)
    assert count(efd) == 0 and not fn.config_read(4, 2) & regs.COMMAND_INTX_DISABLE
    r.wr(0, E.REG_IRQ_RAISE, 4)
    assert count(efd) == 1
    r.set_irqs(0, NONE_TRIG, 0, 0)  # count 0 + DATA_NONE disables INTx
    assert r.vdev.irqs.irq_type == U.VFIO_PCI_NUM_IRQS
    os.close(efd)
    r.close()


def test_intx_mask_loopback_and_bool_data() -> None:
    r = Rig()
    efd = eventfd()
    r.set_irqs(0, EFD_TRIG, 0, 1, fds(efd))
    r.set_irqs(0, NONE_TRIG, 0, 1)  # loopback
    r.set_irqs(0, BOOL_TRIG, 0, 1, bools(False))
    r.set_irqs(0, BOOL_TRIG, 0, 1, bools(True))
    assert count(efd) == 2
    r.set_irqs(0, U.VFIO_IRQ_SET_DATA_BOOL | U.VFIO_IRQ_SET_ACTION_MASK, 0, 1, bools(True))
    r.wr(0, E.REG_IRQ_RAISE, 1)
    assert count(efd) == 0
    r.set_irqs(0, NONE_UNMASK, 0, 1)
    assert count(efd) == 1
    r.set_irqs(0, EFD_TRIG, 0, 1, fds(-1))  # de-assign: INTx stays enabled without an eventfd
    r.set_irqs(0, NONE_TRIG, 0, 1)
    assert count(efd) == 0 and r.vdev.irqs.is_intx()
    os.close(efd)
    r.close()


def test_intx_unmask_eventfd() -> None:
    """vfio_pci_set_intx_unmask() with DATA_EVENTFD: writing that eventfd unmasks (virqfd)."""
    r = Rig()
    trig, unmask = eventfd(), eventfd()
    r.set_irqs(0, EFD_TRIG, 0, 1, fds(trig))
    r.set_irqs(0, U.VFIO_IRQ_SET_DATA_EVENTFD | U.VFIO_IRQ_SET_ACTION_UNMASK, 0, 1, fds(unmask))
    with pytest.raises(UapiError) as e:
        r.set_irqs(0, U.VFIO_IRQ_SET_DATA_EVENTFD | U.VFIO_IRQ_SET_ACTION_UNMASK, 0, 1, fds(unmask))
    assert e.value.errno == errno.EBUSY
    r.wr(0, E.REG_IRQ_RAISE, 1)
    assert count(trig) == 1
    r.wr(0, E.REG_IRQ_ACK, 1)
    os.eventfd_write(unmask, 1)
    r.wr(0, E.REG_IRQ_RAISE, 1)  # the unmask ran before this access: the new edge is delivered
    assert count(trig) == 1
    r.set_irqs(0, U.VFIO_IRQ_SET_DATA_EVENTFD | U.VFIO_IRQ_SET_ACTION_UNMASK, 0, 1, fds(-1))
    os.close(trig)
    os.close(unmask)
    r.close()


def test_intx_virtual_disable_holds_delivery() -> None:
    """Command.Interrupt Disable written by the user masks INTx (virq_disabled); clearing it delivers."""
    r = Rig()
    efd = eventfd()
    r.set_irqs(0, EFD_TRIG, 0, 1, fds(efd))
    r.cfg_write(4, 2, r.cfg_read(4, 2) | regs.COMMAND_INTX_DISABLE)
    r.wr(0, E.REG_IRQ_RAISE, 1)
    assert count(efd) == 0
    r.cfg_write(4, 2, r.cfg_read(4, 2) & ~regs.COMMAND_INTX_DISABLE)
    assert count(efd) == 1
    os.close(efd)
    r.close()


def test_msi_on_edu() -> None:
    """vfio_msi_enable(): the host programs the MSI capability; edu raises MSI once Enable is set."""
    r = Rig()
    efd = eventfd()
    r.set_irqs(1, EFD_TRIG, 0, 1, fds(efd))
    o = r.device.irq.msi_cap.offset
    fn = r.device.function
    assert fn.config_read(o + msi_regs.FLAGS, 2) & msi_regs.FLAGS_ENABLE
    assert fn.config_read(o + msi_regs.ADDRESS_LO, 4) == 0xFEE00000
    # pci_intx_for_msi() set Interrupt Disable inside pci_alloc_irq_vectors(), but vfio_msi_enable() then
    # writes back the command word it saved in vfio_pci_memory_lock_and_enable(): the bit is clear again.
    assert not fn.config_read(4, 2) & regs.COMMAND_INTX_DISABLE
    r.wr(0, E.REG_IRQ_RAISE, 1)
    r.wr(0, E.REG_IRQ_RAISE, 1)
    assert count(efd) == 2
    with pytest.raises(UapiError, match="EINVAL"):  # INTx while MSI is on
        r.set_irqs(0, EFD_TRIG, 0, 1, fds(efd))
    r.set_irqs(1, NONE_TRIG, 0, 1)  # loopback on MSI
    assert count(efd) == 1
    r.set_irqs(1, NONE_TRIG, 0, 0)
    assert not fn.config_read(o + msi_regs.FLAGS, 2) & msi_regs.FLAGS_ENABLE
    os.close(efd)
    r.close()


def test_msix_vectors_dynamic_allocation_and_table_hidden() -> None:
    r = Rig(TestDev())
    r.bus_master()
    e0, e2 = eventfd(), eventfd()
    r.set_irqs(2, EFD_TRIG, 0, 1, fds(e0))
    assert r.vdev.msix_data.keys() == {0}
    r.set_irqs(2, EFD_TRIG, 2, 1, fds(e2))  # has_dyn_msix: allocated at vector 2 on demand
    assert r.vdev.msix_data.keys() == {0, 2}
    table = r.device.read_bar(0, T.MSIX_TABLE, 64)
    assert int.from_bytes(table[32:36], "little") == 0xFEE00000 and table[44] == 0  # unmasked by request_irq
    assert r.df.pread(U.vfio_pci_index_to_offset(0) + T.MSIX_TABLE, 16) == b"\xff" * 16
    r.df.pwrite(U.vfio_pci_index_to_offset(0) + T.MSIX_TABLE + 8, b"\0\0\0\0")
    assert r.device.read_bar(0, T.MSIX_TABLE + 32, 12) == table[32:44]  # writes dropped
    r.set_irqs(2, NONE_TRIG, 2, 1)
    assert count(e2) == 1 and count(e0) == 0
    r.set_irqs(2, BOOL_TRIG, 0, 3, bools(True, True, False))  # vector 1 has no eventfd: skipped
    assert (count(e0), count(e2)) == (1, 0)
    r.wr(0, T.REG_VECTOR, 2)  # the device's completion interrupt on vector 2
    r.wr(0, T.REG_CTRL, T.CTRL_IRQ_ERROR)
    r.wr(0, T.REG_LENGTH, 1 << 20)  # beyond the buffer: the command fails with an interrupt
    r.wr(0, T.REG_CMD, T.CMD_READ)
    assert r.rd(0, T.REG_STATUS) & T.STATUS_ERROR and count(e2) == 1
    r.set_irqs(2, EFD_TRIG, 2, 1, fds(-1))  # vector 2 freed: masked at the device ...
    r.wr(0, T.REG_CMD, T.CMD_READ)
    assert count(e2) == 0
    assert r.rd(0, T.MSIX_PBA, 8) == 1 << 2  # ... and its message pends in the PBA, readable by the user
    r.set_irqs(2, NONE_TRIG, 0, 0)
    assert r.vdev.irqs.irq_type == U.VFIO_PCI_NUM_IRQS
    for fd in (e0, e2):
        os.close(fd)
    r.close()


def test_msix_without_dynamic_allocation() -> None:
    """Without dynamic MSI-X the vectors of the first SET_IRQS are all there is (EINVAL beyond)."""
    r = Rig(TestDev(), dyn_msix=False)
    efd = eventfd()
    r.set_irqs(2, EFD_TRIG, 0, 1, fds(efd))
    with pytest.raises(UapiError, match="EINVAL"):
        r.set_irqs(2, EFD_TRIG, 1, 1, fds(efd))
    assert r.vdev.irqs.ctx.keys() == {0}  # the failed block left vector 0 alone
    os.close(efd)
    r.close()


def test_err_and_req_eventfds() -> None:
    """vfio_pci_set_ctx_trigger_single(): eventfd set/replace/release, NONE/BOOL loopback."""
    r = Rig(TestDev())
    a, b = eventfd(), eventfd()
    for index in (U.VFIO_PCI_ERR_IRQ_INDEX, U.VFIO_PCI_REQ_IRQ_INDEX):
        r.set_irqs(index, EFD_TRIG, 0, 1, fds(a))
        r.set_irqs(index, NONE_TRIG, 0, 1)
        assert count(a) == 1
        r.set_irqs(index, EFD_TRIG, 0, 1, fds(b))  # replace
        r.set_irqs(index, BOOL_TRIG, 0, 1, bools(True))
        assert (count(a), count(b)) == (0, 1)
        with pytest.raises(UapiError, match="EINVAL"):
            r.set_irqs(index, BOOL_TRIG, 0, 0)
        with pytest.raises(UapiError, match="EINVAL"):
            r.set_irqs(index, EFD_TRIG, 0, 1, fds(-2))
        r.set_irqs(index, NONE_TRIG, 0, 0)  # release
        with pytest.raises(UapiError, match="EINVAL"):
            r.set_irqs(index, NONE_TRIG, 0, 1)
    with pytest.raises(UapiError, match="ENOTTY"):  # only TRIGGER exists for ERR
        r.set_irqs(U.VFIO_PCI_ERR_IRQ_INDEX, NONE_UNMASK, 0, 1)
    for fd in (a, b):
        os.close(fd)
    r.close()


def test_close_tears_interrupts_down() -> None:
    """vfio_pci_core_disable(): interrupts off; the eventfds the kernel held are released."""
    r = Rig(TestDev())
    efd = eventfd()
    r.set_irqs(2, EFD_TRIG, 0, 2, fds(efd, efd))
    held = [c.trigger.fd for c in r.vdev.irqs.ctx.values()]
    r.df.close()
    assert r.vdev.irqs.irq_type == U.VFIO_PCI_NUM_IRQS and not r.vdev.irqs.ctx
    for fd in held:
        with pytest.raises(OSError):
            os.fstat(fd)
    assert not r.device.irq.msix_enabled
    os.close(efd)
    r.ictx.close()
    r.vdev.unregister()
