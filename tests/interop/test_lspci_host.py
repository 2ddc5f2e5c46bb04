"""This machine's own PCI devices: ``lspci -xxxx`` of the real host, decoded by us and by pciutils' lspci.

Real data the generators did not make: whatever hardware (or hypervisor) the test runs on.  As root
the dump holds the full config space, so every capability the host exposes is compared.
"""

from __future__ import annotations

import subprocess

import pytest
from lspci_oracle import LSPCI, run_lspci

from vfiolab.pci.dump import parse_dump
from vfiolab.pci.groups import compute_groups
from vfiolab.pci.lspci import LspciOptions, render

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def host_dump() -> str:
    res = subprocess.run([LSPCI, "-xxxx"], capture_output=True, text=True, check=True)
    if not res.stdout.strip():
        pytest.fail("lspci -xxxx listed no devices on this machine (no PCI bus visible?)")
    return res.stdout


@pytest.mark.parametrize("args,opts", [
    (("-vvv",), LspciOptions(verbose=3)),
    (("-vv",), LspciOptions(verbose=2)),
    (("-v",), LspciOptions(verbose=1)),
    (("-nn",), LspciOptions(numeric=2)),
    (("-tv",), LspciOptions(tree=True, verbose=1)),
    (("-vmm",), LspciOptions(machine=2, verbose=1)),
    (("-xxxx",), LspciOptions(hex=4)),
], ids=lambda v: " ".join(v) if isinstance(v, tuple) else "")
def test_host_devices_decode_like_lspci(host_dump: str, args: tuple[str, ...], opts: LspciOptions) -> None:
    assert render(parse_dump(host_dump, "lspci -xxxx"), opts) == run_lspci(host_dump, *args)


def test_host_devices_group_without_error(host_dump: str) -> None:
    funcs = parse_dump(host_dump, "lspci -xxxx")
    result = compute_groups(funcs)
    grouped = sorted(d for g in result.groups for d in g.devices)
    assert grouped == sorted(f.name for f in funcs)
