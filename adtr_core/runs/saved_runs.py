"""Saved runs: rebuild a finished run's backbone and model from its checkpoint, and evaluate it.

A results folder written by :func:`adtr_core.runs.experiment.run_experiment` (or its
``checkpoint.pt``) holds the resolved config and the model's weights: :func:`load_run_model`
rebuilds both networks from it, and :func:`evaluate_checkpoint` scores the run's test set
(or another root or category) again. Images are read by the data sets of
:mod:`adtr_core.data`, whose one reader is :func:`adtr_core.data.base.read_image`.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any

from adtr_core.data.sources import open_split, resolve_category
from adtr_core.runs.checkpoints import checkpoint_file, load_checkpoint
from adtr_core.runs.config import ExperimentConfig
from adtr_core.runs.device import resolve_device
from adtr_core.runs.evaluation import evaluate_features, scoring_config
from adtr_core.runs.experiment import build_feature_extractor, build_model
from adtr_core.runs.features import extract_features
from adtr_core.runs.precision import autocast_dtype
from adtr_core.runs.threads import ThreadRule


def unfinished_note(checkpoint: str | Path) -> str | None:
    """Why a run's training is unfinished, or None when it finished.

    A run is finished when its folder holds ``config.json``, which training writes together
    with the final results; an interrupted run has only its last ``checkpoint.pt``.
    """
    ckpt_path = checkpoint_file(checkpoint)
    if not ckpt_path.is_file() or (ckpt_path.parent / "config.json").is_file():
        return None
    state = load_checkpoint(ckpt_path)
    config = (state.get("extra") or {}).get("config") or {}
    done = int(state.get("epoch", 0))
    of = f" of {config['epochs']}" if config.get("steps") is None and config.get("epochs") else ""
    return (
        f"{ckpt_path.parent} holds an unfinished run (trained {done}{of} epochs; no config.json, "
        "which training writes when it ends): its scores are a partly trained model's; finish "
        "it by running the same adtr train command again"
    )


def check_finished(checkpoint: str | Path, require: bool = False) -> None:
    """Warn that a run is unfinished, or (``require``) refuse it.

    Raises:
        ValueError: the run is unfinished and ``require`` is set.
    """
    note = unfinished_note(checkpoint)
    if note is None:
        return
    if require:
        raise ValueError(f"{note} (--require-finished refuses it)")
    warnings.warn(note, stacklevel=3)


def load_run_model(checkpoint: str | Path, device: str = "cpu"):
    """Rebuild the model of a finished run from its checkpoint.

    Returns:
        ``(cfg, backbone, model)`` with the model's weights loaded, both in eval mode.
    """
    ckpt_path = checkpoint_file(checkpoint)
    if not ckpt_path.is_file():
        raise FileNotFoundError(
            f"no checkpoint at {ckpt_path}: pass a results folder written by `adtr train` "
            "or its checkpoint.pt"
        )
    state = load_checkpoint(ckpt_path, map_location=device)
    cfg = ExperimentConfig.from_stored(state["extra"]["config"])
    backbone = build_feature_extractor(cfg).to(device)
    model = build_model(cfg, backbone.channels, backbone.grid).to(device)
    model.load_state_dict(state["model"])
    model.eval()
    return cfg, backbone, model


def evaluate_checkpoint(
    checkpoint: str | Path,
    data_root: str | None = None,
    category: str | None = None,
    device: str = "auto",
    precision: str | None = None,
    threads: int | str | None = None,
    require_finished: bool = False,
) -> dict[str, Any]:
    """Evaluate a trained run on its test set (or on another root / category).

    ``precision`` ("auto", "fp32", "bf16"; None: the run's) and ``threads`` (None: the
    thread rule) as in :func:`adtr_core.runs.experiment.run_experiment`. An unfinished run
    warns (:func:`check_finished`), or is refused with ``require_finished``.
    """
    check_finished(checkpoint, require_finished)
    ThreadRule(threads).apply()
    dev = resolve_device(device)
    cfg, backbone, model = load_run_model(checkpoint, device=str(dev))
    if cfg.data == "folder" and category is not None:
        raise ValueError(
            f"--category {category} is for data in categories; this run is on your own "
            "folders (--data folder), which have none: leave --category out"
        )
    overrides = {
        k: v
        for k, v in (("data_root", data_root), ("category", category), ("precision", precision))
        if v is not None
    }
    cfg = dataclasses.replace(cfg, **overrides)
    test_f = extract_features(
        backbone, open_split(cfg, "test"), device=dev, precision=cfg.precision
    )
    dtype = autocast_dtype(cfg.precision, dev)
    metrics, _, _ = evaluate_features(model, test_f, scoring_config(cfg), dtype)
    metrics["category"] = resolve_category(cfg)
    return metrics
