"""Figure 01's plots speak in words: no variable names on axes, titles or legends."""

from __future__ import annotations

import itertools

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402

from adtr_core.figures.plots import toy as ptoy  # noqa: E402

METRICS = ("w_dist", "diag_mass", "diag_mass_anom", "err_pos", "err_neg", "err_neg_rel", "auroc")


def _texts(fig) -> list[str]:
    texts = [t.get_text() for t in fig.texts]
    for ax in fig.axes:
        texts += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]
        legend = ax.get_legend()
        if legend is not None:
            texts += [t.get_text() for t in legend.get_texts()]
    for legend in fig.legends:
        texts += [t.get_text() for t in legend.get_texts()]
    return [t for t in texts if t]


def _no_identifiers(texts: list[str]) -> None:
    words = [w for t in texts if "$" not in t for w in t.replace("\n", " ").split()]
    named = [w for w in words if "_" in w]
    assert not named, f"variable names in the figure: {named}"


def test_curves_and_sweep_are_labelled_in_words_and_legibly():
    rows = [
        {"data": "toy-aligned", "kind": k, "epoch": e, "metric": m, "value": 0.5, "seed": s}
        for k, e, m, s in itertools.product(("fc", "attention_query"), (1, 2), METRICS, (0, 1))
    ]
    fig = ptoy.plot_curves(pd.DataFrame(rows), title="curves")
    texts = _texts(fig)
    _no_identifiers(texts)
    assert "training epoch" in texts
    assert min(t.get_fontsize() for ax in fig.axes for t in ax.get_xticklabels()) >= 12

    sweep = [
        {"kind": k, "metric": m, "value": 0.5, "seed": s, "channel_rank": r, "weight_decay": w}
        for k, m, s, r, w in itertools.product(
            ("fc", "attention_query"), METRICS, (0, 1), (4, 16), (0.0, 0.1)
        )
    ]
    fig = ptoy.plot_sweep(
        pd.DataFrame(sweep),
        "channel_rank",
        metrics=("auroc", "err_neg_rel", "err_pos", "w_dist"),
        col="weight_decay",
    )
    texts = _texts(fig)
    _no_identifiers(texts)
    assert "channel rank of the normal tokens" in texts and "weight decay 0.1" in texts
