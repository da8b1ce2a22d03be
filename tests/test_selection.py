"""Choosing by validation only: a study's runs hold no test number until the final evaluation."""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest

from adtr_core.method.metrics import METRIC_KEYS
from adtr_core.runs.experiment import UNTESTED, run_experiment
from adtr_core.runs.selection import final_evaluation, summarise, validation_study

TEST_COLUMNS = (*METRIC_KEYS, "num_test", "num_test_anomalous")


def _test_columns(names) -> list[str]:
    return [n for n in names if n in TEST_COLUMNS]


def _stored(out) -> tuple[dict, pd.DataFrame]:
    return json.loads((out / "metrics.json").read_text()), pd.read_csv(out / "history.csv")


def test_a_study_logs_no_test_metric_until_the_final_evaluation(tiny_config, demo_data, tmp_path):
    base = dataclasses.replace(tiny_config, eval_every=1, val_kinds=("confetti", "small"))
    study = validation_study(
        {"now": {}, "no jitter": {"feature_jitter": 0.0}}, [base], seeds=[0], runs_dir=tmp_path
    )
    assert not _test_columns(study.table.columns) and not _test_columns(study.summary.columns)
    assert {"val_auroc", "val_confetti", "val_small"} <= set(study.table.columns)
    assert study.chosen in ("now", "no jitter") and len(study.runs) == 2
    for out in study.runs.values():
        metrics, history = _stored(out)
        # eval_every=1 asks for test evaluations; a validation-only run makes none
        assert not _test_columns(metrics) and not _test_columns(history.columns)
        assert not (out / "scores.csv").exists() and "val_auroc" in metrics
        assert UNTESTED in metrics
    trained_s = _stored(study.runs[("now", "demo/brick", 0)])[0]["wall_s"]
    final = final_evaluation(study, ["now"])
    assert list(final["candidate"]) == ["now"] and 0.0 <= final["image_auroc"][0] <= 1.0
    now = study.runs[("now", "demo/brick", 0)]
    metrics, _ = _stored(now)
    assert "image_auroc" in metrics and (now / "scores.csv").is_file() and UNTESTED not in metrics
    assert metrics["wall_s"] >= trained_s  # the training's time is kept, the test's added
    assert metrics["val_auroc"] == pytest.approx(study.table["val_auroc"][0])  # same checkpoint
    other, _ = _stored(study.runs[("no jitter", "demo/brick", 0)])
    assert not _test_columns(other)  # the candidate not reported is never tested


def test_a_tested_run_is_not_turned_into_a_validation_only_one(tiny_config, demo_data, tmp_path):
    run_experiment(tiny_config, tmp_path / "run", progress=False)
    with pytest.raises(ValueError, match="already scored on the test set"):
        run_experiment(tiny_config, tmp_path / "run", progress=False, test=False)
    metrics, _ = _stored(tmp_path / "run")
    assert "image_auroc" in metrics and (tmp_path / "run" / "scores.csv").is_file()


def test_a_validation_only_run_needs_a_validation_split(tiny_config, demo_data, tmp_path):
    cfg = dataclasses.replace(tiny_config, val_fraction=0.0)
    with pytest.raises(ValueError, match="validation-only run needs a validation split"):
        run_experiment(cfg, tmp_path / "run", progress=False, test=False)


def test_the_summary_pairs_each_candidate_with_the_baseline():
    table = pd.DataFrame(
        {
            "candidate": ["a"] * 4 + ["b"] * 4,
            "set": ["x", "x", "y", "y"] * 2,
            "seed": [0, 1] * 4,
            "val_auroc": [0.5, 0.6, 0.7, 0.8, 0.6, 0.7, 0.8, 0.7],
        }
    )
    summary = summarise(table, "a")
    assert summary.loc["b", "up"] == 3 and summary.loc["b", "down"] == 1
    assert summary.loc["a", "up"] == 0 and summary.loc["a", "sign_p"] == 1.0
    assert summary.loc["b", "val_auroc"] == pytest.approx(0.7)
    assert summary.loc["b", "x"] == pytest.approx(0.65)
