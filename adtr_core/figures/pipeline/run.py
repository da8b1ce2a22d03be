"""Running the notebooks with papermill, ``jobs`` at once, each recorded in the manifest."""

from __future__ import annotations

import datetime as dt
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from adtr_core import paths
from adtr_core.figures.pipeline.environment import environment, kernel_variables, quiet_papermill
from adtr_core.figures.pipeline.lab import strip_local_paths, write_lab_notebook
from adtr_core.figures.pipeline.manifest import MANIFEST_JSON, record_pipeline_run, update_manifest
from adtr_core.figures.pipeline.notebooks import (
    declared_parameters,
    discover_notebooks,
    notebook_parameters,
    read_notebook,
    select_notebooks,
)
from adtr_core.figures.pipeline.outcome import NotebookError, NotebookRun
from adtr_core.figures.pipeline.provenance import (
    data_info,
    data_notes,
    printed_lines,
    shared_provenance,
    weights_info,
)

EXECUTED_DIR = "executed"


# Notebooks that load results folders another notebook trains (equal run settings share a
# folder): with several jobs they wait for it rather than train the same run at once.
AFTER = {"03": ("02",), "04": ("03",), "06": ("03",), "08": ("02",)}
LARGE_NOTEBOOK_BYTES = 5_000_000  # warn when an executed notebook embeds more than this
# Notebooks that a whole run leaves out, with why: they take far longer than the others.
# Named (`make figures NOTEBOOK=09`), they run; their earlier outputs stay in the manifest.
OPTIONAL = {
    "09": "the fidelity study, 70 min on 2 cores at the quick profile: make figures NOTEBOOK=09",
    "10": "choosing by validation on screw, 37 min on 2 cores: make figures NOTEBOOK=10",
}


def run_notebook(
    path: str | Path,
    profile: str,
    figures_dir: str | Path | None = None,
    executor: str = "local",
    kernel_name: str = "python3",
    provenance: dict[str, Any] | None = None,
    jobs: int = 1,
) -> NotebookRun:
    """Execute one notebook with papermill and record its outputs in the manifest.

    Args:
        path: ``NN_slug.ipynb``.
        profile: ``smoke``, ``quick`` or ``paper``.
        figures_dir: where the notebook writes (``out_dir``) and where the executed copy
            (``executed/``) and the manifest go; default :func:`adtr_core.paths.figures_dir`.
        executor: ``local`` or ``ray``, for notebooks that declare ``executor``.
        kernel_name: the Jupyter kernel; ``python3`` is this interpreter.
        provenance: versions, git state and machine (computed when None).
        jobs: how many notebooks the pipeline runs at once (recorded: wall times overlap).

    Returns:
        The run's record; ``status`` is ``"failed"`` and ``error`` set when it failed (the
        manifest records both cases; the files written before the failure are kept).
    """
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    path = Path(path)
    stem = path.stem
    default_figures = paths.figures_dir()
    figures = Path(figures_dir) if figures_dir is not None else default_figures
    figures.mkdir(parents=True, exist_ok=True)
    executed_dir = figures / EXECUTED_DIR
    executed_dir.mkdir(parents=True, exist_ok=True)
    partial = executed_dir / f"{stem}.FAILED.ipynb"
    final = executed_dir / f"{stem}.ipynb"
    running = executed_dir / f".{stem}.running.ipynb"
    if provenance is None:
        provenance = shared_provenance()

    # always explicit: a notebook run without out_dir is a hand run and writes to scratch/
    out_dir = _display_path(figures)
    prefix = stem.split("_", 1)[0] + "_"
    before = _snapshot(figures, prefix)
    started = dt.datetime.now(dt.UTC)
    start = time.perf_counter()
    error: NotebookError | None = None
    params: dict[str, Any] = {}
    try:
        params = notebook_parameters(path, profile, executor=executor, out_dir=out_dir)
        with environment(kernel_variables(figures)), quiet_papermill():
            pm.execute_notebook(
                str(path),
                str(running),
                parameters=params,
                kernel_name=kernel_name,
                progress_bar=False,
                log_output=False,
                request_save_on_cell_execute=True,
                cwd=str(path.parent),
                # the kernel's own start-up warnings (plain-TCP transport) are noise here
                extra_arguments=["--IPKernelApp.log_level=ERROR"],
            )
        strip_local_paths(running)
        write_lab_notebook(running)
        os.replace(running, final)
        partial.unlink(missing_ok=True)
    except PapermillExecutionError as err:
        source_index = _source_cell_index(running, err.cell_index)
        if running.exists():
            os.replace(running, partial)
        first_line = next((ln for ln in (err.source or "").splitlines() if ln.strip()), "")
        error = NotebookError(
            stem,
            f"{stem}: cell {source_index} (In [{err.exec_count}]: {first_line.strip()[:60]}) "
            f"raised {err.ename}: {(str(err.evalue or '').splitlines() or [''])[0]}",
            cell_index=source_index,
            exec_count=err.exec_count,
            ename=err.ename,
            evalue=err.evalue,
            source=err.source,
            partial=partial,
        )
    except Exception as err:  # noqa: BLE001 - kernel deaths, timeouts, bad parameters
        if running.exists():
            os.replace(running, partial)
        error = NotebookError(
            stem,
            f"{stem}: {type(err).__name__}: {err}",
            ename=type(err).__name__,
            evalue=str(err),
            partial=partial if partial.exists() else None,
        )
    finally:  # interrupted (Ctrl-C): keep what ran as the partial notebook
        if running.exists():
            os.replace(running, partial)
    wall = time.perf_counter() - start

    after = _snapshot(figures, prefix)
    produced = sorted(n for n, sig in after.items() if before.get(n) != sig)
    stale = sorted(n for n in after if n not in produced)
    executed = final if error is None else partial
    record = {
        "notebook": _display_path(path),
        "executed": (
            str(executed.relative_to(figures)) if executed.exists() else None
        ),  # relative to the figures folder
        "executed_bytes": executed.stat().st_size if executed.exists() else None,
        "status": "ok" if error is None else "failed",
        "error": None if error is None else str(error),
        "profile": profile,
        "executor": executor,
        "parameters": params,
        "data": data_info(params, printed_lines(executed) if executed.exists() else []),
        "weights": weights_info(params),
        "started": started.isoformat(timespec="seconds"),
        "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "wall_s": round(wall, 2),
        "jobs": jobs,
        "outputs": produced,
        "stale": stale,
        **provenance,
    }
    run = NotebookRun(stem, record["status"], wall, produced, record, error)
    update_manifest(figures, run)
    return run


def _snapshot(folder: Path, prefix: str) -> dict[str, tuple[int, int]]:
    if not folder.is_dir():
        return {}
    return {
        p.name: (p.stat().st_mtime_ns, p.stat().st_size)
        for p in folder.iterdir()
        if p.is_file() and p.name.startswith(prefix) and not p.name.startswith(".")
    }


def _display_path(path: Path) -> str:
    """``path`` relative to the repository when inside it (no machine paths in the manifest)."""
    try:
        return str(Path(path).resolve().relative_to(paths.repo_root()))
    except ValueError:
        return str(path)


def _source_cell_index(executed: Path, cell_index: int) -> int:
    """Map a cell index of the executed notebook to the source notebook (skip injected cells)."""
    try:
        nb = read_notebook(executed)
    except Exception:  # noqa: BLE001
        return cell_index
    # papermill numbers cells before it adds its error banner; the injected cell is not ours
    tags = [set(c.get("metadata", {}).get("tags", [])) for c in nb.cells]
    tags = [t for t in tags if "papermill-error-cell-tag" not in t]
    return cell_index - sum(1 for t in tags[:cell_index] if "injected-parameters" in t)


def _declares(notebook: Path, name: str) -> bool:
    try:
        return name in declared_parameters(notebook)
    except ValueError:
        return False  # reported when the notebook runs


def _ray_cluster(num_cpus: int | None = None) -> str:
    """Start one local Ray instance for all notebooks; its address goes to the kernels.

    Raises:
        RuntimeError: Ray could not start here; the message names the local executor.
    """
    from adtr_core.runs.sweep import ray_init

    try:
        ray_init(num_cpus=num_cpus)
    except Exception as err:  # noqa: BLE001 - any failure to start gets the same way out
        raise RuntimeError(
            f"Ray could not start a local instance for the notebooks' runs ({err}); "
            "train them inside the notebooks instead: make figures EXECUTOR=local "
            "(adtr figures --executor local)"
        ) from err
    import ray

    return ray.get_runtime_context().gcs_address


def resolve_jobs(jobs: int | str) -> int:
    """How many notebooks run at once: ``"auto"`` is 2 where there are 2 cores or more."""
    from adtr_core.runs.threads import cores

    if jobs == "auto":
        return min(2, cores())
    try:
        n = int(str(jobs))
    except (TypeError, ValueError):
        n = 0
    if n < 1:
        raise ValueError(f"jobs must be a whole number >= 1 or 'auto', not {jobs!r}")
    return n


def _number(path: Path) -> str:
    """A notebook's number: ``"09"`` of ``09_study.ipynb``."""
    return path.stem.split("_", 1)[0]


def run_pipeline(
    profile: str = "quick",
    notebook: str | None = None,
    executor: str = "local",
    notebooks_dir: str | Path | None = None,
    figures_dir: str | Path | None = None,
    kernel_name: str = "python3",
    jobs: int | str = 1,
) -> list[NotebookRun]:
    """Run the notebooks, writing figures, executed notebooks and the manifest.

    Args:
        profile: ``smoke``, ``quick`` or ``paper``.
        notebook: one notebook (``"02"`` or ``"02_train_category"``); None runs all but
            those of :data:`OPTIONAL`.
        executor: ``local`` or ``ray`` (for the sweeps inside notebooks that take
            ``executor``); with ``ray`` one local Ray instance serves every notebook, or the
            cluster named by ``RAY_ADDRESS``.
        notebooks_dir: default :func:`adtr_core.paths.notebooks_dir`.
        figures_dir: default :func:`adtr_core.paths.figures_dir`.
        kernel_name: the Jupyter kernel (``python3``: this interpreter).
        jobs: notebooks run at once (``"auto"``: :func:`resolve_jobs`); 1 runs them in
            order. With more, each kernel gets ``cores // jobs`` torch threads and a
            notebook of :data:`AFTER` waits for the one whose runs it loads.

    Returns:
        One :class:`NotebookRun` per notebook run (all ``ok``), in notebook order.

    Raises:
        NotebookError: a notebook failed; no notebook starts after it (earlier outputs and
            those of notebooks already running are kept).
        ValueError: unknown profile or executor, bad ``jobs``, or no notebook matches.
    """
    from adtr_core.runs.profiles import PROFILES
    from adtr_core.runs.threads import ENV_THREADS, cores

    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}: choose one of {', '.join(PROFILES)}")
    if executor not in ("local", "ray"):
        raise ValueError(f"unknown executor {executor!r}: choose local or ray")
    jobs = resolve_jobs(jobs)
    notebooks = select_notebooks(discover_notebooks(notebooks_dir), notebook)
    left_out = [] if notebook is not None else [p for p in notebooks if _number(p) in OPTIONAL]
    notebooks = [p for p in notebooks if p not in left_out]
    if not notebooks and not left_out:
        folder = notebooks_dir if notebooks_dir is not None else paths.notebooks_dir()
        raise FileNotFoundError(f"no notebooks named NN_slug.ipynb in {folder}")
    jobs = max(1, min(jobs, len(notebooks)))
    figures = Path(figures_dir) if figures_dir is not None else paths.figures_dir()
    print(f"profile {profile}, executor {executor}, {len(notebooks)} notebook(s), {jobs} at once")
    for path in left_out:
        print(f"  left out: {path.stem} ({OPTIONAL[_number(path)]})")
    for note in data_notes():
        print(f"  {note}")
    provenance = shared_provenance()
    if provenance["git"].get("dirty"):
        print("  note: the working tree has uncommitted changes (recorded in the manifest)")

    needs_ray = executor == "ray" and any(_declares(p, "executor") for p in notebooks)
    # set once for all kernels (a notebook's own setting and restoring then changes nothing
    # under the notebooks running beside it)
    env = kernel_variables(figures)
    if jobs > 1 and not os.environ.get(ENV_THREADS):
        share = str(max(1, cores() // jobs))
        env.update({ENV_THREADS: share, "OMP_NUM_THREADS": share})
        print(f"  {share} torch thread(s) per notebook")
    started_ray = needs_ray and not os.environ.get("RAY_ADDRESS")
    if started_ray:
        env["RAY_ADDRESS"] = _ray_cluster()
    runs: list[NotebookRun] = []
    total = time.perf_counter()
    started = dt.datetime.now(dt.UTC)
    status = "failed"
    try:
        with environment(env), quiet_papermill():
            _run_all(notebooks, jobs, runs, profile, figures, executor, kernel_name, provenance)
        status = "ok"
    finally:
        if started_ray:
            import ray

            ray.shutdown()
        record = {
            "profile": profile,
            "jobs": jobs,
            "notebooks": [p.stem for p in notebooks],
            "status": status,
            "started": started.isoformat(timespec="seconds"),
            "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "wall_s": round(time.perf_counter() - total, 2),
        }
        if figures.is_dir():
            record_pipeline_run(figures, record)
    print(
        f"done: {len(runs)} notebook(s) in {time.perf_counter() - total:.1f} s; "
        f"manifest: {_display_path(figures / MANIFEST_JSON)}"
    )
    for run in runs:
        print(f"  {run.stem:40s} {run.wall_s:8.1f} s")
    return runs


def _waits_for(nb_path: Path, selected: Sequence[Path]) -> set[str]:
    """The stems among ``selected`` whose results folders ``nb_path`` loads (:data:`AFTER`)."""
    number = nb_path.stem.split("_", 1)[0]
    needed = AFTER.get(number, ())
    return {p.stem for p in selected if p.stem.split("_", 1)[0] in needed}


def _run_all(notebooks: Sequence[Path], jobs: int, runs: list[NotebookRun], *args: Any) -> None:
    """Run ``notebooks``, ``jobs`` at once, in order where they wait for each other."""
    pending = list(notebooks)
    done: set[str] = set()
    running: dict[Future, Path] = {}
    failure: NotebookError | None = None
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        while pending or running:
            while failure is None and len(running) < jobs:
                ready = next((p for p in pending if _waits_for(p, notebooks) <= done), None)
                if ready is None:
                    break
                pending.remove(ready)
                position = notebooks.index(ready) + 1
                print(f"[{position}/{len(notebooks)}] {ready.stem} ...", flush=True)
                running[pool.submit(run_notebook, ready, *args, jobs=jobs)] = ready
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                running.pop(future)
                run = future.result()
                done.add(run.stem)
                runs.append(run)
                if run.error is not None:
                    _report_failure(run)
                    failure = failure or run.error
                else:
                    _report_success(run, jobs)
    runs.sort(key=lambda r: r.stem)
    if failure is not None:
        raise failure


def _report_failure(run: NotebookRun) -> None:
    print(f"  {run.stem} FAILED after {run.wall_s:.1f} s: {run.error}", file=sys.stderr)
    if run.error.partial is not None:
        print(
            f"  partially executed notebook: {_display_path(run.error.partial)}",
            file=sys.stderr,
        )


def _report_success(run: NotebookRun, jobs: int) -> None:
    name = f"{run.stem} " if jobs > 1 else ""
    print(f"  {name}ok in {run.wall_s:.1f} s, {len(run.files)} file(s)", flush=True)
    size = run.record.get("executed_bytes") or 0
    if size > LARGE_NOTEBOOK_BYTES:
        print(
            f"  note: the executed notebook is {size / 1e6:.1f} MB; "
            "it embeds large outputs (figures are in figures/ already)"
        )
    if run.record.get("stale"):
        print(f"  stale (not rewritten): {', '.join(run.record['stale'])}")
