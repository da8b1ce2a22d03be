"""The one-layer reconstructors of Sec. 3.2, all ``(B, K, C) -> (B, K, C)``.

``"fc"`` is eq. 4, ``x_hat = x w + b``; ``"conv1x1"`` is the same layer as a convolution and
``"conv3x3"`` an ``n x n`` one on the tokens laid out on their ``sqrt(K) x sqrt(K)`` grid;
``"attention_query"`` is eq. 5, ``x_hat = softmax(q x^T / sqrt(C)) x`` with a learnable query
``q in R^{K x C}`` and no value projection; the control ``"attention_self"`` takes its queries
from the inputs, ``softmax((x W_q)(x W_k)^T / sqrt(C)) x`` with ``W_q = W_k = I`` at
initialisation (exactly ``softmax(x x^T / sqrt(C)) x``) and trainable, so that it has
parameters to train. :func:`build_toy_model` builds one by name.
"""

from __future__ import annotations

import math

import torch
from torch import nn

MODEL_KINDS = ("fc", "conv1x1", "conv3x3", "attention_query", "attention_self")
WEIGHT_KINDS = ("fc", "conv1x1", "conv3x3")  # layers with a C x C weight and a bias
ATTENTION_KINDS = ("attention_query", "attention_self")
INITS = ("default", "zero", "identity")

# Display names (figures, tables).
MODEL_LABELS = {
    "fc": "FC (eq. 4)",
    "conv1x1": "conv 1x1 (= FC)",
    "conv3x3": "conv 3x3",
    "attention_query": "attention, learned query (eq. 5)",
    "attention_self": "attention, query = input (control)",
}


def init_weight(weight: torch.Tensor, bias: torch.Tensor | None, init: str) -> None:
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
        init_weight(self.linear.weight, self.linear.bias, init)

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
        init_weight(self.conv.weight, self.conv.bias, init)

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
