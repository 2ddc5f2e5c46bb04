"""``vfiolab serve``: emulated devices over vfio-user, one UNIX socket per device (DIR/NAME.sock).

Devices are named ``[NAME=]KIND``: ``edu`` (QEMU's edu), ``testdev`` (vfiolab's DMA engine with MSI-X), or
with ``--platform`` a PCI address of that machine (``0000:03:00.0``), served as a config-space-only device
after Linux-style enumeration.  QEMU 11.1 attaches with ``-device vfio-user-pci,socket=DIR/NAME.sock``.
SIGINT / SIGTERM close every connection and remove the sockets.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import sys
from types import FrameType
from typing import TYPE_CHECKING

import click

from vfiolab.errors import VfiolabError

if TYPE_CHECKING:
    from vfiolab.devices import Device

KINDS = ("edu", "testdev")
_NAME = re.compile(r"^[A-Za-z0-9_.:-]+$")
_BDF = re.compile(r"^(?:([0-9a-fA-F]{1,4}):)?([0-9a-fA-F]{1,2}):([0-9a-fA-F]{1,2})\.([0-7])$")


def _parse(spec: str) -> tuple[str, str]:
    """``[NAME=]KIND`` -> (name, kind); the name defaults to the kind (a PCI address: its canonical form)."""
    name, _, kind = spec.rpartition("=")
    m = _BDF.match(kind)
    if m:
        seg, bus, dev, fn = m.groups()
        kind = f"{int(seg or '0', 16):04x}:{int(bus, 16):02x}:{int(dev, 16):02x}.{fn}"
    elif kind not in KINDS:
        raise VfiolabError(f"--device {spec!r}: unknown device {kind!r} (known: {', '.join(KINDS)}, "
                           "or a PCI address of --platform)")
    name = name or kind
    if not _NAME.match(name):
        raise VfiolabError(f"--device {spec!r}: the name {name!r} must be letters, digits, '_', '.', ':', '-'")
    return name, kind


@click.command("serve")
@click.option("--platform", "platform_file", type=click.Path(exists=True, dir_okay=False),
              help="Platform YAML whose functions may be served by PCI address.")
@click.option("--device", "devices", multiple=True, metavar="[NAME=]KIND",
              help="A device to serve (repeatable): edu, testdev or a PCI address.  Default: edu and testdev.")
@click.option("--socket-dir", required=True, type=click.Path(file_okay=False),
              help="Directory for the sockets (created if missing).")
@click.option("--max-data-xfer-size", default=1 << 20, show_default=True, type=click.IntRange(4096, 64 << 20),
              help="Largest data a message may carry (offered in VERSION).")
@click.option("--no-twin-socket", is_flag=True, help="Do not offer a twin socket to clients that ask.")
@click.option("--json", "as_json", is_flag=True, help='Print {"sockets": {NAME: PATH}} when ready.')
@click.option("-v", "--verbose", count=True, help="-v: every message (DEBUG log on stderr).")
def serve(platform_file: str | None, devices: tuple[str, ...], socket_dir: str, max_data_xfer_size: int,
          no_twin_socket: bool, as_json: bool, verbose: int) -> None:
    """Serve emulated PCI devices to vfio-user clients (QEMU's vfio-user-pci, libvfio-user's client)."""
    from vfiolab.vfio_user.server import Server, ServerOptions

    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(threadName)s %(levelname)s %(message)s")
    specs = [_parse(d) for d in (devices or KINDS)]
    names = [n for n, _ in specs]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise VfiolabError(f"--device: the name {min(dup)!r} is used twice (give NAME=KIND)")
    made = _make_devices(specs, platform_file)
    os.makedirs(socket_dir, exist_ok=True)
    server = Server(ServerOptions(max_data_xfer_size=max_data_xfer_size, twin_socket=not no_twin_socket))
    try:
        sockets = {name: server.add(dev, os.path.join(socket_dir, f"{name}.sock"), name).path
                   for name, dev in made}
        if as_json:
            click.echo(json.dumps({"sockets": sockets}))
        else:
            for name, path in sockets.items():
                click.echo(f"{name}: {path}")
        sys.stdout.flush()

        def stop(signum: int, frame: FrameType | None) -> None:
            server.stop()

        old = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            server.serve_forever()
        finally:
            for s, h in old.items():
                signal.signal(s, h)
    finally:
        server.close()
        for _, dev in made:
            dev.close()


def _make_devices(specs: list[tuple[str, str]], platform_file: str | None) -> list[tuple[str, Device]]:
    """The device objects for ``specs`` (a platform is booted once, if any address is asked for)."""
    from vfiolab.devices import Edu, PassiveDevice, TestDev

    machine = None
    out: list[tuple[str, Device]] = []
    for name, kind in specs:
        if kind == "edu":
            out.append((name, Edu(name)))
        elif kind == "testdev":
            out.append((name, TestDev(name)))
        else:
            if platform_file is None:
                raise VfiolabError(f"--device {kind}: a PCI address needs --platform")
            if machine is None:
                from vfiolab.platform import Platform
                machine = Platform.load(platform_file).boot()
            seg, rest = kind.split(":", 1)
            bus, devfn = rest.split(":")
            dev, fn = devfn.split(".")
            func = machine.topology.find(int(seg, 16), int(bus, 16), int(dev, 16) << 3 | int(fn))
            if func is None:
                raise VfiolabError(f"--device {kind}: no such function in {platform_file}")
            if func.header_type != 0:
                raise VfiolabError(f"--device {kind}: a bridge cannot be served (type 1 header)")
            out.append((name, PassiveDevice(func, name)))
    return out


__all__ = ["serve"]
