"""Ray: the checks of `ray_cluster_checks.py` on a real local Ray cluster, and the one-line
refusal without the `ray` extra.

The cluster checks run in a child pytest inside a network namespace that has only the loopback
interface (`ray_helpers.in_loopback_namespace`), so nothing they start can reach or advertise any
address but 127.0.0.1; the child starts and tears down the cluster itself.
"""

from __future__ import annotations

import os
import socket
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


def test_an_address_nothing_answers_at_is_one_line_at_once(tmp_path: Path) -> None:
    """Before: Ray waited a minute or more at such an address (its GCS retries), then failed in
    a page of logs. Now a `host:port` must take a TCP connection first (5 s at most)."""
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{probe.getsockname()[1]}"
    with pytest.raises(ray_cluster.RayAddressError, match=f"--address {closed}: nothing answers"):
        ray_cluster.check_reachable(closed)
    args = ["eval", "--scenario", "tiny", "--seeds", "0", "--policies", "first-fit"]
    result = CliRunner().invoke(app, [*args, "--address", closed, "--out", str(tmp_path)])
    assert result.exit_code == 2 and "nothing answers there" in result.output, result.output
    with socket.socket() as head:  # something that answers passes; auto and ray:// are Ray's
        head.bind(("127.0.0.1", 0))
        head.listen()
        ray_cluster.check_reachable(f"127.0.0.1:{head.getsockname()[1]}")
    for address in ("auto", "ray://127.0.0.1:1"):
        ray_cluster.check_reachable(address)
