"""The ``adtr`` command line: train, eval, predict, export, data, figures, sweep.

Every command has ``--help``. ``adtr train`` takes its settings from a profile
(``smoke``, ``quick`` or ``paper``; the same parameter sets the notebooks use),
then from the flags, then from ``--set key=value`` pairs (any field of
``ExperimentConfig``).

Training takes a fixed torch thread count (``--threads N``, else ``ADTR_THREADS``, else every
core), stored with the run; scoring takes the rule of ``adtr_core.runs.threads`` unless a count
is given (``--threads auto`` asks for the rule in training too).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml


def _literal(raw: str):
    """A flag's value as YAML reads it; its type and range are checked with the config's."""
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def _threads_argument(raw: str) -> int | str:
    """``--threads``: a count >= 1, or auto."""
    if raw.strip().lower() == "auto":
        return "auto"
    try:
        count = int(raw)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f"expected a number of threads >= 1 or auto, got {raw!r}")
    return count


def _parse_set(pairs: list[str]) -> dict:
    values = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"--set expects key=value, got {pair!r}")
        key, raw = pair.split("=", 1)
        if not raw.strip():
            raise ValueError(
                f"--set {pair!r} has no value: give one, or write {key.strip()}=null for none"
            )
        try:
            values[key.strip().replace("-", "_")] = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            first = str(err).splitlines()[0]
            raise ValueError(f"--set {pair!r}: the value is not valid YAML ({first})") from None
    return values


def train_config(args: argparse.Namespace):
    """Profile → flags → --set, as an ExperimentConfig (unknown keys are refused)."""
    from adtr_core.runs.config import ExperimentConfig, hand_budget
    from adtr_core.runs.profiles import profile_params

    values = profile_params(args.profile, "train")
    flags = {
        "data": args.data,
        "data_root": args.data_root,
        "category": args.category,
        "model": args.model,
        "backbone": args.backbone,
        "backbone_weights": args.backbone_weights,
        "epochs": args.epochs,
        "steps": args.steps,
        "image_size": args.image_size,
        "device": args.device,
        "seed": args.seed,
        "precision": args.precision,
    }
    values.update({k: v for k, v in flags.items() if v is not None})
    if args.data_root is not None and args.data is None and values.get("data") in ("auto", "demo"):
        values["data"] = "mvtec"  # a root without --data means the MVTec AD layout
    folder = _folder_values(args, values)
    if folder and args.category is None:
        values["category"] = None  # own folders have no category: not the profile's demo one
    values.update(folder)
    flagged = {k: getattr(args, k) for k in ("epochs", "steps") if getattr(args, k) is not None}
    given = {**flagged, **_parse_set(args.set)}
    values.update(given)
    hand_budget(given, values)  # an epoch count by hand replaces the profile's step budget
    ExperimentConfig.check_values(values)  # every value, before any work
    return ExperimentConfig.from_dict(values)


def _folder_values(args: argparse.Namespace, values: dict) -> dict:
    """``--normal/--anomalous/--masks/--test-normal`` as config fields (``data="folder"``)."""
    folders = {
        "data_root": getattr(args, "normal", None),
        "anomalous_dir": getattr(args, "anomalous", None),
        "mask_dir": getattr(args, "masks", None),
        "test_normal_dir": getattr(args, "test_normal", None),
    }
    given = {k: v for k, v in folders.items() if v is not None}
    if not given:
        if args.data == "folder":
            raise ValueError(
                "--data folder needs --normal DIR (normal training images) and --anomalous DIR "
                "and/or --test-normal DIR (test images); --masks DIR is optional"
            )
        return {}
    if args.data not in (None, "folder"):
        raise ValueError(
            f"--normal/--anomalous/--masks/--test-normal are for --data folder, not --data "
            f"{args.data}"
        )
    if "data_root" not in given:
        raise ValueError("--data folder needs --normal DIR: the folder of normal training images")
    if args.data_root is not None:
        raise ValueError("--data folder takes --normal DIR instead of --data-root")
    if "anomalous_dir" not in given and "test_normal_dir" not in given:
        raise ValueError("--data folder needs --anomalous DIR and/or --test-normal DIR to test on")
    return {"data": "folder", **given}


def cmd_train(args: argparse.Namespace) -> int:
    from adtr_core.runs.experiment import run_experiment

    cfg = train_config(args)
    if args.out is not None and not args.out.strip():
        raise ValueError("--out is empty: name a results folder, or leave --out out")
    result = run_experiment(
        cfg,
        out_dir=args.out,
        progress=not args.quiet,
        overwrite=args.overwrite,
        threads=args.threads,
        test=not args.validation_only,
    )
    print(f"results: {result.out_dir}")
    _print_metrics(result.metrics)
    if args.validation_only:
        print(f"  val_auroc    {result.metrics['val_auroc']:.4f} (no test image read)")
    return 0


def _print_metrics(metrics: dict) -> None:
    import math

    from adtr_core.runs.results import absence_reason

    for key in ("category", "image_auroc", "pixel_auroc", "pixel_aupro"):
        if key in metrics:
            value = metrics[key]
            if isinstance(value, float) and math.isnan(value):
                print(f"  {key:12s} absent: {absence_reason(key, metrics)}")
            elif isinstance(value, float):
                print(f"  {key:12s} {value:.4f}")
            else:
                print(f"  {key:12s} {value}")


def cmd_eval(args: argparse.Namespace) -> int:
    from adtr_core.runs.saved_runs import evaluate_checkpoint

    metrics = evaluate_checkpoint(
        args.checkpoint,
        args.data_root,
        args.category,
        args.device,
        precision=args.precision,
        threads=args.threads,
        require_finished=args.require_finished,
    )
    _print_metrics(metrics)
    if args.json:
        from adtr_core.runs.results import metrics_for_json

        print(json.dumps(metrics_for_json(metrics), indent=2, default=str))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from adtr_core.deploy.predict import OK, predict_images

    table = predict_images(
        args.checkpoint,
        args.input,
        args.out,
        device=args.device,
        engine=args.engine,
        precision=args.precision,
        threads=args.threads,
        require_finished=args.require_finished,
    )
    print(table[["path", "score", "status"]].to_string(index=False))
    failed = int((table["status"] != OK).sum())
    print(f"scores and overlays written to {args.out}")
    if failed:
        print(
            f"adtr: error: {failed} of {len(table)} image(s) could not be read (listed above "
            "and in scores.csv)",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from adtr_core.deploy.export import export_onnx, sidecar_path

    path = export_onnx(args.checkpoint, args.out)
    print(f"ONNX graph (images -> score maps, image scores): {path}")
    print(f"what it needs (image size, normalisation, scoring): {sidecar_path(path)}")
    return 0


def cmd_data_demo(args: argparse.Namespace) -> int:
    from adtr_core.data.demo import build_demo
    from adtr_core.io import ensure_dir

    if args.seed < 0:
        raise ValueError(f"--seed {args.seed} is not valid: expected an integer >= 0")
    ensure_dir(args.out, "--out folder")
    root = build_demo(args.out, seed=args.seed)
    print(f"demo data (MVTec AD layout) written to {root}")
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    from adtr_core.data.check import check_folders, check_root, format_report

    folder_flags = (args.normal, args.anomalous, args.masks, args.test_normal)
    if args.data == "folder" or any(f is not None for f in folder_flags):
        if args.root is not None or args.normal is None:
            raise ValueError(
                "adtr data check --data folder takes --normal DIR (and --anomalous, --masks, "
                "--test-normal DIR), not a root folder"
            )
        report = check_folders(args.normal, args.anomalous, args.masks, args.test_normal)
    elif args.root is None:
        raise ValueError(
            "adtr data check needs a root folder (the MVTec AD layout) or --data folder "
            "--normal DIR ... (your own folders)"
        )
    else:
        report = check_root(args.root, category=args.category)
    print(format_report(report))
    return 1 if report.problems else 0


def cmd_sweep(args: argparse.Namespace) -> int:
    import os

    from adtr_core.data.sources import list_categories, resolve_data_source
    from adtr_core.runs.sweep import grid, results_table, run_sweep

    if args.executor == "ray" and args.address:
        from adtr_core.runs.sweep import check_reachable

        check_reachable(args.address)  # in a second, before Ray's own retries
    base = train_config(args)
    if args.out is not None:  # before the runs, not after them
        from adtr_core.io import ensure_dir

        if not args.out.strip():
            raise ValueError("--out is empty: name the CSV file, or leave --out out")
        ensure_dir(Path(args.out).expanduser().parent, "folder of --out")
    if args.categories:
        if args.categories == "all":
            source, root, _ = resolve_data_source(base.data)
            names = list_categories(source, base.data_root or root)
        else:
            names = [c.strip() for c in args.categories.split(",") if c.strip()]
        axes = {"category": names}
    else:
        axes = {}
    for spec in args.grid:
        key, _, raw = spec.partition("=")
        if not raw:
            raise ValueError(f"--grid expects key=v1,v2,..., got {spec!r}")
        axes[key.strip().replace("-", "_")] = [yaml.safe_load(v) for v in raw.split(",")]
    configs = grid(base, **axes) if axes else [base]
    print(f"{len(configs)} run(s), executor {args.executor}")
    if args.threads is not None:  # every run of the sweep, Ray workers included
        os.environ["ADTR_THREADS"] = str(args.threads)
    results = run_sweep(
        configs, executor=args.executor, address=args.address, progress=not args.quiet
    )
    table = results_table(results)
    print(table.to_string())
    if args.out:
        from adtr_core.io import atomic_path

        with atomic_path(args.out) as tmp:
            table.to_csv(tmp)
        print(f"table written to {args.out}")
    return 0


def cmd_figures(args: argparse.Namespace) -> int:
    import os

    from adtr_core.figures.pipeline import main as pipeline_main

    if args.address:
        os.environ["RAY_ADDRESS"] = args.address
    argv = ["--profile", args.profile, "--executor", args.executor, "--jobs", args.jobs]
    if args.notebook:
        argv += ["--notebook", args.notebook]
    return pipeline_main(argv)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="adtr", description="ADTR: anomaly detection transformer with feature reconstruction."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train and evaluate one category; write a results folder")
    _add_run_arguments(p)
    _add_folder_arguments(p)
    p.add_argument("--out", default=None, help="results folder (default: runs/<config name>)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="move a previous run in --out aside (to <out>.replaced-<time>/) and start afresh",
    )
    p.add_argument(
        "--validation-only",
        action="store_true",
        help="train and record the validation AUROC without reading a test image (choosing a "
        "setting); the same command without it later scores the trained run on the test set",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "sweep", help="run a grid of configs or a list of categories (local or Ray), resumable"
    )
    _add_run_arguments(p)
    p.add_argument(
        "--categories",
        default=None,
        help="comma-separated categories, or 'all' for every category of the data",
    )
    p.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="an ExperimentConfig field and its values, e.g. --grid model=adtr,cnn",
    )
    p.add_argument("--executor", default="local", choices=["local", "ray"])
    p.add_argument("--address", default=None, help="address of an existing Ray cluster")
    p.add_argument("--out", default=None, help="also write the results table as CSV here")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("eval", help="evaluate a trained run on a test set")
    p.add_argument("--checkpoint", required=True, help="results folder or its checkpoint.pt")
    p.add_argument("--data-root", default=None)
    p.add_argument("--category", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="also print the metrics as JSON")
    _add_finished_argument(p)
    _add_speed_arguments(p)
    p.set_defaults(func=cmd_eval)
    return _add_other_commands(sub, parser)


def _add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        choices=["auto", "mvtec", "demo", "dev", "folder", "cifar10", "digits"],
        default=None,
        help="data source (default: the profile's, auto: MVTec AD from MVTEC_ROOT, else the "
        "embedded real bottle category; demo: the synthetic-defect textures)",
    )
    p.add_argument("--data-root", default=None, help="dataset root, e.g. the MVTec AD folder")
    p.add_argument("--category", default=None, help="category (MVTec) or normal class (one-class)")
    p.add_argument("--profile", default="quick", choices=["smoke", "quick", "paper"])
    p.add_argument(
        "--model",
        default=None,
        choices=["adtr", "adtr_no_attention", "adtr_no_query", "cnn", "padim", "patchcore"],
        help="padim / patchcore: anomalib's peers, fitted on the same data and backbone",
    )
    p.add_argument("--backbone", default=None, help="e.g. efficientnet_b4, tf_efficientnet_lite0")
    p.add_argument(
        "--backbone-weights",
        default=None,
        help="auto | random | timm | PATH to a state dict (e.g. EfficientNet-B4)",
    )
    p.add_argument("--epochs", type=_literal, default=None)
    p.add_argument(
        "--steps",
        type=_literal,
        default=None,
        help="optimiser steps, or auto: train until the validation AUROC stops improving",
    )
    p.add_argument("--image-size", type=_literal, default=None)
    p.add_argument("--device", default=None, help="auto | cpu | cuda")
    p.add_argument("--seed", type=_literal, default=None)
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any ExperimentConfig field, e.g. --set hidden_dim=128 (repeatable)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_speed_arguments(p)


def _add_speed_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--precision",
        default=None,
        choices=["auto", "fp32", "bf16"],
        help="bf16: autocast where the CPU (or GPU) supports it; auto: bf16 on CUDA only "
        "(default: the profile's or the run's)",
    )
    p.add_argument(
        "--threads",
        type=_threads_argument,
        default=None,
        help="torch CPU threads: N, or auto (one per core left free by other processes, "
        "re-chosen every epoch). Default: ADTR_THREADS, else every core, fixed, for training "
        "(the count is stored with the run: the same command gives the same numbers), and "
        "auto for scoring",
    )


def _add_finished_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--require-finished",
        action="store_true",
        help="refuse a run whose training was interrupted (default: use it, with a warning)",
    )


def _add_folder_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("your own images in plain folders (--data folder)")
    g.add_argument("--normal", default=None, metavar="DIR", help="normal training images")
    g.add_argument(
        "--anomalous",
        default=None,
        metavar="DIR",
        help="anomalous test images (flat, or one sub-folder per defect type)",
    )
    g.add_argument(
        "--masks",
        default=None,
        metavar="DIR",
        help="masks of the anomalous images, by file stem (optional: without, image AUROC only)",
    )
    g.add_argument("--test-normal", default=None, metavar="DIR", help="normal test images")


def _add_other_commands(sub, parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p = sub.add_parser("predict", help="score images with a trained run; write scores and overlays")
    p.add_argument("--checkpoint", required=True, help="results folder or its checkpoint.pt")
    p.add_argument("input", help="an image file or a folder of images")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--engine",
        default="torch",
        choices=["torch", "onnxruntime"],
        help="torch: eager PyTorch; onnxruntime: the run's exported graph (exported if missing)",
    )
    _add_finished_argument(p)
    _add_speed_arguments(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "export", help="write a run as one ONNX graph (images -> score maps, image scores)"
    )
    p.add_argument("--checkpoint", required=True, help="results folder or its checkpoint.pt")
    p.add_argument("--format", default="onnx", choices=["onnx"])
    p.add_argument("--out", default=None, help="graph file (default: <run>/model.onnx)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("data", help="build the demo data or check a dataset root")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    d = data_sub.add_parser(
        "demo", help="build the demo textures (synthetic defects, MVTec AD layout)"
    )
    d.add_argument("--out", required=True)
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=cmd_data_demo)
    d = data_sub.add_parser(
        "check", help="validate a dataset root in the MVTec AD layout, or own folders"
    )
    d.add_argument("root", nargs="?", default=None, help="the MVTec AD layout's root folder")
    d.add_argument("--category", default=None)
    d.add_argument(
        "--data", choices=["mvtec", "folder"], default=None, help="folder: check --normal etc."
    )
    _add_folder_arguments(d)
    d.set_defaults(func=cmd_data_check)

    p = sub.add_parser("figures", help="regenerate every figure and table (papermill)")
    p.add_argument("--profile", default="quick", choices=["smoke", "quick", "paper"])
    p.add_argument("--notebook", default=None, help="one notebook, e.g. 02 or 02_train_category")
    p.add_argument(
        "--executor",
        default="ray",
        choices=["local", "ray"],
        help="how the notebooks' sweeps train: ray (default; one CPU per run, the cores shared "
        "across notebooks) or local (in each notebook's kernel)",
    )
    p.add_argument("--address", default=None, help="address of an existing Ray cluster")
    p.add_argument("--jobs", default="auto", help="notebooks run at once (auto: 2 on 2+ cores)")
    p.set_defaults(func=cmd_figures)
    return parser


INTERRUPTED = {
    "train": "the results folder keeps its last checkpoint; run the same command to resume",
    "sweep": "finished runs are kept; run the same command to resume the others",
    "": "nothing half-written is left",
}


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"adtr: warning: {' '.join(str(message).split())}\n"


def main(argv: list[str] | None = None) -> int:
    import warnings

    parser = build_parser()
    args = parser.parse_args(argv)
    saved = warnings.formatwarning
    warnings.formatwarning = _one_line_warning
    try:
        return args.func(args)
    except (ValueError, OSError, RuntimeError, FloatingPointError) as err:
        # Bad input gets one clear line, not a traceback.
        print(f"adtr: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"adtr: interrupted ({INTERRUPTED.get(args.command, INTERRUPTED[''])})", file=sys.stderr
        )
        return 130
    finally:
        warnings.formatwarning = saved


MAX_LINE = 1000  # characters of an error line; longer ones keep their start and their end


def _one_line(err: BaseException) -> str:
    """The error's message on one line; an OSError names its file and cause."""
    if isinstance(err, OSError) and err.strerror and not isinstance(err, FileNotFoundError):
        where = f" {err.filename}" if err.filename else ""
        return f"cannot use{where}: {err.strerror.lower()}"
    line = " ".join(str(err).split())
    if len(line) > MAX_LINE:  # a list of thousands of names: the cause and the fix stay
        left = len(line) - MAX_LINE
        line = f"{line[: MAX_LINE - 300]} ... ({left} characters left out) ... {line[-300:]}"
    return line


if __name__ == "__main__":
    sys.exit(main())
