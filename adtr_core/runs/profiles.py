"""Parameter profiles: ``smoke``, ``quick`` and ``paper``.

A profile is a YAML file in ``adtr_core/runs/profiles/``. Its ``run`` block holds the
settings of one ADTR run (image size, backbone, widths, epochs, optimiser, seed,
device), written once; one section per notebook (keyed by the notebook's stem, e.g.
``02_train_category``) and one for the CLI's ``adtr train`` (``train``) hold the rest.
A section with a ``run:`` key takes the ``run`` block, overriding the keys it lists
there (``05_ablations: {run: {image_size: 128}, ...}``), so notebooks that share a run
cannot drift apart. :func:`profile_params` returns a section merged with its run
settings: the parameters of that notebook under the profile.

- ``smoke``: seconds per notebook; the tests execute every notebook with it.
- ``quick``: the default of ``make figures``: every notebook on the embedded real
  MVTec AD bottle category (03 and 04 also on the demo textures), on CPU, all within
  15 minutes on a 2-core machine. Image size, training budget and width are shrunk
  (never the kind of model); captions say so.
- ``paper``: the paper's settings; for a GPU; uses MVTec AD and CIFAR when
  ``MVTEC_ROOT`` / ``CIFAR_ROOT`` are set.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import yaml

PROFILE_DIR = Path(__file__).resolve().parent / "profiles"
PROFILES = ("smoke", "quick", "paper")
RUN = "run"  # the block of run settings, and the key by which a section takes it


@cache
def _load(name: str) -> dict:
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}: choose one of {', '.join(PROFILES)}")
    with open(PROFILE_DIR / f"{name}.yaml") as fh:
        return yaml.safe_load(fh) or {}


def _section(profile: str, section: str) -> dict:
    data = _load(profile)
    if section not in data or section == RUN:
        raise ValueError(
            f"profile {profile!r} has no section {section!r}; "
            f"sections: {', '.join(profile_sections(profile))}"
        )
    return dict(data[section] or {})


def profile_run(profile: str, section: str) -> dict | None:
    """The run settings of one section: the profile's ``run`` block with the section's overrides.

    Returns:
        ``{image_size: ..., epochs: ..., ...}`` (ExperimentConfig fields), or None when the
        section does not take the run block (notebook 01).

    Raises:
        ValueError: the profile or the section does not exist, or an override names a key
            the ``run`` block does not have.
    """
    values = _section(profile, section)
    if RUN not in values:
        return None
    base = dict(_load(profile).get(RUN) or {})
    overrides = dict(values[RUN] or {})
    unknown = sorted(set(overrides) - set(base))
    if unknown:
        raise ValueError(
            f"profile {profile!r}, section {section!r}: run override(s) {', '.join(unknown)} "
            f"are not run settings ({', '.join(base)})"
        )
    return {**base, **overrides}


def profile_params(profile: str, section: str) -> dict:
    """The parameters of one notebook (or ``"train"``) under ``profile``: its run settings
    (when it takes them) followed by the section's own keys.

    Raises:
        ValueError: the profile or the section does not exist.
    """
    run = profile_run(profile, section) or {}
    own = {k: v for k, v in _section(profile, section).items() if k != RUN}
    return {**run, **own}


def profile_sections(profile: str) -> list[str]:
    """The notebook sections (and ``train``) of a profile, without the ``run`` block."""
    return sorted(k for k in _load(profile) if k != RUN)
