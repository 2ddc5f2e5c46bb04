"""PM, MSI, MSI-X, SSVID and vendor-specific builders: layout and per-bit write attributes per the PCI
Local Bus 3.0 / PCI PM 1.2 specs and Linux ``pci_regs.h``; decoders against observed lspci 3.9 text."""

from __future__ import annotations

import io

import pytest

from vfiolab.pci.caps import msi as M
from vfiolab.pci.caps import msix as X
from vfiolab.pci.caps import pm as P
from vfiolab.pci.caps.base import CapabilityList
from vfiolab.pci.caps.msi import MsiCap, decode_msi
from vfiolab.pci.caps.msix import MsixCap, decode_msix
from vfiolab.pci.caps.pm import PmCap, decode_pm
from vfiolab.pci.caps.ssvid import SUBSYS_NAMER, SsvidCap, decode_ssvid
from vfiolab.pci.caps.vendor import VendorCap, decode_vendor
from vfiolab.pci.config import RESET_FLR, ConfigSpace
from vfiolab.pci.decode import DecodeContext


def placed(cap: object, size: int = 4096) -> tuple[ConfigSpace, int]:
    cs = ConfigSpace(size)
    CapabilityList(cs).add(cap)  # type: ignore[arg-type]
    return cs, cap.offset  # type: ignore[attr-defined]


def decode(fn: object, cs: ConfigSpace, off: int, verbose: int = 3, avail: int = 4096) -> str:
    out = io.StringIO()
    fn(DecodeContext(cfg=bytes(cs.data), avail=avail, verbose=verbose), out, off)  # type: ignore[operator]
    return out.getvalue()


# ------------------------------------------------------------------------------------------- PM
def test_pm_layout_and_readonly_pmc() -> None:
    cs, off = placed(PmCap(version=3, d1=True, aux_current=2, pme_support=P.PME_D0 | P.PME_D3HOT))
    assert cs.read(off, 1) == 0x01
    pmc = cs.read(off + 2, 2)
    assert pmc == 3 | P.PMC_D1 | 2 << 6 | (P.PME_D0 | P.PME_D3HOT) << 11
    cs.write(off + 2, 2, 0xFFFF)
    assert cs.read(off + 2, 2) == pmc, "PMC is read-only"


def test_pm_power_state_rw_and_unsupported_states_ignored() -> None:
    cs, off = placed(PmCap(d1=False, d2=True))
    cs.write(off + P.PMCSR, 2, 3)
    assert cs.read(off + P.PMCSR, 2) & 3 == 3
    cs.write(off + P.PMCSR, 2, 1)  # D1 not supported: PCI PM 1.2 says the write changes nothing
    assert cs.read(off + P.PMCSR, 2) & 3 == 3
    cs.write(off + P.PMCSR, 2, 2)
    assert cs.read(off + P.PMCSR, 2) & 3 == 2
    cs.write(off + P.PMCSR, 2, 0)
    assert cs.read(off + P.PMCSR, 2) & 3 == 0


def test_pm_no_soft_reset_and_data_select_readonly() -> None:
    cs, off = placed(PmCap(no_soft_reset=True))
    cs.write(off + P.PMCSR, 2, 0x7FFC)  # everything but state and PME_Status
    v = cs.read(off + P.PMCSR, 2)
    assert v & P.CTRL_NO_SOFT_RESET
    assert v & P.CTRL_DATA_SEL == 0, "Data_Select is hardwired to 0 without a Data register"
    assert v & P.CTRL_PME_ENABLE == 0, "PME_En is RO 0 without PME support"
    cs2, off2 = placed(PmCap(data=0x12))
    cs2.write(off2 + P.PMCSR, 2, P.CTRL_DATA_SEL)
    assert cs2.read(off2 + P.PMCSR, 2) & P.CTRL_DATA_SEL == P.CTRL_DATA_SEL
    assert cs2.read(off2 + P.DATA, 1) == 0x12


def test_pm_pme_status_is_rw1c_and_sticky_with_d3cold() -> None:
    cs, off = placed(PmCap(pme_support=P.PME_D3HOT | P.PME_D3COLD))
    cs.seal()
    cs.set(off + P.PMCSR, 2, cs.get(off + P.PMCSR, 2) | P.CTRL_PME_STATUS)  # the function signals PME
    cs.write(off + P.PMCSR, 2, P.CTRL_PME_ENABLE)  # writing 0 to PME_Status keeps it
    assert cs.read(off + P.PMCSR, 2) & (P.CTRL_PME_STATUS | P.CTRL_PME_ENABLE) == 0x8100
    cs.reset(RESET_FLR)
    assert cs.read(off + P.PMCSR, 2) & 0x8100 == 0x8100, "sticky with PME from D3cold"
    cs.write(off + P.PMCSR, 2, P.CTRL_PME_STATUS)
    assert cs.read(off + P.PMCSR, 2) & P.CTRL_PME_STATUS == 0, "RW1C"
    cs3, off3 = placed(PmCap(pme_support=P.PME_D0))
    cs3.seal()
    cs3.write(off3 + P.PMCSR, 2, P.CTRL_PME_ENABLE)
    cs3.reset(RESET_FLR)
    assert cs3.read(off3 + P.PMCSR, 2) & P.CTRL_PME_ENABLE == 0, "not sticky without D3cold PME"


def test_pm_rejects_bad_fields() -> None:
    with pytest.raises(ValueError):
        PmCap(aux_current=8)
    with pytest.raises(ValueError):
        PmCap(state=4)


def test_pm_decoder_text() -> None:
    # Expected text worked out from the PCI PM 1.2 encodings in lspci 3.9's ls-caps.c format.
    cs, off = placed(PmCap(version=3, d1=True, d2=True, aux_current=7, pme_support=0x19, bridge_ext=0x80))
    assert decode(decode_pm, cs, off, verbose=1) == "Power Management version 3\n"
    assert decode(decode_pm, cs, off) == (
        "Power Management version 3\n"
        "\t\tFlags: PMEClk- DSI- D1+ D2+ AuxCurrent=375mA PME(D0+,D1-,D2-,D3hot+,D3cold+)\n"
        "\t\tStatus: D0 NoSoftRst+ PME-Enable- DSel=0 DScale=0 PME-\n"
        "\t\tBridge: PM+ B3+\n")
    # Status needs bytes 4..7 of the structure (config_fetch): a dump ending earlier stops after Flags.
    assert decode(decode_pm, cs, off, avail=off + 7).count("\n") == 2


# ------------------------------------------------------------------------------------------ MSI
@pytest.mark.parametrize(("addr64", "mask", "length"), [(False, False, 10), (True, False, 14),
                                                        (False, True, 20), (True, True, 24)])
def test_msi_lengths(addr64: bool, mask: bool, length: int) -> None:
    assert MsiCap(4, addr64, mask).length() == length  # vfio_msi_cap_len()


def test_msi_control_attributes() -> None:
    cs, off = placed(MsiCap(vectors=8, addr64=True, per_vector_mask=True))
    ctrl = cs.read(off + M.FLAGS, 2)
    assert ctrl == (3 << 1) | M.FLAGS_64BIT | M.FLAGS_MASKBIT
    cs.write(off + M.FLAGS, 2, 0xFFFF)
    # Only Enable and Multiple Message Enable are writable.
    assert cs.read(off + M.FLAGS, 2) == ctrl | M.FLAGS_ENABLE | M.FLAGS_QSIZE
    cs.write(off + M.FLAGS, 2, 0)
    assert cs.read(off + M.FLAGS, 2) == ctrl


def test_msi_address_data_mask_pending_64bit() -> None:
    cap = MsiCap(vectors=4, addr64=True, per_vector_mask=True)
    cs, off = placed(cap)
    cs.write(off + M.ADDRESS_LO, 4, 0xFEE0_1003)
    assert cs.read(off + M.ADDRESS_LO, 4) == 0xFEE0_1000, "address bits 1:0 read 0"
    cs.write(off + M.ADDRESS_HI, 4, 0x1234_5678)
    cs.write(off + M.DATA_64, 2, 0x4021)
    assert cap.message(cs) == (0x1234_5678_FEE0_1000, 0x4021)
    cs.write(off + M.MASK_64, 4, 0xFFFFFFFF)
    assert cs.read(off + M.MASK_64, 4) == 0xF, "mask bits exist only for the 4 vectors"
    cs.write(off + M.PENDING_64, 4, 0xFFFFFFFF)
    assert cs.read(off + M.PENDING_64, 4) == 0, "pending bits are read-only"
    cap.set_pending(cs, 2, True)
    assert cs.read(off + M.PENDING_64, 4) == 0x4
    with pytest.raises(ValueError):
        cap.set_pending(cs, 4, True)
    cs.write(off + M.FLAGS, 2, M.FLAGS_ENABLE | 2 << 4)
    assert cap.enabled(cs) and cap.enabled_vectors(cs) == 4


def test_msi_32bit_layout() -> None:
    cs, off = placed(MsiCap(vectors=1, addr64=False, per_vector_mask=True))
    cs.write(off + M.DATA_32, 2, 0xABCD)
    cs.write(off + M.MASK_32, 4, 0xFFFFFFFF)
    assert cs.read(off + M.DATA_32, 2) == 0xABCD
    assert cs.read(off + M.MASK_32, 4) == 1
    assert cs.read(off + M.PENDING_32, 4) == 0
    assert not cs.read(off + M.FLAGS, 2) & M.FLAGS_64BIT


def test_msi_rejects_non_power_of_two() -> None:
    with pytest.raises(ValueError):
        MsiCap(vectors=3)
    with pytest.raises(ValueError):
        MsiCap(vectors=64)


def test_msi_decoder_matches_reference_example() -> None:
    # pci.md §2: lspci 3.9 -vvv of a 64-bit MSI at 0x50 with control 0x0095 (observed).
    cs = ConfigSpace()
    cs.data[0x50:0x60] = bytes.fromhex("05009500 0000e0fe 00000000 21400000".replace(" ", ""))
    assert decode(decode_msi, cs, 0x50, avail=0x60) == (
        "MSI: Enable+ Count=2/4 Maskable- 64bit+\n\t\tAddress: 00000000fee00000  Data: 4021\n")
    assert decode(decode_msi, cs, 0x50, verbose=1) == "MSI: Enable+ Count=2/4 Maskable- 64bit+\n"
    # Data ends at 0x5e: a dump that stops before it shows only the first line.
    assert decode(decode_msi, cs, 0x50, avail=0x5D) == "MSI: Enable+ Count=2/4 Maskable- 64bit+\n"


# ---------------------------------------------------------------------------------------- MSI-X
def test_msix_control_attributes() -> None:
    cap = MsixCap(table_size=64, table_bar=2, table_offset=0x2000, pba_bar=4, pba_offset=0x800)
    cs, off = placed(cap)
    assert cs.read(off + X.FLAGS, 2) == 63
    cs.write(off + X.FLAGS, 2, 0xFFFF)
    assert cs.read(off + X.FLAGS, 2) == 63 | X.FLAGS_ENABLE | X.FLAGS_MASKALL
    assert cap.enabled(cs) and cap.function_masked(cs)
    cs.write(off + X.FLAGS, 2, 0)
    assert cs.read(off + X.FLAGS, 2) == 63


def test_msix_table_and_pba_location_readonly() -> None:
    cs, off = placed(MsixCap(table_size=64, table_bar=2, table_offset=0x2000, pba_bar=4, pba_offset=0x800))
    assert cs.read(off + X.TABLE, 4) == 0x2000 | 2
    assert cs.read(off + X.PBA, 4) == 0x800 | 4
    cs.write(off + X.TABLE, 4, 0)
    cs.write(off + X.PBA, 4, 0xFFFFFFFF)
    assert (cs.read(off + X.TABLE, 4), cs.read(off + X.PBA, 4)) == (0x2002, 0x804)


def test_msix_default_pba_follows_table() -> None:
    cap = MsixCap(table_size=3, table_bar=1, table_offset=0x100)
    assert (cap.pba_bar, cap.pba_offset) == (1, 0x100 + 3 * 16)
    assert cap.pba_size == 8 and MsixCap(65).pba_size == 16


@pytest.mark.parametrize("kwargs", [{"table_size": 0}, {"table_size": 2049}, {"table_size": 1, "table_bar": 6},
                                    {"table_size": 1, "table_offset": 4}, {"table_size": 1, "pba_offset": 0x1001}])
def test_msix_rejects_bad_layout(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        MsixCap(**kwargs)


def test_msix_decoder_text() -> None:
    cs, off = placed(MsixCap(table_size=2048, table_bar=5, table_offset=0xFFFF8, pba_bar=0, pba_offset=0x10))
    cs.write(off + X.FLAGS, 2, X.FLAGS_ENABLE)
    assert decode(decode_msix, cs, off) == ("MSI-X: Enable+ Count=2048 Masked-\n"
                                             "\t\tVector table: BAR=5 offset=000ffff8\n"
                                             "\t\tPBA: BAR=0 offset=00000010\n")


# ------------------------------------------------------------------------------------ SSVID, vendor
def test_ssvid_hwinit_then_readonly() -> None:
    cs, off = placed(SsvidCap(0x8086, 0x1234))
    assert (cs.read(off + 4, 2), cs.read(off + 6, 2)) == (0x8086, 0x1234)
    cs.write(off + 4, 4, 0xAAAA_5555)  # firmware's one write after reset
    assert cs.read(off + 4, 4) == 0xAAAA_5555
    cs.write(off + 4, 4, 0)
    assert cs.read(off + 4, 4) == 0xAAAA_5555, "HwInit: read-only after the first write"


def test_ssvid_decoder_uses_the_renderer_namer_and_needs_8_bytes() -> None:
    cs, off = placed(SsvidCap(0x1AF4, 0x1100))
    out = io.StringIO()
    ctx = DecodeContext(cfg=bytes(cs.data), avail=4096, extra={SUBSYS_NAMER: lambda v, d, sv, sd: f"{sv:x}/{sd:x}"})
    decode_ssvid(ctx, out, off)
    assert out.getvalue() == "Subsystem: 1af4/1100\n"
    assert decode(decode_ssvid, cs, off) == "Subsystem: Device 1af4:1100\n"
    assert decode(decode_ssvid, cs, off, avail=off + 7) == "", "ls-caps.c cap_ssvid prints nothing"


def test_vendor_cap_length_and_body() -> None:
    cap = VendorCap(b"\x01\x02\x03\x04\x05")
    cs, off = placed(cap)
    assert cs.read(off + 2, 1) == 8
    assert bytes(cs.data[off + 3:off + 8]) == b"\x01\x02\x03\x04\x05"
    cs.write(off + 4, 4, 0)
    assert bytes(cs.data[off + 3:off + 8]) == b"\x01\x02\x03\x04\x05", "body is read-only"
    assert decode(decode_vendor, cs, off) == "Vendor Specific Information: Len=08 <?>\n"
    with pytest.raises(ValueError):
        VendorCap(bytes(200))


def test_virtio_vendor_cap_decodes_only_for_virtio_ids() -> None:
    cap = VendorCap.virtio(2, bar=4, offset=0x3000, length=0x1000, multiplier=4)
    cs, off = placed(cap)
    assert cs.read(off + 2, 1) == 20
    assert decode(decode_vendor, cs, off) == "Vendor Specific Information: Len=14 <?>\n"
    cs.data[0:4] = bytes.fromhex("f41a4110")  # 1af4:1041, a modern virtio-net
    assert decode(decode_vendor, cs, off) == ("Vendor Specific Information: VirtIO: Notify\n"
                                               "\t\tBAR=4 offset=00003000 size=00001000 multiplier=00000004\n")
    assert decode(decode_vendor, cs, off, verbose=1) == "Vendor Specific Information: VirtIO: Notify\n"
    cs.data[0:4] = bytes.fromhex("f41a8010")  # 1af4:1080 is outside lspci's 1000-107f range
    assert decode(decode_vendor, cs, off) == "Vendor Specific Information: Len=14 <?>\n"
