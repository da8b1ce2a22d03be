"""``adtr data check``: inspect a dataset root in the MVTec AD layout and list its problems.

Unlike the datasets, which stop at the first problem, :func:`check_root` walks every
category and reports every problem it finds: missing or empty ``train/good``, missing
``test/``, defective images without masks, masks without images, masks whose size
differs from their image's, unreadable or corrupt images, non-binary masks. A defect
folder without its ``ground_truth/<defect>/`` folder is no problem: the category is then
image-level (image AUROC; pixel AUROC and AU-PRO absent), which the report says.
:func:`check_folders` does the same for own images in plain folders (``--data folder``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from adtr_core.data.base import IMAGE_EXTENSIONS, READ_ERRORS, find_mask, list_images
from adtr_core.data.mvtec import GOOD, MASK_SUFFIX, MVTEC_CATEGORIES, MVTEC_URL, list_categories


@dataclass
class CategoryReport:
    """Counts for one category folder."""

    name: str
    n_train: int = 0
    test_counts: dict[str, int] = field(default_factory=dict)  # defect -> test images
    mask_counts: dict[str, int] = field(default_factory=dict)  # defect -> images with a mask
    image_sizes: set[tuple[int, int]] = field(default_factory=set)  # distinct (width, height)
    no_mask_folder: list[str] = field(default_factory=list)  # defects without ground_truth/

    @property
    def n_test(self) -> int:
        return sum(self.test_counts.values())

    @property
    def supports(self) -> str:
        """Which metrics a run on this category reports."""
        if self.no_mask_folder:
            return (
                "image AUROC only (no ground_truth/ folder for "
                f"{', '.join(self.no_mask_folder)}): pixel AUROC and AU-PRO absent"
            )
        return "image AUROC, pixel AUROC, AU-PRO"


@dataclass
class CheckReport:
    """What :func:`check_root` found: per-category counts and every problem."""

    root: Path
    categories: dict[str, CategoryReport] = field(default_factory=dict)
    folders: dict[str, Path] = field(default_factory=dict)  # --data folder: role -> folder
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _readable(path: Path, report: CheckReport, deep: bool) -> tuple[int, int] | None:
    """(width, height) of an image that decodes, or None after recording the problem."""
    try:
        with Image.open(path) as im:
            size = im.size
            if deep:
                im.load()
            else:
                im.verify()  # checks the file structure (PNG chunk CRCs) without decoding
        return size
    except READ_ERRORS as exc:
        report.problems.append(f"unreadable image {path}: {type(exc).__name__}: {exc}")
        return None


def _check_category(root: Path, name: str, report: CheckReport, deep: bool) -> None:
    folder = root / name
    cat = report.categories.setdefault(name, CategoryReport(name))
    good = folder / "train" / GOOD
    train = list_images(good)
    cat.n_train = len(train)
    if not good.is_dir():
        report.problems.append(f"{name}: missing {good} (normal training images)")
    elif not train:
        report.problems.append(f"{name}: {good} holds no images")
    for path in train:
        size = _readable(path, report, deep)
        if size is not None:
            cat.image_sizes.add(size)

    test = folder / "test"
    if not test.is_dir():
        report.problems.append(f"{name}: missing {test} (test/good and test/<defect> images)")
        return
    defect_dirs = sorted(p for p in test.iterdir() if p.is_dir() and not p.name.startswith("."))
    for defect_dir in defect_dirs:
        defect = defect_dir.name
        images = list_images(defect_dir)
        cat.test_counts[defect] = len(images)
        if not images:
            report.warnings.append(f"{name}: {defect_dir} holds no images")
        gt = folder / "ground_truth" / defect
        if defect != GOOD and images and not gt.is_dir():
            cat.no_mask_folder.append(defect)  # image-level: not a problem
            cat.mask_counts[defect] = 0
            for path in images:
                size = _readable(path, report, deep)
                if size is not None:
                    cat.image_sizes.add(size)
            continue
        n_masks = 0
        for path in images:
            size = _readable(path, report, deep)
            if size is not None:
                cat.image_sizes.add(size)
            if defect == GOOD:
                continue
            mask = find_mask(gt, path.stem, MASK_SUFFIX)
            if mask is None:
                report.problems.append(
                    f"{name}: defective image {path} has no mask "
                    f"(expected {gt / (path.stem + MASK_SUFFIX + '.png')})"
                )
                continue
            n_masks += 1
            mask_size = _readable(mask, report, True)
            if mask_size is None:
                continue
            if size is not None and mask_size != size:
                report.problems.append(
                    f"{name}: mask {mask} is {mask_size[0]}x{mask_size[1]} but its image {path} is "
                    f"{size[0]}x{size[1]}"
                )
            with Image.open(mask) as m:
                values = np.unique(np.asarray(m.convert("L")))
            if len(values) > 2:
                report.warnings.append(
                    f"{name}: mask {mask} holds {len(values)} values ({values.min()}.."
                    f"{values.max()}), not two: every non-zero pixel counts as defect"
                )
            if values.max(initial=0) == 0:
                report.warnings.append(f"{name}: mask {mask} is empty (all zero)")
        if defect != GOOD:
            cat.mask_counts[defect] = n_masks
    if not any(cat.test_counts.values()):
        report.problems.append(f"{name}: {test} holds no images")

    gt_root = folder / "ground_truth"
    if gt_root.is_dir():  # masks whose image is missing
        for gt in sorted(p for p in gt_root.iterdir() if p.is_dir()):
            stems = {p.stem for p in list_images(test / gt.name)}
            for mask in list_images(gt):
                stem = (
                    mask.stem[: -len(MASK_SUFFIX)] if mask.stem.endswith(MASK_SUFFIX) else mask.stem
                )
                if stem not in stems:
                    report.warnings.append(f"{name}: mask {mask} has no image in {test / gt.name}")


def check_root(
    root: str | os.PathLike, category: str | None = None, deep: bool = False
) -> CheckReport:
    """Check a dataset root in the MVTec AD layout.

    Args:
        root: the folder holding the category folders.
        category: check only this category (default: every category found).
        deep: decode every image fully (slower; by default files are structure-checked,
            which catches truncation and CRC errors in PNGs).

    Returns:
        a :class:`CheckReport`; ``report.ok`` is False when a problem was found.
    """
    root = Path(root).expanduser()
    report = CheckReport(root=root)
    if not root.is_dir():
        report.problems.append(
            f"root {root} does not exist or is not a folder. MVTec AD comes from {MVTEC_URL}; "
            "extract it and pass --data-root DIR or set MVTEC_ROOT=DIR"
        )
        return report
    found = list_categories(root)
    if category is not None:
        if category not in found:
            report.problems.append(
                f"unknown category {category!r}: categories found under {root}: {found or 'none'}; "
                f"the official MVTec AD categories are: {', '.join(MVTEC_CATEGORIES)}"
            )
            return report
        found = [category]
    if not found:
        report.problems.append(
            f"no category folders under {root} (expected <category>/train/good/ and "
            f"<category>/test/; image types: {', '.join(IMAGE_EXTENSIONS)})"
        )
    for name in found:
        _check_category(root, name, report, deep)
    return report


FOLDER_CATEGORY = "folder"  # the category name of --data folder (as resolve_category has it)


def check_folders(
    normal: str | os.PathLike,
    anomalous: str | os.PathLike | None = None,
    masks: str | os.PathLike | None = None,
    test_normal: str | os.PathLike | None = None,
    deep: bool = False,
) -> CheckReport:
    """Check own images in plain folders, as ``--data folder`` (FolderDataset) reads them.

    Args:
        normal: normal training images.
        anomalous: anomalous test images (flat, or one sub-folder per defect type).
        masks: their masks, matched by stem (optional: without, image AUROC only).
        test_normal: normal test images.
        deep: decode every image fully (as in :func:`check_root`).

    Returns:
        a :class:`CheckReport` with one category, ``"folder"``.
    """
    from adtr_core.data.base import DatasetError
    from adtr_core.data.folder import FolderDataset, _anomalous_images

    given = {"normal": normal, "anomalous": anomalous, "masks": masks, "test normal": test_normal}
    folders = {role: Path(p).expanduser() for role, p in given.items() if p is not None}
    report = CheckReport(root=folders["normal"], folders=folders)
    for role, folder in folders.items():
        if not folder.is_dir():
            report.problems.append(f"{role} folder {folder} does not exist or is not a folder")
    if report.problems:
        return report
    cat = report.categories.setdefault(FOLDER_CATEGORY, CategoryReport(FOLDER_CATEGORY))
    train = list_images(folders["normal"])
    cat.n_train = len(train)
    if not train:
        report.problems.append(f"normal folder {folders['normal']} holds no images")
    tests = [(p, GOOD) for p in list_images(folders["test normal"])] if test_normal else []
    if anomalous is not None:
        tests += _anomalous_images(folders["anomalous"])
    for path in train:
        size = _readable(path, report, deep)
        if size is not None:
            cat.image_sizes.add(size)
    for path, defect in tests:
        cat.test_counts[defect] = cat.test_counts.get(defect, 0) + 1
        size = _readable(path, report, deep)
        if size is not None:
            cat.image_sizes.add(size)
        if defect == GOOD:
            continue
        cat.mask_counts.setdefault(defect, 0)
        if masks is None:
            if defect not in cat.no_mask_folder:
                cat.no_mask_folder.append(defect)
            continue
        try:
            mask = FolderDataset._mask_for(folders["masks"], folders["anomalous"], path, "_mask")
        except DatasetError as err:
            report.problems.append(str(err).split(" Add the mask")[0])
            continue
        cat.mask_counts[defect] += 1
        mask_size = _readable(mask, report, True)
        if size is not None and mask_size is not None and mask_size != size:
            report.problems.append(
                f"mask {mask} is {mask_size[0]}x{mask_size[1]} but its image {path} is "
                f"{size[0]}x{size[1]}"
            )
    if not any(d == GOOD for _, d in tests):
        report.problems.append(
            "no normal test images: pass --test-normal DIR (AUROC needs normal and anomalous "
            "test images)"
        )
    if not any(d != GOOD for _, d in tests):
        report.problems.append(
            "no anomalous test images: pass --anomalous DIR (AUROC needs normal and anomalous "
            "test images)"
        )
    return report


def format_report(report: CheckReport) -> str:
    """A plain-text summary: one line per category and defect, then problems and warnings."""
    if report.folders:
        lines = [f"{role} folder: {folder}" for role, folder in report.folders.items()]
    else:
        lines = [f"dataset root: {report.root}"]
    for cat in report.categories.values():
        sizes = ", ".join(f"{w}x{h}" for w, h in sorted(cat.image_sizes)) or "-"
        lines.append(f"{cat.name}: {cat.n_train} train, {cat.n_test} test; image sizes {sizes}")
        for defect, n in cat.test_counts.items():
            masks = "" if defect == GOOD else f", {cat.mask_counts.get(defect, 0)} masks"
            lines.append(f"  test/{defect}: {n} images{masks}")
        lines.append(f"  supports: {cat.supports}")
    if report.problems:
        lines.append(f"{len(report.problems)} problem(s):")
        lines += [f"  - {p}" for p in report.problems]
    if report.warnings:
        lines.append(f"{len(report.warnings)} warning(s):")
        lines += [f"  - {w}" for w in report.warnings]
    lines.append("OK" if report.ok else "NOT OK: fix the problems above")
    return "\n".join(lines)
