"""Training runs of the Sec. 3.2 reconstructors, and sweeps over data and training settings.

:func:`run_toy` trains one model through the package's one trainer
(:class:`adtr_core.runs.train.Trainer`, MSE loss on normal tokens only) and records the
measurements of :mod:`adtr_core.toy.measures` every ``eval_every`` epochs;
:func:`run_toy_grid` runs models x seeds; :func:`sweep_toy` maps one or two settings (data
rank, weight decay, width, epochs, ...) to final measurements.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from adtr_core.runs.train import TrainConfig, Trainer, seed_everything
from adtr_core.toy.data import ToyData, ToyDataConfig, make_toy_tokens
from adtr_core.toy.measures import METRICS, evaluate_toy
from adtr_core.toy.models import build_toy_model
from adtr_core.toy.tables import final_epoch_table


class _Tokens(torch.utils.data.Dataset):
    """Normal training tokens, one ``(K, C)`` sample per item."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.x[i]


def mse_loss(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """The training loss: MSE between normal tokens ``(B, K, C)`` and their reconstruction."""
    if isinstance(batch, (list, tuple)):
        batch = batch[0]
    return F.mse_loss(model(batch), batch)


@dataclass
class ToyRun:
    """One trained toy model and its measurement curves (long format, see :func:`run_toy`)."""

    curves: pd.DataFrame
    model: nn.Module


def run_toy(
    kind: str,
    data: ToyData,
    epochs: int = 50,
    lr: float = 1e-2,
    weight_decay: float = 0.0,
    seed: int = 0,
    eval_every: int = 5,
    batch_size: int = 32,
    init: str = "default",
    device: str = "cpu",
    labels: Mapping[str, Any] | None = None,
) -> ToyRun:
    """Train one reconstructor on the normal tokens with MSE, measuring it along the way.

    Training goes through :class:`adtr_core.runs.train.Trainer` (AdamW, constant lr, no gradient
    clipping, no AMP); the measurements are its ``eval_fn``, plus one before training
    (epoch 0).

    Args:
        kind: one of ``MODEL_KINDS``.
        data: the tokens.
        epochs: training epochs (``ceil(n_train / batch_size)`` steps each).
        lr: AdamW learning rate.
        weight_decay: AdamW decoupled weight decay (shrinks ``w`` towards 0, not towards I).
        seed: seeds the model's initialisation and the Trainer (data order).
        eval_every: epochs between measurements (and after the last epoch).
        batch_size: samples per step.
        init: model initialisation, see :func:`build_toy_model`.
        device: training device ("cpu": these layers are tiny).
        labels: extra columns for the curves (e.g. the value of a swept setting).

    Returns:
        :class:`ToyRun`; ``curves`` has one row per (epoch, metric) with columns ``kind``,
        ``seed``, ``epoch``, ``step``, ``metric``, ``value``, ``data`` and ``labels``' keys;
        ``metric`` takes the values of :data:`METRICS` and ``"train_loss"``.
    """
    seed_everything(seed)
    model = build_toy_model(kind, data.K, data.C, init=init, grid=data.grid)
    config = TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        lr_milestones=(),
        grad_clip=None,
        seed=seed,
        device=device,
        amp=False,
        eval_every=eval_every,
        checkpoint_every=0,
        progress=False,
    )
    trainer = Trainer(
        model, mse_loss, _Tokens(data.x_train), config, eval_fn=lambda m: evaluate_toy(m, data)
    )
    rows = [{"epoch": 0, **evaluate_toy(trainer.model, data)}]
    for row in trainer.fit():
        if "err_pos" in row:
            rows.append({k: row[k] for k in ("epoch", "loss", *METRICS)})
    steps_per_epoch = len(trainer.loader)
    wide = pd.DataFrame(rows).rename(columns={"loss": "train_loss"})
    wide["step"] = wide["epoch"] * steps_per_epoch
    curves = wide.melt(id_vars=["epoch", "step"], var_name="metric", value_name="value")
    curves.insert(0, "seed", seed)
    curves.insert(0, "kind", kind)
    curves["data"] = data.name
    for key, value in (labels or {}).items():
        curves[key] = value
    return ToyRun(curves=curves, model=trainer.model.cpu().eval())


@dataclass
class ToyResult:
    """Curves of several models x seeds, and the trained model of the first seed per kind."""

    curves: pd.DataFrame
    models: dict[str, nn.Module]


def run_toy_grid(
    kinds: Iterable[str], data: ToyData, seeds: Iterable[int] = (0, 1, 2, 3, 4), **kwargs: Any
) -> ToyResult:
    """:func:`run_toy` for every model kind and seed; ``kwargs`` go to :func:`run_toy`."""
    kinds, seeds = list(kinds), list(seeds)
    if not kinds or not seeds:
        raise ValueError("run_toy_grid needs at least one kind and one seed")
    curves, models = [], {}
    for kind in kinds:
        for seed in seeds:
            run = run_toy(kind, data, seed=seed, **kwargs)
            curves.append(run.curves)
            models.setdefault(kind, run.model)
    return ToyResult(curves=pd.concat(curves, ignore_index=True), models=models)


_TRAIN_KEYS = ("epochs", "lr", "weight_decay", "batch_size", "init", "eval_every")


def sweep_toy(
    kinds: Iterable[str],
    base: ToyDataConfig,
    sweep: Mapping[str, Sequence[Any]],
    seeds: Iterable[int] = (0, 1, 2),
    data_seed_per_run: bool = False,
    **train_kwargs: Any,
) -> pd.DataFrame:
    """Final measurements over a grid of one or two settings (a map of where a shortcut appears).

    Args:
        kinds: model kinds.
        base: data configuration the sweep starts from.
        sweep: setting -> values; a setting is a :class:`ToyDataConfig` field (``channel_rank``,
            ``C``, ``noise``, ``structure``, ...) or a training argument (``weight_decay``,
            ``epochs``, ``lr``, ``batch_size``, ``init``). All combinations are run.
        seeds: training seeds (model init and data order).
        data_seed_per_run: also redraw the data with every seed (default: one data set per
            grid point, drawn with ``base.seed``).
        **train_kwargs: fixed arguments of :func:`run_toy`.

    Returns:
        Long-format final-epoch rows: ``kind``, ``seed``, the swept settings, ``metric``,
        ``value`` (reduce with :func:`adtr_core.toy.tables.mean_std_table` ``by=`` the swept
        settings).
    """
    data_fields = {f.name for f in dataclasses.fields(ToyDataConfig)}
    unknown = [k for k in sweep if k not in data_fields and k not in _TRAIN_KEYS]
    if unknown:
        raise ValueError(
            f"cannot sweep {unknown}: use ToyDataConfig fields or one of {', '.join(_TRAIN_KEYS)}"
        )
    kinds, seeds, keys = list(kinds), list(seeds), list(sweep)
    frames = []
    for values in itertools.product(*(sweep[k] for k in keys)):
        point = dict(zip(keys, values))
        data_over = {k: v for k, v in point.items() if k in data_fields}
        kw = {**train_kwargs, **{k: v for k, v in point.items() if k not in data_fields}}
        kw["eval_every"] = kw.get("epochs", 50)  # only the final measurement is needed
        data = make_toy_tokens(base, **data_over)
        for seed in seeds:
            if data_seed_per_run:
                data = make_toy_tokens(base, **data_over, seed=base.seed + seed)
            for kind in kinds:
                frames.append(run_toy(kind, data, seed=seed, labels=point, **kw).curves)
    return final_epoch_table(pd.concat(frames, ignore_index=True))
