"""The t-SNE figure of feature-difference vectors (the paper's Fig. 5), see ``adtr_core.figures.embedding``."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from adtr_core.figures.plots.ablations import add_caption

GROUP_COLOURS = {"normal": "#1f77b4", "anomalous": "#d62728"}


def tsne_figure(
    embedding: np.ndarray,
    groups: np.ndarray,
    scores: np.ndarray,
    title: str | None = None,
    caption: str | None = None,
):
    """Two panels over the same 2-D embedding: coloured by group, and by anomaly score.

    Args:
        embedding: (M, 2) t-SNE coordinates.
        groups: M group names ("normal" / "anomalous").
        scores: (M,) position scores ``||d(:, u)||_2``.
        title: figure title.
        caption: a smaller line under the panels (data, profile shrinkage).

    Returns:
        The matplotlib Figure.
    """
    emb = np.asarray(embedding, dtype=float)
    grp = np.asarray(groups)
    sc = np.asarray(scores, dtype=float)
    if emb.ndim != 2 or emb.shape[1] != 2:
        raise ValueError(f"embedding must be (M, 2); got shape {emb.shape}")
    if not len(emb) == len(grp) == len(sc):
        raise ValueError(f"lengths differ: {len(emb)} points, {len(grp)} groups, {len(sc)} scores")
    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    for name in [g for g in GROUP_COLOURS if g in set(grp)] + sorted(set(grp) - set(GROUP_COLOURS)):
        sel = grp == name
        axes[0].scatter(
            emb[sel, 0],
            emb[sel, 1],
            s=8,
            alpha=0.6,
            c=GROUP_COLOURS.get(name),
            label=f"{name} positions ({int(sel.sum())})",
            linewidths=0,
        )
    axes[0].legend(loc="best", markerscale=2, fontsize=9)
    axes[0].set_title("by ground truth")
    order = np.argsort(sc)  # high scores drawn on top
    points = axes[1].scatter(
        emb[order, 0], emb[order, 1], s=8, c=sc[order], cmap="viridis", linewidths=0
    )
    fig.colorbar(points, ax=axes[1], label=r"score $\|d(:,u)\|_2$")
    axes[1].set_title("by anomaly score")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel("t-SNE 1")
        ax.set_ylabel("t-SNE 2")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    add_caption(fig, caption)
    return fig
