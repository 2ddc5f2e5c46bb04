"""Differential tests: our extended-capability decoders (AER, ACS, ARI, ATS, PRI, PASID, SR-IOV, DSN,
LTR, PTM, Secondary PCIe, L1SS) against the real lspci 3.9.0 reading the same bytes from a dump.

Each function is a hand-made PCIe function (type 0 header, a PCI Express capability written byte by
byte at 0x40) with our builders chained from 0x100; register bodies are then left as built, written
through the config-cycle path, or replaced by random bytes.  Many functions share one dump so one
lspci run checks them all.  Dumps may be cut short to exercise lspci's fetch failures.
"""

from __future__ import annotations

import io
import itertools
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lspci_oracle import cap_sections, run_lspci
from vfiolab.pci import regs
from vfiolab.pci.caps import EXT_DECODERS, Capability, CapabilityList
from vfiolab.pci.caps.acs import AcsCap
from vfiolab.pci.caps.aer import UNC_DEFINED, AerCap
from vfiolab.pci.caps.ari import AriCap
from vfiolab.pci.caps.ats import AtsCap
from vfiolab.pci.caps.dsn import DsnCap
from vfiolab.pci.caps.l1ss import L1ssCap
from vfiolab.pci.caps.ltr import LtrCap
from vfiolab.pci.caps.pasid import PasidCap
from vfiolab.pci.caps.pri import PriCap
from vfiolab.pci.caps.ptm import PtmCap
from vfiolab.pci.caps.secpcie import SecondaryPcieCap
from vfiolab.pci.caps.sriov import SriovCap, VfBar
from vfiolab.pci.config import ConfigSpace
from vfiolab.pci.decode import DecodeContext
from vfiolab.pci.dump import format_dump

pytestmark = pytest.mark.interop

TYPE_ENDPOINT, TYPE_ROOT_PORT, TYPE_RC_EC = 0x0, 0x4, 0xA
PCIE_TYPES = (0x0, 0x1, 0x4, 0x5, 0x6, 0x7, 0x8, 0x9, 0xA, 0x3)  # 0x3: lspci's "Unknown type 3"


def pcie_function(pcie_type: int) -> tuple[ConfigSpace, CapabilityList]:
    """A type 0 function with only a PCI Express capability (v2) at 0x40, written by hand."""
    cs = ConfigSpace()
    cs.set(regs.VENDOR_ID, 4, 0x56781234)
    cs.set(regs.STATUS, 2, regs.STATUS_CAP_LIST)
    cs.set(regs.CAPABILITY_LIST, 1, 0x40)
    cs.set(0x40, 4, 0x10 | (0x02 | pcie_type << 4) << 16)  # ID 0x10, next 0, flags: version 2, port type
    return cs, CapabilityList(cs)


def expected_sections(cfg: bytes, avail: int, verbose: int, pcie_type: int) -> dict[int, str]:
    """Our decoders' text for every extended capability, walked as lspci walks the chain."""
    ctx = DecodeContext(cfg[:avail], avail=avail, verbose=verbose, is_pcie=True, pcie_type=pcie_type)
    out: dict[int, str] = {}
    where = regs.EXT_CAP_START
    while where and ctx.fetch(where, 4) and where not in out:
        hdr = ctx.r32(where)
        if hdr in (0, 0xFFFFFFFF):
            break
        buf = io.StringIO()
        EXT_DECODERS[hdr & 0xFFFF](ctx, buf, where)
        text = f"\tCapabilities: [{where:03x}" + (f" v{(hdr >> 16) & 0xF}" if verbose > 1 else "") + "] "
        text += buf.getvalue()
        # A decoder that printed no newline (DSN cut short) is ended by the device's closing blank line.
        out[where] = text if text.endswith("\n") else text + "\n"
        where = (hdr >> 20) & ~3
    return out


_DEV_LINE = re.compile(r"^[0-9a-f]{2}:[0-9a-f]{2}\.[0-7] ", re.MULTILINE)


def lspci_sections(text: str) -> list[dict[int, str]]:
    """lspci's extended-capability sections, one dict per device in output order."""
    starts = [m.start() for m in _DEV_LINE.finditer(text)] + [len(text)]
    return [{k: v for k, v in cap_sections(text[a:b]).items() if k >= regs.EXT_CAP_START}
            for a, b in itertools.pairwise(starts)]


class Func:
    """One generated function: its config bytes, how many were dumped and its PCIe port type."""

    def __init__(self, cfg: bytes, avail: int, pcie_type: int) -> None:
        self.cfg, self.avail, self.pcie_type = cfg, avail, pcie_type

    def __repr__(self) -> str:
        ext = self.cfg[regs.EXT_CAP_START:self.avail].rstrip(b"\0")
        return f"Func(pcie_type={self.pcie_type:#x}, avail={self.avail:#x}, ext_bytes={ext.hex()!r})"


def check(funcs: list[Func]) -> None:
    """Dump all functions in one file and compare every extended capability at -v, -vv and -vvv."""
    dump = "".join(format_dump(0, i >> 5, (i & 31) << 3, f.cfg[:f.avail]) for i, f in enumerate(funcs))
    for verbose in (1, 2, 3):
        got = lspci_sections(run_lspci(dump, "-" + "v" * verbose))
        assert len(got) == len(funcs)
        for i, (f, sections) in enumerate(zip(funcs, got)):
            want = expected_sections(f.cfg, f.avail, verbose, f.pcie_type)
            assert sections == want, f"function {i} (type {f.pcie_type}, {f.avail} bytes) at -{'v' * verbose}"


# ---------------------------------------------------------------------------- builders with drawn parameters
u8, u16, u32 = (st.integers(0, (1 << n) - 1) for n in (8, 16, 32))
flags_ = st.booleans()


@st.composite
def sriov_caps(draw: st.DrawFn) -> SriovCap:
    bars: list[VfBar | None] = []
    slots = 0
    for _ in range(draw(st.integers(0, 6))):
        bar = draw(st.none() | st.builds(VfBar, st.sampled_from([16, 0x1000, 0x4000, 1 << 20, 1 << 33]),
                                         flags_, flags_))
        if bar is not None and not bar.mem64 and bar.size > 1 << 31:
            bar = VfBar(bar.size, True, bar.prefetch)
        need = 2 if bar is not None and bar.mem64 else 1
        if slots + need > 6:
            break
        bars.append(bar)
        slots += need
    total = draw(st.integers(0, 0xFFFF))
    vfm = draw(flags_)
    return SriovCap(total, draw(u16), draw(u16), draw(u16), bars,
                    initial_vfs=draw(st.integers(0, total)) if vfm else None, func_link=draw(u8),
                    vf_migration=vfm, migration_irq=draw(st.integers(0, 0x7FF)), migration_state=draw(u32),
                    ari_preserved=draw(flags_), vf_10bit_tag=draw(flags_),
                    supported_page_sizes=draw(u32) | 1)


@st.composite
def acs_caps(draw: st.DrawFn) -> AcsCap:
    cap = draw(st.integers(0, 0x7F))
    ctrl = cap & draw(st.integers(0, 0x7F))
    bits = draw(st.integers(1, 256)) if cap & AcsCap.EC else 0
    vector = draw(st.integers(0, (1 << bits) - 1)) if bits else 0
    return AcsCap(cap, ctrl, egress_bits=bits, egress_vector=vector)


CAP_STRATEGIES: dict[str, st.SearchStrategy[Capability]] = {
    "aer": st.builds(AerCap, root=flags_, version=st.integers(1, 2),
                     uncor_errors=u32.map(lambda v: v & UNC_DEFINED), ecrc_gen=flags_, ecrc_check=flags_,
                     multi_header=flags_, tlp_prefix_log=flags_, comp_timeout_log=flags_,
                     msg_num=st.integers(0, 31)),
    "acs": acs_caps(),
    "ari": st.builds(AriCap, u8, mfvc_groups=flags_, acs_groups=flags_),
    "ats": st.builds(AtsCap, st.integers(1, 32), page_aligned=flags_, global_invalidate=flags_),
    "pri": st.builds(PriCap, u32, prg_pasid_required=flags_),
    "pasid": st.builds(PasidCap, st.integers(1, 20), exec_perm=flags_, priv_mode=flags_),
    "sriov": sriov_caps(),
    "dsn": st.builds(DsnCap, st.integers(0, (1 << 64) - 1)),
    "ltr": st.builds(LtrCap, st.integers(0, 0x1FFF), st.integers(0, 0x1FFF)),
    "ptm": st.builds(PtmCap, requester=flags_, responder=st.just(True), root=flags_,
                     granularity=st.sampled_from([0, 1, 16, 254, 255])),
    "secpcie": st.builds(SecondaryPcieCap, st.sampled_from([1, 2, 4, 8, 12, 16, 32]),
                         lane_eq=st.integers(0, 0x7F7F).map(lambda v: v & 0x7F7F), downstream=flags_),
    "l1ss": st.builds(L1ssCap, pcipm_l12=flags_, pcipm_l11=flags_, aspm_l12=flags_, aspm_l11=flags_,
                      common_mode_restore_us=u8, power_on_scale=st.integers(0, 3),
                      power_on_value=st.integers(0, 31)),
}


@st.composite
def functions(draw: st.DrawFn, kinds: tuple[str, ...] = tuple(CAP_STRATEGIES)) -> Func:
    """A function with 1-4 of our capabilities chained from 0x100, bodies as built, written or random."""
    pcie_type = draw(st.sampled_from(PCIE_TYPES))
    cs, caps = pcie_function(pcie_type)
    for kind in draw(st.lists(st.sampled_from(kinds), min_size=1, max_size=4)):
        cap = draw(CAP_STRATEGIES[kind])
        prev = caps.ext[-1] if caps.ext else None
        gap = draw(st.sampled_from([0, 0, 4, 0x40]))
        caps.add(cap, None if prev is None else prev.offset + ((prev.length() + 3) & ~3) + gap)
        body = range(cap.offset + 4, cap.offset + cap.length())
        mode = draw(st.sampled_from(["built", "written", "random"]))
        if mode == "written":
            # Software writes through the config-cycle path: only the RW/RW1C bits may change.
            for _ in range(draw(st.integers(1, 6))):
                cs.write(draw(st.sampled_from(body[::4])), 4, draw(u32))
        elif mode == "random":
            cs.set(body.start, len(body), int.from_bytes(draw(st.binary(min_size=len(body),
                                                                        max_size=len(body))), "little"))
    cfg = cs.dump()
    end = max(c.offset + c.length() for c in caps.ext)
    avail = draw(st.sampled_from([4096, 4096, -1]))
    if avail < 0:
        avail = draw(st.integers(regs.EXT_CAP_START, end))
    return Func(cfg, avail, pcie_type)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(functions(), min_size=1, max_size=10))
def test_random_chains_decode_like_lspci(funcs: list[Func]) -> None:
    check(funcs)


@pytest.mark.parametrize("kind", sorted(CAP_STRATEGIES))
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_each_capability_decodes_like_lspci(kind: str, data: st.DataObject) -> None:
    check(data.draw(st.lists(functions((kind,)), min_size=4, max_size=8)))


# ---------------------------------------------------------------------------- targeted cases
def _aer_function(pcie_type: int, fill: int) -> Func:
    cs, caps = pcie_function(pcie_type)
    aer = caps.add(AerCap(root=True))
    cs.set(aer.offset + 4, aer.length() - 4, int.from_bytes(bytes([fill]) * (aer.length() - 4), "little"))
    return Func(cs.dump(), 4096, pcie_type)


def test_aer_root_registers_only_for_root_ports_and_rcecs() -> None:
    funcs = [_aer_function(t, 0xA5) for t in (TYPE_ENDPOINT, TYPE_ROOT_PORT, TYPE_RC_EC, 0x6)]
    check(funcs)
    text = [expected_sections(f.cfg, f.avail, 3, f.pcie_type)[0x100] for f in funcs]
    assert ["RootCmd:" in t for t in text] == [False, True, True, False]
    assert "\t\tErrorSrc: ERR_COR: a5a5 ERR_FATAL/NONFATAL: a5a5\n" in text[1]


def test_aer_root_registers_cut_short() -> None:
    # The first 40 bytes are there but the root registers are not: lspci stops after HeaderLog.
    f = _aer_function(TYPE_ROOT_PORT, 0x5A)
    f = Func(f.cfg, 0x100 + 0x2C + 8, f.pcie_type)
    check([f])
    text = expected_sections(f.cfg, f.avail, 3, f.pcie_type)[0x100]
    assert text.endswith("\t\tHeaderLog: 5a5a5a5a 5a5a5a5a 5a5a5a5a 5a5a5a5a\n")


@pytest.mark.parametrize("cut", range(0x104, 0x110))
def test_truncation_of_every_capability(cut: int) -> None:
    # Each capability alone at 0x100, the dump cut inside its registers: name only, <unreadable>,
    # or (DSN) nothing at all.
    builds = [AerCap(), AcsCap(), AriCap(), AtsCap(), PriCap(), PasidCap(), SriovCap(4, 0x10ed),
              DsnCap(0x0011223344556677), LtrCap(), PtmCap(), SecondaryPcieCap(4), L1ssCap()]
    funcs = []
    for cap in builds:
        cs, caps = pcie_function(TYPE_ENDPOINT)
        caps.add(cap)
        funcs.append(Func(cs.dump(), cut, TYPE_ENDPOINT))
    check(funcs)


def test_sriov_vf_bars_as_linux_programs_them() -> None:
    # 64-bit prefetchable BAR0/1, 32-bit non-prefetchable BAR2, 64-bit BAR 4/5 programmed above 4 GiB.
    cs, caps = pcie_function(TYPE_ENDPOINT)
    sr = caps.add(SriovCap(8, 0x1520, 0x80, 2, [VfBar(0x4000), VfBar(0x1000, mem64=False, prefetch=False),
                                                 None, VfBar(1 << 20, prefetch=False)]))
    assert isinstance(sr, SriovCap)
    for reg, val in ((SriovCap.BAR0, 0xFE000000), (SriovCap.BAR0 + 4, 0x1), (SriovCap.BAR0 + 8, 0xFD000000),
                     (SriovCap.BAR0 + 16, 0x80000000), (SriovCap.BAR0 + 20, 0x38)):
        cs.write(sr.offset + reg, 4, val)
    cs.write(sr.offset + SriovCap.NUM_VFS, 2, 8)
    cs.write(sr.offset + SriovCap.CTRL, 2, SriovCap.CTRL_VFE | SriovCap.CTRL_MSE)
    f = Func(cs.dump(), 4096, TYPE_ENDPOINT)
    check([f])
    text = expected_sections(f.cfg, f.avail, 3, f.pcie_type)[0x100]
    assert "\t\tRegion 0: Memory at 00000001fe000000 (64-bit, prefetchable)\n" in text
    assert "\t\tRegion 2: Memory at fd000000 (32-bit, non-prefetchable)\n" in text
    assert "\t\tRegion 4: Memory at 0000003880000000 (64-bit, non-prefetchable)\n" in text
    assert "IOVCtl:\tEnable+ Migration- Interrupt- MSE+ ARIHierarchy- 10BitTagReq-" in text
