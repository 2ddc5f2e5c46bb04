"""Emulated devices written once against the device API (:mod:`vfiolab.devices.api`): QEMU's edu and
vfiolab's own DMA engine, testdev.  Hosts (vfio-pci in-process, the vfio-user server) serve them."""

from vfiolab.devices.api import (
    Device,
    DirtySink,
    DmaError,
    DmaPort,
    DmaRetry,
    NoDmaPort,
    NoTracking,
    PassiveDevice,
)
from vfiolab.devices.bars import DeviceBar, MmioRegion, RamRegion, Region
from vfiolab.devices.dirty import DirtyLog
from vfiolab.devices.edu import Edu
from vfiolab.devices.irq import InterruptLines, InterruptSink, RecordingSink
from vfiolab.devices.shm import SharedMemory
from vfiolab.devices.testdev import TestDev

__all__ = ["Device", "DeviceBar", "DirtyLog", "DirtySink", "DmaError", "DmaPort", "DmaRetry", "Edu",
           "InterruptLines", "InterruptSink", "MmioRegion", "NoDmaPort", "NoTracking", "PassiveDevice",
           "RamRegion", "RecordingSink", "Region", "SharedMemory", "TestDev"]
