"""Saving figures and tables into ``figures/``, atomically, in every format the README uses.

Notebook ``NN_slug.ipynb`` saves ``figures/NN_slug*.{png,pdf}`` for figures and
``figures/NN_slug*.{csv,md}`` for tables (STYLE.md, rule 4). The pipeline that runs
the notebooks (``adtr_core.figures.pipeline``) records every such file in the manifest.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from adtr_core import paths
from adtr_core.io import atomic_path


def _out_dir(out_dir: str | Path | None) -> Path:
    out = Path(out_dir) if out_dir is not None else paths.figures_dir()
    out.mkdir(parents=True, exist_ok=True)
    return out


def save_figure(fig, name: str, out_dir: str | Path | None = None, dpi: int = 150) -> list[Path]:
    """Save a matplotlib figure as ``<name>.png`` and ``<name>.pdf``.

    Args:
        fig: a matplotlib Figure.
        name: file stem, e.g. ``"01_identical_mapping_curves"``.
        out_dir: target folder; defaults to :func:`adtr_core.paths.figures_dir`.
        dpi: resolution of the PNG.

    Returns:
        The two written paths.
    """
    out = _out_dir(out_dir)
    written = []
    for suffix in (".png", ".pdf"):
        target = out / f"{name}{suffix}"
        with atomic_path(target) as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight", metadata=_metadata(suffix))
        written.append(target)
    return written


def _metadata(suffix: str) -> dict:
    # Fixed metadata keeps regenerated files free of timestamps where the format allows.
    if suffix == ".pdf":
        return {"CreationDate": None, "ModDate": None}
    if suffix == ".png":
        return {"Software": None}
    return {}


def save_table(
    df: pd.DataFrame, name: str, out_dir: str | Path | None = None, floatfmt: str = ".4f"
) -> list[Path]:
    """Save a table as ``<name>.csv`` and ``<name>.md`` (a Markdown table for the docs).

    An absent value (NaN) stays NaN in the CSV and reads "–" in the Markdown table, with a
    footnote under the table saying so.
    """
    out = _out_dir(out_dir)
    csv_path, md_path = out / f"{name}.csv", out / f"{name}.md"
    with atomic_path(csv_path) as tmp:
        df.to_csv(tmp, index=True)
    with atomic_path(md_path) as tmp:
        tmp.write_text(markdown_table(df, floatfmt))
    return [csv_path, md_path]


ABSENT = "–"
ABSENT_NOTE = f"{ABSENT}: no value (NaN in the .csv beside this table)"


def markdown_table(df: pd.DataFrame, floatfmt: str = ".4f") -> str:
    """``df`` as a Markdown table, absent values as "–" and then a footnote (if any)."""
    absent = df.isna()
    if not absent.to_numpy().any():
        return df.to_markdown(floatfmt=floatfmt) + "\n"
    shown = df.astype(object).where(~absent, None)  # tabulate writes None as missingval
    return shown.to_markdown(floatfmt=floatfmt, missingval=ABSENT) + f"\n\n{ABSENT_NOTE}\n"
