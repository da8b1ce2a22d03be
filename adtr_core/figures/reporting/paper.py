"""The paper's reported numbers and settings, to be printed *beside* ours, never mixed with them.

* :data:`PAPER_NUMBERS`: the means the paper reports (METHOD.md §5), in percent, transcribed
  by hand. They are MVTec AD (and CIFAR-10) numbers: :func:`paper_numbers_for` returns them
  only when the data is MVTec AD (or CIFAR-10); on any other data the paper has no numbers.
* :data:`PAPER_ABLATION_PIXEL_AUROC`: Table 4 as reported; :data:`PAPER_SETTINGS`: the
  paper's MVTec AD settings, and :func:`settings_note`, the line that says how a run's differ.
"""

from __future__ import annotations

from typing import Any

from adtr_core.runs.config import ExperimentConfig

PAPER_LABEL = "paper (reported)"
"""Index label of the row holding the paper's reported means."""


METRIC_LABELS = {
    "image_auroc": "image AUROC",
    "pixel_auroc": "pixel AUROC",
    "pixel_aupro": "AU-PRO",
}
"""Display names of the metric keys of :func:`adtr_core.method.metrics.compute_metrics`."""


PAPER_NUMBERS: dict[str, dict[str, dict[str, float]]] = {
    # The paper's reported MEANS in percent (METHOD.md §5, Tables 1-3 of the paper), per data
    # set, per method, per metric. The paper reports no AU-PRO; its per-category rows are not
    # transcribed here.
    "mvtec": {
        "ADTR": {"image_auroc": 96.4, "pixel_auroc": 97.2},
        "ADTR+": {"image_auroc": 96.9, "pixel_auroc": 97.5},
        "best baseline (TS / SPADE)": {"image_auroc": 92.5, "pixel_auroc": 96.0},
    },
    "cifar10": {
        "ADTR": {"image_auroc": 94.7},
        "ADTR+": {"image_auroc": 96.1},
        "best baseline (KDAD)": {"image_auroc": 87.2},
    },
}


PAPER_ABLATION_PIXEL_AUROC: dict[str, float] = {
    # The paper's Table 4 (MVTec AD pixel AUROC, percent), as reported.
    "CNN reconstruction": 94.4,
    "transformer without attention": 94.8,
    "transformer without query embedding": 94.2,
    "ADTR (attention + query embedding)": 97.2,
    "reconstruct pixels instead of features": 91.3,
    "backbone ResNet-18": 95.3,
    "backbone ResNet-34": 95.7,
    "backbone EffNet-B0": 96.4,
    "backbone EffNet-B4": 97.2,
    "last layer only": 96.0,
    "multi-scale": 97.2,
}


DATA_NAMES = {"mvtec": "MVTec AD", "cifar10": "CIFAR-10"}


def paper_numbers_for(data: str) -> dict[str, dict[str, float]] | None:
    """The paper's reported means for a data source, or None when the paper has none."""
    return PAPER_NUMBERS.get(data)


def paper_note(data: str) -> str:
    """One sentence saying whether the paper's numbers apply to ``data``."""
    reported = paper_numbers_for(data)
    if reported is None:
        return (
            f"The paper reports no numbers for this data ({data}): its numbers are MVTec AD "
            "and CIFAR-10 means, so no paper row is shown."
        )
    parts = [
        f"{m}: " + ", ".join(f"{METRIC_LABELS.get(k, k)} {v:.1f}" for k, v in vals.items())
        for m, vals in reported.items()
    ]
    return (
        f'Row "{PAPER_LABEL}": the means the paper reports on {DATA_NAMES[data]} '
        f"(transcribed, not recomputed): {'; '.join(parts)}."
    )


PAPER_SETTINGS: dict[str, Any] = {
    # The paper's MVTec AD settings (METHOD.md §4); the "paper" profile uses them.
    "image_size": 256,
    "backbone": "efficientnet_b4",
    "hidden_dim": 256,
    "dim_feedforward": 1024,
    "num_encoder_layers": 4,
    "num_decoder_layers": 4,
    "num_heads": 8,
    "epochs": 500,
    "batch_size": 16,
    "lr": 1e-4,
    "weight_decay": 1e-4,
    "lr_milestones": (400,),
}


PAPER_PLUS_EPOCHS = 300  # ADTR+: 300 more epochs with L_px on confetti anomalies


_SETTING_NAMES = {
    "image_size": "image size",
    "backbone": "backbone",
    "hidden_dim": "width",
    "dim_feedforward": "FFN",
    "num_encoder_layers": "encoder layers",
    "num_decoder_layers": "decoder layers",
    "num_heads": "heads",
    "epochs": "epochs",
    "batch_size": "batch",
    "lr": "lr",
    "weight_decay": "weight decay",
    "lr_milestones": "lr milestones",
}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return "/".join(str(v) for v in value)
    return str(value)


def settings_note(cfg: ExperimentConfig, paper_epochs: int | None = None) -> str:
    """Where a run departs from the paper's settings, for figure captions.

    Args:
        cfg: the run's config.
        paper_epochs: the paper's epoch count for this kind of run (default 500; pass
            :data:`PAPER_PLUS_EPOCHS` for ADTR+).

    Returns:
        ``"paper settings"`` or e.g. ``"shrunk from the paper: image size 128 (paper 256),
        epochs 20 (paper 500), ..."``.
    """
    paper = dict(PAPER_SETTINGS)
    if paper_epochs is not None:
        paper["epochs"] = paper_epochs
        paper["lr_milestones"] = cfg.lr_milestones  # ADTR+'s schedule is not given
    changed = []
    if cfg.steps is not None:  # a budget in optimiser steps replaces the epoch counts
        paper_milestones = paper.pop("lr_milestones")
        milestones = [m for m in cfg.lr_milestones if m < cfg.steps]
        ours = f"{cfg.steps} steps" + (
            f", lr x{cfg.lr_gamma:g} at step {_fmt(milestones)}" if milestones else ""
        )
        theirs = f"{paper.pop('epochs')} epochs" + (
            f", lr x0.1 at epoch {_fmt(paper_milestones)}" if paper_epochs is None else ""
        )
        changed.append(f"{ours} (paper {theirs})")
    for key, ref in paper.items():
        ours = getattr(cfg, key)
        if _fmt(ours) != _fmt(ref):
            changed.append(f"{_SETTING_NAMES[key]} {_fmt(ours)} (paper {_fmt(ref)})")
    if not changed:
        return "paper settings"
    return "shrunk from the paper: " + ", ".join(changed)
