"""lspci dump reading/writing follows pciutils lib/dump.c; errors name line, device and offset."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vfiolab.pci.dump import DumpError, format_dump, parse_dump

MSI_DUMP = """00:00.0 Ethernet controller: hand-made
00: 34 12 78 56 06 00 10 00 01 00 00 02 00 00 00 00
10: 00 00 00 fe 00 00 00 00 00 00 00 00 00 00 00 00
20: 00 00 00 00 00 00 00 00 00 00 00 00 34 12 01 00
30: 00 00 00 00 50 00 00 00 00 00 00 00 0b 01 00 00
40: 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
50: 05 00 95 00 00 00 e0 fe 00 00 00 00 21 40 00 00

"""


def test_parse_reference_example() -> None:
    (f,) = parse_dump(MSI_DUMP)
    assert f.name == "0000:00:00.0"
    assert f.length == 0x60
    assert f.config[:4] == bytes.fromhex("34127856")
    assert f.title == "Ethernet controller: hand-made"


def test_device_line_needs_a_space_and_text_lines_are_ignored() -> None:
    text = "00:00.0\n00: 01 02\n\n0001:02:03.4 x\n\tControl: I/O+\n00: aa bb\n"
    funcs = parse_dump(text)
    assert [f.name for f in funcs] == ["0001:02:03.4"]
    assert funcs[0].config == b"\xaa\xbb"


def test_malformed_byte_names_line_device_offset() -> None:
    with pytest.raises(DumpError, match=r"f\.dump:2: 0000:00:01\.0: malformed byte 'zz' at offset 0x1"):
        parse_dump("00:01.0 x\n00: 00 zz\n", "f.dump")


def test_offset_past_4096_is_an_error_not_truncation() -> None:
    with pytest.raises(DumpError, match="beyond 4096"):
        parse_dump("00:01.0 x\nff8: " + " ".join(["00"] * 16) + "\n")


@settings(max_examples=50, deadline=None)
@given(cfg=st.binary(min_size=64, max_size=4096).filter(lambda b: len(b) % 16 == 0),
       bus=st.integers(0, 255), devfn=st.integers(0, 255), domain=st.integers(0, 0xFFFF))
def test_round_trip(cfg: bytes, bus: int, devfn: int, domain: int) -> None:
    text = format_dump(domain, bus, devfn, cfg, "t")
    (f,) = parse_dump(text)
    assert (f.domain, f.bus, f.devfn, f.config) == (domain, bus, devfn, cfg)
    assert format_dump(f.domain, f.bus, f.devfn, f.config, "t") == text
