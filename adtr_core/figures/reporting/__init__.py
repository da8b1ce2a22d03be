"""Result tables from finished runs (:class:`adtr_core.runs.results.RunResult`), one module per table.

Example:
    >>> from adtr_core import reporting
    >>> reporting.PAPER_LABEL
    'paper (reported)'

See Also:
    :mod:`.paper` (the paper's numbers and settings), :mod:`.configs` (the runs a table
    needs), :mod:`.baseline` (the mean-image baseline), :mod:`.tables` (Tables 1-2),
    :mod:`.one_class` (Table 3), :mod:`.tsne` (Fig. 5's numbers).
"""

from adtr_core.figures.reporting.baseline import (
    mean_image_baseline_metrics,
)
from adtr_core.figures.reporting.configs import (
    PEER_SHARED_FIELDS,
    category_configs,
    image_label_configs,
    image_label_note,
    peer_configs,
    peer_methods,
    plus_configs,
    sweep_with_peers,
    table_configs,
)
from adtr_core.figures.reporting.one_class import (
    ONE_CLASS_AUROC,
    ONE_CLASS_PAPER_LABEL,
    one_class_panel,
    one_class_paper_auroc,
    one_class_table,
)
from adtr_core.figures.reporting.paper import (
    METRIC_LABELS,
    PAPER_ABLATION_PIXEL_AUROC,
    PAPER_LABEL,
    PAPER_NUMBERS,
    PAPER_PLUS_EPOCHS,
    PAPER_SETTINGS,
    paper_note,
    paper_numbers_for,
    settings_note,
)
from adtr_core.figures.reporting.tables import (
    add_paper_row,
    category_kinds,
    column_name,
    long_form,
    metric_panels,
    metrics_by_category,
    per_category_heatmap,
    per_category_metric_table,
    per_method_metric_table,
    run_summary,
)
from adtr_core.figures.reporting.tsne import (
    tsne_group_summary,
)

__all__ = [
    "METRIC_LABELS",
    "ONE_CLASS_AUROC",
    "ONE_CLASS_PAPER_LABEL",
    "PAPER_ABLATION_PIXEL_AUROC",
    "PAPER_LABEL",
    "PAPER_NUMBERS",
    "PAPER_PLUS_EPOCHS",
    "PAPER_SETTINGS",
    "PEER_SHARED_FIELDS",
    "add_paper_row",
    "category_configs",
    "category_kinds",
    "column_name",
    "image_label_configs",
    "image_label_note",
    "long_form",
    "mean_image_baseline_metrics",
    "metric_panels",
    "metrics_by_category",
    "one_class_panel",
    "one_class_paper_auroc",
    "one_class_table",
    "paper_note",
    "paper_numbers_for",
    "peer_configs",
    "peer_methods",
    "per_category_heatmap",
    "per_category_metric_table",
    "per_method_metric_table",
    "plus_configs",
    "run_summary",
    "settings_note",
    "sweep_with_peers",
    "table_configs",
    "tsne_group_summary",
]
