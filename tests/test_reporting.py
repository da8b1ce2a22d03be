"""Tests of adtr_core.figures.reporting: per-category tables, the paper row, ADTR+ configs, baseline."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from adtr_core.figures import reporting
from adtr_core.runs.config import ExperimentConfig
from adtr_core.runs.results import RunResult


def _png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def write_tiny_mvtec(root: Path, size: int = 32) -> Path:
    """A one-category MVTec-layout tree: grey normal images, a white square as the defect."""
    rng = np.random.default_rng(0)

    def normal() -> np.ndarray:
        return (120 + rng.integers(-3, 4, (size, size, 3))).astype(np.uint8)

    cat = root / "toy"
    for i in range(4):
        _png(cat / "train" / "good" / f"{i:03d}.png", normal())
    for i in range(2):
        _png(cat / "test" / "good" / f"{i:03d}.png", normal())
    for i in range(2):
        img, mask = normal(), np.zeros((size, size), np.uint8)
        y = 4 + 10 * i
        img[y : y + 8, 6:14] = 255
        mask[y : y + 8, 6:14] = 255
        _png(cat / "test" / "square" / f"{i:03d}.png", img)
        _png(cat / "ground_truth" / "square" / f"{i:03d}_mask.png", mask)
    return root


def _metrics(image: float, pixel: float, pro: float = math.nan) -> dict:
    return {"image_auroc": image, "pixel_auroc": pixel, "pixel_aupro": pro}


def test_metric_table_one_metric_percent_and_mean_row():
    table = reporting.per_category_metric_table(
        {
            "ADTR": {"a": _metrics(0.9, 0.8), "b": _metrics(0.7, 0.6)},
            "trivial": {"a": _metrics(0.5, 0.5)},
        },
        metrics=("image_auroc",),
    )
    assert list(table.columns) == ["ADTR", "trivial"]
    assert list(table.index) == ["a", "b", "mean"]
    assert table.loc["a", "ADTR"] == pytest.approx(90.0)
    assert table.loc["mean", "ADTR"] == pytest.approx(80.0)
    assert math.isnan(table.loc["b", "trivial"])
    assert table.loc["mean", "trivial"] == pytest.approx(50.0)  # NaN-aware mean


def test_metric_table_several_metrics_names_columns_by_metric():
    table = reporting.per_category_metric_table(
        {"ADTR": {"a": _metrics(0.9, 0.8, 0.7)}, "ADTR+": {"a": _metrics(1.0, 0.9, 0.8)}},
        metrics=("pixel_auroc", "pixel_aupro"),
        percent=False,
    )
    assert list(table.columns) == [
        "ADTR pixel AUROC",
        "ADTR+ pixel AUROC",
        "ADTR AU-PRO",
        "ADTR+ AU-PRO",
    ]
    assert table.loc["a", "ADTR+ AU-PRO"] == pytest.approx(0.8)


def test_metric_table_rejects_reserved_category():
    with pytest.raises(ValueError, match="reserved"):
        reporting.per_category_metric_table({"ADTR": {"mean": _metrics(1, 1)}})


def test_paper_row_only_for_mvtec():
    methods = {"trivial": {"a": _metrics(0.5, 0.5)}, "ADTR": {"a": _metrics(0.9, 0.9)}}
    table = reporting.per_category_metric_table(methods, metrics=("image_auroc", "pixel_auroc"))
    assert reporting.add_paper_row(table, "demo", ("image_auroc", "pixel_auroc")) is table
    with_paper = reporting.add_paper_row(table, "mvtec", ("image_auroc", "pixel_auroc"))
    row = with_paper.loc[reporting.PAPER_LABEL]
    assert row["ADTR image AUROC"] == pytest.approx(96.4)
    assert row["ADTR pixel AUROC"] == pytest.approx(97.2)
    assert math.isnan(row["trivial image AUROC"])  # the paper has no trivial baseline
    assert "no numbers" in reporting.paper_note("demo")
    assert "96.4" in reporting.paper_note("mvtec")


def test_paper_numbers_transcribed_from_method_section():
    mv = reporting.PAPER_NUMBERS["mvtec"]
    assert (mv["ADTR"]["image_auroc"], mv["ADTR"]["pixel_auroc"]) == (96.4, 97.2)
    assert (mv["ADTR+"]["image_auroc"], mv["ADTR+"]["pixel_auroc"]) == (96.9, 97.5)
    assert reporting.PAPER_NUMBERS["cifar10"]["ADTR+"]["image_auroc"] == 96.1


def test_category_and_plus_configs(tmp_path):
    configs = reporting.category_configs(["a", "b"], data="demo", epochs=3, hidden_dim=32)
    assert [c.category for c in configs] == ["a", "b"]
    assert configs[0].epochs == 3 and configs[0].loss == "norm"
    # Equal settings give equal run names: notebooks share results folders.
    again = reporting.category_configs(["a"], data="demo", epochs=3, hidden_dim=32)
    assert again[0].run_name() == configs[0].run_name()
    with pytest.raises(ValueError, match="unknown experiment parameter"):
        reporting.category_configs(["a"], epochz=3)
    with pytest.raises(ValueError, match="no categories"):
        reporting.category_configs([])

    base = RunResult(tmp_path / "run_a", configs[0], {}, pd.DataFrame(), pd.DataFrame())
    (plus,) = reporting.plus_configs([base], epochs=2)
    assert (plus.loss, plus.anomalies, plus.epochs) == ("px", "confetti", 2)
    assert plus.init_from == str(tmp_path / "run_a")
    assert plus.hidden_dim == 32 and plus.category == "a"
    with pytest.raises(ValueError, match="normal-only"):
        reporting.plus_configs([RunResult(tmp_path, plus, {}, pd.DataFrame(), pd.DataFrame())])


def test_mean_image_baseline_finds_bright_square(tmp_path):
    root = write_tiny_mvtec(tmp_path / "data")
    cfg = ExperimentConfig(
        data="mvtec", data_root=str(root), category="toy", image_size=32, pool_size=4
    )
    metrics = reporting.mean_image_baseline_metrics(cfg)
    assert metrics["category"] == "toy"
    assert metrics["image_auroc"] == pytest.approx(1.0)
    assert metrics["pixel_auroc"] > 0.95


def test_long_form_and_heatmap_figure():
    table = reporting.per_category_metric_table(
        {"ADTR": {"a": _metrics(0.9, 0.8)}, "B": {"a": _metrics(1, 1)}}
    )
    long = reporting.long_form(table)
    assert set(long.columns) == {"category", "column", "value"}
    assert len(long) == 4  # (a, mean) x (ADTR, B)
    fig = reporting.per_category_heatmap(table, title="t")
    assert fig.axes[0].get_title() == "t"
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_run_summary_row():
    cfg = ExperimentConfig(category="a", epochs=3)
    run = RunResult(
        Path("x"),
        cfg,
        {**_metrics(0.9, 0.8, 0.7), "category": "a", "num_train": 5, "wall_s": 1.5},
        pd.DataFrame(),
        pd.DataFrame(),
    )
    row = reporting.run_summary(run)
    assert row.loc["a", "image AUROC"] == pytest.approx(90.0)
    assert row.loc["a", "epochs"] == 3 and row.loc["a", "wall s"] == 1.5


def test_settings_note_names_every_shrinkage():
    paper_cfg = ExperimentConfig(**{**reporting.PAPER_SETTINGS, "category": "a"})
    assert reporting.settings_note(paper_cfg) == "paper settings"
    small = ExperimentConfig(category="a", image_size=128, epochs=20, hidden_dim=128)
    note = reporting.settings_note(small)
    assert "image size 128 (paper 256)" in note and "epochs 20 (paper 500)" in note
    assert "width 128 (paper 256)" in note and "backbone tf_efficientnet_lite0" in note
    plus = ExperimentConfig(**{**reporting.PAPER_SETTINGS, "epochs": 300, "loss": "px"})
    assert reporting.settings_note(plus, paper_epochs=reporting.PAPER_PLUS_EPOCHS) == (
        "paper settings"
    )


def test_method_table_rows_in_percent():
    table = reporting.per_method_metric_table(
        {"ADTR": _metrics(0.9, 0.8, 0.7), "trivial": _metrics(0.5, 1)}
    )
    assert list(table.columns) == ["image AUROC", "pixel AUROC", "AU-PRO"]
    assert table.loc["ADTR", "AU-PRO"] == pytest.approx(70.0)
    assert table.loc["trivial", "pixel AUROC"] == pytest.approx(100.0)


def test_image_label_configs_and_their_note(tmp_path):
    (base,) = reporting.category_configs(["a"], data="demo", epochs=3)
    run = RunResult(tmp_path / "run_a", base, {}, pd.DataFrame(), pd.DataFrame())
    plus = reporting.plus_configs([run], epochs=2)
    (img,) = reporting.image_label_configs(plus)
    # what notebook 06 built by hand
    expected = ExperimentConfig.from_dict({**plus[0].to_dict(), "loss": "img", "anomalies": None})
    assert img == expected and img.loss == "img" and img.init_from == plus[0].init_from
    assert reporting.image_label_configs([]) == []
    assert reporting.image_label_note([]) == "L_img not run"
    assert reporting.image_label_note([img]).startswith("L_img outliers: the confetti images")
    cifar = dataclasses.replace(img, anomalies="cifar100")
    assert reporting.image_label_note([cifar]).startswith("L_img outliers: CIFAR-100 images")


def test_metric_panels_equal_the_columns_of_the_several_metric_table():
    methods = {
        "ADTR": {"a": _metrics(0.9, 0.8), "b": _metrics(0.7, 0.6)},
        "ADTR+": {"a": _metrics(1.0, 0.9)},
        "ADTR+ (image labels)": {"a": _metrics(0.6, 0.5), "b": _metrics(0.4, 0.3)},
    }
    metrics = ("image_auroc", "pixel_auroc")
    panels, references = reporting.metric_panels(methods, metrics, "mvtec")
    # what notebook 06 computed: the several-metric table split by the column names' ends
    per_category = reporting.per_category_metric_table(methods, metrics=metrics)
    for metric, name in (("image_auroc", "image AUROC"), ("pixel_auroc", "pixel AUROC")):
        cols = [c for c in per_category.columns if c.endswith(name)]
        old = per_category[cols].rename(columns={c: c[: -len(name) - 1] for c in cols})
        pd.testing.assert_frame_equal(panels[name], old)
        assert references[name] == {
            f"paper {m} mean (mvtec)": v[metric]
            for m, v in reporting.PAPER_NUMBERS["mvtec"].items()
            if m.startswith("ADTR") and metric in v
        }
    assert list(panels) == ["image AUROC", "pixel AUROC"]
    assert references["pixel AUROC"] == {
        "paper ADTR mean (mvtec)": 97.2,
        "paper ADTR+ mean (mvtec)": 97.5,
    }
    _, none = reporting.metric_panels(methods, metrics, "demo")
    assert none == {"image AUROC": {}, "pixel AUROC": {}}


def _one_class_runs(tmp_path) -> list[RunResult]:
    runs = []
    for i, (auroc, wall) in enumerate(((0.9, 2.0), (0.6, None))):
        metrics = {"category": str(i), "image_auroc": auroc, "num_train": 10 + i, "num_test": 40}
        if wall is not None:
            metrics["wall_s"] = wall
        cfg = ExperimentConfig(data="digits", category=str(i))
        runs.append(RunResult(tmp_path / str(i), cfg, metrics, pd.DataFrame(), pd.DataFrame()))
    return runs


def _old_one_class(results, source):
    """Notebook 07's table, panel and reference lines as the notebook computed them."""
    table = pd.DataFrame(
        {
            "normal class": [str(r.metrics["category"]) for r in results],
            "image AUROC (%)": [100 * r.metrics["image_auroc"] for r in results],
            "train images": [r.metrics["num_train"] for r in results],
            "test images": [r.metrics["num_test"] for r in results],
            "wall s": [r.metrics.get("wall_s", float("nan")) for r in results],
        }
    ).set_index("normal class")
    table = table.astype(float)
    table.loc["mean"] = table.mean(axis=0)
    paper = (reporting.paper_numbers_for(source) or {}) if source == "cifar10" else {}
    if paper:
        table.loc["paper ADTR (reported)"] = [paper["ADTR"]["image_auroc"]] + [float("nan")] * 3
    ours = f"ours ({source})"
    per_class = table.loc[[str(r.metrics["category"]) for r in results], ["image AUROC (%)"]]
    per_class.columns = [ours]
    mean = table.loc["mean", "image AUROC (%)"]
    reference = {f"our mean {mean:.1f}": mean}
    if paper:
        value = paper["ADTR"]["image_auroc"]
        reference[f"paper ADTR mean on CIFAR-10 ({value:.1f})"] = value
    return table, per_class, reference


@pytest.mark.parametrize("source", ["digits", "cifar10"])
def test_one_class_table_and_panel_equal_the_notebooks_former_code(tmp_path, source):
    results = _one_class_runs(tmp_path)
    table = reporting.one_class_table(results, source)
    per_class, reference = reporting.one_class_panel(table, f"ours ({source})")
    old_table, old_per_class, old_reference = _old_one_class(results, source)
    pd.testing.assert_frame_equal(table, old_table)
    pd.testing.assert_frame_equal(per_class, old_per_class)
    assert reference == old_reference
    assert table.loc["mean", reporting.ONE_CLASS_AUROC] == pytest.approx(75.0)
    assert table.loc["mean", "wall s"] == pytest.approx(2.0)  # NaN-aware
    assert list(per_class.index) == ["0", "1"]
    has_paper = reporting.ONE_CLASS_PAPER_LABEL in table.index
    assert has_paper == (source == "cifar10")
    assert (reporting.one_class_paper_auroc(source) is not None) == has_paper
    if has_paper:
        assert table.loc[reporting.ONE_CLASS_PAPER_LABEL, reporting.ONE_CLASS_AUROC] == 94.7
        assert math.isnan(table.loc[reporting.ONE_CLASS_PAPER_LABEL, "train images"])


def test_tsne_group_summary_equals_the_notebooks_former_code():
    from adtr_core.figures.embedding import PositionSet, group_agreement

    rng = np.random.default_rng(0)
    groups = np.array(["normal"] * 12 + ["anomalous"] * 8)
    positions = PositionSet(
        vectors=rng.normal(size=(20, 4)).astype(np.float32),
        groups=groups,
        scores=rng.random(20),
        image_index=np.arange(20),
    )
    embedding = rng.normal(size=(20, 2)) + 3.0 * (groups == "anomalous")[:, None]
    summary = reporting.tsne_group_summary(embedding, positions, k=10)
    # what notebook 08 computed
    names = list(positions.counts())
    old = pd.DataFrame(
        {
            "positions": [positions.counts()[g] for g in names],
            "mean score": [float(positions.scores[positions.groups == g].mean()) for g in names],
            "median score": [
                float(np.median(positions.scores[positions.groups == g])) for g in names
            ],
            "share of 10 nearest neighbours in own group": [
                group_agreement(embedding, positions.groups, k=10)[g] for g in names
            ],
        },
        index=pd.Index(names, name="positions of"),
    )
    pd.testing.assert_frame_equal(summary, old)
    assert list(summary.index) == ["normal", "anomalous"]
    assert summary.loc["anomalous", "positions"] == 8
    assert summary.loc["normal", "mean score"] == pytest.approx(positions.scores[:12].mean())


def test_row_labels_of_mixed_data_have_one_pair_of_parentheses():
    """Notebook 03's rows: "bottle (real, MVTec AD)", never "bottle (real (MVTec AD))"."""
    from adtr_core.data.sources import data_kind
    from adtr_core.figures.reporting import per_category_metric_table

    kinds = {"bottle": data_kind("mvtec"), "grass": data_kind("demo")}
    methods = {"ADTR": {"bottle": {"image_auroc": 0.99}, "grass": {"image_auroc": 0.7}}}
    labels = list(per_category_metric_table(methods, kinds=kinds).index)
    assert (
        "bottle (real, MVTec AD)" in labels and "mean (synthetic defects, demo texture)" in labels
    )
    assert all(label.count("(") <= 1 for label in labels), labels
