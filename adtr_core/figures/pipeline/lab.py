"""Executed notebooks as committed: in the form JupyterLab saves, with no folders of this machine."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from adtr_core import paths
from adtr_core.io import write_text

# The package's Jupyter kernel (`make kernel`): every notebook names it, executed copies too.
KERNELSPEC = {"name": "adtr", "display_name": "Python (adtr)", "language": "python"}


def strip_local_paths(nb_path: Path) -> None:
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
