"""The demo textures: synthetic defects on real texture photographs, in the MVTec AD layout.

The real default data is the embedded MVTec AD ``bottle`` category (aligned objects,
``paths.embedded_mvtec_root()``). These textures are the *unaligned* contrast: random
crops, where a learned query cannot tie a token to a position. scikit-image ships three
real 512x512 grayscale texture photographs (``skimage.data.brick``, ``grass``, ``gravel``; CC0
licensed). :func:`build_demo` turns each into one MVTec-style category:

* ``train/good``: crops from the bottom ``train_fraction`` of the photograph (random
  positions, flips, small rotations), resampled to ``image_size``;
* ``test/good``: crops from the disjoint top part, made the same way;
* ``test/<defect>`` + ``ground_truth/<defect>/<name>_mask.png``: further top-part crops
  with one synthetic defect each, of varied size, shape and strength. Strengths are set
  relative to the standard deviation of the crop (busy grass gets stronger defects than
  flat brick), and most defects change the texture rather than the image's overall
  brightness (what a per-pixel comparison with the mean image would see):

  - ``scratch``: a random polyline (3-8 px wide at 256 px) that wipes out the texture
    under it and is 1-2 standard deviations darker or lighter;
  - ``stain``: a smear, an irregular blob with soft edges where the texture is blurred and
    washed out to 0-40 % of its contrast, its brightness within half a standard deviation;
  - ``hole``: a dark irregular region with a faint trace of texture and a shaded rim;
  - ``foreign``: an irregular patch of another texture photograph, brightness- and
    contrast-matched half of the time.

Bottom for training and top for testing rather than the reverse: then normal test crops are
harder to tell from training crops by their nearest-neighbour feature distance (AUROC of
held-out training crops against test crops, Lite0 features: brick / grass / gravel 0.58 /
0.80 / 0.68, against 0.72 / 0.89 / 0.79 the other way round), so less of a test image's
score comes from where in the photograph it was cut.

The result is read by :class:`~adtr_core.data.mvtec.MVTecDataset` like MVTec AD. All
randomness comes from ``seed``: the same seed and parameters give byte-identical files.
:func:`ensure_demo` builds it once into ``adtr_core.paths.demo_root()`` (atomically) and
reuses it afterwards.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from adtr_core import paths
from adtr_core.data.errors import DatasetError

DEMO_CATEGORIES = ("brick", "grass", "gravel")
DEFECT_TYPES = ("scratch", "stain", "hole", "foreign")
MARKER = ".adtr_demo.json"
FORMAT_VERSION = 2


@dataclass(frozen=True)
class DemoConfig:
    """Parameters of the demo data (all part of the reuse marker)."""

    image_size: int = 256  # side of the saved PNGs and masks
    crop_size: int = 160  # side of the square taken from the 512x512 photograph, then resampled
    n_train: int = 60  # training images per category
    n_test_good: int = 20  # normal test images per category
    n_per_defect: int = 8  # defective test images per defect type and category
    categories: tuple[str, ...] = DEMO_CATEGORIES
    defects: tuple[str, ...] = DEFECT_TYPES
    train_fraction: float = 0.6  # bottom share of the photograph's rows for training crops
    max_rotation: float = 5.0  # degrees; crops are rotated uniformly in +-max_rotation
    flips: bool = True  # random horizontal and vertical flips

    def __post_init__(self) -> None:
        unknown_c = set(self.categories) - set(DEMO_CATEGORIES)
        unknown_d = set(self.defects) - set(DEFECT_TYPES)
        if not self.categories or unknown_c:
            raise DatasetError(
                f"demo categories must be among {DEMO_CATEGORIES}, got {self.categories}."
            )
        if unknown_d:
            raise DatasetError(f"demo defects must be among {DEFECT_TYPES}, got {self.defects}.")
        if (
            min(self.n_train, self.image_size, self.crop_size) < 1
            or min(self.n_test_good, self.n_per_defect) < 0
        ):
            raise DatasetError("demo sizes and counts must be positive.")
        for name, rows in (("train", self.train_rows), ("test", self.test_rows)):
            if rows[1] - rows[0] < self.window_size:
                raise DatasetError(
                    f"The {name} region (rows {rows[0]}..{rows[1]}) is smaller than a crop window "
                    f"({self.window_size} px); lower crop_size/max_rotation or change train_fraction."
                )

    @property
    def window_size(self) -> int:
        """Side of the window cut before rotation, so the rotated crop stays inside it."""
        t = math.radians(self.max_rotation)
        return int(math.ceil(self.crop_size * (math.cos(t) + math.sin(t)))) + 2

    @property
    def train_rows(self) -> tuple[int, int]:
        return 512 - int(round(512 * self.train_fraction)), 512

    @property
    def test_rows(self) -> tuple[int, int]:
        return 0, 512 - int(round(512 * self.train_fraction))


def photograph(name: str) -> np.ndarray:
    """A scikit-image texture photograph as float32 (512, 512) in [0, 255]."""
    import skimage.data

    return np.asarray(getattr(skimage.data, name)(), dtype=np.float32)


# ------------------------------------------------------------------------------ crops
def _crop(
    photo: np.ndarray, rows: tuple[int, int], cfg: DemoConfig, rng: np.random.Generator
) -> np.ndarray:
    """A random, rotated, flipped crop from ``photo[rows[0]:rows[1]]``, float32 (S, S)."""
    w = cfg.window_size
    y0 = int(rng.integers(rows[0], rows[1] - w + 1))
    x0 = int(rng.integers(0, photo.shape[1] - w + 1))
    angle = float(rng.uniform(-cfg.max_rotation, cfg.max_rotation))
    window = Image.fromarray(photo[y0 : y0 + w, x0 : x0 + w], mode="F")
    window = window.rotate(angle, resample=Image.BILINEAR)  # about the centre, same size
    off = (w - cfg.crop_size) // 2
    crop = window.crop((off, off, off + cfg.crop_size, off + cfg.crop_size))
    crop = crop.resize((cfg.image_size, cfg.image_size), Image.BILINEAR)
    out = np.asarray(crop, dtype=np.float32)
    if cfg.flips and rng.random() < 0.5:
        out = out[:, ::-1]
    if cfg.flips and rng.random() < 0.5:
        out = out[::-1, :]
    return np.ascontiguousarray(out)


# ---------------------------------------------------------------------------- defects
def _blob(size: int, radius: float, rng: np.random.Generator) -> np.ndarray:
    """An irregular star-shaped region (bool (S, S)) of mean radius ``radius``."""
    cy, cx = rng.uniform(radius, size - radius, 2)
    theta = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    r = np.ones_like(theta)
    for k in range(2, 6):  # a few random harmonics make the outline irregular
        r += rng.uniform(0.0, 0.25 / (k - 1)) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    r *= radius
    stretch = rng.uniform(0.6, 1.0)  # random aspect, random orientation
    phi = rng.uniform(0, np.pi)
    dx, dy = r * np.cos(theta), r * np.sin(theta) * stretch
    xs = cx + dx * np.cos(phi) - dy * np.sin(phi)
    ys = cy + dx * np.sin(phi) + dy * np.cos(phi)
    canvas = Image.new("L", (size, size), 0)
    ImageDraw.Draw(canvas).polygon(list(zip(xs.tolist(), ys.tolist())), fill=255)
    return np.asarray(canvas) > 0


def _scratch(
    img: np.ndarray, rng: np.random.Generator, scale: float, **_
) -> tuple[np.ndarray, np.ndarray]:
    size = img.shape[0]
    n_points = int(rng.integers(3, 7))
    heading = rng.uniform(0, 2 * np.pi)
    pts = [rng.uniform(0.2 * size, 0.8 * size, 2)]
    for _ in range(n_points - 1):
        heading += rng.normal(0, 0.6)
        step = rng.uniform(15, 45) * scale
        pts.append(
            np.clip(pts[-1] + step * np.array([np.cos(heading), np.sin(heading)]), 2, size - 3)
        )
    width = max(1, int(round(rng.uniform(3, 8) * scale)))
    canvas = Image.new("L", (size, size), 0)
    ImageDraw.Draw(canvas).line(
        [tuple(p.tolist()) for p in pts], fill=255, width=width, joint="curve"
    )
    mask = np.asarray(canvas) > 0
    soft = ndimage.gaussian_filter(mask.astype(np.float32), 0.6)
    soft = np.maximum(soft / max(soft.max(), 1e-6), mask * 0.8)
    # The groove wipes out the texture under it and is darker or lighter than the surface,
    # by 1 to 2 standard deviations of the texture: subtle on busy textures, clear on flat.
    groove = ndimage.gaussian_filter(img, 3.0 * scale)
    groove += rng.choice([-1.0, 1.0]) * rng.uniform(1.0, 2.0) * img.std()
    return img * (1 - soft) + groove * soft, mask


def _stain(
    img: np.ndarray, rng: np.random.Generator, scale: float, **_
) -> tuple[np.ndarray, np.ndarray]:
    region = _blob(img.shape[0], rng.uniform(18, 45) * scale, rng)
    alpha = ndimage.gaussian_filter(region.astype(np.float32), rng.uniform(2.0, 4.0) * scale)
    alpha /= max(alpha.max(), 1e-6)
    mean = float(img[region].mean())
    # A smear: the texture under it is blurred and washed out (its contrast falls to 0-40 %)
    # and its brightness shifts by at most half a standard deviation, so the brightness and
    # contrast of the whole image hardly change.
    contrast = rng.uniform(0.0, 0.4)
    shift = rng.uniform(-0.5, 0.5) * img.std()
    smeared = ndimage.gaussian_filter(img, rng.uniform(1.5, 4.0) * scale)
    target = mean + (smeared - mean) * contrast + shift
    return img * (1 - alpha) + target * alpha, alpha >= 0.5


def _hole(
    img: np.ndarray, rng: np.random.Generator, scale: float, **_
) -> tuple[np.ndarray, np.ndarray]:
    region = _blob(img.shape[0], rng.uniform(8, 30) * scale, rng)
    inside = ndimage.gaussian_filter(region.astype(np.float32), 0.8)
    rim = np.clip(ndimage.gaussian_filter(region.astype(np.float32), 3.0 * scale) - inside, 0, 1)
    dark = rng.uniform(10, 80)  # from black to a faint darkening
    depth = dark + rng.uniform(0.1, 0.4) * (img - img.mean()) + rng.normal(0, 3, img.shape)
    out = img * (1 - inside) + depth * inside
    out *= 1 - 0.5 * rim  # shaded rim around the hole
    return out, region


def _foreign(
    img: np.ndarray,
    rng: np.random.Generator,
    scale: float,
    others: list[np.ndarray],
    cfg: DemoConfig,
) -> tuple[np.ndarray, np.ndarray]:
    size = img.shape[0]
    region = _blob(size, rng.uniform(15, 45) * scale, rng)
    other = others[int(rng.integers(len(others)))]
    src = Image.fromarray(other, mode="F")
    zoom = rng.uniform(0.7, 1.4) * cfg.image_size / cfg.crop_size
    side = int(math.ceil(size / zoom))
    y0, x0 = (int(v) for v in rng.integers(0, other.shape[0] - side + 1, 2))
    patch = np.asarray(
        src.crop((x0, y0, x0 + side, y0 + side)).resize((size, size), Image.BILINEAR),
        dtype=np.float32,
    )
    if rng.random() < 0.5:  # match brightness and contrast: the subtle kind
        patch = (patch - patch[region].mean()) / max(patch[region].std(), 1e-3)
        patch = patch * img[region].std() + img[region].mean()
    alpha = np.maximum(ndimage.gaussian_filter(region.astype(np.float32), 0.7), region)
    return img * (1 - alpha) + patch * alpha, region


_DEFECTS = {"scratch": _scratch, "stain": _stain, "hole": _hole, "foreign": _foreign}


def _save_png(path: Path, array: np.ndarray) -> None:
    Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8), mode="L").save(
        path, format="PNG"
    )


# ----------------------------------------------------------------------------- build
def _build_category(out: Path, category: str, index: int, seed: int, cfg: DemoConfig) -> None:
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), index]))
    photo = photograph(category)
    others = [photograph(c) for c in DEMO_CATEGORIES if c != category]
    scale = cfg.image_size / 256.0
    cat = out / category
    for sub in ["train/good", "test/good"] + [f"test/{d}" for d in cfg.defects]:
        (cat / sub).mkdir(parents=True, exist_ok=True)
    for i in range(cfg.n_train):
        _save_png(cat / "train" / "good" / f"{i:03d}.png", _crop(photo, cfg.train_rows, cfg, rng))
    for i in range(cfg.n_test_good):
        _save_png(cat / "test" / "good" / f"{i:03d}.png", _crop(photo, cfg.test_rows, cfg, rng))
    for defect in cfg.defects:
        (cat / "ground_truth" / defect).mkdir(parents=True, exist_ok=True)
        for i in range(cfg.n_per_defect):
            image = _crop(photo, cfg.test_rows, cfg, rng)
            image, mask = _DEFECTS[defect](image, rng, scale=scale, others=others, cfg=cfg)
            _save_png(cat / "test" / defect / f"{i:03d}.png", image)
            _save_png(cat / "ground_truth" / defect / f"{i:03d}_mask.png", mask * 255.0)


def _marker(seed: int, cfg: DemoConfig) -> dict:
    params = asdict(cfg)
    params.update(categories=list(cfg.categories), defects=list(cfg.defects))
    return {"format": FORMAT_VERSION, "seed": int(seed), "config": params}


def _read_marker(root: Path) -> dict | None:
    try:
        return json.loads((root / MARKER).read_text())
    except (OSError, ValueError):
        return None


def _make_config(config: DemoConfig | None, overrides: dict) -> DemoConfig:
    config = config or DemoConfig()
    known = {f.name for f in fields(DemoConfig)}
    unknown = set(overrides) - known
    if unknown:
        raise DatasetError(f"Unknown demo parameter(s) {sorted(unknown)}; known: {sorted(known)}.")
    values = asdict(config) | overrides
    values["categories"] = tuple(values["categories"])
    values["defects"] = tuple(values["defects"])
    return DemoConfig(**values)


def build_demo(
    out_dir: str | os.PathLike, seed: int = 0, config: DemoConfig | None = None, **overrides
) -> Path:
    """Write the demo categories in the MVTec AD layout into ``out_dir``.

    The data is built in a temporary sibling folder and moved into place at the end,
    so ``out_dir`` never holds a half-built dataset. An existing ``out_dir`` is replaced
    only when it is empty or a previous demo build.

    Args:
        out_dir: root to create (holds ``brick/``, ``grass/``, ``gravel/``).
        seed: seed of every random choice; same seed and parameters, same bytes.
        config: parameters (default :class:`DemoConfig`); ``**overrides`` replace fields.

    Returns:
        ``out_dir``.
    """
    return _build(Path(out_dir), seed, _make_config(config, overrides), keep_complete=False)


def _build(out: Path, seed: int, cfg: DemoConfig, keep_complete: bool) -> Path:
    """Build into a temporary sibling, then move it onto ``out``.

    With ``keep_complete``, a matching build that appeared meanwhile (another process)
    is kept and the new one discarded.
    """
    out = out.expanduser().resolve()
    if out.exists() and not (out.is_dir() and (not any(out.iterdir()) or _read_marker(out))):
        raise DatasetError(
            f"{out} exists and is not an (empty or earlier) demo folder; choose another --out "
            "folder or remove it first."
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.build-", dir=out.parent))
    try:
        for index, category in enumerate(DEMO_CATEGORIES):
            if category in cfg.categories:
                _build_category(tmp, category, index, seed, cfg)
        (tmp / "README.txt").write_text(
            "Demo anomaly-detection data built by adtr_core.data.demo from scikit-image's texture\n"
            "photographs (brick, grass, gravel; CC0). MVTec AD folder layout; synthetic defects\n"
            f"{', '.join(cfg.defects)} with pixel masks. Rebuild: adtr data demo --out DIR --seed {seed}\n"
        )
        (tmp / MARKER).write_text(json.dumps(_marker(seed, cfg), indent=2, sort_keys=True) + "\n")
        if not (keep_complete and _read_marker(out) == _marker(seed, cfg)):
            _replace_dir(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _replace_dir(src: Path, dst: Path) -> None:
    """Move the finished build ``src`` onto ``dst`` (an absent, empty or old demo folder)."""
    old = None
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        os.replace(dst, old)
    try:
        os.replace(src, dst)
    except OSError:
        if old is not None and not dst.exists():
            os.replace(old, dst)
            old = None
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def is_demo_build(root: str | os.PathLike) -> bool:
    """Whether ``root`` holds a finished demo build of this format (any seed and parameters)."""
    marker = _read_marker(Path(root).expanduser())
    return marker is not None and marker.get("format") == FORMAT_VERSION


def ensure_demo(
    root: str | os.PathLike | None = None,
    seed: int = 0,
    config: DemoConfig | None = None,
    **overrides,
) -> Path:
    """The demo root, built on first use and reused while its parameters match.

    Args:
        root: where the data lives; default ``adtr_core.paths.demo_root()``.
        seed, config, overrides: as in :func:`build_demo`; a build with other parameters
            is rebuilt.

    Returns:
        the root, ready for ``MVTecDataset(root, "brick")``.
    """
    root = Path(root).expanduser() if root is not None else paths.demo_root()
    cfg = _make_config(config, overrides)
    if _read_marker(root) == _marker(seed, cfg):
        return root
    try:
        return _build(root, seed, cfg, keep_complete=True)
    except OSError:
        if _read_marker(root) == _marker(seed, cfg):  # another process won the race
            return root
        raise
