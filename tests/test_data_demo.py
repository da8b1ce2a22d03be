"""The embedded demo textures: layout, counts, determinism, disjoint regions, reuse."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adtr_core.data import (
    DEFECT_TYPES,
    DEMO_CATEGORIES,
    DatasetError,
    DemoConfig,
    MVTecDataset,
    build_demo,
    check_root,
    ensure_demo,
    open_dataset,
)
from adtr_core.data.demo import MARKER, photograph

SMALL = dict(image_size=64, crop_size=64, n_train=3, n_test_good=2, n_per_defect=2)


def _files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def default_demo(tmp_path_factory):
    return build_demo(tmp_path_factory.mktemp("demo") / "root", seed=0)


def test_default_counts_and_layout(default_demo):
    report = check_root(default_demo)
    assert report.ok, report.problems
    assert set(report.categories) == set(DEMO_CATEGORIES)
    for cat in report.categories.values():
        assert cat.n_train == 60 and cat.test_counts["good"] == 20
        assert all(cat.test_counts[d] == 8 and cat.mask_counts[d] == 8 for d in DEFECT_TYPES)
        assert cat.image_sizes == {(256, 256)}
    with Image.open(default_demo / "brick" / "train" / "good" / "000.png") as im:
        assert im.mode == "L"  # grayscale photographs, read as RGB by the dataset


def test_read_by_mvtec_dataset(default_demo):
    ds = MVTecDataset(default_demo, "gravel", "test", image_size=128)
    assert len(ds) == 52 and ds.labels.sum() == 32 and set(ds.defects) == {"good", *DEFECT_TYPES}
    areas = []
    for i in np.flatnonzero(ds.labels):
        mask = ds[int(i)]["mask"]
        areas.append(mask.mean().item())
        assert 0 < areas[-1] < 0.5
    assert max(areas) > 3 * min(areas)  # varied defect sizes


def test_defects_are_not_trivially_separable(default_demo):
    """Image-wide statistics of many defective images stay within the range of good ones."""
    for category in DEMO_CATEGORIES:
        train = MVTecDataset(default_demo, category, "train", image_size=64)
        test = MVTecDataset(default_demo, category, "test", image_size=64)
        good = [train[i]["image"] for i in range(len(train))]
        good += [test[int(i)]["image"] for i in np.flatnonzero(test.labels == 0)]
        stats = np.array([[t.mean(), t.std()] for t in good])
        lo, hi = stats.min(0), stats.max(0)
        inside = 0
        for i in np.flatnonzero(test.labels):
            image = test[int(i)]["image"]
            s = np.array([image.mean(), image.std()])
            inside += bool(((s >= lo) & (s <= hi)).all())
        assert inside >= 0.4 * test.labels.sum(), category  # subtle defects included


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a = _files(build_demo(tmp_path / "a", seed=3, **SMALL))
    b = _files(build_demo(tmp_path / "b", seed=3, **SMALL))
    c = _files(build_demo(tmp_path / "c", seed=4, **SMALL))
    assert a == b
    assert a.keys() == c.keys() and a != c
    n_images = sum(k.endswith(".png") and "ground_truth" not in k for k in a)
    assert n_images == 3 * (3 + 2 + 2 * len(DEFECT_TYPES))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c"]  # no temp leftovers


def test_test_crops_come_from_the_test_region(tmp_path):
    """Without rotation, flips or resampling each crop is a block of the photograph: find it."""
    cfg = DemoConfig(max_rotation=0.0, flips=False, categories=("brick",), **SMALL)
    root = build_demo(tmp_path / "d", seed=0, config=cfg)
    photo = photograph("brick").astype(np.uint8)
    windows = np.lib.stride_tricks.sliding_window_view(photo, (64, 64))  # (449, 449, 64, 64)

    def row_of(path: Path) -> int:
        crop = np.asarray(Image.open(path))
        hits = np.argwhere((windows[:, :, 0, :] == crop[0]).all(-1))
        hits = [(y, x) for y, x in hits if np.array_equal(windows[y, x], crop)]
        assert len(hits) >= 1
        return int(hits[0][0])

    cat = root / "brick"
    for path in sorted((cat / "train" / "good").glob("*.png")):
        row = row_of(path)
        assert cfg.train_rows[0] <= row and row + 64 <= cfg.train_rows[1]  # all in the train rows
    for path in sorted((cat / "test" / "good").glob("*.png")):
        row = row_of(path)
        assert cfg.test_rows[0] <= row and row + 64 <= cfg.test_rows[1]


def test_ensure_demo_builds_once_and_reuses(tmp_path, monkeypatch):
    monkeypatch.setenv("ADTR_CACHE", str(tmp_path / "cache"))
    root = ensure_demo(seed=1, **SMALL)
    assert root == tmp_path / "cache" / "demo"
    marker = json.loads((root / MARKER).read_text())
    assert marker["seed"] == 1 and marker["config"]["n_train"] == 3
    stamp = (root / "brick" / "train" / "good" / "000.png").stat().st_mtime_ns
    assert ensure_demo(seed=1, **SMALL) == root
    assert (root / "brick" / "train" / "good" / "000.png").stat().st_mtime_ns == stamp
    ensure_demo(seed=2, **SMALL)  # other parameters: rebuilt in place
    assert json.loads((root / MARKER).read_text())["seed"] == 2
    stamp = (root / MARKER).stat().st_mtime_ns
    ds = open_dataset(
        "demo", category="grass", split="test", image_size=32, seed=2, config=DemoConfig(**SMALL)
    )
    assert (root / MARKER).stat().st_mtime_ns == stamp  # reused, not rebuilt
    assert (
        len(ds) == 2 + 2 * len(DEFECT_TYPES)
        and ds.has_masks
        and ds[0]["image"].shape == (3, 32, 32)
    )


def test_a_given_root_with_another_seed_is_used_as_built(tmp_path):
    """`adtr data demo --seed 3` then `--data demo --data-root DIR` trains on seed 3's files."""
    root = build_demo(tmp_path / "d", seed=3, **SMALL)
    before = _files(root)
    ds = open_dataset("demo", root=root, category="brick", split="train", image_size=32)
    assert len(ds) == 3 and _files(root) == before  # not rebuilt with the default seed 0
    ds = open_dataset("demo", root=root, category="brick", split="train", seed=4, **SMALL)
    assert json.loads((root / MARKER).read_text())["seed"] == 4  # asked for: rebuilt


def test_defect_strength_follows_the_texture(tmp_path):
    """Smears keep the brightness and wash the texture out; scratches scale with its spread."""
    from adtr_core.data.demo import _scratch, _stain

    rng = np.random.default_rng(0)
    flat = rng.normal(128, 5, (256, 256)).astype(np.float32)
    busy = rng.normal(128, 40, (256, 256)).astype(np.float32)
    for img in (flat, busy):
        out, mask = _stain(img, np.random.default_rng(1), scale=1.0)
        assert mask.any() and out[mask].std() < 0.5 * img[mask].std()
        assert abs(out[mask].mean() - img[mask].mean()) <= 0.6 * img.std()
    steps = []
    for img in (flat, busy):
        out, mask = _scratch(img, np.random.default_rng(2), scale=1.0)
        steps.append(abs(out[mask].mean() - img[mask].mean()))
    assert 0.8 * 5 < steps[0] < 2.2 * 5 and 0.8 * 40 < steps[1] < 2.2 * 40


def test_refuses_to_overwrite_other_folders(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(DatasetError, match="not an"):
        build_demo(tmp_path / "mine", **SMALL)
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"
    with pytest.raises(DatasetError, match="Unknown demo parameter"):
        build_demo(tmp_path / "x", n_trian=3)
    with pytest.raises(DatasetError, match="smaller than a crop window"):
        DemoConfig(crop_size=300)
