"""The PCI Express capability decoder prints exactly what the real lspci 3.9.0 prints.

Differential tests: functions built with ExpressCap (every port type, version 1 and 2) and functions
whose capability registers are random bytes (every bit, every Device/Port Type including undefined
ones, truncated dumps) are written as an lspci dump, decoded by /usr/bin/lspci -F at -v, -vv and
-vvv, and compared with "\\tCapabilities: [xx] " + our decoder's text.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lspci_oracle import cap_sections, run_lspci
from vfiolab.pci import regs
from vfiolab.pci.caps import express as E
from vfiolab.pci.caps import express_regs as R
from vfiolab.pci.caps.base import STD_DECODERS, CapabilityList
from vfiolab.pci.config import ConfigSpace
from vfiolab.pci.decode import DecodeContext
from vfiolab.pci.dump import format_dump

pytestmark = pytest.mark.interop

BRIDGE_TYPES = {R.TYPE_ROOT_PORT, R.TYPE_UPSTREAM, R.TYPE_DOWNSTREAM, R.TYPE_PCI_BRIDGE, R.TYPE_PCIE_BRIDGE}
_DEV_LINE = re.compile(r"^([0-9a-f]{2}):([0-9a-f]{2})\.([0-7]) ")


@dataclass
class Fn:
    """One function of a test dump: its bytes as given (``avail`` long) and where the capability is."""

    bus: int
    devfn: int
    config: bytes
    where: int

    @property
    def bdf(self) -> str:
        return f"{self.bus:02x}:{self.devfn >> 3:02x}.{self.devfn & 7:x}"


def header(ptype: int) -> tuple[ConfigSpace, CapabilityList]:
    """A minimal function header: type 1 for ports and bridges, type 0 otherwise."""
    cs = ConfigSpace()
    cs.set(regs.VENDOR_ID, 2, 0x1234)
    cs.set(regs.DEVICE_ID, 2, 0x5678)
    bridge = ptype in BRIDGE_TYPES
    cs.set(regs.HEADER_TYPE, 1, regs.HEADER_TYPE_BRIDGE if bridge else regs.HEADER_TYPE_NORMAL)
    cs.set(regs.CLASS_DEVICE, 2, 0x0604 if bridge else 0x0880)
    return cs, CapabilityList(cs)


def decode(fn: Fn, verbose: int) -> str:
    ctx = DecodeContext(fn.config, avail=len(fn.config), verbose=verbose, bdf=fn.bdf)
    out = io.StringIO()
    STD_DECODERS[R.CAP_ID_EXP](ctx, out, fn.where)
    assert ctx.is_pcie and ctx.pcie_type == (ctx.r16(fn.where + 2) >> 4) & 0xF
    return f"\tCapabilities: [{fn.where:02x}] " + out.getvalue()


def lspci_sections(funcs: list[Fn], verbose: int) -> dict[str, dict[int, str]]:
    """Run the real lspci once on all functions; per BDF, its capability sections."""
    text = "".join(format_dump(0, f.bus, f.devfn, f.config) for f in funcs)
    out = run_lspci(text, "-" + "v" * verbose)
    result: dict[str, dict[int, str]] = {}
    for block in out.split("\n\n"):
        m = _DEV_LINE.match(block)
        if m:
            result[m.group(0).strip()] = cap_sections(block + "\n")
    return result


def assert_same(funcs: list[Fn], verbose: int) -> None:
    real = lspci_sections(funcs, verbose)
    for fn in funcs:
        expected = real[fn.bdf].get(fn.where)
        assert expected is not None, f"lspci printed no capability at {fn.where:#x} for {fn.bdf}"
        assert decode(fn, verbose) == expected, f"{fn.bdf}: -{'v' * verbose}, {len(fn.config)} bytes"


# ---------------------------------------------------------------------------------------- built caps
def built_variants() -> list[tuple[int, int, dict[str, Any]]]:
    """Each port type x version, with the options that type can have switched on."""
    out: list[tuple[int, int, dict[str, Any]]] = []
    for ptype in sorted(R.PORT_TYPES):
        for version in (1, 2):
            opts: dict[str, Any] = {"irq": 3}
            if ptype in R.ENDPOINTS:
                opts.update(flr=True, max_payload=512, phantom_functions=1)
            if ptype in (R.TYPE_ENDPOINT, R.TYPE_LEG_END):
                opts.update(l0s_latency=3, l1_latency=6)
            if ptype in R.UPSTREAM_FACING:
                opts.update(slot_power_limit=75.0, clock_pm=True)
            if ptype in R.HAS_LINK:
                opts.update(max_speed=2, max_width=4, width=2, aspm=3, l0s_exit=2, l1_exit=5, port_number=7)
            if ptype in R.DOWNSTREAM_FACING:
                opts.update(surprise_down=True, slot=E.SlotCaps(
                    number=12, power_limit=0.5, attention_button=True, power_controller=True, mrl_sensor=True,
                    attention_indicator=True, power_indicator=True, hotplug=True, interlock=True))
            if ptype in R.HAS_ROOT:
                opts.update(crs_visibility=True)
            if version == 2:
                opts.update(completion_timeout_ranges=0xF, completion_timeout_disable=True, ltr=True,
                            obff=3, ext_fmt=True, ee_prefix=2, ten_bit_tag_completer=True,
                            ten_bit_tag_requester=True, emergency_power_reduction=1, frs=True)
                if ptype in R.HAS_LINK:
                    opts.update(max_speed=5, crosslink=True, retimer_detect=True, drs=True)
                if ptype in (R.TYPE_ROOT_PORT, R.TYPE_DOWNSTREAM):
                    opts.update(ari_forwarding=True)
                if ptype in (R.TYPE_ROOT_PORT, R.TYPE_UPSTREAM, R.TYPE_DOWNSTREAM):
                    opts.update(atomic_routing=True, atomic32=True)
                if ptype in (R.TYPE_ENDPOINT, R.TYPE_ROOT_PORT):
                    opts.update(atomic_requester=True, tph_completer=3)
            out.append((ptype, version, opts))
    return out


@pytest.mark.parametrize("verbose", [1, 2, 3])
def test_built_capability_matches_lspci(verbose: int) -> None:
    funcs = []
    for bus, (ptype, version, opts) in enumerate(built_variants()):
        for plain, kwargs in enumerate((opts, {"version": version})):
            cs, caps = header(ptype)
            if ptype == R.TYPE_ENDPOINT:
                cs.set(regs.BASE_ADDRESS_0, 4, 0xFE000000)  # a memory BAR: lspci then shows AtomicOpsCap
            cap = caps.add(E.ExpressCap(ptype, **{"version": version, **kwargs}), offset=0x40 + 0x40 * plain)
            funcs.append(Fn(bus, plain, cs.dump(), cap.offset))
    assert len(funcs) == 36
    assert_same(funcs, verbose)


# ---------------------------------------------------------------------------------------- random caps
@st.composite
def random_functions(draw: st.DrawFn, bus: int) -> Fn:
    """A function whose Express capability registers hold random bits; the dump may end early."""
    ptype = draw(st.one_of(st.sampled_from(sorted(R.PORT_TYPES)), st.integers(0, 15)))
    version = draw(st.one_of(st.sampled_from([1, 2]), st.integers(0, 15)))
    cs, caps = header(ptype if ptype in R.PORT_TYPES else R.TYPE_ENDPOINT)
    if draw(st.booleans()):
        # Random BARs / header type: lspci's "has a memory BAR" test decides the AtomicOpsCap line.
        cs.set(regs.HEADER_TYPE, 1, draw(st.sampled_from([0x00, 0x01, 0x80, 0x81])))
        for i in range(6):
            bar = draw(st.sampled_from([0, 0xFFFFFFFF, 0x1, 0xC001, 0x4, 0xC, 0xFE000000, 0xFE00000C]))
            cs.set(regs.BASE_ADDRESS_0 + 4 * i, 4, bar)
    where = draw(st.integers(0x40 // 4, (0x100 - R.SIZEOF_V2) // 4)) * 4
    cap = caps.add(E.ExpressCap(R.TYPE_ENDPOINT), offset=where)
    flags = draw(st.integers(0, 0xFFFF)) & ~(R.FLAGS_TYPE | R.FLAGS_VERS) | ptype << 4 | version
    cs.set(cap.offset + R.FLAGS, 2, flags)
    cs.data[where + 4:where + R.SIZEOF_V2] = draw(st.binary(min_size=R.SIZEOF_V2 - 4, max_size=R.SIZEOF_V2 - 4))
    data = cs.dump()
    avail = draw(st.one_of(st.sampled_from([4096, 256]), st.integers(where + 4, where + R.SIZEOF_V2 + 4)))
    devfn = draw(st.integers(0, 255))
    return Fn(bus, devfn, data[:max(avail, 64)], where)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(funcs=st.integers(1, 12).flatmap(lambda n: st.tuples(*(random_functions(bus) for bus in range(n)))))
def test_random_registers_match_lspci(funcs: tuple[Fn, ...]) -> None:
    for verbose in (1, 2, 3):
        assert_same(list(funcs), verbose)


@pytest.mark.parametrize("where,avail,last,absent", [
    (0xC4, 256, "LnkSta2", None),           # the whole v2 root port fits exactly
    (0xD0, 256, "RootSta", "DevCap2"),      # the second half (Device Capabilities 2 on) is cut off
    (0xE0, 256, "Express (v2) Root Port", "DevCap"),  # even the first half is cut: title line only
    (0x40, 0x40 + 0x24, "RootSta", "DevCap2"),        # a dump ending right after Root Status
])
def test_truncated_dump(where: int, avail: int, last: str, absent: str | None) -> None:
    cs, caps = header(R.TYPE_ROOT_PORT)
    cap = E.ExpressCap(R.TYPE_ROOT_PORT, max_speed=3, max_width=8)
    if where + cap.length() <= 0x100:
        caps.add(cap, offset=where)
    else:  # a structure running past 0x100 (as a broken device may have): copy its first half by hand
        caps.add(cap, offset=0x40)
        cs.set(regs.CAPABILITY_LIST, 1, where)
        cs.data[where:0x100] = cs.data[0x40:0x40 + 0x100 - where]
    fn = Fn(0, 0, cs.dump()[:avail], where)
    text = decode(fn, 3)
    assert last in text
    assert absent is None or absent not in text
    assert_same([fn], 3)


def test_every_slot_power_limit_encoding() -> None:
    """All 1024 (value, scale) pairs of Device Capabilities' captured slot power limit (C float %g)."""
    funcs = []
    for code in range(1024):
        cs, caps = header(R.TYPE_ENDPOINT)
        cap = caps.add(E.ExpressCap(R.TYPE_ENDPOINT, version=1))
        cs.set(cap.offset + R.DEVCAP, 4, (code & 0xFF) << 18 | (code >> 8) << 26)
        funcs.append(Fn(code >> 3, (code & 7) << 3, cs.dump()[:256], cap.offset))
    assert_same(funcs, 2)
