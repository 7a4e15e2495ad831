"""The negotiator image's Python environment runs the negotiator's policy.

No container engine runs here, so the image itself is not built; instead a fresh venv gets
exactly the packages `deploy/Dockerfile` installs (read from the Dockerfile) plus the project
with `--no-deps`, as the image does, and runs the check the image's build ends with: load the
shipped ONNX policy and make one decision. The venv with the Dockerfile's packages is cached
outside the repo (keyed by the package list); the project is reinstalled every run.

Needs the package index (or a warm pip cache): marked `network`, so an offline run can skip it
with `-m "not network"`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from wheel_helpers import REPO, build_wheel

pytestmark = [pytest.mark.network, pytest.mark.slow]

DOCKERFILE = REPO / "deploy" / "Dockerfile"


def dockerfile_requirements() -> list[str]:
    """The quoted requirement specs of the Dockerfile's runtime `RUN pip install` step."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    steps = [line for line in text.splitlines() if re.match(r"\s*RUN pip install\s+\"", line)]
    assert len(steps) == 1, f'expected one `RUN pip install "..."` step in {DOCKERFILE}'
    return re.findall(r'"([^"]+)"', steps[0])


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "gpuparley"


@pytest.fixture(scope="module")
def image_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    requirements = dockerfile_requirements()
    key = hashlib.sha256(json.dumps([sys.version, requirements]).encode()).hexdigest()[:16]
    env_dir = cache_root() / f"image-venv-{key}"
    python = env_dir / "bin" / "python"
    if not (env_dir / ".ready").is_file():
        shutil.rmtree(env_dir, ignore_errors=True)
        venv.create(env_dir, with_pip=True)
        pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*pip, *requirements], check=True, timeout=1200)
        (env_dir / ".ready").touch()
    wheel = build_wheel(tmp_path_factory.mktemp("wheel"))
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "--no-deps", "--force-reinstall", str(wheel)],
        check=True, timeout=600,
    )  # fmt: skip
    return python


def test_the_image_environment_has_no_training_stack_and_no_onnx(image_python: Path) -> None:
    code = (
        "import importlib.util as u\n"
        "absent = ('torch', 'stable_baselines3', 'onnx', 'gymnasium', 'pettingzoo')\n"
        "print([m for m in absent if u.find_spec(m) is not None])\n"
    )
    result = subprocess.run(
        [str(image_python), "-c", code], capture_output=True, text=True, check=True, cwd="/"
    )
    assert result.stdout.strip() == "[]"


def test_the_image_environment_loads_the_shipped_policy_and_decides(image_python: Path) -> None:
    result = subprocess.run(
        [str(image_python), "-m", "gpuparley.deploy.process_cli", "negotiator", "check"],
        capture_output=True, text=True, cwd="/", timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["policy"] == "learned:default"
    assert answer["source"].endswith("checkpoints/default/policy.onnx")
    assert "site-packages" in answer["source"]  # the installed copy, not the checkout
    assert answer["decision"] in ("pass", "bid")
