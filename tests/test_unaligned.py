"""ADTR on an unaligned object, checked by training (slow: about 2 minutes a run, two runs).

On ``bottle-unaligned`` (every bottle image moved by its own rotation and shift) the decoder's
learned queries must find the input's tokens by position. With DETR's sine embedding and
independent query / key projections the cross-attention collapsed to uniform weights, and
the model learned the category only in part (near chance at 400 steps and one-cell windows);
the defaults (the grid embedding at scale 4, tied query / key start) learn it
(docs/fidelity.md).
"""

from __future__ import annotations

import pytest

from adtr_core.runs.config import ExperimentConfig
from adtr_core.runs.experiment import run_experiment
from adtr_core.runs.profiles import profile_run

DETR = {"pos_embed": "sine", "pos_scale": 1.0, "cross_qk_init": "xavier"}


def _quick(**changes) -> ExperimentConfig:
    base = {"data": "dev", "category": "bottle-unaligned", "device": "cpu", "threads": 2}
    return ExperimentConfig(**{**profile_run("quick", "train"), **base, **changes})


@pytest.mark.slow
def test_defaults_learn_an_unaligned_object_where_detr_settings_do_not(tmp_path):
    ours = run_experiment(_quick(), out_dir=tmp_path / "ours", progress=False).metrics
    detr = run_experiment(_quick(**DETR), out_dir=tmp_path / "detr", progress=False).metrics
    # Measured (seed 0, 600 steps, 64 px windows, three validation kinds): the defaults 0.994
    # image / 0.979 pixel AUROC, validation 0.933; DETR's settings 0.908 / 0.832, validation
    # 0.782 on the same held-out images, which warns.
    assert ours["image_auroc"] >= 0.95 and ours["pixel_auroc"] >= 0.95, ours
    assert ours["val_auroc"] >= 0.9 and "self_check" not in ours, ours
    assert detr["image_auroc"] <= ours["image_auroc"] - 0.05, (detr, ours)
    assert detr["pixel_auroc"] <= ours["pixel_auroc"] - 0.10, (detr, ours)
    assert detr["val_auroc"] <= ours["val_auroc"] - 0.10, (detr, ours)  # validation sees it
    assert "self_check" in detr, detr
