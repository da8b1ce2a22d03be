"""Every path the package uses, in one place.

Nothing here depends on the current directory: notebooks, the CLI and the tests
all resolve paths through these functions. Each location can be moved with an
environment variable.

| what | default | variable |
|---|---|---|
| repository root | the folder above ``adtr_core`` | ``ADTR_ROOT`` |
| figures and tables | ``<root>/figures`` | ``ADTR_FIGURES`` |
| caches (demo data, backbone features) | ``<root>/.cache/adtr`` | ``ADTR_CACHE`` |
| run results | ``<root>/runs`` | ``ADTR_RUNS`` |
| outputs of notebooks run by hand | ``<root>/scratch`` | ``ADTR_SCRATCH`` |
| MVTec AD root | the embedded copy, ``<root>/data/mvtec_ad`` (``bottle``, and the ``screw`` split) | ``MVTEC_ROOT`` |
| CIFAR root (holds ``cifar-10-batches-py/``) | none | ``CIFAR_ROOT`` |
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def _env_path(var: str, default: Path) -> Path:
    value = os.environ.get(var)
    return Path(value).expanduser().resolve() if value else default


def repo_root() -> Path:
    """The repository (or install) root: the folder holding ``adtr_core``."""
    return _env_path("ADTR_ROOT", PACKAGE_DIR.parent)


def figures_dir() -> Path:
    """Where notebooks write figures (PNG, PDF), tables (CSV, Markdown) and the manifest."""
    return _env_path("ADTR_FIGURES", repo_root() / "figures")


def notebooks_dir() -> Path:
    return repo_root() / "notebooks"


def cache_dir() -> Path:
    """Root of all caches: the built demo textures and cached backbone features."""
    return _env_path("ADTR_CACHE", repo_root() / ".cache" / "adtr")


def runs_dir() -> Path:
    """Default parent of results folders written by ``adtr train`` and the sweeps."""
    return _env_path("ADTR_RUNS", repo_root() / "runs")


def scratch_dir() -> Path:
    """Where notebooks run by hand (no ``out_dir``) write their figures and tables."""
    return _env_path("ADTR_SCRATCH", repo_root() / "scratch")


def demo_root() -> Path:
    """Where the demo textures (synthetic defects, in the MVTec AD layout) are built."""
    return cache_dir() / "demo"


def feature_cache_dir() -> Path:
    return cache_dir() / "features"


def mvtec_root() -> Path | None:
    """The MVTec AD root from ``MVTEC_ROOT``, or None when it is not configured."""
    value = os.environ.get("MVTEC_ROOT")
    return Path(value).expanduser() if value else None


def embedded_mvtec_root() -> Path:
    """The MVTec AD copy that ships with the repository: ``bottle``, and a ``screw`` split.

    It is MVTec's data under CC BY-NC-SA 4.0 (``data/mvtec_ad/license.txt``), resized to
    256x256, and not part of the installed Python package.
    """
    return repo_root() / "data" / "mvtec_ad"


def default_mvtec_root() -> Path | None:
    """``MVTEC_ROOT`` when set, else the embedded copy when present, else None."""
    configured = mvtec_root()
    if configured is not None:
        return configured
    embedded = embedded_mvtec_root()
    return embedded if (embedded / "bottle" / "train").is_dir() else None


def cifar_root() -> Path | None:
    """The CIFAR root from ``CIFAR_ROOT``, or None when it is not configured."""
    value = os.environ.get("CIFAR_ROOT")
    return Path(value).expanduser() if value else None
