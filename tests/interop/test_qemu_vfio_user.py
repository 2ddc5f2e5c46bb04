"""QEMU 11.1's vfio-user client with a real Linux guest against our server.

One guest (Debian trixie kernel, busybox initramfs with rig/vfio_user_guest/init.sh as /init) boots with
QEMU's built-in ``-device edu`` at 00:04.0, our edu over ``vfio-user-pci`` at 00:05.0 and our testdev (MSI-X,
a RAM BAR) at 00:06.0.  The guest runs the same edu checks on both edus -- identification, liveness,
factorial, INTx seen by the kernel's handler (uio_pci_generic), DMA both ways through reserved guest RAM,
an MSI message stored into guest RAM -- and the two result sets must be identical.  testdev has its own
checks (its RAM BAR through the sparse mmap, DMA, MSI-X messages).  Two boots: guest RAM shared by memfd
(DMA_MAP with fds: the server's DMA goes through the mappings) and private RAM (no fds: DMA goes through
DMA_READ / DMA_WRITE messages).  The server's counters prove which path carried the bytes.

The rig comes from ``make rigs`` (rig/build-qemu-vfio-user.sh); without it this test fails, never skips.
"""

from __future__ import annotations

import collections
import gzip
import io
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from vfiolab.devices import Edu, TestDev
from vfiolab.vfio_user.server import Server

pytestmark = pytest.mark.interop

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "rig" / "build-qemu-vfio-user.sh"
BASE_RIG = REPO / "rig" / "qemu-vfio-user.sh"
INIT = REPO / "rig" / "vfio_user_guest" / "init.sh"
REBUILD = "run `make rigs` (rig/build-qemu-vfio-user.sh builds QEMU 11.1 in a trixie chroot)"
QEMU_EDU, OUR_EDU, OUR_TESTDEV = "00:04.0", "00:05.0", "00:06.0"
BOOT_TIMEOUT = 300


def rig_env() -> dict[str, str]:
    """CHROOT, KERNEL, QEMU_VERSION and MODULES of the built rig (the test fails if it is not built)."""
    r = subprocess.run(["bash", str(BUILD), "env"], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        pytest.fail(f"the QEMU vfio-user rig is missing ({r.stderr.strip()}): {REBUILD}")
    env = {}
    for line in r.stdout.splitlines():
        key, _, value = line.partition("=")
        env[key] = value.replace("\\ ", " ").replace("\\(", "(").replace("\\)", ")")
    for key in ("CHROOT", "KERNEL", "MODULES"):
        if not Path(env.get(key, "")).exists():
            pytest.fail(f"rig file {key}={env.get(key)} is missing: {REBUILD}")
    return env


def cpio_newc(files: dict[str, bytes]) -> bytes:
    """A newc cpio archive of regular files (and the directories leading to them)."""
    out = io.BytesIO()
    dirs = sorted({"/".join(p.split("/")[:i]) for p in files for i in range(1, p.count("/") + 1)})
    entries = [(d, 0o040755, b"") for d in dirs] + [(p, 0o100644, data) for p, data in sorted(files.items())]
    for ino, (name, mode, data) in enumerate([*entries, ("TRAILER!!!", 0, b"")], start=1000):
        raw = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(raw), 0]
        out.write(b"070701" + b"".join(f"{v:08x}".encode() for v in fields) + raw)
        out.write(b"\0" * (-(110 + len(raw)) % 4) + data + b"\0" * (-len(data) % 4))
    return out.getvalue()


def prepare(env: dict[str, str]) -> dict[str, str]:
    """A work directory inside the chroot with the kernel and the initramfs (``WORK``, ``GUEST_WORK``)."""
    work = Path(tempfile.mkdtemp(prefix="vfiolab-vu-", dir=Path(env["CHROOT"]) / "tmp"))
    base = work / "base.gz"
    subprocess.run(["bash", str(BASE_RIG), "initramfs", str(INIT), str(base)], check=True, capture_output=True)
    modules = {f"lib/modules/{m}": (Path(env["MODULES"]) / m).read_bytes() for m in ("uio.ko", "uio_pci_generic.ko")}
    # The kernel unpacks concatenated archives: busybox + /init, then the modules.
    (work / "initrd.gz").write_bytes(base.read_bytes() + gzip.compress(cpio_newc(modules)))
    shutil.copy(env["KERNEL"], work / "vmlinuz")
    return {**env, "WORK": str(work), "GUEST_WORK": "/" + str(work.relative_to(env["CHROOT"]))}


@pytest.fixture(scope="module")
def rig() -> Iterator[dict[str, str]]:
    env = prepare(rig_env())
    yield env
    shutil.rmtree(env["WORK"], ignore_errors=True)


class Boot:
    """One guest boot: its results per slot, the console, the server's endpoints (after QEMU exited)."""

    def __init__(self, results: dict[str, dict[str, str]], console: str, endpoints: dict[str, object],
                 seconds: float) -> None:
        self.results, self.console, self.endpoints, self.seconds = results, console, endpoints, seconds


def vfio_user_pci(socket: str, slot: str) -> str:
    """QEMU's documented JSON form of the device (docs/system/devices/vfio-user.rst)."""
    return json.dumps({"driver": "vfio-user-pci", "socket": {"path": socket, "type": "unix"}, "addr": slot[3:]})


def boot(env: dict[str, str], shared: bool) -> Boot:
    work, gwork = Path(env["WORK"]), env["GUEST_WORK"]
    for f in ("console.log", "results.txt"):
        (work / f).unlink(missing_ok=True)
    server = Server().start()
    edu_ep = server.add(Edu("edu"), str(work / "edu.sock"))
    td_ep = server.add(TestDev("testdev"), str(work / "testdev.sock"))
    machine = "pc,accel=tcg" + (",memory-backend=mem" if shared else "")
    cmd = ["qemu-system-x86_64", "-machine", machine, "-m", "256", "-smp", "1", "-no-reboot", "-nodefaults",
           "-display", "none", "-monitor", "none",
           "-serial", f"file:{gwork}/console.log", "-serial", f"file:{gwork}/results.txt",
           "-kernel", f"{gwork}/vmlinuz", "-initrd", f"{gwork}/initrd.gz",
           "-append", (f"console=ttyS0 panic=-1 loglevel=4 memmap=64K$0x8000000 "
                       f"vfiolab.edu={QEMU_EDU},{OUR_EDU} vfiolab.testdev={OUR_TESTDEV}"),
           "-device", f"edu,addr={QEMU_EDU[3:]}",
           "-device", vfio_user_pci(f"{gwork}/edu.sock", OUR_EDU),
           "-device", vfio_user_pci(f"{gwork}/testdev.sock", OUR_TESTDEV)]
    if shared:
        cmd += ["-object", "memory-backend-memfd,id=mem,size=256M,share=on"]
    t0 = time.monotonic()
    try:
        r = subprocess.run(["bash", str(BASE_RIG), "run", "timeout", str(BOOT_TIMEOUT), *cmd],
                           capture_output=True, text=True, check=False)
        seconds = time.monotonic() - t0
        for ep in (edu_ep, td_ep):  # let the server see QEMU's disconnect before counting
            deadline = time.monotonic() + 5
            while ep.owner is not None and time.monotonic() < deadline:
                time.sleep(0.01)
    finally:
        server.close()
    console = (work / "console.log").read_text(errors="replace") if (work / "console.log").exists() else ""
    text = (work / "results.txt").read_text(errors="replace") if (work / "results.txt").exists() else ""
    results: dict[str, dict[str, str]] = collections.defaultdict(dict)
    for line in text.splitlines():
        parts = line.strip().split(" ", 3)
        if len(parts) >= 3 and parts[0] == "R":
            results[parts[1]][parts[2]] = parts[3] if len(parts) > 3 else ""
    if results.get("-", {}).get("end") != "yes":
        pytest.fail(f"the guest did not finish (rc {r.returncode}, {seconds:.0f} s)\nqemu: {r.stderr[-2000:]}\n"
                    f"console: {console[-3000:]}\nresults: {text[-2000:]}")
    return Boot(dict(results), console, {"edu": edu_ep, "testdev": td_ep}, seconds)


@pytest.fixture(scope="module", params=["memfd", "private"])
def guest(request: pytest.FixtureRequest, rig: dict[str, str]) -> Boot:
    return boot(rig, shared=request.param == "memfd")


EDU_EXPECTED = {
    "id": "0x1234:0x11e8", "class": "0x00ff00", "revision": "0x10", "subsystem": "0x1af4:0x1100", "pin": "1",
    "caps": "05", "bar0_size": "0x100000", "command_mem_master": "6", "ident": "0x010000ED", "liveness": "0xEDCBA987",
    "fact_poll": "ok", "factorial": "0x00375F00", "fact_poll2": "ok", "factorial12": "0x1C8CFC00", "factorial5": "0x00000078",
    "uio": "bound", "intx_count1": "1", "intx_status1": "0x00000001", "status_intx_bit": "1",
    "intx_acked": "0x00000000", "intx_count2": "2", "intx_status2": "0x00000001", "intx_count3": "3",
    "dma_to_dev": "ok", "dma_to_ram": "ok", "ram": "0x55667788 0x99AABBCC 0xDDEEFF00 0x00000000",
    "dma_irq_status": "0x00000100", "ram2": "0x11223344", "msi_message": "0x00004567",
    "msi_status": "0x00000008", "done": "yes",
}


def test_qemu_is_11_1(rig: dict[str, str]) -> None:
    assert rig["QEMU_VERSION"].startswith("QEMU emulator version 11.1"), rig["QEMU_VERSION"]


def test_our_edu_behaves_like_qemus_edu(guest: Boot) -> None:
    qemu, ours = guest.results[QEMU_EDU], guest.results[OUR_EDU]
    assert ours == qemu, {k: (qemu.get(k), ours.get(k)) for k in set(qemu) | set(ours) if qemu.get(k) != ours.get(k)}
    # ... and both say what docs/specs/edu.rst says (the MSI capability sits where each device put it).
    assert {k: v for k, v in ours.items() if k != "msi_cap"} == EDU_EXPECTED


def test_testdev_with_msix(guest: Boot) -> None:
    td = guest.results[OUR_TESTDEV]
    assert td == {
        "id": "0x1234:0x7e57", "class": "0xff0000", "revision": "0x01", "subsystem": "0x1234:0x7e57",
        "pin": "1", "caps": td["caps"], "bar0_size": "0x4000", "bar2_size": "0x10000",
        "ident": "0x7E570001", "buf_word": "0xA5A5F00D", "dma_read": "ok",
        "buf": "0x01020304 0x05060708 0x090A0B0C 0x0D0E0F10", "dma_write": "ok", "ram": "0xA5A5F00D",
        "msix_cap": td["msix_cap"], "msix_run0": "ok", "msix_message0": "0x0000BEEF", "msix_run1": "ok",
        "msix_message1": "0x0000BEF1", "completions": "0x00000004", "errors": "0x00000000", "done": "yes"}
    assert "11" in td["caps"] and td["msix_cap"] != "0x00000000"  # MSI-X (with PM and Express) as we built it
    ep = guest.endpoints["testdev"]
    # BAR2 was written and read by the guest through QEMU's mmap of our memfd: no message ever carried it.
    assert ep.stats.region_writes[2] == 0 and ep.stats.region_reads[2] == 0  # type: ignore[attr-defined]
    assert ep.device.buf.u8[0x100:0x104].tobytes() == bytes.fromhex("0df0a5a5")  # type: ignore[attr-defined]
    assert ep.host.irqs.signals["MSI-X"] >= 2  # type: ignore[attr-defined]


def test_dma_path_matches_the_memory_backend(request: pytest.FixtureRequest, guest: Boot) -> None:
    shared = "memfd" in request.node.callspec.id
    for name in ("edu", "testdev"):
        st = guest.endpoints[name].stats  # type: ignore[attr-defined]
        assert st.commands["DMA_MAP"] > 0 and not st.errors.get("DMA_MAP")
        if shared:  # every window came with its fd: the server copied through its mappings
            assert st.dma_direct_bytes > 0 and st.dma_message_bytes == 0 and st.dma_messages == 0, st
        else:  # no fds: DMA_READ / DMA_WRITE messages on the one socket
            assert st.dma_direct_bytes == 0 and st.dma_message_bytes > 0 and st.dma_messages > 0, st
    edu_ep = guest.endpoints["edu"]
    assert not edu_ep.device.guest_errors  # type: ignore[attr-defined]
    assert edu_ep.host.irqs.signals["INTx"] >= 3 and edu_ep.host.irqs.signals["MSI"] >= 1  # type: ignore[attr-defined]


def test_guest_saw_the_interrupts_in_its_kernel(guest: Boot) -> None:
    assert guest.results["-"]["interrupts"] == "2"  # /proc/interrupts has a uio line for each edu
