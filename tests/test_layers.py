"""The package's layers: no import cycle in adtr_core, and no low-level module imports a higher one.

Imports are read with ``ast`` from every module's source, including the imports inside
functions (the ones that hide a cycle from ``import adtr_core.x`` at start-up).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "adtr_core"
LOW = (
    "adtr_core.data",
    "adtr_core.backbone",
    "adtr_core.weights",
    "adtr_core.features",
    "adtr_core.model",
    "adtr_core.baselines",
    "adtr_core.reconstructors",
    "adtr_core.train",
    "adtr_core.checkpoints",
    "adtr_core.device",
    "adtr_core.scoring",
    "adtr_core.metrics",
    "adtr_core.losses",
)
"""Stages of the method and their plumbing (STYLE.md, rule 2): they know nothing above them."""
HIGH = (
    "adtr_core.experiment",
    "adtr_core.saved_runs",
    "adtr_core.reporting",
    "adtr_core.plots",
    "adtr_core.pipeline",
    "adtr_core.cli",
    "adtr_core.sweep",
    "adtr_core.ablations",
)
"""The layers that wire the stages together, run them and show their results."""


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted((ROOT / PACKAGE).rglob("*.py"))}


def _in(name: str, layers: tuple[str, ...]) -> bool:
    return any(name == layer or name.startswith(layer + ".") for layer in layers)


def _resolve(name: str) -> str | None:
    """The adtr_core module ``name`` is or lies in (None: not one of the package's)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str) -> set[str]:
    """The adtr_core modules ``module`` imports anywhere in its source."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package `level - 1` levels up
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:  # `from pkg import module` imports the module
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    resolved = {_resolve(name) for name in found if name.split(".")[0] == PACKAGE}
    return {name for name in resolved if name is not None and name != module}


GRAPH = {module: imports_of(module) for module in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_import_graph_is_read() -> None:
    assert "adtr_core.backbone" in GRAPH["adtr_core.experiment"]
    assert "adtr_core.data.sources" in GRAPH["adtr_core.plots.maps"]
    assert "adtr_core.saved_runs" in GRAPH["adtr_core.engines"]  # an import inside a function
    assert "adtr_core.plots.ablations" in GRAPH["adtr_core.plots.embedding"]


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_between_adtr_core_modules() -> None:
    assert _cycles(GRAPH) == []


def test_low_level_modules_import_no_higher_layer() -> None:
    wrong = {
        module: sorted(name for name in imported if _in(name, HIGH))
        for module, imported in GRAPH.items()
        if _in(module, LOW)
    }
    assert {module: names for module, names in wrong.items() if names} == {}
