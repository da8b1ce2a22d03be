"""Scoring new images with a trained run: ``adtr predict``.

The output folder mirrors the input tree: ``<input>/a/b/000.png`` gets
``<out>/a/b/000_overlay.png`` (two inputs never share an output file), and
``scores.csv`` holds one row per input image with its status. Hidden files and folders
(``.ipynb_checkpoints``, ...) are skipped; an unreadable image is listed (on stderr and
in ``scores.csv``) and the others are still scored. Images are read by the one reader of
the data package (:func:`adtr_core.data.base.read_image`), as in training.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from adtr_core.data.base import IMAGE_EXTENSIONS, read_image, to_image_tensor
from adtr_core.data.errors import DatasetError
from adtr_core.io import OutputError, atomic_path, ensure_dir

OK = "ok"


@dataclass(frozen=True)
class Input:
    """One image to score and where its overlay goes (relative to the output folder)."""

    path: Path
    overlay: Path


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def find_inputs(target: str | Path, out_dir: str | Path | None = None) -> list[Input]:
    """The images under ``target`` (a file or a folder, recursively) and their overlay names.

    Hidden files and folders are skipped, and so is ``out_dir`` when it lies inside
    ``target`` (a second run must not score the first run's overlays). Overlays are
    ``<relative folder>/<stem>_overlay.png``; images of one folder that share a stem
    (``a.png``, ``a.jpg``) get ``<stem>_<suffix>_overlay.png``.

    Raises:
        FileNotFoundError: ``target`` does not exist or holds no image.
    """
    target = Path(target).expanduser()
    if target.is_file():
        return [Input(target, Path(f"{target.stem}_overlay.png"))]
    if not target.is_dir():
        raise FileNotFoundError(f"{target} is neither an image file nor a folder")
    skip = Path(out_dir).expanduser().resolve() if out_dir is not None else None
    files: list[Path] = []
    for folder, dirs, names in os.walk(target):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (here / d).resolve() != skip)
        files += [here / n for n in sorted(names) if _is_image(here / n)]
    if not files:
        raise FileNotFoundError(
            f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {target} (hidden folders skipped)"
        )
    rel = [f.relative_to(target) for f in files]
    stems = Counter((r.parent, r.stem) for r in rel)
    inputs = []
    for f, r in zip(files, rel):
        shared = stems[(r.parent, r.stem)] > 1
        name = f"{r.stem}_{r.suffix[1:].lower()}" if shared else r.stem
        inputs.append(Input(f, r.parent / f"{name}_overlay.png"))
    return inputs


def predict_images(
    checkpoint: str | Path,
    inputs: str | Path,
    out_dir: str | Path,
    device: str = "auto",
    batch_size: int = 16,
    overlays: bool = True,
    log=None,
    engine: str = "torch",
    precision: str | None = None,
    threads: int | str | None = None,
) -> pd.DataFrame:
    """Score new images with a trained run: ``scores.csv`` and one overlay PNG per image.

    Args:
        checkpoint: a results folder or its ``checkpoint.pt``.
        inputs: an image file or a folder of images (searched recursively).
        out_dir: where ``scores.csv`` and the overlays (mirroring the input tree) go.
        log: a text stream where unreadable images are listed, one line each (default:
            stderr); False: nowhere.
        engine: "torch" (eager) or "onnxruntime" (the exported graph, ``adtr_core.engines``).
        precision: "auto", "fp32" or "bf16" for the torch engine; None: the run's.
        threads: torch / ONNX Runtime threads; None: ``ADTR_THREADS`` or the thread rule.

    Returns:
        The score table: ``path``, ``score`` (NaN when unreadable), ``status`` (``ok`` or
        why the image could not be read) and ``overlay`` (relative to ``out_dir``).

    Raises:
        OutputError: ``out_dir`` cannot be used, or a write failed (e.g. a full disk); the
            overlays this call wrote are removed again, so no partial output is left.
    """
    from adtr_core.engines import build_scorer
    from adtr_core.plots.maps import save_overlay
    from adtr_core.threads import ThreadRule

    log = sys.stderr if log is None else log
    found = find_inputs(inputs, out_dir)
    out = ensure_dir(out_dir, "output folder")
    n_threads = ThreadRule(threads).apply()
    scorer = build_scorer(checkpoint, engine, device, precision=precision, threads=n_threads)
    rows: dict[int, dict] = {}
    readable: list[tuple[int, torch.Tensor]] = []
    for i, item in enumerate(found):
        try:
            readable.append((i, to_image_tensor(read_image(item.path, scorer.image_size))))
        except DatasetError as err:
            cause = err.__cause__
            reason = f"unreadable ({type(cause).__name__}: {cause})" if cause else str(err)
            rows[i] = {"path": str(item.path), "score": float("nan"), "status": reason}
            if log:
                print(f"adtr: skipped {item.path}: {reason}", file=log)
    written: list[Path] = []
    try:
        for start in range(0, len(readable), batch_size):
            chunk = readable[start : start + batch_size]
            images = torch.stack([img for _, img in chunk])  # (B, 3, S, S)
            maps, scores = scorer(images)  # (B, S, S), (B,) on the CPU
            for (i, img), m, s in zip(chunk, maps, scores):
                item = found[i]
                row = {"path": str(item.path), "score": float(s), "status": OK}
                if overlays:
                    save_overlay(img, m, out / item.overlay, title=f"score {float(s):.3f}")
                    written.append(out / item.overlay)
                    row["overlay"] = item.overlay.as_posix()
                rows[i] = row
        table = pd.DataFrame([rows[i] for i in range(len(found))])
        if "overlay" not in table:
            table["overlay"] = ""
        table = table[["path", "score", "status", "overlay"]].fillna({"overlay": ""})
        with atomic_path(out / "scores.csv") as tmp:
            table.to_csv(tmp, index=False)
    except OutputError:
        for path in written:  # no overlays without their scores.csv
            path.unlink(missing_ok=True)
        raise
    return table
