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
| MVTec AD root | none | ``MVTEC_ROOT`` |
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
    """Root of all caches: the embedded demo data and cached backbone features."""
    return _env_path("ADTR_CACHE", repo_root() / ".cache" / "adtr")


def runs_dir() -> Path:
    """Default parent of results folders written by ``adtr train`` and the sweeps."""
    return _env_path("ADTR_RUNS", repo_root() / "runs")


def scratch_dir() -> Path:
    """Where notebooks run by hand (no ``out_dir``) write their figures and tables."""
    return _env_path("ADTR_SCRATCH", repo_root() / "scratch")


def demo_root() -> Path:
    """Where the embedded default data (textures in the MVTec AD layout) is built."""
    return cache_dir() / "demo"


def feature_cache_dir() -> Path:
    return cache_dir() / "features"


def mvtec_root() -> Path | None:
    """The MVTec AD root from ``MVTEC_ROOT``, or None when it is not configured."""
    value = os.environ.get("MVTEC_ROOT")
    return Path(value).expanduser() if value else None


def cifar_root() -> Path | None:
    """The CIFAR root from ``CIFAR_ROOT``, or None when it is not configured."""
    value = os.environ.get("CIFAR_ROOT")
    return Path(value).expanduser() if value else None


def shared_mvtec_sample() -> Path | None:
    """A small genuine MVTec AD sample used by the tests when it is present."""
    value = os.environ.get("ADTR_MVTEC_SAMPLE")
    candidates = [Path(value)] if value else []
    candidates.append(repo_root().parent / "shared" / "data" / "mvtec_ad_sample")
    for candidate in candidates:
        if (candidate / "bottle" / "train" / "good").is_dir():
            return candidate
    return None
