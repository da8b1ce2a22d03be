"""Tests for the model-agnostic trainer: learning, resume, checkpoints, devices."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from adtr_core.runs.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from adtr_core.runs.device import epoch_seed, move_to_device, resolve_device, seed_everything
from adtr_core.runs.train import TrainConfig, Trainer


def _mlp(dropout: float = 0.0, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(dropout), nn.Linear(8, 4))


def _data(n: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 4, generator=g)
    return x, x.flip(1) * 0.5  # a linear target the MLP can fit


def _mse(model: nn.Module, batch) -> torch.Tensor:
    x, y = batch
    return ((model(x) - y) ** 2).mean()


def _cfg(**kw) -> TrainConfig:
    base = dict(epochs=4, batch_size=5, lr=1e-2, lr_milestones=(3,), progress=False, device="cpu")
    base.update(kw)
    return TrainConfig(**base)


def test_fit_reduces_loss_and_history_rows():
    model = _mlp()
    hist = Trainer(model, _mse, _data(), _cfg(epochs=30, lr_milestones=(20,))).fit()
    assert [r["epoch"] for r in hist] == list(range(1, 31))
    assert set(hist[0]) == {"epoch", "loss", "lr", "time_s"}
    assert hist[-1]["loss"] < 0.5 * hist[0]["loss"]
    assert hist[0]["lr"] == pytest.approx(1e-2)
    assert hist[19]["lr"] == pytest.approx(1e-2)  # epoch 20 still at the base lr
    assert hist[20]["lr"] == pytest.approx(1e-3)  # x0.1 from epoch 21 (milestone 20)


def test_epoch_loss_is_mean_over_steps():
    x, y = _data(10)
    model = nn.Linear(4, 4)
    seen = []

    def loss_fn(m, batch):
        loss = ((m(batch[0]) - batch[1]) ** 2).mean()
        seen.append(loss.item())
        return loss

    hist = Trainer(model, loss_fn, (x, y), _cfg(epochs=1, batch_size=4)).fit()
    assert len(seen) == 3  # 4 + 4 + 2 samples, drop_last off
    assert hist[0]["loss"] == pytest.approx(sum(seen) / 3, rel=1e-5)


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_resume_gives_same_weights_as_uninterrupted(tmp_path: Path, dropout: float):
    data = _data()
    straight = _mlp(dropout)
    h_straight = Trainer(straight, _mse, data, _cfg()).fit()

    ckpt = tmp_path / "ckpt.pt"
    first = _mlp(dropout)
    Trainer(first, _mse, data, _cfg(epochs=2), checkpoint_path=ckpt).fit()
    resumed = _mlp(dropout, seed=123)  # different init: everything must come from the checkpoint
    h_resumed = Trainer(resumed, _mse, data, _cfg(), checkpoint_path=ckpt).fit()

    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name
    assert [r["loss"] for r in h_resumed] == pytest.approx([r["loss"] for r in h_straight])
    assert load_checkpoint(ckpt)["epoch"] == 4


def test_shuffle_order_depends_on_seed_and_epoch_only():
    idx = torch.arange(12).float().unsqueeze(1)
    orders = []

    def record(m, batch):
        orders.append(batch[0].squeeze(1).long().tolist())
        return m(batch[0]).sum() * 0

    for _ in range(2):
        Trainer(nn.Linear(1, 1), record, (idx,), _cfg(epochs=2, batch_size=12)).fit()
    assert orders[0] == orders[2] and orders[1] == orders[3]  # same seed: same order
    assert orders[0] != orders[1]  # reshuffled each epoch
    assert sorted(orders[0]) == list(range(12))
    assert epoch_seed(0, 1) != epoch_seed(0, 2) != epoch_seed(1, 1)


def test_finished_checkpoint_returns_history_without_training(tmp_path: Path):
    ckpt = tmp_path / "ckpt.pt"
    hist = Trainer(_mlp(), _mse, _data(), _cfg(epochs=2), checkpoint_path=ckpt).fit()
    calls = []

    def loss_fn(m, b):
        calls.append(1)
        return _mse(m, b)

    again = Trainer(_mlp(), loss_fn, _data(), _cfg(epochs=2), checkpoint_path=ckpt).fit()
    assert calls == [] and again == hist


def test_checkpoint_every_and_final_save(tmp_path: Path, monkeypatch):
    import adtr_core.runs.train as train_mod

    saved = []
    real = train_mod.save_checkpoint

    def spy(path, model, optimizer, scheduler, epoch, history, extra=None):
        saved.append(epoch)
        return real(path, model, optimizer, scheduler, epoch, history, extra)

    monkeypatch.setattr(train_mod, "save_checkpoint", spy)
    ckpt = tmp_path / "c.pt"
    cfg = _cfg(epochs=5, checkpoint_every=2)
    run = {"config": {"category": "brick", "stages": (1, 2)}}
    Trainer(_mlp(), _mse, _data(), cfg, checkpoint_path=ckpt, checkpoint_extra=run).fit()
    assert saved == [2, 4, 5]
    extra = load_checkpoint(ckpt)["extra"]
    assert extra["train_config"]["epochs"] == 5 and extra["train_config"]["lr_milestones"] == [3]
    assert extra["config"] == {"category": "brick", "stages": (1, 2)}


def test_resume_with_changed_config_warns(tmp_path: Path):
    ckpt = tmp_path / "c.pt"
    Trainer(_mlp(), _mse, _data(), _cfg(epochs=1), checkpoint_path=ckpt).fit()
    with pytest.warns(UserWarning, match="lr: 0.01 -> 0.001"):
        Trainer(_mlp(), _mse, _data(), _cfg(epochs=2, lr=1e-3), checkpoint_path=ckpt)


def test_eval_fn_called_in_eval_mode_and_merged(tmp_path: Path):
    model = _mlp(dropout=0.5)
    modes = []

    def eval_fn(m):
        modes.append(m.training)
        return {"score": 1.5}

    hist = Trainer(model, _mse, _data(), _cfg(epochs=5, eval_every=2), eval_fn=eval_fn).fit()
    assert [r["epoch"] for r in hist if "score" in r] == [2, 4, 5]
    assert modes == [False, False, False] and model.training


def test_dict_dataset_and_nested_batch_moved():
    class DictData(Dataset):
        def __len__(self):
            return 6

        def __getitem__(self, i):
            return {"x": torch.full((4,), float(i)), "meta": {"y": torch.tensor(i)}, "name": str(i)}

    seen = []

    def loss_fn(m, batch):
        seen.append((batch["x"].shape, batch["meta"]["y"].shape, batch["name"]))
        return m(batch["x"]).pow(2).mean()

    Trainer(nn.Linear(4, 2), loss_fn, DictData(), _cfg(epochs=1, batch_size=3)).fit()
    assert seen[0][0] == (3, 4) and seen[0][1] == (3,) and len(seen[0][2]) == 3

    moved = move_to_device({"a": [torch.ones(1), (torch.zeros(1), 3)]}, torch.device("cpu"))
    assert isinstance(moved["a"], list) and isinstance(moved["a"][1], tuple)


def test_grad_clip_bounds_update():
    x = torch.ones(4, 1)
    model = nn.Linear(1, 1, bias=False)
    nn.init.zeros_(model.weight)
    grads = []

    def loss_fn(m, batch):
        return (m(batch[0]) - 1000.0).pow(2).mean()

    cfg = _cfg(epochs=1, batch_size=4, lr=1.0, weight_decay=0.0, grad_clip=0.1, shuffle=False)
    t = Trainer(model, loss_fn, (x,), cfg)
    t.optimizer.register_step_pre_hook(lambda *_: grads.append(model.weight.grad.clone()))
    t.fit()
    assert grads[-1].norm().item() == pytest.approx(0.1, rel=1e-4)  # clipped before the step


def test_non_finite_loss_raises():
    def loss_fn(m, batch):
        return m(batch[0]).sum() * float("nan")

    with pytest.raises(FloatingPointError, match="not finite|nan"):
        Trainer(nn.Linear(4, 1), loss_fn, _data(), _cfg(epochs=1)).fit()


def test_checkpoint_mismatch_names_file(tmp_path: Path):
    ckpt = tmp_path / "run" / "ckpt.pt"
    Trainer(_mlp(), _mse, _data(), _cfg(epochs=1), checkpoint_path=ckpt).fit()
    other = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 4))
    with pytest.raises(CheckpointError, match=r"ckpt\.pt.*does not match.*--out"):
        Trainer(other, _mse, _data(), _cfg(epochs=2), checkpoint_path=ckpt)


def _pwn(marker: str) -> None:  # would run if a checkpoint could execute code
    Path(marker).write_text("pwned")


class _Evil:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (_pwn, (self.marker,))


@pytest.mark.parametrize("writer", ["pickle", "torch"])
def test_malicious_checkpoint_refused(tmp_path: Path, writer: str):
    marker = tmp_path / "marker.txt"
    ckpt = tmp_path / "ckpt.pt"
    payload = {"format": "adtr-checkpoint", "model": _Evil(marker)}
    if writer == "pickle":
        ckpt.write_bytes(pickle.dumps(payload, protocol=2))
    else:
        torch.save(payload, ckpt)
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_checkpoint(ckpt)
    with pytest.raises(CheckpointError):
        Trainer(_mlp(), _mse, _data(), _cfg(), checkpoint_path=ckpt)
    assert not marker.exists()


def test_corrupt_and_foreign_checkpoints(tmp_path: Path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(bad)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.ones(2)}, foreign)
    with pytest.raises(CheckpointError, match="not an adtr"):
        load_checkpoint(foreign)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")


def test_save_load_roundtrip_plain_types(tmp_path: Path):
    import numpy as np

    model = _mlp()
    opt = torch.optim.AdamW(model.parameters())
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [2])
    path = save_checkpoint(
        tmp_path / "x.pt",
        model,
        opt,
        sched,
        3,
        [{"epoch": 1, "loss": np.float32(0.5)}],
        {"a": (1,)},
    )
    ck = load_checkpoint(path)
    assert ck["epoch"] == 3 and ck["history"][0]["loss"] == 0.5
    assert isinstance(ck["history"][0]["loss"], float)
    assert ck["scheduler"]["milestones"] == {2: 1}
    assert not list(tmp_path.glob(".x.*"))  # no temp file left behind


def test_resolve_device_and_config_errors(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in {"cpu", "cuda"}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    for name in ("cuda", "cuda:1"):
        with pytest.raises(RuntimeError, match="no GPU: use --device cpu"):
            resolve_device(name)
    with pytest.raises(ValueError, match="device"):
        resolve_device("tpu-ish")
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="grad_clip"):
        TrainConfig(grad_clip=0.0)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="empty"):
        Trainer(_mlp(), _mse, (torch.zeros(0, 4), torch.zeros(0, 4)), _cfg())
    with pytest.raises(ValueError, match="drop_last"):
        Trainer(_mlp(), _mse, _data(3), _cfg(batch_size=5, drop_last=True))
    frozen = _mlp().requires_grad_(False)
    with pytest.raises(ValueError, match="trainable"):
        Trainer(frozen, _mse, _data(), _cfg())
    with pytest.raises(TypeError, match="scalar"):
        Trainer(_mlp(), lambda m, b: m(b[0]), _data(), _cfg(epochs=1)).fit()


def test_cpu_amp_runs_in_bf16():
    dtypes = []

    def loss_fn(m, batch):
        out = m(batch[0])
        dtypes.append(out.dtype)
        return (out.float() - batch[1]).pow(2).mean()

    Trainer(_mlp(), loss_fn, _data(), _cfg(epochs=1, cpu_amp=True)).fit()
    Trainer(_mlp(), loss_fn, _data(), _cfg(epochs=1)).fit()
    assert dtypes[0] == torch.bfloat16 and dtypes[-1] == torch.float32


def test_seed_everything_repeats():
    seed_everything(3)
    a = torch.rand(3)
    seed_everything(3)
    assert torch.equal(a, torch.rand(3))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_training_bf16_and_resume(tmp_path: Path):
    data = _data()
    a = _mlp()
    Trainer(a, _mse, data, _cfg(device="cuda")).fit()
    ckpt = tmp_path / "c.pt"
    b = _mlp()
    Trainer(b, _mse, data, _cfg(epochs=2, device="cuda"), checkpoint_path=ckpt).fit()
    c = _mlp(seed=5)
    hist = Trainer(c, _mse, data, _cfg(device="cuda"), checkpoint_path=ckpt).fit()
    assert next(c.parameters()).is_cuda and len(hist) == 4
    for pa, pc in zip(a.parameters(), c.parameters()):
        torch.testing.assert_close(pa, pc, rtol=1e-3, atol=1e-3)


def test_a_checkpoint_from_the_per_parameter_optimizer_resumes_on_foreach(tmp_path: Path):
    """Checkpoints written before the trainer chose AdamW's foreach kernels store
    ``foreach=None``; resuming keeps the kernels chosen now."""
    ckpt = tmp_path / "ckpt.pt"
    Trainer(_mlp(), _mse, _data(), _cfg(epochs=1), checkpoint_path=ckpt).fit()
    state = load_checkpoint(ckpt)
    for group in state["optimizer"]["param_groups"]:
        group["foreach"] = None  # as the per-parameter loop wrote it
    torch.save(state, ckpt)
    trainer = Trainer(_mlp(), _mse, _data(), _cfg(epochs=2), checkpoint_path=ckpt)
    assert [g["foreach"] for g in trainer.optimizer.param_groups] == [True]
    assert len(trainer.fit()) == 2
