"""lspci's ``-s [[[[<domain>]:]<bus>]:][<slot>][.[<func>]]`` device filter (pciutils ``lib/filter.c``)."""

from __future__ import annotations

from dataclasses import dataclass

from vfiolab.errors import VfiolabError

_BUF_SIZE = 64  # lib/filter.c BUF_SIZE: longer expressions are refused


@dataclass(frozen=True)
class SlotFilter:
    """-1 in a field matches anything."""

    domain: int = -1
    bus: int = -1
    slot: int = -1
    func: int = -1

    def match(self, domain: int, bus: int, dev: int, func: int) -> bool:
        """lib/filter.c pci_filter_match() for the slot part."""
        return ((self.domain < 0 or self.domain == domain) and (self.bus < 0 or self.bus == bus)
                and (self.slot < 0 or self.slot == dev) and (self.func < 0 or self.func == func))


class _Bad(Exception):
    """lspci's message for a bad expression; parse_slot() adds the expression."""


def _field(text: str | None, limit: int, what: str) -> int:
    # parse_hex_field(): empty or "*" keeps the wildcard; any non-hex digit or a value over the limit fails.
    if text is None or text in ("", "*"):
        return -1
    value = 0
    for c in text:
        if c not in "0123456789abcdefABCDEF":
            raise _Bad(f"Invalid {what} number")
        value = value * 16 + int(c, 16)
        if value > limit:
            raise _Bad(f"Invalid {what} number")
    return value


def parse_slot(expr: str) -> SlotFilter:
    """Parse a -s expression; errors read like lspci's ("-s '100:': Invalid bus number")."""
    try:
        return _parse(expr)
    except _Bad as e:
        raise VfiolabError(f"-s {expr!r}: {e}") from None


def _parse(expr: str) -> SlotFilter:
    if len(expr.encode("utf-8", "surrogateescape")) >= _BUF_SIZE:
        raise _Bad("Expression too long")
    parts = expr.split(":")
    if len(parts) > 3:
        raise _Bad("Too many fields")
    domain = bus = -1
    if len(parts) == 3:
        domain = _field(parts[0], 0x7FFFFFFF, "domain")
    if len(parts) >= 2:
        bus = _field(parts[-2], 0xFF, "bus")
    slot = func = -1
    last = parts[-1]
    if last not in ("", "*"):
        sub = last.split(".")
        if len(sub) > 2:
            raise _Bad("Invalid slot/function number")
        slot = _field(sub[0], 0x1F, "slot")
        func = _field(sub[1] if len(sub) == 2 else None, 7, "function")
    return SlotFilter(domain, bus, slot, func)
