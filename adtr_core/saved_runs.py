"""Saved runs: rebuild a finished run's backbone and model from its checkpoint, and evaluate it.

A results folder written by :func:`adtr_core.experiment.run_experiment` (or its
``checkpoint.pt``) holds the resolved config and the model's weights: :func:`load_run_model`
rebuilds both networks from it, and :func:`evaluate_checkpoint` scores the run's test set
(or another root or category) again. Images are read by the data sets of
:mod:`adtr_core.data`, whose one reader is :func:`adtr_core.data.base.read_image`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from adtr_core.checkpoints import checkpoint_file, load_checkpoint
from adtr_core.data.sources import open_split, resolve_category
from adtr_core.device import resolve_device
from adtr_core.experiment import (
    ExperimentConfig,
    build_feature_extractor,
    build_model,
    evaluate_features,
    scoring_config,
)
from adtr_core.features import extract_features
from adtr_core.precision import autocast_dtype
from adtr_core.threads import ThreadRule


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
    cfg = ExperimentConfig.from_dict(state["extra"]["config"])
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
) -> dict[str, Any]:
    """Evaluate a trained run on its test set (or on another root / category).

    ``precision`` ("auto", "fp32", "bf16"; None: the run's) and ``threads`` (None: the
    thread rule) as in :func:`adtr_core.experiment.run_experiment`.
    """
    ThreadRule(threads).apply()
    dev = resolve_device(device)
    cfg, backbone, model = load_run_model(checkpoint, device=str(dev))
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
