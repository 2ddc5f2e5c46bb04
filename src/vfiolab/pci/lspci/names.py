"""PCI ID names from the system ``pci.ids``, looked up and formatted as libpci's ``pci_lookup_name``.

The file is the one lspci reads (``/usr/share/misc/pci.ids``, Debian package ``pci.ids``), parsed with
the rules of pciutils ``lib/names-parse.c`` and formatted with those of ``lib/names.c``: numeric
(``-n``), mixed (``-nn``), "Device 1234:5678"-style fallbacks and truncation to lspci's buffers.
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass, field
from typing import Final, TypeVar

from vfiolab.errors import VfiolabError

DEFAULT_PCI_IDS: Final = "/usr/share/misc/pci.ids"

# Buffer sizes lspci passes to pci_lookup_name (lspci.c show_terse, ls-caps.c cap_ssvid, ls-tree.c).
BUF_NAME: Final = 128
BUF_SUBSYS: Final = 256
BUF_TREE: Final = 256

_MAX_LINE: Final = 1024  # lib/names.h MAX_LINE


def _hex(s: str) -> int:
    """id_hex(): fixed-width hex, -1 on any non-hex character."""
    try:
        if not all(c in "0123456789abcdefABCDEF" for c in s):
            return -1
        return int(s, 16)
    except ValueError:
        return -1


@dataclass
class PciIds:
    """The parsed ID database: one dict per entry kind, the first definition winning."""

    vendors: dict[int, str] = field(default_factory=dict)
    devices: dict[tuple[int, int], str] = field(default_factory=dict)
    subsystems: dict[tuple[int, int, int, int], str] = field(default_factory=dict)
    gen_subsystems: dict[tuple[int, int], str] = field(default_factory=dict)
    classes: dict[int, str] = field(default_factory=dict)
    subclasses: dict[tuple[int, int], str] = field(default_factory=dict)
    progifs: dict[tuple[int, int, int], str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str, source: str = DEFAULT_PCI_IDS) -> PciIds:
        """Parse pci.ids text; a syntax error is fatal, as in lib/names-parse.c id_parse_list()."""
        db = cls()
        cat = ""
        id1 = id2 = id3 = id4 = 0
        lines = text.split("\n")
        for lino, raw in enumerate(lines, 1):
            line = raw.split("\r", 1)[0]
            if len(line) >= _MAX_LINE // 4 and len(line.encode("utf-8", "surrogateescape")) >= _MAX_LINE - 1:
                raise VfiolabError(f"Line too long at {source}, line {lino}")
            if "\0" in line:
                # The line ends at the NUL for C; before the end of the file that reads as no newline.
                if lino < len(lines):
                    raise VfiolabError(f"Line too long at {source}, line {lino}")
                line = line.split("\0", 1)[0]
            # Only one trailing blank is dropped (names-parse.c).
            if line and line[-1] in " \t":
                line = line[:-1]
            stripped = line.lstrip(" \t")
            if not stripped or stripped[0] == "#":
                continue
            p = line.lstrip("\t")
            nest = len(line) - len(p)

            def err(msg: str = "Parse error", lino: int = lino) -> VfiolabError:
                return VfiolabError(f"{msg} at {source}, line {lino}")

            if nest == 0:
                if p[:2] == "C ":
                    id1 = _hex(p[2:4])
                    if id1 < 0 or p[4:5] not in (" ", "\t"):
                        raise err()
                    cat, rest = "class", p[5:]
                elif p[:2] == "S ":
                    id1 = _hex(p[2:6])
                    if id1 < 0 or p[6:]:
                        raise err()
                    if id1 not in db.vendors:
                        raise err("Vendor does not exist")
                    cat = "gensub"
                    continue
                elif "A" <= p[0] <= "Z" and p[1:2] == " ":
                    cat = "unknown"  # a block type reserved for future use: skipped with its children
                    continue
                else:
                    id1 = _hex(p[:4])
                    if id1 < 0 or p[4:5] not in (" ", "\t"):
                        raise err()
                    cat, rest = "vendor", p[5:]
                id2 = id3 = id4 = 0
            elif cat == "unknown":
                continue
            elif nest == 1:
                if cat in ("vendor", "device", "subsys", "gensub"):
                    id2 = _hex(p[:4])
                    if id2 < 0 or p[4:5] not in (" ", "\t"):
                        raise err()
                    rest = p[5:]
                    if cat != "gensub":
                        cat = "device"
                    id3 = id4 = 0
                elif cat in ("class", "subclass", "progif"):
                    id2 = _hex(p[:2])
                    if id2 < 0 or p[2:3] not in (" ", "\t"):
                        raise err()
                    cat, rest = "subclass", p[3:]
                    id3 = id4 = 0
                else:
                    raise err()
            elif nest == 2:
                if cat in ("device", "subsys"):
                    id3, id4 = _hex(p[:4]), _hex(p[5:9])
                    if id3 < 0 or p[4:5] not in (" ", "\t") or id4 < 0 or p[9:10] not in (" ", "\t"):
                        raise err()
                    cat, rest = "subsys", p[10:]
                elif cat in ("class", "subclass", "progif"):
                    id3 = _hex(p[:2])
                    if id3 < 0 or p[2:3] not in (" ", "\t"):
                        raise err()
                    cat, rest = "progif", p[3:]
                    id4 = 0
                else:
                    raise err()
            else:
                raise err()
            name = rest.lstrip(" \t")
            if not name:
                raise err()
            if not db._insert(cat, id1, id2, id3, id4, name):
                raise err("Duplicate entry")
        return db

    def _insert(self, cat: str, id1: int, id2: int, id3: int, id4: int, name: str) -> bool:
        if cat == "vendor":
            return _put(self.vendors, id1, name)
        if cat == "device":
            return _put(self.devices, (id1, id2), name)
        if cat == "subsys":
            return _put(self.subsystems, (id1, id2, id3, id4), name)
        if cat == "gensub":
            return _put(self.gen_subsystems, (id1, id2), name)
        if cat == "class":
            return _put(self.classes, id1, name)
        if cat == "subclass":
            return _put(self.subclasses, (id1, id2), name)
        return _put(self.progifs, (id1, id2, id3), name)


_K = TypeVar("_K")


def _put(table: dict[_K, str], key: _K, name: str) -> bool:
    """Insert unless present (lib/names-hash.c pci_id_insert: a second definition is an error)."""
    if key in table:
        return False
    table[key] = name
    return True


_CACHE: dict[str, PciIds | None] = {}


def _read_ids(path: str) -> bytes | None:
    """The file's bytes as gzopen() gives them (plain or gzip), None if it cannot be opened."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except (FileNotFoundError, PermissionError, NotADirectoryError):
        return None                     # fopen()/gzopen() failed: lspci falls back to numbers
    except OSError:
        # A directory opens but cannot be read: names-parse.c reports ferror() as "I/O error".
        raise VfiolabError(f"I/O error at {path}, line 0") from None
    if data[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise VfiolabError(f"{e} at {path}, line 0") from None
    return data


def load_ids(path: str = DEFAULT_PCI_IDS) -> PciIds | None:
    """The database at ``path``, parsed once; None if it cannot be opened (lspci then shows numbers).

    Like pciutils' pci_open() with zlib (Debian's build): the file may be gzip-compressed whatever its
    name, and a name ending in ``.gz`` that does not open is tried again without the suffix.
    """
    if path in _CACHE:
        return _CACHE[path]
    db: PciIds | None = None
    for cand in (path, path[:-3]) if path.endswith(".gz") else (path,):
        data = _read_ids(cand)
        if data is not None:
            db = PciIds.parse(data.decode("utf-8", "surrogateescape"), cand)
            break
    _CACHE[path] = db
    return db


def _fit(text: str, size: int) -> str:
    """snprintf into a ``size``-byte buffer; libpci marks a cut with "..." (lib/names.c format_name)."""
    raw = text.encode("utf-8", "surrogateescape")
    if len(raw) < size:
        return text
    return (raw[: size - 4] + b"...").decode("utf-8", "surrogateescape")


class Namer:
    """pci_lookup_name() for one lspci run: ``numeric`` is the -n count (0 names, 1 numbers, 2 both)."""

    def __init__(self, numeric: int = 0, ids_path: str = DEFAULT_PCI_IDS) -> None:
        self.numeric = numeric
        self.ids_path = ids_path
        self._db: PciIds | None = None
        self._loaded = False

    @property
    def db(self) -> PciIds:
        # lib/names.c loads the list only when a name (not a bare number) is asked for.
        if not self._loaded:
            self._db = load_ids(self.ids_path)
            self._loaded = True
        return self._db if self._db is not None else _EMPTY

    def _fmt(self, name: str | None, num: str, unknown: str, size: int, mixed: bool = False) -> str:
        # lib/names.c format_name()
        if self.numeric == 1 and not mixed:
            return _fit(num, size)
        mixed = mixed or self.numeric >= 2
        if name is None:
            return _fit(f"{unknown} [{num}]" if mixed else f"{unknown} {num}", size)
        return _fit(f"{name} [{num}]" if mixed else name, size)

    def _pair(self, v: str | None, d: str | None, num: str, size: int) -> str:
        # lib/names.c format_name_pair()
        if self.numeric == 1:
            return _fit(num, size)
        if self.numeric >= 2:
            if v and d:
                return _fit(f"{v} {d} [{num}]", size)
            return _fit(f"Device [{num}]" if not v else f"{v} Device [{num}]", size)
        if v and d:
            return _fit(f"{v} {d}", size)
        return _fit(f"Device {num}" if not v else f"{v} Device {num[5:]}", size)

    def cls(self, cls16: int, size: int = BUF_NAME) -> str:
        """PCI_LOOKUP_CLASS: subclass name, else the base class name with the number, else "Class xxxx"."""
        num = f"{cls16:04x}"
        if self.numeric == 1:
            return num
        db = self.db
        name = db.subclasses.get((cls16 >> 8, cls16 & 0xFF))
        if name is None:
            name = db.classes.get(cls16 >> 8)
            if name is not None:
                return self._fmt(name, num, "Class", size, mixed=True)
        return self._fmt(name, num, "Class", size)

    def vendor_device(self, vendor: int, device: int, size: int = BUF_NAME) -> str:
        """PCI_LOOKUP_VENDOR | PCI_LOOKUP_DEVICE."""
        num = f"{vendor:04x}:{device:04x}"
        if self.numeric == 1:
            return num
        db = self.db
        return self._pair(db.vendors.get(vendor), db.devices.get((vendor, device)), num, size)

    def vendor(self, vendor: int, size: int = BUF_NAME, unknown: str = "Vendor") -> str:
        """PCI_LOOKUP_VENDOR (machine-readable output; "Unknown vendor" for a subsystem vendor)."""
        num = f"{vendor:04x}"
        return num if self.numeric == 1 else self._fmt(self.db.vendors.get(vendor), num, unknown, size)

    def device(self, vendor: int, device: int, size: int = BUF_NAME) -> str:
        """PCI_LOOKUP_DEVICE (machine-readable output)."""
        num = f"{device:04x}"
        if self.numeric == 1:
            return num
        return self._fmt(self.db.devices.get((vendor, device)), num, "Device", size)

    def _subsys_name(self, v: int, d: int, sv: int, sd: int) -> str | None:
        # lib/names.c id_lookup_subsys(): per-device entry, generic "S" block, then subsystem == device.
        db = self.db
        name = db.subsystems.get((v, d, sv, sd)) if v > 0 and d > 0 else None
        if name is None:
            name = db.gen_subsystems.get((sv, sd))
        if name is None and v == sv and d == sd:
            name = db.devices.get((v, d))
        return name

    def subsys_device(self, v: int, d: int, sv: int, sd: int, size: int = BUF_NAME) -> str:
        """PCI_LOOKUP_SUBSYSTEM | PCI_LOOKUP_DEVICE (machine-readable SDevice)."""
        num = f"{sd:04x}"
        return num if self.numeric == 1 else self._fmt(self._subsys_name(v, d, sv, sd), num, "Device", size)

    def subsystem(self, v: int, d: int, sv: int, sd: int, size: int = BUF_SUBSYS) -> str:
        """PCI_LOOKUP_SUBSYSTEM | PCI_LOOKUP_VENDOR | PCI_LOOKUP_DEVICE (the "Subsystem:" line)."""
        num = f"{sv:04x}:{sd:04x}"
        if self.numeric == 1:
            return num
        return self._pair(self.db.vendors.get(sv), self._subsys_name(v, d, sv, sd), num, size)

    def progif(self, cls16: int, progif: int, size: int = BUF_NAME) -> str | None:
        """PCI_LOOKUP_PROGIF | PCI_LOOKUP_NO_NUMBERS: the name or None (names are loaded even with -n)."""
        name = self.db.progifs.get((cls16 >> 8, cls16 & 0xFF, progif))
        if name is None and cls16 == 0x0101 and not progif & 0x70:
            # IDE controllers: lib/names.c composes the name from the mode bits.
            bits = ((0x80, "Master"), (0x08, "SecP"), (0x04, "SecO"), (0x02, "PriP"), (0x01, "PriO"))
            # An all-zero mode gives an empty (not absent) name: lspci then prints "[]".
            name = " ".join(label for bit, label in bits if progif & bit)
        if name is None:
            return None
        return _fit(name, size)


_EMPTY = PciIds()
