"""The real-kernel backend (vfiolab.iommufd.kernel) without a kernel: its ctypes structs against the model's
uapi layouts and against the C compiler on Linux 7.2's own header, its ioctl numbers, its API against the
model's (same methods, same signatures), its argument range checks, and its user-memory access through the
host kernel (RealProcess: EFAULT instead of a crash)."""

from __future__ import annotations

import ctypes
import errno
import inspect
import os
import shutil
import subprocess
from dataclasses import fields
from pathlib import Path

import pytest

from vfiolab.errors import UapiError
from vfiolab.iommufd import kernel, kernel_mm, main, mock, uapi
from vfiolab.iommufd.kernel_mm import PROT_NONE, PROT_READ, RealProcess, UserMemory
from vfiolab.memory import PhysMemory, UserProcess

LINUX = Path(os.environ.get("VFIOLAB_CACHE") or Path.home() / ".cache" / "vfiolab") / "src" / "linux-source-7.2"

# model CStruct name -> kernel ctypes struct name (the same unless noted)
PAIRS = [name for name in kernel.STRUCTS if name != "iommu_test_cmd"]


def _model_struct(name: str) -> uapi.CStruct:
    st = getattr(uapi, name)
    assert isinstance(st, uapi.CStruct)
    return st


@pytest.mark.parametrize("name", PAIRS)
def test_struct_layout_matches_the_model(name: str) -> None:
    """sizeof and every scalar member's offset agree with the model's uapi.CStruct (computed independently)."""
    ct, st = kernel.STRUCTS[name], _model_struct(name)
    assert ctypes.sizeof(ct) == st.size
    mine = kernel.scalar_fields(ct)
    for fname, f in st.fields.items():
        if f.count != 1:
            continue
        key = "in_data_type" if (name == "iommu_hw_info" and fname == "data_type") else fname
        assert mine[key][0] == f.offset, f"{name}.{fname}"
        assert ctypes.sizeof(mine[key][1]) == f.size, f"{name}.{fname}"
    model_scalars = {f for f, v in st.fields.items() if v.count == 1} | set(st.aliases)
    assert set(mine) <= model_scalars | {"in_data_type", "out_data_type"}


@pytest.mark.parametrize("member", sorted(kernel.TEST_MEMBERS))
def test_selftest_union_members_match_the_model(member: str) -> None:
    ct, st = kernel.TEST_MEMBERS[member], uapi.TEST_CMD_MEMBERS[member]
    assert ctypes.sizeof(ct) == st.size
    for fname, f in st.fields.items():
        assert kernel.scalar_fields(ct)[fname][0] == f.offset, f"{member}.{fname}"
    cmd = kernel.STRUCTS["iommu_test_cmd"]
    assert ctypes.sizeof(cmd) == uapi.iommu_test_cmd.size
    assert cmd.u.offset == uapi.TEST_CMD_UNION_OFFSET
    assert cmd.last.offset == uapi.iommu_test_cmd.field("last").offset


def test_ioctl_numbers_and_test_ops_match_the_model() -> None:
    for name, spec in kernel.IOCTLS.items():
        assert spec.cmd == uapi.OPS_BY_NAME[name].cmd, name
        model_struct = uapi.OPS_BY_NAME[name].struct
        assert ctypes.sizeof(kernel.STRUCTS[spec.struct]) == model_struct.size, name
    assert set(kernel.IOCTLS) == set(uapi.OPS_BY_NAME)
    for member, op in kernel.TEST_OP.items():  # the op number selects the same union member on both sides
        assert mock._member_name(op) == member, (member, op)
    for name in ("VFIO_GET_API_VERSION", "VFIO_CHECK_EXTENSION", "VFIO_SET_IOMMU", "VFIO_IOMMU_MAP_DMA",
                 "VFIO_IOMMU_UNMAP_DMA"):
        assert getattr(kernel, name) == getattr(uapi, name)


UAPI_METHODS = [name for name, fn in vars(main.Iommufd).items()
                if inspect.isfunction(fn) and not name.startswith("_")
                and name not in ("as_current", "copy_from_user", "copy_to_user", "ctx_get", "ctx_put", "object",
                                 "ioas_ranges")]


@pytest.mark.parametrize("name", UAPI_METHODS)
def test_same_iommufd_api(name: str) -> None:
    """Every uAPI method of the model's Iommufd exists on KernelIommufd with the same signature."""
    assert hasattr(kernel.KernelIommufd, name), name
    assert inspect.signature(getattr(kernel.KernelIommufd, name)) == inspect.signature(getattr(main.Iommufd, name))


SELFTEST_METHODS = [n for n, fn in vars(mock.SelftestOps).items() if inspect.isfunction(fn) and not n.startswith("_")]


@pytest.mark.parametrize("name", SELFTEST_METHODS)
def test_same_selftest_api(name: str) -> None:
    assert inspect.signature(getattr(kernel.KernelSelftestOps, name)) == \
        inspect.signature(getattr(mock.SelftestOps, name))


@pytest.mark.parametrize("mine, model", [(kernel.IovaRanges, main.IovaRanges), (kernel.HwInfo, main.HwInfo),
                                         (kernel.FaultQueue, main.FaultQueue),
                                         (kernel.MockDomainOut, mock.MockDomainOut)])
def test_same_result_records(mine: type, model: type) -> None:
    assert [f.name for f in fields(mine)] == [f.name for f in fields(model)]  # type: ignore[arg-type]


def test_put_refuses_what_does_not_fit() -> None:
    """ctypes would truncate silently; the backend answers EINVAL like the model's call()."""
    obj = kernel.STRUCTS["iommu_ioas_map"]()
    kernel.put(obj, "length", (1 << 64) - 1)
    for name, value in (("length", 1 << 64), ("ioas_id", -1), ("ioas_id", 1 << 32), ("nosuch", 0)):
        with pytest.raises(UapiError) as ei:
            kernel.put(obj, name, value)
        assert ei.value.errno == errno.EINVAL
    f = kernel.STRUCTS["iommu_ioas_map_file"]()
    kernel.put(f, "fd", -1)  # __s32
    assert f.fd == -1
    m = kernel.STRUCTS["iommu_ioas_map"]()
    kernel.put(m, "reserved", 5)
    assert kernel.unpack(m)["__reserved"] == 5
    hw = kernel.STRUCTS["iommu_hw_info"]()
    kernel.put(hw, "data_type", 7)
    assert kernel.unpack(hw)["out_data_type"] == kernel.unpack(hw)["data_type"] == 7


def test_packing_matches_the_model_bytes() -> None:
    """The same member values give the same bytes in both encodings."""
    vals = {"size": 48, "flags": 3, "dev_id": 2, "pt_id": 5, "data_type": 0xDEAD, "data_len": 8,
            "data_uptr": 0x2000_0000_0000, "fault_id": 9}
    obj = kernel.STRUCTS["iommu_hwpt_alloc"]()
    for k, v in vals.items():
        kernel.put(obj, k, v)
    assert bytes(obj) == uapi.iommu_hwpt_alloc.pack(vals)
    cmd = kernel.STRUCTS["iommu_test_cmd"](size=72, op=kernel.TEST_OP["dirty"], id=4)
    for k, v in {"iova": 1 << 24, "length": 0x8000, "page_size": 4096, "uptr": 0x1234000, "flags": 0}.items():
        kernel.put(cmd.u.dirty, k, v)
    buf = bytearray(uapi.iommu_test_cmd.pack(size=72, op=uapi.IOMMU_TEST_OP_DIRTY, id=4))
    mst = uapi.TEST_CMD_MEMBERS["dirty"]
    buf[16:16 + mst.size] = mst.pack(iova=1 << 24, length=0x8000, page_size=4096, uptr=0x1234000)
    assert bytes(cmd) == bytes(buf)


_C_CHECK = r"""
#include <stddef.h>
#include <stdio.h>
#include <linux/types.h>
#include <linux/iommufd.h>
#include <linux/vfio.h>
#include "drivers/iommu/iommufd/iommufd_test.h"
#define S(t) printf(#t " %zu\n", sizeof(struct t));
#define O(t, m) printf(#t "." #m " %zu\n", offsetof(struct t, m));
int main(void) { %s return 0; }
"""


@pytest.mark.skipif(shutil.which("gcc") is None or not (LINUX / ".unpacked").exists(),
                    reason="needs gcc and the Linux 7.2 source (rig/fetch-kernel-source.sh)")
def test_layouts_match_the_c_compiler(tmp_path: Path) -> None:
    """gcc on Linux 7.2's own uapi header gives the sizes and offsets ctypes computed."""
    body = []
    for name, ct in kernel.STRUCTS.items():
        body.append(f"S({name})")
        body += [f"O({name}, {f})" for f in kernel.scalar_fields(ct)]
    for member, ct in kernel.TEST_MEMBERS.items():  # the union of struct iommu_test_cmd is anonymous in C
        body += [f"O(iommu_test_cmd, {member}.{f})" for f in kernel.scalar_fields(ct)]
    src = tmp_path / "layout.c"
    src.write_text(_C_CHECK.replace("%s", " ".join(body)))
    exe = tmp_path / "layout"
    # the raw uapi headers as `make headers` would export them: __user stripped
    cc = subprocess.run(["gcc", "-D__user=", "-D__EXPORTED_HEADERS__", "-o", str(exe), "-I", str(LINUX),
                         "-I", str(LINUX / "include" / "uapi"), str(src)], capture_output=True, text=True,
                        check=False)
    assert cc.returncode == 0, cc.stderr
    out = dict(line.rsplit(" ", 1) for line in subprocess.run([str(exe)], capture_output=True, text=True,
                                                              check=True).stdout.splitlines())
    for name, ct in kernel.STRUCTS.items():
        assert int(out[name]) == ctypes.sizeof(ct), name
        for f, (off, _) in kernel.scalar_fields(ct).items():
            assert int(out[f"{name}.{f}"]) == off, f"{name}.{f}"
    union = kernel.STRUCTS["iommu_test_cmd"].u.offset
    for member, ct in kernel.TEST_MEMBERS.items():
        for f, (off, _) in kernel.scalar_fields(ct).items():
            assert int(out[f"iommu_test_cmd.{member}.{f}"]) == union + off, f"{member}.{f}"


def test_real_process_is_user_memory_and_faults_cleanly() -> None:
    """RealProcess reads and writes this process's memory through the kernel: an unmapped or read-only
    byte is EFAULT (never a SIGSEGV), and a failed write changes nothing."""
    proc = RealProcess()
    try:
        assert isinstance(proc, UserMemory)
        assert isinstance(UserProcess(PhysMemory(1 << 24)), UserMemory)
        page = kernel_mm.PAGE_SIZE
        va = proc.mmap(3 * page)
        proc.write(va + page - 10, b"x" * 20)
        assert proc.read(va + page - 10, 20) == b"x" * 20
        proc.mprotect(va + 2 * page, page, PROT_READ)
        with pytest.raises(UapiError) as ei:
            proc.write(va + 2 * page - 4, b"yyyyyyyy")
        assert ei.value.errno == errno.EFAULT
        assert proc.read(va + 2 * page - 4, 4) == bytes(4)  # all or nothing
        proc.mprotect(va + 2 * page, page, PROT_NONE)
        with pytest.raises(UapiError) as ei:
            proc.read(va + page, 2 * page)
        assert ei.value.errno == errno.EFAULT
        proc.munmap(va, 3 * page)
        with pytest.raises(UapiError):
            proc.read(va, 1)
        big = proc.mmap(200 << 10)
        data = os.urandom(200 << 10)
        proc.write(big, data)
        assert proc.read(big, len(data)) == data
        proc.munmap(big, 200 << 10)
    finally:
        proc.close()


def test_kernel_backend_without_dev_iommu() -> None:
    """Opening a missing device is a UapiError with the open's errno, not an OSError."""
    with pytest.raises(UapiError) as ei:
        kernel.KernelIommufd("/nonexistent/iommu")
    assert ei.value.errno == errno.ENOENT
