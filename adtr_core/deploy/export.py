"""Export a trained run as one ONNX graph: images → score maps and image scores.

The graph holds the whole detector: the backbone (with its input normalisation), the
reconstruction network and the scoring of ``scoring`` (eq. 3, upsampling, Gaussian
smoothing, the image-score reduction), with a dynamic batch dimension:

    input   images  (B, 3, S, S) float32 RGB in [0, 1], S = the run's image size
    outputs maps    (B, S, S) float32 score maps
            scores  (B,) float32 image scores

Beside ``model.onnx`` a small JSON (``model.onnx.json``) says what the graph needs and
was made from: image size, the normalisation baked into it, the scoring settings, the
run's config and the opset. Export works offline (torch's exporter, ``onnx``); the graph
runs with ONNX Runtime (``adtr_core.deploy.engines.OnnxScorer``).
"""

from __future__ import annotations

import errno
import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from adtr_core.io import (
    LOW_SPACE_BYTES,
    OutputError,
    atomic_path,
    ensure_dir,
    remove_stale_temporaries,
    write_json,
)
from adtr_core.method.scoring import ScoringConfig, axis_operator, feature_distance, image_scores
from adtr_core.runs.results_folder import folder_lock

ONNX_FORMAT = "adtr-onnx"
ONNX_VERSION = 1
OPSET = 18
MODEL_FILE = "model.onnx"


class ScoringGraph(nn.Module):
    """Backbone → reconstruction → scoring as one module: ``images -> (maps, scores)``.

    The scoring is :func:`adtr_core.method.scoring.score` with its per-axis operators (bilinear
    upsampling and Gaussian smoothing as one matrix per axis) held as buffers, so an
    exported graph has them as constants.

    Args:
        backbone: the frozen feature extractor, ``(B, 3, S, S) -> (B, C, h, w)``.
        model: the reconstruction network, ``(B, C, h, w) -> (B, C, h, w)``.
        scoring: the run's scoring settings (``image_size`` must be set).
    """

    def __init__(self, backbone: nn.Module, model: nn.Module, scoring: ScoringConfig) -> None:
        super().__init__()
        self.backbone = backbone
        self.model = model
        self.scoring = scoring
        h, w = backbone.grid
        size = scoring.image_size if scoring.image_size is not None else h
        sigma = float(scoring.sigma)
        self.register_buffer("a_h", axis_operator(h, size, sigma).clone())  # (S, h)
        self.register_buffer("a_w_t", axis_operator(w, size, sigma).T.contiguous())  # (w, S)
        self.eval()

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Score maps ``(B, S, S)`` and image scores ``(B,)`` of images ``(B, 3, S, S)``."""
        f = self.backbone(images)  # (B, C, h, w)
        d = feature_distance(f, self.model(f))  # (B, h, w)
        maps = self.a_h @ d @ self.a_w_t  # (B, S, S)
        return maps, image_scores(maps, self.scoring.mode, self.scoring.pool_size)


def onnx_path(run: str | Path) -> Path:
    """Where ``adtr export`` puts the graph of a run: ``<run>/model.onnx``."""
    run = Path(run)
    return run.parent / MODEL_FILE if run.suffix == ".pt" else run / MODEL_FILE


def sidecar_path(graph: str | Path) -> Path:
    """The JSON beside a graph: ``model.onnx`` → ``model.onnx.json``."""
    graph = Path(graph)
    return graph.with_name(graph.name + ".json")


def export_onnx(checkpoint: str | Path, out: str | Path | None = None) -> Path:
    """Write the ONNX graph of a trained run and its JSON sidecar.

    Args:
        checkpoint: a results folder written by ``adtr train`` or its ``checkpoint.pt``.
        out: the graph file; default ``<run>/model.onnx``.

    Returns:
        The graph's path (the sidecar is ``<path>.json``).

    Raises:
        OutputError: ``out`` is empty or cannot be written (a full disk: one line).
        FolderBusyError: another process writes to ``out``'s folder (a run training there,
            or another export).
    """
    from adtr_core.runs.evaluation import scoring_config
    from adtr_core.runs.saved_runs import load_run_model

    if out is not None and not str(out).strip():
        raise OutputError("--out is empty: name the graph file, or leave --out out")
    cfg, backbone, model = load_run_model(checkpoint, device="cpu")
    scoring = scoring_config(cfg)
    graph = ScoringGraph(backbone, model, scoring)
    out = Path(out).expanduser() if out is not None else onnx_path(checkpoint)
    created = not out.parent.exists()
    ensure_dir(out.parent, "folder of the graph")
    try:
        with folder_lock(out.parent):
            remove_stale_temporaries(out.parent)  # of an export that was killed
            return _write_graph(graph, cfg, backbone, scoring, out)
    finally:
        if created and out.parent.is_dir() and not any(out.parent.iterdir()):
            out.parent.rmdir()


def _write_graph(graph: ScoringGraph, cfg, backbone, scoring: ScoringConfig, out: Path) -> Path:
    example = torch.rand(2, 3, cfg.image_size, cfg.image_size)
    with atomic_path(out) as tmp:
        exporter = _export(graph, example, Path(tmp))
    mean = backbone.mean.flatten().tolist()
    std = backbone.std.flatten().tolist()
    meta: dict[str, Any] = {
        "format": ONNX_FORMAT,
        "version": ONNX_VERSION,
        "opset": OPSET,
        "exporter": exporter,
        "input": {
            "name": "images",
            "shape": ["batch", 3, cfg.image_size, cfg.image_size],
            "what": "RGB in [0, 1], resized to image_size (bilinear); normalised inside",
        },
        "outputs": {"maps": ["batch", cfg.image_size, cfg.image_size], "scores": ["batch"]},
        "image_size": cfg.image_size,
        "normalisation": {"mean": mean, "std": std, "inside_graph": True},
        "scoring": {
            "mode": scoring.mode,
            "sigma": scoring.sigma,
            "pool_size": scoring.pool_size,
            "image_size": scoring.image_size,
        },
        "config": cfg.to_dict(),
        "torch": torch.__version__,
    }
    write_json(sidecar_path(out), meta)
    return out


def _export(graph: nn.Module, example: torch.Tensor, path: Path) -> str:
    """torch's ONNX exporter with a dynamic batch (the dynamo exporter, else TorchScript's).

    Returns:
        which exporter wrote the graph: "dynamo" or "torchscript".
    """
    names = dict(input_names=["images"], output_names=["maps", "scores"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporters' deprecation and tracer notes
        try:
            batch = torch.export.Dim("batch", min=1, max=4096)
            program = torch.onnx.export(
                graph,
                (example,),
                dynamo=True,
                opset_version=OPSET,
                dynamic_shapes={"images": {0: batch}},
                external_data=False,
                verbose=False,
                **names,
            )
            program.save(str(path))
            return "dynamo"
        except OSError:
            raise  # a failed write (a full disk): atomic_path names the file and the cause
        except Exception as err:  # noqa: BLE001 - any failure of the newer exporter
            try:
                torch.onnx.export(
                    graph,
                    (example,),
                    str(path),
                    dynamo=False,
                    opset_version=OPSET,
                    dynamic_axes={
                        "images": {0: "batch"},
                        "maps": {0: "batch"},
                        "scores": {0: "batch"},
                    },
                    **names,
                )
            except OSError:
                raise
            except Exception as err2:
                if shutil.disk_usage(path.parent).free < LOW_SPACE_BYTES:
                    raise OSError(errno.ENOSPC, "No space left on device", str(path)) from None
                raise RuntimeError(
                    f"ONNX export failed: {_first_line(err)}; then {_first_line(err2)}"
                ) from err2
            return "torchscript"


def _first_line(err: BaseException) -> str:
    """An exporter's error in one short line (its messages can hold whole graph dumps)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return f"{type(err).__name__}: {(lines or [''])[0][:200]}"


def read_sidecar(graph: str | Path) -> dict[str, Any]:
    """The JSON beside ``graph``; FileNotFoundError / ValueError when missing or foreign."""
    path = sidecar_path(graph)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: export the run with `adtr export` again")
    meta = json.loads(path.read_text())
    if meta.get("format") != ONNX_FORMAT:
        raise ValueError(f"{path} is not an adtr ONNX sidecar")
    return meta
