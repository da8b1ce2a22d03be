"""CIFAR readers on files written in the official python format, and the restricted unpickler."""

from __future__ import annotations

import io
import os
import pickle

import numpy as np
import pytest
import torch
from helpers import save_cifar_batch

from adtr_core.data import (
    DatasetError,
    OneClassDataset,
    load_cifar10,
    load_cifar100,
    open_dataset,
    restricted_load,
)


def _images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


@pytest.fixture
def cifar_root(tmp_path):
    """CIFAR-10 (5 x 4 train, 10 test) and CIFAR-100 (6 train, 4 test) in the official layout."""
    c10 = tmp_path / "cifar-10-batches-py"
    for b in range(1, 6):
        save_cifar_batch(c10 / f"data_batch_{b}", _images(4, b), [(b + i) % 3 for i in range(4)])
    save_cifar_batch(c10 / "test_batch", _images(10, 9), [i % 10 for i in range(10)])
    c100 = tmp_path / "cifar-100-python"
    for name, n in (("train", 6), ("test", 4)):
        fine = list(range(n))
        extra = {b"coarse_labels": [f // 2 for f in fine]}
        save_cifar_batch(c100 / name, _images(n, n), fine, label_key=b"fine_labels", extra=extra)
    return tmp_path


def test_written_batches_have_the_official_format(tmp_path):
    images = _images(3, 0)
    path = save_cifar_batch(tmp_path / "data_batch_1", images, [7, 8, 9])
    raw = path.read_bytes()
    assert raw.startswith(b"\x80\x02}") and b"cnumpy.core.multiarray\n_reconstruct\n" in raw
    batch = pickle.loads(raw, encoding="bytes")  # what a plain reader of the real files does
    assert batch[b"labels"] == [7, 8, 9]
    assert batch[b"data"].dtype == np.uint8 and batch[b"data"].shape == (3, 3072)
    # pixel layout: row = 1024 red, 1024 green, 1024 blue values, each row-major 32x32
    data = batch[b"data"]
    assert data[1, 0] == images[1, 0, 0, 0] and data[1, 1024 + 33] == images[1, 1, 1, 1]
    assert data[2, 2048 + 32 * 5 + 7] == images[2, 5, 7, 2]


def test_load_cifar10(cifar_root):
    x, y = load_cifar10(cifar_root, train=True)
    assert x.shape == (20, 32, 32, 3) and x.dtype == np.uint8 and y.dtype == np.int64
    assert np.array_equal(x[:4], _images(4, 1)) and np.array_equal(x[-4:], _images(4, 5))
    assert y[:4].tolist() == [1, 2, 0, 1]
    xt, yt = load_cifar10(cifar_root / "cifar-10-batches-py", train=False)  # the folder itself
    assert xt.shape == (10, 32, 32, 3) and yt.tolist() == list(range(10))


def test_load_cifar100(cifar_root, monkeypatch):
    monkeypatch.setenv("CIFAR_ROOT", str(cifar_root))
    x, y = load_cifar100(train=True)
    assert x.shape == (6, 32, 32, 3) and y.tolist() == list(range(6))
    assert np.array_equal(x, _images(6, 6))
    _, coarse = load_cifar100(cifar_root, train=False, coarse=True)
    assert coarse.tolist() == [0, 0, 1, 1]


def test_python3_pickles_of_arrays_also_load(tmp_path):
    path = tmp_path / "test_batch"
    data = _images(2, 3).transpose(0, 3, 1, 2).reshape(2, 3072)
    path.write_bytes(pickle.dumps({b"data": data, b"labels": [0, 1]}, protocol=4))
    batch = restricted_load(path)
    assert np.array_equal(batch[b"data"], data)


class _Evil:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_restricted_unpickler_refuses_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    path.parent.mkdir()
    payload = {b"data": _Evil(f"touch {marker}"), b"labels": [0]}
    path.write_bytes(pickle.dumps(payload, protocol=4))
    assert b"system" in path.read_bytes()
    with pytest.raises(DatasetError) as err:
        load_cifar10(tmp_path, train=False)
    msg = str(err.value)
    assert "Refusing" in msg and "system" in msg and str(path) in msg and "cifar.html" in msg
    assert not marker.exists()
    # other globals are refused too, whatever the protocol
    for protocol in (0, 2, 4):
        evil = pickle.dumps(eval, protocol=protocol)  # builtins.eval
        path.write_bytes(evil)
        with pytest.raises(DatasetError, match=r"builtins?\.eval|__builtin__\.eval"):
            restricted_load(path)


def test_unpickler_class_refuses_directly():
    from adtr_core.data import RestrictedUnpickler

    with pytest.raises(pickle.UnpicklingError, match="posix.system|os.system"):
        RestrictedUnpickler(io.BytesIO(pickle.dumps(_Evil("true")))).load()


def test_missing_files_say_where_cifar_comes_from(tmp_path, monkeypatch):
    with pytest.raises(DatasetError) as err:
        load_cifar10(tmp_path)
    msg = str(err.value)
    assert "https://www.cs.toronto.edu/~kriz/cifar.html" in msg
    assert "CIFAR_ROOT" in msg and "--data-root" in msg and "cifar-10-batches-py" in msg
    monkeypatch.delenv("CIFAR_ROOT", raising=False)
    with pytest.raises(DatasetError, match="CIFAR_ROOT"):
        load_cifar100()


def test_incomplete_and_malformed_files(cifar_root):
    (cifar_root / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DatasetError, match="data_batch_3"):
        load_cifar10(cifar_root, train=True)
    test_batch = cifar_root / "cifar-10-batches-py" / "test_batch"
    test_batch.write_bytes(test_batch.read_bytes()[:100])  # truncated
    with pytest.raises(DatasetError, match="test_batch"):
        load_cifar10(cifar_root, train=False)
    path = save_cifar_batch(test_batch, _images(2, 0), [0, 1], label_key=b"fine_labels")
    with pytest.raises(DatasetError, match="b'labels'"):
        load_cifar10(cifar_root, train=False)
    assert path.exists()


def test_one_class_protocol():
    images, targets = _images(12, 0), np.arange(12) % 3
    train = OneClassDataset(images, targets, normal_class=1, split="train")
    assert len(train) == 4 and train.labels.tolist() == [0] * 4 and not train.has_masks
    assert torch.equal(train[0]["image"], torch.from_numpy(images[1]).permute(2, 0, 1) / 255.0)
    test = OneClassDataset(images, targets, 1, "test", image_size=16, class_names=["a", "b", "c"])
    assert len(test) == 12 and test.labels.tolist() == (targets != 1).astype(int).tolist()
    assert test.defects[:3] == ["a", "good", "c"]
    item = test[2]
    assert item["image"].shape == (3, 16, 16) and item["mask"].shape == (1, 16, 16)
    assert item["mask"].sum() == 0 and item["label"] == 1
    with pytest.raises(DatasetError, match="classes present"):
        OneClassDataset(images, targets, 7, "train")


def test_open_dataset_cifar(cifar_root):
    train = open_dataset("cifar10", cifar_root, category="2", split="train")
    _, targets = load_cifar10(cifar_root)
    assert len(train) == (targets == 2).sum() == 7 and train.image_size == 32
    test = open_dataset("cifar10", cifar_root, category="bird", split="test", image_size=64)
    assert len(test) == 10 and test.labels.sum() == 9 and test[0]["image"].shape == (3, 64, 64)
    assert test.defects[0] == "airplane"
    outliers = open_dataset("cifar100", cifar_root, split="train")  # outlier exposure
    assert len(outliers) == 6 and outliers.labels.tolist() == [1] * 6
    assert set(outliers.defects) == {"outlier"}
    same = open_dataset("cifar100", cifar_root, split="outlier")
    assert torch.equal(same[5]["image"], outliers[5]["image"])
    one = open_dataset("cifar100", cifar_root, category=0, split="test", coarse=True)
    assert one.labels.tolist() == [0, 0, 1, 1]
    with pytest.raises(DatasetError, match="normal class"):
        open_dataset("cifar10", cifar_root, category="kitten")
