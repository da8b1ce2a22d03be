"""Training-step speed: the step's achieved FLOP/s against the machine's matrix-multiply peak.

- Peak probe: ``torch.mm`` of two square matrices (2048 x 2048; the tiny plan 256), fp32
  and bf16: the FLOP/s the machine reaches on the work a step is counted in.
- Training step: the package's :meth:`~adtr_core.runs.train.Trainer.step` (L_norm, backward,
  gradient clipping, AdamW) on random features, at the quick size (the quick profile's ADTR
  and batch, ``benchmarks.training.profile_config``) and the paper size (width 256, FFN 1024,
  8 heads, 4 + 4 layers, the plan's peer batch, 16), both over the quick profile's backbone
  features (Lite0: 512 channels on 16 x 16 tokens); fp32, and bf16 autocast where the
  device has bf16 instructions (emulated bf16 on a CPU without them is not measured).
- Changes to the step, each as a ratio to the step without it: the CPU's dropout mask
  (:func:`adtr_core.method.model.keep_mask`) against torch's ``bernoulli_`` dropout; AdamW's
  ``foreach`` kernels (the trainer's optimiser) against torch's per-parameter loop (its CPU
  default); the step as it was before both (torch's dropout and the loop), against which
  bf16 is also given; each the whole step; and the optimiser step alone, loop / foreach / fused, with how far the
  fused kernel's update lies from the loop's.

FLOPs are :func:`adtr_core.runs.flops.experiment_step_flops` (3 x the forward's multiply-adds x 2).
Each size's probes and steps are interleaved round by round, so every fraction of the peak
is taken per round (the step's FLOP/s over the probe's of the same round) and its median
reported: a burst of load on a shared machine slows both.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Any

import torch

from adtr_core.method import model as adtr_model
from adtr_core.runs.config import ExperimentConfig
from adtr_core.runs.experiment import build_feature_extractor, build_model
from adtr_core.runs.flops import experiment_step_flops
from benchmarks.harness import Plan, interleaved, median, ratio
from benchmarks.peer import step_trainer

PAPER_SIZE = dict(
    hidden_dim=256, dim_feedforward=1024, num_heads=8, num_encoder_layers=4, num_decoder_layers=4
)
PROBE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def peak_probe(n: int, dtype: torch.dtype, device: torch.device):
    """A callable doing one ``torch.mm`` of two ``n x n`` matrices (``2 n^3`` FLOPs)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device, dtype)
    b = torch.randn(n, n, generator=g).to(device, dtype)
    return lambda: torch.mm(a, b)


def _has_bf16(device: torch.device) -> bool:
    """bf16 matrix instructions (CUDA, or a CPU with avx512_bf16 / AMX); without them bf16 is
    emulated, thousands of times slower than fp32, and not measured."""
    from adtr_core.runs.precision import cpu_has_bf16

    return device.type == "cuda" or cpu_has_bf16()


def _size(plan: Plan, cfg: ExperimentConfig, paper: bool) -> ExperimentConfig:
    if not paper:
        return cfg
    return dataclasses.replace(cfg, **{**PAPER_SIZE, **plan.adtr}, batch_size=plan.peer_batch)


def _summary(cfg: ExperimentConfig, channels: int, grid: tuple[int, int]) -> dict[str, Any]:
    keys = ("hidden_dim", "dim_feedforward", "num_heads", "num_encoder_layers", "batch_size")
    return {**{k: getattr(cfg, k) for k in keys}, "channels": channels, "grid": list(grid)}


def _torch_dropout(call: Callable[[], Any]) -> Callable[[], Any]:
    """``call`` with torch's own dropout (``adtr_core.method.model.CPU_KEEP_MASK`` off)."""

    def wrapped() -> Any:
        adtr_model.CPU_KEEP_MASK = False
        try:
            return call()
        finally:
            adtr_model.CPU_KEEP_MASK = True

    return wrapped


def _fractions(flops: int, step: list[float], peak_flops: int, peak: list[float]) -> float:
    """Median over rounds of (flops / step time) / (peak flops / probe time)."""
    return median([(flops / s) / (peak_flops / p) for s, p in zip(step, peak)])


def size_run(
    plan: Plan, cfg: ExperimentConfig, channels: int, grid: tuple[int, int], device: torch.device
) -> dict[str, Any]:
    """Probes and training steps of one size, interleaved; times, GFLOP/s, fractions, ratios."""
    flops = experiment_step_flops(cfg, channels, grid).step
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, channels, grid).to(device).train()
    g = torch.Generator().manual_seed(0)
    f = torch.randn(cfg.batch_size, channels, *grid, generator=g).to(device)  # (B, C, h, w)
    fp32, bf16 = step_trainer(model, device, False), step_trainer(model, device, True)
    loop = step_trainer(model, device, False)
    loop.optimizer = torch.optim.AdamW(  # the optimiser as it was: torch's per-parameter loop
        model.parameters(), lr=loop.config.lr, weight_decay=loop.config.weight_decay, foreach=False
    )
    n = plan.peak_size
    dtypes = [k for k in PROBE_DTYPES if k == "fp32" or _has_bf16(device)]
    fns = {f"peak {k}": peak_probe(n, PROBE_DTYPES[k], device) for k in dtypes}
    before = "fp32, as before (torch's dropout, AdamW loop)"
    fns |= {
        "fp32": lambda: fp32.step(f),
        "fp32, AdamW loop": lambda: loop.step(f),
        "fp32, torch's dropout": _torch_dropout(lambda: fp32.step(f)),
        before: _torch_dropout(lambda: loop.step(f)),
    }
    if "bf16" in dtypes:
        fns["bf16"] = lambda: bf16.step(f)
    times = interleaved(fns, plan.rounds, device)
    peak_flops = 2 * n**3
    steps = [k for k in times if not k.startswith("peak")]
    ratios = {
        "CPU keep mask / torch's dropout, whole step": ratio(
            times["fp32, torch's dropout"], times["fp32"]
        ),
        "AdamW foreach / loop, whole step": ratio(times["fp32, AdamW loop"], times["fp32"]),
        "fp32 now / before": ratio(times[before], times["fp32"]),
    }
    if "bf16" in times:
        ratios["bf16 / fp32"] = ratio(times["fp32"], times["bf16"])
        ratios["bf16 now / fp32 before"] = ratio(times[before], times["bf16"])
    return {
        "config": _summary(cfg, channels, grid),
        "step_flops": flops,
        "ms": {k: 1000 * median(times[k]) for k in steps},
        "gflops": {k: flops / median(times[k]) / 1e9 for k in steps},
        "peak_gflops": {k: peak_flops / median(times[f"peak {k}"]) / 1e9 for k in dtypes},
        "of_fp32_peak": {
            k: _fractions(flops, times[k], peak_flops, times["peak fp32"]) for k in steps
        },
        "of_bf16_peak": {
            k: _fractions(flops, times[k], peak_flops, times["peak bf16"])
            for k in steps
            if k == "bf16"
        },
        "ratios": ratios,
        "times_s": times,
    }


def optimizer_run(
    plan: Plan, cfg: ExperimentConfig, channels: int, grid: tuple[int, int], device: torch.device
) -> dict[str, Any]:
    """AdamW's step alone on the quick-size model: per-parameter loop, foreach and fused."""
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, channels, grid).to(device)
    for p in model.parameters():
        p.grad = 1e-3 * torch.randn_like(p)
    kinds = {"loop": dict(foreach=False), "foreach": dict(foreach=True), "fused": dict(fused=True)}
    copies = {k: copy.deepcopy(model) for k in kinds}
    for m in copies.values():  # the same gradients in each copy
        for p, q in zip(m.parameters(), model.parameters()):
            p.grad = q.grad.clone()
    opts = {
        k: torch.optim.AdamW(copies[k].parameters(), lr=1e-4, weight_decay=1e-4, **kw)
        for k, kw in kinds.items()
    }
    for o in opts.values():
        o.step()  # one update each from the same state: how far apart do they land?
    flat = {k: torch.cat([p.detach().flatten() for p in m.parameters()]) for k, m in copies.items()}
    repeats = 10

    def steps(o: torch.optim.Optimizer):
        def call() -> None:
            for _ in range(repeats):
                o.step()

        return call

    times = interleaved({k: steps(o) for k, o in opts.items()}, max(3, plan.rounds), device)
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "tensors": len(list(model.parameters())),
        "ms": {k: 1000 * median(v) / repeats for k, v in times.items()},
        "ratio": {k: ratio(times["loop"], times[k]) for k in ("foreach", "fused")},
        "max_abs_diff": {
            k: float((flat[k] - flat["loop"]).abs().max()) for k in ("foreach", "fused")
        },
        "times_s": times,
    }


def run(plan: Plan, device: torch.device) -> dict[str, Any]:
    from benchmarks.training import profile_config

    cfg, note = profile_config(plan, device)
    backbone = build_feature_extractor(dataclasses.replace(cfg, backbone_weights="random"))
    channels, grid = backbone.channels, backbone.grid
    out: dict[str, Any] = {"source": note, "peak_size": plan.peak_size, "rounds": plan.rounds}
    out["sizes"] = {
        name: size_run(plan, _size(plan, cfg, name == "paper"), channels, grid, device)
        for name in ("quick", "paper")
    }
    out["optimizer"] = optimizer_run(plan, cfg, channels, grid, device)
    return out
