"""Tests of adtr_core.method.masks: the rules that bring a pixel mask to the feature grid."""

import pytest
import torch
import torch.nn.functional as F

from adtr_core.method.masks import mask_to_grid


def test_mask_to_grid_max_and_mean():
    mask = torch.zeros(1, 1, 32, 32)
    mask[0, 0, 3, 20] = 1.0  # one pixel in cell (0, 1) of a 2x2 grid of 16x16 cells
    y = mask_to_grid(mask, (2, 2))
    torch.testing.assert_close(y, torch.tensor([[[0.0, 1.0], [0.0, 0.0]]]))
    y_soft = mask_to_grid(mask, (2, 2), rule="fraction")
    assert y_soft[0, 0, 1].item() == pytest.approx(1 / 256)
    with pytest.raises(ValueError, match="one channel"):
        mask_to_grid(torch.zeros(1, 3, 32, 32), (2, 2))


def test_threshold_keeps_cells_strictly_above_it():
    mask = torch.zeros(1, 8, 8)  # a 2x2 grid of 4x4 cells
    mask[0, :4, :2] = 1.0  # cell (0, 0): half covered
    mask[0, :4, 4:7] = 1.0  # cell (0, 1): 3/4 covered
    frac = mask_to_grid(mask, (2, 2), "fraction")
    torch.testing.assert_close(frac, torch.tensor([[[0.5, 0.75], [0.0, 0.0]]]))
    inside = mask_to_grid(mask, (2, 2), "fraction", threshold=0.5)
    assert inside.dtype == torch.bool
    assert inside.tolist() == [[[False, True], [False, False]]]  # 0.5 is not above 0.5
    any_cell = mask_to_grid(mask, (2, 2), "any", threshold=0.0)
    assert any_cell.tolist() == [[[True, True], [False, False]]]


def test_rules_agree_with_pooling_on_uneven_cells():
    g = torch.Generator().manual_seed(0)
    mask = (torch.rand(3, 1, 30, 30, generator=g) > 0.7).float()  # 30 px over 4 cells: uneven
    frac = mask_to_grid(mask, (4, 4), "fraction")
    torch.testing.assert_close(frac, F.interpolate(mask, size=(4, 4), mode="area")[:, 0])
    torch.testing.assert_close(mask_to_grid(mask, (4, 4)), F.adaptive_max_pool2d(mask, 4)[:, 0])
    torch.testing.assert_close(mask_to_grid(mask[:, 0], (4, 4), "fraction"), frac)  # (B, H, W)


def test_a_mask_on_the_grid_is_used_as_is():
    soft = torch.tensor([[[0.2, 0.0], [1.0, 0.6]]])  # (1, 2, 2)
    for rule in ("any", "fraction"):
        torch.testing.assert_close(mask_to_grid(soft[:, None], (2, 2), rule), soft)


def test_unknown_rule_and_shape_raise():
    with pytest.raises(ValueError, match="unknown mask rule"):
        mask_to_grid(torch.zeros(1, 1, 8, 8), (2, 2), rule="max")
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\) or \(B, H, W\)"):
        mask_to_grid(torch.zeros(8, 8), (2, 2))
