"""The ``adtr`` command line, end to end on tiny data (in-process, plus one real subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from adtr_core.cli import main

TINY_SET = [
    "--set", "image_size=64", "--set", "hidden_dim=32", "--set", "num_encoder_layers=1",
    "--set", "num_decoder_layers=1", "--set", "num_heads=2", "--set", "dim_feedforward=64",
]  # fmt: skip


def test_every_command_has_help():
    for argv in (["--help"], ["train", "--help"], ["eval", "--help"], ["predict", "--help"],
                 ["data", "demo", "--help"], ["data", "check", "--help"], ["figures", "--help"]):  # fmt: skip
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 0


def test_console_script_runs():
    done = subprocess.run(
        [sys.executable, "-m", "adtr_core.cli", "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0 and "train" in done.stdout


def test_train_eval_predict_round_trip(tmp_path, capsys, demo_data):
    run = tmp_path / "run"
    argv = [
        "train",
        "--profile",
        "smoke",
        "--category",
        "grass",
        "--epochs",
        "1",
        "--out",
        str(run),
    ]
    assert main([*argv, "--device", "cpu", "--quiet", *TINY_SET]) == 0
    out = capsys.readouterr().out
    assert "image_auroc" in out and "pixel_aupro" in out
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["category"] == "grass"

    assert main(["eval", "--checkpoint", str(run), "--device", "cpu", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.split("\n", 4)[-1])["image_auroc"] == pytest.approx(
        metrics["image_auroc"], abs=1e-6
    )

    images = sorted(demo_data.glob("grass/test/good/*.png"))[:2]
    pred = tmp_path / "pred"
    assert main(["predict", "--checkpoint", str(run), str(images[0]), "--out", str(pred)]) == 0
    assert (pred / "scores.csv").is_file() and (pred / f"{images[0].stem}_overlay.png").is_file()


def test_validation_only_then_the_test_once(tmp_path, capsys, demo_data):
    run = tmp_path / "run"
    argv = ["train", "--profile", "smoke", "--category", "brick", "--out", str(run), "--quiet"]
    assert main([*argv, "--device", "cpu", *TINY_SET, "--validation-only"]) == 0
    out = capsys.readouterr().out
    assert "val_auroc" in out and "image_auroc" not in out
    assert "image_auroc" not in json.loads((run / "metrics.json").read_text())
    assert main([*argv, "--device", "cpu", *TINY_SET]) == 0  # scores the trained run
    assert "image_auroc" in json.loads((run / "metrics.json").read_text())


def test_bad_input_gets_one_clear_line(tmp_path, capsys):
    assert main(["train", "--profile", "smoke", "--set", "hiden_dim=3"]) == 2
    assert "unknown experiment parameter(s) hiden_dim" in capsys.readouterr().err
    missing = tmp_path / "nowhere"
    assert main(["train", "--profile", "smoke", "--data-root", str(missing), "--quiet"]) == 2
    assert str(missing) in capsys.readouterr().err
    assert main(["eval", "--checkpoint", str(missing)]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_data_demo_and_check(tmp_path, capsys):
    root = tmp_path / "demo"
    assert main(["data", "demo", "--out", str(root), "--seed", "3"]) == 0
    capsys.readouterr()
    assert main(["data", "check", str(root), "--category", "brick"]) == 0
    report = capsys.readouterr().out
    assert "brick" in report


def test_sweep_over_categories_and_a_grid_then_reuses(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ADTR_RUNS", str(tmp_path / "runs"))
    table = tmp_path / "sweep.csv"
    argv = ["sweep", "--profile", "smoke", "--categories", "brick,grass", "--grid", "model=adtr,cnn",
            "--epochs", "1", "--device", "cpu", "--quiet", "--out", str(table), *TINY_SET]  # fmt: skip
    assert main(argv) == 0
    assert "4 run(s)" in capsys.readouterr().out
    rows = table.read_text().strip().splitlines()
    assert len(rows) == 5 and all(("brick" in r) or ("grass" in r) for r in rows[1:])
    assert len(list((tmp_path / "runs").iterdir())) == 4
    before = {p: p.stat().st_mtime for p in (tmp_path / "runs").glob("*/checkpoint.pt")}
    assert main(argv) == 0
    after = {p: p.stat().st_mtime for p in (tmp_path / "runs").glob("*/checkpoint.pt")}
    assert before == after  # finished runs were loaded, not retrained
