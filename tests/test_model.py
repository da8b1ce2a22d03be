"""ADTR: shapes, paper sizes, ablation switches, attention correctness, gradients, seeds."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from adtr_core.method.model import (
    ADTR,
    ADTRConfig,
    MultiheadAttention,
    grid_position_embedding,
    sine_position_embedding,
)

TINY = dict(
    in_channels=24,
    hidden_dim=32,
    num_encoder_layers=2,
    num_decoder_layers=2,
    num_heads=4,
    dim_feedforward=64,
    grid=(4, 4),
)


def _features(b: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, 24, 4, 4, generator=torch.Generator().manual_seed(seed))


def _tiny(**kw) -> ADTR:
    return ADTR(ADTRConfig(**{**TINY, **kw}))


def test_output_shape_and_finite() -> None:
    model = _tiny().eval()
    f_hat = model(_features())
    assert f_hat.shape == (3, 24, 4, 4)
    assert torch.isfinite(f_hat).all()


def test_paper_sizes() -> None:
    model = ADTR()
    assert (model.input_proj.in_features, model.input_proj.out_features) == (720, 256)
    assert (model.output_proj.in_features, model.output_proj.out_features) == (256, 720)
    assert len(model.encoder) == 4 and len(model.decoder) == 4
    assert model.query_embed.weight.shape == (256, 256)  # K = 16 * 16 queries
    layer = model.encoder[0]
    assert layer.self_attn.num_heads == 8
    assert (layer.ffn.linear1.in_features, layer.ffn.linear1.out_features) == (256, 1024)
    assert model(torch.randn(1, 720, 16, 16)).shape == (1, 720, 16, 16)


@pytest.mark.parametrize("shape", [(2, 24, 5, 4), (2, 25, 4, 4), (24, 4, 4)])
def test_bad_features_are_a_clear_error(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="ADTRConfig"):
        _tiny()(torch.randn(*shape))


def test_bad_config() -> None:
    with pytest.raises(ValueError, match="num_heads"):
        ADTRConfig(hidden_dim=30, num_heads=4)
    with pytest.raises(ValueError, match="no_attention_memory"):
        ADTRConfig(no_attention_memory="copy")


def _attention_modules(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, MultiheadAttention | nn.MultiheadAttention)]


def test_no_attention_removes_every_attention_sublayer() -> None:
    full, ablated = _tiny(), _tiny(use_attention=False)
    assert len(_attention_modules(full)) == 2 + 2 * 2
    assert _attention_modules(ablated) == []
    assert not [n for n, _ in ablated.named_parameters() if "attn" in n]
    # everything else is kept: projections, FFNs, norms, query embedding
    kept = {n for n, _ in full.named_parameters() if "attn" not in n}
    assert kept == {n for n, _ in ablated.named_parameters()}
    assert ablated.attention_maps(_features()) == {}
    ablated.eval()
    # "add" (default): the decoder reads the encoder token at its own position ...
    assert not torch.allclose(ablated(_features(seed=0)), ablated(_features(seed=1)))
    # ... and each token is processed on its own (no mixing across positions)
    f = _features()
    g = f.clone()
    g[:, :, 0, 0] += 1.0
    diff = (ablated(f) - ablated(g)).abs().sum(dim=1)  # (B, h, w)
    assert diff[:, 0, 0].min() > 0 and diff.flatten(1)[:, 1:].max() == 0
    # "none": removal taken literally, the output no longer depends on the input
    literal = _tiny(use_attention=False, no_attention_memory="none").eval()
    assert torch.allclose(literal(_features(seed=0)), literal(_features(seed=1)))


def test_no_query_removes_the_query_embedding() -> None:
    model = _tiny(use_query=False)
    assert model.query_embed is None
    assert not [n for n in model.state_dict() if "query" in n]
    assert "query_embed.weight" in _tiny().state_dict()
    assert model.eval()(_features()).shape == (3, 24, 4, 4)


@pytest.mark.parametrize("switches", [{}, {"use_attention": False}, {"use_query": False}])
def test_gradients_reach_every_parameter(switches: dict) -> None:
    model = _tiny(**switches).train()
    f = _features()
    loss = (model(f) - f).pow(2).mean()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_deterministic_under_seed_and_dropout_only_in_train() -> None:
    torch.manual_seed(0)
    a = _tiny().eval()
    torch.manual_seed(0)
    b = _tiny().eval()
    f = _features()
    assert torch.equal(a(f), b(f))
    assert torch.equal(a(f), a(f))
    a.train()
    assert not torch.allclose(a(f), a(f))  # dropout 0.1 is active in training


def test_attention_matches_torch_multihead_attention() -> None:
    torch.manual_seed(0)
    ours = MultiheadAttention(32, 4).eval()
    ref = nn.MultiheadAttention(32, 4, batch_first=True).eval()
    with torch.no_grad():
        ref.in_proj_weight.copy_(ours.in_proj.weight)
        ref.in_proj_bias.copy_(ours.in_proj.bias)
        ref.out_proj.weight.copy_(ours.out_proj.weight)
        ref.out_proj.bias.copy_(ours.out_proj.bias)
    q, kv = torch.randn(2, 5, 32), torch.randn(2, 7, 32)
    out, w = ours(q, kv, kv, need_weights=True)
    out_ref, w_ref = ref(q, kv, kv, need_weights=True, average_attn_weights=False)
    assert torch.allclose(out, out_ref, atol=1e-5)
    assert torch.allclose(w, w_ref, atol=1e-5)
    self_out, _ = ours(q, q, q)  # fused q/k projection path
    self_ref, _ = ref(q, q, q, need_weights=False)
    assert torch.allclose(self_out, self_ref, atol=1e-5)


def test_attention_maps_are_row_stochastic() -> None:
    maps = _tiny().eval().attention_maps(_features())
    assert set(maps) == {
        "encoder.0.self",
        "encoder.1.self",
        "decoder.0.self",
        "decoder.0.cross",
        "decoder.1.self",
        "decoder.1.cross",
    }
    for w in maps.values():
        assert w.shape == (3, 4, 16, 16)
        assert torch.allclose(w.sum(-1), torch.ones(3, 4, 16))


def test_sine_position_embedding() -> None:
    pos = sine_position_embedding((4, 6), 32)
    assert pos.shape == (24, 32)
    assert pos.abs().max() <= 1
    assert torch.unique(pos, dim=0).shape[0] == 24  # every position is distinct
    grid = pos.view(4, 6, 32)
    assert torch.equal(grid[0, :, :16], grid[0, :1, :16].expand(6, 16))  # rows: first half
    assert torch.equal(grid[:, 0, 16:], grid[:1, 0, 16:].expand(4, 16))  # cols: second half
    assert "pos_embed" not in ADTR(ADTRConfig(**TINY)).state_dict()  # fixed, not learned


def test_grid_position_embedding_peaks_at_the_own_cell() -> None:
    pos = grid_position_embedding((16, 12), 64)
    assert pos.shape == (192, 64)
    grid = pos.view(16, 12, 64)
    assert torch.equal(grid[0, :, :32], grid[0, :1, :32].expand(12, 32))  # rows: first half
    assert torch.equal(grid[:, 0, 32:], grid[:1, 0, 32:].expand(16, 32))  # cols: second half
    gram = pos @ pos.T  # (K, K)
    assert torch.allclose(gram.diagonal(), torch.full((192,), 32.0))  # D/2 at equal cells
    off = gram - torch.diag(gram.diagonal())
    assert off.max() < 0.9 * 32  # every other cell, neighbours included, is clearly lower
    # DETR's normalised sine embedding barely tells neighbours apart (the collapse's cause)
    sine = sine_position_embedding((16, 12), 64)
    near = (sine[0] @ sine[1]) / (sine[0] @ sine[0])
    assert near > 0.95


def test_pos_scale_multiplies_the_fixed_embedding() -> None:
    one = _tiny(pos_scale=1.0).position_embedding()
    assert torch.allclose(_tiny(pos_scale=4.0).position_embedding(), 4 * one)
    assert torch.allclose(one, grid_position_embedding((4, 4), 32))
    sine = _tiny(pos_embed="sine", pos_scale=2.0).position_embedding()
    assert torch.allclose(sine, 2 * sine_position_embedding((4, 4), 32))


def test_cross_qk_init_ties_the_key_projection_to_the_query_projection() -> None:
    d = TINY["hidden_dim"]
    for layer in _tiny().decoder:
        w = layer.cross_attn.in_proj.weight
        assert torch.equal(w[d : 2 * d], w[:d])  # tied at the start ...
        assert not torch.equal(w[2 * d :], w[:d])  # ... the values are not
        assert not torch.equal(
            layer.self_attn.in_proj.weight[d : 2 * d], layer.self_attn.in_proj.weight[:d]
        )
    for layer in _tiny(cross_qk_init="xavier").decoder:
        w = layer.cross_attn.in_proj.weight
        assert not torch.equal(w[d : 2 * d], w[:d])
    with pytest.raises(ValueError, match="cross_qk_init"):
        ADTRConfig(cross_qk_init="equal")
    with pytest.raises(ValueError, match="pos_scale"):
        ADTRConfig(pos_scale=0.0)


@pytest.mark.parametrize(("width", "heads"), [(64, 2), (256, 8)])
def test_defaults_start_each_query_at_its_own_cell(width: int, heads: int) -> None:
    """At the start, the cross-attention of every decoder layer points each learned query at
    the encoder token of its own cell (the defaults), where DETR's embedding and init point
    almost none there: on unaligned images the decoder then cannot find the input's tokens."""
    f = torch.randn(2, 32, 16, 16, generator=torch.Generator().manual_seed(0))
    size = dict(in_channels=32, hidden_dim=width, num_heads=heads, dim_feedforward=4 * width)

    def own_cell(**kw) -> float:
        torch.manual_seed(1)
        model = ADTR(ADTRConfig(grid=(16, 16), **size, **kw)).eval()
        maps = model.attention_maps(f)
        hits = [
            (maps[f"decoder.{i}.cross"].mean(1).argmax(-1) == torch.arange(256)).float().mean()
            for i in range(4)
        ]
        return float(torch.stack(hits).min())

    assert own_cell() > 0.85
    assert own_cell(pos_embed="sine", pos_scale=1.0, cross_qk_init="xavier") < 0.05


# --------------------------------------------------------------------------- CPU dropout


def test_keep_mask_drops_p_scales_the_rest_and_follows_the_seed() -> None:
    from adtr_core.method.model import keep_mask

    like = torch.empty(0)
    torch.manual_seed(3)
    m = keep_mask((1000, 1000), 0.1, like)
    kept = round(0.9 * 65536)
    assert m.shape == (1000, 1000) and m.dtype == torch.float32
    assert m.unique().tolist() == [0.0, pytest.approx(65536 / kept)]
    dropped = (m == 0).float().mean().item()
    assert abs(dropped - (1 - kept / 65536)) < 2e-3  # 1e6 draws: sd 3e-4
    assert abs(m.mean().item() - 1.0) < 2e-3  # the expectation is kept
    rows = (m == 0).float().mean(dim=1)  # every slice of the 64-bit words is used alike
    assert rows.std().item() < 0.02
    cols = (m == 0).float().reshape(-1, 4).mean(dim=0)
    assert (cols - dropped).abs().max().item() < 3e-3
    torch.manual_seed(3)
    assert torch.equal(keep_mask((1000, 1000), 0.1, like), m)
    assert keep_mask((3, 5), 0.5, torch.empty(0, dtype=torch.bfloat16)).dtype == torch.bfloat16


def test_dropout_is_identity_in_eval_and_its_gradient_is_the_mask() -> None:
    from adtr_core.method.model import dropout

    x = torch.randn(64, 33, requires_grad=True)
    assert dropout(x, 0.1, training=False) is x and dropout(x, 0.0, training=True) is x
    y = dropout(x, 0.1, training=True)
    y.sum().backward()
    mask = y.detach() / x.detach()
    assert torch.allclose(x.grad, mask)
    assert torch.equal(dropout(x, 1.0, training=True), torch.zeros_like(x))


def test_attention_written_out_for_the_cpu_mask_equals_torchs(monkeypatch) -> None:
    """With a mask of ones, the training path's explicit attention = SDPA without dropout."""
    import adtr_core.method.model as model

    torch.manual_seed(0)
    attn = MultiheadAttention(32, 4, dropout=0.1).train()
    q, kv = torch.randn(2, 5, 32), torch.randn(2, 7, 32)
    monkeypatch.setattr(model, "keep_mask", lambda shape, p, like: torch.ones(shape))
    explicit, _ = attn(q, kv, kv)
    attn.dropout = 0.0  # the SDPA path
    reference, _ = attn(q, kv, kv)
    assert torch.allclose(explicit, reference, atol=1e-5)
    attn.dropout = 0.1
    monkeypatch.setattr(model, "CPU_KEEP_MASK", False)  # torch's dropout inside SDPA
    assert not torch.allclose(attn(q, kv, kv)[0], reference, atol=1e-5)
