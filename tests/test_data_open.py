"""open_dataset dispatch and the shared item contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from adtr_core.data import SOURCES, DatasetError, open_dataset


def test_unknown_source_and_split():
    with pytest.raises(DatasetError, match="mvtec"):
        open_dataset("imagenet")
    with pytest.raises(DatasetError, match="split"):
        open_dataset("digits", category=0, split="val")


def test_mvtec_and_folder_sources(tmp_path):
    img = np.zeros((20, 20, 3), np.uint8)
    for sub in ("bottle/train/good", "bottle/test/good"):
        (tmp_path / sub).mkdir(parents=True)
        Image.fromarray(img).save(tmp_path / sub / "a.png")
    ds = open_dataset("mvtec", tmp_path, "bottle", "test", image_size=24)
    assert len(ds) == 1 and ds.image_size == 24
    folder = open_dataset("folder", tmp_path / "bottle" / "train" / "good")
    assert folder.image_size == 256 and len(folder) == 1
    test = open_dataset(
        "folder", split="test", test_normal_dir=tmp_path / "bottle" / "test" / "good"
    )
    assert test.labels.tolist() == [0]


def test_item_contract_digits():
    ds = open_dataset("digits", category=1, split="test", image_size=16)
    assert "digits" in SOURCES
    item = ds[0]
    assert set(item) == {"image", "mask", "label", "defect", "path"}
    assert item["image"].dtype == torch.float32 and item["mask"].dtype == torch.float32
    assert isinstance(item["label"], int) and isinstance(item["defect"], str)
    assert ds.labels.dtype == np.int64 and len(ds.defects) == len(ds) and ds.has_masks is False
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch["image"].shape == (4, 3, 16, 16) and batch["label"].dtype == torch.int64
