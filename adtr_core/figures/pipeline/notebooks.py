"""The notebooks: discovery, selection, the ``parameters`` cell and the form checks (lint)."""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from adtr_core import paths

NOTEBOOK_RE = re.compile(r"^(\d{2})_[A-Za-z0-9_-]+\.ipynb$")


def discover_notebooks(notebooks_dir: str | Path | None = None) -> list[Path]:
    """The notebooks ``NN_slug.ipynb`` of a folder, in order.

    Args:
        notebooks_dir: default :func:`adtr_core.paths.notebooks_dir`.
    """
    folder = Path(notebooks_dir) if notebooks_dir is not None else paths.notebooks_dir()
    if not folder.is_dir():
        raise FileNotFoundError(f"no notebooks folder at {folder}")
    return sorted(p for p in folder.iterdir() if p.is_file() and NOTEBOOK_RE.match(p.name))


def select_notebooks(notebooks: Sequence[Path], selector: str | None) -> list[Path]:
    """The notebooks matching ``selector``: ``"02"``, ``"02_train_category"`` or its file name.

    Args:
        notebooks: from :func:`discover_notebooks`.
        selector: None selects all.

    Raises:
        ValueError: nothing matches; the message lists the notebooks.
    """
    if selector is None:
        return list(notebooks)
    key = Path(selector).name.removesuffix(".ipynb")
    chosen = [p for p in notebooks if p.stem == key or p.stem.split("_", 1)[0] == key]
    if not chosen:
        names = ", ".join(p.stem for p in notebooks) or "none"
        raise ValueError(
            f"no notebook matches {selector!r}: pass a number like 02 or a name; found: {names}"
        )
    return chosen


def read_notebook(path: Path):
    import nbformat

    return nbformat.read(str(path), as_version=4)


def parameters_cells(nb) -> list[int]:
    """Indices of the code cells tagged ``parameters`` in a notebook node."""
    return [
        i
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and "parameters" in cell.get("metadata", {}).get("tags", [])
    ]


def _python_source(source: str) -> str:
    """Cell source with IPython syntax (magics, ``!`` shell lines) turned into Python.

    The body of a cell magic (``%%time``, ``%%capture``...) is returned as Python when it
    parses as Python (it is then executed as such); otherwise (``%%bash``...) it is dropped.
    """
    from IPython.core.inputtransformer2 import TransformerManager

    stripped = source.lstrip()
    if stripped.startswith("%%"):
        body = stripped.split("\n", 1)[1] if "\n" in stripped else ""
        try:
            python = TransformerManager().transform_cell(body)
            ast.parse(python)
            return python
        except SyntaxError:
            return ""
    return TransformerManager().transform_cell(source)


def declared_parameters(path: str | Path) -> dict[str, Any]:
    """The parameters a notebook declares: ``name -> default`` from its ``parameters`` cell.

    Raises:
        ValueError: no (or more than one) parameters cell, or a statement there that is not
            a literal assignment.
    """
    nb = read_notebook(Path(path))
    cells = parameters_cells(nb)
    if len(cells) != 1:
        raise ValueError(
            f"{Path(path).name}: needs exactly one code cell tagged 'parameters', "
            f"found {len(cells)}"
        )
    values, problems = _parse_parameters(nb.cells[cells[0]].source)
    if problems:
        raise ValueError(f"{Path(path).name}: " + "; ".join(problems))
    return values


def _parse_parameters(source: str) -> tuple[dict[str, Any], list[str]]:
    values: dict[str, Any] = {}
    problems: list[str] = []
    try:
        tree = ast.parse(_python_source(source))
    except SyntaxError as err:
        return values, [f"parameters cell does not parse: {err}"]
    lines = source.splitlines()
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            problems.append(
                f"parameters cell line {node.lineno}: only `name = literal` assignments are allowed"
            )
            continue
        if not isinstance(target, ast.Name):
            problems.append(f"parameters cell line {node.lineno}: assign to a plain name")
            continue
        try:
            values[target.id] = ast.literal_eval(value)
        except ValueError:
            problems.append(
                f"parameters cell line {node.lineno}: {target.id} is not a literal "
                "(numbers, strings, None, True/False, lists, tuples, dicts)"
            )
            continue
        own = lines[node.lineno - 1 : (node.end_lineno or node.lineno)]
        above = lines[node.lineno - 2].strip() if node.lineno >= 2 else ""
        if not any("#" in line for line in own) and not above.startswith("#"):
            problems.append(
                f"parameters cell line {node.lineno}: document {target.id} with a comment "
                "(on its lines or the line above)"
            )
    return values, problems


def _papermill_blind_spots(cell, values: dict[str, Any]) -> list[str]:
    """Parameters papermill does not find in the cell (it warns "unknown parameter" for them).

    Papermill reads the cell line by line and skips a line with more than one ``=``, so a
    comment must not contain ``=``.
    """
    from papermill.translators import PythonTranslator

    seen = {p.name for p in PythonTranslator.inspect(cell)}
    return [
        f"parameters cell: papermill does not see {name} (no '=' in its comment, please)"
        for name in values
        if name not in seen
    ]


def lint_notebook(path: str | Path) -> list[str]:
    """Problems with a notebook's form (empty list: none).

    Checks the notebook conventions: exactly one ``parameters``-tagged code cell holding
    only documented literal assignments that papermill sees as parameters, and no ``def``, ``class`` or ``lambda`` in any code
    cell (IPython magics are translated first).
    """
    path = Path(path)
    nb = read_notebook(path)
    problems: list[str] = []
    cells = parameters_cells(nb)
    if len(cells) != 1:
        problems.append(f"needs exactly one code cell tagged 'parameters', found {len(cells)}")
    else:
        values, found = _parse_parameters(nb.cells[cells[0]].source)
        problems += found
        problems += _papermill_blind_spots(nb.cells[cells[0]], values)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        try:
            tree = ast.parse(_python_source(cell.source))
        except SyntaxError as err:
            problems.append(f"cell {i}: does not parse: {err}")
            continue
        for node in ast.walk(tree):
            kind = {
                ast.FunctionDef: "def",
                ast.AsyncFunctionDef: "async def",
                ast.ClassDef: "class",
                ast.Lambda: "lambda",
            }.get(type(node))
            if kind is not None:
                problems.append(
                    f"cell {i} line {node.lineno}: defines a {kind}; move it into adtr_core"
                )
    return problems


def notebook_parameters(
    path: str | Path,
    profile: str,
    executor: str = "local",
    out_dir: str | Path | None = None,
) -> dict[str, Any]:
    """The papermill parameters of one notebook under a profile.

    Args:
        path: the notebook.
        profile: ``smoke``, ``quick`` or ``paper``.
        executor: passed as ``executor`` when the notebook declares that parameter and the
            profile does not set it; ``profile`` is passed the same way.
        out_dir: passed as ``out_dir`` when given and declared.

    Raises:
        ValueError: the profile has no section for the notebook, or sets a parameter the
            notebook does not declare.
    """
    from adtr_core.runs.profiles import profile_params

    path = Path(path)
    declared = declared_parameters(path)
    params = profile_params(profile, path.stem)
    unknown = sorted(set(params) - set(declared))
    if unknown:
        raise ValueError(
            f"profile {profile!r}, section {path.stem!r}: parameter(s) {', '.join(unknown)} "
            f"are not declared in the notebook's parameters cell (declared: "
            f"{', '.join(sorted(declared))}); fix the profile or the notebook"
        )
    if "executor" in declared and "executor" not in params:
        params["executor"] = executor
    if "profile" in declared and "profile" not in params:
        params["profile"] = profile  # for captions that state the profile's shrinkage
    if out_dir is not None and "out_dir" in declared:
        params["out_dir"] = str(out_dir)
    return params
