"""tools/testing/selftests/vfio (Linux 7.2) vfio_dma_mapping_test.c, re-expressed against the model for the
four legacy IOMMU modes of lib/iommu.c: a type1 or type1v2 container on /dev/vfio/vfio, and an iommufd
opened as the container with type1 or type1v2 (the VFIO compat IOAS).  Each run opens a VT-d-backed device
through its group, as vfio_pci_device_init() does.

* vfio_dma_map_limit_test.{unmap_range, unmap_all, overflow}: the last page below the top of the valid
  IOVA range maps and unmaps (size = one page, also with UNMAP_FLAG_ALL); a range wrapping 2^64 is
  EOVERFLOW for MAP and UNMAP.
* vfio_dma_mapping_test.dma_map_unmap (anonymous, anonymous_hugetlb_2mb; the 1gb variant skips like the
  selftest without 1 GiB HugeTLB pages): the region maps, the device reaches the memory at the IOVA, with
  type1v2 the IOMMU leaf is a 4 KiB PTE / a 2 MiB PMD as intel's domain_translation_struct shows; the
  unmap returns the region size and the IOVA translates no more.
"""

from __future__ import annotations

import errno

import pytest
from test_vfio_container_builders import K4, MODES, Machine, Opened, machine, open_mode

from vfiolab.devices.api import DmaError
from vfiolab.errors import UapiError
from vfiolab.iommu.pagetable.common import Translation
from vfiolab.iommufd import uapi as iu
from vfiolab.memory import MAP_ANONYMOUS, MAP_HUGETLB, MAP_PRIVATE, PROT_READ, PROT_WRITE
from vfiolab.vfio.pci_core import IommuDmaPort

SZ_2M = 2 << 20


def setup(mode: str) -> tuple[Machine, Opened]:
    m = machine(1 << 28)
    g = m.add_group("intel", ["0000:00:04.0"])
    return m, open_mode(m, mode, g, "0000:00:04.0")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("test", ["unmap_range", "unmap_all", "overflow"])
def test_vfio_dma_map_limit(mode: str, test: str) -> None:
    m, o = setup(mode)
    c = o.container
    va = m.process.mmap(2 * K4)  # twice the region, for the overflow case
    last = o.ranges()[-1][1]
    iova = last & ~(K4 - 1)
    if test == "overflow":
        iova, size = ((1 << 64) - 1) & ~(K4 - 1), 2 * K4
        for fn, args in ((c.vfio_iommu_map_dma, (va, iova, size)), (c.vfio_iommu_unmap_dma, (iova, size))):
            with pytest.raises(UapiError) as e:
                fn(*args)
            assert e.value.errno == errno.EOVERFLOW
        return
    c.vfio_iommu_map_dma(va, iova, K4)
    m.process.write(va, b"top")
    assert IommuDmaPort(o.device.device.iommu_dev).dma_read(iova, 3) == b"top"  # type: ignore[arg-type]
    if test == "unmap_range":
        assert c.vfio_iommu_unmap_dma(iova, K4) == K4
    else:
        assert c.vfio_iommu_unmap_dma(0, 0, flags=iu.VFIO_DMA_UNMAP_FLAG_ALL) == K4


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("variant", ["anonymous", "anonymous_hugetlb_2mb", "anonymous_hugetlb_1gb"])
def test_vfio_dma_mapping_dma_map_unmap(mode: str, variant: str) -> None:
    if variant == "anonymous_hugetlb_1gb":
        pytest.skip("mmap() failed: no 1 GiB HugeTLB pages (the selftest SKIPs the same way)")
    m, o = setup(mode)
    size = SZ_2M if variant == "anonymous_hugetlb_2mb" else K4
    flags = MAP_ANONYMOUS | MAP_PRIVATE | (MAP_HUGETLB if size == SZ_2M else 0)
    va = m.process.mmap(size, PROT_READ | PROT_WRITE, flags)
    iova = -(-o.ranges()[0][0] // size) * size or size  # iova_allocator_alloc(): an aligned free IOVA
    o.container.vfio_iommu_map_dma(va, iova, size)
    m.process.write(va + size - 4, b"tail")
    port = IommuDmaPort(o.device.device.iommu_dev)  # type: ignore[arg-type]
    assert port.dma_read(iova + size - 4, 4) == b"tail"
    iommu_group = o.group.group.iommu_group
    assert iommu_group is not None
    pt = iommu_group.domain.pt  # type: ignore[union-attr]
    if mode.endswith(("v2_iommu", "type1v2")):  # the selftest checks only type1v2
        leaf = pt.walk(iova)
        assert isinstance(leaf, Translation) and leaf.size == size
    assert o.container.vfio_iommu_unmap_dma(iova, size) == size
    assert not isinstance(pt.walk(iova), Translation)
    with pytest.raises(DmaError):  # the device's DMA now faults
        port.dma_read(iova, 1)
