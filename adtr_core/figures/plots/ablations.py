"""Bar charts comparing variants: the ablations (Table 4), ADTR+ and the one-class protocol.

One primitive, :func:`grouped_bars`, draws a table (rows = groups, columns = series) as
grouped bars with the values written on them; missing values (NaN, e.g. a variant the
paper did not report) leave a gap marked "n/a". :func:`ablation_figure` (notebook 05) and
:func:`panels_figure` (notebooks 06 and 07) build complete figures from it.
"""

from __future__ import annotations

import textwrap

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

PALETTE = ("#8c8c8c", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")


def grouped_bars(
    ax,
    table: pd.DataFrame,
    horizontal: bool = False,
    value_fmt: str = "{:.1f}",
    reference: dict[str, float] | None = None,
    limits: tuple[float, float] | None = None,
    colours: dict[str, str] | None = None,
    legend: bool = True,
):
    """Draw ``table`` as grouped bars on ``ax``.

    Args:
        ax: a matplotlib Axes.
        table: rows = groups (bar positions), columns = series (one bar per group each).
        horizontal: horizontal bars (groups on the y axis, first row on top).
        value_fmt: format of the value written at the end of each bar.
        reference: labelled reference lines, e.g. ``{"paper mean": 94.7}``.
        limits: value-axis limits; default: from just below the smallest value to the top.
        colours: series name -> colour; the others take :data:`PALETTE` in order.
        legend: draw a legend.

    Returns:
        ``ax``.
    """
    if table.empty:
        raise ValueError("grouped_bars: the table is empty")
    values = table.to_numpy(dtype=float)  # (G, S)
    n_groups, n_series = values.shape
    width = 0.8 / n_series
    pos = np.arange(n_groups, dtype=float)
    colours = dict(colours or {})
    free = iter(c for c in PALETTE if c not in colours.values())
    finite = values[np.isfinite(values)]
    ref_vals = list((reference or {}).values())
    if limits is None:
        lo = min([*finite.tolist(), *ref_vals]) if finite.size or ref_vals else 0.0
        hi = max([*finite.tolist(), *ref_vals]) if finite.size or ref_vals else 1.0
        span = max(hi - lo, 0.05 * max(abs(hi), 1.0))  # equal values: still a readable range
        limits = (max(0.0, lo - 0.25 * span), hi + 0.12 * span)
    for j, series in enumerate(table.columns):
        colour = colours.get(series) or next(free, None)
        offs = pos + (j - (n_series - 1) / 2) * width
        vals = values[:, j]
        bar_vals = np.where(np.isfinite(vals), vals, limits[0])
        if horizontal:
            bars = ax.barh(offs, bar_vals - limits[0], width, left=limits[0], color=colour)
        else:
            bars = ax.bar(offs, bar_vals - limits[0], width, bottom=limits[0], color=colour)
        bars.set_label(str(series))
        for bar, v in zip(bars, vals):
            text = value_fmt.format(v) if np.isfinite(v) else "n/a"
            if horizontal:
                ax.text(
                    bar.get_x() + bar.get_width() + 0.005 * (limits[1] - limits[0]),
                    bar.get_y() + bar.get_height() / 2,
                    text,
                    va="center",
                    ha="left",
                    fontsize=7,
                    color="dimgray" if not np.isfinite(v) else "black",
                )
            else:
                ax.text(
                    bar.get_x() + bar.get_width() / 2,
                    bar.get_y() + bar.get_height() + 0.005 * (limits[1] - limits[0]),
                    text,
                    va="bottom",
                    ha="center",
                    fontsize=7,
                    rotation=90 if n_series * n_groups > 12 else 0,
                    color="dimgray" if not np.isfinite(v) else "black",
                )
    line_styles = iter(("--", ":", "-.", (0, (5, 1))))
    for label, value in (reference or {}).items():
        style = next(line_styles, "--")
        if horizontal:
            ax.axvline(value, color="black", lw=1, ls=style, label=label)
        else:
            ax.axhline(value, color="black", lw=1, ls=style, label=label)
    labels = [str(i) for i in table.index]
    if horizontal:
        ax.set_yticks(pos, labels)
        ax.set_ylim(n_groups - 0.5, -0.5)
        ax.set_xlim(*limits)
        ax.grid(axis="x", alpha=0.3)
    else:
        crowded = sum(len(label) for label in labels) > 40
        ax.set_xticks(
            pos,
            labels,
            rotation=30 if crowded else 0,
            ha="right" if crowded else "center",
        )
        ax.set_xlim(-0.5, n_groups - 0.5)
        ax.set_ylim(*limits)
        ax.grid(axis="y", alpha=0.3)
    (ax.xaxis if horizontal else ax.yaxis).get_major_formatter().set_useOffset(False)
    ax.set_axisbelow(True)
    if legend:
        ax.legend(fontsize=8, loc="best")
    return ax


def ablation_figure(
    table: pd.DataFrame,
    metric_label: str,
    title: str | None = None,
    caption: str | None = None,
    colours: dict[str, str] | None = None,
    reference: dict[str, float] | None = None,
):
    """Horizontal grouped bars, one row per ablation variant (the paper's Table 4 as a chart).

    Args:
        table: rows = variants, columns = series, e.g. the paper's reported value and ours.
        metric_label: the value axis label, e.g. "pixel AUROC (%)".
        title: figure title.
        caption: a smaller line under the chart (data, profile shrinkage, skipped variants).
        colours: series name -> colour.
        reference: labelled vertical lines, e.g. ``{"chance level": 50.0}``.

    Returns:
        The matplotlib Figure.
    """
    height = 1.2 + 0.32 * len(table) * max(1, table.shape[1]) + (0.4 if caption else 0)
    fig, ax = plt.subplots(figsize=(9, max(3.0, height)))
    grouped_bars(ax, table, horizontal=True, colours=colours, reference=reference)
    ax.set_xlabel(metric_label)
    ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    add_caption(fig, caption)
    return fig


def add_caption(fig, caption: str | None, width: int = 120) -> None:
    """Write ``caption`` in small type under everything drawn, wrapped to ``width`` characters
    (for a 9-inch-wide figure; scaled with the figure width)."""
    if not caption:
        return
    chars = max(40, int(width * fig.get_figwidth() / 9))
    renderer = fig.canvas.get_renderer()
    # lowest drawn point in display units; below 0 when labels or legends hang under the figure
    lowest = min([ax.get_tightbbox(renderer).y0 for ax in fig.axes] + [0.0])
    y = lowest / fig.bbox.height - 0.02
    fig.text(0.5, y, textwrap.fill(caption, chars), ha="center", va="top", fontsize=8)


def panels_figure(
    tables: dict[str, pd.DataFrame],
    ylabel: str,
    title: str | None = None,
    caption: str | None = None,
    references: dict[str, dict[str, float]] | None = None,
    colours: dict[str, str] | None = None,
):
    """One vertical grouped-bar panel per table (e.g. one per metric), side by side.

    Args:
        tables: panel title -> table (rows = groups on the x axis, columns = series).
        ylabel: the value axis label of every panel.
        title: figure title.
        caption: a smaller line under the panels.
        references: panel title -> labelled reference lines for that panel.
        colours: series name -> colour, the same in every panel.

    Returns:
        The matplotlib Figure.
    """
    if not tables:
        raise ValueError("panels_figure: no tables")
    n = len(tables)
    widest = max(len(t) * max(1, t.shape[1]) for t in tables.values())
    fig, axes = plt.subplots(1, n, figsize=(max(4.5, 0.45 * widest + 2) * n, 4.2), squeeze=False)
    for i, (ax, (name, table)) in enumerate(zip(axes[0], tables.items())):
        grouped_bars(
            ax,
            table,
            reference=(references or {}).get(name),
            colours=colours,
            legend=i == n - 1 or bool((references or {}).get(name)),
        )
        ax.set_title(name)
        ax.set_ylabel(ylabel)
    axes[0][-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    add_caption(fig, caption)
    return fig
