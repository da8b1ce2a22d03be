"""Pasted patches: synthetic anomalies cut from other images and blended in, with their masks.

The second kind of synthetic anomaly of the validation split (:mod:`adtr_core.data.validation`),
beside confetti noise (:mod:`adtr_core.data.confetti`). Confetti blobs are flat colours; real
defects more often look like misplaced material (a crack shows the background, a
contamination is another surface). A pasted patch is a region cut at a random place from a
*donor* image (another training image of the same category, or one of the demo texture
photographs), rotated by a multiple of 90 degrees, and blended into the target image through a
soft-edged irregular blob. The mask is where the blend weight is at least one half.
Everything is drawn from a numpy generator seeded per item: the same seed gives the same
anomalies whatever the order of access.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from adtr_core.data.confetti import SyntheticAnomalies


def blob(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A soft irregular blob in [0, 1] filling most of an (h, w) box."""
    yy, xx = np.mgrid[0:h, 0:w]
    cy, cx = (h - 1) / 2, (w - 1) / 2
    r = np.hypot((yy - cy) / max(h / 2, 1), (xx - cx) / max(w / 2, 1))  # (h, w), 1 at the box edge
    angle = np.arctan2(yy - cy, xx - cx)
    wobble = sum(
        rng.uniform(0.05, 0.15) * np.cos(k * angle + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 5)
    )
    inside = (r < 0.85 + wobble).astype(np.float32)
    soft = ndimage.gaussian_filter(inside, sigma=max(1.0, 0.06 * min(h, w)))
    return np.clip(soft, 0.0, 1.0)


def paste_patch(
    image: torch.Tensor,
    donor: torch.Tensor,
    rng: np.random.Generator,
    size_range: tuple[float, float] = (0.08, 0.25),
    opacity: tuple[float, float] = (0.7, 1.0),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Blend a patch of ``donor`` into ``image`` at a random place.

    Args:
        image: (3, H, W) in [0, 1], the normal image.
        donor: (3, H', W') in [0, 1], the image the patch is cut from.
        rng: numpy generator.
        size_range: the patch's sides as fractions of the image side (each drawn on its own).
        opacity: range of the blend weight at the blob's centre.

    Returns:
        ``(image, mask)``: (3, H, W) with the patch, (1, H, W) float {0, 1}.
    """
    _, h, w = image.shape
    ph = max(4, int(round(rng.uniform(*size_range) * h)))
    pw = max(4, int(round(rng.uniform(*size_range) * w)))
    dh, dw = donor.shape[-2:]
    patch = donor[:, :ph, :pw] if (dh < ph or dw < pw) else None
    if patch is None:
        y, x = int(rng.integers(0, dh - ph + 1)), int(rng.integers(0, dw - pw + 1))
        patch = donor[:, y : y + ph, x : x + pw]
    k = int(rng.integers(0, 4))
    patch = torch.rot90(patch, k, dims=(1, 2))
    ph, pw = patch.shape[-2:]
    ph, pw = min(ph, h), min(pw, w)
    patch = patch[:, :ph, :pw]
    alpha = blob(ph, pw, rng) * float(rng.uniform(*opacity))  # (ph, pw)
    y0, x0 = int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
    out = image.clone()
    a = torch.from_numpy(alpha).to(image.dtype)[None]  # (1, ph, pw)
    region = out[:, y0 : y0 + ph, x0 : x0 + pw]
    out[:, y0 : y0 + ph, x0 : x0 + pw] = (1 - a) * region + a * patch.to(image.dtype)
    mask = torch.zeros(1, h, w, dtype=image.dtype)
    mask[:, y0 : y0 + ph, x0 : x0 + pw] = (a >= 0.5).to(image.dtype)
    return out.clamp_(0.0, 1.0), mask


class PastedPatchDataset(SyntheticAnomalies):
    """Anomalous versions of the items of ``base``: one pasted patch each, with its mask.

    Item ``i`` is ``base[i]`` with a patch cut from a donor: one of ``donors`` (tensors
    (3, H, W) in [0, 1]) when given, else another item of ``base``. The generator is seeded by
    ``(seed, i)``; ``paste`` are the keyword arguments of :func:`paste_patch`.
    """

    kind = "pasted"

    def __init__(
        self,
        base: torch.utils.data.Dataset,
        seed: int = 0,
        donors: list[torch.Tensor] | None = None,
        **paste,
    ) -> None:
        super().__init__(base, seed, **paste)
        self.donors = donors

    def anomaly(self, index: int, item: dict, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng(seed)
        if self.donors:
            donor = self.donors[int(rng.integers(0, len(self.donors)))]
        elif len(self.base) > 1:
            other = int(rng.integers(0, len(self.base) - 1))
            donor = self.base[other + (other >= index)]["image"]
        else:
            donor = torch.flip(item["image"], dims=(1, 2))
        return paste_patch(item["image"], donor, rng, **self.options)
