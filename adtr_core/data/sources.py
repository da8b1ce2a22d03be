"""Data sources: which data set a name or a config means, its categories, and its splits.

The one place that turns what a user gives (``data="auto"``, a source and a root, an
experiment config's data fields) into concrete data sets of :func:`adtr_core.data.open_dataset`:

* :func:`resolve_data_source` / :func:`resolve_data_sources`: ``"auto"`` to MVTec AD (from
  ``MVTEC_ROOT``, else the embedded bottle category), the demo textures, CIFAR-10 or the
  digits, with one sentence saying what was chosen;
* :func:`list_categories`, :func:`table_categories`, :func:`data_kind`: the categories of a
  source, those a table over every category runs, and its kind;
* :func:`resolve_category`, :func:`data_root`, :func:`open_split`: the category, root and
  train / test data set of a config (any object with the fields ``data``, ``data_root``,
  ``category``, ``image_size`` and the :data:`FOLDER_FIELDS`, such as
  :class:`adtr_core.runs.config.ExperimentConfig`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adtr_core import paths
from adtr_core.data import open_dataset
from adtr_core.data.demo import DEMO_CATEGORIES
from adtr_core.data.development import DEVELOPMENT_CATEGORIES, REAL_DEVELOPMENT
from adtr_core.data.mvtec import MVTEC_CATEGORIES

DATA_SOURCES = ("auto", "demo", "dev", "mvtec", "folder", "cifar10", "cifar100", "digits")
ONE_CLASS_SOURCES = ("cifar10", "cifar100", "digits")
FOLDER_FIELDS = ("anomalous_dir", "mask_dir", "test_normal_dir")
"""Fields of ``data="folder"`` (``data_root`` is the normal training images' folder)."""


EMBEDDED_NOTE = (
    "data: the embedded MVTec AD bottle category (real images; set MVTEC_ROOT for all 15)"
)
DEMO_NOTE = "data: the demo textures (synthetic defects on real texture photographs)"
DEV_NOTE = (
    "data: the development categories (the embedded bottle moved at random, and with 48 "
    "training images; the embedded screw split)"
)


def resolve_data_source(source: str, kind: str = "anomaly") -> tuple[str, str | None, str]:
    """Turn ``"auto"`` into a concrete data source, saying what was chosen and why.

    Args:
        source: ``"auto"`` or a concrete source (``mvtec``, ``demo``, ``cifar10``, ``digits``...).
        kind: ``"anomaly"`` (MVTec AD from ``MVTEC_ROOT``, else the embedded bottle category,
            else the demo textures) or ``"one_class"`` (CIFAR-10, else the digits).

    Returns:
        ``(source, root, note)``: the source, its root (None for embedded data and for
        roots that come from the environment) and one sentence for captions and logs.
    """
    if source != "auto":
        root = {"cifar10": paths.cifar_root()}.get(source)
        note = {"demo": DEMO_NOTE, "dev": DEV_NOTE}.get(source, f"data: {source}")
        if source == "mvtec":
            note = (
                f"data: MVTec AD at {paths.mvtec_root()}" if paths.mvtec_root() else EMBEDDED_NOTE
            )
        return source, (str(root) if root else None), note
    if kind == "anomaly":
        if paths.mvtec_root() is not None:
            return "mvtec", None, f"data: MVTec AD at {paths.mvtec_root()}"
        if paths.default_mvtec_root() is not None:
            return "mvtec", None, EMBEDDED_NOTE
        return "demo", None, DEMO_NOTE + " (the embedded MVTec AD copy is missing)"
    if kind == "one_class":
        if paths.cifar_root() is not None:
            return "cifar10", str(paths.cifar_root()), f"data: CIFAR-10 at {paths.cifar_root()}"
        return (
            "digits",
            None,
            ("data: scikit-learn's digits (CIFAR-10 is not configured: set CIFAR_ROOT)"),
        )
    raise ValueError(f"unknown data kind {kind!r}: choose anomaly or one_class")


def resolve_data_sources(source: str) -> list[tuple[str, str | None, str]]:
    """The anomaly-detection data sources a table over "every category" covers.

    ``"auto"`` without ``MVTEC_ROOT`` is the embedded real bottle category *and* the demo
    textures (the unaligned contrast); with ``MVTEC_ROOT`` it is MVTec AD alone. Any other
    source is itself. Items are those of :func:`resolve_data_source`.
    """
    first = resolve_data_source(source, "anomaly")
    if source == "auto" and paths.mvtec_root() is None and first[0] == "mvtec":
        return [first, resolve_data_source("demo")]
    return [first]


# Row labels read "<category> (<kind>)": a kind holds no parentheses of its own.
DATA_KINDS = {
    "mvtec": "real, MVTec AD",
    "demo": "synthetic defects, demo texture",
    "dev": "real, moved, subsampled or unaligned",
    "folder": "own images",
}


def data_kind(source: str) -> str:
    """What kind of data a source is, for tables: real MVTec AD, synthetic defects, ..."""
    return DATA_KINDS.get(source, source)


def table_categories(source: str, root: str | None = None) -> list[str]:
    """The categories a table over "every category" of ``source`` runs by default.

    Those of :func:`list_categories`, less the embedded copy's development split ``screw``
    (image labels only): it is studied in notebook 09 (``--data dev --category screw``) and
    reached by name, but the figures of ``make figures`` leave it out.
    """
    found = list_categories(source, root)
    if source == "mvtec" and root is None and paths.mvtec_root() is None:
        found = [c for c in found if c not in REAL_DEVELOPMENT]
    return found


def list_categories(source: str, root: str | None = None) -> list[str]:
    """The categories (or normal classes) of a data source, in a stable order.

    Folders of categories come in MVTec AD's official order, then the others alphabetically;
    the first is the default category of the command line and of every notebook.
    """
    if source == "demo":
        return list(DEMO_CATEGORIES)
    if source == "dev":
        return list(DEVELOPMENT_CATEGORIES)
    if source in ONE_CLASS_SOURCES:
        return [str(c) for c in range(10)]
    if root is None and source == "mvtec":
        root = paths.default_mvtec_root()
    if root is None:
        raise ValueError(f"data source {source!r} needs a root folder (--data-root)")
    present = sorted(p.name for p in Path(root).iterdir() if (p / "train").is_dir())
    official = [c for c in MVTEC_CATEGORIES if c in present]
    return official + [c for c in present if c not in official]


def resolve_category(cfg) -> str:
    """The category to run: the configured one, or the first of :func:`list_categories`."""
    if cfg.category is not None:
        return str(cfg.category)
    if cfg.data in ONE_CLASS_SOURCES:
        return "0"
    if cfg.data == "demo":
        return DEMO_CATEGORIES[0]
    if cfg.data == "dev":
        return DEVELOPMENT_CATEGORIES[0]
    if cfg.data == "folder":
        return "folder"
    root = data_root(cfg)
    if root is None and cfg.data == "mvtec":
        root = paths.default_mvtec_root()
    found = list_categories(cfg.data, str(root)) if root else []  # the notebooks' order too
    if not found:
        raise ValueError(f"no category folders with a train/ folder under {root}: pass --category")
    return found[0]


def data_root(cfg) -> str | None:
    """The folder ``cfg``'s data is read from: ``data_root``, else MVTEC_ROOT / CIFAR_ROOT.

    None: the source's embedded or built-in data (the bottle category, the demo textures).
    """
    if cfg.data_root is not None:
        return cfg.data_root
    if cfg.data == "mvtec" and paths.mvtec_root() is not None:
        return str(paths.mvtec_root())
    if cfg.data in ("cifar10", "cifar100") and paths.cifar_root() is not None:
        return str(paths.cifar_root())
    return None


def open_split(cfg, split: str):
    """The train or test dataset of ``cfg`` (items: image, mask, label, defect, path).

    A defect folder of an MVTec-layout category without its ``ground_truth/<defect>/``
    folder makes the test set image-level (``has_masks`` False: pixel metrics absent).
    """
    kw: dict[str, Any] = {}
    if cfg.data == "folder":
        kw = {name: getattr(cfg, name) for name in FOLDER_FIELDS}
    elif cfg.data in ("mvtec", "demo", "dev") and split == "test":
        kw = {"require_masks": "folders"}
    return open_dataset(
        cfg.data,
        root=data_root(cfg),
        category=resolve_category(cfg),
        split=split,
        image_size=cfg.image_size,
        **kw,
    )
