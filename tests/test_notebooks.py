"""The notebooks: their form (thin, one literal parameters cell, profiles that fit) and a smoke run.

Static checks parse every code cell (IPython magics translated) and refuse ``def``,
``class`` and ``lambda``; the parameters cell must hold documented literal assignments
only; every profile must have a section per notebook whose keys the notebook declares.
The smoke run executes each notebook with papermill and the ``smoke`` profile into
temporary folders (marked ``notebooks``; part of the default suite).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from adtr_core import paths
from adtr_core.pipeline import (
    EXECUTED_DIR,
    MANIFEST_JSON,
    MANIFEST_MD,
    discover_notebooks,
    lint_notebook,
    notebook_parameters,
    run_notebook,
)
from adtr_core.profiles import PROFILES, profile_sections

EXPECTED = (
    "01_identical_mapping",
    "02_train_category",
    "03_detection_localization_tables",
    "04_score_maps",
    "05_ablations",
    "06_adtr_plus",
    "07_one_class",
    "08_feature_tsne",
)
NOTEBOOKS = discover_notebooks() if paths.notebooks_dir().is_dir() else []
IDS = [p.stem for p in NOTEBOOKS]


def test_the_eight_notebooks_are_there():
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
    assert (figures / EXECUTED_DIR / notebook.name).is_file()
