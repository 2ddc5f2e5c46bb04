"""Downstream Port Containment extended capability (PCIe Base 6.0 §7.9.14): builder, trigger, lspci decoder.

Registers follow Linux ``pci_regs.h`` ``PCI_EXP_DPC_*``.  Status and logs are sticky (RW1CS/ROS): they
keep the reason for a containment across the hot reset that usually follows it, which is what
``drivers/pci/pcie/dpc.c`` reads after recovery.  Root ports with the RP Extensions add the RP PIO
status/mask/severity/syserror/exception registers and the header, ImpSpec and TLP prefix logs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar

from vfiolab.errors import VfiolabError
from vfiolab.pci.caps.base import Capability, register_decoder
from vfiolab.pci.config import ConfigSpace
from vfiolab.pci.decode import DecodeContext, Out, flag, flags

# DPC Trigger Reason (Status [2:1]) and Trigger Reason Extension (Status [6:5])
REASON_UNCOR = 0  # unmasked uncorrectable error
REASON_NONFATAL = 1  # ERR_NONFATAL received
REASON_FATAL = 2  # ERR_FATAL received
REASON_IN_EXT = 3
EXT_RP_PIO = 0
EXT_SW_TRIGGER = 1

RP_PIO_BITS = 0x00070707  # Cfg/IO/Mem UR, CA and CTO completion bits of the RP PIO registers


class DpcCap(Capability):
    """DPC: capability (RO), control (RW), sticky status and error source; RP PIO block if ``rp_extensions``."""

    cap_id: ClassVar[int] = 0x1D
    extended: ClassVar[bool] = True
    name: ClassVar[str] = "Downstream Port Containment"

    CAP: ClassVar[int] = 0x04
    CTRL: ClassVar[int] = 0x06
    STATUS: ClassVar[int] = 0x08
    SOURCE_ID: ClassVar[int] = 0x0A
    RP_PIO_STATUS: ClassVar[int] = 0x0C
    RP_PIO_MASK: ClassVar[int] = 0x10
    RP_PIO_SEVERITY: ClassVar[int] = 0x14
    RP_PIO_SYSERROR: ClassVar[int] = 0x18
    RP_PIO_EXCEPTION: ClassVar[int] = 0x1C
    RP_PIO_HEADER_LOG: ClassVar[int] = 0x20
    BASE_SIZEOF: ClassVar[int] = 0x0C

    CAP_RP_EXT: ClassVar[int] = 0x0020
    CAP_POISONED_TLP: ClassVar[int] = 0x0040
    CAP_SW_TRIGGER: ClassVar[int] = 0x0080
    CAP_DL_ACTIVE: ClassVar[int] = 0x1000
    CAP_LOG_SIZE4: ClassVar[int] = 0x2000
    CTRL_TRIGGER_EN: ClassVar[int] = 0x0003
    CTRL_COMPLETION: ClassVar[int] = 0x0004
    CTRL_INT_EN: ClassVar[int] = 0x0008
    CTRL_ERR_COR_EN: ClassVar[int] = 0x0010
    CTRL_POISONED_TLP_EN: ClassVar[int] = 0x0020
    CTRL_SW_TRIGGER: ClassVar[int] = 0x0040
    CTRL_DL_ACTIVE_EN: ClassVar[int] = 0x0080
    STATUS_TRIGGER: ClassVar[int] = 0x0001
    STATUS_REASON: ClassVar[int] = 0x0006
    STATUS_INT: ClassVar[int] = 0x0008
    STATUS_RP_BUSY: ClassVar[int] = 0x0010
    STATUS_REASON_EXT: ClassVar[int] = 0x0060
    STATUS_RP_PIO_FEP: ClassVar[int] = 0x1F00

    def __init__(self, *, int_msg: int = 0, rp_extensions: bool = False, poisoned_tlp_blocking: bool = False,
                 sw_trigger: bool = True, rp_pio_log_size: int = 4, dl_active: bool = False, version: int = 1,
                 on_trigger: Callable[[DpcCap], None] | None = None) -> None:
        if not 0 <= int_msg <= 0x1F:
            raise VfiolabError(f"DPC: interrupt message number {int_msg} outside 0..31")
        # drivers/pci/pcie/dpc.c pci_dpc_init: a log size below 4 or above 14 + 1 is invalid.
        if rp_extensions and not 4 <= rp_pio_log_size <= 15:
            raise VfiolabError(f"DPC: RP PIO log size {rp_pio_log_size} outside 4..15 dwords")
        log = rp_pio_log_size if rp_extensions else 0
        self.cap = (int_msg | (self.CAP_RP_EXT if rp_extensions else 0)
                    | (self.CAP_POISONED_TLP if poisoned_tlp_blocking else 0)
                    | (self.CAP_SW_TRIGGER if sw_trigger else 0) | (log & 0xF) << 8
                    | (self.CAP_DL_ACTIVE if dl_active else 0) | (self.CAP_LOG_SIZE4 if log & 0x10 else 0))
        self.rp_pio_log_size = log
        self.version = version
        self.on_trigger = on_trigger
        self._cs: ConfigSpace | None = None

    def length(self) -> int:
        if not self.cap & self.CAP_RP_EXT:
            return self.BASE_SIZEOF
        return self.RP_PIO_HEADER_LOG + 4 * self.rp_pio_log_size

    def build(self, cs: ConfigSpace, off: int) -> None:
        cap = self.cap
        cs.init_reg(off + self.CAP, 2, cap)
        ctrl_rw = (self.CTRL_TRIGGER_EN | self.CTRL_COMPLETION | self.CTRL_INT_EN | self.CTRL_ERR_COR_EN
                   | (self.CTRL_POISONED_TLP_EN if cap & self.CAP_POISONED_TLP else 0)
                   | (self.CTRL_SW_TRIGGER if cap & self.CAP_SW_TRIGGER else 0)
                   | (self.CTRL_DL_ACTIVE_EN if cap & self.CAP_DL_ACTIVE else 0))
        cs.init_reg(off + self.CTRL, 2, 0, rw=ctrl_rw)
        # Trigger Status and Interrupt Status are RW1CS; reason, extension and first error pointer ROS.
        w1c = self.STATUS_TRIGGER | self.STATUS_INT
        cs.init_reg(off + self.STATUS, 2, 0, w1c=w1c,
                    sticky=w1c | self.STATUS_REASON | self.STATUS_REASON_EXT | self.STATUS_RP_PIO_FEP)
        cs.init_reg(off + self.SOURCE_ID, 2, 0, sticky=0xFFFF)
        if not cap & self.CAP_RP_EXT:
            return
        cs.init_reg(off + self.RP_PIO_STATUS, 4, 0, w1c=RP_PIO_BITS, sticky=RP_PIO_BITS)
        # RP PIO Mask bits default to 1 (masked); severity, syserror and exception to 0; all RWS.
        cs.init_reg(off + self.RP_PIO_MASK, 4, RP_PIO_BITS, rw=RP_PIO_BITS, sticky=RP_PIO_BITS)
        for reg in (self.RP_PIO_SEVERITY, self.RP_PIO_SYSERROR, self.RP_PIO_EXCEPTION):
            cs.init_reg(off + reg, 4, 0, rw=RP_PIO_BITS, sticky=RP_PIO_BITS)
        log_bytes = 4 * self.rp_pio_log_size
        cs.init_reg(off + self.RP_PIO_HEADER_LOG, log_bytes, 0, sticky=(1 << (8 * log_bytes)) - 1)

    def attach(self, cs: ConfigSpace, off: int) -> None:
        self._cs = cs

        # DPC Software Trigger (RW, reads 0): contains the port when DPC is enabled and not triggered.
        def on_ctrl(woff: int, size: int, old_dw: int, new_dw: int) -> None:
            ctrl = cs.get(off + self.CTRL, 2)
            if not ctrl & self.CTRL_SW_TRIGGER:
                return
            cs.set(off + self.CTRL, 2, ctrl & ~self.CTRL_SW_TRIGGER)
            self.trigger(REASON_IN_EXT, ext=EXT_SW_TRIGGER)

        cs.add_write_hook(off + self.CTRL, 2, on_ctrl)

    def trigger(self, reason: int, *, source_id: int | None = None, ext: int = 0,
                header_log: Sequence[int] = ()) -> bool:
        """Model side: an error event at this port.  Returns True if DPC triggered (enabled for the
        event and not already triggered); sets reason, source and status and calls ``on_trigger``."""
        cs, off = self._cs, self.offset
        if cs is None:
            raise VfiolabError("DPC: capability not placed in a config space yet")
        if not 0 <= reason <= 3 or not 0 <= ext <= 3:
            raise VfiolabError(f"DPC: trigger reason {reason}/extension {ext} outside 0..3")
        ctrl, status = cs.get(off + self.CTRL, 2), cs.get(off + self.STATUS, 2)
        enable = ctrl & self.CTRL_TRIGGER_EN
        # Trigger Enable 01b: own uncorrectable errors and ERR_FATAL; 10b: also ERR_NONFATAL; 11b is
        # reserved (PCIe r6.0 §7.9.14.3).  Software and RP PIO triggers need DPC enabled at all.
        wanted = enable in (1, 2) and (reason != REASON_NONFATAL or enable == 2)
        if status & self.STATUS_TRIGGER or not wanted:
            return False
        new = (status & ~(self.STATUS_REASON | self.STATUS_REASON_EXT)) | self.STATUS_TRIGGER | reason << 1
        if reason == REASON_IN_EXT:
            new |= ext << 5
        if ctrl & self.CTRL_INT_EN:
            new |= self.STATUS_INT
        cs.set(off + self.STATUS, 2, new)
        if source_id is not None and reason in (REASON_NONFATAL, REASON_FATAL):
            cs.set(off + self.SOURCE_ID, 2, source_id)
        if header_log and self.cap & self.CAP_RP_EXT:
            for i, dw in enumerate(list(header_log)[:self.rp_pio_log_size]):
                cs.set(off + self.RP_PIO_HEADER_LOG + 4 * i, 4, dw)
        if self.on_trigger is not None:
            self.on_trigger(self)
        return True


# pciutils ls-ecaps.c cap_dpc: name only below -vv; four lines when cap..source are readable.  3.9 prints
# nothing of the RP PIO registers and reads the RP PIO Log Size from bits [11:8] only.
@register_decoder(DpcCap.cap_id, extended=True)
def decode_dpc(ctx: DecodeContext, out: Out, where: int) -> None:
    """``Downstream Port Containment`` with DpcCap/DpcCtl/DpcSta/Source lines at -vv."""
    out.write("Downstream Port Containment\n")
    if ctx.verbose < 2 or not ctx.fetch(where + DpcCap.CAP, 8):
        return
    c = DpcCap
    cap = ctx.r16(where + c.CAP)
    out.write(f"\t\tDpcCap:\tINT Msg #{cap & 0x1F}, RPExt{flag(cap, c.CAP_RP_EXT)} "
              f"PoisonedTLP{flag(cap, c.CAP_POISONED_TLP)} SwTrigger{flag(cap, c.CAP_SW_TRIGGER)} "
              f"RP PIO Log {(cap >> 8) & 0xF}, DL_ActiveErr{flag(cap, c.CAP_DL_ACTIVE)}\n")
    ctl = ctx.r16(where + c.CTRL)
    out.write(f"\t\tDpcCtl:\tTrigger:{ctl & 3:x} "
              + flags(ctl, ((c.CTRL_COMPLETION, "Cmpl"), (c.CTRL_INT_EN, "INT"), (c.CTRL_ERR_COR_EN, "ErrCor"),
                            (c.CTRL_POISONED_TLP_EN, "PoisonedTLP"), (c.CTRL_SW_TRIGGER, "SwTrigger"),
                            (c.CTRL_DL_ACTIVE_EN, "DL_ActiveErr"))) + "\n")
    sta = ctx.r16(where + c.STATUS)
    out.write(f"\t\tDpcSta:\tTrigger{flag(sta, c.STATUS_TRIGGER)} Reason:{(sta >> 1) & 3:02x} "
              f"INT{flag(sta, c.STATUS_INT)} RPBusy{flag(sta, c.STATUS_RP_BUSY)} "
              f"TriggerExt:{(sta >> 5) & 3:02x} RP PIO ErrPtr:{(sta >> 8) & 0x1F:02x}\n")
    out.write(f"\t\tSource:\t{ctx.r16(where + c.SOURCE_ID):04x}\n")
