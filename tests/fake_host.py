"""The market's host apiserver, faked for unit tests, and the leases and pods they use.

`FakeKube` is enough of `deploy/kube.Kube` for the market controller (objects by resource,
namespace and name; resourceVersions; merge patches as the apiserver applies them; bindings with
their preconditions), so the market's rules can be pinned on hand-built objects without a
cluster. Shared by the market's unit tests (`test_deploy_hardening_units.py`,
`test_market_fencing.py`, `test_lease_end.py`, ...).
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from gpuparley.deploy import objects
from gpuparley.deploy.kube import Conflict
from gpuparley.deploy.lease_grant import lease_grant
from gpuparley.deploy.market_controller import MarketController
from gpuparley.deploy.workload import host_pod, pods_for_job
from gpuparley.envs.market.messages import Lease, ResourceItem
from gpuparley.envs.scenario import load_scenario

# A kubeconfig that loads but whose apiserver refuses every connection (nothing listens on port 1
# of this host): a client that is never connected, or a request that fails as `Unavailable`.
UNREACHABLE_KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
"""


def unreachable_kubeconfig(folder: Path) -> Path:
    path = folder / "kubeconfig"
    path.write_text(UNREACHABLE_KUBECONFIG)
    return path


SCENARIO = "cluster-e2e"
JOBS = {job.name: job for job in load_scenario(SCENARIO).build_jobs(0)}
# One job of each kind the attacker oversized: a whole GPU, a 2-pod gang, a time-slice
# share and a MIG 3g.40gb instance.
KINDS = {
    "whole": ("gen-000021", [ResourceItem(pod=0, node="whole-0", gpu_kind="whole", gpus=(1,))]),
    "gang": (
        "gen-000002",
        [
            ResourceItem(pod=0, node="whole-0", gpu_kind="whole", gpus=(0,)),
            ResourceItem(pod=1, node="whole-0", gpu_kind="whole", gpus=(2,)),
        ],
    ),
    "share": (
        "gen-000001",
        [ResourceItem(pod=0, node="shared-0", gpu_kind="share", gpus=(0,), gpu_milli=250)],
    ),
    "mig": (
        "gen-000019",
        [ResourceItem(pod=0, node="mig-0", gpu_kind="mig", mig_profile="3g.40gb", mig_start=0)],
    ),
}


def _lease(kind: str) -> Lease:
    job, items = KINDS[kind]
    return Lease(
        id=f"market.{kind}", sender="market", receiver=JOBS[job].owner, epoch=0,
        lease_id=f"lease-{kind}", holder=JOBS[job].owner, lender="market", job=job,
        resources=tuple(items), start_epoch=0, expires_epoch=4, price=1.0,
    )  # fmt: skip


def _host_pods(kind: str) -> tuple[Lease, dict[str, Any], list[dict[str, Any]]]:
    lease = _lease(kind)
    job = JOBS[lease.job]
    grant = lease_grant(lease, job.pod)
    agent_pods = pods_for_job(job)
    name = objects.object_name(lease.lease_id, "lease")
    pods = [host_pod(agent_pods[item.pod], name, item) for item in lease.resources]
    return lease, grant, pods


def _merged(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """A JSON merge patch (RFC 7386), as the apiserver applies one: objects merge key by key,
    null removes, anything else replaces."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            target[key] = _merged(target[key], value)
        else:
            target[key] = value
    return target


class FakeKube:
    """Enough of `Kube` for the market: objects by (resource, namespace, name), each write
    giving the object a new resourceVersion and logged in `writes` (verb, resource, name)."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.bindings: list[tuple[str, str]] = []  # (pod, node), in order
        self.binding_requests = 0  # refused ones too
        self.writes: list[tuple[str, str, str]] = []
        self.requests: Counter[str] = Counter()
        self.extra: dict[str, str] = {}  # names no market replica: the fence is the apiserver's
        self._version = 100

    def add(self, resource: str, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        meta.setdefault("resourceVersion", "1")
        self.objects[resource, meta.get("namespace", ""), meta["name"]] = obj

    def _store(self, verb: str, resource: str, namespace: str | None, obj: dict[str, Any]) -> Any:
        self._version += 1
        obj["metadata"].update(namespace=namespace or "", resourceVersion=str(self._version))
        self.objects[resource.partition("/")[0], namespace or "", obj["metadata"]["name"]] = obj
        self.writes.append((verb, resource, obj["metadata"]["name"]))
        return copy.deepcopy(obj)

    def each(self, request: Callable[[Any], Any], items: Iterable[Any]) -> list[Any]:
        return [request(item) for item in items]  # in order: the writes logged as made

    def get(self, resource: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.objects.get((resource, namespace or "", name)))

    def create(self, resource: str, namespace: str | None, obj: dict[str, Any]) -> Any:
        if (resource, namespace or "", obj["metadata"]["name"]) in self.objects:
            return None
        obj = copy.deepcopy(obj)
        obj["metadata"]["uid"] = f"uid-{self._version + 1}"  # a new object: a new uid
        return self._store("create", resource, namespace, obj)

    def replace(self, resource: str, namespace: str | None, obj: dict[str, Any]) -> Any:
        stored = self.objects[resource, namespace or "", obj["metadata"]["name"]]
        if obj["metadata"].get("resourceVersion") != stored["metadata"]["resourceVersion"]:
            raise Conflict(409, "Conflict", "the object has been modified")
        return self._store("replace", resource, namespace, copy.deepcopy(obj))

    def merge_patch(
        self, resource: str, namespace: str | None, name: str, patch: dict[str, Any]
    ) -> Any:
        kind = resource.partition("/")[0]
        obj = _merged(copy.deepcopy(self.objects[kind, namespace or "", name]), patch)
        self._store("patch", resource, namespace, obj)
        return obj

    def apply_configmap(self, namespace: str, name: str, data: dict[str, str]) -> None:
        if self.create("configmaps", namespace, {"metadata": {"name": name}, "data": data}):
            return
        self.merge_patch("configmaps", namespace, name, {"data": data})

    def list(
        self, resource: str, namespace: str | None = None, selector: str | None = None
    ) -> list[dict[str, Any]]:
        found = []
        for (kind, ns, _name), obj in sorted(self.objects.items()):
            if kind != resource or (namespace and ns != namespace):
                continue
            labels = obj["metadata"].get("labels") or {}
            key, _, value = (selector or "").partition("=")
            if selector and (key not in labels or (value and labels[key] != value)):
                continue
            found.append(copy.deepcopy(obj))
        return found

    def delete(
        self, resource: str, namespace: str | None, name: str, uid: str | None = None
    ) -> bool:
        key = (resource, namespace or "", name)
        if (
            uid is not None
            and key in self.objects
            and self.objects[key]["metadata"].get("uid") != uid
        ):
            return False  # the apiserver's uid precondition: another object of that name
        return self.objects.pop(key, None) is not None

    def bind(
        self, namespace: str, pod: str, node: str, resource_version: str | None = None
    ) -> None:
        self.binding_requests += 1
        obj = copy.deepcopy(self.objects["pods", namespace, pod])
        if resource_version and resource_version != obj["metadata"]["resourceVersion"]:
            raise Conflict(409, "Conflict", "Precondition failed: ResourceVersion")
        if obj["spec"].get("nodeName"):
            raise Conflict(409, "Conflict", f"pod {pod} is already assigned to a node")
        obj["spec"]["nodeName"] = node
        self._store("create", "pods/binding", namespace, obj)
        self.bindings.append((pod, node))


def _controller() -> tuple[MarketController, FakeKube]:
    kube = FakeKube()
    controller = MarketController(kube, load_scenario(SCENARIO), 0)  # type: ignore[arg-type]
    controller.pods.source = lambda: kube.list("pods")  # instead of the watch's cache
    return controller, kube
