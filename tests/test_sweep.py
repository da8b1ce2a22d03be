"""Tests for the sweep runner: grids, resumability, the Ray executor, the results table."""

from __future__ import annotations

import dataclasses
import os
import sys
import types

import numpy as np
import pandas as pd
import pytest

from adtr_core.runs import sweep
from adtr_core.runs.config import ExperimentConfig
from adtr_core.runs.experiment import resolve_config
from adtr_core.runs.sweep import grid, results_table, run_dir, run_sweep


def test_grid_is_the_cartesian_product_last_axis_fastest():
    base = ExperimentConfig(epochs=3)
    cfgs = grid(base, category=["brick", "grass"], model=["adtr", "cnn", "adtr_no_query"])
    assert len(cfgs) == 6
    assert [(c.category, c.model) for c in cfgs[:3]] == [
        ("brick", "adtr"),
        ("brick", "cnn"),
        ("brick", "adtr_no_query"),
    ]
    assert all(c.epochs == 3 for c in cfgs)
    assert len({c.run_name() for c in cfgs}) == 6


def test_grid_refuses_unknown_fields_and_empty_axes():
    with pytest.raises(ValueError, match="not an ExperimentConfig field.*valid fields"):
        grid(ExperimentConfig(), categroy=["brick"])
    with pytest.raises(ValueError, match="no values"):
        grid(ExperimentConfig(), category=[])
    with pytest.raises(ValueError, match="list of values"):
        grid(ExperimentConfig(), category="brick")


def test_unknown_executor_is_refused(tiny_config):
    with pytest.raises(ValueError, match="unknown executor 'dask'"):
        run_sweep([tiny_config], executor="dask")


def test_run_dir_uses_the_resolved_category(tmp_path):
    cfg = ExperimentConfig(data="demo", category=None)
    resolved = resolve_config(cfg)  # the first demo category, and the thread count
    assert resolved.category == "brick" and resolved.threads == int(os.environ["ADTR_THREADS"])
    named = dataclasses.replace(cfg, category="brick", threads=resolved.threads)
    assert run_dir(cfg, tmp_path) == tmp_path / named.run_name()


def test_sweep_trains_once_then_loads(tiny_config, tmp_path, monkeypatch):
    """The real run_experiment on a tiny config; the second sweep loads, not retrains."""
    calls = []
    real = sweep.run_experiment

    def counting(cfg, out_dir=None, progress=True, test=True):
        calls.append(cfg.run_name())
        return real(cfg, out_dir=out_dir, progress=progress, test=test)

    monkeypatch.setattr(sweep, "run_experiment", counting)
    cfgs = [tiny_config, tiny_config]  # equal configs run once
    first = run_sweep(cfgs, runs_dir=tmp_path)
    assert len(calls) == 1
    assert [r.extra["reused"] for r in first] == [False, False]
    assert first[0].out_dir == tmp_path / resolve_config(tiny_config).run_name()
    assert 0.0 <= first[0].metrics["image_auroc"] <= 1.0
    assert first[0].score_maps.shape[1:] == (64, 64)

    second = run_sweep(cfgs, runs_dir=tmp_path)
    assert len(calls) == 1, "a finished run was trained again"
    assert [r.extra["reused"] for r in second] == [True, True]
    assert second[0].metrics == first[0].metrics
    pd.testing.assert_frame_equal(second[0].scores, first[0].scores)
    np.testing.assert_array_equal(second[0].score_maps, first[0].score_maps)

    # An unfinished run (no metrics.json) is run again: run_experiment resumes it.
    (tmp_path / resolve_config(tiny_config).run_name() / "metrics.json").unlink()
    third = run_sweep([tiny_config], runs_dir=tmp_path)
    assert len(calls) == 2 and third[0].extra["reused"] is False


def test_folder_with_another_config_is_refused(tiny_config, tmp_path):
    from adtr_core.io import write_json

    out = run_dir(tiny_config, tmp_path)
    write_json(out / "config.json", {**tiny_config.to_dict(), "epochs": 7})
    with pytest.raises(ValueError, match="holds another config.*epochs"):
        run_sweep([tiny_config], runs_dir=tmp_path)


def _fake_result(cfg: ExperimentConfig, auroc: float):
    from adtr_core.runs.results import RunResult

    return RunResult(
        out_dir=f"runs/{cfg.run_name()}",
        config=cfg,
        metrics={"image_auroc": auroc, "pixel_auroc": 0.5, "pixel_aupro": 0.25, "wall_s": 1.5},
        history=pd.DataFrame(),
        scores=pd.DataFrame(),
    )


def test_results_table_shows_the_varying_fields_and_metrics():
    cfgs = grid(ExperimentConfig(category="brick"), model=["adtr", "cnn"], seed=[0, 1])
    table = results_table([_fake_result(c, 0.1 * i) for i, c in enumerate(cfgs)])
    assert list(table.columns) == [
        "category",
        "model",
        "seed",
        "image_auroc",
        "pixel_auroc",
        "pixel_aupro",
        "wall_s",
        "run",
    ]
    assert table["image_auroc"].tolist() == pytest.approx([0.0, 0.1, 0.2, 0.3])
    assert table["run"].iloc[0] == cfgs[0].run_name()
    assert results_table([]).empty


class _FakeRay(types.ModuleType):
    """Just enough of Ray's API to drive the dispatch code: tasks run when submitted."""

    def __init__(self) -> None:
        super().__init__("ray")
        self.options: dict = {}

    def remote(self, **options):
        self.options = options

        def wrap(fn):
            return types.SimpleNamespace(remote=lambda *a: self._call(fn, a))

        return wrap

    @staticmethod
    def _call(fn, args):
        try:
            return ("ok", fn(*args))
        except Exception as err:  # noqa: BLE001
            return ("err", err)

    @staticmethod
    def wait(refs, num_returns=1):
        return refs[:num_returns], refs[num_returns:]

    @staticmethod
    def get(ref):
        kind, value = ref
        if kind == "err":
            raise value
        return value


def test_ray_dispatch_runs_every_pending_config_and_names_failures(tmp_path, monkeypatch):
    """The Ray dispatch (task options, env forwarding, error collection) on a fake Ray."""
    fake = _FakeRay()
    monkeypatch.setitem(sys.modules, "ray", fake)
    monkeypatch.setattr(sweep, "ray_init", lambda address, num_cpus: {"CPU": 2.0, "GPU": 1.0})
    monkeypatch.setenv("ADTR_CACHE", str(tmp_path / "cache"))
    seen = []

    def fake_run(cfg, out_dir=None, progress=True, test=True):
        import os

        seen.append((cfg.category, os.environ["ADTR_CACHE"]))
        if cfg.category == "gravel":
            raise ValueError("broken category")

    monkeypatch.setattr(sweep, "run_experiment", fake_run)
    cfgs = grid(ExperimentConfig(epochs=1), category=["brick", "grass", "gravel"])
    pending = {tmp_path / c.run_name(): c for c in cfgs}
    with pytest.raises(ValueError, match="broken category") as info:
        sweep._run_ray(pending, progress=False, address=None, num_cpus=None)
    assert fake.options == {"num_cpus": 1, "num_gpus": 1, "max_retries": 0}
    assert sorted(c for c, _ in seen) == ["brick", "grass", "gravel"]  # all ran despite failure
    assert {cache for _, cache in seen} == {str(tmp_path / "cache")}
    assert any(cfgs[2].run_name() in note for note in getattr(info.value, "__notes__", []))


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray instance for this module (start-up takes tens of seconds)."""
    ray = pytest.importorskip("ray")
    sweep.ray_init(num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_executor_matches_local(local_ray, tiny_config, tmp_path):
    """The real run_experiment in Ray tasks gives the local executor's results."""
    cfgs = grid(tiny_config, category=["brick", "grass"])
    local = run_sweep(cfgs, runs_dir=tmp_path / "local")
    remote = run_sweep(cfgs, executor="ray", runs_dir=tmp_path / "ray")
    for a, b in zip(local, remote):
        assert b.out_dir == tmp_path / "ray" / a.out_dir.name
        assert b.extra["reused"] is False
        for key in ("image_auroc", "pixel_auroc", "pixel_aupro", "num_test"):
            assert a.metrics[key] == pytest.approx(b.metrics[key], abs=1e-6)
        pd.testing.assert_frame_equal(a.scores, b.scores, atol=1e-5)
    again = run_sweep(cfgs, executor="ray", runs_dir=tmp_path / "ray")
    assert all(r.extra["reused"] for r in again)


@pytest.mark.slow
def test_ray_trivial_remote_function(local_ray):
    """Ray starts offline and quietly here and runs a task."""
    square = local_ray.remote(num_cpus=1)(lambda x: x * x)
    assert local_ray.get([square.remote(i) for i in range(4)]) == [0, 1, 4, 9]
