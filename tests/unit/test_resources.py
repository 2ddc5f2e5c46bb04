"""Resource assignment (drivers/pci/setup-bus.c, setup-res.c, x86): hand-worked placements, and invariants
on whole machines: alignment, containment in the parent window, no overlap, and the registers
programmed with exactly the assigned ranges (read back through configuration reads)."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from vfiolab.pci import regs
from vfiolab.pci.bridge import RootPort
from vfiolab.pci.enumerate import Enumeration, EnumOptions, enumerate_topology
from vfiolab.pci.function import Bar, ConventionalDevice, PcieEndpoint
from vfiolab.pci.pcidev import (
    IORESOURCE_IO,
    IORESOURCE_MEM_64,
    IORESOURCE_PREFETCH,
    PCI_BRIDGE_IO_WINDOW,
    PCI_BRIDGE_MEM_WINDOW,
    PCI_BRIDGE_PREF_MEM_WINDOW,
    PciDev,
)
from vfiolab.pci.topology import Aperture, Topology
from vfiolab.platform import Platform, generate_fabric

MEM32 = Aperture("mem", 0x80000000, 0x8FFFFFFF)
HIGH = Aperture("mem", 0x800000000, 0x8FFFFFFFF)


def machine(apertures: tuple[Aperture, ...], *endpoints: PcieEndpoint, hotplug: bool = False,
            on_root: tuple[ConventionalDevice, ...] = ()) -> tuple[Topology, Enumeration]:
    t = Topology()
    rc = t.add_host_bridge(0, 0, 0xFF, apertures)
    express: dict[str, object] = {}
    if hotplug:
        from vfiolab.pci.caps.express import SlotCaps

        express["slot"] = SlotCaps(number=1, hotplug=True)
    rp = rc.root.attach(8, RootPort(0x8086, 0x2030, express=express))
    assert rp.secondary is not None
    for i, ep in enumerate(endpoints):
        rp.secondary.attach(i, ep)
    for i, dev in enumerate(on_root):
        rc.root.attach(regs.devfn(4 + i, 0), dev)
    return t, enumerate_topology(t, EnumOptions(realloc=False))


def window(dev: PciDev, idx: int) -> tuple[int, int]:
    r = dev.resources[idx]
    assert r.assigned, f"{dev.name} window {idx} unassigned"
    return r.start, r.end


def test_worked_example_memory_window_and_bars() -> None:
    # One 1 MiB and one 64 KiB BAR: window = ALIGN(1M + 64K, 1M) = 2 MiB at the aperture start, BARs placed
    # by decreasing alignment (pdev_sort_resources) from the bottom (first fit).
    ep = PcieEndpoint(0x1234, 0x1, 0x020000, bars=[Bar(0, "mem32", 0x10000), Bar(2, "mem32", 0x100000)])
    t, e = machine((MEM32,), ep)
    rp = e.find("0000:00:01.0")
    assert window(rp, PCI_BRIDGE_MEM_WINDOW) == (0x80000000, 0x801FFFFF)
    assert t.config_read(0, 0, 8, regs.MEMORY_BASE, 4) == 0x80108000        # limit 801, base 800
    dev = e.find("0000:01:00.0")
    assert dev.resources[2].start == 0x80000000 and dev.resources[0].start == 0x80100000
    assert dev.read(regs.BASE_ADDRESS_0, 4) == 0x80100000
    assert dev.read(regs.BASE_ADDRESS_0 + 8, 4) == 0x80000000
    # No I/O and no prefetchable resources below: those windows stay off (base above limit).
    assert not rp.resources[PCI_BRIDGE_IO_WINDOW].assigned
    assert t.config_read(0, 0, 8, regs.IO_BASE, 2) & 0xF0F0 == 0x00F0
    assert t.config_read(0, 0, 8, regs.PREF_MEMORY_BASE, 4) & 0xFFF0FFF0 == 0x0000FFF0


def test_64bit_prefetchable_goes_above_4g_and_32bit_prefetchable_into_the_mmio_window() -> None:
    ep = PcieEndpoint(0x1234, 0x1, 0x030000, bars=[Bar(0, "mem64", 0x10000000, True),
                                                    Bar(2, "mem32", 0x100000, True)])
    t, e = machine((MEM32, HIGH), ep)
    rp, dev = e.find("0000:00:01.0"), e.find("0000:01:00.0")
    # pbus_select_window_for_type(): with a 64-bit prefetchable window, 32-bit prefetchable BARs go to
    # the non-prefetchable window; __pci_assign_resource() puts 64-bit ones above 4 GiB first.
    assert window(rp, PCI_BRIDGE_PREF_MEM_WINDOW) == (0x800000000, 0x80FFFFFFF)
    assert window(rp, PCI_BRIDGE_MEM_WINDOW) == (0x80000000, 0x800FFFFF)
    assert dev.resources[0].start == 0x800000000 and dev.resources[0].flags & IORESOURCE_MEM_64
    assert dev.resources[2].start == 0x80000000 and dev.resources[2].flags & IORESOURCE_PREFETCH
    assert dev.read(regs.BASE_ADDRESS_0 + 4, 4) == 0x8
    assert t.config_read(0, 0, 8, regs.PREF_BASE_UPPER32, 4) == 0x8
    assert t.config_read(0, 0, 8, regs.PREF_LIMIT_UPPER32, 4) == 0x8


def test_io_bars_on_the_root_bus_skip_isa_aliases() -> None:
    # x86 pcibios_align_resource(): an I/O start with bits 8-9 set moves to the next 1 KiB boundary.
    devs = tuple(ConventionalDevice(0x8086, 0x107C, 0x020000, bars=[Bar(0, "io", 0x100)]) for _ in range(3))
    t, e = machine((Aperture("io", 0x1000, 0xFFFF), MEM32), on_root=devs)
    starts = [e.find(f"0000:00:{4 + i:02x}.0").resources[0].start for i in range(3)]
    assert starts == [0x1000, 0x1400, 0x1800]
    assert [t.config_read(0, 0, regs.devfn(4 + i, 0), regs.BASE_ADDRESS_0, 4) for i in range(3)] == [
        0x1001, 0x1401, 0x1801]


def test_hotplug_ports_get_the_default_hotplug_windows() -> None:
    _t, e = machine((Aperture("io", 0x1000, 0xFFFF), MEM32, HIGH), hotplug=True)
    rp = e.find("0000:00:01.0")
    # pci_hotplug_io_size 256 -> one 4 KiB I/O window; 2 MiB memory and 2 MiB prefetchable.
    assert window(rp, PCI_BRIDGE_IO_WINDOW) == (0x1000, 0x1FFF)
    assert window(rp, PCI_BRIDGE_MEM_WINDOW) == (0x80000000, 0x801FFFFF)
    assert window(rp, PCI_BRIDGE_PREF_MEM_WINDOW) == (0x800000000, 0x8001FFFFF)


def test_what_does_not_fit_stays_unassigned_and_unprogrammed() -> None:
    small = Aperture("mem", 0x80000000, 0x800FFFFF)
    ep = PcieEndpoint(0x1234, 0x1, 0x020000, bars=[Bar(0, "mem32", 0x200000)])
    _t, e = machine((small,), ep)
    dev = e.find("0000:01:00.0")
    assert (dev, 0) in e.unassigned
    assert dev.read(regs.BASE_ADDRESS_0, 4) == 0
    # reset_resource() dropped the BAR, so a driver's pci_enable_device() leaves memory decode off.
    assert e.enable_device(dev) and not dev.read(regs.COMMAND, 2) & regs.COMMAND_MEMORY


def check_invariants(e: Enumeration) -> int:
    """Alignment, containment, no overlap, registers = assignment.  Returns how many resources were checked."""
    n = 0
    for dev in e.devices:
        for idx, r in enumerate(dev.resources):
            if not r.assigned or not r.flags or r.parent is None:
                continue
            n += 1
            p = r.parent
            assert p.start <= r.start <= r.end <= p.end, f"{dev.name} res {idx} outside its window"
            if idx < 6 and not dev.is_virtfn:
                assert r.start % r.size == 0
                off = regs.BASE_ADDRESS_0 + 4 * idx
                val = dev.read(off, 4)
                if r.flags & IORESOURCE_MEM_64:
                    val |= dev.read(off + 4, 4) << 32
                mask = 0x3 if r.flags & IORESOURCE_IO else 0xF
                assert val & ~mask == r.start, f"{dev.name} BAR{idx} {val:#x} != {r.start:#x}"
            elif 7 <= idx <= 12:
                assert dev.sriov is not None and r.start % dev.sriov.barsz[idx - 7] == 0
            elif idx == PCI_BRIDGE_IO_WINDOW:
                assert r.start % 0x1000 == 0 and (r.end + 1) % 0x1000 == 0
                lo = dev.read(regs.IO_BASE, 2)
                base = (lo & 0xF0) << 8
                limit = ((lo >> 8) & 0xF0) << 8 | 0xFFF
                if lo & 1:
                    base |= dev.read(regs.IO_BASE_UPPER16, 2) << 16
                    limit |= dev.read(regs.IO_LIMIT_UPPER16, 2) << 16
                assert (base, limit) == (r.start, r.end)
            elif idx in (PCI_BRIDGE_MEM_WINDOW, PCI_BRIDGE_PREF_MEM_WINDOW):
                assert r.start % 0x100000 == 0 and (r.end + 1) % 0x100000 == 0
                reg = regs.MEMORY_BASE if idx == PCI_BRIDGE_MEM_WINDOW else regs.PREF_MEMORY_BASE
                v = dev.read(reg, 4)
                base, limit = (v & 0xFFF0) << 16, (v & 0xFFF00000) | 0xFFFFF
                if idx == PCI_BRIDGE_PREF_MEM_WINDOW and v & 1:
                    base |= dev.read(regs.PREF_BASE_UPPER32, 4) << 32
                    limit |= dev.read(regs.PREF_LIMIT_UPPER32, 4) << 32
                assert (base, limit) == (r.start, r.end)
        for idx in (PCI_BRIDGE_MEM_WINDOW, PCI_BRIDGE_PREF_MEM_WINDOW):
            r = dev.resources[idx]
            if dev.is_bridge and not r.assigned and r.flags:
                reg = regs.MEMORY_BASE if idx == PCI_BRIDGE_MEM_WINDOW else regs.PREF_MEMORY_BASE
                v = dev.read(reg, 4)
                assert (v & 0xFFF0) << 16 > (v & 0xFFF00000), f"{dev.name}: unused window left open"
    # Siblings never overlap.
    windows = {id(r.parent): r.parent for d in e.devices for r in d.resources if r.parent is not None}
    for w in windows.values():
        kids = sorted(w.children, key=lambda k: k.start)
        for a, b in itertools.pairwise(kids):
            assert a.end < b.start, f"overlap {a} {b}"
    return n


def test_invariants_on_the_default_platform() -> None:
    m = Platform.load().boot()
    assert not m.enumeration.unassigned
    assert check_invariants(m.enumeration) > 60


@settings(max_examples=8, deadline=None)
@given(st.integers(30, 300), st.integers(0, 8), st.sampled_from([2, 4, 8]))
def test_invariants_on_generated_fabrics(n: int, vfs: int, ports: int) -> None:
    m = generate_fabric(n, vfs_per_pf=vfs, ports_per_switch=ports).boot()
    assert not m.enumeration.unassigned
    assert check_invariants(m.enumeration) > 0
    assert len(m.snapshot()) >= n
