"""Where the project's data lives: configs in the repo, traces in the shared folder beside it.

Both can be moved with environment variables, so an installed copy (or CI's clone, which has
`shared/` beside it) finds them without flags: `GPUPARLEY_CONFIGS` and `GPUPARLEY_TRACES`.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def configs_dir() -> Path:
    return Path(os.environ.get("GPUPARLEY_CONFIGS", REPO_ROOT / "configs"))


def scenarios_dir() -> Path:
    return configs_dir() / "scenarios"


def traces_dir() -> Path:
    return Path(os.environ.get("GPUPARLEY_TRACES", REPO_ROOT.parent / "shared" / "traces"))
