"""Single Root I/O Virtualization extended capability (PCIe Base 6.0 §9.3.3): builder, runtime
behaviour and lspci decoder.

Runtime rules modelled (PCIe 6.0 §9.3.3.3-9.3.3.14; Linux drivers/pci/iov.c relies on them):
NumVFs is RW only while VF Enable is clear; First VF Offset / VF Stride are RO but may follow NumVFs
and ARI Capable Hierarchy (give callables); each VF BAR answers the sizing protocol with the size of
one VF's aperture, which the PF aligns up to the System Page Size; ``on_change`` is called after a
write that toggles VF Enable.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from vfiolab.errors import VfiolabError
from vfiolab.pci.caps.base import Capability, register_decoder
from vfiolab.pci.config import ConfigSpace
from vfiolab.pci.decode import DecodeContext, Out, flag, flags

RoutingParam = int | Callable[[int, bool], int]
"""A First VF Offset / VF Stride: fixed, or f(num_vfs, ari_capable_hierarchy) -> value."""


@dataclass(frozen=True)
class VfBar:
    """One VF BAR as built: the memory one VF decodes (a power of two), its width and prefetchability."""

    size: int
    mem64: bool = True
    prefetch: bool = True


@dataclass(frozen=True)
class VfBarRegion:
    """A VF BAR as programmed: ``base`` of VF 0's aperture, ``size`` per VF (VF i at base + i*size)."""

    index: int
    base: int
    size: int
    mem64: bool
    prefetch: bool


class SriovCap(Capability):
    """SR-IOV capability of a Physical Function."""

    cap_id: ClassVar[int] = 0x10
    extended: ClassVar[bool] = True
    name: ClassVar[str] = "Single Root I/O Virtualization"

    # Register offsets from the capability start (pci_regs.h PCI_SRIOV_*)
    CAP: ClassVar[int] = 0x04
    CTRL: ClassVar[int] = 0x08
    STATUS: ClassVar[int] = 0x0A
    INITIAL_VFS: ClassVar[int] = 0x0C
    TOTAL_VFS: ClassVar[int] = 0x0E
    NUM_VFS: ClassVar[int] = 0x10
    FUNC_LINK: ClassVar[int] = 0x12
    VF_OFFSET: ClassVar[int] = 0x14
    VF_STRIDE: ClassVar[int] = 0x16
    VF_DID: ClassVar[int] = 0x1A
    SUP_PGSIZE: ClassVar[int] = 0x1C
    SYS_PGSIZE: ClassVar[int] = 0x20
    BAR0: ClassVar[int] = 0x24
    NUM_BARS: ClassVar[int] = 6
    VFM: ClassVar[int] = 0x3C
    SIZEOF: ClassVar[int] = 0x40
    # SR-IOV Capabilities bits
    CAP_VFM: ClassVar[int] = 0x00000001
    CAP_ARI_PRESERVED: ClassVar[int] = 0x00000002
    CAP_10BIT_TAG: ClassVar[int] = 0x00000004
    # SR-IOV Control bits
    CTRL_VFE: ClassVar[int] = 0x0001
    CTRL_VFM: ClassVar[int] = 0x0002
    CTRL_INTR: ClassVar[int] = 0x0004
    CTRL_MSE: ClassVar[int] = 0x0008
    CTRL_ARI: ClassVar[int] = 0x0010
    CTRL_10BIT_TAG: ClassVar[int] = 0x0020
    STATUS_VFM: ClassVar[int] = 0x0001

    on_change: Callable[[SriovCap, bool, int], None] | None

    def __init__(self, total_vfs: int, vf_device: int, vf_offset: RoutingParam = 1,
                 vf_stride: RoutingParam = 1, vf_bars: Sequence[VfBar | int | None] = (), *,
                 initial_vfs: int | None = None, func_link: int = 0, vf_migration: bool = False,
                 migration_irq: int = 0, migration_state: int = 0, ari_preserved: bool = False,
                 vf_10bit_tag: bool = False, ari_hierarchy_rw: bool = True,
                 supported_page_sizes: int = 0x553,
                 on_change: Callable[[SriovCap, bool, int], None] | None = None) -> None:
        if not 0 <= total_vfs <= 0xFFFF:
            raise VfiolabError(f"SR-IOV: TotalVFs {total_vfs} outside 0..65535")
        initial = total_vfs if initial_vfs is None else initial_vfs
        # §9.3.3.6: without VF Migration, InitialVFs must equal TotalVFs.
        if not 0 <= initial <= total_vfs or (not vf_migration and initial != total_vfs):
            raise VfiolabError(f"SR-IOV: InitialVFs {initial} must be "
                               + ("<= " if vf_migration else "== ") + f"TotalVFs {total_vfs}")
        for what, val, bits in (("VF Device ID", vf_device, 16), ("Function Dependency Link", func_link, 8),
                                ("VF Migration Interrupt Message Number", migration_irq, 11),
                                ("Supported Page Sizes", supported_page_sizes, 32),
                                ("VF Migration State Array Offset", migration_state, 32)):
            if not 0 <= val < 1 << bits:
                raise VfiolabError(f"SR-IOV: {what} {val:#x} does not fit in {bits} bits")
        if not supported_page_sizes & 1:
            raise VfiolabError("SR-IOV: Supported Page Sizes must include 4 KiB (bit 0)")
        for what, param in (("First VF Offset", vf_offset), ("VF Stride", vf_stride)):
            if isinstance(param, int) and not 0 <= param <= 0xFFFF:
                raise VfiolabError(f"SR-IOV: {what} {param} outside 0..65535")
        self.total_vfs, self.initial_vfs, self.vf_device = total_vfs, initial, vf_device
        self.offset_rule, self.stride_rule = vf_offset, vf_stride
        self.func_link, self.vf_migration, self.migration_irq = func_link, vf_migration, migration_irq
        self.migration_state, self.ari_preserved = migration_state, ari_preserved
        self.vf_10bit_tag = vf_10bit_tag
        self.ari_hierarchy_rw, self.supported_page_sizes = ari_hierarchy_rw, supported_page_sizes
        self.on_change = on_change
        self.bars = self._layout(vf_bars)
        self._cs: ConfigSpace | None = None
        self._off = -1

    @staticmethod
    def _layout(vf_bars: Sequence[VfBar | int | None]) -> list[VfBar | None]:
        """Six BAR slots; a 64-bit BAR takes its slot and the next (its upper half), an int is a
        64-bit prefetchable BAR of that per-VF size, None an unimplemented slot."""
        slots: list[VfBar | None] = []
        for i, item in enumerate(vf_bars):
            bar = VfBar(item) if isinstance(item, int) else item
            if bar is not None and (bar.size < 16 or bar.size & (bar.size - 1)
                                    or bar.size > (1 << (63 if bar.mem64 else 31))):
                raise VfiolabError(f"SR-IOV: VF BAR item {i}: size {bar.size:#x} is not a power of two "
                                   f"between 16 bytes and {'2^63' if bar.mem64 else '2 GiB'}")
            slots.append(bar)
            if bar is not None and bar.mem64:
                slots.append(None)
        if len(slots) > SriovCap.NUM_BARS:
            raise VfiolabError(f"SR-IOV: VF BARs need {len(slots)} of the 6 BAR slots")
        return slots + [None] * (SriovCap.NUM_BARS - len(slots))

    def length(self) -> int:
        return self.SIZEOF

    def build(self, cs: ConfigSpace, off: int) -> None:
        vfm = self.vf_migration
        cs.init_reg(off + self.CAP, 4, (self.CAP_VFM if vfm else 0)
                    | (self.CAP_ARI_PRESERVED if self.ari_preserved else 0)
                    | (self.CAP_10BIT_TAG if self.vf_10bit_tag else 0) | (self.migration_irq << 21))
        ctrl_rw = (self.CTRL_VFE | self.CTRL_MSE | (self.CTRL_ARI if self.ari_hierarchy_rw else 0)
                   | (self.CTRL_VFM | self.CTRL_INTR if vfm else 0)
                   | (self.CTRL_10BIT_TAG if self.vf_10bit_tag else 0))
        cs.init_reg(off + self.CTRL, 2, 0, rw=ctrl_rw)
        cs.init_reg(off + self.STATUS, 2, 0, w1c=self.STATUS_VFM if vfm else 0)
        cs.init_reg(off + self.INITIAL_VFS, 2, self.initial_vfs)
        cs.init_reg(off + self.TOTAL_VFS, 2, self.total_vfs)
        cs.init_reg(off + self.NUM_VFS, 2, 0, rw=0xFFFF)
        cs.init_reg(off + self.FUNC_LINK, 1, self.func_link)
        cs.init_reg(off + self.VF_DID, 2, self.vf_device)
        cs.init_reg(off + self.SUP_PGSIZE, 4, self.supported_page_sizes)
        cs.init_reg(off + self.SYS_PGSIZE, 4, 1, rw=0xFFFFFFFF)
        for i, bar in enumerate(self.bars):
            reg = off + self.BAR0 + 4 * i
            if bar is not None:
                # Type bits are RO; address bits below the aperture size are cleared by _sync.
                cs.init_reg(reg, 4, (0x4 if bar.mem64 else 0) | (0x8 if bar.prefetch else 0), rw=0xFFFFFFF0)
                if bar.mem64:
                    cs.init_reg(reg + 4, 4, 0, rw=0xFFFFFFFF)
        cs.init_reg(off + self.VFM, 4, self.migration_state)
        self._cs, self._off = cs, off
        self._sync()

    def attach(self, cs: ConfigSpace, off: int) -> None:
        self._cs, self._off = cs, off
        cs.add_write_hook(off + self.CTRL, 4, self._ctrl_written)
        cs.add_write_hook(off + self.NUM_VFS, 4, self._numvfs_written)
        cs.add_write_hook(off + self.SYS_PGSIZE, 4 + 4 * self.NUM_BARS, self._bars_written)

    # ------------------------------------------------------------------ hardware behaviour
    def _placed(self) -> tuple[ConfigSpace, int]:
        if self._cs is None:
            raise VfiolabError("SR-IOV capability is not placed in a config space yet")
        return self._cs, self._off

    def _sync(self) -> None:
        """Re-derive what hardware derives: VF BAR address bits and First VF Offset / VF Stride."""
        self._sync_bars(range(self.NUM_BARS))
        self._sync_routing()

    def _sync_bars(self, slots: range) -> None:
        """Clear the address bits below each VF's aperture in the VF BARs at ``slots``."""
        cs, off = self._placed()
        page = self.system_page_size()
        for i in slots:
            bar = self.bars[i]
            if bar is None:
                continue
            reg = off + self.BAR0 + 4 * i
            # The aperture of each VF is aligned up to the System Page Size (§9.3.3.13).
            span = max(bar.size, page) - 1
            cs.set(reg, 4, cs.get(reg, 4) & ~(span & 0xFFFFFFF0))
            if bar.mem64:
                cs.set(reg + 4, 4, cs.get(reg + 4, 4) & ~(span >> 32))

    def _sync_routing(self) -> None:
        """First VF Offset / VF Stride for the NumVFs and ARI Capable Hierarchy now programmed."""
        cs, off = self._placed()
        nvf = cs.get(off + self.NUM_VFS, 2)
        ari = bool(cs.get(off + self.CTRL, 2) & self.CTRL_ARI)
        for what, reg, param in (("First VF Offset", self.VF_OFFSET, self.offset_rule),
                                 ("VF Stride", self.VF_STRIDE, self.stride_rule)):
            val = param if isinstance(param, int) else param(nvf, ari)
            if not 0 <= val <= 0xFFFF:
                raise VfiolabError(f"SR-IOV: {what} callable gave {val} for NumVFs={nvf} ARI={ari}")
            cs.set(off + reg, 2, val)

    # Each hook re-derives only what the written register feeds: Control (ARI Capable Hierarchy) and
    # NumVFs feed Offset/Stride, System Page Size every VF BAR, a VF BAR dword its own BAR.
    def _ctrl_written(self, offset: int, size: int, old_dw: int, new_dw: int) -> None:
        self._sync_routing()
        if (old_dw ^ new_dw) & self.CTRL_VFE and self.on_change is not None:
            self.on_change(self, bool(new_dw & self.CTRL_VFE), self.num_vfs())

    def _numvfs_written(self, offset: int, size: int, old_dw: int, new_dw: int) -> None:
        cs, off = self._placed()
        if cs.get(off + self.CTRL, 2) & self.CTRL_VFE:
            # §9.3.3.10: NumVFs may only change while VF Enable is clear; the write is dropped.
            cs.set(off + self.NUM_VFS, 2, old_dw & 0xFFFF)
        self._sync_routing()

    def _bars_written(self, offset: int, size: int, old_dw: int, new_dw: int) -> None:
        slot = ((offset & ~3) - self._off - self.BAR0) >> 2
        if slot < 0:                    # System Page Size
            self._sync_bars(range(self.NUM_BARS))
        else:                           # this BAR, or the 64-bit BAR whose upper half it is
            self._sync_bars(range(max(slot - 1, 0), slot + 1))

    # ------------------------------------------------------------------ software view
    def _reg(self, rel: int, size: int) -> int:
        cs, off = self._placed()
        return cs.read(off + rel, size)

    def num_vfs(self) -> int:
        """NumVFs as programmed."""
        return self._reg(self.NUM_VFS, 2)

    def vf_enabled(self) -> bool:
        """VF Enable."""
        return bool(self._reg(self.CTRL, 2) & self.CTRL_VFE)

    def vf_mse(self) -> bool:
        """VF Memory Space Enable."""
        return bool(self._reg(self.CTRL, 2) & self.CTRL_MSE)

    def ari_hierarchy(self) -> bool:
        """ARI Capable Hierarchy."""
        return bool(self._reg(self.CTRL, 2) & self.CTRL_ARI)

    def first_vf_offset(self) -> int:
        """First VF Offset for the current NumVFs / ARI Capable Hierarchy."""
        return self._reg(self.VF_OFFSET, 2)

    def vf_stride(self) -> int:
        """VF Stride for the current NumVFs / ARI Capable Hierarchy."""
        return self._reg(self.VF_STRIDE, 2)

    def vf_device_id(self) -> int:
        """VF Device ID (VFs themselves read 0xffff there, §9.3.4.1.2)."""
        return self._reg(self.VF_DID, 2)

    def system_page_size(self) -> int:
        """System Page Size in bytes (4 KiB << highest bit set; the spec leaves several bits undefined)."""
        sel = self._reg(self.SYS_PGSIZE, 4)
        return 4096 << max(sel.bit_length() - 1, 0)

    def vf_routing_ids(self, pf_rid: int) -> list[int]:
        """Routing IDs of VF 0..NumVFs-1: PF RID + First VF Offset + i * VF Stride (§9.3.3.9-10)."""
        first, stride = self.first_vf_offset(), self.vf_stride()
        return [pf_rid + first + i * stride for i in range(self.num_vfs())]

    def vf_bars(self) -> list[VfBarRegion]:
        """The implemented VF BARs: programmed base and per-VF size (aligned up to the page size)."""
        page = self.system_page_size()
        out = []
        for i, bar in enumerate(self.bars):
            if bar is None:
                continue
            lo = self._reg(self.BAR0 + 4 * i, 4)
            hi = self._reg(self.BAR0 + 4 * i + 4, 4) if bar.mem64 else 0
            out.append(VfBarRegion(i, (hi << 32) | (lo & 0xFFFFFFF0), max(bar.size, page), bar.mem64,
                                   bar.prefetch))
        return out


_IOVCAP_FLAGS = ((SriovCap.CAP_VFM, "Migration"), (SriovCap.CAP_10BIT_TAG, "10BitTagReq"))
_IOVCTL_FLAGS = ((SriovCap.CTRL_VFE, "Enable"), (SriovCap.CTRL_VFM, "Migration"),
                 (SriovCap.CTRL_INTR, "Interrupt"), (SriovCap.CTRL_MSE, "MSE"),
                 (SriovCap.CTRL_ARI, "ARIHierarchy"), (SriovCap.CTRL_10BIT_TAG, "10BitTagReq"))


def _vf_regions(ctx: DecodeContext, where: int) -> str:
    """lspci's VF BAR lines: every non-zero slot is memory; a 64-bit one prints the next slot (or the
    VF Migration State register after slot 5) as its upper half.  All-ones reads as 0."""
    lines = []
    i = 0
    while i < SriovCap.NUM_BARS:
        lo = ctx.r32(where + SriovCap.BAR0 + 4 * i)
        lo = 0 if lo == 0xFFFFFFFF else lo
        idx = i
        i += 1
        if not lo:
            continue
        kind = lo & 0x6
        high = ""
        if kind == 0x4:
            high = f"{ctx.r32(where + SriovCap.BAR0 + 4 * i):08x}"
            i += 1
        lines.append(f"\t\tRegion {idx}: Memory at {high}{lo & 0xFFFFFFF0:08x} "
                     f"({'32' if kind == 0 else '64'}-bit, {'' if lo & 0x8 else 'non-'}prefetchable)\n")
    return "".join(lines)


# pciutils ls-ecaps.c cap_sriov
@register_decoder(SriovCap.cap_id, extended=True)
def decode_sriov(ctx: DecodeContext, out: Out, where: int) -> None:
    """IOVCap/IOVCtl/IOVSta, VF counts, routing, page sizes, VF BARs and migration state at -vv+."""
    out.write("Single Root I/O Virtualization (SR-IOV)\n")
    if ctx.verbose < 2 or not ctx.fetch(where + SriovCap.CAP, 0x3C):
        return
    cap = ctx.r32(where + SriovCap.CAP)
    vfm = ctx.r32(where + SriovCap.VFM)
    r16 = ctx.r16
    out.write(f"\t\tIOVCap:\t{flags(cap, _IOVCAP_FLAGS)} Interrupt Message Number: {cap >> 21:03x}\n"
              f"\t\tIOVCtl:\t{flags(r16(where + SriovCap.CTRL), _IOVCTL_FLAGS)}\n"
              f"\t\tIOVSta:\tMigration{flag(r16(where + SriovCap.STATUS), SriovCap.STATUS_VFM)}\n"
              f"\t\tInitial VFs: {r16(where + SriovCap.INITIAL_VFS)}, "
              f"Total VFs: {r16(where + SriovCap.TOTAL_VFS)}, "
              f"Number of VFs: {r16(where + SriovCap.NUM_VFS)}, "
              f"Function Dependency Link: {ctx.r8(where + SriovCap.FUNC_LINK):02x}\n"
              f"\t\tVF offset: {r16(where + SriovCap.VF_OFFSET)}, stride: {r16(where + SriovCap.VF_STRIDE)}, "
              f"Device ID: {r16(where + SriovCap.VF_DID):04x}\n"
              f"\t\tSupported Page Size: {ctx.r32(where + SriovCap.SUP_PGSIZE):08x}, "
              f"System Page Size: {ctx.r32(where + SriovCap.SYS_PGSIZE):08x}\n"
              + _vf_regions(ctx, where)
              + f"\t\tVF Migration: offset: {vfm & 0xFFFFFFF8:08x}, BIR: {vfm & 7:x}\n")
