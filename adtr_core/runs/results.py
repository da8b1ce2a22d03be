"""What a run produced: :class:`RunResult`, and the files of its results folder.

``metrics.json`` writes an absent metric (NaN: no pixel masks, say) as null and lists the
reason under ``absent``; :func:`load_result` reads a finished folder back into a
:class:`RunResult`, the same object a fresh run returns.

See Also:
    :mod:`adtr_core.runs.experiment` writes the folder; :mod:`adtr_core.runs.results_folder` claims
    and locks it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from adtr_core.io import atomic_path, read_json, write_json
from adtr_core.method.metrics import METRIC_KEYS
from adtr_core.runs.config import ExperimentConfig


@dataclass
class RunResult:
    """What a run produced; everything here is also on disk in ``out_dir``."""

    out_dir: Path
    config: ExperimentConfig
    metrics: dict[str, float]
    history: pd.DataFrame
    scores: pd.DataFrame | None  # None: a validation-only run (no test image scored)
    score_maps: np.ndarray | None = None  # (N, S, S) float16, when the data has masks
    wall_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def write_results(
    out: Path,
    cfg: ExperimentConfig,
    metrics,
    history: pd.DataFrame,
    scores: pd.DataFrame | None,
    maps,
) -> None:
    """Write a finished run; ``scores`` None (a validation-only run) writes no ``scores.csv``."""
    with atomic_path(out / "history.csv") as tmp:
        history.to_csv(tmp, index=False)
    if scores is not None:
        with atomic_path(out / "scores.csv") as tmp:
            scores.to_csv(tmp, index=False)
    if maps is not None:
        with atomic_path(out / "score_maps.npz") as tmp:
            np.savez_compressed(tmp, maps=maps)
    write_json(out / "metrics.json", metrics_for_json(metrics))
    write_json(out / "config.json", cfg.to_dict())  # last: it marks the run as finished


def metrics_for_json(metrics: dict[str, Any]) -> dict[str, Any]:
    """``metrics`` with absent (NaN) metrics written as null and listed under ``absent``."""
    out = dict(metrics)
    absent = {}
    for key in METRIC_KEYS:
        value = out.get(key)
        if isinstance(value, float) and math.isnan(value):
            out[key] = None
            absent[key] = absence_reason(key, metrics)
    if absent:
        out["absent"] = absent
    return out


def absence_reason(key: str, metrics: dict[str, Any]) -> str:
    """Why a metric of ``metrics`` is absent, in a few words."""
    if key != "image_auroc":
        return metrics.get("pixel_note") or "the test set has no pixel masks (image labels only)"
    n, n_anom = metrics.get("num_test"), metrics.get("num_test_anomalous")
    if n is not None and n_anom == 0:
        return "the test set has no anomalous images"
    if n is not None and n_anom == n:
        return "the test set has no normal images"
    return "undefined on this test set"


def metrics_from_json(stored: dict[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`metrics_for_json`: absent metrics are NaN again."""
    out = {k: v for k, v in stored.items() if k != "absent"}
    for key in METRIC_KEYS:
        if key in out and out[key] is None:
            out[key] = math.nan
    return out


def load_result(out_dir: str | Path) -> RunResult:
    """Read a results folder written by :func:`run_experiment`."""
    out = Path(out_dir)
    if not (out / "metrics.json").is_file():
        raise FileNotFoundError(f"{out} holds no finished run (metrics.json is missing)")
    maps_file = out / "score_maps.npz"
    return RunResult(
        out_dir=out,
        config=ExperimentConfig.from_stored(read_json(out / "config.json")),
        metrics=metrics_from_json(read_json(out / "metrics.json")),
        history=pd.read_csv(out / "history.csv"),
        scores=pd.read_csv(out / "scores.csv") if (out / "scores.csv").is_file() else None,
        score_maps=np.load(maps_file)["maps"] if maps_file.is_file() else None,
        wall_s=float(read_json(out / "metrics.json").get("wall_s", 0.0)),
    )
