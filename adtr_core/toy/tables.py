"""Summary tables of Sec. 3.2 runs: final-epoch rows, mean and std over seeds, as text.

:func:`final_epoch_table` keeps the last recorded epoch of every run of long-format curves,
:func:`mean_std_table` reduces them to the mean and standard deviation over seeds per model
(and any other grouping), and :func:`mean_std_text_table` writes that table as
``"mean ± std"`` strings for Markdown.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from adtr_core.toy.models import MODEL_KINDS

# Columns of the summary table, in this order.
SUMMARY_METRICS = (
    "err_pos",
    "err_neg",
    "err_ratio",
    "err_neg_rel",
    "auroc",
    "w_dist",
    "b_norm",
    "attn_dist",
    "diag_mass",
    "diag_mass_anom",
)


def final_epoch_table(curves: pd.DataFrame) -> pd.DataFrame:
    """The rows of the last recorded epoch of every run (kind x seed x any label columns)."""
    keys = [c for c in curves.columns if c not in ("epoch", "step", "metric", "value")]
    last = curves.groupby(keys, dropna=False)["epoch"].transform("max")
    return curves[curves["epoch"] == last].reset_index(drop=True)


def mean_std_table(
    curves: pd.DataFrame,
    metrics: Sequence[str] = SUMMARY_METRICS,
    by: Sequence[str] = ("kind",),
) -> pd.DataFrame:
    """Final-epoch mean and standard deviation over seeds.

    Args:
        curves: long-format curves (:mod:`adtr_core.toy.runs`: ``run_toy``, ``run_toy_grid``,
            ``sweep_toy``).
        metrics: metrics to keep (columns, in this order).
        by: grouping columns (``"kind"`` plus any swept settings).

    Returns:
        One row per group, columns ``<metric>_mean`` and ``<metric>_std`` (sample std over
        seeds, ``ddof=1``; 0 with one seed) plus ``n_seeds``.
    """
    final = final_epoch_table(curves)
    final = final[final["metric"].isin(metrics)]
    by = list(by)
    grouped = final.groupby([*by, "metric"], dropna=False, sort=False)["value"]
    stats = grouped.agg(["mean", "std", "count"]).reset_index()
    stats["std"] = stats["std"].fillna(0.0)
    wide = stats.pivot_table(
        index=by, columns="metric", values=["mean", "std"], dropna=False, sort=False
    )
    table = pd.DataFrame(index=wide.index)
    for m in metrics:
        if ("mean", m) in wide.columns:
            table[f"{m}_mean"] = wide[("mean", m)]
            table[f"{m}_std"] = wide[("std", m)]
    table["n_seeds"] = stats.groupby(by, sort=False)["count"].max()
    if "kind" in by:  # models in MODEL_KINDS order within each group of the other keys
        keys = table.index.to_frame(index=False)
        ranks = []
        for col in by:
            first_seen = {v: i for i, v in enumerate(dict.fromkeys(keys[col]))}
            if col == "kind":
                first_seen = {k: i for i, k in enumerate(MODEL_KINDS)}
            ranks.append(keys[col].map(first_seen).fillna(len(first_seen)).to_numpy())
        table = table.iloc[np.lexsort(ranks[::-1])]
    return table


def mean_std_text_table(
    table: pd.DataFrame, digits: int = 3, flat_index: bool = True
) -> pd.DataFrame:
    """``<metric>_mean`` / ``<metric>_std`` column pairs as ``"mean ± std"`` strings (Markdown).

    NaN pairs (a quantity the model does not have) become an empty string. With
    ``flat_index`` a multi-level index (e.g. data, kind) becomes one label ``"data / kind"``.
    """
    out = pd.DataFrame(index=table.index)
    for col in table.columns:
        if col.endswith("_mean"):
            name = col[: -len("_mean")]
            mean, std = table[col], table[f"{name}_std"]
            out[name] = [
                "" if not np.isfinite(m) else f"{m:.{digits}g} ± {s:.1g}" for m, s in zip(mean, std)
            ]
    if "n_seeds" in table.columns:
        out["n_seeds"] = table["n_seeds"].astype(int)
    if flat_index and isinstance(out.index, pd.MultiIndex):  # readable Markdown row labels
        names = [str(n) for n in out.index.names]
        out.index = pd.Index(
            [" / ".join(str(v) for v in key) for key in out.index], name=" / ".join(names)
        )
    return out
