"""The lspci switches vfiolab supports, and what a run produces."""

from __future__ import annotations

from dataclasses import dataclass

from vfiolab.pci.lspci.names import DEFAULT_PCI_IDS


@dataclass
class LspciOptions:
    """The lspci switches vfiolab supports (counts as lspci counts repeated letters)."""

    verbose: int = 0
    """-v, -vv, -vvv"""
    hex: int = 0
    """-x (64 bytes), -xxx (256), -xxxx (4096)"""
    tree: bool = False
    """-t"""
    machine: int = 0
    """-m (obsolete machine-readable form), -mm"""
    numeric: int = 0
    """-n (numbers), -nn (names and numbers)"""
    slot: str | None = None
    """-s [[[[<domain>]:]<bus>]:][<slot>][.[<func>]]"""
    domains: bool = False
    """-D: always show the domain"""
    json: bool = False
    """our own JSON (see jsonout.py) instead of lspci text"""
    ids_path: str = DEFAULT_PCI_IDS


@dataclass
class Rendered:
    """The text lspci would print on stdout and the libpci warnings it would print on stderr."""

    text: str
    warnings: list[str]
