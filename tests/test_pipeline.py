"""Tests for the figure pipeline on tiny fake notebooks written here (real papermill, real kernel)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from adtr_core import paths
from adtr_core.figures import pipeline
from adtr_core.figures.pipeline import (
    NotebookError,
    build_parser,
    declared_parameters,
    discover_notebooks,
    lint_notebook,
    main,
    manifest_entry,
    notebook_parameters,
    read_manifest,
    select_notebooks,
)
from adtr_core.figures.pipeline import run as run_module
from adtr_core.runs import profiles
from adtr_core.runs import threads as pipeline_threads

PARAMS = """out_dir = None  # folder for figures and tables (None: figures/)
title = "default title"  # the figure's title
executor = "local"  # runs sweeps locally or on Ray
profile = "custom"  # the profile's name, for captions
"""

SAVE = """import os, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
from adtr_core.figures.outputs import save_figure, save_table
print("data: the fake data of the pipeline tests")
print("python:", sys.executable)
print("offline:", os.environ.get("HF_HUB_OFFLINE"))
fig, ax = plt.subplots(figsize=(2, 2))
ax.plot([0, 1], [1, 0])
ax.set_title(title)
save_figure(fig, "{stem}_line", out_dir=out_dir)
save_table(pd.DataFrame({{"executor": [executor]}}), "{stem}_table", out_dir=out_dir)
"""


def _notebook(path: Path, cells: list[tuple[str, str]]) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    for kind, source in cells:
        if kind == "parameters":
            nb.cells.append(nbformat.v4.new_code_cell(source, metadata={"tags": ["parameters"]}))
        elif kind == "markdown":
            nb.cells.append(nbformat.v4.new_markdown_cell(source))
        else:
            nb.cells.append(nbformat.v4.new_code_cell(source))
    nbformat.write(nb, str(path))
    return path


@pytest.fixture(scope="module")
def notebooks_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("notebooks")
    _notebook(
        folder / "01_fake_ok.ipynb",
        [("markdown", "# ok"), ("parameters", PARAMS), ("code", SAVE.format(stem="01_fake_ok"))],
    )
    _notebook(
        folder / "02_fake_fail.ipynb",
        [
            ("parameters", PARAMS),
            ("code", SAVE.format(stem="02_fake_fail")),
            ("code", "x = 1\nraise ValueError('deliberate failure in the test notebook')"),
        ],
    )
    _notebook(
        folder / "03_fake_after.ipynb",
        [("parameters", PARAMS), ("code", SAVE.format(stem="03_fake_after"))],
    )
    _notebook(folder / "scratch.ipynb", [("code", "pass")])  # not NN_slug: ignored
    return folder


@pytest.fixture
def fake_profile(monkeypatch):
    sections = {
        "01_fake_ok": {"title": "profile title"},
        "02_fake_fail": {},
        "03_fake_after": {},
    }

    def fake(profile, section):
        if section not in sections:
            raise ValueError(f"profile {profile!r} has no section {section!r}")
        return dict(sections[section])

    monkeypatch.setattr(profiles, "profile_params", fake)
    return sections


def _stream_text(nb_path: Path) -> str:
    nb = nbformat.read(str(nb_path), as_version=4)
    return "".join(
        out.get("text", "")
        for cell in nb.cells
        for out in cell.get("outputs", [])
        if out.get("output_type") == "stream"
    )


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --------------------------------------------------------------------------- fast checks


def test_discovery_is_ordered_and_selection_accepts_number_or_name(notebooks_dir):
    found = discover_notebooks(notebooks_dir)
    assert [p.stem for p in found] == ["01_fake_ok", "02_fake_fail", "03_fake_after"]
    assert [p.stem for p in select_notebooks(found, "02")] == ["02_fake_fail"]
    assert [p.stem for p in select_notebooks(found, "03_fake_after")] == ["03_fake_after"]
    assert [p.stem for p in select_notebooks(found, "01_fake_ok.ipynb")] == ["01_fake_ok"]
    assert select_notebooks(found, None) == found
    with pytest.raises(ValueError, match="no notebook matches '09'.*01_fake_ok"):
        select_notebooks(found, "09")


def test_parameters_come_from_the_profile_and_unknown_ones_are_refused(
    notebooks_dir, fake_profile, tmp_path
):
    nb = notebooks_dir / "01_fake_ok.ipynb"
    assert declared_parameters(nb) == {
        "out_dir": None,
        "title": "default title",
        "executor": "local",
        "profile": "custom",
    }
    params = notebook_parameters(nb, "smoke", executor="ray", out_dir=tmp_path)
    assert params == {
        "title": "profile title",
        "executor": "ray",
        "out_dir": str(tmp_path),
        "profile": "smoke",
    }
    fake_profile["01_fake_ok"]["epochz"] = 3
    with pytest.raises(
        ValueError, match="epochz are not declared.*declared: executor, out_dir, profile, title"
    ):
        notebook_parameters(nb, "smoke")


def test_lint_finds_definitions_and_bad_parameter_cells(tmp_path):
    good = _notebook(
        tmp_path / "10_good.ipynb",
        [("parameters", PARAMS), ("code", "%matplotlib inline\n!ls\nx = [i for i in range(3)]")],
    )
    assert lint_notebook(good) == []
    bad = _notebook(
        tmp_path / "11_bad.ipynb",
        [
            ("parameters", "n = 3  # count\nm = n + 1  # derived\nk = 2\n"),
            ("code", "def f(x):\n    return x\n"),
            ("code", "%%time\nclass A:\n    pass\ng = lambda x: x\n"),
        ],
    )
    problems = "\n".join(lint_notebook(bad))
    assert "m is not a literal" in problems
    assert "document k" in problems
    assert "cell 1 line 1: defines a def" in problems
    assert "defines a class" in problems and "defines a lambda" in problems
    none = _notebook(tmp_path / "12_none.ipynb", [("code", "x = 1")])
    assert "exactly one code cell tagged 'parameters', found 0" in lint_notebook(none)[0]
    with pytest.raises(ValueError, match="found 0"):
        declared_parameters(none)


def test_lint_finds_parameters_papermill_cannot_see(tmp_path):
    nb = _notebook(
        tmp_path / "13_eq.ipynb",
        [("parameters", "out_dir = None  # None = figures/\nk = 2  # fine\n")],
    )
    assert lint_notebook(nb) == [
        "parameters cell: papermill does not see out_dir (no '=' in its comment, please)"
    ]


def test_lab_form_is_what_jupyterlab_saves():
    nb = {
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3"}},
        "cells": [
            {
                "cell_type": "code",
                "metadata": {"papermill": {"duration": 2.0, "start": 0.5}},
                "outputs": [
                    {"output_type": "stream", "name": "stdout", "text": ["a\n"]},
                    {"output_type": "stream", "name": "stdout", "text": "10%\r100%\n"},
                    {"output_type": "stream", "name": "stderr", "text": "e\n"},
                    {"output_type": "stream", "name": "stdout", "text": "abcd\rxy\n"},
                ],
            }
        ],
    }
    out = pipeline.lab_form(nb)
    assert out["metadata"]["kernelspec"] == pipeline.KERNELSPEC
    cell = out["cells"][0]
    assert cell["metadata"]["papermill"] == {"duration": 2, "start": 0.5}
    assert isinstance(cell["metadata"]["papermill"]["duration"], int)
    assert [(o["name"], o["text"]) for o in cell["outputs"]] == [
        ("stdout", "a\n100%\n"),
        ("stderr", "e\n"),
        ("stdout", "xycd\n"),  # a carriage return overwrites, as a terminal does
    ]
    assert pipeline.lab_form(out) == out


def test_git_state_and_provenance_shape():
    git = pipeline.git_state()
    assert set(git) == {"commit", "dirty"}
    if git["commit"] is not None:
        assert len(git["commit"]) == 40
    versions = pipeline.package_versions()
    for name in ("torch", "timm", "numpy", "scikit-learn", "adtr", "python"):
        assert versions[name], name
    machine = pipeline.machine_info()
    assert machine["cpu_count"] >= 1 and "gpu" in machine


def test_only_the_command_line_imports_the_run_module():
    """The package's lower modules (notebooks, provenance, manifest...) never import ``run``."""
    import ast

    importers = set()
    for module in Path(pipeline.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "adtr_core.figures.pipeline.run":
                importers.add(module.stem)
    assert importers == {"__init__", "cli"}


# --------------------------------------------------------------------------- real runs


def test_one_notebook_writes_figures_executed_copy_and_manifest(
    notebooks_dir, fake_profile, tmp_path, capsys
):
    figures = tmp_path / "figures"
    assert build_parser().parse_args([]).executor == "ray"  # the runs of all notebooks share cores
    argv = ["--profile", "smoke", "--notebook", "01", "--notebooks-dir", str(notebooks_dir)]
    argv += ["--executor", "local"]
    assert main([*argv, "--figures-dir", str(figures)]) == 0
    out = capsys.readouterr().out
    assert "01_fake_ok" in out and "done: 1 notebook(s)" in out

    names = sorted(p.name for p in figures.iterdir() if p.is_file())
    assert names == [
        "01_fake_ok_line.pdf",
        "01_fake_ok_line.png",
        "01_fake_ok_table.csv",
        "01_fake_ok_table.md",
        "MANIFEST.json",
        "MANIFEST.md",
    ]  # only notebook 01 ran
    executed = figures / "executed" / "01_fake_ok.ipynb"
    assert executed.is_file()
    printed = _stream_text(executed)
    # the kernel is this interpreter; the executed copy names it relative to the venv
    assert f"python: {sys.executable.replace(sys.prefix, '<venv>')}" in printed
    assert str(paths.repo_root()) not in executed.read_text()  # no folder of this machine
    # in JupyterLab's form: the package's kernel, a final newline, ordinary permissions
    saved = json.loads(executed.read_text())
    assert saved["metadata"]["kernelspec"]["name"] == "adtr"
    assert executed.read_text().endswith("}\n")
    assert executed.stat().st_mode & 0o777 == 0o666 & ~_umask()
    assert (figures / "01_fake_ok_line.png").stat().st_mode & 0o777 == 0o666 & ~_umask()
    assert "offline: 1" in printed

    manifest = json.loads((figures / "MANIFEST.json").read_text())
    assert set(manifest["files"]) == {n for n in names if n.startswith("01_")}
    entry = manifest_entry(manifest, "01_fake_ok_line.png")
    assert entry["notebook"] == "01_fake_ok.ipynb" or entry["notebook"].endswith("01_fake_ok.ipynb")
    assert entry["kind"] == "figure" and len(entry["sha256"]) == 64
    assert entry["status"] == "ok" and entry["profile"] == "smoke"
    assert entry["parameters"]["title"] == "profile title"
    assert entry["parameters"]["executor"] == "local"
    assert entry["parameters"]["profile"] == "smoke"
    assert entry["data"]["notes"] == ["data: the fake data of the pipeline tests"]
    assert entry["weights"]["backbone"] == "tf_efficientnet_lite0"
    assert {"torch", "timm", "numpy", "scikit-learn", "adtr"} <= set(entry["versions"])
    assert set(entry["git"]) == {"commit", "dirty"}
    assert entry["machine"]["cpu_count"] >= 1
    assert entry["wall_s"] > 0
    assert manifest_entry(manifest, "01_fake_ok_table.csv")["kind"] == "table"
    md = (figures / "MANIFEST.md").read_text()
    assert "## 01_fake_ok" in md and "`01_fake_ok_line.png`" in md

    # A second notebook run later is added to the same manifest; 01's record stays.
    assert main([*argv[:2], "--notebook", "03", *argv[4:], "--figures-dir", str(figures)]) == 0
    manifest = read_manifest(figures)
    assert set(manifest["notebooks"]) == {"01_fake_ok", "03_fake_after"}
    assert "03_fake_after_line.png" in manifest["files"]
    assert "01_fake_ok_line.png" in manifest["files"]


def test_failure_names_notebook_and_cell_and_keeps_earlier_figures(
    notebooks_dir, fake_profile, tmp_path, capsys
):
    figures = tmp_path / "figures"
    with pytest.raises(NotebookError) as info:
        pipeline.run_pipeline("smoke", notebooks_dir=notebooks_dir, figures_dir=figures)
    err = info.value
    assert err.notebook == "02_fake_fail"
    assert err.cell_index == 2  # the third cell of the source notebook
    assert err.ename == "ValueError"
    assert err.partial == figures / "executed" / "02_fake_fail.FAILED.ipynb"
    assert err.partial.is_file()
    message = capsys.readouterr().err
    assert "02_fake_fail: cell 2" in message and "deliberate failure" in message
    assert "02_fake_fail.FAILED.ipynb" in message

    assert (figures / "01_fake_ok_line.png").is_file()  # before the failure: kept
    assert (figures / "02_fake_fail_line.png").is_file()  # made by the failing notebook
    assert not list(figures.glob("03_*"))  # the run stopped
    manifest = read_manifest(figures)
    assert manifest["notebooks"]["01_fake_ok"]["status"] == "ok"
    assert manifest["notebooks"]["02_fake_fail"]["status"] == "failed"
    assert "deliberate failure" in manifest["notebooks"]["02_fake_fail"]["error"]
    assert "01_fake_ok_line.png" in manifest["files"]

    # The command line reports the same in one line and exits with 1.
    argv = ["--profile", "smoke", "--notebook", "02", "--notebooks-dir", str(notebooks_dir)]
    assert main([*argv, "--executor", "local", "--figures-dir", str(figures)]) == 1
    assert "02_fake_fail: cell 2" in capsys.readouterr().err


TIMED = """import os, time
import pandas as pd
from adtr_core.figures.outputs import save_table
start = time.time()
time.sleep(4)
row = dict(start=start, end=time.time(), threads=os.environ.get("ADTR_THREADS"),
           omp=os.environ.get("OMP_NUM_THREADS"))
save_table(pd.DataFrame([row]), "{stem}_times", out_dir=out_dir)
"""


def test_two_jobs_run_side_by_side_and_a_notebook_waits_for_the_runs_it_loads(
    tmp_path, monkeypatch
):
    """``jobs=2``: 01 and 02 overlap; 03 (which loads 02's runs, :data:`AFTER`) starts after 02."""
    folder = tmp_path / "notebooks"
    folder.mkdir()
    stems = ["01_fake_a", "02_fake_b", "03_fake_c"]
    for stem in stems:
        _notebook(
            folder / f"{stem}.ipynb", [("parameters", PARAMS), ("code", TIMED.format(stem=stem))]
        )
    monkeypatch.setattr(profiles, "profile_params", lambda profile, section: {})
    monkeypatch.delenv("ADTR_THREADS", raising=False)
    figures = tmp_path / "figures"
    runs = pipeline.run_pipeline("smoke", notebooks_dir=folder, figures_dir=figures, jobs=2)
    assert [r.stem for r in runs] == stems
    times = {stem: pd.read_csv(figures / f"{stem}_times.csv").iloc[0] for stem in stems}
    a, b, c = (times[s] for s in stems)
    assert a.start < b.end and b.start < a.end  # side by side
    assert c.start >= b.end  # waited for 02
    share = str(max(1, pipeline_threads.cores() // 2))
    assert {str(int(t.threads)) for t in times.values()} == {share}
    assert {str(int(t.omp)) for t in times.values()} == {share}
    manifest = read_manifest(figures)
    assert {manifest["notebooks"][s]["jobs"] for s in stems} == {2}
    run = manifest["run"]  # the whole run, timed once: less than the notebooks' sum
    assert run["status"] == "ok" and run["jobs"] == 2 and run["notebooks"] == stems
    assert run["wall_s"] < sum(manifest["notebooks"][s]["wall_s"] for s in stems)
    assert "Last pipeline run" in (figures / "MANIFEST.md").read_text()
    assert set(manifest["files"]) == {f"{s}_times.{ext}" for s in stems for ext in ("csv", "md")}


def test_with_two_jobs_a_failure_starts_nothing_that_waits_for_it(
    notebooks_dir, fake_profile, tmp_path
):
    figures = tmp_path / "figures"
    with pytest.raises(NotebookError) as info:
        pipeline.run_pipeline("smoke", notebooks_dir=notebooks_dir, figures_dir=figures, jobs=2)
    assert info.value.notebook == "02_fake_fail"
    assert (figures / "01_fake_ok_line.png").is_file()  # ran beside the failing one: kept
    assert not list(figures.glob("03_*"))  # 03 waits for 02, which failed
    manifest = read_manifest(figures)
    assert manifest["notebooks"]["01_fake_ok"]["status"] == "ok"
    assert manifest["notebooks"]["02_fake_fail"]["status"] == "failed"


@pytest.mark.parametrize("jobs", [0, -1, "two", 1.5])
def test_bad_jobs_is_a_clear_error(jobs):
    with pytest.raises(ValueError, match="jobs must be a whole number"):
        pipeline.resolve_jobs(jobs)


def test_bad_selection_is_a_clear_error(notebooks_dir, capsys):
    argv = ["--notebook", "42", "--notebooks-dir", str(notebooks_dir)]
    assert main(argv) == 2
    assert "no notebook matches '42'" in capsys.readouterr().err


SWEEP = """import os
from adtr_core.runs.config import ExperimentConfig
from adtr_core.figures.outputs import save_table
from adtr_core.runs.sweep import results_table, run_sweep
cfg = ExperimentConfig(
    data="demo", category="brick", image_size=64, epochs=1, hidden_dim=32, num_heads=2,
    num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=64, device="cpu",
)
results = run_sweep([cfg], executor=executor)
print("ray address set:", bool(os.environ.get("RAY_ADDRESS")))
save_table(results_table(results), "01_fake_sweep_table", out_dir=out_dir)
"""


@pytest.fixture
def sweep_notebooks(tmp_path, monkeypatch) -> Path:
    """A folder with one notebook whose sweep takes the executor, and no Ray address set."""
    folder = tmp_path / "notebooks"
    folder.mkdir()
    _notebook(folder / "01_fake_sweep.ipynb", [("parameters", PARAMS), ("code", SWEEP)])
    monkeypatch.setattr(profiles, "profile_params", lambda profile, section: {})
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return folder


@pytest.mark.slow
def test_ray_executor_reaches_the_notebooks(sweep_notebooks, tmp_path):
    """``--executor ray``: one Ray instance started by the pipeline serves the notebook's sweep."""
    figures = tmp_path / "figures"
    runs = pipeline.run_pipeline(
        "smoke", executor="ray", notebooks_dir=sweep_notebooks, figures_dir=figures
    )
    assert runs[0].record["parameters"]["executor"] == "ray"
    assert "ray address set: True" in _stream_text(figures / "executed" / "01_fake_sweep.ipynb")
    assert (figures / "01_fake_sweep_table.csv").is_file()


def test_ray_that_cannot_start_names_the_local_executor(sweep_notebooks, tmp_path, monkeypatch):
    """Ray is the figures' default: where it cannot start, the error says how to go without."""
    from adtr_core.runs import sweep

    def no_ray(**kwargs):
        raise OSError("no space left in /dev/shm")

    monkeypatch.setattr(sweep, "ray_init", no_ray)
    with pytest.raises(RuntimeError, match="no space left.*make figures EXECUTOR=local"):
        pipeline.run_pipeline(
            "smoke", executor="ray", notebooks_dir=sweep_notebooks, figures_dir=tmp_path / "figures"
        )


def test_a_whole_run_leaves_the_optional_notebooks_out_and_names_them(
    tmp_path, monkeypatch, capsys
):
    """``make figures`` skips what :data:`OPTIONAL` lists (and says so); naming one runs it."""
    folder = tmp_path / "notebooks"
    folder.mkdir()
    for stem in ("01_fake_ok", "07_fake_long"):
        _notebook(
            folder / f"{stem}.ipynb", [("parameters", PARAMS), ("code", SAVE.format(stem=stem))]
        )
    monkeypatch.setitem(run_module.OPTIONAL, "07", "a long one: make figures NOTEBOOK=07")
    monkeypatch.setattr(profiles, "profile_params", lambda profile, section: {})
    figures = tmp_path / "figures"
    runs = pipeline.run_pipeline("smoke", notebooks_dir=folder, figures_dir=figures)
    assert [r.stem for r in runs] == ["01_fake_ok"]
    assert (
        "left out: 07_fake_long (a long one: make figures NOTEBOOK=07)" in capsys.readouterr().out
    )
    runs = pipeline.run_pipeline("smoke", notebook="07", notebooks_dir=folder, figures_dir=figures)
    assert [r.stem for r in runs] == ["07_fake_long"]
    assert set(read_manifest(figures)["notebooks"]) == {"01_fake_ok", "07_fake_long"}
    assert "09" in run_module.OPTIONAL  # the fidelity study
