"""``lspci -t``: the bus tree built from bridge headers alone, as pciutils 3.9 ``ls-tree.c`` does for dumps.

A dump gives libpci no parent links, so lspci places bridges by bus numbers only.  Its best-parent
search starts with the host bridge, whose span (subordinate - primary, unsigned) is 0, so no bridge
ever beats it: every bridge hangs directly off the host bridge, and a device lands on the first
bridge in reverse scan order whose [secondary, subordinate] covers its bus.  That is reproduced here,
as are the 1024-byte line buffer and the ``|``/space continuation of print_it().
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from vfiolab.pci.lspci.device import HDR_BRIDGE, HDR_CARDBUS, Device
from vfiolab.pci.lspci.slotfilter import SlotFilter

_LINE_BUF = 1024  # ls-tree.c LINE_BUF_SIZE
_U32 = 0xFFFFFFFF


@dataclass(eq=False)
class _Bus:
    domain: int
    number: int
    devices: list[Device] = field(default_factory=list)


@dataclass(eq=False)
class _Bridge:
    domain: int
    primary: int
    secondary: int
    subordinate: int
    dev: Device | None
    children: list[_Bridge] = field(default_factory=list)  # newest first, as ls-tree.c links them
    buses: list[_Bus] = field(default_factory=list)
    _bus_index: dict[tuple[int, int], _Bus] = field(default_factory=dict)
    _route: dict[tuple[int, int], _Bridge | None] = field(default_factory=dict)

    def find_bus(self, domain: int, number: int) -> _Bus | None:
        return self._bus_index.get((domain, number))

    def new_bus(self, domain: int, number: int) -> _Bus:
        bus = _Bus(domain, number)
        self.buses.append(bus)
        self._bus_index.setdefault((domain, number), bus)
        return bus

    def child_for(self, domain: int, number: int) -> _Bridge | None:
        """The first child whose bus range holds ``number`` (memoised: the tree is fixed by then)."""
        key = (domain, number)
        if key not in self._route:
            self._route[key] = next((c for c in self.children
                                     if c.domain == domain and c.secondary <= number <= c.subordinate), None)
        return self._route[key]


class _Forest:
    """grow_tree() and show_forest() state."""

    def __init__(self, devices: list[Device], flt: SlotFilter | None, label: Callable[[Device], str] | None):
        self.flt = flt
        self.label = label
        self.host = _Bridge(0, _U32, 0, _U32, None)
        self.chain: list[_Bridge] = [self.host]
        self.by_dev: dict[int, _Bridge] = {}
        for d in devices:
            if d.cls >> 8 == 0x06 and d.htype in (HDR_BRIDGE, HDR_CARDBUS):
                # CardBus bridges keep the same three bus-number bytes at 0x18 (PCI_CB_*_BUS).
                b = _Bridge(d.domain, d.rd8(0x18), d.rd8(0x19), d.rd8(0x1A), d)
                self.chain.append(b)
                self.by_dev[id(d)] = b
        for b in self.chain:
            best: _Bridge | None = None
            for c in self.chain:
                if c is not b and (c is self.host or b.domain == c.domain) and \
                        c.secondary <= b.primary <= c.subordinate and \
                        (best is None or (best.subordinate - best.primary) & _U32 >
                         (c.subordinate - c.primary) & _U32):
                    best = c
                    if not (best.subordinate - best.primary) & _U32:
                        break  # a span of 0 (the host bridge's) can never be beaten
            if best is not None:
                best.children.append(b)
        for b in self.chain:
            b.children.reverse()
        for b in self.chain:
            if b.find_bus(b.domain, b.secondary) is None:
                b.new_bus(b.domain, b.secondary)
        for d in devices:
            self._insert(d, self.host)

    def _insert(self, d: Device, b: _Bridge) -> None:
        bus = b.find_bus(d.domain, d.bus)
        if bus is None:
            c = b.child_for(d.domain, d.bus)
            if c is not None:
                self._insert(d, c)
                return
            bus = b.new_bus(d.domain, d.bus)
        bus.devices.append(d)

    # ---- filters (ls-tree.c check_dev_filter / check_bus_filter)
    def _dev_ok(self, d: Device) -> bool:
        if self.flt is None or self.flt.match(d.domain, d.bus, d.dev, d.func):
            return True
        br = self.by_dev.get(id(d))
        return br is not None and any(self._bus_ok(bus) for bus in br.buses)

    def _bus_ok(self, bus: _Bus) -> bool:
        return self.flt is None or any(self._dev_ok(d) for d in bus.devices)

    # ---- output
    def show(self) -> str:
        self.out: list[str] = []
        self.line: list[str] = []
        self._bridge(self.host, 0)
        return "".join(self.out)

    def _put(self, p: int, text: str) -> int:
        # tree_printf(): write at p, never past the 1023 usable bytes; a cut pushes p to the end.
        space = _LINE_BUF - 1 - p
        if space <= 0:
            return p
        if len(text) >= space:
            text = text[:space - 1]
            self.line[p:] = list(text)
            return p + space
        self.line[p:] = list(text)
        return p + len(text)

    def _print(self, p: int) -> None:
        # print_it(): the line up to p, then keep only the "|" columns for the lines below.
        text = "".join(self.line[:p])
        self.out.append(text + ("..." if p >= _LINE_BUF - 1 else "") + "\n")
        self.line[:p] = ["|" if c in "+|" else " " for c in text]
        del self.line[p:]

    def _dev(self, d: Device, p: int) -> None:
        p = self._put(p, f"{d.dev:02x}.{d.func:x}")
        br = self.by_dev.get(id(d))
        if br is not None:
            if br.secondary == 0:
                p = self._put(p, "-")
            elif br.secondary == br.subordinate:
                p = self._put(p, f"-[{br.secondary:02x}]-")
            else:
                p = self._put(p, f"-[{br.secondary:02x}-{br.subordinate:02x}]-")
            self._bridge(br, p)
            return
        if self.label is not None:
            p = self._put(p, "  " + self.label(d))
        self._print(p)

    def _bus(self, bus: _Bus, p: int) -> None:
        devs = bus.devices
        if not devs:
            self._print(p)
        elif len(devs) == 1:
            if self._dev_ok(devs[0]):
                self._dev(devs[0], self._put(p, "--"))
            else:
                self._print(p)
        else:
            empty = True
            for d in devs[:-1]:
                if self._dev_ok(d):
                    self._dev(d, self._put(p, "+-"))
                    empty = False
            if self._dev_ok(devs[-1]):
                self._dev(devs[-1], self._put(p, "\\-"))
                empty = False
            if empty:
                self._print(p)

    def _bridge(self, b: _Bridge, p: int) -> None:
        self.line[p:] = ["-"]  # show_tree_bridge() writes one '-' unconditionally
        p += 1
        if len(b.buses) == 1:
            bus = b.buses[0]
            if self._bus_ok(bus):
                if b is self.host:
                    p = self._put(p, f"[{b.domain:04x}:{bus.number:02x}]-")
                self._bus(bus, p)
            else:
                self._print(p)
            return
        empty = True
        for i, bus in enumerate(b.buses):
            if self._bus_ok(bus):
                lead = "\\-" if i == len(b.buses) - 1 else "+-"
                self._bus(bus, self._put(p, f"{lead}[{bus.domain:04x}:{bus.number:02x}]-"))
                empty = False
        if empty:
            self._print(p)


def show_tree(devices: list[Device], flt: SlotFilter | None = None,
              label: Callable[[Device], str] | None = None) -> str:
    """The ``lspci -t`` text for ``devices`` (sorted as lspci sorts); ``label`` adds names (-tv)."""
    return _Forest(devices, flt, label).show()
