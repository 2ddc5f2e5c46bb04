"""Every uAPI entry point of the legacy container, the group file, the migration data fd and the
migration/logging features fails only with UapiError (architecture decision 3), whatever bytes arrive;
after the random calls and closing everything, no page stays pinned and no locked_vm stays charged."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from test_vfio_container_builders import K4, machine, open_mode

from vfiolab.errors import UapiError
from vfiolab.iommufd import uapi as iu
from vfiolab.iommufd.task import Task
from vfiolab.iommufd.ucmd import LocalBuffer
from vfiolab.vfio.dma_logging import PageTracker
from vfiolab.vfio.feature import device_feature
from vfiolab.vfio.group import (
    VFIO_GROUP_GET_DEVICE_FD,
    VFIO_GROUP_GET_STATUS,
    VFIO_GROUP_SET_CONTAINER,
    VFIO_GROUP_UNSET_CONTAINER,
)
from vfiolab.vfio.migration import MigrationFile, VfioMigration
from vfiolab.vfio.precopy import TrackedState
from vfiolab.vfio.uapi import VFIO_MIG_GET_PRECOPY_INFO

CONTAINER_CMDS = [iu.VFIO_GET_API_VERSION, iu.VFIO_CHECK_EXTENSION, iu.VFIO_SET_IOMMU, iu.VFIO_IOMMU_GET_INFO,
                  iu.VFIO_IOMMU_MAP_DMA, iu.VFIO_IOMMU_UNMAP_DMA, iu.VFIO_IOMMU_DIRTY_PAGES, 0x3B00 | 115]
GROUP_CMDS = [VFIO_GROUP_GET_STATUS, VFIO_GROUP_SET_CONTAINER, VFIO_GROUP_UNSET_CONTAINER, VFIO_GROUP_GET_DEVICE_FD,
              0x3B00 | 107]


def structs(known: list[int]) -> st.SearchStrategy[tuple[int, bytes | int | None]]:
    """A command and an argument: random bytes, bytes shaped like a VFIO struct (argsz, flags, then
    pointers/addresses near the interesting ones), a small int, or NULL."""
    words = st.sampled_from([0, 1, 2, 3, 0xFFF, K4, 1 << 24, (1 << 24) + K4, 1 << 47, (1 << 64) - K4,
                             (1 << 64) - 1])
    shaped = st.builds(lambda argsz, flags, a, b, c: struct.pack("<IIQQQ", argsz, flags, a, b, c)[:max(0, argsz)],
                       st.integers(0, 48), st.integers(0, 15), words, words, words)
    arg = st.one_of(st.binary(max_size=64), shaped, st.integers(0, 12), st.none())
    return st.tuples(st.sampled_from(known), arg)


@settings(max_examples=150, deadline=None)
@given(calls=st.lists(st.one_of(st.tuples(st.just("c"), structs(CONTAINER_CMDS)),
                                st.tuples(st.just("g"), structs(GROUP_CMDS))), max_size=30),
       v2=st.booleans())
def test_container_and_group_ioctls_fail_cleanly(calls: list[tuple[str, tuple[int, bytes | int | None]]],
                                                 v2: bool) -> None:
    m = machine(1 << 25)
    g = m.add_group("mock", ["d0"])
    o = open_mode(m, "vfio_type1v2_iommu" if v2 else "vfio_type1_iommu", g, "d0")
    va = m.process.mmap(8 * K4)
    o.container.vfio_iommu_map_dma(va, 1 << 24, 8 * K4)
    task = Task.of(m.process)
    for target, (cmd, arg) in calls:
        f = o.container if target == "c" else o.group
        try:
            f.ioctl(cmd, arg)
        except UapiError:
            pass
    for fd in list(task.fds):
        task.close(fd)
    o.device.close()
    o.group.close()
    assert m.process.pinned_pages == 0 and task.locked_vm == 0


@settings(max_examples=150, deadline=None)
@given(calls=st.lists(st.tuples(st.integers(0, 0xFFFF_FFFF), st.integers(0, 14) | st.integers(0, 0xFFFF_FFFF),
                                st.binary(max_size=48)), max_size=20))
def test_features_and_data_fds_fail_cleanly(calls: list[tuple[int, int, bytes]]) -> None:
    from vfiolab.memory import PhysMemory, UserProcess
    proc = UserProcess(PhysMemory(1 << 22))
    dev = TrackedState(4 * K4)
    mig = VfioMigration(dev, 7)
    log = PageTracker()
    task = Task.of(proc)
    for argsz, flags, payload in calls:
        raw = struct.pack("<II", argsz & 0xFFFF_FFFF, flags & 0xFFFF_FFFF) + payload
        try:
            device_feature(LocalBuffer(raw), mig=mig, log=log, task=task, process=proc)
        except UapiError:
            pass
        for f in list(task.fds.values()):
            assert isinstance(f, MigrationFile)
            for name, args in (("read", (argsz & 0xFFFF,)), ("write", (payload,)),
                               ("ioctl", (VFIO_MIG_GET_PRECOPY_INFO, payload))):
                try:
                    getattr(f, name)(*args)
                except UapiError:
                    pass
