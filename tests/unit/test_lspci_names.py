"""pci.ids parsing and pci_lookup_name formatting as pciutils lib/names-parse.c and lib/names.c do.

Expected strings are worked out from those rules; tests/interop/test_lspci_header.py checks the same
synthetic database against the real lspci (-i FILE).
"""

from __future__ import annotations

import os

import pytest

from vfiolab.errors import VfiolabError
from vfiolab.pci.lspci.names import DEFAULT_PCI_IDS, Namer, PciIds, load_ids

IDS = """\
# comment line
1234  Acme Corp
\t5678  Widget 9000
\t\t1234 0001  Widget OEM board
\t\tabcd 0002  Sold by Other
\t9999  Gizmo\t
abcd  Other Vendor
S abcd
\t0007  Generic subsystem name
X 12  Some future block
\t34  skipped child
C 02  Network controller
\t00  Ethernet controller
\t\t01  Fancy mode
C 0c  Serial bus controller
"""


@pytest.fixture()
def ids_file(tmp_path: object) -> str:
    path = os.path.join(str(tmp_path), "pci.ids")
    with open(path, "w") as f:
        f.write(IDS)
    return path


def test_parse_entries() -> None:
    db = PciIds.parse(IDS)
    assert db.vendors == {0x1234: "Acme Corp", 0xABCD: "Other Vendor"}
    assert db.devices[(0x1234, 0x9999)] == "Gizmo", "one trailing blank is dropped"
    assert db.subsystems[(0x1234, 0x5678, 0xABCD, 0x0002)] == "Sold by Other"
    assert db.gen_subsystems == {(0xABCD, 0x0007): "Generic subsystem name"}
    assert db.classes == {0x02: "Network controller", 0x0C: "Serial bus controller"}
    assert db.progifs == {(0x02, 0x00, 0x01): "Fancy mode"}
    assert (0x12, 0x34) not in db.subclasses, "children of unknown blocks are skipped"


@pytest.mark.parametrize(("text", "message"), [
    ("12x4  Bad\n", "Parse error at x, line 1"),
    ("1234  A\n1234  B\n", "Duplicate entry at x, line 2"),
    ("S 1234\n", "Vendor does not exist at x, line 1"),
    ("1234  A\n\t\t\t1  deep\n", "Parse error at x, line 2"),
    ("1234\n", "Parse error at x, line 1"),
])
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(VfiolabError, match=message):
        PciIds.parse(text, "x")


def test_lookup_formats(ids_file: str) -> None:
    n = Namer(0, ids_file)
    assert n.vendor_device(0x1234, 0x5678) == "Acme Corp Widget 9000"
    assert n.vendor_device(0x1234, 0x0001) == "Acme Corp Device 0001"
    assert n.vendor_device(0x4321, 0x0001) == "Device 4321:0001"
    assert n.subsystem(0x1234, 0x5678, 0x1234, 0x0001) == "Acme Corp Widget OEM board"
    assert n.subsystem(0x1234, 0x5678, 0xABCD, 0x0007) == "Other Vendor Generic subsystem name"
    assert n.subsystem(0x1234, 0x9999, 0x1234, 0x9999) == "Acme Corp Gizmo", "subsystem == device"
    assert n.subsystem(0x1234, 0x9999, 0xABCD, 0x0001) == "Other Vendor Device 0001"
    assert n.cls(0x0200) == "Ethernet controller"
    assert n.cls(0x0280) == "Network controller [0280]", "base class name carries the number"
    assert n.cls(0x0D00) == "Class 0d00"
    assert n.progif(0x0200, 0x01) == "Fancy mode"
    assert n.progif(0x0200, 0x02) is None


def test_numeric_and_mixed(ids_file: str) -> None:
    n1, n2 = Namer(1, ids_file), Namer(2, ids_file)
    assert n1.vendor_device(0x1234, 0x5678) == "1234:5678"
    assert n1.cls(0x0280) == "0280"
    assert n1.subsystem(1, 2, 0x1234, 1) == "1234:0001"
    assert n1.progif(0x0200, 0x01) == "Fancy mode", "prog-if names are looked up even with -n"
    assert n2.vendor_device(0x1234, 0x5678) == "Acme Corp Widget 9000 [1234:5678]"
    assert n2.vendor_device(0x1234, 0x0001) == "Acme Corp Device [1234:0001]"
    assert n2.vendor_device(0x4321, 0x0001) == "Device [4321:0001]"
    assert n2.cls(0x0200) == "Ethernet controller [0200]"
    assert n2.cls(0x0D00) == "Class [0d00]"
    assert n2.vendor(0x1234) == "Acme Corp [1234]"
    assert n2.device(0x1234, 0x7777) == "Device [7777]"


def test_ide_progif_is_composed_from_mode_bits(ids_file: str) -> None:
    n = Namer(0, ids_file)
    assert n.progif(0x0101, 0x8A) == "Master SecP PriP"
    assert n.progif(0x0101, 0x00) == "", "an all-zero mode is an empty name, not none"
    assert n.progif(0x0101, 0x10) is None, "bits 6:4 set: no composition"


def test_long_names_are_cut_with_dots(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "long.ids")
    with open(path, "w") as f:
        f.write("1234  " + "V" * 70 + "\n\t0001  " + "D" * 70 + "\n")
    name = Namer(0, path).vendor_device(0x1234, 0x0001)  # 141 characters into a 128-byte buffer
    assert len(name) == 127 and name.endswith("...") and name.startswith("V" * 70 + " " + "D" * 53)


def test_missing_database_gives_numbers(tmp_path: object) -> None:
    n = Namer(0, os.path.join(str(tmp_path), "absent.ids"))
    assert n.vendor_device(0x8086, 0x10C9) == "Device 8086:10c9"
    assert n.cls(0x0200) == "Class 0200"
    assert load_ids(os.path.join(str(tmp_path), "absent.ids")) is None


@pytest.mark.skipif(not os.path.exists(DEFAULT_PCI_IDS), reason="system pci.ids not installed")
def test_system_database_counts() -> None:
    # pci.md §8: Debian 12's pci.ids 2023.04.10 holds 2,325 vendors, 17,616 devices, 15,447 subsystems.
    db = load_ids()
    assert db is not None
    assert len(db.vendors) > 2000 and len(db.devices) > 15000 and len(db.subsystems) > 10000
    assert Namer().vendor_device(0x8086, 0x10C9) == "Intel Corporation 82576 Gigabit Network Connection"


# ---------------------------------------------------------------------------- -i FILE as the real lspci opens it
ONE_DEV = b"00:00.0 x\n00: 34 12 78 56 00 00 00 00 00 00 00 02 00 00 00 00\n"


def _both(tmp: str, ids: str) -> tuple[tuple[int, str, str], tuple[int, str, str]]:
    """(status, stdout, stderr) of the real ``lspci -F dump -i ids`` and of ``vfiolab lspci`` on the same."""
    import subprocess
    import sys

    from lspci_oracle import LSPCI

    dump = os.path.join(tmp, "one.dump")
    with open(dump, "wb") as f:
        f.write(ONE_DEV)
    res = []
    for cmd in ([LSPCI], [sys.executable, "-m", "vfiolab.cli.main", "lspci"]):
        p = subprocess.run([*cmd, "-F", dump, "-i", ids], capture_output=True, text=True, check=False)
        err = "".join(line for line in p.stderr.splitlines(True) if "libkmod" not in line)
        res.append((p.returncode, p.stdout, err))
    return res[0], res[1]


def test_ids_file_compressed_or_not_whatever_its_name(tmp_path: object) -> None:
    """lib/names-parse.c pci_open() with zlib: gzopen() reads plain and gzip alike; "x.gz" falls back to
    "x", but "x" never to "x.gz"."""
    import gzip

    tmp = str(tmp_path)
    with gzip.open(os.path.join(tmp, "gz-named-plain"), "wb") as f:
        f.write(IDS.encode())
    with open(os.path.join(tmp, "plain"), "w") as f:
        f.write(IDS)
    with gzip.open(os.path.join(tmp, "only.gz"), "wb") as f:
        f.write(IDS.encode())
    for ids, shown in (("gz-named-plain", "Acme Corp Widget 9000"), ("plain.gz", "Acme Corp Widget 9000"),
                       ("only", "Device 1234:5678")):
        real, ours = _both(tmp, os.path.join(tmp, ids))
        assert real[0] == 0 and shown in real[1], (ids, real)
        if ids == "only":       # our one difference: a -i FILE that does not open is an error
            assert ours[0] == 1 and ours[2] == f"vfiolab: -i {tmp}/only: cannot read the PCI ID list: " \
                                               "No such file or directory\n"
        else:
            assert ours[:2] == real[:2]


@pytest.mark.parametrize(("content", "message"), [
    (None, "I/O error at {path}, line 0"),                 # a directory
    ("1234  Acme\x00\n\t5678  W\n", "Line too long at {path}, line 1"),   # a NUL ends the C string early
])
def test_ids_file_errors_read_like_lspci(tmp_path: object, content: str | None, message: str) -> None:
    tmp = str(tmp_path)
    path = os.path.join(tmp, "ids")
    if content is None:
        os.mkdir(path)
    else:
        with open(path, "w") as f:
            f.write(content)
    real, ours = _both(tmp, path)
    assert real[0] == ours[0] == 1
    assert real[2].startswith("lspci: " + message.format(path=path))
    assert ours[2] == "vfiolab: " + message.format(path=path) + "\n"
