"""``lspci -m``/``-mm``/``-vmm``: the machine-readable forms of pciutils 3.9 ``lspci.c`` show_machine()."""

from __future__ import annotations

from vfiolab.pci.lspci.device import Device
from vfiolab.pci.lspci.names import Namer


def _quoted(text: str) -> str:
    # lspci.c print_shell_escaped(): double quotes, with '"' and '\' backslash-escaped.
    return ' "' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _has_subsys(d: Device) -> bool:
    return d.subsys is not None and d.subsys[0] != 0 and d.subsys[0] != 0xFFFF


def show_machine(d: Device, level: int, verbose: int, namer: Namer, domains: bool) -> str:
    """One function in -m (``level`` 1) or -mm (2) form; -v turns it into tagged lines."""
    # In machine mode the domain shows when it is non-zero or -D was given (show_slot_name).
    slot = f"{d.domain:04x}:{d.slot}" if d.domain or domains else d.slot
    cls = namer.cls(d.cls)
    vendor, device = namer.vendor(d.vendor), namer.device(d.vendor, d.device)
    sv = sd = ""
    if d.subsys is not None and _has_subsys(d):
        sv = namer.vendor(d.subsys[0], unknown="Unknown vendor")
        sd = namer.subsys_device(d.vendor, d.device, d.subsys[0], d.subsys[1])
    if verbose:
        lines = [("Slot" if level >= 2 else "Device", slot), ("Class", cls), ("Vendor", vendor),
                 ("Device", device)]
        if sv:
            lines += [("SVendor", sv), ("SDevice", sd)]
        if d.rev:
            lines.append(("Rev", f"{d.rev:02x}"))
        lines.append(("ProgIf", f"{d.prog_if:02x}"))
        return "".join(f"{tag}:\t{value}\n" for tag, value in lines)
    text = slot + _quoted(cls) + _quoted(vendor) + _quoted(device)
    if d.rev:
        text += f" -r{d.rev:02x}"
    text += f" -p{d.prog_if:02x}"
    text += _quoted(sv) + _quoted(sd) if sv else ' "" ""'
    return text + "\n"
