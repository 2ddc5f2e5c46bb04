"""`vfiolab lspci -F` prints byte for byte what the real lspci 3.9 prints for hand-made dumps.

Each case is a dump text; both programs read the same file with the same switches (-v..-vvv, -n/-nn,
-x..-xxxx, -t/-tv, -s, -D, -i) and stdout must be identical bytes.  Cases cover type 0/1/2 and unknown
headers, BAR and window quirks, capability-chain corner cases, short dumps, domains, trees and names.
"""

from __future__ import annotations

import difflib
import os
import subprocess
import tempfile
from collections.abc import Iterable

import pytest
from click.testing import CliRunner

from lspci_oracle import LSPCI
from vfiolab.cli.lspci import lspci
from vfiolab.pci.dump import format_dump

pytestmark = pytest.mark.interop

ALL_ARGS: tuple[tuple[str, ...], ...] = (
    (), ("-n",), ("-nn",), ("-v",), ("-vv",), ("-vvv",), ("-vvv", "-nn"), ("-v", "-n"), ("-x",), ("-xxx",),
    ("-xxxx",), ("-vvv", "-xxxx"), ("-t",), ("-tv",), ("-tvnn",), ("-D",), ("-D", "-vv"), ("-m",), ("-mm",),
    ("-vmm",), ("-vm", "-nn"), ("-mm", "-n", "-D"),
)


def lspci_bytes(path: str, args: Iterable[str]) -> bytes:
    """The real lspci's stdout, raw (lspci prints whatever bytes it has, e.g. an odd interrupt pin)."""
    res = subprocess.run([LSPCI, "-F", path, *args], capture_output=True, check=False)
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    return res.stdout


def ours_bytes(path: str, args: Iterable[str]) -> bytes:
    result = CliRunner().invoke(lspci, ["-F", path, *args])
    assert result.exit_code == 0, result.output
    return result.stdout_bytes


def check(text: str, arg_sets: Iterable[tuple[str, ...]] = ALL_ARGS) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".dump", delete=False) as f:
        f.write(text)
        path = f.name
    try:
        for args in arg_sets:
            theirs, ours = lspci_bytes(path, args), ours_bytes(path, args)
            if theirs != ours:
                diff = "\n".join(difflib.unified_diff(
                    theirs.decode(errors="replace").splitlines(), ours.decode(errors="replace").splitlines(),
                    "lspci", "vfiolab", lineterm=""))
                pytest.fail(f"lspci {' '.join(args)} differs:\n{diff}")
    finally:
        os.unlink(path)


def put(b: bytearray, off: int, value: int, size: int) -> None:
    b[off:off + size] = value.to_bytes(size, "little")


def dump(*funcs: tuple[str, bytes]) -> str:
    """Dump text with one block per (slot, bytes); ``slot`` like "00:1f.3" or "0001:02:00.0"."""
    out = []
    for slot, data in funcs:
        parts = slot.split(":")
        dom = int(parts[0], 16) if len(parts) == 3 else 0
        bus = int(parts[-2], 16)
        dev, fn = parts[-1].split(".")
        out.append(format_dump(dom, bus, int(dev, 16) << 3 | int(fn), bytes(data), with_domain=len(parts) == 3))
    return "".join(out)


def type0(vendor: int = 0x8086, device: int = 0x10C9, cls: int = 0x020000, rev: int = 1, size: int = 256,
          cmd: int = 0x0006, status: int = 0x0010, cap_ptr: int = 0) -> bytearray:
    b = bytearray(size)
    put(b, 0, device << 16 | vendor, 4)
    put(b, 4, status << 16 | cmd, 4)
    put(b, 8, cls << 8 | rev, 4)
    b[0x34] = cap_ptr
    return b


def type1(pri: int, sec: int, sub: int, cls: int = 0x060400, size: int = 256, cap_ptr: int = 0) -> bytearray:
    b = type0(0x8086, 0x2030, cls, 0, size, 0x0007, 0x0010, cap_ptr)
    b[0x0E] = 0x01
    b[0x18:0x1B] = bytes((pri, sec, sub))
    return b


# -------------------------------------------------------------------------------- type 0 headers
REFERENCE = """00:00.0 Ethernet controller: hand-made
00: 34 12 78 56 06 00 10 00 01 00 00 02 00 00 00 00
10: 00 00 00 fe 00 00 00 00 00 00 00 00 00 00 00 00
20: 00 00 00 00 00 00 00 00 00 00 00 00 34 12 01 00
30: 00 00 00 00 50 00 00 00 00 00 00 00 0b 01 00 00
40: 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
50: 05 00 95 00 00 00 e0 fe 00 00 00 00 21 40 00 00

"""


def test_reference_example() -> None:
    check(REFERENCE)


def test_type0_bars_rom_and_flags() -> None:
    a = type0(cmd=0x0347, status=0xFEF8)
    put(a, 0x0C, 0x80_40_20_10, 4)   # BIST capable + running, header 0, latency 0x20, cache line 0x10
    put(a, 0x10, 0xE001, 4)            # I/O
    put(a, 0x14, 0x38F0_000C, 4)       # 64-bit prefetchable above 4 GiB: the bogus extra region
    put(a, 0x18, 0x38, 4)
    put(a, 0x1C, 0xFEB0_0002, 4)       # "low-1M" type
    put(a, 0x20, 0xFFFF_FFFF, 4)       # all ones: treated as absent
    put(a, 0x24, 0x0000_0006, 4)       # type 3, unassigned
    put(a, 0x2C, 0x0001_15AD, 4)
    put(a, 0x30, 0x000C_0001, 4)       # ROM enabled
    put(a, 0x3C, 0x12_08_02_0A, 4)     # max_lat, min_gnt, pin B, line 10
    b = type0(cmd=0x0000, status=0x0200)
    put(b, 0x0C, 0x85_00_00_00, 4)     # BIST result 5
    put(b, 0x10, 0x0000_0001, 4)       # I/O unassigned, disabled
    put(b, 0x14, 0xC000_0004, 4)       # 64-bit below 4 GiB
    put(b, 0x30, 0xFFFF_FFFF, 4)       # ROM register all ones: "<ignored>"
    put(b, 0x3C, 0x0000_04FF, 4)
    c = type0(cmd=0x0001, status=0x0400)
    put(c, 0x24, 0x0000_000C, 4)       # 64-bit BAR in the last slot: libpci warns, lspci shows it
    put(c, 0x30, 0xFFFE_0000, 4)       # ROM address, not enabled
    put(c, 0x3C, 0x00_00_00_00, 4)
    d = type0(cls=0x060400)            # bridge class on a type-0 header
    e = type0(cls=0x010185, rev=0)     # IDE prog-if composed from bits
    f = type0(vendor=0x15CF, device=0x0000, cls=0x0C0330)  # non-ASCII vendor name, xHCI prog-if
    check(dump(("00:00.0", a), ("00:01.0", b), ("00:02.0", c), ("00:03.0", d), ("00:04.0", e), ("00:05.0", f)))


def test_odd_interrupt_pin_bytes() -> None:
    a, b = type0(), type0()
    put(a, 0x3C, 0x0000_C005, 4)  # pin 0xc0: lspci prints 'A' + 0xbf, a raw 0x00 byte
    put(b, 0x3C, 0x0000_9905, 4)  # pin 0x99: a raw 0xd9 byte
    check(dump(("00:00.0", a), ("00:01.0", b)), [("-vv",)])


# -------------------------------------------------------------------------------- type 1 headers
def test_type1_windows() -> None:
    a = type1(0, 1, 5)
    put(a, 0x10, 0xFE80_0000, 4)
    put(a, 0x1C, 0x2000_F1F1, 4)        # 32-bit I/O f000-f1fff (upper 16 bits below), secondary status
    put(a, 0x30, 0x0001_0000, 4)        # I/O upper 16: base 0000, limit 0001
    put(a, 0x20, 0xFE70_FE00, 4)        # memory fe000000-fe7fffff
    put(a, 0x24, 0xFFF1_0001, 4)        # 64-bit prefetchable
    put(a, 0x28, 0x0000_0038, 4)
    put(a, 0x2C, 0x0000_003F, 4)
    put(a, 0x3C, 0x0FFF_010B, 4)        # bridge control: all bits
    put(a, 0x38, 0xFFF0_0001, 4)        # expansion ROM at 0x38
    b = type1(1, 2, 2)
    put(b, 0x1C, 0x0000_00F0, 4)        # I/O base > limit: [disabled] (range shown at -vvv)
    put(b, 0x20, 0x0000_FFF0, 4)
    put(b, 0x24, 0x0000_FFF0, 4)        # 32-bit prefetchable, disabled
    c = type1(2, 3, 3, cls=0x020000)    # class is not a bridge
    put(c, 0x1C, 0x0000_0102, 4)        # unknown I/O range types
    put(c, 0x20, 0x0001_0000, 4)        # unknown memory range types
    put(c, 0x24, 0x0002_0003, 4)        # unknown prefetchable types
    d = type1(0, 0, 0)                  # everything zero: full-size windows at 0
    check(dump(("00:01.0", a), ("01:00.0", b), ("02:00.0", c), ("00:02.0", d)))


def test_bridge_subsystem_from_ssvid_capability() -> None:
    a = type1(0, 1, 1, cap_ptr=0x40)
    a[0x40:0x48] = bytes.fromhex("0d5000000b105100")  # SSVID 100b:0051, next 0x50
    a[0x50:0x58] = bytes.fromhex("0d000000ffffffff")  # second SSVID reading ffff: ignored by the title
    b = type1(0, 2, 2, cap_ptr=0x40, size=0x46)       # SSVID cut short: nothing printed after [40]
    b[0x40:0x46] = bytes.fromhex("0d0000008680")
    check(dump(("00:01.0", a), ("00:02.0", b)))


# ----------------------------------------------------------------------- CardBus, unknown, short
def test_cardbus_unknown_and_short_dumps() -> None:
    cb = type0(vendor=0x1180, device=0x0476, cls=0x060700, size=256, cap_ptr=0)
    cb[0x0E] = 0x82
    put(cb, 0x10, 0xFD00_0000, 4)
    cb[0x14] = 0xDC
    put(cb, 0x16, 0x4000, 2)
    cb[0x18:0x1C] = bytes((0, 3, 6, 0xB0))
    put(cb, 0x1C, 0x1000_0000, 4)
    put(cb, 0x20, 0x1000_0000, 4)
    put(cb, 0x2C, 0x0000_4001, 4)
    put(cb, 0x30, 0x0000_40FF, 4)
    put(cb, 0x3C, 0x05C0_010B, 4)
    put(cb, 0x40, 0x0001_1180, 4)
    put(cb, 0x44, 0x03E0, 2)
    cb[0xDC:0xE4] = bytes.fromhex("0100020000000000")
    cb64 = bytes(cb[:64])
    cb100 = bytes(cb[:100])
    unk = type0(cls=0x0880)
    unk[0x0E] = 0x03
    tiny = bytes(type0()[:16])
    check(dump(("02:00.0", cb), ("02:00.1", cb64), ("02:00.2", cb100), ("03:00.0", unk), ("04:00.0", tiny),
               ("05:00.0", type0()[:64]), ("05:00.1", type0(cap_ptr=0x40)[:64]), ("05:00.2", type0()[:100])))


# --------------------------------------------------------------------------- capability chains
def test_standard_chain_corner_cases() -> None:
    looped = type0(cap_ptr=0x40)
    looped[0x40:0x42] = b"\x01\x48"
    looped[0x48:0x4A] = b"\x05\x40"             # back to 0x40
    broken = type0(cap_ptr=0x43)                # low bits of the pointer are ignored
    broken[0x40:0x42] = b"\x13\x50"
    broken[0x50:0x52] = b"\xff\x60"             # ID 0xff ends the chain
    denied = type0(cap_ptr=0x80, size=0x82)     # the capability lies beyond the dump's end
    odd = type0(cap_ptr=0x40)
    chain = [(0x40, 0x00), (0x44, 0x06), (0x48, 0x0B), (0x4C, 0x0C), (0x50, 0x0E), (0x54, 0x0F), (0x58, 0x15),
             (0x5C, 0x42), (0x60, 0x04), (0x64, 0x0A), (0x68, 0x03), (0x70, 0x13), (0x78, 0x12), (0x80, 0x09)]
    for i, (off, cid) in enumerate(chain):
        nxt = chain[i + 1][0] if i + 1 < len(chain) else 0
        odd[off:off + 4] = bytes((cid, nxt, 0x35, 0xA6))
    odd[0x70:0x76] = bytes.fromhex("13780006 0101".replace(" ", ""))
    odd[0x78:0x80] = bytes.fromhex("12801000 fa0f0000".replace(" ", ""))
    odd[0x82] = 0x11
    no_cap_bit = type0(cap_ptr=0x40, status=0)
    no_cap_bit[0x40:0x42] = b"\x01\x00"
    check(dump(("00:00.0", looped), ("00:01.0", broken), ("00:02.0", denied), ("00:03.0", odd),
               ("00:04.0", no_cap_bit)), [("-v",), ("-vv",), ("-vvv",)])


def test_virtio_vendor_capabilities() -> None:
    a = type0(vendor=0x1AF4, device=0x1041, cap_ptr=0x40)
    a[0x40:0x50] = bytes.fromhex("09501001 04000000 00300000 00100000".replace(" ", ""))
    a[0x50:0x64] = bytes.fromhex("09641402 04000000 00400000 00100000 04000000".replace(" ", ""))
    a[0x64:0x74] = bytes.fromhex("09741007 04000000 00500000 00100000".replace(" ", ""))
    a[0x74:0x7c] = bytes.fromhex("09000803 00000000".replace(" ", ""))  # too short for virtio's layout
    b = bytearray(a)
    put(b, 2, 0x1080, 2)  # outside 1000-107f: the raw form
    check(dump(("00:03.0", a), ("00:04.0", b)), [("-v",), ("-vvv",)])


def test_extended_chain_corner_cases() -> None:
    def pcie(size: int = 4096) -> bytearray:
        b = type0(cap_ptr=0x40, size=size)
        b[0x40:0x44] = bytes.fromhex("10000200")  # PCI Express v2 endpoint, minimal
        return b

    looped = pcie()
    put(looped, 0x100, 0x1001_0004, 4)   # Power Budgeting (name only), next 0x100: loop
    low = pcie()
    put(low, 0x100, 0x0401_0006, 4)      # next 0x040: lspci follows it into the standard area
    names = pcie()
    ids = [0x04, 0x06, 0x08, 0x0A, 0x11, 0x16, 0x1A, 0x1C, 0x20, 0x21, 0x22, 0x25, 0x26, 0x27, 0x28, 0x29,
           0x0C, 0x2A, 0x2B, 0x3F, 0x1234]
    for i, cid in enumerate(ids):
        off = 0x100 + 8 * i
        nxt = off + 8 if i + 1 < len(ids) else 0
        put(names, off, nxt << 20 | (i % 16) << 16 | cid, 4)
    ones = pcie()
    put(ones, 0x100, 0xFFFF_FFFF, 4)
    short = pcie(256)                    # 256 bytes: the extended chain is not even looked at
    pcix = type0(cap_ptr=0x40, size=4096)
    pcix[0x40:0x48] = bytes.fromhex("07000300 08f00300".replace(" ", ""))  # PCI-X also opens the chain
    put(pcix, 0x100, 0x0001_0000, 4)    # Null extended capability
    check(dump(("00:00.0", looped), ("00:01.0", low), ("00:02.0", names), ("00:03.0", ones),
               ("00:04.0", short), ("00:05.0", pcix)), [("-v",), ("-vv",), ("-vvv",)])


# ------------------------------------------------------------------------- domains, tree, filter
def reference_topology() -> str:
    """The QEMU q35 topology of pci.md §6, headers only: root ports, a switch, a PCIe-to-PCI bridge."""
    funcs: list[tuple[str, bytes]] = [("00:00.0", type0(cls=0x060000))]
    for fn, (sec, sub) in enumerate(((1, 4), (5, 6), (7, 7))):
        funcs.append((f"00:02.{fn}", type1(0, sec, sub)))
    funcs += [("00:05.0", type0(cls=0x00FF00)), ("00:05.1", type0(cls=0x00FF00)), ("00:1f.0", type0(cls=0x060100)),
              ("00:1f.2", type0(cls=0x010601)), ("00:1f.3", type0(cls=0x0C0500)),
              ("01:00.0", type1(1, 2, 4)), ("02:00.0", type1(2, 3, 3)), ("02:01.0", type1(2, 4, 4)),
              ("03:00.0", type0(vendor=0x1B36, device=0x0010, cls=0x010802)),
              ("04:00.0", type0()), ("04:00.1", type0()), ("05:00.0", type1(5, 6, 6)),
              ("06:01.0", type0(cls=0x020000)), ("06:02.0", type0(cls=0x020000)),
              ("07:00.0", type0(cls=0x010802)), ("07:00.1", type0(cls=0x010802)), ("07:00.2", type0(cls=0x010802))]
    return dump(*funcs)


def test_tree_and_slot_filters() -> None:
    topo = reference_topology()
    check(topo, [("-t",), ("-tv",), ("-mm", "-s", "7:"), ("-t", "-s", "02:"), ("-t", "-s", "1f.2"), ("-t", "-s", "6:*.*"),
                 ("-t", "-s", "9:"), ("-s", "02:01"), ("-s", ".1", "-v"), ("-s", "0:7:0.2", "-n"), ("-D",)])


def test_tree_with_domains_and_odd_bridges() -> None:
    funcs = [("00:00.0", type0()), ("00:01.0", type1(0, 0, 0)),       # secondary bus 0: printed as "-"
             ("00:02.0", type1(0, 9, 8)),                               # subordinate below secondary
             ("0001:00:00.0", type0()), ("0001:00:01.0", type1(0, 1, 1)), ("0001:01:00.0", type0()),
             ("10000:00:00.0", type0()), ("00:03.0", type1(0, 0x20, 0x21)),
             ("21:00.0", type0()), ("33:00.0", type0())]               # bus 0x33: no bridge leads there
    check(dump(*funcs), [("-t",), ("-tv",), ("-t", "-s", "1:0:"), (), ("-D",), ("-s", "10000:0:0"), ("-mm",),
                         ("-vmm",)])


def test_sorting_and_duplicate_slots() -> None:
    check(dump(("02:00.0", type0(device=2)), ("00:1f.0", type0(device=1)), ("02:00.0", type0(device=3)),
               ("00:00.0", type0(device=4))), [(), ("-t",), ("-x",)])


# ------------------------------------------------------------------------------------- names
def test_names_from_another_database(tmp_path: object) -> None:
    ids = os.path.join(str(tmp_path), "test.ids")
    with open(ids, "w") as f:
        f.write("1234  " + "Vendor name that is long " * 3 + "\n"
                "\t5678  " + "Device name that is long " * 3 + "\n"
                "\t\t1234 0001  " + "Subsystem name that keeps going " * 8 + "\n"
                "abcd  Other\n"
                "S abcd\n"
                "\t0007  Generic subsystem\n"
                "C 02  Network controller\n"
                "\t00  Ethernet controller\n"
                "\t\t05  Special\n"
                "C 06  Bridge\n"
                "\t04  PCI bridge\n")
    a = type0(vendor=0x1234, device=0x5678, cls=0x020005)
    put(a, 0x2C, 0x0001_1234, 4)
    b = type0(vendor=0x1234, device=0x0001, cls=0x028000)
    put(b, 0x2C, 0x0007_ABCD, 4)
    c = type0(vendor=0xABCD, device=0x5678, cls=0xFF0000)
    put(c, 0x2C, 0x5678_ABCD, 4)
    check(dump(("00:00.0", a), ("00:01.0", b), ("00:02.0", c), ("00:03.0", type1(0, 1, 1))),
          [("-i", ids), ("-i", ids, "-v"), ("-i", ids, "-vnn"), ("-i", ids, "-n", "-v"), ("-i", ids, "-tv"),
           ("-i", ids, "-vmm"), ("-i", ids, "-mm"), ("-i", ids, "-vmmnn")])


def test_default_platform_matches_lspci(tmp_path: object) -> None:
    """`vfiolab lspci` on the built-in platform == lspci -F on that platform's own -xxxx dump."""
    pytest.importorskip("vfiolab.platform")
    runner = CliRunner()
    res = runner.invoke(lspci, ["-xxxx"])
    assert res.exit_code == 0, res.output
    path = os.path.join(str(tmp_path), "platform.dump")
    with open(path, "wb") as f:
        f.write(res.stdout_bytes)
    for args in (("-vvv",), ("-tv",), ("-vmm", "-nn")):
        ours = runner.invoke(lspci, list(args))
        assert ours.exit_code == 0, ours.output
        assert ours.stdout_bytes == lspci_bytes(path, args), args
