"""ADTR beside anomalib's PaDiM and PatchCore in one table, by anomalib's own benchmark job.

Each model is run by :class:`anomalib.pipelines.benchmark.job.BenchmarkJob`, the job of
anomalib's benchmark pipeline (seed, ``Engine.fit``, ``Engine.test`` in a temporary folder)
and the rows are gathered by its ``collect``. PaDiM and PatchCore are anomalib's own Lightning
modules (:class:`LitePadim`, :class:`LitePatchcore` only give them the package's offline
backbone weights, through :class:`adtr_core.runs.peers.Peer`, since anomalib's defaults would
download theirs); ADTR is :class:`~adtr_core.deploy.anomalib_model.Adtr`. All three see the same
images, image size, backbone (EfficientNet-Lite0 by default) and anomalib metrics.

Example:
    >>> from adtr_core.deploy.anomalib_model.benchmark import benchmark_table
    >>> table = benchmark_table("data/mvtec_ad", "bottle", profile="quick")  # doctest: +SKIP

    or ``python -m adtr_core.deploy.anomalib_model.benchmark --root data/mvtec_ad --out table.csv``.

See Also:
    :mod:`adtr_core.deploy.anomalib_model.lightning_model`: the ADTR model;
    :mod:`adtr_core.runs.peers`: the same PaDiM and PatchCore outside Lightning.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from anomalib.models import Padim, Patchcore
from anomalib.pre_processing import PreProcessor
from torchvision.transforms.v2 import Compose, Normalize, Resize

from adtr_core.runs.peers import PEER_LABELS, PeerConfig, build_peer

from .lightning_model import Adtr, adtr_config

MODELS = ("padim", "patchcore", "adtr")
LABELS = {**PEER_LABELS, "adtr": "ADTR"}
COLUMNS = ("model", "image_AUROC", "pixel_AUROC", "fit_duration", "test_duration")


def _peer_pre_processor(peer) -> PreProcessor:
    """Resize, then normalise as the peer's backbone weights expect."""
    size = (peer.config.image_size, peer.config.image_size)
    mean, std = peer.mean.flatten().tolist(), peer.std.flatten().tolist()
    return PreProcessor(transform=Compose([Resize(size, antialias=True), Normalize(mean, std)]))


class LitePadim(Padim):
    """anomalib's PaDiM on the package's offline backbone weights (:class:`adtr_core.runs.peers.Peer`).

    Args:
        image_size: side of the square input.
        backbone, weights, stages, seed: as :class:`adtr_core.runs.peers.PeerConfig`.
    """

    def __init__(
        self,
        image_size: int = 256,
        backbone: str = "tf_efficientnet_lite0",
        weights: str = "auto",
        stages: Sequence[int] | None = None,
        seed: int = 0,
    ) -> None:
        peer = build_peer(PeerConfig("padim", backbone, weights, stages, image_size, seed=seed))
        super().__init__(
            backbone=backbone,
            layers=[s - 1 for s in peer.config.stages],
            pre_trained=False,
            n_features=peer.model.n_features,
            pre_processor=_peer_pre_processor(peer),
        )
        self.model = peer.model  # the anomalib torch model with the package's weights


class LitePatchcore(Patchcore):
    """anomalib's PatchCore on the package's offline backbone weights.

    Args:
        image_size: side of the square input.
        backbone, weights, stages, seed: as :class:`adtr_core.runs.peers.PeerConfig`.
        coreset_ratio, max_coreset: the share of training patches kept, and its cap, as
            :class:`adtr_core.runs.peers.PeerConfig` (every patch, no cap).
    """

    def __init__(
        self,
        image_size: int = 256,
        backbone: str = "tf_efficientnet_lite0",
        weights: str = "auto",
        stages: Sequence[int] | None = None,
        seed: int = 0,
        coreset_ratio: float = PeerConfig.coreset_ratio,
        max_coreset: int | None = PeerConfig.max_coreset,
    ) -> None:
        config = PeerConfig(
            "patchcore",
            backbone,
            weights,
            stages,
            image_size,
            coreset_ratio=coreset_ratio,
            max_coreset=max_coreset,
            seed=seed,
        )
        peer = build_peer(config)
        super().__init__(
            backbone=backbone,
            layers=[s - 1 for s in peer.config.stages],
            pre_trained=False,
            coreset_sampling_ratio=coreset_ratio,
            num_neighbors=peer.config.num_neighbors,
            pre_processor=_peer_pre_processor(peer),
        )
        self.peer_config = config
        self.model = peer.model

    def fit(self) -> None:
        """anomalib's coreset subsampling, the ratio capped at ``max_coreset`` patches."""
        patches = int(sum(e.shape[0] for e in self.model.embedding_store))
        cap = self.peer_config.max_coreset
        if cap is not None and patches:
            self.coreset_sampling_ratio = min(self.coreset_sampling_ratio, cap / patches)
        super().fit()


def build_models(profile: str = "quick", overrides: dict[str, Any] | None = None) -> dict:
    """The three models at one profile's image size, backbone and seed, by key of MODELS."""
    cfg = adtr_config(profile, overrides=overrides)
    peers = dict(
        image_size=cfg.image_size,
        backbone=cfg.backbone,
        weights=cfg.backbone_weights,
        seed=cfg.seed,
    )
    return {
        "padim": lambda: LitePadim(**peers),
        "patchcore": lambda: LitePatchcore(**peers),
        "adtr": lambda: Adtr(profile=profile, overrides=overrides),
    }


def benchmark_table(
    root: str | Path,
    category: str = "bottle",
    profile: str = "quick",
    models: Sequence[str] = MODELS,
    overrides: dict[str, Any] | None = None,
    accelerator: str = "cpu",
    num_workers: int = 0,
) -> pd.DataFrame:
    """Fit and test each model on one MVTec AD category with anomalib's benchmark job.

    Args:
        root: an MVTec AD root (the folder holding ``<category>/train/good``).
        category: the category.
        profile: ADTR's profile; its image size, backbone, seed and batch size serve all three.
        models: keys of :data:`MODELS`.
        overrides: ExperimentConfig fields over ADTR's profile (e.g. ``{"steps": 50}``).
        accelerator: ``"cpu"`` or ``"cuda"`` (anomalib's benchmark accepts these two).
        num_workers: data-loading workers.

    Returns:
        One row per model: ``model``, anomalib's ``image_AUROC`` and ``pixel_AUROC`` (in
        [0, 1]), ``fit_duration`` and ``test_duration`` (seconds), then anomalib's other columns.
    """
    from anomalib.data import MVTecAD
    from anomalib.pipelines.benchmark.job import BenchmarkJob

    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        raise ValueError(f"unknown model(s) {', '.join(unknown)}: choose from {', '.join(MODELS)}")
    cfg = adtr_config(profile, overrides=overrides)
    builders = build_models(profile, overrides)
    rows = []
    for key in models:
        datamodule = MVTecAD(
            root=root,
            category=category,
            train_batch_size=cfg.batch_size,
            eval_batch_size=32,
            num_workers=num_workers,
        )
        flat_cfg = {"model": LABELS[key], "data": "MVTecAD", "category": category}
        job = BenchmarkJob(accelerator, builders[key](), datamodule, cfg.seed, flat_cfg)
        rows.append(job.run())
    table = BenchmarkJob.collect(rows)
    first = [c for c in COLUMNS if c in table.columns]
    return table[first + [c for c in table.columns if c not in first]]


def main(argv: Sequence[str] | None = None) -> pd.DataFrame:
    """``python -m adtr_core.deploy.anomalib_model.benchmark``: the table as Markdown, and a CSV."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="data/mvtec_ad", help="MVTec AD root")
    parser.add_argument("--category", default="bottle")
    parser.add_argument("--profile", default="quick", choices=("smoke", "quick", "paper"))
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--accelerator", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--out", type=Path, default=None, help="CSV file to write")
    args = parser.parse_args(argv)
    table = benchmark_table(
        args.root, args.category, args.profile, args.models, accelerator=args.accelerator
    )
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out, index=False)
    print(table[[c for c in COLUMNS if c in table.columns]].to_markdown(index=False))
    return table


if __name__ == "__main__":
    main()
