"""Confetti noise (FCDD): determinism and masks that cover exactly the pasted blobs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adtr_core.data import ArrayDataset, ConfettiDataset, DatasetError, confetti_noise


def test_deterministic_for_a_seed():
    image = torch.rand(3, 48, 48, generator=torch.Generator().manual_seed(0))
    a, ma = confetti_noise(image, 7)
    b, mb = confetti_noise(image, torch.Generator().manual_seed(7))
    c, mc = confetti_noise(image, 8)
    assert torch.equal(a, b) and torch.equal(ma, mb)
    assert not torch.equal(ma, mc)
    assert a.shape == (3, 48, 48) and ma.shape == (1, 48, 48) and ma.dtype == torch.float32
    assert not torch.equal(image, a)  # the input is not modified in place, the output is


@pytest.mark.parametrize("seed", range(5))
def test_mask_is_exactly_the_changed_pixels(seed):
    image = torch.full((3, 64, 64), 0.5)
    out, mask = confetti_noise(image, seed)
    changed = (out != image).any(0)
    assert mask.sum() > 0 and set(torch.unique(mask).tolist()) == {0.0, 1.0}
    assert torch.equal(changed, mask[0].bool())
    assert 0.0 <= out.min() and out.max() <= 1.0


def test_translucent_blobs_change_only_masked_pixels():
    image = torch.rand(3, 40, 40, generator=torch.Generator().manual_seed(1))
    out, mask = confetti_noise(image, 3, opacity=(0.3, 0.6), shapes=("ellipse",))
    assert not ((out != image).any(0) & (mask[0] == 0)).any()


def test_shapes_sizes_and_errors():
    image = torch.zeros(3, 100, 100)
    _, small = confetti_noise(image, 0, num_blobs=(1, 1), size_range=(0.05, 0.05), max_rotation=0)
    _, large = confetti_noise(image, 0, num_blobs=(1, 1), size_range=(0.5, 0.5), max_rotation=0)
    assert small.sum() < large.sum() <= 51 * 51
    with pytest.raises(DatasetError, match="shapes"):
        confetti_noise(image, 0, shapes=("star",))
    with pytest.raises(DatasetError, match=r"\(3, S, S\)"):
        confetti_noise(torch.zeros(48, 48), 0)


def test_confetti_dataset_deterministic_per_index():
    images = np.random.default_rng(0).integers(0, 256, (4, 24, 24, 3), dtype=np.uint8)
    base = ArrayDataset(images, [0] * 4)
    ds = ConfettiDataset(base, seed=3)
    assert len(ds) == 4 and ds.has_masks and ds.labels.tolist() == [1] * 4 and ds.image_size == 24
    first = [ds[i] for i in range(4)]
    again = ConfettiDataset(base, seed=3)[2]  # another instance, out of order
    assert torch.equal(first[2]["image"], again["image"]) and torch.equal(
        first[2]["mask"], again["mask"]
    )
    assert not torch.equal(first[0]["mask"], first[1]["mask"])
    other = ConfettiDataset(base, seed=4)[2]
    assert not torch.equal(other["mask"], again["mask"])
    item = first[1]
    assert (
        item["label"] == 1 and item["defect"] == "confetti" and item["path"] == "array/1#confetti"
    )
    changed = (item["image"] != base[1]["image"]).any(0)
    assert not (changed & (item["mask"][0] == 0)).any()
