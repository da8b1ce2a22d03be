"""CNN reconstruction baseline, mean-image baseline and the reconstructor factory."""

from __future__ import annotations

import pytest
import torch

from adtr_core.method.baselines import (
    CNNReconstructor,
    CNNReconstructorConfig,
    MeanImageBaseline,
    count_parameters,
)
from adtr_core.method.model import ADTR
from adtr_core.method.reconstructors import RECONSTRUCTORS, build_reconstructor


def test_cnn_parameter_count_comparable_to_adtr() -> None:
    cnn = build_reconstructor("cnn", 720, (16, 16))
    adtr = build_reconstructor("adtr", 720, (16, 16))
    ratio = count_parameters(cnn) / count_parameters(adtr)
    print(f"CNN {count_parameters(cnn):,} / ADTR {count_parameters(adtr):,} = {ratio:.2f}")
    assert 0.5 <= ratio <= 2.0


@pytest.mark.parametrize("grid", [(4, 4), (5, 3), (2, 2), (1, 1)])
def test_cnn_shapes(grid: tuple[int, int]) -> None:
    model = CNNReconstructor(CNNReconstructorConfig(in_channels=24, hidden_dim=16, grid=grid))
    f = torch.randn(2, 24, *grid)
    out = model.eval()(f)
    assert out.shape == f.shape and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="in_channels"):
        model(torch.randn(2, 23, *grid))


def test_cnn_gradients_and_seed() -> None:
    torch.manual_seed(0)
    a = build_reconstructor("cnn", 24, (4, 4), hidden_dim=16)
    torch.manual_seed(0)
    b = build_reconstructor("cnn", 24, (4, 4), hidden_dim=16)
    f = torch.randn(3, 24, 4, 4)
    assert torch.equal(a.eval()(f), b.eval()(f))
    a.train()
    (a(f) - f).pow(2).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in a.parameters())


def test_build_reconstructor_kinds() -> None:
    tiny = dict(hidden_dim=16, num_heads=2, dim_feedforward=32, num_encoder_layers=1)
    models = {k: build_reconstructor(k, 24, (4, 4), **tiny) for k in RECONSTRUCTORS}
    assert isinstance(models["cnn"], CNNReconstructor)  # ADTR-only options are ignored there
    assert models["cnn"].cfg.hidden_dim == 16
    assert isinstance(models["adtr"], ADTR) and models["adtr"].cfg.use_attention
    assert not models["adtr_no_attention"].cfg.use_attention
    assert not models["adtr_no_query"].cfg.use_query
    for model in models.values():
        assert model.eval()(torch.randn(2, 24, 4, 4)).shape == (2, 24, 4, 4)
    with pytest.raises(ValueError, match="unknown reconstructor"):
        build_reconstructor("mlp", 24, (4, 4))
    with pytest.raises(ValueError, match="hidden_size"):
        build_reconstructor("adtr", 24, (4, 4), hidden_size=16)


def test_mean_image_baseline() -> None:
    g = torch.Generator().manual_seed(0)
    train = 0.5 + 0.01 * torch.randn(20, 3, 8, 8, generator=g)
    baseline = MeanImageBaseline()
    with pytest.raises(RuntimeError, match="fit"):
        baseline.score_maps(train)
    baseline.fit(train)
    assert torch.allclose(baseline.fit(list(train.split(6))).mean, train.mean(0), atol=1e-6)
    test = train[:2].clone()
    test[1, :, 2:4, 2:4] = 1.0  # a bright square defect
    maps = baseline.score_maps(test)
    assert maps.shape == (2, 8, 8)
    assert maps[0].max() < 0.1
    assert maps[1, 2:4, 2:4].min() > 0.5 > maps[1, 5:, 5:].max()
    constant = MeanImageBaseline().fit(torch.full((4, 3, 8, 8), 0.3))
    assert constant.score_maps(torch.full((1, 3, 8, 8), 0.3)).abs().max() < 1e-6
    # distance over RGB channels: a shift of 0.1 in every channel scores 0.1 * sqrt(3)
    shifted = constant.score_maps(torch.full((1, 3, 8, 8), 0.4))
    assert torch.allclose(shifted, torch.full((1, 8, 8), 0.1 * 3**0.5), atol=1e-5)


def test_every_trained_model_and_network_ablation_comes_from_the_registry() -> None:
    from adtr_core.figures.ablations import VARIANTS
    from adtr_core.runs.config import MODELS
    from adtr_core.runs.peers import PEER_MODELS

    assert MODELS == (*RECONSTRUCTORS, *PEER_MODELS)
    models = {v.changes["model"] for v in VARIANTS.values() if "model" in v.changes}
    assert models == set(RECONSTRUCTORS) - {"adtr"}
