"""Helpers the tests share: a writer of CIFAR files, a per-category metrics table, a map
scale, timm's full classifier with the package's backbone weights loaded, and the warnings
in a notebook's stderr other than the self-check's.

None of them is used by the package: :func:`save_cifar_batch` writes test files in the
format the CIFAR loaders (:mod:`adtr_core.data.cifar`) read; :func:`build_classifier`
checks that weights are genuine.
"""

from __future__ import annotations

import os
import struct
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from torch import nn

from adtr_core.data.errors import DatasetError
from adtr_core.method.metrics import METRIC_KEYS
from adtr_core.method.weights import BackboneWeightsError, resolve_weights, seeded_create


# ------------------------------------------------------------- CIFAR files in the original format
def _py2_pickle(obj: object, out: bytearray) -> None:
    """Append ``obj`` in Python 2 cPickle protocol 2 form (how the CIFAR files are written)."""
    if obj is None:
        out += b"N"
    elif isinstance(obj, bool):
        out += b"\x88" if obj else b"\x89"
    elif isinstance(obj, int):
        if 0 <= obj < 256:
            out += b"K" + bytes([obj])
        elif 0 <= obj < 65536:
            out += b"M" + struct.pack("<H", obj)
        else:
            out += b"J" + struct.pack("<i", obj)
    elif isinstance(obj, bytes):  # a Python 2 str
        out += (
            b"U" + bytes([len(obj)]) if len(obj) < 256 else b"T" + struct.pack("<I", len(obj))
        ) + obj
    elif isinstance(obj, tuple):
        out += b"("
        for item in obj:
            _py2_pickle(item, out)
        out += b"t"
    elif isinstance(obj, list):
        out += b"]"
        if obj:
            out += b"("
            for item in obj:
                _py2_pickle(item, out)
            out += b"e"
    elif isinstance(obj, dict):
        out += b"}"
        if obj:
            out += b"("
            for key, value in obj.items():
                _py2_pickle(key, out)
                _py2_pickle(value, out)
            out += b"u"
    elif isinstance(obj, np.ndarray):
        arr = np.ascontiguousarray(obj)
        out += b"cnumpy.core.multiarray\n_reconstruct\n(cnumpy\nndarray\n"
        _py2_pickle((0,), out)
        _py2_pickle(b"b", out)
        out += b"tR"  # _reconstruct(ndarray, (0,), 'b')
        dtype = bytearray(b"cnumpy\ndtype\n")
        _py2_pickle((arr.dtype.str[1:].encode(), 0, 1), dtype)
        dtype += b"R"
        _py2_pickle((3, arr.dtype.str[:1].encode(), None, None, None, -1, -1, 0), dtype)
        dtype += b"b"
        out += b"(K\x01"  # state tuple: (version 1, shape, dtype, is_fortran, raw bytes)
        _py2_pickle(tuple(int(s) for s in arr.shape), out)
        out += dtype
        _py2_pickle(False, out)
        _py2_pickle(arr.tobytes(), out)
        out += b"tb"  # BUILD
    else:
        raise TypeError(f"cannot write {type(obj).__name__} in the CIFAR pickle format")


def save_cifar_batch(
    path: str | os.PathLike,
    images: np.ndarray,
    labels: np.ndarray | list[int],
    label_key: bytes = b"labels",
    extra: dict[bytes, object] | None = None,
) -> Path:
    """Write images in the official CIFAR python format (a Python 2 protocol-2 pickle).

    Args:
        path: file to write (e.g. ``.../cifar-10-batches-py/data_batch_1``).
        images: uint8 (N, 32, 32, 3).
        labels: int (N,); stored as a list under ``label_key``.
        label_key: ``b"labels"`` (CIFAR-10) or ``b"fine_labels"`` (CIFAR-100).
        extra: more entries (e.g. ``{b"coarse_labels": [...]}``).
    """
    images = np.asarray(images, dtype=np.uint8)
    if images.ndim != 4 or images.shape[1:] != (32, 32, 3):
        raise DatasetError(f"CIFAR images must be uint8 (N, 32, 32, 3), got {images.shape}.")
    data = images.transpose(0, 3, 1, 2).reshape(len(images), 3072)  # (N, 3072) R, G, B planes
    batch: dict[bytes, object] = {
        b"batch_label": b"written by adtr",
        label_key: [int(v) for v in np.asarray(labels).reshape(-1)],
        b"data": data,
        b"filenames": [f"img_{i:05d}.png".encode() for i in range(len(images))],
    }
    batch.update(extra or {})
    out = bytearray(b"\x80\x02")
    _py2_pickle(batch, out)
    out += b"."
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(out))
    return path


# ----------------------------------------------------------------- tables and maps


def metrics_with_mean_row(rows: Mapping[str, Mapping[str, float]]) -> pd.DataFrame:
    """Per-category metrics with a NaN-aware "mean" row appended.

    Args:
        rows: ``{category: {metric: value}}``, e.g. the outputs of ``compute_metrics``.

    Returns:
        A DataFrame indexed by category (index name "category") with one column per metric and
        a last row "mean" (the mean over categories, ignoring NaN).
    """
    if "mean" in rows:
        raise ValueError('"mean" is reserved for the summary row; rename that category')
    df = pd.DataFrame.from_dict({k: dict(v) for k, v in rows.items()}, orient="index")
    if df.empty:
        df = pd.DataFrame(columns=list(METRIC_KEYS))
    df = df.astype(float)
    df.loc["mean"] = df.mean(axis=0, skipna=True)
    df.index.name = "category"
    return df


def map_scale(result, quantile: float = 0.999) -> float:
    """A colour-scale upper limit for one run: a high quantile of all its score-map values."""
    if result.score_maps is None:
        raise ValueError(f"run {result.out_dir} has no score maps")
    return float(np.quantile(np.asarray(result.score_maps, dtype=np.float32), quantile))


def build_classifier(name: str, weights: str = "auto") -> nn.Module:
    """timm's full ImageNet classifier for ``name`` with ``weights`` loaded, in eval mode.

    Used to check that weights are genuine (e.g. a cat photograph gets a cat class). The
    classifier expects inputs normalised with :func:`adtr_core.method.backbone.normalisation`.
    """
    state, _ = resolve_weights(name, weights)
    model = seeded_create(name)
    if state is not None:
        missing, _ = model.load_state_dict(state, strict=False)
        if missing:  # only the head can be missing here (checked): keep it random, say so
            head = model.pretrained_cfg.get("classifier")
            if any(not k.startswith(f"{head}.") for k in missing):
                raise BackboneWeightsError(f"weights for {name!r} lack {missing[:5]}")
            warnings.warn(
                f"weights {weights!r} for {name!r} have no ImageNet classifier head "
                f"({missing}): the head is random",
                stacklevel=2,
            )
    return model.eval()


# ------------------------------------------------------------------- warnings in notebook outputs
def unexpected_warnings(stderr: str) -> list[str]:
    """The lines of ``stderr`` that mention a warning, without the self-check's.

    The self-check's warning (a smoke run has not learned its images) is meant for the
    reader; a warning of any other kind in an executed notebook is a defect. Python prints a
    warning as its line and then the source line it points at: both of the self-check's go.
    """
    lines = stderr.splitlines()
    kept = [
        line
        for i, line in enumerate(lines)
        if "SelfCheckWarning" not in line and not (i and "SelfCheckWarning" in lines[i - 1])
    ]
    return [line for line in kept if "Warning" in line]
