"""The command line's speed options: --threads, --precision, export and --engine."""

from __future__ import annotations

import argparse

import pytest
import torch

from adtr_core.cli import build_parser, main, train_config

TINY_SET = [
    "--set",
    "image_size=64",
    "--set",
    "hidden_dim=32",
    "--set",
    "num_encoder_layers=1",
    "--set",
    "num_decoder_layers=1",
    "--set",
    "num_heads=2",
    "--set",
    "dim_feedforward=64",
]


def test_precision_and_threads_flags_reach_the_run():
    args = build_parser().parse_args(["train", "--precision", "bf16", "--threads", "1"])
    assert isinstance(args, argparse.Namespace) and args.threads == 1
    assert train_config(args).precision == "bf16"
    args = build_parser().parse_args(["train"])
    assert args.threads is None and train_config(args).precision != "bf16"
    for cmd in (["eval", "--checkpoint", "x"], ["predict", "--checkpoint", "x", "i", "--out", "o"]):
        args = build_parser().parse_args([*cmd, "--precision", "fp32", "--threads", "2"])
        assert args.precision == "fp32" and args.threads == 2
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--precision", "fp16"])


def test_train_export_and_predict_with_onnx_runtime(tmp_path, capsys, demo_data):
    pytest.importorskip("onnxruntime")
    run = tmp_path / "run"
    before = torch.get_num_threads()
    train = ["train", "--profile", "smoke", "--data", "demo", "--category", "grass"]
    argv = [*train, "--epochs", "1", "--out", str(run), "--device", "cpu", "--quiet"]
    try:
        assert main([*argv, "--threads", "1", *TINY_SET]) == 0
        assert torch.get_num_threads() == 1  # --threads fixed the count
    finally:
        torch.set_num_threads(before)
    assert main(["export", "--checkpoint", str(run)]) == 0
    graph = run / "model.onnx"
    assert graph.is_file() and graph.with_name("model.onnx.json").is_file()
    assert str(graph) in capsys.readouterr().out
    exported_at = graph.stat().st_mtime_ns
    image = sorted(demo_data.glob("grass/test/good/*.png"))[0]
    pred = tmp_path / "pred"
    cmd = ["predict", "--checkpoint", str(run), str(image), "--out", str(pred)]
    assert main([*cmd, "--engine", "onnxruntime"]) == 0
    assert (pred / "scores.csv").is_file()
    assert graph.stat().st_mtime_ns == exported_at  # predict used the exported graph
