"""One in-cluster market run on fresh local planes, with a hook for faults while it goes.

Shared by the end-to-end tests: it brings up a host plane with the scenario's fake GPU nodes and
one plane per agent, applies the bundles, submits the workload, starts the market and the
negotiators as processes, samples the invariants throughout (`observer.py`), waits for the market
to finish and every agent pod to be marked Succeeded, and tears everything down.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpuparley.deploy import objects
from gpuparley.deploy.cluster import build, nodes, planes
from gpuparley.deploy.kube import Kube
from gpuparley.deploy.trace import simulated_trace
from gpuparley.envs.resources import checkpoints_dir, scenarios_dir
from gpuparley.envs.scenario import load_scenario
from gpuparley.policy.specs import parse_negotiator

from .helpers import wait_for
from .market_rig import MarketRig
from .observer import Observations, Observer

SCENARIO = "cluster-e2e"
SEED = 0
AGENTS = ("alpha", "beta", "gamma")
POLICY_FILE = checkpoints_dir() / "default" / "policy.onnx"
DEFAULT_POLICY = f"learned:{POLICY_FILE}"


@dataclass
class Run:
    """What a run left behind for the tests to look at."""

    rig: MarketRig
    status: dict[str, Any] = field(default_factory=dict)
    trace: list[dict[str, Any]] = field(default_factory=list)
    seen: Observations | None = None
    denials: dict[str, int] = field(default_factory=dict)
    attacks: list[dict[str, Any]] = field(default_factory=list)
    final_agent_pods: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    markets: list[str] = field(default_factory=list)  # the market processes' names
    faults: dict[str, Any] = field(default_factory=dict)  # what a test's `during` did
    leases_left: list[dict[str, Any]] = field(default_factory=list)  # GPULeases at the end


BARGAIN_SHARES = {"alpha": 0.2, "beta": 0.2, "gamma": 0.6}


def bargaining_scenario(directory: Path) -> Path:
    """`cluster-e2e` with `mechanism: bargain` and uneven quota shares (alpha and beta own a
    fifth each, gamma three fifths), so that agents borrow quota from each other."""
    doc = yaml.safe_load((scenarios_dir() / f"{SCENARIO}.yaml").read_text())
    doc["name"] = f"{SCENARIO}-bargain"
    doc["market"]["mechanism"] = "bargain"
    for agent in doc["agents"]:
        agent["quota_share"] = BARGAIN_SHARES[agent["name"]]
    path = directory / f"{SCENARIO}-bargain.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def simulated(
    scenario: str, mechanism: str | None = None, policy_spec: str = DEFAULT_POLICY
) -> list[dict[str, Any]]:
    """The simulator's lease trace for `scenario` with a negotiator policy (the shipped learned
    one by default), as in a trace file."""
    policy = parse_negotiator(policy_spec).negotiator(backend="onnxruntime")
    trace = simulated_trace(load_scenario(scenario), SEED, policy, mechanism=mechanism)
    return json.loads(json.dumps([e.to_json() for e in trace]))  # tuples -> lists


def market_epoch(host: Kube) -> int:
    """The epoch in the market's published status (0 before the first one)."""
    status = host.get("configmaps", objects.MARKET_NAMESPACE, "gpuparley-market")
    return int(json.loads(status["data"]["status.json"])["epoch"]) if status else 0


def wait_for_epoch(run: Run, epoch: int) -> None:
    admin = Kube(run.rig.state.host.kubeconfig)
    try:
        wait_for(f"market epoch {epoch}", lambda: market_epoch(admin) >= epoch, timeout=120)
    finally:
        admin.close()


def assert_one_lease_at_a_time(trace: list[dict[str, Any]]) -> None:
    """No job ever held two leases at once, and every lease signed was released."""
    active: dict[str, str] = {}
    for event in trace:
        if event["event"] == "signed":
            assert event["job"] not in active, event
            active[event["job"]] = event["lease_id"]
        elif event["event"] == "released":
            assert active.pop(event["job"]) == event["lease_id"]
    assert active == {}


@contextmanager
def market_run(
    state_dir: Path,
    during: Callable[[Run], None],
    *,
    replicas: dict[str, int] | None = None,
    substep_timeout: float = 15.0,
    hostile: frozenset[str] = frozenset(),
    market_replicas: int = 1,
    scenario: str = SCENARIO,
    policy: str = DEFAULT_POLICY,
    market_args: tuple[str, ...] = (),
) -> Iterator[Run]:
    missing = build.missing_binaries()
    if missing:
        pytest.fail(f"component binaries missing: {missing}; run `{build.BUILD_COMMAND}`")
    state = planes.up(
        state_dir,
        nodes.fake_nodes_from_scenario(scenario),
        AGENTS,
        scenario=scenario,
        die_with_parent=True,
    )
    rig = MarketRig(state, scenario, SEED, policy, state_dir / "logs")
    rig.substep_timeout = substep_timeout
    rig.hostile = hostile
    rig.market_args = market_args
    run = Run(rig)
    observer: Observer | None = None
    try:
        rig.prepare()
        observer = Observer(state, list(AGENTS))
        observer.start()
        run.markets = rig.start_all(replicas, market_replicas=market_replicas)
        during(run)
        run.status = rig.wait_market(timeout=300, names=run.markets)
        run.trace = rig.trace()
        agent_planes = {agent: Kube(state.agent(agent).kubeconfig) for agent in AGENTS}

        def all_finished() -> bool:
            for agent, plane in agent_planes.items():
                run.final_agent_pods[agent] = plane.list("pods", "default")
            pods = [p for ps in run.final_agent_pods.values() for p in ps]
            return all(p["status"].get("phase") == "Succeeded" for p in pods)

        # The negotiators mark finished jobs' pods Succeeded at their next reconcile.
        wait_for("every agent pod to be marked Succeeded", all_finished, timeout=30)
        run.seen = observer.stop()
        observer = None
        run.attacks = rig.attacks()
        yield run
    except BaseException:
        for log in sorted(rig.log_dir.glob("*.log")):
            print(f"---- {log.stem} ----\n{rig.log_tail(log.stem)}")
        raise
    finally:
        try:
            if observer is not None:
                observer.stop()
        finally:  # processes and planes go even when the observer failed
            rig.stop()
            planes.down(state_dir)
