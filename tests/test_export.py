"""ONNX export and the ONNX Runtime engine: one graph from images to maps and scores."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from adtr_core import paths
from adtr_core.data.sources import open_split
from adtr_core.deploy.engines import OnnxScorer, TorchScorer, build_scorer
from adtr_core.deploy.export import export_onnx, read_sidecar, sidecar_path
from adtr_core.deploy.predict import predict_images
from adtr_core.runs.config import ExperimentConfig
from adtr_core.runs.experiment import run_experiment

pytest.importorskip("onnxruntime")

TINY = dict(
    data="demo",
    category="grass",
    image_size=64,
    hidden_dim=32,
    num_encoder_layers=1,
    num_decoder_layers=1,
    num_heads=2,
    dim_feedforward=64,
    epochs=1,
    batch_size=16,
    device="cpu",
)
EMBEDDED_MVTEC = paths.repo_root() / "data" / "mvtec_ad"


def _test_images(cfg: ExperimentConfig, n: int | None = None) -> torch.Tensor:
    ds = open_split(cfg, "test")
    idx = range(len(ds)) if n is None else range(0, len(ds), max(1, len(ds) // n))
    return torch.stack([ds[i]["image"] for i in idx])  # (N, 3, S, S)


def _agree(run, graph, images: torch.Tensor, batch: int = 16) -> tuple[float, float]:
    """Largest relative differences (image scores, score maps) of ONNX Runtime and eager."""
    onnx, eager = OnnxScorer(graph), TorchScorer(run, device="cpu", precision="fp32")
    worst_score, worst_map = 0.0, 0.0
    for start in range(0, len(images), batch):
        x = images[start : start + batch]
        m1, s1 = onnx(x)
        m0, s0 = eager(x)
        worst_score = max(worst_score, ((s1 - s0).abs() / s0.abs()).max().item())
        worst_map = max(worst_map, ((m1 - m0).abs().amax() / m0.abs().amax()).item())
    return worst_score, worst_map


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("export_run")
    run_experiment(ExperimentConfig(**TINY), out_dir=out, progress=False)
    return out


@pytest.fixture(scope="module")
def graph(tiny_run):
    """The run's graph, exported by the ONNX Runtime engine on first use."""
    assert not (tiny_run / "model.onnx").exists()
    scorer = build_scorer(tiny_run, engine="onnxruntime")
    assert scorer.graph == tiny_run / "model.onnx"
    return scorer.graph


def test_graph_and_sidecar_are_written(graph):
    assert graph.is_file() and graph.stat().st_size > 100_000
    meta = read_sidecar(graph)
    assert meta["image_size"] == 64
    assert meta["scoring"]["mode"] == "max_avgpool" and meta["scoring"]["sigma"] == 4.0
    assert len(meta["normalisation"]["mean"]) == 3 and meta["normalisation"]["inside_graph"]
    assert meta["config"]["category"] == "grass"
    assert json.loads(sidecar_path(graph).read_text()) == meta


def test_onnx_runtime_agrees_with_eager_at_any_batch(tiny_run, graph):
    images = _test_images(ExperimentConfig(**TINY))
    rel_score, rel_map = _agree(tiny_run, graph, images[:7], batch=7)
    assert rel_score < 1e-3 and rel_map < 1e-3
    one = OnnxScorer(graph)(images[:1])  # the batch dimension is dynamic
    assert one[0].shape == (1, 64, 64) and one[1].shape == (1,)


def test_onnx_scores_differ_between_normal_and_other_images(graph):
    scorer = OnnxScorer(graph)
    images = _test_images(ExperimentConfig(**TINY))[:4]
    _, scores = scorer(images)
    _, flipped = scorer(1.0 - images)  # far from anything seen in training
    assert (flipped > scores).all()


def test_predict_with_onnx_runtime_matches_torch(tiny_run, graph, tmp_path, demo_data):
    exported_at = graph.stat().st_mtime_ns
    images = sorted(demo_data.glob("grass/test/*/*.png"))[:3]
    folder = tmp_path / "in"
    folder.mkdir()
    for p in images:
        (folder / f"{p.parent.name}_{p.name}").write_bytes(p.read_bytes())
    kw = dict(device="cpu", overlays=False)
    a = predict_images(tiny_run, folder, tmp_path / "torch", engine="torch", **kw)
    b = predict_images(tiny_run, folder, tmp_path / "ort", engine="onnxruntime", **kw)
    assert graph.stat().st_mtime_ns == exported_at  # the graph is reused, not exported again
    assert a["path"].tolist() == b["path"].tolist()
    pd.testing.assert_series_equal(a["score"], b["score"], rtol=1e-3)
    with pytest.raises(ValueError, match="engine"):
        build_scorer(tiny_run, engine="tensorrt")


@pytest.mark.slow  # about 30 s: 256 px features of 292 images, export, both engines on 83
@pytest.mark.skipif(
    not (EMBEDDED_MVTEC / "bottle" / "test").is_dir(), reason="no embedded bottle category"
)
def test_onnx_runtime_agrees_with_eager_on_the_embedded_bottle(tmp_path):
    small_model = {k: v for k, v in TINY.items() if k not in ("data", "category", "image_size")}
    cfg = ExperimentConfig(
        **small_model, data="mvtec", data_root=str(EMBEDDED_MVTEC), category="bottle"
    )
    run_experiment(cfg, out_dir=tmp_path, progress=False)
    rel_score, rel_map = _agree(tmp_path, export_onnx(tmp_path), _test_images(cfg))
    assert rel_score < 1e-3 and rel_map < 1e-3


def test_a_truncated_graph_is_exported_again(tiny_run, graph, tmp_path, monkeypatch):
    import shutil

    import adtr_core.deploy.export

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    data = (run / "model.onnx").read_bytes()
    (run / "model.onnx").write_bytes(data[: len(data) // 3])  # newer than the checkpoint
    exports = []

    def export(checkpoint, out):  # a real export takes a minute on a small machine
        exports.append(out)
        out.write_bytes(data)
        return out

    monkeypatch.setattr(adtr_core.deploy.export, "export_onnx", export)
    scorer = build_scorer(run, engine="onnxruntime")
    assert exports == [run / "model.onnx"]
    assert scorer(_test_images(ExperimentConfig(**TINY), 2))[1].shape == (2,)
    (run / "model.onnx").write_bytes(b"garbage")
    monkeypatch.setattr(
        adtr_core.deploy.export, "export_onnx", lambda c, o: o
    )  # exports garbage again
    with pytest.raises(RuntimeError, match="cannot load .*model.onnx even after exporting"):
        build_scorer(run, engine="onnxruntime")


def test_export_onto_a_full_disk_is_one_line_and_cleans_a_killed_exports_leftovers(
    tiny_run, tmp_path, monkeypatch, capsys
):
    import shutil

    from adtr_core.cli import main

    def fails(*args, **kwargs):
        raise RuntimeError("Unsupported operator aten::x\n" + "graph node\n" * 800)

    monkeypatch.setattr(torch.onnx, "export", fails)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9, 0))
    folder = tmp_path / "graphs"
    folder.mkdir()
    (folder / ".model.x1y2.tmp.onnx").write_bytes(b"half a graph of a killed export")
    rc = main(["export", "--checkpoint", str(tiny_run), "--out", str(folder / "model.onnx")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "no space left on device" in err[0], err
    assert "model.onnx" in err[0] and list(folder.iterdir()) == []
    assert main(["export", "--checkpoint", str(tiny_run), "--out", ""]) == 2
    assert "--out is empty" in capsys.readouterr().err
