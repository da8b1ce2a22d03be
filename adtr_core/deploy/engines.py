"""Inference engines: what turns image batches into score maps and image scores.

Two engines with one contract, ``scorer(images (B, 3, S, S) in [0, 1]) -> (maps (B, S, S),
scores (B,))``, float32 on the CPU:

- ``"torch"``: the run's backbone and model in eager PyTorch (any device, any precision);
- ``"onnxruntime"``: the run's exported graph (``adtr_core.deploy.export``) in ONNX Runtime, on
  the CPU, with the thread count of ``adtr_core.runs.threads``.

:func:`build_scorer` builds either from a results folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from adtr_core.runs.precision import autocast, autocast_dtype

ENGINES = ("torch", "onnxruntime")


class TorchScorer:
    """The eager pipeline: backbone → reconstruction (autocast per precision) → scoring."""

    def __init__(self, checkpoint: str | Path, device: str = "auto", precision: str | None = None):
        from adtr_core.runs.device import resolve_device
        from adtr_core.runs.evaluation import scoring_config
        from adtr_core.runs.saved_runs import load_run_model

        self.device = resolve_device(device)
        self.cfg, self.backbone, self.model = load_run_model(checkpoint, device=str(self.device))
        self.dtype = autocast_dtype(precision or self.cfg.precision, self.device)
        self.scoring = scoring_config(self.cfg)
        self.image_size = self.cfg.image_size

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from adtr_core.method.scoring import score

        x = images.to(self.device)  # (B, 3, S, S)
        with autocast(self.device, self.dtype):
            f = self.backbone(x)  # (B, C, h, w)
            f_hat = self.model(f)  # (B, C, h, w)
        maps, scores = score(f.float(), f_hat.float(), self.scoring)
        return maps.cpu(), scores.cpu()


class OnnxScorer:
    """An exported graph in ONNX Runtime (CPU).

    Args:
        graph: the ``.onnx`` file written by :func:`adtr_core.deploy.export.export_onnx`.
        threads: intra-op threads; None: ``ADTR_THREADS`` or the rule of ``adtr_core.runs.threads``.
    """

    def __init__(self, graph: str | Path, threads: int | str | None = None) -> None:
        import onnxruntime as ort

        from adtr_core.deploy.export import read_sidecar
        from adtr_core.runs.threads import ThreadRule

        self.graph = Path(graph)
        self.meta = read_sidecar(self.graph)
        self.image_size = int(self.meta["image_size"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = ThreadRule(threads).apply()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle pool threads sleep instead of spinning: spinning takes the cores from whatever
        # runs between two calls (torch, another process) on a small or shared machine.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(
            str(self.graph), options, providers=["CPUExecutionProvider"]
        )

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = np.ascontiguousarray(images.detach().cpu().float().numpy())  # (B, 3, S, S)
        maps, scores = self.session.run(["maps", "scores"], {"images": x})
        return torch.from_numpy(maps), torch.from_numpy(scores)


def build_scorer(
    checkpoint: str | Path,
    engine: str = "torch",
    device: str = "auto",
    precision: str | None = None,
    threads: int | str | None = None,
):
    """The scorer of a trained run for ``engine`` ("torch" or "onnxruntime").

    The ONNX Runtime engine uses ``<run>/model.onnx``, exporting it first when it is
    missing or older than the checkpoint; it runs in float32 on the CPU.
    """
    if engine == "torch":
        return TorchScorer(checkpoint, device=device, precision=precision)
    if engine != "onnxruntime":
        raise ValueError(f"unknown engine {engine!r}: choose one of {', '.join(ENGINES)}")
    from adtr_core.deploy.export import export_onnx, onnx_path, sidecar_path
    from adtr_core.runs.checkpoints import checkpoint_file

    ckpt = checkpoint_file(checkpoint)
    if not ckpt.is_file():
        raise FileNotFoundError(f"no checkpoint at {ckpt}: pass a results folder of `adtr train`")
    graph = onnx_path(ckpt)
    stale = (
        not graph.is_file()
        or not sidecar_path(graph).is_file()
        or graph.stat().st_mtime < ckpt.stat().st_mtime
    )
    if stale:
        export_onnx(ckpt, graph)
    try:
        return OnnxScorer(graph, threads=threads)
    except Exception:  # noqa: BLE001 - a truncated or damaged graph: export it again, once
        export_onnx(ckpt, graph)
    try:
        return OnnxScorer(graph, threads=threads)
    except Exception as err:  # noqa: BLE001 - onnxruntime's errors are many lines
        first = (str(err).strip().splitlines() or [""])[0][:200]
        raise RuntimeError(
            f"ONNX Runtime cannot load {graph} even after exporting it again "
            f"({type(err).__name__}: {first}); use --engine torch"
        ) from None
