"""Tests of adtr_core.figures.plots.maps (score-map figures, example choice) and plots.training."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from helpers import map_scale  # noqa: E402
from PIL import Image  # noqa: E402

from adtr_core.data.sources import open_split  # noqa: E402
from adtr_core.figures.plots import maps  # noqa: E402
from adtr_core.figures.plots.training import plot_loss_curves  # noqa: E402
from adtr_core.runs.config import ExperimentConfig
from adtr_core.runs.results import RunResult  # noqa: E402


def _scores() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "path": [f"p{i}.png" for i in range(7)],
            "defect": ["good", "good", "hole", "hole", "hole", "scratch", "good"],
            "label": [0, 0, 1, 1, 1, 1, 0],
            "score": [0.1, 0.5, 0.9, 0.3, 0.6, 0.2, 0.05],
        }
    )


def test_pick_per_defect_median_max_min():
    assert maps.pick_per_defect(_scores()) == [(0, "good"), (4, "hole"), (5, "scratch")]
    assert maps.pick_per_defect(_scores(), "max", include_good=False) == [
        (2, "hole"),
        (5, "scratch"),
    ]
    assert maps.pick_per_defect(_scores(), "min")[0] == (6, "good")
    with pytest.raises(ValueError, match="unknown pick"):
        maps.pick_per_defect(_scores(), "best")


def test_pick_best_worst():
    picks = maps.pick_best_worst(_scores())
    assert [p for p, _ in picks] == [2, 5, 1, 6]
    only_normal = _scores()[_scores()["label"] == 0]
    assert len(maps.pick_best_worst(only_normal)) == 2


def test_score_map_grid_rows_and_per_row_scale():
    rows = [
        {
            "image": torch.rand(3, 16, 16),
            "mask": torch.zeros(16, 16),
            "map": np.ones((16, 16)),
            "label": "a",
            "vmax": 4.0,
            "note": "score 1",
        },
        {"image": torch.rand(3, 16, 16), "mask": None, "map": np.ones((16, 16)), "label": "b"},
    ]
    fig = maps.score_map_grid(rows, title="t", vmax=2.0)
    overlays = [ax for ax in fig.axes if ax.images and ax.images[-1].get_cmap().name == "jet"]
    assert len(overlays) == 2
    assert overlays[0].images[-1].get_clim() == (0, 4.0)  # the row's own scale
    assert overlays[1].images[-1].get_clim() == (0, 2.0)  # the grid's
    plt.close(fig)
    with pytest.raises(ValueError, match="at least one row"):
        maps.score_map_grid([])


def test_save_overlay_writes_png(tmp_path):
    out = maps.save_overlay(torch.rand(3, 8, 8), torch.rand(8, 8), tmp_path / "o.png", "s")
    assert out.is_file() and out.stat().st_size > 0


def _tiny_run(tmp_path: Path) -> RunResult:
    cat = tmp_path / "data" / "toy"
    for split, defect, n in (("train", "good", 2), ("test", "good", 1), ("test", "dot", 2)):
        for i in range(n):
            folder = cat / split / defect
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((16, 16, 3), 60 * i, np.uint8)).save(folder / f"{i:03d}.png")
            if defect != "good":
                gt = cat / "ground_truth" / defect
                gt.mkdir(parents=True, exist_ok=True)
                mask = np.zeros((16, 16), np.uint8)
                mask[4:8, 4:8] = 255
                Image.fromarray(mask).save(gt / f"{i:03d}_mask.png")
    cfg = ExperimentConfig(
        data="mvtec", data_root=str(tmp_path / "data"), category="toy", image_size=16
    )
    test = open_split(cfg, "test")
    items = [test[i] for i in range(len(test))]
    scores = pd.DataFrame(
        {
            "path": [it["path"] for it in items],
            "defect": [it["defect"] for it in items],
            "label": [it["label"] for it in items],
            "score": [0.7, 0.8, 0.1],
        }
    )
    score_maps = np.stack([np.full((16, 16), v, np.float16) for v in (1.0, 2.0, 3.0)])
    return RunResult(tmp_path / "run", cfg, {}, pd.DataFrame(), scores, score_maps)


def test_example_rows_read_images_masks_and_maps(tmp_path):
    run = _tiny_run(tmp_path)
    anomalous = int(np.flatnonzero(run.scores["label"] == 1)[0])
    rows = maps.example_rows(run, [(anomalous, "first")], prefix="toy: ", scale=(1.0, 5.0))
    assert rows[0]["label"] == "toy: first" and (rows[0]["vmin"], rows[0]["vmax"]) == (1.0, 5.0)
    assert (rows[0]["category"], rows[0]["defect"]) == ("toy", "dot")
    assert rows[0]["image"].shape == (3, 16, 16)
    assert rows[0]["mask"].sum() == 16  # the 4x4 square of the ground truth
    assert rows[0]["map"].dtype == np.float32
    assert rows[0]["map"][0, 0] == float(run.score_maps[anomalous][0, 0])
    assert rows[0]["note"] == f"image score {run.scores['score'][anomalous]:.3g}"

    run.scores.loc[anomalous, "path"] = "elsewhere/zzz.png"
    with pytest.raises(ValueError, match="data changed"):
        maps.example_rows(run, [(anomalous, "first")])
    with pytest.raises(ValueError, match="no score maps"):
        maps.example_rows(RunResult(run.out_dir, run.config, {}, None, run.scores), [(0, "x")])


def test_map_scale_is_high_quantile(tmp_path):
    run = _tiny_run(tmp_path)
    assert map_scale(run, quantile=1.0) == pytest.approx(3.0)


def test_plot_loss_curves():
    hist = pd.DataFrame({"epoch": [1, 2, 3], "loss": [1.0, 0.5, 0.05], "lr": [1e-4] * 3})
    fig = plot_loss_curves({"ADTR": hist, "ADTR+": hist.assign(loss=[0.3, 0.2, 0.1])}, title="t")
    ax = fig.axes[0]
    assert len(ax.lines) == 2 and ax.get_yscale() == "log"
    assert len(fig.axes) == 2  # loss + lr panels
    plt.close(fig)
    flat = plot_loss_curves({"ADTR": hist.assign(loss=[1.0, 0.9, 0.8])})
    assert flat.axes[0].get_yscale() == "linear"  # less than a factor 10: linear axis
    plt.close(flat)
    with pytest.raises(ValueError, match="lacks column"):
        plot_loss_curves({"x": pd.DataFrame({"epoch": [1]})})
    with pytest.raises(ValueError, match="empty"):
        plot_loss_curves({"x": pd.DataFrame({"epoch": [], "loss": []})})


def test_map_range_uses_normal_maps_for_the_floor(tmp_path):
    run = _tiny_run(tmp_path)
    normal_value = float(run.score_maps[int(np.flatnonzero(run.scores["label"] == 0)[0])][0, 0])
    vmin, vmax = maps.map_range(run, low=0.5, high=1.0)
    assert vmin == pytest.approx(normal_value)
    assert vmax == pytest.approx(3.0)


def test_per_defect_rows_and_layouts(tmp_path):
    run = _tiny_run(tmp_path)
    rows = maps.per_defect_rows([run], pick="max")
    assert [r["defect"] for r in rows] == ["good", "dot"]
    assert rows[1]["note"] == "image score 0.8"  # the highest-scoring "dot" image
    fig = maps.score_map_columns(rows, title="t")
    assert len(fig.axes) == 6  # 3 rows x 2 examples
    assert fig.axes[0].get_title() == "good"
    plt.close(fig)
    fig = maps.overview_grid(rows + [{**rows[0], "category": "other"}], title="t")
    assert len(fig.axes) == 4  # 2 categories x 2 columns (one left empty)
    assert not fig.axes[3].axison
    plt.close(fig)


def test_wrap_title_keeps_lines_within_the_figure_width():
    title = "first line\n" + " ".join(["word"] * 60)
    wrapped = maps.wrap_title(title, fig_width_in=4.0)
    lines = wrapped.split("\n")
    assert lines[0] == "first line" and len(lines) > 3
    assert max(len(line) for line in lines) <= 40
