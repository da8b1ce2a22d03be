"""Helpers the tests share: timm's full classifier with the package's backbone weights loaded."""

from __future__ import annotations

import warnings

from torch import nn

from adtr_core.weights import BackboneWeightsError, resolve_weights, seeded_create


def build_classifier(name: str, weights: str = "auto") -> nn.Module:
    """timm's full ImageNet classifier for ``name`` with ``weights`` loaded, in eval mode.

    Used to check that weights are genuine (e.g. a cat photograph gets a cat class). The
    classifier expects inputs normalised with :func:`adtr_core.backbone.normalisation`.
    """
    state, _ = resolve_weights(name, weights)
    model = seeded_create(name)
    if state is not None:
        missing, _ = model.load_state_dict(state, strict=False)
        if missing:  # only the head can be missing here (checked): keep it random, say so
            head = model.pretrained_cfg.get("classifier")
            if any(not k.startswith(f"{head}.") for k in missing):
                raise BackboneWeightsError(f"weights for {name!r} lack {missing[:5]}")
            warnings.warn(
                f"weights {weights!r} for {name!r} have no ImageNet classifier head "
                f"({missing}): the head is random",
                stacklevel=2,
            )
    return model.eval()
