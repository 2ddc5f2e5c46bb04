"""`vfiolab demo` runs the default platform end to end and explains the groups it prints."""

from __future__ import annotations

import re

from click.testing import CliRunner

from vfiolab.cli.main import cli, main


def test_demo_prints_tree_groups_and_reasons() -> None:
    res = CliRunner().invoke(cli, ["demo"])
    assert res.exit_code == 0, res.output
    out = res.output
    assert "== lspci -tv" in out and "== IOMMU groups" in out
    groups = re.findall(r"^group (\d+): (.+)$", out, re.M)
    assert [int(g) for g, _ in groups] == list(range(len(groups)))   # lowest-free IDs in probe order
    # The default platform has a switch whose downstream ports lack ACS: their endpoints share a group ...
    assert re.search(r"joined \S+ group: downstream port \S+ has no ACS capability", out)
    # ... a PCIe-to-PCI bridge aliases the conventional devices behind it ...
    assert "PCIe-to-PCI bridge" in out
    # ... and SR-IOV VFs behind an ACS root port get groups of their own.
    assert "Illegal Vendor ID" in out


def test_unknown_platform_file_is_a_clean_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "p.yaml"
    bad.write_text("segments: [1, 2\n")
    assert main(["demo", "--platform", str(bad)]) == 1
