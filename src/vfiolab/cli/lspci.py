"""``vfiolab lspci``: list PCI functions as pciutils 3.9 lspci does, from a dump (-F) or the model platform."""

from __future__ import annotations

import sys

import click

from vfiolab.errors import VfiolabError
from vfiolab.pci.dump import DumpedFunction, load_dump


def _platform_functions(platform: str | None) -> list[DumpedFunction]:
    try:
        from vfiolab.platform import snapshot
    except ImportError as e:
        raise VfiolabError(f"lspci: the model platform is not available ({e}); give a dump with -F FILE") from None
    return snapshot(platform)


def _check_ids_file(path: str) -> None:
    """-i FILE given on purpose must exist (lspci silently falls back to numbers; a typo deserves a word)."""
    candidates = (path, path[:-3]) if path.endswith(".gz") else (path,)
    for cand in candidates:
        try:
            with open(cand, "rb"):
                return
        except IsADirectoryError:
            return                      # names.py reports it as lspci does ("I/O error at ..., line 0")
        except OSError as e:
            err = e.strerror
    raise VfiolabError(f"-i {path}: cannot read the PCI ID list: {err}")


@click.command("lspci", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "verbose", count=True, help="Be verbose (-vv or -vvv for more).")
@click.option("-x", "hexdump", count=True, help="Hex dump: -x 64 bytes, -xxx 256, -xxxx 4096.")
@click.option("-t", "tree", is_flag=True, help="Show the bus tree.")
@click.option("-m", "machine", count=True, help="Machine-readable output (-mm: the current form).")
@click.option("-n", "numeric", count=True, help="Numeric IDs (-nn: names and numbers).")
@click.option("-s", "slot", metavar="[[[[<domain>]:]<bus>]:][<slot>][.[<func>]]",
              help="Show only functions in the selected slots.")
@click.option("-D", "domains", is_flag=True, help="Always show domain numbers.")
@click.option("-F", "dump_file", metavar="FILE", help="Read config space from an lspci -x dump instead.")
@click.option("-i", "ids_file", metavar="FILE", help="Use this pci.ids instead of the system one.")
@click.option("--platform", "platform_file", metavar="FILE",
              help="Platform description (YAML) to enumerate instead of the built-in default.")
@click.option("--json", "as_json", is_flag=True, help="vfiolab's JSON instead of lspci text.")
def lspci(verbose: int, hexdump: int, tree: bool, machine: int, numeric: int, slot: str | None, domains: bool,
          dump_file: str | None, ids_file: str | None, platform_file: str | None, as_json: bool) -> None:
    """List PCI functions exactly as pciutils 3.9 `lspci -F` would show the same config space."""
    from vfiolab.pci.lspci import LspciOptions, render_result
    from vfiolab.pci.lspci.names import DEFAULT_PCI_IDS
    from vfiolab.pci.lspci.slotfilter import parse_slot

    if dump_file is not None and platform_file is not None:
        raise click.UsageError("give either -F FILE or --platform FILE, not both")
    if slot is not None:
        parse_slot(slot)                # a bad -s fails before any file is read, as in lspci
    if ids_file is not None:
        _check_ids_file(ids_file)
    opts = LspciOptions(verbose=verbose, hex=hexdump, tree=tree, machine=machine, numeric=numeric, slot=slot,
                        domains=domains, json=as_json, ids_path=ids_file or DEFAULT_PCI_IDS)
    # lib/dump.c lists device numbers 20-ff and functions 8-9 as written: so do we (any_slot).
    funcs = load_dump(dump_file, any_slot=True) if dump_file is not None else _platform_functions(platform_file)
    result = render_result(funcs, opts)
    for warning in result.warnings:
        click.echo(f"pcilib: {warning}", err=True)
    sys.stdout.buffer.write(result.text.encode("utf-8", "surrogateescape"))
    sys.stdout.flush()
