"""MVTec AD (Bergmann et al., CVPR 2019) and any dataset in its folder layout.

Layout read (the dataset's own, as extracted from the official archive)::

    <root>/<category>/train/good/*.png                     normal training images
    <root>/<category>/test/good/*.png                      normal test images
    <root>/<category>/test/<defect>/<name>.png             defective test images
    <root>/<category>/ground_truth/<defect>/<name>_mask.png  their pixel masks

Any category and defect names work, so one's own data in this layout (and the embedded
demo textures, :mod:`adtr_core.data.demo`) load through :class:`MVTecDataset` too.
Protocol (paper Sec. 4): one model per category, trained on ``train/good``, tested on
``test/*`` with image labels (good = 0) and pixel masks.
"""

from __future__ import annotations

import os
from pathlib import Path

from adtr_core import paths
from adtr_core.data.base import (
    FileDataset,
    Record,
    check_mask_matches,
    find_mask,
    fspath,
    list_images,
)
from adtr_core.data.errors import DatasetError

TEXTURE_CATEGORIES = ("carpet", "grid", "leather", "tile", "wood")
OBJECT_CATEGORIES = (
    "bottle",
    "cable",
    "capsule",
    "hazelnut",
    "metal_nut",
    "pill",
    "screw",
    "toothbrush",
    "transistor",
    "zipper",
)
MVTEC_CATEGORIES = TEXTURE_CATEGORIES + OBJECT_CATEGORIES
"""The 15 official MVTec AD categories (5 textures, 10 objects)."""

MVTEC_URL = "https://www.mvtec.com/company/research/datasets/mvtec-ad"
GOOD = "good"
MASK_SUFFIX = "_mask"


def resolve_mvtec_root(root: str | os.PathLike | None) -> Path:
    """``root``, else ``$MVTEC_ROOT``, else the embedded copy (bottle); else a :class:`DatasetError`."""
    if root is None:
        root = paths.default_mvtec_root()
    if root is None:
        raise DatasetError(
            "No MVTec AD root given. MVTec AD comes from " + MVTEC_URL + " (download and extract "
            "it); then pass --data-root DIR or set MVTEC_ROOT=DIR, DIR being the folder that holds "
            "bottle/, cable/, ... ."
        )
    root = fspath(root)
    if not root.is_dir():
        raise DatasetError(
            f"MVTec AD root {root} does not exist or is not a folder. MVTec AD comes from "
            f"{MVTEC_URL} (download and extract it); then pass --data-root DIR or set "
            "MVTEC_ROOT=DIR, DIR being the folder that holds bottle/, cable/, ... ."
        )
    return root


def list_categories(root: str | os.PathLike) -> list[str]:
    """Category folders under ``root`` (those holding ``train/`` or ``test/``), sorted."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(
        p.name
        for p in root.iterdir()
        if p.is_dir()
        and not p.name.startswith(".")
        and ((p / "train").is_dir() or (p / "test").is_dir())
    )


def category_dir(root: Path, category: str) -> Path:
    """``root/category``, or a :class:`DatasetError` listing the categories that exist."""
    if not isinstance(category, str) or not category:
        raise DatasetError(
            f"A category name is required (got {category!r}); "
            f"found under {root}: {list_categories(root)}."
        )
    folder = root / category
    if not ((folder / "train").is_dir() or (folder / "test").is_dir()):
        found = list_categories(root)
        if Path(root).resolve() == paths.embedded_mvtec_root().resolve():
            raise DatasetError(
                f"Unknown category {category!r}: the embedded MVTec AD copy holds only "
                f"{', '.join(found) or 'nothing'}. For the other categories download MVTec AD "
                f"from {MVTEC_URL}, extract it and set MVTEC_ROOT=DIR (or pass --data-root DIR)."
            )
        raise DatasetError(
            f"Unknown category {category!r}: {folder} has no train/ or test/ folder. "
            f"Categories found under {root}: {found or 'none'}. "
            f"The official MVTec AD categories are: {', '.join(MVTEC_CATEGORIES)}."
        )
    return folder


def train_records(folder: Path) -> list[Record]:
    good = folder / "train" / GOOD
    images = list_images(good)
    if not images:
        what = "is missing" if not good.is_dir() else "holds no images"
        raise DatasetError(
            f"No training images: {good} {what}. A category needs its normal training images in "
            "<category>/train/good/ (PNG/JPEG/BMP/TIFF); re-extract the dataset or add them."
        )
    return [Record(path, 0, GOOD) for path in images]


def test_records(folder: Path, require_masks: bool | str = True) -> tuple[list[Record], bool]:
    """Records of ``folder/test/*`` and whether every defective image has a mask.

    Args:
        require_masks: True: every defective image needs its mask; False: none does;
            ``"folders"``: a defect whose ``ground_truth/<defect>/`` folder is absent is
            image-level (no masks, no error), but in a mask folder that exists every
            image needs its mask (a missing one is a broken data set).
    """
    test = folder / "test"
    defect_dirs = (
        sorted(p for p in test.iterdir() if p.is_dir() and not p.name.startswith("."))
        if test.is_dir()
        else []
    )
    records: list[Record] = []
    all_masks = True
    for defect_dir in defect_dirs:
        defect = defect_dir.name
        for path in list_images(defect_dir):
            if defect == GOOD:
                records.append(Record(path, 0, GOOD))
                continue
            gt_dir = folder / "ground_truth" / defect
            mask_path = find_mask(gt_dir, path.stem, MASK_SUFFIX)
            if mask_path is None:
                if require_masks is True or (require_masks == "folders" and gt_dir.is_dir()):
                    raise DatasetError(
                        f"Defective test image {path} has no mask: expected "
                        f"{folder / 'ground_truth' / defect / (path.stem + MASK_SUFFIX + '.png')}. "
                        "Every image in test/<defect>/ needs <category>/ground_truth/<defect>/"
                        "<name>_mask.png; restore it from the original archive or add it "
                        "(or, to evaluate with image labels only, remove that ground_truth/<defect>/ "
                        "folder)."
                    )
                all_masks = False
            else:
                check_mask_matches(path, mask_path)
            records.append(Record(path, 1, defect, mask_path))
    if not records:
        raise DatasetError(
            f"No test images under {test}: expected test/good/*.png and test/<defect>/*.png. "
            "Re-extract the dataset or add the test images."
        )
    return records, all_masks


class MVTecDataset(FileDataset):
    """One MVTec AD category (or any dataset in the MVTec AD folder layout).

    Items follow the package contract: ``{"image": (3, S, S) float in [0, 1],
    "mask": (1, S, S) float {0, 1}, "label": int (1 = defective), "defect": str
    ("good" or the defect folder's name), "path": str}``. Images are resized
    bilinearly with antialiasing, masks with nearest neighbour (kept binary);
    grayscale images become RGB.

    Args:
        root: folder holding the category folders; None reads ``$MVTEC_ROOT``, else the
            embedded copy of the ``bottle`` category (``paths.embedded_mvtec_root()``).
        category: category folder name (e.g. ``"bottle"``; any name present in ``root``).
        split: ``"train"`` (``train/good``, all label 0) or ``"test"`` (``test/*``).
        image_size: side S of the returned square images and masks.
        require_masks: raise when a defective test image has no mask (default). With
            False such images are kept, and ``has_masks`` is False if any mask is missing.
            With ``"folders"`` a defect without a ``ground_truth/<defect>/`` folder is
            image-level, a mask missing from a folder that exists is an error.
        cache: keep decoded images in memory after the first read.

    Raises:
        DatasetError: missing root, unknown category, empty ``train/good``, defective image
            without a mask, mask/image size mismatch, or an unreadable image (at read time).
    """

    def __init__(
        self,
        root: str | os.PathLike | None,
        category: str,
        split: str = "train",
        image_size: int = 256,
        require_masks: bool | str = True,
        cache: bool = True,
    ) -> None:
        if split not in ("train", "test"):
            raise DatasetError(f"split must be 'train' or 'test', got {split!r}.")
        self.root = resolve_mvtec_root(root)
        self.category = category
        self.split = split
        folder = category_dir(self.root, category)
        if split == "train":
            records, has_masks = train_records(folder), True
        else:
            records, has_masks = test_records(folder, require_masks)
        super().__init__(records, image_size, has_masks, cache)

    def __repr__(self) -> str:
        return (
            f"MVTecDataset(root={str(self.root)!r}, category={self.category!r}, "
            f"split={self.split!r}, image_size={self.image_size}, n={len(self)})"
        )
