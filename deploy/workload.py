"""Jobs as Kubernetes pods, and pods back into the market's demands: one mapping both ways.

A job of `pods` identical pods is a *pod group*: every pod carries the label `gpuparley.io/job`
(the group's object-safe name) and the annotations below; a gang is a group of several pods (or
one pod asking for several GPUs). The GPU request lives where the NVIDIA device plugin puts it,
in the container's limits (names from `deploy/gpu_resources.py`):

* `whole`: `nvidia.com/gpu: <count>`;
* `mig`: `nvidia.com/mig-<profile>: 1` (mixed strategy);
* `share`: `nvidia.com/gpu: 1` (one time-slicing replica) plus the annotation
  `gpuparley.io/gpu-milli` (Kubernetes has no fractional GPU resource: the share the job needs is
  information for the market, the replica is what the kubelet enforces).

The workload submitter (`pods_for_job`) writes these, the negotiator reads them back
(`group_pods`, then `PodGroup.demand`) and bids with the resulting `Demand`, and the market
checks it against its own record of the job with the same `demand_for` rule, so a pod whose spec
does not say what the job is cannot be bid for.
"""

from __future__ import annotations

import copy
import re
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gpuparley.deploy.gpu_resources import (
    GPU_RESOURCE,
    MIG_RESOURCE_PREFIX,
    lease_item_limits,
    mig_resource,
)
from gpuparley.deploy.kube import AlreadyExists, Kube
from gpuparley.deploy.objects import (
    AGENT_SCHEDULER,
    JOB_LABEL,
    LABEL_PREFIX,
    LEASE_LABEL,
    LEASE_SHARD_LABEL,
    MARKET_SCHEDULER,
    lease_shard,
)
from gpuparley.envs.jobs import GPURequest, Job, PodDemand
from gpuparley.envs.market.demand import demand_for, job_name
from gpuparley.envs.market.messages import Demand, ResourceItem

JOB_NAME_ANNOTATION = f"{LABEL_PREFIX}/job-name"  # the exact job name (labels are restricted)
PODS_ANNOTATION = f"{LABEL_PREFIX}/pods"  # how many pods the group has
INDEX_ANNOTATION = f"{LABEL_PREFIX}/pod-index"
MILLI_ANNOTATION = f"{LABEL_PREFIX}/gpu-milli"
MODELS_ANNOTATION = f"{LABEL_PREFIX}/allowed-models"  # comma-separated GPU model names
HOSTNAME_LABEL = "kubernetes.io/hostname"
JOB_IMAGE = "registry.invalid/gpuparley/job:sim"  # never pulled: KWOK runs no containers
_UNSAFE = re.compile(r"[^a-z0-9-]+")


class WorkloadError(ValueError):
    """A pod that does not describe a job the market can price (the text says what is wrong)."""


def object_safe(name: str) -> str:
    """A DNS-1123 label for a job name (lower case, `-` for anything else, <= 52 chars so a pod
    index still fits in 63)."""
    safe = _UNSAFE.sub("-", name.lower()).strip("-")[:52].strip("-")
    return safe or "job"


def gpu_limits(request: GPURequest) -> dict[str, str]:
    """The extended resources one pod of this request asks the kubelet for."""
    if request.kind == "whole":
        return {GPU_RESOURCE: str(request.count)}
    if request.kind == "share":
        return {GPU_RESOURCE: "1"}
    if request.kind == "mig":
        return {mig_resource(request.profile): "1"}
    return {}


def pod_resources(pod: PodDemand, gpu: Mapping[str, str]) -> dict[str, Any]:
    """Requests = limits (required for extended resources, and what the market counted)."""
    limits = {"cpu": f"{pod.cpu_milli}m", "memory": f"{pod.memory_mib}Mi", **gpu}
    return {"requests": dict(limits), "limits": limits}


def pods_for_job(job: Job, scheduler: str | None = AGENT_SCHEDULER) -> list[dict[str, Any]]:
    """The agent-plane pods of one job, for its negotiator to bind once the job's lease is
    placed (`scheduler` None: kube-scheduler's, as a plain cluster would run them)."""
    name = job_name(job)
    group = object_safe(name)
    annotations = {JOB_NAME_ANNOTATION: name, PODS_ANNOTATION: str(job.pods)}
    if job.pod.gpu.kind == "share":
        annotations[MILLI_ANNOTATION] = str(job.pod.gpu.milli)
    if job.allowed_models:
        annotations[MODELS_ANNOTATION] = ",".join(job.allowed_models)
    resources = pod_resources(job.pod, gpu_limits(job.pod.gpu))
    return [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{group}-{index}",
                "labels": {JOB_LABEL: group},
                "annotations": {**annotations, INDEX_ANNOTATION: str(index)},
            },
            "spec": {
                **({"schedulerName": scheduler} if scheduler else {}),
                "containers": [
                    {"name": "main", "image": JOB_IMAGE, "resources": copy.deepcopy(resources)}
                ],
            },
        }
        for index in range(job.pods)
    ]


def _quantity(text: str, what: str) -> int:
    """CPU in millicores / memory in MiB from the few quantity forms the submitter writes."""
    units = {"m": 1, "Mi": 1, "Gi": 1024, "": 1}
    match = re.fullmatch(r"(\d+)(m|Mi|Gi)?", str(text))
    if match is None:
        raise WorkloadError(f"{what}: cannot read quantity {text!r} (use e.g. 500m, 512Mi, 2Gi)")
    number, unit = int(match.group(1)), match.group(2) or ""
    if what == "cpu" and unit == "":
        return number * 1000
    return number * units[unit]


def pod_demand(pod: Mapping[str, Any]) -> PodDemand:
    """One pod's demand, read from its first container's limits and the group annotations."""
    meta = pod.get("metadata") or {}
    name = meta.get("name", "?")
    containers = (pod.get("spec") or {}).get("containers") or []
    if not containers:
        raise WorkloadError(f"pod {name}: no containers")
    limits = (containers[0].get("resources") or {}).get("limits") or {}
    mig = [k for k in limits if k.startswith(MIG_RESOURCE_PREFIX)]
    annotations = meta.get("annotations") or {}
    if mig:
        profile = mig[0].removeprefix(MIG_RESOURCE_PREFIX)
        slices = int(profile.split("g")[0]) if profile[:1].isdigit() else 0
        request = GPURequest("mig", profile=profile, compute_slices=slices)
    elif GPU_RESOURCE in limits and MILLI_ANNOTATION in annotations:
        request = GPURequest("share", milli=int(annotations[MILLI_ANNOTATION]))
    elif GPU_RESOURCE in limits:
        request = GPURequest("whole", count=int(limits[GPU_RESOURCE]))
    else:
        request = GPURequest("none")
    return PodDemand(
        request,
        _quantity(limits.get("cpu", "0"), "cpu"),
        _quantity(limits.get("memory", "0"), "memory"),
    )


@dataclass(frozen=True)
class PodGroup:
    """The pods of one job as found in a control plane."""

    job: str  # the exact job name
    pods: tuple[dict[str, Any], ...]  # sorted by pod index
    expected: int  # the group size the pods declare

    @property
    def complete(self) -> bool:
        return len(self.pods) == self.expected

    @property
    def finished(self) -> bool:
        """Every pod Succeeded: the job has run to its end, and never runs again."""
        return bool(self.pods) and all(
            (pod.get("status") or {}).get("phase") == "Succeeded" for pod in self.pods
        )

    def demand(self) -> Demand:
        """The market demand of the whole group (WorkloadError if the pods disagree)."""
        demands = {pod_demand(pod) for pod in self.pods}
        if len(demands) != 1:
            raise WorkloadError(f"job {self.job}: its pods ask for different resources")
        models = (self.pods[0]["metadata"].get("annotations") or {}).get(MODELS_ANNOTATION, "")
        allowed = tuple(m for m in models.split(",") if m)
        return demand_for(self.job, self.expected, demands.pop(), allowed)


def group_pods(pods: Iterable[Mapping[str, Any]]) -> dict[str, PodGroup]:
    """Pods with a job label, grouped by exact job name (pods without one are not ours)."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for pod in pods:
        meta = pod.get("metadata") or {}
        if JOB_LABEL not in (meta.get("labels") or {}):
            continue
        annotations = meta.get("annotations") or {}
        groups[annotations.get(JOB_NAME_ANNOTATION, meta["labels"][JOB_LABEL])].append(dict(pod))
    result = {}
    for job, members in groups.items():
        members.sort(
            key=lambda p: int((p["metadata"].get("annotations") or {}).get(INDEX_ANNOTATION, 0))
        )
        declared = (members[0]["metadata"].get("annotations") or {}).get(PODS_ANNOTATION, "1")
        result[job] = PodGroup(job, tuple(members), int(declared))
    return result


def submit_jobs(kube: Any, namespace: str, jobs: Iterable[Job], agent: str) -> int:
    """Create `agent`'s GPU jobs as pods its negotiator places (existing pods are left alone);
    pods created.

    CPU-only jobs are refused: the in-cluster market leases GPUs only, and a CPU pod would wait
    for a lease that is never offered."""
    mine = [job for job in jobs if job.owner == agent]
    cpu_only = [job_name(job) for job in mine if job.pod.gpu.kind == "none"]
    if cpu_only:
        raise WorkloadError(
            f"{len(cpu_only)} CPU-only job(s) of {agent} (e.g. {cpu_only[0]}): the in-cluster "
            "market leases GPUs only; use a scenario with GPU jobs only"
        )
    created = 0
    for job in mine:
        for pod in pods_for_job(job):
            created += bool(kube.create("pods", namespace, pod))
    return created


def waiting(pod: Mapping[str, Any], scheduler: str) -> bool:
    """The pod is `scheduler`'s to bind and not bound yet: it waits for its lease."""
    spec = pod.get("spec") or {}
    return spec.get("schedulerName") == scheduler and not spec.get("nodeName")


def host_pod(agent_pod: dict[str, Any], lease_object: str, item: ResourceItem) -> dict[str, Any]:
    """The host copy of an agent-plane pod, pinned by the lease to its node."""
    meta = agent_pod["metadata"]
    container = dict(agent_pod["spec"]["containers"][0])
    container["resources"] = pod_resources(pod_demand(agent_pod), lease_item_limits(item))
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": meta["name"],
            "labels": {
                **(meta.get("labels") or {}),
                LEASE_LABEL: lease_object,
                LEASE_SHARD_LABEL: lease_shard(lease_object),
            },
            # The lease's pod slot: the market and admission pin slot i to the lease's node i.
            "annotations": {**(meta.get("annotations") or {}), INDEX_ANNOTATION: str(item.pod)},
        },
        "spec": {
            # Only the market binds it, once every pod of the lease exists and fits.
            "schedulerName": MARKET_SCHEDULER,
            "containers": [container],
            "nodeSelector": {HOSTNAME_LABEL: item.node},
            # KWOK's fake nodes carry this taint on real clusters' kwok set-ups; harmless here.
            "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists"}],
        },
    }


def recreate_unbound(kube: Kube, namespace: str, pod: dict[str, Any]) -> dict[str, Any]:
    """Delete a bound agent pod and create a fresh, unbound copy of it, to wait for a lease
    again (a binding cannot be undone); the copy is created once the old pod is gone (deletion
    is asynchronous). The copy as created."""
    meta = pod["metadata"]
    fresh = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": meta["name"],
            "labels": dict(meta.get("labels") or {}),
            "annotations": dict(meta.get("annotations") or {}),
        },
        "spec": {k: v for k, v in pod["spec"].items() if k != "nodeName"},
    }
    kube.delete("pods", namespace, meta["name"])
    for _ in range(100):
        created = kube.create("pods", namespace, fresh)
        if created is not None:
            return created
        time.sleep(0.05)
    raise AlreadyExists(409, "AlreadyExists", f"pod {meta['name']} is still there")
