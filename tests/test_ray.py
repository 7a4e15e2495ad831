"""Ray: the checks of `ray_cluster_checks.py` on a real local Ray cluster, and the one-line
refusal without the `ray` extra.

The cluster checks run in a child pytest inside a network namespace that has only the loopback
interface (`ray_helpers.in_loopback_namespace`), so nothing they start can reach or advertise any
address but 127.0.0.1; the child starts and tears down the cluster itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpuparley.cli import app
from gpuparley.train import ray_cluster

from ray_helpers import in_loopback_namespace, ray_environment

CHECKS = Path(__file__).with_name("ray_cluster_checks.py")
CHILD_TIMEOUT = 1800


def namespaces_available() -> bool:
    probe = subprocess.run(in_loopback_namespace(["true"]), capture_output=True)
    return probe.returncode == 0


@pytest.mark.ray
@pytest.mark.slow
def test_ray_cluster_checks(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    if not namespaces_available():
        pytest.skip("needs `unshare --net` (root or user namespaces) and iproute2's `ip`")
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(CHECKS)]
    child = subprocess.run(
        in_loopback_namespace(command),
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
        cwd=CHECKS.parent.parent,
        env={**os.environ, **ray_environment(tmp_path)},
    )
    assert child.returncode == 0, child.stdout[-6000:] + child.stderr[-3000:]
    assert " passed" in child.stdout and "failed" not in child.stdout


def test_eval_on_ray_without_the_extra_names_the_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(ray_cluster, "ray_installed", lambda: False)
    for extra in (["--ray"], ["--address", "127.0.0.1:6379"]):
        result = CliRunner().invoke(
            app, ["eval", "--scenario", "tiny", "--seeds", "0", "--out", str(tmp_path), *extra]
        )
        assert result.exit_code == 2
        assert "pip install 'gpuparley[ray]'" in " ".join(result.output.split())
