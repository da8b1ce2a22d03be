"""Choosing a setting by validation only: validation-only runs, their table, one final test.

The protocol behind every choice of ``docs/decisions.md``: each candidate setting is trained
on every study set and seed as a *validation-only* run (``run_experiment(test=False)``: the
test set is neither read nor scored, so no test number exists while the choice is made), the
candidates are compared on the validation AUROC of the held-out images and their synthetic
anomalies (paired by set and seed, since a pair shares its held-out images and anomalies),
and only then are the runs of the settings to report evaluated on the test set, once
(:func:`final_evaluation`, which scores the trained checkpoints without training again).

Example:
    >>> from adtr_core.runs.config import ExperimentConfig
    >>> base = [ExperimentConfig(data="dev", category="screw", steps=600, epochs=None)]
    >>> study = validation_study({"now": {}, "no jitter": {"feature_jitter": 0}}, base,
    ...                          seeds=[0, 1], baseline="now")  # doctest: +SKIP
    >>> study.summary                                              # doctest: +SKIP
    >>> final_evaluation(study, [study.chosen])                   # doctest: +SKIP

See Also:
    :mod:`adtr_core.runs.experiment` (a run), :mod:`adtr_core.runs.evaluation` (the
    validation AUROC).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from scipy.stats import binomtest

from adtr_core.method.metrics import METRIC_KEYS
from adtr_core.runs.config import ExperimentConfig


@dataclass
class Selection:
    """What a validation study found, before any test image was scored.

    Attributes:
        table: one row per candidate, set and seed: ``val_auroc`` and ``val_<kind>``.
        summary: one row per candidate: the mean validation AUROC over every set and seed,
            the mean per set, and against the baseline the pairs that rose and fell and the
            sign test's p-value over those that moved.
        chosen: the candidate with the highest mean validation AUROC.
        runs: ``(candidate, set, seed)`` -> its results folder.
        configs: ``(candidate, set, seed)`` -> its config.
    """

    table: pd.DataFrame
    summary: pd.DataFrame
    chosen: str
    runs: dict[tuple[str, str, int], Path] = field(default_factory=dict)
    configs: dict[tuple[str, str, int], ExperimentConfig] = field(default_factory=dict)
    executor: str = "local"
    runs_dir: Path | None = None


def set_name(cfg: ExperimentConfig) -> str:
    """The study set a config belongs to: ``source/category`` (the embedded MVTec AD as mvtec)."""
    return f"{cfg.data}/{cfg.category}"


def validation_study(
    candidates: Mapping[str, Mapping[str, Any]],
    sets: Sequence[ExperimentConfig],
    seeds: Sequence[int],
    baseline: str | None = None,
    runs_dir: str | Path | None = None,
    executor: str = "local",
    progress: bool = False,
) -> Selection:
    """Train every candidate on every set and seed, validation only, and compare them.

    Args:
        candidates: name -> the settings it changes (ExperimentConfig fields) over each set's.
        sets: one config per study set (its data, category and the settings shared by all).
        seeds: the seeds of every candidate and set.
        baseline: the candidate the others are paired against (default: the first).
        runs_dir: where the results folders go (default ``paths.runs_dir()``).
        executor: how :func:`~adtr_core.runs.sweep.run_sweep` trains ("local" or "ray").

    Returns:
        A :class:`Selection`; its table and its runs hold no test metric.
    """
    from adtr_core.runs.sweep import run_sweep

    if not candidates:
        raise ValueError("a validation study needs at least one candidate setting")
    baseline = baseline if baseline is not None else next(iter(candidates))
    if baseline not in candidates:
        raise ValueError(f"baseline {baseline!r} is not a candidate: {', '.join(candidates)}")
    keys, configs = [], []
    for name, changes in candidates.items():
        for base in sets:
            for seed in seeds:
                values = {**base.to_dict(), **dict(changes), "seed": int(seed)}
                configs.append(ExperimentConfig.from_dict(values))
                keys.append((name, set_name(base), int(seed)))
    results = run_sweep(
        configs, executor=executor, runs_dir=runs_dir, progress=progress, test=False
    )
    rows = []
    for (name, study_set, seed), result in zip(keys, results):
        vals = {k: v for k, v in result.metrics.items() if k.startswith("val_")}
        rows.append({"candidate": name, "set": study_set, "seed": seed, **vals})
    table = pd.DataFrame(rows)
    summary = summarise(table, baseline)
    chosen = str(summary["val_auroc"].idxmax())
    runs = {k: r.out_dir for k, r in zip(keys, results)}
    stored = {k: r.config for k, r in zip(keys, results)}
    return Selection(
        table, summary, chosen, runs, stored, executor, Path(runs_dir) if runs_dir else None
    )


def summarise(table: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Per candidate: mean validation AUROC, per set, and paired changes against ``baseline``."""
    means = table.groupby("candidate", sort=False)["val_auroc"].mean()
    per_set = table.pivot_table(index="candidate", columns="set", values="val_auroc", sort=False)
    base = table[table["candidate"] == baseline].set_index(["set", "seed"])["val_auroc"]
    rows = []
    for name in means.index:
        own = table[table["candidate"] == name].set_index(["set", "seed"])["val_auroc"]
        diff = (own - base.reindex(own.index)).dropna()
        up, down = int((diff > 0).sum()), int((diff < 0).sum())
        p = binomtest(up, up + down).pvalue if up + down else 1.0
        rows.append({"candidate": name, "up": up, "down": down, "sign_p": round(float(p), 4)})
    paired = pd.DataFrame(rows).set_index("candidate")
    summary = pd.concat([means.rename("val_auroc"), per_set.loc[means.index], paired], axis=1)
    summary.index.name = "candidate"
    return summary


def final_evaluation(
    selection: Selection, names: Sequence[str] | None = None, progress: bool = False
) -> pd.DataFrame:
    """The test metrics of the runs of ``names`` (default: the chosen one), evaluated once.

    Each run's trained checkpoint is scored on its test set without training again; its
    results folder then holds the test metrics and ``scores.csv`` beside the validation.

    Returns:
        One row per candidate, set and seed: the validation AUROC and the test metrics.
    """
    from adtr_core.runs.sweep import run_sweep

    names = list(names) if names is not None else [selection.chosen]
    unknown = sorted(set(names) - {k[0] for k in selection.runs})
    if unknown:
        raise ValueError(f"not candidates of this study: {', '.join(unknown)}")
    keys = [k for k in selection.runs if k[0] in names]
    results = run_sweep(
        [selection.configs[k] for k in keys],
        executor=selection.executor,
        runs_dir=selection.runs_dir,
        progress=progress,
    )
    rows = []
    for (name, study_set, seed), result in zip(keys, results):
        keep = {k: result.metrics.get(k) for k in ("val_auroc", *METRIC_KEYS)}
        rows.append({"candidate": name, "set": study_set, "seed": seed, **keep})
    return pd.DataFrame(rows)
