"""The package keeps the architecture's layering: no import cycles, arrows pointing down only.

Module-level imports are read from the source with ``ast`` (imports under ``if TYPE_CHECKING`` and inside
functions are lazy and do not count for cycles, but do count for the layer rules).
"""

from __future__ import annotations

import ast
import pathlib

import pytest

SRC = pathlib.Path(__file__).resolve().parents[2] / "src" / "vfiolab"

# Which top-level packages a layer may never import (docs/architecture.md, "Arrows point down only").
FORBIDDEN: dict[str, set[str]] = {
    "memory": {"pci", "iommu", "iommufd", "vfio", "vfio_user", "devices", "platform", "cli", "scenarios"},
    "pci": {"iommu", "iommufd", "vfio", "vfio_user", "devices", "cli", "scenarios"},
    "iommu": {"iommufd", "vfio", "vfio_user", "devices", "platform", "cli", "scenarios"},
    "iommufd": {"vfio", "vfio_user", "devices", "platform", "cli", "scenarios"},
    "devices": {"iommu", "iommufd", "vfio", "vfio_user", "platform", "cli", "scenarios"},
    "vfio": {"vfio_user", "cli", "scenarios"},
    "vfio_user": {"cli", "scenarios"},
    "platform": {"cli"},
    "scenarios": {"cli"},
    "difftest": {"cli", "vfio", "vfio_user", "devices", "scenarios"},
}


def _modname(path: pathlib.Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: pathlib.Path) -> tuple[set[str], set[str]]:
    """(eager module-level imports, all imports) of one file, as vfiolab module names."""
    tree = ast.parse(path.read_text(), str(path))
    eager: set[str] = set()
    every: set[str] = set()
    me = _modname(path)
    pkg = me if path.name == "__init__.py" else me.rpartition(".")[0]

    def names(node: ast.AST) -> list[str]:
        if isinstance(node, ast.Import):
            return [a.name for a in node.names]
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            return [base] + [f"{base}.{a.name}" for a in node.names]
        return []

    def visit(nodes: list[ast.stmt], top: bool) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                for sub in ast.walk(node):
                    every.update(n for n in names(sub) if n.startswith("vfiolab"))
                continue
            for n in names(node):
                if n.startswith("vfiolab"):
                    every.add(n)
                    if top:
                        eager.add(n)
            for sub in ast.iter_child_nodes(node):
                if isinstance(sub, ast.stmt):
                    lazy = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                    visit([sub], top and not lazy)

    visit(tree.body, True)
    return eager, every


FILES = sorted(SRC.rglob("*.py"))
MODULES = {_modname(p): p for p in FILES}


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def test_no_import_cycles() -> None:
    graph = {m: {r for n in _imports(p)[0] if (r := _resolve(n)) and r != m} for m, p in MODULES.items()}
    # A package's __init__ importing its own submodules is fine; a submodule importing its parent's
    # __init__ only closes a cycle if that __init__ imports the submodule back: keep both edges.
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycle = stack[stack.index(n):] + [n]
                if not all(c == cycle[0] or c.startswith(cycle[0] + ".") or cycle[0].startswith(c + ".")
                           for c in cycle):
                    pytest.fail("import cycle: " + " -> ".join(cycle))
            elif n not in state:
                dfs(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            dfs(m)


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_arrows_point_down(layer: str) -> None:
    bad = []
    for m, p in MODULES.items():
        parts = m.split(".")
        if len(parts) < 2 or parts[1] != layer:
            continue
        for n in _imports(p)[1]:
            target = n.split(".")
            if len(target) > 1 and target[1] in FORBIDDEN[layer]:
                bad.append(f"{m} imports {n}")
    assert not bad, "\n".join(bad)


def test_nothing_imports_cli() -> None:
    bad = [f"{m} imports {n}" for m, p in MODULES.items() if not m.startswith("vfiolab.cli")
           for n in _imports(p)[1] if n.startswith("vfiolab.cli")]
    assert not bad, "\n".join(bad)
