"""The analytic FLOP count of ADTR against ``torch.utils.flop_counter`` on tiny models."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from adtr_core.method.losses import l_norm
from adtr_core.method.model import ADTR, ADTRConfig
from adtr_core.runs.config import ExperimentConfig
from adtr_core.runs.flops import experiment_step_flops, forward_macs, step_flops

TINY = dict(in_channels=24, hidden_dim=16, num_heads=2, dim_feedforward=40, grid=(3, 4))


def _counted(cfg: ADTRConfig, batch: int) -> tuple[int, int]:
    """FLOPs torch counts in one forward and one backward pass of a training step."""
    torch.manual_seed(0)
    model = ADTR(cfg).train()  # dropout > 0: attention runs as explicit products, all counted
    f = torch.randn(batch, cfg.in_channels, *cfg.grid)
    with FlopCounterMode(display=False) as fwd:
        loss = l_norm(f, model(f))
    with FlopCounterMode(display=False) as bwd:
        loss.backward()
    return fwd.get_total_flops(), bwd.get_total_flops()


@pytest.mark.parametrize(
    "variant",
    [
        {},
        {"use_attention": False},
        {"use_query": False},
        {"num_encoder_layers": 2, "num_decoder_layers": 1},
    ],
    ids=["adtr", "no_attention", "no_query", "2+1_layers"],
)
def test_analytic_count_matches_torch_flop_counter(variant):
    cfg = ADTRConfig(**{**TINY, "num_encoder_layers": 1, "num_decoder_layers": 2, **variant})
    forward, backward = _counted(cfg, batch=3)
    flops = step_flops(cfg, batch=3)
    assert flops.forward == forward
    assert flops.step_exact == forward + backward
    # the convention (3 x forward) also counts the features' gradient, which is not computed
    assert flops.step - flops.step_exact == 2 * 3 * 12 * 24 * 16


def test_parts_scale_as_the_formulas_say():
    cfg = ADTRConfig(**TINY)
    one, two = forward_macs(cfg, 1), forward_macs(cfg, 2)
    assert all(two[k] == 2 * one[k] for k in one)
    wide = forward_macs(ADTRConfig(**{**TINY, "grid": (6, 4)}), 1)  # twice the tokens
    assert wide["attention QK^T and AV"] == 4 * one["attention QK^T and AV"]  # K^2
    assert wide["FFN"] == 2 * one["FFN"]
    assert forward_macs(ADTRConfig(**TINY, use_attention=False), 1)["attention projections"] == 0


def test_experiment_count_uses_the_backbone_and_batch():
    cfg = ExperimentConfig(
        data="demo", hidden_dim=64, dim_feedforward=256, num_heads=2, batch_size=4
    )  # the quick size: Lite0's 512 channels on a 16 x 16 grid
    flops = experiment_step_flops(cfg)
    assert flops.macs["input projection"] == 4 * 256 * 512 * 64
    expected = step_flops(
        ADTRConfig(in_channels=512, hidden_dim=64, num_heads=2, dim_feedforward=256), 4
    )
    assert flops == expected
    with pytest.raises(ValueError, match="cnn"):
        experiment_step_flops(ExperimentConfig(data="demo", model="cnn"), 512, (16, 16))
