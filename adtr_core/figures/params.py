"""Notebook parameters: a profile fills the ones left at None, then every value is checked.

Every notebook's ``parameters`` cell declares ``profile`` and, for each key of its
profile section (:func:`adtr_core.runs.profiles.profile_params`), a parameter whose default
is None, "this profile's value". So a notebook run as it is gets the ``quick`` profile
by construction; ``profile = "smoke"`` (one edited line, or ``-p profile smoke`` in
papermill) gets another; and any parameter set explicitly overrides that one value.

The cell after the parameters cell calls :func:`resolve`, before any work: it fills the
None parameters from the profile, checks type and range of every value and stops at the
first bad one with one line naming the parameter, its value and what is expected
(:class:`ParameterError`, shown by IPython and papermill as that one line, not a
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
import re
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from adtr_core import paths

# Parameters that no profile sets: every notebook declares profile and out_dir, the ones
# that train ADTR runs also runs_dir and executor.
FIXED = ("profile", "out_dir", "runs_dir", "executor")


class ParameterError(ValueError):
    """A notebook parameter of the wrong type or out of range; the message is one line."""

    def _render_traceback_(self) -> list[str]:
        """What IPython shows instead of a traceback (papermill reports it too): one line."""
        return [f"ParameterError: {self}"]


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


@dataclass(frozen=True)
class Spec:
    """What a parameter accepts.

    Attributes:
        kind: ``int``, ``float``, ``str``, ``bool``, ``list`` or ``dict``.
        optional: None is a valid value.
        low, high: inclusive bounds of numbers (and of list items of ``item`` numbers).
        above: exclusive lower bound of numbers.
        choices: the valid strings (or list items).
        item: kind of the list items (``int``, ``float`` or ``str``).
        multiple: numbers must be multiples of this.
        nonempty: lists must have an item.
        also: values accepted as they are, besides those of ``kind``.
        what: the expectation in words, for the error line (built from the rest when empty).
    """

    kind: type
    optional: bool = False
    low: float | None = None
    high: float | None = None
    above: float | None = None
    choices: tuple[str, ...] | None = None
    item: type | None = None
    multiple: int | None = None
    nonempty: bool = False
    what: str = ""
    also: tuple[Any, ...] = ()  # values accepted as they are besides the kind (e.g. "auto")

    def expected(self) -> str:
        if self.what:
            return self.what
        names = {int: "an integer", float: "a number", str: "a string", bool: "True or False"}
        if self.kind is list:
            text = f"a list of {names.get(self.item, 'value')}s" if self.item else "a list"
            text = text.replace("an integers", "integers").replace("a numbers", "numbers")
        elif self.kind is dict:
            text = "a mapping"
        else:
            text = names[self.kind]
        if self.choices:
            text = f"one of {', '.join(self.choices)}" if self.kind is str else text
            if self.kind is list:
                text += f" among {', '.join(self.choices)}"
        if self.multiple:
            text += f", a multiple of {self.multiple}"
        if self.low is not None and self.high is not None:
            text += f" in [{self.low:g}, {self.high:g}]"
        elif self.low is not None:
            text += f" >= {self.low:g}"
        elif self.above is not None:
            text += f" > {self.above:g}"
        if self.nonempty:
            text = "a non-empty " + text.removeprefix("a ")
        return text + (", or None" if self.optional else "")


_POS = Spec(int, low=1)
_NONNEG = Spec(int, low=0)
_EPOCHS = Spec(int, low=1)
_RATE = Spec(float, above=0)
_DECAY = Spec(float, low=0)
_MILESTONES = Spec(
    list,
    item=float,
    above=0,
    what="a list of epochs or steps (>= 1) or fractions of the budget (below 1), possibly empty",
)
_CATEGORY = Spec(str, optional=True, what="a category name, or None (the first of the data)")
_CATEGORIES = Spec(list, item=str, optional=True, nonempty=True)
_SEEDS = Spec(list, item=int, low=0, nonempty=True)
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")

SPECS: dict[str, Spec] = {
    # --- every notebook ---
    "profile": Spec(str, choices=("smoke", "quick", "paper")),
    "out_dir": Spec(str, optional=True, what="a folder (str), or None (a scratch folder)"),
    "runs_dir": Spec(str, optional=True, what="a folder (str), or None (runs/)"),
    "executor": Spec(str, choices=("local", "ray")),
    "data": Spec(str, what="a data source such as auto, demo, mvtec, digits or cifar10"),
    "data_root": Spec(str, optional=True, what="a folder (str), or None"),
    "category": _CATEGORY,
    "categories": _CATEGORIES,
    "classes": Spec(list, item=int, low=0, high=99, optional=True, nonempty=True),
    "device": Spec(str, what="auto, cpu, cuda, cuda:N or mps"),
    "torch_threads": Spec(int, low=1, optional=True),
    # --- one ADTR run (the profiles' run block) ---
    "image_size": Spec(int, low=16, multiple=16),
    "backbone": Spec(str, what="a backbone name such as tf_efficientnet_lite0 or efficientnet_b4"),
    "stages": Spec(list, item=int, low=1, high=5, nonempty=True),
    "hidden_dim": _POS,
    "dim_feedforward": _POS,
    "num_encoder_layers": _POS,
    "num_decoder_layers": _POS,
    "num_heads": _POS,
    "steps": Spec(
        int,
        low=1,
        optional=True,
        also=("auto",),
        what="optimiser steps (an integer >= 1), auto (until the validation AUROC stops "
        "improving), or None",
    ),
    "epochs": Spec(int, low=1, optional=True, what="an integer >= 1 (None: steps is the budget)"),
    "batch_size": _POS,
    "lr": _RATE,
    "weight_decay": _DECAY,
    "lr_milestones": _MILESTONES,
    "seed": _NONNEG,
    "precision": Spec(str, choices=("auto", "fp32", "bf16")),
    # --- ADTR+ (03, 06) ---
    "plus_steps": Spec(int, low=1, optional=True),
    "plus_epochs": Spec(int, low=1, optional=True),
    "plus_lr_milestones": _MILESTONES,
    "alpha": _DECAY,
    "topk": _POS,
    "num_anomalies": Spec(int, low=1, optional=True),
    "run_image_labels": Spec(bool),
    # --- 04, 05, 08 ---
    "pick": Spec(str, choices=("median", "max", "min")),
    "variants": Spec(list, item=str, nonempty=True),
    "max_per_group": Spec(int, low=2),
    "mask_threshold": Spec(float, low=0, high=1),
    "perplexity": _RATE,
    "tsne_iter": Spec(int, low=250),
    # --- 01 (the identical-mapping analysis) ---
    "K": Spec(int, low=1, what="a square number of tokens >= 1 (the 3x3 conv needs a grid)"),
    "C": _POS,
    "structures": Spec(list, item=str, choices=("aligned", "iid"), nonempty=True),
    "rank": _POS,
    "channel_rank": Spec(int, low=1, optional=True),
    "noise": _DECAY,
    "anomaly_fraction": Spec(float, above=0, high=1, what="a number in (0, 1]"),
    "n_train": _POS,
    "n_test": _POS,
    "data_seed": _NONNEG,
    "kinds": Spec(
        list,
        item=str,
        choices=("fc", "conv1x1", "conv3x3", "attention_query", "attention_self"),
        nonempty=True,
    ),
    "init": Spec(str, choices=("default", "zero", "identity")),
    "eval_every": _POS,
    "seeds": _SEEDS,
    "max_train": Spec(int, low=1, optional=True),
    "real_epochs": _EPOCHS,
    "real_batch_size": _POS,
    "real_lr": _RATE,
    "sweep": Spec(dict, what="a mapping of one or two settings to lists of values"),
    "sweep_kinds": Spec(
        list,
        item=str,
        choices=("fc", "conv1x1", "conv3x3", "attention_query", "attention_self"),
        nonempty=True,
    ),
    "sweep_seeds": _SEEDS,
    "sweep_epochs": _EPOCHS,
}
# Checks of one parameter against another: (name, test(values), expectation).
CROSS_CHECKS: tuple[tuple[str, Callable[[dict], bool], Callable[[dict], str]], ...] = (
    (
        "num_heads",
        lambda v: v["hidden_dim"] % v["num_heads"] == 0,
        lambda v: f"a divisor of hidden_dim ({v['hidden_dim']})",
    ),
    (
        "K",
        lambda v: math.isqrt(v["K"]) ** 2 == v["K"],
        lambda v: "a square number (the 3x3 conv sees the tokens on a grid)",
    ),
    (
        "channel_rank",
        lambda v: v["channel_rank"] is None or v["channel_rank"] <= v["C"],
        lambda v: f"at most C ({v['C']}), or None",
    ),
    (
        "epochs",
        lambda v: v["epochs"] is not None or v["steps"] is not None,
        lambda v: "an integer >= 1 when steps is None",
    ),
    (
        "plus_epochs",
        lambda v: v["plus_epochs"] is not None or v["plus_steps"] is not None,
        lambda v: "an integer >= 1 when plus_steps is None",
    ),
    (
        "device",
        lambda v: bool(_DEVICE.match(v["device"])),
        lambda v: "auto, cpu, cuda, cuda:N or mps",
    ),
)


def _fail(name: str, value: Any, expected: str) -> ParameterError:
    return ParameterError(f"parameter {name} = {value!r}: expected {expected}")


def _number_ok(spec: Spec, x: float) -> bool:
    if spec.low is not None and x < spec.low:
        return False
    if spec.high is not None and x > spec.high:
        return False
    if spec.above is not None and x <= spec.above:
        return False
    return not (spec.multiple and x % spec.multiple)


def _scalar(kind: type, value: Any) -> tuple[bool, Any]:
    """Whether ``value`` is of ``kind`` (ints count as floats, bools as nothing else)."""
    if kind is bool:
        return isinstance(value, bool), value
    if isinstance(value, bool):
        return False, value
    if kind is float and isinstance(value, int | float):
        return math.isfinite(value), float(value)
    return isinstance(value, kind), value


def _checked(spec: Spec, kind: type | None, value: Any) -> tuple[bool, Any]:
    """Whether a scalar (a parameter, or an item of a list; ``kind`` None: anything) fits
    ``spec``'s kind, bounds and choices, and the value normalised."""
    ok, value = _scalar(kind, value) if kind else (True, value)
    if ok and kind in (int, float):
        ok = _number_ok(spec, value)
    if ok and spec.choices:
        ok = value in spec.choices
    return ok, value


def check_value(name: str, value: Any, spec: Spec | None = None) -> Any:
    """Check one parameter; return it normalised (ints → float for numbers, tuples → lists).

    A string given for a list or mapping (``-p stages "[1, 2]"`` in papermill) is read as
    YAML first.

    Raises:
        ParameterError: wrong type or out of range; the message names parameter, value
            and expectation.
    """
    spec = spec or SPECS.get(name)
    if spec is None:
        return value
    if spec.also and isinstance(value, str) and value in spec.also:
        return value
    given = value
    if value is None:
        if spec.optional:
            return None
        raise _fail(name, given, spec.expected())
    if spec.kind in (list, dict) and isinstance(value, str):
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            raise _fail(name, given, spec.expected()) from None
    if spec.kind is list:
        if not isinstance(value, list | tuple) or (spec.nonempty and not value):
            raise _fail(name, given, spec.expected())
        items = []
        for item in value:
            ok, item = _checked(spec, spec.item, item)
            if not ok:
                raise _fail(name, given, spec.expected())
            items.append(item)
        return items
    if spec.kind is dict:
        if not isinstance(value, dict):
            raise _fail(name, given, spec.expected())
        return value
    ok, value = _checked(spec, spec.kind, value)
    if not ok:
        raise _fail(name, given, spec.expected())
    return value


def check_values(values: dict[str, Any]) -> dict[str, Any]:
    """Check every parameter, then the ones that depend on another; return them normalised.

    Raises:
        ParameterError: the first bad parameter, in one line.
    """
    checked = {name: check_value(name, value) for name, value in values.items()}
    for name, test, expected in CROSS_CHECKS:
        if name in checked:
            try:
                ok = test(checked)
            except KeyError:
                continue  # the other parameter is not a parameter of this notebook
            if not ok:
                raise _fail(name, checked[name], expected(checked))
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
    from adtr_core.runs.config import hand_budget
    from adtr_core.runs.profiles import profile_params, profile_run

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
        except ValueError as err:
            raise ParameterError(f"parameters {err}") from None
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
