"""The IOMMU's hardware page walker: reads real table bytes in RAM the way the translation hardware
does, for one stage or nested (stage 1 over stage 2), and turns the leaf it finds into a cacheable run.

What the hardware does and the kernel's software walk does not:

* permissions come from the hardware view of each entry (``Format.hw_step``) and are ANDed down the walk;
* accessed/dirty bits are written back when the context enables hardware A/D (``Format.hw_update``):
  always for CPU-style tables (x86-64 first stage, RISC-V), and for host tables only while dirty tracking
  is on (VT-d SSADE, AMD DTE.HAD, ...);
* nested: every stage-1 table access is itself translated through stage 2, then the stage-1 output
  (an IPA) is translated through stage 2 (VT-d §3.8, SMMUv3 §3.3.3).

A fill extends the leaf to a *run* (see :mod:`vfiolab.iommu.iotlb`): neighbouring leaf items of the same
table, inside the TLB span, whose entries equal the leaf's apart from output address and A/D bits and
whose output addresses continue the leaf's.  The extension reads one table row with numpy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from vfiolab.iommu.fault import FaultReason
from vfiolab.iommu.iotlb import DirtyTarget, Run
from vfiolab.iommu.pagetable.common import HW_FAULT, HW_LEAF, ITEMS, ITEMS_LG2, MASK64, SIGN_EXTEND, Format
from vfiolab.memory.phys import PhysMemory

_ARANGE: Final = np.arange(ITEMS, dtype=np.uint64)

RootFn = Callable[[], tuple[int, int]]
"""() -> (top table address in this stage's table address space, top level)."""

# Formats whose tables the hardware treats like CPU page tables: A/D always updated.
ALWAYS_AD: Final = frozenset({"x86_64", "riscv64"})


class WalkError(Exception):
    """A walk stopped: ``reason`` at ``level`` (-1: before the first table)."""

    def __init__(self, reason: FaultReason, level: int = -1) -> None:
        self.reason, self.level = reason, level
        super().__init__(f"{reason.value} at level {level}")


@dataclass
class Stage:
    """One translation stage: the table format, where its root is (read live, so a table that grows a
    level is followed), and whether hardware A/D updates are on."""

    fmt: Format
    root: RootFn
    ad: bool = False


class _LeafBits:
    """Per (format, level) constants of the run extension: the leaf bits that must match the walked
    leaf (all but output address and A/D), and for formats whose leaf entries are affine in the OA
    (``Format.leaf_stride``) without contiguous items, the entry delta of consecutive items."""

    __slots__ = ("keep", "keep_ad", "keep_ad64", "ramp", "step")

    def __init__(self, fmt: Format, level: int) -> None:
        isz = fmt.item_lg2(level)
        top = ((1 << fmt.max_oasz_lg2) - 1) & ~((1 << isz) - 1)
        oa_bits = fmt.leaf(level, top, isz, 0) ^ fmt.leaf(level, 0, isz, 0)
        ad_bits = (fmt.hw_update(0, level, True, True) | fmt.hw_update(0, level, False, True)) & MASK64
        self.keep = MASK64 & ~(oa_bits | ad_bits)
        self.keep_ad = MASK64 & ~ad_bits
        self.keep_ad64 = np.uint64(self.keep_ad)
        self.step = 0 if fmt.HAS_CONTIG else fmt.leaf_stride(level, isz) & MASK64
        self.ramp = _ARANGE * np.uint64(self.step)
        """Item k's entry minus item 0's, when items continue one another."""


def _check_va(fmt: Format, addr: int, vasz: int) -> int:
    """The address bits the table translates; WalkError(ADDRESS_SIZE) outside its range
    (pt_iter.h pt_check_range(): sign-extended tables accept the canonical halves)."""
    if fmt.has(SIGN_EXTEND):
        prefix = MASK64 if (addr >> (vasz - 1)) & 1 else 0
        ok = 0 <= addr <= MASK64 and (addr >> vasz) == (prefix >> vasz)
    else:
        ok = 0 <= addr and addr >> vasz == 0
    if not ok:
        raise WalkError(FaultReason.ADDRESS_SIZE)
    return addr & ((1 << vasz) - 1)


class StageRun:
    """Result of one stage: [lo, hi) -> out_lo.., permissions, and the leaf items for dirty updates."""

    __slots__ = ("hi", "lo", "out", "r", "target", "w")

    def __init__(self, lo: int, hi: int, out: int, r: bool, w: bool, target: DirtyTarget | None) -> None:
        self.lo, self.hi, self.out, self.r, self.w, self.target = lo, hi, out, r, w, target


class Walker:
    """Walks one context's translation (``s1``, optionally over ``s2``) in ``mem``."""

    def __init__(self, mem: PhysMemory, s1: Stage, s2: Stage | None = None, *, span_lg2: int = 21) -> None:
        self.mem = mem
        self.s1, self.s2 = s1, s2
        self.span_lg2 = span_lg2
        self.walks = 0
        """Table walks performed (each stage-1 table access of a nested walk counts its own)."""
        self._bits: dict[tuple[Format, int], _LeafBits] = {}

    # ------------------------------------------------------------------ one stage
    def stage_walk(self, st: Stage, addr: int, write: bool, xlate: Callable[[int], int] | None,
                   extend: bool = True) -> StageRun:
        """Walk ``addr`` in stage ``st``; ``xlate`` maps a table-entry address to RAM (stage 2 of a
        nested walk; identity when None).  With ``extend``, grow the leaf to a run inside the span."""
        self.walks += 1
        fmt = st.fmt
        top, level = st.root()
        vasz = fmt.top_vasz_lg2(level)
        v = _check_va(fmt, addr, vasz)
        base = addr - v  # the sign-extension prefix, added back to results
        u64 = self.mem.u64_flat
        nbytes = self.mem.size
        table = top
        rd = wr = True
        touched: list[tuple[int, int, int]] = []
        while True:
            isz = fmt.item_lg2(level)
            idx = (v >> isz) & (ITEMS - 1)
            slot = table + idx * 8
            if xlate is not None:
                slot = xlate(slot)
            if slot < 0 or slot + 8 > nbytes:
                raise WalkError(FaultReason.BAD_PA, level)
            e = u64.item(slot >> 3)
            kind, r, w = fmt.hw_step(e, level)
            if kind == HW_FAULT:
                raise WalkError(FaultReason.NOT_PRESENT, level)
            rd, wr = rd and r, wr and w
            touched.append((slot, e, level))
            if kind == HW_LEAF:
                break
            table = int(fmt.table_pa(e))
            level -= 1
        if not (wr if write else rd):
            raise WalkError(FaultReason.PERMISSION, level)
        if st.ad:
            for s, old, lvl in touched:
                new = fmt.hw_update(old, lvl, lvl == level, write)
                if new != old:
                    u64[s >> 3] = new
            e = fmt.hw_update(e, level, True, write)
        isz = fmt.item_lg2(level)
        size_lg2 = isz + fmt.contig_lg2(e, level)
        leaf_lo = (v >> size_lg2) << size_lg2
        oa_lo = int(fmt.oa(e, level))
        tab_lg2 = isz + ITEMS_LG2
        tab_lo = (v >> tab_lg2) << tab_lg2 if tab_lg2 < 64 else 0
        row0 = (slot >> 3) - ((v - tab_lo) >> isz)  # u64 index of item 0 of the leaf's table
        target = DirtyTarget(fmt.hw_update, level, row0, -base - tab_lo, isz) if st.ad else None
        span = self.span_lg2
        s_lo = (v >> span) << span
        s_hi = s_lo + (1 << span)
        if size_lg2 >= span or not extend:
            lo, hi = max(s_lo, leaf_lo), min(s_hi, leaf_lo + (1 << size_lg2))
            if not extend:
                lo, hi = leaf_lo, leaf_lo + (1 << size_lg2)
            return StageRun(base + lo, base + hi, oa_lo + (lo - leaf_lo), rd, wr, target)
        # extend to neighbouring items of this table inside the span (same attributes, OA continuing)
        w_lo, w_hi = max(s_lo, tab_lo), min(s_hi, tab_lo + (1 << tab_lg2))
        k0, k1 = (w_lo - tab_lo) >> isz, (w_hi - tab_lo) >> isz
        kv = ((v - tab_lo) >> isz) - k0
        ents = u64[row0 + k0:row0 + k1]
        bits = self._bits.get((fmt, level))
        if bits is None:
            bits = self._bits[(fmt, level)] = _LeafBits(fmt, level)
        if bits.step:
            # affine entries: item k matches iff (ents[k] minus A/D) == leaf minus A/D + (k - kv) * step;
            # items whose OA would leave [0, 2**max_oasz) are cut off first, so no carry crosses fields
            d = ents & bits.keep_ad64
            d -= bits.ramp[:k1 - k0]
            bad = (d != np.uint64(((e & bits.keep_ad) - kv * bits.step) & MASK64)).nonzero()[0]
            i = int(bad.searchsorted(kv))
            a = int(bad[i - 1]) + 1 if i else 0
            b = int(bad[i]) if i < len(bad) else k1 - k0
            a = max(a, kv - (oa_lo >> isz))
            b = min(b, kv + (((1 << fmt.max_oasz_lg2) - oa_lo) >> isz))
        else:
            keep = np.uint64(bits.keep)
            same = (ents & keep) == np.uint64(e & bits.keep)
            item_va = np.uint64(w_lo) + (_ARANGE[:k1 - k0] << np.uint64(isz))
            eff = fmt.oa(ents, level)
            if fmt.HAS_CONTIG:
                cl = fmt.contig_lg2_v(ents, level).astype(np.uint64) + np.uint64(isz)
                eff = eff + (item_va & ((np.uint64(1) << cl) - np.uint64(1)))
            delta = np.uint64((oa_lo - leaf_lo) & MASK64)
            good = same & ((eff - item_va) == delta)
            bad = np.flatnonzero(~good)
            left = bad[bad < kv]
            right = bad[bad > kv]
            a = int(left[-1]) + 1 if len(left) else 0
            b = int(right[0]) if len(right) else k1 - k0
        lo, hi = w_lo + (a << isz), w_lo + (b << isz)
        return StageRun(base + lo, base + hi, oa_lo + (lo - leaf_lo), rd, wr, target)

    def _s2_xlate(self, ipa: int) -> int:
        """Stage-2 translation of one stage-1 table access (a read of guest memory)."""
        assert self.s2 is not None
        try:
            r = self.stage_walk(self.s2, ipa, False, None, extend=False)
        except WalkError as err:
            raise WalkError(FaultReason.STAGE2, err.level) from None
        return r.out + (ipa - r.lo)

    # ------------------------------------------------------------------ fill
    def fill(self, addr: int, write: bool) -> Run:
        """Translate ``addr`` for a read or write: the run to cache, or WalkError."""
        s1 = self.stage_walk(self.s1, addr, write, self._s2_xlate if self.s2 is not None else None)
        targets: tuple[DirtyTarget, ...] = (s1.target,) if s1.target is not None else ()
        lo, hi, out = s1.lo, s1.hi, s1.out
        r, w = s1.r, s1.w
        if self.s2 is not None:
            ipa = out + (addr - lo)
            try:
                s2 = self.stage_walk(self.s2, ipa, write, None)
            except WalkError as err:
                raise WalkError(FaultReason.STAGE2, err.level) from None
            lo = max(lo, addr - (ipa - s2.lo))
            hi = min(hi, addr + (s2.hi - ipa))
            out = s2.out + (ipa - (addr - lo) - s2.lo)
            r, w = r and s2.r, w and s2.w
            if s2.target is not None:
                t = s2.target
                targets += (DirtyTarget(t.update, t.level, t.slot0, t.off + (ipa - addr), t.isz),)
        pa = out + (addr - lo)
        if pa >= self.mem.size:
            raise WalkError(FaultReason.BAD_PA)
        if out + (hi - lo) > self.mem.size:
            hi = lo + (self.mem.size - out)
        run = Run(lo, hi, out, r, w, targets, self.s1.fmt.GRANULE_LG2)
        if targets:
            run.dmask = _held_dirty(self.mem.u64_flat, run)
        return run


def _held_dirty(u64: npt.NDArray[np.uint64], run: Run) -> int:
    """The ``dmask`` a fresh entry starts with: granules whose leaf items (every stage's) already hold
    the write-dirty state, which the entry caches as the walk read it: writes through it update the
    table no more until a flush (generic_pt/pt_common.h pt_entry_make_write_clean())."""
    g = run.glg2
    n = ((run.hi - 1 - run.lo) >> g) + 1
    held: npt.NDArray[np.bool_] | None = None
    for t in run.dirty:
        i0, i1 = (run.lo + t.off) >> t.isz, (run.hi - 1 + t.off) >> t.isz
        items = u64[t.slot0 + i0:t.slot0 + i1 + 1]
        try:
            done = t.update(items, t.level, True, True) == items
        except (ValueError, TypeError):  # a format whose hw_update tests bits (Arm DBM): item by item
            done = np.array([t.update(x, t.level, True, True) == x for x in items.tolist()], dtype=np.bool_)
        if done.all():
            continue
        if not done.any():
            return 0
        if t.isz < g or (run.lo + t.off) & ((1 << g) - 1):
            return 0  # granules straddling items: start from nothing held
        if t.isz > g:  # larger leaves: the item of each granule
            done = done[((run.lo + t.off + (np.arange(n, dtype=np.int64) << g)) >> t.isz) - i0]
        held = done if held is None else held & done
    if held is None:
        return run.dfull
    return int.from_bytes(np.packbits(held, bitorder="little").tobytes(), "little")


def mark_dirty(mem: PhysMemory, run: Run, a: int, b: int) -> None:
    """Hardware dirty update for a write to [a, b) through ``run``: set the leaf items' dirty state
    unless this entry already did (``run.dmask``)."""
    g = run.glg2
    k0, k1 = (a - run.lo) >> g, (b - 1 - run.lo) >> g
    want = ((1 << (k1 - k0 + 1)) - 1) << k0
    if run.dmask & want == want:
        return
    run.dmask |= want
    u64 = mem.u64_flat
    for t in run.dirty:
        i0, i1 = (a + t.off) >> t.isz, (b - 1 + t.off) >> t.isz
        idx = slice(t.slot0 + i0, t.slot0 + i1 + 1)
        try:
            u64[idx] = t.update(u64[idx], t.level, True, True)
        except (ValueError, TypeError):  # a format whose hw_update tests bits (Arm DBM): item by item
            for i in range(idx.start, idx.stop):
                u64[i] = t.update(int(u64[i]), t.level, True, True)
