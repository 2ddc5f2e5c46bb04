"""vfiolab: the Linux PCI / IOMMU / VFIO stack as an executable Python model."""

from vfiolab.errors import UapiError, VfiolabError

__version__ = "0.1.0"
__all__ = ["UapiError", "VfiolabError", "__version__"]
