"""t-SNE of feature-difference vectors, normal vs anomalous positions (the paper's Fig. 5).

ADTR scores a position ``u`` by the norm of the feature difference ``d(:, u) = f(:, u) -
f_hat(:, u)`` (eqs. 2-3). The paper's Fig. 5 embeds these difference vectors in 2-D with
t-SNE and shows that the vectors of anomalous positions form a separate group from those of
normal positions. This module holds the three steps, each a plain function:

1. :func:`difference_vectors`: ``d = f - f_hat`` for a batch of backbone features;
2. :func:`collect_positions`: one vector per grid position, grouped as *normal* (every
   position of a normal test image) or *anomalous* (positions of an anomalous image that lie
   inside its defect mask brought to the feature grid, covered by more than half, see
   :func:`adtr_core.method.masks.mask_to_grid`), subsampled deterministically;
3. :func:`tsne_embedding`: scikit-learn's TSNE with a fixed seed and PCA initialisation
   (optionally after a PCA to ``pca_dim`` dimensions), so the same input gives the same
   embedding.

:func:`neighbour_agreement` and :func:`group_agreement` measure how separated the groups
are in the embedding (the share of each point's nearest neighbours in the same group), numbers
to report beside the figure.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from adtr_core.method.masks import mask_to_grid
from adtr_core.runs.features import map_reconstructions

NORMAL, ANOMALOUS = "normal", "anomalous"


@torch.no_grad()
def difference_vectors(
    model: nn.Module, features: torch.Tensor, batch_size: int = 64
) -> torch.Tensor:
    """The feature differences ``d = f - f_hat`` of a trained reconstruction model (eq. 2).

    Args:
        model: a reconstruction network, ``f (B, C, h, w) -> f_hat (B, C, h, w)``.
        features: (N, C, h, w) backbone features.
        batch_size: features per forward pass.

    Returns:
        (N, C, h, w) float32 on the CPU.
    """
    if features.ndim != 4:
        raise ValueError(f"features must be (N, C, h, w); got shape {tuple(features.shape)}")
    diffs = map_reconstructions(
        model, features, lambda f, f_hat: (f - f_hat).float().cpu(), batch_size
    )  # (B, C, h, w) each
    return torch.cat(diffs)


@dataclass
class PositionSet:
    """Feature-difference vectors of grid positions, with their group and score.

    Attributes:
        vectors: (M, C) float32, one difference vector ``d(:, u)`` per position.
        groups: M group names, ``"normal"`` or ``"anomalous"``.
        scores: (M,) the position's score ``||d(:, u)||_2`` (eq. 3, before upsampling).
        image_index: (M,) index of the test image each position comes from.
    """

    vectors: np.ndarray
    groups: np.ndarray
    scores: np.ndarray
    image_index: np.ndarray

    def __len__(self) -> int:
        return len(self.vectors)

    def counts(self) -> dict[str, int]:
        return {g: int((self.groups == g).sum()) for g in (NORMAL, ANOMALOUS)}


def collect_positions(
    diffs: torch.Tensor,
    labels: torch.Tensor | np.ndarray,
    masks: torch.Tensor | None,
    max_per_group: int = 1000,
    mask_threshold: float = 0.5,
    seed: int = 0,
) -> PositionSet:
    """Difference vectors of normal positions and of anomalous (in-defect) positions.

    Normal positions are all grid positions of normal images (label 0). Anomalous positions
    are the positions of anomalous images (label 1) whose cell lies inside the defect mask
    (area coverage > ``mask_threshold``); the other positions of anomalous images are left
    out, being neither clearly normal nor anomalous. Without masks (one-class data), every
    position of an anomalous image counts as anomalous. Each group is subsampled to at most
    ``max_per_group`` positions with a seeded generator.

    Args:
        diffs: (N, C, h, w) feature differences.
        labels: (N,) image labels, 1 = anomalous.
        masks: (N, 1, S, S) pixel masks, or None.
        max_per_group: the most positions kept per group.
        mask_threshold: share of a cell's pixels that must be anomalous (area average above
            it, :func:`adtr_core.method.masks.mask_to_grid` with ``rule="fraction"``).
        seed: seed of the subsampling.

    Returns:
        A :class:`PositionSet` (normal positions first, then anomalous ones).
    """
    if diffs.ndim != 4:
        raise ValueError(f"diffs must be (N, C, h, w); got shape {tuple(diffs.shape)}")
    n, c, h, w = diffs.shape
    labels_t = torch.as_tensor(np.asarray(labels)).long().flatten()
    if labels_t.shape[0] != n:
        raise ValueError(f"{n} difference maps but {labels_t.shape[0]} labels")
    is_anom_img = (labels_t == 1)[:, None, None].expand(n, h, w)  # (N, h, w)
    if masks is not None:
        inside = mask_to_grid(masks, (h, w), "fraction", mask_threshold)  # (N, h, w)
        anomalous = is_anom_img & inside
    else:
        anomalous = is_anom_img.clone()
    normal = ~is_anom_img  # (N, h, w)
    if not normal.any():
        raise ValueError("no normal test images: the embedding needs both groups")
    if not anomalous.any():
        raise ValueError(
            "no anomalous positions: no anomalous test image has a defect mask covering a "
            f"grid cell by more than {mask_threshold:.0%}; lower mask_threshold"
        )
    vectors = diffs.permute(0, 2, 3, 1).reshape(n * h * w, c)  # (N*h*w, C)
    image_index = torch.arange(n)[:, None].expand(n, h * w).reshape(-1)  # (N*h*w,)
    rng = np.random.default_rng(seed)
    parts = []
    for name, sel in ((NORMAL, normal), (ANOMALOUS, anomalous)):
        idx = sel.reshape(-1).nonzero().flatten().numpy()
        if len(idx) > max_per_group:
            idx = np.sort(rng.choice(idx, size=max_per_group, replace=False))
        parts.append((name, idx))
    idx_all = np.concatenate([idx for _, idx in parts])
    vec = vectors[idx_all].numpy().astype(np.float32)  # (M, C)
    return PositionSet(
        vectors=vec,
        groups=np.concatenate([np.full(len(idx), name) for name, idx in parts]),
        scores=np.linalg.norm(vec, axis=1),
        image_index=image_index[idx_all].numpy(),
    )


def tsne_embedding(
    vectors: np.ndarray,
    perplexity: float = 30.0,
    seed: int = 0,
    pca_dim: int | None = 50,
    max_iter: int = 1000,
) -> np.ndarray:
    """A deterministic 2-D t-SNE of row vectors.

    The vectors are optionally reduced to ``pca_dim`` dimensions with PCA (fast and exact
    enough for t-SNE), then embedded with scikit-learn's TSNE (PCA initialisation, fixed
    ``random_state``). The perplexity is clamped below the number of points.

    Args:
        vectors: (M, D) float.
        perplexity: t-SNE perplexity (clamped to ``(M - 1) / 3``).
        seed: random state of PCA and t-SNE.
        pca_dim: dimensions kept by the PCA before t-SNE; None or >= D: no PCA.
        max_iter: t-SNE optimisation steps (scikit-learn's minimum is 250).

    Returns:
        (M, 2) float32.
    """
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    x = np.asarray(vectors, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"vectors must be (M, D); got shape {x.shape}")
    if len(x) < 5:
        raise ValueError(f"t-SNE needs at least 5 points, got {len(x)}")
    if pca_dim is not None and pca_dim < min(x.shape):
        x = PCA(n_components=pca_dim, random_state=seed).fit_transform(x)  # (M, pca_dim)
    perp = float(min(perplexity, (len(x) - 1) / 3.0))
    tsne = TSNE(
        n_components=2,
        perplexity=perp,
        init="pca",
        learning_rate="auto",
        max_iter=max(int(max_iter), 250),
        random_state=seed,
        method="barnes_hut",
    )
    return tsne.fit_transform(x).astype(np.float32)  # (M, 2)


def group_agreement(embedding: np.ndarray, groups: np.ndarray, k: int = 10) -> dict[str, float]:
    """Per group: the mean share of its points' ``k`` nearest neighbours (itself excluded)
    that belong to the same group. 1.0: the group forms its own clusters."""
    from sklearn.neighbors import NearestNeighbors

    emb = np.asarray(embedding, dtype=np.float64)
    grp = np.asarray(groups)
    if len(emb) != len(grp):
        raise ValueError(f"{len(emb)} points but {len(grp)} group labels")
    k = int(min(k, len(emb) - 1))
    if k < 1:
        raise ValueError("neighbour agreement needs at least 2 points")
    _, idx = NearestNeighbors(n_neighbors=k + 1).fit(emb).kneighbors(emb)  # (M, k+1)
    same = (grp[idx[:, 1:]] == grp[:, None]).mean(axis=1)  # (M,)
    return {str(g): float(same[grp == g].mean()) for g in np.unique(grp)}


def neighbour_agreement(
    embedding: np.ndarray, groups: np.ndarray, k: int = 10, balanced: bool = True
) -> float:
    """How separated the groups are: the share of each point's ``k`` nearest neighbours
    (itself excluded) that belong to its own group, averaged over points.

    With ``balanced=True`` the average is taken per group first (:func:`group_agreement`)
    and then over groups, so a large group cannot hide a mixed small one: 1.0 means fully
    separated groups, and mixed groups score about ``1 / number of groups`` (0.5 for normal
    vs anomalous). With ``balanced=False`` it is the plain mean over points (mixed groups:
    about the share of the larger group).
    """
    per_group = group_agreement(embedding, groups, k)
    if balanced:
        return float(np.mean(list(per_group.values())))
    grp = np.asarray(groups)
    return float(sum(per_group[str(g)] * (grp == g).sum() for g in np.unique(grp)) / len(grp))
