"""The migration destination: a second vfiolab instance in its own process (``python -m
vfiolab.scenarios.destination --fd N``), with its own physical memory, IOMMU, iommufd, vfio-pci devices and
VMM, fed by the source over the socket ``N``.

It builds the machine the HELLO message describes, opens every device's resuming session (RUNNING ->
RESUMING), stores guest pages and writes device data into the resuming data fds as they arrive, and on
COMPLETE loads the devices (RESUMING -> STOP).  It then reports what it has — page fingerprints, RAM
SHA-256, each device's saved state hash — and on CONTINUE restores config and interrupts the way QEMU
does after loading a device (Command register, VFIO_DEVICE_SET_IRQS), runs the devices (-> RUNNING) and
uses them once more: a testdev DMA with its MSI-X interrupt, edu's factorial with MSI and an edu DMA copy.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import socket
import sys
from typing import Any

import numpy as np

from vfiolab.errors import UapiError, VfiolabError
from vfiolab.scenarios.drivers import EduDriver, TestDevDriver
from vfiolab.scenarios.machine import DEVICE_ORDER, MIB, Machine
from vfiolab.scenarios.vmm import Vmm
from vfiolab.scenarios.wire import Channel, Msg, parse_device, parse_json, parse_pages
from vfiolab.vfio.migration import MigrationFile, MigState


class Destination:
    """One incoming migration over ``chan``."""

    def __init__(self, chan: Channel) -> None:
        self.chan = chan
        self.machine: Machine | None = None
        self.vmm: Vmm | None = None
        self.files: dict[str, MigrationFile] = {}
        self.drivers: list[TestDevDriver | EduDriver] = []

    def serve(self) -> None:
        """The whole exchange, HELLO to BYE."""
        hello, _ = parse_json(self.chan.expect(Msg.HELLO))
        ram_mib, iommu = hello.get("ram_mib"), hello.get("iommu")
        if not isinstance(ram_mib, int) or not isinstance(iommu, str) or hello.get("devices") != list(DEVICE_ORDER):
            raise VfiolabError(f"HELLO describes a machine this destination cannot build: {hello}")
        self.machine = machine = Machine(ram_mib * MIB, iommu)
        self.vmm = vmm = Vmm(machine, dirty_tracking=False)
        for name in DEVICE_ORDER:
            f = vmm.set_mig_state(name, MigState.RESUMING)
            if f is None:
                raise VfiolabError(f"{name}: RESUMING opened no data fd")
            self.files[name] = f
        self.chan.send_json(Msg.READY, {
            "pid": os.getpid(),
            "devices": {n: {"bdf": machine.vfio[n].pci_name, "devid": vmm.devids[n],
                            "state": vmm.mig_state(n).name} for n in DEVICE_ORDER},
            "ioas": vmm.ioas, "hwpt": vmm.hwpt})
        received = self._receive()
        self.chan.send_json(Msg.VERIFY, self._load(received), vmm.ram.fingerprints().astype("<u8").tobytes())
        request, _ = parse_json(self.chan.expect(Msg.CONTINUE))
        self.chan.send_json(Msg.RESULT, self._continue(request))
        self.chan.expect(Msg.BYE)

    def _receive(self) -> dict[str, Any]:
        """RAM and DEVICE messages until COMPLETE."""
        assert self.vmm is not None
        ram = self.vmm.ram
        pages = 0
        device_bytes = dict.fromkeys(DEVICE_ORDER, 0)
        while True:
            kind, payload = self.chan.recv()
            if kind == Msg.RAM:
                index, data = parse_pages(payload, ram.npages)
                ram.write(index, data)
                pages += len(index)
            elif kind == Msg.DEVICE:
                dev, chunk = parse_device(payload, len(DEVICE_ORDER))
                name = DEVICE_ORDER[dev]
                self.files[name].write(chunk)
                device_bytes[name] += len(chunk)
            elif kind == Msg.COMPLETE:
                return {"pages_received": pages, "device_bytes": device_bytes}
            elif kind == Msg.ERROR:
                raise VfiolabError(f"source failed: {parse_json(payload)[0].get('error', '?')}")
            else:
                raise VfiolabError(f"unexpected {kind.name} during the migration stream")

    def _load(self, record: dict[str, Any]) -> dict[str, Any]:
        """RESUMING -> STOP for every device (the driver validates and loads the stream), then what the
        source compares: device state hashes and the RAM hash."""
        assert self.vmm is not None and self.machine is not None
        for name in DEVICE_ORDER:
            self.vmm.set_mig_state(name, MigState.STOP)
        devices = self.machine.devices
        record["device_state_sha256"] = {n: hashlib.sha256(devices[n].save_state()).hexdigest()
                                         for n in DEVICE_ORDER}
        record["device_state"] = {n: self.vmm.mig_state(n).name for n in DEVICE_ORDER}
        record["ram_sha256"] = self.vmm.ram.sha256()
        return record

    def _continue(self, request: dict[str, Any]) -> dict[str, Any]:
        """Restore config and interrupts, run the devices and use them."""
        assert self.vmm is not None
        vmm = self.vmm
        td = TestDevDriver(vmm.files["testdev"], "testdev")
        edu = EduDriver(vmm.files["edu"], "edu")
        self.drivers = [td, edu]
        for drv in self.drivers:
            drv.enable()
            drv.setup_irq()
        for name in DEVICE_ORDER:
            vmm.set_mig_state(name, MigState.RUNNING)
        iova, n, seed = int(request["iova"]), int(request["length"]), int(request["seed"])
        data = np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8)
        td.write_memory(iova, data)
        page = iova // 4096
        span = vmm.ram.read(np.arange(page, (iova + n - 1) // 4096 + 1)).reshape(-1)
        dma_ok = bool(np.array_equal(span[iova % 4096:iova % 4096 + n], data))
        fact = edu.factorial(10)
        edu.copy(iova, int(request["copy_to"]), min(n, 4096))
        copied = vmm.ram.read(np.array([int(request["copy_to"]) // 4096])).reshape(-1)[:min(n, 4096)]
        return {
            "states": {n_: vmm.mig_state(n_).name for n_ in DEVICE_ORDER},
            "testdev": {"dma_write_bytes": n, "dma_ok": dma_ok, "operations": td.ops, "interrupts": td.interrupts},
            "edu": {"factorial_10": fact, "copy_ok": bool(np.array_equal(copied, data[:len(copied)])),
                    "operations": edu.ops, "interrupts": edu.interrupts},
        }

    def close(self) -> None:
        for drv in self.drivers:
            drv.close()
        if self.vmm is not None:
            self.vmm.close()
        if self.machine is not None:
            self.machine.close()


def main(argv: list[str] | None = None) -> int:
    """Serve one migration on the inherited socket ``--fd``; 0 on success, 1 after reporting an error."""
    ap = argparse.ArgumentParser(prog="python -m vfiolab.scenarios.destination",
                                 description="vfiolab migration destination (started by `vfiolab run`)")
    ap.add_argument("--fd", type=int, required=True, help="connected stream socket to the source")
    args = ap.parse_args(argv)
    try:
        sock = socket.socket(fileno=args.fd)
    except OSError as e:
        print(f"vfiolab destination: fd {args.fd}: {e.strerror}", file=sys.stderr)
        return 1
    chan = Channel(sock)
    dest = Destination(chan)
    try:
        dest.serve()
    except (VfiolabError, UapiError) as e:
        chan.send_error(str(e))
        return 1
    finally:
        dest.close()
        chan.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
