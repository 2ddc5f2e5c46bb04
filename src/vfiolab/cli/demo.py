"""``vfiolab demo``: the default platform end to end — enumerate, show the tree, the groups and why."""

from __future__ import annotations

import time

import click


@click.command("demo")
@click.option("--platform", "platform_file", type=click.Path(exists=True, dir_okay=False),
              help="Platform YAML to use instead of the built-in default.")
def demo(platform_file: str | None) -> None:
    """Build a platform, enumerate it like Linux, print its tree and IOMMU groups with reasons."""
    from vfiolab.pci.groups import compute_groups
    from vfiolab.pci.lspci import LspciOptions, render
    from vfiolab.platform import snapshot

    t0 = time.perf_counter()
    funcs = snapshot(platform_file)
    t1 = time.perf_counter()
    click.secho(f"== Platform: {platform_file or 'built-in default'} — {len(funcs)} functions "
                f"enumerated in {1000 * (t1 - t0):.1f} ms", bold=True)
    click.echo()
    click.secho("== lspci -tv (bus numbers assigned by our enumeration)", bold=True)
    click.echo(render(funcs, LspciOptions(tree=True, verbose=1)), nl=False)
    click.echo()
    click.secho("== lspci -nn", bold=True)
    click.echo(render(funcs, LspciOptions(numeric=2)), nl=False)
    click.echo()
    result = compute_groups(funcs)
    click.secho(f"== IOMMU groups ({len(result.groups)}), numbered in Linux probe order", bold=True)
    for g in result.groups:
        click.echo(f"group {g.id}: {' '.join(g.devices)}")
        for why in g.reasons:
            click.echo(f"    - {why}")
