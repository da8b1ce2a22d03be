"""Datasets: MVTec AD (and its layout), one's own folders, CIFAR, digits, the demo textures.

Every dataset returns contract items ``{"image": (3, S, S) float in [0, 1], "mask":
(1, S, S) float {0, 1}, "label": int (1 = anomalous), "defect": str, "path": str}`` and
has ``has_masks``, ``image_size``, ``labels`` and ``defects``. :func:`open_dataset` opens
any of them by name; bad input raises :class:`DatasetError` saying what to fix.
"""

from __future__ import annotations

import os
from pathlib import Path

from adtr_core.data.base import IMAGE_EXTENSIONS, FileDataset, Record
from adtr_core.data.check import CategoryReport, CheckReport, check_root, format_report
from adtr_core.data.cifar import (
    CIFAR10_CLASSES,
    RestrictedUnpickler,
    load_cifar10,
    load_cifar100,
    restricted_load,
)
from adtr_core.data.confetti import ConfettiDataset, confetti_noise
from adtr_core.data.demo import (
    DEFECT_TYPES,
    DEMO_CATEGORIES,
    DemoConfig,
    build_demo,
    ensure_demo,
    is_demo_build,
)
from adtr_core.data.development import (
    DEVELOPMENT_CATEGORIES,
    build_development,
    ensure_development,
)
from adtr_core.data.digits import DIGIT_CLASSES, load_digits_split
from adtr_core.data.errors import DatasetError
from adtr_core.data.folder import FolderDataset
from adtr_core.data.mvtec import (
    MVTEC_CATEGORIES,
    OBJECT_CATEGORIES,
    TEXTURE_CATEGORIES,
    MVTecDataset,
    list_categories,
)
from adtr_core.data.oneclass import ArrayDataset, OneClassDataset

__all__ = [
    "CIFAR10_CLASSES",
    "DEFECT_TYPES",
    "DEMO_CATEGORIES",
    "DEVELOPMENT_CATEGORIES",
    "DIGIT_CLASSES",
    "IMAGE_EXTENSIONS",
    "MVTEC_CATEGORIES",
    "OBJECT_CATEGORIES",
    "SOURCES",
    "TEXTURE_CATEGORIES",
    "ArrayDataset",
    "CategoryReport",
    "CheckReport",
    "ConfettiDataset",
    "DatasetError",
    "DemoConfig",
    "FileDataset",
    "FolderDataset",
    "MVTecDataset",
    "OneClassDataset",
    "Record",
    "RestrictedUnpickler",
    "build_demo",
    "build_development",
    "check_root",
    "confetti_noise",
    "ensure_demo",
    "ensure_development",
    "is_demo_build",
    "format_report",
    "list_categories",
    "load_cifar10",
    "load_cifar100",
    "load_digits_split",
    "open_dataset",
    "restricted_load",
]

SOURCES = ("mvtec", "folder", "cifar10", "cifar100", "digits", "demo", "dev")
DEFAULT_IMAGE_SIZE = {
    "mvtec": 256,
    "folder": 256,
    "demo": 256,
    "dev": 256,
    "cifar10": 32,
    "cifar100": 32,
    "digits": 32,
}


def _class_index(category: object, source: str, names: tuple[str, ...]) -> int:
    """A class given as int, str of int, or class name."""
    if isinstance(category, str) and category in names:
        return names.index(category)
    try:
        return int(category)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise DatasetError(
            f"{source}: category must be the normal class, an integer 0..{len(names) - 1} "
            f"or one of {list(names)}; got {category!r}."
        ) from None


def open_dataset(
    source: str,
    root: str | os.PathLike | None = None,
    category: str | int | None = None,
    split: str = "train",
    image_size: int | None = None,
    **kw,
):
    """Open a dataset by source name.

    Args:
        source: one of
            ``"mvtec"``: :class:`MVTecDataset` on ``root`` (default ``$MVTEC_ROOT``), any
            category folder in the MVTec AD layout;
            ``"folder"``: :class:`FolderDataset`; ``root`` is ``normal_dir``, the other
            folders come as keywords (``anomalous_dir``, ``mask_dir``, ``test_normal_dir``,
            ``mask_suffix``);
            ``"cifar10"``: one-class CIFAR-10 (:class:`OneClassDataset`), ``category`` the
            normal class (int, str of int, or name such as ``"cat"``); ``root`` (default
            ``$CIFAR_ROOT``) holds ``cifar-10-batches-py/``;
            ``"cifar100"``: with a ``category``, one-class CIFAR-100 (``coarse=True`` keyword
            for the 20 super-classes); without, every CIFAR-100 image of the split as an
            anomaly (label 1, defect ``"outlier"``): the outlier exposure of ADTR+
            (``split="outlier"`` is the training images);
            ``"digits"``: one-class scikit-learn digits (``test_fraction``, ``seed`` keywords);
            ``"demo"``: :class:`MVTecDataset` on :func:`ensure_demo` (``root`` default
            ``paths.demo_root()``; ``seed`` and ``config`` (a :class:`DemoConfig`) keywords;
            a ``root`` holding a finished build of any seed is used as it is unless
            ``seed`` or ``config`` are given;
            ``image_size`` is the size the images are read at, not built at), ``category``
            in ``DEMO_CATEGORIES``;
            ``"dev"``: :class:`MVTecDataset` on :func:`ensure_development` (``root`` default
            ``development.development_root()``), the development categories
            ``bottle-unaligned`` and ``bottle-small`` built from the embedded bottle.
        root: data root (see above).
        category: MVTec-layout category, or the normal class of a one-class protocol.
        split: ``"train"`` or ``"test"`` (or ``"outlier"``, see ``"cifar100"``).
        image_size: side S of the returned images; None: 256 for image folders, 32 for
            CIFAR and digits.
        **kw: passed to the dataset (see above).

    Returns:
        a dataset of contract items.
    """
    if source not in SOURCES:
        raise DatasetError(f"Unknown data source {source!r}; choose one of {list(SOURCES)}.")
    if split == "outlier" and source == "cifar100" and category is None:
        split = "train"  # outlier exposure uses the CIFAR-100 training images
    if split not in ("train", "test"):
        raise DatasetError(
            f"split must be 'train' or 'test' ('outlier' for cifar100 without a category), "
            f"got {split!r}."
        )
    size = DEFAULT_IMAGE_SIZE[source] if image_size is None else int(image_size)
    if source == "mvtec":
        return MVTecDataset(root, category, split, size, **kw)  # type: ignore[arg-type]
    if source == "demo":
        explicit = "seed" in kw or "config" in kw
        seed = kw.pop("seed", 0)
        config = kw.pop("config", None)
        demo_kw = {k: kw.pop(k) for k in list(kw) if k in DemoConfig.__dataclass_fields__}
        if root is not None and not (explicit or demo_kw) and is_demo_build(root):
            demo_root = Path(root)  # a finished build (`adtr data demo --seed N`): use it as is
        else:
            demo_root = ensure_demo(root, seed=seed, config=config, **demo_kw)
        return MVTecDataset(demo_root, category, split, size, **kw)  # type: ignore[arg-type]
    if source == "dev":
        return MVTecDataset(ensure_development(root), category, split, size, **kw)  # type: ignore[arg-type]
    if source == "folder":
        normal_dir = kw.pop("normal_dir", root)
        return FolderDataset(normal_dir, split=split, image_size=size, **kw)
    train = split == "train"
    if source == "digits":
        split_kw = {k: kw.pop(k) for k in ("test_fraction", "seed") if k in kw}
        x_train, y_train, x_test, y_test = load_digits_split(size, **split_kw)
        images, targets = (x_train, y_train) if train else (x_test, y_test)
        normal = _class_index(category, source, DIGIT_CLASSES)
        names = tuple(f"digit_{d}" for d in DIGIT_CLASSES)
        return OneClassDataset(
            images, targets, normal, split, size, class_names=names, name="digits", **kw
        )
    if source == "cifar10":
        images, targets = load_cifar10(root, train=train)
        normal = _class_index(category, source, CIFAR10_CLASSES)
        return OneClassDataset(
            images, targets, normal, split, size, class_names=CIFAR10_CLASSES, name="cifar10", **kw
        )
    coarse = bool(kw.pop("coarse", False))
    images, targets = load_cifar100(root, train=train, coarse=coarse)
    if category is None:
        return ArrayDataset(
            images, [1] * len(images), ["outlier"] * len(images), size, name=f"cifar100/{split}"
        )
    n = 20 if coarse else 100
    normal = _class_index(category, source, tuple(str(i) for i in range(n)))
    return OneClassDataset(images, targets, normal, split, size, name="cifar100", **kw)
