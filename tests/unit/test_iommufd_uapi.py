"""The uAPI layouts of vfiolab.iommufd.uapi against the C compiler: every struct's sizeof and every
member's offsetof, and every ioctl number, as gcc computes them from the Linux 7.2 uapi headers
(include/uapi/linux/iommufd.h, vfio.h and drivers/iommu/iommufd/iommufd_test.h)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from vfiolab.errors import VfiolabError
from vfiolab.iommufd import uapi

KSRC = Path("/root/.cache/vfiolab/src/linux-source-7.2")
HEADERS = {
    "linux/iommufd.h": KSRC / "include/uapi/linux/iommufd.h",
    "linux/vfio.h": KSRC / "include/uapi/linux/vfio.h",
    "iommufd_test.h": KSRC / "drivers/iommu/iommufd/iommufd_test.h",
}

STRUCTS = [v for v in vars(uapi).values()
           if isinstance(v, uapi.CStruct) and v.name.startswith(("iommu_", "vfio_"))
           and v.name not in ("vfio_iommu_type1_info_cap_iova_range", "vfio_iommu_type1_info_dma_avail")]
# the VFIO cap structs are modelled header-flattened: check them through the header members
CAP_STRUCTS = {"vfio_iommu_type1_info_cap_iova_range": uapi.vfio_iommu_type1_info_cap_iova_range,
               "vfio_iommu_type1_info_dma_avail": uapi.vfio_iommu_type1_info_dma_avail}
IOCTLS = {name: getattr(uapi, name) for name in dir(uapi)
          if name.startswith(("IOMMU_", "VFIO_")) and name.isupper()
          and isinstance(getattr(uapi, name), int)
          and name in ("IOMMU_DESTROY", "IOMMU_IOAS_ALLOC", "IOMMU_IOAS_ALLOW_IOVAS", "IOMMU_IOAS_COPY",
                       "IOMMU_IOAS_IOVA_RANGES", "IOMMU_IOAS_MAP", "IOMMU_IOAS_UNMAP", "IOMMU_OPTION",
                       "IOMMU_VFIO_IOAS", "IOMMU_HWPT_ALLOC", "IOMMU_GET_HW_INFO",
                       "IOMMU_HWPT_SET_DIRTY_TRACKING",
                       "IOMMU_HWPT_GET_DIRTY_BITMAP", "IOMMU_HWPT_INVALIDATE", "IOMMU_FAULT_QUEUE_ALLOC",
                       "IOMMU_IOAS_MAP_FILE", "IOMMU_VIOMMU_ALLOC", "IOMMU_VDEVICE_ALLOC",
                       "IOMMU_IOAS_CHANGE_PROCESS", "IOMMU_VEVENTQ_ALLOC", "IOMMU_HW_QUEUE_ALLOC",
                       "IOMMU_TEST_CMD", "VFIO_GET_API_VERSION", "VFIO_CHECK_EXTENSION", "VFIO_SET_IOMMU",
                       "VFIO_IOMMU_GET_INFO", "VFIO_IOMMU_MAP_DMA", "VFIO_IOMMU_UNMAP_DMA",
                       "VFIO_IOMMU_DIRTY_PAGES")}


def _c_source() -> tuple[str, list[tuple[str, int]]]:
    lines = ['#include <stdio.h>', '#include <stddef.h>', '#include <linux/iommufd.h>',
             '#include <linux/vfio.h>',
             '#include "iommufd_test.h"', 'int main(void) {']
    expect: list[tuple[str, int]] = []

    def emit(key: str, expr: str, value: int) -> None:
        lines.append(f'printf("%s %lu\\n", "{key}", (unsigned long)({expr}));')
        expect.append((key, value))

    for st in STRUCTS:
        emit(f"sizeof {st.name}", f"sizeof(struct {st.name})", st.size)
        for name, f in st.fields.items():
            if st.name == "iommu_test_cmd" and name == "union":
                continue
            cname = next((a for a, t in st.aliases.items() if t == name), name)  # a union: name a member
            emit(f"offsetof {st.name}.{name}", f"offsetof(struct {st.name}, {cname})", f.offset)
    for member, mst in uapi.TEST_CMD_MEMBERS.items():
        for name, f in mst.fields.items():
            emit(f"offsetof iommu_test_cmd.{member}.{name}",
                 f"offsetof(struct iommu_test_cmd, {member}.{name})",
                 uapi.TEST_CMD_UNION_OFFSET + f.offset)
    for cname, st in CAP_STRUCTS.items():
        emit(f"sizeof {cname}", f"sizeof(struct {cname})", st.size)
        for name, f in st.fields.items():
            path = f"header.{name}" if name in ("id", "version", "next") else name
            emit(f"offsetof {cname}.{name}", f"offsetof(struct {cname}, {path})", f.offset)
    for name, value in IOCTLS.items():
        emit(f"ioctl {name}", name, value)
    for name in ("IOMMU_HWPT_ALLOC_PASID", "IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED", "MOCK_APERTURE_LAST",
                 "IOMMU_HW_INFO_TYPE_SELFTEST", "IOMMU_HWPT_DATA_SELFTEST", "IOMMU_TEST_OP_DMABUF_REVOKE",
                 "MOCK_FLAGS_DEVICE_PASID", "VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL", "VFIO_DMA_UNMAP_FLAG_ALL"):
        emit(f"const {name}", name, getattr(uapi, name))
    lines += ["return 0;", "}"]
    return "\n".join(lines), expect


@pytest.mark.skipif(shutil.which("gcc") is None or not all(p.exists() for p in HEADERS.values()),
                    reason="needs gcc and the Linux 7.2 source cache")
def test_layouts_match_gcc(tmp_path: Path) -> None:
    inc = tmp_path / "include"
    for rel, src in HEADERS.items():
        dst = inc / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(src.read_bytes())
    source, expect = _c_source()
    (tmp_path / "layout.c").write_text(source)
    exe = tmp_path / "layout"
    # what headers_install strips from uapi headers
    defs = ["-D__user=", "-D__counted_by(x)="]
    subprocess.run(["gcc", "-O0", *defs, "-I", str(inc), "-o", str(exe), str(tmp_path / "layout.c")],
                   check=True,
                   capture_output=True, timeout=120)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True, timeout=60).stdout
    got = {line.rsplit(" ", 1)[0]: int(line.rsplit(" ", 1)[1]) for line in out.splitlines()}
    wrong = [f"{k}: model {v}, gcc {got.get(k)}" for k, v in expect if got.get(k) != v]
    assert not wrong, "\n".join(wrong)
    assert len(expect) > 200


def test_min_sizes_are_the_original_struct_ends() -> None:
    """main.c IOCTL_OP(): the minimum is offsetofend() of the member the table names."""
    sizes = {op.name: op.min_size for op in uapi.IOCTL_OPS}
    assert sizes["destroy"] == 8 and sizes["ioas_map"] == 40 and sizes["hwpt_alloc"] == 24
    assert sizes["get_hw_info"] == 32 and sizes["test_cmd"] == 68 and uapi.iommu_test_cmd.size == 72


def test_pack_unpack_round_trip_and_range_errors() -> None:
    st = uapi.iommu_option
    raw = st.pack(size=st.size, option_id=1, op=1, object_id=7, val64=(1 << 64) - 1)
    assert st.unpack(raw) == {"size": 24, "option_id": 1, "op": 1, "__reserved": 0, "object_id": 7,
                              "val64": (1 << 64) - 1}
    with pytest.raises(VfiolabError):
        st.pack(op=1 << 16)
    with pytest.raises(VfiolabError):
        st.pack(nope=1)
    assert uapi.iommu_hw_info.unpack(uapi.iommu_hw_info.pack(data_type=5))["out_data_type"] == 5
    assert uapi.iommu_hw_info.get_array(bytes(40), "__reserved") == (0, 0, 0)
