"""One declaration checks every setting: the same bad value gets the same line from every entry
point (``adtr train --set``, a notebook parameter, a YAML profile, Python, a ``config.json``)."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import yaml

from adtr_core.cli import build_parser, main, train_config
from adtr_core.figures import params
from adtr_core.figures.params import ParameterError, resolve
from adtr_core.figures.pipeline import discover_notebooks
from adtr_core.runs import profiles
from adtr_core.runs.config import SCHEMA, ExperimentConfig
from adtr_core.runs.profiles import PROFILES, profile_params, profile_run
from adtr_core.runs.results import load_result
from adtr_core.runs.schema import Schema, SettingError, integer

NOTEBOOK = "02_train_category"

# (setting, bad value, the line every entry point must give). The quick profile's width is 64.
CASES = [
    ("hidden_dim", 0, "hidden_dim = 0 is not valid: expected an integer in [1, 8192]"),
    ("data", "mvtek", "unknown data 'mvtek': choose one of auto, demo, dev, mvtec, folder"),
    ("num_heads", 3, "num_heads = 3 is not valid: expected a divisor of hidden_dim (64)"),
    ("lr", True, "lr = True is not valid: expected a number > 0"),
    ("stages", [2, 1], "stages = [2, 1] is not valid: expected a non-empty increasing list"),
]


def _by_cli(capsys, name, value) -> str:
    rc = main(["train", "--profile", "quick", "--quiet", "--set", f"{name}={json.dumps(value)}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    return err[0].removeprefix("adtr: error: ")


def _by_notebook(name, value) -> str:
    ns = {key: None for key in profile_params("quick", NOTEBOOK)}
    ns.update(profile="quick", out_dir=None, runs_dir=None, executor="local", **{name: value})
    with pytest.raises(ParameterError) as info:
        resolve(NOTEBOOK, ns)
    return str(info.value)


def _by_python(name, value) -> str:
    run = profile_run("quick", NOTEBOOK)
    with pytest.raises(SettingError) as info:
        ExperimentConfig(**{**run, name: value})
    return str(info.value)


def _by_profile(monkeypatch, tmp_path, name, value) -> list[str]:
    """The value written into a copy of the quick profile's run block, then read by the
    command line and by a notebook."""
    folder = tmp_path / "profiles"
    shutil.copytree(profiles.PROFILE_DIR, folder)
    quick = yaml.safe_load((folder / "quick.yaml").read_text())
    for section in ("run", "train", NOTEBOOK):  # wherever the profile sets it
        if section == "run" or name in quick[section]:
            quick[section][name] = value
    (folder / "quick.yaml").write_text(yaml.safe_dump(quick))
    monkeypatch.setattr(profiles, "PROFILE_DIR", folder)
    profiles._load.cache_clear()
    try:
        with pytest.raises(SettingError) as by_cli:
            train_config(build_parser().parse_args(["train", "--profile", "quick"]))
        ns = {key: None for key in profile_params("quick", NOTEBOOK)}
        ns.update(profile="quick", out_dir=None, runs_dir=None, executor="local")
        with pytest.raises(ParameterError) as by_notebook:
            resolve(NOTEBOOK, ns)
    finally:
        profiles._load.cache_clear()
    return [str(by_cli.value), str(by_notebook.value)]


def _by_config_json(tmp_path, name, value) -> str:
    """A results folder whose config.json holds the value (edited by hand, say)."""
    run = tmp_path / "run"
    run.mkdir()
    config = {**ExperimentConfig(**profile_run("quick", NOTEBOOK)).to_dict(), name: value}
    (run / "config.json").write_text(json.dumps(config))
    (run / "metrics.json").write_text("{}")
    with pytest.raises(SettingError) as info:
        load_result(run)
    return str(info.value)


@pytest.mark.parametrize(("name", "value", "line"), CASES, ids=[c[0] for c in CASES])
def test_the_same_bad_value_gets_the_same_line_from_every_entry_point(
    name, value, line, capsys, monkeypatch, tmp_path
):
    lines = [
        _by_cli(capsys, name, value),
        _by_notebook(name, value),
        _by_python(name, value),
        _by_config_json(tmp_path, name, value),
        *_by_profile(monkeypatch, tmp_path, name, value),  # last: it edits the quick profile
    ]
    assert lines[0].startswith(line), lines[0]
    assert lines == [lines[0]] * len(lines)
    assert "\n" not in lines[0]


def test_every_field_and_every_notebook_parameter_is_declared():
    assert set(SCHEMA.settings) == {f.name for f in dataclasses.fields(ExperimentConfig)}
    declared = set(params.SCHEMA.settings) | set(params.FIXED)
    for profile in PROFILES:
        for nb in discover_notebooks():
            undeclared = set(profile_params(profile, nb.stem)) - declared
            assert not undeclared, f"{profile}/{nb.stem}: {sorted(undeclared)}"
        assert set(profile_params(profile, "train")) <= set(SCHEMA.settings), profile


def test_a_setting_declared_twice_is_refused():
    with pytest.raises(ValueError, match="lr declared twice"):
        _ = Schema({"lr": integer()}) | Schema({"lr": integer(ge=1)})


def test_the_defaults_pass_their_own_declarations():
    SCHEMA.check(ExperimentConfig().to_dict())
