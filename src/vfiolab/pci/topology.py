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

from collections.abc import Iterator
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
    """One PCI segment (domain): a host bridge with its root bus, bus number range and apertures."""

    def __init__(self, topology: Topology, segment: int, bus_start: int, bus_end: int,
                 apertures: tuple[Aperture, ...]) -> None:
        self.topology = topology
        self.segment = segment
        self.bus_start, self.bus_end = bus_start, bus_end
        self.apertures = apertures
        self.root = Bus(self, None, None)


class Topology:
    """All PCI segments of a machine and the configuration access mechanism (ECAM) in front of them."""

    def __init__(self) -> None:
        self.segments: dict[int, RootComplex] = {}
        self._routes: dict[int, tuple[Bus, bool] | None] = {}

    def add_segment(self, segment: int = 0, bus_start: int = 0, bus_end: int = 0xFF,
                    apertures: tuple[Aperture, ...] = ()) -> RootComplex:
        """Add a host bridge decoding ``segment`` buses [bus_start, bus_end]; returns it (``.root`` is its bus)."""
        if not 0 <= segment <= 0xFFFF:
            raise VfiolabError(f"segment {segment:#x} outside 0..0xffff")
        if segment in self.segments:
            raise VfiolabError(f"segment {segment:04x} already exists")
        if not 0 <= bus_start <= bus_end <= 0xFF:
            raise VfiolabError(f"segment {segment:04x}: bus range [{bus_start:#x}-{bus_end:#x}] invalid")
        rc = RootComplex(self, segment, bus_start, bus_end, tuple(apertures))
        self.segments[segment] = rc
        self.invalidate()
        return rc

    def invalidate(self) -> None:
        """Forget cached routes (a bridge's bus numbers changed or the tree changed)."""
        self._routes.clear()

    # ------------------------------------------------------------------ routing
    def _route(self, seg: int, busnr: int) -> tuple[Bus, bool] | None:
        rc = self.segments.get(seg)
        if rc is None or not rc.bus_start <= busnr <= rc.bus_end:
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

    def _target(self, seg: int, busnr: int, devfn: int, off: int) -> PciFunction | None:
        key = seg << 8 | busnr
        try:
            route = self._routes[key]
        except KeyError:
            route = self._routes[key] = self._route(seg, busnr)
        if route is None:
            return None
        bus, direct = route
        if direct:
            if devfn >= 8 and bus.only_dev0:
                br = bus.bridge
                if br is None or not br.ari_forwarding():
                    return None
            fn = bus.slots.get(devfn)
            if fn is None:
                if not bus.vfs:
                    return None
                fn = bus.vfs.get(busnr << 8 | devfn)
                if fn is None:
                    return None
        else:
            if not bus.vfs:
                return None
            fn = bus.vfs.get(busnr << 8 | devfn)
            if fn is None:
                return None
        if off >= fn.cs.size or (off >= LEGACY_SIZE and bus.no_extcfg):
            return None
        return fn

    def find(self, seg: int, busnr: int, devfn: int) -> PciFunction | None:
        """The function a configuration request to (seg, bus, devfn) would reach now, if any."""
        return self._target(seg, busnr, devfn, 0)

    # ------------------------------------------------------------------ configuration access
    def config_read(self, seg: int, busnr: int, devfn: int, off: int, size: int) -> int:
        """A configuration read; all ones when no function claims it."""
        if size not in (1, 2, 4) or off & (size - 1) or not 0 <= off < 4096:
            raise ConfigAccessError(f"config read of {size} bytes at {off:#x}")
        fn = self._target(seg, busnr, devfn, off)
        if fn is None:
            return _ONES[size]
        return fn.cs.read(off, size)

    def config_write(self, seg: int, busnr: int, devfn: int, off: int, size: int, value: int) -> None:
        """A configuration write; dropped when no function claims it."""
        if size not in (1, 2, 4) or off & (size - 1) or not 0 <= off < 4096:
            raise ConfigAccessError(f"config write of {size} bytes at {off:#x}")
        fn = self._target(seg, busnr, devfn, off)
        if fn is None:
            return
        if not fn.is_virtfn:
            fn.captured_bus = busnr
        fn.cs.write(off, size, value)

    def config_dump(self, seg: int, busnr: int, devfn: int) -> bytes | None:
        """Every byte software can read from the function (256 or 4096), as a run of dword reads would."""
        fn = self._target(seg, busnr, devfn, 0)
        if fn is None:
            return None
        n = fn.cs.size
        if n > LEGACY_SIZE and self._target(seg, busnr, devfn, LEGACY_SIZE) is None:
            n = LEGACY_SIZE
        return fn.cs.dump(n)

    # ------------------------------------------------------------------ model side
    def walk(self) -> Iterator[PciFunction]:
        """Every function of every segment (VFs excluded), depth first in devfn order."""
        for seg in sorted(self.segments):
            yield from self.segments[seg].root.walk()

    def reset(self, kind: str = RESET_FUNDAMENTAL) -> None:
        """Reset the whole machine (power-on: a fundamental reset)."""
        for seg in sorted(self.segments):
            self.segments[seg].root.reset_all(kind)
