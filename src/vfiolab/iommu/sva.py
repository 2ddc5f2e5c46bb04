"""Shared Virtual Addressing: a device DMAs with a process's virtual addresses through the process's own
CPU page table (``drivers/iommu/iommu-sva.c``, VT-d first stage / AMD v2 / SMMU stage 1).

:class:`Mm` is the ``mm_struct`` side: an x86-64 4-level CPU page table in the same simulated RAM as the
process's pages, filled the way the kernel fills it, by page faults (``handle_mm_fault``): a device fault
arrives as a PRI page request, the SVA domain's IOPF handler faults the page in with the VMA's checks
and answers Success, and the device retries.  :meth:`Mm.populate` installs pages the CPU has already
touched; :meth:`Mm.invalidate_range` is the mmu-notifier path (unmap from the CPU table, then invalidate
IOTLBs and ATCs of every SVA domain of the mm).

The process model has no notifier hook of its own, so after ``munmap``/``mprotect`` of memory a device
may use, call :meth:`Mm.invalidate_range` as the kernel's mmu notifier would.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import numpy as np
import numpy.typing as npt

from vfiolab.errors import UapiError
from vfiolab.iommu.domain import IOMMU_DOMAIN_SVA, MODE_TRANSLATE, IommuDomain
from vfiolab.iommu.fault import IOMMU_FAULT_PERM_EXEC, IOMMU_FAULT_PERM_READ, IOMMU_FAULT_PERM_WRITE
from vfiolab.iommu.group import iommu_attach_device_pasid, iommu_attach_handle_get, iommu_detach_device_pasid
from vfiolab.iommu.pagetable.common import FLUSH_RANGE, IOMMU_READ, IOMMU_WRITE, SIGN_EXTEND
from vfiolab.iommu.pagetable.engine import PageTable
from vfiolab.iommu.pagetable.x86_64 import X86_64
from vfiolab.iommu.pasid import IOMMU_PASID_INVALID, PasidIda
from vfiolab.iommu.pri import (
    IOMMU_PAGE_RESP_INVALID,
    IOMMU_PAGE_RESP_SUCCESS,
    IopfGroup,
    PageRequest,
    iopf_group_response,
)
from vfiolab.iommu.walk import Stage
from vfiolab.memory.phys import FRAME_SIZE
from vfiolab.memory.process import PROT_EXEC, PROT_READ, PROT_WRITE, UserProcess, Vma

if TYPE_CHECKING:
    from vfiolab.iommu.device import IommuDevice
    from vfiolab.iommu.driver import IommuDriver

GLOBAL_PASIDS: Final = PasidIda()
"""The kernel's global PASID IDA (iommu.c); pass your own PasidIda to Mm to isolate a scenario."""


class Mm:
    """A process's mm as SVA needs it: its VMAs (the UserProcess), its CPU page table, its PASID."""

    def __init__(self, proc: UserProcess, *, pasids: PasidIda | None = None) -> None:
        self.proc = proc
        # arch/x86: 4-level paging, 48-bit canonical addresses
        self.pt = PageTable(X86_64(top_level=3, hw_max_vasz_lg2=48, features=frozenset({SIGN_EXTEND, FLUSH_RANGE})),
                            proc.mem)
        self.pt.pgsize_bitmap = FRAME_SIZE  # 4 KiB PTEs, as faults install them (hugetlb's 2 MiB not modelled)
        self.ida = pasids if pasids is not None else GLOBAL_PASIDS
        self.pasid = IOMMU_PASID_INVALID
        """mm->iommu_mm->pasid (allocated by the first bind)."""
        self.sva_domains: list[SvaDomain] = []

    def _vma(self, va: int) -> Vma | None:
        for v in self.proc.vmas:
            if v.start <= va < v.end:
                return v
        return None

    def handle_mm_fault(self, va: int, write: bool) -> bool:
        """Fault the page at ``va`` in and install it in the CPU page table; False on an access the
        VMA does not allow (VM_FAULT_ERROR)."""
        page = va & ~(FRAME_SIZE - 1)
        vma = self._vma(va)
        if vma is None:
            return False
        try:
            frames = self.proc.pin_pages(page, FRAME_SIZE, write=write)
        except UapiError:
            return False
        self.proc.unpin_pages(frames)
        cow_pending = vma.file is not None and not vma.shared_file and not write
        prot = IOMMU_READ | (IOMMU_WRITE if vma.prot & PROT_WRITE and not cow_pending else 0)
        self._install(page, int(frames[0]) * FRAME_SIZE, prot)
        return True

    def _install(self, page: int, pa: int, prot: int) -> None:
        if self.pt.iova_to_phys(page):  # replacing a PTE: the old one may be cached by devices
            self.pt.unmap(page, FRAME_SIZE)
            self.pt.flushes.clear()
            self._flush_secondary(page, page + FRAME_SIZE - 1)
        self.pt.map(page, pa, FRAME_SIZE, prot)

    def populate(self) -> int:
        """Install every page the process has resident (what CPU faults would have installed), one map
        per run of consecutive pages on consecutive frames; returns how many pages were installed."""
        n = 0
        for vma in self.proc.vmas:
            if not vma.prot & (PROT_READ | PROT_WRITE):
                continue
            own = vma.pages
            frames = own.copy()
            writable = np.full(len(frames), bool(vma.prot & PROT_WRITE))
            if vma.file is not None:  # pages not copied on write are the file's
                idx = vma.pgoff + np.arange(len(frames))
                ffr = np.full(len(frames), -1, dtype=np.int64)
                ok = idx < len(vma.file.frames)
                ffr[ok] = vma.file.frames[idx[ok]]
                from_file = own < 0
                frames[from_file] = ffr[from_file]
                if not vma.shared_file:
                    writable &= ~from_file  # copy-on-write still pending
            if self._unmap_range(vma.start, vma.end):
                self._flush_secondary(vma.start, vma.end - 1)
            n += self._install_runs(vma.start, frames, writable)
        return n

    def _install_runs(self, start: int, frames: npt.NDArray[np.int64], writable: npt.NDArray[np.bool_]) -> int:
        """Map pages i of an (unmapped) VMA at ``start`` to ``frames[i]`` (>= 0), in runs of consecutive
        frames with one permission."""
        k = np.flatnonzero(frames >= 0)
        if not len(k):
            return 0
        brk = np.flatnonzero((np.diff(k) != 1) | (np.diff(frames[k]) != 1) | (writable[k][1:] != writable[k][:-1]))
        firsts = np.concatenate(([0], brk + 1))
        lasts = np.concatenate((brk, [len(k) - 1]))
        for a, b in zip(firsts.tolist(), lasts.tolist()):
            va = start + int(k[a]) * FRAME_SIZE
            length = (b - a + 1) * FRAME_SIZE
            prot = IOMMU_READ | (IOMMU_WRITE if writable[k[a]] else 0)
            self.pt.map(va, int(frames[k[a]]) * FRAME_SIZE, length, prot)
        return len(k)

    def _unmap_range(self, start: int, end: int) -> bool:
        """Remove whatever the CPU table maps in [start, end); True when something was mapped."""
        runs: list[list[int]] = []
        for va, size, _ in self.pt.leaves():
            if va < end and start < va + size:
                if runs and runs[-1][1] == va:
                    runs[-1][1] = va + size  # unmap stops only at holes: one call per mapped stretch
                else:
                    runs.append([va, va + size])
        for lo, hi in runs:
            self.pt.unmap(lo, hi - lo)
        self.pt.flushes.clear()
        return bool(runs)

    def invalidate_range(self, start: int, end: int) -> None:
        """mmu_notifier invalidate of [start, end): drop the CPU PTEs, then the device caches
        (arch_invalidate_secondary_tlbs -> cache_tag_flush_range of every SVA domain)."""
        self._unmap_range(start & ~(FRAME_SIZE - 1), end)
        self._flush_secondary(start, end - 1)

    def _flush_secondary(self, start: int, last: int) -> None:
        for d in self.sva_domains:
            d.tags.flush_range(start, last)

    def release(self) -> None:
        """mm_pasid_drop() + the CPU table teardown at exit."""
        if self.pasid != IOMMU_PASID_INVALID:
            self.ida.free(self.pasid)
            self.pasid = IOMMU_PASID_INVALID
        self.pt.destroy()


class SvaDomain(IommuDomain):
    """IOMMU_DOMAIN_SVA: the mm's CPU page table as a first-stage table."""

    hw_mode = MODE_TRANSLATE

    def __init__(self, driver: IommuDriver | None, mm: Mm) -> None:
        super().__init__(IOMMU_DOMAIN_SVA, driver, f"sva:{mm.proc.name}")
        self.mm = mm
        self.users = 0
        self.stage = Stage(mm.pt.fmt, self._root, ad=True)
        self.iopf_handler = self._handle_iopf

    def _root(self) -> tuple[int, int]:
        return self.mm.pt.top_pa, self.mm.pt.top_level

    def stages(self) -> tuple[Stage, Stage | None]:
        return self.stage, None

    def _handle_iopf(self, group: IopfGroup) -> None:
        """iommu_sva_handle_iopf(): fault each page in; the first error sticks."""
        status = IOMMU_PAGE_RESP_SUCCESS
        for f in group.faults:
            if status != IOMMU_PAGE_RESP_SUCCESS:
                break
            status = self._handle_mm(f)
        iopf_group_response(group, status)

    def _handle_mm(self, f: PageRequest) -> int:
        """iommu_sva_handle_mm()."""
        if not f.pasid_valid:
            return IOMMU_PAGE_RESP_INVALID
        vma = self.mm._vma(f.addr)
        if vma is None:
            return IOMMU_PAGE_RESP_INVALID
        need = ((PROT_READ if f.perm & IOMMU_FAULT_PERM_READ else 0) |
                (PROT_WRITE if f.perm & IOMMU_FAULT_PERM_WRITE else 0) |
                (PROT_EXEC if f.perm & IOMMU_FAULT_PERM_EXEC else 0))
        if need & ~vma.prot:
            return IOMMU_PAGE_RESP_INVALID
        ok = self.mm.handle_mm_fault(f.addr, bool(f.perm & IOMMU_FAULT_PERM_WRITE))
        return IOMMU_PAGE_RESP_SUCCESS if ok else IOMMU_PAGE_RESP_INVALID


@dataclass
class SvaHandle:
    """struct iommu_sva: one device bound to one mm."""

    dev: IommuDevice
    domain: SvaDomain
    users: int = 1

    @property
    def pasid(self) -> int:
        """iommu_sva_get_pasid()."""
        return self.domain.mm.pasid


def iommu_sva_bind_device(dev: IommuDevice, mm: Mm) -> SvaHandle:
    """iommu_sva_bind_device(): allocate the mm's PASID if needed, reuse a bond or an SVA domain of the
    mm, else allocate one and attach it to the device's PASID."""
    if dev.group is None or dev.unit is None:
        raise UapiError(errno.ENODEV, f"{dev.name}: not behind an IOMMU")
    if mm.pasid != IOMMU_PASID_INVALID:
        if mm.pasid >= dev.max_pasids:
            raise UapiError(errno.EOVERFLOW, f"PASID {mm.pasid} beyond {dev.name}'s {dev.max_pasids} PASIDs")
    else:
        p = mm.ida.alloc(dev.max_pasids)
        if p == IOMMU_PASID_INVALID:
            raise UapiError(errno.ENOSPC, f"no free PASID below {dev.max_pasids}")
        mm.pasid = p
    try:
        handle = iommu_attach_handle_get(dev.group, mm.pasid, IOMMU_DOMAIN_SVA)
    except UapiError as err:
        if err.errno != errno.ENOENT:
            raise
    else:
        assert isinstance(handle, SvaHandle)
        if handle.domain.mm is not mm:
            raise UapiError(errno.EBUSY, f"PASID {mm.pasid} of {dev.name} is bound to another mm")
        handle.users += 1
        return handle
    for dom in mm.sva_domains:
        h = SvaHandle(dev, dom)
        try:
            iommu_attach_device_pasid(dom, dev, mm.pasid, h)
        except UapiError:
            continue
        dom.users += 1
        return h
    driver = dev.unit.driver
    dom = driver.domain_alloc_sva(dev, mm)
    h = SvaHandle(dev, dom)
    iommu_attach_device_pasid(dom, dev, mm.pasid, h)
    dom.users = 1
    mm.sva_domains.append(dom)
    return h


def iommu_sva_unbind_device(handle: SvaHandle) -> None:
    """iommu_sva_unbind_device(): drop a reference; the last detaches the PASID and frees the domain
    once no device uses it."""
    handle.users -= 1
    if handle.users:
        return
    dom = handle.domain
    iommu_detach_device_pasid(dom, handle.dev, dom.mm.pasid)
    dom.users -= 1
    if not dom.users:
        dom.mm.sva_domains.remove(dom)
