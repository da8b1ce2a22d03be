"""The environment the notebook kernels run in: the variables they inherit, papermill quiet."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables (inherited by the kernels) and restore them afterwards."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def kernel_variables(figures: Path) -> dict[str, str]:
    """What every kernel inherits: no network, the figures folder, unbuffered output."""
    return {"HF_HUB_OFFLINE": "1", "ADTR_FIGURES": str(figures), "PYTHONUNBUFFERED": "1"}


@contextmanager
def quiet_papermill() -> Iterator[None]:
    """Silence papermill's own parameter guesses ("unknown parameter", "unable to parse"):
    :func:`notebook_parameters` has checked the parameters against the notebook already."""
    import logging

    loggers = [logging.getLogger(n) for n in ("papermill", "papermill.translators")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
