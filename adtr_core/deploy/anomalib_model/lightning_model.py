"""ADTR as an anomalib model: an ``AnomalibModule`` that anomalib's Engine, CLI and export run.

:class:`Adtr` trains the package's own detector (:class:`~adtr_core.deploy.anomalib_model.torch_model.
AdtrModel`: backbone, reconstruction network, scoring) with the normal-only loss L_norm
(eq. 1) and the optimiser and schedule of a profile (AdamW, lr, weight decay, lr steps,
gradient clipping, the budget in epochs or optimiser steps), all read from the package's
:class:`~adtr_core.runs.config.ExperimentConfig`, so that it trains as ``adtr train`` does.
What Lightning changes is listed in ``docs/anomalib.md``.

Example:
    >>> from anomalib.data import MVTecAD
    >>> from anomalib.engine import Engine
    >>> from adtr_core.deploy.anomalib_model import Adtr
    >>> model = Adtr(profile="quick")  # doctest: +SKIP
    >>> engine = Engine(default_root_dir="results")  # doctest: +SKIP
    >>> engine.fit(model=model, datamodule=MVTecAD(root="data/mvtec_ad", category="bottle",
    ...     train_batch_size=4, num_workers=0))  # doctest: +SKIP
    >>> engine.test(model=model, datamodule=...)  # doctest: +SKIP

See Also:
    :mod:`adtr_core.deploy.anomalib_model.torch_model`: the torch model it trains;
    :mod:`adtr_core.deploy.anomalib_model.benchmark`: ADTR beside PaDiM and PatchCore in anomalib.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any

import torch
from anomalib import LearningType
from anomalib.data import Batch
from anomalib.metrics import Evaluator
from anomalib.models.components import AnomalibModule
from anomalib.post_processing import PostProcessor
from anomalib.pre_processing import PreProcessor
from anomalib.visualization import Visualizer
from lightning.pytorch.utilities.types import STEP_OUTPUT
from torchvision.transforms.v2 import Resize

from adtr_core.figures.ablations import VARIANTS
from adtr_core.method.losses import l_norm
from adtr_core.runs.checkpoints import save_checkpoint
from adtr_core.runs.config import ExperimentConfig, hand_budget
from adtr_core.runs.device import epoch_seed, seed_everything
from adtr_core.runs.experiment import init_output_bias
from adtr_core.runs.profiles import PROFILES, profile_run
from adtr_core.runs.train import TrainConfig

from .torch_model import AdtrModel

# Keys of a profile's run block that are the runner's business, not the model's: the
# anomalib Engine picks the device (its accelerator) and the precision (its precision).
_ENGINE_FIELDS = ("device", "precision")


def adtr_config(
    profile: str = "quick", variant: str = "adtr", overrides: dict[str, Any] | None = None
) -> ExperimentConfig:
    """The experiment config of one ADTR model: a profile's run settings, a variant, overrides.

    Args:
        profile: ``smoke``, ``quick`` or ``paper`` (:mod:`adtr_core.runs.profiles`).
        variant: a row of Table 4 (:data:`adtr_core.figures.ablations.VARIANTS`: ``adtr``, ``cnn``,
            ``no_attention``, ``no_query``, ``pixels``, ``last_layer``, a backbone, ...).
        overrides: :class:`~adtr_core.runs.config.ExperimentConfig` fields set last, e.g.
            ``{"image_size": 128, "steps": 100}``.

    Raises:
        ValueError: an unknown profile, variant or field, a bad value, an ADTR+ loss, or a
            device or precision (the Engine's arguments).
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}: choose one of {', '.join(PROFILES)}")
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}: choose one of {', '.join(VARIANTS)}")
    engine_fields = sorted(set(overrides or {}) & set(_ENGINE_FIELDS))
    if engine_fields:
        raise ValueError(
            f"{', '.join(engine_fields)} is the Engine's choice, not the model's: pass "
            "Engine(accelerator=..., precision=...) instead of overrides"
        )
    values = {**(profile_run(profile, "train") or {}), **VARIANTS[variant].changes}
    values.update(overrides or {})
    hand_budget(dict(overrides or {}), values)  # epochs given replace the profile's steps
    cfg = ExperimentConfig.from_dict(values)
    if cfg.loss != "norm":
        raise ValueError(
            f"loss={cfg.loss!r} (ADTR+) is not supported from anomalib: its anomalies come from "
            "the package's own data sets; train it with `adtr train --loss px` (or img) instead"
        )
    if cfg.model in ("padim", "patchcore"):
        raise ValueError(
            f"model={cfg.model!r} is a peer, not a reconstruction network: use anomalib's own "
            "Padim / Patchcore, or a variant of Adtr"
        )
    if cfg.init_from is not None:
        raise ValueError("init_from is not supported by Adtr: load a Lightning checkpoint instead")
    return cfg


class Adtr(AnomalibModule):
    """ADTR (You et al., 2022) for anomalib: feature reconstruction with a transformer.

    Args:
        profile: the profile whose run settings it takes (``smoke``, ``quick``, ``paper``).
        variant: ``adtr`` (the paper's model) or another row of Table 4: ``cnn``,
            ``no_attention``, ``no_query``, ``pixels``, ``last_layer`` or a backbone.
        overrides: ExperimentConfig fields over the profile, e.g. ``{"steps": 100}``; the
            device and precision come from the Engine (its ``accelerator`` / ``precision``).
        pre_processor: True: resize to the profile's image size (the backbone normalises
            its input itself, as its weights expect); or an anomalib ``PreProcessor``.
        post_processor, evaluator, visualizer: as for every anomalib model.

    Attributes:
        config: the resolved :class:`~adtr_core.runs.config.ExperimentConfig`.
        model: the :class:`AdtrModel` (backbone, reconstructor, scoring).
        train_config: the trainer settings of the last fit (epochs and lr milestones in epochs,
            from the budget and the training set's size), None before a fit.
    """

    def __init__(
        self,
        profile: str = "quick",
        variant: str = "adtr",
        overrides: dict[str, Any] | None = None,
        pre_processor: PreProcessor | bool = True,
        post_processor: PostProcessor | bool = True,
        evaluator: Evaluator | bool = True,
        visualizer: Visualizer | bool = True,
    ) -> None:
        config = adtr_config(profile, variant, overrides)
        if pre_processor is True:
            pre_processor = self.configure_pre_processor((config.image_size, config.image_size))
        super().__init__(
            pre_processor=pre_processor,
            post_processor=post_processor,
            evaluator=evaluator,
            visualizer=visualizer,
        )
        self.config = config
        self.model = AdtrModel.from_config(config, seed=config.seed)
        self.train_config: TrainConfig | None = None

    # -- anomalib's contract -------------------------------------------------------------------

    @classmethod
    def configure_pre_processor(cls, image_size: tuple[int, int] | None = None) -> PreProcessor:
        """Resize to ``image_size`` (default 256 x 256); no normalisation: the backbone does it."""
        return PreProcessor(transform=Resize(image_size or (256, 256), antialias=True))

    @property
    def learning_type(self) -> LearningType:
        """One-class: trained on normal images only."""
        return LearningType.ONE_CLASS

    @property
    def trainer_arguments(self) -> dict[str, Any]:
        """Gradient clipping of the profile, no sanity validation, an upper bound of epochs.

        The epoch count follows from the budget and the training set's size, known only at
        :meth:`configure_optimizers`, which sets it on the trainer (with validation, for the
        post-processor's thresholds, after the last epoch only, as ``adtr train`` evaluates).
        A budget of ``steps`` optimiser steps never needs more than ``steps`` epochs.
        """
        cfg = self.config
        return {
            "gradient_clip_val": cfg.grad_clip,
            "gradient_clip_algorithm": "norm",
            "num_sanity_val_steps": 0,
            "max_epochs": max(1, cfg.epochs if cfg.steps is None else cfg.steps),
        }

    # -- training ------------------------------------------------------------------------------

    def budget(self, num_train: int, batch_size: int) -> TrainConfig:
        """The trainer settings of a fit on ``num_train`` images in batches of ``batch_size``.

        As :meth:`ExperimentConfig.train_config` gives them to ``adtr train``: a budget in
        optimiser steps becomes epochs (rounded up) of this training set.
        """
        cfg = self.config
        if batch_size != cfg.batch_size:
            warnings.warn(
                f"the datamodule's train_batch_size={batch_size} differs from the profile's "
                f"batch_size={cfg.batch_size}: the results will differ from `adtr train`; pass "
                f"train_batch_size={cfg.batch_size} to the datamodule to match",
                stacklevel=2,
            )
            cfg = dataclasses.replace(cfg, batch_size=batch_size)
        return cfg.train_config("cpu", num_train=num_train, progress=False)

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW and the step schedule of the profile, with the epoch budget set on the trainer."""
        trainer = self.trainer
        trainer.fit_loop.setup_data()  # the training set's size decides the epochs
        loader = trainer.train_dataloader
        train = self.budget(len(loader.dataset), int(loader.batch_size or 1))
        self.train_config = train
        trainer.fit_loop.max_epochs = train.epochs
        trainer.check_val_every_n_epoch = max(1, train.epochs)  # validate after the last
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(
            optimizer, milestones=list(train.lr_milestones), gamma=train.lr_gamma
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"},
        }

    def on_fit_start(self) -> None:
        """Seed the first epoch's shuffle from the config's seed."""
        seed_everything(self.config.seed)

    def on_train_start(self) -> None:
        """Start the output projection's bias at the mean training feature, as ``adtr train``."""
        if self.config.init_output_bias and self.current_epoch == 0 and self.global_step == 0:
            init_output_bias(self.model.reconstructor, self._mean_training_feature())

    @torch.no_grad()
    def _mean_training_feature(self) -> torch.Tensor:
        """(1, C, 1, 1): the mean backbone feature over the training images and grid cells."""
        total, count = None, 0
        transform = self.pre_processor.transform if self.pre_processor else None
        with torch.random.fork_rng(devices=[]):  # the loop's shuffle must not move the RNG
            for batch in self.trainer.train_dataloader:
                images = batch.image.to(self.device)
                if transform is not None:
                    images = transform(images)
                f = self.model.features(images)  # (B, C, h, w)
                part = f.sum(dim=(0, 2, 3))  # (C,)
                total = part if total is None else total + part
                count += f.shape[0] * f.shape[2] * f.shape[3]
        # under a multi-process strategy each process saw its shard: sum over all of them
        total = self.trainer.strategy.reduce(total, reduce_op="sum")
        count = self.trainer.strategy.reduce(
            torch.tensor(float(count), device=total.device), reduce_op="sum"
        )
        return (total / count).view(1, -1, 1, 1)  # (1, C, 1, 1)

    def on_train_epoch_start(self) -> None:
        """Reseed every generator from (seed, epoch), as the package's Trainer does."""
        if self.current_epoch > 0:  # epoch 0's shuffle was drawn before this hook
            seed_everything(epoch_seed(self.config.seed, self.current_epoch))

    def training_step(self, batch: Batch, *args, **kwargs) -> STEP_OUTPUT:
        """L_norm (eq. 1) of one batch of normal images."""
        del args, kwargs
        f, f_hat = self.model(batch.image)  # (B, C, h, w) each
        loss = l_norm(f, f_hat)
        self.log(
            "train_loss",
            loss.detach(),
            on_step=False,
            on_epoch=True,
            prog_bar=True,
            batch_size=len(batch.image),
        )
        return {"loss": loss}

    def validation_step(self, batch: Batch, *args, **kwargs) -> STEP_OUTPUT:
        """Image scores (B,) and anomaly maps (B, 1, S, S) merged into the batch."""
        del args, kwargs
        predictions = self.model(batch.image)
        return batch.update(**predictions._asdict())

    # -- the package's own tools ---------------------------------------------------------------

    def save_run(self, out_dir: str | Path) -> Path:
        """Write the trained network as a results folder of the package's own tools.

        ``<out_dir>/checkpoint.pt`` holds the reconstructor's weights and the config, as
        ``adtr train`` writes it: ``adtr export``, :func:`adtr_core.deploy.export.export_onnx` and
        :func:`adtr_core.deploy.engines.build_scorer` read it.

        Returns:
            The checkpoint's path.
        """
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        network = self.model.reconstructor
        trainer = self._trainer
        optimizers = trainer.optimizers if trainer is not None else []
        optimizer = optimizers[0] if optimizers else torch.optim.AdamW(network.parameters())
        epoch = int(trainer.current_epoch) if trainer is not None else 0
        return save_checkpoint(
            out / "checkpoint.pt",
            network,
            optimizer,
            None,
            epoch,
            [],
            extra={"config": self.config.to_dict(), "trained_by": "anomalib"},
        )
