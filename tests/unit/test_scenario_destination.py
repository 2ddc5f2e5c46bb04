"""The destination process on its own: started as the source starts it, it answers a machine it cannot
build, or a stream that breaks the protocol, with an ERROR message and exit status 1 (never a hang)."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from vfiolab.errors import VfiolabError
from vfiolab.scenarios.destination import main
from vfiolab.scenarios.wire import Channel, Msg


def spawn() -> tuple[subprocess.Popen[bytes], Channel]:
    ours, theirs = socket.socketpair()
    proc = subprocess.Popen([sys.executable, "-m", "vfiolab.scenarios.destination", "--fd", str(theirs.fileno())],
                            pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
    theirs.close()
    return proc, Channel(ours, timeout=60)


def test_a_machine_it_cannot_build() -> None:
    proc, chan = spawn()
    chan.send_json(Msg.HELLO, {"ram_mib": "lots", "iommu": "intel", "devices": ["testdev", "edu"]})
    with pytest.raises(VfiolabError, match="peer failed: HELLO describes a machine this destination cannot build"):
        chan.expect(Msg.READY)
    assert proc.wait(timeout=60) == 1
    chan.close()


def test_a_stream_out_of_protocol() -> None:
    proc, chan = spawn()
    chan.send_json(Msg.HELLO, {"ram_mib": 16, "iommu": "intel", "devices": ["testdev", "edu"]})
    chan.expect(Msg.READY)
    chan.send_device(0, b"not a migration record")
    chan.send_json(Msg.COMPLETE, {})
    with pytest.raises(VfiolabError, match="peer failed: EINVAL: bad migration record at byte 0"):
        chan.expect(Msg.VERIFY)  # RESUMING -> STOP refused the testdev stream
    assert proc.wait(timeout=60) == 1
    chan.close()


def test_no_such_fd(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--fd", "1000"]) == 1
    assert "vfiolab destination: fd 1000:" in capsys.readouterr().err
