"""PCI functions and bridges: header register attributes and the BAR sizing protocol, checked against the
PCI Local Bus / PCI-to-PCI Bridge / PCIe Base rules (a BAR's RW bits are exactly the address bits above
its size), resets, VFs, and the real lspci reading what a function holds."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lspci_oracle import run_lspci
from vfiolab.errors import VfiolabError
from vfiolab.pci import regs
from vfiolab.pci.bridge import PciToPciBridge, RootPort, SwitchDownstreamPort
from vfiolab.pci.caps.express import ExpressCap
from vfiolab.pci.caps.sriov import SriovCap
from vfiolab.pci.config import RESET_FLR, RESET_HOT
from vfiolab.pci.dump import format_dump
from vfiolab.pci.function import Bar, ConventionalDevice, HostBridge, PcieEndpoint
from vfiolab.pci.sriov_vf import VfSpec, VirtualFunction

bar_specs = st.one_of(
    st.builds(lambda e, p: Bar(0, "mem32", 1 << e, p), st.integers(4, 31), st.booleans()),
    st.builds(lambda e, p: Bar(0, "mem64", 1 << e, p), st.integers(4, 40), st.booleans()),
    st.builds(lambda e: Bar(0, "io", 1 << e), st.integers(2, 8)),
)


def size_from_mask(lo: int, hi: int | None, io: bool) -> int:
    """PCI Local Bus 3.0 §6.2.5.1: clear the type bits, invert, add one."""
    if io:
        return ((~(lo & ~0x3)) & 0xFFFF) + 1        # x86 decodes 16 I/O address bits
    mask = lo & ~0xF
    if hi is not None:
        mask |= hi << 32
        return ((~mask) & 0xFFFFFFFFFFFFFFFF) + 1
    return ((~mask) & 0xFFFFFFFF) + 1


@settings(max_examples=120, deadline=None)
@given(bar_specs, st.integers(0, 4))
def test_bar_sizing_protocol_gives_the_configured_size(bar: Bar, index: int) -> None:
    bar = Bar(index, bar.kind, bar.size, bar.prefetch)
    fn = PcieEndpoint(0x1234, 0x5678, 0x020000, bars=[bar])
    off = regs.BASE_ADDRESS_0 + 4 * index
    orig = fn.config_read(off, 4)
    assert orig == bar.type_bits                    # reset: address 0, type bits RO
    fn.config_write(off, 4, 0xFFFFFFFF)
    lo = fn.config_read(off, 4)
    hi = None
    if bar.kind == "mem64":
        fn.config_write(off + 4, 4, 0xFFFFFFFF)
        hi = fn.config_read(off + 4, 4)
    assert lo & (0x3 if bar.kind == "io" else 0xF) == bar.type_bits
    assert size_from_mask(lo, hi, bar.kind == "io") == bar.size
    fn.config_write(off, 4, orig)
    assert fn.config_read(off, 4) == orig
    # An address aligned to the size reads back exactly.
    addr = bar.size * 3 if bar.kind != "io" else bar.size * 5
    fn.config_write(off, 4, addr & 0xFFFFFFFF)
    if bar.kind == "mem64":
        fn.config_write(off + 4, 4, addr >> 32)
        assert fn.bar_address(index) == addr & ((1 << 64) - 1)
    else:
        assert fn.bar_address(index) == addr & 0xFFFFFFFF & ~(bar.size - 1)


@pytest.mark.parametrize("size", [0x800, 0x10000, 0x1000000])
def test_rom_bar_sizes_and_enable_bit(size: int) -> None:
    fn = PcieEndpoint(0x1234, 0x5678, 0x030000, rom=size)
    fn.config_write(regs.ROM_ADDRESS, 4, 0xFFFFF800)       # what Linux writes (never the enable bit)
    val = fn.config_read(regs.ROM_ADDRESS, 4)
    assert ((~val) & 0xFFFFFFFF | 0x7FF) + 1 == size
    assert not val & regs.ROM_ADDRESS_ENABLE
    fn.config_write(regs.ROM_ADDRESS, 4, size | 1)
    assert fn.config_read(regs.ROM_ADDRESS, 4) == size | 1


def test_unimplemented_bars_and_rom_read_zero() -> None:
    fn = PcieEndpoint(0x1234, 0x5678, 0x020000, bars=[Bar(2, "mem32", 0x1000)])
    for i in (0, 1, 3, 4, 5):
        fn.config_write(regs.BASE_ADDRESS_0 + 4 * i, 4, 0xFFFFFFFF)
        assert fn.config_read(regs.BASE_ADDRESS_0 + 4 * i, 4) == 0
    fn.config_write(regs.ROM_ADDRESS, 4, 0xFFFFFFFF)
    assert fn.config_read(regs.ROM_ADDRESS, 4) == 0


def test_command_status_and_interrupt_registers() -> None:
    fn = PcieEndpoint(0x1234, 0x5678, 0x020000, bars=[Bar(0, "mem32", 0x1000)])
    fn.config_write(regs.COMMAND, 2, 0xFFFF)
    # PCIe Base §7.5.1.1.3: no I/O BAR -> I/O Space Enable hardwired 0; the obsolete bits are 0.
    assert fn.config_read(regs.COMMAND, 2) == (regs.COMMAND_MEMORY | regs.COMMAND_MASTER | regs.COMMAND_PARITY
                                               | regs.COMMAND_SERR | regs.COMMAND_INTX_DISABLE)
    fn.cs.set(regs.STATUS, 2, regs.STATUS_W1C | regs.STATUS_CAP_LIST)   # the device latched errors
    fn.config_write(regs.STATUS, 2, 0)
    assert fn.config_read(regs.STATUS, 2) & regs.STATUS_W1C == regs.STATUS_W1C
    fn.config_write(regs.STATUS, 2, regs.STATUS_REC_MASTER_ABORT)
    assert fn.config_read(regs.STATUS, 2) & regs.STATUS_W1C == regs.STATUS_W1C & ~regs.STATUS_REC_MASTER_ABORT
    fn.config_write(regs.INTERRUPT_LINE, 2, 0x0B0B)
    assert fn.config_read(regs.INTERRUPT_LINE, 1) == 0x0B
    assert fn.config_read(regs.INTERRUPT_PIN, 1) == 1                    # RO
    fn.config_write(regs.LATENCY_TIMER, 1, 0x40)
    assert fn.config_read(regs.LATENCY_TIMER, 1) == 0                     # RO 0 on PCIe
    conv = ConventionalDevice(0x1234, 0x5678, 0x020000, bars=[Bar(0, "io", 0x20)])
    conv.config_write(regs.LATENCY_TIMER, 1, 0x40)
    assert conv.config_read(regs.LATENCY_TIMER, 1) == 0x40
    conv.config_write(regs.COMMAND, 2, 0xFFFF)
    assert conv.config_read(regs.COMMAND, 2) & (regs.COMMAND_IO | regs.COMMAND_MEMORY) == regs.COMMAND_IO
    assert conv.cs.size == 256 and conv.config_read(0x100, 4) == 0xFFFFFFFF


def test_header_type_and_multifunction_bit() -> None:
    assert PcieEndpoint(1, 2, 0, multifunction=True).config_read(regs.HEADER_TYPE, 1) == 0x80
    assert PcieEndpoint(1, 2, 0).config_read(regs.HEADER_TYPE, 1) == 0x00
    assert RootPort(1, 2, multifunction=True).config_read(regs.HEADER_TYPE, 1) == 0x81
    assert HostBridge(0x8086, 0x29C0).config_read(regs.REVISION_ID, 4) >> 16 == 0x0600


def test_bridge_bus_numbers_and_window_granularity() -> None:
    br = RootPort(0x8086, 0x2030, io32=True, pref64=True, windows_disabled=False)
    br.config_write(regs.PRIMARY_BUS, 4, 0xFFFFFFFF)
    assert br.bus_numbers == (0xFF, 0xFF, 0xFF)
    assert br.config_read(regs.SEC_LATENCY_TIMER, 1) == 0                 # RO 0 on PCIe
    br.config_write(regs.IO_BASE, 2, 0xFFFF)
    assert br.config_read(regs.IO_BASE, 2) == 0xF1F1                      # 4 KiB steps, 32-bit decode
    br.config_write(regs.IO_BASE_UPPER16, 4, 0xFFFFFFFF)
    assert br.config_read(regs.IO_BASE_UPPER16, 4) == 0xFFFFFFFF
    br.config_write(regs.MEMORY_BASE, 4, 0xFFFFFFFF)
    assert br.config_read(regs.MEMORY_BASE, 4) == 0xFFF0FFF0              # 1 MiB steps
    br.config_write(regs.PREF_MEMORY_BASE, 4, 0xFFFFFFFF)
    assert br.config_read(regs.PREF_MEMORY_BASE, 4) == 0xFFF1FFF1         # 64-bit prefetchable
    br.config_write(regs.PREF_BASE_UPPER32, 4, 0xFFFFFFFF)
    assert br.config_read(regs.PREF_BASE_UPPER32, 4) == 0xFFFFFFFF
    br.config_write(regs.BRIDGE_CONTROL, 2, 0xFFFF)
    assert br.config_read(regs.BRIDGE_CONTROL, 2) == 0x5F                 # no Master-Abort/FastB2B on PCIe
    br.cs.set(regs.SEC_STATUS, 2, regs.STATUS_W1C)
    br.config_write(regs.SEC_STATUS, 2, 0xFFFF)
    assert br.config_read(regs.SEC_STATUS, 2) == 0


def test_bridge_optional_windows_read_zero_and_reset_state() -> None:
    br = SwitchDownstreamPort(0x10B5, 0x8747, io_window=False, pref_window=False)
    for off in (regs.IO_BASE, regs.PREF_MEMORY_BASE, regs.PREF_BASE_UPPER32, regs.IO_BASE_UPPER16):
        br.config_write(off, 4 if off & 3 == 0 else 2, 0xFFFFFFFF if off & 3 == 0 else 0xFFFF)
        assert br.config_read(off, 2) == 0
    off = PciToPciBridge(0x8086, 0x244E, io32=False, pref64=False)
    assert off.config_read(regs.IO_BASE, 2) == 0x00F0                       # disabled: base above limit
    assert off.config_read(regs.MEMORY_BASE, 4) == 0x0000FFF0
    assert off.config_read(regs.PREF_MEMORY_BASE, 4) == 0x0000FFF0
    off.config_write(regs.BRIDGE_CONTROL, 2, 0xFFFF)
    assert off.config_read(regs.BRIDGE_CONTROL, 2) & regs.BRIDGE_CTL_MASTER_ABORT   # conventional: RW


def test_flr_resets_config_space_and_device_state() -> None:
    fn = PcieEndpoint(0x1234, 0x5678, 0x020000, bars=[Bar(0, "mem32", 0x1000)], express={"flr": True})
    seen: list[str] = []
    fn.add_reset_listener(seen.append)
    fn.config_write(regs.COMMAND, 2, regs.COMMAND_MEMORY | regs.COMMAND_MASTER)
    fn.config_write(regs.BASE_ADDRESS_0, 4, 0xFE000000)
    pos = fn.express_offset
    assert pos is not None
    fn.config_write(pos + 8, 2, 0x8000)                                     # Initiate Function Level Reset
    assert seen == [RESET_FLR]
    assert fn.config_read(regs.COMMAND, 2) == 0 and fn.config_read(regs.BASE_ADDRESS_0, 4) == 0
    fn.reset(RESET_HOT)
    assert seen == [RESET_FLR, RESET_HOT]


def test_validation_errors_are_clear() -> None:
    with pytest.raises(VfiolabError, match="not a power of two"):
        PcieEndpoint(1, 2, 0, bars=[Bar(0, "mem32", 0x3000)])
    with pytest.raises(VfiolabError, match="two slots"):
        PcieEndpoint(1, 2, 0, bars=[Bar(5, "mem64", 0x1000)])
    with pytest.raises(VfiolabError, match="already used"):
        PcieEndpoint(1, 2, 0, bars=[Bar(0, "mem64", 0x1000), Bar(1, "mem32", 0x1000)])
    with pytest.raises(VfiolabError, match="I/O BAR size"):
        PcieEndpoint(1, 2, 0, bars=[Bar(0, "io", 0x1000)])
    with pytest.raises(VfiolabError, match="index outside 0..1"):
        RootPort(1, 2, bars=[Bar(2, "mem32", 0x1000)])
    with pytest.raises(VfiolabError, match="ROM size"):
        PcieEndpoint(1, 2, 0, rom=0x400)
    with pytest.raises(VfiolabError, match="0xffff"):
        PcieEndpoint(0xFFFF, 2, 0)
    with pytest.raises(VfiolabError, match="given twice"):
        PcieEndpoint(1, 2, 0, caps=[ExpressCap(0)], express={"flr": True})


def test_virtual_function_header_is_what_the_sriov_spec_says() -> None:
    pf = PcieEndpoint(0x8086, 0x1572, 0x020000, bars=[Bar(0, "mem64", 0x100000)],
                      ext_caps=[SriovCap(4, 0x154C, 16, 1, vf_bars=[0x10000])])
    cap = pf.caps.find(0x10, extended=True)
    assert isinstance(cap, SriovCap)
    vf = VirtualFunction(pf, cap, 0, 0x0110, VfSpec(0x020000))
    assert vf.config_read(regs.VENDOR_ID, 4) == 0xFFFFFFFF                  # §9.3.4.1.1/2
    assert (vf.real_vendor, vf.real_device) == (0x8086, 0x154C)
    for i in range(6):
        vf.config_write(regs.BASE_ADDRESS_0 + 4 * i, 4, 0xFFFFFFFF)
        assert vf.config_read(regs.BASE_ADDRESS_0 + 4 * i, 4) == 0           # VF BARs RO zero
    vf.config_write(regs.COMMAND, 2, 0xFFFF)
    assert vf.config_read(regs.COMMAND, 2) == regs.COMMAND_MASTER           # VF MSE lives in the PF
    vf.config_write(regs.INTERRUPT_LINE, 1, 0x0B)
    assert vf.config_read(regs.INTERRUPT_LINE, 2) == 0                       # no INTx
    assert vf.express_offset is not None
    twin = vf.clone(1, 0x0111)
    assert twin.cs.dump() == vf.cs.dump()
    twin.config_write(regs.COMMAND, 2, regs.COMMAND_MASTER)
    assert vf.config_read(regs.COMMAND, 2) == regs.COMMAND_MASTER and twin.cs.data is not vf.cs.data
    twin.config_write(twin.express_offset + 8, 2, 0x8000)                   # FLR of the twin only
    assert twin.config_read(regs.COMMAND, 2) == 0 and vf.config_read(regs.COMMAND, 2) == regs.COMMAND_MASTER


def test_real_lspci_reads_the_header_we_built() -> None:
    fn = PcieEndpoint(0x8086, 0x1533, 0x020000, revision=3, subsys_vendor=0x15D9, subsys_id=0x1533,
                      bars=[Bar(0, "mem32", 0x100000), Bar(2, "io", 0x20), Bar(3, "mem64", 0x4000, True)],
                      rom=0x10000)
    fn.config_write(regs.BASE_ADDRESS_0, 4, 0xFB000000)
    fn.config_write(regs.BASE_ADDRESS_0 + 8, 4, 0xE000)
    fn.config_write(regs.BASE_ADDRESS_0 + 12, 4, 0xFA000000)
    fn.config_write(regs.ROM_ADDRESS, 4, 0xFC000000)
    fn.config_write(regs.COMMAND, 2, regs.COMMAND_MEMORY | regs.COMMAND_IO | regs.COMMAND_MASTER)
    out = run_lspci(format_dump(0, 1, 0, fn.cs.dump()), "-vv", "-nn")
    assert "Ethernet controller [0200]: Intel Corporation I210 Gigabit Network Connection [8086:1533] (rev 03)" in out
    assert "Control: I/O+ Mem+ BusMaster+" in out
    assert "Region 0: Memory at fb000000 (32-bit, non-prefetchable)" in out
    assert "Region 2: I/O ports at e000" in out
    assert "Region 3: Memory at fa000000 (64-bit, prefetchable)" in out
    assert "Expansion ROM at fc000000 [disabled]" in out
    assert "Express (v2) Endpoint" in out
