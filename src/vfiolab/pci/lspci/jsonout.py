"""``vfiolab lspci --json``: a stable machine-readable view of the same decode.

Schema (one object)::

    {"devices": [{"slot": "0000:00:02.0", "class": "0604", "prog_if": "00", "vendor": "8086",
                  "device": "10c9", "subsystem": "8086:a001" | null, "rev": "01",
                  "capabilities": [{"offset": 64, "id": 16, "extended": false, "version": null,
                                    "name": "PCI Express", "text": "Express (v2) Root Port ..."}]}]}

IDs are lower-case hex strings as lspci -n prints them; ``text`` is lspci's text for the capability at
the requested -v level (default -vvv), one line per line, without the leading tabs.
"""

from __future__ import annotations

import json

from vfiolab.pci.dump import DumpedFunction
from vfiolab.pci.lspci.capnames import cap_name
from vfiolab.pci.lspci.names import Namer
from vfiolab.pci.lspci.options import LspciOptions, Rendered
from vfiolab.pci.lspci.output import device_caps, sorted_devices
from vfiolab.pci.lspci.slotfilter import parse_slot


def to_json(funcs: list[DumpedFunction], opts: LspciOptions) -> dict[str, object]:
    """The JSON document as Python data (devices in lspci order, -s applied)."""
    flt = parse_slot(opts.slot) if opts.slot is not None else None
    verbose = opts.verbose or 3
    namer = Namer(opts.numeric, opts.ids_path)
    devices: list[dict[str, object]] = []
    for d in sorted_devices(funcs):
        if flt is not None and not flt.match(d.domain, d.bus, d.dev, d.func):
            continue
        subsys = None
        if d.subsys is not None and d.subsys[0] and d.subsys[0] != 0xFFFF:
            subsys = f"{d.subsys[0]:04x}:{d.subsys[1]:04x}"
        caps = [{"offset": c.offset, "id": c.cap_id, "extended": c.extended, "version": c.version,
                 "name": cap_name(c.cap_id, c.extended),
                 "text": "\n".join(line.lstrip("\t") for line in c.text.splitlines())}
                for c in device_caps(d, verbose, namer) if c.is_capability]
        devices.append({"slot": d.full_name, "class": f"{d.cls:04x}", "prog_if": f"{d.prog_if:02x}",
                        "vendor": f"{d.vendor:04x}", "device": f"{d.device:04x}", "subsystem": subsys,
                        "rev": f"{d.rev:02x}", "capabilities": caps})
    return {"devices": devices}


def render_json(funcs: list[DumpedFunction], opts: LspciOptions) -> Rendered:
    """The JSON document as indented text."""
    return Rendered(json.dumps(to_json(funcs, opts), indent=1) + "\n", [])
