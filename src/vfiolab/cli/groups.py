"""``vfiolab groups``: the IOMMU groups Linux 7.2 would form for a machine, and why."""

from __future__ import annotations

import json

import click


@click.command("groups")
@click.option("--dump", "dump_file", type=click.Path(exists=True, dir_okay=False),
              help="lspci -xxxx dump of all functions of a machine.")
@click.option("--sysfs", "sysfs_dir", type=click.Path(exists=True, file_okay=False),
              help="A sysfs root (e.g. /sys) to read <root>/bus/pci/devices/*/config from.")
@click.option("--platform", "platform_file", type=click.Path(exists=True, dir_okay=False),
              help="Platform YAML; enumerated like Linux before grouping.")
@click.option("--json", "as_json", is_flag=True, help="Print {\"groups\": [{\"id\", \"devices\"}, ...]}.")
@click.option("--explain", "-v", "explain", is_flag=True, help="Say why each device is in its group.")
@click.option("--amd-ivrs", is_flag=True, help="An AMD IOMMU (ACPI IVRS table) is present (AMD SB ACS quirk).")
def groups(dump_file: str | None, sysfs_dir: str | None, platform_file: str | None, as_json: bool,
           explain: bool, amd_ivrs: bool) -> None:
    """IOMMU groups as Linux forms them, from a dump, a sysfs tree or a platform (default: built-in)."""
    from vfiolab.pci.acs import AcsSetup
    from vfiolab.pci.dump import DumpedFunction, parse_dump
    from vfiolab.pci.groups import IommuSetup, compute_groups

    chosen = [o for o, v in (("--dump", dump_file), ("--sysfs", sysfs_dir), ("--platform", platform_file))
              if v is not None]
    if len(chosen) > 1:
        raise click.UsageError(f"give only one of {', '.join(chosen)}")
    funcs: list[DumpedFunction]
    if dump_file is not None:
        with open(dump_file, encoding="utf-8", errors="replace") as f:
            funcs = parse_dump(f.read(), dump_file)
    elif sysfs_dir is not None:
        from vfiolab.pci.sysfs import read_sysfs
        funcs = read_sysfs(sysfs_dir)
    else:
        from vfiolab.platform import snapshot
        funcs = snapshot(platform_file)
    if not funcs:
        from vfiolab.errors import VfiolabError
        raise VfiolabError(f"{dump_file or sysfs_dir or platform_file or 'platform'}: no PCI functions found")
    result = compute_groups(funcs, IommuSetup(acs=AcsSetup(), ivrs=amd_ivrs))
    for w in result.warnings:
        click.echo(f"vfiolab: warning: {w}", err=True)
    if as_json:
        click.echo(json.dumps(result.to_json(reasons=explain), indent=1))
        return
    tree = result.tree
    for g in result.groups:
        click.echo(f"IOMMU group {g.id}")
        for name, why in zip(g.devices, g.reasons):
            dev = tree.device(name)
            click.echo(f"  {name} [{dev.vendor:04x}:{dev.device:04x}] {dev.kind}")
            if explain:
                click.echo(f"      {why}")
