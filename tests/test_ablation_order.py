"""Table 4 on real images: the orderings the paper reports and that hold at the quick
profile's settings on the embedded bottle category (slow: a few minutes)."""

from __future__ import annotations

import dataclasses

import pytest

from adtr_core.figures.ablations import ablation_orderings, ablation_table, variant_configs
from adtr_core.runs.config import ExperimentConfig
from adtr_core.runs.experiment import run_experiment
from adtr_core.runs.profiles import profile_params


@pytest.mark.slow
def test_quick_table4_orderings_on_bottle(tmp_path, monkeypatch):
    monkeypatch.delenv("MVTEC_ROOT", raising=False)
    params = profile_params("quick", "05_ablations")
    fields = {f.name for f in dataclasses.fields(ExperimentConfig)}
    values = {k: v for k, v in params.items() if k in fields}
    base = ExperimentConfig(**{**values, "data": "mvtec", "category": "bottle", "device": "cpu"})
    configs = variant_configs(base, ["no_query", "pixels", "last_layer"])
    results = {
        k: run_experiment(cfg, out_dir=tmp_path / k, progress=False) for k, cfg in configs.items()
    }
    found = ablation_orderings(ablation_table(configs, results))
    assert found["ADTR above the transformer without query"], found
    assert found["features above pixels"], found
    assert found["multi-scale above the last layer"], found
