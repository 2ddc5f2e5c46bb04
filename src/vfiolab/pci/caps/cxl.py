"""CXL DVSECs (CXL r3.1 §8.1.3-8.1.10, vendor 1E98h): builders and the lspci 3.9 body decoders.

Each structure is a ``DvsecCap`` with a fixed DVSEC ID and a register table: (offset, size, reset value,
attributes).  Offsets are those of Linux ``include/uapi/linux/pci_regs.h`` (``PCI_DVSEC_CXL_*``) and
pciutils ``lib/header.h`` (``PCI_CXL_*``).  The decoders print what pciutils 3.9.0 ``ls-ecaps.c``
prints, including its quirks, each noted where it is reproduced.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

from vfiolab.errors import VfiolabError
from vfiolab.pci.caps.dvsec import DvsecCap, DvsecView, register_dvsec_decoder
from vfiolab.pci.config import ConfigSpace
from vfiolab.pci.decode import Out, flag, flags

CXL_VENDOR = 0x1E98  # pci_regs.h PCI_VENDOR_ID_CXL

# DVSEC IDs (pci_regs.h PCI_DVSEC_CXL_*)
ID_DEVICE = 0
ID_FUNCTION_MAP = 2
ID_PORT = 3
ID_GPF_PORT = 4
ID_GPF_DEVICE = 5
ID_FLEXBUS_PORT = 7
ID_REG_LOCATOR = 8
ID_MLD = 9


class Reg(NamedTuple):
    """One register of a CXL DVSEC: offset from the capability, size, reset value, write attributes."""

    rel: int
    size: int
    value: int = 0
    rw: int = 0
    w1c: int = 0
    w1s: int = 0
    hwinit: int = 0
    sticky: int = 0


class CxlDvsec(DvsecCap):
    """A CXL DVSEC: vendor 1E98h, a fixed DVSEC ID and a register table from ``regs()``."""

    DVSEC_ID: ClassVar[int]
    SIZEOF: ClassVar[int] = 0  # fixed-size structures; variable ones override dvsec_length()

    def __init__(self, revision: int) -> None:
        super().__init__(CXL_VENDOR, self.DVSEC_ID, revision)

    def dvsec_length(self) -> int:
        return self.SIZEOF

    def regs(self) -> list[Reg]:
        """The body registers (everything not listed reads 0 and is RO)."""
        raise NotImplementedError

    def build_body(self, cs: ConfigSpace, off: int) -> None:
        for r in self.regs():
            cs.init_reg(off + r.rel, r.size, r.value, rw=r.rw, w1c=r.w1c, w1s=r.w1s, hwinit=r.hwinit,
                        sticky=r.sticky)


def _bits(*pairs: tuple[bool, int]) -> int:
    """OR together the masks whose condition holds."""
    out = 0
    for cond, mask in pairs:
        if cond:
            out |= mask
    return out


# ---------------------------------------------------------------------------- ID 0: CXL device
@dataclass
class CxlRange:
    """One DVSEC CXL Range (HDM range) as the device reports it (CXL r3.1 §8.1.3.8)."""

    size: int
    """Bytes; a multiple of 256 MiB (Memory_Size_Low is bits 31:28)."""
    base: int = 0
    media_type: int = 0  # 0 volatile, 1 non-volatile, 2 "as CDAT says"
    mem_class: int = 0  # 0 DRAM, 1 storage class, 2 "as CDAT says"
    interleave: int = 0  # Desired_Interleave encoding
    timeout: int = 1  # Memory_Active_Timeout encoding (1 = 4 s)
    valid: bool = True
    active: bool = True

    def size_low(self) -> int:
        """The Range Size Low register (flags and size bits 31:28)."""
        return ((self.size & 0xF0000000) | (self.timeout & 7) << 13 | (self.interleave & 0x1F) << 8
                | (self.mem_class & 7) << 5 | (self.media_type & 7) << 2 | int(self.active) << 1
                | int(self.valid))


class CxlDeviceDvsec(CxlDvsec):
    """PCIe DVSEC for CXL Devices (ID 0): capability, control (locked by CONFIG_LOCK), ranges."""

    name: ClassVar[str] = "CXL Device DVSEC"
    DVSEC_ID: ClassVar[int] = ID_DEVICE
    CAP: ClassVar[int] = 0x0A
    CTRL: ClassVar[int] = 0x0C
    STATUS: ClassVar[int] = 0x0E
    CTRL2: ClassVar[int] = 0x10
    STATUS2: ClassVar[int] = 0x12
    LOCK: ClassVar[int] = 0x14
    CAP2: ClassVar[int] = 0x16
    RANGE0: ClassVar[int] = 0x18  # size high, size low, base high, base low; 0x10 per range
    CAP3: ClassVar[int] = 0x38

    CAP_CACHE: ClassVar[int] = 0x0001
    CAP_IO: ClassVar[int] = 0x0002
    CAP_MEM: ClassVar[int] = 0x0004
    CAP_MEM_HWINIT: ClassVar[int] = 0x0008
    CAP_CACHE_WBI: ClassVar[int] = 0x0040
    CAP_CXL_RESET: ClassVar[int] = 0x0080
    CAP_RESET_MEM_CLR: ClassVar[int] = 0x0800
    CAP_MLD: ClassVar[int] = 0x2000
    CAP_VIRAL: ClassVar[int] = 0x4000
    CAP_PM_INIT: ClassVar[int] = 0x8000
    CTRL_IO_EN: ClassVar[int] = 0x0002
    CTRL_LOCKED_RW: ClassVar[int] = 0x5FFD  # cache/mem enable, SF cov/gran, clean evict, P2P, viral
    CTRL2_WBI: ClassVar[int] = 0x0002
    CTRL2_RESET: ClassVar[int] = 0x0004
    STATUS2_CACHE_INV: ClassVar[int] = 0x0001
    STATUS2_RESET_DONE: ClassVar[int] = 0x0002
    STATUS2_PM_DONE: ClassVar[int] = 0x8000
    LOCK_CONFIG: ClassVar[int] = 0x0001
    BASE_LOW_MASK: ClassVar[int] = 0xF0000000

    def __init__(self, *, revision: int = 2, cache: bool = False, mem: bool = True,
                 mem_hwinit: bool = False, hdm_count: int | None = None, cache_wbi: bool = False,
                 cxl_reset: bool = False, reset_timeout: int = 0, reset_mem_clr: bool = False,
                 mld: bool = False, viral: bool = False, pm_init_reporting: bool = True,
                 cache_size_unit: int = 0, cache_size: int = 0, ranges: Sequence[CxlRange] = ()) -> None:
        if revision < 1:
            raise VfiolabError("CXL device DVSEC: revision 0 (CXL 1.1) is not modelled; use 1 or later")
        if len(ranges) > 2:
            raise VfiolabError(f"CXL device DVSEC: {len(ranges)} ranges (at most 2)")
        hdm = len(ranges) if hdm_count is None else hdm_count
        if not 0 <= hdm <= 2 or hdm < len(ranges):
            raise VfiolabError(f"CXL device DVSEC: HDM_Count {hdm} does not cover {len(ranges)} ranges")
        for r in ranges:
            if r.size & 0x0FFFFFFF or r.base & 0x0FFFFFFF or not 0 <= r.size < 1 << 64:
                raise VfiolabError(f"CXL device DVSEC: range size {r.size:#x}/base {r.base:#x} not 256 MiB "
                                   "aligned 64-bit values")
        if not 0 <= reset_timeout <= 7 or not 0 <= cache_size_unit <= 0xF or not 0 <= cache_size <= 0xFF:
            raise VfiolabError("CXL device DVSEC: reset timeout, cache size unit or cache size out of range")
        super().__init__(revision)
        self.cap = (self.CAP_IO | _bits((cache, self.CAP_CACHE), (mem, self.CAP_MEM),
                                        (mem_hwinit, self.CAP_MEM_HWINIT), (cache_wbi, self.CAP_CACHE_WBI),
                                        (cxl_reset, self.CAP_CXL_RESET),
                                        (reset_mem_clr, self.CAP_RESET_MEM_CLR), (mld, self.CAP_MLD),
                                        (viral, self.CAP_VIRAL), (pm_init_reporting, self.CAP_PM_INIT))
                    | hdm << 4 | reset_timeout << 8)
        self.cap2 = cache_size_unit | cache_size << 8
        self.ranges = list(ranges)

    def dvsec_length(self) -> int:
        # CXL 2.0 (revision 1) ends after Range 2; revision 2 adds DVSEC CXL Capability3 at 0x38.
        return 0x38 if self.revision < 2 else 0x3C

    def regs(self) -> list[Reg]:
        out = [Reg(self.CAP, 2, self.cap),
               Reg(self.CTRL, 2, self.CTRL_IO_EN, rw=self.CTRL_LOCKED_RW),
               Reg(self.STATUS, 2, 0, w1c=self.CAP_VIRAL, sticky=self.CAP_VIRAL),
               Reg(self.CTRL2, 2, 0, rw=0x003F, sticky=0x0010),
               Reg(self.STATUS2, 2, self.STATUS2_PM_DONE if self.cap & self.CAP_PM_INIT else 0,
                   w1c=0x0008, sticky=0x0008),
               Reg(self.LOCK, 2, 0, w1s=self.LOCK_CONFIG),
               Reg(self.CAP2, 2, self.cap2)]
        for i in range(2):
            r = self.ranges[i] if i < len(self.ranges) else None
            at = self.RANGE0 + 0x10 * i
            out += [Reg(at, 4, r.size >> 32 if r else 0),
                    Reg(at + 4, 4, r.size_low() if r else 0),
                    Reg(at + 8, 4, r.base >> 32 if r else 0, rw=0xFFFFFFFF),
                    Reg(at + 12, 4, r.base & self.BASE_LOW_MASK if r else 0, rw=self.BASE_LOW_MASK)]
        return out

    def attach(self, cs: ConfigSpace, off: int) -> None:
        # CXL r3.1 §8.1.3.2/8.1.3.8: fields marked RWL become read-only once CONFIG_LOCK is set.
        locked = {off + self.CTRL: self.CTRL_LOCKED_RW}
        for i in range(2):
            locked[off + self.RANGE0 + 0x10 * i + 8] = 0xFFFFFFFF
            locked[off + self.RANGE0 + 0x10 * i + 12] = self.BASE_LOW_MASK

        def lock_guard(woff: int, size: int, old_dw: int, new_dw: int) -> None:
            base = woff & ~3
            if cs.get(off + self.LOCK, 2) & self.LOCK_CONFIG and (old_dw ^ new_dw) & locked[base]:
                mask = locked[base]
                cs.set(base, 4, (new_dw & ~mask) | (old_dw & mask))

        for base in locked:
            cs.add_write_hook(base, 4, lock_guard)

        # Initiate Cache Write Back and Invalidation / Initiate CXL Reset: act, then read back 0.
        # The model completes both at once (Cache Invalid / CXL Reset Complete in Status2).
        def initiate(woff: int, size: int, old_dw: int, new_dw: int) -> None:
            ctrl2 = cs.get(off + self.CTRL2, 2)
            done = 0
            if ctrl2 & self.CTRL2_WBI and self.cap & self.CAP_CACHE_WBI:
                done |= self.STATUS2_CACHE_INV
            if ctrl2 & self.CTRL2_RESET and self.cap & self.CAP_CXL_RESET:
                done |= self.STATUS2_RESET_DONE
            cs.set(off + self.CTRL2, 2, ctrl2 & ~(self.CTRL2_WBI | self.CTRL2_RESET))
            if done:
                cs.set(off + self.STATUS2, 2, cs.get(off + self.STATUS2, 2) | done)

        cs.add_write_hook(off + self.CTRL2, 2, initiate)


# ---------------------------------------------------------------------------- ID 2: non-CXL function map
class CxlFunctionMapDvsec(CxlDvsec):
    """Non-CXL Function Map DVSEC (ID 2): eight 32-bit HwInit bitmaps of non-CXL functions."""

    name: ClassVar[str] = "CXL Non-CXL Function Map DVSEC"
    DVSEC_ID: ClassVar[int] = ID_FUNCTION_MAP
    SIZEOF: ClassVar[int] = 0x2C
    MAP0: ClassVar[int] = 0x0C

    def __init__(self, maps: Sequence[int] = (0,) * 8, *, revision: int = 0) -> None:
        if len(maps) != 8 or any(not 0 <= m < 1 << 32 for m in maps):
            raise VfiolabError("CXL function map DVSEC: need eight 32-bit map registers")
        super().__init__(revision)
        self.maps = list(maps)

    def regs(self) -> list[Reg]:
        return [Reg(self.MAP0 + 4 * i, 4, m, hwinit=0xFFFFFFFF) for i, m in enumerate(self.maps)]


# ---------------------------------------------------------------------------- ID 3: extensions for ports
class CxlPortDvsec(CxlDvsec):
    """CXL Extensions DVSEC for Ports (ID 3): port control overrides, alternate bus/memory windows, RCRB."""

    name: ClassVar[str] = "CXL Extensions DVSEC for Ports"
    DVSEC_ID: ClassVar[int] = ID_PORT
    SIZEOF: ClassVar[int] = 0x28
    STATUS: ClassVar[int] = 0x0A
    CTRL: ClassVar[int] = 0x0C
    ALT_BUS_BASE: ClassVar[int] = 0x0E
    ALT_BUS_LIMIT: ClassVar[int] = 0x0F
    ALT_MEM_BASE: ClassVar[int] = 0x10
    ALT_MEM_LIMIT: ClassVar[int] = 0x12
    ALT_PREF_BASE: ClassVar[int] = 0x14
    ALT_PREF_LIMIT: ClassVar[int] = 0x16
    ALT_PREF_BASE_HI: ClassVar[int] = 0x18
    ALT_PREF_LIMIT_HI: ClassVar[int] = 0x1C
    RCRB_BASE: ClassVar[int] = 0x20
    RCRB_BASE_HI: ClassVar[int] = 0x24
    STATUS_PM_DONE: ClassVar[int] = 0x0001
    STATUS_VIRAL: ClassVar[int] = 0x4000
    CTRL_RW: ClassVar[int] = 0x400F  # unmask SBR, unmask link disable, alt memory, alt BME, viral enable

    def __init__(self, *, pm_init_complete: bool = True, revision: int = 0) -> None:
        super().__init__(revision)
        self.pm_init_complete = pm_init_complete

    def regs(self) -> list[Reg]:
        return [Reg(self.STATUS, 2, self.STATUS_PM_DONE if self.pm_init_complete else 0,
                    w1c=self.STATUS_VIRAL, sticky=self.STATUS_VIRAL),
                Reg(self.CTRL, 2, 0, rw=self.CTRL_RW),
                Reg(self.ALT_BUS_BASE, 1, 0, rw=0xFF),
                Reg(self.ALT_BUS_LIMIT, 1, 0, rw=0xFF),
                Reg(self.ALT_MEM_BASE, 2, 0, rw=0xFFF0),
                Reg(self.ALT_MEM_LIMIT, 2, 0, rw=0xFFF0),
                Reg(self.ALT_PREF_BASE, 2, 0, rw=0xFFF0),
                Reg(self.ALT_PREF_LIMIT, 2, 0, rw=0xFFF0),
                Reg(self.ALT_PREF_BASE_HI, 4, 0, rw=0xFFFFFFFF),
                Reg(self.ALT_PREF_LIMIT_HI, 4, 0, rw=0xFFFFFFFF),
                Reg(self.RCRB_BASE, 4, 0, rw=0xFFFFE001),
                Reg(self.RCRB_BASE_HI, 4, 0, rw=0xFFFFFFFF)]


# ---------------------------------------------------------------------------- IDs 4/5: GPF
def _gpf_field(base: int, scale: int) -> int:
    if not 0 <= base <= 0xF or not 0 <= scale <= 0xF:
        raise VfiolabError(f"CXL GPF: time base {base} / scale {scale} outside 4 bits")
    return base | scale << 8


class CxlGpfPortDvsec(CxlDvsec):
    """GPF DVSEC for CXL Ports (ID 4): phase 1 and phase 2 timeouts, RW."""

    name: ClassVar[str] = "CXL GPF DVSEC for Ports"
    DVSEC_ID: ClassVar[int] = ID_GPF_PORT
    SIZEOF: ClassVar[int] = 0x10
    PHASE1: ClassVar[int] = 0x0C
    PHASE2: ClassVar[int] = 0x0E

    def __init__(self, phase1: tuple[int, int] = (0, 0), phase2: tuple[int, int] = (0, 0), *,
                 revision: int = 0) -> None:
        super().__init__(revision)
        self.phase1, self.phase2 = _gpf_field(*phase1), _gpf_field(*phase2)

    def regs(self) -> list[Reg]:
        return [Reg(self.PHASE1, 2, self.phase1, rw=0x0F0F), Reg(self.PHASE2, 2, self.phase2, rw=0x0F0F)]


class CxlGpfDeviceDvsec(CxlDvsec):
    """GPF DVSEC for CXL Devices (ID 5): phase 2 duration and power, RO."""

    name: ClassVar[str] = "CXL GPF DVSEC for Devices"
    DVSEC_ID: ClassVar[int] = ID_GPF_DEVICE
    SIZEOF: ClassVar[int] = 0x10
    DURATION: ClassVar[int] = 0x0A
    POWER: ClassVar[int] = 0x0C

    def __init__(self, duration: tuple[int, int] = (0, 0), power_mw: int = 0, *, revision: int = 0) -> None:
        if not 0 <= power_mw < 1 << 32:
            raise VfiolabError(f"CXL GPF device DVSEC: power {power_mw} mW outside 32 bits")
        super().__init__(revision)
        self.duration, self.power_mw = _gpf_field(*duration), power_mw

    def regs(self) -> list[Reg]:
        return [Reg(self.DURATION, 2, self.duration), Reg(self.POWER, 4, self.power_mw)]


# ---------------------------------------------------------------------------- ID 7: Flex Bus port
class CxlFlexBusDvsec(CxlDvsec):
    """PCIe DVSEC for Flex Bus Port (ID 7): capability (RO), control (RW), status; rev 2 adds *2 registers."""

    name: ClassVar[str] = "CXL Flex Bus Port DVSEC"
    DVSEC_ID: ClassVar[int] = ID_FLEXBUS_PORT
    CAP: ClassVar[int] = 0x0A
    CTRL: ClassVar[int] = 0x0C
    STATUS: ClassVar[int] = 0x0E
    MOD_TS: ClassVar[int] = 0x10
    CAP2: ClassVar[int] = 0x14
    CTRL2: ClassVar[int] = 0x18
    STATUS2: ClassVar[int] = 0x1C
    CTRL_RW: ClassVar[int] = 0x63FF  # protocol enables, sync header bypass, drift buffer, flit modes
    STATUS_ERRORS: ClassVar[int] = 0x1F00  # protocol ID framing, dropped, retimer and phase-2 mismatches

    def __init__(self, *, cap: int = 0x0007, revision: int = 2, mod_ts_data: int = 0,
                 nop_hint: bool = False) -> None:
        if not 1 <= revision <= 0xF:
            raise VfiolabError(f"CXL Flex Bus DVSEC: revision {revision} (1 = CXL 2.0, 2 = CXL 3.x)")
        if not 0 <= cap <= 0xFFFF or not 0 <= mod_ts_data < 1 << 24:
            raise VfiolabError("CXL Flex Bus DVSEC: capability or modified TS data out of range")
        super().__init__(revision)
        self.cap, self.mod_ts_data, self.nop_hint = cap, mod_ts_data, nop_hint

    def dvsec_length(self) -> int:
        return 0x14 if self.revision < 2 else 0x20

    def regs(self) -> list[Reg]:
        out = [Reg(self.CAP, 2, self.cap),
               Reg(self.CTRL, 2, 0, rw=self.CTRL_RW),
               Reg(self.STATUS, 2, 0, w1c=self.STATUS_ERRORS, sticky=self.STATUS_ERRORS),
               Reg(self.MOD_TS, 4, self.mod_ts_data)]
        if self.revision >= 2:
            out += [Reg(self.CAP2, 4, int(self.nop_hint)), Reg(self.CTRL2, 4, 0, rw=int(self.nop_hint)),
                    Reg(self.STATUS2, 4, 0)]
        return out


# ---------------------------------------------------------------------------- ID 8: register locator
class RegisterBlock(NamedTuple):
    """One Register Block entry: which BAR, what kind of block, its 64 KiB aligned offset in the BAR."""

    bir: int
    block_id: int  # 1 component registers, 2 BAR virtualization, 3 CXL device registers, 4 CPMU, ff vendor
    offset: int


class CxlRegisterLocatorDvsec(CxlDvsec):
    """Register Locator DVSEC (ID 8): HwInit entries locating CXL register blocks in the BARs."""

    name: ClassVar[str] = "CXL Register Locator DVSEC"
    DVSEC_ID: ClassVar[int] = ID_REG_LOCATOR
    BLOCK1: ClassVar[int] = 0x0C

    def __init__(self, blocks: Sequence[RegisterBlock], *, revision: int = 0) -> None:
        for b in blocks:
            if not 0 <= b.bir <= 7 or not 0 <= b.block_id <= 0xFF or b.offset & 0xFFFF \
                    or not 0 <= b.offset < 1 << 64:
                raise VfiolabError(f"CXL register locator: bad block {b} (BIR 0..7, ID 0..ff, 64 KiB "
                                   "aligned offset)")
        if self.BLOCK1 + 8 * len(blocks) > 0xFFF:
            raise VfiolabError(f"CXL register locator: {len(blocks)} blocks overflow the DVSEC length")
        super().__init__(revision)
        self.blocks = list(blocks)

    def dvsec_length(self) -> int:
        return self.BLOCK1 + 8 * len(self.blocks)

    def regs(self) -> list[Reg]:
        out = []
        for i, b in enumerate(self.blocks):
            lo = b.bir | b.block_id << 8 | (b.offset & 0xFFFF0000)
            out += [Reg(self.BLOCK1 + 8 * i, 4, lo, hwinit=0xFFFF_FF07),
                    Reg(self.BLOCK1 + 8 * i + 4, 4, b.offset >> 32, hwinit=0xFFFFFFFF)]
        return out


# ---------------------------------------------------------------------------- ID 9: MLD
class CxlMldDvsec(CxlDvsec):
    """MLD DVSEC (ID 9): number of logical devices (HwInit) and the LD-ID hot reset vector (RW)."""

    name: ClassVar[str] = "CXL MLD DVSEC"
    DVSEC_ID: ClassVar[int] = ID_MLD
    SIZEOF: ClassVar[int] = 0x10
    NUM_LD: ClassVar[int] = 0x0A
    HOT_RESET: ClassVar[int] = 0x0C

    def __init__(self, num_ld: int = 16, *, revision: int = 0) -> None:
        if not 1 <= num_ld <= 16:
            raise VfiolabError(f"CXL MLD DVSEC: {num_ld} logical devices (1..16)")
        super().__init__(revision)
        self.num_ld = num_ld

    def regs(self) -> list[Reg]:
        return [Reg(self.NUM_LD, 2, self.num_ld, hwinit=0xFFFF), Reg(self.HOT_RESET, 2, 0, rw=0xFFFF)]


# ============================================================================ lspci 3.9 decoders
_INTERLEAVE = (0, 256, 4096, 512, 1024, 2048, 8192, 16384)
_RANGE_TYPE = ("Volatile", "Non-volatile", "CDAT")
_RANGE_CLASS = ("DRAM", "Storage", "CDAT")


def _pick(table: Sequence[object], idx: int) -> str:
    # lspci indexes these arrays without a bounds check and crashes (SIGSEGV observed with 3.9.0) for
    # larger encodings; we print lspci's TABLE() fallback "??N" instead.
    return str(table[idx]) if idx < len(table) else f"??{idx}"


def _range(out: Out, n: int, base: int, size: int) -> None:
    # ls-ecaps.c cxl_range: flags from the low 16 bits of Size Low; size/base keep bits 63:28 only of
    # the size, the base as read; the end wraps at 64 bits.
    w = size & 0xFFFF
    size &= ~0x0FFFFFFF
    end = (base + size - 1) & (1 << 64) - 1
    out.write(f"\t\tRange{n}: {base:016x}-{end:016x}\n"
              f"\t\t\tValid{flag(w, 1)} Active{flag(w, 2)} Type={_pick(_RANGE_TYPE, (w >> 2) & 7)} "
              f"Class={_pick(_RANGE_CLASS, (w >> 5) & 7)} interleave={_pick(_INTERLEAVE, (w >> 8) & 0x1F)} "
              f"timeout={1 << ((w >> 13) & 7) * 2}s\n")


def _dec_device(v: DvsecView, out: Out) -> None:
    # ls-ecaps.c dvsec_cxl_device: nothing for short structures or revision 0 (CXL 1.1).
    if v.length < 0x38 or v.revision < 1:
        return
    c = CxlDeviceDvsec
    w = v.r16(c.CAP)
    out.write(f"\t\tCXLCap:\t{flags(w, ((1, 'Cache'), (2, 'IO'), (4, 'Mem'), (8, 'Mem HW Init')))} "
              f"HDMCount {(w >> 4) & 3} Viral{flag(w, 0x4000)}\n")
    w = v.r16(c.CTRL)
    out.write(f"\t\tCXLCtl:\t{flags(w, ((1, 'Cache'), (2, 'IO'), (4, 'Mem')))} Cache SF Cov {(w >> 3) & 0x1F} "
              f"Cache SF Gran {(w >> 8) & 7} Cache Clean{flag(w, 0x800)} Viral{flag(w, 0x4000)}\n")
    out.write(f"\t\tCXLSta:\tViral{flag(v.r16(c.STATUS), 0x4000)}\n")
    w = v.r16(c.STATUS2)
    out.write(f"\t\tCXLSta2:\t{flags(w, ((2, 'ResetComplete'), (4, 'ResetError'), (0x8000, 'PMComplete')))}\n")
    w = v.r16(c.CAP2)
    unit, amount = w & 0xF, (w >> 8) & 0xFF
    if unit in (1, 2):
        out.write(f"\t\tCache Size: {amount * (64 << 10 if unit == 1 else 1 << 20):08x}\n")
    elif unit == 0:
        out.write("\t\tCache Size Not Reported\n")
    else:
        out.write(f"\t\tCache Size: {amount} of unknown unit size ({unit})\n")
    for i in range(2):
        at = c.RANGE0 + 0x10 * i
        size = v.r32(at) << 32 | v.r32(at + 4)
        base = v.r32(at + 8) << 32 | v.r32(at + 12)
        _range(out, i + 1, base, size)


def _dec_function_map(v: DvsecView, out: Out) -> None:
    # ls-ecaps.c dvsec_cxl_function_map: prints the low 16 bits of each map register as %08x and
    # reads all eight even when Len is shorter (lspci then dies on the first unfetched byte).
    for i in range(8):
        out.write(f"\t\tFuncMap {i}: {v.r16(CxlFunctionMapDvsec.MAP0 + 4 * i):08x}\n")


def _dec_port(v: DvsecView, out: Out) -> None:
    # ls-ecaps.c dvsec_cxl_port: PMComplete tests the mask 0x0a (lspci uses the register offset as the
    # mask), and the memory window is labelled "AlternateBus" a second time.
    if v.length < CxlPortDvsec.SIZEOF:
        return
    c = CxlPortDvsec
    out.write(f"\t\tCXLPortSta:\tPMComplete{flag(v.r16(c.STATUS), 0x0A)}\n")
    w = v.r16(c.CTRL)
    out.write("\t\tCXLPortCtl:\t" + flags(w, ((1, "UnmaskSBR"), (2, "UnmaskLinkDisable"), (4, "AltMem"),
                                               (8, "AltBME"), (0x4000, "ViralEnable"))) + "\n")
    out.write(f"\t\tAlternateBus:\t{v.r8(c.ALT_BUS_BASE):02x}-{v.r8(c.ALT_BUS_LIMIT):02x}\n")
    out.write(f"\t\tAlternateBus:\t{v.r16(c.ALT_MEM_BASE):04x}-{v.r16(c.ALT_MEM_LIMIT):04x}\n")


# GPF time scale encodings 0..7: 1us 10us 100us 1ms 10ms 100ms 1s 10s (CXL r3.1 §8.1.6.2).
_GPF_MULT = (1, 10, 100, 1, 10, 100, 1, 10)


def _gpf_time(out: Out, label: str, w: int) -> None:
    # ls-ecaps.c dvsec_cxl_gpf_*: reserved scales print a warning and the bare base; the unit is
    # "us" below 1ms, "ms" below 1s, "s" for exactly 1s and "<?>" otherwise (so 10s prints "<?>").
    base, scale = w & 0xF, (w >> 8) & 0xF
    if scale < len(_GPF_MULT):
        value = base * _GPF_MULT[scale]
    else:
        out.write(f"\t\tReserved time scale encoding {scale:x}\n")
        value = base
    unit = "us" if scale < 3 else "ms" if scale < 6 else "s" if scale == 6 else "<?>"
    out.write(f"\t\t{label}: {value}{unit}\n")


def _dec_gpf_port(v: DvsecView, out: Out) -> None:
    _gpf_time(out, "GPF Phase 1 Timeout", v.r16(CxlGpfPortDvsec.PHASE1))
    _gpf_time(out, "GPF Phase 2 Timeout", v.r16(CxlGpfPortDvsec.PHASE2))


def _dec_gpf_device(v: DvsecView, out: Out) -> None:
    _gpf_time(out, "GPF Phase 2 Duration", v.r16(CxlGpfDeviceDvsec.DURATION))
    out.write(f"\t\tGPF Phase 2 Power: {v.r32(CxlGpfDeviceDvsec.POWER)}mW\n")


_FB_COMMON = ((0x01, "Cache"), (0x02, "IO"), (0x04, "Mem"))
_FB_CAP = _FB_COMMON + ((0x20, "68BFlit"), (0x40, "MltLogDev"))
_FB_CTRL = _FB_COMMON + ((0x08, "SynHdrByp"), (0x10, "DrftBuf"), (0x20, "68BFlit"), (0x40, "MltLogDev"),
                         (0x80, "RCD"), (0x100, "Retimer1"), (0x200, "Retimer2"))
_FB_STATUS = _FB_COMMON + ((0x08, "SynHdrByp"), (0x10, "DrftBuf"), (0x20, "68BFlit"), (0x40, "MltLogDev"))
_FB_REV2 = ((0x2000, "256BFlit"), (0x4000, "PBRFlit"))


def _dec_flexbus(v: DvsecView, out: Out) -> None:
    # ls-ecaps.c dvsec_cxl_flex_bus: revision 2 and later add the 256B/PBR flit flags and the *2 registers.
    if v.revision < 1:
        out.write(f"\t\tRevision {v.revision} not supported\n")
        return
    # Text goes out in lspci's pieces (each line's newline opens the next piece) so that output cut by
    # lspci dying on a short structure ends at the same character.
    c = CxlFlexBusDvsec
    rev2 = v.revision > 1
    sep = ""
    for label, rel, table in (("FBCap", c.CAP, _FB_CAP), ("FBCtl", c.CTRL, _FB_CTRL),
                              ("FBSta", c.STATUS, _FB_STATUS)):
        w = v.r16(rel)
        out.write(f"{sep}\t\t{label}:\t{flags(w, table)}" + (" " + flags(w, _FB_REV2) if rev2 else ""))
        sep = "\n"
    out.write(f"\n\t\tFBModTS:\tReceived FB Data: {v.r32(c.MOD_TS) & 0xFFFFFF:06x}\n")
    if rev2:
        out.write(f"\t\tFBCap2:\tNOPHint{flag(v.r32(c.CAP2), 1)}\n")
        out.write(f"\t\tFBCtl2:\tNOPHint{flag(v.r32(c.CTRL2), 1)}\n")
        out.write(f"\t\tFBSta2:\tNOPHintInfo: {v.r32(c.STATUS2) & 3:x}\n")


_BLOCK_NAMES = ("empty", "component registers", "BAR virtualization", "CXL device registers",
                "CPMU registers")


def _dec_reg_locator(v: DvsecView, out: Out) -> None:
    # ls-ecaps.c dvsec_cxl_register_locator: entries that fit in Len; empty (ID 0) entries are skipped
    # but still counted in the block number.
    i = 0
    while (pos := CxlRegisterLocatorDvsec.BLOCK1 + 8 * i) + 7 < v.length:
        lo, hi = v.r32(pos), v.r32(pos + 4)
        block_id = (lo >> 8) & 0xFF
        if block_id:
            name = (_BLOCK_NAMES[block_id] if block_id < len(_BLOCK_NAMES)
                    else "vendor-specific" if block_id == 0xFF else "<?>")
            offset = hi << 32 | (lo & 0xFFFF0000)
            out.write(f"\t\tBlock{i + 1}: BIR: bar{lo & 7}, ID: {name}, offset: {offset:016x}\n")
        i += 1


def _dec_mld(v: DvsecView, out: Out) -> None:
    # ls-ecaps.c dvsec_cxl_mld: encodings 0 and above 16 are reserved and print nothing.
    n = v.r16(CxlMldDvsec.NUM_LD)
    if 0 < n <= 16:
        out.write(f"\t\tNumLogDevs: {n}\n")


_BODY_DECODERS: dict[int, Callable[[DvsecView, Out], None]] = {
    ID_DEVICE: _dec_device, ID_FUNCTION_MAP: _dec_function_map, ID_PORT: _dec_port,
    ID_GPF_PORT: _dec_gpf_port, ID_GPF_DEVICE: _dec_gpf_device, ID_FLEXBUS_PORT: _dec_flexbus,
    ID_REG_LOCATOR: _dec_reg_locator, ID_MLD: _dec_mld,
}


# pciutils ls-ecaps.c cap_dvsec/cap_dvsec_cxl: CXL DVSECs of Len >= 16 print ": CXL"; the body needs
# -vv and the whole structure readable (otherwise nothing more is printed).
@register_dvsec_decoder(CXL_VENDOR, min_length=16)
def decode_cxl(v: DvsecView, out: Out) -> None:
    """``: CXL`` and, at -vv, the body of DVSEC IDs 0, 2, 3, 4, 5, 7, 8, 9."""
    out.write(": CXL\n")
    if v.ctx.verbose < 2 or not v.fetch_all():
        return
    body = _BODY_DECODERS.get(v.dvsec_id)
    if body is None:
        out.write(f"\t\tUnknown ID {v.dvsec_id:04x}\n")
        return
    body(v, out)
