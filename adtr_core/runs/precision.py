"""Numeric precision of a run: float32, or bf16 autocast on the GPU and on CPUs that have it.

``precision`` is one of:

- ``"auto"``: bf16 autocast on CUDA, float32 on the CPU (the package's behaviour before
  this setting existed);
- ``"fp32"``: float32 everywhere;
- ``"bf16"``: bf16 autocast for the backbone, the reconstruction and the training step,
  on CUDA and on CPUs with bf16 instructions (``avx512_bf16`` or AMX). On a CPU without
  them autocast would emulate bf16 and run slower than float32, so the run stays in
  float32 and a warning says so.

Scores are always computed in float32 (``scoring`` casts its inputs), and features are
stored as float32 whatever precision computed them.
"""

from __future__ import annotations

import contextlib
import functools
import warnings

import torch

PRECISIONS = ("auto", "fp32", "bf16")


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether this CPU has bf16 instructions (``avx512_bf16`` or AMX), read from /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def check_precision(precision: str) -> str:
    """``precision`` if it is one of ``PRECISIONS``; ValueError otherwise."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    return precision


def autocast_dtype(precision: str, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype of ``precision`` on ``device`` (None: float32, no autocast).

    Warns when bf16 is asked for on a CPU without bf16 instructions (the run stays float32).
    """
    check_precision(precision)
    kind = torch.device(device).type
    if precision == "fp32":
        return None
    if kind == "cuda":
        return torch.bfloat16
    if precision == "auto":
        return None
    if not cpu_has_bf16():
        warnings.warn(
            "precision bf16 asked for, but this CPU has no bf16 instructions (avx512_bf16 or "
            "AMX): running in float32, which is faster here",
            stacklevel=2,
        )
        return None
    return torch.bfloat16


def precision_name(precision: str, device: torch.device | str) -> str:
    """What a run with ``precision`` on ``device`` computes in: "bf16" or "fp32"."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return "bf16" if autocast_dtype(precision, device) is not None else "fp32"


def autocast(device: torch.device | str, dtype: torch.dtype | None):
    """``torch.autocast`` to ``dtype`` on ``device``'s type, or a no-op when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)
