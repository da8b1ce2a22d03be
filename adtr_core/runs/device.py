"""Devices and seeds: which torch device a run uses, and how its random generators are seeded.

:func:`resolve_device` turns ``"auto"`` / ``"cpu"`` / ``"cuda[:N]"`` into a torch device,
failing with advice when CUDA is asked for and missing; :func:`seed_everything` seeds
python, numpy and torch; :func:`epoch_seed` is the per-epoch seed the trainer reseeds
with, so an epoch's random state depends only on the run's seed and the epoch number.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` into a torch device.

    ``"auto"`` picks the first GPU when CUDA is available, else the CPU.

    Raises:
        RuntimeError: CUDA was requested but is not available, or the GPU index is out of range.
        ValueError: the name is not a device.
    """
    if isinstance(name, torch.device):
        name = str(name)
    name = str(name).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"unknown device {name!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'") from err
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {name!r} requested but no GPU: use --device cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise RuntimeError(
                f"device {name!r} requested but only {count} GPU(s) are visible: "
                f"use cuda:0..cuda:{count - 1} or --device cpu"
            )
    elif device.type != "cpu":
        raise ValueError(f"unsupported device {name!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'")
    return device


def seed_everything(seed: int) -> None:
    """Seed python's ``random``, numpy and torch (all devices)."""
    seed = int(seed) % 2**32
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch`` (0-based) of a run seeded with ``seed``: a 32-bit integer."""
    return int(np.random.SeedSequence([int(seed) % 2**32, int(epoch)]).generate_state(1)[0])


def seed_worker(worker_id: int) -> None:
    # DataLoader workers get a torch seed from the loader's generator; derive the others from it.
    s = torch.initial_seed() % 2**32
    random.seed(s)
    np.random.seed(s)


def move_to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor in ``batch`` (recursively through dicts, lists, tuples) to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return type(batch)({k: move_to_device(v, device) for k, v in batch.items()})
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(move_to_device(v, device) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to_device(v, device) for v in batch)
    return batch
