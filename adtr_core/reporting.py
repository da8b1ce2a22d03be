"""Result tables: per-category detection and localization metrics (the paper's Tables 1-2).

This module turns finished runs (:class:`adtr_core.experiment.RunResult`) into the tables
the notebooks save, and holds the paper's reported numbers so that they can be printed
*beside* ours, never mixed with them:

* :data:`PAPER_NUMBERS`: the means the paper reports (METHOD.md §5), in percent, transcribed
  by hand. They are MVTec AD (and CIFAR-10) numbers: :func:`paper_row` returns them only
  when the data is MVTec AD (or CIFAR-10); on any other data the paper has no numbers.
* :func:`category_configs` / :func:`plus_configs`: the ADTR runs of every category and the
  ADTR+ runs started from them (``loss="px"`` on confetti anomalies, ``init_from`` = the ADTR
  results folder), built the same way by every notebook so that equal settings give equal
  configs, hence shared results folders; :func:`image_label_configs`: ADTR+ with image
  labels only (``loss="img"``).
* :func:`mean_image_baseline_metrics`: the trivial baseline (per-pixel distance to the mean
  training image), evaluated with the same metrics; reported next to ADTR's to show how much
  of a data set a model-free score already solves.
* :func:`peer_configs` / :func:`peer_methods`: the runs of anomalib's PaDiM and PatchCore
  (:mod:`adtr_core.peers`) on the same categories, image size, backbone and weights as the
  ADTR configs, as table rows next to ADTR's.
* :func:`per_category_metric_table`, :func:`add_paper_row`, :func:`long_form`,
  :func:`per_category_heatmap`, :func:`metric_panels`: per-category tables in percent with a
  ``mean`` row, a heat-map figure of them, and one figure panel per metric;
  :func:`per_method_metric_table`: one category, one row per method.
* :func:`one_class_table` / :func:`one_class_panel`: the one-class protocol (Table 3), one
  row per normal class; :func:`tsne_group_summary`: the per-group numbers beside the t-SNE
  figure (Fig. 5).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from adtr_core.experiment import ExperimentConfig, RunResult, open_split
from adtr_core.metrics import compute_metrics

PAPER_LABEL = "paper (reported)"
"""Index label of the row holding the paper's reported means."""

METRIC_LABELS = {
    "image_auroc": "image AUROC",
    "pixel_auroc": "pixel AUROC",
    "pixel_aupro": "AU-PRO",
}
"""Display names of the metric keys of :func:`adtr_core.metrics.compute_metrics`."""

PAPER_NUMBERS: dict[str, dict[str, dict[str, float]]] = {
    # The paper's reported MEANS in percent (METHOD.md §5, Tables 1-3 of the paper), per data
    # set, per method, per metric. The paper reports no AU-PRO; its per-category rows are not
    # transcribed here.
    "mvtec": {
        "ADTR": {"image_auroc": 96.4, "pixel_auroc": 97.2},
        "ADTR+": {"image_auroc": 96.9, "pixel_auroc": 97.5},
        "best baseline (TS / SPADE)": {"image_auroc": 92.5, "pixel_auroc": 96.0},
    },
    "cifar10": {
        "ADTR": {"image_auroc": 94.7},
        "ADTR+": {"image_auroc": 96.1},
        "best baseline (KDAD)": {"image_auroc": 87.2},
    },
}

PAPER_ABLATION_PIXEL_AUROC: dict[str, float] = {
    # The paper's Table 4 (MVTec AD pixel AUROC, percent), as reported.
    "CNN reconstruction": 94.4,
    "transformer without attention": 94.8,
    "transformer without query embedding": 94.2,
    "ADTR (attention + query embedding)": 97.2,
    "reconstruct pixels instead of features": 91.3,
    "backbone ResNet-18": 95.3,
    "backbone ResNet-34": 95.7,
    "backbone EffNet-B0": 96.4,
    "backbone EffNet-B4": 97.2,
    "last layer only": 96.0,
    "multi-scale": 97.2,
}

_DATA_NAMES = {"mvtec": "MVTec AD", "cifar10": "CIFAR-10"}


# --------------------------------------------------------------------------- configs


def category_configs(
    categories: Sequence[str], data: str = "mvtec", data_root: str | None = None, **settings: Any
) -> list[ExperimentConfig]:
    """One normal-only ADTR config per category, all with the same settings.

    Args:
        categories: the categories to run, in table order.
        data: the data source (``mvtec``, ``demo``, ``folder``...).
        data_root: its root folder (None: the configured root, else the embedded data).
        **settings: :class:`ExperimentConfig` overrides (image_size, steps, hidden_dim...).

    Raises:
        ValueError: ``categories`` is empty, or a setting is not an ExperimentConfig field.
    """
    if not categories:
        raise ValueError("no categories to run: pass at least one category (or None for all)")
    return [
        ExperimentConfig.from_dict(
            {**settings, "data": data, "data_root": data_root, "category": c}
        )
        for c in categories
    ]


def table_configs(
    data: str = "auto", categories: Sequence[str] | None = None, **settings: Any
) -> tuple[list[ExperimentConfig], str]:
    """The configs of a table over categories that may come from several data sources.

    ``data="auto"`` covers the embedded real bottle category and the demo textures (or
    MVTec AD alone when ``MVTEC_ROOT`` is set: :func:`adtr_core.data.sources.resolve_data_sources`).

    Args:
        data: ``"auto"`` or one data source.
        categories: the categories to run, in table order, each taken from the first source
            that has it; None: every category of every source.
        **settings: :class:`ExperimentConfig` overrides, equal for all categories.

    Returns:
        ``(configs, note)``: one config per category, and the sources' notes for captions.

    Raises:
        ValueError: a category that no source has (the message lists the ones there are).
    """
    from adtr_core.data.sources import list_categories, resolve_data_sources

    sources = resolve_data_sources(data)
    available = [(s, root, list_categories(s, root)) for s, root, _ in sources]
    wanted = list(categories) if categories is not None else [c for *_, cs in available for c in cs]
    configs = []
    for category in wanted:
        found = next(((s, root) for s, root, cs in available if str(category) in cs), None)
        if found is None:
            known = ", ".join(c for *_, cs in available for c in cs)
            raise ValueError(f"unknown category {category!r} for data {data!r}; there are: {known}")
        configs += category_configs([str(category)], data=found[0], data_root=found[1], **settings)
    return configs, "; ".join(note for *_, note in sources)


def plus_configs(base: Sequence[RunResult], **overrides: Any) -> list[ExperimentConfig]:
    """ADTR+ configs: each normal-only run continued with L_px on confetti anomalies.

    Args:
        base: finished normal-only runs; each ADTR+ run starts from its ``out_dir``.
        **overrides: further changes, typically ``epochs`` (the paper: 300 more epochs)
            and ``lr_milestones``.

    Returns:
        One config per base run: its config with ``loss="px"``, ``anomalies="confetti"``,
        ``init_from`` = the base run's results folder, and ``overrides`` applied.
    """
    configs = []
    for run in base:
        if run.config.loss != "norm":
            raise ValueError(
                f"ADTR+ starts from a normal-only run, but {run.out_dir} used loss="
                f"{run.config.loss!r}; pass the results of the loss='norm' sweep"
            )
        values = {
            **run.config.to_dict(),
            "loss": "px",
            "anomalies": "confetti",
            "init_from": str(run.out_dir),
            **overrides,
        }
        configs.append(ExperimentConfig.from_dict(values))
    return configs


def image_label_configs(plus: Sequence[ExperimentConfig]) -> list[ExperimentConfig]:
    """The ADTR+ configs of :func:`plus_configs` trained with image labels only (L_img).

    Each is its ADTR+ config with ``loss="img"`` and ``anomalies=None``, which picks the
    outliers by data: CIFAR-100 images for CIFAR-10 (outlier exposure), else confetti.
    """
    return [
        ExperimentConfig.from_dict({**cfg.to_dict(), "loss": "img", "anomalies": None})
        for cfg in plus
    ]


def image_label_note(configs: Sequence[ExperimentConfig]) -> str:
    """Which outliers the runs of :func:`image_label_configs` saw, for captions."""
    if not configs:
        return "L_img not run"
    if configs[0].anomalies == "cifar100":
        return "L_img outliers: CIFAR-100 images (outlier exposure, the paper's CIFAR-10 setting)"
    return (
        "L_img outliers: the confetti images, with their image label only "
        "(CIFAR-100 outliers are used when the data is CIFAR-10)"
    )


# --------------------------------------------------------------------------- trivial baseline


def mean_image_baseline_metrics(cfg: ExperimentConfig) -> dict[str, float]:
    """Metrics of the trivial baseline on the test set of ``cfg``'s category.

    The baseline (:class:`adtr_core.baselines.MeanImageBaseline`) scores each pixel by its
    distance to the mean training image; image scores use the same reduction as ADTR's
    (``cfg.score_mode``, ``cfg.pool_size``).

    Returns:
        ``image_auroc``, ``pixel_auroc``, ``pixel_aupro`` (NaN without masks) and ``category``.
    """
    from adtr_core.baselines import MeanImageBaseline
    from adtr_core.experiment import resolve_category
    from adtr_core.scoring import image_scores

    train, test = open_split(cfg, "train"), open_split(cfg, "test")
    baseline = MeanImageBaseline()
    baseline.fit(torch.stack([train[i]["image"] for i in range(len(train))]))  # (N, 3, S, S)
    items = [test[i] for i in range(len(test))]
    images = torch.stack([it["image"] for it in items])  # (M, 3, S, S)
    maps = torch.as_tensor(baseline.score_maps(images)).float()  # (M, S, S)
    scores = image_scores(maps, cfg.score_mode, cfg.pool_size)  # (M,)
    labels = np.array([int(it["label"]) for it in items])
    masks = torch.stack([it["mask"][0] for it in items]).numpy() if test.has_masks else None
    metrics = compute_metrics(
        labels, scores.numpy(), masks=masks, maps=maps.numpy() if masks is not None else None
    )
    metrics["category"] = resolve_category(cfg)
    return metrics


# --------------------------------------------------------------------------- peers

# What a peer run shares with the ADTR run beside it; every other field keeps its default,
# so the peers' results folders do not change with ADTR's training settings.
PEER_SHARED_FIELDS = (
    "data",
    "data_root",
    "category",
    "image_size",
    "backbone",
    "backbone_weights",
    "seed",
    "device",
)


def peer_configs(base: Sequence[ExperimentConfig], model: str) -> list[ExperimentConfig]:
    """The ``model`` run ("padim" or "patchcore") of each ADTR config in ``base``.

    Each has the ADTR config's data, category, image size, backbone, weights, seed and
    device, and the peer's own layers (:data:`adtr_core.peers.DEFAULT_STAGES`).
    """
    from adtr_core.peers import PEER_MODELS

    if model not in PEER_MODELS:
        raise ValueError(f"unknown peer {model!r}: choose one of {', '.join(PEER_MODELS)}")
    return [
        ExperimentConfig.from_dict(
            {"model": model, **{k: getattr(cfg, k) for k in PEER_SHARED_FIELDS}}
        )
        for cfg in base
    ]


def peer_methods(
    base: Sequence[ExperimentConfig], executor: str = "local", runs_dir: str | None = None
) -> dict[str, dict[str, dict[str, Any]]]:
    """``{"PaDiM": {category: metrics}, "PatchCore": {...}}`` for
    :func:`per_category_metric_table`.

    Runs (or loads, when finished) the peer runs of :func:`peer_configs` with
    :func:`adtr_core.sweep.run_sweep`.
    """
    from adtr_core.peers import PEER_LABELS
    from adtr_core.sweep import run_sweep

    return {
        label: metrics_by_category(
            run_sweep(peer_configs(base, model), executor=executor, runs_dir=runs_dir)
        )
        for model, label in PEER_LABELS.items()
    }


# --------------------------------------------------------------------------- tables


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


def paper_numbers_for(data: str) -> dict[str, dict[str, float]] | None:
    """The paper's reported means for a data source, or None when the paper has none."""
    return PAPER_NUMBERS.get(data)


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


def paper_note(data: str) -> str:
    """One sentence saying whether the paper's numbers apply to ``data``."""
    reported = paper_numbers_for(data)
    if reported is None:
        return (
            f"The paper reports no numbers for this data ({data}): its numbers are MVTec AD "
            "and CIFAR-10 means, so no paper row is shown."
        )
    parts = [
        f"{m}: " + ", ".join(f"{METRIC_LABELS.get(k, k)} {v:.1f}" for k, v in vals.items())
        for m, vals in reported.items()
    ]
    return (
        f'Row "{PAPER_LABEL}": the means the paper reports on {_DATA_NAMES[data]} '
        f"(transcribed, not recomputed): {'; '.join(parts)}."
    )


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
        from adtr_core.plots.maps import wrap_title

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


PAPER_SETTINGS: dict[str, Any] = {
    # The paper's MVTec AD settings (METHOD.md §4); the "paper" profile uses them.
    "image_size": 256,
    "backbone": "efficientnet_b4",
    "hidden_dim": 256,
    "dim_feedforward": 1024,
    "num_encoder_layers": 4,
    "num_decoder_layers": 4,
    "num_heads": 8,
    "epochs": 500,
    "batch_size": 16,
    "lr": 1e-4,
    "weight_decay": 1e-4,
    "lr_milestones": (400,),
}
PAPER_PLUS_EPOCHS = 300  # ADTR+: 300 more epochs with L_px on confetti anomalies

_SETTING_NAMES = {
    "image_size": "image size",
    "backbone": "backbone",
    "hidden_dim": "width",
    "dim_feedforward": "FFN",
    "num_encoder_layers": "encoder layers",
    "num_decoder_layers": "decoder layers",
    "num_heads": "heads",
    "epochs": "epochs",
    "batch_size": "batch",
    "lr": "lr",
    "weight_decay": "weight decay",
    "lr_milestones": "lr milestones",
}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return "/".join(str(v) for v in value)
    return str(value)


def settings_note(cfg: ExperimentConfig, paper_epochs: int | None = None) -> str:
    """Where a run departs from the paper's settings, for figure captions.

    Args:
        cfg: the run's config.
        paper_epochs: the paper's epoch count for this kind of run (default 500; pass
            :data:`PAPER_PLUS_EPOCHS` for ADTR+).

    Returns:
        ``"paper settings"`` or e.g. ``"shrunk from the paper: image size 128 (paper 256),
        epochs 20 (paper 500), ..."``.
    """
    paper = dict(PAPER_SETTINGS)
    if paper_epochs is not None:
        paper["epochs"] = paper_epochs
        paper["lr_milestones"] = cfg.lr_milestones  # ADTR+'s schedule is not given
    changed = []
    if cfg.steps is not None:  # a budget in optimiser steps replaces the epoch counts
        paper_milestones = paper.pop("lr_milestones")
        milestones = [m for m in cfg.lr_milestones if m < cfg.steps]
        ours = f"{cfg.steps} steps" + (
            f", lr x{cfg.lr_gamma:g} at step {_fmt(milestones)}" if milestones else ""
        )
        theirs = f"{paper.pop('epochs')} epochs" + (
            f", lr x0.1 at epoch {_fmt(paper_milestones)}" if paper_epochs is None else ""
        )
        changed.append(f"{ours} (paper {theirs})")
    for key, ref in paper.items():
        ours = getattr(cfg, key)
        if _fmt(ours) != _fmt(ref):
            changed.append(f"{_SETTING_NAMES[key]} {_fmt(ours)} (paper {_fmt(ref)})")
    if not changed:
        return "paper settings"
    return "shrunk from the paper: " + ", ".join(changed)


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


# --------------------------------------------------------------------------- one-class (Table 3)

ONE_CLASS_AUROC = "image AUROC (%)"
"""Column of :func:`one_class_table` holding the image AUROC."""

ONE_CLASS_PAPER_LABEL = "paper ADTR (reported)"
"""Index label of :func:`one_class_table`'s row of the paper's mean (CIFAR-10 only)."""


def one_class_paper_auroc(data: str) -> float | None:
    """The paper's ADTR mean image AUROC (percent) of the one-class protocol, or None.

    The paper reports the protocol on CIFAR-10 only; on other data it has no number.
    """
    return PAPER_NUMBERS["cifar10"]["ADTR"]["image_auroc"] if data == "cifar10" else None


def one_class_table(results: Sequence[RunResult], data: str) -> pd.DataFrame:
    """Table 3: one row per normal class, then the mean and (on CIFAR-10) the paper's mean.

    Args:
        results: one finished run per normal class, in table order.
        data: the data source (the paper's row is added for ``"cifar10"`` only).

    Returns:
        DataFrame of floats indexed by ``"normal class"``: :data:`ONE_CLASS_AUROC`
        (percent), ``train images``, ``test images``, ``wall s`` (NaN when not recorded);
        the row ``mean`` (the mean of every column) and, when the paper has a number, the
        row :data:`ONE_CLASS_PAPER_LABEL` (its image AUROC, NaN elsewhere).
    """
    table = pd.DataFrame(
        {
            "normal class": [str(r.metrics["category"]) for r in results],
            ONE_CLASS_AUROC: [100 * r.metrics["image_auroc"] for r in results],
            "train images": [r.metrics["num_train"] for r in results],
            "test images": [r.metrics["num_test"] for r in results],
            "wall s": [r.metrics.get("wall_s", float("nan")) for r in results],
        }
    ).set_index("normal class")
    table = table.astype(float)  # the mean row is fractional in every column
    table.loc["mean"] = table.mean(axis=0)
    paper = one_class_paper_auroc(data)
    if paper is not None:
        table.loc[ONE_CLASS_PAPER_LABEL] = [paper] + [float("nan")] * 3
    return table


def one_class_panel(table: pd.DataFrame, label: str) -> tuple[pd.DataFrame, dict[str, float]]:
    """The bars and reference lines of the one-class figure, from :func:`one_class_table`.

    Args:
        table: a :func:`one_class_table`.
        label: the name of the bars (the column of the returned frame).

    Returns:
        ``(per_class, references)``: the image AUROC of each normal class (the table without
        its mean and paper rows) in one column ``label``, and ``{"our mean <m>": m}`` plus,
        when the table has the paper's row, ``{"paper ADTR mean on CIFAR-10 (<p>)": p}``.
    """
    classes = [c for c in table.index if c not in ("mean", ONE_CLASS_PAPER_LABEL)]
    per_class = table.loc[classes, [ONE_CLASS_AUROC]]
    per_class.columns = [label]
    mean = table.loc["mean", ONE_CLASS_AUROC]
    references = {f"our mean {mean:.1f}": mean}
    if ONE_CLASS_PAPER_LABEL in table.index:
        paper = table.loc[ONE_CLASS_PAPER_LABEL, ONE_CLASS_AUROC]
        references[f"paper ADTR mean on CIFAR-10 ({paper:.1f})"] = paper
    return per_class, references


# --------------------------------------------------------------------------- t-SNE (Fig. 5)


def tsne_group_summary(embedding: np.ndarray, positions: Any, k: int = 10) -> pd.DataFrame:
    """Per group of embedded positions: its size, score statistics and neighbour agreement.

    Args:
        embedding: (M, 2) t-SNE coordinates of the positions.
        positions: the embedded :class:`adtr_core.embedding.PositionSet` (M positions).
        k: neighbours of :func:`adtr_core.embedding.group_agreement`.

    Returns:
        DataFrame indexed by ``"positions of"`` (normal, anomalous): ``positions``, ``mean
        score``, ``median score`` and ``share of <k> nearest neighbours in own group``.
    """
    from adtr_core.embedding import group_agreement

    counts = positions.counts()
    groups = list(counts)
    agreement = group_agreement(embedding, positions.groups, k=k)
    return pd.DataFrame(
        {
            "positions": [counts[g] for g in groups],
            "mean score": [float(positions.scores[positions.groups == g].mean()) for g in groups],
            "median score": [
                float(np.median(positions.scores[positions.groups == g])) for g in groups
            ],
            f"share of {k} nearest neighbours in own group": [agreement[g] for g in groups],
        },
        index=pd.Index(groups, name="positions of"),
    )
