"""IOMMU groups exactly as Linux 7.2 forms them for PCI devices, with the reason each device landed where it did.

The algorithm is drivers/iommu/iommu.c pci_device_group() and its helpers, run per device in probe order
(bus_iommu_probe walks the PCI bus in device_add order; VFs are added later); group numbers come from
ida_alloc(), the lowest free ID.  Before a device is grouped, Linux 7.2 programs its ACS control
(pci_dma_configure -> pci_enable_acs; pci.md section 5.6, about 6.12, has it in pci_acs_init at
enumeration) and AMD-Vi adds its IVRS alias (setup_aliases); both happen here at the same point.
pci_device_group() itself is unchanged from pci.md section 5.4: no ACS-grouping rework is in 7.2.13.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from vfiolab.pci.acs import REQ_ACS_FLAGS, AcsSetup, acs_enabled_why, enable_acs_dev
from vfiolab.pci.aliases import (
    DmaAlias,
    add_ivrs_alias,
    alias_relation,
    apply_alias_quirks,
    describe,
    devs_are_dma_aliases,
    for_each_dma_alias,
)
from vfiolab.pci.dump import DumpedFunction, parse_dump
from vfiolab.pci.enumerate import gc_paused
from vfiolab.pci.hierarchy import PciDev, PciTree


@dataclass(frozen=True)
class IommuSetup:
    """Platform facts grouping depends on that config space does not show (defaults: Intel VT-d on x86)."""

    acs: AcsSetup = field(default_factory=AcsSetup)
    ivrs: bool = False                                  # ACPI IVRS table (AMD-Vi): pci_quirk_amd_sb_acs
    ivrs_aliases: Mapping[str, int] = field(default_factory=dict)   # device -> IVRS alias requester ID
    ntb_proxy_devfns: Mapping[str, tuple[int, ...]] = field(default_factory=dict)  # Switchtec NTB MMIO
    vmd_domains: Mapping[int, str] = field(default_factory=dict)    # VMD domain -> VMD endpoint
    external_facing: frozenset[str] = frozenset()      # ACPI ExternalFacingPort root/downstream ports


@dataclass
class Group:
    """One IOMMU group: its sysfs number, member devices (in the order they joined) and why each is there."""

    id: int
    devices: list[str]
    reasons: list[str]


@dataclass
class GroupResult:
    """All groups in ID order, plus the hierarchy they were computed on."""

    groups: list[Group]
    tree: PciTree = field(repr=False)
    by_device: dict[str, int] = field(default_factory=dict)

    @property
    def warnings(self) -> list[str]:
        return self.tree.warnings

    def group_of(self, name: str) -> Group:
        """The group holding device ``name`` (dddd:bb:dd.f)."""
        return self.groups[self.by_device[self.tree.device(name).name]]

    def to_json(self, reasons: bool = False) -> dict[str, object]:
        """{"groups": [{"id": 0, "devices": [...]}, ...]} (with each group's "reasons" if asked)."""
        out: list[dict[str, object]] = []
        for g in self.groups:
            item: dict[str, object] = {"id": g.id, "devices": list(g.devices)}
            if reasons:
                item["reasons"] = list(g.reasons)
            out.append(item)
        return {"groups": out}

    def explain(self) -> list[str]:
        """Human-readable lines: each group, its devices, then one indented reason per device."""
        lines: list[str] = []
        for g in self.groups:
            lines.append(f"group {g.id}: {' '.join(g.devices)}")
            lines.extend(f"    {why}" for why in g.reasons)
        return lines


Found = tuple[Group, PciDev, list[str]]  # the group, the device that had it, the steps that led there


class _Grouper:
    """pci_device_group() over a whole tree, one device at a time in probe order."""

    def __init__(self, tree: PciTree, setup: IommuSetup) -> None:
        self.tree = tree
        self.setup = setup
        self.ivrs = setup.ivrs or bool(setup.ivrs_aliases)
        self.groups: list[Group] = []
        self.group_of: dict[PciDev, Group] = {}
        self._acs: dict[PciDev, tuple[bool, str]] = {}
        self._path: dict[PciDev, tuple[PciDev, str] | None] = {}
        self.current = -1

    # ------------------------------------------------------------------ cached ACS predicates
    def acs(self, dev: PciDev) -> tuple[bool, str]:
        r = self._acs.get(dev)
        if r is None:
            r = self._acs[dev] = acs_enabled_why(dev, REQ_ACS_FLAGS, self.ivrs)
        return r

    def blocker(self, start: PciDev) -> tuple[PciDev, str] | None:
        """pci_acs_path_enabled(start, NULL, REQ_ACS_FLAGS) is false -> the first device lacking ACS."""
        if start in self._path:
            return self._path[start]
        ok, why = self.acs(start)
        if not ok:
            res: tuple[PciDev, str] | None = (start, why)
        elif start.bus.is_root:
            res = None
        else:
            res = self.blocker(start.bus.self)  # type: ignore[arg-type]
        self._path[start] = res
        return res

    def exists(self, dev: PciDev) -> bool:
        """Boot devices exist from the start; a VF only once it has been added."""
        return not dev.is_virtfn or dev.index <= self.current

    # ------------------------------------------------------------------ the kernel's helpers
    def function_alias_group(self, pdev: PciDev, devfns: set[int]) -> Found | None:
        """get_pci_function_alias_group(): other non-isolated functions in the same slot."""
        if not pdev.multifunction:
            return None
        ok, why_p = self.acs(pdev)
        if ok:
            return None
        for tmp in pdev.bus.slots.get(pdev.devfn >> 3, ()):
            if tmp is pdev or not self.exists(tmp):
                continue
            ok, why_t = self.acs(tmp)
            if ok:
                continue
            found = self.alias_group(tmp, devfns)
            if found is not None:
                step = (f"functions of a multifunction device without ACS ({pdev.name} {why_p}; "
                        f"{tmp.name} {why_t})")
                return found[0], found[1], [step] + found[2]
        return None

    def alias_group(self, pdev: PciDev, devfns: set[int]) -> Found | None:
        """get_pci_alias_group(): an existing group of ``pdev`` or of devices aliased to or by it."""
        if pdev.devfn in devfns:
            return None
        devfns.add(pdev.devfn)
        g = self.group_of.get(pdev)
        if g is not None:
            return g, pdev, []
        if not pdev.bus.alias_hint:  # no device on this bus has alias data: the scan below finds nothing
            return None
        for tmp in pdev.bus.devices:
            if tmp is pdev or not self.exists(tmp) or not devs_are_dma_aliases(pdev, tmp):
                continue
            step = f"DMA aliases: {alias_relation(pdev, tmp)}"
            found = self.alias_group(tmp, devfns) or self.function_alias_group(tmp, devfns)
            if found is not None:
                return found[0], found[1], [step] + found[2]
        return None

    def device_group(self, dev: PciDev) -> tuple[Group | None, str]:
        """pci_device_group(): an existing group to join (with the reason), or None and why it is new."""
        last: DmaAlias | None = None
        for alias in for_each_dma_alias(dev):
            last = alias
            g = self.group_of.get(alias.dev)
            if g is not None:
                return g, f"{dev.name} joined {alias.dev.name}'s group: {describe(alias)}"
        assert last is not None
        pdev = last.dev
        steps: list[str] = []
        if pdev is not dev:
            steps.append(describe(last))
        isolated_by: PciDev | None = None
        bus = pdev.bus
        while (parent := bus.parent) is not None:
            bridge = bus.self
            if bridge is None:  # a virtual (VF) bus has no bridge
                bus = parent
                continue
            blk = self.blocker(bridge)
            if blk is None:
                isolated_by = bridge
                break
            pdev = bridge
            hop = f"{blk[0].kind} {blk[0].name} {blk[1]}"
            g = self.group_of.get(pdev)
            if g is not None:
                return g, f"{dev.name} joined {pdev.name}'s group: {'; '.join(steps + [hop])}"
            steps.append(hop)
            bus = parent
        devfns: set[int] = set()
        found = self.alias_group(pdev, devfns) or self.function_alias_group(pdev, devfns)
        if found is not None:
            g, owner, more = found
            return g, f"{dev.name} joined {owner.name}'s group: {'; '.join(steps + more)}"
        # A new group: say what isolates it.
        if isolated_by is not None:
            ok, why = self.acs(isolated_by)
            core = (f"ACS enabled on the path to the root bus ({isolated_by.kind} {isolated_by.name} {why}"
                    f"{', and everything above it' if not isolated_by.bus.is_root else ''})")
        else:
            core = f"on root bus {pdev.bus.name}, nothing upstream to share with"
        if pdev is not dev:
            core = f"{core}; shares requester ID or isolation with {pdev.name} ({'; '.join(steps)})"
        if pdev.multifunction:
            ok, why = self.acs(pdev)
            core += (f"; multifunction, but {pdev.name} {why}" if ok else
                     f"; first grouped function of multifunction slot {pdev.slot_name} without ACS "
                     f"({pdev.name} {why})")
        return None, f"{dev.name} own group: {core}"

    # ------------------------------------------------------------------ driver
    def run(self) -> GroupResult:
        setup = self.setup
        for dev in self.tree.devices:
            self.current = dev.index
            # pci_dma_configure() -> pci_enable_acs() runs right before ops->device_group() (iommu_init_device).
            if enable_acs_dev(dev, self.tree, setup.acs):
                self._acs.pop(dev, None)
                self._path.clear()
            alias = setup.ivrs_aliases.get(dev.name)
            if alias is not None:
                add_ivrs_alias(dev, alias)
            g, why = self.device_group(dev)
            if g is None:
                g = Group(len(self.groups), [], [])  # ida_alloc(): nothing is ever freed here
                self.groups.append(g)
            g.devices.append(dev.name)
            g.reasons.append(why)
            self.group_of[dev] = g
        by_device = {name: g.id for g in self.groups for name in g.devices}
        return GroupResult(self.groups, self.tree, by_device)


def group_tree(tree: PciTree, setup: IommuSetup | None = None) -> GroupResult:
    """Group an already built hierarchy (applies the DMA-alias quirks and platform setup first)."""
    setup = setup or IommuSetup()
    for name in list(setup.ivrs_aliases) + list(setup.external_facing) + list(setup.acs.disable_acs_redir) \
            + list(setup.acs.config_acs):
        tree.device(name)
    apply_alias_quirks(tree, ntb_proxy_devfns=setup.ntb_proxy_devfns, vmd_domains=setup.vmd_domains)
    if setup.external_facing:
        tree.mark_external_facing(setup.external_facing)
    return _Grouper(tree, setup).run()


def compute_groups(funcs: Iterable[DumpedFunction], setup: IommuSetup | None = None) -> GroupResult:
    """IOMMU groups of a machine given every function's config bytes (any order), as Linux 7.2 forms them."""
    with gc_paused():       # the tree and the groups are kept: no cyclic-GC passes while they are made
        return group_tree(PciTree.from_dumps(funcs), setup)


def groups_from_dump_text(text: str, source: str = "<dump>", setup: IommuSetup | None = None) -> GroupResult:
    """compute_groups() on ``lspci -xxxx`` text (all functions of a machine)."""
    return compute_groups(parse_dump(text, source), setup)
