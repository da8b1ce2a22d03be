"""A results folder belongs to one configuration, and to one writing process at a time.

:func:`claim` is what :func:`adtr_core.runs.experiment.run_experiment` does before any work:

- it takes the folder's lock file (``.adtr.lock``, an ``flock`` that the kernel releases
  when its process dies, so the lock of a killed run is taken over by the next one); a
  second process writing to the same folder stops with a line naming the first;
- it compares the configuration stored in the folder (``config.json``, or the
  ``checkpoint.pt`` of an unfinished run) with the one given. Equal configurations
  resume or load; a different one is refused in one line naming the fields that differ,
  unless ``overwrite`` is set, which moves the old run aside to
  ``<folder>.replaced-<time>/`` (never deletes it);
- it refuses a folder of other files (no ``config.json`` or checkpoint: a user's folder
  given as ``--out``), with or without ``overwrite``.

The same lock guards the output folders of ``adtr predict`` and ``adtr export``.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

LOCK_NAME = ".adtr.lock"
IGNORED_FIELDS = frozenset({"device"})
"""Fields that may change between a run and its resumption: they do not change the result."""


class FolderBusyError(RuntimeError):
    """Another live process is writing to the results folder."""


class ConfigMismatchError(ValueError):
    """The results folder holds a run of another configuration."""


@contextmanager
def folder_lock(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold ``folder/.adtr.lock`` for the duration of the block.

    Raises:
        FolderBusyError: a live process holds the lock (the line names it).
    """
    path = Path(folder) / LOCK_NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 500).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise FolderBusyError(
                f"results folder {folder} is in use by {holder}; wait for it to finish, "
                "or choose another --out"
            ) from None
        try:  # the previous holder may have removed the file between our open and our lock
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    os.write(fd, f"process {os.getpid()} on {socket.gethostname()} (since {started})".encode())
    try:
        yield path
    finally:
        try:
            path.unlink()
        finally:
            os.close(fd)


def stored_config(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The configuration a results folder holds, or None for a new (or empty) folder.

    ``config.json`` is written together with the finished results; an unfinished run's
    configuration is read from its checkpoint.
    """
    from adtr_core.io import read_json
    from adtr_core.runs.checkpoints import RUN_FIX, load_checkpoint

    folder = Path(folder)
    if (folder / "config.json").is_file():
        return read_json(folder / "config.json")
    if (folder / "checkpoint.pt").is_file():
        extra = load_checkpoint(folder / "checkpoint.pt", fix=RUN_FIX).get("extra") or {}
        return extra.get("config")
    return None


def config_differences(
    stored: Mapping[str, Any], current: Mapping[str, Any], defaults: Mapping[str, Any]
) -> list[str]:
    """``"name: stored -> current"`` for every field that differs (``IGNORED_FIELDS`` aside).

    A field missing from ``stored`` (written before the field existed) counts as its default.
    """
    out = []
    for name in sorted(set(stored) | set(current)):
        if name in IGNORED_FIELDS:
            continue
        old, new = stored.get(name, defaults.get(name)), current.get(name, defaults.get(name))
        if old != new:
            out.append(f"{name}: {old!r} -> {new!r}")
    return out


def set_aside(folder: str | os.PathLike) -> Path:
    """Move everything in ``folder`` but its lock to ``<folder>.replaced-<time>/``."""
    folder = Path(folder)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = folder.with_name(f"{folder.name}.replaced-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = folder.with_name(f"{folder.name}.replaced-{stamp}-{n}")
    target.mkdir(parents=True)
    for entry in folder.iterdir():
        if entry.name != LOCK_NAME:
            entry.rename(target / entry.name)
    return target


def is_run_folder(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a run: its ``config.json`` or a checkpoint (a stale one too)."""
    folder = Path(folder)
    return (folder / "config.json").is_file() or any(folder.glob("checkpoint*.pt"))


def claim(
    folder: str | os.PathLike,
    config: Mapping[str, Any],
    compare: Callable[[Mapping[str, Any], Mapping[str, Any]], list[str]],
    overwrite: bool = False,
) -> Path | None:
    """Make sure ``folder`` (already locked) may hold a run of ``config``.

    Temporary files that a killed process left mid-write are removed first. A folder of
    other files (a user's folder given as ``--out``) is refused, ``overwrite`` or not.

    Args:
        compare: ``compare(stored, config)``: the differences that make them two runs
            (:func:`adtr_core.runs.config.config_changes`; :func:`config_differences`
            compares plain values).

    Returns:
        Where the previous run was moved (``overwrite``), or None.

    Raises:
        ConfigMismatchError: the folder holds another configuration and ``overwrite`` is off.
    """
    folder = Path(folder)
    for leftover in folder.glob(".*.tmp*"):  # atomic writes of a killed process
        if leftover.is_file():
            leftover.unlink()
    holds_files = any(entry.name != LOCK_NAME for entry in folder.iterdir())
    visible = any(not entry.name.startswith(".") for entry in folder.iterdir())
    if visible and not is_run_folder(folder):
        raise ConfigMismatchError(
            f"{folder} holds files that are not a run (no config.json or checkpoint.pt): "
            "choose a new or empty --out (a run never writes into a folder of other files)"
        )
    if overwrite:
        return set_aside(folder) if holds_files else None
    stored = stored_config(folder)
    if stored is None:
        return None
    diffs = compare(stored, config)
    if diffs:
        raise ConfigMismatchError(
            f"results folder {folder} holds a run of another configuration "
            f"({'; '.join(diffs)}): choose another --out, or pass --overwrite to move that run "
            f"aside to {folder.name}.replaced-<time>/ and start afresh"
        )
    return None
