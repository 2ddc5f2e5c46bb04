"""Benchmark: a device DMA-reads 1 GiB in 64 KiB bursts through an IOMMU domain mapped with 4 KiB pages,
IOTLB on, against a plain numpy copy of the same 1 GiB measured in the same run.

Setup (not timed): a VT-d unit, a device attached to a paging domain whose page sizes are narrowed to
4 KiB, 1 GiB of physically contiguous RAM mapped (262144 leaves).  Timed, best of a few rounds that run
every measurement once in turn (so that floors and values see the same load on a shared machine), each
DMA pass from a flushed IOTLB:

* DMA read: 16384 calls of ``DmaPort.dma_read_into(iova, burst)``, each translated by the unit (IOTLB
  lookup, a page walk on a miss, permission check) and copied out of RAM into the device's 64 KiB burst
  buffer.  Floor: the physical limit of reading the same 1 GiB — 1 GiB / this machine's memory read
  bandwidth, measured by copying it in 1 MiB chunks into a cache-resident buffer (512 copies, so Python's
  call overhead is negligible).
* DMA write: the same bursts from the device buffer into RAM.  Floor: ``ndarray.fill`` of the same 1 GiB
  (the memory write bandwidth).

Ratio = our bandwidth / the floor's (goal >= 0.5 for both).  Extras: a plain 1 GiB -> 1 GiB memcpy, the
same 64 KiB chunked copies without any IOMMU in both directions (what Python's per-burst cost alone
leaves) and their ratios to the same floors, IOTLB statistics.  The chunked write's ratio is the ceiling of
any CPU copy into RAM: a copy's stores first read each line they write (``ndarray.fill`` streams).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import best_of_interleaved, report

from vfiolab.iommu.device import IommuDevice
from vfiolab.iommu.dma import DmaPort
from vfiolab.iommu.domain import IOMMU_DOMAIN_IDENTITY
from vfiolab.iommu.driver import make_unit
from vfiolab.iommu.group import iommu_attach_group, iommu_group_claim_dma_owner, iommu_probe_device
from vfiolab.iommu.pagetable import IOMMU_READ, IOMMU_WRITE
from vfiolab.memory.phys import PhysMemory

GiB = 1 << 30
BURST = 64 << 10
IOVA = 1 << 32


def main() -> None:
    mem = PhysMemory(GiB + (64 << 20))
    unit = make_unit("intel", mem)
    dev = IommuDevice("dma-engine", 0x0300)
    group = iommu_probe_device(dev, unit, default_type=IOMMU_DOMAIN_IDENTITY)
    iommu_group_claim_dma_owner(group, "bench")
    dom = unit.driver.domain_alloc_paging(dev)
    dom.pt.pgsize_bitmap = 1 << 12  # a 4 KiB-mapped domain
    frames = mem.alloc_frames(GiB >> 12, contiguous=True)
    pa = int(frames[0]) << 12
    t0 = time.perf_counter()
    dom.map(IOVA, pa, GiB, IOMMU_READ | IOMMU_WRITE)
    map_s = time.perf_counter() - t0
    assert dom.pt.pte(IOVA + GiB - 1)[0] == 0, "expected 4 KiB leaves"
    iommu_attach_group(dom, group)
    src = mem.view(pa, GiB)
    src[:] = 0x5A
    src[::4096] = np.arange(GiB // 4096, dtype=np.uint64).astype(np.uint8)  # page-distinct bytes
    port = DmaPort(dev)
    ram = mem.u8.reshape(-1)
    big = np.empty(GiB, dtype=np.uint8)
    burst = np.empty(BURST, dtype=np.uint8)

    chunk = np.empty(1 << 20, dtype=np.uint8)

    def read_floor() -> None:
        for off in range(pa, pa + GiB, 1 << 20):
            np.copyto(chunk, ram[off:off + (1 << 20)])

    def write_floor() -> None:
        big.fill(0x5A)

    def memcpy_1g() -> None:
        np.copyto(big, ram[pa:pa + GiB])

    def dma_read() -> None:
        unit.iotlb_flush_all()
        read = port.dma_read_into
        for off in range(0, GiB, BURST):
            read(IOVA + off, burst)

    def dma_write() -> None:
        unit.iotlb_flush_all()
        write = port.dma_write_from
        for off in range(0, GiB, BURST):
            write(IOVA + off, burst)

    def chunked() -> None:
        for off in range(pa, pa + GiB, BURST):
            burst[:] = ram[off:off + BURST]

    def wchunked() -> None:
        for off in range(pa, pa + GiB, BURST):
            ram[off:off + BURST] = burst

    memcpy_1g()
    dma_read()  # warm-up: touch everything once
    port.dma_read_into(IOVA + 12345 * BURST, burst)
    assert np.array_equal(burst, ram[pa + 12345 * BURST:pa + 12346 * BURST]), "DMA read wrong bytes"
    t = best_of_interleaved({"memcpy": memcpy_1g, "rfloor": read_floor, "wfloor": write_floor, "read": dma_read,
                             "rchunk": chunked, "write": dma_write, "wchunk": wchunked}, 5)
    unit.iotlb.reset_stats()
    dma_read()
    stats = dataclasses.replace(unit.iotlb.stats)  # one read pass
    gbs = lambda s: GiB / s / 1e9
    common = {"memcpy_1g_GBps": gbs(t["memcpy"]), "chunked_64k_copy_no_iommu_GBps": gbs(t["rchunk"]),
              "chunked_64k_write_no_iommu_GBps": gbs(t["wchunk"]), "map_1g_4k_s": map_s, "bursts": GiB // BURST}
    # Bandwidths, so ratio = ours / floor: higher is better.
    report("dma_write_1g_64k_4k_pages", "GB/s", gbs(t["write"]), gbs(t["wfloor"]), ">= 0.5",
           extra={"floor": "ndarray.fill of 1 GiB", **common,
                  "chunked_write_ratio": t["wfloor"] / t["wchunk"],
                  "per_burst_overhead_us": (t["write"] - t["wchunk"]) / (GiB // BURST) * 1e6})
    report("dma_read_1g_64k_4k_pages", "GB/s", gbs(t["read"]), gbs(t["rfloor"]), ">= 0.5",
           extra={"floor": "1 GiB / memory read bandwidth (1 MiB chunked copies to a cached buffer)",
                  **common, "chunked_read_ratio": t["rfloor"] / t["rchunk"],
                  "per_burst_overhead_us": (t["read"] - t["rchunk"]) / (GiB // BURST) * 1e6,
                  "iotlb": {"hits": stats.hits, "misses": stats.misses, "fills": stats.fills,
                            "entries": unit.iotlb.entries, "ways": unit.iotlb.ways,
                            "span": 1 << unit.iotlb.span_lg2},
                  })
    mem.close()


if __name__ == "__main__":
    main()
