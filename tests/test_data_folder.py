"""FolderDataset: one's own normal / anomalous / mask folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adtr_core.data import DatasetError, FolderDataset


def _png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


@pytest.fixture
def folders(tmp_path):
    rng = np.random.default_rng(1)
    img = lambda: rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)  # noqa: E731
    for i in range(3):
        _png(tmp_path / "normal" / f"n{i}.png", img())
    Image.fromarray(img()).save(tmp_path / "normal" / "n3.jpg")
    _png(tmp_path / "test_normal" / "t0.png", img())
    _png(tmp_path / "anomalous" / "a0.png", img())
    _png(tmp_path / "anomalous" / "dent" / "a1.png", img())
    mask = np.zeros((24, 24), np.uint8)
    mask[4:8, 4:8] = 255
    _png(tmp_path / "masks" / "a0_mask.png", mask)
    _png(tmp_path / "masks" / "dent" / "a1.png", mask)  # plain stem also matches
    return tmp_path


def test_train(folders):
    ds = FolderDataset(folders / "normal", image_size=16)
    assert len(ds) == 4 and ds.labels.tolist() == [0] * 4 and ds[3]["image"].shape == (3, 16, 16)


def test_test_with_masks_and_defect_subfolders(folders):
    ds = FolderDataset(
        folders / "normal", folders / "anomalous", folders / "masks", split="test",
        test_normal_dir=folders / "test_normal", image_size=24,
    )  # fmt: skip
    assert ds.has_masks and ds.labels.tolist() == [0, 1, 1]
    assert ds.defects == ["good", "anomalous", "dent"]
    assert ds[1]["mask"].sum() == 16 and ds[2]["mask"].sum() == 16 and ds[0]["mask"].sum() == 0


def test_test_without_masks(folders):
    ds = FolderDataset(None, folders / "anomalous", split="test", image_size=24)
    assert not ds.has_masks and ds.labels.tolist() == [1, 1] and ds[0]["mask"].sum() == 0


def test_missing_mask_is_an_error(folders):
    (folders / "masks" / "a0_mask.png").unlink()
    with pytest.raises(DatasetError) as err:
        FolderDataset(None, folders / "anomalous", folders / "masks", split="test")
    assert "a0.png" in str(err.value) and "a0_mask.png" in str(err.value)


def test_mask_size_mismatch(folders):
    _png(folders / "masks" / "a0_mask.png", np.zeros((10, 24), np.uint8))
    with pytest.raises(DatasetError, match="24x10"):
        FolderDataset(None, folders / "anomalous", folders / "masks", split="test")


def test_missing_and_empty_folders(folders):
    with pytest.raises(DatasetError, match="does not exist"):
        FolderDataset(folders / "nope")
    (folders / "empty").mkdir()
    with pytest.raises(DatasetError, match="No training images"):
        FolderDataset(folders / "empty")
    with pytest.raises(DatasetError, match="anomalous_dir"):
        FolderDataset(folders / "normal", split="test")
