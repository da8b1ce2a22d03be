"""Figures of the "identical mapping" analysis (Sec. 3.2, :mod:`adtr_core.toy`).

* :func:`plot_curves`: measurements over training, mean ± std over seeds, one row per data set.
* :func:`plot_weights`: the learned ``w`` of the FC / conv layers and the attention maps, as
  heat maps.
* :func:`plot_error_maps`: per-token reconstruction error of each model on anomalous samples,
  on the token grid, beside the token mask.
* :func:`plot_sweep`: final measurements against a swept setting (where a shortcut appears).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.colors import TwoSlopeNorm
from torch import nn

from adtr_core.toy.data import ToyData
from adtr_core.toy.measures import attention_map, identity_distance, token_errors
from adtr_core.toy.models import ATTENTION_KINDS, MODEL_KINDS, MODEL_LABELS

KIND_COLORS = {
    "fc": "#1f77b4",
    "conv1x1": "#17becf",
    "conv3x3": "#2ca02c",
    "attention_query": "#d62728",
    "attention_self": "#ff7f0e",
}
KIND_STYLES = {"conv1x1": (0, (4, 2))}  # conv1x1 equals fc: dashed so both stay visible

# (metric, panel title, y scale, kinds) of the curve panels.
CURVE_PANELS = (
    ("w_dist", "distance of w from the identity\n(FC, conv)", "linear", None),
    ("diag_mass", "attention on the own token\n(solid: normal, dotted: anomalous)", "linear", None),
    ("err_pos", "reconstruction error (MSE)\n(solid: normal, dotted: anomalous)", "log", None),
    ("auroc", "detection of anomalous tokens\n(AUROC of the error)", "linear", None),
)
# Axis words for the measurements and settings (the figures never show variable names).
METRIC_LABELS = {
    "w_dist": r"$\|w-I\|_F\,/\,\|I\|_F$",
    "b_norm": r"$\|b\|$",
    "diag_mass": "diagonal mass of attention",
    "diag_mass_anom": "diagonal mass, anomalous tokens",
    "err_pos": "MSE on normal tokens",
    "err_neg": "MSE on anomalous tokens",
    "err_neg_rel": "relative error on anomalous\ntokens (0: reconstructed)",
    "auroc": "token AUROC",
}
SETTING_LABELS = {
    "epoch": "training epoch",
    "step": "training step",
    "channel_rank": "channel rank of the normal tokens",
    "weight_decay": "weight decay",
    "rank": "rank of the per-sample variation",
    "noise": "noise std",
}
# Font sizes that stay legible when a wide figure is shown at page width (the README).
LEGIBLE = {
    "font.size": 13,
    "axes.titlesize": 13,
    "axes.labelsize": 13,
    "xtick.labelsize": 12,
    "ytick.labelsize": 12,
    "legend.fontsize": 13,
}


def _words(name: str, labels: Mapping[str, str]) -> str:
    return labels.get(name, name.replace("_", " "))


def _legible(plot):
    """Draw the figure with :data:`LEGIBLE` font sizes."""

    @functools.wraps(plot)
    def wrapper(*args, **kwargs):
        with plt.rc_context(LEGIBLE):
            return plot(*args, **kwargs)

    return wrapper


def _band(ax, sub: pd.DataFrame, x: str, color: str, linestyle="-", label=None, marker=None):
    """Mean line and ± std band over seeds of ``sub["value"]`` against ``sub[x]``."""
    stats = sub.groupby(x)["value"].agg(["mean", "std"]).reset_index()
    stats["std"] = stats["std"].fillna(0.0)
    ax.plot(
        stats[x],
        stats["mean"],
        color=color,
        linestyle=linestyle,
        label=label,
        lw=1.6,
        marker=marker,
        ms=4,
    )
    ax.fill_between(
        stats[x], stats["mean"] - stats["std"], stats["mean"] + stats["std"], color=color, alpha=0.2
    )


@_legible
def plot_curves(
    curves: pd.DataFrame,
    x: str = "epoch",
    row: str = "data",
    title: str | None = None,
) -> plt.Figure:
    """Measurements over training: ``||w - I||``, attention diagonal mass, errors, AUROC.

    Args:
        curves: long-format curves of :func:`adtr_core.toy.runs.run_toy_grid` (several data sets may
            be concatenated; each value of ``row`` gets a row of panels).
        x: "epoch" or "step".
        row: column whose values give the rows.
        title: figure title.

    Returns:
        The figure (mean line, ± std band over seeds).
    """
    rows = list(dict.fromkeys(curves[row])) if row in curves else [None]
    kinds = [k for k in MODEL_KINDS if k in set(curves["kind"])]
    fig, axes = plt.subplots(
        len(rows),
        len(CURVE_PANELS),
        figsize=(4.4 * len(CURVE_PANELS), 3.4 * len(rows)),
        squeeze=False,
    )
    for r, row_value in enumerate(rows):
        sub_row = curves if row_value is None else curves[curves[row] == row_value]
        for c, (metric, panel_title, yscale, _) in enumerate(CURVE_PANELS):
            ax = axes[r, c]
            for kind in kinds:
                sub = sub_row[sub_row["kind"] == kind]
                color = KIND_COLORS.get(kind, "k")
                style = KIND_STYLES.get(kind, "-")
                if metric == "err_pos":
                    _band(ax, sub[sub["metric"] == "err_pos"], x, color, style, MODEL_LABELS[kind])
                    _band(ax, sub[sub["metric"] == "err_neg"], x, color, ":")
                elif metric == "diag_mass":
                    if kind not in ATTENTION_KINDS:
                        continue
                    _band(ax, sub[sub["metric"] == "diag_mass"], x, color, "-", MODEL_LABELS[kind])
                    _band(ax, sub[sub["metric"] == "diag_mass_anom"], x, color, ":")
                else:
                    values = sub[sub["metric"] == metric]
                    if values["value"].notna().any():
                        _band(ax, values, x, color, style, MODEL_LABELS[kind])
            ax.set_yscale(yscale)
            if metric == "auroc":
                ax.axhline(0.5, color="grey", lw=0.8, ls="--")
                ax.set_ylim(0.3, 1.02)
            if metric == "diag_mass":
                ax.set_ylim(-0.02, 1.02)
            if r == 0:
                ax.set_title(panel_title)
            quantity = _words(metric, METRIC_LABELS).split("\n")[0]
            if metric in ("err_pos", "diag_mass"):
                quantity = {"err_pos": "MSE", "diag_mass": "diagonal mass"}[metric]
            if c == 0 and row_value is not None:
                ax.set_ylabel(f"{row_value}\n{quantity}", fontweight="bold")
            else:
                ax.set_ylabel(quantity)
            if r == len(rows) - 1:
                ax.set_xlabel(_words(x, SETTING_LABELS))
            ax.grid(alpha=0.3)
    handles, labels = [], []
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 3), frameon=False)
    if title:
        fig.suptitle(title, fontsize=14)
    fig.tight_layout(rect=(0, 0.09, 1, 0.96 if title else 1))
    return fig


def _weight_image(model: nn.Module) -> np.ndarray:
    w = model.weight_matrix() if hasattr(model, "weight_matrix") else None
    return w.detach().cpu().numpy()


@_legible
def plot_weights(
    models: Mapping[str, nn.Module],
    data: ToyData,
    index: int = 0,
    title: str | None = None,
) -> plt.Figure:
    """Heat maps of the learned ``w`` (FC / conv, centre tap for 3x3) and attention maps.

    Attention maps are shown for normal test sample ``index`` and anomalous test sample
    ``index``; the anomalous positions are marked on the axes of the latter.

    Args:
        models: kind -> trained model (e.g. ``ToyResult.models``).
        data: the data the models were trained on.
        index: which test sample to show.
        title: figure title.
    """
    panels = []
    for kind in MODEL_KINDS:
        if kind not in models:
            continue
        if kind in ATTENTION_KINDS:
            a_pos = attention_map(models[kind], data.x_test_pos[index : index + 1])[0]
            a_neg = attention_map(models[kind], data.x_test_neg[index : index + 1])[0]
            d_pos = float(a_pos.diagonal().mean())
            d_anom = float(a_neg.diagonal()[data.token_mask[index]].mean())
            label_pos = f"{MODEL_LABELS[kind]}\nA on a normal sample (diag mass {d_pos:.2f})"
            label_neg = (
                f"{MODEL_LABELS[kind]}\nA on an anomalous one (diag at \u25bc: {d_anom:.2f})"
            )
            panels.append((label_pos, a_pos.numpy(), "attn"))
            panels.append((label_neg, a_neg.numpy(), "attn_neg"))
        else:
            name = "w (centre tap)" if kind == "conv3x3" else "w"
            dist = identity_distance(models[kind])
            label = (
                f"{MODEL_LABELS[kind]}: {name}\n"
                f"$\\|w-I\\|/\\|I\\|$ = {dist['w_dist']:.3g}, $\\|b\\|$ = {dist['b_norm']:.3g}"
            )
            panels.append((label, _weight_image(models[kind]), "w"))
    ncol = min(4, len(panels))
    nrow = int(np.ceil(len(panels) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 4.0 * nrow), squeeze=False)
    anom = data.token_mask[index].numpy()
    for ax, (label, img, what) in zip(axes.flat, panels):
        if what == "w":
            lim = max(float(np.abs(img).max()), 1e-6)
            im = ax.imshow(img, cmap="RdBu_r", norm=TwoSlopeNorm(0.0, -lim, lim))
            ax.set_xlabel("output channel")
            ax.set_ylabel("input channel")
        else:
            im = ax.imshow(img, cmap="viridis", vmin=0.0, vmax=1.0)
            ax.set_xlabel("key token")
            ax.set_ylabel("query token")
            if what == "attn_neg":
                pos = np.flatnonzero(anom)
                ax.plot(pos, np.full_like(pos, -1.5), "v", color="red", ms=4, clip_on=False)
                ax.set_ylim(len(anom) - 0.5, -3)
        ax.set_title(label, fontsize=11)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=14)
    fig.tight_layout()
    return fig


@_legible
def plot_error_maps(
    panels: Mapping[str, tuple[Mapping[str, nn.Module], ToyData]],
    n_samples: int = 2,
    title: str | None = None,
) -> plt.Figure:
    """Per-token reconstruction error on anomalous samples, on the token grid.

    One row per (data set, sample): the token mask (ignored tokens in orange), then each
    model's error map with the anomalous tokens outlined. Each panel has its own colour scale,
    from 0 to its maximum (written under it): the maps show where a model's error is large
    (what the AUROC ranks); the maxima tell how large it is.

    Args:
        panels: data name -> (kind -> trained model, the data), e.g.
            ``{name: (result.models, data)}``.
        n_samples: anomalous samples per data set: those with the most anomalous tokens.
        title: figure title.
    """
    rows = []
    for name, (models, data) in panels.items():
        counts = data.token_mask.sum(1)  # (M',)
        for i in torch.argsort(counts, descending=True, stable=True)[:n_samples].tolist():
            rows.append((name, models, data, i))
    kinds = [k for k in MODEL_KINDS if any(k in r[1] for r in rows)]
    fig, axes = plt.subplots(
        len(rows), len(kinds) + 1, figsize=(2.8 * (len(kinds) + 1), 2.8 * len(rows)), squeeze=False
    )
    for r, (name, models, data, i) in enumerate(rows):
        h, w = data.grid
        mask = data.token_mask[i].reshape(h, w).numpy()
        axes[r, 0].imshow(mask, cmap="gray", vmin=0, vmax=1)
        if data.token_ignore is not None:
            ign = data.token_ignore[i].reshape(h, w).numpy()
            axes[r, 0].imshow(np.ma.masked_where(~ign, ign), cmap="autumn", alpha=0.6)
        axes[r, 0].set_ylabel(f"{name}\nsample {i}", fontsize=11)
        if r == 0:
            axes[r, 0].set_title("anomalous tokens", fontsize=11)
        x = data.x_test_neg[i : i + 1]  # (1, K, C)
        errors = {
            k: token_errors(models[k], x)[0].reshape(h, w).numpy() for k in kinds if k in models
        }
        for c, kind in enumerate(kinds, start=1):
            ax = axes[r, c]
            if kind not in errors:
                ax.axis("off")
                continue
            vmax = max(float(errors[kind].max()), 1e-12)  # each panel on its own scale
            ax.imshow(errors[kind], cmap="magma", vmin=0, vmax=vmax)
            if mask.any():
                ax.contour(mask, levels=[0.5], colors="cyan", linewidths=0.8)
            ax.set_xlabel(f"max error {vmax:.2g}", fontsize=10, labelpad=1)
            if r == 0:
                ax.set_title(MODEL_LABELS[kind].replace(", ", ",\n"), fontsize=11)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=13)
    fig.tight_layout()
    return fig


@_legible
def plot_sweep(
    final: pd.DataFrame,
    x: str,
    metrics: Sequence[str] = ("auroc", "err_neg_rel"),
    hue: str = "kind",
    col: str | None = None,
    logx: bool = False,
    title: str | None = None,
) -> plt.Figure:
    """Final measurements against a swept setting, mean ± std over seeds.

    Args:
        final: output of :func:`adtr_core.toy.runs.sweep_toy`.
        x: the swept setting on the x axis.
        metrics: one panel row per metric.
        hue: lines (default: one per model kind).
        col: a second swept setting, one panel column per value.
        logx: log-scaled x axis (zeros are drawn at the smallest positive value / 10).
        title: figure title.
    """
    cols = list(dict.fromkeys(final[col])) if col else [None]
    fig, axes = plt.subplots(
        len(metrics),
        len(cols),
        figsize=(4.4 * len(cols), 3.3 * len(metrics)),
        squeeze=False,
        sharey="row",
    )
    data = final.copy()
    if logx:
        positive = data.loc[data[x] > 0, x]
        floor = positive.min() / 10 if len(positive) else 1e-3
        data[x] = data[x].where(data[x] > 0, floor)
    for r, metric in enumerate(metrics):
        for c, col_value in enumerate(cols):
            ax = axes[r, c]
            sub = data[data["metric"] == metric]
            if col:
                sub = sub[sub[col] == col_value]
            for h in dict.fromkeys(sub[hue]):
                _band(
                    ax,
                    sub[sub[hue] == h],
                    x,
                    KIND_COLORS.get(h, "k"),
                    "-",
                    MODEL_LABELS.get(h, str(h)),
                    marker="o",
                )
            if logx:
                ax.set_xscale("log")
            if metric == "auroc":
                ax.axhline(0.5, color="grey", lw=0.8, ls="--")
                ax.set_ylim(0.3, 1.02)
            if r == 0 and col:
                value = f"{col_value:g}" if isinstance(col_value, int | float) else col_value
                ax.set_title(f"{_words(col, SETTING_LABELS)} {value}")
            if c == 0:
                ax.set_ylabel(_words(metric, METRIC_LABELS))
            if r == len(metrics) - 1:
                ax.set_xlabel(_words(x, SETTING_LABELS) + (" (0 at the left end)" if logx else ""))
            ax.grid(alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 3), frameon=False)
    if title:
        fig.suptitle(title, fontsize=14)
    fig.tight_layout(rect=(0, 0.07, 1, 0.95 if title else 1))
    return fig
