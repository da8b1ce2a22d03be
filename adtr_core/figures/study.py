"""The fidelity study of notebook 09: trained reconstructions and the fitted peers on the
development sets, over seeds, as curves against optimiser steps and as one table.

A study set is written ``source/category`` (``dev/bottle-unaligned``, ``demo/grass``,
``mvtec/bottle``). Every trained run evaluates the test set every ``test_every`` optimiser steps
(the config's ``eval_every``, which counts steps when the budget does) besides the validation AUROC it records anyway, so its history holds
both curves; the peers (PaDiM, PatchCore) give one level each. Nothing here reads a number
that a run did not write.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from adtr_core.data.sources import resolve_data_source
from adtr_core.runs.config import ExperimentConfig
from adtr_core.runs.peers import PEER_LABELS, PEER_MODELS
from adtr_core.runs.results import RunResult
from adtr_core.runs.selection import set_name

METRICS = ("image_auroc", "pixel_auroc", "val_auroc")
MODEL_LABELS = {
    "adtr": "ADTR",
    "adtr_no_attention": "transformer without attention",
    "adtr_no_query": "transformer without query embedding",
    "cnn": "CNN",
    **PEER_LABELS,
}


def parse_set(text: str) -> tuple[str, str]:
    """``"dev/bottle-unaligned"`` → ``("dev", "bottle-unaligned")``.

    Raises:
        ValueError: not of the form ``source/category``.
    """
    source, sep, category = text.partition("/")
    if not sep or not source or not category:
        raise ValueError(
            f"study set {text!r} is not source/category, e.g. dev/bottle-unaligned or demo/grass"
        )
    return source, category


def study_configs(
    run: dict[str, Any],
    sets: Sequence[str],
    models: Sequence[str],
    peers: Sequence[str],
    seeds: Sequence[int],
    test_every: int,
) -> list[ExperimentConfig]:
    """Every run of the study: each set × (trained models and peers) × seed.

    Args:
        run: the run settings (a profile's run block).
        sets: ``source/category`` names.
        models: trained reconstructions (``adtr``, ``adtr_no_attention``, ``cnn``...).
        peers: fitted peers (``padim``, ``patchcore``); they take the same data and seeds.
        seeds: the seeds of every run.
        test_every: test evaluations of a trained run every ``test_every`` optimiser steps with
            a budget in steps, else epochs (0: only at the end).
    """
    configs = []
    for text in sets:
        source, category = parse_set(text)
        resolved, root, _ = resolve_data_source(source)
        for model in (*models, *peers):
            extra = {} if model in PEER_MODELS else {"eval_every": test_every}
            for seed in seeds:
                values = {**run, "data": resolved, "data_root": root, "category": category}
                values.update(model=model, seed=seed, **extra)
                configs.append(ExperimentConfig.from_dict(values))
    return configs


def _steps_per_epoch(result: RunResult) -> int:
    return max(1, math.ceil(result.metrics["num_train"] / result.config.batch_size))


def study_curves(results: Sequence[RunResult]) -> pd.DataFrame:
    """The trained runs' histories against optimiser steps.

    The last epoch takes the end-of-training metrics (``metrics.json``, what the tables hold)
    where its row of the history did not evaluate them, so a curve ends where training did,
    not at the last multiple of the test cadence.

    Returns:
        One row per run and evaluated epoch: ``set``, ``model``, ``seed``, ``step``, and
        ``val_auroc`` and ``image_auroc`` / ``pixel_auroc`` where that epoch evaluated them
        (NaN otherwise).
    """
    rows = []
    for result in results:
        if result.config.model in PEER_MODELS:
            continue
        per_epoch = _steps_per_epoch(result)
        history = result.history
        last = int(history["epoch"].max()) if len(history) else None
        for _, row in history.iterrows():
            values = {m: float(row[m]) if m in history else math.nan for m in METRICS}
            if int(row["epoch"]) == last:
                for m, value in values.items():
                    if math.isnan(value) and result.metrics.get(m) is not None:
                        values[m] = float(result.metrics[m])
            rows.append(
                {
                    "set": set_name(result.config),
                    "model": result.config.model,
                    "seed": result.config.seed,
                    "step": int(row["epoch"]) * per_epoch,
                    **values,
                }
            )
    return pd.DataFrame(rows, columns=["set", "model", "seed", "step", *METRICS])


def study_table(results: Sequence[RunResult]) -> pd.DataFrame:
    """Each set and model over its seeds: the mean and standard deviation of every metric at
    the end of training, in percent.

    Returns:
        Rows (``set``, ``model``) in the order of ``results``; columns ``<metric>`` and
        ``<metric>_sd`` for each of :data:`METRICS` (sd NaN with one seed; a peer has no
        validation AUROC where it did not record one), ``seeds`` and ``steps``.
    """
    rows = [
        {
            "set": set_name(r.config),
            "model": r.config.model,
            **{m: 100 * float(r.metrics.get(m, math.nan)) for m in METRICS},
            "steps": r.metrics.get("steps", math.nan),
        }
        for r in results
    ]
    frame = pd.DataFrame(rows)
    grouped = frame.groupby(["set", "model"], sort=False)
    table = grouped[list(METRICS)].mean()
    spread = grouped[list(METRICS)].std(ddof=1).add_suffix("_sd")
    table = table.join(spread)
    table["seeds"] = grouped.size()
    table["steps"] = grouped["steps"].mean()
    ordered = [c for m in METRICS for c in (m, f"{m}_sd")] + ["seeds", "steps"]
    return table[ordered]


def mean_sd_table(table: pd.DataFrame, metric: str = "image_auroc") -> pd.DataFrame:
    """One metric of :func:`study_table` as text, set × model: ``"99.6 ± 0.2"`` (no ± with one
    seed)."""

    def cell(row: pd.Series) -> str:
        mean, sd = row[metric], row[f"{metric}_sd"]
        if math.isnan(mean):
            return "–"
        return f"{mean:.1f}" if math.isnan(sd) else f"{mean:.1f} ± {sd:.1f}"

    text = table.apply(cell, axis=1).rename(metric)
    wide = text.unstack("model")
    models = list(dict.fromkeys(table.index.get_level_values("model")))
    sets = list(dict.fromkeys(table.index.get_level_values("set")))
    return wide.loc[sets, models]


def peer_levels(table: pd.DataFrame) -> pd.DataFrame:
    """The peers' mean test image AUROC per set (the levels the curves are drawn against)."""
    peers = table[table.index.get_level_values("model").isin(PEER_MODELS)]
    return peers["image_auroc"].unstack("model")
