"""Result tables: per-category detection and localization metrics (the paper's Tables 1-2).

:func:`per_category_metric_table`, :func:`add_paper_row`, :func:`long_form`,
:func:`per_category_heatmap`, :func:`metric_panels`: per-category tables in percent with a
``mean`` row, a heat-map figure of them, and one figure panel per metric;
:func:`per_method_metric_table`: one category, one row per method; :func:`run_summary`: one
run in one row.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from adtr_core.figures.reporting.paper import METRIC_LABELS, PAPER_LABEL, paper_numbers_for
from adtr_core.runs.config import ExperimentConfig
from adtr_core.runs.results import RunResult


def metrics_by_category(results: Sequence[RunResult]) -> dict[str, dict[str, Any]]:
    """``{category: metrics}`` of a list of runs (one per category)."""
    out: dict[str, dict[str, Any]] = {}
    for run in results:
        category = str(run.metrics.get("category", run.config.category))
        if category in out:
            raise ValueError(f"two runs for category {category!r}: pass one run per category")
        out[category] = dict(run.metrics)
    return out


def column_name(method: str, metric: str, several_metrics: bool) -> str:
    """Column label: the method alone, or ``"<method> <metric label>"``."""
    return f"{method} {METRIC_LABELS.get(metric, metric)}" if several_metrics else method


def per_category_metric_table(
    methods: Mapping[str, Mapping[str, Mapping[str, Any]]],
    metrics: Sequence[str] = ("image_auroc",),
    percent: bool = True,
    kinds: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Per-category table of one or more metrics for several methods, with mean rows.

    Args:
        methods: ``{method: {category: metrics dict}}``, e.g. ``{"ADTR": ..., "ADTR+": ...}``.
            Categories are listed in the order they first appear.
        metrics: metric keys; with one metric the columns are the method names, with several
            they are ``"<method> <metric label>"`` grouped by metric.
        percent: multiply by 100 (the paper's unit).
        kinds: ``{category: kind of data}`` (:func:`category_kinds`, e.g. real MVTec AD or
            synthetic defects). Each row is then labelled ``"<category> (<kind>)"``, and with
            several kinds every kind gets its own ``"mean (<kind>)"`` row instead of one mean
            over data of different kinds.

    Returns:
        DataFrame indexed by category plus the mean row(s) (NaN-aware means over categories).
    """
    if not methods:
        raise ValueError("no methods to tabulate: pass {method: {category: metrics}}")
    categories: list[str] = []
    for per_cat in methods.values():
        categories += [c for c in per_cat if c not in categories]
    if "mean" in categories or PAPER_LABEL in categories:
        raise ValueError('"mean" and the paper label are reserved row names; rename the category')
    scale = 100.0 if percent else 1.0
    several = len(metrics) > 1
    columns = {}
    for metric in metrics:
        for method, per_cat in methods.items():
            values = []
            for c in categories:
                v = per_cat.get(c, {}).get(metric, math.nan)
                values.append(scale * float(v) if v is not None else math.nan)
            columns[column_name(method, metric, several)] = values
    table = pd.DataFrame(columns, index=pd.Index(categories, name="category"))
    if not kinds:
        table.loc["mean"] = table.mean(axis=0, skipna=True)
        return table
    groups = [kinds.get(c, "") for c in categories]
    distinct = list(dict.fromkeys(groups))
    means = {
        f"mean ({kind})" if len(distinct) > 1 else "mean": table[[g == kind for g in groups]].mean(
            axis=0, skipna=True
        )
        for kind in distinct
    }
    table.index = pd.Index(
        [f"{c} ({g})" if g else c for c, g in zip(categories, groups)], name="category"
    )
    for label, row in means.items():
        table.loc[label] = row
    return table


def category_kinds(configs: Sequence[ExperimentConfig]) -> dict[str, str]:
    """``{category: kind of data}`` of a list of configs (see :func:`adtr_core.data.sources.data_kind`)."""
    from adtr_core.data.sources import data_kind

    return {str(cfg.category): data_kind(cfg.data) for cfg in configs}


def add_paper_row(
    table: pd.DataFrame,
    data: str,
    metrics: Sequence[str] = ("image_auroc",),
) -> pd.DataFrame:
    """Append the row ``"paper (reported)"`` with the paper's means, when the data has them.

    The row is added only for MVTec AD (and CIFAR-10) data, the sets the paper reports on;
    otherwise the table is returned unchanged (the paper has no numbers for it). Columns the
    paper does not report (the trivial baseline, AU-PRO) stay NaN. The table must be in
    percent, as returned by :func:`per_category_metric_table` with ``percent=True``.
    """
    reported = paper_numbers_for(data)
    if reported is None:
        return table
    several = len(metrics) > 1
    row = pd.Series(math.nan, index=table.columns, dtype=float)
    for method, values in reported.items():
        for metric in metrics:
            col = column_name(method, metric, several)
            if col in row.index and metric in values:
                row[col] = values[metric]
    out = table.copy()
    out.loc[PAPER_LABEL] = row
    return out


def metric_panels(
    methods: Mapping[str, Mapping[str, Mapping[str, Any]]],
    metrics: Sequence[str],
    data: str,
) -> tuple[dict[str, pd.DataFrame], dict[str, dict[str, float]]]:
    """One figure panel per metric: its per-category table and the paper's ADTR means.

    Args:
        methods: ``{method: {category: metrics dict}}``, as for
            :func:`per_category_metric_table`.
        metrics: metric keys, one panel each.
        data: the data source; the paper's means are drawn for its data only.

    Returns:
        ``(panels, references)``, both keyed by the metric's label (:data:`METRIC_LABELS`):
        ``panels[label]`` is :func:`per_category_metric_table` of that metric alone (percent,
        columns the method names, with the mean row); ``references[label]`` is
        ``{"paper <method> mean (<data>)": value}`` for the paper's ADTR and ADTR+ means of
        that metric (empty when the paper has none).
    """
    reported = paper_numbers_for(data) or {}
    panels, references = {}, {}
    for metric in metrics:
        label = METRIC_LABELS.get(metric, metric)
        panels[label] = per_category_metric_table(methods, metrics=(metric,))
        references[label] = {
            f"paper {method} mean ({data})": values[metric]
            for method, values in reported.items()
            if method.startswith("ADTR") and metric in values
        }
    return panels, references


def long_form(table: pd.DataFrame) -> pd.DataFrame:
    """Columns ``category``, ``column``, ``value`` of a :func:`per_category_metric_table`
    (for seaborn)."""
    df = table.copy()
    df.index.name = "category"
    return df.reset_index().melt(id_vars="category", var_name="column", value_name="value")


def per_category_heatmap(
    table: pd.DataFrame, title: str | None = None, vmin: float = 50.0, vmax: float = 100.0
):
    """Heat map of a :func:`per_category_metric_table` (percent), the value written in each cell.

    Args:
        table: rows categories (+ mean, + paper row), columns method/metric, values in percent.
        title: figure title (say the profile's shrinkage there).
        vmin, vmax: colour range; 50 is chance level for AUROC.

    Returns:
        The matplotlib Figure.
    """
    import textwrap

    import matplotlib.pyplot as plt
    import seaborn as sns

    table = table.select_dtypes("number")
    n_rows, n_cols = table.shape
    fig, ax = plt.subplots(figsize=(2.4 + 1.2 * n_cols, 2.2 + 0.5 * n_rows))
    sns.heatmap(
        table.astype(float),
        annot=True,
        fmt=".1f",
        cmap="viridis",
        vmin=vmin,
        vmax=vmax,
        cbar_kws={"label": "%", "fraction": 0.03, "pad": 0.02},
        linewidths=0.5,
        ax=ax,
    )
    ax.set_ylabel("")
    ax.set_xlabel("")
    ax.set_xticklabels(
        [textwrap.fill(t.get_text(), 11) for t in ax.get_xticklabels()], rotation=0, fontsize=8
    )
    ax.set_yticklabels(ax.get_yticklabels(), rotation=0)
    summary_rows = [
        i
        for i, name in enumerate(table.index)
        if name == PAPER_LABEL or str(name).startswith("mean")
    ]
    if summary_rows:
        ax.axhline(min(summary_rows), color="white", linewidth=3)
    if title:
        from adtr_core.figures.plots.maps import wrap_title

        ax.set_title(wrap_title(title, fig.get_figwidth()), fontsize=10)
    fig.tight_layout()
    return fig


def run_summary(run: RunResult) -> pd.DataFrame:
    """One-row table of a run: its metrics (percent), counts, epochs and wall time."""
    m = run.metrics
    row = {METRIC_LABELS[k]: 100.0 * float(m[k]) for k in METRIC_LABELS if k in m}
    row.update(
        {
            "epochs": len(run.history) if len(run.history) else run.config.epochs,
            "steps": run.config.steps,
            "train images": m.get("num_train"),
            "test images": m.get("num_test"),
            "anomalous test images": m.get("num_test_anomalous"),
            "wall s": float(m.get("wall_s", run.wall_s)),
        }
    )
    category = str(m.get("category", run.config.category))
    return pd.DataFrame([row], index=pd.Index([category], name="category"))


def per_method_metric_table(
    methods: Mapping[str, Mapping[str, Any]], percent: bool = True
) -> pd.DataFrame:
    """One row per method (e.g. ADTR, the trivial baseline) of one category, in percent."""
    scale = 100.0 if percent else 1.0
    rows = {
        method: {
            METRIC_LABELS[k]: scale * float(m[k]) if m.get(k) is not None else math.nan
            for k in METRIC_LABELS
        }
        for method, m in methods.items()
    }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "method"
    return table
