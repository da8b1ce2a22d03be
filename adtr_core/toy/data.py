"""Token data sets of the Sec. 3.2 analysis: synthetic tokens and tokens from feature maps.

:class:`ToyData` holds normal training tokens ``x+ in R^{K x C}`` per sample, normal and
anomalous test tokens and the mask of the anomalous ones. :func:`make_toy_tokens` draws
synthetic tokens, either position-aligned like the features of aligned images
(``structure="aligned"``: token ``k = mu_k + low-rank variation + noise``) or i.i.d. across
positions (``structure="iid"``: the same token distribution with the positions shuffled per
sample); :func:`tokens_from_features` turns feature maps of normal and defective images and
their defect masks into :class:`ToyData` (the backbone features themselves come from the
experiment layer, :func:`adtr_core.toy.feature_tokens.feature_tokens`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from adtr_core.method.masks import mask_to_grid

STRUCTURES = ("aligned", "iid")
ANOMALY_KINDS = ("random", "swap")


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
    smaller, non-zero part does (neither clearly normal nor anomalous). The covered fraction
    is :func:`adtr_core.method.masks.mask_to_grid` with ``rule="fraction"``.

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
    frac = mask_to_grid(torch.as_tensor(test_masks)[labels], grid, "fraction").flatten(1)  # (M', K)
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
