"""The paper's Table 4 ablations: the variants, their configs and the table of results.

Each variant changes one thing of the full model (the network, the reconstruction target,
the scales or the backbone) and is run on the same category with otherwise equal settings.
:data:`VARIANTS` names them, with the paper's row each one is compared to;
:func:`variant_configs` turns a base config into one config per variant,
:func:`runnable_variants` sets aside those whose backbone weights are not on this machine, and
:func:`ablation_table` puts our pixel AUROC beside the paper's reported numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from adtr_core.figures.reporting.paper import PAPER_ABLATION_PIXEL_AUROC
from adtr_core.method.backbone import BackboneWeightsError
from adtr_core.runs.config import ExperimentConfig
from adtr_core.runs.experiment import build_feature_extractor
from adtr_core.runs.results import RunResult


@dataclass(frozen=True)
class Variant:
    """One row of Table 4: its label, the paper's row it matches, and what it changes."""

    label: str
    paper_row: str | None  # key of PAPER_ABLATION_PIXEL_AUROC; None: the paper has no such row
    changes: dict[str, Any] = field(default_factory=dict)  # ExperimentConfig overrides


VARIANTS: dict[str, Variant] = {
    "adtr": Variant("ADTR (full model)", "ADTR (attention + query embedding)"),
    "cnn": Variant("network: CNN reconstruction", "CNN reconstruction", {"model": "cnn"}),
    "no_attention": Variant(
        "network: transformer without attention",
        "transformer without attention",
        {"model": "adtr_no_attention"},
    ),
    "no_query": Variant(
        "network: transformer without query embedding",
        "transformer without query embedding",
        {"model": "adtr_no_query"},
    ),
    "pixels": Variant(
        "target: pixels instead of features",
        "reconstruct pixels instead of features",
        {"backbone": "pixels"},
    ),
    "last_layer": Variant("scales: last layer only (stage 5)", "last layer only", {"stages": [5]}),
    "resnet18": Variant("backbone: ResNet-18", "backbone ResNet-18", {"backbone": "resnet18"}),
    "resnet34": Variant("backbone: ResNet-34", "backbone ResNet-34", {"backbone": "resnet34"}),
    "efficientnet_b0": Variant(
        "backbone: EfficientNet-B0", "backbone EffNet-B0", {"backbone": "efficientnet_b0"}
    ),
    "efficientnet_b4": Variant(
        "backbone: EfficientNet-B4", "backbone EffNet-B4", {"backbone": "efficientnet_b4"}
    ),
    "lite0": Variant("backbone: EfficientNet-Lite0", None, {"backbone": "tf_efficientnet_lite0"}),
    "lite1": Variant("backbone: EfficientNet-Lite1", None, {"backbone": "tf_efficientnet_lite1"}),
    "lite2": Variant("backbone: EfficientNet-Lite2", None, {"backbone": "tf_efficientnet_lite2"}),
    "lite0_random": Variant(
        "backbone: EfficientNet-Lite0, random weights",
        None,
        {"backbone": "tf_efficientnet_lite0", "backbone_weights": "random"},
    ),
}
"""Table 4's rows by key ("adtr" is the full model, the reference of every comparison)."""

PAPER_COLUMN = "paper (reported, MVTec AD, EfficientNet-B4)"
"""Column of :func:`ablation_table` holding the paper's pixel AUROC."""


def variant_configs(base: ExperimentConfig, keys: Sequence[str]) -> dict[str, ExperimentConfig]:
    """One config per variant: ``base`` with the variant's changes, ``"adtr"`` always first.

    Raises:
        ValueError: an unknown variant key (the message lists the known ones).
    """
    unknown = sorted(set(keys) - set(VARIANTS))
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}: choose among {sorted(VARIANTS)}")
    ordered = ["adtr"] + [k for k in keys if k != "adtr"]
    return {
        k: ExperimentConfig.from_dict({**base.to_dict(), **VARIANTS[k].changes}) for k in ordered
    }


def runnable_variants(
    configs: Mapping[str, ExperimentConfig],
) -> tuple[dict[str, ExperimentConfig], dict[str, str]]:
    """Split the variants into those that can run and those whose backbone weights are missing.

    Each distinct ``(backbone, backbone_weights)`` is built once
    (:func:`adtr_core.runs.experiment.build_feature_extractor`); a
    :class:`~adtr_core.method.backbone.BackboneWeightsError` sets aside every variant using it.

    Args:
        configs: the variants' configs (:func:`variant_configs`).

    Returns:
        ``(runnable, skipped)``: ``{key: config}`` of the variants that can run, in the
        order of ``configs``, and ``{key: reason}`` (the error's message) of the others.
    """
    checked: dict[tuple[str, str], str | None] = {}
    skipped = {}
    for key, cfg in configs.items():
        weights_key = (cfg.backbone, cfg.backbone_weights)
        if weights_key not in checked:
            try:
                build_feature_extractor(cfg)
                checked[weights_key] = None
            except BackboneWeightsError as err:
                checked[weights_key] = str(err)
        if checked[weights_key] is not None:
            skipped[key] = checked[weights_key]
    runnable = {k: c for k, c in configs.items() if k not in skipped}
    return runnable, skipped


def _stages(cfg: ExperimentConfig) -> str:
    return "n/a (pixels)" if cfg.backbone == "pixels" else "-".join(str(s) for s in cfg.stages)


def ours_column(cfg: ExperimentConfig) -> str:
    """Column of :func:`ablation_table` holding our pixel AUROC, naming data and backbone."""
    return f"ours ({cfg.data}, {cfg.category}, {cfg.backbone})"


def ablation_table(
    configs: Mapping[str, ExperimentConfig],
    results: Mapping[str, RunResult],
    skipped: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Table 4: per variant, the paper's pixel AUROC beside ours (percent), in VARIANTS order.

    Args:
        configs: the variants' configs (:func:`variant_configs`).
        results: finished runs by variant key; a variant without one is shown as skipped.
        skipped: ``{key: reason}`` of variants that could not run (e.g. missing weights).

    Returns:
        DataFrame indexed by the variant's label: ``key``, ``backbone``, ``weights``,
        ``stages``, the paper's and our pixel AUROC, our image AUROC and AU-PRO, wall
        time and a status.
    """
    skipped = skipped or {}
    ours = ours_column(configs["adtr"])
    rows = []
    for key in [k for k in VARIANTS if k in configs]:
        cfg, variant, res = configs[key], VARIANTS[key], results.get(key)

        def metric(name: str, res: RunResult | None = res) -> float:
            value = res.metrics.get(name) if res is not None else None
            return 100.0 * float(value) if value is not None else math.nan

        rows.append(
            {
                "variant": variant.label,
                "key": key,
                "backbone": cfg.backbone,
                "weights": cfg.backbone_weights,
                "stages": _stages(cfg),
                PAPER_COLUMN: PAPER_ABLATION_PIXEL_AUROC.get(variant.paper_row or "", math.nan),
                ours: metric("pixel_auroc"),
                "ours image AUROC": metric("image_auroc"),
                "ours AU-PRO": metric("pixel_aupro"),
                "wall s": float(res.metrics.get("wall_s", math.nan)) if res else math.nan,
                "status": "run"
                if res is not None
                else "skipped: " + skipped.get(key, "not run").split(":")[0],
            }
        )
    return pd.DataFrame(rows).set_index("variant")


def ablation_orderings(table: pd.DataFrame) -> dict[str, bool | None]:
    """The paper's Table 4 findings, checked on our numbers (None: a variant did not run).

    Returns:
        ``{finding: holds}`` for: ADTR above each other network variant (CNN, without
        attention, without query), features above pixels, multi-scale above the last
        layer, and pre-trained above random weights.
    """
    ours = next(c for c in table.columns if c.startswith("ours ("))
    by_key = table.set_index("key")[ours]

    def above(a: str, b: str) -> bool | None:
        if a not in by_key or b not in by_key or math.isnan(by_key[a]) or math.isnan(by_key[b]):
            return None
        return bool(by_key[a] > by_key[b])

    return {
        "ADTR above the CNN": above("adtr", "cnn"),
        "ADTR above the transformer without attention": above("adtr", "no_attention"),
        "ADTR above the transformer without query": above("adtr", "no_query"),
        "features above pixels": above("adtr", "pixels"),
        "multi-scale above the last layer": above("adtr", "last_layer"),
        "pre-trained above random weights": above("adtr", "lite0_random"),
    }
