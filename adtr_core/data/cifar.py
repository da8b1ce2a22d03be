"""CIFAR-10 / CIFAR-100 from the official "python version" files, read safely.

Files read (https://www.cs.toronto.edu/~kriz/cifar.html, extracted as distributed)::

    <root>/cifar-10-batches-py/data_batch_1 .. data_batch_5, test_batch
        dict {b"data": uint8 (N, 3072) (R, G, B planes of 32x32), b"labels": [int]}
    <root>/cifar-100-python/train, test
        dict {b"data": uint8 (N, 3072), b"fine_labels": [int], b"coarse_labels": [int]}

The files are pickles, and unpickling runs code named in the file. They are read with
:class:`RestrictedUnpickler`, which resolves only the three globals a genuine file needs
to rebuild its numpy arrays and refuses everything else, so a tampered file cannot run
code. Protocols (paper Sec. 4): CIFAR-10 one-class via :class:`OneClassDataset`;
CIFAR-100 training images as outlier-exposure anomalies for ADTR+ (``load_cifar100``).
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np

from adtr_core import paths
from adtr_core.data.errors import DatasetError
from adtr_core.data.oneclass import ArrayDataset, OneClassDataset

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR_URL",
    "ArrayDataset",
    "OneClassDataset",
    "RestrictedUnpickler",
    "load_cifar10",
    "load_cifar100",
    "restricted_load",
]

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
CIFAR10_DIR = "cifar-10-batches-py"
CIFAR100_DIR = "cifar-100-python"
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip

_reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]  # numpy's array rebuild function
_ALLOWED_GLOBALS = {
    # The real files were written by Python 2 numpy ("numpy.core"); numpy 2 writes "numpy._core".
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only numpy's array rebuild globals.

    CIFAR batches are dicts of bytes, lists of ints and numpy arrays; rebuilding the
    arrays needs ``numpy.core.multiarray._reconstruct``, ``numpy.ndarray`` and
    ``numpy.dtype`` and nothing else. Any other global (``os.system``, ``builtins.eval``,
    ...) raises :class:`pickle.UnpicklingError`.
    """

    def find_class(self, module: str, name: str):  # noqa: D102
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"forbidden global {module}.{name} (only numpy's array rebuild is allowed)"
            ) from None


def restricted_load(path: str | os.PathLike) -> object:
    """Unpickle ``path`` with :class:`RestrictedUnpickler` (Python 2 str -> bytes).

    Raises:
        DatasetError: the file is missing, corrupt, or asks for a forbidden global.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"Cannot read {path}: {exc}.") from exc
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except pickle.UnpicklingError as exc:
        if "forbidden global" in str(exc):
            raise DatasetError(
                f"Refusing to load {path}: it asks for a {exc}. A genuine CIFAR file holds only bytes, lists "
                f"and numpy arrays, so this one is not a CIFAR batch (it may be malicious). "
                f"Replace it with the official files from {CIFAR_URL}."
            ) from exc
        raise DatasetError(
            f"{path} is not a readable CIFAR batch ({exc}); re-download it."
        ) from exc
    except Exception as exc:  # truncated / garbage input raises many types
        raise DatasetError(
            f"{path} is not a readable CIFAR batch ({type(exc).__name__}: {exc}); "
            f"re-download it from {CIFAR_URL}."
        ) from exc


def _read_batch(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 32, 32, 3), targets int64 (N,)) of one batch file."""
    batch = restricted_load(path)
    if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise DatasetError(
            f"{path} is not a CIFAR batch: expected a dict with b'data' and {label_key!r}, "
            f"got {keys}. Re-download it from {CIFAR_URL}."
        )
    data = np.asarray(batch[b"data"])
    targets = np.asarray(batch[label_key], dtype=np.int64)
    if (
        data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != 3072
        or len(targets) != len(data)
    ):
        raise DatasetError(
            f"{path}: b'data' must be uint8 (N, 3072) with N labels, got {data.dtype} {data.shape} "
            f"and {len(targets)} labels. Re-download it from {CIFAR_URL}."
        )
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # (N, 32, 32, 3)
    return np.ascontiguousarray(images), targets


def _find_dir(root: str | os.PathLike | None, folder: str, first_file: str, name: str) -> Path:
    if root is None:
        root = paths.cifar_root()
    hint = (
        f"{name} comes from {CIFAR_URL} (the 'python version'); extract it and pass "
        f"--data-root DIR or set CIFAR_ROOT=DIR, DIR being the folder that holds {folder}/."
    )
    if root is None:
        raise DatasetError(f"No CIFAR root given. {hint}")
    root = Path(root).expanduser()
    for candidate in (root / folder, root):
        if (candidate / first_file).is_file():
            return candidate
    raise DatasetError(f"{name} not found: expected {root / folder / first_file}. {hint}")


def load_cifar10(
    root: str | os.PathLike | None = None, train: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 training (50,000) or test (10,000) images.

    Args:
        root: folder holding ``cifar-10-batches-py/`` (or that folder itself); None reads
            ``$CIFAR_ROOT``.
        train: the five training batches, else ``test_batch``.

    Returns:
        images uint8 (N, 32, 32, 3) and targets int64 (N,) in 0..9.
    """
    folder = _find_dir(root, CIFAR10_DIR, "test_batch", "CIFAR-10")
    names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise DatasetError(
            f"CIFAR-10 is incomplete: {', '.join(str(folder / n) for n in missing)} missing. "
            f"Re-extract the python version from {CIFAR_URL}."
        )
    parts = [_read_batch(folder / n, b"labels") for n in names]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def load_cifar100(
    root: str | os.PathLike | None = None, train: bool = True, coarse: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-100 training (50,000) or test (10,000) images.

    The training images are the outlier-exposure anomalies of ADTR+ on CIFAR-10.

    Args:
        root: folder holding ``cifar-100-python/`` (or that folder itself); None reads
            ``$CIFAR_ROOT``.
        train: the ``train`` file, else ``test``.
        coarse: return the 20 super-class labels instead of the 100 fine labels.

    Returns:
        images uint8 (N, 32, 32, 3) and targets int64 (N,).
    """
    name = "train" if train else "test"
    folder = _find_dir(root, CIFAR100_DIR, name, "CIFAR-100")
    return _read_batch(folder / name, b"coarse_labels" if coarse else b"fine_labels")
