"""Tables as saved by the notebooks: NaN in the CSV, "–" and a footnote in the Markdown."""

from __future__ import annotations

import numpy as np
import pandas as pd

from adtr_core.figures.outputs import ABSENT_NOTE, markdown_table, save_table


def test_absent_values_read_as_a_dash_with_a_footnote_and_stay_nan_in_the_csv(tmp_path):
    df = pd.DataFrame(
        {"image AUROC": [99.6, 96.4], "AU-PRO": [94.2, np.nan]}, index=["bottle", "paper"]
    )
    csv, md = save_table(df, "t", tmp_path, floatfmt=".1f")
    text = md.read_text()
    assert "nan" not in text.replace(ABSENT_NOTE, "")
    assert "| paper  |          96.4 |      –   |" in text
    assert text.rstrip().endswith(ABSENT_NOTE)
    assert np.isnan(pd.read_csv(csv, index_col=0).loc["paper", "AU-PRO"])
    assert "paper,96.4,\n" in csv.read_text()
    assert "94.2" in text and "99.6" in text


def test_a_table_without_absent_values_has_no_footnote():
    df = pd.DataFrame({"a": [1.0, 2.0], "n": [3, 4]})
    assert markdown_table(df, ".2f") == df.to_markdown(floatfmt=".2f") + "\n"
    assert ABSENT_NOTE not in markdown_table(df)
