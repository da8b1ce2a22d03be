"""The experiment layer: one config → data, features, training, evaluation, a results folder.

This is the only place where the stages meet (STYLE.md, rule 2): ``data`` gives
images (``data.sources`` says which), ``backbone`` turns them into features (computed
once and cached by ``features``), a reconstruction network from the ``reconstructors``
registry is trained by the one ``train.Trainer`` with a loss from ``losses`` (its input
jittered, :func:`jitter`; the target the clean features), and
``scoring`` plus ``metrics`` evaluate it. The peers (PaDiM, PatchCore of ``peers``) are
fitted instead of trained, into the same results folder (:func:`run_peer`). A saved run
is rebuilt and re-evaluated by :mod:`adtr_core.runs.saved_runs`.

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
folder is refused (:mod:`adtr_core.runs.results_folder`; configs are compared as runs, by
:func:`~adtr_core.runs.config.config_changes`). Every value of a config is checked
against its field's type and range when it is built (:meth:`ExperimentConfig.check_values`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from adtr_core import paths
from adtr_core.data import open_dataset
from adtr_core.data.confetti import ConfettiDataset
from adtr_core.data.sources import (
    data_root,
    open_split,
    resolve_category,
)
from adtr_core.data.validation import Subset, holdout
from adtr_core.io import ensure_dir, read_json
from adtr_core.method.backbone import BackboneConfig, build_backbone
from adtr_core.method.losses import l_img, l_norm, l_px
from adtr_core.method.masks import mask_to_grid
from adtr_core.method.metrics import compute_metrics
from adtr_core.method.reconstructors import build_reconstructor
from adtr_core.runs import results_folder
from adtr_core.runs.checkpoints import RUN_FIX, checkpoint_file, load_checkpoint
from adtr_core.runs.config import ExperimentConfig, config_changes
from adtr_core.runs.device import resolve_device
from adtr_core.runs.evaluation import (
    SelfCheckWarning,
    evaluate_features,
    scoring_config,
    self_check_warning,
    validation_auroc,
    validation_features,
)
from adtr_core.runs.features import FeatureSet, extract_features
from adtr_core.runs.memory import check_fits
from adtr_core.runs.peers import PEER_LABELS, PEER_MODELS, PeerConfig, build_peer
from adtr_core.runs.precision import autocast_dtype, precision_name
from adtr_core.runs.results import RunResult, write_results
from adtr_core.runs.threads import ThreadRule, fit_threads, run_threads
from adtr_core.runs.train import Trainer

MIN_PEER_IMAGES = 2  # PaDiM's covariance and PatchCore's memory bank need more than one
UNTESTED = "test_set"  # the metrics.json key of a validation-only run (no test image scored)


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
        pos_scale=cfg.pos_scale,
        cross_qk_init=cfg.cross_qk_init,
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


def jitter(f: torch.Tensor, scale: float) -> torch.Tensor:
    """``f`` (B, C, h, w) plus Gaussian noise of sd ``scale * |f(:, u)| / C`` at each position u
    (UniAD's feature jitter); ``scale`` 0 returns ``f``."""
    if scale == 0:
        return f
    sd = f.norm(dim=1, keepdim=True) * (scale / f.shape[1])  # (B, 1, h, w)
    return f + torch.randn_like(f) * sd


def make_loss_fn(cfg: ExperimentConfig):
    """``loss_fn(model, batch)`` for the Trainer: L_norm, L_px or L_img (METHOD.md §3)."""

    def loss_fn(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        f = batch["features"]  # (B, C, h, w)
        f_hat = model(jitter(f, cfg.feature_jitter) if model.training else f)  # (B, C, h, w)
        if cfg.loss == "norm":
            return l_norm(f, f_hat)
        if cfg.loss == "px":
            return l_px(f, f_hat, batch["mask"], alpha=cfg.alpha)
        return l_img(f, f_hat, batch["label"], alpha=cfg.alpha, k=cfg.topk)

    return loss_fn


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
    test: bool = True,
) -> RunResult:
    """Train (or resume) and evaluate one configuration; write its results folder.

    The folder belongs to one configuration (:mod:`adtr_core.runs.results_folder`): an equal
    config resumes or loads the run in it, another is refused before any work, and a
    second process writing to the same folder stops at its lock. ``config.json`` is
    written together with the finished results, so it always describes the checkpoint.

    Args:
        cfg: the experiment.
        out_dir: the results folder; default ``runs/<cfg.run_name()>``.
        progress: show tqdm progress bars.
        overwrite: move a previous run in ``out_dir`` aside (``<out_dir>.replaced-<time>/``)
            and start afresh, whatever its config.
        threads: torch CPU threads of training, over the config's ``threads``; "auto": the
            rule of ``adtr_core.runs.threads`` (re-applied every epoch); None: the config's,
            else ``ADTR_THREADS``, else every core. The count is stored in the config, so it
            is part of the results folder's name.

    Returns:
        The metrics, history, per-image scores and score maps; also written to ``out_dir``.

    Raises:
        ConfigMismatchError: ``out_dir`` holds a run of another config (without ``overwrite``).
        FolderBusyError: another process is writing to ``out_dir``.
        OutputError: ``out_dir`` cannot be created or written.
    """
    if cfg.model in PEER_MODELS:  # PaDiM / PatchCore: fitted, not trained
        if not test:
            raise ValueError(
                f"{PEER_LABELS[cfg.model]} has no validation-only run: it is fitted, not trained, "
                "and nothing of it is chosen by validation; run it with test=True"
            )
        return run_peer(cfg, out_dir, progress, threads, overwrite=overwrite)
    # a partial adds no frame, so the self-check's warning still points at the caller
    work = functools.partial(_train_and_evaluate, test=test)
    return _in_results_folder(cfg, out_dir, overwrite, progress, threads, work)


def resolve_config(
    cfg: ExperimentConfig, threads: int | str | None = None, default_threads: int | None = None
) -> ExperimentConfig:
    """The config as :func:`run_experiment` stores it, whose run name is its folder's name:
    the category filled in and, for a trained run, its thread count
    (:func:`adtr_core.runs.threads.run_threads` of ``threads``, else the config's).

    Args:
        cfg: an experiment config.
        threads: an explicit thread count (or "auto"), over the config's.
        default_threads: the count when none is given anywhere (default: every core).
    """
    changes: dict[str, Any] = {"category": resolve_category(cfg)}
    if cfg.model not in PEER_MODELS:  # a fitted peer's scores do not depend on the count
        given = threads if threads is not None else cfg.threads
        changes["threads"] = run_threads(given, default_threads)
    return dataclasses.replace(cfg, **changes)


def _in_results_folder(cfg, out_dir, overwrite, progress, threads, work) -> RunResult:
    """Check the memory, claim and lock the results folder, then ``work(cfg, out, ...)``.

    The one path of trained runs and fitted peers: the memory estimate comes before any
    work or folder; a folder that the run created and left empty is removed again.
    """
    start = time.perf_counter()
    check_fits(cfg, device=str(resolve_device(cfg.device)))  # before any work or folder
    cfg = resolve_config(cfg, threads)
    out = Path(out_dir) if out_dir is not None else paths.runs_dir() / cfg.run_name()
    created = not out.exists()
    ensure_dir(out, "results folder")  # config.json comes last: it marks the run finished
    try:
        with results_folder.folder_lock(out):
            moved = results_folder.claim(out, cfg.to_dict(), config_changes, overwrite=overwrite)
            if moved is not None:
                warnings.warn(f"the previous run in {out} was moved to {moved}", stacklevel=3)
            return work(cfg, out, progress, start, threads)
    finally:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # a run that failed before its first checkpoint leaves no folder


def _train_and_evaluate(
    cfg: ExperimentConfig,
    out: Path,
    progress: bool,
    start: float,
    threads: int | str | None,
    test: bool = True,
):
    category = cfg.category
    untested = _untested(out)  # the validation-only run this folder holds, if any
    if not test and untested is None and (out / "metrics.json").is_file():
        raise ValueError(
            f"{out} holds a run already scored on the test set: a validation-only run there "
            "would set its test results aside; give the validation-only run another folder"
        )
    thread_rule = ThreadRule(cfg.threads)  # resolved: a count, or "auto"
    thread_rule.apply()
    device = resolve_device(cfg.device)
    dtype = autocast_dtype(cfg.precision, device)
    backbone = build_feature_extractor(cfg).to(device)
    train_ds = open_split(cfg, "train")
    test_ds = open_split(cfg, "test") if test else None  # a validation-only run reads no test image
    check_fits(cfg, len(train_ds) + (len(test_ds) if test_ds is not None else 0), str(device))
    extract = dict(device=device, progress=progress, precision=cfg.precision)
    split = holdout(len(train_ds), cfg.val_fraction, cfg.seed)
    if not test and not split.held_out:
        raise ValueError(
            f"a validation-only run needs a validation split, but val_fraction="
            f"{cfg.val_fraction} holds none out of {len(train_ds)} training images"
        )
    all_train_f = extract_features(backbone, train_ds, **extract)
    train_f = all_train_f.subset(split.train) if split.held_out else all_train_f
    val = validation_features(
        backbone, train_ds, all_train_f, split, cfg.seed, extract, cfg.val_kinds
    )
    if split.held_out:
        train_ds = Subset(train_ds, split.train)  # what ADTR+'s confetti is made from
    test_f = extract_features(backbone, test_ds, **extract) if test_ds is not None else None
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
    val_every, test_every = cfg.cadence(len(train_data))
    test_every = test_every if test_f is not None else 0

    def eval_fn(m: nn.Module) -> dict[str, float]:
        # called on the finer of the two cadences and after the last epoch; each part keeps its own
        last = trainer.epoch >= trainer.config.epochs
        out = {}
        if val is not None and (last or (val_every and trainer.epoch % val_every == 0)):
            out.update(validation_auroc(m, val, scoring, dtype))
        if test_every and trainer.epoch % test_every == 0:
            out.update(evaluate_features(m, test_f, scoring, dtype)[0])
        return out

    train_sets = [train_f] if cfg.loss == "norm" else [train_f, anom_f]
    fingerprint = data_fingerprint(*train_sets)
    set_aside_stale_checkpoint(out / "checkpoint.pt", fingerprint)
    train_config = cfg.train_config(device, num_train=len(train_data), progress=progress)
    if val is not None:  # validation every val_every epochs and after the last one
        train_config.eval_every = _gcd_every(val_every, test_every)
    trainer = Trainer(
        model,
        make_loss_fn(cfg),
        train_data,
        train_config,
        eval_fn=eval_fn if (test_every or val is not None) else None,
        checkpoint_path=out / "checkpoint.pt",
        checkpoint_extra={"config": cfg.to_dict(), "train_data": fingerprint},
        thread_rule=thread_rule,
    )
    history = pd.DataFrame(trainer.fit())
    if test_f is not None:
        metrics, scores, maps = evaluate_features(model, test_f, scoring, dtype)
    else:
        metrics, scores, maps = {}, None, None
    if val is not None:
        metrics.update(validation_auroc(model, val, scoring, dtype))
        metrics["num_val"] = len(split.held_out)
        metrics["steps"] = int(trainer.epoch * math.ceil(len(train_data) / cfg.batch_size))
        warning = self_check_warning(metrics["val_auroc"])
        if warning:
            metrics["self_check"] = warning
            warnings.warn(warning, SelfCheckWarning, stacklevel=4)  # run_experiment's caller
        elif progress:
            print(f"self-check: validation AUROC {metrics['val_auroc']:.3f} on synthetic anomalies")
    metrics.update(
        precision=precision_name(cfg.precision, device),
        category=category,
        num_train=len(train_f),
    )
    if test_f is not None:
        metrics.update(num_test=len(test_f), num_test_anomalous=int(test_f.labels.sum()))
    else:
        metrics[UNTESTED] = "not scored: a validation-only run (run it with test=True to score it)"
    wall = time.perf_counter() - start  # with a validation-only run's training time before it
    wall += float((untested or {}).get("wall_s", 0.0))
    metrics["wall_s"] = round(wall, 2)
    write_results(out, cfg, metrics, history, scores, maps)
    return RunResult(out, cfg, metrics, history, scores, maps, wall_s=wall)


def _untested(out: Path) -> dict | None:
    """The metrics of the validation-only run that ``out`` holds, or None."""
    try:
        stored = read_json(out / "metrics.json")
    except (OSError, ValueError):
        return None
    return stored if UNTESTED in stored else None


def _gcd_every(val_every: int, eval_every: int) -> int:
    """Epochs between eval_fn calls that serve both the validation and the test cadence."""
    every = [e for e in (val_every, eval_every) if e]
    return math.gcd(*every) if every else 0


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
    :func:`adtr_core.runs.experiment.run_experiment` (the images ADTR holds out for validation are
    held out here too, so both train on the same images); the results folder holds ``config.json``,
    ``history.csv`` (one row: fit and test times), ``metrics.json``, ``scores.csv`` and
    ``score_maps.npz``. ``threads``: torch threads of the fit; None: the thread rule, even
    under a fixed ``ADTR_THREADS`` (:func:`adtr_core.runs.threads.fit_threads`). The folder is
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
    write_results(out, cfg, metrics, history, table, maps16)
    return RunResult(out, cfg, metrics, history, table, maps16, wall_s=wall)
