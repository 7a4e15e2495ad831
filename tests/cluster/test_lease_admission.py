"""Pods in agent namespaces against the real host apiserver: a pod runs only under, and inside,
a lease (`deploy/admission_pods.py`).

The issue's attacks, replayed with an agent's own credentials (the rig user `agent-alpha` and the
bundle's ServiceAccount, by impersonation): a pod with one GPU more than its lease for each kind
the attacker used (a whole GPU, a 2-pod gang, a time-slice share, a MIG 3g.40gb), more CPU or
memory, another node or slot, a bigger MIG profile, a sidecar or init container that breaks the
sum, pod-level resources, a CPU-only pod (60 cores, 500 GiB), a finalizer, a pod with no
lease at all, and a pod labelled with no lease shard or another one (which would take it past
its lease's fit binding). Each is refused with the status code and policy asserted. Leases are
written as the market writes them (`gpulease_object` with its grant), pinned to a node that
does not exist, so nothing admitted is ever scheduled.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from gpuparley.deploy import admission, objects, rbac
from gpuparley.deploy.kube import Kube
from gpuparley.deploy.lease_grant import lease_grant
from gpuparley.deploy.workload import host_pod, pods_for_job
from gpuparley.envs.market.messages import Lease, Release, ResourceItem
from gpuparley.envs.scenario import load_scenario

from .helpers import outcome, status_of, wait_denied_by, wait_for

pytestmark = pytest.mark.cluster
HOME = "agent-alpha"
NODE = "no-such-node"
NEGOTIATOR_SA = "system:serviceaccount:agent-alpha:negotiator"
CONTROLLER = "system:serviceaccount:kube-system:replicaset-controller"
JOBS = {job.name: job for job in load_scenario("cluster-e2e").build_jobs(0)}
# Jobs of alpha's in cluster-e2e, one per kind the attacker oversized.
KINDS = {
    "whole": ("gen-000021", [ResourceItem(pod=0, node=NODE, gpu_kind="whole", gpus=(1,))]),
    "gang": (
        "gen-000002",
        [
            ResourceItem(pod=0, node=NODE, gpu_kind="whole", gpus=(0,)),
            ResourceItem(pod=1, node=NODE, gpu_kind="whole", gpus=(2,)),
        ],
    ),
    "share": (
        "gen-000001",
        [ResourceItem(pod=0, node=NODE, gpu_kind="share", gpus=(0,), gpu_milli=250)],
    ),
    "mig": (
        "gen-000019",
        [ResourceItem(pod=0, node=NODE, gpu_kind="mig", mig_profile="3g.40gb", mig_start=0)],
    ),
}


def _lease(kind: str) -> Lease:
    job, items = KINDS[kind]
    return Lease(
        id=f"market.adm-{kind}", sender="market", receiver="alpha", epoch=0,
        lease_id=f"adm-{kind}", holder="alpha", lender="market", job=job,
        resources=tuple(items), start_epoch=0, expires_epoch=4, price=1.0,
    )  # fmt: skip


@pytest.fixture(scope="module")
def leases(deployed: Any, cluster: Any) -> Iterator[dict[str, tuple[Lease, list[dict[str, Any]]]]]:
    """One GPULease per kind in alpha's namespace, written as the market writes them, with the
    honest host pods for each; removed afterwards."""
    market = Kube(cluster.host.agent_kubeconfigs[rbac.MARKET_USER])
    made = {}
    for kind in KINDS:
        lease = _lease(kind)
        job = JOBS[lease.job]
        obj = objects.gpulease_object(lease, lease_grant(lease, job.pod))
        market.create("gpuleases", HOME, obj)
        name = obj["metadata"]["name"]
        agent_pods = pods_for_job(job)
        pods = [host_pod(agent_pods[item.pod], name, item) for item in lease.resources]
        for i, pod in enumerate(pods):
            pod["metadata"]["name"] = f"adm-{kind}-{i}"
        made[kind] = (lease, pods)
    # The fit policy reads leases from the apiserver's cache: wait until it holds each one.
    alpha = Kube(cluster.host.agent_kubeconfigs[HOME])
    for _lease_obj, pods in made.values():
        bigger = copy.deepcopy(pods[0])
        _limits(bigger)["cpu"] = "1000"
        wait_denied_by(
            admission.LEASE_FIT_POLICY, lambda bigger=bigger: _raise_dry_create(alpha, bigger)
        )
    alpha.close()
    yield made
    admin = Kube(cluster.host.kubeconfig)
    for lease, pods in made.values():
        admin.delete("gpuleases", HOME, objects.object_name(lease.lease_id, "lease"))
        for pod in pods:
            admin.delete("pods", HOME, pod["metadata"]["name"])
    admin.close()
    market.close()


def _impersonating(cluster: Any, user: str) -> Kube:
    kube = Kube(cluster.host.kubeconfig)
    kube.api.set_default_header("Impersonate-User", user)
    return kube


@pytest.fixture(scope="module")
def identities(cluster: Any) -> Iterator[dict[str, Kube]]:
    """alpha as the rig user and as its negotiator ServiceAccount."""
    made = {
        "agent-alpha": Kube(cluster.host.agent_kubeconfigs[HOME]),
        NEGOTIATOR_SA: _impersonating(cluster, NEGOTIATOR_SA),
    }
    yield made
    for kube in made.values():
        kube.close()


def _dry_create(kube: Kube, pod: dict[str, Any]) -> tuple[int, str]:
    path = f"/api/v1/namespaces/{HOME}/pods"
    return outcome(lambda: kube.call("POST", path, pod, {"dryRun": "All"}))


def _raise_dry_create(kube: Kube, pod: dict[str, Any]) -> None:
    kube.call("POST", f"/api/v1/namespaces/{HOME}/pods", pod, {"dryRun": "All"})


def _limits(pod: dict[str, Any]) -> dict[str, str]:
    return pod["spec"]["containers"][0]["resources"]["limits"]


def _refused_by_fit(result: tuple[int, str], what: str) -> None:
    status, message = result
    assert status == 403, (what, status, message)
    assert f"ValidatingAdmissionPolicy '{admission.LEASE_FIT_POLICY}'" in message, (what, message)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_honest_pods_are_admitted_and_one_more_gpu_is_refused(
    leases: dict[str, Any], identities: dict[str, Kube], kind: str
) -> None:
    _lease_obj, pods = leases[kind]
    for kube in identities.values():
        for pod in pods:
            assert _dry_create(kube, pod) == (200, "")
            bigger = copy.deepcopy(pod)
            resources = bigger["spec"]["containers"][0]["resources"]
            gpu = next(k for k in resources["limits"] if k.startswith("nvidia.com/"))
            for part in ("requests", "limits"):  # extended resources: requests == limits
                resources[part][gpu] = str(int(resources[part][gpu]) + 1)
            _refused_by_fit(_dry_create(kube, bigger), f"{kind}: {gpu}+1")


def test_cpu_memory_node_slot_profile_and_shape_are_bound(
    leases: dict[str, Any], identities: dict[str, Kube]
) -> None:
    (_lease_obj, (pod,)) = leases["mig"]
    side = {"name": "side", "image": "x", "resources": {"limits": {"cpu": "1", "memory": "1Mi"}}}
    init = {"name": "i", "image": "x", "resources": {"limits": {"cpu": "64", "memory": "1Mi"}}}
    edits: dict[str, Callable[[dict[str, Any]], None]] = {
        "60 cores": lambda p: _limits(p).update(cpu="60"),
        "500 GiB": lambda p: _limits(p).update(memory="500Gi"),
        "60 cores requested": lambda p: [
            part.update(cpu="60") for part in p["spec"]["containers"][0]["resources"].values()
        ],
        "no cpu limit": lambda p: _limits(p).pop("cpu"),
        "bigger MIG profile": lambda p: [
            (part.pop("nvidia.com/mig-3g.40gb"), part.update({"nvidia.com/mig-7g.80gb": "1"}))
            for part in p["spec"]["containers"][0]["resources"].values()
        ],
        "another node": lambda p: p["spec"]["nodeSelector"].update(
            {"kubernetes.io/hostname": "gpu-a100-excl-0"}
        ),
        "another slot": lambda p: p["metadata"]["annotations"].update(
            {"gpuparley.io/pod-index": "1"}
        ),
        "a sidecar over the sum": lambda p: p["spec"]["containers"].append(side),
        "a big init container": lambda p: p["spec"].update(initContainers=[init]),
        "pod-level resources": lambda p: p["spec"].update(resources={"limits": {"cpu": "64"}}),
    }
    # What would take the pod past its lease's fit binding (one per shard) is the scheduler
    # policy's to refuse: no lease named, no shard, or another shard than its lease's.
    shard = pod["metadata"]["labels"][objects.LEASE_SHARD_LABEL]
    other = next(s for s in objects.LEASE_SHARDS if s != shard)
    misrouted: dict[str, Callable[[dict[str, Any]], Any]] = {
        "no lease named": lambda p: p["metadata"]["labels"].pop(objects.LEASE_LABEL),
        "no shard": lambda p: p["metadata"]["labels"].pop(objects.LEASE_SHARD_LABEL),
        "another shard": lambda p: p["metadata"]["labels"].update(
            {objects.LEASE_SHARD_LABEL: other}
        ),
        "another shard, more CPU": lambda p: (
            p["metadata"]["labels"].update({objects.LEASE_SHARD_LABEL: other}),
            _limits(p).update(cpu="1000"),
        ),
    }
    for kube in identities.values():
        for what, edit in edits.items():
            changed = copy.deepcopy(pod)
            edit(changed)
            _refused_by_fit(_dry_create(kube, changed), what)
        for what, edit in misrouted.items():
            changed = copy.deepcopy(pod)
            edit(changed)
            status, message = _dry_create(kube, changed)
            assert status == 403, (what, status, message)
            assert f"'{admission.LEASE_SCHEDULER_POLICY}'" in message, (what, message)
            assert objects.LEASE_SHARD_LABEL in message, (what, message)


def test_cpu_only_pods_and_finalizers_are_refused(
    leases: dict[str, Any], identities: dict[str, Kube]
) -> None:
    """The issue's squatter: a 60-core / 500 GiB CPU-only pod, bound at creation. Unbound for
    the market but without a lease it is refused too; and no agent pod may carry a finalizer."""
    squatter = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "squatter"},
        "spec": {
            "nodeName": "gpu-a100-excl-0",
            "containers": [
                {
                    "name": "c",
                    "image": "x",
                    "resources": {"limits": {"cpu": "60", "memory": "500Gi"}},
                }
            ],
        },
    }
    (_lease_obj, (pod,)) = leases["whole"]
    held = copy.deepcopy(pod)
    held["metadata"]["finalizers"] = ["example.com/keep"]
    for kube in identities.values():
        status, message = _dry_create(kube, squatter)
        assert status == 403, message
        assert "ValidatingAdmissionPolicy 'gpuparley-lease-" in message
        waiting = copy.deepcopy(squatter)
        del waiting["spec"]["nodeName"]
        waiting["spec"]["schedulerName"] = objects.MARKET_SCHEDULER
        status, message = _dry_create(kube, waiting)  # a CPU-only pod without a lease
        assert status == 403, message
        assert f"'{admission.LEASE_SCHEDULER_POLICY}'" in message, message
        status, message = _dry_create(kube, held)
        assert status == 403, message
        assert "agents may not add finalizers" in message


def test_an_agent_without_a_lease_can_only_queue_for_the_market(
    cluster: Any, leases: dict[str, Any]
) -> None:
    """In a namespace with no lease the fit policy has no parameter and does not apply: a pod
    may be created unbound for the market (which alone can bind it, and whose end-of-epoch sweep
    evicts it), never for kube-scheduler nor bound at creation."""
    beta = Kube(cluster.host.agent_kubeconfigs["agent-beta"])
    (_lease_obj, (pod,)) = leases["whole"]
    path = "/api/v1/namespaces/agent-beta/pods"
    dry = {"dryRun": "All"}
    assert outcome(lambda: beta.call("POST", path, pod, dry)) == (200, "")
    for_kube_scheduler = copy.deepcopy(pod)
    del for_kube_scheduler["spec"]["schedulerName"]
    bound = copy.deepcopy(pod)
    bound["spec"]["nodeName"] = bound["spec"]["nodeSelector"]["kubernetes.io/hostname"]
    for free in (for_kube_scheduler, bound):
        status, message = outcome(lambda free=free: beta.call("POST", path, free, dry))
        assert status == 403, message
        assert f"'{admission.LEASE_SCHEDULER_POLICY}'" in message
    beta.close()


def test_only_the_market_binds_and_controllers_pods_pass(
    cluster: Any, leases: dict[str, Any], identities: dict[str, Kube]
) -> None:
    """The negotiator creates the leased pod; it cannot bind it, the market can -- only the very
    pod it checked (its resourceVersion) -- and may evict it; Kubernetes' controllers (the
    negotiator's own Deployment) are not held."""
    (_lease_obj, (pod,)) = leases["whole"]
    sa = identities[NEGOTIATOR_SA]
    created = sa.create("pods", HOME, pod)
    assert created
    name, node = pod["metadata"]["name"], pod["spec"]["nodeSelector"]["kubernetes.io/hostname"]
    for kube in identities.values():
        status, message = outcome(lambda kube=kube: kube.bind(HOME, name, node))
        assert status == 403, message
    market = Kube(cluster.host.agent_kubeconfigs[rbac.MARKET_USER])
    try:
        other = {**pod, "metadata": {**pod["metadata"], "name": "m"}}
        assert status_of(lambda: market.create("pods", HOME, other)) == 403
        relabel = {"metadata": {"labels": {"x": "y"}}}
        assert status_of(lambda: market.merge_patch("pods", HOME, name, relabel)) == 403  # no patch
        stale = str(int(created["metadata"]["resourceVersion"]) - 1)
        assert status_of(lambda: market.bind(HOME, name, node, stale)) == 409
        version = created["metadata"]["resourceVersion"]
        assert status_of(lambda: market.bind(HOME, name, node, version)) == 200
        assert (market.get("pods", HOME, name) or {})["spec"]["nodeName"] == node
        assert market.delete("pods", HOME, name)
        assert status_of(lambda: market.delete("pods", "kube-system", "x")) == 403
    finally:
        market.close()
    controller = _impersonating(cluster, CONTROLLER)
    operator_pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "gpuparley-negotiator-x"},
        "spec": {"containers": [{"name": "n", "image": "x"}]},
    }
    assert _dry_create(controller, operator_pod) == (200, "")
    controller.close()


def test_the_grant_is_written_by_the_market_only(
    leases: dict[str, Any], identities: dict[str, Kube]
) -> None:
    lease, _pods = leases["whole"]
    name = objects.object_name(lease.lease_id, "lease")
    grow = {"grant": {"limits": {"nvidia.com/gpu": "8", "cpu": "64", "memory": "1Ti"}}}
    for kube in identities.values():
        assert status_of(lambda kube=kube: kube.merge_patch("gpuleases", HOME, name, grow)) == 403


_ELECTION = {"metadata": {"name": "gpuparley-negotiator"}, "spec": {"holderIdentity": "r-0"}}
_EVENT = {
    "metadata": {"generateName": "alpha-"},
    "involvedObject": {"kind": "Negotiator", "name": "alpha", "namespace": HOME},
    "reason": "Answered",
    "message": "sub-step 1",
    "type": "Normal",
}
_ANSWERED = {"status": {"phase": "Answered", "observedEpoch": 3}}
_BUDGET = {"spec": {"budget_per_epoch": 1e9}}


def test_what_a_negotiator_may_do_at_home_and_not_elsewhere(
    leases: dict[str, Any], identities: dict[str, Kube]
) -> None:
    """Agent alpha's negotiator: its home yes (a leased pod, its leader-election lease, events,
    its Negotiator's status), beta's home no; nodes read-only; its own spec is the operator's."""
    (_lease_obj, (pod,)) = leases["whole"]
    dry = {"dryRun": "All"}
    for kube in identities.values():
        node = kube.list("nodes")[0]["metadata"]["name"]
        assert status_of(lambda kube=kube, node=node: kube.get("nodes", None, node)) == 200
        for ns, want in ((HOME, 200), ("agent-beta", 403)):
            calls = {
                "pod": ("/api/v1/namespaces/{ns}/pods", pod),
                "lease": ("/apis/coordination.k8s.io/v1/namespaces/{ns}/leases", _ELECTION),
                "event": ("/api/v1/namespaces/{ns}/events", _EVENT),
            }
            for what, (path, body) in calls.items():
                got = outcome(
                    lambda kube=kube, path=path, body=body, ns=ns: kube.call(
                        "POST", path.format(ns=ns), body, dry
                    )
                )
                assert got[0] == want, (what, ns, got)
        for ns, name, want in ((HOME, "alpha", 200), ("agent-beta", "beta", 403)):
            got = status_of(
                lambda kube=kube, ns=ns, name=name: kube.merge_patch(
                    "negotiators/status", ns, name, _ANSWERED
                )
            )
            assert got == want, (ns, got)
        assert (
            status_of(lambda kube=kube: kube.merge_patch("negotiators", HOME, "alpha", _BUDGET))
            == 403
        )
        assert (
            status_of(
                lambda kube=kube: kube.call("POST", "/api/v1/nodes", {"metadata": {"name": "f"}})
            )
            == 403
        )


def test_a_lease_marked_ending_admits_no_pod(deployed: Any, cluster: Any) -> None:
    """The first phase of a lease's end (`status.ending`, written by the market) already refuses
    its pods: a holder whose view lags cannot re-create one while the market deletes them."""
    lease = _lease("whole").model_copy(update={"lease_id": "adm-ending", "id": "market.ending"})
    job = JOBS[lease.job]
    obj = objects.gpulease_object(lease, lease_grant(lease, job.pod))
    name = obj["metadata"]["name"]
    pod = host_pod(pods_for_job(job)[0], name, lease.resources[0])
    pod["metadata"]["name"] = "adm-ending-0"
    market = Kube(cluster.host.agent_kubeconfigs[rbac.MARKET_USER])
    alpha = Kube(cluster.host.agent_kubeconfigs[HOME])
    try:
        market.create("gpuleases", HOME, obj)
        bigger = copy.deepcopy(pod)
        _limits(bigger)["cpu"] = "1000"
        wait_denied_by(admission.LEASE_FIT_POLICY, lambda: _raise_dry_create(alpha, bigger))
        assert _dry_create(alpha, pod) == (200, "")
        ending = Release(
            id="market.end", sender="market", receiver="alpha", epoch=1,
            lease_id=lease.lease_id, reason="expired",
        ).model_dump(mode="json")  # fmt: skip
        market.merge_patch("gpuleases/status", HOME, name, {"status": {"ending": ending}})
        wait_denied_by(admission.LEASE_FIT_POLICY, lambda: _raise_dry_create(alpha, pod))
        _refused_by_fit(_dry_create(alpha, pod), "a pod of an ending lease")
    finally:
        Kube(cluster.host.kubeconfig).delete("gpuleases", HOME, name)
        market.close()
        alpha.close()


def test_a_released_lease_is_no_parameter_of_the_fit_policy(deployed: Any, cluster: Any) -> None:
    """The market labels a lease released (`gpuparley.io/released`) as it releases it, and the
    fit binding selects only leases without that label: the policy is evaluated once per
    parameter for every pod write, so an agent's pod writes cost what the leases it holds cost,
    not every lease it ever held. A held lease beside it is enforced as before; a pod naming the
    released one waits unbound, for the market, which binds pods of its active leases only."""
    market = Kube(cluster.host.agent_kubeconfigs[rbac.MARKET_USER])
    alpha = Kube(cluster.host.agent_kubeconfigs[HOME])
    bigger: dict[str, dict[str, Any]] = {}
    names = []
    try:
        for which in ("held", "released"):
            lease = _lease("whole").model_copy(
                update={"lease_id": f"adm-{which}", "id": f"market.{which}"}
            )
            job = JOBS[lease.job]
            obj = objects.gpulease_object(lease, lease_grant(lease, job.pod))
            market.create("gpuleases", HOME, obj)
            names.append(obj["metadata"]["name"])
            pod = host_pod(pods_for_job(job)[0], obj["metadata"]["name"], lease.resources[0])
            pod["metadata"]["name"] = f"adm-{which}-0"
            _limits(pod)["cpu"] = "1000"
            bigger[which] = pod
            probe = functools.partial(_raise_dry_create, alpha, pod)
            wait_denied_by(admission.LEASE_FIT_POLICY, probe)
        release = Release(
            id="market.rel", sender="market", receiver="alpha", epoch=1,
            lease_id="adm-released", reason="finished",
        ).model_dump(mode="json")  # fmt: skip
        released = {"metadata": {"labels": {objects.RELEASED_LABEL: "true"}}}
        market.merge_patch("gpuleases", HOME, names[1], released)
        market.merge_patch("gpuleases/status", HOME, names[1], {"status": {"release": release}})
        wait_for(
            "the released lease to leave the fit policy's parameters",
            lambda: _dry_create(alpha, bigger["released"])[0] == 200,
        )
        _refused_by_fit(_dry_create(alpha, bigger["held"]), "too big a pod of a held lease")
    finally:
        admin = Kube(cluster.host.kubeconfig)
        for name in names:
            admin.delete("gpuleases", HOME, name)
        admin.close()
        market.close()
        alpha.close()
