"""A peer on the same work: ADTR against a stack of ``torch.nn`` transformer layers.

The peer has ADTR's sizes (input and output projections C <-> D, 4 encoder and 4 decoder
post-norm layers, D = 256, 8 heads, FFN 1024, ReLU, dropout 0.1, a learned K x D query
embedding) but is made of ``nn.TransformerEncoderLayer`` / ``nn.TransformerDecoderLayer``,
which add no position to the queries and keys inside each attention: the sine position
embedding is added once to the tokens and to the queries instead. The peer therefore does
slightly *less* work than ADTR (ADTR adds the position in every attention and projects the
cross-attention keys from ``memory + pos``). In eval mode without gradients the
``nn.TransformerEncoder`` takes PyTorch's fused "fast path"; both use
``scaled_dot_product_attention`` inside.

Compared: the forward pass (eval, inference mode) and one training step at the same batch,
taken by the package's own :meth:`adtr_core.runs.train.Trainer.step` (forward, the L_norm loss,
backward, gradient clipping, AdamW). :func:`step_trainer` builds that trainer for the other
benchmarks too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from adtr_core.method.losses import l_norm
from adtr_core.method.model import ADTR, ADTRConfig, sine_position_embedding
from adtr_core.runs.train import TrainConfig, Trainer
from benchmarks.harness import Plan, interleaved, median, ratio


class TorchTransformerPeer(nn.Module):
    """ADTR's sizes built from ``torch.nn`` layers; same forward contract (B, C, h, w)."""

    def __init__(self, cfg: ADTRConfig) -> None:
        super().__init__()
        d = cfg.hidden_dim
        self.cfg = cfg
        self.input_proj = nn.Linear(cfg.in_channels, d)
        enc = nn.TransformerEncoderLayer(
            d, cfg.num_heads, cfg.dim_feedforward, cfg.dropout, batch_first=True
        )
        dec = nn.TransformerDecoderLayer(
            d, cfg.num_heads, cfg.dim_feedforward, cfg.dropout, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(
            enc, cfg.num_encoder_layers, enable_nested_tensor=False
        )
        self.decoder = nn.TransformerDecoder(dec, cfg.num_decoder_layers)
        self.query_embed = nn.Embedding(cfg.num_tokens, d)
        self.output_proj = nn.Linear(d, cfg.in_channels)
        pos = sine_position_embedding(cfg.grid, d, cfg.pos_temperature)  # (K, D)
        self.register_buffer("pos_embed", pos, persistent=False)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        b, c, h, w = f.shape
        tokens = f.flatten(2).transpose(1, 2)  # (B, K, C)
        pos = self.pos_embed.unsqueeze(0).to(tokens.dtype)  # (1, K, D)
        memory = self.encoder(self.input_proj(tokens) + pos)  # (B, K, D)
        queries = (self.query_embed.weight.unsqueeze(0) + pos).expand(b, -1, -1)  # (B, K, D)
        y = self.decoder(queries, memory)  # (B, K, D)
        return self.output_proj(y).transpose(1, 2).reshape(b, c, h, w)  # (B, C, h, w)


def _config(plan: Plan) -> ADTRConfig:
    side = plan.image_size // 16
    return ADTRConfig(in_channels=plan.peer_channels, grid=(side, side), **plan.adtr)


def _l_norm(model: nn.Module, f: torch.Tensor) -> torch.Tensor:
    return l_norm(f, model(f))


def step_trainer(
    model: nn.Module,
    device: torch.device,
    bf16: bool,
    loss_fn: Callable[[nn.Module, Any], torch.Tensor] = _l_norm,
) -> Trainer:
    """The package's Trainer over ``model``, whose :meth:`~Trainer.step` the benchmarks time.

    Its settings are the training's defaults (AdamW, lr 1e-4, weight decay 1e-4, gradient
    clipping at 0.1); ``bf16``: the loss under bf16 autocast (on CUDA and on the CPU).
    Batches are given to ``step`` directly, already on ``device``; the trainer's own data
    (one placeholder sample) is never read.

    Args:
        loss_fn: ``loss_fn(model, batch)``; default: L_norm of features ``batch``.
    """
    config = TrainConfig(device=str(device), amp=bf16, cpu_amp=bf16, progress=False)
    return Trainer(model, loss_fn, (torch.zeros(1),), config)


def run(plan: Plan, device: torch.device) -> dict[str, Any]:
    """Forward and training-step times of ADTR and the peer, and the ratios peer / ADTR."""
    cfg = _config(plan)
    torch.manual_seed(0)
    adtr = ADTR(cfg).to(device)
    peer = TorchTransformerPeer(cfg).to(device)
    n_adtr = sum(p.numel() for p in adtr.parameters())
    n_peer = sum(p.numel() for p in peer.parameters())
    g = torch.Generator().manual_seed(0)
    f = torch.randn(plan.peer_batch, cfg.in_channels, *cfg.grid, generator=g).to(device)
    bf16 = device.type == "cuda"

    def forward(model: nn.Module):
        def call() -> None:
            with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
                model(f)

        return call

    adtr.eval(), peer.eval()
    with torch.inference_mode():
        fwd = interleaved({"adtr": forward(adtr), "peer": forward(peer)}, plan.rounds, device)
    adtr.train(), peer.train()
    trainers = {"adtr": step_trainer(adtr, device, bf16), "peer": step_trainer(peer, device, bf16)}
    steps = interleaved(
        {name: (lambda t=t: t.step(f)) for name, t in trainers.items()}, plan.rounds, device
    )
    return {
        "batch": plan.peer_batch,
        "tokens": cfg.num_tokens,
        "params": {"adtr": n_adtr, "peer": n_peer},
        "forward_ms": {k: 1000 * median(v) for k, v in fwd.items()},
        "train_step_ms": {k: 1000 * median(v) for k, v in steps.items()},
        "forward_ratio": ratio(fwd["peer"], fwd["adtr"]),  # > 1: ADTR faster
        "train_ratio": ratio(steps["peer"], steps["adtr"]),
        "precision": "bf16 autocast" if bf16 else "fp32",
        "times_s": {"forward": fwd, "train_step": steps},
    }
