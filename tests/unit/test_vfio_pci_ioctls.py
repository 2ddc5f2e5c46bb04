"""Every vfio-pci device ioctl's checks, in the order and with the errno of Linux 7.2
(drivers/vfio/vfio_main.c vfio_device_fops_unl_ioctl / vfio_get_region_info /
vfio_set_irqs_validate_and_prepare / vfio_ioctl_device_feature, drivers/vfio/pci/vfio_pci_core.c
vfio_pci_ioctl_*), the capability chains of GET_REGION_INFO laid out as vfio_info_cap_add() lays them, and
the rule that nothing but UapiError leaves an ioctl."""

from __future__ import annotations

import errno
import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs
from test_vfio_pci_rig import Rig, eventfd, fds

from vfiolab.devices import Device, Edu, TestDev
from vfiolab.errors import UapiError
from vfiolab.pci.caps.msix import MsixCap
from vfiolab.pci.function import Bar, PcieEndpoint
from vfiolab.vfio import uapi as U

NONE_TRIG = U.VFIO_IRQ_SET_DATA_NONE | U.VFIO_IRQ_SET_ACTION_TRIGGER
EFD_TRIG = U.VFIO_IRQ_SET_DATA_EVENTFD | U.VFIO_IRQ_SET_ACTION_TRIGGER


def err(e: int):  # type: ignore[no-untyped-def]
    return pytest.raises(UapiError, match=rf"^{errno.errorcode[e]}:")


class Mixed(Device):
    """BAR0: registers, a RAM page (mappable) and the MSI-X table/PBA -- the layout that needs the whole
    capability chain (SPARSE_MMAP from the model, MSIX_MAPPABLE from vfio_pci_ioctl_get_region_info)."""

    kind = "mixed"

    def __init__(self) -> None:
        fn = PcieEndpoint(0x1234, 0x0042, 0xFF0000, bars=[Bar(0, "mem32", 0x4000)],
                          caps=[MsixCap(4, table_bar=0, table_offset=0x2000, pba_bar=0, pba_offset=0x3000)])
        super().__init__(fn, "mixed")
        self.add_mmio(0, 0, 0x100, lambda o, s: 0x5A, lambda o, s, v: None)
        self.add_ram(0, 0x1000, 0x1000)


# ---------------------------------------------------------------------- before bind, dispatch
def test_nothing_but_bind_before_bind() -> None:
    """vfio_device_fops_unl_ioctl(): !access_granted -> EINVAL (also read/write/mmap)."""
    r = Rig(bind=False)
    for cmd in (U.VFIO_DEVICE_GET_INFO, U.VFIO_DEVICE_RESET, U.VFIO_DEVICE_FEATURE, U.VFIO_DEVICE_ATTACH_IOMMUFD_PT):
        with err(errno.EINVAL):
            r.df.ioctl(cmd, bytes(64))
    with err(errno.EINVAL):
        r.df.pread(0, 4)
    with err(errno.EINVAL):
        r.df.pwrite(0, b"x")
    with err(errno.EINVAL):
        r.df.mmap(0, 4096)
    r.close()


def test_unknown_ioctl_and_null_argument() -> None:
    r = Rig()
    with err(errno.ENOTTY):  # vfio_pci_core_ioctl() default
        r.df.ioctl(U.VFIO_DEVICE_QUERY_GFX_PLANE, bytes(64))
    with err(errno.EFAULT):
        r.df.ioctl(U.VFIO_DEVICE_GET_INFO, None)
    with err(errno.EFAULT):  # copy_from_user of minsz from a 4-byte buffer
        r.df.ioctl(U.VFIO_DEVICE_GET_INFO, bytes(4))
    r.close()


# ---------------------------------------------------------------------- GET_INFO
def test_get_info() -> None:
    r = Rig()
    with err(errno.EINVAL):
        r.df.get_info(argsz=15)
    info = r.df.get_info()
    assert (info.flags, info.num_regions, info.num_irqs) == (U.VFIO_DEVICE_FLAGS_PCI, 9, 5)  # edu: no reset
    short = bytearray(U.vfio_device_info.pack(argsz=16, cap_offset=0xAAAA, pad=0xBBBB))
    r.df.ioctl(U.VFIO_DEVICE_GET_INFO, short)
    assert U.vfio_device_info.unpack(short)["cap_offset"] == 0xAAAA  # minsz = min(argsz, sizeof) written
    r.close()
    t = Rig(TestDev())
    assert t.df.get_info().flags == U.VFIO_DEVICE_FLAGS_PCI | U.VFIO_DEVICE_FLAGS_RESET  # FLR probed at open
    t.close()


# ---------------------------------------------------------------------- GET_REGION_INFO
def test_region_info_basic() -> None:
    r = Rig(TestDev())
    with err(errno.EINVAL):
        r.df.get_region_info(0, argsz=31)
    with err(errno.EINVAL):
        r.df.get_region_info(U.VFIO_PCI_VGA_REGION_INDEX)
    with err(errno.EINVAL):
        r.df.get_region_info(9)
    b0, b1, b2 = (r.df.get_region_info(i) for i in range(3))
    assert (b0.size, b0.flags, b0.offset) == (0x4000, 3, 0)
    assert (b1.size, b1.flags) == (0, 0)  # the upper half of nothing: no BAR 1
    assert b2.size == 0x10000 and b2.flags == 3 | U.VFIO_REGION_INFO_FLAG_MMAP and not b2.caps
    rom, cfg = r.df.get_region_info(6), r.df.get_region_info(7)
    assert (rom.size, rom.flags) == (0, 0)
    assert (cfg.size, cfg.flags, cfg.offset) == (4096, 3, 7 << 40)
    r.close()
    e = Rig()
    assert e.df.get_region_info(7).size == 256  # a conventional function's config space


def test_region_info_capability_chain_two_calls() -> None:
    """vfio_get_region_info(): a short argsz succeeds with CAPS set, the needed argsz and cap_offset 0;
    the retry gets the chain at offset 32, each capability 8-byte aligned and linked by 'next'."""
    r = Rig(Mixed())
    first = r.df.get_region_info(0)
    sparse_size = 8 + 8 + 16  # header, nr_areas/reserved, one area
    assert first.flags & U.VFIO_REGION_INFO_FLAG_CAPS and first.cap_offset == 0
    assert first.argsz == 32 + sparse_size + 8
    full = r.df.get_region_info(0, argsz=first.argsz)
    assert full.cap_offset == 32
    assert [(c.id, c.version, c.offset) for c in full.caps] == [
        (U.VFIO_REGION_INFO_CAP_SPARSE_MMAP, 1, 32), (U.VFIO_REGION_INFO_CAP_MSIX_MAPPABLE, 1, 32 + sparse_size)]
    assert full.sparse_areas() == [(0x1000, 0x1000)]
    assert full.flags == 3 | U.VFIO_REGION_INFO_FLAG_MMAP | U.VFIO_REGION_INFO_FLAG_CAPS
    raw = bytearray(U.vfio_region_info.pack(argsz=200, index=0)) + bytearray(b"\xee" * 168)
    r.df.ioctl(U.VFIO_DEVICE_GET_REGION_INFO, raw)
    assert raw[32 + sparse_size + 8:] == b"\xee" * (200 - 32 - sparse_size - 8)  # nothing past the chain
    r.close()


# ---------------------------------------------------------------------- GET_IRQ_INFO
def test_irq_info() -> None:
    e = Rig()
    with err(errno.EINVAL):
        e.df.get_irq_info(0, argsz=15)
    with err(errno.EINVAL):
        e.df.get_irq_info(5)
    with err(errno.EINVAL):  # ERR only for PCI Express functions
        e.df.get_irq_info(U.VFIO_PCI_ERR_IRQ_INDEX)
    got = [(i.flags, i.count) for i in (e.df.get_irq_info(x) for x in (0, 1, 2, 4))]
    assert got == [(7, 1), (9, 1), (9, 0), (9, 1)]
    e.close()
    t = Rig(TestDev())
    assert t.df.get_irq_info(2).flags == U.VFIO_IRQ_INFO_EVENTFD  # dynamic MSI-X: no NORESIZE
    assert t.df.get_irq_info(2).count == 4 and t.df.get_irq_info(3).count == 1
    t.close()
    n = Rig(TestDev(), dyn_msix=False)
    assert n.df.get_irq_info(2).flags == U.VFIO_IRQ_INFO_EVENTFD | U.VFIO_IRQ_INFO_NORESIZE
    n.close()


# ---------------------------------------------------------------------- SET_IRQS header rules
def test_set_irqs_validation_order() -> None:
    r = Rig(TestDev())
    two_types = U.VFIO_IRQ_SET_DATA_NONE | U.VFIO_IRQ_SET_DATA_BOOL | U.VFIO_IRQ_SET_ACTION_TRIGGER
    two_actions = U.VFIO_IRQ_SET_DATA_NONE | U.VFIO_IRQ_SET_ACTION_MASK | U.VFIO_IRQ_SET_ACTION_UNMASK
    none_mask = U.VFIO_IRQ_SET_DATA_NONE | U.VFIO_IRQ_SET_ACTION_MASK
    none_unmask = U.VFIO_IRQ_SET_DATA_NONE | U.VFIO_IRQ_SET_ACTION_UNMASK
    # (index, flags, start, count, data, argsz, errno)
    cases = [
        (0, NONE_TRIG, 0, 0, b"", 19, errno.EINVAL),                  # argsz < minsz
        (5, NONE_TRIG, 0, 0, b"", None, errno.EINVAL),                # index >= VFIO_PCI_NUM_IRQS
        (2, NONE_TRIG, 1, 0xFFFFFFFE, b"", None, errno.EINVAL),       # count >= U32_MAX - start
        (0, NONE_TRIG | 0x40, 0, 0, b"", None, errno.EINVAL),         # unknown flag
        (2, NONE_TRIG, 4, 0, b"", None, errno.EINVAL),                # start >= num_irqs
        (2, NONE_TRIG, 2, 3, b"", None, errno.EINVAL),                # start + count > num_irqs
        (0, two_types, 0, 1, b"", None, errno.EINVAL),                # two data types
        (2, EFD_TRIG, 0, 2, fds(-1), None, errno.EINVAL),             # data shorter than count
        (0, two_actions, 0, 1, b"", None, errno.ENOTTY),              # two actions: no handler
        (2, none_mask, 0, 1, b"", None, errno.ENOTTY),                # MSI-X mask: not exported
        (0, none_unmask, 0, 1, b"", None, errno.EINVAL),              # unmask before INTx is on
        (0, NONE_TRIG, 0, 1, b"", None, errno.EINVAL),                # loopback before INTx is on
        (4, NONE_TRIG, 0, 1, b"", None, errno.EINVAL),                # REQ loopback without eventfd
    ]
    for index, flags, start, n, data, argsz, want in cases:
        with err(want):
            r.df.set_irqs(index, flags, start, n, data, argsz=argsz)
    r.close()


def test_set_irqs_eventfd_checks() -> None:
    r = Rig(TestDev())
    rd, wr = os.pipe()
    closed = os.open(os.devnull, os.O_RDONLY)
    os.close(closed)  # a descriptor number known to be closed now
    with err(errno.EBADF):
        r.df.set_irqs(0, EFD_TRIG, 0, 1, fds(closed))
    with err(errno.EINVAL):  # eventfd_ctx_fdget(): not an eventfd
        r.df.set_irqs(0, EFD_TRIG, 0, 1, fds(rd))
    efd = eventfd()
    assert r.df.set_irqs(2, EFD_TRIG, 0, 1, fds(efd)) == 0
    with err(errno.EINVAL):  # INTx while MSI-X is on
        r.df.set_irqs(0, EFD_TRIG, 0, 1, fds(efd))
    with err(errno.EINVAL):  # testdev has no MSI: index 1 has 0 vectors
        r.df.set_irqs(1, EFD_TRIG, 0, 1, fds(efd))
    r.df.set_irqs(2, NONE_TRIG, 0, 0)  # MSI-X off
    r.df.set_irqs(0, EFD_TRIG, 0, 1, fds(efd))
    with err(errno.ENOTTY):  # INTx mask by eventfd: "XXX implement me"
        r.df.set_irqs(0, U.VFIO_IRQ_SET_DATA_EVENTFD | U.VFIO_IRQ_SET_ACTION_MASK, 0, 1, fds(efd))
    for fd in (rd, wr, efd):
        os.close(fd)
    r.close()


_FUZZ: list[Rig] = []


@settings(max_examples=60, deadline=None)
@given(index=hs.integers(0, 6), flags=hs.integers(0, 0x7F), start=hs.integers(0, 6), count=hs.integers(0, 6),
       data=hs.binary(max_size=24))
def test_set_irqs_fuzz_only_uapi_errors(index: int, flags: int, start: int, count: int, data: bytes) -> None:
    """Random SET_IRQS headers and data: success or UapiError, never anything else (decision 3)."""
    if not _FUZZ:
        _FUZZ.append(Rig(TestDev()))
    r = _FUZZ[0]
    try:
        r.df.set_irqs(index, flags, start, count, data)
    except UapiError:
        pass
    if r.vdev.irqs.irq_type < U.VFIO_PCI_ERR_IRQ_INDEX:  # back to no interrupts for the next example
        r.df.set_irqs(r.vdev.irqs.irq_type, NONE_TRIG, 0, 0)


# ---------------------------------------------------------------------- RESET
def test_reset_needs_a_method() -> None:
    """vfio_pci_ioctl_reset(): EINVAL unless reset_works (edu on a root bus has no FLR/PM/bus reset)."""
    e = Rig()
    with err(errno.EINVAL):
        e.df.reset()
    e.close()
    t = Rig(TestDev())
    t.bus_master()
    t.wr(0, 0x0C, 0x55)  # PASID register
    t.df.reset()
    assert t.rd(0, 0x0C) == 0  # FLR reset the registers ...
    assert t.cfg_read(4, 2) & 0x4  # ... and pci_restore_state() brought Bus Master back
    t.close()


# ---------------------------------------------------------------------- FEATURE
def test_feature_generic_checks() -> None:
    r = Rig(TestDev())
    f = U.VFIO_DEVICE_FEATURE
    with err(errno.EINVAL):  # argsz < minsz
        r.df.ioctl(f, U.vfio_device_feature.pack(argsz=7, flags=U.VFIO_DEVICE_FEATURE_GET))
    with err(errno.EINVAL):  # unknown flag bits
        r.df.feature(U.VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY | 1 << 19)
    with err(errno.EINVAL):  # GET and SET without PROBE
        r.df.feature(U.VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY | U.VFIO_DEVICE_FEATURE_GET | U.VFIO_DEVICE_FEATURE_SET)
    with err(errno.EINVAL):  # vfio_check_feature(): GET not supported by LOW_POWER_ENTRY
        r.df.feature(U.VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY | U.VFIO_DEVICE_FEATURE_GET)
    with err(errno.EINVAL):  # neither GET nor SET
        r.df.feature(U.VFIO_DEVICE_FEATURE_LOW_POWER_EXIT)
    assert r.df.feature(U.VFIO_DEVICE_FEATURE_LOW_POWER_EXIT | U.VFIO_DEVICE_FEATURE_PROBE
                        | U.VFIO_DEVICE_FEATURE_SET) == b""
    with err(errno.ENOTTY):  # not an SR-IOV PF
        r.df.feature(U.VFIO_DEVICE_FEATURE_PCI_VF_TOKEN | U.VFIO_DEVICE_FEATURE_SET, bytes(16))
    with err(errno.ENOTTY):  # no mig_ops
        r.df.feature(U.VFIO_DEVICE_FEATURE_MIGRATION | U.VFIO_DEVICE_FEATURE_GET, bytes(8))
    with err(errno.ENOTTY):  # no log_ops
        r.df.feature(U.VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP | U.VFIO_DEVICE_FEATURE_SET)
    with err(errno.ENOTTY):  # BUS_MASTER is CDX only
        r.df.feature(U.VFIO_DEVICE_FEATURE_BUS_MASTER | U.VFIO_DEVICE_FEATURE_SET, bytes(4))
    with err(errno.EINVAL):  # WITH_WAKEUP: argsz below the payload
        r.df.feature(U.VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP | U.VFIO_DEVICE_FEATURE_SET, bytes(4))
    with err(errno.EINVAL):  # wakeup_eventfd < 0
        r.df.feature(U.VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP | U.VFIO_DEVICE_FEATURE_SET,
                     struct.pack("<iI", -1, 0))
    r.close()


# ---------------------------------------------------------------------- IOEVENTFD
def test_ioeventfd_rules_and_write() -> None:
    r = Rig(TestDev())
    st = U.vfio_device_ioeventfd

    def ioev(offset: int, data: int, flags: int, fd: int, argsz: int = st.size) -> None:
        r.df.ioctl(U.VFIO_DEVICE_IOEVENTFD, st.pack(argsz=argsz, flags=flags, offset=offset, data=data, fd=fd))

    efd = eventfd()
    with err(errno.EINVAL):
        ioev(0x0C, 1, U.VFIO_DEVICE_IOEVENTFD_32, efd, argsz=27)  # minsz = offsetofend(fd) = 28
    with err(errno.EINVAL):
        ioev(0x0C, 1, 0x10, efd)
    with err(errno.EINVAL):  # two size bits
        ioev(0x0C, 1, U.VFIO_DEVICE_IOEVENTFD_32 | U.VFIO_DEVICE_IOEVENTFD_16, efd)
    with err(errno.EINVAL):  # fd < -1
        ioev(0x0C, 1, U.VFIO_DEVICE_IOEVENTFD_32, -2)
    with err(errno.EINVAL):  # config space is not a BAR
        ioev(7 << 40, 1, U.VFIO_DEVICE_IOEVENTFD_32, efd)
    with err(errno.EINVAL):  # over the MSI-X table
        ioev(0x2000, 1, U.VFIO_DEVICE_IOEVENTFD_32, efd)
    with err(errno.EINVAL):  # 8-byte ioeventfds are refused
        ioev(0x10, 1, U.VFIO_DEVICE_IOEVENTFD_64, efd)
    with err(errno.ENODEV):  # removing one that does not exist
        ioev(0x0C, 1, U.VFIO_DEVICE_IOEVENTFD_32, -1)
    ioev(0x0C, 0x77, U.VFIO_DEVICE_IOEVENTFD_32, efd)
    with err(errno.EEXIST):
        ioev(0x0C, 0x77, U.VFIO_DEVICE_IOEVENTFD_32, efd)
    os.eventfd_write(efd, 1)  # the user (or KVM) signals: the write happens
    r.df.get_info()
    assert r.rd(0, 0x0C) == 0x77
    ioev(0x0C, 0x77, U.VFIO_DEVICE_IOEVENTFD_32, -1)
    os.close(efd)
    r.close()


# ---------------------------------------------------------------------- hot reset on a root bus
def test_hot_reset_needs_a_bridge() -> None:
    r = Rig()
    st = U.vfio_pci_hot_reset_info
    with err(errno.EINVAL):
        r.df.ioctl(U.VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, st.pack(argsz=11))
    with err(errno.ENODEV):  # neither slot nor bus reset on a root bus
        r.df.ioctl(U.VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, st.pack(argsz=st.size))
    h = U.vfio_pci_hot_reset
    with err(errno.EINVAL):  # flags must be 0
        r.df.ioctl(U.VFIO_DEVICE_PCI_HOT_RESET, h.pack(argsz=h.size, flags=1))
    with err(errno.EINVAL):  # a cdev-opened device passes no group fds
        r.df.ioctl(U.VFIO_DEVICE_PCI_HOT_RESET, h.pack(argsz=h.size + 4, count=1) + fds(3))
    with err(errno.ENODEV):
        r.df.ioctl(U.VFIO_DEVICE_PCI_HOT_RESET, h.pack(argsz=h.size))
    r.close()


def test_edu_is_not_pcie_err_index_has_no_vectors() -> None:
    e = Rig(Edu())
    with err(errno.EINVAL):  # num_irqs of ERR is 0 on a conventional function: start >= 0 fails first
        e.df.set_irqs(U.VFIO_PCI_ERR_IRQ_INDEX, EFD_TRIG, 0, 1, fds(0))
    e.close()
