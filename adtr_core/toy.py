"""The "identical mapping" analysis of Sec. 3.2: one-layer reconstructors on tokens.

The paper's argument (Sec. 3.2, eqs. 4-5): a fully connected layer ``x_hat = x w + b``
(eq. 4; a 1x1 convolution is the same layer, an n x n convolution can do whatever it does)
trained with MSE on normal tokens ``x+ in R^{K x C}`` may take the shortcut ``w -> I, b -> 0``
and then reconstructs anomalous tokens ``x-`` as well as normal ones, while one attention layer
with a learnable query ``q in R^{K x C}``, ``x_hat = softmax(q x^T / sqrt(C)) x`` (eq. 5, no
value projection), has to tie ``q`` to the normal tokens to make the attention map ~ I, and so
cannot reconstruct ``x-``. This module makes that claim testable; it is the hypothesis, not an
expected output.

What is here:

* Data, as :class:`ToyData` (normal training tokens, normal and anomalous test tokens, a token
  mask): :func:`make_toy_tokens` draws synthetic tokens, either position-aligned like the
  features of aligned images (``structure="aligned"``: token ``k = mu_k + low-rank variation +
  noise``) or i.i.d. across positions (``structure="iid"``: the same token distribution with the
  positions shuffled per sample); :func:`real_feature_tokens` takes backbone features of normal
  and defective images (anomalous tokens = feature cells inside the defect masks).
* Models (:func:`build_toy_model`), all ``(B, K, C) -> (B, K, C)``: ``"fc"`` (eq. 4),
  ``"conv1x1"``, ``"conv3x3"`` (tokens on the ``sqrt(K) x sqrt(K)`` grid), ``"attention_query"``
  (eq. 5) and the control ``"attention_self"``, whose queries are the inputs themselves:
  ``softmax((x W_q)(x W_k)^T / sqrt(C)) x`` with ``W_q = W_k = I`` at initialisation (exactly
  ``softmax(x x^T / sqrt(C)) x``) and trainable, so that it has parameters to train.
* Measurements (:func:`evaluate_toy`): ``||w - I||_F / ||I||_F`` and ``||b||`` of FC / conv
  layers, the attention map's ``||A - I||_F / ||I||_F`` and diagonal mass, the reconstruction
  error on normal and anomalous tokens, their ratio and the token AUROC of the per-token error
  (eq. 3, ``||x - x_hat||_2`` per token).
* Runs: :func:`run_toy` trains one model through the package's one trainer
  (:class:`adtr_core.train.Trainer`, MSE loss on normal tokens only) and records the
  measurements every ``eval_every`` epochs; :func:`run_toy_grid` runs models x seeds;
  :func:`sweep_toy` maps one or two settings (data rank, weight decay, width, epochs, ...);
  :func:`summary_table` reduces curves to final-epoch mean and std per model.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

MODEL_KINDS = ("fc", "conv1x1", "conv3x3", "attention_query", "attention_self")
WEIGHT_KINDS = ("fc", "conv1x1", "conv3x3")  # layers with a C x C weight and a bias
ATTENTION_KINDS = ("attention_query", "attention_self")
STRUCTURES = ("aligned", "iid")
ANOMALY_KINDS = ("random", "swap")
INITS = ("default", "zero", "identity")

# Display names (figures, tables).
MODEL_LABELS = {
    "fc": "FC (eq. 4)",
    "conv1x1": "conv 1x1 (= FC)",
    "conv3x3": "conv 3x3",
    "attention_query": "attention, learned query (eq. 5)",
    "attention_self": "attention, query = input (control)",
}

# Measurements recorded by evaluate_toy; NaN where a model does not have the quantity.
METRICS = (
    "err_pos",  # mean per-token MSE on normal test samples
    "err_neg",  # mean per-token MSE on the anomalous tokens of anomalous samples
    "err_neg_normal",  # mean per-token MSE on the normal tokens of anomalous samples
    "err_ratio",  # err_neg / err_pos
    "err_neg_rel",  # err_neg / mean square of the anomalous tokens: 0 = reconstructed, ~1 = not
    "auroc",  # token AUROC of ||x - x_hat||_2 (anomalous tokens vs all normal tokens)
    "w_dist",  # ||w - I||_F / ||I||_F (FC, conv1x1; conv3x3: kernel vs the identity kernel)
    "b_norm",  # ||b||_2
    "attn_dist",  # ||A - I||_F / ||I||_F on normal test samples (attention models)
    "diag_mass",  # mean of diag(A) on normal test samples
    "diag_mass_anom",  # mean of A_kk over the anomalous tokens k of anomalous samples
)

# Columns of the summary table, in this order.
SUMMARY_METRICS = (
    "err_pos",
    "err_neg",
    "err_ratio",
    "err_neg_rel",
    "auroc",
    "w_dist",
    "b_norm",
    "attn_dist",
    "diag_mass",
    "diag_mass_anom",
)


# ---------------------------------------------------------------------------------------------
# Data


@dataclass
class ToyData:
    """Tokens for the Sec. 3.2 analysis: normal training data and a labelled test set.

    Attributes:
        x_train: ``(N, K, C)`` normal tokens, the only training data.
        x_test_pos: ``(M, K, C)`` normal test tokens (``x+``).
        x_test_neg: ``(M', K, C)`` anomalous test samples (``x-``): normal samples in which
            some positions hold out-of-distribution tokens.
        token_mask: ``(M', K)`` bool, True where a token of ``x_test_neg`` is anomalous.
        grid: ``(h, w)`` with ``h * w = K``: the layout of the tokens for the 3x3 convolution.
        name: a short label (figures, tables).
        token_ignore: ``(M', K)`` bool or None; tokens left out of every measurement (e.g.
            feature cells only partly covered by a defect mask).
        info: free-form description of how the data was made.
    """

    x_train: torch.Tensor
    x_test_pos: torch.Tensor
    x_test_neg: torch.Tensor
    token_mask: torch.Tensor
    grid: tuple[int, int]
    name: str = "toy"
    token_ignore: torch.Tensor | None = None
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for attr in ("x_train", "x_test_pos", "x_test_neg"):
            t = getattr(self, attr)
            if t.ndim != 3:
                raise ValueError(f"ToyData.{attr} must be (N, K, C); got {tuple(t.shape)}")
        k, c = self.x_train.shape[1:]
        for attr in ("x_test_pos", "x_test_neg"):
            if tuple(getattr(self, attr).shape[1:]) != (k, c):
                raise ValueError(
                    f"ToyData.{attr} has tokens {tuple(getattr(self, attr).shape[1:])}, "
                    f"x_train has {(k, c)}: all token sets must share K and C"
                )
        if tuple(self.token_mask.shape) != tuple(self.x_test_neg.shape[:2]):
            raise ValueError(
                f"ToyData.token_mask must be (M', K) = {tuple(self.x_test_neg.shape[:2])}; "
                f"got {tuple(self.token_mask.shape)}"
            )
        if self.grid[0] * self.grid[1] != k:
            raise ValueError(f"ToyData.grid {self.grid} does not hold K = {k} tokens")
        self.token_mask = self.token_mask.bool()
        if self.token_ignore is not None:
            self.token_ignore = self.token_ignore.bool()

    @property
    def K(self) -> int:  # noqa: N802 (paper notation)
        return int(self.x_train.shape[1])

    @property
    def C(self) -> int:  # noqa: N802 (paper notation)
        return int(self.x_train.shape[2])

    def describe(self) -> dict[str, Any]:
        """Sizes and anomaly fraction, for captions and tables."""
        valid = ~self.token_ignore if self.token_ignore is not None else None
        n_anom = int(
            (self.token_mask & valid).sum() if valid is not None else self.token_mask.sum()
        )
        return {
            "name": self.name,
            "K": self.K,
            "C": self.C,
            "n_train": int(self.x_train.shape[0]),
            "n_test_pos": int(self.x_test_pos.shape[0]),
            "n_test_neg": int(self.x_test_neg.shape[0]),
            "anomalous_tokens": n_anom,
            **self.info,
        }


@dataclass
class ToyDataConfig:
    """How synthetic tokens are drawn (:func:`make_toy_tokens`).

    A normal sample is ``x[k] = mu[k] + sum_r z[r] V[r, k] + noise * eps[k]`` for positions
    ``k < K``: a position-dependent mean (aligned images look alike at the same place), a
    low-rank variation shared by the sample (``rank`` latent factors ``z ~ N(0, 1)``) and
    isotropic noise. ``mu`` and ``V`` lie in a random ``channel_rank``-dimensional subspace of
    ``R^C``; the noise fills all ``C`` channels. Token entries have unit variance on average.

    Attributes:
        K: Number of tokens per sample; a square (the 3x3 convolution lays them on a grid).
        C: Channels per token.
        structure: "aligned" (position-dependent, as aligned images) or "iid" (the same token
            distribution with the positions shuffled independently in every sample, so that
            the position carries no information).
        rank: Number of latent factors of the per-sample variation.
        channel_rank: Dimension of the channel subspace holding ``mu`` and ``V``; None = C
            (normal tokens span all channels, the case where ``w = I`` is the exact optimum).
        variation: Norm of the variation relative to the mean, per token.
        noise: Standard deviation of the isotropic noise, per channel.
        anomaly_fraction: Fraction of the K positions replaced in every anomalous sample
            (at least one).
        anomaly_kind: "random" (a Gaussian direction in all C channels, scaled to the mean norm
            of normal tokens times ``anomaly_scale``: out of distribution) or "swap" (the mean
            token of another position: in distribution as a token, wrong only in its place).
        anomaly_scale: Norm of "random" anomalous tokens relative to normal ones.
        n_train: Normal training samples.
        n_test: Normal test samples, and as many anomalous ones.
        seed: Seed of the generator (the same seed gives the same data).
    """

    K: int = 64  # noqa: N815 (paper notation)
    C: int = 32  # noqa: N815 (paper notation)
    structure: str = "aligned"
    rank: int = 4
    channel_rank: int | None = None  # None = C: tokens span every channel
    variation: float = 0.5
    noise: float = 0.1
    anomaly_fraction: float = 0.1
    anomaly_kind: str = "random"
    anomaly_scale: float = 1.0
    n_train: int = 256
    n_test: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        side = math.isqrt(self.K) if self.K > 0 else 0
        if self.K < 2 or side * side != self.K:
            raise ValueError(
                f"ToyDataConfig.K must be a square >= 4 (tokens on a sqrt(K) x sqrt(K) grid); "
                f"got {self.K}"
            )
        if self.C < 1:
            raise ValueError(f"ToyDataConfig.C must be >= 1; got {self.C}")
        if self.structure not in STRUCTURES:
            raise ValueError(f"structure must be one of {STRUCTURES}; got {self.structure!r}")
        if self.anomaly_kind not in ANOMALY_KINDS:
            raise ValueError(
                f"anomaly_kind must be one of {ANOMALY_KINDS}; got {self.anomaly_kind!r}"
            )
        if self.channel_rank is not None and not 1 <= self.channel_rank <= self.C:
            raise ValueError(
                f"channel_rank must be in [1, C={self.C}] or None; got {self.channel_rank}"
            )
        if not 0.0 < self.anomaly_fraction < 1.0:
            raise ValueError(f"anomaly_fraction must be in (0, 1); got {self.anomaly_fraction}")
        if self.n_train < 1 or self.n_test < 1:
            raise ValueError("n_train and n_test must be >= 1")
        if self.rank < 0 or self.noise < 0 or self.variation < 0:
            raise ValueError("rank, noise and variation must be >= 0")


def make_toy_tokens(cfg: ToyDataConfig | None = None, **overrides: Any) -> ToyData:
    """Draw normal training tokens and a test set with out-of-distribution tokens.

    Args:
        cfg: the data configuration (default :class:`ToyDataConfig`).
        **overrides: fields of the configuration to replace, e.g. ``C=16``.

    Returns:
        A :class:`ToyData` with ``x_train`` ``(n_train, K, C)``, ``x_test_pos`` and
        ``x_test_neg`` ``(n_test, K, C)``, ``token_mask`` ``(n_test, K)``.
    """
    cfg = dataclasses.replace(cfg or ToyDataConfig(), **overrides)
    g = torch.Generator().manual_seed(int(cfg.seed))
    K, C = cfg.K, cfg.C  # noqa: N806 (paper notation)
    d = cfg.channel_rank or C
    basis, _ = torch.linalg.qr(torch.randn(C, C, generator=g))  # (C, C) orthonormal
    basis = basis[:, :d]  # (C, d)
    scale = math.sqrt(C / d)  # unit variance per channel on average
    mu = torch.randn(K, d, generator=g) @ basis.T * scale  # (K, C)
    n_factors = max(cfg.rank, 1)
    factors = torch.randn(n_factors, K, d, generator=g) @ basis.T  # (R, K, C)
    factors = factors * (scale * cfg.variation / math.sqrt(n_factors))
    if cfg.rank == 0:
        factors = factors * 0.0

    def draw(n: int) -> torch.Tensor:
        z = torch.randn(n, n_factors, generator=g)  # (n, R)
        x = mu + torch.einsum("nr,rkc->nkc", z, factors)  # (n, K, C)
        x = x + cfg.noise * torch.randn(n, K, C, generator=g)
        if cfg.structure == "iid":  # same tokens, positions shuffled per sample
            perm = torch.argsort(torch.rand(n, K, generator=g), dim=1)  # (n, K)
            x = torch.gather(x, 1, perm[..., None].expand(n, K, C))
        return x

    x_train, x_test_pos, x_test_neg = draw(cfg.n_train), draw(cfg.n_test), draw(cfg.n_test)
    n_anom = max(1, round(cfg.anomaly_fraction * K))
    order = torch.argsort(torch.rand(cfg.n_test, K, generator=g), dim=1)  # (M, K)
    token_mask = torch.zeros(cfg.n_test, K, dtype=torch.bool)
    token_mask.scatter_(1, order[:, :n_anom], True)
    mean_norm = float(x_train.norm(dim=-1).mean())
    if cfg.anomaly_kind == "random":
        ood = torch.randn(cfg.n_test, n_anom, C, generator=g)  # (M, n_anom, C)
        ood = ood / ood.norm(dim=-1, keepdim=True) * (mean_norm * cfg.anomaly_scale)
    else:  # "swap": the mean token of another position
        shift = torch.randint(1, K, (cfg.n_test, n_anom), generator=g)  # (M, n_anom)
        ood = mu[(order[:, :n_anom] + shift) % K]  # (M, n_anom, C)
    x_test_neg = x_test_neg.clone()
    x_test_neg[token_mask] = ood.reshape(-1, C)  # row-major order matches the mask's
    # token_mask is filled in position order, ood in draw order; both are arbitrary draws.
    side = math.isqrt(K)
    info = {
        "structure": cfg.structure,
        "rank": cfg.rank,
        "channel_rank": d,
        "noise": cfg.noise,
        "anomaly_fraction": n_anom / K,
        "anomaly_kind": cfg.anomaly_kind,
    }
    return ToyData(
        x_train=x_train,
        x_test_pos=x_test_pos,
        x_test_neg=x_test_neg,
        token_mask=token_mask,
        grid=(side, side),
        name=f"toy-{cfg.structure}",
        info=info,
    )


def mask_to_tokens(masks: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Fraction of each feature cell covered by a defect mask.

    Args:
        masks: ``(B, 1, S, S)`` (or ``(B, S, S)``) masks in {0, 1}.
        grid: ``(h, w)`` feature grid.

    Returns:
        ``(B, h * w)`` covered fraction in [0, 1], row-major like the tokens.
    """
    if masks.ndim == 3:
        masks = masks[:, None]
    if masks.ndim != 4:
        raise ValueError(f"masks must be (B, 1, S, S) or (B, S, S); got {tuple(masks.shape)}")
    frac = F.adaptive_avg_pool2d(masks.float(), grid)  # (B, 1, h, w)
    return frac.flatten(1)  # (B, h*w)


def features_to_tokens(features: torch.Tensor) -> torch.Tensor:
    """``(B, C, h, w)`` feature maps to ``(B, K = h*w, C)`` tokens, row-major."""
    if features.ndim != 4:
        raise ValueError(f"features must be (B, C, h, w); got {tuple(features.shape)}")
    return features.flatten(2).transpose(1, 2).contiguous()  # (B, K, C)


def tokens_from_features(
    train_features: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    test_masks: torch.Tensor,
    mask_threshold: float = 0.5,
    standardize: bool = True,
    name: str = "features",
    info: dict | None = None,
) -> ToyData:
    """Build :class:`ToyData` from feature maps of normal and test images.

    Normal tokens: every cell of the training images; ``x+`` test tokens: the normal test
    images; ``x-``: the defective test images, where a token is anomalous when at least
    ``mask_threshold`` of its cell lies inside the defect mask and is ignored when only a
    smaller, non-zero part does (neither clearly normal nor anomalous).

    Args:
        train_features: ``(N, C, h, w)`` features of normal training images.
        test_features: ``(M, C, h, w)`` features of test images.
        test_labels: ``(M,)`` 1 = defective.
        test_masks: ``(M, 1, S, S)`` defect masks.
        mask_threshold: covered fraction from which a cell counts as anomalous.
        standardize: scale every channel to zero mean and unit variance over the training
            tokens (the same affine map on all sets), so that the attention logits and the
            learning rate mean the same across backbones.
        name: label of the data.
        info: extra description.

    Raises:
        ValueError: no normal or no defective test image, or no cell reaches the threshold.
    """
    grid = tuple(int(s) for s in train_features.shape[-2:])
    x_train = features_to_tokens(train_features.float())  # (N, K, C)
    x_test = features_to_tokens(test_features.float())  # (M, K, C)
    labels = torch.as_tensor(test_labels).reshape(-1).bool()
    if labels.all() or not labels.any():
        raise ValueError(
            "the test set needs both normal (label 0) and defective (label 1) images; "
            f"got {int(labels.sum())} defective of {labels.numel()}"
        )
    frac = mask_to_tokens(torch.as_tensor(test_masks)[labels], grid)  # (M', K)
    token_mask = frac >= mask_threshold
    token_ignore = (frac > 0) & ~token_mask
    if not token_mask.any():
        raise ValueError(
            f"no feature cell is covered by a defect mask to at least {mask_threshold}; "
            "lower mask_threshold or use larger defects"
        )
    if standardize:
        flat = x_train.reshape(-1, x_train.shape[-1])  # (N*K, C)
        mean, std = flat.mean(0), flat.std(0).clamp_min(1e-6)
        x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    return ToyData(
        x_train=x_train,
        x_test_pos=x_test[~labels],
        x_test_neg=x_test[labels],
        token_mask=token_mask,
        grid=grid,  # type: ignore[arg-type]
        name=name,
        token_ignore=token_ignore,
        info={"standardized": standardize, "mask_threshold": mask_threshold, **(info or {})},
    )


def real_feature_tokens(
    source: str = "demo",
    category: str = "brick",
    data_root: str | Path | None = None,
    image_size: int = 128,
    backbone: str = "tf_efficientnet_lite0",
    stages: Sequence[int] = (1, 2, 3, 4, 5),
    max_train: int | None = None,
    mask_threshold: float = 0.5,
    standardize: bool = True,
    device: str | None = None,
) -> ToyData:
    """Backbone features of normal and defective images as tokens.

    Normal tokens come from the training images (``train/good``), ``x+`` test tokens from the
    normal test images, anomalous tokens from the cells of defective test images inside their
    defect masks (masks downsampled to the feature grid, see :func:`tokens_from_features`).

    Args:
        source: "mvtec" (MVTec AD from ``data_root`` or ``MVTEC_ROOT``, else the embedded
            bottle category) or "demo" (the demo textures, built on first use); any source of ``adtr_core.data.open_dataset``
            with masks works.
        category: the category (folder) to use.
        data_root: the dataset root; None = the default of the source.
        image_size: input size ``S``; the grid is ``S/16 x S/16`` (``K = (S/16)^2``).
        backbone: backbone name (``adtr_core.backbone.BackboneConfig.name``).
        stages: backbone stages to concatenate.
        max_train: use at most this many training images (the first ones); None = all.
        mask_threshold: see :func:`tokens_from_features`.
        standardize: see :func:`tokens_from_features`.
        device: feature extraction device; None = the package default.

    Raises:
        ValueError: the source has no pixel masks, or no root is configured.
    """
    from adtr_core.backbone import BackboneConfig, build_backbone
    from adtr_core.data import open_dataset
    from adtr_core.features import extract_features

    train = open_dataset(source, data_root, category, "train", image_size)
    test = open_dataset(source, data_root, category, "test", image_size)
    if not getattr(test, "has_masks", True):
        raise ValueError(
            f"{source}/{category} has no pixel masks: anomalous tokens need defect masks; "
            "choose a source with masks (demo, mvtec, folder with masks)"
        )
    if max_train is not None and max_train < len(train):
        train = torch.utils.data.Subset(train, range(int(max_train)))
    net = build_backbone(BackboneConfig(name=backbone, stages=tuple(stages), image_size=image_size))
    kwargs = {} if device is None else {"device": device}
    f_train = extract_features(net, train, **kwargs)
    f_test = extract_features(net, test, **kwargs)
    return tokens_from_features(
        torch.as_tensor(f_train.features),
        torch.as_tensor(f_test.features),
        torch.as_tensor(f_test.labels),
        torch.as_tensor(f_test.masks),
        mask_threshold=mask_threshold,
        standardize=standardize,
        name=f"{source}/{category} {backbone}",
        info={
            "source": source,
            "category": category,
            "backbone": backbone,
            "image_size": image_size,
        },
    )


# ---------------------------------------------------------------------------------------------
# Models


def _init_weight(weight: torch.Tensor, bias: torch.Tensor | None, init: str) -> None:
    """Initialise a (C_out, C_in, *kernel) or (C_out, C_in) weight: default / zero / identity."""
    if init == "default":
        return  # PyTorch's default (Kaiming-uniform weight, uniform bias)
    with torch.no_grad():
        weight.zero_()
        if bias is not None:
            bias.zero_()
        if init == "identity":
            c = min(weight.shape[0], weight.shape[1])
            centre = tuple(s // 2 for s in weight.shape[2:])
            idx = torch.arange(c)
            weight[(idx, idx, *centre)] = 1.0


class FCReconstructor(nn.Module):
    """Eq. 4: ``x_hat = x w + b``, the same ``w in R^{C x C}`` for every token.

    ``nn.Linear`` stores ``w^T``; ``||w - I||`` is the same either way.

    Args:
        C: channels.
        init: "default" (PyTorch's Kaiming-uniform weight and uniform bias), "zero" (w = 0,
            b = 0) or "identity" (w = I, b = 0: the shortcut itself, as a reference).
    """

    def __init__(self, C: int, init: str = "default") -> None:  # noqa: N803
        super().__init__()
        self.linear = nn.Linear(C, C)
        _init_weight(self.linear.weight, self.linear.bias, init)

    def weight_matrix(self) -> torch.Tensor:
        """``w`` of eq. 4, ``(C, C)`` (input channels x output channels)."""
        return self.linear.weight.T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, K, C) -> (B, K, C)``."""
        return self.linear(x)


class ConvReconstructor(nn.Module):
    """One ``n x n`` convolution on the tokens laid out on their ``h x w`` grid.

    Args:
        C: channels.
        grid: ``(h, w)`` with ``h * w = K``.
        kernel_size: 1 (equivalent to eq. 4) or an odd size (3: the paper's "n x n kernel").
        init: as in :class:`FCReconstructor`; "identity" puts ``I`` at the kernel's centre.
    """

    def __init__(
        self,
        C: int,  # noqa: N803
        grid: tuple[int, int],
        kernel_size: int = 1,
        init: str = "default",
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd (same padding); got {kernel_size}")
        self.grid = tuple(grid)
        self.conv = nn.Conv2d(C, C, kernel_size, padding=kernel_size // 2)
        _init_weight(self.conv.weight, self.conv.bias, init)

    def weight_matrix(self) -> torch.Tensor:
        """The centre tap as ``w`` of eq. 4, ``(C, C)`` (input x output channels)."""
        k = self.conv.kernel_size[0] // 2
        return self.conv.weight[:, :, k, k].T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, K, C) -> (B, K, C)``."""
        b, k, c = x.shape
        h, w = self.grid
        if h * w != k:
            raise ValueError(f"{k} tokens do not fit the {h}x{w} grid of this convolution")
        img = x.transpose(1, 2).reshape(b, c, h, w)  # (B, C, h, w)
        out = self.conv(img)  # (B, C, h, w)
        return out.flatten(2).transpose(1, 2)  # (B, K, C)


class QueryAttention(nn.Module):
    """Eq. 5: ``x_hat = softmax(q x^T / sqrt(C)) x`` with a learnable query ``q in R^{K x C}``.

    No key, value or output projection (as in eq. 5): ``x_hat`` is a convex combination of
    the input tokens.

    Args:
        K: tokens.
        C: channels.
        init: "default" (``q ~ N(0, 1)``, as ``nn.Embedding`` / DETR's query embedding) or
            "zero" (uniform attention at the start).
    """

    def __init__(self, K: int, C: int, init: str = "default") -> None:  # noqa: N803
        super().__init__()
        if init not in ("default", "zero"):
            raise ValueError(f"attention_query init must be 'default' or 'zero'; got {init!r}")
        self.query = nn.Parameter(torch.randn(K, C) if init == "default" else torch.zeros(K, C))

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, K, C) -> (B, K, K)`` attention map, rows sum to 1."""
        if x.shape[1] != self.query.shape[0]:
            raise ValueError(f"{x.shape[1]} tokens, but the query has {self.query.shape[0]}")
        logits = torch.einsum("qc,bkc->bqk", self.query, x) / math.sqrt(x.shape[-1])  # (B, K, K)
        return logits.softmax(dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, K, C) -> (B, K, C)``."""
        return self.attention(x) @ x  # (B, K, K) @ (B, K, C)


class SelfAttention(nn.Module):
    """Control: queries from the input, ``softmax((x W_q)(x W_k)^T / sqrt(C)) x``.

    ``W_q = W_k = I`` at initialisation (the plain ``softmax(x x^T / sqrt(C)) x``), trainable
    so that the layer has something to learn; no value projection, like eq. 5.

    Args:
        C: channels.
        init: "identity" (``W_q = W_k = I``) or "default" (PyTorch's Linear init).
    """

    def __init__(self, C: int, init: str = "identity") -> None:  # noqa: N803
        super().__init__()
        if init not in ("identity", "default"):
            raise ValueError(f"attention_self init must be 'identity' or 'default'; got {init!r}")
        self.w_q = nn.Linear(C, C, bias=False)
        self.w_k = nn.Linear(C, C, bias=False)
        if init == "identity":
            with torch.no_grad():
                self.w_q.weight.copy_(torch.eye(C))
                self.w_k.weight.copy_(torch.eye(C))

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, K, C) -> (B, K, K)`` attention map, rows sum to 1."""
        q, k = self.w_q(x), self.w_k(x)  # (B, K, C) each
        return (q @ k.transpose(1, 2) / math.sqrt(x.shape[-1])).softmax(dim=-1)  # (B, K, K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, K, C) -> (B, K, C)``."""
        return self.attention(x) @ x


def build_toy_model(
    kind: str,
    K: int,  # noqa: N803
    C: int,  # noqa: N803
    init: str = "default",
    grid: tuple[int, int] | None = None,
) -> nn.Module:
    """One of the Sec. 3.2 reconstructors, ``(B, K, C) -> (B, K, C)``.

    Args:
        kind: one of ``MODEL_KINDS``.
        K: tokens (a square when ``grid`` is None and ``kind == "conv3x3"``).
        C: channels.
        init: "default" everywhere (PyTorch's init; ``q ~ N(0, 1)``; ``W_q = W_k = I`` for
            attention_self); "zero" / "identity" for fc and conv (see :class:`FCReconstructor`);
            "zero" for attention_query.
        grid: token layout for the convolutions; default ``sqrt(K) x sqrt(K)``.

    Raises:
        ValueError: unknown kind or init, or K not a square for a convolution.
    """
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown toy model {kind!r}: choose one of {', '.join(MODEL_KINDS)}")
    if kind in WEIGHT_KINDS and init not in INITS:
        raise ValueError(f"init must be one of {INITS} for {kind}; got {init!r}")
    if kind == "fc":
        return FCReconstructor(C, init)
    if kind in ("conv1x1", "conv3x3"):
        if grid is None:
            side = math.isqrt(K)
            if side * side != K:
                raise ValueError(
                    f"{kind} lays the K={K} tokens on a square grid: K must be a square"
                )
            grid = (side, side)
        return ConvReconstructor(C, grid, 1 if kind == "conv1x1" else 3, init)
    if kind == "attention_query":
        return QueryAttention(K, C, init)
    return SelfAttention(C, "identity" if init == "default" else init)


# ---------------------------------------------------------------------------------------------
# Measurements


def identity_distance(model: nn.Module) -> dict[str, float]:
    """How far an FC / conv layer is from the identity shortcut ``w = I, b = 0``.

    Returns:
        ``{"w_dist": ||w - I||_F / ||I||_F, "b_norm": ||b||_2}``. For a conv kernel larger
        than 1x1 the reference is the identity kernel (``I`` at the centre tap, 0 elsewhere).

    Raises:
        TypeError: the model has no C x C weight (the attention layers).
    """
    if isinstance(model, FCReconstructor):
        weight, bias = model.linear.weight, model.linear.bias  # (C, C), (C,)
        target = torch.eye(weight.shape[0], device=weight.device)
    elif isinstance(model, ConvReconstructor):
        weight, bias = model.conv.weight, model.conv.bias  # (C, C, n, n), (C,)
        target = torch.zeros_like(weight)
        _init_weight(target, None, "identity")
    else:
        raise TypeError(
            f"identity_distance needs an FC or conv reconstructor, not {type(model).__name__}"
        )
    c = weight.shape[0]
    with torch.no_grad():
        return {
            "w_dist": float((weight - target).norm() / math.sqrt(c)),
            "b_norm": float(bias.norm()),
        }


def attention_map(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The attention map of an attention reconstructor on tokens ``x`` ``(B, K, C)``.

    Returns:
        ``(B, K, K)``; row ``k`` holds the weights token ``k`` gives to the input tokens.

    Raises:
        TypeError: the model is not an attention layer.
    """
    if not isinstance(model, (QueryAttention, SelfAttention)):
        raise TypeError(f"attention_map needs an attention layer, not {type(model).__name__}")
    device = next(model.parameters()).device
    with torch.no_grad():
        return model.attention(x.to(device)).cpu()


def attention_identity_stats(attn: torch.Tensor) -> dict[str, float]:
    """``||A - I||_F / ||I||_F`` (mean over the batch) and the mean of ``diag(A)``.

    Args:
        attn: ``(B, K, K)`` attention maps.
    """
    k = attn.shape[-1]
    eye = torch.eye(k, dtype=attn.dtype, device=attn.device)
    dist = (attn - eye).flatten(1).norm(dim=1) / math.sqrt(k)  # (B,)
    diag = attn.diagonal(dim1=-2, dim2=-1)  # (B, K)
    return {"attn_dist": float(dist.mean()), "diag_mass": float(diag.mean())}


def token_errors(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Per-token squared reconstruction error, mean over channels: ``(B, K)``."""
    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for chunk in x.split(batch_size):
            chunk = chunk.to(device)
            out.append((model(chunk) - chunk).pow(2).mean(-1).cpu())  # (b, K)
    return torch.cat(out)


def token_auroc(
    errors_pos: torch.Tensor,
    errors_neg: torch.Tensor,
    token_mask: torch.Tensor,
    token_ignore: torch.Tensor | None = None,
) -> float:
    """AUROC of per-token errors: anomalous tokens against all normal tokens.

    Normal tokens are all tokens of the normal samples plus the unmasked tokens of the
    anomalous samples (a pixel AUROC on the token grid). A monotone transform of the error
    (e.g. ``||x - x_hat||_2`` of eq. 3 instead of the squared error) gives the same AUROC.

    Args:
        errors_pos: ``(M, K)`` errors on normal samples.
        errors_neg: ``(M', K)`` errors on anomalous samples.
        token_mask: ``(M', K)`` True = anomalous token.
        token_ignore: ``(M', K)`` tokens to leave out, or None.

    Returns:
        AUROC in [0, 1] (0.5 = chance; 1 = every anomalous token has a larger error than every
        normal one); NaN (with a warning) when one class is missing.
    """
    from adtr_core.metrics import image_auroc

    keep = ~token_ignore if token_ignore is not None else torch.ones_like(token_mask)
    scores = torch.cat([errors_pos.reshape(-1), errors_neg[keep]])
    labels = torch.cat([torch.zeros(errors_pos.numel(), dtype=torch.bool), token_mask.bool()[keep]])
    return image_auroc(labels, scores)


def evaluate_toy(model: nn.Module, data: ToyData) -> dict[str, float]:
    """Every measurement of :data:`METRICS` for one model on one data set.

    Returns:
        dict metric -> value; NaN for quantities the model does not have (``w_dist`` of an
        attention layer, ``attn_dist`` of an FC layer).
    """
    was_training = model.training
    model.eval()
    try:
        e_pos = token_errors(model, data.x_test_pos)  # (M, K)
        e_neg = token_errors(model, data.x_test_neg)  # (M', K)
        valid = ~data.token_ignore if data.token_ignore is not None else None
        anom = data.token_mask if valid is None else data.token_mask & valid
        norm_in_neg = ~data.token_mask if valid is None else ~data.token_mask & valid
        out = {m: math.nan for m in METRICS}
        out["err_pos"] = float(e_pos.mean())
        out["err_neg"] = float(e_neg[anom].mean())
        out["err_neg_normal"] = float(e_neg[norm_in_neg].mean()) if norm_in_neg.any() else math.nan
        out["err_ratio"] = out["err_neg"] / max(out["err_pos"], 1e-12)
        energy = data.x_test_neg[anom].pow(2).mean()  # mean square of the anomalous tokens
        out["err_neg_rel"] = out["err_neg"] / max(float(energy), 1e-12)
        out["auroc"] = token_auroc(e_pos, e_neg, data.token_mask, data.token_ignore)
        if isinstance(model, (FCReconstructor, ConvReconstructor)):
            out.update(identity_distance(model))
        if isinstance(model, (QueryAttention, SelfAttention)):
            out.update(attention_identity_stats(attention_map(model, data.x_test_pos)))
            diag = attention_map(model, data.x_test_neg).diagonal(dim1=-2, dim2=-1)  # (M', K)
            out["diag_mass_anom"] = float(diag[anom].mean())
    finally:
        model.train(was_training)
    return out


# ---------------------------------------------------------------------------------------------
# Runs


class _Tokens(torch.utils.data.Dataset):
    """Normal training tokens, one ``(K, C)`` sample per item."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.x[i]


def mse_loss(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """The training loss: MSE between normal tokens ``(B, K, C)`` and their reconstruction."""
    if isinstance(batch, (list, tuple)):
        batch = batch[0]
    return F.mse_loss(model(batch), batch)


@dataclass
class ToyRun:
    """One trained toy model and its measurement curves (long format, see :func:`run_toy`)."""

    curves: pd.DataFrame
    model: nn.Module


def run_toy(
    kind: str,
    data: ToyData,
    epochs: int = 50,
    lr: float = 1e-2,
    weight_decay: float = 0.0,
    seed: int = 0,
    eval_every: int = 5,
    batch_size: int = 32,
    init: str = "default",
    device: str = "cpu",
    labels: Mapping[str, Any] | None = None,
) -> ToyRun:
    """Train one reconstructor on the normal tokens with MSE, measuring it along the way.

    Training goes through :class:`adtr_core.train.Trainer` (AdamW, constant lr, no gradient
    clipping, no AMP); the measurements are its ``eval_fn``, plus one before training
    (epoch 0).

    Args:
        kind: one of ``MODEL_KINDS``.
        data: the tokens.
        epochs: training epochs (``ceil(n_train / batch_size)`` steps each).
        lr: AdamW learning rate.
        weight_decay: AdamW decoupled weight decay (shrinks ``w`` towards 0, not towards I).
        seed: seeds the model's initialisation and the Trainer (data order).
        eval_every: epochs between measurements (and after the last epoch).
        batch_size: samples per step.
        init: model initialisation, see :func:`build_toy_model`.
        device: training device ("cpu": these layers are tiny).
        labels: extra columns for the curves (e.g. the value of a swept setting).

    Returns:
        :class:`ToyRun`; ``curves`` has one row per (epoch, metric) with columns ``kind``,
        ``seed``, ``epoch``, ``step``, ``metric``, ``value``, ``data`` and ``labels``' keys;
        ``metric`` takes the values of :data:`METRICS` and ``"train_loss"``.
    """
    from adtr_core.train import TrainConfig, Trainer, seed_everything

    seed_everything(seed)
    model = build_toy_model(kind, data.K, data.C, init=init, grid=data.grid)
    config = TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        lr_milestones=(),
        grad_clip=None,
        seed=seed,
        device=device,
        amp=False,
        eval_every=eval_every,
        checkpoint_every=0,
        progress=False,
    )
    trainer = Trainer(
        model, mse_loss, _Tokens(data.x_train), config, eval_fn=lambda m: evaluate_toy(m, data)
    )
    rows = [{"epoch": 0, **evaluate_toy(trainer.model, data)}]
    for row in trainer.fit():
        if "err_pos" in row:
            rows.append({k: row[k] for k in ("epoch", "loss", *METRICS)})
    steps_per_epoch = len(trainer.loader)
    wide = pd.DataFrame(rows).rename(columns={"loss": "train_loss"})
    wide["step"] = wide["epoch"] * steps_per_epoch
    curves = wide.melt(id_vars=["epoch", "step"], var_name="metric", value_name="value")
    curves.insert(0, "seed", seed)
    curves.insert(0, "kind", kind)
    curves["data"] = data.name
    for key, value in (labels or {}).items():
        curves[key] = value
    return ToyRun(curves=curves, model=trainer.model.cpu().eval())


@dataclass
class ToyResult:
    """Curves of several models x seeds, and the trained model of the first seed per kind."""

    curves: pd.DataFrame
    models: dict[str, nn.Module]


def run_toy_grid(
    kinds: Iterable[str], data: ToyData, seeds: Iterable[int] = (0, 1, 2, 3, 4), **kwargs: Any
) -> ToyResult:
    """:func:`run_toy` for every model kind and seed; ``kwargs`` go to :func:`run_toy`."""
    kinds, seeds = list(kinds), list(seeds)
    if not kinds or not seeds:
        raise ValueError("run_toy_grid needs at least one kind and one seed")
    curves, models = [], {}
    for kind in kinds:
        for seed in seeds:
            run = run_toy(kind, data, seed=seed, **kwargs)
            curves.append(run.curves)
            models.setdefault(kind, run.model)
    return ToyResult(curves=pd.concat(curves, ignore_index=True), models=models)


_TRAIN_KEYS = ("epochs", "lr", "weight_decay", "batch_size", "init", "eval_every")


def sweep_toy(
    kinds: Iterable[str],
    base: ToyDataConfig,
    sweep: Mapping[str, Sequence[Any]],
    seeds: Iterable[int] = (0, 1, 2),
    data_seed_per_run: bool = False,
    **train_kwargs: Any,
) -> pd.DataFrame:
    """Final measurements over a grid of one or two settings (a map of where a shortcut appears).

    Args:
        kinds: model kinds.
        base: data configuration the sweep starts from.
        sweep: setting -> values; a setting is a :class:`ToyDataConfig` field (``channel_rank``,
            ``C``, ``noise``, ``structure``, ...) or a training argument (``weight_decay``,
            ``epochs``, ``lr``, ``batch_size``, ``init``). All combinations are run.
        seeds: training seeds (model init and data order).
        data_seed_per_run: also redraw the data with every seed (default: one data set per
            grid point, drawn with ``base.seed``).
        **train_kwargs: fixed arguments of :func:`run_toy`.

    Returns:
        Long-format final-epoch rows: ``kind``, ``seed``, the swept settings, ``metric``,
        ``value`` (reduce with :func:`summary_table` ``by=`` the swept settings).
    """
    data_fields = {f.name for f in dataclasses.fields(ToyDataConfig)}
    unknown = [k for k in sweep if k not in data_fields and k not in _TRAIN_KEYS]
    if unknown:
        raise ValueError(
            f"cannot sweep {unknown}: use ToyDataConfig fields or one of {', '.join(_TRAIN_KEYS)}"
        )
    kinds, seeds, keys = list(kinds), list(seeds), list(sweep)
    frames = []
    for values in itertools.product(*(sweep[k] for k in keys)):
        point = dict(zip(keys, values))
        data_over = {k: v for k, v in point.items() if k in data_fields}
        kw = {**train_kwargs, **{k: v for k, v in point.items() if k not in data_fields}}
        kw["eval_every"] = kw.get("epochs", 50)  # only the final measurement is needed
        data = make_toy_tokens(base, **data_over)
        for seed in seeds:
            if data_seed_per_run:
                data = make_toy_tokens(base, **data_over, seed=base.seed + seed)
            for kind in kinds:
                frames.append(run_toy(kind, data, seed=seed, labels=point, **kw).curves)
    return final_values(pd.concat(frames, ignore_index=True))


def final_values(curves: pd.DataFrame) -> pd.DataFrame:
    """The rows of the last recorded epoch of every run (kind x seed x any label columns)."""
    keys = [c for c in curves.columns if c not in ("epoch", "step", "metric", "value")]
    last = curves.groupby(keys, dropna=False)["epoch"].transform("max")
    return curves[curves["epoch"] == last].reset_index(drop=True)


def summary_table(
    curves: pd.DataFrame,
    metrics: Sequence[str] = SUMMARY_METRICS,
    by: Sequence[str] = ("kind",),
) -> pd.DataFrame:
    """Final-epoch mean and standard deviation over seeds.

    Args:
        curves: long-format curves (:func:`run_toy`, :func:`run_toy_grid`, :func:`sweep_toy`).
        metrics: metrics to keep (columns, in this order).
        by: grouping columns (``"kind"`` plus any swept settings).

    Returns:
        One row per group, columns ``<metric>_mean`` and ``<metric>_std`` (sample std over
        seeds, ``ddof=1``; 0 with one seed) plus ``n_seeds``.
    """
    final = final_values(curves)
    final = final[final["metric"].isin(metrics)]
    by = list(by)
    grouped = final.groupby([*by, "metric"], dropna=False, sort=False)["value"]
    stats = grouped.agg(["mean", "std", "count"]).reset_index()
    stats["std"] = stats["std"].fillna(0.0)
    wide = stats.pivot_table(
        index=by, columns="metric", values=["mean", "std"], dropna=False, sort=False
    )
    table = pd.DataFrame(index=wide.index)
    for m in metrics:
        if ("mean", m) in wide.columns:
            table[f"{m}_mean"] = wide[("mean", m)]
            table[f"{m}_std"] = wide[("std", m)]
    table["n_seeds"] = stats.groupby(by, sort=False)["count"].max()
    if "kind" in by:  # models in MODEL_KINDS order within each group of the other keys
        keys = table.index.to_frame(index=False)
        ranks = []
        for col in by:
            first_seen = {v: i for i, v in enumerate(dict.fromkeys(keys[col]))}
            if col == "kind":
                first_seen = {k: i for i, k in enumerate(MODEL_KINDS)}
            ranks.append(keys[col].map(first_seen).fillna(len(first_seen)).to_numpy())
        table = table.iloc[np.lexsort(ranks[::-1])]
    return table


def format_summary(table: pd.DataFrame, digits: int = 3, flat_index: bool = True) -> pd.DataFrame:
    """``<metric>_mean`` / ``<metric>_std`` column pairs as ``"mean ± std"`` strings (Markdown).

    NaN pairs (a quantity the model does not have) become an empty string. With
    ``flat_index`` a multi-level index (e.g. data, kind) becomes one label ``"data / kind"``.
    """
    out = pd.DataFrame(index=table.index)
    for col in table.columns:
        if col.endswith("_mean"):
            name = col[: -len("_mean")]
            mean, std = table[col], table[f"{name}_std"]
            out[name] = [
                "" if not np.isfinite(m) else f"{m:.{digits}g} ± {s:.1g}" for m, s in zip(mean, std)
            ]
    if "n_seeds" in table.columns:
        out["n_seeds"] = table["n_seeds"].astype(int)
    if flat_index and isinstance(out.index, pd.MultiIndex):  # readable Markdown row labels
        names = [str(n) for n in out.index.names]
        out.index = pd.Index(
            [" / ".join(str(v) for v in key) for key in out.index], name=" / ".join(names)
        )
    return out
