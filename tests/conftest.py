"""Shared test settings: small thread counts, offline hubs, and run/figure folders in tmp.

Results folders (``ADTR_RUNS``), figures (``ADTR_FIGURES``) and hand-run outputs
(``ADTR_SCRATCH``) go to a session temporary
folder, so no test writes into the repository's ``runs/`` or ``figures/``. The cache of
demo data and backbone features (``ADTR_CACHE``, default ``.cache/adtr``) is shared with
normal use: it is keyed by content and makes the tests fast.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("OMP_NUM_THREADS", "2")
# A fixed count for the package's thread rule too: the tests' numbers must not depend on
# how busy the machine is.
os.environ.setdefault("ADTR_THREADS", os.environ["OMP_NUM_THREADS"])

import torch  # noqa: E402 - after the thread settings above

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(scope="session", autouse=True)
def _tmp_outputs(tmp_path_factory: pytest.TempPathFactory):
    """Point ``ADTR_RUNS`` and ``ADTR_FIGURES`` at a session temporary folder."""
    root = tmp_path_factory.mktemp("adtr_outputs")
    saved = {k: os.environ.get(k) for k in ("ADTR_RUNS", "ADTR_FIGURES", "ADTR_SCRATCH")}
    os.environ["ADTR_RUNS"] = str(root / "runs")
    os.environ["ADTR_FIGURES"] = str(root / "figures")
    os.environ["ADTR_SCRATCH"] = str(root / "scratch")
    yield root
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def tiny_config():
    """A smoke-sized ExperimentConfig (demo data, 64 px, one epoch, a two-layer transformer)."""
    from adtr_core.runs.config import ExperimentConfig

    return ExperimentConfig(
        data="demo",
        category="brick",
        image_size=64,
        epochs=1,
        hidden_dim=32,
        num_encoder_layers=1,
        num_decoder_layers=1,
        num_heads=2,
        dim_feedforward=64,
        backbone="tf_efficientnet_lite0",
        device="cpu",
    )


@pytest.fixture(scope="session")
def demo_data():
    """The demo root (``paths.demo_root()``), built on first use, so no test depends on
    another having built it before."""
    from adtr_core.data.demo import ensure_demo

    return ensure_demo()
