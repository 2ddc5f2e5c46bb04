"""VFIO_DEVICE_FEATURE (``drivers/vfio/vfio_main.c`` vfio_ioctl_device_feature): the generic checks on
``struct vfio_device_feature {argsz, flags, data[]}`` and the dispatch to the migration features
(:mod:`vfiolab.vfio.migration`), the DMA-logging features (:mod:`vfiolab.vfio.dma_logging`) and, for any
other feature, the driver's own ``device_feature`` op.
"""

from __future__ import annotations

import errno
from collections.abc import Callable

from vfiolab.errors import UapiError
from vfiolab.iommufd.task import Task
from vfiolab.iommufd.ucmd import UserBuffer
from vfiolab.memory import UserProcess
from vfiolab.vfio.dma_logging import DmaLogOps, logging_feature
from vfiolab.vfio.migration import (
    FeatureData,
    VfioMigration,
    feature_data_size,
    feature_mig_device_state,
    feature_migration,
    feature_precopy_info_v2,
)
from vfiolab.vfio.uapi import (
    VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT,
    VFIO_DEVICE_FEATURE_DMA_LOGGING_START,
    VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP,
    VFIO_DEVICE_FEATURE_GET,
    VFIO_DEVICE_FEATURE_MASK,
    VFIO_DEVICE_FEATURE_MIG_DATA_SIZE,
    VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE,
    VFIO_DEVICE_FEATURE_MIGRATION,
    VFIO_DEVICE_FEATURE_PROBE,
    VFIO_DEVICE_FEATURE_SET,
    VFIO_DEVICE_FEATURE_MIG_PRECOPY_INFOv2,
    vfio_device_feature,
)


class _Data:
    """The ``data[]`` of struct vfio_device_feature: the user buffer from byte 8 on."""

    def __init__(self, ubuf: UserBuffer) -> None:
        self.ubuf = ubuf

    def read(self, off: int, n: int) -> bytes:
        return self.ubuf.read(8 + off, n)

    def write(self, off: int, data: bytes | bytearray | memoryview) -> None:
        self.ubuf.write(8 + off, data)


FeatureFallback = Callable[[int, FeatureData, int], int]
"""device->ops->device_feature(flags, data buffer, argsz of data)."""



def device_feature(ubuf: UserBuffer, *, mig: VfioMigration | None = None, log: DmaLogOps | None = None,
                   task: Task | None = None, process: UserProcess | None = None,
                   fallback: FeatureFallback | None = None) -> int:
    """VFIO_DEVICE_FEATURE (vfio_main.c vfio_ioctl_device_feature) on the struct at ``ubuf``: the generic
    checks, then MIGRATION, MIG_DEVICE_STATE (a new data fd is installed in ``task``), DMA_LOGGING_*
    (pointers inside the payload are read from ``process``), MIG_DATA_SIZE and MIG_PRECOPY_INFOv2; any
    other feature goes to ``fallback`` (the driver's device_feature op) or is ENOTTY."""
    st = vfio_device_feature
    hdr = st.unpack(ubuf.read(0, st.size))
    argsz, flags = hdr["argsz"], hdr["flags"]
    if argsz < st.size:
        raise UapiError(errno.EINVAL, f"argsz {argsz} < {st.size}")
    known = VFIO_DEVICE_FEATURE_MASK | VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_PROBE
    if flags & ~known:
        raise UapiError(errno.EINVAL, f"unknown feature flags {flags & ~known:#x}")
    if not flags & VFIO_DEVICE_FEATURE_PROBE and flags & VFIO_DEVICE_FEATURE_SET and flags & VFIO_DEVICE_FEATURE_GET:
        raise UapiError(errno.EINVAL, "GET and SET together without PROBE")
    if task is None and process is not None:
        task = Task.of(process)
    data = _Data(ubuf)
    size = argsz - st.size
    feature = flags & VFIO_DEVICE_FEATURE_MASK
    if feature == VFIO_DEVICE_FEATURE_MIGRATION:
        return feature_migration(mig, flags, data, size)
    if feature == VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE:
        return feature_mig_device_state(mig, flags, data, size, task)
    if feature in (VFIO_DEVICE_FEATURE_DMA_LOGGING_START, VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP,
                   VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT):
        return logging_feature(log, feature, flags, data, size, process)
    if feature == VFIO_DEVICE_FEATURE_MIG_DATA_SIZE:
        return feature_data_size(mig, flags, data, size)
    if feature == VFIO_DEVICE_FEATURE_MIG_PRECOPY_INFOv2:
        return feature_precopy_info_v2(mig, flags, size)
    if fallback is None:
        raise UapiError(errno.ENOTTY, f"feature {feature} is not supported")
    return fallback(flags, data, size)


__all__ = ["FeatureFallback", "device_feature"]
