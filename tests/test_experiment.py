"""End-to-end: config → features → training → results folder, resume, reload, property test."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
import torch

from adtr_core.data.sources import open_split
from adtr_core.runs.config import ExperimentConfig
from adtr_core.runs.evaluation import predict_features, scoring_config
from adtr_core.runs.experiment import run_experiment
from adtr_core.runs.results import load_result
from adtr_core.runs.saved_runs import evaluate_checkpoint, load_run_model

TINY = dict(
    data="demo",
    category="brick",
    image_size=64,
    hidden_dim=32,
    num_encoder_layers=1,
    num_decoder_layers=1,
    num_heads=2,
    dim_feedforward=64,
    epochs=2,
    batch_size=16,
    lr=1e-3,
    device="cpu",
)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    return run_experiment(ExperimentConfig(**TINY), out_dir=out, progress=False)


def test_results_folder_holds_every_artefact(tiny_run):
    out = tiny_run.out_dir
    for name in ("config.json", "checkpoint.pt", "history.csv", "metrics.json", "scores.csv"):
        assert (out / name).is_file(), name
    m = tiny_run.metrics
    for key in ("image_auroc", "pixel_auroc", "pixel_aupro"):
        assert 0.0 <= m[key] <= 1.0
    scores = pd.read_csv(out / "scores.csv")
    assert len(scores) == m["num_test"] and scores["label"].sum() == m["num_test_anomalous"]
    maps = np.load(out / "score_maps.npz")["maps"]
    assert maps.shape == (m["num_test"], 64, 64) and np.isfinite(maps).all()
    assert len(tiny_run.history) == TINY["epochs"]
    # the thread count it trained with (ADTR_THREADS, as no count was given) is part of it
    stored = json.loads((out / "config.json").read_text())
    assert stored["threads"] == int(os.environ["ADTR_THREADS"]) == tiny_run.config.threads


def test_rerun_resumes_without_training(tiny_run):
    again = run_experiment(tiny_run.config, out_dir=tiny_run.out_dir, progress=False)
    assert again.history["time_s"].tolist() == tiny_run.history["time_s"].tolist()
    assert again.metrics["image_auroc"] == pytest.approx(tiny_run.metrics["image_auroc"])
    loaded = load_result(tiny_run.out_dir)
    assert loaded.metrics["pixel_auroc"] == pytest.approx(tiny_run.metrics["pixel_auroc"])


def test_save_load_gives_identical_scores(tiny_run):
    cfg, backbone, model = load_run_model(tiny_run.out_dir)
    test = open_split(cfg, "test")
    images = torch.stack([test[i]["image"] for i in range(len(test))])
    with torch.no_grad():
        _, scores = predict_features(model, backbone(images), scoring_config(cfg))
    np.testing.assert_allclose(scores.numpy(), tiny_run.scores["score"].to_numpy(), rtol=1e-4)
    metrics = evaluate_checkpoint(tiny_run.out_dir / "checkpoint.pt", device="cpu")
    assert metrics["image_auroc"] == pytest.approx(tiny_run.metrics["image_auroc"], abs=1e-6)


def test_unknown_parameter_names_the_valid_ones():
    with pytest.raises(ValueError, match="unknown experiment parameter.*hiden_dim.*valid"):
        ExperimentConfig.from_dict({"hiden_dim": 3})
    with pytest.raises(ValueError, match="unknown model"):
        ExperimentConfig(model="vit")


def test_run_name_follows_the_config():
    a, b = ExperimentConfig(**TINY), ExperimentConfig(**{**TINY, "epochs": 3})
    assert a.run_name() != b.run_name()
    assert a.run_name() == ExperimentConfig(**TINY).run_name()
    assert a.run_name().startswith("demo-brick-adtr-tf_efficientnet_lite0-")
    plus_here = ExperimentConfig(**TINY, loss="px", init_from="/a/runs/" + a.run_name())
    plus_there = ExperimentConfig(**TINY, loss="px", init_from="/b/runs/" + a.run_name())
    assert plus_here.run_name() == plus_there.run_name() != a.run_name()


def test_trained_model_scores_an_implanted_defect_above_its_surroundings(tmp_path):
    """The property the method rests on: anomalies reconstruct worse than normal texture."""
    cfg = ExperimentConfig(
        **{**TINY, "image_size": 128, "epochs": 30, "hidden_dim": 64, "batch_size": 4}
    )
    result = run_experiment(cfg, out_dir=tmp_path, progress=False)
    _, backbone, model = load_run_model(result.out_dir)
    test = open_split(result.config, "test")
    good = next(i for i in range(len(test)) if test[i]["label"] == 0)
    clean = test[good]["image"]  # (3, S, S)
    defect = torch.zeros(128, 128, dtype=torch.bool)
    defect[48:80, 40:88] = True
    implanted = clean.clone()
    implanted[:, defect] = torch.tensor([0.9, 0.1, 0.1])[:, None]  # a red patch on grey brick
    with torch.no_grad():
        images = torch.stack([clean, implanted])  # (2, 3, S, S)
        maps, _ = predict_features(model, backbone(images), scoring_config(result.config))
    before, after = maps[0][defect].mean(), maps[1][defect].mean()
    assert after > 1.5 * before, (float(after), float(before))
    assert after > 1.2 * maps[1][~defect].mean()


def test_training_masks_reach_the_grid_by_max_pooling():
    """L_px sees a cell as anomalous when any of its pixels is (a one-pixel blob counts)."""
    from adtr_core.runs.experiment import _features_dataset
    from adtr_core.runs.features import FeatureSet

    masks = torch.zeros(2, 1, 64, 64)
    masks[0, 0, 5, 5] = 1.0  # one pixel in cell (0, 0) of a 4x4 grid
    anomalous = FeatureSet(torch.randn(2, 8, 4, 4), torch.ones(2, dtype=torch.long), masks,
                           ["confetti"] * 2, ["a", "b"])  # fmt: skip
    normal = FeatureSet(torch.randn(3, 8, 4, 4), torch.zeros(3, dtype=torch.long), None,
                        ["good"] * 3, ["c", "d", "e"])  # fmt: skip
    data = _features_dataset(normal, anomalous, labels=[0, 1])
    assert len(data) == 5 and data[0]["mask"].shape == (4, 4)
    assert data[3]["mask"][0, 0] == 1.0 and data[3]["mask"].sum() == 1.0
    assert data[4]["mask"].sum() == 0 and data[0]["label"] == 0 and data[3]["label"] == 1


def test_checkpoint_of_other_training_data_is_set_aside(tmp_path):
    """The run name hashes the config, not the files: rebuilt data must not resume old weights."""
    from adtr_core.data import build_demo

    small = dict(image_size=64, crop_size=64, n_train=8, n_test_good=2, n_per_defect=1)
    root = build_demo(tmp_path / "data", seed=1, categories=("brick",), **small)
    cfg = ExperimentConfig(**{**TINY, "epochs": 1, "batch_size": 4, "data_root": str(root)})
    out = tmp_path / "run"
    first = run_experiment(cfg, out_dir=out, progress=False)
    again = run_experiment(cfg, out_dir=out, progress=False)  # same data: resumed, not retrained
    assert again.history["time_s"].tolist() == first.history["time_s"].tolist()
    assert not list(out.glob("checkpoint.stale-*.pt"))

    build_demo(root, seed=2, categories=("brick",), **small)  # the same folder, other images
    with pytest.warns(UserWarning, match="trained on other data"):
        fresh = run_experiment(cfg, out_dir=out, progress=False)
    assert len(list(out.glob("checkpoint.stale-*.pt"))) == 1  # kept, not deleted
    assert fresh.history["time_s"].tolist() != first.history["time_s"].tolist()


def test_a_step_budget_gives_every_category_size_the_same_optimiser_steps():
    cfg = ExperimentConfig(steps=500, batch_size=4, lr_milestones=(400,))
    for n in (60, 209, 391):  # the smallest MVTec AD category, bottle, the largest
        epochs, (milestone,) = cfg.epoch_budget(n)
        batches = -(-n // 4)
        assert 500 <= epochs * batches < 500 + batches
        assert 400 <= milestone * batches < 400 + batches
    assert cfg.epoch_budget(209) == (10, (8,))
    paper = ExperimentConfig()
    assert paper.steps is None and paper.epoch_budget(209) == (500, (400,))
    with pytest.raises(ValueError, match="num_train"):
        cfg.train_config("cpu")
    assert cfg.train_config("cpu", num_train=60).epochs == 34


def test_evaluation_cadences_count_steps_when_the_budget_does():
    cfg = ExperimentConfig(steps=600, batch_size=4, val_every=50, eval_every=100)
    # 13 batches an epoch at 52 images: 50 and 100 steps are the nearest 4 and 8 epochs
    assert cfg.cadence(52) == (4, 8)
    assert cfg.train_config("cpu", num_train=52).eval_every == 8
    # fewer steps than an epoch still evaluate every epoch; 0 stays "only at the end"
    small = ExperimentConfig(steps=600, batch_size=4, val_every=1, eval_every=0)
    assert small.cadence(188) == (1, 0)
    epochs = ExperimentConfig(val_every=2, eval_every=50)  # the paper's epoch budget
    assert epochs.cadence(209) == (2, 50)


def test_a_run_stored_before_the_position_fields_reads_back_as_it_was_trained(tmp_path):
    """config.json and checkpoints written before pos_scale / cross_qk_init existed hold
    neither: they read back with the values those runs were trained with (DETR's), not
    today's defaults, so a saved run rebuilds the model it trained."""
    detr = {"pos_embed": "sine", "pos_scale": 1.0, "cross_qk_init": "xavier"}
    run = run_experiment(ExperimentConfig(**TINY, **detr), out_dir=tmp_path, progress=False)
    stored = json.loads((tmp_path / "config.json").read_text())
    old = {k: v for k, v in stored.items() if k not in ("pos_scale", "cross_qk_init", "val_kinds")}
    del old["pos_embed"]  # older still: before pos_embed itself, whose default was sine
    (tmp_path / "config.json").write_text(json.dumps(old))
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    ckpt["extra"]["config"] = old
    torch.save(ckpt, tmp_path / "checkpoint.pt")

    loaded = load_result(tmp_path).config
    assert {k: getattr(loaded, k) for k in detr} == detr
    cfg, _, model = load_run_model(tmp_path)
    assert (cfg.pos_embed, cfg.pos_scale, cfg.cross_qk_init) == ("sine", 1.0, "xavier")
    assert loaded.val_kinds == cfg.val_kinds == ("confetti", "pasted")  # before the third kind
    metrics = evaluate_checkpoint(tmp_path / "checkpoint.pt", device="cpu")
    assert metrics["image_auroc"] == pytest.approx(run.metrics["image_auroc"], abs=1e-6)
    # a config built now takes today's defaults
    assert ExperimentConfig.from_dict({}).pos_embed == "grid"
    assert ExperimentConfig.from_dict({}).val_kinds == ("confetti", "pasted", "distorted")


def test_feature_jitter_adds_noise_in_proportion_to_each_position_norm():
    from adtr_core.runs.experiment import jitter

    torch.manual_seed(0)
    f = torch.randn(64, 100, 2, 2) * torch.tensor([1.0, 3.0, 0.5, 10.0]).view(1, 1, 2, 2)
    assert jitter(f, 0.0) is f
    noise = jitter(f, 20.0) - f  # (64, 100, 2, 2)
    expected = 20.0 * f.norm(dim=1, keepdim=True) / 100  # (64, 1, 2, 2)
    ratio = noise.pow(2).mean(dim=(0, 1)).sqrt() / expected.pow(2).mean(dim=(0, 1)).sqrt()
    assert torch.allclose(ratio, torch.ones(2, 2), atol=0.05), ratio


def test_feature_jitter_perturbs_the_training_input_not_the_target():
    """With jitter, a model that outputs its input has a training loss (its input was noisy,
    the target is the clean features); without jitter, or in eval mode, it has none."""
    from adtr_core.runs.experiment import make_loss_fn

    identity = torch.nn.Identity()
    batch = {"features": torch.randn(4, 16, 3, 3) + 2.0}
    jittered = make_loss_fn(ExperimentConfig(**TINY, feature_jitter=20.0))
    assert jittered(identity.train(), batch).item() > 0
    assert jittered(identity.eval(), batch).item() == 0
    plain = make_loss_fn(ExperimentConfig(**TINY, feature_jitter=0.0))
    assert plain(identity.train(), batch).item() == 0
    assert ExperimentConfig(**TINY).feature_jitter == 20.0  # the default: UniAD's scale


def test_feature_jitter_enters_the_run_name_only_when_set():
    """Runs stored before the field existed keep their folder names: jitter 0 hashes as absent."""
    from adtr_core.runs.config import STORED_BEFORE

    base = {**TINY, "feature_jitter": 0.0}
    off = ExperimentConfig(**base).to_dict()
    del off["feature_jitter"]
    stored = ExperimentConfig.from_stored(off)
    assert stored.feature_jitter == STORED_BEFORE["feature_jitter"] == 0.0
    assert stored.run_name() == ExperimentConfig(**base).run_name()
    assert ExperimentConfig(**{**base, "feature_jitter": 20.0}).run_name() != stored.run_name()
    # a fitted peer does not train: jitter leaves its name (and its stored fit) alone
    peer = {**base, "model": "patchcore"}
    assert (
        ExperimentConfig(**peer).run_name()
        == ExperimentConfig(**{**peer, "feature_jitter": 20.0}).run_name()
    )


def test_a_peer_fitted_before_feature_jitter_is_found_finished(tmp_path):
    """A PaDiM fit stored before the field existed is the same run as one asked for now (a peer
    does not train); an ADTR run without jitter is not the same run as one with it."""
    from adtr_core.runs.config import config_changes
    from adtr_core.runs.sweep import is_finished

    peer = ExperimentConfig(**TINY, model="padim")
    old = peer.to_dict()
    del old["feature_jitter"]
    (tmp_path / "config.json").write_text(json.dumps(old))
    (tmp_path / "metrics.json").write_text("{}")
    assert config_changes(old, peer.to_dict()) == []
    assert is_finished(peer, tmp_path)

    adtr = ExperimentConfig(**TINY)
    before = {**adtr.to_dict(), "feature_jitter": 0.0}
    assert config_changes(before, adtr.to_dict()) == ["feature_jitter: 0.0 -> 20.0"]
    (tmp_path / "config.json").write_text(json.dumps(before))
    with pytest.raises(ValueError, match="feature_jitter: 0.0 -> 20.0"):
        is_finished(adtr, tmp_path)
