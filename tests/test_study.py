"""The fidelity study's tables and curves (notebook 09), from results written by hand."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import pandas as pd
import pytest

matplotlib.use("Agg")

from adtr_core.figures.plots.study import study_figure  # noqa: E402
from adtr_core.figures.study import (  # noqa: E402
    mean_sd_table,
    parse_set,
    peer_levels,
    study_configs,
    study_curves,
    study_table,
)
from adtr_core.runs.config import ExperimentConfig  # noqa: E402
from adtr_core.runs.results import RunResult  # noqa: E402

RUN = dict(image_size=64, hidden_dim=32, num_heads=2, steps=20, epochs=None, batch_size=4)


def _result(category, model, seed, image, val=None, history=None):
    cfg = ExperimentConfig(data="dev", category=category, model=model, seed=seed, **RUN)
    metrics = {"image_auroc": image, "pixel_auroc": image - 0.1, "num_train": 8, "steps": 20}
    if val is not None:
        metrics["val_auroc"] = val
    history = history if history is not None else pd.DataFrame({"epoch": [1]})
    return RunResult(Path("x"), cfg, metrics, history, pd.DataFrame())


def test_a_study_set_is_source_and_category():
    assert parse_set("dev/bottle-unaligned") == ("dev", "bottle-unaligned")
    with pytest.raises(ValueError, match="source/category"):
        parse_set("bottle")


def test_every_set_model_and_seed_is_one_config_and_only_trained_runs_evaluate_the_test_set():
    configs = study_configs(RUN, ["dev/bottle-small", "demo/grass"], ["adtr"], ["padim"], [0, 1], 2)
    assert len(configs) == 2 * 2 * 2
    assert {(c.data, c.category) for c in configs} == {("dev", "bottle-small"), ("demo", "grass")}
    assert {c.eval_every for c in configs if c.model == "adtr"} == {2}
    assert {c.eval_every for c in configs if c.model == "padim"} == {0}
    assert [c.seed for c in configs[:2]] == [0, 1]


def test_the_table_gives_mean_and_spread_over_seeds_and_the_curves_count_steps():
    history = pd.DataFrame(
        {"epoch": [1, 2], "val_auroc": [0.6, 0.8], "image_auroc": [math.nan, 0.9]}
    )
    results = [
        _result("bottle-small", "adtr", 0, 0.90, 0.8, history),
        _result("bottle-small", "adtr", 1, 0.80, 0.7, history),
        _result("bottle-small", "patchcore", 0, 0.95),
    ]
    table = study_table(results)
    adtr = table.loc[("dev/bottle-small", "adtr")]
    assert adtr["image_auroc"] == pytest.approx(85.0)
    assert adtr["image_auroc_sd"] == pytest.approx(7.0711, abs=1e-3)  # sample sd of 90, 80
    assert adtr["seeds"] == 2 and adtr["val_auroc"] == pytest.approx(75.0)
    assert math.isnan(table.loc[("dev/bottle-small", "patchcore"), "image_auroc_sd"])
    text = mean_sd_table(table)
    assert text.loc["dev/bottle-small", "adtr"] == "85.0 ± 7.1"
    assert text.loc["dev/bottle-small", "patchcore"] == "95.0"  # one seed: no spread
    assert peer_levels(table).loc["dev/bottle-small", "patchcore"] == pytest.approx(95.0)

    curves = study_curves(results)
    assert set(curves["model"]) == {"adtr"}  # peers have no curve
    assert curves["step"].tolist() == [2, 4, 2, 4]  # 8 images in batches of 4: 2 steps an epoch
    assert curves["image_auroc"].isna().tolist() == [True, False, True, False]
    fig = study_figure(curves, peer_levels(table), budget=4, caption="a caption")
    assert len(fig.axes) == 2
    with pytest.raises(ValueError, match="no trained run"):
        study_figure(curves.iloc[:0], peer_levels(table))


def test_a_curve_ends_at_the_end_of_training_with_the_tables_metrics():
    # the test cadence (2 epochs) does not fall on the last epoch (3): the last point is the
    # end-of-training evaluation, and an epoch that evaluated keeps its own value
    history = pd.DataFrame(
        {"epoch": [1, 2, 3], "val_auroc": [0.6, 0.7, 0.8], "image_auroc": [math.nan, 0.7, math.nan]}
    )
    curves = study_curves([_result("bottle-small", "adtr", 0, 0.93, 0.8, history)])
    assert curves["step"].tolist() == [2, 4, 6]
    assert curves["image_auroc"].tolist()[1:] == [0.7, 0.93]
    assert math.isnan(curves["image_auroc"].iloc[0])
    assert curves["pixel_auroc"].iloc[-1] == pytest.approx(0.83)
    assert curves["val_auroc"].tolist() == [0.6, 0.7, 0.8]
    unmasked = _result("bottle-small", "adtr", 0, 0.93, 0.8, history)
    unmasked.metrics["pixel_auroc"] = None  # data without masks: no pixel metric to end on
    assert math.isnan(study_curves([unmasked])["pixel_auroc"].iloc[-1])
