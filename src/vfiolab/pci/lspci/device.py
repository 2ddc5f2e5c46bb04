"""One function as lspci sees it when reading a dump: config bytes, what can be fetched, filled-in IDs.

Mirrors what libpci's dump back end and generic fill give lspci (pciutils ``lib/dump.c``,
``lib/generic.c`` pci_generic_fill_info, ``lib/caps.c``): reads past the highest byte of the dump
fail and come back as 0xff; a dump shorter than 64 bytes leaves lspci without config access.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vfiolab.pci.dump import DumpedFunction

HDR_NORMAL = 0
HDR_BRIDGE = 1
HDR_CARDBUS = 2
NO_HEADER = 0xFF  # lspci.c: "byte htype = no_config_access ? -1 : ..."

_BASES_PER_TYPE = {HDR_NORMAL: 6, HDR_BRIDGE: 2, HDR_CARDBUS: 1}
_ROM_REG = {HDR_NORMAL: 0x30, HDR_BRIDGE: 0x38}


@dataclass
class Device:
    """A function with libpci's filled-in fields (IDs, class, subsystem, IRQ, BAR and ROM addresses)."""

    domain: int
    bus: int
    dev: int
    func: int
    cfg: bytes
    """4096 bytes: the dump's bytes, then 0xff."""
    avail: int
    """Bytes given by the dump (lib/dump.c dd->len); reads beyond fail."""
    cached: int = 64
    """Bytes lspci fetched at scan time (64, 128 for CardBus, 0 without config access)."""
    vendor: int = 0
    device: int = 0
    cls: int = 0
    prog_if: int = 0
    rev: int = 0
    htype: int = 0
    """Header type without the multi-function bit; NO_HEADER without config access."""
    subsys: tuple[int, int] | None = None
    irq: int = 0
    bases: list[int] = field(default_factory=lambda: [0] * 6)
    rom: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def no_config(self) -> bool:
        return self.cached == 0

    @property
    def slot(self) -> str:
        """``bb:dd.f`` (the domain is added by the caller when lspci shows it)."""
        return f"{self.bus:02x}:{self.dev:02x}.{self.func}"

    @property
    def full_name(self) -> str:
        return f"{self.domain:04x}:{self.bus:02x}:{self.dev:02x}.{self.func}"

    # pci_read_*(): a failed read gives all ones (lib/access.c pci_read_data)
    def rd8(self, off: int) -> int:
        return self.cfg[off] if off + 1 <= self.avail else 0xFF

    def rd16(self, off: int) -> int:
        return int.from_bytes(self.cfg[off:off + 2], "little") if off + 2 <= self.avail else 0xFFFF

    def rd32(self, off: int) -> int:
        return int.from_bytes(self.cfg[off:off + 4], "little") if off + 4 <= self.avail else 0xFFFFFFFF

    def fetch(self, off: int, length: int) -> bool:
        """lspci.c config_fetch(): true if every byte of [off, off+length) can be read."""
        return off + length <= self.avail

    def trad_caps(self) -> list[tuple[int, int]]:
        """(offset, id) of the standard chain as libpci scans it (lib/caps.c pci_scan_trad_caps)."""
        out: list[tuple[int, int]] = []
        if not self.rd16(0x06) & 0x10:
            return out
        seen: set[int] = set()
        where = self.rd8(0x34) & ~3
        while where:
            cap_id, nxt = self.rd8(where), self.rd8(where + 1) & ~3
            if where in seen or cap_id == 0xFF:
                break
            seen.add(where)
            out.append((where, cap_id))
            where = nxt
        return out


def make_device(fn: DumpedFunction) -> Device:
    """Fill a Device the way lspci.c scan_device() and lib/generic.c pci_generic_fill_info() do."""
    avail = len(fn.config)
    cfg = bytes(fn.config[:4096]) + b"\xff" * (4096 - min(avail, 4096))
    # lib/dump.c keeps device and function as written (00:20.0, 00:01.8 are listed as such).
    dev, func = fn.raw_slot if fn.raw_slot is not None else (fn.devfn >> 3, fn.devfn & 7)
    d = Device(fn.domain, fn.bus, dev, func, cfg, min(avail, 4096))
    if avail < 64:
        d.cached = 0  # the first 64-byte read failed: "no config access"
    elif cfg[0x0E] & 0x7F == HDR_CARDBUS and avail >= 128:
        d.cached = 128  # CardBus bridges get the rest of their header too
    d.vendor, d.device = d.rd16(0), d.rd16(2)
    d.cls, d.prog_if, d.rev = d.rd16(0x0A), d.rd8(0x09), d.rd8(0x08)
    fill_type = d.rd8(0x0E) & 0x7F  # generic.c get_hdr_type(): read even without config access
    d.htype = NO_HEADER if d.no_config else fill_type
    if fill_type == HDR_NORMAL:
        d.subsys = (d.rd16(0x2C), d.rd16(0x2E))
    elif fill_type == HDR_BRIDGE:
        for where, cap_id in d.trad_caps():
            if cap_id == 0x0D:  # the bridge's Subsystem IDs live in the SSVID capability
                d.subsys = (d.rd16(where + 4), d.rd16(where + 6))
                break
    elif fill_type == HDR_CARDBUS:
        d.subsys = (d.rd16(0x40), d.rd16(0x42))
    d.irq = d.rd8(0x3C)
    cnt = _BASES_PER_TYPE.get(fill_type, 0)
    i = 0
    while i < cnt:
        x = d.rd32(0x10 + 4 * i)
        if x and x != 0xFFFFFFFF:
            if x & 1 or x & 6 != 4:
                d.bases[i] = x
            elif i >= cnt - 1:
                d.warnings.append(f"{d.full_name}: Invalid 64-bit address seen for BAR {i}.")
            else:
                i += 1
                d.bases[i - 1] = x | d.rd32(0x10 + 4 * i) << 32
        i += 1
    reg = _ROM_REG.get(fill_type)
    if reg is not None:
        u = d.rd32(reg)
        d.rom = u if u != 0xFFFFFFFF else 0
    return d
