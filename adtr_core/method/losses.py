"""Training losses of ADTR and ADTR+ (paper eqs. 1, 6-9).

* ``l_norm`` (eq. 1), the normal-only loss: ``L_norm = (1/HW) ||f - f_hat||_2^2``, the squared
  error summed over channels and averaged over positions (then over the batch).
* ``phi`` (eq. 6), the per-position pseudo-Huber distance
  ``phi(u) = sqrt(((1/C) sum_i |d(i, u)|)^2 + 1) - 1`` with ``d = f - f_hat``.
* ``l_px`` (eq. 7), ADTR+ with pixel labels ``y(u)``:
  ``L_px = (1/HW) sum_u (1 - y(u)) phi(u) - alpha log(1 - exp(-(1/HW) sum_u y(u) phi(u)))``.
  The first term pulls normal positions towards a good reconstruction, the second pushes the
  anomalous ones away (it falls as their mean ``phi`` grows and saturates).
* ``l_img`` (eqs. 8-9), ADTR+ with image labels ``y``: ``q = mean(top_k(phi))`` and
  ``L_img = (1 - y) q - alpha y log(1 - exp(-q))``.

All losses are computed per image and averaged over the batch, in float32.
``log(1 - exp(-x))`` is evaluated as ``log(-expm1(-x))`` with ``x`` clamped away from 0;
for an image without anomalous positions (all-zero mask, or label 0) the push term is exactly 0.

Masks given at image resolution are reduced to the feature grid by
:func:`adtr_core.method.masks.mask_to_grid`, by default with ``rule="any"`` (adaptive max pooling): a
position is anomalous when any pixel of its cell is. The backbone feature at ``u`` sees its
whole cell (and more), so a cell touched by a defect is not a normal feature and must not be
pulled towards a faithful reconstruction; a threshold on the area (e.g. ``> 0.5``) would drop
small confetti blobs entirely and train the model to reconstruct them. ``rule="fraction"``
gives soft labels (the anomalous share of each cell), which eq. 7 accepts as they are.
"""

from __future__ import annotations

import torch

from adtr_core.method.masks import mask_to_grid
from adtr_core.method.scoring import check_feature_pair

ALPHA = 0.003  # paper setting for both ADTR+ losses
TOP_K = 20  # paper setting for l_img
_X_MIN = 1e-12  # keeps log(1 - exp(-x)) finite where x -> 0


def _log1m_exp_neg(x: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(-x))`` for ``x >= 0``, stable for small ``x``; ``x`` below 1e-12 is clamped."""
    return torch.log(-torch.expm1(-x.clamp_min(_X_MIN)))


def l_norm(f: torch.Tensor, f_hat: torch.Tensor) -> torch.Tensor:
    """Eq. 1: squared L2 reconstruction error, summed over channels, mean over positions and batch.

    Args:
        f: Backbone features, ``(B, C, h, w)``.
        f_hat: Reconstruction, ``(B, C, h, w)``.

    Returns:
        Scalar loss.
    """
    check_feature_pair(f, f_hat)
    d = f.float() - f_hat.float()  # (B, C, h, w)
    return d.pow(2).sum(dim=1).mean()


def phi(f: torch.Tensor, f_hat: torch.Tensor) -> torch.Tensor:
    """Eq. 6: pseudo-Huber distance of the channel-mean absolute difference, per position.

    Args:
        f: Backbone features, ``(B, C, h, w)``.
        f_hat: Reconstruction, ``(B, C, h, w)``.

    Returns:
        ``phi``, ``(B, h, w)``, float32, ``>= 0``.
    """
    check_feature_pair(f, f_hat)
    m = (f.float() - f_hat.float()).abs().mean(dim=1)  # (B, h, w)
    return torch.sqrt(m * m + 1.0) - 1.0


def l_px(
    f: torch.Tensor,
    f_hat: torch.Tensor,
    mask: torch.Tensor,
    alpha: float = ALPHA,
    rule: str = "any",
) -> torch.Tensor:
    """Eq. 7: ADTR+ loss with pixel labels, mean over the batch.

    Args:
        f: Backbone features, ``(B, C, h, w)``.
        f_hat: Reconstruction, ``(B, C, h, w)``.
        mask: Anomaly mask, ``(B, 1, S, S)`` at image resolution (reduced to the grid by
            :func:`adtr_core.method.masks.mask_to_grid`) or ``(B, h, w)`` / ``(B, 1, h, w)`` already
            on the grid.
        alpha: Weight of the push term (paper: 0.003).
        rule: How an image-resolution mask is reduced to the grid: "any" (a cell is anomalous
            when any pixel is) or "fraction" (soft labels, the anomalous share of each cell).

    Returns:
        Scalar loss. For an image with no anomalous position the push term is 0, so its loss
        is the mean of ``phi``.
    """
    p = phi(f, f_hat)  # (B, h, w)
    y = mask_to_grid(mask.to(p.device), tuple(p.shape[-2:]), rule)  # (B, h, w)
    if y.shape[0] != p.shape[0]:
        raise ValueError(f"mask batch {y.shape[0]} does not match feature batch {p.shape[0]}")
    pull = ((1.0 - y) * p).mean(dim=(1, 2))  # (B,)
    x = (y * p).mean(dim=(1, 2))  # (B,)
    has_anomaly = y.flatten(1).amax(dim=1) > 0  # (B,)
    push = torch.where(has_anomaly, -alpha * _log1m_exp_neg(x), torch.zeros_like(x))  # (B,)
    return (pull + push).mean()


def l_img(
    f: torch.Tensor,
    f_hat: torch.Tensor,
    labels: torch.Tensor,
    alpha: float = ALPHA,
    k: int = TOP_K,
) -> torch.Tensor:
    """Eqs. 8-9: ADTR+ loss with image labels, mean over the batch.

    Args:
        f: Backbone features, ``(B, C, h, w)``.
        f_hat: Reconstruction, ``(B, C, h, w)``.
        labels: ``(B,)`` image labels, 1 = anomalous (outlier exposure), 0 = normal.
        alpha: Weight of the push term (paper: 0.003).
        k: Number of largest ``phi`` values averaged into ``q`` (paper: 20); clamped to
            ``h * w`` on small grids.

    Returns:
        Scalar loss.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1; got {k}")
    p = phi(f, f_hat).flatten(1)  # (B, h*w)
    labels = labels.to(p.device).float().reshape(-1)  # (B,)
    if labels.shape[0] != p.shape[0]:
        raise ValueError(
            f"labels batch {labels.shape[0]} does not match feature batch {p.shape[0]}"
        )
    q = p.topk(min(k, p.shape[1]), dim=1).values.mean(dim=1)  # (B,)
    push = torch.where(labels > 0, -alpha * labels * _log1m_exp_neg(q), torch.zeros_like(q))
    return ((1.0 - labels) * q + push).mean()
