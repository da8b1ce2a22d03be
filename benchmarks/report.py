"""The one table ``make bench`` prints, the targets' PASS/MISS, and the results files."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from adtr_core.io import write_json, write_text
from benchmarks import peers

QUICK_BUDGET_S = 15 * 60
TARGET_ADDED = 0.25  # reconstruction + scoring over the backbone, batch 16, CPU
TARGET_CACHE = 5.0  # recomputing / cached seconds per epoch
TARGET_PEER = 1.0  # torch.nn peer / ADTR time
TARGET_ORT = 1.5  # ONNX Runtime / eager images per second, batch 1, CPU
TARGET_BF16_TRAIN = 1.3  # fp32 / bf16 seconds per training epoch, CPU
TARGET_LOADED = 2.5  # epoch beside one competing process / idle epoch, the thread rule
TARGET_RULE = 1.3  # the rule's epoch / the best fixed thread count's, idle and loaded
# The training step against the matrix-multiply peak of the same run (benchmarks.speed);
# each size passes on either of its pair.
TARGET_QUICK_FP32_PEAK = 0.50  # quick size, fp32: of the fp32 peak
TARGET_QUICK_BF16 = 2.0  # quick size: fp32 / bf16 step time
TARGET_PAPER_FP32_PEAK = 0.65  # paper size, fp32: of the fp32 peak
TARGET_PAPER_BF16_PEAK = 0.35  # paper size, bf16: of the bf16 peak


def figures_wall(figures_dir: Path | None = None) -> dict[str, Any]:
    """The quick profile's wall time from ``figures/MANIFEST.json``: the last whole pipeline
    run's, else the sum of the notebooks' last runs (with their per-notebook times)."""
    from adtr_core import paths
    from adtr_core.figures.pipeline import discover_notebooks, read_manifest

    manifest = read_manifest(figures_dir)
    runs = {
        stem: rec
        for stem, rec in manifest.get("notebooks", {}).items()
        if rec.get("profile") == "quick"
    }
    try:
        expected = [p.stem for p in discover_notebooks(paths.notebooks_dir())]
    except (OSError, ValueError):
        expected = []
    if not runs:
        return {"measured": False, "note": "not measured yet (no quick-profile run in MANIFEST)"}
    failed = sorted(s for s, r in runs.items() if r.get("status") != "ok")
    missing = sorted(set(expected) - set(runs))
    # the pipeline's own record of a whole run; the notebooks' times overlap with --jobs 2
    run = manifest.get("run") or {}
    whole = (
        run.get("profile") == "quick"
        and run.get("status") == "ok"
        and set(expected) <= set(run.get("notebooks", []))
    )
    total = run["wall_s"] if whole else sum(float(r.get("wall_s", 0.0)) for r in runs.values())
    return {
        "measured": True,
        "total_s": float(total),
        "jobs": run.get("jobs", 1) if whole else 1,
        "whole_run": bool(whole),
        "per_notebook_s": {s: float(r.get("wall_s", 0.0)) for s, r in sorted(runs.items())},
        "failed": failed,
        "missing": missing,
        "complete": not failed and not missing,
    }


def _r(x: dict[str, float] | None) -> str:
    if not x:
        return "n/a"
    return f"{x['median']:.2f}x (rounds {x['min']:.2f}-{x['max']:.2f})"


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def build_rows(results: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(section, measurement, value, notes) rows of the printed table."""
    rows: list[tuple[str, str, str, str]] = []
    for r in results.get("inference", []):
        share = r["share"]
        rows.append(
            (
                "inference",
                f"{r['backbone']} b{r['batch']} ({r['precision']})",
                f"{r['images_per_s']:.1f} img/s, peak {r['peak_mib']:.0f} MiB",
                f"backbone {_pct(share['backbone'])} / recon {_pct(share['reconstruction'])} / "
                f"scoring {_pct(share['scoring'])}; (recon+scoring)/backbone "
                f"{_r(r['added_over_backbone'])}",
            )
        )
    e = results.get("epoch")
    if e:
        cfg = e["config"]
        rows.append(
            (
                "training",
                "s/epoch: recomputed / cached features",
                _r(e["ratio"]),
                f"cached {e['epoch_s']['cached']:.2f} s, recomputed "
                f"{e['epoch_s']['recompute']:.2f} s; {e['images']} images, {e['steps']} steps; "
                f"{cfg['backbone']} {cfg['image_size']}px D={cfg['hidden_dim']}; "
                f"one-off extraction {e['extract_s']:.2f} s [{e['source']}]",
            )
        )
    m = results.get("time_to_metric")
    if m:
        final = ", ".join(f"{k} {v:.3f}" for k, v in m["final_metrics"].items())
        reached = (
            f"{m['reached_train_s']:.1f} s (epoch {m['reached_epoch']}/{m['config']['epochs']})"
            if m["reached_epoch"] is not None
            else "not reached"
        )
        rows.append(
            (
                "training",
                "time to the final metrics (training only)",
                reached,
                f"final {final}; all {m['config']['epochs']} epochs {m['train_s']:.1f} s, run "
                f"wall {m['wall_s']:.1f} s incl. evaluation every {m['eval_every']} epochs",
            )
        )
    p = results.get("peer")
    if p:
        for kind, key in (("forward", "forward_ratio"), ("training step", "train_ratio")):
            ms = p["forward_ms"] if kind == "forward" else p["train_step_ms"]
            rows.append(
                (
                    "peer",
                    f"torch.nn stack / ADTR, {kind} b{p['batch']}",
                    _r(p[key]),
                    f"ADTR {ms['adtr']:.0f} ms, torch.nn {ms['peer']:.0f} ms ({p['precision']})",
                )
            )
    for name, o in (results.get("options") or {}).items():
        notes = [f"{k} {v:.0f} ms" for k, v in o["ms"].items()]
        for key in ("what", "rel_error", "max_abs_diff", "compile_s"):
            if key in o:
                v = o[key]
                notes.append(f"{key} {v:.3g}" if isinstance(v, float) else str(v))
        if "memory_ratio" in o:
            notes.append(f"in-process cache {_r(o['memory_ratio'])}")
        rows.append(("option", name, _r(o["ratio"]), "; ".join(notes)))
    rows += _step_rows(results.get("step"))
    rows += peers.rows(results.get("peers"))  # ADTR beside anomalib's PaDiM and PatchCore
    rows += _speed_rows(results)
    g = results.get("gpu_training") or {}
    inf_gpu = [r for r in results.get("inference", []) if r.get("device", "cpu") == "cuda"]
    if g.get("measured"):
        ips = g["images_per_s"]
        rows.append(
            (
                "gpu",
                "efficientnet_b4 256px training img/s",
                f"cached {ips['cached']:.0f}, recomputed {ips['recompute']:.0f}",
                f"bf16 autocast, channels-last; host syncs in a step: {g['host_syncs_per_step']}",
            )
        )
        for r in inf_gpu:
            if r["backbone"] == "efficientnet_b4":
                rows.append(
                    (
                        "gpu",
                        f"efficientnet_b4 256px inference b{r['batch']}",
                        f"{r['images_per_s']:.0f} img/s",
                        f"peak {r['peak_mib']:.0f} MiB",
                    )
                )
    else:
        rows.append(("gpu", "training and inference img/s", "not measured", g.get("note", "")))
    f = results.get("figures") or {}
    if f.get("measured"):
        extra = (
            "" if f["complete"] else f" (incomplete: missing {f['missing']}, failed {f['failed']})"
        )
        if f.get("whole_run"):
            extra += f", one pipeline run, {f['jobs']} at once"
        else:
            extra += ", the sum of the notebooks' last runs"
        rows.append(
            (
                "figures",
                "make figures (quick), wall",
                f"{f['total_s']:.0f} s",
                f"{len(f['per_notebook_s'])} notebooks{extra}",
            )
        )
    else:
        rows.append(("figures", "make figures (quick), wall", "not measured yet", ""))
    return rows


def _step_rows(step: dict[str, Any] | None) -> list[tuple[str, str, str, str]]:
    """Rows of the training-step section: the peak probe, each step's FLOP/s, the ratios."""
    if not step:
        return []
    rows = []
    n = step["peak_size"]
    for name, s in step["sizes"].items():
        cfg, peak = s["config"], s["peak_gflops"]
        rows.append(
            (
                "step",
                f"matrix-multiply peak, torch.mm {n}x{n}, rounds of the {name} size",
                ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peak.items())
                + ("" if "bf16" in peak else ", bf16 not measured (no bf16 instructions)"),
                "interleaved with the steps below; every fraction is taken against it per round",
            )
        )
        for variant, ms in s["ms"].items():
            notes = f"{_pct(s['of_fp32_peak'][variant])} of the fp32 peak"
            if variant in s["of_bf16_peak"]:
                notes += f", {_pct(s['of_bf16_peak'][variant])} of the bf16 peak"
            rows.append(
                (
                    "step",
                    f"training step, {name} size b{cfg['batch_size']}, {variant}",
                    f"{ms:.0f} ms, {s['gflops'][variant]:.1f} GFLOP/s",
                    f"{notes}; {s['step_flops'] / 1e9:.2f} GFLOP a step; D={cfg['hidden_dim']}, "
                    f"FFN {cfg['dim_feedforward']}, {cfg['num_heads']} heads, "
                    f"C={cfg['channels']}, {cfg['grid'][0]}x{cfg['grid'][1]} tokens",
                )
            )
        for what, r in s["ratios"].items():
            rows.append(("step", f"{what}, {name} size", _r(r), "> 1: the second is faster"))
    o = step.get("optimizer")
    if o:
        for kind in ("foreach", "fused"):
            diff = o["max_abs_diff"][kind]
            rows.append(
                (
                    "step",
                    f"AdamW step alone: per-parameter loop / {kind}",
                    _r(o["ratio"][kind]),
                    f"loop {o['ms']['loop']:.2f} ms, {kind} {o['ms'][kind]:.2f} ms; "
                    f"{o['tensors']} tensors, {o['params']} parameters; one update lands "
                    + ("on the loop's bit for bit" if diff == 0 else f"{diff:.1e} from the loop's"),
                )
            )
    return rows


def _step_targets(step: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not step:
        return []
    quick, paper = step["sizes"]["quick"], step["sizes"]["paper"]
    bf16 = quick["ratios"].get("bf16 now / fp32 before")
    either = "(either of the pair)"
    pairs = [
        (
            f"quick-size step, fp32, >= {_pct(TARGET_QUICK_FP32_PEAK)} of the fp32 peak {either}",
            quick["of_fp32_peak"]["fp32"],
            TARGET_QUICK_FP32_PEAK,
        ),
        (
            f"quick-size step, bf16, >= {TARGET_QUICK_BF16:.0f}x faster than the fp32 step as "
            f"it was (torch's dropout, AdamW loop) {either}",
            bf16["median"] if bf16 else None,
            TARGET_QUICK_BF16,
        ),
        (
            f"paper-size step, fp32, >= {_pct(TARGET_PAPER_FP32_PEAK)} of the fp32 peak {either}",
            paper["of_fp32_peak"]["fp32"],
            TARGET_PAPER_FP32_PEAK,
        ),
        (
            f"paper-size step, bf16, >= {_pct(TARGET_PAPER_BF16_PEAK)} of the bf16 peak {either}",
            paper["of_bf16_peak"].get("bf16"),
            TARGET_PAPER_BF16_PEAK,
        ),
    ]
    return [
        _target(text, v, bound, at_least=True)
        if v is not None
        else {"target": text, "measured": None}
        for text, v, bound in pairs
    ]


def _speed_rows(results: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """Rows of the engines (ONNX Runtime), precision (bf16) and threads sections."""
    rows = []
    for key, e in (results.get("engines") or {}).items():
        if not isinstance(e, dict):
            continue
        ips = e["images_per_s"]
        rows.append(
            (
                "engine",
                f"ONNX Runtime / eager, whole pipeline, {key}",
                _r(e["ratio"]),
                f"eager {ips['eager']:.1f} img/s, ONNX Runtime {ips['onnxruntime']:.1f} img/s; "
                f"image scores agree to {e['max_rel_score_diff']:.1e} relative; "
                f"export {e['export_s']:.0f} s",
            )
        )
    prec = results.get("precision") or {}
    for key in ("training epoch", "inference pipeline"):
        if key in prec:
            e = prec[key]
            notes = f"fp32 {e['s']['fp32']:.2f} s, bf16 {e['s']['bf16']:.2f} s; {e['what']}"
            if "max_rel_score_diff" in e:
                notes += f"; image scores move by up to {e['max_rel_score_diff']:.1e} relative"
            if not prec.get("bf16_instructions", True):
                notes += "; no bf16 instructions on this CPU (emulated)"
            rows.append(("precision", f"bf16 / fp32, {key}", _r(e["ratio"]), notes))
    t = results.get("threads") or {}
    if "epochs" in t:
        ep = t["epochs"]
        for case in ("idle", "one competing process"):
            detail = ", ".join(
                f"{v} {ep[f'{v}, {case}']['epoch_s']:.2f} s"
                + (f" ({ep[f'{v}, {case}']['threads']} threads)" if v == "rule" else "")
                for v in ("1 thread", "2 threads", "rule", "2 threads, passive")
                if f"{v}, {case}" in ep
            )
            rows.append(
                (
                    "threads",
                    f"epoch, rule / best fixed, {case}",
                    f"{t[f'rule / best fixed, {case}']:.2f}",
                    f"{detail}; {t['what']}",
                )
            )
        rows.append(
            (
                "threads",
                "epoch beside one competing process / idle",
                f"rule {t['rule: loaded / idle']:.2f}",
                f"1 thread {t['1 thread: loaded / idle']:.2f}, "
                f"2 threads {t['2 threads: loaded / idle']:.2f}",
            )
        )
    return rows


def _target(text: str, measured: float, bound: float, at_least: bool) -> dict[str, Any]:
    """One target's row: ``measured`` against ``bound`` (at least it, or at most it)."""
    ok = measured >= bound if at_least else measured <= bound
    return {"target": text, "measured": measured, "pass": ok, "by": measured / bound}


def _speed_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for key, e in (results.get("engines") or {}).items():
        if isinstance(e, dict) and key.endswith(" b1"):
            v = e["ratio"]["median"]
            out.append(
                _target(
                    f"ONNX Runtime >= {TARGET_ORT}x eager img/s, batch 1, {key[:-3]}",
                    v,
                    TARGET_ORT,
                    at_least=True,
                )
            )
    prec = results.get("precision") or {}
    if "training epoch" in prec:
        v = prec["training epoch"]["ratio"]["median"]
        out.append(
            _target(
                f"bf16 training epoch >= {TARGET_BF16_TRAIN}x faster than fp32",
                v,
                TARGET_BF16_TRAIN,
                at_least=True,
            )
        )
    t = results.get("threads") or {}
    if "epochs" in t:
        v = t["rule: loaded / idle"]
        out.append(
            _target(
                f"thread rule: epoch beside one process <= {TARGET_LOADED}x idle",
                v,
                TARGET_LOADED,
                at_least=False,
            )
        )
        for case in ("idle", "one competing process"):
            v = t[f"rule / best fixed, {case}"]
            out.append(
                _target(
                    f"thread rule <= {TARGET_RULE}x the best fixed count, {case}",
                    v,
                    TARGET_RULE,
                    at_least=False,
                )
            )
    return out


def targets(results: dict[str, Any], device: str) -> list[dict[str, Any]]:
    """Each target with its measured ratio and PASS / MISS (None: not measured)."""
    out = []
    for r in results.get("inference", []):
        if r["batch"] == 16 and device == "cpu":
            v = r["added_over_backbone"]["median"]
            out.append(
                _target(
                    f"(recon+scoring)/backbone <= {TARGET_ADDED:.2f}, b16 CPU, {r['backbone']}",
                    v,
                    TARGET_ADDED,
                    at_least=False,
                )
            )
    e = results.get("epoch")
    if e:
        v = e["ratio"]["median"]
        out.append(
            _target(
                f"cached epoch >= {TARGET_CACHE:.0f}x faster than recomputing",
                v,
                TARGET_CACHE,
                at_least=True,
            )
        )
    p = results.get("peer")
    if p:
        for kind, key in (("forward", "forward_ratio"), ("training step", "train_ratio")):
            v = p[key]["median"]
            out.append(
                _target(
                    f"ADTR at least as fast as the torch.nn stack ({kind})",
                    v,
                    TARGET_PEER,
                    at_least=True,
                )
            )
    out += _step_targets(results.get("step"))
    out += _speed_targets(results)
    f = results.get("figures") or {}
    if f.get("measured") and f.get("complete"):
        v = f["total_s"]
        out.append(_target("make figures (quick) within 15 min", v, QUICK_BUDGET_S, at_least=False))
    else:
        out.append({"target": "make figures (quick) within 15 min", "measured": None})
    return out


def _target_line(t: dict[str, Any]) -> str:
    if t.get("measured") is None:
        return f"  NOT MEASURED  {t['target']}"
    flag = "PASS" if t["pass"] else "MISS"
    return f"  {flag}  {t['target']}: measured {t['measured']:.3g} ({t['by']:.2f} of the target)"


def render(results: dict[str, Any]) -> str:
    """The table and the targets, as Markdown (also what is printed)."""
    host = results["host"]
    rows = build_rows(results)
    lines = [
        f"# adtr benchmarks ({results['plan']} plan) on {host['kind']}",
        "",
        f"CPU: {host['cpu']}, {host['cores']} cores, torch {host['torch']} "
        f"({host['torch_threads']} threads, {host['cpu_capability']}, "
        f"bf16 instructions: {'yes' if host['cpu_bf16'] else 'no'}); device {host['device']}"
        + (f" ({host['gpu']})" if host.get("gpu") else "")
        + f"; 1-min load average at start {host['load_avg_1min']:.1f}; "
        f"total {results['wall_s']:.0f} s.",
        "",
        "Ratios are medians of per-round ratios of interleaved runs (their range in brackets).",
        "",
        "| section | measurement | value | notes |",
        "|---|---|---|---|",
    ]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    lines += ["", "Targets:", *(_target_line(t) for t in results.get("targets", []))]
    return "\n".join(lines) + "\n"


def write(results: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """``<out_dir>/<host kind>.json`` (everything measured) and ``.md`` (the table)."""
    kind = results["host"]["kind"]
    json_path, md_path = out_dir / f"{kind}.json", out_dir / f"{kind}.md"
    write_json(json_path, _plain(results))
    write_text(md_path, render(results))
    return json_path, md_path


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
