"""Build the project's wheel the way a fresh clone would: from the files git tracks (or would
track), copied to a scratch folder, so nothing left in the checkout (an old `build/` or
`*.egg-info`) can put files into the wheel that a clone's wheel would lack."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "deploy" / "Dockerfile"


def dockerfile_requirements() -> list[str]:
    """The quoted requirement specs of the Dockerfile's runtime `RUN pip install` step."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    steps = [line for line in text.splitlines() if re.match(r"\s*RUN pip install\s+\"", line)]
    assert len(steps) == 1, f'expected one `RUN pip install "..."` step in {DOCKERFILE}'
    return re.findall(r'"([^"]+)"', steps[0])


def clean_source_copy(destination: Path) -> Path:
    """The checkout's tracked and untracked-but-not-ignored files (symlinks kept as links)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO, check=True, capture_output=True, text=True,
    ).stdout.split("\0")  # fmt: skip
    for name in filter(None, listed):
        source, target = REPO / name, destination / name
        if not source.exists() and not source.is_symlink():
            continue  # deleted in the working tree
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            os.symlink(os.readlink(source), target)
        else:
            shutil.copy2(source, target)
    return destination


def build_wheel(scratch: Path) -> Path:
    """The wheel of a clean copy of the checkout, built in `scratch`."""
    source = clean_source_copy(scratch / "source")
    wheels = scratch / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(wheels), str(source)],
        check=True, timeout=600,
    )  # fmt: skip
    (wheel,) = wheels.glob("gpuparley-*.whl")
    return wheel
