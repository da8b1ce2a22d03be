"""Training checkpoints: save and load model, optimiser and history, never executing code.

Checkpoints hold only plain types (dicts, lists, tensors, numbers, strings) and are read
with ``torch.load(weights_only=True)``: a checkpoint file cannot run code.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from adtr_core.io import atomic_path

CHECKPOINT_FORMAT = "adtr-checkpoint"
CHECKPOINT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint cannot be read, is unsafe, or does not match the model."""


def _to_plain(obj: Any) -> Any:
    """Recursively turn Counter / OrderedDict / numpy scalars into plain python types."""
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, Mapping):  # Counter, OrderedDict, ... -> dict
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return tuple(_to_plain(v) for v in obj)
    if isinstance(obj, list):
        return [_to_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def checkpoint_file(path: str | os.PathLike) -> Path:
    """The checkpoint of a results folder (``<folder>/checkpoint.pt``), or ``path`` itself."""
    path = Path(path)
    return path / "checkpoint.pt" if path.is_dir() else path


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    epoch: int,
    history: list[dict],
    extra: dict | None = None,
) -> Path:
    """Write a training checkpoint atomically.

    Args:
        path: the checkpoint file.
        model: its ``state_dict`` is saved.
        optimizer: its ``state_dict`` is saved.
        scheduler: an lr scheduler (or None); its ``state_dict`` is saved.
        epoch: number of epochs completed.
        history: the history rows so far (plain dicts).
        extra: anything else in plain types, e.g. ``{"config": config.to_dict()}``.

    Returns:
        The checkpoint path.
    """
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "epoch": int(epoch),
        "model": model.state_dict(),
        "optimizer": _to_plain(optimizer.state_dict()),
        "scheduler": _to_plain(scheduler.state_dict()) if scheduler is not None else None,
        "history": _to_plain(list(history)),
        "extra": _to_plain(dict(extra or {})),
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


READ_FIX = "pass a results folder written by adtr train, or its checkpoint.pt"
"""What a reader of a checkpoint (eval, predict, export) is told to do with one it refuses."""
RUN_FIX = (
    "move the file out of the results folder, or choose another --out (--overwrite moves "
    "the folder's contents aside)"
)
"""What train is told about a refused checkpoint in its results folder."""


def load_checkpoint(
    path: str | os.PathLike, map_location: Any = "cpu", fix: str = READ_FIX
) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`, never executing code from it.

    The file is read with ``torch.load(weights_only=True)``: objects other than tensors and
    plain python types are refused.

    Returns:
        dict with keys ``epoch``, ``model``, ``optimizer``, ``scheduler``, ``history``, ``extra``.

    Args:
        fix: what the error line tells the user to do (never to delete a file that may be
            theirs): :data:`READ_FIX` for the commands that read a run, :data:`RUN_FIX`
            for a checkpoint in train's results folder.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: the file is unsafe, corrupt, or not an adtr checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's message advises weights_only=False, which would let the file run code: the
        # message below leaves it out.
        raise CheckpointError(
            f"refusing to load checkpoint {path}: it holds objects other than tensors and plain "
            f"python types, which could run code when unpickled. Only load checkpoints written "
            f"by adtr; {fix}"
        ) from err
    except Exception as err:  # truncated zip, garbage bytes, ...
        first = (str(err).strip().splitlines() or [""])[0][:160]
        raise CheckpointError(
            f"cannot read checkpoint {path} ({type(err).__name__}: {first}); the file is "
            f"corrupt or not a checkpoint: {fix}"
        ) from err
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not an adtr training checkpoint: {fix}")
    if ckpt.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint version {ckpt.get('version')}, this code reads version "
            f"{CHECKPOINT_VERSION}: {fix}"
        )
    return ckpt
