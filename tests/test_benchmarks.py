"""Smoke test of the benchmark code paths (``make bench``) at minimal sizes: no timing asserts."""

import json
import sys

import pytest
import torch

from adtr_core import paths

sys.path.insert(0, str(paths.repo_root()))  # the benchmarks/ folder is not an installed package

from adtr_core.method.model import ADTRConfig  # noqa: E402
from benchmarks import harness, peer, report  # noqa: E402
from benchmarks import run as bench  # noqa: E402


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow  # a minute: every section; the step section alone is in the default suite
def test_tiny_run_prints_one_table_and_writes_results(tmp_path, capsys, one_thread):
    results = bench.main(["--tiny", "--device", "cpu", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "| section | measurement | value | notes |" in out
    assert "Targets:" in out
    for section in ("inference", "epoch", "time_to_metric", "peer", "peers", "options"):
        assert section in results
    engine = results["engines"]["tf_efficientnet_lite0 b1"]
    assert engine["max_rel_score_diff"] < 1e-3 and engine["ratio"]["median"] > 0
    assert "ONNX Runtime / eager" in out and "bf16 / fp32, training epoch" in out
    assert results["precision"]["training epoch"]["ratio"]["median"] > 0
    assert {(r["backbone"], r["batch"]) for r in results["inference"]} == {
        ("tf_efficientnet_lite0", 1),
        ("tf_efficientnet_lite0", 2),
    }
    for r in results["inference"]:
        assert r["images_per_s"] > 0 and r["peak_mib"] > 0
        assert abs(sum(r["share"].values()) - 1) < 1e-6
    methods = {m["method"] for m in results["peers"]["methods"]}
    assert methods == {"ADTR quick", "ADTR paper", "PaDiM", "PatchCore"}
    assert "ADTR quick against PatchCore" in out and "growth 4 -> 8" in out
    bank = [g["state_mib"] for g in results["peers"]["growth"]["PatchCore"]]
    assert bank[1] > bank[0]  # the memory bank grows with the training set
    assert "step" in results  # its contents: test_tiny_step_section_...
    assert results["gpu_training"]["measured"] is False  # CPU: the GPU rows say so
    assert "not measured" in out
    kind = results["host"]["kind"]
    saved = json.loads((tmp_path / f"{kind}.json").read_text())
    assert saved["plan"] == "tiny"
    assert (tmp_path / f"{kind}.md").read_text().startswith("# adtr benchmarks")
    lines = [t for t in results["targets"] if t.get("measured") is not None]
    assert lines and all(isinstance(t["pass"], bool) for t in lines)


def test_tiny_step_section_reports_every_step_against_the_peak(capsys, one_thread):
    results = bench.main(["--tiny", "--device", "cpu", "--only", "step", "--no-write"])
    out = capsys.readouterr().out
    step = results["step"]
    for size in ("quick", "paper"):
        s = step["sizes"][size]
        bf16 = {"bf16"} if results["host"]["cpu_bf16"] else set()  # else emulated: skipped
        before = {"fp32, AdamW loop", "fp32, torch's dropout"}
        before.add("fp32, as before (torch's dropout, AdamW loop)")
        assert set(s["ms"]) == {"fp32"} | before | bf16
        assert s["peak_gflops"]["fp32"] > 0 and 0 < s["of_fp32_peak"]["fp32"]
        assert s["gflops"]["fp32"] == pytest.approx(s["step_flops"] / s["ms"]["fp32"] / 1e6)
    assert step["optimizer"]["max_abs_diff"]["foreach"] == 0  # the trainer's AdamW: the same
    assert "matrix-multiply peak, torch.mm 256x256" in out and "of the fp32 peak" in out
    assert "training step, quick size b2, fp32" in out and "quick-size step, fp32" in out
    bf16 = results["step"]["sizes"]["quick"]["ratios"].get("bf16 now / fp32 before")
    assert ("bf16 now / fp32 before" in out) == (bf16 is not None)
    assert "CPU keep mask / torch's dropout, whole step" in out


def test_fraction_of_the_peak_is_taken_per_round():
    from benchmarks import speed

    # 100 FLOPs in 1, 2, 4 s against a 1000-FLOP probe in 1, 1, 0.5 s: 10 %, 5 %, 1.25 %
    assert speed._fractions(100, [1.0, 2.0, 4.0], 1000, [1.0, 1.0, 0.5]) == 0.05


def test_ratio_is_median_of_per_round_ratios():
    r = harness.ratio([2.0, 4.0, 9.0], [1.0, 1.0, 3.0])
    assert r == {"median": 3.0, "min": 2.0, "max": 4.0}


def test_peak_memory_sees_a_large_allocation():
    with harness.PeakMemory(torch.device("cpu")) as mem:
        x = torch.ones(64 << 20, dtype=torch.uint8)  # 64 MiB, touched
        del x
    assert mem.peak_bytes >= 48 << 20


def test_peer_has_adtr_sizes_and_contract():
    cfg = ADTRConfig(in_channels=16, hidden_dim=32, num_heads=4, dim_feedforward=64, grid=(4, 4))
    model = peer.TorchTransformerPeer(cfg).eval()
    f = torch.randn(2, 16, 4, 4)
    out = model(f)
    assert out.shape == f.shape and torch.isfinite(out).all()


def test_figures_wall_reads_the_manifest(tmp_path):
    assert report.figures_wall(tmp_path)["measured"] is False  # no manifest yet
    manifest = {
        "schema": 1,
        "files": {},
        "notebooks": {
            "01_a": {"profile": "quick", "status": "ok", "wall_s": 10.0},
            "02_b": {"profile": "quick", "status": "ok", "wall_s": 5.5},
            "03_c": {"profile": "smoke", "status": "ok", "wall_s": 99.0},
        },
    }
    (tmp_path / "MANIFEST.json").write_text(json.dumps(manifest))
    wall = report.figures_wall(tmp_path)
    assert wall["measured"] and wall["total_s"] == 15.5
    assert set(wall["per_notebook_s"]) == {"01_a", "02_b"}
    assert not wall["whole_run"]

    # A whole pipeline run (two notebooks at once) is timed as one: its own wall time.
    from adtr_core import paths
    from adtr_core.figures.pipeline import discover_notebooks

    every = [nb.stem for nb in discover_notebooks(paths.notebooks_dir())]
    run = {"profile": "quick", "status": "ok", "jobs": 2, "notebooks": every, "wall_s": 12.0}
    (tmp_path / "MANIFEST.json").write_text(json.dumps({**manifest, "run": run}))
    wall = report.figures_wall(tmp_path)
    assert wall["whole_run"] and wall["total_s"] == 12.0 and wall["jobs"] == 2
    for partial in ({**run, "notebooks": every[:1]}, {**run, "status": "failed"}):
        (tmp_path / "MANIFEST.json").write_text(json.dumps({**manifest, "run": partial}))
        assert report.figures_wall(tmp_path)["total_s"] == 15.5  # not a whole run: the sum


def test_thread_benchmark_worker_trains_in_a_fresh_process(tmp_path):
    from adtr_core.runs.config import ExperimentConfig
    from benchmarks import threads

    cfg = ExperimentConfig(
        hidden_dim=32, num_encoder_layers=1, num_decoder_layers=1, num_heads=2,
        dim_feedforward=64, batch_size=4, epochs=1,
    )  # fmt: skip
    feats = tmp_path / "features.pt"
    torch.save(torch.randn(8, 40, 4, 4), feats)
    out = threads._run_variant(str(feats), "rule", 1, json.dumps(cfg.to_dict()))
    assert len(out["epoch_s"]) == 2 and all(t > 0 for t in out["epoch_s"])
    assert 1 <= out["threads"] <= harness.os.cpu_count()
