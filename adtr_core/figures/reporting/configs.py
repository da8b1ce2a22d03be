"""The runs each table needs: ADTR, ADTR+ and the peers, built the same way by every notebook.

:func:`category_configs` / :func:`plus_configs`: the ADTR runs of every category and the
ADTR+ runs started from them (``loss="px"`` on confetti anomalies, ``init_from`` = the ADTR
results folder), so that equal settings give equal configs, hence shared results folders;
:func:`image_label_configs`: ADTR+ with image labels only (``loss="img"``).
:func:`peer_configs` / :func:`peer_methods`: the runs of anomalib's PaDiM and PatchCore
(:mod:`adtr_core.runs.peers`) on the same categories, image size, backbone and weights as the
ADTR configs, as table rows next to ADTR's; :func:`sweep_with_peers` trains ADTR and fits its
peers in one sweep.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from adtr_core.runs.config import ExperimentConfig
from adtr_core.runs.results import RunResult


def category_configs(
    categories: Sequence[str], data: str = "mvtec", data_root: str | None = None, **settings: Any
) -> list[ExperimentConfig]:
    """One normal-only ADTR config per category, all with the same settings.

    Args:
        categories: the categories to run, in table order.
        data: the data source (``mvtec``, ``demo``, ``folder``...).
        data_root: its root folder (None: the configured root, else the embedded data).
        **settings: :class:`ExperimentConfig` overrides (image_size, steps, hidden_dim...).

    Raises:
        ValueError: ``categories`` is empty, or a setting is not an ExperimentConfig field.
    """
    if not categories:
        raise ValueError("no categories to run: pass at least one category (or None for all)")
    return [
        ExperimentConfig.from_dict(
            {**settings, "data": data, "data_root": data_root, "category": c}
        )
        for c in categories
    ]


def table_configs(
    data: str = "auto", categories: Sequence[str] | None = None, **settings: Any
) -> tuple[list[ExperimentConfig], str]:
    """The configs of a table over categories that may come from several data sources.

    ``data="auto"`` covers the embedded real bottle category and the demo textures (or
    MVTec AD alone when ``MVTEC_ROOT`` is set: :func:`adtr_core.data.sources.resolve_data_sources`).

    Args:
        data: ``"auto"`` or one data source.
        categories: the categories to run, in table order, each taken from the first source
            that has it; None: every category of every source
            (:func:`~adtr_core.data.sources.table_categories`: the embedded screw split is
            reached by name only).
        **settings: :class:`ExperimentConfig` overrides, equal for all categories.

    Returns:
        ``(configs, note)``: one config per category, and the sources' notes for captions.

    Raises:
        ValueError: a category that no source has (the message lists the ones there are).
    """
    from adtr_core.data.sources import list_categories, resolve_data_sources, table_categories

    sources = resolve_data_sources(data)
    available = [(s, root, list_categories(s, root)) for s, root, _ in sources]
    every = [c for s, root, _ in sources for c in table_categories(s, root)]
    wanted = list(categories) if categories is not None else every
    configs = []
    for category in wanted:
        found = next(((s, root) for s, root, cs in available if str(category) in cs), None)
        if found is None:
            known = ", ".join(c for *_, cs in available for c in cs)
            raise ValueError(f"unknown category {category!r} for data {data!r}; there are: {known}")
        configs += category_configs([str(category)], data=found[0], data_root=found[1], **settings)
    return configs, "; ".join(note for *_, note in sources)


def plus_configs(base: Sequence[RunResult], **overrides: Any) -> list[ExperimentConfig]:
    """ADTR+ configs: each normal-only run continued with L_px on confetti anomalies.

    Args:
        base: finished normal-only runs; each ADTR+ run starts from its ``out_dir``.
        **overrides: further changes, typically ``epochs`` (the paper: 300 more epochs)
            and ``lr_milestones``.

    Returns:
        One config per base run: its config with ``loss="px"``, ``anomalies="confetti"``,
        ``init_from`` = the base run's results folder, and ``overrides`` applied.
    """
    configs = []
    for run in base:
        if run.config.loss != "norm":
            raise ValueError(
                f"ADTR+ starts from a normal-only run, but {run.out_dir} used loss="
                f"{run.config.loss!r}; pass the results of the loss='norm' sweep"
            )
        values = {
            **run.config.to_dict(),
            "loss": "px",
            "anomalies": "confetti",
            "init_from": str(run.out_dir),
            **overrides,
        }
        configs.append(ExperimentConfig.from_dict(values))
    return configs


def image_label_configs(plus: Sequence[ExperimentConfig]) -> list[ExperimentConfig]:
    """The ADTR+ configs of :func:`plus_configs` trained with image labels only (L_img).

    Each is its ADTR+ config with ``loss="img"`` and ``anomalies=None``, which picks the
    outliers by data: CIFAR-100 images for CIFAR-10 (outlier exposure), else confetti.
    """
    return [
        ExperimentConfig.from_dict({**cfg.to_dict(), "loss": "img", "anomalies": None})
        for cfg in plus
    ]


def image_label_note(configs: Sequence[ExperimentConfig]) -> str:
    """Which outliers the runs of :func:`image_label_configs` saw, for captions."""
    if not configs:
        return "L_img not run"
    if configs[0].anomalies == "cifar100":
        return "L_img outliers: CIFAR-100 images (outlier exposure, the paper's CIFAR-10 setting)"
    return (
        "L_img outliers: the confetti images, with their image label only "
        "(CIFAR-100 outliers are used when the data is CIFAR-10)"
    )


# What a peer run shares with the ADTR run beside it; every other field keeps its default,
# so the peers' results folders do not change with ADTR's training settings.
PEER_SHARED_FIELDS = (
    "data",
    "data_root",
    "category",
    "image_size",
    "backbone",
    "backbone_weights",
    "seed",
    "device",
)


def peer_configs(base: Sequence[ExperimentConfig], model: str) -> list[ExperimentConfig]:
    """The ``model`` run ("padim" or "patchcore") of each ADTR config in ``base``.

    Each has the ADTR config's data, category, image size, backbone, weights, seed and
    device, and the peer's own layers (:data:`adtr_core.runs.peers.DEFAULT_STAGES`).
    """
    from adtr_core.runs.peers import PEER_MODELS

    if model not in PEER_MODELS:
        raise ValueError(f"unknown peer {model!r}: choose one of {', '.join(PEER_MODELS)}")
    return [
        ExperimentConfig.from_dict(
            {"model": model, **{k: getattr(cfg, k) for k in PEER_SHARED_FIELDS}}
        )
        for cfg in base
    ]


def peer_methods(
    base: Sequence[ExperimentConfig], executor: str = "local", runs_dir: str | None = None
) -> dict[str, dict[str, dict[str, Any]]]:
    """``{"PaDiM": {category: metrics}, "PatchCore": {...}}`` for
    :func:`per_category_metric_table`.

    Runs (or loads, when finished) the peer runs of :func:`peer_configs`, every peer in one
    :func:`adtr_core.runs.sweep.run_sweep`.
    """
    return _sweep_with_peers([], base, executor, runs_dir)[1]


def sweep_with_peers(
    base: Sequence[ExperimentConfig], executor: str = "local", runs_dir: str | None = None
) -> tuple[list[RunResult], dict[str, dict[str, dict[str, Any]]]]:
    """Trains (or loads) the ADTR runs ``base`` and fits their peers in one sweep.

    With the Ray executor the peers' fits then share the cores with ADTR's runs instead of
    starting after the last of them (what :func:`peer_methods` after a sweep of ``base``
    would do).

    Returns:
        ADTR's results in the order of ``base``, and :func:`peer_methods`' table rows.
    """
    return _sweep_with_peers(base, base, executor, runs_dir)


def _sweep_with_peers(
    own: Sequence[ExperimentConfig],
    base: Sequence[ExperimentConfig],
    executor: str,
    runs_dir: str | None,
) -> tuple[list[RunResult], dict[str, dict[str, dict[str, Any]]]]:
    from adtr_core.figures.reporting.tables import metrics_by_category
    from adtr_core.runs.peers import PEER_LABELS
    from adtr_core.runs.sweep import run_sweep

    # PatchCore's exact search is the slowest fit (about 160 s on bottle against PaDiM's 30):
    # queued first, it runs beside ADTR's last runs rather than alone at the end.
    order = sorted(PEER_LABELS, key=lambda model: model != "patchcore")
    peers = {model: peer_configs(base, model) for model in order}
    queue = [*own, *(cfg for cfgs in peers.values() for cfg in cfgs)]
    results = run_sweep(queue, executor=executor, runs_dir=runs_dir)
    rest = list(results[len(own) :])
    fitted = {}
    for model, cfgs in peers.items():
        fitted[model] = metrics_by_category(rest[: len(cfgs)])
        rest = rest[len(cfgs) :]
    methods = {label: fitted[model] for model, label in PEER_LABELS.items()}
    return list(results[: len(own)]), methods
