"""DMA aliases: every requester ID a device's DMA may arrive with, as Linux 7.2 works them out.

Three sources: the topology (bridges that take ownership of transactions; drivers/pci/search.c
pci_for_each_dma_alias), per-device quirks that add devfns to ``dma_alias_mask`` or set bridge flags
(drivers/pci/quirks.c, kept here as a data table), and platform inputs config space cannot show (AMD IVRS
aliases, drivers/iommu/amd/iommu.c setup_aliases; Switchtec NTB proxy IDs read from MMIO; Intel VMD domains,
arch/x86/pci/common.c pci_real_dma_dev).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Final, NamedTuple

from vfiolab.errors import VfiolabError
from vfiolab.pci.caps.express_regs import TYPE_PCI_BRIDGE, TYPE_PCIE_BRIDGE
from vfiolab.pci.hierarchy import (
    FLAG_BRIDGE_XLATE_ROOT,
    FLAG_PCI_BRIDGE_NO_ALIAS,
    FLAG_PCIE_BRIDGE_ALIAS,
    PciDev,
    PciTree,
)


@dataclass(frozen=True)
class AliasQuirk:
    """One DMA-alias fixup: (vendor, device) and what it does; ``subsystem`` narrows "fixed" entries."""

    vendor: int
    device: int
    kind: str
    subsystem: tuple[int, int] | None = None
    devfn: int = 0


def _run(vendor: int, kind: str, devices: Iterable[int]) -> list[AliasQuirk]:
    return [AliasQuirk(vendor, d, kind) for d in devices]


_SWITCHTEC_IDS: Final = (
    0x8531, 0x8532, 0x8533, 0x8534, 0x8535, 0x8536, 0x8541, 0x8542, 0x8543, 0x8544, 0x8545, 0x8546,
    0x8551, 0x8552, 0x8553, 0x8554, 0x8555, 0x8556, 0x8561, 0x8562, 0x8563, 0x8564, 0x8565, 0x8566,
    0x8571, 0x8572, 0x8573, 0x8574, 0x8575, 0x8576,                                     # Gen3
    0x4000, 0x4084, 0x4068, 0x4052, 0x4036, 0x4028, 0x4100, 0x4184, 0x4168, 0x4152, 0x4136, 0x4128,
    0x4200, 0x4284, 0x4268, 0x4252, 0x4236, 0x4228, 0x4352, 0x4336, 0x4328, 0x4452, 0x4436, 0x4428,
    0x4552, 0x4536, 0x4528,                                                             # Gen4
    0x5000, 0x5084, 0x5068, 0x5052, 0x5036, 0x5028, 0x5100, 0x5184, 0x5168, 0x5152, 0x5136, 0x5128,
    0x5200, 0x5284, 0x5268, 0x5252, 0x5236, 0x5228, 0x5300, 0x5384, 0x5368, 0x5352, 0x5336, 0x5328,
    0x5400, 0x5484, 0x5468, 0x5452, 0x5436, 0x5428, 0x5500, 0x5584, 0x5568, 0x5552, 0x5536, 0x5528)  # Gen5

# Linux 7.2 drivers/pci/quirks.c DMA-alias and bridge-flag fixups.
DMA_ALIAS_QUIRKS: Final[tuple[AliasQuirk, ...]] = tuple(
    _run(0x1180, "func0", (0xE832, 0xE476))                                   # Ricoh
    + _run(0x6766, "func0", (0x3D40, 0x3D41))                                 # Glenfly
    + _run(0x1B4B, "func1", (0x9120, 0x9123, 0x9125, 0x9128, 0x9130, 0x9170, 0x9172, 0x917A, 0x9182,
                             0x9183, 0x91A0, 0x9215, 0x9220, 0x9230, 0x9235))  # Marvell
    + _run(0x1103, "func1", (0x0642, 0x0645))                                 # HighPoint (TTI)
    + _run(0x197B, "func1", (0x2392,))                                        # JMicron JMB388_ESD
    + _run(0x1C28, "func1", (0x0122,))                                        # Lite-On / Plextor M6E
    + [AliasQuirk(0x9005, 0x0285, "fixed", (0x9005, 0x02BB), 0x08),           # Adaptec 3405: DMA as 01.0
       AliasQuirk(0x9005, 0x0285, "fixed", (0x9005, 0x02BC), 0x08)]           # Adaptec 3805
    + _run(0x1B21, "pcie_bridge_alias", (0x1080,))                            # ASMedia ASM1083/1085
    + _run(0x10E3, "pcie_bridge_alias", (0x8113,))                            # Tundra 8113
    + _run(0x1283, "pcie_bridge_alias", (0x8892, 0x8893))                     # ITE
    + _run(0x8086, "pcie_bridge_alias", (0x244E,))                            # Intel 82801 (DMI-to-PCI)
    + _run(0x8086, "mic_x200", (0x2260, 0x2264))
    + _run(0x8086, "pex_vca", (0x2954, 0x2955, 0x2956, 0x2958, 0x2959, 0x295A))
    + _run(0x14E4, "xlate_root", (0x9000, 0x9084))                            # Broadcom Vulcan/ThunderX2
    + _run(0x1A03, "pci_bridge_no_alias", (0x1150,))                          # ASPEED AST1150 (not in pci.md 5.3)
    + _run(0x11F8, "switchtec_ntb", _SWITCHTEC_IDS)                           # Microsemi Switchtec
    + _run(0x1055, "switchtec_ntb", range(0x1001, 0x1007))                    # Switchtec PCI100x (EFAR ID)
    + _run(0x10B5, "plx_ntb", (0x87B0, 0x87B1)))                              # PLX NTB

_BY_ID: Final[dict[tuple[int, int], tuple[AliasQuirk, ...]]] = {}
for _q in DMA_ALIAS_QUIRKS:
    _BY_ID[(_q.vendor, _q.device)] = _BY_ID.get((_q.vendor, _q.device), ()) + (_q,)

_CLASS_BRIDGE_OTHER: Final = 0x0680


def add_dma_alias(dev: PciDev, devfn_from: int, nr: int, why: str) -> None:
    """pci_add_dma_alias(): mark ``nr`` devfns from ``devfn_from`` (same bus) as aliases of ``dev``."""
    nr = min(nr, 256 - devfn_from)
    if nr <= 0:
        return
    dev.dma_alias_mask |= ((1 << nr) - 1) << devfn_from
    last = devfn_from + nr - 1
    span = (f"{devfn_from >> 3:02x}.{devfn_from & 7}" if nr == 1 else
            f"{devfn_from >> 3:02x}.{devfn_from & 7}-{last >> 3:02x}.{last & 7}")
    dev.alias_notes.append(f"{why}: DMA alias {span}")
    dev.bus.alias_hint = True


def _apply(dev: PciDev, q: AliasQuirk, ntb_proxy_devfns: Mapping[str, Iterable[int]]) -> None:
    slot = dev.devfn & ~7
    fn = dev.devfn & 7
    k = q.kind
    if k == "func0" and fn != 0:
        add_dma_alias(dev, slot, 1, "quirk_dma_func0_alias")
    elif k == "func1" and fn != 1:
        add_dma_alias(dev, slot | 1, 1, "quirk_dma_func1_alias")
    elif k == "fixed" and (dev.subsys_vendor, dev.subsys_device) == q.subsystem:
        add_dma_alias(dev, q.devfn, 1, "quirk_fixed_dma_alias")
    elif k == "pcie_bridge_alias":
        up = dev.bus.self
        if (not dev.bus.is_root and dev.hdr_type == 1 and not dev.is_pcie and up is not None
                and up.is_pcie and up.pcie_type != TYPE_PCI_BRIDGE):
            dev.dev_flags |= FLAG_PCIE_BRIDGE_ALIAS
            dev.alias_notes.append("quirk_use_pcie_bridge_dma_alias: acts as a PCIe-to-PCI bridge")
    elif k == "mic_x200":
        for devfn in (0x10 << 3, 0x11 << 3, (0x12 << 3) | 3):
            add_dma_alias(dev, devfn, 1, "quirk_mic_x200_dma_alias")
    elif k == "pex_vca":
        for s in range(32):
            add_dma_alias(dev, s << 3, 5, "quirk_pex_vca_alias")
    elif k == "xlate_root":
        dev.dev_flags |= FLAG_BRIDGE_XLATE_ROOT
        dev.alias_notes.append("quirk_bridge_cavm_thrx2_pcie_root: the IOMMU sits below this bridge")
    elif k == "pci_bridge_no_alias":
        dev.dev_flags |= FLAG_PCI_BRIDGE_NO_ALIAS
        dev.alias_notes.append("quirk_aspeed_pci_bridge_no_alias: forwards requester IDs unchanged")
    elif k == "switchtec_ntb" and dev.class_code >> 8 == _CLASS_BRIDGE_OTHER:
        # The proxy IDs come from the NTB's MMIO partition tables; the caller supplies them.
        for devfn in ntb_proxy_devfns.get(dev.name, ()):
            add_dma_alias(dev, devfn & 0xFF, 1, "quirk_switchtec_ntb_dma_alias")
    elif k == "plx_ntb":
        add_dma_alias(dev, 0, 256, "quirk_plx_ntb_dma_alias")


def apply_alias_quirks(tree: PciTree, *, ntb_proxy_devfns: Mapping[str, Iterable[int]] | None = None,
                       vmd_domains: Mapping[int, str] | None = None) -> None:
    """Run the DMA-alias fixups on every device (as pci_setup_device / pci_bus_add_device do) and point
    devices in Intel VMD domains at their VMD endpoint (``vmd_domains``: domain -> VMD endpoint name)."""
    proxies = ntb_proxy_devfns or {}
    for name in proxies:
        tree.device(name)
    for dev in tree.devices:
        for q in _BY_ID.get((dev.vendor, dev.device), ()):
            _apply(dev, q, proxies)
    for domain, name in (vmd_domains or {}).items():
        vmd = tree.device(name)
        if vmd.domain == domain:
            raise VfiolabError(f"VMD endpoint {name} cannot own its own domain {domain:04x}")
        for dev in tree.devices:
            if dev.domain == domain:
                dev.real_dma_dev = vmd
                dev.bus.alias_hint = True


def add_ivrs_alias(dev: PciDev, alias_rid: int) -> None:
    """AMD-Vi setup_aliases(): an IVRS alias on the device's own bus becomes a DMA alias."""
    if alias_rid != dev.rid and alias_rid >> 8 == dev.bus.number:
        add_dma_alias(dev, alias_rid & 0xFF, 1, "AMD IVRS alias")


def real_dma_dev(dev: PciDev) -> PciDev:
    """pci_real_dma_dev(): the VMD endpoint for devices behind Intel VMD, else the device itself."""
    return dev.real_dma_dev


class DmaAlias(NamedTuple):
    """One step of pci_for_each_dma_alias: the device credited, the requester ID, and how it arose."""

    dev: PciDev
    rid: int
    how: str  # "self", "vmd", "mask", "pcie-to-pci", "pci-x-to-pcie", "pcie-bridge-alias", "pci-bridge"


def for_each_dma_alias(dev: PciDev) -> Iterator[DmaAlias]:
    """pci_for_each_dma_alias(): the device's own ID and mask aliases, then each bridge that takes
    ownership of its transactions on the way to the root bus (stopping at an XLATE_ROOT bridge)."""
    pdev = dev.real_dma_dev
    yield DmaAlias(pdev, pdev.rid, "self" if pdev is dev else "vmd")
    mask = pdev.dma_alias_mask
    base = pdev.bus.number << 8
    while mask:
        low = mask & -mask
        yield DmaAlias(pdev, base | (low.bit_length() - 1), "mask")
        mask ^= low
    bus = pdev.bus
    while bus.parent is not None:
        tmp = bus.self
        if tmp is not None:
            if tmp.dev_flags & FLAG_BRIDGE_XLATE_ROOT:
                return
            if tmp.is_pcie:
                t = tmp.pcie_type
                if t == TYPE_PCI_BRIDGE and not tmp.dev_flags & FLAG_PCI_BRIDGE_NO_ALIAS:
                    yield DmaAlias(tmp, bus.number << 8, "pcie-to-pci")
                elif t == TYPE_PCIE_BRIDGE:
                    yield DmaAlias(tmp, tmp.rid, "pci-x-to-pcie")
                # root, upstream and downstream ports (and other types) forward IDs unchanged
            elif tmp.dev_flags & FLAG_PCIE_BRIDGE_ALIAS:
                yield DmaAlias(tmp, bus.number << 8, "pcie-bridge-alias")
            else:
                yield DmaAlias(tmp, tmp.rid, "pci-bridge")
        bus = bus.parent


def devs_are_dma_aliases(a: PciDev, b: PciDev) -> bool:
    """pci_devs_are_dma_aliases(): one's alias mask holds the other's devfn, or one DMAs as the other."""
    return bool((a.dma_alias_mask >> b.devfn) & 1 or (b.dma_alias_mask >> a.devfn) & 1
                or a.real_dma_dev is b or b.real_dma_dev is a)


def rid_str(rid: int) -> str:
    """'06:00.0' for a requester ID."""
    return f"{rid >> 8:02x}:{(rid >> 3) & 0x1F:02x}.{rid & 7}"


def describe(alias: DmaAlias) -> str:
    """Why ``alias.dev`` owns DMA of the devices below it, in words for group explanations."""
    d, how = alias.dev, alias.how
    if how == "pcie-to-pci":
        return f"aliased by PCIe-to-PCI bridge {d.name} (requester ID {rid_str(alias.rid)})"
    if how == "pci-x-to-pcie":
        return f"aliased by PCI/PCI-X-to-PCIe bridge {d.name} (its own requester ID {rid_str(alias.rid)})"
    if how == "pcie-bridge-alias":
        return (f"aliased by PCI bridge {d.name}, really a PCIe-to-PCI bridge (quirk_use_pcie_bridge_dma_alias;"
                f" requester ID {rid_str(alias.rid)})")
    if how == "pci-bridge":
        return f"aliased by conventional PCI bridge {d.name} (its own requester ID {rid_str(alias.rid)})"
    if how == "vmd":
        return f"DMA is issued by Intel VMD endpoint {d.name} (pci_real_dma_dev)"
    return f"DMA alias {rid_str(alias.rid)} of {d.name}"


def alias_relation(a: PciDev, b: PciDev) -> str:
    """Why pci_devs_are_dma_aliases(a, b) holds, in words."""
    if (a.dma_alias_mask >> b.devfn) & 1:
        return f"{a.name} has DMA alias {b.devfn >> 3:02x}.{b.devfn & 7} ({'; '.join(a.alias_notes)})"
    if (b.dma_alias_mask >> a.devfn) & 1:
        return f"{b.name} has DMA alias {a.devfn >> 3:02x}.{a.devfn & 7} ({'; '.join(b.alias_notes)})"
    if a.real_dma_dev is b:
        return f"{a.name} DMAs as {b.name}"
    return f"{b.name} DMAs as {a.name}"
