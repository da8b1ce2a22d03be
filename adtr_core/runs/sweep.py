"""Sweeps: many experiment configs (ablation grids, category lists) run as one resumable batch.

Every training in the notebooks goes through :func:`run_sweep`, so results folders are
shared: a run is identified by its config (``runs/<cfg.run_name()>``), and a finished run
(``metrics.json`` present, ``config.json`` equal to the config) is loaded instead of
trained again; an unfinished one resumes from its checkpoint
(:func:`adtr_core.runs.experiment.run_experiment` does that).

Two executors give identical results:

- ``"local"``: one run after the other in this process.
- ``"ray"``: one Ray task per run (``num_gpus=1`` per task when the cluster has GPUs),
  on an existing cluster (``address`` or ``RAY_ADDRESS``) or on a local Ray instance
  started quietly and offline (no dashboard, no usage statistics).

Both executors read the finished runs back from disk with
:func:`adtr_core.runs.results.load_result`, so a result is the same object whether it was
trained now, trained by a Ray worker or found on disk.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from adtr_core import paths
from adtr_core.io import read_json
from adtr_core.runs.config import ExperimentConfig, config_changes
from adtr_core.runs.experiment import UNTESTED, resolve_config, run_experiment
from adtr_core.runs.results import RunResult, load_result

EXECUTORS = ("local", "ray")
# Environment variables a Ray worker needs to see the same files as the driver.
FORWARDED_ENV = (
    "ADTR_ROOT",
    "ADTR_CACHE",
    "ADTR_RUNS",
    "ADTR_FIGURES",
    "MVTEC_ROOT",
    "CIFAR_ROOT",
    "HF_HUB_OFFLINE",
    "HF_HOME",
    "TORCH_HOME",
    "ADTR_THREADS",  # the thread count of runs that give none (their configs hold it)
)
METRIC_COLUMNS = ("image_auroc", "pixel_auroc", "pixel_aupro")


# --------------------------------------------------------------------------- configs


def grid(base: ExperimentConfig, **axes: Iterable[Any]) -> list[ExperimentConfig]:
    """The cartesian product of field values over a base config.

    Example: ``grid(base, category=["brick", "grass"], model=["adtr", "cnn"])`` gives four
    configs, the last axis varying fastest.

    Args:
        base: the config every run starts from.
        **axes: ``field=values`` for fields of :class:`ExperimentConfig`; each value list
            must be non-empty.

    Returns:
        One config per combination, in ``itertools.product`` order.

    Raises:
        ValueError: an axis is not a config field, or has no values.
    """
    ExperimentConfig.check_fields(axes, what="grid axis (not an ExperimentConfig field)")
    names = list(axes)
    values = []
    for name in names:
        vals = axes[name]
        if isinstance(vals, (str, bytes)) or not isinstance(vals, Iterable):
            raise ValueError(f"grid axis {name!r} needs a list of values, got {vals!r}")
        vals = list(vals)
        if not vals:
            raise ValueError(f"grid axis {name!r} has no values: give at least one")
        values.append(vals)
    return [
        dataclasses.replace(base, **dict(zip(names, combo))) for combo in itertools.product(*values)
    ]


def run_dir(cfg: ExperimentConfig, runs_dir: str | Path | None = None) -> Path:
    """The results folder of ``cfg``: ``<runs_dir>/<run name of the resolved config>``.

    Args:
        cfg: an experiment config (category may be None: it is resolved first).
        runs_dir: parent folder; default :func:`adtr_core.paths.runs_dir`.
    """
    parent = Path(runs_dir) if runs_dir is not None else paths.runs_dir()
    return parent / resolve_config(cfg).run_name()


def is_finished(cfg: ExperimentConfig, out_dir: str | Path) -> bool:
    """Whether ``out_dir`` holds a finished, tested run of exactly ``cfg``.

    Args:
        cfg: a resolved config (see :func:`resolve_config`).
        out_dir: its results folder.

    Raises:
        ValueError: the folder holds a different config (it cannot be reused or resumed).
    """
    out = Path(out_dir)
    config_file = out / "config.json"
    if not config_file.is_file():
        return False
    diff = config_changes(read_json(config_file), cfg.to_dict())
    if diff:
        raise ValueError(
            f"results folder {out} holds another config (differs in: {'; '.join(diff)}); "
            "delete the folder or choose another runs_dir"
        )
    metrics = out / "metrics.json"
    # a validation-only run (adtr_core.runs.selection) is trained but not tested: running it
    # again scores its checkpoint on the test set, without training
    return metrics.is_file() and UNTESTED not in read_json(metrics)


# --------------------------------------------------------------------------- running


def run_sweep(
    configs: Sequence[ExperimentConfig],
    executor: str = "local",
    address: str | None = None,
    runs_dir: str | Path | None = None,
    progress: bool = False,
    num_cpus: int | None = None,
    test: bool = True,
) -> list[RunResult]:
    """Run (or load) every config; finished runs are loaded, unfinished ones resume.

    Args:
        configs: the runs, e.g. from :func:`grid`. Equal configs run once.
        executor: ``"local"`` (sequential, in this process) or ``"ray"`` (one Ray task per run).
        address: Ray only: an existing cluster's address; default ``RAY_ADDRESS`` or, when unset,
            a local Ray instance started here (and kept for later sweeps in this process).
        runs_dir: parent of the results folders; default :func:`adtr_core.paths.runs_dir`.
        progress: print one line per run and show training progress bars.
        num_cpus: Ray only: CPUs of a local Ray instance (default: all of this machine's).
        test: False: validation-only runs (``run_experiment(test=False)``, of
            :mod:`adtr_core.runs.selection`): any finished run is loaded, tested or not; True:
            a validation-only run found on disk is scored on the test set (not retrained).

    Returns:
        One :class:`RunResult` per config, in input order, each read back from its results
        folder. ``result.extra["reused"]`` is True when the run was found finished on disk.

    Raises:
        ValueError: unknown executor, or a results folder holding another config.
        Exception: the first failed run's error (Ray: after every other run has finished).
    """
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}: choose one of {', '.join(EXECUTORS)}")
    parent = Path(runs_dir) if runs_dir is not None else paths.runs_dir()
    # a Ray task has one CPU: one thread unless a count is given (the count names the folder)
    default_threads = 1 if executor == "ray" else None
    resolved = [resolve_config(c, default_threads=default_threads) for c in configs]
    folders = [parent / c.run_name() for c in resolved]

    pending: dict[Path, ExperimentConfig] = {}
    reused: set[Path] = set()
    for cfg, out in zip(resolved, folders):
        if out in pending or out in reused:
            continue
        if is_finished(cfg, out) or (not test and (out / "metrics.json").is_file()):
            reused.add(out)
        else:
            pending[out] = cfg
    if progress:
        print(f"sweep: {len(set(folders))} runs, {len(reused)} finished, {len(pending)} to run")

    if pending:
        if executor == "local":
            _run_local(pending, progress, test)
        else:
            _run_ray(pending, progress, address=address, num_cpus=num_cpus, test=test)

    loaded = {out: load_result(out) for out in set(folders)}
    results = []
    for out in folders:
        result = dataclasses.replace(loaded[out], extra=dict(loaded[out].extra))
        result.extra["reused"] = out in reused
        results.append(result)
    return results


def _run_local(pending: dict[Path, ExperimentConfig], progress: bool, test: bool = True) -> None:
    for i, (out, cfg) in enumerate(pending.items(), 1):
        start = time.perf_counter()
        run_experiment(cfg, out_dir=out, progress=progress, test=test)
        if progress:
            print(f"  [{i}/{len(pending)}] {out.name}: {time.perf_counter() - start:.1f} s")


def _run_task(
    cfg_dict: dict, out_dir: str, progress: bool, env: dict[str, str], test: bool = True
) -> str:
    """Body of one Ray task: the same :func:`run_experiment` call as the local executor."""
    os.environ.update(env)
    cfg = ExperimentConfig.from_dict(cfg_dict)
    run_experiment(cfg, out_dir=out_dir, progress=progress, test=test)
    return out_dir


def check_reachable(address: str, timeout_s: float = 3.0) -> None:
    """Refuse, within seconds, a Ray address nothing listens on (Ray itself retries for long).

    ``"auto"`` and addresses without a port are left to Ray.

    Raises:
        ConnectionError: one line naming the address.
    """
    import socket

    host, sep, port = address.split("://")[-1].rpartition(":")
    if address == "auto" or not sep or not port.isdigit():
        return
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s):
            pass
    except OSError as err:
        reason = (err.strerror or str(err) or type(err).__name__).lower()
        raise ConnectionError(
            f"no Ray cluster at --address {address} ({reason}): start one there (ray start "
            "--head) or leave --address out for a local Ray instance"
        ) from None


def ray_init(address: str | None = None, num_cpus: int | None = None) -> dict[str, Any]:
    """Connect to Ray quietly and offline, unless already connected.

    Args:
        address: an existing cluster (``"auto"``, ``"host:port"``, ``"ray://..."``); default
            ``RAY_ADDRESS``, else a new local instance.
        num_cpus: CPUs of a new local instance (default: all of this machine's).

    Returns:
        The cluster's resources (``{"CPU": ..., "GPU": ...}``).
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DISABLE_IMPORT_WARNING", "1")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    import logging

    import ray

    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS") or None
        kwargs: dict[str, Any] = dict(
            include_dashboard=False,
            logging_level=logging.ERROR,
            log_to_driver=True,
            configure_logging=True,
        )
        if address is None:
            kwargs["num_cpus"] = num_cpus or os.cpu_count() or 1
        else:
            check_reachable(address)
        ray.init(address=address, **kwargs)
    return dict(ray.cluster_resources())


def _run_ray(
    pending: dict[Path, ExperimentConfig],
    progress: bool,
    address: str | None,
    num_cpus: int | None,
    test: bool = True,
) -> None:
    import ray

    resources = ray_init(address, num_cpus)
    num_gpus = 1 if resources.get("GPU", 0) >= 1 else 0
    task = ray.remote(num_cpus=1, num_gpus=num_gpus, max_retries=0)(_run_task)
    env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    refs = {
        task.remote(cfg.to_dict(), str(out), progress, env, test): out
        for out, cfg in pending.items()
    }
    errors: list[tuple[Path, BaseException]] = []
    remaining = list(refs)
    done_count = 0
    while remaining:
        ready, remaining = ray.wait(remaining, num_returns=1)
        out = refs[ready[0]]
        done_count += 1
        try:
            ray.get(ready[0])
            if progress:
                print(f"  [{done_count}/{len(refs)}] {out.name}: done (ray)")
        except Exception as err:  # noqa: BLE001 - reported once every run has ended
            errors.append((out, err))
            print(f"  [{done_count}/{len(refs)}] {out.name}: FAILED: {err}", file=sys.stderr)
    if errors:
        out, err = errors[0]
        raise _original_error(err, out, len(errors))


def _original_error(err: BaseException, out: Path, count: int) -> BaseException:
    cause = getattr(err, "cause", None)
    base = cause if isinstance(cause, BaseException) else err
    note = f"sweep run {out.name} failed ({count} failed run(s) in all)"
    if hasattr(base, "add_note"):
        base.add_note(note)
        return base
    return RuntimeError(f"{note}: {base}")


# --------------------------------------------------------------------------- reporting


def results_table(
    results: Sequence[RunResult], columns: Sequence[str] | None = None
) -> pd.DataFrame:
    """One row per run: the config fields that tell runs apart, the metrics and the run folder.

    Args:
        results: from :func:`run_sweep`.
        columns: config fields to show; default ``category`` plus every field whose value
            differs between the runs.

    Returns:
        Columns: the config fields, ``image_auroc``, ``pixel_auroc``, ``pixel_aupro``,
        ``wall_s``, ``run`` (the results folder's name).
    """
    if not results:
        return pd.DataFrame(columns=["category", *METRIC_COLUMNS, "wall_s", "run"])
    dicts = [r.config.to_dict() for r in results]
    if columns is None:
        varying = [k for k in dicts[0] if k != "category" and len({repr(d[k]) for d in dicts}) > 1]
        columns = ["category", *varying]
    rows = []
    for result, cfg in zip(results, dicts):
        row = {}
        for k in columns:
            value = cfg[k]
            row[k] = tuple(value) if isinstance(value, list) else value
        for k in METRIC_COLUMNS:
            row[k] = result.metrics.get(k, float("nan"))
        row["wall_s"] = result.metrics.get("wall_s", result.wall_s)
        row["run"] = Path(result.out_dir).name
        rows.append(row)
    return pd.DataFrame(rows)
