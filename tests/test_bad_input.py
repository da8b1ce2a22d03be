"""Inputs that once lost a file or gave a meaningless result with exit 0, without a trained run.

Runs that cannot fit in memory, meaningless budgets and data, a user's folder given as
``--out``, masks and images of unusual kinds, notebook parameters. Every command goes through
``adtr_core.cli.main`` in-process and stops before any training; the predict and eval cases
that need a trained run are in ``test_cli_robustness.py``.
"""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest
from PIL import Image

from adtr_core.cli import main

SMOKE = ["--data", "demo", "--category", "grass", "--profile", "smoke", "--device", "cpu"]


def _one_line_error(capsys, rc: int, code: int = 2) -> str:
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert rc == code, captured.err
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    assert len(lines[0]) < 600, lines[0]
    return lines[0]


# --------------------------------------------------------------------------- limits (1)


@pytest.mark.parametrize(
    "setting, words",
    [
        ("image_size=100000", ["image_size = 100000", "2048"]),
        ("hidden_dim=1000000", ["hidden_dim = 1000000", "8192"]),
        ("dim_feedforward=10000000", ["dim_feedforward", "32768"]),
        ("num_encoder_layers=1000", ["num_encoder_layers = 1000", "64"]),
    ],
)
def test_sizes_past_their_bounds_are_refused(setting, words, tmp_path, capsys):
    out = tmp_path / "run"
    line = _one_line_error(capsys, main(["train", *SMOKE, "--set", setting, "--out", str(out)]))
    assert all(w in line for w in words), line
    assert not out.exists()


def test_a_run_that_cannot_fit_in_memory_is_refused_before_any_work(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", *SMOKE, "--set", "image_size=2048", "--set", "batch_size=4096"]
    line = _one_line_error(capsys, main([*argv, "--out", str(out)]))
    assert "needs about" in line and "GiB" in line and "available" in line
    assert "image_size" in line and "batch_size" in line
    assert not out.exists()  # no folder, no lock


def test_the_memory_estimate_accepts_the_paper_settings():
    from adtr_core.runs.config import ExperimentConfig
    from adtr_core.runs.memory import estimate_bytes

    paper = estimate_bytes(ExperimentConfig(image_size=256), num_images=500)
    assert 1 * 2**30 < paper < 4 * 2**30
    big = estimate_bytes(ExperimentConfig(image_size=2048, batch_size=64), num_images=500)
    assert big > 50 * paper


# --------------------------------------------------------------------------- outputs (5)


def test_train_refuses_a_users_folder_and_an_empty_out(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "scores.csv").write_text("my,own\n1,2\n")
    line = _one_line_error(capsys, main(["train", *SMOKE, "--out", str(mine)]))
    assert "not a run" in line and "--out" in line
    assert (mine / "scores.csv").read_text() == "my,own\n1,2\n"
    line = _one_line_error(capsys, main(["train", *SMOKE, "--out", str(mine), "--overwrite"]))
    assert "not a run" in line and sorted(p.name for p in mine.iterdir()) == ["scores.csv"]
    line = _one_line_error(capsys, main(["train", *SMOKE, "--out", ""]))
    assert "--out is empty" in line


# --------------------------------------------------------------------------- meaningless runs (10)


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--set", "epochs=0"], ["epochs = 0", ">= 1"]),
        (["--epochs", "0"], ["epochs = 0", ">= 1"]),
        (["--set", "steps=2", "--set", "epochs=5"], ["steps = 2", "epochs = 5", "set one"]),
        (["--set", "category="], ["category=", "no value", "null"]),
        (["--category", ""], ["category = ''", "category name"]),
    ],
)
def test_meaningless_runs_are_refused(extra, words, tmp_path, capsys):
    line = _one_line_error(capsys, main(["train", *SMOKE, *extra, "--out", str(tmp_path / "r")]))
    assert all(w in line for w in words), line


def test_one_folder_as_normal_and_anomalous_is_refused(tmp_path, capsys, demo_data):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(2):
        shutil.copy(demo_data / "grass" / "train" / "good" / f"{i:03d}.png", folder)
    for extra in (["--anomalous", str(folder)], ["--test-normal", str(folder)]):
        argv = ["train", "--data", "folder", "--normal", str(folder), *extra, "--profile", "smoke"]
        line = _one_line_error(capsys, main([*argv, "--out", str(tmp_path / "r")]))
        assert "given as both" in line and str(folder.resolve()) in line
    argv = ["--normal", str(tmp_path), "--anomalous", str(folder), "--test-normal", str(folder)]
    line = _one_line_error(capsys, main(["train", "--data", "folder", *argv, "--profile", "smoke"]))
    assert "anomalous and the test-normal folder" in line


# --------------------------------------------------------------------------- data kinds (6, 7)


def test_any_nonzero_mask_value_is_defect_and_many_values_warn(tmp_path):
    from adtr_core.data.base import read_mask

    two = np.zeros((8, 8), np.uint8)
    two[2:4, 2:4] = 100  # stored as 0/100: below the old threshold of 128
    Image.fromarray(two).save(tmp_path / "a.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # two values: no warning
        assert read_mask(tmp_path / "a.png", None).sum() == 4
    many = two.copy()
    many[5, 5] = 3  # a third value, faint
    (tmp_path / "soft").mkdir()
    Image.fromarray(many).save(tmp_path / "soft" / "b.png")
    with pytest.warns(UserWarning, match="more than two values"):
        assert read_mask(tmp_path / "soft" / "b.png", None).sum() == 5


def test_empty_masks_are_told_from_no_masks():
    from adtr_core.method.metrics import compute_metrics
    from adtr_core.runs.results import absence_reason

    labels, scores = np.array([0, 1, 1]), np.array([0.1, 0.5, 0.9])
    maps = np.random.default_rng(0).random((3, 8, 8))
    with pytest.warns(UserWarning, match="empty"):
        empty = compute_metrics(labels, scores, masks=np.zeros((3, 8, 8)), maps=maps)
    assert "empty" in absence_reason("pixel_auroc", empty)
    none = compute_metrics(labels, scores)
    assert "no pixel masks" in absence_reason("pixel_auroc", none)


def test_data_check_accepts_two_valued_masks_and_names_the_rule_otherwise(tmp_path, demo_data):
    from adtr_core.data.check import check_root

    cat = tmp_path / "grass"
    shutil.copytree(demo_data / "grass", cat)
    mask = next((cat / "ground_truth").rglob("*.png"))
    arr = np.asarray(Image.open(mask).convert("L"))
    Image.fromarray(np.where(arr > 0, 100, 0).astype(np.uint8)).save(mask)
    report = check_root(tmp_path, category="grass")
    assert report.ok and not any(str(mask) in w for w in report.warnings)
    soft = arr.copy()
    soft[0, 0] = 7
    Image.fromarray(soft).save(mask)
    report = check_root(tmp_path, category="grass")
    assert any("non-zero pixel counts as defect" in w for w in report.warnings)


@pytest.mark.parametrize(
    "array, mode, expected",
    [
        (np.full((8, 8), 0.5, np.float32), "F", 128),  # float in [0, 1]
        (np.full((8, 8), 32768, np.uint16), None, 128),  # 16-bit: by 65535
        (np.linspace(-3, 5, 64, dtype=np.float32).reshape(8, 8), "F", None),  # own range
    ],
)
def test_float_and_16_bit_images_are_scaled_by_their_range(tmp_path, array, mode, expected):
    from adtr_core.data.base import read_image

    path = tmp_path / "x.tif"
    Image.fromarray(array, mode=mode).save(path)
    image = read_image(path, None)
    if expected is not None:
        assert abs(int(image.mean()) - expected) <= 1
    else:
        assert image.min() == 0 and image.max() == 255


def test_float_image_with_nan_is_refused_by_name(tmp_path):
    from adtr_core.data.base import read_image
    from adtr_core.data.errors import DatasetError

    arr = np.zeros((8, 8), np.float32)
    arr[0, 0] = np.nan
    Image.fromarray(arr, mode="F").save(tmp_path / "nan.tif")
    with pytest.raises(DatasetError, match="nan.tif.*NaN"):
        read_image(tmp_path / "nan.tif", None)


# --------------------------------------------------------------------------- debris (14)


def test_temporaries_of_a_killed_writer_are_removed_and_live_ones_kept(tmp_path):
    import os
    import time

    from adtr_core.io import remove_stale_temporaries

    old, live = tmp_path / ".feat.a1.tmp.pt", tmp_path / ".feat.b2.tmp.pt"
    for path in (old, live, tmp_path / "feat.pt"):
        path.write_bytes(b"x")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert remove_stale_temporaries(tmp_path, older_than_s=3600) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name, "feat.pt"]
    assert remove_stale_temporaries(tmp_path) == 1 and not live.exists()  # under a lock


# --------------------------------------------------------------------------- messages (15)


def test_an_unreachable_ray_address_fails_at_once_in_one_line(tmp_path, capsys):
    import socket
    import time

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    argv = ["sweep", *SMOKE, "--executor", "ray", "--address", f"127.0.0.1:{port}", "--quiet"]
    line = _one_line_error(capsys, main(argv))
    assert f"127.0.0.1:{port}" in line and "no Ray cluster" in line
    assert time.monotonic() - start < 5


def test_peers_with_one_training_image_say_too_few(tmp_path, capsys, demo_data):
    normal, anomalous = tmp_path / "normal", tmp_path / "anomalous"
    for folder, source in ((normal, "train/good/000.png"), (anomalous, "test/hole/000.png")):
        folder.mkdir()
        shutil.copy(demo_data / "grass" / source, folder)
    argv = ["--normal", str(normal), "--anomalous", str(anomalous), "--profile", "smoke"]
    for model in ("padim", "patchcore"):
        line = _one_line_error(capsys, main(["train", "--model", model, *argv, "--quiet"]))
        assert "too few training images" in line and ": 1, it needs at least 2" in line


def test_outputs_under_a_file_and_bad_seeds_name_the_flag(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    line = _one_line_error(capsys, main(["data", "demo", "--out", str(blocker / "sub")]))
    assert "a_file is a file, not a folder" in line
    line = _one_line_error(
        capsys, main(["data", "demo", "--out", str(tmp_path / "d"), "--seed", "-1"])
    )
    assert "--seed -1" in line and not (tmp_path / "d").exists()
    argv = ["sweep", *SMOKE, "--out", str(blocker / "table.csv"), "--quiet"]
    line = _one_line_error(capsys, main(argv))  # refused before any run, not after all of them
    assert "a_file" in line and "existing file" in line
    assert "run(s)" not in capsys.readouterr().out


def test_very_long_error_lines_keep_their_start_and_end():
    from adtr_core.cli import MAX_LINE, _one_line

    line = _one_line(ValueError("unknown thing 'x'; valid: " + "name, " * 900 + "THE FIX"))
    assert len(line) < MAX_LINE + 60 and line.startswith("unknown thing 'x'")
    assert line.endswith("THE FIX") and "characters left out" in line


def test_peers_refuse_a_users_folder_too(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    line = _one_line_error(capsys, main(["train", *SMOKE, "--model", "padim", "--out", str(mine)]))
    assert "not a run" in line and sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
