"""``vfiolab demo``: the default platform end to end — enumerate, show the tree, the groups and why."""

from __future__ import annotations

import time

import click


@click.command("demo")
@click.option("--platform", "platform_file", metavar="FILE", help="Platform YAML to use instead of the built-in default.")
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
    for w in result.warnings:
        click.echo(f"vfiolab: warning: {w}", err=True)
    click.secho(f"== IOMMU groups ({len(result.groups)}), numbered in Linux probe order", bold=True)
    for g in result.groups:
        click.echo(f"group {g.id}: {' '.join(g.devices)}")
        for why in g.reasons:
            click.echo(f"    - {why}")
    _migration()


def _migration() -> None:
    """The VFIO part: the built-in scenario (``vfiolab run``), summarised."""
    from vfiolab.errors import VfiolabError
    from vfiolab.scenarios import get

    click.echo()
    click.secho("== VFIO live migration under DMA (`vfiolab run` prints every step)", bold=True)
    scenario = get("live-migration")
    result = scenario.run(scenario.resolve({"ram_mib": 64}), lambda line: None)
    for line in result.summary:
        click.echo(line)
    if not result.ok:
        raise VfiolabError(f"{result.scenario} failed: {result.failure}")
