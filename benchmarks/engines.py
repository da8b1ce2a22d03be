"""ONNX Runtime against eager PyTorch: the whole pipeline, images → score maps and scores.

For each backbone of the plan (random weights; timing does not depend on them) the eager
pipeline of ``benchmarks.inference`` (fp32, as ``adtr predict`` runs on a CPU) is exported
with ``adtr_core.deploy.export.ScoringGraph`` and run in ONNX Runtime with the thread count of
``adtr_core.runs.threads``; both are timed interleaved at every batch size of the plan. The
largest relative difference of the image scores is kept beside each ratio.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.harness import Plan, interleaved, median, ratio
from benchmarks.inference import build_pipeline


def run(plan: Plan, device: torch.device) -> dict[str, Any]:
    """One entry per (backbone, batch): images per second of each engine and the ratio."""
    if device.type != "cpu":
        return {"skipped": "ONNX Runtime is measured on the CPU only"}
    try:
        import onnxruntime as ort
    except ImportError:
        return {"skipped": "onnxruntime is not installed"}
    out: dict[str, Any] = {"onnxruntime": ort.__version__}
    with tempfile.TemporaryDirectory(prefix="adtr-onnx-") as tmp:
        for name in plan.backbones:
            out.update(_measure(name, plan, device, Path(tmp) / f"{name}.onnx"))
    return out


def _measure(name: str, plan: Plan, device: torch.device, path: Path) -> dict[str, Any]:
    from adtr_core.deploy.engines import OnnxScorer
    from adtr_core.deploy.export import ScoringGraph, _export, sidecar_path
    from adtr_core.io import write_json

    pipe = build_pipeline(name, plan, device, bf16=False, channels_last=False)
    graph = ScoringGraph(pipe.backbone, pipe.model, pipe.scoring)
    start = time.perf_counter()
    _export(graph, pipe.images(2), path)
    export_s = time.perf_counter() - start
    write_json(sidecar_path(path), {"format": "adtr-onnx", "image_size": plan.image_size})
    session = OnnxScorer(path)
    out = {}
    for batch in plan.batches:
        x = pipe.images(batch)
        with torch.inference_mode():
            _, eager_scores = pipe(x)
            times = interleaved(
                {"eager": lambda: pipe(x), "onnxruntime": lambda: session(x)},  # noqa: B023
                plan.rounds,
                device,
            )
        _, ort_scores = session(x)
        rel = ((ort_scores - eager_scores).abs() / eager_scores.abs()).max().item()
        out[f"{name} b{batch}"] = {
            "images_per_s": {k: batch / median(v) for k, v in times.items()},
            "ratio": ratio(times["eager"], times["onnxruntime"]),
            "max_rel_score_diff": rel,
            "export_s": export_s,
            "times_s": times,
        }
    return out
