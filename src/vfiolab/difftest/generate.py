"""Seeded random scenarios for ``vfiolab diff --random N --seed S --length L``.

Generation is steered by the model: each call is chosen, run at once on a fresh model backend, and its outcome
decides which results later calls may refer to (an IOAS that was allocated, a mock device that attached, an
area that was mapped), so sequences reach deep states (nested HWPTs on a vIOMMU, dirty tracking, fault and
event queues, accesses) instead of failing at the first lookup.  A share of every argument is deliberately
wrong (a stale or foreign ID, a misaligned or overflowing IOVA, unknown flags) to exercise the error paths and
their order.  The output is plain data: a :class:`~vfiolab.difftest.scenario.Scenario` whose references are
call indices (``$7``, ``$7.idev_id``), replayed identically by the model and the kernel.

Sequence ``k`` of seed ``S`` comes from ``random.Random(f"vfiolab-diff/{S}/{k}")``: the same on every machine
and Python, so one sequence can be replayed alone (``--seed S --index k``).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from vfiolab.difftest.model_backend import ModelBackend
from vfiolab.difftest.runner import Results, Unresolved, run_call
from vfiolab.difftest.scenario import Call, Scenario
from vfiolab.iommufd import uapi

PAGE: Final = 4096
MOCK_PAGE: Final = uapi.MOCK_PAGE_SIZE
APERTURE: Final = uapi.MOCK_APERTURE_START
U32_MAX: Final = uapi.U32_MAX
U64_MAX: Final = uapi.U64_MAX
R, W, FIXED = uapi.IOMMU_IOAS_MAP_READABLE, uapi.IOMMU_IOAS_MAP_WRITEABLE, uapi.IOMMU_IOAS_MAP_FIXED_IOVA
MAX_BUFFER: Final = 1 << 20
"""Buffers stay below 2 MiB: the guest kernel backs larger anonymous ranges with THP, which the model's
process does not have (md_check_refs skips compound pages)."""


@dataclass
class Area:
    """A successful map: the IOAS ref, the IOVA (a ref or int), its length."""

    ioas: Any
    iova: Any
    length: int
    huge: bool = False
    """Backed by a hugetlb page: physically contiguous on both sides, so the mock domain's PTE sizes (and
    the dirty-bit granularity GET_DIRTY_BITMAP reports) are the same in the model and the kernel."""


@dataclass
class Device:
    """A mock device: refs to its selftest object, iommufd device and first HWPT; its flags."""

    stdev: str
    idev: str
    flags: int
    ioas: Any = None
    """The IOAS it was attached to at creation (its auto HWPT ``hwpt`` maps that IOAS), if it was one."""
    hwpt: str | None = None


@dataclass
class Pools:
    """What earlier successful calls made, as references."""

    bufs: list[tuple[str, int]] = field(default_factory=list)
    ioas: list[str] = field(default_factory=list)
    devs: list[Device] = field(default_factory=list)
    paging: list[tuple[str, int]] = field(default_factory=list)
    """HWPT_PAGING refs with their alloc flags (auto domains: 0)."""
    nested: list[str] = field(default_factory=list)
    viommus: list[str] = field(default_factory=list)
    vdevs: list[str] = field(default_factory=list)
    faults: list[tuple[str, str]] = field(default_factory=list)
    veventqs: list[tuple[str, str]] = field(default_factory=list)
    accesses: list[str] = field(default_factory=list)
    items: list[tuple[str, str]] = field(default_factory=list)
    areas: list[Area] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    pasids: set[tuple[int, int]] = field(default_factory=set)
    """(stdev ID, PASID) attached, as the model's values: such a device is never destroyed (IDs are
    reused, so this goes by value, not by reference; see Backend.detach_pasids)."""
    ids: list[str] = field(default_factory=list)
    """Every object ID ref, of any kind (for destroy and wrong-kind lookups)."""


def offset(value: Any, off: int) -> Any:
    """``value + off`` for an int, the reference ``value+off`` for a reference."""
    if isinstance(value, str):
        return f"{value}+{off:#x}" if off else value
    return value + off if isinstance(value, int) else value


class Generator:
    """One random sequence, built call by call against the model."""

    def __init__(self, rng: random.Random, length: int) -> None:
        self.rng = rng
        self.length = length
        self.calls: list[Call] = []
        self.p = Pools()
        self.backend = ModelBackend()
        self.results = Results()
        self.hbuf: tuple[str, int] | None = None

    # ------------------------------------------------------------------ emitting
    def emit(self, name: str, /, **args: Any) -> tuple[str, bool]:
        """Append and run one call of operation ``name``; (its ref, whether it succeeded on the model)."""
        i = len(self.calls)
        call = Call(name, args)
        self.calls.append(call)
        rec = run_call(self.backend, call, i, self.results)
        ok = rec["errno"] == "ok"
        if ok and name.startswith("test.pasid_") and name != "test.pasid_check_hwpt":
            key = (self.results.arg(args["stdev_id"]), args["pasid"])
            if name == "test.pasid_detach":
                self.p.pasids.discard(key)
            else:
                self.p.pasids.add(key)
        return f"${i}", ok

    def destroyable(self) -> list[str]:
        """ID references whose current value is not a device with a PASID attached."""
        busy = {stdev for stdev, _ in self.p.pasids}
        out = []
        for ref in self.p.ids:
            try:
                if self.results.arg(ref) not in busy:
                    out.append(ref)
            except Unresolved:
                out.append(ref)
        return out

    def full(self) -> bool:
        return len(self.calls) >= self.length

    # ------------------------------------------------------------------ value choices
    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def junk_id(self, small: bool = True) -> int | str:
        """An ID that is probably wrong: 0, U32_MAX, a small number (unless not ``small``), or an ID of another
        kind."""
        r = self.rng.random()
        if r < 0.5 and self.p.ids:
            return self.rng.choice(self.p.ids)
        return self.rng.choice([0, U32_MAX, self.rng.randint(1, 40) if small else 1000])

    def pick(self, pool: list[Any], p_junk: float = 0.1) -> Any:
        """Mostly a member of ``pool``, sometimes :meth:`junk_id` (always when the pool is empty)."""
        if pool and not self.chance(p_junk):
            return self.rng.choice(pool)
        return self.junk_id()

    def pick_fd(self, pool: list[str]) -> Any:
        """Mostly an fd from ``pool``; otherwise an fd of another kind or a number open on neither side (fd
        numbers differ between the model and the guest, so a small junk number could hit a real file)."""
        if pool and not self.chance(0.1):
            return self.rng.choice(pool)
        others = ([f for _, f in self.p.faults] + [f for _, f in self.p.veventqs] + self.p.accesses
                  + self.p.files)
        if others and self.chance(0.5):
            return self.rng.choice(others)
        return self.rng.choice([1000, 4095])

    def buf(self) -> tuple[str, int]:
        if not self.p.bufs:
            self.new_buffer()
        return self.rng.choice(self.p.bufs) if self.p.bufs else ("$0", PAGE)

    def uva(self, length: int) -> Any:
        """A user VA for ``length`` bytes: inside a buffer (page aligned, sometimes not), or beyond it."""
        ref, size = self.buf()
        r = self.rng.random()
        if r < 0.75:
            pages = max(1, (size - length) // PAGE + 1) if length <= size else 1
            off = self.rng.randrange(pages) * PAGE
        elif r < 0.85:
            off = self.rng.choice([MOCK_PAGE, 1, 0x800 + PAGE, 17])
        elif r < 0.95:
            off = size - PAGE  # runs off the end for longer lengths
        else:
            return self.rng.choice([0, 0x1000, U64_MAX - PAGE + 1])
        return offset(ref, off)

    def any_length(self) -> int:
        r = self.rng.random()
        if r < 0.6:
            return self.rng.randint(1, 16) * PAGE
        if r < 0.8:
            return self.rng.randint(1, 32) * MOCK_PAGE
        if r < 0.95:
            return self.rng.choice([1, 100, PAGE - 1, PAGE + 1, 3 * MOCK_PAGE + 5])
        return self.rng.choice([0, U64_MAX, 1 << 40])

    def iova(self) -> Any:
        """An IOVA: in the mock aperture, on an existing area (with an offset), or out of range."""
        r = self.rng.random()
        if r < 0.45 and self.p.areas:
            a = self.rng.choice(self.p.areas)
            off = self.rng.choice([0, 0, MOCK_PAGE, PAGE, a.length, max(0, a.length - PAGE)])
            return offset(a.iova, off)
        if r < 0.85:
            return APERTURE + self.rng.randint(0, 255) * self.rng.choice([PAGE, MOCK_PAGE, 16 * PAGE])
        return self.rng.choice([0, PAGE, 1 << 31, (1 << 31) - PAGE, U64_MAX - PAGE + 1, APERTURE + 1])

    def map_flags(self) -> int:
        r = self.rng.random()
        if r < 0.7:
            return R | W
        if r < 0.85:
            return self.rng.choice([R, W])
        if r < 0.95:
            return 0
        return self.rng.choice([1 << 3, 1 << 31])

    # ------------------------------------------------------------------ creators
    def new_buffer(self) -> None:
        size = self.rng.choice([16 * PAGE, 64 * PAGE, 128 * PAGE, MAX_BUFFER])
        shared = self.chance(0.3)
        ref, ok = self.emit("mmap", length=size, shared=shared)
        if ok:
            self.p.bufs.append((ref, size))
            if self.chance(0.5):
                self.emit("write", va=ref, pattern=len(self.calls), length=min(size, 16 * PAGE))

    def new_ioas(self) -> None:
        ref, ok = self.emit("ioas_alloc", flags=0 if self.chance(0.95) else 1)
        if ok:
            self.p.ioas.append(ref)
            self.p.ids.append(ref)

    def new_device(self) -> None:
        pt = self.pick(self.p.ioas + [h for h, _ in self.p.paging] + self.p.nested, 0.1)
        flags = self.rng.choice([None, None, 0, uapi.MOCK_FLAGS_DEVICE_NO_DIRTY, uapi.MOCK_FLAGS_DEVICE_PASID,
                                 uapi.MOCK_FLAGS_DEVICE_PASID | uapi.MOCK_FLAGS_DEVICE_NO_DIRTY, 2])
        args: dict[str, Any] = {"pt_id": pt}
        if flags is not None:
            args["dev_flags"] = flags
        ref, ok = self.emit("test.mock_domain", **args)
        if ok:
            dev = Device(f"{ref}.stdev_id", f"{ref}.idev_id", flags or 0)
            if pt in self.p.ioas:
                dev.ioas, dev.hwpt = pt, f"{ref}.hwpt_id"
            self.p.devs.append(dev)
            self.p.ids += [dev.stdev, dev.idev]
            if pt in self.p.ioas:
                self.p.paging.append((f"{ref}.hwpt_id", 0))
                self.p.ids.append(f"{ref}.hwpt_id")

    def new_paging(self) -> None:
        dev = self.pick([d.idev for d in self.p.devs])
        ioas = self.pick(self.p.ioas)
        flags = self.rng.choice([0, 0, uapi.IOMMU_HWPT_ALLOC_NEST_PARENT,
                                 uapi.IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
                                 uapi.IOMMU_HWPT_ALLOC_PASID, uapi.IOMMU_HWPT_ALLOC_NEST_PARENT |
                                 uapi.IOMMU_HWPT_ALLOC_DIRTY_TRACKING, 1 << 7])
        args: dict[str, Any] = {"dev_id": dev, "pt_id": ioas, "flags": flags}
        if self.chance(0.15):
            args.update(data_type=uapi.IOMMU_HWPT_DATA_SELFTEST, data_len=8,
                        data_uptr=self.scratch_selftest())
        if self.chance(0.1) and self.p.faults:
            args.update(flags=flags | uapi.IOMMU_HWPT_FAULT_ID_VALID,
                        fault_id=self.rng.choice(self.p.faults)[0])
        ref, ok = self.emit("hwpt_alloc", **args)
        if ok:
            self.p.paging.append((ref, flags))
            self.p.ids.append(ref)

    def scratch_selftest(self, iotlb: int = uapi.IOMMU_TEST_IOTLB_DEFAULT) -> Any:
        """A struct iommu_hwpt_selftest in a buffer's last page: its address."""
        ref, size = self.buf()
        va = f"{ref}+{size - PAGE:#x}"
        self.emit("write", va=va, u32=[iotlb, 0])
        return va

    def new_nested(self) -> None:
        dev = self.pick([d.idev for d in self.p.devs])
        parents = [h for h, f in self.p.paging if f & uapi.IOMMU_HWPT_ALLOC_NEST_PARENT] + self.p.viommus
        parent = self.pick(parents, 0.15)
        data = self.scratch_selftest()
        args: dict[str, Any] = {"dev_id": dev, "pt_id": parent, "data_type": uapi.IOMMU_HWPT_DATA_SELFTEST,
                                "data_len": self.rng.choice([8, 8, 8, 4, 16]), "data_uptr": data}
        r = self.rng.random()
        if r < 0.1:
            args["flags"] = uapi.IOMMU_HWPT_ALLOC_PASID
        elif r < 0.2 and self.p.faults:
            args.update(flags=uapi.IOMMU_HWPT_FAULT_ID_VALID, fault_id=self.rng.choice(self.p.faults)[0])
        elif r < 0.25:
            args["data_type"] = self.rng.choice([0, 1, 0xBEEF])
        ref, ok = self.emit("hwpt_alloc", **args)
        if ok:
            self.p.nested.append(ref)
            self.p.ids.append(ref)

    def new_viommu(self) -> None:
        dev = self.pick([d.idev for d in self.p.devs])
        parent = self.pick([h for h, f in self.p.paging if f & uapi.IOMMU_HWPT_ALLOC_NEST_PARENT] +
                           [h for h, _ in self.p.paging], 0.1)
        args: dict[str, Any] = {"dev_id": dev, "hwpt_id": parent,
                                "type": uapi.IOMMU_VIOMMU_TYPE_SELFTEST if self.chance(0.9) else 0}
        if self.chance(0.3):
            ref, size = self.buf()
            va = f"{ref}+{size - 2 * PAGE:#x}"
            self.emit("write", va=va, u32=[0x1234 + len(self.calls), 0, 0, 0, 0, 0])
            args.update(data_uptr=va, data_len=self.rng.choice([24, 24, 8, 32]))
        ref, ok = self.emit("viommu_alloc", **args)
        if ok:
            self.p.viommus.append(ref)
            self.p.ids.append(ref)
            if "data_uptr" in args:
                self.emit("read", va=args["data_uptr"], length=8)

    def new_vdevice(self) -> None:
        ref, ok = self.emit("vdevice_alloc", viommu_id=self.pick(self.p.viommus),
                            dev_id=self.pick([d.idev for d in self.p.devs]),
                            virt_id=self.rng.choice([0x99, 0x88, 0, 1 << 40, self.rng.randint(1, 1000)]))
        if ok:
            self.p.vdevs.append(ref)
            self.p.ids.append(ref)

    def new_veventq(self) -> None:
        ref, ok = self.emit("veventq_alloc", viommu_id=self.pick(self.p.viommus),
                            type=uapi.IOMMU_VEVENTQ_TYPE_SELFTEST if self.chance(0.9) else 0,
                            veventq_depth=self.rng.choice([1, 2, 4, 0, (1 << 19) + 1]))
        if ok:
            self.p.veventqs.append((f"{ref}.0", f"{ref}.1"))
            self.p.ids.append(f"{ref}.0")

    def new_fault(self) -> None:
        ref, ok = self.emit("fault_queue_alloc", flags=0 if self.chance(0.95) else 1)
        if ok:
            self.p.faults.append((f"{ref}.out_fault_id", f"{ref}.out_fault_fd"))
            self.p.ids.append(f"{ref}.out_fault_id")

    def new_access(self) -> None:
        ref, ok = self.emit("test.create_access", ioas_id=self.pick(self.p.ioas),
                            flags=self.rng.choice([0, 0, uapi.MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES, 2]))
        if ok:
            self.p.accesses.append(ref)

    def new_file_map(self) -> None:
        if self.chance(0.6):
            size = self.rng.choice([4, 16, 64]) * PAGE
            ref, ok = self.emit("memfd", size=size)
        else:
            size = self.rng.choice([1, 4, 16]) * PAGE
            ref, ok = self.emit("test.dmabuf_get", length=size)
        if not ok:
            return
        self.p.files.append(ref)
        if self.full():
            return
        length = self.rng.choice([size, PAGE, size + PAGE, 0])
        start = self.rng.choice([0, 0, PAGE, size])
        self.map_file(ref, start, length)

    def map_file(self, fd: Any, start: int, length: int) -> None:
        ioas = self.pick(self.p.ioas)
        fixed = self.chance(0.4)
        iova = self.iova() if fixed else 0
        ref, ok = self.emit("ioas_map_file", ioas_id=ioas, fd=fd, start=start, length=length, iova=iova,
                            flags=self.map_flags() | (FIXED if fixed else 0))
        if ok:
            self.p.areas.append(Area(ioas, ref, length))

    # ------------------------------------------------------------------ IOAS operations
    def op_map(self) -> None:
        length = self.any_length()
        ioas = self.pick(self.p.ioas)
        fixed = self.chance(0.5)
        iova = self.iova() if fixed else (self.iova() if self.chance(0.05) else 0)
        ref, ok = self.emit("ioas_map", ioas_id=ioas, user_va=self.uva(length), length=length, iova=iova,
                            flags=self.map_flags() | (FIXED if fixed else 0))
        if ok:
            self.p.areas.append(Area(ioas, ref, length))

    def op_map_file(self) -> None:
        self.map_file(self.pick_fd(self.p.files), self.rng.choice([0, 0, PAGE]),
                      self.rng.choice([PAGE, 4 * PAGE]))

    def op_unmap(self) -> None:
        r = self.rng.random()
        if r < 0.5 and self.p.areas:
            a = self.rng.choice(self.p.areas)
            _, ok = self.emit("ioas_unmap", ioas_id=a.ioas, iova=a.iova,
                                length=a.length if self.chance(0.8) else self.any_length())
            if ok:
                self.p.areas = [x for x in self.p.areas if x is not a]
        elif r < 0.65:
            ioas = self.pick(self.p.ioas)
            _ref, ok = self.emit("ioas_unmap", ioas_id=ioas, iova=0, length=U64_MAX)
            if ok:
                self.p.areas = [x for x in self.p.areas if x.ioas != ioas]
        else:
            self.emit("ioas_unmap", ioas_id=self.pick(self.p.ioas), iova=self.iova(),
                      length=self.any_length())

    def op_copy(self) -> None:
        a = self.rng.choice(self.p.areas) if self.p.areas else Area(self.junk_id(), APERTURE, PAGE)
        fixed = self.chance(0.5)
        length = a.length if self.chance(0.7) else self.any_length()
        ref, ok = self.emit("ioas_copy", dst_ioas_id=self.pick(self.p.ioas), src_ioas_id=a.ioas,
                            length=length,
                            src_iova=a.iova if self.chance(0.85) else self.iova(),
                            dst_iova=self.iova() if fixed else 0,
                            flags=self.map_flags() | (FIXED if fixed else 0))
        if ok:
            self.p.areas.append(Area(self.calls[-1].args["dst_ioas_id"], ref, length))

    def op_iova_ranges(self) -> None:
        ref, size = self.buf()
        va = f"{ref}+{size - PAGE:#x}"
        n = self.rng.choice([0, 1, 2, 4, 8])
        self.emit("ioas_iova_ranges", ioas_id=self.pick(self.p.ioas), num_iovas=n, allowed_iovas=va)
        if n and not self.full():
            self.emit("read", va=va, length=16 * n)

    def op_allow_iovas(self) -> None:
        ref, size = self.buf()
        va = f"{ref}+{size - PAGE:#x}"
        ranges: list[int] = []
        for _ in range(self.rng.choice([0, 1, 1, 2])):
            start = APERTURE + self.rng.randint(0, 64) * PAGE * 16
            ranges += [start, start + self.rng.choice([1, 16, 256]) * PAGE - 1]
        if ranges and self.chance(0.1):
            ranges[0], ranges[1] = ranges[1], ranges[0]
        if ranges:
            self.emit("write", va=va, u64=ranges)
        self.emit("ioas_allow_iovas", ioas_id=self.pick(self.p.ioas), num_iovas=len(ranges) // 2,
                  allowed_iovas=va)

    def op_add_reserved(self) -> None:
        self.emit("test.add_reserved", ioas_id=self.pick(self.p.ioas), start=self.iova(),
                  length=self.rng.choice([PAGE, 16 * PAGE, 0, 1 << 20]))

    def op_option(self) -> None:
        if self.chance(0.8):
            op = self.rng.choice([uapi.IOMMU_OPTION_OP_GET, uapi.IOMMU_OPTION_OP_SET])
            self.emit("option", option_id=uapi.IOMMU_OPTION_HUGE_PAGES, op=op,
                      object_id=self.pick(self.p.ioas),
                      val64=self.rng.choice([0, 1, 1, 2]))
        else:
            self.emit("option", option_id=self.rng.choice([0, 0, 5]), op=self.rng.choice([0, 1, 1, 3]),
                      object_id=self.rng.choice([0, 0, 1]), val64=self.rng.choice([0, 1, 2]))

    def op_vfio(self) -> None:
        r = self.rng.random()
        if r < 0.4:
            self.emit("vfio_ioas", op=self.rng.choice([0, 1, 1, 2, 3]), ioas_id=self.pick(self.p.ioas))
        elif r < 0.55:
            self.emit("vfio_set_iommu", type=self.rng.choice([1, 3, 8, 0]))
        elif r < 0.65:
            self.emit("vfio_check_extension", extension=self.rng.choice([1, 3, 4, 9, 10, 2]))
        elif r < 0.85:
            length = self.rng.choice([PAGE, 4 * PAGE])
            self.emit("vfio_iommu_map_dma", vaddr=self.uva(length), iova=self.iova(), size=length)
        else:
            self.emit("vfio_iommu_unmap_dma", iova=self.iova() if self.chance(0.7) else 0,
                      size=self.rng.choice([PAGE, 4 * PAGE, 0]), flags=self.rng.choice([0, 0, 2]))

    # ------------------------------------------------------------------ devices and HWPTs
    def any_pt(self) -> Any:
        return self.pick(self.p.ioas + [h for h, _ in self.p.paging] + self.p.nested, 0.1)

    def op_replace(self) -> None:
        dev = self.pick([d.stdev for d in self.p.devs])
        self.emit("test.mock_domain_replace", stdev_id=dev, pt_id=self.any_pt())

    def op_pasid(self) -> None:
        pasid_devs = [d.stdev for d in self.p.devs if d.flags & uapi.MOCK_FLAGS_DEVICE_PASID]
        dev = self.pick(pasid_devs or [d.stdev for d in self.p.devs], 0.1)
        pasid = self.rng.choice([1, 1, 2, 1024, 0, 1 << 20])
        op = self.rng.choice(["pasid_attach", "pasid_attach", "pasid_replace", "pasid_detach",
                              "pasid_check_hwpt"])
        if op == "pasid_detach":
            self.emit("test.pasid_detach", stdev_id=dev, pasid=pasid)
        elif op == "pasid_check_hwpt":
            self.emit("test.pasid_check_hwpt", stdev_id=dev, pasid=pasid,
                      hwpt_id=self.rng.choice([0, self.any_pt()]))
        else:
            self.emit(f"test.{op}", stdev_id=dev, pasid=pasid, pt_id=self.any_pt())

    def op_destroy(self) -> None:
        """Destroy an object; never a device with a PASID attached, not even by a junk number (the kernel's
        selftest mock cannot unbind it: Backend.detach_pasids)."""
        safe = self.destroyable()
        target = self.rng.choice(safe) if safe and not self.chance(0.15) else \
            self.rng.choice([0, U32_MAX, 1000])
        _ref, ok = self.emit("destroy", id=target)
        if ok:
            self._forget(str(target))

    def _forget(self, ref: str) -> None:
        p = self.p
        p.ids = [x for x in p.ids if x != ref]
        p.ioas = [x for x in p.ioas if x != ref]
        p.paging = [x for x in p.paging if x[0] != ref]
        p.nested = [x for x in p.nested if x != ref]
        p.viommus = [x for x in p.viommus if x != ref]
        p.vdevs = [x for x in p.vdevs if x != ref]
        p.faults = [x for x in p.faults if x[0] != ref]
        p.veventqs = [x for x in p.veventqs if x[0] != ref]
        p.devs = [d for d in p.devs if d.stdev != ref]

    def op_check_map(self) -> None:
        hwpt = self.pick([h for h, _ in self.p.paging], 0.1)
        if self.p.areas and self.chance(0.7):
            a = self.rng.choice(self.p.areas)
            idx = int(str(a.iova).lstrip("$").split("+")[0]) if isinstance(a.iova, str) else -1
            src = self.calls[idx].args.get("user_va") if 0 <= idx < len(self.calls) else None
            if isinstance(src, str):
                self.emit("test.md_check_map", hwpt_id=hwpt, iova=a.iova, length=a.length, uptr=src)
                return
        self.emit("test.md_check_map", hwpt_id=hwpt, iova=self.iova(), length=self.any_length(),
                  uptr=self.uva(PAGE))

    def op_check_refs(self) -> None:
        ref, _size = self.buf()
        self.emit("test.md_check_refs", uptr=ref, length=self.rng.choice([PAGE, 4 * PAGE, 100]),
                  refs=self.rng.choice([0, 0, 1, 2]))

    def op_hw_info(self) -> None:
        ref, size = self.buf()
        va = f"{ref}+{size - PAGE:#x}"
        n = self.rng.choice([0, 4, 8, 16])
        self.emit("get_hw_info", dev_id=self.pick([d.idev for d in self.p.devs]), data_len=n, data_uptr=va,
                  in_data_type=self.rng.choice([0, 0, uapi.IOMMU_HW_INFO_TYPE_SELFTEST, 1]),
                  flags=self.rng.choice([0, 0, 1, 2]))
        if n and not self.full():
            self.emit("read", va=va, length=n + 8)

    def op_dirty(self) -> None:
        """Dirty tracking: enable/disable, mark pages dirty (IOMMU_TEST_OP_DIRTY), harvest the bitmap.
        Bitmaps are read back only over hugetlb-backed areas: elsewhere the PTE size the mock domain chose
        follows the physical contiguity of the pages, which differs between the model and the guest."""
        dirty_hwpts = [h for h, f in self.p.paging if f & uapi.IOMMU_HWPT_ALLOC_DIRTY_TRACKING]
        hwpt = self.pick(dirty_hwpts or [h for h, _ in self.p.paging], 0.1)
        r = self.rng.random()
        ref, size = self.buf()
        bitmap = f"{ref}+{size - PAGE:#x}"
        a = self.rng.choice(self.p.areas) if self.p.areas else Area("", APERTURE, 16 * PAGE)
        huge = [x for x in self.p.areas if x.huge]
        page_size = self.rng.choice([MOCK_PAGE, PAGE, PAGE, 0, 3 * MOCK_PAGE])
        if r < 0.3:
            self.emit("hwpt_set_dirty_tracking", hwpt_id=hwpt, flags=self.rng.choice([1, 1, 0, 2]))
        elif r < 0.6 or not huge:
            self.emit("write", va=bitmap, pattern=len(self.calls), length=64)
            self.emit("test.dirty", hwpt_id=hwpt, iova=a.iova, length=a.length, page_size=page_size,
                      uptr=bitmap)
        else:
            a = self.rng.choice(huge)
            self.emit("write", va=bitmap, fill=0, length=64)
            self.emit("hwpt_get_dirty_bitmap", hwpt_id=hwpt, iova=a.iova, length=a.length,
                      page_size=page_size,
                      data=bitmap, flags=self.rng.choice([0, 0, 1, 2]))
            if not self.full():
                self.emit("read", va=bitmap, length=64)

    def op_invalidate(self) -> None:
        ref, size = self.buf()
        va = f"{ref}+{size - PAGE:#x}"
        if self.chance(0.6):
            target = self.pick(self.p.nested + [h for h, _ in self.p.paging], 0.1)
            n = self.rng.choice([0, 1, 2])
            words = []
            for _ in range(n):
                words += [self.rng.choice([0, 0, 1, 2]), self.rng.choice([0, 1, 2, 3, 4])]
            if words:
                self.emit("write", va=va, u32=words)
            self.emit("hwpt_invalidate", hwpt_id=target, data_uptr=va,
                      data_type=self.rng.choice([uapi.IOMMU_HWPT_INVALIDATE_DATA_SELFTEST] * 4 + [0]),
                      entry_len=self.rng.choice([8, 8, 8, 4, 12]), entry_num=n)
            if self.p.nested and not self.full():
                self.emit("test.md_check_iotlb", hwpt_id=self.rng.choice(self.p.nested),
                          iotlb_id=self.rng.randint(0, 4),
                          iotlb=self.rng.choice([0, uapi.IOMMU_TEST_IOTLB_DEFAULT]))
        else:
            target = self.pick(self.p.viommus, 0.1)
            n = self.rng.choice([1, 2])
            words = []
            for _ in range(n):
                words += [self.rng.choice([0, 0, 1]), self.rng.choice([0x99, 0x88, 1]),
                          self.rng.randint(0, 4)]
            self.emit("write", va=va, u32=words)
            self.emit("hwpt_invalidate", hwpt_id=target, data_uptr=va,
                      data_type=uapi.IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST, entry_len=12, entry_num=n)
            if self.p.devs and not self.full():
                self.emit("test.dev_check_cache", idev_id=self.rng.choice(self.p.devs).idev,
                          cache_id=self.rng.randint(0, 4),
                          cache=self.rng.choice([0, uapi.IOMMU_TEST_DEV_CACHE_DEFAULT]))

    def op_iopf(self) -> None:
        dev = self.pick([d.idev for d in self.p.devs])
        self.emit("test.trigger_iopf", dev_id=dev, pasid=self.rng.choice([0, 0, 1]), grpid=2,
                  perm=self.rng.choice([1, 2, 3]), addr=0xDEADBEAF)
        if self.p.faults and not self.full():
            fd = self.rng.choice(self.p.faults)[1]
            self.emit("read_fd", fd=fd, count=self.rng.choice([40, 40, 80, 39, 0]))
            if not self.full() and self.chance(0.6):
                self.emit("write_fd", fd=fd, u32=[self.rng.choice([1, 1, 2]), self.rng.choice([0, 0, 1, 2])])

    def op_vevent(self, dev: str | None = None) -> None:
        self.emit("test.trigger_vevent", dev_id=dev or self.pick([d.idev for d in self.p.devs]))
        if self.p.veventqs and not self.full():
            self.emit("read_fd", fd=self.rng.choice(self.p.veventqs)[1],
                      count=self.rng.choice([12, 24, 8, 4]))

    def op_hw_queue(self) -> None:
        """A HW queue on one page of an area: a queue over several pages needs them physically contiguous
        (viommu.c iommufd_hw_queue_alloc_phys), which depends on where the guest's allocator put them."""
        a = self.rng.choice(self.p.areas) if self.p.areas else Area("", APERTURE, PAGE)
        self.emit("hw_queue_alloc", viommu_id=self.pick(self.p.viommus),
                  type=uapi.IOMMU_HW_QUEUE_TYPE_SELFTEST if self.chance(0.9) else 0,
                  index=self.rng.choice([0, 0, 1, 2]), nesting_parent_iova=a.iova,
                  length=self.rng.choice([PAGE, MOCK_PAGE, 0]))

    def op_access(self) -> None:
        acc = self.pick_fd(self.p.accesses)
        r = self.rng.random()
        a = self.rng.choice(self.p.areas) if self.p.areas and self.chance(0.8) else \
            Area("", self.iova(), self.any_length())
        if r < 0.35:
            ref, ok = self.emit("test.access_pages", access_fd=acc, iova=a.iova,
                                length=a.length if self.chance(0.7) else PAGE,
                                uptr=self.uva(a.length) if self.chance(0.5) else 0,
                                flags=self.rng.choice([0, 1, 1 << 16]))
            if ok:
                self.p.items.append((str(acc), ref))
        elif r < 0.5:
            if self.p.items:
                acc2, item = self.rng.choice(self.p.items)
                self.emit("test.destroy_access_pages", access_fd=acc2, access_pages_id=item)
            else:
                self.emit("test.destroy_access_pages", access_fd=acc, access_pages_id=self.rng.randint(0, 3))
        elif r < 0.85:
            length = self.rng.choice([1, 8, 100, PAGE, PAGE + 7, 3 * PAGE])
            uptr = self.uva(length)
            flags = self.rng.choice([0, 1, 4, 5, 2])
            if flags & 1:
                self.emit("write", va=uptr, pattern=len(self.calls), length=length)
            self.emit("test.access_rw", access_fd=acc, iova=a.iova, length=length, uptr=uptr, flags=flags)
            if not flags & 1 and not self.full():
                self.emit("read", va=uptr, length=length)
        else:
            self.emit("test.access_replace_ioas", access_fd=acc, ioas_id=self.pick(self.p.ioas))

    def op_close(self) -> None:
        fds = [f for _, f in self.p.faults] + [f for _, f in self.p.veventqs] + self.p.accesses + self.p.files
        if not fds:
            return
        fd = self.rng.choice(fds)
        op = "test.destroy_access" if fd in self.p.accesses else "close"
        _, ok = self.emit(op, **({"access_fd": fd} if op != "close" else {"fd": fd}))
        if ok:
            self.p.accesses = [x for x in self.p.accesses if x != fd]
            self.p.files = [x for x in self.p.files if x != fd]
            self.p.faults = [x for x in self.p.faults if x[1] != fd]
            self.p.veventqs = [x for x in self.p.veventqs if x[1] != fd]

    def op_munmap(self) -> None:
        if self.p.bufs:
            ref, size = self.rng.choice(self.p.bufs)
            _, ok = self.emit("munmap", va=ref, length=size)
            if ok:
                self.p.bufs = [b for b in self.p.bufs if b[0] != ref]

    def op_memory_limit(self) -> None:
        self.emit("test.set_temp_memory_limit", limit=self.rng.choice([16, 65536, 8, 4096]))

    def op_raw(self) -> None:
        """A destroy with a short, long or dirty-tailed struct (cmd_length's rule)."""
        safe = self.destroyable()
        target = self.rng.choice(safe) if safe and self.chance(0.7) else self.rng.choice([0, U32_MAX, 1000])
        if isinstance(target, str):  # raw bytes take no references: use the real value via destroy
            self.emit("destroy", id=target)
            return
        size = self.rng.choice([7, 8, 16])
        tail = self.rng.choice(["", "00" * 8, "01" + "00" * 7])
        data = size.to_bytes(4, "little").hex() + target.to_bytes(4, "little").hex() + tail
        self.emit("ioctl", cmd=uapi.IOMMU_DESTROY, arg=data)

    def op_change_process(self) -> None:
        self.emit("ioas_change_process", reserved=self.rng.choice([0, 0, 0, 1]))

    # ------------------------------------------------------------------ recipes: valid chains into deep states
    def a_device(self, flags: int = 0) -> Device | None:
        """A mock device with ``flags`` (an existing one, else a new one on an IOAS)."""
        fit = [d for d in self.p.devs if d.flags & flags == flags]
        if fit and self.chance(0.7):
            return self.rng.choice(fit)
        if not self.p.ioas:
            self.new_ioas()
        if not self.p.ioas or self.full():
            return None
        ioas = self.rng.choice(self.p.ioas)
        ref, ok = self.emit("test.mock_domain", pt_id=ioas, dev_flags=flags)
        if not ok:
            return None
        dev = Device(f"{ref}.stdev_id", f"{ref}.idev_id", flags, ioas, f"{ref}.hwpt_id")
        self.p.devs.append(dev)
        self.p.ids += [dev.stdev, dev.idev, f"{ref}.hwpt_id"]
        self.p.paging.append((f"{ref}.hwpt_id", 0))
        return dev

    def a_paging(self, dev: Device, flags: int) -> str | None:
        if not self.p.ioas or self.full():
            return None
        ref, ok = self.emit("hwpt_alloc", dev_id=dev.idev, pt_id=self.rng.choice(self.p.ioas), flags=flags)
        if not ok:
            return None
        self.p.paging.append((ref, flags))
        self.p.ids.append(ref)
        return ref

    def recipe_viommu(self) -> None:
        dev = self.a_device()
        parent = self.a_paging(dev, uapi.IOMMU_HWPT_ALLOC_NEST_PARENT) if dev else None
        if dev is None or parent is None or self.full():
            return
        viommu, ok = self.emit("viommu_alloc", dev_id=dev.idev, hwpt_id=parent,
                               type=uapi.IOMMU_VIOMMU_TYPE_SELFTEST)
        if not ok or self.full():
            return
        self.p.viommus.append(viommu)
        self.p.ids.append(viommu)
        vdev, ok = self.emit("vdevice_alloc", viommu_id=viommu, dev_id=dev.idev,
                             virt_id=self.rng.choice([0x99, 7]))
        if ok:
            self.p.vdevs.append(vdev)
            self.p.ids.append(vdev)
        if self.chance(0.5) and not self.full():
            self.new_veventq()
        if self.full():
            return
        nested, ok = self.emit("hwpt_alloc", dev_id=dev.idev, pt_id=viommu,
                               data_type=uapi.IOMMU_HWPT_DATA_SELFTEST, data_len=8, data_uptr=self.scratch_selftest())
        if ok:
            self.p.nested.append(nested)
            self.p.ids.append(nested)
            if not self.full():
                self.emit("test.mock_domain_replace", stdev_id=dev.stdev, pt_id=nested)
            if not self.full() and self.chance(0.7):
                self.op_vevent(dev.idev)
        if dev.ioas is not None and self.chance(0.5) and not self.full():
            area = self.map_on(dev.ioas)
            if area is not None and not self.full():
                self.emit("hw_queue_alloc", viommu_id=viommu, type=uapi.IOMMU_HW_QUEUE_TYPE_SELFTEST,
                          index=self.rng.choice([0, 0, 1]), nesting_parent_iova=area.iova,
                          length=self.rng.choice([PAGE, MOCK_PAGE]))

    def map_on(self, ioas: Any) -> Area | None:
        """A plain, valid map of a few pages of a buffer on ``ioas`` (auto IOVA)."""
        length = self.rng.randint(1, 4) * PAGE
        ref, ok = self.emit("ioas_map", ioas_id=ioas, user_va=self.uva(length), length=length, iova=0,
                            flags=R | W)
        if not ok:
            return None
        area = Area(ioas, ref, length)
        self.p.areas.append(area)
        return area

    def recipe_check_map(self) -> None:
        """Map on a device's IOAS and check its mock domain maps exactly the buffer."""
        dev = self.a_device()
        if dev is None or dev.ioas is None or self.full():
            return
        length = self.rng.randint(1, 8) * PAGE
        uva = self.uva(length)
        ref, ok = self.emit("ioas_map", ioas_id=dev.ioas, user_va=uva, length=length, iova=0, flags=R | W)
        if ok:
            self.p.areas.append(Area(dev.ioas, ref, length))
            if not self.full():
                self.emit("test.md_check_map", hwpt_id=dev.hwpt, iova=ref, length=length, uptr=uva)
            if not self.full() and self.chance(0.4):
                self.emit("test.md_check_refs", uptr=uva, length=PAGE, refs=self.rng.choice([0, 1]))

    def recipe_access(self) -> None:
        """An access on an IOAS with a map: pin pages, read and write through it."""
        if not self.p.ioas:
            return
        ioas = self.rng.choice(self.p.ioas)
        area = next((a for a in reversed(self.p.areas) if a.ioas == ioas), None) or self.map_on(ioas)
        if area is None or self.full():
            return
        acc, ok = self.emit("test.create_access", ioas_id=ioas,
                            flags=self.rng.choice([0, uapi.MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES]))
        if not ok:
            return
        self.p.accesses.append(acc)
        for _ in range(self.rng.randint(1, 3)):
            if self.full():
                return
            if self.chance(0.4):
                item, ok = self.emit("test.access_pages", access_fd=acc, iova=area.iova,
                                     length=self.rng.choice([PAGE, area.length]),
                                     flags=self.rng.choice([0, uapi.MOCK_FLAGS_ACCESS_WRITE]))
                if ok:
                    self.p.items.append((acc, item))
            else:
                length = self.rng.choice([8, 100, PAGE, area.length])
                ref, size = self.buf()
                uptr = f"{ref}+{size - 2 * PAGE:#x}"
                write = self.chance(0.5)
                if write:
                    self.emit("write", va=uptr, pattern=len(self.calls), length=length)
                if not self.full():
                    iova = offset(area.iova, self.rng.choice([0, 3, 100]))
                    self.emit("test.access_rw", access_fd=acc, iova=iova, length=length, uptr=uptr,
                              flags=(uapi.MOCK_ACCESS_RW_WRITE if write else 0) |
                              self.rng.choice([0, uapi.MOCK_ACCESS_RW_SLOW_PATH]))
                if not write and not self.full():
                    self.emit("read", va=uptr, length=length)

    def recipe_pasid(self) -> None:
        dev = self.a_device(uapi.MOCK_FLAGS_DEVICE_PASID)
        hwpt = self.a_paging(dev, uapi.IOMMU_HWPT_ALLOC_PASID) if dev else None
        if dev is None or hwpt is None or self.full():
            return
        if self.chance(0.5):
            self.emit("test.mock_domain_replace", stdev_id=dev.stdev, pt_id=hwpt)
        if not self.full():
            self.emit("test.pasid_attach", stdev_id=dev.stdev, pasid=self.rng.choice([1, 2, 1024]),
                      pt_id=hwpt)

    def huge_buffer(self) -> tuple[str, int] | None:
        """The scenario's 2 MiB hugetlb buffer (made on first use; the guest reserves 16 huge pages)."""
        if self.hbuf is None:
            ref, ok = self.emit("mmap", length=2 << 20, huge=True, shared=self.chance(0.5))
            if ok:
                self.hbuf = (ref, 2 << 20)
                self.emit("write", va=ref, pattern=len(self.calls), length=64 * PAGE)
        return self.hbuf

    def map_huge(self, ioas: Any) -> None:
        """Map part of the hugetlb buffer (dirty bitmaps are read back over such areas only)."""
        hb = self.huge_buffer()
        if hb is None or self.full():
            return
        length = self.rng.choice([MOCK_PAGE, PAGE, 4 * PAGE, 16 * PAGE, 64 * PAGE])
        uva = offset(hb[0], self.rng.randrange(0, 256) * PAGE)
        fixed = self.chance(0.5)
        iova = APERTURE + self.rng.randrange(0, 64) * 64 * PAGE if fixed else 0
        ref, ok = self.emit("ioas_map", ioas_id=ioas, user_va=uva, length=length, iova=iova,
                            flags=R | W | (FIXED if fixed else 0))
        if ok:
            self.p.areas.append(Area(ioas, ref, length, huge=True))

    def recipe_dirty(self) -> None:
        dev = self.a_device()
        hwpt = self.a_paging(dev, uapi.IOMMU_HWPT_ALLOC_DIRTY_TRACKING) if dev else None
        if dev is None or hwpt is None or self.full():
            return
        self.emit("test.mock_domain_replace", stdev_id=dev.stdev, pt_id=hwpt)
        if not self.full():
            if dev.ioas is not None and self.chance(0.8):
                self.map_huge(dev.ioas)
            else:
                self.op_map()
        if not self.full():
            self.emit("hwpt_set_dirty_tracking", hwpt_id=hwpt, flags=uapi.IOMMU_HWPT_DIRTY_TRACKING_ENABLE)
        for _ in range(2):
            if not self.full():
                self.op_dirty()

    def recipe_vfio_compat(self) -> None:
        """The VFIO type1 emulation on a compat IOAS with a mock domain: map, then unmap pieces (type1
        splits, type1v2 refuses), whole ranges, or everything."""
        if not self.p.ioas:
            self.new_ioas()
        if not self.p.ioas or self.full():
            return
        ioas = self.rng.choice(self.p.ioas)
        self.emit("vfio_ioas", op=uapi.IOMMU_VFIO_IOAS_SET, ioas_id=ioas)
        if self.chance(0.8) and not self.full():
            self.emit("test.mock_domain", pt_id=ioas)
        if not self.full():
            self.emit("vfio_set_iommu", type=self.rng.choice([uapi.VFIO_TYPE1_IOMMU, uapi.VFIO_TYPE1v2_IOMMU]))
        base = APERTURE + self.rng.randrange(0, 64) * 64 * PAGE
        size = self.rng.choice([PAGE, 4 * PAGE, 16 * PAGE])
        if not self.full():
            # never flags 0 (neither READ nor WRITE): Linux 7.2's vfio_compat.c passes it on to iommu_map(),
            # whose generic_pt map_range() WARNs (a kernel bug this run found; docs/oracle.md)
            self.emit("vfio_iommu_map_dma", vaddr=self.uva(size), iova=base, size=size,
                      flags=self.rng.choice([3, 3, 1, 2, 4]))
        for _ in range(self.rng.randint(1, 3)):
            if self.full():
                return
            r = self.rng.random()
            if r < 0.5:
                self.emit("vfio_iommu_unmap_dma", iova=base + self.rng.choice([0, 0, PAGE]),
                          size=self.rng.choice([PAGE, size, 2 * size]))
            elif r < 0.8:
                self.emit("vfio_iommu_unmap_dma", iova=self.rng.choice([0, base]), size=0,
                          flags=uapi.VFIO_DMA_UNMAP_FLAG_ALL)
            else:
                self.emit("option", option_id=uapi.IOMMU_OPTION_HUGE_PAGES, op=uapi.IOMMU_OPTION_OP_GET,
                          object_id=ioas)

    def recipe_events(self) -> None:
        """Event queue depth: more vEVENTs than the queue holds, read back with various counts."""
        if not self.p.veventqs:
            self.recipe_viommu()
        dev = next((d for d in self.p.devs), None)
        if not self.p.veventqs or dev is None:
            return
        fd = self.rng.choice(self.p.veventqs)[1]
        for _ in range(self.rng.randint(1, 4)):
            if self.full():
                return
            self.emit("test.trigger_vevent", dev_id=dev.idev)
        for _ in range(2):
            if self.full():
                return
            self.emit("read_fd", fd=fd, count=self.rng.choice([8, 12, 24, 36, 64]))

    # ------------------------------------------------------------------ the loop
    def actions(self) -> list[tuple[float, Callable[[], None]]]:
        p = self.p
        return [
            (1.0 if len(p.bufs) < 3 else 0.1, self.new_buffer),
            (2.0 if len(p.ioas) < 3 else 0.3, self.new_ioas),
            (3.0 if len(p.devs) < 3 else 0.5, self.new_device),
            (2.5, self.new_paging), (1.5, self.new_nested), (1.2, self.new_viommu), (1.0, self.new_vdevice),
            (0.8, self.new_veventq), (0.8, self.new_fault), (1.2, self.new_access), (0.8, self.new_file_map),
            (6.0, self.op_map), (0.6, self.op_map_file), (4.0, self.op_unmap), (1.5, self.op_copy),
            (1.2, self.op_iova_ranges), (0.8, self.op_allow_iovas), (0.8, self.op_add_reserved),
            (0.8, self.op_option), (1.0, self.op_vfio),
            (2.5, self.op_replace), (1.5, self.op_pasid), (3.0, self.op_destroy), (1.5, self.op_check_map),
            (0.6, self.op_check_refs), (0.6, self.op_hw_info), (2.0, self.op_dirty),
            (1.2, self.op_invalidate),
            (0.8, self.op_iopf), (0.8, self.op_vevent), (0.8, self.op_hw_queue), (2.5, self.op_access),
            (0.8, self.op_close), (0.3, self.op_munmap), (0.2, self.op_memory_limit), (0.4, self.op_raw),
            (0.2, self.op_change_process), (1.0, self.recipe_viommu), (0.8, self.recipe_pasid),
            (0.8, self.recipe_dirty), (1.2, self.recipe_check_map), (1.2, self.recipe_access),
            (0.6, self.recipe_vfio_compat), (0.6, self.recipe_events),
        ]

    def run(self) -> list[Call]:
        self.backend.start()
        try:
            self.new_buffer()
            self.new_ioas()
            if self.chance(0.7):
                self.new_device()
            while not self.full():
                weights, fns = zip(*self.actions())
                self.rng.choices(fns, weights)[0]()
        finally:
            # a model crash at close(2) is not the generator's business: replaying the scenario records it
            with contextlib.suppress(Exception):
                self.backend.finish()
        return self.calls[:self.length]


def sub_seed(seed: int, index: int) -> str:
    """The RNG seed of sequence ``index`` of run ``seed``."""
    return f"vfiolab-diff/{seed}/{index}"


def random_scenario(seed: int, index: int, length: int) -> Scenario:
    """Sequence ``index`` of seed ``seed``: ``length`` calls."""
    calls = Generator(random.Random(sub_seed(seed, index)), length).run()
    return Scenario(f"random-{seed}-{index}", calls, source=f"vfiolab diff --random 1 --seed {seed} "
                    f"--index {index} --length {length}")


def random_scenarios(count: int, seed: int, length: int, first: int = 0) -> list[Scenario]:
    """Sequences ``first`` .. ``first+count-1`` of ``seed``."""
    return [random_scenario(seed, k, length) for k in range(first, first + count)]


__all__ = ["Generator", "random_scenario", "random_scenarios", "sub_seed"]
