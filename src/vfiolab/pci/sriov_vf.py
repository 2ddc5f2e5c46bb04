"""SR-IOV Virtual Functions: they appear when software sets VF Enable in the PF's SR-IOV capability.

VF n answers routing ID PF RID + First VF Offset + n * VF Stride (PCIe Base §9.3.3.9-10), which may lie on
bus numbers above the PF's.  Its config space is a type 0 header with a PCI Express capability where the
spec makes most header fields read zero (§9.3.4.1): Vendor and Device ID read 0xFFFF, the BARs are RO
zero (VF memory is carved from the PF's VF BARs: VF n's BAR i = VF BAR i base + n * per-VF size),
Memory Space Enable lives in the PF (VF MSE), there is no INTx.  Clearing VF Enable (or resetting the PF)
removes them.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from vfiolab.errors import VfiolabError
from vfiolab.pci import regs
from vfiolab.pci.caps.base import Capability, CapabilityList
from vfiolab.pci.caps.sriov import SriovCap
from vfiolab.pci.function import PciFunction, with_express

CapFactory = Callable[[], Sequence[Capability]]
"""Makes fresh capability objects for one VF (a Capability instance belongs to one config space)."""


def _no_caps() -> Sequence[Capability]:
    return ()


@dataclass
class VfSpec:
    """What every VF of a PF looks like: class, revision, subsystem IDs and capabilities (per VF, fresh)."""

    class_code: int
    revision: int = 0
    subsys_vendor: int = 0
    subsys_id: int = 0
    caps: CapFactory = _no_caps
    ext_caps: CapFactory = _no_caps
    express: dict[str, object] | None = None
    """ExpressCap keyword arguments for the VFs (default: an endpoint with FLR, as VFs must have)."""
    extra: dict[str, object] = field(default_factory=dict)


class VirtualFunction(PciFunction):
    """One VF: a type 0 function whose IDs read 0xFFFF and whose BARs live in the PF."""

    is_virtfn: ClassVar[bool] = True

    def __init__(self, pf: PciFunction, cap: SriovCap, index: int, rid: int, spec: VfSpec) -> None:
        self.pf, self.sriov, self.index, self.rid = pf, cap, index, rid
        self.real_vendor, self.real_device = pf.vendor, cap.vf_device_id()
        super().__init__(0xFFFF, 0xFFFF, spec.class_code, revision=spec.revision,
                         subsys_vendor=spec.subsys_vendor, subsys_id=spec.subsys_id, interrupt_pin=0,
                         caps=with_express(0, spec.caps(), spec.express if spec.express is not None
                                           else {"flr": True}),   # §9.3.4.1: VFs implement FLR
                         ext_caps=spec.ext_caps(),
                         name=f"{pf.name or 'PF'} VF{index}")

    def _command_rw(self) -> int:
        # PCIe Base §9.3.4.1.3: only Bus Master Enable applies to a VF; I/O, Memory (VF MSE is in the PF),
        # Parity, SERR# and Interrupt Disable are RO zero.
        return regs.COMMAND_MASTER

    def _build_common(self, revision: int, multifunction: bool, interrupt_pin: int) -> None:
        super()._build_common(revision, False, 0)
        # §9.3.4.1.6/.13: Cache Line Size and Interrupt Line are RO zero in a VF.
        self.cs.set_attrs(regs.CACHE_LINE_SIZE, 1)
        self.cs.set_attrs(regs.INTERRUPT_LINE, 1)

    def clone(self, index: int, rid: int) -> VirtualFunction:
        """Another VF of the same PF, as this one was at reset (it must not have been used yet).

        The config space is cloned (ConfigSpace.clone shares the write attributes); capabilities are
        copied (containers in them too) and re-attached to the new config space so their hooks act on it.
        """
        plan = self._clone_plan()
        new = object.__new__(VirtualFunction)
        state = self.__dict__.copy()
        del state["_plan"]
        new.__dict__ = state
        new.index, new.rid = index, rid
        new.name = f"{self.pf.name or 'PF'} VF{index}"
        new.bus, new.devfn = None, -1
        new._reset_listeners = []
        cs = self.cs.clone()
        new.cs = cs
        caps = CapabilityList(cs)
        caps._std_next, caps._ext_next = self.caps._std_next, self.caps._ext_next
        for cap, containers, has_flr in plan:
            dup = object.__new__(type(cap))
            dup.__dict__ = cap.__dict__.copy()
            for k in containers:
                setattr(dup, k, copy.copy(getattr(cap, k)))
            if has_flr:
                dup.on_flr = None  # type: ignore[attr-defined]
            (caps.ext if cap.extended else caps.std).append(dup)
            dup.attach(cs, dup.offset)
        new.caps = caps
        new._hook_flr()
        return new

    def _clone_plan(self) -> list[tuple[Capability, tuple[str, ...], bool]]:
        """Per capability (chain order, standard first): which attributes hold containers to copy and
        whether it has an FLR callback to re-point; worked out once, on the first clone."""
        plan: list[tuple[Capability, tuple[str, ...], bool]] | None = self.__dict__.get("_plan")
        if plan is None:
            plan = []
            for cap in [*self.caps.std, *self.caps.ext]:
                if not hasattr(cap, "__dict__") or hasattr(cap, "__slots__") or hasattr(cap, "__copy__"):
                    raise VfiolabError(f"{self.name}: {type(cap).__name__} cannot be cloned field by field")
                containers = tuple(k for k, v in vars(cap).items() if isinstance(v, (list, dict, set, bytearray)))
                plan.append((cap, containers, getattr(cap, "on_flr", None) is not None))
            self._plan = plan
        return plan

    def bar_address(self, index: int) -> int:
        """VF BAR ``index``: the PF's VF BAR ``index`` base + this VF's index * per-VF size."""
        for region in self.sriov.vf_bars():
            if region.index == index:
                return region.base + self.index * region.size
        raise VfiolabError(f"{self.name}: the PF has no VF BAR {index}")


class SriovController:
    """Creates a PF's VFs when VF Enable is set and removes them when it is cleared or the PF resets."""

    def __init__(self, pf: PciFunction, spec: VfSpec) -> None:
        cap = pf.caps.find(SriovCap.cap_id, extended=True)
        if not isinstance(cap, SriovCap):
            raise VfiolabError(f"{pf!r}: no SR-IOV capability")
        if cap.on_change is not None:
            raise VfiolabError(f"{pf!r}: SR-IOV capability already has an owner")
        self.pf, self.cap, self.spec = pf, cap, spec
        self.vfs: list[VirtualFunction] = []
        self._template: VirtualFunction | None = None
        cap.on_change = self._on_change
        pf.add_reset_listener(self._on_reset)

    def _on_change(self, cap: SriovCap, enabled: bool, num_vfs: int) -> None:
        if enabled:
            self._create()
        else:
            self._remove()

    def _on_reset(self, kind: str) -> None:
        # A PF reset clears VF Enable (SR-IOV Control is not sticky), so the VFs go away.
        if self.vfs and not self.cap.vf_enabled():
            self._remove()

    def _create(self) -> None:
        self._remove()
        pf, bus = self.pf, self.pf.bus
        if bus is None:
            raise VfiolabError(f"{pf!r}: VF Enable set on a PF that is not attached to a bus")
        pf_rid = pf.captured_bus << 8 | pf.devfn
        if self._template is None or self._template.real_device != self.cap.vf_device_id():
            self._template = VirtualFunction(pf, self.cap, 0, 0, self.spec)
        for i, rid in enumerate(self.cap.vf_routing_ids(pf_rid)):
            if rid > 0xFFFF:
                break                      # beyond bus 255: no VF can answer there
            vf = self._template.clone(i, rid)
            vf.bus, vf.devfn, vf.cfg_limit = bus, rid & 0xFF, vf.cs.size
            self.vfs.append(vf)
            bus.vfs[rid] = vf
        bus.complex.topology.invalidate_rids(bus.complex.segment, [vf.rid for vf in self.vfs])

    def _remove(self) -> None:
        bus = self.pf.bus
        for vf in self.vfs:
            if bus is not None and bus.vfs.get(vf.rid) is vf:
                del bus.vfs[vf.rid]
        if self.vfs and bus is not None:
            bus.complex.topology.invalidate_rids(bus.complex.segment, [vf.rid for vf in self.vfs])
        self.vfs = []


def install_sriov(pf: PciFunction, spec: VfSpec) -> SriovController:
    """Make ``pf``'s SR-IOV capability create and remove VFs like ``spec`` when software toggles VF Enable."""
    return SriovController(pf, spec)
