"""Entry point of the ``vfiolab`` command: subcommands are loaded lazily, one module each."""

from __future__ import annotations

import importlib
import os
import sys

import click

from vfiolab import __version__
from vfiolab.errors import VfiolabError

# name -> (module, attribute, one-line help); a command's module is imported only when it runs.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "lspci": ("vfiolab.cli.lspci", "lspci", "List PCI functions as pciutils' lspci does."),
    "groups": ("vfiolab.cli.groups", "groups", "IOMMU groups as Linux forms them."),
    "demo": ("vfiolab.cli.demo", "demo", "Build the default platform, enumerate it, show groups and why."),
    "serve": ("vfiolab.cli.serve", "serve", "Serve emulated devices over vfio-user, one socket each."),
    "run": ("vfiolab.cli.run", "run", "Run an end-to-end scenario (default: VFIO live migration under DMA)."),
    "diff": ("vfiolab.cli.diff", "diff", "Compare the model with Linux 7.2's real /dev/iommu, call by call."),
}


class LazyGroup(click.Group):
    """A click group whose subcommands live in their own modules."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        module = importlib.import_module(entry[0])
        cmd: click.Command = getattr(module, entry[1])
        return cmd

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in sorted(COMMANDS)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vfiolab")
def cli() -> None:
    """vfiolab: the Linux PCI / IOMMU / VFIO stack as an executable model."""


# Deep platform descriptions (a chain of 255 bridges) nest far past Python's default 1000 frames in the
# YAML reader, the enumeration and the grouping; pure-Python recursion does not grow the C stack.
_RECURSION_LIMIT = 20000


def _drop_stdout() -> None:
    """After EPIPE: send what is still buffered to /dev/null so the exit flush stays quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass                            # not a real file descriptor (e.g. under click's CliRunner)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; user errors print one line on stderr and exit 1 (usage errors 2, as click does),
    never a traceback; a closed stdout (``vfiolab lspci | head -1``) ends the command quietly."""
    args = sys.argv[1:] if argv is None else list(argv)
    sys.setrecursionlimit(max(sys.getrecursionlimit(), _RECURSION_LIMIT))
    try:
        # The context is driven here rather than by cli.main(): click turns EPIPE into exit status 1.
        with cli.make_context("vfiolab", args) as ctx:
            cli.invoke(ctx)
        sys.stdout.flush()
    except click.exceptions.Exit as e:
        return int(e.exit_code or 0)
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("vfiolab: interrupted", err=True)
        return 130
    except VfiolabError as e:
        click.echo(f"vfiolab: {e}", err=True)
        return 1
    except RecursionError:
        click.echo("vfiolab: the input nests too deeply to process", err=True)
        return 1
    except BrokenPipeError:
        _drop_stdout()
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
