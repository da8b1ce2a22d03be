"""Distorted regions: synthetic anomalies that change a surface's structure, not its colours.

The third kind of synthetic anomaly of the validation split (:mod:`adtr_core.data.validation`).
Confetti noise (:mod:`adtr_core.data.confetti`) is a flat colour, and a patch pasted from
another image of the category (:mod:`adtr_core.data.pasted`) is invisible on a texture, where
every image shows the same surface: both say little about whether a model of grass or gravel
has learned the texture. A distorted region is made from the image itself: inside a soft
irregular blob, the image is resampled at another scale (the grain gets coarser or finer)
and through a smooth random displacement field (the structure is bent and torn), so that
colours and brightness stay those of the image while the local structure does not. The mask
is where the blend weight is at least one half. :class:`SmallDefectDataset` makes the same
region a few feature cells small and puts it where the image has structure (the ``small``
kind). Everything is drawn from a numpy generator
seeded per item: the same seed gives the same anomalies whatever the order of access.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from adtr_core.data.confetti import SyntheticAnomalies
from adtr_core.data.pasted import blob


def structure_point(image: torch.Tensor, rng: np.random.Generator) -> tuple[int, int]:
    """A pixel drawn with probability proportional to the image's local structure.

    The structure is the gradient magnitude of the grey image (Sobel), smoothed over a few
    pixels: on an object on a plain background the point falls on the object's edges and
    detail (a screw's thread, a bottle's rim), on a texture anywhere on it.

    Args:
        image: (3, H, W) in [0, 1].

    Returns:
        ``(row, column)``.
    """
    grey = image.double().mean(dim=0).numpy()  # (H, W)
    grad = np.hypot(ndimage.sobel(grey, axis=0), ndimage.sobel(grey, axis=1))
    weight = ndimage.gaussian_filter(grad, sigma=2.0).ravel()
    total = float(weight.sum())
    p = weight / total if total > 0 else None  # a flat image: uniform
    index = int(rng.choice(weight.size, p=p))
    return divmod(index, image.shape[2])


def distort_region(
    image: torch.Tensor,
    rng: np.random.Generator,
    size_range: tuple[float, float] = (0.12, 0.3),
    zoom_range: tuple[float, float] = (1.6, 2.6),
    displacement: tuple[float, float] = (0.08, 0.2),
    on_structure: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Resample a random blob of ``image`` at another scale and through a smooth warp.

    Args:
        image: (3, H, W) in [0, 1], the normal image.
        rng: numpy generator.
        size_range: the region's sides as fractions of the image side (each drawn on its own).
        zoom_range: the scale change; it magnifies or, with equal chance, shrinks the content.
        displacement: the warp's largest shift, as a fraction of the region's side.
        on_structure: centre the region on a :func:`structure_point` (else anywhere).

    Returns:
        ``(image, mask)``: (3, H, W) with the distorted region, (1, H, W) float {0, 1}.
    """
    _, h, w = image.shape
    rh = max(8, int(round(rng.uniform(*size_range) * h)))
    rw = max(8, int(round(rng.uniform(*size_range) * w)))
    rh, rw = min(rh, h), min(rw, w)
    if on_structure:
        cy0, cx0 = structure_point(image, rng)
        y0 = min(max(cy0 - rh // 2, 0), h - rh)
        x0 = min(max(cx0 - rw // 2, 0), w - rw)
    else:
        y0, x0 = int(rng.integers(0, h - rh + 1)), int(rng.integers(0, w - rw + 1))
    zoom = float(rng.uniform(*zoom_range))
    zoom = zoom if rng.random() < 0.5 else 1.0 / zoom
    yy, xx = np.mgrid[0:rh, 0:rw].astype(np.float64)
    cy, cx = y0 + (rh - 1) / 2, x0 + (rw - 1) / 2
    src_y = cy + (yy + y0 - cy) / zoom  # (rh, rw) source rows of the region's pixels
    src_x = cx + (xx + x0 - cx) / zoom
    amplitude = float(rng.uniform(*displacement)) * min(rh, rw)
    for src in (src_y, src_x):
        noise = ndimage.gaussian_filter(rng.standard_normal((rh, rw)), sigma=0.15 * min(rh, rw))
        src += amplitude * noise / max(float(np.abs(noise).max()), 1e-8)
    pixels = image.double().numpy()
    region = np.stack(
        [
            ndimage.map_coordinates(channel, [src_y, src_x], order=1, mode="reflect")
            for channel in pixels
        ]
    )  # (3, rh, rw)
    alpha = blob(rh, rw, rng)  # (rh, rw), 1 inside the blob
    out = image.clone()
    a = torch.from_numpy(alpha).to(image.dtype)[None]  # (1, rh, rw)
    old = out[:, y0 : y0 + rh, x0 : x0 + rw]
    new = torch.from_numpy(region).to(image.dtype)
    out[:, y0 : y0 + rh, x0 : x0 + rw] = (1 - a) * old + a * new
    mask = torch.zeros(1, h, w, dtype=image.dtype)
    mask[:, y0 : y0 + rh, x0 : x0 + rw] = (a >= 0.5).to(image.dtype)
    return out.clamp_(0.0, 1.0), mask


class DistortedRegionDataset(SyntheticAnomalies):
    """Anomalous versions of the items of ``base``: one distorted region each, with its mask.

    The generator of item ``i`` is seeded by ``(seed, i)``; ``distort`` are the keyword
    arguments of :func:`distort_region`.
    """

    kind = "distorted"

    def anomaly(self, index: int, item: dict, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        return distort_region(item["image"], np.random.default_rng(seed), **self.options)


SMALL_DEFECT = {"size_range": (0.04, 0.1), "on_structure": True}
"""The ``small`` kind: a distorted region 4-10 % of the side (10-26 px at 256), on structure."""


class SmallDefectDataset(DistortedRegionDataset):
    """Anomalous versions of the items of ``base``: one small distorted region on structure.

    The fourth validation kind (:mod:`adtr_core.data.validation`): small structural defects,
    such as a damaged thread or a chipped edge, where the other kinds cover large regions
    placed anywhere (on an object photographed on a plain background, mostly on the
    background). The region is :func:`distort_region`'s, a few feature cells across, centred
    on a :func:`structure_point`. ``options`` override :data:`SMALL_DEFECT`.
    """

    kind = "small"

    def __init__(self, base: torch.utils.data.Dataset, seed: int = 0, **options) -> None:
        super().__init__(base, seed, **{**SMALL_DEFECT, **options})
