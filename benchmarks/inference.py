"""Inference: images per second, peak memory and the share of each stage of the pipeline.

The pipeline is backbone -> ADTR reconstruction -> scoring (eq. 3, upsampling, smoothing,
image score) on random 256x256 images, with random backbone weights (timing does not
depend on the weights). Each stage is also timed on its own, interleaved with the whole
pipeline, to give its share. On CUDA the backbone and the reconstruction run under bf16
autocast with channels-last backbone inputs, and scoring stays on the device (float32).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from adtr_core.method.backbone import Backbone, BackboneConfig, build_backbone
from adtr_core.method.reconstructors import build_reconstructor
from adtr_core.method.scoring import ScoringConfig, score
from benchmarks.harness import MIB, PeakMemory, Plan, interleaved, median, ratio, tensor_bytes


@dataclass
class Pipeline:
    """The three stages of inference on one device, in one precision."""

    backbone: Backbone
    model: nn.Module
    scoring: ScoringConfig
    device: torch.device
    bf16: bool = False
    channels_last: bool = False

    def _autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def images(self, batch: int, seed: int = 0) -> torch.Tensor:
        """Random images (B, 3, S, S) in [0, 1] on the device, channels-last when enabled."""
        g = torch.Generator().manual_seed(seed)
        s = self.scoring.image_size
        x = torch.rand(batch, 3, s, s, generator=g).to(self.device)  # (B, 3, S, S)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            return self.backbone(x)  # (B, C, h, w)

    def reconstruct(self, f: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            return self.model(f)  # (B, C, h, w)

    def score(self, f: torch.Tensor, f_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return score(f, f_hat, self.scoring)  # (B, S, S), (B,)

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x)
        return self.score(f, self.reconstruct(f))


def build_pipeline(
    backbone: str,
    plan: Plan,
    device: torch.device,
    bf16: bool | None = None,
    channels_last: bool | None = None,
) -> Pipeline:
    """A pipeline with random backbone weights and a paper-sized (or ``plan.adtr``) ADTR.

    ``bf16`` and ``channels_last`` default to on for CUDA and off for the CPU.
    """
    cuda = device.type == "cuda"
    bb = build_backbone(
        BackboneConfig(name=backbone, weights="random", image_size=plan.image_size)
    ).to(device)
    channels_last = cuda if channels_last is None else channels_last
    if channels_last:
        bb = bb.to(memory_format=torch.channels_last)
    torch.manual_seed(0)
    model = build_reconstructor("adtr", bb.channels, bb.grid, **plan.adtr).to(device).eval()
    return Pipeline(
        bb,
        model,
        ScoringConfig(image_size=plan.image_size),
        device,
        bf16=cuda if bf16 is None else bf16,
        channels_last=channels_last,
    )


def measure_pipeline(pipe: Pipeline, batch: int, rounds: int) -> dict[str, Any]:
    """Per-stage and whole-pipeline times, images per second and peak memory at ``batch``."""
    device = pipe.device
    with torch.inference_mode():
        x = pipe.images(batch)
        pipe(x)  # warm-up before the memory measurement
        with PeakMemory(device) as mem:
            pipe(x)
        f = pipe.features(x)
        f_hat = pipe.reconstruct(f)
        times = interleaved(
            {
                "backbone": lambda: pipe.features(x),
                "reconstruction": lambda: pipe.reconstruct(f),
                "scoring": lambda: pipe.score(f, f_hat),
                "pipeline": lambda: pipe(x),
            },
            rounds,
            device,
        )
    med = {k: median(v) for k, v in times.items()}
    stages = med["backbone"] + med["reconstruction"] + med["scoring"]
    added = [r + s for r, s in zip(times["reconstruction"], times["scoring"])]
    peak = mem.peak_bytes
    if device.type != "cuda":  # the RSS delta excludes the weights, resident before the run
        peak += tensor_bytes(pipe.backbone, pipe.model)
    return {
        "backbone": pipe.backbone.config.name,
        "device": device.type,
        "batch": batch,
        "channels": pipe.backbone.channels,
        "precision": "bf16 autocast" if pipe.bf16 else "fp32",
        "channels_last": pipe.channels_last,
        "ms": {k: 1000 * v for k, v in med.items()},
        "images_per_s": batch / med["pipeline"],
        "share": {k: med[k] / stages for k in ("backbone", "reconstruction", "scoring")},
        "added_over_backbone": ratio(added, times["backbone"]),
        "peak_mib": peak / MIB,
        "memory_method": mem.method,
        "times_s": times,
    }


def run(plan: Plan, device: torch.device) -> list[dict[str, Any]]:
    """One row per (backbone, batch) of the plan."""
    rows = []
    for name in plan.backbones:
        pipe = build_pipeline(name, plan, device)
        for batch in plan.batches:
            rows.append(measure_pipeline(pipe, batch, plan.rounds))
        del pipe
    return rows
