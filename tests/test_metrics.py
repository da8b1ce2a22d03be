"""AUROC and AU-PRO on cases small enough to check by hand."""

import math

import numpy as np
import pytest
import torch
from helpers import metrics_with_mean_row
from scipy import ndimage

from adtr_core.method.metrics import (
    aupro,
    compute_metrics,
    image_auroc,
    pixel_auroc,
    pro_curve,
)


def test_image_auroc_perfect_reversed_ties():
    labels = np.array([0, 0, 1, 1])
    assert image_auroc(labels, [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert image_auroc(labels, [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert image_auroc(torch.tensor(labels), torch.ones(4)) == 0.5
    # pairs (pos, neg): (0.5>0.1) yes, (0.5>0.9) no, (0.95>0.1) yes, (0.95>0.9) yes -> 3/4
    assert image_auroc(labels, [0.1, 0.9, 0.5, 0.95]) == pytest.approx(0.75)


def test_image_auroc_single_class_warns_nan():
    with pytest.warns(UserWarning, match="one class"):
        assert math.isnan(image_auroc([0, 0, 0], [0.1, 0.2, 0.3]))


def test_pixel_auroc_by_hand():
    masks = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])  # (1, 2, 2)
    assert pixel_auroc(masks, masks * 2.0) == 1.0
    assert pixel_auroc(masks, 1.0 - masks) == 0.0
    # the anomalous pixel (0.5) beats 2 of the 3 normal ones (0.1, 0.2) but not 0.9
    maps = torch.tensor([[[0.5, 0.9], [0.1, 0.2]]])
    assert pixel_auroc(masks[:, None], maps[:, None]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="same shape"):
        pixel_auroc(masks, torch.zeros(1, 4, 4))


def _two_region_case():
    """Region A (1 px, score 1.0), region B (3 px, 0.5), 10 normal px of which 2 score 0.8."""
    mask = np.zeros((1, 2, 7), np.float32)
    score = np.zeros((1, 2, 7), np.float32)
    mask[0, 0, 0] = 1
    score[0, 0, 0] = 1.0  # region A
    mask[0, 1, 4:7] = 1
    score[0, 1, 4:7] = 0.5  # region B, not touching A
    score[0, 0, 5:7] = 0.8  # two false positives of 10 normal pixels
    return mask, score


def test_pro_curve_by_hand():
    mask, score = _two_region_case()
    fpr, pro = pro_curve(mask, score)
    # thresholds 1.0: A found (PRO 1/2); 0.8: +2 normal (FPR 0.2); 0.5: B found; 0: all
    np.testing.assert_allclose(fpr, [0.0, 0.0, 0.2, 0.2, 1.0])
    np.testing.assert_allclose(pro, [0.0, 0.5, 0.5, 1.0, 1.0])


def test_aupro_by_hand_and_normalisation():
    mask, score = _two_region_case()
    # limit 0.3: 0.2 * 0.5 (only A found) + 0.1 * 1.0 = 0.2 -> / 0.3
    assert aupro(mask, score) == pytest.approx(0.2 / 0.3)
    # limit 0.1: PRO is 0.5 over the whole range
    assert aupro(mask, score, fpr_limit=0.1) == pytest.approx(0.5)
    # limit 1.0: 0.1 + 0.8
    assert aupro(mask, score, fpr_limit=1.0) == pytest.approx(0.9)
    with pytest.raises(ValueError, match="fpr_limit"):
        aupro(mask, score, fpr_limit=0.0)


def test_aupro_interpolates_at_the_limit():
    mask = np.array([[[1, 0, 0, 0, 0]]], np.float32)
    score = np.array([[[0.5, 0.0, 0.0, 0.0, 0.9]]], np.float32)
    # 0.9 is a normal pixel: FPR 1/4, PRO 0; then 0.5: PRO 1; then 0: FPR 1.
    # Curve (0,0) -> (0.25,0) -> (0.25,1) -> (1,1), interpolated at 0.3: area 0.05 * 1
    assert aupro(mask, score) == pytest.approx(0.05 / 0.3)
    # between (0,0) and (1,1) on a constant map the curve is interpolated at the limit
    assert aupro(mask, np.zeros_like(score)) == pytest.approx(0.15)


def test_aupro_perfect_and_constant_maps():
    rng = np.random.default_rng(0)
    masks = np.zeros((3, 16, 16), np.float32)
    masks[0, 2:5, 3:9] = 1
    masks[1, 10:12, 10:15] = 1
    masks[1, 0, 0] = 1
    assert aupro(masks, masks) == pytest.approx(1.0)
    assert aupro(torch.from_numpy(masks), torch.from_numpy(masks) + 0.1) == pytest.approx(1.0)
    # ties collapse: a constant map is the diagonal PRO = FPR, area 0.3^2 / 2 / 0.3
    assert aupro(masks, np.full_like(masks, 0.7)) == pytest.approx(0.15)
    # a random map is ~ the diagonal too (many regions, so the average is stable)
    many = np.zeros((40, 16, 16), np.float32)
    many[:, 4:9, 4:9] = 1
    assert aupro(many, rng.random(many.shape)) == pytest.approx(0.15, abs=0.04)


def test_aupro_eight_connectivity():
    mask = np.zeros((1, 6, 6), np.float32)
    mask[0, 1, 1] = mask[0, 2, 2] = 1  # diagonal neighbours: ONE region of 2 pixels
    mask[0, 5, 5] = 1  # a separate region of 1 pixel
    score = np.zeros_like(mask)
    score[0, 5, 5] = 1.0  # only the single pixel is found
    fpr, pro = pro_curve(mask, score)
    # two regions -> PRO 1/2 at FPR 0 (with 4-connectivity it would be 1/3)
    np.testing.assert_allclose(pro[:2], [0.0, 0.5])
    np.testing.assert_allclose(fpr[:2], [0.0, 0.0])


def test_aupro_partial_region_overlap():
    mask = np.zeros((1, 4, 4), np.float32)
    mask[0, :2, :2] = 1  # one region of 4 pixels
    score = np.zeros_like(mask)
    score[0, 0, :2] = 1.0  # half the region found
    fpr, pro = pro_curve(mask, score)
    np.testing.assert_allclose(pro[:2], [0.0, 0.5])
    assert aupro(mask, score) == pytest.approx(0.5 + 0.5 * 0.3 / 2)  # 0.5 -> 0.65 linearly


def _pro_brute_force(masks, maps, thresholds):
    """(FPR, PRO) per threshold, straight from the definition (slow, for the check only)."""
    regions = []  # (image index, boolean region mask)
    for i, m in enumerate(masks):
        lab, n = ndimage.label(m > 0.5, structure=np.ones((3, 3)))
        regions += [(i, lab == j) for j in range(1, n + 1)]
    normal = masks < 0.5
    out = []
    for t in thresholds:
        pred = maps >= t
        out.append((pred[normal].mean(), np.mean([pred[i][r].mean() for i, r in regions])))
    return np.array(out)


def test_pro_curve_matches_brute_force():
    rng = np.random.default_rng(3)
    masks = (ndimage.uniform_filter(rng.random((4, 20, 20)), 5) > 0.55).astype(np.float32)
    maps = (rng.random((4, 20, 20)) + masks * 0.4).round(2)  # rounding makes ties
    fpr, pro = pro_curve(masks, maps)
    thresholds = np.unique(maps)[::-1]
    ref = _pro_brute_force(masks, maps, thresholds)
    np.testing.assert_allclose(fpr[1:], ref[:, 0], atol=1e-12)
    np.testing.assert_allclose(pro[1:], ref[:, 1], atol=1e-12)
    coarse = aupro(masks, maps, num_thresholds=500)
    assert coarse == pytest.approx(aupro(masks, maps), abs=5e-3)


def test_aupro_no_region_is_nan():
    with pytest.warns(UserWarning, match="no anomalous region"):
        assert math.isnan(aupro(np.zeros((2, 4, 4)), np.random.rand(2, 4, 4)))


def test_compute_metrics_keys_and_nans():
    labels = np.array([0, 1])
    scores = np.array([0.1, 0.9])
    masks = np.zeros((2, 1, 8, 8), np.float32)
    masks[1, 0, 2:4, 2:4] = 1
    out = compute_metrics(labels, scores, masks, masks)
    assert out == {"image_auroc": 1.0, "pixel_auroc": 1.0, "pixel_aupro": pytest.approx(1.0)}
    no_masks = compute_metrics(labels, scores)
    assert no_masks["image_auroc"] == 1.0
    assert math.isnan(no_masks["pixel_auroc"]) and math.isnan(no_masks["pixel_aupro"])
    with pytest.warns(UserWarning, match="no anomalous pixel"):
        empty = compute_metrics(labels, scores, np.zeros_like(masks), masks)
    assert math.isnan(empty["pixel_aupro"])
    with pytest.warns(UserWarning, match="one class"):
        one = compute_metrics([0, 0], scores)
    assert math.isnan(one["image_auroc"])


def test_metrics_table_mean_row_ignores_nan():
    table = metrics_with_mean_row(
        {
            "brick": {"image_auroc": 1.0, "pixel_auroc": 0.8, "pixel_aupro": float("nan")},
            "grass": {"image_auroc": 0.5, "pixel_auroc": float("nan"), "pixel_aupro": 0.6},
        }
    )
    assert list(table.index) == ["brick", "grass", "mean"]
    assert table.loc["mean", "image_auroc"] == pytest.approx(0.75)
    assert table.loc["mean", "pixel_auroc"] == pytest.approx(0.8)
    assert table.loc["mean", "pixel_aupro"] == pytest.approx(0.6)
    with pytest.raises(ValueError, match="reserved"):
        metrics_with_mean_row({"mean": {"image_auroc": 1.0}})
