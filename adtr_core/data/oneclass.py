"""In-memory image arrays as datasets, and the one-class protocol (CIFAR-10, digits).

One-class protocol (paper Sec. 4, as in Golan & El-Yaniv 2018 and later work): class
``c`` is normal. The training split is the training images of class ``c``; the test
split is the whole test set, labelled anomalous (1) when the class differs from ``c``.
There is no pixel ground truth: masks are all zero and ``has_masks`` is False.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from adtr_core.data.errors import DatasetError


def as_uint8_rgb(images: np.ndarray) -> np.ndarray:
    """Validate and convert (N, H, W) or (N, H, W, 3) uint8 images to (N, H, W, 3)."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise DatasetError(f"images must be uint8 in [0, 255], got dtype {images.dtype}.")
    if images.ndim == 3:
        images = np.repeat(images[..., None], 3, axis=-1)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise DatasetError(
            f"images must have shape (N, H, W, 3) (or (N, H, W) grayscale), got {images.shape}."
        )
    return images


class ArrayDataset(torch.utils.data.Dataset):
    """uint8 images held in memory, served as contract items (no pixel ground truth).

    Args:
        images: uint8 (N, H, W, 3) or (N, H, W).
        labels: int (N,), 1 = anomalous.
        defects: one string per image (default "good" for label 0, "anomalous" otherwise).
        image_size: side S of the returned images (bilinear, antialiased); None keeps H
            (images must then be square).
        name: prefix of the item ``path`` strings (``"<name>/<index>"``).
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: Sequence[int] | np.ndarray,
        defects: Sequence[str] | None = None,
        image_size: int | None = None,
        name: str = "array",
    ) -> None:
        self.images = as_uint8_rgb(images)
        self.labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if len(self.labels) != len(self.images):
            raise DatasetError(
                f"{len(self.images)} images but {len(self.labels)} labels; give one label per image."
            )
        if defects is None:
            defects = ["good" if y == 0 else "anomalous" for y in self.labels]
        self.defects = list(defects)
        if len(self.defects) != len(self.images):
            raise DatasetError(f"{len(self.images)} images but {len(self.defects)} defect names.")
        h, w = self.images.shape[1:3]
        if image_size is None:
            if h != w:
                raise DatasetError(f"images are {h}x{w}; pass image_size to make them square.")
            image_size = h
        if int(image_size) <= 0:
            raise DatasetError(f"image_size must be a positive integer, got {image_size!r}.")
        self.image_size = int(image_size)
        self.has_masks = False
        self.name = name
        self.paths = [f"{name}/{i}" for i in range(len(self.images))]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        image = torch.from_numpy(self.images[index]).permute(2, 0, 1).float().div_(255.0)  # (3,H,W)
        if image.shape[1:] != (self.image_size, self.image_size):
            image = F.interpolate(
                image[None],
                size=(self.image_size, self.image_size),
                mode="bilinear",
                align_corners=False,
                antialias=True,
            )[0].clamp_(0.0, 1.0)  # (3, S, S)
        return {
            "image": image,
            "mask": torch.zeros(1, self.image_size, self.image_size),
            "label": int(self.labels[index]),
            "defect": self.defects[index],
            "path": self.paths[index],
        }


class OneClassDataset(ArrayDataset):
    """One-class split of a labelled image set: ``normal_class`` normal, the rest anomalous.

    Args:
        images: uint8 (N, H, W, 3) (or (N, H, W)); the training images for
            ``split="train"``, the test images for ``split="test"``.
        targets: int class of each image (N,).
        normal_class: the class taken as normal.
        split: ``"train"`` keeps only images of ``normal_class`` (all label 0);
            ``"test"`` keeps all, label = (target != normal_class).
        image_size: side S of the returned images; None keeps the original size.
        class_names: optional names, indexed by class, used as the ``defect`` of
            anomalous items (default ``"class_<k>"``); normal items are ``"good"``.
        name: prefix of the item ``path`` strings.
    """

    def __init__(
        self,
        images: np.ndarray,
        targets: Sequence[int] | np.ndarray,
        normal_class: int,
        split: str = "train",
        image_size: int | None = None,
        class_names: Sequence[str] | None = None,
        name: str = "array",
    ) -> None:
        if split not in ("train", "test"):
            raise DatasetError(f"split must be 'train' or 'test', got {split!r}.")
        images = as_uint8_rgb(images)
        targets = np.asarray(targets, dtype=np.int64).reshape(-1)
        if len(targets) != len(images):
            raise DatasetError(f"{len(images)} images but {len(targets)} targets.")
        classes = sorted(set(targets.tolist()))
        try:
            normal_class = int(normal_class)
        except (TypeError, ValueError) as exc:
            raise DatasetError(
                f"normal_class must be an integer class, got {normal_class!r}; classes: {classes}."
            ) from exc
        if normal_class not in classes:
            raise DatasetError(
                f"normal_class {normal_class} has no images in this {split} set; "
                f"classes present: {classes}."
            )
        index = (
            np.flatnonzero(targets == normal_class) if split == "train" else np.arange(len(targets))
        )
        self.normal_class = normal_class
        self.split = split
        self.targets = targets[index]
        self.indices = index
        labels = (self.targets != normal_class).astype(np.int64)

        def defect(t: int) -> str:
            if t == normal_class:
                return "good"
            return class_names[t] if class_names is not None else f"class_{t}"

        super().__init__(
            images[index],
            labels,
            [defect(int(t)) for t in self.targets],
            image_size,
            name=f"{name}/{split}",
        )
        self.paths = [f"{name}/{split}/{i}" for i in index]
