"""The validation split: disjoint from training and test images, and the label-free self-check."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn

from adtr_core.data import open_dataset
from adtr_core.data.distorted import DistortedRegionDataset, distort_region
from adtr_core.data.pasted import PastedPatchDataset, paste_patch
from adtr_core.data.validation import MIN_HELD_OUT, Subset, anomalous_copies, holdout
from adtr_core.method.scoring import ScoringConfig
from adtr_core.runs.config import ExperimentConfig
from adtr_core.runs.evaluation import (
    SelfCheckWarning,
    self_check_warning,
    validation_auroc,
    validation_features,
)
from adtr_core.runs.experiment import run_experiment


def test_holdout_is_seeded_disjoint_and_at_least_the_minimum():
    split = holdout(60, 0.1, seed=3)
    assert len(split.held_out) == MIN_HELD_OUT  # 10 % of 60 is 6, the minimum is 8
    assert not set(split.train) & set(split.held_out)
    assert sorted(split.train + split.held_out) == list(range(60))
    assert holdout(60, 0.1, seed=3) == split
    assert holdout(60, 0.1, seed=4) != split
    assert len(holdout(209, 0.1, seed=0).held_out) == 21
    assert holdout(12, 0.1, seed=0).held_out == []  # too few images to hold any out
    assert holdout(60, 0.0, seed=0).held_out == []
    with pytest.raises(ValueError, match="val_fraction"):
        holdout(60, 1.0, seed=0)


class _Features(nn.Module):
    """A stand-in backbone: the image itself on a 4x4 grid (cheap, and anomalies show)."""

    channels, grid = 3, (4, 4)

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()), requires_grad=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return nn.functional.adaptive_avg_pool2d(images, self.grid) * self.scale

    def cache_key(self) -> str:
        return "test-pool-4x4"


class _Identity(nn.Module):
    """A reconstruction that outputs its input: the shortcut the self-check must catch."""

    def __init__(self) -> None:
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(()))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return f


def _demo(split: str):
    return open_dataset("demo", category="brick", split=split, image_size=32)


def test_validation_holds_no_test_image_and_no_trained_image():
    train, test = _demo("train"), _demo("test")
    split = holdout(len(train), 0.1, seed=0)
    backbone = _Features()
    from adtr_core.runs.features import extract_features

    all_train = extract_features(backbone, train, cache=False)
    val = validation_features(backbone, train, all_train, split, 0, {"cache": False})
    trained = {all_train.paths[i] for i in split.train}
    held = set(val.normal.paths)
    assert len(held) == len(split.held_out) >= MIN_HELD_OUT
    assert not held & trained
    test_paths = {str(p) for p in test.paths} if hasattr(test, "paths") else set()
    test_paths |= {str(test[i]["path"]) for i in range(len(test))}
    assert not held & test_paths
    for kind, fs in val.anomalous.items():
        sources = {p.split("#")[0] for p in fs.paths}
        assert sources == held, kind  # every anomalous copy is made from a held-out image
        assert all(p.endswith(f"#{kind}") for p in fs.paths)
        assert int(fs.labels.sum()) == len(fs)


def test_self_check_warns_for_a_model_that_outputs_its_input():
    train = _demo("train")
    split = holdout(len(train), 0.1, seed=0)
    backbone = _Features()
    from adtr_core.runs.features import extract_features

    all_train = extract_features(backbone, train, cache=False)
    val = validation_features(backbone, train, all_train, split, 0, {"cache": False})
    scoring = ScoringConfig(image_size=32, pool_size=8)
    values = validation_auroc(_Identity(), val, scoring)
    assert values["val_auroc"] == pytest.approx(0.5)  # every score is 0: no ranking at all
    line = self_check_warning(values["val_auroc"])
    assert line is not None and "not learned" in line and "\n" not in line
    assert self_check_warning(0.97) is None


def test_pasted_patch_changes_the_image_where_its_mask_is():
    rng = np.random.default_rng(0)
    image = torch.zeros(3, 64, 64)
    donor = torch.ones(3, 64, 64)
    out, mask = paste_patch(image, donor, rng)
    assert mask.shape == (1, 64, 64) and 0 < mask.sum() < 64 * 64 / 4
    assert (out[:, mask[0] > 0] > 0.3).all()  # blend weight >= 0.5 * opacity >= 0.35
    assert (out[:, mask[0] == 0] < 0.5).all()
    ds = PastedPatchDataset(Subset(_demo("train"), [0, 1, 2]), seed=1)
    a, b = ds[1], ds[1]
    assert torch.equal(a["image"], b["image"]) and a["label"] == 1 and a["mask"].sum() > 0
    assert set(anomalous_copies(ds.base, 0)) == {"confetti", "pasted", "distorted"}
    assert set(anomalous_copies(ds.base, 0, ("pasted",))) == {"pasted"}
    with pytest.raises(ValueError, match="unknown validation kind"):
        anomalous_copies(ds.base, 0, ("blur",))


def test_a_distorted_region_keeps_the_colours_and_changes_the_structure_under_its_mask():
    yy, xx = torch.meshgrid(torch.arange(96.0), torch.arange(96.0), indexing="ij")
    stripes = (0.5 + 0.5 * torch.sin(xx * 2 * math.pi / 8)).expand(3, 96, 96).contiguous()
    out, mask = distort_region(stripes, np.random.default_rng(0))
    inside, outside = mask[0] > 0, mask[0] == 0
    assert 0 < inside.sum() < 96 * 96 / 4
    change = (out - stripes).abs().mean(0)  # (96, 96)
    assert change[inside].mean() > 0.1  # changed under the mask ...
    assert (change[outside] == 0).float().mean() > 0.9  # ... and hardly outside (soft edges)
    assert out.min() >= 0 and out.max() <= 1  # resampled, not recoloured
    ds = DistortedRegionDataset(Subset(_demo("train"), [0, 1, 2]), seed=1)
    a, b, c = ds[1], ds[1], ds[2]
    assert torch.equal(a["image"], b["image"]) and not torch.equal(a["mask"], c["mask"])
    assert a["label"] == 1 and a["defect"] == "distorted" and a["mask"].sum() > 0


def test_a_run_records_the_validation_auroc(tiny_config, tmp_path):
    result = run_experiment(tiny_config, out_dir=tmp_path / "run", progress=False)
    assert 0.0 <= result.metrics["val_auroc"] <= 1.0
    assert result.metrics["num_val"] == MIN_HELD_OUT
    assert result.metrics["num_train"] == 60 - MIN_HELD_OUT
    assert "val_auroc" in result.history.columns
    assert not math.isnan(result.history["val_auroc"].iloc[-1])


def test_validation_and_test_curves_keep_their_own_cadences(tiny_config, tmp_path):
    # 52 trained images at batch 16: 4 steps an epoch, 28 steps are 7 epochs
    cfg = dataclasses.replace(
        tiny_config, epochs=None, steps=28, batch_size=16, val_every=8, eval_every=12
    )
    history = run_experiment(cfg, out_dir=tmp_path / "run", progress=False).history
    val = history.dropna(subset=["val_auroc"])["epoch"].tolist()
    test = history.dropna(subset=["image_auroc"])["epoch"].tolist()
    assert val == [2, 4, 6, 7] and test == [3, 6]  # validation after the last epoch too


def test_a_run_that_learns_nothing_warns(tiny_config, tmp_path):
    import dataclasses

    cfg = dataclasses.replace(tiny_config, lr=1e-9, init_output_bias=False)
    with pytest.warns(SelfCheckWarning, match="has not learned") as record:
        result = run_experiment(cfg, out_dir=tmp_path / "run", progress=False)
    assert "self_check" in result.metrics
    assert record[0].filename == __file__  # it points at the line that called run_experiment


def test_steps_auto_stops_on_the_validation_plateau():
    from adtr_core.runs.train import Plateau

    rule = Plateau("val_auroc", patience=2, lr_drops=1)
    rows = [{"val_auroc": v} for v in (0.6, 0.7, 0.7, 0.69)]
    assert rule.action(rows[:2]) == "continue"
    assert rule.action(rows) == "drop"
    assert rule.action([*rows, {"val_auroc": 0.65}]) == "continue"
    assert rule.action([*rows, {"val_auroc": 0.65}, {"val_auroc": 0.7}]) == "stop"
    cfg = ExperimentConfig(steps="auto", max_steps=100, batch_size=4, val_patience=2)
    epochs, milestones = cfg.epoch_budget(40)
    assert (epochs, milestones) == (10, ())
    assert cfg.train_config("cpu", num_train=40).plateau == rule
    with pytest.raises(ValueError, match="steps"):
        ExperimentConfig(steps="forever")
    with pytest.raises(ValueError, match="val_fraction"):
        ExperimentConfig(steps="auto", val_fraction=0.0)


def test_milestones_below_one_are_fractions_of_the_budget():
    cfg = ExperimentConfig(steps=1000, epochs=None, batch_size=4, lr_milestones=[0.8])
    assert cfg.epoch_budget(40) == (100, (80,))
    cfg = ExperimentConfig(steps=2000, epochs=None, batch_size=4, lr_milestones=[0.8])
    assert cfg.epoch_budget(40) == (200, (160,))
    assert ExperimentConfig(epochs=500, lr_milestones=[0.8]).epoch_budget(10) == (500, (400,))
    assert ExperimentConfig(epochs=500, lr_milestones=[400]).epoch_budget(10) == (500, (400,))


def test_the_small_kind_is_a_small_region_on_the_images_structure():
    from adtr_core.data.distorted import SmallDefectDataset, structure_point

    image = torch.full((3, 128, 128), 0.5)
    image[:, 40:88, 60:68] = 0.1  # a dark bar on a plain background: the only structure
    rng = np.random.default_rng(0)
    points = [structure_point(image, rng) for _ in range(50)]
    assert all(30 <= r <= 97 and 50 <= c <= 77 for r, c in points)  # on or beside the bar

    class One(torch.utils.data.Dataset):
        image_size, has_masks = 128, True

        def __len__(self):
            return 4

        def __getitem__(self, i):
            return {"image": image, "mask": torch.zeros(1, 128, 128), "label": 0, "path": "bar"}

    small = SmallDefectDataset(One(), seed=3)
    changed = 0
    for i in range(len(small)):
        item = small[i]
        rows, cols = torch.nonzero(item["mask"][0], as_tuple=True)
        assert item["defect"] == "small" and 0 < len(rows) <= (0.1 * 128) ** 2
        assert 24 <= rows.float().mean() <= 104 and 44 <= cols.float().mean() <= 84
        changed += int((item["image"] - image).abs().max() > 0.05)
    assert changed >= 3  # the bar's edges are bent (a region inside the flat bar may not show)
    assert ExperimentConfig(val_kinds=("confetti", "small")).val_kinds == ("confetti", "small")
