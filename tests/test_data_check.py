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
