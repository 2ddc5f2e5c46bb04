"""Conformance suite plumbing: the selftest environment as a fixture.  The session-end report of how many
runs of the kernel's iommufd selftest are ported lives in tests/conftest.py (the one conftest the xdist
controller loads, where every report arrives)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from kself import Env

from vfiolab.memory import PhysMemory


@pytest.fixture(scope="session")
def mem() -> Iterator[PhysMemory]:
    """Simulated RAM shared by the session (sparse: only touched frames cost host memory)."""
    m = PhysMemory(4 << 30, name="conformance-ram")
    yield m
    m.close()


@pytest.fixture
def env(mem: PhysMemory) -> Iterator[Env]:
    """A fresh process, selftest mock and /dev/iommu; on success the kernel's teardown checks run and
    every frame the test took must be back."""
    before = mem.frames_in_use
    e = Env(mem)
    try:
        yield e
        e.teardown()
    finally:
        e.release()
    assert mem.frames_in_use == before, f"{mem.frames_in_use - before} frame(s) leaked"
