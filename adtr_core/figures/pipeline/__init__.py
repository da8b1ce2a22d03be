"""The figure pipeline: run every notebook with papermill and record what made each figure.

``python -m adtr_core.figures.pipeline --profile quick`` (``make figures``, ``adtr figures``) runs
``notebooks/NN_*.ipynb`` in order. Each notebook gets its section of the profile
(:func:`adtr_core.runs.profiles.profile_params`) as papermill parameters, plus ``executor``
and ``profile`` when its parameters cell declares them. Notebooks write their figures (PNG, PDF) and
tables (CSV, Markdown) into ``figures/`` themselves (:mod:`adtr_core.figures.outputs`); the
pipeline keeps the executed notebooks in ``figures/executed/NN_slug.ipynb`` and writes

- ``figures/MANIFEST.json``: per notebook: profile, parameters, data, backbone weights,
  package versions, git commit (and whether the tree was dirty), machine, wall time,
  status and the files it wrote; per file: its notebook, kind, size and SHA-256.
  :func:`manifest_entry` joins the two for one file.
- ``figures/MANIFEST.md``: the same, readable.

The files of a notebook are those in ``figures/`` named with its ``NN_`` prefix that
were created or modified while it ran. The manifest is updated (atomically) after every
notebook, so a failure keeps what was made before it. A failing notebook stops the run
with one line naming the notebook and the cell, and the partially executed notebook is
kept as ``figures/executed/NN_slug.FAILED.ipynb``.

``jobs`` notebooks run at once (``--jobs``; the command line's default is 2 where there
are 2 cores or more). Each kernel then gets ``cores // jobs`` torch threads
(``ADTR_THREADS`` and ``OMP_NUM_THREADS``, unless set already): on 2 cores a quick-profile
training step is about as fast with one thread as with two, so two notebooks side by side
finish sooner; a fixed count also keeps a trained run's numbers independent of what runs
beside it. Fitting PaDiM and PatchCore, whose scores do not depend on the count, takes the
thread rule instead (:func:`adtr_core.runs.threads.fit_threads`). A notebook that loads results
folders another one trains (:data:`AFTER`) starts only when that one has finished; a
failure lets the running notebooks finish and starts no new one.

The kernel is this interpreter's (``kernel_name="python3"`` resolves to
``sys.executable``) and runs with ``HF_HUB_OFFLINE=1``: nothing uses the network. The
executed copies name the package's kernel (``adtr``, "Python (adtr)", as the source
notebooks do) and are written in the form JupyterLab saves (:func:`lab_form`), so
opening one in JupyterLab changes nothing on disk. The pipeline always passes
``out_dir``; a notebook run by hand without it writes to a scratch folder instead
(:mod:`adtr_core.figures.params`), so only the pipeline writes ``figures/``.

Modules, one concept each (none imports ``run`` but ``cli``):

- ``notebooks``: discovery, selection, the ``parameters`` cell, the form checks (lint);
- ``provenance``: package versions, git state, machine, weights and data;
- ``manifest``: ``MANIFEST.json`` and ``MANIFEST.md``, read, updated and rendered;
- ``lab``: the executed copies in JupyterLab's form, without machine paths;
- ``outcome``: :class:`NotebookRun` and :class:`NotebookError`;
- ``environment``: the variables the kernels inherit;
- ``run``: :func:`run_notebook`, :func:`run_pipeline` and the ``jobs`` scheduler;
- ``cli``: the command line (``__main__`` runs it);
- ``book``: the static HTML site of ``docs/`` and the executed notebooks (``make book``).
"""

from adtr_core.figures.pipeline.cli import build_parser, main
from adtr_core.figures.pipeline.lab import KERNELSPEC, lab_form, write_lab_notebook
from adtr_core.figures.pipeline.manifest import (
    MANIFEST_JSON,
    MANIFEST_MD,
    manifest_entry,
    read_manifest,
    render_manifest,
    update_manifest,
)
from adtr_core.figures.pipeline.notebooks import (
    declared_parameters,
    discover_notebooks,
    lint_notebook,
    notebook_parameters,
    parameters_cells,
    select_notebooks,
)
from adtr_core.figures.pipeline.outcome import NotebookError, NotebookRun
from adtr_core.figures.pipeline.provenance import (
    data_info,
    data_notes,
    git_state,
    machine_info,
    package_versions,
    weights_info,
)
from adtr_core.figures.pipeline.run import (
    AFTER,
    EXECUTED_DIR,
    resolve_jobs,
    run_notebook,
    run_pipeline,
)

__all__ = [
    "AFTER",
    "EXECUTED_DIR",
    "KERNELSPEC",
    "MANIFEST_JSON",
    "MANIFEST_MD",
    "NotebookError",
    "NotebookRun",
    "build_parser",
    "data_info",
    "data_notes",
    "declared_parameters",
    "discover_notebooks",
    "git_state",
    "lab_form",
    "lint_notebook",
    "machine_info",
    "main",
    "manifest_entry",
    "notebook_parameters",
    "package_versions",
    "parameters_cells",
    "read_manifest",
    "render_manifest",
    "resolve_jobs",
    "run_notebook",
    "run_pipeline",
    "select_notebooks",
    "update_manifest",
    "weights_info",
    "write_lab_notebook",
]
