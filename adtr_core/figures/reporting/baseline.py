"""The trivial baseline of every table: per-pixel distance to the mean training image.

Evaluated with the same metrics as ADTR and reported next to it, to show how much of a data
set a model-free score already solves.
"""

from __future__ import annotations

import numpy as np
import torch

from adtr_core.data.sources import open_split
from adtr_core.method.metrics import compute_metrics
from adtr_core.runs.config import ExperimentConfig


def mean_image_baseline_metrics(cfg: ExperimentConfig) -> dict[str, float]:
    """Metrics of the trivial baseline on the test set of ``cfg``'s category.

    The baseline (:class:`adtr_core.method.baselines.MeanImageBaseline`) scores each pixel by its
    distance to the mean training image; image scores use the same reduction as ADTR's
    (``cfg.score_mode``, ``cfg.pool_size``).

    Returns:
        ``image_auroc``, ``pixel_auroc``, ``pixel_aupro`` (NaN without masks) and ``category``.
    """
    from adtr_core.data.sources import resolve_category
    from adtr_core.method.baselines import MeanImageBaseline
    from adtr_core.method.scoring import image_scores

    train, test = open_split(cfg, "train"), open_split(cfg, "test")
    baseline = MeanImageBaseline()
    baseline.fit(torch.stack([train[i]["image"] for i in range(len(train))]))  # (N, 3, S, S)
    items = [test[i] for i in range(len(test))]
    images = torch.stack([it["image"] for it in items])  # (M, 3, S, S)
    maps = torch.as_tensor(baseline.score_maps(images)).float()  # (M, S, S)
    scores = image_scores(maps, cfg.score_mode, cfg.pool_size)  # (M,)
    labels = np.array([int(it["label"]) for it in items])
    masks = torch.stack([it["mask"][0] for it in items]).numpy() if test.has_masks else None
    metrics = compute_metrics(
        labels, scores.numpy(), masks=masks, maps=maps.numpy() if masks is not None else None
    )
    metrics["category"] = resolve_category(cfg)
    return metrics
