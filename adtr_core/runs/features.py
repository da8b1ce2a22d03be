"""Backbone features of a dataset, computed once and cached (the backbone is frozen).

ADTR reconstructs the features of a frozen, pre-trained backbone (Sec. 3.1), so the
features of a dataset never change during training: :func:`extract_features` computes
them once and caches them in memory and on disk under ``paths.feature_cache_dir()``.

The cache key is the sha256 of the backbone's ``cache_key()``, the image size, the precision
(and on the CPU the torch thread count, which changes the floats) and the bytes of every image
tensor as the dataset yields them, in order. Any change in the backbone, its
weights or stages, the resolution, the data or its preprocessing gives a new key; nothing
has to be invalidated by hand. Only the features are cached; labels, masks, defect names
and paths are read from the dataset on every call.

:func:`map_reconstructions` is the one batched pass of a reconstruction network over
such features (scoring, feature differences).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from adtr_core import paths
from adtr_core.io import atomic_path, remove_stale_temporaries
from adtr_core.runs.device import resolve_device
from adtr_core.runs.precision import autocast, autocast_dtype

CACHE_FORMAT = "adtr-features"
CACHE_VERSION = 1
# Images are kept in memory between the hashing pass and the backbone pass up to this size;
# beyond it the dataset is read a second time on a cache miss.
MAX_BUFFER_BYTES = 1 << 30

_MEMORY_CACHE: dict[str, torch.Tensor] = {}


def clear_memory_cache() -> None:
    """Forget the features cached in this process (the disk cache is kept)."""
    _MEMORY_CACHE.clear()


@dataclass
class FeatureSet:
    """Backbone features of a dataset with its labels.

    Attributes:
        features: (N, C, h, w) float32 on the CPU. Shared with the in-process cache: treat as
            read-only (clone before changing it in place).
        labels: (N,) int64, 1 = anomalous.
        masks: (N, 1, S, S) float32 in {0, 1}, or None when the dataset has no pixel masks.
        defects: N defect names ("good" for normal items).
        paths: N image paths.
    """

    features: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor | None
    defects: list[str]
    paths: list[str]

    def __post_init__(self) -> None:
        n = self.features.shape[0]
        sizes = {
            "labels": self.labels.shape[0],
            "defects": len(self.defects),
            "paths": len(self.paths),
        }
        if self.masks is not None:
            sizes["masks"] = self.masks.shape[0]
        bad = {k: v for k, v in sizes.items() if v != n}
        if bad:
            raise ValueError(f"FeatureSet: {n} feature maps but lengths {bad} differ")

    def __len__(self) -> int:
        return self.features.shape[0]

    def subset(self, idx: Sequence[int] | np.ndarray | torch.Tensor) -> FeatureSet:
        """The items at ``idx`` (integer indices or a boolean mask of length N), in that order."""
        index = torch.as_tensor(np.asarray(idx) if not isinstance(idx, torch.Tensor) else idx)
        if index.dtype == torch.bool:
            if index.shape != (len(self),):
                raise ValueError(
                    f"boolean subset mask has shape {tuple(index.shape)}, not ({len(self)},)"
                )
            index = index.nonzero().flatten()
        index = index.long().flatten()
        pos = index.tolist()
        return FeatureSet(
            features=self.features[index],
            labels=self.labels[index],
            masks=self.masks[index] if self.masks is not None else None,
            defects=[self.defects[i] for i in pos],
            paths=[self.paths[i] for i in pos],
        )

    def as_dataset(self) -> FeatureDataset:
        """A dataset of dicts ``{"features", "label", "mask"?, "index"}`` for the Trainer."""
        return FeatureDataset(self)


class FeatureDataset(Dataset):
    """Items of a :class:`FeatureSet` as dicts.

    Item ``i``: ``{"features": (C, h, w), "label": int64 scalar, "mask": (1, S, S)`` (only
    when the set has masks) ``, "index": i}``; the default collate batches them.
    """

    def __init__(self, feature_set: FeatureSet) -> None:
        self.feature_set = feature_set

    def __len__(self) -> int:
        return len(self.feature_set)

    def __getitem__(self, i: int) -> dict[str, Any]:
        fs = self.feature_set
        item: dict[str, Any] = {"features": fs.features[i], "label": fs.labels[i], "index": i}
        if fs.masks is not None:
            item["mask"] = fs.masks[i]
        return item


# ---------------------------------------------------------------------------------------------


def _backbone_key(backbone: nn.Module) -> str:
    key_fn = getattr(backbone, "cache_key", None)
    if not callable(key_fn):
        raise TypeError(
            f"{type(backbone).__name__} has no cache_key() method, so its features cannot be "
            f"cached: add one (a string naming the weights and stages) or pass cache=False"
        )
    return str(key_fn())


def _loader(dataset: Dataset, batch_size: int, num_workers: int) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)


def _hash_images(hasher: Any, images: torch.Tensor) -> None:
    arr = images.detach().cpu().contiguous().numpy()  # (B, 3, S, S)
    hasher.update(memoryview(arr).cast("B"))


def _read_cache(file: Path, key: str, n: int) -> torch.Tensor | None:
    try:
        blob = torch.load(file, map_location="cpu", weights_only=True)
        feats = blob["features"]
        ok = (
            blob.get("format") == CACHE_FORMAT
            and blob.get("key") == key
            and isinstance(feats, torch.Tensor)
            and feats.dim() == 4
            and feats.shape[0] == n
            and feats.dtype == torch.float32
        )
        if not ok:
            raise ValueError("unexpected content")
        return feats
    except Exception as err:  # corrupt, truncated, foreign or unsafe file
        warnings.warn(
            f"feature cache {file} is unreadable ({type(err).__name__}: {err}); recomputing it",
            stacklevel=3,
        )
        return None


def _write_cache(file: Path, key: str, backbone_key: str, feats: torch.Tensor) -> None:
    blob = {
        "format": CACHE_FORMAT,
        "version": CACHE_VERSION,
        "key": key,
        "backbone": backbone_key,
        "features": feats,
    }
    with atomic_path(file) as tmp:
        torch.save(blob, tmp)


def _run_backbone(
    backbone: nn.Module,
    batches: Any,
    device: torch.device,
    progress: bool,
    total: int | None,
    hasher: Any = None,
    dtype: torch.dtype | None = None,
) -> list[torch.Tensor]:
    """Run ``backbone`` over image batches; return their (B, C, h, w) float32 CPU features.

    When ``hasher`` is given, the bytes of the images are fed to it as they pass; ``dtype``
    is the autocast dtype (None: float32).
    """
    from adtr_core.runs.progress import progress_bar

    # channels_last speeds convolutions up on CUDA and on CPU alike (benchmarks: 1.44x on CPU).
    channels_last = getattr(backbone, "supports_channels_last", True)
    # Move the module outside inference mode: its parameters must stay ordinary tensors.
    backbone.eval().to(device)
    if channels_last:
        backbone.to(memory_format=torch.channels_last)
    out = []
    bar = progress_bar(batches, total=total, desc="features", unit="batch", disable=not progress)
    for images in bar:
        if hasher is not None:
            _hash_images(hasher, images)
        x = images.to(device, non_blocking=True)  # (B, 3, S, S)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), autocast(device, dtype):
            f = backbone(x)  # (B, C, h, w)
        if not isinstance(f, torch.Tensor) or f.dim() != 4 or f.shape[0] != x.shape[0]:
            shape = tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__
            raise ValueError(f"backbone must return (B, C, h, w) features, got {shape}")
        out.append(f.float().contiguous().cpu())
    return out


def extract_features(
    backbone: nn.Module,
    dataset: Dataset,
    batch_size: int = 16,
    device: str | torch.device | None = None,
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = False,
    num_workers: int = 0,
    precision: str = "auto",
) -> FeatureSet:
    """Backbone features of every item of ``dataset``, cached in memory and on disk.

    Args:
        backbone: frozen feature extractor, ``backbone(images (B, 3, S, S) in [0, 1]) ->
            (B, C, h, w)``, with a ``cache_key()`` method (needed when ``cache`` is on). It is
            moved to ``device`` and put in eval mode. A backbone that should not get
            channels_last inputs sets ``supports_channels_last = False``.
        dataset: items are dicts with "image" (3, S, S), "mask" (1, S, S), "label", "defect",
            "path"; ``dataset.has_masks`` (default True) says whether the masks are real.
        batch_size: images per backbone call.
        device: where the backbone runs; None = "auto" (the GPU when there is one). Features
            are returned as float32 on the CPU.
        cache: use the in-process and on-disk caches.
        cache_dir: the disk cache folder; default ``paths.feature_cache_dir()``.
        progress: show a progress bar over backbone batches.
        num_workers: DataLoader workers reading the dataset.
        precision: "auto" (bf16 autocast on CUDA, float32 on the CPU), "fp32" or "bf16"
            (``adtr_core.runs.precision``); features of each precision are cached apart.

    Returns:
        A :class:`FeatureSet` in dataset order.
    """
    n = len(dataset)
    if n == 0:
        raise ValueError("extract_features: the dataset is empty")
    device = resolve_device(device if device is not None else "auto")
    dtype = autocast_dtype(precision, device)
    has_masks = bool(getattr(dataset, "has_masks", True))

    # Pass 1: read the dataset; hash the images; keep labels, masks, names (and images, if small).
    bb_key = _backbone_key(backbone) if cache else ""
    image_size = getattr(dataset, "image_size", None)
    hasher = hashlib.sha256()
    labels, masks, defects, item_paths, images = [], [], [], [], []
    buffered = 0
    first_shape = None
    for batch in _loader(dataset, batch_size, num_workers):
        imgs = batch["image"]  # (B, 3, S, S)
        if first_shape is None:
            first_shape = tuple(imgs.shape[1:])
            if image_size is None:
                image_size = first_shape[-1]
        _hash_images(hasher, imgs)
        labels.append(torch.as_tensor(batch["label"]).long().reshape(-1))
        if has_masks:
            masks.append(batch["mask"].float())
        defects.extend(str(d) for d in batch["defect"])
        item_paths.extend(str(p) for p in batch["path"])
        if images is not None:
            buffered += imgs.numel() * imgs.element_size()
            if buffered <= MAX_BUFFER_BYTES:
                images.append(imgs)
            else:
                images = None  # too large to keep: read the dataset again on a cache miss
    image_digest = hasher.digest()  # sha256 of every image's bytes, in order
    # Features from bf16 autocast and from float32 are cached apart, and on the CPU so are those
    # of each torch thread count: the count changes the floats (by about 1e-6 of their range),
    # and training amplifies that to tenths of a point of AUROC.
    computed_in = "bf16" if dtype is not None else "fp32"
    if device.type == "cpu":
        computed_in += f"|threads={torch.get_num_threads()}"
    header = (
        f"{CACHE_FORMAT}/{CACHE_VERSION}|{bb_key}|{image_size}|{first_shape}|{n}|{computed_in}|"
    )
    key = hashlib.sha256(header.encode() + image_digest).hexdigest()

    def finish(feats: torch.Tensor) -> FeatureSet:
        return FeatureSet(
            features=feats,
            labels=torch.cat(labels),
            masks=torch.cat(masks) if has_masks else None,
            defects=defects,
            paths=item_paths,
        )

    folder = Path(cache_dir) if cache_dir is not None else paths.feature_cache_dir()
    file = folder / f"{key}.pt"
    if cache:
        # temporaries of a killed process (a live writer touches its file within the hour)
        remove_stale_temporaries(folder, older_than_s=3600)
        if key in _MEMORY_CACHE:
            return finish(_MEMORY_CACHE[key])
        if file.is_file():
            feats = _read_cache(file, key, n)
            if feats is not None:
                _MEMORY_CACHE[key] = feats
                return finish(feats)

    # Pass 2 (cache miss): run the backbone on the buffered images or on a second read.
    rehash = None
    if images is not None:
        source, total = images, len(images)
    else:
        loader = _loader(dataset, batch_size, num_workers)
        source, total = (b["image"] for b in loader), len(loader)
        rehash = hashlib.sha256()
    feats = torch.cat(_run_backbone(backbone, source, device, progress, total, rehash, dtype))
    # feats: (N, C, h, w)

    if cache:
        if rehash is not None and rehash.digest() != image_digest:
            warnings.warn(
                "the dataset gave different images on a second read (random augmentation?): "
                "its features are not cached",
                stacklevel=2,
            )
            return finish(feats)
        _MEMORY_CACHE[key] = feats
        _write_cache(file, key, bb_key, feats)
    return finish(feats)


T = TypeVar("T")


@torch.no_grad()
def map_reconstructions(
    model: nn.Module,
    features: torch.Tensor,
    fn: Callable[[torch.Tensor, torch.Tensor], T],
    batch_size: int = 64,
    dtype: torch.dtype | None = None,
) -> list[T]:
    """``fn(f, f_hat)`` of every batch of ``features`` and its reconstruction by ``model``.

    The model runs in eval mode (its training mode is restored afterwards) on its own
    device; ``fn`` runs outside autocast and should move what it keeps to the CPU.

    Args:
        model: a reconstruction network, ``f (B, C, h, w) -> f_hat (B, C, h, w)``.
        features: (N, C, h, w) backbone features.
        fn: what to keep of a batch, e.g. its score maps.
        batch_size: features per forward pass.
        dtype: autocast dtype of the reconstruction (None: float32).

    Returns:
        One result of ``fn`` per batch, in order.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(features), batch_size):
        f = features[start : start + batch_size].to(device)  # (B, C, h, w)
        with autocast(device, dtype):
            f_hat = model(f)  # (B, C, h, w)
        out.append(fn(f, f_hat))
    model.train(was_training)
    return out
