"""Pixel masks brought to the feature grid: the one rule for which grid cells are anomalous.

A backbone feature at grid position ``u`` summarises a cell of ``(H / h) x (W / w)`` pixels,
so a defect mask at image resolution has to be reduced to the ``h x w`` grid wherever labels
meet features. :func:`mask_to_grid` does that for every use in the package, with the rule as a
parameter where the uses differ:

* ``rule="any"`` (adaptive max pooling): a cell is anomalous when any pixel of it is. The
  ADTR+ pixel loss (eq. 7, :func:`adtr_core.method.losses.l_px`) uses it.
* ``rule="fraction"`` (adaptive average pooling): the anomalous share of each cell, in [0, 1].
  With ``threshold`` the result is the cells covered by more than that share (the t-SNE groups
  of :mod:`adtr_core.figures.embedding`); the tokens of Sec. 3.2 (:mod:`adtr_core.toy.data`) take the
  share itself and split it into anomalous, ignored and normal cells.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

RULES = ("any", "fraction")


def mask_to_grid(
    mask: torch.Tensor,
    grid: tuple[int, int],
    rule: str = "any",
    threshold: float | None = None,
) -> torch.Tensor:
    """Reduce a pixel mask to the feature grid.

    Args:
        mask: ``(B, 1, H, W)`` or ``(B, H, W)`` with values in [0, 1]; when ``(H, W)`` equals
            ``grid`` it is used as is.
        grid: feature grid ``(h, w)``.
        rule: "any": the largest value of each cell (1 where any pixel of a binary mask is
            anomalous); "fraction": the mean of each cell (its anomalous share).
        threshold: None: return the values of ``rule``; a number: return the cells whose value
            is strictly above it.

    Returns:
        ``(B, h, w)``: float32 labels, or bool when ``threshold`` is given.

    Raises:
        ValueError: a mask of another shape, or an unknown rule.
    """
    if rule not in RULES:
        raise ValueError(f"unknown mask rule {rule!r}; choose one of {', '.join(RULES)}")
    if mask.ndim == 4:
        if mask.shape[1] != 1:
            raise ValueError(f"mask must have one channel, (B, 1, H, W); got {tuple(mask.shape)}")
        mask = mask[:, 0]
    if mask.ndim != 3:
        raise ValueError(f"mask must be (B, 1, H, W) or (B, H, W); got {tuple(mask.shape)}")
    mask = mask.float()  # (B, H, W)
    if tuple(mask.shape[-2:]) == tuple(grid):
        cells = mask
    elif rule == "any":
        cells = F.adaptive_max_pool2d(mask[:, None], grid)[:, 0]  # (B, h, w)
    else:
        cells = F.adaptive_avg_pool2d(mask[:, None], grid)[:, 0]  # (B, h, w)
    return cells if threshold is None else cells > threshold
