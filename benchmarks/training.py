"""Training: an epoch on cached features against one that recomputes them, time-to-metric.

- Epoch cost: the quick profile's training configuration (notebook ``02_train_category``'s
  declared parameters, overridden by its section of ``adtr_core/runs/profiles/quick.yaml``) on
  the demo data, trained by the package's ``Trainer``: once on cached backbone features
  (``extract_features``), once computing the features from the images inside every step.
  Both variants use the same model, loss (L_norm), batch size and optimiser; the two
  are interleaved epoch by epoch. The dataset keeps decoded images in memory, so the
  recomputing variant pays for the backbone, not for PNG decoding.
- Time-to-metric: the same configuration run by ``run_experiment`` with ``eval_every``
  set, in a temporary results folder; the first evaluated epoch whose metrics are all
  within ``TOLERANCE`` of the final ones gives the training time needed to reach them.
- GPU (CUDA only): training images per second for EfficientNet-B4 features at 256x256,
  on cached features and with the backbone in the step, under bf16 autocast; and the
  number of host synchronisations inside one training step (should be 0).
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
import time
import warnings
from typing import Any

import torch
from torch.utils.data import Dataset, Subset

from adtr_core.data.sources import open_split
from adtr_core.method.losses import l_norm
from adtr_core.method.weights import BackboneWeightsError
from adtr_core.runs.config import ExperimentConfig
from adtr_core.runs.experiment import build_feature_extractor, build_model, run_experiment
from adtr_core.runs.features import extract_features
from adtr_core.runs.train import TrainConfig, Trainer
from benchmarks.harness import Plan, interleaved, median, ratio

PROFILE = "quick"
SECTION = "02_train_category"
TOLERANCE = 0.01  # "reached the final metrics": within 0.01 AUROC / AU-PRO of them
METRICS = ("image_auroc", "pixel_auroc", "pixel_aupro")


def profile_config(plan: Plan, device: torch.device) -> tuple[ExperimentConfig, str]:
    """The quick profile's training configuration, and a note on where it came from.

    As papermill would run notebook 02: its declared parameters, overridden by the quick
    profile's section when there is one; ADTR's defaults fill in the rest.
    """
    from adtr_core import paths
    from adtr_core.figures.pipeline import declared_parameters
    from adtr_core.runs.profiles import profile_params

    fields = {f.name for f in dataclasses.fields(ExperimentConfig)}
    params: dict[str, Any] = {}
    sources = []
    notebook = paths.notebooks_dir() / f"{SECTION}.ipynb"
    if notebook.is_file():
        params.update(declared_parameters(notebook))
        sources.append(f"{SECTION}.ipynb parameters")
    try:
        params.update(profile_params(PROFILE, SECTION))
        sources.append(f"{PROFILE}.yaml:{SECTION}")
    except (ValueError, OSError):
        sources.append(f"no {PROFILE}.yaml:{SECTION}")
    values = {k: v for k, v in params.items() if k in fields and k not in ("device", "data")}
    values["data"] = "demo"  # the benchmark's data, whatever the profile resolves to
    values.update(plan.metric_overrides)
    cfg = ExperimentConfig.from_dict({**values, "device": device.type})
    return cfg, " + ".join(sources)


def _backbone(cfg: ExperimentConfig) -> tuple[Any, ExperimentConfig, str]:
    try:
        return build_feature_extractor(cfg), cfg, ""
    except BackboneWeightsError:  # e.g. efficientnet_b4 without cached weights: time it anyway
        cfg = dataclasses.replace(cfg, backbone_weights="random")
        return build_feature_extractor(cfg), cfg, " (random backbone weights)"


class _ImagesOnly(Dataset):
    """The images of a dataset (drops the string fields that need no collating)."""

    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": self.base[i]["image"]}


def _train_config(cfg: ExperimentConfig, device: torch.device) -> TrainConfig:
    return cfg.train_config(device, epochs=0, checkpoint_every=0, progress=False)


def _epoch_runner(trainer: Trainer):
    def one_epoch() -> None:
        trainer.config.epochs += 1
        trainer.fit()

    return one_epoch


def epoch_cost(plan: Plan, device: torch.device) -> dict[str, Any]:
    """Seconds per epoch on cached features and recomputing them, and their ratio."""
    cfg, note = profile_config(plan, device)
    backbone, cfg, weights_note = _backbone(cfg)
    backbone = backbone.to(device)
    data = open_split(cfg, "train")
    if plan.train_images is not None and plan.train_images < len(data):
        data = Subset(data, range(plan.train_images))
    start = time.perf_counter()
    feats = extract_features(backbone, data, batch_size=cfg.batch_size, device=device, cache=False)
    extract_s = time.perf_counter() - start

    torch.manual_seed(cfg.seed)
    model = build_model(cfg, backbone.channels, backbone.grid)

    def cached_loss(m, batch):
        f = batch["features"]  # (B, C, h, w)
        return l_norm(f, m(f))

    def recompute_loss(m, batch):
        f = backbone(batch["image"])  # (B, C, h, w), computed in the step
        return l_norm(f, m(f))

    cached = Trainer(model, cached_loss, feats.as_dataset(), _train_config(cfg, device))
    recompute = Trainer(model, recompute_loss, _ImagesOnly(data), _train_config(cfg, device))
    times = interleaved(
        {"cached": _epoch_runner(cached), "recompute": _epoch_runner(recompute)},
        plan.train_rounds,
        device,
    )
    n = len(data)
    return {
        "config": _config_summary(cfg),
        "source": note + weights_note,
        "images": n,
        "steps": math.ceil(n / cfg.batch_size),
        "extract_s": extract_s,
        "epoch_s": {k: median(v) for k, v in times.items()},
        "ratio": ratio(times["recompute"], times["cached"]),
        "times_s": times,
    }


def _config_summary(cfg: ExperimentConfig) -> dict[str, Any]:
    keys = (
        "category",
        "backbone",
        "image_size",
        "model",
        "hidden_dim",
        "num_encoder_layers",
        "num_decoder_layers",
        "dim_feedforward",
        "epochs",
        "batch_size",
    )
    return {k: getattr(cfg, k) for k in keys}


def time_to_metric(plan: Plan, device: torch.device) -> dict[str, Any]:
    """Train the quick configuration with periodic evaluation; when were the final metrics reached?"""
    cfg, note = profile_config(plan, device)
    full, milestones = cfg.epoch_budget(len(open_split(cfg, "train")))
    epochs = full if plan.metric_epochs is None else min(full, plan.metric_epochs)
    every = max(1, epochs // 10)
    cfg = dataclasses.replace(
        cfg, steps=None, epochs=epochs, lr_milestones=milestones, eval_every=every
    )
    _, cfg, weights_note = _backbone(cfg)
    with tempfile.TemporaryDirectory(prefix="adtr-bench-") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = run_experiment(cfg, out_dir=tmp, progress=False)
    hist = result.history
    final = {k: float(result.metrics[k]) for k in METRICS if _finite(result.metrics.get(k))}
    evaluated = hist.dropna(subset=[k for k in final if k in hist.columns] or None)
    reached_epoch, reached_s = None, None
    cum = hist.set_index("epoch")["time_s"].cumsum()
    for _, row in evaluated.iterrows():
        if all(row.get(k, -math.inf) >= v - TOLERANCE for k, v in final.items()):
            reached_epoch = int(row["epoch"])
            reached_s = float(cum.loc[reached_epoch])
            break
    return {
        "config": _config_summary(cfg),
        "source": note + weights_note,
        "eval_every": every,
        "final_metrics": final,
        "reached_epoch": reached_epoch,
        "reached_train_s": reached_s,
        "train_s": float(hist["time_s"].sum()),
        "wall_s": float(result.wall_s),
        "tolerance": TOLERANCE,
    }


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def gpu_training(plan: Plan, device: torch.device, batches: int = 8) -> dict[str, Any]:
    """CUDA only: EfficientNet-B4 training images/s (cached features, backbone in the step).

    Features and images are generated on the device, so neither variant copies from the
    host; the step is the package's (L_norm, clipping, AdamW) under bf16 autocast. The
    number of host synchronisations inside one step is counted with CUDA's sync debug mode.
    """
    if device.type != "cuda":
        return {"measured": False, "note": "not measured: no CUDA device on this host"}
    from benchmarks.inference import build_pipeline
    from benchmarks.peer import step_trainer

    pipe = build_pipeline("efficientnet_b4", plan, device)  # bf16, channels-last
    model = pipe.model.train()
    step = step_trainer(model, device, bf16=True)
    b = 16
    x = pipe.images(b)
    f = pipe.features(x).detach()
    with_backbone = step_trainer(
        model, device, bf16=True, loss_fn=lambda m, images: l_norm(g := pipe.backbone(images), m(g))
    )

    def cached() -> None:
        for _ in range(batches):
            step.step(f)

    def recompute() -> None:
        for _ in range(batches):
            with_backbone.step(x)

    times = interleaved({"cached": cached, "recompute": recompute}, plan.rounds, device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            step.step(f)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = sum("synchroniz" in str(w.message).lower() for w in caught)
    return {
        "measured": True,
        "batch": b,
        "images_per_s": {k: b * batches / median(v) for k, v in times.items()},
        "host_syncs_per_step": syncs,
        "times_s": times,
    }
