"""Entry point of ``make bench``: measure, print one table and the targets, write results.

Usage::

    .venv/bin/python benchmarks/run.py            # the full run (a few minutes on a CPU)
    .venv/bin/python benchmarks/run.py --quick    # fewer rounds, a shorter training run
    .venv/bin/python benchmarks/run.py --device cuda --compile

Results: ``benchmarks/results/<host kind>.json`` (every measurement, per-round times
included) and ``.md`` (the printed table). Sections can be chosen with ``--only``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from adtr_core.runs.device import resolve_device  # noqa: E402
from benchmarks import (  # noqa: E402
    engines,
    harness,
    inference,
    options,
    peer,
    peers,
    precision,
    report,
    speed,
    threads,
    training,
)

SECTIONS = (
    "inference",
    "epoch",
    "time_to_metric",
    "peer",
    "step",
    "peers",
    "options",
    "engines",
    "precision",
    "threads",
    "gpu_training",
    "figures",
)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--quick", action="store_true", help="fewer rounds, shorter training")
    parser.add_argument(
        "--tiny", action="store_true", help="minimal sizes (smoke test; figures are meaningless)"
    )
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument(
        "--only", nargs="+", choices=SECTIONS, default=None, help="run these sections only"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="results folder (default: benchmarks/results)"
    )
    parser.add_argument("--no-write", action="store_true", help="print only")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    plan = (
        harness.Plan.tiny()
        if args.tiny
        else harness.Plan.quick()
        if args.quick
        else harness.Plan.full()
    )
    plan.compile = args.compile
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    sections = args.only or SECTIONS
    results: dict[str, Any] = {"plan": plan.name, "host": harness.host_info(device)}
    runners = {
        "inference": lambda: inference.run(plan, device),
        "epoch": lambda: training.epoch_cost(plan, device),
        "time_to_metric": lambda: training.time_to_metric(plan, device),
        "peer": lambda: peer.run(plan, device),
        "step": lambda: speed.run(plan, device),
        "peers": lambda: peers.run(plan, device),
        "options": lambda: options.run(plan, device),
        "engines": lambda: engines.run(plan, device),
        "precision": lambda: precision.run(plan, device),
        "threads": lambda: threads.run(plan, device),
        "gpu_training": lambda: training.gpu_training(plan, device),
        "figures": lambda: report.figures_wall(),
    }
    start = time.perf_counter()
    for name in SECTIONS:
        if name not in sections:
            continue
        t0 = time.perf_counter()
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        results[name] = runners[name]()
        print(f"[bench] {name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    results["wall_s"] = time.perf_counter() - start
    results["targets"] = report.targets(results, device.type)
    print(report.render(results))
    if not args.no_write:
        out = args.out or Path(__file__).resolve().parent / "results"
        for path in report.write(results, out):
            print(f"wrote {path}", file=sys.stderr)
    return results


if __name__ == "__main__":
    main()
