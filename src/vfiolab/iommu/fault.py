"""Unrecoverable DMA faults: the record an IOMMU unit logs (VT-d fault recording registers, AMD event log,
SMMU event queue), the bounded per-unit queue that holds them, and the exception a device's DMA raises.

A record carries what every vendor logs: requester ID, PASID (when the request had one), the IOVA, the
access (IOMMU_FAULT_PERM_* bits, ``include/linux/iommu.h``) and why translation failed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from vfiolab.errors import VfiolabError
from vfiolab.iommu.pagetable.common import FaultReason  # one enum: walk stops are a subset

# include/linux/iommu.h
IOMMU_FAULT_PERM_READ: Final = 1 << 0
IOMMU_FAULT_PERM_WRITE: Final = 1 << 1
IOMMU_FAULT_PERM_EXEC: Final = 1 << 2
IOMMU_FAULT_PERM_PRIV: Final = 1 << 3

DEFAULT_QUEUE_DEPTH: Final = 256


@dataclass(frozen=True, slots=True)
class FaultRecord:
    """One logged fault."""

    unit: str
    rid: int
    pasid: int | None
    iova: int
    perm: int
    reason: FaultReason
    level: int = -1
    """Page-table level where the walk stopped (-1 when not a walk fault)."""

    def describe(self) -> str:
        """A one-line human description, like a driver's fault log line."""
        b, d, f = self.rid >> 8, (self.rid >> 3) & 0x1F, self.rid & 7
        acc = "write" if self.perm & IOMMU_FAULT_PERM_WRITE else "read"
        pas = f" pasid {self.pasid:#x}" if self.pasid is not None else ""
        return (f"{self.unit}: DMA {acc} fault from {b:02x}:{d:02x}.{f}{pas} at iova {self.iova:#x}: "
                f"{self.reason.value}")


class DmaFault(VfiolabError):
    """A device's DMA was refused; ``record`` is what the IOMMU logged."""

    def __init__(self, record: FaultRecord) -> None:
        self.record = record
        super().__init__(record.describe())


class DmaStalled(VfiolabError):
    """A DMA waits for page responses (PRI) that have not arrived yet; retry it once they have."""

    def __init__(self, rid: int, pasid: int | None, iova: int, prg_index: int) -> None:
        self.rid, self.pasid, self.iova, self.prg_index = rid, pasid, iova, prg_index
        super().__init__(f"DMA at iova {iova:#x} waits for the response to page request group {prg_index}")


FaultHandler = Callable[[FaultRecord], None]


class FaultQueue:
    """A unit's fault log: a bounded FIFO; once full, new records are dropped and counted (VT-d Primary
    Fault Overflow, AMD event log overflow)."""

    def __init__(self, depth: int = DEFAULT_QUEUE_DEPTH) -> None:
        if depth <= 0:
            raise VfiolabError(f"fault queue depth {depth} must be positive")
        self.depth = depth
        self._q: deque[FaultRecord] = deque()
        self.overflowed = 0
        self.total = 0
        self.handlers: list[FaultHandler] = []
        """Called for every record, logged or dropped (report_iommu_fault() style listeners)."""

    def push(self, rec: FaultRecord) -> None:
        """Log one record."""
        self.total += 1
        if len(self._q) >= self.depth:
            self.overflowed += 1
        else:
            self._q.append(rec)
        for h in self.handlers:
            h(rec)

    def pop(self) -> FaultRecord | None:
        """The oldest record, removed (the driver's fault interrupt handler reading the log)."""
        return self._q.popleft() if self._q else None

    def drain(self) -> list[FaultRecord]:
        """Every logged record, oldest first; the queue is empty afterwards."""
        out = list(self._q)
        self._q.clear()
        return out

    def __len__(self) -> int:
        return len(self._q)

    def peek(self) -> list[FaultRecord]:
        """The logged records without removing them."""
        return list(self._q)
