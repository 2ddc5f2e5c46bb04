"""Device DMA through vfio-pci and iommufd: edu driven the way QEMU's edu Linux driver and tests drive it
(identification, liveness, factorial, interrupts, DMA both ways into memory mapped through an IOAS), and
testdev exercising the IOMMU from the device side: RID DMA, faults, the ATC (ATS) and its invalidation on
unmap, PASID attach/replace/detach, and a PRI page request on an unmapped page answered by userspace
through an iommufd fault queue after mapping the page."""

from __future__ import annotations

import errno
import math
import os

import numpy as np
import pytest
from test_vfio_pci_rig import Rig, behind_root_port, count, eventfd, fds

from vfiolab.devices import Edu, TestDev
from vfiolab.devices import edu as E
from vfiolab.devices import testdev as T
from vfiolab.errors import UapiError
from vfiolab.iommufd import uapi as IU
from vfiolab.vfio import uapi as U

EFD_TRIG = U.VFIO_IRQ_SET_DATA_EVENTFD | U.VFIO_IRQ_SET_ACTION_TRIGGER
IOVA = 0x10_0000


# ---------------------------------------------------------------------- edu
def test_edu_like_its_linux_test() -> None:
    r = Rig(Edu())
    r.attach()
    assert r.rd(0, E.REG_IDENT) == 0x010000ED
    for v in (0, 0x12345678, 0xFFFFFFFF):
        r.wr(0, E.REG_LIVENESS, v)
        assert r.rd(0, E.REG_LIVENESS) == ~v & 0xFFFFFFFF
    efd = eventfd()
    r.set_irqs(U.VFIO_PCI_MSI_IRQ_INDEX, EFD_TRIG, 0, 1, fds(efd))
    r.wr(0, E.REG_STATUS, E.STATUS_IRQFACT)
    r.wr(0, E.REG_FACT, 10)
    while r.rd(0, E.REG_STATUS) & E.STATUS_COMPUTING:
        pass
    assert r.rd(0, E.REG_FACT) == math.factorial(10) and count(efd) == 1
    assert r.rd(0, E.REG_IRQ_STATUS) == E.FACT_IRQ
    r.wr(0, E.REG_IRQ_ACK, E.FACT_IRQ)
    r.wr(0, E.REG_IRQ_RAISE, 0x80000000)
    assert count(efd) == 1 and r.rd(0, E.REG_IRQ_STATUS) == 0x80000000
    os.close(efd)
    r.close()


def test_edu_dma_both_ways_through_the_ioas() -> None:
    r = Rig(Edu())
    r.attach()
    pattern = bytes(range(256)) * 4
    va = r.map(IOVA, 0x4000, pattern)
    r.bus_master()
    efd = eventfd()
    r.set_irqs(U.VFIO_PCI_INTX_IRQ_INDEX, EFD_TRIG, 0, 1, fds(efd))
    r.wr(0, E.REG_DMA_SRC, IOVA + 0x10, 8)
    r.wr(0, E.REG_DMA_DST, E.DMA_START, 8)
    r.wr(0, E.REG_DMA_CNT, 0x100, 8)
    r.wr(0, E.REG_DMA_CMD, E.DMA_RUN | E.DMA_IRQ_ON_DONE)
    while r.rd(0, E.REG_DMA_CMD) & E.DMA_RUN:
        pass
    assert r.device.buffer[:0x100] == pattern[0x10:0x110] and count(efd) == 1
    r.wr(0, E.REG_IRQ_ACK, E.DMA_IRQ)
    r.set_irqs(U.VFIO_PCI_INTX_IRQ_INDEX, U.VFIO_IRQ_SET_DATA_NONE | U.VFIO_IRQ_SET_ACTION_UNMASK, 0, 1)
    r.wr(0, E.REG_DMA_SRC, E.DMA_START, 8)
    r.wr(0, E.REG_DMA_DST, IOVA + 0x2000, 8)
    r.wr(0, E.REG_DMA_CMD, E.DMA_RUN | E.DMA_DIR_TO_RAM | E.DMA_IRQ_ON_DONE)
    assert r.proc.read(va + 0x2000, 0x100) == pattern[0x10:0x110] and count(efd) == 1
    r.wr(0, E.REG_DMA_DST, 0x0F00_0000, 8)  # not mapped: the IOMMU refuses, edu ignores the error
    r.wr(0, E.REG_DMA_CMD, E.DMA_RUN | E.DMA_DIR_TO_RAM)
    assert "not-present" in r.device.guest_errors[-1] or "blocked" in r.device.guest_errors[-1]
    os.close(efd)
    r.close()


def test_dma_before_attach_is_blocked() -> None:
    """After BIND the group is owned by iommufd with no domain: DMA is blocked until ATTACH."""
    r = Rig(Edu())
    r.bus_master()
    r.wr(0, E.REG_DMA_SRC, IOVA, 8)
    r.wr(0, E.REG_DMA_DST, E.DMA_START, 8)
    r.wr(0, E.REG_DMA_CNT, 4, 8)
    r.wr(0, E.REG_DMA_CMD, E.DMA_RUN)
    assert "DMA failed" in r.device.guest_errors[-1]
    r.close()


# ---------------------------------------------------------------------- testdev
def td_dma(r: Rig, cmd: int, iova: int, n: int, buf_off: int = 0, ctrl: int = 0, pasid: int = 0) -> int:
    r.wr(0, T.REG_CTRL, ctrl)
    r.wr(0, T.REG_PASID, pasid)
    r.wr(0, T.REG_IOVA, iova, 8)
    r.wr(0, T.REG_BUF_OFFSET, buf_off)
    r.wr(0, T.REG_LENGTH, n)
    r.wr(0, T.REG_CMD, cmd)
    return r.rd(0, T.REG_STATUS)


def test_testdev_dma_and_the_mapped_buffer() -> None:
    r = Rig(TestDev())
    r.attach()
    va = r.map(IOVA, 0x4000, b"\xa5" * 0x4000)
    r.bus_master()
    buf = np.frombuffer(r.df.mmap(U.vfio_pci_index_to_offset(T.BUF_BAR), T.BUF_SIZE), dtype=np.uint8)
    assert td_dma(r, T.CMD_READ, IOVA, 0x3000, buf_off=0x800) == T.STATUS_DONE
    assert (buf[0x800:0x3800] == 0xA5).all() and buf[0x7FF] == 0  # the mapping sees the device's stores
    buf_rw = r.df.mmap(U.vfio_pci_index_to_offset(T.BUF_BAR), 0x1000)
    buf_rw[0:5] = b"hello"  # stores through the mapping reach the device
    assert td_dma(r, T.CMD_WRITE, IOVA + 0x10, 5) == T.STATUS_DONE
    assert r.proc.read(va + 0x10, 5) == b"hello"
    assert r.rd(0, T.REG_COMPLETIONS) == 2
    st = td_dma(r, T.CMD_WRITE, 0x4000_0000, 4)
    assert st == T.STATUS_ERROR and r.rd(0, T.REG_FAULT_IOVA, 8) == 0x4000_0000
    del buf
    r.close()


def test_mmap_rules() -> None:
    """vfio_pci_core_mmap(): shared only, BARs only, inside the BAR, a mappable BAR; the model maps
    RAM areas only (registers cannot be mapped into a process)."""
    r = Rig(TestDev())
    b2 = U.vfio_pci_index_to_offset(T.BUF_BAR)
    for kw, off, n in (({"shared": False}, b2, 4096), ({}, U.vfio_pci_index_to_offset(7), 4096),
                       ({}, U.vfio_pci_index_to_offset(6), 4096), ({}, U.vfio_pci_index_to_offset(0), 4096),
                       ({}, b2 + 0x10000, 4096), ({}, b2 + 0x800, 4096), ({}, b2, 0x11000)):
        with pytest.raises(UapiError) as e:
            r.df.mmap(off, n, **kw)
        assert e.value.errno == errno.EINVAL
    m = r.df.mmap(b2 + 0x1000, 0x2000)
    r.device.buf.u8[0x1000] = 7
    assert m[0] == 7
    r.close()


def test_ats_translations_are_cached_and_invalidated() -> None:
    r = Rig(TestDev())
    r.attach()
    r.map(IOVA, 0x4000, b"\x11" * 0x4000)
    r.bus_master()
    dev = r.vdev.iommu_dev
    assert dev.ats_enabled and dev.atc is not None
    assert td_dma(r, T.CMD_READ, IOVA, 0x2000) == T.STATUS_DONE
    assert dev.atc.lookup(0, IOVA) is not None  # Translation Completion cached in the device
    r.ictx.ioas_unmap(r.ioas, IOVA, 0x4000)  # iommufd unmaps: the IOMMU invalidates the ATC too
    assert dev.atc.lookup(0, IOVA) is None
    assert td_dma(r, T.CMD_READ, IOVA, 0x10) == T.STATUS_ERROR
    r.close()


def pasid_rig() -> Rig:
    d = TestDev()
    behind_root_port(d)
    r = Rig(d, rid=0x100)
    assert r.vdev.iommu_dev.pasid_enabled
    return r


def test_pasid_attach_replace_detach() -> None:
    r = pasid_rig()
    ioas_rid, ioas_a, ioas_b = (r.ictx.ioas_alloc() for _ in range(3))
    r.ioas = ioas_rid
    h_rid = r.ictx.hwpt_alloc(r.devid, ioas_rid, flags=IU.IOMMU_HWPT_ALLOC_PASID)
    h_a = r.ictx.hwpt_alloc(r.devid, ioas_a, flags=IU.IOMMU_HWPT_ALLOC_PASID)
    h_b = r.ictx.hwpt_alloc(r.devid, ioas_b, flags=IU.IOMMU_HWPT_ALLOC_PASID)
    assert r.attach(h_rid) == h_rid
    va_a = r.map(IOVA, 0x1000, b"A" * 16, ioas=ioas_a)
    va_b = r.map(IOVA, 0x1000, b"B" * 16, ioas=ioas_b)
    r.map(IOVA, 0x1000, b"R" * 16, ioas=ioas_rid)
    r.bus_master()
    assert r.attach(h_a, pasid=7) == h_a
    assert td_dma(r, T.CMD_READ, IOVA, 16, ctrl=T.CTRL_PASID, pasid=7) == T.STATUS_DONE
    assert bytes(r.device.buf.u8[:16]) == b"A" * 16
    assert td_dma(r, T.CMD_READ, IOVA, 16) == T.STATUS_DONE  # no PASID: the RID's domain
    assert bytes(r.device.buf.u8[:16]) == b"R" * 16
    assert r.attach(h_b, pasid=7) == h_b  # attach again = replace (vfio_iommufd_physical_pasid_attach_ioas)
    assert td_dma(r, T.CMD_READ, IOVA, 16, ctrl=T.CTRL_PASID, pasid=7) == T.STATUS_DONE
    assert bytes(r.device.buf.u8[:16]) == b"B" * 16
    assert td_dma(r, T.CMD_WRITE, IOVA + 0x20, 16, ctrl=T.CTRL_PASID, pasid=7) == T.STATUS_DONE
    assert r.proc.read(va_b + 0x20, 16) == b"B" * 16 and r.proc.read(va_a + 0x20, 16) == bytes(16)
    r.detach(pasid=7)
    assert td_dma(r, T.CMD_READ, IOVA, 16, ctrl=T.CTRL_PASID, pasid=7) == T.STATUS_ERROR
    r.detach(pasid=7)  # a PASID not attached: nothing to do
    r.close()


def test_pri_page_request_answered_after_mapping() -> None:
    """ATS miss -> PRI Page Request -> the iommufd fault queue -> userspace maps the page and answers
    Success -> the device retries the translation and completes."""
    r = Rig(TestDev())
    dev = r.vdev.iommu_dev
    assert dev.pri_enabled
    r.ioas = r.ictx.ioas_alloc()
    fq = r.ictx.fault_queue_alloc()
    h = r.ictx.hwpt_alloc(r.devid, r.ioas, flags=IU.IOMMU_HWPT_FAULT_ID_VALID, fault_id=fq.out_fault_id)
    r.attach(h)
    r.bus_master()
    r.device.buf.u8[:8] = np.frombuffer(b"pri-page", dtype=np.uint8)
    st = td_dma(r, T.CMD_WRITE, 0x20_0000, 8)
    assert st == T.STATUS_BUSY | T.STATUS_PRI_WAIT
    fault_file = r.task.fds[fq.out_fault_fd]
    size = IU.iommu_hwpt_pgfault.size
    raw = fault_file.read(size * 4)
    recs = [IU.iommu_hwpt_pgfault.unpack(raw[i:i + size]) for i in range(0, len(raw), size)]
    assert [(f["addr"], f["dev_id"], f["perm"] & 2) for f in recs] == [(0x20_0000, r.devid, 2)]
    assert r.rd(0, T.REG_STATUS) & T.STATUS_PRI_WAIT  # no answer yet: still waiting
    va = r.map(0x20_0000, 0x1000)
    fault_file.write(IU.iommu_hwpt_page_response.pack(cookie=recs[0]["cookie"], code=0))
    r.device.service()
    assert r.rd(0, T.REG_STATUS) == T.STATUS_DONE and r.rd(0, T.REG_RETRIES) >= 1
    assert r.proc.read(va, 8) == b"pri-page"
    assert td_dma(r, T.CMD_READ, 0x30_0000, 4) & T.STATUS_PRI_WAIT
    raw = fault_file.read(size)
    cookie = IU.iommu_hwpt_pgfault.unpack(raw)["cookie"]
    fault_file.write(IU.iommu_hwpt_page_response.pack(cookie=cookie, code=1))  # Invalid: the DMA fails
    r.device.service()
    assert r.rd(0, T.REG_STATUS) == T.STATUS_ERROR and r.rd(0, T.REG_FAULT_IOVA, 8) == 0x30_0000
    r.close()


def test_testdev_state_moves_between_devices() -> None:
    """save_state()/load_state() carry registers, the buffer and a command in flight."""
    a = Rig(TestDev())
    a.attach()
    a.map(IOVA, 0x1000, b"migrate!")
    a.bus_master()
    a.device.hold = True
    td_dma(a, T.CMD_READ, IOVA, 8)
    blob = a.device.save_state()
    b = Rig(TestDev(), mem=a.mem, unit=a.unit, rid=0x28)
    b.ioas = b.ictx.ioas_alloc()
    b.attach()
    b.map(IOVA, 0x1000, b"migrate!")
    b.device.load_state(blob)
    assert b.device.status & T.STATUS_BUSY and b.device.busy  # the command in flight, re-armed ...
    assert b.rd(0, T.REG_STATUS) == T.STATUS_DONE  # ... finishes on the destination
    assert bytes(b.device.buf.u8[:8]) == b"migrate!"
    a.close()
    b.close()
