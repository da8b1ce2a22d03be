"""The validation split: held-out normal training images and synthetic anomalies made from them.

Settings are chosen, and a finished model is checked, without test labels: a seeded share of
``train/good`` (``fraction``, at least ``minimum`` images) is held out of training, and three
anomalous copies of every held-out image are made: one with confetti noise
(:mod:`adtr_core.data.confetti`), one with a patch pasted from another held-out image
(:mod:`adtr_core.data.pasted`) and one with a region of its own surface distorted
(:mod:`adtr_core.data.distorted`; the kind a texture's model can be judged by, where the other
two are a flat colour and the same surface). The validation image AUROC is the mean, over
those kinds, of the AUROC of the clean held-out images against their anomalous copies. No
test image is touched and no training image is held out and trained on at once
(:func:`holdout`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from adtr_core.data.confetti import ConfettiDataset
from adtr_core.data.distorted import DistortedRegionDataset, SmallDefectDataset
from adtr_core.data.pasted import PastedPatchDataset

VALIDATION_KINDS = ("confetti", "pasted", "distorted")
ALL_VALIDATION_KINDS = (*VALIDATION_KINDS, "small")  # small: adtr_core.data.distorted
MIN_HELD_OUT = 8  # fewer held-out images make the validation AUROC too coarse to compare
MIN_TRAIN = 8  # images left for training when a split is made


@dataclass(frozen=True)
class Holdout:
    """Indices into a training split: what is trained on and what is held out (both sorted)."""

    train: list[int]
    held_out: list[int]


def holdout(n: int, fraction: float, seed: int, minimum: int = MIN_HELD_OUT) -> Holdout:
    """Split ``n`` training images into trained-on and held-out ones.

    ``round(fraction * n)`` images, at least ``minimum``, are held out, drawn with ``seed``;
    with ``fraction`` 0, or when fewer than ``minimum + MIN_TRAIN`` images exist, none is.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"val_fraction={fraction!r} is not valid: expected a number in [0, 1)")
    if fraction == 0 or n < minimum + MIN_TRAIN:
        return Holdout(list(range(n)), [])
    k = min(max(minimum, round(fraction * n)), n - MIN_TRAIN)
    chosen = np.random.default_rng([int(seed), 17]).choice(n, size=k, replace=False)
    held = sorted(int(i) for i in chosen)
    taken = set(held)
    return Holdout([i for i in range(n) if i not in taken], held)


class Subset(torch.utils.data.Dataset):
    """Items ``indices`` of a contract dataset, keeping its ``image_size`` and ``has_masks``."""

    def __init__(self, base: torch.utils.data.Dataset, indices: list[int]) -> None:
        self.base = base
        self.indices = list(indices)
        self.image_size = getattr(base, "image_size", None)
        self.has_masks = bool(getattr(base, "has_masks", True))

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        return self.base[self.indices[i]]


def anomalous_copies(
    held_out: torch.utils.data.Dataset, seed: int, kinds: tuple[str, ...] = VALIDATION_KINDS
) -> dict[str, torch.utils.data.Dataset]:
    """The synthetic anomalies of the validation split, one data set per kind in ``kinds``."""
    makers = {
        "confetti": lambda: ConfettiDataset(held_out, seed=int(seed) + 101),
        "pasted": lambda: PastedPatchDataset(held_out, seed=int(seed) + 102),
        "distorted": lambda: DistortedRegionDataset(held_out, seed=int(seed) + 103),
        "small": lambda: SmallDefectDataset(held_out, seed=int(seed) + 104),
    }
    unknown = sorted(set(kinds) - set(makers))
    if unknown:
        raise ValueError(
            f"unknown validation kind(s) {', '.join(unknown)}; expected {', '.join(makers)}"
        )
    return {kind: makers[kind]() for kind in kinds}
