"""The development categories: bottle moved at random (image and mask alike), bottle small, and
the embedded screw split (image labels only)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from adtr_core import paths
from adtr_core.data import development, open_dataset
from adtr_core.data.errors import DatasetError

BOTTLE = paths.embedded_mvtec_root() / "bottle"
SCREW = paths.embedded_mvtec_root() / "screw"

pytestmark = pytest.mark.skipif(not BOTTLE.is_dir(), reason="the embedded bottle is missing")


@pytest.fixture
def small_bottle(tmp_path, monkeypatch):
    """A copy of bottle with 50 training images and two test images per folder."""
    src = tmp_path / "src"
    for folder in ("train/good",):
        (src / folder).mkdir(parents=True)
        for p in sorted((BOTTLE / folder).iterdir())[:50]:
            shutil.copy(p, src / folder / p.name)
    for folder in sorted((BOTTLE / "test").iterdir()):
        (src / "test" / folder.name).mkdir(parents=True)
        masks = BOTTLE / "ground_truth" / folder.name
        for p in sorted(folder.iterdir())[:2]:
            shutil.copy(p, src / "test" / folder.name / p.name)
            if masks.is_dir():
                (src / "ground_truth" / folder.name).mkdir(parents=True, exist_ok=True)
                mask = masks / f"{p.stem}_mask.png"
                shutil.copy(mask, src / "ground_truth" / folder.name / mask.name)
    screw = tmp_path / "screw"  # a few images of each of the split's folders
    for folder in ("train/good", "test/good", "test/defect"):
        (screw / folder).mkdir(parents=True)
        for p in sorted((SCREW / folder).iterdir())[:3]:
            shutil.copy(p, screw / folder / p.name)
    sources = {"bottle": src, "screw": screw}
    monkeypatch.setattr(development, "_source", lambda category="bottle": sources[category])
    return src


def _array(path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_build_is_deterministic_and_moves_each_mask_with_its_image(small_bottle, tmp_path):
    a = development.build_development(tmp_path / "a", seed=0)
    b = development.build_development(tmp_path / "b", seed=0)
    c = development.build_development(tmp_path / "c", seed=1)
    name = "bottle-unaligned/test/broken_large/000.png"
    assert np.array_equal(_array(a / name), _array(b / name))
    assert not np.array_equal(_array(a / name), _array(c / name))
    moved = _array(a / "bottle-unaligned/train/good/000.png")
    assert not np.array_equal(moved, _array(small_bottle / "train/good/000.png"))
    for folder in ("broken_large", "broken_small", "contamination"):
        for mask_file in sorted((small_bottle / "ground_truth" / folder).iterdir()):
            before = _array(mask_file) > 0
            after = _array(a / "bottle-unaligned/ground_truth" / folder / mask_file.name) > 0
            assert after.sum() >= development.KEEP_DEFECT * before.sum()  # the defect stays


def test_an_image_and_its_mask_take_the_same_transform(tmp_path):
    image = np.full((128, 128, 3), 40, np.uint8)
    image[30:60, 70:100] = 250  # a bright "defect"
    mask = np.zeros((128, 128), np.uint8)
    mask[30:60, 70:100] = 255
    Image.fromarray(image).save(tmp_path / "x.png")
    Image.fromarray(mask).save(tmp_path / "x_mask.png")
    rng = np.random.default_rng(5)
    development._move(
        tmp_path / "x.png",
        tmp_path / "y.png",
        rng,
        tmp_path / "x_mask.png",
        tmp_path / "y_mask.png",
    )
    bright = _array(tmp_path / "y.png").mean(axis=2) > 145
    moved = _array(tmp_path / "y_mask.png") > 0
    assert not np.array_equal(moved, mask > 0)  # it did move
    overlap = (bright & moved).sum() / (bright | moved).sum()
    assert overlap > 0.85


def test_small_keeps_48_training_images_and_the_whole_test_set(small_bottle, tmp_path):
    root = development.build_development(tmp_path / "d", seed=0)
    train = sorted(p.name for p in (root / "bottle-small/train/good").iterdir())
    assert len(train) == development.SMALL_TRAIN
    assert set(train) <= {p.name for p in (small_bottle / "train/good").iterdir()}
    test = sorted(
        p.relative_to(root / "bottle-small") for p in (root / "bottle-small/test").rglob("*.png")
    )
    assert test == sorted(
        p.relative_to(small_bottle) for p in (small_bottle / "test").rglob("*.png")
    )


def test_open_dataset_reads_the_development_categories(small_bottle, tmp_path):
    root = development.ensure_development(tmp_path / "dev")
    assert development.ensure_development(tmp_path / "dev") == root  # reused, not rebuilt
    train = open_dataset(
        "dev", root=root, category="bottle-unaligned", split="train", image_size=64
    )
    test = open_dataset("dev", root=root, category="bottle-unaligned", split="test", image_size=64)
    assert len(train) == 50 and test.has_masks
    items = [test[i] for i in range(len(test))]
    assert all(it["mask"].sum() > 0 for it in items if it["label"] == 1)
    assert {it["label"] for it in items} == {0, 1}


def test_a_foreign_folder_is_not_replaced(small_bottle, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match="not an"):
        development.build_development(tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "mine"


def test_screw_is_the_embedded_split_with_image_labels_only(small_bottle, tmp_path):
    root = development.ensure_development(tmp_path / "dev")
    test = open_dataset(
        "dev", root=root, category="screw", split="test", image_size=64, require_masks="folders"
    )
    assert not test.has_masks  # no ground_truth/: image AUROC only
    items = [test[i] for i in range(len(test))]
    assert sorted(it["label"] for it in items) == [0, 0, 0, 1, 1, 1]
    assert {it["defect"] for it in items} == {"good", "defect"}
    train = open_dataset("dev", root=root, category="screw", split="train", image_size=64)
    assert len(train) == 3
    source = sorted((small_bottle.parent / "screw" / "train/good").iterdir())
    assert np.array_equal(_array(root / "screw/train/good" / source[0].name), _array(source[0]))
