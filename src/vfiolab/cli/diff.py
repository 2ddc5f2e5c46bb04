"""``vfiolab diff``: run uAPI scenarios on the model and on Linux 7.2's real /dev/iommu (one QEMU boot of the
kernel rig) and report every divergence; the exit status is 1 for a new divergence, a known one that went
away, or a written expectation that did not hold (docs/oracle.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from vfiolab.errors import VfiolabError

if TYPE_CHECKING:
    from vfiolab.difftest.scenario import Scenario
    from vfiolab.difftest.session import DiffReport


@click.command("diff")
@click.argument("scenarios", nargs=-1, metavar="[NAME|FILE]...")
@click.option("--corpus", "use_corpus", is_flag=True, help="The whole hand corpus (the default without others).")
@click.option("--random", "count", type=click.IntRange(0), default=0, metavar="N",
              help="N random sequences (seeded, replayable).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random sequences.")
@click.option("--length", type=click.IntRange(1), default=30, show_default=True, help="Calls per sequence.")
@click.option("--index", "first", type=click.IntRange(0), default=0, show_default=True,
              help="Index of the first random sequence (replay one with --random 1 --index K).")
@click.option("--model-only", is_flag=True, help="Run only the model and print its records.")
@click.option("--kernel-results", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Compare with the kernel's records of an earlier run (its results.jsonl) instead of booting.")
@click.option("--out", "outdir", type=click.Path(file_okay=False, path_type=Path),
              help="Directory for the guest run's files (default: a new temporary directory).")
@click.option("--save", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the scenarios run as JSON lines (replayable with `vfiolab diff FILE`).")
@click.option("--timeout", type=click.IntRange(10), default=None, help="Seconds the guest may run.")
@click.option("--list", "list_only", is_flag=True, help="List the corpus scenarios.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON document.")
def diff(scenarios: tuple[str, ...], use_corpus: bool, count: int, seed: int, length: int, first: int,
         model_only: bool, kernel_results: Path | None, outdir: Path | None, save: Path | None,
         timeout: int | None, list_only: bool, as_json: bool) -> None:
    """Compare the model with the real kernel on corpus scenarios (by NAME), scenario FILEs (YAML or JSON
    lines) and/or --random sequences."""
    from vfiolab.difftest.corpus import load_corpus

    if list_only:
        _list(load_corpus(), as_json)
        return
    chosen = _select(scenarios, use_corpus, count, seed, length, first)
    if save is not None:
        save.write_text("".join(s.dumps() + "\n" for s in chosen))
    if model_only:
        _model_only(chosen, as_json)
        return
    from vfiolab.difftest.session import diff as run_diff

    report = run_diff(chosen, kernel_results, outdir, timeout)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        for line in summary_lines(report):
            click.echo(line)
    if report.failed:
        c = report.counts()
        raise VfiolabError(f"{c['diverge']} new divergence(s), {c['xpassed']} known divergence(s) gone, "
                           f"{sum(len(x.expectations) for x in report.comparisons)} failed expectation(s)")


def _select(names: tuple[str, ...], use_corpus: bool, count: int, seed: int, length: int,
            first: int) -> list[Scenario]:
    from vfiolab.difftest.corpus import load_corpus
    from vfiolab.difftest.ops import OPS
    from vfiolab.difftest.scenario import load_scenarios

    chosen: list[Scenario] = []
    corpus_names = []
    for name in names:
        path = Path(name)
        if path.suffix in (".yaml", ".yml", ".jsonl") or path.exists():
            if not path.is_file():
                raise VfiolabError(f"no scenario file {name}")
            chosen += load_scenarios(path, OPS)
        else:
            corpus_names.append(name)
    if corpus_names:
        chosen += load_corpus(corpus_names)
    if use_corpus or not (names or count):
        chosen += load_corpus()
    if count:
        from vfiolab.difftest.generate import random_scenarios
        chosen += random_scenarios(count, seed, length, first)
    return chosen


def _list(corpus: list[Scenario], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps([{"name": s.name, "source": s.source, "calls": len(s.calls),
                                "xfail": s.xfail or None} for s in corpus], indent=2))
        return
    for s in corpus:
        mark = "  [xfail]" if s.xfail else ""
        click.echo(f"{s.name}: {len(s.calls)} calls{mark}  ({s.source or s.description or '-'})")


def _model_only(chosen: list[Scenario], as_json: bool) -> None:
    from vfiolab.difftest.session import run_model

    records, _ = run_model(chosen)
    if as_json:
        click.echo(json.dumps([{"name": s.name, "records": r} for s, r in zip(chosen, records)], indent=2))
        return
    for s, recs in zip(chosen, records):
        click.echo(f"# {s.name}")
        for call, rec in zip(s.calls, recs):
            out = rec.get("ret", rec.get("crash", rec.get("skip", "")))
            click.echo(f"{rec['i']:4} {call}: {rec['errno']} {json.dumps(out)[:100] if out != '' else ''}")


def summary_lines(report: DiffReport) -> list[str]:
    """The text report: totals, the guest's figures, known divergences, each new divergence in full."""
    c = report.counts()
    lines = [(f"vfiolab diff: {len(report.scenarios)} scenario(s), {report.calls} call(s) compared: "
              f"{c['agree']} agree, {c['diverge']} new divergence(s), {c['known']} known, "
              f"{c['xfailed']} xfailed, {c['xpassed']} xpassed")]
    g = report.guest
    if g is not None:
        lines.append(f"kernel: Linux {g.head.get('kernel')} in QEMU (TCG): boot + run {g.boot_seconds:.1f} s, "
                     f"Python ready at {g.startup_seconds} s uptime, {len(g.done.get('splats') or [])} "
                     f"kernel splat line(s); files in {g.outdir}")
    sym = report.symbolic_differences()
    if sym:
        lines.append("symbolic values that differed but paired consistently: "
                     + ", ".join(f"{k} {v}" for k, v in sorted(sym.items())))
    known = report.known_counts()
    if known:
        lines.append("known divergences: " + ", ".join(f"{k} {v}" for k, v in sorted(known.items())))
    for i, s in enumerate(report.scenarios):
        outcome = report.outcome(i)
        cmp = report.comparisons[i]
        if outcome in ("diverge", "xpassed"):
            lines.append(f"{outcome.upper()}: " + (str(cmp.divergence) if cmp.divergence else s.name))
            if s.source:
                lines.append(f"  replay: {s.source}")
        for e in cmp.expectations:
            lines.append(f"EXPECTATION: {e.scenario}: call {e.index} {e.call} on the {e.side}: "
                         f"expected {e.expected}, got {e.got}")
    return lines
