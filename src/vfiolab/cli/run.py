"""``vfiolab run``: run a built-in scenario (or a scenario file) end to end and report it, as text while
it runs or as one JSON document; the exit status is 1 when a check failed."""

from __future__ import annotations

import json

import click

from vfiolab.errors import VfiolabError


@click.command("run")
@click.argument("scenario", required=False, metavar="[SCENARIO]")
@click.option("-s", "--set", "assignments", multiple=True, metavar="KEY=VALUE",
              help="Set a scenario parameter (repeatable); see --list.")
@click.option("--list", "list_only", is_flag=True, help="List the built-in scenarios and their parameters.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON document.")
def run(scenario: str | None, assignments: tuple[str, ...], list_only: bool, as_json: bool) -> None:
    """Run SCENARIO: a built-in name (default: live-migration) or a YAML file naming one with params."""
    from vfiolab.scenarios import runner

    if list_only:
        _list(as_json)
        return
    chosen, params = runner.select(scenario, runner.parse_assignments(assignments))
    log = (lambda line: None) if as_json else (lambda line: click.echo(line))
    result = chosen.run(params, log)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2, sort_keys=False))
    else:
        for line in result.summary:
            click.echo(line)
    if not result.ok:  # the CLI prints this as one line on stderr and exits 1
        raise VfiolabError(f"{result.scenario} failed: {result.failure}")


def _list(as_json: bool) -> None:
    from vfiolab.scenarios import runner

    scenarios = [runner.get(name) for name in runner.BUILTIN]
    if as_json:
        click.echo(json.dumps([{"name": s.name, "summary": s.summary, "default": s.name == runner.DEFAULT,
                                "params": [{"name": p.name, "default": p.default, "help": p.help, "min": p.lo,
                                            "max": p.hi, "choices": list(p.choices) or None}
                                           for p in s.params]} for s in scenarios], indent=2))
        return
    for s in scenarios:
        click.echo(f"{s.name}{' (default)' if s.name == runner.DEFAULT else ''}: {s.summary}")
        for p in s.params:
            click.echo(f"    {p.describe()}")
