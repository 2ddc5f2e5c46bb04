"""vfiolab's lspci: pciutils 3.9 ``lspci`` output reproduced from config-space dumps.

``render(funcs, opts)`` gives the text ``lspci -F`` prints for the same bytes (or vfiolab's JSON with
``opts.json``); ``LspciOptions`` holds the switches (-v, -x, -t, -n, -s, -D, --json).
"""

from __future__ import annotations

from vfiolab.pci.dump import DumpedFunction
from vfiolab.pci.lspci.jsonout import render_json
from vfiolab.pci.lspci.options import LspciOptions, Rendered
from vfiolab.pci.lspci.output import render_text

__all__ = ["LspciOptions", "Rendered", "render", "render_result"]


def render_result(funcs: list[DumpedFunction], opts: LspciOptions | None = None) -> Rendered:
    """Output text plus the warnings lspci would print on stderr."""
    opts = opts or LspciOptions()
    return render_json(funcs, opts) if opts.json else render_text(funcs, opts)


def render(funcs: list[DumpedFunction], opts: LspciOptions | None = None) -> str:
    """What ``lspci -F <dump of funcs> <opts>`` prints (vfiolab's JSON when ``opts.json``)."""
    return render_result(funcs, opts).text
