"""vfiolab lspci without the oracle: -s parsing (lib/filter.c rules), JSON schema, hex dumps, the CLI's
error lines, and the 10,000-function performance budget."""

from __future__ import annotations

import json
import os
import time

import pytest

from vfiolab.cli.main import main
from vfiolab.errors import VfiolabError
from vfiolab.pci.caps.base import CapabilityList
from vfiolab.pci.caps.msi import MsiCap
from vfiolab.pci.caps.msix import MsixCap
from vfiolab.pci.caps.pm import PmCap
from vfiolab.pci.config import ConfigSpace
from vfiolab.pci.dump import DumpedFunction, format_dump
from vfiolab.pci.lspci import LspciOptions, render, render_result
from vfiolab.pci.lspci.slotfilter import SlotFilter, parse_slot


def endpoint(vendor: int = 0x8086, device: int = 0x10C9) -> bytes:
    cs = ConfigSpace()
    cs.set(0, 4, device << 16 | vendor)
    cs.set(0x08, 4, 0x02000001)
    cs.set(0x10, 4, 0xFE000000)
    caps = CapabilityList(cs)
    caps.add(PmCap())
    caps.add(MsiCap(vectors=4))
    caps.add(MsixCap(table_size=16, table_bar=0, table_offset=0x1000))
    return bytes(cs.data)


@pytest.mark.parametrize(("expr", "want"), [
    ("", SlotFilter()),
    ("1f", SlotFilter(slot=0x1F)),
    ("1f.3", SlotFilter(slot=0x1F, func=3)),
    (".3", SlotFilter(func=3)),
    ("2:", SlotFilter(bus=2)),
    ("2:*.1", SlotFilter(bus=2, func=1)),
    ("10000:0:1", SlotFilter(domain=0x10000, bus=0, slot=1)),
    ("::", SlotFilter()),
])
def test_slot_filter_parse(expr: str, want: SlotFilter) -> None:
    assert parse_slot(expr) == want


@pytest.mark.parametrize(("expr", "message"), [
    ("20", "Invalid slot number"), ("1.8", "Invalid function number"), ("100:", "Invalid bus number"),
    ("g:", "Invalid bus number"), ("80000000::", "Invalid domain number"), ("1:2:3:4", "Too many fields"),
    ("1.2.3", "Invalid slot/function number"), ("0" * 64, "Expression too long"),
])
def test_slot_filter_errors(expr: str, message: str) -> None:
    with pytest.raises(VfiolabError, match=message):
        parse_slot(expr)


def test_json_schema() -> None:
    funcs = [DumpedFunction(0, 3, 0x08, endpoint()), DumpedFunction(1, 0, 0, endpoint(0x1234, 0x5678)[:64])]
    doc = json.loads(render(funcs, LspciOptions(json=True)))
    d0, d1 = doc["devices"]
    assert (d0["slot"], d0["class"], d0["vendor"], d0["device"], d0["rev"]) == ("0000:03:01.0", "0200", "8086",
                                                                              "10c9", "01")
    assert [(c["offset"], c["id"], c["extended"], c["name"]) for c in d0["capabilities"]] == [
        (0x40, 1, False, "Power Management"), (0x48, 5, False, "MSI"), (0x58, 0x11, False, "MSI-X")]
    assert d0["capabilities"][2]["text"].splitlines() == [
        "MSI-X: Enable- Count=16 Masked-", "Vector table: BAR=0 offset=00001000", "PBA: BAR=0 offset=00001100"]
    assert d0["subsystem"] is None
    assert d1["slot"] == "0001:00:00.0" and d1["capabilities"] == [], "64 bytes: no capabilities"
    only = json.loads(render(funcs, LspciOptions(json=True, slot="1::")))
    assert [d["slot"] for d in only["devices"]] == ["0001:00:00.0"]


def test_hexdump_lengths_follow_the_dump() -> None:
    full = endpoint()
    for given, level, lines in ((64, 4, 4), (256, 1, 4), (256, 3, 16), (256, 4, 16), (4096, 3, 16), (4096, 4, 256),
                                (100, 3, 4)):
        text = render([DumpedFunction(0, 0, 0, full[:given])], LspciOptions(hex=level))
        assert text.count("\n") == 1 + lines + 1, (given, level)
    text = render([DumpedFunction(0, 0, 0, full[:16])], LspciOptions(hex=1))
    assert "WARNING: Cannot show hex-dump of the config space\n" in text


def test_domains_and_ordering() -> None:
    funcs = [DumpedFunction(0, 1, 0, endpoint()), DumpedFunction(0, 0, 8, endpoint())]
    assert render(funcs).splitlines()[0].startswith("00:01.0 ")
    assert render(funcs, LspciOptions(domains=True)).startswith("0000:00:01.0 ")
    funcs.append(DumpedFunction(2, 0, 0, endpoint()))
    assert render(funcs, LspciOptions(slot="0:1")).startswith("0000:00:01.0"), "any domain turns domains on"


def test_64bit_bar_in_last_slot_warns_like_libpci() -> None:
    cfg = bytearray(endpoint())
    cfg[0x24:0x28] = (0xC).to_bytes(4, "little")
    res = render_result([DumpedFunction(0, 0, 0, bytes(cfg))], LspciOptions(verbose=1))
    assert res.warnings == ["0000:00:00.0: Invalid 64-bit address seen for BAR 5."]
    assert "\tMemory at <unassigned> (64-bit, prefetchable) [disabled]\n" in res.text


def test_cli_renders_dump_and_reports_bad_input(tmp_path: object, capsys: pytest.CaptureFixture[str]) -> None:
    good = os.path.join(str(tmp_path), "good.dump")
    with open(good, "w") as f:
        f.write(format_dump(0, 0, 0, endpoint()))
    assert main(["lspci", "-F", good, "-nn"]) == 0
    assert capsys.readouterr().out == ("00:00.0 Ethernet controller [0200]: Intel Corporation 82576 Gigabit Network "
                                       "Connection [8086:10c9] (rev 01)\n")
    bad = os.path.join(str(tmp_path), "bad.dump")
    with open(bad, "w") as f:
        f.write("00:00.0 x\n00: 86 80 zz\n")
    assert main(["lspci", "-F", bad]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.dump:2" in err and "0000:00:00.0" in err and "'zz'" in err
    assert main(["lspci", "-F", os.path.join(str(tmp_path), "missing.dump")]) == 1
    assert "cannot open dump" in capsys.readouterr().err
    assert main(["lspci", "-F", good, "-s", "1.9"]) == 1
    assert capsys.readouterr().err == "vfiolab: -s '1.9': Invalid function number\n"


def test_ten_thousand_functions_render_in_seconds() -> None:
    cfg = endpoint()
    funcs = [DumpedFunction(0, i >> 8, i & 0xFF, cfg) for i in range(10_000)]
    t0 = time.perf_counter()
    text = render(funcs, LspciOptions(verbose=3))
    elapsed = time.perf_counter() - t0
    assert text.count("\tCapabilities: [58] MSI-X") == 10_000
    assert elapsed < 20, f"10,000 functions at -vvv took {elapsed:.1f} s"
