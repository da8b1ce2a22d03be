"""Precision: fp32 / bf16 / auto resolve per device, warn without bf16, reach every stage."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch.utils.data import Subset

from adtr_core.data.sources import open_split
from adtr_core.runs import precision
from adtr_core.runs.config import ExperimentConfig
from adtr_core.runs.experiment import build_feature_extractor
from adtr_core.runs.features import extract_features


def test_precisions_resolve_per_device(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)
    assert precision.autocast_dtype("fp32", "cpu") is None
    assert precision.autocast_dtype("auto", "cpu") is None  # CPU default stays float32
    assert precision.autocast_dtype("bf16", "cpu") is torch.bfloat16
    assert precision.autocast_dtype("auto", "cuda") is torch.bfloat16
    assert precision.autocast_dtype("fp32", "cuda") is None
    with pytest.raises(ValueError, match="precision"):
        precision.autocast_dtype("fp16", "cpu")
    with pytest.raises(ValueError, match="precision"):
        ExperimentConfig(precision="half")


def test_bf16_without_cpu_support_says_so_and_stays_fp32(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    with pytest.warns(UserWarning, match="no bf16 instructions"):
        assert precision.autocast_dtype("bf16", "cpu") is None
    cfg = ExperimentConfig(precision="bf16", device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tc = cfg.train_config("cpu")
    assert not tc.cpu_amp


def test_bf16_reaches_the_trainer(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)
    assert ExperimentConfig(precision="bf16").train_config("cpu").cpu_amp
    assert not ExperimentConfig(precision="fp32").train_config("cpu").cpu_amp
    assert not ExperimentConfig().train_config("cpu").cpu_amp


def test_bf16_features_are_close_and_cached_apart(monkeypatch, tmp_path):
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)
    cfg = ExperimentConfig(data="demo", category="brick", image_size=64, device="cpu")
    backbone = build_feature_extractor(cfg)
    data = Subset(open_split(cfg, "train"), range(4))
    fp32 = extract_features(backbone, data, device="cpu", cache_dir=tmp_path).features
    bf16 = extract_features(
        backbone, data, device="cpu", cache_dir=tmp_path, precision="bf16"
    ).features
    assert len(list(tmp_path.glob("*.pt"))) == 2  # two cache entries, one per precision
    assert not torch.equal(fp32, bf16)
    rel = ((bf16 - fp32).norm() / fp32.norm()).item()
    assert rel < 0.1  # bf16 has 8 bits of mantissa: a few percent, not more
