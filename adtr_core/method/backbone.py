"""The frozen multi-scale feature extractor: the "embedding" step of ADTR (Sec. 3.1, METHOD.md §1).

A timm CNN built with ``features_only=True`` gives one feature map per stage; stage ``s``
(1-based) is timm's ``out_index s - 1`` and has stride ``2**s`` for every supported network
(EfficientNets and ResNets alike: strides 2, 4, 8, 16, 32). Every selected stage is resized
to the stride-16 grid and the maps are concatenated along channels. For the paper's
EfficientNet-B4 and stages 1-5 that is ``24 + 32 + 56 + 160 + 448 = 720`` channels on a
16x16 grid for a 256x256 input.

Resizing to the stride-16 grid (our choice; the paper does not say):

- finer stages (stride 2, 4, 8) are *average pooled* (``adaptive_avg_pool2d``): each grid
  cell gets the mean of the ``2**(4-s)`` x ``2**(4-s)`` block of fine features it covers,
  i.e. area interpolation, which is an anti-aliased downsampling and never drops a pixel;
- the stride-16 stage is used as is;
- coarser stages (stride 32) are upsampled *bilinearly* (``align_corners=False``).

Weights (``BackboneConfig.weights``: ``"auto"``, ``"random"``, ``"timm"`` or a state-dict
file) are resolved by :mod:`adtr_core.method.weights`.

Inputs are images in ``[0, 1]``; the backbone normalises them as its weights expect (timm's
``pretrained_cfg`` mean/std; ``[-1, 1]`` for the EfficientNet-Lite weights). The network is
frozen: ``requires_grad=False`` everywhere, always in eval mode (``.train()`` is a no-op), and
``forward`` runs under ``torch.no_grad()``. (Not ``torch.inference_mode()``: inference tensors
could not be fed to a reconstruction network that is being trained.)

``name="pixels"`` is the patchify backbone of the "reconstruct pixels instead of features"
ablation (Table 4): the tokens are the normalised 16x16 RGB patches themselves,
``3 * 16 * 16 = 768`` channels on the same stride-16 grid, so the same ADTR model and scoring
run unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import timm
import torch
import torch.nn.functional as F
from torch import nn

from adtr_core.method.weights import (
    LITE_NAMES,
    TIMM_NAMES,
    BackboneWeightsError,
    resolve_weights,
    seeded_create,
)

STRIDE = 16  # the grid every stage is resized to: S / 16 cells per side
NUM_STAGES = 5  # stages 1..5 = timm out_indices 0..4, strides 2, 4, 8, 16, 32
PIXELS = "pixels"
SUPPORTED_NAMES = (*TIMM_NAMES, PIXELS)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LITE_MEAN = LITE_STD = (0.5, 0.5, 0.5)  # the lite weights expect inputs in [-1, 1]


@dataclass
class BackboneConfig:
    """Which frozen feature extractor to build.

    Attributes:
        name: a timm name from ``TIMM_NAMES`` or ``"pixels"``.
        stages: 1-based stages to concatenate; stage ``s`` has stride ``2**s``. ``(5,)`` is
            the paper's "last layer only" ablation. Ignored by ``"pixels"``.
        weights: ``"auto"``, ``"random"``, ``"timm"`` or a path to a state-dict file
            (see the module docstring).
        image_size: side ``S`` of the square input images; must be a multiple of 16.
    """

    name: str = "tf_efficientnet_lite0"  # the paper: efficientnet_b4 (weights not offline)
    stages: tuple[int, ...] = (1, 2, 3, 4, 5)
    weights: str = "auto"
    image_size: int = 256

    def __post_init__(self) -> None:
        self.stages = tuple(int(s) for s in self.stages)
        self.weights = str(self.weights)
        if self.name not in SUPPORTED_NAMES:
            raise ValueError(
                f"unknown backbone {self.name!r}: choose one of {', '.join(SUPPORTED_NAMES)}"
            )
        if not self.stages or any(s < 1 or s > NUM_STAGES for s in self.stages):
            raise ValueError(f"stages must be a non-empty subset of 1..5, got {self.stages}")
        if len(set(self.stages)) != len(self.stages) or list(self.stages) != sorted(self.stages):
            raise ValueError(f"stages must be increasing and unique, got {self.stages}")
        if self.image_size <= 0 or self.image_size % STRIDE:
            raise ValueError(f"image_size must be a positive multiple of 16, got {self.image_size}")


def normalisation(name: str, weights: str = "auto") -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` the weights expect for inputs in [0, 1]."""
    if name == PIXELS:
        return IMAGENET_MEAN, IMAGENET_STD
    if name in LITE_NAMES and weights == "auto":
        return LITE_MEAN, LITE_STD
    cfg = timm.models.get_pretrained_cfg(name)
    return tuple(cfg.mean), tuple(cfg.std)


# --------------------------------------------------------------------------- backbone


def patchify(images: torch.Tensor, patch: int = STRIDE) -> torch.Tensor:
    """Split images into non-overlapping patches, one token per grid cell.

    Args:
        images: (B, 3, S, S).
        patch: patch side.

    Returns:
        (B, 3 * patch * patch, S / patch, S / patch); channel index ``c * patch**2 + y * patch
        + x`` holds pixel ``(y, x)`` of colour ``c`` of the patch.
    """
    return F.pixel_unshuffle(images, patch)  # (B, 3*p*p, S/p, S/p)


def unpatchify(tokens: torch.Tensor, patch: int = STRIDE) -> torch.Tensor:
    """Inverse of :func:`patchify`: (B, 3 * p * p, h, w) -> (B, 3, h * p, w * p)."""
    return F.pixel_shuffle(tokens, patch)  # (B, 3, h*p, w*p)


class Backbone(nn.Module):
    """A frozen multi-scale feature extractor (always eval mode, no gradients).

    Build it with :func:`build_backbone`. Attributes:
        channels: C, total channels of the concatenated features (720 for B4 stages 1-5).
        stage_channels: channels per selected stage.
        stage_strides: stride per selected stage.
        grid: (h, w) = (S / 16, S / 16).
        stride: 16.
        weights_id: what the weights are (file name and hash, ``random(seed=0)``, ...).
    """

    stride: int = STRIDE

    def __init__(
        self,
        config: BackboneConfig,
        features: nn.Module | None,
        stage_channels: list[int],
        stage_strides: list[int],
        mean: tuple[float, ...],
        std: tuple[float, ...],
        weights_id: str,
    ) -> None:
        super().__init__()
        self.config = config
        self.features = features  # None for "pixels"
        self.stage_channels = list(stage_channels)
        self.stage_strides = list(stage_strides)
        self.channels = sum(self.stage_channels)
        side = config.image_size // STRIDE
        self.grid = (side, side)
        self.weights_id = weights_id
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        for p in self.parameters():
            p.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> Backbone:
        """A no-op: the backbone stays in eval mode (frozen batch-norm statistics)."""
        return super().train(False)

    def cache_key(self) -> str:
        """Names everything the features depend on: name, stages, weights, image size."""
        if self.features is None:  # patchify: only the size and the normalisation matter
            return f"{PIXELS}|patch={STRIDE}|norm=imagenet|size={self.config.image_size}"
        stages = ",".join(map(str, self.config.stages))
        return (
            f"{self.config.name}|stages={stages}|weights={self.weights_id}"
            f"|size={self.config.image_size}|resize=avgpool+bilinear"
        )

    def extra_repr(self) -> str:
        return (
            f"name={self.config.name}, stages={self.config.stages}, channels={self.channels} "
            f"{self.stage_channels}, strides={self.stage_strides}, grid={self.grid}, "
            f"weights={self.weights_id}, frozen"
        )

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) in [0, 1] -> (B, 3, S, S) normalised as the weights expect."""
        return (images - self.mean) / self.std

    def unpatchify(self, tokens: torch.Tensor) -> torch.Tensor:
        """``"pixels"`` only: tokens (B, 768, h, w) -> images (B, 3, 16h, 16w) in [0, 1] scale."""
        if self.features is not None:
            raise RuntimeError("unpatchify is defined for the 'pixels' backbone only")
        return unpatchify(tokens) * self.std + self.mean  # (B, 3, S, S)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Multi-scale features on the stride-16 grid.

        Args:
            images: (B, 3, S, S) in [0, 1], S = ``config.image_size``.

        Returns:
            (B, C, S / 16, S / 16) float features, C = ``self.channels``.
        """
        size = self.config.image_size
        if images.dim() != 4 or images.shape[1] != 3 or tuple(images.shape[-2:]) != (size, size):
            raise ValueError(
                f"expected images of shape (B, 3, {size}, {size}) in [0, 1], got "
                f"{tuple(images.shape)}: resize them to the backbone's image_size or build the "
                f"backbone with BackboneConfig(image_size=...)"
            )
        x = self.normalise(images.float())  # (B, 3, S, S)
        if self.features is None:
            return patchify(x)  # (B, 768, S/16, S/16)
        maps = self.features(x)  # list of (B, C_s, S/2^s, S/2^s)
        resized = []
        for f in maps:
            if f.shape[-2] > self.grid[0]:  # finer than stride 16: area (average) pooling
                f = F.adaptive_avg_pool2d(f, self.grid)  # (B, C_s, h, w)
            elif f.shape[-2] < self.grid[0]:  # coarser: bilinear upsampling
                f = F.interpolate(f, size=self.grid, mode="bilinear", align_corners=False)
            resized.append(f.float())
        return torch.cat(resized, dim=1)  # (B, C, h, w)


def build_backbone(config: BackboneConfig | None = None) -> Backbone:
    """Build the frozen feature extractor described by ``config``.

    Raises:
        BackboneWeightsError: weights unavailable (fails within seconds) or not fitting.
        ValueError: unknown name / bad stages / bad image size.
    """
    config = config or BackboneConfig()
    name = config.name
    mean, std = normalisation(name, config.weights)
    if name == PIXELS:
        channels = 3 * STRIDE * STRIDE
        return Backbone(config, None, [channels], [STRIDE], mean, std, "none")
    state, weights_id = resolve_weights(name, config.weights)
    out_indices = tuple(s - 1 for s in config.stages)
    features = seeded_create(name, features_only=True, out_indices=out_indices)
    if state is not None:
        # The features model holds a subset of the full model's keys (no head, and no layers
        # after the last selected stage): every one of its tensors must come from ``state``.
        missing, _ = features.load_state_dict(state, strict=False)
        if missing:
            raise BackboneWeightsError(
                f"weights {weights_id} lack {len(missing)} feature tensor(s) of {name}: "
                f"{missing[:5]}"
            )
    info = features.feature_info
    strides = list(info.reduction())
    expected = [2**s for s in config.stages]
    if strides != expected:  # guards the "stage s has stride 2**s" assumption
        raise RuntimeError(f"{name}: stage strides {strides}, expected {expected}")
    return Backbone(config, features, list(info.channels()), strides, mean, std, weights_id)
