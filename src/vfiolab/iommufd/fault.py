"""FAULT objects: I/O page-fault queues delivered to userspace (``drivers/iommu/iommufd/eventq.c``).

A HWPT allocated with IOMMU_HWPT_FAULT_ID_VALID gets ``iommufd_fault_iopf_handler`` as its domain's
``iopf_handler``; the IOMMU core (:func:`vfiolab.iommu.pri.iommu_report_device_fault`) hands it complete
page-request groups, which wait on the queue until userspace ``read()``s them as ``struct
iommu_hwpt_pgfault`` records (a cookie per group) and ``write()``s ``struct iommu_hwpt_page_response``
back.  Detaching the HWPT answers its outstanding groups Invalid (``iommufd_auto_response_faults``).
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Any, Final

from vfiolab.errors import UapiError
from vfiolab.faultinject import fail_point
from vfiolab.iommu.pri import IOMMU_PAGE_RESP_INVALID, IopfGroup, iopf_group_dequeue, iopf_group_response
from vfiolab.iommufd.objects import IommufdObject, ObjType
from vfiolab.iommufd.uapi import iommu_hwpt_page_response, iommu_hwpt_pgfault

if TYPE_CHECKING:
    from vfiolab.iommufd.main import Iommufd
    from vfiolab.iommufd.ucmd import Ucmd

IOMMUFD_PAGE_RESP_SUCCESS: Final = 0
IOMMUFD_PAGE_RESP_INVALID: Final = 1
ESPIPE: Final = errno.ESPIPE


class EventqFile:
    """The anon-inode file of an event queue: holds a users reference on its object and a reference on
    the iommufd context until it is closed."""

    def __init__(self, obj: IommufdObject, name: str) -> None:
        self.obj = obj
        self.name = name
        self.open = True

    def release(self) -> None:
        """iommufd_eventq_fops_release()."""
        if self.open:
            self.open = False
            self.obj.users -= 1
            self.obj.ictx.ctx_put()

    def read(self, count: int) -> bytes:
        """read(2)."""
        reader = getattr(self.obj, "fops_read", None)
        if reader is None:
            raise UapiError(errno.EINVAL, "not readable")
        return bytes(reader(count))

    def write(self, data: bytes) -> int:
        """write(2): bytes consumed."""
        writer = getattr(self.obj, "fops_write", None)
        if writer is None:
            raise UapiError(errno.EINVAL, "not writable")
        return int(writer(data))


class IommufdFault(IommufdObject):
    """struct iommufd_fault."""

    type = ObjType.FAULT

    def __init__(self, ictx: Iommufd) -> None:
        super().__init__(ictx)
        self.file: EventqFile | None = None
        self.deliver: list[IopfGroup] = []
        self.response: dict[int, IopfGroup] = {}
        self.cookies: dict[int, int] = {}
        """id(group) -> cookie of groups read by userspace."""

    def attach_domain(self, domain: Any) -> None:
        """hwpt->domain->iopf_handler = iommufd_fault_iopf_handler."""
        domain.iopf_handler = self.iopf_handler

    def iopf_handler(self, group: IopfGroup) -> None:
        """iommufd_fault_iopf_handler(): take the group off the device's pending list (iommufd answers it,
        eventq.c) and queue it for read()."""
        iopf_group_dequeue(group)
        self.deliver.append(group)

    def auto_response(self, handle: object) -> None:
        """iommufd_auto_response_faults(): answer Invalid every group of a detached handle."""
        for group in [g for g in self.deliver if g.handle is handle]:
            self.deliver.remove(group)
            iopf_group_response(group, IOMMU_PAGE_RESP_INVALID)
        for cookie, group in list(self.response.items()):
            if group.handle is handle:
                del self.response[cookie]
                iopf_group_response(group, IOMMU_PAGE_RESP_INVALID)

    def destroy(self) -> None:
        # iommufd_fault_destroy(): every group still held is answered Invalid
        for group in self.deliver:
            iopf_group_response(group, IOMMU_PAGE_RESP_INVALID)
        for group in self.response.values():
            iopf_group_response(group, IOMMU_PAGE_RESP_INVALID)
        self.deliver.clear()
        self.response.clear()

    def abort(self) -> None:
        # iommufd_object_abort_and_destroy(): __fput_sync() of the file first
        if self.file is not None:
            self.file.release()
        self.destroy()

    def fops_read(self, count: int) -> bytes:
        """iommufd_fault_fops_read(): whole groups only; EINVAL when the first does not fit."""
        size = iommu_hwpt_pgfault.size
        if count % size:
            raise UapiError(ESPIPE, f"read size {count} is not a multiple of {size}")
        out = bytearray()
        while self.deliver:
            group = self.deliver[0]
            if len(out) >= count or len(group.faults) * size > count - len(out):
                if not out:
                    raise UapiError(errno.EINVAL, "the first fault group does not fit the read")
                break
            self.deliver.pop(0)
            cookie = 1  # xa_alloc(XA_FLAGS_ALLOC1, xa_limit_32b)
            while cookie in self.response:
                cookie += 1
            self.response[cookie] = group
            idev = getattr(group.handle, "idev", None)
            for req in group.faults:  # iommufd_compose_fault_message()
                out += iommu_hwpt_pgfault.pack(flags=req.flags, dev_id=idev.id if idev is not None else 0,
                                               pasid=req.pasid, grpid=req.grpid, perm=req.perm, addr=req.addr,
                                               length=0, cookie=cookie)
        return bytes(out)

    def fops_write(self, data: bytes) -> int:
        """iommufd_fault_fops_write(): one response per group read."""
        size = iommu_hwpt_page_response.size
        if len(data) % size:
            raise UapiError(ESPIPE, f"write size {len(data)} is not a multiple of {size}")
        done = 0
        err: UapiError | None = None
        while done < len(data):
            resp = iommu_hwpt_page_response.unpack(data[done:done + size])
            if resp["code"] not in (IOMMUFD_PAGE_RESP_SUCCESS, IOMMUFD_PAGE_RESP_INVALID):
                err = UapiError(errno.EINVAL, f"response code {resp['code']}")
                break
            group = self.response.pop(resp["cookie"], None)
            if group is None:
                err = UapiError(errno.EINVAL, f"no fault group with cookie {resp['cookie']}")
                break
            iopf_group_response(group, resp["code"])
            done += size
        if done == 0 and err is not None:
            raise err
        return done


def fault_queue_alloc(ucmd: Ucmd) -> int:
    """IOMMU_FAULT_QUEUE_ALLOC."""
    cmd = ucmd.cmd
    ictx = ucmd.ictx
    if cmd["flags"]:
        raise UapiError(errno.EOPNOTSUPP, f"flags {cmd['flags']:#x}")
    fault = ictx.objects.alloc(IommufdFault(ictx))
    fault.file = eventq_install(ucmd, fault, "[iommufd-pgfault]", "out_fault_id", "out_fault_fd")
    return 0


def eventq_install(ucmd: Ucmd, obj: IommufdObject, name: str, id_field: str, fd_field: str) -> EventqFile:
    """iommufd_eventq_init() and the rest of an event-queue ioctl: the file (holding the object and the
    context) gets an fd, the ID and fd are written back, then the object is published; on a failed
    write-back the fd is closed and the object destroyed."""
    ictx = ucmd.ictx
    try:
        fail_point("iommufd_eventq_init: anon_inode_getfile")
    except UapiError:
        ictx.objects.abort_and_destroy(obj)
        raise
    file = EventqFile(obj, name)
    obj.users += 1
    ictx.ctx_get()
    task = ictx.current
    fd = task.fd_install(file)
    ucmd.cmd[id_field] = obj.id
    ucmd.cmd[fd_field] = fd
    try:
        ucmd.respond()
    except UapiError:
        task.close_fd(fd)
        file.release()
        ictx.objects.abort_and_destroy(obj)
        raise
    ictx.objects.finalize(obj)
    return file
