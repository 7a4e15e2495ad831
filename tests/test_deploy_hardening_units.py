"""The hardening rules without a cluster: pods against their lease's grant, bounded CRD fields,
and the market's handling of bids (one per decision, forged, being deleted) and of pods.

The same rules run against the real apiservers in `tests/cluster/test_lease_admission.py`; here
each is pinned on hand-built objects so a failure names the rule, not a run.
"""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any

import pytest
from fake_host import JOBS, KINDS, FakeKube, _controller, _host_pods, _lease

from gpuparley.deploy import crds, objects
from gpuparley.deploy.answers_ahead import ahead_id
from gpuparley.deploy.lease_grant import grant_violations
from gpuparley.deploy.market_controller import MarketController
from gpuparley.deploy.schema_bounds import open_fields
from gpuparley.envs.market.demand import demand_of
from gpuparley.envs.market.messages import Bid, ResourceItem
from gpuparley.envs.market.views import agent_views


def _limits(pod: dict[str, Any]) -> dict[str, str]:
    return pod["spec"]["containers"][0]["resources"]["limits"]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_an_honest_negotiators_pods_fit_their_grant(kind: str) -> None:
    _lease_obj, grant, pods = _host_pods(kind)
    for pod in pods:
        assert grant_violations(pod, grant) == []


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_the_issues_oversized_pods_do_not_fit(kind: str) -> None:
    """The attack: one more GPU in each pod's limits (and for MIG, a bigger profile)."""
    _lease_obj, grant, pods = _host_pods(kind)
    for pod in pods:
        bigger = copy.deepcopy(pod)
        limits = _limits(bigger)
        gpu = next(k for k in limits if k.startswith("nvidia.com/"))
        limits[gpu] = str(int(limits[gpu]) + 1)
        assert any("exceeds" in p for p in grant_violations(bigger, grant))
        swapped = copy.deepcopy(pod)
        _limits(swapped).pop(gpu)
        _limits(swapped)["nvidia.com/mig-7g.80gb"] = "1"
        assert any("does not grant" in p for p in grant_violations(swapped, grant))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_lease_and_its_pods_carry_one_shard(kind: str) -> None:
    """The shard routes a pod to the one fit binding holding its lease: the GPULease and every
    host pod naming it carry the last character of the lease's name."""
    lease, _grant, pods = _host_pods(kind)
    obj = objects.gpulease_object(lease)
    shard = obj["metadata"]["name"][-1]
    assert shard in objects.LEASE_SHARDS
    assert obj["metadata"]["labels"][objects.LEASE_SHARD_LABEL] == shard
    assert {p["metadata"]["labels"][objects.LEASE_SHARD_LABEL] for p in pods} == {shard}


def test_leases_spread_over_every_shard() -> None:
    """An agent's leases split about evenly, so each fit binding holds about 1/16 of them."""
    names = [objects.object_name(f"lease-{n}", "lease") for n in range(1, 1601)]
    counts = Counter(objects.lease_shard(name) for name in names)
    assert set(counts) == set(objects.LEASE_SHARDS)
    assert max(counts.values()) < 1.5 * len(names) / len(objects.LEASE_SHARDS)


def test_cpu_memory_node_slot_and_pod_shape_are_bound() -> None:
    _lease_obj, grant, (pod,) = _host_pods("whole")

    def changed(edit: Any) -> list[str]:
        other = copy.deepcopy(pod)
        edit(other)
        return grant_violations(other, grant)

    assert changed(lambda p: _limits(p).update(cpu="60"))
    assert changed(lambda p: _limits(p).update(memory="500Gi"))
    assert changed(lambda p: _limits(p).pop("cpu"))
    assert changed(lambda p: p["spec"]["nodeSelector"].update({"kubernetes.io/hostname": "mig-0"}))
    assert changed(lambda p: p["metadata"]["annotations"].update({"gpuparley.io/pod-index": "1"}))
    assert changed(lambda p: p["spec"].update(resources={"limits": {"cpu": "64"}}))
    side = {"name": "side", "image": "x", "resources": {"limits": {"cpu": "1", "memory": "1Mi"}}}
    assert changed(lambda p: p["spec"]["containers"].append(side))  # the sum exceeds the CPU
    init = {"name": "i", "image": "x", "resources": {"limits": {"cpu": "64", "memory": "1Mi"}}}
    assert changed(lambda p: p["spec"].update(initContainers=[init]))
    assert grant_violations(pod, None) == ["its lease carries no grant"]


def test_every_crd_field_has_a_size_limit_never_looser_than_the_model() -> None:
    for crd in crds.crd_documents():
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for name in set(schema["properties"]) - {"apiVersion", "kind", "metadata"}:
            assert open_fields(schema["properties"][name]) == [], (crd["metadata"]["name"], name)
    spec = crds.offer_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    fields = spec["spec"]["properties"]
    assert fields["renewal_of"]["maxLength"] == 128
    assert fields["demand"]["properties"]["allowed_models"]["maxItems"] == 32
    assert fields["id"]["maxLength"] == 128  # the model's own bound, kept
    assert fields["price"]["maximum"] == 1e12
    assert fields["demand"]["properties"]["pods"]["maximum"] == 1024


# --------------------------------------------------------------- the market, with a fake host


def _receive_bids(controller: MarketController, kube: FakeKube) -> None:
    """One sub-step's intake of the offers on the (fake) host, consumed afterwards."""
    market = controller.market
    decision = {a: f"{a}.{market.epoch}.{controller.seq}" for a in market.agents}
    controller.bids.receive(kube.list("offers"), decision, set(market.agents))
    controller.bids.consume()


def _bid_object(controller: MarketController, job: str, bid_id: str) -> dict[str, Any]:
    owner = JOBS[job].owner
    bid = Bid(
        id=bid_id, sender=owner, receiver="market", epoch=controller.market.epoch,
        demand=demand_of(JOBS[job]), price=0.1, term_epochs=controller.market.term_epochs,
    )  # fmt: skip
    return objects.offer_object(bid)


def _alpha_waits_for_two_jobs(controller: MarketController) -> list[str]:
    """Pass sub-steps until two of alpha's jobs have arrived (none has at epoch 0)."""
    market = controller.market
    for _ in range(500):
        waiting = [s.job for s in agent_views(market)["alpha"].slots if s.job]
        if len(waiting) >= 2:
            return waiting
        market.passed.update(market.agents)
        market.end_substep()
    raise AssertionError("alpha's jobs never arrived")


def test_the_market_takes_one_bid_per_agent_and_decision() -> None:
    controller, kube = _controller()
    first, second = _alpha_waits_for_two_jobs(controller)[:2]
    decision = f"alpha.{controller.market.epoch}.{controller.seq}"
    kube.add("offers", _bid_object(controller, first, "alpha.zzz-fresh-id"))
    kube.add("offers", _bid_object(controller, second, decision))
    junk = _bid_object(controller, first, "alpha.junk")
    junk["spec"]["demand"]["job"] = "no-such-job"
    kube.add("offers", junk)
    _receive_bids(controller, kube)
    assert controller.rejected == {"duplicate": 1, "invalid": 1}
    assert controller.market.stats.messages["Bid"] == 1
    assert kube.list("offers") == []  # all consumed


def test_bids_outside_their_senders_namespace_are_forged_and_deleting_ones_ignored() -> None:
    controller, kube = _controller()
    first, second = _alpha_waits_for_two_jobs(controller)[:2]
    elsewhere = _bid_object(controller, first, "alpha.x")
    elsewhere["metadata"]["namespace"] = "agent-beta"
    kube.add("offers", elsewhere)
    held = _bid_object(controller, second, "alpha.y")
    held["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"  # a finalizer holds it
    kube.add("offers", held)
    _receive_bids(controller, kube)
    _receive_bids(controller, kube)
    assert controller.rejected == {"forged": 1}  # the held one is neither read nor rejected
    assert [o["metadata"]["name"] for o in kube.list("offers")] == [held["metadata"]["name"]]


def test_the_market_binds_pods_only_when_every_slot_holds_a_fitting_pod() -> None:
    controller, kube = _controller()
    lease, _grant, (first, second) = _host_pods("gang")
    controller.market.leases[lease.lease_id] = lease
    for pod in (first, second):
        pod["metadata"]["namespace"] = "agent-alpha"
    oversized = copy.deepcopy(second)
    _limits(oversized)["nvidia.com/gpu"] = "2"
    kube.add("pods", first)
    kube.add("pods", oversized)
    controller.pods.admit(controller.pods.lease_pods())
    assert kube.bindings == []  # none bound: slot 1 held a misfit, which is gone
    assert controller.pods.evicted == [f"agent-alpha/{second['metadata']['name']}"]
    assert controller.pods.misfits == {"pod-exceeds-lease": 1}
    kube.add("pods", second)
    stale = kube.objects["pods", "agent-alpha", first["metadata"]["name"]]
    pods = controller.pods.lease_pods()
    stale["metadata"]["resourceVersion"] = "2"  # changed after the market looked
    controller.pods.admit(pods)
    assert [name for name, _node in kube.bindings] == [second["metadata"]["name"]]
    controller.pods.admit(controller.pods.lease_pods())
    # Each to its slot's node, and each once (a bound pod is no longer the market's to bind).
    first_item, second_item = lease.resources
    assert kube.bindings == [
        (second["metadata"]["name"], second_item.node),
        (first["metadata"]["name"], first_item.node),
    ]
    controller.pods.admit(controller.pods.lease_pods())
    assert len(kube.bindings) == 2


def test_a_pod_bound_is_not_bound_again_while_the_cache_is_behind() -> None:
    controller, kube = _controller()
    lease, _grant, pods = _host_pods("whole")
    controller.market.leases[lease.lease_id] = lease
    for pod in pods:
        pod["metadata"]["namespace"] = "agent-alpha"
        kube.add("pods", pod)
    before = kube.list("pods")  # what the watch still shows after the binding
    controller.pods.source = lambda: copy.deepcopy(before)
    controller.pods.admit(controller.pods.lease_pods())
    controller.pods.admit(controller.pods.lease_pods())
    assert len(kube.bindings) == kube.binding_requests == len(pods)
    # The pod created again under the name (a new resourceVersion) is judged afresh.
    kube.objects["pods", "agent-alpha", pods[0]["metadata"]["name"]]["spec"].pop("nodeName")
    kube.objects["pods", "agent-alpha", pods[0]["metadata"]["name"]]["metadata"][
        "resourceVersion"
    ] = "999"
    controller.pods.source = lambda: kube.list("pods")
    controller.pods.admit(controller.pods.lease_pods())
    assert len(kube.bindings) == kube.binding_requests == len(pods) + 1


def test_pods_no_lease_covers_are_evicted_and_operator_pods_left_alone() -> None:
    controller, kube = _controller()
    waiting_cpu = {
        "metadata": {"name": "cpu-only", "namespace": "agent-alpha"},
        "spec": {"schedulerName": objects.MARKET_SCHEDULER, "containers": []},
    }
    operator = {
        "metadata": {"name": "gpuparley-negotiator-abc", "namespace": "agent-alpha"},
        "spec": {"containers": [{"name": "n", "resources": {"limits": {"cpu": "1"}}}]},
    }
    kube.add("pods", waiting_cpu)
    kube.add("pods", operator)
    controller.pods.enforce()
    assert controller.pods.evicted == ["agent-alpha/cpu-only"]
    assert [p["metadata"]["name"] for p in kube.list("pods")] == ["gpuparley-negotiator-abc"]


def test_a_renewal_that_moves_the_job_moves_the_grant() -> None:
    controller, _kube = _controller()
    lease = _lease("whole")
    moved = lease.model_copy(
        update={"resources": (ResourceItem(pod=0, node="shared-0", gpu_kind="whole", gpus=(0,)),)}
    )
    assert controller.pods.grant(lease)["nodes"] == ["whole-0"]
    assert controller.pods.grant(moved)["nodes"] == ["shared-0"]  # same lease id, new node


def test_a_pod_is_checked_against_its_grant_again_only_when_either_changed(monkeypatch) -> None:
    """Admission passes run at every event; a pod unchanged under an unchanged lease keeps its
    verdict, while a pod written again (new resourceVersion) or a renewal that moves the lease
    (a new lease object, a new grant) is judged afresh -- and a misfit then is evicted."""
    from gpuparley.deploy import market_pods

    checked: list[str] = []

    def counting(pod: dict[str, Any], grant: dict[str, Any]) -> list[str]:
        checked.append(pod["metadata"]["name"])
        return grant_violations(pod, grant)

    monkeypatch.setattr(market_pods, "grant_violations", counting)
    controller, kube = _controller()
    names = {}
    for kind in ("whole", "share"):
        lease, _grant, (pod,) = _host_pods(kind)
        controller.market.leases[lease.lease_id] = lease
        pod["metadata"]["namespace"] = "agent-alpha"
        kube.add("pods", pod)
        names[kind] = pod["metadata"]["name"]
    waiting = kube.list("pods")  # as a watch that has not shown the bindings yet
    controller.pods.source = lambda: copy.deepcopy(waiting)
    for _ in range(3):
        controller.pods.admit(controller.pods.lease_pods())
    assert sorted(checked) == sorted(p["metadata"]["name"] for p in waiting)  # once each
    assert controller.pods.evicted == []
    # The share pod written again, bigger: judged again and evicted.
    share = next(p for p in waiting if p["metadata"]["name"] == names["share"])
    _limits(share)["cpu"] = "64"
    share["metadata"]["resourceVersion"] = "changed"
    checked.clear()
    controller.pods.admit(controller.pods.lease_pods())
    assert checked == [share["metadata"]["name"]]
    assert controller.pods.evicted == [f"agent-alpha/{share['metadata']['name']}"]
    waiting.remove(share)  # the watch shows the deletion
    # A renewal that moves the whole GPU's job: the grant changes, so its pod is judged again,
    # and the pod pinned to the old node no longer fits.
    whole = _lease("whole")
    moved = whole.model_copy(
        update={"resources": (ResourceItem(pod=0, node="shared-0", gpu_kind="whole", gpus=(0,)),)}
    )
    controller.market.leases[whole.lease_id] = moved
    checked.clear()
    controller.pods.admit(controller.pods.lease_pods())
    assert checked == [names["whole"]]
    assert controller.pods.evicted[1:] == [f"agent-alpha/{names['whole']}"]
    assert controller.pods.misfits == {"pod-exceeds-lease": 2}


def test_an_unreadable_quantity_is_a_violation_not_a_crash() -> None:
    _lease_obj, grant, (pod,) = _host_pods("whole")
    bad = copy.deepcopy(pod)
    _limits(bad)["cpu"] = "lots"
    init = {"name": "i", "resources": {"limits": {"cpu": "many", "memory": "1Mi"}}}
    bad["spec"]["initContainers"] = [init]
    problems = grant_violations(bad, grant)
    assert any("not a quantity: 'lots'" in p for p in problems)
    assert any("not a quantity: 'many'" in p for p in problems)


def test_a_bid_given_ahead_is_judged_in_its_agents_turn_and_must_be_its_own() -> None:
    """A bid an agent gave ahead (from its Negotiator status, no Offer object) is taken in the
    agents' order among the Offers, as the simulator takes decisions; one that names another
    sender or another id than the answer announced is forged."""
    controller, kube = _controller()
    first, second = _alpha_waits_for_two_jobs(controller)[:2]
    market = controller.market
    token = f"{market.epoch}.{controller.seq}"
    given = _bid_object(controller, first, ahead_id("alpha", market.epoch, controller.seq, "d"))
    decision = {a: f"{a}.{token}" for a in market.agents}
    decision["alpha"] = given["spec"]["id"]
    entries = controller.bids.receive([], decision, set(market.agents), {"alpha": given["spec"]})
    assert [e["source"] for e in entries] == [given["spec"]["id"]] and entries[0]["accepted"]
    assert market.stats.messages["Bid"] == 1 and not controller.rejected
    assert kube.writes == []  # nothing to delete: it came from the status
    market.passed.update(market.agents)
    market.end_substep()
    controller.seq += 1
    stolen = _bid_object(controller, second, ahead_id("alpha", market.epoch, controller.seq, "e"))
    decision = {a: f"{a}.{market.epoch}.{controller.seq}" for a in market.agents}
    decision["beta"] = stolen["spec"]["id"]
    controller.bids.receive([], decision, set(market.agents), {"beta": stolen["spec"]})
    assert controller.rejected == {"forged": 1} and market.stats.messages["Bid"] == 1


class _Negotiators:
    """The Negotiator watch's cache, as `Questions` reads it."""

    def __init__(self, statuses: dict[str, dict[str, Any]]) -> None:
        self.statuses = statuses

    def objects(self) -> list[dict[str, Any]]:
        return [
            {"metadata": {"namespace": objects.agent_namespace(a)}, "spec": {"agent": a},
             "status": status}
            for a, status in self.statuses.items()
        ]  # fmt: skip


def test_the_asked_bid_is_taken_from_the_status_that_answers_the_sub_step() -> None:
    """An auction bid travels in its Negotiator status with the answer: the market takes it
    from there, only from a status answering this very sub-step, and from its own agent."""
    controller, _kube = _controller()
    first = _alpha_waits_for_two_jobs(controller)[0]
    market = controller.market
    token = (market.epoch, controller.seq)
    bid = _bid_object(controller, first, f"alpha.{token[0]}.{token[1]}")["spec"]
    answered = {"observedEpoch": token[0], "observedSubstep": token[1], "action": "bid"}
    earlier = {**answered, "observedSubstep": token[1] - 1}
    controller.questions.negotiators = _Negotiators(
        {"alpha": {**answered, "message": bid["id"], "bid": bid}, "beta": {**earlier, "bid": bid}}
    )
    assert controller.questions.bids(token, ["alpha", "beta"]) == {"alpha": bid}
    # Placed in beta's status, alpha's bid is beta's to answer for: forged.
    controller.questions.negotiators = _Negotiators({"beta": {**answered, "bid": bid}})
    given = controller.questions.bids(token, ["beta"])
    decision = {a: f"{a}.{token[0]}.{token[1]}" for a in market.agents}
    controller.bids.receive([], decision, set(market.agents), given)
    assert controller.rejected == {"forged": 1} and market.stats.messages["Bid"] == 0
