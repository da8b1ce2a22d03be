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
from adtr_core.io import OutputError, atomic_path, ensure_dir, remove_stale_temporaries
from adtr_core.runs.results_folder import folder_lock

OK = "ok"


@dataclass(frozen=True)
class Input:
    """One image to score and where its overlay goes (relative to the output folder)."""

    path: Path
    overlay: Path


SCORES_HEADER = "path,score,status,overlay"
"""The first line of the ``scores.csv`` that predict writes: how it knows its own folders."""


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def is_predict_output(folder: Path) -> bool:
    """Whether ``folder`` holds the ``scores.csv`` of an earlier ``adtr predict``."""
    try:
        with open(folder / "scores.csv") as f:
            return f.readline().strip() == SCORES_HEADER
    except (OSError, UnicodeDecodeError):
        return False


def check_out_dir(target: str | Path, out_dir: str | Path) -> Path:
    """Refuse an output folder that would overwrite or mix with a user's files.

    ``out_dir`` may be new, empty, or an earlier output of predict; it may not be, or lie
    inside, the input folder (the overlays would sit beside the inputs, and be scored on
    the next run), nor a folder holding other files.

    Raises:
        OutputError: one line naming the folder and what to do instead.
    """
    if not str(out_dir).strip():
        raise OutputError("--out is empty: name a folder for the scores and overlays")
    out = Path(out_dir).expanduser().resolve()
    source = Path(target).expanduser().resolve()
    if source.is_dir() and (out == source or source in out.parents):
        raise OutputError(
            f"--out {out_dir} is inside the input folder {target}: the overlays would mix "
            "with the images (and be scored next time); choose a folder outside it"
        )
    if out.is_dir() and not is_predict_output(out):
        if any(not e.name.startswith(".") for e in out.iterdir()):  # hidden: lock, .DS_Store
            raise OutputError(
                f"--out {out_dir} holds files that adtr predict did not write: choose a new "
                "or empty folder (predict never overwrites a file it did not create)"
            )
    return out


def _overlay_names(rel: list[Path]) -> list[Path]:
    """One overlay name per input, unique in its folder even where case does not count.

    ``<stem>_overlay.png``; images of one folder that share a stem (``a.png``, ``a.JPG``)
    get ``<stem>_<suffix>_overlay.png``; a name still taken (``a.png`` and ``a.PNG``, or
    ``a_png.png``) gets ``_2``, ``_3``, ... in the sorted order of the inputs.
    """
    stems = Counter((r.parent, r.stem.lower()) for r in rel)
    used: set[tuple[Path, str]] = set()
    names = []
    for r in rel:
        shared = stems[(r.parent, r.stem.lower())] > 1
        name = f"{r.stem}_{r.suffix[1:].lower()}" if shared else r.stem
        candidate, n = name, 1
        while (r.parent, candidate.lower()) in used:
            n += 1
            candidate = f"{name}_{n}"
        used.add((r.parent, candidate.lower()))
        names.append(r.parent / f"{candidate}_overlay.png")
    return names


def find_inputs(target: str | Path, out_dir: str | Path | None = None) -> list[Input]:
    """The images under ``target`` (a file or a folder, recursively) and their overlay names.

    Hidden files and folders are skipped, and so are ``out_dir`` and any folder holding an
    earlier output of predict (a second run must not score the first run's overlays).
    Symbolic links to folders are followed, each real folder once (no loops). Overlays are
    named by :func:`_overlay_names`: every input gets its own.

    Raises:
        FileNotFoundError: ``target`` does not exist or holds no image.
    """
    target = Path(target).expanduser()
    if target.is_file():
        if not _is_image(target):
            raise FileNotFoundError(
                f"{target} is not an image adtr reads (one of {', '.join(IMAGE_EXTENSIONS)})"
            )
        return [Input(target, Path(f"{target.stem}_overlay.png"))]
    if not target.is_dir():
        raise FileNotFoundError(f"{target} is neither an image file nor a folder")
    skip = Path(out_dir).expanduser().resolve() if out_dir is not None else None
    files: list[Path] = []
    seen: set[Path] = set()
    for folder, dirs, names in os.walk(target, followlinks=True):
        here = Path(folder)
        real = here.resolve()
        if real in seen or real == skip or (here != target and is_predict_output(here)):
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files += [here / n for n in sorted(names) if _is_image(here / n)]
    if not files:
        raise FileNotFoundError(
            f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {target} (hidden folders skipped)"
        )
    rel = [f.relative_to(target) for f in files]
    return [Input(f, name) for f, name in zip(files, _overlay_names(rel))]


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
    require_finished: bool = False,
) -> pd.DataFrame:
    """Score new images with a trained run: ``scores.csv`` and one overlay PNG per image.

    Args:
        checkpoint: a results folder or its ``checkpoint.pt``.
        inputs: an image file or a folder of images (searched recursively).
        out_dir: where ``scores.csv`` and the overlays (mirroring the input tree) go.
        log: a text stream where unreadable images are listed, one line each (default:
            stderr); False: nowhere.
        engine: "torch" (eager) or "onnxruntime" (the exported graph, ``adtr_core.deploy.engines``).
        precision: "auto", "fp32" or "bf16" for the torch engine; None: the run's.
        threads: torch / ONNX Runtime threads; None: ``ADTR_THREADS`` or the thread rule.
        require_finished: refuse a run whose training was interrupted (else it warns).

    Returns:
        The score table: ``path``, ``score`` (NaN when unreadable), ``status`` (``ok`` or
        why the image could not be read) and ``overlay`` (relative to ``out_dir``).

    Raises:
        OutputError: ``out_dir`` cannot be used, or a write failed (e.g. a full disk); the
            overlays this call wrote are removed again, so no partial output is left.
    """
    from adtr_core.runs.saved_runs import check_finished

    log = sys.stderr if log is None else log
    check_out_dir(inputs, out_dir)
    check_finished(checkpoint, require_finished)
    found = find_inputs(inputs, out_dir)
    created = not Path(out_dir).expanduser().exists()
    out = ensure_dir(out_dir, "output folder")
    try:
        with folder_lock(out):
            for folder in (out, *(p for p in out.rglob("*") if p.is_dir())):
                remove_stale_temporaries(folder)  # of a predict that was killed
            scorer = _scorer(checkpoint, engine, device, precision, threads)
            return _score_and_write(scorer, found, out, batch_size, overlays, log)
    finally:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # a command that failed leaves no empty folder


def _scorer(checkpoint, engine: str, device: str, precision: str | None, threads):
    from adtr_core.deploy.engines import build_scorer
    from adtr_core.runs.threads import ThreadRule

    n_threads = ThreadRule(threads).apply()
    return build_scorer(checkpoint, engine, device, precision=precision, threads=n_threads)


def _score_and_write(
    scorer, found: list[Input], out: Path, batch_size: int, overlays: bool, log
) -> pd.DataFrame:
    """Score ``found`` in batches; write the overlays, then ``scores.csv`` (atomically)."""
    from adtr_core.figures.plots.maps import save_overlay

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
    except (OutputError, KeyboardInterrupt):
        for path in written:  # no overlays without their scores.csv
            path.unlink(missing_ok=True)
        for folder in sorted({p.parent for p in written}, key=lambda p: -len(p.parts)):
            if folder != out and folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise
    return table
