"""Atomic writes for everything the package saves: checkpoints, tables, JSON, figures.

A file is written to a temporary name in the same folder and renamed into place,
so an interrupted run never leaves a half-written result behind. A write that fails
(a full disk, a read-only or unusable folder) raises :class:`OutputError`, one line
naming the path and the cause, and leaves nothing behind.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

LOW_SPACE_BYTES = 64 * 2**20  # below this much free space a failed write is a full disk


class OutputError(RuntimeError):
    """An output location cannot be used or written; the message names the path and cause."""


def _reason(err: BaseException, folder: Path) -> str:
    """The cause of a failed write in a few words ("no space left on device", ...)."""
    if isinstance(err, OSError) and err.errno is not None:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            return "no space left on device"
        return (err.strerror or str(err)).lower()
    # torch.save reports a failed write as "[enforce fail at inline_container.cc] unexpected
    # pos ..."; the usual cause is a full disk.
    try:
        if shutil.disk_usage(folder).free < LOW_SPACE_BYTES:
            return "no space left on device"
    except OSError:
        pass
    return f"the write failed ({str(err).splitlines()[0][:120]})"


def _is_write_failure(err: BaseException) -> bool:
    if isinstance(err, OSError):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and (
        "inline_container" in text or "unexpected pos" in text or "PytorchStreamWriter" in text
    )


def _check_parents(path: Path, what: str) -> None:
    """Raise OutputError when the nearest existing parent of ``path`` is a file."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputError(f"{what}: {parent} is a file, not a folder")
            break


def ensure_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    """Create ``path`` (and its parents) and check that files can be written in it.

    Raises:
        OutputError: ``path`` or a parent is a file, or the folder cannot be created or
            written (permissions, a read-only or pseudo file system such as /proc or /sys).
    """
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise OutputError(f"cannot use {path} as the {what}: it is an existing file")
    _check_parents(path, f"cannot use {path} as the {what}")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write-test.")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise OutputError(f"cannot use {path} as the {what}: {_reason(err, path)}") from err
    return path


def _file_mode() -> int:
    """The mode ``open()`` gives a new file: 0666 less the umask (0644 under the usual 022)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _file_mode()


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    The temporary file keeps the target's suffix, so writers that pick a format
    from the suffix (matplotlib, pandas) behave as for the final name.

    Raises:
        OutputError: the folder cannot be created or the write failed (e.g. a full disk);
            the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    tmp_path: Path | None = None
    _check_parents(path, f"cannot write {path}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}"
        )
        os.close(fd)
        tmp_path = Path(tmp)
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, _FILE_MODE)  # mkstemp makes 0600; results are ordinary files
        os.replace(tmp_path, path)
    except (OSError, RuntimeError) as err:
        if isinstance(err, OutputError) or not _is_write_failure(err):
            raise
        raise OutputError(f"cannot write {path}: {_reason(err, path.parent)}") from err
    finally:
        if tmp_path is not None and tmp_path.exists():
            tmp_path.unlink()


def remove_stale_temporaries(folder: str | os.PathLike, older_than_s: float = 0.0) -> int:
    """Remove the temporary files of :func:`atomic_path` that a killed process left.

    Args:
        folder: where to look (not recursively).
        older_than_s: only files not modified for this long; 0 where the caller holds the
            folder's lock (no live writer), an hour where another process may be writing.

    Returns:
        How many files were removed.
    """
    import time

    now, removed = time.time(), 0
    for leftover in Path(folder).glob(".*.tmp*"):
        try:
            if leftover.is_file() and now - leftover.stat().st_mtime >= older_than_s:
                leftover.unlink()
                removed += 1
        except OSError:
            continue  # another process removed or renamed it meanwhile
    return removed


def atomic_write(path: str | os.PathLike, writer: Callable[[Path], Any]) -> Path:
    """Call ``writer(tmp_path)`` and move the result onto ``path`` atomically."""
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """The JSON in ``path``.

    Raises:
        ValueError: the file is not valid JSON (one line naming it, where, and the fix).
    """
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        where = f"line {err.lineno}: {err.msg}" if isinstance(err, json.JSONDecodeError) else err
        raise ValueError(
            f"{path} is damaged ({where}): restore it, or move its folder aside and run again"
        ) from None
