"""Differential test against the real lspci (pciutils 3.9.0) for the extended capabilities vfiolab only
prints: Virtual Channel (0x02/0x09), Root Complex Link (0x05), RCEC association (0x07), Multicast (0x12),
the name-only IDs and IDs 3.9 does not know.

Each device is a hand-made PCI Express function (type 0 header, a PCI Express capability at 0x40 of a
random port type) with one capability at 0x100 whose body is random bytes; some are cut short by
placing them at the very end of config space.  All devices share one dump per verbosity.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lspci_oracle import cap_sections, run_lspci
from vfiolab.pci import regs
from vfiolab.pci.caps.base import EXT_DECODERS
from vfiolab.pci.config import ConfigSpace
from vfiolab.pci.decode import DecodeContext
from vfiolab.pci.dump import format_dump, parse_dump
from vfiolab.pci.lspci.capwalk import EXT_NAME_ONLY, load_decoders, walk_ext_caps
from vfiolab.pci.lspci.device import make_device

pytestmark = pytest.mark.interop

CFG_END = 0x1000
DECODED = (0x02, 0x05, 0x07, 0x09, 0x12)
NAME_ONLY = (0x04, 0x06, 0x08, 0x0A, 0x11, 0x16, 0x1A, 0x1C, 0x20, 0x21, 0x22, 0x25, 0x26, 0x27, 0x28, 0x29)
UNKNOWN_TO_39 = (0x2A, 0x2F, 0x31, 0x7FFF)
ALL_IDS = DECODED + NAME_ONLY + UNKNOWN_TO_39
PORT_TYPES = (0x0, 0x1, 0x4, 0x5, 0x6, 0x7, 0x8, 0x9, 0xA, 0xF)


def pcie_function(port_type: int) -> ConfigSpace:
    """Type 0 header with Capabilities List and a PCI Express v2 capability of ``port_type`` at 0x40."""
    cs = ConfigSpace()
    cs.init_reg(regs.VENDOR_ID, 4, 0x5678_1234)
    cs.init_reg(regs.STATUS, 2, regs.STATUS_CAP_LIST)
    cs.init_reg(regs.CLASS_PROG, 3, 0x020000)
    cs.init_reg(regs.CAPABILITY_LIST, 1, 0x40)
    cs.init_reg(0x40, 4, 0x10 | (0x0002 | port_type << 4) << 16)
    return cs


@st.composite
def devices(draw: st.DrawFn) -> tuple[bytes, int, int]:
    """(config bytes, capability offset, port type): one capability at 0x100, or cut by the 4 KiB end."""
    ptype = draw(st.sampled_from(PORT_TYPES), label="port type")
    cs = pcie_function(ptype)
    cap_id = draw(st.sampled_from(ALL_IDS), label="id")
    version = draw(st.integers(0, 15), label="version")
    size = draw(st.sampled_from([0x40, 0x80, 0x100]), label="body size")
    body = bytearray(draw(st.binary(min_size=size, max_size=size), label="body"))
    if draw(st.booleans(), label="small counts"):
        # Keep VC/link counts small so that the whole structure is inside the body most of the time.
        body[0] &= 0xF3
        body[1] = draw(st.integers(0, 4), label="links")
    off = 0x100
    if draw(st.booleans(), label="truncated"):
        keep = draw(st.integers(1, 0x3F), label="kept dwords") * 4
        off = CFG_END - keep
        cs.set(0x100, 4, regs.ext_cap_header(0x3, 1, off))  # a DSN pointing at the tail
        cs.set(0x104, 8, 0x0123_4567_89AB_CDEF)
        body = body[:keep - 4]
    cs.set(off, 4, regs.ext_cap_header(cap_id, version, 0))
    cs.data[off + 4:off + 4 + len(body)] = bytes(body)
    return cs.dump(), off, ptype


def ours(cfg: bytes, off: int, ptype: int, verbose: int) -> str:
    """Our section of the capability at ``off``, through the same walk lspci output uses."""
    ctx = DecodeContext(cfg, avail=4096, verbose=verbose, is_pcie=True, pcie_type=ptype)
    caps = walk_ext_caps(make_device(parse_dump(format_dump(0, 0, 0, cfg))[0]), ctx)
    return next(c.prefix + c.text for c in caps if c.offset == off)


def test_decoders_registered() -> None:
    """Every ID lspci 3.9 decodes has a decoder; name-only IDs print their name."""
    load_decoders()
    assert all(i in EXT_DECODERS for i in DECODED)
    assert all(i in EXT_NAME_ONLY for i in NAME_ONLY)
    assert not any(i in EXT_DECODERS or i in EXT_NAME_ONLY for i in UNKNOWN_TO_39)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.data_too_large])
@given(st.lists(devices(), min_size=1, max_size=16))
def test_legacy_ecaps_match_lspci(devs: list[tuple[bytes, int, int]]) -> None:
    dump = "".join(format_dump(0, i, 0, cfg) for i, (cfg, _, _) in enumerate(devs))
    for verbose in (1, 2, 3):
        blocks = [b + "\n" for b in run_lspci(dump, "-" + "v" * verbose).split("\n\n") if b.strip()]
        assert len(blocks) == len(devs)
        for i, (block, (cfg, off, ptype)) in enumerate(zip(blocks, devs, strict=True)):
            got = cap_sections(block).get(off)
            assert got == ours(cfg, off, ptype, verbose), f"device {i:02x} verbose {verbose} cap {off:#x}"


def _one(cap_id: int, version: int, body: bytes, ptype: int = 0) -> tuple[bytes, str]:
    cs = pcie_function(ptype)
    cs.set(0x100, 4, regs.ext_cap_header(cap_id, version, 0))
    cs.data[0x104:0x104 + len(body)] = body
    cfg = cs.dump()
    return cfg, cap_sections(run_lspci(format_dump(0, 0, 0, cfg), "-vvv"))[0x100]


@pytest.mark.parametrize("bmap", [0, 1, 0x3, 0xC000_0000, 0x8000_0001, 0x7FFF_FFFF, 0xFFFF_FFFF, 0x0F0F_00F2])
def test_rcec_bitmap_runs(bmap: int) -> None:
    """The RCiEP device list's run printing, including runs that reach device 31."""
    cfg, want = _one(0x07, 2, bmap.to_bytes(4, "little") + bytes([0, 0xFF, 0, 0]), ptype=0xA)
    assert ours(cfg, 0x100, 0xA, 3) == want
    assert "RCiEP" in want


@pytest.mark.parametrize("ptype", PORT_TYPES)
@pytest.mark.parametrize("size", [0, 5, 6, 31, 32, 40, 63])
def test_multicast_sizes(ptype: int, size: int) -> None:
    """Window and overlay sizes print ``1 << n`` as lspci's C int does, for every port type."""
    body = bytearray(range(0x80, 0x80 + 0x30))
    body[1] = size
    body[0x24] = 0xC0 | size
    cfg, want = _one(0x12, 1, bytes(body), ptype)
    assert ours(cfg, 0x100, ptype, 3) == want
