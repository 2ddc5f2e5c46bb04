"""vfio-pci features and resets: runtime low power (LOW_POWER_ENTRY[_WITH_WAKEUP]/EXIT of
vfio_pci_core.c: suspended to D3hot between accesses, woken by any access, the wake-up eventfd signalled
once), the reset method chosen as __pci_reset_function_locked() does (FLR, PM, secondary bus reset),
migration of a device through VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE with the device's save/load, and DMA
logging through the device's page tracker; then a fuzz proving only UapiError leaves an ioctl."""

from __future__ import annotations

import os
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs
from test_vfio_pci_rig import Rig, behind_root_port, count, eventfd

from vfiolab.devices import Edu, PassiveDevice, TestDev
from vfiolab.devices import edu as E
from vfiolab.devices import testdev as T
from vfiolab.errors import UapiError
from vfiolab.pci.caps.pm import PmCap
from vfiolab.pci.function import ConventionalDevice
from vfiolab.vfio import uapi as U
from vfiolab.vfio.migration import MigState

SET = U.VFIO_DEVICE_FEATURE_SET
GET = U.VFIO_DEVICE_FEATURE_GET


def pm_state(r: Rig) -> int:
    pm = r.device.function.caps.find(PmCap.cap_id)
    return r.device.function.config_read(pm.offset + 4, 2) & 3


# ---------------------------------------------------------------------- low power
def test_low_power_entry_and_exit() -> None:
    r = Rig(TestDev())
    r.df.feature(U.VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY | SET)
    assert r.vdev.runtime_suspended and pm_state(r) == 3
    assert r.rd(0, T.REG_ID) == T.IDENT  # an access wakes the device ...
    assert r.vdev.runtime_suspended and pm_state(r) == 3  # ... which idles back afterwards
    with pytest.raises(UapiError, match="EINVAL"):  # already engaged
        r.df.feature(U.VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY | SET)
    r.df.feature(U.VFIO_DEVICE_FEATURE_LOW_POWER_EXIT | SET)
    assert not r.vdev.runtime_suspended and pm_state(r) == 0 and not r.vdev.pm_runtime_engaged
    r.df.feature(U.VFIO_DEVICE_FEATURE_LOW_POWER_EXIT | SET)  # exiting twice is fine
    r.close()


def test_low_power_wakeup_eventfd_is_single_shot() -> None:
    r = Rig(TestDev())
    efd = eventfd()
    r.df.feature(U.VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP | SET, struct.pack("<iI", efd, 0))
    assert r.vdev.runtime_suspended
    r.df.get_info()  # any ioctl resumes the device: wake-up signalled, low power left
    assert count(efd) == 1 and not r.vdev.pm_runtime_engaged
    r.df.get_info()
    assert count(efd) == 0 and not r.vdev.runtime_suspended
    with pytest.raises(UapiError, match="EBADF"):
        r.df.feature(U.VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP | SET, struct.pack("<iI", 999, 0))
    os.close(efd)
    r.close()


def test_low_power_masks_intx_while_suspended() -> None:
    """vfio_pci_core_runtime_suspend(): INTx masked in suspend, unmasked on resume."""
    r = Rig(Edu())
    efd = eventfd()
    r.set_irqs(0, U.VFIO_IRQ_SET_DATA_EVENTFD | U.VFIO_IRQ_SET_ACTION_TRIGGER, 0, 1, struct.pack("<i", efd))
    r.df.feature(U.VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY | SET)
    assert r.vdev.pm_intx_masked and r.vdev.irqs.ctx[0].masked
    r.wr(0, E.REG_IRQ_RAISE, 1)  # woken, raised, signalled; masked again when it idles
    assert count(efd) == 1
    os.close(efd)
    r.close()


# ---------------------------------------------------------------------- reset methods
def test_reset_methods_in_kernel_order() -> None:
    """pci_reset_fn_methods[]: flr before pm before bus; none -> no VFIO_DEVICE_FLAGS_RESET."""
    t = Rig(TestDev())
    assert t.vdev._reset_methods() == ["flr"]  # NoSoftRst+ rules PM reset out
    t.close()
    pm_dev = PassiveDevice(ConventionalDevice(0x1234, 0x0001, 0xFF0000, caps=[PmCap(no_soft_reset=False)]))
    p = Rig(pm_dev)
    assert p.vdev._reset_methods() == ["pm"]
    assert p.df.get_info().flags & U.VFIO_DEVICE_FLAGS_RESET
    p.close()
    alone = Edu()
    behind_root_port(alone)
    b = Rig(alone, rid=0x100)
    assert b.vdev._reset_methods() == ["bus"]
    b.wr(0, E.REG_LIVENESS, 0)
    b.cfg_write(4, 2, b.cfg_read(4, 2) | 0x4)
    b.df.reset()  # a secondary bus reset; edu keeps its registers like QEMU's, config state restored
    assert b.rd(0, E.REG_LIVENESS) == 0xFFFFFFFF and b.cfg_read(4, 2) & 0x4
    b.close()


def test_pm_reset_resets_the_function() -> None:
    """pci_pm_reset(): D3hot and back with NoSoftRst- is an internal reset (PCI PM 1.2 §5.4)."""
    dev = PassiveDevice(ConventionalDevice(0x1234, 0x0001, 0xFF0000, caps=[PmCap(no_soft_reset=False)]))
    resets: list[str] = []
    dev.function.add_reset_listener(resets.append)
    r = Rig(dev)
    resets.clear()
    r.df.reset()
    assert resets == ["flr"] and r.vdev.current_state == 0
    r.close()


# ---------------------------------------------------------------------- migration through the feature
def test_migration_of_edu_through_mig_device_state() -> None:
    src = Rig(Edu(), migration_flags=1)
    dst = Rig(Edu(), mem=src.mem, unit=src.unit, rid=0x28, migration_flags=1)
    assert src.df.feature(U.VFIO_DEVICE_FEATURE_MIGRATION | GET, bytes(8)) == struct.pack("<Q", 1)
    src.wr(0, E.REG_LIVENESS, 0x1234)
    src.device.hold = True
    src.wr(0, E.REG_FACT, 7)  # in flight when the device stops

    def set_state(r: Rig, state: int) -> int:
        out = r.df.feature(U.VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE | SET, struct.pack("<Ii", state, -1))
        return struct.unpack("<Ii", out)[1]

    fd = set_state(src, MigState.STOP_COPY)
    assert fd >= 0 and not src.device.running
    f = src.task.fds[fd]
    stream = b""
    while chunk := f.read(4096):
        stream += chunk
    wfd = set_state(dst, MigState.RESUMING)
    assert dst.task.fds[wfd].write(stream) == len(stream)
    assert set_state(dst, MigState.STOP) == -1
    set_state(dst, MigState.RUNNING)
    dst.device.hold = False
    assert dst.rd(0, E.REG_LIVENESS) == ~0x1234 & 0xFFFFFFFF
    assert dst.rd(0, E.REG_FACT) == 5040 and dst.rd(0, E.REG_STATUS) & E.STATUS_COMPUTING == 0
    bad = Rig(TestDev(), mem=src.mem, unit=src.unit, rid=0x30, migration_flags=1)
    bfd = set_state(bad, MigState.RESUMING)
    bad.task.fds[bfd].write(stream)
    with pytest.raises(UapiError, match="EINVAL"):  # an edu state refused by testdev
        set_state(bad, MigState.STOP)
    for r in (src, dst, bad):
        r.close()


# ---------------------------------------------------------------------- DMA logging
def test_dma_logging_through_the_device_tracker() -> None:
    r = Rig(TestDev(), dma_logging=True)
    r.attach()
    r.map(0x10_0000, 0x8000)
    r.bus_master()
    ranges = r.proc.mmap(4096)
    r.proc.write(ranges, struct.pack("<QQ", 0x10_0000, 0x8000))
    out = r.df.feature(U.VFIO_DEVICE_FEATURE_DMA_LOGGING_START | SET, struct.pack("<QIIQ", 0x1000, 1, 0, ranges))
    assert struct.unpack("<Q", out[:8])[0] == 0x1000
    for iova in (0x10_1000, 0x10_3FF0):  # the second write straddles two pages
        r.wr(0, T.REG_IOVA, iova, 8)
        r.wr(0, T.REG_LENGTH, 0x20)
        r.wr(0, T.REG_CMD, T.CMD_WRITE)
    bitmap = r.proc.mmap(4096)
    r.df.feature(U.VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT | GET,
                 struct.pack("<QQQQ", 0x10_0000, 0x8000, 0x1000, bitmap))
    bits = np.unpackbits(np.frombuffer(r.proc.read(bitmap, 1), dtype=np.uint8), bitorder="little")
    assert np.flatnonzero(bits).tolist() == [1, 3, 4]
    r.df.feature(U.VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP | SET)
    r.close()


# ---------------------------------------------------------------------- only UapiError
_R: list[Rig] = []


@settings(max_examples=80, deadline=None)
@given(nr=hs.integers(0, 30), payload=hs.binary(min_size=0, max_size=48))
def test_random_ioctls_fail_only_with_uapi_errors(nr: int, payload: bytes) -> None:
    if not _R:
        _R.append(Rig(TestDev()))
    r = _R[0]
    cmd = U.VFIO_TYPE << 8 | (U.VFIO_BASE + nr)  # _IO(VFIO_TYPE, VFIO_BASE + nr)
    try:
        r.df.ioctl(cmd, bytearray(payload))
    except UapiError:
        pass
    if r.vdev.irqs.irq_type < 3:
        r.set_irqs(r.vdev.irqs.irq_type, U.VFIO_IRQ_SET_DATA_NONE | U.VFIO_IRQ_SET_ACTION_TRIGGER, 0, 0)
