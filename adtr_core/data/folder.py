"""One's own images in plain folders: normal, anomalous and (optionally) masks.

Use this when the data is not in the MVTec AD layout (for that layout, use
:class:`~adtr_core.data.mvtec.MVTecDataset` with any category/defect names)::

    normal_dir/          normal training images (split="train")
    test_normal_dir/     normal test images (split="test", label 0)
    anomalous_dir/       anomalous test images (label 1); either flat, or one
                         sub-folder per defect type (the sub-folder name is the defect)
    mask_dir/            pixel masks of the anomalous images, matched by file stem:
                         <stem><mask_suffix>.<ext> (default "_mask"), or <stem>.<ext>;
                         mirrored sub-folders are looked up first
"""

from __future__ import annotations

import os
from pathlib import Path

from adtr_core.data.base import (
    FileDataset,
    Record,
    check_mask_matches,
    find_mask,
    fspath,
    is_image_file,
    list_images,
)
from adtr_core.data.errors import DatasetError

ANOMALOUS = "anomalous"


def _existing_dir(path: str | os.PathLike, what: str) -> Path:
    folder = fspath(path)
    if not folder.is_dir():
        raise DatasetError(f"The {what} folder {folder} does not exist or is not a folder.")
    return folder


def _anomalous_images(folder: Path) -> list[tuple[Path, str]]:
    """(path, defect) for images directly in ``folder`` and in its sub-folders."""
    found = [(p, ANOMALOUS) for p in list_images(folder)]
    for sub in sorted(p for p in folder.rglob("*") if p.is_dir() and not p.name.startswith(".")):
        rel = sub.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts):
            continue
        found += [(p, rel.as_posix()) for p in list_images(sub)]
    return found


class FolderDataset(FileDataset):
    """Normal / anomalous images and optional masks from separate folders.

    Items follow the package contract (see :mod:`adtr_core.data.base`); normal images
    have defect ``"good"``, anomalous ones ``"anomalous"`` (or their sub-folder name).

    Args:
        normal_dir: folder of normal training images (read for ``split="train"``).
        anomalous_dir: folder of anomalous test images (``split="test"``); may hold one
            sub-folder per defect type.
        mask_dir: folder of masks for the anomalous images, matched by stem
            (``<stem><mask_suffix>.<ext>`` or ``<stem>.<ext>``). Without it ``has_masks``
            is False and masks are all zero (image-level evaluation only).
        split: ``"train"`` or ``"test"``.
        test_normal_dir: folder of normal test images (label 0). Keep it disjoint from
            ``normal_dir``: AUROC needs normal *and* anomalous test images.
        image_size: side S of the returned square images and masks.
        mask_suffix: suffix of a mask's stem after the image's stem.
        cache: keep decoded images in memory after the first read.

    Raises:
        DatasetError: a missing or empty folder, an anomalous image without a mask (when
            ``mask_dir`` is given), a mask whose size differs from its image, an
            unreadable image (at read time).
    """

    def __init__(
        self,
        normal_dir: str | os.PathLike | None,
        anomalous_dir: str | os.PathLike | None = None,
        mask_dir: str | os.PathLike | None = None,
        split: str = "train",
        test_normal_dir: str | os.PathLike | None = None,
        image_size: int = 256,
        mask_suffix: str = "_mask",
        cache: bool = True,
    ) -> None:
        if split not in ("train", "test"):
            raise DatasetError(f"split must be 'train' or 'test', got {split!r}.")
        self.split = split
        records: list[Record] = []
        has_masks = True
        if split == "train":
            if normal_dir is None:
                raise DatasetError("FolderDataset(split='train') needs normal_dir (normal images).")
            folder = _existing_dir(normal_dir, "normal images")
            records = [Record(p, 0, "good") for p in list_images(folder)]
            if not records:
                raise DatasetError(
                    f"No training images in {folder}: put the normal images (PNG/JPEG/BMP/TIFF) "
                    "directly in that folder."
                )
        else:
            if anomalous_dir is None and test_normal_dir is None:
                raise DatasetError(
                    "FolderDataset(split='test') needs anomalous_dir and/or test_normal_dir."
                )
            if test_normal_dir is not None:
                folder = _existing_dir(test_normal_dir, "normal test images")
                records += [Record(p, 0, "good") for p in list_images(folder)]
            if anomalous_dir is not None:
                folder = _existing_dir(anomalous_dir, "anomalous images")
                masks = None if mask_dir is None else _existing_dir(mask_dir, "masks")
                has_masks = masks is not None
                for path, defect in _anomalous_images(folder):
                    mask_path = None
                    if masks is not None:
                        mask_path = self._mask_for(masks, folder, path, mask_suffix)
                        check_mask_matches(path, mask_path)
                    records.append(Record(path, 1, defect, mask_path))
            if not records:
                raise DatasetError(
                    f"No test images in {anomalous_dir} / {test_normal_dir}: put the images "
                    "directly in those folders (anomalous ones may sit in one sub-folder per defect)."
                )
        super().__init__(records, image_size, has_masks, cache)

    @staticmethod
    def _mask_for(masks: Path, anomalous: Path, path: Path, suffix: str) -> Path:
        rel_parent = path.parent.relative_to(anomalous)
        for folder in dict.fromkeys((masks / rel_parent, masks)):
            for candidate_suffix in dict.fromkeys((suffix, "")):
                found = find_mask(folder, path.stem, candidate_suffix)
                if found is not None and is_image_file(found) and found != path:
                    return found
        raise DatasetError(
            f"Anomalous image {path} has no mask in {masks}: expected "
            f"{masks / rel_parent / (path.stem + suffix + '.png')} (or {path.stem}.png). Add the "
            "mask, or leave mask_dir out to evaluate with image labels only."
        )
