"""Register offsets and bits of the PCI/PCIe configuration header (names as in Linux ``pci_regs.h``).

Only numbers defined by the PCI Local Bus and PCI Express Base specifications live here.
"""

from __future__ import annotations

from typing import Final

VENDOR_ID: Final = 0x00
DEVICE_ID: Final = 0x02
COMMAND: Final = 0x04
STATUS: Final = 0x06
REVISION_ID: Final = 0x08
CLASS_PROG: Final = 0x09
CLASS_DEVICE: Final = 0x0A
CACHE_LINE_SIZE: Final = 0x0C
LATENCY_TIMER: Final = 0x0D
HEADER_TYPE: Final = 0x0E
BIST: Final = 0x0F
BASE_ADDRESS_0: Final = 0x10
CARDBUS_CIS: Final = 0x28
SUBSYSTEM_VENDOR_ID: Final = 0x2C
SUBSYSTEM_ID: Final = 0x2E
ROM_ADDRESS: Final = 0x30
CAPABILITY_LIST: Final = 0x34
INTERRUPT_LINE: Final = 0x3C
INTERRUPT_PIN: Final = 0x3D
MIN_GNT: Final = 0x3E
MAX_LAT: Final = 0x3F

# Type 1 (bridge) header
PRIMARY_BUS: Final = 0x18
SECONDARY_BUS: Final = 0x19
SUBORDINATE_BUS: Final = 0x1A
SEC_LATENCY_TIMER: Final = 0x1B
IO_BASE: Final = 0x1C
IO_LIMIT: Final = 0x1D
SEC_STATUS: Final = 0x1E
MEMORY_BASE: Final = 0x20
MEMORY_LIMIT: Final = 0x22
PREF_MEMORY_BASE: Final = 0x24
PREF_MEMORY_LIMIT: Final = 0x26
PREF_BASE_UPPER32: Final = 0x28
PREF_LIMIT_UPPER32: Final = 0x2C
IO_BASE_UPPER16: Final = 0x30
IO_LIMIT_UPPER16: Final = 0x32
ROM_ADDRESS1: Final = 0x38
BRIDGE_CONTROL: Final = 0x3E

HEADER_TYPE_NORMAL: Final = 0
HEADER_TYPE_BRIDGE: Final = 1
HEADER_TYPE_CARDBUS: Final = 2
HEADER_TYPE_MFD: Final = 0x80

COMMAND_IO: Final = 0x0001
COMMAND_MEMORY: Final = 0x0002
COMMAND_MASTER: Final = 0x0004
COMMAND_SPECIAL: Final = 0x0008
COMMAND_INVALIDATE: Final = 0x0010
COMMAND_VGA_PALETTE: Final = 0x0020
COMMAND_PARITY: Final = 0x0040
COMMAND_WAIT: Final = 0x0080
COMMAND_SERR: Final = 0x0100
COMMAND_FAST_BACK: Final = 0x0200
COMMAND_INTX_DISABLE: Final = 0x0400

STATUS_IMM_READY: Final = 0x0001
STATUS_INTERRUPT: Final = 0x0008
STATUS_CAP_LIST: Final = 0x0010
STATUS_66MHZ: Final = 0x0020
STATUS_UDF: Final = 0x0040
STATUS_FAST_BACK: Final = 0x0080
STATUS_PARITY: Final = 0x0100
STATUS_DEVSEL_MASK: Final = 0x0600
STATUS_SIG_TARGET_ABORT: Final = 0x0800
STATUS_REC_TARGET_ABORT: Final = 0x1000
STATUS_REC_MASTER_ABORT: Final = 0x2000
STATUS_SIG_SYSTEM_ERROR: Final = 0x4000
STATUS_DETECTED_PARITY: Final = 0x8000
STATUS_W1C: Final = 0xF900  # the error bits software clears by writing 1

BASE_ADDRESS_SPACE_IO: Final = 0x01
BASE_ADDRESS_MEM_TYPE_64: Final = 0x04
BASE_ADDRESS_MEM_PREFETCH: Final = 0x08
ROM_ADDRESS_ENABLE: Final = 0x01

BRIDGE_CTL_PARITY: Final = 0x01
BRIDGE_CTL_SERR: Final = 0x02
BRIDGE_CTL_ISA: Final = 0x04
BRIDGE_CTL_VGA: Final = 0x08
BRIDGE_CTL_MASTER_ABORT: Final = 0x20
BRIDGE_CTL_BUS_RESET: Final = 0x40
BRIDGE_CTL_FAST_BACK: Final = 0x80

# Extended capability header layout
EXT_CAP_START: Final = 0x100


def ext_cap_header(cap_id: int, version: int, next_off: int) -> int:
    """Pack an extended capability header dword (ID[15:0], Version[19:16], Next[31:20])."""
    return (cap_id & 0xFFFF) | ((version & 0xF) << 16) | ((next_off & 0xFFC) << 20)


def devfn(dev: int, fn: int) -> int:
    """Pack device and function numbers as Linux's PCI_DEVFN."""
    return ((dev & 0x1F) << 3) | (fn & 0x7)


def bdf_str(domain: int, bus: int, dfn: int) -> str:
    """Full ``dddd:bb:dd.f`` name as Linux prints it (pci_name())."""
    return f"{domain:04x}:{bus:02x}:{dfn >> 3:02x}.{dfn & 7:x}"
