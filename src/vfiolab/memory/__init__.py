"""Simulated memory: physical RAM in 4 KiB frames (:mod:`.phys`) and user-process address spaces with
page pinning (:mod:`.process`).

``PhysMemory(size)`` is RAM at physical addresses [0, size): a sparse memfd mapped once, viewed as
``u8`` (frames x 4096 bytes) and ``u64`` (frames x 512 entries) numpy arrays that never move.  Frames
come from ``alloc_frames(n, contiguous=, align=)`` zeroed, with refcount 1, and go back through
``free_frames`` / ``put_frames``; ``frames_in_use`` counts them.  ``read``/``write``/``copy``/``fill``/
``view``/``read_u64``/``write_u64`` access RAM by physical address; ``fd`` lets another process map it
(file offset == physical address).

``UserProcess(mem)`` has ``mmap``/``munmap``/``mprotect`` (anonymous, memfd-backed via :class:`MemFile`,
``MAP_HUGETLB`` 2 MiB pages), ``pin_pages(va, length, write=)`` returning the frame of every 4 KiB page
(EFAULT as GUP raises it), ``unpin_pages(frames)``, ``pinned_pages`` for accounting, and ``read``/
``write`` as copy_{from,to}_user.
"""

from vfiolab.memory.phys import FRAME_SHIFT, FRAME_SIZE, PhysMemory
from vfiolab.memory.process import (
    HPAGE_SIZE,
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_HUGETLB,
    MAP_PRIVATE,
    MAP_SHARED,
    PAGE_SIZE,
    PROT_EXEC,
    PROT_NONE,
    PROT_READ,
    PROT_WRITE,
    MemFile,
    UserProcess,
    Vma,
)

__all__ = ["FRAME_SHIFT", "FRAME_SIZE", "HPAGE_SIZE", "MAP_ANONYMOUS", "MAP_FIXED", "MAP_HUGETLB", "MAP_PRIVATE",
           "MAP_SHARED", "PAGE_SIZE", "PROT_EXEC", "PROT_NONE", "PROT_READ", "PROT_WRITE", "MemFile",
           "PhysMemory", "UserProcess", "Vma"]
