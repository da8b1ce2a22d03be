"""Cheap-to-measure speed options, each as a ratio (baseline time / option time; > 1 helps).

- bf16 autocast (CPU: worth it where the CPU has avx512_bf16 / AMX): backbone forward,
  ADTR forward and ADTR training step at batch 16.
- channels-last backbone inputs and weights.
- threads: 1 against all of the process's cores (CPU only).
- fused attention: ``scaled_dot_product_attention``'s default (fused) kernel against its
  plain "math" kernel inside ADTR.
- scoring: the package's ``score`` (bilinear upsampling and Gaussian smoothing as one
  matrix per axis, ``maps = A d A^T``, and the pooling as two 1-D passes) against
  ``reference_score``, the same computation step by step, with the largest difference.
- the on-disk feature cache: ``extract_features`` computing (cache miss) against reading
  the disk cache in a fresh process (memory cache cleared) and the in-process cache.
- ``torch.compile`` of ADTR's forward (only with ``--compile``: compiling takes minutes
  on a small CPU).
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.data import Subset

from adtr_core.data import open_dataset
from adtr_core.method.model import ADTR, ADTRConfig
from adtr_core.method.scoring import (
    ScoringConfig,
    reference_score,
    score,
)
from adtr_core.runs import features as features_mod
from benchmarks.harness import Plan, interleaved, median, ratio
from benchmarks.inference import build_pipeline
from benchmarks.peer import step_trainer

# --------------------------------------------------------------------------- measurements


def _entry(times: dict[str, list[float]], base: str, option: str, **extra: Any) -> dict[str, Any]:
    return {
        "ms": {k: 1000 * median(v) for k, v in times.items()},
        "ratio": ratio(times[base], times[option]),
        **extra,
    }


def run(plan: Plan, device: torch.device) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    b = plan.batches[-1]
    lite = plan.backbones[0]
    cpu = device.type == "cpu"
    side = plan.image_size // 16

    # bf16 autocast, on the backbone, the reconstruction forward and a training step
    fp32 = build_pipeline(lite, plan, device, bf16=False, channels_last=False)
    bf16 = build_pipeline(lite, plan, device, bf16=True, channels_last=False)
    bf16.backbone, bf16.model = fp32.backbone, fp32.model
    x = fp32.images(b)
    with torch.inference_mode():
        f = fp32.features(x)
        t = interleaved(
            {"fp32": lambda: fp32.features(x), "bf16": lambda: bf16.features(x)},
            plan.rounds,
            device,
        )
        err = (bf16.features(x) - f).norm() / f.norm()
        out["bf16 autocast: backbone forward"] = _entry(
            t, "fp32", "bf16", rel_error=float(err), what=f"{lite}, batch {b}"
        )
        t = interleaved(
            {"fp32": lambda: fp32.reconstruct(f), "bf16": lambda: bf16.reconstruct(f)},
            plan.rounds,
            device,
        )
        out["bf16 autocast: ADTR forward"] = _entry(t, "fp32", "bf16", what=f"batch {b}")
    model = fp32.model.train()
    fp32_step, bf16_step = step_trainer(model, device, False), step_trainer(model, device, True)
    t = interleaved(
        {"fp32": lambda: fp32_step.step(f), "bf16": lambda: bf16_step.step(f)},
        plan.rounds,
        device,
    )
    out["bf16 autocast: ADTR training step"] = _entry(t, "fp32", "bf16", what=f"batch {b}")
    model.eval()

    # channels-last backbone
    cl = build_pipeline(lite, plan, device, bf16=device.type == "cuda", channels_last=True)
    nchw = build_pipeline(lite, plan, device, bf16=device.type == "cuda", channels_last=False)
    x_cl, x_nchw = cl.images(b), nchw.images(b)
    with torch.inference_mode():
        t = interleaved(
            {"nchw": lambda: nchw.features(x_nchw), "channels_last": lambda: cl.features(x_cl)},
            plan.rounds,
            device,
        )
    out["channels-last backbone"] = _entry(t, "nchw", "channels_last", what=f"{lite}, batch {b}")

    # threads
    if cpu:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
        before = torch.get_num_threads()

        def with_threads(n: int):
            def call() -> None:
                torch.set_num_threads(n)
                try:
                    fp32(x)
                finally:
                    torch.set_num_threads(before)

            return call

        if cores > 1:
            with torch.inference_mode():
                t = interleaved(
                    {"1": with_threads(1), str(cores): with_threads(cores)}, plan.rounds, device
                )
            out[f"threads: {cores} against 1"] = _entry(
                t, "1", str(cores), what=f"whole pipeline, {lite}, batch {b}"
            )

    # fused attention inside ADTR
    cfg = ADTRConfig(in_channels=plan.peer_channels, grid=(side, side), **plan.adtr)
    adtr = ADTR(cfg).to(device).eval()
    feats = torch.randn(b, cfg.in_channels, side, side, device=device)

    def attention(backend):
        def call() -> None:
            with sdpa_kernel(backend):
                adtr(feats)

        return call

    default = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    if device.type == "cuda":
        default.insert(0, SDPBackend.CUDNN_ATTENTION)
    with torch.inference_mode():
        t = interleaved(
            {"math": attention([SDPBackend.MATH]), "fused": attention(default)},
            plan.rounds,
            device,
        )
    out["fused attention (SDPA) in ADTR forward"] = _entry(t, "math", "fused", what=f"batch {b}")

    # scoring as matrix products
    scoring = ScoringConfig(image_size=plan.image_size)
    fa = torch.randn(b, plan.peer_channels, side, side, device=device)
    fb = fa + 0.3 * torch.randn_like(fa)
    with torch.inference_mode():
        m0, s0 = reference_score(fa, fb, scoring)
        m1, s1 = score(fa, fb, scoring)
        diff = max(float((m0 - m1).abs().max()), float((s0 - s1).abs().max()))
        scale = float(m0.abs().max())
        t = interleaved(
            {
                "score": lambda: reference_score(fa, fb, scoring),
                "matrix": lambda: score(fa, fb, scoring),
            },
            plan.rounds,
            device,
        )
    out["scoring: matrix form against step by step"] = _entry(
        t, "score", "matrix", what=f"batch {b}", max_abs_diff=diff, max_map_value=scale
    )

    # the disk feature cache
    out["feature cache: disk against computing"] = _feature_cache(plan, device, fp32.backbone)

    if plan.compile:
        out["torch.compile: ADTR forward"] = _compiled(adtr, feats, plan, device)
    return out


def _feature_cache(plan: Plan, device: torch.device, backbone) -> dict[str, Any]:
    data = open_dataset("demo", category="brick", split="train", image_size=plan.image_size)
    if plan.train_images is not None:
        data = Subset(data, range(min(plan.train_images, len(data))))
    times: dict[str, list[float]] = {"compute": [], "disk": [], "memory": []}
    with tempfile.TemporaryDirectory(prefix="adtr-bench-cache-") as tmp:
        for _ in range(max(1, min(plan.rounds, 2))):
            features_mod.clear_memory_cache()
            for label in ("compute", "disk", "memory"):
                if label == "compute":  # a cold cache: nothing on disk yet
                    for old in os.listdir(tmp):
                        os.remove(os.path.join(tmp, old))
                if label == "disk":
                    features_mod.clear_memory_cache()
                start = time.perf_counter()
                features_mod.extract_features(backbone, data, device=device, cache_dir=tmp)
                times[label].append(time.perf_counter() - start)
    features_mod.clear_memory_cache()
    return {
        **_entry(times, "compute", "disk", what=f"{len(data)} demo images"),
        "memory_ratio": ratio(times["compute"], times["memory"]),
    }


def _compiled(model, feats, plan: Plan, device: torch.device) -> dict[str, Any]:
    compiled = torch.compile(model)
    start = time.perf_counter()
    with torch.inference_mode():
        compiled(feats)
        compile_s = time.perf_counter() - start
        t = interleaved(
            {"eager": lambda: model(feats), "compiled": lambda: compiled(feats)},
            plan.rounds,
            device,
        )
    return _entry(t, "eager", "compiled", compile_s=compile_s, what=f"batch {feats.shape[0]}")
