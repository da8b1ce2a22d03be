"""The settings of one run: :class:`ExperimentConfig`, every field with its type, range and choices.

A config is checked when it is built (:meth:`ExperimentConfig.check_values`): one line names
the field, the value given and what is expected. It knows how its budget (steps or epochs)
becomes the trainer's epochs and milestones, and names its results folder
(:meth:`ExperimentConfig.run_name`).

See Also:
    :mod:`adtr_core.runs.experiment` runs a config; :mod:`adtr_core.runs.results` reads and writes
    what a run produced.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
import os
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from adtr_core import paths
from adtr_core.data.sources import (
    DATA_SOURCES,
    FOLDER_FIELDS,
    ONE_CLASS_SOURCES,
)
from adtr_core.method.model import POSITION_EMBEDDINGS
from adtr_core.method.reconstructors import RECONSTRUCTORS
from adtr_core.runs.peers import PEER_MODELS
from adtr_core.runs.precision import autocast_dtype, check_precision
from adtr_core.runs.train import Plateau, TrainConfig

MODELS = (*RECONSTRUCTORS, *PEER_MODELS)  # trained networks, then anomalib's fitted peers
LOSSES = ("norm", "px", "img")
SCORE_MODES = ("max_avgpool", "mean", "std", "max")
# Upper bounds far above any sensible run (the paper: 256 px, width 256, 4 + 4 layers); the
# memory estimate of adtr_core.runs.memory refuses, before any work, what the machine cannot hold.
MAX_IMAGE_SIZE = 2048
MAX_WIDTH = 8192
MAX_LAYERS = 64

# Allowed values of the constrained fields: (test, what is expected). Types come from the
# dataclass annotations; these are the ranges and choices on top (checked by check_values).
_RANGES: dict[str, tuple[Any, str]] = {
    "data": (lambda v: v in DATA_SOURCES, f"one of {', '.join(DATA_SOURCES)}"),
    "model": (lambda v: v in MODELS, f"one of {', '.join(MODELS)}"),
    "loss": (lambda v: v in LOSSES, f"one of {', '.join(LOSSES)}"),
    "anomalies": (lambda v: v in ("confetti", "cifar100"), "confetti or cifar100"),
    "score_mode": (lambda v: v in SCORE_MODES, f"one of {', '.join(SCORE_MODES)}"),
    "pos_embed": (lambda v: v in POSITION_EMBEDDINGS, f"one of {', '.join(POSITION_EMBEDDINGS)}"),
    "image_size": (
        lambda v: 16 <= v <= MAX_IMAGE_SIZE and v % 16 == 0,
        f"a multiple of 16 (the stride) in [16, {MAX_IMAGE_SIZE}]",
    ),
    "stages": (
        lambda v: len(v) > 0 and list(v) == sorted(set(v)) and all(1 <= s <= 5 for s in v),
        "a non-empty increasing list of stages from 1..5, e.g. [1, 2, 3, 4, 5]",
    ),
    "hidden_dim": (lambda v: 1 <= v <= MAX_WIDTH, f"an integer in [1, {MAX_WIDTH}]"),
    "num_encoder_layers": (lambda v: 0 <= v <= MAX_LAYERS, f"an integer in [0, {MAX_LAYERS}]"),
    "num_decoder_layers": (lambda v: 1 <= v <= MAX_LAYERS, f"an integer in [1, {MAX_LAYERS}]"),
    "num_heads": (lambda v: v >= 1, "an integer >= 1 that divides hidden_dim"),
    "dim_feedforward": (lambda v: 1 <= v <= 4 * MAX_WIDTH, f"an integer in [1, {4 * MAX_WIDTH}]"),
    "dropout": (lambda v: 0.0 <= v < 1.0, "a number in [0, 1)"),
    "steps": (
        lambda v: v == "auto" or (not isinstance(v, str) and v >= 1),
        "an integer >= 1 (optimiser steps), auto (until the validation AUROC stops improving), "
        "or null (count epochs)",
    ),
    "max_steps": (lambda v: v >= 1, "an integer >= 1"),
    "val_fraction": (lambda v: 0.0 <= v < 1.0, "a number in [0, 1) (0: no validation split)"),
    "val_every": (lambda v: v >= 0, "an integer >= 0 (0: only at the end)"),
    "val_patience": (lambda v: v >= 1, "an integer >= 1"),
    "epochs": (lambda v: v >= 1, "an integer >= 1 (or null when steps is set)"),
    "category": (
        lambda v: str(v).strip() != "",
        "a category name, or null (the first category of the data)",
    ),
    "batch_size": (lambda v: v >= 1, "an integer >= 1"),
    "lr": (lambda v: v > 0, "a number > 0"),
    "weight_decay": (lambda v: v >= 0, "a number >= 0"),
    "lr_milestones": (
        lambda v: all(m >= 0 for m in v),
        "a list of epochs (steps when steps is set) >= 0, e.g. [400], or fractions of the "
        "budget below 1, e.g. [0.8]",
    ),
    "lr_gamma": (lambda v: v > 0, "a number > 0"),
    "grad_clip": (lambda v: v > 0, "a number > 0, or null (no clipping)"),
    "seed": (lambda v: 0 <= v < 2**32, "an integer in [0, 2**32)"),
    "device": (
        lambda v: v in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", v) is not None,
        "auto, cpu, cuda or cuda:N",
    ),
    "eval_every": (lambda v: v >= 0, "an integer >= 0 (0: only at the end)"),
    "num_anomalies": (lambda v: v >= 1, "an integer >= 1, or null"),
    "alpha": (lambda v: v > 0, "a number > 0"),
    "topk": (lambda v: v >= 1, "an integer >= 1"),
    "pool_size": (lambda v: v >= 1, "an integer >= 1"),
    "sigma": (lambda v: v >= 0, "a number >= 0"),
}

_DEFAULT_VAL = 0.1  # ExperimentConfig.val_fraction's default, for the cross-field check
_CHOICE_FIELDS = frozenset({"data", "model", "loss", "anomalies", "score_mode", "pos_embed"})


def _type_error(annotation: Any, value: Any) -> str | None:
    """What is wrong with ``value`` for a field annotated ``annotation`` (None: nothing)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        what = [_type_error(a, value) for a in inner]
        if any(w is None for w in what):
            return None
        return what[0] + (", or null" if type(None) in args else "")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            return "a list of integers, e.g. [1, 2]"
        bad = [v for v in value if _type_error(args[0], v) is not None]
        what = (
            "a list of numbers, e.g. [0.8]"
            if args[0] is float
            else "a list of integers, e.g. [1, 2]"
        )
        return what if bad else None
    if annotation is bool:
        return None if isinstance(value, bool) else "true or false"
    if annotation is int:
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        return None if ok else "an integer"
    if annotation is float:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
        return None if ok and math.isfinite(float(value)) else "a finite number"
    if annotation is str:  # paths may come as Path objects from Python
        return None if isinstance(value, str | os.PathLike) else "a string"
    return None


def hand_budget(
    by_hand: dict[str, Any], values: dict[str, Any], epochs: str = "epochs", steps: str = "steps"
) -> None:
    """The one budget rule of every entry point: an epoch count given by hand replaces the step
    budget (of a profile, say), and an epoch count and a step count given together are refused.

    Args:
        by_hand: the settings given by hand (``--set``, flags, a notebook parameter set to a
            value); absent keys were not given.
        values: the settings in use (the profile's with ``by_hand`` over them); ``steps`` is
            set to None there when only ``epochs`` was given by hand.
        epochs, steps: the names of the two budgets (``plus_epochs`` and ``plus_steps`` for
            the ADTR+ runs of a notebook).

    Raises:
        ValueError: both budgets given, in one line.
    """
    if by_hand.get(epochs) is not None and by_hand.get(steps) is not None:
        raise ValueError(
            f"{epochs} = {by_hand[epochs]!r} and {steps} = {by_hand[steps]!r} are two budgets: "
            f"set one ({steps} counts optimiser steps, {epochs} passes over the training images)"
        )
    if epochs in by_hand and steps not in by_hand and steps in values:
        values[steps] = None  # an epoch count given by hand replaces the step budget


def _check_folders_differ(values: dict[str, Any]) -> None:
    """Refuse one folder given as two of the normal, anomalous and normal-test folders."""
    roles = {"data_root": "normal", "anomalous_dir": "anomalous", "test_normal_dir": "test-normal"}
    if values.get("anomalous_dir") is None and values.get("test_normal_dir") is None:
        return  # data_root is then a dataset root, not a folder of normal images
    seen: dict[Path, str] = {}
    for name, role in roles.items():
        if isinstance(values.get(name), str | os.PathLike):
            folder = Path(values[name]).expanduser().resolve()
            if folder in seen:
                raise ValueError(
                    f"{folder} is given as both the {seen[folder]} and the {role} folder: "
                    "normal training, anomalous and normal test images need folders of their own"
                )
            seen[folder] = role


@dataclass
class ExperimentConfig:
    """Everything one run depends on. Defaults are the paper's settings (METHOD.md §4)."""

    # --- data ---
    # auto: MVTec AD (MVTEC_ROOT, else the embedded bottle category), else the demo textures
    data: str = "auto"  # auto | mvtec | demo | folder | cifar10 | digits
    data_root: str | None = None  # None: MVTEC_ROOT / CIFAR_ROOT, else the embedded data
    # data="folder": data_root holds the normal training images; these the test images
    anomalous_dir: str | None = None  # anomalous test images (sub-folders: defect types)
    mask_dir: str | None = None  # their masks, matched by file stem; None: image labels only
    test_normal_dir: str | None = None  # normal test images
    category: str | None = None  # MVTec category, or the normal class for one-class data
    image_size: int = 256  # the paper: 256 (MVTec, 16x16 grid); one-class data is upsampled
    # --- backbone ---
    backbone: str = "tf_efficientnet_lite0"  # the paper: efficientnet_b4 (weights not offline)
    stages: tuple[int, ...] = (1, 2, 3, 4, 5)  # multi-scale; (5,) is the last-layer ablation
    backbone_weights: str = "auto"  # auto | random | timm | path to a state dict
    # --- reconstruction model ---
    model: str = "adtr"  # adtr | adtr_no_attention | adtr_no_query | cnn | padim | patchcore
    hidden_dim: int = 256
    num_encoder_layers: int = 4
    num_decoder_layers: int = 4
    num_heads: int = 8
    dim_feedforward: int = 1024
    dropout: float = 0.1
    pos_embed: str = "sine"  # sine (DETR's fixed) | learned (row + column, UniAD's); see model
    # --- training ---
    # The budget: with steps None, epochs and lr_milestones count epochs (the paper's 500 and
    # 400). With steps set, they count optimiser steps whatever the training set's size:
    # epochs = ceil(steps / batches per epoch), milestones converted the same way, so a
    # category of 60 images trains as many steps as one of 391. A milestone below 1 is a
    # fraction of the budget (0.8: at 80 % of the steps or epochs), so it moves with it.
    # steps "auto": train until the validation AUROC stops improving (val_patience
    # evaluations without a gain: the lr drops once, then training stops), at most max_steps.
    steps: int | str | None = None
    max_steps: int = 4000  # the upper bound of steps "auto"
    epochs: int | None = 500  # None only with steps set
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 1e-4
    lr_milestones: tuple[float, ...] = (400,)
    lr_gamma: float = 0.1
    grad_clip: float | None = 0.1
    seed: int = 0
    device: str = "auto"
    # auto: bf16 autocast on CUDA, float32 on the CPU; fp32; bf16: autocast on CUDA and on
    # CPUs with bf16 instructions (adtr_core.runs.precision), for features, training and scoring.
    precision: str = "auto"
    eval_every: int = 0  # epochs between evaluations on the test set (0: only at the end)
    # --- validation (no test labels; our choice, the paper is silent) ---
    # A share of train/good held out of training (at least 8 images; none below 16), and
    # synthetic anomalies made from it (confetti and pasted patches): the validation AUROC,
    # recorded every val_every epochs, the self-check at the end and the signal of steps
    # "auto". 0: train on every image, no validation.
    val_fraction: float = _DEFAULT_VAL
    val_every: int = 1  # epochs between validation AUROCs (0: only at the end)
    val_patience: int = 3  # steps "auto": evaluations without a gain before the lr drop / stop
    # --- anomaly-available case (ADTR+, Sec. 3.3) ---
    loss: str = "norm"  # norm (eq. 1) | px (eqs. 6-7) | img (eqs. 8-9)
    anomalies: str | None = None  # confetti | cifar100: the anomalies shown in training
    num_anomalies: int | None = None  # None: as many as normal training images
    alpha: float = 0.003
    topk: int = 20
    init_from: str | None = None  # results folder or checkpoint of the normal-only model
    # Our choice (the paper is silent): start the output projection's bias at the mean
    # training feature, so training does not spend its first steps learning the mean.
    init_output_bias: bool = True
    # --- scoring ---
    score_mode: str | None = None  # None: max_avgpool (MVTec-style) or mean (one-class data)
    pool_size: int = 16
    sigma: float = 4.0

    def __post_init__(self) -> None:
        self.check_values(dataclasses.asdict(self))
        self.stages = tuple(int(s) for s in self.stages)
        self.lr_milestones = tuple(m if 0 < m < 1 else int(m) for m in self.lr_milestones)
        if self.data == "auto":
            self.data = "mvtec" if paths.default_mvtec_root() is not None else "demo"
        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}: choose one of {', '.join(MODELS)}")
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}: choose one of {', '.join(LOSSES)}")
        check_precision(self.precision)
        if self.loss != "norm" and self.anomalies is None:
            self.anomalies = "cifar100" if self.data == "cifar10" else "confetti"
        if self.score_mode is None:
            self.score_mode = "mean" if self.data in ONE_CLASS_SOURCES else "max_avgpool"

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ExperimentConfig:
        """Build a config from plain values, rejecting unknown keys with the list of valid ones."""
        cls.check_fields(values)
        cls.check_values(values)
        return cls(**values)

    @classmethod
    def check_values(cls, values: dict[str, Any], ignore_unknown: bool = False) -> None:
        """Check values against their fields' types and ranges before any work is done.

        Only the keys present are checked (notebooks pass their parameters cell; keys
        that are not fields are refused, or skipped with ``ignore_unknown``), plus the
        cross-field rule that ``num_heads`` divides ``hidden_dim`` when both are given.

        Raises:
            ValueError: one line naming the field, the value given and what is expected.
        """
        if not ignore_unknown:
            cls.check_fields(values)
        hints = typing.get_type_hints(cls)
        for name, value in values.items():
            if name not in hints:
                continue
            problem = _type_error(hints[name], value)
            if name == "category" and isinstance(value, numbers.Integral):
                problem = None  # a one-class protocol's normal class may be given as a number
            if problem is None and value is not None and name in _RANGES:
                test, expected = _RANGES[name]
                if not test(value):
                    problem = expected
            if problem is not None and name in _CHOICE_FIELDS and isinstance(value, str):
                raise ValueError(f"unknown {name} {value!r}: choose {problem}")
            if problem is not None:
                raise ValueError(f"{name}={value!r} is not valid: expected {problem}")
        if values.get("steps") == "auto" and values.get("val_fraction", _DEFAULT_VAL) == 0:
            raise ValueError(
                "steps='auto' is not valid with val_fraction=0: it stops on the validation "
                "AUROC; give a number of steps or a val_fraction > 0"
            )
        if "epochs" in values and values["epochs"] is None and values.get("steps") is None:
            raise ValueError(
                "epochs=None is not valid: expected an integer >= 1 unless steps is set"
            )
        _check_folders_differ(values)
        dim, heads = values.get("hidden_dim"), values.get("num_heads")
        if isinstance(dim, int) and isinstance(heads, int) and heads >= 1 and dim % heads:
            raise ValueError(
                f"num_heads={heads!r} is not valid: expected a divisor of hidden_dim={dim}"
            )

    @classmethod
    def check_fields(cls, names, what: str = "experiment parameter(s)") -> None:
        """Raise ValueError naming every unknown field in ``names`` and listing the valid ones."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(names) - known)
        if unknown:
            raise ValueError(
                f"unknown {what} {', '.join(unknown)}; valid fields: {', '.join(sorted(known))}"
            )

    def epoch_budget(self, num_train: int) -> tuple[int, tuple[int, ...]]:
        """Epochs and lr milestones (in epochs) of training on ``num_train`` samples.

        With ``steps`` None these are ``epochs`` and ``lr_milestones``; with ``steps`` set,
        the step counts are turned into epochs of ``ceil(num_train / batch_size)`` batches
        (the trainer keeps the last, smaller batch), rounding up. A milestone below 1 is that
        fraction of the budget. ``steps="auto"``: ``max_steps`` is the budget and no
        milestone applies (the lr drops on the validation plateau instead).
        """
        if self.steps is None:
            total = self.epochs
            return total, tuple(
                max(1, math.ceil(m * total)) if 0 < m < 1 else int(m) for m in self.lr_milestones
            )
        batches = max(1, math.ceil(num_train / self.batch_size))
        if self.steps == "auto":
            return max(1, math.ceil(self.max_steps / batches)), ()
        steps = int(self.steps)
        marks = [m * steps if 0 < m < 1 else m for m in self.lr_milestones]
        epochs = max(1, math.ceil(steps / batches))
        return epochs, tuple(max(1, math.ceil(m / batches)) for m in marks)

    def train_config(
        self, device: str | torch.device = "cpu", num_train: int | None = None, **overrides: Any
    ) -> TrainConfig:
        """The trainer settings of this experiment (``overrides`` replace any of them).

        Args:
            device: the training device.
            num_train: training-set size; needed when the budget is given in ``steps``.
        """
        if self.steps is not None and num_train is None and "epochs" not in overrides:
            raise ValueError("a budget in steps needs num_train (the training-set size)")
        epochs, milestones = self.epoch_budget(num_train or 0)
        amp = autocast_dtype(self.precision, device) is not None
        plateau = (
            Plateau("val_auroc", patience=self.val_patience, lr_drops=1)
            if self.steps == "auto" and self.val_fraction > 0
            else None
        )
        values = dict(
            epochs=epochs,
            plateau=plateau,
            batch_size=self.batch_size,
            lr=self.lr,
            weight_decay=self.weight_decay,
            lr_milestones=milestones,
            lr_gamma=self.lr_gamma,
            grad_clip=self.grad_clip,
            seed=self.seed,
            device=str(device),
            eval_every=self.eval_every,
            amp=amp,
            cpu_amp=amp,
        )
        values.update(overrides)
        return TrainConfig(**values)

    def to_dict(self) -> dict[str, Any]:
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    def run_name(self) -> str:
        """A folder name that says what the run is and hashes the rest of the config."""
        values = self.to_dict()
        if values["init_from"] is not None:
            # The starting run's folder name already hashes its config; where the runs live
            # must not change the name of the runs started from it.
            start = Path(values["init_from"])
            values["init_from"] = start.parent.name if start.suffix == ".pt" else start.name
        # absent folder fields leave the names of other runs as they were
        for name in FOLDER_FIELDS:
            if values[name] is None:
                del values[name]
        digest = hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()
        parts = [self.data, str(self.category), self.model, self.backbone]
        if self.loss != "norm":
            parts.append(f"{self.loss}-{self.anomalies}")
        return "-".join(parts).replace("/", "_") + f"-{digest[:8]}"


DEFAULTS = {  # every field's default, as config.json writes it
    f.name: list(f.default) if isinstance(f.default, tuple) else f.default
    for f in dataclasses.fields(ExperimentConfig)
}
