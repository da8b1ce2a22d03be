"""Bad input, reruns, concurrent writers, predict on awkward trees, image-level data.

Everything goes through the real command line (``adtr_core.cli.main`` in-process, and real
subprocesses where a process must die or run beside another). Data: the demo textures at
64 px, passed explicitly.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from adtr_core.cli import main
from adtr_core.data.demo import ensure_demo
from adtr_core.runs.config import ExperimentConfig

TINY = [
    "--data", "demo", "--category", "grass", "--profile", "smoke", "--epochs", "1",
    "--device", "cpu", "--quiet",
    "--set", "image_size=64", "--set", "hidden_dim=32", "--set", "num_encoder_layers=1",
    "--set", "num_decoder_layers=1", "--set", "num_heads=2", "--set", "dim_feedforward=64",
]  # fmt: skip


def _one_line_error(capsys, code: int, rc: int) -> str:
    """The single stderr line of a failed command (asserting exit code and no traceback)."""
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert rc == code, captured.err
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err and "weights_only=False" not in captured.err
    return lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished tiny run (grass, 1 epoch)."""
    run = tmp_path_factory.mktemp("trained") / "run"
    assert main(["train", *TINY, "--out", str(run)]) == 0
    return run


def _files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*")) if path.exists() else []


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "setting, words",
    [
        ("epochs=abc", ["epochs = 'abc'", "integer"]),
        ("lr=abc", ["lr = 'abc'", "number"]),
        ("image_size=abc", ["image_size = 'abc'", "integer"]),
        ("epochs=1.5", ["epochs = 1.5", "integer"]),
        ("num_heads=0", ["num_heads = 0", ">= 1"]),
        ("num_heads=5", ["num_heads = 5", "divisor of hidden_dim"]),
        ("seed=abc", ["seed = 'abc'", "integer"]),
        ("image_size=70", ["image_size = 70", "multiple of 16"]),
        ("dropout=1.5", ["dropout = 1.5", "[0, 1)"]),
        ("stages=[6]", ["stages = [6]", "1..5"]),
        ("model=vit", ["unknown model 'vit'", "adtr"]),
        ("device=gpu", ["device = 'gpu'", "cuda"]),
        ("lr=[1,", ["lr=[1,", "YAML"]),
        ("--epochs abc", ["epochs = 'abc'", "integer"]),
        ("--seed 1.5", ["seed = 1.5", "integer"]),
    ],
)
def test_bad_setting_gets_one_line_before_any_work(tmp_path, capsys, setting, words):
    out = tmp_path / "run"
    args = setting.split() if setting.startswith("--") else ["--set", setting]
    line = _one_line_error(capsys, 2, main(["train", *TINY, *args, "--out", str(out)]))
    assert all(w in line for w in words), line
    assert not out.exists()  # nothing written, not even a config.json


def test_check_values_is_the_same_check_for_notebooks():
    ExperimentConfig.check_values(
        {"epochs": 3, "lr": 1e-3, "categories": None}, ignore_unknown=True
    )
    with pytest.raises(
        ValueError,
        match=r"^epochs = 'abc' is not valid: expected an integer >= 1, or null \(when steps is set\)$",
    ):
        ExperimentConfig.check_values({"epochs": "abc"})
    with pytest.raises(ValueError, match="unknown experiment parameter"):
        ExperimentConfig.check_values({"epoch": 3})


def _garbage(path: Path) -> Path:
    path.write_bytes(b"not a weights file at all" * 10)
    return path


@pytest.mark.parametrize(
    "case",
    ["out_is_file", "out_under_file", "out_in_sys", "out_in_proc", "safetensors", "pth", "bin"],
)
def test_bad_locations_and_weight_files_get_one_line(tmp_path, capsys, case):
    out = tmp_path / "run"
    extra: list[str] = []
    if case == "out_is_file":
        out.write_text("x")
        words = [str(out), "existing file"]
    elif case == "out_under_file":
        (tmp_path / "f").write_text("x")
        out = tmp_path / "f" / "run"
        words = [str(out), "is a file"]
    elif case == "out_in_sys":
        out = Path("/sys/adtr-test-run")
        words = [str(out), "not permitted"]
    elif case == "out_in_proc":
        out = Path("/proc/adtr-test-run")
        words = [str(out)]
    else:
        weights = _garbage(tmp_path / f"w.{case}")
        extra = ["--backbone-weights", str(weights)]
        words = [str(weights), "state dict"]
    before = _files_under(tmp_path)
    rc = main(["train", *TINY, *extra, "--out", str(out)])
    line = _one_line_error(capsys, 2, rc)
    assert all(w in line for w in words), line
    assert _files_under(tmp_path) == before  # no results folder, no half-written file


def test_folder_flags_need_their_folders(capsys):
    line = _one_line_error(capsys, 2, main(["train", "--data", "folder", "--quiet"]))
    assert "--normal DIR" in line
    rc = main(["train", "--normal", "/nowhere/normal", "--test-normal", "/nowhere/good"])
    assert "/nowhere/normal" in _one_line_error(capsys, 2, rc)


def test_full_disk_during_training_gets_one_line_and_no_partial_file(
    trained, tmp_path, capsys, monkeypatch
):
    import torch  # the features are on disk already (trained): the first write is the checkpoint

    def full_disk(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", full_disk)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9, 0))
    out = tmp_path / "run"
    line = _one_line_error(capsys, 2, main(["train", *TINY, "--out", str(out)]))
    assert "checkpoint.pt" in line and "no space left on device" in line
    assert not out.exists()  # no checkpoint: the fresh folder is gone, no temporary file left


def test_full_disk_during_predict_leaves_no_overlays_without_scores(
    trained, tmp_path, capsys, monkeypatch, demo_data
):
    import errno

    def enospc(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", enospc)
    images = demo_data / "grass" / "test" / "good"
    pred = tmp_path / "pred"
    rc = main(["predict", "--checkpoint", str(trained), str(images), "--out", str(pred)])
    line = _one_line_error(capsys, 2, rc)
    assert "scores.csv" in line and "no space left on device" in line
    assert [p for p in _files_under(pred) if p.is_file()] == []


def test_corrupt_checkpoint_is_one_line_without_unsafe_advice(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    _garbage(run / "checkpoint.pt")
    line = _one_line_error(capsys, 2, main(["eval", "--checkpoint", str(run), "--device", "cpu"]))
    assert "checkpoint.pt" in line and "corrupt" in line


# --------------------------------------------------------------------------- reruns


def test_rerun_with_another_config_is_refused_then_overwrite_moves_it_aside(
    trained, tmp_path, capsys
):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    rc = main(["train", *TINY, "--set", "lr=0.5", "--out", str(run)])
    line = _one_line_error(capsys, 2, rc)
    assert "another configuration" in line and "lr: " in line and "0.5" in line
    assert "--overwrite" in line and "--out" in line
    rc = main(["train", *TINY, "--set", "hidden_dim=48", "--model", "cnn", "--out", str(run)])
    line = _one_line_error(capsys, 2, rc)
    assert "hidden_dim: 32 -> 48" in line and "model: 'adtr' -> 'cnn'" in line
    rc = main(["train", *TINY, "--set", "image_size=32", "--out", str(run)])
    assert "image_size: 64 -> 32" in _one_line_error(capsys, 2, rc)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # untouched

    assert main(["train", *TINY, "--out", str(run)]) == 0  # the same config loads
    capsys.readouterr()
    assert main(["train", *TINY, "--set", "lr=0.5", "--out", str(run), "--overwrite"]) == 0
    capsys.readouterr()
    assert json.loads((run / "config.json").read_text())["lr"] == 0.5
    (aside,) = tmp_path.glob("run.replaced-*")
    assert json.loads((aside / "config.json").read_text())["lr"] != 0.5
    assert (aside / "checkpoint.pt").read_bytes() == before["checkpoint.pt"]


TRAIN_ARGS = [*TINY, "--set", "batch_size=4"]


def _checkpoint_epoch(path: Path) -> int:
    from adtr_core.runs.checkpoints import load_checkpoint

    try:
        return int(load_checkpoint(path)["epoch"])
    except (FileNotFoundError, RuntimeError):
        return 0


def test_second_writer_stops_and_a_killed_run_resumes_to_the_same_result(tmp_path, capsys):
    epochs = ["--epochs", "10"]
    whole = tmp_path / "whole"
    assert main(["train", *TRAIN_ARGS, *epochs, "--out", str(whole)]) == 0
    capsys.readouterr()

    run = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "adtr_core.cli", "train", *TRAIN_ARGS, *epochs, "--out", str(run)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while _checkpoint_epoch(run / "checkpoint.pt") < 1:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        # A second writer (another config, or the same) stops at the lock and names the first.
        rc = main(["train", *TRAIN_ARGS, *epochs, "--set", "lr=0.5", "--out", str(run)])
        line = _one_line_error(capsys, 2, rc)
        assert f"process {proc.pid}" in line and "in use" in line
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if _checkpoint_epoch(run / "checkpoint.pt") >= 10:
        pytest.skip("the run finished before it could be killed")
    assert not (run / "config.json").exists()  # written only with the finished results

    assert main(["train", *TRAIN_ARGS, *epochs, "--out", str(run)]) == 0  # takes the lock over
    capsys.readouterr()
    assert (run / "scores.csv").read_bytes() == (whole / "scores.csv").read_bytes()
    assert (
        json.loads((run / "metrics.json").read_text())["image_auroc"]
        == json.loads((whole / "metrics.json").read_text())["image_auroc"]
    )
    assert not list(run.glob(".*"))  # no lock, no temporary file left


# --------------------------------------------------------------------------- predict


def test_predict_mirrors_the_tree_skips_hidden_and_lists_unreadable(
    trained, tmp_path, capsys, demo_data
):
    src = demo_data / "grass" / "test"
    tree = tmp_path / "images"
    for defect in ("good", "hole", "scratch"):
        (tree / defect).mkdir(parents=True)
        shutil.copy(src / defect / "000.png", tree / defect / "000.png")
    Image.open(src / "good" / "001.png").convert("RGB").save(tree / "good" / "000.jpg")
    (tree / ".ipynb_checkpoints").mkdir()
    shutil.copy(src / "good" / "002.png", tree / ".ipynb_checkpoints" / "000.png")
    (tree / "good" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    pred = tmp_path / "pred"
    argv = ["predict", "--checkpoint", str(trained), str(tree), "--out", str(pred)]
    for _ in range(2):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert "broken.png" in err and "1 of 5" in err
        table = pd.read_csv(pred / "scores.csv")
        assert len(table) == 5 and ".ipynb_checkpoints" not in " ".join(table["path"])
        ok = table[table["status"] == "ok"]
        assert len(ok) == 4 and set(ok["overlay"]) == {
            "good/000_png_overlay.png",
            "good/000_jpg_overlay.png",
            "hole/000_overlay.png",
            "scratch/000_overlay.png",
        }
        assert all((pred / o).is_file() for o in ok["overlay"])
        assert len(list(pred.rglob("*_overlay.png"))) == 4
        bad = table[table["status"] != "ok"]
        assert bad["path"].str.endswith("broken.png").all() and bad["score"].isna().all()
        assert bad["status"].str.startswith("unreadable").all()
    assert ok["score"].nunique() == 4  # four images, four scores


# --------------------------------------------------------------------------- image-level data


def _image_level_category(root: Path) -> Path:
    """grass with 12 training images, 6 normal and 6 defective test images, no masks."""
    src = ensure_demo() / "grass"
    cat = root / "grass"
    for sub, names in (("train/good", range(12)), ("test/good", range(6)), ("test/hole", range(6))):
        (cat / sub).mkdir(parents=True)
        for i in names:
            shutil.copy(src / sub / f"{i:03d}.png", cat / sub / f"{i:03d}.png")
    return cat


def test_category_without_masks_trains_with_image_auroc_only(tmp_path, capsys):
    root = tmp_path / "data"
    _image_level_category(root)
    assert main(["data", "check", str(root)]) == 0
    assert "supports: image AUROC only" in capsys.readouterr().out
    args = list(TINY)
    args[args.index("demo")] = "mvtec"
    run = tmp_path / "run"
    assert main(["train", *args, "--data-root", str(root), "--out", str(run)]) == 0
    out = capsys.readouterr().out
    assert "pixel_auroc  absent" in out and "pixel_aupro  absent" in out
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0.0 <= metrics["image_auroc"] <= 1.0
    assert metrics["pixel_auroc"] is None and set(metrics["absent"]) == {
        "pixel_auroc",
        "pixel_aupro",
    }


def test_folder_data_from_the_command_line(tmp_path, capsys, demo_data):
    cat = _image_level_category(tmp_path / "data")
    masks = tmp_path / "masks"
    masks.mkdir()
    gt = demo_data / "grass" / "ground_truth" / "hole"
    for i in range(6):
        shutil.copy(gt / f"{i:03d}_mask.png", masks / f"{i:03d}_mask.png")
    args = [a for a in TINY if a not in ("--data", "demo", "--category", "grass")]
    run = tmp_path / "run"
    rc = main(["train", *args, "--normal", str(cat / "train/good"), "--anomalous",
               str(cat / "test/hole"), "--masks", str(masks), "--test-normal",
               str(cat / "test/good"), "--out", str(run)])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["num_test"] == 12 and metrics["num_test_anomalous"] == 6
    assert 0.0 <= metrics["pixel_auroc"] <= 1.0  # masks given: pixel metrics present
    stored = json.loads((run / "config.json").read_text())
    assert stored["data"] == "folder" and stored["mask_dir"] == str(masks)
    assert metrics["category"] == "folder" and "brick" not in run.name  # not the profile's
    scores = pd.read_csv(run / "scores.csv")
    assert np.isfinite(scores["score"]).all() and len(scores) == 12


# --------------------------------------------------------------------------- predict's outputs


def _predict(run: Path, target: Path, out, *extra: str) -> int:
    return main(["predict", "--checkpoint", str(run), str(target), "--out", str(out), *extra])


def _two_images(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(2):
        shutil.copy(
            ensure_demo() / "grass" / "test" / "good" / f"{i:03d}.png", folder / f"p{i}.png"
        )
    return folder


def test_predict_never_writes_into_its_input_or_a_users_folder(trained, tmp_path, capsys):
    images = _two_images(tmp_path / "images")
    (images / "p0_overlay.png").write_bytes(b"the user's own picture")
    for out in (images, images / "pred", images / "sub" / "pred"):
        line = _one_line_error(capsys, 2, _predict(trained, images, out))
        assert "inside the input folder" in line
    assert (images / "p0_overlay.png").read_bytes() == b"the user's own picture"
    assert sorted(p.name for p in images.iterdir()) == ["p0.png", "p0_overlay.png", "p1.png"]
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    line = _one_line_error(capsys, 2, _predict(trained, images / "p0.png", mine))
    assert "did not write" in line and (mine / "notes.txt").read_text() == "mine"
    assert "--out is empty" in _one_line_error(capsys, 2, _predict(trained, images, ""))


def test_predict_skips_an_earlier_output_in_the_tree_and_reruns_into_its_own(
    trained, tmp_path, capsys
):
    images = _two_images(tmp_path / "images")
    earlier = tmp_path / "earlier"
    assert _predict(trained, images, earlier) == 0
    shutil.copytree(earlier, images / "old_results")  # an output moved into the input tree
    pred = tmp_path / "pred"
    for _ in range(2):  # a second run into its own folder is allowed
        assert _predict(trained, images, pred) == 0
        table = pd.read_csv(pred / "scores.csv")
        assert len(table) == 2 and "old_results" not in " ".join(table["path"])
        (pred / ".scores.k1ll3d.tmp.csv").write_text("of a predict killed mid-write")
    capsys.readouterr()
    assert _predict(trained, images, pred) == 0 and not list(pred.glob(".*.tmp*"))
    capsys.readouterr()


def test_every_input_gets_its_own_overlay(trained, tmp_path, capsys, demo_data):
    src = demo_data / "grass" / "test"
    images = tmp_path / "images"
    images.mkdir()
    for name, origin in (("a.png", "good/000.png"), ("a.PNG", "hole/000.png"),
                         ("a_png.png", "scratch/000.png"), ("a.jpg", "good/001.png")):  # fmt: skip
        Image.open(src / origin).convert("RGB").save(images / name, format=name[-3:].upper()
                                                     .replace("JPG", "JPEG"))  # fmt: skip
    pred = tmp_path / "pred"
    assert _predict(trained, images, pred) == 0
    capsys.readouterr()
    table = pd.read_csv(pred / "scores.csv")
    assert len(table) == 4 and table["overlay"].str.lower().nunique() == 4
    assert all((pred / o).is_file() for o in table["overlay"])
    assert len(list(pred.glob("*_overlay.png"))) == 4
    assert table["score"].nunique() == 4


def test_a_second_predict_into_one_folder_stops_at_its_lock(trained, tmp_path, capsys):
    from adtr_core.runs.results_folder import folder_lock

    images = _two_images(tmp_path / "images")
    pred = tmp_path / "pred"
    pred.mkdir()
    with folder_lock(pred):  # as a first predict holds it
        line = _one_line_error(capsys, 2, _predict(trained, images, pred))
    assert "in use" in line and f"process {os.getpid()}" in line
    assert not (pred / "scores.csv").exists()


def test_ctrl_c_in_predict_leaves_nothing_and_speaks_of_predict(
    trained, tmp_path, capsys, monkeypatch
):
    import adtr_core.figures.plots.maps as maps

    real, calls = maps.save_overlay, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(maps, "save_overlay", interrupted)
    images = _two_images(tmp_path / "images" / "sub")
    pred = tmp_path / "pred"
    line = _one_line_error(capsys, 130, _predict(trained, images.parent, pred))
    assert "interrupted" in line and "checkpoint" not in line
    assert not pred.exists()  # no overlay without scores.csv, no empty folder


def test_predict_follows_folder_links_once_and_refuses_unread_kinds(trained, tmp_path, capsys):
    elsewhere = _two_images(tmp_path / "elsewhere")
    images = tmp_path / "images"
    images.mkdir()
    (images / "linked").symlink_to(elsewhere, target_is_directory=True)
    (images / "loop").symlink_to(images, target_is_directory=True)
    pred = tmp_path / "pred"
    assert _predict(trained, images, pred) == 0
    capsys.readouterr()
    assert len(pd.read_csv(pred / "scores.csv")) == 2
    Image.open(elsewhere / "p0.png").save(tmp_path / "x.webp")
    line = _one_line_error(capsys, 2, _predict(trained, tmp_path / "x.webp", tmp_path / "w"))
    assert "x.webp" in line and ".png" in line


# --------------------------------------------------------------------------- unfinished runs


def _unfinished(trained: Path, tmp_path: Path) -> Path:
    """The trained run as if stopped after epoch 1 of 5 (no config.json)."""
    import torch

    run = tmp_path / "unfinished"
    shutil.copytree(trained, run)
    (run / "config.json").unlink()
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    state["extra"]["config"]["epochs"] = 5
    torch.save(state, run / "checkpoint.pt")
    return run


def test_eval_and_predict_warn_on_an_unfinished_run_and_can_refuse_it(trained, tmp_path, capsys):
    run = _unfinished(trained, tmp_path)
    images = _two_images(tmp_path / "images")
    with pytest.warns(UserWarning, match=r"unfinished run \(trained 1 of 5 epochs"):
        assert main(["eval", "--checkpoint", str(run), "--device", "cpu"]) == 0
    with pytest.warns(UserWarning, match="unfinished run"):
        assert _predict(run, images, tmp_path / "pred") == 0
    rc = main(["eval", "--checkpoint", str(run), "--device", "cpu", "--require-finished"])
    assert "--require-finished refuses it" in _one_line_error(capsys, 2, rc)
    rc = _predict(run, images, tmp_path / "pred2", "--require-finished")
    assert "unfinished" in _one_line_error(capsys, 2, rc) and not (tmp_path / "pred2").exists()


# --------------------------------------------------------------------------- messages


def test_checkpoint_errors_never_advise_deleting_and_name_only_real_flags(
    tmp_path, capsys, demo_data
):
    picture = tmp_path / "holiday.png"
    shutil.copy(demo_data / "grass" / "test" / "good" / "000.png", picture)
    line = _one_line_error(capsys, 2, main(["eval", "--checkpoint", str(picture)]))
    assert "holiday.png" in line and "delete" not in line and "--out" not in line
    run = tmp_path / "run"
    run.mkdir()
    _garbage(run / "checkpoint.pt")
    line = _one_line_error(capsys, 2, main(["train", *TINY, "--out", str(run)]))
    assert "checkpoint.pt" in line and "delete" not in line and "--overwrite" in line


def test_a_damaged_config_json_is_named(trained, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    (run / "config.json").write_text('{"lr": 0.1, ')
    line = _one_line_error(capsys, 2, main(["train", *TINY, "--out", str(run)]))
    assert "config.json is damaged" in line and "line 1" in line


def test_eval_refuses_a_category_for_a_folder_run(trained, tmp_path, capsys):
    import torch

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    state["extra"]["config"].update(
        data="folder", data_root=str(tmp_path), anomalous_dir=str(run), category=None
    )
    torch.save(state, run / "checkpoint.pt")
    rc = main(["eval", "--checkpoint", str(run), "--category", "bottle", "--device", "cpu"])
    line = _one_line_error(capsys, 2, rc)
    assert "--category bottle" in line and "leave --category out" in line
