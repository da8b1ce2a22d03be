"""Threads on a busy machine: the thread rule against 1 and 2 fixed threads, idle and loaded.

Each variant trains the quick profile's ADTR (``training.profile_config``) on cached demo
features for a few epochs in a fresh process, so that each gets its own OpenMP runtime:

- ``1 thread`` and ``2 threads`` (all cores): ``torch.set_num_threads`` and OpenMP's
  default wait policy, as a plain torch program runs;
- ``rule``: ``adtr_core.runs.threads`` (threads from the free cores, re-chosen every epoch),
  as ``adtr train``, the notebooks and the sweeps run;
- ``2 threads, passive``: 2 threads with ``OMP_WAIT_POLICY=PASSIVE`` (waiting threads
  sleep), the wait policy the rule does not use.

Each runs on an idle machine and beside one competing CPU-bound process (a Python busy
loop, one core). The row of each case is the median epoch time after a warm-up epoch;
the ratios are a variant's epoch against the best fixed choice of the same case, and the
loaded epoch against the idle one. Each process also pays its start-up (about 5 s).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.harness import Plan

VARIANTS = ("1 thread", "2 threads", "rule", "2 threads, passive")
CASES = ("idle", "one competing process")
_BUSY_LOOP = "while True: pass"


def _worker(feature_file: str, variant: str, epochs: int, cfg_json: str) -> dict[str, Any]:
    """Train ``epochs`` + 1 epochs on the saved features; return the epoch times."""
    from adtr_core.method.losses import l_norm
    from adtr_core.runs.config import ExperimentConfig
    from adtr_core.runs.experiment import build_model
    from adtr_core.runs.threads import ThreadRule
    from adtr_core.runs.train import Trainer

    cfg = ExperimentConfig.from_dict(json.loads(cfg_json))
    rule = ThreadRule("auto" if variant == "rule" else int(variant.split()[0]))
    rule.apply()
    feats = torch.load(feature_file, weights_only=True)  # (N, C, h, w)
    torch.manual_seed(0)
    model = build_model(cfg, feats.shape[1], tuple(feats.shape[-2:]))
    trainer = Trainer(
        model,
        lambda m, batch: l_norm(batch[0], m(batch[0])),
        (feats,),
        cfg.train_config("cpu", epochs=epochs + 1, checkpoint_every=0, progress=False),
        thread_rule=rule,
    )
    history = trainer.fit()
    return {"epoch_s": [row["time_s"] for row in history], "threads": rule.chosen}


def _run_variant(feature_file: str, variant: str, epochs: int, cfg_json: str) -> dict[str, Any]:
    env = dict(os.environ)
    env.pop("ADTR_THREADS", None)
    env.pop("OMP_WAIT_POLICY", None)
    if variant.endswith("passive"):
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "benchmarks.threads", feature_file, variant, str(epochs), cfg_json]
    done = subprocess.run(cmd, env=env, cwd=root, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"thread benchmark worker failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(plan: Plan, device: torch.device) -> dict[str, Any]:
    """Epoch times of every variant and case, and the ratios of the README's rows."""
    if device.type != "cpu":
        return {"skipped": "CPU only"}
    if plan.name == "tiny":  # six fresh processes: the smoke test runs one worker on its own
        return {"skipped": "not in the tiny plan"}
    from adtr_core.data.sources import open_split
    from adtr_core.runs.experiment import build_feature_extractor
    from adtr_core.runs.features import extract_features
    from benchmarks.training import profile_config

    cfg, note = profile_config(plan, device)
    data = open_split(cfg, "train")
    if plan.train_images is not None and plan.train_images < len(data):
        data = torch.utils.data.Subset(data, range(plan.train_images))
    feats = extract_features(build_feature_extractor(cfg), data, device=device).features
    epochs = 1  # timed, after a warm-up epoch: eight fresh processes in all
    cfg_json = json.dumps(cfg.to_dict())
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        feature_file = str(Path(tmp) / "features.pt")
        torch.save(feats.contiguous(), feature_file)
        for case in CASES:
            competitor = None
            if case != "idle":
                competitor = subprocess.Popen([sys.executable, "-c", _BUSY_LOOP])
                time.sleep(0.5)
            try:
                for variant in VARIANTS:
                    out = _run_variant(feature_file, variant, epochs, cfg_json)
                    timed = out["epoch_s"][1:] or out["epoch_s"]
                    results[f"{variant}, {case}"] = {
                        "epoch_s": statistics.median(timed),
                        "rounds_s": out["epoch_s"],
                        "threads": out["threads"],
                    }
            finally:
                if competitor is not None:
                    competitor.kill()
                    competitor.wait()
    summary: dict[str, Any] = {
        "what": f"{len(feats)} training images, {note}, {epochs} timed epoch(s)",
        "epochs": results,
    }
    for case in CASES:
        best = min(results[f"{v}, {case}"]["epoch_s"] for v in VARIANTS[:2])
        summary[f"rule / best fixed, {case}"] = results[f"rule, {case}"]["epoch_s"] / best
    for variant in VARIANTS:
        loaded = results[f"{variant}, {CASES[1]}"]["epoch_s"]
        summary[f"{variant}: loaded / idle"] = loaded / results[f"{variant}, idle"]["epoch_s"]
    return summary


if __name__ == "__main__":
    print(json.dumps(_worker(*sys.argv[1:3], int(sys.argv[3]), sys.argv[4])))
