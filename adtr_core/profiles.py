"""Parameter profiles: ``smoke``, ``quick`` and ``paper``.

A profile is a YAML file in ``adtr_core/profiles/`` holding one mapping per
notebook (keyed by the notebook's stem, e.g. ``01_identical_mapping``) and one for
the CLI's ``adtr train`` (key ``train``). The notebooks receive their mapping as
papermill parameters; ``adtr train --profile`` uses the ``train`` mapping.

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


@cache
def _load(name: str) -> dict:
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}: choose one of {', '.join(PROFILES)}")
    with open(PROFILE_DIR / f"{name}.yaml") as fh:
        return yaml.safe_load(fh) or {}


def profile_params(profile: str, section: str) -> dict:
    """The parameters of one notebook (or ``"train"``) under ``profile``.

    Raises:
        ValueError: the profile or the section does not exist.
    """
    data = _load(profile)
    if section not in data:
        raise ValueError(
            f"profile {profile!r} has no section {section!r}; sections: {', '.join(sorted(data))}"
        )
    return dict(data[section] or {})


def profile_sections(profile: str) -> list[str]:
    return sorted(_load(profile))
