"""The settings of one run: :class:`ExperimentConfig`, every field with its type, range and choices.

Each field is annotated with its :class:`~adtr_core.runs.schema.Setting`, the one declaration
that checks it from every entry point (the command line, the notebooks, the YAML profiles,
Python and a ``config.json`` read back: :data:`SCHEMA`). A config is checked when it is
built: one line names the field, the value given and what is expected. It knows how its
budget (steps or epochs) becomes the trainer's epochs and milestones, and names its results
folder (:meth:`ExperimentConfig.run_name`).

See Also:
    :mod:`adtr_core.runs.experiment` runs a config; :mod:`adtr_core.runs.results` reads and writes
    what a run produced.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import torch

from adtr_core import paths
from adtr_core.data.sources import (
    DATA_SOURCES,
    FOLDER_FIELDS,
    ONE_CLASS_SOURCES,
)
from adtr_core.data.validation import ALL_VALIDATION_KINDS, VALIDATION_KINDS
from adtr_core.method.model import CROSS_QK_INITS, POSITION_EMBEDDINGS
from adtr_core.method.reconstructors import RECONSTRUCTORS
from adtr_core.runs import schema as s
from adtr_core.runs.peers import PEER_MODELS
from adtr_core.runs.precision import PRECISIONS, autocast_dtype
from adtr_core.runs.results_folder import IGNORED_FIELDS, config_differences
from adtr_core.runs.schema import Rule, Schema, SettingError
from adtr_core.runs.train import Plateau, TrainConfig

MODELS = (*RECONSTRUCTORS, *PEER_MODELS)  # trained networks, then anomalib's fitted peers
LOSSES = ("norm", "px", "img")
SCORE_MODES = ("max_avgpool", "mean", "std", "max")
# Upper bounds far above any sensible run (the paper: 256 px, width 256, 4 + 4 layers); the
# memory estimate of adtr_core.runs.memory refuses, before any work, what the machine cannot hold.
MAX_IMAGE_SIZE = 2048
MAX_WIDTH = 8192
MAX_LAYERS = 64

# The settings that take more than a few words to declare (the others are declared at their field).
_STAGES = s.items(
    s.integer(ge=1, le=5),
    "a non-empty increasing list of stages from 1..5, e.g. [1, 2, 3, 4, 5]",
    nonempty=True,
    test=lambda v: list(v) == sorted(set(v)),
)
_STEPS = s.union(
    s.integer(ge=1),
    "auto",
    None,
    words="an integer >= 1 (optimiser steps), auto (until the validation AUROC stops improving), "
    "or null (count epochs)",
)
_MILESTONES = s.items(
    s.number(ge=0),
    "a list of epochs (steps when steps is set) >= 0, e.g. [400], or fractions of the budget "
    "below 1, e.g. [0.8]",
)
_VAL_KINDS = s.items(
    s.choice(*ALL_VALIDATION_KINDS),
    f"a non-empty list of distinct kinds from {', '.join(ALL_VALIDATION_KINDS)}",
    nonempty=True,
    test=lambda v: len(set(v)) == len(v),
)
_DEVICE = s.pattern(r"auto|cpu|cuda|cuda:\d+", "auto, cpu, cuda or cuda:N")
_CATEGORY = s.text(null="the first category of the data", number_too=True, words="a category name")
_FOLDER = s.path(null=True)
_THREADS = s.union(
    s.integer(ge=1),
    "auto",
    None,
    words="an integer >= 1 (torch CPU threads, fixed for the run), auto (one per core left "
    "free, re-chosen every epoch: the numbers then depend on the load), or null (ADTR_THREADS, "
    "else every core)",
)
_EVERY = s.integer(ge=0, words="an integer >= 0 (0: only at the end)")
_VAL_FRACTION = s.number(ge=0, lt=1, words="a number in [0, 1) (0: no validation split)")

_DEFAULT_VAL = 0.1  # ExperimentConfig.val_fraction's default


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
        SettingError: both budgets given, in one line.
    """
    if by_hand.get(epochs) is not None and by_hand.get(steps) is not None:
        raise SettingError(
            f"{epochs} = {by_hand[epochs]!r} and {steps} = {by_hand[steps]!r} are two budgets: "
            f"set one ({steps} counts optimiser steps, {epochs} passes over the training images)"
        )
    if epochs in by_hand and steps not in by_hand and steps in values:
        values[steps] = None  # an epoch count given by hand replaces the step budget


_FOLDER_ROLES = {
    "data_root": "normal",
    "anomalous_dir": "anomalous",
    "test_normal_dir": "test-normal",
}


def _folder_twice(values: typing.Mapping[str, Any]) -> tuple[Path, str, str] | None:
    """A folder given as two of the normal, anomalous and normal-test folders: (it, role, role)."""
    if values.get("anomalous_dir") is None and values.get("test_normal_dir") is None:
        return None  # data_root is then a dataset root, not a folder of normal images
    seen: dict[Path, str] = {}
    for name, role in _FOLDER_ROLES.items():
        if isinstance(values.get(name), str | os.PathLike):
            folder = Path(values[name]).expanduser().resolve()
            if folder in seen:
                return folder, seen[folder], role
            seen[folder] = role
    return None


def _folders_line(values: typing.Mapping[str, Any]) -> str:
    folder, first, second = _folder_twice(values)
    return (
        f"{folder} is given as both the {first} and the {second} folder: normal training, "
        "anomalous and normal test images need folders of their own"
    )


# The rules between fields, stated once (the notebooks check their run settings by them too).
RULES = [
    s.divisor_rule("num_heads", of="hidden_dim"),
    s.budget_rule("epochs", "steps"),
    Rule(
        ("steps", "val_fraction"),
        lambda v: v["steps"] != "auto" or v["val_fraction"] != 0,
        lambda v: "a number of steps when val_fraction is 0 (auto stops on the validation AUROC)",
    ),
    Rule((), lambda v: _folder_twice(v) is None, line=_folders_line),
]


STORED_BEFORE: dict[str, Any] = {
    "pos_embed": "sine",
    "pos_scale": 1.0,
    "cross_qk_init": "xavier",
    "val_kinds": ["confetti", "pasted"],
    "feature_jitter": 0.0,
}
"""Fields added after runs were written, with the value those runs were trained with."""

NAMED_WHEN_SET = ("feature_jitter",)
"""Fields of :data:`STORED_BEFORE` that enter a results folder's name only when they differ
from their value there (so runs stored before them keep their names), and never for a fitted
peer (PaDiM, PatchCore), which does not train."""


@dataclass
class ExperimentConfig:
    """Everything one run depends on. Defaults are the paper's settings (METHOD.md §4).

    Each field's annotation holds its :class:`~adtr_core.runs.schema.Setting` (type, range or
    choices, the words of its error); :data:`RULES` relate fields to each other.
    """

    # --- data ---
    # auto: MVTec AD (MVTEC_ROOT, else the embedded bottle category), else the demo textures
    data: Annotated[str, s.choice(*DATA_SOURCES)] = "auto"
    # None: MVTEC_ROOT / CIFAR_ROOT, else the embedded data
    data_root: Annotated[str | None, _FOLDER] = None
    # data="folder": data_root holds the normal training images; these the test images:
    # anomalous ones (sub-folders: defect types), their masks (matched by file stem; None:
    # image labels only) and normal ones
    anomalous_dir: Annotated[str | None, _FOLDER] = None
    mask_dir: Annotated[str | None, _FOLDER] = None
    test_normal_dir: Annotated[str | None, _FOLDER] = None
    # MVTec category, or the normal class for one-class data
    category: Annotated[str | int | None, _CATEGORY] = None
    # the paper: 256 (MVTec, 16x16 grid); one-class data is upsampled
    image_size: Annotated[int, s.integer(ge=16, le=MAX_IMAGE_SIZE, multiple_of=16)] = 256
    # --- backbone ---
    # the paper: efficientnet_b4 (weights not offline)
    backbone: Annotated[str, s.text(words="a timm backbone name")] = "tf_efficientnet_lite0"
    stages: Annotated[tuple[int, ...], _STAGES] = (1, 2, 3, 4, 5)  # (5,): the last-layer ablation
    # auto | random | timm | path to a state dict
    backbone_weights: Annotated[str, s.path(words="auto, random, timm or a path")] = "auto"
    # --- reconstruction model ---
    model: Annotated[str, s.choice(*MODELS)] = "adtr"
    hidden_dim: Annotated[int, s.integer(ge=1, le=MAX_WIDTH)] = 256
    num_encoder_layers: Annotated[int, s.integer(ge=0, le=MAX_LAYERS)] = 4
    num_decoder_layers: Annotated[int, s.integer(ge=1, le=MAX_LAYERS)] = 4
    num_heads: Annotated[int, s.integer(ge=1)] = 8  # a divisor of hidden_dim (RULES)
    dim_feedforward: Annotated[int, s.integer(ge=1, le=4 * MAX_WIDTH)] = 1024
    dropout: Annotated[float, s.number(ge=0, lt=1)] = 0.1
    # Our choices (the paper is silent), made once for every category from the study in
    # docs/fidelity.md; see adtr_core.method.model. grid (a sine embedding that resolves the
    # grid) | sine (DETR's) | learned (row + column, UniAD's)
    pos_embed: Annotated[str, s.choice(*POSITION_EMBEDDINGS)] = "grid"
    pos_scale: Annotated[float, s.number(gt=0)] = 4.0  # factor on a fixed position embedding
    # tied: each cross-attention's key projection starts equal to its query projection
    cross_qk_init: Annotated[str, s.choice(*CROSS_QK_INITS)] = "tied"
    # --- training ---
    # The budget: with steps None, epochs and lr_milestones count epochs (the paper's 500 and
    # 400). With steps set, they count optimiser steps whatever the training set's size:
    # epochs = ceil(steps / batches per epoch), milestones converted the same way, so a
    # category of 60 images trains as many steps as one of 391. A milestone below 1 is a
    # fraction of the budget (0.8: at 80 % of the steps or epochs), so it moves with it.
    # steps "auto": train until the validation AUROC stops improving (val_patience
    # evaluations without a gain: the lr drops once, then training stops), at most max_steps.
    steps: Annotated[int | str | None, _STEPS] = None
    max_steps: Annotated[int, s.integer(ge=1)] = 4000  # the upper bound of steps "auto"
    epochs: Annotated[int | None, s.integer(ge=1, null="when steps is set")] = 500
    batch_size: Annotated[int, s.integer(ge=1)] = 16
    lr: Annotated[float, s.number(gt=0)] = 1e-4
    weight_decay: Annotated[float, s.number(ge=0)] = 1e-4
    lr_milestones: Annotated[tuple[float, ...], _MILESTONES] = (400,)
    lr_gamma: Annotated[float, s.number(gt=0)] = 0.1
    grad_clip: Annotated[float | None, s.number(gt=0, null="no clipping")] = 0.1
    # Feature jitter (our choice, the paper is silent; the scale of the authors' follow-up
    # code, UniAD): in training, each input token f gets Gaussian noise of sd
    # feature_jitter * |f| / C per channel, and the loss compares the reconstruction with the
    # clean f (docs/fidelity.md). 0: the input is f itself, as eq. 1 reads.
    feature_jitter: Annotated[float, s.number(ge=0)] = 20.0
    seed: Annotated[int, s.integer(ge=0, lt=2**32, words="an integer in [0, 2**32)")] = 0
    device: Annotated[str, _DEVICE] = "auto"
    # torch CPU threads of training: a count changes the floats a little, so a trained run
    # holds the one it used (null is resolved when it starts: adtr_core.runs.threads.run_threads)
    threads: Annotated[int | str | None, _THREADS] = None
    # auto: bf16 autocast on CUDA, float32 on the CPU; fp32; bf16: autocast on CUDA and on
    # CPUs with bf16 instructions (adtr_core.runs.precision), for features, training and scoring.
    precision: Annotated[str, s.choice(*PRECISIONS)] = "auto"
    # evaluations on the test set every eval_every epochs (optimiser steps when steps is set)
    eval_every: Annotated[int, _EVERY] = 0
    # --- validation (no test labels; our choice, the paper is silent) ---
    # A share of train/good held out of training (at least 8 images; none below 16), and
    # synthetic anomalies made from it (val_kinds): the validation AUROC,
    # recorded every val_every epochs (steps), the self-check at the end and the signal of steps
    # "auto". 0: train on every image, no validation.
    val_fraction: Annotated[float, _VAL_FRACTION] = _DEFAULT_VAL
    val_every: Annotated[int, _EVERY] = 1  # between validation AUROCs, as eval_every counts
    # the synthetic anomalies (adtr_core.data.validation); the validation AUROC is their mean
    val_kinds: Annotated[tuple[str, ...], _VAL_KINDS] = VALIDATION_KINDS
    # steps "auto": evaluations without a gain before the lr drop, and again before the stop
    val_patience: Annotated[int, s.integer(ge=1)] = 3
    # --- anomaly-available case (ADTR+, Sec. 3.3) ---
    loss: Annotated[str, s.choice(*LOSSES)] = "norm"  # norm (eq. 1) | px (eqs. 6-7) | img (8-9)
    # the anomalies shown in training (None: confetti, or cifar100 for CIFAR-10)
    anomalies: Annotated[str | None, s.choice("confetti", "cifar100", null=True)] = None
    # None: as many as normal training images
    num_anomalies: Annotated[int | None, s.integer(ge=1, null=True)] = None
    alpha: Annotated[float, s.number(gt=0)] = 0.003
    topk: Annotated[int, s.integer(ge=1)] = 20
    # results folder or checkpoint of the normal-only model
    init_from: Annotated[str | None, s.path(null=True, words="a results folder or checkpoint")] = (
        None
    )
    # Our choice (the paper is silent): start the output projection's bias at the mean
    # training feature, so training does not spend its first steps learning the mean.
    init_output_bias: Annotated[bool, s.flag()] = True
    # --- scoring ---
    # None: max_avgpool (MVTec-style) or mean (one-class data)
    score_mode: Annotated[str | None, s.choice(*SCORE_MODES, null=True)] = None
    # window of max_avgpool, in input pixels: 4 x 4 feature cells (our choice, chosen by the
    # validation AUROC; adtr_core.method.scoring)
    pool_size: Annotated[int, s.integer(ge=1)] = 64
    sigma: Annotated[float, s.number(ge=0)] = 4.0

    def __post_init__(self) -> None:
        self.check_values(dataclasses.asdict(self))
        self.stages = tuple(int(s) for s in self.stages)
        self.val_kinds = tuple(self.val_kinds)
        self.lr_milestones = tuple(m if 0 < m < 1 else int(m) for m in self.lr_milestones)
        if self.data == "auto":
            self.data = "mvtec" if paths.default_mvtec_root() is not None else "demo"
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
    def from_stored(cls, values: dict[str, Any]) -> ExperimentConfig:
        """A config read back from a run (``config.json``, a checkpoint's ``extra``).

        A field missing there was added after the run was written: it takes the value of
        :data:`STORED_BEFORE`, the one the run was trained with, not today's default.
        """
        return cls.from_dict({**STORED_BEFORE, **values})

    @classmethod
    def check_values(cls, values: dict[str, Any], ignore_unknown: bool = False) -> None:
        """Check values by :data:`SCHEMA` before any work is done.

        Only the keys present are checked (keys that are not fields are refused, or skipped
        with ``ignore_unknown``), and each rule whose fields are all present.

        Raises:
            SettingError: one line naming the field, the value given and what is expected.
        """
        if not ignore_unknown:
            cls.check_fields(values)
        SCHEMA.check(values)

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

    def cadence(self, num_train: int) -> tuple[int, int]:
        """Epochs between validation AUROCs and between test evaluations (0: at the end only).

        ``val_every`` and ``eval_every`` count epochs, or optimiser steps when ``steps`` is set
        (like the budget): then they become the nearest whole number of epochs, at least one.
        """
        if self.steps is None:
            return self.val_every, self.eval_every
        batches = max(1, math.ceil(num_train / self.batch_size))
        return tuple(e and max(1, round(e / batches)) for e in (self.val_every, self.eval_every))

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
            eval_every=self.cadence(num_train or 0)[1],
            amp=amp,
            cpu_amp=amp,
        )
        values.update(overrides)
        return TrainConfig(**values)

    def to_dict(self) -> dict[str, Any]:
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    def identity(self) -> dict[str, Any]:
        """The values a results folder's name hashes: two configs of equal identity are one
        run (a folder field left unset, a field at its value of before it existed, a training
        field of a fitted peer and where a starting run lives do not count)."""
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
        # fields added later leave the names of the runs without them as they were; training
        # fields say nothing of a fitted peer
        for name in NAMED_WHEN_SET:
            if values[name] == STORED_BEFORE[name] or self.model in PEER_MODELS:
                del values[name]
        return values

    def run_name(self) -> str:
        """A folder name that says what the run is and hashes its :meth:`identity`."""
        values = self.identity()
        digest = hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()
        parts = [self.data, str(self.category), self.model, self.backbone]
        if self.loss != "norm":
            parts.append(f"{self.loss}-{self.anomalies}")
        return "-".join(parts).replace("/", "_") + f"-{digest[:8]}"


# Every field's setting, from its annotation, and the rules between fields: the one check of a
# run's settings from every entry point.
SCHEMA = Schema(
    {
        name: hint.__metadata__[0]
        for name, hint in typing.get_type_hints(ExperimentConfig, include_extras=True).items()
    },
    RULES,
)


def config_changes(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``"name: stored -> current"`` for each field in which the run stored as ``stored`` (a
    ``config.json``, read as :meth:`ExperimentConfig.from_stored` reads it) and ``current``
    differ as runs (:meth:`ExperimentConfig.identity`); empty when they are the same run."""
    try:
        old, new = ExperimentConfig.from_stored(stored), ExperimentConfig.from_stored(current)
    except ValueError:  # not a config of this version: compare as written
        return config_differences(stored, current, DEFAULTS)
    a, b = old.identity(), new.identity()
    shown_a, shown_b = old.to_dict(), new.to_dict()
    return [
        f"{name}: {shown_a[name]!r} -> {shown_b[name]!r}"
        for name in sorted(set(a) | set(b))
        if name not in IGNORED_FIELDS and a.get(name) != b.get(name)
    ]


DEFAULTS = {  # every field's default, as config.json writes it
    f.name: list(f.default) if isinstance(f.default, tuple) else f.default
    for f in dataclasses.fields(ExperimentConfig)
}
