"""The negotiator image's Python environment is consistent and runs the negotiator's policy.

No container engine runs here, so the image itself is not built; instead a fresh venv gets
exactly the packages `deploy/Dockerfile` installs (read from the Dockerfile) plus the project
with `--no-deps`, as the image does, and runs the checks the image's build ends with: `pip
check` (the wheel's declared dependencies are all there: torch is only in the `train` extra),
then load the shipped ONNX policy and make one decision. The commands that need the training
stack must say so in one line (exit 2) there. The venv with the Dockerfile's packages is cached
outside the repo (keyed by the package list); the project is reinstalled every run.

Needs the package index (or a warm pip cache): marked `network`, so an offline run can skip it
with `-m "not network"`.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from wheel_helpers import build_wheel, dockerfile_requirements

pytestmark = [pytest.mark.network, pytest.mark.slow]


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "gpuparley"


@pytest.fixture(scope="module")
def image_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    requirements = dockerfile_requirements()
    key = hashlib.sha256(json.dumps([sys.version, requirements]).encode()).hexdigest()[:16]
    env_dir = cache_root() / f"image-venv-{key}"
    python = env_dir / "bin" / "python"
    env_dir.parent.mkdir(parents=True, exist_ok=True)
    # Test workers (pytest -n) may build the same venv at once: one builds, the others wait.
    with open(env_dir.parent / f"{env_dir.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
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


def test_the_image_environment_has_no_training_stack(image_python: Path) -> None:
    code = (
        "import importlib.util as u\n"
        "absent = ('torch', 'stable_baselines3', 'sb3_contrib', 'tensorboard')\n"
        "print([m for m in absent if u.find_spec(m) is not None])\n"
    )
    result = subprocess.run(
        [str(image_python), "-c", code], capture_output=True, text=True, check=True, cwd="/"
    )
    assert result.stdout.strip() == "[]"


def test_the_image_environment_passes_pip_check(image_python: Path) -> None:
    result = subprocess.run(
        [str(image_python), "-m", "pip", "check", "--disable-pip-version-check"],
        capture_output=True, text=True, cwd="/", timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "args", [["train", "--config", "default"], ["export", "/nonexistent", "--out", "p.onnx"]]
)
def test_training_commands_name_the_extra_when_torch_is_missing(
    image_python: Path, args: list[str], tmp_path: Path
) -> None:
    result = subprocess.run(
        [str(image_python), "-c", "from gpuparley.cli import main; main()", *args],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "pip install 'gpuparley[train]'" in lines[0]
    assert "Traceback" not in result.stderr


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


def test_the_plain_install_evaluates_without_the_training_stack(
    image_python: Path, tmp_path: Path
) -> None:
    """Simulator, incumbents, scripted and learned (ONNX) negotiators and the report all run
    from the plain install: only `train` and `export` need the `train` extra."""
    args = ["eval", "--scenario", "tiny", "--seeds", "0", "--out", str(tmp_path / "eval"),
            "--policies", "fgd,scripted:truthful,learned:checkpoints/default"]  # fmt: skip
    result = subprocess.run(
        [str(image_python), "-c", "from gpuparley.cli import main; main()", *args],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
        env={**os.environ, "MPLCONFIGDIR": str(tmp_path / "mpl")},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "eval" / "report.md").is_file()
