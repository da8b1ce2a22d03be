"""``Trainer.step``'s faster kernels change nothing: the same weights as the plain loop."""

import copy

import torch

from adtr_core.method.losses import l_norm
from adtr_core.method.model import ADTR, ADTRConfig
from adtr_core.runs.train import TrainConfig, Trainer

CFG = ADTRConfig(in_channels=24, hidden_dim=16, num_heads=2, dim_feedforward=32, grid=(4, 4))


def _loss(model, batch):
    f = batch[0]  # (B, C, h, w)
    return l_norm(f, model(f))


def test_step_updates_the_weights_as_the_per_parameter_loop_does():
    torch.manual_seed(0)
    model = ADTR(CFG).train()
    reference = copy.deepcopy(model)
    initial = [p.detach().clone() for p in model.parameters()]
    f = torch.randn(3, 24, 4, 4)
    config = TrainConfig(device="cpu", lr=1e-2, weight_decay=1e-2, grad_clip=0.1, progress=False)
    trainer = Trainer(model, _loss, (f,), config)
    assert trainer.optimizer.defaults["foreach"]
    # the reference: torch's per-parameter AdamW and clipping (its CPU default before)
    params = list(reference.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-2, weight_decay=1e-2, foreach=False)
    for step in range(4):
        torch.manual_seed(step)  # the same dropout masks in both
        trainer.step([f])
        torch.manual_seed(step)
        optimizer.zero_grad(set_to_none=True)
        _loss(reference, [f]).backward()
        torch.nn.utils.clip_grad_norm_(params, 0.1, foreach=False)
        optimizer.step()
    for (name, a), b in zip(model.named_parameters(), reference.parameters()):
        assert torch.equal(a, b), name  # bit for bit
    assert not all(torch.equal(a, p) for a, p in zip(model.parameters(), initial))  # it trained
    state = trainer.optimizer.state_dict()["state"]
    ref_state = optimizer.state_dict()["state"]
    for i in ref_state:
        assert torch.equal(state[i]["exp_avg_sq"], ref_state[i]["exp_avg_sq"])
