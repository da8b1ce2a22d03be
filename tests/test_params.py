"""Tests for notebook parameters: profile filling, overrides, checks and where outputs go."""

from __future__ import annotations

from pathlib import Path

import pytest

from adtr_core import paths
from adtr_core.figures import params
from adtr_core.figures.params import ParameterError, check_value, check_values, resolve
from adtr_core.figures.pipeline import declared_parameters, discover_notebooks
from adtr_core.runs.profiles import profile_params, profile_run


def _namespace(**given):
    """A notebook namespace after a parameters cell that leaves everything at None."""
    ns = {name: None for name in profile_params("quick", "02_train_category")}
    ns.update(profile="quick", out_dir=None, runs_dir=None, executor="local")
    ns.update(given)
    return ns


def test_none_parameters_take_the_profile_and_explicit_ones_override():
    ns = _namespace(profile="smoke", epochs=3)
    p = resolve("02_train_category", ns)
    smoke = profile_params("smoke", "02_train_category")
    assert p.profile == "smoke"
    assert p.overrides == {"epochs": 3}
    assert ns["epochs"] == 3 and ns["image_size"] == smoke["image_size"]  # written back
    assert p.run == {**profile_run("smoke", "02_train_category"), "epochs": 3}
    # an explicit value equal to the profile's is no override
    steps = profile_run("quick", "02_train_category")["steps"]
    assert resolve("02_train_category", _namespace(steps=steps)).overrides == {}


def test_an_epoch_count_given_by_hand_replaces_the_step_budget_and_both_are_refused():
    quick = resolve("02_train_category", _namespace())
    assert quick.run["steps"] == profile_run("quick", "02_train_category")["steps"]
    assert isinstance(quick.run["steps"], int) and quick.run["epochs"] is None
    p = resolve("02_train_category", _namespace(epochs=16))
    assert p.run["epochs"] == 16 and p.run["steps"] is None
    with pytest.raises(ParameterError, match="epochs = 16 and steps = 300 are two budgets"):
        resolve("02_train_category", _namespace(epochs=16, steps=300))  # honours neither
    with pytest.raises(
        ParameterError, match="epochs = None is not valid: expected an integer >= 1 when steps"
    ):
        check_values({"epochs": None, "steps": None})


def test_the_budget_rule_is_one_for_the_command_line_and_the_notebooks():
    """``--set`` and a notebook parameter meet the same rule, stated once, in the same line."""
    from adtr_core.cli import build_parser, train_config

    args = build_parser().parse_args(["train", "--set", "epochs=16", "--set", "steps=300"])
    with pytest.raises(ValueError) as by_cli:
        train_config(args)
    with pytest.raises(ParameterError) as by_notebook:
        resolve("02_train_category", _namespace(epochs=16, steps=300))
    assert str(by_notebook.value) == str(by_cli.value)
    assert "\n" not in str(by_cli.value)
    args = build_parser().parse_args(["train", "--profile", "quick", "--set", "epochs=3"])
    assert train_config(args).steps is None  # the hand-given epochs replace the profile's steps


def test_hand_runs_write_to_scratch_and_explicit_out_dir_is_kept(tmp_path):
    scratch = paths.scratch_dir()
    p = resolve("02_train_category", _namespace(profile="smoke"))
    assert p.hand_run and p.out_dir == scratch / "smoke"
    assert "scratch" in p.describe() and "make figures" in p.describe()
    p = resolve("02_train_category", _namespace(profile="smoke", lr=0.5))
    assert p.out_dir == scratch / "smoke-custom"
    assert paths.figures_dir() not in (p.out_dir, *p.out_dir.parents)
    ns = _namespace(out_dir=str(tmp_path / "mine"))
    p = resolve("02_train_category", ns)
    assert not p.hand_run and p.out_dir == tmp_path / "mine" and (tmp_path / "mine").is_dir()
    assert ns["out_dir"] == str(tmp_path / "mine")


def test_relative_out_dir_is_relative_to_the_repository(monkeypatch, tmp_path):
    monkeypatch.setenv("ADTR_ROOT", str(tmp_path))
    p = resolve("02_train_category", _namespace(out_dir="figures"))
    assert p.out_dir == tmp_path / "figures"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("epochs", "abc", "epochs = 'abc' is not valid: expected an integer >= 1"),
        ("epochs", 0, "epochs = 0 is not valid: expected an integer >= 1"),
        ("epochs", 2.5, "epochs = 2.5 is not valid: expected an integer"),
        ("epochs", True, "epochs = True is not valid: expected an integer"),
        ("lr", -1, "lr = -1 is not valid: expected a number > 0"),
        ("lr", "fast", "lr = 'fast' is not valid: expected a number > 0"),
        (
            "image_size",
            100,
            "image_size = 100 is not valid: expected an integer multiple of 16 in [16,",
        ),
        ("stages", [1, 6], "stages = [1, 6] is not valid: expected a non-empty increasing list"),
        ("stages", "[1, 6]", "stages = '[1, 6]' is not valid: expected a non-empty increasing"),
        ("profile", "fast", "unknown profile 'fast': choose one of smoke, quick, paper"),
        ("executor", "slurm", "unknown executor 'slurm': choose one of local, ray"),
        ("device", "gpu", "device = 'gpu' is not valid: expected auto, cpu, cuda or cuda:N"),
        ("num_heads", 3, "num_heads = 3 is not valid: expected a divisor of hidden_dim (64)"),
        ("category", 5.5, "category = 5.5 is not valid: expected a category name, or null"),
    ],
)
def test_bad_values_fail_in_one_line_naming_parameter_value_and_expectation(name, value, message):
    with pytest.raises(ParameterError) as info:
        resolve("02_train_category", _namespace(**{name: value}))
    text = str(info.value)
    assert message in text and "\n" not in text


def test_values_are_normalised():
    assert check_value("lr", 1) == 1.0 and isinstance(check_value("lr", 1), float)
    assert check_value("stages", (1, 2)) == [1, 2]
    assert check_value("stages", "[3, 4]") == [3, 4]  # papermill -p passes lists as text
    assert check_value("torch_threads", None) is None
    with pytest.raises(
        ParameterError, match=r"categories = \[\] is not valid: expected a non-empty"
    ):
        check_value("categories", [])
    assert check_value("unknown_thing", object) is object  # not ours to check
    with pytest.raises(ParameterError, match="K = 10 is not valid: expected a square number"):
        check_values({"K": 10})
    with pytest.raises(ParameterError, match="channel_rank = 9 is not valid: expected at most C"):
        check_values({"C": 8, "channel_rank": 9})


@pytest.mark.parametrize("profile", ["smoke", "quick", "paper"])
def test_every_profile_passes_its_own_checks(profile):
    from adtr_core.figures.pipeline import discover_notebooks

    for nb in discover_notebooks():
        ns = {name: None for name in profile_params(profile, nb.stem)}
        ns.update(profile=profile, out_dir=str(paths.figures_dir()), runs_dir=None)
        ns["executor"] = "local"
        p = resolve(nb.stem, ns)
        assert p.overrides == {}, nb.stem


def test_a_parameter_the_notebook_does_not_declare_is_named():
    ns = _namespace()
    del ns["epochs"]
    with pytest.raises(ParameterError, match="epochs of profile 'quick' are not declared"):
        resolve("02_train_category", ns)
    with pytest.raises(ParameterError, match="profile is not declared"):
        resolve("02_train_category", {"out_dir": None})


def test_scratch_dir_follows_its_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("ADTR_SCRATCH", str(tmp_path))
    assert params.scratch_dir("quick", custom=True) == Path(tmp_path) / "quick-custom"


# the notebooks whose profile section takes the run block: 02-08
RUN_NOTEBOOKS = [
    nb.stem for nb in discover_notebooks() if profile_run("quick", nb.stem) is not None
]


@pytest.mark.parametrize("notebook", RUN_NOTEBOOKS)
def test_a_notebook_run_as_it_is_takes_the_quick_profiles_run_settings(notebook, tmp_path):
    """Opened in JupyterLab and run as they are, 02-08 train what `make figures` trains:
    their run settings are None ("the profile's"), the profile defaults to quick, and
    :func:`params.resolve` fills them from the quick profile's run block."""
    declared = declared_parameters(paths.notebooks_dir() / f"{notebook}.ipynb")
    assert declared["profile"] == "quick", notebook
    run_keys = profile_run("quick", notebook)
    set_here = {k: declared[k] for k in run_keys if declared.get(k, "missing") is not None}
    assert not set_here, f"{notebook}: the parameters cell fixes run settings: {set_here}"
    p = resolve(notebook, {**declared, "out_dir": str(tmp_path)})
    assert p.profile == "quick" and p.overrides == {}
    assert p.run == {k: check_value(k, v) for k, v in run_keys.items()}
    expected = {k: check_value(k, v) for k, v in profile_params("quick", notebook).items()}
    assert p.values == expected


def test_an_unknown_parameter_is_refused_with_the_valid_names():
    ns = _namespace(catgory="grass")
    with pytest.raises(ParameterError) as info:
        resolve("02_train_category", ns)
    line = str(info.value)
    assert "unknown parameter(s) catgory" in line and "category" in line and "\n" not in line
    assert info.value._render_traceback_() == [f"ParameterError: {line}"]
    ns = _namespace()
    ns.update(In=[""], Out={}, _i1="", get_ipython=print, np=pytest)  # a kernel's own globals
    resolve("02_train_category", ns)
    ns.update(data_note="a variable of a later cell")  # the check cell run again by hand
    resolve("02_train_category", ns)
