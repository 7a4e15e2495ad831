"""The market's writes outside its journal, without a cluster: a deposed replica binds no pod and
deletes no pod (the fence `MarketState.confirm`), a restarted market releases ended leases before
it signs new ones, and it sweeps the pods no lease covers at once instead of at the next clearing.

A restarted market also labels the GPULeases an older market wrote without the lease-shard label
(the lease-fit admission's parameters are routed by it).

These are the rules of the protocol model (`deploy/protocol/README.md`: "pods bound only after a
guarded state write", "a lease ends in two phases") as the journal-based controller keeps them.
"""

from __future__ import annotations

from typing import Any

import pytest
from fake_host import FakeKube, _controller, _host_pods, _lease

from gpuparley.deploy import objects
from gpuparley.deploy.market_controller import MarketController
from gpuparley.deploy.market_state import STATE_CONFIGMAP, StateError
from gpuparley.envs.market.messages import Release
from gpuparley.envs.scenario import load_scenario


def _waiting_gang(controller: MarketController, kube: FakeKube) -> list[dict[str, Any]]:
    """A gang lease the market holds, and both its pods on the host, fitting and unbound."""
    lease, _grant, pods = _host_pods("gang")
    controller.market.leases[lease.lease_id] = lease
    for pod in pods:
        pod["metadata"]["namespace"] = objects.agent_namespace(lease.holder)
        kube.add("pods", pod)
    return pods


def _stray_pod(namespace: str) -> dict[str, Any]:
    """A pod for the market naming no lease the market knows (the market polices it)."""
    return {
        "metadata": {"name": "stray", "namespace": namespace},
        "spec": {"schedulerName": objects.MARKET_SCHEDULER, "containers": []},
    }


def test_a_deposed_replica_binds_no_pod_and_deletes_no_pod() -> None:
    controller, kube = _controller()
    _waiting_gang(controller, kube)
    kube.add("pods", _stray_pod("agent-alpha"))
    head = {"metadata": {"name": STATE_CONFIGMAP, "namespace": objects.MARKET_NAMESPACE}}
    kube.add("configmaps", head)
    kube.objects["configmaps", objects.MARKET_NAMESPACE, STATE_CONFIGMAP]["metadata"][
        "resourceVersion"
    ] = "8"  # another replica wrote the state after this one's last write (7)
    controller.state._version = "7"
    with pytest.raises(StateError, match="no longer the leader"):
        controller.pods.admit(controller.pods.lease_pods())
    with pytest.raises(StateError, match="no longer the leader"):
        controller.pods.enforce()
    assert kube.bindings == []
    assert len(kube.list("pods")) == 3  # nothing deleted
    controller.state._version = "8"  # the state is this replica's: it acts
    controller.pods.admit(controller.pods.lease_pods())
    assert len(kube.bindings) == 2
    controller.pods.enforce()
    assert controller.pods.evicted == ["agent-alpha/stray"]


def test_a_market_with_nothing_to_write_reads_no_state() -> None:
    controller, kube = _controller()
    for pod in _waiting_gang(controller, kube):
        pod["spec"]["nodeName"] = pod["spec"]["nodeSelector"]["kubernetes.io/hostname"]  # bound
    controller.state._version = "7"  # would fail the fence: there is no state object
    controller.pods.admit(controller.pods.lease_pods())
    controller.pods.enforce()
    assert kube.bindings == [] and len(kube.list("pods")) == 2


def test_a_restarted_market_releases_ended_leases_before_it_signs_new_ones() -> None:
    controller, kube = _controller()
    ended = _lease("whole")
    signed = ended.model_copy(update={"lease_id": "lease-next", "id": "market.next"})  # same GPU
    release = Release(
        id="market.0.end", sender="market", receiver=ended.holder, epoch=0,
        lease_id=ended.lease_id, reason="expired",
    )  # fmt: skip
    controller.market.releases.append((ended, release))
    controller.market.leases[signed.lease_id] = signed
    controller.leases.publish()  # what `resume` reconciles when the effects were not made
    old, new = (objects.object_name(lease.lease_id, "lease") for lease in (ended, signed))
    assert kube.writes.index(("patch", "gpuleases/status", old)) < kube.writes.index(
        ("create", "gpuleases", new)
    )


def test_a_restarted_market_sweeps_uncovered_pods_before_its_next_clearing() -> None:
    kube = FakeKube()
    first = MarketController(kube, load_scenario("cluster-e2e"), 0, substep_timeout=0.0)  # type: ignore[arg-type]
    for _ in range(3):  # nobody answers: every agent passes; each sub-step is committed
        first.substep()
    kube.add("pods", _stray_pod("agent-beta"))
    second = MarketController(kube, load_scenario("cluster-e2e"), 0)  # type: ignore[arg-type]
    second.pods.source = lambda: kube.list("pods")
    second.resume()  # killed after the last commit, before its effects
    assert second.seq == 3
    second._effects()
    assert second.pods.evicted == ["agent-beta/stray"]
    assert kube.list("pods") == []


def _as_older_market_wrote(lease: Any, released: bool = False) -> dict[str, Any]:
    """The lease's object as a market from before the lease-shard label wrote it."""
    obj = objects.gpulease_object(lease, {})
    del obj["metadata"]["labels"][objects.LEASE_SHARD_LABEL]
    if released:
        obj["metadata"]["labels"][objects.RELEASED_LABEL] = "true"
        obj["status"] = {"release": {"lease_id": lease.lease_id}}
    return obj


def test_a_restarted_market_labels_the_live_leases_an_older_market_left_unlabelled() -> None:
    controller, kube = _controller()
    live, ended = _lease("whole"), _lease("gang")
    controller.market.leases[live.lease_id] = live
    kube.add("gpuleases", _as_older_market_wrote(live))
    kube.add("gpuleases", _as_older_market_wrote(ended, released=True))
    kube.add(
        "configmaps", {"metadata": {"name": STATE_CONFIGMAP, "namespace": objects.MARKET_NAMESPACE}}
    )
    controller.state._version = "0"  # deposed: another replica wrote the state (version 1)
    controller.leases.adopt(kube.list("gpuleases"))
    with pytest.raises(StateError, match="no longer the leader"):
        controller.leases.publish()
    assert not any(verb == "patch" for verb, _r, _n in kube.writes)
    controller.state._version = "1"  # the state is this replica's: it labels
    controller.leases.publish()
    live_name, ended_name = (objects.object_name(x.lease_id, "lease") for x in (live, ended))
    labels = kube.get("gpuleases", objects.agent_namespace(live.holder), live_name)["metadata"][
        "labels"
    ]
    assert labels[objects.LEASE_SHARD_LABEL] == objects.lease_shard(live_name)
    assert labels == objects.gpulease_labels(live)
    assert [w for w in kube.writes if w[2] == ended_name] == []  # released: no parameter anyway
    kube.writes.clear()
    controller.leases.publish()  # labelled once, not at every publish
    assert kube.writes == []
