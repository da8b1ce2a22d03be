"""Notebook parameters: a profile fills the ones left at None, then every value is checked.

Every notebook's ``parameters`` cell declares ``profile`` and, for each key of its
profile section (:func:`adtr_core.runs.profiles.profile_params`), a parameter whose default
is None, "this profile's value". So a notebook run as it is gets the ``quick`` profile
by construction; ``profile = "smoke"`` (one edited line, or ``-p profile smoke`` in
papermill) gets another; and any parameter set explicitly overrides that one value.

The cell after the parameters cell calls :func:`resolve`, before any work: it fills the
None parameters from the profile, checks every value by :data:`SCHEMA` (the run settings as
:class:`~adtr_core.runs.config.ExperimentConfig` declares them, the notebooks' own parameters
in :data:`NOTEBOOK_SCHEMA`) and stops at the first bad one with the line every entry point
gives (:class:`ParameterError`, shown by IPython and papermill as that one line, not a
traceback). A name the notebook does not declare (``-p catgory grass``) is refused with
the valid names, and so are an epoch count and a step budget given together. Then it says
where the outputs go:

- ``out_dir`` set: there (a relative path is relative to the repository root). The
  figure pipeline (``make figures``) always sets it, to ``figures``.
- ``out_dir`` None (a run by hand, in JupyterLab or papermill): a scratch folder,
  ``scratch/<profile>/``, or ``scratch/<profile>-custom/`` when a parameter overrides the
  profile, so a hand run never overwrites the committed figures.
"""

from __future__ import annotations

import math
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from adtr_core import paths
from adtr_core.data.validation import ALL_VALIDATION_KINDS
from adtr_core.method.reconstructors import RECONSTRUCTORS
from adtr_core.runs import schema as s
from adtr_core.runs.config import SCHEMA as RUN_SCHEMA
from adtr_core.runs.config import hand_budget
from adtr_core.runs.peers import PEER_MODELS
from adtr_core.runs.profiles import PROFILES, profile_params, profile_run
from adtr_core.runs.schema import SettingError

# Parameters that no profile sets: every notebook declares profile and out_dir, the ones
# that train ADTR runs also runs_dir and executor.
FIXED = ("profile", "out_dir", "runs_dir", "executor")


class ParameterError(SettingError):
    """A notebook parameter of the wrong type or out of range; the message is one line."""


_LITERALS = (bool, int, float, str, list, dict, tuple, type(None))
_KERNEL_NAMES = frozenset({"In", "Out"})  # IPython's own globals that hold plain values
_CHECKED = "_adtr_parameters_checked"  # set in the namespace by the first resolve()


def _unknown_parameters(namespace: MutableMapping[str, Any], declared: set[str]) -> list[str]:
    """Plain values in ``namespace`` that are no declared parameter: misspelt ones.

    Right after the parameters cell (and papermill's injected cell) the only plain values
    in a notebook's globals are its parameters; a name that papermill (``-p catgory x``)
    or a hand edit added is one the notebook would silently ignore.
    """
    return sorted(
        name
        for name, value in namespace.items()
        if not name.startswith("_")
        and name not in _KERNEL_NAMES
        and name not in declared
        and isinstance(value, _LITERALS)
    )


_TOY_KINDS = ("fc", "conv1x1", "conv3x3", "attention_query", "attention_self")
_POS = s.integer(ge=1)
_SEEDS = s.items(s.integer(ge=0), "a non-empty list of integers >= 0", nonempty=True)
_KINDS = s.items(
    s.choice(*_TOY_KINDS), f"a non-empty list among {', '.join(_TOY_KINDS)}", nonempty=True
)

# The notebooks' own parameters; the run settings they share with ``adtr train`` (image_size,
# epochs, lr, seed, device...) are ExperimentConfig's, declared once there (RUN_SCHEMA).
NOTEBOOK_SCHEMA = s.Schema(
    {
        # --- every notebook ---
        "profile": s.choice(*PROFILES),
        "out_dir": s.path(null="a scratch folder"),
        "runs_dir": s.path(null="runs/"),
        "executor": s.choice("local", "ray"),
        "categories": s.items(
            s.text(), "a non-empty list of category names", nonempty=True, null="all"
        ),
        "classes": s.items(
            s.integer(ge=0, le=99),
            "a non-empty list of class numbers in [0, 99]",
            nonempty=True,
            null="all",
        ),
        "torch_threads": s.integer(ge=1, null="the thread rule"),
        # --- ADTR+ (03, 06) ---
        "plus_steps": s.integer(ge=1, null=True),
        "plus_epochs": s.integer(ge=1, null="when plus_steps is set"),
        "plus_lr_milestones": RUN_SCHEMA.settings["lr_milestones"],
        "run_image_labels": s.flag(),
        # --- 04, 05, 08 ---
        "pick": s.choice("median", "max", "min"),
        "variants": s.items(s.text(), "a non-empty list of variant names", nonempty=True),
        "max_per_group": s.integer(ge=2),
        "mask_threshold": s.number(ge=0, le=1),
        "perplexity": s.number(gt=0),
        "tsne_iter": s.integer(ge=250),
        # --- 09 (the fidelity study) ---
        "study_sets": s.items(
            s.text(),
            "a non-empty list of source/category names, e.g. [dev/bottle-small]",
            nonempty=True,
        ),
        "study_models": s.items(
            s.choice(*RECONSTRUCTORS),
            f"a non-empty list among {', '.join(RECONSTRUCTORS)}",
            nonempty=True,
        ),
        "peers": s.items(s.choice(*PEER_MODELS), f"a list among {', '.join(PEER_MODELS)}"),
        "test_every": s.integer(ge=0, words="an integer >= 0 (0: only at the end)"),
        # --- 10 (choosing by validation) ---
        "candidates": s.mapping("a mapping of candidate names to the settings each changes"),
        "candidate_seeds": _SEEDS,
        "baseline": s.text(words="the name of one candidate"),
        "report": s.items(s.text(), "a non-empty list of candidate names", nonempty=True),
        "validation_kinds": s.items(
            s.choice(*ALL_VALIDATION_KINDS),
            f"a non-empty list among {', '.join(ALL_VALIDATION_KINDS)}",
            nonempty=True,
        ),
        # --- 01 (the identical-mapping analysis) ---
        "K": s.integer(ge=1, words="a square number of tokens >= 1 (the 3x3 conv needs a grid)"),
        "C": _POS,
        "structures": s.items(
            s.choice("aligned", "iid"), "a non-empty list among aligned, iid", nonempty=True
        ),
        "rank": _POS,
        "channel_rank": s.integer(ge=1, null=True),
        "noise": s.number(ge=0),
        "anomaly_fraction": s.number(gt=0, le=1),
        "n_train": _POS,
        "n_test": _POS,
        "data_seed": s.integer(ge=0),
        "kinds": _KINDS,
        "init": s.choice("default", "zero", "identity"),
        "seeds": _SEEDS,
        "max_train": s.integer(ge=1, null=True),
        "real_epochs": _POS,
        "real_batch_size": _POS,
        "real_lr": s.number(gt=0),
        "sweep": s.mapping("a mapping of one or two settings to lists of values"),
        "sweep_kinds": _KINDS,
        "sweep_seeds": _SEEDS,
        "sweep_epochs": _POS,
    },
    [
        s.budget_rule("plus_epochs", "plus_steps"),
        s.Rule(
            ("K",),
            lambda v: math.isqrt(v["K"]) ** 2 == v["K"],
            lambda v: "a square number (the 3x3 conv sees the tokens on a grid)",
        ),
        s.Rule(
            ("channel_rank", "C"),
            lambda v: v["channel_rank"] is None or v["channel_rank"] <= v["C"],
            lambda v: f"at most C ({v['C']}), or null",
        ),
    ],
)
# Every parameter of every notebook (a name declared twice is refused when this is built).
SCHEMA = RUN_SCHEMA | NOTEBOOK_SCHEMA


def _listed(value: Any) -> Any:
    """Tuples as lists, as a notebook's parameters cell writes them."""
    return list(value) if isinstance(value, tuple) else value


def check_value(name: str, value: Any) -> Any:
    """Check one parameter by :data:`SCHEMA`; return it normalised (ints → float for numbers,
    tuples → lists). A name that is no parameter is returned as it is.

    A string given for a list or mapping (``-p stages "[1, 2]"`` in papermill) is read as
    YAML first.

    Raises:
        ParameterError: wrong type or out of range; the message names parameter, value
            and expectation, in the line every entry point gives.
    """
    setting = SCHEMA.settings.get(name)
    if setting is None:
        return value
    given = value
    if setting.listed and isinstance(value, str):
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ParameterError(s.invalid(name, given, setting.expected)) from None
    try:
        checked = setting.check(name, value)
    except SettingError as err:
        line = str(err) if value is given else s.invalid(name, given, setting.expected)
        raise ParameterError(line) from None
    return _listed(checked)


def check_values(values: dict[str, Any]) -> dict[str, Any]:
    """Check every parameter, then the rules between them; return them normalised.

    Raises:
        ParameterError: the first bad parameter, in one line.
    """
    checked = {name: check_value(name, value) for name, value in values.items()}
    try:
        for rule in SCHEMA.rules:
            rule.check(checked)
    except SettingError as err:
        raise ParameterError(str(err)) from None
    return checked


@dataclass
class NotebookParams:
    """The resolved parameters of one notebook run.

    Attributes:
        notebook: the notebook's stem, e.g. ``"02_train_category"``.
        profile: the profile that filled the parameters left at None.
        values: every profile parameter, resolved and checked.
        overrides: the parameters set explicitly to a value other than the profile's.
        run: the ADTR run settings (ExperimentConfig fields) for notebooks that train
            ADTR runs, else None.
        out_dir: where figures and tables go.
        hand_run: ``out_dir`` was None: the outputs go to a scratch folder.
    """

    notebook: str
    profile: str
    values: dict[str, Any]
    overrides: dict[str, Any] = field(default_factory=dict)
    run: dict[str, Any] | None = None
    out_dir: Path = Path()
    hand_run: bool = False

    def describe(self) -> str:
        """Two lines: the profile and its overrides, and where the outputs go."""
        changed = ", ".join(f"{k}={v!r}" for k, v in self.overrides.items()) or "none"
        where = _display(self.out_dir)
        if self.hand_run:
            where += " (run by hand: figures/ is written by `make figures` only; set out_dir)"
        return f"profile {self.profile}; overridden: {changed}\noutputs: {where}"


def _display(path: Path) -> str:
    try:
        return f"{path.resolve().relative_to(paths.repo_root().resolve())}/"
    except ValueError:
        return str(path)


def scratch_dir(profile: str, custom: bool) -> Path:
    """The folder of a hand run's outputs: ``scratch/<profile>[-custom]`` under the root.

    ``ADTR_SCRATCH`` moves the parent folder (:func:`adtr_core.paths.scratch_dir`).
    """
    return paths.scratch_dir() / (f"{profile}-custom" if custom else profile)


def resolve(notebook: str, namespace: MutableMapping[str, Any]) -> NotebookParams:
    """Fill a notebook's None parameters from its profile, check them, choose ``out_dir``.

    Like papermill's injected cell, this writes the resolved values back into
    ``namespace`` (the notebook's ``globals()``), so the cells below read ``epochs`` as
    the value in use; ``out_dir`` becomes the folder the outputs go to.

    Args:
        notebook: the notebook's stem, the section of the profile.
        namespace: the notebook's variables after the parameters cell.

    Returns:
        The resolved parameters; :meth:`NotebookParams.describe` is printed by the caller.

    Raises:
        ParameterError: a parameter of the wrong type or out of range, one the notebook
            does not declare (a misspelt name given to papermill), or two budgets at once.
    """
    for name in ("profile", "out_dir"):
        if name not in namespace:
            raise ParameterError(f"parameter {name} is not declared in the parameters cell")
    profile = check_value("profile", namespace["profile"])
    defaults = profile_params(profile, notebook)
    missing = [name for name in defaults if name not in namespace]
    if missing:
        raise ParameterError(
            f"parameter(s) {', '.join(missing)} of profile {profile!r} are not declared in "
            f"{notebook}'s parameters cell"
        )
    # A re-run of the cell in JupyterLab sees the variables of later cells too: only the first
    # run in a kernel (every papermill run) checks for unknown names.
    first_run = _CHECKED not in namespace
    unknown = _unknown_parameters(namespace, set(defaults) | set(FIXED)) if first_run else []
    if unknown:
        raise ParameterError(
            f"unknown parameter(s) {', '.join(unknown)} for {notebook}; valid parameters: "
            f"{', '.join(sorted(set(defaults) | set(FIXED)))}"
        )
    given = {name: namespace[name] for name in defaults}
    by_hand = {name: v for name, v in given.items() if v is not None}
    resolved = {name: defaults[name] if v is None else v for name, v in given.items()}
    for epochs, steps in (("epochs", "steps"), ("plus_epochs", "plus_steps")):
        try:
            hand_budget(by_hand, resolved, epochs, steps)
        except SettingError as err:
            raise ParameterError(str(err)) from None
    fixed = {name: namespace[name] for name in FIXED if name != "profile" and name in namespace}
    checked = check_values({**resolved, **fixed})
    values = {name: checked[name] for name in defaults}
    overrides = {
        name: values[name]
        for name, v in given.items()
        if v is not None and check_value(name, defaults[name]) != values[name]
    }
    run_keys = profile_run(profile, notebook)
    run = None if run_keys is None else {name: values[name] for name in run_keys}
    hand_run = checked["out_dir"] is None
    if hand_run:
        out_dir = scratch_dir(profile, custom=bool(overrides))
    else:
        out_dir = Path(checked["out_dir"]).expanduser()
        if not out_dir.is_absolute():
            out_dir = paths.repo_root() / out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    namespace.update(values)
    namespace["out_dir"] = str(out_dir)
    namespace[_CHECKED] = True
    return NotebookParams(notebook, profile, values, overrides, run, out_dir, hand_run)
