"""Score-map figures: image, ground truth and score-map overlay (the paper's qualitative figure)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from adtr_core.io import atomic_path


def to_hwc(image) -> np.ndarray:
    """(3, S, S) tensor or array in [0, 1] → (S, S, 3) array for imshow."""
    arr = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    return np.clip(np.transpose(arr, (1, 2, 0)), 0, 1)


def _np(x) -> np.ndarray:
    return x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, float)


def draw_overlay(ax, image, score_map, vmin=None, vmax=None, alpha: float = 0.5):
    """Draw an image with its score map as a translucent heat map on ``ax``."""
    ax.imshow(to_hwc(image))
    im = ax.imshow(_np(score_map), cmap="jet", alpha=alpha, vmin=vmin, vmax=vmax)
    ax.set_axis_off()
    return im


def save_overlay(image, score_map, path: str | Path, title: str | None = None) -> Path:
    """Write one PNG with the image beside its score-map overlay."""
    fig, axes = plt.subplots(1, 2, figsize=(6, 3))
    axes[0].imshow(to_hwc(image))
    axes[0].set_axis_off()
    im = draw_overlay(axes[1], image, score_map)
    fig.colorbar(im, ax=axes[1], fraction=0.046)
    if title:
        fig.suptitle(title)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def score_map_grid(rows: list[dict], title: str | None = None, vmax: float | None = None):
    """The qualitative figure: one row per example, columns image / ground truth / overlay.

    Args:
        rows: dicts with ``image`` (3, S, S), ``mask`` (S, S) or None, ``map`` (S, S) and a
            ``label`` string for the row.
        vmax: common upper limit of the colour scale (None: per-row maximum).

    Returns:
        The matplotlib Figure.
    """
    fig, axes = plt.subplots(len(rows), 3, figsize=(7.5, 2.5 * len(rows)), squeeze=False)
    for ax_row, row in zip(axes, rows):
        ax_row[0].imshow(to_hwc(row["image"]))
        ax_row[0].set_ylabel(row.get("label", ""), rotation=0, ha="right", va="center")
        mask = row.get("mask")
        ax_row[1].imshow(
            _np(mask) if mask is not None else np.zeros(row["map"].shape),
            cmap="gray",
            vmin=0,
            vmax=1,
        )
        draw_overlay(ax_row[2], row["image"], row["map"], vmin=0, vmax=vmax)
        for ax in ax_row[:2]:
            ax.set_xticks([])
            ax.set_yticks([])
    for ax, name in zip(axes[0], ("image", "ground truth", "score map")):
        ax.set_title(name)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
