"""vfio-pci config space virtualisation (``drivers/vfio/pci/vfio_pci_config.c``).

The user sees the function's config space through per-capability permission tables: each byte has
"virtualised" bits (read from and written to a shadow copy, ``vconfig``) and "writable" bits (what the
user may change at all); the rest passes through to the hardware.  A byte map records which capability
owns every byte, built by walking both capability chains: capabilities whose length table entry is 0
(``pci_cap_length`` / ``pci_ext_cap_length``, e.g. PASID, DOE, IDE) are unlinked from the chain the user
sees.  BARs and the ROM BAR are fully virtual and report the host resource sizes when sized; Interrupt
Disable is emulated; writing FLR resets the function; power-state writes go through the host's
``vfio_pci_set_power_state``; MSI enable and queue size are owned by SET_IRQS.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from vfiolab.errors import UapiError
from vfiolab.pci import regs
from vfiolab.pci.caps import express_regs as X
from vfiolab.pci.caps import msi as msi_regs
from vfiolab.vfio import uapi as U

if TYPE_CHECKING:
    from vfiolab.vfio.pci_core import VfioPciCoreDevice

PCI_CFG_SPACE_SIZE: Final = 256
PCI_STD_HEADER_SIZEOF: Final = 64
PCI_CAP_ID_BASIC: Final = 0
PCI_CAP_ID_INVALID: Final = 0xFF       # vfio_pci_priv.h: raw access
PCI_CAP_ID_INVALID_VIRT: Final = 0xFE  # virtual access
PCI_CAP_ID_MAX: Final = 0x14
PCI_EXT_CAP_ID_MAX: Final = 0x31
VAR: Final = 0xFF

# capability IDs (pci_regs.h)
CAP_PM, CAP_AGP, CAP_VPD, CAP_MSI, CAP_PCIX, CAP_HT, CAP_VNDR = 0x01, 0x02, 0x03, 0x05, 0x07, 0x08, 0x09
CAP_EXP, CAP_MSIX, CAP_SATA, CAP_AF = 0x10, 0x11, 0x12, 0x13
ECAP_ERR, ECAP_VC, ECAP_DSN, ECAP_PWR, ECAP_MFVC, ECAP_VC9 = 0x01, 0x02, 0x03, 0x04, 0x08, 0x09
ECAP_VNDR, ECAP_ACS, ECAP_ARI, ECAP_ATS, ECAP_SRIOV, ECAP_MCAST, ECAP_PRI = 0x0B, 0x0D, 0x0E, 0x0F, 0x10, 0x12, 0x13
ECAP_REBAR, ECAP_DPA, ECAP_TPH, ECAP_LTR, ECAP_DVSEC = 0x15, 0x16, 0x17, 0x18, 0x23

# vfio_pci_config.c pci_cap_length[]: 0 = hidden from the user, 0xFF = computed
PCI_CAP_LENGTH: Final = {PCI_CAP_ID_BASIC: PCI_STD_HEADER_SIZEOF, CAP_PM: 8, CAP_AGP: 12, CAP_VPD: 8,
                         CAP_MSI: VAR, CAP_PCIX: VAR, CAP_HT: VAR, CAP_VNDR: VAR, CAP_EXP: VAR, CAP_MSIX: 12,
                         CAP_SATA: VAR, CAP_AF: 6}
# vfio_pci_config.c pci_ext_cap_length[]
PCI_EXT_CAP_LENGTH: Final = {ECAP_ERR: 0x2C, ECAP_VC: VAR, ECAP_DSN: 12, ECAP_PWR: 0x10, ECAP_MFVC: VAR,
                             ECAP_VC9: VAR, ECAP_VNDR: VAR, ECAP_ACS: VAR, ECAP_ARI: 8, ECAP_ATS: 8,
                             ECAP_SRIOV: 0x40, ECAP_MCAST: 40, ECAP_PRI: 16, ECAP_REBAR: VAR, ECAP_DPA: VAR,
                             ECAP_TPH: VAR, ECAP_LTR: 8, ECAP_DVSEC: VAR}

PM_PMC, PM_CTRL = 2, 4
PM_CAP_PME_MASK: Final = 0xF800
PM_CTRL_STATE_MASK, PM_CTRL_PME_ENABLE, PM_CTRL_PME_STATUS = 0x0003, 0x0100, 0x8000
AF_CAP, AF_CTRL, AF_CAP_TP, AF_CAP_FLR, AF_CTRL_FLR = 3, 4, 0x01, 0x02, 0x01
VPD_ADDR, VPD_DATA, VPD_ADDR_F = 2, 4, 0x8000
PCI_X_CMD, PCI_X_ECC_CSR = 2, 8
PCI_CAP_EXP_ENDPOINT_SIZEOF_V1, PCI_CAP_EXP_ENDPOINT_SIZEOF_V2 = 20, 0x34
ERR_UNCOR_STATUS, ERR_UNCOR_MASK, ERR_UNCOR_SEVER, ERR_COR_STATUS, ERR_COR_MASK, ERR_CAP = (
    0x04, 0x08, 0x0C, 0x10, 0x14, 0x18)
ERR_UNC_WRITABLE: Final = (0x00000001 | 0x00000010 | 0x00000020 | 0x00001000 | 0x00002000 | 0x00004000
                           | 0x00008000 | 0x00010000 | 0x00020000 | 0x00040000 | 0x00080000 | 0x00100000
                           | 0x00200000 | 0x00400000 | 0x00800000 | 0x01000000 | 0x02000000)
ERR_COR_WRITABLE: Final = 0x00000001 | 0x00000040 | 0x00000080 | 0x00000100 | 0x00001000 | 0x00002000 | 0x00004000 | 0x00008000
ERR_CAP_WRITABLE: Final = 0x00000040 | 0x00000100  # ECRC Generation / Check Enable
PCI_PWR_DATA: Final = 0x08
ALL: Final = 0xFFFFFFFF


# ---------------------------------------------------------------------- permission tables
@dataclass
class Perm:
    """struct perm_bits: virtualised and writable bits per byte, and the read/write functions."""

    virt: bytearray
    write: bytearray
    readfn: str | None = "default"
    writefn: str | None = "default"

    @classmethod
    def alloc(cls, size: int, readfn: str = "default", writefn: str = "default") -> Perm:
        """alloc_perm_bits(): size rounded up to a dword; all readable, none writable, none virtual."""
        n = -(-size // 4) * 4
        return cls(bytearray(n), bytearray(n), readfn, writefn)

    def set(self, off: int, size: int, virt: int, write: int) -> Perm:
        """p_setb / p_setw / p_setd."""
        m = (1 << (8 * size)) - 1
        self.virt[off:off + size] = (virt & m).to_bytes(size, "little")
        self.write[off:off + size] = (write & m).to_bytes(size, "little")
        return self

    def bits(self, table: bytearray, offset: int, count: int) -> int:
        return int.from_bytes(table[offset:offset + count].ljust(count, b"\0"), "little")


def _basic_perm() -> Perm:
    """init_pci_cap_basic_perm()."""
    p = Perm.alloc(PCI_STD_HEADER_SIZEOF, "basic", "basic")
    p.set(regs.VENDOR_ID, 2, ALL, 0).set(regs.DEVICE_ID, 2, ALL, 0)
    p.set(regs.COMMAND, 2, regs.COMMAND_INTX_DISABLE, ALL)
    p.set(regs.STATUS, 2, regs.STATUS_CAP_LIST, 0)
    p.set(regs.CACHE_LINE_SIZE, 1, 0, ALL).set(regs.LATENCY_TIMER, 1, 0, ALL).set(regs.BIST, 1, 0, ALL)
    for i in range(6):
        p.set(regs.BASE_ADDRESS_0 + 4 * i, 4, ALL, ALL)
    p.set(regs.ROM_ADDRESS, 4, ALL, ALL)
    p.set(regs.CAPABILITY_LIST, 1, ALL, 0)
    p.set(regs.INTERRUPT_LINE, 1, ALL, ALL)
    p.set(regs.INTERRUPT_PIN, 1, ALL, 0)
    return p


def _pm_perm() -> Perm:
    """init_pci_cap_pm_perm(): PME bits virtual (the user cannot handle PME), state changes trapped."""
    p = Perm.alloc(8, "default", "pm")
    p.set(1, 1, ALL, 0)
    p.set(PM_PMC, 2, PM_CAP_PME_MASK, 0)
    p.set(PM_CTRL, 4, PM_CTRL_PME_ENABLE | PM_CTRL_PME_STATUS,
          ~(PM_CTRL_PME_ENABLE | PM_CTRL_PME_STATUS | PM_CTRL_STATE_MASK))
    return p


def _vpd_perm() -> Perm:
    """init_pci_cap_vpd_perm()."""
    return Perm.alloc(8, "default", "vpd").set(1, 1, ALL, 0).set(VPD_ADDR, 2, ALL, ALL).set(VPD_DATA, 4, ALL, ALL)


def _pcix_perm() -> Perm:
    """init_pci_cap_pcix_perm()."""
    return Perm.alloc(24).set(1, 1, ALL, 0).set(PCI_X_CMD, 2, 0, ALL).set(PCI_X_ECC_CSR, 4, 0, ALL)


def _exp_perm() -> Perm:
    """init_pci_cap_exp_perm(): device control writable except Phantom; FLR, MPS and MRRS trapped."""
    p = Perm.alloc(PCI_CAP_EXP_ENDPOINT_SIZEOF_V2, "default", "exp").set(1, 1, ALL, 0)
    p.set(X.DEVCTL, 2, X.DEVCTL_BCR_FLR | X.DEVCTL_PAYLOAD | X.DEVCTL_READRQ, ~X.DEVCTL_PHANTOM)
    p.set(X.DEVCTL2, 2, 0, ~X.DEVCTL2_ARI)
    return p


def _af_perm() -> Perm:
    """init_pci_cap_af_perm()."""
    return Perm.alloc(6, "default", "af").set(1, 1, ALL, 0).set(AF_CTRL, 1, AF_CTRL_FLR, AF_CTRL_FLR)


def _err_perm() -> Perm:
    """init_pci_ext_cap_err_perm()."""
    p = Perm.alloc(0x2C).set(0, 4, ALL, 0)
    for off in (ERR_UNCOR_STATUS, ERR_UNCOR_MASK, ERR_UNCOR_SEVER):
        p.set(off, 4, 0, ERR_UNC_WRITABLE)
    for off in (ERR_COR_STATUS, ERR_COR_MASK):
        p.set(off, 4, 0, ERR_COR_WRITABLE)
    return p.set(ERR_CAP, 4, 0, ERR_CAP_WRITABLE)


def _pwr_perm() -> Perm:
    """init_pci_ext_cap_pwr_perm()."""
    return Perm.alloc(0x10).set(0, 4, ALL, 0).set(PCI_PWR_DATA, 1, 0, ALL)


def msi_perm(length: int, flags: int) -> Perm:
    """init_pci_cap_msi_perm(): per device, by the capability's 64-bit and mask flags."""
    p = Perm.alloc(length, "msi", "msi").set(1, 1, ALL, 0).set(msi_regs.FLAGS, 1, ALL, ALL)
    p.set(msi_regs.ADDRESS_LO, 4, ALL, ALL)
    if flags & msi_regs.FLAGS_64BIT:
        p.set(msi_regs.ADDRESS_HI, 4, ALL, ALL).set(msi_regs.DATA_64, 2, ALL, ALL)
        if flags & msi_regs.FLAGS_MASKBIT:
            p.set(msi_regs.MASK_64, 4, 0, ALL).set(msi_regs.PENDING_64, 4, 0, ALL)
    else:
        p.set(msi_regs.DATA_32, 2, ALL, ALL)
        if flags & msi_regs.FLAGS_MASKBIT:
            p.set(msi_regs.MASK_32, 4, 0, ALL).set(msi_regs.PENDING_32, 4, 0, ALL)
    return p


DIRECT_RO: Final = Perm(bytearray(), bytearray(), "direct", None)
UNASSIGNED: Final = Perm(bytearray(), bytearray(), "raw", "raw")
VIRT: Final = Perm(bytearray(), bytearray(), "virt", "virt")
CAP_PERMS: Final[dict[int, Perm]] = {PCI_CAP_ID_BASIC: _basic_perm(), CAP_PM: _pm_perm(), CAP_VPD: _vpd_perm(),
                                     CAP_PCIX: _pcix_perm(), CAP_EXP: _exp_perm(), CAP_AF: _af_perm(),
                                     CAP_VNDR: Perm(bytearray(), bytearray(), "direct", "raw")}
ECAP_PERMS: Final[dict[int, Perm]] = {ECAP_ERR: _err_perm(), ECAP_PWR: _pwr_perm(),
                                      ECAP_VNDR: Perm(bytearray(), bytearray(), "direct", "raw"),
                                      ECAP_DVSEC: Perm(bytearray(), bytearray(), "direct", "raw")}


# ---------------------------------------------------------------------- the virtualised config space
class VfioPciConfig:
    """vdev->vconfig + vdev->pci_config_map for one open device, and the access functions."""

    def __init__(self, vdev: VfioPciCoreDevice) -> None:
        self.vdev = vdev
        size = vdev.cfg_size
        self.size = size
        self.vconfig = bytearray(size)
        self.map = bytearray([PCI_CAP_ID_BASIC] * PCI_STD_HEADER_SIZEOF
                             + [PCI_CAP_ID_INVALID] * (size - PCI_STD_HEADER_SIZEOF))
        self.msi_perm: Perm | None = None
        self.extended_caps = False
        self.bardirty = True
        self.rbar = [0] * 7
        self._rfn: dict[str, Callable[[int, int, Perm, int], int]] = {
            "default": self._default_read, "direct": self._direct_read, "raw": self._raw_read,
            "virt": self._virt_read, "basic": self._basic_read, "msi": self._msi_read}
        self._wfn: dict[str, Callable[[int, int, Perm, int, int], None]] = {
            "default": self._default_write, "raw": self._raw_write, "virt": self._virt_write,
            "basic": self._basic_write, "pm": self._pm_write, "vpd": self._vpd_write, "exp": self._exp_write,
            "af": self._af_write, "msi": self._msi_write}
        self._init()

    # ------------------------------------------------------------------ hardware access
    def _hw(self, pos: int, count: int) -> int:
        return self.vdev.hw_read(pos, count)

    def _vget(self, pos: int, count: int) -> int:
        return int.from_bytes(self.vconfig[pos:pos + count], "little")

    def _vset(self, pos: int, count: int, val: int) -> None:
        self.vconfig[pos:pos + count] = (val & ((1 << (8 * count)) - 1)).to_bytes(count, "little")

    def _fill(self, pos: int, size: int) -> None:
        """vfio_fill_vconfig_bytes(): copy hardware bytes, dword where aligned."""
        end = pos + size
        while pos < end:
            n = 4 if end - pos >= 4 and pos % 4 == 0 else 2 if end - pos >= 2 and pos % 2 == 0 else 1
            self._vset(pos, n, self._hw(pos, n))
            pos += n

    # ------------------------------------------------------------------ setup (vfio_config_init)
    def _init(self) -> None:
        vdev, vc = self.vdev, self.vconfig
        self._fill(0, PCI_STD_HEADER_SIZEOF)
        self.bardirty = True
        self.rbar = [self._vget(regs.BASE_ADDRESS_0 + 4 * i, 4) for i in range(6)] + [self._vget(regs.ROM_ADDRESS, 4)]
        if vdev.is_virtfn:
            self._vset(regs.VENDOR_ID, 2, vdev.vendor)
            self._vset(regs.DEVICE_ID, 2, vdev.device_id)
            vc[regs.INTERRUPT_PIN] = 0  # SR-IOV 3.4.1.18: VFs have no INTx
        if vdev.no_command_memory:
            self._vset(regs.COMMAND, 2, self._vget(regs.COMMAND, 2) | regs.COMMAND_MEMORY)
        if vdev.irqs.nointx or not vdev.irq_connected:
            vc[regs.INTERRUPT_PIN] = 0
        self._cap_init()
        self._ecap_init()

    def _msi_cap_len(self, pos: int) -> int:
        """vfio_msi_cap_len()."""
        flags = self._hw(pos + msi_regs.FLAGS, 2)
        n = 10 + (4 if flags & msi_regs.FLAGS_64BIT else 0) + (10 if flags & msi_regs.FLAGS_MASKBIT else 0)
        if self.msi_perm is None:
            self.msi_perm = msi_perm(n, flags)
        return n

    def _check_ext(self) -> None:
        if self.size > PCI_CFG_SPACE_SIZE:
            self.extended_caps = self._hw(PCI_CFG_SPACE_SIZE, 4) != 0

    def _cap_len(self, cap: int, pos: int) -> int:
        """vfio_cap_len()."""
        if cap == CAP_MSI:
            return self._msi_cap_len(pos)
        if cap == CAP_PCIX:
            if (self._hw(pos + PCI_X_CMD, 2) >> 12) & 3:
                self._check_ext()
                return 24
            return 8
        if cap == CAP_VNDR:
            return self._hw(pos + 2, 1)
        if cap == CAP_EXP:
            self._check_ext()
            flags = self._hw(pos + X.FLAGS, 2)
            rc_end = (flags & X.FLAGS_TYPE) >> 4 == X.TYPE_RC_END
            if flags & X.FLAGS_VERS == 1:
                return 0xC if rc_end else PCI_CAP_EXP_ENDPOINT_SIZEOF_V1
            return 0x2C if rc_end else PCI_CAP_EXP_ENDPOINT_SIZEOF_V2
        if cap == CAP_HT:
            return 24 if self._hw(pos + 3, 1) & 0xE0 else 28
        if cap == CAP_SATA:
            return 16 if self._hw(pos + 4, 1) & 0xF == 0xF else 8
        return 0

    def _ext_cap_len(self, ecap: int, epos: int) -> int:
        """vfio_ext_cap_len()."""
        if ecap == ECAP_VNDR:
            return (self._hw(epos + 4, 4) >> 20) & 0xFFF
        if ecap in (ECAP_VC, ECAP_VC9, ECAP_MFVC):
            evcc = self._hw(epos + 4, 4) & 0x7
            cap2 = self._hw(epos + 8, 4)
            phases = 128 if cap2 & 0x8 else 64 if cap2 & 0x4 else 32 if cap2 & 0x2 else 0
            n = 0x10 + (1 + evcc) * 0x0C
            if phases * 4:
                n = -(-n // 16) * 16 + phases * 4 // 8
            return n
        if ecap == ECAP_ACS:
            if self._hw(epos + 4, 1) & 0x20:
                b = self._hw(epos + 5, 1)
                bits = -(-b // 32) * 32 if b else 256
                return 8 + bits // 8
            return 8
        if ecap == ECAP_REBAR:
            return 4 + ((self._hw(epos + 8, 1) & 0xE0) >> 5) * 8
        if ecap == ECAP_DPA:
            return 16 + (self._hw(epos + 4, 1) & 0x1F) + 1
        if ecap == ECAP_TPH:
            d = self._hw(epos + 4, 4)
            if d & 0x600 == 0x200:
                return 0xC + ((d & 0x07FF0000) >> 16) * 2 + 2
            return 0xC
        if ecap == ECAP_DVSEC:
            return (self._hw(epos + 4, 4) >> 20) & 0xFFF
        return 0

    def _cap_init(self) -> None:
        """vfio_cap_init(): walk the standard list; unlink hidden capabilities from the user's chain."""
        if not self._hw(regs.STATUS, 2) & regs.STATUS_CAP_LIST:
            return
        pos = self._hw(regs.CAPABILITY_LIST, 1)
        prev = regs.CAPABILITY_LIST
        loops = (PCI_CFG_SPACE_SIZE - PCI_STD_HEADER_SIZEOF) // 4
        caps = 0
        while pos and loops:
            loops -= 1
            cap, nxt = self._hw(pos, 1), self._hw(pos + 1, 1)
            n = 0
            if cap and cap <= PCI_CAP_ID_MAX:
                n = PCI_CAP_LENGTH.get(cap, 0)
                if n == VAR:
                    n = self._cap_len(cap, pos)
            if not n:
                self.vconfig[prev] = nxt  # hiding cap
                pos = nxt
                continue
            self.map[pos:pos + n] = bytes([cap]) * n
            self._fill(pos, n)
            if cap == CAP_PM:  # vfio_update_pm_vconfig_bytes()
                self._vset(pos + PM_PMC, 2, self._vget(pos + PM_PMC, 2) & ~PM_CAP_PME_MASK)
                self._vset(pos + PM_CTRL, 2, self._vget(pos + PM_CTRL, 2) & ~(PM_CTRL_PME_ENABLE | PM_CTRL_PME_STATUS))
            prev = pos + 1
            pos = nxt
            caps += 1
        if not caps:
            self._vset(regs.STATUS, 2, self._vget(regs.STATUS, 2) & ~regs.STATUS_CAP_LIST)

    def _ecap_init(self) -> None:
        """vfio_ecap_init(): walk the extended list; skip hidden ones, or anchor the list with a
        placeholder header when the first one is hidden."""
        if not self.extended_caps:
            return
        epos = PCI_CFG_SPACE_SIZE
        prev = -1
        loops = (self.size - PCI_CFG_SPACE_SIZE) // 4
        ecaps = 0
        while loops and epos >= PCI_CFG_SPACE_SIZE:
            loops -= 1
            header = self._hw(epos, 4)
            ecap = header & 0xFFFF
            n, hidden = 0, False
            if ecap <= PCI_EXT_CAP_ID_MAX:
                n = PCI_EXT_CAP_LENGTH.get(ecap, 0)
                if n == VAR:
                    n = self._ext_cap_len(ecap, epos)
            if not n:
                if prev >= 0:
                    epos = (header >> 20) & 0xFFC
                    self._vset(prev, 4, (self._vget(prev, 4) & ~(0xFFC << 20)) | epos << 20)
                    continue
                n, hidden = 4, True
            self.map[epos:epos + n] = bytes([ecap & 0xFF]) * n
            self._fill(epos, n)
            if hidden:
                self._vset(epos, 4, self._vget(epos, 4) & (0xFFC << 20))
            else:
                ecaps += 1
            prev = epos
            epos = (header >> 20) & 0xFFC
        if not ecaps:
            self._vset(PCI_CFG_SPACE_SIZE, 4, 0)

    # ------------------------------------------------------------------ access functions
    def _default_read(self, pos: int, count: int, perm: Perm, offset: int) -> int:
        val = self._vget(pos, count)
        virt = perm.bits(perm.virt, offset, count)
        full = (1 << (8 * count)) - 1
        if virt != full:
            val = (self._hw(pos, count) & ~virt) | (val & virt)
        return val & full

    def _default_write(self, pos: int, count: int, perm: Perm, offset: int, val: int) -> None:
        write = perm.bits(perm.write, offset, count)
        if not write:
            return
        virt = perm.bits(perm.virt, offset, count)
        if write & virt:
            self._vset(pos, count, (self._vget(pos, count) & ~(write & virt)) | (val & write & virt))
        if write & ~virt:
            phys = self._hw(pos, count)
            self.vdev.hw_write(pos, count, (phys & ~(write & ~virt)) | (val & write & ~virt))

    def _direct_read(self, pos: int, count: int, perm: Perm, offset: int) -> int:
        """vfio_direct_config_read(): hardware, except the capability IDs/next pointers we rewrote."""
        val = self._hw(pos, count)
        b = bytearray(val.to_bytes(count, "little"))
        if pos >= PCI_CFG_SPACE_SIZE:
            if offset < 4:
                b[:] = self.vconfig[pos:pos + count]
        elif pos >= PCI_STD_HEADER_SIZEOF:
            if offset == 0 and count > 1:
                n = min(2, count)
                b[:n] = self.vconfig[pos:pos + n]
            elif offset == 1:
                b[0] = self.vconfig[pos]
        return int.from_bytes(b, "little")

    def _raw_read(self, pos: int, count: int, perm: Perm, offset: int) -> int:
        return self._hw(pos, count)

    def _raw_write(self, pos: int, count: int, perm: Perm, offset: int, val: int) -> None:
        self.vdev.hw_write(pos, count, val)

    def _virt_read(self, pos: int, count: int, perm: Perm, offset: int) -> int:
        return self._vget(pos, count)

    def _virt_write(self, pos: int, count: int, perm: Perm, offset: int, val: int) -> None:
        self._vset(pos, count, val)

    # ---- basic header
    @staticmethod
    def _is_bar(offset: int) -> bool:
        return regs.BASE_ADDRESS_0 <= offset < regs.BASE_ADDRESS_0 + 24 or regs.ROM_ADDRESS <= offset < regs.ROM_ADDRESS + 4

    def bar_fixup(self) -> None:
        """vfio_bar_fixup(): make the virtual BARs answer sizing like hardware with the host's sizes."""
        if not self.bardirty:
            return
        vdev = self.vdev
        i = 0
        while i < 6:
            off = regs.BASE_ADDRESS_0 + 4 * i
            start, size, kind, prefetch = vdev.resource(i)
            if not start:
                self._vset(off, 4, 0)  # unmapped by the host = unimplemented to the user
                i += 1
                continue
            mask = ~(size - 1) & ((1 << 64) - 1)
            if kind == "io":
                flags = regs.BASE_ADDRESS_SPACE_IO
            else:
                flags = (regs.BASE_ADDRESS_MEM_PREFETCH if prefetch else 0) | (
                    regs.BASE_ADDRESS_MEM_TYPE_64 if kind == "mem64" else 0)
            v = (self._vget(off, 4) & mask & 0xFFFFFFFF) | flags
            self._vset(off, 4, v)
            if v & regs.BASE_ADDRESS_MEM_TYPE_64 and kind != "io":
                self._vset(off + 4, 4, self._vget(off + 4, 4) & (mask >> 32))
                i += 1
            i += 1
        rom_start, rom_size = vdev.rom_resource()
        if rom_start:
            mask = (~(rom_size - 1) | regs.ROM_ADDRESS_ENABLE) & 0xFFFFFFFF
            self._vset(regs.ROM_ADDRESS, 4, self._vget(regs.ROM_ADDRESS, 4) & mask)
        else:
            self._vset(regs.ROM_ADDRESS, 4, 0)
        self.bardirty = False

    def _basic_read(self, pos: int, count: int, perm: Perm, offset: int) -> int:
        if self._is_bar(offset):
            self.bar_fixup()
        val = self._default_read(pos, count, perm, offset)
        if offset == regs.COMMAND and self.vdev.no_command_memory:
            val |= self._vget(regs.COMMAND, 2) & regs.COMMAND_MEMORY
        return val

    def _need_bar_restore(self) -> bool:
        """vfio_need_bar_restore(): a BAR no longer holds what the host programmed."""
        return any(r and self._hw(regs.BASE_ADDRESS_0 + 4 * i, 4) != r for i, r in enumerate(self.rbar[:6]))

    def bar_restore(self) -> None:
        """vfio_bar_restore(): put the real BARs back after a reset the host did not see."""
        vdev = self.vdev
        if vdev.is_virtfn:
            return
        for i in range(6):
            vdev.hw_write(regs.BASE_ADDRESS_0 + 4 * i, 4, self.rbar[i])
        vdev.hw_write(regs.ROM_ADDRESS, 4, self.rbar[6])
        if vdev.irqs.nointx:
            vdev.hw_write(regs.COMMAND, 2, vdev.hw_read(regs.COMMAND, 2) | regs.COMMAND_INTX_DISABLE)
        vdev.bar_restores += 1

    def _basic_write(self, pos: int, count: int, perm: Perm, offset: int, val: int) -> None:
        vdev = self.vdev
        new_cmd = 0
        if offset == regs.COMMAND:
            phys = self._hw(regs.COMMAND, 2)
            virt = self._vget(regs.COMMAND, 2)
            new_cmd = val
            new_mem, virt_mem, phys_mem = (bool(x & regs.COMMAND_MEMORY) for x in (new_cmd, virt, phys))
            new_io, virt_io, phys_io = (bool(x & regs.COMMAND_IO) for x in (new_cmd, virt, phys))
            if not new_mem:
                vdev.zap_bars()
            if ((new_mem and virt_mem and not phys_mem and not vdev.no_command_memory)
                    or (new_io and virt_io and not phys_io) or self._need_bar_restore()):
                self.bar_restore()
        self._default_write(pos, count, perm, offset, val)
        if offset == regs.COMMAND:
            mask = regs.COMMAND_MEMORY | regs.COMMAND_IO
            self._vset(regs.COMMAND, 2, (self._vget(regs.COMMAND, 2) & ~mask) | (new_cmd & mask))
        if regs.COMMAND <= offset <= regs.COMMAND + 1:  # emulate INTx disable
            virt_dis = bool(self._vget(regs.COMMAND, 2) & regs.COMMAND_INTX_DISABLE)
            irqs = vdev.irqs
            if virt_dis and not irqs.virq_disabled:
                irqs.virq_disabled = True
                irqs.intx_mask()
            elif not virt_dis and irqs.virq_disabled:
                irqs.virq_disabled = False
                irqs.intx_unmask()
        if self._is_bar(offset):
            self.bardirty = True

    # ---- capabilities with traps
    def _pm_write(self, pos: int, count: int, perm: Perm, offset: int, val: int) -> None:
        """vfio_pm_config_write(): the state bits are not writable; the host changes the power state."""
        self._default_write(pos, count, perm, offset, val)
        if offset == PM_CTRL:
            self.vdev.set_power_state(val & PM_CTRL_STATE_MASK)

    def _vpd_write(self, pos: int, count: int, perm: Perm, offset: int, val: int) -> None:
        """vfio_vpd_config_write(): the model's functions have no VPD storage, so a read or write through
        the address register fails and the flag is not toggled (the user's driver times out)."""
        self._default_write(pos, count, perm, offset, val)

    def _exp_write(self, pos: int, count: int, perm: Perm, offset: int, val: int) -> None:
        """vfio_exp_config_write(): virtual FLR -> reset the function if it has FLR; MRRS floored at MPS."""
        base = pos - offset
        ctrl_off = base + X.DEVCTL
        readrq = self._vget(ctrl_off, 2) & X.DEVCTL_READRQ
        self._default_write(pos, count, perm, offset, val)
        ctrl = self._vget(ctrl_off, 2)
        if ctrl & X.DEVCTL_BCR_FLR:
            self._vset(ctrl_off, 2, ctrl & ~X.DEVCTL_BCR_FLR)
            if self._hw(base + X.DEVCAP, 4) & X.DEVCAP_FLR:
                self.vdev.try_reset_function()
        ctrl = self._vget(ctrl_off, 2)
        if readrq != ctrl & X.DEVCTL_READRQ:
            rq = max(128 << ((ctrl & X.DEVCTL_READRQ) >> 12), 128 << ((self._hw(ctrl_off, 2) & X.DEVCTL_PAYLOAD) >> 5))
            phys = self._hw(ctrl_off, 2) & ~X.DEVCTL_READRQ
            self.vdev.hw_write(ctrl_off, 2, phys | ((rq.bit_length() - 8) << 12))  # pcie_set_readrq()

    def _af_write(self, pos: int, count: int, perm: Perm, offset: int, val: int) -> None:
        """vfio_af_config_write()."""
        base = pos - offset
        self._default_write(pos, count, perm, offset, val)
        ctrl = self.vconfig[base + AF_CTRL]
        if ctrl & AF_CTRL_FLR:
            self.vconfig[base + AF_CTRL] = ctrl & ~AF_CTRL_FLR
            cap = self._hw(base + AF_CAP, 1)
            if cap & AF_CAP_FLR and cap & AF_CAP_TP:
                self.vdev.try_reset_function()

    def find_cap_start(self, pos: int) -> int:
        """vfio_find_cap_start()."""
        cap = self.map[pos]
        if cap == PCI_CAP_ID_BASIC and pos < PCI_STD_HEADER_SIZEOF:
            return 0
        base = PCI_CFG_SPACE_SIZE if pos >= PCI_CFG_SPACE_SIZE else PCI_STD_HEADER_SIZEOF
        while pos - 1 >= base and self.map[pos - 1] == cap:
            pos -= 1
        return pos

    def _msi_read(self, pos: int, count: int, perm: Perm, offset: int) -> int:
        """vfio_msi_config_read(): meant to show msi_qmax as Multiple Message Capable, but Linux 7.2
        stores it into the 16 bits at vconfig[start] (the ID/next bytes, not PCI_MSI_FLAGS), so the
        user keeps reading the device's own value there; the model does what the kernel does."""
        if offset <= msi_regs.FLAGS and offset + count >= msi_regs.FLAGS:
            start = self.find_cap_start(pos)
            word = self._vget(start, 2) & ~msi_regs.FLAGS_QMASK
            self._vset(start, 2, word | self.vdev.irqs.msi_qmax << 1)
        return self._default_read(pos, count, perm, offset)

    def _msi_write(self, pos: int, count: int, perm: Perm, offset: int, val: int) -> None:
        """vfio_msi_config_write(): enable only while SET_IRQS has MSI on; queue size clamped."""
        self._default_write(pos, count, perm, offset, val)
        if offset <= msi_regs.FLAGS and offset + count >= msi_regs.FLAGS:
            start = self.find_cap_start(pos)
            flags = self._vget(start + msi_regs.FLAGS, 2)
            irqs = self.vdev.irqs
            if irqs.irq_type != U.VFIO_PCI_MSI_IRQ_INDEX:
                flags &= ~msi_regs.FLAGS_ENABLE
            if (flags & msi_regs.FLAGS_QSIZE) >> 4 > irqs.msi_qmax:
                flags = (flags & ~msi_regs.FLAGS_QSIZE) | irqs.msi_qmax << 4
            self._vset(start + msi_regs.FLAGS, 2, flags)
            self.vdev.hw_write(start + msi_regs.FLAGS, 2, flags)

    # ------------------------------------------------------------------ the region
    def _remaining_dword(self, pos: int) -> int:
        cap = self.map[pos]
        i = 1
        while (pos + i) % 4 and pos + i < self.size and self.map[pos + i] == cap:
            i += 1
        return i

    def _perm_for(self, pos: int) -> tuple[Perm, int]:
        cap_id = self.map[pos]
        if cap_id == PCI_CAP_ID_INVALID:
            return UNASSIGNED, pos
        if cap_id == PCI_CAP_ID_INVALID_VIRT:
            return VIRT, pos
        if pos >= PCI_CFG_SPACE_SIZE:
            perm = DIRECT_RO if cap_id > PCI_EXT_CAP_ID_MAX else ECAP_PERMS.get(cap_id, DIRECT_RO)
            return perm, self.find_cap_start(pos)
        if cap_id == CAP_MSI and self.msi_perm is not None:
            perm = self.msi_perm
        else:
            perm = CAP_PERMS.get(cap_id, DIRECT_RO)
        return perm, self.find_cap_start(pos) if cap_id > PCI_CAP_ID_BASIC else 0

    def rw_single(self, pos: int, data: bytes | None, count: int) -> tuple[int, bytes]:
        """vfio_pci_config_rw_single(): one access of at most a dword inside one capability."""
        if pos < 0 or pos >= self.size or pos + count > self.size:
            raise UapiError(errno.EFAULT, f"config access [{pos:#x}, +{count}) outside {self.size} bytes")
        count = min(count, self._remaining_dword(pos))
        count = 4 if count >= 4 and pos % 4 == 0 else 2 if count >= 2 and pos % 2 == 0 else 1
        perm, start = self._perm_for(pos)
        offset = pos - start
        if data is not None:
            if perm.writefn is not None:
                self._wfn[perm.writefn](pos, count, perm, offset, int.from_bytes(data[:count], "little"))
            return count, b""
        val = self._rfn[perm.readfn](pos, count, perm, offset) if perm.readfn is not None else 0
        return count, val.to_bytes(count, "little")

    def rw(self, pos: int, count: int, data: bytes | None) -> bytes | int:
        """vfio_pci_config_rw(): the whole access in single chunks; the bytes read or the count written."""
        out = bytearray()
        done = 0
        while done < count:
            chunk = data[done:] if data is not None else None
            n, got = self.rw_single(pos + done, chunk, count - done)
            out += got
            done += n
        return bytes(out) if data is None else done
