"""What the market controller checks and retries before it starts: the host matches the
scenario, and its first request is tried again while its RBAC is not yet in effect."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from gpuparley.deploy.gpu_resources import env_node_resources
from gpuparley.deploy.kube import Forbidden, Kube
from gpuparley.envs.scenario import Scenario

log = logging.getLogger("gpuparley.market")
T = TypeVar("T")


class MarketSetupError(RuntimeError):
    """The host cluster does not match the scenario the market was started with."""


def check_host_nodes(kube: Kube, scenario: Scenario) -> None:
    """Every node of the scenario's cluster exists on the host with the GPU resources the market
    will lease (otherwise leases would name capacity the scheduler cannot bind)."""
    found = {node["metadata"]["name"]: node for node in kube.list("nodes")}
    problems = []
    for node in scenario.build_cluster().nodes:
        want = env_node_resources(node)
        host = found.get(node.name)
        if host is None:
            problems.append(f"node {node.name} is missing")
            continue
        have = (host.get("status") or {}).get("allocatable") or {}
        for resource, count in want.items():
            if str(have.get(resource)) != str(count):
                problems.append(
                    f"node {node.name}: {resource} is {have.get(resource)!r}, want {count}"
                )
    if problems:
        raise MarketSetupError(
            "the host cluster does not match the scenario's cluster: "
            + "; ".join(problems[:10])
            + " (create the nodes with `gpuparley cluster up --scenario` for this scenario)"
        )


def until_authorised(step: Callable[[], T], seconds: float = 15.0) -> T:
    """Run the market's first request, again while RBAC refuses it (403), for up to `seconds`.

    The apiserver's authorizer learns bindings from a watch, so a market started the moment its
    RBAC was applied (`deploy apply`, the test rig) can be refused for a moment; a 403 that
    lasts longer is a real misconfiguration and is raised."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return step()
        except Forbidden as exc:
            if time.monotonic() >= deadline:
                raise
            log.warning(
                "refused at start-up (RBAC not yet in effect?); retrying", extra={"error": str(exc)}
            )
            time.sleep(0.5)
