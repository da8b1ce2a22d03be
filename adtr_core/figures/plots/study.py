"""The fidelity study's figure (notebook 09): validation and test AUROC against optimiser steps.

One column per study set; the top row is the validation AUROC (synthetic anomalies on
held-out training images, no test label), the bottom row the test image AUROC. Each trained
model is its mean over seeds with the band from the lowest to the highest seed; each peer
is a dashed level; the chosen budget is a vertical line.
"""

from __future__ import annotations

import textwrap

import matplotlib.pyplot as plt
import pandas as pd

from adtr_core.figures.plots.ablations import PALETTE

ROWS = (("val_auroc", "validation AUROC (%)"), ("image_auroc", "test image AUROC (%)"))


def study_figure(
    curves: pd.DataFrame,
    levels: pd.DataFrame,
    budget: int | None = None,
    caption: str = "",
    labels: dict[str, str] | None = None,
):
    """The study as curves.

    Args:
        curves: :func:`adtr_core.figures.study.study_curves`.
        levels: :func:`adtr_core.figures.study.peer_levels` (set × peer, in percent).
        budget: the chosen step budget, marked in every panel (None: no mark).
        caption: text under the figure.
        labels: display names of the models.

    Returns:
        The matplotlib Figure.

    Raises:
        ValueError: no curve to draw.
    """
    if curves.empty:
        raise ValueError("study_figure: no trained run to draw")
    labels = labels or {}
    sets = list(dict.fromkeys(curves["set"]))
    models = list(dict.fromkeys(curves["model"]))
    colours = dict(zip(models, PALETTE[1:], strict=False))
    peer_colours = dict(zip(levels.columns, ("#555555", "#aaaaaa"), strict=False))
    fig, axes = plt.subplots(
        len(ROWS), len(sets), figsize=(3.2 * len(sets), 5.6), sharex="col", squeeze=False
    )
    for j, name in enumerate(sets):
        for i, (metric, ylabel) in enumerate(ROWS):
            ax = axes[i][j]
            here = curves[curves["set"] == name].dropna(subset=[metric])
            for model in models:
                rows = here[here["model"] == model]
                if rows.empty:
                    continue
                by_step = rows.groupby("step")[metric].agg(["mean", "min", "max"]) * 100
                ax.plot(
                    by_step.index,
                    by_step["mean"],
                    color=colours[model],
                    lw=1.6,
                    label=labels.get(model, model),
                    marker="." if len(by_step) < 4 else None,
                )
                ax.fill_between(
                    by_step.index,
                    by_step["min"],
                    by_step["max"],
                    color=colours[model],
                    alpha=0.18,
                    lw=0,
                )
            if metric == "image_auroc" and name in levels.index:
                for peer, level in levels.loc[name].dropna().items():
                    ax.axhline(
                        level,
                        ls="--",
                        lw=1.1,
                        color=peer_colours.get(peer, "#777777"),
                        label=labels.get(peer, peer),
                    )
            if budget is not None:
                ax.axvline(budget, ls=":", lw=1.0, color="#d62728", label="chosen budget")
            ax.axhline(50, lw=0.6, color="#cccccc")
            ax.set_ylim(40, 101)
            ax.grid(alpha=0.3)
            if i == 0:
                ax.set_title(name, fontsize=10)
            if j == 0:
                ax.set_ylabel(ylabel)
            if i == len(ROWS) - 1:
                ax.set_xlabel("optimiser steps")
    handles, names = [], []
    for ax in axes.ravel():
        for h, n in zip(*ax.get_legend_handles_labels(), strict=True):
            if n not in names:
                handles.append(h)
                names.append(n)
    fig.legend(
        handles,
        names,
        loc="upper center",
        ncol=min(len(names), 6),
        frameon=False,
        bbox_to_anchor=(0.5, 1.0),
    )
    fig.tight_layout(rect=(0, 0.07 if caption else 0, 1, 0.93))
    if caption:
        fig.text(0.01, 0.01, textwrap.fill(caption, 40 * len(sets)), fontsize=8, va="bottom")
    return fig
