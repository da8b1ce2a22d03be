"""Backbone features of real images as Sec. 3.2 tokens: the experiment-level wiring for toy.

:func:`feature_tokens` opens a data set's training and test images, runs them through a frozen
backbone (``adtr_core.method.backbone``, features via ``adtr_core.runs.features``) and hands the feature
maps, labels and defect masks to :func:`adtr_core.toy.data.tokens_from_features`, which makes
the :class:`~adtr_core.toy.data.ToyData` the one-layer reconstructors of
:mod:`adtr_core.toy` train on. The toy package itself only takes tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from adtr_core.data import open_dataset
from adtr_core.method.backbone import BackboneConfig, build_backbone
from adtr_core.runs.features import extract_features
from adtr_core.toy.data import ToyData, tokens_from_features


def feature_tokens(
    source: str = "demo",
    category: str = "brick",
    data_root: str | Path | None = None,
    image_size: int = 128,
    backbone: str = "tf_efficientnet_lite0",
    stages: Sequence[int] = (1, 2, 3, 4, 5),
    max_train: int | None = None,
    mask_threshold: float = 0.5,
    standardize: bool = True,
    device: str | None = None,
) -> ToyData:
    """Backbone features of normal and defective images as tokens.

    Normal tokens come from the training images (``train/good``), ``x+`` test tokens from the
    normal test images, anomalous tokens from the cells of defective test images inside their
    defect masks (each cell's covered fraction, see
    :func:`adtr_core.toy.data.tokens_from_features`).

    Args:
        source: "mvtec" (MVTec AD from ``data_root`` or ``MVTEC_ROOT``, else the embedded
            bottle category) or "demo" (the demo textures, built on first use); any source of
            ``adtr_core.data.open_dataset`` with masks works.
        category: the category (folder) to use.
        data_root: the dataset root; None = the default of the source.
        image_size: input size ``S``; the grid is ``S/16 x S/16`` (``K = (S/16)^2``).
        backbone: backbone name (``adtr_core.method.backbone.BackboneConfig.name``).
        stages: backbone stages to concatenate.
        max_train: use at most this many training images (the first ones); None = all.
        mask_threshold: see :func:`tokens_from_features`.
        standardize: see :func:`tokens_from_features`.
        device: feature extraction device; None = the package default.

    Raises:
        ValueError: the source has no pixel masks, or no root is configured.
    """
    train = open_dataset(source, data_root, category, "train", image_size)
    test = open_dataset(source, data_root, category, "test", image_size)
    if not getattr(test, "has_masks", True):
        raise ValueError(
            f"{source}/{category} has no pixel masks: anomalous tokens need defect masks; "
            "choose a source with masks (demo, mvtec, folder with masks)"
        )
    if max_train is not None and max_train < len(train):
        train = torch.utils.data.Subset(train, range(int(max_train)))
    net = build_backbone(BackboneConfig(name=backbone, stages=tuple(stages), image_size=image_size))
    kwargs = {} if device is None else {"device": device}
    f_train = extract_features(net, train, **kwargs)
    f_test = extract_features(net, test, **kwargs)
    return tokens_from_features(
        torch.as_tensor(f_train.features),
        torch.as_tensor(f_test.features),
        torch.as_tensor(f_test.labels),
        torch.as_tensor(f_test.masks),
        mask_threshold=mask_threshold,
        standardize=standardize,
        name=f"{source}/{category} {backbone}",
        info={
            "source": source,
            "category": category,
            "backbone": backbone,
            "image_size": image_size,
        },
    )
