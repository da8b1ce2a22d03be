"""The command line of ``python -m adtr_core.figures.pipeline`` (``make figures``, ``adtr figures``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from adtr_core.figures.pipeline.outcome import NotebookError
from adtr_core.figures.pipeline.run import run_pipeline


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m adtr_core.figures.pipeline``."""
    parser = argparse.ArgumentParser(
        prog="python -m adtr_core.figures.pipeline",
        description="Run the notebooks with papermill; write figures, tables and the manifest.",
    )
    parser.add_argument("--profile", default="quick", choices=["smoke", "quick", "paper"])
    parser.add_argument(
        "--notebook", default=None, help="one notebook, e.g. 02 or 02_train_category"
    )
    parser.add_argument(
        "--executor",
        default="ray",
        choices=["local", "ray"],
        help="how the notebooks' sweeps train: ray (default; one CPU per run, the cores shared "
        "across notebooks) or local (in each notebook's kernel)",
    )
    parser.add_argument(
        "--jobs",
        default="auto",
        help="notebooks run at once (default auto: 2 where there are 2 cores or more; 1: in order)",
    )
    parser.add_argument("--notebooks-dir", default=None, help="default: the repository's")
    parser.add_argument("--figures-dir", default=None, help="default: the repository's figures/")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: returns 0 on success, 1 when a notebook failed, 2 on bad input."""
    args = build_parser().parse_args(argv)
    try:
        run_pipeline(
            profile=args.profile,
            notebook=args.notebook,
            executor=args.executor,
            notebooks_dir=args.notebooks_dir,
            figures_dir=args.figures_dir,
            jobs=args.jobs,
        )
    except NotebookError:
        return 1  # already reported in one line
    except (ValueError, FileNotFoundError) as err:
        print(f"adtr figures: error: {err}", file=sys.stderr)
        return 2
    return 0
