"""Every command that writes checks its output folder before any work (`envs/folders.py`): a path
that cannot be a folder fails at once in one line naming its option, exit 2 -- not with a
traceback after the run whose results it was to hold (before: `simulate`, `eval`, `demo`,
`tune`, `export`, `scenario sample`, `protocol check` and `cluster up` all ended in
`NotADirectoryError` or `FileExistsError`, the model check after its whole search)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fake_host import unreachable_kubeconfig
from typer.testing import CliRunner

from gpuparley.cli import app
from gpuparley.envs.folders import FolderError, check_output_folder

# `market run` and `negotiator run` point the root logger at the runner's stderr
pytestmark = pytest.mark.usefixtures("root_logging_restored")

CHECKPOINT = Path(__file__).resolve().parents[1] / "checkpoints" / "default"


@pytest.fixture
def blocked(tmp_path: Path) -> Path:
    """A folder path with a file in its way."""
    (tmp_path / "a-file").write_text("")
    return tmp_path / "a-file" / "out"


def _refused(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.output, result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("command", "option"),
    [
        (["simulate", "--scenario", "tiny", "--out", "{folder}"], "--out"),
        (["eval", "--scenario", "tiny", "--seeds", "0", "--out", "{folder}"], "--out"),
        (["demo", "--out", "{folder}"], "--out"),
        (["tune", "--config", "smoke", "--seeds", "0", "--out", "{folder}"], "--out"),
        (
            ["train", "--config", "smoke", "--output-dir", "{folder}"],
            "--output-dir (or the config's output_dir)",
        ),
        (["export", str(CHECKPOINT), "--out", "{folder}/p.onnx"], "--out"),
        (["scenario", "sample", "--seed", "1", "--out", "{folder}/s.yaml"], "--out"),
        (["protocol", "check", "--scenario", "contention", "--out", "{folder}/r.json"], "--out"),
        (["cluster", "up", "--state-dir", "{folder}"], "--state-dir"),
        (["cluster", "build", "--cache-dir", "{folder}"], "--cache-dir"),
        (["protocol", "spin", "--cache-dir", "{folder}"], "--cache-dir"),
        (["market", "run", "--scenario", "tiny", "--trace", "{folder}/t.jsonl"], "--trace"),
    ],
    ids=lambda value: value[0] if isinstance(value, list) else None,
)
def test_an_output_folder_that_cannot_be_made_is_refused_before_any_work(
    command: list[str], option: str, blocked: Path, tmp_path: Path
) -> None:
    args = [arg.replace("{folder}", str(blocked)) for arg in command]
    if command[0] == "market":  # refused before it connects: the kubeconfig is never used
        args += ["--metrics-port", "0", "--kubeconfig", str(unreachable_kubeconfig(tmp_path))]
    _refused(args, f"{option}: cannot make the folder {blocked}")


@pytest.mark.parametrize(
    "command",
    [
        ["export", str(CHECKPOINT), "--out", "{folder}"],
        ["scenario", "sample", "--seed", "1", "--out", "{folder}"],
        ["protocol", "check", "--scenario", "contention", "--out", "{folder}"],
    ],
    ids=["export", "scenario-sample", "protocol-check"],
)
def test_a_file_output_that_names_a_folder_is_refused(command: list[str], tmp_path: Path) -> None:
    _refused([arg.replace("{folder}", str(tmp_path)) for arg in command], "is a folder; name")


def test_a_folder_is_checked_where_it_would_be_made_and_not_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    new = tmp_path / "new" / "deeper"
    assert check_output_folder(new, "--out") == new
    assert not (tmp_path / "new").exists()  # a refusal elsewhere must leave nothing behind
    # As root every folder is writable, so the permission is denied by hand here.
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != tmp_path)
    with pytest.raises(FolderError, match=f"--out: cannot write in {tmp_path} "):
        check_output_folder(new, "--out")
