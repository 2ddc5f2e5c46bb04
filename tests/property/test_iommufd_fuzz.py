"""Every ioctl, fed structs of random sizes and plausible-or-random member values (object IDs, pointers
into a mapped scratch area, page-sized lengths, garbage), fails only with UapiError (architecture
decision 3), and the fd still closes without leaking an object, a pin or a frame."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vfiolab.errors import UapiError
from vfiolab.iommufd import Iommufd, MockIommu, uapi
from vfiolab.memory import MemFile, PhysMemory, UserProcess

MEM = PhysMemory(1 << 30, name="iommufd-fuzz")
SCRATCH = 0x6000_0000_0000
PAGE = 4096
OPS = list(uapi.IOCTL_OPS)
VFIO = [uapi.VFIO_GET_API_VERSION, uapi.VFIO_CHECK_EXTENSION, uapi.VFIO_SET_IOMMU, uapi.VFIO_IOMMU_GET_INFO,
        uapi.VFIO_IOMMU_MAP_DMA, uapi.VFIO_IOMMU_UNMAP_DMA, uapi.VFIO_IOMMU_DIRTY_PAGES]


def _value(width: int) -> st.SearchStrategy[int]:
    top = (1 << (8 * width)) - 1
    vals: list[st.SearchStrategy[int]] = [st.integers(0, 6), st.just(0), st.integers(0, top)]
    if width >= 4:
        vals += [st.sampled_from([PAGE, 2 * PAGE, 16 * PAGE, 2048, uapi.MOCK_APERTURE_START, top]),
                 st.sampled_from([uapi.IOMMU_TEST_OP_MOCK_DOMAIN, uapi.IOMMU_TEST_OP_ADD_RESERVED,
                                  uapi.IOMMU_TEST_OP_CREATE_ACCESS, uapi.IOMMU_TEST_OP_ACCESS_PAGES,
                                  uapi.IOMMU_TEST_OP_ACCESS_RW, uapi.IOMMU_TEST_OP_MD_CHECK_MAP, 3])]
    if width == 8:
        vals.append(st.integers(0, 16 * PAGE).map(lambda o: SCRATCH + o))
    return st.one_of(vals)


@st.composite
def calls(draw: st.DrawFn) -> tuple[int, bytes | int]:
    if draw(st.integers(0, 9)) == 0:
        cmd = draw(st.sampled_from(VFIO))
        if draw(st.booleans()):
            return cmd, draw(st.integers(0, 12))
        return cmd, draw(st.binary(min_size=0, max_size=64))
    op = draw(st.sampled_from(OPS))
    buf = bytearray(op.struct.size + 16)
    for f in op.struct.fields.values():
        if f.count != 1 or f.name == "size":
            continue
        width = f.size
        buf[f.offset:f.offset + width] = draw(_value(width)).to_bytes(width, "little")
    if op.name == "test_cmd":
        for off in range(uapi.TEST_CMD_UNION_OFFSET, uapi.TEST_CMD_UNION_OFFSET + 48, 8):
            buf[off:off + 8] = draw(_value(8)).to_bytes(8, "little")
    size = draw(st.sampled_from([op.struct.size, op.struct.size, op.min_size, op.min_size - 1,
                                 op.struct.size + 8,
                                 draw(st.integers(0, 200))]))
    buf[0:4] = size.to_bytes(4, "little")
    if draw(st.integers(0, 5)) == 0:
        buf[op.struct.size:] = draw(st.binary(min_size=16, max_size=16))
    return op.cmd, bytes(buf)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(calls(), min_size=1, max_size=25))
def test_only_uapi_errors_and_no_leaks(seq: list[tuple[int, bytes | int]]) -> None:
    before = MEM.frames_in_use
    proc = UserProcess(MEM)
    proc.mmap(16 * PAGE, addr=SCRATCH, flags=0x02 | 0x20 | 0x10)
    mf = MemFile(MEM, 16 * PAGE)
    mock = MockIommu(MEM)
    fd = Iommufd(proc, selftest=mock)
    fd.current.fd_install(mf)
    for cmd, arg in seq:
        try:
            fd.ioctl(cmd, arg)
        except UapiError:
            pass
    for f in list(fd.current.fds):
        obj = fd.current.fds.pop(f)
        if hasattr(obj, "release"):
            obj.release()
    fd.close()
    assert fd.released and len(fd.objects) == 0 and not mock.devs
    assert int(MEM.pincount.sum()) == 0
    proc.close()
    mf.close()
    assert MEM.frames_in_use == before
