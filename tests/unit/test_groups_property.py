"""Properties of grouping on random topologies: the result depends on the machine, not on the order its
functions are listed; groups partition the functions with IDs 0..n-1; what Linux can never separate
(everything below an ACS-less root port, conventional devices below a PCIe-to-PCI bridge, functions of an
ACS-less multifunction endpoint) shares a group."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st
from test_groups_builders import ACS_ON, DOWN, EP, PCI_BR, RP, UP, func

from vfiolab.pci.dump import DumpedFunction
from vfiolab.pci.groups import compute_groups


class Machine(list[DumpedFunction]):
    """The functions of one generated machine, shown by name in failure reports (not 4 KiB each)."""

    def __repr__(self) -> str:
        return "Machine(" + " ".join(f.name for f in self) + ")"


@st.composite
def machines(draw: st.DrawFn) -> tuple[Machine, list[list[str]]]:
    """Root ports (ACS or not) with a random subtree each; returns the functions and must-share sets."""
    funcs = Machine([func("00:00.0", 0x8086, 0x29C0, cls=0x0600)])
    together: list[list[str]] = []
    bus = 1
    for slot in range(1, draw(st.integers(1, 6)) + 1):
        acs = draw(st.booleans())
        kind = draw(st.sampled_from(["endpoint", "mf", "switch", "pci", "empty"]))
        rp_name = f"0000:00:{slot:02x}.0"
        first = bus
        members = [rp_name]
        if kind == "endpoint":
            funcs.append(func(f"{first:02x}:00.0", pcie=EP))
            members.append(f"0000:{first:02x}:00.0")
            last = first
        elif kind == "mf":
            n = draw(st.integers(2, 4))
            names = [f"0000:{first:02x}:00.{i}" for i in range(n)]
            funcs += [func(nm[5:], pcie=EP, mf=(i == 0)) for i, nm in enumerate(names)]
            together.append(names)
            members += names
            last = first
        elif kind == "switch":
            ports = draw(st.integers(1, 3))
            inner = first + 1                               # the switch's internal bus
            funcs.append(func(f"{first:02x}:00.0", pcie=UP, bridge=(inner, inner + ports)))
            members.append(f"0000:{first:02x}:00.0")
            for p in range(ports):
                sec = inner + 1 + p
                dn, ep = f"0000:{inner:02x}:{p:02x}.0", f"0000:{sec:02x}:00.0"
                dn_acs = draw(st.booleans())
                funcs.append(func(dn[5:], pcie=DOWN, acs=ACS_ON if dn_acs else None, bridge=(sec, sec)))
                funcs.append(func(ep[5:], pcie=EP))
                members += [dn, ep]
                if not dn_acs:
                    together.append([dn, ep])
            last = inner + ports
        elif kind == "pci":
            sec = first + 1
            funcs.append(func(f"{first:02x}:00.0", pcie=PCI_BR, bridge=(sec, sec)))
            devs = [f"0000:{sec:02x}:{d:02x}.0" for d in range(1, draw(st.integers(1, 4)) + 1)]
            funcs += [func(d[5:], 0x1234, 0x11E8) for d in devs]
            together.append([f"0000:{first:02x}:00.0", *devs])
            members += [f"0000:{first:02x}:00.0", *devs]
            last = sec
        else:
            last = first
        funcs.append(func(rp_name[5:], pcie=RP, acs=ACS_ON if acs else None, bridge=(first, last)))
        if not acs:
            together.append(members)
        bus = last + 1
    return funcs, together


@settings(max_examples=60, deadline=None)
@given(machines(), st.randoms(use_true_random=False))
def test_grouping_is_a_function_of_the_machine(machine, rnd: random.Random) -> None:  # type: ignore[no-untyped-def]
    funcs, together = machine
    result = compute_groups(funcs)
    groups = [g.devices for g in result.groups]
    assert [g.id for g in result.groups] == list(range(len(groups)))
    assert sorted(n for g in groups for n in g) == sorted(f.name for f in funcs)
    shuffled = list(funcs)
    rnd.shuffle(shuffled)
    assert [g.devices for g in compute_groups(shuffled).groups] == groups
    for names in together:
        assert len({result.by_device[n] for n in names}) == 1, names
    for g in result.groups:
        assert len(g.reasons) == len(g.devices)
        assert all(r.startswith(d) for d, r in zip(g.devices, g.reasons))
