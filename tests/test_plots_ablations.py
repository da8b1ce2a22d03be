"""Tests of the bar-chart and t-SNE figure builders (they return figures; NaN bars are gaps)."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from adtr_core.figures.plots.ablations import ablation_figure, grouped_bars, panels_figure  # noqa: E402
from adtr_core.figures.plots.embedding import tsne_figure  # noqa: E402


def _table():
    return pd.DataFrame(
        {"paper": [94.4, 97.2, np.nan], "ours": [90.0, 93.5, 88.1]},
        index=["CNN", "ADTR", "lite0 (random weights)"],
    )


def test_ablation_figure_draws_one_bar_per_value_and_marks_gaps():
    fig = ablation_figure(_table(), "pixel AUROC (%)", title="t", caption="c")
    ax = fig.axes[0]
    assert len(ax.patches) == 6
    texts = [t.get_text() for t in ax.texts]
    assert "n/a" in texts and "97.2" in texts and "88.1" in texts
    plt.close(fig)


def test_panels_figure_has_one_panel_per_table_and_reference_lines():
    tables = {"image AUROC": _table(), "pixel AUROC": _table() - 1}
    fig = panels_figure(tables, "AUROC (%)", references={"image AUROC": {"paper mean": 96.4}})
    assert len(fig.axes) == 2
    assert any(line.get_label() == "paper mean" for line in fig.axes[0].lines)
    plt.close(fig)


def test_grouped_bars_rejects_empty_table():
    fig, ax = plt.subplots()
    with pytest.raises(ValueError, match="empty"):
        grouped_bars(ax, pd.DataFrame())
    plt.close(fig)


def test_tsne_figure_returns_two_panels_and_checks_lengths():
    emb = np.random.default_rng(0).normal(size=(20, 2))
    groups = np.array(["normal"] * 15 + ["anomalous"] * 5)
    fig = tsne_figure(emb, groups, np.arange(20.0), title="t")
    assert len(fig.axes) == 3  # two panels and the colour bar
    plt.close(fig)
    with pytest.raises(ValueError, match="lengths differ"):
        tsne_figure(emb, groups[:10], np.arange(20.0))
