"""Builders of DOE, IDE, TPH, DPC, Resizable BAR, VSEC, DVSEC and the CXL DVSECs: register layout and
write attributes from the PCIe/CXL specs and Linux ``pci_regs.h``, and the DOE mailbox driven the way
Linux ``drivers/pci/doe.c`` drives it."""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vfiolab.errors import VfiolabError
from vfiolab.pci.caps import cxl, doe, dpc, dvsec, ide, rebar, tph, vsec
from vfiolab.pci.caps.base import Capability, CapabilityList
from vfiolab.pci.config import RESET_FLR, RESET_FUNDAMENTAL, RESET_HOT, ConfigSpace
from vfiolab.pci.decode import DecodeContext

OFF = 0x100


def place(cap: Capability) -> ConfigSpace:
    """A 4 KiB config space holding ``cap`` at 0x100, sealed (reset values recorded)."""
    cs = ConfigSpace()
    CapabilityList(cs).add(cap, OFF)
    cs.seal()
    return cs


# =============================================================================== DOE
D = doe.DoeCap


def doe_send(cs: ConfigSpace, dwords: list[int], go: bool = True) -> None:
    for dw in dwords:
        cs.write(OFF + D.WRITE, 4, dw)
    if go:
        cs.write(OFF + D.CTRL, 4, D.CTRL_GO)


def doe_read_all(cs: ConfigSpace) -> list[int]:
    """Read until Data Object Ready drops: read the dword, then write to advance."""
    out: list[int] = []
    for _ in range(1 << 10):
        if not cs.read(OFF + D.STATUS, 4) & D.STATUS_READY:
            return out
        out.append(cs.read(OFF + D.READ, 4))
        cs.write(OFF + D.READ, 4, 0)
    raise AssertionError("Data Object Ready never dropped")


def linux_doe(cs: ConfigSpace, vid: int, typ: int, payload: list[int]) -> list[int]:
    """The request/response sequence of drivers/pci/doe.c (pci_doe_send_req, pci_doe_recv_resp)."""
    sts = cs.read(OFF + D.STATUS, 4)
    assert not sts & (D.STATUS_BUSY | D.STATUS_ERROR)
    cs.write(OFF + D.WRITE, 4, vid | typ << 16)
    cs.write(OFF + D.WRITE, 4, 2 + len(payload))
    for dw in payload:
        cs.write(OFF + D.WRITE, 4, dw)
    cs.write(OFF + D.CTRL, 4, D.CTRL_GO)
    sts = cs.read(OFF + D.STATUS, 4)
    assert not sts & D.STATUS_ERROR and sts & D.STATUS_READY
    hdr1 = cs.read(OFF + D.READ, 4)
    assert (hdr1 & 0xFFFF, (hdr1 >> 16) & 0xFF) == (vid, typ)
    cs.write(OFF + D.READ, 4, 0)
    length = cs.read(OFF + D.READ, 4) & 0x3FFFF or 1 << 18
    cs.write(OFF + D.READ, 4, 0)
    resp = []
    for _ in range(length - 2):
        resp.append(cs.read(OFF + D.READ, 4))
        cs.write(OFF + D.READ, 4, 0)
    assert not cs.read(OFF + D.STATUS, 4) & (D.STATUS_ERROR | D.STATUS_READY)
    return resp


def test_doe_registers_and_attributes() -> None:
    cs = place(D(interrupt=True, msg_number=0x123))
    assert cs.read(OFF, 4) & 0xFFFF == 0x2E
    assert cs.read(OFF + D.CAP, 4) == 1 | 0x123 << 1
    cs.write(OFF + D.CAP, 4, 0)
    assert cs.read(OFF + D.CAP, 4) == 1 | 0x123 << 1  # RO
    cs.write(OFF + D.CTRL, 4, 0xFFFFFFFF)
    # Interrupt Enable sticks; Abort and Go always read 0.
    assert cs.read(OFF + D.CTRL, 4) == D.CTRL_INT_EN
    assert D(interrupt=False).length() == 0x18  # PCI_DOE_CAP_SIZEOF


def test_doe_discovery_dword_by_dword() -> None:
    protos = [(0x0001, 1), (0x0001, 2), (0x1E98, 2)]
    cs = place(D(protos, handler=lambda v, t, p: p))
    # Request: header 1 (vendor 0001h, type 0), header 2 (length 3 dwords), index 0, version 2.
    doe_send(cs, [0x00000001, 3, 0 | 2 << 8])
    sts = cs.read(OFF + D.STATUS, 4)
    assert sts & D.STATUS_READY and not sts & (D.STATUS_BUSY | D.STATUS_ERROR)
    resp = doe_read_all(cs)
    assert resp[0] == 0x00000001  # vendor 0001h, type 0
    assert resp[1] & 0x3FFFF == 3 == len(resp)
    assert resp[2] == 0x0001 | 0 << 16 | 1 << 24  # discovery itself, next index 1
    # Walk the rest like pci_doe_cache_features().
    found, index = [], 0
    while True:
        (entry,) = linux_doe(cs, 1, 0, [index])
        found.append((entry & 0xFFFF, (entry >> 16) & 0xFF))
        index = entry >> 24
        if not index:
            break
    assert found == [(1, 0)] + protos


def test_doe_handler_protocol_and_read_mailbox_semantics() -> None:
    seen = []

    def handler(vid: int, typ: int, payload: list[int]) -> list[int]:
        seen.append((vid, typ, payload))
        return [x ^ 0xFFFFFFFF for x in payload] + [0xABCD]

    cs = place(D([(1, 1)], handler=handler))
    assert linux_doe(cs, 1, 1, [0x11, 0x22]) == [0xFFFFFFEE, 0xFFFFFFDD, 0xABCD]
    assert seen == [(1, 1, [0x11, 0x22])]
    # Reading without writing returns the same dword; a byte write does not advance.
    doe_send(cs, [0x00010001, 3, 7])
    first = cs.read(OFF + D.READ, 4)
    assert cs.read(OFF + D.READ, 4) == first == 0x00010001
    cs.write(OFF + D.READ, 1, 0)
    assert cs.read(OFF + D.READ, 4) == first
    cs.write(OFF + D.READ, 4, 0x12345678)  # any value advances
    assert cs.read(OFF + D.READ, 4) == 4  # header 2: 2 + 2 payload dwords


def test_doe_discards_and_errors() -> None:
    cs = place(D([(1, 1)], handler=lambda v, t, p: p))
    # Length field says 4 but 3 dwords were written: silently discarded (PCIe r6.0 §6.30.1).
    doe_send(cs, [0x00000001, 4, 0])
    assert cs.read(OFF + D.STATUS, 4) == 0
    # Unsupported protocol: no response.
    doe_send(cs, [0x00050001, 3, 0])
    assert cs.read(OFF + D.STATUS, 4) == 0
    # The discarded data does not leak into the next request.
    assert linux_doe(cs, 1, 0, [0])[0] >> 24 == 1
    # Advancing the read mailbox with nothing ready is an underflow: DOE Error.
    cs.write(OFF + D.READ, 4, 0)
    assert cs.read(OFF + D.STATUS, 4) & D.STATUS_ERROR
    # While Error is set, Go is ignored; Abort clears Error (what pci_doe_abort() waits for).
    doe_send(cs, [0x00000001, 3, 0])
    assert not cs.read(OFF + D.STATUS, 4) & D.STATUS_READY
    cs.write(OFF + D.CTRL, 4, D.CTRL_ABORT)
    assert cs.read(OFF + D.STATUS, 4) & (D.STATUS_ERROR | D.STATUS_BUSY) == 0
    assert linux_doe(cs, 1, 0, [1]) == [1 | 1 << 16]  # index 1 is the last: next 0


def test_doe_abort_mid_response_and_reset() -> None:
    cap = D([(1, 1)], handler=lambda v, t, p: list(range(10)))
    cs = place(cap)
    doe_send(cs, [0x00010001, 2])
    cs.write(OFF + D.READ, 4, 0)
    assert cs.read(OFF + D.STATUS, 4) & D.STATUS_READY
    cs.write(OFF + D.CTRL, 4, D.CTRL_ABORT)
    assert cs.read(OFF + D.STATUS, 4) == 0
    assert cs.read(OFF + D.READ, 4) == 0
    # Half-written request, then a function reset: the next request starts clean.
    cs.write(OFF + D.WRITE, 4, 0x00000001)
    cs.reset(RESET_FLR)
    cap.reset(RESET_FLR)
    assert linux_doe(cs, 1, 0, [0]) == [1 | 1 << 24]


def test_doe_interrupt_status_rw1c() -> None:
    calls = []
    cs = place(D(interrupt=True, on_interrupt=lambda: calls.append(1)))
    doe_send(cs, [0x00000001, 3, 0])
    assert not cs.read(OFF + D.STATUS, 4) & D.STATUS_INT  # interrupt not enabled
    doe_read_all(cs)
    # Go and Interrupt Enable share the control register: keep the enable set with Go.
    doe_send(cs, [0x00000001, 3, 0], go=False)
    cs.write(OFF + D.CTRL, 4, D.CTRL_GO | D.CTRL_INT_EN)
    assert cs.read(OFF + D.STATUS, 4) & D.STATUS_INT and calls == [1]
    cs.write(OFF + D.STATUS, 4, D.STATUS_READY)  # RO bit: no effect
    assert cs.read(OFF + D.STATUS, 4) & D.STATUS_READY
    cs.write(OFF + D.STATUS, 4, D.STATUS_INT)
    assert not cs.read(OFF + D.STATUS, 4) & D.STATUS_INT


def test_doe_rejects_bad_config() -> None:
    with pytest.raises(VfiolabError, match="need a handler"):
        D([(1, 1)])
    with pytest.raises(VfiolabError, match="listed twice"):
        D([(1, 1), (1, 1)], handler=lambda v, t, p: p)
    with pytest.raises(VfiolabError, match="message number"):
        D(interrupt=True, msg_number=0x800)
    cs = place(D([(1, 1)], handler=lambda v, t, p: [1 << 32]))
    with pytest.raises(VfiolabError, match="dwords"):
        doe_send(cs, [0x00010001, 2])


# =============================================================================== IDE
def test_ide_layout_matches_pci_regs() -> None:
    cap = ide.IdeCap(link_tcs=3, selective=[0, 2, 15], aggregation=True, pcrc=True, sel_cfg=True)
    # pci_regs.h: link blocks of 8 bytes from 0xc, then PCI_IDE_SEL_BLOCK_SIZE(n) = 20 + 12 n each.
    assert cap.length() == 0x0C + 3 * 8 + (20 + 0) + (20 + 24) + (20 + 180)
    assert [cap.selective_block(i) for i in range(3)] == [0x24, 0x24 + 20, 0x24 + 20 + 44]
    cs = place(cap)
    c = cs.read(OFF + 4, 4)
    assert c & ide.CAP_LINK and c & ide.CAP_SELECTIVE and c & ide.CAP_IDE_KM
    assert (c >> 13) & 7 == 2 and (c >> 16) & 0xFF == 2  # counts are encoded minus one
    assert [cs.read(OFF + cap.selective_block(i), 4) for i in range(3)] == [0, 2, 15]
    assert ide.IdeCap().cap & (ide.CAP_LINK | ide.CAP_SELECTIVE) == 0


def test_ide_stream_registers() -> None:
    cap = ide.IdeCap(link_tcs=1, selective=[1])
    cs = place(cap)
    link = OFF + cap.link_block(0)
    cs.write(link, 4, 0xFFFFFFFF)
    # No aggregation, PCRC or partial header support: those fields stay 0.
    assert cs.read(link, 4) == ide.CTL_EN | ide.CTL_ALG | ide.CTL_TC | ide.CTL_ID
    sel = OFF + cap.selective_block(0)
    cs.write(sel + ide.SEL_CTL, 4, 0xFFFFFFFF)
    assert cs.read(sel + ide.SEL_CTL, 4) == (ide.CTL_EN | ide.CTL_ALG | ide.CTL_TC | ide.CTL_ID
                                            | ide.CTL_DEFAULT)
    cs.write(sel + ide.SEL_RID_1, 4, 0xFFFFFFFF)
    cs.write(sel + ide.SEL_RID_2, 4, 0xFFFFFFFF)
    assert cs.read(sel + ide.SEL_RID_1, 4) == 0x00FFFF00
    assert cs.read(sel + ide.SEL_RID_2, 4) == 0xFFFFFF01
    cs.write(sel + ide.SEL_ADDR_0, 4, 0xFFFFFFFF)
    assert cs.read(sel + ide.SEL_ADDR_0, 4) == 0xFFFFFF01
    # State is reported by the model; the IDE Fail bit is RW1C.
    cap.set_stream_state(cs, ide.STATE_SECURE, selective=0)
    cs.set(sel + ide.SEL_STS, 4, cs.get(sel + ide.SEL_STS, 4) | ide.STS_IDE_FAIL)
    cs.write(sel + ide.SEL_STS, 4, 0xFFFFFFFF)
    assert cs.read(sel + ide.SEL_STS, 4) == ide.STATE_SECURE
    with pytest.raises(VfiolabError):
        cap.set_stream_state(cs, 2, link=1)
    with pytest.raises(VfiolabError):
        ide.IdeCap(selective=[16])


# =============================================================================== TPH
def test_tph_table_in_capability() -> None:
    cap = tph.TphCap(st_location=tph.LOC_CAP, st_entries=5)
    assert cap.length() == 0x0C + 12  # 5 16-bit entries padded to a dword
    cs = place(cap)
    assert cs.read(OFF + 4, 4) == 0x1 | 0x2 | 1 << 9 | 4 << 16  # NS+IV, in cap, size-1
    cs.write(OFF + 8, 4, 0xFFFFFFFF)
    assert cs.read(OFF + 8, 4) == 0x307
    cs.write(OFF + 0x0C, 4, 0xFFFFFFFF)
    # Without Extended TPH only ST Lower is writable.
    assert cs.read(OFF + 0x0C, 4) == 0x00FF00FF
    cs.write(OFF + 0x14, 4, 0xFFFFFFFF)  # entry 4 and the padding
    assert cs.read(OFF + 0x14, 4) == 0x000000FF
    cs2 = place(tph.TphCap(st_location=tph.LOC_CAP, st_entries=2, extended=True))
    cs2.write(OFF + 0x0C, 4, 0xFFFFFFFF)
    assert cs2.read(OFF + 0x0C, 4) == 0xFFFFFFFF


def test_tph_msix_and_validation() -> None:
    cap = tph.TphCap(st_location=tph.LOC_MSIX, st_entries=2048, device_specific=True)
    assert cap.length() == 0x0C
    assert cap.cap == 0x1 | 0x2 | 0x4 | 2 << 9 | 2047 << 16
    for loc, entries in ((tph.LOC_CAP, 65), (tph.LOC_NONE, 1), (3, 1), (tph.LOC_MSIX, 0)):
        with pytest.raises(VfiolabError):
            tph.TphCap(st_location=loc, st_entries=entries)


# =============================================================================== DPC
P = dpc.DpcCap


def test_dpc_attributes_and_sticky_status() -> None:
    cs = place(P(int_msg=3, sw_trigger=True))
    assert cs.read(OFF + P.CAP, 2) == 3 | P.CAP_SW_TRIGGER
    assert P().length() == 0x0C
    cs.write(OFF + P.CTRL, 2, 0xFFFF)
    # Trigger Enable 11b is reserved: the software trigger does nothing.
    assert not cs.read(OFF + P.STATUS, 2) & P.STATUS_TRIGGER
    cs.write(OFF + P.CTRL, 2, 0xFFFE)
    # Poisoned TLP and DL_Active enables are RO 0 without support; SW trigger reads back 0.
    assert cs.read(OFF + P.CTRL, 2) == 0x1E
    st_ = cs.read(OFF + P.STATUS, 2)
    assert st_ & P.STATUS_TRIGGER and (st_ >> 1) & 3 == dpc.REASON_IN_EXT
    assert (st_ >> 5) & 3 == dpc.EXT_SW_TRIGGER and st_ & P.STATUS_INT
    cs.write(OFF + P.STATUS, 2, 0)
    assert cs.read(OFF + P.STATUS, 2) == st_  # RW1C: writing 0 changes nothing
    cs.reset(RESET_HOT)
    assert cs.read(OFF + P.STATUS, 2) == st_  # sticky survives a hot reset
    assert cs.read(OFF + P.CTRL, 2) == 0  # control is not sticky
    cs.write(OFF + P.STATUS, 2, P.STATUS_TRIGGER | P.STATUS_INT)
    assert cs.read(OFF + P.STATUS, 2) == st_ & ~(P.STATUS_TRIGGER | P.STATUS_INT)
    cs.reset(RESET_FUNDAMENTAL)
    assert cs.read(OFF + P.STATUS, 2) == 0


def test_dpc_trigger_rules() -> None:
    fired: list[P] = []
    cap = P(on_trigger=fired.append)
    cs = place(cap)
    assert not cap.trigger(dpc.REASON_FATAL, source_id=0x0100)  # DPC disabled
    cs.write(OFF + P.CTRL, 2, 1)  # ERR_FATAL only
    assert not cap.trigger(dpc.REASON_NONFATAL, source_id=0x0100)
    assert cap.trigger(dpc.REASON_FATAL, source_id=0x0208)
    assert cs.read(OFF + P.SOURCE_ID, 2) == 0x0208 and fired == [cap]
    assert not cap.trigger(dpc.REASON_FATAL)  # already triggered
    cs.write(OFF + P.STATUS, 2, P.STATUS_TRIGGER)
    cs.write(OFF + P.CTRL, 2, 2)
    assert cap.trigger(dpc.REASON_NONFATAL, source_id=0x0300)
    assert (cs.read(OFF + P.STATUS, 2) >> 1) & 3 == dpc.REASON_NONFATAL


def test_dpc_rp_extensions() -> None:
    cap = P(rp_extensions=True, rp_pio_log_size=9)
    assert cap.length() == 0x20 + 4 * 9  # header log at 0x20, ImpSpec at 0x30, prefix log from 0x34
    cs = place(cap)
    assert (cs.read(OFF + P.CAP, 2) >> 8) & 0xF == 9
    assert cs.read(OFF + P.RP_PIO_MASK, 4) == dpc.RP_PIO_BITS
    cs.write(OFF + P.RP_PIO_SEVERITY, 4, 0xFFFFFFFF)
    assert cs.read(OFF + P.RP_PIO_SEVERITY, 4) == dpc.RP_PIO_BITS
    cs.set(OFF + P.RP_PIO_STATUS, 4, 0x00010001)
    cs.reset(RESET_HOT)
    assert cs.read(OFF + P.RP_PIO_SEVERITY, 4) == dpc.RP_PIO_BITS  # RWS
    cs.write(OFF + P.RP_PIO_STATUS, 4, 0x00000001)
    assert cs.read(OFF + P.RP_PIO_STATUS, 4) == 0x00010000
    assert (P(rp_extensions=True, rp_pio_log_size=15).cap & P.CAP_LOG_SIZE4) == 0
    assert P(rp_extensions=True, rp_pio_log_size=15).length() == 0x5C
    with pytest.raises(VfiolabError):
        P(rp_extensions=True, rp_pio_log_size=3)


# =============================================================================== Resizable BAR
MB, GB = 1 << 20, 1 << 30


def test_rebar_encoding_matches_kernel() -> None:
    # drivers/pci/rebar.c pci_rebar_bytes_to_size: log2(bytes) - 20; the spec goes on to 8 EB = 43.
    assert rebar.size_to_encoding(MB) == 0
    assert rebar.size_to_encoding(128 << 40) == 27  # capability register bit 31
    assert rebar.size_to_encoding(1 << 63) == 43
    for bad in (0, 3 * MB, MB // 2, 1 << 64):
        with pytest.raises(VfiolabError):
            rebar.size_to_encoding(bad)


def test_rebar_registers_and_size_writes() -> None:
    resized: list[tuple[int, int]] = []
    cap = rebar.ResizableBarCap([rebar.RebarBar(0, [MB, 256 * MB, GB], 256 * MB),
                                 rebar.RebarBar(2, [8 * GB, 1 << 48])],
                                on_resize=lambda i, s: resized.append((i, s)))
    assert cap.length() == 4 + 16
    cs = place(cap)
    assert cs.read(OFF + 4, 4) == (1 << 0 | 1 << 8 | 1 << 10) << 4
    assert cs.read(OFF + 8, 4) == 0 | 2 << 5 | 8 << 8
    # 2^48 = 256 TB is encoding 28: bit 16 of the control register; current = largest.
    assert cs.read(OFF + 12, 4) == (1 << 13) << 4
    assert cs.read(OFF + 16, 4) == 2 | 0 << 5 | 28 << 8 | 1 << 16
    cs.write(OFF + 8, 4, 0xFFFFFFFF)  # size 63: not supported, ignored; other bits RO
    assert cs.read(OFF + 8, 4) == 0 | 2 << 5 | 8 << 8
    cs.write(OFF + 9, 1, 10)  # 1 GB
    assert cs.read(OFF + 8, 4) >> 8 & 0x3F == 10 and resized == [(0, GB)]
    cs.write(OFF + 9, 1, 1)  # 2 MB: not supported
    assert cap.current_size(cs, 0) == GB
    cs.write(OFF + 17, 1, 13)
    assert cap.current_size(cs, 2) == 8 * GB and resized[-1] == (2, 8 * GB)
    cs.reset(RESET_HOT)
    assert cap.current_size(cs, 0) == 256 * MB


@settings(max_examples=100, deadline=None)
@given(st.sets(st.integers(0, 43), min_size=1), st.integers(0, 63))
def test_rebar_only_supported_sizes_stick(sizes: set[int], wanted: int) -> None:
    cap = rebar.VfResizableBarCap([rebar.RebarBar(1, [1 << (e + 20) for e in sizes])])
    cs = place(cap)
    before = cs.read(OFF + 8, 4)
    cs.write(OFF + 8, 4, (before & ~0x3F00) | wanted << 8)
    got = (cs.read(OFF + 8, 4) >> 8) & 0x3F
    assert got == (wanted if wanted in sizes else max(sizes))
    assert cs.read(OFF + 8, 4) & ~0x3F00 == before & ~0x3F00


def test_rebar_validation() -> None:
    with pytest.raises(VfiolabError):
        rebar.ResizableBarCap([])
    with pytest.raises(VfiolabError):
        rebar.ResizableBarCap([rebar.RebarBar(0, [MB]), rebar.RebarBar(0, [MB])])
    with pytest.raises(VfiolabError):
        rebar.ResizableBarCap([rebar.RebarBar(0, [MB], 2 * MB)])
    with pytest.raises(VfiolabError):
        rebar.ResizableBarCap([rebar.RebarBar(6, [MB])])


# =============================================================================== VSEC / DVSEC
def test_vsec_header_and_body() -> None:
    cs = place(vsec.VsecCap(0x1234, 5, b"\x11\x22\x33", body_rw=b"\xff\x00\x0f"))
    assert cs.read(OFF, 4) & 0xFFFF == 0x0B
    assert cs.read(OFF + 4, 4) == 0x1234 | 5 << 16 | 11 << 20
    cs.write(OFF + 8, 4, 0xFFFFFFFF)
    assert cs.read(OFF + 8, 4) == 0x003F22FF
    with pytest.raises(VfiolabError):
        vsec.VsecCap(1, body=b"\x00" * 0xFF8)
    with pytest.raises(VfiolabError):
        vsec.VsecCap(1, body=b"\x00", body_rw=b"")


def test_dvsec_header_and_body() -> None:
    cap = dvsec.DvsecCap(0x8086, 0x23, 1, b"\xaa\xbb")
    assert cap.length() == 12
    cs = place(cap)
    assert cs.read(OFF + 4, 4) == 0x8086 | 1 << 16 | 12 << 20
    assert cs.read(OFF + 8, 4) == 0x23 | 0xBBAA << 16
    cs.write(OFF + 8, 4, 0)
    assert cs.read(OFF + 8, 4) == 0x23 | 0xBBAA << 16  # RO


def test_dvsec_decoder_stops_where_lspci_dies() -> None:
    # A Non-CXL Function Map DVSEC whose Len (16) is shorter than the eight registers lspci reads.
    cs = ConfigSpace()
    cs.set(OFF, 4, 0x00010023)
    cs.set(OFF + 4, 4, cxl.CXL_VENDOR | 16 << 20)
    cs.set(OFF + 8, 2, cxl.ID_FUNCTION_MAP)
    out = io.StringIO()
    with pytest.raises(dvsec.LspciInternalBug, match="non-read configuration byte at position 110"):
        dvsec.decode_dvsec(DecodeContext(cs.dump(), 4096, verbose=2), out, OFF)
    assert out.getvalue().endswith(": CXL\n\t\tFuncMap 0: 00000000\n")


# =============================================================================== CXL
def test_cxl_headers() -> None:
    cases = [(cxl.CxlDeviceDvsec(), 0, 2, 0x3C), (cxl.CxlDeviceDvsec(revision=1), 0, 1, 0x38),
             (cxl.CxlFunctionMapDvsec(), 2, 0, 0x2C), (cxl.CxlPortDvsec(), 3, 0, 0x28),
             (cxl.CxlGpfPortDvsec(), 4, 0, 0x10), (cxl.CxlGpfDeviceDvsec(), 5, 0, 0x10),
             (cxl.CxlFlexBusDvsec(revision=1), 7, 1, 0x14), (cxl.CxlFlexBusDvsec(), 7, 2, 0x20),
             (cxl.CxlRegisterLocatorDvsec([cxl.RegisterBlock(0, 1, 0)] * 3), 8, 0, 0x24),
             (cxl.CxlMldDvsec(), 9, 0, 0x10)]
    for cap, dvsec_id, rev, length in cases:
        cs = place(cap)
        assert cs.read(OFF + 4, 4) == 0x1E98 | rev << 16 | length << 20, cap.name
        assert cs.read(OFF + 8, 2) == dvsec_id
        assert cap.length() == length


def test_cxl_device_lock_and_ranges() -> None:
    C = cxl.CxlDeviceDvsec
    cap = C(cache=True, viral=True, ranges=[cxl.CxlRange(4 * GB, base=64 * GB, interleave=2)])
    cs = place(cap)
    assert cs.read(OFF + C.CAP, 2) == C.CAP_CACHE | C.CAP_IO | C.CAP_MEM | 1 << 4 | C.CAP_VIRAL | C.CAP_PM_INIT
    assert cs.read(OFF + 0x18, 4) == 1 and cs.read(OFF + 0x1C, 4) == 0x3 | 2 << 8 | 1 << 13
    assert cs.read(OFF + 0x20, 4) == 0x10 and cs.read(OFF + 0x24, 4) == 0
    cs.write(OFF + C.CTRL, 2, 0xFFFF)
    assert cs.read(OFF + C.CTRL, 2) == C.CTRL_LOCKED_RW | C.CTRL_IO_EN
    cs.write(OFF + C.CTRL, 2, 0)
    assert cs.read(OFF + C.CTRL, 2) == C.CTRL_IO_EN  # IO_Enable is hardwired
    cs.write(OFF + 0x24, 4, 0xFFFFFFFF)
    assert cs.read(OFF + 0x24, 4) == 0xF0000000
    cs.write(OFF + C.CTRL, 2, C.CAP_MEM)
    cs.write(OFF + C.LOCK, 2, 1)
    cs.write(OFF + C.LOCK, 2, 0)
    assert cs.read(OFF + C.LOCK, 2) == 1  # CONFIG_LOCK is write-once
    cs.write(OFF + C.CTRL, 2, 0)
    cs.write(OFF + 0x24, 4, 0)
    assert cs.read(OFF + C.CTRL, 2) == C.CAP_MEM | C.CTRL_IO_EN  # locked (RWL)
    assert cs.read(OFF + 0x24, 4) == 0xF0000000
    # Viral status is RW1CS: survives a hot reset, which also unlocks the configuration.
    cs.set(OFF + C.STATUS, 2, C.CAP_VIRAL)
    cs.reset(RESET_HOT)
    assert cs.read(OFF + C.STATUS, 2) == C.CAP_VIRAL and cs.read(OFF + C.LOCK, 2) == 0
    cs.write(OFF + C.CTRL, 2, 0x1)
    assert cs.read(OFF + C.CTRL, 2) == 0x1 | C.CTRL_IO_EN
    cs.write(OFF + C.STATUS, 2, C.CAP_VIRAL)
    assert cs.read(OFF + C.STATUS, 2) == 0
    with pytest.raises(VfiolabError):
        C(ranges=[cxl.CxlRange(GB + MB)])
    with pytest.raises(VfiolabError):
        C(ranges=[cxl.CxlRange(GB)] * 3)


def test_cxl_device_initiate_bits() -> None:
    C = cxl.CxlDeviceDvsec
    cs = place(C(cache=True, cache_wbi=True, cxl_reset=True))
    cs.write(OFF + C.CTRL2, 2, C.CTRL2_WBI | C.CTRL2_RESET | 1)
    assert cs.read(OFF + C.CTRL2, 2) == 1  # Initiate bits read 0
    assert cs.read(OFF + C.STATUS2, 2) == C.STATUS2_PM_DONE | C.STATUS2_CACHE_INV | C.STATUS2_RESET_DONE
    cs2 = place(C())
    cs2.write(OFF + C.CTRL2, 2, C.CTRL2_RESET)
    assert cs2.read(OFF + C.STATUS2, 2) == C.STATUS2_PM_DONE  # no CXL Reset capability: nothing happens


def test_cxl_other_dvsecs() -> None:
    cs = place(cxl.CxlRegisterLocatorDvsec([cxl.RegisterBlock(2, 3, 0x1234_0000), cxl.RegisterBlock(0, 1, 1 << 40)]))
    assert cs.read(OFF + 0x0C, 4) == 2 | 3 << 8 | 0x1234_0000 and cs.read(OFF + 0x10, 4) == 0
    assert cs.read(OFF + 0x14, 4) == 1 << 8 and cs.read(OFF + 0x18, 4) == 1 << 8
    with pytest.raises(VfiolabError):
        cxl.CxlRegisterLocatorDvsec([cxl.RegisterBlock(0, 1, 0x1000)])
    cs = place(cxl.CxlGpfPortDvsec((5, 2), (3, 7)))
    assert cs.read(OFF + 0x0C, 4) == 0x0205 | 0x0703 << 16
    cs.write(OFF + 0x0C, 4, 0xFFFFFFFF)
    assert cs.read(OFF + 0x0C, 4) == 0x0F0F0F0F
    cs = place(cxl.CxlGpfDeviceDvsec((4, 5), 1234))
    assert cs.read(OFF + 0x0A, 2) == 0x0504 and cs.read(OFF + 0x0C, 4) == 1234
    cs = place(cxl.CxlMldDvsec(4))
    assert cs.read(OFF + 0x0A, 2) == 4
    cs.write(OFF + 0x0C, 2, 0xFFFF)
    assert cs.read(OFF + 0x0C, 2) == 0xFFFF
    cs = place(cxl.CxlPortDvsec())
    cs.write(OFF + 0x0C, 4, 0xFFFFFFFF)
    assert cs.read(OFF + 0x0C, 4) == 0x400F | 0xFFFF << 16
    cs.write(OFF + 0x20, 4, 0xFFFFFFFF)
    assert cs.read(OFF + 0x20, 4) == 0xFFFFE001
    cs = place(cxl.CxlFlexBusDvsec(nop_hint=True))
    cs.set(OFF + 0x0E, 2, 0x1F07)
    cs.reset(RESET_HOT)
    cs.write(OFF + 0x0E, 2, 0x0100)
    assert cs.read(OFF + 0x0E, 2) == 0x1E00  # error bits RW1CS; the link status bits are not sticky
