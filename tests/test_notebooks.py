"""The notebooks: their form (thin, one literal parameters cell, profiles that fit) and a smoke run.

Static checks parse every code cell (IPython magics translated) and refuse ``def``,
``class`` and ``lambda``; the parameters cell must hold documented literal assignments
only, all seen by papermill, each profile key at None (the profile's value), checked in
the cell right after it; every profile must have a section per notebook whose keys the
notebook declares. The smoke run executes each notebook with papermill and the
``smoke`` profile into temporary folders (marked ``notebooks``; part of the default
suite) and checks the executed copy: no errors or warnings, no machine paths, the
package's kernel, JupyterLab's form.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import unexpected_warnings

from adtr_core import paths
from adtr_core.figures.params import FIXED
from adtr_core.figures.pipeline import (
    EXECUTED_DIR,
    MANIFEST_JSON,
    MANIFEST_MD,
    discover_notebooks,
    lint_notebook,
    notebook_parameters,
    run_notebook,
)
from adtr_core.runs.profiles import PROFILES, profile_params, profile_sections

EXPECTED = (
    "01_identical_mapping",
    "02_train_category",
    "03_detection_localization_tables",
    "04_score_maps",
    "05_ablations",
    "06_adtr_plus",
    "07_one_class",
    "08_feature_tsne",
    "09_study",
    "10_selection",
)
NOTEBOOKS = discover_notebooks() if paths.notebooks_dir().is_dir() else []
IDS = [p.stem for p in NOTEBOOKS]


def test_the_ten_notebooks_are_there():
    assert [p.stem for p in NOTEBOOKS] == list(EXPECTED)


@pytest.mark.parametrize("profile", PROFILES)
def test_profile_sections_name_notebooks(profile):
    unknown = sorted(set(profile_sections(profile)) - set(EXPECTED) - {"train"})
    assert not unknown, f"profile {profile!r} has sections for no notebook: {unknown}"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=IDS)
def test_notebook_is_thin(notebook: Path):
    problems = lint_notebook(notebook)
    assert not problems, f"{notebook.name}:\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=IDS)
def test_profile_section_fits_the_parameters_cell(notebook: Path, profile: str):
    # raises on a missing section or a parameter the notebook does not declare
    notebook_parameters(notebook, profile)


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=IDS)
def test_parameters_default_to_the_profile_and_are_checked_next(notebook: Path):
    import nbformat

    from adtr_core.figures.pipeline import KERNELSPEC, declared_parameters, parameters_cells

    declared = declared_parameters(notebook)
    assert declared["profile"] == "quick" and declared["out_dir"] is None
    for profile in PROFILES:
        keys = set(profile_params(profile, notebook.stem))
        assert set(declared) - set(FIXED) == keys, f"{profile}: {set(declared) ^ keys}"
    fixed_values = {k: v for k, v in declared.items() if k not in FIXED and v is not None}
    assert not fixed_values, f"parameters not left to the profile: {fixed_values}"
    nb = nbformat.read(str(notebook), as_version=4)
    after = nb.cells[parameters_cells(nb)[0] + 1].source
    assert f'params.resolve("{notebook.stem}", globals())' in after
    assert nb.metadata["kernelspec"] == KERNELSPEC


@pytest.mark.parametrize(
    "parameters, message",
    [
        ({"epochs": "abc"}, "epochs = 'abc' is not valid: expected an integer >= 1, or null (when"),
        ({"catgory": "grass"}, "unknown parameter(s) catgory for 02_train_category; valid "),
    ],
)
def test_a_bad_parameter_stops_the_notebook_at_once_in_one_line(parameters, message, tmp_path):
    import nbformat
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    notebook = NOTEBOOKS[1]
    with pytest.raises(PapermillExecutionError) as info:
        pm.execute_notebook(
            str(notebook),
            str(tmp_path / "out.ipynb"),
            parameters=parameters,
            kernel_name="python3",
            progress_bar=False,
        )
    assert info.value.ename == "ParameterError"
    assert info.value.evalue.startswith(message), info.value.evalue
    assert "params.resolve" in info.value.source  # the cell after the parameters cell
    assert info.value.traceback == [f"ParameterError: {info.value.evalue}"]  # one line
    cell = next(c for c in nbformat.read(str(tmp_path / "out.ipynb"), 4).cells if c.get("outputs"))
    assert [o.get("traceback") for o in cell.outputs if o.output_type == "error"] == [
        [f"ParameterError: {info.value.evalue}"]
    ]


@pytest.fixture(scope="module")
def shared_runs(tmp_path_factory) -> Path:
    """One runs folder for all smoke notebooks: equal configs are trained once, as in use."""
    return tmp_path_factory.mktemp("notebook_runs")


@pytest.mark.notebooks
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=IDS)
def test_notebook_runs_with_the_smoke_profile(notebook: Path, tmp_path, shared_runs, monkeypatch):
    monkeypatch.setenv("ADTR_RUNS", str(shared_runs))
    figures = tmp_path / "figures"
    run = run_notebook(notebook, "smoke", figures_dir=figures)
    if run.error is not None:
        pytest.fail(f"{run.error}\npartially executed notebook: {run.error.partial}")
    assert run.files, f"{notebook.stem} saved no figure or table"
    foreign = sorted(
        p.name
        for p in figures.iterdir()
        if p.name not in (EXECUTED_DIR, MANIFEST_JSON, MANIFEST_MD)
        and not p.name.startswith(notebook.stem)
    )
    assert not foreign, f"{notebook.stem} wrote files not named {notebook.stem}*: {foreign}"
    executed = figures / EXECUTED_DIR / notebook.name
    assert executed.is_file()
    _check_executed_copy(executed, figures)


def _check_executed_copy(executed: Path, figures: Path) -> None:
    """What a user sees in the committed executed notebooks: clean, and stable in JupyterLab."""
    import json
    import os
    import tempfile

    import nbformat

    from adtr_core.figures.pipeline import KERNELSPEC, lab_form

    text = executed.read_text()
    nb = json.loads(text)
    outputs = [o for c in nb["cells"] for o in c.get("outputs", [])]
    assert not [o for o in outputs if o["output_type"] == "error"]
    stderr = "".join("".join(o["text"]) for o in outputs if o.get("name") == "stderr")
    assert not unexpected_warnings(stderr), stderr
    for local in (str(paths.repo_root()), tempfile.gettempdir() + "/", os.path.expanduser("~/")):
        assert local not in text.replace(str(figures), "<figures>"), local
    assert nb["metadata"]["kernelspec"] == KERNELSPEC
    assert text == nbformat.writes(nbformat.from_dict(lab_form(nb))) + "\n"  # a fixed point
    umask = os.umask(0)
    os.umask(umask)
    modes = {p.name: p.stat().st_mode & 0o777 for p in figures.rglob("*") if p.is_file()}
    assert set(modes.values()) == {0o666 & ~umask}, modes  # 0644 under the usual umask
