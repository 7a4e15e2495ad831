"""A lease ends in two phases (the protocol model's rule 1), without a cluster: the market marks
the GPULease ending, deletes its pods, and writes the release only once they are gone; a market
restarted between the phases goes on from the pods; a lagging pod watch does not hold an end
up; a deposed replica writes no GPULease; the holder syncs no pod of an ending lease.

Before, the market wrote `status.release` first and deleted the pods afterwards (at the next
sweep), so a pod ran under a released GPULease for the rest of an effects pass or up to the
placement timeout; each test here fails on that order.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from fake_host import JOBS, SCENARIO, FakeKube, _host_pods

from gpuparley.deploy import objects
from gpuparley.deploy.market_controller import MarketController
from gpuparley.deploy.market_state import STATE_CONFIGMAP, StateError
from gpuparley.deploy.negotiator import NegotiatorProcess
from gpuparley.deploy.negotiator_config import NegotiatorConfig
from gpuparley.deploy.negotiator_leases import active_lease_of
from gpuparley.deploy.workload import group_pods, pods_for_job, waiting
from gpuparley.envs.market.messages import Lease, Release
from gpuparley.envs.scenario import load_scenario


class RecordingKube(FakeKube):
    """The fake host, logging each lease phase written, each pod deleted and each GPULease
    delete request, in order, and every release written while a pod of its lease still
    existed."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, str]] = []
        self.released_with_pods: list[str] = []

    def merge_patch(
        self, resource: str, namespace: str | None, name: str, patch: dict[str, Any]
    ) -> Any:
        if resource == "gpuleases/status":
            for phase in patch["status"]:
                self.events.append((phase, name))
            if "release" in patch["status"] and self._pods_of(namespace or "", name):
                self.released_with_pods.append(name)
        labels = (patch.get("metadata") or {}).get("labels") or {}
        if resource == "gpuleases" and objects.RELEASED_LABEL in labels:
            self.events.append(("label released", name))
        return super().merge_patch(resource, namespace, name, patch)

    def delete(
        self, resource: str, namespace: str | None, name: str, uid: str | None = None
    ) -> bool:
        if resource in ("pods", "gpuleases"):
            self.events.append(("delete" if resource == "pods" else "delete lease", name))
        return super().delete(resource, namespace, name, uid)

    def _pods_of(self, namespace: str, lease_object: str) -> list[str]:
        return [
            name
            for (kind, ns, name), pod in self.objects.items()
            if kind == "pods"
            and ns == namespace
            and (pod["metadata"].get("labels") or {}).get(objects.LEASE_LABEL) == lease_object
        ]


def _ended_with_running_pods(
    kube: RecordingKube, controller: MarketController
) -> tuple[Lease, str, list[str]]:
    """A gang lease the market has ended (its record in `market.releases`), its GPULease still
    active on the host and both its pods bound and running there."""
    lease, _grant, pods = _host_pods("gang")
    namespace = objects.agent_namespace(lease.holder)
    for pod in pods:
        pod["metadata"]["namespace"] = namespace
        pod["spec"]["nodeName"] = lease.resources[0].node
        pod["status"] = {"phase": "Running"}
        kube.add("pods", pod)
    obj = objects.gpulease_object(lease, controller.pods.grant(lease))
    kube.add("gpuleases", {**obj, "metadata": {**obj["metadata"], "namespace": namespace}})
    release = Release(
        id="market.3.end", sender="market", receiver=lease.holder, epoch=3,
        lease_id=lease.lease_id, reason="expired",
    )  # fmt: skip
    controller.market.releases.append((lease, release))
    controller.leases.adopt(kube.list("gpuleases"))
    name = objects.object_name(lease.lease_id, "lease")
    return lease, name, [p["metadata"]["name"] for p in pods]


def _market(kube: RecordingKube) -> MarketController:
    controller = MarketController(kube, load_scenario(SCENARIO), 0)  # type: ignore[arg-type]
    controller.pods.source = lambda: kube.list("pods")  # instead of the watch's cache
    return controller


def test_the_market_deletes_a_leases_pods_between_marking_it_ending_and_releasing_it() -> None:
    kube = RecordingKube()
    controller = _market(kube)
    _lease, name, pods = _ended_with_running_pods(kube, controller)
    controller.leases.publish()  # the reconcile every effects pass ends with
    assert kube.events == [
        ("ending", name),
        *(("delete", pod) for pod in pods),
        ("label released", name),  # before the release: out of the fit policy's parameters
        ("release", name),
    ]
    assert kube.released_with_pods == []
    assert kube.list("pods") == []
    assert controller.pods.reclaimed_pods == 2 and controller.pods.evicted == []
    released = kube.get("gpuleases", "agent-alpha", name)
    status = released["status"]
    assert status["ending"] == status["release"] and status["release"]["reason"] == "expired"
    labels = released["metadata"]["labels"]
    assert labels[objects.RELEASED_LABEL] == "true" and labels["gpuparley.io/holder"] == "alpha"


def test_a_market_restarted_between_the_mark_and_the_release_goes_on_from_the_pods() -> None:
    kube = RecordingKube()
    first = _market(kube)
    lease, name, pods = _ended_with_running_pods(kube, first)
    release = first.market.releases[-1][1]
    # The first market marked the lease ending and was killed before it deleted the pods.
    kube.merge_patch(
        "gpuleases/status", "agent-alpha", name, {"status": {"ending": release.model_dump()}}
    )
    kube.events.clear()
    second = _market(kube)
    second.market.releases.append((lease, release))  # what the journal's replay ended
    second.leases.adopt(kube.list("gpuleases"))
    second.leases.publish()
    assert kube.events == [
        *(("delete", pod) for pod in pods),
        ("label released", name),
        ("release", name),
    ]
    assert kube.released_with_pods == []
    second.leases.publish()  # idempotent: nothing more to write
    assert len(kube.events) == len(pods) + 2


def test_a_deposed_replica_writes_no_gpulease() -> None:
    kube = RecordingKube()
    controller = _market(kube)
    _ended_with_running_pods(kube, controller)
    head = {"metadata": {"name": STATE_CONFIGMAP, "namespace": objects.MARKET_NAMESPACE}}
    kube.add("configmaps", head)
    head["metadata"]["resourceVersion"] = "8"  # another replica wrote the state since (7)
    controller.state._version = "7"
    with pytest.raises(StateError, match="no longer the leader"):
        controller.leases.publish()
    assert kube.events == [] and len(kube.list("pods")) == 2


def test_a_deposed_replica_does_not_undo_a_renewal() -> None:
    """Its older spec of a lease is not merged over the one the new leader wrote."""
    kube = RecordingKube()
    controller = _market(kube)
    lease, _grant, _pods = _host_pods("whole")
    controller.market.leases[lease.lease_id] = lease
    controller.leases.publish()
    renewal = lease.model_copy(update={"expires_epoch": lease.expires_epoch + 4})
    name = objects.object_name(lease.lease_id, "lease")
    kube.merge_patch("gpuleases", "agent-alpha", name, {"spec": renewal.model_dump(mode="json")})
    head = {"metadata": {"name": STATE_CONFIGMAP, "namespace": objects.MARKET_NAMESPACE}}
    kube.add("configmaps", head)
    head["metadata"]["resourceVersion"] = "9"  # the new leader's commit of the renewal
    controller.state._version = "7"
    controller.leases._written.clear()  # as after a restart of the deposed replica: all differs
    with pytest.raises(StateError, match="no longer the leader"):
        controller.leases.publish()
    spec = kube.get("gpuleases", "agent-alpha", name)["spec"]
    assert spec["expires_epoch"] == renewal.expires_epoch


def test_the_holder_syncs_no_pod_of_an_ending_lease_and_deletes_its_host_pods() -> None:
    lease, _grant, host_copies = _host_pods("gang")
    agent, home = lease.holder, objects.agent_namespace(lease.holder)
    host, plane = FakeKube(), FakeKube()
    process = NegotiatorProcess(NegotiatorConfig(agent=agent, policy="scripted"), host, plane, None)  # type: ignore[arg-type]
    agent_pods = json.loads(json.dumps(pods_for_job(JOBS[lease.job])))
    for pod in agent_pods:
        pod["metadata"]["namespace"] = "default"
        pod["spec"]["nodeName"] = lease.resources[0].node  # running under the lease
    obj = objects.gpulease_object(lease)
    obj["metadata"]["namespace"] = home
    release = Release(
        id="market.3.end", sender="market", receiver=agent, epoch=3,
        lease_id=lease.lease_id, reason="expired",
    ).model_dump(mode="json")  # fmt: skip
    obj["status"] = {"ending": release}
    survivor = copy.deepcopy(host_copies[0])
    survivor["metadata"]["namespace"] = home
    host.add("pods", survivor)
    process.host_pods.observe(survivor)
    assert active_lease_of(lease.job, [obj]) is None  # no renewal of an ending lease
    process.lease_sync.sync(group_pods(agent_pods), [obj])
    assert host.list("pods") == []  # the survivor deleted, the other slot not created
    assert [w for w in host.writes if w[0] == "create"] == []
    assert plane.writes == []  # its own pods are left until the release
    obj["status"]["release"] = release
    process.lease_sync.sync(group_pods(agent_pods), [obj])
    again = plane.list("pods", "default")
    assert len(again) == 2 and all(waiting(pod, objects.AGENT_SCHEDULER) for pod in again)


def test_past_its_deadline_the_end_deletes_what_a_fresh_list_shows() -> None:
    """A watch that lags (it still shows one pod, and not yet the other) does not hold the end
    up forever: past its deadline the market lists the lease's pods from the apiserver, deletes
    them, and goes on to the release."""
    kube = RecordingKube()
    controller = _market(kube)
    _lease, name, pods = _ended_with_running_pods(kube, controller)
    frozen = kube.list("pods")[:1]
    controller.pods.source = lambda: frozen  # never delivers a deletion, nor the second pod
    controller.leases.placement_timeout = 0.0
    controller.leases.publish()
    assert kube.list("pods") == [] and kube.released_with_pods == []
    assert kube.events == [
        ("ending", name),
        *(("delete", pod) for pod in pods),
        ("label released", name),
        ("release", name),
    ]


def test_publish_makes_every_end_not_yet_released_and_rewrites_no_released_one() -> None:
    """The publisher looks only past the run of released ends its history starts with: an end
    after that run (here one a restart found marked ending) and every later one are still
    made, and none of the released ones is written again."""
    kube = RecordingKube()
    controller = _market(kube)
    lease, name, pods = _ended_with_running_pods(kube, controller)
    ending, release = controller.market.releases.pop()
    for index in (1, 2):  # two ends the host already shows released
        gone = lease.model_copy(update={"lease_id": f"gone-{index}"})
        obj = objects.gpulease_object(gone, controller.pods.grant(gone))
        obj["metadata"]["namespace"] = "agent-alpha"
        obj["status"] = {"ending": release.model_dump(), "release": release.model_dump()}
        kube.add("gpuleases", obj)
        controller.market.releases.append((gone, release))
    controller.market.releases.append((ending, release))
    controller.leases.adopt(kube.list("gpuleases"))
    controller.leases.publish()
    assert kube.events == [
        ("ending", name),
        *(("delete", pod) for pod in pods),
        ("label released", name),
        ("release", name),
    ]
    later = lease.model_copy(update={"lease_id": "later"})
    later_name = objects.object_name("later", "lease")
    obj = objects.gpulease_object(later, controller.pods.grant(later))
    kube.add("gpuleases", {**obj, "metadata": {**obj["metadata"], "namespace": "agent-alpha"}})
    controller.leases.adopt(kube.list("gpuleases"))
    controller.market.releases.append((later, release))
    kube.events.clear()
    controller.leases.publish()
    assert kube.events == [
        ("ending", later_name),
        ("label released", later_name),
        ("release", later_name),
    ]
