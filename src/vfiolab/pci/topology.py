"""PCI segments, buses and configuration routing done the way the hardware does it.

A configuration request for (segment, bus, devfn) enters at the host bridge.  The root bus answers its own
number; any other number travels as a Type 1 request and each bridge claims it when it lies within its
*programmed* secondary..subordinate range, converting it to Type 0 on its secondary bus when the number is
the secondary one.  A PCIe downstream port passes only device 0 unless ARI Forwarding is enabled, bridges
to conventional PCI do not forward extended registers, SR-IOV VFs answer the routing IDs their PF gave
them, and a request nobody claims completes with all ones (writes are dropped).  Routing results are
cached per (segment, bus) and the cache is dropped whenever a bridge's bus numbers change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final

from vfiolab.errors import VfiolabError
from vfiolab.pci.bridge import PciBridge
from vfiolab.pci.config import LEGACY_SIZE, RESET_FUNDAMENTAL, ConfigAccessError
from vfiolab.pci.function import PciFunction

_ONES: Final = (0, 0xFF, 0xFFFF, 0, 0xFFFFFFFF)
APERTURE_KINDS: Final = ("io", "mem")


@dataclass(frozen=True)
class Aperture:
    """A host bridge window (ACPI _CRS): CPU addresses [start, end] decoded onto the root bus."""

    kind: str
    start: int
    end: int
    prefetch: bool = False

    def __post_init__(self) -> None:
        if self.kind not in APERTURE_KINDS:
            raise VfiolabError(f"aperture kind {self.kind!r} is not one of {', '.join(APERTURE_KINDS)}")
        if not 0 <= self.start <= self.end:
            raise VfiolabError(f"aperture [{self.start:#x}-{self.end:#x}] is empty or negative")
        if self.kind == "io" and self.end > 0xFFFF:
            raise VfiolabError(f"I/O aperture end {self.end:#x} beyond the 64 KiB x86 port space")
        if self.prefetch and self.kind == "io":
            raise VfiolabError("an I/O aperture cannot be prefetchable")


class _Port:
    """Where a configuration address lands now: the claiming function (None: nobody) and its config space's
    read/write, bound once; ``limit`` is the config bytes reachable there (0 when unclaimed)."""

    __slots__ = ("captures", "fn", "limit", "read", "write")

    def __init__(self, fn: PciFunction | None) -> None:
        self.fn = fn
        self.limit = fn.cfg_limit if fn is not None else 0
        self.read: Callable[[int, int], int] | None = fn.cs.read if fn is not None else None
        self.write: Callable[[int, int, int], None] | None = fn.cs.write if fn is not None else None
        # PCIe Base §2.2.6.2: a function captures its bus number from Type 0 writes (VFs use their PF's).
        self.captures = fn is not None and not fn.is_virtfn


_NOBODY: Final = _Port(None)
"""Where every unclaimed address lands (enumeration probes thousands of empty slots)."""


def _unclaimed(off: int, size: int, what: str) -> int:
    """A request nobody claims: all ones for a read (a write is dropped), after the access checks."""
    if size not in (1, 2, 4) or off & (size - 1) or not 0 <= off < 4096:
        raise ConfigAccessError(f"config {what} of {size} bytes at {off:#x}")
    return _ONES[size]


class ConfigAddress:
    """pci_read_config_*/pci_write_config_* for one (segment, bus, devfn): every access is routed as
    Topology.config_read/config_write route it (through the port cache, dropped when routing changes)."""

    __slots__ = ("_get", "_key", "_topo", "busnr", "devfn", "seg")

    def __init__(self, topology: Topology, seg: int, busnr: int, devfn: int) -> None:
        self._topo, self.seg, self.busnr, self.devfn = topology, seg, busnr, devfn
        self._key = seg << 16 | busnr << 8 | devfn
        self._get = topology._port_of       # the port dict is only ever cleared, never replaced

    def read(self, off: int, size: int) -> int:
        """A configuration read of this address."""
        port = self._get(self._key) or self._topo._port(self.seg, self.busnr, self.devfn)
        if off < port.limit:
            return port.read(off, size)  # type: ignore[misc]  # limit > 0: claimed
        return _unclaimed(off, size, "read")

    def write(self, off: int, size: int, value: int) -> None:
        """A configuration write to this address."""
        port = self._get(self._key) or self._topo._port(self.seg, self.busnr, self.devfn)
        if off < port.limit:
            if port.captures:
                port.fn.captured_bus = self.busnr  # type: ignore[union-attr]
            port.write(off, size, value)  # type: ignore[misc]
        else:
            _unclaimed(off, size, "write")


class Bus:
    """A PCI bus: functions by devfn (their physical place); its number comes from the bridge above it."""

    __slots__ = ("bridge", "bridges", "complex", "no_extcfg", "only_dev0", "parent", "slots", "vfs")

    def __init__(self, complex_: RootComplex, bridge: PciBridge | None, parent: Bus | None) -> None:
        self.complex = complex_
        self.bridge = bridge
        self.parent = parent
        self.slots: dict[int, PciFunction] = {}
        self.vfs: dict[int, PciFunction] = {}
        """SR-IOV VFs of PFs on this bus, by routing ID (bus << 8 | devfn)."""
        self.bridges: list[PciBridge] = []
        # Linux pci_bridge_child_ext_cfg_accessible: conventional secondaries see no extended registers.
        self.no_extcfg: bool = bool(parent is not None and (parent.no_extcfg or
                                                      (bridge is not None and bridge.conventional_secondary)))
        self.only_dev0 = bridge is not None and bridge.is_downstream_port

    def attach(self, devfn: int, fn: PciFunction) -> PciFunction:
        """Place ``fn`` at ``devfn`` on this bus; a bridge gets its secondary bus."""
        if not 0 <= devfn <= 0xFF:
            raise VfiolabError(f"devfn {devfn:#x} outside 0..0xff")
        if devfn in self.slots:
            raise VfiolabError(f"devfn {devfn >> 3:02x}.{devfn & 7:x} already holds {self.slots[devfn]!r}")
        if fn.bus is not None:
            raise VfiolabError(f"{fn!r} is already attached to a bus")
        if self.no_extcfg and fn.cs.size > LEGACY_SIZE and fn.pcie:
            raise VfiolabError(f"{fn!r}: a PCI Express function cannot sit on a conventional PCI bus")
        fn.bus, fn.devfn = self, devfn
        fn.cfg_limit = LEGACY_SIZE if self.no_extcfg else fn.cs.size
        self.slots = dict(sorted({**self.slots, devfn: fn}.items()))
        if isinstance(fn, PciBridge):
            fn.secondary = Bus(self.complex, fn, self)
            fn.add_routing_listener(self.complex.topology.invalidate)
            self.bridges = [f for f in self.slots.values() if isinstance(f, PciBridge)]
        self.complex.topology.invalidate()
        return fn

    def functions(self) -> Iterator[PciFunction]:
        """Functions on this bus in devfn order (VFs excluded)."""
        return iter(self.slots.values())

    def walk(self) -> Iterator[PciFunction]:
        """Every function on this bus and below it, depth first in devfn order (VFs excluded)."""
        for fn in self.slots.values():
            yield fn
            if isinstance(fn, PciBridge) and fn.secondary is not None:
                yield from fn.secondary.walk()

    def reset_all(self, kind: str) -> None:
        """Reset every function on this bus and below (a hot reset of the secondary side)."""
        for fn in list(self.walk()):
            fn.reset(kind)


class RootComplex:
    """A host bridge: its root bus in a segment (domain), the bus numbers it decodes and its apertures."""

    def __init__(self, topology: Topology, segment: int, bus_start: int, bus_end: int,
                 apertures: tuple[Aperture, ...]) -> None:
        self.topology = topology
        self.segment = segment
        self.bus_start, self.bus_end = bus_start, bus_end
        self.apertures = apertures
        self.root = Bus(self, None, None)


class Topology:
    """All host bridges (root complexes) of a machine and the configuration access mechanism in front of them.

    A segment (PCI domain) may hold several host bridges with disjoint bus number ranges, as multi-socket
    servers do (one root bus per PCIe stack).
    """

    def __init__(self) -> None:
        self.host_bridges: list[RootComplex] = []
        """In firmware (ACPI) order: by segment, then by first bus number."""
        self._routes: dict[int, tuple[Bus, bool] | None] = {}
        """(segment, bus) -> (Bus, Type 0 here?) or None; dropped whenever routing may change."""
        self._ports: dict[int, _Port] = {}
        """(segment, bus, devfn) -> where a request lands now; dropped with the routes."""
        self._port_of = self._ports.get     # one bound lookup shared by every ConfigAddress

    def add_host_bridge(self, segment: int = 0, bus_start: int = 0, bus_end: int = 0xFF,
                        apertures: tuple[Aperture, ...] = ()) -> RootComplex:
        """Add a host bridge decoding ``segment`` buses [bus_start, bus_end]; returns it (``.root`` is its bus)."""
        if not 0 <= segment <= 0xFFFF:
            raise VfiolabError(f"segment {segment:#x} outside 0..0xffff")
        if not 0 <= bus_start <= bus_end <= 0xFF:
            raise VfiolabError(f"segment {segment:04x}: bus range [{bus_start:#x}-{bus_end:#x}] invalid")
        for rc in self.host_bridges:
            if rc.segment == segment and rc.bus_start <= bus_end and bus_start <= rc.bus_end:
                raise VfiolabError(f"segment {segment:04x}: bus range [{bus_start:02x}-{bus_end:02x}] overlaps "
                                   f"the host bridge of [{rc.bus_start:02x}-{rc.bus_end:02x}]")
        rc = RootComplex(self, segment, bus_start, bus_end, tuple(apertures))
        self.host_bridges.append(rc)
        self.host_bridges.sort(key=lambda h: (h.segment, h.bus_start))
        self.invalidate()
        return rc

    add_segment = add_host_bridge

    def invalidate(self) -> None:
        """Forget cached routes (bus numbers, ARI forwarding or the tree changed)."""
        self._routes.clear()
        self._ports.clear()

    def invalidate_rids(self, seg: int, rids: list[int]) -> None:
        """Forget what is cached for these routing IDs (VFs came or went; the routes stay valid)."""
        for rid in rids:
            self._ports.pop(seg << 16 | rid, None)

    # ------------------------------------------------------------------ routing
    def _route(self, seg: int, busnr: int) -> tuple[Bus, bool] | None:
        for rc in self.host_bridges:
            if rc.segment == seg and rc.bus_start <= busnr <= rc.bus_end:
                break
        else:
            return None
        bus = rc.root
        if busnr == rc.bus_start:
            return bus, True
        while True:
            for br in bus.bridges:
                d = br.cs.data
                sec = d[0x19]
                if sec <= busnr <= d[0x1A]:
                    assert br.secondary is not None
                    bus = br.secondary
                    if busnr == sec:
                        return bus, True          # Type 1 -> Type 0 conversion
                    break
            else:
                return bus, False                 # nobody forwards it: only VFs may claim it

    def _resolve(self, seg: int, busnr: int, devfn: int) -> PciFunction | None:
        """The function claiming a request to (seg, bus, devfn) now (routing + port and VF rules)."""
        key = seg << 8 | busnr
        if key in self._routes:
            route = self._routes[key]
        else:
            route = self._routes[key] = self._route(seg, busnr)
        if route is None:
            return None
        bus, direct = route
        if direct:
            if devfn >= 8 and bus.only_dev0:
                br = bus.bridge
                if br is None or not br.ari_forwarding():
                    return None         # PCIe Base §7.3.1: a downstream port passes device 0 only
            fn = bus.slots.get(devfn)
            if fn is not None:
                return fn
        return bus.vfs.get(busnr << 8 | devfn) if bus.vfs else None

    def _port(self, seg: int, busnr: int, devfn: int) -> _Port:
        key = seg << 16 | busnr << 8 | devfn
        port = self._ports.get(key)
        if port is None:
            fn = self._resolve(seg, busnr, devfn)
            port = self._ports[key] = _Port(fn) if fn is not None else _NOBODY
        return port

    def find(self, seg: int, busnr: int, devfn: int) -> PciFunction | None:
        """The function a configuration request to (seg, bus, devfn) would reach now, if any."""
        return self._port(seg, busnr, devfn).fn

    # ------------------------------------------------------------------ configuration access
    def config_read(self, seg: int, busnr: int, devfn: int, off: int, size: int) -> int:
        """A configuration read; all ones when no function claims it."""
        port = self._ports.get(seg << 16 | busnr << 8 | devfn) or self._port(seg, busnr, devfn)
        if off < port.limit:
            return port.read(off, size)  # type: ignore[misc]  # limit > 0: claimed
        return _unclaimed(off, size, "read")

    def config_write(self, seg: int, busnr: int, devfn: int, off: int, size: int, value: int) -> None:
        """A configuration write; dropped when no function claims it."""
        port = self._ports.get(seg << 16 | busnr << 8 | devfn) or self._port(seg, busnr, devfn)
        if off < port.limit:
            if port.captures:
                port.fn.captured_bus = busnr  # type: ignore[union-attr]
            port.write(off, size, value)  # type: ignore[misc]
        else:
            _unclaimed(off, size, "write")

    def address(self, seg: int, busnr: int, devfn: int) -> ConfigAddress:
        """Config accessors bound to (seg, bus, devfn), as a struct pci_dev's are to its bus and devfn."""
        return ConfigAddress(self, seg, busnr, devfn)

    def config_dump(self, seg: int, busnr: int, devfn: int, length: int | None = None) -> bytes | None:
        """Every byte software can read from the function (256 or 4096; at most ``length``), as a run of
        dword reads would."""
        fn = self.find(seg, busnr, devfn)
        if fn is None:
            return None
        return fn.cs.dump(fn.cfg_limit if length is None else min(length, fn.cfg_limit))

    # ------------------------------------------------------------------ model side
    def walk(self) -> Iterator[PciFunction]:
        """Every function below every host bridge (VFs excluded), depth first in devfn order."""
        for rc in self.host_bridges:
            yield from rc.root.walk()

    def reset(self, kind: str = RESET_FUNDAMENTAL) -> None:
        """Reset the whole machine (power-on: a fundamental reset)."""
        for rc in self.host_bridges:
            rc.root.reset_all(kind)
