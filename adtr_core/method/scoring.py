"""Anomaly score maps and image scores from a feature reconstruction (paper Sec. 3.1, eqs. 2-3).

The comparison stage of ADTR: given backbone features ``f`` and their reconstruction ``f_hat``
(both ``(B, C, h, w)``), the feature difference is ``d = f - f_hat`` (eq. 2) and the score map
is the L2 norm of ``d`` over channels at every position ``u`` (eq. 3),
``s(u) = ||d(:, u)||_2``. The map is upsampled bilinearly to the input size, optionally
smoothed with a Gaussian, and reduced to one score per image:

* ``"max_avgpool"`` (paper, MVTec AD): the maximum of the average-pooled map;
* ``"mean"`` (paper, CIFAR-10): the mean of the map;
* ``"max"`` and ``"std"``: simple alternatives kept for ablations.

Where the pooling happens (our choice; the paper does not say): on the *upsampled, smoothed*
map, with a ``pool_size x pool_size`` window and stride 1. With the defaults (256x256 input,
stride-16 features, ``pool_size=64``, chosen by validation AUROC: docs/choices.md) the window
covers about 4 x 4 feature cells, so the image score is the largest mean over any such window,
at every pixel offset rather than only on the feature grid. Pooling the upsampled map makes
``pool_size`` a size in input pixels, whatever the backbone's stride.

Everything runs batched on the tensors' device (no host round trips) in float32; bf16/fp16
inputs are cast to float32 first.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

SCORE_MODES = ("max_avgpool", "mean", "std", "max")


@dataclass
class ScoringConfig:
    """How a reconstruction becomes a score map and an image score.

    Attributes:
        image_size: Side ``S`` of the output score maps (the input image size). ``None`` keeps
            the feature grid resolution (no upsampling).
        sigma: Standard deviation, in output pixels, of the Gaussian that smooths the upsampled
            map; ``<= 0`` turns smoothing off. 4 is the common choice in feature-reconstruction
            anomaly detection (the paper does not state a value).
        mode: Image score reduction, one of ``SCORE_MODES``. "max_avgpool" is the paper's MVTec
            AD score; use "mean" for the CIFAR-10 one-class protocol.
        pool_size: Average-pooling window (in output pixels, stride 1) for "max_avgpool";
            64 = 4 x 4 stride-16 feature cells (our choice, module doc); clamped to the map.
    """

    image_size: int | None = 256
    sigma: float = 4.0
    mode: str = "max_avgpool"
    pool_size: int = 64  # 4 x 4 feature cells of a stride-16 backbone, in input pixels


def check_feature_pair(f: torch.Tensor, f_hat: torch.Tensor) -> None:
    """Raise ValueError unless ``f`` and ``f_hat`` are equally shaped (B, C, h, w) features."""
    if f.ndim != 4:
        raise ValueError(f"features must be (B, C, h, w); got shape {tuple(f.shape)}")
    if f.shape != f_hat.shape:
        raise ValueError(
            f"f and f_hat must have the same shape; got {tuple(f.shape)} and "
            f"{tuple(f_hat.shape)}. Pass the reconstruction of the same feature batch."
        )


def _check_maps(maps: torch.Tensor) -> None:
    if maps.ndim != 3:
        raise ValueError(
            f"score maps must be (B, H, W); got shape {tuple(maps.shape)}. "
            "Squeeze a channel dimension of size 1 first."
        )


def feature_distance(f: torch.Tensor, f_hat: torch.Tensor) -> torch.Tensor:
    """Eq. 3: the L2 norm over channels of the feature difference ``d = f - f_hat``.

    Args:
        f: Backbone features, ``(B, C, h, w)``.
        f_hat: Their reconstruction, ``(B, C, h, w)``.

    Returns:
        Score maps on the feature grid, ``(B, h, w)``, float32.
    """
    check_feature_pair(f, f_hat)
    d = f.float() - f_hat.float()  # (B, C, h, w)
    return torch.linalg.vector_norm(d, ord=2, dim=1)  # (B, h, w)


def upsample(maps: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling (``align_corners=False``) of score maps to the image size.

    Args:
        maps: Score maps, ``(B, h, w)``.
        size: Output side ``S`` or ``(H, W)``.

    Returns:
        ``(B, S, S)`` (or ``(B, H, W)``) float32 maps.
    """
    _check_maps(maps)
    size = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(maps.shape[-2:]) == size:
        return maps.float()
    out = F.interpolate(maps.float()[:, None], size=size, mode="bilinear", align_corners=False)
    return out[:, 0]  # (B, H, W)


def _gaussian_kernel(sigma: float, radius: int, device: torch.device) -> torch.Tensor:
    x = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)  # (2r+1,)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def gaussian_smooth(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of score maps with reflect padding.

    The kernel radius is ``ceil(4 sigma)``, truncated to ``side - 1`` along a side shorter
    than that (reflect padding needs ``pad < side``); the truncated kernel is renormalised,
    so a constant map stays constant.

    Args:
        maps: Score maps, ``(B, H, W)``.
        sigma: Standard deviation in pixels; ``<= 0`` returns the maps unchanged.

    Returns:
        Smoothed maps, ``(B, H, W)``, float32, on the maps' device.
    """
    _check_maps(maps)
    maps = maps.float()
    if sigma <= 0:
        return maps
    out = maps[:, None]  # (B, 1, H, W)
    radius = math.ceil(4.0 * sigma)
    for dim in (2, 3):  # rows, then columns
        side = out.shape[dim]
        r = min(radius, side - 1)
        if r <= 0:
            continue
        k = _gaussian_kernel(sigma, r, maps.device)  # (2r+1,)
        if dim == 2:
            weight = k.view(1, 1, -1, 1)
            pad = (0, 0, r, r)  # (left, right, top, bottom)
        else:
            weight = k.view(1, 1, 1, -1)
            pad = (r, r, 0, 0)
        out = F.conv2d(F.pad(out, pad, mode="reflect"), weight)  # (B, 1, H, W)
    return out[:, 0]


def image_scores(
    maps: torch.Tensor, mode: str = "max_avgpool", pool_size: int = 16
) -> torch.Tensor:
    """Reduce score maps to one anomaly score per image.

    Args:
        maps: Score maps, ``(B, H, W)``.
        mode: "max_avgpool" (maximum of the ``pool_size`` average-pooled map, stride 1; the
            paper's MVTec score), "mean" (the paper's CIFAR-10 score), "max" or "std".
        pool_size: Pooling window for "max_avgpool", clamped to the map's sides.

    Returns:
        Image scores, ``(B,)``, float32.
    """
    _check_maps(maps)
    maps = maps.float()
    if mode == "max_avgpool":
        if pool_size < 1:
            raise ValueError(f"pool_size must be >= 1; got {pool_size}")
        kh, kw = min(pool_size, maps.shape[1]), min(pool_size, maps.shape[2])
        # A stride-1 box filter is separable: two 1-D poolings cost kh + kw, not kh * kw.
        pooled = F.avg_pool2d(maps[:, None], kernel_size=(kh, 1), stride=1)  # (B, 1, H', W)
        pooled = F.avg_pool2d(pooled, kernel_size=(1, kw), stride=1)  # (B, 1, H', W')
        return pooled.flatten(1).amax(dim=1)
    if mode == "mean":
        return maps.flatten(1).mean(dim=1)
    if mode == "max":
        return maps.flatten(1).amax(dim=1)
    if mode == "std":
        return maps.flatten(1).std(dim=1, unbiased=False)
    raise ValueError(f"unknown score mode {mode!r}; choose one of {SCORE_MODES}")


def score(
    f: torch.Tensor, f_hat: torch.Tensor, cfg: ScoringConfig | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Full comparison stage: eq. 3 → upsample → smooth → image score.

    Args:
        f: Backbone features, ``(B, C, h, w)``.
        f_hat: Reconstruction, ``(B, C, h, w)``.
        cfg: Scoring settings; defaults to ``ScoringConfig()``.

    Returns:
        ``(maps, scores)``: score maps ``(B, S, S)`` (``S = cfg.image_size``, or ``(B, h, w)``
        when it is None) and image scores ``(B,)``, float32 on the inputs' device.
    """
    cfg = cfg or ScoringConfig()
    if cfg.mode not in SCORE_MODES:
        raise ValueError(f"unknown score mode {cfg.mode!r}; choose one of {SCORE_MODES}")
    d = feature_distance(f, f_hat)  # (B, h, w)
    h, w = d.shape[-2:]
    size_h, size_w = (h, w) if cfg.image_size is None else (cfg.image_size, cfg.image_size)
    # Upsampling and smoothing are linear and separable: maps = A_h d A_w^T, one matrix per axis.
    a_h = axis_operator(h, size_h, float(cfg.sigma), str(d.device))  # (S, h)
    a_w = axis_operator(w, size_w, float(cfg.sigma), str(d.device))  # (S, w)
    maps = a_h @ d @ a_w.T  # (B, S, S)
    return maps, image_scores(maps, cfg.mode, cfg.pool_size)


@functools.lru_cache(maxsize=32)
def axis_operator(n: int, size: int, sigma: float, device: str = "cpu") -> torch.Tensor:
    """One axis of the scoring as a matrix: bilinear upsampling ``n -> size``, then smoothing.

    Built by pushing unit vectors through :func:`upsample` and :func:`gaussian_smooth` on
    maps of width 1 (which they leave alone along the width), so padding, truncation and
    renormalisation are exactly theirs.

    Returns:
        ``(size, n)`` float32 matrix on ``device``.
    """
    eye = torch.eye(n, device=torch.device(device))[:, :, None]  # (n, n, 1): n unit maps
    cols = gaussian_smooth(upsample(eye, (size, 1)), sigma)  # (n, size, 1)
    return cols[:, :, 0].T.contiguous()  # (size, n)


def reference_score(
    f: torch.Tensor, f_hat: torch.Tensor, cfg: ScoringConfig | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`score` computed step by step (distance → upsample → smooth → pool).

    The definition that :func:`score`'s matrix form must match; kept for tests and benchmarks.
    """
    cfg = cfg or ScoringConfig()
    maps = feature_distance(f, f_hat)  # (B, h, w)
    if cfg.image_size is not None:
        maps = upsample(maps, cfg.image_size)  # (B, S, S)
    maps = gaussian_smooth(maps, cfg.sigma)  # (B, S, S)
    return maps, image_scores(maps, cfg.mode, cfg.pool_size)
