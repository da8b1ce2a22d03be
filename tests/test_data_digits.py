"""scikit-learn digits as a one-class benchmark."""

from __future__ import annotations

import numpy as np

from adtr_core.data import load_digits_split, open_dataset


def test_split_shapes_determinism_and_stratification():
    xtr, ytr, xte, yte = load_digits_split(image_size=16, test_fraction=0.3, seed=0)
    assert xtr.dtype == np.uint8 and xtr.shape[1:] == (16, 16, 3)
    assert len(xtr) + len(xte) == 1797 and abs(len(xte) - 0.3 * 1797) < 2
    assert np.array_equal(xtr[..., 0], xtr[..., 2])  # gray replicated to RGB
    assert xtr.max() > 200 and xtr.min() == 0  # 0..16 scaled to 0..255
    for d in range(10):  # stratified: every class keeps ~30 % in test
        share = (yte == d).sum() / ((ytr == d).sum() + (yte == d).sum())
        assert abs(share - 0.3) < 0.02
    again = load_digits_split(image_size=16, test_fraction=0.3, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip((xtr, ytr, xte, yte), again))
    other = load_digits_split(image_size=16, test_fraction=0.3, seed=1)
    assert not np.array_equal(yte, other[3])


def test_default_size_and_open_dataset():
    xtr, *_ = load_digits_split()
    assert xtr.shape[1:] == (32, 32, 3)
    train = open_dataset("digits", category=3)
    test = open_dataset("digits", category="3", split="test")
    assert train.image_size == 32 and set(train.labels.tolist()) == {0}
    assert len(train) == 128 and len(test) == 540 and test.labels.sum() == 540 - 55
    assert "digit_0" in test.defects and test[0]["image"].shape == (3, 32, 32)
