"""The one registry of reconstruction networks: ADTR, its Table 4 variants and the CNN, by name.

:data:`RECONSTRUCTORS` maps every trained ``ExperimentConfig.model`` (the fitted peers of
:mod:`adtr_core.runs.peers` are the other models) to the builder of its network, and
:func:`build_reconstructor` builds one over ``in_channels`` x ``grid`` backbone features:

- ``"adtr"``: the paper's model (:class:`~adtr_core.method.model.ADTR`);
- ``"adtr_no_attention"``, ``"adtr_no_query"``: Table 4's transformer without attention /
  without the query embedding;
- ``"cnn"``: Table 4's CNN reconstruction (:class:`~adtr_core.method.baselines.CNNReconstructor`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from torch import nn

from adtr_core.method.baselines import CNNReconstructor, CNNReconstructorConfig
from adtr_core.method.model import ADTR, ADTRConfig

# ADTR-only options: accepted but ignored for "cnn", so one experiment config can build either.
_TRANSFORMER_ONLY = {
    "num_encoder_layers",
    "num_decoder_layers",
    "num_heads",
    "dim_feedforward",
    "use_attention",
    "use_query",
    "no_attention_memory",
    "pos_temperature",
    "pos_embed",
    "pos_scale",
    "cross_qk_init",
}


def _reject_unknown(overrides: dict, known: set[str], what: str) -> None:
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for {what}; valid: {', '.join(sorted(known))}"
        )


def _adtr(**fixed) -> Callable[..., nn.Module]:
    """The builder of ADTR with the fields ``fixed`` (a variant) set over any override."""

    def build(in_channels: int, grid: tuple[int, int], **overrides) -> nn.Module:
        _reject_unknown(overrides, {f.name for f in dataclasses.fields(ADTRConfig)}, "ADTRConfig")
        return ADTR(ADTRConfig(**{**overrides, "in_channels": in_channels, "grid": grid, **fixed}))

    return build


def _cnn(in_channels: int, grid: tuple[int, int], **overrides) -> nn.Module:
    fields = {f.name for f in dataclasses.fields(CNNReconstructorConfig)}
    _reject_unknown(overrides, fields | _TRANSFORMER_ONLY, "CNNReconstructorConfig")
    kept = {k: v for k, v in overrides.items() if k in fields}
    return CNNReconstructor(
        CNNReconstructorConfig(**{**kept, "in_channels": in_channels, "grid": grid})
    )


RECONSTRUCTORS: dict[str, Callable[..., nn.Module]] = {
    "adtr": _adtr(),
    "adtr_no_attention": _adtr(use_attention=False),
    "adtr_no_query": _adtr(use_query=False),
    "cnn": _cnn,
}
"""Builders ``(in_channels, grid, **overrides) -> nn.Module`` by model name."""


def build_reconstructor(
    kind: str, in_channels: int, grid: tuple[int, int], **overrides
) -> nn.Module:
    """The reconstruction network ``kind`` over ``in_channels`` x ``grid`` features.

    Args:
        kind: a name of :data:`RECONSTRUCTORS`.
        in_channels: C of the features (``backbone.channels``).
        grid: (h, w) of the features (``backbone.grid``).
        **overrides: fields of :class:`ADTRConfig` (ADTR kinds) or
            :class:`CNNReconstructorConfig` (``"cnn"``; ADTR-only fields such as
            ``num_heads`` are ignored there, ``hidden_dim`` and ``dropout`` apply).

    Raises:
        ValueError: unknown kind or unknown override.
    """
    if kind not in RECONSTRUCTORS:
        raise ValueError(
            f"unknown reconstructor {kind!r}: choose one of {', '.join(RECONSTRUCTORS)}"
        )
    return RECONSTRUCTORS[kind](in_channels, (int(grid[0]), int(grid[1])), **overrides)
