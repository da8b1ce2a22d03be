"""Score-map figures: image, ground truth and score-map overlay (the paper's qualitative figure).

* :func:`draw_overlay`, :func:`save_overlay`: one image with its score map as a heat map.
* :func:`score_map_grid`: rows of image / ground truth / overlay.
* :func:`pick_per_defect`, :func:`pick_best_worst`: which test images to show, chosen from a
  run's per-image score table (``RunResult.scores``: path, defect, label, score).
* :func:`example_rows`: the rows of :func:`score_map_grid` for chosen test images of a run,
  reading the images and masks from the run's test split and the maps from
  ``RunResult.score_maps`` (same order as ``RunResult.scores``).
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from adtr_core.io import atomic_path

PICKS = ("median", "max", "min")


def wrap_title(title: str, fig_width_in: float, fontsize: float = 10) -> str:
    """Wrap each line of a title to the figure's width (about 1.9 * 72 / fontsize chars/inch)."""
    width = max(30, int(fig_width_in * 1.9 * 72 / fontsize / 1.4))
    return "\n".join(textwrap.fill(line, width) for line in title.split("\n"))


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
            ``label`` string for the row; optionally ``vmin`` / ``vmax`` (this row's colour
            scale, e.g. one per category; default 0 / the grid's ``vmax``) and ``note`` (text written under the overlay,
            e.g. the image score).
        vmax: common upper limit of the colour scale for rows without their own ``vmax``
            (None: per-row maximum).

    Returns:
        The matplotlib Figure.
    """
    if not rows:
        raise ValueError("score_map_grid needs at least one row (image, mask, map, label)")
    fig, axes = plt.subplots(len(rows), 3, figsize=(7.8, 2.45 * len(rows)), squeeze=False)
    for ax_row, row in zip(axes, rows):
        score_map = _np(row["map"])
        ax_row[0].imshow(to_hwc(row["image"]))
        ax_row[0].set_ylabel(row.get("label", ""), rotation=0, ha="right", va="center", fontsize=9)
        mask = row.get("mask")
        ax_row[1].imshow(
            _np(mask) if mask is not None else np.zeros(score_map.shape),
            cmap="gray",
            vmin=0,
            vmax=1,
        )
        im = draw_overlay(
            ax_row[2], row["image"], score_map, vmin=row.get("vmin", 0), vmax=row.get("vmax", vmax)
        )
        cbar = fig.colorbar(im, ax=ax_row[2], fraction=0.046, pad=0.03)
        cbar.ax.tick_params(labelsize=7)
        if row.get("note"):
            ax_row[2].text(
                0.5,
                -0.04,
                row["note"],
                transform=ax_row[2].transAxes,
                ha="center",
                va="top",
                fontsize=8,
            )
        for ax in ax_row[:2]:
            ax.set_xticks([])
            ax.set_yticks([])
    for ax, name in zip(axes[0], ("image", "ground truth", "score map")):
        ax.set_title(name, fontsize=10)
    if title:
        fig.suptitle(wrap_title(title, fig.get_figwidth()), fontsize=10)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- choosing examples


def _pick(group: pd.DataFrame, pick: str) -> int:
    if pick not in PICKS:
        raise ValueError(f"unknown pick {pick!r}: choose one of {', '.join(PICKS)}")
    ordered = group.sort_values("score", kind="stable")
    if pick == "max":
        return int(ordered.index[-1])
    if pick == "min":
        return int(ordered.index[0])
    return int(ordered.index[(len(ordered) - 1) // 2])


def pick_per_defect(
    scores: pd.DataFrame, pick: str = "median", include_good: bool = True
) -> list[tuple[int, str]]:
    """One test image per defect type, chosen by its image score.

    Args:
        scores: a run's score table (columns ``defect``, ``label``, ``score``; its row
            positions index the score maps).
        pick: ``"median"`` (a typical example: the median-scoring image of the defect type),
            ``"max"`` (the most confident) or ``"min"`` (the hardest).
        include_good: also show one normal image (``defect == "good"``) first.

    Returns:
        ``[(row position, defect), ...]``: normal first, then defects in alphabetical order.
    """
    table = scores.reset_index(drop=True)
    out = []
    for defect, group in sorted(table.groupby("defect"), key=lambda kv: (kv[0] != "good", kv[0])):
        if defect == "good" and not include_good:
            continue
        out.append((_pick(group, pick), str(defect)))
    return out


def pick_best_worst(scores: pd.DataFrame) -> list[tuple[int, str]]:
    """Four telling test images: the best and worst handled anomalous and normal ones.

    Returns:
        ``[(row position, caption), ...]``: the highest-scoring anomalous image (best hit),
        the lowest-scoring anomalous image (worst miss), the highest-scoring normal image
        (worst false alarm) and the lowest-scoring normal image (best normal); entries whose
        class is absent are left out.
    """
    table = scores.reset_index(drop=True)
    anomalous, normal = table[table["label"] == 1], table[table["label"] == 0]
    out = []
    if len(anomalous):
        out.append((_pick(anomalous, "max"), "anomalous, highest score"))
        out.append((_pick(anomalous, "min"), "anomalous, lowest score"))
    if len(normal):
        out.append((_pick(normal, "max"), "normal, highest score"))
        out.append((_pick(normal, "min"), "normal, lowest score"))
    return out


def example_rows(
    result,
    picks: Sequence[tuple[int, str]],
    prefix: str = "",
    scale: tuple[float, float] | None = None,
) -> list[dict]:
    """Rows for :func:`score_map_grid` from chosen test images of a finished run.

    Args:
        result: a :class:`adtr_core.runs.results.RunResult` with ``score_maps``.
        picks: ``[(row position in result.scores, caption), ...]``.
        prefix: text put before each caption (e.g. the category).
        scale: ``(vmin, vmax)`` colour scale stored in each row (None: the grid's), e.g.
            :func:`map_range` of the run so that every row of a category shares one scale.

    Raises:
        ValueError: the run has no score maps (data without masks) or the test split no longer
            matches the run's score table.
    """
    from adtr_core.data.sources import open_split

    if result.score_maps is None:
        raise ValueError(
            f"run {result.out_dir} has no score maps (its data has no pixel masks); "
            "score-map figures need MVTec-style data"
        )
    test = open_split(result.config, "test")
    if len(test) != len(result.scores):
        raise ValueError(
            f"the test split of {result.out_dir} has {len(test)} images but the run scored "
            f"{len(result.scores)}; the data changed since the run: rerun it"
        )
    rows = []
    for pos, caption in picks:
        item = test[pos]
        expected = str(result.scores["path"].iloc[pos])
        if Path(item["path"]).name != Path(expected).name:
            raise ValueError(
                f"test image {pos} is {item['path']} but the run scored {expected} there; "
                "the data changed since the run: rerun it"
            )
        score = float(result.scores["score"].iloc[pos])
        rows.append(
            {
                "image": item["image"],
                "mask": item["mask"][0] if test.has_masks else None,
                "map": np.asarray(result.score_maps[pos], dtype=np.float32),
                "label": f"{prefix}{caption}",
                "note": f"image score {score:.3g}",
                "category": str(result.config.category),
                "defect": str(item["defect"]),
                **({"vmin": scale[0], "vmax": scale[1]} if scale is not None else {}),
            }
        )
    return rows


def map_range(result, low: float = 0.5, high: float = 0.999) -> tuple[float, float]:
    """A colour scale for one run's score maps: ``(vmin, vmax)`` quantiles of its normal maps.

    The lower limit is the ``low`` quantile of the score maps of the *normal* test images (the
    typical reconstruction error of normal texture, shown as background), the upper limit
    the ``high`` quantile of all score maps (robust to a few extreme pixels).
    """
    if result.score_maps is None:
        raise ValueError(f"run {result.out_dir} has no score maps (its data has no pixel masks)")
    all_maps = np.asarray(result.score_maps, dtype=np.float32)  # (N, S, S)
    normal = np.asarray(result.scores["label"]) == 0
    base = all_maps[normal] if normal.any() else all_maps
    vmin, vmax = float(np.quantile(base, low)), float(np.quantile(all_maps, high))
    return vmin, max(vmax, vmin + 1e-6)


def per_defect_rows(results, pick: str = "median", include_good: bool = True) -> list[dict]:
    """One row per (category, defect type) over several runs, each category on its own scale.

    Args:
        results: finished runs with score maps, one per category.
        pick: which image of each defect type (see :func:`pick_per_defect`).
        include_good: add one normal test image per category.

    Returns:
        Rows for :func:`score_map_grid` / :func:`score_map_columns` / :func:`overview_grid`.
    """
    rows = []
    for result in results:
        picks = pick_per_defect(result.scores, pick=pick, include_good=include_good)
        rows += example_rows(result, picks, scale=map_range(result))
    return rows


def _gt_contour(ax, mask) -> None:
    if mask is None:
        return
    m = _np(mask)
    if m.max() > 0:
        ax.contour(m, levels=[0.5], colors="white", linewidths=1.0)


def score_map_columns(rows: list[dict], title: str | None = None):
    """The paper's layout: one column per example; rows image / ground truth / score map.

    Args:
        rows: as for :func:`score_map_grid` (``image``, ``mask``, ``map``, ``label``; optional
            ``vmin`` / ``vmax`` / ``note``); the label becomes the column title.

    Returns:
        The matplotlib Figure.
    """
    if not rows:
        raise ValueError("score_map_columns needs at least one example")
    n = len(rows)
    fig, axes = plt.subplots(3, n, figsize=(1.75 * n + 0.9, 5.6), squeeze=False)
    for j, row in enumerate(rows):
        score_map = _np(row["map"])
        axes[0, j].imshow(to_hwc(row["image"]))
        axes[0, j].set_title(row.get("label", ""), fontsize=9)
        mask = row.get("mask")
        axes[1, j].imshow(
            _np(mask) if mask is not None else np.zeros(score_map.shape),
            cmap="gray",
            vmin=0,
            vmax=1,
        )
        draw_overlay(
            axes[2, j], row["image"], score_map, vmin=row.get("vmin", 0), vmax=row.get("vmax")
        )
        _gt_contour(axes[2, j], mask)
        if row.get("note"):
            axes[2, j].set_title(row["note"], fontsize=7, y=-0.16)
        for ax in axes[:2, j]:
            ax.set_xticks([])
            ax.set_yticks([])
    for ax, name in zip(axes[:, 0], ("image", "ground truth", "score map")):
        ax.set_ylabel(name, fontsize=9)
    axes[2, 0].set_axis_on()
    axes[2, 0].set_xticks([])
    axes[2, 0].set_yticks([])
    for spine in axes[2, 0].spines.values():
        spine.set_visible(False)
    if title:
        fig.suptitle(wrap_title(title, fig.get_figwidth()), fontsize=10)
    fig.tight_layout()
    return fig


def overview_grid(rows: list[dict], title: str | None = None):
    """Compact overview: one row per category, one column per defect type.

    Each cell is the score-map overlay with the ground-truth outline in white; the cell title
    names the defect type and gives the image score. Rows need ``category`` and ``defect``
    (as written by :func:`example_rows`).

    Returns:
        The matplotlib Figure.
    """
    if not rows:
        raise ValueError("overview_grid needs at least one example")
    categories = list(dict.fromkeys(r["category"] for r in rows))
    by_cat = {c: [r for r in rows if r["category"] == c] for c in categories}
    n_cols = max(len(v) for v in by_cat.values())
    fig, axes = plt.subplots(
        len(categories),
        n_cols,
        figsize=(1.9 * n_cols + 0.6, 2.05 * len(categories)),
        squeeze=False,
    )
    for i, cat in enumerate(categories):
        for j in range(n_cols):
            ax = axes[i, j]
            if j >= len(by_cat[cat]):
                ax.set_axis_off()
                continue
            row = by_cat[cat][j]
            draw_overlay(
                ax, row["image"], row["map"], vmin=row.get("vmin", 0), vmax=row.get("vmax")
            )
            _gt_contour(ax, row.get("mask"))
            note = f"\n{row['note']}" if row.get("note") else ""
            ax.set_title(f"{row['defect']}{note}", fontsize=8)
        axes[i, 0].set_axis_on()
        axes[i, 0].set_xticks([])
        axes[i, 0].set_yticks([])
        axes[i, 0].set_ylabel(cat, fontsize=10)
    if title:
        fig.suptitle(wrap_title(title, fig.get_figwidth()), fontsize=10)
    fig.tight_layout()
    return fig
