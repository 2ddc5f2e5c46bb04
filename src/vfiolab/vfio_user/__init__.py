"""vfio-user: the protocol codec (messages, validation, framing); the server and client build on it.

``decode``/``encode`` turn bytes + fds into typed ``Message`` objects and back; ``recv_message``/``send_message``
frame them over a UNIX stream socket.  Every refusal is a ``ProtocolError`` carrying the errno the reply
should carry.  docs/vfio-user.md describes what is covered and where we follow QEMU or libvfio-user.
"""

from vfiolab.vfio_user.codec import SPECS, Body, Message, decode, encode, error_reply, reply_to, request
from vfiolab.vfio_user.device import (
    DeviceInfo,
    IoFdsReply,
    IoFdsRequest,
    MsixMappableCap,
    RawCap,
    RegionCap,
    RegionInfo,
    SparseMmapArea,
    SparseMmapCap,
    SubRegionFd,
    TypeCap,
)
from vfiolab.vfio_user.dma import DmaBitmap, DmaMap, DmaRead, DmaReadReply, DmaUnmap, DmaWrite, DmaWriteReply
from vfiolab.vfio_user.irq import IrqInfo, IrqSet
from vfiolab.vfio_user.migration import (
    DeviceFeature,
    DmaLoggingControl,
    DmaLoggingRange,
    DmaLoggingReport,
    FeatureData,
    MigData,
    MigDataRead,
    MigDataSize,
    MigrationInfo,
    MigState,
    bitmap_size,
)
from vfiolab.vfio_user.protocol import Command, Header, Limits, ProtocolError, Role
from vfiolab.vfio_user.region import (
    RegionRead,
    RegionReadReply,
    RegionWrite,
    RegionWriteMulti,
    RegionWriteMultiReply,
    RegionWriteReply,
)
from vfiolab.vfio_user.transport import recv_frame, recv_message, send_frame, send_message
from vfiolab.vfio_user.version import Capabilities, MigrationCaps, TwinSocket, Version

__all__ = [
    "SPECS", "Body", "Capabilities", "Command", "DeviceFeature", "DeviceInfo", "DmaBitmap", "DmaLoggingControl",
    "DmaLoggingRange", "DmaLoggingReport", "DmaMap", "DmaRead", "DmaReadReply", "DmaUnmap", "DmaWrite",
    "DmaWriteReply", "FeatureData", "Header", "IoFdsReply", "IoFdsRequest", "IrqInfo", "IrqSet", "Limits",
    "Message", "MigData", "MigDataRead", "MigDataSize", "MigState", "MigrationCaps", "MigrationInfo",
    "MsixMappableCap", "ProtocolError", "RawCap", "RegionCap", "RegionInfo", "RegionRead", "RegionReadReply",
    "RegionWrite", "RegionWriteMulti", "RegionWriteMultiReply", "RegionWriteReply", "Role", "SparseMmapArea",
    "SparseMmapCap", "SubRegionFd", "TwinSocket", "TypeCap", "Version", "bitmap_size", "decode", "encode",
    "error_reply", "recv_frame", "recv_message", "reply_to", "request", "send_frame", "send_message",
]
