"""Losses of eqs. 1, 6-9 on tiny tensors whose values are worked out by hand."""

import math

import pytest
import torch

from adtr_core.method.losses import l_img, l_norm, l_px, phi
from adtr_core.method.masks import mask_to_grid

# Channel-mean absolute differences m with round pseudo-Huber values sqrt(m^2 + 1) - 1:
M_PHI1 = math.sqrt(3.0)  # phi = sqrt(4) - 1 = 1
M_PHI2 = math.sqrt(8.0)  # phi = sqrt(9) - 1 = 2
M_PHI3 = math.sqrt(15.0)  # phi = sqrt(16) - 1 = 3


def _pair(mean_abs: list[list[float]], channels: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """f = 0 and f_hat with |d| = m in every channel, alternating signs (mean |d| = m)."""
    m = torch.tensor(mean_abs, dtype=torch.float32)  # (h, w)
    sign = torch.tensor([(-1.0) ** i for i in range(channels)]).view(1, channels, 1, 1)
    f_hat = sign * m[None, None]  # (1, C, h, w)
    return torch.zeros_like(f_hat), f_hat


def test_l_norm_by_hand():
    f = torch.zeros(1, 2, 1, 2)
    f_hat = torch.tensor([[[[1.0, 0.0]], [[2.0, 0.0]]]])  # d(:,0) = (1, 2), d(:,1) = 0
    # (1/HW) sum_u ||d(:,u)||^2 = (5 + 0) / 2
    assert l_norm(f, f_hat).item() == pytest.approx(2.5)


def test_phi_by_hand():
    f = torch.zeros(1, 2, 1, 1)
    f_hat = torch.tensor([3.0, -1.0]).view(1, 2, 1, 1)  # mean |d| = 2
    assert phi(f, f_hat).item() == pytest.approx(math.sqrt(5.0) - 1.0)
    f, f_hat = _pair([[M_PHI1, M_PHI2, 0.0]], channels=4)
    torch.testing.assert_close(phi(f, f_hat), torch.tensor([[[1.0, 2.0, 0.0]]]))


def test_l_px_by_hand():
    f, f_hat = _pair([[M_PHI2, M_PHI1]])  # phi = (2, 1)
    mask = torch.tensor([[[1.0, 0.0]]])  # (B, h, w): position 0 anomalous
    # (1/2)*1 - a*log(1 - exp(-(1/2)*2)), log(1 - e^-1) = -0.45867514538708193
    expected = 0.5 + 0.003 * 0.45867514538708193
    assert l_px(f, f_hat, mask).item() == pytest.approx(expected, rel=1e-6)
    assert l_px(f, f_hat, mask, alpha=1.0).item() == pytest.approx(0.5 + 0.45867514538708193)


def test_l_px_all_zero_mask_is_mean_phi():
    f, f_hat = _pair([[M_PHI1, M_PHI3], [0.0, M_PHI2]])  # phi = (1, 3, 0, 2), mean 1.5
    f_hat.requires_grad_(True)
    loss = l_px(f, f_hat, torch.zeros(1, 1, 32, 32))
    assert loss.item() == pytest.approx(1.5)
    loss.backward()
    assert torch.isfinite(f_hat.grad).all()


def test_l_px_anomalous_region_perfectly_reconstructed_is_finite():
    f = torch.zeros(1, 3, 2, 2)
    f_hat = f.clone().requires_grad_(True)  # phi = 0 everywhere, x = 0
    loss = l_px(f, f_hat, torch.ones(1, 2, 2))
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    assert torch.isfinite(f_hat.grad).all()


def test_l_px_batch_mean():
    f, f_hat = _pair([[M_PHI2, M_PHI1]])
    f2, f_hat2 = _pair([[M_PHI1, M_PHI1]])
    masks = torch.tensor([[[1.0, 0.0]], [[0.0, 0.0]]])
    both = l_px(torch.cat([f, f2]), torch.cat([f_hat, f_hat2]), masks)
    one = l_px(f, f_hat, masks[:1])
    two = l_px(f2, f_hat2, masks[1:])
    assert both.item() == pytest.approx((one.item() + two.item()) / 2)
    assert two.item() == pytest.approx(1.0)


def test_l_px_sgd_step_pushes_masked_and_pulls_normal():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(2, 8, 4, 4, generator=g)
    f_hat = (f + 0.5 * torch.randn(2, 8, 4, 4, generator=g)).requires_grad_(True)
    mask = torch.zeros(2, 1, 64, 64)
    mask[0, 0, :32, :32] = 1.0  # image 0: top-left quarter of the grid anomalous
    mask[1, 0, 40:50, 5:9] = 1.0  # image 1: a small blob
    y = mask_to_grid(mask, (4, 4)).bool()
    before = phi(f, f_hat).detach()
    l_px(f, f_hat, mask).backward()
    with torch.no_grad():
        after = phi(f, f_hat - 1.0 * f_hat.grad)
    assert (after[y] > before[y]).all()  # pushed away
    assert (after[~y] < before[~y]).all()  # pulled in


def test_l_img_by_hand():
    f, f_hat = _pair([[M_PHI3, 0.0], [M_PHI1, M_PHI2]])  # phi = (3, 0, 1, 2)
    normal = torch.tensor([0])
    anomalous = torch.tensor([1])
    # k = 2: q = (3 + 2) / 2
    assert l_img(f, f_hat, normal, k=2).item() == pytest.approx(2.5)
    # k = 3: q = 2; anomalous: -a log(1 - e^-2), log(1 - e^-2) = -0.14541345786885906
    assert l_img(f, f_hat, anomalous, k=3).item() == pytest.approx(0.003 * 0.14541345786885906)
    # k larger than h*w = 4 is clamped: q = mean of all = 1.5
    assert l_img(f, f_hat, normal, k=20).item() == pytest.approx(1.5)
    both = l_img(torch.cat([f, f]), torch.cat([f_hat, f_hat]), torch.tensor([0, 1]), k=3)
    assert both.item() == pytest.approx((2.0 + 0.003 * 0.14541345786885906) / 2)


def test_l_img_gradient_signs_and_zero_q():
    g = torch.Generator().manual_seed(1)
    f = torch.randn(1, 4, 3, 3, generator=g)
    f_hat = (f + torch.randn(1, 4, 3, 3, generator=g)).requires_grad_(True)
    for label, direction in ((0, -1.0), (1, 1.0)):
        f_hat.grad = None
        l_img(f, f_hat, torch.tensor([label]), k=4).backward()
        with torch.no_grad():
            q0 = phi(f, f_hat).flatten().topk(4).values.mean()
            q1 = phi(f, f_hat - 1.0 * f_hat.grad).flatten().topk(4).values.mean()
        assert direction * (q1 - q0) > 0
    zero = l_img(f, f.clone(), torch.tensor([1]))  # q = 0 on an anomalous image: finite
    assert torch.isfinite(zero)


def test_shape_errors():
    with pytest.raises(ValueError, match="same shape"):
        l_norm(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, 3))
    with pytest.raises(ValueError, match="batch"):
        l_img(torch.zeros(2, 2, 2, 2), torch.zeros(2, 2, 2, 2), torch.tensor([0, 1, 1]))
