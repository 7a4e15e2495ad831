"""Leader election of negotiator replicas on a real apiserver's coordination.k8s.io Lease."""

from __future__ import annotations

import threading
import time

import pytest

from gpuparley.deploy.cluster import planes
from gpuparley.deploy.kube import Kube
from gpuparley.deploy.leader import LeaderElector

pytestmark = pytest.mark.cluster


def _electors(cluster: planes.LocalPlanes, name: str, count: int) -> list[LeaderElector]:
    kube = Kube(cluster.host.agent_kubeconfigs["agent-alpha"])  # the agent's own credentials
    return [
        LeaderElector(kube, "agent-alpha", name, f"replica-{i}", duration=2.0) for i in range(count)
    ]


def test_one_leader_then_handover_on_release_and_on_expiry(cluster: planes.LocalPlanes) -> None:
    first, second = _electors(cluster, "election-handover", 2)
    assert first.try_acquire_or_renew() and first.is_leader
    assert not second.try_acquire_or_renew() and not second.is_leader
    assert first.try_acquire_or_renew()  # renewing keeps it
    first.release()
    assert not first.is_leader
    assert second.try_acquire_or_renew()  # released: taken at once
    assert not first.try_acquire_or_renew()
    time.sleep(2.3)  # the leader stops renewing (crash): its lease expires
    assert not second.is_leader  # it stopped trusting its own leadership before expiry
    assert first.try_acquire_or_renew()
    lease = first.kube.get("leases", "agent-alpha", "election-handover")
    assert lease is not None
    assert lease["spec"]["holderIdentity"] == "replica-0"
    assert lease["spec"]["leaseTransitions"] == 2


def test_racing_replicas_never_both_lead(cluster: planes.LocalPlanes) -> None:
    electors = _electors(cluster, "election-race", 4)
    for _round in range(5):
        barrier = threading.Barrier(len(electors))
        results: dict[int, bool] = {}
        threads = [
            threading.Thread(target=_contend, args=(barrier, results, i, elector))
            for i, elector in enumerate(electors)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sum(results.values()) == 1, results
        winner = electors[next(i for i, won in results.items() if won)]
        winner.release()


def _contend(
    barrier: threading.Barrier, results: dict[int, bool], i: int, elector: LeaderElector
) -> None:
    barrier.wait()
    results[i] = elector.try_acquire_or_renew()
