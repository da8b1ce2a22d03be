"""One model-agnostic trainer, used unchanged by every reconstructor in the package.

Like minGPT's ``trainer.py`` there is nothing model-specific here: ADTR, the CNN baseline,
the pixel-reconstruction variant and the toy FC / attention layers of Sec. 3.2 all train
through :class:`Trainer`. What differs between them is the ``loss_fn(model, batch)``
callable (eqs. 1, 6-9 live in ``losses``) and the data.

Defaults follow the paper's MVTec AD protocol (METHOD §4): AdamW, lr 1e-4, weight decay
1e-4, batch 16, 500 epochs, lr x0.1 at epoch 400.

Reproducibility and resume: at the start of epoch ``e`` every random number generator
(python, numpy, torch, and the DataLoader's shuffle generator) is reseeded from
``(seed, e)``. The random state of an epoch therefore depends on nothing but the seed and
the epoch number, and a run resumed from a checkpoint ends with the same weights as an
uninterrupted one.

Checkpoints (:mod:`adtr_core.runs.checkpoints`) are written every ``checkpoint_every`` epochs;
devices and seeds come from :mod:`adtr_core.runs.device`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from adtr_core.runs.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from adtr_core.runs.device import (
    epoch_seed,
    move_to_device,
    resolve_device,
    seed_everything,
    seed_worker,
)

# Config fields that may change between a run and its resumption without a warning.
_RESUMABLE_FIELDS = frozenset(
    {"epochs", "device", "progress", "num_workers", "eval_every", "checkpoint_every", "compile"}
)


@dataclass
class TrainConfig:
    """Optimisation settings. Defaults: the paper's MVTec AD protocol (METHOD §4)."""

    epochs: int = 500
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 1e-4  # AdamW's decoupled weight decay
    lr_milestones: tuple[int, ...] = (400,)  # epochs at which the lr is multiplied by lr_gamma
    lr_gamma: float = 0.1
    grad_clip: float | None = 0.1  # max gradient norm; None disables clipping
    seed: int = 0
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N"
    amp: bool = True  # bf16 autocast on CUDA
    cpu_amp: bool = False  # also bf16 autocast on CPU (off: CPU bf16 is slow on most machines)
    eval_every: int = 0  # epochs between eval_fn calls; 0 = only at the end
    checkpoint_every: int = 1  # epochs between checkpoints; 0 = only at the end
    shuffle: bool = True
    drop_last: bool = False
    num_workers: int = 0
    progress: bool = (
        True  # a bar over epochs (adtr_core.runs.progress), the epoch loss in the postfix
    )
    log_every_steps: int = 0  # print the step loss every N steps (a host sync); 0 = never
    compile: bool = False  # wrap the model in torch.compile for the training steps
    # Stop on a plateau of an eval_fn value (None: train all epochs): see :class:`Plateau`.
    plateau: Plateau | None = None

    def __post_init__(self) -> None:
        self.lr_milestones = tuple(int(m) for m in self.lr_milestones)
        if isinstance(self.plateau, Mapping):  # from a checkpoint's plain-typed config
            self.plateau = Plateau(**self.plateau)
        if self.epochs < 0:
            raise ValueError(f"TrainConfig.epochs must be >= 0, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"TrainConfig.batch_size must be >= 1, got {self.batch_size}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(
                f"TrainConfig.grad_clip must be > 0 or None (no clipping), got {self.grad_clip}"
            )
        for name in ("eval_every", "checkpoint_every", "num_workers", "log_every_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        """The config as plain types (tuples become lists), e.g. for a checkpoint's ``extra``."""
        out = dataclasses.asdict(self)
        out["lr_milestones"] = list(self.lr_milestones)
        return out


@dataclass
class Plateau:
    """Train until ``key`` (a value of ``eval_fn``, higher is better) stops improving.

    After every evaluation: a value above the best so far by more than ``min_delta`` resets
    the count; otherwise the count grows, and at ``patience`` evaluations without improvement
    the lr is multiplied by ``lr_gamma`` (at most ``lr_drops`` times, the count starting
    again) and then training stops. ``epochs`` stays the upper bound. The decision is a
    function of the history alone, so a resumed run decides as an uninterrupted one.
    """

    key: str = "val_auroc"
    patience: int = 3
    min_delta: float = 0.0
    lr_drops: int = 1

    def __post_init__(self) -> None:
        if self.patience < 1 or self.lr_drops < 0 or self.min_delta < 0:
            raise ValueError(
                f"Plateau needs patience >= 1, lr_drops >= 0, min_delta >= 0; got {self}"
            )

    def action(self, history: Sequence[Mapping[str, Any]]) -> str:
        """``"continue"``, ``"drop"`` (the lr) or ``"stop"``, after the last row of ``history``."""
        best, wait, drops, act = -math.inf, 0, 0, "continue"
        for row in history:
            value = row.get(self.key)
            if value is None or not math.isfinite(float(value)):
                continue
            act = "continue"
            if float(value) > best + self.min_delta:
                best, wait = float(value), 0
                continue
            wait += 1
            if wait >= self.patience:
                if drops < self.lr_drops:
                    drops, wait, act = drops + 1, 0, "drop"
                else:
                    act = "stop"
        return act


# ---------------------------------------------------------------------------------------------
# Data


def _as_dataset(train_data: Dataset | Sequence[torch.Tensor]) -> Dataset:
    if isinstance(train_data, (tuple, list)):
        if not train_data or not all(isinstance(t, torch.Tensor) for t in train_data):
            raise TypeError(
                "train_data given as a tuple/list must hold tensors with the same first "
                "dimension; otherwise pass a torch Dataset"
            )
        return TensorDataset(*train_data)
    if not hasattr(train_data, "__getitem__") or not hasattr(train_data, "__len__"):
        raise TypeError(
            f"train_data must be a torch Dataset or a tuple of tensors, got {type(train_data)}"
        )
    return train_data


# ---------------------------------------------------------------------------------------------
# Trainer

LossFn = Callable[[nn.Module, Any], torch.Tensor]
EvalFn = Callable[[nn.Module], Mapping[str, float]]


class Trainer:
    """Train any ``nn.Module`` with AdamW + MultiStepLR on a dataset, with checkpoints.

    Args:
        model: the module to train (its trainable parameters are optimised).
        loss_fn: ``loss_fn(model, batch) -> scalar tensor``; ``batch`` is what the DataLoader
            yields, already on the device (tensors moved inside dicts, tuples and lists).
        train_data: a torch ``Dataset`` or a tuple of tensors (wrapped in a ``TensorDataset``;
            the batch is then a list of tensors).
        config: optimisation settings.
        eval_fn: ``eval_fn(model) -> {name: float}``, called with the model in eval mode every
            ``config.eval_every`` epochs and after the last one; its values join the history.
        checkpoint_path: where to save checkpoints; when the file exists, training resumes
            from it (and returns at once if it already holds ``config.epochs`` epochs).
        optimizer_params: parameters or parameter groups for AdamW; default: every parameter
            of ``model`` with ``requires_grad``.
        checkpoint_extra: plain-typed dict stored in every checkpoint's ``extra`` (e.g. the
            experiment's resolved config); the trainer adds ``extra["train_config"]``.
        thread_rule: an ``adtr_core.runs.threads.ThreadRule`` re-applied before every epoch (None:
            the thread count is left as it is).
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        train_data: Dataset | Sequence[torch.Tensor],
        config: TrainConfig | None = None,
        eval_fn: EvalFn | None = None,
        checkpoint_path: str | os.PathLike | None = None,
        optimizer_params: Iterable | None = None,
        checkpoint_extra: Mapping[str, Any] | None = None,
        thread_rule: Any = None,
    ) -> None:
        self.config = config or TrainConfig()
        self.thread_rule = thread_rule
        self.device = resolve_device(self.config.device)
        self.model = model.to(self.device)
        self.loss_fn = loss_fn
        self.eval_fn = eval_fn
        self.dataset = _as_dataset(train_data)
        if len(self.dataset) == 0:
            raise ValueError("train_data is empty: there is nothing to train on")
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path is not None else None
        self.checkpoint_extra = dict(checkpoint_extra or {})

        params = (
            list(optimizer_params)
            if optimizer_params is not None
            else [p for p in model.parameters() if p.requires_grad]
        )
        if not params:
            raise ValueError("the model has no trainable parameters (requires_grad=True)")
        cfg = self.config
        # foreach: one kernel per operation over every parameter (torch picks it on CUDA, not
        # on the CPU); the same updates bit for bit as the per-parameter loop, in less time
        self.optimizer = torch.optim.AdamW(
            params, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True
        )
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(
            self.optimizer, milestones=list(cfg.lr_milestones), gamma=cfg.lr_gamma
        )
        self._generator = torch.Generator()
        self.loader = DataLoader(
            self.dataset,
            batch_size=cfg.batch_size,
            shuffle=cfg.shuffle,
            drop_last=cfg.drop_last,
            num_workers=cfg.num_workers,
            pin_memory=self.device.type == "cuda",
            generator=self._generator,
            worker_init_fn=seed_worker if cfg.num_workers > 0 else None,
        )
        if len(self.loader) == 0:
            raise ValueError(
                f"no batches: {len(self.dataset)} samples with batch_size={cfg.batch_size} and "
                f"drop_last=True; lower batch_size or set drop_last=False"
            )
        use_amp = cfg.amp and (self.device.type == "cuda" or cfg.cpu_amp)
        self.autocast_dtype = torch.bfloat16 if use_amp else None
        self._step_model = torch.compile(self.model) if cfg.compile else self.model
        self.epoch = 0  # epochs completed
        self.history: list[dict] = []
        if self.checkpoint_path is not None and self.checkpoint_path.exists():
            self._resume(self.checkpoint_path)

    # -- checkpoints ----------------------------------------------------------------------------

    def _resume(self, path: Path) -> None:
        ckpt = load_checkpoint(path, map_location="cpu")
        hint = "delete it or choose another --out"
        try:
            self.model.load_state_dict(ckpt["model"])
        except RuntimeError as err:
            raise CheckpointError(
                f"checkpoint {path} does not match the model ({type(self.model).__name__}): "
                f"it was written for another model or configuration; {hint}.\n  {err}"
            ) from err
        try:
            kernels = [g.get("foreach") for g in self.optimizer.param_groups]
            self.optimizer.load_state_dict(ckpt["optimizer"])
            for group, foreach in zip(self.optimizer.param_groups, kernels):
                group["foreach"] = foreach  # the kernels chosen now, not the checkpoint's
            if ckpt.get("scheduler") is not None:
                state = dict(ckpt["scheduler"])
                if isinstance(state.get("milestones"), dict):
                    state["milestones"] = Counter(state["milestones"])
                self.scheduler.load_state_dict(state)
        except (ValueError, KeyError, RuntimeError) as err:
            raise CheckpointError(
                f"checkpoint {path}: the optimizer state does not match the trainable "
                f"parameters; {hint}.\n  {err}"
            ) from err
        stored = (ckpt.get("extra") or {}).get("train_config") or {}
        current = self.config.to_dict()
        changed = sorted(
            k
            for k in current
            if k in stored and k not in _RESUMABLE_FIELDS and stored[k] != current[k]
        )
        if changed:
            diffs = ", ".join(f"{k}: {stored[k]!r} -> {current[k]!r}" for k in changed)
            warnings.warn(
                f"resuming from {path} with a changed config ({diffs}); the result will differ "
                f"from an uninterrupted run",
                stacklevel=3,
            )
        self.epoch = int(ckpt["epoch"])
        self.history = list(ckpt.get("history") or [])

    def save(self, path: str | os.PathLike | None = None) -> Path:
        """Save a checkpoint of the current state to ``path`` (default: ``checkpoint_path``)."""
        path = path if path is not None else self.checkpoint_path
        if path is None:
            raise ValueError("no checkpoint path: pass one to save() or to Trainer(...)")
        return save_checkpoint(
            path,
            self.model,
            self.optimizer,
            self.scheduler,
            self.epoch,
            self.history,
            extra={**self.checkpoint_extra, "train_config": self.config.to_dict()},
        )

    # -- training -------------------------------------------------------------------------------

    @property
    def stopped(self) -> bool:
        """Whether training ended on a plateau before ``epochs`` (see :class:`Plateau`)."""
        return bool(self.history) and self.history[-1].get("plateau") == "stop"

    @staticmethod
    def _postfix(row: Mapping[str, Any]) -> dict[str, str]:
        out = {"loss": f"{row['loss']:.4g}", "lr": f"{row['lr']:.2g}"}
        for key in ("val_auroc",):
            if key in row:
                out["val"] = f"{row[key]:.3f}"
        return out

    def _evaluate(self) -> dict[str, float]:
        was_training = self.model.training
        self.model.eval()
        try:
            metrics = self.eval_fn(self.model)
        finally:
            self.model.train(was_training)
        return {str(k): float(v) for k, v in dict(metrics).items()}

    def step(self, batch: Any) -> torch.Tensor:
        """One optimisation step: the loss (under autocast), backward, clipping, AdamW.

        Args:
            batch: what ``loss_fn`` takes, already on ``self.device``.

        Returns:
            The detached loss, a scalar tensor on the device (no host sync).
        """
        with torch.autocast(
            self.device.type,
            dtype=self.autocast_dtype or torch.bfloat16,
            enabled=self.autocast_dtype is not None,
        ):
            loss = self.loss_fn(self._step_model, batch)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise TypeError("loss_fn(model, batch) must return a scalar tensor")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(
                [p for g in self.optimizer.param_groups for p in g["params"]],
                self.config.grad_clip,
            )
        self.optimizer.step()
        return loss.detach()

    def _train_epoch(self) -> float:
        cfg = self.config
        if self.thread_rule is not None:
            self.thread_rule.update()
        s = epoch_seed(cfg.seed, self.epoch)
        seed_everything(s)  # dropout & any randomness inside loss_fn
        self._generator.manual_seed(s)  # shuffle order
        self.model.train()
        total = torch.zeros((), device=self.device)  # summed on device: no host sync per step
        steps = 0
        for batch in self.loader:
            loss = self.step(move_to_device(batch, self.device))
            total += loss.float().reshape(())
            steps += 1
            if cfg.log_every_steps and steps % cfg.log_every_steps == 0:
                from tqdm.std import tqdm

                tqdm.write(f"epoch {self.epoch + 1} step {steps}: loss {loss.item():.6g}")
        return total.item() / steps

    def fit(self) -> list[dict]:
        """Train up to ``config.epochs`` epochs (continuing a resumed run).

        Returns:
            The history: one dict per epoch with ``epoch`` (1-based), ``loss`` (mean over the
            epoch's steps), ``lr`` (used during the epoch), ``time_s``, plus eval metrics on the
            epochs ``eval_fn`` ran.

        Raises:
            FloatingPointError: the epoch loss is not finite (training diverged).
        """
        from adtr_core.runs.progress import progress_bar

        cfg = self.config
        if self.epoch >= cfg.epochs or self.stopped:
            return list(self.history)
        bar = progress_bar(
            range(self.epoch, cfg.epochs),
            initial=self.epoch,
            total=cfg.epochs,
            desc="train",
            unit="epoch",
            disable=not cfg.progress,
            dynamic_ncols=True,
        )
        try:
            for _ in bar:
                start = time.perf_counter()
                lr = float(self.optimizer.param_groups[0]["lr"])
                loss = self._train_epoch()
                if not math.isfinite(loss):
                    raise FloatingPointError(
                        f"epoch {self.epoch + 1}: the training loss is {loss}; lower the lr or "
                        f"keep grad_clip on (the last good checkpoint is kept)"
                    )
                self.scheduler.step()
                self.epoch += 1
                row: dict[str, Any] = {
                    "epoch": self.epoch,
                    "loss": loss,
                    "lr": lr,
                    "time_s": time.perf_counter() - start,
                }
                last = self.epoch == cfg.epochs
                if self.eval_fn is not None and (
                    last or (cfg.eval_every and self.epoch % cfg.eval_every == 0)
                ):
                    row.update(self._evaluate())
                action = "continue"
                if cfg.plateau is not None and cfg.plateau.key in row:
                    action = cfg.plateau.action([*self.history, row])
                    if action == "drop":
                        for group in self.optimizer.param_groups:
                            group["lr"] *= cfg.lr_gamma
                    row["plateau"] = action
                    last = last or action == "stop"  # checkpoint the stopped run
                self.history.append(row)
                bar.set_postfix(self._postfix(row))
                if self.checkpoint_path is not None and (
                    last or (cfg.checkpoint_every and self.epoch % cfg.checkpoint_every == 0)
                ):
                    self.save()
                if action == "stop":
                    break
        finally:
            bar.close()
        return list(self.history)
