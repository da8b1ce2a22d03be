"""The per-group numbers printed beside the t-SNE figure (the paper's Fig. 5)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def tsne_group_summary(embedding: np.ndarray, positions: Any, k: int = 10) -> pd.DataFrame:
    """Per group of embedded positions: its size, score statistics and neighbour agreement.

    Args:
        embedding: (M, 2) t-SNE coordinates of the positions.
        positions: the embedded :class:`adtr_core.figures.embedding.PositionSet` (M positions).
        k: neighbours of :func:`adtr_core.figures.embedding.group_agreement`.

    Returns:
        DataFrame indexed by ``"positions of"`` (normal, anomalous): ``positions``, ``mean
        score``, ``median score`` and ``share of <k> nearest neighbours in own group``.
    """
    from adtr_core.figures.embedding import group_agreement

    counts = positions.counts()
    groups = list(counts)
    agreement = group_agreement(embedding, positions.groups, k=k)
    return pd.DataFrame(
        {
            "positions": [counts[g] for g in groups],
            "mean score": [float(positions.scores[positions.groups == g].mean()) for g in groups],
            "median score": [
                float(np.median(positions.scores[positions.groups == g])) for g in groups
            ],
            f"share of {k} nearest neighbours in own group": [agreement[g] for g in groups],
        },
        index=pd.Index(groups, name="positions of"),
    )
