"""ADTR inside anomalib: the Engine (fit, test, export), the CLI and the benchmark job.

Smoke size on a copy of a few embedded bottle images (MVTec layout), offline, every output in
a temporary folder. The slow test compares anomalib's numbers with ``adtr train`` at the quick
profile on the whole category.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

pytest.importorskip("anomalib")

from anomalib.data import InferenceBatch, MVTecAD  # noqa: E402
from anomalib.engine import Engine  # noqa: E402

from adtr_core import paths  # noqa: E402
from adtr_core.deploy.anomalib_model import Adtr, AdtrModel, adtr_config  # noqa: E402
from adtr_core.method.baselines import CNNReconstructor  # noqa: E402
from adtr_core.method.model import ADTR  # noqa: E402
from adtr_core.runs.config import ExperimentConfig
from adtr_core.runs.experiment import build_model  # noqa: E402

BOTTLE = paths.repo_root() / "data" / "mvtec_ad" / "bottle"
SMOKE = {"batch_size": 4}  # the smoke profile (64 px, one epoch, 1 + 1 layers), 2 steps here

pytestmark = [
    pytest.mark.skipif(not BOTTLE.is_dir(), reason="the embedded bottle category is missing"),
    pytest.mark.filterwarnings("ignore::UserWarning"),  # Lightning's notes on small data
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]


def _copy_bottle(root: Path, n_train: int = 8, n_test: int = 4) -> Path:
    """A few bottle images in the MVTec layout: train/good, test/{good,broken_large}, masks."""
    cat = root / "bottle"
    for sub, n in (("train/good", n_train), ("test/good", n_test), ("test/broken_large", n_test)):
        (cat / sub).mkdir(parents=True)
        for f in sorted((BOTTLE / sub).iterdir())[:n]:
            shutil.copy(f, cat / sub / f.name)
    masks = cat / "ground_truth" / "broken_large"
    masks.mkdir(parents=True)
    for f in sorted((cat / "test" / "broken_large").iterdir()):
        shutil.copy(BOTTLE / "ground_truth" / "broken_large" / f"{f.stem}_mask.png", masks)
    return root


def _datamodule(root: Path) -> MVTecAD:
    return MVTecAD(
        root=root, category="bottle", train_batch_size=4, eval_batch_size=8, num_workers=0
    )


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    return _copy_bottle(tmp_path_factory.mktemp("mvtec"))


@pytest.fixture(scope="module")
def trained(tiny_root, tmp_path_factory):
    """Adtr fitted and tested through the Engine, run from an empty working folder."""
    work = tmp_path_factory.mktemp("cwd")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        model = Adtr(profile="smoke", overrides=SMOKE)
        engine = Engine(default_root_dir=work / "results", enable_progress_bar=False)
        engine.fit(model=model, datamodule=_datamodule(tiny_root))
        results = engine.test(model=model, datamodule=_datamodule(tiny_root), verbose=False)
        predictions = engine.predict(model=model, datamodule=_datamodule(tiny_root))
    return model, engine, {**results[0], "predictions": predictions}, work


# --------------------------------------------------------------------------- the model


def test_adtr_is_the_package_model_built_as_adtr_train_builds_it():
    model = Adtr(profile="smoke")
    cfg = model.config
    assert isinstance(model.model, AdtrModel) and isinstance(model.model.reconstructor, ADTR)
    assert model.input_size == (cfg.image_size, cfg.image_size)
    torch.manual_seed(cfg.seed)  # what run_experiment does before building its network
    runner = build_model(cfg, model.model.backbone.channels, model.model.backbone.grid)
    for (name, a), b in zip(
        model.model.reconstructor.state_dict().items(), runner.state_dict().values()
    ):
        assert torch.equal(a, b), name
    assert model.trainer_arguments["gradient_clip_val"] == cfg.grad_clip == 0.1


def test_variants_and_overrides_by_name():
    assert isinstance(Adtr(profile="smoke", variant="cnn").model.reconstructor, CNNReconstructor)
    no_query = Adtr(profile="smoke", variant="no_query").model.reconstructor
    assert not no_query.cfg.use_query and no_query.query_embed is None
    assert adtr_config("smoke", "last_layer").stages == (5,)
    assert adtr_config("quick", overrides={"image_size": 128}).image_size == 128


def test_an_epoch_count_replaces_the_profiles_step_budget():
    # the one budget rule of every entry point: epochs given by hand replace the quick steps
    cfg = adtr_config("quick", overrides={"epochs": 50})
    assert cfg.epochs == 50 and cfg.steps is None
    assert adtr_config("quick").steps == 600
    with pytest.raises(ValueError, match="two budgets"):
        adtr_config("quick", overrides={"epochs": 50, "steps": 100})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"profile": "fast"}, "unknown profile 'fast'"),
        ({"variant": "vit"}, "unknown variant 'vit'"),
        ({"overrides": {"loss": "px"}}, "ADTR+"),
        ({"overrides": {"lr": -1}}, "lr = -1 is not valid"),
        ({"overrides": {"epoch": 3}}, "unknown experiment parameter(s) epoch"),
        ({"overrides": {"device": "cuda"}}, "device is the Engine's choice"),
    ],
)
def test_bad_options_fail_with_one_line(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        adtr_config(**kwargs)


def test_eval_forward_is_anomalibs_contract():
    model = AdtrModel.from_config(adtr_config("smoke"), seed=0).eval()
    out = model(torch.rand(3, 3, 64, 64))
    assert isinstance(out, InferenceBatch)
    assert out.pred_score.shape == (3,) and out.anomaly_map.shape == (3, 1, 64, 64)
    assert torch.isfinite(out.anomaly_map).all()


# --------------------------------------------------------------------------- Python door


def test_engine_fit_and_test_report_image_and_pixel_auroc(trained, tiny_root):
    model, _, results, work = trained
    assert {"image_AUROC", "pixel_AUROC"} <= set(results)
    assert results["image_AUROC"] >= 0.75  # broken_large against good, even after 2 steps
    assert 0.5 < results["pixel_AUROC"] <= 1.0
    # the budget of adtr train: epochs from the profile and the training set's size
    epochs, milestones = model.config.epoch_budget(8)
    assert (model.train_config.epochs, model.train_config.lr_milestones) == (epochs, milestones)
    assert model.trainer.current_epoch == epochs
    assert sorted(p.name for p in work.iterdir()) == ["results"]  # nothing else in the cwd
    predicted = results["predictions"]  # Engine.predict on the test set: 8 images
    assert sum(len(b.pred_score) for b in predicted) == 8
    assert all(b.anomaly_map.shape[-2:] == (64, 64) for b in predicted)


def test_saved_run_is_read_by_the_package_predict(trained, tmp_path):
    from adtr_core.deploy.predict import predict_images

    model = trained[0]
    run = model.save_run(tmp_path / "run")
    images = BOTTLE / "test" / "broken_large"
    table = predict_images(run, images, tmp_path / "out", device="cpu", overlays=False)
    assert len(table) == len(list(images.iterdir()))


def test_output_bias_starts_at_the_mean_training_feature(trained, tiny_root):
    """As adtr train's init_output_bias; 2 AdamW steps of lr 1e-3 move it by about 2e-3."""
    model = trained[0]
    datamodule = _datamodule(tiny_root)
    datamodule.setup()
    backbone, resize = model.model.backbone.cpu(), model.pre_processor.transform
    with torch.no_grad():
        feats = torch.cat([backbone(resize(b.image)) for b in datamodule.train_dataloader()])
    assert len(feats) == 8
    mean = feats.mean(dim=(0, 2, 3))  # (C,)
    bias = model.model.reconstructor.output_proj.bias.detach().cpu()
    assert mean.abs().max() > 1.0  # far from the default initial bias
    torch.testing.assert_close(bias, mean, atol=0.01, rtol=0.0)


# --------------------------------------------------------------------------- CLI door


def test_anomalib_cli_trains_and_tests_from_a_config_file(tiny_root, tmp_path, monkeypatch):
    from anomalib.cli import AnomalibCLI

    monkeypatch.chdir(tmp_path)
    config = {
        "default_root_dir": str(tmp_path / "results"),
        "trainer": {"enable_progress_bar": False},
        "model": {
            "class_path": "adtr_core.deploy.anomalib_model.Adtr",
            "init_args": {"profile": "smoke", "overrides": SMOKE},
        },
        "data": {
            "class_path": "anomalib.data.Folder",
            "init_args": {
                "name": "bottle",
                "root": str(tiny_root / "bottle"),
                "normal_dir": "train/good",
                "abnormal_dir": "test/broken_large",
                "normal_test_dir": "test/good",
                "mask_dir": "ground_truth/broken_large",
                "train_batch_size": 4,
                "eval_batch_size": 8,
                "num_workers": 0,
            },
        },
    }
    path = tmp_path / "adtr.yaml"
    path.write_text(yaml.safe_dump(config))
    cli = AnomalibCLI(["train", "--config", str(path)])
    metrics = cli.engine.trainer.callback_metrics
    assert {"image_AUROC", "pixel_AUROC"} <= set(metrics)
    assert isinstance(cli.model, Adtr) and cli.model.config.image_size == 64
    ckpt = next((tmp_path / "results").rglob("*.ckpt"))
    reloaded = Adtr.load_from_checkpoint(ckpt, map_location="cpu").eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        a, b = reloaded.model(x), cli.model.cpu().eval().model(x)
    torch.testing.assert_close(a.anomaly_map, b.anomaly_map)


# --------------------------------------------------------------------------- export door


@pytest.fixture(scope="module")
def deployed(trained, tmp_path_factory):
    """``Engine.export(onnx)`` of the trained model, run by anomalib's OpenVINO inferencer on
    two broken and one good bottle image (256 px; the graph resizes them itself)."""
    pytest.importorskip("openvino")
    from anomalib.data.utils import read_image
    from anomalib.deploy import OpenVINOInferencer

    model, engine, _, _ = trained
    work = tmp_path_factory.mktemp("export")
    files = sorted((BOTTLE / "test" / "broken_large").iterdir())[:2]
    files += sorted((BOTTLE / "test" / "good").iterdir())[:1]
    images = torch.stack([read_image(f, as_tensor=True) for f in files])  # (3, 3, 256, 256)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)  # the inferencer writes an openvino_cache folder into the cwd
        graph = engine.export(model=model, export_type="onnx", export_root=work / "export")
        # fp32 inference: OpenVINO's CPU plugin runs in bf16 by default on CPUs with bf16
        # instructions (avx512_bf16, AMX), which moves the scores by about 1e-2
        inferencer = OpenVINOInferencer(
            graph, device="CPU", config={"INFERENCE_PRECISION_HINT": "f32"}
        )
        predictions = inferencer.predict(images)
    return images, predictions, work


@pytest.mark.parametrize(
    "engine",
    # the package's ONNX Runtime engine needs a second export (1-3 minutes on 2 busy cores)
    ["torch", pytest.param("onnxruntime", marks=pytest.mark.slow)],
)
def test_exported_graph_in_anomalibs_inferencer_agrees_with_the_package_engine(
    trained, deployed, engine
):
    """anomalib's ONNX graph in its inferencer = the package's engine on the same weights
    (:meth:`Adtr.save_run`) followed by anomalib's post-processing (normalisation)."""
    from adtr_core.deploy.engines import build_scorer

    model = trained[0]
    images, predictions, work = deployed
    run = model.save_run(work / f"run_{engine}")
    scorer = build_scorer(run, engine=engine, device="cpu", precision="fp32", threads=1)
    size = model.config.image_size  # resized as the exported pre-processor resizes
    maps, scores = scorer(F.interpolate(images, size=(size, size), mode="bilinear"))
    post = model.post_processor.cpu()(InferenceBatch(pred_score=scores, anomaly_map=maps[:, None]))
    np.testing.assert_allclose(predictions.pred_score, post.pred_score.numpy(), atol=1e-4)
    np.testing.assert_allclose(predictions.anomaly_map, post.anomaly_map.numpy(), atol=1e-4)
    assert predictions.pred_score[:2].min() > predictions.pred_score[2]  # broken above good


# --------------------------------------------------------------------------- benchmark


def test_benchmark_table_puts_adtr_beside_padim_and_patchcore(tiny_root):
    from adtr_core.deploy.anomalib_model.benchmark import benchmark_table

    table = benchmark_table(tiny_root, "bottle", profile="smoke", overrides=SMOKE)
    assert list(table["model"]) == ["PaDiM", "PatchCore", "ADTR"]
    assert table[["image_AUROC", "pixel_AUROC"]].notna().all().all()
    assert ((table["pixel_AUROC"] > 0.5) & (table["pixel_AUROC"] <= 1.0)).all()


# --------------------------------------------------------------------------- same numbers


@pytest.mark.slow  # two quick-profile trainings on the whole bottle category
def test_anomalib_metrics_agree_with_adtr_train_at_the_quick_profile(tmp_path, monkeypatch):
    from adtr_core.runs.experiment import run_experiment
    from adtr_core.runs.profiles import profile_run

    monkeypatch.chdir(tmp_path)
    cfg = ExperimentConfig.from_dict(
        {
            **profile_run("quick", "train"),
            "data": "mvtec",
            "data_root": str(BOTTLE.parent),
            "category": "bottle",
            "device": "cpu",
        }
    )
    ours = run_experiment(cfg, out_dir=tmp_path / "run", progress=False).metrics

    model = Adtr(profile="quick")
    engine = Engine(
        default_root_dir=tmp_path / "results", enable_progress_bar=False, accelerator="cpu"
    )
    datamodule = MVTecAD(
        root=BOTTLE.parent, category="bottle", train_batch_size=cfg.batch_size, num_workers=0
    )
    engine.fit(model=model, datamodule=datamodule)
    theirs = engine.test(model=model, datamodule=datamodule, verbose=False)[0]
    assert abs(100 * theirs["image_AUROC"] - 100 * ours["image_auroc"]) <= 0.5
    assert abs(100 * theirs["pixel_AUROC"] - 100 * ours["pixel_auroc"]) <= 0.5
