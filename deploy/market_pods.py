"""The market's side of pods: bind a lease's pods together, evict what no lease covers.

Why apart from the controller's loop: this is the part that makes a lease the only right to
run, and it is where an agent's pods are checked against what it was granted. The market is the
one party that knows every lease for certain (it holds them in memory; admission sees them
through a cache), and the only one that binds agents' pods on the host (they name it as their
scheduler, `objects.MARKET_SCHEDULER`, so kube-scheduler leaves them alone; agents may not bind),
so before it binds a lease's pods it checks them itself:

* every pod must fit the lease's grant (`lease_grant.grant_violations`: resources, GPU kind,
  node of its slot); a pod that does not is evicted at once (deleted, counted as
  `pod-exceeds-lease`, logged), and the holder may create a correct one;
* a lease's slots hold one pod each; a second pod claiming a taken slot is evicted likewise;
* only when every slot holds a fitting pod are they bound, each to its slot's node and guarded by
  the pod's resourceVersion, so a pod changed (or created again) after the check is not bound on
  the strength of it;
* and only if the market's state is still this replica's (`fence`, a read of the state's
  resourceVersion after the pods were read): a replica deposed meanwhile binds no pod and
  deletes no pod on the strength of leases the new leader may have ended or granted since.

When a lease ends, the market deletes its pods (`reclaim`) after marking it ending and before
it writes the release (`market_leases.py`). At each clearing every pod of an agent namespace
that the market polices -- it asks for a GPU, names the market as its scheduler, or names a
lease --
and that no active lease covers is deleted (reclaimed from a lease that ended or moved, evicted
otherwise). Pods an operator runs there (the negotiator's own Deployment) are none of these and
are left alone.

The pods come from the market's watch of the host's pods (`source`, an informer's cache), so
admitting and waiting for placements cost no polling: the market looks again when a pod changes.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from gpuparley.deploy import objects
from gpuparley.deploy.gpu_resources import is_gpu_resource
from gpuparley.deploy.informer import Wakeup
from gpuparley.deploy.kube import Conflict, Invalid, Kube, NotFound
from gpuparley.deploy.lease_grant import grant_violations, lease_grant, lease_of, pod_index
from gpuparley.deploy.objects import MARKET_SCHEDULER
from gpuparley.deploy.telemetry import Telemetry
from gpuparley.deploy.workload import HOSTNAME_LABEL, waiting
from gpuparley.envs.market.core import Market
from gpuparley.envs.market.messages import Lease, Release

log = logging.getLogger("gpuparley.market")
Pods = dict[tuple[str, str], list[dict[str, Any]]]
QUIET_GAP = 0.01  # seconds without a pod change before a placement wait looks again ...
QUIET_CAP = 0.05  # ... waiting at most this much longer


def lease_key(lease: Lease) -> tuple[str, str]:
    """(holder namespace, GPULease object name): how host pods name their lease."""
    return objects.agent_namespace(lease.holder), objects.object_name(lease.lease_id, "lease")


def placed(lease: Lease, pods: list[dict[str, Any]]) -> bool:
    """Every pod of the lease is bound to a node the lease names."""
    nodes = {item.node for item in lease.resources}
    bound = [p for p in pods if (p.get("spec") or {}).get("nodeName") in nodes]
    return len(bound) == len(lease.resources)


def is_gpu_pod(pod: dict[str, Any]) -> bool:
    spec = pod.get("spec") or {}
    for container in [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]:
        resources = container.get("resources") or {}
        for kind in ("limits", "requests"):
            if any(is_gpu_resource(k) for k in resources.get(kind) or {}):
                return True
    return False


def policed(pod: dict[str, Any]) -> bool:
    """Whether the market answers for this pod: it asks for a GPU, is the market's to bind, or
    names a lease (everything an agent may create in its namespace is one of these)."""
    scheduler = (pod.get("spec") or {}).get("schedulerName")
    return is_gpu_pod(pod) or scheduler == MARKET_SCHEDULER or bool(lease_of(pod))


def _deleting(pod: dict[str, Any]) -> bool:
    return bool((pod.get("metadata") or {}).get("deletionTimestamp"))


class LeasePods:
    """Pods under the market's leases on the host (state: counters the status reports)."""

    def __init__(
        self,
        kube: Kube,
        market: Market,
        agents: list[str],
        telemetry: Telemetry,
        source: Callable[[], list[dict[str, Any]]],
        fence: Callable[[], None],
    ):
        self.kube = kube
        self.market = market
        self.agents = agents
        self.telemetry = telemetry
        self.source = source  # the host's pods as last seen (an informer's cache)
        # Raises if another replica wrote the market state since this one did (`MarketState.
        # confirm`): called after the pods are read and before any of them is written.
        self.fence = fence
        self.namespaces = {objects.agent_namespace(agent) for agent in agents}
        # Grants that are not market leases: jobs bargaining admits within their owner's own
        # quota (`LeasePublisher._quota_changes`), active and ended.
        self.quota_leases: dict[int, Lease] = {}
        self.quota_releases: list[tuple[Lease, Release]] = []
        self.evicted: list[str] = []  # namespace/pod of every eviction, in order
        self.reclaimed_pods = 0
        self.misfits: Counter[str] = Counter()  # why pods were evicted at admission
        # (namespace, name) -> the resourceVersion this replica bound: the pod cache may not
        # show the binding yet at the next look, and binding it again would only meet a 409.
        self._bound: dict[tuple[str, str], str] = {}
        # Admission passes run at every event the market waits on, over every active lease and
        # its pods; checking each pod against its grant again each time cost about 30 us per
        # lease (mostly parsing quantities): 31 ms a pass with 1,000 leases. So each lease's
        # grant is kept while the lease object is the same (a renewal makes a new one), and each
        # pod's verdict while its resourceVersion and its lease's grant are.
        self._grants: dict[tuple[str, str], tuple[Lease, dict[str, Any]]] = {}
        self._verdicts: dict[tuple[str, str], tuple[str, dict[str, Any], list[str]]] = {}

    def active(self) -> list[Lease]:
        """Every lease pods may run under now: the market's, and own-quota grants."""
        return [*self.market.leases.values(), *self.quota_leases.values()]

    def grant(self, lease: Lease) -> dict[str, Any]:
        """What each pod of `lease` may use, from the market's own record of the job (computed
        afresh: a renewal keeps the lease id but may move the job to other nodes)."""
        return lease_grant(lease, self.market.jobs_by_name[lease.job].pod)

    def _current_grant(self, lease: Lease, key: tuple[str, str]) -> dict[str, Any]:
        """`grant(lease)` (`key` its `lease_key`), computed again only for another lease object
        (frozen: a renewal, or another lease under the same key, is a new object)."""
        kept = self._grants.get(key)
        if kept is None or kept[0] is not lease:
            kept = self._grants[key] = (lease, self.grant(lease))
        return kept[1]

    def _violations(self, pod: dict[str, Any], grant: dict[str, Any]) -> list[str]:
        """`grant_violations(pod, grant)`, looked at again only when the pod or the grant
        changed."""
        meta = pod["metadata"]
        key, version = (meta["namespace"], meta["name"]), meta.get("resourceVersion")
        kept = self._verdicts.get(key)
        if version and kept is not None and kept[0] == version and kept[1] is grant:
            return kept[2]
        problems = grant_violations(pod, grant)
        if version:
            self._verdicts[key] = (version, grant, problems)
        return problems

    def agent_pods(self) -> list[dict[str, Any]]:
        """The host pods of agent namespaces."""
        return [p for p in self.source() if p["metadata"].get("namespace") in self.namespaces]

    def lease_pods(self) -> Pods:
        """Host pods that carry a lease label, by (namespace, lease object name)."""
        found: Pods = {}
        for pod in self.agent_pods():
            if lease_of(pod):
                found.setdefault((pod["metadata"]["namespace"], lease_of(pod)), []).append(pod)
        return found

    def admit(self, pods: Pods, leases: Iterable[Lease] | None = None) -> None:
        """Bind each lease's pods (default: the active leases') to their slots' nodes, all at
        once, once every slot holds a pod that fits the lease (misfits and second claimants of a
        slot are evicted). Nothing is written unless `fence` passes after the pods were read."""
        misfits: list[tuple[dict[str, Any], str]] = []
        admitted: list[tuple[dict[str, Any], str]] = []
        for lease in self.active() if leases is None else leases:
            key = lease_key(lease)
            grant = self._current_grant(lease, key)
            slots: dict[int, dict[str, Any]] = {}
            candidates = sorted(
                (p for p in pods.get(key, []) if not _deleting(p)),
                key=lambda p: (p["metadata"].get("creationTimestamp") or "", p["metadata"]["name"]),
            )
            for pod in candidates:
                problems = self._violations(pod, grant)
                taken = slots.get(pod_index(pod))
                if not problems and taken is not None:
                    problems = [f"slot {pod_index(pod)} is held by {taken['metadata']['name']}"]
                if problems:
                    misfits.append((pod, problems[0]))
                    continue
                slots[pod_index(pod)] = pod
            if len(slots) == len(lease.resources):  # else: not every pod of the lease exists yet
                nodes = {item.pod: item.node for item in lease.resources}
                admitted += [
                    (pod, nodes[index])
                    for index, pod in slots.items()
                    if waiting(pod, MARKET_SCHEDULER) and not self._binding_made(pod)
                ]
        if not misfits and not admitted:
            return
        self.fence()
        evicted = self.kube.each(self._delete, [pod for pod, _reason in misfits])
        self.kube.each(lambda bound: self._bind(*bound), admitted)
        for (pod, reason), gone in zip(misfits, evicted, strict=True):
            if gone:
                self._evicted(pod, "pod-exceeds-lease", reason)

    def _binding_made(self, pod: dict[str, Any]) -> bool:
        meta = pod["metadata"]
        return self._bound.get((meta["namespace"], meta["name"])) == meta.get("resourceVersion")

    def _bind(self, pod: dict[str, Any], node: str) -> None:
        # Gone, or changed since it was checked: the next look checks it again.
        meta = pod["metadata"]
        with contextlib.suppress(NotFound, Conflict, Invalid):
            self.kube.bind(meta["namespace"], meta["name"], node, meta.get("resourceVersion"))
            self._bound[meta["namespace"], meta["name"]] = meta.get("resourceVersion") or ""

    def _evicted(self, pod: dict[str, Any], category: str, reason: str) -> None:
        """Count and log the eviction of a pod that broke its lease."""
        meta = pod["metadata"]
        self.misfits[category] += 1
        self.evicted.append(f"{meta['namespace']}/{meta['name']}")
        self.telemetry.rejections.labels(category).inc()
        self.telemetry.pods_synced.labels("evicted").inc()
        log.warning(
            "evicted a pod outside its lease",
            extra={"namespace": meta["namespace"], "pod": meta["name"], "reason": reason},
        )

    def await_placements(self, leases: list[Lease], deadline: float, wakeup: Wakeup) -> bool:
        """Hold until the pods of `leases` are bound where they say (True), or the monotonic
        `deadline`, admitting them as they appear.

        In the simulator a lease is placed the instant it is signed; on a cluster the holder
        must sync its pods and the market must check and bind them. Job
        progress is modelled, so the market publishes what a clearing changed only once the
        leases it granted before are real. A holder that does not sync in time (crashed,
        partitioned, or whose pods keep being evicted) can delay the market, never block it.
        """
        while True:
            pods = self.lease_pods()
            self.admit(pods, leases)
            unplaced = [
                lease.lease_id
                for lease in leases
                if not placed(lease, pods.get(lease_key(lease), []))
            ]
            if not unplaced:
                return True
            if time.monotonic() > deadline:
                log.warning("leases not placed in time", extra={"leases": unplaced[:10]})
                return False
            # The holders create a clearing's pods in a burst: bind them in few passes (each
            # pass that binds reads the state first, `fence`), at a few ms of latency.
            wakeup.wait_quiet(min(1.0, deadline - time.monotonic()), QUIET_GAP, QUIET_CAP)

    def reclaim(self, leases: list[Lease], deadline: float, wakeup: Wakeup) -> None:
        """Delete every pod of `leases` (ending: their holders no longer sync them) and hold
        until the watch shows none left; past the monotonic `deadline`, delete what a list from
        the apiserver shows instead (a deletion is immediate, grace period 0, so then none are
        left that the market ever admitted: a pod created later stays unbound, as the market
        binds no pod of an ending lease). The first phase of a lease's end: its release
        follows."""
        keys = {lease_key(lease) for lease in leases}
        while True:
            pods = [
                pod
                for pod in self.agent_pods()
                if (pod["metadata"]["namespace"], lease_of(pod)) in keys
            ]
            if not pods:
                return
            if time.monotonic() > deadline:
                log.warning("pods of ending leases still seen", extra={"pods": len(pods)})
                selector = objects.LEASE_LABEL + "={}"
                listed = [self.kube.list("pods", ns, selector.format(name)) for ns, name in keys]
                self._reclaim([pod for found in listed for pod in found])
                return
            self._reclaim([pod for pod in pods if not _deleting(pod)])
            wakeup.wait(min(1.0, max(0.0, deadline - time.monotonic())))

    def _reclaim(self, pods: list[dict[str, Any]]) -> None:
        if pods:
            self.fence()
        for deleted in self.kube.each(self._delete, pods):
            if deleted:
                self.reclaimed_pods += 1
                self.telemetry.pods_synced.labels("reclaimed").inc()

    def _delete(self, pod: dict[str, Any]) -> bool:
        """Delete the pod judged (its uid); False if it is gone or another took its name. Its
        verdict goes with it: a pod created again under the name is judged afresh."""
        meta = pod["metadata"]
        self._verdicts.pop((meta["namespace"], meta["name"]), None)
        return self.kube.delete("pods", meta["namespace"], meta["name"], meta.get("uid"))

    def enforce(self) -> None:
        """Delete the policed pods of agent namespaces that no active lease of theirs covers.

        A pod of one of the market's own leases - one whose renewal moved the job to another
        node, or a late copy under a lease that has ended (the end itself deletes a lease's
        pods: `reclaim`) - is *reclaimed*: its holder is told (the lease's new resources, or
        `status.ending`) and normally deletes or moves it within moments, but the capacity
        already belongs to someone else. Any other uncovered pod - no lease, someone
        else's lease, a lease that never existed, a CPU-only pod waiting for a lease that will
        never come - is *evicted*: that is an agent running (or queueing) what it did not win.
        """
        covered = {
            lease_key(lease): {item.node for item in lease.resources} for lease in self.active()
        }
        uncovered = []
        pods = self.agent_pods()
        present = {(p["metadata"]["namespace"], p["metadata"]["name"]) for p in pods}
        self._bound = {key: v for key, v in self._bound.items() if key in present}
        self._verdicts = {key: v for key, v in self._verdicts.items() if key in present}
        self._grants = {key: v for key, v in self._grants.items() if key in covered}
        for pod in pods:
            if not policed(pod) or _deleting(pod):
                continue
            spec = pod.get("spec") or {}
            nodes = covered.get((pod["metadata"]["namespace"], lease_of(pod)))
            node = spec.get("nodeName") or (spec.get("nodeSelector") or {}).get(HOSTNAME_LABEL)
            if nodes is None or node not in nodes:
                uncovered.append((pod, node))
        if not uncovered:
            return
        self.fence()
        # Only now (the history of ends grows with every lease the market ever held): which
        # uncovered pods are of a lease that ended, so reclaimed, not evicted.
        ended = {lease_key(le) for le, _rel in [*self.market.releases, *self.quota_releases]}
        deleted = self.kube.each(self._delete, [pod for pod, _node in uncovered])
        for (pod, node), gone in zip(uncovered, deleted, strict=True):
            meta = pod["metadata"]
            namespace, lease = meta["namespace"], lease_of(pod)
            if not gone:
                continue
            if (namespace, lease) in ended or (namespace, lease) in covered:
                self.reclaimed_pods += 1
                self.telemetry.pods_synced.labels("reclaimed").inc()
                continue
            self.evicted.append(f"{namespace}/{meta['name']}")
            self.telemetry.pods_synced.labels("evicted").inc()
            log.warning(
                "evicted a pod no lease covers",
                extra={
                    "namespace": namespace,
                    "pod": meta["name"],
                    "lease": lease,
                    "node": node,
                },
            )
