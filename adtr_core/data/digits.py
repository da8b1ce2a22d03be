"""scikit-learn's handwritten digits as a small one-class benchmark (ships offline).

``sklearn.datasets.load_digits`` holds 1,797 real 8x8 scans (pixel values 0..16) of the
digits 0..9 (UCI optdigits). They are scaled to 0..255, upsampled bilinearly to
``image_size`` and replicated to RGB, then split train/test with a stratified, seeded
split, so the CIFAR-10 one-class protocol (:class:`~adtr_core.data.oneclass.OneClassDataset`)
applies unchanged: one digit normal, the nine others anomalous.
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image

from adtr_core.data.errors import DatasetError

DIGIT_CLASSES = tuple(str(d) for d in range(10))


@functools.lru_cache(maxsize=4)
def _digits(image_size: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    if int(image_size) < 8:
        raise DatasetError(f"image_size must be at least 8 (the digits are 8x8), got {image_size}.")
    bunch = load_digits()
    gray = np.clip(np.rint(bunch.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)  # (N, 8, 8)
    size = int(image_size)
    up = np.stack(
        [np.asarray(Image.fromarray(g).resize((size, size), Image.BILINEAR)) for g in gray]
    )  # (N, S, S)
    return np.repeat(up[..., None], 3, axis=-1), bunch.target.astype(np.int64)


def load_digits_split(
    image_size: int = 32, test_fraction: float = 0.3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A deterministic stratified train/test split of the digits.

    Args:
        image_size: side S of the upsampled images.
        test_fraction: share of each class put in the test split.
        seed: seed of the split (same seed, same split).

    Returns:
        train_images uint8 (N_train, S, S, 3), train_targets int64 (N_train,),
        test_images uint8 (N_test, S, S, 3), test_targets int64 (N_test,); each split in
        the original order of the digits.
    """
    from sklearn.model_selection import train_test_split

    if not 0.0 < test_fraction < 1.0:
        raise DatasetError(f"test_fraction must be in (0, 1), got {test_fraction}.")
    images, targets = _digits(int(image_size))  # indexing below copies
    train_idx, test_idx = train_test_split(
        np.arange(len(targets)), test_size=test_fraction, stratify=targets, random_state=seed
    )
    train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
    return images[train_idx], targets[train_idx], images[test_idx], targets[test_idx]
