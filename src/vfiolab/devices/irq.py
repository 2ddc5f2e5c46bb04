"""A device's interrupt lines: the INTx wire and MSI/MSI-X messages, gated by what software programmed in
the function (PCI Local Bus 3.0 §6.8, PCIe Base §6.1.4, §7.7.1-2) and delivered to an abstract sink.

* INTx: the device drives a level; Status.Interrupt Status shows it; the wire is asserted when the level
  is high and Command.Interrupt Disable is clear.  The sink sees every change of the wire.
* MSI: a message (address, data with the vector in the low bits Multiple Message Enable grants) when MSI
  Enable is set; a vector masked by its Mask bit sets its Pending bit instead and is sent on unmask.
* MSI-X: the table and PBA live in BAR memory (:class:`MsixTableRegion`, :class:`MsixPbaRegion`); a
  vector fires when MSI-X Enable is set, Function Mask clear and its entry unmasked, else its PBA bit is
  set and the message goes out once all three allow it.

A host whose client emulates the MSI-X table itself (QEMU's vfio-user client never forwards table
accesses) clears :attr:`InterruptLines.honor_msix_table`: entry masks are then not consulted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Protocol

import numpy as np

from vfiolab.devices.bars import Region
from vfiolab.pci import regs
from vfiolab.pci.caps import msi as msi_regs
from vfiolab.pci.caps import msix as msix_regs
from vfiolab.pci.caps.msi import MsiCap
from vfiolab.pci.caps.msix import MsixCap

if TYPE_CHECKING:
    from vfiolab.pci.function import PciFunction

ENTRY_ADDR_LO: Final = 0
ENTRY_ADDR_HI: Final = 4
ENTRY_DATA: Final = 8
ENTRY_CTRL: Final = 12
ENTRY_CTRL_MASKBIT: Final = 1


class InterruptSink(Protocol):
    """Where a device's interrupts go (the host: vfio-pci's IRQ handlers, a vfio-user client's eventfds)."""

    def intx(self, asserted: bool) -> None:
        """The INTx wire changed."""

    def msi(self, vector: int, address: int, data: int) -> None:
        """An MSI message for ``vector`` (``data`` already carries the vector bits)."""

    def msix(self, vector: int, address: int, data: int) -> None:
        """An MSI-X message from table entry ``vector``."""


class RecordingSink:
    """A sink that keeps what arrived (events as tuples) and the INTx wire; the default of a new device."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int, int, int]] = []
        self.intx_asserted = False

    def intx(self, asserted: bool) -> None:
        self.intx_asserted = asserted
        self.events.append(("intx", int(asserted), 0, 0))

    def msi(self, vector: int, address: int, data: int) -> None:
        self.events.append(("msi", vector, address, data))

    def msix(self, vector: int, address: int, data: int) -> None:
        self.events.append(("msix", vector, address, data))


class MsixState:
    """The MSI-X table (address, data, vector control per entry) and the Pending Bit Array."""

    def __init__(self, entries: int) -> None:
        self.entries = entries
        self.table = np.zeros((entries, 4), dtype=np.uint32)
        self.pba = np.zeros(entries, dtype=bool)
        self.reset()

    def reset(self) -> None:
        """PCIe Base §7.7.2: entries reset with Mask set, address/data undefined (zero here), PBA clear."""
        self.table[:] = 0
        self.table[:, 3] = ENTRY_CTRL_MASKBIT
        self.pba[:] = False

    def masked(self, vector: int) -> bool:
        return bool(self.table[vector, 3] & ENTRY_CTRL_MASKBIT)

    def message(self, vector: int) -> tuple[int, int]:
        row = self.table[vector]
        return int(row[0]) | int(row[1]) << 32, int(row[2])

    def pba_qword(self, q: int) -> int:
        bits = np.zeros(64, dtype=bool)
        part = self.pba[q * 64:(q + 1) * 64]
        bits[:len(part)] = part
        return int.from_bytes(np.packbits(bits, bitorder="little").tobytes(), "little")


class MsixTableRegion(Region):
    """The MSI-X table in a BAR: dword or qword accesses to 16-byte entries."""

    def __init__(self, offset: int, state: MsixState, lines: InterruptLines) -> None:
        super().__init__(offset, state.entries * msix_regs.ENTRY_SIZE, "msix-table")
        self.state, self.lines = state, lines

    def read(self, off: int, size: int) -> int:
        raw = self.state.table.view(np.uint8).reshape(-1)
        return int.from_bytes(raw[off:off + size].tobytes(), "little")

    def write(self, off: int, size: int, value: int) -> None:
        vec = off // msix_regs.ENTRY_SIZE
        was_masked = self.state.masked(vec)
        raw = self.state.table.view(np.uint8).reshape(-1)
        raw[off:off + size] = np.frombuffer(value.to_bytes(size, "little"), dtype=np.uint8)
        # Vector Control: only the Mask bit is defined (the rest reads 0 here).
        self.state.table[vec, 3] &= ENTRY_CTRL_MASKBIT
        if was_masked and not self.state.masked(vec):
            self.lines.msix_release(vec)


class MsixPbaRegion(Region):
    """The Pending Bit Array: read only (writes are ignored, PCIe Base §7.7.2.10)."""

    def __init__(self, offset: int, state: MsixState) -> None:
        size = ((state.entries + 63) // 64) * 8
        super().__init__(offset, size, "msix-pba")
        self.state = state

    def read(self, off: int, size: int) -> int:
        q = self.state.pba_qword(off // 8)
        return (q >> (8 * (off % 8))) & ((1 << (8 * size)) - 1)

    def write(self, off: int, size: int, value: int) -> None:
        return None


class InterruptLines:
    """INTx, MSI and MSI-X of one function, as the function's config space and MSI-X table allow."""

    def __init__(self, fn: PciFunction) -> None:
        self.fn = fn
        self.sink: InterruptSink = RecordingSink()
        self.honor_msix_table = True
        """Consult the per-entry Mask bit (False when the host's client emulates the table)."""
        self.intx_level = False
        self._wire = False
        self.msi_cap: MsiCap | None = next((c for c in fn.caps.std if isinstance(c, MsiCap)), None)
        self.msix_cap: MsixCap | None = next((c for c in fn.caps.std if isinstance(c, MsixCap)), None)
        self.msix: MsixState | None = MsixState(self.msix_cap.table_size) if self.msix_cap else None
        cs = fn.cs
        cs.add_write_hook(regs.COMMAND, 2, self._command_written)
        if self.msi_cap is not None:
            cap = self.msi_cap
            cs.add_write_hook(cap.offset + msi_regs.FLAGS, 2, self._msi_written)
            if cap.per_vector_mask:
                cs.add_write_hook(cap.offset + cap.mask_off, 4, self._msi_written)
        if self.msix_cap is not None:
            cs.add_write_hook(self.msix_cap.offset + msix_regs.FLAGS, 2, self._msix_flags_written)

    # ------------------------------------------------------------------ INTx
    def set_intx(self, level: bool) -> None:
        """The device drives its INTx level (Status.Interrupt Status follows it)."""
        self.intx_level = bool(level)
        st = self.fn.cs.get(regs.STATUS, 2)
        self.fn.cs.set(regs.STATUS, 2, st | regs.STATUS_INTERRUPT if level else st & ~regs.STATUS_INTERRUPT)
        self._update_wire()

    @property
    def intx_pin(self) -> int:
        return self.fn.cs.get(regs.INTERRUPT_PIN, 1)

    @property
    def intx_asserted(self) -> bool:
        """The wire as the host sees it."""
        return self._wire

    def _update_wire(self) -> None:
        disabled = bool(self.fn.cs.get(regs.COMMAND, 2) & regs.COMMAND_INTX_DISABLE)
        wire = self.intx_level and not disabled and self.intx_pin != 0
        if wire != self._wire:
            self._wire = wire
            self.sink.intx(wire)

    def _command_written(self, off: int, size: int, old: int, new: int) -> None:
        self._update_wire()

    # ------------------------------------------------------------------ MSI
    @property
    def msi_enabled(self) -> bool:
        return self.msi_cap is not None and self.msi_cap.enabled(self.fn.cs)

    @property
    def msix_enabled(self) -> bool:
        return self.msix_cap is not None and self.msix_cap.enabled(self.fn.cs)

    def msi_notify(self, vector: int = 0) -> bool:
        """Send MSI ``vector``; False when MSI is off or the vector is beyond Multiple Message Enable."""
        cap = self.msi_cap
        if cap is None or not cap.enabled(self.fn.cs):
            return False
        if not 0 <= vector < cap.enabled_vectors(self.fn.cs):
            return False
        if cap.per_vector_mask and self.fn.cs.get(cap.offset + cap.mask_off, 4) >> vector & 1:
            cap.set_pending(self.fn.cs, vector, True)
            return True
        self._send_msi(vector)
        return True

    def _send_msi(self, vector: int) -> None:
        cap = self.msi_cap
        assert cap is not None
        addr, data = cap.message(self.fn.cs)
        nvec = cap.enabled_vectors(self.fn.cs)
        self.sink.msi(vector, addr, (data & ~(nvec - 1)) | vector)

    def _msi_written(self, off: int, size: int, old: int, new: int) -> None:
        cap = self.msi_cap
        assert cap is not None
        if not cap.per_vector_mask or not cap.enabled(self.fn.cs):
            return
        mask = self.fn.cs.get(cap.offset + cap.mask_off, 4)
        pending = self.fn.cs.get(cap.offset + cap.mask_off + 4, 4)
        for vec in range(cap.enabled_vectors(self.fn.cs)):
            if pending >> vec & 1 and not mask >> vec & 1:
                cap.set_pending(self.fn.cs, vec, False)
                self._send_msi(vec)

    # ------------------------------------------------------------------ MSI-X
    def msix_notify(self, vector: int) -> bool:
        """Send MSI-X ``vector`` (or set its pending bit); False when MSI-X is off or no such entry."""
        cap, st = self.msix_cap, self.msix
        if cap is None or st is None or not cap.enabled(self.fn.cs) or not 0 <= vector < st.entries:
            return False
        if cap.function_masked(self.fn.cs) or (self.honor_msix_table and st.masked(vector)):
            st.pba[vector] = True
            return True
        addr, data = st.message(vector)
        self.sink.msix(vector, addr, data)
        return True

    def msix_release(self, vector: int) -> None:
        """Entry ``vector`` was unmasked: send its pending message."""
        cap, st = self.msix_cap, self.msix
        if cap is None or st is None or not st.pba[vector]:
            return
        if not cap.enabled(self.fn.cs) or cap.function_masked(self.fn.cs):
            return
        st.pba[vector] = False
        addr, data = st.message(vector)
        self.sink.msix(vector, addr, data)

    def _msix_flags_written(self, off: int, size: int, old: int, new: int) -> None:
        st = self.msix
        if st is None:
            return
        for vec in np.flatnonzero(st.pba):
            if not (self.honor_msix_table and st.masked(int(vec))):
                self.msix_release(int(vec))

    def notify(self, vector: int = 0) -> bool:
        """Signal ``vector`` the way the function is configured: MSI-X, else MSI (False when neither)."""
        if self.msix_enabled:
            return self.msix_notify(vector)
        if self.msi_enabled:
            return self.msi_notify(vector)
        return False

    # ------------------------------------------------------------------ reset / state
    def reset(self) -> None:
        """After a function reset: the level drops and the MSI-X table returns to all-masked."""
        self.intx_level = False
        if self.msix is not None:
            self.msix.reset()
        self._update_wire()

    def table_regions(self) -> list[tuple[int, Region]]:
        """(BAR index, region) for the MSI-X table and PBA, to be placed in the device's BARs."""
        cap, st = self.msix_cap, self.msix
        if cap is None or st is None:
            return []
        return [(cap.table_bar, MsixTableRegion(cap.table_offset, st, self)),
                (cap.pba_bar, MsixPbaRegion(cap.pba_offset, st))]
