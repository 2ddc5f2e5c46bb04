"""A whole machine from a YAML description: host bridges, ports, switches, endpoints, SR-IOV, drivers.

``Platform.load(path)`` reads and validates a description (errors name the YAML path), ``build()`` makes
the hardware (a Topology of functions at reset), ``boot()`` enumerates it like Linux, binds the drivers the
description asks for and enables the requested VFs (like writing ``sriov_numvfs``).  ``snapshot()``
returns every function's config bytes in Linux probe order, once ``Machine.check()`` has found the machine
came up as described (every function found, every BAR given an address; a bridge without a bus number left
is refused at load).  ``generate_fabric(n)`` makes big synthetic machines for benchmarks.  The built-in default (platforms/default.yaml) is a one-socket Xeon server.

Description (YAML)::

    name: text                      iommu: bool (ACS enabled at IOMMU probe)
    realloc: bool (pci=realloc=on/off; absent = CONFIG_PCI_REALLOC_ENABLE_AUTO)
    pci_mem_start: int (PCIBIOS_MIN_MEM)
    host_bridges:                   one per root bus; several may share a segment with disjoint buses
      - segment: 0
        buses: [first, last]
        apertures: [{type: io|mem, start, end, prefetch: bool}]     (ACPI _CRS windows)
        devices: [function, ...]     the root bus

    function:   kind: host_bridge | endpoint | legacy_endpoint | rciep | pci | root_port | upstream_port |
                      downstream_port | pcie_pci_bridge | pci_bridge | switch
                slot: "dd.f" (hex) or devfn: n (ARI functions beyond 7)
                vendor, device, class, revision, subsystem: [vendor, id]
                bars: [{index, type: mem32|mem64|io, size: 4096 | "16K" | "2M", prefetch}]   rom: size
                interrupt_pin: A-D | none          multifunction: bool (default: more than one function)
                caps: [name | {name: {kwargs}}]    ext_caps: [...]   (names: CAPS below)
                express: {ExpressCap kwargs, slot: {SlotCaps kwargs}}
                acs: true | {cap, ctrl}            ari: true (Next Function filled in along the device)
                sriov: {total_vfs, num_vfs (enabled after boot), vf_device, offset, stride,
                        vf_bars: [size | {size, mem64, prefetch} | null], vf_caps, vf_ext_caps,
                        vf_class, vf_express, vf_driver, initial_vfs, vf_migration, func_link, ...}
                driver: bool   -- a driver binds at boot: pci_enable_device() + pci_set_master()
      bridges:  io_window, io32, pref_window, pref64: bool     window_reset: disabled | zero
                hotplug: bool (root/downstream ports)   slot_number: n     devices: [function, ...]
      switch:   slot, upstream: {function of kind upstream_port}, ports: [downstream_port functions]

Drivers: by default endpoints, RCiEPs, conventional devices and PCIe ports (Linux's pcieport) bind one;
host bridges and PCI(e)-to-PCI bridges do not (Linux enables them via pci_enable_bridge() when a device
below is enabled); VFs only with ``vf_driver: true``.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.resources
import inspect
import os
import re
import typing
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from vfiolab.errors import VfiolabError
from vfiolab.pci import regs
from vfiolab.pci.bridge import (
    PciBridge,
    PcieToPciBridge,
    PciToPciBridge,
    RootPort,
    SwitchDownstreamPort,
    SwitchUpstreamPort,
)
from vfiolab.pci.caps.base import Capability
from vfiolab.pci.dump import DumpedFunction
from vfiolab.pci.enumerate import Enumeration, EnumOptions, enumerate_topology, gc_paused
from vfiolab.pci.function import (
    Bar,
    ConventionalDevice,
    HostBridge,
    LegacyEndpoint,
    PcieEndpoint,
    PciFunction,
    RcIntegratedEndpoint,
)
from vfiolab.pci.pcidev import PciDev
from vfiolab.pci.resources import resources_assignable
from vfiolab.pci.sriov_vf import VfSpec, install_sriov
from vfiolab.pci.topology import Aperture, Bus, Topology
from vfiolab.yamlfile import load_yaml, parse_yaml

# name -> (module, class, extended) for capabilities given by name in a description
CAPS: Final[dict[str, tuple[str, str, bool]]] = {
    "pm": ("pm", "PmCap", False),
    "msi": ("msi", "MsiCap", False),
    "msix": ("msix", "MsixCap", False),
    "ssvid": ("ssvid", "SsvidCap", False),
    "vendor": ("vendor", "VendorCap", False),
    "aer": ("aer", "AerCap", True),
    "acs": ("acs", "AcsCap", True),
    "ari": ("ari", "AriCap", True),
    "ats": ("ats", "AtsCap", True),
    "pri": ("pri", "PriCap", True),
    "pasid": ("pasid", "PasidCap", True),
    "dsn": ("dsn", "DsnCap", True),
    "ltr": ("ltr", "LtrCap", True),
    "ptm": ("ptm", "PtmCap", True),
    "secpcie": ("secpcie", "SecondaryPcieCap", True),
    "l1ss": ("l1ss", "L1ssCap", True),
    "doe": ("doe", "DoeCap", True),
    "ide": ("ide", "IdeCap", True),
    "tph": ("tph", "TphCap", True),
    "dpc": ("dpc", "DpcCap", True),
    "vsec": ("vsec", "VsecCap", True),
    "dvsec": ("dvsec", "DvsecCap", True),
    "cxl_device": ("cxl", "CxlDeviceDvsec", True),
}

FUNCTION_KINDS: Final = ("host_bridge", "endpoint", "legacy_endpoint", "rciep", "pci")
BRIDGE_KINDS: Final = ("root_port", "upstream_port", "downstream_port", "pcie_pci_bridge", "pci_bridge")
KINDS: Final = (*FUNCTION_KINDS, *BRIDGE_KINDS, "switch")
_PORTS: Final = ("root_port", "upstream_port", "downstream_port")
_DRIVER_DEFAULT: Final = {"host_bridge": False, "pcie_pci_bridge": False, "pci_bridge": False}
_PIN: Final = {"none": 0, "a": 1, "b": 2, "c": 3, "d": 4}
_SIZE_SUFFIX: Final = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_ACS_PORT: Final = 0x1F            # SV | TB | RR | CR | UF (what Linux requests of ports)
_ACS_FUNCTION: Final = 0x0C        # RR | CR: what a multi-function device can redirect

_COMMON_KEYS: Final = frozenset({"kind", "slot", "devfn", "name", "vendor", "device", "class", "revision",
                                 "subsystem", "bars", "rom", "interrupt_pin", "multifunction", "caps",
                                 "ext_caps", "express", "acs", "ari", "sriov", "driver", "pcie"})
_BRIDGE_KEYS: Final = frozenset({"io_window", "io32", "pref_window", "pref64", "window_reset", "devices",
                                 "hotplug", "slot_number"})
_SRIOV_KEYS: Final = frozenset({"total_vfs", "num_vfs", "vf_device", "offset", "stride", "vf_bars", "vf_caps",
                                "vf_ext_caps", "vf_class", "vf_driver", "vf_express", "initial_vfs",
                                "vf_migration", "func_link", "supported_page_sizes", "ari_preserved"})


# ---------------------------------------------------------------------------- YAML reading helpers
class _At:
    """A position in the description, for error messages that name the YAML path."""

    def __init__(self, source: str, path: str = "") -> None:
        self.source, self.path = source, path

    def __getitem__(self, key: str | int) -> _At:
        if isinstance(key, int):
            return _At(self.source, f"{self.path}[{key}]")
        return _At(self.source, f"{self.path}.{key}" if self.path else key)

    def error(self, msg: str) -> VfiolabError:
        return VfiolabError(f"{self.source}: {self.path or '<top>'}: {msg}")


def _show(v: object, limit: int = 60) -> str:
    """A value for an error line: its repr, cut short when long (a whole sub-tree given as a scalar)."""
    text = repr(v)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _mapping(v: object, at: _At) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise at.error(f"expected a mapping, got {type(v).__name__}")
    for k in v:
        if not isinstance(k, str):
            raise at.error(f"key {k!r} is not a string")
    return v


def _list(v: object, at: _At) -> list[Any]:
    if not isinstance(v, list):
        raise at.error(f"expected a list, got {type(v).__name__}")
    return v


def _check_keys(d: dict[str, Any], allowed: frozenset[str] | set[str], at: _At) -> None:
    extra = sorted(set(d) - set(allowed))
    if extra:
        raise at[extra[0]].error(f"unknown key (allowed: {', '.join(sorted(allowed))})")


def _int(v: object, at: _At, lo: int = 0, hi: int | None = None) -> int:
    if isinstance(v, bool):
        raise at.error(f"expected an integer, got {_show(v)}")
    if isinstance(v, str):
        try:
            v = int(v.replace("_", ""), 0)
        except ValueError:
            raise at.error(f"{_show(v)} is not an integer") from None
    if not isinstance(v, int):
        raise at.error(f"expected an integer, got {type(v).__name__}")
    if v < lo or (hi is not None and v > hi):
        raise at.error(f"{v:#x} outside {lo:#x}..{hi:#x}" if hi is not None else f"{v} below {lo}")
    return v


_REPR_PREFIX: Final = re.compile(r"^<[^>]*>:\s*")
_SIZE_RE: Final = re.compile(r"^\s*(0x[0-9a-f]+|[0-9]+)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)


def _size(v: object, at: _At) -> int:
    """A byte count: an integer or a string such as '16M', '4K', '0x4000'."""
    if isinstance(v, str):
        m = _SIZE_RE.match(v)
        if m is None:
            raise at.error(f"{_show(v)} is not a size (e.g. 4096, '16K', '2M', '1G')")
        return int(m.group(1), 0) * _SIZE_SUFFIX[m.group(2).lower()]
    return _int(v, at)


def _str(v: object, at: _At) -> str:
    if not isinstance(v, str):
        raise at.error(f"expected a string, got {_show(v)}")
    return v


def _hint_ok(hint: object, v: object) -> bool:
    """Whether ``v`` can be what a constructor annotation asks for (only the simple kinds are checked)."""
    args = typing.get_args(hint)
    if args and type(None) in args:
        return v is None or all(_hint_ok(a, v) for a in args if a is not type(None))
    if hint is bool:
        return isinstance(v, bool)
    if hint is int:
        return isinstance(v, int) and not isinstance(v, bool)
    if hint is float:
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if hint is str:
        return isinstance(v, str)
    return True


def _check_params(target: Callable[..., object], kwargs: dict[str, Any], at: _At, what: str,
                  fixed: tuple[str, ...] = ()) -> None:
    """The keyword arguments a description gives a constructor: known names and, where its annotations
    say int, bool, float or str, a value of that kind; so a typo is named at its YAML path instead of
    failing as a TypeError (or worse, as arithmetic on a string) inside the constructor."""
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return
    try:
        hints = typing.get_type_hints(target if dataclasses.is_dataclass(target) else target.__init__)
    except (TypeError, NameError, AttributeError):
        hints = {}
    params = [n for n, p in sig.parameters.items()
              if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n not in fixed and not n.startswith("_")]
    var_kw = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    missing = [n for n in params if sig.parameters[n].default is inspect.Parameter.empty and n not in kwargs]
    if missing:
        raise at.error(f"{what} needs {', '.join(missing)} (give it as {{{what}: {{{missing[0]}: ...}}}})")
    for k, v in kwargs.items():
        if k not in params and not var_kw:
            raise at[k].error(f"unknown {what} parameter (known: {', '.join(params)})")
        if not _hint_ok(hints.get(k), v):
            kind = getattr(hints.get(k), "__name__", None) or str(hints.get(k))
            raise at[k].error(f"expected {kind}, got {_show(v)}")


def _bool(v: object, at: _At) -> bool:
    if not isinstance(v, bool):
        raise at.error(f"expected true or false, got {_show(v)}")
    return v


def _devfn(d: dict[str, Any], at: _At) -> int:
    """``slot: "dd.f"`` (hex device, function 0-7) or ``devfn: n`` (0-255, for ARI functions)."""
    if "devfn" in d:
        if "slot" in d:
            raise at["devfn"].error("give either slot or devfn, not both")
        return _int(d["devfn"], at["devfn"], 0, 0xFF)
    if "slot" not in d:
        raise at.error("missing slot (\"dd.f\") or devfn")
    v = d["slot"]
    text = f"{v}" if isinstance(v, float) else v
    if not isinstance(text, str) or text.count(".") != 1:
        raise at["slot"].error(f"{_show(v)} is not a slot \"dd.f\" (quote it in YAML)")
    dev_s, fn_s = text.split(".")
    try:
        dev, fn = int(dev_s, 16), int(fn_s, 16)
    except ValueError:
        raise at["slot"].error(f"{_show(v)} is not a slot \"dd.f\" (hex device, function 0-7)") from None
    if not 0 <= dev <= 0x1F or not 0 <= fn <= 7:
        raise at["slot"].error(f"{_show(v)}: device must be 00-1f and function 0-7 (use devfn for ARI functions)")
    return regs.devfn(dev, fn)


# ---------------------------------------------------------------------------- capability specs
def _cap_class(name: str, at: _At) -> tuple[type[Capability], bool]:
    entry = CAPS.get(name)
    if entry is None:
        raise at.error(f"unknown capability {name!r} (known: {', '.join(sorted(CAPS))})")
    module = importlib.import_module(f"vfiolab.pci.caps.{entry[0]}")
    cls: type[Capability] = getattr(module, entry[1])
    return cls, entry[2]


def _cap_kwargs(raw: dict[str, Any], at: _At) -> dict[str, Any]:
    out = {}
    for k, v in raw.items():
        if k == "body" and isinstance(v, str):
            try:
                v = bytes.fromhex(v)
            except ValueError:
                raise at[k].error("body must be hex bytes, e.g. '01 02 0a'") from None
        out[k] = v
    return out


@dataclass
class CapSpec:
    """A capability by name with keyword arguments; ``make()`` gives a fresh instance."""

    name: str
    kwargs: dict[str, Any]
    at: _At

    def make(self) -> Capability:
        cls, _ = _cap_class(self.name, self.at)
        try:
            return cls(**self.kwargs)
        except VfiolabError as e:
            raise self.at.error(str(e)) from None
        except (TypeError, ValueError) as e:
            raise self.at.error(f"bad parameters for {self.name}: {e}") from None


def _caps(v: object, at: _At, extended: bool) -> list[CapSpec]:
    out = []
    for i, item in enumerate(_list(v, at)):
        a = at[i]
        if isinstance(item, str):
            name, kwargs = item, {}
        elif isinstance(item, dict) and len(item) == 1:
            name, raw = next(iter(item.items()))
            kwargs = _cap_kwargs(_mapping(raw if raw is not None else {}, a[name]), a[name])
        else:
            raise a.error("a capability is a name or a one-key mapping {name: {parameters}}")
        cls, ext = _cap_class(str(name), a)
        _check_params(cls, kwargs, a[str(name)], str(name))
        if ext != extended:
            where = "ext_caps" if ext else "caps"
            raise a.error(f"{name} is {'an extended' if ext else 'a standard'} capability: list it under {where}")
        out.append(CapSpec(str(name), kwargs, a[str(name)] if isinstance(item, dict) else a))
    return out


# ---------------------------------------------------------------------------- description model
@dataclass
class SriovSpec:
    """An SR-IOV PF's VFs: the capability parameters, how many to enable after boot, what VFs look like."""

    cap_kwargs: dict[str, Any]
    num_vfs: int
    vf_class: int | None
    vf_caps: list[CapSpec]
    vf_ext_caps: list[CapSpec]
    vf_express: dict[str, Any] | None
    vf_driver: bool


@dataclass
class FunctionSpec:
    """One function (or a switch) of the description, with what sits behind it."""

    kind: str
    devfn: int
    at: _At
    name: str = ""
    vendor: int = 0
    device: int = 0
    class_code: int = 0
    revision: int = 0
    subsystem: tuple[int, int] = (0, 0)
    bars: list[Bar] = field(default_factory=list)
    rom: int = 0
    interrupt_pin: int | None = None
    multifunction: bool | None = None
    caps: list[CapSpec] = field(default_factory=list)
    ext_caps: list[CapSpec] = field(default_factory=list)
    express: dict[str, Any] | None = None
    acs: dict[str, Any] | None = None
    ari: bool = False
    sriov: SriovSpec | None = None
    driver: bool = True
    pcie: bool | None = None
    bridge: dict[str, Any] = field(default_factory=dict)
    hotplug: bool = False
    slot_number: int | None = None
    devices: list[FunctionSpec] = field(default_factory=list)
    upstream: FunctionSpec | None = None
    ports: list[FunctionSpec] = field(default_factory=list)


@dataclass
class HostBridgeSpec:
    """A host bridge: segment, bus range, apertures and the devices on its root bus."""

    segment: int
    bus_start: int
    bus_end: int
    apertures: list[Aperture]
    devices: list[FunctionSpec]


def _parse_bars(v: object, at: _At) -> list[Bar]:
    bars = []
    for i, item in enumerate(_list(v, at)):
        a = at[i]
        d = _mapping(item, a)
        _check_keys(d, {"index", "type", "size", "prefetch"}, a)
        if "index" not in d or "size" not in d:
            raise a.error("a BAR needs index and size")
        kind = d.get("type", "mem32")
        if not isinstance(kind, str):
            raise a["type"].error("expected mem32, mem64 or io")
        bars.append(Bar(_int(d["index"], a["index"], 0, 5), kind, _size(d["size"], a["size"]),
                        _bool(d.get("prefetch", False), a["prefetch"])))
    return bars


def _parse_sriov(v: object, at: _At) -> SriovSpec:
    d = _mapping(v, at)
    _check_keys(d, _SRIOV_KEYS, at)
    for key in ("total_vfs", "vf_device"):
        if key not in d:
            raise at.error(f"missing {key}")
    total = _int(d["total_vfs"], at["total_vfs"], 1, 0xFFFF)
    num = _int(d.get("num_vfs", 0), at["num_vfs"], 0, total)
    from vfiolab.pci.caps.sriov import VfBar

    vf_bars: list[VfBar | None] = []
    for i, item in enumerate(_list(d.get("vf_bars", []), at["vf_bars"])):
        a = at["vf_bars"][i]
        if isinstance(item, dict):
            _check_keys(item, {"size", "mem64", "prefetch"}, a)
            vf_bars.append(VfBar(_size(item.get("size"), a["size"]), _bool(item.get("mem64", True), a["mem64"]),
                                 _bool(item.get("prefetch", True), a["prefetch"])))
        elif item is None:
            vf_bars.append(None)
        else:
            vf_bars.append(VfBar(_size(item, a)))
    kwargs: dict[str, Any] = {"total_vfs": total, "vf_device": _int(d["vf_device"], at["vf_device"], 0, 0xFFFF),
                              "vf_offset": _int(d.get("offset", 1), at["offset"], 0, 0xFFFF),
                              "vf_stride": _int(d.get("stride", 1), at["stride"], 0, 0xFFFF),
                              "vf_bars": vf_bars}
    for key in ("initial_vfs", "func_link", "supported_page_sizes"):
        if key in d:
            kwargs[key] = _int(d[key], at[key])
    for key in ("vf_migration", "ari_preserved"):
        if key in d:
            kwargs[key] = _bool(d[key], at[key])
    vf_express = d.get("vf_express")
    if vf_express is not None:
        _check_express(_mapping(vf_express, at["vf_express"]), at["vf_express"])
    return SriovSpec(kwargs, num, _int(d["vf_class"], at["vf_class"], 0, 0xFFFFFF) if "vf_class" in d else None,
                     _caps(d.get("vf_caps", []), at["vf_caps"], False),
                     _caps(d.get("vf_ext_caps", []), at["vf_ext_caps"], True),
                     _mapping(vf_express, at["vf_express"]) if vf_express is not None else None,
                     _bool(d.get("vf_driver", False), at["vf_driver"]))


def _check_express(ex: dict[str, Any], at: _At) -> None:
    """ExpressCap keyword arguments (the port type comes from the kind), ``slot`` as SlotCaps ones."""
    from vfiolab.pci.caps.express import ExpressCap, SlotCaps

    _check_params(ExpressCap, ex, at, "express", fixed=("port_type",))
    if isinstance(ex.get("slot"), dict):
        _check_params(SlotCaps, ex["slot"], at["slot"], "express slot")


def _parse_function(v: object, at: _At, kind_default: str | None = None) -> FunctionSpec:
    d = _mapping(v, at)
    kind = d.get("kind", kind_default)
    if kind not in KINDS:
        raise at["kind"].error(f"{_show(kind)} is not one of {', '.join(KINDS)}")
    if kind == "switch":
        _check_keys(d, {"kind", "slot", "devfn", "name", "upstream", "ports"}, at)
        spec = FunctionSpec("switch", _devfn(d, at), at, name=_str(d.get("name", ""), at["name"]))
        up = dict(_mapping(d.get("upstream", {}), at["upstream"]))
        if "slot" in up or "devfn" in up:
            raise at["upstream"].error("the upstream port sits at the switch's slot; do not give its own")
        up["devfn"] = spec.devfn
        spec.upstream = _parse_function(up, at["upstream"], "upstream_port")
        if spec.upstream.kind != "upstream_port":
            raise at["upstream"]["kind"].error("a switch's upstream port has kind upstream_port")
        if "ports" not in d:
            raise at.error("a switch needs ports (its downstream ports)")
        spec.ports = [_parse_function(p, at["ports"][i], "downstream_port")
                      for i, p in enumerate(_list(d["ports"], at["ports"]))]
        _check_slots(spec.ports, at["ports"])
        for i, p in enumerate(spec.ports):
            if p.kind != "downstream_port":
                raise at["ports"][i]["kind"].error("a switch port has kind downstream_port")
        return spec
    is_bridge = kind in BRIDGE_KINDS
    _check_keys(d, _COMMON_KEYS | (_BRIDGE_KEYS if is_bridge else frozenset()), at)
    spec = FunctionSpec(kind, _devfn(d, at), at, name=_str(d.get("name", ""), at["name"]))
    for key in ("vendor", "device"):
        if key not in d:
            raise at.error(f"missing {key} (a PCI ID from pci.ids)")
    spec.vendor = _int(d["vendor"], at["vendor"], 0, 0xFFFE)
    spec.device = _int(d["device"], at["device"], 0, 0xFFFF)
    if "class" in d:
        spec.class_code = _int(d["class"], at["class"], 0, 0xFFFFFF)
    elif kind == "host_bridge":
        spec.class_code = 0x060000
    elif is_bridge:
        spec.class_code = 0x060400
    else:
        raise at.error("missing class (24-bit class code, e.g. 0x010802 for NVMe)")
    spec.revision = _int(d.get("revision", 0), at["revision"], 0, 0xFF)
    if "subsystem" in d:
        sub = _list(d["subsystem"], at["subsystem"])
        if len(sub) != 2:
            raise at["subsystem"].error("expected [subsystem vendor, subsystem ID]")
        spec.subsystem = (_int(sub[0], at["subsystem"][0], 0, 0xFFFF), _int(sub[1], at["subsystem"][1], 0, 0xFFFF))
    spec.bars = _parse_bars(d.get("bars", []), at["bars"])
    spec.rom = _size(d.get("rom", 0), at["rom"])
    if "interrupt_pin" in d:
        pin = d["interrupt_pin"]
        if not isinstance(pin, str) or pin.lower() not in _PIN:
            raise at["interrupt_pin"].error("expected one of A, B, C, D, none")
        spec.interrupt_pin = _PIN[pin.lower()]
    if "multifunction" in d:
        spec.multifunction = _bool(d["multifunction"], at["multifunction"])
    spec.caps = _caps(d.get("caps", []), at["caps"], False)
    spec.ext_caps = _caps(d.get("ext_caps", []), at["ext_caps"], True)
    if "express" in d:
        spec.express = dict(_mapping(d["express"], at["express"]))
        _check_express(spec.express, at["express"])
    if "acs" in d:
        acs = d["acs"]
        if isinstance(acs, bool):
            spec.acs = ({"cap": _ACS_PORT if kind in _PORTS else _ACS_FUNCTION} if acs else None)
        else:
            spec.acs = dict(_mapping(acs, at["acs"]))
            _check_params(_cap_class("acs", at["acs"])[0], spec.acs, at["acs"], "acs")
    spec.ari = _bool(d.get("ari", False), at["ari"])
    if "sriov" in d:
        spec.sriov = _parse_sriov(d["sriov"], at["sriov"])
    spec.driver = _bool(d.get("driver", _DRIVER_DEFAULT.get(kind, True)), at["driver"])
    if "pcie" in d:
        spec.pcie = _bool(d["pcie"], at["pcie"])
    if is_bridge:
        for key in ("io_window", "io32", "pref_window", "pref64"):
            if key in d:
                spec.bridge[key] = _bool(d[key], at[key])
        if "window_reset" in d:
            if d["window_reset"] not in ("disabled", "zero"):
                raise at["window_reset"].error("expected disabled or zero")
            spec.bridge["window_reset"] = d["window_reset"]
        spec.hotplug = _bool(d.get("hotplug", False), at["hotplug"])
        if spec.hotplug and kind not in ("root_port", "downstream_port"):
            raise at["hotplug"].error("only root and downstream ports have hot-plug slots")
        if "slot_number" in d:
            spec.slot_number = _int(d["slot_number"], at["slot_number"], 0, 0x1FFF)
        spec.devices = _parse_devices(d.get("devices", []), at["devices"])
        if kind in ("root_port", "downstream_port"):
            for i, child in enumerate(spec.devices):
                if child.devfn >= 8 and not _ari_child(spec.devices):
                    raise at["devices"][i].error("a PCIe port's link carries device 0 only (use devfn with ARI)")
    if spec.sriov is not None and kind not in ("endpoint", "rciep"):
        raise at["sriov"].error("only endpoints and RCiEPs can be SR-IOV PFs")
    return spec


def _ari_child(devices: list[FunctionSpec]) -> bool:
    return any(d.ari for d in devices)


def _parse_devices(v: object, at: _At) -> list[FunctionSpec]:
    specs = [_parse_function(item, at[i]) for i, item in enumerate(_list(v, at))]
    _check_slots(specs, at)
    return specs


def _check_slots(specs: list[FunctionSpec], at: _At) -> None:
    """One function per devfn on a bus."""
    seen: dict[int, int] = {}
    key = at.path.rpartition(".")[2] or "devices"
    for i, s in enumerate(specs):
        if s.devfn in seen:
            raise at[i].error(f"slot {s.devfn >> 3:02x}.{s.devfn & 7:x} already used by {key}[{seen[s.devfn]}]")
        seen[s.devfn] = i


def _parse_apertures(v: object, at: _At) -> list[Aperture]:
    out = []
    for i, item in enumerate(_list(v, at)):
        a = at[i]
        d = _mapping(item, a)
        _check_keys(d, {"type", "start", "end", "prefetch"}, a)
        kind = d.get("type")
        if kind not in ("io", "mem"):
            raise a["type"].error("expected io or mem")
        try:
            out.append(Aperture(kind, _int(d.get("start"), a["start"]), _int(d.get("end"), a["end"]),
                                _bool(d.get("prefetch", False), a["prefetch"])))
        except VfiolabError as e:
            if str(e).startswith(a.source):
                raise
            raise a.error(str(e)) from None
    return out


def _bridge_order(specs: list[FunctionSpec]) -> Iterator[FunctionSpec]:
    """Bridges in the order Linux numbers their buses: depth first, each bus's bridges by devfn
    (probe.c pci_scan_child_bus_extend(), pass 1 of pci_scan_bridge_extend())."""
    for s in sorted(specs, key=lambda s: s.devfn):
        if s.kind == "switch":
            assert s.upstream is not None
            yield s.upstream
            yield from _bridge_order(s.ports)
        elif s.kind in BRIDGE_KINDS:
            yield s
            yield from _bridge_order(s.devices)


def _check_bus_numbers(h: HostBridgeSpec, at: _At) -> None:
    """Every bridge needs a bus number of its own within the host bridge's range (more than 256 buses
    cannot be): Linux gives the k-th bridge of the depth-first order at least bus start + k."""
    for k, b in enumerate(_bridge_order(h.devices), 1):
        if h.bus_start + k > h.bus_end:
            raise b.at.error(f"no bus number left for the bus behind this bridge: it is bridge number {k} in "
                             f"Linux's depth-first numbering, and {at.path} has buses "
                             f"{h.bus_start:02x}-{h.bus_end:02x} (root bus included)")


def _described(specs: list[FunctionSpec]) -> Iterator[tuple[FunctionSpec, list[FunctionSpec]]]:
    """Every function of a description with the functions on the same bus."""
    for s in specs:
        if s.kind == "switch":
            assert s.upstream is not None
            yield s.upstream, specs
            yield from _described(s.ports)
            for p in s.ports:
                yield from _described(p.devices)
        else:
            yield s, specs
            yield from _described(s.devices)


def _why_not_found(s: FunctionSpec, siblings: list[FunctionSpec]) -> str:
    """Why Linux's scan would not see a described function (probe.c pci_scan_slot / next_fn)."""
    if s.devfn & 7 and not any(o.ari for o in siblings):
        fn0 = next((o for o in siblings if o.devfn == s.devfn & ~7), None)
        if fn0 is None:
            return "its slot has no function 0, and Linux scans a slot only when function 0 answers"
        if fn0.multifunction is False:
            return "function 0 of its slot is not multi-function, so Linux looks no further"
    return "Linux's enumeration does not reach it"


# ---------------------------------------------------------------------------- building the hardware
class _Builder:
    """Turns FunctionSpecs into functions on buses; remembers which spec made which function."""

    def __init__(self) -> None:
        self.spec_of: dict[int, FunctionSpec] = {}

    def attach_all(self, bus: Bus, specs: list[FunctionSpec]) -> None:
        by_dev: dict[int, list[FunctionSpec]] = {}
        for s in specs:
            by_dev.setdefault(s.devfn >> 3, []).append(s)
        ari_fns = sorted(s.devfn for s in specs if s.ari)
        for s in sorted(specs, key=lambda s: s.devfn):
            siblings = by_dev[s.devfn >> 3]
            mf = s.multifunction if s.multifunction is not None else (len(siblings) > 1 or len(ari_fns) > 1)
            next_fn = 0
            if s.ari:
                later = [f for f in ari_fns if f > s.devfn]
                next_fn = later[0] if later else 0
            self.attach(bus, s, mf, next_fn)

    def attach(self, bus: Bus, s: FunctionSpec, mf: bool, ari_next: int) -> PciFunction:
        if s.kind == "switch":
            assert s.upstream is not None
            up = self.attach(bus, s.upstream, mf, ari_next)
            assert isinstance(up, PciBridge) and up.secondary is not None
            self.attach_all(up.secondary, s.ports)
            return up
        fn = self._make(s, mf, ari_next)
        try:
            bus.attach(s.devfn, fn)
        except VfiolabError as e:
            # The topology names the function by its repr ("<RootPort  8086:2030>: ..."); the path says more.
            raise s.at.error(f"a {s.kind}: {_REPR_PREFIX.sub('', str(e))}") from None
        self.spec_of[id(fn)] = s
        if s.sriov is not None:
            install_sriov(fn, self._vf_spec(s))
        if isinstance(fn, PciBridge):
            assert fn.secondary is not None
            self.attach_all(fn.secondary, s.devices)
        return fn

    @staticmethod
    def _vf_spec(s: FunctionSpec) -> VfSpec:
        sr = s.sriov
        assert sr is not None
        caps, ext = sr.vf_caps, sr.vf_ext_caps
        express: dict[str, object] = dict(sr.vf_express) if sr.vf_express is not None else {"flr": True}
        return VfSpec(class_code=sr.vf_class if sr.vf_class is not None else s.class_code,
                      revision=s.revision, subsys_vendor=s.subsystem[0], subsys_id=s.subsystem[1],
                      caps=lambda: [c.make() for c in caps], ext_caps=lambda: [c.make() for c in ext],
                      express=express)

    def _make(self, s: FunctionSpec, mf: bool, ari_next: int) -> PciFunction:
        at = s.at
        caps = [c.make() for c in s.caps]
        ext = []
        for c in s.ext_caps:
            if c.name == "aer" and s.kind == "root_port" and "root" not in c.kwargs:
                c = CapSpec("aer", {**c.kwargs, "root": True}, c.at)   # Root Error registers
            ext.append(c.make())
        if s.acs is not None:
            ext.append(CapSpec("acs", s.acs, at["acs"]).make())
        if s.ari:
            ext.append(CapSpec("ari", {"next_fn": ari_next}, at["ari"]).make())
        if s.sriov is not None:
            from vfiolab.pci.caps.sriov import SriovCap

            try:
                ext.append(SriovCap(**s.sriov.cap_kwargs))
            except VfiolabError as e:
                raise at["sriov"].error(str(e)) from None
        kw: dict[str, Any] = {"revision": s.revision, "bars": s.bars, "rom": s.rom, "caps": caps,
                              "ext_caps": ext, "multifunction": mf, "name": s.name}
        if s.interrupt_pin is not None:
            kw["interrupt_pin"] = s.interrupt_pin
        if s.kind not in BRIDGE_KINDS:
            kw["subsys_vendor"], kw["subsys_id"] = s.subsystem
        if s.pcie is not None:
            kw["pcie"] = s.pcie
        express = self._express(s)
        cls: Callable[..., PciFunction]
        try:
            if s.kind in BRIDGE_KINDS:
                kw.update({k: v for k, v in s.bridge.items() if k != "window_reset"})
                kw["windows_disabled"] = s.bridge.get("window_reset", "disabled") == "disabled"
                cls = {"root_port": RootPort, "upstream_port": SwitchUpstreamPort,
                       "downstream_port": SwitchDownstreamPort, "pcie_pci_bridge": PcieToPciBridge,
                       "pci_bridge": PciToPciBridge}[s.kind]
                if s.kind != "pci_bridge":
                    kw["express"] = express
                return cls(s.vendor, s.device, s.class_code, **kw)
            cls = {"host_bridge": HostBridge, "endpoint": PcieEndpoint, "legacy_endpoint": LegacyEndpoint,
                   "rciep": RcIntegratedEndpoint, "pci": ConventionalDevice}[s.kind]
            if s.kind in ("endpoint", "legacy_endpoint", "rciep"):
                kw["express"] = express
            elif s.express is not None:
                raise at["express"].error(f"a {s.kind} has no PCI Express capability")
            return cls(s.vendor, s.device, s.class_code, **kw)
        except VfiolabError as e:
            if str(e).startswith(at.source):
                raise
            raise at.error(str(e)) from None
        except (TypeError, ValueError) as e:
            raise at.error(f"bad parameters: {e}") from None

    @staticmethod
    def _express(s: FunctionSpec) -> Any:
        ex: dict[str, Any] = dict(s.express or {})
        if "slot" in ex and isinstance(ex["slot"], dict):
            from vfiolab.pci.caps.express import SlotCaps

            try:
                ex["slot"] = SlotCaps(**ex["slot"])
            except TypeError as e:
                raise s.at["express"]["slot"].error(f"bad slot parameters: {e}") from None
        if s.hotplug and "slot" not in ex:
            from vfiolab.pci.caps.express import SlotCaps

            ex["slot"] = SlotCaps(number=s.slot_number or 0, hotplug=True, power_indicator=True,
                                  attention_indicator=True, power_controller=True)
        if s.kind in ("root_port", "downstream_port"):
            ex.setdefault("ari_forwarding", True)
            if "slot" not in ex and s.slot_number is not None:
                from vfiolab.pci.caps.express import SlotCaps

                ex["slot"] = SlotCaps(number=s.slot_number)
        if s.kind in ("endpoint", "rciep", "legacy_endpoint"):
            ex.setdefault("flr", True)
        return ex


# ---------------------------------------------------------------------------- the platform
@dataclass
class Platform:
    """A validated machine description."""

    name: str
    iommu: bool
    host_bridges: list[HostBridgeSpec]
    realloc: bool | None = None
    pci_mem_start: int = 0
    source: str = "<platform>"

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> Platform:
        """Read a description from ``path``, or the built-in default when None."""
        if path is None:
            source = "platforms/default.yaml"
            text = importlib.resources.files("vfiolab").joinpath(source).read_text()
            data = parse_yaml(text, source)
        else:
            data, source = load_yaml(path, "platform description")
        return cls.from_dict(data, source)

    @classmethod
    def from_dict(cls, data: object, source: str = "<platform>") -> Platform:
        """Validate a parsed description (errors name the YAML path)."""
        top = _At(source)
        d = _mapping(data, top)
        _check_keys(d, {"name", "iommu", "realloc", "pci_mem_start", "host_bridges", "segments"}, top)
        key = "host_bridges" if "host_bridges" in d else "segments"
        if key not in d:
            raise top.error("missing host_bridges (the root complexes of the machine)")
        hbs = []
        for i, item in enumerate(_list(d[key], top[key])):
            a = top[key][i]
            h = _mapping(item, a)
            _check_keys(h, {"segment", "buses", "apertures", "devices"}, a)
            buses = _list(h.get("buses", [0, 0xFF]), a["buses"])
            if len(buses) != 2:
                raise a["buses"].error("expected [first bus, last bus]")
            start, end = _int(buses[0], a["buses"][0], 0, 0xFF), _int(buses[1], a["buses"][1], 0, 0xFF)
            if start > end:
                raise a["buses"].error(f"first bus {start:#x} above last bus {end:#x}")
            hbs.append(HostBridgeSpec(_int(h.get("segment", 0), a["segment"], 0, 0xFFFF), start, end,
                                      _parse_apertures(h.get("apertures", []), a["apertures"]),
                                      _parse_devices(h.get("devices", []), a["devices"])))
        for i, hb in enumerate(hbs):
            _check_bus_numbers(hb, top[key][i])
        realloc = d.get("realloc")
        return cls(name=_str(d.get("name", ""), top["name"]), iommu=_bool(d.get("iommu", False), top["iommu"]),
                   host_bridges=hbs, realloc=None if realloc is None else _bool(realloc, top["realloc"]),
                   pci_mem_start=_int(d.get("pci_mem_start", 0), top["pci_mem_start"]), source=source)

    def _build(self) -> tuple[Topology, _Builder]:
        with gc_paused():
            return self._build_all()

    def _build_all(self) -> tuple[Topology, _Builder]:
        topo = Topology()
        builder = _Builder()
        for i, h in enumerate(self.host_bridges):
            try:
                rc = topo.add_host_bridge(h.segment, h.bus_start, h.bus_end, tuple(h.apertures))
            except VfiolabError as e:
                raise _At(self.source)["host_bridges"][i].error(str(e)) from None
            builder.attach_all(rc.root, h.devices)
        return topo, builder

    def build(self) -> Topology:
        """The hardware: every function placed, nothing enumerated yet (all registers at reset values)."""
        return self._build()[0]

    def boot(self) -> Machine:
        """Build, enumerate like Linux, bind the drivers asked for and enable the requested VFs."""
        topo, builder = self._build()
        e = enumerate_topology(topo, EnumOptions(iommu=self.iommu, realloc=self.realloc,
                                                 pci_mem_start=self.pci_mem_start))
        m = Machine(self, topo, e, builder.spec_of)
        m.start_drivers()
        return m


@dataclass
class Machine:
    """A booted platform: its hardware, the enumeration result and what the description said of each function."""

    platform: Platform
    topology: Topology
    enumeration: Enumeration
    spec_of: dict[int, FunctionSpec]

    def spec(self, seg: int, bus: int, devfn: int) -> FunctionSpec | None:
        """The description entry of the function now answering at (seg, bus, devfn)."""
        fn = self.topology.find(seg, bus, devfn)
        return self.spec_of.get(id(fn)) if fn is not None else None

    def start_drivers(self) -> None:
        """Bind drivers in probe order, then write sriov_numvfs where asked (drivers of VFs if asked)."""
        with gc_paused():
            self._start_drivers()

    def _start_drivers(self) -> None:
        e = self.enumeration
        # Looked up once: enabling devices and VFs changes no boot device's address.
        boot = [(dev, self.spec(dev.seg, dev.bus.number, dev.devfn)) for dev in e.devices]
        for dev, s in boot:
            if s is not None and s.driver:
                e.enable_device(dev)
        for dev, s in boot:
            if s is None or s.sriov is None or not s.sriov.num_vfs:
                continue
            if dev.sriov is None:
                raise s.at["sriov"].error("Linux did not set up SR-IOV for this PF (check offset/stride/VF BARs)")
            try:
                vfs = e.enable_sriov(dev, s.sriov.num_vfs)
            except VfiolabError as err:
                raise s.at["sriov"]["num_vfs"].error(str(err)) from None
            if s.sriov.vf_driver:
                for vf in vfs:
                    e.enable_device(vf)

    def snapshot(self) -> list[DumpedFunction]:
        """Every function's config bytes in Linux probe order (VFs enabled after boot last)."""
        return self.enumeration.dumps()

    def check(self) -> None:
        """Refuse a machine that did not come up as described: a function Linux's scan did not find, or a
        BAR it left without an address (setup-bus.c: "can't assign; no space", the device comes up
        without it).  Raises VfiolabError naming the YAML path."""
        seen: dict[int, PciDev] = {}
        for dev in self.enumeration.devices:
            s = self.spec(dev.seg, dev.bus.number, dev.devfn)
            if s is not None:
                seen[id(s)] = dev
        for h in self.platform.host_bridges:
            for s, siblings in _described(h.devices):
                found = seen.get(id(s))
                if found is None:
                    raise s.at.error(f"not found when Linux enumerates the machine: {_why_not_found(s, siblings)}")
                # setup-bus.c pdev_sort_resources(): host bridges and classless devices are left alone.
                for i, bar in enumerate(s.bars if resources_assignable(found) else ()):
                    if found.resources[bar.index].parent is None:
                        raise s.at["bars"][i].error(
                            f"{found.name} BAR {bar.index} ({bar.kind}, {bar.size:#x} bytes) got no address: the "
                            "windows above it have no room (Linux: \"can't assign; no space\")")


def snapshot(path: str | None = None) -> list[DumpedFunction]:
    """Build the platform in ``path`` (or the built-in default), enumerate it like Linux, check it came up
    as described (Machine.check) and return its dumps."""
    machine = Platform.load(path).boot()
    machine.check()
    return machine.snapshot()


# ---------------------------------------------------------------------------- synthetic fabrics
def _ep(slot: str, vendor: int, device: int, cls: int, **extra: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"kind": "endpoint", "slot": slot, "vendor": vendor, "device": device, "class": cls,
                         "bars": [{"index": 0, "type": "mem64", "size": "16K", "prefetch": True}],
                         "caps": ["pm", {"msi": {"vectors": 4}}]}
    d.update(extra)
    return d


def _fabric_leaf(kind: int, vfs: int) -> tuple[list[dict[str, Any]], int]:
    """What sits behind one generated downstream port, and how many functions it holds."""
    if kind == 0:       # a multi-function endpoint without ACS (8 functions)
        return [_ep(f"00.{f}", 0x10DE, 0x1E87 if f == 0 else 0x10F8, 0x030000 if f == 0 else 0x040300)
                for f in range(8)], 8
    if kind == 1:       # an SR-IOV PF with ARI and VFs on the same bus
        pf = _ep("00.0", 0x8086, 0x1572, 0x020000, ari=True,
                 ext_caps=["aer", {"acs": {"cap": 0x0C}}],
                 sriov={"total_vfs": max(vfs, 1), "num_vfs": vfs, "vf_device": 0x154C, "offset": 1,
                        "stride": 1, "vf_bars": ["16K"], "vf_caps": [{"msix": {"table_size": 4}}],
                        "vf_ext_caps": ["ari"]})
        return [pf], 1 + vfs
    if kind == 2:       # a PCIe-to-PCI bridge with conventional devices behind it
        br = {"kind": "pcie_pci_bridge", "slot": "00.0", "vendor": 0x1A03, "device": 0x1150,
              "devices": [{"kind": "pci", "slot": f"{d:02x}.0", "vendor": 0x8086, "device": 0x107C,
                           "class": 0x020000, "bars": [{"index": 0, "type": "mem32", "size": "128K"}]}
                          for d in range(1, 5)]}
        return [br], 5
    return [_ep("00.0", 0x144D, 0xA80A, 0x010802, ext_caps=["aer"])], 1


def generate_fabric(n_functions: int, *, vfs_per_pf: int = 16, ports_per_switch: int = 8,
                    iommu: bool = True) -> Platform:
    """A big synthetic machine of at least ``n_functions`` functions: segments of root ports with switches,
    each switch port leading to a multi-function device, an SR-IOV PF with VFs, a PCIe-to-PCI bridge with
    conventional devices, or a single endpoint.  New segments are added when bus numbers run short."""
    if n_functions < 1:
        raise VfiolabError(f"generate_fabric: need at least one function, not {n_functions}")
    host_bridges: list[dict[str, Any]] = []
    total = 0
    leaf = 0
    seg = 0
    while total < n_functions:
        devices: list[dict[str, Any]] = [{"kind": "host_bridge", "slot": "00.0", "vendor": 0x8086,
                                          "device": 0x2020}]
        total += 1
        buses = 1
        dev = 1
        while total < n_functions and dev < 32 and buses + 3 + 2 * ports_per_switch < 256:
            ports: list[dict[str, Any]] = []
            total += 2                  # the root port and the switch's upstream port
            buses += 2
            for p in range(ports_per_switch):
                if ports and total >= n_functions:
                    break
                kind = leaf % 4
                leaf += 1
                behind, count = _fabric_leaf(kind, vfs_per_pf)
                ports.append({"slot": f"{p:02x}.0", "vendor": 0x10B5, "device": 0x8747, "devices": behind})
                total += 1 + count
                buses += 2 if kind == 2 else 1
            devices.append({"kind": "root_port", "slot": f"{dev:02x}.0", "vendor": 0x8086, "device": 0x2030,
                            "acs": True, "ext_caps": ["aer"],
                            "devices": [{"kind": "switch", "slot": "00.0",
                                         "upstream": {"vendor": 0x10B5, "device": 0x8747}, "ports": ports}]})
            dev += 1
        host_bridges.append({"segment": seg, "buses": [0, 0xFF],
                             "apertures": [{"type": "io", "start": 0x1000, "end": 0xFFFF},
                                           {"type": "mem", "start": 0x80000000, "end": 0xEFFFFFFF},
                                           {"type": "mem", "start": 0x4000000000 + (seg << 40),
                                            "end": 0x4000000000 + (seg << 40) + (1 << 40) - 1}],
                             "devices": devices})
        seg += 1
    return Platform.from_dict({"name": f"generated fabric of {n_functions} functions", "iommu": iommu,
                               "host_bridges": host_bridges}, f"<generate_fabric({n_functions})>")


__all__: Sequence[str] = ["CAPS", "KINDS", "FunctionSpec", "HostBridgeSpec", "Machine", "Platform",
                          "generate_fabric", "snapshot"]
