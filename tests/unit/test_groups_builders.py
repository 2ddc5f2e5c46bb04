"""Hand-made config spaces for the groups/ACS/sysfs tests (no capability builders needed): a header, an
optional PCI Express capability with a port type, and optional ACS, SR-IOV and ARI extended capabilities,
each written byte by byte at fixed offsets.  Also the verified QEMU topology of pci.md section 6."""

from __future__ import annotations

import struct

from vfiolab.pci.dump import DumpedFunction, format_dump

EP, LEG, RP, UP, DOWN, PCI_BR, PCIE_BR, RCIEP = 0, 1, 4, 5, 6, 7, 8, 9
PCIE_AT = 0x40
EXT_SLOTS = (0x100, 0x140, 0x180)  # extended capabilities in the order given (the first must be at 0x100)


def bdf(name: str) -> tuple[int, int, int]:
    """'[dddd:]bb:dd.f' -> (domain, bus, devfn)."""
    parts = name.split(":")
    dom = int(parts[0], 16) if len(parts) == 3 else 0
    bus = int(parts[-2], 16)
    dev, fn = parts[-1].split(".")
    return dom, bus, (int(dev, 16) << 3) | int(fn)


def func(name: str, vendor: int = 0x1B36, device: int = 0x0001, *, cls: int = 0x0200, mf: bool = False,
         pcie: int | None = None, acs: tuple[int, int] | None = None, sriov: dict[str, int] | None = None,
         ari: bool = False, ari_fwd: bool = False, bridge: tuple[int, int] | None = None,
         subsys: tuple[int, int] = (0, 0), size: int | None = None, pokes: dict[int, bytes] | None = None,
         title: str = "") -> DumpedFunction:
    """One function's bytes.  ``bridge`` = (secondary, subordinate) makes a type 1 header; ``acs`` =
    (capability, control); ``sriov`` keys: ctrl, total, num, offset, stride, vf_device."""
    dom, bus, devfn = bdf(name)
    cfg = bytearray(4096)
    struct.pack_into("<HH", cfg, 0, vendor, device)
    cfg[0x09:0x0C] = cls.to_bytes(3, "little") if cls > 0xFFFF else (cls << 8).to_bytes(3, "little")
    cfg[0x0E] = (1 if bridge else 0) | (0x80 if mf else 0)
    if bridge:
        cfg[0x18], cfg[0x19], cfg[0x1A] = bus, bridge[0], bridge[1]
    else:
        struct.pack_into("<HH", cfg, 0x2C, *subsys)
    ext: list[tuple[int, int, bytes]] = []
    if pcie is not None:
        cfg[0x06] |= 0x10
        cfg[0x34] = PCIE_AT
        cfg[PCIE_AT] = 0x10
        struct.pack_into("<H", cfg, PCIE_AT + 2, 0x0002 | (pcie << 4))
        if ari_fwd:
            struct.pack_into("<I", cfg, PCIE_AT + 0x24, 0x20)   # DevCap2: ARI Forwarding Supported
            struct.pack_into("<H", cfg, PCIE_AT + 0x28, 0x20)   # DevCtl2: ARI Forwarding Enable
        if acs is not None:
            ext.append((0x0D, struct.pack("<HH", *acs)))
        if sriov is not None:
            body = bytearray(0x3C)
            struct.pack_into("<H", body, 0x08 - 4, sriov.get("ctrl", 0))
            struct.pack_into("<H", body, 0x0C - 4, sriov.get("total", 0))   # InitialVFs
            struct.pack_into("<H", body, 0x0E - 4, sriov.get("total", 0))
            struct.pack_into("<H", body, 0x10 - 4, sriov.get("num", 0))
            struct.pack_into("<H", body, 0x14 - 4, sriov.get("offset", 1))
            struct.pack_into("<H", body, 0x16 - 4, sriov.get("stride", 1))
            struct.pack_into("<H", body, 0x1A - 4, sriov.get("vf_device", device))
            ext.append((0x10, bytes(body)))
        if ari:
            ext.append((0x0E, bytes(4)))
    for i, (cap_id, body) in enumerate(ext):
        off = EXT_SLOTS[i]
        nxt = EXT_SLOTS[i + 1] if i + 1 < len(ext) else 0
        struct.pack_into("<I", cfg, off, cap_id | (1 << 16) | (nxt << 20))
        cfg[off + 4:off + 4 + len(body)] = body
    for off, data in (pokes or {}).items():
        cfg[off:off + len(data)] = data
    if size is None:
        size = 4096 if pcie is not None else 256
    return DumpedFunction(dom, bus, devfn, bytes(cfg[:size]), title)


def vf(name: str) -> DumpedFunction:
    """A VF as it reads in raw config: vendor/device ffff, a PCIe endpoint capability."""
    f = func(name, 0xFFFF, 0xFFFF, pcie=EP)
    return f


def dump_text(funcs: list[DumpedFunction]) -> str:
    """The functions in ``lspci -xxxx`` layout."""
    return "".join(format_dump(f.domain, f.bus, f.devfn, f.config, f.title or "x") for f in funcs)


ACS_ON = (0x1F, 0x1D)    # QEMU pcie-root-port: SV TB RR CR UF implemented; Linux enables SV RR CR UF
ACS_OFF = (0x1F, 0x00)   # the same capability as firmware leaves it


def qemu_real_peers(acs: tuple[int, int] = ACS_ON) -> list[DumpedFunction]:
    """The 21 functions of real-peers.md section 2 (pci.md section 6), with the bytes grouping reads."""
    return [
        func("00:00.0", 0x8086, 0x29C0, cls=0x0600),
        func("00:02.0", 0x1B36, 0x000C, cls=0x0604, mf=True, pcie=RP, acs=acs, bridge=(1, 4)),
        func("00:02.1", 0x1B36, 0x000C, cls=0x0604, pcie=RP, acs=acs, bridge=(5, 6)),
        func("00:02.2", 0x1B36, 0x000C, cls=0x0604, pcie=RP, acs=acs, bridge=(7, 7), ari_fwd=True),
        func("00:05.0", 0x1AF4, 0x1005, cls=0x00FF, mf=True),                  # virtio-rng (conventional)
        func("00:05.1", 0x1234, 0x11E8, cls=0x00FF),                           # edu (conventional)
        func("00:1f.0", 0x8086, 0x2918, cls=0x0601, mf=True),                  # ICH9 LPC
        func("00:1f.2", 0x8086, 0x2922, cls=0x0106),                           # ICH9 AHCI
        func("00:1f.3", 0x8086, 0x2930, cls=0x0C05),                           # ICH9 SMBus
        func("01:00.0", 0x104C, 0x8232, cls=0x0604, pcie=UP, bridge=(2, 4)),   # x3130-upstream
        func("02:00.0", 0x104C, 0x8233, cls=0x0604, pcie=DOWN, bridge=(3, 3)),  # xio3130-downstream
        func("02:01.0", 0x104C, 0x8233, cls=0x0604, pcie=DOWN, bridge=(4, 4)),
        func("03:00.0", 0x1AF4, 0x1044, cls=0x00FF, pcie=EP),                  # virtio-rng
        func("04:00.0", 0x1AF4, 0x1044, cls=0x00FF, pcie=EP, mf=True),         # virtio-rng
        func("04:00.1", 0x1AF4, 0x1045, cls=0x00FF, pcie=EP),                  # virtio-balloon
        func("05:00.0", 0x1B36, 0x000E, cls=0x0604, pcie=PCI_BR, bridge=(6, 6)),  # pcie-pci-bridge
        func("06:01.0", 0x1234, 0x11E8, cls=0x00FF),                           # edu
        func("06:02.0", 0x1AF4, 0x1005, cls=0x00FF),                           # virtio-rng
        func("07:00.0", 0x1B36, 0x0010, cls=0x0108, pcie=EP, ari=True,
             sriov={"ctrl": 0x19, "total": 2, "num": 2, "offset": 1, "stride": 1, "vf_device": 0x0010}),
        vf("07:00.1"),
        vf("07:00.2"),
    ]


# pci.md section 6: the groups Linux formed, by ID.
REAL_PEERS_GROUPS = [
    ["0000:00:00.0"], ["0000:00:02.0"], ["0000:00:02.1"], ["0000:00:02.2"],
    ["0000:00:05.0", "0000:00:05.1"], ["0000:00:1f.0", "0000:00:1f.2", "0000:00:1f.3"],
    ["0000:01:00.0"], ["0000:02:00.0", "0000:03:00.0"], ["0000:02:01.0", "0000:04:00.0", "0000:04:00.1"],
    ["0000:05:00.0", "0000:06:01.0", "0000:06:02.0"], ["0000:07:00.0"], ["0000:07:00.1"], ["0000:07:00.2"],
]
