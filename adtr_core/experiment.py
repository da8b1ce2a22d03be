"""The experiment layer: one config → data, features, training, evaluation, a results folder.

This is the only place where the stages meet (STYLE.md, rule 2): ``data`` gives
images (``data.sources`` says which), ``backbone`` turns them into features (computed
once and cached by ``features``), a reconstruction network from the ``reconstructors``
registry is trained by the one ``train.Trainer`` with a loss from ``losses``, and
``scoring`` plus ``metrics`` evaluate it. The peers (PaDiM, PatchCore of ``peers``) are
fitted instead of trained, into the same results folder (:func:`run_peer`). A saved run
is rebuilt and re-evaluated by :mod:`adtr_core.saved_runs`.

A results folder is named after its config and holds::

    config.json        the resolved ExperimentConfig (written last, with the results)
    checkpoint.pt      model + optimiser state, loadable with weights_only=True
    history.csv        one row per epoch (loss, lr, time, periodic metrics)
    metrics.json       image_auroc, pixel_auroc, pixel_aupro (+ category, counts); an
                       absent metric (no pixel masks, say) is null and listed under "absent"
    scores.csv         per test image: path, defect, label, image score
    score_maps.npz     per test image score maps (float16), when the data has masks

Re-running the same config resumes from ``checkpoint.pt``; a finished run is
re-evaluated from its checkpoint without training again. A different config in the same
folder is refused (:mod:`adtr_core.results_folder`). Every value of a config is checked
against its field's type and range when it is built (:meth:`ExperimentConfig.check_values`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
import os
import re
import time
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from adtr_core import paths, results_folder
from adtr_core.backbone import BackboneConfig, build_backbone
from adtr_core.checkpoints import RUN_FIX, checkpoint_file, load_checkpoint
from adtr_core.data import open_dataset
from adtr_core.data.confetti import ConfettiDataset
from adtr_core.data.sources import (
    DATA_SOURCES,
    FOLDER_FIELDS,
    ONE_CLASS_SOURCES,
    data_root,
    open_split,
    resolve_category,
)
from adtr_core.data.validation import Holdout, Subset, anomalous_copies, holdout
from adtr_core.device import resolve_device
from adtr_core.features import FeatureSet, extract_features, map_reconstructions
from adtr_core.io import atomic_path, ensure_dir, read_json, write_json
from adtr_core.losses import l_img, l_norm, l_px
from adtr_core.masks import mask_to_grid
from adtr_core.memory import check_fits
from adtr_core.metrics import METRIC_KEYS, compute_metrics
from adtr_core.model import POSITION_EMBEDDINGS
from adtr_core.peers import PEER_LABELS, PEER_MODELS, PeerConfig, build_peer
from adtr_core.precision import autocast_dtype, check_precision, precision_name
from adtr_core.reconstructors import RECONSTRUCTORS, build_reconstructor
from adtr_core.scoring import ScoringConfig, score
from adtr_core.threads import ThreadRule, fit_threads
from adtr_core.train import Plateau, TrainConfig, Trainer

MIN_PEER_IMAGES = 2  # PaDiM's covariance and PatchCore's memory bank need more than one
MODELS = (*RECONSTRUCTORS, *PEER_MODELS)  # trained networks, then anomalib's fitted peers
LOSSES = ("norm", "px", "img")
SCORE_MODES = ("max_avgpool", "mean", "std", "max")
# Upper bounds far above any sensible run (the paper: 256 px, width 256, 4 + 4 layers); the
# memory estimate of adtr_core.memory refuses, before any work, what the machine cannot hold.
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
    # CPUs with bf16 instructions (adtr_core.precision), for features, training and scoring.
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


_DEFAULTS = {
    f.name: list(f.default) if isinstance(f.default, tuple) else f.default
    for f in dataclasses.fields(ExperimentConfig)
}


@dataclass
class RunResult:
    """What a run produced; everything here is also on disk in ``out_dir``."""

    out_dir: Path
    config: ExperimentConfig
    metrics: dict[str, float]
    history: pd.DataFrame
    scores: pd.DataFrame
    score_maps: np.ndarray | None = None  # (N, S, S) float16, when the data has masks
    wall_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- data


def anomaly_dataset(cfg: ExperimentConfig, train_ds):
    """The anomalies shown to ADTR+ in training: confetti on normal images, or CIFAR-100."""
    if cfg.anomalies == "confetti":
        return ConfettiDataset(train_ds, seed=cfg.seed + 1)
    if cfg.anomalies == "cifar100":
        return open_dataset(
            "cifar100",
            root=data_root(cfg),
            category=None,
            split="outlier",
            image_size=cfg.image_size,
        )
    raise ValueError(f"unknown anomalies {cfg.anomalies!r}: choose confetti or cifar100")


# --------------------------------------------------------------------------- models


def build_feature_extractor(cfg: ExperimentConfig) -> nn.Module:
    return build_backbone(
        BackboneConfig(
            name=cfg.backbone,
            stages=cfg.stages,
            weights=cfg.backbone_weights,
            image_size=cfg.image_size,
        )
    )


def build_model(cfg: ExperimentConfig, in_channels: int, grid: tuple[int, int]) -> nn.Module:
    """The reconstruction network named by ``cfg.model`` over ``in_channels`` x ``grid`` features."""
    return build_reconstructor(
        cfg.model,
        in_channels=in_channels,
        grid=grid,
        hidden_dim=cfg.hidden_dim,
        num_encoder_layers=cfg.num_encoder_layers,
        num_decoder_layers=cfg.num_decoder_layers,
        num_heads=cfg.num_heads,
        dim_feedforward=cfg.dim_feedforward,
        dropout=cfg.dropout,
        pos_embed=cfg.pos_embed,
    )


# --------------------------------------------------------------------------- training


def _features_dataset(*sets: FeatureSet, labels: list[int]):
    """A dataset of dicts {features, mask (h, w), label} over one or more feature sets.

    Pixel masks are brought to the feature grid as L_px expects them (``mask_to_grid``:
    a cell is anomalous when any of its pixels is).
    """
    feats = torch.cat([s.features for s in sets])  # (N, C, h, w)
    grid = tuple(feats.shape[-2:])
    masks = [
        mask_to_grid(s.masks, grid) if s.masks is not None else torch.zeros(len(s), *grid)
        for s in sets
    ]
    mask = torch.cat(masks)  # (N, h, w)
    lab = torch.cat([torch.full((len(s),), y, dtype=torch.long) for s, y in zip(sets, labels)])
    return _DictDataset(features=feats, mask=mask, label=lab)


class _DictDataset(torch.utils.data.Dataset):
    """Rows of equally long tensors, served as dicts."""

    def __init__(self, **tensors: torch.Tensor) -> None:
        self.tensors = tensors
        self.length = len(next(iter(tensors.values())))

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor]:
        return {k: v[idx] for k, v in self.tensors.items()}


def make_loss_fn(cfg: ExperimentConfig):
    """``loss_fn(model, batch)`` for the Trainer: L_norm, L_px or L_img (METHOD.md §3)."""

    def loss_fn(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        f = batch["features"]  # (B, C, h, w)
        f_hat = model(f)  # (B, C, h, w)
        if cfg.loss == "norm":
            return l_norm(f, f_hat)
        if cfg.loss == "px":
            return l_px(f, f_hat, batch["mask"], alpha=cfg.alpha)
        return l_img(f, f_hat, batch["label"], alpha=cfg.alpha, k=cfg.topk)

    return loss_fn


@torch.no_grad()
def predict_features(
    model: nn.Module,
    features: torch.Tensor,
    scoring: ScoringConfig,
    batch_size: int = 64,
    dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Score maps and image scores of precomputed features.

    Args:
        features: (N, C, h, w) backbone features.
        dtype: autocast dtype of the reconstruction (None: float32); scoring is float32.

    Returns:
        maps (N, S, S) float32 on the CPU, scores (N,).
    """

    def keep(f: torch.Tensor, f_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m, s = score(f, f_hat, scoring)  # (B, S, S), (B,)
        return m.float().cpu(), s.float().cpu()

    batches = map_reconstructions(model, features, keep, batch_size, dtype)
    return torch.cat([m for m, _ in batches]), torch.cat([s for _, s in batches])


def scoring_config(cfg: ExperimentConfig) -> ScoringConfig:
    return ScoringConfig(
        image_size=cfg.image_size, sigma=cfg.sigma, mode=cfg.score_mode, pool_size=cfg.pool_size
    )


def evaluate_features(
    model: nn.Module, test: FeatureSet, scoring: ScoringConfig, dtype: torch.dtype | None = None
):
    """Metrics, a per-image score table and the score maps of ``model`` on ``test``."""
    maps, scores = predict_features(model, test.features, scoring, dtype=dtype)
    labels = test.labels.numpy()
    masks = test.masks.numpy()[:, 0] if test.masks is not None else None
    metrics = compute_metrics(
        labels, scores.numpy(), masks=masks, maps=maps.numpy() if masks is not None else None
    )
    table = pd.DataFrame(
        {"path": test.paths, "defect": test.defects, "label": labels, "score": scores.numpy()}
    )
    return metrics, table, (maps.numpy().astype(np.float16) if masks is not None else None)


def init_output_bias(model: nn.Module, features: torch.Tensor) -> None:
    """Set the bias of ``model.output_proj`` to the mean training feature (per channel).

    Args:
        features: (N, C, h, w) training features.
    """
    proj = getattr(model, "output_proj", None)
    if proj is None or getattr(proj, "bias", None) is None:
        return
    with torch.no_grad():
        proj.bias.copy_(features.mean(dim=(0, 2, 3)).to(proj.bias))  # (C,)


def _init_from(model: nn.Module, source: str, device: torch.device) -> None:
    state = load_checkpoint(checkpoint_file(source), map_location=device)
    model.load_state_dict(state["model"])


def run_experiment(
    cfg: ExperimentConfig,
    out_dir: str | Path | None = None,
    progress: bool = True,
    overwrite: bool = False,
    threads: int | str | None = None,
) -> RunResult:
    """Train (or resume) and evaluate one configuration; write its results folder.

    The folder belongs to one configuration (:mod:`adtr_core.results_folder`): an equal
    config resumes or loads the run in it, another is refused before any work, and a
    second process writing to the same folder stops at its lock. ``config.json`` is
    written together with the finished results, so it always describes the checkpoint.

    Args:
        cfg: the experiment.
        out_dir: the results folder; default ``runs/<cfg.run_name()>``.
        progress: show tqdm progress bars.
        overwrite: move a previous run in ``out_dir`` aside (``<out_dir>.replaced-<time>/``)
            and start afresh, whatever its config.
        threads: torch CPU threads; None: ``ADTR_THREADS`` or the rule of
            ``adtr_core.threads`` (re-applied every epoch).

    Returns:
        The metrics, history, per-image scores and score maps; also written to ``out_dir``.

    Raises:
        ConfigMismatchError: ``out_dir`` holds a run of another config (without ``overwrite``).
        FolderBusyError: another process is writing to ``out_dir``.
        OutputError: ``out_dir`` cannot be created or written.
    """
    if cfg.model in PEER_MODELS:  # PaDiM / PatchCore: fitted, not trained
        return run_peer(cfg, out_dir, progress, threads, overwrite=overwrite)
    return _in_results_folder(cfg, out_dir, overwrite, progress, threads, _train_and_evaluate)


def _in_results_folder(cfg, out_dir, overwrite, progress, threads, work) -> RunResult:
    """Check the memory, claim and lock the results folder, then ``work(cfg, out, ...)``.

    The one path of trained runs and fitted peers: the memory estimate comes before any
    work or folder; a folder that the run created and left empty is removed again.
    """
    start = time.perf_counter()
    check_fits(cfg, device=str(resolve_device(cfg.device)))  # before any work or folder
    category = resolve_category(cfg)
    cfg = dataclasses.replace(cfg, category=category)
    out = Path(out_dir) if out_dir is not None else paths.runs_dir() / cfg.run_name()
    created = not out.exists()
    ensure_dir(out, "results folder")  # config.json comes last: it marks the run finished
    try:
        with results_folder.folder_lock(out):
            moved = results_folder.claim(out, cfg.to_dict(), _DEFAULTS, overwrite=overwrite)
            if moved is not None:
                warnings.warn(f"the previous run in {out} was moved to {moved}", stacklevel=3)
            return work(cfg, out, progress, start, threads)
    finally:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # a run that failed before its first checkpoint leaves no folder


def _train_and_evaluate(
    cfg: ExperimentConfig, out: Path, progress: bool, start: float, threads: int | str | None
):
    category = cfg.category
    thread_rule = ThreadRule(threads)
    thread_rule.apply()
    device = resolve_device(cfg.device)
    dtype = autocast_dtype(cfg.precision, device)
    backbone = build_feature_extractor(cfg).to(device)
    train_ds, test_ds = open_split(cfg, "train"), open_split(cfg, "test")
    check_fits(cfg, len(train_ds) + len(test_ds), str(device))
    extract = dict(device=device, progress=progress, precision=cfg.precision)
    split = holdout(len(train_ds), cfg.val_fraction, cfg.seed)
    all_train_f = extract_features(backbone, train_ds, **extract)
    train_f = all_train_f.subset(split.train) if split.held_out else all_train_f
    val = validation_features(backbone, train_ds, all_train_f, split, cfg.seed, extract)
    if split.held_out:
        train_ds = Subset(train_ds, split.train)  # what ADTR+'s confetti is made from
    test_f = extract_features(backbone, test_ds, **extract)
    if cfg.loss == "norm":
        train_data = _features_dataset(train_f, labels=[0])
    else:
        anomalies = anomaly_dataset(cfg, train_ds)
        anom_f = extract_features(backbone, anomalies, **extract)
        n = cfg.num_anomalies or len(train_f)
        anom_f = anom_f.subset(list(range(min(n, len(anom_f)))))
        train_data = _features_dataset(train_f, anom_f, labels=[0, 1])

    torch.manual_seed(cfg.seed)
    model = build_model(cfg, backbone.channels, backbone.grid).to(device)
    if cfg.init_from is not None:
        _init_from(model, cfg.init_from, device)
    elif cfg.init_output_bias:
        init_output_bias(model, train_f.features)
    scoring = scoring_config(cfg)

    def eval_fn(m: nn.Module) -> dict[str, float]:
        out = validation_auroc(m, val, scoring, dtype) if val is not None else {}
        if cfg.eval_every and trainer.epoch % cfg.eval_every == 0:
            out.update(evaluate_features(m, test_f, scoring, dtype)[0])
        return out

    train_sets = [train_f] if cfg.loss == "norm" else [train_f, anom_f]
    fingerprint = data_fingerprint(*train_sets)
    set_aside_stale_checkpoint(out / "checkpoint.pt", fingerprint)
    train_config = cfg.train_config(device, num_train=len(train_data), progress=progress)
    if val is not None:  # validation every val_every epochs and after the last one
        train_config.eval_every = _gcd_every(cfg.val_every, cfg.eval_every)
    trainer = Trainer(
        model,
        make_loss_fn(cfg),
        train_data,
        train_config,
        eval_fn=eval_fn if (cfg.eval_every or val is not None) else None,
        checkpoint_path=out / "checkpoint.pt",
        checkpoint_extra={"config": cfg.to_dict(), "train_data": fingerprint},
        thread_rule=thread_rule,
    )
    history = pd.DataFrame(trainer.fit())
    metrics, scores, maps = evaluate_features(model, test_f, scoring, dtype)
    if val is not None:
        metrics.update(validation_auroc(model, val, scoring, dtype))
        metrics["num_val"] = len(split.held_out)
        metrics["steps"] = int(trainer.epoch * math.ceil(len(train_data) / cfg.batch_size))
        warning = self_check_warning(metrics["val_auroc"])
        if warning:
            metrics["self_check"] = warning
            warnings.warn(warning, SelfCheckWarning, stacklevel=3)
        elif progress:
            print(f"self-check: validation AUROC {metrics['val_auroc']:.3f} on synthetic anomalies")
    metrics.update(
        precision=precision_name(cfg.precision, device),
        category=category,
        num_train=len(train_f),
        num_test=len(test_f),
        num_test_anomalous=int(test_f.labels.sum()),
    )
    wall = time.perf_counter() - start
    metrics["wall_s"] = round(wall, 2)
    _write_results(out, cfg, metrics, history, scores, maps)
    return RunResult(out, cfg, metrics, history, scores, maps, wall_s=wall)


def _gcd_every(val_every: int, eval_every: int) -> int:
    """Epochs between eval_fn calls that serve both the validation and the test cadence."""
    every = [e for e in (val_every, eval_every) if e]
    return math.gcd(*every) if every else 0


# --------------------------------------------------------------------------- validation

SELF_CHECK_AUROC = 0.9
"""Below this validation AUROC on synthetic anomalies a run warns that it has not learned.

Set from the development data at the quick profile (400 steps): bottle 0.98 and bottle-small
0.95, where ADTR detects (test image AUROC 0.99), against 0.70-0.84 on bottle-unaligned,
where it does not (0.45-0.63; docs/fidelity.md).
"""


class SelfCheckWarning(UserWarning):
    """A finished run whose validation AUROC says that the model has not learned its images."""


@dataclass
class ValidationFeatures:
    """Features of the validation split: the held-out normal images and their anomalous copies."""

    normal: FeatureSet
    anomalous: dict[str, FeatureSet]


def validation_features(
    backbone: nn.Module, train_ds, all_train: FeatureSet, split: Holdout, seed: int, extract: dict
) -> ValidationFeatures | None:
    """The validation split's features (None when nothing is held out)."""
    if not split.held_out:
        return None
    held = Subset(train_ds, split.held_out)
    copies = anomalous_copies(held, seed)
    return ValidationFeatures(
        normal=all_train.subset(split.held_out),
        anomalous={k: extract_features(backbone, ds, **extract) for k, ds in copies.items()},
    )


def validation_auroc(
    model: nn.Module, val: ValidationFeatures, scoring: ScoringConfig, dtype=None
) -> dict[str, float]:
    """``val_auroc`` (mean over the kinds) and ``val_<kind>``: held-out normal vs anomalous."""
    from sklearn.metrics import roc_auc_score

    _, normal = predict_features(model, val.normal.features, scoring, dtype=dtype)
    out = {}
    for kind, fs in val.anomalous.items():
        _, anomalous = predict_features(model, fs.features, scoring, dtype=dtype)
        y = np.r_[np.zeros(len(normal)), np.ones(len(anomalous))]
        out[f"val_{kind}"] = float(roc_auc_score(y, np.r_[normal.numpy(), anomalous.numpy()]))
    out["val_auroc"] = float(np.mean(list(out.values())))
    return out


def self_check_warning(val_auroc: float) -> str | None:
    """One line when the validation AUROC is below :data:`SELF_CHECK_AUROC`, else None."""
    if val_auroc >= SELF_CHECK_AUROC:
        return None
    return (
        f"self-check: validation AUROC {val_auroc:.3f} < {SELF_CHECK_AUROC} on synthetic "
        f"anomalies of held-out training images: the model has not learned these images; "
        f"try more steps (--steps auto), or --profile paper on a GPU"
    )


def data_fingerprint(*sets: FeatureSet) -> str:
    """A sha256 of the training features and labels: which data a checkpoint was trained on."""
    hasher = hashlib.sha256()
    for fs in sets:
        hasher.update(fs.features.numpy().tobytes())
        hasher.update(fs.labels.numpy().tobytes())
    return hasher.hexdigest()


def set_aside_stale_checkpoint(path: Path, fingerprint: str) -> Path | None:
    """Move ``path`` aside when it was trained on other data (e.g. a rebuilt demo set).

    The run's name hashes its config, not the files the data set holds; a checkpoint from
    other training data must not be resumed. It is renamed, not deleted, to
    ``checkpoint.stale-<its data fingerprint>.pt``. Checkpoints without a fingerprint
    (older runs) are resumed as before.

    Returns:
        the new path of the moved checkpoint, or None when nothing was moved.
    """
    if not path.exists():
        return None
    stored = (load_checkpoint(path, fix=RUN_FIX).get("extra") or {}).get("train_data")
    if stored is None or stored == fingerprint:
        return None
    stale = path.with_name(f"{path.stem}.stale-{stored[:12]}{path.suffix}")
    path.replace(stale)
    warnings.warn(
        f"{path} was trained on other data than this run's (the data set changed since); it "
        f"was moved to {stale.name} and the run starts afresh",
        stacklevel=2,
    )
    return stale


def _write_results(
    out: Path, cfg: ExperimentConfig, metrics, history: pd.DataFrame, scores: pd.DataFrame, maps
) -> None:
    with atomic_path(out / "history.csv") as tmp:
        history.to_csv(tmp, index=False)
    with atomic_path(out / "scores.csv") as tmp:
        scores.to_csv(tmp, index=False)
    if maps is not None:
        with atomic_path(out / "score_maps.npz") as tmp:
            np.savez_compressed(tmp, maps=maps)
    write_json(out / "metrics.json", metrics_for_json(metrics))
    write_json(out / "config.json", cfg.to_dict())  # last: it marks the run as finished


def metrics_for_json(metrics: dict[str, Any]) -> dict[str, Any]:
    """``metrics`` with absent (NaN) metrics written as null and listed under ``absent``."""
    out = dict(metrics)
    absent = {}
    for key in METRIC_KEYS:
        value = out.get(key)
        if isinstance(value, float) and math.isnan(value):
            out[key] = None
            absent[key] = absence_reason(key, metrics)
    if absent:
        out["absent"] = absent
    return out


def absence_reason(key: str, metrics: dict[str, Any]) -> str:
    """Why a metric of ``metrics`` is absent, in a few words."""
    if key != "image_auroc":
        return metrics.get("pixel_note") or "the test set has no pixel masks (image labels only)"
    n, n_anom = metrics.get("num_test"), metrics.get("num_test_anomalous")
    if n is not None and n_anom == 0:
        return "the test set has no anomalous images"
    if n is not None and n_anom == n:
        return "the test set has no normal images"
    return "undefined on this test set"


def metrics_from_json(stored: dict[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`metrics_for_json`: absent metrics are NaN again."""
    out = {k: v for k, v in stored.items() if k != "absent"}
    for key in METRIC_KEYS:
        if key in out and out[key] is None:
            out[key] = math.nan
    return out


def load_result(out_dir: str | Path) -> RunResult:
    """Read a results folder written by :func:`run_experiment`."""
    out = Path(out_dir)
    if not (out / "metrics.json").is_file():
        raise FileNotFoundError(f"{out} holds no finished run (metrics.json is missing)")
    maps_file = out / "score_maps.npz"
    return RunResult(
        out_dir=out,
        config=ExperimentConfig.from_dict(read_json(out / "config.json")),
        metrics=metrics_from_json(read_json(out / "metrics.json")),
        history=pd.read_csv(out / "history.csv"),
        scores=pd.read_csv(out / "scores.csv"),
        score_maps=np.load(maps_file)["maps"] if maps_file.is_file() else None,
        wall_s=float(read_json(out / "metrics.json").get("wall_s", 0.0)),
    )


# --------------------------------------------------------------------------- peers


def peer_config(cfg: ExperimentConfig) -> PeerConfig:
    """The peer settings of an experiment: its backbone, weights, image size and seed.

    ``cfg.stages`` is ADTR's choice; the peers keep their own (``peers.DEFAULT_STAGES``)
    unless it was changed from ADTR's default.
    """
    adtr_default = ExperimentConfig.__dataclass_fields__["stages"].default
    stages = None if tuple(cfg.stages) == tuple(adtr_default) else cfg.stages
    return PeerConfig(
        model=cfg.model,
        backbone=cfg.backbone,
        weights=cfg.backbone_weights,
        stages=stages,
        image_size=cfg.image_size,
        seed=cfg.seed,
    )


def _stack_images(dataset) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    items = [dataset[i] for i in range(len(dataset))]
    return torch.stack([it["image"] for it in items]), items  # (N, 3, S, S)


def run_peer(
    cfg: ExperimentConfig,
    out_dir: str | Path | None = None,
    progress: bool = True,
    threads: int | str | None = None,
    overwrite: bool = False,
) -> RunResult:
    """Fit a peer on ``cfg``'s training images, evaluate it on the test images, write results.

    The same data, image size, backbone weights and metrics as
    :func:`adtr_core.experiment.run_experiment` (the images ADTR holds out for validation are
    held out here too, so both train on the same images); the results folder holds ``config.json``,
    ``history.csv`` (one row: fit and test times), ``metrics.json``, ``scores.csv`` and
    ``score_maps.npz``. ``threads``: torch threads of the fit; None: the thread rule, even
    under a fixed ``ADTR_THREADS`` (:func:`adtr_core.threads.fit_threads`). The folder is
    claimed and locked as by :func:`run_experiment` (``overwrite`` as there).
    """
    return _in_results_folder(cfg, out_dir, overwrite, progress, threads, _fit_peer)


def _fit_peer(
    cfg: ExperimentConfig, out: Path, progress: bool, start: float, threads: int | str | None
) -> RunResult:
    category = cfg.category
    device = resolve_device(cfg.device)
    train_ds = open_split(cfg, "train")
    if len(train_ds) < MIN_PEER_IMAGES:
        raise ValueError(
            f"too few training images for {PEER_LABELS[cfg.model]}: {len(train_ds)}, it "
            f"needs at least {MIN_PEER_IMAGES} (a mean and covariance per patch position)"
        )
    peer = build_peer(peer_config(cfg)).to(device)
    split = holdout(len(train_ds), cfg.val_fraction, cfg.seed)  # ADTR's training images
    if split.held_out:
        train_ds = Subset(train_ds, split.train)
    train_images, _ = _stack_images(train_ds)
    test_ds = open_split(cfg, "test")
    test_images, items = _stack_images(test_ds)
    with fit_threads(threads):
        t0 = time.perf_counter()
        peer.fit(train_images)
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        maps, scores = peer.predict(test_images)
        test_s = time.perf_counter() - t0
    if progress:
        print(
            f"{PEER_LABELS[cfg.model]} {category}: fitted on {len(train_images)} images in "
            f"{fit_s:.1f} s, {len(test_images)} test images in {test_s:.1f} s"
        )

    labels = np.array([int(it["label"]) for it in items])
    masks = torch.stack([it["mask"][0] for it in items]).numpy() if test_ds.has_masks else None
    metrics = compute_metrics(
        labels, scores.numpy(), masks=masks, maps=maps.numpy() if masks is not None else None
    )
    metrics.update(
        category=category,
        num_train=len(train_images),
        num_test=len(test_images),
        num_test_anomalous=int(labels.sum()),
        state_bytes=peer.state_size_bytes(),
    )
    table = pd.DataFrame(
        {
            "path": [str(it["path"]) for it in items],
            "defect": [str(it["defect"]) for it in items],
            "label": labels,
            "score": scores.numpy(),
        }
    )
    history = pd.DataFrame([{"fit_s": round(fit_s, 3), "test_s": round(test_s, 3)}])
    maps16 = maps.numpy().astype(np.float16) if masks is not None else None
    wall = time.perf_counter() - start
    metrics["wall_s"] = round(wall, 2)
    _write_results(out, cfg, metrics, history, table, maps16)
    return RunResult(out, cfg, metrics, history, table, maps16, wall_s=wall)
