"""check_root: counts per category and every problem in one report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from adtr_core.data import check_root, format_report


def _png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _category(root: Path, name: str, n_defect: int = 2) -> None:
    img = np.full((16, 16, 3), 100, np.uint8)
    mask = np.zeros((16, 16), np.uint8)
    mask[2:5, 2:5] = 255
    for i in range(3):
        _png(root / name / "train" / "good" / f"{i:03d}.png", img)
    _png(root / name / "test" / "good" / "000.png", img)
    for i in range(n_defect):
        _png(root / name / "test" / "cut" / f"{i:03d}.png", img)
        _png(root / name / "ground_truth" / "cut" / f"{i:03d}_mask.png", mask)


def test_clean_root(tmp_path):
    _category(tmp_path, "tile")
    _category(tmp_path, "widget", n_defect=3)
    report = check_root(tmp_path)
    assert report.ok and report.problems == [] and report.warnings == []
    assert report.categories["tile"].n_train == 3
    assert report.categories["widget"].test_counts == {"cut": 3, "good": 1}
    assert report.categories["widget"].mask_counts == {"cut": 3}
    text = format_report(report)
    assert "widget: 3 train, 4 test" in text and "test/cut: 3 images, 3 masks" in text
    assert text.endswith("OK")
    assert set(check_root(tmp_path, category="tile").categories) == {"tile"}


def test_every_problem_is_listed(tmp_path):
    _category(tmp_path, "tile")
    _category(tmp_path, "wood")
    (tmp_path / "tile" / "ground_truth" / "cut" / "000_mask.png").unlink()  # 1: no mask
    _png(
        tmp_path / "tile" / "ground_truth" / "cut" / "001_mask.png", np.zeros((8, 16), np.uint8)
    )  # 2
    bad = tmp_path / "wood" / "test" / "good" / "000.png"
    bad.write_bytes(bad.read_bytes()[:50])  # 3: truncated
    for p in (tmp_path / "wood" / "train" / "good").iterdir():  # 4: empty train/good
        p.unlink()
    _png(tmp_path / "wood" / "ground_truth" / "cut" / "009_mask.png", np.zeros((16, 16), np.uint8))
    report = check_root(tmp_path)
    assert not report.ok and len(report.problems) == 4, report.problems
    joined = "\n".join(report.problems)
    assert "tile/test/cut/000.png has no mask" in joined
    assert "001_mask.png is 16x8" in joined
    assert f"unreadable image {bad}" in joined
    assert "wood/train/good holds no images" in joined
    assert any("009_mask.png has no image" in w for w in report.warnings)
    text = format_report(report)
    assert "4 problem(s)" in text and "NOT OK" in text


def test_missing_root_and_unknown_category(tmp_path):
    report = check_root(tmp_path / "absent")
    assert (
        not report.ok and "mvtec.com" in report.problems[0] and "MVTEC_ROOT" in report.problems[0]
    )
    _category(tmp_path, "tile")
    report = check_root(tmp_path, category="til")
    assert "'til'" in report.problems[0] and "['tile']" in report.problems[0]


def _folders(root: Path, masks: bool = True) -> dict[str, Path]:
    img = np.full((16, 16, 3), 100, np.uint8)
    mask = np.zeros((16, 16), np.uint8)
    mask[2:5, 2:5] = 255
    for i in range(3):
        _png(root / "good" / f"{i}.png", img)
    _png(root / "test_good" / "0.png", img)
    _png(root / "bad" / "scratch" / "0.png", img)
    _png(root / "bad" / "1.png", img)
    if masks:
        _png(root / "masks" / "scratch" / "0_mask.png", mask)
        _png(root / "masks" / "1.png", mask)
    return {"normal": root / "good", "anomalous": root / "bad", "test_normal": root / "test_good"}


def test_folder_data_is_checked_as_folder_dataset_reads_it(tmp_path):
    from adtr_core.data.check import check_folders

    folders = _folders(tmp_path)
    report = check_folders(**folders, masks=tmp_path / "masks")
    assert report.ok, report.problems
    cat = report.categories["folder"]
    assert cat.n_train == 3 and cat.test_counts == {"good": 1, "anomalous": 1, "scratch": 1}
    assert cat.mask_counts == {"anomalous": 1, "scratch": 1}
    text = format_report(report)
    assert f"normal folder: {folders['normal']}" in text and "OK" in text.splitlines()[-1]
    assert "supports: image AUROC, pixel AUROC, AU-PRO" in text


def test_folder_data_problems_are_all_reported(tmp_path):
    from adtr_core.data.check import check_folders

    folders = _folders(tmp_path, masks=False)
    (tmp_path / "masks").mkdir()
    report = check_folders(folders["normal"], folders["anomalous"], tmp_path / "masks")
    assert len(report.problems) == 3, report.problems  # two masks missing, no normal test images
    assert sum("has no mask" in p for p in report.problems) == 2
    assert any("--test-normal" in p for p in report.problems)
    labels_only = check_folders(**folders)
    assert labels_only.ok and "image AUROC only" in labels_only.categories["folder"].supports


def test_cli_data_check_takes_folder_data(tmp_path, capsys):
    from adtr_core.cli import main

    folders = _folders(tmp_path)
    argv = ["data", "check", "--data", "folder", "--normal", str(folders["normal"])]
    argv += ["--anomalous", str(folders["anomalous"]), "--masks", str(tmp_path / "masks")]
    assert main([*argv, "--test-normal", str(folders["test_normal"])]) == 0
    assert "folder: 3 train, 3 test" in capsys.readouterr().out
    assert main(argv) == 1  # no normal test images: a problem, reported
    assert main(["data", "check"]) == 2
    assert "needs a root folder" in capsys.readouterr().err
