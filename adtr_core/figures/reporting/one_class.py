"""The one-class protocol's table (the paper's Table 3): one row per normal class."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from adtr_core.figures.reporting.paper import PAPER_NUMBERS
from adtr_core.runs.results import RunResult

ONE_CLASS_AUROC = "image AUROC (%)"
"""Column of :func:`one_class_table` holding the image AUROC."""


ONE_CLASS_PAPER_LABEL = "paper ADTR (reported)"
"""Index label of :func:`one_class_table`'s row of the paper's mean (CIFAR-10 only)."""


def one_class_paper_auroc(data: str) -> float | None:
    """The paper's ADTR mean image AUROC (percent) of the one-class protocol, or None.

    The paper reports the protocol on CIFAR-10 only; on other data it has no number.
    """
    return PAPER_NUMBERS["cifar10"]["ADTR"]["image_auroc"] if data == "cifar10" else None


def one_class_table(results: Sequence[RunResult], data: str) -> pd.DataFrame:
    """Table 3: one row per normal class, then the mean and (on CIFAR-10) the paper's mean.

    Args:
        results: one finished run per normal class, in table order.
        data: the data source (the paper's row is added for ``"cifar10"`` only).

    Returns:
        DataFrame of floats indexed by ``"normal class"``: :data:`ONE_CLASS_AUROC`
        (percent), ``train images``, ``test images``, ``wall s`` (NaN when not recorded);
        the row ``mean`` (the mean of every column) and, when the paper has a number, the
        row :data:`ONE_CLASS_PAPER_LABEL` (its image AUROC, NaN elsewhere).
    """
    table = pd.DataFrame(
        {
            "normal class": [str(r.metrics["category"]) for r in results],
            ONE_CLASS_AUROC: [100 * r.metrics["image_auroc"] for r in results],
            "train images": [r.metrics["num_train"] for r in results],
            "test images": [r.metrics["num_test"] for r in results],
            "wall s": [r.metrics.get("wall_s", float("nan")) for r in results],
        }
    ).set_index("normal class")
    table = table.astype(float)  # the mean row is fractional in every column
    table.loc["mean"] = table.mean(axis=0)
    paper = one_class_paper_auroc(data)
    if paper is not None:
        table.loc[ONE_CLASS_PAPER_LABEL] = [paper] + [float("nan")] * 3
    return table


def one_class_panel(table: pd.DataFrame, label: str) -> tuple[pd.DataFrame, dict[str, float]]:
    """The bars and reference lines of the one-class figure, from :func:`one_class_table`.

    Args:
        table: a :func:`one_class_table`.
        label: the name of the bars (the column of the returned frame).

    Returns:
        ``(per_class, references)``: the image AUROC of each normal class (the table without
        its mean and paper rows) in one column ``label``, and ``{"our mean <m>": m}`` plus,
        when the table has the paper's row, ``{"paper ADTR mean on CIFAR-10 (<p>)": p}``.
    """
    classes = [c for c in table.index if c not in ("mean", ONE_CLASS_PAPER_LABEL)]
    per_class = table.loc[classes, [ONE_CLASS_AUROC]]
    per_class.columns = [label]
    mean = table.loc["mean", ONE_CLASS_AUROC]
    references = {f"our mean {mean:.1f}": mean}
    if ONE_CLASS_PAPER_LABEL in table.index:
        paper = table.loc[ONE_CLASS_PAPER_LABEL, ONE_CLASS_AUROC]
        references[f"paper ADTR mean on CIFAR-10 ({paper:.1f})"] = paper
    return per_class, references
