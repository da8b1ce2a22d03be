"""Confetti noise: synthetic anomalies with pixel masks, after FCDD (Liznerski et al., 2021).

ADTR+ on MVTec AD (paper Sec. 4) trains with ``L_px`` on synthetic anomalies: random
coloured blobs pasted on normal images, with their masks. A blob here is a rectangle
or an ellipse of random size and aspect, rotated by a random angle, filled with one
random colour (optionally blended with the image). The mask is the union of the blob
regions, so it covers every pixel the noise changes. Everything is drawn from a torch
``Generator``: the same seed gives the same anomalies.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from adtr_core.data.errors import DatasetError

SHAPES = ("rectangle", "ellipse")


def _generator(generator: torch.Generator | int | None) -> torch.Generator:
    if isinstance(generator, torch.Generator):
        return generator
    g = torch.Generator()
    if generator is None:
        g.seed()
    else:
        g.manual_seed(int(generator))
    return g


def _uniform(g: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=g))


def confetti_noise(
    image: torch.Tensor,
    generator: torch.Generator | int | None = None,
    num_blobs: tuple[int, int] = (2, 6),
    size_range: tuple[float, float] = (0.04, 0.22),
    shapes: Sequence[str] = SHAPES,
    max_rotation: float = 45.0,
    opacity: tuple[float, float] = (1.0, 1.0),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste random coloured blobs on an image.

    Args:
        image: (3, S, S) float in [0, 1] (H may differ from W).
        generator: a torch Generator, an int seed, or None (random).
        num_blobs: inclusive range of the number of blobs.
        size_range: range of a blob's side (rectangle) or diameter (ellipse), as a fraction
            of the image side; each axis is drawn separately (random aspect).
        shapes: shapes to draw from, among ``"rectangle"`` and ``"ellipse"``.
        max_rotation: blobs are rotated by an angle uniform in +-max_rotation degrees.
        opacity: range of the blend weight of a blob's colour (1 = solid paste).

    Returns:
        the anomalous image (3, S, S) float in [0, 1] and its mask (1, S, S) float {0, 1}
        (1 where a blob was pasted).
    """
    if image.ndim != 3 or image.shape[0] != 3:
        raise DatasetError(f"confetti_noise expects an image (3, S, S), got {tuple(image.shape)}.")
    unknown = set(shapes) - set(SHAPES)
    if not shapes or unknown:
        raise DatasetError(f"shapes must be a non-empty subset of {SHAPES}, got {tuple(shapes)}.")
    lo, hi = num_blobs
    if not 1 <= lo <= hi:
        raise DatasetError(
            f"num_blobs must be a range (lo, hi) with 1 <= lo <= hi, got {num_blobs}."
        )
    g = _generator(generator)
    _, h, w = image.shape
    side = min(h, w)
    ys = torch.arange(h, dtype=torch.float32)[:, None]  # (H, 1)
    xs = torch.arange(w, dtype=torch.float32)[None, :]  # (1, W)
    out = image.clone()
    mask = torch.zeros(h, w, dtype=torch.bool)
    n = int(torch.randint(lo, hi + 1, (), generator=g))
    for _ in range(n):
        shape = shapes[int(torch.randint(len(shapes), (), generator=g))]
        # half-axes of at least one pixel, so every blob covers its centre pixel
        a = max(1.0, 0.5 * side * _uniform(g, *size_range))
        b = max(1.0, 0.5 * side * _uniform(g, *size_range))
        cy, cx = _uniform(g, 0, h - 1), _uniform(g, 0, w - 1)
        theta = math.radians(_uniform(g, -max_rotation, max_rotation))
        colour = torch.rand(3, generator=g)  # (3,)
        alpha = _uniform(g, *opacity)
        reach = math.hypot(a, b)  # the blob lies within this distance of its centre
        y0, y1 = max(0, math.floor(cy - reach)), min(h, math.ceil(cy + reach) + 1)
        x0, x1 = max(0, math.floor(cx - reach)), min(w, math.ceil(cx + reach) + 1)
        dy, dx = ys[y0:y1] - cy, xs[:, x0:x1] - cx  # (h', 1), (1, w') within the bounding box
        u = dx * math.cos(theta) + dy * math.sin(theta)  # (h', w') blob axes
        v = -dx * math.sin(theta) + dy * math.cos(theta)
        if shape == "rectangle":
            blob = (u.abs() <= a) & (v.abs() <= b)
        else:
            blob = (u / a) ** 2 + (v / b) ** 2 <= 1.0
        region = out[:, y0:y1, x0:x1]  # (3, h', w') view
        region[:, blob] = (1 - alpha) * region[:, blob] + alpha * colour[:, None].to(out.dtype)
        mask[y0:y1, x0:x1] |= blob
    return out.clamp_(0.0, 1.0), mask[None].to(image.dtype)  # (3, H, W), (1, H, W)


def item_seed(seed: int, index: int) -> int:
    """A 63-bit seed for item ``index`` of a dataset seeded with ``seed``."""
    return int(
        np.random.SeedSequence([int(seed), int(index)])
        .generate_state(2, np.uint32)
        .view(np.uint64)[0]
        >> 1
    )


class SyntheticAnomalies(torch.utils.data.Dataset):
    """Anomalous versions of the items of ``base``, one synthetic anomaly of one kind each.

    The shared part of the confetti, pasted and distorted data sets: item ``i`` is ``base[i]``
    with the anomaly that :meth:`anomaly` draws from a generator seeded by ``(seed, i)``;
    items have label 1, defect :attr:`kind` and the anomaly's mask united with the base item's.
    ``options`` are the keyword arguments of the kind's function.
    """

    kind = ""

    def __init__(self, base: torch.utils.data.Dataset, seed: int = 0, **options) -> None:
        self.base = base
        self.seed = int(seed)
        self.options = options
        self.image_size = base.image_size
        self.has_masks = True
        n = len(base)
        self.labels = np.ones(n, dtype=np.int64)
        self.defects = [self.kind] * n

    def __len__(self) -> int:
        return len(self.base)

    def anomaly(self, index: int, item: dict, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(image, mask)``: item ``index`` (``item``) with the anomaly drawn from ``seed``."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict:
        item = self.base[index]
        image, mask = self.anomaly(index, item, item_seed(self.seed, index % len(self)))
        return {
            "image": image,  # (3, S, S)
            "mask": torch.maximum(mask, item["mask"]),  # (1, S, S)
            "label": 1,
            "defect": self.kind,
            "path": f"{item['path']}#{self.kind}",
        }


class ConfettiDataset(SyntheticAnomalies):
    """Anomalous versions of the items of ``base``: confetti noise with its masks.

    Item ``i`` is ``base[i]`` with blobs pasted, drawn from a generator seeded by
    ``(seed, i)``: deterministic per index, whatever the order of access or the worker.
    Items have label 1, defect ``"confetti"`` and the blob mask (united with the base
    item's mask when it had one).

    Args:
        base: a dataset of contract items (normally a training split of normal images).
        seed: seed of the noise.
        **noise: keyword arguments of :func:`confetti_noise`.
    """

    kind = "confetti"

    def anomaly(self, index: int, item: dict, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        return confetti_noise(item["image"], torch.Generator().manual_seed(seed), **self.options)
