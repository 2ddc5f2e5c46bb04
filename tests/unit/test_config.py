"""ConfigSpace write attributes follow the PCIe Base spec §7.4 register types."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vfiolab.pci.config import RESET_FUNDAMENTAL, RESET_HOT, ConfigAccessError, ConfigSpace


def test_bar_sizing_protocol_from_rw_mask() -> None:
    cs = ConfigSpace()
    # 64 KiB 32-bit non-prefetchable memory BAR: address bits 31:16 writable, type bits RO.
    cs.init_reg(0x10, 4, 0x0, rw=0xFFFF0000)
    cs.write(0x10, 4, 0xFFFFFFFF)
    assert cs.read(0x10, 4) == 0xFFFF0000
    assert (~(cs.read(0x10, 4) & 0xFFFFFFF0) & 0xFFFFFFFF) + 1 == 0x10000


def test_ro_bits_ignore_writes() -> None:
    cs = ConfigSpace()
    cs.init_reg(0, 4, 0x56781234)
    cs.write(0, 4, 0)
    assert cs.read(0, 4) == 0x56781234


def test_rw1c_clears_only_written_ones() -> None:
    cs = ConfigSpace()
    cs.init_reg(6, 2, 0xF910, w1c=0xF900)
    cs.write(6, 2, 0x8000)
    assert cs.read(6, 2) == 0x7910
    cs.write(6, 2, 0x0000)
    assert cs.read(6, 2) == 0x7910


def test_rw1s_sets_and_never_clears() -> None:
    cs = ConfigSpace()
    cs.init_reg(0x40, 1, 0x00, w1s=0x01)
    cs.write(0x40, 1, 0x01)
    assert cs.read(0x40, 1) == 0x01
    cs.write(0x40, 1, 0x00)
    assert cs.read(0x40, 1) == 0x01


def test_hwinit_written_once_then_read_only_until_fundamental_reset() -> None:
    cs = ConfigSpace()
    cs.init_reg(0x44, 4, 0, hwinit=0xFFFF)
    cs.seal()
    cs.write(0x44, 4, 0x1234)
    cs.write(0x44, 4, 0x5678)
    assert cs.read(0x44, 4) == 0x1234
    cs.reset(RESET_HOT)
    assert cs.read(0x44, 4) == 0          # not sticky: back to the reset value ...
    cs.write(0x44, 4, 0x9)
    assert cs.read(0x44, 4) == 0          # ... but still locked until a fundamental reset
    cs.reset(RESET_FUNDAMENTAL)
    cs.write(0x44, 4, 0x9)
    assert cs.read(0x44, 4) == 0x9


def test_sticky_bits_survive_hot_reset_only() -> None:
    cs = ConfigSpace()
    cs.init_reg(0x104, 4, 0, w1c=0xFF, sticky=0x0F)
    cs.seal()
    cs.set(0x104, 4, 0xFF)
    cs.reset(RESET_HOT)
    assert cs.read(0x104, 4) == 0x0F
    cs.reset(RESET_FUNDAMENTAL)
    assert cs.read(0x104, 4) == 0


@pytest.mark.parametrize("off,size", [(1, 2), (2, 4), (3, 4), (4096, 1), (-4, 4), (0, 3), (0, 8)])
def test_bad_access_rejected(off: int, size: int) -> None:
    cs = ConfigSpace()
    with pytest.raises(ConfigAccessError):
        cs.read(off, size)
    with pytest.raises(ConfigAccessError):
        cs.write(off, size, 0)


def test_legacy_space_is_256_bytes() -> None:
    cs = ConfigSpace(256)
    with pytest.raises(ConfigAccessError):
        cs.read(0x100, 4)


def test_write_hook_sees_whole_dword_before_and_after() -> None:
    cs = ConfigSpace()
    cs.init_reg(0x48, 4, 0x11223344, rw=0xFFFFFFFF)
    seen: list[tuple[int, int, int, int]] = []
    cs.add_write_hook(0x48, 4, lambda off, size, old, new: seen.append((off, size, old, new)))
    cs.write(0x4A, 1, 0xAB)
    assert seen == [(0x4A, 1, 0x11223344, 0x11AB3344)]


def test_read_hook_computes_value_and_shows_in_dump() -> None:
    cs = ConfigSpace()
    cs.set_read_hook(0x50, lambda off: 0xCAFEF00D)
    assert cs.read(0x52, 2) == 0xCAFE
    assert cs.dump(0x54)[0x50:0x54] == bytes.fromhex("0df0feca")


@settings(max_examples=200, deadline=None)
@given(old=st.integers(0, 0xFFFFFFFF), val=st.integers(0, 0xFFFFFFFF), rw=st.integers(0, 0xFFFFFFFF),
       w1c=st.integers(0, 0xFFFFFFFF))
def test_write_semantics_match_bit_formula(old: int, val: int, rw: int, w1c: int) -> None:
    w1c &= ~rw
    cs = ConfigSpace()
    cs.init_reg(0x60, 4, old, rw=rw, w1c=w1c)
    cs.write(0x60, 4, val)
    expect = ((old & ~rw) | (val & rw)) & ~(val & w1c)
    assert cs.read(0x60, 4) == expect
