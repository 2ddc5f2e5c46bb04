"""lspci dump reading/writing follows pciutils 3.9 lib/dump.c; errors name line, device and offset.

Where lspci -F accepts or refuses a dump, the real /usr/bin/lspci is run on the same bytes and must agree;
where it silently skips input (an address it cannot parse, hex data outside a function) we refuse it and
the test shows what lspci would have lost.
"""

from __future__ import annotations

import os
import subprocess
import tempfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lspci_oracle import LSPCI
from vfiolab.pci.dump import DumpError, check_unique, format_dump, load_dump, parse_dump
from vfiolab.pci.lspci import LspciOptions, render

MSI_DUMP = """00:00.0 Ethernet controller: hand-made
00: 34 12 78 56 06 00 10 00 01 00 00 02 00 00 00 00
10: 00 00 00 fe 00 00 00 00 00 00 00 00 00 00 00 00
20: 00 00 00 00 00 00 00 00 00 00 00 00 34 12 01 00
30: 00 00 00 00 50 00 00 00 00 00 00 00 0b 01 00 00
40: 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
50: 05 00 95 00 00 00 e0 fe 00 00 00 00 21 40 00 00

"""
ROW0 = "00: 86 80 00 12 00 00 00 00 00 00 00 02 00 00 00 00"


def real_lspci(data: bytes, *args: str) -> tuple[int, str, str]:
    """(exit status, stdout, stderr without libkmod noise) of the real ``lspci -F`` on these bytes."""
    with tempfile.NamedTemporaryFile("wb", suffix=".dump", delete=False) as f:
        f.write(data)
    try:
        res = subprocess.run([LSPCI, "-F", f.name, *args], capture_output=True, check=False)
    finally:
        os.unlink(f.name)
    err = "".join(line for line in res.stderr.decode().splitlines(True) if "libkmod" not in line)
    return res.returncode, res.stdout.decode("utf-8", "surrogateescape"), err


def ours(data: bytes, *args: str) -> str:
    """What we print for ``lspci -F`` on these bytes (any_slot, as the CLI reads them)."""
    opts = LspciOptions(numeric=1 if "-n" in args else 0, hex=1 if "-x" in args else 0)
    return render(parse_dump(data.decode("utf-8", "surrogateescape"), "t.dump", any_slot=True), opts)


def test_parse_reference_example() -> None:
    (f,) = parse_dump(MSI_DUMP)
    assert f.name == "0000:00:00.0"
    assert f.length == 0x60
    assert f.config[:4] == bytes.fromhex("34127856")
    assert f.title == "Ethernet controller: hand-made"
    assert f.origin == "<dump>:1"


def test_text_lines_are_ignored() -> None:
    text = "lspci -xxx output:\n0001:02:03.4 x\n\tControl: I/O+\n00: aa bb\n"
    funcs = parse_dump(text)
    assert [f.name for f in funcs] == ["0001:02:03.4"]
    assert funcs[0].config == b"\xaa\xbb"


def test_malformed_byte_names_line_device_offset() -> None:
    with pytest.raises(DumpError, match=r"f\.dump:2: 0000:00:01\.0: malformed byte 'zz' at offset 0x1"):
        parse_dump("00:01.0 x\n00: 00 zz\n", "f.dump")


def test_offset_past_4096_is_an_error_not_truncation() -> None:
    with pytest.raises(DumpError, match="beyond 4096"):
        parse_dump("00:01.0 x\nff8: " + " ".join(["00"] * 16) + "\n")
    with pytest.raises(DumpError, match="offset 0xffffffff beyond 4096"):   # lspci: undefined (a negative index)
        parse_dump("00:01.0 x\nffffffff: 00\n")


@settings(max_examples=50, deadline=None)
@given(cfg=st.binary(min_size=64, max_size=4096).filter(lambda b: len(b) % 16 == 0),
       bus=st.integers(0, 255), devfn=st.integers(0, 255), domain=st.integers(0, 0xFFFF))
def test_round_trip(cfg: bytes, bus: int, devfn: int, domain: int) -> None:
    text = format_dump(domain, bus, devfn, cfg, "t")
    (f,) = parse_dump(text)
    assert (f.domain, f.bus, f.devfn, f.config) == (domain, bus, devfn, cfg)
    assert format_dump(f.domain, f.bus, f.devfn, f.config, "t") == text


# ---------------------------------------------------------------------------- the real lspci decides
@pytest.mark.parametrize("data", [
    (f"00:01.0 x\n{ROW0}").encode(),                    # unterminated last line
    (f"00:01.0 x\n{ROW0}\n\n  ").encode(),              # even a last line of blanks
    ("00:01.0 " + "x" * 246 + f"\n{ROW0}\n").encode(),  # 254 bytes
    ("00:01.0 " + "x" * 245 + f"\r\n{ROW0}\r\n").encode(),  # 253 bytes + CR
    ("00:01.0 " + "é" * 123 + f"\n{ROW0}\n").encode(),  # 254 bytes in 131 characters
    (f"00:01.0 x\x00y\n{ROW0}\n").encode(),             # a NUL byte
    b"\x7fELF\x02\x01\x01\x00\x00\x00\n",             # binary
    b"00:01.0 x\n00:  86 80\n",                         # two spaces
    b"00:01.0 x\n00: 86 8\n",                           # one digit
    b"00:01.0 x\n00: 86 123\n",                         # three digits
    b"00:01.0 x\n00: 86\t80\n",                         # a tab
    b"00:01.0 x\n00: 86 80\r\r\n",                      # only one CR is stripped
    b"00:01.0 x\n1000: 00\n",                           # past 4096
])
def test_what_lspci_refuses_we_refuse(data: bytes) -> None:
    status, out, err = real_lspci(data)
    assert status == 1 and out == "" and err.startswith("lspci: dump: "), (status, out, err)
    with pytest.raises(DumpError, match=r"^t\.dump:\d+: "):
        parse_dump(data.decode("utf-8", "surrogateescape"), "t.dump")


@pytest.mark.parametrize("data", [
    ("00:01.0 " + "x" * 245 + f"\n{ROW0}\n").encode(),  # 253 bytes: the longest line
    ("00:01.0 " + "x" * 244 + f"\r\n{ROW0}\r\n").encode(),  # 252 + CR
    f"12345:00:01.0 x\n{ROW0}\n".encode(),              # a five-digit domain
    f"00:01.8 x\n{ROW0}\n\n00:01.9 y\n{ROW0}\n".encode(),  # functions 8 and 9 (sscanf %d)
    f"00:20.0 x\n{ROW0}\n\n00:ff.7 y\n{ROW0}\n".encode(),  # device numbers past 1f
    b"00:01.0 x\n00: 86 80 00 12 \n",                   # a trailing space
    b"00:01.0 x\n00: \n10: \n",                         # data lines without bytes
    b"00:01.0 x\n1000: \n",                             # ... even past 4096
    f"00:01.0 x\n{ROW0} 11 22\n".encode(),              # more than 16 bytes on a line
    b"00:01.0 x\n0FF: AA\n",                            # upper case, three-digit offset
    f"00:01.0 x\n{ROW0[:18]}\n   \n10: {ROW0[4:]}\n".encode(),   # blanks only: not an empty line
    f"00:01.0 x\n{ROW0}\n\n00:01.0 y\n{ROW0[:4]}86 80 01 12\n\n00:00.0 z\n{ROW0}\n".encode(),  # duplicates
    f"00:01.0 x\r\n{ROW0}\r\n\r\n00:02.0 y\r\n{ROW0}\r\n".encode(),  # CRLF
    b"",                                                # empty
])
def test_what_lspci_accepts_we_read_the_same_way(data: bytes) -> None:
    for args in (("-n",), ("-x",)):
        status, out, err = real_lspci(data, *args)
        assert status == 0 and err == "", (status, err)
        assert ours(data, *args) == out


def test_functions_past_7_and_devices_past_1f_only_for_lspci() -> None:
    text = f"00:01.8 x\n{ROW0}\n"
    (f,) = parse_dump(text, any_slot=True)
    assert (f.name, f.raw_slot, f.devfn) == ("0000:00:01.8", (1, 8), -1)
    with pytest.raises(DumpError, match=r"<dump>:1: 0000:00:01\.8: function 8 is not 0-7"):
        parse_dump(text)
    with pytest.raises(DumpError, match=r"<dump>:1: 0000:00:20\.0: device 20 is not 00-1f"):
        parse_dump(f"00:20.0 x\n{ROW0}\n")


@pytest.mark.parametrize(("line", "why"), [
    ("123456:00:01.0 x", "domain 123456 has 6 hex digits, pciutils 3.9 reads at most 5"),
    ("00:01.a x", "function 'a' is not one decimal digit"),
    ("00:01.10 x", "function '10' is not one decimal digit"),
    ("0:01.0 x", "not a [[d]dddd:]bb:dd.f address"),
    ("000:00:01.0 x", "not a [[d]dddd:]bb:dd.f address"),
    ("00:01.0", "no space after the address"),
    ("00:01.0\tx", "no space after the address"),
])
def test_addresses_lspci_would_skip_are_errors(line: str, why: str) -> None:
    data = f"00:02.0 keep\n{ROW0}\n{line}\n{ROW0[:4]}86 80 99 99\n".encode()
    status, out, _ = real_lspci(data, "-n")
    # lspci skips the line: its data lands in the function before it, which now reads 8086:9999.
    assert status == 0 and out == "00:02.0 0200: 8086:9999\n"
    with pytest.raises(DumpError, match=rf"t\.dump:3: {line.split()[0]}: " + why.replace("[", r"\[").replace(
            "]", r"\]").replace(".", r"\.")):
        parse_dump(data.decode(), "t.dump")
    with pytest.raises(DumpError, match="; lspci -F would skip this function$"):
        parse_dump(data.decode(), "t.dump")


@pytest.mark.parametrize("line", ["0: 99 99", "000000000: 99 99", "00:99 99", " 00: 99 99", "00:\t99 99"])
def test_data_lines_lspci_would_ignore_are_errors(line: str) -> None:
    text = f"00:01.0 x\n{ROW0}\n{line}\n"
    assert real_lspci(text.encode(), "-x") == real_lspci(f"00:01.0 x\n{ROW0}\n".encode(), "-x")
    with pytest.raises(DumpError, match=r"<dump>:3: hex data not in the form 'OFF: hh hh \.\.\.'"):
        parse_dump(text)


@pytest.mark.parametrize(("text", "stray", "where"), [
    (f"{ROW0}\n00:01.0 x\n{ROW0}\n", 1, "before the first function"),
    (f"00:01.0 x\n\n{ROW0}\n", 3, "after a blank line, which ends a function"),
    (f"00:01.0 x\n{ROW0}\n\n10: zz\n", 4, "after a blank line, which ends a function"),
])
def test_hex_data_outside_a_function_is_an_error(text: str, stray: int, where: str) -> None:
    lines = text.splitlines(True)
    without = "".join(lines[:stray - 1] + lines[stray:])
    # lspci drops those bytes without a word: its output is the same as without the line.
    assert real_lspci(text.encode(), "-n") == real_lspci(without.encode(), "-n")
    with pytest.raises(DumpError, match=f"<dump>:{stray}: hex data {where}"):
        parse_dump(text)


def test_load_dump_refuses_missing_directory_and_empty(tmp_path: object) -> None:
    base = str(tmp_path)
    with pytest.raises(DumpError, match=r"nope\.dump: cannot open dump: No such file or directory$"):
        load_dump(os.path.join(base, "nope.dump"))
    with pytest.raises(DumpError, match=r": cannot open dump: Is a directory$"):
        load_dump(base)
    empty = os.path.join(base, "empty.dump")
    with open(empty, "w") as f:
        f.write("just text\n")
    with pytest.raises(DumpError, match=r"empty\.dump: no PCI functions"):
        load_dump(empty)


def test_check_unique_names_both_lines() -> None:
    text = f"00:01.0 x\n{ROW0}\n\n00:02.0 y\n{ROW0}\n\n00:01.0 z\n{ROW0}\n"
    with pytest.raises(DumpError, match=r"^m\.dump:7: 0000:00:01\.0 is listed a second time \(first at m\.dump:1\)$"):
        check_unique(parse_dump(text, "m.dump"))


def test_a_large_dump_parses_without_per_byte_work() -> None:
    """2,000 functions of 4096 bytes (514,000 lines, ~24 MB): a few seconds (it took ~8 times longer byte by byte)."""
    import time

    cfg = bytes(range(256)) * 16
    text = "".join(format_dump(0, i >> 8, i & 0xFF, cfg, "x") for i in range(2000))
    t0 = time.perf_counter()
    funcs = parse_dump(text)
    elapsed = time.perf_counter() - t0
    assert len(funcs) == 2000 and funcs[-1].config == cfg
    assert elapsed < 10, f"{elapsed:.1f} s"
