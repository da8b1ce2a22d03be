"""Tests of the Sec. 3.2 "identical mapping" analysis (adtr_core.toy, adtr_core.figures.plots.toy)."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from adtr_core.toy.data import (  # noqa: E402
    ToyData,
    ToyDataConfig,
    make_toy_tokens,
    tokens_from_features,
)
from adtr_core.toy.measures import (  # noqa: E402
    METRICS,
    attention_identity_stats,
    attention_map,
    evaluate_toy,
    identity_distance,
    token_auroc,
)
from adtr_core.toy.models import MODEL_KINDS, build_toy_model  # noqa: E402
from adtr_core.toy.runs import run_toy, run_toy_grid, sweep_toy  # noqa: E402
from adtr_core.toy.tables import mean_std_table, mean_std_text_table  # noqa: E402

TINY = ToyDataConfig(K=16, C=8, rank=2, n_train=64, n_test=16, anomaly_fraction=0.25)


@pytest.fixture(scope="module")
def tiny() -> ToyData:
    return make_toy_tokens(TINY)


# --- data -------------------------------------------------------------------------------------


def test_make_toy_tokens_shapes_mask_and_determinism(tiny):
    assert tiny.x_train.shape == (64, 16, 8)
    assert tiny.x_test_pos.shape == tiny.x_test_neg.shape == (16, 16, 8)
    assert tiny.token_mask.shape == (16, 16) and tiny.token_mask.dtype == torch.bool
    assert (tiny.token_mask.sum(1) == 4).all()  # 25 % of 16 positions in every sample
    assert tiny.grid == (4, 4)
    again = make_toy_tokens(TINY)
    assert torch.equal(again.x_train, tiny.x_train)
    assert torch.equal(again.token_mask, tiny.token_mask)
    other = make_toy_tokens(TINY, seed=1)
    assert not torch.equal(other.x_train, tiny.x_train)


def test_anomalous_tokens_replace_only_masked_positions():
    cfg = ToyDataConfig(K=16, C=8, n_train=4, n_test=8, noise=0.0, rank=0)
    data = make_toy_tokens(cfg)
    # with rank 0 and no noise every normal sample equals mu: unmasked tokens of x- equal x+
    mu = data.x_train[0]
    normal = ~data.token_mask
    assert torch.allclose(data.x_test_neg[normal], mu.expand(8, 16, 8)[normal])
    assert not torch.isclose(
        data.x_test_neg[data.token_mask], mu.expand(8, 16, 8)[data.token_mask]
    ).all()


def test_aligned_tokens_depend_on_position_iid_do_not():
    aligned = make_toy_tokens(TINY, n_train=512)
    iid = make_toy_tokens(TINY, n_train=512, structure="iid")
    # spread of the per-position means: large when aligned, near zero when i.i.d.
    spread_aligned = aligned.x_train.mean(0).var(0).mean()
    spread_iid = iid.x_train.mean(0).var(0).mean()
    assert spread_aligned > 0.5
    assert spread_iid < 0.1 * spread_aligned


def test_channel_rank_limits_the_token_subspace():
    data = make_toy_tokens(TINY, channel_rank=3, noise=0.0)
    s = torch.linalg.svdvals(data.x_train.reshape(-1, 8))
    assert (s[3:] < 1e-4 * s[0]).all() and s[2] > 1e-2 * s[0]


@pytest.mark.parametrize(
    "bad",
    [
        {"K": 15},
        {"structure": "grid"},
        {"anomaly_fraction": 0.0},
        {"channel_rank": 9},
        {"anomaly_kind": "noise"},
    ],
)
def test_bad_config_raises(bad):
    with pytest.raises(ValueError):
        ToyDataConfig(**{"K": 16, "C": 8, **bad})


def test_tokens_from_features_masks_threshold_and_ignore():
    train = torch.randn(3, 5, 2, 2)
    test = torch.randn(3, 5, 2, 2)
    labels = torch.tensor([0, 1, 1])
    masks = torch.zeros(3, 1, 8, 8)
    masks[1, :, :4, :4] = 1  # cell (0, 0) fully covered
    masks[2, :, :4, 4:5] = 1  # cell (0, 1) covered to 1/4: ignored
    masks[2, :, 4:, 4:] = 1  # cell (1, 1) fully covered
    data = tokens_from_features(train, test, labels, masks)
    assert data.x_train.shape == (3, 4, 5) and data.x_test_pos.shape == (1, 4, 5)
    assert data.token_mask.tolist() == [[True, False, False, False], [False, False, False, True]]
    assert data.token_ignore.tolist() == [[False] * 4, [False, True, False, False]]
    flat = data.x_train.reshape(-1, 5)
    assert torch.allclose(flat.mean(0), torch.zeros(5), atol=1e-5)  # standardised
    with pytest.raises(ValueError, match="both normal"):
        tokens_from_features(train, test, torch.ones(3), masks)


# --- models -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_models_map_tokens_to_tokens(kind):
    model = build_toy_model(kind, 16, 8)
    x = torch.randn(3, 16, 8)
    out = model(x)
    assert out.shape == (3, 16, 8) and torch.isfinite(out).all()


def test_fc_and_conv1x1_are_the_same_layer():
    fc = build_toy_model("fc", 16, 8)
    conv = build_toy_model("conv1x1", 16, 8)
    with torch.no_grad():
        conv.conv.weight.copy_(fc.linear.weight[:, :, None, None])
        conv.conv.bias.copy_(fc.linear.bias)
    x = torch.randn(2, 16, 8)
    assert torch.allclose(fc(x), conv(x), atol=1e-6)


@pytest.mark.parametrize("kind", ["fc", "conv1x1", "conv3x3"])
def test_identity_init_is_the_shortcut(kind):
    model = build_toy_model(kind, 16, 8, init="identity")
    x = torch.randn(2, 16, 8)
    assert torch.allclose(model(x), x, atol=1e-6)
    assert identity_distance(model) == {"w_dist": 0.0, "b_norm": 0.0}
    zero = build_toy_model(kind, 16, 8, init="zero")
    assert identity_distance(zero)["w_dist"] == pytest.approx(1.0)


def test_attention_self_starts_as_plain_self_attention():
    model = build_toy_model("attention_self", 16, 8)
    x = torch.randn(2, 16, 8)
    expected = torch.softmax(x @ x.transpose(1, 2) / math.sqrt(8), dim=-1) @ x
    assert torch.allclose(model(x), expected, atol=1e-5)


def test_identity_like_query_gives_diagonal_mass_near_one():
    x = 3.0 * torch.eye(8)[None]  # (1, K=8, C=8): orthogonal tokens
    model = build_toy_model("attention_query", 8, 8)
    with torch.no_grad():
        model.query.copy_(5.0 * x[0])  # q_k aligned with token k: logits 45/sqrt(8) vs 0
    stats = attention_identity_stats(attention_map(model, x))
    assert stats["diag_mass"] > 0.99
    assert stats["attn_dist"] < 0.02
    assert torch.allclose(model(x), x, atol=1e-3)  # A ~ I: x_hat ~ x
    uniform = build_toy_model("attention_query", 8, 8, init="zero")
    stats0 = attention_identity_stats(attention_map(uniform, x))
    assert stats0["diag_mass"] == pytest.approx(1 / 8)


def test_errors_raise_for_wrong_model_type():
    with pytest.raises(TypeError):
        identity_distance(build_toy_model("attention_query", 16, 8))
    with pytest.raises(TypeError):
        attention_map(build_toy_model("fc", 16, 8), torch.randn(1, 16, 8))
    with pytest.raises(ValueError, match="unknown toy model"):
        build_toy_model("mlp", 16, 8)


# --- measurements -----------------------------------------------------------------------------


def test_token_auroc_hand_case():
    pos = torch.full((2, 4), 0.1)
    mask = torch.tensor([[True, False, False, False], [False, False, False, False]])
    neg = torch.where(mask, 1.0, 0.2)
    assert token_auroc(pos, neg, mask) == pytest.approx(1.0)
    assert token_auroc(pos, -neg, mask) == pytest.approx(0.0)
    # the anomalous token (0.3) beats the 8 normal-sample tokens (0.1), loses to 3 x 0.5 and
    # is tied with nothing: 8 / 15 of the normal tokens are below it
    neg2 = torch.where(mask, 0.3, 0.5)
    assert token_auroc(pos, neg2, mask) == pytest.approx(8 / 15)
    ignore = ~mask & torch.tensor([[True, True, True, True], [True, True, True, True]])
    assert token_auroc(pos, neg2, mask, ignore) == pytest.approx(1.0)


def test_evaluate_identity_fc_reconstructs_anomalies_too(tiny):
    model = build_toy_model("fc", tiny.K, tiny.C, init="identity")
    m = evaluate_toy(model, tiny)
    assert m["err_pos"] < 1e-10 and m["err_neg"] < 1e-10 and m["err_neg_rel"] < 1e-10
    assert m["w_dist"] == 0.0 and math.isnan(m["diag_mass"])
    assert set(m) == set(METRICS)


def test_fc_trained_on_full_rank_data_converges_towards_identity(tiny):
    run = run_toy("fc", tiny, epochs=30, lr=5e-2, eval_every=10, batch_size=32)
    w = run.curves[run.curves["metric"] == "w_dist"].sort_values("epoch")["value"].to_numpy()
    assert w[-1] < 0.5 * w[0] and w[-1] < 0.1
    assert (w[1:] <= w[:-1] + 1e-6).all()  # monotone along the recorded epochs
    assert sorted(run.curves["epoch"].unique()) == [0, 10, 20, 30]


def test_learned_query_separates_anomalies_on_aligned_data(tiny):
    run = run_toy("attention_query", tiny, epochs=30, lr=5e-2, eval_every=30, batch_size=16)
    final = run.curves[run.curves["epoch"] == 30].set_index("metric")["value"]
    assert final["diag_mass"] > 0.5
    assert final["err_neg"] > 5 * final["err_pos"]
    assert final["auroc"] > 0.9


def test_run_toy_grid_and_mean_std_table(tiny):
    res = run_toy_grid(["fc", "attention_query"], tiny, seeds=[0, 1], epochs=2, eval_every=1)
    assert set(res.models) == {"fc", "attention_query"}
    assert set(res.curves["seed"]) == {0, 1}
    table = mean_std_table(res.curves, metrics=("err_pos", "auroc"))
    assert list(table.index) == ["fc", "attention_query"]
    assert (table["n_seeds"] == 2).all()
    final = res.curves[(res.curves["epoch"] == 2) & (res.curves["metric"] == "auroc")]
    expected = final[final["kind"] == "fc"]["value"]
    assert table.loc["fc", "auroc_mean"] == pytest.approx(expected.mean())
    assert table.loc["fc", "auroc_std"] == pytest.approx(expected.std())
    formatted = mean_std_text_table(table)
    assert "±" in formatted.loc["fc", "auroc"]
    by_data = mean_std_text_table(mean_std_table(res.curves, by=["data", "kind"]))
    assert list(by_data.index) == ["toy-aligned / fc", "toy-aligned / attention_query"]


def test_mean_std_table_hand_case():
    curves = pd.DataFrame(
        {
            "kind": ["fc"] * 4,
            "seed": [0, 0, 1, 1],
            "epoch": [0, 5, 0, 5],
            "step": [0, 5, 0, 5],
            "metric": ["auroc"] * 4,
            "value": [0.5, 0.6, 0.5, 0.8],
        }
    )
    table = mean_std_table(curves, metrics=("auroc",))
    assert table.loc["fc", "auroc_mean"] == pytest.approx(0.7)
    assert table.loc["fc", "auroc_std"] == pytest.approx(math.sqrt(0.02))


def test_sweep_toy_labels_and_rejects_unknown_settings(tiny):
    final = sweep_toy(
        ["fc"], TINY, {"channel_rank": [2, 8], "weight_decay": [0.0]}, seeds=[0], epochs=1
    )
    assert set(final["channel_rank"]) == {2, 8} and set(final["epoch"]) == {1}
    with pytest.raises(ValueError, match="cannot sweep"):
        sweep_toy(["fc"], TINY, {"depth": [1]}, seeds=[0], epochs=1)


# --- plots ------------------------------------------------------------------------------------


def test_plots_build(tiny):
    from adtr_core.figures.plots import toy as ptoy

    res = run_toy_grid(MODEL_KINDS, tiny, seeds=[0], epochs=1, eval_every=1)
    figs = [
        ptoy.plot_curves(res.curves, title="t"),
        ptoy.plot_weights(res.models, tiny),
        ptoy.plot_error_maps({"tiny": (res.models, tiny)}, n_samples=1),
    ]
    final = sweep_toy(["fc"], TINY, {"weight_decay": [0.0, 0.1]}, seeds=[0], epochs=1)
    figs.append(ptoy.plot_sweep(final, "weight_decay", logx=True))
    for fig in figs:
        assert fig.axes
        plt.close(fig)
