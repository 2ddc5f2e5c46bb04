"""lspci text output for dumped functions, byte for byte what pciutils 3.9 ``lspci -F`` prints.

lspci.c main()/show()/show_device(): sort by (domain, bus, device, function), filter with -s, then per
function the title line (show_terse), the verbose header (header.py) with its capability walk
(capwalk.py), the hex dump (show_hex_dump) and a blank line; or the bus tree (-t, tree.py).
"""

from __future__ import annotations

import io

from vfiolab.pci.caps.ssvid import SUBSYS_NAMER
from vfiolab.pci.decode import DecodeContext
from vfiolab.pci.dump import DumpedFunction
from vfiolab.pci.lspci.capwalk import CapText, walk_caps
from vfiolab.pci.lspci.device import Device, make_device
from vfiolab.pci.lspci.header import show_verbose_header
from vfiolab.pci.lspci.machine import show_machine
from vfiolab.pci.lspci.names import BUF_TREE, Namer
from vfiolab.pci.lspci.options import LspciOptions, Rendered
from vfiolab.pci.lspci.slotfilter import SlotFilter, parse_slot
from vfiolab.pci.lspci.tree import show_tree


def sorted_devices(funcs: list[DumpedFunction]) -> list[Device]:
    """Devices in lspci's order (lspci.c sort_them; stable, so duplicates keep their file order)."""
    devs = [make_device(f) for f in funcs]
    devs.sort(key=lambda d: (d.domain, d.bus, d.dev, d.func))
    return devs


def decode_context(d: Device, verbose: int, namer: Namer) -> DecodeContext:
    """What capability decoders see for ``d`` (its bytes, the verbosity, the subsystem namer)."""
    return DecodeContext(cfg=d.cfg, avail=d.avail, verbose=verbose, bdf=d.full_name,
                         extra={SUBSYS_NAMER: namer.subsystem})


def device_caps(d: Device, verbose: int, namer: Namer) -> list[CapText]:
    """The capability entries lspci prints for ``d`` at this verbosity (none without config access)."""
    if d.no_config:
        return []
    ptr = 0x14 if d.htype == 2 else 0x34
    if d.htype not in (0, 1, 2) or (d.htype == 2 and d.cached < 128):
        return []
    return walk_caps(d, decode_context(d, verbose, namer), ptr)


def _terse(d: Device, opts: LspciOptions, namer: Namer, show_domain: bool) -> str:
    # lspci.c show_terse()
    head = f"{d.domain:04x}:{d.slot}" if show_domain else d.slot
    text = f"{head} {namer.cls(d.cls)}: {namer.vendor_device(d.vendor, d.device)}"
    if d.rev:
        text += f" (rev {d.rev:02x})"
    if opts.verbose:
        pif = namer.progif(d.cls, d.prog_if)
        if d.prog_if or pif is not None:
            text += f" (prog-if {d.prog_if:02x}" + (f" [{pif}]" if pif is not None else "") + ")"
    text += "\n"
    if opts.verbose and d.subsys is not None and d.subsys[0] and d.subsys[0] != 0xFFFF:
        text += f"\tSubsystem: {namer.subsystem(d.vendor, d.device, d.subsys[0], d.subsys[1])}\n"
    return text


def _hexdump(d: Device, level: int) -> str:
    # lspci.c show_hex_dump(): 64 bytes (128 for CardBus), all 256 with -xxx, 4096 with -xxxx, each
    # only if the dump holds that many.
    if d.no_config:
        return "WARNING: Cannot show hex-dump of the config space\n"
    cnt = d.cached
    if level >= 3 and d.fetch(cnt, 256 - cnt):
        cnt = 256
        if level >= 4 and d.fetch(256, 4096 - 256):
            cnt = 4096
    cfg = d.cfg
    return "".join(f"{off:02x}: {cfg[off:off + 16].hex(' ')}\n" for off in range(0, cnt, 16))


def render_text(funcs: list[DumpedFunction], opts: LspciOptions) -> Rendered:
    """lspci's stdout and stderr warnings for these functions and options."""
    flt: SlotFilter | None = parse_slot(opts.slot) if opts.slot is not None else None
    namer = Namer(opts.numeric, opts.ids_path)
    devs = sorted_devices(funcs)
    # lspci.c scan_device(): any device outside domain 0 turns domains on, even one filtered out.
    show_domain = opts.domains or any(d.domain for d in devs)
    warnings = [w for d in devs for w in d.warnings]
    if opts.tree:
        label = (lambda d: namer.vendor_device(d.vendor, d.device, BUF_TREE)) if opts.verbose else None
        return Rendered(show_tree(devs, flt, label), warnings)
    out = io.StringIO()
    w = out.write

    def caps(dev: Device, ptr: int) -> None:
        for c in walk_caps(dev, decode_context(dev, opts.verbose, namer), ptr):
            w(c.prefix)
            w(c.text)

    for d in devs:
        if flt is not None and not flt.match(d.domain, d.bus, d.dev, d.func):
            continue
        if opts.machine:
            w(show_machine(d, opts.machine, opts.verbose, namer, opts.domains))
        else:
            w(_terse(d, opts, namer, show_domain))
            if opts.verbose:
                show_verbose_header(w, d, opts.verbose, caps)
        if opts.hex:
            w(_hexdump(d, opts.hex))
        if opts.verbose or opts.hex:
            w("\n")
    return Rendered(out.getvalue(), warnings)

