"""The manifest of a figures folder (``MANIFEST.json`` and ``MANIFEST.md``): read, update, render."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import Any

from adtr_core import paths
from adtr_core.figures.pipeline.outcome import NotebookRun
from adtr_core.io import read_json, write_json, write_text

FIGURE_SUFFIXES = (".png", ".pdf")
TABLE_SUFFIXES = (".csv", ".md")
MANIFEST_JSON = "MANIFEST.json"
MANIFEST_MD = "MANIFEST.md"
MANIFEST_SCHEMA = 1
_LOCK = threading.Lock()  # notebooks running side by side update one manifest


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

    Both files are written atomically, so an interrupted pipeline leaves a valid manifest;
    notebooks running side by side update it one at a time.
    """
    with _LOCK:
        return _update_manifest(figures_dir, run)


def _update_manifest(figures_dir: Path, run: NotebookRun) -> dict[str, Any]:
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


def record_pipeline_run(figures_dir: Path, record: dict[str, Any]) -> dict[str, Any]:
    """Record the last whole pipeline run (profile, jobs, notebooks, wall time) as ``"run"``.

    With several jobs the notebooks' wall times overlap; this is the time the run took.
    """
    with _LOCK:
        manifest = read_manifest(figures_dir)
        manifest["run"] = record
        write_json(figures_dir / MANIFEST_JSON, manifest)
        write_text(figures_dir / MANIFEST_MD, render_manifest(manifest))
        return manifest


def _short(value: Any, limit: int = 120) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def render_manifest(manifest: dict[str, Any]) -> str:
    """The manifest as Markdown: one section per notebook with its files and provenance."""
    lines = [
        "# Figures and tables: provenance",
        "",
        "Written by `python -m adtr_core.figures.pipeline` (`make figures`); do not edit by hand.",
        "The same information, machine-readable: `MANIFEST.json`.",
        "",
    ]
    run = manifest.get("run")
    if run:
        lines += [
            f"Last pipeline run: profile `{run.get('profile')}`, {len(run.get('notebooks', []))} "
            f"notebook(s), {run.get('jobs')} at once, status **{run.get('status')}**, "
            f"{run.get('wall_s', 0):.1f} s from {run.get('started')} to {run.get('finished')}.",
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
