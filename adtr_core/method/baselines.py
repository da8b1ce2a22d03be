"""Baselines to ADTR: the CNN reconstruction of Table 4 and the mean-image baseline.

- :class:`CNNReconstructor`: Table 4's "CNN reconstruction": a convolutional encoder-decoder
  over the same backbone features, with the same forward contract as :class:`~adtr_core.method.model.ADTR`
  and a comparable parameter count (about 6.8M vs ADTR's 7.8M at the paper's sizes). Our design
  (the paper gives none): 1x1 conv C -> 256, two 3x3 conv blocks, a stride-2 3x3 conv to a
  256 -> 512 bottleneck at half resolution, one 3x3 block there, bilinear upsampling back to the
  grid with a 3x3 conv 512 -> 256, two 3x3 blocks, 1x1 conv 256 -> C. No skip connections:
  they would let the network copy its input (the identical shortcut of Sec. 3.2).
  Normalisation is GroupNorm, so train and eval behave alike whatever the batch size.
- :class:`MeanImageBaseline`: the trivial baseline: the score of a pixel is the L2 distance
  over RGB between the image and the mean training image.

Experiments build them, like ADTR, by name through :mod:`adtr_core.method.reconstructors`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class CNNReconstructorConfig:
    """Sizes of :class:`CNNReconstructor`."""

    in_channels: int = 720
    hidden_dim: int = 256  # width at the grid resolution
    bottleneck_mult: int = 2  # width at half resolution = hidden_dim * bottleneck_mult
    blocks: int = 2  # 3x3 conv blocks before the downsampling and after the upsampling
    bottleneck_blocks: int = 1  # 3x3 conv blocks at half resolution
    groups: int = 8  # GroupNorm groups
    dropout: float = 0.1  # before the output projection, matching ADTR's regularisation
    grid: tuple[int, int] = (16, 16)

    def __post_init__(self) -> None:
        self.grid = (int(self.grid[0]), int(self.grid[1]))
        if self.hidden_dim % self.groups:
            raise ValueError(f"hidden_dim={self.hidden_dim} must be divisible by groups")


def _block(c_in: int, c_out: int, groups: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.GroupNorm(groups, c_out),
        nn.ReLU(inplace=True),
    )


class CNNReconstructor(nn.Module):
    """Convolutional encoder-decoder feature reconstruction (Table 4 "CNN reconstruction")."""

    def __init__(self, cfg: CNNReconstructorConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or CNNReconstructorConfig()
        self.cfg = cfg
        d, g = cfg.hidden_dim, cfg.groups
        wide = d * cfg.bottleneck_mult
        self.input_proj = nn.Conv2d(cfg.in_channels, d, 1)
        self.encoder = nn.Sequential(*[_block(d, d, g) for _ in range(cfg.blocks)])
        self.down = _block(d, wide, g, stride=2)
        self.bottleneck = nn.Sequential(
            *[_block(wide, wide, g) for _ in range(cfg.bottleneck_blocks)]
        )
        self.up = _block(wide, d, g)
        self.decoder = nn.Sequential(*[_block(d, d, g) for _ in range(cfg.blocks)])
        self.dropout = nn.Dropout(cfg.dropout)
        self.output_proj = nn.Conv2d(d, cfg.in_channels, 1)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        """Reconstruct features.

        Args:
            f: (B, C, h, w), C = ``cfg.in_channels``, (h, w) = ``cfg.grid``.

        Returns:
            f_hat: (B, C, h, w).
        """
        c, grid = self.cfg.in_channels, self.cfg.grid
        if f.dim() != 4 or f.shape[1] != c or tuple(f.shape[-2:]) != grid:
            raise ValueError(
                f"CNNReconstructor expects features (B, {c}, {grid[0]}, {grid[1]}), got "
                f"{tuple(f.shape)}: build it with in_channels=backbone.channels, grid=backbone.grid"
            )
        x = self.encoder(self.input_proj(f))  # (B, D, h, w)
        x = self.bottleneck(self.down(x))  # (B, 2D, ceil(h/2), ceil(w/2))
        x = F.interpolate(x, size=grid, mode="bilinear", align_corners=False)  # (B, 2D, h, w)
        x = self.decoder(self.up(x))  # (B, D, h, w)
        return self.output_proj(self.dropout(x))  # (B, C, h, w)


class MeanImageBaseline:
    """Trivial baseline: per-pixel L2 distance (over RGB) to the mean training image."""

    def __init__(self) -> None:
        self.mean: torch.Tensor | None = None  # (3, S, S) once fitted

    def fit(self, images: torch.Tensor | Iterable[torch.Tensor]) -> MeanImageBaseline:
        """Average the normal training images.

        Args:
            images: (N, 3, S, S) in [0, 1], or an iterable of such batches.
        """
        batches = [images] if isinstance(images, torch.Tensor) else images
        total, count = None, 0
        for batch in batches:
            if batch.dim() != 4 or batch.shape[1] != 3:
                raise ValueError(f"expected images (N, 3, S, S), got {tuple(batch.shape)}")
            s = batch.detach().double().sum(dim=0)  # (3, S, S)
            total = s if total is None else total + s
            count += batch.shape[0]
        if count == 0:
            raise ValueError("MeanImageBaseline.fit got no images")
        self.mean = (total / count).float()  # (3, S, S)
        return self

    def score_maps(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) -> (N, S, S): L2 distance over RGB to the mean image."""
        if self.mean is None:
            raise RuntimeError("MeanImageBaseline.score_maps called before fit(images)")
        if tuple(images.shape[1:]) != tuple(self.mean.shape):
            raise ValueError(
                f"images {tuple(images.shape)} do not match the fitted mean image "
                f"{tuple(self.mean.shape)}"
            )
        diff = images.float() - self.mean.to(images.device)  # (N, 3, S, S)
        return diff.pow(2).sum(dim=1).sqrt()  # (N, S, S)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
