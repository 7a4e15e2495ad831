"""The agent's side of its leases: pods synced to the host, ends applied, applied ends listed.

Why apart from the negotiator's decisions (`negotiator.py`): this is the part a virtual control
plane's syncer does -- it never decides anything, it makes the two clusters say what the
GPULeases say, and it is where the protocol's rules for a lease's end are kept on the agent's
side (`deploy/protocol/README.md`, rules 1 and 8):

* for every active `GPULease` of a job not finished, its pods are synced to the host namespace
  with the lease's node and GPU resources, for the market to bind (`schedulerName:
  gpuparley-market`); the market binds them once every pod of the lease exists and fits it (a
  gang starts all together or not at all). The agent's own pods are then bound to the host node
  and mirror the host pods' phase. A lease for a job whose pods all Succeeded syncs nothing,
  whatever it says (a deposed market's late write: the protocol's gaps);
* a lease marked ending is no longer synced and its host pods are deleted; once released, a
  finished job's pods are marked Succeeded, any other job's are created again unbound to wait.
  Each release is applied once and skipped after (`settled`), so a reconcile costs what the
  leases held cost, not the agent's whole history; and of those, only the leases not in step
  (a pod to create, move, bind or mirror) go to the request pool, each lease's message read
  again only when its object changed;
* the releases applied are listed in the agent's Negotiator status (`acknowledge`), and the
  market deletes all but the agent's latest ones (`market_collection.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gpuparley.deploy import objects
from gpuparley.deploy.crds import APPLIED_RELEASES
from gpuparley.deploy.informer import Informer
from gpuparley.deploy.kube import Conflict, Kube, NotFound
from gpuparley.deploy.telemetry import Telemetry
from gpuparley.deploy.workload import HOSTNAME_LABEL, PodGroup, host_pod, recreate_unbound
from gpuparley.envs.market.messages import Lease


def _as_leased(host: dict[str, Any], lease_object: str, node: str) -> bool:
    """The host pod names the lease and is pinned to the lease's node for it."""
    labels = host["metadata"].get("labels") or {}
    selector = (host.get("spec") or {}).get("nodeSelector") or {}
    return labels.get(objects.LEASE_LABEL) == lease_object and selector.get(HOSTNAME_LABEL) == node


def _mirrored(agent_pod: dict[str, Any], host: dict[str, Any]) -> bool:
    """The agent's pod shows the host pod's binding and phase (nothing to mirror yet if the
    host pod is not bound)."""
    if not (host.get("spec") or {}).get("nodeName"):
        return True
    if not (agent_pod.get("spec") or {}).get("nodeName"):
        return False
    phase = (host.get("status") or {}).get("phase")
    return not phase or phase == (agent_pod.get("status") or {}).get("phase")


def _in_step(
    lease_object: str, lease: Lease, group: PodGroup, host_pods: dict[str, dict[str, Any]]
) -> bool:
    """Every pod of the lease is on the host as the lease says, and the agent's copy is bound
    to its node with its phase: `LeaseSync._run` and `_release` would write nothing."""
    pods = group.pods
    if len(lease.resources) != len(pods):
        return False  # `_run` reports it
    for item in lease.resources:
        agent_pod = pods[item.pod]
        host = host_pods.get(agent_pod["metadata"]["name"])
        if host is None or not _as_leased(host, lease_object, item.node):
            return False
        if not _mirrored(agent_pod, host):
            return False
    return True


def active_lease_of(job: str, leases: list[dict[str, Any]]) -> str | None:
    """The id of `job`'s active lease among the GPULease objects `leases` (None: none): the
    lease a renewal names. An ending or released one is not renewed."""
    for obj in leases:
        if objects.lease_phase(obj) != objects.ACTIVE:
            continue
        if (obj.get("spec") or {}).get("job") == job:
            return obj["spec"]["lease_id"]
    return None


class LeaseSync:
    """One agent's leases made real in both clusters; `sync` is idempotent (a reconcile)."""

    def __init__(
        self,
        agent: str,
        home: str,
        workload_namespace: str,
        host: Kube,
        plane: Kube,
        *,
        host_pods: Informer,
        agent_pods: Informer,
        mine: Informer,
        telemetry: Telemetry,
        reject: Callable[[str, str], None],
    ) -> None:
        self.agent = agent
        self.home = home  # its namespace on the host
        self.workload_namespace = workload_namespace  # its job pods' namespace in its plane
        self.host = host
        self.plane = plane
        self.host_pods = host_pods  # the negotiator's watches, read and updated from writes
        self.agent_pods = agent_pods
        self.mine = mine  # its Negotiator object
        self.telemetry = telemetry
        self.reject = reject
        # Released leases whose end was applied (name -> resourceVersion), skipped by the
        # reconcile: its cost follows the leases held, not all ever held (a restart redoes each).
        self.settled: dict[str, str | None] = {}
        # Each GPULease's message as last read (name -> (resourceVersion, Lease)): a reconcile
        # runs at every change watched, and validating every held lease again each time was a
        # quarter of its cost.
        self._read: dict[str, tuple[str | None, Lease]] = {}

    def acknowledge(self, leases: list[dict[str, Any]]) -> None:
        """List in the Negotiator status the released leases whose end this process applied
        and which still exist, oldest release first (the market deletes oldest first those it
        no longer keeps, `market_collection.py`: a list cut at its bound still names the next
        one). Written only when one is new to the list."""
        epochs = {obj["metadata"]["name"]: objects.release_epoch(obj) for obj in leases}
        settled = sorted((n for n in self.settled if n in epochs), key=lambda n: (epochs[n], n))
        applied = settled[:APPLIED_RELEASES]
        mine = self.mine.get(self.home, self.agent) or {}
        if set(applied) <= set((mine.get("status") or {}).get("appliedReleases") or []):
            return
        status = {"status": {"appliedReleases": applied}}
        written = self.host.merge_patch("negotiators/status", self.home, self.agent, status)
        self.mine.observe(written)

    # ------------------------------------------------------------------ leases -> pods
    def sync(self, groups: dict[str, PodGroup], leases: list[dict[str, Any]]) -> None:
        """Bring the host pods and the agent's own pods in line with its GPULeases (`groups`:
        its job pods by job; `leases`: the GPULease objects of its home namespace)."""
        host_pods = {p["metadata"]["name"]: p for p in self.host_pods.objects()}
        active_jobs = set()
        parsed: list[tuple[dict[str, Any], Lease]] = []
        versions = {o["metadata"]["name"]: o["metadata"].get("resourceVersion") for o in leases}
        self.settled = {n: v for n, v in self.settled.items() if n in versions and versions[n] == v}
        self._read = {n: read for n, read in self._read.items() if n in versions}
        for obj in leases:
            if obj["metadata"]["name"] in self.settled:
                continue
            try:
                lease = self._message(obj)
            except ValueError as exc:
                self.reject("malformed-lease", str(exc))
                continue
            if lease.holder != self.agent:
                self.reject("foreign-lease", f"lease {lease.lease_id} is held by {lease.holder}")
                continue
            parsed.append((obj, lease))
            if objects.lease_phase(obj) == objects.ACTIVE:
                active_jobs.add(lease.job)
        running = []
        for obj, lease in parsed:
            group = groups.get(lease.job)
            phase = objects.lease_phase(obj)
            if phase != objects.ACTIVE:  # ending or released: no pods sync
                self._end(obj, lease, group, host_pods, lease.job in active_jobs)
                if phase == objects.RELEASED:
                    self.settled[obj["metadata"]["name"]] = obj["metadata"].get("resourceVersion")
            elif group is not None and group.finished:
                continue  # whatever a lease says (a deposed market's late write: protocol gaps)
            elif group is not None:
                running.append((obj, lease, group))
            else:
                self.reject("lease-without-pods", f"no pods for leased job {lease.job!r}")
        # The active leases are synced after the ended ones' pods are deleted, all at once (each
        # touches its own job's pods only): a clearing's leases cost one round trip, not one each.
        # Their host pods first, on which the market waits; then the agent
        # plane's side of the leases whose pods all exist.
        # A lease whose pods already say what it says in both clusters needs no request: only
        # the others go to the request pool, so an event costs what changed, not every lease.
        pending = [
            (obj, lease, group)
            for obj, lease, group in running
            if not _in_step(obj["metadata"]["name"], lease, group, host_pods)
        ]
        complete = self.host.each(lambda run: self._run(*run, host_pods), pending)
        placed = [run for run, done in zip(pending, complete, strict=True) if done]
        self.plane.each(lambda run: self._release(run[1], run[2], host_pods), placed)
        self.telemetry.leases.set(len(running))

    def _message(self, obj: dict[str, Any]) -> Lease:
        """The GPULease's `Lease` message, validated again only when the object changed."""
        name, version = obj["metadata"]["name"], obj["metadata"].get("resourceVersion")
        read = self._read.get(name)
        if read is None or version is None or read[0] != version:
            read = self._read[name] = (version, Lease.model_validate(obj.get("spec") or {}))
        return read[1]

    def _run(
        self,
        obj: dict[str, Any],
        lease: Lease,
        group: PodGroup,
        host_pods: dict[str, dict[str, Any]],
    ) -> bool:
        """Sync the lease's host pods; whether every one of them exists as the lease says."""
        name = obj["metadata"]["name"]
        pods = group.pods
        if len(lease.resources) != len(pods):
            self.reject(
                "lease-mismatch",
                f"lease {lease.lease_id} covers "
                f"{len(lease.resources)} pods, job {lease.job} has {len(pods)}",
            )
            return False
        complete = True
        for item in lease.resources:
            agent_pod = pods[item.pod]
            pod_name = agent_pod["metadata"]["name"]
            existing = host_pods.get(pod_name)
            if existing is not None:
                if _as_leased(existing, name, item.node):
                    continue
                # Moved by a renewal that migrated the job, or left over from an older lease.
                if not existing["metadata"].get("deletionTimestamp") and self.host.delete(
                    "pods", self.home, pod_name
                ):
                    self.telemetry.pods_synced.labels("deleted").inc()
                complete = False
                continue
            copy = host_pod(agent_pod, name, item)
            created = self.host.create("pods", self.home, copy)
            if created is not None:
                self.host_pods.observe(created)
                self.telemetry.pods_synced.labels("created").inc()
            host_pods[pod_name] = created or {}
        return complete

    def _release(self, lease: Lease, group: PodGroup, host_pods: dict[str, dict[str, Any]]) -> None:
        """Every pod of the lease exists on the host: the agent plane follows the host pods."""
        pods = group.pods
        for item in lease.resources:
            self._mirror(pods[item.pod], host_pods.get(pods[item.pod]["metadata"]["name"]) or {})

    def _mirror(self, agent_pod: dict[str, Any], host: dict[str, Any]) -> None:
        """Reflect the host pod's binding and phase on the agent's pod."""
        if _mirrored(agent_pod, host):
            return
        node: str = host["spec"]["nodeName"]  # bound, or it would be mirrored already
        name = agent_pod["metadata"]["name"]
        namespace = self.workload_namespace
        if not (agent_pod.get("spec") or {}).get("nodeName"):
            try:
                self.plane.bind(namespace, name, node)
            except Conflict:
                return  # bound a moment ago; the watch has not told us yet
            except NotFound:
                return  # deleted meanwhile; the watch catches up
            agent_pod["spec"]["nodeName"] = node
            self.telemetry.pods_synced.labels("bound").inc()
        phase = (host.get("status") or {}).get("phase")
        if phase and phase != (agent_pod.get("status") or {}).get("phase"):
            patched = self.plane.merge_patch(
                "pods/status", namespace, name, {"status": {"phase": phase}}
            )
            self.agent_pods.observe(patched)

    def _end(
        self,
        obj: dict[str, Any],
        lease: Lease,
        group: PodGroup | None,
        host_pods: dict[str, dict[str, Any]],
        job_has_active_lease: bool,
    ) -> None:
        """Ending: its host pods deleted. Released: its job's pods Succeeded, or unbound again."""
        name = obj["metadata"]["name"]
        for pod_name, pod in list(host_pods.items()):
            if (pod.get("metadata", {}).get("labels") or {}).get(objects.LEASE_LABEL) == name:
                if pod["metadata"].get("deletionTimestamp"):
                    continue
                if self.host.delete("pods", self.home, pod_name):
                    self.telemetry.pods_synced.labels("deleted").inc()
                del host_pods[pod_name]
        release = (obj.get("status") or {}).get("release")
        if not release or group is None or job_has_active_lease:
            return
        namespace = self.workload_namespace
        if release.get("reason") == "finished":
            for pod in group.pods:
                if (pod.get("status") or {}).get("phase") != "Succeeded":
                    patched = self.plane.merge_patch(
                        "pods/status",
                        namespace,
                        pod["metadata"]["name"],
                        {"status": {"phase": "Succeeded"}},
                    )
                    self.agent_pods.observe(patched)
                    self.telemetry.pods_synced.labels("completed").inc()
            return
        for pod in group.pods:
            if not (pod.get("spec") or {}).get("nodeName"):
                continue  # waiting already
            self.agent_pods.observe(recreate_unbound(self.plane, namespace, pod))
            self.telemetry.pods_synced.labels("unbound").inc()
