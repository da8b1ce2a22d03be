"""The ``adtr`` command line: train, eval, predict, data, figures, sweep.

Every command has ``--help``. ``adtr train`` takes its settings from a profile
(``smoke``, ``quick`` or ``paper``; the same parameter sets the notebooks use),
then from the flags, then from ``--set key=value`` pairs (any field of
``ExperimentConfig``).
"""

from __future__ import annotations

import argparse
import json
import sys

import yaml


def _parse_set(pairs: list[str]) -> dict:
    values = {}
    for pair in pairs:
        if "=" not in pair:
            raise SystemExit(f"--set expects key=value, got {pair!r}")
        key, raw = pair.split("=", 1)
        values[key.strip().replace("-", "_")] = yaml.safe_load(raw)
    return values


def train_config(args: argparse.Namespace):
    """Profile → flags → --set, as an ExperimentConfig (unknown keys are refused)."""
    from adtr_core.experiment import ExperimentConfig
    from adtr_core.profiles import profile_params

    values = profile_params(args.profile, "train")
    flags = {
        "data": args.data,
        "data_root": args.data_root,
        "category": args.category,
        "model": args.model,
        "backbone": args.backbone,
        "backbone_weights": args.backbone_weights,
        "epochs": args.epochs,
        "image_size": args.image_size,
        "device": args.device,
        "seed": args.seed,
    }
    values.update({k: v for k, v in flags.items() if v is not None})
    if args.data_root is not None and args.data is None and values.get("data") == "demo":
        values["data"] = "mvtec"  # a root without --data means the MVTec AD layout
    values.update(_parse_set(args.set))
    return ExperimentConfig.from_dict(values)


def cmd_train(args: argparse.Namespace) -> int:
    from adtr_core.experiment import run_experiment

    cfg = train_config(args)
    result = run_experiment(cfg, out_dir=args.out, progress=not args.quiet)
    print(f"results: {result.out_dir}")
    _print_metrics(result.metrics)
    return 0


def _print_metrics(metrics: dict) -> None:
    for key in ("category", "image_auroc", "pixel_auroc", "pixel_aupro"):
        if key in metrics:
            value = metrics[key]
            print(
                f"  {key:12s} {value:.4f}" if isinstance(value, float) else f"  {key:12s} {value}"
            )


def cmd_eval(args: argparse.Namespace) -> int:
    from adtr_core.experiment import evaluate_checkpoint

    metrics = evaluate_checkpoint(args.checkpoint, args.data_root, args.category, args.device)
    _print_metrics(metrics)
    if args.json:
        print(json.dumps(metrics, indent=2, default=str))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from adtr_core.experiment import predict_images

    table = predict_images(args.checkpoint, args.input, args.out, device=args.device)
    print(table.to_string(index=False))
    print(f"scores and overlays written to {args.out}")
    return 0


def cmd_data_demo(args: argparse.Namespace) -> int:
    from adtr_core.data.demo import build_demo

    root = build_demo(args.out, seed=args.seed)
    print(f"demo data (MVTec AD layout) written to {root}")
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    from adtr_core.data.check import check_root, format_report

    report = check_root(args.root, category=args.category)
    print(format_report(report))
    return 1 if report.problems else 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from adtr_core.experiment import list_categories, resolve_data_source
    from adtr_core.sweep import grid, results_table, run_sweep

    base = train_config(args)
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

    from adtr_core.pipeline import main as pipeline_main

    if args.address:
        os.environ["RAY_ADDRESS"] = args.address
    argv = ["--profile", args.profile, "--executor", args.executor]
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
    p.add_argument("--out", default=None, help="results folder (default: runs/<config name>)")
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
    p.set_defaults(func=cmd_eval)
    return _add_other_commands(sub, parser)


def _add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        choices=["demo", "mvtec", "folder", "cifar10", "digits"],
        default=None,
        help="data source (default: the profile's, i.e. the embedded demo textures)",
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
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--device", default=None, help="auto | cpu | cuda")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any ExperimentConfig field, e.g. --set hidden_dim=128 (repeatable)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_other_commands(sub, parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p = sub.add_parser("predict", help="score images with a trained run; write scores and overlays")
    p.add_argument("--checkpoint", required=True, help="results folder or its checkpoint.pt")
    p.add_argument("input", help="an image file or a folder of images")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("data", help="build the demo data or check a dataset root")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    d = data_sub.add_parser("demo", help="build the embedded default data (MVTec AD layout)")
    d.add_argument("--out", required=True)
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=cmd_data_demo)
    d = data_sub.add_parser("check", help="validate a dataset root in the MVTec AD layout")
    d.add_argument("root")
    d.add_argument("--category", default=None)
    d.set_defaults(func=cmd_data_check)

    p = sub.add_parser("figures", help="regenerate every figure and table (papermill)")
    p.add_argument("--profile", default="quick", choices=["smoke", "quick", "paper"])
    p.add_argument("--notebook", default=None, help="one notebook, e.g. 02 or 02_train_category")
    p.add_argument("--executor", default="local", choices=["local", "ray"])
    p.add_argument("--address", default=None, help="address of an existing Ray cluster")
    p.set_defaults(func=cmd_figures)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        # Bad input gets one clear line, not a traceback.
        print(f"adtr: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
