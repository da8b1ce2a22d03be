"""The ADTR detector as one plain torch module: images in, anomalib's predictions out.

:class:`AdtrModel` holds nothing of its own: the frozen backbone of
:mod:`adtr_core.method.backbone`, a reconstruction network of :mod:`adtr_core.method.reconstructors` and
the scoring of :mod:`adtr_core.method.scoring` (eq. 3, upsampling, smoothing, image score). In
training mode it returns the features and their reconstruction, for the loss (eq. 1); in eval
mode an :class:`anomalib.data.InferenceBatch` of image scores ``(B,)`` and anomaly maps
``(B, 1, S, S)``, the contract of anomalib's torch models.

Example:
    >>> from adtr_core.deploy.anomalib_model import AdtrModel
    >>> from adtr_core.runs.experiment import ExperimentConfig
    >>> model = AdtrModel.from_config(ExperimentConfig(image_size=64, hidden_dim=32,
    ...     num_heads=2, dim_feedforward=64, num_encoder_layers=1, num_decoder_layers=1))
    >>> out = model.eval()(torch.rand(2, 3, 64, 64))
    >>> out.anomaly_map.shape, out.pred_score.shape
    (torch.Size([2, 1, 64, 64]), torch.Size([2]))

See Also:
    :mod:`adtr_core.deploy.anomalib_model.lightning_model`: the anomalib module that trains it.
"""

from __future__ import annotations

import torch
from anomalib.data import InferenceBatch
from torch import nn

from adtr_core.method.backbone import Backbone
from adtr_core.method.scoring import ScoringConfig, score
from adtr_core.runs.config import ExperimentConfig
from adtr_core.runs.evaluation import scoring_config
from adtr_core.runs.experiment import build_feature_extractor, build_model


class AdtrModel(nn.Module):
    """Backbone → reconstruction → scoring.

    Args:
        backbone: the frozen feature extractor (normalises its [0, 1] input itself).
        reconstructor: the trained network, ``(B, C, h, w) -> (B, C, h, w)``.
        scoring: how ``f - f_hat`` becomes maps and image scores.
    """

    def __init__(self, backbone: Backbone, reconstructor: nn.Module, scoring: ScoringConfig):
        super().__init__()
        self.backbone = backbone
        self.reconstructor = reconstructor
        self.scoring = scoring

    @classmethod
    def from_config(cls, cfg: ExperimentConfig, seed: int | None = None) -> AdtrModel:
        """The backbone, network and scoring ``cfg`` names, built as ``adtr train`` builds them.

        Args:
            seed: seeds the network's initial weights as ``adtr train`` does (``cfg.seed``
                there), without moving the global generator; None: the global generator.
        """
        backbone = build_feature_extractor(cfg)
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            reconstructor = build_model(cfg, backbone.channels, backbone.grid)
        return cls(backbone, reconstructor, scoring_config(cfg))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) in [0, 1] -> backbone features (B, C, h, w), no gradient."""
        return self.backbone(images)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | InferenceBatch:
        """Training: ``(f, f_hat)``, each (B, C, h, w). Eval: scores (B,) and maps (B, 1, S, S)."""
        f = self.backbone(images)  # (B, C, h, w)
        f_hat = self.reconstructor(f)  # (B, C, h, w)
        if self.training:
            return f, f_hat
        maps, scores = score(f.float(), f_hat.float(), self.scoring)  # (B, S, S), (B,)
        return InferenceBatch(pred_score=scores, anomaly_map=maps[:, None])  # (B,), (B, 1, S, S)
