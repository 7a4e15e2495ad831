"""The dependency split and the image recipe agree with each other (no network, no build).

`pip install gpuparley` must not pull the training stack; `gpuparley[train]` must; the negotiator
image (`deploy/Dockerfile`) installs exactly the plain install's dependencies, so `pip check`
holds there (checked for real, in a venv, by `test_negotiator_image.py`); and the two commands
that need torch say so in one line with the install command instead of a traceback.
"""

from __future__ import annotations

import re
import tomllib

import pytest
from typer.testing import CliRunner

from gpuparley.cli import app
from gpuparley.commands import console

from wheel_helpers import DOCKERFILE, REPO, dockerfile_requirements

TRAINING_DISTRIBUTIONS = {"torch", "stable-baselines3", "sb3-contrib", "tensorboard"}


def _project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower()


def test_the_plain_install_has_no_training_stack() -> None:
    core = {_name(r) for r in _project()["dependencies"]}
    assert not core & TRAINING_DISTRIBUTIONS, core & TRAINING_DISTRIBUTIONS
    train = {_name(r) for r in _project()["optional-dependencies"]["train"]}
    assert train >= {"torch", "stable-baselines3", "sb3-contrib"}
    assert "ray" not in core and {"ray"} == {
        _name(r) for r in _project()["optional-dependencies"]["ray"]
    }


def test_the_image_installs_exactly_the_plain_dependencies() -> None:
    assert sorted(dockerfile_requirements()) == sorted(_project()["dependencies"])


def test_the_image_copies_every_folder_the_package_maps() -> None:
    """`gpuparley/<folder>` are symlinks; a folder the image build does not copy would leave a
    dangling link and a wheel without that subpackage."""
    linked = sorted(p.name for p in (REPO / "gpuparley").iterdir() if p.is_symlink())
    copied = set(re.findall(r"^COPY (\S+) \./\1$", DOCKERFILE.read_text(), re.MULTILINE))
    assert linked and set(linked) <= copied, sorted(set(linked) - copied)


def test_the_makefile_installs_the_train_and_ray_extras_for_the_tests() -> None:
    assert "-e '.[dev,train,ray]'" in (REPO / "Makefile").read_text()


@pytest.mark.parametrize(
    ("args", "command"),
    [(["train", "--config", "default"], "train"), (["export", "x", "--out", "p.onnx"], "export")],
)
def test_training_commands_exit_2_with_the_install_hint_without_torch(
    monkeypatch: pytest.MonkeyPatch, args: list[str], command: str
) -> None:
    real = console.importlib.util.find_spec
    monkeypatch.setattr(
        console.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "torch" else real(name, *a),
    )
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert f"`gpuparley {command}` needs the training stack (torch not installed)" in lines[0]
    assert lines[0].endswith("pip install 'gpuparley[train]'")
