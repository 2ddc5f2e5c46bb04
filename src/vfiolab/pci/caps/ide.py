"""Integrity and Data Encryption extended capability (PCIe Base 6.0 §7.9.26): builder and lspci decoder.

Layout (Linux ``pci_regs.h`` ``PCI_IDE_*``): IDE Capability (+4, RO), IDE Control (+8), then one 8-byte
Link IDE Stream block (control, status) per supported traffic class, then one Selective IDE Stream block
per selective stream: capability, control, status, RID Association 1 and 2, and that stream's Address
Association register blocks (12 bytes each).  Stream state changes when keys are programmed through
IDE_KM, which lives in ``vfiolab.security``; the helpers here let it set the reported state.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from vfiolab.errors import VfiolabError
from vfiolab.pci.caps.base import Capability, register_decoder
from vfiolab.pci.config import ConfigSpace
from vfiolab.pci.decode import DecodeContext, Out

# IDE Capability register
CAP_LINK = 0x00000001
CAP_SELECTIVE = 0x00000002
CAP_FLOWTHROUGH = 0x00000004
CAP_PARTIAL_HEADER_ENC = 0x00000008
CAP_AGGREGATION = 0x00000010
CAP_PCRC = 0x00000020
CAP_IDE_KM = 0x00000040
CAP_SEL_CFG = 0x00000080
CAP_TEE_LIMITED = 0x01000000
ALG_AES_GCM_256 = 0  # the only defined Supported Algorithms encoding

# Stream control fields shared by Link and Selective streams
CTL_EN = 0x00000001
CTL_TX_AGGR = 0x000000FC  # NPR [3:2], PR [5:4], CPL [7:6]
CTL_PCRC_EN = 0x00000100
CTL_SEL_CFG_EN = 0x00000200  # selective streams only
CTL_PART_ENC = 0x00003C00
CTL_ALG = 0x0007C000
CTL_TC = 0x00380000
CTL_DEFAULT = 0x00400000  # selective streams only
CTL_TEE_LIMITED = 0x00800000  # selective streams only
CTL_ID = 0xFF000000
STS_STATE = 0x0000000F
STS_IDE_FAIL = 0x80000000
STATE_INSECURE = 0
STATE_SECURE = 2

# Selective stream block
SEL_CAP = 0x00
SEL_CTL = 0x04
SEL_STS = 0x08
SEL_RID_1 = 0x0C  # RID Limit [23:8]
SEL_RID_2 = 0x10  # Valid [0], RID Base [23:8], Segment Base [31:24]
SEL_ADDR_0 = 0x14  # first Address Association block
ADDR_BLOCK_SIZE = 12  # Reg 1: Valid [0], Base Low [19:8], Limit Low [31:20]; Reg 2: Limit Upper; Reg 3: Base Upper
LINK_BLOCK_SIZE = 8


def selective_block_size(n_addr: int) -> int:
    """Bytes of one Selective IDE Stream block with ``n_addr`` address blocks (``PCI_IDE_SEL_BLOCK_SIZE``)."""
    return SEL_ADDR_0 + ADDR_BLOCK_SIZE * n_addr


class IdeCap(Capability):
    """IDE capability: ``link_tcs`` Link IDE stream blocks and one selective stream per entry of
    ``selective`` (each entry is that stream's number of address association blocks, 0..15)."""

    cap_id: ClassVar[int] = 0x30
    extended: ClassVar[bool] = True
    name: ClassVar[str] = "Integrity and Data Encryption"

    CAP: ClassVar[int] = 0x04
    CTRL: ClassVar[int] = 0x08
    LINK_0: ClassVar[int] = 0x0C

    def __init__(self, *, link_tcs: int = 0, selective: Sequence[int] = (), algorithm: int = ALG_AES_GCM_256,
                 flow_through: bool = False, partial_header: bool = False, aggregation: bool = False,
                 pcrc: bool = False, ide_km: bool = True, sel_cfg: bool = False, tee_limited: bool = False,
                 version: int = 1) -> None:
        if not 0 <= link_tcs <= 8:
            raise VfiolabError(f"IDE: {link_tcs} link IDE traffic classes (0 = no link IDE, at most 8)")
        if len(selective) > 256:
            raise VfiolabError(f"IDE: {len(selective)} selective streams (at most 256)")
        if any(not 0 <= n <= 15 for n in selective):
            raise VfiolabError(f"IDE: address association block counts {list(selective)} must be 0..15")
        if not 0 <= algorithm <= 0x1F:
            raise VfiolabError(f"IDE: algorithm encoding {algorithm} outside 5 bits")
        self.link_tcs, self.selective = link_tcs, list(selective)
        self.cap = ((CAP_LINK if link_tcs else 0) | (CAP_SELECTIVE if selective else 0)
                    | (CAP_FLOWTHROUGH if flow_through else 0) | (CAP_PARTIAL_HEADER_ENC if partial_header else 0)
                    | (CAP_AGGREGATION if aggregation else 0) | (CAP_PCRC if pcrc else 0)
                    | (CAP_IDE_KM if ide_km else 0) | (CAP_SEL_CFG if sel_cfg else 0)
                    | (CAP_TEE_LIMITED if tee_limited else 0) | algorithm << 8
                    | (max(link_tcs - 1, 0) << 13) | (max(len(selective) - 1, 0) << 16))
        self.version = version
        if self.length() > 0x1000 - 0x100:
            raise VfiolabError(f"IDE: {self.length()} bytes do not fit in extended config space")

    def length(self) -> int:
        return self.LINK_0 + LINK_BLOCK_SIZE * self.link_tcs + sum(selective_block_size(n) for n in self.selective)

    def link_block(self, i: int) -> int:
        """Offset (from the capability) of Link IDE Stream block ``i``."""
        if not 0 <= i < self.link_tcs:
            raise VfiolabError(f"IDE: no link stream block {i} (have {self.link_tcs})")
        return self.LINK_0 + LINK_BLOCK_SIZE * i

    def selective_block(self, i: int) -> int:
        """Offset (from the capability) of Selective IDE Stream block ``i``."""
        if not 0 <= i < len(self.selective):
            raise VfiolabError(f"IDE: no selective stream block {i} (have {len(self.selective)})")
        return (self.LINK_0 + LINK_BLOCK_SIZE * self.link_tcs
                + sum(selective_block_size(n) for n in self.selective[:i]))

    def _ctl_rw(self, selective: bool) -> int:
        # Optional fields are RW only when the matching capability bit is set (else RsvdP/hardwired 0).
        cap = self.cap
        rw = CTL_EN | CTL_ALG | CTL_TC | CTL_ID
        rw |= CTL_TX_AGGR if cap & CAP_AGGREGATION else 0
        rw |= CTL_PCRC_EN if cap & CAP_PCRC else 0
        rw |= CTL_PART_ENC if cap & CAP_PARTIAL_HEADER_ENC else 0
        if selective:
            rw |= CTL_DEFAULT
            rw |= CTL_SEL_CFG_EN if cap & CAP_SEL_CFG else 0
            rw |= CTL_TEE_LIMITED if cap & CAP_TEE_LIMITED else 0
        return rw

    def build(self, cs: ConfigSpace, off: int) -> None:
        cs.init_reg(off + self.CAP, 4, self.cap)
        cs.init_reg(off + self.CTRL, 4, 0, rw=CAP_FLOWTHROUGH if self.cap & CAP_FLOWTHROUGH else 0)
        for i in range(self.link_tcs):
            at = off + self.link_block(i)
            cs.init_reg(at, 4, 0, rw=self._ctl_rw(False))
            cs.init_reg(at + 4, 4, STATE_INSECURE, w1c=STS_IDE_FAIL)
        for i, n_addr in enumerate(self.selective):
            at = off + self.selective_block(i)
            cs.init_reg(at + SEL_CAP, 4, n_addr)
            cs.init_reg(at + SEL_CTL, 4, 0, rw=self._ctl_rw(True))
            cs.init_reg(at + SEL_STS, 4, STATE_INSECURE, w1c=STS_IDE_FAIL)
            cs.init_reg(at + SEL_RID_1, 4, 0, rw=0x00FFFF00)
            cs.init_reg(at + SEL_RID_2, 4, 0, rw=0xFFFFFF01)
            for j in range(n_addr):
                a = at + SEL_ADDR_0 + ADDR_BLOCK_SIZE * j
                cs.init_reg(a, 4, 0, rw=0xFFFFFF01)
                cs.init_reg(a + 4, 4, 0, rw=0xFFFFFFFF)
                cs.init_reg(a + 8, 4, 0, rw=0xFFFFFFFF)

    def set_stream_state(self, cs: ConfigSpace, state: int, *, link: int | None = None,
                         selective: int | None = None) -> None:
        """Model side (IDE_KM): report ``state`` in the status register of one link or selective stream."""
        if (link is None) == (selective is None):
            raise VfiolabError("IDE: name exactly one of link= or selective=")
        if not 0 <= state <= 0xF:
            raise VfiolabError(f"IDE: stream state {state} outside 4 bits")
        if self.offset < 0:
            raise VfiolabError("IDE: capability not placed in a config space yet")
        at = self.offset + (self.link_block(link) + 4 if link is not None
                            else self.selective_block(selective or 0) + SEL_STS)
        cs.set(at, 4, (cs.get(at, 4) & ~STS_STATE) | state)


# pciutils 3.9.0 ls-ecaps.c show_ext_caps has no case for ID 0x30 (IDE decoding came in 3.12): it prints
# the generic line at every verbosity.
@register_decoder(IdeCap.cap_id, extended=True)
def decode_ide(ctx: DecodeContext, out: Out, where: int) -> None:
    """``Extended Capability ID 0x30``, as lspci 3.9 prints it."""
    out.write(f"Extended Capability ID {IdeCap.cap_id:#x}\n")
