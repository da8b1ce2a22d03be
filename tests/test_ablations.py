"""Tests of adtr_core.figures.ablations: variants whose backbone weights are missing are set aside."""

from __future__ import annotations

from adtr_core.figures import ablations
from adtr_core.method.backbone import BackboneWeightsError
from adtr_core.runs.config import ExperimentConfig


def test_runnable_variants_builds_each_backbone_once_and_skips_missing_weights(monkeypatch):
    base = ExperimentConfig(data="demo", category="brick", image_size=64)
    configs = ablations.variant_configs(base, ["cnn", "resnet18", "resnet34", "lite0"])
    built = []

    def fake_build(cfg):
        built.append((cfg.backbone, cfg.backbone_weights))
        if cfg.backbone.startswith("resnet"):
            raise BackboneWeightsError(f"no weights for {cfg.backbone}: download them")

    monkeypatch.setattr(ablations, "build_feature_extractor", fake_build)
    runnable, skipped = ablations.runnable_variants(configs)
    # adtr, cnn and lite0 share the base backbone: built once
    assert built == [
        ("tf_efficientnet_lite0", "auto"),
        ("resnet18", "auto"),
        ("resnet34", "auto"),
    ]
    assert list(runnable) == ["adtr", "cnn", "lite0"]
    assert runnable["cnn"] is configs["cnn"]
    assert skipped == {
        "resnet18": "no weights for resnet18: download them",
        "resnet34": "no weights for resnet34: download them",
    }
