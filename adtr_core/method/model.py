"""ADTR: the transformer that reconstructs backbone features (Sec. 3.1, METHOD.md §1 step 2).

``f (B, 720, 16, 16)`` is split into ``K = h * w`` tokens, projected 720 -> 256, passed through a
transformer encoder (4 layers) and a transformer decoder (4 layers) whose input is a learnable
query embedding ``q in R^{K x 256}``, and projected back 256 -> 720: the reconstruction ``f_hat``.

Layers follow DETR (post-norm): each sublayer is ``x = LayerNorm(x + Dropout(sublayer(x)))``;
an encoder layer is self-attention then FFN (256 -> 1024 -> 256, ReLU); a decoder layer is
self-attention, cross-attention to the encoder output, then FFN.

Position embedding and cross-attention start (our choices, the paper is silent; docs/choices.md,
docs/fidelity.md): the embedding is added to the queries and keys of every attention, never to
the values (DETR, UniAD). ``pos_embed="grid"`` (default): a fixed 2-D sine embedding resolving
the grid, times ``pos_scale`` (4); ``"sine"``: DETR's; ``"learned"``: learned rows and columns.
``cross_qk_init="tied"`` (default) starts each cross-attention's key projection equal to its
query projection, so the position term of its logits starts largest at the query's own cell.
On unaligned objects and textures the decoder must find each token by position; with DETR's
embedding and start (``sine``, 1, ``xavier``) its attention collapsed to uniform weights.

Ablation switches (Table 4):

- ``use_query=False`` ("transformer without query embedding"): the decoder input is the
  encoder output tokens instead of the learned query embedding.
- ``use_attention=False`` ("transformer without attention"): every attention sublayer is
  removed (its output is zero, so its residual step is ``x = LayerNorm(x)``); each token is
  processed on its own, like the per-token FC of Sec. 3.2. Cross-attention being the only path
  from encoder to decoder, ``no_attention_memory`` (our choice) decides: ``"add"`` (default)
  replaces it by ``x + memory`` (each query reads the encoder token at its own position);
  ``"none"`` removes it literally (the output is a learned per-position template).

Dropout (p = 0.1 on attention weights, after each sublayer and in the FFN, as in DETR) draws
its keep mask on the CPU from 16-bit slices of 64-bit random words (:func:`keep_mask`, four
draws per generator call; torch's CPU ``bernoulli_`` took 40 % of a quick-size step): the same
law up to the 1/65536 grid of the keep probability, kept values scaled by its inverse. On
other devices, or while ``CPU_KEEP_MASK`` is False (the benchmarks' "before" rows), it is
torch's dropout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

NO_ATTENTION_MEMORY = ("add", "none")
POSITION_EMBEDDINGS = ("grid", "sine", "learned")
CROSS_QK_INITS = ("tied", "xavier")
CPU_KEEP_MASK = True  # dropout on the CPU draws its mask with keep_mask (module docstring)


@dataclass
class ADTRConfig:
    """Sizes and switches of :class:`ADTR`: the paper's sizes; ours where it is silent."""

    in_channels: int = 720  # C of the backbone features (EfficientNet-B4 stages 1-5)
    hidden_dim: int = 256
    num_encoder_layers: int = 4
    num_decoder_layers: int = 4
    num_heads: int = 8
    dim_feedforward: int = 1024
    dropout: float = 0.1  # DETR's default; the paper does not say
    grid: tuple[int, int] = (16, 16)  # (h, w) of the features: 256 / 16
    use_attention: bool = True  # False: Table 4 "transformer without attention"
    use_query: bool = True  # False: Table 4 "transformer without query embedding"
    no_attention_memory: str = "add"  # use_attention=False only: "add" | "none" (see module doc)
    pos_temperature: float = 10000.0  # of the "sine" position embedding (DETR)
    pos_embed: str = "grid"  # "grid" | "sine" (DETR) | "learned" (module doc)
    pos_scale: float = 4.0  # factor on a fixed embedding: position outweighs content
    cross_qk_init: str = "tied"  # "tied": W_k starts as W_q | "xavier" (module doc)

    def __post_init__(self) -> None:
        self.grid = (int(self.grid[0]), int(self.grid[1]))
        if self.hidden_dim % self.num_heads:
            raise ValueError(
                f"hidden_dim={self.hidden_dim} must be divisible by num_heads={self.num_heads}"
            )
        if self.hidden_dim % 4:
            raise ValueError(
                f"hidden_dim={self.hidden_dim} must be a multiple of 4 (2-D sine embedding)"
            )
        if self.no_attention_memory not in NO_ATTENTION_MEMORY:
            raise ValueError(
                f"no_attention_memory must be one of {NO_ATTENTION_MEMORY}, "
                f"got {self.no_attention_memory!r}"
            )
        if self.pos_embed not in POSITION_EMBEDDINGS:
            raise ValueError(
                f"pos_embed must be one of {POSITION_EMBEDDINGS}, got {self.pos_embed!r}"
            )
        if self.cross_qk_init not in CROSS_QK_INITS or not self.pos_scale > 0:
            raise ValueError(
                f"cross_qk_init must be one of {CROSS_QK_INITS} and pos_scale > 0, got "
                f"{self.cross_qk_init!r} and {self.pos_scale}"
            )
        if min(self.grid) < 1 or self.in_channels < 1:
            raise ValueError(f"bad grid {self.grid} or in_channels {self.in_channels}")

    @property
    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1]


def _rows_and_columns(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Row codes (h, D/2) and column codes (w, D/2) -> (h * w, D): the row in the first half
    of the channels, the column in the second, row-major (the token order of ``f.flatten(2)``)."""
    h, w = rows.shape[0], cols.shape[0]
    grid = torch.cat((rows[:, None].expand(h, w, -1), cols[None].expand(h, w, -1)), dim=2)
    return grid.reshape(h * w, -1)  # (K, D)


def sine_position_embedding(
    grid: tuple[int, int], dim: int, temperature: float = 10000.0
) -> torch.Tensor:
    """DETR's fixed 2-D sine position embedding of a (h, w) grid: (h * w, D), D a multiple of 4."""
    h, w = grid
    half = dim // 2
    eps = 1e-6
    y = torch.arange(1, h + 1, dtype=torch.float32) / (h + eps) * 2 * math.pi  # (h,)
    x = torch.arange(1, w + 1, dtype=torch.float32) / (w + eps) * 2 * math.pi  # (w,)
    i = torch.arange(half, dtype=torch.float32)
    freq = temperature ** (2 * torch.div(i, 2, rounding_mode="floor") / half)  # (D/2,)

    def encode(coord: torch.Tensor) -> torch.Tensor:
        angles = coord[:, None] / freq  # (n, D/2)
        # sin on even channels, cos on odd ones, interleaved as in DETR
        return torch.stack((angles[:, 0::2].sin(), angles[:, 1::2].cos()), dim=2).flatten(1)

    return _rows_and_columns(encode(y), encode(x))  # (K, D)


def grid_position_embedding(grid: tuple[int, int], dim: int) -> torch.Tensor:
    """2-D sine embedding resolving the grid: per axis of ``n`` cells, ``D/4`` frequencies
    from ``pi`` (period 2 cells) down to ``pi / n`` geometrically, the sine and cosine of each
    times the cell index; rows in the first D/2 channels, columns in the rest. Two cells'
    embeddings have dot product ``D/2`` when equal, far less otherwise. Returns (h * w, D),
    row-major (the token order of ``f.flatten(2)``)."""
    m = dim // 4

    def encode(n: int) -> torch.Tensor:
        j = torch.arange(m, dtype=torch.float32)
        omega = math.pi * (1.0 / n) ** (j / max(m - 1, 1))  # (m,), pi down to pi / n
        angles = torch.arange(n, dtype=torch.float32)[:, None] * omega  # (n, m): cell x freq
        return torch.stack((angles.sin(), angles.cos()), dim=2).flatten(1)  # (n, D/2)

    return _rows_and_columns(encode(grid[0]), encode(grid[1]))  # (K, D)


def keep_mask(shape: tuple[int, ...], p: float, like: torch.Tensor) -> torch.Tensor:
    """Dropout's mask: 0 with probability ``p``, else ``1 / keep``, in ``like``'s dtype.

    Drawn from 16-bit slices of uniform 64-bit random words (the default generator, so
    ``torch.manual_seed`` fixes it); ``keep = round((1 - p) * 65536) / 65536``.
    """
    n = math.prod(shape)
    words = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64)
    kept = round((1.0 - p) * 65536)
    bits = words.view(torch.int16)[:n].view(shape)  # uniform over [-32768, 32767]
    mask = (bits < kept - 32768).to(device=like.device, dtype=like.dtype)
    return mask.mul_(65536 / kept)


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """``F.dropout``, with the mask of :func:`keep_mask` on the CPU."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0 or not CPU_KEEP_MASK:
        return F.dropout(x, p, training=True)
    return x * keep_mask(tuple(x.shape), p, x)


class Dropout(nn.Module):
    """``nn.Dropout`` drawing its mask with :func:`dropout` (no parameters, no state)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class MultiheadAttention(nn.Module):
    """Multi-head attention on ``scaled_dot_product_attention`` (batch-first).

    The q/k/v projections are one stacked (3D, D) weight, as in ``torch.nn.MultiheadAttention``;
    when ``query is key`` (self-attention) q and k come from one matrix product.
    """

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.dropout = dropout
        self.in_proj = nn.Linear(dim, 3 * dim)
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj.weight)
        nn.init.zeros_(self.in_proj.bias)
        nn.init.zeros_(self.out_proj.bias)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, n, Dh)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attend ``query`` to ``key``/``value``.

        Args:
            query: (B, Lq, D).
            key: (B, Lk, D).
            value: (B, Lk, D).
            need_weights: also return the attention maps (computed explicitly, no dropout).

        Returns:
            ``(out (B, Lq, D), weights (B, H, Lq, Lk) or None)``.
        """
        d = self.dim
        weight, bias = self.in_proj.weight, self.in_proj.bias
        if query is key:
            q, k = F.linear(query, weight[: 2 * d], bias[: 2 * d]).chunk(2, dim=-1)  # (B, L, D) x2
        else:
            q = F.linear(query, weight[:d], bias[:d])  # (B, Lq, D)
            k = F.linear(key, weight[d : 2 * d], bias[d : 2 * d])  # (B, Lk, D)
        v = F.linear(value, weight[2 * d :], bias[2 * d :])  # (B, Lk, D)
        q, k, v = self._heads(q), self._heads(k), self._heads(v)  # (B, H, L, Dh)
        p = self.dropout if self.training else 0.0
        if p > 0.0 and q.device.type == "cpu" and CPU_KEEP_MASK:
            # written out, for the CPU's dropout mask (module docstring); the scale goes on q;
            # under autocast the fp32 softmax is cast to v's dtype before its dropout
            scores = (q * self.head_dim**-0.5) @ k.transpose(-2, -1)  # (B, H, Lq, Lk)
            attn = scores.softmax(dim=-1).to(v.dtype)  # (B, H, Lq, Lk)
            out = dropout(attn, p, True) @ v  # (B, H, Lq, Dh)
        else:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=p)  # (B, H, Lq, Dh)
        b, _, lq, _ = out.shape
        out = out.transpose(1, 2).reshape(b, lq, d)  # (B, Lq, D)
        weights = None
        if need_weights:
            scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)  # (B, H, Lq, Lk)
            weights = scores.softmax(dim=-1)
        return self.out_proj(out), weights


class FeedForward(nn.Module):
    """D -> dim_feedforward -> D with ReLU and dropout (DETR)."""

    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.linear1 = nn.Linear(dim, hidden)
        self.linear2 = nn.Linear(hidden, dim)
        self.dropout = Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.dropout(F.relu(self.linear1(x))))  # (B, K, D)


class EncoderLayer(nn.Module):
    """Self-attention, then FFN; each with residual + LayerNorm (post-norm)."""

    def __init__(self, cfg: ADTRConfig) -> None:
        super().__init__()
        d = cfg.hidden_dim
        self.self_attn = (
            MultiheadAttention(d, cfg.num_heads, cfg.dropout) if cfg.use_attention else None
        )
        self.norm1 = nn.LayerNorm(d)
        self.ffn = FeedForward(d, cfg.dim_feedforward, cfg.dropout)
        self.norm2 = nn.LayerNorm(d)
        self.dropout1 = Dropout(cfg.dropout)
        self.dropout2 = Dropout(cfg.dropout)

    def forward(
        self, x: torch.Tensor, pos: torch.Tensor, maps: dict | None = None, prefix: str = ""
    ) -> torch.Tensor:
        """x: (B, K, D) tokens; pos: (1, K, D). Returns (B, K, D)."""
        if self.self_attn is not None:
            qk = x + pos  # (B, K, D): position on queries and keys only
            a, w = self.self_attn(qk, qk, x, need_weights=maps is not None)
            x = x + self.dropout1(a)
            if maps is not None:
                maps[f"{prefix}.self"] = w
        x = self.norm1(x)  # without attention: the residual step is LayerNorm(x + 0)
        return self.norm2(x + self.dropout2(self.ffn(x)))  # (B, K, D)


class DecoderLayer(nn.Module):
    """Self-attention, cross-attention to the encoder output, FFN; residual + LayerNorm each."""

    def __init__(self, cfg: ADTRConfig) -> None:
        super().__init__()
        d = cfg.hidden_dim
        attn = cfg.use_attention
        self.self_attn = MultiheadAttention(d, cfg.num_heads, cfg.dropout) if attn else None
        self.cross_attn = MultiheadAttention(d, cfg.num_heads, cfg.dropout) if attn else None
        self.add_memory = not attn and cfg.no_attention_memory == "add"
        self.norm1 = nn.LayerNorm(d)
        self.norm2 = nn.LayerNorm(d)
        self.ffn = FeedForward(d, cfg.dim_feedforward, cfg.dropout)
        self.norm3 = nn.LayerNorm(d)
        self.dropout1 = Dropout(cfg.dropout)
        self.dropout2 = Dropout(cfg.dropout)
        self.dropout3 = Dropout(cfg.dropout)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        pos: torch.Tensor,
        maps: dict | None = None,
        prefix: str = "",
    ) -> torch.Tensor:
        """x: (B, K, D) decoder tokens; memory: (B, K, D) encoder output; pos: (1, K, D)."""
        need = maps is not None
        if self.self_attn is not None:
            qk = x + pos  # (B, K, D)
            a, w = self.self_attn(qk, qk, x, need_weights=need)
            x = x + self.dropout1(a)
            if need:
                maps[f"{prefix}.self"] = w
        x = self.norm1(x)
        if self.cross_attn is not None:
            a, w = self.cross_attn(x + pos, memory + pos, memory, need_weights=need)
            x = x + self.dropout2(a)  # (B, K, D)
            if need:
                maps[f"{prefix}.cross"] = w
        elif self.add_memory:
            x = x + memory  # no attention: each query reads the encoder token at its position
        x = self.norm2(x)
        return self.norm3(x + self.dropout3(self.ffn(x)))  # (B, K, D)


class ADTR(nn.Module):
    """Anomaly Detection TRansformer: reconstructs features ``f`` as ``f_hat`` (eq. 2 input).

    Args:
        cfg: sizes and ablation switches; ``ADTRConfig()`` is the paper's model.
    """

    def __init__(self, cfg: ADTRConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or ADTRConfig()
        self.cfg = cfg
        d = cfg.hidden_dim
        self.input_proj = nn.Linear(cfg.in_channels, d)
        self.encoder = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.num_encoder_layers))
        self.decoder = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_decoder_layers))
        for p in [*self.encoder.parameters(), *self.decoder.parameters()]:
            if p.dim() > 1:  # DETR's transformer init
                nn.init.xavier_uniform_(p)
        for layer in self.decoder if cfg.cross_qk_init == "tied" and cfg.use_attention else []:
            weight = layer.cross_attn.in_proj.weight.data  # (3D, D): q, k, v
            weight[d : 2 * d] = weight[:d]  # W_k = W_q: the position term peaks at the own cell
        # learnable query embedding q (K, D), N(0, 1) init as nn.Embedding / DETR's query_embed
        self.query_embed = nn.Embedding(cfg.num_tokens, d) if cfg.use_query else None
        self.output_proj = nn.Linear(d, cfg.in_channels)
        if cfg.pos_embed == "learned":
            # half the channels encode the row, half the column; uniform init as in DETR
            self.row_embed = nn.Parameter(torch.rand(cfg.grid[0], d // 2))  # (h, D/2)
            self.col_embed = nn.Parameter(torch.rand(cfg.grid[1], d // 2))  # (w, D/2)
        else:
            pos = (
                grid_position_embedding(cfg.grid, d)
                if cfg.pos_embed == "grid"
                else sine_position_embedding(cfg.grid, d, cfg.pos_temperature)
            )  # (K, D)
            self.register_buffer("pos_embed", pos * cfg.pos_scale, persistent=False)

    def position_embedding(self) -> torch.Tensor:
        """The position embedding added to queries and keys, (K, D), row-major over the grid."""
        if self.cfg.pos_embed != "learned":
            return self.pos_embed
        return _rows_and_columns(self.row_embed, self.col_embed)  # (K, D)

    def _check(self, f: torch.Tensor) -> None:
        c, (h, w) = self.cfg.in_channels, self.cfg.grid
        if f.dim() != 4 or f.shape[1] != c or tuple(f.shape[-2:]) != (h, w):
            raise ValueError(
                f"ADTR expects features (B, {c}, {h}, {w}), got {tuple(f.shape)}: build it with "
                f"ADTRConfig(in_channels=backbone.channels, grid=backbone.grid)"
            )

    def _run(self, f: torch.Tensor, maps: dict | None) -> torch.Tensor:
        self._check(f)
        b, c, h, w = f.shape
        tokens = f.flatten(2).transpose(1, 2)  # (B, K, C), K = h*w row-major
        x = self.input_proj(tokens)  # (B, K, D)
        pos = self.position_embedding().unsqueeze(0).to(x.dtype)  # (1, K, D)
        for i, layer in enumerate(self.encoder):
            x = layer(x, pos, maps, f"encoder.{i}")  # (B, K, D)
        memory = x  # (B, K, D)
        if self.query_embed is not None:
            y = self.query_embed.weight.unsqueeze(0).expand(b, -1, -1)  # (B, K, D)
        else:
            y = memory  # use_query=False: the decoder starts from the encoder output
        for i, layer in enumerate(self.decoder):
            y = layer(y, memory, pos, maps, f"decoder.{i}")  # (B, K, D)
        out = self.output_proj(y)  # (B, K, C)
        return out.transpose(1, 2).reshape(b, c, h, w)  # (B, C, h, w)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        """Reconstruct features.

        Args:
            f: (B, C, h, w) backbone features, C = ``cfg.in_channels``, (h, w) = ``cfg.grid``.

        Returns:
            f_hat: (B, C, h, w).
        """
        return self._run(f, None)

    @torch.no_grad()
    def attention_maps(self, f: torch.Tensor) -> dict[str, torch.Tensor]:
        """Attention maps of every attention sublayer for features ``f`` (B, C, h, w).

        Returns:
            ``{"encoder.i.self" | "decoder.i.self" | "decoder.i.cross": (B, H, K, K)}``
            (empty when ``use_attention=False``). Computed in the module's current mode.
        """
        maps: dict[str, torch.Tensor] = {}
        self._run(f, maps)
        return maps
