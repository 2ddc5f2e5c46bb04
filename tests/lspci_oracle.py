"""Run the real lspci (pciutils, Debian 12's 3.9) on dump text: the decode oracle for our lspci.

Tests that use it fail loudly if lspci is missing: ``make test`` installs pciutils (rig/apt-deps.sh).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile

LSPCI = shutil.which("lspci") or "/usr/bin/lspci"


def run_lspci(dump_text: str, *args: str) -> str:
    """``lspci -F FILE ARGS`` on ``dump_text``; stdout as text (stderr's libkmod noise dropped)."""
    if not os.path.exists(LSPCI):
        raise RuntimeError("lspci not found: run `make test` (rig/apt-deps.sh installs pciutils)")
    with tempfile.NamedTemporaryFile("w", suffix=".dump", delete=False) as f:
        f.write(dump_text)
        path = f.name
    try:
        res = subprocess.run([LSPCI, "-F", path, *args], capture_output=True, text=True, check=False)
    finally:
        os.unlink(path)
    if res.returncode != 0:
        raise RuntimeError(f"lspci failed ({res.returncode}): {res.stderr.strip()}")
    return res.stdout


_CAP_LINE = re.compile(r"^\tCapabilities: \[([0-9a-f]+)(?: v\d+)?\] ")


def cap_sections(vvv_text: str) -> dict[int, str]:
    """Split one device's ``-vvv`` text into {cap offset: text from 'Capabilities: [..]' to the next}."""
    out: dict[int, str] = {}
    cur: int | None = None
    buf: list[str] = []
    for line in vvv_text.splitlines(keepends=True):
        m = _CAP_LINE.match(line)
        if m or (cur is not None and (not line.startswith("\t\t") and not line.startswith("\t\t\t"))):
            if cur is not None:
                out[cur] = "".join(buf)
            cur, buf = (int(m.group(1), 16), [line]) if m else (None, [])
            continue
        if cur is not None:
            buf.append(line)
    if cur is not None:
        out[cur] = "".join(buf)
    return out
