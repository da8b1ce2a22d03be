"""Peak memory of a run, estimated before any work, so that what cannot fit is refused.

A run that needs more memory than the machine has would otherwise grow until the
kernel's out-of-memory killer ends it (or another process) without a word.
:func:`check_fits` estimates the largest terms of a run from its settings and refuses,
in one line with the estimate and the memory available, a run whose estimate exceeds it:

- the images kept in memory (uint8, ``S x S x 3`` each) and their backbone features
  (float32, ``C x (S/16)^2`` each with C up to 720, about ``3 x (S/16)^2`` KB);
- the larger of one backbone batch (16 images; about 512 bytes per input pixel, measured
  with EfficientNet-Lite0 on the CPU) and one training batch of the reconstruction network
  (attention maps of ``K = (S/16)^2`` tokens, ``B x heads x K^2`` floats per attention
  layer, and the feed-forward activations, each kept for the backward pass).

The estimate errs on the high side by design (a factor of about 1.5 on the backbone);
it is a bound against runaway settings, not a prediction.

Example:
    >>> from adtr_core.runs.experiment import ExperimentConfig
    >>> estimate_bytes(ExperimentConfig(image_size=256), num_images=300) < 4 * 2**30
    True
"""

from __future__ import annotations

BACKBONE_BYTES_PER_PIXEL = 512  # measured: ~450 (256 px) and ~350 (768 px), EfficientNet-Lite0
BACKBONE_BATCH = 16  # images per backbone call (adtr_core.runs.features.extract_features)
FEATURE_CHANNELS = 720  # stages 1..5 of EfficientNet-B4 (24+32+56+160+448); Lite0 has 512
RESERVE_BYTES = 512 * 2**20  # the interpreter, torch and the backbone's weights


class MemoryLimitError(ValueError):
    """A run whose estimated peak memory exceeds the memory available."""


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def estimate_bytes(cfg, num_images: int | None = None) -> int:
    """The estimated peak memory of training and evaluating ``cfg`` on ``num_images`` images.

    Args:
        cfg: an :class:`adtr_core.runs.config.ExperimentConfig` (image_size, batch_size and
            the widths of the reconstruction network are read).
        num_images: training plus test images; None: the per-batch terms only.
    """
    s = int(cfg.image_size)
    tokens = (s // 16) ** 2  # K
    per_image = s * s * 3 + FEATURE_CHANNELS * tokens * 4  # cached image + its features
    cached = per_image * (num_images or 0)
    backbone = BACKBONE_BATCH * s * s * (BACKBONE_BYTES_PER_PIXEL + 12)  # + the float input
    b = int(cfg.batch_size)
    layers = int(cfg.num_encoder_layers) + 2 * int(cfg.num_decoder_layers)  # self + cross
    attention = b * int(cfg.num_heads) * tokens * tokens * 4 * layers * 2
    feedforward = b * tokens * int(cfg.dim_feedforward) * 4 * layers * 2
    width = b * tokens * int(cfg.hidden_dim) * 4 * layers * 4
    training = attention + feedforward + width
    return int(cached + max(backbone, training) + RESERVE_BYTES)


def available_bytes(device: str = "cpu") -> int:
    """Memory the run may use: the host's available memory, or the GPU's free memory."""
    if str(device).startswith("cuda"):
        import torch

        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    import psutil

    return int(psutil.virtual_memory().available)


def check_fits(cfg, num_images: int | None = None, device: str = "cpu") -> int:
    """Refuse ``cfg`` when its estimated peak memory exceeds the memory available.

    Returns:
        The estimate in bytes.

    Raises:
        MemoryLimitError: one line with the estimate, the memory available and the
            settings to lower.
    """
    need = estimate_bytes(cfg, num_images)
    have = available_bytes(device)
    if need > have:
        where = "GPU memory free" if str(device).startswith("cuda") else "memory available"
        images = f" on {num_images} images" if num_images else ""
        raise MemoryLimitError(
            f"this run needs about {_gib(need)} of memory{images} (image_size="
            f"{cfg.image_size}, batch_size={cfg.batch_size}, hidden_dim={cfg.hidden_dim}, "
            f"{(cfg.image_size // 16) ** 2} tokens) but {_gib(have)} is {where}: lower "
            "image_size or batch_size (the paper uses image_size=256)"
        )
    return need
