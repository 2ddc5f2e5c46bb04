"""VFIO type1 container emulation on an iommufd (``drivers/iommu/iommufd/vfio_compat.c``): the compat
IOAS (IOMMU_VFIO_IOAS get/set/clear) and the ``/dev/vfio/vfio`` ioctls iommufd answers itself
(VFIO_GET_API_VERSION, CHECK_EXTENSION, SET_IOMMU, IOMMU_GET_INFO, IOMMU_MAP_DMA, IOMMU_UNMAP_DMA).

Type1 (v1) is emulated by disabling large pages on the compat IOAS so any PAGE_SIZE-aligned piece of a
map can be cut out (``iopt_cut_iova``); type1v2 refuses partial unmaps like IOMMU_IOAS_UNMAP.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from vfiolab.errors import UapiError
from vfiolab.iommufd import uapi
from vfiolab.iommufd.ioas import IOMMU_CACHE, IOMMU_READ, IOMMU_WRITE, Ioas, get_ioas, ioas_alloc
from vfiolab.iommufd.pages import IOPT_PAGES_ACCOUNT_MM, alloc_user_pages
from vfiolab.iommufd.uapi import PAGE_SIZE, ULONG_MAX

if TYPE_CHECKING:
    from vfiolab.iommufd.main import Iommufd
    from vfiolab.iommufd.ucmd import Ucmd, UserBuffer

ENOIOCTLCMD = errno.ENOTTY
"""-ENOIOCTLCMD reaches userspace as ENOTTY (fs/ioctl.c vfs_ioctl)."""


def get_compat_ioas(ictx: Iommufd) -> Ioas:
    """get_compat_ioas(): ENODEV without a compat IOAS."""
    ioas = ictx.compat_ioas
    if ioas is None or ictx.objects.lookup(ioas.id) is not ioas:
        raise UapiError(errno.ENODEV, "no VFIO compat IOAS")
    return ioas


def compat_ioas_get_id(ictx: Iommufd) -> int:
    """iommufd_vfio_compat_ioas_get_id()."""
    return get_compat_ioas(ictx).id


def compat_set_no_iommu(ictx: Iommufd) -> None:
    """iommufd_vfio_compat_set_no_iommu(): EINVAL once a compat IOAS exists."""
    if ictx.compat_ioas is not None:
        raise UapiError(errno.EINVAL, "compat IOAS exists")
    ictx.no_iommu_mode = True


def compat_ioas_create(ictx: Iommufd) -> None:
    """iommufd_vfio_compat_ioas_create(): make the compat IOAS unless one is set (VFIO group attach)."""
    ioas = ioas_alloc(ictx)
    if ictx.no_iommu_mode:
        ictx.objects.abort(ioas)
        raise UapiError(errno.EINVAL, "no-iommu mode")
    if ictx.compat_ioas is not None and ictx.objects.lookup(ictx.compat_ioas.id) is ictx.compat_ioas:
        ictx.objects.abort(ioas)
        return
    ictx.compat_ioas = ioas
    ictx.objects.finalize(ioas)


def vfio_ioas(ucmd: Ucmd) -> int:
    """IOMMU_VFIO_IOAS."""
    cmd = ucmd.cmd
    ictx = ucmd.ictx
    if cmd["__reserved"]:
        raise UapiError(errno.EOPNOTSUPP, "__reserved != 0")
    op = cmd["op"]
    if op == uapi.IOMMU_VFIO_IOAS_GET:
        cmd["ioas_id"] = get_compat_ioas(ictx).id
        ucmd.respond()
        return 0
    if op == uapi.IOMMU_VFIO_IOAS_SET:
        ictx.compat_ioas = get_ioas(ictx, cmd["ioas_id"])
        return 0
    if op == uapi.IOMMU_VFIO_IOAS_CLEAR:
        ictx.compat_ioas = None
        return 0
    raise UapiError(errno.EOPNOTSUPP, f"op {op}")


# ---------------------------------------------------------------------- /dev/vfio/vfio ioctls
def _map_dma(ictx: Iommufd, ubuf: UserBuffer) -> int:
    st = uapi.vfio_iommu_type1_dma_map
    minsz = st.offsetofend("size")
    m = st.unpack(ubuf.read(0, minsz))
    supported = uapi.VFIO_DMA_MAP_FLAG_READ | uapi.VFIO_DMA_MAP_FLAG_WRITE
    if m["argsz"] < minsz or m["flags"] & ~supported:
        raise UapiError(errno.EINVAL, f"argsz {m['argsz']} or flags {m['flags']:#x}")
    prot = IOMMU_CACHE
    if m["flags"] & uapi.VFIO_DMA_MAP_FLAG_READ:
        prot |= IOMMU_READ
    if m["flags"] & uapi.VFIO_DMA_MAP_FLAG_WRITE:
        prot |= IOMMU_WRITE
    ioas = get_compat_ioas(ictx)
    pages, start_byte = alloc_user_pages(ictx.current, m["vaddr"], m["size"], bool(prot & IOMMU_WRITE))
    ioas.iopt.map_common(pages, start_byte, m["size"], m["iova"], prot, 0,
                         ictx.account_mode == IOPT_PAGES_ACCOUNT_MM)
    return 0


def _unmap_dma(ictx: Iommufd, ubuf: UserBuffer) -> int:
    st = uapi.vfio_iommu_type1_dma_unmap
    minsz = st.offsetofend("size")
    u = st.unpack(ubuf.read(0, minsz))
    if u["argsz"] < minsz or u["flags"] & ~uapi.VFIO_DMA_UNMAP_FLAG_ALL:
        raise UapiError(errno.EINVAL, f"argsz {u['argsz']} or flags {u['flags']:#x}")
    ioas = get_compat_ioas(ictx)
    iopt = ioas.iopt
    err: UapiError | None = None
    unmapped = 0
    if u["flags"] & uapi.VFIO_DMA_UNMAP_FLAG_ALL:
        if u["iova"] != 0 or u["size"] != 0:
            raise UapiError(errno.EINVAL, "UNMAP_FLAG_ALL needs iova and size 0")
        unmapped, err = iopt.unmap_iova_range(0, ULONG_MAX)
    else:
        if iopt.disable_large_pages:  # type1: cut at both ends so pieces of a map can go
            last = (u["iova"] + u["size"] - 1) & ULONG_MAX
            cuts = [last, u["iova"] - 1] if u["iova"] else [last]
            iopt.cut_iova(cuts)
        try:
            unmapped = iopt.unmap_iova(u["iova"], u["size"])
        except UapiError as e:
            err = e
    u["size"] = unmapped
    ubuf.write(0, st.pack(u)[:minsz])
    if err is not None:
        raise err
    return 0


def _cc_iommu(ictx: Iommufd) -> int:
    ioas = get_compat_ioas(ictx)
    return int(all(h.enforce_cache_coherency for h in ioas.hwpt_list))


def check_extension(ictx: Iommufd, ext: int) -> int:
    """iommufd_vfio_check_extension()."""
    if ext in (uapi.VFIO_TYPE1_IOMMU, uapi.VFIO_TYPE1v2_IOMMU, uapi.VFIO_UNMAP_ALL):
        return int(not ictx.no_iommu_mode)
    if ext == uapi.VFIO_NOIOMMU_IOMMU:
        return int(ictx.config_vfio_noiommu)
    if ext == uapi.VFIO_DMA_CC_IOMMU:
        return _cc_iommu(ictx)
    return 0


def set_iommu(ictx: Iommufd, type_: int) -> int:
    """iommufd_vfio_set_iommu(): ENODEV without a compat IOAS; type1 disables large pages."""
    if ictx.config_vfio_noiommu and type_ == uapi.VFIO_NOIOMMU_IOMMU and ictx.no_iommu_mode:
        if not ictx.current.cap_sys_rawio:
            raise UapiError(errno.EPERM, "no-iommu needs CAP_SYS_RAWIO")
        return 0
    if type_ not in (uapi.VFIO_TYPE1_IOMMU, uapi.VFIO_TYPE1v2_IOMMU) or ictx.no_iommu_mode:
        raise UapiError(errno.EINVAL, f"IOMMU type {type_}")
    ioas = get_compat_ioas(ictx)
    if type_ == uapi.VFIO_TYPE1_IOMMU:
        ioas.iopt.disable_large_pages_()
    return 0


def _pagesizes(ioas: Ioas) -> int:
    # iommufd_get_pagesizes()
    bitmap = ULONG_MAX
    for d in ioas.iopt.domains:
        bitmap &= d.pgsize_bitmap
    if bitmap & (PAGE_SIZE - 1):  # vfio_update_pgsize_bitmap()
        bitmap &= ~(PAGE_SIZE - 1) & ULONG_MAX
        bitmap |= PAGE_SIZE
    return max(bitmap, ioas.iopt.iova_alignment)


def _fill_cap_dma_avail(ioas: Ioas, ubuf: UserBuffer, off: int | None, avail: int) -> int:
    st = uapi.vfio_iommu_type1_info_dma_avail
    if off is not None and avail >= st.size:
        ubuf.write(off, st.pack(id=uapi.VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL, version=1, avail=uapi.U32_MAX))
    return st.size


def _fill_cap_iova(ioas: Ioas, ubuf: UserBuffer, off: int | None, avail: int) -> int:
    hdr = uapi.vfio_iommu_type1_info_cap_iova_range
    rng = uapi.vfio_iova_range
    nr = 0
    for start, last in ioas.iopt.iova_ranges():
        if off is not None and avail >= hdr.size + rng.size * (nr + 1):
            ubuf.write(off + hdr.size + rng.size * nr, rng.pack(start=start, end=last))
        nr += 1
    if off is not None and avail >= hdr.size + rng.size * nr:
        ubuf.write(off, hdr.pack(id=uapi.VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE, version=1, nr_iovas=nr))
    return hdr.size + rng.size * nr


def _get_info(ictx: Iommufd, ubuf: UserBuffer) -> int:
    st = uapi.vfio_iommu_type1_info
    minsz = st.offsetofend("iova_pgsizes")
    info = st.unpack(ubuf.read(0, minsz) + bytes(st.size - minsz))
    if info["argsz"] < minsz:
        raise UapiError(errno.EINVAL, f"argsz {info['argsz']} < {minsz}")
    minsz = min(info["argsz"], st.size)
    ioas = get_compat_ioas(ictx)
    info["flags"] = uapi.VFIO_IOMMU_INFO_PGSIZES
    info["iova_pgsizes"] = _pagesizes(ioas)
    info["cap_offset"] = 0
    total = st.size
    last_cap: int | None = None
    for fill in (_fill_cap_dma_avail, _fill_cap_iova):
        if info["argsz"] > total:
            size = fill(ioas, ubuf, total, info["argsz"] - total)
        else:
            size = fill(ioas, ubuf, None, 0)
        size = -(-size // 8) * 8
        if last_cap is not None and info["argsz"] >= total:
            ubuf.write(last_cap + uapi.vfio_info_cap_header.field("next").offset, total.to_bytes(4, "little"))
        last_cap = total
        total += size
    if info["argsz"] >= total:
        info["cap_offset"] = st.size
    info["argsz"] = total
    info["flags"] |= uapi.VFIO_IOMMU_INFO_CAPS
    ubuf.write(0, st.pack(info)[:minsz])
    return 0


def vfio_ioctl(ictx: Iommufd, cmd: int, arg: int, ubuf: UserBuffer | None) -> int:
    """iommufd_vfio_ioctl(): the VFIO container ioctls; ENOTTY for anything else."""
    if cmd == uapi.VFIO_GET_API_VERSION:
        return uapi.VFIO_API_VERSION
    if cmd == uapi.VFIO_SET_IOMMU:
        return set_iommu(ictx, arg)
    if cmd == uapi.VFIO_CHECK_EXTENSION:
        return check_extension(ictx, arg)
    handlers = {uapi.VFIO_IOMMU_GET_INFO: _get_info, uapi.VFIO_IOMMU_MAP_DMA: _map_dma,
                uapi.VFIO_IOMMU_UNMAP_DMA: _unmap_dma}
    h = handlers.get(cmd)
    if h is None:
        raise UapiError(ENOIOCTLCMD, f"ioctl {cmd:#x} is not an iommufd or VFIO container ioctl")
    if ubuf is None:
        raise UapiError(errno.EFAULT, "NULL argument")
    return h(ictx, ubuf)
