"""The IOAS object and its ioctls (``drivers/iommu/iommufd/ioas.c``): ALLOC, IOVA_RANGES, ALLOW_IOVAS, MAP,
MAP_FILE, COPY, UNMAP, CHANGE_PROCESS and the RLIMIT_MODE / HUGE_PAGES options.

Each handler takes the :class:`~vfiolab.iommufd.ucmd.Ucmd` (the kernel copy of the struct in
``ucmd.cmd``), validates in ioas.c's order, raises UapiError or responds and returns 0.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Final

from vfiolab.errors import UapiError
from vfiolab.faultinject import fail_point
from vfiolab.iommufd import uapi
from vfiolab.iommufd.io_pagetable import IOPT_ALLOC_IOVA, IoPagetable
from vfiolab.iommufd.objects import IommufdObject, ObjType
from vfiolab.iommufd.pages import (
    IOPT_PAGES_ACCOUNT_MM,
    IOPT_PAGES_ACCOUNT_MODE_NUM,
    IOPT_PAGES_ACCOUNT_NONE,
    IOPT_PAGES_ACCOUNT_USER,
    AddressType,
    IoptPages,
    alloc_file_pages,
    alloc_user_pages,
)
from vfiolab.iommufd.uapi import ULONG_MAX

if TYPE_CHECKING:
    from vfiolab.iommufd.hw_pagetable import HwptPaging
    from vfiolab.iommufd.main import Iommufd
    from vfiolab.iommufd.ucmd import Ucmd

IOMMU_READ: Final = 1 << 0
IOMMU_WRITE: Final = 1 << 1
IOMMU_CACHE: Final = 1 << 2


class Ioas(IommufdObject):
    """struct iommufd_ioas: an io_pagetable and the HWPT_PAGINGs that mirror it."""

    type = ObjType.IOAS

    def __init__(self, ictx: Iommufd) -> None:
        super().__init__(ictx)
        self.iopt = IoPagetable()
        self.iopt.notify_unmap = self._notify_unmap
        self.hwpt_list: list[HwptPaging] = []

    def _notify_unmap(self, iova: int, length: int) -> None:
        # device.c iommufd_access_notify_unmap(): ask every external access to drop its pins
        for access in list(self.iopt.access_list.values()):
            if access.users > 0 and access.ops is not None and access.ops.unmap is not None:
                access.ops.unmap(iova, length)

    def destroy(self) -> None:
        # iommufd_ioas_destroy(): unmap everything, drop the selftest's reserved ranges (owner NULL)
        _n, err = self.iopt.unmap_iova_range(0, ULONG_MAX)
        if err is not None and err.errno != errno.ENOENT:
            raise err
        self.iopt.remove_reserved_iova(None)
        self.iopt.allowed = []


def get_ioas(ictx: Iommufd, ioas_id: int) -> Ioas:
    """iommufd_get_ioas()."""
    obj = ictx.objects.get(ioas_id, ObjType.IOAS)
    assert isinstance(obj, Ioas)
    return obj


def ioas_alloc(ictx: Iommufd) -> Ioas:
    """iommufd_ioas_alloc(): a reserved (not yet visible) IOAS."""
    return ictx.objects.alloc(Ioas(ictx))


def conv_iommu_prot(map_flags: int) -> int:
    """conv_iommu_prot(): IOMMU_CACHE always (coherency is enforced at bind)."""
    prot = IOMMU_CACHE
    if map_flags & uapi.IOMMU_IOAS_MAP_WRITEABLE:
        prot |= IOMMU_WRITE
    if map_flags & uapi.IOMMU_IOAS_MAP_READABLE:
        prot |= IOMMU_READ
    return prot


# ---------------------------------------------------------------------- ioctl handlers
def ioas_alloc_ioctl(ucmd: Ucmd) -> int:
    """IOMMU_IOAS_ALLOC."""
    cmd = ucmd.cmd
    if cmd["flags"]:
        raise UapiError(errno.EOPNOTSUPP, f"flags {cmd['flags']:#x}")
    ictx = ucmd.ictx
    ioas = ioas_alloc(ictx)
    cmd["out_ioas_id"] = ioas.id
    try:
        ucmd.respond()
    except UapiError:
        ictx.objects.abort_and_destroy(ioas)
        raise
    ictx.objects.finalize(ioas)
    return 0


def ioas_iova_ranges(ucmd: Ucmd) -> int:
    """IOMMU_IOAS_IOVA_RANGES: the holes of the reserved tree; EMSGSIZE after responding when the
    array is too small (``num_iovas`` then says how many there are)."""
    cmd = ucmd.cmd
    if cmd["__reserved"]:
        raise UapiError(errno.EOPNOTSUPP, "__reserved != 0")
    ioas = get_ioas(ucmd.ictx, cmd["ioas_id"])
    max_iovas = cmd["num_iovas"]
    ptr = cmd["allowed_iovas"]
    cmd["num_iovas"] = 0
    cmd["out_iova_alignment"] = ioas.iopt.iova_alignment
    st = uapi.iommu_iova_range
    for start, last in ioas.iopt.iova_ranges():
        if cmd["num_iovas"] < max_iovas:
            ucmd.ictx.copy_to_user(ptr + cmd["num_iovas"] * st.size, st.pack(start=start, last=last))
        cmd["num_iovas"] += 1
    ucmd.respond()
    if cmd["num_iovas"] > max_iovas:
        raise UapiError(errno.EMSGSIZE, f"{cmd['num_iovas']} ranges, room for {max_iovas}")
    return 0


def _load_iovas(ictx: Iommufd, ptr: int, num: int) -> list[tuple[int, int]]:
    # iommufd_ioas_load_iovas()
    st = uapi.iommu_iova_range
    out: list[tuple[int, int]] = []
    for i in range(num):
        r = st.unpack(ictx.copy_from_user(ptr + i * st.size, st.size))
        if r["start"] >= r["last"]:
            raise UapiError(errno.EINVAL, f"range {i}: start {r['start']:#x} >= last {r['last']:#x}")
        if any(s <= r["last"] and r["start"] <= e for s, e in out):
            raise UapiError(errno.EINVAL, f"range {i} overlaps an earlier one")
        fail_point("iommufd_ioas_load_iovas: kzalloc(struct iopt_allowed)")
        out.append((r["start"], r["last"]))
    return out


def ioas_allow_iovas(ucmd: Ucmd) -> int:
    """IOMMU_IOAS_ALLOW_IOVAS: replace the allowed list atomically."""
    cmd = ucmd.cmd
    if cmd["__reserved"]:
        raise UapiError(errno.EOPNOTSUPP, "__reserved != 0")
    ioas = get_ioas(ucmd.ictx, cmd["ioas_id"])
    allowed = _load_iovas(ucmd.ictx, cmd["allowed_iovas"], cmd["num_iovas"])
    ioas.iopt.set_allow_iova(allowed)
    return 0


def _check_map_flags(cmd: dict[str, int], reserved: bool) -> None:
    if cmd["flags"] & ~uapi.IOMMU_IOAS_MAP_FLAGS or (reserved and cmd["__reserved"]):
        raise UapiError(errno.EOPNOTSUPP, f"flags {cmd['flags']:#x} or __reserved set")
    if cmd["iova"] >= ULONG_MAX or cmd["length"] >= ULONG_MAX:
        raise UapiError(errno.EOVERFLOW, "iova or length >= ULONG_MAX")
    if not cmd["flags"] & (uapi.IOMMU_IOAS_MAP_WRITEABLE | uapi.IOMMU_IOAS_MAP_READABLE):
        raise UapiError(errno.EINVAL, "neither READABLE nor WRITEABLE")


def ioas_map(ucmd: Ucmd) -> int:
    """IOMMU_IOAS_MAP: map user memory at a fixed or allocated IOVA."""
    cmd = ucmd.cmd
    _check_map_flags(cmd, reserved=True)
    ictx = ucmd.ictx
    ioas = get_ioas(ictx, cmd["ioas_id"])
    flags = 0 if cmd["flags"] & uapi.IOMMU_IOAS_MAP_FIXED_IOVA else IOPT_ALLOC_IOVA
    prot = conv_iommu_prot(cmd["flags"])
    pages, start_byte = alloc_user_pages(ictx.current, cmd["user_va"], cmd["length"],
                                         bool(prot & IOMMU_WRITE))
    cmd["iova"] = ioas.iopt.map_common(pages, start_byte, cmd["length"], cmd["iova"], prot, flags,
                                       ictx.account_mode == IOPT_PAGES_ACCOUNT_MM)
    ucmd.respond()
    return 0


def ioas_map_file(ucmd: Ucmd) -> int:
    """IOMMU_IOAS_MAP_FILE: map a memfd (or a selftest dma-buf) range."""
    cmd = ucmd.cmd
    _check_map_flags(cmd, reserved=False)
    ictx = ucmd.ictx
    ioas = get_ioas(ictx, cmd["ioas_id"])
    flags = 0 if cmd["flags"] & uapi.IOMMU_IOAS_MAP_FIXED_IOVA else IOPT_ALLOC_IOVA
    prot = conv_iommu_prot(cmd["flags"])
    start, length = cmd["start"], cmd["length"]
    # io_pagetable.c iopt_map_file_pages()
    if not length:
        raise UapiError(errno.EINVAL, "zero length")
    if start + length - 1 > ULONG_MAX:
        raise UapiError(errno.EOVERFLOW, "start + length overflows")
    file = ictx.current.fget(cmd["fd"])
    dmabuf_pages = getattr(file, "iommufd_pages", None)
    if dmabuf_pages is not None:  # a dma-buf exporter (the selftest's) supplies its own pages
        pages, start_byte = dmabuf_pages(ictx, start, length, bool(prot & IOMMU_WRITE))
    else:  # any file: memfd_pin_folios() refuses one that is not a memfd only when pages get pinned
        pages, start_byte = alloc_file_pages(ictx.current, file, start, length, bool(prot & IOMMU_WRITE))
    cmd["iova"] = ioas.iopt.map_common(pages, start_byte, length, cmd["iova"], prot, flags,
                                       ictx.account_mode == IOPT_PAGES_ACCOUNT_MM)
    ucmd.respond()
    return 0


def ioas_copy(ucmd: Ucmd) -> int:
    """IOMMU_IOAS_COPY: map the pages behind a source IOVA range at a destination IOVA."""
    cmd = ucmd.cmd
    if cmd["flags"] & ~uapi.IOMMU_IOAS_MAP_FLAGS:
        raise UapiError(errno.EOPNOTSUPP, f"flags {cmd['flags']:#x}")
    if cmd["length"] >= ULONG_MAX or cmd["src_iova"] >= ULONG_MAX or cmd["dst_iova"] >= ULONG_MAX:
        raise UapiError(errno.EOVERFLOW, "length or IOVA >= ULONG_MAX")
    if not cmd["flags"] & (uapi.IOMMU_IOAS_MAP_WRITEABLE | uapi.IOMMU_IOAS_MAP_READABLE):
        raise UapiError(errno.EINVAL, "neither READABLE nor WRITEABLE")
    ictx = ucmd.ictx
    src = get_ioas(ictx, cmd["src_ioas_id"])
    elms = src.iopt.get_pages(cmd["src_iova"], cmd["length"])
    try:
        dst = get_ioas(ictx, cmd["dst_ioas_id"])
        flags = 0 if cmd["flags"] & uapi.IOMMU_IOAS_MAP_FIXED_IOVA else IOPT_ALLOC_IOVA
        cmd["dst_iova"] = dst.iopt.map_pages(elms, cmd["length"], cmd["dst_iova"],
                                             conv_iommu_prot(cmd["flags"]),
                                             flags)
        ucmd.respond()
    finally:
        for elm in elms:  # iopt_free_pages_list(): references not moved into areas
            if elm.pages is not None:
                elm.pages.put()
    return 0


def ioas_unmap(ucmd: Ucmd) -> int:
    """IOMMU_IOAS_UNMAP: whole maps only; (0, U64_MAX) unmaps everything, even nothing."""
    cmd = ucmd.cmd
    ioas = get_ioas(ucmd.ictx, cmd["ioas_id"])
    if cmd["iova"] == 0 and cmd["length"] == uapi.U64_MAX:
        unmapped = ioas.iopt.unmap_all()
    else:
        if cmd["iova"] >= ULONG_MAX or cmd["length"] >= ULONG_MAX:
            raise UapiError(errno.EOVERFLOW, "iova or length >= ULONG_MAX")
        unmapped = ioas.iopt.unmap_iova(cmd["iova"], cmd["length"])
        if not unmapped:
            raise UapiError(errno.ENOENT, f"nothing mapped in [{cmd['iova']:#x}, +{cmd['length']:#x})")
    cmd["length"] = unmapped
    ucmd.respond()
    return 0


def _all_pages(ictx: Iommufd) -> list[IoptPages]:
    # for_each_ioas_area(): IOAS by ID, areas by IOVA; the first area being set up (EBUSY) or not
    # of a file (EINVAL) stops the walk
    out: list[IoptPages] = []
    for obj in ictx.objects:
        if isinstance(obj, Ioas):
            for area in obj.iopt.areas:
                if area.pages is None:
                    raise UapiError(errno.EBUSY, "an area is being set up")
                if area.pages.kind != AddressType.FILE:
                    raise UapiError(errno.EINVAL, "only IOMMU_IOAS_MAP_FILE maps can change process")
                out.append(area.pages)
    return out


def ioas_change_process(ucmd: Ucmd) -> int:
    """IOMMU_IOAS_CHANGE_PROCESS: move every map's pin accounting to the calling process (file maps only)."""
    cmd = ucmd.cmd
    if cmd["__reserved"]:
        raise UapiError(errno.EOPNOTSUPP, "__reserved != 0")
    ictx = ucmd.ictx
    cur = ictx.current
    all_pages = _all_pages(ictx)

    def need_charge_update(p: IoptPages) -> bool:
        if p.account_mode == IOPT_PAGES_ACCOUNT_NONE:
            return False
        if p.account_mode == IOPT_PAGES_ACCOUNT_MM:
            return p.source is not cur
        return p.source_user is not cur.user or p.source is not cur

    unique: list[IoptPages] = []
    for p in all_pages:
        if not any(p is q for q in unique):
            unique.append(p)
    npinned = [0] * IOPT_PAGES_ACCOUNT_MODE_NUM
    for p in unique:
        if need_charge_update(p):
            npinned[p.account_mode] += p.last_npinned
    # charge_current(): charge the caller per mode, undoing on failure
    charged: list[int] = []
    probe = IoptPages(cur, AddressType.FILE, 0, 1, False)
    try:
        for mode in range(IOPT_PAGES_ACCOUNT_MODE_NUM):
            if not npinned[mode]:
                continue
            probe.account_mode = mode
            probe.update_pinned(npinned[mode], True)
            charged.append(mode)
    except UapiError:
        for mode in charged:
            probe.account_mode = mode
            probe.update_pinned(npinned[mode], False)
        raise
    for p in unique:
        if need_charge_update(p):
            p.update_pinned(p.npinned, False)
        p.change_source(cur)
    return 0


def option_rlimit_mode(ictx: Iommufd, cmd: dict[str, int]) -> None:
    """iommufd_option_rlimit_mode(): global; SET needs CAP_SYS_RESOURCE and an empty context."""
    if cmd["object_id"]:
        raise UapiError(errno.EOPNOTSUPP, "RLIMIT_MODE takes object_id 0")
    if cmd["op"] == uapi.IOMMU_OPTION_OP_GET:
        cmd["val64"] = int(ictx.account_mode == IOPT_PAGES_ACCOUNT_MM)
        return
    if cmd["op"] == uapi.IOMMU_OPTION_OP_SET:
        if not ictx.current.cap_sys_resource:
            raise UapiError(errno.EPERM, "RLIMIT_MODE SET needs CAP_SYS_RESOURCE")
        if not ictx.objects.empty():
            raise UapiError(errno.EBUSY, "objects exist")
        if cmd["val64"] == 0:
            ictx.account_mode = IOPT_PAGES_ACCOUNT_USER
        elif cmd["val64"] == 1:
            ictx.account_mode = IOPT_PAGES_ACCOUNT_MM
        else:
            raise UapiError(errno.EINVAL, f"RLIMIT_MODE {cmd['val64']}")
        return
    raise UapiError(errno.EOPNOTSUPP, f"op {cmd['op']}")


def option_huge_pages(ictx: Iommufd, cmd: dict[str, int]) -> None:
    """iommufd_ioas_option() + iommufd_ioas_option_huge_pages()."""
    if cmd["__reserved"]:
        raise UapiError(errno.EOPNOTSUPP, "__reserved != 0")
    ioas = get_ioas(ictx, cmd["object_id"])
    if cmd["op"] == uapi.IOMMU_OPTION_OP_GET:
        cmd["val64"] = int(not ioas.iopt.disable_large_pages)
        return
    if cmd["op"] == uapi.IOMMU_OPTION_OP_SET:
        if cmd["val64"] == 0:
            ioas.iopt.disable_large_pages_()
            return
        if cmd["val64"] == 1:
            ioas.iopt.enable_large_pages()
            return
        raise UapiError(errno.EINVAL, f"HUGE_PAGES {cmd['val64']}")
    raise UapiError(errno.EOPNOTSUPP, f"op {cmd['op']}")


def option(ucmd: Ucmd) -> int:
    """IOMMU_OPTION (main.c iommufd_option): only val64 is written back."""
    cmd = ucmd.cmd
    if cmd["__reserved"]:
        raise UapiError(errno.EOPNOTSUPP, "__reserved != 0")
    if cmd["option_id"] == uapi.IOMMU_OPTION_RLIMIT_MODE:
        option_rlimit_mode(ucmd.ictx, cmd)
    elif cmd["option_id"] == uapi.IOMMU_OPTION_HUGE_PAGES:
        option_huge_pages(ucmd.ictx, cmd)
    else:
        raise UapiError(errno.EOPNOTSUPP, f"option {cmd['option_id']}")
    off = ucmd.struct.field("val64").offset
    ucmd.ubuf.write(off, ucmd.encode()[off:off + 8])
    return 0
