"""sysfs import (drivers/pci/pci-sysfs.c formats) into DumpedFunction, on fake sysfs trees."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_groups_builders import REAL_PEERS_GROUPS, qemu_real_peers

from vfiolab.cli.main import cli, main
from vfiolab.errors import VfiolabError
from vfiolab.pci.dump import DumpedFunction
from vfiolab.pci.groups import compute_groups
from vfiolab.pci.sysfs import read_sysfs

RESOURCE = ("0x00000000fe000000 0x00000000fe000fff 0x0000000000040200\n"
            "0x0000000000000000 0x0000000000000000 0x0000000000000000\n")


def make_sysfs(root: Path, funcs: list[DumpedFunction], groups: dict[str, int] | None = None,
               cut: dict[str, int] | None = None) -> None:
    """/sys/bus/pci/devices/<bdf> -> ../../../devices/pci0000:00/<bdf>, as the kernel lays it out."""
    devs = root / "bus" / "pci" / "devices"
    devs.mkdir(parents=True)
    for f in funcs:
        real = root / "devices" / f"pci{f.domain:04x}:00" / f.name
        real.mkdir(parents=True)
        (real / "config").write_bytes(f.config[: (cut or {}).get(f.name, len(f.config))])
        (real / "resource").write_text(RESOURCE)
        (real / "vendor").write_text(f"0x{int.from_bytes(f.config[0:2], 'little'):04x}\n")
        if groups and f.name in groups:
            gdir = root / "kernel" / "iommu_groups" / str(groups[f.name])
            gdir.mkdir(parents=True, exist_ok=True)
            os.symlink(os.path.relpath(gdir, real), real / "iommu_group")
        os.symlink(os.path.relpath(real, devs), devs / f.name)


def test_read_sysfs_gives_config_resources_and_attributes(tmp_path: Path) -> None:
    funcs = qemu_real_peers()
    make_sysfs(tmp_path, list(reversed(funcs)), groups={"0000:00:02.2": 3})
    got = read_sysfs(str(tmp_path))
    assert [f.name for f in got] == sorted(f.name for f in funcs)
    by = {f.name: f for f in got}
    assert by["0000:07:00.0"].config == next(f.config for f in funcs if f.name == "0000:07:00.0")
    assert by["0000:00:00.0"].resources == [(0xFE000000, 0xFE000FFF, 0x40200), (0, 0, 0)]
    assert by["0000:00:02.2"].sysfs == {"vendor": "0x1b36", "iommu_group": "3"}
    assert [g.devices for g in compute_groups(got).groups] == REAL_PEERS_GROUPS


def test_unprivileged_sysfs_read_is_detected(tmp_path: Path) -> None:
    make_sysfs(tmp_path, qemu_real_peers(), cut={"0000:00:02.0": 64})
    with pytest.raises(VfiolabError, match=r"0000:00:02\.0: .*/config returned 64 bytes; offset 0x40 onwards "
                                           r"\(capabilities\) is missing — sysfs gives readers without "
                                           r"CAP_SYS_ADMIN only the first 64 bytes"):
        read_sysfs(tmp_path)


def test_missing_sysfs_and_bad_resource(tmp_path: Path) -> None:
    with pytest.raises(VfiolabError, match="bus/pci/devices: No such file or directory"):
        read_sysfs(tmp_path / "nowhere")
    make_sysfs(tmp_path, qemu_real_peers()[:1])
    (tmp_path / "bus/pci/devices/0000:00:00.0/resource").write_text("0x0 0x1\n")
    with pytest.raises(VfiolabError, match=r"resource:1: expected three hex numbers, got '0x0 0x1'"):
        read_sysfs(tmp_path)


def test_cli_groups_from_sysfs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_sysfs(tmp_path, qemu_real_peers())
    out = CliRunner().invoke(cli, ["groups", "--sysfs", str(tmp_path), "--json"])
    assert out.exit_code == 0, out.output
    assert [g["devices"] for g in json.loads(out.stdout)["groups"]] == REAL_PEERS_GROUPS
    bad = tmp_path / "bad"
    make_sysfs(bad, qemu_real_peers(), cut={"0000:00:1f.0": 64})
    assert main(["groups", "--sysfs", str(bad)]) == 1
    assert "0000:00:1f.0: " in capsys.readouterr().err


def test_cli_groups_from_sysfs_says_what_it_computed(tmp_path: Path) -> None:
    """Without IOMMU groups in sysfs the command says it shows what Linux would form with an IOMMU; with
    them it checks the kernel's partition against its own."""
    funcs = qemu_real_peers()
    plain = tmp_path / "noiommu"
    make_sysfs(plain, funcs)
    out = CliRunner().invoke(cli, ["groups", "--sysfs", str(plain), "--json"])
    assert out.exit_code == 0
    assert out.stderr == (f"vfiolab: note: the running kernel has no IOMMU groups for PCI ({plain}/kernel/"
                          "iommu_groups is empty: no IOMMU is enabled); these are the groups Linux 7.2 would form "
                          "with one\n")
    assert json.loads(out.stdout)["kernel"] == {"iommu_groups": 0, "functions_in_groups": 0, "matches": None,
                                                "same_numbers": None}

    kernel = {name: i for i, devs in enumerate(REAL_PEERS_GROUPS) for name in devs}
    same = tmp_path / "same"
    make_sysfs(same, funcs, groups=kernel)
    out = CliRunner().invoke(cli, ["groups", "--sysfs", str(same), "--json"])
    assert out.exit_code == 0 and out.stderr == ""
    assert json.loads(out.stdout)["kernel"] == {"iommu_groups": len(REAL_PEERS_GROUPS),
                                                "functions_in_groups": len(kernel), "matches": True,
                                                "same_numbers": True}

    shifted = tmp_path / "shifted"              # e.g. a kernel that gave group 0 to a non-PCI device first
    make_sysfs(shifted, funcs, groups={name: gid + 1 for name, gid in kernel.items()})
    out = CliRunner().invoke(cli, ["groups", "--sysfs", str(shifted), "--json"])
    assert out.stderr == ("vfiolab: note: same groups as the kernel's, numbered differently (its group 1 is group 0 "
                          "here)\n")
    assert json.loads(out.stdout)["kernel"]["same_numbers"] is False

    merged = dict(kernel, **{"0000:07:00.2": kernel["0000:07:00.1"]})    # the kernel joins two VFs
    del merged["0000:00:00.0"]
    other = tmp_path / "other"
    make_sysfs(other, funcs, groups=merged)
    out = CliRunner().invoke(cli, ["groups", "--sysfs", str(other)])
    assert out.exit_code == 0
    assert out.stderr == ("vfiolab: warning: the kernel puts 0000:00:00.0 in no IOMMU group\n"
                          f"vfiolab: warning: the kernel's group {kernel['0000:07:00.1']} holds 0000:07:00.1 "
                          "0000:07:00.2; computed: 0000:07:00.1; 0000:07:00.2\n")
    assert out.stdout.startswith("IOMMU group 0\n  0000:00:00.0 ")


@pytest.mark.parametrize(("size", "message"), [
    (0, r"config returned 0 bytes; offset 0x0 onwards is missing, the 64-byte header included$"),
    (5000, r"config returned 5000 bytes; config space has at most 4096$"),
])
def test_config_files_of_impossible_sizes(tmp_path: Path, size: int, message: str) -> None:
    make_sysfs(tmp_path, qemu_real_peers()[:1])
    (tmp_path / "bus/pci/devices/0000:00:00.0/config").write_bytes(bytes(size))
    with pytest.raises(VfiolabError, match=message):
        read_sysfs(tmp_path)


def test_attributes_that_are_not_utf8_are_kept_as_read(tmp_path: Path) -> None:
    make_sysfs(tmp_path, qemu_real_peers()[:1])
    (tmp_path / "bus/pci/devices/0000:00:00.0/vendor").write_bytes(b"\xff\xfe\n")
    (f,) = read_sysfs(tmp_path)
    assert f.sysfs is not None and f.sysfs["vendor"].encode("utf-8", "surrogateescape") == b"\xff\xfe"
