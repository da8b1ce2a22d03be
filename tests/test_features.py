"""Tests for cached backbone feature extraction (stand-in backbone and datasets)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

import adtr_core.runs.features as features_mod
from adtr_core.runs.features import FeatureSet, clear_memory_cache, extract_features
from adtr_core.runs.train import TrainConfig, Trainer

S = 16  # image size; the stand-in backbone has stride 4 -> 4x4 grid


class CountingBackbone(nn.Module):
    """Stand-in backbone: a fixed stride-4 conv, counting its forward calls."""

    channels = 5

    def __init__(self, key: str = "standin-v1") -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, self.channels, kernel_size=4, stride=4)
        self.key = key
        self.calls = 0

    def cache_key(self) -> str:
        return self.key

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.conv(images)  # (B, C, S/4, S/4)


class DictImages(Dataset):
    """Items in the dataset contract: image, mask, label, defect, path."""

    image_size = S

    def __init__(self, n: int = 7, seed: int = 0, has_masks: bool = True) -> None:
        g = torch.Generator().manual_seed(seed)
        self.images = torch.rand(n, 3, S, S, generator=g)
        self.masks = (torch.rand(n, 1, S, S, generator=g) > 0.8).float()
        self.labels = [i % 2 for i in range(n)]
        self.has_masks = has_masks

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {
            "image": self.images[i],
            "mask": self.masks[i],
            "label": self.labels[i],
            "defect": "crack" if self.labels[i] else "good",
            "path": f"img_{i:03d}.png",
        }


@pytest.fixture(autouse=True)
def _fresh_memory_cache():
    clear_memory_cache()
    yield
    clear_memory_cache()


def test_features_match_backbone_and_metadata(tmp_path: Path):
    ds = DictImages()
    bb = CountingBackbone()
    fs = extract_features(bb, ds, batch_size=3, device="cpu", cache_dir=tmp_path)
    assert isinstance(fs, FeatureSet) and len(fs) == 7
    assert fs.features.shape == (7, 5, 4, 4) and fs.features.dtype == torch.float32
    assert not fs.features.is_inference()  # usable as the input of a trained model
    with torch.no_grad():
        torch.testing.assert_close(fs.features, bb.conv(ds.images))
    assert fs.labels.dtype == torch.int64 and fs.labels.tolist() == ds.labels
    assert fs.masks.shape == (7, 1, S, S) and torch.equal(fs.masks, ds.masks)
    assert fs.defects[:2] == ["good", "crack"] and fs.paths[3] == "img_003.png"
    assert bb.calls == 3  # ceil(7 / 3) batches


def test_second_call_hits_memory_then_disk_cache(tmp_path: Path):
    ds = DictImages()
    bb = CountingBackbone()
    first = extract_features(bb, ds, batch_size=4, device="cpu", cache_dir=tmp_path)
    assert bb.calls == 2 and len(list(tmp_path.glob("*.pt"))) == 1
    bb.calls = 0
    second = extract_features(bb, ds, batch_size=4, device="cpu", cache_dir=tmp_path)
    assert bb.calls == 0  # memory cache
    clear_memory_cache()
    third = extract_features(bb, ds, batch_size=2, device="cpu", cache_dir=tmp_path)
    assert bb.calls == 0  # disk cache; the key does not depend on the batch size
    assert torch.equal(first.features, second.features)
    assert torch.equal(first.features, third.features)
    assert third.labels.tolist() == first.labels.tolist()


def test_key_changes_with_content_backbone_and_cache_off(tmp_path: Path):
    bb = CountingBackbone()
    extract_features(bb, DictImages(seed=0), device="cpu", cache_dir=tmp_path)
    ds = DictImages(seed=0)
    ds.images[3, 0, 5, 5] += 1e-3  # one pixel differs
    bb.calls = 0
    extract_features(bb, ds, device="cpu", cache_dir=tmp_path)
    assert bb.calls == 1 and len(list(tmp_path.glob("*.pt"))) == 2

    other = CountingBackbone(key="standin-v2")
    extract_features(other, ds, device="cpu", cache_dir=tmp_path)
    assert other.calls == 1 and len(list(tmp_path.glob("*.pt"))) == 3

    bb.calls = 0
    extract_features(bb, ds, device="cpu", cache=False, cache_dir=tmp_path)
    assert bb.calls == 1 and len(list(tmp_path.glob("*.pt"))) == 3  # cache=False writes nothing


def test_features_of_another_cpu_thread_count_are_cached_apart(tmp_path: Path):
    bb, ds = CountingBackbone(), DictImages()
    before = torch.get_num_threads()
    try:
        for threads in (1, 2, 1):
            torch.set_num_threads(threads)
            extract_features(bb, ds, device="cpu", cache_dir=tmp_path)
    finally:
        torch.set_num_threads(before)
    assert bb.calls == 2 and len(list(tmp_path.glob("*.pt"))) == 2  # the third call hits


@pytest.mark.parametrize("garbage", [b"", b"\x00garbage", "wrong-content"])
def test_corrupt_cache_file_is_recomputed_with_warning(tmp_path: Path, garbage):
    ds = DictImages()
    bb = CountingBackbone()
    ref = extract_features(bb, ds, device="cpu", cache_dir=tmp_path)
    (file,) = tmp_path.glob("*.pt")
    if isinstance(garbage, bytes):
        file.write_bytes(garbage)
    else:  # a readable file that is not this cache entry
        torch.save({"format": "adtr-features", "key": "other", "features": torch.zeros(1)}, file)
    clear_memory_cache()
    bb.calls = 0
    with pytest.warns(UserWarning, match="recomputing"):
        fs = extract_features(bb, ds, device="cpu", cache_dir=tmp_path)
    assert bb.calls == 1 and torch.equal(fs.features, ref.features)
    clear_memory_cache()
    bb.calls = 0
    extract_features(bb, ds, device="cpu", cache_dir=tmp_path)  # rewritten: a clean hit now
    assert bb.calls == 0


def test_masks_none_without_pixel_labels(tmp_path: Path):
    fs = extract_features(
        CountingBackbone(), DictImages(has_masks=False), device="cpu", cache_dir=tmp_path
    )
    assert fs.masks is None
    item = fs.as_dataset()[0]
    assert set(item) == {"features", "label", "index"}


def test_default_cache_dir_follows_paths(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("ADTR_CACHE", str(tmp_path))
    extract_features(CountingBackbone(), DictImages(n=2), device="cpu")
    assert len(list((tmp_path / "features").glob("*.pt"))) == 1


def test_large_dataset_read_twice_and_nondeterministic_not_cached(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(features_mod, "MAX_BUFFER_BYTES", 0)  # force the second read
    bb = CountingBackbone()
    ds = DictImages()
    fs = extract_features(bb, ds, batch_size=4, device="cpu", cache_dir=tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(fs.features, bb.conv(ds.images))

    class Noisy(DictImages):
        def __getitem__(self, i):
            item = super().__getitem__(i)
            item["image"] = torch.rand(3, S, S)  # random augmentation: different every read
            return item

    with pytest.warns(UserWarning, match="not cached"):
        extract_features(bb, Noisy(), device="cpu", cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.pt"))) == 1


def test_subset_and_as_dataset_with_trainer(tmp_path: Path):
    fs = extract_features(CountingBackbone(), DictImages(), device="cpu", cache_dir=tmp_path)
    sub = fs.subset([4, 1])
    assert sub.paths == ["img_004.png", "img_001.png"]
    assert torch.equal(sub.features[0], fs.features[4]) and torch.equal(sub.masks[1], fs.masks[1])
    normal = fs.subset(fs.labels == 0)
    assert set(normal.defects) == {"good"} and len(normal) == 4

    ds = normal.as_dataset()
    item = ds[2]
    assert item["features"].shape == (5, 4, 4) and item["mask"].shape == (1, S, S)
    assert item["index"] == 2

    model = nn.Conv2d(5, 5, 1)

    def loss_fn(m, batch):
        assert batch["features"].shape[1:] == (5, 4, 4) and batch["label"].dtype == torch.int64
        return (m(batch["features"]) - batch["features"]).pow(2).mean()

    cfg = TrainConfig(epochs=2, batch_size=2, progress=False, device="cpu")
    hist = Trainer(model, loss_fn, ds, cfg).fit()
    assert len(hist) == 2


def test_bad_inputs(tmp_path: Path):
    with pytest.raises(ValueError, match="empty"):
        extract_features(CountingBackbone(), DictImages(n=0), device="cpu", cache_dir=tmp_path)
    plain = nn.Conv2d(3, 2, 4, stride=4)
    with pytest.raises(TypeError, match="cache=False"):
        extract_features(plain, DictImages(n=2), device="cpu", cache_dir=tmp_path)
    fs = extract_features(plain, DictImages(n=2), device="cpu", cache=False)
    assert fs.features.shape == (2, 2, 4, 4)
    with pytest.raises(ValueError, match="differ"):
        FeatureSet(torch.zeros(2, 1, 1, 1), torch.zeros(3).long(), None, ["a"] * 2, ["p"] * 2)
    with pytest.raises(ValueError, match=r"B, C, h, w"):
        extract_features(nn.Flatten(), DictImages(n=2), device="cpu", cache=False)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_features_close_to_cpu(tmp_path: Path):
    ds = DictImages()
    cpu = extract_features(CountingBackbone(), ds, device="cpu", cache_dir=tmp_path)
    gpu = extract_features(CountingBackbone(), ds, device="cuda", cache_dir=tmp_path)
    assert gpu.features.device.type == "cpu" and gpu.features.dtype == torch.float32
    torch.testing.assert_close(gpu.features, cpu.features, rtol=0.05, atol=0.05)
    assert len(list(tmp_path.glob("*.pt"))) == 2  # precisions are cached apart
