"""Project-level checks: dependency lists agree, profiles load, atomic writes."""

from __future__ import annotations

import re
import tomllib

import pytest
import yaml

from adtr_core import io, paths
from adtr_core.runs.profiles import PROFILES, profile_params, profile_sections


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_lists_the_pyproject_dependencies():
    root = paths.repo_root()
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["dev"]
    env = yaml.safe_load((root / "environment.yml").read_text())
    pip_lists = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_lists) == 1, "environment.yml needs exactly one pip: section"
    assert sorted(pip_lists[0]) == sorted(wanted), "environment.yml and pyproject.toml disagree"
    assert {_name(r) for r in pip_lists[0]} == {_name(r) for r in wanted}


def test_makefile_pins_the_torch_pair_that_pyproject_allows():
    makefile = (paths.repo_root() / "Makefile").read_text()
    pinned = dict(re.findall(r"(torch|torchvision)==([\d.]+)", makefile))
    project = tomllib.loads((paths.repo_root() / "pyproject.toml").read_text())["project"]
    caps = dict(
        m
        for d in project["dependencies"]
        for m in re.findall(r"^(torch|torchvision)>=[\d.]+,<=([\d.]+)$", d)
    )
    assert pinned == caps


def test_profiles_share_their_sections():
    sections = [set(profile_sections(p)) for p in PROFILES]
    assert sections[0] == sections[1] == sections[2]
    assert "train" in sections[0]


def test_unknown_profile_and_section_are_refused():
    with pytest.raises(ValueError, match="unknown profile"):
        profile_params("fast", "train")
    with pytest.raises(ValueError, match="no section"):
        profile_params("smoke", "99_missing")


def test_atomic_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "out.json"
    io.write_json(target, {"a": 1})

    def broken_writer(path):
        path.write_text("half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        io.atomic_write(target, broken_writer)
    assert io.read_json(target) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


RUN_KEYS = (
    "image_size", "backbone", "stages", "hidden_dim", "dim_feedforward", "num_encoder_layers",
    "num_decoder_layers", "num_heads", "epochs", "batch_size", "lr", "weight_decay",
    "lr_milestones", "seed",
)  # fmt: skip


@pytest.mark.parametrize("profile", PROFILES)
def test_notebooks_that_share_runs_keep_equal_run_settings(profile):
    """02's run is 03's, 04's, 06's and 08's: a drift would silently retrain instead of reuse."""
    base = profile_params(profile, "02_train_category")
    for section in ("03_detection_localization_tables", "04_score_maps", "06_adtr_plus",
                    "08_feature_tsne"):  # fmt: skip
        other = profile_params(profile, section)
        drift = {k: (base.get(k), other.get(k)) for k in RUN_KEYS if base.get(k) != other.get(k)}
        assert not drift, f"{profile}: {section} differs from 02_train_category: {drift}"
