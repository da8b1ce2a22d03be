"""The package's groups: no import cycle in adtr_core, and no import arrow running back up.

The groups and the ones each may import are stated below (docs/architecture.md draws them):
the core (``method``) imports no other group, and every group imports only groups below it.
Imports are read with ``ast`` from every module's source, including the imports inside
functions (the ones that hide a cycle from ``import adtr_core.x`` at start-up).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "adtr_core"
SHARED = ("adtr_core", "adtr_core.paths", "adtr_core.io")
"""The small helpers every group may use: the package's paths and its atomic writes."""
GROUPS: dict[str, tuple[str, ...]] = {
    "method": (),  # the small core: backbone, ADTR, baselines, scoring, losses, metrics
    "data": ("shared",),
    "runs": ("shared", "method", "data"),
    "toy": ("shared", "method", "data", "runs"),
    "figures": ("shared", "method", "data", "runs", "toy"),
    "deploy": ("shared", "method", "data", "runs", "figures"),
    "cli": ("shared", "method", "data", "runs", "toy", "figures", "deploy"),
}
"""Each group (``adtr_core.<group>``), lowest first, and the other groups it may import."""
CORE_MAX_LINES = 2000  # the core reads in one sitting
MODULE_MAX_LINES = 600


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted((ROOT / PACKAGE).rglob("*.py"))}


def group_of(module: str) -> str:
    """The group ``module`` belongs to: ``shared`` or a key of :data:`GROUPS`."""
    if module in SHARED:
        return "shared"
    group = module.split(".")[1]
    assert group in GROUPS, f"{module} is in no group: add it to GROUPS or move it into one"
    return group


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
    assert "adtr_core.method.backbone" in GRAPH["adtr_core.runs.experiment"]
    assert "adtr_core.data.sources" in GRAPH["adtr_core.figures.plots.maps"]
    # an import inside a function
    assert "adtr_core.runs.saved_runs" in GRAPH["adtr_core.deploy.engines"]
    assert "adtr_core.figures.plots.ablations" in GRAPH["adtr_core.figures.plots.embedding"]


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_between_adtr_core_modules() -> None:
    assert _cycles(GRAPH) == []


def test_every_module_is_in_a_group_and_the_top_is_small() -> None:
    groups = {group_of(module) for module in MODULES}
    assert groups == {"shared", *GROUPS}
    top = sorted(p.name for p in (ROOT / PACKAGE).iterdir() if p.name != "__pycache__")
    assert len(top) <= 12, top


def test_no_import_runs_back_up() -> None:
    wrong = {
        module: sorted(
            name
            for name in imported
            if group_of(name) != group_of(module)
            and group_of(name) not in GROUPS.get(group_of(module), ())
        )
        for module, imported in GRAPH.items()
    }
    assert {module: names for module, names in wrong.items() if names} == {}


def test_the_shared_helpers_import_no_group() -> None:
    assert {m: sorted(GRAPH[m]) for m in SHARED if GRAPH[m] - set(SHARED)} == {}


def test_the_core_reads_in_one_sitting_and_no_module_is_long() -> None:
    lines = {m: len(p.read_text().splitlines()) for m, p in MODULES.items()}
    assert sum(n for m, n in lines.items() if group_of(m) == "method") <= CORE_MAX_LINES
    assert {m: n for m, n in lines.items() if n > MODULE_MAX_LINES} == {}
