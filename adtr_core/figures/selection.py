"""Notebook 10's tables: a choice made on validation data, then the test scored once.

:mod:`adtr_core.runs.selection` trains the candidates validation only and scores the reported
ones on the test set afterwards; this module builds the study sets' configs and turns its
two steps into the tables that notebook 10 saves (``10_selection_validation``, with no test
column, and ``10_selection_final``).

Example:
    >>> from adtr_core.runs.profiles import profile_run
    >>> sets = selection_sets(profile_run("quick", "train"), ["dev/screw"], ["confetti", "small"])
    >>> sets[0].category, sets[0].val_kinds
    ('screw', ('confetti', 'small'))

See Also:
    :mod:`adtr_core.figures.study` (notebook 09, the same sets at the shipped setting).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from adtr_core.figures.study import study_configs
from adtr_core.runs.config import ExperimentConfig
from adtr_core.runs.selection import Selection


def selection_sets(
    run: Mapping[str, Any], study_sets: Sequence[str], val_kinds: Sequence[str]
) -> list[ExperimentConfig]:
    """One ADTR config per ``source/category`` study set (:func:`study_configs`, the run
    block's seed): the run settings, validated on ``val_kinds``."""
    values = {**run, "val_kinds": list(val_kinds)}
    seed = ExperimentConfig.from_dict(values).seed
    return study_configs(values, study_sets, ["adtr"], [], [seed], 0)


def _changes(changes: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in changes.items()) or "(the shipped setting)"


def validation_table(
    selection: Selection, candidates: Mapping[str, Mapping[str, Any]]
) -> pd.DataFrame:
    """Per candidate, in percent: what it changes, its validation AUROC (mean over sets and
    seeds, and per kind), the pairs against the baseline that rose and fell, the choice.

    No column holds a test number: the table is made before any test image is scored.
    """
    table = selection.table
    kinds = [c for c in table.columns if c.startswith("val_") and c != "val_auroc"]
    per_kind = table.groupby("candidate", sort=False)[kinds].mean() * 100
    summary = selection.summary
    out = pd.DataFrame(
        {
            "changes": [_changes(candidates[name]) for name in summary.index],
            "validation AUROC": (summary["val_auroc"] * 100).round(1).to_numpy(),
        },
        index=summary.index,
    )
    for kind in kinds:
        out[kind.removeprefix("val_")] = per_kind[kind].round(1)
    out["up / down vs baseline"] = [f"{u} / {d}" for u, d in zip(summary["up"], summary["down"])]
    out["chosen"] = ["yes" if name == selection.chosen else "" for name in summary.index]
    return out


def final_table(final: pd.DataFrame) -> pd.DataFrame:
    """The reported candidates' test image AUROC (percent), one column per seed, with the
    validation AUROC beside it."""
    rows = final.assign(image_auroc=final["image_auroc"] * 100, val_auroc=final["val_auroc"] * 100)
    out = rows.pivot_table(
        index=["candidate", "set"], columns="seed", values="image_auroc", sort=False
    )
    out.columns = [f"test image AUROC, seed {s}" for s in out.columns]
    out["validation AUROC (mean)"] = rows.groupby(["candidate", "set"], sort=False)[
        "val_auroc"
    ].mean()
    return out.round(1).reset_index(level="set")


def rescored_rows(selection: Selection, candidates: Sequence[str], seed: int) -> list[dict]:
    """Rows for :func:`adtr_core.figures.plots.maps.score_map_grid` from reported candidates'
    runs on a test set without masks, whose score maps a run does not store: the test images
    that the first candidate scores highest and lowest, anomalous and normal
    (:func:`~adtr_core.figures.plots.maps.pick_best_worst`), scored again from each run's
    checkpoint (the maps its scores came from), the same images for every candidate.

    Args:
        selection: a study whose ``candidates`` were scored on the test set
            (:func:`~adtr_core.runs.selection.final_evaluation`).
        candidates: their names (repeats are dropped).
        seed: the runs' seed (the first set's run of each is taken).

    Raises:
        ValueError: a candidate's run was not scored on the test set, or the test set changed
            since.
    """
    import torch

    from adtr_core.data.sources import open_split
    from adtr_core.figures.plots.maps import pick_best_worst
    from adtr_core.method.scoring import score
    from adtr_core.runs.evaluation import scoring_config
    from adtr_core.runs.results import load_result
    from adtr_core.runs.saved_runs import load_run_model

    rows: list[dict] = []
    picks = None
    for candidate in dict.fromkeys(candidates):
        key = next((k for k in selection.runs if k[0] == candidate and k[2] == seed), None)
        result = load_result(selection.runs[key]) if key is not None else None
        if result is None or result.scores is None:
            raise ValueError(
                f"candidate {candidate!r} (seed {seed}) was not scored on the test set"
            )
        picks = picks if picks is not None else pick_best_worst(result.scores)
        cfg, backbone, model = load_run_model(result.out_dir)
        test = open_split(cfg, "test")
        items = [test[pos] for pos, _ in picks]
        scored = [Path(str(result.scores["path"].iloc[pos])).name for pos, _ in picks]
        if [Path(it["path"]).name for it in items] != scored:
            raise ValueError(f"the test set of {result.out_dir} changed since the run: rerun it")
        with torch.no_grad():
            f = backbone(torch.stack([it["image"] for it in items]))  # (B, C, h, w)
            maps, scores = score(f, model(f), scoring_config(cfg))  # (B, S, S), (B,)
        rows += [
            {
                "image": it["image"],
                "mask": None,
                "map": m.numpy(),
                "label": f"{candidate}:\n{caption}",
                "note": f"image score {float(v):.3g}",
                "category": str(cfg.category),
                "defect": str(it["defect"]),
            }
            for it, (_, caption), m, v in zip(items, picks, maps, scores)
        ]
    return rows
