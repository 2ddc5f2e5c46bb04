"""``live-migration``: the VFIO end-to-end scenario.  Two vfiolab instances — this process (the source)
and a destination process started from the same package — each with its own memory, IOMMU, iommufd,
vfio-pci devices and VMM, connected by a socket.

1. Source: edu and testdev behind a VT-d unit, bound to vfio-pci; the VMM opens their cdevs, binds them
   to an iommufd, attaches both to one HWPT allocated with dirty tracking and maps guest RAM at IOVA 0;
   interrupts go to real eventfds (VFIO_DEVICE_SET_IRQS: edu MSI, testdev MSI-X).
2. The devices DMA through the IOMMU: edu computes a factorial and copies memory, testdev writes and
   reads guest memory, each completion signalled by an interrupt the VMM reads from its eventfd; a DMA
   to an unmapped IOVA is refused by the IOMMU.
3. Live migration while testdev and edu keep writing guest memory by DMA: IOMMU dirty tracking
   (IOMMU_HWPT_SET_DIRTY_TRACKING / GET_DIRTY_BITMAP) and device DMA logging
   (VFIO_DEVICE_FEATURE_DMA_LOGGING_START / REPORT) both on; round 0 sends all of RAM, later rounds the
   pages the trackers report, with testdev's PRE_COPY data (VFIO_MIG_GET_PRECOPY_INFO, reads of its data
   fd) after each round; once a round's dirty pages fall to ``converge_pages`` (or after ``max_rounds``)
   the devices go RUNNING_P2P/PRE_COPY_P2P then STOP_COPY, the last dirty pages and the STOP_COPY streams
   go out, and the destination loads its devices (RESUMING -> STOP).
4. Verification: page fingerprints of both RAMs compared page by page (``N lost pages``), whole-RAM
   SHA-256, each device's saved state after stop hashed on both sides; then the devices run on the
   destination (-> RUNNING) and do one more DMA with an interrupt each.

The workload's own record of the pages it wrote is the oracle for the trackers: DMA logging should report
exactly those pages, the IOMMU at least those; a difference is reported (on AMD v1 tables Linux 7.2's
IOMMU bitmap does leave pages out), and the run fails only on what matters: lost pages, a device state
that differs, or devices that do not continue.  ``break_transfer`` deliberately breaks the transfer
(``skip-harvest``: no dirty bitmap is ever read; ``skip-final``: the stop-and-copy harvest is skipped) to
show that lost pages are detected and fail the run.
"""

from __future__ import annotations

import errno
import hashlib
import os
import socket
import subprocess
import sys
import time
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from vfiolab.devices import testdev as T
from vfiolab.devices.edu import DEFAULT_DMA_MASK, DMA_SIZE
from vfiolab.errors import UapiError, VfiolabError
from vfiolab.scenarios.drivers import EduDriver, TestDevDriver
from vfiolab.scenarios.machine import DEVICE_ORDER, MIB, Machine
from vfiolab.scenarios.runner import Log, Param, Scenario, ScenarioResult
from vfiolab.scenarios.vmm import Vmm
from vfiolab.scenarios.wire import PAGE, Channel, Msg, parse_json
from vfiolab.vfio.migration import MigrationFile, MigState, mig_path

NAME: Final = "live-migration"
PARAMS: Final = (
    Param("ram_mib", 128, "guest RAM in MiB", 16, 1024),
    Param("seed", 1, "seed of the workload (DMA targets, lengths, data)", 0, 2**32 - 1),
    Param("max_rounds", 8, "pre-copy rounds after the first full copy, at most", 1, 30),
    Param("converge_pages", 64, "stop and copy once a round has this many dirty pages or fewer", 0, 1 << 20),
    Param("dma_every", 256, "pages sent per device DMA tick while migrating (lower: dirtier guest)", 16, 8192),
    Param("trackers", "both", "dirty trackers harvested", choices=("both", "iommu", "dma-log")),
    Param("iommu", "intel", "IOMMU of both machines (amd: Linux 7.2 reports a dirty contiguous 16 KiB entry one "
          "page short, so trackers=iommu loses pages there)", choices=("intel", "amd")),
    Param("break_transfer", "none", "break the transfer on purpose, to show lost pages are caught",
          choices=("none", "skip-harvest", "skip-final")),
)
FAULT_IOVA: Final = 0x4000_0000
"""An IOVA no guest RAM is mapped at (RAM is at most 1 GiB at IOVA 0)."""
EDU_LIMIT: Final = DEFAULT_DMA_MASK + 1
"""edu masks DMA addresses to 28 bits: its targets stay below 256 MiB."""
_DEST_TIMEOUT: Final = 120.0


class _Failure(Exception):
    """A check that failed (the run continues to report, then fails)."""


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _pages_of(iova: int, n: int) -> slice:
    return slice(iova // PAGE, (iova + n - 1) // PAGE + 1)


# ---------------------------------------------------------------------- the guest's workload
class Workload:
    """The guest keeps its devices busy: each tick testdev DMA-writes fresh random bytes somewhere in
    guest RAM (from a random place in its buffer); every third tick edu copies up to 4 KiB from one
    place to another; every eighth tick testdev also reads memory into its buffer (its state changes
    without dirtying RAM).  :attr:`written` records the pages written since the last harvest."""

    def __init__(self, rng: np.random.Generator, testdev: TestDevDriver, edu: EduDriver, ram_bytes: int) -> None:
        self.rng, self.testdev, self.edu = rng, testdev, edu
        self.ram_bytes = ram_bytes
        self.edu_limit = min(ram_bytes, EDU_LIMIT)
        self.written = np.zeros(ram_bytes // PAGE, dtype=bool)
        self.ticks = 0
        self.dma_writes = 0

    def tick(self) -> int:
        """One slice of guest activity; the number of DMA writes it made."""
        rng = self.rng
        self.ticks += 1
        n = int(rng.integers(1, 4 * PAGE + 1))
        iova = int(rng.integers(0, self.ram_bytes - n + 1))
        buf_off = int(rng.integers(0, T.BUF_SIZE - n + 1))
        self.testdev.write_memory(iova, rng.integers(0, 256, n, dtype=np.uint8), buf_off)
        self.written[_pages_of(iova, n)] = True
        writes = 1
        if self.ticks % 3 == 0:
            k = int(rng.integers(1, DMA_SIZE + 1))
            src, dst = (int(x) for x in rng.integers(0, self.edu_limit - k + 1, 2))
            self.edu.copy(src, dst, k)
            self.written[_pages_of(dst, k)] = True
            writes += 1
        if self.ticks % 8 == 0:
            k = int(rng.integers(1, PAGE + 1))
            self.testdev.read_memory(int(rng.integers(0, self.ram_bytes - k + 1)), k,
                                     int(rng.integers(0, T.BUF_SIZE - k + 1)))
        self.dma_writes += writes
        return writes


# ---------------------------------------------------------------------- the source
class Source:
    """The source instance and the migration it drives."""

    def __init__(self, params: dict[str, Any], log: Log) -> None:
        self.p, self.log = params, log
        self.rec: dict[str, Any] = {"params": dict(params)}
        self.machine = Machine(params["ram_mib"] * MIB, params["iommu"])
        self.vmm = Vmm(self.machine, dirty_tracking=True)
        self.testdev = TestDevDriver(self.vmm.files["testdev"], "testdev")
        self.edu = EduDriver(self.vmm.files["edu"], "edu")
        self.rng = np.random.default_rng(params["seed"])
        self.work = Workload(self.rng, self.testdev, self.edu, self.machine.ram_bytes)
        self.proc: subprocess.Popen[bytes] | None = None
        self.chan: Channel | None = None
        self.credit = 0
        self.misses = {"iommu": 0, "dma_log": 0}
        self.failures: list[str] = []

    # ------------------------------------------------------------------ 1. set-up
    def setup(self) -> None:
        vmm, m = self.vmm, self.machine
        for drv in (self.testdev, self.edu):
            drv.enable()
            drv.setup_irq()
        self.testdev.init_device()
        vmm.ram.fill_pattern(self.p["seed"])
        devices = {n: {"bdf": m.vfio[n].pci_name, "devid": vmm.devids[n],
                       "migration_flags": _mig_flags(getattr(m.vfio[n].mig, "flags", 0))}
                   for n in DEVICE_ORDER}
        self.rec["source"] = {"pid": os.getpid(), "iommu": m.unit.name, "devices": devices, "ioas": vmm.ioas,
                              "hwpt": vmm.hwpt, "ram_bytes": m.ram_bytes, "ram_iova": 0}
        self.log(f"== live-migration: source pid {os.getpid()}, {self.p['ram_mib']} MiB guest RAM, "
                 f"an {self.p['iommu']} IOMMU in each instance")
        self.log("source: " + ", ".join(f"{n} {d['bdf']} devid {d['devid']}" for n, d in devices.items())
                 + f" bound to iommufd; IOAS {vmm.ioas}, HWPT {vmm.hwpt} (dirty tracking), guest RAM at IOVA 0")
        self.log("source: interrupts on eventfds via VFIO_DEVICE_SET_IRQS: edu MSI, testdev MSI-X vector 0")

    # ------------------------------------------------------------------ 2. DMA through the IOMMU
    def dma_demo(self) -> None:
        ram, rng = self.vmm.ram, self.rng
        edu, td = self.edu, self.testdev
        fact = edu.factorial(12)
        if fact != 479001600:
            self._fail(f"edu computed 12! = {fact}")
        src, dst = 0x10_0000, 0x20_0000
        edu.copy(src, dst, DMA_SIZE)
        if not np.array_equal(ram.read(np.array([src // PAGE])), ram.read(np.array([dst // PAGE]))):
            self._fail("edu's DMA copy did not arrive in guest RAM")
        blocks = 8
        for _ in range(blocks):
            n = int(rng.integers(1, 3 * PAGE))
            iova = int(rng.integers(0, self.machine.ram_bytes - n))
            data = rng.integers(0, 256, n, dtype=np.uint8)
            td.write_memory(iova, data)
            span = ram.read(np.arange(iova // PAGE, (iova + n - 1) // PAGE + 1)).reshape(-1)
            back = td.read_memory(iova, n, buf_off=T.BUF_SIZE - n)
            if not (np.array_equal(span[iova % PAGE:iova % PAGE + n], data) and back == data.tobytes()):
                self._fail(f"testdev DMA of {n} bytes at {iova:#x} did not round-trip")
        fault = None
        try:
            td.write_memory(FAULT_IOVA, b"\xff" * 64)
        except VfiolabError as e:
            fault = str(e)
        if fault is None:
            self._fail(f"testdev DMA to unmapped IOVA {FAULT_IOVA:#x} was not refused")
        self.rec["dma"] = {
            "edu": {"factorial_12": fact, "copy": {"src": src, "dst": dst, "bytes": DMA_SIZE},
                    "operations": edu.ops, "interrupts": edu.interrupts},
            "testdev": {"writes": blocks, "reads": blocks, "operations": td.ops, "interrupts": td.interrupts},
            "iommu_fault": {"iova": FAULT_IOVA, "refused": fault is not None, "message": fault},
        }
        self.log(f"DMA through the IOMMU: edu 12! = {fact} and a 4 KiB copy {src:#x} -> {dst:#x} "
                 f"(MSI interrupts {edu.interrupts}/{edu.ops}); testdev {blocks} writes + {blocks} reads "
                 f"round-tripped (MSI-X interrupts {td.interrupts}/{td.ops})")
        self.log(f"DMA to unmapped IOVA {FAULT_IOVA:#x} refused: {fault}")

    # ------------------------------------------------------------------ the destination process
    def start_destination(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            cmd = [sys.executable, "-m", "vfiolab.scenarios.destination", "--fd", str(theirs.fileno())]
            self.proc = subprocess.Popen(cmd, pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
        except OSError as e:
            ours.close()
            raise VfiolabError(f"cannot start the destination process: {e}") from None
        finally:
            theirs.close()
        self.chan = chan = Channel(ours, _DEST_TIMEOUT)
        chan.send_json(Msg.HELLO, {"ram_mib": self.p["ram_mib"], "iommu": self.p["iommu"],
                                   "devices": list(DEVICE_ORDER)})
        ready, _ = parse_json(chan.expect(Msg.READY))
        self.rec["destination"] = {"pid": self.proc.pid, "command": " ".join(cmd[1:3]), **ready}
        states = ", ".join(f"{n} {d['state']}" for n, d in ready["devices"].items())
        self.log(f"destination: pid {ready['pid']} (python -m vfiolab.scenarios.destination) over a socketpair; "
                 f"own memory, IOMMU, iommufd (IOAS {ready['ioas']}, HWPT {ready['hwpt']}); {states}")

    # ------------------------------------------------------------------ 3. migration
    def _send(self, index: npt.NDArray[np.int64], guest_running: bool = True) -> int:
        """Send pages ``index`` in chunks of ``dma_every``; a running guest DMA-writes while they go
        out.  Returns the DMA writes made meanwhile."""
        assert self.chan is not None
        step = self.p["dma_every"]
        writes = 0
        for lo in range(0, len(index), step):
            part = index[lo:lo + step]
            self.chan.send_pages(part, self.vmm.ram.read(part))
            self.credit += len(part) if guest_running else 0
            while self.credit >= step:
                self.credit -= step
                writes += self.work.tick()
        return writes

    def _harvest(self) -> tuple[npt.NDArray[np.bool_], int | None, int | None]:
        """Read and clear the dirty trackers: (pages to send, IOMMU count, DMA-log count); each is
        checked against the pages the workload wrote."""
        npages = self.vmm.ram.npages
        written = self.work.written.copy()
        self.work.written[:] = False
        if self.p["break_transfer"] == "skip-harvest":
            return np.zeros(npages, dtype=bool), None, None
        dirty = np.zeros(npages, dtype=bool)
        n_iommu = n_log = None
        if self.p["trackers"] in ("both", "iommu"):
            bits = self.vmm.harvest_iommu()
            self.misses["iommu"] += int(np.count_nonzero(written & ~bits))
            n_iommu = int(np.count_nonzero(bits))
            dirty |= bits
        if self.p["trackers"] in ("both", "dma-log"):
            bits = np.zeros(npages, dtype=bool)
            for name in DEVICE_ORDER:
                bits |= self.vmm.harvest_dma_log(name)
            self.misses["dma_log"] += int(np.count_nonzero(written != bits))  # exact: the device's own writes
            n_log = int(np.count_nonzero(bits))
            dirty |= bits
        return dirty, n_iommu, n_log

    def _drain(self, name: str, until_eof: bool) -> int:
        """Read device ``name``'s data fd (to ENOMSG in pre-copy, to end of stream in STOP_COPY) and
        send it; the bytes sent."""
        assert self.chan is not None
        f: MigrationFile = self.vmm.data_files[name]
        total = 0
        while True:
            try:
                chunk = f.read(1 << 20)
            except UapiError as e:
                if e.errno == errno.ENOMSG and not until_eof:
                    return total
                raise
            if not chunk:
                return total
            self.chan.send_device(DEVICE_ORDER.index(name), chunk)
            total += len(chunk)

    def migrate(self) -> None:
        vmm, p = self.vmm, self.p
        use_iommu = p["trackers"] in ("both", "iommu")
        use_log = p["trackers"] in ("both", "dma-log")
        if use_iommu:
            vmm.iommu_dirty_tracking(True)
            vmm.harvest_iommu()  # start from a clean bitmap
        if use_log:
            for name in DEVICE_ORDER:
                vmm.dma_logging_start(name)
        self.work.written[:] = False
        on = [x for x, used in (("IOMMU dirty tracking (HWPT)", use_iommu),
                                ("DMA logging (testdev, edu; 4 KiB pages)", use_log)) if used]
        broken = "" if p["break_transfer"] == "none" else f"; transfer deliberately broken: {p['break_transfer']}"
        vmm.set_mig_state("testdev", MigState.PRE_COPY)
        self.log(f"migration: {' + '.join(on)} on; testdev RUNNING -> PRE_COPY (data fd), edu stays RUNNING "
                 f"(no PRE_COPY){broken}")
        # QEMU migration/ram.c: the first pass sends every page, each later pass the pages the dirty sync
        # collected (hw/vfio/container-base.c: IOMMU_HWPT_GET_DIRTY_BITMAP, or DMA_LOGGING_REPORT per
        # device when the device tracks itself), until what is left fits the downtime
        rounds: list[dict[str, Any]] = []
        self.rec["rounds"] = rounds
        npages = vmm.ram.npages
        pending = np.ones(npages, dtype=bool)
        n_iommu = n_log = None
        for r in range(p["max_rounds"] + 1):
            if r:
                rounds[-1]["dma_writes"] += self.work.tick()  # the guest runs while the VMM syncs the bitmaps
                dirty, n_iommu, n_log = self._harvest()
                pending = dirty
                if int(np.count_nonzero(dirty)) <= p["converge_pages"] or r == p["max_rounds"]:
                    break
            index = np.flatnonzero(pending)
            writes = self._send(index)
            info = vmm.data_files["testdev"].precopy_info()
            dev_bytes = self._drain("testdev", until_eof=False)
            rounds.append({"round": r, "pages_sent": len(index), "bytes": len(index) * PAGE,
                           "dirty_iommu": n_iommu, "dirty_dma_log": n_log, "dma_writes": writes,
                           "precopy_info": {"initial_bytes": info.initial_bytes, "dirty_bytes": info.dirty_bytes},
                           "device_precopy_bytes": {"testdev": dev_bytes}})
        self.log("pre-copy rounds (dirty: pages each tracker reported before the round; DMA writes: device "
                 "writes while it was sent)")
        self.log(f"{'round':>5} {'pages sent':>11} {'MiB':>7} {'dirty iommu':>12} {'dirty dma-log':>14} "
                 f"{'testdev pre-copy':>17} {'DMA writes':>11}")
        for rd in rounds:
            self.log(f"{rd['round']:>5} {rd['pages_sent']:>11} {rd['bytes'] / MIB:>7.1f} "
                     f"{_opt(rd['dirty_iommu']):>12} {_opt(rd['dirty_dma_log']):>14} "
                     f"{rd['device_precopy_bytes']['testdev']:>15,} B {rd['dma_writes']:>11}")
        self.stop_and_copy(pending)

    def stop_and_copy(self, pending: npt.NDArray[np.bool_]) -> None:
        vmm, p = self.vmm, self.p
        last_writes = self.work.tick()  # the guest runs until the VMM stops it
        paths: dict[str, list[str]] = {}
        # QEMU hw/vfio/migration.c vfio_vmstate_change_prepare(): every device to a P2P state first (no
        # device may still start peer-to-peer DMA), then vfio_vmstate_change(): each to STOP_COPY
        for name, p2p in (("testdev", MigState.PRE_COPY_P2P), ("edu", MigState.RUNNING_P2P)):
            mig = self.machine.vfio[name].mig
            assert mig is not None
            paths[name] = [s.name for s in mig_path(mig.flags, vmm.mig_state(name), p2p)]
            vmm.set_mig_state(name, p2p)
        sizes = {n: vmm.data_size(n) for n in DEVICE_ORDER}
        for name in DEVICE_ORDER:
            mig = self.machine.vfio[name].mig
            assert mig is not None
            paths[name] += [s.name for s in mig_path(mig.flags, vmm.mig_state(name), MigState.STOP_COPY)[1:]]
            vmm.set_mig_state(name, MigState.STOP_COPY)
        if p["break_transfer"] == "skip-final":
            final, f_iommu, f_log = np.zeros_like(pending), None, None
            self.work.written[:] = False
        else:
            final, f_iommu, f_log = self._harvest()
        index = np.flatnonzero(pending | final)
        self._send(index, guest_running=False)
        dev_bytes = {n: self._drain(n, until_eof=True) for n in DEVICE_ORDER}
        if p["trackers"] in ("both", "dma-log"):
            for name in DEVICE_ORDER:
                vmm.dma_logging_stop(name)
        if p["trackers"] in ("both", "iommu"):
            vmm.iommu_dirty_tracking(False)
        self.rec["stop_copy"] = {
            "paths": paths, "mig_data_size": sizes, "pages_sent": len(index), "bytes": len(index) * PAGE,
            "pending_from_last_round": int(np.count_nonzero(pending)), "dma_writes_before_stop": last_writes,
            "dirty_iommu": f_iommu,
            "dirty_dma_log": f_log, "device_bytes": dev_bytes,
            "states": {n: vmm.mig_state(n).name for n in DEVICE_ORDER},
        }
        for name in DEVICE_ORDER:
            self.log(f"stop-copy: {name} {' -> '.join(paths[name])}")
        self.log(f"stop-copy: {len(index)} pages ({int(np.count_nonzero(pending))} left from the last round, "
                 f"final harvest iommu {_opt(f_iommu)} / dma-log {_opt(f_log)}); device state "
                 + ", ".join(f"{n} {b:,} bytes (MIG_DATA_SIZE {sizes[n]:,})" for n, b in dev_bytes.items()))

    # ------------------------------------------------------------------ 4. verification
    def verify(self) -> None:
        assert self.chan is not None
        vmm, m = self.vmm, self.machine
        src_state = {n: _sha(m.devices[n].save_state()) for n in DEVICE_ORDER}
        src_fp = vmm.ram.fingerprints()
        src_sha = vmm.ram.sha256()
        self.chan.send_json(Msg.COMPLETE, {"pages": vmm.ram.npages})
        dest, tail = parse_json(self.chan.expect(Msg.VERIFY))
        dst_fp = np.frombuffer(tail, dtype="<u8")
        if len(dst_fp) != len(src_fp):
            raise VfiolabError(f"destination reported {len(dst_fp)} page fingerprints for {len(src_fp)} pages")
        lost_idx = np.flatnonzero(src_fp != dst_fp)
        lost = len(lost_idx)
        dev = {n: {"source": src_state[n], "destination": dest["device_state_sha256"].get(n),
                   "equal": src_state[n] == dest["device_state_sha256"].get(n)} for n in DEVICE_ORDER}
        self.rec["verification"] = {
            "pages_compared": len(src_fp), "lost_pages": lost, "lost_page_numbers": lost_idx[:32].tolist(),
            "ram_sha256": {"source": src_sha, "destination": dest["ram_sha256"]},
            "ram_equal": src_sha == dest["ram_sha256"], "device_state": dev,
            "destination_states": dest["device_state"], "tracker_misses": dict(self.misses),
            "pages_received": dest["pages_received"], "device_bytes_received": dest["device_bytes"],
        }
        self.log(f"verify: {len(src_fp)} pages compared page by page (fingerprints): {lost} lost pages; "
                 f"RAM SHA-256 {'equal' if src_sha == dest['ram_sha256'] else 'DIFFERS'} ({src_sha[:16]}...)")
        self.log("verify: device state after stop (save_state, SHA-256): "
                 + ", ".join(f"{n} {'equal' if d['equal'] else 'DIFFERS'} ({d['source'][:16]}...)"
                             for n, d in dev.items()))
        if self.misses["iommu"]:
            why = (": generic_pt's record_dirty() (iommu_pt.h) reports a contiguous AMD v1 entry one 4 KiB item "
                   "short" if self.p["iommu"] == "amd" else "")
            self.log(f"note: the IOMMU dirty bitmap left out {self.misses['iommu']} page(s) the devices wrote{why}")
        if self.misses["dma_log"]:
            self.log(f"note: DMA logging differed from the pages the devices wrote on {self.misses['dma_log']} page(s)")
        if lost:
            first = ", ".join(str(int(i)) for i in lost_idx[:8])
            self._fail(f"{lost} lost pages (first: {first})")
        if src_sha != dest["ram_sha256"] and not lost:
            self._fail("RAM SHA-256 differs although every page fingerprint matched")
        for n, d in dev.items():
            if not d["equal"]:
                self._fail(f"{n}: device state differs after migration")

    def continue_on_destination(self) -> None:
        assert self.chan is not None
        edu_pages = min(self.machine.ram_bytes, EDU_LIMIT) // PAGE  # edu reaches the first 256 MiB
        iova = int(self.rng.integers(0, edu_pages - 1)) * PAGE + 0x80
        copy_to = int(self.rng.integers(0, edu_pages)) * PAGE
        self.chan.send_json(Msg.CONTINUE, {"iova": iova, "length": 0x800, "copy_to": copy_to,
                                           "seed": int(self.p["seed"]) + 1})
        res, _ = parse_json(self.chan.expect(Msg.RESULT))
        self.rec["post_migration"] = res
        td, edu = res["testdev"], res["edu"]
        self.log(f"destination: {', '.join(f'{n} {s}' for n, s in res['states'].items())}; testdev DMA write of "
                 f"{td['dma_write_bytes']} bytes at {iova:#x} {'arrived' if td['dma_ok'] else 'FAILED'} "
                 f"(MSI-X interrupts {td['interrupts']}/{td['operations']}); edu 10! = {edu['factorial_10']}, "
                 f"DMA copy {'ok' if edu['copy_ok'] else 'FAILED'} (MSI interrupts {edu['interrupts']}/{edu['operations']})")
        if not (td["dma_ok"] and td["interrupts"] == td["operations"] == 1):
            self._fail("testdev did not continue on the destination (DMA or interrupt missing)")
        if not (edu["factorial_10"] == 3628800 and edu["copy_ok"] and edu["interrupts"] == edu["operations"] == 3):
            self._fail("edu did not continue on the destination (factorial, copy or interrupts)")

    def finish(self) -> None:
        """BYE, then wait for the destination to exit."""
        if self.chan is not None:
            self.chan.send(Msg.BYE)
        if self.proc is not None:
            try:
                status = self.proc.wait(timeout=_DEST_TIMEOUT)
            except subprocess.TimeoutExpired:
                raise VfiolabError(f"destination pid {self.proc.pid} did not exit") from None
            self.rec["destination"]["exit_status"] = status
            if status:
                self._fail(f"destination exited with status {status}")
        irqs = {"edu": {"operations": self.edu.ops, "interrupts": self.edu.interrupts},
                "testdev": {"operations": self.testdev.ops, "interrupts": self.testdev.interrupts}}
        self.rec["interrupts"] = irqs
        self.rec["workload"] = {"ticks": self.work.ticks, "dma_writes": self.work.dma_writes}
        self.log("source interrupts read from eventfds (delivered/operations): "
                 + ", ".join(f"{n} {v['interrupts']}/{v['operations']}" for n, v in irqs.items()))
        for n, v in irqs.items():
            if v["interrupts"] != v["operations"]:
                self._fail(f"{n}: {v['operations']} completions but {v['interrupts']} interrupts")

    def _fail(self, why: str) -> None:
        self.failures.append(why)

    def close(self) -> None:
        """Tear everything down (also after an error): the destination process is ended if still there."""
        if self.chan is not None:
            self.chan.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.testdev.close()
        self.edu.close()
        self.vmm.close()
        self.machine.close()


def _opt(v: int | None) -> str:
    return "-" if v is None else str(v)


def _mig_flags(flags: int) -> list[str]:
    names = {1: "STOP_COPY", 2: "P2P", 4: "PRE_COPY"}
    return [n for bit, n in names.items() if flags & bit]


def run(params: dict[str, Any], log: Log) -> ScenarioResult:
    """Run the scenario with resolved ``params``, reporting through ``log``."""
    t0 = time.perf_counter()
    src = Source(params, log)
    try:
        try:
            src.setup()
            src.dma_demo()
            src.start_destination()
            src.migrate()
            src.verify()
            src.continue_on_destination()
            src.finish()
        except UapiError as e:
            if src.chan is not None:
                src.chan.send_error(str(e))
            raise VfiolabError(f"{NAME}: uAPI call failed: {e}") from None
        except VfiolabError as e:
            if src.chan is not None:
                src.chan.send_error(str(e))
            raise VfiolabError(f"{NAME}: {e}") from None
    finally:
        src.close()
    rec = src.rec
    rec["elapsed_s"] = round(time.perf_counter() - t0, 3)
    ver = rec["verification"]
    rounds = rec["rounds"]
    ok = not src.failures
    per_round = ", ".join(str(r["pages_sent"]) for r in rounds)
    same = all(d["equal"] for d in ver["device_state"].values())
    trackers = {"both": "IOMMU dirty bitmap + DMA logging", "iommu": "IOMMU dirty bitmap",
                "dma-log": "DMA logging"}[params["trackers"]]
    summary = [
        (f"migrated testdev + edu, {params['ram_mib']} MiB guest RAM, from pid {rec['source']['pid']} to pid "
         f"{rec['destination']['pid']} under device DMA ({rec['workload']['dma_writes']} DMA writes), {trackers}"),
        (f"pre-copy rounds: {len(rounds)}, pages sent per round: {per_round}; "
         f"stop-copy: {rec['stop_copy']['pages_sent']} pages"),
        (f"{ver['lost_pages']} lost pages; device state {'equal' if same else 'DIFFERS'}; devices "
         f"{'continue' if 'post_migration' in rec else 'did not continue'} on the destination"),
    ]
    log(f"{'PASS' if ok else 'FAIL: ' + '; '.join(src.failures)} ({rec['elapsed_s']:.1f} s)")
    return ScenarioResult(NAME, ok, "; ".join(src.failures) or None, summary, rec)


SCENARIO: Final = Scenario(NAME, "live-migrate edu + testdev to a second vfiolab process under DMA, "
                                 "verify 0 lost pages", PARAMS, run)

__all__ = ["NAME", "PARAMS", "SCENARIO", "Source", "Workload", "run"]
