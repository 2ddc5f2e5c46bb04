"""The cached results of Linux 7.2's own iommufd selftests (rig/kernel/), for tests that compare against them.

``kernel_selftest_results("iommufd")`` gives ``[{"name", "result", "reason"}]`` in the order the harness ran
them, parsed afresh from the stored TAP by rig/kernel/parse_tap.py.  The cache key is computed here exactly as
rig/kernel/common.sh computes it (source version + config fragment), so a cache built from another fragment or
source is missing, not silently used.  Building it takes 10+ minutes, so a missing cache is an error saying to
run ``make kernel-rig``; it is never built or skipped from here.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from vfiolab.errors import VfiolabError

REPO = Path(__file__).resolve().parents[3]
RIG = REPO / "rig" / "kernel"
FRAGMENT = RIG / "iommufd.config"
CACHE = Path(os.environ.get("VFIOLAB_CACHE") or Path.home() / ".cache" / "vfiolab")
SRC = CACHE / "src" / "linux-source-7.2"
SELFTESTS = ("iommufd", "iommufd_fail_nth")
REBUILD = "run `make kernel-rig` (rig/kernel/build.sh builds Linux 7.2 with IOMMUFD_TEST and boots it; 10+ min)"


class KernelRigMissing(VfiolabError):
    """The kernel rig's cache (source, build or a selftest run) is missing: says what and how to make it."""


def source_version() -> str:
    """The release of the unpacked kernel source, from its top Makefile (e.g. ``7.2.13``)."""
    try:
        text = (SRC / "Makefile").read_text()
    except OSError:
        raise KernelRigMissing(f"no kernel source at {SRC}: {REBUILD}") from None
    fields = dict(re.findall(r"^(VERSION|PATCHLEVEL|SUBLEVEL|EXTRAVERSION) = ?(.*)$", text, re.MULTILINE))
    return f"{fields['VERSION']}.{fields['PATCHLEVEL']}.{fields['SUBLEVEL']}{fields.get('EXTRAVERSION', '')}"


def kernel_key() -> str:
    """The cache key rig/kernel/common.sh uses: sha256 of "linux-source <version>\\n" + the fragment, 16 hex."""
    data = f"linux-source {source_version()}\n".encode() + FRAGMENT.read_bytes()
    return hashlib.sha256(data).hexdigest()[:16]


def kernel_dir() -> Path:
    """$VFIOLAB_CACHE/kernel/<key>: the built kernel, config, selftests and runs."""
    d = CACHE / "kernel" / kernel_key()
    if not (d / ".kernel.ok").is_file():
        raise KernelRigMissing(f"no kernel built from {FRAGMENT.relative_to(REPO)} at {d}: {REBUILD}")
    return d


def run_dir(name: str = "iommufd") -> Path:
    """The directory of the selftest run ``name`` (no extra arguments), holding tap.txt and results.json."""
    if name not in SELFTESTS:
        raise VfiolabError(f"unknown selftest {name!r} (known: {', '.join(SELFTESTS)})")
    d = kernel_dir() / "runs" / name
    if not (d / ".boot-key").is_file() or not (d / "tap.txt").is_file():
        raise KernelRigMissing(f"no finished {name} run at {d}: {REBUILD}")
    return d


@functools.cache
def load_parser() -> ModuleType:
    """rig/kernel/parse_tap.py as a module (it is a script of the rig, not part of the package)."""
    spec = importlib.util.spec_from_file_location("vfiolab_rig_parse_tap", RIG / "parse_tap.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod   # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def kernel_selftest_report(name: str = "iommufd") -> Any:
    """The parsed TAP of run ``name`` (a parse_tap.TapReport: plan, runs, totals, summary)."""
    tap = run_dir(name) / "tap.txt"
    return load_parser().parse_tap(tap.read_text(errors="replace"), str(tap))


def kernel_dmesg(name: str = "iommufd") -> str:
    """The guest's whole kernel log after run ``name`` (dumped by the rig's /init on its own serial port)."""
    f = run_dir(name) / "dmesg.txt"
    if not f.is_file():
        raise KernelRigMissing(f"no dmesg.txt in {f.parent} (made by an older rig): {REBUILD}")
    return f.read_text(errors="replace")


def kernel_selftest_results(name: str = "iommufd") -> list[dict[str, str | None]]:
    """``[{"name": "fixture[.variant].test", "result": "pass"|"fail"|"skip", "reason": str|None}]`` in run order."""
    return [r.to_json() for r in kernel_selftest_report(name).runs]
