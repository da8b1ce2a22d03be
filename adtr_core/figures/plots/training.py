"""Training-curve figures: the loss per epoch of one or more runs, with the learning rate.

Inputs are the history tables written by :class:`adtr_core.runs.train.Trainer` (``history.csv``;
one row per epoch with ``epoch``, ``loss``, ``lr``, ``time_s`` and any evaluation metrics).
"""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import pandas as pd

from adtr_core.figures.plots.maps import wrap_title


def _check_history(history: pd.DataFrame, label: str) -> None:
    missing = {"epoch", "loss"} - set(history.columns)
    if missing:
        raise ValueError(
            f"history {label!r} lacks column(s) {', '.join(sorted(missing))}: pass the history "
            "table of a run (RunResult.history or history.csv)"
        )
    if history.empty:
        raise ValueError(f"history {label!r} is empty: the run trained no epoch")


def plot_loss_curves(
    histories: Mapping[str, pd.DataFrame],
    title: str | None = None,
    log_y: bool = True,
    show_lr: bool = True,
):
    """Loss per epoch of one or more runs on one axis; the learning rate below.

    Args:
        histories: ``{label: history}``; each history has ``epoch`` and ``loss`` (and ``lr``).
        title: figure title (say the profile's shrinkage there).
        log_y: logarithmic loss axis when the loss spans more than a factor 10.
        show_lr: add a small panel with the learning rate when the histories have ``lr``.

    Returns:
        The matplotlib Figure.
    """
    if not histories:
        raise ValueError("no histories to plot: pass {label: history}")
    for label, history in histories.items():
        _check_history(history, label)
    has_lr = show_lr and all("lr" in h.columns for h in histories.values())
    if has_lr:
        fig, (ax, ax_lr) = plt.subplots(
            2, 1, figsize=(6.4, 4.6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
        )
    else:
        fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for label, history in histories.items():
        marker = "o" if len(history) <= 30 else None
        ax.plot(history["epoch"], history["loss"], marker=marker, markersize=3, label=label)
        if has_lr:
            ax_lr.plot(history["epoch"], history["lr"], label=label)
    losses = pd.concat([h["loss"] for h in histories.values()])
    if log_y and (losses > 0).all() and losses.max() > 10 * losses.min():
        ax.set_yscale("log")
    ax.set_ylabel("training loss")
    ax.grid(alpha=0.3)
    if len(histories) > 1:
        ax.legend(fontsize=8)
    if has_lr:
        ax_lr.set_ylabel("lr")
        ax_lr.set_xlabel("epoch")
        ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
        ax_lr.grid(alpha=0.3)
    else:
        ax.set_xlabel("epoch")
    if title:
        fig.suptitle(wrap_title(title, fig.get_figwidth()), fontsize=10)
    fig.tight_layout()
    return fig
