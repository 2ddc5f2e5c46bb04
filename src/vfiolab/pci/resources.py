"""Resource assignment after the scan, following Linux drivers/pci/setup-bus.c, setup-res.c and bus.c (x86).

Bridge windows are sized bottom-up (``__pci_bus_size_bridges``: I/O in 4 KiB, memory in 1 MiB steps,
the head alignment of ``calculate_head_align``; hotplug bridges get the default hotplug extra; SR-IOV
BARs, disabled ROMs and the hotplug extra are optional "add" sizes when a realloc list is in use), then
assigned top-down (``__pci_bus_assign_resources``): each bus's requests sorted by alignment, each one
first-fit from the lowest free address of the best matching window (``pci_bus_alloc_resource`` with the
x86 ``pcibios_align_resource``), BARs and windows programmed with config writes only.  Failed rounds
release leaf bridge windows and retry, as ``pci_assign_unassigned_root_bus_resources`` does.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from vfiolab.pci import regs
from vfiolab.pci.pcidev import (
    IORESOURCE_DISABLED,
    IORESOURCE_IO,
    IORESOURCE_MEM,
    IORESOURCE_MEM_64,
    IORESOURCE_PCI_FIXED,
    IORESOURCE_PREFETCH,
    IORESOURCE_ROM_ENABLE,
    IORESOURCE_SIZEALIGN,
    IORESOURCE_STARTALIGN,
    IORESOURCE_TYPE_BITS,
    IORESOURCE_UNSET,
    PCI_BRIDGE_IO_WINDOW,
    PCI_BRIDGE_MEM_WINDOW,
    PCI_BRIDGE_PREF_MEM_WINDOW,
    PCI_BRIDGE_RESOURCES,
    PCI_IOV_RESOURCES,
    PCI_ROM_RESOURCE,
    PCI_SRIOV_NUM_BARS,
    PciBus,
    PciDev,
    Resource,
)

PCI_RES_TYPE_MASK: Final = IORESOURCE_IO | IORESOURCE_MEM | IORESOURCE_PREFETCH | IORESOURCE_MEM_64
SZ_1K: Final = 0x400
SZ_4K: Final = 0x1000
SZ_1M: Final = 0x100000
PCIBIOS_MIN_IO: Final = 0x1000            # arch/x86/include/asm/pci.h
BIOS_END: Final = 0x100000                # arch/x86/include/asm/e820/types.h: the low 1 MiB is ISA's
# drivers/pci/pci.c defaults (pci=hpiosize=, hpmmiosize=, hpmmioprefsize=)
HOTPLUG_IO_SIZE: Final = 256
HOTPLUG_MMIO_SIZE: Final = 2 * SZ_1M
HOTPLUG_MMIO_PREF_SIZE: Final = 2 * SZ_1M
PCI_CLASS_BRIDGE_PCI: Final = 0x0604
PCI_CLASS_BRIDGE_HOST: Final = 0x0600
PCI_CLASS_NOT_DEFINED: Final = 0x0000
PCI_CLASS_SYSTEM_PIC: Final = 0x0800
PREF_RANGE_TYPE_64: Final = 0x01

# drivers/pci/bus.c regions that pci_bus_alloc_resource() clips windows to
_PCI_32_BIT: Final = (0, 0xFFFFFFFF)
_PCI_64_BIT: Final = (0, 0xFFFFFFFFFFFFFFFF)
_PCI_HIGH: Final = (0x100000000, 0xFFFFFFFFFFFFFFFF)


def _align(x: int, a: int) -> int:
    return (x + a - 1) // a * a if a else x


@dataclass
class AddEntry:
    """Linux struct pci_dev_resource: a resource, its saved state and its optional add size / alignment."""

    dev: PciDev
    res: Resource
    idx: int
    start: int
    end: int
    flags: int
    add_size: int = 0
    min_align: int = 0


class ResList:
    """A list of AddEntry with lookup by resource (realloc_head, fail_head, save_head)."""

    def __init__(self) -> None:
        self._d: dict[int, AddEntry] = {}

    def add(self, dev: PciDev, res: Resource, idx: int, add_size: int = 0, min_align: int = 0) -> None:
        self._d[id(res)] = AddEntry(dev, res, idx, res.start, res.end, res.flags, add_size, min_align)

    def get(self, res: Resource) -> AddEntry | None:
        return self._d.get(id(res))

    def remove(self, res: Resource) -> None:
        self._d.pop(id(res), None)

    def __iter__(self) -> Iterator[AddEntry]:
        return iter(list(self._d.values()))

    def __len__(self) -> int:
        return len(self._d)

    def clear(self) -> None:
        self._d.clear()


def _restore(e: AddEntry) -> None:
    """pci_dev_res_restore()."""
    if e.res.assigned:
        return
    e.res.start, e.res.end, e.res.flags = e.start, e.end, e.flags


# ---------------------------------------------------------------------------- resource predicates
def resource_num(dev: PciDev, res: Resource) -> int:
    for i, r in enumerate(dev.resources):
        if r is res:
            return i
    raise ValueError("resource does not belong to the device")


def is_iov(idx: int) -> bool:
    return PCI_IOV_RESOURCES <= idx < PCI_IOV_RESOURCES + PCI_SRIOV_NUM_BARS


def is_bridge_win(idx: int) -> bool:
    return PCI_BRIDGE_RESOURCES <= idx <= PCI_BRIDGE_PREF_MEM_WINDOW


def resource_alignment(dev: PciDev, idx: int) -> int:
    """pci_resource_alignment(): per-VF size for SR-IOV BARs, else size (SIZEALIGN) or start (STARTALIGN)."""
    if is_iov(idx):
        assert dev.sriov is not None
        return dev.sriov.barsz[idx - PCI_IOV_RESOURCES]
    res = dev.resources[idx]
    if res.flags & IORESOURCE_SIZEALIGN:
        return res.size
    if res.flags & IORESOURCE_STARTALIGN:
        return res.start
    return 0


def is_optional(dev: PciDev, idx: int) -> bool:
    """pci_resource_is_optional(): SR-IOV BARs, a disabled ROM, an empty bridge window."""
    res = dev.resources[idx]
    if is_iov(idx):
        return True
    if idx == PCI_ROM_RESOURCE and not res.flags & IORESOURCE_ROM_ENABLE:
        return True
    return is_bridge_win(idx) and res.size <= 0


def resources_assignable(dev: PciDev) -> bool:
    """pdev_resources_assignable(): not classless devices, host bridges or firmware-enabled IOAPICs."""
    cls = dev.class_ >> 8
    if cls in (PCI_CLASS_NOT_DEFINED, PCI_CLASS_BRIDGE_HOST):
        return False
    decoding = regs.COMMAND_IO | regs.COMMAND_MEMORY
    return not (cls == PCI_CLASS_SYSTEM_PIC and dev.read(regs.COMMAND, 2) & decoding)


def resource_assignable(dev: PciDev, idx: int) -> bool:
    res = dev.resources[idx]
    if not res.flags:
        return False
    return not (is_bridge_win(idx) and res.flags & IORESOURCE_DISABLED)


def should_fit(dev: PciDev, idx: int) -> bool:
    """pdev_resource_should_fit()."""
    res = dev.resources[idx]
    if res.assigned or res.flags & IORESOURCE_PCI_FIXED:
        return False
    return resource_assignable(dev, idx)


# ---------------------------------------------------------------------------- window selection
def _find_bus_resource_of_type(bus: PciBus, type_mask: int, typ: int) -> Resource | None:
    assigned = None
    for r in bus.resources:
        if r.flags & type_mask != typ:
            continue
        if not r.assigned:
            return r
        if assigned is None:
            assigned = r
    return assigned


def select_window_for_type(bus: PciBus, typ: int) -> Resource | None:
    """pbus_select_window_for_type(): the bridge window a resource of this type goes into."""
    iores = typ & IORESOURCE_TYPE_BITS
    typ &= PCI_RES_TYPE_MASK
    if iores not in (IORESOURCE_IO, IORESOURCE_MEM):
        return None
    if bus.is_root:
        for t in (typ, typ & ~IORESOURCE_MEM_64, typ & ~(IORESOURCE_MEM_64 | IORESOURCE_PREFETCH)):
            win = _find_bus_resource_of_type(bus, t, t)
            if win is not None:
                return win
        return None
    io, mmio, pref = bus.resources[0], bus.resources[1], bus.resources[2]
    if iores == IORESOURCE_IO:
        return io if io.flags & IORESOURCE_IO else None
    mmio_ok = mmio if mmio.flags & IORESOURCE_MEM else None
    pref_ok = pref if pref.flags & IORESOURCE_MEM else None
    if not typ & IORESOURCE_PREFETCH or pref_ok is None:
        return mmio_ok
    if typ & IORESOURCE_MEM_64 or not pref_ok.flags & IORESOURCE_MEM_64:
        return pref_ok
    return mmio_ok


def select_window(bus: PciBus, res: Resource) -> Resource | None:
    """pbus_select_window(): the current parent of an assigned resource, else by type."""
    if res.assigned:
        return res.parent
    return select_window_for_type(bus, res.flags)


def min_window_alignment(bus: PciBus, flags: int) -> int:
    """pci_min_window_alignment(): 1 MiB for memory windows, 4 KiB for I/O (no 1K-granular bridges)."""
    if flags & IORESOURCE_MEM:
        return SZ_1M
    if flags & IORESOURCE_IO:
        return SZ_4K
    return 1


# ---------------------------------------------------------------------------- sizing (bottom-up)
def _calculate_iosize(size: int, min_size: int, size1: int, add_size: int, children_add_size: int,
                      old_size: int, align: int) -> int:
    size = max(size, min_size)
    if old_size == 1:
        old_size = 0
    size += size1                       # (no ISA aliasing fold-up: CONFIG_ISA is off on x86_64)
    size = max(size, add_size) + children_add_size
    return _align(max(size, old_size), align)


def _calculate_memsize(size: int, min_size: int, children_add_size: int, align: int) -> int:
    return _align(max(size, min_size) + children_add_size, align)


def _calculate_head_align(aligns: list[int], max_order: int) -> int:
    """calculate_head_align(): the smallest window start alignment that leaves no gap before the big ones."""
    head_align = 1 << (max_order + 20)
    remainder = 0
    for order in range(max_order - 1, -1, -1):
        align1 = 1 << (order + 20)
        remainder += aligns[order]
        while head_align > align1 and remainder >= head_align // 2:
            head_align //= 2
            remainder -= head_align
    return head_align


def _size_io(bus: PciBus, add_size: int, realloc: ResList | None) -> None:
    """pbus_size_io() (setup-bus.c)."""
    b_res = select_window_for_type(bus, IORESOURCE_IO)
    if b_res is None or b_res.assigned:
        return
    min_align = min_window_alignment(bus, IORESOURCE_IO)
    size = size1 = children_add = 0
    for dev in bus.devices:
        for idx, r in enumerate(dev.resources):
            if not r.flags & IORESOURCE_IO or r.assigned or not resource_assignable(dev, idx):
                continue
            if r.size < SZ_1K:
                size += r.size
            else:
                size1 += r.size
            align = resource_alignment(dev, idx)
            min_align = max(min_align, align)
            if realloc is not None:
                e = realloc.get(r)
                children_add += e.add_size if e else 0
    size0 = _calculate_iosize(size, 0 if realloc is not None else add_size, size1, 0, 0, b_res.size, min_align)
    if size0:
        b_res.flags &= ~IORESOURCE_DISABLED
    sz1 = size0
    if realloc is not None and (add_size > 0 or children_add > 0):
        sz1 = _calculate_iosize(size, 0, size1, add_size, children_add, b_res.size, min_align)
    if not size0 and not sz1:
        b_res.flags |= IORESOURCE_DISABLED
        return
    b_res.set_range(min_align, size0)
    b_res.flags |= IORESOURCE_STARTALIGN
    if bus.self_dev is not None and sz1 > size0 and realloc is not None:
        b_res.flags &= ~IORESOURCE_DISABLED
        realloc.add(bus.self_dev, b_res, PCI_BRIDGE_IO_WINDOW, sz1 - size0, min_align)


def _size_mem(bus: PciBus, b_res: Resource | None, add_size: int, realloc: ResList | None) -> None:
    """pbus_size_mem() (setup-bus.c)."""
    if b_res is None or b_res.assigned:
        return
    aligns = [0] * 28
    max_order = size = children_add = add_align = 0
    for dev in bus.devices:
        if not resources_assignable(dev):
            continue
        for idx, r in enumerate(dev.resources):
            if not r.flags & IORESOURCE_MEM or not should_fit(dev, idx) or select_window(bus, r) is not b_res:
                continue
            align = resource_alignment(dev, idx)
            order = max((align & -align).bit_length() - 1 - 20, 0) if align else 0
            if order >= len(aligns):
                r.flags = 0
                continue
            if realloc is not None:
                # pbus_size_mem_optional()
                e = realloc.get(r) if is_bridge_win(idx) else None
                if e is not None:
                    children_add += e.add_size
                    add_align = max(add_align, e.min_align)
                if is_optional(dev, idx):
                    if e is None:
                        realloc.add(dev, r, idx, 0, align)
                    children_add += r.size
                    add_align = max(align, add_align)
                    continue
            r_size = r.size
            size += max(r_size, align)
            if r_size <= align:
                aligns[order] += align
            max_order = max(max_order, order)
    win_align = min_window_alignment(bus, b_res.flags)
    min_align = max(_calculate_head_align(aligns, max_order), win_align)
    size0 = _calculate_memsize(size, 0 if realloc is not None else add_size, 0, win_align)
    size1 = 0
    if size0:
        b_res.set_range(min_align, size0)
        b_res.flags &= ~IORESOURCE_DISABLED
    if realloc is not None and (add_size > 0 or children_add > 0):
        add_align = max(min_align, add_align)
        size1 = _calculate_memsize(size, add_size, children_add, win_align)
    if not size0 and not size1:
        b_res.flags |= IORESOURCE_DISABLED
        return
    b_res.set_range(min_align, size0)
    b_res.flags |= IORESOURCE_STARTALIGN
    if bus.self_dev is not None and realloc is not None and (size1 > size0 or add_align > min_align):
        b_res.flags &= ~IORESOURCE_DISABLED
        idx = PCI_BRIDGE_PREF_MEM_WINDOW if b_res.flags & IORESOURCE_PREFETCH else PCI_BRIDGE_MEM_WINDOW
        realloc.add(bus.self_dev, b_res, idx, max(size1 - size0, 0), add_align)


def _bridge_check_ranges(bus: PciBus) -> None:
    """pci_bridge_check_ranges(): which windows the bridge has (probed at scan time)."""
    br = bus.self_dev
    assert br is not None
    br.resources[PCI_BRIDGE_MEM_WINDOW].flags |= IORESOURCE_MEM
    if br.io_window:
        br.resources[PCI_BRIDGE_IO_WINDOW].flags |= IORESOURCE_IO
    if br.pref_window:
        r = br.resources[PCI_BRIDGE_PREF_MEM_WINDOW]
        r.flags |= IORESOURCE_MEM | IORESOURCE_PREFETCH
        if br.pref_64_window:
            r.flags |= IORESOURCE_MEM_64 | PREF_RANGE_TYPE_64


def size_bridges(bus: PciBus, realloc: ResList | None) -> None:
    """__pci_bus_size_bridges(): children first, then this bus's windows (x86 does not size root buses)."""
    for dev in bus.devices:
        if dev.subordinate is not None and dev.hdr_type == regs.HEADER_TYPE_BRIDGE:
            size_bridges(dev.subordinate, realloc)
    if bus.is_root or bus.self_dev is None or bus.self_dev.hdr_type != regs.HEADER_TYPE_BRIDGE:
        return
    _bridge_check_ranges(bus)
    add_io = add_mmio = add_pref = 0
    if bus.self_dev.is_hotplug_bridge:
        add_io, add_mmio, add_pref = HOTPLUG_IO_SIZE, HOTPLUG_MMIO_SIZE, HOTPLUG_MMIO_PREF_SIZE
    _size_io(bus, add_io, realloc)
    b_res = select_window_for_type(bus, IORESOURCE_MEM | IORESOURCE_PREFETCH | IORESOURCE_MEM_64)
    if b_res is not None and b_res.flags & IORESOURCE_PREFETCH:
        _size_mem(bus, b_res, add_pref, realloc)
    _size_mem(bus, select_window_for_type(bus, IORESOURCE_MEM), add_mmio, realloc)


# ---------------------------------------------------------------------------- allocation
class Allocator:
    """The resource tree operations of kernel/resource.c used by PCI: first-fit allocation, release."""

    def __init__(self, pci_mem_start: int) -> None:
        self.pci_mem_start = pci_mem_start

    @staticmethod
    def _align_resource(dev: PciDev, flags: int, avail_start: int, full_start: int, size: int,
                        align: int) -> int:
        """x86 pcibios_align_resource() (with pci_align_resource() for memory)."""
        start = avail_start
        if flags & IORESOURCE_IO:
            # arch/x86/pci/i386.c: avoid the ISA alias ranges x100-x3ff (PCI_CAN_SKIP_ISA_ALIGN is off).
            if start & 0x300:
                start = (start + 0x3FF) & ~0x3FF
            return start
        if flags & IORESOURCE_MEM:
            if size % align:
                remainder = size - size // align * align
                if not remainder % min_window_alignment(dev.bus, flags) and avail_start >= remainder:
                    cand = avail_start - remainder
                    if full_start <= cand:
                        start = cand
            start = max(start, BIOS_END)
        return start

    def find_space(self, root: Resource, new: Resource, dev: PciDev, size: int, lo: int, hi: int,
                   align: int) -> int | None:
        """__find_resource_space() (kernel/resource.c): the lowest suitable start in a gap of ``root``."""
        kids = root.children
        i = 0
        avail_start = root.start
        if kids and kids[0].start == root.start:
            avail_start = kids[0].end + 1
            i = 1
        while True:
            avail_end = kids[i].start - 1 if i < len(kids) else root.end
            if avail_end >= avail_start:
                fs, fe = max(avail_start, lo), min(avail_end, hi)
                if fe >= fs:
                    a_start = _align(fs, align)
                    if a_start >= fs:
                        st = self._align_resource(dev, new.flags, a_start, fs, size, align)
                        if st >= fs and st + size - 1 <= fe:
                            return st
            if i >= len(kids) or kids[i].end == root.end:
                return None
            avail_start = kids[i].end + 1
            i += 1

    @staticmethod
    def insert(root: Resource, res: Resource) -> None:
        kids = root.children
        pos = len(kids)
        while pos and kids[pos - 1].start > res.start:
            pos -= 1
        kids.insert(pos, res)
        res.parent = root

    @staticmethod
    def release(res: Resource) -> None:
        """release_resource()."""
        if res.parent is not None:
            res.parent.children.remove(res)
            res.parent = None

    def release_children(self, res: Resource) -> None:
        """release_child_resources(): every descendant goes back to [0, size-1], unparented."""
        for kid in list(res.children):
            self.release_children(kid)
            size = kid.size
            kid.parent = None
            kid.start, kid.end = 0, size - 1
        res.children = []

    def _alloc_from_region(self, bus: PciBus, dev: PciDev, res: Resource, size: int, align: int,
                           lo_min: int, type_mask: int, region: tuple[int, int]) -> bool:
        """pci_bus_alloc_from_region() (drivers/pci/bus.c)."""
        type_mask |= IORESOURCE_TYPE_BITS
        for r in bus.resources:
            if r.flags & (IORESOURCE_UNSET | IORESOURCE_DISABLED) or not r.flags:
                continue
            if (res.flags ^ r.flags) & type_mask:
                continue
            if r.flags & IORESOURCE_PREFETCH and not res.flags & IORESOURCE_PREFETCH:
                continue
            a_start, a_end = max(r.start, region[0]), min(r.end, region[1])
            if a_end < a_start:
                continue
            min_used = a_start if a_start else lo_min
            if size > a_end - min_used + 1:
                continue
            st = self.find_space(r, res, dev, size, min_used, a_end, align)
            if st is not None:
                res.start, res.end = st, st + size - 1
                self.insert(r, res)
                return True
        return False

    def bus_alloc(self, bus: PciBus, dev: PciDev, res: Resource, size: int, align: int, lo_min: int,
                  type_mask: int) -> bool:
        """pci_bus_alloc_resource() (drivers/pci/bus.c): 64-bit resources try above 4 GiB first."""
        if res.flags & IORESOURCE_MEM_64:
            return (self._alloc_from_region(bus, dev, res, size, align, lo_min, type_mask, _PCI_HIGH)
                    or self._alloc_from_region(bus, dev, res, size, align, lo_min, type_mask, _PCI_64_BIT))
        return self._alloc_from_region(bus, dev, res, size, align, lo_min, type_mask, _PCI_32_BIT)

    def _assign_on_bus(self, bus: PciBus, dev: PciDev, res: Resource, size: int, align: int) -> bool:
        """__pci_assign_resource(): exact prefetch/64-bit match first, then looser windows."""
        lo_min = PCIBIOS_MIN_IO if res.flags & IORESOURCE_IO else self.pci_mem_start
        if self.bus_alloc(bus, dev, res, size, align, lo_min, IORESOURCE_PREFETCH | IORESOURCE_MEM_64):
            return True
        pf64 = IORESOURCE_PREFETCH | IORESOURCE_MEM_64
        if res.flags & pf64 == pf64 and self.bus_alloc(bus, dev, res, size, align, lo_min,
                                                      IORESOURCE_PREFETCH):
            return True
        if res.flags & pf64:
            return self.bus_alloc(bus, dev, res, size, align, lo_min, 0)
        return False

    def _assign_any(self, dev: PciDev, res: Resource, size: int, align: int) -> bool:
        """_pci_assign_resource(): walk up through transparent bridges."""
        bus = dev.bus
        while True:
            if self._assign_on_bus(bus, dev, res, size, align):
                return True
            if bus.parent is None or bus.self_dev is None or not bus.self_dev.transparent:
                return False
            bus = bus.parent

    def assign_resource(self, dev: PciDev, idx: int) -> bool:
        """pci_assign_resource() (setup-res.c): allocate and program one resource."""
        res = dev.resources[idx]
        if res.flags & IORESOURCE_PCI_FIXED:
            return True
        res.flags |= IORESOURCE_UNSET
        align = resource_alignment(dev, idx)
        if not align:
            return False
        if not self._assign_any(dev, res, res.size, align):
            return False                # (no firmware address to fall back to: pci_revert_fw_address)
        res.flags &= ~(IORESOURCE_UNSET | IORESOURCE_STARTALIGN)
        if is_bridge_win(idx):
            res.flags &= ~IORESOURCE_DISABLED
        if idx < PCI_BRIDGE_RESOURCES:
            update_resource(dev, idx)
        return True

    def reassign_resource(self, dev: PciDev, idx: int, add_size: int, min_align: int) -> bool:
        """pci_reassign_resource(): grow an assigned resource by ``add_size`` (re-placing it)."""
        res = dev.resources[idx]
        if res.flags & IORESOURCE_PCI_FIXED:
            return True
        flags = res.flags
        res.flags |= IORESOURCE_UNSET
        if res.parent is None:
            return False
        old = (res.start, res.end, res.parent)
        self.release(res)
        if not self._assign_any(dev, res, res.size + add_size, min_align):
            res.start, res.end = old[0], old[1]
            self.insert(old[2], res)
            res.flags = flags
            return False
        res.flags &= ~(IORESOURCE_UNSET | IORESOURCE_STARTALIGN)
        if idx < PCI_BRIDGE_RESOURCES:
            update_resource(dev, idx)
        return True

    def release_resource(self, dev: PciDev, idx: int) -> None:
        """pci_release_resource()."""
        res = dev.resources[idx]
        if res.parent is None:
            return
        self.release(res)
        size = res.size
        res.start, res.end = 0, size - 1
        res.flags |= IORESOURCE_UNSET


# ---------------------------------------------------------------------------- programming the hardware
def update_resource(dev: PciDev, idx: int) -> None:
    """pci_update_resource() (setup-res.c): write a BAR, the ROM BAR (only when enabled) or a VF BAR."""
    res = dev.resources[idx]
    if is_iov(idx):
        _iov_update_resource(dev, idx)
        return
    if dev.is_virtfn or not res.flags or res.flags & (IORESOURCE_UNSET | IORESOURCE_PCI_FIXED):
        return
    new = res.start
    if res.flags & IORESOURCE_IO:
        new |= res.flags & 0x3
    elif idx == PCI_ROM_RESOURCE:
        if not res.flags & IORESOURCE_ROM_ENABLE:
            return                      # setup-res.c: ROM BARs are only written when enabled
        new |= regs.ROM_ADDRESS_ENABLE
    else:
        new |= res.flags & 0xF
    reg = dev.rom_base_reg if idx == PCI_ROM_RESOURCE else regs.BASE_ADDRESS_0 + 4 * idx
    disable = bool(res.flags & IORESOURCE_MEM_64)
    cmd = 0
    if disable:
        # A 64-bit BAR cannot be updated atomically: turn memory decode off around it.
        cmd = dev.read(regs.COMMAND, 2)
        dev.write(regs.COMMAND, 2, cmd & ~regs.COMMAND_MEMORY)
    dev.write(reg, 4, new & 0xFFFFFFFF)
    dev.read(reg, 4)
    if res.flags & IORESOURCE_MEM_64:
        dev.write(reg + 4, 4, res.start >> 32)
        dev.read(reg + 4, 4)
    if disable:
        dev.write(regs.COMMAND, 2, cmd)


def _iov_update_resource(dev: PciDev, idx: int) -> None:
    """pci_iov_update_resource() (drivers/pci/iov.c)."""
    iov = dev.sriov
    res = dev.resources[idx]
    if iov is None or not res.flags or res.flags & (IORESOURCE_UNSET | IORESOURCE_PCI_FIXED):
        return
    ctrl = dev.read(iov.pos + 0x08, 2)
    if ctrl & 0x0001 and ctrl & 0x0008:
        return                          # can't update an enabled VF BAR
    reg = iov.pos + 0x24 + 4 * (idx - PCI_IOV_RESOURCES)
    dev.write(reg, 4, (res.start | (res.flags & 0xF)) & 0xFFFFFFFF)
    if res.flags & IORESOURCE_MEM_64:
        dev.write(reg + 4, 4, res.start >> 32)


def _setup_bridge_io(br: PciDev) -> None:
    res = br.resources[PCI_BRIDGE_IO_WINDOW]
    if res.assigned and res.flags & IORESOURCE_IO:
        br.read(regs.IO_BASE, 2)
        lo = ((res.end >> 8) & 0xF0) << 8 | ((res.start >> 8) & 0xF0)
        upper16 = (res.end & 0xFFFF0000) | (res.start >> 16)
    else:
        lo, upper16 = 0x00F0, 0
    br.write(regs.IO_BASE_UPPER16, 4, 0x0000FFFF)   # disable the range while updating it
    br.write(regs.IO_BASE, 2, lo)
    br.write(regs.IO_BASE_UPPER16, 4, upper16)


def _setup_bridge_mmio(br: PciDev) -> None:
    res = br.resources[PCI_BRIDGE_MEM_WINDOW]
    if res.assigned and res.flags & IORESOURCE_MEM:
        val = ((res.start >> 16) & 0xFFF0) | (res.end & 0xFFF00000)
    else:
        val = 0x0000FFF0
    br.write(regs.MEMORY_BASE, 4, val)


def _setup_bridge_pref(br: PciDev) -> None:
    br.write(regs.PREF_LIMIT_UPPER32, 4, 0)
    res = br.resources[PCI_BRIDGE_PREF_MEM_WINDOW]
    bu = lu = 0
    if res.assigned and res.flags & IORESOURCE_PREFETCH:
        val = ((res.start >> 16) & 0xFFF0) | (res.end & 0xFFF00000)
        if res.flags & IORESOURCE_MEM_64:
            bu, lu = res.start >> 32, res.end >> 32
    else:
        val = 0x0000FFF0
    br.write(regs.PREF_MEMORY_BASE, 4, val)
    br.write(regs.PREF_BASE_UPPER32, 4, bu)
    br.write(regs.PREF_LIMIT_UPPER32, 4, lu)


def setup_one_window(br: PciDev, idx: int) -> None:
    """pci_setup_one_bridge_window()."""
    {PCI_BRIDGE_IO_WINDOW: _setup_bridge_io, PCI_BRIDGE_MEM_WINDOW: _setup_bridge_mmio,
     PCI_BRIDGE_PREF_MEM_WINDOW: _setup_bridge_pref}[idx](br)


def setup_bridge(bus: PciBus) -> None:
    """pci_setup_bridge() (setup-bus.c): program the three windows, then Bridge Control as saved at scan."""
    br = bus.self_dev
    assert br is not None
    _setup_bridge_io(br)
    _setup_bridge_mmio(br)
    _setup_bridge_pref(br)
    br.write(regs.BRIDGE_CONTROL, 2, bus.bridge_ctl)


# ---------------------------------------------------------------------------- assignment (top-down)
class Assigner:
    """pci_assign_unassigned_root_bus_resources() for one root bus."""

    def __init__(self, alloc: Allocator) -> None:
        self.alloc = alloc

    # -- sorted assignment of one bus --------------------------------------------------------------
    @staticmethod
    def _insert_sorted(head: list[AddEntry], e: AddEntry, align: int) -> None:
        """Insert before the first entry of smaller alignment (stable for equal ones)."""
        pos = len(head)
        for i, other in enumerate(head):
            if align > resource_alignment(other.dev, other.idx):
                pos = i
                break
        head.insert(pos, e)

    def _sort_into(self, dev: PciDev, head: list[AddEntry]) -> None:
        """pdev_sort_resources(): a device's assignable resources by decreasing alignment."""
        if not resources_assignable(dev):
            return
        for idx, res in enumerate(dev.resources):
            if not res.flags or not should_fit(dev, idx):
                continue
            r_align = resource_alignment(dev, idx)
            if r_align:
                self._insert_sorted(head, AddEntry(dev, res, idx, res.start, res.end, res.flags), r_align)

    def _assign_requested(self, head: list[AddEntry], fail: list[AddEntry] | None, optional: bool) -> None:
        """assign_requested_resources_sorted()."""
        for e in head:
            if e.res.size <= 0 or (not optional and is_optional(e.dev, e.idx)):
                continue
            if not self.alloc.assign_resource(e.dev, e.idx) and fail is not None:
                fail.append(AddEntry(e.dev, e.res, e.idx, e.res.start, e.res.end, e.res.flags))

    @staticmethod
    def _need_release(mask: int, res: Resource) -> bool:
        """pci_need_to_release()."""
        if res.flags & IORESOURCE_IO:
            return bool(mask & IORESOURCE_IO)
        if res.flags & IORESOURCE_PREFETCH:
            if mask & IORESOURCE_PREFETCH:
                return True
            return bool(mask & IORESOURCE_MEM and res.parent is not None
                        and not res.parent.flags & IORESOURCE_PREFETCH)
        if res.flags & IORESOURCE_MEM:
            return bool(mask & IORESOURCE_MEM)
        return False

    def assign_sorted(self, head: list[AddEntry], realloc: ResList | None, fail_head: ResList) -> None:
        """__assign_resources_sorted(): required + optional together, else required then optional."""
        if realloc is None:
            realloc = ResList()
        save = ResList()
        if len(realloc):
            for e in head:
                save.add(e.dev, e.res, e.idx)
            for e in list(head):
                add = realloc.get(e.res)
                if add is None:
                    continue
                e.res.end += add.add_size
                if not e.res.flags & IORESOURCE_STARTALIGN or add.min_align <= e.res.start:
                    continue
                e.res.set_range(add.min_align, e.res.size)
                head.remove(e)
                self._insert_sorted(head, e, add.min_align)
        local_fail: list[AddEntry] = []
        self._assign_requested(head, local_fail, True)
        if not local_fail:
            for e in head:
                realloc.remove(e.res)
        elif all(is_optional(f.dev, f.idx) for f in local_fail) and not len(realloc):
            for s in save:
                _restore(s)
        else:
            fail_type = 0
            for f in local_fail:
                fail_type |= f.flags
            fail_type &= IORESOURCE_IO | IORESOURCE_MEM | IORESOURCE_PREFETCH
            keep = []
            for e in head:
                if e.res.assigned and not self._need_release(fail_type, e.res):
                    realloc.remove(e.res)
                    save.remove(e.res)
                else:
                    keep.append(e)
            head[:] = keep
            for e in head:
                self.alloc.release_resource(e.dev, e.idx)
                _restore(e)
            for s in save:
                _restore(s)
            self._assign_requested(head, None, False)
            self._reassign_optional(realloc, head)
        for e in head:
            if e.res.assigned:
                continue
            fail_head.add(e.dev, e.res, e.idx)
            if is_bridge_win(e.idx):
                e.res.flags |= IORESOURCE_UNSET
            else:
                e.res.start = e.res.end = e.res.flags = 0

    def _reassign_optional(self, realloc: ResList, head: list[AddEntry]) -> None:
        """reassign_resources_sorted(): give the optional part where it still fits."""
        in_head = {id(e.res) for e in head}
        for add in realloc:
            res, dev, idx = add.res, add.dev, add.idx
            if id(res) not in in_head:
                continue
            realloc.remove(res)
            if not res.assigned and res.size > 0 and not is_optional(dev, idx):
                continue
            if not res.assigned:
                res.set_range(add.min_align, res.size + add.add_size)
                self.alloc.assign_resource(dev, idx)
            elif add.add_size > 0 or (add.min_align and res.start % add.min_align):
                res.flags |= add.flags & (IORESOURCE_STARTALIGN | IORESOURCE_SIZEALIGN)
                self.alloc.reassign_resource(dev, idx, add.add_size, add.min_align)

    def assign_bus(self, bus: PciBus, realloc: ResList | None, fail_head: ResList) -> None:
        """__pci_bus_assign_resources(): this bus's devices, then each child bus, then its bridge."""
        head: list[AddEntry] = []
        for dev in bus.devices:
            self._sort_into(dev, head)
        self.assign_sorted(head, realloc, fail_head)
        for dev in bus.devices:
            b = dev.subordinate
            if b is None:
                continue
            self.assign_bus(b, realloc, fail_head)
            if dev.hdr_type == regs.HEADER_TYPE_BRIDGE and not dev.enable_cnt:
                setup_bridge(b)

    # -- release between rounds -------------------------------------------------------------------
    def _release_bridge_window(self, bus: PciBus, b_win: Resource) -> None:
        dev = bus.self_dev
        if dev is None or not b_win.assigned:
            return
        idx = resource_num(dev, b_win)
        self.alloc.release_children(b_win)
        self.alloc.release_resource(dev, idx)
        setup_one_window(dev, idx)

    def _release_bridge_resources(self, bus: PciBus, b_win: Resource, whole: bool) -> None:
        """pci_bus_release_bridge_resources()."""
        leaf = True
        for dev in bus.devices:
            b = dev.subordinate
            if b is None:
                continue
            leaf = False
            if dev.class_ >> 8 != PCI_CLASS_BRIDGE_PCI or not whole:
                continue
            for res in b.resources:
                if res.parent is b_win:
                    self._release_bridge_resources(b, res, whole)
        if bus.is_root or bus.self_dev is None or bus.self_dev.class_ >> 8 != PCI_CLASS_BRIDGE_PCI:
            return
        if whole or leaf:
            self._release_bridge_window(bus, b_win)

    def run(self, bus: PciBus, realloc_enabled: bool) -> list[tuple[PciDev, int]]:
        """Size, assign and program everything below ``bus``; returns the resources left unassigned."""
        try_num = _bus_depth(bus) + 1 if realloc_enabled else 1
        tried = 0
        whole = False
        while True:
            realloc = ResList() if tried + 1 == try_num else None
            size_bridges(bus, realloc)
            fail_head = ResList()
            self.assign_bus(bus, realloc, fail_head)
            tried += 1
            if not len(fail_head) or tried >= try_num:
                return [(e.dev, e.idx) for e in fail_head]
            if tried + 1 > 2:
                whole = True
            for e in fail_head:
                b_win = select_window_for_type(e.dev.bus, e.flags)
                if b_win is not None:
                    self._release_bridge_resources(e.dev.bus, b_win, whole)
            for e in fail_head:
                _restore(e)


def _bus_depth(bus: PciBus) -> int:
    """pci_bus_get_depth()."""
    return max((_bus_depth(c) + 1 for c in bus.children), default=0)
