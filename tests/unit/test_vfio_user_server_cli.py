"""``vfiolab serve`` as a separate process: sockets printed at start, a client served, SIGTERM / SIGINT end it
cleanly (sockets removed, exit status 0), bad arguments are one-line errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from vfiolab.devices import edu as E
from vfiolab.devices import testdev as T
from vfiolab.vfio_user.client import Client

VFIOLAB = [sys.executable, "-m", "vfiolab.cli.main"]
Q35 = Path(__file__).resolve().parents[2] / "src" / "vfiolab" / "platforms" / "qemu-q35.yaml"


def start(*args: str) -> tuple[subprocess.Popen[str], dict[str, str]]:
    proc = subprocess.Popen([*VFIOLAB, "serve", *args, "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(10)
        pytest.fail(f"serve did not start: {proc.stderr.read() if proc.stderr else ''}")
    return proc, json.loads(line)["sockets"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_edu_and_testdev_then_stop(tmp_path: Path, sig: signal.Signals) -> None:
    proc, sockets = start("--socket-dir", str(tmp_path / "s"), "--device", "edu", "--device", "t2=testdev")
    assert sockets == {"edu": str(tmp_path / "s" / "edu.sock"), "t2": str(tmp_path / "s" / "t2.sock")}
    with Client(sockets["edu"]) as c:
        assert c.read_int(0, E.REG_IDENT, 4) == E.IDENT
    with Client(sockets["t2"]) as c:
        assert c.read_int(0, T.REG_ID, 4) == T.IDENT
    proc.send_signal(sig)
    assert proc.wait(10) == 0
    assert not os.listdir(tmp_path / "s")


def test_serve_a_platform_function(tmp_path: Path) -> None:
    proc, sockets = start("--socket-dir", str(tmp_path), "--platform", str(Q35), "--device", "00:05.1")
    assert list(sockets) == ["0000:00:05.1"]
    with Client(sockets["0000:00:05.1"]) as c:
        assert c.config_read(0, 4) == 0x11E81234  # the q35 reference platform's edu, config space only
        assert c.config_read(0x10, 4) != 0  # its BAR as Linux assigned it
    proc.terminate()
    assert proc.wait(10) == 0


@pytest.mark.parametrize("args, message", [
    (["--device", "nvme"], "unknown device 'nvme'"),
    (["--device", "00:05.1"], "needs --platform"),
    (["--device", "a=edu", "--device", "a=testdev"], "used twice"),
    (["--device", "bad name=edu"], "must be letters"),
    (["--device", "00:1f.7", "--platform", str(Q35)], "no such function"),
])
def test_bad_arguments(tmp_path: Path, args: list[str], message: str) -> None:
    r = subprocess.run([*VFIOLAB, "serve", "--socket-dir", str(tmp_path), *args], capture_output=True, text=True,
                       check=False,
                       timeout=30)
    assert r.returncode == 1 and message in r.stderr and "Traceback" not in r.stderr
