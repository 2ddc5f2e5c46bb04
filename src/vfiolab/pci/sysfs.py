"""Read a machine's PCI functions from sysfs (<root>/bus/pci/devices/*) into DumpedFunction records.

Each function's ``config`` file gives its config bytes (drivers/pci/pci-sysfs.c pci_read_config: the full
256 / 4096 bytes only with CAP_SYS_ADMIN, else 64, or 128 for CardBus); ``resource`` gives the BAR
windows; small attributes (IDs, SR-IOV files, the iommu_group and physfn links) are kept as text.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from vfiolab.errors import VfiolabError
from vfiolab.pci.dump import DumpedFunction

_NAME = re.compile(r"^([0-9a-f]{4,8}):([0-9a-f]{2}):([0-9a-f]{2})\.([0-7])$")
_ATTRS = ("vendor", "device", "class", "subsystem_vendor", "subsystem_device", "sriov_totalvfs",
          "sriov_numvfs", "sriov_offset", "sriov_stride", "sriov_vf_device")
_LINKS = ("iommu_group", "physfn")


def _resources(path: Path) -> list[tuple[int, int, int]] | None:
    """pci-sysfs.c resource_show(): one "0x%016llx 0x%016llx 0x%016llx" line per resource."""
    try:
        text = path.read_text(errors="surrogateescape")
    except FileNotFoundError:
        return None
    except OSError as e:
        raise VfiolabError(f"{path}: {e.strerror}") from e
    out: list[tuple[int, int, int]] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        try:
            start, end, flags = (int(x, 16) for x in fields)
        except ValueError:
            raise VfiolabError(f"{path}:{lineno}: expected three hex numbers, got {line!r}") from None
        out.append((start, end, flags))
    return out


def _read_function(base: Path, name: str) -> DumpedFunction:
    m = _NAME.match(name)
    if not m:
        raise VfiolabError(f"{base / name}: not a dddd:bb:dd.f PCI device name")
    d = base / name
    cfg_path = d / "config"
    try:
        cfg = cfg_path.read_bytes()
    except OSError as e:
        raise VfiolabError(f"{cfg_path}: {e.strerror}") from e
    if len(cfg) > 4096:
        raise VfiolabError(f"{name}: {cfg_path} returned {len(cfg)} bytes; config space has at most 4096")
    hdr = cfg[0x0E] & 0x7F if len(cfg) > 0x0E else 0
    if len(cfg) < 256:
        unpriv = len(cfg) == 64 or (len(cfg) == 128 and hdr == 2)
        why = (" — sysfs gives readers without CAP_SYS_ADMIN only the first 64 bytes (128 for CardBus); "
               "read it as root" if unpriv else "")
        what = "(capabilities) is missing" if len(cfg) >= 64 else "is missing, the 64-byte header included"
        raise VfiolabError(f"{name}: {cfg_path} returned {len(cfg)} bytes; offset {len(cfg):#x} onwards {what}{why}")
    attrs: dict[str, str] = {}
    for attr in _ATTRS:
        try:
            attrs[attr] = (d / attr).read_text(errors="surrogateescape").strip()
        except FileNotFoundError:
            continue
        except OSError as e:
            raise VfiolabError(f"{d / attr}: {e.strerror}") from e
    for link in _LINKS:
        try:
            attrs[link] = os.path.basename(os.readlink(d / link))
        except (FileNotFoundError, OSError):
            continue
    return DumpedFunction(int(m.group(1), 16), int(m.group(2), 16), (int(m.group(3), 16) << 3) | int(m.group(4)),
                          cfg, "", _resources(d / "resource"), attrs)


def read_sysfs(root: str | os.PathLike[str] = "/sys") -> list[DumpedFunction]:
    """Every PCI function under ``root`` (default /sys), sorted by domain, bus and devfn."""
    base = Path(root) / "bus" / "pci" / "devices"
    try:
        names = os.listdir(base)
    except OSError as e:
        raise VfiolabError(f"{base}: {e.strerror} (not a sysfs tree with PCI devices?)") from e
    funcs = [_read_function(base, n) for n in names]
    funcs.sort(key=lambda f: (f.domain, f.bus, f.devfn))
    return funcs
