"""``vfiolab groups``: the IOMMU groups Linux 7.2 would form for a machine, and why.

The groups are always those Linux forms with an IOMMU enabled (its driver requests ACS at probe), whatever
the machine the bytes came from.  With ``--sysfs`` the running kernel's own groups are read too: the
command says when that kernel has none (no IOMMU) and warns where they differ from the computed ones.
"""

from __future__ import annotations

import json
import os

import click

from vfiolab.pci.dump import DumpedFunction


def _kernel_groups(root: str, funcs: list[DumpedFunction]) -> tuple[dict[str, str], int]:
    """Each function's ``iommu_group`` link target and how many groups <root>/kernel/iommu_groups holds."""
    try:
        count = len(os.listdir(os.path.join(root, "kernel", "iommu_groups")))
    except OSError:
        count = 0
    return {f.name: f.sysfs["iommu_group"] for f in funcs if f.sysfs and "iommu_group" in f.sysfs}, count


def _compare(computed: list[list[str]], kernel: dict[str, str]) -> list[str]:
    """Where the kernel's partition into groups differs from the computed one (group numbers aside)."""
    ours = {name: i for i, devs in enumerate(computed) for name in devs}
    theirs: dict[str, list[str]] = {}
    for name, gid in kernel.items():
        theirs.setdefault(gid, []).append(name)
    out = [f"the kernel puts {name} in no IOMMU group" for name in sorted(set(ours) - set(kernel))]
    for gid, names in sorted(theirs.items(), key=lambda kv: min(kv[1])):
        idx = sorted({ours[n] for n in names if n in ours})
        if len(idx) != 1 or set(computed[idx[0]]) != set(names):
            out.append(f"the kernel's group {gid} holds {' '.join(sorted(names))}; computed: "
                       + "; ".join(" ".join(computed[i]) for i in idx))
    return out


@click.command("groups")
@click.option("--dump", "dump_file", metavar="FILE", help="lspci -xxxx dump of all functions of a machine.")
@click.option("--sysfs", "sysfs_dir", metavar="DIRECTORY",
              help="A sysfs root (e.g. /sys) to read <root>/bus/pci/devices/*/config from.")
@click.option("--platform", "platform_file", metavar="FILE", help="Platform YAML; enumerated like Linux before grouping.")
@click.option("--json", "as_json", is_flag=True, help="Print {\"groups\": [{\"id\", \"devices\"}, ...]}.")
@click.option("--explain", "-v", "explain", is_flag=True, help="Say why each device is in its group.")
@click.option("--amd-ivrs", is_flag=True, help="An AMD IOMMU (ACPI IVRS table) is present (AMD SB ACS quirk).")
def groups(dump_file: str | None, sysfs_dir: str | None, platform_file: str | None, as_json: bool,
           explain: bool, amd_ivrs: bool) -> None:
    """IOMMU groups as Linux 7.2 forms them with an IOMMU enabled, from a dump, a sysfs tree or a platform
    (default: built-in)."""
    from vfiolab.pci.acs import AcsSetup
    from vfiolab.pci.dump import check_unique, load_dump
    from vfiolab.pci.groups import IommuSetup, compute_groups

    chosen = [o for o, v in (("--dump", dump_file), ("--sysfs", sysfs_dir), ("--platform", platform_file))
              if v is not None]
    if len(chosen) > 1:
        raise click.UsageError(f"give only one of {', '.join(chosen)}")
    funcs: list[DumpedFunction]
    if dump_file is not None:
        funcs = load_dump(dump_file)
        check_unique(funcs)
    elif sysfs_dir is not None:
        from vfiolab.pci.sysfs import read_sysfs
        funcs = read_sysfs(sysfs_dir)
    else:
        from vfiolab.platform import snapshot
        funcs = snapshot(platform_file)
    if not funcs:
        from vfiolab.errors import VfiolabError
        raise VfiolabError(f"{sysfs_dir or platform_file or 'platform'}: no PCI functions found")
    result = compute_groups(funcs, IommuSetup(acs=AcsSetup(), ivrs=amd_ivrs))
    for w in result.warnings:
        click.echo(f"vfiolab: warning: {w}", err=True)
    doc = result.to_json(reasons=explain)
    if sysfs_dir is not None:
        kernel, count = _kernel_groups(sysfs_dir, funcs)
        differences = _compare([g.devices for g in result.groups], kernel) if kernel else []
        if not kernel:
            where = os.path.join(sysfs_dir, "kernel", "iommu_groups")
            why = (f"{where} holds {count} but no PCI function is in one: no IOMMU translates for PCI" if count
                   else f"{where} is empty: no IOMMU is enabled")
            click.echo(f"vfiolab: note: the running kernel has no IOMMU groups for PCI ({why}); these are the "
                       "groups Linux 7.2 would form with one", err=True)
        for d in differences:
            click.echo(f"vfiolab: warning: {d}", err=True)
        renumbered = [g for g in result.groups if kernel and kernel.get(g.devices[0]) != str(g.id)]
        if kernel and not differences and renumbered:
            g = renumbered[0]
            click.echo(f"vfiolab: note: same groups as the kernel's, numbered differently (its group "
                       f"{kernel[g.devices[0]]} is group {g.id} here)", err=True)
        doc["kernel"] = {"iommu_groups": count, "functions_in_groups": len(kernel),
                         "matches": (not differences) if kernel else None,
                         "same_numbers": (not differences and not renumbered) if kernel else None}
    if as_json:
        click.echo(json.dumps(doc, indent=1))
        return
    tree = result.tree
    for g in result.groups:
        click.echo(f"IOMMU group {g.id}")
        for name, why in zip(g.devices, g.reasons):
            dev = tree.device(name)
            click.echo(f"  {name} [{dev.vendor:04x}:{dev.device:04x}] {dev.kind}")
            if explain:
                click.echo(f"      {why}")
