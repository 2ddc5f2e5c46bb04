"""The machine a scenario runs on: physical memory, one IOMMU unit, a PCI topology with QEMU's edu at
00:02.0 (conventional PCI on the root bus) and testdev at 01:00.0 (below a Root Port at 00:1c.0), both
bound to vfio-pci with migration and DMA logging, as a vfio-pci variant driver would offer them.

Building it twice gives identical machines (same BAR addresses, requester IDs and capabilities), which
is what a migration destination must be: the same virtual hardware.
"""

from __future__ import annotations

from typing import Final

from vfiolab.devices import Edu, TestDev
from vfiolab.devices.api import Device
from vfiolab.errors import VfiolabError
from vfiolab.iommu.driver import make_unit
from vfiolab.memory import PhysMemory
from vfiolab.pci import regs
from vfiolab.pci.bridge import RootPort
from vfiolab.pci.topology import Topology
from vfiolab.scenarios.devmig import StatePrecopy
from vfiolab.vfio.migration import VfioMigration
from vfiolab.vfio.pci_core import VfioPciCoreDevice, make_vfio_pci
from vfiolab.vfio.uapi import VFIO_MIGRATION_P2P, VFIO_MIGRATION_PRE_COPY, VFIO_MIGRATION_STOP_COPY

MIB: Final = 1 << 20
PT_HEADROOM: Final = 64 * MIB
"""Physical memory beyond guest RAM: IOMMU page tables, bitmaps, structures."""
EDU_MIG: Final = VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_P2P
TESTDEV_MIG: Final = VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_P2P | VFIO_MIGRATION_PRE_COPY
DEVICE_ORDER: Final = ("testdev", "edu")
"""Device names in the order both ends number them on the migration channel."""


class Machine:
    """Hardware plus the host kernel's vfio-pci devices for one vfiolab instance."""

    def __init__(self, ram_bytes: int, iommu: str = "intel") -> None:
        if ram_bytes <= 0 or ram_bytes % MIB:
            raise VfiolabError(f"guest RAM of {ram_bytes} bytes is not a positive number of MiB")
        self.ram_bytes = ram_bytes
        self.mem = PhysMemory(ram_bytes + PT_HEADROOM)
        self.unit = make_unit(iommu, self.mem)
        self.topology = Topology()
        rc = self.topology.add_host_bridge()
        self.edu = Edu()
        self.testdev = TestDev()
        rc.root.attach(regs.devfn(2, 0), self.edu.function)
        self.root_port = RootPort(0x8086, 0xA190)
        rc.root.attach(regs.devfn(0x1C, 0), self.root_port)
        self.root_port.config_write(regs.PRIMARY_BUS, 4, 1 << 8 | 1 << 16)  # secondary = subordinate = 1
        assert self.root_port.secondary is not None
        self.root_port.secondary.attach(regs.devfn(0, 0), self.testdev.function)
        self.vfio: dict[str, VfioPciCoreDevice] = {
            "edu": make_vfio_pci(self.edu, self.unit, migration_flags=EDU_MIG, dma_logging=True),
            "testdev": make_vfio_pci(self.testdev, self.unit, dma_logging=True),
        }
        # testdev's driver also pre-copies (its 64 KiB buffer makes the state worth streaming early)
        self.vfio["testdev"].mig = VfioMigration(StatePrecopy(self.testdev), TESTDEV_MIG)

    @property
    def devices(self) -> dict[str, Device]:
        """The emulated devices by name."""
        return {"edu": self.edu, "testdev": self.testdev}

    def close(self) -> None:
        """Unregister from vfio-pci and release device and physical memory."""
        for vdev in self.vfio.values():
            vdev.unregister()
        for dev in self.devices.values():
            dev.close()
        self.mem.close()


__all__ = ["DEVICE_ORDER", "EDU_MIG", "MIB", "TESTDEV_MIG", "Machine"]
