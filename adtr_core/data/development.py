"""Development categories built from the embedded bottle: unaligned and small, in the MVTec layout.

The embedded MVTec AD ``bottle`` category is centred and aligned, with 209 training images:
the easy case for a reconstruction whose learned queries are tied to positions. Real
categories are often neither. :func:`ensure_development` derives two categories from it that
show those two difficulties, offline and deterministically, so that settings can be studied
on them (by validation data only) and checked against real categories kept elsewhere:

* ``bottle-unaligned``: every training and test image of bottle, and each test mask with
  its image, moved by its own seeded random rigid transform: a rotation by an angle uniform
  in [0, 360) degrees about a centre uniform in the middle half of the image, then a
  translation uniform in +-20 % of the side per axis. Uncovered corners take the colour of
  the image's border (its median). A defective image's transform is drawn again (from the
  same seeded stream) until at least 90 % of its defect stays in view, so every test label
  still holds.
* ``bottle-small``: 48 of bottle's 209 training images (a seeded choice) and the whole test
  set, unchanged.
* ``screw``: the embedded MVTec AD ``screw`` split as it is (320 training images, 20 good and
  60 defective test images, image labels only): a real unaligned object with small defects.

The demo textures (:mod:`adtr_core.data.demo`) are the third kind of development data.
Like the demo, the build goes to a temporary sibling and is moved into place, is reused
while its marker (seed and format) matches, and needs only the embedded categories.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from adtr_core import paths
from adtr_core.data.base import IMAGE_EXTENSIONS
from adtr_core.data.errors import DatasetError

DEVELOPMENT_CATEGORIES = ("bottle-unaligned", "bottle-small", "screw")
REAL_DEVELOPMENT = ("screw",)  # embedded real categories, copied as they are
MARKER = ".adtr_development.json"
FORMAT_VERSION = 1
SMALL_TRAIN = 48  # training images of bottle-small
MAX_SHIFT = 0.2  # translation bound, as a fraction of the side
KEEP_DEFECT = 0.9  # share of a defect's pixels that must stay in view


def development_root() -> Path:
    """Where the development categories are built (under the cache)."""
    return paths.cache_dir() / "development"


def _source(category: str = "bottle") -> Path:
    src = paths.embedded_mvtec_root() / category
    if not (src / "train" / "good").is_dir():
        raise DatasetError(
            f"the development categories are built from the embedded {category} category, "
            f"which is missing ({src}); restore data/mvtec_ad/ from the repository"
        )
    return src


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)


def rigid_transform(
    rng: np.random.Generator, side: int
) -> tuple[float, tuple[float, float], tuple[float, float]]:
    """One random rigid transform: (angle in degrees, rotation centre, translation), in pixels."""
    angle = float(rng.uniform(0.0, 360.0))
    centre = tuple(float(c) for c in rng.uniform(0.25 * side, 0.75 * side, size=2))
    shift = tuple(float(t) for t in rng.uniform(-MAX_SHIFT * side, MAX_SHIFT * side, size=2))
    return angle, centre, shift  # type: ignore[return-value]


def apply_rigid(
    image: Image.Image, transform, fill: tuple[int, ...] | int, resample: int
) -> Image.Image:
    """``image`` rotated about the transform's centre, then translated (PIL's ``rotate``)."""
    angle, centre, shift = transform
    return image.rotate(
        angle, resample=resample, center=centre, translate=shift, fillcolor=fill, expand=False
    )


def _border_colour(image: Image.Image) -> tuple[int, ...]:
    a = np.asarray(image.convert("RGB"))
    border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])  # (4S, 3)
    return tuple(int(v) for v in np.median(border, axis=0))


def _move(
    src: Path, dst: Path, rng: np.random.Generator, mask_src: Path | None, mask_dst: Path | None
) -> None:
    image = Image.open(src).convert("RGB")
    fill = _border_colour(image)
    mask = Image.open(mask_src).convert("L") if mask_src is not None else None
    defect = int((np.asarray(mask) > 0).sum()) if mask is not None else 0
    for _ in range(100):
        transform = rigid_transform(rng, image.width)
        if mask is None or defect == 0:
            break
        moved_mask = apply_rigid(mask, transform, 0, Image.NEAREST)
        if (np.asarray(moved_mask) > 0).sum() >= KEEP_DEFECT * defect:
            break
    else:  # pragma: no cover - 100 draws that all lose the defect do not happen on bottle
        raise DatasetError(f"no transform keeps the defect of {src} in view")
    apply_rigid(image, transform, fill, Image.BILINEAR).save(dst)
    if mask is not None and mask_dst is not None:
        apply_rigid(mask, transform, 0, Image.NEAREST).save(mask_dst)


def _build_unaligned(src: Path, out: Path, seed: int) -> None:
    rng = np.random.default_rng([seed, 1])
    for folder in sorted(p for p in (src / "train").iterdir() if p.is_dir()):
        (out / "train" / folder.name).mkdir(parents=True)
        for path in _images(folder):
            _move(path, out / "train" / folder.name / path.name, rng, None, None)
    for folder in sorted(p for p in (src / "test").iterdir() if p.is_dir()):
        (out / "test" / folder.name).mkdir(parents=True)
        masks = src / "ground_truth" / folder.name
        if masks.is_dir():
            (out / "ground_truth" / folder.name).mkdir(parents=True)
        for path in _images(folder):
            mask = masks / f"{path.stem}_mask.png"
            found = mask if mask.is_file() else None
            target = out / "ground_truth" / folder.name / mask.name if found else None
            _move(path, out / "test" / folder.name / path.name, rng, found, target)


def _build_small(src: Path, out: Path, seed: int) -> None:
    train = _images(src / "train" / "good")
    keep = np.random.default_rng([seed, 2]).choice(len(train), SMALL_TRAIN, replace=False)
    (out / "train" / "good").mkdir(parents=True)
    for i in sorted(keep):
        shutil.copyfile(train[i], out / "train" / "good" / train[i].name)
    shutil.copytree(src / "test", out / "test")
    if (src / "ground_truth").is_dir():
        shutil.copytree(src / "ground_truth", out / "ground_truth")


def _marker(seed: int) -> dict:
    return {"format": FORMAT_VERSION, "seed": int(seed), "categories": list(DEVELOPMENT_CATEGORIES)}


def _read_marker(root: Path) -> dict | None:
    try:
        return json.loads((root / MARKER).read_text())
    except (OSError, ValueError):
        return None


def build_development(out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Write ``bottle-unaligned``, ``bottle-small`` and ``screw`` into ``out_dir`` (MVTec layout).

    Same seed, same bytes. ``out_dir`` is replaced only when absent, empty or an earlier
    build; the build goes to a temporary sibling first.
    """
    out = Path(out_dir).expanduser().resolve()
    if out.exists() and not (out.is_dir() and (not any(out.iterdir()) or _read_marker(out))):
        raise DatasetError(
            f"{out} exists and is not an (empty or earlier) development-data folder; choose "
            "another folder or remove it first"
        )
    src = _source()
    real = {name: _source(name) for name in REAL_DEVELOPMENT}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.build-", dir=out.parent))
    try:
        _build_unaligned(src, tmp / "bottle-unaligned", seed)
        _build_small(src, tmp / "bottle-small", seed)
        for name, folder in real.items():
            shutil.copytree(folder, tmp / name)
        (tmp / "README.txt").write_text(
            "Development categories derived from the embedded MVTec AD bottle category\n"
            "(CC BY-NC-SA 4.0) by adtr_core.data.development: bottle-unaligned (every image and\n"
            "mask moved by a seeded random rigid transform) and bottle-small (48 training images);\n"
            "screw is the embedded MVTec AD screw split, copied as it is (image labels only).\n"
        )
        (tmp / MARKER).write_text(json.dumps(_marker(seed), indent=2, sort_keys=True) + "\n")
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def ensure_development(root: str | os.PathLike | None = None, seed: int = 0) -> Path:
    """The development root, built on first use and reused while its seed and format match."""
    root = Path(root).expanduser() if root is not None else development_root()
    if _read_marker(root) == _marker(seed):
        return root
    try:
        return build_development(root, seed)
    except OSError:
        if _read_marker(root) == _marker(seed):  # another process finished the same build
            return root
        raise
