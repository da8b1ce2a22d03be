"""Score maps and image scores (eqs. 2-3): hand-checked values on tiny tensors."""

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from adtr_core.method.scoring import (
    ScoringConfig,
    feature_distance,
    gaussian_smooth,
    image_scores,
    reference_score,
    score,
    upsample,
)


def test_feature_distance_is_channel_l2_norm():
    f = torch.zeros(1, 2, 1, 2)
    f_hat = torch.zeros(1, 2, 1, 2)
    f_hat[0, :, 0, 0] = torch.tensor([3.0, 4.0])  # a 3-4-5 triangle
    f_hat[0, :, 0, 1] = torch.tensor([-1.0, 0.0])
    d = feature_distance(f, f_hat)
    assert d.shape == (1, 1, 2)
    torch.testing.assert_close(d, torch.tensor([[[5.0, 1.0]]]))


def test_feature_distance_shape_mismatch_raises():
    with pytest.raises(ValueError, match="same shape"):
        feature_distance(torch.zeros(1, 2, 4, 4), torch.zeros(1, 3, 4, 4))


def test_upsample_bilinear_half_pixel_centres():
    maps = torch.tensor([[[0.0, 1.0], [0.0, 1.0]]])  # (1, 2, 2)
    up = upsample(maps, 4)
    assert up.shape == (1, 4, 4)
    # align_corners=False: output x samples the input at (x + 0.5) / 2 - 0.5, clamped.
    torch.testing.assert_close(up[0, 0], torch.tensor([0.0, 0.25, 0.75, 1.0]))


def test_gaussian_smooth_identity_and_constant():
    maps = torch.rand(2, 12, 12, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(gaussian_smooth(maps, 0.0), maps)
    const = torch.full((1, 8, 8), 3.0)
    # sigma = 4 wants radius 16 > side: the kernel is truncated and renormalised.
    torch.testing.assert_close(gaussian_smooth(const, 4.0), const)


def test_gaussian_smooth_matches_scipy_mirror_mode():
    rng = np.random.default_rng(0)
    x = rng.random((2, 40, 40)).astype(np.float32)
    ours = gaussian_smooth(torch.from_numpy(x), 2.0).numpy()
    # torch "reflect" padding is scipy's "mirror"; truncate=4 gives the same radius (8).
    ref = np.stack([ndimage.gaussian_filter(a, 2.0, mode="mirror", truncate=4.0) for a in x])
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_image_scores_modes_by_hand():
    maps = torch.zeros(1, 32, 32)
    maps[0, 5, 7] = 1.0
    # one hot pixel: the best 16x16 window holds it once -> 1/256
    assert image_scores(maps, "max_avgpool", 16).item() == pytest.approx(1 / 256)
    assert image_scores(maps, "mean").item() == pytest.approx(1 / 1024)
    assert image_scores(maps, "max").item() == 1.0
    p = 1 / 1024
    assert image_scores(maps, "std").item() == pytest.approx(math.sqrt(p - p * p), rel=1e-5)
    # a window larger than the map is clamped: max_avgpool becomes the mean
    assert image_scores(maps, "max_avgpool", 64).item() == pytest.approx(1 / 1024)
    # pool_size 1 = plain maximum
    assert image_scores(maps, "max_avgpool", 1).item() == 1.0
    with pytest.raises(ValueError, match="unknown score mode"):
        image_scores(maps, "median")


def test_score_detects_the_badly_reconstructed_cell():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(2, 8, 4, 4, generator=g)
    f_hat = f + 0.01 * torch.randn(2, 8, 4, 4, generator=g)
    f_hat[1, :, 2, 1] += 5.0  # image 1: one cell badly reconstructed
    with torch.no_grad():
        maps, scores = score(f, f_hat, ScoringConfig(image_size=64, sigma=2.0, pool_size=16))
    assert maps.shape == (2, 64, 64) and scores.shape == (2,)
    assert maps.dtype == torch.float32 and torch.isfinite(maps).all()
    assert scores[1] > 10 * scores[0]
    peak = divmod(int(maps[1].argmax()), 64)  # (row, col) in pixels
    assert peak[0] // 16 == 2 and peak[1] // 16 == 1


def test_score_bf16_and_no_upsampling():
    f = torch.randn(1, 4, 8, 8).bfloat16()
    maps, scores = score(
        f, torch.zeros_like(f), ScoringConfig(image_size=None, sigma=0.0, mode="mean")
    )
    assert maps.shape == (1, 8, 8) and maps.dtype == torch.float32
    ref = f.float().norm(dim=1).mean()
    torch.testing.assert_close(scores[0], ref)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_score_stays_on_gpu():
    f = torch.randn(2, 16, 16, 16, device="cuda")
    maps, scores = score(f, torch.zeros_like(f))
    assert maps.device.type == "cuda" and scores.device.type == "cuda"
    cpu_maps, cpu_scores = score(f.cpu(), torch.zeros_like(f).cpu())
    torch.testing.assert_close(maps.cpu(), cpu_maps, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(scores.cpu(), cpu_scores, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "cfg",
    [
        ScoringConfig(image_size=64, sigma=4.0, pool_size=16),
        ScoringConfig(image_size=32, sigma=0.0, pool_size=8),
        ScoringConfig(image_size=None, sigma=1.0, pool_size=16),  # pool clamped to the grid
        ScoringConfig(image_size=64, sigma=2.0, mode="mean"),
    ],
)
def test_matrix_score_matches_the_step_by_step_definition(cfg):
    g = torch.Generator().manual_seed(0)
    f = torch.randn(3, 8, 4, 4, generator=g)
    f_hat = f + torch.randn(3, 8, 4, 4, generator=g)
    maps, scores = reference_score(f, f_hat, cfg)
    maps2, scores2 = score(f, f_hat, cfg)
    torch.testing.assert_close(maps2, maps, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(scores2, scores, atol=1e-5, rtol=1e-5)
