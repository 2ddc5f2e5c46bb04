"""Differential test against the real lspci (pciutils 3.9.0): DOE, IDE, TPH, DPC, (VF) Resizable BAR,
VSEC, DVSEC and CXL DVSEC decoders print exactly what ``lspci -F dump -v/-vv/-vvv`` prints.

Each device is a hand-made PCIe endpoint (type 0 header, Capabilities List, a minimal PCI Express v2
endpoint capability at 0x40) with one or more of these capabilities chained from 0x100, their register
bodies randomised by hypothesis; some chains end in a capability cut off by the end of config space.
Many devices go into one dump so that each verbosity costs one lspci run.
"""

from __future__ import annotations

import io
import os
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lspci_oracle import LSPCI, cap_sections, run_lspci
from vfiolab.pci import regs
from vfiolab.pci.caps import cxl, doe, dpc, dvsec, ide, rebar, tph, vsec
from vfiolab.pci.caps.base import EXT_DECODERS, Capability, CapabilityList
from vfiolab.pci.config import ConfigSpace
from vfiolab.pci.decode import DecodeContext
from vfiolab.pci.dump import format_dump

pytestmark = pytest.mark.interop

CFG_END = 0x1000


def endpoint() -> ConfigSpace:
    """Type 0 header with Capabilities List, and a PCI Express v2 endpoint capability at 0x40 by hand."""
    cs = ConfigSpace()
    cs.init_reg(regs.VENDOR_ID, 4, 0x5678_1234)
    cs.init_reg(regs.STATUS, 2, regs.STATUS_CAP_LIST)
    cs.init_reg(regs.CLASS_PROG, 3, 0x020000)
    cs.init_reg(regs.CAPABILITY_LIST, 1, 0x40)
    cs.init_reg(0x40, 4, 0x10 | 0 << 8 | 0x0002 << 16)  # ID 10h, next 0, version 2, type 0 (endpoint)
    return cs


# ----------------------------------------------------------------------------- capability kinds
Fixup = Callable[[ConfigSpace, int, Capability, st.DataObject], None]


def _no_fixup(cs: ConfigSpace, off: int, cap: Capability, data: st.DataObject) -> None:
    pass


def _cxl_device_fixup(cs: ConfigSpace, off: int, cap: Capability, data: st.DataObject) -> None:
    # Keep the range Type/Class/interleave encodings lspci indexes its tables with in range: larger
    # values make lspci 3.9 read past its arrays (it crashes).
    cs.set(off + 8, 2, cxl.ID_DEVICE)
    for size_lo in (off + 0x1C, off + 0x2C):
        w = cs.get(size_lo, 2)
        t, c, il = (w >> 2) & 7, (w >> 5) & 7, (w >> 8) & 0x1F
        cs.set(size_lo, 2, (w & ~0x1FFC) | (t % 3) << 2 | (c % 3) << 5 | (il % 8) << 8)


def _dvsec_header_fixup(dvsec_id: int, min_len: int) -> Fixup:
    """Randomise revision and length but keep the ID and a length that covers what lspci reads."""

    def fix(cs: ConfigSpace, off: int, cap: Capability, data: st.DataObject) -> None:
        rev = data.draw(st.integers(0, 15), label="rev")
        length = data.draw(st.one_of(st.just(cap.length()), st.sampled_from([16, 0xFFF]),
                                     st.integers(16, 0x60)), label="len")
        length = max(length, min_len)
        cs.set(off + 4, 4, cxl.CXL_VENDOR | rev << 16 | length << 20)
        cs.set(off + 8, 2, dvsec_id)
        if dvsec_id == cxl.ID_FLEXBUS_PORT and rev > 1 and length < 0x20:
            cs.set(off + 4, 4, cxl.CXL_VENDOR | rev << 16 | 0x20 << 20)
        if dvsec_id == cxl.ID_DEVICE:
            _cxl_device_fixup(cs, off, cap, data)
        if dvsec_id == cxl.ID_MLD and data.draw(st.booleans(), label="small LD count"):
            cs.set(off + cxl.CxlMldDvsec.NUM_LD, 2, data.draw(st.integers(0, 17), label="LDs"))

    return fix


def _unknown_cxl_fixup(cs: ConfigSpace, off: int, cap: Capability, data: st.DataObject) -> None:
    # CXL DVSEC IDs lspci 3.9 has no decoder for ("Unknown ID").
    dvsec_id = data.draw(st.sampled_from([1, 6, 0x0A, 0x1234]), label="id")
    _dvsec_header_fixup(dvsec_id, 0x10)(cs, off, cap, data)


def _generic_dvsec_fixup(cs: ConfigSpace, off: int, cap: Capability, data: st.DataObject) -> None:
    # Any vendor but CXL, any revision, length and ID.
    hdr = cs.get(off + 4, 4)
    if hdr & 0xFFFF == cxl.CXL_VENDOR:
        cs.set(off + 4, 4, hdr ^ 1)


@dataclass
class Kind:
    """How to build one capability and which of its bytes are randomised afterwards."""

    make: Callable[[st.DataObject], Capability]
    fixup: Fixup = _no_fixup
    body_from: int = 4  # randomise [off + body_from, off + length)


def _doe(d: st.DataObject) -> Capability:
    return doe.DoeCap(interrupt=d.draw(st.booleans()), msg_number=d.draw(st.integers(0, 0x7FF)))


def _rebar(cls: type[rebar.ResizableBarCap]) -> Callable[[st.DataObject], Capability]:
    def make(d: st.DataObject) -> Capability:
        n = d.draw(st.integers(1, 6), label="nbars")
        return cls([rebar.RebarBar(i, [1 << 20]) for i in range(n)])
    return make


KINDS: dict[str, Kind] = {
    "doe": Kind(_doe),
    "ide": Kind(lambda d: ide.IdeCap(link_tcs=d.draw(st.integers(0, 2)), selective=[1])),
    "tph": Kind(lambda d: tph.TphCap(st_location=tph.LOC_CAP, st_entries=d.draw(st.integers(1, 8)))),
    "dpc": Kind(lambda d: dpc.DpcCap(rp_extensions=d.draw(st.booleans()))),
    "rebar": Kind(_rebar(rebar.ResizableBarCap)),
    "vfrebar": Kind(_rebar(rebar.VfResizableBarCap)),
    "vsec": Kind(lambda d: vsec.VsecCap(1, 0, bytes(d.draw(st.integers(0, 12))))),
    "dvsec": Kind(lambda d: dvsec.DvsecCap(0x8086, 0, 0, bytes(8)), _generic_dvsec_fixup),
    "cxl-device": Kind(lambda d: cxl.CxlDeviceDvsec(), _dvsec_header_fixup(cxl.ID_DEVICE, 0x10), 0x0A),
    "cxl-funcmap": Kind(lambda d: cxl.CxlFunctionMapDvsec(), _dvsec_header_fixup(cxl.ID_FUNCTION_MAP, 0x2C),
                        0x0A),
    "cxl-port": Kind(lambda d: cxl.CxlPortDvsec(), _dvsec_header_fixup(cxl.ID_PORT, 0x10), 0x0A),
    "cxl-gpf-port": Kind(lambda d: cxl.CxlGpfPortDvsec(), _dvsec_header_fixup(cxl.ID_GPF_PORT, 0x10), 0x0A),
    "cxl-gpf-dev": Kind(lambda d: cxl.CxlGpfDeviceDvsec(), _dvsec_header_fixup(cxl.ID_GPF_DEVICE, 0x10), 0x0A),
    "cxl-flexbus": Kind(lambda d: cxl.CxlFlexBusDvsec(), _dvsec_header_fixup(cxl.ID_FLEXBUS_PORT, 0x14), 0x0A),
    "cxl-locator": Kind(lambda d: cxl.CxlRegisterLocatorDvsec([cxl.RegisterBlock(0, 1, 0)] * d.draw(
        st.integers(0, 5))), _dvsec_header_fixup(cxl.ID_REG_LOCATOR, 0x10), 0x0A),
    "cxl-mld": Kind(lambda d: cxl.CxlMldDvsec(), _dvsec_header_fixup(cxl.ID_MLD, 0x10), 0x0A),
    "cxl-unknown": Kind(lambda d: cxl.CxlMldDvsec(), _unknown_cxl_fixup, 0x0A),
}


def build_device(data: st.DataObject) -> tuple[bytes, list[tuple[int, int]]]:
    """One device: a chain of 1..3 random kinds from 0x100, optionally one more cut by the end of
    config space.  Returns the config bytes and the (offset, version) of each of our capabilities."""
    cs = endpoint()
    chain = CapabilityList(cs)
    names = data.draw(st.lists(st.sampled_from(sorted(KINDS)), min_size=1, max_size=3), label="kinds")
    placed: list[tuple[Capability, Kind]] = []
    for name in names:
        kind = KINDS[name]
        cap = chain.add(kind.make(data))
        placed.append((cap, kind))
    for cap, kind in placed:
        off, n = cap.offset, cap.length()
        body = data.draw(st.binary(min_size=n - kind.body_from, max_size=n - kind.body_from), label="body")
        cs.set(off + kind.body_from, len(body), int.from_bytes(body, "little"))
        kind.fixup(cs, off, cap, data)
    caps = [(cap.offset, cap.version) for cap, _ in placed]
    if data.draw(st.booleans(), label="tail"):
        # A last capability whose registers run past 4 KiB: lspci's fetches fail part-way.
        name = data.draw(st.sampled_from(sorted(KINDS)), label="tail kind")
        kind = KINDS[name]
        scratch = endpoint()
        cap = CapabilityList(scratch).add(kind.make(data))
        n = cap.length()
        body = data.draw(st.binary(min_size=n - kind.body_from, max_size=n - kind.body_from), label="tail body")
        scratch.set(cap.offset + kind.body_from, len(body), int.from_bytes(body, "little"))
        kind.fixup(scratch, cap.offset, cap, data)
        keep = data.draw(st.integers(4, min(n, 0x40) - 1) if n > 4 else st.just(4), label="kept bytes")
        pos = CFG_END - ((keep + 3) & ~3)
        last = placed[-1][0]
        if pos >= last.offset + last.length():
            cs.set(last.offset, 4, regs.ext_cap_header(last.cap_id, last.version, pos))
            cs.data[pos:CFG_END] = scratch.data[cap.offset:cap.offset + CFG_END - pos]
            cs.set(pos, 4, regs.ext_cap_header(cap.cap_id, cap.version, 0))
            caps.append((pos, cap.version))
    return cs.dump(), caps


def expected(cfg: bytes, caps: list[tuple[int, int]], verbose: int) -> dict[int, str] | None:
    """Our sections per offset, or None when lspci would die on this device (tested separately)."""
    out: dict[int, str] = {}
    ctx = DecodeContext(cfg, avail=4096, verbose=verbose, is_pcie=True, pcie_type=0)
    for off, version in caps:
        text = io.StringIO()
        cap_id = int.from_bytes(cfg[off:off + 2], "little")
        try:
            EXT_DECODERS[cap_id](ctx, text, off)
        except dvsec.LspciInternalBug:
            return None
        head = f"\tCapabilities: [{off:03x} v{version}] " if verbose > 1 else f"\tCapabilities: [{off:03x}] "
        out[off] = head + text.getvalue()
    return out


def split_devices(text: str) -> list[str]:
    return [block + "\n" for block in text.split("\n\n") if block.strip()]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.data_too_large])
@given(st.data())
def test_decoders_match_lspci(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 12), label="devices")
    devices = [build_device(data) for _ in range(n)]
    for verbose in (1, 2, 3):
        wants = [expected(cfg, caps, verbose) for cfg, caps in devices]
        kept = [(i, cfg, w) for i, ((cfg, _), w) in enumerate(zip(devices, wants, strict=True)) if w is not None]
        if not kept:
            continue
        dump = "".join(format_dump(0, i, 0, cfg) for i, cfg, _ in kept)
        blocks = split_devices(run_lspci(dump, "-" + "v" * verbose))
        assert len(blocks) == len(kept)
        for block, (i, _, want) in zip(blocks, kept, strict=True):
            assert block.startswith(f"{i:02x}:00.0 ")
            got = cap_sections(block)
            for off, text in want.items():
                assert got.get(off) == text, f"device {i:02x} verbose {verbose} cap {off:#x}"


def _lspci_raw(dump: str, *args: str) -> subprocess.CompletedProcess[str]:
    with tempfile.NamedTemporaryFile("w", suffix=".dump", delete=False) as f:
        f.write(dump)
    try:
        return subprocess.run([LSPCI, "-F", f.name, *args], capture_output=True, text=True, check=False)
    finally:
        os.unlink(f.name)


@pytest.mark.parametrize(("dvsec_id", "length", "rev"), [(cxl.ID_FUNCTION_MAP, 0x10, 0),
                                                         (cxl.ID_FUNCTION_MAP, 0x20, 0),
                                                         (cxl.ID_FLEXBUS_PORT, 0x10, 1),
                                                         (cxl.ID_FLEXBUS_PORT, 0x18, 2)])
def test_cxl_short_dvsec_dies_like_lspci(dvsec_id: int, length: int, rev: int) -> None:
    """lspci reads past a short CXL DVSEC and dies; we stop at the same byte with the same message."""
    cs = endpoint()
    cs.set(0x100, 4, regs.ext_cap_header(0x23, 1, 0))
    cs.set(0x104, 4, cxl.CXL_VENDOR | rev << 16 | length << 20)
    cs.set(0x108, 2, dvsec_id)
    cs.set(0x10A, 0x40, int.from_bytes(bytes(range(1, 0x41)), "little"))
    cfg = cs.dump()
    res = _lspci_raw(format_dump(0, 0, 0, cfg), "-vvv")
    assert res.returncode == 1
    out = io.StringIO()
    with pytest.raises(dvsec.LspciInternalBug) as err:
        dvsec.decode_dvsec(DecodeContext(cfg, avail=4096, verbose=3, is_pcie=True, pcie_type=0), out, 0x100)
    assert res.stderr.strip().endswith("lspci: " + str(err.value))
    assert res.stdout.endswith("\tCapabilities: [100 v1] " + out.getvalue())


def test_cxl_range_out_of_table_is_undefined_in_lspci() -> None:
    """A range Type encoding above 2 makes lspci 3.9 index past its name table (it prints stack garbage
    or crashes); we print lspci's ``TABLE()`` fallback ``??N`` instead."""
    cs = endpoint()
    CapabilityList(cs).add(cxl.CxlDeviceDvsec(ranges=[cxl.CxlRange(1 << 28, media_type=7)]), 0x100)
    cfg = cs.dump()
    with tempfile.NamedTemporaryFile("w", suffix=".dump", delete=False) as f:
        f.write(format_dump(0, 0, 0, cfg))
    try:
        res = subprocess.run([LSPCI, "-F", f.name, "-vvv"], capture_output=True, check=False)
    finally:
        os.unlink(f.name)
    names = [b"Type=Volatile ", b"Type=Non-volatile ", b"Type=CDAT "]
    range1 = res.stdout.split(b"Range1:")[-1].split(b"Range2:")[0]
    assert res.returncode != 0 or not any(n in range1 for n in names)
    out = io.StringIO()
    dvsec.decode_dvsec(DecodeContext(cfg, avail=4096, verbose=3), out, 0x100)
    assert "Type=??7 " in out.getvalue()
