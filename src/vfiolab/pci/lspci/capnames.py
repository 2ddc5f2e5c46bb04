"""Short names of PCI capability IDs for vfiolab's JSON output (names as in Linux ``pci_regs.h``)."""

from __future__ import annotations

from typing import Final

STD_NAMES: Final = {
    0x00: "Null", 0x01: "Power Management", 0x02: "Accelerated Graphics Port", 0x03: "Vital Product Data",
    0x04: "Slot Identification", 0x05: "MSI", 0x06: "CompactPCI HotSwap", 0x07: "PCI-X",
    0x08: "HyperTransport", 0x09: "Vendor-Specific", 0x0A: "Debug port",
    0x0B: "CompactPCI Central Resource Control", 0x0C: "PCI Standard Hot-Plug Controller",
    0x0D: "Bridge Subsystem Vendor ID", 0x0E: "AGP Target PCI-PCI bridge", 0x0F: "Secure Device",
    0x10: "PCI Express", 0x11: "MSI-X", 0x12: "SATA Data/Index Configuration",
    0x13: "PCI Advanced Features", 0x14: "Enhanced Allocation", 0x15: "Flattening Portal Bridge",
}

EXT_NAMES: Final = {
    0x00: "Null", 0x01: "Advanced Error Reporting", 0x02: "Virtual Channel", 0x03: "Device Serial Number",
    0x04: "Power Budgeting", 0x05: "Root Complex Link Declaration",
    0x06: "Root Complex Internal Link Control", 0x07: "Root Complex Event Collector",
    0x08: "Multi-Function Virtual Channel", 0x09: "Virtual Channel (MFVC)", 0x0A: "Root Complex Register Block",
    0x0B: "Vendor-Specific Extended", 0x0C: "Configuration Access Correlation", 0x0D: "Access Control Services",
    0x0E: "Alternative Routing-ID Interpretation", 0x0F: "Address Translation Services",
    0x10: "Single Root I/O Virtualization", 0x11: "Multi-Root I/O Virtualization", 0x12: "Multicast",
    0x13: "Page Request Interface", 0x15: "Resizable BAR", 0x16: "Dynamic Power Allocation",
    0x17: "TPH Requester", 0x18: "Latency Tolerance Reporting", 0x19: "Secondary PCI Express",
    0x1A: "Protocol Multiplexing", 0x1B: "Process Address Space ID", 0x1C: "LN Requester",
    0x1D: "Downstream Port Containment", 0x1E: "L1 PM Substates", 0x1F: "Precision Time Measurement",
    0x20: "PCI Express over M-PHY", 0x21: "FRS Queueing", 0x22: "Readiness Time Reporting",
    0x23: "Designated Vendor-Specific", 0x24: "VF Resizable BAR", 0x25: "Data Link Feature",
    0x26: "Physical Layer 16.0 GT/s", 0x27: "Lane Margining at the Receiver", 0x28: "Hierarchy ID",
    0x29: "Native PCIe Enclosure Management", 0x2A: "Physical Layer 32.0 GT/s",
    0x2B: "Alternate Protocol", 0x2C: "System Firmware Intermediary", 0x2D: "Shadow Functions",
    0x2E: "Data Object Exchange", 0x2F: "Device 3", 0x30: "Integrity and Data Encryption",
    0x31: "Physical Layer 64.0 GT/s",
}


def cap_name(cap_id: int, extended: bool) -> str:
    """The capability's name, or "Unknown (0x..)" for an ID no specification defines."""
    table = EXT_NAMES if extended else STD_NAMES
    return table.get(cap_id, f"Unknown ({cap_id:#04x})")
