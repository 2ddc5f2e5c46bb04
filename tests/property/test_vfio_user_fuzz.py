"""Fuzzing the vfio-user decoder: random bytes, header-shaped random payloads, mutated valid messages and random
VERSION JSON.  Property: decode either returns a Message or raises ProtocolError (never anything else), and
whatever it accepts survives encode -> decode unchanged.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from vfiolab.vfio_user import Limits, Message, ProtocolError, Role, decode, encode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from test_vfio_user_codec_roundtrip import json_values, valid_messages

ROLES = st.sampled_from([Role.SERVER, Role.CLIENT])
LIMITS = Limits(max_data_xfer_size=1 << 16, max_msg_fds=8)
INTERESTING = [0, 1, 7, 8, 15, 16, 20, 24, 31, 32, 40, 48, 0x7F, 0x80, 0xFF, 0x100, 0xFFFF, 0x10000,
               0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]


def check(data: bytes, nfds: int, role: Role) -> None:
    """The fuzz property for one input."""
    fds = tuple(range(1000, 1000 + nfds))
    try:
        msg = decode(data, fds, role=role, limits=LIMITS)
    except ProtocolError as exc:
        assert exc.errno > 0 and exc.message
        return
    assert isinstance(msg, Message)
    wire, sent = encode(msg)
    assert decode(wire, sent, role=role, limits=LIMITS) == msg


def header(msg_id: int, cmd: int, size: int, flags: int, error: int) -> bytes:
    return b"".join(v.to_bytes(n, "little") for v, n in ((msg_id, 2), (cmd, 2), (size, 4), (flags, 4), (error, 4)))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=96), st.integers(0, 3), ROLES)
def test_random_bytes(data: bytes, nfds: int, role: Role) -> None:
    check(data, nfds, role)


@settings(max_examples=600, deadline=None)
@given(st.integers(0, 20), st.sampled_from([0, 1, 0x10, 0x11, 0x20, 0x21, 0x31, 0x2, 0x40]),
       st.binary(max_size=120), st.integers(0, 3), ROLES)
def test_header_shaped(cmd: int, flags: int, payload: bytes, nfds: int, role: Role) -> None:
    """A consistent header in front of random bytes reaches every command's payload parser."""
    check(header(1, cmd, 16 + len(payload), flags, 0) + payload, nfds, role)


@st.composite
def mutated(draw: st.DrawFn) -> tuple[bytes, int, Role]:
    role, msg = draw(valid_messages())
    wire = bytearray(encode(msg)[0])
    nfds = len(msg.fds)
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["flip", "u32", "u64", "truncate", "extend", "nfds", "role"]))
        if op == "flip" and wire:
            at = draw(st.integers(0, len(wire) - 1))
            wire[at] ^= 1 << draw(st.integers(0, 7))
        elif op in ("u32", "u64") and len(wire) >= 8:
            width = 4 if op == "u32" else 8
            at = draw(st.integers(0, len(wire) - width))
            value = draw(st.sampled_from(INTERESTING) | st.integers(0, (1 << (8 * width)) - 1))
            wire[at:at + width] = (value % (1 << (8 * width))).to_bytes(width, "little")
        elif op == "truncate":
            del wire[draw(st.integers(0, len(wire))):]
        elif op == "extend":
            wire += draw(st.binary(min_size=1, max_size=24))
        elif op == "nfds":
            nfds = draw(st.integers(0, 4))
        else:
            role = Role.CLIENT if role is Role.SERVER else Role.SERVER
        if len(wire) >= 8 and draw(st.booleans()):  # keep msg_size consistent, so the payload rules are reached
            wire[4:8] = len(wire).to_bytes(4, "little")
    return bytes(wire), nfds, role


@settings(max_examples=800, deadline=None)
@given(mutated())
def test_mutated_valid_messages(case: tuple[bytes, int, Role]) -> None:
    check(*case)


@settings(max_examples=200, deadline=None)
@given(json_values | st.dictionaries(st.just("capabilities"), json_values), st.booleans(), st.integers(0, 2))
def test_version_json(doc: object, reply: bool, nfds: int) -> None:
    """Arbitrary JSON documents as VERSION capabilities, both as a proposal and as a server's reply."""
    text = json.dumps(doc).encode() + b"\0"
    payload = (0).to_bytes(4, "little") + text
    check(header(1, 1, 16 + len(payload), 1 if reply else 0, 0) + payload, nfds,
          Role.CLIENT if reply else Role.SERVER)
