"""Evaluating a reconstructor on precomputed features: test metrics and the validation AUROC.

:func:`evaluate_features` gives the metrics, the per-image score table and the score maps of
the test set; :func:`validation_auroc` scores held-out normal training images against their
synthetic anomalous copies (no test labels), and :func:`self_check_warning` says when that
AUROC shows a model that has not learned its images.

See Also:
    :mod:`adtr_core.method.scoring` (eq. 3) and :mod:`adtr_core.method.metrics`, which these wire together.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from adtr_core.data.validation import VALIDATION_KINDS, Holdout, Subset, anomalous_copies
from adtr_core.method.metrics import compute_metrics
from adtr_core.method.scoring import ScoringConfig, score
from adtr_core.runs.config import ExperimentConfig
from adtr_core.runs.features import FeatureSet, extract_features, map_reconstructions


@torch.no_grad()
def predict_features(
    model: nn.Module,
    features: torch.Tensor,
    scoring: ScoringConfig,
    batch_size: int = 64,
    dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Score maps and image scores of precomputed features.

    Args:
        features: (N, C, h, w) backbone features.
        dtype: autocast dtype of the reconstruction (None: float32); scoring is float32.

    Returns:
        maps (N, S, S) float32 on the CPU, scores (N,).
    """

    def keep(f: torch.Tensor, f_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m, s = score(f, f_hat, scoring)  # (B, S, S), (B,)
        return m.float().cpu(), s.float().cpu()

    batches = map_reconstructions(model, features, keep, batch_size, dtype)
    return torch.cat([m for m, _ in batches]), torch.cat([s for _, s in batches])


def scoring_config(cfg: ExperimentConfig) -> ScoringConfig:
    return ScoringConfig(
        image_size=cfg.image_size, sigma=cfg.sigma, mode=cfg.score_mode, pool_size=cfg.pool_size
    )


def evaluate_features(
    model: nn.Module, test: FeatureSet, scoring: ScoringConfig, dtype: torch.dtype | None = None
):
    """Metrics, a per-image score table and the score maps of ``model`` on ``test``."""
    maps, scores = predict_features(model, test.features, scoring, dtype=dtype)
    labels = test.labels.numpy()
    masks = test.masks.numpy()[:, 0] if test.masks is not None else None
    metrics = compute_metrics(
        labels, scores.numpy(), masks=masks, maps=maps.numpy() if masks is not None else None
    )
    table = pd.DataFrame(
        {"path": test.paths, "defect": test.defects, "label": labels, "score": scores.numpy()}
    )
    return metrics, table, (maps.numpy().astype(np.float16) if masks is not None else None)


SELF_CHECK_AUROC = 0.85
"""Below this validation AUROC on synthetic anomalies a run warns that it has not learned.

From the development data at the quick profile, with the three validation kinds and 64 px
windows (docs/fidelity.md). Learned object models scored 0.905-1.0 (bottle, bottle-small,
bottle-unaligned; seeds 0-2; the lowest a bottle-unaligned model whose test image AUROC was
0.997); a model that half learned bottle-unaligned (DETR's position embedding at 600 steps:
test 0.908 image, 0.832 pixel AUROC) scored 0.782. The threshold sits between the two. Brick
models score 0.85-0.93; on grass and gravel every model stays at 0.71-0.78 and warns: the
validation cannot confirm such textures.
"""


class SelfCheckWarning(UserWarning):
    """A finished run whose validation AUROC says that the model has not learned its images."""


@dataclass
class ValidationFeatures:
    """Features of the validation split: the held-out normal images and their anomalous copies."""

    normal: FeatureSet
    anomalous: dict[str, FeatureSet]


def validation_features(
    backbone: nn.Module,
    train_ds,
    all_train: FeatureSet,
    split: Holdout,
    seed: int,
    extract: dict,
    kinds: tuple[str, ...] = VALIDATION_KINDS,
) -> ValidationFeatures | None:
    """The validation split's features (None when nothing is held out)."""
    if not split.held_out:
        return None
    held = Subset(train_ds, split.held_out)
    copies = anomalous_copies(held, seed, kinds)
    return ValidationFeatures(
        normal=all_train.subset(split.held_out),
        anomalous={k: extract_features(backbone, ds, **extract) for k, ds in copies.items()},
    )


def validation_auroc(
    model: nn.Module, val: ValidationFeatures, scoring: ScoringConfig, dtype=None
) -> dict[str, float]:
    """``val_auroc`` (mean over the kinds) and ``val_<kind>``: held-out normal vs anomalous."""
    from sklearn.metrics import roc_auc_score

    _, normal = predict_features(model, val.normal.features, scoring, dtype=dtype)
    out = {}
    for kind, fs in val.anomalous.items():
        _, anomalous = predict_features(model, fs.features, scoring, dtype=dtype)
        y = np.r_[np.zeros(len(normal)), np.ones(len(anomalous))]
        out[f"val_{kind}"] = float(roc_auc_score(y, np.r_[normal.numpy(), anomalous.numpy()]))
    out["val_auroc"] = float(np.mean(list(out.values())))
    return out


def self_check_warning(val_auroc: float) -> str | None:
    """One line when the validation AUROC is below :data:`SELF_CHECK_AUROC`, else None."""
    if val_auroc >= SELF_CHECK_AUROC:
        return None
    return (
        f"self-check: validation AUROC {val_auroc:.3f} < {SELF_CHECK_AUROC} on synthetic "
        f"anomalies of held-out training images: the model has not learned these images, or "
        f"they are too irregular for the synthetic anomalies to show it (fine textures such as "
        f"grass warn at any budget); try more steps (--steps auto), or --profile paper on a GPU"
    )
