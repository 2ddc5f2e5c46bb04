"""The PCI layer: configuration space, capabilities, functions, topology, enumeration, groups, lspci."""

from vfiolab.pci.config import ConfigAccessError, ConfigSpace

__all__ = ["ConfigAccessError", "ConfigSpace"]
