"""Bad input to the long-running processes (`negotiator run`, `market run`, `workload submit`)
and to the commands' seeds: one line naming the option and what would be right, exit 2, before
anything is served, connected or written -- never a traceback from deep inside numpy, the
socket layer or the client, and never a run that starts with a setting that breaks it."""

from __future__ import annotations

import functools
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_host import unreachable_kubeconfig
from typer.testing import CliRunner

import gpuparley.deploy.negotiator as negotiator_module
import gpuparley.deploy.process_cli as process_cli
from gpuparley.cli import app
from gpuparley.deploy.kube import retrying

# `market run` and `negotiator run` point the root logger at the runner's stderr
pytestmark = pytest.mark.usefixtures("root_logging_restored")


@pytest.fixture
def kubeconfig(tmp_path: Path) -> str:
    """Loads, but its apiserver refuses every connection: a command past its checks fails on it
    (exit 1) instead of being refused with exit 2."""
    return str(unreachable_kubeconfig(tmp_path))


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


def _refused(args: list[str], option: str) -> str:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit
    ), result.exception
    assert "Traceback" not in result.output
    assert option in result.output, result.output
    return result.output


NEGOTIATOR = ["negotiator", "run", "--policy", "scripted:truthful", "--metrics-port", "0"]
MARKET = ["market", "run", "--scenario", "tiny", "--metrics-port", "0"]


@pytest.mark.parametrize(
    ("args", "option"),
    [
        ([*NEGOTIATOR, "--agent", "Bad_Name"], "--agent: 'Bad_Name' is not a DNS label"),
        ([*NEGOTIATOR, "--agent", "alpha", "--namespace", "Agent-Alpha"], "--namespace"),
        ([*NEGOTIATOR, "--agent", "alpha", "--workload-namespace", "a_b"], "--workload-namespace"),
        ([*NEGOTIATOR, "--agent", "alpha", "--resync-seconds", "0"], "--resync-seconds"),
        ([*NEGOTIATOR, "--agent", "alpha", "--resync-seconds", "nan"], "--resync-seconds"),
        ([*MARKET, "--mechanism", "vickrey"], "--mechanism"),
        ([*MARKET, "--seed", "-1"], "--seed"),
        ([*MARKET, "--substep-timeout", "-1"], "--substep-timeout"),
        ([*MARKET, "--placement-timeout", "inf"], "--placement-timeout"),
        ([*MARKET, "--max-epochs", "0"], "--max-epochs"),
        ([*MARKET, "--metrics-port", "70000"], "--metrics-port"),
        ([*MARKET, "--trace", "/dev/null/trace.jsonl"], "--trace"),
        ([*MARKET, "--metrics-address", "no-such-host.invalid"], "--metrics-address"),
        (["workload", "submit", "--scenario", "tiny", "--agent", "alpha"], "--agent"),
        (["workload", "submit", "--scenario", "tiny", "--agent", "bob", "--seed", "-2"], "--seed"),
        (
            ["workload", "submit", "--scenario", "tiny", "--agent", "bob", "--namespace", "B"],
            "--namespace",
        ),
        (["simulate", "--scenario", "tiny", "--seed", "-3"], "--seed"),
        (["scenario", "show", "tiny", "--seed", "-1"], "--seed"),
        (["eval", "--scenario", "tiny", "--seeds", "0", "--horizon", "inf"], "--horizon"),
        # --profile bogus: were --agents taken, the command stops there instead of starting planes
        (["cluster", "up", "--agents", "-1", "--profile", "bogus"], "--agents"),
    ],
)
def test_bad_input_is_one_line_naming_its_option(
    args: list[str], option: str, kubeconfig: str
) -> None:
    kubeconfig_option = {"negotiator": "--host-kubeconfig", "market": "--kubeconfig"}
    if args[0] in kubeconfig_option:
        args = [*args, kubeconfig_option[args[0]], kubeconfig]
    elif args[0] == "workload":
        args = [*args, "--kubeconfig", kubeconfig]
    _refused(args, option)


def test_a_taken_metrics_port_is_named_not_a_traceback(kubeconfig: str, busy_port: int) -> None:
    output = _refused([*MARKET, "--metrics-port", str(busy_port), "--kubeconfig", kubeconfig], "")
    assert f"--metrics-port: cannot listen on 127.0.0.1:{busy_port}" in output
    assert "0 for any free one" in output


def test_a_workload_submit_the_plane_refuses_is_an_error_not_zero_pods(kubeconfig: str) -> None:
    """Before: an unreachable plane (or an agent the scenario lacks) printed `pods_created: 0`
    and exit 0, as if every pod already existed."""
    args = ["workload", "submit", "--scenario", "tiny", "--agent", "agent-bob"]
    result = CliRunner().invoke(app, [*args, "--kubeconfig", kubeconfig])
    assert result.exit_code == 1, result.output
    assert "pods_created" not in result.output
    assert "--kubeconfig: could not create the pods in the agent's control plane" in result.output
    assert "Traceback" not in result.output


def test_a_negotiator_whose_host_stays_unreachable_gives_up_in_one_line(
    kubeconfig: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The start-up retries (60 s in production) are cut to one attempt; the process must then
    exit 1 with the reason, as the market does, not crash with the client's traceback."""
    monkeypatch.setattr(negotiator_module, "retrying", functools.partial(retrying, seconds=0))
    monkeypatch.setattr(process_cli, "_stop_flag", threading.Event)
    args = [*NEGOTIATOR, "--agent", "alpha", "--host-kubeconfig", kubeconfig]
    result = CliRunner().invoke(app, [*args, "--agent-kubeconfig", kubeconfig])
    assert result.exit_code == 1, result.output
    assert "error: gave up, the apiserver is unreachable" in result.output
    assert "Traceback" not in result.output
