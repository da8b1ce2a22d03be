"""Analytic FLOPs of ADTR's forward pass and training step: the matrix products only.

ADTR (:mod:`adtr_core.method.model`) over ``B`` feature maps of ``C`` channels on ``K = h * w``
tokens, width ``D``, FFN width ``F``, multiplies (multiply-adds of its forward pass):

- input and output projections: ``B K C D`` each;
- every attention (encoder self, decoder self, decoder cross): the q, k, v and output
  projections, ``4 B K D^2``; ``Q K^T`` and ``A V``, ``B K^2 D`` each (over all heads);
- every FFN: ``2 B K D F``.

Element-wise work (biases, LayerNorm, softmax, dropout, the loss) is not counted. A
training step is counted as 3 x the forward's multiply-adds x 2 FLOPs (the backward pass
computes the gradients of both operands of every product); :attr:`StepFlops.step_exact`
leaves out the one product the backward pass skips, the gradient of the input projection
with respect to the backbone features, which need none. ``torch.utils.flop_counter``
counts the same products (``tests/test_flops.py``).

Example:
    >>> from adtr_core.method.model import ADTRConfig
    >>> flops = step_flops(ADTRConfig(in_channels=512, hidden_dim=64, num_heads=2,
    ...                               dim_feedforward=256), batch=4)
    >>> round(flops.step / 1e9, 2)  # GFLOP of one training step at the quick size
    5.64

See Also:
    ``benchmarks/speed.py``: achieved FLOP/s of the training step against the machine's
    matrix-multiply peak.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from adtr_core.method.model import ADTR, ADTRConfig


@dataclass(frozen=True)
class StepFlops:
    """Multiply-adds of one forward pass by part, and the FLOPs they make.

    Attributes:
        macs: forward multiply-adds by part (``"input projection"``, ``"output projection"``,
            ``"attention projections"``, ``"attention QK^T and AV"``, ``"FFN"``).
        batch: B, the feature maps of one step.
    """

    macs: dict[str, int]
    batch: int

    @property
    def forward(self) -> int:
        """FLOPs of the forward pass (2 per multiply-add)."""
        return 2 * sum(self.macs.values())

    @property
    def step(self) -> int:
        """FLOPs of a training step: 3 x the forward's (forward, and two products backward)."""
        return 3 * self.forward

    @property
    def step_exact(self) -> int:
        """:attr:`step` less the gradient of the input projection with respect to the features."""
        return self.step - 2 * self.macs["input projection"]


def forward_macs(cfg: ADTRConfig, batch: int) -> dict[str, int]:
    """Multiply-adds of ADTR's forward pass over ``batch`` feature maps, by part."""
    b, k, c = batch, cfg.num_tokens, cfg.in_channels
    d, f = cfg.hidden_dim, cfg.dim_feedforward
    attentions = cfg.num_encoder_layers + 2 * cfg.num_decoder_layers if cfg.use_attention else 0
    ffns = cfg.num_encoder_layers + cfg.num_decoder_layers
    return {
        "input projection": b * k * c * d,
        "output projection": b * k * d * c,
        "attention projections": attentions * 4 * b * k * d * d,
        "attention QK^T and AV": attentions * 2 * b * k * k * d,
        "FFN": ffns * 2 * b * k * d * f,
    }


def step_flops(cfg: ADTRConfig, batch: int) -> StepFlops:
    """FLOPs of one training step of ADTR ``cfg`` over ``batch`` feature maps."""
    return StepFlops(forward_macs(cfg, batch), batch)


def experiment_step_flops(
    cfg, in_channels: int | None = None, grid: tuple[int, int] | None = None
) -> StepFlops:
    """FLOPs of one training step (``cfg.batch_size`` feature maps) of an experiment's model.

    Args:
        cfg: an :class:`adtr_core.runs.config.ExperimentConfig` whose ``model`` is ADTR or one
            of its Table 4 variants.
        in_channels, grid: C and (h, w) of the backbone features; None: read from the
            backbone ``cfg`` names (built with random weights, nothing is downloaded).

    Raises:
        ValueError: ``cfg.model`` is not a transformer (the CNN has no analytic count here).
    """
    from adtr_core.runs.experiment import build_feature_extractor, build_model

    if in_channels is None or grid is None:
        backbone = build_feature_extractor(dataclasses.replace(cfg, backbone_weights="random"))
        in_channels = backbone.channels if in_channels is None else in_channels
        grid = backbone.grid if grid is None else grid
    model = build_model(cfg, in_channels, grid)
    if not isinstance(model, ADTR):
        raise ValueError(f"no analytic FLOP count for model {cfg.model!r}: only ADTR's variants")
    return step_flops(model.cfg, cfg.batch_size)
