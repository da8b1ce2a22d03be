"""Evaluation metrics: image AUROC, pixel AUROC and AU-PRO (paper Sec. 4, "Metrics").

Plain functions on arrays (numpy or torch); models never compute metrics themselves.

* ``image_auroc``: detection, ROC AUC of image scores against image labels.
* ``pixel_auroc``: localization, ROC AUC of all score-map pixels against all mask pixels.
* ``aupro``: the per-region-overlap metric of the official MVTec AD evaluation (Bergmann et al.,
  2021): ground-truth regions are the 8-connected components of every mask; at a threshold
  ``t`` the PRO is the mean over *all* regions (of all images) of the fraction of the region's
  pixels scoring ``>= t``, and the FPR is the fraction of normal pixels (every pixel outside the
  masks, in all images) scoring ``>= t``. PRO is integrated over FPR in ``[0, fpr_limit]`` with
  the trapezoid rule, interpolating the curve at exactly ``fpr_limit``, and divided by
  ``fpr_limit`` so that a perfect map scores 1. Ties are collapsed into one curve point, so a
  constant (or random) map follows the diagonal PRO = FPR and scores ``fpr_limit / 2``
  (0.15 at the default limit), not 0.

A metric that is undefined (one class only, no ground-truth region) is NaN with a warning.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from sklearn.metrics import roc_auc_score

METRIC_KEYS = ("image_auroc", "pixel_auroc", "pixel_aupro")
_EIGHT_CONNECTED = np.ones((3, 3), dtype=int)


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach()
        if x.dtype in (torch.bfloat16, torch.float16):
            x = x.float()
        return x.cpu().numpy()
    return np.asarray(x)


def _as_maps(x: Any, name: str) -> np.ndarray:
    """(N, H, W) array from (N, H, W), (N, 1, H, W) or a single (H, W) map."""
    a = _to_numpy(x)
    if a.ndim == 4 and a.shape[1] == 1:
        a = a[:, 0]
    elif a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise ValueError(f"{name} must be (N, H, W) or (N, 1, H, W); got shape {a.shape}")
    return a


def _masks_and_maps(masks: Any, maps: Any) -> tuple[np.ndarray, np.ndarray]:
    m = _as_maps(masks, "masks") >= 0.5  # (N, H, W) bool
    s = _as_maps(maps, "maps")  # (N, H, W)
    if m.shape != s.shape:
        raise ValueError(
            f"masks {m.shape} and maps {s.shape} must have the same shape; upsample the score "
            "maps to the mask resolution (scoring.upsample) first"
        )
    s = s.astype(np.float32 if s.dtype.itemsize <= 4 else np.float64, copy=False)
    if not np.isfinite(s).all():
        raise ValueError("maps contain NaN or inf; check the reconstruction for divergence")
    return m, s


def _auroc(y: np.ndarray, s: np.ndarray, what: str) -> float:
    if y.shape != s.shape:
        raise ValueError(f"{what}: labels {y.shape} and scores {s.shape} differ in shape")
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        warnings.warn(
            f"{what}: only one class present ({n_pos} positives of {y.size}); AUROC is "
            "undefined and reported as NaN. Evaluate on normal and anomalous samples.",
            stacklevel=3,
        )
        return math.nan
    return float(roc_auc_score(y, s))


def image_auroc(labels: Any, scores: Any) -> float:
    """ROC AUC of image scores (detection).

    Args:
        labels: ``(N,)`` image labels, 1 = anomalous.
        scores: ``(N,)`` image anomaly scores (higher = more anomalous).

    Returns:
        AUROC in [0, 1]; NaN (with a warning) when only one class is present.
    """
    y = _to_numpy(labels).reshape(-1).astype(bool)
    s = _to_numpy(scores).reshape(-1).astype(np.float64)
    if not np.isfinite(s).all():
        raise ValueError("image scores contain NaN or inf; check the reconstruction")
    return _auroc(y, s, "image_auroc")


def pixel_auroc(masks: Any, maps: Any) -> float:
    """ROC AUC over all pixels of all images (localization).

    Args:
        masks: ``(N, H, W)`` or ``(N, 1, H, W)`` ground truth, anomalous where ``>= 0.5``.
        maps: Score maps of the same shape.

    Returns:
        AUROC in [0, 1]; NaN (with a warning) when the masks hold no anomalous pixel (or only
        anomalous ones).
    """
    m, s = _masks_and_maps(masks, maps)
    return _auroc(m.reshape(-1), s.reshape(-1), "pixel_auroc")


def _regions(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Global 8-connected component ids (0 = normal) and the size of each component (1-based)."""
    ids = np.zeros(m.shape, dtype=np.int64)  # (N, H, W)
    offset = 0
    for i in range(m.shape[0]):
        if not m[i].any():
            continue
        lab, n = ndimage.label(m[i], structure=_EIGHT_CONNECTED)
        ids[i] = np.where(lab > 0, lab + offset, 0)
        offset += n
    sizes = np.bincount(ids.reshape(-1), minlength=offset + 1)  # sizes[0] = normal pixels
    return ids, sizes


def pro_curve(
    masks: Any, maps: Any, num_thresholds: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The PRO-vs-FPR curve of the MVTec AD evaluation, one point per distinct score.

    Computed exactly by one sort: each normal pixel adds ``1 / n_normal`` to the FPR and each
    pixel of region ``r`` adds ``1 / (n_regions * |r|)`` to the PRO once the threshold drops
    to its score; pixels with equal scores enter together.

    Args:
        masks: ``(N, H, W)`` or ``(N, 1, H, W)`` ground truth, anomalous where ``>= 0.5``.
        maps: Score maps of the same shape.
        num_thresholds: None for the exact curve; an integer ``T`` evaluates only the ``T``
            equally spaced thresholds between the smallest and largest score (coarser, as in
            threshold-sweep implementations).

    Returns:
        ``(fpr, pro)``, each ``(P,)``, non-decreasing, starting at ``(0, 0)`` and ending at
        ``(1, 1)``.

    Raises:
        ValueError: when there is no ground-truth region or no normal pixel.
    """
    m, s = _masks_and_maps(masks, maps)
    ids, sizes = _regions(m)
    n_regions, n_normal = len(sizes) - 1, int(sizes[0])
    if n_regions == 0:
        raise ValueError("pro_curve: the masks hold no anomalous region")
    if n_normal == 0:
        raise ValueError("pro_curve: the masks hold no normal pixel")
    scores = s.reshape(-1)  # (P,)
    if num_thresholds is not None:
        if num_thresholds < 2:
            raise ValueError(f"num_thresholds must be >= 2 or None; got {num_thresholds}")
        levels = np.linspace(scores.min(), scores.max(), num_thresholds)  # (T,)
        # Each score becomes the largest threshold it reaches: "score >= t" is unchanged for
        # every t in levels, and only those T thresholds remain distinct.
        scores = levels[np.searchsorted(levels, scores, side="right") - 1]
    order = np.argsort(scores, kind="stable")[::-1]  # descending
    ids_sorted = ids.reshape(-1)[order]  # (P,)
    region_weight = np.zeros(n_regions + 1)  # (R + 1,), index 0 = normal pixels
    region_weight[1:] = 1.0 / (n_regions * sizes[1:])
    pro = np.cumsum(region_weight[ids_sorted])  # (P,)
    fpr = np.cumsum(ids_sorted == 0) / n_normal  # (P,)
    sorted_scores = scores[order]
    last_of_tie = np.append(sorted_scores[1:] != sorted_scores[:-1], True)  # (P,)
    fpr = np.clip(np.concatenate([[0.0], fpr[last_of_tie]]), 0.0, 1.0)
    pro = np.clip(np.concatenate([[0.0], pro[last_of_tie]]), 0.0, 1.0)
    return fpr, pro


def _area_up_to(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Trapezoid area under a curve with non-decreasing ``x``, from ``x[0]`` to ``x_max``."""
    keep = x <= x_max
    xs, ys = x[keep], y[keep]
    area = float(np.sum(0.5 * (ys[1:] + ys[:-1]) * np.diff(xs)))
    nxt = int(keep.sum())
    if xs[-1] < x_max and nxt < len(x):  # interpolate the curve at exactly x_max
        x0, y0, x1, y1 = xs[-1], ys[-1], x[nxt], y[nxt]
        y_max = y0 + (y1 - y0) * (x_max - x0) / (x1 - x0)
        area += 0.5 * (y0 + y_max) * (x_max - x0)
    return area


def aupro(
    masks: Any, maps: Any, fpr_limit: float = 0.3, num_thresholds: int | None = None
) -> float:
    """Normalised area under the PRO curve up to ``fpr_limit`` (official MVTec AD definition).

    Args:
        masks: ``(N, H, W)`` or ``(N, 1, H, W)`` ground truth, anomalous where ``>= 0.5``.
        maps: Score maps of the same shape.
        fpr_limit: Upper integration limit on the FPR, in (0, 1].
        num_thresholds: None for the exact curve, or a number of equally spaced thresholds
            (see ``pro_curve``).

    Returns:
        AU-PRO in [0, 1] (1 = perfect); NaN (with a warning) without any ground-truth region.
    """
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"fpr_limit must be in (0, 1]; got {fpr_limit}")
    m = _as_maps(masks, "masks") >= 0.5
    if not m.any() or m.all():
        warnings.warn(
            "aupro: the masks hold no anomalous region (or no normal pixel); AU-PRO is "
            "undefined and reported as NaN",
            stacklevel=2,
        )
        return math.nan
    fpr, pro = pro_curve(masks, maps, num_thresholds)
    return _area_up_to(fpr, pro, fpr_limit) / fpr_limit


def compute_metrics(
    labels: Any,
    scores: Any,
    masks: Any | None = None,
    maps: Any | None = None,
    fpr_limit: float = 0.3,
) -> dict[str, float]:
    """All metrics of one test set.

    Args:
        labels: ``(N,)`` image labels, 1 = anomalous.
        scores: ``(N,)`` image scores.
        masks: ``(N, 1, S, S)`` / ``(N, S, S)`` ground-truth masks, or None (no pixel labels).
        maps: Score maps of the same shape as ``masks``, or None.
        fpr_limit: Integration limit of AU-PRO.

    Returns:
        ``{"image_auroc", "pixel_auroc", "pixel_aupro"}``; pixel metrics are NaN when masks or
        maps are missing or when the masks hold no anomalous pixel (then ``pixel_note`` says
        so); any undefined metric is NaN with a warning instead of an exception.
    """
    out = {
        "image_auroc": image_auroc(labels, scores),
        "pixel_auroc": math.nan,
        "pixel_aupro": math.nan,
    }
    if masks is None or maps is None:
        return out
    m = _as_maps(masks, "masks")
    if not (m >= 0.5).any():
        warnings.warn(
            "compute_metrics: the masks hold no anomalous pixel; pixel_auroc and pixel_aupro "
            "are NaN (the test set's masks are all empty)",
            stacklevel=2,
        )
        out["pixel_note"] = "the test set's masks are all empty (no defect pixel in any mask)"
        return out
    out["pixel_auroc"] = pixel_auroc(m, maps)
    out["pixel_aupro"] = aupro(m, maps, fpr_limit=fpr_limit)
    return out
