"""Shared pieces of every dataset: image/mask reading and the item format.

Every dataset in :mod:`adtr_core.data` returns items of one shape (see the package
contract)::

    {"image": (3, S, S) float32 in [0, 1], "mask": (1, S, S) float32 in {0, 1},
     "label": int (1 = anomalous), "defect": str ("good" when normal), "path": str}

and has the attributes ``has_masks``, ``image_size``, ``labels`` (np.ndarray of int64)
and ``defects`` (list[str]).

Reading rules (all file-based datasets): images are decoded with PIL, converted to
RGB (grayscale, palette and RGBA images included), resized to ``image_size`` with a
bilinear filter (PIL's resize is antialiased when it shrinks). Images of more than 8 bits
(16-bit PNG/TIFF, 32-bit integer or float TIFF) are scaled by their range: 16-bit and integer
images by their type's maximum (65535, ...), float images by [0, 1] when their values lie
there, else by their own minimum and maximum. Masks are resized with nearest neighbour and
binarised: any non-zero value is defect (0/1, 0/255 and 0/100 masks alike), with a warning
(once per mask folder) when a mask holds more than two values, as antialiased or JPEG masks do.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from adtr_core.data.errors import DatasetError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
"""File suffixes (case-insensitive) read as images."""

READ_ERRORS = (
    OSError,
    UnidentifiedImageError,
    SyntaxError,
    ValueError,
    Image.DecompressionBombError,
)


def is_image_file(path: Path) -> bool:
    return (
        path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS
    )


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name (hidden files skipped)."""
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if is_image_file(p)), key=lambda p: p.name)


def _unreadable(path: Path, exc: BaseException) -> DatasetError:
    return DatasetError(
        f"Cannot read image {path}: {type(exc).__name__}: {exc}. The file is corrupt, truncated "
        "or not an image; replace it with a valid copy (re-extract the dataset) or delete it."
    )


def image_size_of(path: Path) -> tuple[int, int]:
    """(width, height) from the file header, without decoding the pixels."""
    try:
        with Image.open(path) as im:
            return im.size
    except READ_ERRORS as exc:
        raise _unreadable(path, exc) from exc


def _open_decoded(path: Path) -> Image.Image:
    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except READ_ERRORS as exc:
        raise _unreadable(path, exc) from exc


def read_image(path: Path, image_size: int | None) -> np.ndarray:
    """Decode ``path`` as RGB, resized to ``image_size`` (bilinear, antialiased).

    Returns:
        uint8 array (S, S, 3).
    """
    im = _to_8_bits(_open_decoded(path), path)
    im = im.convert("RGB")
    if image_size is not None and im.size != (image_size, image_size):
        im = im.resize((image_size, image_size), Image.BILINEAR)
    return np.array(im, dtype=np.uint8)  # a writable copy


def _to_8_bits(im: Image.Image, path: Path) -> Image.Image:
    """An image of more than 8 bits per channel as 8-bit grayscale, scaled by its range.

    16-bit and 32-bit integer images are divided by their type's maximum (a dark 16-bit
    image stays dark); float images by 1 when their values lie in [0, 1], else mapped
    from their own minimum and maximum.

    Raises:
        DatasetError: a float image holding NaN or infinite values.
    """
    if im.mode not in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return im
    arr = np.asarray(im, dtype=np.float64)
    if im.mode == "F":
        if not np.isfinite(arr).all():
            raise DatasetError(
                f"Cannot read image {path}: its float pixels hold NaN or infinite values; "
                "save it with finite values (or as an 8- or 16-bit image)."
            )
        low, high = (0.0, 1.0) if arr.min() >= 0 and arr.max() <= 1 else (arr.min(), arr.max())
    elif im.mode.startswith("I;16") or arr.max(initial=0) <= 65535:
        low, high = 0.0, 65535.0
    else:
        low, high = 0.0, float(2**31 - 1)
    scaled = (arr - low) / max(high - low, 1e-12) * 255.0
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))


_WARNED_MASK_FOLDERS: set[Path] = set()


def read_mask(path: Path, image_size: int | None) -> np.ndarray:
    """Decode a ground-truth mask, resized with nearest neighbour; non-zero is defect.

    A mask with more than two values (antialiased edges, JPEG noise) warns once per mask
    folder: every non-zero pixel, however faint, counts as defect.

    Returns:
        bool array (S, S).
    """
    im = _to_8_bits(_open_decoded(path), path).convert("L")
    if image_size is not None and im.size != (image_size, image_size):
        im = im.resize((image_size, image_size), Image.NEAREST)
    arr = np.array(im)
    if path.parent not in _WARNED_MASK_FOLDERS and len(np.unique(arr)) > 2:
        _WARNED_MASK_FOLDERS.add(path.parent)
        warnings.warn(
            f"mask {path} holds more than two values ({arr.min()}..{arr.max()}): every non-zero "
            "pixel counts as defect (save masks with two values, 0 and 255; other masks in "
            "this folder are not reported)",
            stacklevel=2,
        )
    return arr > 0


def to_image_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 (S, S, 3) -> float32 (3, S, S) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)


def to_mask_tensor(mask: np.ndarray | None, image_size: int) -> torch.Tensor:
    """bool (S, S) or None (all normal) -> float32 (1, S, S)."""
    if mask is None:
        return torch.zeros(1, image_size, image_size)
    return torch.from_numpy(np.ascontiguousarray(mask)).float()[None]


@dataclass(frozen=True)
class Record:
    """One file-backed sample: the image, its label/defect and its mask file (if any)."""

    path: Path
    label: int
    defect: str
    mask_path: Path | None = None


class FileDataset(torch.utils.data.Dataset):
    """A list of :class:`Record` read lazily and kept in memory after the first read.

    Args:
        records: the samples, in order.
        image_size: side S of the square images and masks returned.
        has_masks: whether pixel ground truth exists for every anomalous record.
        cache: keep decoded, resized uint8 images and masks in memory (datasets are small).
    """

    def __init__(
        self, records: Sequence[Record], image_size: int, has_masks: bool, cache: bool = True
    ) -> None:
        if int(image_size) <= 0:
            raise DatasetError(f"image_size must be a positive integer, got {image_size!r}.")
        self.records = list(records)
        self.image_size = int(image_size)
        self.has_masks = bool(has_masks)
        self.cache = cache
        self.labels = np.array([r.label for r in self.records], dtype=np.int64)
        self.defects = [r.defect for r in self.records]
        self.paths = [str(r.path) for r in self.records]
        self._images: dict[int, np.ndarray] = {}
        self._masks: dict[int, np.ndarray | None] = {}

    def __len__(self) -> int:
        return len(self.records)

    def load_image(self, index: int) -> np.ndarray:
        """The resized image as uint8 (S, S, 3)."""
        if index in self._images:
            return self._images[index]
        image = read_image(self.records[index].path, self.image_size)
        if self.cache:
            self._images[index] = image
        return image

    def load_mask(self, index: int) -> np.ndarray | None:
        """The resized binary mask as bool (S, S), or None for an all-normal image."""
        if index in self._masks:
            return self._masks[index]
        mask_path = self.records[index].mask_path
        mask = None if mask_path is None else read_mask(mask_path, self.image_size)
        if self.cache:
            self._masks[index] = mask
        return mask

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        index = index % len(self)
        record = self.records[index]
        return {
            "image": to_image_tensor(self.load_image(index)),  # (3, S, S)
            "mask": to_mask_tensor(self.load_mask(index), self.image_size),  # (1, S, S)
            "label": record.label,
            "defect": record.defect,
            "path": str(record.path),
        }


def check_mask_matches(image_path: Path, mask_path: Path) -> None:
    """Raise :class:`DatasetError` when a mask's size differs from its image's."""
    image_wh, mask_wh = image_size_of(image_path), image_size_of(mask_path)
    if image_wh != mask_wh:
        raise DatasetError(
            f"Mask {mask_path} is {mask_wh[0]}x{mask_wh[1]} but its image {image_path} is "
            f"{image_wh[0]}x{image_wh[1]}; a mask must have its image's size. Re-export the mask "
            "at the image's resolution (or replace the pair with the dataset's originals)."
        )


def find_mask(mask_dir: Path, stem: str, suffix: str) -> Path | None:
    """``mask_dir/<stem><suffix>.<ext>`` for any image extension (.png first), or None."""
    for ext in IMAGE_EXTENSIONS:
        for candidate in (
            mask_dir / f"{stem}{suffix}{ext}",
            mask_dir / f"{stem}{suffix}{ext.upper()}",
        ):
            if candidate.is_file():
                return candidate
    return None


def fspath(path: str | os.PathLike) -> Path:
    return Path(path).expanduser()
