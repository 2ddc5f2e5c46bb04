"""Data Object Exchange extended capability (PCIe Base 6.0 §6.30, §7.9.24): mailbox model and lspci decoder.

The device side of the mailbox: software writes a data object dword by dword into the Write Data
Mailbox, sets DOE Go, then reads the response from the Read Data Mailbox (a read returns the current
dword, a write of any value moves to the next).  Discovery (PCI-SIG vendor 0001h, type 0) is answered
from the protocol list given to the builder; other protocols go to the handler callable.  The
requester this has to satisfy is Linux ``drivers/pci/doe.c``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar

from vfiolab.errors import VfiolabError
from vfiolab.pci.caps.base import Capability, register_decoder
from vfiolab.pci.config import ConfigSpace
from vfiolab.pci.decode import DecodeContext, Out, flag, flags

VENDOR_PCI_SIG = 0x0001
TYPE_DISCOVERY = 0
TYPE_SPDM = 1
TYPE_SECURED_SPDM = 2
MAX_DWORDS = 1 << 18  # a Length field of 0 means 2^18 dwords (drivers/pci/doe.c PCI_DOE_MAX_LENGTH)

DoeHandler = Callable[[int, int, list[int]], Sequence[int] | None]
"""handler(vendor, type, request payload dwords) -> response payload dwords, or None for no response."""


def object_header(vendor: int, obj_type: int, length_dw: int) -> list[int]:
    """The two header dwords of a data object (``PCI_DOE_DATA_OBJECT_HEADER_1/2``); length counts them."""
    return [(vendor & 0xFFFF) | (obj_type & 0xFF) << 16, length_dw & (MAX_DWORDS - 1)]


class DoeCap(Capability):
    """A DOE mailbox instance supporting ``protocols`` (Discovery is always index 0)."""

    cap_id: ClassVar[int] = 0x2E
    extended: ClassVar[bool] = True
    name: ClassVar[str] = "Data Object Exchange"

    # pci_regs.h PCI_DOE_*
    CAP: ClassVar[int] = 0x04
    CTRL: ClassVar[int] = 0x08
    STATUS: ClassVar[int] = 0x0C
    WRITE: ClassVar[int] = 0x10
    READ: ClassVar[int] = 0x14
    SIZEOF: ClassVar[int] = 0x18
    CAP_INT_SUP: ClassVar[int] = 0x00000001
    CAP_INT_MSG_NUM: ClassVar[int] = 0x00000FFE
    CTRL_ABORT: ClassVar[int] = 0x00000001
    CTRL_INT_EN: ClassVar[int] = 0x00000002
    CTRL_GO: ClassVar[int] = 0x80000000
    STATUS_BUSY: ClassVar[int] = 0x00000001
    STATUS_INT: ClassVar[int] = 0x00000002
    STATUS_ERROR: ClassVar[int] = 0x00000004
    STATUS_READY: ClassVar[int] = 0x80000000

    def __init__(self, protocols: Sequence[tuple[int, int]] = (), handler: DoeHandler | None = None, *,
                 interrupt: bool = False, msg_number: int = 0, version: int = 1,
                 on_interrupt: Callable[[], None] | None = None) -> None:
        protos = [(VENDOR_PCI_SIG, TYPE_DISCOVERY)]
        for vendor, obj_type in protocols:
            if not 0 <= vendor <= 0xFFFF or not 0 <= obj_type <= 0xFF:
                raise VfiolabError(f"DOE: protocol ({vendor:#x}, {obj_type:#x}) is not a 16-bit vendor "
                                   "and 8-bit type")
            if (vendor, obj_type) in protos:
                if (vendor, obj_type) == (VENDOR_PCI_SIG, TYPE_DISCOVERY):
                    continue
                raise VfiolabError(f"DOE: protocol ({vendor:#06x}, {obj_type}) listed twice")
            protos.append((vendor, obj_type))
        if len(protos) > 256:
            raise VfiolabError(f"DOE: {len(protos)} protocols; discovery indices are 8 bits")
        if not 0 <= msg_number <= 0x7FF:
            raise VfiolabError(f"DOE: interrupt message number {msg_number} outside 0..2047")
        if len(protos) > 1 and handler is None:
            raise VfiolabError("DOE: protocols besides Discovery need a handler")
        self.protocols = protos
        self.handler = handler
        self.interrupt, self.msg_number, self.version = interrupt, msg_number, version
        self.on_interrupt = on_interrupt
        self._wbuf: list[int] = []
        self._rbuf: list[int] = []
        self._ridx = 0

    def length(self) -> int:
        return self.SIZEOF

    def build(self, cs: ConfigSpace, off: int) -> None:
        cap = (self.CAP_INT_SUP | self.msg_number << 1) if self.interrupt else 0
        cs.init_reg(off + self.CAP, 4, cap)
        # Abort and Go are write-only triggers (they read 0): RW here, cleared by the hook at once.
        int_en = self.CTRL_INT_EN if self.interrupt else 0
        cs.init_reg(off + self.CTRL, 4, 0, rw=self.CTRL_ABORT | self.CTRL_GO | int_en)
        cs.init_reg(off + self.STATUS, 4, 0, w1c=self.STATUS_INT if self.interrupt else 0)
        cs.init_reg(off + self.WRITE, 4, 0, rw=0xFFFFFFFF)
        cs.init_reg(off + self.READ, 4, 0)

    # ------------------------------------------------------------------ runtime
    def attach(self, cs: ConfigSpace, off: int) -> None:
        def status() -> int:
            return cs.get(off + self.STATUS, 4)

        def set_status(set_bits: int = 0, clear_bits: int = 0) -> None:
            cs.set(off + self.STATUS, 4, (status() | set_bits) & ~clear_bits)

        def raise_interrupt() -> None:
            # Interrupt Status is set when Data Object Ready or DOE Error gets set (PCIe r6.0 §6.30.3).
            if self.interrupt and cs.get(off + self.CTRL, 4) & self.CTRL_INT_EN:
                set_status(self.STATUS_INT)
                if self.on_interrupt is not None:
                    self.on_interrupt()

        def clear_mailboxes() -> None:
            self.reset()

        def on_ctrl(woff: int, size: int, old_dw: int, new_dw: int) -> None:
            ctrl = cs.get(off + self.CTRL, 4)
            cs.set(off + self.CTRL, 4, ctrl & ~(self.CTRL_ABORT | self.CTRL_GO))
            if ctrl & self.CTRL_ABORT:
                # Abort discards both objects and clears Busy, Error and Ready (drivers/pci/doe.c
                # pci_doe_abort() waits for exactly that).
                clear_mailboxes()
                set_status(clear_bits=self.STATUS_BUSY | self.STATUS_ERROR | self.STATUS_READY)
                return
            if ctrl & self.CTRL_GO and not status() & self.STATUS_ERROR:
                request, self._wbuf = self._wbuf, []
                response = self._respond(request)
                if response is not None:
                    self._rbuf, self._ridx = response, 0
                    set_status(self.STATUS_READY)
                    raise_interrupt()

        def on_write_mailbox(woff: int, size: int, old_dw: int, new_dw: int) -> None:
            cs.set(off + self.WRITE, 4, 0)  # the Write Data Mailbox reads as 0
            if size != 4:  # the mailboxes are dword registers; narrower writes are ignored
                return
            if len(self._wbuf) >= MAX_DWORDS:
                set_status(self.STATUS_ERROR)
                raise_interrupt()
                return
            self._wbuf.append(new_dw)

        def read_mailbox(_: int) -> int:
            ready = status() & self.STATUS_READY and not status() & self.STATUS_ERROR
            return self._rbuf[self._ridx] if ready and self._ridx < len(self._rbuf) else 0

        def on_read_mailbox(woff: int, size: int, old_dw: int, new_dw: int) -> None:
            if size != 4:
                return
            if not status() & self.STATUS_READY:
                # Nothing to advance over: an underflow is an error (PCIe r6.0 §6.30.2).
                set_status(self.STATUS_ERROR)
                raise_interrupt()
                return
            self._ridx += 1
            if self._ridx >= len(self._rbuf):
                self._rbuf, self._ridx = [], 0
                set_status(clear_bits=self.STATUS_READY)

        cs.add_write_hook(off + self.CTRL, 4, on_ctrl)
        cs.add_write_hook(off + self.WRITE, 4, on_write_mailbox)
        cs.add_write_hook(off + self.READ, 4, on_read_mailbox)
        cs.set_read_hook(off + self.READ, read_mailbox)

    def reset(self, kind: str = "flr") -> None:
        """Discard both data objects (abort, or any function reset: register with the function's reset
        listeners, ``PciFunction.add_reset_listener(doe.reset)``; config space itself is reset there)."""
        self._wbuf, self._rbuf, self._ridx = [], [], 0

    def _respond(self, request: list[int]) -> list[int] | None:
        """The response object for ``request``, or None when the request is silently discarded."""
        if len(request) < 2:
            return None
        vendor, obj_type = request[0] & 0xFFFF, (request[0] >> 16) & 0xFF
        length = request[1] & (MAX_DWORDS - 1) or MAX_DWORDS
        if length != len(request):
            # "If the number of DW transferred does not match the indicated Length for a data object,
            # then the data object must be silently discarded" (PCIe r6.0 §6.30.1).
            return None
        payload = request[2:]
        if (vendor, obj_type) == (VENDOR_PCI_SIG, TYPE_DISCOVERY):
            reply: Sequence[int] | None = self._discovery(payload)
        elif (vendor, obj_type) in self.protocols and self.handler is not None:
            reply = self.handler(vendor, obj_type, list(payload))
        else:
            return None  # unsupported protocol: no response
        if reply is None:
            return None
        if len(reply) + 2 > MAX_DWORDS or any(not 0 <= d < 1 << 32 for d in reply):
            raise VfiolabError(f"DOE: handler response for ({vendor:#06x}, {obj_type}) is not a list of at "
                               f"most {MAX_DWORDS - 2} dwords")
        return object_header(vendor, obj_type, len(reply) + 2) + list(reply)

    def _discovery(self, payload: list[int]) -> list[int] | None:
        # Request dword: Index [7:0], Version [15:8]; response: Vendor [15:0], Type [23:16], Next Index
        # [31:24], 0 after the last protocol (pci_regs.h PCI_DOE_DATA_OBJECT_DISC_*).
        if not payload:
            return None
        index = payload[0] & 0xFF
        if index >= len(self.protocols):
            # No entry at this index: vendor FFFFh, type FFh, and Next Index 0 so a requester stops.
            return [0xFFFF | 0xFF << 16]
        vendor, obj_type = self.protocols[index]
        nxt = index + 1 if index + 1 < len(self.protocols) else 0
        return [vendor | obj_type << 16 | nxt << 24]


# pciutils ls-ecaps.c cap_doe: name only below -vv; 0x14 bytes from +4 must be readable.
@register_decoder(DoeCap.cap_id, extended=True)
def decode_doe(ctx: DecodeContext, out: Out, where: int) -> None:
    """``Data Object Exchange`` with DOECap/DOECtl/DOESta lines at -vv."""
    out.write("Data Object Exchange\n")
    if ctx.verbose < 2:
        return
    if not ctx.fetch(where + DoeCap.CAP, 0x14):
        out.write("\t\t<unreadable>\n")
        return
    cap = ctx.r32(where + DoeCap.CAP)
    out.write(f"\t\tDOECap: IntSup{flag(cap, DoeCap.CAP_INT_SUP)}\n")
    if cap & DoeCap.CAP_INT_SUP:
        out.write(f"\t\t\tInterrupt Message Number {(cap >> 1) & 0x7FF:03x}\n")
    out.write(f"\t\tDOECtl: IntEn{flag(ctx.r32(where + DoeCap.CTRL), DoeCap.CTRL_INT_EN)}\n")
    # lspci 3.9 defines PCI_DOE_STS_ERROR as 0x3, so "Error" shows Busy|IntSta, not bit 2.
    sta = ctx.r32(where + DoeCap.STATUS)
    out.write("\t\tDOESta: " + flags(sta, ((DoeCap.STATUS_BUSY, "Busy"), (DoeCap.STATUS_INT, "IntSta"),
                                           (0x3, "Error"), (DoeCap.STATUS_READY, "ObjectReady"))) + "\n")
