"""bf16 autocast against float32: a quick-profile training epoch and the whole pipeline.

- Training: the quick profile's ADTR (``training.profile_config``) trained by the package's
  ``Trainer`` on cached demo features, one epoch per round, fp32 against bf16 autocast
  (``TrainConfig.cpu_amp``), interleaved; both start from the same weights.
- Inference: the whole pipeline of ``benchmarks.inference`` (backbone, reconstruction,
  scoring; random Lite0 weights) at the plan's largest batch, fp32 against bf16.

On a CPU without bf16 instructions autocast emulates bf16; the rows then say so.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch.utils.data import Subset

from benchmarks.harness import Plan, interleaved, median, ratio


def run(plan: Plan, device: torch.device) -> dict[str, Any]:
    from adtr_core.data.sources import open_split
    from adtr_core.method.losses import l_norm
    from adtr_core.runs.experiment import build_feature_extractor, build_model
    from adtr_core.runs.features import extract_features
    from adtr_core.runs.precision import cpu_has_bf16
    from adtr_core.runs.train import Trainer
    from benchmarks.inference import build_pipeline
    from benchmarks.training import _epoch_runner, profile_config

    out: dict[str, Any] = {"bf16_instructions": device.type == "cuda" or cpu_has_bf16()}
    cfg, note = profile_config(plan, device)
    data = open_split(cfg, "train")
    if plan.train_images is not None and plan.train_images < len(data):
        data = Subset(data, range(plan.train_images))
    feats = extract_features(build_feature_extractor(cfg), data, device=device)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, feats.features.shape[1], tuple(feats.features.shape[-2:]))

    def loss(m, batch):
        f = batch["features"]  # (B, C, h, w)
        return l_norm(f, m(f))

    trainers = {}
    for name, amp in (("fp32", False), ("bf16", True)):
        tc = cfg.train_config(
            device, epochs=0, checkpoint_every=0, progress=False, amp=amp, cpu_amp=amp
        )
        trainers[name] = Trainer(copy.deepcopy(model), loss, feats.as_dataset(), tc)
    times = interleaved(
        {k: _epoch_runner(t) for k, t in trainers.items()}, max(1, plan.train_rounds), device
    )
    out["training epoch"] = {
        "s": {k: median(v) for k, v in times.items()},
        "ratio": ratio(times["fp32"], times["bf16"]),
        "what": f"{len(feats)} images, batch {cfg.batch_size}, D={cfg.hidden_dim} [{note}]",
        "times_s": times,
    }

    lite = plan.backbones[0]
    fp32 = build_pipeline(lite, plan, device, bf16=False, channels_last=False)
    bf16 = build_pipeline(lite, plan, device, bf16=True, channels_last=False)
    bf16.backbone, bf16.model = fp32.backbone, fp32.model
    b = plan.batches[-1]
    x = fp32.images(b)
    with torch.inference_mode():
        _, s32 = fp32(x)
        _, s16 = bf16(x)
        times = interleaved({"fp32": lambda: fp32(x), "bf16": lambda: bf16(x)}, plan.rounds, device)
    out["inference pipeline"] = {
        "s": {k: median(v) for k, v in times.items()},
        "ratio": ratio(times["fp32"], times["bf16"]),
        "max_rel_score_diff": ((s16 - s32).abs() / s32.abs()).max().item(),
        "what": f"{lite}, batch {b}, whole pipeline",
        "times_s": times,
    }
    return out
