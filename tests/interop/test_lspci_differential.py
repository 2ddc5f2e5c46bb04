"""Differential test: random functions built from every capability builder in vfiolab.pci.caps, decoded
by the real lspci 3.9 and by vfiolab; the full -vvv text (and one other mode) must be identical.

Headers, capability bodies and the bytes around them are random (capability headers and next pointers
stay valid, so the chains are the builders'); dumps are sometimes cut to 64/256 bytes.  Each example
also round-trips dump -> parse -> dump unchanged.  On a mismatch the failure names the capability
whose text differs, so the owner of its decoder is obvious.
"""

from __future__ import annotations

import difflib
import inspect
import os
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from lspci_oracle import LSPCI, cap_sections
from vfiolab.pci.caps.base import Capability, CapabilityList
from vfiolab.pci.config import ConfigSpace
from vfiolab.pci.dump import format_dump, parse_dump
from vfiolab.pci.lspci import LspciOptions, render
from vfiolab.pci.lspci.capwalk import load_decoders

pytestmark = pytest.mark.interop

Draw = Callable[[st.SearchStrategy[Any]], Any]

PORT_TYPES = (0, 1, 4, 5, 6, 7, 8, 9, 10)
IDS = (0x8086_10C9, 0x1AF4_1041, 0x1AF4_1000, 0x10DE_1E00, 0x144D_A808, 0x1B36_0010)
CLASSES = (0x0200, 0x0604, 0x0C03, 0x0101, 0x0607, 0x0108, 0x0300, 0x0880)
OTHER_MODES = (("-v",), ("-vv",), ("-xxxx",), ("-t",), ("-tv",), ("-vv", "-nn"), ("-v", "-n"), ("-x",), ("-vmm",),
               ("-mm",))


def all_builders() -> list[type[Capability]]:
    """Every concrete Capability subclass the capability package defines right now."""
    load_decoders()
    found: list[type[Capability]] = []
    todo = list(Capability.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if "cap_id" in dir(cls) and not inspect.isabstract(cls):
            found.append(cls)
    return sorted(found, key=lambda c: (c.__module__, c.__name__))


def _arg(draw: Draw, cls: type[Capability], name: str) -> object:
    """A value for a required constructor argument, chosen by its name."""
    mod = sys.modules[cls.__module__]
    if name == "port_type":
        return draw(st.sampled_from(PORT_TYPES))
    if name == "table_size":
        return draw(st.integers(1, 2048))
    if name == "serial":
        return draw(st.integers(0, 2**64 - 1))
    if name == "total_vfs":
        return draw(st.integers(1, 255))
    if name == "revision":
        return draw(st.integers(0, 3))
    if name == "bars":
        return [mod.RebarBar(0, [1 << 20, 1 << 21, 1 << 30])]  # type: ignore[attr-defined]
    if name == "blocks":
        return [mod.RegisterBlock(0, 1, 0x10000)]  # type: ignore[attr-defined]
    return draw(st.integers(0, 0xFFFF))  # IDs: vendor, device, vsec_id, dvsec_id, subsystem ...


def build(draw: Draw, cls: type[Capability]) -> Capability | None:
    """An instance of ``cls`` with random required arguments (None if the builder refuses them)."""
    kwargs = {p.name: _arg(draw, cls, p.name)
              for p in list(inspect.signature(cls.__init__).parameters.values())[1:]
              if p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    try:
        cap = cls(**kwargs)
        cap.length()
    except (ValueError, TypeError) as e:
        warnings.warn(f"{cls.__name__}({kwargs}) refused: {e}", stacklevel=1)
        return None
    except (AttributeError, NotImplementedError):
        return None  # an abstract base such as CxlDvsec (no DVSEC ID of its own)
    return cap


@st.composite
def function(draw: Draw, builders: list[type[Capability]]) -> bytes:
    """One function's config bytes: random header, random capabilities from the builders, random bodies."""
    cs = ConfigSpace()
    if draw(st.booleans()):
        cs.data[:] = draw(st.binary(min_size=4096, max_size=4096))
    cs.data[:64] = draw(st.binary(min_size=64, max_size=64))
    htype = draw(st.sampled_from((0x00, 0x00, 0x80, 0x01, 0x81, 0x02, 0x03)))
    cs.data[0x0E] = htype
    if draw(st.booleans()):
        ident = draw(st.sampled_from(IDS))
        cs.set(0, 4, ident >> 16 | (ident & 0xFFFF) << 16)
    if draw(st.booleans()):
        cs.set(0x0A, 2, draw(st.sampled_from(CLASSES)))
    caps = CapabilityList(cs)
    std = [b for b in builders if not b.extended]
    ext = [b for b in builders if b.extended]
    placed: list[Capability] = []
    chosen = draw(st.lists(st.sampled_from(std), max_size=6)) if std else []
    if ext:
        chosen += draw(st.lists(st.sampled_from(ext), max_size=14))
    for cls in chosen:
        cap = build(draw, cls)
        if cap is None:
            continue
        try:
            caps.add(cap)
        except ValueError:
            continue  # no room left in that area
        placed.append(cap)
    if draw(st.booleans()):
        for cap in placed:  # random register bodies, headers and next pointers kept
            head = 4 if cap.extended else 2
            n = cap.length() - head
            if n > 0:
                cs.data[cap.offset + head:cap.offset + head + n] = draw(st.binary(min_size=n, max_size=n))
    if not draw(st.integers(0, 9)):
        cs.data[0x06] &= ~0x10  # Capabilities List bit clear: lspci must not walk
    if htype & 0x7F == 2 and caps.std:
        cs.data[0x14] = caps.std[0].offset
    length = draw(st.sampled_from((4096, 4096, 4096, 4096, 256, 64)))
    return bytes(cs.data[:length])


def lspci_text(text: str, args: tuple[str, ...]) -> str | None:
    """The real lspci's stdout, or None when it stops on its own "Internal bug" check (some EA layouts)."""
    with tempfile.NamedTemporaryFile("w", suffix=".dump", delete=False) as f:
        f.write(text)
        path = f.name
    try:
        res = subprocess.run([LSPCI, "-F", path, *args], capture_output=True, check=False)
    finally:
        os.unlink(path)
    if res.returncode != 0:
        return None
    return res.stdout.decode("utf-8", "surrogateescape")


def options(args: tuple[str, ...]) -> LspciOptions:
    flags = "".join(a.lstrip("-") for a in args)
    return LspciOptions(verbose=flags.count("v"), hex=flags.count("x"), tree="t" in flags,
                        machine=flags.count("m"), numeric=flags.count("n"))


def explain(theirs: str, ours: str) -> str:
    """Which capability sections differ, then the diff."""
    t, o = cap_sections(theirs), cap_sections(ours)
    bad = [f"[{off:x}] {t.get(off, o.get(off, '')).splitlines()[0] if t.get(off, o.get(off)) else ''}"
           for off in sorted(set(t) | set(o)) if t.get(off) != o.get(off)]
    diff = "\n".join(difflib.unified_diff(theirs.splitlines(), ours.splitlines(), "lspci", "vfiolab",
                                          lineterm="", n=1))
    return f"differing capabilities: {bad}\n{diff}"


BUILDERS = all_builders()


def test_builders_found() -> None:
    names = {b.__name__ for b in BUILDERS}
    assert {"PmCap", "MsiCap", "MsixCap", "SsvidCap", "VendorCap"} <= names


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
@given(data=st.data())
def test_random_functions_match_lspci(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 4))
    slots = data.draw(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 255)), min_size=n, max_size=n,
                               unique=True))
    text = "".join(format_dump(0, bus, devfn, data.draw(function(BUILDERS))) for bus, devfn in slots)
    parsed = parse_dump(text)
    assert "".join(format_dump(f.domain, f.bus, f.devfn, f.config) for f in parsed) == text, "round trip"
    for args in (("-vvv",), data.draw(st.sampled_from(OTHER_MODES))):
        theirs = lspci_text(text, args)
        assume(theirs is not None)
        assert theirs is not None
        ours = render(parsed, options(args))
        assert ours == theirs, f"lspci {' '.join(args)}: " + explain(theirs, ours)


@st.composite
def raw_caps_function(draw: Draw) -> bytes:
    """A function whose standard capabilities have random IDs (0x00-0x16) and random bodies: this drives
    the decoders no builder exercises (AGP, VPD, PCI-X, HyperTransport, EA, ...) and lspci's
    name-only and generic texts."""
    cfg = bytearray(draw(st.binary(min_size=256, max_size=256)))
    cfg[0x0E] = draw(st.sampled_from((0x00, 0x01, 0x02, 0x80)))
    cfg[0x06] |= 0x10
    offsets = sorted(draw(st.sets(st.integers(0x10, 0x3E).map(lambda x: x * 4), min_size=1, max_size=8)))
    cfg[0x14 if cfg[0x0E] & 0x7F == 2 else 0x34] = offsets[0]
    for i, off in enumerate(offsets):
        cfg[off] = draw(st.integers(0, 0x16))
        cfg[off + 1] = offsets[i + 1] if i + 1 < len(offsets) else 0
        if cfg[off] == 0x14:
            # lspci's cap_ea() reads the upper address halves without fetching them; past the bytes it
            # fetched that reads outside its buffer (heap bytes get printed).  Keep EA last, low, and
            # with entries whose EntrySize covers the halves they announce.
            if i + 1 < len(offsets) or off > 0xA0:
                cfg[off] = 0x13
            else:
                n = draw(st.integers(0, 2))
                cfg[off + 2] = (cfg[off + 2] & 0xC0) | n
                pos = off + (8 if cfg[0x0E] & 0x7F == 1 else 4)
                for _ in range(n):
                    es = draw(st.integers(2, 4))
                    cfg[pos] = (cfg[pos] & 0xF8) | es
                    cfg[pos + 4] = (cfg[pos + 4] & ~2 & 0xFF) | (2 if es >= 3 else 0)
                    cfg[pos + 8] = (cfg[pos + 8] & ~2 & 0xFF) | (2 if es == 4 else 0)
                    pos += 4 + 4 * es
        if cfg[off] == 0x08 and draw(st.booleans()):
            cfg[off + 3] = draw(st.sampled_from((0x00, 0x20, 0x88, 0xA8, 0xF8, 0x40)))  # HT sub-types
    return bytes(cfg)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(data=st.data())
def test_raw_standard_capabilities_match_lspci(data: st.DataObject) -> None:
    text = "".join(format_dump(0, 0, devfn, data.draw(raw_caps_function())) for devfn in (0, 8, 16))
    parsed = parse_dump(text)
    for args in (("-vvv",), ("-v",)):
        theirs = lspci_text(text, args)
        assume(theirs is not None)
        assert theirs is not None
        ours = render(parsed, options(args))
        assert ours == theirs, f"lspci {' '.join(args)}: " + explain(theirs, ours)
