"""A watcher for end-to-end market runs: samples the host and agent planes as admin while the
processes run, and records every violation of the invariants the market promises.

Invariants checked at every sample:

* **no over-commit**: on every host node, the GPU (and CPU/memory) limits of the pods bound there
  never exceed its allocatable resources;
* **inside a lease**: every bound host pod carries a lease label naming a `GPULease` of its own
  namespace whose resources name that node (after a renewal that moved the job to another node,
  the old copy may linger for at most `MIGRATION_GRACE_S`);
* **no pod under a released lease**: a lease ends in two phases (marked ending, its pods
  deleted, then released), so at the very revision its `status.release` was written no pod of
  it is bound on the host (not even one being deleted). Exact, not sampled: a watch of the
  GPULeases notes each release's resourceVersion, and the pods are listed as of that version
  (`resourceVersionMatch=Exact`; one etcd holds both, so its revisions order every write);
* **inside its grant**, pod by pod (not only node totals): every bound pod's GPU resources, CPU
  and memory are within its lease's grant and it sits on the node of the slot it claims
  (`lease_grant.grant_violations`, the rule admission and the market apply), and no two bound pods
  hold one slot of a lease;
* **atomic gangs**: when any pod of a multi-pod job is bound in its agent's plane while the job
  holds an active lease (not ending), every pod of that job exists on the host (the agent plane
  is sampled before the host, so "bound at t1" implies "created on the host before t1").
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from gpuparley.deploy import objects
from gpuparley.deploy.cluster.planes import LocalPlanes
from gpuparley.deploy.informer import Informer
from gpuparley.deploy.kube import Gone, Kube, Unavailable
from gpuparley.deploy.lease_grant import grant_violations, pod_index
from gpuparley.deploy.workload import JOB_NAME_ANNOTATION, group_pods

_RESOURCE_PREFIXES = ("nvidia.com/", "cpu", "memory")
MIGRATION_GRACE_S = 3.0


def _quantity(value: str) -> float:
    text = str(value)
    for suffix, scale in (("m", 1e-3), ("Mi", 1024**2), ("Gi", 1024**3), ("Ti", 1024**4)):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * scale
    return float(text)


@dataclass
class Observations:
    samples: int = 0
    overcommit: list[str] = field(default_factory=list)
    outside_lease: list[str] = field(default_factory=list)
    outside_grant: list[str] = field(default_factory=list)
    gang_splits: list[str] = field(default_factory=list)
    bound: dict[tuple[str, str], str] = field(default_factory=dict)  # (ns, pod) -> node
    # (ns, GPULease) -> the uids it was seen with: two are a lease written again once deleted
    lease_uids: dict[tuple[str, str], set[str]] = field(default_factory=lambda: defaultdict(set))
    peak_pods_per_node: dict[str, int] = field(default_factory=lambda: defaultdict(int))


class Observer(threading.Thread):
    """Samples until `stop()`; results in `.seen`."""

    def __init__(self, state: LocalPlanes, agents: list[str], interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.host = Kube(state.host.kubeconfig)
        self.planes = {a: Kube(state.agent(a).kubeconfig) for a in agents}
        self.agents = agents
        self.interval = interval
        self.seen = Observations()
        self._halt = threading.Event()
        # Bindings from a watch: a pod bound for a moment (a lease the model starts and ends
        # between two clearings) is seen even if no sample falls in that moment.
        homes = {objects.agent_namespace(a) for a in agents}
        self.bindings = Informer(self.host, "pods", on_object=self._record_binding)
        self.releases = Informer(self.host, "gpuleases", on_object=self._record_release)
        self._released: set[tuple[str, str]] = set()
        self._unchecked: list[tuple[str, str, str]] = []  # (ns, lease, release's version)
        self._homes = homes
        self.allocatable = {
            n["metadata"]["name"]: {
                k: _quantity(v)
                for k, v in n["status"]["allocatable"].items()
                if k.startswith(_RESOURCE_PREFIXES)
            }
            for n in self.host.list("nodes")
        }
        self.error: BaseException | None = None
        self._moved: dict[tuple[str, str, str], float] = {}

    def _record_binding(self, pod: dict[str, Any]) -> None:
        meta, node = pod["metadata"], (pod.get("spec") or {}).get("nodeName")
        if node and meta.get("namespace") in self._homes:
            self.seen.bound.setdefault((meta["namespace"], meta["name"]), node)

    def _record_release(self, lease: dict[str, Any]) -> None:
        meta = lease["metadata"]
        key = (meta["namespace"], meta["name"])
        self.seen.lease_uids[key].add(meta["uid"])
        if (lease.get("status") or {}).get("release") and key not in self._released:
            self._released.add(key)
            self._unchecked.append((*key, meta["resourceVersion"]))

    def start(self) -> None:
        self.bindings.start()
        self.releases.start()
        super().start()

    def stop(self) -> Observations:
        self.bindings.stop()
        self.releases.stop()
        self._halt.set()
        self.join(30)
        if self.error is not None:
            raise self.error
        self._check_releases()  # the last ones
        return self.seen

    def _check_releases(self) -> None:
        """No pod of a released lease was bound at the revision of its release."""
        while self._unchecked:
            ns, lease, version = self._unchecked[0]
            try:
                pods, _ = self.host.list_with_version(
                    "pods",
                    ns,
                    f"{objects.LEASE_LABEL}={lease}",
                    resource_version=version,
                    resource_version_match="Exact",
                )
            except Gone:  # compacted away (runs are shorter than etcd's compaction interval)
                pods = []
            for pod in pods:
                node = (pod.get("spec") or {}).get("nodeName")
                if node and (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
                    name = pod["metadata"]["name"]
                    self.seen.outside_lease.append(f"{ns}/{name} on {node} as {lease} is released")
            self._unchecked.pop(0)

    def run(self) -> None:
        try:
            while not self._halt.is_set():
                with contextlib.suppress(Unavailable):  # an apiserver restarting: look again
                    self.sample()
                time.sleep(self.interval)
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    def sample(self) -> None:
        agent_pods = {a: self.planes[a].list("pods", "default") for a in self.agents}
        # One list each (one resourceVersion): per-namespace lists taken one after another
        # would mix moments -- a pod gone in one namespace, its successor bound in another.
        host_pods: dict[str, list[dict[str, Any]]] = {ns: [] for ns in self._homes}
        leases: dict[str, dict[str, dict[str, Any]]] = {ns: {} for ns in self._homes}
        pods, version = self.host.list_with_version("pods")
        for pod in pods:
            host_pods.get(pod["metadata"]["namespace"], []).append(pod)
        # The leases as of the pods' very revision: listed later, a lease released and deleted
        # (collected) in between was missing beside a pod it still covered at that revision.
        exact = {"resource_version": version, "resource_version_match": "Exact"}
        for lease in self.host.list_with_version("gpuleases", **exact)[0]:
            leases.get(lease["metadata"]["namespace"], {})[lease["metadata"]["name"]] = lease
        self.seen.samples += 1
        self._check_nodes(host_pods, leases)
        self._check_gangs(agent_pods, host_pods, leases)
        self._check_releases()

    def _check_nodes(
        self, host_pods: dict[str, list[dict[str, Any]]], leases: dict[str, dict[str, Any]]
    ) -> None:
        used: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        count: dict[str, int] = defaultdict(int)
        slots: dict[tuple[str, str, int], str] = {}
        for ns, pods in host_pods.items():
            for pod in pods:
                node = (pod.get("spec") or {}).get("nodeName")
                if not node:
                    continue
                name = pod["metadata"]["name"]
                # a finished pod keeps its node: a short one that ran between two samples is
                # still seen as bound, but it holds nothing any more
                self.seen.bound[(ns, name)] = node
                if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                    continue
                count[node] += 1
                for container in pod["spec"]["containers"]:
                    for k, v in ((container.get("resources") or {}).get("limits") or {}).items():
                        used[node][k] += _quantity(v)
                lease_name = (pod["metadata"].get("labels") or {}).get(objects.LEASE_LABEL, "")
                lease = leases[ns].get(lease_name)
                nodes = {r["node"] for r in ((lease or {}).get("spec") or {}).get("resources", [])}
                if lease is not None and node in nodes:
                    # (A copy left on a node its lease no longer names is the migration case
                    # below, with its grace.)
                    for problem in grant_violations(pod, lease.get("grant")):
                        self.seen.outside_grant.append(f"{ns}/{name}: {problem}")
                    holder = slots.setdefault((ns, lease_name, pod_index(pod)), name)
                    if holder != name:
                        self.seen.outside_grant.append(f"{ns}/{name} and {holder} share a slot")
                if lease is None:
                    self.seen.outside_lease.append(f"{ns}/{name} on {node} (lease {lease_name!r})")
                elif node not in nodes:
                    # The lease moved the job to another node (a migrating renewal): the old
                    # copy must be gone within moments, or it squats on someone else's GPUs.
                    since = self._moved.setdefault((ns, name, node), time.monotonic())
                    if time.monotonic() - since > MIGRATION_GRACE_S:
                        self.seen.outside_lease.append(f"{ns}/{name} left on {node}")
        for node, resources in used.items():
            self.seen.peak_pods_per_node[node] = max(
                self.seen.peak_pods_per_node[node], count[node]
            )
            for resource, amount in resources.items():
                limit = self.allocatable.get(node, {}).get(resource, 0.0)
                if amount > limit + 1e-9:
                    self.seen.overcommit.append(f"{node}: {resource} {amount} > {limit}")

    def _check_gangs(
        self,
        agent_pods: dict[str, list[dict[str, Any]]],
        host_pods: dict[str, list[dict[str, Any]]],
        leases: dict[str, dict[str, Any]],
    ) -> None:
        for agent, pods in agent_pods.items():
            ns = objects.agent_namespace(agent)
            on_host = {p["metadata"]["name"] for p in host_pods[ns]}
            active_jobs = {  # an ending lease's pods are being deleted, its gang with them
                (o.get("spec") or {}).get("job")
                for o in leases[ns].values()
                if objects.lease_phase(o) == objects.ACTIVE
            }
            for job, group in group_pods(pods).items():
                # (a finished gang runs no more, whatever a lease says: its holder ignores a
                # GPULease for it, such as a collected one written again, `LeaseSync.sync`)
                if group.expected < 2 or job not in active_jobs or group.finished:
                    continue
                released = [p for p in group.pods if (p.get("spec") or {}).get("nodeName")]
                missing = [p["metadata"]["name"] for p in group.pods
                           if p["metadata"]["name"] not in on_host]  # fmt: skip
                if released and missing:
                    name = group.pods[0]["metadata"]["annotations"][JOB_NAME_ANNOTATION]
                    self.seen.gang_splits.append(f"{agent}/{name}: bound, missing {missing}")
