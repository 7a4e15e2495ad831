"""Where the data the package ships lives, and how a user points somewhere else.

Everything gpuparley needs at run time is package data, found with `importlib.resources`, so a
plain `pip install` works from any directory and nothing is read from beside the checkout:

* bundled scenarios, training configs and scenario-generator ranges: `gpuparley.configs`
  (`scenarios/`, `train/`, `generator/`);
* the openb trace (dev split, GPU and all-node lists): `gpuparley.envs.workloads/traces/openb`;
* shipped checkpoints (the default learned negotiator): `gpuparley.checkpoints`.

Two environment variables override the bundled copies: `GPUPARLEY_CONFIGS` (a folder holding
`scenarios/`, `train/` and `generator/`) and `GPUPARLEY_TRACES` (a folder holding `openb/`).
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path


def _package_dir(package: str) -> Path:
    """The folder of an installed package (installs from zip archives are not supported)."""
    folder = files(package)
    if not isinstance(folder, Path):
        raise RuntimeError(f"{package} is not installed as plain files ({folder!r})")
    return folder


def configs_dir() -> Path:
    """The folder with `scenarios/`, `train/` and `generator/` (bundled, or `GPUPARLEY_CONFIGS`)."""
    override = os.environ.get("GPUPARLEY_CONFIGS")
    return Path(override) if override else _package_dir("gpuparley.configs")


def scenarios_dir() -> Path:
    return configs_dir() / "scenarios"


def train_configs_dir() -> Path:
    return configs_dir() / "train"


def generator_configs_dir() -> Path:
    """Ranges files of the scenario generator (`envs.generator_schema`)."""
    return configs_dir() / "generator"


def traces_dir() -> Path:
    """The folder holding `openb/` (bundled, or `GPUPARLEY_TRACES`)."""
    override = os.environ.get("GPUPARLEY_TRACES")
    return Path(override) if override else _package_dir("gpuparley.envs.workloads") / "traces"


def checkpoints_dir() -> Path:
    """The shipped checkpoints (`default`: the learned negotiator the demo plays)."""
    return _package_dir("gpuparley.checkpoints")
