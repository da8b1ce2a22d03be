"""Tests of adtr_core.figures.embedding: difference vectors, position grouping, deterministic t-SNE."""

import numpy as np
import pytest
import torch
from torch import nn

from adtr_core.figures.embedding import (
    collect_positions,
    difference_vectors,
    group_agreement,
    neighbour_agreement,
    tsne_embedding,
)
from adtr_core.method.masks import mask_to_grid


def _clusters(n: int = 40, dim: int = 16, gap: float = 8.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    a = rng.normal(0.0, 1.0, (n, dim))
    b = rng.normal(0.0, 1.0, (n, dim)) + gap
    return np.concatenate([a, b]), np.array(["normal"] * n + ["anomalous"] * n)


def test_tsne_keeps_separable_clusters_apart_and_is_deterministic():
    x, groups = _clusters()
    emb = tsne_embedding(x, perplexity=10, seed=0, pca_dim=8, max_iter=250)
    assert emb.shape == (80, 2) and np.isfinite(emb).all()
    assert neighbour_agreement(emb, groups, k=5) > 0.95
    np.testing.assert_allclose(
        emb, tsne_embedding(x, perplexity=10, seed=0, pca_dim=8, max_iter=250)
    )


def test_neighbour_agreement_is_low_for_mixed_groups():
    x, _ = _clusters(gap=0.0)
    groups = np.array(["normal", "anomalous"] * 40)
    emb = tsne_embedding(x, perplexity=10, seed=0, pca_dim=None, max_iter=250)
    assert neighbour_agreement(emb, groups, k=5) < 0.7


def test_balanced_agreement_is_not_fooled_by_a_large_group():
    # 60 "normal" points and 6 "anomalous" ones drawn from the same distribution
    x = np.random.default_rng(1).normal(size=(66, 2))
    groups = np.array(["normal"] * 60 + ["anomalous"] * 6)
    assert neighbour_agreement(x, groups, k=5, balanced=False) > 0.8
    assert neighbour_agreement(x, groups, k=5) < 0.65
    per_group = group_agreement(x, groups, k=5)
    assert per_group["normal"] > 0.8 and per_group["anomalous"] < 0.4


def test_tsne_rejects_too_few_points():
    with pytest.raises(ValueError, match="at least 5"):
        tsne_embedding(np.zeros((3, 4)))


class _Zero(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return f * self.w


def test_difference_vectors_and_positions_follow_masks():
    # 2 normal + 1 anomalous image, 2 channels on a 4x4 grid; the defect covers the top-left 2x2.
    feats = torch.zeros(3, 2, 4, 4)
    feats[2, :, :2, :2] = 5.0
    diffs = difference_vectors(_Zero(), feats)  # f_hat = 0, so d = f
    torch.testing.assert_close(diffs, feats)
    masks = torch.zeros(3, 1, 16, 16)
    masks[2, :, :8, :8] = 1.0
    assert mask_to_grid(masks, (4, 4), "fraction", threshold=0.5)[2].sum() == 4
    pos = collect_positions(diffs, [0, 0, 1], masks, max_per_group=100)
    assert pos.counts() == {"normal": 32, "anomalous": 4}
    anom = pos.groups == "anomalous"
    np.testing.assert_allclose(pos.scores[anom], np.sqrt(50.0))
    assert (pos.image_index[anom] == 2).all() and (pos.scores[~anom] == 0).all()
    sub = collect_positions(diffs, [0, 0, 1], masks, max_per_group=10, seed=1)
    assert sub.counts() == {"normal": 10, "anomalous": 4}


def test_collect_positions_needs_anomalous_cells():
    diffs = torch.randn(2, 3, 4, 4)
    with pytest.raises(ValueError, match="no anomalous positions"):
        collect_positions(diffs, [0, 1], torch.zeros(2, 1, 16, 16))
