"""MVTecDataset on trees written in the real MVTec AD layout, its errors, and the genuine sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from adtr_core import paths
from adtr_core.data import MVTEC_CATEGORIES, DatasetError, MVTecDataset
from adtr_core.data.mvtec import OBJECT_CATEGORIES, TEXTURE_CATEGORIES


def _png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _mvtec_tree(root: Path, category: str = "bottle", size: int = 40, gray: bool = False) -> Path:
    """2 train, 2 good test, 2 'crack' test images with masks (square defect at known place)."""
    rng = np.random.default_rng(0)
    shape = (size, size) if gray else (size, size, 3)
    cat = root / category
    for i in range(2):
        _png(cat / "train" / "good" / f"{i:03d}.png", rng.integers(0, 256, shape, dtype=np.uint8))
        _png(cat / "test" / "good" / f"{i:03d}.png", rng.integers(0, 256, shape, dtype=np.uint8))
        _png(cat / "test" / "crack" / f"{i:03d}.png", rng.integers(0, 256, shape, dtype=np.uint8))
        mask = np.zeros((size, size), np.uint8)
        mask[: size // 2, : size // 4] = 255  # top-left block: 1/8 of the image
        _png(cat / "ground_truth" / "crack" / f"{i:03d}_mask.png", mask)
    return root


def test_categories_constants():
    assert len(MVTEC_CATEGORIES) == 15 and len(set(MVTEC_CATEGORIES)) == 15
    assert set(TEXTURE_CATEGORIES) | set(OBJECT_CATEGORIES) == set(MVTEC_CATEGORIES)
    assert "metal_nut" in OBJECT_CATEGORIES and "carpet" in TEXTURE_CATEGORIES


def test_train_split(tmp_path):
    root = _mvtec_tree(tmp_path)
    ds = MVTecDataset(root, "bottle", "train", image_size=32)
    assert len(ds) == 2 and ds.labels.tolist() == [0, 0] and ds.defects == ["good", "good"]
    item = ds[0]
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
    assert 0.0 <= item["image"].min() and item["image"].max() <= 1.0
    assert item["mask"].shape == (1, 32, 32) and item["mask"].sum() == 0
    assert item["label"] == 0 and item["defect"] == "good" and item["path"].endswith("000.png")


def test_test_split_labels_masks_and_resize(tmp_path):
    root = _mvtec_tree(tmp_path, size=40)
    ds = MVTecDataset(root, "bottle", "test", image_size=20)
    assert ds.has_masks and ds.image_size == 20
    assert ds.defects == ["crack", "crack", "good", "good"]
    assert ds.labels.tolist() == [1, 1, 0, 0]
    item = ds[0]
    mask = item["mask"][0]
    assert set(torch.unique(mask).tolist()) == {0.0, 1.0}  # nearest keeps it binary
    assert mask[:10, :5].all() and mask.sum() == 50  # the block, resized exactly
    assert ds[2]["mask"].sum() == 0
    # images resized with a smoothing filter: the mean of the resized image matches the original
    original = np.asarray(Image.open(ds.paths[0]), dtype=np.float32) / 255
    assert abs(item["image"].mean().item() - original.mean()) < 0.02


def test_grayscale_becomes_rgb(tmp_path):
    root = _mvtec_tree(tmp_path, gray=True)
    item = MVTecDataset(root, "bottle", "train", image_size=16)[1]
    assert item["image"].shape == (3, 16, 16)
    assert torch.equal(item["image"][0], item["image"][1]) and torch.equal(
        item["image"][0], item["image"][2]
    )


def test_any_category_and_defect_names(tmp_path):
    root = _mvtec_tree(tmp_path, category="my_widget")
    ds = MVTecDataset(root, "my_widget", "test", image_size=16)
    assert len(ds) == 4 and "crack" in ds.defects


def test_root_from_env(tmp_path, monkeypatch):
    root = _mvtec_tree(tmp_path)
    monkeypatch.setenv("MVTEC_ROOT", str(root))
    assert len(MVTecDataset(None, "bottle", "train", image_size=16)) == 2


def test_missing_root_says_where_to_get_it(tmp_path, monkeypatch):
    with pytest.raises(DatasetError) as err:
        MVTecDataset(tmp_path / "nowhere", "bottle")
    msg = str(err.value)
    assert "nowhere" in msg and "https://www.mvtec.com/company/research/datasets/mvtec-ad" in msg
    assert "--data-root" in msg and "MVTEC_ROOT" in msg
    monkeypatch.delenv("MVTEC_ROOT", raising=False)
    monkeypatch.setenv("ADTR_ROOT", str(tmp_path))  # an install without the embedded copy
    with pytest.raises(DatasetError, match="MVTEC_ROOT"):
        MVTecDataset(None, "bottle")


def test_unknown_category_lists_found_and_official(tmp_path):
    root = _mvtec_tree(tmp_path)
    with pytest.raises(DatasetError) as err:
        MVTecDataset(root, "bottel")
    msg = str(err.value)
    assert "'bottel'" in msg and "['bottle']" in msg and "metal_nut" in msg and "zipper" in msg


def test_defective_image_without_mask(tmp_path):
    root = _mvtec_tree(tmp_path)
    (root / "bottle" / "ground_truth" / "crack" / "001_mask.png").unlink()
    with pytest.raises(DatasetError) as err:
        MVTecDataset(root, "bottle", "test")
    msg = str(err.value)
    assert "crack/001.png" in msg and "001_mask.png" in msg and "no mask" in msg
    ds = MVTecDataset(root, "bottle", "test", image_size=16, require_masks=False)
    assert not ds.has_masks and len(ds) == 4
    assert MVTecDataset(root, "bottle", "train").has_masks  # train split needs none


def test_mask_size_mismatch(tmp_path):
    root = _mvtec_tree(tmp_path, size=40)
    _png(root / "bottle" / "ground_truth" / "crack" / "000_mask.png", np.zeros((30, 40), np.uint8))
    with pytest.raises(DatasetError) as err:
        MVTecDataset(root, "bottle", "test")
    msg = str(err.value)
    assert "000_mask.png" in msg and "40x30" in msg and "40x40" in msg


def test_corrupt_image_names_the_file(tmp_path):
    root = _mvtec_tree(tmp_path)
    bad = root / "bottle" / "train" / "good" / "001.png"
    bad.write_bytes(bad.read_bytes()[:60])  # truncated PNG
    ds = MVTecDataset(root, "bottle", "train", image_size=16)
    ds[0]  # the good one reads
    with pytest.raises(DatasetError) as err:
        ds[1]
    assert str(bad) in str(err.value) and "corrupt" in str(err.value)
    (root / "bottle" / "test" / "crack" / "000.png").write_bytes(b"not an image at all")
    with pytest.raises(DatasetError, match="crack/000.png"):
        MVTecDataset(root, "bottle", "test")  # header read for the mask-size check


def test_empty_train_good(tmp_path):
    root = _mvtec_tree(tmp_path)
    for p in (root / "bottle" / "train" / "good").iterdir():
        p.unlink()
    with pytest.raises(DatasetError) as err:
        MVTecDataset(root, "bottle", "train")
    assert "train/good" in str(err.value) and "no images" in str(err.value)
    MVTecDataset(root, "bottle", "test")  # the test split still works


def test_bad_split(tmp_path):
    with pytest.raises(DatasetError, match="split"):
        MVTecDataset(_mvtec_tree(tmp_path), "bottle", "val")


def test_embedded_bottle_category_is_whole():
    """The embedded real data: the whole MVTec AD bottle category at 256 px, with its licence."""
    root = paths.embedded_mvtec_root()
    assert (root / "license.txt").is_file() and (root / "readme.txt").is_file()
    assert "CC BY-NC-SA 4.0" in (root / "SOURCE.md").read_text()
    train = MVTecDataset(root, "bottle", "train", image_size=64)
    test = MVTecDataset(root, "bottle", "test", image_size=64)
    assert len(train) == 209 and len(test) == 83 and test.has_masks
    counts = {d: test.defects.count(d) for d in sorted(set(test.defects))}
    assert counts == {"broken_large": 20, "broken_small": 22, "contamination": 21, "good": 20}
    assert int(test.labels.sum()) == 63
    for i in (0, 20, 45, 82):  # one image of every kind
        item = test[i]
        assert item["image"].shape == (3, 64, 64) and item["mask"].shape == (1, 64, 64)
        assert bool(item["mask"].sum() > 0) == (item["label"] == 1)
        assert set(torch.unique(item["mask"]).tolist()) <= {0.0, 1.0}


def test_mvtec_without_root_reads_the_embedded_copy(monkeypatch):
    monkeypatch.delenv("MVTEC_ROOT", raising=False)
    assert MVTecDataset(None, "bottle", "test", image_size=32).root == paths.embedded_mvtec_root()
    with pytest.raises(DatasetError, match="MVTEC_ROOT"):
        MVTecDataset(None, "cable", "test", image_size=32)  # the copy holds bottle only


def test_cli_and_notebooks_take_the_same_first_category(tmp_path):
    """MVTec AD's official order, then the other folders alphabetically, for both."""
    from adtr_core.cli import build_parser, train_config
    from adtr_core.data.sources import list_categories, resolve_category

    for name in ("zipper", "widget", "bottle", "carpet", "aaa"):
        (tmp_path / name / "train").mkdir(parents=True)
    order = list_categories("mvtec", str(tmp_path))  # what the notebooks take the first of
    assert order == ["carpet", "bottle", "zipper", "aaa", "widget"]
    cfg = train_config(build_parser().parse_args(["train", "--data-root", str(tmp_path)]))
    assert resolve_category(cfg) == order[0] == "carpet"
