"""Measurements of a Sec. 3.2 reconstructor: how close it is to the identity, and its errors.

``||w - I||_F / ||I||_F`` and ``||b||`` of FC / conv layers (:func:`identity_distance`), the
attention map's ``||A - I||_F / ||I||_F`` and diagonal mass (:func:`attention_identity_stats`),
the reconstruction error on normal and anomalous tokens, their ratio and the token AUROC of the
per-token error (eq. 3, ``||x - x_hat||_2`` per token); :func:`evaluate_toy` takes them all.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from adtr_core.method.metrics import image_auroc
from adtr_core.toy.data import ToyData
from adtr_core.toy.models import (
    ConvReconstructor,
    FCReconstructor,
    QueryAttention,
    SelfAttention,
    init_weight,
)

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
        init_weight(target, None, "identity")
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
